/**
 * The compiled UDP sender (bench/c/blast.c): built here with the system's clang (no
 * download) into build/bench/blast when the source is newer, and run inside a namespace.
 */
import { spawnIn } from "./node.ts";
import { type Child, run, type RunResult, spawn } from "../../tests/lib/run.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const SOURCE = `${ROOT}bench/c/blast.c`;
export const BLAST = `${ROOT}build/bench/blast`;

function mtime(path: string): number {
  try {
    return Deno.statSync(path).mtime?.getTime() ?? 0;
  } catch {
    return 0;
  }
}

/** Compiles the sender unless build/bench/blast is newer than its source. */
export async function buildBlast(): Promise<string> {
  if (mtime(BLAST) > Math.max(mtime(SOURCE), mtime(import.meta.filename!))) return BLAST;
  await Deno.mkdir(`${ROOT}build/bench`, { recursive: true });
  await run(["clang", "-O2", "-g", "-Wall", "-Werror", "-pthread", SOURCE, "-o", BLAST]);
  return BLAST;
}

export interface BlastOptions {
  dst: string;
  /** First destination port; flow i goes to port + i. */
  port: number;
  flows: number;
  /** One sender thread pinned to each. */
  cpus: number[];
  prio: number;
  /** 0: until stopped (startBlast). */
  seconds: number;
  /** UDP payload bytes (default 64). */
  size?: number;
  /** Datagrams per sendmmsg (default 64). */
  batch?: number;
  txtime?: "tai" | "realtime" | "monotonic";
}

export interface BlastResult {
  /** Datagrams handed to the kernel (a full backlog still counts as sent: UDP says so). */
  sent: number;
  seconds: number;
  errors: number;
  threads: number;
  flows: number;
  /** CPU time of the sender process: user space, and the kernel (softirqs included). */
  userSeconds: number;
  systemSeconds: number;
}

export function blastArgs(o: BlastOptions): string[] {
  const a = [
    BLAST,
    "--dst",
    o.dst,
    "--port",
    String(o.port),
    "--flows",
    String(o.flows),
    "--cpus",
    o.cpus.join(","),
    "--prio",
    String(o.prio),
    "--seconds",
    String(o.seconds),
    "--size",
    String(o.size ?? 64),
    "--batch",
    String(o.batch ?? 64),
  ];
  if (o.txtime) a.push("--txtime", o.txtime);
  return a;
}

/** Runs the sender in namespace `ns` until its duration is up. */
export async function blast(ns: string, o: BlastOptions): Promise<BlastResult> {
  return blastResult(await spawnIn(ns, blastArgs(o)).wait());
}

function blastResult(out: RunResult): BlastResult {
  const text = out.stdout.trim();
  if (out.code !== 0 || !text) {
    throw new Error(`blast failed (exit ${out.code}): ${out.stderr.trim()}`);
  }
  return JSON.parse(text) as BlastResult;
}

/** A sender running until stopped, and the CPU time its threads have had so far. */
export interface RunningBlast {
  pid: number;
  /** ns of CPU its threads have run (the kernel's sum_exec_runtime, softirqs included). */
  cpuNs(): number;
  /** SIGTERM, then its result. */
  stop(): Promise<BlastResult>;
}

/** Starts the sender in namespace `ns` with no time limit. */
export async function startBlast(
  ns: string,
  o: Omit<BlastOptions, "seconds">,
): Promise<RunningBlast> {
  const p = spawnIn(ns, blastArgs({ ...o, seconds: 0 }));
  // nsenter execs the command in place: the pid is the sender's.
  const comm = async () => (await Deno.readTextFile(`/proc/${p.pid}/comm`).catch(() => "")).trim();
  for (let i = 0; i < 100 && (await comm()) !== "blast"; i++) {
    await new Promise((r) => setTimeout(r, 10));
  }
  if ((await comm()) !== "blast") {
    const out = await p.stop();
    throw new Error(`blast did not start: ${out.stderr.trim()}`);
  }
  return {
    pid: p.pid,
    cpuNs(): number {
      let ns = 0;
      for (const t of Deno.readDirSync(`/proc/${p.pid}/task`)) {
        const s = Deno.readTextFileSync(`/proc/${p.pid}/task/${t.name}/schedstat`);
        ns += Number(s.split(" ")[0]);
      }
      return ns;
    },
    async stop(): Promise<BlastResult> {
      return blastResult(await p.stop("SIGTERM"));
    },
  };
}

/**
 * A counter of an interface in another namespace, read on demand with no process per read:
 * a shell in that namespace (whose /sys is the namespace's own) reads the sysfs file each
 * time it is sent a line.
 */
export class NetnsCounter {
  /** Where the next line starts in the reader's stdout. */
  #at = 0;

  private constructor(readonly p: Child) {}

  /** e.g. open(node, "tsn0", "tx_packets") */
  static open(ns: string, ifname: string, counter: string): NetnsCounter {
    const file = `/sys/class/net/${ifname}/statistics/${counter}`;
    return new NetnsCounter(
      spawn(["sh", "-c", `while read _; do read v < ${file}; echo "$v"; done`], {
        netns: ns,
        netnsSysfs: true,
        stdin: "piped",
        stderr: "null",
      }),
    );
  }

  async read(): Promise<number> {
    await this.p.write("\n");
    if (!(await this.p.until((c) => c.stdout.includes("\n", this.#at)))) {
      throw new Error("the counter's reader exited");
    }
    const i = this.p.stdout.indexOf("\n", this.#at);
    const line = this.p.stdout.slice(this.#at, i);
    this.#at = i + 1;
    const v = Number(line);
    if (!Number.isFinite(v) || line === "") throw new Error(`unreadable counter: "${line}"`);
    return v;
  }

  async close(): Promise<void> {
    await this.p.closeStdin();
    await this.p.wait();
  }
}
