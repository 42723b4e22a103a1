/**
 * Shared helpers for the benchmarks: a cleanup stack that runs on success, failure and
 * Ctrl-C; statistics; plain-text tables; interface counters. Commands run through
 * tests/lib/run.ts.
 */
import { run } from "../../tests/lib/run.ts";

type CleanupFn = () => unknown;
const cleanups: Array<{ what: string; fn: CleanupFn }> = [];

/** Registers an undo step; returns a function that runs it now (and only once). */
export function onCleanup(what: string, fn: CleanupFn): () => Promise<void> {
  const entry = { what, fn };
  cleanups.push(entry);
  return async () => {
    const i = cleanups.indexOf(entry);
    if (i < 0) return;
    cleanups.splice(i, 1);
    await fn();
  };
}

/** Runs every registered undo step, newest first; failures are reported, not thrown. */
export async function runCleanups(): Promise<void> {
  while (cleanups.length) {
    const { what, fn } = cleanups.pop()!;
    try {
      await fn();
    } catch (e) {
      console.error(`bench: cleanup "${what}" failed: ${(e as Error).message}`);
    }
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

export interface Summary {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  mean: number;
  min: number;
  max: number;
}

export function summarize(values: readonly number[]): Summary {
  const s = [...values].sort((a, b) => a - b);
  const mean = s.reduce((a, b) => a + b, 0) / (s.length || 1);
  return {
    n: s.length,
    p50: percentile(s, 50),
    p90: percentile(s, 90),
    p99: percentile(s, 99),
    mean,
    min: s[0] ?? NaN,
    max: s[s.length - 1] ?? NaN,
  };
}

export function median(values: readonly number[]): number {
  return percentile([...values].sort((a, b) => a - b), 50);
}

/** Rounds for reports: 3 significant digits, at most `maxDecimals` decimals. */
export function round(x: number, maxDecimals = 3): number {
  if (!Number.isFinite(x)) return x;
  const digits = Math.max(0, Math.min(maxDecimals, 2 - Math.floor(Math.log10(Math.abs(x) || 1))));
  return Number(x.toFixed(digits));
}

/** A fixed-width table; numbers are right-aligned. */
export function table(
  title: string,
  header: string[],
  rows: Array<Array<string | number>>,
): string {
  const cells = [header, ...rows.map((r) => r.map((c) => typeof c === "number" ? fmt(c) : c))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) =>
    r.map((
      c,
      i,
    ) => (rows.length && typeof rows[0][i] === "number"
      ? c.padStart(widths[i])
      : c.padEnd(widths[i]))
    )
      .join("  ");
  return [
    `\n== ${title}`,
    line(cells[0]),
    widths.map((w) => "-".repeat(w)).join("  "),
    ...cells.slice(1).map(line),
  ].join("\n");
}

export function fmt(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  if (Number.isInteger(x)) return String(x);
  return String(round(x));
}

/** Interface counters inside a namespace (from `ip -s -j link`). */
export async function linkStats(
  netns: string,
  ifname: string,
): Promise<
  { rxPackets: number; rxBytes: number; txPackets: number; txBytes: number; rxDropped: number }
> {
  const o = await run(["ip", "-n", netns, "-s", "-j", "link", "show", "dev", ifname]);
  const j = JSON.parse(o.stdout) as Array<{
    stats64: {
      rx: { packets: number; bytes: number; dropped: number };
      tx: { packets: number; bytes: number };
    };
  }>;
  const s = j[0].stats64;
  return {
    rxPackets: s.rx.packets,
    rxBytes: s.rx.bytes,
    txPackets: s.tx.packets,
    txBytes: s.tx.bytes,
    rxDropped: s.rx.dropped,
  };
}

export const FLOOD = new URL("./flood.py", import.meta.url).pathname;
