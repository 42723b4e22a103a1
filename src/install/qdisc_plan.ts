/**
 * The TSN interface's qdiscs during install, uninstall and agent reconcile: the node
 * config's root (taprio/mqprio/none/keep) and the clsact hook the restorer needs on kernels
 * without tcx, in the order that avoids the Debian 6.1 stall (notes/vm.md: clsact added AFTER
 * a software taprio stops taprio dequeuing for good; clsact first, then taprio, works).
 *
 * Rules:
 * - the clsact path (no tcx, restorer on the TSN egress): clsact is created before any
 *   taprio/mqprio root is created;
 * - a NIC already running a software taprio without clsact (the operator configured it
 *   first) is repaired: clsact is added, then the root is re-created with the parameters the
 *   kernel reports (step recreate-root), so taprio again comes after clsact. With qdisc kind
 *   "keep" that repair is the only change made;
 * - plans are computed from the kernel's state and printed before anything is done; running
 *   a plan and planning again yields no step.
 */
import { ConfigError, KernelError } from "../errors.ts";
import type { TcApi } from "../bpf/attach.ts";
import { CLSACT_HANDLES, CLSACT_PRIORITY } from "../bpf/attach.ts";
import {
  checkQueuesFit,
  type MqprioConfig,
  type QdiscConfig,
  type TaprioConfig,
} from "../config/qdisc.ts";
import {
  addQdisc,
  deleteQdisc,
  findLink,
  formatHandle,
  listBpfFilters,
  listQdiscs,
  type QdiscInfo,
  replaceQdisc,
  rootQdisc,
  type RtnlSocket,
  TC_H_ROOT,
  tcHandle,
  withRtnl,
} from "../netlink/mod.ts";
import { configFromKernel, inspectQdiscOrder, qdiscOrder, rootMatches } from "./qdisc_inspect.ts";
import { type InstallState, type InterfaceState, interfaceState } from "./state.ts";

export type QdiscStep =
  | { op: "add-clsact"; why: string }
  | { op: "recreate-root"; root: string; why: string }
  | { op: "delete-root"; root: string; handle: number; why: string }
  | { op: "apply-root"; cfg: QdiscConfig & { kind: "taprio" | "mqprio" }; replaces?: string }
  | { op: "delete-clsact"; why: string };

export interface QdiscPlan {
  ifname: string;
  ifindex: number;
  steps: QdiscStep[];
  /** Facts for the plan output (no change). */
  notes: string[];
  warnings: string[];
}

export function describeRoot(q: QdiscInfo | undefined): string {
  if (!q) return "none";
  return q.handle === 0 ? `${q.kind} (kernel default)` : `${q.kind} ${formatHandle(q.handle)}`;
}

function isDefaultRoot(q: QdiscInfo | undefined): boolean {
  // noqueue/pfifo_fast/mq with handle 0 are what the kernel attaches by itself.
  return !q || q.handle === 0 ||
    ["noqueue", "pfifo_fast", "mq", "fq_codel"].includes(q.kind) && (q.handle >>> 16) === 0;
}

/** Does the restorer use the clsact hook of the TSN interface? */
export function usesClsact(api: TcApi, restoreAt: string): boolean {
  return api === "clsact" && restoreAt === "tsn-egress";
}

/**
 * What install (or the agent) must do to the TSN interface's qdiscs. Throws NotFoundError
 * when the interface is missing and ConfigError when the config's queues do not fit it.
 */
