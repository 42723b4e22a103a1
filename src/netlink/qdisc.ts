/**
 * Qdiscs and classes over rtnetlink: build RTM_NEWQDISC/RTM_DELQDISC requests for the kinds
 * tsnproxy manages (clsact, mq, htb default class, tbf, taprio, mqprio, etf), read qdiscs and
 * classes back with their options and statistics, and apply the node config's `qdisc` section.
 *
 * Attribute layouts follow include/uapi/linux/pkt_sched.h:
 * - taprio: TCA_OPTIONS nest { PRIOMAP (struct tc_mqprio_qopt), SCHED_CLOCKID s32, FLAGS u32,
 *   TXTIME_DELAY u32, SCHED_BASE_TIME s64, SCHED_CYCLE_TIME s64, SCHED_ENTRY_LIST nest {
 *   SCHED_ENTRY nest { CMD u8, GATE_MASK u32, INTERVAL u32 } ... } }
 * - mqprio: TCA_OPTIONS is the struct tc_mqprio_qopt itself (not a nest)
 * - etf: TCA_OPTIONS nest { ETF_PARMS (struct tc_etf_qopt) }
 * - htb: TCA_OPTIONS nest { HTB_INIT (struct tc_htb_glob), [HTB_DIRECT_QLEN u32] }
 * - tbf: TCA_OPTIONS nest { TBF_PARMS (struct tc_tbf_qopt), [TBF_RATE64 u64] }
 */
import type {
  EtfChildConfig,
  EtfOptions,
  MqprioConfig,
  QdiscConfig,
  QueueRange,
  TaprioConfig,
} from "../config/qdisc.ts";
import { checkQueuesFit } from "../config/qdisc.ts";
import { KernelError } from "../errors.ts";
import { Errno, ifIndexToName } from "../ffi/libc.ts";
import { decode, encode } from "../ffi/structs/layout.ts";
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
  CLOCK_IDS,
  type ClockName,
  formatHandle,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REPLACE,
  RTM_DELQDISC,
  RTM_GETQDISC,
  RTM_GETTCLASS,
  RTM_NEWQDISC,
  RTM_NEWTCLASS,
  TC_ETF_DEADLINE_MODE_ON,
  TC_ETF_OFFLOAD_ON,
  TC_ETF_SKIP_SOCK_CHECK,
  TC_H_CLSACT,
  TC_H_ROOT,
  TC_HTB_PROTOVER,
  TC_LINKLAYER_ETHERNET,
  TC_QOPT_MAX_QUEUE,
  TC_TAPRIO_CMD_SET_AND_HOLD,
  TC_TAPRIO_CMD_SET_AND_RELEASE,
  TC_TAPRIO_CMD_SET_GATES,
  TCA_DUMP_INVISIBLE,
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
  TCA_TAPRIO_ATTR_FLAG_FULL_OFFLOAD,
  TCA_TAPRIO_ATTR_FLAG_TXTIME_ASSIST,
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
  tcHandle,
} from "./constants.ts";
import { getLink } from "./link.ts";
import { Attrs, type NlMessage, NlRequest } from "./message.ts";
import { type NetlinkFailure, type RequestContext, type RtnlSocket, withRtnl } from "./socket.ts";

// ---------------------------------------------------------------------------------------------
// Request specs

/** htb with only its global options: every packet goes to the default class (or direct). */
export interface HtbSpec {
  kind: "htb";
  /** Minor of the default class (htb "default"); 0 sends unclassified packets direct. */
  defaultClass?: number;
  /** rate-to-quantum divisor (tc's r2q), default 10. */
  rate2quantum?: number;
  /** Length of the direct queue in packets; the kernel uses the device txqueuelen if unset. */
  directQlen?: number;
}

/** tbf shaping to rateBytesPerSec with a bucket of burstBytes and a queue of limitBytes. */
export interface TbfSpec {
  kind: "tbf";
  rateBytesPerSec: bigint | number;
  burstBytes: number;
  limitBytes: number;
}

export type EtfSpec = { kind: "etf" } & EtfOptions;

