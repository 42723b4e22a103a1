/**
 * `tsnproxy uninstall`: undo install, in the reverse order of install's steps:
 *
 *   1. conflist  remove the entry (the original restored byte-identical from its backup when
 *                nothing else changed the file), so the runtime stops calling the plugin
 *   2. datapath  detach every node and pod attachment and remove the pin root (teardownNode):
 *                everything pinned under it is tsnproxy's, nothing outside it is touched
 *   3. qdisc     per TSN interface: the root only with --remove-qdisc and only if install
 *                created it; clsact only if install created it and nothing else uses it
 *                (state.ts); the egress-qos-map entries install set back to what they were
 *                (those nobody changed since)
 *   4. binary    the plugin executable
 *   5. state     the record, once nothing it records remains
 *
 * A second run finds nothing to do. `--dry-run` prints the plan and changes nothing. With
 * --json, stdout gets one document instead: the plan and its outcome (plan_schema.ts).
 */
import { teardownNode } from "../bpf/node.ts";
import { listPodAttachments } from "../bpf/pod.ts";
import { PinLayout } from "../bpf/pins.ts";
import { asTsnproxyError, NotFoundError } from "../errors.ts";
import { ExitCode } from "../exit_codes.ts";
import { log } from "../log.ts";
import type { UninstallOptions } from "../options.ts";
import { apply, type Plan, planUninstall } from "./conflist.ts";
import { conflistPlanJson, formatConflistChanges, qdiscPlanJson, vlanPlanJson } from "./plan.ts";
import { type UninstallPlanJson, uninstallPlanSchema } from "./plan_schema.ts";
import { planRemoveBinary, removeBinary } from "./binary.ts";
import {
  applyQdiscPlan,
  formatQdiscStep,
  planQdiscRemoval,
  predictRemoval,
  type QdiscPlan,
  stateAfterRemoval,
} from "./qdisc_plan.ts";
import {
  DEFAULT_STATE_DIR,
  type InstallState,
  interfaceIsEmpty,
  type InterfaceState,
  readState,
  sameState,
  statePath,
  writeState,
} from "./state.ts";
import {
  applyVlanRemoval,
  formatVlanChanges,
  planVlanRemoval,
  type VlanPlan,
} from "./vlan_plan.ts";
import { loadConfig } from "./target.ts";
import { dirNames, lexists } from "../util/fs.ts";

