/**
 * A real `tsnproxy agent` process for the agent tests: started against a test node, its
 * stderr (JSON lines) collected as it runs, its metrics and probes one fetch away.
 */
import assert from "node:assert/strict";
import { DENO, MAIN, spawnAgent, type TestNode } from "../install/_node.ts";
import { freePort, until } from "../lib/wait.ts";
import { type Child, spawn } from "../lib/run.ts";

export type LogLine = Record<string, unknown> & { msg: string };

export interface Agent {
  proc: Child;
  base: string;
  /** Every log line so far. */
  logs(): LogLine[];
  /** SIGKILL if still running; waits for the exit. */
  kill(): Promise<void>;
  /** Sends `signal` and waits (bounded by until()'s deadline) for the exit code. */
  stop(signal?: Deno.Signal, ms?: number): Promise<number>;
  exited: Promise<Deno.CommandStatus>;
}

export interface StartOptions {
  /** Waits until this socket accepts connections (a killed agent leaves its file behind). */
  socket?: string;
  reconcileSeconds?: number;
  extra?: string[];
}

export async function startAgent(node: TestNode, o: StartOptions = {}): Promise<Agent> {
  const port = freePort();
  const proc = spawnAgent(node, {
    port,
    reconcileSeconds: o.reconcileSeconds ?? 30,
    extra: o.extra,
    stdout: "null",
  });
  // stderr's complete lines, parsed as they are asked for.
  const lines: LogLine[] = [];
  let parsed = 0;
  const logs = () => {
    const end = proc.stderr.lastIndexOf("\n") + 1;
    for (const l of proc.stderr.slice(parsed, end).split("\n").filter(Boolean)) {
      try {
        lines.push(JSON.parse(l));
      } catch {
        lines.push({ msg: `(not JSON) ${l}` });
      }
    }
    parsed = Math.max(parsed, end);
    return lines;
  };
  const exited = proc.wait().then(() => proc.exited!);
  const base = `http://127.0.0.1:${port}`;
  const agent: Agent = {
    proc,
    base,
    logs,
    exited,
    async kill() {
      await proc.stop();
    },
    async stop(signal: Deno.Signal = "SIGTERM", ms = 15_000) {
      proc.kill(signal);
      await until(`the agent to exit on ${signal}`, () => proc.exited !== undefined, ms);
      return (await exited).code;
    },
  };
  try {
    await until(
      "the agent to answer /livez",
      async () => (await get(`${base}/livez`))?.status === 200,
      30_000,
    );
    if (o.socket) {
      const socket = o.socket;
      await until("the agent to listen on its socket", async () => {
        try {
          (await Deno.connect({ transport: "unix", path: socket })).close();
          return true;
        } catch {
          return false;
        }
      }, 30_000);
    }
  } catch (e) {
    await agent.kill();
    throw new Error(
      `${(e as Error).message}; agent log:\n${logs().map((l) => JSON.stringify(l)).join("\n")}`,
    );
  }
  return agent;
}

export async function get(url: string): Promise<{ status: number; text: string } | undefined> {
  try {
    const r = await fetch(url);
    return { status: r.status, text: await r.text() };
  } catch {
    return undefined;
  }
}

/** The agent's count of verbs it ran, by verb, that ended in `result`, from its metrics. */
export async function served(
  agent: Agent,
  result: "ok" | "error" = "ok",
): Promise<Record<string, number>> {
  const text = (await get(`${agent.base}/metrics`))?.text ?? "";
  const out: Record<string, number> = {};
  const re = /^tsnproxy_agent_cni_requests_total\{command="(\w+)",result="(\w+)"\} (\d+)$/gm;
  for (const m of text.matchAll(re)) if (m[2] === result) out[m[1]] = Number(m[3]);
  return out;
}

/** The plugin's "done" and "running in-process" log lines written since `from`. */
export function pluginLog(logFile: string, from = 0): Array<Record<string, string>> {
  return Deno.readTextFileSync(logFile).slice(from).trim().split("\n").filter(Boolean)
    .map((l) => JSON.parse(l))
    .filter((l) => l.msg === "done" || l.msg === "running in-process");
}

/** The tsnproxy entry install wrote into the node's conflist, ready to be a plugin's stdin. */
export function installedEntry(node: TestNode): Record<string, unknown> {
  const conflist = JSON.parse(Deno.readTextFileSync(`${node.confDir}/10-bridge.conflist`));
  const e = conflist.plugins.find((p: { type: string }) => p.type === "tsnproxy");
  assert.ok(e, "install put the entry into the conflist");
  return { cniVersion: conflist.cniVersion, name: conflist.name, ...e };
}

/** Log lines with this message (and fields matching `where`). */
export function logged(agent: Agent, msg: string, where: Record<string, unknown> = {}): LogLine[] {
  return agent.logs().filter((l) =>
    l.msg === msg && Object.entries(where).every(([k, v]) => l[k] === v)
  );
}

/** A plugin process as a runtime starts it (env + stdin), not awaited: the caller stops it. */
export function spawnPlugin(inv: {
  command: string;
  pod?: { containerId: string; netns: string; ifname: string };
  env?: Record<string, string>;
  stdin: unknown;
}): Child {
  const env: Record<string, string> = {
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    CNI_PATH: "/opt/cni/bin",
    CNI_COMMAND: inv.command,
    ...(inv.pod
      ? {
        CNI_CONTAINERID: inv.pod.containerId,
        CNI_NETNS: inv.pod.netns,
        CNI_IFNAME: inv.pod.ifname,
      }
      : {}),
    ...inv.env,
  };
  return spawn([DENO, "run", "-A", "--quiet", MAIN, "cni"], {
    env,
    clearEnv: true,
    stdin: typeof inv.stdin === "string" ? inv.stdin : JSON.stringify(inv.stdin),
  });
}

/** The /proc/locks lines of flock(2) requests on `path`'s inode: holders and waiters ("->"). */
export function flocksOn(path: string): Array<{ pid: number; waiting: boolean }> {
  const ino = Deno.statSync(path).ino;
  const out: Array<{ pid: number; waiting: boolean }> = [];
  for (const line of Deno.readTextFileSync("/proc/locks").split("\n")) {
    const m = /^\d+:\s+(->\s+)?FLOCK\s+\S+\s+\S+\s+(\d+)\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s/.exec(line);
    if (m && Number(m[3]) === ino) out.push({ pid: Number(m[2]), waiting: m[1] !== undefined });
  }
  return out;
}