/** What replaceQdisc/addQdisc can create. taprio/mqprio take the parsed node config. */
export type QdiscSpec =
  | { kind: "clsact" }
  | { kind: "mq" }
  | HtbSpec
  | TbfSpec
  | TaprioConfig
  | MqprioConfig
  | EtfSpec;

/** Where a qdisc goes. */
export interface QdiscTarget {
  ifindex: number;
  /** Parent handle: TC_H_ROOT (default) or a class such as tcHandle(0x100, 1). */
  parent?: number;
  /**
   * Qdisc handle (major:0). Default: clsact ffff:0, taprio/mqprio their config's
   * `handle` major, others 0 (the kernel picks one).
   */
  handle?: number;
}

export type QdiscOp = "add" | "replace" | "delete";

const OP_FLAGS: Record<QdiscOp, number> = {
  add: NLM_F_CREATE | NLM_F_EXCL,
  replace: NLM_F_CREATE | NLM_F_REPLACE,
  delete: 0,
};

const TAPRIO_COMMANDS = {
  S: TC_TAPRIO_CMD_SET_GATES,
  H: TC_TAPRIO_CMD_SET_AND_HOLD,
  R: TC_TAPRIO_CMD_SET_AND_RELEASE,
} as const;
type TaprioCommand = keyof typeof TAPRIO_COMMANDS;

/** Nanoseconds per psched tick (PSCHED_SHIFT 6). */
const PSCHED_TICK_NS = 64n;

function defaultHandle(spec: QdiscSpec): number {
  switch (spec.kind) {
    case "clsact":
      return tcHandle(0xffff, 0);
    case "taprio":
    case "mqprio":
      return tcHandle(spec.handle, 0);
    default:
      return 0;
  }
}

function resolveTarget(target: QdiscTarget, spec: QdiscSpec | undefined): {
  parent: number;
  handle: number;
} {
  if (spec?.kind === "clsact") return { parent: TC_H_CLSACT, handle: tcHandle(0xffff, 0) };
  return {
    parent: target.parent ?? TC_H_ROOT,
    handle: target.handle ?? (spec ? defaultHandle(spec) : 0),
  };
}

/** struct tc_mqprio_qopt for taprio's PRIOMAP and mqprio's TCA_OPTIONS. */
export function encodeMqprioQopt(
  c: { numTc: number; map: number[]; queues: QueueRange[] },
  hw: number,
): Uint8Array<ArrayBuffer> {
  const buf = encode(tc_mqprio_qopt, {
    num_tc: c.numTc,
    prio_tc_map: Uint8Array.from({ length: 16 }, (_, i) => c.map[i] ?? 0),
    hw,
  });
  const dv = new DataView(buf.buffer);
  c.queues.slice(0, TC_QOPT_MAX_QUEUE).forEach((q, i) => {
    dv.setUint16(tc_mqprio_qopt.fields.count[0] + 2 * i, q.count, true);
    dv.setUint16(tc_mqprio_qopt.fields.offset[0] + 2 * i, q.offset, true);
  });
  return buf;
}

/** struct tc_etf_qopt. */
export function encodeEtfQopt(e: EtfOptions): Uint8Array<ArrayBuffer> {
  const flags = (e.deadlineMode ? TC_ETF_DEADLINE_MODE_ON : 0) |
    (e.offload ? TC_ETF_OFFLOAD_ON : 0) | (e.skipSockCheck ? TC_ETF_SKIP_SOCK_CHECK : 0);
  return encode(tc_etf_qopt, { delta: e.deltaNs, clockid: CLOCK_IDS[e.clockid], flags });
}

/** taprio flags word from the config. */
export function taprioFlags(c: TaprioConfig): number {
  return (c.txtimeAssist ? TCA_TAPRIO_ATTR_FLAG_TXTIME_ASSIST : 0) |
    (c.fullOffload ? TCA_TAPRIO_ATTR_FLAG_FULL_OFFLOAD : 0);
}

