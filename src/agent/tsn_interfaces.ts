/**
 * The agent's part for the TSN interfaces: whether each one has its restorer, running the
 * pinned tsnp_restore (the restorer.attached readiness condition and the
 * `tsnproxy_restorer_attached{interface=...}` metric), and a watch on their ifindexes (a
 * re-created interface needs its qdisc, VLAN egress-qos-map and restorer again: the repair,
 * src/agent/repair.ts, plans them with install's planNode for the interfaces that exist, and
 * waits for the others).
 */
import { restorerStatus } from "../bpf/node.ts";
import { PinLayout } from "../bpf/pins.ts";
import { ifNameToIndex } from "../ffi/libc.ts";
import { asTsnproxyError } from "../errors.ts";
import { log } from "../log.ts";
import type { InstallTarget } from "../install/plan.ts";
import { exists } from "../util/fs.ts";
import type { AgentStats } from "./metrics.ts";

/** One TSN interface's restorer, as read from the kernel. */
export interface RestorerState {
  ifname: string;
  ok: boolean;
  detail: string;
}

function restorerState(t: InstallTarget, ifname: string): RestorerState {
  if (ifNameToIndex(ifname) === 0) {
    return { ifname, ok: false, detail: `the TSN interface ${ifname} does not exist` };
  }
  try {
    const st = exists(new PinLayout(t.cfg.bpffs).root)
      ? restorerStatus(t.cfg.bpffs, ifname)
      : undefined;
    if (st?.runningId === undefined) {
      return { ifname, ok: false, detail: `not attached to ${ifname}` };
    }
    const a = st.attachment;
    if (st.runningId !== st.pinnedId) {
      return {
        ifname,
        ok: false,
        detail: `${ifname} egress runs program ${st.runningId}, not the pinned tsnp_restore (${
          st.pinnedId ?? "none pinned"
        })`,
      };
    }
    return {
      ifname,
      ok: true,
      detail: `on ${ifname} egress (${a.api}, ifindex ${a.ifindex}, program ${st.runningId})`,
    };
  } catch (e) {
    return { ifname, ok: false, detail: `${ifname}: ${asTsnproxyError(e).message}` };
  }
}

/**
 * Every TSN interface's restorer, in config order; empty with restoreAt host-veth-ingress
 * (the plugin attaches restorers per pod then). Never throws.
 */
export function restorerStates(t: InstallTarget): RestorerState[] {
  if (t.cfg.restoreAt !== "tsn-egress") return [];
  return t.tsnInterfaces.map((i) => restorerState(t, i.name));
}

/** Records the states in the agent's stats (the per-interface metric). */
export function noteRestorers(stats: AgentStats, states: RestorerState[]): void {
  for (const s of states) stats.restorers[s.ifname] = s.ok;
}

/** Whether the restorer is on every TSN interface now (read from the kernel, never throws). */
export function restorersAttachedNow(t: InstallTarget): boolean {
  return restorerStates(t).every((s) => s.ok);
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
    if (appeared) reconcile("interface re-appeared");
  }, 1000);
  return () => clearInterval(timer);
}
