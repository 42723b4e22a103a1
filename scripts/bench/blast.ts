/**
 * The compiled UDP sender (bench/c/blast.c): built here with the system's clang (no
 * download) into build/bench/blast when the source is newer, and run inside a namespace.
 */
import { sh } from "./common.ts";
import { spawnIn } from "./node.ts";

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
  await sh(["clang", "-O2", "-g", "-Wall", "-Werror", "-pthread", SOURCE, "-o", BLAST]);
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
  const p = spawnIn(ns, blastArgs(o));
  const out = await p.output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (!out.success || !text) {
    throw new Error(
      `blast failed (exit ${out.code}): ${new TextDecoder().decode(out.stderr).trim()}`,
    );
  }
  return JSON.parse(text) as BlastResult;
}
