/**
 * Section 1a, datapath overhead on the real path: pod -> veth -> bridge -> forwarding +
 * MASQUERADE -> tsn0 -> far end (which drops the datagrams at prerouting), in one topology
 * switched between four states (node.ts PathSwitch): without tsnproxy; an empty program at
 * each of tsnproxy's three hooks (what the hooks cost by themselves); tsnproxy with the tag
 * carrier; with the table carrier (the per-CPU stage). Each carrier's state is what the real
 * plugin's ADD left on a node set up by install's steps, replayed by the same production
 * functions, so a switch takes milliseconds and the states can alternate many times.
 *
 * UDP: the compiled sender (bench/c/blast.c), one thread pinned to each CPU, several flows,
 * sendmmsg batches of 64-byte datagrams, every one at SO_PRIORITY 3, so every packet is saved,
 * admitted, carried and restored (the worst case). It runs flat out the whole time while the
 * path switches under it; each state gets a window of each round, rounds rotating the order.
 * Per window: packets leaving tsn0 per second (its tx counter, not what the sender handed
 * over), and the sender's CPU time per such packet (its threads' run time: the whole path up
 * to the far end's receive runs in their softirqs; ksoftirqd stays idle). The sender spends
 * well under 1% of that in user space: the kernel's path limits "without", not the sender.
 * The CPU time per packet, unlike the rate, does not move with the share of the CPUs this
 * shared machine lends the sender (from a quarter to all of them, within a minute).
 *
 * A ratio is the median over the rounds of (with / without) within one round. TCP: iperf3
 * (priority 0; admit still carries every packet), fewer rounds, one run per state each.
 *
 * Then, per carrier, one more UDP run with the kernel's run-time stats on (BPF_ENABLE_STATS):
 * each program's average ns per packet in situ, caches and rates as they are. Stats add two
 * clock reads per run and dispatch costs something; an empty program attached right after each
 * of ours at the same hook measures both, and "net" subtracts it. An observer on tsn0 checks
 * in that run that every packet left with the priority the socket set.
 */
import { attach, detach } from "../../src/bpf/attach.ts";
import { BpfObject } from "../../src/bpf/object.ts";
import { objectBytes } from "../../src/bpf/objects.ts";
import { PinLayout } from "../../src/bpf/pins.ts";
import { closeFd, enableRunTimeStats, objGetRequired, progInfo } from "../../src/bpf/sys.ts";
import { Observer } from "../../tests/lib/observer.ts";
import { FAR_V4 } from "../../tests/lib/topology.ts";
import { blast, type BlastOptions, buildBlast, NetnsCounter, startBlast } from "./blast.ts";
import { median, percentile, sleep } from "./common.ts";
import { type Child, run } from "../../tests/lib/run.ts";
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

export interface ThroughputOptions {
  /** UDP rounds (one window per state each) and each window's length. */
  rounds: number;
  windowSeconds: number;
  /** TCP rounds (one iperf3 run per state each) and each run's length. */
  tcpRounds: number;
  tcpSeconds: number;
  /** Each carrier's in-situ run. */
  inSituSeconds: number;
  log: (s: string) => void;
}

export interface SenderSetup {
  flows: number;
  cpus: number[];
  batch: number;
  payloadBytes: number;
  prio: number;
  /** Over all windows: the share of its CPU time in user space, and datagrams per second. */
  userShare?: number;
  sentKpps?: number;
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

/** One state's window of one round. */
export interface UdpWindow {
  /** Packets leaving tsn0 per second (thousands): what the path carried in wall-clock time. */
  kpps: number;
  /** The sender's CPU time per packet that left tsn0, ns. */
  cpuNsPerPacket: number;
  /** CPU time the sender got, of its threads x the window. */
  cpuShare: number;
}

export interface Ratio {
  /** Median over the rounds of CPU ns/packet without / with: the throughput ratio per CPU. */
  perCpu: number;
  /** Its 25th and 75th percentiles over the rounds. */
  perCpuQuartiles: [number, number];
  /** Median over the rounds of kpps with / without. */
  rate: number;
  /** Median over the rounds of CPU ns/packet with - without: each packet's extra CPU time. */
  netNsPerPacket: number;
  tcp: number;
}

export interface ThroughputResult {
  rounds: number;
  windowSeconds: number;
  sender: SenderSetup;
  /** Per state, one per round. */
  udp: Record<PathState, UdpWindow[]>;
  tcpRounds: number;
  tcpSeconds: number;
  tcpGbps: Record<PathState, number[]>;
  /** Each state compared with "without" (pairs of the same round). */
  ratios: Record<WithState, Ratio>;
  inSitu: Partial<Record<Carrier, InSitu>>;
}

const byState = <T>(f: () => T): Record<PathState, T> => ({
  without: f(),
  empty: f(),
  tag: f(),
  table: f(),
});

/** Round i: the states rotated by i, backwards every other time (against drift). */
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
  sw.set(carrier);
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
    await run(["tc", "-n", env.topo.node, "qdisc", "del", "dev", "tsn0", "clsact"], {
      allowFail: true,
    });
    for (const p of nopPins) {
      detach(p.pin, { netns: p.netns });
    }
    fds.slice(0, 3).forEach(closeFd);
    nops.forEach((o) => o.close());
    maps.close();
  }
}

