/**
 * The CNI network configuration tsnproxy chains itself into.
 *
 * What the proof of concept did, and this module does not: rewrite whichever file sorted
 * first with jq (re-serialising it), no way back. Here:
 *
 * - `discover()` finds the file the runtime really uses (libcni conventions: `*.conf`,
 *   `*.conflist`, `*.json` in lexical order, first valid one is the default network; with
 *   `network` the file whose "name" matches).
 * - `inject()` / `remove()` are *textual splices* on the original bytes: the tsnproxy entry
 *   is inserted after the last plugin of the chain (or replaced in place), and removal cuts
 *   exactly the bytes insertion added. Every other byte (key order, unknown fields, number
 *   spelling, formatting) is untouched, so inject → remove is byte-identical by construction.
 * - A single-plugin `.conf`/`.json` becomes a `.conflist` (`{cniVersion, name, plugins: [old,
 *   entry]}`); the original file is kept as `<name>.tsnproxy-orig` next to it (a name libcni
 *   never loads) and restored byte-identical by uninstall when nothing else changed the file.
 * - `planInstall()` / `planUninstall()` compute the file changes (for `--dry-run`: file,
 *   action, diff); `apply()` performs them with `writeFileAtomic`, refusing if a file changed
 *   since it was planned. Re-planning after apply yields no change.
 */
import { ConfigError, NotFoundError } from "../errors.ts";
import {
  JOURNAL_SUFFIX,
  recoverInterruptedWrites,
  removeFileDurable,
  writeFileAtomic,
} from "./atomic.ts";

export const PLUGIN_TYPE = "tsnproxy";
export const BACKUP_SUFFIX = ".tsnproxy-orig";
/** libcni's extensions; `.conf` and `.json` hold one plugin, `.conflist` a chain. */
export const CNI_EXTENSIONS = [".conf", ".conflist", ".json"] as const;

// ---------------------------------------------------------------------------------------
// A strict JSON parser that keeps source spans (Go's encoding/json rules: no comments, no
// trailing commas, no BOM, no leading zeros). JSON.parse loses positions and reorders
// integer-like keys; we need neither to happen.

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

function member(o: JsonObject, key: string): JsonNode | undefined {
  for (let k = o.members.length - 1; k >= 0; k--) {
    if (o.members[k].key === key) return o.members[k].value;
  }
  return undefined;
}

function deepEqual(a: JsonValue, b: JsonValue): boolean {
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

// ---------------------------------------------------------------------------------------
// CNI documents

export type CniFormat = "conflist" | "conf";

export interface CniDocument {
  path: string;
  text: string;
  /** "conf" for `.conf`/`.json` (one plugin), "conflist" for `.conflist`. */
  format: CniFormat;
  name: string;
  cniVersion?: string;
  root: JsonObject;
  /** The chain: for a conf, the single plugin is the root object itself. */
  plugins: { type: string; node: JsonObject }[];
}

/** The object `install` appends; must have `"type": "tsnproxy"`. */
export type TsnproxyEntry = { type: string } & { [k: string]: JsonValue };

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}
function dirName(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? "." : i === 0 ? "/" : path.slice(0, i);
}
function extOf(path: string): string {
  const b = baseName(path);
  const i = b.lastIndexOf(".");
  return i < 0 ? "" : b.slice(i);
}
function stem(path: string): string {
  return path.slice(0, path.length - extOf(path).length);
}

function invalid(path: string, text: string, at: number | undefined, problem: string): ConfigError {
  const pos = at === undefined ? "" : (() => {
    const { line, column } = lineCol(text, at);
    return `:${line}:${column}`;
  })();
  return new ConfigError(
    `${path}${pos}: ${problem}`,
    "fix the file (the container runtime cannot use it either) or move it out of the CNI " +
      "config directory under a name not ending in .conf/.conflist/.json",
  );
}

