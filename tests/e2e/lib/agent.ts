/**
 * The agent's CNI server (src/agent/cni_server.ts) in the test process, for runtimes whose
 * plugin processes hand their verbs over (an entry with agentSocket). Its per-verb log lines
 * are kept quiet.
 */
import { type CniServerStats, serveCni } from "../../../src/agent/cni_server.ts";
import { configureLog } from "../../../src/log.ts";
import { nodeSocketDir, removeNodePath } from "../../lib/node_dirs.ts";

export async function withAgentServer(
  fn: (socket: string, stats: CniServerStats) => Promise<void>,
): Promise<void> {
  configureLog({ level: "warn" });
  const dir = nodeSocketDir("e2e-agent"); // an entry's agentSocket must be under /run/tsnproxy/
  const socket = `${dir}/cni.sock`;
  const server = serveCni(socket);
  try {
    await fn(socket, server.stats);
  } finally {
    await server.close();
    removeNodePath(dir);
  }
}
