/**
 * The agent's side of delegation (src/cni/delegate.ts, whose header describes the exchange and
 * why it is safe): a unix socket on which plugin processes hand over their verb. The agent runs
 * it with the plugin's own code (src/cni/main.ts handleCni) in this warm process.
 *
 * Connections are served concurrently, verbs one at a time: reading requests, waiting for
 * locks and writing results never wait for another connection, while the verbs themselves
 * (synchronous FFI, setns on this thread) take turns in arrival order. Every connection has a
 * bound: it must deliver its request within requestTimeoutMs, and its verb must be ready to
 * start (its container's lock and its turn taken, "ready" answered with "go") before the
 * request's deadline, else it is dropped and never run (the plugin runs it itself). At most
 * maxConnections are open; one more is declined at once.
 *
 * close() (SIGTERM) stops accepting, drops every request not yet told to go (their plugins
 * then run them), waits up to closeGraceMs for the verbs already running, and removes the
 * socket. A verb still running after that dies with the process: its plugin sees the
 * connection close without a result and runs the verb itself (idempotent), under the
 * container's lock, which the kernel releases with the agent.
 *
 * The agent declines (and the plugin then runs the verb itself) what it cannot do as well as
 * the plugin: a pod namespace it cannot see (a container without the host's /run/netns or
 * without hostPID), a pin root it does not see. A path that is there but is no network
 * namespace (a FIFO, a file) is opened without blocking (src/util/netns.ts) and answered with
 * the plugin's own error. The socket is created mode 0600 in a directory of its own (0700):
 * only root on the node may ask for attachments.
 */
import { handleCni } from "../cni/main.ts";
import { PLUGIN_DEFAULTS } from "../cni/config.ts";
import {
  type AgentReply,
  type AgentRequest,
  CNI_ENV,
  LineReader,
  MAX_MESSAGE,
  PROTOCOL_VERSION,
  trustedSocketPath,
  writeLine,
} from "../cni/delegate.ts";
import { netnsProblem } from "../util/netns.ts";
import { asTsnproxyError } from "../errors.ts";
import { log } from "../log.ts";
import { isDir } from "../util/fs.ts";
import { versionInfo } from "../build_info.ts";
import { prepareVerbLocks, takeVerbLock } from "./verb_lock.ts";

export interface CniServerStats {
  /** Requests answered, by verb and exit code 0 ("ok") or not ("error"). */
  served: Record<string, { ok: number; error: number }>;
  declined: number;
  /** Connections that sent no valid request (or one of another protocol version). */
  bad: number;
  /** Requests dropped because their deadline passed before the verb could start. */
  expired: number;
  /** Connections turned away because maxConnections were open. */
  busy: number;
  /** Plugins that went away after the agent was ready, without telling it to go. */
  abandoned: number;
  /** Connections open now. */
  open: number;
}

export interface CniServerOptions {
  /** Runs after each verb (the agent re-routes libbpf's printer, which the verbs turn off). */
  afterRequest?: () => void;
  /** Connections served at once; one more is declined at once. */
  maxConnections?: number;
  /** How long a new connection has to deliver its request line. */
  requestTimeoutMs?: number;
  /** How long close() waits for verbs already told to go. */
  closeGraceMs?: number;
}

export const SERVER_DEFAULTS = {
  maxConnections: 64,
  requestTimeoutMs: 5_000,
  closeGraceMs: 10_000,
} as const;

/** The longest a request may wait to start, whatever deadline it carries. */
const MAX_WAIT_MS = 10 * 60_000;

export interface CniServer {
  stats: CniServerStats;
  /** False once the socket stopped accepting for a reason other than close(). */
  accepting(): boolean;
  /** Stops accepting, drops what was not told to go, waits for the rest, removes the socket. */
  close(): Promise<void>;
}

