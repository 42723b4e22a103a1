/**
 * Section 1a, datapath overhead: pod -> bridge -> forwarding + MASQUERADE -> tsn0 -> far end,
 * without and with tsnproxy (saver on the pod's eth0, restorer on tsn0), alternating in the
 * same namespaces (ABBA order against drift). UDP: 64-byte datagrams at priority 3, flat out
 * from one Python talker, so every packet is tagged and restored (the worst case); rate from
 * the far end's receive counter. TCP: iperf3 (priority 0: saver skips, restorer misses).
 *
 * Then one more run of each with the kernel's run-time stats on (BPF_ENABLE_STATS): each
 * program's average ns per packet on the real path, caches as they are, which
 * BPF_PROG_TEST_RUN cannot show. Stats cost two clock reads per run, so the ratio runs
 * above never have them on; an empty program attached right after each of ours in the same
 * run measures that overhead, and "net" subtracts it.
 */
import { attach, detach } from "../../src/bpf/attach.ts";
import { BpfObject } from "../../src/bpf/object.ts";
import { objectBytes } from "../../src/bpf/objects.ts";
import { PinLayout } from "../../src/bpf/pins.ts";
import { closeFd, enableRunTimeStats, objGetRequired, progInfo } from "../../src/bpf/sys.ts";
import { FAR_V4 } from "../../tests/lib/topology.ts";
import { FLOOD, linkStats, median, sh, sleep } from "./common.ts";
import { BenchNode, floodResult, spawnIn } from "./node.ts";
import { BENCH_BPF_OBJECTS } from "./objects.gen.ts";
import type { Pod } from "../../tests/lib/topology.ts";

export interface ThroughputResult {
  alternations: number;
  seconds: number;
  udpKpps: { without: number[]; with: number[] };
  tcpGbps: { without: number[]; with: number[] };
  /** Median over the alternations of with/without, each pair measured back to back. */
  udpRatio: number;
  tcpRatio: number;
  /** Average ns per run of each program on the real path (kernel run-time stats). */
  inSitu: {
    udp: InSitu;
    tcp: InSitu;
  };
}

export interface InSitu {
  saveNs: number;
  saveRuns: number;
  restoreNs: number;
  restoreRuns: number;
  /** The empty program's ns per run right after the saver / the restorer (stats overhead). */
  saveFloorNs: number;
  restoreFloorNs: number;
}

/**
 * Runs fn with run-time stats on; returns each program's average ns per run over it, and
 * that of an empty program (its own instance per hook) attached right after each.
 */
async function measureInSitu(
  node: BenchNode,
  pod: Pod,
  fn: () => Promise<unknown>,
): Promise<InSitu> {
  const pins = new PinLayout(node.bpffs);
  const nops = [0, 1].map(() => {
    const o = BpfObject.open("calib", objectBytes("calib", BENCH_BPF_OBJECTS));
    o.load();
    return o;
  });
  const nopPins = [`${node.bpffs}/bench_nop_save`, `${node.bpffs}/bench_nop_restore`];
  const fds = [
    objGetRequired(pins.prog("save")),
    objGetRequired(pins.prog("restore")),
    ...nops.map((o) => o.programFd("bench_nop")),
  ];
  const stats = enableRunTimeStats();
  try {
    const common = { direction: "egress", api: "tcx", first: false } as const;
    attach({
      ...common,
      progFd: fds[2],
      ifname: pod.ifname,
      netns: pod.netnsPath,
      pin: nopPins[0],
    });
    attach({
      ...common,
      progFd: fds[3],
      ifname: "tsn0",
      netns: node.topo.nodePath,
      pin: nopPins[1],
    });
    const before = fds.map(progInfo);
    await fn();
    const after = fds.map(progInfo);
    const [save, restore, saveFloor, restoreFloor] = after.map((a, i) => {
      const runs = Number(a.runCount - before[i].runCount);
      return { ns: runs ? Number(a.runTimeNs - before[i].runTimeNs) / runs : NaN, runs };
    });
    return {
      saveNs: save.ns,
      saveRuns: save.runs,
      restoreNs: restore.ns,
      restoreRuns: restore.runs,
      saveFloorNs: saveFloor.ns,
      restoreFloorNs: restoreFloor.ns,
    };
  } finally {
    detach(nopPins[0], { netns: pod.netnsPath });
    detach(nopPins[1], { netns: node.topo.nodePath });
    closeFd(stats);
    fds.slice(0, 2).forEach(closeFd);
    nops.forEach((o) => o.close());
  }
}

