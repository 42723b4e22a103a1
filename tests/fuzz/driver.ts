/**
 * The fuzz driver: builds the fixture and runs cases [start, start+cases) of a seed (or one
 * saved case), inside the node namespace tests/fuzz/run.ts put it in. Progress and failures
 * go to stderr; the report (JSON) to --report; "<case index> <via> <fixture ids>" to --progress
 * before each case.
 *
 *   --seed=N --cases=N [--start=N] [--case=N] [--process-share=0.08] [--via=V]
 *   [--timeout-ms=N] [--replay=FILE] [--report=FILE] [--progress=FILE] [--id=HEX6]
 */
import { createFixture, destroyFixture, type Fixture } from "./fixture.ts";
import { loadNetworks } from "./corpus.ts";
import { type Case, generateCase, type Invocation, type Via, withVerb } from "./generate.ts";
import { replyProblems, snapshot, stateDiff } from "./oracle.ts";
import {
  call,
  type Failure,
  newTally,
  resetNode,
  runCase,
  type RunOptions,
  type Tally,
} from "./runner.ts";
import { base64Decode, base64Encode, describeFailure, type SavedCase } from "./report.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

export interface DriverArgs {
  seed: number;
  start: number;
  cases: number;
  only?: number;
  processShare: number;
  via?: Via;
  timeoutMs: number;
  replay?: string;
  report?: string;
  /** Written with the index of the case being run, before it runs (the launcher's watchdog). */
  progress?: string;
  id?: string;
}

export interface DriverReport {
  seed: number;
  start: number;
  cases: number;
  skipped: Record<string, number>;
  seconds: number;
  casesPerSecond: number;
  tally: Tally;
  fixtureSeconds: number;
  /** Fixtures rebuilt because a case broke the node beyond repair. */
  rebuilds: number;
}

function parseArgs(argv: string[]): DriverArgs {
  const a: DriverArgs = { seed: 1, start: 0, cases: 100, processShare: 0.08, timeoutMs: 30_000 };
  for (const arg of argv) {
    const [k, v] = arg.split(/=(.*)/s, 2);
    if (k === "--seed") a.seed = Number(v) >>> 0;
    else if (k === "--cases") a.cases = Number(v);
    else if (k === "--start") a.start = Number(v);
    else if (k === "--case") a.only = Number(v);
    else if (k === "--process-share") a.processShare = Number(v);
    else if (k === "--via") a.via = v as Via;
    else if (k === "--timeout-ms") a.timeoutMs = Number(v);
    else if (k === "--replay") a.replay = v;
    else if (k === "--report") a.report = v;
    else if (k === "--id") a.id = v;
    else if (k === "--progress") a.progress = v;
    else throw new Error(`unknown argument ${arg} (see tests/fuzz/driver.ts)`);
  }
  return a;
}

const log = (s: string) => console.error(s);

/** A saved case against this fixture: the old fixture's names replaced by this one's. */
function fromSaved(saved: SavedCase, f: Fixture): Case {
  const pairs = Object.entries(saved.names)
    .filter(([k, old]) => f.names[k] !== undefined && old !== f.names[k])
    .map(([k, old]) => [old, f.names[k]] as const);
  const fix = (inv: SavedCase["main"]): Invocation => {
    let stdin = base64Decode(inv.stdinBase64);
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(inv.env)) {
      env[k] = pairs.reduce((s, [a, b]) => s.replaceAll(a, b), v);
    }
    for (const [a, b] of pairs) stdin = replaceBytes(stdin, a, b);
    return { env, stdin };
  };
  return { ...saved.case, main: fix(saved.main), valid: fix(saved.valid) };
}

function replaceBytes(s: Uint8Array, from: string, to: string): Uint8Array {
  const a = new TextEncoder().encode(from), b = new TextEncoder().encode(to);
  const out: number[] = [];
  for (let i = 0; i < s.length;) {
    let hit = a.length > 0 && i + a.length <= s.length;
    for (let j = 0; hit && j < a.length; j++) hit = s[i + j] === a[j];
    if (hit) {
      out.push(...b);
      i += a.length;
    } else out.push(s[i++]);
  }
  return new Uint8Array(out);
}

async function save(f: Fixture, c: Case, problems: string[]): Promise<string> {
  const dir = `${ROOT}.cache/fuzz`;
  await Deno.mkdir(dir, { recursive: true });
  const path = `${dir}/seed${c.seed}-case${c.index}.json`;
  const inv = (i: Invocation) => ({ env: i.env, stdinBase64: base64Encode(i.stdin) });
  const { main: _m, valid: _v, ...meta } = c;
  const saved: SavedCase = {
    case: meta,
    names: f.names,
    problems,
    main: inv(c.main),
    valid: inv(c.valid),
  };
  await Deno.writeTextFile(path, JSON.stringify(saved, null, 2) + "\n");
  return path;
}

