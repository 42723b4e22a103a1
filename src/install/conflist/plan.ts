/**
 * The file changes `tsnproxy install` / `uninstall` (and the agent's repair) make in the CNI
 * config directory: planned from what is on disk (for `--dry-run`: file, action, diff), then
 * applied with writeFileAtomic, refusing if a file changed since it was planned. Re-planning
 * after apply yields no change.
 *
 * - Before the first edit the pristine file is kept as `<name>.tsnproxy-orig` (a name libcni
 *   never loads), with the original's mode and owner (a copy exposes nothing the original
 *   did not); uninstall restores it byte for byte when nothing else changed the file.
 * - A single-plugin `.conf`/`.json` becomes `<stem>.conflist`, created with the original's
 *   mode and owner; uninstall re-creates the original with the backup's.
 * - A symlinked config: the file it points to is edited and the link kept (its target is
 *   what the runtime reads). Converting a symlinked `.conf` is refused: the `.conflist` would
 *   replace the link with a regular file.
 */
import { ConfigError } from "../../errors.ts";
import {
  type FileAttrs,
  fileAttrs,
  JOURNAL_SUFFIX,
  journalPath,
  recoverInterruptedWrites,
  recoverPath,
  removeFileDurable,
  writeFileAtomic,
} from "../atomic.ts";
import { unifiedDiff } from "./diff.ts";
import {
  byteOrder,
  discover,
  type DiscoverOptions,
  listCandidates,
  scanConfDir,
} from "./discover.ts";
import {
  baseName,
  type CniDocument,
  decodeCniText,
  extOf,
  hasOurEntry,
  parseCniDocument,
  stem,
  type TsnproxyEntry,
} from "./document.ts";
import { type Backup, inject, type InjectStatus, remove, type RemoveStatus } from "./edit.ts";

export const BACKUP_SUFFIX = ".tsnproxy-orig";

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
  /** Mode and owner the written file gets (a copy or a re-created file mirrors its original). */
  attrs?: FileAttrs;
  /** Set when `path` is a symlink: the file it points to, which is written (the link stays). */
  linkTarget?: string;
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

/** Interrupted writes: in the conf dir, and of the files its symlinks point to. */
async function settle(opts: PlanOptions, warnings: string[]): Promise<void> {
  let linked: string[] = [];
  try {
    linked = (await scanConfDir(opts.confDir)).flatMap((e) =>
      e.kind === "file" && e.linkTarget ? [e.linkTarget] : []
    );
  } catch { /* discover reports a missing dir */ }
  if (opts.recover !== false) {
    await recoverInterruptedWrites(opts.confDir);
    for (const t of linked) await recoverPath(t);
    return;
  }
  const pending: string[] = [];
  try {
    for await (const e of Deno.readDir(opts.confDir)) {
      if (e.name.endsWith(JOURNAL_SUFFIX)) pending.push(e.name);
    }
  } catch { /* discover reports a missing dir */ }
  for (const t of linked) {
    if (await Deno.lstat(journalPath(t)).then(() => true, () => false)) {
      pending.push(journalPath(t));
    }
  }
  for (const p of pending) {
    warnings.push(
      `an interrupted in-place write is pending (${p}); install/uninstall finishes it first`,
    );
  }
}

function backupPathFor(originalPath: string): string {
  return `${originalPath}${BACKUP_SUFFIX}`;
}

/**
 * A file's text, undefined when absent. Anything but a regular file (or a symlink to one) is
 * refused unopened: a FIFO would block.
 */
async function readText(path: string): Promise<string | undefined> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  if (!st.isFile) {
    throw new ConfigError(
      `${path} is not a regular file (tsnproxy does not open it)`,
      "remove it; tsnproxy writes only regular files here",
    );
  }
  return decodeCniText(path, await Deno.readFile(path));
}

/** What is at `path`: nothing, a file, or a symlink (with the file it resolves to). */
async function entryAt(path: string): Promise<"none" | "file" | { link: string | undefined }> {
  try {
    if (!(await Deno.lstat(path)).isSymlink) return "file";
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return "none";
    throw e;
  }
  return { link: await Deno.realPath(path).catch(() => undefined) };
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
  extra: Pick<FileChange, "attrs" | "linkTarget"> = {},
): FileChange {
  return {
    action,
    path,
    role,
    before,
    after,
    why,
    diff: unifiedDiff(path, before ?? "", after ?? ""),
    ...(extra.attrs ? { attrs: extra.attrs } : {}),
    ...(extra.linkTarget ? { linkTarget: extra.linkTarget } : {}),
  };
}

/**
 * libcni 1.3 and later append the plugin files of `<conf dir>/<network name>/*.conf` after a
 * conflist's inline chain (unless `loadOnlyInlinedPlugins`): tsnproxy is then not last.
 */
