/**
 * Section 1b, per-program cost: BPF_PROG_TEST_RUN with a struct __sk_buff context (ctx_in)
 * so the packet carries a priority, a launch time and an ingress ifindex like the real one.
 * Figures are the kernel's own per-run average; the cost of an empty program run the same
 * way (the test loop's floor) is measured right before each run of the program and the
 * difference's median is the "net" figure: a pair shares the machine's state of the moment
 * (this shared 2-vCPU machine moves between states that shift both by 10-20 ns).
 */
import { setupNode, teardownNode } from "../../src/bpf/node.ts";
import { BpfObject } from "../../src/bpf/object.ts";
import { objectBytes } from "../../src/bpf/objects.ts";
import { PinLayout } from "../../src/bpf/pins.ts";
import {
  check,
  closeFd,
  mapDelete,
  mapNextKey,
  mapUpdate,
  objGetRequired,
} from "../../src/bpf/sys.ts";
import { DatapathMaps, NO_CLAMP } from "../../src/bpf/maps.ts";
import { startGc } from "../../src/bpf/loader.ts";
import { Errno } from "../../src/ffi/libc.ts";
import { libbpf } from "../../src/ffi/libbpf.ts";
import { BpfTestRunOpts } from "../../src/ffi/structs/bpf.ts";
import { encode } from "../../src/ffi/structs/layout.ts";
import { median, onCleanup, sleep } from "./common.ts";
import { BENCH_BPF_OBJECTS } from "./objects.gen.ts";
import { ResearchDatapath } from "./research_dp.ts";
import { addressOf } from "../../src/ffi/open.ts";

/** struct __sk_buff (uapi/linux/bpf.h, checked with offsetof on this machine). */
const SKB_SIZE = 192;
const SKB_PRIORITY = 32;
const SKB_INGRESS_IFINDEX = 36;
const SKB_TSTAMP = 152;

export interface SkbCtx {
  priority?: number;
  ingressIfindex?: number;
  tstamp?: bigint;
}

/** bpf_prog_test_run_opts with ctx_in; returns the kernel's per-run duration in ns. */
export function testRunCtx(
  fd: number,
  packet: Uint8Array<ArrayBuffer>,
  repeat: number,
  ctx: SkbCtx = {},
): { retval: number; ns: number } {
  const skb = new Uint8Array(SKB_SIZE);
  const dv = new DataView(skb.buffer);
  dv.setUint32(SKB_PRIORITY, ctx.priority ?? 0, true);
  dv.setUint32(SKB_INGRESS_IFINDEX, ctx.ingressIfindex ?? 0, true);
  dv.setBigUint64(SKB_TSTAMP, ctx.tstamp ?? 0n, true);
  const opts = encode(BpfTestRunOpts, {
    sz: BigInt(BpfTestRunOpts.size),
    data_in: addressOf(packet),
    data_size_in: packet.length,
    ctx_in: addressOf(skb),
    ctx_size_in: SKB_SIZE,
    repeat,
  });
  check(libbpf().bpf_prog_test_run_opts(fd, opts), "BPF_PROG_TEST_RUN", "run as root");
  const o = new DataView(opts.buffer);
  return {
    retval: o.getInt32(BpfTestRunOpts.fields.retval[0], true),
    ns: o.getUint32(BpfTestRunOpts.fields.duration[0], true),
  };
}

/** Ethernet + IPv4 + UDP (src 10.244.0.10:40000 -> 198.18.0.2:8080), 64 payload bytes. */
export function udp4(seq: number, ipId = seq & 0xffff): Uint8Array<ArrayBuffer> {
  const payload = 64;
  const b = new Uint8Array(14 + 20 + 8 + payload);
  const dv = new DataView(b.buffer);
  b.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1], 0);
  dv.setUint16(12, 0x0800);
  const ip = 14;
  b[ip] = 0x45;
  dv.setUint16(ip + 2, 20 + 8 + payload);
  dv.setUint16(ip + 4, ipId);
  dv.setUint16(ip + 6, 0x4000);
  b[ip + 8] = 64;
  b[ip + 9] = 17;
  b.set([10, 244, 0, 10], ip + 12);
  b.set([198, 18, 0, 2], ip + 16);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += dv.getUint16(ip + i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  dv.setUint16(ip + 10, ~sum & 0xffff);
  const udp = ip + 20;
  dv.setUint16(udp, 40000);
  dv.setUint16(udp + 2, 8080);
  dv.setUint16(udp + 4, 8 + payload);
  dv.setBigUint64(udp + 8, BigInt(seq), true);
  return b;
}

