/**
 * What `tsnproxy install` created on this node, so `uninstall` removes exactly that and
 * nothing the operator made. One small JSON file (default /var/lib/tsnproxy/install.json,
 * `--state-dir` for tests), written atomically after every step that creates something, so
 * an install that dies half-way still records what it did.
 *
 *   {
 *     "v": 1,
 *     "version": "0.1.0",                 tsnproxy that last wrote it
 *     "qdisc": {
 *       "ifname": "tsn0",
 *       "clsactCreated": true,             clsact did not exist before install
 *       "rootCreated": {"kind": "taprio", "handle": 256},   root install created (major)
 *       "replacedRoot": "htb 1:"           what that root replaced (for the uninstall message)
 *     }
 *   }
 *
 * Only facts the machine cannot tell afterwards are kept: whether clsact and the root qdisc
 * were there before. The pin root, the plugin binary and the conflist entry need no record:
 * all of them are tsnproxy's by name (the pin root, `tsnproxy` in the bin dir, the entry of
 * type "tsnproxy" plus its `.tsnproxy-orig` backup). Whether something still exists is always
 * read from the kernel. Uninstall removes the file once nothing it records remains (a root
 * qdisc kept without --remove-qdisc stays recorded, so a later `uninstall --remove-qdisc`
 * can still remove it).
 */
import { ConfigError } from "../errors.ts";
import { DEFAULTS } from "../options.ts";
import { VERSION } from "../version.ts";
import { removeFileDurable, writeFileAtomic } from "./atomic.ts";

export const DEFAULT_STATE_DIR = DEFAULTS.stateDir;
export const STATE_FILE = "install.json";

export interface QdiscState {
  ifname: string;
  /** clsact was absent before install added it (for the restorer or the 6.1 ordering). */
  clsactCreated: boolean;
  /** The root qdisc install created from the node config (kind and handle major). */
  rootCreated?: { kind: "taprio" | "mqprio"; handle: number };
  /** The root that install deleted to create its own ("htb 1:"), for messages only. */
  replacedRoot?: string;
}

export interface InstallState {
  v: 1;
  version: string;
  qdisc?: QdiscState;
}

export function statePath(dir: string = DEFAULT_STATE_DIR): string {
  return `${dir.replace(/\/+$/, "")}/${STATE_FILE}`;
}

export function emptyState(): InstallState {
  return { v: 1, version: VERSION };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Reads the state; an absent file is an empty state, a corrupt one a ConfigError. */
export async function readState(dir: string = DEFAULT_STATE_DIR): Promise<InstallState> {
  const path = statePath(dir);
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return emptyState();
    throw e;
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    v = undefined;
  }
  if (!isRecord(v) || v.v !== 1) {
    throw new ConfigError(
      `${path} is not a tsnproxy install state file`,
      `remove ${path} (uninstall then leaves any qdisc it recorded alone) and re-run`,
    );
  }
  const q = v.qdisc;
  const state: InstallState = { v: 1, version: String(v.version ?? "") };
  if (isRecord(q) && typeof q.ifname === "string") {
    const qs: QdiscState = { ifname: q.ifname, clsactCreated: q.clsactCreated === true };
    const r = q.rootCreated;
    if (
      isRecord(r) && (r.kind === "taprio" || r.kind === "mqprio") && typeof r.handle === "number"
    ) {
      qs.rootCreated = { kind: r.kind, handle: r.handle };
    }
    if (typeof q.replacedRoot === "string") qs.replacedRoot = q.replacedRoot;
    state.qdisc = qs;
  }
  return state;
}

/** True when the state records nothing (the file can go). */
export function stateIsEmpty(s: InstallState): boolean {
  const q = s.qdisc;
  return !q || (!q.clsactCreated && !q.rootCreated);
}

function canonical(s: InstallState): string {
  const q = s.qdisc;
  return JSON.stringify(
    q && !stateIsEmpty(s)
      ? [q.ifname, q.clsactCreated, q.rootCreated?.kind, q.rootCreated?.handle, q.replacedRoot]
      : [],
  );
}

/** Same records (the writer's version aside). */
export function sameState(a: InstallState, b: InstallState): boolean {
  return canonical(a) === canonical(b);
}

/** Writes the state atomically (or removes the file when it records nothing). */
export async function writeState(dir: string, s: InstallState): Promise<void> {
  if (stateIsEmpty(s)) {
    await removeFileDurable(statePath(dir));
    return;
  }
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFileAtomic(
    statePath(dir),
    JSON.stringify({ ...s, version: VERSION }, null, 2) + "\n",
    {
      mode: 0o600,
    },
  );
}
