/**
 * The agent's CNI socket under load and misuse, against a real agent process and real plugin
 * processes on the real kernel (src/agent/cni_server.ts, src/cni/delegate.ts):
 *
 * - an idle connection does not hold up anyone's pod;
 * - a request whose plugin gave up (and ran the verb itself) is never run later;
 * - a plugin running a verb itself beside a stalled agent waits for the container's lock, so
 *   the runtime's DEL after a timed-out ADD never leaves a saver behind;
 * - the node lock held by a plugin process never blocks the agent: it waits for the lock
 *   without blocking its event loop (its probes are answered meanwhile), and past its bound
 *   answers "try again later";
 * - SIGTERM stops the agent promptly whatever its clients do, and removes the socket;
 * - a CNI_NETNS that is a FIFO (or any other non-namespace) is answered, not blocked on;
 * - 16 pods created and deleted at once are all served by the agent, none falls back.
 *
 * No wall-clock assertion: whether the agent or the plugin ran a verb is read from the
 * agent's counters and log and from the plugin's log ("running in-process").
 */
import assert from "node:assert/strict";
import { createNode, destroyNode, type TestNode, tsnproxy } from "../install/_node.ts";
import {
  assertOk,
  cni,
  createPod,
  deletePod,
  prevResultFor,
  type TestPod,
} from "../cni/helpers.ts";
import { podPins } from "../../src/bpf/pod.ts";
import { delegate, PROTOCOL_VERSION, verbLockPath } from "../../src/cni/delegate.ts";
import { AGENT_NODE_LOCK_MS } from "../../src/cni/verbs.ts";
import { lexists } from "../../src/util/fs.ts";
import { until } from "../lib/wait.ts";
import { type Child, run, type RunResult } from "../lib/run.ts";
import { nodeLogFile, nodeSocketDir, removeNodePath } from "../lib/node_dirs.ts";
import {
  type Agent,
  flocksOn,
  installedEntry,
  logged,
  pluginLog,
  served,
  spawnPlugin,
  startAgent,
} from "./_agent.ts";

interface Ctx {
  node: TestNode;
  agent: Agent;
  socket: string;
  dir: string;
  logFile: string;
  /** The installed entry, logging the plugin's own runs at debug level. */
  entry: Record<string, unknown>;
}

async function withAgent(fn: (c: Ctx) => Promise<void>): Promise<void> {
  // An entry's agentSocket and logFile must be in the node's directories.
  const dir = nodeSocketDir("agent-sock");
  const socket = `${dir}/run/cni.sock`;
  const node = await createNode({
    config: `qdisc:\n  kind: keep\ncni:\n  agentSocket: ${socket}\n`,
  });
  let agent: Agent | undefined;
  const logFile = nodeLogFile("agent-sock");
  try {
    const inst = await tsnproxy(node, "install");
    assert.equal(inst.code, 0, inst.stderr);
    agent = await startAgent(node, { socket });
    const entry = { ...installedEntry(node), logLevel: "debug", logFile };
    await fn({ node, agent, socket, dir, logFile, entry });
  } finally {
    await agent?.kill();
    await destroyNode(node);
    removeNodePath(dir);
    removeNodePath(logFile);
  }
}

function inProcess(logFile: string): Array<Record<string, string>> {
  return pluginLog(logFile).filter((l) => l.msg === "running in-process");
}

function delta(after: Record<string, number>, before: Record<string, number>, verb: string) {
  return (after[verb] ?? 0) - (before[verb] ?? 0);
}

