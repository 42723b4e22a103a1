/**
 * Flags beat the node config file, the same way for every command (src/config/node.ts
 * flagOverrides): a flag the user typed wins even when it equals the built-in default, a flag
 * left out leaves the file's setting, --restore-at exists, --no-in-place turns in-place
 * writes off. Observed in what the commands print: install's and uninstall's --dry-run --json
 * plans, status --json and doctor --json.
 */
import assert from "node:assert/strict";
import { DEFAULTS } from "../../src/options.ts";
import { doctorReportSchema, statusReportSchema } from "../../src/doctor/schema.ts";
import {
  type InstallPlanJson,
  planOutputSchema,
  uninstallPlanSchema,
} from "../../src/install/plan_schema.ts";
import { randomId } from "../lib/run.ts";
import { createNode, destroyNode, type TestNode } from "../install/_node.ts";
import { tsnproxy } from "./_cli.ts";

/** The node's flags without those named (each test decides --bpffs itself). */
function flagsBut(node: TestNode, ...drop: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < node.flags.length; i += 2) {
    if (!drop.includes(node.flags[i])) out.push(node.flags[i], node.flags[i + 1]);
  }
  return out;
}

async function dryRunPlan(node: TestNode, ...extra: string[]): Promise<InstallPlanJson> {
  const r = await tsnproxy(["install", "--dry-run", "--json", ...node.flags, ...extra]);
  assert.equal(r.code, 0, r.stderr);
  const doc = planOutputSchema.parse(JSON.parse(r.stdout));
  assert.equal(doc.command, "install");
  return doc as InstallPlanJson;
}

Deno.test("flags beat config: an explicit --bpffs equal to the default beats the file", async () => {
  const cfgRoot = `/sys/fs/bpf/tsnp-test-${randomId()}`;
  const node = await createNode({ config: `bpffs: ${cfgRoot}\n` });
  try {
    const flags = [...flagsBut(node, "--bpffs"), "--bpffs", DEFAULTS.bpffs];
    // status and doctor record nothing: they take no --state-dir.
    const located = [...flagsBut(node, "--bpffs", "--state-dir"), "--bpffs", DEFAULTS.bpffs];
    // Read-only commands, so the default pin root is only looked at.
    const status = await tsnproxy(["status", "--json", ...located]);
    assert.equal(statusReportSchema.parse(JSON.parse(status.stdout)).bpffs, DEFAULTS.bpffs);
    const doctor = await tsnproxy(["doctor", "--json", ...located]);
    const report = doctorReportSchema.parse(JSON.parse(doctor.stdout));
    assert.equal(report.location.bpffs, DEFAULTS.bpffs);
    const plan = await tsnproxy(["install", "--dry-run", "-o", "json", ...flags]);
    assert.equal(plan.code, 0, plan.stderr);
    const p = planOutputSchema.parse(JSON.parse(plan.stdout));
    assert.equal(p.command === "install" && p.target.bpffs, DEFAULTS.bpffs);
    const un = await tsnproxy(["uninstall", "--dry-run", "--json", ...flags]);
    assert.equal(uninstallPlanSchema.parse(JSON.parse(un.stdout)).bpffs, DEFAULTS.bpffs);

    // Without the flag, the file's pin root.
    const unflagged = [...flagsBut(node, "--bpffs", "--state-dir")];
    const s2 = await tsnproxy(["status", "--json", ...unflagged]);
    assert.equal(statusReportSchema.parse(JSON.parse(s2.stdout)).bpffs, cfgRoot);
    const d2 = await tsnproxy(["doctor", "--json", ...unflagged]);
    assert.equal(doctorReportSchema.parse(JSON.parse(d2.stdout)).location.bpffs, cfgRoot);
  } finally {
    await destroyNode(node);
  }
});

Deno.test("flags beat config: --in-place and --no-in-place over cni.inPlace", async () => {
  const node = await createNode({ config: "cni:\n  inPlace: true\n" });
  try {
    assert.equal((await dryRunPlan(node)).target.inPlace, true);
    assert.equal((await dryRunPlan(node, "--no-in-place")).target.inPlace, false);
    await Deno.writeTextFile(node.configPath, "cni:\n  inPlace: false\n");
    assert.equal((await dryRunPlan(node)).target.inPlace, false);
    assert.equal((await dryRunPlan(node, "--in-place")).target.inPlace, true);
  } finally {
    await destroyNode(node);
  }
});

Deno.test("flags beat config: --restore-at over restoreAt", async () => {
  const node = await createNode({ config: "restoreAt: tsn-egress\n" });
  try {
    const fromFile = await dryRunPlan(node);
    assert.equal(fromFile.target.restoreAt, "tsn-egress");
    assert.equal(fromFile.restorer.action, "attach");
    const flagged = await dryRunPlan(node, "--restore-at", "host-veth-ingress");
    assert.equal(flagged.target.restoreAt, "host-veth-ingress");
    assert.equal(flagged.restorer.action, null, "the plugin attaches per pod instead");
    // The entry install would write carries it.
    const diff = flagged.conflist.changes.map((c) => c.diff).join("\n");
    assert.match(diff, /"restoreAt": "host-veth-ingress"/);
  } finally {
    await destroyNode(node);
  }
});

Deno.test("flags beat config: --attach-mode and --tsn-interface over the file", async () => {
  const node = await createNode({ config: "attachMode: tcx\ntsnInterface: nosuch0\n" });
  try {
    // node.flags carry --tsn-interface: the file's nosuch0 is never looked at.
    const p = await dryRunPlan(node, "--attach-mode", "clsact");
    assert.equal(p.target.tsnInterface, node.tsn);
    assert.equal(p.target.api, "clsact");
    assert.equal((await dryRunPlan(node)).target.api, "tcx");
  } finally {
    await destroyNode(node);
  }
});
