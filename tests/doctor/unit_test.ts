/**
 * The pure parts of doctor: the priority-map rule, the stall rule (taprio is absent on this
 * host's kernel, so the real condition runs in the Debian VMs only), exit codes, rendering.
 */
import assert from "node:assert/strict";
import { run } from "../lib/run.ts";
import {
  allowedPriorities,
  defaultedToClass0,
  stallEvidence,
} from "../../src/doctor/checks_net.ts";
import { atLeast, parseKernelRelease } from "../../src/doctor/probe.ts";
import { DoctorContext } from "../../src/doctor/context.ts";
import { renderDoctor, wrap } from "../../src/doctor/render.ts";
import { exitCodeOf } from "../../src/doctor/report.ts";
import {
  DOCTOR_SCHEMA_VERSION,
  type DoctorReport,
  doctorReportSchema,
} from "../../src/doctor/schema.ts";
import { ConfigError } from "../../src/errors.ts";
import { DEFAULTS } from "../../src/options.ts";
import type { QdiscInfo } from "../../src/netlink/mod.ts";

Deno.test("priority map: allowed priorities that fall into class 0 by default", () => {
  const map = [0, 1, 2, 3, ...Array(12).fill(0)];
  // No policy: pods may use 0..15; 4..15 land in class 0 only because the map stops at 3.
  assert.deepEqual(defaultedToClass0(map, allowedPriorities({})), [
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    12,
    13,
    14,
    15,
  ]);
  // Clamped to 3: covered.
  assert.deepEqual(defaultedToClass0(map, allowedPriorities({ maxPriority: 3 })), []);
  // Remap 7 -> 2 and clamp 3: still covered.
  assert.deepEqual(allowedPriorities({ maxPriority: 3, remap: { "7": 2 } }), [0, 1, 2, 3]);
  // An explicit 0 in the written map is deliberate, not a default.
  const explicit = [0, 1, 0, 3, 0, 0, ...Array(10).fill(0)];
  assert.deepEqual(defaultedToClass0(explicit, [0, 1, 2, 3, 4, 5], 6), []);
  assert.deepEqual(defaultedToClass0(explicit, [0, 1, 2, 3, 4, 5, 6], 6), [6]);
  // Without the written length, zeros after the last non-zero entry count as defaults.
  assert.deepEqual(defaultedToClass0(explicit, [0, 1, 2, 3, 4, 5]), [4, 5]);
});

function q(packets: number, qlen: number): QdiscInfo {
  return {
    ifindex: 2,
    handle: 0x1000000,
    parent: 0xffffffff,
    kind: "taprio",
    stats: { bytes: 0n, packets, drops: 0, overlimits: 0, requeues: 0, qlen, backlog: qlen * 100 },
  };
}

Deno.test("stall rule: a backlog that does not move is a stall; an empty or moving queue is not", () => {
  assert.equal(stallEvidence(q(10, 5), q(10, 7)).stalled, true);
  assert.equal(stallEvidence(q(10, 5), q(12, 5)).stalled, false);
  assert.equal(stallEvidence(q(10, 0), q(10, 0)).stalled, false);
});

Deno.test("kernel releases and feature thresholds", () => {
  const k = parseKernelRelease("6.1.0-56-cloud-amd64");
  assert.deepEqual([k.major, k.minor, k.patch], [6, 1, 0]);
  assert.equal(atLeast(k, 5, 15), true);
  assert.equal(atLeast(k, 6, 6), false);
  assert.equal(atLeast(parseKernelRelease("6.18.44-fc-v657"), 6, 11), true);
});

