/**
 * The agent's side of delegation (src/cni/delegate.ts): a unix socket on which plugin
 * processes hand over their verb. The agent runs it with the plugin's own code
 * (src/cni/main.ts handleCni), in this warm process, one request at a time: every verb's
 * namespace switching (setns) happens on the agent's JavaScript thread, and the node lock
 * serialises the map side anyway.
 *
 * The agent declines (and the plugin then runs the verb itself) what it cannot do as well as
 * the plugin: a pod namespace it cannot open (a container without the host's /run/netns or
 * without hostPID), a pin root it does not see. The socket is created mode 0600 in a
 * directory of its own: only root on the node may ask for attachments.
 */
import { handleCni } from "../cni/main.ts";
import { PLUGIN_DEFAULTS } from "../cni/config.ts";
import {
  type AgentReply,
  type AgentRequest,
  CNI_ENV,
  PROTOCOL_VERSION,
  readLine,
  writeLine,
} from "../cni/delegate.ts";
import { netnsExists } from "../util/netns.ts";
import { asTsnproxyError } from "../errors.ts";
import { log } from "../log.ts";
import { isDir } from "../util/fs.ts";
import { versionInfo } from "../build_info.ts";

export interface CniServerStats {
  /** Requests answered, by verb and exit code 0 ("ok") or not ("error"). */
  served: Record<string, { ok: number; error: number }>;
  declined: number;
  /** Connections that sent no valid request. */
  bad: number;
}

export interface CniServer {
  stats: CniServerStats;
  /** Stops accepting, waits for the request in progress, removes the socket. */
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
  if (netns && !netnsExists(netns)) {
    return `the agent cannot open ${netns} (mount the host's /run/netns, or use hostPID)`;
  }
  const bpffs = pinRootOf(req.stdin) ?? PLUGIN_DEFAULTS.bpffs;
  if (!isDir(bpffs)) {
    return `the agent does not see the pin root ${bpffs}`;
  }
  return undefined;
}

function parseRequest(line: string): AgentRequest | string {
  let v: Partial<AgentRequest>;
  try {
    v = JSON.parse(line);
  } catch {
    return "not JSON";
  }
  if (v.v !== PROTOCOL_VERSION) return `protocol ${v.v}, expected ${PROTOCOL_VERSION}`;
  if (typeof v.stdin !== "string") return "no stdin";
  if (typeof v.env !== "object" || v.env === null) return "no env";
  const env: Record<string, string> = {};
  for (const k of CNI_ENV) {
    const val = (v.env as Record<string, unknown>)[k];
    if (typeof val === "string") env[k] = val;
  }
  return { v: PROTOCOL_VERSION, env, stdin: v.stdin };
}

/**
 * Listens on `path` (its directory is created; a stale socket left by a previous agent is
 * replaced, anything else there is an error). `afterRequest` runs after each verb (the agent
 * re-routes libbpf's printer, which the verbs turn off).
 */
export function serveCni(path: string, afterRequest: () => void = () => {}): CniServer {
  const dir = path.slice(0, path.lastIndexOf("/")) || "/";
  Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const existing = isSocket(path);
  if (existing === false) {
    throw new Error(
      `${path} exists and is not a socket: remove it or choose another cni.agentSocket`,
    );
  }
  if (existing) Deno.removeSync(path);
  const listener = Deno.listen({ transport: "unix", path });
  Deno.chmodSync(path, 0o600);
  const stats: CniServerStats = { served: {}, declined: 0, bad: 0 };
  const { version, bpfObjectsSha256 } = versionInfo();
  const agent = { version, bpfObjectsSha256 };

  // One request at a time, in arrival order.
  let queue: Promise<void> = Promise.resolve();
  const serveOne = async (conn: Deno.UnixConn): Promise<void> => {
    try {
      const line = await readLine(conn);
      if (line === undefined) return; // a connect-only probe (readiness checks, tests)
      const req = parseRequest(line);
      if (typeof req === "string") {
        stats.bad++;
        log("warn", "bad CNI request on the agent socket", { error: req });
        return;
      }
      const command = req.env.CNI_COMMAND ?? "?";
      const declined = declineReason(req);
      let reply: AgentReply;
      if (declined) {
        stats.declined++;
        log("info", "CNI request declined", {
          command,
          containerId: req.env.CNI_CONTAINERID,
          reason: declined,
        });
        reply = { v: PROTOCOL_VERSION, declined, agent };
      } else {
        const t0 = performance.now();
        const out = await handleCni(req.stdin, (k) => req.env[k], { inAgent: true });
        afterRequest();
        const s = (stats.served[command] ??= { ok: 0, error: 0 });
        if (out.code === 0) s.ok++;
        else s.error++;
        log("info", "CNI request served", {
          command,
          containerId: req.env.CNI_CONTAINERID,
          ifname: req.env.CNI_IFNAME,
          code: out.code,
          ms: Math.round((performance.now() - t0) * 100) / 100,
        });
        reply = { v: PROTOCOL_VERSION, code: out.code, stdout: out.stdout, agent };
      }
      await writeLine(conn, reply);
    } catch (e) {
      // The plugin went away, or sent too much: it runs the verb itself if it is still there.
      log("warn", "CNI request failed on the agent socket", {
        error: asTsnproxyError(e).oneLine(),
      });
    } finally {
      try {
        conn.close();
      } catch {
        // closed by the peer
      }
    }
  };

  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        queue = queue.then(() => serveOne(conn));
      }
    } catch (e) {
      if (!(e instanceof Deno.errors.BadResource)) {
        log("error", "the agent socket stopped accepting", { error: asTsnproxyError(e).oneLine() });
      }
    }
  })();

  log("info", "serving CNI requests", { socket: path });
  return {
    stats,
    async close() {
      listener.close();
      await accepting;
      await queue;
      try {
        if (isSocket(path)) Deno.removeSync(path);
      } catch {
        // gone already
      }
    },
  };
}
