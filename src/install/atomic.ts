/**
 * Crash-safe file replacement for files a container runtime reads (CNI conflists) and for
 * tsnproxy's own state files.
 *
 * Two modes:
 *
 * - **rename** (default): write `.<name>.tsnproxy-tmp.<pid>.<rand>` in the same directory,
 *   fsync it, rename it over the target, fsync the directory. Readers see the old or the new
 *   file, never a mix, even across power loss. The runtime sees a *new inode* (an fsnotify
 *   Create/MovedTo event).
 *
 * - **inPlace**: for runtimes that only react to Write events on the existing inode
 *   (containerd 1.6 ignores an atomic rename into conf_dir until it restarts). Writing in
 *   place cannot be atomic in general, so we make every intermediate state either valid or
 *   recoverable:
 *     1. a journal `.<name>.tsnproxy-journal` holding the old and the new bytes is written
 *        with the rename method (so it is itself complete or absent) and fsynced;
 *     2. the new bytes are written at offset 0 of the existing inode in ONE write(2) call,
 *        WITHOUT O_TRUNC. If the new content is shorter than the old, it is padded with
 *        ASCII spaces up to the old length (insignificant trailing whitespace for JSON and
 *        YAML), so there is never a moment where the file is empty or holds new bytes
 *        followed by a stale tail;
 *     3. ftruncate to the real length (the file is valid before and after), fsync;
 *     4. the journal is removed and the directory fsynced.
 *   If the process is killed (SIGKILL, OOM) the file is the old or the new (possibly padded)
 *   content: a single write(2) of up to one page at offset 0 to a regular file is not split
 *   by a fatal signal on Linux (the page-copy loop checks for fatal signals only between
 *   pages). Files larger than a page, or power loss before step 3's fsync, can leave a torn
 *   mix of old and new pages: the journal makes that *detectable and recoverable* —
 *   `recoverInterruptedWrites()` (run by the next writer, `install`, or the agent) finishes
 *   the write from the journal if the file is the old content, the padded new content, or a
 *   byte-wise mix of the two; if it is anything else, someone (the primary CNI) rewrote the
 *   file since, so the journal is discarded and the file left alone.
 *   Trade-off: a concurrent reader can in principle observe the torn state during the write
 *   (Linux gives no read/write atomicity for regular files); the runtime re-reads on the
 *   next event or pod, and the conflist is tiny, so the window is a single page copy.
 *
 * Either way the file keeps its mode and owner (a new one gets the caller's or 0644/root), and
 * with `followSymlink` a symlink at `path` is kept and the file it points to is written (its
 * temp and journal then sit next to that file).
 *
 * Temporary and journal names end in `.tsnproxy-tmp.*` / `.tsnproxy-journal`: they never
 * match `*.conf`, `*.conflist` or `*.json`, so the runtime never loads them (libcni filters
 * by extension only; it does not skip dotfiles).
 */
import { TsnproxyError } from "../errors.ts";
import { CniCode } from "../errors.ts";

export interface WriteOptions {
  /** File mode (default: keep the existing file's mode, else 0o644). */
  mode?: number;
  /** Owner (default: keep the existing file's owner, else the writing process's). */
  owner?: { uid: number; gid: number };
  /** Overwrite the existing inode instead of renaming a new one over it (see module doc). */
  inPlace?: boolean;
  /**
   * When `path` is a symlink, write the file it points to and keep the link (default: the
   * link is replaced by a regular file, as rename(2) does).
   */
  followSymlink?: boolean;
}

/** Mode and owner of a file, to give a copy or a re-created file the same. */
export interface FileAttrs {
  mode: number;
  uid: number;
  gid: number;
}

/** Mode bits and owner of `path` (following symlinks); undefined when it does not exist. */
export async function fileAttrs(path: string): Promise<FileAttrs | undefined> {
  try {
    const st = await Deno.stat(path);
    return { mode: (st.mode ?? 0o644) & 0o7777, uid: st.uid ?? 0, gid: st.gid ?? 0 };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw ioError("cannot stat", path, e);
  }
}

/** Marker in temp names; never a CNI extension. */
export const TEMP_MARK = ".tsnproxy-tmp";
export const JOURNAL_SUFFIX = ".tsnproxy-journal";

const SPACE = 0x20;
const enc = new TextEncoder();

/** True for names writeFileAtomic uses for its scratch files (temps and journals). */
export function isScratchName(name: string): boolean {
  return name.includes(TEMP_MARK) || name.endsWith(JOURNAL_SUFFIX);
}

