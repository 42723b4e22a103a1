/** doctor checks of the pinned datapath: programs, maps, the config map, the GC timer. */
import { DatapathMaps } from "../bpf/maps.ts";
import { MAPS, PinLayout, type ProgramRole, PROGRAMS } from "../bpf/pins.ts";
import { closeFd, mapInfo, objGet, progIdAt, progInfo } from "../bpf/sys.ts";
import { type CheckRef, type DoctorContext, plural } from "./context.ts";
import { exists } from "../util/fs.ts";

const INSTALL = "tsnproxy install";
const ROOT: CheckRef = { id: "pins.root", title: "Pin root" };
const PROGRAMS_PINNED: CheckRef = { id: "pins.programs", title: "Pinned programs" };
const MAPS_PINNED: CheckRef = { id: "pins.maps", title: "Pinned maps" };
const CONFIG: CheckRef = { id: "pins.config", title: "Datapath config matches the node config" };
export const GC: CheckRef = { id: "pins.gc", title: "GC timer running" };

function installFix(ctx: DoctorContext, what: string): string {
  return `${INSTALL} --bpffs ${ctx.bpffs}   (${what})`;
}

/** The pinned program's id, or undefined when the pin is missing. */
export function pinnedProgId(bpffs: string, role: ProgramRole): number | undefined {
  return progIdAt(new PinLayout(bpffs).prog(role));
}

/** True when the pin root holds a datapath (so per-pin checks make sense). */
export function pinChecks(ctx: DoctorContext): boolean {
  const pins = new PinLayout(ctx.bpffs);
  if (!ctx.has("kernel.bpffs", "pass")) {
    for (const ref of [ROOT, PROGRAMS_PINNED, MAPS_PINNED, CONFIG]) {
      ctx.skip({ ...ref, found: "the pin root is not on a bpf filesystem (kernel.bpffs)" });
    }
    return false;
  }
  if (!exists(pins.progsDir) && !exists(pins.mapsDir)) {
    ctx.fail({
      ...ROOT,
      found: `${pins.root} ${
        exists(pins.root) ? "holds no progs/ or maps/" : "does not exist"
      }: tsnproxy is not installed on this node (or with another --bpffs)`,
      fix: installFix(ctx, "loads and pins the datapath"),
    });
    for (const ref of [PROGRAMS_PINNED, MAPS_PINNED, CONFIG]) {
      ctx.skip({ ...ref, found: "no pin root (pins.root)" });
    }
    return false;
  }
  ctx.pass({ ...ROOT, found: `${pins.root} exists` });

  ctx.run(PROGRAMS_PINNED, (check) => {
    const found: Record<string, number> = {};
    const missing: string[] = [];
    for (const role of Object.keys(PROGRAMS) as ProgramRole[]) {
      const fd = objGet(pins.prog(role));
      if (fd === undefined) {
        missing.push(pins.prog(role));
        continue;
      }
      try {
        const i = progInfo(fd);
        found[PROGRAMS[role]] = i.id;
      } finally {
        closeFd(fd);
      }
    }
    const list = Object.entries(found).map(([n, id]) => `${n} (id ${id})`).join(", ");
    if (missing.length) {
      check.fail({
        found: `missing: ${missing.join(", ")}${list ? `; present: ${list}` : ""}. New pods ` +
          "cannot be attached (the CNI plugin only attaches pinned programs)",
        fix: installFix(ctx, "re-pins the programs; maps and pod state are kept"),
        data: { programs: found, missing },
      });
      return;
    }
    check.pass({ found: list, data: { programs: found } });
  });

  ctx.run(MAPS_PINNED, (check) => {
    const found: Record<string, number> = {};
    const missing: string[] = [];
    let metaMax: number | undefined;
    for (const name of MAPS) {
      const fd = objGet(pins.map(name));
      if (fd === undefined) {
        missing.push(pins.map(name));
        continue;
      }
      try {
        const i = mapInfo(fd);
        found[name] = i.id;
        if (name === "tsnp_meta") metaMax = i.maxEntries;
      } finally {
        closeFd(fd);
      }
    }
    const data = { maps: found, missing, metaMaxEntries: metaMax ?? null };
    if (missing.length) {
      check.fail({
        found: `missing: ${missing.join(", ")}: the programs pinned earlier use maps that ` +
          "nothing else can reach any more",
        fix: `tsnproxy uninstall --bpffs ${ctx.bpffs} && ${INSTALL} --bpffs ${ctx.bpffs}   ` +
          "(re-creates the maps; pods re-attach on their next ADD)",
        data,
      });
      return;
    }
    const want = ctx.config.mapEntries;
    if (metaMax !== undefined && metaMax !== want) {
      check.warn({
        found: `all ${MAPS.length} maps pinned, but tsnp_meta has ${metaMax} entries and the ` +
          `node config says mapEntries ${want} (the size is fixed when the map is created; ` +
          "install keeps existing maps)",
        fix: `tsnproxy uninstall --bpffs ${ctx.bpffs} && ${INSTALL} --bpffs ${ctx.bpffs}   ` +
          `(or set mapEntries: ${metaMax})`,
        data,
      });
      return;
    }
    check.pass({
      found: `${plural(MAPS.length, "map")} pinned; tsnp_meta holds up to ${metaMax} entries`,
      data,
    });
  });

  ctx.run(CONFIG, (check) => {
    const maps = DatapathMaps.open(ctx.bpffs);
    try {
      const c = maps.readConfig();
      const want = {
        maxAgeMs: ctx.config.gc.maxAgeMs,
        intervalMs: ctx.config.gc.intervalMs,
      };
      const have = {
        maxAgeMs: Number(c.maxAgeNs / 1_000_000n),
        intervalMs: Number(c.gcIntervalNs / 1_000_000n),
      };
      const diffs: string[] = [];
      if (have.maxAgeMs !== want.maxAgeMs) {
        diffs.push(`gc.maxAgeMs ${have.maxAgeMs} (config ${want.maxAgeMs})`);
      }
      if (have.intervalMs !== want.intervalMs) {
        diffs.push(`gc.intervalMs ${have.intervalMs} (config ${want.intervalMs})`);
      }
      const data = { ...have, defaultMaxPriority: c.defaultPolicy.maxPriority };
      if (diffs.length) {
        check.warn({
          found: `the running datapath has ${diffs.join(", ")}`,
          fix: installFix(ctx, "writes the config map and re-arms the GC"),
          data,
        });
        return;
      }
      check.pass({
        found: `gc every ${have.intervalMs} ms, entries expire after ${have.maxAgeMs} ms`,
        data,
      });
    } finally {
      maps.close();
    }
  });
  return true;
}

