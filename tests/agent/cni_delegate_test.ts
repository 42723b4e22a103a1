/**
 * Delegation to the agent (src/cni/delegate.ts, src/agent/cni_server.ts) on the real kernel:
 * with cni.agentSocket in the node config, install writes it into the entry, the agent serves
 * the plugin's verbs (the plugin hands them over before loading its own code, so it logs
 * nothing for them: the agent's counters say who ran them), and the plugin runs them itself
 * whenever the agent cannot: declined, stopped, or killed with its socket left behind.
 */
import assert from "node:assert/strict";
import { createNode, destroyNode, tsnproxy } from "../install/_node.ts";
import {
  assertOk,
  cni,
  createPod,
  deletePod,
  prevResultFor,
  type TestPod,
} from "../cni/helpers.ts";
import { podPins } from "../../src/bpf/pod.ts";
import { until } from "../lib/wait.ts";
import { spawn } from "../lib/run.ts";
import { lexists } from "../../src/util/fs.ts";
import { PinLayout } from "../../src/bpf/pins.ts";
import { nodeLogFile, nodeSocketDir, removeNodePath } from "../lib/node_dirs.ts";
import { type Agent, installedEntry, pluginLog, served, startAgent } from "./_agent.ts";

Deno.test("the agent runs the plugin's verbs; the plugin runs them itself when it cannot", async () => {
  // An entry's agentSocket and logFile must be in the node's directories.
  const dir = nodeSocketDir("agent");
  const socket = `${dir}/run/cni.sock`;
  const node = await createNode({
    config: `qdisc:\n  kind: keep\ncni:\n  agentSocket: ${socket}\n`,
  });
  const logFile = nodeLogFile("agent-plugin");
  let agent: Agent | undefined;
  let pod: TestPod | undefined;
  try {
    const inst = await tsnproxy(node, "install");
    assert.equal(inst.code, 0, inst.stderr);
    const base = installedEntry(node);
    assert.equal(base.agentSocket, socket);
    pod = await createPod();
    const conf = { ...base, logLevel: "debug", logFile, prevResult: prevResultFor(pod) };
    /** Runs ADD, CHECK, DEL; returns the plugin's reasons for running them in-process. */
    const verbs = async (expectVia: "agent" | "process") => {
      const from = Deno.statSync(logFile).size;
      const servedBefore = agent ? await served(agent) : undefined;
      for (const command of ["ADD", "CHECK", "DEL"]) {
        assertOk(await cni({ command, pod, stdin: conf }));
        if (command === "ADD") {
          // admit on the host veth and the saver in the pod
          assert.equal(podPins(node.bpffs, pod!.containerId, pod!.ifname).length, 2);
        }
      }
      assert.deepEqual(podPins(node.bpffs, pod!.containerId, pod!.ifname), []);
      const lines = pluginLog(logFile, from);
      assert.deepEqual(
        lines.filter((l) => l.msg === "done").map((l) => [l.command, l.via]),
        expectVia === "process"
          ? [["ADD", "process"], ["CHECK", "process"], ["DEL", "process"]]
          : [],
      );
      if (agent) {
        const after = await served(agent);
        const step = expectVia === "agent" ? 1 : 0;
        for (const verb of ["ADD", "CHECK", "DEL"]) {
          assert.equal(after[verb] ?? 0, (servedBefore![verb] ?? 0) + step, `${verb} served`);
        }
      }
      return lines.filter((l) => l.msg === "running in-process").map((l) => l.reason);
    };

    // No agent yet: the socket is missing, which is routine (the debug level says why).
    assert.deepEqual(
      new Set(await verbs("process")),
      new Set([`agent socket ${socket}: no socket`]),
    );

    agent = await startAgent(node, { socket });
    assert.equal(Deno.lstatSync(socket).mode! & 0o777, 0o600);
    assert.deepEqual(await verbs("agent"), []);
    assert.deepEqual(await served(agent), { ADD: 1, CHECK: 1, DEL: 1 });

    // The plugin only peeks at agentSocket: the agent validates the rest, with the same answer.
    const bad = { ...conf, bogus: 1 };
    const byAgent = await cni({ command: "ADD", pod, stdin: bad });
    const byPlugin = await cni({ command: "ADD", pod, stdin: { ...bad, agentSocket: undefined } });
    assert.equal(byAgent.code, 1);
    assert.equal(byAgent.json?.code, 7);
    assert.match(String(byAgent.json?.msg), /bogus/);
    assert.deepEqual(byAgent.json, byPlugin.json);
    assert.deepEqual(await served(agent, "error"), { ADD: 1, CHECK: 0, DEL: 0 });
    // VERSION needs nothing from the node: the plugin answers it alone.
    const version = await cni({ command: "VERSION", stdin: conf });
    assertOk(version);
    assert.equal((await served(agent)).VERSION, undefined);

    // A namespace named by a process (/proc/<pid>/ns/net, as podman and CRI-O pass it): the
    // agent, with the host's PID namespace, opens it as the plugin would.
    const holder = spawn(["sleep", "60"], { netns: pod.name, stdout: "null", stderr: "null" });
    try {
      const byPid = { ...pod, netns: `/proc/${holder.pid}/ns/net` };
      await until("the holder to enter the pod's namespace", () => {
        try {
          return Deno.readLinkSync(byPid.netns) !== Deno.readLinkSync("/proc/self/ns/net");
        } catch {
          return false;
        }
      });
      const before = await served(agent);
      for (const command of ["ADD", "DEL"]) {
        assertOk(await cni({ command, pod: byPid, stdin: conf }));
        if (command === "ADD") {
          assert.equal(podPins(node.bpffs, pod.containerId, pod.ifname).length, 2);
        }
      }
      assert.deepEqual(podPins(node.bpffs, pod.containerId, pod.ifname), []);
      const after = await served(agent);
      assert.deepEqual([after.ADD - before.ADD, after.DEL - before.DEL], [1, 1]);
    } finally {
      await holder.stop();
    }

    // A pin root the agent does not see: declined, and the plugin answers as it would alone.
    const from = Deno.statSync(logFile).size;
    const missing = { ...conf, cniVersion: "1.1.0", bpffs: `${node.bpffs}-absent` };
    const st = await cni({ command: "STATUS", stdin: missing });
    assert.equal(st.code, 1);
    assert.match(
      String(st.json?.msg),
      new RegExp(`cannot attach pods: ${new PinLayout(missing.bpffs).prog("save")}`),
    );
    assert.match(
      pluginLog(logFile, from).find((l) => l.msg === "running in-process")?.reason ?? "",
      /the agent declined: the agent does not see the pin root/,
    );

    // SIGKILL leaves the socket behind: nobody listens, the plugin runs the verbs itself.
    await agent.kill();
    agent = undefined;
    assert.ok(lexists(socket), "a killed agent leaves its socket");
    assert.deepEqual(
      new Set(await verbs("process")),
      new Set([`agent socket ${socket}: nobody listens on the socket`]),
    );

    // A new agent replaces the stale socket; SIGTERM removes it.
    agent = await startAgent(node, { socket });
    assert.deepEqual(await verbs("agent"), []);
    assert.equal(await agent.stop("SIGTERM"), 0);
    agent = undefined;
    assert.ok(!lexists(socket), "a stopped agent removes its socket");
  } finally {
    await agent?.kill();
    if (pod) await deletePod(pod);
    await destroyNode(node);
    removeNodePath(dir);
    removeNodePath(logFile);
  }
});