export function planQdisc(
  ifname: string,
  cfg: QdiscConfig,
  clsactNeeded: boolean,
  state: InstallState,
): QdiscPlan {
  return withRtnl(undefined, (s) => {
    const link = findLink(ifname, s);
    if (!link) {
      throw new ConfigError(
        `TSN interface ${ifname} does not exist in this network namespace`,
        "create the interface or name the right one (--tsn-interface / tsnInterface); " +
          "a DaemonSet needs hostNetwork: true",
      );
    }
    const qdiscs = listQdiscs(link.index, s);
    const root = rootQdisc(qdiscs);
    const order = qdiscOrder(link.index, qdiscs);
    const plan: QdiscPlan = {
      ifname,
      ifindex: link.index,
      steps: [],
      notes: [],
      warnings: [],
    };
    let rootStep: QdiscStep | undefined;
    if (cfg.kind === "none") {
      if (root && (root.kind === "taprio" || root.kind === "mqprio")) {
        rootStep = {
          op: "delete-root",
          root: describeRoot(root),
          handle: root.handle,
          why: "qdisc.kind is none",
        };
      } else plan.notes.push(`root ${describeRoot(root)} kept (qdisc.kind none: no TSN root)`);
    } else if (cfg.kind === "taprio" || cfg.kind === "mqprio") {
      checkQueuesFit(cfg, link.numTxQueues, ifname);
      if (rootMatches(root, qdiscs, cfg)) {
        plan.notes.push(`root ${describeRoot(root)} already matches the config`);
      } else {
        rootStep = {
          op: "apply-root",
          cfg,
          ...(isDefaultRoot(root) ? {} : { replaces: describeRoot(root) }),
        };
      }
    } else {
      plan.notes.push(`root ${describeRoot(root)} left alone (qdisc.kind keep)`);
    }

    if (clsactNeeded && !order.clsact) {
      plan.steps.push({
        op: "add-clsact",
        why: "the restorer attaches through clsact (no tcx); it must exist before a software " +
          "taprio/mqprio root (Debian 6.1: clsact added after taprio stops taprio for good)",
      });
      const rootStays = !rootStep || rootStep.op !== "apply-root";
      if (order.softwareTaprio && rootStays && rootStep?.op !== "delete-root") {
        plan.steps.push({
          op: "recreate-root",
          root: describeRoot(root),
          why: "repair: this NIC runs a software taprio without clsact; after adding clsact " +
            "the root is deleted and re-created with the parameters the kernel reports, so " +
            "taprio comes after clsact (Debian 6.1 stall)",
        });
      }
    } else if (clsactNeeded && order.stallRisk && !rootStep) {
      const rec = interfaceState(state, ifname);
      const ours = rec !== undefined && (rec.clsactCreated || rec.rootCreated !== undefined);
      if (!ours) {
        plan.warnings.push(
          `${ifname} has clsact and a software taprio root that tsnproxy did not set up; ` +
            "the kernel cannot tell their order. On Debian 6.1 kernels taprio stalls if clsact " +
            "came second: if its backlog grows, re-create the taprio root",
        );
      }
    }
    if (rootStep) plan.steps.push(rootStep);
    if (clsactNeeded && order.clsact) plan.notes.push("clsact present");
    return plan;
  });
}

export function formatQdiscStep(st: QdiscStep): string {
  switch (st.op) {
    case "add-clsact":
      return `add clsact FIRST: ${st.why}`;
    case "recreate-root":
      return `re-create root ${st.root} after clsact: ${st.why}`;
    case "delete-root":
      return `delete root ${st.root} (${st.why})`;
    case "apply-root": {
      const c = st.cfg;
      const etf = c.etf?.length ? `, etf on queue(s) ${c.etf.map((e) => e.queue).join(",")}` : "";
      const queues = c.queues.map((q) => `${q.count}@${q.offset}`).join(" ");
      const extra = c.kind === "taprio"
        ? `, ${c.entries.length} schedule entr${c.entries.length === 1 ? "y" : "ies"}, ` +
          `clockid ${c.clockid ?? "CLOCK_TAI"}, base-time ${c.baseTime}`
        : `, hw ${c.hw}`;
      return `create root ${c.kind} ${formatHandle(tcHandle(c.handle, 0))} (num_tc ${c.numTc}, ` +
        `map ${c.map.slice(0, 16).join(" ")}, queues ${queues}${extra}${etf})` +
        (st.replaces ? `, replacing ${st.replaces}` : "");
    }
    case "delete-clsact":
      return `delete clsact (${st.why})`;
  }
}

