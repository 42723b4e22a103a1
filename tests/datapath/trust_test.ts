/**
 * The node's ceiling holds for every packet a pod sends, whatever the pod does inside its own
 * namespace: its own tc filters (CAP_NET_ADMIN), IP_TOS, raw sockets with another pod's
 * source address. What the pod controls is re-derived where it cannot reach: admit, on its
 * host-side interface, by the interface and never by the packet. Per-pod counters are
 * charged to the pod whose interface the packet came through.
 */
import assert from "node:assert/strict";
import { DatapathEnv } from "../lib/datapath_env.ts";
import { run } from "../lib/run.ts";
import { FAR_V4 } from "../lib/topology.ts";
import { podCookie } from "../../src/bpf/pod.ts";

const UDP = 17;
const opts = { sanitizeOps: false, sanitizeResources: false };
const CAP_3 = "policy:\n  maxPriority: 3\n";

for (const carrier of ["tag", "table"] as const) {
  Deno.test(
    { name: `trust [${carrier}]: a pod's own tc filter cannot raise its priority`, ...opts },
    async () => {
      // A pod with CAP_NET_ADMIN in its namespace writes tc_index after our saver: a classic
      // filter's class id becomes tc_index (0xa00f: the tag's marker and priority 15).
      const env = await DatapathEnv.create("tcx", {
        pods: 1,
        config: `carrier: ${carrier}\n${CAP_3}`,
      });
      const [pod] = env.topo.pods;
      try {
        await env.attachPod(pod);
        await run(["tc", "qdisc", "add", "dev", "eth0", "clsact"], {
          netns: pod.netns,
          allowFail: true,
        });
        await run(
          ["tc", "filter", "add", "dev", "eth0", "egress", "pref", "2"]
            .concat(["u32", "match", "u32", "0", "0", "classid", "1:a00f"]),
          { netns: pod.netns },
        );
        env.observer.filter(UDP, 8080);
        await env.send(pod.netns, { dst: FAR_V4, count: 300, prio: 6 });
        await env.send(pod.netns, { dst: FAR_V4, count: 300, prio: 0 });
        const c = env.observer.counts();
        assert.equal(c.fwdTotal, 600);
        assert.equal(c.fwdPrio[3] + c.fwdPrio[0], 600, `only 0..3 may leave: ${c.fwdPrio}`);
        assert.equal(c.fwdPrio[0], 600, `a forged request is no request: ${c.fwdPrio}`);
      } finally {
        await env.destroy();
      }
    },
  );

  Deno.test(
    { name: `trust [${carrier}]: IP_TOS cannot raise a capped pod's priority`, ...opts },
    async () => {
      const env = await DatapathEnv.create("tcx", {
        pods: 1,
        config: `carrier: ${carrier}\n${CAP_3}`,
      });
      const [pod] = env.topo.pods;
      try {
        await env.attachPod(pod);
        env.observer.filter(UDP, 8080);
        // IP_TOS 0x10 then SO_PRIORITY 0: forwarding would derive 6 from the TOS.
        await env.send(pod.netns, { dst: FAR_V4, count: 300, prio: 0, extra: ["--tos", "16"] });
        const c = env.observer.counts();
        assert.equal(c.fwdPrio[0], 300, `priorities seen: ${c.fwdPrio}`);
      } finally {
        await env.destroy();
      }
    },
  );

  Deno.test(
    {
      name: `trust [${carrier}]: another pod's source address changes neither policy nor counters`,
      ...opts,
    },
    async () => {
      // Pod A (ceiling 2) sends raw packets with pod B's source address (B: ceiling 3 from the
      // node). Its own policy applies, and its own counters count them.
      const env = await DatapathEnv.create("tcx", {
        pods: 2,
        config: `carrier: ${carrier}\n${CAP_3}`,
      });
      const [a, b] = env.topo.pods;
      try {
        await env.attachPod(a, { policy: { maxPriority: 2 } });
        await env.attachPod(b);
        const admitted = () => {
          const m = env.maps();
          try {
            const by = new Map(m.podCounters().map((p) => [p.podCookie, p.admitted]));
            return [a, b].map((p) => by.get(podCookie(DatapathEnv.containerId(p))) ?? 0n);
          } finally {
            m.close();
          }
        };
        const before = admitted();
        env.observer.filter(UDP, 8080);
        await env.send(a.netns, {
          dst: FAR_V4,
          count: 300,
          prio: 3,
          rawIpId: 4242,
          extra: ["--raw-src", b.ipv4],
        });
        const c = env.observer.counts();
        assert.equal(c.fwdPrio[2], 300, `A's ceiling, not B's: ${c.fwdPrio}`);
        const after = admitted();
        assert.ok(after[0] - before[0] >= 300n, `A's counter: ${before[0]} -> ${after[0]}`);
        // B's own neighbour discovery may cross its admit meanwhile; A's 300 must not.
        assert.ok(after[1] - before[1] < 300n, `B's counter: ${before[1]} -> ${after[1]}`);
      } finally {
        await env.destroy();
      }
    },
  );
}

Deno.test(
  { name: "trust: a forged tag reaching the restorer is held to the node's ceiling", ...opts },
  async () => {
    // A pod that bypasses admit (here: admit detached by hand, as for a pod created before
    // install) writes a tag with priority 15 into tc_index itself.
    const env = await DatapathEnv.create("tcx", { pods: 1, config: CAP_3 });
    const [pod] = env.topo.pods;
    try {
      await env.attachPod(pod);
      const { detach } = await import("../../src/bpf/attach.ts");
      const { PinLayout } = await import("../../src/bpf/pins.ts");
      detach(new PinLayout(env.bpffs).pod(DatapathEnv.containerId(pod), "eth0", "host"), {});
      await run(["tc", "qdisc", "add", "dev", "eth0", "clsact"], {
        netns: pod.netns,
        allowFail: true,
      });
      await run(
        ["tc", "filter", "add", "dev", "eth0", "egress", "pref", "2"]
          .concat(["u32", "match", "u32", "0", "0", "classid", "1:a00f"]),
        { netns: pod.netns },
      );
      env.observer.filter(UDP, 8080);
      await env.send(pod.netns, { dst: FAR_V4, count: 200, prio: 0 });
      const c = env.observer.counts();
      assert.equal(c.fwdPrio[3], 200, `the node's ceiling: ${c.fwdPrio}`);
      const m = env.maps();
      try {
        assert.ok(m.counters().tagClamped >= 200n);
      } finally {
        m.close();
      }
    } finally {
      await env.destroy();
    }
  },
);
