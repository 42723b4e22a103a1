/**
 * What `tsnproxy install` created or changed on this node, so `uninstall` undoes exactly that
 * and nothing the operator made. One small JSON file (default /var/lib/tsnproxy/install.json,
 * `--state-dir` for tests), written atomically after every step that creates something, so
 * an install that dies half-way still records what it did.
 *
 *   {
 *     "v": 1,
 *     "version": "0.2.0",                 tsnproxy that last wrote it
 *     "interfaces": [                     one record per TSN interface
 *       {
 *         "ifname": "tsn0",
 *         "clsactCreated": true,           clsact did not exist before install
 *         "rootCreated": {"kind": "taprio", "handle": 256},   root install created (major)
 *         "replacedRoot": "htb 1:",        what that root replaced (for the uninstall message)
 *         "vlan": {                        egress-qos-map entries install changed
 *           "previous": {"3": 0, "5": 2},  priority -> PCP before install (0: no entry)
 *           "set": {"3": 3, "5": 5}        priority -> PCP install set
 *         }
 *       }
 *     ],
 *     "qdisc": {"ifname": "tsn0", ...}    the first record without vlan: what releases before
 *   }                                     the list read (a downgrade's uninstall still works)
 *
 * Files written before the list (only "qdisc") are read as a list of that one record.
 * Only facts the machine cannot tell afterwards are kept: whether clsact and the root qdisc
 * were there before, and what the PCP map said. The pin root, the plugin binary and the
 * conflist entry need no record: all of them are tsnproxy's by name (the pin root,
 * `tsnproxy` in the bin dir, the entry of type "tsnproxy" plus its `.tsnproxy-orig` backup).
 * Whether something still exists is always read from the kernel. Uninstall removes the file
 * once nothing it records remains (a root qdisc kept without --remove-qdisc stays recorded, so
 * a later `uninstall --remove-qdisc` can still remove it).
 */
import { ConfigError } from "../errors.ts";
import { DEFAULTS } from "../options.ts";
import { qosPairs } from "../config/vlan.ts";
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

/** egress-qos-map entries install changed on a VLAN device (priority keys as strings). */
export interface VlanState {
  /** priority -> the PCP it had before install (0: no entry). */
  previous: Record<string, number>;
  /** priority -> the PCP install set. */
  set: Record<string, number>;
}

/** Everything install recorded about one TSN interface. */
export interface InterfaceState extends QdiscState {
  vlan?: VlanState;
}

export interface InstallState {
  v: 1;
  version: string;
  /** One record per TSN interface install touched, in the order install met them. */
  interfaces: InterfaceState[];
}

export function statePath(dir: string = DEFAULT_STATE_DIR): string {
  return `${dir.replace(/\/+$/, "")}/${STATE_FILE}`;
}

export function emptyState(): InstallState {
  return { v: 1, version: VERSION, interfaces: [] };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function pcpRecord(v: unknown): Record<string, number> | undefined {
  if (!isRecord(v)) return undefined;
  const out: Record<string, number> = {};
  for (const [k, x] of Object.entries(v)) {
    if (!/^\d+$/.test(k) || typeof x !== "number" || !Number.isInteger(x) || x < 0 || x > 7) {
      return undefined;
    }
    out[k] = x;
  }
  return out;
}

function readInterface(q: unknown): InterfaceState | undefined {
  if (!isRecord(q) || typeof q.ifname !== "string") return undefined;
  const out: InterfaceState = { ifname: q.ifname, clsactCreated: q.clsactCreated === true };
  const r = q.rootCreated;
  if (
    isRecord(r) && (r.kind === "taprio" || r.kind === "mqprio") && typeof r.handle === "number"
  ) {
    out.rootCreated = { kind: r.kind, handle: r.handle };
  }
  if (typeof q.replacedRoot === "string") out.replacedRoot = q.replacedRoot;
  if (isRecord(q.vlan)) {
    const previous = pcpRecord(q.vlan.previous);
    const set = pcpRecord(q.vlan.set);
    if (previous && set && Object.keys(set).length > 0) out.vlan = { previous, set };
  }
  return out;
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
  const state: InstallState = { v: 1, version: String(v.version ?? ""), interfaces: [] };
  // The list when there is one; a file from before it has only "qdisc".
  const list = Array.isArray(v.interfaces) ? v.interfaces : [v.qdisc];
  for (const q of list) {
    const rec = readInterface(q);
    if (rec && !state.interfaces.some((x) => x.ifname === rec.ifname)) state.interfaces.push(rec);
  }
  return state;
}

/** The record of one interface (undefined: install recorded nothing about it). */
export function interfaceState(s: InstallState, ifname: string): InterfaceState | undefined {
  return s.interfaces.find((x) => x.ifname === ifname);
}

/** The state with `rec` as the record of its interface (added at the end when new). */
export function withInterface(s: InstallState, rec: InterfaceState): InstallState {
  const i = s.interfaces.findIndex((x) => x.ifname === rec.ifname);
  const interfaces = [...s.interfaces];
  if (i < 0) interfaces.push(rec);
  else interfaces[i] = rec;
  return { ...s, interfaces };
}

/** True when the record describes nothing install created or changed. */
export function interfaceIsEmpty(q: InterfaceState): boolean {
  return !q.clsactCreated && !q.rootCreated && !q.vlan;
}

/** True when the state records nothing (the file can go). */
export function stateIsEmpty(s: InstallState): boolean {
  return s.interfaces.every(interfaceIsEmpty);
}

function canonical(s: InstallState): string {
  return JSON.stringify(
    s.interfaces.filter((q) => !interfaceIsEmpty(q)).map((q) => [
      q.ifname,
      q.clsactCreated,
      q.rootCreated?.kind,
      q.rootCreated?.handle,
      q.replacedRoot,
      qosPairs(q.vlan?.previous ?? {}),
      qosPairs(q.vlan?.set ?? {}),
    ]),
  );
}

/** Same records (the writer's version aside). */
export function sameState(a: InstallState, b: InstallState): boolean {
  return canonical(a) === canonical(b);
}

/** The file's JSON: the list, and the first record as "qdisc" for releases before it. */
function fileJson(s: InstallState): Record<string, unknown> {
  const interfaces = s.interfaces.filter((q) => !interfaceIsEmpty(q));
  const out: Record<string, unknown> = { v: 1, version: VERSION, interfaces };
  const first = interfaces[0];
  if (first && (first.clsactCreated || first.rootCreated)) {
    const { vlan: _vlan, ...qdisc } = first;
    out.qdisc = qdisc;
  }
  return out;
}

/** Writes the state atomically (or removes the file when it records nothing). */
export async function writeState(dir: string, s: InstallState): Promise<void> {
  if (stateIsEmpty(s)) {
    await removeFileDurable(statePath(dir));
    return;
  }
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFileAtomic(statePath(dir), JSON.stringify(fileJson(s), null, 2) + "\n", {
    mode: 0o600,
  });
}