const noInSitu = (): InSitu => ({
  saveNs: NaN,
  saveRuns: 0,
  restoreNs: NaN,
  restoreRuns: 0,
  saveFloorNs: NaN,
  restoreFloorNs: NaN,
});

export async function runThroughput(
  o: { alternations: number; seconds: number; log: (s: string) => void },
): Promise<ThroughputResult> {
  const node = await BenchNode.create("tsnproxy", 1);
  const res: ThroughputResult = {
    alternations: o.alternations,
    seconds: o.seconds,
    udpKpps: { without: [], with: [] },
    tcpGbps: { without: [], with: [] },
    udpRatio: NaN,
    tcpRatio: NaN,
    inSitu: {
      udp: noInSitu(),
      tcp: noInSitu(),
    },
  };
  try {
    const pod = node.topo.pods[0];
    const far = node.topo.far;
    await sh(["ip", "netns", "exec", far, "nft", "-f", "-"], {
      stdin: "table ip bench {\n chain pre {\n type filter hook prerouting priority -300;\n" +
        " udp dport 9000 drop\n }\n}\n",
    });
    spawnIn(far, ["iperf3", "-s", "-p", "5201"]);
    await sleep(300);
    let attached = false;
    const set = (on: boolean) => {
      if (on === attached) return;
      if (on) {
        node.setupDatapath(false);
        node.attachPod(pod);
      } else {
        node.teardownDatapath();
      }
      attached = on;
    };
    const udp = async () => {
      const before = await linkStats(far, "far0");
      const r = await floodResult(spawnIn(pod.netns, [
        "python3",
        FLOOD,
        "--dst",
        FAR_V4,
        "--port",
        "9000",
        "--prio",
        "3",
        "--duration",
        String(o.seconds),
      ]));
      const after = await linkStats(far, "far0");
      return (after.rxPackets - before.rxPackets) / r.seconds / 1000;
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
      const order = i % 2 === 0 ? [false, true] : [true, false];
      for (const on of order) {
        set(on);
        await sleep(200);
        const key = on ? "with" : "without";
        const u = await udp();
        const t = await tcp();
        res.udpKpps[key].push(u);
        res.tcpGbps[key].push(t);
        o.log(
          `throughput ${i + 1}/${o.alternations} ${key}: udp ${u.toFixed(1)} kpps, tcp ${
            t.toFixed(2)
          } Gbit/s`,
        );
      }
    }
    // Each alternation measures both back to back: the ratio of a pair shares the machine's
    // state of that moment, which drifts by more than the difference measured here.
    const pairs = (x: { with: number[]; without: number[] }) =>
      median(x.with.map((w, i) => w / x.without[i]));
    res.udpRatio = pairs(res.udpKpps);
    res.tcpRatio = pairs(res.tcpGbps);
    set(true);
    res.inSitu.udp = await measureInSitu(node, pod, udp);
    res.inSitu.tcp = await measureInSitu(node, pod, tcp);
    const fmt = (x: InSitu) =>
      `save ${x.saveNs.toFixed(0)} ns x ${x.saveRuns} (empty program ${
        x.saveFloorNs.toFixed(0)
      }), restore ${x.restoreNs.toFixed(0)} ns x ${x.restoreRuns} (empty program ${
        x.restoreFloorNs.toFixed(0)
      })`;
    o.log(`in situ, udp priority 3: ${fmt(res.inSitu.udp)}`);
    o.log(`in situ, tcp priority 0: ${fmt(res.inSitu.tcp)}`);
    return res;
  } finally {
    await node.destroy();
  }
}
