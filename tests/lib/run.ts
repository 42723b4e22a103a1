/**
 * The one process runner for the tests, the benchmarks, the demo and the programs tests/vm
 * runs inside its guests: run a command to completion and collect its output (`run`, and
 * `runSync` for the rare caller that cannot await), or start a long-running child and stop it
 * (`spawn`); either one optionally inside a network namespace.
 */

export interface RunResult {
  code: number;
  /** The signal that ended it (null: it exited). */
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
  /** Killed because it outran `timeoutMs`. */
  timedOut: boolean;
}

/** Where and with what a command runs. */
export interface ExecOptions {
  env?: Record<string, string>;
  /** Only `env`, as a container runtime execs a CNI plugin. */
  clearEnv?: boolean;
  cwd?: string;
  /**
   * Run inside this network namespace: a name under /run/netns, or a path. Entered with
   * `nsenter --net`, which keeps this process's mounts (the bpf filesystem, /sys).
   */
  netns?: string;
  /**
   * With `netns` (a name): enter it with `ip netns exec` instead, which mounts the
   * namespace's own /sys (its interfaces under /sys/class/net) over this one's.
   */
  netnsSysfs?: boolean;
}

export interface RunOptions extends ExecOptions {
  /** Written to the command's stdin, which is then closed (none: /dev/null). */
  stdin?: string | Uint8Array;
  /** Return a non-zero exit (or a kill) instead of throwing. */
  allowFail?: boolean;
  /** Kill it (SIGKILL) after this many milliseconds (default RUN_TIMEOUT_MS). */
  timeoutMs?: number;
}

/** How long run() lets a command take unless told otherwise: every wait is bounded, so a hung
 * command fails its test with its output instead of stalling the suite. */
export const RUN_TIMEOUT_MS = 10 * 60_000;

const NETNS_DIR = "/run/netns";

/** A network namespace's path: a name under /run/netns, or a path as it is. */
export function netnsPath(ns: string): string {
  return ns.startsWith("/") ? ns : `${NETNS_DIR}/${ns}`;
}

/** argv as it runs: prefixed with what enters `o.netns`. */
export function commandLine(argv: string[], o: ExecOptions = {}): string[] {
  if (o.netns === undefined) return argv;
  if (o.netnsSysfs) {
    const name = o.netns.startsWith(`${NETNS_DIR}/`)
      ? o.netns.slice(NETNS_DIR.length + 1)
      : o.netns;
    if (name.includes("/")) throw new Error(`netnsSysfs needs a namespace name, not ${o.netns}`);
    return ["ip", "netns", "exec", name, ...argv];
  }
  return ["nsenter", `--net=${netnsPath(o.netns)}`, "--", ...argv];
}

type Stdio = "piped" | "null" | "inherit";

