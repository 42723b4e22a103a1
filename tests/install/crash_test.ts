/**
 * Crash safety of the CNI config writer: a subprocess rewrites the config in a loop (both
 * the rename and the in-place mode) and is SIGKILLed at random points, dozens of times. After
 * every kill each *.conf/*.conflist/*.json must be valid JSON whose chain is the original one
 * with the tsnproxy entry fully present (last, intact) or fully absent; then recovery plus
 * one install converges to no-change and uninstall restores the original files.
 */
import assert from "node:assert/strict";
import { apply, parseCniDocument, planInstall, planUninstall } from "../../src/install/conflist.ts";
import {
  isScratchName,
  journalPath,
  recoverInterruptedWrites,
  writeFileAtomic,
} from "../../src/install/atomic.ts";

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

async function crashLoop(files: Record<string, string>, mode: "rename" | "inplace") {
  const { dir, chains } = await setup(files);
  const original = await snapshot(dir);
  let sawEntry = 0;
  let midWrite = 0; // kills that left a temp or journal behind: caught inside a write
  for (let k = 0; k < KILLS; k++) {
    const child = new Deno.Command(DENO, {
      args: ["run", "-A", "--no-check", WRITER, dir, mode],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const reader = child.stdout.getReader();
    const first = await reader.read(); // "ready": the loop is about to start
    assert.match(new TextDecoder().decode(first.value ?? new Uint8Array()), /ready/);
    await new Promise((r) => setTimeout(r, Math.random() * 40));
    try {
      child.kill("SIGKILL");
    } catch {
      // Exited before the kill: it failed on its own; its stderr says why (asserted below).
    }
    const status = await child.status;
    reader.releaseLock();
    await child.stdout.cancel();
    const err = new TextDecoder().decode(
      (await new Response(child.stderr).arrayBuffer()) as ArrayBuffer,
    );
    assert.equal(status.signal, "SIGKILL", `writer died on its own: ${err}`);
    await assertConsistent(dir, chains, `${mode} kill #${k}`);
    for await (const e of Deno.readDir(dir)) if (isScratchName(e.name)) midWrite++;
    const snap = await snapshot(dir);
    if (Object.values(snap).some((t) => t.includes('"tsnproxy"'))) sawEntry++;
  }
  assert.ok(sawEntry > 0, "the writer never got far enough to write an entry: kills too early");
  if (Deno.env.get("TSNPROXY_CRASH_VERBOSE")) {
    console.log(`${mode}: ${midWrite} kills inside a write`);
  }

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
