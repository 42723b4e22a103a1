/**
 * The agent's CNI server alone (src/agent/cni_server.ts), for the latency bench's
 * "tsnproxy via agent" row: the same code `tsnproxy agent` runs when cni.agentSocket is set,
 * without its conflist and restorer reconciling, which the bench's fixture has no use for.
 *
 *   deno run -A scripts/bench/cni_agent.ts <socket>
 *
 * On SIGTERM it prints its CniServerStats as one JSON line.
 */
import { serveCni } from "../../src/agent/cni_server.ts";
import { captureLibbpfLog } from "../../src/bpf/libbpf_log.ts";
import { configureLog } from "../../src/log.ts";

const [socket] = Deno.args;
if (!socket) {
  console.error("usage: cni_agent.ts <socket>");
  Deno.exit(2);
}
configureLog({ stderr: true, level: "warn" });
captureLibbpfLog();
const server = serveCni(socket, { afterRequest: captureLibbpfLog });
// What it served goes to stdout on the way out: the bench checks its agent row was the agent's.
Deno.addSignalListener("SIGTERM", async () => {
  await server.close();
  console.log(JSON.stringify(server.stats));
  Deno.exit(0);
});
