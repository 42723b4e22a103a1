/**
 * The agent's repair: the plan and apply of `tsnproxy install` (src/install/plan.ts planNode,
 * executeNodePlan), with the node config the agent was given, minus the plugin binary (the
 * CNI bin dir belongs to the init container, which installs the binary of the same image).
 * Run on every reconcile pass: the qdisc, VLAN egress-qos-map, restorer and conflist steps
 * are planned each time (they are cheap reads); the datapath step (loading and verifying
 * every program, ~10-50 ms) only when a datapath readiness condition fails
 * (src/agent/readiness.ts). A pinned program of another build is replaced then: the loader
 * compares each pinned program's tag and release stamp with this build's (src/bpf/loader.ts)
 * and keeps the maps, and install's plan moves the restorers onto the new tsnp_restore (also
 * when they run another instance than the pinned one: restorer.attached fails then).
 *
 * A TSN interface that does not exist is waited for: its qdisc and restorer are planned when
 * it is back, the rest converges without it. While the plugin executable is missing from the
 * CNI bin dir the entry is not added: the runtime would fail every pod on it (install writes
 * the binary first for the same reason).
 */
import { PROGRAMS } from "../bpf/pins.ts";
import { formatRelease } from "../bpf/release.ts";
import {
  executeNodePlan,
  formatNodePlan,
  type InstallTarget,
  planIsEmpty,
  planNode,
} from "../install/plan.ts";
import { type InstallState, statePath } from "../install/state.ts";
import { exists } from "../util/fs.ts";
import { pinnedProgram } from "../bpf/loader.ts";
import { binaryProblem } from "./readiness.ts";
import { log } from "../log.ts";

/** A pinned program of another build (or another program under its pin), replaced. */
export interface Replaced {
  program: string;
  /** The tag of the program that was pinned. */
  from: string;
  /** The release that loaded it (formatRelease). */
  fromRelease: string;
  /** This build's tag. */
  to: string;
}

/** A TSN interface whose restorer the repair attached. */
export interface RestorerRepair {
  ifname: string;
  /** "attach": there was none on it; "replace": it ran another program than the pinned one. */
  action: "attach" | "replace";
}

export interface RepairOutcome {
  /** What changed, as the plan prints it ("+" lines); empty: nothing was to do. */
  changes: string[];
  replaced: Replaced[];
  /**
   * The tsnproxy version that last ran install here, when its state file says (the file
   * exists only while install created something it must remember).
   */
  installedBy?: string;
  /** The conflist entry was written (added back, or brought up to the node config). */
  conflistWritten: boolean;
  restorers: RestorerRepair[];
  /** TSN interfaces that do not exist now: waited for. */
  missing: string[];
}

export interface RepairScope {
  /** Plan the datapath step (loading and verifying every program, ~10-50 ms). */
  datapath: boolean;
}

function writer(t: InstallTarget, s: InstallState): string | undefined {
  return exists(statePath(t.stateDir)) && s.version ? s.version : undefined;
}

function changedLines(text: string): string[] {
  return text.split("\n").filter((l) => /^\s*\+ /.test(l)).map((l) => l.trim());
}

/** Converges the node to what install would make of it. */
export async function converge(t: InstallTarget, scope: RepairScope): Promise<RepairOutcome> {
  const plan = await planNode(t, {
    binary: false,
    datapath: scope.datapath,
    recover: true,
    skipMissing: true,
  });
  const installedBy = writer(t, plan.state.before);
  const noBinary = binaryProblem(t.cfg.cni.binDir);
  if (noBinary && plan.conflist.changes.length > 0) {
    log("warn", "not adding the conflist entry without the plugin", { problem: noBinary });
    plan.conflist = { ...plan.conflist, changes: [] };
  }
  const empty: RepairOutcome = {
    changes: [],
    replaced: [],
    installedBy,
    conflistWritten: false,
    restorers: [],
    missing: plan.missing,
  };
  if (planIsEmpty(plan)) return empty;
  // What the programs to replace are, read before they are.
  const before = new Map(
    (plan.datapath?.programs ?? []).filter((p) => p.action === "replaced")
      .map((p) => [p.role, pinnedProgram(t.cfg.bpffs, p.role)]),
  );
  const text = formatNodePlan(plan, "agent repair");
  const res = await executeNodePlan(plan);
  const programs = res.programs ?? [];
  return {
    ...empty,
    changes: changedLines(text),
    replaced: programs.filter((p) => p.action === "replaced").map((p) => ({
      program: PROGRAMS[p.role],
      from: before.get(p.role)?.tag ?? "?",
      fromRelease: formatRelease(before.get(p.role)?.release),
      to: p.tag,
    })),
    conflistWritten: plan.conflist.changes.length > 0,
    restorers: plan.interfaces.flatMap((i) =>
      i.restorer.action === "attach" || i.restorer.action === "replace"
        ? [{ ifname: i.ifname, action: i.restorer.action }]
        : []
    ),
  };
}
