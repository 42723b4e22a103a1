/**
 * `tsnproxy status`: the datapath's live counters, node-wide and per pod, once or every N
 * seconds (--watch; the screen is cleared between samples on a terminal). --json prints
 * statusReportSchema, one JSON document per sample (one per line with --watch). Exit 0, or 1
 * when the last sample found nothing installed.
 */
import { DatapathMaps } from "../bpf/maps.ts";
import { closeFd, fdById, linkInfo, objGet } from "../bpf/sys.ts";
import { parsePodPin, PinLayout, type ProgramRole, PROGRAMS, splitMarker } from "../bpf/pins.ts";
import { listPodAttachments, type PodAttachmentRecord, podCookie } from "../bpf/pod.ts";
import { isLegacyPod } from "../bpf/legacy.ts";
import { formatRelease, releaseOfProgram } from "../bpf/release.ts";
import { reasonText } from "../bpf/carrier.ts";
import { describePolicy } from "../policy/resolve.ts";
import { ifIndexToName } from "../ffi/libc.ts";
import { loadNodeConfigFor } from "../config/node.ts";
import { asTsnproxyError } from "../errors.ts";
import { COUNTERS } from "../ffi/structs/datapath.ts";
import { restorerAttached, restorerInterfaces } from "../bpf/node.ts";
import { ifNameToIndex } from "../ffi/libc.ts";
import { ExitCode } from "../exit_codes.ts";
import type { StatusOptions } from "../options.ts";
import { detectStyle, paint, type Style } from "./render.ts";
import { STATUS_SCHEMA_VERSION, type StatusReport, statusReportSchema } from "./schema.ts";

export { statusReportSchema } from "./schema.ts";

/**
 * Each TSN interface, configured (`configured`, in config order) or holding a restorer pin
 * under the root: whether it exists and whether the restorer is on its egress, with which
 * tc API and release. The restorer's counters are the node's (one program on every
 * interface): status shows where it runs, the counters say what it did.
 */
export function interfaceStatus(
  bpffs: string,
  configured: readonly string[],
): NonNullable<StatusReport["interfaces"]> {
  const pinned = restorerInterfaces(bpffs);
  const names = [...configured, ...pinned.filter((n) => !configured.includes(n)).sort()];
  return names.map((name) => {
    const ifindex = ifNameToIndex(name);
    const a = ifindex !== 0 ? restorerAttached(bpffs, name) : undefined;
    return {
      name,
      configured: configured.includes(name),
      ifindex: ifindex === 0 ? null : ifindex,
      restorer: a ? { api: a.api, pin: a.pin, release: releaseAt(a.pin) } : null,
    };
  });
}

/** The release of the program an attachment pin runs (a link's, or a clsact marker's). */
export function releaseAt(pin: string): string | null {
  const fd = objGet(pin);
  if (fd === undefined) return null;
  try {
    if (splitMarker(pin.slice(pin.lastIndexOf("/") + 1)).clsact) {
      return formatRelease(releaseOfProgram(fd));
    }
    const prog = fdById("prog", linkInfo(fd).progId);
    if (prog < 0) return null;
    try {
      return formatRelease(releaseOfProgram(prog));
    } finally {
      closeFd(prog);
    }
  } finally {
    closeFd(fd);
  }
}

function sideRelease(rec: PodAttachmentRecord | undefined, host: boolean): string | null {
  const side = host ? "host" : "pod";
  const pin = rec?.pins.find((p) => parsePodPin(p.slice(p.lastIndexOf("/") + 1))?.side === side);
  return pin ? releaseAt(pin) : null;
}

