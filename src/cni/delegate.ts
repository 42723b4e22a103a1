/**
 * The plugin's side of delegation: when the tsnproxy entry names an `agentSocket`, the plugin
 * hands the verb to the node agent (src/agent/cni_server.ts) instead of doing the datapath work
 * itself. The agent has libbpf open, its FFI symbols bound and the code compiled: an ADD costs
 * it ~1 ms, where a fresh plugin process spends ~20 ms getting there (`deno task bench`).
 *
 * The plugin hands over before loading its own code (src/cni/handoff.ts): it only peeks at the
 * entry's agentSocket, and the agent validates the input exactly as the plugin would (the same
 * handleCni), so a bad entry or environment gets the same error Result either way. Whatever
 * goes wrong on the way to the agent (no socket yet, a stale one, one not owned by root, no
 * answer by the deadline, a malformed or cut-off reply, the agent declining because it cannot
 * see the pod's namespace or the pin root) is not the pod's failure: the plugin runs the verb
 * in-process, as it does without an agentSocket.
 *
 * Who runs the verb, and never both. A request carries an absolute deadline (ms since the
 * epoch) set by the plugin. The agent never starts a verb on its own: when it is ready to run
 * it (request read and checked, the per-container lock and its turn taken) it says "ready" and
 * waits; the plugin answers "go" only if its deadline has not passed, and from then on it waits
 * for the result and never runs the verb itself. Without "go" the agent drops the request, and
 * a "go" arriving after the deadline is refused too (the agent closes: see below). So the one
 * decision, run here or there, is taken by one side, the plugin, at one point in time: a
 * "started" acknowledgement from the agent instead would race with the plugin's deadline (sent
 * just before it, read just after it, both would run the verb). The cost is one more round
 * trip on the socket (~0.1 ms).
 *
 * After "go" the agent closes the connection without a result only when it did not run the
 * verb (the "go" came late, or it is shutting down) or when it died (SIGKILL, OOM): then
 * nothing of it runs any more and the plugin runs the verb itself, which is safe because every
 * verb is idempotent (a DEL after a half-done ADD removes what is there, an ADD attaches what
 * is missing). An agent that neither answers nor closes within COMMITTED_TIMEOUT_MS after "go"
 * gets the spec's "try again later" (code 11): the plugin cannot know whether the verb ran.
 *
 * The per-container lock (verbLockPath): the agent holds it from before "ready" until its
 * result is written; a plugin that runs a verb itself after naming an agent holds it for its
 * whole run (handoff.ts). A runtime that gave up on a plugin stuck behind a hung agent and
 * calls again (a DEL after a timed-out ADD) therefore never runs the new verb beside the old
 * one: it waits for the lock, which the kernel releases when the agent dies. The locks are
 * striped (VERB_LOCK_STRIPES files) so they never need cleaning up.
 *
 * Trust: the plugin talks only to a socket owned by root (or its own uid) that neither group
 * nor others may write, in directories of which the same holds up to / (sticky ones like /tmp
 * excepted), and only to a peer that the kernel says is root (SO_PEERCRED, src/cni/
 * unix_client.ts). Anything else could forge a Result for every pod on the node.
 *
 * What it costs the plugin (paired runs against 594eaea, 80 each, CPU time from rusage on a
 * loaded 2-core machine): a delegated DEL 20.0 -> 21.3 ms, a VERSION (not delegated, the same
 * modules loaded) 23.4 -> 24.5 ms; the socket client's module and libc binding, the statx
 * checks and SO_PEERCRED, and the second round trip.
 *
 * The wire format is one JSON line per message:
 *   plugin  {"v": 2, "deadline": <ms since the epoch>, "env": {"CNI_COMMAND": ...}, "stdin": "..."}
 *   agent   {"v": 2, "ready": true}                                   (or a decline, below)
 *   plugin  {"v": 2, "go": true}
 *   agent   {"v": 2, "code": <exit code>, "stdout": <the JSON the plugin prints>, "agent": {...}}
 * or at any point before "go":
 *   agent   {"v": 2, "declined": "<why the agent will not run it>", "agent": {...}}
 * where "agent" (optional) names the agent's build, which `tsnproxy doctor` compares with its own.
 * Version 1 (no deadline, no ready/go) is refused both ways, each side then running nothing.
 */
import {
  DeadlineError,
  type FileOwner,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFSOCK,
  SocketError,
  statNoFollow,
  UnixClient,
  type WaitMode,
} from "./unix_client.ts";

