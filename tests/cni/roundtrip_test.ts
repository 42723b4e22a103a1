/**
 * ADD -> CHECK -> DEL -> DEL in both attach modes and both restore points (admit on the host
 * veth and the saver in the pod, every time), the pod entry ADD writes under the host veth's
 * ifindex (its policy: the node's, only lowered by the pod's layers; its carrier), CHECK
 * catching drift, and concurrent ADD/DEL processes.
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
import { DatapathMaps, type PodEntry } from "../../src/bpf/maps.ts";
import { PinLayout } from "../../src/bpf/pins.ts";
import { REASONS } from "../../src/bpf/carrier.ts";
import { ifNameToIndex } from "../../src/ffi/libc.ts";
import { PRIORITY_MAX } from "../../src/policy/types.ts";
import { randomId, run } from "../lib/run.ts";
import { addVeth, linkUp } from "../lib/netns.ts";
import { logLines } from "../lib/logs.ts";
import { nodeLogFile, removeNodePath } from "../lib/node_dirs.ts";
import { until } from "../lib/wait.ts";

async function tcFilters(pod: TestPod | undefined, dev: string, dir: string): Promise<string> {
  const ns = pod ? ["-n", pod.name] : [];
  return (await run(["tc", ...ns, "filter", "show", "dev", dev, dir])).stdout;
}

/** The pod's entry in tsnp_pods, under its host veth's ifindex. */
function podEntry(node: { bpffs: string }, pod: TestPod): PodEntry | undefined {
  const maps = DatapathMaps.open(node.bpffs);
  try {
    return maps.getPod(ifNameToIndex(pod.hostVeth));
  } finally {
    maps.close();
  }
}

/** The pod's saver (pod side) and admit (host side) attachment pins. */
function sides(node: { bpffs: string }, pod: TestPod, ifname = pod.ifname) {
  const pins = new PinLayout(node.bpffs);
  return {
    saver: pins.pod(pod.containerId, ifname, "pod"),
    admit: pins.pod(pod.containerId, ifname, "host"),
  };
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
          // Every ADD: admit on the host veth, the saver in the pod, whatever restoreAt says.
          const pins = podPins(node.bpffs, pod.containerId, pod.ifname).map(describePin);
          assert.equal(pins.length, 2, JSON.stringify(pins));
          for (const a of pins) assert.equal(a.api, api);
          const hostIndex = ifNameToIndex(pod.hostVeth);
          assert.deepEqual(
            pins.map((a) => [a.direction, a.ifindex === hostIndex]).sort(),
            [["egress", false], ["ingress", true]],
          );
          if (api === "tcx") {
            const progs = queryTcx(pod.ifname, "egress", pod.netns).map((p) => p.name);
            assert.deepEqual(progs, ["tsnp_save"]);
            assert.deepEqual(queryTcx(pod.hostVeth, "ingress").map((p) => p.name), [
              "tsnp_admit",
            ]);
          } else {
            assert.match(await tcFilters(pod, "eth0", "egress"), /tsnp_save/);
            assert.match(await tcFilters(undefined, pod.hostVeth, "ingress"), /tsnp_admit/);
          }
          // The entry: this pod's cookie, a counter slot, and the carrier for its way.
          const e = podEntry(node, pod);
          assert.ok(e, "no entry under the host veth's ifindex");
          assert.equal(e.cookie, podCookie(pod.containerId));
          assert.ok(e.slot > 0, `slot ${e.slot}`);
          if (restoreAt === "host-veth-ingress") {
            // Admit writes the priority on the host side; nothing is carried to a restorer.
            assert.deepEqual([e.carrier, e.reason], ["none", REASONS.admitOnly]);
          } else {
            // Nothing else on this pod's host veth or the node's devices reads tc_index.
            assert.deepEqual([e.carrier, e.reason], ["tag", REASONS.clean]);
          }
          assert.equal(e.policy.maxPriority, PRIORITY_MAX, "the node's: no ceiling");
          assertOk(await cni({ command: "CHECK", pod, stdin: conf }));
          assertOk(await cni({ command: "DEL", pod, stdin: conf }));
          assert.deepEqual(podPins(node.bpffs, pod.containerId, pod.ifname), []);
          if (api === "tcx") {
            assert.deepEqual(queryTcx(pod.ifname, "egress", pod.netns), []);
            assert.deepEqual(queryTcx(pod.hostVeth, "ingress"), []);
          } else {
            assert.doesNotMatch(await tcFilters(pod, "eth0", "egress"), /tsnp_save/);
            assert.doesNotMatch(await tcFilters(undefined, pod.hostVeth, "ingress"), /tsnp/);
          }
          assert.equal(podEntry(node, pod), undefined, "DEL removes the entry");
          assertOk(await cni({ command: "DEL", pod, stdin: conf }));
          assertNothingFor(node, pod);
          // CHECK after DEL fails: the attachments are gone.
          assertCniError(await cni({ command: "CHECK", pod, stdin: conf }), 104, /no saver/);
        });
      }, api);
    });
  }
}