export async function runThroughput(o: ThroughputOptions): Promise<ThroughputResult> {
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
  let iperf: Child | undefined;
  let counter: NetnsCounter | undefined;
  const res: ThroughputResult = {
    rounds: o.rounds,
    windowSeconds: o.windowSeconds,
    sender,
    udp: byState(() => []),
    tcpRounds: o.tcpRounds,
    tcpSeconds: o.tcpSeconds,
    tcpGbps: byState(() => []),
    ratios: {} as Record<WithState, Ratio>,
    inSitu: {},
  };
  try {
    const { node, far } = sw.env.topo;
    const pod = sw.pod;
    await run(["nft", "-f", "-"], {
      netns: far,
      stdin: "table ip bench {\n chain pre {\n type filter hook prerouting priority -300;\n" +
        ` udp dport ${UDP_PORT}-${UDP_PORT + sender.flows - 1} drop\n }\n}\n`,
    });
    iperf = spawnIn(far, ["iperf3", "-s", "-p", "5201"]);
    counter = NetnsCounter.open(node, "tsn0", "tx_packets");
    const tx = counter;
    const udpOpts: Omit<BlastOptions, "seconds"> = {
      dst: FAR_V4,
      port: UDP_PORT,
      flows: sender.flows,
      cpus: sender.cpus,
      prio: sender.prio,
      size: sender.payloadBytes,
      batch: sender.batch,
    };

    // UDP: the sender flat out throughout, the path switching under it.
    const b = await startBlast(pod.netns, udpOpts);
    try {
      const sample = async () => ({ tx: await tx.read(), cpu: b.cpuNs(), t: performance.now() });
      for (let i = 0; i < o.rounds; i++) {
        for (const state of order(i)) {
          sw.set(state);
          await sleep(100);
          const s0 = await sample();
          await sleep(o.windowSeconds * 1000);
          const s1 = await sample();
          const packets = s1.tx - s0.tx;
          const secs = (s1.t - s0.t) / 1000;
          const w: UdpWindow = {
            kpps: packets / secs / 1000,
            cpuNsPerPacket: packets ? (s1.cpu - s0.cpu) / packets : NaN,
            cpuShare: (s1.cpu - s0.cpu) / 1e9 / (sender.cpus.length * secs),
          };
          res.udp[state].push(w);
          o.log(
            `throughput udp ${i + 1}/${o.rounds} ${state}: ${w.kpps.toFixed(1)} kpps at tsn0, ` +
              `${w.cpuNsPerPacket.toFixed(0)} CPU ns/packet (the sender had ${
                (100 * w.cpuShare).toFixed(0)
              }% of its CPUs)`,
          );
        }
      }
    } finally {
      const r = await b.stop();
      const cpu = r.userSeconds + r.systemSeconds;
      sender.userShare = cpu ? r.userSeconds / cpu : NaN;
      sender.sentKpps = r.sent / r.seconds / 1000;
    }

    const tcp = async () => {
      const out = await run(
        ["iperf3", "-c", FAR_V4, "-p", "5201", "-t", String(o.tcpSeconds), "-J"],
        { netns: pod.netns },
      );
      const j = JSON.parse(out.stdout) as { end: { sum_received: { bits_per_second: number } } };
      return j.end.sum_received.bits_per_second / 1e9;
    };
    for (let i = 0; i < o.tcpRounds; i++) {
      for (const state of order(i)) {
        sw.set(state);
        await sleep(100);
        const t = await tcp();
        res.tcpGbps[state].push(t);
        o.log(`throughput tcp ${i + 1}/${o.tcpRounds} ${state}: ${t.toFixed(2)} Gbit/s`);
      }
    }

    const wo = res.udp.without;
    for (const s of WITH_STATES) {
      const w = res.udp[s];
      const perCpu = w.map((x, i) => wo[i].cpuNsPerPacket / x.cpuNsPerPacket).sort((a, b) => a - b);
      res.ratios[s] = {
        perCpu: median(perCpu),
        perCpuQuartiles: [percentile(perCpu, 25), percentile(perCpu, 75)],
        rate: median(w.map((x, i) => x.kpps / wo[i].kpps)),
        netNsPerPacket: median(w.map((x, i) => x.cpuNsPerPacket - wo[i].cpuNsPerPacket)),
        tcp: median(res.tcpGbps[s].map((x, i) => x / res.tcpGbps.without[i])),
      };
    }

    const fmt = (s: ProgStat) =>
      `${s.ns.toFixed(0)} ns x ${s.runs} (empty program ${s.floorNs.toFixed(0)}; net ${
        s.netNs.toFixed(0)
      })`;
    for (const c of CARRIERS) {
      const x = await measureInSitu(sw, c, async () => {
        const before = await tx.read();
        const r = await blast(pod.netns, { ...udpOpts, seconds: o.inSituSeconds });
        return { kpps: (await tx.read() - before) / r.seconds / 1000 };
      });
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
    await counter?.close();
    await iperf?.stop();
    await sw.destroy();
  }
}
