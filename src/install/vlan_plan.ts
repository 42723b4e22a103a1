/**
 * A TSN interface's VLAN egress-qos-map during install, uninstall and agent reconcile: the
 * entries the node config names (priority -> PCP) are set on the VLAN device through our own
 * rtnetlink layer (src/netlink/vlan.ts); what each was before is recorded (state.ts), and
 * uninstall puts back exactly those entries that still carry what install set. Entries the
 * config does not name are never touched.
 */
import { ConfigError } from "../errors.ts";
import { qosPairs, type VlanConfig } from "../config/vlan.ts";
import { findLink, type LinkInfo, setVlanEgressQos } from "../netlink/mod.ts";
import type { InterfaceState, VlanState } from "./state.ts";

export interface VlanChange {
  priority: number;
  pcp: number;
  /** The PCP the priority had (0: no entry). */
  before: number;
}

export interface VlanPlan {
  ifname: string;
  ifindex: number;
  /** The device's VLAN id (undefined: gone, or no longer a VLAN device). */
  vlanId?: number;
  /** Entries to set (install: the config's; uninstall: back to what they were). */
  changes: VlanChange[];
  notes: string[];
}

/** The device's egress-qos-map as priority -> PCP (entries with PCP 0 are not reported). */
export function egressMap(link: Pick<LinkInfo, "vlan">): Map<number, number> {
  return new Map(link.vlan?.egress ?? []);
}

/** "3->3 5->5": a map or a list of changes, as the plan prints it. */
export function formatQosMap(pairs: Iterable<readonly [number, number]>): string {
  const out = [...pairs].map(([p, c]) => `${p}:${c}`).join(" ");
  return out || "(empty: every priority leaves with PCP 0)";
}

function notVlan(ifname: string, link: LinkInfo): ConfigError {
  return new ConfigError(
    `${ifname} is not a VLAN device (kind ${link.kind ?? "physical"}): vlan.egressQosMap ` +
      "sets a VLAN device's priority -> PCP map",
    `name the VLAN device that carries the pods' traffic (e.g. ip link add link ${ifname} name ` +
      `${ifname}.100 type vlan id 100) as a TSN interface with the vlan section, and keep the ` +
      `qdisc on ${ifname} (tsnInterfaces: [{name: ${ifname}, qdisc: ...}, {name: ${ifname}.100, ` +
      "vlan: ...}])",
  );
}

/** What install (or the agent) must set on `ifname` for `cfg`; ConfigError if it is no VLAN. */
export function planVlan(ifname: string, cfg: VlanConfig): VlanPlan {
  const link = findLink(ifname);
  if (!link) {
    throw new ConfigError(
      `TSN interface ${ifname} does not exist in this network namespace`,
      "create the VLAN device or name the right one in tsnInterfaces",
    );
  }
  if (link.kind !== "vlan") throw notVlan(ifname, link);
  const map = egressMap(link);
  const plan: VlanPlan = {
    ifname,
    ifindex: link.index,
    vlanId: link.vlan?.id,
    changes: [],
    notes: [],
  };
  const same: [number, number][] = [];
  for (const [priority, pcp] of qosPairs(cfg.egressQosMap)) {
    const before = map.get(priority) ?? 0;
    if (before === pcp) same.push([priority, pcp]);
    else plan.changes.push({ priority, pcp, before });
  }
  if (same.length) plan.notes.push(`egress-qos-map already has ${formatQosMap(same)}`);
  return plan;
}

export function formatVlanChanges(p: VlanPlan, verb = "set"): string {
  const changes = p.changes.map((c) => `priority ${c.priority} -> PCP ${c.pcp} (was ${c.before})`);
  return `${verb} egress-qos-map of ${p.ifname} (VLAN id ${p.vlanId ?? "?"}): ${
    changes.join(", ")
  }`;
}

/**
 * Sets the plan's entries; returns the record to keep: the earliest "previous" of every
 * entry install ever changed (a re-install with another map still restores the operator's),
 * and what install set last.
 */
export function applyVlanPlan(plan: VlanPlan, prev: VlanState | undefined): VlanState | undefined {
  setVlanEgressQos(plan.ifindex, plan.changes.map((c) => [c.priority, c.pcp]));
  return predictVlanState(plan, prev);
}

/** The record after the plan ran (also written as intent before it runs). */
export function predictVlanState(
  plan: VlanPlan,
  prev: VlanState | undefined,
): VlanState | undefined {
  if (plan.changes.length === 0) return prev;
  const previous = { ...prev?.previous };
  const set = { ...prev?.set };
  for (const c of plan.changes) {
    const k = String(c.priority);
    if (!(k in previous)) previous[k] = c.before;
    set[k] = c.pcp;
  }
  return { previous, set };
}

/**
 * Uninstall's entries: each priority install set goes back to what it was, if it still
 * carries what install set (an entry someone changed since is theirs now, and stays).
 * Undefined when install recorded no VLAN change on this interface.
 */
export function planVlanRemoval(rec: InterfaceState): VlanPlan | undefined {
  const v = rec.vlan;
  if (!v) return undefined;
  const link = findLink(rec.ifname);
  const plan: VlanPlan = { ifname: rec.ifname, ifindex: link?.index ?? 0, changes: [], notes: [] };
  if (!link) {
    plan.notes.push(`${rec.ifname} no longer exists: its egress-qos-map went with it`);
    return plan;
  }
  if (link.kind !== "vlan") {
    plan.notes.push(`${rec.ifname} is no longer a VLAN device: nothing to restore`);
    return plan;
  }
  plan.vlanId = link.vlan?.id;
  const map = egressMap(link);
  const theirs: string[] = [];
  for (const [k, setPcp] of Object.entries(v.set)) {
    const priority = Number(k);
    const now = map.get(priority) ?? 0;
    const before = v.previous[k] ?? 0;
    if (now !== setPcp) theirs.push(`priority ${priority} -> PCP ${now} (install set ${setPcp})`);
    else if (now !== before) plan.changes.push({ priority, pcp: before, before: now });
  }
  plan.changes.sort((a, b) => a.priority - b.priority);
  if (theirs.length) {
    plan.notes.push(`changed since install, left as they are: ${theirs.join(", ")}`);
  }
  return plan;
}

/** Runs uninstall's entries; the record is done with afterwards. */
export function applyVlanRemoval(plan: VlanPlan): void {
  if (plan.changes.length === 0 || plan.ifindex === 0) return;
  setVlanEgressQos(plan.ifindex, plan.changes.map((c) => [c.priority, c.pcp]));
}
