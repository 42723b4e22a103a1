/**
 * The qdisc tests this host has to ignore (its kernel has no sch_taprio, sch_mqprio, sch_etf)
 * run in Debian's 6.1 and 6.12 kernels, unchanged: `deno test` of the same files inside the
 * guest (the host's deno over 9p, one boot per kernel):
 *
 * - tests/netlink/qdisc_apply_test.ts: taprio/mqprio with etf through the installer's qdisc
 *   plan (read back as configured, a second plan empty, kind none removes the root, the 6.1
 *   repair re-creates taprio after clsact) and per-priority class counters;
 * - tests/install/install_test.ts: a taprio the kernel refuses (full offload on a veth) fails
 *   with the kernel's reason and leaves the node as it was.
 *
 * Each must have run and passed in the guest (not been ignored there).
 */
import assert from "node:assert/strict";
import { denoPath, runVm, shellQuote } from "../../scripts/vm/runner.ts";
import { kernels } from "./_vm.ts";

/** file -> the tests (name prefixes) that are ignored here and must pass in the guest. */
const SUITES: Record<string, string[]> = {
  "tests/netlink/qdisc_apply_test.ts": [
    "taprio/mqprio/etf through the qdisc plan",
    "taprio classes count packets per priority",
  ],
  "tests/install/install_test.ts": [
    "qdisc: taprio the kernel refuses (full offload on a veth)",
  ],
};

/** `deno test` of each file (filtered to the listed tests where the file has others). */
function script(): string {
  const deno = shellQuote(denoPath());
  const lines = ["status=0"];
  for (const [file, names] of Object.entries(SUITES)) {
    const filter = file.startsWith("tests/install/") ? ` --filter ${shellQuote(names[0])}` : "";
    lines.push(`${deno} test -A --no-lock --no-check${filter} ${file} || status=1`);
  }
  lines.push("exit $status");
  return lines.join("\n") + "\n";
}

/** The outcome deno test printed for the test whose name starts with `prefix`. */
function outcome(output: string, prefix: string): string | undefined {
  for (const line of output.split("\n")) {
    // The runner's console capture may print the name twice on one line: take the last.
    const at = line.lastIndexOf(prefix);
    if (at < 0) continue;
    const m = / \.\.\. (ok|FAILED|ignored)\b/.exec(line.slice(at));
    if (m) return m[1];
  }
  return undefined;
}

for (const kernel of kernels()) {
  Deno.test(`vm ${kernel}: the taprio/mqprio/etf tests this host ignores run and pass`, async () => {
    const vm = await runVm({
      kernel,
      script: script(),
      env: { NO_COLOR: "1" },
      timeoutSec: 420,
    });
    console.log(
      `${kernel} (${vm.kver}): boot ${(vm.bootMs / 1000).toFixed(1)} s, tests ` +
        `${(vm.testMs / 1000).toFixed(1)} s`,
    );
    // What the guest's deno test said, without its captured-output blocks' noise.
    console.log(
      vm.output.split("\n").filter((l) =>
        / \.\.\. (ok|FAILED|ignored)\b|^(ok|FAILED) \||refused as expected|ignored:/.test(l)
      ).join("\n"),
    );
    assert.equal(vm.exitCode, 0, `deno test in the guest failed:\n${vm.output}`);
    for (const name of Object.values(SUITES).flat()) {
      assert.equal(outcome(vm.output, name), "ok", `${name} in ${kernel}:\n${vm.output}`);
    }
  });
}
