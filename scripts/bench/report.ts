/**
 * The benchmark report: its JSON shape, the text tables printed at the end of a run, and
 * the SVG chart (docs/bench.svg).
 */
import { median, round, table } from "./common.ts";
import {
  type AgentMemory,
  type LatencyResult,
  type Plugin,
  PLUGINS,
  type ScalePlugin,
  type ScaleResult,
} from "./cni.ts";
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
  /** The checkout's commit (git describe), when it could be read. */
  commit?: string;
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
  "runtime-floor": "runtime floor: deno run of an empty module",
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

/**
 * Issue 21: the CNI verbs over the runtime floor (`deno run` of an empty module, measured in
 * the same rotation), through the agent and alone, and against the research plugin; ADD and
 * DEL alike.
 */
export const CNI_GOALS = { agentOverFloorMs: 3, aloneOverFloorMs: 8, vsResearch: 0.15 };
/**
 * Issue 21: the agent's peak resident set through the scale run at concurrency 16, and any
 * plugin process's.
 */
export const MEMORY_GOALS = { agentPeakMiB: 48, pluginPeakMiB: 40 };

/** One figure of the report, with its goal when it has one. */
export interface Figure {
  section: string;
  what: string;
  value: string;
  /** What it is compared with, from the same run. */
  baseline?: string;
  goal?: string;
  /** Undefined: no goal (a reference figure). */
  met?: boolean;
}

