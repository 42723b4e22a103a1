/**
 * The CNI fuzzer in the test suite: a few hundred cases of a fixed seed (TSNPROXY_FUZZ_SEED
 * picks another, TSNPROXY_FUZZ_CASES another count) against the real plugin and a real
 * installed datapath (tests/fuzz/run.ts; `deno task bench --only=fuzz` runs thousands with a
 * random seed). Every case: CNI JSON out (a Result or an error with a code), no crash, nothing
 * on stderr, nothing left attached by a failed call, a successful ADD undone by its DEL.
 */
import assert from "node:assert/strict";
import { runFuzz, summary } from "./run.ts";
import { replayCommand } from "./report.ts";

const SEED = Number(Deno.env.get("TSNPROXY_FUZZ_SEED") ?? 20261204) >>> 0;
const CASES = Number(Deno.env.get("TSNPROXY_FUZZ_CASES") ?? 300);

if (Deno.uid() !== 0) {
  console.log("fuzz_test: ignored: the plugin attaches programs, which needs root");
}

Deno.test({
  name: `CNI fuzz: ${CASES} cases of seed ${SEED} (TSNPROXY_FUZZ_SEED picks another)`,
  ignore: Deno.uid() !== 0,
}, async () => {
  console.log(`fuzz seed ${SEED}`);
  const r = await runFuzz({ seed: SEED, cases: CASES, processShare: 0.08, timeoutMs: 15_000 });
  console.log(summary(r));
  const t = r.tally;
  const failures = t.failures.map((f) =>
    `case ${f.index} (${f.via}; ${f.mutations.join("; ") || "unmutated"}): ` +
    `${f.problems.join(" | ").slice(0, 600)}\n    replay: ${replayCommand(f.seed, f.index, f.via)}`
  );
  assert.deepEqual(failures, [], `${failures.length} failing fuzz cases (seed ${SEED})`);
  // The cases must have exercised what the oracle checks, not only bounced off validation.
  const skipped = Object.values(r.skipped).reduce((a, b) => a + b, 0);
  assert.ok(r.cases + skipped === CASES, `${r.cases} + ${skipped} skipped of ${CASES}`);
  assert.ok((t.ok.ADD ?? 0) >= CASES / 10, `only ${t.ok.ADD ?? 0} successful ADDs`);
  assert.ok((t.ok.DEL ?? 0) >= CASES / 20, `only ${t.ok.DEL ?? 0} successful DELs`);
  const processes = r.cases - (t.byVia["in-process"] ?? 0);
  assert.ok(processes >= CASES / 25, `only ${processes} cases ran as a plugin process`);
});