/** tbf PARMS: rate (saturated at u32, RATE64 carries the rest) and buffer in psched ticks. */
export function encodeTbfQopt(s: TbfSpec): Uint8Array<ArrayBuffer> {
  const rate = BigInt(s.rateBytesPerSec);
  const ratespec = encode(tc_ratespec, {
    linklayer: TC_LINKLAYER_ETHERNET,
    rate: rate >= 0xffffffffn ? 0xffffffff : Number(rate),
  });
  const bufferTicks = BigInt(s.burstBytes) * 1_000_000_000n / rate / PSCHED_TICK_NS;
  return encode(tc_tbf_qopt, {
    rate: ratespec,
    limit: s.limitBytes,
    buffer: Number(bufferTicks > 0xffffffffn ? 0xffffffffn : bufferTicks),
  });
}

function putOptions(req: NlRequest, spec: QdiscSpec): void {
  switch (spec.kind) {
    case "clsact":
    case "mq":
      return;
    case "htb":
      req.nest(TCA_OPTIONS, (m) => {
        m.bytes(
          TCA_HTB_INIT,
          encode(tc_htb_glob, {
            version: TC_HTB_PROTOVER,
            rate2quantum: spec.rate2quantum ?? 10,
            defcls: spec.defaultClass ?? 0,
          }),
        );
        if (spec.directQlen !== undefined) m.u32(TCA_HTB_DIRECT_QLEN, spec.directQlen);
      });
      return;
    case "tbf":
      req.nest(TCA_OPTIONS, (m) => {
        m.bytes(TCA_TBF_PARMS, encodeTbfQopt(spec));
        const rate = BigInt(spec.rateBytesPerSec);
        if (rate >= 0xffffffffn) m.u64(TCA_TBF_RATE64, rate);
      });
      return;
    case "mqprio":
      req.bytes(TCA_OPTIONS, encodeMqprioQopt(spec, spec.hw));
      return;
    case "etf":
      req.nest(TCA_OPTIONS, (m) => m.bytes(TCA_ETF_PARMS, encodeEtfQopt(spec)));
      return;
    case "taprio":
      req.nest(TCA_OPTIONS, (m) => {
        m.bytes(TCA_TAPRIO_ATTR_PRIOMAP, encodeMqprioQopt(spec, 0));
        if (!spec.fullOffload) {
          m.s32(TCA_TAPRIO_ATTR_SCHED_CLOCKID, CLOCK_IDS[spec.clockid ?? "CLOCK_TAI"]);
        }
        const flags = taprioFlags(spec);
        if (flags) m.u32(TCA_TAPRIO_ATTR_FLAGS, flags);
        if (spec.txtimeDelayNs !== undefined) {
          m.u32(TCA_TAPRIO_ATTR_TXTIME_DELAY, spec.txtimeDelayNs);
        }
        m.s64(TCA_TAPRIO_ATTR_SCHED_BASE_TIME, spec.baseTime);
        if (spec.cycleTimeNs !== undefined) {
          m.s64(TCA_TAPRIO_ATTR_SCHED_CYCLE_TIME, spec.cycleTimeNs);
        }
        m.nest(TCA_TAPRIO_ATTR_SCHED_ENTRY_LIST, (l) => {
          for (const e of spec.entries) {
            l.nest(TCA_TAPRIO_SCHED_ENTRY, (n) => {
              n.u8(TCA_TAPRIO_SCHED_ENTRY_CMD, TAPRIO_COMMANDS[e.command]);
              n.u32(TCA_TAPRIO_SCHED_ENTRY_GATE_MASK, e.gateMask);
              n.u32(TCA_TAPRIO_SCHED_ENTRY_INTERVAL, e.intervalNs);
            });
          }
        });
      });
      return;
  }
}

/**
 * The complete RTM_NEWQDISC (add/replace) or RTM_DELQDISC (delete) message, unsent. Exposed
 * so tests can check the encoded bytes against pkt_sched.h.
 */
