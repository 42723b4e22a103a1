/**
 * Section 1a, datapath overhead on the real path: pod -> veth -> bridge -> forwarding +
 * MASQUERADE -> tsn0 -> far end (which drops the datagrams at prerouting), in one topology
 * switched between four states (node.ts PathSwitch): without tsnproxy; an empty program at
 * each of tsnproxy's three hooks (what the hooks cost by themselves); tsnproxy with the tag
 * carrier; with the table carrier (the per-CPU stage). The node is set up by install's steps
 * and the pod attached by the real plugin.
 *
 * UDP: the compiled sender (bench/c/blast.c), one thread pinned to each CPU, several flows,
 * sendmmsg batches of 64-byte datagrams, every one at SO_PRIORITY 3, so every packet is saved,
 * admitted, carried and restored (the worst case). The sender spends a few per cent of its CPU
 * time in user space: what limits "without" is the kernel's path. Two figures per run: packets
 * leaving tsn0 per second (its tx counter, not what the sender handed over), and the sender's
 * CPU time per such packet, which holds the whole path (everything up to the far end's
 * receive runs in the sender's softirqs; ksoftirqd stays idle) and, unlike the rate, does not
 * move with the CPU share the shared machine lends the sender. TCP: iperf3 at priority 0
 * (admit still carries every packet).
 *
 * Each alternation measures the states back to back in a rotating order; a ratio is the
 * median over the alternations of (with / without) within one alternation, since the shared
 * machine drifts by more than the difference measured.
 *
 * Then, per carrier, one more UDP run with the kernel's run-time stats on (BPF_ENABLE_STATS):
 * each program's average ns per packet in situ, caches and rates as they are. Stats add two
 * clock reads per run and dispatch costs something; an empty program attached right after each
 * of ours at the same hook measures both, and "net" subtracts it. An observer on tsn0 checks
 * in that run that every packet left with the priority the socket set.
 */
import { detach } from "../../src/bpf/attach.ts";
import { BpfObject } from "../../src/bpf/object.ts";
import { objectBytes } from "../../src/bpf/objects.ts";
import { PinLayout } from "../../src/bpf/pins.ts";
import { closeFd, enableRunTimeStats, objGetRequired, progInfo } from "../../src/bpf/sys.ts";
import { attach } from "../../src/bpf/attach.ts";
import { Observer } from "../../tests/lib/observer.ts";
import { FAR_V4 } from "../../tests/lib/topology.ts";
import { blast, buildBlast } from "./blast.ts";
import { linkStats, median, sh, sleep } from "./common.ts";
import { type Carrier, type PathState, PathSwitch, spawnIn } from "./node.ts";
import { BENCH_BPF_OBJECTS } from "./objects.gen.ts";

export const CARRIERS: readonly Carrier[] = ["tag", "table"];
export const STATES: readonly PathState[] = ["without", "empty", "tag", "table"];
/** What is compared with "without": the two carriers, and the hooks' own cost. */
export type WithState = Exclude<PathState, "without">;
export const WITH_STATES: readonly WithState[] = ["empty", "tag", "table"];

/** Issue 21 and 16: with/without per carrier, every packet prioritized. */
export const RATIO_GOALS: Record<Carrier, number> = { tag: 0.98, table: 0.97 };
/** Issue 16: the table's net in-situ cost, save side (save + admit) and restore. */
export const TABLE_COST_GOALS = { saveAdmitNs: 150, restoreNs: 60 };

const UDP_PORT = 9000;
const UDP_PRIO = 3;

export interface SenderSetup {
  flows: number;
  cpus: number[];
  batch: number;
  payloadBytes: number;
  prio: number;
}

export interface ProgStat {
  /** The kernel's average ns per run over the measured run (stats on). */
  ns: number;
  runs: number;
  /** The empty program right after it at the same hook. */
  floorNs: number;
  floorRuns: number;
  /** ns - floorNs, at least 0. */
  netNs: number;
}

export interface InSitu {
  /** Packets leaving tsn0 during this run (stats and observer on: not a ratio figure). */
  kpps: number;
  /** Of the UDP packets the observer saw leave tsn0, % with the socket's priority. */
  restoredPct: number;
  observed: number;
  save: ProgStat;
  admit: ProgStat;
  restore: ProgStat;
  /** The carrier's save side: save + admit, net. */
  saveAdmitNetNs: number;
  restoreNetNs: number;
  /** The datapath's own counters over the run (restoredTag, restoredStage, stageMiss...). */
  counters: Record<string, number>;
}