/** Other programs' filters on the interface's clsact hook (ours, of any release, excluded). */
export function foreignClsactFilters(ifindex: number): number {
  const ours: number[] = Object.values(CLSACT_HANDLES);
  let n = 0;
  for (const dir of ["ingress", "egress"] as const) {
    for (const f of listBpfFilters(ifindex, dir)) {
      if (!(ours.includes(f.handle) && f.priority === CLSACT_PRIORITY)) n++;
    }
  }
  return n;
}

/** Creates the configured root (handle from the config) and its etf children. */
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

/**
 * Step apply-root: the configured taprio/mqprio root replaces whatever root is there (taprio
 * cannot change its mapping in place, so the old root is deleted first; a default root the
 * kernel will not delete is replaced by the add). Nothing when the root already matches.
 */
function applyRoot(ifindex: number, cfg: TaprioConfig | MqprioConfig): void {
  withRtnl(undefined, (s) => {
    const qdiscs = listQdiscs(ifindex, s);
    const root = rootQdisc(qdiscs);
    if (rootMatches(root, qdiscs, cfg)) return;
    if (root && root.handle !== 0) {
      try {
        deleteQdisc({ ifindex, parent: TC_H_ROOT, handle: root.handle }, s);
      } catch (e) {
        // A default root (noqueue, mq of a NIC) cannot always be deleted; adding replaces it.
        if (!(e instanceof KernelError)) throw e;
      }
    }
    createTsnRoot(ifindex, cfg, s);
  });
}

/**
 * Step recreate-root: deletes the root taprio/mqprio and creates it again with the parameters
 * (and etf children) the kernel reports, so it comes after a clsact added since. Other child
 * qdiscs under its classes are not restored. Nothing when the root is not taprio/mqprio.
 */
function recreateRoot(ifindex: number): void {
  withRtnl(undefined, (s) => {
    const qdiscs = listQdiscs(ifindex, s);
    const root = rootQdisc(qdiscs);
    const cfg = root && configFromKernel(root, qdiscs);
    if (!root || !cfg) return;
    deleteQdisc({ ifindex, parent: TC_H_ROOT, handle: root.handle }, s);
    createTsnRoot(ifindex, cfg, s);
  });
}

/**
 * Runs the steps; returns the updated qdisc state. When creating the root fails after this
 * run added clsact, clsact is removed again (nothing half-done stays).
 */
export function applyQdiscPlan(
  plan: QdiscPlan,
  prev: InterfaceState | undefined,
): InterfaceState {
  const st: InterfaceState = prev?.ifname === plan.ifname
    ? { ...prev }
    : { ifname: plan.ifname, clsactCreated: false };
  let addedNow = false;
  try {
    for (const step of plan.steps) {
      switch (step.op) {
        case "add-clsact":
          addQdisc({ ifindex: plan.ifindex }, { kind: "clsact" });
          st.clsactCreated = true;
          addedNow = true;
          break;
        case "recreate-root":
          recreateRoot(plan.ifindex);
          break;
        case "delete-root":
          deleteQdisc({ ifindex: plan.ifindex, parent: TC_H_ROOT, handle: step.handle });
          if (st.rootCreated && tcHandle(st.rootCreated.handle, 0) === step.handle) {
            delete st.rootCreated;
            delete st.replacedRoot;
          }
          break;
        case "apply-root":
          applyRoot(plan.ifindex, step.cfg);
          st.rootCreated = { kind: step.cfg.kind, handle: step.cfg.handle };
          if (step.replaces) st.replacedRoot = step.replaces;
          break;
        case "delete-clsact":
          deleteQdisc({ ifindex: plan.ifindex, kind: "clsact" });
          st.clsactCreated = false;
          break;
      }
    }
  } catch (e) {
    if (addedNow && foreignClsactFilters(plan.ifindex) === 0) {
      try {
        deleteQdisc({ ifindex: plan.ifindex, kind: "clsact" });
      } catch (cleanup) {
        if (!(cleanup instanceof KernelError)) throw cleanup;
      }
    }
    throw e;
  }
  return st;
}

