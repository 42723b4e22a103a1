/**
 * Human output for doctor and status: aligned columns, wrapped to the terminal, color only
 * when writing to a terminal and NO_COLOR is unset (https://no-color.org).
 */
import type { CheckStatus, DoctorReport } from "./schema.ts";

export interface Style {
  color: boolean;
  width: number;
}

export function detectStyle(): Style {
  const tty = Deno.stdout.isTerminal();
  const noColor = Deno.noColor || (Deno.env.get("NO_COLOR") ?? "") !== "";
  let width = 100;
  if (tty) {
    try {
      width = Math.max(60, Deno.consoleSize().columns);
    } catch {
      // keep 100
    }
  }
  return { color: tty && !noColor, width };
}

const CODES: Record<CheckStatus, string> = {
  pass: "32",
  info: "36",
  warn: "33",
  fail: "1;31",
  skip: "2",
};

export function paint(s: string, code: string, style: Style): string {
  return style.color ? `\x1b[${code}m${s}\x1b[0m` : s;
}

const LABEL: Record<CheckStatus, string> = {
  pass: "ok",
  info: "info",
  warn: "WARN",
  fail: "FAIL",
  skip: "skip",
};

/** Greedy word wrap; long words are not split. */
export function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line && line.length + 1 + word.length > width) {
      out.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  if (line) out.push(line);
  return out.length ? out : [""];
}

export function renderDoctor(r: DoctorReport, style: Style): string {
  const lines: string[] = [];
  lines.push(
    `tsnproxy doctor: tsnproxy ${r.tool.version} (bpf ${
      r.tool.bpfObjectsSha256.slice(0, 12)
    }), kernel ${r.host.kernel}, host ${r.host.hostname}`,
  );
  lines.push(
    `  config ${r.location.config}, pins ${r.location.bpffs}, CNI ${r.location.cniConfDir} + ` +
      `${r.location.cniBinDir}, TSN interface${r.location.tsnInterfaces.length > 1 ? "s" : ""} ${
        r.location.tsnInterfaces.join(", ") || "(none)"
      }`,
  );
  // With several TSN interfaces, a check about one of them names it after its id.
  const several = r.location.tsnInterfaces.length > 1;
  const idOf = (c: DoctorReport["checks"][0]) =>
    several && typeof c.data?.interface === "string" ? `${c.id} ${c.data.interface}` : c.id;
  const idWidth = Math.max(...r.checks.map((c) => idOf(c).length), 5);
  const statusWidth = 4;
  const textCol = statusWidth + 2 + idWidth + 2;
  const textWidth = Math.max(30, style.width - textCol);
  const pad = " ".repeat(textCol);
  let group = "";
  for (const c of r.checks) {
    if (c.group !== group) {
      group = c.group;
      lines.push("", paint(group.toUpperCase(), "1", style));
    }
    const found = wrap(c.found, textWidth);
    const label = paint(LABEL[c.status].padEnd(statusWidth), CODES[c.status], style);
    lines.push(`${label}  ${idOf(c).padEnd(idWidth)}  ${found[0]}`);
    for (const l of found.slice(1)) lines.push(pad + l);
    if (c.fix && (c.status === "warn" || c.status === "fail" || c.status === "info")) {
      const fix = wrap(`fix: ${c.fix}`, textWidth);
      for (const l of fix) lines.push(pad + paint(l, "1", style));
    }
  }
  const s = r.summary;
  const verdict = r.summary.fail > 0
    ? paint("failures", CODES.fail, style)
    : r.summary.warn > 0
    ? paint("warnings", CODES.warn, style)
    : paint("all checks passed", CODES.pass, style);
  lines.push(
    "",
    `${verdict}: ${s.pass} ok, ${s.info} info, ${s.warn} warn, ${s.fail} fail, ${s.skip} skipped`,
  );
  return lines.join("\n");
}
