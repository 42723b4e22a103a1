/** Small process helpers for tests and scripts: run a command, fail loudly with its output. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Written to the command's stdin, which is then closed (none: /dev/null). */
  stdin?: string;
  env?: Record<string, string>;
  /** Only `env`, as a container runtime execs a CNI plugin. */
  clearEnv?: boolean;
  cwd?: string;
  /** Return a non-zero exit instead of throwing. */
  allowFail?: boolean;
}

export async function run(cmd: string[], opts: RunOptions = {}): Promise<RunResult> {
  const p = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    stdin: opts.stdin !== undefined ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
    env: opts.env,
    clearEnv: opts.clearEnv,
    cwd: opts.cwd,
  }).spawn();
  if (opts.stdin !== undefined) {
    const w = p.stdin.getWriter();
    await w.write(new TextEncoder().encode(opts.stdin));
    await w.close();
  }
  const out = await p.output();
  const res = {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
  if (res.code !== 0 && !opts.allowFail) {
    throw new Error(
      `${cmd.join(" ")} exited ${res.code}: ${res.stderr.trim() || res.stdout.trim()}`,
    );
  }
  return res;
}

/** Runs a shell-free sequence of `ip`/`nft`/... commands. */
export async function runAll(cmds: string[][]): Promise<void> {
  for (const c of cmds) await run(c);
}

export function randomId(n = 6): string {
  return crypto.randomUUID().replace(/-/g, "").slice(0, n);
}
