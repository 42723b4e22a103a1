/**
 * rtnetlink and tc struct layouts (little endian, x86_64/aarch64). Field names are the C member
 * names so tests/netlink/structs_test.ts can compile a probe printing offsetof/sizeof for each
 * and compare. Embedded structs and arrays are "bytes" fields; their inner layouts are declared
 * separately (tc_ratespec) or decoded by the caller (the u16 arrays of tc_mqprio_qopt).
 */
import { struct } from "./layout.ts";

const NETLINK_H = ["linux/netlink.h"] as const;
const RTNETLINK_H = ["linux/rtnetlink.h"] as const;
const PKT_SCHED_H = ["linux/pkt_sched.h"] as const;
const GEN_STATS_H = ["linux/gen_stats.h"] as const;

/** Every netlink message starts with this header. */
export const nlmsghdr = struct("struct nlmsghdr", NETLINK_H, 16, {
  nlmsg_len: [0, "u32"],
  nlmsg_type: [4, "u16"],
  nlmsg_flags: [6, "u16"],
  nlmsg_seq: [8, "u32"],
  nlmsg_pid: [12, "u32"],
});

/** Payload of NLMSG_ERROR: errno (negative) and the header of the request it answers. */
export const nlmsgerr = struct("struct nlmsgerr", NETLINK_H, 20, {
  error: [0, "i32"],
  msg: [4, "bytes", 16],
});

/** Attribute header (struct nlattr; struct rtattr has the same layout). */
export const nlattr = struct("struct nlattr", NETLINK_H, 4, {
  nla_len: [0, "u16"],
  nla_type: [2, "u16"],
});

export const rtattr = struct("struct rtattr", RTNETLINK_H, 4, {
  rta_len: [0, "u16"],
  rta_type: [2, "u16"],
});

/** Fixed header of RTM_*QDISC, RTM_*TCLASS and RTM_*TFILTER messages. */
export const tcmsg = struct("struct tcmsg", RTNETLINK_H, 20, {
  tcm_family: [0, "u8"],
  tcm__pad1: [1, "u8"],
  tcm__pad2: [2, "u16"],
  tcm_ifindex: [4, "i32"],
  tcm_handle: [8, "u32"],
  tcm_parent: [12, "u32"],
  tcm_info: [16, "u32"],
});

/** Fixed header of RTM_*LINK messages. */
export const ifinfomsg = struct("struct ifinfomsg", RTNETLINK_H, 16, {
  ifi_family: [0, "u8"],
  __ifi_pad: [1, "u8"],
  ifi_type: [2, "u16"],
  ifi_index: [4, "i32"],
  ifi_flags: [8, "u32"],
  ifi_change: [12, "u32"],
});

export const tc_ratespec = struct("struct tc_ratespec", PKT_SCHED_H, 12, {
  cell_log: [0, "u8"],
  linklayer: [1, "u8"],
  overhead: [2, "u16"],
  cell_align: [4, "u16"],
  mpu: [6, "u16"],
  rate: [8, "u32"],
});

/** TCA_TBF_PARMS. buffer and mtu are in psched ticks (64 ns). */
export const tc_tbf_qopt = struct("struct tc_tbf_qopt", PKT_SCHED_H, 36, {
  rate: [0, "bytes", 12],
  peakrate: [12, "bytes", 12],
  limit: [24, "u32"],
  buffer: [28, "u32"],
  mtu: [32, "u32"],
});

/** TCA_HTB_INIT. direct_pkts is output only. */
export const tc_htb_glob = struct("struct tc_htb_glob", PKT_SCHED_H, 20, {
  version: [0, "u32"],
  rate2quantum: [4, "u32"],
  defcls: [8, "u32"],
  debug: [12, "u32"],
  direct_pkts: [16, "u32"],
});

/**
 * mqprio's TCA_OPTIONS payload and taprio's TCA_TAPRIO_ATTR_PRIOMAP. count/offset are
 * u16[16] arrays (TC_QOPT_MAX_QUEUE); the struct is 82 bytes, padded to 84 in an attribute.
 */
export const tc_mqprio_qopt = struct("struct tc_mqprio_qopt", PKT_SCHED_H, 82, {
  num_tc: [0, "u8"],
  prio_tc_map: [1, "bytes", 16],
  hw: [17, "u8"],
  count: [18, "bytes", 32],
  offset: [50, "bytes", 32],
});

/** TCA_ETF_PARMS. */
export const tc_etf_qopt = struct("struct tc_etf_qopt", PKT_SCHED_H, 12, {
  delta: [0, "i32"],
  clockid: [4, "i32"],
  flags: [8, "u32"],
});

/** TCA_STATS_BASIC inside TCA_STATS2 (8 bytes of tail padding). */
export const gnet_stats_basic = struct("struct gnet_stats_basic", GEN_STATS_H, 16, {
  bytes: [0, "u64"],
  packets: [8, "u32"],
});

/** TCA_STATS_QUEUE inside TCA_STATS2. */
export const gnet_stats_queue = struct("struct gnet_stats_queue", GEN_STATS_H, 20, {
  qlen: [0, "u32"],
  backlog: [4, "u32"],
  drops: [8, "u32"],
  requeues: [12, "u32"],
  overlimits: [16, "u32"],
});

/** Every layout in this file, for the probe test. */
export const netlinkLayouts = [
  nlmsghdr,
  nlmsgerr,
  nlattr,
  rtattr,
  tcmsg,
  ifinfomsg,
  tc_ratespec,
  tc_tbf_qopt,
  tc_htb_glob,
  tc_mqprio_qopt,
  tc_etf_qopt,
  gnet_stats_basic,
  gnet_stats_queue,
] as const;
