/**
 * The plugin's side of delegation: when the tsnproxy entry names an `agentSocket`, the plugin
 * hands the verb to the node agent (src/agent/cni_server.ts) instead of doing the datapath work
 * itself. The agent has libbpf open, its FFI symbols bound and the code compiled: an ADD costs
 * it ~1 ms, where a fresh plugin process spends ~20 ms getting there (`deno task bench`).
 *
 * The plugin hands over before loading its own code (src/cni/handoff.ts): it only peeks at the
 * entry's agentSocket, and the agent validates the input exactly as the plugin would (the same
 * handleCni), so a bad entry or environment gets the same error Result either way. Whatever
 * goes wrong on the way to the agent (no socket yet, a stale one, no answer within the
 * timeout, a malformed or cut-off reply, the agent declining because it cannot see the pod's
 * namespace or the pin root) is not the pod's failure: the plugin runs the verb in-process,
 * as it does without an agentSocket. Every verb is idempotent, so running it again after an
 * agent that died half-way is safe.
 *
 * The wire format is one JSON line each way on a fresh connection:
 *   request  {"v": 1, "env": {"CNI_COMMAND": ..., ...}, "stdin": "<the entry as received>"}
 *   reply    {"v": 1, "code": <exit code>, "stdout": <the JSON the plugin prints>, "agent": {...}}
 *            {"v": 1, "declined": "<why the agent will not run it>", "agent": {...}}
 * where "agent" (optional) names the agent's build, which `tsnproxy doctor` compares with its own.
 */

export const PROTOCOL_VERSION = 1;
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
export const DEFAULT_TIMEOUT_MS = 10_000;

export interface AgentRequest {
  v: number;
  env: Record<string, string>;
  stdin: string;
}

/** The agent's build: its version and the SHA-256 of the BPF objects it carries. */
export interface AgentBuild {
  version: string;
  bpfObjectsSha256: string;
}

export type AgentReply =
  | { v: number; code: number; stdout?: unknown; agent?: AgentBuild }
  | { v: number; declined: string; agent?: AgentBuild };

/**
 * Why the agent did not run a verb: no socket file, nobody accepting on it, the agent said
 * no, it speaks another protocol version, or the exchange broke (timeout, cut-off, garbage).
 */
export type NotServedCause = "absent" | "unreachable" | "declined" | "protocol" | "broken";

/** What delegate() got: the agent's answer, or why the plugin must run the verb itself. */
export type Delegation =
  | { served: true; code: number; stdout?: unknown; agent?: AgentBuild }
  | { served: false; cause: NotServedCause; reason: string; agent?: AgentBuild };

function agentBuild(v: unknown): AgentBuild | undefined {
  if (typeof v !== "object" || v === null) return undefined;
  const { version, bpfObjectsSha256 } = v as Partial<AgentBuild>;
  return typeof version === "string" && typeof bpfObjectsSha256 === "string"
    ? { version, bpfObjectsSha256 }
    : undefined;
}

/**
 * Reads from `read` until EOF, or with `untilNewline` until the first newline (not included).
 * Undefined: EOF came before the newline. Throws past `limit` bytes. Shared by the plugin's
 * stdin (src/cni/handoff.ts) and both ends of the socket.
 */
export async function readMessage(
  read: (buf: Uint8Array) => Promise<number | null> | number | null,
  limit: number,
  untilNewline: boolean,
): Promise<string | undefined> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buf = new Uint8Array(65536);
  for (;;) {
    const n = await read(buf);
    if (n === null) {
      if (untilNewline) return undefined;
      break;
    }
    const nl = untilNewline ? buf.subarray(0, n).indexOf(10) : -1;
    const part = buf.slice(0, nl >= 0 ? nl : n);
    chunks.push(part);
    total += part.length;
    if (total > limit) throw new RangeError(`message exceeds ${limit} bytes`);
    if (nl >= 0) break;
  }
  const all = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    all.set(c, off);
    off += c.length;
  }
  return new TextDecoder().decode(all);
}

/** One newline-terminated message from the socket (undefined: EOF before the newline). */
export function readLine(conn: Deno.Conn, limit = MAX_MESSAGE): Promise<string | undefined> {
  return readMessage((b) => conn.read(b), limit, true);
}

export async function writeLine(conn: Deno.Conn, value: unknown): Promise<void> {
  const bytes = new TextEncoder().encode(JSON.stringify(value) + "\n");
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

function connectFailure(socket: string, e: unknown): Delegation {
  const at = `agent socket ${socket}`;
  if (e instanceof Deno.errors.NotFound) {
    return { served: false, cause: "absent", reason: `${at}: no socket` };
  }
  if (e instanceof Deno.errors.ConnectionRefused) {
    return { served: false, cause: "unreachable", reason: `${at}: nobody listens on the socket` };
  }
  const why = e instanceof Error ? e.message : String(e);
  return { served: false, cause: "unreachable", reason: `${at}: ${why}` };
}

/** Asks the agent at `socket` to run the verb; never throws. */
export async function delegate(
  socket: string,
  env: Record<string, string>,
  stdin: string,
  timeoutMs = DEFAULT_TIMEOUT_MS,
): Promise<Delegation> {
  let conn: Deno.UnixConn;
  try {
    conn = await Deno.connect({ transport: "unix", path: socket });
  } catch (e) {
    return connectFailure(socket, e);
  }
  // Not setTimeout: its first use in a process costs ~7 ms here (measured), more than the
  // whole exchange with the agent.
  let timedOut = false;
  const deadline = AbortSignal.timeout(timeoutMs);
  const onDeadline = () => {
    timedOut = true;
    conn.close();
  };
  deadline.addEventListener("abort", onDeadline, { once: true });
  try {
    const request: AgentRequest = { v: PROTOCOL_VERSION, env, stdin };
    await writeLine(conn, request);
    const line = await readLine(conn);
    if (line === undefined) {
      return { served: false, cause: "broken", reason: "the agent closed without answering" };
    }
    const reply = JSON.parse(line) as Partial<AgentReply>;
    const agent = agentBuild(reply.agent);
    if (reply.v !== PROTOCOL_VERSION) {
      return {
        served: false,
        cause: "protocol",
        reason: `the agent speaks protocol ${reply.v}, not ${PROTOCOL_VERSION}`,
        agent,
      };
    }
    if ("declined" in reply && typeof reply.declined === "string") {
      return {
        served: false,
        cause: "declined",
        reason: `the agent declined: ${reply.declined}`,
        agent,
      };
    }
    if ("code" in reply && typeof reply.code === "number" && Number.isInteger(reply.code)) {
      return { served: true, code: reply.code, stdout: reply.stdout, agent };
    }
    return { served: false, cause: "broken", reason: "the agent's reply has no exit code", agent };
  } catch (e) {
    const why = timedOut
      ? `no answer within ${timeoutMs} ms`
      : e instanceof Error
      ? e.message
      : String(e);
    return { served: false, cause: "broken", reason: `agent socket ${socket}: ${why}` };
  } finally {
    deadline.removeEventListener("abort", onDeadline);
    if (!timedOut) {
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
  }
}
