/**
 * Which file in the CNI config directory the container runtime uses, by libcni's rules:
 * every entry whose name ends in `.conf`, `.conflist` or `.json` and is not a directory, in
 * byte order; the first one is the default network, or with `network` the one whose "name"
 * matches.
 *
 * What a real node's directory can hold besides regular files, and what tsnproxy does:
 * - a symlink to a regular file (distributions sharing one config between directories):
 *   used; install edits the file it points to and keeps the link (the plan says so);
 * - a dangling symlink: unreadable, like a malformed file;
 * - a FIFO, socket or device, or a symlink to one or to a directory: never opened (a FIFO
 *   would block the reader), skipped with a note. libcni does try to read them: the note
 *   says so when one sorts before the file in use;
 * - a directory with a CNI name: libcni skips it, so does tsnproxy.
 */
import { ConfigError, NotFoundError } from "../../errors.ts";
import {
  baseName,
  type CniDocument,
  decodeCniText,
  isCniName,
  parseCniDocument,
} from "./document.ts";

/** An entry of the conf dir that libcni would try to load. */
export interface ConfEntry {
  name: string;
  path: string;
  /**
   * "file": a regular file, or a symlink to one (`linkTarget`); "dangling": a symlink to
   * nothing (unreadable, like a malformed file); "special": a FIFO, socket or device, or a
   * symlink to one or to a directory: never opened.
   */
  kind: "file" | "dangling" | "special";
  /** Set for a symlink: the file it resolves to. */
  linkTarget?: string;
  /** What the entry is, for "dangling" and "special" ones. */
  unusable?: string;
}

export interface DiscoverOptions {
  /** Select the network by its "name" instead of "first valid file". */
  network?: string;
}

export interface Discovered {
  doc: CniDocument;
  /** Set when `doc.path` is a symlink: the file it resolves to, which install edits. */
  linkTarget?: string;
  /** Entries that were not used, with the reason (for doctor / --dry-run output). */
  skipped: { path: string; reason: string }[];
}

const utf8 = new TextEncoder();

