/**
 * Qdiscs and classes as the kernel reports them (RTM_NEWQDISC / RTM_NEWTCLASS dump messages):
 * kind, handles, the options of the kinds tsnproxy knows (pkt_sched.h layouts, see
 * qdisc_request.ts) and the statistics.
 */
import type { QueueRange } from "../config/qdisc.ts";
import { decode } from "../ffi/structs/layout.ts";
import {
  gnet_stats_basic,
  gnet_stats_queue,
  tc_etf_qopt,
  tc_htb_glob,
  tc_mqprio_qopt,
  tc_ratespec,
  tc_tbf_qopt,
  tcmsg,
} from "../ffi/structs/netlink.ts";
import {
  TC_ETF_DEADLINE_MODE_ON,
  TC_ETF_OFFLOAD_ON,
  TC_ETF_SKIP_SOCK_CHECK,
  TC_QOPT_MAX_QUEUE,
  TC_TAPRIO_CMD_SET_AND_HOLD,
  TC_TAPRIO_CMD_SET_AND_RELEASE,
  TC_TAPRIO_CMD_SET_GATES,
  TCA_ETF_PARMS,
  TCA_HTB_DIRECT_QLEN,
  TCA_HTB_INIT,
  TCA_HTB_OFFLOAD,
  TCA_KIND,
  TCA_OPTIONS,
  TCA_STATS,
  TCA_STATS2,
  TCA_STATS_BASIC,
  TCA_STATS_PKT64,
  TCA_STATS_QUEUE,
  TCA_TAPRIO_ATTR_ADMIN_SCHED,
  TCA_TAPRIO_ATTR_FLAGS,
  TCA_TAPRIO_ATTR_PRIOMAP,
  TCA_TAPRIO_ATTR_SCHED_BASE_TIME,
  TCA_TAPRIO_ATTR_SCHED_CLOCKID,
  TCA_TAPRIO_ATTR_SCHED_CYCLE_TIME,
  TCA_TAPRIO_ATTR_SCHED_CYCLE_TIME_EXTENSION,
  TCA_TAPRIO_ATTR_SCHED_ENTRY_LIST,
  TCA_TAPRIO_ATTR_TXTIME_DELAY,
  TCA_TAPRIO_SCHED_ENTRY,
  TCA_TAPRIO_SCHED_ENTRY_CMD,
  TCA_TAPRIO_SCHED_ENTRY_GATE_MASK,
  TCA_TAPRIO_SCHED_ENTRY_INDEX,
  TCA_TAPRIO_SCHED_ENTRY_INTERVAL,
  TCA_TBF_PARMS,
  TCA_TBF_RATE64,
} from "./constants.ts";
import { Attrs, type NlMessage } from "./message.ts";
import { type TaprioCommand } from "./qdisc_request.ts";

/** Counters from TCA_STATS2 (TCA_STATS as a fallback). */
export interface TcStats {
  bytes: bigint;
  packets: number;
  drops: number;
  overlimits: number;
  requeues: number;
  qlen: number;
  backlog: number;
}

export interface TaprioEntryInfo {
  index: number;
  command: TaprioCommand;
  gateMask: number;
  intervalNs: number;
}

export interface TaprioSchedule {
  baseTime: bigint;
  cycleTime?: bigint;
  cycleTimeExtension?: bigint;
  entries: TaprioEntryInfo[];
}

export interface MqprioLayout {
  numTc: number;
  /** All 16 priority -> class entries. */
  map: number[];
  /** numTc ranges. */
  queues: QueueRange[];
  hw: number;
}

export type QdiscOptions =
  | {
    kind: "htb";
    version: number;
    rate2quantum: number;
    defaultClass: number;
    debug: number;
    directPackets: number;
    directQlen?: number;
    offload: boolean;
  }
  | {
    kind: "tbf";
    rateBytesPerSec: bigint;
    limitBytes: number;
    /** Bucket size as the kernel keeps it: psched ticks of 64 ns at `rate`. */
    bufferTicks: number;
    mtuTicks: number;
    /** The raw TCA_TBF_PARMS the kernel reported. */
    parms: Uint8Array;
  }
  | ({ kind: "mqprio" } & MqprioLayout)
  | ({
    kind: "taprio";
    clockid?: number;
    flags: number;
    txtimeDelayNs?: number;
    /** The schedule running now (absent before the first base-time). */
    oper?: TaprioSchedule;
    /** A schedule waiting for its base-time. */
    admin?: TaprioSchedule;
  } & MqprioLayout)
  | {
    kind: "etf";
    clockid: number;
    deltaNs: number;
    flags: number;
    deadlineMode: boolean;
    offload: boolean;
    skipSockCheck: boolean;
  };

export interface QdiscInfo {
  ifindex: number;
  handle: number;
  parent: number;
  kind: string;
  /** Parsed TCA_OPTIONS for the kinds above; undefined for others. */
  options?: QdiscOptions;
  /** TCA_OPTIONS payload as the kernel sent it (for byte comparisons), when present. */
  rawOptions?: Uint8Array;
  stats: TcStats;
}