export interface GcSample {
  runs: bigint;
  at: number;
  intervalMs: number;
}

/** First reading of the GC counter; the check itself runs after the other checks. */
export function gcSample(ctx: DoctorContext): GcSample | undefined {
  try {
    const maps = DatapathMaps.open(ctx.bpffs);
    try {
      const intervalMs = Number(maps.readConfig().gcIntervalNs) / 1e6;
      return { runs: maps.counters().gcRuns, at: performance.now(), intervalMs };
    } finally {
      maps.close();
    }
  } catch {
    return undefined;
  }
}

export async function gcCheck(ctx: DoctorContext, first: GcSample | undefined): Promise<void> {
  if (!first) {
    ctx.skip({ ...GC, found: "the datapath maps cannot be read (see pins.*)" });
    return;
  }
  await ctx.runAsync(GC, async (check) => {
    const cap = ctx.opts.gcWaitCapMs ?? 5000;
    const want = Math.min(first.intervalMs * 1.5, cap);
    const left = want - (performance.now() - first.at);
    if (left > 0) await new Promise((r) => setTimeout(r, left));
    const maps = DatapathMaps.open(ctx.bpffs);
    let runs: bigint;
    try {
      runs = maps.counters().gcRuns;
    } finally {
      maps.close();
    }
    const waited = Math.round(performance.now() - first.at);
    const data = {
      gcRunsBefore: first.runs.toString(),
      gcRunsAfter: runs.toString(),
      waitedMs: waited,
      intervalMs: first.intervalMs,
    };
    if (runs > first.runs) {
      check.pass({
        found: `gcRuns went ${first.runs} -> ${runs} in ${waited} ms (interval ` +
          `${first.intervalMs} ms)`,
        data,
      });
      return;
    }
    if (waited < first.intervalMs) {
      check.warn({
        found: `gcRuns stayed ${runs} over ${waited} ms, shorter than the ${first.intervalMs} ` +
          "ms interval: cannot tell whether the timer runs",
        fix: "run `tsnproxy status --watch` for longer than gc.intervalMs and watch gc runs",
        data,
      });
      return;
    }
    check.fail({
      found: `gcRuns stayed ${runs} over ${waited} ms (interval ${first.intervalMs} ms): the GC ` +
        "timer is not armed, so entries of packets that never reach the restorer are only " +
        "evicted by the LRU and the expired counter stays 0",
      fix: installFix(ctx, "re-arms the GC timer"),
      data,
    });
  });
}
