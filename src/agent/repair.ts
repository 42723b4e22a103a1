/**
 * The agent's repair: the plan and apply of `tsnproxy install` (src/install/plan.ts), with the
 * node config the agent was given, minus the plugin binary (the CNI bin dir belongs to the
 * init container, which installs the binary of the same image). Used when a readiness
 * condition fails (src/agent/readiness.ts) and once at start-up, where it also learns this
 * build's program tags: loading the programs is the only way to know them, and a pinned
 * program of another build is replaced then (loader.ts keeps a same-tag program, replaces a
 * different one, keeps the maps).
 *
 * While the TSN interface is missing its qdisc and restorer cannot be planned: the datapath
 * and the conflist entry are converged alone, the rest when the interface is back. While the
 * plugin executable is missing from the CNI bin dir the entry is not added: the runtime would
 * fail every pod on it (install writes the binary first for the same reason).
 */
import type { ProgramState } from "../bpf/loader.ts";
import { PROGRAMS } from "../bpf/pins.ts";
import { ifNameToIndex } from "../ffi/libc.ts";
import { apply as applyConflist, planInstall as planConflistInstall } from "../install/conflist.ts";
import {
  applyDatapath,
  executeNodePlan,
  formatConflistChanges,
  formatNodePlan,
  type InstallTarget,
  planDatapath,
  planIsEmpty,
  planNode,
  pluginEntry,
} from "../install/plan.ts";
import { type InstallState, readState, statePath } from "../install/state.ts";
import { exists } from "../util/fs.ts";
import { binaryProblem } from "./readiness.ts";
import { log } from "../log.ts";

/** A pinned program of another build, replaced by this build's. */
export interface Replaced {
  program: string;
  /** The tag of the program that was pinned. */
  from: string;
  /** This build's. */
  to: string;
}

export interface RepairOutcome {
  /** What changed, as the plan prints it ("+" lines); empty: nothing was to do. */
  changes: string[];
  /** This build's programs as loaded, when the datapath step ran. */
  programs?: ProgramState[];
  replaced: Replaced[];
  /**
   * The tsnproxy version that last ran install here, when its state file says (the file
   * exists only while install created a qdisc it must remember).
   */
  installedBy?: string;
  /** The GC timer was (re)armed. */
  gcArmed: boolean;
  /** The conflist entry was written (added back, or brought up to the node config). */
  conflistWritten: boolean;
  /** The restorer was attached to the TSN interface. */
  restorerAttached: boolean;
}

function writer(t: InstallTarget, s: InstallState): string | undefined {
  return exists(statePath(t.stateDir)) && s.version ? s.version : undefined;
}

function changedLines(text: string): string[] {
  return text.split("\n").filter((l) => /^\s*\+ /.test(l)).map((l) => l.trim());
}

function replacedOf(before: ProgramState[] | undefined, after: ProgramState[]): Replaced[] {
  return after.filter((p) => p.action === "replaced").map((p) => ({
    program: PROGRAMS[p.role],
    from: before?.find((b) => b.role === p.role)?.tag ?? "?",
    to: p.tag,
  }));
}

export interface RepairScope {
  /** Run the apply even when the plan shows no change (only a load tells whether the pinned
   * programs are this build's: start-up, and a datapath.build failure). */
  force: boolean;
  /** Plan the datapath step (loading and verifying every program, ~10-50 ms). */
  datapath: boolean;
}

/** Converges the node to what install would make of it. */
export async function converge(t: InstallTarget, scope: RepairScope): Promise<RepairOutcome> {
  const force = scope.force;
  if (ifNameToIndex(t.tsnInterface) === 0) return await convergeWithoutInterface(t, scope);
  const plan = await planNode(t, {
    binary: false,
    datapath: scope.datapath || force,
    recover: true,
  });
  const installedBy = writer(t, plan.state.before);
  const noBinary = binaryProblem(t.cfg.cni.binDir);
  if (noBinary && plan.conflist.changes.length > 0) {
    log("warn", "not adding the conflist entry without the plugin", { problem: noBinary });
    plan.conflist = { ...plan.conflist, changes: [] };
  }
  if (!force && planIsEmpty(plan)) {
    return {
      changes: [],
      replaced: [],
      installedBy,
      gcArmed: false,
      conflistWritten: false,
      restorerAttached: false,
    };
  }
  const text = formatNodePlan(plan, "agent repair");
  const res = await executeNodePlan(plan);
  const programs = res.programs ?? [];
  const d = plan.datapath;
  return {
    changes: [
      ...changedLines(text),
      // The plan cannot tell a pinned program of another build (only the load does).
      ...programs.filter((p) => p.action === "replaced").map((p) =>
        `+ replaced ${PROGRAMS[p.role]} (tag ${p.tag})`
      ),
    ],
    programs: res.programs,
    replaced: replacedOf(d?.programs, programs),
    installedBy,
    gcArmed: !!d && (d.startGc || d.writeConfig || programs.some((p) => p.action !== "kept")),
    conflistWritten: plan.conflist.changes.length > 0,
    restorerAttached: plan.restorer.action === "attach",
  };
}

async function convergeWithoutInterface(
  t: InstallTarget,
  scope: RepairScope,
): Promise<RepairOutcome> {
  const installedBy = writer(t, await readState(t.stateDir));
  const d = scope.datapath || scope.force ? planDatapath(t.cfg) : undefined;
  const datapathEmpty = !d ||
    d.rootExists && d.programs.every((p) => p.action === "kept") && !d.writeConfig && !d.startGc;
  const changes: string[] = [];
  let programs: ProgramState[] | undefined;
  let conflistWritten = false;
  if (d && (scope.force || !datapathEmpty)) {
    programs = applyDatapath(d);
    changes.push(
      ...programs.filter((p) => p.action !== "kept").map((p) =>
        `+ ${p.action} ${PROGRAMS[p.role]} (tag ${p.tag})`
      ),
    );
    if (d.writeConfig) changes.push("+ write node config");
    if (d.startGc) changes.push("+ start the GC timer");
  }
  const conflist = await planConflistInstall({
    confDir: t.cfg.cni.confDir,
    network: t.cfg.cni.network,
    entry: pluginEntry(t),
    recover: true,
  });
  const noBinary = binaryProblem(t.cfg.cni.binDir);
  if (noBinary && conflist.changes.length > 0) {
    log("warn", "not adding the conflist entry without the plugin", { problem: noBinary });
  } else if (conflist.changes.length > 0) {
    await applyConflist(conflist, { inPlace: t.inPlace });
    conflistWritten = true;
    changes.push(...changedLines(formatConflistChanges(conflist)));
  }
  return {
    changes,
    programs,
    replaced: programs ? replacedOf(d?.programs, programs) : [],
    installedBy,
    gcArmed: !!d && !!programs &&
      (d.startGc || d.writeConfig || programs.some((p) => p.action !== "kept")),
    conflistWritten,
    restorerAttached: false,
  };
}
