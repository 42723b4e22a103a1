/**
 * The saver and restorer run by the kernel over crafted packets (BPF_PROG_TEST_RUN): the
 * key the saver stores equals the TypeScript mirror of the fingerprint; what NAT, routing
 * and ECN change (addresses, ports, TTL, checksums, ToS, ICMP id) still matches; what
 * identifies a different packet (IP id, length, TCP sequence, payload) does not; node
 * packets, expired entries and exhausted duplicates are refused.
 */
import assert from "node:assert/strict";
import { setupNode, teardownNode } from "../../src/bpf/node.ts";
import { startGc, testRunSkb } from "../../src/bpf/loader.ts";
import { DatapathMaps, NO_CLAMP } from "../../src/bpf/maps.ts";
import { PinLayout } from "../../src/bpf/pins.ts";
import { closeFd, mapDelete, mapNextKey, objGetRequired } from "../../src/bpf/sys.ts";
import { TsnpFp } from "../../src/ffi/structs/datapath.ts";
import { buildPacket, fingerprint, type PacketSpec } from "../lib/packets.ts";
import { randomId } from "../lib/run.ts";

const NEXT = -1; // TC_ACT_UNSPEC

/*
 * Priorities 0-15 travel in the tag (skb->tc_index), which BPF_PROG_TEST_RUN can neither set
 * nor read back (tests/datapath/datapath_test.ts covers it with real packets). A priority
 * that is a qdisc class id ("1:5" = 0x10005) takes the fingerprint table, tested here.
 */
const cls = (minor: number) => 0x10000 | minor;

function metaKeys(fd: number): string[] {
  const keys: string[] = [];
  let prev: Uint8Array<ArrayBuffer> | null = null;
  for (;;) {
    const next = new Uint8Array(TsnpFp.size);
    if (mapNextKey(fd, prev, next) < 0) return keys;
    keys.push(hex(next));
    prev = next;
  }
}
const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");

