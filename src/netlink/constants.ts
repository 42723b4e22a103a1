/**
 * rtnetlink / tc constants from the uapi headers (linux/netlink.h, linux/rtnetlink.h,
 * linux/if_link.h, linux/pkt_sched.h, linux/pkt_cls.h, linux/gen_stats.h). The values are
 * checked against the headers by tests/netlink/structs_test.ts (see `probedConstants`).
 */

export const NETLINK_ROUTE = 0;
export const SOL_NETLINK = 270;
export const NETLINK_CAP_ACK = 10;
export const NETLINK_EXT_ACK = 11;
export const SOCK_CLOEXEC = 0o2000000;

// nlmsg types and flags
export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
export const NLM_F_DUMP_INTR = 0x10;
export const NLM_F_DUMP = 0x300;
export const NLM_F_REPLACE = 0x100;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
export const NLM_F_CAPPED = 0x100;
export const NLM_F_ACK_TLVS = 0x200;
export const NLA_F_NESTED = 0x8000;
export const NLA_TYPE_MASK = 0x3fff;
export const NLMSGERR_ATTR_MSG = 1;
export const NLMSGERR_ATTR_OFFS = 2;

// rtnetlink message types
export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_GETLINK = 18;
export const RTM_NEWQDISC = 36;
export const RTM_DELQDISC = 37;
export const RTM_GETQDISC = 38;
export const RTM_NEWTCLASS = 40;
export const RTM_GETTCLASS = 42;
export const RTM_NEWTFILTER = 44;
export const RTM_GETTFILTER = 46;

// links
export const IFLA_ADDRESS = 1;
export const IFLA_IFNAME = 3;
export const IFLA_MTU = 4;
export const IFLA_LINK = 5;
export const IFLA_MASTER = 10;
export const IFLA_OPERSTATE = 16;
export const IFLA_LINKINFO = 18;
export const IFLA_EXT_MASK = 29;
export const IFLA_NUM_TX_QUEUES = 31;
export const IFLA_NET_NS_FD = 28;
export const IFLA_NUM_RX_QUEUES = 32;
export const IFLA_LINK_NETNSID = 37;
export const IFLA_XDP = 43;
export const IFLA_INFO_KIND = 1;
export const IFLA_INFO_DATA = 2;
export const IFLA_INFO_SLAVE_KIND = 4;
export const IFLA_XDP_ATTACHED = 2;
export const IFLA_XDP_PROG_ID = 4;
export const RTEXT_FILTER_SKIP_STATS = 1 << 3;
export const IFF_UP = 0x1;
export const IFF_RUNNING = 0x40;
/** VLAN devices: IFLA_INFO_DATA of kind "vlan" (include/uapi/linux/if_link.h). */
export const IFLA_VLAN_ID = 1;
export const IFLA_VLAN_FLAGS = 2;
export const IFLA_VLAN_EGRESS_QOS = 3;
export const IFLA_VLAN_INGRESS_QOS = 4;
export const IFLA_VLAN_PROTOCOL = 5;
/** One entry of IFLA_VLAN_EGRESS_QOS/INGRESS_QOS: struct ifla_vlan_qos_mapping {u32 from, to}. */
export const IFLA_VLAN_QOS_MAPPING = 1;
/** The 802.1Q priority code point is 3 bits (VLAN_PRIO_MASK >> VLAN_PRIO_SHIFT). */
export const VLAN_PCP_MAX = 7;

/**
 * netkit (kernel 6.7+, include/uapi/linux/if_link.h IFLA_NETKIT_*, enum netkit_action,
 * enum netkit_mode). Not probed: the build headers here (linux-libc-dev 6.1) predate netkit.
 */
