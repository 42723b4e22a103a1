/**
 * `deno task bench` (or, with a node_modules/.bin/deno in the tree, `deno run -A
 * scripts/bench.ts`): tsnproxy's benchmarks. Root only; never part of `deno task test`.
 *
 *   1. datapath overhead: UDP (a compiled sendmmsg sender on every CPU, every packet
 *      prioritized) and TCP through bridge + NAT, without tsnproxy, with empty programs at its
 *      hooks and with each carrier (tag, table), alternating; each program's ns/packet in situ
 *      (kernel run-time stats) and from BPF_PROG_TEST_RUN
 *   2. fidelity under load: % restored and wrong priorities, tsnproxy (each carrier) vs the
 *      research design
 *   3. CNI ADD/DEL latency: tsnproxy vs Go `tuning` vs the research design's bash plugin
 *   4. scale: N pods ADD then DEL at concurrency 1 and 16, alone and via the agent; peak RSS,
 *      map memory, leftovers
 *   5. fuzz (optional, only with --only=fuzz): the CNI fuzzer (tests/fuzz/), random seed,
 *      thousands of cases (--fuzz-cases=N); cases/s and failing cases
 *
 * Every comparison is measured side by side in one run: on a shared 2-core machine only the
 * ratios mean something. Writes .cache/bench/report.json (--out), and from it the chart
 * docs/bench.svg (--svg) and the figures block of docs/benchmarks.md (--docs: between its
 * bench:figures markers; every figure with its goal and met / NOT MET).
 *
 *   --quick            fewer packets, pods and alternations (about 3 minutes)
 *   --only=a,b         sections: throughput, cost, fidelity, cni, scale, fuzz
 *   --fuzz-cases=N     cases for the fuzz section (default 3000, --quick 1000)
 *   --out=PATH --svg=PATH --docs=PATH
 *   --render           print the tables, draw the chart and write the figures block again
 *                      from an existing --out report
 */
import { round, runCleanups } from "./bench/common.ts";
import { spawn } from "../tests/lib/run.ts";
import type { Report } from "./bench/report.ts";

const ROOT = new URL("..", import.meta.url).pathname;

interface Args {
  quick: boolean;
  render: boolean;
  only: Set<string>;
  fuzzCases?: number;
  out: string;
  svg: string;
  docs: string;
}

const SECTIONS = ["throughput", "cost", "fidelity", "cni", "scale"];
/** Sections run only when --only names them. */
const OPTIONAL_SECTIONS = ["fuzz"];

function parseArgs(argv: string[]): Args {
  const a: Args = {
    quick: false,
    render: false,
    only: new Set(SECTIONS),
    out: `${ROOT}.cache/bench/report.json`,
    svg: `${ROOT}docs/bench.svg`,
    docs: `${ROOT}docs/benchmarks.md`,
  };
  for (const arg of argv) {
    const [k, v] = arg.split("=", 2);
    if (k === "--quick") a.quick = true;
    else if (k === "--render") a.render = true;
    else if (k === "--only" && v) {
      a.only = new Set(v.split(","));
      for (const s of a.only) {
        if (!SECTIONS.includes(s) && !OPTIONAL_SECTIONS.includes(s)) {
          throw new Error(`unknown section ${s}`);
        }
      }
    } else if (k === "--fuzz-cases" && v) a.fuzzCases = Number(v);
    else if (k === "--out" && v) a.out = v;
    else if (k === "--svg" && v) a.svg = v;
    else if (k === "--docs" && v) a.docs = v;
    else throw new Error(`unknown argument ${arg} (see the header of scripts/bench.ts)`);
  }
  return a;
}

/** `git describe` of the checkout (with -dirty), or undefined outside a git checkout. */
async function commitOf(): Promise<string | undefined> {
  try {
    const o = await new Deno.Command("git", {
      args: ["-C", ROOT, "describe", "--always", "--dirty"],
      stdout: "piped",
      stderr: "null",
    }).output();
    return o.success ? new TextDecoder().decode(o.stdout).trim() : undefined;
  } catch {
    return undefined;
  }
}

const log = (s: string) => console.error(`[${new Date().toISOString().slice(11, 19)}] ${s}`);