/** Parses and validates one CNI config file the way libcni loads it. */
export function parseCniDocument(path: string, text: string): CniDocument {
  let root: JsonNode;
  try {
    root = parseJsonWithSpans(text);
  } catch (e) {
    if (e instanceof JsonSyntaxError) {
      throw invalid(path, text, e.offset, `invalid JSON: ${e.reason}`);
    }
    throw e;
  }
  if (root.kind !== "object") throw invalid(path, text, root.start, "expected a JSON object");
  const format: CniFormat = extOf(path) === ".conflist" ? "conflist" : "conf";
  const strField = (o: JsonObject, key: string, required: boolean): string | undefined => {
    const v = member(o, key);
    if (v === undefined) {
      if (required) throw invalid(path, text, o.start, `missing "${key}"`);
      return undefined;
    }
    if (v.kind !== "string") throw invalid(path, text, v.start, `"${key}" must be a string`);
    return v.value as string;
  };
  const cniVersion = strField(root, "cniVersion", false);
  const plugins: CniDocument["plugins"] = [];
  let name: string;
  if (format === "conflist") {
    name = strField(root, "name", true) as string;
    const list = member(root, "plugins");
    if (list === undefined) throw invalid(path, text, root.start, `missing "plugins"`);
    if (list.kind !== "array") throw invalid(path, text, list.start, `"plugins" must be an array`);
    if (list.items.length === 0) throw invalid(path, text, list.start, `"plugins" is empty`);
    for (const p of list.items) {
      if (p.kind !== "object") throw invalid(path, text, p.start, "a plugin must be an object");
      const type = strField(p, "type", true) as string;
      if (type === "") throw invalid(path, text, p.start, `plugin "type" is empty`);
      plugins.push({ type, node: p });
    }
  } else {
    if (member(root, "plugins") !== undefined && member(root, "type") === undefined) {
      throw invalid(
        path,
        text,
        root.start,
        `holds a plugin list but is named ${extOf(path)}: libcni reads ${extOf(path)} as a ` +
          "single plugin; rename it to .conflist",
      );
    }
    name = strField(root, "name", false) ?? "";
    const type = strField(root, "type", true) as string;
    if (type === "") throw invalid(path, text, root.start, `"type" is empty`);
    plugins.push({ type, node: root });
  }
  return { path, text, format, name, cniVersion, root, plugins };
}

// ---------------------------------------------------------------------------------------
// Discovery

export interface DiscoverOptions {
  /** Select the network by its "name" instead of "first valid file". */
  network?: string;
}

export interface Discovered {
  doc: CniDocument;
  /** Candidate files that were not used, with the reason (for doctor / --dry-run output). */
  skipped: { path: string; reason: string }[];
}

/** The candidate file names in `confDir`, sorted the way libcni sorts them (byte order). */
export async function listCandidates(confDir: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(confDir)) {
      if (
        (e.isFile || e.isSymlink) && (CNI_EXTENSIONS as readonly string[]).includes(extOf(e.name))
      ) {
        names.push(e.name);
      }
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new NotFoundError(
        `CNI config directory ${confDir} does not exist`,
        "install the primary CNI (flannel, calico, ...) first, or pass --cni-conf-dir",
      );
    }
    throw e;
  }
  // Go's sort.Strings compares bytes; for the ASCII names CNI uses this equals < on UTF-16.
  return names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

async function readDoc(path: string): Promise<CniDocument> {
  let text: string;
  try {
    text = new TextDecoder().decode(await Deno.readFile(path));
  } catch (e) {
    throw new ConfigError(
      `cannot read ${path}: ${e instanceof Error ? e.message : String(e)}`,
      "check permissions; tsnproxy install runs as root",
    );
  }
  return parseCniDocument(path, text);
}

/**
 * The file the container runtime uses. Without `network`: the first candidate in lexical
 * order; a malformed file *before* it is an error, because runtimes disagree there
 * (containerd's go-cni refuses the whole directory, CRI-O's ocicni skips the file) and
 * tsnproxy must not guess which network pods get. With `network`: the single valid file
 * whose "name" matches; two matches are ambiguous (error), malformed files are skipped
 * unless nothing matches.
 */