Deno.test("attachMode auto: saver and admit on clsact (pod namespace recorded), nothing on tcx", async () => {
  await withNode(async (node) => {
    await withPod(async (pod) => {
      const conf = { ...entry(node), prevResult: prevResultFor(pod) }; // attachMode: auto
      assertOk(await cni({ command: "ADD", pod, stdin: conf }));
      const { saver, admit } = sides(node, pod);
      const s = podPins(node.bpffs, pod.containerId, pod.ifname).map(describePin);
      const saverAtt = s.find((a) => a.pin.startsWith(saver + "@"));
      const admitAtt = s.find((a) => a.pin.startsWith(admit + "@"));
      assert.equal(saverAtt?.api, "clsact");
      assert.equal(saverAtt?.netns, pod.netns, "the marker records the pod's namespace");
      // No foreign tcx program on the host veth: admit takes clsact too (no RCU wait).
      assert.equal(admitAtt?.api, "clsact");
      assert.equal(admitAtt?.netns, undefined, "admit is in the node's namespace");
      assert.deepEqual(queryTcx(pod.ifname, "egress", pod.netns), []);
      assert.deepEqual(queryTcx(pod.hostVeth, "ingress"), []);
      assert.match(await tcFilters(pod, "eth0", "egress"), /tsnp_save/);
      assert.match(await tcFilters(undefined, pod.hostVeth, "ingress"), /tsnp_admit/);
      assertOk(await cni({ command: "CHECK", pod, stdin: conf }));
      assertOk(await cni({ command: "DEL", pod, stdin: conf }));
      assert.doesNotMatch(await tcFilters(pod, "eth0", "egress"), /tsnp_save/);
      assert.doesNotMatch(await tcFilters(undefined, pod.hostVeth, "ingress"), /tsnp_admit/);
      assertNothingFor(node, pod);
    });
  });
});

for (const restoreAt of ["tsn-egress", "host-veth-ingress"] as const) {
  Deno.test({
    name: `restoreAt ${restoreAt}: the host veth is found by ifindex when prevResult lists none`,
  }, async () => {
    await withNode(async (node) => {
      await withPod(async (pod) => {
        const prev = prevResultFor(pod);
        prev.interfaces = [{ name: "eth0", sandbox: pod.netns }];
        (prev.ips as Array<Record<string, unknown>>).forEach((ip) => ip.interface = 0);
        const conf = { ...entry(node, { restoreAt, attachMode: "tcx" }), prevResult: prev };
        assertOk(await cni({ command: "ADD", pod, stdin: conf }));
        assert.deepEqual(queryTcx(pod.hostVeth, "ingress").map((p) => p.name), ["tsnp_admit"]);
        assert.equal(podEntry(node, pod)?.cookie, podCookie(pod.containerId));
        assertOk(await cni({ command: "CHECK", pod, stdin: conf }));
        assertOk(await cni({ command: "DEL", pod, stdin: conf }));
        assertNothingFor(node, pod);
      });
    });
  });
}