Deno.test("agent socket: an idle connection does not hold up a pod's ADD and DEL", async () => {
  await withAgent(async ({ agent, socket, logFile, entry }) => {
    const idle = await Deno.connect({ transport: "unix", path: socket });
    const pod = await createPod();
    try {
      const conf = { ...entry, prevResult: prevResultFor(pod) };
      const before = await served(agent);
      assertOk(await cni({ command: "ADD", pod, stdin: conf }));
      // admit on the host side and the saver in the pod
      assert.equal(podPins(entry.bpffs as string, pod.containerId, pod.ifname).length, 2);
      assertOk(await cni({ command: "DEL", pod, stdin: conf }));
      const after = await served(agent);
      assert.deepEqual([delta(after, before, "ADD"), delta(after, before, "DEL")], [1, 1]);
      assert.deepEqual(inProcess(logFile), [], "a verb fell back to the plugin");
    } finally {
      idle.close();
      await deletePod(pod);
    }
  });
});

Deno.test("agent socket: a request whose plugin gave up is never run later", async () => {
  await withAgent(async ({ node, agent, socket, entry }) => {
    const pod = await createPod();
    // What held requests up before: an idle client in front of a one-at-a-time agent; and
    // now: the container's verb lock, held as a plugin running the verb itself holds it.
    const idle = await Deno.connect({ transport: "unix", path: socket });
    const lock = Deno.openSync(verbLockPath(socket, pod.containerId), {
      read: true,
      write: true,
      create: true,
    });
    try {
      lock.lockSync(true);
      const conf = { ...entry, prevResult: prevResultFor(pod) };
      const before = await served(agent);
      const env = {
        CNI_COMMAND: "ADD",
        CNI_CONTAINERID: pod.containerId,
        CNI_NETNS: pod.netns,
        CNI_IFNAME: pod.ifname,
      };
      const d = await delegate(socket, env, JSON.stringify(conf), 500);
      assert.equal(d.served, false, JSON.stringify(d));
      assert.equal("committed" in d && d.committed, false);
      lock.unlockSync();
      idle.close();
      // The agent drops it at its deadline; before, it ran it once the line was free.
      await until(
        "the agent to drop the request (or run it)",
        () =>
          logged(agent, "CNI request dropped at its deadline", { containerId: pod.containerId })
              .length > 0 || podPins(node.bpffs, pod.containerId, pod.ifname).length > 0,
        20_000,
      );
      assert.deepEqual(podPins(node.bpffs, pod.containerId, pod.ifname), [], "replayed ADD");
      assert.equal(delta(await served(agent), before, "ADD"), 0);
      // The container's lock is free again: the agent serves it.
      assertOk(await cni({ command: "ADD", pod, stdin: conf }));
      assertOk(await cni({ command: "DEL", pod, stdin: conf }));
      assert.equal(delta(await served(agent), before, "ADD"), 1);
    } finally {
      lock.close();
      try {
        idle.close();
      } catch { /* closed above */ }
      await deletePod(pod);
    }
  });
});

/** A probe answered within `ms` (an agent whose event loop blocks answers none). */
async function answers(url: string, ms = 10_000): Promise<number | undefined> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(ms) });
    await r.body?.cancel();
    return r.status;
  } catch {
    return undefined;
  }
}