export const IFLA_NETKIT_PEER_INFO = 1;
export const IFLA_NETKIT_PRIMARY = 2;
export const IFLA_NETKIT_POLICY = 3;
export const IFLA_NETKIT_PEER_POLICY = 4;
export const IFLA_NETKIT_MODE = 5;
export const NETKIT_PASS = 0;
export const NETKIT_DROP = 2;
export const NETKIT_L2 = 0;
export const NETKIT_L3 = 1;

// tc
export const TCA_KIND = 1;
export const TCA_OPTIONS = 2;
export const TCA_STATS = 3;
export const TCA_XSTATS = 4;
export const TCA_STATS2 = 7;
export const TCA_DUMP_INVISIBLE = 10;
export const TCA_CHAIN = 11;
export const TCA_STATS_BASIC = 1;
export const TCA_STATS_QUEUE = 3;
export const TCA_STATS_PKT64 = 8;
export const TC_H_ROOT = 0xffffffff;
export const TC_H_INGRESS = 0xfffffff1;
export const TC_H_CLSACT = TC_H_INGRESS;
export const TC_H_MIN_INGRESS = 0xfff2;
export const TC_H_MIN_EGRESS = 0xfff3;
export const TC_H_UNSPEC = 0;

export const TCA_HTB_INIT = 2;
export const TCA_HTB_DIRECT_QLEN = 5;
export const TCA_HTB_OFFLOAD = 9;
export const TC_HTB_PROTOVER = 3;

export const TCA_TBF_PARMS = 1;
export const TCA_TBF_RATE64 = 4;
export const TCA_TBF_BURST = 6;
export const TC_LINKLAYER_ETHERNET = 1;

export const TCA_TAPRIO_ATTR_PRIOMAP = 1;
export const TCA_TAPRIO_ATTR_SCHED_ENTRY_LIST = 2;
export const TCA_TAPRIO_ATTR_SCHED_BASE_TIME = 3;
export const TCA_TAPRIO_ATTR_SCHED_CLOCKID = 5;
export const TCA_TAPRIO_ATTR_ADMIN_SCHED = 7;
export const TCA_TAPRIO_ATTR_SCHED_CYCLE_TIME = 8;
export const TCA_TAPRIO_ATTR_SCHED_CYCLE_TIME_EXTENSION = 9;
export const TCA_TAPRIO_ATTR_FLAGS = 10;
export const TCA_TAPRIO_ATTR_TXTIME_DELAY = 11;
export const TCA_TAPRIO_SCHED_ENTRY = 1;
export const TCA_TAPRIO_SCHED_ENTRY_INDEX = 1;
export const TCA_TAPRIO_SCHED_ENTRY_CMD = 2;
export const TCA_TAPRIO_SCHED_ENTRY_GATE_MASK = 3;
export const TCA_TAPRIO_SCHED_ENTRY_INTERVAL = 4;
export const TC_TAPRIO_CMD_SET_GATES = 0;
export const TC_TAPRIO_CMD_SET_AND_HOLD = 1;
export const TC_TAPRIO_CMD_SET_AND_RELEASE = 2;
export const TCA_TAPRIO_ATTR_FLAG_TXTIME_ASSIST = 0x1;
export const TCA_TAPRIO_ATTR_FLAG_FULL_OFFLOAD = 0x2;
export const TC_QOPT_MAX_QUEUE = 16;

export const TCA_ETF_PARMS = 1;
export const TC_ETF_DEADLINE_MODE_ON = 0x1;
export const TC_ETF_OFFLOAD_ON = 0x2;
export const TC_ETF_SKIP_SOCK_CHECK = 0x4;

export const TCA_BPF_ACT = 1;
export const TCA_BPF_NAME = 7;
export const TCA_BPF_FLAGS = 8;
export const TCA_BPF_FLAGS_GEN = 9;
export const TCA_BPF_TAG = 10;
export const TCA_BPF_ID = 11;
export const TCA_BPF_FLAG_ACT_DIRECT = 0x1;