/** One UDP run. */
export interface UdpRun {
  /** Packets leaving tsn0 per second (thousands): what the path carried in wall-clock time. */
  kpps: number;
  /**
   * The sender's CPU time (user + system, which holds the whole path: the pod's stack, both
   * veths, bridge, forwarding, NAT and the far end's receive all run in its softirqs) per
   * packet that left tsn0. The shared machine lends the sender anything from a third to all
   * of its CPUs, which moves kpps by a factor of three; this moves by a few per cent.
   */
  cpuNsPerPacket: number;
  /** The sender's share of its CPU time in user space (the rest is the kernel's path). */
  senderUserShare: number;
  /** CPU-seconds the sender got, of its threads x seconds. */
  cpuShare: number;
}

export interface Ratio {
  /** Median over the alternations of kpps with / kpps without, each pair back to back. */
  rate: number;
  /** Median of cpuNsPerPacket without / with: the throughput ratio per CPU-second. */
  perCpu: number;
  /** Median of cpuNsPerPacket with - without: what each packet costs more, in CPU ns. */
  netNsPerPacket: number;
  tcp: number;
}

export interface ThroughputResult {
  alternations: number;
  seconds: number;
  sender: SenderSetup;
  /** Per state, one per alternation. */
  udp: Record<PathState, UdpRun[]>;
  tcpGbps: Record<PathState, number[]>;
  /** Each state compared with "without" (pairs of the same alternation). */
  ratios: Record<WithState, Ratio>;
  inSitu: Partial<Record<Carrier, InSitu>>;
}

const byState = <T>(f: () => T): Record<PathState, T> => ({
  without: f(),
  empty: f(),
  tag: f(),
  table: f(),
});

/** Alternation i: the states rotated by i, backwards every other time (against drift). */
function order(i: number): PathState[] {
  const r = STATES.map((_, k) => STATES[(k + i) % STATES.length]);
  return i % 2 ? r.reverse() : r;
}

/**
 * Runs fn on `carrier` with run-time stats on; returns each program's average ns per run over
 * it, and that of an empty program (its own instance per hook) attached right after it.
 */
async function measureInSitu(
  sw: PathSwitch,
  carrier: Carrier,
  fn: () => Promise<{ kpps: number }>,
): Promise<InSitu> {
  await sw.set(carrier);
  const env = sw.env;
  const pins = new PinLayout(env.bpffs);
  const hooks = sw.hooks();
  const nops: BpfObject[] = [];
  const fds: number[] = [];
  const nopPins: Array<{ pin: string; netns: string }> = [];
  let observer: Observer | undefined;
  let stats: number | undefined;
  const maps = env.maps();
  try {
    for (const h of hooks) fds.push(objGetRequired(pins.prog(h.role)));
    for (const h of hooks) {
      const o = BpfObject.open("calib", objectBytes("calib", BENCH_BPF_OBJECTS));
      nops.push(o);
      o.load();
      const pin = `${env.bpffs}/bench_nop_${h.role}`;
      attach({
        progFd: o.programFd("bench_nop"),
        ifname: h.ifname,
        direction: h.direction,
        api: "tcx",
        netns: h.netns,
        pin,
        first: false,
      });
      nopPins.push({ pin, netns: h.netns });
      fds.push(o.programFd("bench_nop"));
    }
    observer = Observer.attach(env.topo.nodePath, "tsn0");
    observer.filter(17);
    stats = enableRunTimeStats();
    const before = fds.map(progInfo);
    const c0 = maps.counters();
    const r = await fn();
    const after = fds.map(progInfo);
    const c1 = maps.counters();
    const per = after.map((a, i) => {
      const runs = Number(a.runCount - before[i].runCount);
      return { ns: runs ? Number(a.runTimeNs - before[i].runTimeNs) / runs : NaN, runs };
    });
    const stat = (i: number): ProgStat => ({
      ns: per[i].ns,
      runs: per[i].runs,
      floorNs: per[i + 3].ns,
      floorRuns: per[i + 3].runs,
      netNs: Math.max(0, per[i].ns - per[i + 3].ns),
    });
    const [save, admit, restore] = [0, 1, 2].map(stat);
    const seen = observer.counts();
    const counters: Record<string, number> = {};
    for (const k of Object.keys(c1) as Array<keyof typeof c1>) {
      const d = Number(c1[k] - c0[k]);
      if (d) counters[k] = d;
    }
    return {
      kpps: r.kpps,
      restoredPct: seen.fwdTotal ? (100 * seen.fwdPrio[UDP_PRIO]) / seen.fwdTotal : NaN,
      observed: seen.fwdTotal,
      save,
      admit,
      restore,
      saveAdmitNetNs: save.netNs + admit.netNs,
      restoreNetNs: restore.netNs,
      counters,
    };
  } finally {
    if (stats !== undefined) closeFd(stats);
    observer?.detach();
    await sh(["tc", "-n", env.topo.node, "qdisc", "del", "dev", "tsn0", "clsact"], {
      allowFail: true,
    });
    for (const p of nopPins) detach(p.pin, { netns: p.netns });
    fds.slice(0, 3).forEach(closeFd);
    nops.forEach((o) => o.close());
    maps.close();
  }
}

