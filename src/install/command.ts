/**
 * `tsnproxy install`: set this node up (see plan.ts for the steps and their order). The plan
 * is printed on stdout first; `--dry-run` stops there and changes nothing. Re-running
 * converges: a second install plans and performs no change. With --json, stdout gets one
 * document instead: the plan and its outcome (plan_schema.ts), also when the run failed.
 */
import { captureLibbpfLog, drainLibbpfLog } from "../bpf/libbpf_log.ts";
import { asTsnproxyError } from "../errors.ts";
import { ExitCode } from "../exit_codes.ts";
import { log } from "../log.ts";
import type { InstallOptions } from "../options.ts";
import {
  executeNodePlan,
  formatNodePlan,
  type NodePlan,
  nodePlanJson,
  type NodeResult,
  planIsEmpty,
  planNode,
} from "./plan.ts";
import { type InstallPlanJson, installPlanSchema } from "./plan_schema.ts";
import { loadConfig, targetFrom } from "./target.ts";

const names = (t: { tsnInterfaces: { name: string }[] }) => t.tsnInterfaces.map((i) => i.name);

export async function runInstall(opts: InstallOptions): Promise<number> {
  captureLibbpfLog(); // libbpf's chatter goes to the log (debug), not raw to stderr
  const cfg = await loadConfig(opts);
  const target = targetFrom(cfg, opts);
  const plan = await planNode(target, { binary: true, datapath: true, recover: !opts.dryRun });
  const empty = planIsEmpty(plan);
  const say = (text: string) => {
    if (!opts.json) console.log(text);
  };
  const json = (outcome: InstallPlanJson["outcome"], error?: InstallPlanJson["error"]) => {
    if (!opts.json) return;
    // The schema is the contract: never print something that breaks it.
    const doc = installPlanSchema.parse(
      nodePlanJson(plan, { dryRun: opts.dryRun, outcome, ...(error ? { error } : {}) }),
    );
    console.log(JSON.stringify(doc, null, 2));
  };
  say(formatNodePlan(plan).trimEnd());
  if (opts.dryRun) {
    say(empty ? "dry run: nothing to change" : "dry run: nothing was changed");
    json("planned");
    return ExitCode.Ok;
  }
  if (empty) {
    say("nothing to change: this node is installed");
    json("unchanged");
    log("info", "install: no change", { tsnInterfaces: names(target), bpffs: cfg.bpffs });
    return ExitCode.Ok;
  }
  let res: NodeResult;
  try {
    res = await executeNodePlan(plan);
  } catch (e) {
    const err = asTsnproxyError(e);
    json("failed", { message: err.message, hint: err.hint });
    throw err;
  }
  for (const l of drainLibbpfLog()) log("debug", l);
  log("info", "installed", {
    tsnInterfaces: names(target),
    api: target.api,
    bpffs: cfg.bpffs,
    conflist: plan.conflist.target,
    conflistStatus: plan.conflist.status,
    programs: res.programs?.map((p) => `${p.role}:${p.action}`),
    qdisc: Object.fromEntries(
      plan.interfaces.map((i) => [i.ifname, i.qdisc.steps.map((s) => s.op)]),
    ),
  });
  // Prove convergence: what is there now must plan to nothing.
  const again = await planNode(target, { binary: true, datapath: true, recover: false });
  if (!planIsEmpty(again)) {
    log("warn", "install did not converge: a second plan still has changes", {
      plan: formatNodePlan(again),
    });
  }
  say("installed");
  json("applied");
  return ExitCode.Ok;
}

/**
 * Programmatic install for harnesses (the qemu VM suite): install with a node config YAML
 * text, return the plan that ran and the plan afterwards (which must be empty). Throws the
 * same TsnproxyErrors as the CLI.
 *
 *   const r = await installWithConfig(taprioYaml, {tsnInterface: "tsn0", attachMode: "clsact",
 *     cniConfDir, cniBinDir, bpffs, stateDir});
 *   // r.ran.interfaces[0].qdisc.steps: add-clsact, (recreate-root), apply-root; r.after is empty
 */
export async function installWithConfig(
  yaml: string,
  o: Omit<InstallOptions, "config" | "dryRun"> & { dryRun?: boolean },
): Promise<{ ran: NodePlan; text: string; after: NodePlan }> {
  const dir = await Deno.makeTempDir({ prefix: "tsnproxy-config-" });
  try {
    await Deno.writeTextFile(`${dir}/config.yaml`, yaml);
    const opts: InstallOptions = { ...o, config: `${dir}/config.yaml`, dryRun: o.dryRun ?? false };
    const cfg = await loadConfig(opts);
    const target = targetFrom(cfg, opts);
    const ran = await planNode(target, { binary: true, datapath: true, recover: !opts.dryRun });
    const text = formatNodePlan(ran);
    if (!opts.dryRun) await executeNodePlan(ran);
    const after = await planNode(target, { binary: true, datapath: true, recover: false });
    return { ran, text, after };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
