/**
 * The TSN interface's qdiscs read in the node config's terms, for the qdisc plan and doctor:
 * the clsact/taprio ordering facts (the Debian 6.1 stall), the root and its etf children as
 * a config, and whether they match the configured one.
 */
import type { EtfChildConfig, EtfOptions, MqprioConfig, TaprioConfig } from "../config/qdisc.ts";
import {
  CLOCK_IDS,
  type ClockName,
  clockNameOf,
  listQdiscs,
  type MqprioLayout,
  type QdiscInfo,
  type QdiscOptions,
  rootQdisc,
  type RtnlSocket,
  taprioFlags,
  TC_H_CLSACT,
  TCA_TAPRIO_ATTR_FLAG_FULL_OFFLOAD,
  TCA_TAPRIO_ATTR_FLAG_TXTIME_ASSIST,
  tcHandle,
} from "../netlink/mod.ts";

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
   * kernel cannot tell us the order, so the qdisc plan repairs a root it finds in that state
   * when it added clsact itself (step recreate-root).
   */
  stallRisk: boolean;
}

/**
 * Looks at an interface's qdiscs for the clsact/taprio ordering problem measured on Debian's
 * 6.1 kernel (notes/vm.md): adding clsact AFTER a software-mode taprio stops taprio from
 * dequeuing; clsact first, then taprio, works (6.12 works either way).
 *
 * The qdisc plan (qdisc_plan.ts) acts on it: on a new NIC clsact is added before the root
 * (step add-clsact, then apply-root); on a NIC already running a software taprio without
 * clsact, clsact is added and the root re-created (recreate-root) so taprio comes after it.
 */
export function inspectQdiscOrder(ifindex: number, sock?: RtnlSocket): QdiscOrder {
  return qdiscOrder(ifindex, listQdiscs(ifindex, sock));
}

/** inspectQdiscOrder from the interface's qdiscs as listQdiscs read them. */
export function qdiscOrder(ifindex: number, qdiscs: QdiscInfo[]): QdiscOrder {
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

function clockName(id: number | undefined): ClockName | undefined {
  return id === undefined ? undefined : clockNameOf(id);
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
 * config (what the plan re-creates the root from). undefined for other roots.
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