function renderThroughput(t: ThroughputResult, tables: string[], panels: Panel[]): void {
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

export function render(r: Report): { tables: string[]; svg: string; markdown: string } {
  const tables: string[] = [];
  const panels: Panel[] = [];
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
      "3. CNI goals: over the runtime floor (same rotation) and against the research plugin, p50 (its DEL only logs: no ratio goal for DEL)",
      ["verb", "tsnproxy", "ms", "over floor", "goal", "", "/ research", "goal", ""],
      cniGoalRows(l).map((g) => [
        g.verb,
        g.label,
        r1(g.ms),
        r1(g.overFloor),
        `<= ${g.overGoal}`,
        met(g.overFloor <= g.overGoal),
        round(g.vsResearch, 3),
        g.verb === "ADD" ? `<= ${CNI_GOALS.vsResearch}` : "(see below)",
        g.verb === "ADD" ? met(g.vsResearch <= CNI_GOALS.vsResearch) : "",
      ]),
    ));
    const p = l.profile;
    tables.push(
      table("3. Where tsnproxy's ADD time goes (medians, ms)", ["step", "ms"], profileRows(p)),
    );
    tables.push(table(
      `3. Syscalls of one tsnproxy ADD (strace -f -c; ${p.syscallsTotal} in total)`,
      ["syscall", "calls", "seconds"],
      p.syscalls.map((s) => [s.name, s.calls, s.seconds]),
    ));
    panels.push({
      title: `CNI ADD p50 (${l.pods} pods, same run)`,
      unit: "ms",
      groups: plugins.map((pl) => ({
        label: pl === "runtime-floor"
          ? "deno floor"
          : pl === "go-tuning"
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
            : pl === "runtime-floor"
            ? COLORS.without
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
    const mem = memory(s);
    if (mem) {
      tables.push(table(
        "4. Memory (MiB): the agent (`tsnproxy agent` via scripts/tsnproxy) once ready and after each of its scale runs (VmRSS now, VmHWM its peak so far; anonymous = V8's and malloc's heaps, file = mostly deno's own code paged in); the largest plugin process (/usr/bin/time)",
        ["process", "when", "RSS", "peak", "anonymous", "file-backed", "goal", ""],
        [
          ...mem.agent.map((a) => [
            "agent",
            a.when,
            r1(a.m.rssMiB),
            r1(a.m.peakMiB),
            r1(a.m.anonMiB),
            r1(a.m.fileMiB),
            a.goal ? `peak <= ${MEMORY_GOALS.agentPeakMiB}` : "",
            a.goal ? met(a.m.peakMiB <= MEMORY_GOALS.agentPeakMiB) : "",
          ]),
          ...mem.plugin.map((x) => [
            PLUGIN_LABEL[x.plugin],
            "largest of the scale runs",
            "",
            r1(x.peakMiB),
            "",
            "",
            `<= ${MEMORY_GOALS.pluginPeakMiB}`,
            met(x.peakMiB <= MEMORY_GOALS.pluginPeakMiB),
          ]),
        ],
      ));
      panels.push({
        title: `Memory: peak resident set (${s.pods} pods, concurrency 1 and 16)`,
        unit: "MiB",
        lines: [
          { value: MEMORY_GOALS.agentPeakMiB, label: `agent goal ${MEMORY_GOALS.agentPeakMiB}` },
          { value: MEMORY_GOALS.pluginPeakMiB, label: `plugin goal ${MEMORY_GOALS.pluginPeakMiB}` },
        ],
        groups: [
          ...(mem.ready
            ? [{
              label: "agent, ready",
              bars: [{ label: "", value: mem.ready.rssMiB, color: COLORS.without }],
            }]
            : []),
          ...(mem.peak
            ? [{ label: "agent, peak", bars: [{ label: "", value: mem.peak.peakMiB }] }]
            : []),
          ...mem.plugin.map((x) => ({
            label: x.plugin === "tsnproxy" ? "plugin alone" : "plugin via agent",
            bars: [{ label: "", value: x.peakMiB }],
          })),
        ],
      });
    }
  }
  const goals = figures(r).filter((f) => f.goal !== undefined);
  if (goals.length) {
    tables.push(table(
      "Goals (issues 16 and 21), every figure from this run",
      ["section", "figure", "value", "goal", ""],
      goals.map((f) => [f.section, f.what, f.value, f.goal!, met(f.met!)]),
    ));
  }
  const svg = renderSvg(
    "tsnproxy benchmarks (scripts/bench.ts)",
    `${r.date.slice(0, 10)}, kernel ${r.machine.kernel}, ${r.machine.cpus} CPUs${
      r.quick ? ", --quick" : ""
    }; every panel measured side by side in one run: compare ratios, not absolutes`,
    panels,
  );
  return { tables, svg, markdown: markdown(r) };
}

interface CniGoalRow {
  verb: "ADD" | "DEL";
  plugin: Plugin;
  label: string;
  ms: number;
  overFloor: number;
  overGoal: number;
  vsResearch: number;
}

/** The CNI goals' rows (empty for a report from before the floor was a row of its own). */
function cniGoalRows(l: LatencyResult): CniGoalRow[] {
  const out: CniGoalRow[] = [];
  for (const verb of ["ADD", "DEL"] as const) {
    const s = verb === "ADD" ? l.add : l.del;
    const floor = s["runtime-floor"]?.p50;
    const research = s.research?.p50;
    if (floor === undefined || research === undefined) continue;
    for (
      const [plugin, label, overGoal] of [
        ["tsnproxy-agent", "via the agent", CNI_GOALS.agentOverFloorMs],
        ["tsnproxy", "alone", CNI_GOALS.aloneOverFloorMs],
      ] as const
    ) {
      const ms = s[plugin]?.p50;
      if (ms === undefined) continue;
      out.push({
        verb,
        plugin,
        label,
        ms,
        overFloor: ms - floor,
        overGoal,
        vsResearch: ms / research,
      });
    }
  }
  return out;
}

interface MemoryView {
  ready?: AgentMemory;
  /** After the agent's last scale run at the highest concurrency. */
  peak?: AgentMemory;
  agent: Array<{ when: string; m: AgentMemory; goal: boolean }>;
  plugin: Array<{ plugin: ScalePlugin; peakMiB: number }>;
}

function memory(s: ScaleResult): MemoryView | undefined {
  const agentRuns = s.runs.filter((x) => x.plugin === "tsnproxy-agent" && x.agentMemory);
  if (!agentRuns.length && !s.agentReady) return undefined;
  const top = Math.max(...s.runs.map((x) => x.concurrency));
  const last = agentRuns.filter((x) => x.concurrency === top).pop();
  const agent: MemoryView["agent"] = [];
  if (s.agentReady) {
    agent.push({ when: "ready, before the first pod", m: s.agentReady, goal: false });
  }
  for (const x of agentRuns) {
    agent.push({
      when: `after ${s.pods} pods at concurrency ${x.concurrency}`,
      m: x.agentMemory!,
      goal: x === last,
    });
  }
  const plugin = (["tsnproxy", "tsnproxy-agent"] as const).flatMap((p) => {
    const runs = s.runs.filter((x) => (x.plugin ?? "tsnproxy") === p);
    return runs.length ? [{ plugin: p, peakMiB: Math.max(...runs.map((x) => x.peakRssMiB)) }] : [];
  });
  return { ready: s.agentReady, peak: last?.agentMemory, agent, plugin };
}

const r1 = (x: number) => round(x, 1);

/** Every figure of the report, goals first in each section. */
export function figures(r: Report): Figure[] {
  const out: Figure[] = [];
  const t = r.throughput;
  if (t) {
    const w = t.udp.without;
    const without = `without: ${r1(median(w.map((x) => x.kpps)))} kpps, ${
      Math.round(median(w.map((x) => x.cpuNsPerPacket)))
    } CPU ns/packet`;
    for (const c of CARRIERS) {
      const x = t.ratios[c];
      out.push({
        section: "throughput",
        what: `UDP with/without, ${c} carrier (per CPU, every packet prioritized)`,
        value: `${round(x.perCpu, 3)} (quartiles ${round(x.perCpuQuartiles[0], 3)}-${
          round(x.perCpuQuartiles[1], 3)
        }), +${Math.round(x.netNsPerPacket)} CPU ns/packet`,
        baseline: without,
        goal: `>= ${RATIO_GOALS[c]}`,
        met: x.perCpu >= RATIO_GOALS[c],
      });
    }
    out.push({
      section: "throughput",
      what: "UDP with/without, empty programs at the 3 hooks (the hooks' own cost)",
      value: `${round(t.ratios.empty.perCpu, 3)}, +${
        Math.round(t.ratios.empty.netNsPerPacket)
      } CPU ns/packet`,
      baseline: without,
    });
    out.push({
      section: "throughput",
      what: "TCP with/without (iperf3, priority 0)",
      value: CARRIERS.map((c) => `${c} ${round(t.ratios[c].tcp, 3)}`).join(", "),
    });
    for (const c of CARRIERS) {
      const x = t.inSitu[c];
      if (!x) continue;
      const table = c === "table";
      out.push({
        section: "program cost, in situ",
        what: `${c}: save + admit, net ns per packet`,
        value: String(r1(x.saveAdmitNetNs)),
        ...(table
          ? {
            goal: `<= ${TABLE_COST_GOALS.saveAdmitNs}`,
            met: x.saveAdmitNetNs <= TABLE_COST_GOALS.saveAdmitNs,
          }
          : {}),
      });
      out.push({
        section: "program cost, in situ",
        what: `${c}: restore, net ns per packet`,
        value: String(r1(x.restoreNetNs)),
        ...(table
          ? {
            goal: `<= ${TABLE_COST_GOALS.restoreNs}`,
            met: x.restoreNetNs <= TABLE_COST_GOALS.restoreNs,
          }
          : {}),
      });
    }
  }
  if (r.programCost) {
    const net = (program: string) =>
      r.programCost!.filter((c) => c.program === program && !c.case.startsWith("("))
        .map((c) => `${c.case} ${c.netNs}`).join(", ");
    const programs = [...new Set(r.programCost.map((c) => c.program))];
    // The empty program's floor and the pieces of admit and restore are in the printed table.
    for (const program of programs.filter((p) => !p.startsWith("("))) {
      const v = net(program);
      if (v) out.push({ section: "program cost, test run", what: `${program}, net ns`, value: v });
    }
  }
  if (r.fidelity) {
    for (const v of ["tag", "table"] as const) {
      const rows = r.fidelity.filter((f) => f.variant === v);
      if (!rows.length) continue;
      const worst = Math.min(...rows.map((f) => f.restoredPct));
      const wrong = rows.reduce(
        (n, f) => n + f.nodeWrong + Object.values(f.podWrongByPrio).reduce((a, b) => a + b, 0),
        0,
      );
      const research = r.fidelity.filter((f) => f.variant === "research");
      out.push({
        section: "fidelity",
        what: `${v} carrier: priority-3 packets restored (worst of ${
          rows.map((f) => f.flood).join(", ")
        }), packets given a wrong priority`,
        value: `${worst.toFixed(3)}%, ${wrong} wrong`,
        baseline: research.length
          ? `research: ${research.map((f) => `${r1(f.restoredPct)}%`).join(" / ")}, ${
            research.reduce((n, f) => n + f.nodeWrong, 0)
          } node packets given a pod's priority`
          : undefined,
        goal: "100%, 0 wrong",
        met: worst === 100 && wrong === 0,
      });
    }
  }
  const l = r.cniLatency;
  if (l) {
    const research = l.add.research;
    const go = l.add["go-tuning"];
    const floor = l.add["runtime-floor"];
    const base = [
      floor ? `floor ${r1(floor.p50)} / ${r1(l.del["runtime-floor"]!.p50)}` : "",
      go ? `Go tuning ${r1(go.p50)} / ${r1(l.del["go-tuning"]!.p50)}` : "",
      research ? `research ${r1(research.p50)} / ${r1(l.del.research!.p50)}` : "",
    ].filter(Boolean).join(", ") + " ms (ADD / DEL)";
    for (const g of cniGoalRows(l)) {
      out.push({
        section: "CNI latency",
        what: `${g.verb} p50 ${g.label} over the runtime floor`,
        value: `${r1(g.ms)} ms: floor + ${r1(g.overFloor)}`,
        baseline: base,
        goal: `<= floor + ${g.overGoal} ms`,
        met: g.overFloor <= g.overGoal,
      });
      // The research plugin's DEL only appends a log line (it never detaches anything): a
      // ratio to it is reported, but it is no goal a DEL that cleans up could meet.
      out.push({
        section: "CNI latency",
        what: `${g.verb} p50 ${g.label} / research plugin${
          g.verb === "DEL" ? " (whose DEL only logs: no goal)" : ""
        }`,
        value: String(round(g.vsResearch, 3)),
        ...(g.verb === "ADD"
          ? { goal: `<= ${CNI_GOALS.vsResearch}`, met: g.vsResearch <= CNI_GOALS.vsResearch }
          : {}),
      });
    }
    if (l.binary?.measured && l.add["tsnproxy-binary"]) {
      out.push({
        section: "CNI latency",
        what: "ADD p50, compiled binary",
        value: `${r1(l.add["tsnproxy-binary"].p50)} ms`,
        baseline: base,
      });
    }
  }
  const s = r.scale;
  if (s) {
    const failures = s.runs.reduce((n, x) => n + x.failures, 0);
    const left = s.runs.reduce(
      (n, x) =>
        n + x.leftovers.pins + x.leftovers.policies + x.leftovers.hookPrograms +
        x.leftovers.podCounters,
      0,
    );
    out.push({
      section: "scale",
      what: `${s.pods} pods ADD then DEL at concurrency ${
        [...new Set(s.runs.map((x) => x.concurrency))].join(" and ")
      }, alone and via the agent: failures, leftovers`,
      value: `${failures} failures, ${left} left`,
      goal: "0, 0",
      met: failures === 0 && left === 0,
    });
    for (const x of s.runs) {
      out.push({
        section: "scale",
        what: `${PLUGIN_LABEL[x.plugin ?? "tsnproxy"]}, concurrency ${x.concurrency}`,
        value: `ADD ${r1(x.addTotalS)} s in all (p50 ${r1(x.addP50Ms)} ms), DEL ${
          r1(x.delTotalS)
        } s (p50 ${r1(x.delP50Ms)} ms)`,
      });
    }
    const mem = memory(s);
    if (mem?.peak) {
      out.push({
        section: "memory",
        what: `agent's peak resident set through ${s.pods} pods at concurrency ${
          Math.max(...s.runs.map((x) => x.concurrency))
        } (VmHWM)`,
        value: `${r1(mem.peak.peakMiB)} MiB (after: ${r1(mem.peak.anonMiB)} anonymous, ${
          r1(mem.peak.fileMiB)
        } file-backed)`,
        goal: `<= ${MEMORY_GOALS.agentPeakMiB} MiB`,
        met: mem.peak.peakMiB <= MEMORY_GOALS.agentPeakMiB,
      });
    }
    if (mem?.ready) {
      out.push({
        section: "memory",
        what: "agent's resident set once ready, before the first pod (steady state)",
        value: `${r1(mem.ready.rssMiB)} MiB (${r1(mem.ready.anonMiB)} anonymous, ${
          r1(mem.ready.fileMiB)
        } file-backed)`,
      });
    }
    for (const x of mem?.plugin ?? []) {
      out.push({
        section: "memory",
        what: `plugin process's peak resident set, ${
          x.plugin === "tsnproxy" ? "alone" : "via the agent"
        } (largest of the scale runs)`,
        value: `${r1(x.peakMiB)} MiB`,
        goal: `<= ${MEMORY_GOALS.pluginPeakMiB} MiB`,
        met: x.peakMiB <= MEMORY_GOALS.pluginPeakMiB,
      });
    }
  }
  return out;
}

/** A markdown table cell: pipes escaped, one line. */
const cell = (s: string) => s.replace(/\|/g, "\\|").replace(/\n/g, " ");

/**
 * The figures block of docs/benchmarks.md (between its bench:figures markers): every figure
 * with its goal and whether this run met it, and where the CNI time goes.
 */
export function markdown(r: Report): string {
  const sections = [
    r.throughput && "throughput",
    r.programCost && "cost",
    r.fidelity && "fidelity",
    r.cniLatency && "cni",
    r.scale && "scale",
  ].filter(Boolean).join(", ");
  const lines = [
    `Generated from \`.cache/bench/report.json\` by \`deno task bench\` (\`-- --render\` redraws it): ${
      r.date.slice(0, 16).replace("T", " ")
    } UTC${r.commit ? `, ${r.commit}` : ""}, kernel ${r.machine.kernel}, ${r.machine.cpus} CPUs${
      r.quick ? ", **--quick**" : ""
    }${r.seconds ? `, ${Math.round(r.seconds)} s` : ""}; sections: ${sections}.`,
    "",
    "| section | figure | this run | baseline (same run) | goal | |",
    "| --- | --- | --- | --- | --- | --- |",
    ...figures(r).map((f) =>
      `| ${f.section} | ${cell(f.what)} | ${cell(f.value)} | ${cell(f.baseline ?? "")} | ${
        cell(f.goal ?? "")
      } | ${f.met === undefined ? "" : f.met ? "met" : "**NOT MET**"} |`
    ),
  ];
  const p = r.cniLatency?.profile;
  if (p) {
    lines.push(
      "",
      "Where tsnproxy's ADD time goes (medians of the profile runs, ms):",
      "",
      "| step | ms |",
      "| --- | --- |",
      ...profileRows(p).map(([k, v]) => `| ${cell(String(k))} | ${v} |`),
    );
  }
  return lines.join("\n");
}

function profileRows(p: LatencyResult["profile"]): Array<[string, number]> {
  return [
    ["deno run of an empty module (runtime floor)", r1(p.denoEmptyMs)],
    ["VERSION via launcher (floor + launcher + main.ts + hand-off + bundle)", r1(p.versionMs)],
    ["  in-process: import build/cni.js (the CNI code bundled)", r1(p.importMs.bundle)],
    ["  in-process: import src/cni/main.ts (as modules)", r1(p.importMs.cniMain)],
    ["  in-process: import src/cni/verbs.ts (datapath modules)", r1(p.importMs.verbs)],
    ["  in-process: open libbpf", r1(p.importMs.libbpfOpen)],
    ["ADD via `deno run main.ts` directly", r1(p.addDirectMs)],
    ["ADD via scripts/tsnproxy (launcher)", r1(p.addWallMs)],
    ["  of which runCni() start to done (logged by the plugin)", r1(p.addInPluginMs)],
    ["ADD via launcher, CNI code as modules (TSNPROXY_CNI_BUNDLE=0)", r1(p.addModulesMs)],
  ];
}

const BEGIN = "<!-- bench:figures:begin -->";
const END = "<!-- bench:figures:end -->";

/** `doc` with its figures block replaced by `block`; throws without the markers. */
export function replaceFigures(doc: string, block: string): string {
  const a = doc.indexOf(BEGIN);
  const b = doc.indexOf(END);
  if (a < 0 || b < a) throw new Error(`no ${BEGIN} ... ${END} block`);
  return `${doc.slice(0, a + BEGIN.length)}\n\n${block}\n\n${doc.slice(b)}`;
}