function report(statuses: Array<"pass" | "info" | "warn" | "fail" | "skip">): DoctorReport {
  const checks = statuses.map((status, i) => ({
    id: `kernel.c${i}`,
    group: "kernel" as const,
    title: `check ${i}`,
    status,
    found: `found ${i} `.repeat(20).trim(),
    ...(status === "warn" || status === "fail" ? { fix: `do thing ${i}` } : {}),
  }));
  const summary = { pass: 0, info: 0, warn: 0, fail: 0, skip: 0 };
  for (const c of checks) summary[c.status]++;
  return doctorReportSchema.parse({
    version: DOCTOR_SCHEMA_VERSION,
    generatedAt: new Date().toISOString(),
    tool: { version: "0.1.0", bpfObjectsSha256: "ab".repeat(32), deno: "2", compiled: false },
    host: { hostname: "h", kernel: "6.18" },
    location: {
      config: "/c",
      tsnInterface: "tsn0",
      tsnInterfaces: ["tsn0"],
      cniConfDir: "/n",
      cniBinDir: "/b",
      bpffs: "/sys/fs/bpf/x",
    },
    summary,
    exitCode: exitCodeOf(checks),
    checks,
  });
}

Deno.test("exit codes: 0 all pass (info/skip count as pass), 3 warnings only, 1 failures", () => {
  assert.equal(report(["pass", "info", "skip"]).exitCode, 0);
  assert.equal(report(["pass", "warn"]).exitCode, 3);
  assert.equal(report(["warn", "fail", "pass"]).exitCode, 1);
});

Deno.test("human table: wrapped, fixes shown, color only when asked", () => {
  const r = report(["pass", "warn", "fail"]);
  const plain = renderDoctor(r, { color: false, width: 80 });
  assert.ok(!plain.includes("\x1b["));
  assert.ok(plain.split("\n").every((l) => l.length <= 80), plain);
  assert.match(plain, /WARN\s+kernel\.c1/);
  assert.match(plain, /fix: do thing 2/);
  assert.match(plain, /failures: 1 ok, 0 info, 1 warn, 1 fail/);
  const colored = renderDoctor(r, { color: true, width: 80 });
  assert.ok(colored.includes("\x1b[1;31mFAIL"), colored);
  assert.deepEqual(wrap("a bb ccc", 4), ["a bb", "ccc"]);
});

Deno.test("NO_COLOR and pipes: the CLI never colors non-terminal output", async () => {
  const root = new URL("../../", import.meta.url).pathname;
  const out = await run(
    [`${root}/scripts/tsnproxy`, "doctor", "--bpffs", "/sys/fs/bpf/tsnp-test-none"]
      .concat(["--cni-conf-dir", "/nonexistent"]),
    { env: { NO_COLOR: "1" }, allowFail: true },
  );
  const text = out.stdout;
  assert.equal(out.code, 1, text); // failures
  assert.ok(!text.includes("\x1b["));
  assert.match(text, /FAIL\s+cni\.entry\s+cannot tell which CNI config/);
});

Deno.test("check verdicts by intent: named fields, one scope per check, a throw is a fail", () => {
  const ctx = new DoctorContext({ ...DEFAULTS, config: "/nonexistent/config.yaml", json: true });
  const A = { id: "kernel.a", title: "A" } as const;
  ctx.run(A, (check) => check.warn({ found: "w", fix: "do w", data: { n: 1 } }));
  ctx.pass({ id: "pins.b", title: "B", found: "b" });
  ctx.skip({ id: "pods.c", title: "C", found: "needs b" });
  // A check that throws after a verdict: only the failure remains, with the error's hint.
  ctx.run({ id: "config.d", title: "D" }, (check) => {
    check.pass({ found: "half way" });
    throw new ConfigError("broken", "fix it");
  });
  assert.deepEqual(ctx.checks, [
    {
      id: "kernel.a",
      group: "kernel",
      title: "A",
      status: "warn",
      found: "w",
      fix: "do w",
      data: { n: 1 },
    },
    { id: "pins.b", group: "pins", title: "B", status: "pass", found: "b" },
    { id: "pods.c", group: "pods", title: "C", status: "skip", found: "needs b" },
    {
      id: "config.d",
      group: "config",
      title: "D",
      status: "fail",
      found: "check failed: broken",
      fix: "fix it",
    },
  ]);
  assert.ok(ctx.has("kernel.a", "warn") && !ctx.has("kernel.a", "pass"));
});
