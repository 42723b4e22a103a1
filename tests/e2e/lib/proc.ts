/**
 * Small helpers shared by the e2e fixtures (commands run through tests/lib/run.ts): poll for a
 * condition, find what the runtimes left mounted under a directory, cgroups, the cache.
 */
import { run } from "../../lib/run.ts";

/** Thrown by a {@link waitFor} check to stop waiting at once (e.g. the daemon died). */
export class GiveUp extends Error {}

/**
 * Poll `check` until it returns a value other than undefined, or throw after `timeoutMs`.
 * Errors thrown by `check` are retried (and reported on timeout), except {@link GiveUp}.
 */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 30_000,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (e) {
      if (e instanceof GiveUp) throw e;
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Decode the octal escapes (\040 for a space...) the kernel uses in /proc/self/mountinfo. */
function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Mount points at or below `dir`, deepest first (so they can be unmounted in order). */
export async function mountsUnder(dir: string): Promise<string[]> {
  const prefix = dir.endsWith("/") ? dir : dir + "/";
  const text = await Deno.readTextFile("/proc/self/mountinfo");
  const points = text.split("\n").filter(Boolean).map((l) => unescapeMount(l.split(" ")[4]))
    .filter((p) => p === dir || p.startsWith(prefix));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/** Unmount everything at or below `dir` (lazily when busy). Returns what was unmounted. */
export async function unmountAll(dir: string): Promise<string[]> {
  const done: string[] = [];
  for (let round = 0; round < 5; round++) {
    const points = await mountsUnder(dir);
    if (points.length === 0) break;
    for (const p of points) {
      const r = await run(["umount", p], { allowFail: true });
      if (r.code !== 0) await run(["umount", "-l", p], { allowFail: true });
      done.push(p);
    }
  }
  return done;
}

/** Remove a network namespace file that `ip netns add` or a runtime bind-mounted. */
export async function removeNetnsFile(path: string): Promise<void> {
  if (!(await exists(path))) return;
  await run(["umount", path], { allowFail: true });
  await run(["umount", "-l", path], { allowFail: true });
  try {
    await Deno.remove(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

/** Remove a directory tree after unmounting whatever is mounted inside it. */
export async function removeTree(dir: string): Promise<void> {
  await unmountAll(dir);
  try {
    await Deno.remove(dir, { recursive: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    // A lazily unmounted filesystem can keep a directory busy for a moment.
    await new Promise((r) => setTimeout(r, 200));
    await unmountAll(dir);
    await Deno.remove(dir, { recursive: true });
  }
}

/** Pids of running processes whose command line contains `needle` (e.g. a socket path). */
export async function pidsWithCmdline(needle: string): Promise<number[]> {
  const pids: number[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const pid = Number(e.name);
    if (pid === Deno.pid) continue;
    try {
      const cmd = (await Deno.readTextFile(`/proc/${pid}/cmdline`)).replaceAll("\0", " ");
      if (cmd.includes(needle)) pids.push(pid);
    } catch { /* exited meanwhile */ }
  }
  return pids;
}

/** Root of the repository (tests/e2e/lib/ is three levels down). */
export function repoRoot(): string {
  return new URL("../../../", import.meta.url).pathname.replace(/\/$/, "");
}

/**
 * Directory for artefacts worth keeping between runs (CRI descriptors, the busybox image):
 * $TSNPROXY_E2E_CACHE, else <repo>/.cache/e2e (git-ignored).
 */
export async function cacheDir(): Promise<string> {
  const dir = Deno.env.get("TSNPROXY_E2E_CACHE") ?? `${repoRoot()}/.cache/e2e`;
  await Deno.mkdir(dir, { recursive: true });
  return dir;
}

/** Write a file through a temporary name and a rename, so concurrent readers never see half. */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const tmp = `${path}.tmp-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  if (typeof data === "string") await Deno.writeTextFile(tmp, data);
  else await Deno.writeFile(tmp, data);
  await Deno.rename(tmp, path);
}

/** A cheap identity for a binary: size, mtime and inode, to key cached artefacts on. */
export async function fileStamp(path: string): Promise<string> {
  const st = await Deno.stat(path);
  return `${st.size}-${st.mtime?.getTime() ?? 0}-${st.ino ?? 0}`;
}

/**
 * Remove the cgroup `path` (e.g. "/tsnproxy-e2e-x") and its empty children in every mounted
 * hierarchy (cgroup v1 controllers, the v1 "systemd"/"unified" ones, or a v2 root). Only empty
 * cgroups can go: returns the ones that could not be removed.
 */
export async function removeCgroup(path: string): Promise<string[]> {
  const rel = path.replace(/^\/+/, "");
  if (!rel || rel.includes("..")) throw new Error(`refusing to remove cgroup ${path}`);
  const roots = ["/sys/fs/cgroup"];
  for await (const e of Deno.readDir("/sys/fs/cgroup")) {
    if (e.isDirectory) roots.push(`/sys/fs/cgroup/${e.name}`);
  }
  const failed: string[] = [];
  for (const root of roots) {
    const top = `${root}/${rel}`;
    if (!(await exists(top))) continue;
    const dirs: string[] = [];
    const walk = async (d: string) => {
      dirs.push(d);
      for await (const e of Deno.readDir(d)) if (e.isDirectory) await walk(`${d}/${e.name}`);
    };
    await walk(top);
    for (const d of dirs.sort((a, b) => b.length - a.length)) {
      try {
        await Deno.remove(d); // rmdir
      } catch {
        failed.push(d);
      }
    }
  }
  return failed;
}