export const PROTOCOL_VERSION = 2;
/** The CNI variables a request carries (the agent's own environment is not the plugin's). */
export const CNI_ENV = [
  "CNI_COMMAND",
  "CNI_CONTAINERID",
  "CNI_NETNS",
  "CNI_IFNAME",
  "CNI_ARGS",
  "CNI_PATH",
] as const;
export const MAX_MESSAGE = 16 << 20;
/** How long a plugin waits for the agent to be ready to run its verb. */
export const DEFAULT_TIMEOUT_MS = 10_000;
/** How long a plugin waits for the result once it told the agent to go. */
export const COMMITTED_TIMEOUT_MS = 60_000;
/** Files under <socket dir>/locks/ that the per-container verb locks are spread over. */
export const VERB_LOCK_STRIPES = 64;

export interface AgentRequest {
  v: number;
  /** Absolute, ms since the epoch (Date.now()): the agent does not start the verb after it. */
  deadline: number;
  env: Record<string, string>;
  stdin: string;
}

/** The agent's build: its version and the SHA-256 of the BPF objects it carries. */
export interface AgentBuild {
  version: string;
  bpfObjectsSha256: string;
}

export type AgentReply =
  | { v: number; ready: true; agent?: AgentBuild }
  | { v: number; code: number; stdout?: unknown; agent?: AgentBuild }
  | { v: number; declined: string; agent?: AgentBuild };

/** The plugin's go-ahead, after "ready" and before its deadline. */
export interface GoMessage {
  v: number;
  go: true;
}

/**
 * Why the agent did not run a verb: no socket file, nobody accepting on it, a socket or peer
 * not owned by root, the agent said no, it speaks another protocol version, or the exchange
 * broke (deadline, cut-off, garbage).
 */
export type NotServedCause =
  | "absent"
  | "unreachable"
  | "untrusted"
  | "declined"
  | "protocol"
  | "broken";

/** What delegate() got: the agent's answer, or why the plugin must run the verb itself. */
export type Delegation =
  | { served: true; code: number; stdout?: unknown; agent?: AgentBuild }
  | {
    served: false;
    cause: NotServedCause;
    reason: string;
    agent?: AgentBuild;
    /**
     * The agent was told to go and has not answered: it may still run the verb, so the
     * plugin must not (it answers "try again later").
     */
    committed?: true;
  };

function agentBuild(v: unknown): AgentBuild | undefined {
  if (typeof v !== "object" || v === null) return undefined;
  const { version, bpfObjectsSha256 } = v as Partial<AgentBuild>;
  return typeof version === "string" && typeof bpfObjectsSha256 === "string"
    ? { version, bpfObjectsSha256 }
    : undefined;
}

/**
 * Reads from `read` until EOF; throws past `limit` bytes. The plugin's stdin
 * (src/cni/handoff.ts) reads with it; newline-terminated messages go through LineReader.
 */
export async function readMessage(
  read: (buf: Uint8Array<ArrayBuffer>) => Promise<number | null> | number | null,
  limit: number,
): Promise<string> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buf = new Uint8Array(65536);
  for (;;) {
    const n = await read(buf);
    if (n === null) break;
    const part = buf.slice(0, n);
    chunks.push(part);
    total += part.length;
    if (total > limit) throw new RangeError(`message exceeds ${limit} bytes`);
  }
  return new TextDecoder().decode(concat(chunks, total));
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  const all = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    all.set(c, off);
    off += c.length;
  }
  return all;
}

/**
 * Newline-terminated messages from a stream, in order: bytes read past one newline are kept
 * for the next message, and no byte is searched twice.
 */
export class LineReader {
  #chunks: Uint8Array[] = [];
  #bytes = 0;
  #eof = false;
  /**
   * 16 KiB: a request (the network configuration with its prevResult) is a few KiB; a larger
   * one takes more reads. The agent holds one per open connection: 64 KiB each left its malloc
   * heap growing under concurrent plugins.
   */
  readonly #buf = new Uint8Array(16384);

  constructor(
    private readonly read: (buf: Uint8Array<ArrayBuffer>) => Promise<number | null>,
    private readonly limit = MAX_MESSAGE,
  ) {}