export async function discover(confDir: string, opts: DiscoverOptions = {}): Promise<Discovered> {
  const names = await listCandidates(confDir);
  const hintNone = "install the primary CNI (flannel, calico, ...) first so that it writes its " +
    "config, or pass --cni-conf-dir";
  if (names.length === 0) {
    throw new NotFoundError(`no CNI config (*.conf, *.conflist, *.json) in ${confDir}`, hintNone);
  }
  const skipped: Discovered["skipped"] = [];
  if (opts.network === undefined) {
    for (const n of names) {
      const doc = await readDoc(`${confDir}/${n}`); // malformed → throws with file:line:col
      return { doc, skipped };
    }
  }
  const matches: CniDocument[] = [];
  const errors: ConfigError[] = [];
  const seen: string[] = [];
  for (const n of names) {
    const path = `${confDir}/${n}`;
    try {
      const doc = await readDoc(path);
      seen.push(`${n} (${JSON.stringify(doc.name)})`);
      if (doc.name === opts.network) matches.push(doc);
      else skipped.push({ path, reason: `network ${JSON.stringify(doc.name)}` });
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      errors.push(e);
      skipped.push({ path, reason: e.message });
    }
  }
  if (matches.length > 1) {
    throw new ConfigError(
      `network ${JSON.stringify(opts.network)} is defined by several files in ${confDir}: ` +
        matches.map((d) => baseName(d.path)).join(", "),
      "remove the stale duplicate (libcni would use the first one) and re-run",
    );
  }
  if (matches.length === 0) {
    if (errors.length > 0) {
      throw new ConfigError(
        `no valid CNI config named ${JSON.stringify(opts.network)} in ${confDir}; ` +
          `unreadable: ${errors[0].message}`,
        errors[0].hint,
      );
    }
    throw new NotFoundError(
      `no CNI config named ${JSON.stringify(opts.network)} in ${confDir} (found: ${
        seen.join(", ") || "none"
      })`,
      "pass the primary CNI's network name with --network (or cni.network in the node config)",
    );
  }
  return { doc: matches[0], skipped };
}

// ---------------------------------------------------------------------------------------
// Textual editing

function lineStartOf(text: string, offset: number): number {
  return text.lastIndexOf("\n", offset - 1) + 1;
}
function indentAt(text: string, offset: number): string {
  const ls = lineStartOf(text, offset);
  return /^[ \t]*/.exec(text.slice(ls, offset))?.[0] ?? "";
}
/** The file's indent unit: the first indented line's leading whitespace (default 2 spaces). */
function indentUnit(text: string): string {
  const m = /\n([ \t]+)\S/.exec(text);
  return m ? m[1] : "  ";
}
function reindent(block: string, indent: string): string {
  return block.split("\n").map((l, k) => (k === 0 || l === "" ? l : indent + l)).join("\n");
}
function renderEntry(entry: TsnproxyEntry, multiline: boolean, unit: string, indent: string) {
  return multiline ? reindent(JSON.stringify(entry, null, unit), indent) : JSON.stringify(entry);
}

function pluginsArray(doc: CniDocument): JsonArray {
  const list = member(doc.root, "plugins");
  if (list?.kind !== "array") throw new Error("unreachable: conflist without plugins array");
  return list;
}

function splice(text: string, start: number, end: number, insert: string): string {
  return text.slice(0, start) + insert + text.slice(end);
}

type Edit = [start: number, end: number, insert: string];

/**
 * Edits cutting the array items for which `drop` holds, exactly inverting an append: an item
 * after a kept one takes the separator before it; a leading run takes the one after it.
 */
function dropEdits(arr: JsonArray, drop: (n: JsonNode) => boolean): Edit[] {
  const items = arr.items;
  const firstKept = items.findIndex((n) => !drop(n));
  if (firstKept < 0) return items.length ? [[items[0].start, items[items.length - 1].end, ""]] : [];
  const out: Edit[] = [];
  if (firstKept > 0) out.push([items[0].start, items[firstKept].start, ""]);
  for (let k = firstKept + 1; k < items.length; k++) {
    if (drop(items[k])) out.push([items[k - 1].end, items[k].end, ""]);
  }
  return out;
}

function isOurs(n: JsonNode): boolean {
  if (n.kind !== "object") return false;
  const t = member(n, "type");
  return t?.kind === "string" && t.value === PLUGIN_TYPE;
}

/** Applies non-overlapping edits (offsets into the original text). */
function applyEdits(text: string, edits: Edit[]): string {
  let out = text;
  for (const [s, e, ins] of [...edits].sort((a, b) => b[0] - a[0])) out = splice(out, s, e, ins);
  return out;
}

function stripOurs(doc: CniDocument): string {
  return applyEdits(doc.text, dropEdits(pluginsArray(doc), isOurs));
}

function chainingVersionOk(v: string | undefined): boolean {
  if (v === undefined) return false;
  const m = /^(\d+)\.(\d+)\.(\d+)$/.exec(v);
  if (!m) return false;
  const [maj, min] = [Number(m[1]), Number(m[2])];
  return maj > 0 || min >= 3;
}