Deno.test("ADD writes the node's policy lowered by the pod's layers; raises refused; CHECK sees drift", async () => {
  // The node's layer (the node config): ceiling 6, remap 1 -> 0.
  const nodePolicy = `policy: {maxPriority: 6, remap: {"1": 0}}`;
  await withNode(
    async (node) => {
      const logFile = nodeLogFile("roundtrip");
      const maps = DatapathMaps.open(node.bpffs);
      try {
        await withPod(async (pod) => {
          const conf = {
            ...entry(node, {
              // entry: ceiling 5 (lowers), 7 -> 6 (what the node's ceiling gives 7 already)
              policy: { maxPriority: 5, remap: { "7": 6 } },
              capabilities: { "io.kubernetes.cri.pod-annotations": true },
              logFile,
            }),
            runtimeConfig: {
              // annotations: 3 -> 2 lowers; 2 -> 9 would raise: refused
              "io.kubernetes.cri.pod-annotations": { "tsnproxy.io/priority-remap": "3:2,2:9" },
              // runtimeConfig: ceiling 4 lowers
              tsnproxy: { maxPriority: 4 },
            },
            prevResult: prevResultFor(pod),
          };
          const args = "IgnoreUnknown=1;K8S_POD_NAME=p;TSNPROXY_PRIORITY_REMAP=7:1";
          assertOk(await cni({ command: "ADD", pod, env: { CNI_ARGS: args }, stdin: conf }));
          const hostIndex = ifNameToIndex(pod.hostVeth);
          const e = maps.getPod(hostIndex);
          assert.equal(e?.cookie, podCookie(pod.containerId));
          assert.deepEqual(maps.pods().map((p) => p.ifindex), [hostIndex], "one entry per veth");
          // Ceiling from runtimeConfig (4); remap 1->0 node, 3->2 annotation, 7->1 CNI_ARGS;
          // the rest capped at 4. A rogue socket priority 7 leaves as 1, 2 stays 2.
          assert.equal(e?.policy.maxPriority, 4);
          assert.deepEqual(e?.policy.remap, [0, 0, 2, 2, 4, 4, 4, 1, 4, 4, 4, 4, 4, 4, 4, 4]);
          // The ADD's log line says where each part came from and what was refused.
          const attached = logLines(Deno.readTextFileSync(logFile)).find((l) =>
            l.msg === "attached"
          ) as Record<string, unknown> | undefined;
          assert.ok(attached, Deno.readTextFileSync(logFile));
          assert.deepEqual(attached.policyRefused, ["annotations: remap 2 -> 9 above 2"]);
          assert.deepEqual(attached.policyFrom, {
            maxPriority: "runtimeConfig",
            remap: { "3": "annotations", "7": "cniArgs" },
          });
          assert.equal(attached.carrier, "tag");
          // CHECK with the same inputs passes; without the CNI_ARGS layer it sees the drift.
          assertOk(await cni({ command: "CHECK", pod, env: { CNI_ARGS: args }, stdin: conf }));
          assertCniError(await cni({ command: "CHECK", pod, stdin: conf }), 104, /the policy is/);
          // Someone deletes the pod's entry: CHECK names the host veth.
          maps.deletePod(hostIndex);
          assertCniError(
            await cni({ command: "CHECK", pod, env: { CNI_ARGS: args }, stdin: conf }),
            104,
            new RegExp(`no entry for ${pod.hostVeth} \\(ifindex ${hostIndex}\\) in tsnp_pods`),
          );
          // An entry of another pod under this ifindex (a recycled index): CHECK says so.
          maps.putPod(hostIndex, { ...e!, cookie: podCookie("someone-else") });
          assertCniError(
            await cni({ command: "CHECK", pod, env: { CNI_ARGS: args }, stdin: conf }),
            104,
            /belongs to another pod/,
          );
          assertOk(await cni({ command: "DEL", pod, stdin: conf }));
          // DEL never removes another pod's entry: this one is not the pod's own any more.
          assert.equal(maps.getPod(hostIndex)?.cookie, podCookie("someone-else"));
          maps.deletePod(hostIndex);
          assertNothingFor(node, pod);
        });
        // With no layer above the node's, the node's policy is what the pod gets.
        await withPod(async (pod) => {
          const conf = { ...entry(node), prevResult: prevResultFor(pod) };
          assertOk(await cni({ command: "ADD", pod, stdin: conf }));
          const e = maps.getPod(ifNameToIndex(pod.hostVeth));
          assert.equal(e?.policy.maxPriority, 6);
          assert.equal(e?.policy.remap[1], 0);
          assert.equal(e?.policy.remap[7], 6);
          // An entry that asks for more than the node allows gets the node's.
          const raise = {
            ...conf,
            policy: { maxPriority: 9, remap: { "1": 5 } },
          };
          assertOk(await cni({ command: "ADD", pod, stdin: raise }));
          const r = maps.getPod(ifNameToIndex(pod.hostVeth));
          assert.equal(r?.policy.maxPriority, 6);
          assert.equal(r?.policy.remap[1], 0);
          assertOk(await cni({ command: "CHECK", pod, stdin: raise }));
          assertOk(await cni({ command: "DEL", pod, stdin: conf }));
          assertNothingFor(node, pod);
        });
      } finally {
        maps.close();
        removeNodePath(logFile);
      }
    },
    "tcx",
    nodePolicy,
  );
});