/** Go's sort.Strings order: byte-wise on the UTF-8 names. */
export function byteOrder(a: string, b: string): number {
  const x = utf8.encode(a);
  const y = utf8.encode(b);
  for (let i = 0; i < x.length && i < y.length; i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

function kindOf(st: Deno.FileInfo): string {
  if (st.isDirectory) return "a directory";
  if (st.isFifo) return "a FIFO";
  if (st.isSocket) return "a socket";
  if (st.isCharDevice) return "a character device";
  if (st.isBlockDevice) return "a block device";
  return "not a regular file";
}

async function describe(confDir: string, name: string): Promise<ConfEntry | undefined> {
  const path = `${confDir}/${name}`;
  let st: Deno.FileInfo;
  try {
    st = await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined; // gone since readDir
    throw e;
  }
  if (st.isFile) return { name, path, kind: "file" };
  if (st.isDirectory) return undefined; // libcni skips directories
  if (!st.isSymlink) {
    return { name, path, kind: "special", unusable: `${kindOf(st)}, not a regular file` };
  }
  let target: string;
  try {
    target = await Deno.realPath(path);
  } catch {
    const to = await Deno.readLink(path).catch(() => "?");
    return { name, path, kind: "dangling", unusable: `a dangling symlink (to ${to})` };
  }
  const t = await Deno.stat(target);
  if (t.isFile) return { name, path, kind: "file", linkTarget: target };
  return {
    name,
    path,
    kind: "special",
    linkTarget: target,
    unusable: `a symlink to ${kindOf(t)} (${target})`,
  };
}

/**
 * The entries of `confDir` libcni would try to load, in its order (directories left out;
 * nothing is opened).
 */
export async function scanConfDir(confDir: string): Promise<ConfEntry[]> {
  const out: ConfEntry[] = [];
  try {
    for await (const e of Deno.readDir(confDir)) {
      if (!isCniName(e.name)) continue;
      const entry = await describe(confDir, e.name);
      if (entry) out.push(entry);
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
  return out.sort((a, b) => byteOrder(a.name, b.name));
}

/** The names in `confDir` libcni would try to load, in its order. */
export async function listCandidates(confDir: string): Promise<string[]> {
  return (await scanConfDir(confDir)).map((e) => e.name);
}

/** Reads and parses one usable entry (a regular file, or a symlink to one). */
export async function readEntry(entry: ConfEntry): Promise<CniDocument> {
  if (entry.kind !== "file") {
    throw new ConfigError(
      `${entry.path} is ${entry.unusable}`,
      "remove it or replace it with a regular file (the container runtime cannot load it " +
        "either), or select the network with --network",
    );
  }
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(entry.path);
  } catch (e) {
    throw new ConfigError(
      `cannot read ${entry.path}: ${e instanceof Error ? e.message : String(e)}`,
      "check permissions; tsnproxy install runs as root",
    );
  }
  return parseCniDocument(entry.path, decodeCniText(entry.path, bytes));
}

function skipNote(e: ConfEntry, before: string | undefined): string {
  const hazard = before && byteOrder(e.name, before) < 0
    ? `; it sorts before ${before}: a runtime that reads every file (containerd) fails or ` +
      "blocks on it"
    : "";
  return `${e.unusable} (not opened)${hazard}: remove it`;
}

/**
 * The file the container runtime uses. Without `network`: the first candidate in lexical
 * order; a malformed file *before* it is an error, because runtimes disagree there
 * (containerd's go-cni refuses the whole directory, CRI-O's ocicni skips the file) and
 * tsnproxy must not guess which network pods get. Entries that cannot be files (FIFOs,
 * sockets, devices) are skipped with a note instead: opening them could block. With
 * `network`: the single valid file whose "name" matches; two matches are ambiguous (error,
 * unless they are links to the same file), malformed files are skipped unless nothing
 * matches.
 */
export async function discover(confDir: string, opts: DiscoverOptions = {}): Promise<Discovered> {
  const entries = await scanConfDir(confDir);
  const hintNone = "install the primary CNI (flannel, calico, ...) first so that it writes its " +
    "config, or pass --cni-conf-dir";
  const files = entries.filter((e) => e.kind !== "special");
  const specials = entries.filter((e) => e.kind === "special");
  if (files.length === 0) {
    const also = specials.map((e) => `${e.name}: ${e.unusable}`).join("; ");
    throw new NotFoundError(
      `no CNI config (*.conf, *.conflist, *.json) in ${confDir}${also ? ` (skipped ${also})` : ""}`,
      hintNone,
    );
  }
  const skipped: Discovered["skipped"] = [];
  if (opts.network === undefined) {
    const first = files[0];
    const doc = await readEntry(first); // malformed or dangling → throws with the reason
    for (const e of specials) skipped.push({ path: e.path, reason: skipNote(e, first.name) });
    return { doc, linkTarget: first.linkTarget, skipped };
  }
  const matches: { doc: CniDocument; entry: ConfEntry }[] = [];
  const errors: ConfigError[] = [];
  const seen: string[] = [];
  for (const e of specials) skipped.push({ path: e.path, reason: skipNote(e, undefined) });
  for (const entry of files) {
    try {
      const doc = await readEntry(entry);
      seen.push(`${entry.name} (${JSON.stringify(doc.name)})`);
      if (doc.name === opts.network) matches.push({ doc, entry });
      else skipped.push({ path: entry.path, reason: `network ${JSON.stringify(doc.name)}` });
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      errors.push(e);
      skipped.push({ path: entry.path, reason: e.message });
    }
  }
  const distinct = new Set(matches.map((m) => m.entry.linkTarget ?? m.entry.path));
  if (distinct.size > 1) {
    throw new ConfigError(
      `network ${JSON.stringify(opts.network)} is defined by several files in ${confDir}: ` +
        matches.map((m) => baseName(m.doc.path)).join(", "),
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
  return { doc: matches[0].doc, linkTarget: matches[0].entry.linkTarget, skipped };
}
