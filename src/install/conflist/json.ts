/**
 * A strict JSON parser that keeps source spans, for editing CNI configs as text.
 *
 * Go's encoding/json rules (what libcni reads with): no comments, no trailing commas, no BOM,
 * no leading zeros, control characters escaped. JSON.parse loses positions and reorders
 * integer-like keys; the splicer (edit.ts) needs neither to happen. jsonc-parser (VS Code's)
 * was tried in its place: it accepts comments and trailing commas by design, reports `01` as
 * "comma expected", and its `modify()` re-formats the edited range (a one-line conflist comes
 * back as 22 lines), so it cannot give byte-identical round trips.
 */

export type JsonNode = JsonObject | JsonArray | JsonScalar;
interface Span {
  start: number;
  end: number;
}
export interface JsonObject extends Span {
  kind: "object";
  members: { key: string; keyStart: number; value: JsonNode }[];
}
export interface JsonArray extends Span {
  kind: "array";
  items: JsonNode[];
}
export interface JsonScalar extends Span {
  kind: "string" | "number" | "literal";
  value: string | number | boolean | null;
}
export type JsonValue = string | number | boolean | null | JsonValue[] | {
  [k: string]: JsonValue;
};

export class JsonSyntaxError extends Error {
  override name = "JsonSyntaxError";
  constructor(
    readonly reason: string,
    readonly offset: number,
    readonly line: number,
    readonly column: number,
  ) {
    super(`${line}:${column}: ${reason}`);
  }
}

/** 1-based line and column (in UTF-16 code units, as editors count) of `offset`. */
export function lineCol(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, column: offset - lineStart + 1 };
}

export function parseJsonWithSpans(text: string): JsonNode {
  let i = 0;
  const fail = (reason: string, at = i): never => {
    const { line, column } = lineCol(text, at);
    throw new JsonSyntaxError(reason, at, line, column);
  };
  const describe = (at: number) =>
    at >= text.length ? "end of input" : `character ${JSON.stringify(text[at])}`;
  const ws = () => {
    while (i < text.length) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) i++;
      else break;
    }
  };
  const str = (): JsonScalar => {
    const start = i++;
    let out = "";
    for (;;) {
      if (i >= text.length) fail("unterminated string", start);
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return { kind: "string", start, end: i, value: out };
      }
      if (c < 0x20) fail("control character in string (escape it)");
      if (c === 0x5c) {
        const e = text[i + 1];
        const map: Record<string, string> = {
          '"': '"',
          "\\": "\\",
          "/": "/",
          b: "\b",
          f: "\f",
          n: "\n",
          r: "\r",
          t: "\t",
        };
        if (e !== undefined && e in map) {
          out += map[e];
          i += 2;
        } else if (e === "u" && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) {
          out += String.fromCharCode(parseInt(text.slice(i + 2, i + 6), 16));
          i += 6;
        } else fail("invalid escape sequence");
      } else {
        out += text[i++];
      }
    }
  };
  const num = (): JsonScalar => {
    const m = /^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/.exec(text.slice(i, i + 400));
    if (!m) return fail(`unexpected ${describe(i)}`);
    const start = i;
    i += m[0].length;
    if (i < text.length && /[0-9.eE+-]/.test(text[i])) fail("invalid number");
    return { kind: "number", start, end: i, value: Number(m[0]) };
  };
  const value = (depth: number): JsonNode => {
    if (depth > 512) fail("nesting too deep");
    ws();
    const c = text[i];
    if (c === "{") {
      const start = i++;
      const members: JsonObject["members"] = [];
      ws();
      if (text[i] === "}") return { kind: "object", start, end: ++i, members };
      for (;;) {
        ws();
        if (text[i] !== '"') fail(`expected a string key, found ${describe(i)}`);
        const keyStart = i;
        const key = str().value as string;
        ws();
        if (text[i] !== ":") {
          fail(`expected ':' after key ${JSON.stringify(key)}, found ${describe(i)}`);
        }
        i++;
        members.push({ key, keyStart, value: value(depth + 1) });
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "}") return { kind: "object", start, end: ++i, members };
        fail(`expected ',' or '}' in object, found ${describe(i)}`);
      }
    }
    if (c === "[") {
      const start = i++;
      const items: JsonNode[] = [];
      ws();
      if (text[i] === "]") return { kind: "array", start, end: ++i, items };
      for (;;) {
        items.push(value(depth + 1));
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "]") return { kind: "array", start, end: ++i, items };
        fail(`expected ',' or ']' in array, found ${describe(i)}`);
      }
    }
    if (c === '"') return str();
    for (const [lit, v] of [["true", true], ["false", false], ["null", null]] as const) {
      if (text.startsWith(lit, i)) {
        const start = i;
        i += lit.length;
        return { kind: "literal", start, end: i, value: v };
      }
    }
    if (c === "-" || (c !== undefined && c >= "0" && c <= "9")) return num();
    if (text.charCodeAt(i) === 0xfeff) fail("byte order mark (BOM) is not allowed");
    return fail(`unexpected ${describe(i)}`);
  };
  const root = value(0);
  ws();
  if (i < text.length) fail(`unexpected ${describe(i)} after the JSON value`);
  return root;
}

/** Plain JS value of a node; duplicate keys resolve to the last one (as Go does). */
export function toValue(n: JsonNode): JsonValue {
  if (n.kind === "object") {
    const o: { [k: string]: JsonValue } = {};
    for (const m of n.members) o[m.key] = toValue(m.value);
    return o;
  }
  if (n.kind === "array") return n.items.map(toValue);
  return n.value;
}

/** The last member named `key` (Go keeps the last duplicate). */
export function member(o: JsonObject, key: string): JsonNode | undefined {
  for (let k = o.members.length - 1; k >= 0; k--) {
    if (o.members[k].key === key) return o.members[k].value;
  }
  return undefined;
}

/** Structural equality of plain JSON values (key order ignored). */
export function deepEqual(a: JsonValue, b: JsonValue): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((x, k) => deepEqual(x, b[k]));
  }
  const ao = a as { [k: string]: JsonValue };
  const bo = b as { [k: string]: JsonValue };
  const ak = Object.keys(ao);
  if (ak.length !== Object.keys(bo).length) return false;
  return ak.every((k) => Object.hasOwn(bo, k) && deepEqual(ao[k], bo[k]));
}
