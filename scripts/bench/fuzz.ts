/**
 * Optional section "fuzz" (`deno task bench --only=fuzz`): the CNI fuzzer (tests/fuzz/) with
 * a random seed over thousands of cases, against the real plugin and a real installed
 * datapath. Reports cases/s and every failing case with the command that replays it. Also
 * runs alone: `deno run -A scripts/bench/fuzz.ts [--cases=N] [--seed=N]`.
 */
import { runFuzz, summary } from "../../tests/fuzz/run.ts";
import { randomSeed } from "../../tests/fuzz/prng.ts";
import { replayCommand } from "../../tests/fuzz/report.ts";

export interface FuzzBench {
  seed: number;
  cases: number;
  seconds: number;
  casesPerSecond: number;
  failures: Array<{ index: number; via: string; problems: string[]; replay: string }>;
  codes: Record<string, number>;
}

export async function runFuzzBench(
  o: { cases: number; seed?: number; log: (s: string) => void },
): Promise<FuzzBench> {
  const seed = o.seed ?? randomSeed();
  o.log(`fuzz: seed ${seed}, ${o.cases} cases`);
  const r = await runFuzz({ seed, cases: o.cases, processShare: 0.05, timeoutMs: 30_000 });
  for (const line of summary(r).split("\n")) o.log(line);
  return {
    seed,
    cases: r.cases,
    seconds: r.seconds,
    casesPerSecond: r.casesPerSecond,
    failures: r.tally.failures.map((f) => ({
      index: f.index,
      via: f.via,
      problems: f.problems,
      replay: replayCommand(f.seed, f.index, f.via),
    })),
    codes: r.tally.codes,
  };
}

/** Standalone: `deno run -A scripts/bench/fuzz.ts [--cases=N] [--seed=N]`. */
if (import.meta.main) {
  let cases = 3000;
  let seed: number | undefined;
  for (const arg of Deno.args) {
    const [k, v] = arg.split("=", 2);
    if (k === "--cases") cases = Number(v);
    else if (k === "--seed") seed = Number(v) >>> 0;
    else throw new Error(`unknown argument ${arg}: --cases=N --seed=N`);
  }
  const r = await runFuzzBench({ cases, seed, log: (s) => console.error(s) });
  console.log(
    `fuzz: seed ${r.seed}, ${r.cases} cases, ${r.casesPerSecond.toFixed(1)} cases/s, ` +
      `${r.failures.length} failing`,
  );
  for (const f of r.failures) {
    console.log(`  case ${f.index}: ${f.problems.join(" | ")}\n    ${f.replay}`);
  }
  Deno.exit(r.failures.length ? 1 : 0);
}