export function buildQdiscRequest(op: QdiscOp, target: QdiscTarget, spec?: QdiscSpec): NlRequest {
  const { parent, handle } = resolveTarget(target, spec);
  const req = new NlRequest(op === "delete" ? RTM_DELQDISC : RTM_NEWQDISC, OP_FLAGS[op]);
  req.extraHeader(
    encode(tcmsg, { tcm_ifindex: target.ifindex, tcm_parent: parent, tcm_handle: handle }),
  );
  if (spec) {
    req.strz(TCA_KIND, spec.kind);
    if (op !== "delete") putOptions(req, spec);
  }
  return req;
}

// ---------------------------------------------------------------------------------------------
// Errors

/** Qdisc kinds that live in modules named sch_<kind> on distribution kernels. */
function moduleFor(kind: string): string {
  return `sch_${kind}`;
}

function ifLabel(ifindex: number): string {
  const name = ifIndexToName(ifindex);
  return name ? `${name} (ifindex ${ifindex})` : `ifindex ${ifindex}`;
}

function qdiscContext(
  op: QdiscOp,
  target: QdiscTarget,
  spec: QdiscSpec | undefined,
  kind: string | undefined = spec?.kind,
): RequestContext {
  const { parent, handle } = resolveTarget(target, spec);
  const what = `${op} qdisc ${kind ?? ""} ${handle ? `handle ${formatHandle(handle)} ` : ""}` +
    `parent ${formatHandle(parent)} on ${ifLabel(target.ifindex)}`;
  return {
    what: what.replace(/\s+/g, " "),
    explain: (f: NetlinkFailure) => {
      if (
        op !== "delete" && kind && f.errno === Errno.ENOENT &&
        (f.extack ?? "").includes("kind is unknown")
      ) {
        const mod = moduleFor(kind);
        return {
          message: `${what.replace(/\s+/g, " ")}: this kernel has no "${kind}" qdisc: module ` +
            `${mod} is missing (kernel says "${f.extack}", ENOENT)`,
          hint: `load it with \`modprobe ${mod}\` (Debian ships it in linux-image-*; the kernel ` +
            `needs CONFIG_NET_SCH_${kind.toUpperCase()}), or set qdisc.kind to keep/none`,
        };
      }
      if (kind === "taprio" || kind === "mqprio") {
        if (f.errno === Errno.EOPNOTSUPP && /multi-?queue/i.test(f.extack ?? "")) {
          return {
            message: `${what.replace(/\s+/g, " ")}: ${kind} needs a multi-queue interface ` +
              `(kernel says "${f.extack}", EOPNOTSUPP)`,
            hint: "use the TSN NIC itself (several tx queues), or keep qdisc.kind: keep",
          };
        }
      }
      return undefined;
    },
  };
}

function sendQdisc(
  op: QdiscOp,
  target: QdiscTarget,
  spec: QdiscSpec | undefined,
  sock?: RtnlSocket,
) {
  const req = buildQdiscRequest(op, target, spec);
  withRtnl(sock, (s) => s.request(req, qdiscContext(op, target, spec)));
}

/** Creates or replaces the qdisc at target (NLM_F_CREATE|NLM_F_REPLACE). */
export function replaceQdisc(target: QdiscTarget, spec: QdiscSpec, sock?: RtnlSocket): void {
  sendQdisc("replace", target, spec, sock);
}

/** Creates the qdisc; EEXIST (KernelError) when one with that handle/parent exists. */
export function addQdisc(target: QdiscTarget, spec: QdiscSpec, sock?: RtnlSocket): void {
  sendQdisc("add", target, spec, sock);
}

/**
 * Deletes the qdisc at target.parent (and target.handle when given). Pass kind "clsact" to
 * delete clsact (parent and handle are then implied).
 */
export function deleteQdisc(
  target: QdiscTarget & { kind?: string },
  sock?: RtnlSocket,
): void {
  const spec = target.kind === "clsact" ? { kind: "clsact" as const } : undefined;
  const req = buildQdiscRequest("delete", target, spec);
  withRtnl(sock, (s) => s.request(req, qdiscContext("delete", target, spec, target.kind)));
}

