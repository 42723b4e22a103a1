/**
 * Crash safety of the CNI config writer: a subprocess (crash_writer.ts) rewrites the config in
 * a loop (both the rename and the in-place mode) and is SIGKILLed, dozens of times. Half the
 * kills are aimed: the writer stops itself right before a chosen step of a write in flight (the
 * temp's write, fsync or rename; in place also the inode's open, write and fsync under the
 * journal, and the journal's removal) and is killed there; the other half land at random times.
 * The writer traces every file-system step before taking it, so each kill is classified from
 * the trace, and a mid-write one is checked against the disk (its scratch files are there).
 * The test asserts that every aimed kill landed mid-write at its step and that each step was
 * hit. After every kill each *.conf/*.conflist/*.json must be valid JSON whose chain is the
 * original one with the tsnproxy entry fully present (last, intact) or fully absent; then
 * recovery plus one install converges to no-change and uninstall restores the original files.
 */
import assert from "node:assert/strict";
import { apply, parseCniDocument, planInstall, planUninstall } from "../../src/install/conflist.ts";
import {
  isScratchName,
  journalPath,
  recoverInterruptedWrites,
  writeFileAtomic,
} from "../../src/install/atomic.ts";
import { type Child, spawn } from "../lib/run.ts";

const DENO = Deno.execPath();
const WRITER = new URL("./crash_writer.ts", import.meta.url).pathname;
const FIXTURES = new URL("../fixtures/cni/", import.meta.url).pathname;
const KILLS = Number(Deno.env.get("TSNPROXY_CRASH_KILLS") ?? 30);

type Json = unknown;

async function setup(
  files: Record<string, string>,
): Promise<{ dir: string; chains: Map<string, Json[]> }> {
  const dir = await Deno.makeTempDir({ prefix: "tsnproxy-crash-" });
  const chains = new Map<string, Json[]>();
  for (const [name, fixture] of Object.entries(files)) {
    const text = await Deno.readTextFile(`${FIXTURES}${fixture}`);
    await Deno.writeTextFile(`${dir}/${name}`, text);
    const v = JSON.parse(text);
    const chain = v.plugins ?? [v];
    chains.set(name, chain);
    if (!v.plugins) chains.set(name.replace(/\.(conf|json)$/, ".conflist"), chain); // converted form
  }
  return { dir, chains };
}

async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for await (const e of Deno.readDir(dir)) {
    out[e.name] = await Deno.readTextFile(`${dir}/${e.name}`);
  }
  return out;
}

/** Every config the runtime could load is valid, with our entry all there or not at all. */
async function assertConsistent(dir: string, chains: Map<string, Json[]>, when: string) {
  for await (const e of Deno.readDir(dir)) {
    if (!/\.(conf|conflist|json)$/.test(e.name)) continue;
    const text = await Deno.readTextFile(`${dir}/${e.name}`);
    const ctx = `${when}: ${e.name}: ${JSON.stringify(text.slice(0, 200))}`;
    let v: { plugins?: Json[] };
    try {
      v = JSON.parse(text);
      parseCniDocument(`${dir}/${e.name}`, text);
    } catch (err) {
      assert.fail(`${ctx}: not a valid config: ${err}`);
    }
    const expected = chains.get(e.name);
    assert.ok(expected, `${ctx}: unexpected file`);
    const chain = v.plugins ?? [v];
    const ours = chain.filter((p) => (p as { type?: string }).type === "tsnproxy");
    assert.ok(ours.length <= 1, `${ctx}: ${ours.length} entries`);
    if (ours.length === 1) {
      assert.equal(chain.at(-1), ours[0], `${ctx}: entry not last`);
      const o = ours[0] as Record<string, unknown>;
      assert.deepEqual(Object.keys(o), ["type", "tsnInterface", "pad"], ctx);
      assert.equal(o.tsnInterface, "tsn0", ctx);
      assert.match(String(o.pad), /^x*$/, ctx);
    }
    assert.deepEqual(chain.filter((p) => !ours.includes(p)), expected, ctx);
  }
}

/** One file-system step the writer reported (see crash_writer.ts). */
interface Step {
  seq: number;
  kind: string;
  role: string;
  file: string;
  to?: string;
}

/** The writer's trace: its steps in order and whether it stopped itself before the last one. */
function parseTrace(text: string): { steps: Step[]; paused: boolean; fallback: boolean } {
  const steps: Step[] = [];
  let paused = false;
  let fallback = false;
  for (const line of text.split("\n")) {
    const m = /^op (\d+) (\S+) (\S+) (\S+)(?: (\S+))?$/.exec(line);
    if (m) steps.push({ seq: Number(m[1]), kind: m[2], role: m[3], file: m[4], to: m[5] });
    else if (/^pause \d+$/.test(line)) paused = true;
    else if (/^pause-fallback \d+$/.test(line)) fallback = true;
  }
  return { steps, paused, fallback };
}