function command(
  argv: string[],
  o: ExecOptions,
  stdio: { stdin: Stdio; stdout: Stdio; stderr: Stdio },
): Deno.Command {
  const [cmd, ...args] = commandLine(argv, o);
  return new Deno.Command(cmd, {
    args,
    env: o.env,
    clearEnv: o.clearEnv,
    cwd: o.cwd,
    ...stdio,
  });
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const bytes = (d: string | Uint8Array) => typeof d === "string" ? encoder.encode(d) : d;

function failure(argv: string[], r: RunResult, timeoutMs?: number): Error {
  const how = r.timedOut
    ? `was killed after ${timeoutMs} ms`
    : r.signal
    ? `was killed by ${r.signal}`
    : `exited ${r.code}`;
  return new Error(`${argv.join(" ")} ${how}: ${r.stderr.trim() || r.stdout.trim()}`);
}

/** Runs argv to completion; throws (with its output) when it fails, unless `allowFail`. */
export async function run(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
  const child = command(argv, opts, {
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let timedOut = false;
  const timeoutMs = opts.timeoutMs ?? RUN_TIMEOUT_MS;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, timeoutMs);
  // Written while the output is read; a child that stops reading early tells by its exit.
  const written = opts.stdin === undefined ? undefined : (async () => {
    const w = child.stdin.getWriter();
    try {
      await w.write(bytes(opts.stdin!));
      await w.close();
    } catch { /* the command stopped reading */ }
  })();
  try {
    const out = await child.output();
    await written;
    const r: RunResult = {
      code: out.code,
      signal: out.signal,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
      timedOut,
    };
    if (!out.success && !opts.allowFail) throw failure(argv, r, timeoutMs);
    return r;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * run() for a caller that cannot await (a synchronous callback of the code under test): no
 * stdin, no timeout.
 */
export function runSync(
  argv: string[],
  opts: ExecOptions & { allowFail?: boolean } = {},
): RunResult {
  const out = command(argv, opts, { stdin: "null", stdout: "piped", stderr: "piped" })
    .outputSync();
  const r: RunResult = {
    code: out.code,
    signal: out.signal,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
    timedOut: false,
  };
  if (!out.success && !opts.allowFail) throw failure(argv, r);
  return r;
}

/** Whether `cmd` can be run at all (its exit code does not matter): a tool probe. */
export async function installed(cmd: string, args = ["--version"]): Promise<boolean> {
  try {
    await run([cmd, ...args], { allowFail: true });
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

export interface SpawnOptions extends ExecOptions {
  /** "piped": write() and closeStdin(); a string or bytes: written, then closed. */
  stdin?: "piped" | "null" | string | Uint8Array;
  /** "piped" (default): collected as it comes (`stdout`, `until`, `stop`). */
  stdout?: Stdio;
  stderr?: Stdio;
}

/**
 * A long-running child (a traffic sink, a daemon, an agent, a sender): its piped output is
 * collected as it comes, so it never blocks on a full pipe; stop() ends it and waits for it.
 * The owner stops it (`await using` does it at the end of the scope).
 */
export class Child {
  /** Everything it wrote to stdout so far (when piped). */
  stdout = "";
  /** Everything it wrote to stderr so far (when piped). */
  stderr = "";
  /** stdout and stderr as they arrived. */
  output = "";
  readonly #process: Deno.ChildProcess;
  /** Resolves with its exit status. */
  readonly status: Promise<Deno.CommandStatus>;
  #exited?: Deno.CommandStatus;
  #collected: Promise<unknown>;
  #outputEnded = false;
  #wake: Array<() => void> = [];
  #writer?: WritableStreamDefaultWriter<Uint8Array>;
  #stdinPiped: boolean;

  constructor(readonly argv: string[], opts: SpawnOptions = {}) {
    const given = opts.stdin !== undefined && opts.stdin !== "piped" && opts.stdin !== "null";
    this.#stdinPiped = given || opts.stdin === "piped";
    this.#process = command(argv, opts, {
      stdin: this.#stdinPiped ? "piped" : "null",
      stdout: opts.stdout ?? "piped",
      stderr: opts.stderr ?? "piped",
    }).spawn();
    this.status = this.#process.status.then((s) => {
      this.#exited = s;
      this.#notify();
      return s;
    });
    const collect = async (s: ReadableStream<Uint8Array>, to: "stdout" | "stderr") => {
      for await (const text of s.pipeThrough(new TextDecoderStream())) {
        this[to] += text;
        this.output += text;
        this.#notify();
      }
    };
    this.#collected = Promise.all([
      (opts.stdout ?? "piped") === "piped" ? collect(this.#process.stdout, "stdout") : undefined,
      (opts.stderr ?? "piped") === "piped" ? collect(this.#process.stderr, "stderr") : undefined,
    ]).finally(() => {
      this.#outputEnded = true;
      this.#notify();
    });
    if (given) {
      this.write(opts.stdin as string | Uint8Array).then(() => this.closeStdin());
    }
  }

  get pid(): number {
    return this.#process.pid;
  }

  /** Its exit status once it has exited. */
  get exited(): Deno.CommandStatus | undefined {
    return this.#exited;
  }

  #notify(): void {
    for (const w of this.#wake.splice(0)) w();
  }

  /** Writes to its stdin (spawned with stdin "piped"); a child that stopped reading is ignored. */
  async write(data: string | Uint8Array): Promise<void> {
    this.#writer ??= this.#process.stdin.getWriter();
    await this.#writer.write(bytes(data)).catch(() => {});
  }

  async closeStdin(): Promise<void> {
    this.#writer ??= this.#process.stdin.getWriter();
    await this.#writer.close().catch(() => {});
  }

  /**
   * Waits until its output (stdout and stderr) matches `re` (or `pred` holds): true; false if
   * it exited and its output ended first. Throws, with the output, after `timeoutMs`.
   */
  async until(match: RegExp | ((c: Child) => boolean), timeoutMs = 30_000): Promise<boolean> {
    const holds = () => match instanceof RegExp ? match.test(this.output) : match(this);
    const deadline = Date.now() + timeoutMs;
    while (!holds()) {
      if (this.#exited && this.#outputEnded) return false;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `${this.argv.join(" ")}: no ${match} after ${timeoutMs} ms: ${this.output}`,
        );
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((r) => {
        this.#wake.push(r);
        timer = setTimeout(r, Math.min(left, 1000));
      });
      clearTimeout(timer);
    }
    return true;
  }

  /** until(), but its exit before the output shows `match` throws too (with the output). */
  async ready(match: RegExp | ((c: Child) => boolean), timeoutMs = 30_000): Promise<void> {
    if (!(await this.until(match, timeoutMs))) {
      throw new Error(
        `${this.argv.join(" ")} exited ${this.#exited?.code} before ${match}: ${this.output}`,
      );
    }
  }

  /** Waits for it to exit by itself; its status and what it wrote. */
  async wait(): Promise<RunResult> {
    const s = await this.status;
    await this.#collected;
    return {
      code: s.code,
      signal: s.signal,
      stdout: this.stdout,
      stderr: this.stderr,
      timedOut: false,
    };
  }

  /** Sends `signal` unless it has exited; does not wait. */
  kill(signal: Deno.Signal = "SIGKILL"): void {
    if (this.#exited) return;
    try {
      this.#process.kill(signal);
    } catch { /* exited meanwhile */ }
  }

  /** Sends `signal` unless it has exited, then waits for it (see wait()). */
  async stop(signal: Deno.Signal = "SIGKILL"): Promise<RunResult> {
    this.kill(signal);
    if (this.#stdinPiped) await this.closeStdin();
    return await this.wait();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** Starts argv as a long-running child (see Child). */
export function spawn(argv: string[], opts: SpawnOptions = {}): Child {
  return new Child(argv, opts);
}

export function randomId(n = 6): string {
  return crypto.randomUUID().replace(/-/g, "").slice(0, n);
}
