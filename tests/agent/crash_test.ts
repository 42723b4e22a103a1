/**
 * The agent killed (SIGKILL) while pods are created and deleted through it, then restarted,
 * twice: every ADD and DEL the runtime asked for still succeeds (run by an agent, or by its
 * plugin when the agent died before or during the verb, or left its socket behind), every
 * ADD left the pod's saver and admit attached, every DEL left nothing, and at the end no pin,
 * pod entry or counter slot of any pod remains. Real agent and plugin processes on the real kernel.
 */
import assert from "node:assert/strict";
import { createNode, destroyNode, tsnproxy } from "../install/_node.ts";
import { cni, createPod, deletePod, prevResultFor, type TestPod } from "../cni/helpers.ts";
import { podCookie, podPins } from "../../src/bpf/pod.ts";
import { DatapathMaps } from "../../src/bpf/maps.ts";
import { until } from "../lib/wait.ts";
import { nodeLogFile, nodeSocketDir, removeNodePath } from "../lib/node_dirs.ts";
import { type Agent, installedEntry, logged, pluginLog, startAgent } from "./_agent.ts";

const PODS = 8;
const ROUNDS = 6;
const KILLS = 2;

Deno.test("agent: SIGKILL under concurrent ADDs and DELs loses nothing", async () => {
  // An entry's agentSocket and logFile must be in the node's directories.
  const dir = nodeSocketDir("agent-crash");
  const socket = `${dir}/run/cni.sock`;
  const node = await createNode({
    config: `qdisc:\n  kind: keep\ncni:\n  agentSocket: ${socket}\n`,
  });
  let agent: Agent | undefined;
  let logFile: string | undefined;
  const pods: TestPod[] = [];
  try {
    const inst = await tsnproxy(node, "install");
    assert.equal(inst.code, 0, inst.stderr);
    logFile = nodeLogFile("agent-crash");
    const entry = { ...installedEntry(node), logLevel: "debug", logFile };
    for (let i = 0; i < PODS; i++) pods.push(await createPod());
    agent = await startAgent(node, { socket });

    const failures: string[] = [];
    let done = false;
    const work = Promise.all(pods.map(async (pod) => {
      const stdin = { ...entry, prevResult: prevResultFor(pod) };
      for (let round = 0; round < ROUNDS; round++) {
        const add = await cni({ command: "ADD", pod, stdin });
        if (add.code !== 0) failures.push(`ADD ${pod.name}: ${add.stdout}`);
        const attached = podPins(node.bpffs, pod.containerId, pod.ifname).length;
        if (attached !== 2) failures.push(`after ADD ${pod.name}: ${attached} pins`);
        const del = await cni({ command: "DEL", pod, stdin });
        if (del.code !== 0) failures.push(`DEL ${pod.name}: ${del.stdout}`);
        const left = podPins(node.bpffs, pod.containerId, pod.ifname);
        if (left.length > 0) failures.push(`after DEL ${pod.name}: ${left.join(", ")}`);
      }
    })).finally(() => (done = true));

    let kills = 0;
    for (let k = 0; k < KILLS && !done; k++) {
      const current: Agent = agent;
      const base = logged(current, "CNI request served").length;
      await until(
        "the agent to serve a few verbs",
        () => done || logged(current, "CNI request served").length >= base + 10,
        60_000,
      );
      if (done) break;
      await current.kill();
      kills++;
      agent = await startAgent(node, { socket });
    }
    await work;
    assert.deepEqual(failures, []);
    assert.ok(kills > 0, "the pods were done before the agent could be killed");

    for (const pod of pods) {
      assert.deepEqual(podPins(node.bpffs, pod.containerId, pod.ifname), [], pod.name);
    }
    const maps = DatapathMaps.open(node.bpffs);
    try {
      const cookies = new Set(pods.map((p) => podCookie(p.containerId)));
      assert.deepEqual(maps.pods().filter((p) => cookies.has(p.entry.cookie)), [], "entries left");
      assert.deepEqual(
        maps.podCounters().filter((c) => cookies.has(c.podCookie)),
        [],
        "counter slots left",
      );
    } finally {
      maps.close();
    }
    // For the record: who ran what (no assertion: it depends on when the kills landed).
    const why: Record<string, number> = {};
    for (const l of pluginLog(logFile).filter((l) => l.msg === "running in-process")) {
      const k = l.reason.replace(/^agent socket \S+: /, "");
      why[k] = (why[k] ?? 0) + 1;
    }
    console.log(`${kills} kills, ${PODS * ROUNDS * 2} verbs; run by their plugin:`, why);
  } finally {
    await agent?.kill();
    for (const pod of pods) await deletePod(pod);
    await destroyNode(node);
    removeNodePath(dir);
    if (logFile) removeNodePath(logFile);
  }
});