/** The writer's own scratch files (temps, journals) that exist once `steps` have all run. */
function scratchAfter(steps: Step[]): Set<string> {
  const live = new Set<string>();
  for (const s of steps) {
    if (s.kind === "create" && isScratchName(s.file)) live.add(s.file);
    if (s.kind === "rename") {
      live.delete(s.file);
      if (s.to !== undefined && isScratchName(s.to)) live.add(s.to);
    }
    if (s.kind === "remove") live.delete(s.file);
  }
  return live;
}

/** Starts the writer; its output is collected as it comes (it never blocks on the pipe). */
function startWriter(dir: string, mode: string, target?: { step: string; skip: number }): Child {
  return spawn([
    ...[DENO, "run", "-A", "--no-check", WRITER, dir, mode],
    ...(target ? [target.step, String(target.skip)] : []),
  ]);
}

/** Resolves true once the writer's stdout matches `re`, false if it exited first. */
function said(w: Child, re: RegExp): Promise<boolean> {
  return w.until((c) => re.test(c.stdout), 600_000);
}

/**
 * Steps a kill is aimed at, per mode: inside the temp write, its fsync and its rename; in
 * place also the inode's open, write and fsync while the journal exists, and the journal's
 * removal. Every other kill lands at a random time.
 */
const TARGETS = {
  rename: ["write:scratch", "sync:scratch", "rename:scratch"],
  inplace: [
    "write:scratch",
    "rename:scratch",
    "open:target",
    "write:target",
    "sync:target",
    "remove:scratch",
  ],
} as const;

async function crashLoop(files: Record<string, string>, mode: "rename" | "inplace") {
  const { dir, chains } = await setup(files);
  const original = await snapshot(dir);
  let sawEntry = 0;
  let midWrite = 0; // kills that landed while one of the writer's writes was in flight
  let randomKills = 0;
  let randomMidWrite = 0;
  const hit = new Map<string, number>(); // targeted step -> kills that landed right before it
  for (let k = 0; k < KILLS; k++) {
    const targets = TARGETS[mode];
    const target = k % 2 === 0
      ? { step: targets[(k / 2) % targets.length], skip: Math.floor(Math.random() * 4) }
      : undefined;
    const w = startWriter(dir, mode, target);
    const ctx = `${mode} kill #${k}${target ? ` before ${target.step} (skip ${target.skip})` : ""}`;
    // "ready": the loop is about to start; a targeted writer then stops itself at its step.
    assert.ok(await said(w, /^ready$/m), `${ctx}: writer exited before its loop`);
    if (target) assert.ok(await said(w, /^pause(-fallback)? \d+$/m), `${ctx}: writer exited`);
    else await new Promise((r) => setTimeout(r, Math.random() * 40));
    // Exited before the kill: it failed on its own; its stderr says why (asserted below).
    const out = await w.stop("SIGKILL");
    const trace = parseTrace(out.stdout);
    assert.equal(out.signal, "SIGKILL", `${ctx}: writer died on its own: ${out.stderr}`);

    // Where did the kill land? Every step before the last reported one has completed, so the
    // scratch files they leave existed at the kill: a write was in flight (begun, not done).
    const last = trace.steps.at(-1);
    const live = scratchAfter(trace.steps.slice(0, -1));
    const landedMidWrite = last !== undefined && live.size > 0;
    if (target) {
      assert.ok(!trace.fallback, `${ctx}: the writer never reached ${target.step}`);
      assert.ok(trace.paused && last, `${ctx}: the writer did not stop at its step`);
      assert.equal(`${last.kind}:${last.role}`, target.step, ctx);
      assert.ok(landedMidWrite, `${ctx}: no write in flight at ${JSON.stringify(last)}`);
      hit.set(target.step, (hit.get(target.step) ?? 0) + 1);
    } else {
      randomKills++;
      if (landedMidWrite) randomMidWrite++;
    }
    if (landedMidWrite) {
      midWrite++;
      // The partial write is on disk: each in-flight scratch file exists (unless the step in
      // flight, not held back, was the rename or remove that retires it).
      const names = new Set((await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name));
      for (const f of live) {
        const retiring = !trace.paused && ["rename", "remove"].includes(last.kind) &&
          last.file === f;
        if (!retiring) assert.ok(names.has(f), `${ctx}: in-flight ${f} is not on disk`);
      }
    }
    await assertConsistent(dir, chains, ctx);
    const snap = await snapshot(dir);
    if (Object.values(snap).some((t) => t.includes('"tsnproxy"'))) sawEntry++;
  }
  const targeted = Math.ceil(KILLS / 2);
  console.log(
    `${mode}: ${midWrite} of ${KILLS} kills landed mid-write: ${targeted} aimed ` +
      `(${[...hit].map(([s, n]) => `${s} ${n}`).join(", ")}), ` +
      `${randomMidWrite} of ${randomKills} random`,
  );
  assert.ok(midWrite >= targeted, `only ${midWrite} of ${KILLS} kills landed mid-write`);
  for (const step of TARGETS[mode].slice(0, targeted)) {
    assert.ok(hit.get(step), `no kill landed right before ${step}`);
  }
  assert.ok(sawEntry > 0, "the writer never got far enough to write an entry: kills too early");

  // Convergence: recover, install twice (second is a no-op), uninstall restores the original.
  await recoverInterruptedWrites(dir);
  await assertConsistent(dir, chains, `${mode} after recovery`);
  const entry = { type: "tsnproxy", tsnInterface: "tsn0", pad: "" };
  await apply(await planInstall({ confDir: dir, entry }), { inPlace: mode === "inplace" });
  assert.deepEqual((await planInstall({ confDir: dir, entry })).changes, []);
  await apply(await planUninstall({ confDir: dir }), { inPlace: mode === "inplace" });
  const after = await snapshot(dir);
  // The raw file is toggled outside install; bring it back the same way to compare.
  if (
    after["50-raw.conflist"] !== undefined &&
    after["50-raw.conflist"] !== original["50-raw.conflist"]
  ) {
    const { remove } = await import("../../src/install/conflist.ts");
    const doc = parseCniDocument("50-raw.conflist", after["50-raw.conflist"]);
    after["50-raw.conflist"] = remove(doc).text;
  }
  assert.deepEqual(after, original);
  await Deno.remove(dir, { recursive: true });
}

