/**
 * The pod side of the datapath, used by `tsnproxy cni`: the pod interface's entry in
 * tsnp_pods (its policy and carrier, keyed by its host-side ifindex), admit on its host-side
 * interface and the saver on the pod's interface inside its namespace, and undoing all of it.
 * Nothing here loads or verifies BPF: the programs are pinned once per node.
 */
import {
  attach,
  type AttachApi,
  type Attachment,
  CLSACT_HANDLE,
  CLSACT_HANDLES,
  describePin,
  detach,
  pinsOf,
} from "./attach.ts";
import type { TcApi } from "./attach.ts";
import { type Carrier, type DatapathMaps, type PodEntry } from "./maps.ts";
import { type CarrierChoice, choosePodCarrier, type ReasonName, REASONS } from "./carrier.ts";
import { foreign, type HookProgram, programsOn } from "./hooks.ts";
import { parsePodPin, PinLayout, type PodPin, podPinMatches } from "./pins.ts";
import { closeFd, objGetRequired } from "./sys.ts";
import type { DatapathPolicy } from "../policy/types.ts";
import { ifIndexToName } from "../ffi/libc.ts";
import { dirNames, sameFile } from "../util/fs.ts";

/** A host-side clsact attachment is admit's, or a release-0.1.0 host-veth restorer's. */
export const HOST_HANDLES = [CLSACT_HANDLES.admit, CLSACT_HANDLE] as const;