Deno.test(
  { name: "fingerprint: kernel keys, NAT invariance, refusals", sanitizeResources: false },
  async (t) => {
    const bpffs = `/sys/fs/bpf/tsnp-test-fp-${randomId()}`;
    setupNode({
      bpffs,
      mapEntries: 1024,
      restoreAt: "tsn-egress",
      api: "tcx",
      config: {
        maxAgeNs: 60_000_000_000n,
        gcIntervalNs: 60_000_000_000n,
        defaultPolicy: { podCookie: 0n, maxPriority: NO_CLAMP },
      },
    });
    const pins = new PinLayout(bpffs);
    const save = objGetRequired(pins.prog("save"));
    const restore = objGetRequired(pins.prog("restore"));
    const metaFd = objGetRequired(pins.map("tsnp_meta"));
    const maps = DatapathMaps.open(bpffs);
    const saveIt = (p: PacketSpec, priority: number, tstamp = 0n) => {
      const r = testRunSkb(save, buildPacket(p), { priority, tstamp });
      assert.equal(r.retval, NEXT, "the saver hands the packet on");
      return r;
    };
    const restoreIt = (p: PacketSpec, ingress = 3) =>
      testRunSkb(restore, buildPacket(p), { ingress_ifindex: ingress });
    const clear = () => {
      for (const k of metaKeys(metaFd)) {
        const key = new Uint8Array(k.match(/../g)!.map((x) => parseInt(x, 16)));
        mapDelete(metaFd, key);
      }
    };
    try {
      const kinds: Array<[string, PacketSpec]> = [
        ["UDP/IPv4", { family: 4, proto: "udp" }],
        ["TCP/IPv4", { family: 4, proto: "tcp" }],
        ["ICMP/IPv4", { family: 4, proto: "icmp" }],
        ["UDP/IPv6", { family: 6, proto: "udp" }],
        ["TCP/IPv6", { family: 6, proto: "tcp" }],
        ["ICMPv6", { family: 6, proto: "icmp" }],
        ["UDP/IPv4 in a VLAN tag", { family: 4, proto: "udp", vlan: 100 }],
        ["TCP/IPv6 in two VLAN tags (QinQ)", {
          family: 6,
          proto: "tcp",
          outerVlan: 10,
          vlan: 100,
        }],
        ["TCP/IPv4 with IP and TCP options", {
          family: 4,
          proto: "tcp",
          ipOptionWords: 2,
          tcpOptionWords: 3,
        }],
        ["UDP/IPv4, no payload", { family: 4, proto: "udp", payload: new Uint8Array(0) }],
        ["UDP/IPv6, 11-byte payload", {
          family: 6,
          proto: "udp",
          payload: new Uint8Array(11).fill(0xab),
        }],
        ["UDP/IPv6, 12-byte payload", {
          family: 6,
          proto: "udp",
          payload: new Uint8Array(12).fill(0xcd),
        }],
        ["IPv4 later fragment", { family: 4, proto: "udp", df: false, fragOffset: 185 }],
        ["UDP/IPv4, 3-byte payload", {
          family: 4,
          proto: "udp",
          payload: new Uint8Array([1, 2, 3]),
        }],
      ];
      for (const [label, spec] of kinds) {
        await t.step(`${label}: the saved key is the fingerprint`, () => {
          clear();
          saveIt(spec, cls(5));
          assert.deepEqual(metaKeys(metaFd), [hex(fingerprint(buildPacket(spec)))]);
        });
      }

      const base: PacketSpec = {
        family: 4,
        proto: "tcp",
        tcpSeq: 777,
        payload: new TextEncoder().encode("abcdefghijklmnop"),
      };
      const natted: Array<[string, Partial<PacketSpec>]> = [
        ["SNAT source address and port", { src: "198.18.0.1", sport: 61000 }],
        ["DNAT destination address and port", { dst: "10.0.0.99", dport: 9999 }],
        ["TTL decremented by routing", { ttl: 63 }],
        ["ECN marked in ToS", { tos: 0x03 }],
        ["L4 checksum rewritten", { l4Checksum: 0xbeef }],
      ];
      for (const [label, change] of natted) {
        await t.step(`restored after: ${label}`, () => {
          clear();
          saveIt(base, cls(6));
          const r = restoreIt({ ...base, ...change });
          assert.equal(r.retval, NEXT);
          assert.equal(r.skb.priority, cls(6));
          assert.deepEqual(metaKeys(metaFd), [], "the entry is consumed");
        });
      }
      await t.step("link-layer padding is not payload: restored when it differs", () => {
        clear();
        const short: PacketSpec = { family: 4, proto: "udp", payload: new Uint8Array([1, 2, 3]) };
        saveIt({ ...short, padByte: 0 }, cls(5));
        assert.equal(restoreIt({ ...short, padByte: 0xee }).skb.priority, cls(5));
      });

      await t.step("restored after ICMP id rewrite (ICMP NAT)", () => {
        clear();
        saveIt({ family: 4, proto: "icmp", icmpId: 7 }, cls(2));
        assert.equal(restoreIt({ family: 4, proto: "icmp", icmpId: 4242 }).skb.priority, cls(2));
      });

      const different: Array<[string, Partial<PacketSpec>]> = [
        ["IP id", { ipId: 0x4321 }],
        ["TCP sequence", { tcpSeq: 778 }],
        ["TCP ack", { tcpAck: 2001 }],
        ["payload byte", { payload: new TextEncoder().encode("abcdefghijkXmnop") }],
        ["length", { payload: new TextEncoder().encode("abcdefghijklmnopq") }],
      ];
      for (const [label, change] of different) {
        await t.step(`a packet differing in ${label} is not restored`, () => {
          clear();
          saveIt(base, cls(6));
          const before = maps.counters().notFound;
          const r = restoreIt({ ...base, ...change });
          assert.equal(r.skb.priority, 0);
          assert.equal(maps.counters().notFound, before + 1n);
        });
      }

      await t.step("node-originated packets (ingress_ifindex 0) are left alone", () => {
        clear();
        saveIt(base, cls(6));
        const before = maps.counters();
        assert.equal(restoreIt(base, 0).skb.priority, 0);
        assert.deepEqual(maps.counters(), before, "not even looked up");
        assert.equal(restoreIt(base).skb.priority, cls(6), "the pod's own packet still restores");
      });

      await t.step("identical packets in flight each restore once", () => {
        clear();
        for (let i = 0; i < 3; i++) saveIt(base, cls(4));
        for (let i = 0; i < 3; i++) assert.equal(restoreIt(base).skb.priority, cls(4), `copy ${i}`);
        assert.equal(restoreIt(base).skb.priority, 0, "a fourth copy was never saved");
      });

      await t.step("a launch time is saved and restored with its value", () => {
        clear();
        saveIt({ family: 4, proto: "udp" }, 0, 1_700_000_000_123_456_789n);
        const r = restoreIt({ family: 4, proto: "udp", sport: 1 });
        assert.equal(r.skb.tstamp, 1_700_000_000_123_456_789n);
        assert.equal(r.skb.priority, 0);
      });

      await t.step("packets without metadata are not stored", () => {
        clear();
        saveIt(base, 0);
        assert.deepEqual(metaKeys(metaFd), []);
      });

      await t.step("a priority of 0-15 goes in the tag: nothing in the table", () => {
        clear();
        const before = maps.counters();
        for (const prio of [1, 7, 15]) saveIt(base, prio);
        assert.deepEqual(metaKeys(metaFd), []);
        const after = maps.counters();
        assert.equal(after.saved, before.saved + 3n);
        assert.equal(after.savedTable, before.savedTable);
        saveIt(base, 16);
        assert.equal(metaKeys(metaFd).length, 1, "16 does not fit in the tag");
        assert.equal(maps.counters().savedTable, before.savedTable + 1n);
      });

      await t.step("a changed policy reaches the saver at once (its per-CPU cache)", () => {
        const prioOut = () => saveIt(base, 6).skb.priority;
        assert.equal(prioOut(), 6, "the node default: no clamp");
        assert.equal(prioOut(), 6, "again, from this CPU's cache");
        maps.putPolicy("10.244.0.10", { podCookie: 9n, maxPriority: 2 });
        assert.equal(prioOut(), 2, "the pod's new policy clamps");
        maps.putPolicy("10.244.0.10", { podCookie: 9n, maxPriority: 4 });
        assert.equal(prioOut(), 4, "a replaced policy applies");
        maps.deletePolicy("10.244.0.10");
        assert.equal(prioOut(), 6, "back to the default once deleted");
        maps.writeConfig({
          maxAgeNs: 60_000_000_000n,
          gcIntervalNs: 60_000_000_000n,
          defaultPolicy: { podCookie: 0n, maxPriority: 5 },
        });
        assert.equal(prioOut(), 5, "a new node default applies");
        maps.writeConfig({
          maxAgeNs: 60_000_000_000n,
          gcIntervalNs: 60_000_000_000n,
          defaultPolicy: { podCookie: 0n, maxPriority: NO_CLAMP },
        });
      });

      await t.step("entries older than maxAge are expired, not restored", async () => {
        clear();
        maps.writeConfig({
          maxAgeNs: 50_000_000n,
          gcIntervalNs: 60_000_000_000n,
          defaultPolicy: { podCookie: 0n, maxPriority: NO_CLAMP },
        });
        saveIt(base, cls(6));
        await new Promise((r) => setTimeout(r, 120));
        saveIt({ family: 4, proto: "udp" }, cls(1)); // a fresh save: the restorer does look
        const before = maps.counters().expired;
        assert.equal(restoreIt(base).skb.priority, 0);
        assert.equal(maps.counters().expired, before + 1n);
        assert.equal(
          metaKeys(metaFd).length,
          1,
          "the expired entry is deleted, the fresh one kept",
        );
      });

      await t.step("nothing saved within maxAge: the restorer does not even look", async () => {
        clear();
        // The gate needs max_age in jiffies, which the GC measures over two ticks.
        maps.writeConfig({
          maxAgeNs: 50_000_000n,
          gcIntervalNs: 20_000_000n,
          defaultPolicy: { podCookie: 0n, maxPriority: NO_CLAMP },
        });
        assert.equal(maps.restorerGate().gateJiffies, 0n, "a new max_age is measured anew");
        startGc(bpffs);
        const deadline = Date.now() + 5000;
        while (maps.restorerGate().gateJiffies === 0n && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 10));
        }
        const gate = maps.restorerGate().gateJiffies;
        // 50 ms is 5-50 jiffies at HZ 100-1000, plus the measurement's rounding and slack.
        assert.ok(gate >= 5n && gate <= 60n, `max_age in jiffies: ${gate}`);
        saveIt(base, cls(6));
        assert.equal(restoreIt(base).skb.priority, cls(6), "open right after a save");
        saveIt(base, cls(6));
        const saved = maps.counters();
        await new Promise((r) => setTimeout(r, 400)); // > max_age + slack at HZ 100
        const c0 = maps.counters();
        assert.ok(c0.gcExpired > saved.gcExpired, "the GC removed the entry");
        assert.equal(restoreIt(base).skb.priority, 0);
        const c1 = maps.counters();
        assert.equal(c1.expired, c0.expired, "no lookup, so no expiry counted");
        assert.equal(c1.notFound, c0.notFound, "no lookup, so no miss counted");
      });
    } finally {
      maps.close();
      for (const fd of [save, restore, metaFd]) closeFd(fd);
      teardownNode(bpffs);
    }
  },
);

