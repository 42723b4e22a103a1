/**
 * `tsnproxy install`: set this node up (see plan.ts for the steps and their order). The plan
 * is printed on stdout first; `--dry-run` stops there and changes nothing. Re-running
 * converges: a second install plans and performs no change.
 */
import { log } from "../log.ts";
import type { InstallOptions } from "../options.ts";
import { executeNodePlan, formatNodePlan, planIsEmpty, planNode } from "./plan.ts";
import { loadConfig, targetFrom } from "./target.ts";

export async function runInstall(opts: InstallOptions): Promise<number> {
  const cfg = await loadConfig(opts);
  const target = targetFrom(cfg, opts);
  const plan = await planNode(target, { binary: true, datapath: true, recover: !opts.dryRun });
  const empty = planIsEmpty(plan);
  console.log(formatNodePlan(plan).trimEnd());
  if (opts.dryRun) {
    console.log(empty ? "dry run: nothing to change" : "dry run: nothing was changed");
    return 0;
  }
  if (empty) {
    console.log("nothing to change: this node is installed");
    log("info", "install: no change", { tsnInterface: target.tsnInterface, bpffs: cfg.bpffs });
    return 0;
  }
  const res = await executeNodePlan(plan);
  log("info", "installed", {
    tsnInterface: target.tsnInterface,
    api: target.api,
    bpffs: cfg.bpffs,
    conflist: plan.conflist.target,
    conflistStatus: plan.conflist.status,
    programs: res.programs?.map((p) => `${p.role}:${p.action}`),
    qdisc: plan.qdisc.steps.map((s) => s.op),
  });
  // Prove convergence: what is there now must plan to nothing.
  const again = await planNode(target, { binary: true, datapath: true, recover: false });
  if (!planIsEmpty(again)) {
    log("warn", "install did not converge: a second plan still has changes", {
      plan: formatNodePlan(again),
    });
  }
  console.log("installed");
  return 0;
}
