/**
 * Helpers that turn zod issues on a YAML document into `file:line:col: path: problem` lines:
 * locating a path in the YAML node tree, listing the keys a schema accepts at a path, and
 * suggesting the closest valid key for a typo.
 */
import { isMap, isPair, isScalar, isSeq, type LineCounter, type Node as YamlNode } from "yaml";
import type { z } from "zod";

export type IssuePath = readonly PropertyKey[];

/** `gc.maxAgeMs`, `qdisc.entries[0].gateMask`. */
export function formatPath(path: IssuePath): string {
  let out = "";
  for (const seg of path) {
    if (typeof seg === "number") out += `[${seg}]`;
    else out += out === "" ? String(seg) : `.${String(seg)}`;
  }
  return out;
}

export interface Located {
  line: number;
  col: number;
  /** How far down `path` the YAML tree went (a missing key stops at its parent). */
  depth: number;
}

/**
 * Position of `path` in the document: the value node when it exists, else the deepest
 * existing ancestor. With `key`, the position of that key inside the map at `path`.
 */
export function locate(
  contents: unknown,
  lc: LineCounter,
  path: IssuePath,
  key?: string,
): Located {
  let node: unknown = contents;
  let depth = 0;
  let offset = rangeStart(node) ?? 0;
  for (const seg of path) {
    let next: unknown;
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && scalarKey(p.key) === String(seg));
      next = pair ? (pair.value ?? pair.key) : undefined;
    } else if (isSeq(node) && typeof seg === "number") {
      next = node.items[seg];
    }
    if (next === undefined) break;
    node = next;
    depth++;
    offset = rangeStart(node) ?? offset;
  }
  if (key !== undefined && isMap(node) && depth === path.length) {
    const pair = node.items.find((p) => isPair(p) && scalarKey(p.key) === key);
    if (pair) offset = rangeStart(pair.key) ?? offset;
  }
  const { line, col } = lc.linePos(offset);
  return { line, col, depth };
}

function scalarKey(k: unknown): string | undefined {
  return isScalar(k) ? String(k.value) : undefined;
}

function rangeStart(n: unknown): number | undefined {
  const r = (n as YamlNode | null)?.range;
  return Array.isArray(r) ? r[0] : undefined;
}

type AnySchema = z.core.$ZodType;

function unwrap(s: AnySchema): AnySchema {
  for (let k = 0; k < 20; k++) {
    const def = s._zod.def as unknown as Record<string, unknown> & { type: string };
    if (
      ["optional", "default", "prefault", "nullable", "readonly", "catch", "nonoptional"]
        .includes(def.type)
    ) {
      s = def.innerType as AnySchema;
    } else if (def.type === "pipe") {
      s = def.in as AnySchema;
    } else return s;
  }
  return s;
}

/** Schemas reachable at `path` (several under unions). */
function schemasAt(root: AnySchema, path: IssuePath): AnySchema[] {
  let cur = [root];
  for (const seg of path) {
    const next: AnySchema[] = [];
    for (const s0 of cur) {
      for (const s of expandUnions(unwrap(s0))) {
        const def = s._zod.def as unknown as Record<string, unknown> & { type: string };
        if (def.type === "object") {
          const shape = def.shape as Record<string, AnySchema>;
          if (typeof seg === "string" && shape[seg]) next.push(shape[seg]);
        } else if (def.type === "array") next.push(def.element as AnySchema);
        else if (def.type === "record") next.push(def.valueType as AnySchema);
      }
    }
    cur = next;
  }
  return cur.flatMap((s) => expandUnions(unwrap(s)));
}

function expandUnions(s: AnySchema): AnySchema[] {
  const def = s._zod.def as unknown as Record<string, unknown> & { type: string };
  if (def.type === "union") {
    return (def.options as AnySchema[]).flatMap((o) => expandUnions(unwrap(o)));
  }
  return [s];
}

/** Keys an object schema accepts at `path` (empty if it is not an object there). */
export function keysAt(root: AnySchema, path: IssuePath): string[] {
  const keys = new Set<string>();
  for (const s of schemasAt(root, path)) {
    const def = s._zod.def as unknown as Record<string, unknown> & { type: string };
    if (def.type === "object") { for (const k of Object.keys(def.shape as object)) keys.add(k); }
  }
  return [...keys];
}

function distance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0];
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = d[j];
      d[j] = Math.min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return d[b.length];
}

/** The valid key closest to `key` (case-insensitive edit distance), if reasonably close. */
export function closestKey(key: string, valid: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  const norm = (s: string) => s.toLowerCase().replace(/[-_]/g, "");
  for (const v of valid) {
    const d = norm(key) === norm(v) ? 0 : distance(key.toLowerCase(), v.toLowerCase());
    if (d < bestD) {
      best = v;
      bestD = d;
    }
  }
  const limit = Math.max(2, Math.floor(Math.max(key.length, best?.length ?? 0) / 3));
  return bestD <= limit ? best : undefined;
}

/** The message of a zod issue, unwrapping record-key issues to their own message. */
export function issueMessage(issue: z.core.$ZodIssue, missing: boolean): string {
  if (issue.code === "invalid_key" && issue.issues.length > 0) return issue.issues[0].message;
  if (missing && issue.code === "invalid_type") {
    return `required key is missing (${issue.expected})`;
  }
  return issue.message;
}