async function output(r: Report, args: Args): Promise<void> {
  const { render, replaceFigures } = await import("./bench/report.ts");
  const { tables, svg, markdown } = render(r);
  for (const t of tables) console.log(t);
  await Deno.mkdir(args.svg.replace(/\/[^/]*$/, ""), { recursive: true });
  await Deno.writeTextFile(args.svg, svg);
  await Deno.writeTextFile(args.docs, replaceFigures(await Deno.readTextFile(args.docs), markdown));
  // The block is markdown the formatter owns: keep `deno task check` clean.
  await new Deno.Command(Deno.execPath(), { args: ["fmt", "--quiet", args.docs] }).output();
  console.log(
    `\nreport: ${args.out}\nchart:  ${args.svg}\nfigures: ${args.docs}\ntook ${r.seconds} s`,
  );
}

async function main(): Promise<number> {
  const args = parseArgs(Deno.args);
  if (args.render) {
    await output(JSON.parse(await Deno.readTextFile(args.out)) as Report, args);
    return 0;
  }
  if (Deno.uid() !== 0) {
    console.error("bench: needs root (network namespaces, BPF)");
    return 1;
  }
  // The benchmark-only BPF objects are generated; build them when run without `deno task`.
  const b = await spawn([Deno.execPath(), "run", "-A", `${ROOT}scripts/build_bpf.ts`], {
    stdout: "inherit",
    stderr: "inherit",
  }).wait();
  if (b.code !== 0) throw new Error("scripts/build_bpf.ts failed");
  const { report } = await import("./bench/report.ts");
  const started = performance.now();
  const q = args.quick;
  const r = report(q);
  r.commit = await commitOf();
  const sig = () => {
    console.error("bench: interrupted, cleaning up");
    runCleanups().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", sig);
  Deno.addSignalListener("SIGTERM", sig);
  try {
    if (args.only.has("throughput")) {
      const { runThroughput } = await import("./bench/throughput.ts");
      r.throughput = await runThroughput({
        rounds: q ? 6 : 16,
        windowSeconds: q ? 1 : 2,
        tcpRounds: q ? 2 : 5,
        tcpSeconds: q ? 1.5 : 3,
        inSituSeconds: q ? 1.5 : 3,
        log,
      });
    }
    if (args.only.has("cost")) {
      const { runProgCost } = await import("./bench/progcost.ts");
      r.programCost = await runProgCost({
        repeat: q ? 20000 : 100000,
        rounds: q ? 7 : 15,
        distinct: q ? 500 : 2000,
        log,
      });
    }
    if (args.only.has("fidelity")) {
      const { runFidelity } = await import("./bench/fidelity.ts");
      r.fidelity = await runFidelity({
        packets: q ? 4000 : 20000,
        pps: 2000,
        cases: ["none", "prio0", "prio6"],
        variants: ["tag", "table", "research"],
        log,
      });
    }
    if (args.only.has("cni")) {
      const { runLatency } = await import("./bench/cni.ts");
      r.cniLatency = await runLatency({
        pods: q ? 40 : 200,
        warmup: 3,
        profileReps: q ? 3 : 10,
        log,
      });
    }
    if (args.only.has("scale")) {
      const { runScale } = await import("./bench/cni.ts");
      r.scale = await runScale({ pods: q ? 40 : 250, concurrency: [1, 16], log });
    }
    if (args.only.has("fuzz")) {
      const { runFuzzBench } = await import("./bench/fuzz.ts");
      const fuzz = await runFuzzBench({ cases: args.fuzzCases ?? (q ? 1000 : 3000), log });
      (r as Report & { fuzz?: typeof fuzz }).fuzz = fuzz;
    }
  } finally {
    await runCleanups();
    Deno.removeSignalListener("SIGINT", sig);
    Deno.removeSignalListener("SIGTERM", sig);
  }
  r.seconds = round((performance.now() - started) / 1000);
  await Deno.mkdir(args.out.replace(/\/[^/]*$/, ""), { recursive: true });
  await Deno.writeTextFile(args.out, JSON.stringify(r, null, 2) + "\n");
  await output(r, args);
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    await runCleanups();
    console.error(`bench: ${(e as Error).stack ?? e}`);
    Deno.exit(1);
  }
}
