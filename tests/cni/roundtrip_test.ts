/**
 * ADD -> CHECK -> DEL -> DEL in both attach modes and both restore points, the policy
 * entries ADD writes (precedence), CHECK catching drift, and concurrent ADD/DEL processes.
 */
import assert from "node:assert/strict";
import {
  assertCniError,
  assertNothingFor,
  assertOk,
  cni,
  createPod,
  deletePod,
  entry,
  podState,
  prevResultFor,
  type TestPod,
  withNode,
  withPod,
} from "./helpers.ts";
import { podCookie, podPins } from "../../src/bpf/pod.ts";
import { describePin, queryTcx } from "../../src/bpf/attach.ts";
import { DatapathMaps } from "../../src/bpf/maps.ts";
import { run } from "../lib/run.ts";

async function tcFilters(pod: TestPod | undefined, dev: string, dir: string): Promise<string> {
  const ns = pod ? ["-n", pod.name] : [];
  return (await run(["tc", ...ns, "filter", "show", "dev", dev, dir])).stdout;
}

for (const api of ["tcx", "clsact"] as const) {
  for (const restoreAt of ["tsn-egress", "host-veth-ingress"] as const) {
    Deno.test({
      name: `ADD, CHECK, DEL, DEL with ${api}, restoreAt ${restoreAt}`,
    }, async () => {
      await withNode(async (node) => {
        await withPod(async (pod) => {
          const conf = {
            ...entry(node, { attachMode: api, restoreAt }),
            prevResult: prevResultFor(pod),
          };
          assertOk(await cni({ command: "ADD", pod, stdin: conf }));
          const pins = podPins(node.bpffs, pod.containerId, pod.ifname);
          assert.equal(pins.length, restoreAt === "host-veth-ingress" ? 2 : 1, String(pins));
          for (const p of pins) assert.equal(describePin(p).api, api);
          if (api === "tcx") {
            const progs = queryTcx(pod.ifname, "egress", pod.netns).map((p) => p.name);
            assert.deepEqual(progs, ["tsnp_save"]);
            if (restoreAt === "host-veth-ingress") {
              assert.deepEqual(queryTcx(pod.hostVeth, "ingress").map((p) => p.name), [
                "tsnp_restore",
              ]);
            }
          } else {
            assert.match(await tcFilters(pod, "eth0", "egress"), /tsnp_save/);
            if (restoreAt === "host-veth-ingress") {
              assert.match(await tcFilters(undefined, pod.hostVeth, "ingress"), /tsnp_restore/);
            }
          }
          assertOk(await cni({ command: "CHECK", pod, stdin: conf }));
          // A CHECK with another attach mode or restore point reports the mismatch.
          const other = api === "tcx" ? "clsact" : "tcx";
          assertCniError(
            await cni({ command: "CHECK", pod, stdin: { ...conf, attachMode: other } }),
            104,
            new RegExp(`attached with ${api}`),
          );
          assertOk(await cni({ command: "DEL", pod, stdin: conf }));
          assert.deepEqual(podPins(node.bpffs, pod.containerId, pod.ifname), []);
          if (api === "tcx") assert.deepEqual(queryTcx(pod.ifname, "egress", pod.netns), []);
          else assert.doesNotMatch(await tcFilters(pod, "eth0", "egress"), /tsnp_save/);
          if (restoreAt === "host-veth-ingress") {
            if (api === "tcx") assert.deepEqual(queryTcx(pod.hostVeth, "ingress"), []);
            else {
              assert.doesNotMatch(await tcFilters(undefined, pod.hostVeth, "ingress"), /tsnp/);
            }
          }
          assertOk(await cni({ command: "DEL", pod, stdin: conf }));
          assertNothingFor(node, pod);
          // CHECK after DEL fails: the attachment is gone.
          assertCniError(await cni({ command: "CHECK", pod, stdin: conf }), 104, /no saver/);
        });
      }, api);
    });
  }
}

