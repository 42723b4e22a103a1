/**
 * SIOCETHTOOL and the time-stamping capabilities it reports (ETHTOOL_GET_TS_INFO), LP64.
 * Checked against the headers by tests/unit/structs_test.ts.
 */
import { struct } from "./layout.ts";

export const SIOCETHTOOL = 0x8946;
export const ETHTOOL_GET_TS_INFO = 0x41;

/** struct ifreq as SIOCETHTOOL reads it: the name and a pointer to the ethtool command. */
export const IfreqData = struct("struct ifreq", ["net/if.h"], 40, {
  ifr_name: [0, "bytes", 16],
  ifr_data: [16, "ptr"],
});

/** struct ethtool_ts_info (linux/ethtool.h). */
export const EthtoolTsInfo = struct("struct ethtool_ts_info", ["linux/ethtool.h"], 44, {
  cmd: [0, "u32"],
  /** SOF_TIMESTAMPING_* the device supports. */
  so_timestamping: [4, "u32"],
  /** The PTP hardware clock: /dev/ptp<phc_index>; -1 when the device has none. */
  phc_index: [8, "i32"],
  /** Bit (1 << HWTSTAMP_TX_*) per supported transmit mode. */
  tx_types: [12, "u32"],
  /** Bit (1 << HWTSTAMP_FILTER_*) per supported receive filter. */
  rx_filters: [28, "u32"],
});

/** SOF_TIMESTAMPING_* (linux/net_tstamp.h). */
export const SOF_TIMESTAMPING = {
  TX_HARDWARE: 1 << 0,
  TX_SOFTWARE: 1 << 1,
  RX_HARDWARE: 1 << 2,
  RX_SOFTWARE: 1 << 3,
  SOFTWARE: 1 << 4,
  RAW_HARDWARE: 1 << 6,
} as const;

/** enum hwtstamp_tx_types (linux/net_tstamp.h): tx_types has bit (1 << value). */
export const HWTSTAMP_TX_ON = 1;
/** enum hwtstamp_rx_filters: ALL and PTP_V2_EVENT (what ptp4l asks for on L2/UDP). */
export const HWTSTAMP_FILTER_ALL = 1;
export const HWTSTAMP_FILTER_PTP_V2_EVENT = 12;
