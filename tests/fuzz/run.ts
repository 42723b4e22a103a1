/**
 * Runs the CNI fuzzer: a private node network namespace, the driver (./driver.ts) inside it
 * with nsenter (which, unlike `ip netns exec`, keeps /sys and so the bpf filesystem), the
 * report back. Used by tests/fuzz/fuzz_test.ts, scripts/bench/fuzz.ts, and by hand:
 *
 *   deno run -A tests/fuzz/run.ts [--seed=N] [--cases=N] [--start=N] [--process-share=F]
 *   deno run -A tests/fuzz/run.ts --seed=N --case=I [--via=process]   one case, verbose
 *   deno run -A tests/fuzz/run.ts --replay=.cache/fuzz/seedN-caseI.json
 *   --messages   also print one example of every distinct error message seen
 *
 * Root only (namespaces, BPF). Without --seed the seed is random (and printed).
 */
import type { DriverReport } from "./driver.ts";
import { randomSeed } from "./prng.ts";
import { randomId, spawn } from "../lib/run.ts";
import { deleteNetns, listNetns, Netns } from "../lib/netns.ts";
import { replayCommand } from "./report.ts";

const DRIVER = new URL("./driver.ts", import.meta.url).pathname;

export interface FuzzOptions {
  seed: number;
  cases: number;
  start?: number;
  /** Only this case index. */
  only?: number;
  processShare?: number;
  via?: string;
  timeoutMs?: number;
  replay?: string;
}

/** How long one case may take before the driver counts as hung (an in-process call blocked). */
const WATCHDOG_MS = 150_000;

export async function runFuzz(o: FuzzOptions): Promise<DriverReport> {
  const id = randomId(6);

  const report = await Deno.makeTempFile({ prefix: "tsnp-fuzz-report-" });
  const progress = await Deno.makeTempFile({ prefix: "tsnp-fuzz-progress-" });
  const ns = await Netns.create({ name: `tsnp-fuzz-${id}`, lo: false });
  let hung: string | undefined;
  let clean = false;
  try {
    const args = [
      `--seed=${o.seed}`,
      `--cases=${o.cases}`,
      `--start=${o.start ?? 0}`,
      `--report=${report}`,
      `--progress=${progress}`,
      `--id=${id}`,
      ...(o.only !== undefined ? [`--case=${o.only}`] : []),
      ...(o.processShare !== undefined ? [`--process-share=${o.processShare}`] : []),
      ...(o.via ? [`--via=${o.via}`] : []),
      ...(o.timeoutMs ? [`--timeout-ms=${o.timeoutMs}`] : []),
      ...(o.replay ? [`--replay=${o.replay}`] : []),
    ];
    const child = spawn([Deno.execPath(), "run", "-A", DRIVER, ...args], {
      netns: ns.name,
      stdout: "inherit",
      stderr: "inherit",
    });
    // The driver calls the plugin in its own thread: a call that blocks (a FIFO opened
    // without O_NONBLOCK) stops it for good. No progress for WATCHDOG_MS: kill it, say where.
    const watchdog = setInterval(() => {
      let at: Deno.FileInfo;
      try {
        at = Deno.statSync(progress);
      } catch {
        return;
      }
      if (Date.now() - (at.mtime?.getTime() ?? Date.now()) < WATCHDOG_MS) return;
      const [index, via] = Deno.readTextFileSync(progress).trim().split(" ");
      hung = `the fuzz driver hung in case ${index} (seed ${o.seed}, via ${via}): a plugin call ` +
        `blocked for ${WATCHDOG_MS / 1000} s; replay: ${replayCommand(o.seed, Number(index), via)}`;
      child.kill();
    }, 2000);
    const status = await child.wait();
    clearInterval(watchdog);
    if (hung) throw new Error(hung);
    if (status.code !== 0) {
      throw new Error(`the fuzz driver exited ${status.code} (seed ${o.seed})`);
    }
    clean = true;
    return JSON.parse(await Deno.readTextFile(report)) as DriverReport;
  } finally {
    await ns.delete();
    // A driver that did not finish left its fixtures (the progress file names them).
    if (!clean) {
      const ids = (await Deno.readTextFile(progress).catch(() => "")).trim().split(" ")[2];
      for (const i of new Set([id, ...(ids ? ids.split(",") : [])])) await forceCleanup(i);
    }
    await Deno.remove(report).catch(() => {});
    await Deno.remove(progress).catch(() => {});
  }
}

