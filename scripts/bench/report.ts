/**
 * The benchmark report: its JSON shape, the text tables printed at the end of a run, and
 * the SVG chart (docs/bench.svg).
 */
import { median, round, table } from "./common.ts";
import { type LatencyResult, type Plugin, PLUGINS, type ScaleResult } from "./cni.ts";
import type { FidelityResult } from "./fidelity.ts";
import type { CostRow } from "./progcost.ts";
import { COLORS, type Panel, renderSvg } from "./svg.ts";
import type { InSitu, ThroughputResult } from "./throughput.ts";

export interface Report {
  version: 1;
  date: string;
  quick: boolean;
  machine: { kernel: string; cpus: number };
  seconds?: number;
  throughput?: ThroughputResult;
  programCost?: CostRow[];
  fidelity?: FidelityResult[];
  cniLatency?: LatencyResult;
  scale?: ScaleResult;
}

export function report(quick: boolean): Report {
  return {
    version: 1,
    date: new Date().toISOString(),
    quick,
    machine: { kernel: Deno.osRelease(), cpus: navigator.hardwareConcurrency },
  };
}

const PLUGIN_LABEL: Record<Plugin, string> = {
  tsnproxy: "tsnproxy (scripts/tsnproxy)",
  "tsnproxy-binary": "tsnproxy, compiled binary",
  "tsnproxy-agent": "tsnproxy, agent runs the verb",
  "go-tuning": "Go tuning (Debian)",
  research: "research bash plugin",
};

const FLOOD_LABEL = { none: "no flood", prio0: "prio-0 flood", prio6: "prio-6 flood" } as const;