export async function drive(a: DriverArgs): Promise<DriverReport> {
  const t0 = performance.now();
  let f = await createFixture(a.id);
  const fixtureSeconds = (performance.now() - t0) / 1000;
  let rebuilds = 0;
  /** Every fixture's id, for the launcher's clean-up should this process die. */
  const ids = [f.id];
  const tally = newTally();
  const skipped: Record<string, number> = {};
  const o: RunOptions = { processTimeoutMs: a.timeoutMs, saveDir: `${ROOT}.cache/fuzz`, log };
  const started = performance.now();
  try {
    await selfCheck(f, o);
    const networks = loadNetworks();
    const cases: Array<(f: Fixture) => Case> = [];
    if (a.replay) {
      const saved = JSON.parse(await Deno.readTextFile(a.replay)) as SavedCase;
      cases.push((f) => fromSaved(saved, f));
    } else {
      const indices = a.only !== undefined
        ? [a.only]
        : Array.from({ length: a.cases }, (_, i) => a.start + i);
      for (const i of indices) {
        cases.push((f) =>
          generateCase(a.seed, i, f, networks, { processShare: a.processShare, via: a.via })
        );
      }
    }
    let n = 0;
    for (const make of cases) {
      const c = make(f);
      if (a.progress) Deno.writeTextFileSync(a.progress, `${c.index} ${c.via} ${ids.join(",")}\n`);
      let problems: string[];
      try {
        problems = await runCase(f, c, o, tally);
      } catch (e) {
        problems = [`the fuzzer itself failed on this case: ${(e as Error).stack ?? e}`];
      }
      if (problems.length === 1 && problems[0].startsWith("SKIP ")) {
        skipped[problems[0]] = (skipped[problems[0]] ?? 0) + 1;
        continue;
      }
      tally.cases++;
      if (problems.length) {
        const failure: Failure = {
          seed: c.seed,
          index: c.index,
          via: c.via,
          problems,
          mutations: c.mutations,
          env: c.main.env,
          stdin: new TextDecoder().decode(c.main.stdin),
        };
        failure.saved = await save(f, c, problems);
        tally.failures.push(failure);
        log(describeFailure(failure, c));
        const left = await resetNode(f, c, o).catch((e) => [String(e)]);
        if (left.length) {
          // The case broke the node beyond repair (its datapath, say): go on with a new one.
          log(`fuzz: case ${c.index} left the node broken (${left}); building a new fixture`);
          await destroyFixture(f);
          f = await createFixture();
          ids.push(f.id);
          rebuilds++;
        }
      }
      if (a.replay || a.only !== undefined) log(`case ${c.index}: ${describeCase(c, problems)}`);
      if (++n % 50 === 0) {
        const s = (performance.now() - started) / 1000;
        log(
          `fuzz: ${n}/${cases.length} cases, ${tally.failures.length} failing, ` +
            `${(n / s).toFixed(1)} cases/s`,
        );
      }
    }
  } finally {
    await destroyFixture(f);
  }
  const seconds = (performance.now() - started) / 1000;
  return {
    seed: a.replay ? savedSeed(a.replay) : a.seed,
    start: a.start,
    cases: tally.cases,
    skipped,
    seconds,
    casesPerSecond: tally.cases / seconds,
    tally,
    fixtureSeconds,
    rebuilds,
  };
}

/**
 * The oracle must be able to fail: an attachment left in place and a malformed reply are
 * seen. Runs before the cases, against the same fixture.
 */
async function selfCheck(f: Fixture, o: RunOptions): Promise<void> {
  const pod = f.pods.bridge;
  const add: Invocation = {
    env: {
      CNI_COMMAND: "ADD",
      CNI_CONTAINERID: pod.containerId,
      CNI_NETNS: pod.netns,
      CNI_IFNAME: "eth0",
    },
    stdin: new TextEncoder().encode(JSON.stringify({
      cniVersion: pod.listVersion,
      name: "fuzz-self-check",
      type: "tsnproxy",
      bpffs: f.bpffs,
      prevResult: pod.result,
    })),
  };
  const r = await call(add, "in-process", o);
  if (r.code !== 0) throw new Error(`self-check: a valid ADD failed: ${r.stdout}`);
  const attached = stateDiff(f.baseline, snapshot(f));
  if (
    !attached.some((d) => d.startsWith("pins:")) || !attached.some((d) => d.startsWith("programs:"))
  ) {
    throw new Error(`self-check: the oracle does not see an attached pod (${attached})`);
  }
  await call(withVerb(add, "DEL"), "in-process", o);
  const left = await resetNode(f, generateCase(0, 0, f, loadNetworks(), { processShare: 0 }), o);
  if (left.length) throw new Error(`self-check: DEL left ${left}`);
  const bad = replyProblems("ADD", "{}", {
    code: 1,
    stdout: '{"code":"x"}\n',
    stderr: "oops",
    ms: 0,
  });
  if (bad.length < 3) throw new Error(`self-check: a malformed reply passes: ${bad}`);
}

function savedSeed(path: string): number {
  return (JSON.parse(Deno.readTextFileSync(path)) as SavedCase).case.seed;
}

function describeCase(c: Case, problems: string[]): string {
  return `${c.kind} ${c.verb} on ${c.target} via ${c.via} [${c.mutations.join("; ")}]: ` +
    (problems.length ? problems.join(" | ") : "ok");
}

if (import.meta.main) {
  const a = parseArgs(Deno.args);
  const r = await drive(a);
  if (a.report) await Deno.writeTextFile(a.report, JSON.stringify(r) + "\n");
  Deno.exit(0);
}
