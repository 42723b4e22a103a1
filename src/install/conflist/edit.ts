/**
 * Textual splices on a CNI config's original bytes: `inject()` inserts the tsnproxy entry
 * after the last plugin of the chain (or replaces an existing entry in place), `remove()`
 * cuts exactly the bytes insertion added. Every other byte (key order, unknown fields,
 * number spelling, indentation, line endings, a one-line layout) is untouched, so inject →
 * remove is byte-identical by construction.
 *
 * A single-plugin `.conf`/`.json` becomes a `.conflist` (`{cniVersion, name, plugins: [old,
 * entry]}`); the planner keeps the original as a backup and uninstall restores it.
 */
import { ConfigError } from "../../errors.ts";
import {
  type CniDocument,
  parseCniDocument,
  PLUGIN_TYPE,
  stem,
  type TsnproxyEntry,
} from "./document.ts";
import {
  deepEqual,
  type JsonArray,
  type JsonNode,
  type JsonObject,
  type JsonValue,
  member,
  toValue,
} from "./json.ts";

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
/** The file's line ending: CRLF when its first line break is one. */
function lineEnding(text: string): string {
  const i = text.indexOf("\n");
  return i > 0 && text[i - 1] === "\r" ? "\r\n" : "\n";
}
function reindent(block: string, indent: string, eol: string): string {
  return block.split("\n").map((l, k) => (k === 0 || l === "" ? l : indent + l)).join(eol);
}
function renderEntry(
  entry: TsnproxyEntry,
  multiline: boolean,
  unit: string,
  indent: string,
  eol: string,
) {
  return multiline
    ? reindent(JSON.stringify(entry, null, unit), indent, eol)
    : JSON.stringify(entry);
}

function pluginsArray(doc: CniDocument): JsonArray {
  const list = member(doc.root, "plugins");
  if (list?.kind !== "array") throw new Error("unreachable: conflist without plugins array");
  return list;
}

type Edit = [start: number, end: number, insert: string];

/** Applies non-overlapping edits (offsets into the original text). */
function applyEdits(text: string, edits: Edit[]): string {
  let out = text;
  for (const [s, e, ins] of [...edits].sort((a, b) => b[0] - a[0])) {
    out = out.slice(0, s) + ins + out.slice(e);
  }
  return out;
}

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

/** The text of a conflist `doc` without its tsnproxy entries. */
export function stripOurs(doc: CniDocument): string {
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
  const eol = lineEnding(text);
  if (doc.format === "conf") {
    if (doc.name === "") {
      throw new ConfigError(
        `${doc.path}: missing "name"`,
        "a network config needs a name to become a conflist; add one to the file",
      );
    }
    const inner = reindent(text.slice(doc.root.start, doc.root.end), unit + unit, "\n");
    const wrapper = `{${eol}${unit}"cniVersion": ${JSON.stringify(doc.cniVersion)},${eol}` +
      `${unit}"name": ${JSON.stringify(doc.name)},${eol}${unit}"plugins": [${eol}` +
      `${unit}${unit}${inner}${eol}${unit}]${eol}}${eol}`;
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
    const rendered = renderEntry(entry, multiline, unit, indent, eol);
    const insert = multiline ? `,${eol}${indent}${rendered}` : `, ${rendered}`;
    return {
      status: "added",
      path: doc.path,
      text: applyEdits(text, [[last.end, last.end, insert]]),
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
    edits.push([first.start, first.end, renderEntry(entry, multiline, unit, indent, eol)]);
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
