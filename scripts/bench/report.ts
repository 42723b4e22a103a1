/**
 * The benchmark report: its JSON shape, the text tables printed at the end of a run, and
 * the SVG chart (docs/bench.svg).
 */
import { median, round, table } from "./common.ts";
import { type LatencyResult, type Plugin, PLUGINS, type ScaleResult } from "./cni.ts";
import type { FidelityResult } from "./fidelity.ts";
import type { CostRow } from "./progcost.ts";
import { COLORS, type Panel, renderSvg } from "./svg.ts";
import {
  CARRIERS,
  type InSitu,
  type ProgStat,
  RATIO_GOALS,
  STATES,
  TABLE_COST_GOALS,
  type ThroughputResult,
  WITH_STATES,
} from "./throughput.ts";

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

const STATE_LABEL = {
  without: "without tsnproxy",
  empty: "empty programs at the 3 hooks",
  tag: "tsnproxy, tag carrier",
  table: "tsnproxy, table carrier",
} as const;

const met = (ok: boolean) => (ok ? "met" : "NOT MET");

function renderThroughput(t: ThroughputResult, tables: string[], panels: Panel[]): void {
  const r1 = (x: number) => round(x, 1);
  const range = (xs: number[], f: (x: number) => number | string = r1) =>
    xs.length ? `${f(Math.min(...xs))}-${f(Math.max(...xs))}` : "";
  const s = t.sender;
  tables.push(table(
    `1a. Datapath throughput, UDP: compiled sender (bench/c/blast.c), ${s.cpus.length} threads pinned to CPUs ${
      s.cpus.join(",")
    }, ${s.flows} flows, ${s.payloadBytes} B datagrams in sendmmsg batches of ${s.batch}, every one at priority ${s.prio}, flat out while the path switches under it (${
      s.userShare === undefined
        ? ""
        : `${round(100 * s.userShare, 2)}% of its CPU time in user space; `
    }${t.rounds} rounds x ${t.windowSeconds} s per state, medians). kpps: packets leaving tsn0. CPU ns/packet: the sender's CPU time (the whole path runs in its softirqs) per packet leaving tsn0. TCP: iperf3, ${t.tcpRounds} rounds x ${t.tcpSeconds} s`,
    [
      "state",
      "kpps",
      "range",
      "CPU ns/packet",
      "range",
      "sender's CPU share",
      "TCP Gbit/s (prio 0)",
    ],
    STATES.map((st) => {
      const u = t.udp[st];
      return [
        STATE_LABEL[st],
        r1(median(u.map((x) => x.kpps))),
        range(u.map((x) => x.kpps)),
        Math.round(median(u.map((x) => x.cpuNsPerPacket))),
        range(u.map((x) => x.cpuNsPerPacket), Math.round),
        `${Math.round(100 * median(u.map((x) => x.cpuShare)))}%`,
        round(median(t.tcpGbps[st]), 2),
      ];
    }),
  ));
  tables.push(table(
    "1a. With / without, each pair from the same round (medians over the rounds). Per CPU: CPU ns/packet without / with, the throughput ratio on CPUs the path has to itself; kpps: the wall-clock rate's ratio, which on this shared machine moves with the CPU share the sender got. Net: CPU ns/packet with - without",
    [
      "state",
      "with/without per CPU",
      "quartiles",
      "goal",
      "",
      "with/without kpps",
      "",
      "net CPU ns/packet",
      "TCP with/without",
    ],
    WITH_STATES.map((st) => {
      const x = t.ratios[st];
      const goal = st === "empty" ? undefined : RATIO_GOALS[st];
      return [
        STATE_LABEL[st],
        round(x.perCpu, 3),
        `${round(x.perCpuQuartiles[0], 3)}-${round(x.perCpuQuartiles[1], 3)}`,
        goal === undefined ? "(reference)" : `>= ${goal}`,
        goal === undefined ? "" : met(x.perCpu >= goal),
        round(x.rate, 3),
        goal === undefined ? "" : met(x.rate >= goal),
        Math.round(x.netNsPerPacket),
        round(x.tcp, 3),
      ];
    }),
  ));
  const carriers = CARRIERS.filter((c) => t.inSitu[c]);
  if (carriers.length) {
    const rows: Array<Array<string | number>> = [];
    for (const c of carriers) {
      const x = t.inSitu[c] as InSitu;
      const row = (name: string, p: ProgStat, goal?: number, net = p.netNs) => [
        `${c}: ${name}`,
        r1(p.ns),
        r1(p.floorNs),
        r1(net),
        p.runs,
        goal === undefined ? "" : `<= ${goal}`,
        goal === undefined ? "" : met(net <= goal),
      ];
      const tableGoal = (g: number) => (c === "table" ? g : undefined);
      rows.push(row("tsnp_save (pod egress)", x.save));
      rows.push(row("tsnp_admit (host side ingress)", x.admit));
      rows.push([
        ...row(
          "save + admit",
          {
            ns: x.save.ns + x.admit.ns,
            floorNs: x.save.floorNs + x.admit.floorNs,
            netNs: x.saveAdmitNetNs,
            runs: x.admit.runs,
            floorRuns: x.admit.floorRuns,
          },
          tableGoal(TABLE_COST_GOALS.saveAdmitNs),
        ),
      ]);
      rows.push(
        row("tsnp_restore (tsn0 egress)", x.restore, tableGoal(TABLE_COST_GOALS.restoreNs)),
      );
      rows.push([
        `${c}: left tsn0 with priority ${t.sender.prio}`,
        `${x.restoredPct.toFixed(3)}% of ${x.observed}`,
        "",
        "",
        "",
        "100%",
        met(x.restoredPct === 100),
      ]);
    }
    tables.push(table(
      "1a'. Per-program cost in situ (kernel run-time stats over one more UDP run per carrier, both CPUs flat out; ns per packet; empty: an empty program attached right after ours at the same hook, i.e. the stats' clock reads and the dispatch; net = gross - empty)",
      ["carrier: program", "gross ns", "empty ns", "net ns", "runs", "goal", ""],
      rows,
    ));
  }
  panels.push({
    title: "UDP throughput with / without tsnproxy, every packet prioritized",
    unit: "ratio per CPU (median of the rounds' pairs)",
    min: 0.5,
    max: 1.1,
    lines: [
      { value: RATIO_GOALS.tag, label: `tag goal ${RATIO_GOALS.tag}` },
      { value: RATIO_GOALS.table, label: `table goal ${RATIO_GOALS.table}` },
    ],
    groups: WITH_STATES.map((st) => ({
      label: st === "empty" ? "3 empty progs" : st,
      bars: [{
        label: "",
        value: t.ratios[st].perCpu,
        text: round(t.ratios[st].perCpu, 3).toString(),
        color: st === "empty" ? COLORS.without : COLORS.tsnproxy,
      }],
    })),
  });
  if (carriers.length) {
    panels.push({
      title: "Program cost in situ (net of an empty program)",
      unit: "ns per packet",
      lines: [
        { value: TABLE_COST_GOALS.saveAdmitNs, label: `table save+admit goal` },
        { value: TABLE_COST_GOALS.restoreNs, label: `table restore goal` },
      ],
      groups: carriers.map((c) => ({
        label: c,
        bars: [
          { label: "save+admit", value: t.inSitu[c]!.saveAdmitNetNs },
          { label: "restore", value: t.inSitu[c]!.restoreNetNs, color: COLORS.go },
        ],
      })),
    });
  }
}