for (const mode of ["rename", "inplace"] as const) {
  Deno.test({
    name: `crash: SIGKILL during conflist rewrites leaves valid configs (${mode})`,
    sanitizeResources: false,
    fn: () =>
      crashLoop({
        "10-flannel.conflist": "flannel/10-flannel.conflist",
        "50-raw.conflist": "kindnet/10-kindnet.conflist",
      }, mode),
  });
  Deno.test({
    name: `crash: SIGKILL during .conf conversion and restore (${mode})`,
    sanitizeResources: false,
    fn: () =>
      crashLoop({
        "10-mynet.conf": "single-conf/10-mynet.conf",
        "99-loopback.conf": "single-conf/99-loopback.conf",
      }, mode),
  });
}

// Deterministic states an interrupted in-place write can leave, and what recovery does.
const OLD = '{"cniVersion":"0.3.1","name":"n","plugins":[{"type":"bridge"},{"type":"portmap"}]}';
const NEW = '{"cniVersion":"0.3.1","name":"n","plugins":[{"type":"bridge"}]}';

async function journalState(cur: string): Promise<{ dir: string; path: string }> {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/10-n.conflist`;
  await Deno.writeTextFile(path, cur);
  const b64 = (s: string) => btoa(s);
  await Deno.writeTextFile(
    journalPath(path),
    JSON.stringify({ v: 1, target: "10-n.conflist", old: b64(OLD), new: b64(NEW) }),
  );
  return { dir, path };
}

Deno.test("atomic: recovery finishes a torn or padded in-place write", async () => {
  const padded = NEW.padEnd(OLD.length, " ");
  const torn = NEW.slice(0, 20) + OLD.slice(20); // first bytes new, tail old
  for (const cur of [OLD, padded, torn, NEW]) {
    const { dir, path } = await journalState(cur);
    const r = await recoverInterruptedWrites(dir);
    assert.deepEqual(r.map((x) => x.action), [cur === NEW ? "already-complete" : "completed"]);
    assert.equal(await Deno.readTextFile(path), NEW);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["10-n.conflist"]);
  }
});

Deno.test("atomic: recovery leaves a file someone else rewrote alone", async () => {
  const theirs = '{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"cilium-cni"}]}';
  const { dir, path } = await journalState(theirs);
  assert.deepEqual((await recoverInterruptedWrites(dir)).map((x) => x.action), ["discarded"]);
  assert.equal(await Deno.readTextFile(path), theirs);
});

Deno.test("atomic: writes keep or set the mode, in place keeps the inode, temps are cleaned", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/a.conflist`;
  await writeFileAtomic(path, "{}", { mode: 0o640 });
  assert.equal((await Deno.stat(path)).mode! & 0o777, 0o640);
  await writeFileAtomic(path, "{ }");
  assert.equal((await Deno.stat(path)).mode! & 0o777, 0o640);
  const ino = (await Deno.stat(path)).ino;
  await writeFileAtomic(path, '{"a":1}', { inPlace: true });
  await writeFileAtomic(path, "{}", { inPlace: true }); // shrinks: padded, then truncated
  assert.equal((await Deno.stat(path)).ino, ino);
  assert.equal(await Deno.readTextFile(path), "{}");
  await writeFileAtomic(path, "[]");
  assert.notEqual((await Deno.stat(path)).ino, ino);
  // A temp from a dead writer (pid 999999999 cannot exist) is removed; names never match CNI.
  const stale = `${dir}/.a.conflist.tsnproxy-tmp.999999999.abcdef`;
  await Deno.writeTextFile(stale, "{");
  assert.ok(!/\.(conf|conflist|json)$/.test(stale));
  assert.deepEqual((await recoverInterruptedWrites(dir)).map((x) => x.action), ["temp-removed"]);
  assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["a.conflist"]);
});