Deno.test("host-veth-ingress ADD then DEL leaves nothing behind", async () => {
  await withNode(async (node) => {
    await withPod(async (pod) => {
      const conf = {
        ...entry(node, { restoreAt: "host-veth-ingress", attachMode: "tcx" }),
        prevResult: prevResultFor(pod),
      };
      const r = await cni({ command: "ADD", pod, stdin: conf });
      assertOk(r);
      assert.equal(podState(node).entries, 1);
      assertOk(await cni({ command: "DEL", pod, stdin: conf }));
      assertNothingFor(node, pod);
      assert.deepEqual(queryTcx(pod.ifname, "egress", pod.netns), []);
      assert.deepEqual(queryTcx(pod.hostVeth, "ingress"), []);
      assert.deepEqual(podState(node), { pins: [], entries: 0 });
    });
  });
});

Deno.test("CHECK reports a deleted tcx link on either side and a recreated interface", async () => {
  await withNode(async (node) => {
    await withPod(async (pod) => {
      const conf = { ...entry(node, { attachMode: "tcx" }), prevResult: prevResultFor(pod) };
      const { saver, admit } = sides(node, pod);
      /** Re-created (DEL, then ADD once the links are gone: see the retried-ADD bug below). */
      const readd = async () => {
        assertOk(await cni({ command: "DEL", pod, stdin: conf }));
        await until(
          "the pod's links to go",
          () =>
            !queryTcx(pod.ifname, "egress", pod.netns).length &&
            !queryTcx(pod.hostVeth, "ingress").length,
        );
        assertOk(await cni({ command: "ADD", pod, stdin: conf }));
      };
      assertOk(await cni({ command: "ADD", pod, stdin: conf }));
      // A link detaches when its last pin goes, once the kernel frees the pin's inode (after
      // an RCU grace period): wait for it, as a CHECK would find it later.
      Deno.removeSync(saver);
      await until(
        "the saver's link to go",
        () => !queryTcx(pod.ifname, "egress", pod.netns).length,
      );
      assertCniError(await cni({ command: "CHECK", pod, stdin: conf }), 104, /no saver/);
      await readd();
      assertOk(await cni({ command: "CHECK", pod, stdin: conf }));
      Deno.removeSync(admit);
      await until("admit's link to go", () => !queryTcx(pod.hostVeth, "ingress").length);
      assertCniError(
        await cni({ command: "CHECK", pod, stdin: conf }),
        104,
        new RegExp(`no admit attached on ${pod.hostVeth}`),
      );
      await readd();
      // Recreate the veth pair: both links now point at dead interfaces, and the entry sits
      // under the old host ifindex.
      await run(["ip", "link", "del", pod.hostVeth]);
      await addVeth(pod.hostVeth, { name: "eth0", netns: pod.name }, { up: false });
      const check = await cni({ command: "CHECK", pod, stdin: conf });
      assertCniError(check, 104, /ifindex/);
      assert.match(String(check.json?.msg), new RegExp(`no entry for ${pod.hostVeth}`));
      assertOk(await cni({ command: "DEL", pod, stdin: conf }));
      assertNothingFor(node, pod);
    });
  });
});

Deno.test("CHECK reports a clsact filter deleted behind the plugin's back", async () => {
  await withNode(async (node) => {
    await withPod(async (pod) => {
      const conf = { ...entry(node, { attachMode: "clsact" }), prevResult: prevResultFor(pod) };
      assertOk(await cni({ command: "ADD", pod, stdin: conf }));
      await run(["tc", "-n", pod.name, "filter", "del", "dev", "eth0", "egress"]);
      assertCniError(await cni({ command: "CHECK", pod, stdin: conf }), 104, /saver/);
      assertOk(await cni({ command: "ADD", pod, stdin: conf }));
      await run(["tc", "filter", "del", "dev", pod.hostVeth, "ingress"]);
      assertCniError(await cni({ command: "CHECK", pod, stdin: conf }), 104, /admit/);
      assertOk(await cni({ command: "DEL", pod, stdin: conf }));
      assertNothingFor(node, pod);
    });
  }, "clsact");
});

