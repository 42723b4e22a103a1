/**
 * Section 1b, per-program cost: BPF_PROG_TEST_RUN with a struct __sk_buff context (ctx_in)
 * so the packet carries a priority, a launch time and a mark like the real one; test_run
 * cannot set tc_index, so a saver's request or a tag reaches admit and the restorer through
 * bench_tc_index (bench/bpf/calib.c: mark -> tc_index, then a tail call). The packet's
 * device is the loopback (test_run's default), whose index 1 keys a pod entry of ours.
 * Figures are the kernel's own per-run average; the cost of an empty program run the same
 * way (the test loop's floor) is measured right before each run of the program and the
 * difference's median is the "net" figure: a pair shares the machine's state of the moment.
 *
 * Then the pieces admit and restore are made of (bench/bpf/parts.c: the fingerprint parse,
 * the pod lookup, a counter, the clock, the stage gate), so a cost over its goal can be
 * traced to where the time goes.
 *
 * The stage is per CPU and test_run runs on the calling thread's CPU: this thread is pinned
 * to one CPU while it measures, so what admit stages the restorer finds.
 */
import { BpfObject } from "../../src/bpf/object.ts";
import { objectBytes } from "../../src/bpf/objects.ts";
import { PinLayout, type ProgramRole } from "../../src/bpf/pins.ts";
import {
  check,
  closeFd,
  mapDelete,
  mapNextKey,
  mapUpdate,
  objGetRequired,
} from "../../src/bpf/sys.ts";
import { type Carrier, DatapathMaps, type PodEntry } from "../../src/bpf/maps.ts";
import { Errno } from "../../src/ffi/libc.ts";
import { libbpf } from "../../src/ffi/libbpf.ts";
import { BpfTestRunOpts, SkBuff } from "../../src/ffi/structs/bpf.ts";
import { encode } from "../../src/ffi/structs/layout.ts";
import { setUpNode, tearDownNode } from "../../tests/lib/node.ts";
import { allowedCpus, setAffinity } from "../../tests/lib/affinity.ts";
import { median, onCleanup, sleep } from "./common.ts";
import { BENCH_BPF_OBJECTS } from "./objects.gen.ts";
import { ResearchDatapath } from "./research_dp.ts";
import { addressOf } from "../../src/ffi/open.ts";

/** bpf/tsnproxy.h: the saver's request and the tag. */
const REQ = 0xc000;
const REQ_STAGED = 0x0800;
const REQ_PRIO_MASK = 0x3ff;
const TAG = 0xa000;

