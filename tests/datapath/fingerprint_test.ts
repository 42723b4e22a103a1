/**
 * The stage carrier's fingerprint, proved through the datapath's real programs over crafted
 * packets (BPF_PROG_TEST_RUN): admit, run on an interface with a pod entry in tsnp_pods,
 * stages the priority it decides; restore, run on the same packet as the node's NAT, routing
 * and tunnels leave it (addresses, ports, TTL, TOS/ECN, checksums, IP options, link padding,
 * an outer VXLAN/Geneve/IPIP/SIT header), writes it back. What identifies another packet (IP
 * id, flow label, UDP length, TCP sequence and ack, payload) does not match; later fragments of
 * a datagram the node fragmented follow their first fragment; a packet the node sends itself
 * (no ingress interface) never matches, unless a netkit pod's packets may arrive that way;
 * entries older than the age limit never restore, and an idle CPU's restorer does not parse.
 *
 * The stage is per CPU and BPF_PROG_TEST_RUN runs the program on the calling thread's CPU:
 * the test pins its thread (sched_setaffinity through src/ffi/libc.ts sys(),
 * tests/lib/affinity.ts) so that admit and restore meet, and proves that they do not across
 * CPUs.
 *
 * BPF_PROG_TEST_RUN can neither set nor read skb->tc_index, where the saver's request and the
 * tag travel: admit sees every packet here as one whose socket set no priority and gives it
 * the pod's default or rule priority. Requests, the tag and launch times are covered with
 * real packets (tests/datapath/datapath_test.ts).
 */
import assert from "node:assert/strict";
import { testRunSkb } from "../../src/bpf/loader.ts";
import { DatapathMaps, type PodEntry } from "../../src/bpf/maps.ts";
import { PinLayout } from "../../src/bpf/pins.ts";
import { closeFd, objGetRequired } from "../../src/bpf/sys.ts";
import { REASONS } from "../../src/bpf/carrier.ts";
import { compileNode } from "../../src/policy/resolve.ts";
import type { PodPolicy } from "../../src/policy/types.ts";
import type { CounterName } from "../../src/ffi/structs/datapath.ts";
import {
  buildL2Frame,
  buildPacket,
  encapsulate,
  type PacketSpec,
  type Tunnel,
} from "../lib/packets.ts";
import { allowedCpus, currentCpu, onCpu } from "../lib/affinity.ts";
import { setUpNode, tearDownNode } from "../lib/node.ts";

const NEXT = -1; // TC_ACT_UNSPEC: both programs hand the packet on
const LO = 1; // the interface BPF_PROG_TEST_RUN runs on: the pod's "host side" here
const FORWARDED = 3; // an ingress interface: the packet was forwarded by the node
const COOKIE = 0x7e57n;

const opts = { sanitizeResources: false, sanitizeOps: false };

interface Rig {
  maps: DatapathMaps;
  admit: number;
  restore: number;
  slot: number;
}

/** The pod's entry on lo: carrier stage, `policy` as the node's layer would compile it. */
function putPod(rig: Rig, policy: PodPolicy, extra: Partial<PodEntry> = {}): void {
  rig.maps.putPod(LO, {
    cookie: COOKIE,
    slot: rig.slot,
    carrier: "stage",
    reason: REASONS.forcedTable,
    policy: compileNode(policy),
    ...extra,
  });
}

/** Admit over the packet as the pod sent it, with `prio` as the pod's default priority. */
function admitFrame(rig: Rig, frame: Uint8Array<ArrayBuffer>, prio: number): void {
  putPod(rig, { defaultPriority: prio });
  const r = testRunSkb(rig.admit, frame, { ifindex: LO });
  assert.equal(r.retval, NEXT, "admit hands the packet on");
  assert.equal(r.skb.priority, prio, "admit writes the pod's priority");
}

const admitIt = (rig: Rig, p: PacketSpec, prio: number) => admitFrame(rig, buildPacket(p), prio);

/** Restore over the packet as it leaves the node; returns the priority it leaves with. */
function restoreFrame(rig: Rig, frame: Uint8Array<ArrayBuffer>, ingress = FORWARDED): number {
  const r = testRunSkb(rig.restore, frame, { ingress_ifindex: ingress });
  assert.equal(r.retval, NEXT, "restore hands the packet on");
  return r.skb.priority;
}

const restoreIt = (rig: Rig, p: PacketSpec, ingress = FORWARDED) =>
  restoreFrame(rig, buildPacket(p), ingress);