Deno.test("DEL removes the pod's entry even when its pins were removed by hand", async () => {
  await withNode(async (node) => {
    await withPod(async (pod) => {
      const conf = { ...entry(node, { attachMode: "tcx" }), prevResult: prevResultFor(pod) };
      assertOk(await cni({ command: "ADD", pod, stdin: conf }));
      for (const p of podPins(node.bpffs, pod.containerId, pod.ifname)) Deno.removeSync(p);
      assertOk(await cni({ command: "DEL", pod, stdin: conf }));
      assertNothingFor(node, pod);
    });
  });
});

Deno.test("a retried ADD replaces its own tcx attachments, every time", async () => {
  await withNode(async (node) => {
    await withPod(async (pod) => {
      const conf = { ...entry(node, { attachMode: "tcx" }), prevResult: prevResultFor(pod) };
      for (let i = 0; i < 20; i++) assertOk(await cni({ command: "ADD", pod, stdin: conf }));
      assert.deepEqual(queryTcx(pod.hostVeth, "ingress").map((p) => p.name), ["tsnp_admit"]);
      assert.deepEqual(queryTcx(pod.ifname, "egress", pod.netns).map((p) => p.name), [
        "tsnp_save",
      ]);
      assertOk(await cni({ command: "DEL", pod, stdin: conf }));
      assertNothingFor(node, pod);
    });
  });
});

