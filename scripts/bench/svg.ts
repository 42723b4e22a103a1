/**
 * A dependency-free SVG chart of the benchmark report: small bar-chart panels in a grid.
 * Every panel shows figures measured side by side in one run.
 */
export interface Bar {
  label: string;
  value: number;
  /** Text above the bar (defaults to the value). */
  text?: string;
  color?: string;
}

export interface Group {
  label: string;
  bars: Bar[];
}

export interface Panel {
  title: string;
  unit: string;
  groups: Group[];
  /** Horizontal reference lines (goals). */
  lines?: Array<{ value: number; label: string }>;
  /** Fixed axis maximum (default: the largest value, with headroom). */
  max?: number;
  /** Lower end of the axis (for ratio and percentage panels). */
  min?: number;
}

export const COLORS = {
  tsnproxy: "#1f77b4",
  go: "#7f7f7f",
  research: "#d62728",
  without: "#aec7e8",
} as const;

const esc = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

function panel(p: Panel, x0: number, y0: number, w: number, h: number): string {
  const top = y0 + 34;
  const bottom = y0 + h - 40;
  const left = x0 + 46;
  const right = x0 + w - 12;
  const values = p.groups.flatMap((g) => g.bars.map((b) => b.value)).filter(Number.isFinite);
  const lo = p.min ?? 0;
  const hi = p.max ?? Math.max(...values, ...(p.lines ?? []).map((l) => l.value), lo + 1e-9) * 1.15;
  const y = (v: number) =>
    bottom - ((Math.min(Math.max(v, lo), hi) - lo) / (hi - lo)) * (bottom - top);
  const out: string[] = [];
  out.push(`<text x="${x0 + w / 2}" y="${y0 + 18}" class="t">${esc(p.title)}</text>`);
  out.push(`<line x1="${left}" y1="${bottom}" x2="${right}" y2="${bottom}" class="ax"/>`);
  out.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${bottom}" class="ax"/>`);
  for (let i = 0; i <= 4; i++) {
    const v = lo + ((hi - lo) * i) / 4;
    const yy = y(v);
    out.push(`<text x="${left - 4}" y="${yy + 4}" class="tick">${esc(tick(v))}</text>`);
    if (i) out.push(`<line x1="${left}" y1="${yy}" x2="${right}" y2="${yy}" class="grid"/>`);
  }
  out.push(
    `<text x="${x0 + 12}" y="${(top + bottom) / 2}" class="unit" transform="rotate(-90 ${x0 + 12} ${
      (top + bottom) / 2
    })">${esc(p.unit)}</text>`,
  );
  const gw = (right - left) / p.groups.length;
  p.groups.forEach((g, gi) => {
    const gx = left + gi * gw;
    const n = g.bars.length;
    const bw = Math.min(44, (gw - 16) / n);
    const start = gx + (gw - bw * n) / 2;
    g.bars.forEach((b, bi) => {
      const bx = start + bi * bw;
      const by = Number.isFinite(b.value) ? y(b.value) : bottom;
      out.push(
        `<rect x="${bx + 2}" y="${by}" width="${bw - 4}" height="${
          Math.max(0, bottom - by)
        }" fill="${b.color ?? COLORS.tsnproxy}"><title>${
          esc(`${g.label} ${b.label}: ${b.text ?? tick(b.value)}`)
        }</title></rect>`,
      );
      out.push(
        `<text x="${bx + bw / 2}" y="${by - 3}" class="val">${esc(b.text ?? tick(b.value))}</text>`,
      );
      if (n > 1 || !g.label) {
        out.push(`<text x="${bx + bw / 2}" y="${bottom + 12}" class="bl">${esc(b.label)}</text>`);
      }
    });
    if (g.label) {
      out.push(
        `<text x="${gx + gw / 2}" y="${bottom + (n > 1 ? 26 : 14)}" class="gl">${
          esc(g.label)
        }</text>`,
      );
    }
  });
  for (const l of p.lines ?? []) {
    const yy = y(l.value);
    out.push(`<line x1="${left}" y1="${yy}" x2="${right}" y2="${yy}" class="goal"/>`);
    out.push(`<text x="${right}" y="${yy - 3}" class="gtxt">${esc(l.label)}</text>`);
  }
  return out.join("\n");
}

function tick(v: number): string {
  if (!Number.isFinite(v)) return "n/a";
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

/** Renders panels in a grid of `cols` columns. */
export function renderSvg(title: string, subtitle: string, panels: Panel[], cols = 2): string {
  const pw = 440;
  const ph = 260;
  const rows = Math.ceil(panels.length / cols);
  const W = pw * cols;
  const H = ph * rows + 46;
  const body = panels.map((p, i) =>
    panel(p, (i % cols) * pw, 46 + Math.floor(i / cols) * ph, pw, ph)
  );
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif">`,
    "<style>",
    ".t{font-size:13px;font-weight:bold;text-anchor:middle}",
    ".tick{font-size:10px;text-anchor:end;fill:#444}.unit{font-size:10px;text-anchor:middle;fill:#444}",
    ".val{font-size:10px;text-anchor:middle}.bl{font-size:9px;text-anchor:middle;fill:#333}",
    ".gl{font-size:10px;text-anchor:middle;font-weight:bold}",
    ".ax{stroke:#333}.grid{stroke:#ddd}.goal{stroke:#2ca02c;stroke-dasharray:4 3}",
    ".gtxt{font-size:9px;text-anchor:end;fill:#2ca02c}",
    ".h{font-size:15px;font-weight:bold}.s{font-size:10px;fill:#555}",
    "</style>",
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="12" y="20" class="h">${esc(title)}</text>`,
    `<text x="12" y="36" class="s">${esc(subtitle)}</text>`,
    ...body,
    "</svg>",
    "",
  ].join("\n");
}