export interface ClassInfo {
  ifindex: number;
  /** Class id (major:minor). */
  handle: number;
  parent: number;
  /** Kind of the qdisc owning the class (e.g. "taprio", "mq", "htb"). */
  kind: string;
  /** Handle of the leaf qdisc attached to this class (tcm_info), 0 when none. */
  leaf: number;
  /** The class's own counters as the kernel reports them. */
  stats: TcStats;
  /**
   * Counters of the child qdisc under this class (the qdisc whose parent is this class), when
   * the qdisc dump (with TCA_DUMP_INVISIBLE) shows one. On 6.12 class and child counters
   * agree. Debian 6.1's software taprio grafts the root itself on every tx queue: each class
   * then has leaf = the root's handle, reports the root's totals, and no per-queue counters
   * exist over netlink (measured).
   */
  leafStats?: TcStats;
}

/** Counters of a qdisc or class message. */
export function parseStats(a: Attrs): TcStats {
  const out: TcStats = {
    bytes: 0n,
    packets: 0,
    drops: 0,
    overlimits: 0,
    requeues: 0,
    qlen: 0,
    backlog: 0,
  };
  const s2 = a.nested(TCA_STATS2);
  if (s2) {
    const basic = s2.raw(TCA_STATS_BASIC);
    if (basic && basic.length >= 12) {
      const b = decode(gnet_stats_basic, padTo(basic, gnet_stats_basic.size));
      out.bytes = b.bytes;
      out.packets = b.packets;
    }
    const pkt64 = s2.u64(TCA_STATS_PKT64);
    if (pkt64 !== undefined) out.packets = Number(pkt64);
    const queue = s2.raw(TCA_STATS_QUEUE);
    if (queue && queue.length >= gnet_stats_queue.size) {
      const q = decode(gnet_stats_queue, queue);
      out.qlen = q.qlen;
      out.backlog = q.backlog;
      out.drops = q.drops;
      out.requeues = q.requeues;
      out.overlimits = q.overlimits;
    }
    return out;
  }
  // struct tc_stats: bytes u64, packets, drops, overlimits, bps, pps, qlen, backlog (u32)
  const old = a.raw(TCA_STATS);
  if (old && old.length >= 36) {
    const dv = new DataView(old.buffer, old.byteOffset, old.byteLength);
    out.bytes = dv.getBigUint64(0, true);
    out.packets = dv.getUint32(8, true);
    out.drops = dv.getUint32(12, true);
    out.overlimits = dv.getUint32(16, true);
    out.qlen = dv.getUint32(28, true);
    out.backlog = dv.getUint32(32, true);
  }
  return out;
}

function padTo(b: Uint8Array, size: number): Uint8Array {
  if (b.length >= size) return b;
  const out = new Uint8Array(size);
  out.set(b);
  return out;
}

/** Decodes struct tc_mqprio_qopt (taprio PRIOMAP or mqprio options). */
export function decodeMqprioQopt(b: Uint8Array): MqprioLayout {
  const q = decode(tc_mqprio_qopt, padTo(b, tc_mqprio_qopt.size));
  const counts = new DataView(q.count.buffer, q.count.byteOffset, q.count.byteLength);
  const offsets = new DataView(q.offset.buffer, q.offset.byteOffset, q.offset.byteLength);
  const queues: QueueRange[] = [];
  for (let i = 0; i < Math.min(q.num_tc, TC_QOPT_MAX_QUEUE); i++) {
    queues.push({ count: counts.getUint16(2 * i, true), offset: offsets.getUint16(2 * i, true) });
  }
  return { numTc: q.num_tc, map: Array.from(q.prio_tc_map), queues, hw: q.hw };
}

const COMMAND_NAMES: Record<number, TaprioCommand> = {
  [TC_TAPRIO_CMD_SET_GATES]: "S",
  [TC_TAPRIO_CMD_SET_AND_HOLD]: "H",
  [TC_TAPRIO_CMD_SET_AND_RELEASE]: "R",
};

function parseSchedule(a: Attrs): TaprioSchedule | undefined {
  const baseTime = a.s64(TCA_TAPRIO_ATTR_SCHED_BASE_TIME);
  const list = a.nested(TCA_TAPRIO_ATTR_SCHED_ENTRY_LIST);
  if (baseTime === undefined && !list) return undefined;
  const entries = (list?.all(TCA_TAPRIO_SCHED_ENTRY) ?? []).map((raw) => {
    const e = new Attrs(raw);
    return {
      index: e.u32(TCA_TAPRIO_SCHED_ENTRY_INDEX) ?? 0,
      command: COMMAND_NAMES[e.u8(TCA_TAPRIO_SCHED_ENTRY_CMD) ?? 0] ?? "S",
      gateMask: e.u32(TCA_TAPRIO_SCHED_ENTRY_GATE_MASK) ?? 0,
      intervalNs: e.u32(TCA_TAPRIO_SCHED_ENTRY_INTERVAL) ?? 0,
    };
  });
  const out: TaprioSchedule = { baseTime: baseTime ?? 0n, entries };
  const cycle = a.s64(TCA_TAPRIO_ATTR_SCHED_CYCLE_TIME);
  if (cycle !== undefined) out.cycleTime = cycle;
  const ext = a.s64(TCA_TAPRIO_ATTR_SCHED_CYCLE_TIME_EXTENSION);
  if (ext !== undefined) out.cycleTimeExtension = ext;
  return out;
}

