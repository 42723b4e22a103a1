/**
 * The agent's part for the TSN interfaces: each one's qdisc, VLAN egress-qos-map and restorer
 * put back the way install left them (the same plans install runs, src/install/plan.ts
 * planInterface), and a watch on their ifindexes (a re-created interface needs all three
 * again). One record per interface in the agent's stats, for the
 * `tsnproxy_restorer_attached{interface=...}` metric.
 */
import { attachRestorer, restorerAttached } from "../bpf/node.ts";
import { ifNameToIndex } from "../ffi/libc.ts";
import { asTsnproxyError } from "../errors.ts";
import { log } from "../log.ts";
import { type InstallTarget, planInterface } from "../install/plan.ts";
import { applyQdiscPlan, formatQdiscStep } from "../install/qdisc_plan.ts";
import {
  interfaceState,
  readState,
  sameState,
  withInterface,
  writeState,
} from "../install/state.ts";
import { applyVlanPlan, formatVlanChanges } from "../install/vlan_plan.ts";
import type { AgentStats } from "./metrics.ts";

/** Whether every TSN interface has its restorer (restoreAt host-veth-ingress: none needed). */
function allAttached(stats: AgentStats): boolean {
  return Object.values(stats.restorers).every(Boolean);
}

/**
 * Reconciles every TSN interface; false when one of them failed (each is tried). A missing
 * interface is waited for (a warning), not an error.
 */
export async function reconcileInterfaces(
  target: InstallTarget,
  stats: AgentStats,
  why: string,
): Promise<boolean> {
  const cfg = target.cfg;
  let ok = true;
  for (const iface of target.tsnInterfaces) {
    const name = iface.name;
    if (ifNameToIndex(name) === 0) {
      if (cfg.restoreAt === "tsn-egress") stats.restorers[name] = false;
      log("warn", "TSN interface missing; waiting for it", { ifname: name, why });
      continue;
    }
    try {
      const state = await readState(target.stateDir);
      const plan = planInterface(target, iface, state);
      let next = state;
      if (plan.qdisc.steps.length > 0) {
        log("info", "qdisc reconcile", {
          why,
          ifname: name,
          steps: plan.qdisc.steps.map(formatQdiscStep),
        });
        next = withInterface(next, applyQdiscPlan(plan.qdisc, interfaceState(next, name)));
      }
      if (plan.vlan && plan.vlan.changes.length > 0) {
        log("info", "egress-qos-map reconcile", { why, change: formatVlanChanges(plan.vlan) });
        const rec = interfaceState(next, name) ?? { ifname: name, clsactCreated: false };
        const vlan = applyVlanPlan(plan.vlan, rec.vlan);
        next = withInterface(next, vlan ? { ...rec, vlan } : rec);
      }
      if (!sameState(next, state)) await writeState(target.stateDir, next);
      if (plan.restorer.action === "attach") {
        const a = attachRestorer(cfg.bpffs, name, target.api);
        stats.restorerReattached++;
        log("info", "restorer re-attached", { why, ifname: name, ifindex: a.ifindex, api: a.api });
      }
      if (plan.restorer.action !== undefined) stats.restorers[name] = true;
    } catch (e) {
      ok = false;
      if (cfg.restoreAt === "tsn-egress") stats.restorers[name] = restorerOn(target, name);
      log("error", "restorer reconcile failed", {
        why,
        ifname: name,
        error: asTsnproxyError(e).oneLine(),
      });
    }
  }
  stats.restorerAttached = allAttached(stats);
  return ok;
}

function restorerOn(target: InstallTarget, ifname: string): boolean {
  try {
    return restorerAttached(target.cfg.bpffs, ifname) !== undefined;
  } catch {
    return false;
  }
}

/** Whether the restorer is on every TSN interface now (read from the kernel, never throws). */
export function restorersAttachedNow(target: InstallTarget): boolean {
  return target.tsnInterfaces.every((i) => restorerOn(target, i.name));
}

/**
 * Polls the TSN interfaces' ifindexes every second: a new one (deleted and re-created, or
 * appeared) calls `reconcile`; a vanished one marks its restorer gone. Returns the stopper.
 */
export function watchInterfaces(
  target: InstallTarget,
  stats: AgentStats,
  reconcile: (why: string) => unknown,
): () => void {
  const last = new Map(target.tsnInterfaces.map((i) => [i.name, ifNameToIndex(i.name)]));
  const timer = setInterval(() => {
    let appeared = false;
    for (const [name, before] of last) {
      const idx = ifNameToIndex(name);
      if (idx === before) continue;
      log("info", "TSN interface changed", { ifname: name, from: before, to: idx });
      last.set(name, idx);
      if (idx !== 0) appeared = true;
      else if (name in stats.restorers) stats.restorers[name] = false;
    }
    stats.restorerAttached = allAttached(stats);
    if (appeared) reconcile("interface re-appeared");
  }, 1000);
  return () => clearInterval(timer);
}