export async function runUninstall(opts: UninstallOptions): Promise<number> {
  const cfg = await loadConfig(opts);
  const stateDir = opts.stateDir ?? DEFAULT_STATE_DIR;
  const state = await readState(stateDir);
  const out: string[] = [`tsnproxy uninstall plan: pin root ${cfg.bpffs}`];
  const line = (changed: boolean, text: string) => out.push(`  ${changed ? "-" : "="} ${text}`);
  let changes = 0;
  // The same plan as data, for --json.
  const doc: Omit<UninstallPlanJson, "changes" | "outcome" | "dryRun"> = {
    version: 1,
    command: "uninstall",
    bpffs: cfg.bpffs,
    conflist: {
      confDir: cfg.cni.confDir,
      target: null,
      status: "absent",
      changes: [],
      warnings: [],
    },
    datapath: { root: "", exists: false, nodeAttachments: [], podAttachments: 0 },
    qdisc: null,
    interfaces: [],
    binary: { path: "", exists: false },
    state: { path: statePath(stateDir), action: "absent" },
  };

  // 1. conflist
  let conflist: Plan | undefined;
  out.push(`conflist (${cfg.cni.confDir}):`);
  try {
    conflist = await planUninstall({
      confDir: cfg.cni.confDir,
      network: cfg.cni.network,
      recover: !opts.dryRun,
    });
    doc.conflist = conflistPlanJson(conflist);
    if (conflist.changes.length === 0) line(false, `${conflist.target}: no tsnproxy entry`);
    else {
      out.push(formatConflistChanges(conflist, "-").split("\n").map((l) => `    ${l}`).join("\n"));
      changes += conflist.changes.length;
    }
  } catch (e) {
    if (!(e instanceof NotFoundError)) throw e;
    line(false, `nothing to remove (${e.message})`);
    doc.conflist.note = e.message;
  }

  // 2. datapath
  const pins = new PinLayout(cfg.bpffs);
  out.push("datapath:");
  const rootExists = lexists(pins.root);
  doc.datapath = { root: pins.root, exists: rootExists, nodeAttachments: [], podAttachments: 0 };
  if (rootExists) {
    const node = dirNames(pins.nodeDir).sort();
    const pods = listPodAttachments(cfg.bpffs);
    doc.datapath.nodeAttachments = node;
    doc.datapath.podAttachments = pods.length;
    line(
      true,
      `detach ${node.length} node attachment(s)${node.length ? ` (${node.join(", ")})` : ""} ` +
        `and ${pods.length} pod attachment(s); unpin maps and programs; remove ${pins.root}`,
    );
    changes++;
  } else line(false, `${pins.root} does not exist`);

  // 3. qdisc and vlan, per interface install recorded something about
  const removals: Removal[] = state.interfaces.map((rec) => ({
    rec,
    hasQdisc: rec.clsactCreated || rec.rootCreated !== undefined,
    qplan: rec.clsactCreated || rec.rootCreated !== undefined
      ? planQdiscRemoval(rec, opts.removeQdisc)
      : undefined,
    vplan: planVlanRemoval(rec),
  }));
  if (!removals.some((r) => r.hasQdisc)) {
    out.push("qdisc:");
    line(false, "install recorded no qdisc it created: none touched");
  }
  for (const r of removals) {
    const gone = `${r.rec.ifname} no longer exists: nothing to remove`;
    const qjson = r.hasQdisc
      ? (r.qplan
        ? qdiscPlanJson(r.qplan)
        : { ifname: r.rec.ifname, steps: [], notes: [gone], warnings: [] })
      : null;
    doc.interfaces.push({
      ifname: r.rec.ifname,
      qdisc: qjson,
      vlan: r.vplan ? vlanPlanJson(r.vplan) : null,
    });
    if (qjson && !doc.qdisc) doc.qdisc = qjson;
    if (r.hasQdisc) {
      out.push(`qdisc (${r.rec.ifname}):`);
      if (!r.qplan) line(false, gone);
      for (const st of r.qplan?.steps ?? []) line(true, formatQdiscStep(st));
      for (const n of r.qplan?.notes ?? []) line(false, n);
      changes += r.qplan?.steps.length ?? 0;
    }
    if (r.vplan) {
      out.push(`vlan (${r.rec.ifname}):`);
      if (r.vplan.changes.length) line(true, formatVlanChanges(r.vplan, "restore"));
      else if (!r.vplan.notes.length) line(false, "egress-qos-map entries already as before");
      for (const n of r.vplan.notes) line(false, n);
      changes += r.vplan.changes.length;
    }
  }

  // 4. binary
  const bin = await planRemoveBinary(cfg.cni.binDir);
  doc.binary = { path: bin.path, exists: bin.exists };
  out.push("binary:");
  line(bin.exists, bin.exists ? `remove ${bin.path}` : `${bin.path} does not exist`);
  if (bin.exists) changes++;

  // 5. state
  const after: InstallState = {
    ...state,
    interfaces: removals.map((r) => predictInterfaceState(r)),
  };
  const remains = !after.interfaces.every(interfaceIsEmpty);
  const stateChanges = !sameState(after, state) || (lexists(statePath(stateDir)) && !remains);
  out.push(`state (${statePath(stateDir)}):`);
  doc.state.action = stateChanges
    ? (remains ? "update" : "remove")
    : lexists(statePath(stateDir))
    ? "keep"
    : "absent";
  line(
    stateChanges,
    stateChanges
      ? (remains ? "keep recording what remains" : "remove")
      : lexists(statePath(stateDir))
      ? "kept: it records what remains"
      : "absent",
  );
  if (stateChanges) changes++;

  const say = (text: string) => {
    if (!opts.json) console.log(text);
  };
  const json = (outcome: UninstallPlanJson["outcome"], error?: UninstallPlanJson["error"]) => {
    if (!opts.json) return;
    const full = { ...doc, dryRun: opts.dryRun, changes: changes > 0, outcome };
    // The schema is the contract: never print something that breaks it.
    const parsed = uninstallPlanSchema.parse(error ? { ...full, error } : full);
    console.log(JSON.stringify(parsed, null, 2));
  };
  say(out.join("\n"));
  if (opts.dryRun) {
    say(changes ? "dry run: nothing was changed" : "dry run: nothing to change");
    json("planned");
    return ExitCode.Ok;
  }
  if (changes === 0) {
    say("nothing to change: tsnproxy is not installed here");
    json("unchanged");
    return ExitCode.Ok;
  }

  let detached = 0;
  let newState = state;
  try {
    if (conflist && conflist.changes.length > 0) {
      await apply(conflist, { inPlace: cfg.cni.inPlace ?? true });
    }
    detached = rootExists ? teardownNode(cfg.bpffs) : 0;
    const recs: InterfaceState[] = [];
    for (const r of removals) {
      let rec = r.rec;
      if (r.hasQdisc) {
        const q = r.qplan ? applyQdiscPlan(r.qplan, rec) : rec;
        rec = stateAfterRemoval(q, r.qplan);
      }
      if (r.vplan) {
        applyVlanRemoval(r.vplan);
        const { vlan: _done, ...rest } = rec;
        rec = rest;
      }
      recs.push(rec);
    }
    newState = { ...state, interfaces: recs };
    if (bin.exists) await removeBinary(bin.path);
    await writeState(stateDir, newState);
  } catch (e) {
    const err = asTsnproxyError(e);
    json("failed", { message: err.message, hint: err.hint });
    throw err;
  }
  log("info", "uninstalled", {
    bpffs: cfg.bpffs,
    detached,
    conflist: conflist?.status,
    qdisc: Object.fromEntries(
      removals.map((r) => [r.rec.ifname, r.qplan?.steps.map((s) => s.op) ?? []]),
    ),
    vlan: Object.fromEntries(
      removals.filter((r) => r.vplan).map((r) => [r.rec.ifname, r.vplan?.changes.length ?? 0]),
    ),
    binary: bin.exists ? bin.path : undefined,
  });
  say("uninstalled");
  json("applied");
  return ExitCode.Ok;
}

interface Removal {
  rec: InterfaceState;
  /** install recorded a clsact or root on it. */
  hasQdisc: boolean;
  /** undefined with hasQdisc: the interface is gone. */
  qplan?: QdiscPlan;
  vplan?: VlanPlan;
}

/** An interface's record after uninstall's steps (the qdisc records that remain, no vlan). */
function predictInterfaceState(r: Removal): InterfaceState {
  const { vlan: _restored, ...q } = r.rec;
  return r.hasQdisc ? predictRemoval(q, r.qplan) : q;
}