export async function runThroughput(
  o: { alternations: number; seconds: number; log: (s: string) => void },
): Promise<ThroughputResult> {
  await buildBlast();
  const ncpus = navigator.hardwareConcurrency;
  const sender: SenderSetup = {
    flows: 4 * ncpus,
    cpus: Array.from({ length: ncpus }, (_, i) => i),
    batch: 64,
    payloadBytes: 64,
    prio: UDP_PRIO,
  };
  const sw = await PathSwitch.create();
  let iperf: Deno.ChildProcess | undefined;
  const res: ThroughputResult = {
    alternations: o.alternations,
    seconds: o.seconds,
    sender,
    udp: byState(() => []),
    tcpGbps: byState(() => []),
    ratios: {} as Record<WithState, Ratio>,
    inSitu: {},
  };
  try {
    const { node, far } = sw.env.topo;
    const pod = sw.pod;
    await sh(["ip", "netns", "exec", far, "nft", "-f", "-"], {
      stdin: "table ip bench {\n chain pre {\n type filter hook prerouting priority -300;\n" +
        ` udp dport ${UDP_PORT}-${UDP_PORT + sender.flows - 1} drop\n }\n}\n`,
    });
    iperf = spawnIn(far, ["iperf3", "-s", "-p", "5201"]);
    await sleep(300);
    const udp = async (): Promise<UdpRun> => {
      const before = await linkStats(node, "tsn0");
      const r = await blast(pod.netns, {
        dst: FAR_V4,
        port: UDP_PORT,
        flows: sender.flows,
        cpus: sender.cpus,
        prio: sender.prio,
        seconds: o.seconds,
        size: sender.payloadBytes,
        batch: sender.batch,
      });
      const after = await linkStats(node, "tsn0");
      const packets = after.txPackets - before.txPackets;
      const cpu = r.userSeconds + r.systemSeconds;
      return {
        kpps: packets / r.seconds / 1000,
        cpuNsPerPacket: packets ? (cpu * 1e9) / packets : NaN,
        senderUserShare: cpu ? r.userSeconds / cpu : NaN,
        cpuShare: cpu / (r.threads * r.seconds),
      };
    };
    const tcp = async () => {
      const out = await sh([
        "ip",
        "netns",
        "exec",
        pod.netns,
        "iperf3",
        "-c",
        FAR_V4,
        "-p",
        "5201",
        "-t",
        String(o.seconds),
        "-J",
      ]);
      const j = JSON.parse(out.stdout) as { end: { sum_received: { bits_per_second: number } } };
      return j.end.sum_received.bits_per_second / 1e9;
    };
    for (let i = 0; i < o.alternations; i++) {
      for (const state of order(i)) {
        await sw.set(state);
        await sleep(200);
        const u = await udp();
        const t = await tcp();
        res.udp[state].push(u);
        res.tcpGbps[state].push(t);
        o.log(
          `throughput ${i + 1}/${o.alternations} ${state}: udp ${
            u.kpps.toFixed(1)
          } kpps at tsn0, ` +
            `${u.cpuNsPerPacket.toFixed(0)} CPU ns/packet (sender had ${
              (100 * u.cpuShare).toFixed(0)
            }% of its CPUs, ${(100 * u.senderUserShare).toFixed(1)}% of that in user space); ` +
            `tcp ${t.toFixed(2)} Gbit/s`,
        );
      }
    }
    const wo = res.udp.without;
    for (const s of WITH_STATES) {
      const w = res.udp[s];
      res.ratios[s] = {
        rate: median(w.map((x, i) => x.kpps / wo[i].kpps)),
        perCpu: median(w.map((x, i) => wo[i].cpuNsPerPacket / x.cpuNsPerPacket)),
        netNsPerPacket: median(w.map((x, i) => x.cpuNsPerPacket - wo[i].cpuNsPerPacket)),
        tcp: median(res.tcpGbps[s].map((x, i) => x / res.tcpGbps.without[i])),
      };
    }
    const fmt = (s: ProgStat) =>
      `${s.ns.toFixed(0)} ns x ${s.runs} (empty program ${s.floorNs.toFixed(0)}; net ${
        s.netNs.toFixed(0)
      })`;
    for (const c of CARRIERS) {
      const x = await measureInSitu(sw, c, udp);
      res.inSitu[c] = x;
      o.log(
        `in situ, ${c}, udp priority ${UDP_PRIO} at ${x.kpps.toFixed(0)} kpps: save ${
          fmt(x.save)
        }, admit ${fmt(x.admit)}, restore ${fmt(x.restore)}; ${
          x.restoredPct.toFixed(3)
        }% of ${x.observed} left with priority ${UDP_PRIO}`,
      );
    }
    return res;
  } finally {
    try {
      iperf?.kill("SIGKILL");
    } catch {
      // exited already
    }
    await iperf?.output().catch(() => {});
    await sw.destroy();
  }
}