Deno.test({
  name: "attachMode auto: saver on clsact in the pod (namespace recorded), restorer on tcx",
}, async () => {
  await withNode(async (node) => {
    await withPod(async (pod) => {
      const conf = {
        ...entry(node, { restoreAt: "host-veth-ingress" }), // attachMode defaults to auto
        prevResult: prevResultFor(pod),
      };
      assertOk(await cni({ command: "ADD", pod, stdin: conf }));
      const pins = podPins(node.bpffs, pod.containerId, pod.ifname).map(describePin);
      const saver = pins.find((a) => a.direction === "egress");
      assert.equal(saver?.api, "clsact");
      assert.equal(saver?.netns, pod.netns, "the marker records the pod's namespace");
      assert.deepEqual(queryTcx(pod.ifname, "egress", pod.netns), []);
      assert.match(await tcFilters(pod, "eth0", "egress"), /tsnp_save/);
      assert.deepEqual(queryTcx(pod.hostVeth, "ingress").map((p) => p.name), ["tsnp_restore"]);
      assertOk(await cni({ command: "CHECK", pod, stdin: conf }));
      assertOk(await cni({ command: "DEL", pod, stdin: conf }));
      assert.doesNotMatch(await tcFilters(pod, "eth0", "egress"), /tsnp_save/);
      assert.deepEqual(queryTcx(pod.hostVeth, "ingress"), []);
      assertNothingFor(node, pod);
    });
  });
});

Deno.test({
  name: "host-veth-ingress finds the peer by ifindex when prevResult lists no host veth",
}, async () => {
  await withNode(async (node) => {
    await withPod(async (pod) => {
      const prev = prevResultFor(pod);
      prev.interfaces = [{ name: "eth0", sandbox: pod.netns }];
      (prev.ips as Array<Record<string, unknown>>).forEach((ip) => ip.interface = 0);
      const conf = { ...entry(node, { restoreAt: "host-veth-ingress" }), prevResult: prev };
      assertOk(await cni({ command: "ADD", pod, stdin: conf }));
      assert.deepEqual(queryTcx(pod.hostVeth, "ingress").map((p) => p.name), ["tsnp_restore"]);
      assertOk(await cni({ command: "DEL", pod, stdin: conf }));
      assertNothingFor(node, pod);
    });
  });
});

