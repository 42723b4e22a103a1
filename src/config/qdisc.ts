/**
 * The node config's `qdisc` section: what tsnproxy sets up as the TSN interface's root qdisc.
 *
 *   qdisc:
 *     kind: taprio
 *     numTc: 4
 *     map: [0, 1, 2, 3]              # priority -> traffic class, padded to 16 with 0
 *     queues: ["1@0", "1@1", "1@2", "1@3"]   # or [{count: 1, offset: 0}, ...]
 *     baseTime: "1700000000000000000"  # ns; a string keeps 64-bit values exact
 *     entries:
 *       - {command: S, gateMask: 0x1, intervalNs: 300000}
 *       - {command: S, gateMask: 0xe, intervalNs: 700000}
 *     clockid: CLOCK_TAI
 *     etf: [{queue: 0, deltaNs: 200000}]
 *
 * kinds: taprio, mqprio (each with optional per-queue etf children), keep (leave whatever is
 * there), none (tsnproxy removes a taprio/mqprio root it finds and leaves the kernel default).
 * The netlink request builders (src/netlink/qdisc_request.ts) take the parsed (output) types
 * below.
 */
import { z } from "zod";
import { ConfigError } from "../errors.ts";

const MAX_TC = 16; // TC_QOPT_MAX_QUEUE
const PRIO_COUNT = 16; // TC_QOPT_BITMASK + 1
const U32_MAX = 0xffffffff;

export const clockNames = [
  "CLOCK_TAI",
  "CLOCK_REALTIME",
  "CLOCK_MONOTONIC",
  "CLOCK_BOOTTIME",
] as const;
const clockSchema = z.enum(clockNames, {
  error: () => `clockid must be one of ${clockNames.join(", ")}`,
});

/** A u32 given as a number or as a string ("0x0f", "15", "0b1111"). */
const u32Like = (what: string) =>
  z.union([z.number(), z.string()]).transform((v, ctx) => {
    const n = typeof v === "number" ? v : Number(v.trim());
    if (!Number.isInteger(n) || n < 0 || n > U32_MAX) {
      ctx.addIssue({ code: "custom", message: `${what} must be an integer 0..0xffffffff` });
      return z.NEVER;
    }
    return n;
  });

/** Nanoseconds that may exceed 2^53: number (safe integers only), decimal string or bigint. */
const nsBig = (what: string) =>
  z.union([z.number(), z.string(), z.bigint()]).transform((v, ctx) => {
    if (typeof v === "bigint") return v;
    if (typeof v === "number") {
      if (!Number.isSafeInteger(v)) {
        ctx.addIssue({
          code: "custom",
          message: `${what} must be an integer; write values above 2^53 as a quoted string`,
        });
        return z.NEVER;
      }
      return BigInt(v);
    }
    if (!/^-?\d+$/.test(v.trim())) {
      ctx.addIssue({ code: "custom", message: `${what} must be a decimal number of nanoseconds` });
      return z.NEVER;
    }
    return BigInt(v.trim());
  });

const queueRange = z.union([
  z.string().regex(/^\d+@\d+$/, { message: 'queue ranges look like "count@offset", e.g. "1@0"' })
    .transform((s) => {
      const [count, offset] = s.split("@").map(Number);
      return { count, offset };
    }),
  z.strictObject({ count: z.number().int(), offset: z.number().int() }),
]);

/** Options of one etf qdisc (without the queue it sits on). */
export const etfOptionsSchema = z.strictObject({
  clockid: clockSchema.default("CLOCK_TAI"),
  /** How long before its txtime a packet is dequeued (ns). */
  deltaNs: z.number().int().min(0).max(0x7fffffff),
  /**
   * Accept packets without a socket. Default true: forwarded pod packets reach the node's
   * NIC without their socket, and etf would otherwise drop them.
   */
  skipSockCheck: z.boolean().default(true),
  deadlineMode: z.boolean().default(false),
  offload: z.boolean().default(false),
});

/** An etf child on a tx queue (0-based) of a taprio/mqprio root. */
export const etfChildSchema = etfOptionsSchema.extend({
  queue: z.number().int().min(0).max(MAX_TC * 64),
});

const common = {
  /** Root handle major (default 0x100, i.e. "100:"); classes are major:queue+1. */
  handle: z.number().int().min(1).max(0xfffe).default(0x100),
  numTc: z.number().int().min(1).max(MAX_TC),
  map: z.array(z.number().int().min(0).max(MAX_TC - 1)).max(PRIO_COUNT)
    .transform((m) => [...m, ...Array(PRIO_COUNT - m.length).fill(0)] as number[]),
  queues: z.array(queueRange).min(1).max(MAX_TC),
  etf: z.array(etfChildSchema).optional(),
};

const commandSchema = z.enum(["S", "H", "R"], {
  error: () => "entry command must be S (set gates), H (set and hold) or R (set and release)",
});

export const taprioSchema = z.strictObject({
  kind: z.literal("taprio"),
  ...common,
  baseTime: nsBig("baseTime").default(0n),
  entries: z.array(z.strictObject({
    command: commandSchema.default("S"),
    gateMask: u32Like("gateMask"),
    intervalNs: z.number().int().min(1, { message: "intervalNs must be > 0" }).max(U32_MAX),
  })).min(1, { message: "taprio needs at least one schedule entry" }),
  /** Default CLOCK_TAI; must be absent with fullOffload (the NIC's clock is used). */
  clockid: clockSchema.optional(),
  cycleTimeNs: nsBig("cycleTimeNs").optional(),
  /** Flag 0x1: software schedule, the NIC launches by txtime (needs txtimeDelayNs). */
  txtimeAssist: z.boolean().default(false),
  /** Flag 0x2: the NIC runs the schedule. */
  fullOffload: z.boolean().default(false),
  txtimeDelayNs: z.number().int().min(0).max(U32_MAX).optional(),
});