/** Clock ids accepted by taprio/etf (linux/time.h). */
export const CLOCK_IDS = {
  CLOCK_REALTIME: 0,
  CLOCK_MONOTONIC: 1,
  CLOCK_BOOTTIME: 7,
  CLOCK_TAI: 11,
} as const;
export type ClockName = keyof typeof CLOCK_IDS;

/** The name of a clock id; undefined for one not in CLOCK_IDS. */
export function clockNameOf(id: number): ClockName | undefined {
  return (Object.keys(CLOCK_IDS) as ClockName[]).find((k) => CLOCK_IDS[k] === id);
}

/** Builds a tc handle "major:minor" as the kernel stores it. */
export function tcHandle(major: number, minor: number): number {
  return (((major & 0xffff) << 16) | (minor & 0xffff)) >>> 0;
}

/** Formats a tc handle the way tc(8) prints it ("100:", "100:2", "ffff:fff2", "root"). */
export function formatHandle(h: number): string {
  if (h === TC_H_ROOT) return "root";
  if (h === TC_H_UNSPEC) return "none";
  const maj = (h >>> 16).toString(16);
  const min = h & 0xffff;
  return min === 0 ? `${maj}:` : `${maj}:${min.toString(16)}`;
}

/**
 * C expressions for every constant above, checked by the probe test. Keys are the exported
 * names; values are the C expression evaluated against the uapi headers.
 */