export type InjectStatus = "added" | "replaced" | "unchanged";
export interface InjectResult {
  status: InjectStatus;
  /** Where the result must be written (differs from doc.path when a .conf was converted). */
  path: string;
  text: string;
  /** Set when a single-plugin file was converted: the file to delete (and back up). */
  convertedFrom?: string;
  warnings: string[];
}

/**
 * `doc` with `entry` at the end of its chain (or replacing an existing tsnproxy entry in
 * place). Never re-serialises anything but the entry.
 */
export function inject(doc: CniDocument, entry: TsnproxyEntry): InjectResult {
  if (entry.type !== PLUGIN_TYPE) {
    throw new ConfigError(
      `the entry to inject has type ${JSON.stringify(entry.type)}`,
      `pass an entry with "type": "${PLUGIN_TYPE}"`,
    );
  }
  if (!chainingVersionOk(doc.cniVersion)) {
    throw new ConfigError(
      `${doc.path}: cniVersion ${JSON.stringify(doc.cniVersion ?? "(missing)")} does not support ` +
        "chained plugins (prevResult needs 0.3.0 or later)",
      "upgrade the primary CNI's config to cniVersion 0.3.1 or later",
    );
  }
  const warnings: string[] = [];
  const text = doc.text;
  const unit = indentUnit(text);
  if (doc.format === "conf") {
    if (doc.name === "") {
      throw new ConfigError(
        `${doc.path}: missing "name"`,
        "a network config needs a name to become a conflist; add one to the file",
      );
    }
    const inner = reindent(text.slice(doc.root.start, doc.root.end), unit + unit);
    const wrapper = `{\n${unit}"cniVersion": ${JSON.stringify(doc.cniVersion)},\n` +
      `${unit}"name": ${JSON.stringify(doc.name)},\n${unit}"plugins": [\n${unit}${unit}${inner}\n` +
      `${unit}]\n}\n`;
    const converted = parseCniDocument(`${stem(doc.path)}.conflist`, wrapper);
    const r = inject(converted, entry);
    return { ...r, status: "added", convertedFrom: doc.path };
  }
  const arr = pluginsArray(doc);
  const ours = arr.items.filter(isOurs) as JsonObject[];
  const multiline = text.slice(arr.start, arr.items[0].start).includes("\n");
  if (ours.length === 0) {
    const last = arr.items[arr.items.length - 1];
    const indent = indentAt(text, last.start);
    const rendered = renderEntry(entry, multiline, unit, indent);
    const insert = multiline ? `,\n${indent}${rendered}` : `, ${rendered}`;
    return {
      status: "added",
      path: doc.path,
      text: splice(text, last.end, last.end, insert),
      warnings,
    };
  }
  const first = ours[0];
  // Extra copies (an older installer, or a hand edit) go away; the first is updated in place.
  const edits = dropEdits(arr, (n) => isOurs(n) && n !== first);
  if (ours.length > 1) warnings.push(`removed ${ours.length - 1} duplicate tsnproxy entries`);
  if (arr.items.slice(arr.items.indexOf(first) + 1).some((n) => !isOurs(n))) {
    warnings.push(
      "the tsnproxy entry is not last in the chain: plugins after it run on a prevResult " +
        "tsnproxy has not seen; left where it is to avoid fighting another installer",
    );
  }
  if (!deepEqual(toValue(first), entry as JsonValue)) {
    const indent = indentAt(text, first.start);
    edits.push([first.start, first.end, renderEntry(entry, multiline, unit, indent)]);
  }
  const out = applyEdits(text, edits);
  return { status: out === text ? "unchanged" : "replaced", path: doc.path, text: out, warnings };
}

export interface Backup {
  /** Path of the original file (a `.conf` when install converted it). */
  originalPath: string;
  text: string;
}

export type RemoveStatus = "removed" | "restored" | "absent";
export interface RemoveResult {
  status: RemoveStatus;
  /** The file to write. */
  path: string;
  text: string;
  /** A file to delete afterwards (our .conflist when the original .conf is restored). */
  deletePath?: string;
}

/**
 * `doc` without tsnproxy. Removing cuts exactly the bytes `inject` inserted, so an untouched
 * file comes back byte-identical. With the `backup` of a converted `.conf`, the `.conf` is
 * restored when the conflist is exactly what install produced; if the primary CNI rewrote the
 * file since, only our entry is removed.
 */
