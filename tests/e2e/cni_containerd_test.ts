/**
 * tsnproxy under a real containerd 1.6 CRI plugin, driven over gRPC like kubelet: the conflist
 * bridge -> tsnproxy, pods whose unmodified talker (tests/lib/sender.py) sets SO_PRIORITY, and
 * the observer on the TSN veth counting what leaves it (through MASQUERADE and a Service DNAT).
 * Topology and datapath: tests/e2e/lib/tsn.ts. Needs root and scripts/setup.sh's packages.
 *
 * Policy reaches the plugin as kubelet gives it: pod annotations, which containerd passes in
 * runtimeConfig["io.kubernetes.cri.pod-annotations"] (the entry declares the capability):
 * ceilings and remaps, and for senders that set no SO_PRIORITY at all a default priority and
 * rules (protocol, destination ports, destination prefix), under the node's ceiling; a bad
 * annotation fails RunPodSandbox with the plugin's message and fix.
 */
import assert from "node:assert/strict";
import { CniEnv, type Conflist } from "./lib/cni.ts";
import { type Containerd, type Pod, startContainerd } from "./lib/containerd.ts";
import { exists } from "./lib/proc.ts";
import {
  bridgePorts,
  type SendArgs,
  SENDER_MOUNT,
  senderArgv,
  showPrios,
  TCP,
  TsnNode,
  TSNPROXY_LAUNCHER,
  UDP,
} from "./lib/tsn.ts";
import { PRIORITY_MAX } from "../../src/policy/types.ts";
import type { ObserverCounts } from "../lib/observer.ts";
import { withAgentServer } from "./lib/agent.ts";

const ANNOTATIONS_CAP = "io.kubernetes.cri.pod-annotations";
const UDP_COUNT = 200;
const TCP_CHUNKS = 16;

async function timed<T>(what: string, f: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  try {
    return await f();
  } finally {
    console.log(`  ${what}: ${Math.round(performance.now() - t0)} ms`);
  }
}