  /** The next line without its newline; undefined at EOF before a newline. */
  async next(): Promise<string | undefined> {
    for (let i = 0;;) {
      for (; i < this.#chunks.length; i++) {
        const nl = this.#chunks[i].indexOf(10);
        if (nl < 0) continue;
        const head = [...this.#chunks.slice(0, i), this.#chunks[i].subarray(0, nl)];
        const line = concat(head, head.reduce((n, c) => n + c.length, 0));
        const rest = [this.#chunks[i].subarray(nl + 1), ...this.#chunks.slice(i + 1)]
          .filter((c) => c.length > 0);
        this.#chunks = rest;
        this.#bytes = rest.reduce((n, c) => n + c.length, 0);
        return new TextDecoder().decode(line);
      }
      if (this.#bytes > this.limit) throw new RangeError(`message exceeds ${this.limit} bytes`);
      if (this.#eof) return undefined;
      const n = await this.read(this.#buf);
      if (n === null) this.#eof = true;
      else {
        this.#chunks.push(this.#buf.slice(0, n));
        this.#bytes += n;
      }
    }
  }
}

/** Writes a value as one JSON line. */
export async function writeLine(conn: Deno.Conn, value: unknown): Promise<void> {
  const bytes = encodeLine(value);
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

/**
 * The lock a verb for `containerId` runs under when an agent socket is configured: a file in
 * the socket's directory, one of VERB_LOCK_STRIPES (FNV-1a of the id), held with flock(2).
 */
export function verbLockPath(socket: string, containerId: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < containerId.length; i++) {
    h ^= containerId.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  const stripe = (h % VERB_LOCK_STRIPES).toString(16).padStart(2, "0");
  return `${dirOf(socket)}/locks/${stripe}`;
}

function dirOf(path: string): string {
  return path.slice(0, path.lastIndexOf("/")) || "/";
}

/** Who the plugin accepts as the agent: root, or the plugin's own user. */
function trustedUid(uid: number | null): boolean {
  return uid === 0 || uid === Deno.uid();
}

function octal(mode: number): string {
  return "0" + (mode & 0o7777).toString(8);
}

/** The file at `path` (not following a final symlink); throws NotFound when it is absent. */
function owner(path: string): FileOwner {
  const st = statNoFollow(path);
  if (typeof st === "number") {
    if (st === 2 || st === 20) throw new Deno.errors.NotFound(path);
    throw new SocketError(`statx(${path})`, st);
  }
  return st;
}

/** Why a directory or socket on the way is not to be trusted (undefined: it is). */
function untrusted(path: string, st: FileOwner, dir: boolean): string | undefined {
  if (!trustedUid(st.uid)) return `${path} is owned by uid ${st.uid}, not root`;
  // A sticky directory (/tmp) lets nobody rename or remove what others own in it.
  if (st.mode & 0o022 && !(dir && st.mode & 0o1000)) {
    return `${path} is writable by group or others (mode ${octal(st.mode)})`;
  }
  return undefined;
}

/**
 * The path to connect to, when the socket and every directory up to / are safe to trust
 * (see the header); a string saying why not otherwise. A symlink on the way is resolved and
 * the real path is checked (and connected to). Throws NotFound when something is missing.
 */
export function trustedSocketPath(socket: string): { path: string } | string {
  const check = (path: string): { path: string } | string | "symlink" => {
    const sock = owner(path);
    if ((sock.mode & S_IFMT) === S_IFLNK) return "symlink";
    if ((sock.mode & S_IFMT) !== S_IFSOCK) return `${path} is not a socket`;
    const bad = untrusted(path, sock, false);
    if (bad) return bad;
    for (let d = dirOf(path);; d = dirOf(d)) {
      const st = owner(d);
      if ((st.mode & S_IFMT) === S_IFLNK) return "symlink";
      if ((st.mode & S_IFMT) !== S_IFDIR) return `${d} is not a directory`;
      const why = untrusted(d, st, true);
      if (why) return why;
      if (d === "/") return { path };
    }
  };
  const direct = check(socket);
  if (direct !== "symlink") return direct;
  const real = Deno.realPathSync(socket);
  const resolved = check(real);
  return resolved === "symlink" ? `${real} is a symlink` : resolved;
}

function connectFailure(socket: string, e: unknown): Delegation {
  const at = `agent socket ${socket}`;
  const errno = e instanceof SocketError ? e.errno : undefined;
  if (e instanceof Deno.errors.NotFound || errno === 2) {
    return { served: false, cause: "absent", reason: `${at}: no socket` };
  }
  if (errno === 111) {
    return { served: false, cause: "unreachable", reason: `${at}: nobody listens on the socket` };
  }
  const why = e instanceof Error ? e.message : String(e);
  return { served: false, cause: "unreachable", reason: `${at}: ${why}` };
}

function encodeLine(value: unknown): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(JSON.stringify(value) + "\n");
}

/** Parses one reply line; a string says what is wrong with it. */
function parseReply(line: string | undefined): Partial<AgentReply> & { v?: unknown } | string {
  if (line === undefined) return "the agent closed without answering";
  try {
    const v = JSON.parse(line);
    return typeof v === "object" && v !== null ? v : "the agent's reply is not a JSON object";
  } catch (e) {
    return `the agent's reply is not JSON: ${(e as Error).message}`;
  }
}

export interface DelegateOptions {
  /** How long the agent has to answer once told to go (default COMMITTED_TIMEOUT_MS). */
  committedMs?: number;
  /**
   * "block" (the plugin process): waits sleep on the JavaScript thread; "yield" (default):
   * they run on a worker thread and the caller's event loop keeps running.
   */
  wait?: WaitMode;
}

/**
 * Asks the agent at `socket` to run the verb (see the header for the exchange); never throws.
 * `timeoutMs`: how long the agent has to be ready to run it.
 */
export async function delegate(
  socket: string,
  env: Record<string, string>,
  stdin: string,
  timeoutMs = DEFAULT_TIMEOUT_MS,
  opts: DelegateOptions = {},
): Promise<Delegation> {
  const committedMs = opts.committedMs ?? COMMITTED_TIMEOUT_MS;
  const at = `agent socket ${socket}`;
  const deadline = Date.now() + timeoutMs;
  let target: string;
  try {
    const t = trustedSocketPath(socket);
    if (typeof t === "string") {
      return { served: false, cause: "untrusted", reason: `${at} is not trusted: ${t}` };
    }
    target = t.path;
  } catch (e) {
    return connectFailure(socket, e);
  }
  let c: UnixClient;
  try {
    c = await UnixClient.connect(target, deadline, opts.wait ?? "yield");
  } catch (e) {
    return connectFailure(socket, e);
  }
  let committed = false;
  let agent: AgentBuild | undefined;
  const notServed = (cause: NotServedCause, reason: string): Delegation => ({
    served: false,
    cause,
    reason,
    ...(agent ? { agent } : {}),
  });
  try {
    const peer = c.peerCred();
    if (!trustedUid(peer.uid)) {
      return notServed(
        "untrusted",
        `${at} is not trusted: the process listening on it (pid ${peer.pid}) runs as uid ` +
          `${peer.uid}, not root`,
      );
    }
    const request: AgentRequest = { v: PROTOCOL_VERSION, deadline, env, stdin };
    await c.write(encodeLine(request), deadline);
    let waitUntil = deadline;
    const lines = new LineReader((b) => c.read(b, waitUntil));
    const first = parseReply(await lines.next());
    if (typeof first === "string") return notServed("broken", first);
    agent = agentBuild(first.agent);
    if (first.v !== PROTOCOL_VERSION) {
      return notServed("protocol", `the agent speaks protocol ${first.v}, not ${PROTOCOL_VERSION}`);
    }
    if ("declined" in first && typeof first.declined === "string") {
      return notServed("declined", `the agent declined: ${first.declined}`);
    }
    if (!("ready" in first) || first.ready !== true) {
      return notServed("broken", "the agent answered before it was told to go");
    }
    if (Date.now() >= deadline) {
      return notServed("broken", `the agent was not ready within ${timeoutMs} ms`);
    }
    // From here the verb is the agent's unless it closes without a result (see the header).
    committed = true;
    waitUntil = Date.now() + committedMs;
    const go: GoMessage = { v: PROTOCOL_VERSION, go: true };
    try {
      await c.write(encodeLine(go), waitUntil);
    } catch (e) {
      // Nothing of the message went out: the agent closed before it could be told.
      committed = false;
      throw e;
    }
    const reply = parseReply(await lines.next());
    if (typeof reply === "string") {
      return notServed(
        "broken",
        reply === "the agent closed without answering"
          ? "the agent closed after it was told to go, without a result (it stopped, or the " +
            "go came after the deadline)"
          : reply,
      );
    }
    agent = agentBuild(reply.agent) ?? agent;
    if ("code" in reply && typeof reply.code === "number" && Number.isInteger(reply.code)) {
      return { served: true, code: reply.code, stdout: reply.stdout, ...(agent ? { agent } : {}) };
    }
    return notServed("broken", "the agent's reply has no exit code");
  } catch (e) {
    if (e instanceof DeadlineError) {
      if (committed) {
        return {
          ...notServed(
            "broken",
            `${at}: the agent was told to run the verb and has not answered within ` +
              `${committedMs} ms`,
          ),
          committed: true,
        } as Delegation;
      }
      return notServed("broken", `${at}: no answer within ${timeoutMs} ms`);
    }
    const why = e instanceof Error ? e.message : String(e);
    return notServed("broken", `${at}: ${why}`);
  } finally {
    c.close();
  }
}
