/**
 * Section 2, fidelity under load. Pod A sends prioritized UDP (priority 3, paced) to the far
 * end through bridge + NAT + tsn0 while the node itself sends priority-0 UDP out of tsn0 and
 * two pods flood a third on the same bridge (never crossing tsn0) at priority 0 or 6, flat
 * out. What leaves tsn0 is counted after the restorer. Run for tsnproxy with each carrier
 * (the tag; the table, i.e. the per-CPU stage) and for the research design's rebuilt datapath,
 * whose metadata table's occupancy is sampled every 500 ms (tsnproxy's stage is a fixed 64
 * slots per CPU: nothing fills up).
 */
import { FAR_V4 } from "../../tests/lib/topology.ts";
import { FLOOD, linkStats, sleep } from "./common.ts";
import { run } from "../../tests/lib/run.ts";
import { BenchNode, floodResult, spawnIn, type Variant } from "./node.ts";

export type FloodCase = "none" | "prio0" | "prio6";

export interface FidelityResult {
  variant: Variant;
  flood: FloodCase;
  podSent: number;
  /** Pod A's packets seen leaving tsn0 (forwarded), and of those with priority 3. */
  podSeen: number;
  podRestored: number;
  restoredPct: number;
  /** Pod A's packets that left with another priority, by priority. */
  podWrongByPrio: Record<string, number>;
  nodeSent: number;
  nodeSeen: number;
  /** Node packets that left tsn0 with a priority other than 0. */
  nodeWrong: number;
  floodKpps: number;
  /** The research design's table (tsnproxy has none: empty, and occupancyMax undefined). */
  occupancy: Array<{ t: number; n: number }>;
  occupancyMax?: number;
  datapath: Record<string, number>;
}

export interface FidelityOptions {
  packets: number;
  pps: number;
  cases: FloodCase[];
  variants: Variant[];
  log: (s: string) => void;
}

const POD_PRIO = 3;

export async function runFidelity(o: FidelityOptions): Promise<FidelityResult[]> {
  const out: FidelityResult[] = [];
  for (const variant of o.variants) {
    const node = await BenchNode.create(variant, 4);
    try {
      const [a, b, c, d] = node.topo.pods;
      // Sinks: the far end reads port 8080 (DatapathEnv starts one for tsnproxy); the flood
      // target drops port 9000 at ingress.
      if (variant === "research") {
        spawnIn(node.topo.far, ["socat", "-u", "UDP-RECV:8080", "/dev/null"]);
      }
      await run(["nft", "-f", "-"], {
        netns: c.netns,
        stdin: "table ip bench {\n chain pre {\n type filter hook prerouting priority -300;\n" +
          " udp dport 9000 drop\n }\n}\n",
      });
      await sleep(300);
      for (const flood of o.cases) {
        o.log(`fidelity: ${variant}, flood ${flood}`);
        await sleep(1500); // let the previous case's entries expire
        node.resetCounts();
        const dpBefore = node.datapathStats();
        const floodSecs = o.packets / o.pps + 1.5;
        const floods = flood === "none" ? [] : [b, d].map((p) =>
          spawnIn(p.netns, [
            "python3",
            FLOOD,
            "--dst",
            c.ipv4,
            "--port",
            "9000",
            "--prio",
            flood === "prio6" ? "6" : "0",
            "--duration",
            String(floodSecs),
          ])
        );
        const rx0 = await linkStats(c.netns, "eth0");
        const t0 = performance.now();
        if (floods.length) await sleep(500);
        const occupancy: Array<{ t: number; n: number }> = [];
        let sampling = true;
        const sampler = (async () => {
          while (sampling) {
            const n = node.occupancy();
            if (n === undefined) return;
            occupancy.push({ t: Math.round(performance.now() - t0), n });
            await sleep(500);
          }
        })();
        const sender = (ns: string, prio: number) =>
          spawnIn(ns, [
            "python3",
            FLOOD,
            "--dst",
            FAR_V4,
            "--port",
            "8080",
            "--prio",
            String(prio),
            "--pps",
            String(o.pps),
            "--count",
            String(o.packets),
          ]);
        const [pod, host] = await Promise.all([
          floodResult(sender(a.netns, POD_PRIO)),
          floodResult(sender(node.topo.node, 0)),
        ]);
        await sleep(200);
        const counts = node.counts();
        sampling = false;
        await sampler;
        let floodKpps = 0;
        if (floods.length) {
          const fr = await Promise.all(floods.map(floodResult));
          const rx1 = await linkStats(c.netns, "eth0");
          const secs = Math.max(...fr.map((f) => f.seconds)) || (performance.now() - t0) / 1000;
          floodKpps = (rx1.rxPackets - rx0.rxPackets) / secs / 1000;
        }
        const dpAfter = node.datapathStats();
        const datapath = Object.fromEntries(
          Object.entries(dpAfter).map(([k, v]) => [k, v - (dpBefore[k] ?? 0)]),
        );
        const wrong: Record<string, number> = {};
        counts.fwdPrio.forEach((n, p) => {
          if (p !== POD_PRIO && n) wrong[String(p)] = n;
        });
        const nodeWrong = counts.localTotal - counts.localPrio[0];
        out.push({
          variant,
          flood,
          podSent: pod.sent,
          podSeen: counts.fwdTotal,
          podRestored: counts.fwdPrio[POD_PRIO],
          restoredPct: (100 * counts.fwdPrio[POD_PRIO]) / pod.sent,
          podWrongByPrio: wrong,
          nodeSent: host.sent,
          nodeSeen: counts.localTotal,
          nodeWrong,
          floodKpps,
          occupancy,
          occupancyMax: occupancy.length ? Math.max(...occupancy.map((s) => s.n)) : undefined,
          datapath,
        });
      }
    } finally {
      await node.destroy();
    }
  }
  return out;
}