export function remove(doc: CniDocument, backup?: Backup): RemoveResult {
  if (doc.format === "conf") {
    // A single-plugin file cannot hold a chained entry; nothing of ours here (a lone
    // "type": "tsnproxy" .conf would be a broken config we did not write).
    return { status: "absent", path: doc.path, text: doc.text };
  }
  const arr = pluginsArray(doc);
  const present = arr.items.some(isOurs);
  const stripped = stripOurs(doc);
  if (backup && backup.originalPath !== doc.path) {
    let wrapperOnly: string | undefined;
    try {
      const orig = parseCniDocument(backup.originalPath, backup.text);
      const probe: TsnproxyEntry = { type: PLUGIN_TYPE };
      const conv = inject(orig, probe);
      const convDoc = parseCniDocument(conv.path, conv.text);
      wrapperOnly = stripOurs(convDoc);
    } catch {
      wrapperOnly = undefined; // the backup itself is unusable: fall back to stripping
    }
    if (wrapperOnly === stripped) {
      return {
        status: "restored",
        path: backup.originalPath,
        text: backup.text,
        deletePath: doc.path,
      };
    }
  }
  if (!present) return { status: "absent", path: doc.path, text: doc.text };
  if (arr.items.every(isOurs)) {
    throw new ConfigError(
      `${doc.path}: the chain holds only tsnproxy entries; removing them leaves no network`,
      "restore the primary CNI's config (reinstall the primary CNI), then delete this file",
    );
  }
  return {
    status: backup && stripped === backup.text ? "restored" : "removed",
    path: doc.path,
    text: stripped,
  };
}

// ---------------------------------------------------------------------------------------
// Plan / apply

export type ChangeAction = "create" | "update" | "delete";
export interface FileChange {
  action: ChangeAction;
  path: string;
  /** "conflist": a file the runtime loads; "backup": tsnproxy's copy of the original. */
  role: "conflist" | "backup";
  /** Content expected on disk when applying (undefined = file must not exist). */
  before?: string;
  after?: string;
  why: string;
  diff: string;
}

export interface Plan {
  kind: "install" | "uninstall";
  confDir: string;
  /** The file discovery chose (before any conversion). */
  target: string;
  changes: FileChange[];
  warnings: string[];
  /** Human summary of the chain result, e.g. "added", "unchanged", "restored". */
  status: InjectStatus | RemoveStatus;
}

export interface PlanOptions extends DiscoverOptions {
  confDir: string;
  /**
   * Finish or discard interrupted writes (journals, stale temps; see atomic.ts) before
   * reading, so the plan starts from a settled state (default true). `--dry-run` passes
   * false to write nothing; the plan then warns about pending recoveries.
   */
  recover?: boolean;
}

async function settle(opts: PlanOptions, warnings: string[]): Promise<void> {
  if (opts.recover !== false) {
    await recoverInterruptedWrites(opts.confDir);
    return;
  }
  try {
    for await (const e of Deno.readDir(opts.confDir)) {
      if (e.name.endsWith(JOURNAL_SUFFIX)) {
        warnings.push(
          `an interrupted in-place write is pending (${e.name}); install/uninstall finishes it first`,
        );
      }
    }
  } catch { /* discover reports a missing dir */ }
}