/** What a killed driver's fixture left (tests/fuzz/fixture.ts names it all after its id). */
export async function forceCleanup(id: string): Promise<void> {
  for (const ns of await listNetns()) if (ns.startsWith(`tsnp-fz-${id}-`)) await deleteNetns(ns);
  for (const e of Deno.readDirSync("/sys/fs/bpf")) {
    if (e.name === `tsnp-fz-${id}` || e.name.startsWith(`tsnp-fz-${id}-`)) {
      await Deno.remove(`/sys/fs/bpf/${e.name}`, { recursive: true }).catch(() => {});
    }
  }
  for (
    const p of [`/tmp/tsnp-fuzz-${id}`, `/var/log/tsnproxy/fuzz-${id}`, `/run/tsnproxy/fuzz-${id}`]
  ) {
    await Deno.remove(p, { recursive: true }).catch(() => {});
  }
}

export function summary(r: DriverReport): string {
  const t = r.tally;
  const fmt = (m: Record<string, number>) =>
    Object.entries(m).map(([k, v]) => `${k} ${v}`).join(", ") || "none";
  const skipped = Object.values(r.skipped).reduce((a, b) => a + b, 0);
  return [
    `fuzz seed ${r.seed}: ${r.cases} cases (from ${r.start}) in ${r.seconds.toFixed(1)} s, ` +
    `${r.casesPerSecond.toFixed(1)} cases/s (fixture ${r.fixtureSeconds.toFixed(1)} s), ` +
    `${t.failures.length} failing, ${skipped} skipped`,
    `  via: ${fmt(t.byVia)}; mean call ms: ${
      Object.entries(t.callMs).map(([k, v]) => `${k} ${(v / (t.byVia[k] ?? 1)).toFixed(1)}`)
        .join(", ")
    }`,
    `  settled after waiting: ${fmt(t.settled)}; tolerated: ${fmt(t.notes)}`,
    `  answered 0: ${fmt(t.ok)}; errors: ${fmt(t.errors)}; codes: ${fmt(t.codes)}`,
    `  unmutated cases: ${t.pristine}; fixtures rebuilt after a case broke the node: ${r.rebuilds}` +
    `; longest error msg ${t.longestMessage.chars} chars (case ${t.longestMessage.index})`,
    ...Object.entries(r.skipped).map(([k, v]) => `  ${v} x ${k}`),
  ].join("\n");
}

if (import.meta.main) {
  const o: FuzzOptions = { seed: randomSeed(), cases: 500 };
  let messages = false;
  for (const arg of Deno.args) {
    const [k, v] = arg.split(/=(.*)/s, 2);
    if (k === "--messages") messages = true;
    else if (k === "--seed") o.seed = Number(v) >>> 0;
    else if (k === "--cases") o.cases = Number(v);
    else if (k === "--start") o.start = Number(v);
    else if (k === "--case") o.only = Number(v);
    else if (k === "--process-share") o.processShare = Number(v);
    else if (k === "--via") o.via = v;
    else if (k === "--timeout-ms") o.timeoutMs = Number(v);
    else if (k === "--replay") o.replay = v;
    else {
      console.error(`unknown argument ${arg} (see the header of tests/fuzz/run.ts)`);
      Deno.exit(2);
    }
  }
  console.error(`fuzz: seed ${o.seed}`);
  const r = await runFuzz(o);
  if (messages) {
    for (const [k, v] of Object.entries(r.tally.messages).sort()) console.log(`${k}\n    ${v}`);
  }
  console.log(summary(r));
  Deno.exit(r.tally.failures.length ? 1 : 0);
}
