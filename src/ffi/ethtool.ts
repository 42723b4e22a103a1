/**
 * ETHTOOL_GET_TS_INFO through the SIOCETHTOOL ioctl: which time stamping a network device
 * supports and its PTP hardware clock (the ethtool binary is not needed). Runs in the calling
 * thread's network namespace (wrap in withNetns for another).
 */
import { KernelError } from "../errors.ts";
import { addressOf, cstr } from "./open.ts";
import { closeFd, Errno, IF_NAMESIZE, strerror, SYS, sys } from "./libc.ts";
import { decode, encode } from "./structs/layout.ts";
import {
  ETHTOOL_GET_TS_INFO,
  EthtoolTsInfo,
  HWTSTAMP_TX_ON,
  IfreqData,
  SIOCETHTOOL,
  SOF_TIMESTAMPING,
} from "./structs/ethtool.ts";

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;

export interface TsInfo {
  /** /dev/ptp<phcIndex>; undefined when the device has no PTP hardware clock. */
  phcIndex?: number;
  /** SOF_TIMESTAMPING_* bits. */
  soTimestamping: number;
  txTypes: number;
  rxFilters: number;
  /** Transmit and receive hardware stamps in raw PHC time (what ptp4l -H needs). */
  hardware: boolean;
  /** Software stamps (what ptp4l -S needs). */
  software: boolean;
  /** The names of the set SOF_TIMESTAMPING_* bits this module knows. */
  flags: string[];
}

/** Pure: the capability summary of a decoded ethtool_ts_info. */
export function describeTsInfo(
  t: { so_timestamping: number; phc_index: number; tx_types: number; rx_filters: number },
): TsInfo {
  const s = t.so_timestamping;
  const has = (bit: number) => (s & bit) !== 0;
  return {
    phcIndex: t.phc_index >= 0 ? t.phc_index : undefined,
    soTimestamping: s,
    txTypes: t.tx_types,
    rxFilters: t.rx_filters,
    hardware: has(SOF_TIMESTAMPING.TX_HARDWARE) && has(SOF_TIMESTAMPING.RX_HARDWARE) &&
      has(SOF_TIMESTAMPING.RAW_HARDWARE) && (t.tx_types & (1 << HWTSTAMP_TX_ON)) !== 0,
    software: has(SOF_TIMESTAMPING.TX_SOFTWARE) && has(SOF_TIMESTAMPING.RX_SOFTWARE) &&
      has(SOF_TIMESTAMPING.SOFTWARE),
    flags: Object.entries(SOF_TIMESTAMPING).filter(([, bit]) => has(bit)).map(([n]) =>
      n.toLowerCase().replaceAll("_", "-")
    ),
  };
}

/**
 * The device's time-stamping capabilities; undefined when the device does not answer
 * ETHTOOL_GET_TS_INFO (EOPNOTSUPP). Throws for a device that does not exist.
 */
export function tsInfo(ifname: string): TsInfo | undefined {
  const name = cstr(ifname);
  if (name.length > IF_NAMESIZE) {
    throw new KernelError(
      `interface name ${ifname} is longer than ${IF_NAMESIZE - 1} bytes`,
      "use the name `ip link` shows",
      Errno.EINVAL,
    );
  }
  const fd = sys(SYS.socket, AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw new KernelError(`socket(AF_UNIX): ${strerror(-fd)}`, "a Linux kernel is needed", -fd);
  }
  try {
    const info = encode(EthtoolTsInfo, { cmd: ETHTOOL_GET_TS_INFO });
    const ifr = encode(IfreqData, { ifr_name: name, ifr_data: addressOf(info) });
    const r = sys(SYS.ioctl, fd, SIOCETHTOOL, ifr, 0, [info]);
    if (r === -Errno.EOPNOTSUPP) return undefined;
    if (r < 0) {
      throw new KernelError(
        `SIOCETHTOOL ETHTOOL_GET_TS_INFO on ${ifname}: ${strerror(-r)}`,
        r === -Errno.ENODEV
          ? `check the interface name with \`ip link\``
          : "run as root in the interface's network namespace",
        -r,
      );
    }
    return describeTsInfo(decode(EthtoolTsInfo, info));
  } finally {
    closeFd(fd);
  }
}
