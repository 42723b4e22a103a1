/**
 * Optional section "fuzz" (`deno task bench --only=fuzz`): the CNI fuzzer (tests/fuzz/) with
 * a random seed over thousands of cases, against the real plugin and a real installed
 * datapath. Reports cases/s and every failing case with the command that replays it.
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