export const probedConstants: Record<string, string> = {
  NETLINK_ROUTE: "NETLINK_ROUTE",
  SOL_NETLINK: "SOL_NETLINK",
  NETLINK_CAP_ACK: "NETLINK_CAP_ACK",
  NETLINK_EXT_ACK: "NETLINK_EXT_ACK",
  SOCK_CLOEXEC: "SOCK_CLOEXEC",
  NLMSG_NOOP: "NLMSG_NOOP",
  NLMSG_ERROR: "NLMSG_ERROR",
  NLMSG_DONE: "NLMSG_DONE",
  NLM_F_REQUEST: "NLM_F_REQUEST",
  NLM_F_MULTI: "NLM_F_MULTI",
  NLM_F_ACK: "NLM_F_ACK",
  NLM_F_DUMP_INTR: "NLM_F_DUMP_INTR",
  NLM_F_DUMP: "NLM_F_DUMP",
  NLM_F_REPLACE: "NLM_F_REPLACE",
  NLM_F_EXCL: "NLM_F_EXCL",
  NLM_F_CREATE: "NLM_F_CREATE",
  NLM_F_CAPPED: "NLM_F_CAPPED",
  NLM_F_ACK_TLVS: "NLM_F_ACK_TLVS",
  NLA_F_NESTED: "NLA_F_NESTED",
  NLA_TYPE_MASK: "(unsigned short)NLA_TYPE_MASK",
  NLMSGERR_ATTR_MSG: "NLMSGERR_ATTR_MSG",
  NLMSGERR_ATTR_OFFS: "NLMSGERR_ATTR_OFFS",
  RTM_NEWLINK: "RTM_NEWLINK",
  RTM_DELLINK: "RTM_DELLINK",
  RTM_GETLINK: "RTM_GETLINK",
  RTM_NEWQDISC: "RTM_NEWQDISC",
  RTM_DELQDISC: "RTM_DELQDISC",
  RTM_GETQDISC: "RTM_GETQDISC",
  RTM_NEWTCLASS: "RTM_NEWTCLASS",
  RTM_GETTCLASS: "RTM_GETTCLASS",
  RTM_NEWTFILTER: "RTM_NEWTFILTER",
  RTM_GETTFILTER: "RTM_GETTFILTER",
  IFLA_ADDRESS: "IFLA_ADDRESS",
  IFLA_IFNAME: "IFLA_IFNAME",
  IFLA_MTU: "IFLA_MTU",
  IFLA_LINK: "IFLA_LINK",
  IFLA_MASTER: "IFLA_MASTER",
  IFLA_OPERSTATE: "IFLA_OPERSTATE",
  IFLA_LINKINFO: "IFLA_LINKINFO",
  IFLA_EXT_MASK: "IFLA_EXT_MASK",
  IFLA_NUM_TX_QUEUES: "IFLA_NUM_TX_QUEUES",
  IFLA_NET_NS_FD: "IFLA_NET_NS_FD",
  IFLA_NUM_RX_QUEUES: "IFLA_NUM_RX_QUEUES",
  IFLA_LINK_NETNSID: "IFLA_LINK_NETNSID",
  IFLA_XDP: "IFLA_XDP",
  IFLA_INFO_KIND: "IFLA_INFO_KIND",
  IFLA_INFO_DATA: "IFLA_INFO_DATA",
  IFLA_INFO_SLAVE_KIND: "IFLA_INFO_SLAVE_KIND",
  IFLA_XDP_ATTACHED: "IFLA_XDP_ATTACHED",
  IFLA_XDP_PROG_ID: "IFLA_XDP_PROG_ID",
  RTEXT_FILTER_SKIP_STATS: "RTEXT_FILTER_SKIP_STATS",
  IFF_UP: "IFF_UP",
  IFF_RUNNING: "IFF_RUNNING",
  IFLA_VLAN_ID: "IFLA_VLAN_ID",
  IFLA_VLAN_FLAGS: "IFLA_VLAN_FLAGS",
  IFLA_VLAN_EGRESS_QOS: "IFLA_VLAN_EGRESS_QOS",
  IFLA_VLAN_INGRESS_QOS: "IFLA_VLAN_INGRESS_QOS",
  IFLA_VLAN_PROTOCOL: "IFLA_VLAN_PROTOCOL",
  IFLA_VLAN_QOS_MAPPING: "IFLA_VLAN_QOS_MAPPING",
  TCA_KIND: "TCA_KIND",
  TCA_OPTIONS: "TCA_OPTIONS",
  TCA_STATS: "TCA_STATS",
  TCA_XSTATS: "TCA_XSTATS",
  TCA_STATS2: "TCA_STATS2",
  TCA_DUMP_INVISIBLE: "TCA_DUMP_INVISIBLE",
  TCA_CHAIN: "TCA_CHAIN",
  TCA_STATS_BASIC: "TCA_STATS_BASIC",
  TCA_STATS_QUEUE: "TCA_STATS_QUEUE",
  TCA_STATS_PKT64: "TCA_STATS_PKT64",
  TC_H_ROOT: "TC_H_ROOT",
  TC_H_INGRESS: "TC_H_INGRESS",
  TC_H_CLSACT: "TC_H_CLSACT",
  TC_H_MIN_INGRESS: "TC_H_MIN_INGRESS",
  TC_H_MIN_EGRESS: "TC_H_MIN_EGRESS",
  TC_H_UNSPEC: "TC_H_UNSPEC",
  TCA_HTB_INIT: "TCA_HTB_INIT",
  TCA_HTB_DIRECT_QLEN: "TCA_HTB_DIRECT_QLEN",
  TCA_HTB_OFFLOAD: "TCA_HTB_OFFLOAD",
  TC_HTB_PROTOVER: "TC_HTB_PROTOVER",
  TCA_TBF_PARMS: "TCA_TBF_PARMS",
  TCA_TBF_RATE64: "TCA_TBF_RATE64",
  TCA_TBF_BURST: "TCA_TBF_BURST",
  TC_LINKLAYER_ETHERNET: "TC_LINKLAYER_ETHERNET",
  TCA_TAPRIO_ATTR_PRIOMAP: "TCA_TAPRIO_ATTR_PRIOMAP",
  TCA_TAPRIO_ATTR_SCHED_ENTRY_LIST: "TCA_TAPRIO_ATTR_SCHED_ENTRY_LIST",
  TCA_TAPRIO_ATTR_SCHED_BASE_TIME: "TCA_TAPRIO_ATTR_SCHED_BASE_TIME",
  TCA_TAPRIO_ATTR_SCHED_CLOCKID: "TCA_TAPRIO_ATTR_SCHED_CLOCKID",
  TCA_TAPRIO_ATTR_ADMIN_SCHED: "TCA_TAPRIO_ATTR_ADMIN_SCHED",
  TCA_TAPRIO_ATTR_SCHED_CYCLE_TIME: "TCA_TAPRIO_ATTR_SCHED_CYCLE_TIME",
  TCA_TAPRIO_ATTR_SCHED_CYCLE_TIME_EXTENSION: "TCA_TAPRIO_ATTR_SCHED_CYCLE_TIME_EXTENSION",
  TCA_TAPRIO_ATTR_FLAGS: "TCA_TAPRIO_ATTR_FLAGS",
  TCA_TAPRIO_ATTR_TXTIME_DELAY: "TCA_TAPRIO_ATTR_TXTIME_DELAY",
  TCA_TAPRIO_SCHED_ENTRY: "TCA_TAPRIO_SCHED_ENTRY",
  TCA_TAPRIO_SCHED_ENTRY_INDEX: "TCA_TAPRIO_SCHED_ENTRY_INDEX",
  TCA_TAPRIO_SCHED_ENTRY_CMD: "TCA_TAPRIO_SCHED_ENTRY_CMD",
  TCA_TAPRIO_SCHED_ENTRY_GATE_MASK: "TCA_TAPRIO_SCHED_ENTRY_GATE_MASK",
  TCA_TAPRIO_SCHED_ENTRY_INTERVAL: "TCA_TAPRIO_SCHED_ENTRY_INTERVAL",
  TC_TAPRIO_CMD_SET_GATES: "TC_TAPRIO_CMD_SET_GATES",
  TC_TAPRIO_CMD_SET_AND_HOLD: "TC_TAPRIO_CMD_SET_AND_HOLD",
  TC_TAPRIO_CMD_SET_AND_RELEASE: "TC_TAPRIO_CMD_SET_AND_RELEASE",
  TCA_TAPRIO_ATTR_FLAG_TXTIME_ASSIST: "TCA_TAPRIO_ATTR_FLAG_TXTIME_ASSIST",
  TCA_TAPRIO_ATTR_FLAG_FULL_OFFLOAD: "TCA_TAPRIO_ATTR_FLAG_FULL_OFFLOAD",
  TC_QOPT_MAX_QUEUE: "TC_QOPT_MAX_QUEUE",
  TCA_ETF_PARMS: "TCA_ETF_PARMS",
  TC_ETF_DEADLINE_MODE_ON: "TC_ETF_DEADLINE_MODE_ON",
  TC_ETF_OFFLOAD_ON: "TC_ETF_OFFLOAD_ON",
  TC_ETF_SKIP_SOCK_CHECK: "TC_ETF_SKIP_SOCK_CHECK",
  TCA_BPF_ACT: "TCA_BPF_ACT",
  TCA_BPF_NAME: "TCA_BPF_NAME",
  TCA_BPF_FLAGS: "TCA_BPF_FLAGS",
  TCA_BPF_FLAGS_GEN: "TCA_BPF_FLAGS_GEN",
  TCA_BPF_TAG: "TCA_BPF_TAG",
  TCA_BPF_ID: "TCA_BPF_ID",
  TCA_BPF_FLAG_ACT_DIRECT: "TCA_BPF_FLAG_ACT_DIRECT",
};

/** Headers the probe includes for probedConstants. */
export const constantHeaders = [
  "sys/socket.h",
  "linux/netlink.h",
  "linux/rtnetlink.h",
  "linux/if_link.h",
  "linux/if.h",
  "linux/pkt_sched.h",
  "linux/pkt_cls.h",
  "linux/gen_stats.h",
] as const;
