/**
 * The `tsnproxy` executable in the CNI bin dir. The runtime execs it per pod with an almost
 * empty environment, so it must be self-contained:
 *
 * - compiled binary (`deno compile`, build_info.isCompiled()): a byte copy of ourselves;
 * - `deno run` of a checkout: a small launcher script that execs this checkout's
 *   scripts/tsnproxy by absolute path (which runs dist/tsnproxy when built, else deno run).
 *
 * Written atomically (temp + rename: the runtime never execs a half-written file, and a
 * running plugin keeps its old inode), and only when the content or mode differs, so a
 * second install changes nothing.
 */
import { isCompiled } from "../build_info.ts";
import { TsnproxyError } from "../errors.ts";
import { removeFileDurable, writeFileAtomic } from "./atomic.ts";

export const BINARY_NAME = "tsnproxy";
/** First lines of the launcher; uninstall and doctor recognise it by this. */
export const LAUNCHER_MARK = "# tsnproxy CNI plugin launcher (written by `tsnproxy install`)";

export interface BinarySource {
  kind: "compiled" | "launcher";
  /** What the file execs / is a copy of. */
  from: string;
  bytes: Uint8Array;
}

/** The checkout this module belongs to (only meaningful under `deno run`). */
export function checkoutRoot(): string {
  return new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
}

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'"'"'`)}'`;
}

export function launcherText(script: string): string {
  return `#!/bin/sh\n${LAUNCHER_MARK}\nexec ${shellQuote(script)} "$@"\n`;
}

/** What install puts in the bin dir, from the running tsnproxy. */
export async function binarySource(): Promise<BinarySource> {
  if (isCompiled()) {
    const from = Deno.execPath();
    return { kind: "compiled", from, bytes: await Deno.readFile(from) };
  }
  const from = `${checkoutRoot()}/scripts/tsnproxy`;
  return { kind: "launcher", from, bytes: new TextEncoder().encode(launcherText(from)) };
}

export interface BinaryPlan {
  path: string;
  source: BinarySource;
  action: "create" | "update" | "none";
  why: string;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function binaryPath(binDir: string): string {
  return `${binDir.replace(/\/+$/, "")}/${BINARY_NAME}`;
}

export async function planBinary(binDir: string, source: BinarySource): Promise<BinaryPlan> {
  const path = binaryPath(binDir);
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      return { path, source, action: "create", why: `install the ${source.kind}` };
    }
    throw e;
  }
  if (info.isSymlink) {
    return { path, source, action: "update", why: "replace a symlink with the " + source.kind };
  }
  if (info.size !== source.bytes.length) {
    return { path, source, action: "update", why: "content differs" };
  }
  if (!sameBytes(await Deno.readFile(path), source.bytes)) {
    return { path, source, action: "update", why: "content differs" };
  }
  if (((info.mode ?? 0) & 0o777) !== 0o755) {
    return { path, source, action: "update", why: "mode is not 0755" };
  }
  return { path, source, action: "none", why: "up to date" };
}

export async function applyBinary(plan: BinaryPlan): Promise<void> {
  if (plan.action === "none") return;
  const dir = plan.path.slice(0, plan.path.lastIndexOf("/"));
  try {
    await Deno.mkdir(dir, { recursive: true });
  } catch (e) {
    throw new TsnproxyError(
      `cannot create the CNI bin dir ${dir}: ${e instanceof Error ? e.message : String(e)}`,
      "run as root, or pass --cni-bin-dir with the runtime's plugin directory",
    );
  }
  // Temp file + rename: replaces a file or a symlink (never its target) in one step, and a
  // plugin the runtime is executing right now keeps running from the old inode.
  await writeFileAtomic(plan.path, plan.source.bytes, { mode: 0o755 });
  await Deno.chmod(plan.path, 0o755);
}

/** What uninstall does with the bin dir's tsnproxy. */
export async function planRemoveBinary(binDir: string): Promise<{ path: string; exists: boolean }> {
  const path = binaryPath(binDir);
  try {
    await Deno.lstat(path);
    return { path, exists: true };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { path, exists: false };
    throw e;
  }
}

export async function removeBinary(path: string): Promise<boolean> {
  return await removeFileDurable(path);
}