/** A stable 64-bit id for a container (FNV-1a), used to key per-pod counters and entries. */
export function podCookie(containerId: string): bigint {
  let h = 0xcbf29ce484222325n;
  for (let i = 0; i < containerId.length; i++) {
    h ^= BigInt(containerId.charCodeAt(i) & 0xff);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h === 0n ? 1n : h;
}

/** The pod interface's other end, in the node's namespace. */
export interface HostSide {
  name: string;
  index: number;
  kind: "veth" | "netkit";
}

export interface PodAttachRequest {
  bpffs: string;
  containerId: string;
  ifname: string;
  netns: string;
  /** The saver's hook API, in the pod's namespace (src/bpf/features.ts: resolvePodTcApi). */
  api: TcApi;
  host: HostSide;
  /** admit's hook on the host side (src/bpf/carrier.ts: admitApi). */
  hostApi: AttachApi;
}

/**
 * The map side of a pod's ADD: its counter slot and its entry under its host-side ifindex.
 * Runs under the node lock (src/cni/verbs.ts), before attachPodPrograms(): admit must never
 * see the pod's packets without the entry.
 */
export function writePodEntry(
  maps: DatapathMaps,
  req: { containerId: string; host: HostSide; carrier: Carrier; reason: number },
  policy: DatapathPolicy,
): PodEntry {
  const cookie = podCookie(req.containerId);
  const entry: PodEntry = {
    cookie,
    ...(req.host.kind === "netkit" ? { netkit: true } : {}),
    slot: maps.acquireSlot(cookie),
    carrier: req.carrier,
    reason: req.reason,
    policy,
  };
  maps.putPod(req.host.index, entry);
  return entry;
}

/**
 * The attach side of a pod's ADD: admit on the host side first, then the saver in the pod.
 * Touches only this pod's pins, so it needs no node lock (a tcx attach waits for an RCU grace
 * period, which concurrent ADDs then wait for side by side). On failure nothing of it stays
 * attached.
 */
export function attachPodPrograms(req: PodAttachRequest): Attachment[] {
  const pins = new PinLayout(req.bpffs);
  const done: Attachment[] = [];
  const hostPin = pins.pod(req.containerId, req.ifname, "host");
  const podPin = pins.pod(req.containerId, req.ifname, "pod");
  try {
    // A retried ADD replaces its own earlier attachments (a filter on another interface
    // than the pod's host side now is gone, or another pod's: only unpinned).
    detachHostSide(req, (ifindex) => ifindex === req.host.index);
    detachPodSide(req);
    done.push(withProgram(pins.prog("admit"), (fd) =>
      attach({
        progFd: fd,
        ifname: req.host.name,
        direction: "ingress",
        api: req.hostApi,
        pin: hostPin,
        first: true,
        handle: CLSACT_HANDLES.admit,
      })));
    done.push(withProgram(pins.prog("save"), (fd) =>
      attach({
        progFd: fd,
        ifname: req.ifname,
        direction: "egress",
        api: req.api,
        netns: req.netns,
        pin: podPin,
        first: true,
        handle: CLSACT_HANDLES.save,
      })));
    return done;
  } catch (e) {
    detachHostSide(req, (ifindex) => ifindex === req.host.index);
    detachPodSide(req);
    throw e;
  }
}

function withProgram<T>(pin: string, fn: (fd: number) => T): T {
  const fd = objGetRequired(pin);
  try {
    return fn(fd);
  } finally {
    closeFd(fd);
  }
}

export interface PodDetachRequest {
  bpffs: string;
  containerId: string;
  ifname: string;
  /** May be empty or gone (the second DEL of a removed sandbox). */
  netns?: string;
}

/** The host-side ifindex admit's pin records (0 when its interface is gone). */
export function admitIfindex(req: Omit<PodDetachRequest, "netns">): number | undefined {
  const pin = new PinLayout(req.bpffs).pod(req.containerId, req.ifname, "host");
  for (const p of pinsOf(pin)) {
    try {
      return describePin(p).ifindex;
    } catch { /* raced with a deletion */ }
  }
  return undefined;
}

/**
 * The pod side's attachment (idempotent, no node lock: a tcx detach waits for RCU); pin
 * removed. Without the pod's namespace its clsact filter cannot be reached safely (and dies
 * with the namespace): only unpin. Never look for it in our own namespace, where the same
 * ifindex may be another interface, nor in the path the marker records, which may name
 * another pod's namespace now.
 */
export function detachPodSide(req: PodDetachRequest): number {
  const netns = req.netns;
  return detach(
    new PinLayout(req.bpffs).pod(req.containerId, req.ifname, "pod"),
    netns
      ? {
        netns,
        handles: [CLSACT_HANDLES.save],
        // Only in the namespace the filter was attached in: every pod's saver runs one
        // program, so a CNI_NETNS that names another pod's namespace must not cost that
        // pod its saver.
        owns: (a) => a.netns !== undefined && sameFile(a.netns, netns),
      }
      : { unpinOnly: true },
  );
}

/**
 * The host side's attachment; pin removed. Every pod's admit filter runs the same program,
 * so on a host ifindex the kernel recycled for another pod a clsact filter of that program
 * is the other pod's: `owns` says whether the interface its marker records is still this
 * attachment's (see the callers), otherwise only the pin goes (the old interface's filter
 * died with it).
 */
export function detachHostSide(
  req: Omit<PodDetachRequest, "netns">,
  owns: (ifindex: number) => boolean,
): number {
  return detach(new PinLayout(req.bpffs).pod(req.containerId, req.ifname, "host"), {
    handles: HOST_HANDLES,
    owns: (a) => owns(a.ifindex),
  });
}

/** Whether the host interface at an ifindex is this pod's by tsnp_pods (under the node lock:
 * a new pod writes its entry, under the lock, before it attaches). */
export function ownedByEntry(maps: DatapathMaps | undefined, containerId: string) {
  const cookie = podCookie(containerId);
  return (ifindex: number): boolean => {
    const e = maps?.getPod(ifindex);
    return e === undefined || e.cookie === cookie;
  };
}

/**
 * The map side of a DEL (idempotent, under the node lock): the interface's entry (by the
 * host ifindex its admit pin recorded, or every entry of the pod whose interface is gone),
 * and the pod's counter slot once none of its interfaces is attached any more.
 */
export function removePodEntry(
  maps: DatapathMaps,
  req: { bpffs: string; containerId: string; hostIndex?: number },
): void {
  const cookie = podCookie(req.containerId);
  const own = req.hostIndex ? maps.getPod(req.hostIndex) : undefined;
  if (req.hostIndex && own?.cookie === cookie) {
    maps.deletePod(req.hostIndex);
  } else {
    for (const { ifindex, entry } of maps.pods()) {
      if (entry.cookie === cookie && ifIndexToName(ifindex) === undefined) {
        maps.deletePod(ifindex);
      }
    }
  }
  if (!listPodAttachments(req.bpffs).some((a) => podPinMatches(a, req.containerId))) {
    maps.releaseSlot(cookie);
  }
}

export interface PodAttachmentRecord extends PodPin {
  /** Every pin of this attachment (both sides, markers included). */
  pins: string[];
}

/** Every pod attachment pinned on this node, both sides grouped, names parsed. */
export function listPodAttachments(bpffs: string): PodAttachmentRecord[] {
  const dir = new PinLayout(bpffs).podsDir;
  const byName = new Map<string, PodAttachmentRecord>();
  for (const file of dirNames(dir)) {
    const p = parsePodPin(file);
    if (!p) continue;
    const rec = byName.get(p.name) ?? { ...p, side: "pod" as const, pins: [] };
    rec.pins.push(`${dir}/${file}`);
    byName.set(p.name, rec);
  }
  return [...byName.values()];
}

/** Attachment pins of a pod interface that exist now, both sides. */
export function podPins(bpffs: string, containerId: string, ifname: string): string[] {
  const pins = new PinLayout(bpffs);
  return [
    ...pinsOf(pins.pod(containerId, ifname, "pod")),
    ...pinsOf(pins.pod(containerId, ifname, "host")),
  ];
}

/** A pod interface whose carrier the facts on its way now decide differently. */
export interface CarrierChange {
  ifindex: number;
  ifname: string;
  from: Carrier;
  to: Carrier;
  reason: ReasonName;
  programs?: string[];
}

/**
 * Each pod's carrier decided again from what runs on its way now. Another datapath may
 * attach after a pod's ADD (a primary CNI's agent that programs host interfaces later, an
 * operator's tc filter): a pod on the tag would then hand that program our bits. Install and
 * the agent's repair run this with the node's new choice; `apply` writes the entries.
 * Moving a pod off the tag is immediate for its next packet (admit reads the entry per
 * packet); callers write the node config's TAGS flag after (off) or before (on) the pods.
 */
export function retunePodCarriers(
  maps: DatapathMaps,
  opts: { restoreAt: "tsn-egress" | "host-veth-ingress"; node: CarrierChoice },
  apply: boolean,
): CarrierChange[] {
  const changes: CarrierChange[] = [];
  for (const { ifindex, entry } of maps.pods()) {
    const ifname = ifIndexToName(ifindex);
    if (ifname === undefined) continue; // gone: install tidies its entry
    let hostForeign: HookProgram[];
    try {
      hostForeign = foreign(programsOn(ifname, "ingress", { netkit: entry.netkit === true }));
    } catch {
      continue; // raced with the interface's deletion
    }
    const choice = choosePodCarrier(opts, hostForeign);
    if (choice.carrier === entry.carrier) continue;
    changes.push({
      ifindex,
      ifname,
      from: entry.carrier,
      to: choice.carrier,
      reason: choice.reason,
      ...(choice.programs ? { programs: choice.programs } : {}),
    });
    if (apply) {
      maps.putPod(ifindex, { ...entry, carrier: choice.carrier, reason: REASONS[choice.reason] });
    }
  }
  return changes;
}