export const mqprioSchema = z.strictObject({
  kind: z.literal("mqprio"),
  ...common,
  /** 0: software only; 1: offload the traffic classes to the NIC. */
  hw: z.union([z.literal(0), z.literal(1)]).default(0),
});

const keepSchema = z.strictObject({ kind: z.literal("keep") });
const noneSchema = z.strictObject({ kind: z.literal("none") });

type Ctx = z.core.$RefinementCtx<unknown>;
interface TcShape {
  numTc: number;
  map: number[];
  queues: { count: number; offset: number }[];
  etf?: { queue: number }[];
}

function checkTc(c: TcShape, ctx: Ctx): void {
  c.map.forEach((tc, prio) => {
    if (tc >= c.numTc) {
      ctx.addIssue({
        code: "custom",
        path: ["map", prio],
        message: `map[${prio}] = ${tc} but numTc is ${c.numTc}: classes are 0..${c.numTc - 1}`,
      });
    }
  });
  if (c.queues.length !== c.numTc) {
    ctx.addIssue({
      code: "custom",
      path: ["queues"],
      message: `queues has ${c.queues.length} ranges but numTc is ${c.numTc}: give one per class`,
    });
  }
  let end = 0;
  c.queues.forEach((q, i) => {
    if (q.count < 1 || q.offset < 0) {
      ctx.addIssue({
        code: "custom",
        path: ["queues", i],
        message: `queue range ${q.count}@${q.offset}: count must be >= 1 and offset >= 0`,
      });
    } else if (q.offset < end) {
      ctx.addIssue({
        code: "custom",
        path: ["queues", i],
        message: `queue range ${q.count}@${q.offset} overlaps or precedes the previous one ` +
          `(ranges must ascend without overlap)`,
      });
    }
    end = Math.max(end, q.offset + q.count);
  });
  const seen = new Set<number>();
  c.etf?.forEach((e, i) => {
    if (e.queue >= end) {
      ctx.addIssue({
        code: "custom",
        path: ["etf", i, "queue"],
        message: `etf queue ${e.queue} is not in any queue range (queues end at ${end - 1})`,
      });
    }
    if (seen.has(e.queue)) {
      ctx.addIssue({
        code: "custom",
        path: ["etf", i, "queue"],
        message: `two etf children on queue ${e.queue}`,
      });
    }
    seen.add(e.queue);
  });
}

export const qdiscSchema = z.discriminatedUnion("kind", [
  taprioSchema.superRefine((c, ctx) => {
    checkTc(c, ctx);
    if (c.txtimeAssist && c.fullOffload) {
      ctx.addIssue({
        code: "custom",
        path: ["fullOffload"],
        message: "txtimeAssist and fullOffload are mutually exclusive",
      });
    }
    if (c.txtimeAssist && c.txtimeDelayNs === undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["txtimeDelayNs"],
        message: "txtimeAssist needs txtimeDelayNs",
      });
    }
    if (!c.txtimeAssist && c.txtimeDelayNs !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["txtimeDelayNs"],
        message: "txtimeDelayNs is only valid with txtimeAssist",
      });
    }
    if (c.fullOffload && c.clockid !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["clockid"],
        message: "clockid cannot be set with fullOffload (the NIC's PTP clock is used)",
      });
    }
    const mask = (1 << c.numTc) - 1;
    c.entries.forEach((e, i) => {
      if ((e.gateMask & ~mask) >>> 0 !== 0) {
        ctx.addIssue({
          code: "custom",
          path: ["entries", i, "gateMask"],
          message: `gateMask 0x${e.gateMask.toString(16)} opens gates above numTc ${c.numTc}`,
        });
      }
    });
  }),
  mqprioSchema.superRefine(checkTc),
  keepSchema,
  noneSchema,
]);

export type QdiscConfig = z.infer<typeof qdiscSchema>;
export type TaprioConfig = z.infer<typeof taprioSchema>;
export type MqprioConfig = z.infer<typeof mqprioSchema>;
export type EtfOptions = z.infer<typeof etfOptionsSchema>;
export type EtfChildConfig = z.infer<typeof etfChildSchema>;
export type QueueRange = { count: number; offset: number };
/** What the user may write (before defaults and transforms). */
export type QdiscConfigInput = z.input<typeof qdiscSchema>;

/** Parses and validates a `qdisc` section; ConfigError naming every problem otherwise. */
export function parseQdiscConfig(input: unknown, where = "qdisc"): QdiscConfig {
  const r = qdiscSchema.safeParse(input);
  if (r.success) return r.data;
  const problems = r.error.issues.map((i) => {
    const path = [where, ...i.path.map(String)].join(".");
    return `${path}: ${i.message}`;
  });
  throw new ConfigError(
    `invalid qdisc config: ${problems.join("; ")}`,
    "fix the qdisc section of the node config (see docs: kind taprio|mqprio|keep|none)",
  );
}

/**
 * Apply-time check: the queue ranges (and etf queues) must fit the interface's tx queues.
 * Throws ConfigError naming the interface.
 */
export function checkQueuesFit(
  cfg: TaprioConfig | MqprioConfig,
  numTxQueues: number,
  ifname: string,
): void {
  const end = Math.max(...cfg.queues.map((q) => q.offset + q.count));
  if (end > numTxQueues) {
    throw new ConfigError(
      `qdisc ${cfg.kind} on ${ifname} uses tx queues up to ${end - 1} but ${ifname} has ` +
        `${numTxQueues} tx queue${numTxQueues === 1 ? "" : "s"}`,
      `shrink qdisc.queues to fit ${numTxQueues} queues, or use a multi-queue interface`,
    );
  }
}
