/**
 * The CNI path's first step (main.ts), before the plugin's own code is loaded: read the
 * network configuration from stdin and, when the entry names an `agentSocket`, hand the verb
 * to the node agent (src/cni/delegate.ts). Loading the CNI code (its bundle or ~25 modules),
 * parsing and validating the entry cost the plugin ~7 ms of an ADD that the agent, warm,
 * does in ~1 ms: a plugin the agent serves skips all of it (`deno task bench`).
 *
 * Only the agentSocket is looked at here. The agent validates the rest with the plugin's own
 * code, so a malformed entry or environment gets the same error Result from either side.
 * When the agent does not serve the verb, the caller runs it in-process with the text read
 * here and logs why (src/cni/main.ts), holding the container's verb lock (delegate.ts) until
 * the process exits, so it never runs beside a verb the agent still runs for that container.
 *
 * Imports only delegate.ts, src/config/paths.ts and, through delegate.ts, the socket client
 * (unix_client.ts) and the syscall table, all named here too: Deno loads a module's imports
 * only once it has the module, so each level of the graph costs a round; listed here, they
 * load side by side (measured: importing this module took 2.3 ms through the chain, 1.7 ms
 * flat; 1.0 ms before the socket client existed).
 */
import "../ffi/syscall_numbers.ts";
import "./unix_client.ts";
import {
  CNI_ENV,
  delegate,
  MAX_MESSAGE,
  type NotServedCause,
  readMessage,
  verbLockPath,
} from "./delegate.ts";
import { pathProblem } from "../config/paths.ts";

/** What the in-process plugin gets when the agent did not answer for it. */
export interface PluginInput {
  /** The configuration as read from stdin; absent when it could not be read. */
  text?: string;
  /** Why stdin could not be read (too large, an I/O error). */
  unreadable?: string;
  /** Why the agent the entry names did not run the verb; absent when it names none. */
  notDelegated?: { cause: NotServedCause; reason: string };
  /**
   * The agent was told to run the verb and never answered: whether it ran is unknown, so the
   * plugin must not run it and answers "try again later" with this reason.
   */
  agentLost?: string;
}

/** The agent ran the verb and its Result is on stdout: the plugin exits with `served`. */
export type HandOff = { served: number } | PluginInput;

const encoder = new TextEncoder();

/** Writes one JSON value and a newline to stdout, all of it. */
export function writeJsonLine(value: unknown): void {
  const bytes = encoder.encode(JSON.stringify(value) + "\n");
  let off = 0;
  while (off < bytes.length) off += Deno.stdout.writeSync(bytes.subarray(off));
}

async function readInput(): Promise<PluginInput> {
  try {
    // readSync: the plugin has nothing else to do while it waits, and the async read's first
    // trip through the event loop cost 0.3-10 ms against ~0.1 ms (measured).
    const text = await readMessage((b) => Deno.stdin.readSync(b), MAX_MESSAGE);
    return { text };
  } catch (e) {
    return {
      unreadable: e instanceof RangeError
        ? `the network configuration on stdin exceeds ${MAX_MESSAGE >> 20} MiB`
        : `cannot read the network configuration on stdin: ${(e as Error).message}`,
    };
  }
}

/**
 * The entry's agentSocket, if it names a usable one: confined to the node's directory as
 * config.ts confines it (an entry naming any other socket would get the verb, the pod's
 * environment and its config sent there before validation rejects it).
 */
function agentSocketOf(text: string): string | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return undefined; // the in-process plugin answers with the decode error
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return undefined;
  const socket = (raw as { agentSocket?: unknown }).agentSocket;
  return pathProblem("agentSocket", socket) === undefined ? socket as string : undefined;
}

/**
 * Reads stdin and, when the entry names an agentSocket, asks the agent to run the verb
 * (VERSION is answered by the plugin, which needs nothing for it). Never throws.
 */
export async function handOff(getEnv: (k: string) => string | undefined): Promise<HandOff> {
  const input = await readInput();
  const command = getEnv("CNI_COMMAND");
  if (input.text === undefined || command === undefined || command === "VERSION") return input;
  const socket = agentSocketOf(input.text);
  if (!socket) return input;
  const env: Record<string, string> = {};
  for (const k of CNI_ENV) {
    const v = getEnv(k);
    if (v !== undefined) env[k] = v;
  }
  // This process has nothing else to do: it sleeps in the kernel while the agent works.
  const d = await delegate(socket, env, input.text, agentTimeout(getEnv), { wait: "block" });
  if (d.served) {
    if (d.stdout !== undefined) writeJsonLine(d.stdout);
    return { served: d.code };
  }
  if (d.committed) return { ...input, agentLost: d.reason };
  if (d.cause !== "untrusted" && env.CNI_CONTAINERID) holdVerbLock(socket, env.CNI_CONTAINERID);
  return { ...input, notDelegated: { cause: d.cause, reason: d.reason } };
}

/** How long the agent has to be ready to run the verb, ms (default DEFAULT_TIMEOUT_MS). */
export const AGENT_TIMEOUT_ENV = "TSNPROXY_AGENT_TIMEOUT_MS";

/** A value of AGENT_TIMEOUT_ENV: a whole number of ms, 1 to 999999999; undefined otherwise. */
export function parseAgentTimeout(v: string | undefined): number | undefined {
  return v && /^[1-9]\d{0,8}$/.test(v) ? Number(v) : undefined;
}

/**
 * The plugin's deadline for the agent, from its environment (runtimes pass theirs to plugins);
 * a value it cannot use is ignored (the default applies), as the CNI path never fails on one.
 */
function agentTimeout(getEnv: (k: string) => string | undefined): number | undefined {
  return parseAgentTimeout(getEnv(AGENT_TIMEOUT_ENV));
}

/** The verb lock this process holds until it exits (the kernel releases it then); referenced
 * here so that nothing closes the handle before. */
let _held: Deno.FsFile | undefined;

/**
 * Takes the container's verb lock, waiting for an agent that still runs a verb for it. Without
 * the lock directory no agent has served on this socket since boot, and nothing is taken.
 */
function holdVerbLock(socket: string, containerId: string): void {
  let f: Deno.FsFile;
  try {
    f = Deno.openSync(verbLockPath(socket, containerId), {
      read: true,
      write: true,
      create: true,
      mode: 0o600,
    });
  } catch {
    return; // no lock directory (or not ours to write): no agent can be running the verb
  }
  f.lockSync(true);
  _held = f;
}