/**
 * Uninstall's qdisc steps, from what install recorded: the root only with --remove-qdisc and
 * only if install created it (same kind and handle still there); clsact only if install
 * created it, no other filter uses it, and no software taprio root stays on the NIC.
 */
export function planQdiscRemoval(
  state: InterfaceState | undefined,
  removeQdisc: boolean,
): QdiscPlan | undefined {
  if (!state) return undefined;
  const link = findLink(state.ifname);
  if (!link) return undefined;
  const qdiscs = listQdiscs(link.index);
  const root = rootQdisc(qdiscs);
  const order = qdiscOrder(link.index, qdiscs);
  const plan: QdiscPlan = {
    ifname: state.ifname,
    ifindex: link.index,
    steps: [],
    notes: [],
    warnings: [],
  };
  let rootRemains = order.softwareTaprio;
  const rc = state.rootCreated;
  if (rc) {
    const ours = root && root.kind === rc.kind && root.handle === tcHandle(rc.handle, 0);
    if (!ours) {
      plan.notes.push(
        `root ${rc.kind} ${formatHandle(tcHandle(rc.handle, 0))} created by install is gone ` +
          `(now ${describeRoot(root)}): nothing to remove`,
      );
    } else if (removeQdisc) {
      plan.steps.push({
        op: "delete-root",
        root: describeRoot(root),
        handle: root.handle,
        why: "created by install; --remove-qdisc" +
          (state.replacedRoot ? ` (it replaced ${state.replacedRoot}, which is not restored)` : ""),
      });
      rootRemains = false;
    } else {
      plan.notes.push(
        `root ${describeRoot(root)} created by install is kept (pass --remove-qdisc to remove it)`,
      );
    }
  } else if (removeQdisc) {
    plan.notes.push(`root ${describeRoot(root)} was not created by install: left alone`);
  }
  if (state.clsactCreated && order.clsact) {
    const foreign = foreignClsactFilters(link.index);
    if (foreign > 0) {
      plan.notes.push(`clsact kept: ${foreign} other filter(s) use it`);
    } else if (rootRemains) {
      plan.notes.push(
        "clsact created by install is kept under the remaining software taprio root " +
          "(pass --remove-qdisc to remove the root install created, and then clsact)",
      );
    } else {
      plan.steps.push({
        op: "delete-clsact",
        why: "created by install; nothing else uses it once the restorer is detached",
      });
    }
  }
  return plan;
}

/** The qdisc records uninstall's steps leave, as planned (before they run). */
export function predictRemoval(state: InterfaceState, plan: QdiscPlan | undefined): InterfaceState {
  const out: InterfaceState = { ...state };
  if (!plan) return { ifname: state.ifname, clsactCreated: false }; // interface gone
  for (const s of plan.steps) {
    if (s.op === "delete-root") {
      delete out.rootCreated;
      delete out.replacedRoot;
    }
    if (s.op === "delete-clsact") out.clsactCreated = false;
  }
  return out;
}

/** The qdisc state after uninstall's steps ran (the records that still describe something). */
export function stateAfterRemoval(
  state: InterfaceState,
  plan: QdiscPlan | undefined,
): InterfaceState {
  const out = predictRemoval(state, plan);
  if (!plan) return out; // interface gone
  const link = findLink(state.ifname);
  if (link && out.rootCreated) {
    const root = rootQdisc(listQdiscs(link.index));
    const rc = out.rootCreated;
    if (!root || root.kind !== rc.kind || root.handle !== tcHandle(rc.handle, 0)) {
      delete out.rootCreated;
      delete out.replacedRoot;
    }
  }
  if (link && out.clsactCreated && !inspectQdiscOrder(link.index).clsact) {
    out.clsactCreated = false;
  }
  return out;
}
