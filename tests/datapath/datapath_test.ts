/**
 * The datapath on the real kernel, in real namespaces: a pod's prioritized and
 * launch-timed packets leave the TSN interface with their metadata, through the bridge,
 * IPv4/IPv6 forwarding, MASQUERADE, a DNAT'd Service and a VXLAN overlay, in both attach
 * modes and with both carriers (the tc_index tag, the fingerprint table).
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

const UDP = 17, TCP = 6, ICMP = 1, ICMPV6 = 58;
const opts = { sanitizeOps: false, sanitizeResources: false };

/** Kernels before 6.11 have no TAI tstamp type: SO_TXTIME stamps are type 0 there. */
function kernelAtLeast(major: number, minor: number): boolean {
  const [a, b] = Deno.osRelease().split(".").map((x) => parseInt(x, 10));
  return a > major || (a === major && b >= minor);
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

/** A qdisc class id as priority ("1:<minor>"): too wide for the tag, it takes the table. */
const cls = (minor: number) => 0x10000 | minor;
const ABOVE_15 = 16; // the observer's bucket for priorities above 15

for (const api of ["tcx", "clsact"] as const satisfies readonly TcApi[]) {
  Deno.test(
    { name: `datapath [${api}]: metadata survives the node, NAT and Services`, ...opts },
    async (t) => {
      const env = await DatapathEnv.create(api, { pods: 1 });
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

        env.attachPod(pod);

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

        await t.step("UDP and TCP through a VXLAN overlay (Flannel's default): 100%", async () => {
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
        });

        await t.step("a class-id priority (above 15) takes the table: restored", async () => {
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

        await t.step("counters agree with what was sent", () => {
          const m = env.maps();
          try {
            const c = m.counters();
            assert.ok(c.saved > 0n && c.restored > 0n);
            assert.equal(c.saveFailed, 0n);
            assert.equal(c.tstampFailed, 0n);
            const pods = m.podCounters();
            assert.equal(pods.length, 1);
            assert.ok(pods[0].restored > 0n);
          } finally {
            m.close();
          }
        });

        await t.step("detach removes every attachment and policy", () => {
          assert.ok(env.detachPod(pod) >= 1);
          const m = env.maps();
          try {
            assert.equal(m.policies().length, 0);
          } finally {
            m.close();
          }
          assert.equal(env.detachPod(pod), 0, "a second detach is a no-op");
        });
      } finally {
        await env.destroy();
      }
    },
  );

  for (const carrier of ["tag", "table"] as const) {
    Deno.test(
      {
        name: `datapath [${api}, ${carrier}]: a pod's metadata never reaches node traffic`,
        ...opts,
      },
      async () => {
        // Worst case from kernel.md, made worse: pod-to-pod packets with a priority are saved
        // but never restored (they stay on the bridge) while the node sends priority-0 packets
        // out of tsn0 on the same CPU whose fingerprint is forged identical (raw sockets, same
        // IP id, length and payload; the kernel would give them different IP ids).
        const env = await DatapathEnv.create(api, { pods: 2 });
        const [a, b] = env.topo.pods;
        try {
          env.attachPod(a);
          env.attachPod(b);
          env.spawn(b.netns, ["socat", "-u", "UDP-RECV:8080", "/dev/null"]);
          env.observer.filter(UDP, 8080);
          const n = 5000;
          const prio = carrier === "tag" ? 5 : cls(5);
          await Promise.all([
            env.send(a.netns, { dst: b.ipv4, count: n, prio, rawIpId: 777, cpu: 0 }),
            env.send(env.topo.node, { dst: FAR_V4, count: n, prio: 0, rawIpId: 777, cpu: 0 }),
          ]);
          const c = env.observer.counts();
          assert.equal(c.localTotal, n, "every node packet leaves tsn0");
          assert.equal(c.localPrio[0], n, `node packets with a pod's priority: ${c.localPrio}`);
          const m = env.maps();
          try {
            if (carrier === "table") {
              // The hazard was real: the pod's packets, never restored, left their entries,
              // and the node's forged packets carried the same fingerprints meanwhile.
              assert.ok(m.metaOccupancy() > 0, "the pod's entries should still be in the table");
            } else {
              // The tag travels on the packet: nothing is left behind to go stale.
              assert.equal(m.metaOccupancy(), 0);
              assert.ok(m.counters().saved >= BigInt(n));
            }
          } finally {
            m.close();
          }
        } finally {
          await env.destroy();
        }
      },
    );
  }

  for (const carrier of ["tag", "table"] as const) {
    Deno.test(
      { name: `datapath [${api}, ${carrier}]: 100% restored under a pod-to-pod flood`, ...opts },
      async () => {
        const env = await DatapathEnv.create(api, { pods: 3, mapEntries: 4096 });
        const [talker, flooder, sink] = env.topo.pods;
        // The table carries what the tag cannot: here a class-id priority for the flood and
        // a REALTIME launch time (which the kernel drops) for the talker.
        const table = carrier === "table";
        try {
          for (const p of env.topo.pods) env.attachPod(p);
          env.spawn(sink.netns, ["socat", "-u", "UDP-RECV:9000", "/dev/null"]);
          env.observer.filter(UDP, 8080);
          const flood = env.send(flooder.netns, {
            dst: sink.ipv4,
            port: 9000,
            count: 150_000,
            prio: table ? cls(6) : 6,
          });
          await new Promise((r) => setTimeout(r, 300));
          await env.send(talker.netns, {
            dst: FAR_V4,
            count: 5000,
            prio: 3,
            pps: 20000,
            txtime: table ? "realtime" : undefined,
          });
          await flood;
          const c = env.observer.counts();
          assert.equal(c.fwdTotal, 5000);
          assert.equal(c.fwdPrio[3], 5000, `priorities seen: ${c.fwdPrio}`);
          if (table) assert.equal(c.tsOk, 5000, `launch times: ok ${c.tsOk} none ${c.tsNone}`);
          const m = env.maps();
          try {
            const k = m.counters();
            assert.equal(k.saveFailed, 0n, "the map never refuses an insert");
            assert.ok(k.saved > 100_000n, "the flood was saved");
            if (table) assert.ok(k.savedTable > 100_000n, "the flood filled the map many times");
            else assert.equal(k.savedTable, 0n, "nothing needed the table");
          } finally {
            m.close();
          }
        } finally {
          await env.destroy();
        }
      },
    );
  }

  Deno.test(
    { name: `datapath [${api}]: a pod that routes another pod's packets drops its tag`, ...opts },
    async () => {
      // Pod A sends to the far end through pod R, which forwards (a router or VPN pod). A's
      // packets reach R tagged with priority 3; what R sends on is R's own packet (priority
      // 0 from R's forwarding), and must not leave the node with A's priority.
      const env = await DatapathEnv.create(api, { pods: 2 });
      const [a, router] = env.topo.pods;
      try {
        env.attachPod(a);
        env.attachPod(router);
        for (
          const k of ["ip_forward=1", "conf.all.send_redirects=0", "conf.eth0.send_redirects=0"]
        ) {
          await env.topo.exec(router.netns, ["sysctl", "-qw", `net.ipv4.${k}`]);
        }
        await env.topo.exec(a.netns, ["ip", "route", "add", FAR_V4, "via", router.ipv4]);
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
    { name: `datapath [${api}]: an XDP program on the host veth changes nothing`, ...opts },
    async (t) => {
      // XDP on the host veth re-creates the skb (kernel.md: it broke pointer keys). The tag is
      // copied with the skb's header; the table keys by content.
      const env = await DatapathEnv.create(api, { pods: 1 });
      const [pod] = env.topo.pods;
      const xdp = compileTestBpf();
      try {
        env.attachPod(pod);
        for (const mode of ["xdpgeneric", "xdpdrv"] as const) {
          await t.step(`${mode}: tag and table restored`, async () => {
            const link = ["ip", "-n", env.topo.node, "link", "set", "dev", pod.hostVeth];
            await run([...link, mode, "obj", xdp.object, "sec", "xdp"]);
            try {
              env.observer.filter(UDP, 8080);
              await env.send(pod.netns, { dst: FAR_V4, count: 200, prio: 3 });
              await env.send(pod.netns, { dst: FAR_V4, count: 100, prio: 2, txtime: "realtime" });
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

  Deno.test(
    { name: `datapath [${api}]: a tc filter returning OK resets the tag; carrier table`, ...opts },
    async (t) => {
      // The kernel sets tc_index = TC_H_MIN(classid) after a classic tc filter's TC_ACT_OK
      // (tc_run); a primary CNI's cls_bpf program on the host veth does that.
      const env = await DatapathEnv.create(api, { pods: 1 });
      const [pod] = env.topo.pods;
      const obj = compileTestBpf();
      try {
        env.attachPod(pod);
        const tc = ["ip", "netns", "exec", env.topo.node, "tc"];
        await run([...tc, "qdisc", "add", "dev", pod.hostVeth, "clsact"]);
        await run([...tc, "filter", "add", "dev", pod.hostVeth, "ingress", "bpf", "da", "obj"]
          .concat([obj.object, "sec", "classifier_ok"]));
        await t.step("carrier tag: the priority is lost (what doctor warns about)", async () => {
          env.observer.filter(UDP, 8080);
          await env.send(pod.netns, { dst: FAR_V4, count: 200, prio: 3 });
          assert.equal(env.observer.counts().fwdPrio[0], 200);
        });
        await t.step("carrier table: restored", async () => {
          const m = env.maps();
          try {
            m.writeConfig({ ...m.readConfig(), carrier: "table" });
          } finally {
            m.close();
          }
          env.observer.filter(UDP, 8080);
          await env.send(pod.netns, { dst: FAR_V4, count: 200, prio: 3 });
          const c = env.observer.counts();
          assert.equal(c.fwdPrio[3], 200, `priorities seen: ${c.fwdPrio}`);
        });
      } finally {
        obj.cleanup();
        await env.destroy();
      }
    },
  );

  Deno.test({ name: `datapath [${api}]: pod policy clamps and remaps`, ...opts }, async () => {
    const env = await DatapathEnv.create(api, { pods: 2 });
    const [clamped, remapped] = env.topo.pods;
    try {
      env.attachPod(clamped, { maxPriority: 2 });
      const remap = Array.from({ length: 16 }, (_, i) => i);
      remap[6] = 4;
      env.attachPod(remapped, { maxPriority: 5, remap });
      env.observer.filter(UDP, 8080);
      await env.send(clamped.netns, { dst: FAR_V4, count: 100, prio: 6 });
      await env.send(remapped.netns, { dst: FAR_V4, count: 100, prio: 6 });
      await env.send(remapped.netns, { dst: FAR_V4, count: 100, prio: 7 });
      const c = env.observer.counts();
      assert.equal(c.fwdPrio[2], 100, `clamped pod: ${c.fwdPrio}`);
      assert.equal(c.fwdPrio[4], 100, `remapped 6 -> 4: ${c.fwdPrio}`);
      assert.equal(c.fwdPrio[5], 100, `7 clamped to 5: ${c.fwdPrio}`);
      assert.equal(sum(c.fwdPrio), 300);
    } finally {
      await env.destroy();
    }
  });
}
