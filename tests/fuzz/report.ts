/**
 * How a failing case is told and saved: the seed and case index, the exact environment and
 * stdin, and the one command that replays it (against a fresh fixture).
 */
import { encodeBase64 } from "../../scripts/lib/base64.ts";
import type { Case } from "./generate.ts";
import type { Failure } from "./runner.ts";

/** A failing case as saved under .cache/fuzz/ (replay: tests/fuzz/run.ts --replay=FILE). */
export interface SavedCase {
  case: Omit<Case, "main" | "valid">;
  /** The fixture's names the case contains (replaced by the replaying fixture's). */
  names: Record<string, string>;
  problems: string[];
  main: { env: Record<string, string>; stdinBase64: string };
  valid: { env: Record<string, string>; stdinBase64: string };
}

export const base64Encode = encodeBase64;

export function base64Decode(s: string): Uint8Array {
  return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
}

/** A shell word for a value (single quotes, as `env -i` takes it). */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./:=@%+,-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

function clip(s: string, n: number): string {
  return s.length > n ? `${s.slice(0, n)}... (${s.length} chars in all)` : s;
}

export function replayCommand(seed: number, index: number, via?: string): string {
  return `deno run -A tests/fuzz/run.ts --seed=${seed} --case=${index}` +
    (via ? ` --via=${via}` : "");
}

export function describeFailure(f: Failure, c: Case): string {
  const env = Object.entries(f.env).map(([k, v]) => `${k}=${shellQuote(clip(v, 300))}`).join(" ");
  return [
    `FUZZ FAIL seed=${f.seed} case=${f.index} via=${f.via} ${c.kind} ${c.verb} on ${c.target} ` +
    `(${c.runtime}, ${c.network})`,
    `  mutations: ${f.mutations.length ? f.mutations.join("; ") : "(none)"}`,
    ...f.problems.map((p) => `  problem: ${clip(p, 2000)}`),
    `  env: ${env}`,
    `  stdin (${f.stdin.length} chars): ${clip(JSON.stringify(f.stdin), 3000)}`,
    `  replay: ${replayCommand(f.seed, f.index, f.via)}`,
    ...(f.saved ? [`  saved: ${f.saved} (deno run -A tests/fuzz/run.ts --replay=${f.saved})`] : []),
  ].join("\n");
}