/** How much each counter moved while fn ran. */
function delta(rig: Rig, fn: () => void): Partial<Record<CounterName, bigint>> {
  const before = rig.maps.counters();
  fn();
  const after = rig.maps.counters();
  const out: Partial<Record<CounterName, bigint>> = {};
  for (const k of Object.keys(after) as CounterName[]) {
    if (after[k] !== before[k]) out[k] = after[k] - before[k];
  }
  return out;
}

const text = (s: string) => new TextEncoder().encode(s);

Deno.test("fingerprint: the stage through admit and restore, NAT and tunnels", opts, async (t) => {
  const cpus = allowedCpus();
  if (cpus.length < 2) {
    console.log("fingerprint_test: one CPU allowed: the cross-CPU step is ignored");
  }
  const node = setUpNode({ api: "tcx", config: "carrier: table\ngc: {maxAgeMs: 60000}\n" });
  const pins = new PinLayout(node.bpffs);
  const rig: Rig = {
    maps: DatapathMaps.open(node.bpffs),
    admit: objGetRequired(pins.prog("admit")),
    restore: objGetRequired(pins.prog("restore")),
    slot: 0,
  };
  try {
    rig.slot = rig.maps.acquireSlot(COOKIE);
    assert.ok(rig.slot > 0);
    await onCpu(cpus[0], async () => {
      assert.equal(currentCpu(), cpus[0], "the test thread runs where it is pinned");

      const kinds: Array<[string, PacketSpec, number]> = [
        // [label, packet, payload bytes the fingerprint samples]
        ["UDP/IPv4", { family: 4, proto: "udp" }, 12],
        ["TCP/IPv4", { family: 4, proto: "tcp" }, 12],
        ["ICMP/IPv4", { family: 4, proto: "icmp" }, 12],
        ["UDP/IPv6", { family: 6, proto: "udp" }, 12],
        ["TCP/IPv6", { family: 6, proto: "tcp" }, 12],
        ["ICMPv6", { family: 6, proto: "icmp" }, 12],
        ["UDP/IPv4 in a VLAN tag", { family: 4, proto: "udp", vlan: 100 }, 12],
        ["TCP/IPv6 in two VLAN tags (QinQ)", {
          family: 6,
          proto: "tcp",
          outerVlan: 10,
          vlan: 100,
        }, 12],
        ["TCP/IPv4 with IP and TCP options", {
          family: 4,
          proto: "tcp",
          ipOptionWords: 2,
          tcpOptionWords: 3,
        }, 12],
        ["UDP/IPv6, 11-byte payload", {
          family: 6,
          proto: "udp",
          payload: new Uint8Array(11).fill(0xab),
        }, 11],
        ["UDP/IPv6, 12-byte payload", {
          family: 6,
          proto: "udp",
          payload: new Uint8Array(12).fill(0xcd),
        }, 12],
        ["UDP/IPv4, 3-byte payload", {
          family: 4,
          proto: "udp",
          payload: new Uint8Array([1, 2, 3]),
        }, 3],
        ["IPv4 later fragment", { family: 4, proto: "udp", df: false, fragOffset: 185 }, 12],
      ];
      for (const [label, spec, sampled] of kinds) {
        await t.step(`${label}: staged by admit, restored; its last sampled byte counts`, () => {
          const d = delta(rig, () => {
            admitIt(rig, spec, 5);
            assert.equal(restoreIt(rig, spec), 5);
          });
          assert.equal(d.staged, 1n);
          assert.equal(d.restoredStage, 1n);
          // The fingerprint reads the payload where this kind's headers end: changing the
          // last byte it samples makes another packet.
          const payload = new Uint8Array(
            spec.payload ?? text("tsnproxy-payload-0123456789"),
          );
          const changed = payload.slice();
          changed[sampled - 1] ^= 0xff;
          // A later fragment's "payload" starts at the IP header's end: the UDP header the
          // builder writes there, then the payload.
          const other = spec.fragOffset
            ? { ...spec, sport: (spec.sport ?? 40000) ^ 1 }
            : { ...spec, payload: changed };
          assert.equal(restoreIt(rig, other), 0, "a different packet is not restored");
        });
      }
      await t.step("UDP/IPv4, no payload: restored; another IP id is another packet", () => {
        const spec: PacketSpec = { family: 4, proto: "udp", payload: new Uint8Array(0) };
        admitIt(rig, spec, 3);
        assert.equal(restoreIt(rig, spec), 3);
        assert.equal(restoreIt(rig, { ...spec, ipId: 0x4321 }), 0);
      });

      const base: PacketSpec = {
        family: 4,
        proto: "tcp",
        tcpSeq: 777,
        payload: text("abcdefghijklmnop"),
      };
      const natted: Array<[string, PacketSpec, Partial<PacketSpec>]> = [
        ["SNAT of the source address and port", base, { src: "198.18.0.1", sport: 61000 }],
        ["DNAT of the destination address and port", base, { dst: "10.0.0.99", dport: 9999 }],
        ["a TTL decremented by routing", base, { ttl: 63 }],
        ["ECN marked in the TOS", base, { tos: 0x03 }],
        ["DSCP rewritten", base, { tos: 0xb8 }],
        ["the L4 checksum rewritten", base, { l4Checksum: 0xbeef }],
        ["IP options added (the IP total length is not part of it)", base, {
          ipOptionWords: 1,
        }],
        ["IPv6 NAT66 and hop limit", { family: 6, proto: "udp" }, {
          src: "2001:db8::99",
          dst: "fd00:1::2",
          sport: 1,
          ttl: 1,
        }],
        ["IPv6 traffic class rewritten", { family: 6, proto: "tcp" }, { tos: 0x2e }],
        ["ICMP id rewritten (ICMP NAT)", { family: 4, proto: "icmp", icmpId: 7 }, {
          icmpId: 4242,
        }],
        ["ICMPv6 id rewritten", { family: 6, proto: "icmp", icmpId: 7 }, { icmpId: 1 }],
      ];
      for (const [label, spec, change] of natted) {
        await t.step(`restored after ${label}`, () => {
          admitIt(rig, spec, 6);
          assert.equal(restoreIt(rig, { ...spec, ...change }), 6);
        });
      }
      await t.step("link-layer padding is not payload: restored when it differs", () => {
        const short: PacketSpec = { family: 4, proto: "udp", payload: new Uint8Array([1, 2, 3]) };
        admitIt(rig, { ...short, padByte: 0 }, 5);
        assert.equal(restoreIt(rig, { ...short, padByte: 0xee }), 5);
      });

      const different: Array<[string, PacketSpec, Partial<PacketSpec>]> = [
        ["IP id", base, { ipId: 0x4321 }],
        ["TCP sequence", base, { tcpSeq: 778 }],
        ["TCP ack", base, { tcpAck: 2001 }],
        ["TCP flags", base, { tcpFlags: 0x10 }],
        ["payload byte", base, { payload: text("abcdefghijkXmnop") }],
        ["UDP length (same first bytes)", {
          family: 4,
          proto: "udp",
          payload: text("0123456789abcdef"),
        }, {
          payload: text("0123456789abcdefg"),
        }],
        ["IPv6 flow label", { family: 6, proto: "udp" }, { flowLabel: 0x54321 }],
        ["ICMP sequence", { family: 4, proto: "icmp" }, { icmpSeq: 2 }],
        ["protocol", { family: 4, proto: "udp" }, { proto: "tcp" }],
      ];
      for (const [i, [label, common, change]] of different.entries()) {
        await t.step(`a packet differing in ${label} is not restored`, () => {
          // Entries stay staged until overwritten or too old: give each step its own packet
          // (an IP id and flow label of its own), so no earlier step's entry answers for it.
          const spec = { ...common, ipId: 0x6000 + i, flowLabel: 0x60000 + i };
          admitIt(rig, spec, 6);
          const d = delta(rig, () => assert.equal(restoreIt(rig, { ...spec, ...change }), 0));
          assert.deepEqual(d, { stageMiss: 1n });
          assert.equal(restoreIt(rig, spec), 6, "the staged packet itself still is");
        });
      }

      const tunnels: Array<[Tunnel, PacketSpec, 4 | 6]> = [
        ["vxlan", base, 4],
        ["vxlan", { family: 6, proto: "udp" }, 6],
        ["vxlan-linux", { family: 4, proto: "udp", vlan: 7 }, 4],
        ["geneve", { family: 4, proto: "udp" }, 4],
        ["geneve", { family: 6, proto: "tcp" }, 6],
        ["ipip", base, 4],
        ["sit", { family: 6, proto: "udp" }, 4],
      ];
      for (const [kind, spec, outerFamily] of tunnels) {
        const label = `${kind} (outer IPv${outerFamily}) of ${spec.proto}/IPv${spec.family}`;
        await t.step(`restored from the inner packet: ${label}`, () => {
          admitIt(rig, spec, 4);
          // The node encapsulates after SNAT; the tunnel device sends it: no ingress interface.
          const natted = { ...spec, src: spec.family === 4 ? "192.0.2.77" : "2001:db8::77" };
          for (const ingress of [0, FORWARDED]) {
            const frame = encapsulate(buildPacket(natted), { kind, outerFamily });
            assert.equal(restoreFrame(rig, frame, ingress), 4, `ingress ifindex ${ingress}`);
          }
          const other = encapsulate(buildPacket({ ...natted, ipId: 9, flowLabel: 9 }), {
            kind,
            outerFamily,
          });
          assert.equal(restoreFrame(rig, other), 0, "another inner packet is not restored");
        });
      }
      await t.step("Geneve with options: the inner packet is found after them", () => {
        const spec: PacketSpec = { family: 4, proto: "udp", sport: 3 };
        admitIt(rig, spec, 2);
        const frame = encapsulate(buildPacket(spec), { kind: "geneve", geneveOptionWords: 5 });
        assert.equal(restoreFrame(rig, frame, 0), 2);
      });

      await t.step("later fragments follow a first fragment the node made after admit", () => {
        // Admit saw the whole datagram; the node fragments it on the way out (after SNAT).
        const payload = new Uint8Array(200).map((_, i) => i);
        const whole: PacketSpec = { family: 4, proto: "udp", df: false, ipId: 0x5151, payload };
        admitIt(rig, whole, 7);
        const out = { ...whole, src: "198.18.0.9" };
        const d = delta(rig, () => {
          assert.equal(restoreIt(rig, { ...out, moreFragments: true }), 7, "first fragment");
          const later = { ...out, fragOffset: 13, payload: payload.subarray(0, 96) };
          assert.equal(restoreIt(rig, { ...later, moreFragments: true }), 7, "a middle one");
          assert.equal(restoreIt(rig, later), 7, "the last one");
          // Not another datagram's fragments: another id, or another source.
          assert.equal(restoreIt(rig, { ...later, ipId: 0x5152 }), 0);
          assert.equal(restoreIt(rig, { ...later, src: "198.18.0.10" }), 0);
        });
        assert.equal(d.restoredStage, 1n);
        assert.equal(d.restoredFrag, 2n);
      });

      await t.step("node-originated packets (ingress_ifindex 0) are never restored", () => {
        admitIt(rig, base, 6);
        assert.equal(restoreIt(rig, base, 0), 0, "the node sent a packet like the pod's");
        assert.equal(restoreIt(rig, base), 6, "the pod's own packet still restores");
      });
      await t.step("a netkit pod's packets restore without an ingress interface", () => {
        putPod(rig, { defaultPriority: 6 }, { netkit: true });
        const r = testRunSkb(rig.admit, buildPacket(base), { ifindex: LO });
        assert.equal(r.skb.priority, 6);
        assert.equal(restoreIt(rig, base, 0), 6, "redirected from the peer hook: no iif");
      });

      await t.step("a restored entry restores again (a second TSN interface, a flood)", () => {
        admitIt(rig, base, 5);
        for (let i = 0; i < 3; i++) assert.equal(restoreIt(rig, base), 5, `copy ${i}`);
      });
      await t.step("the newest admit of identical packets decides", () => {
        admitIt(rig, base, 5);
        admitIt(rig, base, 2);
        assert.equal(restoreIt(rig, base), 2);
      });

      await t.step("per-pod counters: charged to the slot admit recorded", () => {
        const mine = () => rig.maps.podCounters().find((c) => c.podCookie === COOKIE)!;
        const before = mine();
        admitIt(rig, base, 4);
        restoreIt(rig, base);
        const after = mine();
        assert.equal(after.admitted, before.admitted + 1n);
        assert.equal(after.restored, before.restored + 1n);
      });

      await t.step("admit decides from the pod's entry: rules, default, ceiling", () => {
        const ptp: PacketSpec = { family: 4, proto: "udp", dport: 319, dst: "224.0.1.129" };
        putPod(rig, {
          maxPriority: 5,
          defaultPriority: 2,
          rules: [{ protocol: "udp", ports: { from: 319, to: 320 }, priority: 7 }],
        });
        assert.equal(testRunSkb(rig.admit, buildPacket(ptp), { ifindex: LO }).skb.priority, 5);
        assert.equal(restoreIt(rig, ptp), 5, "the ceiling's value is what is staged");
        const other = { ...ptp, dport: 8080 };
        assert.equal(testRunSkb(rig.admit, buildPacket(other), { ifindex: LO }).skb.priority, 2);
        assert.equal(restoreIt(rig, other), 2);
      });

      await t.step("no pod entry on the interface: nothing decided, nothing staged", () => {
        rig.maps.deletePod(LO);
        const d = delta(rig, () => {
          const r = testRunSkb(rig.admit, buildPacket(base), { ifindex: LO, priority: 9 });
          assert.equal(r.skb.priority, 9, "untouched");
        });
        assert.deepEqual(d, { admitNoPod: 1n });
      });

      await t.step("a frame that is not IP keeps its priority and is staged (AVTP)", () => {
        const avtp = buildL2Frame(0x22f0, new Uint8Array(24).fill(3));
        putPod(rig, { defaultPriority: 3 });
        const d = delta(rig, () => {
          assert.equal(testRunSkb(rig.admit, avtp, { ifindex: LO }).skb.priority, 3);
        });
        assert.equal(d.staged, 1n, "by its ethertype and first payload bytes");
        assert.equal(d.admitted, 1n);
      });

      await t.step({
        name: "a restore on another CPU finds the entry in the admitting CPU's stage",
        ignore: cpus.length < 2,
        fn: async () => {
          // A packet held on the way (its next hop's ARP) leaves from another CPU's softirq.
          const spec: PacketSpec = { family: 4, proto: "udp", sport: 4242 };
          admitIt(rig, spec, 6);
          const seen = await onCpu(cpus[1], () => {
            assert.equal(currentCpu(), cpus[1]);
            return delta(rig, () => assert.equal(restoreIt(rig, spec), 6));
          });
          assert.equal(
            seen.restoredElsewhere,
            1n,
            `admitted on CPU ${cpus[0]}, found from ${cpus[1]}`,
          );
          assert.equal(seen.restoredStage, 1n);
          assert.equal(currentCpu(), cpus[0], "back on the first CPU");
          assert.equal(restoreIt(rig, spec), 6, "and there it restores too");
        },
      });

      await t.step("entries older than the age limit are expired, not restored", async () => {
        const cfg = rig.maps.readConfig();
        rig.maps.writeConfig({ ...cfg, stageMaxAgeNs: 50_000_000n });
        try {
          // A fresh admit keeps the restorer looking; one that shares the old entry's slot
          // would overwrite it (a miss, not an expiry): try others until one does not.
          const fresh: PacketSpec[] = [1, 2, 3, 4].map((n) => ({
            family: 4,
            proto: "udp",
            sport: 5000 + n,
          }));
          let seen: Partial<Record<CounterName, bigint>> = {};
          for (const f of fresh) {
            admitIt(rig, base, 6);
            await new Promise((r) => setTimeout(r, 150)); // > 50 ms (coarse clock: +1 tick)
            admitIt(rig, f, 1);
            seen = delta(rig, () => assert.equal(restoreIt(rig, base), 0));
            if (seen.stageExpired) break;
          }
          assert.deepEqual(seen, { stageExpired: 1n });
          // Expired once, the entry is gone: the next look is a plain miss.
          assert.deepEqual(delta(rig, () => restoreIt(rig, base)), { stageMiss: 1n });
        } finally {
          rig.maps.writeConfig(cfg);
        }
      });

      await t.step(
        "nothing staged within the age limit: the restorer does not even look",
        async () => {
          const cfg = rig.maps.readConfig();
          rig.maps.writeConfig({ ...cfg, stageMaxAgeNs: 50_000_000n });
          try {
            admitIt(rig, base, 6);
            assert.equal(restoreIt(rig, base), 6, "open right after an admit");
            await new Promise((r) => setTimeout(r, 150));
            const d = delta(rig, () => {
              assert.equal(restoreIt(rig, base), 0);
              assert.equal(restoreIt(rig, { ...base, tcpSeq: 1 }), 0);
            });
            assert.deepEqual(d, {}, "not parsed: no miss, no expiry counted");
          } finally {
            rig.maps.writeConfig(cfg);
          }
        },
      );
    });
  } finally {
    rig.maps.close();
    for (const fd of [rig.admit, rig.restore]) closeFd(fd);
    tearDownNode(node);
  }
});