async function pluginDirWarning(confDir: string, doc: CniDocument): Promise<string | undefined> {
  if (doc.inlineOnly || doc.name === "" || /[/\0]/.test(doc.name) || /^\.\.?$/.test(doc.name)) {
    return undefined;
  }
  const dir = `${confDir}/${doc.name}`;
  const files: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) if (extOf(e.name) === ".conf") files.push(e.name);
  } catch {
    return undefined; // no such directory (the usual case)
  }
  if (files.length === 0) return undefined;
  return `${dir}/ holds plugin files (${files.sort().join(", ")}): libcni 1.3 and later run ` +
    `them after the chain in ${baseName(doc.path)}, so tsnproxy is not last for runtimes ` +
    `built with it; set "loadOnlyInlinedPlugins": true or move those plugins into the chain`;
}

/** What `tsnproxy install` would change in `confDir` to chain `entry`. */
export async function planInstall(opts: PlanOptions & { entry: TsnproxyEntry }): Promise<Plan> {
  const warnings: string[] = [];
  await settle(opts, warnings);
  const { doc, skipped, linkTarget } = await discover(opts.confDir, opts);
  warnings.push(
    ...skipped.filter((s) => !s.reason.startsWith("network ")).map((s) =>
      `skipped ${s.path}: ${s.reason}`
    ),
  );
  if (linkTarget !== undefined && doc.format === "conf") {
    throw new ConfigError(
      `${doc.path} is a symlink to ${linkTarget} and a single-plugin config: chaining needs a ` +
        `.conflist, which would replace the link with a regular file`,
      `convert ${linkTarget} into a .conflist and link that instead (or replace the link with ` +
        "a copy of its target), then re-run",
    );
  }
  const r = inject(doc, opts.entry);
  warnings.push(...r.warnings);
  const dirWarning = await pluginDirWarning(opts.confDir, doc);
  if (dirWarning) warnings.push(dirWarning);
  const attrs = await fileAttrs(doc.path);
  const via = linkTarget === undefined ? "" : ` (through the symlink: ${linkTarget} is edited)`;
  const changes: FileChange[] = [];
  if (!hasOurEntry(doc)) {
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
          { attrs },
        ),
      );
    }
  }
  if (r.convertedFrom !== undefined) {
    const existing = await readText(r.path);
    let ours = false;
    try {
      ours = existing !== undefined && hasOurEntry(parseCniDocument(r.path, existing));
    } catch { /* not ours if unparsable */ }
    const at = await entryAt(r.path);
    if (at !== "none") {
      // Ours is a regular file holding our entry; anything else there (a foreign config, a
      // symlink, a dangling one) is not to be replaced.
      if (!ours || at !== "file") {
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
      const between = names.filter((n) => byteOrder(n, a) > 0 && byteOrder(n, b) < 0);
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
        { attrs },
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
        (r.status === "added"
          ? "append tsnproxy to the end of the chain"
          : "update the tsnproxy entry") + via,
        { linkTarget },
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
  const { doc, linkTarget } = await discover(opts.confDir, opts);
  const backup = await findBackup(doc.path);
  const r = remove(doc, backup);
  const via = linkTarget === undefined ? "" : ` (through the symlink: ${linkTarget} is edited)`;
  const changes: FileChange[] = [];
  if (r.status === "restored" && r.path !== doc.path) {
    const existing = await readText(r.path);
    const attrs = backup && await fileAttrs(backupPathFor(backup.originalPath));
    changes.push(
      change(
        existing === undefined ? "create" : "update",
        r.path,
        "conflist",
        existing,
        r.text,
        "restore the original single-plugin config",
        { attrs },
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
        (r.status === "restored"
          ? "restore the original chain"
          : "remove the tsnproxy entry (the file changed since install; other edits kept)") + via,
        { linkTarget },
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
        if (hasOurEntry(parseCniDocument(ours, text))) {
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

function changedSincePlan(path: string): ConfigError {
  return new ConfigError(
    `${path} changed since the plan was made`,
    "another tool is editing the CNI config; re-run the command",
  );
}

/**
 * Performs `plan`'s changes in order. Each file must still hold what the plan saw (and still
 * be the same kind of entry: a file, or a symlink to the same file); otherwise nothing further
 * is written and a ConfigError asks to re-run (the next plan starts from the new state, so
 * re-running converges).
 */
export async function apply(plan: Plan, opts: ApplyOptions = {}): Promise<void> {
  await recoverInterruptedWrites(plan.confDir);
  for (const c of plan.changes) {
    const at = await entryAt(c.path);
    const expected = c.before === undefined
      ? "none"
      : c.linkTarget === undefined
      ? "file"
      : JSON.stringify({ link: c.linkTarget });
    if ((typeof at === "string" ? at : JSON.stringify(at)) !== expected) {
      throw changedSincePlan(c.path);
    }
    if (c.before !== undefined && (await readText(c.path)) !== c.before) {
      throw changedSincePlan(c.path);
    }
    if (c.action === "delete") {
      await removeFileDurable(c.path);
    } else {
      const inPlace = c.role === "conflist" && c.action === "update" && (opts.inPlace ?? false);
      await writeFileAtomic(c.path, c.after ?? "", {
        inPlace,
        followSymlink: c.linkTarget !== undefined,
        ...(c.attrs ? { mode: c.attrs.mode, owner: { uid: c.attrs.uid, gid: c.attrs.gid } } : {}),
      });
    }
  }
}
