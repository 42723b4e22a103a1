/**
 * The datapath on the real kernel, in real namespaces, set up as install and CNI ADD set it
 * up: a pod's prioritized and launch-timed packets leave the TSN interface with their
 * metadata, through the bridge, IPv4/IPv6 forwarding, MASQUERADE, a DNAT'd Service and a
 * VXLAN overlay, in both attach modes and with both carriers (the tc_index tag, the stage).
 */
import assert from "node:assert/strict";
import { DatapathEnv } from "../lib/datapath_env.ts";
import {
  FAR_V4,
  FAR_V6,
  OVERLAY_FAR_V4,
  SERVICE_V4,
  SERVICE_V6,
  VXLAN_PORT,
} from "../lib/topology.ts";
import type { TcApi } from "../../src/bpf/attach.ts";
import { compileTestBpf } from "../netlink/_bpf.ts";
import { run } from "../lib/run.ts";
import { applyDatapath, planDatapath } from "../../src/install/plan.ts";
import { withNetns } from "../../src/util/netns.ts";

const UDP = 17, TCP = 6, ICMP = 1, ICMPV6 = 58;
const opts = { sanitizeOps: false, sanitizeResources: false };

/** Kernels before 6.11 have no TAI tstamp type: SO_TXTIME stamps are type 0 there. */
function kernelAtLeast(major: number, minor: number): boolean {
  const [a, b] = Deno.osRelease().split(".").map((x) => parseInt(x, 10));
  return a > major || (a === major && b >= minor);
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

/** A qdisc class id as priority ("1:<minor>"): wider than the saver's request. */
const cls = (minor: number) => 0x10000 | minor;
const ABOVE_15 = 16; // the observer's bucket for priorities above 15

/** The node config for a carrier: "table" puts every pod on the stage. */
const carrierConfig = (c: "tag" | "table") => `carrier: ${c}\n`;

for (const api of ["tcx", "clsact"] as const satisfies readonly TcApi[]) {
  for (const carrier of ["tag", "table"] as const) {
    Deno.test(
      {
        name: `datapath [${api}, ${carrier}]: metadata survives the node, NAT and Services`,
        ...opts,
      },
      async (t) => {
        const env = await DatapathEnv.create(api, { pods: 1, config: carrierConfig(carrier) });
        const [pod] = env.topo.pods;
        const obs = env.observer;
        try {
          await t.step(
            "without tsnproxy: SO_PRIORITY=3 is lost, REALTIME launch time dropped",
            async () => {
              obs.filter(UDP, 8080);
              await env.send(pod.netns, { dst: FAR_V4, count: 200, prio: 3 });
              await env.send(pod.netns, { dst: FAR_V4, count: 50, prio: 0, txtime: "realtime" });
              const c = obs.counts();
              assert.equal(c.fwdTotal, 250, "every packet leaves tsn0");
              assert.equal(c.fwdPrio[3], 0, "the kernel zeroes the priority at the veth");
              assert.equal(c.tsNone, 50, "the kernel drops a REALTIME launch time at the veth");
            },
          );

          await env.attachPod(pod);

          const udpCases = [
            ["IPv4", FAR_V4, 8080],
            ["IPv4 via Service DNAT", SERVICE_V4, 80],
            ["IPv6", FAR_V6, 8080],
            ["IPv6 via Service DNAT", SERVICE_V6, 80],
          ] as const;
          for (const [label, dst, port] of udpCases) {
            await t.step(`UDP SO_PRIORITY=3, ${label}: 100%`, async () => {
              obs.filter(UDP, 8080);
              await env.send(pod.netns, { dst, port, count: 300, prio: 3 });
              const c = obs.counts();
              assert.equal(c.fwdTotal, 300);
              assert.equal(c.fwdPrio[3], 300, `priorities seen: ${c.fwdPrio}`);
            });
          }

          await t.step("UDP with identical payloads: every copy restored", async () => {
            obs.filter(UDP, 8080);
            await env.send(pod.netns, { dst: FAR_V4, count: 300, prio: 4, constant: true });
            const c = obs.counts();
            assert.equal(c.fwdPrio[4], 300, `priorities seen: ${c.fwdPrio}`);
          });

          await t.step("IP_TOS 0x10 with SO_PRIORITY 0: 0, not forwarding's 6", async () => {
            obs.filter(UDP, 8080);
            await env.send(pod.netns, { dst: FAR_V4, count: 200, prio: 0, extra: ["--tos", "16"] });
            const c = obs.counts();
            assert.equal(c.fwdPrio[0], 200, `priorities seen: ${c.fwdPrio}`);
          });

          for (
            const [label, dst, port] of [["IPv4", SERVICE_V4, 80], ["IPv6", FAR_V6, 8080]] as const
          ) {
            await t.step(`TCP (GSO super-packets) SO_PRIORITY=5, ${label}: 100%`, async () => {
              obs.filter(TCP, 8080);
              await env.send(pod.netns, { dst, port, proto: "tcp", count: 64, prio: 5 });
              const c = obs.counts();
              assert.ok(c.fwdTotal > 0);
              assert.equal(c.fwdPrio[5], c.fwdTotal, `priorities seen: ${c.fwdPrio}`);
              assert.ok(c.gso > 0, "the test should exercise GSO super-packets");
            });
          }

          for (
            const [label, dst, proto] of [["IPv4", FAR_V4, ICMP], ["IPv6", FAR_V6, ICMPV6]] as const
          ) {
            await t.step(`ICMP echo SO_PRIORITY=2, ${label}: 100%`, async () => {
              obs.filter(proto, 0);
              await env.send(pod.netns, { dst, proto: "icmp", count: 50, prio: 2 });
              const c = obs.counts();
              assert.equal(c.fwdTotal, 50);
              assert.equal(c.fwdPrio[2], 50, `priorities seen: ${c.fwdPrio}`);
            });
          }

          await t.step("a class-id priority (above the request's bits): restored", async () => {
            obs.filter(UDP, 8080);
            await env.send(pod.netns, { dst: SERVICE_V4, port: 80, count: 100, prio: cls(3) });
            const c = obs.counts();
            assert.equal(c.fwdPrio[ABOVE_15], 100, `priorities seen: ${c.fwdPrio}`);
          });

          await t.step("SO_TXTIME CLOCK_TAI: launch time and clock type intact", async () => {
            obs.filter(UDP, 8080);
            await env.send(pod.netns, {
              dst: SERVICE_V4,
              port: 80,
              count: 100,
              prio: 1,
              txtime: "tai",
            });
            const c = obs.counts();
            assert.equal(c.fwdPrio[1], 100);
            assert.equal(c.tsOk, 100, `ok ${c.tsOk} bad ${c.tsBad} none ${c.tsNone}`);
            const taiType = kernelAtLeast(6, 11) ? 2 : 0;
            assert.equal(c.tstampType[taiType], 100, `clock types seen: ${c.tstampType}`);
          });

          await t.step("SO_TXTIME CLOCK_REALTIME (dropped by the kernel): restored", async () => {
            obs.filter(UDP, 8080);
            await env.send(pod.netns, { dst: FAR_V6, count: 100, prio: 0, txtime: "realtime" });
            const c = obs.counts();
            assert.equal(c.tsOk, 100, `ok ${c.tsOk} bad ${c.tsBad} none ${c.tsNone}`);
            assert.equal(c.tstampType[0], 100);
            assert.equal(c.fwdPrio[0], 100);
          });

          await t.step(
            "UDP and TCP through a VXLAN overlay (Flannel's default): 100%",
            async () => {
              await env.topo.addOverlay();
              // Encapsulated, the pod's packet leaves tsn0 as one the node sends.
              obs.filter(UDP, VXLAN_PORT);
              await env.send(pod.netns, { dst: OVERLAY_FAR_V4, count: 200, prio: 3 });
              await env.send(pod.netns, { dst: OVERLAY_FAR_V4, proto: "tcp", count: 16, prio: 5 });
              const c = obs.counts();
              assert.equal(c.fwdTotal, 0);
              assert.ok(c.localPrio[5] > 0, `TCP segments seen: ${c.localPrio}`);
              assert.equal(c.localPrio[3], 200, `priorities seen: ${c.localPrio}`);
              // Not asserted: priority 0 and 7, where the node's own neighbour discovery and the
              // kernel's TCP control packets (time-wait ACKs, sent without the socket) also cross.
            },
          );

          await t.step("counters agree with what was sent, by the carrier used", () => {
            const m = env.maps();
            try {
              const c = m.counters();
              assert.ok(c.admitted > 0n);
              assert.equal(c.tstampFailed, 0n);
              assert.equal(c.reqStageMiss, 0n);
              if (carrier === "tag") assert.ok(c.restoredTag > 0n && c.tagged > 0n);
              else assert.equal(c.tagged, 0n, "every pod packet on the stage");
              assert.ok(c.restoredStage > 0n, "launch times and class ids took the stage");
              const pods = m.podCounters();
              assert.equal(pods.length, 1);
              assert.ok(pods[0].restored > 0n && pods[0].admitted >= pods[0].restored);
              const [entry] = m.pods();
              assert.equal(entry.entry.carrier, carrier === "tag" ? "tag" : "stage");
            } finally {
              m.close();
            }
          });

          await t.step("DEL removes every attachment and entry", async () => {
            await env.detachPod(pod);
            const m = env.maps();
            try {
              assert.equal(m.pods().length, 0);
            } finally {
              m.close();
            }
            assert.deepEqual([...Deno.readDirSync(`${env.bpffs}/pods`)], []);
            await env.detachPod(pod); // a second DEL is a no-op
          });
        } finally {
          await env.destroy();
        }
      },
    );

    Deno.test(
      {
        name: `datapath [${api}, ${carrier}]: a pod's metadata never reaches node traffic`,
        ...opts,
      },
      async () => {
        // Worst case: pod-to-pod packets with a priority are admitted but never restored
        // (they stay on the bridge) while the node sends priority-0 packets out of tsn0 on the
        // same CPU whose fingerprint is forged identical (raw sockets, same IP id, length and
        // payload; the kernel would give them different IP ids).
        const env = await DatapathEnv.create(api, { pods: 2, config: carrierConfig(carrier) });
        const [a, b] = env.topo.pods;
        try {
          await env.attachPod(a);
          await env.attachPod(b);
          env.spawn(b.netns, ["socat", "-u", "UDP-RECV:8080", "/dev/null"]);
          env.observer.filter(UDP, 8080);
          const n = 5000;
          await Promise.all([
            env.send(a.netns, { dst: b.ipv4, count: n, prio: 5, rawIpId: 777, cpu: 0 }),
            env.send(env.topo.node, { dst: FAR_V4, count: n, prio: 0, rawIpId: 777, cpu: 0 }),
          ]);
          const c = env.observer.counts();
          assert.equal(c.localTotal, n, "every node packet leaves tsn0");
          assert.equal(c.localPrio[0], n, `node packets with a pod's priority: ${c.localPrio}`);
          const m = env.maps();
          try {
            const k = m.counters();
            assert.ok(k.admitted >= BigInt(n), "the pod's packets were admitted");
            if (carrier === "table") assert.ok(k.staged >= BigInt(n), "and staged");
          } finally {
            m.close();
          }
        } finally {
          await env.destroy();
        }
      },
    );

    Deno.test(
      { name: `datapath [${api}, ${carrier}]: 100% restored under a pod-to-pod flood`, ...opts },
      async () => {
        const env = await DatapathEnv.create(api, { pods: 3, config: carrierConfig(carrier) });
        const [talker, flooder, sink] = env.topo.pods;
        try {
          for (const p of env.topo.pods) await env.attachPod(p);
          env.spawn(sink.netns, ["socat", "-u", "UDP-RECV:9000", "/dev/null"]);
          env.observer.filter(UDP, 8080);
          // The flood: a class-id priority (wider than the request) to a pod on the bridge,
          // admitted and staged, never restored. The talker: a REALTIME launch time, which
          // the stage carries whichever carrier the pod has.
          const flood = env.send(flooder.netns, {
            dst: sink.ipv4,
            port: 9000,
            count: 150_000,
            prio: cls(6),
          });
          await new Promise((r) => setTimeout(r, 300));
          await env.send(talker.netns, {
            dst: FAR_V4,
            count: 5000,
            prio: 3,
            pps: 20000,
            txtime: "realtime",
          });
          await flood;
          const c = env.observer.counts();
          assert.equal(c.fwdTotal, 5000);
          assert.equal(c.fwdPrio[3], 5000, `priorities seen: ${c.fwdPrio}`);
          assert.equal(c.tsOk, 5000, `launch times: ok ${c.tsOk} none ${c.tsNone}`);
          const m = env.maps();
          try {
            const k = m.counters();
            assert.ok(k.staged > 100_000n, "the flood filled the stage many times over");
            assert.equal(k.reqStageMiss, 0n);
          } finally {
            m.close();
          }
        } finally {
          await env.destroy();
        }
      },
    );

    Deno.test(
      { name: `datapath [${api}, ${carrier}]: a pod routing another pod's packets`, ...opts },
      async () => {
        // Pod A sends to the far end through pod R, which forwards (a router or VPN pod). What
        // R sends on is R's own packet (priority 0 from R's forwarding), and must not leave
        // the node with A's priority.
        const env = await DatapathEnv.create(api, { pods: 2, config: carrierConfig(carrier) });
        const [a, router] = env.topo.pods;
        try {
          await env.attachPod(a);
          await env.attachPod(router);
          for (
            const k of ["ip_forward=1", "conf.all.send_redirects=0", "conf.eth0.send_redirects=0"]
          ) {
            await run(["sysctl", "-qw", `net.ipv4.${k}`], { netns: router.netns });
          }
          await run(["ip", "route", "add", FAR_V4, "via", router.ipv4], { netns: a.netns });
          env.observer.filter(UDP, 8080);
          await env.send(a.netns, { dst: FAR_V4, count: 200, prio: 3 });
          const c = env.observer.counts();
          assert.equal(c.fwdTotal, 200);
          assert.equal(c.fwdPrio[0], 200, `priorities seen: ${c.fwdPrio}`);
        } finally {
          await env.destroy();
        }
      },
    );

    Deno.test(
      { name: `datapath [${api}, ${carrier}]: an XDP program on the host veth`, ...opts },
      async (t) => {
        // XDP on the host veth re-creates the skb (kernel.md: it broke pointer keys); admit
        // runs after it, at tc ingress.
        const env = await DatapathEnv.create(api, { pods: 1, config: carrierConfig(carrier) });
        const [pod] = env.topo.pods;
        const xdp = await compileTestBpf();
        try {
          await env.attachPod(pod);
          for (const mode of ["xdpgeneric", "xdpdrv"] as const) {
            await t.step(`${mode}: priorities and launch times restored`, async () => {
              const link = ["ip", "-n", env.topo.node, "link", "set", "dev", pod.hostVeth];
              await run([...link, mode, "obj", xdp.object, "sec", "xdp"]);
              try {
                env.observer.filter(UDP, 8080);
                await env.send(pod.netns, { dst: FAR_V4, count: 200, prio: 3 });
                await env.send(pod.netns, {
                  dst: FAR_V4,
                  count: 100,
                  prio: 2,
                  txtime: "realtime",
                });
                const c = env.observer.counts();
                assert.equal(c.fwdPrio[3], 200, `priorities seen: ${c.fwdPrio}`);
                assert.equal(c.fwdPrio[2], 100, `priorities seen: ${c.fwdPrio}`);
                assert.equal(c.tsOk, 100, `launch times: ok ${c.tsOk} none ${c.tsNone}`);
              } finally {
                await run([...link, mode, "off"]);
              }
            });
          }
        } finally {
          xdp.cleanup();
          await env.destroy();
        }
      },
    );
  }

  Deno.test(
    {
      name: `datapath [${api}]: a tc filter returning OK on the host veth: auto takes the stage`,
      ...opts,
    },
    async (t) => {
      // The kernel sets tc_index = TC_H_MIN(classid) after a classic tc filter's TC_ACT_OK
      // (tc_run): a primary CNI's cls_bpf program on the host veth resets the tag.
      const obj = await compileTestBpf();
      for (const carrier of ["auto", "tag"] as const) {
        await t.step(`carrier ${carrier}`, async () => {
          const env = await DatapathEnv.create(api, { pods: 1, config: `carrier: ${carrier}\n` });
          const [pod] = env.topo.pods;
          try {
            // As a primary CNI's ADD would, before tsnproxy's.
            const tc = ["tc", "-n", env.topo.node];
            await run([...tc, "qdisc", "add", "dev", pod.hostVeth, "clsact"]);
            await run([...tc, "filter", "add", "dev", pod.hostVeth, "ingress", "bpf", "da", "obj"]
              .concat([obj.object, "sec", "classifier_ok"]));
            await env.attachPod(pod);
            env.observer.filter(UDP, 8080);
            await env.send(pod.netns, { dst: FAR_V4, count: 200, prio: 3 });
            const c = env.observer.counts();
            const m = env.maps();
            const [entry] = m.pods();
            m.close();
            if (carrier === "auto") {
              assert.equal(entry.entry.carrier, "stage");
              assert.equal(c.fwdPrio[3], 200, `priorities seen: ${c.fwdPrio}`);
            } else {
              // Forced onto a path where it is unsafe: lost (doctor fails this node).
              assert.equal(entry.entry.carrier, "tag");
              assert.equal(c.fwdPrio[0], 200, `priorities seen: ${c.fwdPrio}`);
            }
          } finally {
            await env.destroy();
          }
        });
      }
      obj.cleanup();
    },
  );

  Deno.test(
    {
      name:
        `datapath [${api}]: a program attached after the pod's ADD: install moves it off the tag`,
      ...opts,
    },
    async () => {
      const obj = await compileTestBpf();
      const env = await DatapathEnv.create(api, { pods: 1 });
      const [pod] = env.topo.pods;
      try {
        await env.attachPod(pod);
        const entryNow = () => {
          const m = env.maps();
          try {
            return m.pods()[0].entry;
          } finally {
            m.close();
          }
        };
        assert.equal(entryNow().carrier, "tag");
        // Another datapath programs the host veth later (a CNI agent, an operator's filter).
        const tc = ["tc", "-n", env.topo.node];
        await run([...tc, "qdisc", "add", "dev", pod.hostVeth, "clsact"], { allowFail: true });
        await run([...tc, "filter", "add", "dev", pod.hostVeth, "ingress", "pref", "9", "bpf"]
          .concat(["da", "obj", obj.object, "sec", "classifier_ok"]));
        env.observer.filter(UDP, 8080);
        await env.send(pod.netns, { dst: FAR_V4, count: 100, prio: 3 });
        assert.equal(env.observer.counts().fwdPrio[0], 100, "the filter resets the tag");
        // The plan sees it and says what it will do; applying it moves the pod.
        const plan = withNetns(env.node.netns, () => planDatapath(env.node.cfg, ["tsn0"]));
        assert.deepEqual(
          plan.podCarriers.map((c) => [c.ifname, c.from, c.to, c.reason]),
          [[pod.hostVeth, "tag", "stage", "foreignOnHost"]],
        );
        withNetns(env.node.netns, () => applyDatapath(plan));
        assert.equal(entryNow().carrier, "stage");
        env.observer.reset();
        await env.send(pod.netns, { dst: FAR_V4, count: 100, prio: 3 });
        assert.equal(env.observer.counts().fwdPrio[3], 100);
        const again = withNetns(env.node.netns, () => planDatapath(env.node.cfg, ["tsn0"]));
        assert.deepEqual(again.podCarriers, [], "converged");
      } finally {
        await env.destroy();
        obj.cleanup();
      }
    },
  );

  Deno.test({ name: `datapath [${api}]: the pod's policy, node's and own`, ...opts }, async () => {
    const env = await DatapathEnv.create(api, {
      pods: 3,
      config: 'policy:\n  maxPriority: 6\n  remap: {"6": 4}\n',
    });
    const [clamped, remapped, classified] = env.topo.pods;
    try {
      await env.attachPod(clamped, { policy: { maxPriority: 2 } });
      await env.attachPod(remapped, { annotations: { "tsnproxy.io/priority-remap": "4:1,3:9" } });
      await env.attachPod(classified, {
        annotations: {
          "tsnproxy.io/default-priority": "3",
          "tsnproxy.io/priority-rules": "udp:8080@198.18.0.0/24=5",
        },
      });
      env.observer.filter(UDP, 8080);
      await env.send(clamped.netns, { dst: FAR_V4, count: 100, prio: 5 });
      await env.send(remapped.netns, { dst: FAR_V4, count: 100, prio: 6 }); // node 6->4, pod 4->1?
      await env.send(remapped.netns, { dst: FAR_V4, count: 100, prio: 3 }); // 3->9 refused
      await env.send(remapped.netns, { dst: FAR_V4, count: 100, prio: 7 }); // ceiling 6
      await env.send(classified.netns, { dst: FAR_V4, count: 100, prio: 0 }); // rule: 5
      await env.send(classified.netns, { dst: FAR_V6, count: 100, prio: 0 }); // default: 3
      await env.send(classified.netns, { dst: FAR_V4, count: 100, prio: 2 }); // its own: 2
      const c = env.observer.counts();
      assert.equal(c.fwdPrio[2], 200, `clamped pod's 5 -> 2, classified pod's own 2: ${c.fwdPrio}`);
      assert.equal(
        c.fwdPrio[4],
        100,
        `node remap 6 -> 4 (the pod's 4:1 is its 4, not 6's): ${c.fwdPrio}`,
      );
      assert.equal(c.fwdPrio[3], 200, `3 stays (3:9 refused); default 3: ${c.fwdPrio}`);
      assert.equal(c.fwdPrio[6], 100, `7 capped at 6: ${c.fwdPrio}`);
      assert.equal(c.fwdPrio[5], 100, `rule: ${c.fwdPrio}`);
      assert.equal(sum(c.fwdPrio), 700);
    } finally {
      await env.destroy();
    }
  });
}
