/**
 * One CNI network config file, parsed the way libcni loads it, with the source spans the
 * splicer needs: `.conflist` holds a chain (`{name, cniVersion, plugins: [...]}`), `.conf` and
 * `.json` a single plugin (the root object itself).
 */
import { ConfigError } from "../../errors.ts";
import {
  type JsonNode,
  type JsonObject,
  JsonSyntaxError,
  type JsonValue,
  lineCol,
  member,
  parseJsonWithSpans,
} from "./json.ts";

export const PLUGIN_TYPE = "tsnproxy";
/** libcni's extensions; `.conf` and `.json` hold one plugin, `.conflist` a chain. */
export const CNI_EXTENSIONS = [".conf", ".conflist", ".json"] as const;

export type CniFormat = "conflist" | "conf";

export interface CniDocument {
  path: string;
  text: string;
  /** "conf" for `.conf`/`.json` (one plugin), "conflist" for `.conflist`. */
  format: CniFormat;
  name: string;
  cniVersion?: string;
  /**
   * `loadOnlyInlinedPlugins` (libcni 1.3): when false (the default), libcni 1.3 and later
   * append the plugin files of `<conf dir>/<name>/*.conf` after the inline chain.
   */
  inlineOnly: boolean;
  root: JsonObject;
  /** The chain: for a conf, the single plugin is the root object itself. */
  plugins: { type: string; node: JsonObject }[];
}

/** The object `install` appends; must have `"type": "tsnproxy"`. */
export type TsnproxyEntry = { type: string } & { [k: string]: JsonValue };

export function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}
export function extOf(path: string): string {
  const b = baseName(path);
  const i = b.lastIndexOf(".");
  return i < 0 ? "" : b.slice(i);
}
/** The path without its extension. */
export function stem(path: string): string {
  return path.slice(0, path.length - extOf(path).length);
}
export function isCniName(name: string): boolean {
  return (CNI_EXTENSIONS as readonly string[]).includes(extOf(name));
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

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * The file's text. Bytes that are not UTF-8 are refused: Go's decoder reads them as U+FFFD,
 * and a splice re-encoding the text would change them, so nothing would come back byte for
 * byte. A BOM is kept, for the parser to refuse as Go does.
 */
export function decodeCniText(path: string, bytes: Uint8Array): string {
  try {
    return utf8.decode(bytes);
  } catch {
    // The first offending byte, for the message: the shortest prefix a streaming decoder
    // (which waits on a cut multi-byte sequence instead of failing) refuses, minus one.
    const refuses = (n: number) => {
      try {
        new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(0, n), { stream: true });
        return false;
      } catch {
        return true;
      }
    };
    let lo = 1;
    let hi = bytes.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (refuses(mid)) hi = mid;
      else lo = mid + 1;
    }
    // The refused byte may end a sequence begun by a lead byte (0b11xxxxxx) up to 3 bytes
    // earlier: report where that sequence starts.
    let at = lo - 1;
    let k = at;
    while (k > 0 && at - k < 3 && (bytes[k - 1] & 0xc0) === 0x80) k--;
    if (k > 0 && bytes[k - 1] >= 0xc0 && at - (k - 1) <= 3) at = k - 1;
    throw new ConfigError(
      `${path}: not valid UTF-8 (byte offset ${at}): tsnproxy edits CNI configs as text and ` +
        "would change those bytes",
      "re-save the file as UTF-8 (JSON requires it), then re-run",
    );
  }
}

/** libcni's reading of a boolean field: true/false or the strings "true"/"false". */
function boolField(path: string, text: string, o: JsonObject, key: string): boolean {
  const v = member(o, key);
  if (v === undefined) return false;
  if (v.kind === "literal" && typeof v.value === "boolean") return v.value;
  if (v.kind === "string" && /^(true|false)$/i.test(v.value as string)) {
    return (v.value as string).toLowerCase() === "true";
  }
  throw invalid(path, text, v.start, `"${key}" must be true or false`);
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
  let inlineOnly = false;
  if (format === "conflist") {
    name = strField(root, "name", true) as string;
    inlineOnly = boolField(path, text, root, "loadOnlyInlinedPlugins");
    const list = member(root, "plugins");
    if (list === undefined) {
      throw invalid(
        path,
        text,
        root.start,
        `missing "plugins" (tsnproxy chains itself into the inline list; a chain kept only in ` +
          `plugin files under ${JSON.stringify(name)}/ cannot be extended)`,
      );
    }
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
  return { path, text, format, name, cniVersion, inlineOnly, root, plugins };
}

/** True when the chain of `doc` holds a tsnproxy entry. */
export function hasOurEntry(doc: CniDocument): boolean {
  return doc.plugins.some((p) => p.type === PLUGIN_TYPE);
}