/** Parses TCA_OPTIONS of the kinds tsnproxy knows. */
export function parseQdiscOptions(kind: string, raw: Uint8Array): QdiscOptions | undefined {
  switch (kind) {
    case "htb": {
      const a = new Attrs(raw);
      const init = a.raw(TCA_HTB_INIT);
      if (!init || init.length < tc_htb_glob.size) return undefined;
      const g = decode(tc_htb_glob, init);
      const out: QdiscOptions = {
        kind,
        version: g.version,
        rate2quantum: g.rate2quantum,
        defaultClass: g.defcls,
        debug: g.debug,
        directPackets: g.direct_pkts,
        offload: a.has(TCA_HTB_OFFLOAD),
      };
      const dq = a.u32(TCA_HTB_DIRECT_QLEN);
      if (dq !== undefined) out.directQlen = dq;
      return out;
    }
    case "tbf": {
      const a = new Attrs(raw);
      const parms = a.raw(TCA_TBF_PARMS);
      if (!parms || parms.length < tc_tbf_qopt.size) return undefined;
      const p = decode(tc_tbf_qopt, parms);
      const rate = decode(tc_ratespec, p.rate);
      return {
        kind,
        rateBytesPerSec: a.u64(TCA_TBF_RATE64) ?? BigInt(rate.rate),
        limitBytes: p.limit,
        bufferTicks: p.buffer,
        mtuTicks: p.mtu,
        parms: parms.slice(),
      };
    }
    case "mqprio":
      if (raw.length < tc_mqprio_qopt.size) return undefined;
      return { kind, ...decodeMqprioQopt(raw) };
    case "etf": {
      const parms = new Attrs(raw).raw(TCA_ETF_PARMS);
      if (!parms || parms.length < tc_etf_qopt.size) return undefined;
      const e = decode(tc_etf_qopt, parms);
      return {
        kind,
        clockid: e.clockid,
        deltaNs: e.delta,
        flags: e.flags,
        deadlineMode: (e.flags & TC_ETF_DEADLINE_MODE_ON) !== 0,
        offload: (e.flags & TC_ETF_OFFLOAD_ON) !== 0,
        skipSockCheck: (e.flags & TC_ETF_SKIP_SOCK_CHECK) !== 0,
      };
    }
    case "taprio": {
      const a = new Attrs(raw);
      const prio = a.raw(TCA_TAPRIO_ATTR_PRIOMAP);
      if (!prio) return undefined;
      const out: QdiscOptions = {
        kind,
        ...decodeMqprioQopt(prio),
        flags: a.u32(TCA_TAPRIO_ATTR_FLAGS) ?? 0,
      };
      const clockid = a.s32(TCA_TAPRIO_ATTR_SCHED_CLOCKID);
      if (clockid !== undefined) out.clockid = clockid;
      const delay = a.u32(TCA_TAPRIO_ATTR_TXTIME_DELAY);
      if (delay !== undefined) out.txtimeDelayNs = delay;
      const oper = parseSchedule(a);
      if (oper) out.oper = oper;
      const adminAttrs = a.nested(TCA_TAPRIO_ATTR_ADMIN_SCHED);
      const admin = adminAttrs && parseSchedule(adminAttrs);
      if (admin) out.admin = admin;
      return out;
    }
    default:
      return undefined;
  }
}

/** tcmsg and attributes of a qdisc or class message. */
export function parseTcObject(m: NlMessage) {
  const t = decode(tcmsg, m.payload.subarray(0, tcmsg.size));
  const a = new Attrs(m.payload.subarray(tcmsg.size));
  return { t, a, kind: a.str(TCA_KIND) ?? "" };
}

/** Decodes one RTM_NEWQDISC message. */
export function parseQdisc(m: NlMessage): QdiscInfo {
  const { t, a, kind } = parseTcObject(m);
  const info: QdiscInfo = {
    ifindex: t.tcm_ifindex,
    handle: t.tcm_handle,
    parent: t.tcm_parent,
    kind,
    stats: parseStats(a),
  };
  const raw = a.raw(TCA_OPTIONS);
  if (raw) {
    info.rawOptions = raw.slice();
    const options = parseQdiscOptions(kind, raw);
    if (options) info.options = options;
  }
  return info;
}
