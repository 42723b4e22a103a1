/**
 * Section 1a, datapath overhead: pod -> bridge -> forwarding + MASQUERADE -> tsn0 -> far end,
 * without and with tsnproxy (saver on the pod's eth0, restorer on tsn0), alternating in the
 * same namespaces (ABBA order against drift). UDP: 64-byte datagrams at priority 3, flat out
 * from one Python talker, so every packet is saved and restored (the worst case); rate from
 * the far end's receive counter. TCP: iperf3 (priority 0: saver skips, restorer misses).
 */
import { FAR_V4 } from "../../tests/lib/topology.ts";
import { FLOOD, linkStats, median, sh, sleep } from "./common.ts";
import { BenchNode, floodResult, spawnIn } from "./node.ts";

export interface ThroughputResult {
  alternations: number;
  seconds: number;
  udpKpps: { without: number[]; with: number[] };
  tcpGbps: { without: number[]; with: number[] };
  udpRatio: number;
  tcpRatio: number;
}

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
    res.udpRatio = median(res.udpKpps.with) / median(res.udpKpps.without);
    res.tcpRatio = median(res.tcpGbps.with) / median(res.tcpGbps.without);
    return res;
  } finally {
    await node.destroy();
  }
}