export interface CostRow {
  program: string;
  case: string;
  method: string;
  /** Median of the kernel's per-run figure. */
  ns: number;
  /** Median of (ns minus the empty program's floor measured the same way, just before). */
  netNs: number;
}

/** A program's median per-run figure and its median difference with the paired floor. */
interface Measured {
  ns: number;
  net: number;
}

export interface CostOptions {
  repeat: number;
  rounds: number;
  /** Distinct packets for the one-run-per-packet cases. */
  distinct: number;
  log: (s: string) => void;
}

function clearMap(fd: number, keySize: number): void {
  const k = new Uint8Array(keySize);
  while (mapNextKey(fd, null, k) === 0) {
    if (mapDelete(fd, k) === -Errno.ENOENT) break;
  }
}

export async function runProgCost(o: CostOptions): Promise<CostRow[]> {
  const bpffs = `/sys/fs/bpf/tsnp-bench-cost-${crypto.randomUUID().slice(0, 6)}`;
  setupNode({
    bpffs,
    mapEntries: 16384,
    restoreAt: "tsn-egress",
    api: "tcx",
    config: {
      maxAgeNs: 3_600_000_000_000n, // nothing expires while we measure
      gcIntervalNs: 3_600_000_000_000n,
      defaultPolicy: { podCookie: 0n, maxPriority: NO_CLAMP },
    },
  });
  const undoNode = onCleanup(`pin root ${bpffs}`, () => teardownNode(bpffs));
  const calib = BpfObject.open("calib", objectBytes("calib", BENCH_BPF_OBJECTS));
  const undoCalib = onCleanup("calib object", () => calib.close());
  calib.load();
  const research = ResearchDatapath.load(`${bpffs}-research`);
  const undoResearch = onCleanup("research object", () => research.close());
  const pins = new PinLayout(bpffs);
  const save = objGetRequired(pins.prog("save"));
  const restore = objGetRequired(pins.prog("restore"));
  const metaFd = objGetRequired(pins.map("tsnp_meta"));
  const rows: CostRow[] = [];
  try {
    const nop = calib.programFd("bench_nop");
    const pkt = udp4(1);
    /** Runs of a program, each paired with a floor run just before it. */
    const paired = (runs: Array<() => { floor: number; ns: number }>): Measured => {
      const got = runs.map((r) => r());
      return {
        ns: median(got.map((g) => g.ns)),
        net: Math.max(0, median(got.map((g) => g.ns - g.floor))),
      };
    };
    const rep = (fd: number, p: Uint8Array<ArrayBuffer>, ctx: SkbCtx, before?: () => void) =>
      paired(Array.from({ length: o.rounds }, () => () => {
        const floor = testRunCtx(nop, p, o.repeat, {}).ns;
        before?.();
        return { floor, ns: testRunCtx(fd, p, o.repeat, ctx).ns };
      }));
    // One run per distinct packet: each packet is a new key (the common case on a node).
    const single = (fd: number, ctx: SkbCtx, before?: (i: number) => void) =>
      paired(Array.from({ length: o.distinct }, (_, i) => () => {
        const p = udp4(100_000 + i);
        const floor = testRunCtx(nop, p, 1, {}).ns;
        before?.(i);
        return { floor, ns: testRunCtx(fd, p, 1, ctx).ns };
      }));
    const floorRep = rep(nop, pkt, {}).ns;
    const floorOne = single(nop, {}).ns;
    const add = (
      program: string,
      c: string,
      method: "repeat" | "one run per packet",
      m: Measured,
    ) =>
      rows.push({
        program,
        case: c,
        method: method === "repeat" ? `repeat ${o.repeat}` : `1 run x ${o.distinct} packets`,
        ns: m.ns,
        netNs: m.net,
      });
    o.log("progcost: tsnproxy");
    add("(empty program)", "test loop floor", "repeat", { ns: floorRep, net: 0 });
    add("(empty program)", "test loop floor", "one run per packet", { ns: floorOne, net: 0 });
    add("tsnp_save", "priority 0, no launch time (skipped)", "repeat", rep(save, pkt, {}));
    add("tsnp_save", "priority 3 (the tag)", "repeat", rep(save, pkt, { priority: 3 }));
    // The table: what the tag cannot carry. A class-id priority ("1:3"), or a launch time
    // without a clock type (test_run's stamps have none, like CLOCK_TAI before 6.11).
    const CLS = 0x10003;
    clearMap(metaFd, 32);
    add(
      "tsnp_save",
      "class-id priority, new key (table)",
      "one run per packet",
      single(save, { priority: CLS }),
    );
    add(
      "tsnp_save",
      "priority 3 + untyped launch time, new key (table)",
      "one run per packet",
      single(save, { priority: 3, tstamp: 1_700_000_000_000_000_000n }),
    );
    // Fill the LRU: every further save evicts.
    for (let i = 0; i < 17000; i++) testRunCtx(save, udp4(1_000_000 + i), 1, { priority: CLS });
    add(
      "tsnp_save",
      "class-id priority, new key, table full (LRU evicts)",
      "one run per packet",
      single(save, { priority: CLS }),
    );
    clearMap(metaFd, 32);
    add(
      "tsnp_save",
      "class-id priority, same packet again (in-flight count +1)",
      "repeat",
      rep(save, pkt, { priority: CLS }),
    );
    clearMap(metaFd, 32);

    // The tag, through bench_tagged (which writes it and tail-calls bench_next[0]); the same
    // wrapper calling the empty program is this case's floor.
    const tagged = calib.programFd("bench_tagged");
    const next = calib.mapFd("bench_next");
    const setNext = (fd: number) =>
      check(
        mapUpdate(
          next,
          new Uint8Array(4),
          new Uint8Array(new Uint32Array([fd]).buffer),
          0n,
        ),
        "bench_next",
        "run as root",
      );
    setNext(restore);
    const probe = testRunCtx(tagged, pkt, 1, { ingressIfindex: 1 });
    if (probe.retval !== -1) throw new Error(`bench_tagged returned ${probe.retval}: no tail call`);
    const viaTail = paired(Array.from({ length: o.rounds }, () => () => {
      setNext(nop);
      const floor = testRunCtx(tagged, pkt, o.repeat, { ingressIfindex: 1 }).ns;
      setNext(restore);
      return { floor, ns: testRunCtx(tagged, pkt, o.repeat, { ingressIfindex: 1 }).ns };
    }));
    rows.push({
      program: "tsnp_restore",
      case: "tagged (priority from the tag)",
      method: `repeat ${o.repeat}, via tail call`,
      ns: viaTail.ns,
      netNs: viaTail.net,
    });

    // Hit: save the packet repeat+1 times (pending = repeat+1), then every restore run hits.
    const hitPkt = udp4(7);
    add(
      "tsnp_restore",
      "table hit (forwarded, entry found, priority written)",
      "repeat",
      rep(restore, hitPkt, { ingressIfindex: 1 }, () => {
        clearMap(metaFd, 32);
        testRunCtx(save, hitPkt, o.repeat + 1, { priority: CLS });
      }),
    );
    add(
      "tsnp_restore",
      "table hit, one entry per packet",
      "one run per packet",
      (() => {
        clearMap(metaFd, 32);
        for (let i = 0; i < o.distinct; i++) {
          testRunCtx(save, udp4(100_000 + i), 1, { priority: CLS });
        }
        return single(restore, { ingressIfindex: 1 });
      })(),
    );
    clearMap(metaFd, 32);
    add(
      "tsnp_restore",
      "untagged, table miss (forwarded, no entry)",
      "repeat",
      rep(restore, pkt, { ingressIfindex: 1 }),
    );
    add("tsnp_restore", "untagged node's own packet", "repeat", rep(restore, pkt, {}));
    add(
      "tsnp_restore",
      "untagged, nothing in the table within max_age (gate closed)",
      "repeat",
      await (async () => {
        // The gate needs max_age in jiffies, which the GC measures over two of its ticks.
        const maps = DatapathMaps.open(bpffs);
        try {
          maps.writeConfig({
            maxAgeNs: 20_000_000n,
            gcIntervalNs: 10_000_000n,
            defaultPolicy: { podCookie: 0n, maxPriority: NO_CLAMP },
          });
          startGc(bpffs);
          for (let i = 0; i < 500 && maps.restorerGate().gateJiffies === 0n; i++) await sleep(10);
          await sleep(200); // no saves meanwhile: the gate closes
        } finally {
          maps.close();
        }
        return rep(restore, pkt, { ingressIfindex: 1 });
      })(),
    );

    o.log("progcost: research design (rebuilt)");
    const rSave = research.prog("save");
    const rRestore = research.prog("restore");
    const rMeta = research.obj.mapFd("research_meta");
    clearMap(rMeta, 8);
    add(
      "research saver",
      "any packet, new key",
      "one run per packet",
      single(rSave, { priority: 3 }, () => clearMap(rMeta, 8)),
    );
    add(
      "research saver",
      "key present (no overwrite)",
      "repeat",
      rep(rSave, pkt, { priority: 3 }),
    );
    clearMap(rMeta, 8);
    add("research restorer", "miss", "repeat", rep(rRestore, pkt, { ingressIfindex: 1 }));
    return rows;
  } finally {
    closeFd(save);
    closeFd(restore);
    closeFd(metaFd);
    undoResearch();
    undoCalib();
    undoNode();
  }
}
