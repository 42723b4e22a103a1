/**
 * The datapath of release 0.1.0 (ABI 1), as this release finds it on a node it upgrades.
 *
 * ABI 1 had no admit: its saver applied the pod's policy (looked up by source address) and
 * wrote the tag (the same format ABI 2's admit writes, so ABI 2's restorer reads it) or a
 * fingerprint table entry, which only ABI 1's restorer reads. Pods it attached keep running
 * its saver until their DEL, so its restorer stays attached on the TSN NIC beside ours (ours
 * runs first and clears the tags it restores; ABI 1's then restores from its table) and its
 * maps stay pinned until the last of those pods is gone. Then retire() removes them.
 *
 *   <root>/maps/<tsnp_*>     its maps       <root>/progs/<tsnp_*>   its programs
 *   <root>/node/restore_<if>[marker]       its restorer            <root>/pods/...  shared
 */
import { CLSACT_HANDLE, describePin, detach } from "./attach.ts";
import { PinnedMap, releaseSlots } from "./maps.ts";
import { type PodAttachmentRecord, podCookie } from "./pod.ts";
import { splitMarker } from "./pins.ts";
import { closeFd, linkInfo, objGet, progInfo, progNameById, unpinIfPresent } from "./sys.ts";
import { dirNames, exists, removeIfEmpty } from "../util/fs.ts";

export const LEGACY_MAPS = [
  "tsnp_meta",
  "tsnp_policy",
  "tsnp_config",
  "tsnp_stats",
  "tsnp_pod_stats",
  "tsnp_slots",
  "tsnp_policy_gen",
  "tsnp_gc",
  "tsnp_live",
] as const;
export const LEGACY_PROGS = ["tsnp_save", "tsnp_restore", "tsnp_gc_start"] as const;

export class LegacyLayout {
  constructor(readonly root: string) {}
  get mapsDir(): string {
    return `${this.root}/maps`;
  }
  get progsDir(): string {
    return `${this.root}/progs`;
  }
  get nodeDir(): string {
    return `${this.root}/node`;
  }
}

/**
 * True when ABI 1 is still pinned under the root: its maps/progs/node directories with a pin
 * only ABI 1 has (tsnp_meta, tsnp_policy, tsnp_gc_start). The directories alone are not
 * enough: every later ABI's own directory has them too (a pin root that names one, e.g.
 * <root>/v2, must never be retired as release 0.1.0's).
 */
export function legacyPresent(bpffs: string): boolean {
  const l = new LegacyLayout(bpffs);
  return [`${l.mapsDir}/tsnp_meta`, `${l.mapsDir}/tsnp_policy`, `${l.progsDir}/tsnp_gc_start`]
    .some(exists);
}

/** The name of the program an attachment pin runs (a link's, or a clsact marker's own). */
export function programNameAt(pin: string): string | undefined {
  const fd = objGet(pin);
  if (fd === undefined) return undefined;
  try {
    // A clsact marker pins the program itself; any other attachment pin is a link.
    if (splitMarker(pin.slice(pin.lastIndexOf("/") + 1)).clsact) return progInfo(fd).name;
    return progNameById(linkInfo(fd).progId);
  } finally {
    closeFd(fd);
  }
}

/** True when an attachment was made by ABI 1: no admit on its host side. */
export function isLegacyPod(rec: PodAttachmentRecord): boolean {
  const host = rec.pins.filter((p) =>
    p.slice(p.lastIndexOf("/") + 1).startsWith(rec.name + "@host")
  );
  return !host.some((p) => programNameAt(p) === "tsnp_admit");
}

const V1_POLICY_SIZE = 32; // struct tsnp_policy of ABI 1: pod_cookie u64 first
const V1_ADDR_SIZE = 16;

function openLegacyMap(bpffs: string, name: string): PinnedMap | undefined {
  const fd = objGet(`${new LegacyLayout(bpffs).mapsDir}/${name}`);
  return fd === undefined ? undefined : new PinnedMap(name, fd);
}

/** Removes an ABI 1 pod's policy entries and counter slot (its DEL, run by this release). */
export function removeLegacyPod(bpffs: string, containerId: string): void {
  const cookie = podCookie(containerId);
  const policy = openLegacyMap(bpffs, "tsnp_policy");
  if (policy) {
    try {
      for (const k of [...policy.keys(V1_ADDR_SIZE)]) {
        const v = policy.lookup(k, V1_POLICY_SIZE);
        if (v && new DataView(v.buffer).getBigUint64(0, true) === cookie) policy.delete(k);
      }
    } finally {
      policy.close();
    }
  }
  const slots = openLegacyMap(bpffs, "tsnp_slots");
  if (slots) {
    try {
      releaseSlots(slots, cookie);
    } finally {
      slots.close();
    }
  }
}

/**
 * Removes ABI 1's node pieces, only its own names: the restorer attachments (in the node's
 * namespace `netns`), programs and maps. Call when no ABI 1 pod is left.
 */
export function retireLegacy(bpffs: string, netns?: string): number {
  const l = new LegacyLayout(bpffs);
  let n = 0;
  for (const file of dirNames(l.nodeDir)) {
    if (!/^restore_/.test(file)) continue;
    const base = file.replace(/@clsact-.*$/, "");
    n += detach(`${l.nodeDir}/${base}`, { netns, handles: [CLSACT_HANDLE] });
  }
  for (const p of LEGACY_PROGS) n += unpinIfPresent(`${l.progsDir}/${p}`);
  for (const m of LEGACY_MAPS) n += unpinIfPresent(`${l.mapsDir}/${m}`);
  for (const d of [l.nodeDir, l.progsDir, l.mapsDir]) removeIfEmpty(d);
  return n;
}

/** The TSN interfaces ABI 1's restorer sits on (their ifindexes), for status and doctor. */
export function legacyRestorers(bpffs: string): Array<{ pin: string; ifindex: number }> {
  const l = new LegacyLayout(bpffs);
  return dirNames(l.nodeDir).filter((f) => f.startsWith("restore_")).flatMap((f) => {
    try {
      return [{ pin: `${l.nodeDir}/${f}`, ifindex: describePin(`${l.nodeDir}/${f}`).ifindex }];
    } catch {
      return [];
    }
  });
}

/** After an ABI 1 pod's DEL: retire ABI 1 once none of its pods is left. */
export function retireLegacyIfUnused(
  bpffs: string,
  attachments: readonly PodAttachmentRecord[],
  netns?: string,
): boolean {
  if (!legacyPresent(bpffs)) return false;
  if (attachments.some(isLegacyPod)) return false;
  retireLegacy(bpffs, netns);
  return true;
}
