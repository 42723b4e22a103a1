/**
 * RTM_NEWQDISC / RTM_DELQDISC requests for the qdisc kinds tsnproxy manages (clsact, mq, htb
 * default class, tbf, taprio, mqprio, etf): the specs and their encoding, unsent.
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
import type { EtfOptions, MqprioConfig, QueueRange, TaprioConfig } from "../config/qdisc.ts";
import { encode } from "../ffi/structs/layout.ts";
import {
  tc_etf_qopt,
  tc_htb_glob,
  tc_mqprio_qopt,
  tc_ratespec,
  tc_tbf_qopt,
  tcmsg,
} from "../ffi/structs/netlink.ts";
import {
  CLOCK_IDS,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REPLACE,
  RTM_DELQDISC,
  RTM_NEWQDISC,
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
  TCA_ETF_PARMS,
  TCA_HTB_DIRECT_QLEN,
  TCA_HTB_INIT,
  TCA_KIND,
  TCA_OPTIONS,
  TCA_TAPRIO_ATTR_FLAG_FULL_OFFLOAD,
  TCA_TAPRIO_ATTR_FLAG_TXTIME_ASSIST,
  TCA_TAPRIO_ATTR_FLAGS,
  TCA_TAPRIO_ATTR_PRIOMAP,
  TCA_TAPRIO_ATTR_SCHED_BASE_TIME,
  TCA_TAPRIO_ATTR_SCHED_CLOCKID,
  TCA_TAPRIO_ATTR_SCHED_CYCLE_TIME,
  TCA_TAPRIO_ATTR_SCHED_ENTRY_LIST,
  TCA_TAPRIO_ATTR_TXTIME_DELAY,
  TCA_TAPRIO_SCHED_ENTRY,
  TCA_TAPRIO_SCHED_ENTRY_CMD,
  TCA_TAPRIO_SCHED_ENTRY_GATE_MASK,
  TCA_TAPRIO_SCHED_ENTRY_INTERVAL,
  TCA_TBF_PARMS,
  TCA_TBF_RATE64,
  tcHandle,
} from "./constants.ts";
import { NlRequest } from "./message.ts";

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
export type TaprioCommand = keyof typeof TAPRIO_COMMANDS;

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

/** Parent and handle a request for `spec` at `target` carries. */
export function resolveTarget(target: QdiscTarget, spec: QdiscSpec | undefined): {
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