// ---------------------------------------------------------------------------------------------
// Reading back

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

function parseStats(a: Attrs): TcStats {
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

function parseTcObject(m: NlMessage) {
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

function tcDumpRequest(type: number, ifindex: number): NlRequest {
  const req = new NlRequest(type, 0);
  req.extraHeader(encode(tcmsg, { tcm_ifindex: ifindex }));
  return req;
}

/**
 * Qdiscs on one interface (root, children, clsact/ingress), in the kernel's order. With
 * `invisible`, TCA_DUMP_INVISIBLE asks for the qdiscs tc hides by default as well.
 */
export function listQdiscs(
  ifindex: number,
  sock?: RtnlSocket,
  opts: { invisible?: boolean } = {},
): QdiscInfo[] {
  const req = tcDumpRequest(RTM_GETQDISC, ifindex);
  if (opts.invisible) req.bytes(TCA_DUMP_INVISIBLE, new Uint8Array(0));
  return withRtnl(sock, (s) =>
    s.dump(req, { what: `list qdiscs on ${ifLabel(ifindex)}` })
      .filter((m) => m.type === RTM_NEWQDISC)
      .map(parseQdisc)
      .filter((q) => q.ifindex === ifindex));
}

/**
 * Classes on one interface with their counters: for taprio/mqprio/mq one class per tx queue
 * (major:queue+1) whose counters are those of the queue's child qdisc.
 */
export function listClasses(ifindex: number, sock?: RtnlSocket): ClassInfo[] {
  return withRtnl(sock, (s) => {
    const classes = s.dump(tcDumpRequest(RTM_GETTCLASS, ifindex), {
      what: `list classes on ${ifLabel(ifindex)}`,
    })
      .filter((m) => m.type === RTM_NEWTCLASS)
      .map((m): ClassInfo => {
        const { t, a, kind } = parseTcObject(m);
        return {
          ifindex: t.tcm_ifindex,
          handle: t.tcm_handle,
          parent: t.tcm_parent,
          kind,
          leaf: t.tcm_info,
          stats: parseStats(a),
        };
      })
      .filter((c) => c.ifindex === ifindex);
    const qdiscs = listQdiscs(ifindex, s, { invisible: true });
    for (const c of classes) {
      const child = qdiscs.find((q) => q.parent === c.handle && (!c.leaf || q.handle === c.leaf));
      if (child) c.leafStats = child.stats;
    }
    return classes;
  });
}

/** The root qdisc (parent TC_H_ROOT), if the dump shows one. */
export function rootQdisc(qdiscs: QdiscInfo[]): QdiscInfo | undefined {
  return qdiscs.find((q) => q.parent === TC_H_ROOT);
}

// ---------------------------------------------------------------------------------------------
// Ordering: clsact before taprio (Debian 6.1 bug)

export interface QdiscOrder {
  ifindex: number;
  /** clsact (or ingress, which shares its slot) is present. */
  clsact: boolean;
  root?: QdiscInfo;
  /** The root is a taprio or mqprio qdisc. */
  tsnRoot?: "taprio" | "mqprio";
  /** The root is taprio running its schedule in software (no full offload). */
  softwareTaprio: boolean;
  /**
   * clsact and a software taprio root are both present. On Debian 6.1 kernels, if clsact was
   * added after taprio, taprio stops dequeuing for good (packets pile up in the backlog); the
   * kernel cannot tell us the order, so callers that may have added clsact late should repair
   * with recreateRootQdisc().
   */
  stallRisk: boolean;
}

/**
 * Looks at an interface's qdiscs for the clsact/taprio ordering problem measured on Debian's
 * 6.1 kernel (notes/vm.md): adding clsact AFTER a software-mode taprio stops taprio from
 * dequeuing; clsact first, then taprio, works (6.12 works either way).
 *
 * Installer use:
 * (a) new NIC: call ensureClsact() (or addQdisc clsact) before applying taprio, or pass
 *     `clsactFirst: true` to applyQdiscConfig();
 * (b) NIC already running taprio: ensureClsact() adds clsact and then deletes and re-creates
 *     the root taprio (recreateRootQdisc) so taprio again comes after clsact.
 */
export function inspectQdiscOrder(ifindex: number, sock?: RtnlSocket): QdiscOrder {
  const qdiscs = listQdiscs(ifindex, sock);
  const clsact = qdiscs.some((q) =>
    (q.kind === "clsact" || q.kind === "ingress") && q.parent === TC_H_CLSACT
  );
  const root = rootQdisc(qdiscs);
  const tsnRoot = root?.kind === "taprio" || root?.kind === "mqprio" ? root.kind : undefined;
  const softwareTaprio = root?.options?.kind === "taprio" &&
    (root.options.flags & TCA_TAPRIO_ATTR_FLAG_FULL_OFFLOAD) === 0;
  const out: QdiscOrder = {
    ifindex,
    clsact,
    softwareTaprio,
    stallRisk: clsact && softwareTaprio,
  };
  if (root) out.root = root;
  if (tsnRoot) out.tsnRoot = tsnRoot;
  return out;
}

/**
 * Makes sure clsact exists on the interface. When it had to be added and a software taprio
 * root was already running, the root is re-created (with its etf children) so it comes after
 * clsact. Returns what it did.
 */
export function ensureClsact(
  ifindex: number,
  sock?: RtnlSocket,
): { clsactAdded: boolean; rootRecreated: boolean } {
  return withRtnl(sock, (s) => {
    const before = inspectQdiscOrder(ifindex, s);
    if (before.clsact) return { clsactAdded: false, rootRecreated: false };
    addQdisc({ ifindex }, { kind: "clsact" }, s);
    const rootRecreated = before.softwareTaprio ? recreateRootQdisc(ifindex, s) : false;
    return { clsactAdded: true, rootRecreated };
  });
}

function clockName(id: number | undefined): ClockName | undefined {
  if (id === undefined) return undefined;
  const hit = Object.entries(CLOCK_IDS).find(([, v]) => v === id);
  return hit ? hit[0] as ClockName : undefined;
}

/** Turns a read-back etf into config options (clock ids tsnproxy does not know -> TAI). */
function etfFromKernel(o: Extract<QdiscOptions, { kind: "etf" }>): EtfOptions {
  return {
    clockid: clockName(o.clockid) ?? "CLOCK_TAI",
    deltaNs: o.deltaNs,
    skipSockCheck: o.skipSockCheck,
    deadlineMode: o.deadlineMode,
    offload: o.offload,
  };
}

/** etf children of a root with the given major, as config entries (queue = minor - 1). */
function etfChildren(qdiscs: QdiscInfo[], major: number): EtfChildConfig[] {
  const out: EtfChildConfig[] = [];
  for (const q of qdiscs) {
    if (q.options?.kind !== "etf" || q.parent >>> 16 !== major) continue;
    out.push({ queue: (q.parent & 0xffff) - 1, ...etfFromKernel(q.options) });
  }
  return out.sort((a, b) => a.queue - b.queue);
}

/**
 * Converts the kernel's view of a taprio/mqprio root (plus its etf children) back into a
 * config that applyQdiscConfig() accepts. undefined for other roots.
 */
export function configFromKernel(
  root: QdiscInfo,
  qdiscs: QdiscInfo[],
): TaprioConfig | MqprioConfig | undefined {
  const o = root.options;
  const major = root.handle >>> 16;
  const etf = etfChildren(qdiscs, major);
  const base = {
    handle: major,
    numTc: o?.kind === "taprio" || o?.kind === "mqprio" ? o.numTc : 0,
    ...(etf.length ? { etf } : {}),
  };
  if (o?.kind === "mqprio") {
    return {
      kind: "mqprio",
      ...base,
      map: o.map,
      queues: o.queues,
      hw: o.hw ? 1 : 0,
    };
  }
  if (o?.kind !== "taprio") return undefined;
  const sched = o.admin ?? o.oper;
  if (!sched) return undefined;
  const fullOffload = (o.flags & TCA_TAPRIO_ATTR_FLAG_FULL_OFFLOAD) !== 0;
  const cfg: TaprioConfig = {
    kind: "taprio",
    ...base,
    map: o.map,
    queues: o.queues,
    baseTime: sched.baseTime,
    entries: sched.entries.map((e) => ({
      command: e.command,
      gateMask: e.gateMask,
      intervalNs: e.intervalNs,
    })),
    txtimeAssist: (o.flags & TCA_TAPRIO_ATTR_FLAG_TXTIME_ASSIST) !== 0,
    fullOffload,
  };
  const clock = clockName(o.clockid);
  if (!fullOffload && clock) cfg.clockid = clock;
  const sum = sched.entries.reduce((acc, e) => acc + BigInt(e.intervalNs), 0n);
  if (sched.cycleTime !== undefined && sched.cycleTime !== sum) cfg.cycleTimeNs = sched.cycleTime;
  if (o.txtimeDelayNs !== undefined && cfg.txtimeAssist) cfg.txtimeDelayNs = o.txtimeDelayNs;
  return cfg;
}

/**
 * Deletes the root taprio/mqprio and creates it again with the parameters (and etf children)
 * the kernel reports. Other child qdiscs under its classes are not restored. Returns false
 * when the root is not taprio/mqprio (nothing done).
 */
export function recreateRootQdisc(ifindex: number, sock?: RtnlSocket): boolean {
  return withRtnl(sock, (s) => {
    const qdiscs = listQdiscs(ifindex, s);
    const root = rootQdisc(qdiscs);
    const cfg = root && configFromKernel(root, qdiscs);
    if (!root || !cfg) return false;
    deleteQdisc({ ifindex, parent: TC_H_ROOT, handle: root.handle }, s);
    createTsnRoot(ifindex, cfg, s);
    return true;
  });
}

// ---------------------------------------------------------------------------------------------
// Applying the node config

function createTsnRoot(ifindex: number, cfg: TaprioConfig | MqprioConfig, s: RtnlSocket): void {
  addQdisc({ ifindex, parent: TC_H_ROOT, handle: tcHandle(cfg.handle, 0) }, cfg, s);
  for (const e of cfg.etf ?? []) {
    const { queue, ...opts } = e;
    replaceQdisc(
      { ifindex, parent: tcHandle(cfg.handle, queue + 1) },
      { kind: "etf", ...opts },
      s,
    );
  }
}

function sameLayout(a: MqprioLayout, c: TaprioConfig | MqprioConfig): boolean {
  return a.numTc === c.numTc &&
    a.map.every((v, i) => v === (c.map[i] ?? 0)) &&
    a.queues.length === c.queues.length &&
    a.queues.every((q, i) => q.count === c.queues[i].count && q.offset === c.queues[i].offset);
}

/** True when the kernel's root (and etf children) already match the config. */
export function rootMatches(
  root: QdiscInfo | undefined,
  qdiscs: QdiscInfo[],
  cfg: TaprioConfig | MqprioConfig,
): boolean {
  if (!root || root.kind !== cfg.kind || root.handle !== tcHandle(cfg.handle, 0)) return false;
  const o = root.options;
  if (!o || (o.kind !== "taprio" && o.kind !== "mqprio") || !sameLayout(o, cfg)) return false;
  if (o.kind === "mqprio" && cfg.kind === "mqprio" && o.hw !== cfg.hw) return false;
  if (o.kind === "taprio" && cfg.kind === "taprio") {
    const sched = o.admin ?? o.oper;
    if (!sched || sched.baseTime !== cfg.baseTime) return false;
    if (o.flags !== taprioFlags(cfg)) return false;
    if (!cfg.fullOffload && o.clockid !== CLOCK_IDS[cfg.clockid ?? "CLOCK_TAI"]) return false;
    if ((o.txtimeDelayNs ?? 0) !== (cfg.txtimeDelayNs ?? 0)) return false;
    if (sched.entries.length !== cfg.entries.length) return false;
    const entriesSame = sched.entries.every((e, i) =>
      e.command === cfg.entries[i].command && e.gateMask === cfg.entries[i].gateMask &&
      e.intervalNs === cfg.entries[i].intervalNs
    );
    if (!entriesSame) return false;
    if (cfg.cycleTimeNs !== undefined && sched.cycleTime !== cfg.cycleTimeNs) return false;
  }
  const want = [...(cfg.etf ?? [])].sort((a, b) => a.queue - b.queue);
  const have = etfChildren(qdiscs, cfg.handle);
  return want.length === have.length &&
    want.every((w, i) =>
      w.queue === have[i].queue && w.clockid === have[i].clockid && w.deltaNs === have[i].deltaNs &&
      w.skipSockCheck === have[i].skipSockCheck && w.deadlineMode === have[i].deadlineMode &&
      w.offload === have[i].offload
    );
}

export interface ApplyOptions {
  sock?: RtnlSocket;
  /**
   * Create clsact before the taprio/mqprio root (Debian 6.1 bug, see inspectQdiscOrder).
   * Set it when tsnproxy will attach classic clsact programs to this interface.
   */
  clsactFirst?: boolean;
}

export interface ApplyResult {
  changed: boolean;
  /** Human-readable steps taken, for logs and --dry-run style reporting. */
  actions: string[];
}

/**
 * Applies the node config's `qdisc` section to an interface (in the calling thread's netns):
 * - keep: nothing;
 * - none: deletes a taprio/mqprio root if there is one (the kernel default comes back);
 * - taprio/mqprio: checks the queue ranges against the link's tx queues, does nothing when the
 *   kernel already matches, otherwise deletes a non-default root and creates the configured
 *   root and etf children (taprio cannot change its mapping in place).
 * Throws ConfigError (queues do not fit) or KernelError (kernel refused, with its message).
 */
export function applyQdiscConfig(
  ifindex: number,
  cfg: QdiscConfig,
  opts: ApplyOptions = {},
): ApplyResult {
  return withRtnl(opts.sock, (s) => {
    const actions: string[] = [];
    if (cfg.kind === "keep") return { changed: false, actions };
    const qdiscs = listQdiscs(ifindex, s);
    const root = rootQdisc(qdiscs);
    if (cfg.kind === "none") {
      if (root && (root.kind === "taprio" || root.kind === "mqprio")) {
        deleteQdisc({ ifindex, parent: TC_H_ROOT, handle: root.handle }, s);
        actions.push(`deleted root ${root.kind} ${formatHandle(root.handle)}`);
      }
      return { changed: actions.length > 0, actions };
    }
    const link = getLink(ifindex, s);
    checkQueuesFit(cfg, link.numTxQueues, link.name);
    const hasClsact = qdiscs.some((q) => q.parent === TC_H_CLSACT);
    if (opts.clsactFirst && !hasClsact) {
      addQdisc({ ifindex }, { kind: "clsact" }, s);
      actions.push("added clsact (before the TSN root)");
    }
    if (rootMatches(root, qdiscs, cfg)) {
      if (opts.clsactFirst && !hasClsact && root?.kind === "taprio") {
        recreateRootQdisc(ifindex, s);
        actions.push(`re-created root taprio after clsact`);
      }
      return { changed: actions.length > 0, actions };
    }
    if (root && root.handle !== 0) {
      try {
        deleteQdisc({ ifindex, parent: TC_H_ROOT, handle: root.handle }, s);
        actions.push(`deleted root ${root.kind} ${formatHandle(root.handle)}`);
      } catch (e) {
        // A default root (noqueue, mq of a NIC) cannot always be deleted; adding replaces it.
        if (!(e instanceof KernelError)) throw e;
      }
    }
    createTsnRoot(ifindex, cfg, s);
    actions.push(
      `created root ${cfg.kind} ${formatHandle(tcHandle(cfg.handle, 0))}` +
        (cfg.etf?.length ? ` with etf on queue(s) ${cfg.etf.map((e) => e.queue).join(",")}` : ""),
    );
    return { changed: true, actions };
  });
}