const VARIANT_LABEL = {
  tag: "tsnproxy, tag carrier",
  table: "tsnproxy, table carrier",
  research: "research design",
} as const;

const FLOOD_LABEL = { none: "no flood", prio0: "prio-0 flood", prio6: "prio-6 flood" } as const;

export function render(r: Report): { tables: string[]; svg: string } {
  const tables: string[] = [];
  const panels: Panel[] = [];
  const r1 = (x: number) => round(x, 1);
  if (r.throughput) renderThroughput(r.throughput, tables, panels);
  if (r.programCost) {
    tables.push(table(
      "1b. Per-program cost, BPF_PROG_TEST_RUN (median ns per run; net = minus the empty program's floor, run the same way just before; (piece): one part of admit or restore alone)",
      ["program", "case", "method", "ns", "net ns"],
      r.programCost.map((c) => [c.program, c.case, c.method, c.ns, c.netNs]),
    ));
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
        VARIANT_LABEL[f.variant],
        FLOOD_LABEL[f.flood],
        r1(f.floodKpps),
        f.podSent,
        f.podRestored,
        f.restoredPct.toFixed(3), // exact: 99.98% must not print as 100
        Object.entries(f.podWrongByPrio).map(([p, n]) => `${n} at ${p}`).join(", ") || "0",
        f.nodeSent,
        f.nodeWrong,
        f.occupancyMax ?? "(no table)",
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
          color: f.variant === "research" ? COLORS.research : COLORS.tsnproxy,
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
        "left pod entries",
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