Deno.test("agent socket: a DEL run by its plugin waits for the ADD a stalled agent still runs", async () => {
  await withAgent(async ({ node, agent, socket, logFile, entry }) => {
    const pod = await createPod();
    const conf = { ...entry, prevResult: prevResultFor(pod) };
    // The node lock, held here as a plugin running a verb itself holds it, stalls the agent
    // inside the ADD it was told to run (the agent waits for it without blocking).
    const nodeLock = Deno.openSync(node.bpffs, { read: true });
    let add: Child | undefined;
    let del: Child | undefined;
    try {
      nodeLock.lockSync(true);
      add = spawnPlugin({ command: "ADD", pod, stdin: conf });
      await until(
        "the agent to wait for the node lock in the ADD",
        () => logged(agent, "waiting for the node lock", { bpffs: node.bpffs }).length > 0,
        20_000,
      );
      // Waiting, not blocked: the agent still answers its probes.
      assert.equal(await answers(`${agent.base}/livez`), 200, "the agent's event loop is free");
      // The runtime gives up on the ADD and deletes the pod.
      await add.stop();
      add = undefined;
      del = spawnPlugin({
        command: "DEL",
        pod,
        stdin: conf,
        env: { TSNPROXY_AGENT_TIMEOUT_MS: "300" },
      });
      const lockFile = verbLockPath(socket, pod.containerId);
      await until(
        "the DEL's plugin to wait for the container's verb lock",
        () => lexists(lockFile) && flocksOn(lockFile).some((l) => l.waiting && l.pid === del!.pid),
        20_000,
      );
      nodeLock.unlockSync();
      const out = await del.wait();
      del = undefined;
      assert.equal(out.code, 0, out.stdout);
      // The ADD finished in the agent first, then the DEL removed what it attached.
      assert.deepEqual(podPins(node.bpffs, pod.containerId, pod.ifname), [], "stale saver");
      assert.deepEqual(
        inProcess(logFile).map((l) => l.command),
        ["DEL"],
        "the DEL ran in its plugin",
      );
    } finally {
      nodeLock.close();
      await add?.stop();
      await del?.stop();
      await deletePod(pod);
    }
  });
});

Deno.test("agent socket: a node lock held past the agent's bound: try again later, probes answered", async () => {
  await withAgent(async ({ node, agent, entry }) => {
    const pod = await createPod();
    const conf = { ...entry, prevResult: prevResultFor(pod) };
    const nodeLock = Deno.openSync(node.bpffs, { read: true });
    let add: Child | undefined;
    try {
      nodeLock.lockSync(true);
      add = spawnPlugin({ command: "ADD", pod, stdin: conf });
      let out: RunResult | undefined;
      const collecting = add.wait().then((o) => (out = o));
      await until(
        "the agent to wait for the node lock",
        () => logged(agent, "waiting for the node lock", { bpffs: node.bpffs }).length > 0,
        20_000,
      );
      // Meanwhile the agent answers its probes and scrapes (verbs wait for their turn: a
      // request whose deadline passes meanwhile is run by its plugin).
      assert.equal(await answers(`${agent.base}/livez`), 200);
      assert.equal(await answers(`${agent.base}/readyz`), 200);
      assert.equal(await answers(`${agent.base}/metrics`), 200);
      await until("the ADD to be answered", () => out !== undefined, AGENT_NODE_LOCK_MS + 30_000);
      await collecting;
      add = undefined;
      const res = JSON.parse(out!.stdout);
      assert.equal(out!.code, 1, JSON.stringify(res));
      assert.equal(res.code, 11, JSON.stringify(res));
      assert.match(res.msg, /the node lock on \S+ was held by another process/);
      assert.deepEqual(podPins(node.bpffs, pod.containerId, pod.ifname), [], "nothing attached");
      nodeLock.unlockSync();
      // The runtime retries: the agent serves it.
      assertOk(await cni({ command: "ADD", pod, stdin: conf }));
      assertOk(await cni({ command: "DEL", pod, stdin: conf }));
    } finally {
      nodeLock.close();
      await add?.stop();
      await deletePod(pod);
    }
  });
});