export function render(r: Report): { tables: string[]; svg: string } {
  const tables: string[] = [];
  const panels: Panel[] = [];
  const r1 = (x: number) => round(x, 1);
  if (r.throughput) {
    const t = r.throughput;
    const row = (name: string, w: number[], wo: number[], ratio: number) => [
      name,
      r1(median(wo)),
      r1(median(w)),
      round(ratio, 3),
      `${r1(Math.min(...wo))}-${r1(Math.max(...wo))}`,
      `${r1(Math.min(...w))}-${r1(Math.max(...w))}`,
    ];
    tables.push(table(
      `1a. Datapath overhead (${t.alternations} alternations x ${t.seconds} s; medians; with/without: median of the alternations' ratios; goal >= 0.98)`,
      ["traffic", "without", "with", "with/without", "range without", "range with"],
      [
        row("UDP 64 B prio 3, kpps", t.udpKpps.with, t.udpKpps.without, t.udpRatio),
        row("TCP iperf3, Gbit/s", t.tcpGbps.with, t.tcpGbps.without, t.tcpRatio),
      ],
    ));
    if (t.inSitu) {
      const s = t.inSitu;
      tables.push(table(
        "1a'. Per-program cost on the real path (kernel run-time stats, one more run of each; ns per packet; net = minus an empty program attached right after it)",
        [
          "traffic",
          "tsnp_save ns",
          "net",
          "save runs",
          "tsnp_restore ns",
          "net",
          "restore runs",
        ],
        [
          ["UDP 64 B prio 3 (every packet tagged and restored)", s.udp],
          ["TCP iperf3 prio 0 (saver skips)", s.tcp],
        ].map(([name, x]) => {
          const v = x as InSitu;
          const net = (ns: number, floor?: number) =>
            floor === undefined || Number.isNaN(floor) ? "" : r1(Math.max(0, ns - floor));
          return [
            name as string,
            r1(v.saveNs),
            net(v.saveNs, v.saveFloorNs),
            v.saveRuns,
            r1(v.restoreNs),
            net(v.restoreNs, v.restoreFloorNs),
            v.restoreRuns,
          ];
        }),
      ));
    }
    panels.push({
      title: "Datapath throughput with / without tsnproxy",
      unit: "ratio (median of back-to-back pairs)",
      min: 0.5,
      max: 1.2,
      lines: [{ value: 0.98, label: "goal 0.98" }],
      groups: [
        {
          label: "UDP 64 B, prio 3",
          bars: [{ label: "", value: t.udpRatio, text: round(t.udpRatio, 3).toString() }],
        },
        {
          label: "TCP (iperf3)",
          bars: [{ label: "", value: t.tcpRatio, text: round(t.tcpRatio, 3).toString() }],
        },
      ],
    });
  }
  if (r.programCost) {
    tables.push(table(
      "1b. Per-program cost, BPF_PROG_TEST_RUN (median ns per run; net = minus the empty program's floor; goal <= 25 ns)",
      ["program", "case", "method", "ns", "net ns"],
      r.programCost.map((c) => [c.program, c.case, c.method, c.ns, c.netNs]),
    ));
    const pick = (p: string, c: string) =>
      r.programCost!.find((x) => x.program === p && x.case === c);
    const bars = [
      ["save, prio 0", pick("tsnp_save", "priority 0, no launch time (skipped)")],
      ["save, prio 3 (tag)", pick("tsnp_save", "priority 3 (the tag)")],
      ["restore, tagged", pick("tsnp_restore", "tagged (priority from the tag)")],
      [
        "save, table",
        pick("tsnp_save", "class-id priority, same packet again (in-flight count +1)"),
      ],
      [
        "restore, table hit",
        pick("tsnp_restore", "table hit (forwarded, entry found, priority written)"),
      ],
      ["restore, table miss", pick("tsnp_restore", "untagged, table miss (forwarded, no entry)")],
      [
        "restore, idle",
        pick("tsnp_restore", "untagged, nothing in the table within max_age (gate closed)"),
      ],
      ["restore, node pkt", pick("tsnp_restore", "untagged node's own packet")],
    ] as const;
    panels.push({
      title: "tsnproxy program cost (test_run, repeat, net)",
      unit: "ns per packet",
      lines: [{ value: 25, label: "goal 25 ns" }],
      groups: bars.map(([label, c]) => ({
        label,
        bars: [{ label: "", value: c?.netNs ?? NaN }],
      })),
    });
  }
  if (r.fidelity) {
    tables.push(table(
      "2. Fidelity under load (pod A prio 3 paced; node prio 0 paced; flood = 2 pods -> 1 pod on the bridge)",
      [
        "datapath",
        "flood",
        "flood kpps",
        "pod A sent",
        "left prio 3",
        "% restored",
        "pod A wrong prio",
        "node sent",
        "node wrong",
        "table max",
      ],
      r.fidelity.map((f) => [
        f.variant,
        FLOOD_LABEL[f.flood],
        r1(f.floodKpps),
        f.podSent,
        f.podRestored,
        f.restoredPct.toFixed(3), // exact: 99.98% must not print as 100
        Object.entries(f.podWrongByPrio).map(([p, n]) => `${n} at ${p}`).join(", ") || "0",
        f.nodeSent,
        f.nodeWrong,
        f.occupancyMax,
      ]),
    ));
    const cases = [...new Set(r.fidelity.map((f) => f.flood))];
    panels.push({
      title: "Fidelity: prio-3 packets leaving tsn0 with prio 3",
      unit: "% restored",
      min: 0,
      max: 105,
      lines: [{ value: 100, label: "goal 100%" }],
      groups: cases.map((c) => ({
        label: FLOOD_LABEL[c],
        bars: r.fidelity!.filter((f) => f.flood === c).map((f) => ({
          label: f.variant,
          value: f.restoredPct,
          text: `${round(f.restoredPct, 1)}%`,
          color: f.variant === "tsnproxy" ? COLORS.tsnproxy : COLORS.research,
        })),
      })),
    });
  }
  if (r.cniLatency) {
    const l = r.cniLatency;
    const plugins = (l.plugins ?? PLUGINS).filter((p) => l.add[p] && l.del[p]);
    tables.push(table(
      `3. CNI latency, ${l.pods} fresh pod netns, same run, rotating order (ms)${
        l.binary && !l.binary.measured ? `; compiled binary not measured: ${l.binary.note}` : ""
      }`,
      ["plugin", "ADD p50", "ADD p90", "ADD p99", "DEL p50", "DEL p90", "DEL p99", "execs/ADD"],
      plugins.map((p) => [
        PLUGIN_LABEL[p],
        r1(l.add[p]!.p50),
        r1(l.add[p]!.p90),
        r1(l.add[p]!.p99),
        r1(l.del[p]!.p50),
        r1(l.del[p]!.p90),
        r1(l.del[p]!.p99),
        l.profile.execsPerAdd[p] ?? "",
      ]),
    ));
    tables.push(table(
      "3. ADD p50 ratios (goals: vs research <= 0.2, vs Go <= 10)",
      ["ratio", "value", "goal", "met"],
      ([
        ["tsnproxy / research", l.ratios.tsnproxyVsResearch, 0.2, 3],
        ["tsnproxy / Go tuning", l.ratios.tsnproxyVsGo, 10, 2],
        ["tsnproxy, compiled binary / research", l.ratios.binaryVsResearch, 0.2, 3],
        ["tsnproxy, compiled binary / Go tuning", l.ratios.binaryVsGo, 10, 2],
        ["tsnproxy, agent runs the verb / research", l.ratios.agentVsResearch, 0.2, 3],
        ["tsnproxy, agent runs the verb / Go tuning", l.ratios.agentVsGo, 10, 2],
      ] as Array<[string, number | undefined, number, number]>).flatMap((
        [name, value, goal, digits],
      ) =>
        value === undefined
          ? []
          : [[name, round(value, digits), `<= ${goal}`, value <= goal ? "yes" : "no"]]
      ),
    ));
    const p = l.profile;
    tables.push(table(
      "3. Where tsnproxy's ADD time goes (medians, ms)",
      ["step", "ms"],
      [
        ["deno run of an empty module (runtime floor)", r1(p.denoEmptyMs)],
        ["VERSION via launcher (floor + launcher + main.ts + the bundle)", r1(p.versionMs)],
        ["  in-process: import build/cni.js (the CNI code bundled)", r1(p.importMs.bundle)],
        ["  in-process: import src/cni/main.ts (as modules)", r1(p.importMs.cniMain)],
        ["  in-process: import src/cni/verbs.ts (datapath modules)", r1(p.importMs.verbs)],
        ["  in-process: open libbpf", r1(p.importMs.libbpfOpen)],
        ["ADD via `deno run main.ts` directly", r1(p.addDirectMs)],
        ["ADD via scripts/tsnproxy (launcher)", r1(p.addWallMs)],
        ["  of which runCni() start to done (logged by the plugin)", r1(p.addInPluginMs)],
        ["ADD via launcher, CNI code as modules (TSNPROXY_CNI_BUNDLE=0)", r1(p.addModulesMs)],
      ],
    ));
    tables.push(table(
      `3. Syscalls of one tsnproxy ADD (strace -f -c; ${p.syscallsTotal} in total)`,
      ["syscall", "calls", "seconds"],
      p.syscalls.map((s) => [s.name, s.calls, s.seconds]),
    ));
    panels.push({
      title: `CNI ADD p50 (${l.pods} pods, same run)`,
      unit: "ms",
      groups: plugins.map((pl) => ({
        label: pl === "go-tuning"
          ? "Go tuning"
          : pl === "research"
          ? "research (bash)"
          : pl === "tsnproxy-agent"
          ? "tsnproxy via agent"
          : pl === "tsnproxy-binary"
          ? "tsnproxy binary"
          : "tsnproxy",
        bars: [{
          label: "",
          value: l.add[pl]!.p50,
          text: `${r1(l.add[pl]!.p50)} ms`,
          color: pl.startsWith("tsnproxy")
            ? COLORS.tsnproxy
            : pl === "research"
            ? COLORS.research
            : COLORS.go,
        }],
      })),
    });
  }
  if (r.scale) {
    const s = r.scale;
    tables.push(table(
      `4. Scale: ${s.pods} pods ADD then DEL (tsnproxy via scripts/tsnproxy)`,
      [
        "plugin",
        "concurrency",
        "ADD total s",
        "DEL total s",
        "ADD p50 ms",
        "DEL p50 ms",
        "peak RSS MiB",
        "agent peak MiB",
        "failures",
        "left pins",
        "left policies",
        "left progs on pod hooks",
        "left pod counters",
      ],
      s.runs.map((x) => [
        PLUGIN_LABEL[x.plugin ?? "tsnproxy"],
        x.concurrency,
        r1(x.addTotalS),
        r1(x.delTotalS),
        r1(x.addP50Ms),
        r1(x.delP50Ms),
        r1(x.peakRssMiB),
        x.agentPeakRssMiB === undefined ? "" : r1(x.agentPeakRssMiB),
        x.failures,
        x.leftovers.pins,
        x.leftovers.policies,
        x.leftovers.hookPrograms,
        x.leftovers.podCounters,
      ]),
    ));
    tables.push(table(
      `4. BPF maps (memlock from fdinfo; ${r1(s.mapMemlockKiBTotal)} KiB in total)`,
      ["map", "type", "key B", "value B", "max entries", "key+value x max KiB", "memlock KiB"],
      s.maps.map((m) => [
        m.name,
        m.type,
        m.keySize,
        m.valueSize,
        m.maxEntries,
        r1(((m.keySize + m.valueSize) * m.maxEntries) / 1024),
        r1(m.memlockKiB),
      ]),
    ));
  }
  const svg = renderSvg(
    "tsnproxy benchmarks (scripts/bench.ts)",
    `${r.date.slice(0, 10)}, kernel ${r.machine.kernel}, ${r.machine.cpus} CPUs${
      r.quick ? ", --quick" : ""
    }; every panel measured side by side in one run: compare ratios, not absolutes`,
    panels,
  );
  return { tables, svg };
}