/** `tsnInterfaces`: the configured TSN interfaces (interfaceStatus). */
export function collectStatus(bpffs: string, tsnInterfaces: readonly string[] = []): StatusReport {
  const base = {
    version: STATUS_SCHEMA_VERSION,
    generatedAt: new Date().toISOString(),
    bpffs,
  } as const;
  let maps: DatapathMaps | undefined;
  try {
    maps = DatapathMaps.open(bpffs);
    const counters = maps.counters();
    const cfg = maps.readConfig();
    const atts = listPodAttachments(bpffs);
    const byCookie = new Map<bigint, PodAttachmentRecord>();
    for (const a of atts) {
      if (a.containerId !== undefined) byCookie.set(podCookie(a.containerId), a);
    }
    const counts = new Map(maps.podCounters().map((c) => [c.podCookie, c]));
    const pods = maps.pods().map(({ ifindex, entry }) => {
      const rec = byCookie.get(entry.cookie);
      const c = counts.get(entry.cookie);
      return {
        cookie: entry.cookie.toString(16).padStart(16, "0"),
        containerId: rec?.containerId ?? null,
        ifname: rec?.ifname ?? null,
        host: ifIndexToName(ifindex) ?? null,
        carrier: entry.carrier,
        carrierReason: reasonText(entry.reason),
        saver: sideRelease(rec, false),
        admit: sideRelease(rec, true),
        policy: describePolicy(entry.policy),
        admitted: (c?.admitted ?? 0n).toString(),
        clamped: (c?.clamped ?? 0n).toString(),
        restored: (c?.restored ?? 0n).toString(),
      };
    }).sort((a, b) => (a.containerId ?? "~").localeCompare(b.containerId ?? "~"));
    const pins = new PinLayout(bpffs);
    const programs: Record<string, string> = {};
    for (const role of Object.keys(PROGRAMS) as ProgramRole[]) {
      const fd = objGet(pins.prog(role));
      if (fd === undefined) continue;
      try {
        programs[PROGRAMS[role]] = formatRelease(releaseOfProgram(fd));
      } finally {
        closeFd(fd);
      }
    }
    const report: StatusReport = {
      ...base,
      installed: true,
      node: {
        counters: Object.fromEntries(COUNTERS.map((k) => [k, counters[k].toString()])),
        carrier: cfg.tags ? "tag" : "stage",
        carrierReason: reasonText(cfg.carrierReason),
        policy: describePolicy(cfg.node),
        stageMaxAgeMs: Number(cfg.stageMaxAgeNs) / 1e6,
        programs,
        legacyPods: atts.filter(isLegacyPod).length,
      },
      interfaces: interfaceStatus(bpffs, tsnInterfaces),
      pods,
    };
    return statusReportSchema.parse(report);
  } catch (e) {
    const err = asTsnproxyError(e);
    return statusReportSchema.parse({ ...base, installed: false, error: err.oneLine() });
  } finally {
    maps?.close();
  }
}

/** Per-second rates of the node counters between two samples. */
export function ratesBetween(prev: StatusReport, cur: StatusReport): Record<string, number> {
  const out: Record<string, number> = {};
  if (!prev.node || !cur.node) return out;
  const dt = (Date.parse(cur.generatedAt) - Date.parse(prev.generatedAt)) / 1000;
  if (dt <= 0) return out;
  for (const [k, v] of Object.entries(cur.node.counters)) {
    const before = prev.node.counters[k];
    if (before !== undefined) out[k] = Number(BigInt(v) - BigInt(before)) / dt;
  }
  return out;
}

const SHOWN = [
  "admitted",
  "admitClamped",
  "admitClassified",
  "tagged",
  "staged",
  "restoredTag",
  "restoredStage",
  "restoredElsewhere",
  "restoredTstamp",
  "stageMiss",
  "stageExpired",
  "tagClamped",
  "tstampFailed",
  "admitNoPod",
];

function table(rows: string[][], style: Style, rightFrom = 1): string[] {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r, n) => {
    const line = r.map((c, i) => (i >= rightFrom ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join("  ");
    return n === 0 ? paint(line, "1", style) : line;
  });
}