Deno.test("tsnproxy chained after bridge under containerd CRI", async (t) => {
  await using env = await CniEnv.create({
    tag: "tsnc",
    logPlugin: false,
    chain: () => [],
    extraPlugins: { tsnproxy: TSNPROXY_LAUNCHER },
  });
  await using node = await timed(
    "TSN node setup",
    () => TsnNode.create({ podSubnet: env.network.subnet }),
  );
  const plain: Conflist = env.conflist;
  const withTsnproxy = (extra: Record<string, unknown> = {}): Conflist => ({
    ...plain,
    plugins: [
      ...plain.plugins,
      node.entry(extra),
    ],
  });
  // The entry as install writes it declares the capability containerd passes annotations by.
  assert.deepEqual(node.entry().capabilities, { [ANNOTATIONS_CAP]: true });
  const useConflist = async (conf: Conflist) => {
    await env.writeConflist(conf);
    const want = JSON.stringify(conf.plugins);
    await c.waitForCniConfig((x) => JSON.stringify(x.plugins) === want);
  };

  const c: Containerd = await timed(
    "containerd start + image import",
    () => startContainerd({ cniBinDir: env.binDir, cniConfDir: env.confDir }),
  );
  let stopped = false;
  try {
    /** A pod with a sleeping workload that has the talker mounted. */
    const talker = async (name: string, annotations: Record<string, string> = {}) => {
      const pod = await c.runPod({ name, namespace: "tsn", annotations });
      const w = await c.startWorkload(pod.id, {
        command: ["/bin/sleep", "3600"],
        mounts: [SENDER_MOUNT],
      });
      return { pod, w };
    };
    /** A second container in the pod with CAP_NET_ADMIN: SO_TXTIME with TAI/REALTIME needs it. */
    const txtimeTalker = (podId: string) =>
      c.startWorkload(podId, {
        command: ["/bin/sleep", "3600"],
        mounts: [SENDER_MOUNT],
        addCaps: ["NET_ADMIN"],
      });
    const send = async (w: string, a: SendArgs): Promise<ObserverCounts> =>
      await node.measure(a.proto === "udp" ? UDP : TCP, async () => {
        const r = await c.exec(w, senderArgv(a));
        assert.equal(r.exitCode, 0, `sender ${a.proto} to ${a.dst}: ${r.stderr}`);
      });
    /** UDP and TCP, direct and through the Service: every packet with `expect(prio)`. */
    const expectAll = async (w: string, prio: number, leaves: number, label: string) => {
      for (const dst of [node.farIp, node.serviceIp]) {
        const u = await send(w, { dst, port: node.farPort, proto: "udp", count: UDP_COUNT, prio });
        assert.equal(u.fwdTotal, UDP_COUNT, `${label} UDP to ${dst}: ${showPrios(u)}`);
        assert.equal(u.fwdPrio[leaves], UDP_COUNT, `${label} UDP to ${dst}: ${showPrios(u)}`);
      }
    };

    let plainPod: { pod: Pod; w: string } | undefined;
    await t.step("without tsnproxy in the chain, priorities are lost (0%)", async () => {
      plainPod = await timed("RunPodSandbox + workload (bridge only)", () => talker("plain"));
      assert.equal(node.podPins(plainPod.pod.id).length, 0);
      for (const dst of [node.farIp, node.serviceIp]) {
        const u = await send(plainPod.w, {
          dst,
          port: node.farPort,
          proto: "udp",
          count: UDP_COUNT,
          prio: 3,
        });
        assert.equal(u.fwdTotal, UDP_COUNT, `UDP to ${dst}: ${showPrios(u)}`);
        assert.equal(u.fwdPrio[0], UDP_COUNT, `UDP to ${dst}: ${showPrios(u)}`);
        const tc = await send(plainPod.w, {
          dst,
          port: node.farPort,
          proto: "tcp",
          count: 4,
          prio: 5,
        });
        assert.ok(tc.fwdTotal > 0, `TCP to ${dst}: nothing left the TSN veth`);
        assert.equal(tc.fwdPrio[5], 0, `TCP to ${dst}: ${showPrios(tc)}`);
      }
      const rt = await send(await txtimeTalker(plainPod.pod.id), {
        dst: node.farIp,
        port: node.farPort,
        proto: "udp",
        count: 50,
        txtime: "realtime",
      });
      assert.equal(rt.tsNone, 50, `REALTIME launch time: ${showPrios(rt)}`);
    });

    let main: { pod: Pod; w: string } | undefined;
    await t.step("bridge -> tsnproxy: UDP 3 and TCP 5 leave with their priority", async () => {
      await timed("conflist reload", () => useConflist(withTsnproxy()));
      main = await timed("RunPodSandbox + workload (bridge -> tsnproxy)", () => talker("main"));
      const { pod, w } = main;
      assert.equal(node.podPins(pod.id).length, 2, "admit and the saver pinned");
      const e = node.entryOf(pod.id);
      assert.ok(e?.host, "no entry under the pod's host veth");
      assert.equal(e.entry.policy.maxPriority, PRIORITY_MAX, "the node's policy: no ceiling");
      assert.equal(e.entry.carrier, "tag", "nothing else on the bridge's way reads tc_index");
      assert.ok((await bridgePorts(env.network.bridge)).includes(e.host), e.host);
      assert.equal(node.hostPrograms(e.host)[0], "tsnp_admit", "admit first on the host veth");
      assert.ok(
        (await node.podEgressPrograms(pod.netnsPath)).includes("tsnp_save"),
        "saver not on the pod's eth0 egress",
      );
      for (const dst of [node.farIp, node.serviceIp]) {
        const u = await timed(
          `UDP x${UDP_COUNT} to ${dst}`,
          () => send(w, { dst, port: node.farPort, proto: "udp", count: UDP_COUNT, prio: 3 }),
        );
        assert.equal(u.fwdTotal, UDP_COUNT, `UDP to ${dst}: ${showPrios(u)}`);
        assert.equal(u.fwdPrio[3], UDP_COUNT, `UDP to ${dst}: ${showPrios(u)}`);
        const tc = await timed(
          `TCP ${TCP_CHUNKS}x64KiB to ${dst}`,
          () => send(w, { dst, port: node.farPort, proto: "tcp", count: TCP_CHUNKS, prio: 5 }),
        );
        assert.ok(tc.fwdTotal > 0, `TCP to ${dst}: nothing left the TSN veth`);
        assert.equal(tc.fwdPrio[5], tc.fwdTotal, `TCP to ${dst}: ${showPrios(tc)}`);
      }
      // SO_TXTIME: the launch time leaves with the packet (REALTIME ones the kernel drops).
      const tw = await txtimeTalker(pod.id);
      for (const txtime of ["tai", "realtime"] as const) {
        const u = await send(tw, {
          dst: node.serviceIp,
          port: node.farPort,
          proto: "udp",
          count: 100,
          prio: 2,
          txtime,
        });
        assert.equal(u.fwdPrio[2], 100, `${txtime}: ${showPrios(u)}`);
        assert.equal(u.tsOk, 100, `${txtime}: ${showPrios(u)}`);
      }
      // The pod started before the chain changed still goes without (per pod, not per node).
      assert.ok(plainPod);
      const u = await send(plainPod.w, {
        dst: node.farIp,
        port: node.farPort,
        proto: "udp",
        count: 50,
        prio: 3,
      });
      assert.equal(u.fwdPrio[0], 50, `plain pod after the change: ${showPrios(u)}`);
    });

    await t.step("StopPodSandbox + RemovePodSandbox leave no pins, entries, tc", async () => {
      assert.ok(main && plainPod);
      const pod = main.pod;
      const prog = node.saverProgId();
      assert.equal(node.podPins(pod.id).length, 2);
      if (node.podApi === "tcx") assert.equal((await node.saverLinks()).length, 1, `prog ${prog}`);
      else assert.deepEqual(await node.podEgressPrograms(pod.netnsPath), ["tsnp_save"]);
      assert.equal((await node.admitLinks()).length, node.hostApi === "tcx" ? 1 : 0);
      const ports = await bridgePorts(env.network.bridge);
      assert.equal(ports.length, 2, `bridge ports ${ports}`);

      await timed("StopPodSandbox", () => c.stopPod(pod.id));
      assert.deepEqual(node.podPins(pod.id), []);
      assert.equal(node.entryOf(pod.id), undefined, "pod entry left after stop");
      assert.deepEqual(await node.saverLinks(), [], "saver links left after stop");
      assert.deepEqual(await node.admitLinks(), [], "admit links left after stop");
      assert.equal(await exists(pod.netnsPath), false);
      assert.equal((await bridgePorts(env.network.bridge)).length, 1);

      await timed("RemovePodSandbox", () => c.removePod(pod.id));
      assert.deepEqual(node.podPins(pod.id), []);
      assert.deepEqual(node.podAttachments(), []);
      assert.deepEqual(node.entries(), []);

      // The pod set up before tsnproxy: its DELs go through tsnproxy now, which has nothing.
      await c.stopPod(plainPod.pod.id);
      await c.removePod(plainPod.pod.id);
      assert.deepEqual(node.podAttachments(), []);
      assert.deepEqual(await bridgePorts(env.network.bridge), []);
      const left = await c.leftovers();
      assert.deepEqual(left.netns, []);
      assert.deepEqual(
        left.mounts.filter((m) => m.includes(pod.id) || m.includes(plainPod!.pod.id)),
        [],
      );
    });

    await t.step("policy: the entry's maxPriority 2 clamps a rogue SO_PRIORITY 6", async () => {
      await timed(
        "conflist reload",
        () => useConflist(withTsnproxy({ policy: { maxPriority: 2 } })),
      );
      const rogue = await talker("rogue");
      assert.equal(node.entryOf(rogue.pod.id)?.entry.policy.maxPriority, 2);
      await expectAll(rogue.w, 6, 2, "rogue");
      const tc = await send(rogue.w, {
        dst: node.serviceIp,
        port: node.farPort,
        proto: "tcp",
        count: 4,
        prio: 6,
      });
      assert.ok(tc.fwdTotal > 0);
      assert.equal(tc.fwdPrio[2], tc.fwdTotal, `rogue TCP: ${showPrios(tc)}`);
      // Priorities under the ceiling pass unchanged.
      const low = await send(rogue.w, {
        dst: node.farIp,
        port: node.farPort,
        proto: "udp",
        count: 50,
        prio: 1,
      });
      assert.equal(low.fwdPrio[1], 50, `rogue at 1: ${showPrios(low)}`);
      // A pod annotation can lower the ceiling further, never raise it.
      const lower = await talker("lower", { "tsnproxy.io/max-priority": "1" });
      const higher = await talker("higher", { "tsnproxy.io/max-priority": "5" });
      assert.equal(node.entryOf(lower.pod.id)?.entry.policy.maxPriority, 1);
      assert.equal(node.entryOf(higher.pod.id)?.entry.policy.maxPriority, 2);
      await expectAll(lower.w, 6, 1, "annotated max-priority 1");
      await expectAll(higher.w, 6, 2, "annotated max-priority 5 under entry 2");
      for (const p of [rogue, lower, higher]) {
        await c.stopPod(p.pod.id);
        await c.removePod(p.pod.id);
      }
      assert.deepEqual(node.podAttachments(), []);
      assert.deepEqual(node.entries(), []);
    });

    await t.step("policy: a pod annotation remaps 6 -> 4 and 3 -> 1, never 1 -> 6", async () => {
      await timed("conflist reload", () => useConflist(withTsnproxy()));
      // "1:6" would raise an unprivileged priority above what the node gives it: refused.
      const p = await talker("remap", { "tsnproxy.io/priority-remap": "6:4,3:1,1:6" });
      const pol = node.entryOf(p.pod.id)?.entry.policy;
      assert.ok(pol, "no entry for the pod");
      assert.equal(pol.remap[6], 4);
      assert.equal(pol.remap[3], 1);
      assert.equal(pol.remap[5], 5);
      assert.equal(pol.remap[1], 1, "a raise is refused");
      await expectAll(p.w, 6, 4, "remapped 6");
      await expectAll(p.w, 3, 1, "remapped 3");
      await expectAll(p.w, 5, 5, "identity 5");
      await expectAll(p.w, 1, 1, "1 not raised");
      await c.stopPod(p.pod.id);
      await c.removePod(p.pod.id);
      assert.deepEqual(node.entries(), []);
    });

    /** Sends without SO_PRIORITY unless `a.prio` is set; every packet must leave at `leaves`. */
    const expectLeaves = async (w: string, a: SendArgs, leaves: number, label: string) => {
      const c = await send(w, a);
      const what = `${label} (${a.proto} to ${a.dst}${
        a.prio === undefined ? ", no SO_PRIORITY" : `, SO_PRIORITY ${a.prio}`
      })`;
      if (a.proto === "udp") assert.equal(c.fwdTotal, a.count, `${what}: ${showPrios(c)}`);
      else assert.ok(c.fwdTotal > 0, `${what}: nothing left the TSN veth`);
      assert.equal(c.fwdPrio[leaves], c.fwdTotal, `${what}: all at ${leaves}? ${showPrios(c)}`);
    };
    const udpTo = (dst: string, prio?: number): SendArgs => ({
      dst,
      port: node.farPort,
      proto: "udp",
      count: UDP_COUNT,
      ...(prio === undefined ? {} : { prio }),
    });
    const tcpTo = (dst: string, prio?: number): SendArgs => ({
      dst,
      port: node.farPort,
      proto: "tcp",
      count: 4,
      ...(prio === undefined ? {} : { prio }),
    });
    const removePods = async (pods: Array<{ pod: Pod }>) => {
      for (const p of pods) {
        await c.stopPod(p.pod.id);
        await c.removePod(p.pod.id);
      }
      assert.deepEqual(node.podAttachments(), []);
      assert.deepEqual(node.entries(), []);
    };

    await t.step(
      "default priority and rules by annotation: a sender without SO_PRIORITY gets its class",
      async () => {
        await timed("conflist reload", () => useConflist(withTsnproxy()));
        // Rules: UDP to the Service's address (as the pod addresses it, before the DNAT) at
        // 6; TCP to ports 8000-8090 at 5; anything else without a priority at the default 4.
        const rules = `udp:${node.farPort}@${node.serviceIp}/32=6,tcp:8000-8090=5`;
        const cls = await talker("classified", {
          "tsnproxy.io/default-priority": "4",
          "tsnproxy.io/priority-rules": rules,
        });
        const none = await talker("unclassified");
        const pol = node.entryOf(cls.pod.id)?.entry.policy;
        assert.ok(pol, "no entry for the annotated pod");
        assert.equal(pol.defaultPriority, 4);
        assert.deepEqual(pol.rules.map((r) => r.priority), [6, 5]);
        assert.equal(node.entryOf(none.pod.id)?.entry.policy.defaultPriority, 0);

        await expectLeaves(cls.w, udpTo(node.farIp), 4, "the default");
        await expectLeaves(cls.w, udpTo(node.serviceIp), 6, "rule udp:8080@Service");
        await expectLeaves(cls.w, tcpTo(node.farIp), 5, "rule tcp:8000-8090");
        await expectLeaves(cls.w, tcpTo(node.serviceIp), 5, "rule tcp:8000-8090, Service");
        // A socket that sets its priority keeps it, rule or not.
        await expectLeaves(cls.w, udpTo(node.serviceIp, 2), 2, "its own, a rule matches");
        await expectLeaves(cls.w, udpTo(node.farIp, 1), 1, "its own, no rule matches");
        await expectLeaves(cls.w, tcpTo(node.farIp, 3), 3, "its own TCP");
        // The same sender in a pod without the annotations: 0.
        await expectLeaves(none.w, udpTo(node.farIp), 0, "no annotation");
        await expectLeaves(none.w, udpTo(node.serviceIp), 0, "no annotation");
        await expectLeaves(none.w, tcpTo(node.farIp), 0, "no annotation");
        await removePods([cls, none]);
      },
    );

    await t.step("the node's ceiling caps default priorities and rules", async () => {
      node.setNodePolicy("policy:\n  maxPriority: 3\n");
      try {
        const capped = await talker("capped", {
          "tsnproxy.io/default-priority": "6",
          "tsnproxy.io/priority-rules": `udp:${node.farPort}@${node.serviceIp}=5,tcp:8080=1`,
        });
        // The pod's own ceiling caps them too.
        const own = await talker("ownceiling", {
          "tsnproxy.io/default-priority": "5",
          "tsnproxy.io/max-priority": "2",
        });
        const pol = node.entryOf(capped.pod.id)?.entry.policy;
        assert.ok(pol, "no entry for the capped pod");
        assert.equal(pol.maxPriority, 3, "the node's ceiling");
        assert.equal(pol.defaultPriority, 3, "the default 6 capped");
        assert.deepEqual(pol.rules.map((r) => r.priority), [3, 1], "rule 5 capped, 1 kept");
        assert.equal(node.entryOf(own.pod.id)?.entry.policy.defaultPriority, 2);

        await expectLeaves(capped.w, udpTo(node.farIp), 3, "default 6 under ceiling 3");
        await expectLeaves(capped.w, udpTo(node.serviceIp), 3, "rule at 5 under ceiling 3");
        await expectLeaves(capped.w, tcpTo(node.farIp), 1, "rule at 1 under ceiling 3");
        await expectLeaves(capped.w, udpTo(node.farIp, 6), 3, "SO_PRIORITY 6 under ceiling 3");
        await expectLeaves(capped.w, udpTo(node.farIp, 2), 2, "SO_PRIORITY 2 under ceiling 3");
        await expectLeaves(own.w, udpTo(node.farIp), 2, "default 5 under the pod's ceiling 2");
        await expectLeaves(own.w, udpTo(node.serviceIp, 3), 2, "SO_PRIORITY 3, pod ceiling 2");
        await removePods([capped, own]);
      } finally {
        node.setNodePolicy("");
      }
    });

    await t.step(
      "a bad default-priority or priority-rules annotation fails RunPodSandbox",
      async () => {
        const bad: Array<[Record<string, string>, RegExp[]]> = [
          [{ "tsnproxy.io/priority-rules": "udp:8080->6" }, [
            /annotation tsnproxy\.io\/priority-rules: "udp:8080->6" is not a rule/,
            /write \[protocol\]\[:port\[-port\]\]\[@prefix\]=priority/,
          ]],
          [{ "tsnproxy.io/priority-rules": "udp:70000=5" }, [
            /annotation tsnproxy\.io\/priority-rules\.rules\[0\]\.ports: expected a port 1\.\.65535/,
            /a policy is \{maxPriority\?/,
          ]],
          [{ "tsnproxy.io/default-priority": "high" }, [
            /annotation tsnproxy\.io\/default-priority: "high" is not a priority/,
            /use a decimal integer/,
          ]],
        ];
        for (const [annotations, want] of bad) {
          const name = `bad${bad.findIndex((b) => b[0] === annotations)}`;
          let msg = "";
          await assert.rejects(c.runPod({ name, namespace: "tsn", annotations }), (e: Error) => {
            msg = e.message;
            return true;
          });
          console.log(`  ${JSON.stringify(annotations)}: ${msg}`);
          assert.match(msg, /plugin type="tsnproxy"/, "containerd names the plugin");
          for (const re of want) assert.match(msg, re);
          assert.equal((await c.cri.listPodSandbox()).some((p) => p.metadata.name === name), false);
        }
        assert.deepEqual(node.podAttachments(), [], "a refused ADD attaches nothing");
        assert.deepEqual(node.entries(), []);
        assert.deepEqual(await bridgePorts(env.network.bridge), [], "containerd's DEL ran");
      },
    );

    await t.step("20 pods created and removed concurrently leave nothing behind", async () => {
      const pods = await timed(
        "20 concurrent RunPodSandbox",
        () => c.runPods(20, (i) => ({ name: `many${i}`, namespace: "tsn" })),
      );
      assert.equal(new Set(pods.map((p) => p.ip)).size, 20);
      for (const p of pods) {
        assert.equal(node.podPins(p.id).length, 2, `${p.name}: pins`);
        assert.ok(node.entryOf(p.id), `${p.name}: no entry`);
      }
      assert.equal(node.podAttachments().length, 20);
      const entries = node.entries();
      assert.equal(entries.length, 20);
      assert.equal(new Set(entries.map((e) => e.entry.slot)).size, 20, "a counter slot each");
      if (node.hostApi === "tcx") assert.equal((await node.admitLinks()).length, 20);
      for (const e of entries) {
        assert.equal(node.hostPrograms(e.host!)[0], "tsnp_admit", `${e.host}: admit first`);
      }
      if (node.podApi === "tcx") assert.equal((await node.saverLinks()).length, 20);
      else {
        for (const p of pods) {
          assert.deepEqual(await node.podEgressPrograms(p.netnsPath), ["tsnp_save"], p.name);
        }
      }
      assert.equal((await bridgePorts(env.network.bridge)).length, 20);

      await timed("20 concurrent Stop+RemovePodSandbox", () =>
        Promise.all(pods.map(async (p) => {
          await c.stopPod(p.id);
          await c.removePod(p.id);
        })));
      assert.deepEqual(node.podAttachments(), []);
      assert.deepEqual(node.entries(), []);
      assert.deepEqual(await node.saverLinks(), []);
      assert.deepEqual(await node.admitLinks(), []);
      assert.deepEqual(await bridgePorts(env.network.bridge), []);
      const left = await c.leftovers();
      assert.deepEqual(left.netns, []);
      assert.deepEqual(left.mounts.filter((m) => pods.some((p) => m.includes(p.id))), []);
      assert.deepEqual(await c.cri.listPodSandbox(), []);
    });

    await t.step("agentSocket: the agent's CNI server runs the verbs containerd asks", async () => {
      await withAgentServer(async (socket, st) => {
        await timed("conflist reload", () => useConflist(withTsnproxy({ agentSocket: socket })));
        const p = await timed("RunPodSandbox + workload (via the agent)", () => talker("agent"));
        const others = await timed(
          "4 concurrent RunPodSandbox (via the agent)",
          () => c.runPods(4, (i) => ({ name: `agent${i}`, namespace: "tsn" })),
        );
        assert.equal(st.served.ADD?.ok, 5, JSON.stringify(st));
        for (const pod of [p.pod, ...others]) {
          assert.equal(node.podPins(pod.id).length, 2, `${pod.name}: pins`);
          assert.ok(node.entryOf(pod.id), `${pod.name}: no entry`);
        }
        await expectAll(p.w, 3, 3, "via the agent");
        await Promise.all([p.pod, ...others].map(async (pod) => {
          await c.stopPod(pod.id);
          await c.removePod(pod.id);
        }));
        assert.deepEqual(node.podAttachments(), []);
        assert.deepEqual(node.entries(), []);
        assert.ok((st.served.DEL?.ok ?? 0) >= 5, JSON.stringify(st));
        assert.deepEqual([st.served.ADD?.error, st.served.DEL?.error], [0, 0]);
        assert.deepEqual([st.declined, st.bad], [0, 0], JSON.stringify(st));
      });
    });

    await t.step("fixture stop, then the node's teardown, leave nothing behind", async () => {
      const problems = await timed("containerd stop", () => c.stop());
      stopped = true;
      assert.deepEqual(problems, []);
      assert.deepEqual(node.podAttachments(), []);
      assert.deepEqual(node.entries(), []);
      assert.deepEqual(await node.saverLinks(), []);
      assert.deepEqual(await node.admitLinks(), []);
      assert.deepEqual(await node.cleanup(), []);
      assert.deepEqual(await node.leftovers(), []);
    });
  } finally {
    if (!stopped) await c.stop();
  }
});
