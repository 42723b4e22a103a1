/**
 * `tsnproxy status`: the datapath's live counters, node-wide and per pod, once or every N
 * seconds (--watch; the screen is cleared between samples on a terminal). --json prints
 * statusReportSchema, one JSON document per sample (one per line with --watch). Exit 0, or 1
 * when the last sample found nothing installed.
 */
import { DatapathMaps } from "../bpf/maps.ts";
import { closeFd, mapInfo, objGet } from "../bpf/sys.ts";
import { PinLayout } from "../bpf/pins.ts";
import { listPodAttachments, podCookie } from "../bpf/pod.ts";
import { loadNodeConfigFor } from "../config/node.ts";
import { asTsnproxyError } from "../errors.ts";
import { COUNTERS } from "../ffi/structs/datapath.ts";
import { ExitCode } from "../exit_codes.ts";
import type { StatusOptions } from "../options.ts";
import { detectStyle, paint, type Style } from "./render.ts";
import { STATUS_SCHEMA_VERSION, type StatusReport, statusReportSchema } from "./schema.ts";

export { statusReportSchema } from "./schema.ts";

/**
 * The pin root status looks at: --bpffs when given, else the node config's (whose errors are
 * reported: a broken config must not make status look at some other pin root).
 */
export async function resolveBpffs(opts: StatusOptions): Promise<string> {
  return (await loadNodeConfigFor(opts)).bpffs;
}

/** cookie -> attachment name, for the names the pins carry (<container id>_<ifname>). */
function attachmentNames(bpffs: string): Map<bigint, string> {
  const out = new Map<bigint, string>();
  for (const { name } of listPodAttachments(bpffs)) {
    for (let i = name.indexOf("_"); i > 0; i = name.indexOf("_", i + 1)) {
      out.set(podCookie(name.slice(0, i)), name);
    }
  }
  return out;
}

function metaMaxEntries(bpffs: string): number {
  const fd = objGet(new PinLayout(bpffs).map("tsnp_meta"));
  if (fd === undefined) return 0;
  try {
    return mapInfo(fd).maxEntries;
  } finally {
    closeFd(fd);
  }
}

export function collectStatus(bpffs: string): StatusReport {
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
    const policies = maps.policies();
    const names = attachmentNames(bpffs);
    const addrs = new Map<bigint, string[]>();
    for (const p of policies) {
      addrs.set(p.policy.podCookie, [...(addrs.get(p.policy.podCookie) ?? []), p.ip]);
    }
    const pods = maps.podCounters().map((c) => ({
      cookie: c.podCookie.toString(16).padStart(16, "0"),
      attachment: names.get(c.podCookie) ?? null,
      addresses: addrs.get(c.podCookie) ?? [],
      saved: c.saved.toString(),
      clamped: c.clamped.toString(),
      restored: c.restored.toString(),
    })).sort((a, b) => (a.attachment ?? "~").localeCompare(b.attachment ?? "~"));
    const report: StatusReport = {
      ...base,
      installed: true,
      node: {
        counters: Object.fromEntries(COUNTERS.map((k) => [k, counters[k].toString()])),
        metaEntries: maps.metaOccupancy(),
        metaMaxEntries: metaMaxEntries(bpffs),
        policies: policies.length,
        gcIntervalMs: Number(cfg.gcIntervalNs) / 1e6,
        maxAgeMs: Number(cfg.maxAgeNs) / 1e6,
      },
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
  "saved",
  "savedTable",
  "restored",
  "expired",
  "notFound",
  "saveClamped",
  "saveFailed",
  "restoredTstamp",
  "tstampFailed",
  "gcExpired",
  "gcRuns",
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
  const pct = n.metaMaxEntries ? ((100 * n.metaEntries) / n.metaMaxEntries).toFixed(1) : "?";
  lines.push(
    `  fingerprint table ${n.metaEntries}/${n.metaMaxEntries} (${pct}%), ${n.policies} pod ` +
      `policies, gc every ${n.gcIntervalMs} ms (max age ${n.maxAgeMs} ms)`,
  );
  lines.push("", paint("PODS", "1", style));
  if (!r.pods?.length) {
    lines.push("  no per-pod counters (no pod has sent since its ADD)");
  } else {
    const prow = [["pod attachment", "cookie", "addresses", "saved", "clamped", "restored"]];
    for (const p of r.pods) {
      prow.push([
        p.attachment ?? "(no pin)",
        p.cookie,
        p.addresses.join(",") || "-",
        p.saved,
        p.clamped,
        p.restored,
      ]);
    }
    lines.push(...table(prow, style, 3).map((l) => `  ${l}`));
  }
  return lines.join("\n");
}

export interface StatusRunHooks {
  /** Stop after this many samples (tests); default: forever with --watch, else 1. */
  samples?: number;
  write?: (text: string) => void;
}

export async function runStatus(opts: StatusOptions, hooks: StatusRunHooks = {}): Promise<number> {
  const bpffs = await resolveBpffs(opts);
  const style = detectStyle();
  const tty = Deno.stdout.isTerminal();
  const write = hooks.write ?? ((t: string) => console.log(t));
  const watch = opts.watch; // the CLI takes 0.1..86400 seconds
  const samples = hooks.samples ?? (watch ? Infinity : 1);
  let prev: StatusReport | undefined;
  let last: StatusReport | undefined;
  for (let i = 0; i < samples; i++) {
    if (i > 0 && watch) await new Promise((r) => setTimeout(r, watch * 1000));
    const cur = collectStatus(bpffs);
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