export function renderStatus(r: StatusReport, style: Style): string {
  const lines = [`tsnproxy status: pins ${r.bpffs}, ${r.generatedAt}`];
  if (!r.installed || !r.node) {
    lines.push(`not installed: ${r.error ?? "no datapath pinned"}`);
    return lines.join("\n");
  }
  const n = r.node;
  const rows = [["counter", "total", ...(r.rates ? ["per s"] : [])]];
  for (const k of SHOWN) {
    if (n.counters[k] === undefined) continue;
    rows.push([k, n.counters[k], ...(r.rates ? [(r.rates[k] ?? 0).toFixed(1)] : [])]);
  }
  lines.push("", paint("NODE", "1", style), ...table(rows, style).map((l) => `  ${l}`));
  lines.push(
    `  carrier: ${n.carrier} (${n.carrierReason}); stage age ${n.stageMaxAgeMs} ms; node ` +
      `policy ${JSON.stringify(n.policy)}`,
    `  programs: ${Object.entries(n.programs).map(([k, v]) => `${k} ${v}`).join(", ")}`,
  );
  if (n.legacyPods) {
    lines.push(`  ${n.legacyPods} pod(s) still on release 0.1.0's saver (retired at their DEL)`);
  }
  lines.push("", paint("TSN INTERFACES", "1", style));
  if (!r.interfaces?.length) lines.push("  none configured or pinned");
  for (const i of r.interfaces ?? []) {
    const where = i.ifindex === null ? "missing" : `ifindex ${i.ifindex}`;
    const restorer = i.restorer
      ? `restorer attached (${i.restorer.api}, ${i.restorer.release ?? "release unknown"})`
      : "NO restorer";
    lines.push(`  ${i.name}: ${where}, ${restorer}${i.configured ? "" : " (not in the config)"}`);
  }
  lines.push("", paint("PODS", "1", style));
  if (!r.pods?.length) {
    lines.push("  no pod attached");
  } else {
    const prow = [[
      "container",
      "if",
      "host",
      "carrier",
      "admitted",
      "clamped",
      "restored",
    ]];
    for (const p of r.pods) {
      prow.push([
        p.containerId ? p.containerId.slice(0, 16) : `(cookie ${p.cookie})`,
        p.ifname ?? "-",
        p.host ?? "(gone)",
        p.carrier,
        p.admitted,
        p.clamped,
        p.restored,
      ]);
    }
    lines.push(...table(prow, style, 4).map((l) => `  ${l}`));
    for (const p of r.pods) {
      lines.push(
        `  ${p.containerId?.slice(0, 16) ?? p.cookie} ${p.ifname ?? ""}: ${p.carrier} because ` +
          `${p.carrierReason}; policy ${JSON.stringify(p.policy)}; saver ${p.saver ?? "-"}, ` +
          `admit ${p.admit ?? "-"}`,
      );
    }
  }
  return lines.join("\n");
}

export interface StatusRunHooks {
  /** Stop after this many samples (tests); default: forever with --watch, else 1. */
  samples?: number;
  write?: (text: string) => void;
}

export async function runStatus(opts: StatusOptions, hooks: StatusRunHooks = {}): Promise<number> {
  const cfg = await loadNodeConfigFor(opts);
  const bpffs = cfg.bpffs;
  const tsn = cfg.tsnInterfaces.map((i) => i.name);
  const style = detectStyle();
  const tty = Deno.stdout.isTerminal();
  const write = hooks.write ?? ((t: string) => console.log(t));
  const watch = opts.watch; // the CLI takes 0.1..86400 seconds
  const samples = hooks.samples ?? (watch ? Infinity : 1);
  let prev: StatusReport | undefined;
  let last: StatusReport | undefined;
  for (let i = 0; i < samples; i++) {
    if (i > 0 && watch) await new Promise((r) => setTimeout(r, watch * 1000));
    const cur = collectStatus(bpffs, tsn);
    if (prev) cur.rates = ratesBetween(prev, cur);
    if (opts.json) write(JSON.stringify(cur, null, watch ? undefined : 2));
    else {
      const text = renderStatus(cur, style);
      write(watch && tty ? `\x1b[2J\x1b[H${text}` : i > 0 ? `\n${text}` : text);
    }
    prev = cur;
    last = cur;
  }
  return last?.installed ? ExitCode.Ok : ExitCode.Failure;
}