Deno.test("agent socket: SIGTERM stops the agent promptly whatever its clients do", async () => {
  await withAgent(async ({ agent, socket, dir }) => {
    const enc = new TextEncoder();
    const idle = await Deno.connect({ transport: "unix", path: socket });
    const half = await Deno.connect({ transport: "unix", path: socket });
    await half.write(enc.encode('{"v":2,"env":'));
    // A request the agent is ready to run, whose plugin never says go.
    const waiting = await Deno.connect({ transport: "unix", path: socket });
    await waiting.write(enc.encode(
      JSON.stringify({
        v: PROTOCOL_VERSION,
        deadline: Date.now() + 120_000,
        env: { CNI_COMMAND: "VERSION" },
        stdin: JSON.stringify({ cniVersion: "1.1.0", bpffs: dir }),
      }) + "\n",
    ));
    const buf = new Uint8Array(4096);
    let n: number | null | undefined;
    const reading = waiting.read(buf).then((r) => (n = r), () => (n = null));
    try {
      await until("the agent to be ready to run the request", () => n !== undefined);
    } finally {
      if (n === undefined) waiting.close();
      await reading;
    }
    assert.match(new TextDecoder().decode(buf.subarray(0, n ?? 0)), /"ready":true/);
    try {
      assert.equal(await agent.stop("SIGTERM"), 0);
      assert.ok(!lexists(socket), "a stopped agent removes its socket");
      assert.equal(await waiting.read(buf), null, "the un-started request is dropped");
      assert.equal(logged(agent, "CNI request served").length, 0);
    } finally {
      for (const c of [idle, half, waiting]) {
        try {
          c.close();
        } catch { /* closed already */ }
      }
    }
  });
});

Deno.test("agent socket: a FIFO or a file as CNI_NETNS is answered without blocking", async () => {
  await withAgent(async ({ agent, dir, logFile, entry }) => {
    const fifo = `${dir}/fifo`;
    await run(["mkfifo", fifo]);
    const file = `${dir}/file`;
    Deno.writeTextFileSync(file, "");
    const pod = await createPod();
    const conf = { ...entry, prevResult: prevResultFor(pod) };
    const before = await served(agent, "error");
    try {
      const cases: Array<[string, RegExp]> = [
        [fifo, /CNI_NETNS is not a network namespace: \S+ is a FIFO, not a network namespace/],
        [file, /CNI_NETNS is not a network namespace: \S+ is a regular file/],
        ["/proc/self/ns/mnt", /is a mount namespace, not a network namespace/],
      ];
      for (const [netns, why] of cases) {
        const p = spawnPlugin({ command: "ADD", pod: { ...pod, netns }, stdin: conf });
        let out: RunResult | undefined;
        const collecting = p.wait().then((o) => (out = o));
        try {
          await until(`the plugin to answer for ${netns}`, () => out !== undefined, 20_000);
        } finally {
          if (!out) p.kill();
          await collecting;
        }
        const res = JSON.parse(out!.stdout);
        assert.equal(out!.code, 1);
        assert.equal(res.code, 103, JSON.stringify(res));
        assert.match(res.msg, why);
      }
      // Answered by the agent (its error count), which kept serving: a real pod goes through.
      assert.equal(delta(await served(agent, "error"), before, "ADD"), 3);
      assertOk(await cni({ command: "ADD", pod, stdin: conf }));
      assertOk(await cni({ command: "DEL", pod, stdin: conf }));
      assert.deepEqual(inProcess(logFile), []);
    } finally {
      await deletePod(pod);
    }
  });
});

Deno.test("agent socket: 16 pods created and deleted at once, all by the agent", async () => {
  await withAgent(async ({ node, agent, logFile, entry }) => {
    const pods: TestPod[] = [];
    try {
      for (let i = 0; i < 16; i++) pods.push(await createPod());
      const before = await served(agent);
      const all = async (command: string) => {
        const runs = await Promise.all(
          pods.map((pod) =>
            cni({ command, pod, stdin: { ...entry, prevResult: prevResultFor(pod) } })
          ),
        );
        for (const r of runs) assertOk(r);
      };
      await all("ADD");
      for (const pod of pods) {
        assert.equal(podPins(node.bpffs, pod.containerId, pod.ifname).length, 2);
      }
      await all("DEL");
      for (const pod of pods) {
        assert.deepEqual(podPins(node.bpffs, pod.containerId, pod.ifname), []);
      }
      const after = await served(agent);
      assert.deepEqual([delta(after, before, "ADD"), delta(after, before, "DEL")], [16, 16]);
      assert.deepEqual(inProcess(logFile), [], "a verb fell back to its plugin");
    } finally {
      for (const pod of pods) await deletePod(pod);
    }
  });
});