Deno.test("container ids with dots and underscores round-trip through the pin names", async () => {
  await withNode(async (node) => {
    await withPod(async (base) => {
      for (const containerId of [`k8s_pod.${randomId()}_1`, `a.b.c-${randomId()}`]) {
        const pod = { ...base, containerId };
        const conf = { ...entry(node), prevResult: prevResultFor(pod) };
        assertOk(await cni({ command: "ADD", pod, stdin: conf }));
        assert.equal(podPins(node.bpffs, containerId, pod.ifname).length, 2);
        assertOk(await cni({ command: "CHECK", pod, stdin: conf }));
        // GC keeps it by its exact id, and removes it once it is not listed.
        const gc = (valid: string[]) =>
          cni({
            command: "GC",
            stdin: {
              ...entry(node),
              "cni.dev/valid-attachments": valid.map((c) => ({ containerID: c, ifname: "eth0" })),
            },
          });
        assertOk(await gc([containerId]));
        assert.equal(podPins(node.bpffs, containerId, pod.ifname).length, 2);
        assertOk(await gc([containerId.replace(/[._]/g, "-")]));
        assertNothingFor(node, pod);
        assertOk(await cni({ command: "DEL", pod, stdin: conf }));
        assertNothingFor(node, pod);
      }
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
        const slots = new Set<number>();
        for (const [i, pod] of pods.entries()) {
          assert.equal(podPins(node.bpffs, pod.containerId, "eth0").length, 2);
          const e = maps.getPod(ifNameToIndex(pod.hostVeth));
          assert.equal(e?.policy.maxPriority, i);
          assert.equal(e?.cookie, podCookie(pod.containerId));
          slots.add(e!.slot);
        }
        assert.equal(slots.size, 20, `every pod its own counter slot: ${[...slots]}`);
        assert.ok(!slots.has(0));
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
      assert.deepEqual(podState(node), { pins: [], entries: 0 });
      const left = DatapathMaps.open(node.bpffs);
      try {
        assert.deepEqual(left.podCounters(), [], "every counter slot released");
      } finally {
        left.close();
      }
    } finally {
      for (const p of pods) await deletePod(p);
    }
  });
});

/** A pod whose host veth gets a chosen ifindex (0: the kernel's choice). */
async function podAtIndex(ifindex: number): Promise<TestPod> {
  const pod = await createPod();
  if (!ifindex) return pod;
  await run(["ip", "link", "del", pod.hostVeth]);
  await addVeth({ name: pod.hostVeth, index: ifindex }, { name: "eth0", netns: pod.name }, {
    up: false,
  });
  await linkUp(pod.hostVeth);
  return pod;
}

Deno.test("a recycled host ifindex: a late DEL of the old pod never removes the new pod's entry", async () => {
  await withNode(async (node) => {
    const made: TestPod[] = [];
    try {
      for (const api of ["clsact", "tcx"] as const) {
        for (let round = 0; round < 3; round++) {
          const a = await podAtIndex(0);
          made.push(a);
          const index = ifNameToIndex(a.hostVeth);
          const conf = (p: TestPod, extra = {}) => ({
            ...entry(node, { attachMode: api, ...extra }),
            prevResult: prevResultFor(p),
          });
          assertOk(await cni({ command: "ADD", pod: a, stdin: conf(a) }));
          // a's sandbox dies before its DEL; b's host veth gets a's index.
          await deletePod(a);
          const b = await podAtIndex(index);
          made.push(b);
          assert.equal(ifNameToIndex(b.hostVeth), index);
          const [del, add] = await Promise.all([
            cni({ command: "DEL", pod: a, stdin: conf(a) }),
            cni({ command: "ADD", pod: b, stdin: conf(b, { policy: { maxPriority: 3 } }) }),
          ]);
          assertOk(del);
          assertOk(add);
          const maps = DatapathMaps.open(node.bpffs);
          try {
            const e = maps.getPod(index);
            assert.equal(e?.cookie, podCookie(b.containerId), `${api} round ${round}`);
            assert.equal(e?.policy.maxPriority, 3);
          } finally {
            maps.close();
          }
          assertOk(
            await cni({ command: "CHECK", pod: b, stdin: conf(b, { policy: { maxPriority: 3 } }) }),
          );
          assertOk(await cni({ command: "DEL", pod: a, stdin: entry(node) }));
          assertNothingFor(node, a);
          assertOk(await cni({ command: "DEL", pod: b, stdin: entry(node) }));
          assertNothingFor(node, b);
          await deletePod(b);
        }
      }
      assert.deepEqual(podState(node), { pins: [], entries: 0 });
    } finally {
      for (const p of made) await deletePod(p);
    }
  });
});

Deno.test("a pod with two interfaces: DEL of one keeps the other's attachment, entry and slot", async () => {
  await withNode(async (node) => {
    await withPod(async (pod) => {
      // A second network (as Multus adds one): net1 with its own host veth.
      const peer = `${pod.hostVeth}n1`;
      await addVeth(peer, { name: "net1", netns: pod.name }, { up: false });
      try {
        await linkUp("net1", pod.name);
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
        const cookie = podCookie(pod.containerId);
        const maps = DatapathMaps.open(node.bpffs);
        try {
          const both = maps.pods();
          assert.deepEqual(
            both.map((p) => p.ifindex).sort(),
            [ifNameToIndex(pod.hostVeth), ifNameToIndex(peer)].sort(),
          );
          assert.equal(new Set(both.map((p) => p.entry.slot)).size, 1, "one slot per pod");
          assertOk(await cni({ command: "DEL", pod, stdin: conf(pod) }));
          assert.deepEqual(maps.pods().map((p) => p.ifindex), [ifNameToIndex(peer)]);
          assert.ok(maps.podCounters().some((c) => c.podCookie === cookie), "slot kept");
        } finally {
          maps.close();
        }
        assert.equal(podPins(node.bpffs, pod.containerId, "eth0").length, 0);
        assert.equal(podPins(node.bpffs, pod.containerId, "net1").length, 2);
        assertOk(await cni({ command: "CHECK", pod: net1, stdin: conf(net1) }));
        // DEL without prevResult (a runtime that lost it) still removes everything it owns.
        assertOk(await cni({ command: "DEL", pod: net1, stdin: entry(node) }));
        assert.deepEqual(podState(node), { pins: [], entries: 0 });
        const after = DatapathMaps.open(node.bpffs);
        try {
          assert.ok(!after.podCounters().some((c) => c.podCookie === cookie), "slot released");
        } finally {
          after.close();
        }
      } finally {
        await run(["ip", "link", "del", peer], { allowFail: true });
      }
    });
  });
});