Deno.test("ADD writes the resolved policy for every pod address; CHECK sees drift", async () => {
  await withNode(async (node) => {
    // Node default (layer 1): clamp at 6, remap 1 -> 0.
    const maps = DatapathMaps.open(node.bpffs);
    const cfg = maps.readConfig();
    maps.writeConfig({
      ...cfg,
      defaultPolicy: {
        podCookie: 0n,
        maxPriority: 6,
        remap: [0, 0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
      },
    });
    try {
      await withPod(async (pod) => {
        const conf = {
          ...entry(node, {
            policy: { maxPriority: 5, remap: { "7": 6 } },
            capabilities: { "io.kubernetes.cri.pod-annotations": true },
          }),
          runtimeConfig: {
            "io.kubernetes.cri.pod-annotations": { "tsnproxy.io/priority-remap": "3:2" },
            tsnproxy: { maxPriority: 4 },
          },
          prevResult: prevResultFor(pod),
        };
        const add = await cni({
          command: "ADD",
          pod,
          env: { CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAME=p;TSNPROXY_PRIORITY_REMAP=7:5" },
          stdin: conf,
        });
        assertOk(add);
        const cookie = podCookie(pod.containerId);
        const entries = maps.policies().filter((p) => p.policy.podCookie === cookie);
        assert.deepEqual(entries.map((e) => e.ip).sort(), [pod.ipv4, pod.ipv6].sort());
        for (const e of entries) {
          // maxPriority from runtimeConfig (4); remap 1->0 node, 3->2 annotation, 7->5 CNI_ARGS.
          assert.equal(e.policy.maxPriority, 4);
          assert.deepEqual(e.policy.remap, [0, 0, 2, 2, 4, 5, 6, 5, 8, 9, 10, 11, 12, 13, 14, 15]);
        }
        // A rogue pod asking for priority 7 is remapped to 5, then clamped to 4.
        const p7 = Math.min(entries[0].policy.remap![7], entries[0].policy.maxPriority);
        assert.equal(p7, 4);
        // CHECK with the same inputs passes; without the CNI_ARGS layer it sees the drift.
        assertOk(
          await cni({
            command: "CHECK",
            pod,
            env: { CNI_ARGS: "TSNPROXY_PRIORITY_REMAP=7:5" },
            stdin: conf,
          }),
        );
        assertCniError(await cni({ command: "CHECK", pod, stdin: conf }), 104, /policy for/);
        // Someone deletes a policy entry: CHECK names the address.
        maps.deletePolicy(pod.ipv4);
        assertCniError(
          await cni({
            command: "CHECK",
            pod,
            env: { CNI_ARGS: "TSNPROXY_PRIORITY_REMAP=7:5" },
            stdin: conf,
          }),
          104,
          new RegExp(`no policy entry for ${pod.ipv4.replace(/\./g, "\\.")}`),
        );
        assertOk(await cni({ command: "DEL", pod, stdin: conf }));
        assertNothingFor(node, pod);
      });
      // With no layer above the node default, the node default is what the pod gets.
      await withPod(async (pod) => {
        const conf = { ...entry(node), prevResult: prevResultFor(pod) };
        assertOk(await cni({ command: "ADD", pod, stdin: conf }));
        const e = maps.policies().find((p) => p.ip === pod.ipv4);
        assert.equal(e?.policy.maxPriority, 6);
        assert.equal(e?.policy.remap?.[1], 0);
        assertOk(await cni({ command: "DEL", pod, stdin: conf }));
      });
    } finally {
      maps.close();
    }
  });
});

Deno.test("host-veth-ingress ADD then DEL leaves nothing behind", async () => {
  await withNode(async (node) => {
    await withPod(async (pod) => {
      const conf = {
        ...entry(node, { restoreAt: "host-veth-ingress" }),
        prevResult: prevResultFor(pod),
      };
      const r = await cni({ command: "ADD", pod, stdin: conf });
      assertOk(r);
      assertOk(await cni({ command: "DEL", pod, stdin: conf }));
      assertNothingFor(node, pod);
      assert.deepEqual(queryTcx(pod.ifname, "egress", pod.netns), []);
      assert.deepEqual(queryTcx(pod.hostVeth, "ingress"), []);
      assert.deepEqual(podState(node), { pins: [], policies: 0 });
    });
  });
});

Deno.test("CHECK reports a deleted tcx link and a recreated interface", async () => {
  await withNode(async (node) => {
    await withPod(async (pod) => {
      const conf = { ...entry(node), prevResult: prevResultFor(pod) };
      assertOk(await cni({ command: "ADD", pod, stdin: conf }));
      Deno.removeSync(podPins(node.bpffs, pod.containerId, pod.ifname)[0]);
      assertCniError(await cni({ command: "CHECK", pod, stdin: conf }), 104, /no saver/);
      assertOk(await cni({ command: "ADD", pod, stdin: conf }));
      // Recreate eth0: the link now points at a dead ifindex.
      await run(["ip", "link", "del", pod.hostVeth]);
      await run([
        "ip",
        "link",
        "add",
        pod.hostVeth,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        pod.name,
      ]);
      assertCniError(await cni({ command: "CHECK", pod, stdin: conf }), 104, /ifindex/);
      assertOk(await cni({ command: "DEL", pod, stdin: conf }));
      assertNothingFor(node, pod);
    });
  });
});

Deno.test("20 concurrent ADD then 20 concurrent DEL processes leave nothing behind", async () => {
  await withNode(async (node) => {
    const pods: TestPod[] = [];
    try {
      for (let i = 0; i < 20; i++) pods.push(await createPod());
      const confs = pods.map((pod, i) => ({
        ...entry(node, { attachMode: i % 2 ? "clsact" : "tcx", policy: { maxPriority: i } }),
        prevResult: prevResultFor(pod),
      }));
      const adds = await Promise.all(
        pods.map((pod, i) => cni({ command: "ADD", pod, stdin: confs[i] })),
      );
      adds.forEach(assertOk);
      const maps = DatapathMaps.open(node.bpffs);
      try {
        for (const [i, pod] of pods.entries()) {
          assert.equal(podPins(node.bpffs, pod.containerId, "eth0").length, 1);
          const e = maps.policies().find((p) => p.ip === pod.ipv4);
          assert.equal(e?.policy.maxPriority, i);
          assert.equal(e?.policy.podCookie, podCookie(pod.containerId));
        }
      } finally {
        maps.close();
      }
      const checks = await Promise.all(
        pods.map((pod, i) => cni({ command: "CHECK", pod, stdin: confs[i] })),
      );
      checks.forEach(assertOk);
      const dels = await Promise.all(
        pods.map((pod, i) => cni({ command: "DEL", pod, stdin: confs[i] })),
      );
      dels.forEach(assertOk);
      assert.deepEqual(podState(node), { pins: [], policies: 0 });
    } finally {
      for (const p of pods) await deletePod(p);
    }
  });
});

Deno.test("concurrent ADD and DEL of pods sharing a recycled address keep the newer policy", async () => {
  await withNode(async (node) => {
    const a = await createPod();
    const b = await createPod();
    try {
      // b gets a's address (IP reuse after a's sandbox died but before its DEL ran).
      const prevA = prevResultFor(a);
      const prevB = prevResultFor({ ...b, ipv4: a.ipv4, ipv6: a.ipv6 });
      assertOk(await cni({ command: "ADD", pod: a, stdin: { ...entry(node), prevResult: prevA } }));
      for (let round = 0; round < 5; round++) {
        const [del, add] = await Promise.all([
          cni({ command: "DEL", pod: a, stdin: { ...entry(node), prevResult: prevA } }),
          cni({
            command: "ADD",
            pod: b,
            stdin: { ...entry(node, { policy: { maxPriority: 3 } }), prevResult: prevB },
          }),
        ]);
        assertOk(del);
        assertOk(add);
        const maps = DatapathMaps.open(node.bpffs);
        try {
          const e = maps.policies().find((p) => p.ip === a.ipv4);
          assert.equal(e?.policy.podCookie, podCookie(b.containerId), `round ${round}`);
        } finally {
          maps.close();
        }
        assertOk(await cni({ command: "DEL", pod: b, stdin: entry(node) }));
        assertOk(
          await cni({ command: "ADD", pod: a, stdin: { ...entry(node), prevResult: prevA } }),
        );
      }
      assertOk(await cni({ command: "DEL", pod: a, stdin: entry(node) }));
      assert.deepEqual(podState(node), { pins: [], policies: 0 });
    } finally {
      await deletePod(a);
      await deletePod(b);
    }
  });
});

Deno.test("a pod with two interfaces: DEL of one keeps the other's attachment and policy", async () => {
  await withNode(async (node) => {
    await withPod(async (pod) => {
      // A second network (as Multus adds one): net1 with its own addresses.
      const peer = `${pod.hostVeth}n1`;
      await run([
        "ip",
        "link",
        "add",
        peer,
        "type",
        "veth",
        "peer",
        "name",
        "net1",
        "netns",
        pod.name,
      ]);
      try {
        await run(["ip", "-n", pod.name, "link", "set", "net1", "up"]);
        const net1: TestPod = {
          ...pod,
          hostVeth: peer,
          ifname: "net1",
          ipv4: pod.ipv4.replace(/^10\.77\./, "10.78."),
          ipv6: pod.ipv6.replace(/^fd00:77:/, "fd00:78:"),
        };
        const conf = (p: TestPod) => ({ ...entry(node), prevResult: prevResultFor(p) });
        assertOk(await cni({ command: "ADD", pod, stdin: conf(pod) }));
        assertOk(await cni({ command: "ADD", pod: net1, stdin: conf(net1) }));
        assertOk(await cni({ command: "DEL", pod, stdin: conf(pod) }));
        const maps = DatapathMaps.open(node.bpffs);
        try {
          const ips = maps.policies().map((p) => p.ip).sort();
          assert.deepEqual(ips, [net1.ipv4, net1.ipv6].sort(), "only net1's policy is left");
        } finally {
          maps.close();
        }
        assert.equal(podPins(node.bpffs, pod.containerId, "eth0").length, 0);
        assert.equal(podPins(node.bpffs, pod.containerId, "net1").length, 1);
        assertOk(await cni({ command: "CHECK", pod: net1, stdin: conf(net1) }));
        // DEL without prevResult (a runtime that lost it) still removes everything it owns.
        assertOk(await cni({ command: "DEL", pod: net1, stdin: entry(node) }));
        assert.deepEqual(podState(node), { pins: [], policies: 0 });
      } finally {
        await run(["ip", "link", "del", peer], { allowFail: true });
      }
    });
  });
});
