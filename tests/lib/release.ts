/**
 * An earlier release of tsnproxy, built from its git tag in this repository (never a copy
 * checked in): its tree exported with `git archive`, this checkout's npm modules and Deno
 * linked in (the dependencies of every release so far are a subset of today's), its BPF
 * objects compiled by its own build script. Cached per commit under .cache/releases.
 */
import { commandLine, run } from "./run.ts";

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");

/** The release before this one: the tag, and its commit should the clone lack tags. */
export const PREVIOUS_RELEASE = {
  version: "0.1.0",
  tag: "v0.1.0",
  commit: "594eaea92c9149a7b2e6d94af7c3a6b5263557a0",
} as const;

export interface BuiltRelease {
  version: string;
  commit: string;
  /** The exported tree. */
  dir: string;
  /** Runs the release's CLI (`deno run -A main.ts ...`), optionally in a network namespace. */
  argv(args: string[], netns?: string): string[];
}

/** The commit a tag names; undefined when the tag is not in this clone. */
async function tagCommit(tag: string): Promise<string | undefined> {
  const r = await run(["git", "-C", ROOT, "rev-parse", "--verify", "-q", `${tag}^{commit}`], {
    allowFail: true,
  });
  return r.code === 0 ? r.stdout.trim() : undefined;
}

export async function buildRelease(
  rel: { version: string; tag: string; commit: string },
  log: (line: string) => void = (l) => console.error(l),
): Promise<BuiltRelease> {
  let commit = await tagCommit(rel.tag);
  if (!commit) {
    log(`release ${rel.version}: tag ${rel.tag} not in this clone, using its commit ${rel.commit}`);
    commit = rel.commit;
  } else if (commit !== rel.commit) {
    throw new Error(`${rel.tag} names ${commit}, the test expects ${rel.commit}: update it`);
  }
  const dir = `${ROOT}/.cache/releases/${commit}`;
  const done = `${dir}/.built`;
  try {
    Deno.statSync(done);
  } catch {
    const tmp = `${dir}.tmp-${crypto.randomUUID().slice(0, 8)}`;
    Deno.mkdirSync(tmp, { recursive: true });
    await run(["sh", "-c", `git -C '${ROOT}' archive ${commit} | tar -x -C '${tmp}'`]);
    Deno.symlinkSync(`${ROOT}/node_modules`, `${tmp}/node_modules`);
    Deno.mkdirSync(`${tmp}/tools/deno`, { recursive: true });
    Deno.symlinkSync(`${ROOT}/tools/deno/node_modules`, `${tmp}/tools/deno/node_modules`);
    await run([Deno.execPath(), "task", "bpf"], { cwd: tmp });
    Deno.writeTextFileSync(`${tmp}/.built`, `${rel.version} ${commit}\n`);
    try {
      Deno.renameSync(tmp, dir);
    } catch {
      Deno.removeSync(tmp, { recursive: true }); // built by a concurrent run meanwhile
    }
    log(`release ${rel.version}: built from ${commit} in ${dir}`);
  }
  return {
    version: rel.version,
    commit,
    dir,
    argv: (args, netns) =>
      commandLine([Deno.execPath(), "run", "-A", "--quiet", `${dir}/main.ts`, ...args], { netns }),
  };
}

/** This checkout's CLI, the same way. */
export const CURRENT = {
  dir: ROOT,
  argv: (args: string[], netns?: string) =>
    commandLine([Deno.execPath(), "run", "-A", "--quiet", `${ROOT}/main.ts`, ...args], { netns }),
};