function split(path: string): { dir: string; base: string } {
  const i = path.lastIndexOf("/");
  if (i < 0) return { dir: ".", base: path };
  return { dir: i === 0 ? "/" : path.slice(0, i), base: path.slice(i + 1) };
}

export function journalPath(path: string): string {
  const { dir, base } = split(path);
  return `${dir}/.${base}${JOURNAL_SUFFIX}`;
}

function ioError(what: string, path: string, e: unknown): TsnproxyError {
  const msg = e instanceof Error ? e.message : String(e);
  return new TsnproxyError(
    `${what} ${path}: ${msg}`,
    "check that the directory exists, is writable by root and the filesystem is not full or read-only",
    CniCode.IoFailure,
    { cause: e },
  );
}

async function fsyncDir(dir: string): Promise<void> {
  const d = await Deno.open(dir, { read: true });
  try {
    await d.sync();
  } finally {
    d.close();
  }
}

async function readOrNull(path: string): Promise<Uint8Array | null> {
  try {
    return await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw ioError("cannot read", path, e);
  }
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

async function writeAll(f: Deno.FsFile, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await f.write(data.subarray(off));
}

function randomTag(): string {
  const b = crypto.getRandomValues(new Uint8Array(6));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** rename-mode write; exported pieces are composed by writeFileAtomic. */
async function writeByRename(
  path: string,
  data: Uint8Array,
  mode: number,
  owner?: { uid: number; gid: number },
): Promise<void> {
  const { dir, base } = split(path);
  const tmp = `${dir}/.${base}${TEMP_MARK}.${Deno.pid}.${randomTag()}`;
  let f: Deno.FsFile | undefined;
  try {
    f = await Deno.open(tmp, { write: true, createNew: true, mode });
    await writeAll(f, data);
    // Owner first: chown clears set-id bits, chmod then sets exactly `mode`.
    if (owner) await Deno.chown(tmp, owner.uid, owner.gid);
    await Deno.chmod(tmp, mode); // umask may have narrowed the create mode
    await f.sync();
    f.close();
    f = undefined;
    await Deno.rename(tmp, path);
    await fsyncDir(dir);
  } catch (e) {
    f?.close();
    await Deno.remove(tmp).catch(() => {});
    throw ioError("cannot write", path, e);
  }
}

interface Journal {
  v: 1;
  target: string;
  old: string; // base64
  new: string; // base64
}

function b64(data: Uint8Array): string {
  let s = "";
  for (let i = 0; i < data.length; i += 0x8000) {
    s += String.fromCharCode(...data.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

function unb64(s: string): Uint8Array {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** `data` padded with spaces to at least `minLength` bytes. */
function padTo(data: Uint8Array, minLength: number): Uint8Array {
  if (data.length >= minLength) return data;
  const out = new Uint8Array(minLength).fill(SPACE);
  out.set(data);
  return out;
}

/** Steps 2-3 of the in-place protocol: one write at offset 0, truncate, fsync. */
async function overwriteInode(path: string, old: Uint8Array, data: Uint8Array): Promise<void> {
  const padded = padTo(data, old.length);
  const f = await Deno.open(path, { write: true });
  try {
    await f.seek(0, Deno.SeekMode.Start);
    await writeAll(f, padded);
    if (padded.length !== data.length) await f.truncate(data.length);
    await f.sync();
  } finally {
    f.close();
  }
}

/**
 * True when `cur` is a state an interrupted in-place write from `old` to `data` can leave:
 * each byte equal to the old or the padded new byte at that offset, and a length one of the
 * steps can produce.
 */
function isTornState(cur: Uint8Array, old: Uint8Array, data: Uint8Array): boolean {
  const padded = padTo(data, old.length);
  const lengths = new Set([old.length, padded.length, data.length]);
  if (!lengths.has(cur.length)) return false;
  for (let i = 0; i < cur.length; i++) {
    const o = i < old.length ? old[i] : -1;
    const n = i < padded.length ? padded[i] : -1;
    if (cur[i] !== o && cur[i] !== n) return false;
  }
  return true;
}

export type RecoveryAction = "completed" | "already-complete" | "discarded" | "temp-removed";
export interface RecoveryReport {
  path: string;
  action: RecoveryAction;
}

/** Finishes or discards an interrupted in-place write of `path` (no-op without a journal). */
export async function recoverPath(path: string): Promise<RecoveryReport | null> {
  const jp = journalPath(path);
  const raw = await readOrNull(jp);
  if (raw === null) return null;
  const { dir } = split(path);
  let journal: Journal;
  try {
    journal = JSON.parse(new TextDecoder().decode(raw)) as Journal;
    if (journal.v !== 1 || typeof journal.old !== "string" || typeof journal.new !== "string") {
      throw new Error("unknown journal format");
    }
  } catch {
    // A journal is written by rename, so it is complete or absent; an unreadable one is
    // not ours to act on.
    await Deno.remove(jp).catch(() => {});
    await fsyncDir(dir);
    return { path, action: "discarded" };
  }
  const old = unb64(journal.old);
  const data = unb64(journal.new);
  const cur = await readOrNull(path);
  let action: RecoveryAction;
  if (cur !== null && bytesEqual(cur, data)) {
    action = "already-complete";
  } else if (cur !== null && isTornState(cur, old, data)) {
    await overwriteInode(path, cur, data);
    action = "completed";
  } else {
    action = "discarded"; // rewritten or removed by someone else since: theirs wins
  }
  await Deno.remove(jp).catch(() => {});
  await fsyncDir(dir);
  return { path, action };
}

function pidAlive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Cleans `dir` after crashed writers: finishes or discards every journal and removes temp
 * files whose writer process is gone. Returns what it did (empty when the dir was clean).
 */
export async function recoverInterruptedWrites(dir: string): Promise<RecoveryReport[]> {
  const out: RecoveryReport[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(dir));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return out;
    throw ioError("cannot list", dir, e);
  }
  for (const ent of entries) {
    const n = ent.name;
    if (n.startsWith(".") && n.endsWith(JOURNAL_SUFFIX)) {
      const target = `${dir}/${n.slice(1, -JOURNAL_SUFFIX.length)}`;
      const r = await recoverPath(target);
      if (r) out.push(r);
      continue;
    }
    const m = /\.tsnproxy-tmp\.(\d+)\.[0-9a-f]+$/.exec(n);
    if (m && n.startsWith(".")) {
      const pid = Number(m[1]);
      if (pid !== Deno.pid && !pidAlive(pid)) {
        await Deno.remove(`${dir}/${n}`).catch(() => {});
        out.push({ path: `${dir}/${n}`, action: "temp-removed" });
      }
    }
  }
  if (out.some((r) => r.action === "temp-removed")) await fsyncDir(dir);
  return out;
}

/** The file a symlink at `path` points to (`path` itself when it is no symlink or absent). */
async function resolveLink(path: string): Promise<string> {
  try {
    if (!(await Deno.lstat(path)).isSymlink) return path;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return path;
    throw ioError("cannot stat", path, e);
  }
  try {
    return await Deno.realPath(path);
  } catch (e) {
    // A dangling link: writing it would replace the link, which is what the caller refused.
    throw ioError("cannot resolve the symlink", path, e);
  }
}

/**
 * Replaces `path` with `data` so that a crash at any point leaves the old or the new content
 * (or, for inPlace writes larger than a page or across power loss, a state the journal
 * recovers). See the module comment for the protocol.
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  opts: WriteOptions = {},
): Promise<void> {
  const bytes = typeof data === "string" ? enc.encode(data) : data;
  if (opts.followSymlink) path = await resolveLink(path);
  await recoverPath(path);
  const existing = await fileAttrs(path);
  const existingMode = existing?.mode;
  const mode = opts.mode ?? existingMode ?? 0o644;
  const owner = opts.owner ?? (existing && { uid: existing.uid, gid: existing.gid });
  if (!opts.inPlace || existingMode === undefined) {
    // A new file has no inode to preserve: creating it is one event whatever we do.
    await writeByRename(path, bytes, mode, owner);
    return;
  }
  const old = await readOrNull(path) ?? new Uint8Array();
  if (bytesEqual(old, bytes)) return;
  const journal: Journal = { v: 1, target: split(path).base, old: b64(old), new: b64(bytes) };
  const jp = journalPath(path);
  await writeByRename(jp, enc.encode(JSON.stringify(journal)), 0o600);
  try {
    await overwriteInode(path, old, bytes);
    if (opts.owner && (opts.owner.uid !== existing?.uid || opts.owner.gid !== existing?.gid)) {
      await Deno.chown(path, opts.owner.uid, opts.owner.gid);
    }
    if (opts.mode !== undefined && opts.mode !== existingMode) await Deno.chmod(path, opts.mode);
  } catch (e) {
    throw ioError("cannot write in place", path, e);
  }
  await Deno.remove(jp).catch(() => {});
  await fsyncDir(split(path).dir);
}

/** Unlinks `path` (absent is fine) and fsyncs its directory. */
export async function removeFileDurable(path: string): Promise<boolean> {
  try {
    await Deno.remove(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw ioError("cannot remove", path, e);
  }
  await fsyncDir(split(path).dir);
  return true;
}