export interface SkbCtx {
  mark?: number;
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
  const skb = encode(SkBuff, {
    mark: ctx.mark ?? 0,
    priority: ctx.priority ?? 0,
    ingress_ifindex: ctx.ingressIfindex ?? 0,
    tstamp: ctx.tstamp ?? 0n,
  });
  const opts = encode(BpfTestRunOpts, {
    sz: BigInt(BpfTestRunOpts.size),
    data_in: addressOf(packet),
    data_size_in: packet.length,
    ctx_in: addressOf(skb),
    ctx_size_in: SkBuff.size,
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

const LOOPBACK = 1;

export async function runProgCost(o: CostOptions): Promise<CostRow[]> {
  const id = crypto.randomUUID().slice(0, 6);
  const node = setUpNode({
    bpffs: `/sys/fs/bpf/tsnp-bench-cost-${id}`,
    config: "carrier: tag\ngc:\n  maxAgeMs: 3600000", // nothing expires while we measure
  });
  const bpffs = node.bpffs;
  const undoNode = onCleanup(`pin root ${bpffs}`, () => tearDownNode(node));
  const pins = new PinLayout(bpffs);
  const calib = BpfObject.open("calib", objectBytes("calib", BENCH_BPF_OBJECTS));
  const undoCalib = onCleanup("calib object", () => calib.close());
  calib.load();
  const parts = BpfObject.open("parts", objectBytes("parts", BENCH_BPF_OBJECTS), pins.mapsDir);
  const undoParts = onCleanup("parts object", () => parts.close());
  parts.load();
  const research = ResearchDatapath.load(`${bpffs}-research`);
  const undoResearch = onCleanup("research object", () => research.close());
  const maps = DatapathMaps.open(bpffs);
  const fds: Partial<Record<ProgramRole, number>> = {};
  const prog = (r: ProgramRole) => (fds[r] ??= objGetRequired(pins.prog(r)));
  // One CPU for every run: the stage is per CPU, and a test run runs on the caller's.
  const before = allowedCpus();
  setAffinity([0]);
  const unpin = () => setAffinity(before);
  const rows: CostRow[] = [];
  try {
    const nop = calib.programFd("bench_nop");
    const viaTcIndex = calib.programFd("bench_tc_index");
    const next = calib.mapFd("bench_next");
    const setNext = (fd: number) =>
      check(
        mapUpdate(next, new Uint8Array(4), new Uint8Array(new Uint32Array([fd]).buffer), 0n),
        "bench_next",
        "run as root",
      );
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
    /** Through bench_tc_index (mark -> tc_index); its floor: the same wrapper calling nop. */
    const repTc = (fd: number, p: Uint8Array<ArrayBuffer>, tcIndex: number, ctx: SkbCtx = {}) => {
      setNext(fd);
      const probe = testRunCtx(viaTcIndex, p, 1, { ...ctx, mark: tcIndex });
      if (probe.retval === 2) throw new Error("bench_tc_index: no tail call");
      return paired(Array.from({ length: o.rounds }, () => () => {
        setNext(nop);
        const floor = testRunCtx(viaTcIndex, p, o.repeat, { ...ctx, mark: tcIndex }).ns;
        setNext(fd);
        return { floor, ns: testRunCtx(viaTcIndex, p, o.repeat, { ...ctx, mark: tcIndex }).ns };
      }));
    };
    // One run per distinct packet: each packet new (as on a node).
    const single = (fd: number, ctx: SkbCtx) =>
      paired(Array.from({ length: o.distinct }, (_, i) => () => {
        const p = udp4(100_000 + i);
        const floor = testRunCtx(nop, p, 1, {}).ns;
        return { floor, ns: testRunCtx(fd, p, 1, ctx).ns };
      }));
    const add = (program: string, c: string, method: string, m: Measured) =>
      rows.push({ program, case: c, method, ns: m.ns, netNs: m.net });
    const REP = `repeat ${o.repeat}`;
    const TC = `repeat ${o.repeat}, tc_index via tail call`;
    const ONE = `1 run x ${o.distinct} packets`;

    const policy = maps.readConfig().node;
    const setPod = (carrier: Carrier | undefined) => {
      if (!carrier) {
        maps.deletePod(LOOPBACK);
        return;
      }
      const e: PodEntry = { cookie: 1n, slot: 1, carrier, reason: 0, policy };
      maps.putPod(LOOPBACK, e);
    };

    o.log("progcost: tsnproxy");
    add("(empty program)", "test loop floor", REP, { ns: rep(nop, pkt, {}).ns, net: 0 });
    add("(empty program)", "test loop floor", ONE, { ns: single(nop, {}).ns, net: 0 });
    add("tsnp_save", "priority 0", REP, rep(prog("save"), pkt, {}));
    add("tsnp_save", "priority 3", REP, rep(prog("save"), pkt, { priority: 3 }));
    add(
      "tsnp_save",
      "priority 3 + untyped launch time (moved into a mono stamp)",
      REP,
      rep(prog("save"), pkt, { priority: 3, tstamp: 1_700_000_000_000_000_000n }),
    );
    add(
      "tsnp_save",
      "class-id priority 1:3 (request stage)",
      REP,
      rep(prog("save"), pkt, { priority: 0x10003 }),
    );

    const admit = prog("admit");
    setPod("tag");
    add("tsnp_admit", "tag carrier, request priority 3", TC, repTc(admit, pkt, REQ | 3));
    add("tsnp_admit", "tag carrier, no request (no saver)", TC, repTc(admit, pkt, 0));
    setPod("stage");
    add("tsnp_admit", "table carrier, request priority 3", TC, repTc(admit, pkt, REQ | 3));
    add(
      "tsnp_admit",
      "table carrier, request priority 1:3 (from the request stage)",
      TC,
      (() => {
        // The saver stages the request on this CPU; admit consumes it, so stage it again
        // before each round and count only admit's first run as the staged case.
        setNext(admit);
        return paired(Array.from({ length: o.distinct }, (_, i) => () => {
          const p = udp4(200_000 + i);
          setNext(nop);
          const floor = testRunCtx(viaTcIndex, p, 1, { mark: REQ | REQ_STAGED | REQ_PRIO_MASK }).ns;
          testRunCtx(prog("save"), p, 1, { priority: 0x10003 });
          setNext(admit);
          return {
            floor,
            ns: testRunCtx(viaTcIndex, p, 1, { mark: REQ | REQ_STAGED | REQ_PRIO_MASK }).ns,
          };
        }));
      })(),
    );
    setPod(undefined);
    add("tsnp_admit", "no pod entry for the interface", TC, repTc(admit, pkt, REQ | 3));

    const restore = prog("restore");
    add("tsnp_restore", "tag (priority 3)", TC, repTc(restore, pkt, TAG | 3 | (1 << 4)));
    // Stage hit: admit (table carrier) stages the packet on this CPU, every restore run
    // finds it (the restorer does not consume an entry).
    setPod("stage");
    setNext(admit);
    testRunCtx(viaTcIndex, pkt, 1, { mark: REQ | 3 });
    add("tsnp_restore", "stage hit", REP, rep(restore, pkt, { ingressIfindex: 1 }));
    add(
      "tsnp_restore",
      "stage hit, one entry per packet",
      ONE,
      paired(Array.from({ length: o.distinct }, (_, i) => () => {
        const p = udp4(300_000 + i);
        const floor = testRunCtx(nop, p, 1, {}).ns;
        setNext(admit);
        testRunCtx(viaTcIndex, p, 1, { mark: REQ | 3 });
        return { floor, ns: testRunCtx(restore, p, 1, {}).ns };
      })),
    );
    add(
      "tsnp_restore",
      "stage miss (something staged recently, not this packet)",
      REP,
      rep(restore, udp4(999_999), {}, () => {
        setNext(admit);
        testRunCtx(viaTcIndex, pkt, 1, { mark: REQ | 3 });
      }),
    );
    // Idle: nothing staged on this CPU within the age limit (the node's own packets, or
    // tag-only pods): one lookup and a clock read.
    add(
      "tsnp_restore",
      "untagged, nothing staged within the age limit (idle gate)",
      REP,
      await (async () => {
        const cfg = maps.readConfig();
        maps.writeConfig({ ...cfg, stageMaxAgeNs: 1_000_000n });
        await sleep(20); // coarse clock: a few jiffies
        return rep(restore, pkt, {});
      })(),
    );
    setPod(undefined);

    o.log("progcost: the pieces of admit and restore");
    const part = (name: string, what: string, ctx: SkbCtx = {}) =>
      add(`(piece) ${name}`, what, REP, rep(parts.programFd(name), pkt, ctx));
    setPod("stage");
    part("part_fp", "fingerprint parse (tsnp_fp_of), UDP/IPv4");
    part("part_fp_hash", "parse + the stage slot's hash");
    part("part_pod_lookup", "pod entry (tsnp_pods hash lookup by ifindex)");
    part("part_count", "one node counter (per-CPU array)");
    part("part_clock", "bpf_ktime_get_coarse_ns");
    part("part_stage_gate", "restorer's gate: this CPU's stage + config + clock");
    setPod(undefined);

    o.log("progcost: research design (rebuilt)");
    const rSave = research.prog("save");
    const rRestore = research.prog("restore");
    const rMeta = research.obj.mapFd("research_meta");
    clearMap(rMeta, 8);
    add(
      "research saver",
      "any packet, new key",
      ONE,
      paired(Array.from({ length: o.distinct }, (_, i) => () => {
        const p = udp4(100_000 + i);
        const floor = testRunCtx(nop, p, 1, {}).ns;
        clearMap(rMeta, 8);
        return { floor, ns: testRunCtx(rSave, p, 1, { priority: 3 }).ns };
      })),
    );
    add("research saver", "key present (no overwrite)", REP, rep(rSave, pkt, { priority: 3 }));
    clearMap(rMeta, 8);
    add("research restorer", "miss", REP, rep(rRestore, pkt, { ingressIfindex: 1 }));
    return rows;
  } finally {
    unpin();
    for (const fd of Object.values(fds)) closeFd(fd);
    maps.close();
    undoResearch();
    undoParts();
    undoCalib();
    undoNode();
  }
}