function isSocket(path: string): boolean | undefined {
  try {
    return Deno.lstatSync(path).isSocket ?? false;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

function pinRootOf(stdin: string): string | undefined {
  try {
    const raw = JSON.parse(stdin) as { bpffs?: unknown };
    return typeof raw.bpffs === "string" ? raw.bpffs : undefined;
  } catch {
    return undefined;
  }
}

/** Why the agent should not run this request itself (undefined: it can). */
function declineReason(req: AgentRequest): string | undefined {
  const netns = req.env.CNI_NETNS;
  // Not visible here (another mount or PID view): the plugin may see it. Anything else that is
  // not a network namespace fails the same way in either place: the verb answers it.
  const problem = netns ? netnsProblem(netns) : undefined;
  if (problem?.missing) {
    return `the agent cannot open ${netns} (mount the host's /run/netns, or use hostPID)`;
  }
  const bpffs = pinRootOf(req.stdin) ?? PLUGIN_DEFAULTS.bpffs;
  if (!isDir(bpffs)) {
    return `the agent does not see the pin root ${bpffs}`;
  }
  return undefined;
}

function parseRequest(line: string): AgentRequest | { bad: string; v?: unknown } {
  let v: Partial<AgentRequest>;
  try {
    v = JSON.parse(line);
  } catch {
    return { bad: "not JSON" };
  }
  if (typeof v !== "object" || v === null) return { bad: "not a JSON object" };
  if (v.v !== PROTOCOL_VERSION) {
    return { bad: `protocol ${v.v}, expected ${PROTOCOL_VERSION}`, v: v.v };
  }
  if (typeof v.deadline !== "number" || !Number.isFinite(v.deadline)) return { bad: "no deadline" };
  if (typeof v.stdin !== "string") return { bad: "no stdin" };
  if (typeof v.env !== "object" || v.env === null) return { bad: "no env" };
  const env: Record<string, string> = {};
  for (const k of CNI_ENV) {
    const val = (v.env as Record<string, unknown>)[k];
    if (typeof val === "string") env[k] = val;
  }
  return { v: PROTOCOL_VERSION, deadline: v.deadline, env, stdin: v.stdin };
}

/** Verbs take turns in arrival order; a waiter that gives up (abort) leaves the queue. */
class Turns {
  #busy = false;
  readonly #waiters: Array<() => void> = [];

  take(signal: AbortSignal): Promise<boolean> {
    if (signal.aborted) return Promise.resolve(false);
    if (!this.#busy) {
      this.#busy = true;
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const go = () => {
        signal.removeEventListener("abort", onAbort);
        resolve(true);
      };
      const onAbort = () => {
        const i = this.#waiters.indexOf(go);
        if (i >= 0) this.#waiters.splice(i, 1);
        resolve(false);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.#waiters.push(go);
    });
  }

  release(): void {
    const next = this.#waiters.shift();
    if (next) next();
    else this.#busy = false;
  }
}

/** One connection's state, for close(). */
interface Open {
  conn: Deno.UnixConn;
  /** Aborted at the request's deadline and by close() while not committed. */
  stop: AbortController;
  /** Told to go: the verb runs or ran, close() lets it finish. */
  committed: boolean;
  done: Promise<void>;
}

/**
 * Listens on `path` (its directory is created; a stale socket left by a previous agent is
 * replaced, anything else there is an error).
 */
export function serveCni(path: string, options: CniServerOptions = {}): CniServer {
  const opts = { ...SERVER_DEFAULTS, ...options };
  const afterRequest = options.afterRequest ?? (() => {});
  const dir = path.slice(0, path.lastIndexOf("/")) || "/";
  Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const existing = isSocket(path);
  if (existing === false) {
    throw new Error(
      `${path} exists and is not a socket: remove it or choose another cni.agentSocket`,
    );
  }
  if (existing) Deno.removeSync(path);
  prepareVerbLocks(path);
  const listener = Deno.listen({ transport: "unix", path });
  Deno.chmodSync(path, 0o600);
  // Plugins hand verbs only to a socket they can trust (src/cni/delegate.ts): one they would
  // not is served all the same, and said so, since every plugin then runs its verbs itself.
  const trust = trustedSocketPath(path);
  if (typeof trust === "string") {
    log("error", "plugins will not trust this socket: they run every verb themselves", {
      socket: path,
      reason: trust,
      hint: "the socket's directory and every one above it must be root's and not writable " +
        "by group or others",
    });
  }
  const stats: CniServerStats = {
    served: {},
    declined: 0,
    bad: 0,
    expired: 0,
    busy: 0,
    abandoned: 0,
    open: 0,
  };
  const { version, bpfObjectsSha256 } = versionInfo();
  const agent = { version, bpfObjectsSha256 };
  const turns = new Turns();
  const open = new Set<Open>();
  let closing = false;
  let failed = false;

  const decline = async (conn: Deno.UnixConn, declined: string) => {
    const reply: AgentReply = { v: PROTOCOL_VERSION, declined, agent };
    await writeLine(conn, reply);
  };

  const serveOne = async (o: Open): Promise<void> => {
    const { conn, stop } = o;
    const closeConn = () => {
      try {
        conn.close();
      } catch {
        // closed already
      }
    };
    // Until the request is read, the connection's own bound; then the request's deadline.
    let timer = setTimeout(() => stop.abort(), opts.requestTimeoutMs);
    stop.signal.addEventListener("abort", () => {
      if (!o.committed) closeConn();
    }, { once: true });
    let release: (() => void) | undefined;
    let turn = false;
    let req: AgentRequest | undefined;
    const expired = (phase: string) => {
      stats.expired++;
      log("info", "CNI request dropped at its deadline", {
        command: req?.env.CNI_COMMAND,
        containerId: req?.env.CNI_CONTAINERID,
        phase,
      });
    };
    try {
      if (open.size > opts.maxConnections) {
        stats.busy++;
        await decline(conn, `the agent is serving ${opts.maxConnections} connections already`);
        return;
      }
      const lines = new LineReader((b) => conn.read(b), MAX_MESSAGE);
      const line = await lines.next();
      if (line === undefined) return; // a connect-only probe, or a client that gave up
      const parsed = parseRequest(line);
      if ("bad" in parsed) {
        stats.bad++;
        log("warn", "bad CNI request on the agent socket", { error: parsed.bad });
        // Another protocol version is told which one this agent speaks: it then runs nothing.
        if (parsed.v !== undefined) await decline(conn, `protocol ${PROTOCOL_VERSION} only`);
        return;
      }
      req = parsed;
      clearTimeout(timer);
      const left = req.deadline - Date.now();
      if (left <= 0) {
        expired("received");
        await decline(conn, "the request's deadline passed before the agent read it");
        return;
      }
      // Capped: a timer past 2^31 ms would fire at once; a plugin waits 10 s by default.
      timer = setTimeout(() => stop.abort(), Math.min(left, MAX_WAIT_MS));
      const command = req.env.CNI_COMMAND ?? "?";
      const declined = declineReason(req);
      if (declined) {
        stats.declined++;
        log("info", "CNI request declined", {
          command,
          containerId: req.env.CNI_CONTAINERID,
          reason: declined,
        });
        await decline(conn, declined);
        return;
      }
      const cid = req.env.CNI_CONTAINERID;
      if (cid) {
        release = await takeVerbLock(path, cid, req.deadline, stop.signal);
        if (!release) return expired("waiting for the container's verb lock");
      }
      turn = await turns.take(stop.signal);
      if (!turn) return expired("waiting for its turn");
      // A timer may fire late on a busy loop: ready is never said after the deadline.
      if (Date.now() >= req.deadline) return expired("ready after the deadline");
      await writeLine(conn, { v: PROTOCOL_VERSION, ready: true });
      const go = await lines.next().catch(() => undefined);
      if (!go || !isGo(go)) {
        if (!stop.signal.aborted) {
          stats.abandoned++;
          log("info", "CNI request abandoned by its plugin", { command, containerId: cid });
        } else if (!closing) expired("waiting for go");
        return;
      }
      // The go is checked against the deadline here, on the clock the plugin set it by.
      if (Date.now() >= req.deadline || stop.signal.aborted) {
        if (!closing) expired("go came after the deadline");
        return;
      }
      o.committed = true;
      clearTimeout(timer);
      const t0 = performance.now();
      const out = await handleCni(req.stdin, (k) => req!.env[k], { inAgent: true });
      afterRequest();
      const s = (stats.served[command] ??= { ok: 0, error: 0 });
      if (out.code === 0) s.ok++;
      else s.error++;
      log("info", "CNI request served", {
        command,
        containerId: cid,
        ifname: req.env.CNI_IFNAME,
        code: out.code,
        ms: Math.round((performance.now() - t0) * 100) / 100,
      });
      const reply: AgentReply = { v: PROTOCOL_VERSION, code: out.code, stdout: out.stdout, agent };
      await writeLine(conn, reply);
    } catch (e) {
      // The plugin went away, sent too much, or the connection was closed at its bound.
      if (!stop.signal.aborted) {
        log("warn", "CNI request failed on the agent socket", {
          error: asTsnproxyError(e).oneLine(),
          committed: o.committed,
        });
      }
    } finally {
      clearTimeout(timer);
      if (turn) turns.release();
      release?.();
      closeConn();
    }
  };

  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        const o: Open = {
          conn,
          stop: new AbortController(),
          committed: false,
          done: Promise.resolve(),
        };
        open.add(o);
        stats.open = open.size;
        o.done = serveOne(o).finally(() => {
          open.delete(o);
          stats.open = open.size;
        });
      }
    } catch (e) {
      if (!closing && !(e instanceof Deno.errors.BadResource)) {
        failed = true;
        log("error", "the agent socket stopped accepting", { error: asTsnproxyError(e).oneLine() });
      }
    }
  })();

  log("info", "serving CNI requests", { socket: path });
  return {
    stats,
    accepting: () => !failed,
    async close() {
      closing = true;
      listener.close();
      await accepting;
      const running = [...open].filter((o) => o.committed);
      for (const o of open) if (!o.committed) o.stop.abort();
      if (running.length > 0) {
        log("info", "waiting for CNI verbs in flight", { verbs: running.length });
      }
      let graceTimer: ReturnType<typeof setTimeout> | undefined;
      const grace = new Promise<boolean>((r) => {
        graceTimer = setTimeout(() => r(false), opts.closeGraceMs);
      });
      const finished = await Promise.race([
        Promise.all([...open].map((o) => o.done)).then(() => true),
        grace,
      ]);
      clearTimeout(graceTimer);
      if (!finished) {
        log("warn", "CNI verbs still running at shutdown: their plugins run them themselves", {
          verbs: [...open].filter((o) => o.committed).length,
        });
      }
      try {
        if (isSocket(path)) Deno.removeSync(path);
      } catch {
        // gone already
      }
    },
  };
}

function isGo(line: string): boolean {
  try {
    const m = JSON.parse(line);
    return typeof m === "object" && m !== null && m.v === PROTOCOL_VERSION && m.go === true;
  } catch {
    return false;
  }
}
