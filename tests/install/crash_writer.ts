/**
 * Helper for crash_test.ts: rewrites the CNI config in `dir` forever (install, install with a
 * different entry, uninstall, ...) until it is SIGKILLed. Also rewrites `50-raw.conflist`
 * directly with writeFileAtomic, toggling a tsnproxy entry in and out.
 *
 *   deno run -A tests/install/crash_writer.ts <dir> rename|inplace [<kind>:<role> <skip>]
 *
 * Trace: before each file-system mutation the production code makes (open for writing, write,
 * truncate, sync, chmod, rename, remove), the writer prints `op <seq> <kind> <role> <file>
 * [<to>]` to stdout synchronously, so the line is in the pipe before the step runs and the test
 * knows, after the kill, which step was in flight (see `traceState` in crash_test.ts). Role is
 * `scratch` for a temp or journal file, `target` for anything else (`.` is the directory).
 * The instrumentation wraps the Deno API from outside; the code under test is unchanged.
 *
 * With `<kind>:<role> <skip>` the writer also stops, for good, right before the (skip+1)-th
 * such step taken while one of its writes is in flight (a scratch file of its own exists),
 * printing `pause <seq>`: the test kills it there, so that kill lands mid-write by construction.
 * After 2000 steps without a match it prints `pause-fallback <seq>` and stops anyway.
 */
import {
  apply,
  inject,
  parseCniDocument,
  planInstall,
  planUninstall,
  remove,
} from "../../src/install/conflist.ts";
import { isScratchName, writeFileAtomic } from "../../src/install/atomic.ts";

const [dir, mode, target, skipArg] = Deno.args;
const inPlace = mode === "inplace";
const raw = `${dir}/50-raw.conflist`;
const hasRaw = await Deno.stat(raw).then(() => true, () => false);

const enc = new TextEncoder();
function say(line: string): void {
  const bytes = enc.encode(line + "\n");
  let off = 0;
  while (off < bytes.length) off += Deno.stdout.writeSync(bytes.subarray(off));
}

function base(path: string | URL): string {
  const p = String(path);
  return p === dir ? "." : p.slice(p.lastIndexOf("/") + 1);
}

/** This process's scratch files that exist now (created, not yet renamed or removed). */
const inFlight = new Set<string>();
let seq = 0;
let skip = Number(skipArg ?? 0);

/** Reports a step before it runs; stops the process here when it is the targeted step. */
function step(kind: string, file: string, to?: string): void {
  const role = file === "." ? "dir" : isScratchName(file) ? "scratch" : "target";
  seq++;
  say(`op ${seq} ${kind} ${role} ${file}${to === undefined ? "" : ` ${to}`}`);
  const hit = target === `${kind}:${role}` && inFlight.size > 0 && skip-- === 0;
  if (target !== undefined && (hit || seq >= 2000)) {
    say(`${hit ? "pause" : "pause-fallback"} ${seq}`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); // until SIGKILL
  }
}

const fileNames = new WeakMap<Deno.FsFile, string>();
const realOpen = Deno.open;
Deno.open = async (path: string | URL, options?: Deno.OpenOptions): Promise<Deno.FsFile> => {
  const file = base(path);
  const creates = options?.create || options?.createNew;
  if (options?.write || options?.append || options?.truncate || creates) {
    step(creates ? "create" : "open", file);
  }
  const f = await realOpen(path, options);
  if (creates && isScratchName(file)) inFlight.add(file);
  fileNames.set(f, file);
  return f;
};
const realRename = Deno.rename;
Deno.rename = async (from: string | URL, to: string | URL): Promise<void> => {
  step("rename", base(from), base(to));
  await realRename(from, to);
  inFlight.delete(base(from));
  if (isScratchName(base(to))) inFlight.add(base(to));
};
const realRemove = Deno.remove;
Deno.remove = async (path: string | URL, options?: Deno.RemoveOptions): Promise<void> => {
  step("remove", base(path));
  try {
    await realRemove(path, options);
  } finally {
    inFlight.delete(base(path));
  }
};
const realChmod = Deno.chmod;
Deno.chmod = (path: string | URL, m: number): Promise<void> => {
  step("chmod", base(path));
  return realChmod(path, m);
};
const proto = Deno.FsFile.prototype;
const { write, truncate, sync, syncData } = proto;
proto.write = function (p: Uint8Array): Promise<number> {
  step("write", fileNames.get(this) ?? "?");
  return write.call(this, p);
};
proto.truncate = function (len?: number): Promise<void> {
  step("truncate", fileNames.get(this) ?? "?");
  return truncate.call(this, len);
};
proto.sync = function (): Promise<void> {
  step("sync", fileNames.get(this) ?? "?");
  return sync.call(this);
};
proto.syncData = function (): Promise<void> {
  step("sync", fileNames.get(this) ?? "?");
  return syncData.call(this);
};

function entry() {
  // Varying sizes make the file grow and shrink (the in-place padding path).
  return {
    type: "tsnproxy",
    tsnInterface: "tsn0",
    pad: "x".repeat(Math.floor(Math.random() * 400)),
  };
}

say("ready");
for (let i = 0;; i++) {
  const plan = i % 3 === 2
    ? await planUninstall({ confDir: dir })
    : await planInstall({ confDir: dir, entry: entry() });
  await apply(plan, { inPlace });
  if (hasRaw) {
    const doc = parseCniDocument(raw, await Deno.readTextFile(raw));
    const next = doc.plugins.some((p) => p.type === "tsnproxy")
      ? remove(doc).text
      : inject(doc, entry()).text;
    await writeFileAtomic(raw, next, { inPlace });
  }
}