function backupPathFor(originalPath: string): string {
  return `${originalPath}${BACKUP_SUFFIX}`;
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return new TextDecoder().decode(await Deno.readFile(path));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

/** Backup of the file at `path`: its own `<path>.tsnproxy-orig`, or a converted `.conf`'s. */
async function findBackup(path: string): Promise<Backup | undefined> {
  const candidates = [path];
  if (extOf(path) === ".conflist") candidates.push(`${stem(path)}.conf`, `${stem(path)}.json`);
  for (const orig of candidates) {
    const text = await readText(backupPathFor(orig));
    if (text !== undefined) return { originalPath: orig, text };
  }
  return undefined;
}

function change(
  action: ChangeAction,
  path: string,
  role: FileChange["role"],
  before: string | undefined,
  after: string | undefined,
  why: string,
): FileChange {
  return {
    action,
    path,
    role,
    before,
    after,
    why,
    diff: unifiedDiff(path, before ?? "", after ?? ""),
  };
}

/** What `tsnproxy install` would change in `confDir` to chain `entry`. */
export async function planInstall(opts: PlanOptions & { entry: TsnproxyEntry }): Promise<Plan> {
  const warnings: string[] = [];
  await settle(opts, warnings);
  const { doc, skipped } = await discover(opts.confDir, opts);
  warnings.push(
    ...skipped.filter((s) => !s.reason.startsWith("network ")).map((s) =>
      `skipped ${s.path}: ${s.reason}`
    ),
  );
  const r = inject(doc, opts.entry);
  warnings.push(...r.warnings);
  const changes: FileChange[] = [];
  const hadOurs = doc.plugins.some((p) => p.type === PLUGIN_TYPE);
  if (!hadOurs) {
    // Back up the pristine file first, so a crash after this step still has it.
    const bpath = backupPathFor(doc.path);
    const old = await readText(bpath);
    if (old !== doc.text) {
      changes.push(
        change(
          old === undefined ? "create" : "update",
          bpath,
          "backup",
          old,
          doc.text,
          "keep the original for uninstall",
        ),
      );
    }
  }
  if (r.convertedFrom !== undefined) {
    const existing = await readText(r.path);
    if (existing !== undefined) {
      let ours = false;
      try {
        ours = parseCniDocument(r.path, existing).plugins.some((p) => p.type === PLUGIN_TYPE);
      } catch { /* not ours if unparsable */ }
      if (!ours) {
        throw new ConfigError(
          `${doc.path} is a single-plugin config and must become ${r.path}, but that file ` +
            "already exists and is not tsnproxy's",
          "remove or rename the stale file, or select the network with --network",
        );
      }
    }
    if (opts.network === undefined) {
      const names = await listCandidates(opts.confDir);
      const a = baseName(doc.path);
      const b = baseName(r.path);
      const between = names.filter((n) => n > a && n < b);
      if (between.length > 0) {
        throw new ConfigError(
          `converting ${a} to ${b} would make ${between[0]} the first config file`,
          "select the network with --network, or rename the conflicting file",
        );
      }
    }
    changes.push(
      change(
        existing === undefined ? "create" : "update",
        r.path,
        "conflist",
        existing,
        r.text,
        `convert ${baseName(doc.path)} into a chain ending in tsnproxy`,
      ),
      change(
        "delete",
        doc.path,
        "conflist",
        doc.text,
        undefined,
        `replaced by ${baseName(r.path)} (original kept as backup)`,
      ),
    );
    warnings.push(
      `${baseName(r.path)} is a new file: runtimes that ignore new files in the CNI config dir ` +
        "(containerd 1.6) pick it up only after a restart",
    );
  } else if (r.status !== "unchanged") {
    changes.push(
      change(
        "update",
        doc.path,
        "conflist",
        doc.text,
        r.text,
        r.status === "added"
          ? "append tsnproxy to the end of the chain"
          : "update the tsnproxy entry",
      ),
    );
  }
  return {
    kind: "install",
    confDir: opts.confDir,
    target: doc.path,
    changes,
    warnings,
    status: changes.some((c) => c.role === "conflist") ? r.status : "unchanged",
  };
}

/** What `tsnproxy uninstall` would change in `confDir`. */
export async function planUninstall(opts: PlanOptions): Promise<Plan> {
  const warnings: string[] = [];
  await settle(opts, warnings);
  const { doc } = await discover(opts.confDir, opts);
  const backup = await findBackup(doc.path);
  const r = remove(doc, backup);
  const changes: FileChange[] = [];
  if (r.status === "restored" && r.path !== doc.path) {
    const existing = await readText(r.path);
    changes.push(
      change(
        existing === undefined ? "create" : "update",
        r.path,
        "conflist",
        existing,
        r.text,
        "restore the original single-plugin config",
      ),
    );
    if (r.deletePath) {
      changes.push(
        change(
          "delete",
          r.deletePath,
          "conflist",
          doc.text,
          undefined,
          "remove the conflist tsnproxy created",
        ),
      );
    }
  } else if (r.text !== doc.text) {
    changes.push(
      change(
        "update",
        doc.path,
        "conflist",
        doc.text,
        r.text,
        r.status === "restored"
          ? "restore the original chain"
          : "remove the tsnproxy entry (the file changed since install; other edits kept)",
      ),
    );
  }
  if (backup) {
    const bpath = backupPathFor(backup.originalPath);
    changes.push(
      change("delete", bpath, "backup", backup.text, undefined, "backup no longer needed"),
    );
  }
  if (doc.format === "conf") {
    // The primary CNI re-created its .conf (which sorts before our .conflist) after install:
    // our converted file is now dead weight next to it.
    const ours = `${stem(doc.path)}.conflist`;
    const text = await readText(ours);
    if (text !== undefined && backup) {
      try {
        if (parseCniDocument(ours, text).plugins.some((p) => p.type === PLUGIN_TYPE)) {
          changes.unshift(
            change(
              "delete",
              ours,
              "conflist",
              text,
              undefined,
              "remove the conflist tsnproxy created",
            ),
          );
        }
      } catch { /* not ours */ }
    }
  }
  if (r.status === "absent" && !backup) warnings.push(`${doc.path} has no tsnproxy entry`);
  return {
    kind: "uninstall",
    confDir: opts.confDir,
    target: doc.path,
    changes,
    warnings,
    status: r.status,
  };
}

export interface ApplyOptions {
  /** Update existing conflists in place (runtimes that ignore renames). */
  inPlace?: boolean;
}

/**
 * Performs `plan`'s changes in order. Each file must still hold what the plan saw; otherwise
 * nothing further is written and a ConfigError asks to re-run (the next plan starts from the
 * new state, so re-running converges).
 */
export async function apply(plan: Plan, opts: ApplyOptions = {}): Promise<void> {
  await recoverInterruptedWrites(plan.confDir);
  for (const c of plan.changes) {
    const cur = await readText(c.path);
    if (cur !== c.before) {
      throw new ConfigError(
        `${c.path} changed since the plan was made`,
        "another tool is editing the CNI config; re-run the command",
      );
    }
    if (c.action === "delete") {
      await removeFileDurable(c.path);
    } else {
      const inPlace = c.role === "conflist" && c.action === "update" && (opts.inPlace ?? false);
      await writeFileAtomic(c.path, c.after ?? "", {
        inPlace,
        mode: c.role === "backup" ? 0o600 : undefined,
      });
    }
  }
}

/** Text for `--dry-run`: one block per file change. */
export function formatPlan(plan: Plan): string {
  if (plan.changes.length === 0) return `${plan.target}: no change (${plan.status})\n`;
  const parts = plan.changes.map((c) => `# ${c.action} ${c.path}: ${c.why}\n${c.diff}`);
  return parts.join("\n") + plan.warnings.map((w) => `warning: ${w}\n`).join("");
}

// ---------------------------------------------------------------------------------------
// A small line diff (LCS; CNI configs are tens of lines).

export function unifiedDiff(path: string, a: string, b: string, context = 3): string {
  if (a === b) return "";
  const x = a === "" ? [] : a.replace(/\n$/, "").split("\n");
  const y = b === "" ? [] : b.replace(/\n$/, "").split("\n");
  const n = x.length;
  const m = y.length;
  const lcs: Uint32Array[] = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  // Each op remembers how many lines of a and b precede it (for hunk headers).
  type Op = { t: " " | "-" | "+"; s: string; ai: number; bi: number };
  const ops: Op[] = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) ops.push({ t: " ", s: x[i], ai: i++, bi: j++ });
    else if (i < n && (j === m || lcs[i + 1][j] >= lcs[i][j + 1])) {
      ops.push({ t: "-", s: x[i], ai: i++, bi: j });
    } else ops.push({ t: "+", s: y[j], ai: i, bi: j++ });
  }
  const out = [`--- ${a === "" ? "/dev/null" : path}`, `+++ ${b === "" ? "/dev/null" : path}`];
  let k = 0;
  while (k < ops.length) {
    if (ops[k].t === " ") {
      k++;
      continue;
    }
    const start = Math.max(0, k - context);
    let end = k;
    for (;;) {
      while (end < ops.length && ops[end].t !== " ") end++;
      let run = 0;
      while (end + run < ops.length && ops[end + run].t === " ") run++;
      if (end + run >= ops.length || run > 2 * context) {
        end = Math.min(ops.length, end + context);
        break;
      }
      end += run;
    }
    const hunk = ops.slice(start, end);
    const aLen = hunk.filter((o) => o.t !== "+").length;
    const bLen = hunk.filter((o) => o.t !== "-").length;
    const aStart = aLen ? hunk[0].ai + 1 : hunk[0].ai;
    const bStart = bLen ? hunk[0].bi + 1 : hunk[0].bi;
    out.push(`@@ -${aStart},${aLen} +${bStart},${bLen} @@`);
    for (const o of hunk) out.push(`${o.t}${o.s}`);
    k = end;
  }
  return out.join("\n") + "\n";
}

/** Directory of a path (exported for the installer's messages). */
export { dirName };