Deno.test({
  name: "occupancy: exact, and bounded by the LRU size under churn",
  sanitizeResources: false,
}, () => {
  const bpffs = `/sys/fs/bpf/tsnp-test-occ-${randomId()}`;
  const config = {
    maxAgeNs: 10n ** 12n,
    gcIntervalNs: 10n ** 12n,
    defaultPolicy: { podCookie: 0n, maxPriority: NO_CLAMP },
  };
  setupNode({ bpffs, mapEntries: 1024, restoreAt: "tsn-egress", api: "tcx", config });
  const save = objGetRequired(new PinLayout(bpffs).prog("save"));
  const maps = DatapathMaps.open(bpffs);
  try {
    for (let i = 0; i < 3000; i++) {
      testRunSkb(save, buildPacket({ family: 4, proto: "tcp", tcpSeq: i }), { priority: cls(3) });
      if (i === 99) assert.equal(maps.metaOccupancy(), 100);
    }
    // Per-CPU LRU lists: inserts from one CPU recycle that CPU's share of the table.
    const n = maps.metaOccupancy();
    const share = Math.floor(1024 / navigator.hardwareConcurrency);
    assert.ok(n >= share / 2 && n <= 1024, `occupancy ${n} of 1024 after 3000 inserts`);
  } finally {
    maps.close();
    closeFd(save);
    teardownNode(bpffs);
  }
});
