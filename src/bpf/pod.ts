/**
 * The pod side of the datapath, used by `tsnproxy cni`: attach the pinned saver to the
 * pod's interface inside its namespace (never loading or verifying BPF per pod), write
 * the pod's policy under each of its addresses, and undo all of it.
 */
import { attach, type Attachment, detach, pinsOf, type TcApi } from "./attach.ts";
import { DatapathMaps, type DatapathPolicy } from "./maps.ts";
import { PinLayout, podAttachmentName } from "./pins.ts";
import { closeFd, objGetRequired } from "./sys.ts";

/** A stable 64-bit id for a container (FNV-1a), used to key per-pod counters and policies. */
export function podCookie(containerId: string): bigint {
  let h = 0xcbf29ce484222325n;
  for (let i = 0; i < containerId.length; i++) {
    h ^= BigInt(containerId.charCodeAt(i) & 0xff);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h === 0n ? 1n : h;
}

export interface PodAttachRequest {
  bpffs: string;
  containerId: string;
  ifname: string;
  netns: string;
  /** For the saver, in the pod's namespace (src/bpf/features.ts: resolvePodTcApi). */
  api: TcApi;
  /** For the host veth's restorer (default: api). */
  hostApi?: TcApi;
  /** The pod's addresses on this interface (from prevResult). */
  ips: readonly string[];
  policy: Omit<DatapathPolicy, "podCookie" | "slot">;
  /** With restoreAt host-veth-ingress: the host-side veth in the caller's namespace. */
  hostVeth?: string;
}

export function podPin(bpffs: string, containerId: string, ifname: string): string {
  return `${new PinLayout(bpffs).podsDir}/${podAttachmentName(containerId, ifname)}`;
}

export function hostVethPin(bpffs: string, containerId: string, ifname: string): string {
  return `${podPin(bpffs, containerId, ifname)}@host`;
}

/**
 * The map side of a pod's ADD: its counter slot, then its policy under each address. Runs
 * under the node lock (src/cni/verbs.ts). Before attachSavers(): the saver must never see
 * the pod's packets without the policy.
 */
export function writePodPolicies(
  maps: DatapathMaps,
  req: Pick<PodAttachRequest, "containerId" | "ips" | "policy">,
): void {
  const cookie = podCookie(req.containerId);
  const slot = maps.acquireSlot(cookie);
  for (const ip of req.ips) maps.putPolicy(ip, { ...req.policy, podCookie: cookie, slot });
}

/**
 * The attach side of a pod's ADD: the saver on its interface (and, with restoreAt
 * host-veth-ingress, a restorer on its host veth). Touches only this pod's pins, so it needs
 * no node lock: a tcx attach waits for an RCU grace period, which concurrent ADDs then wait
 * for side by side. On failure nothing of it stays attached.
 */
export function attachSavers(req: PodAttachRequest): Attachment[] {
  const pins = new PinLayout(req.bpffs);
  const done: Attachment[] = [];
  try {
    const save = objGetRequired(pins.prog("save"));
    try {
      const pin = podPin(req.bpffs, req.containerId, req.ifname);
      detach(pin, { netns: req.netns }); // a retried ADD replaces its own earlier attachment
      done.push(
        attach({
          progFd: save,
          ifname: req.ifname,
          direction: "egress",
          api: req.api,
          netns: req.netns,
          pin,
          first: true,
        }),
      );
    } finally {
      closeFd(save);
    }
    if (req.hostVeth) {
      const restore = objGetRequired(pins.prog("restore"));
      try {
        const pin = hostVethPin(req.bpffs, req.containerId, req.ifname);
        detach(pin, {});
        done.push(
          attach({
            progFd: restore,
            ifname: req.hostVeth,
            direction: "ingress",
            api: req.hostApi ?? req.api,
            pin,
            first: true,
          }),
        );
      } finally {
        closeFd(restore);
      }
    }
    return done;
  } catch (e) {
    detachAttachments(req);
    throw e;
  }
}

/** ADD in one call, for callers without concurrent plugins (tests, benchmarks, the demo). */
export function attachPod(req: PodAttachRequest): Attachment[] {
  const maps = DatapathMaps.open(req.bpffs);
  try {
    writePodPolicies(maps, req);
    try {
      return attachSavers(req);
    } catch (e) {
      removePodPolicies(maps, req); // nothing half-attached
      throw e;
    }
  } finally {
    maps.close();
  }
}

export interface PodDetachRequest {
  bpffs: string;
  containerId: string;
  ifname: string;
  /** May be empty or gone (the second DEL of a removed sandbox). */
  netns?: string;
  /** The interface's addresses (from DEL's prevResult), when the runtime passed them. */
  ips?: readonly string[];
}

/** The pod interface's attachments (idempotent, no node lock needed); returns pins removed. */
export function detachAttachments(req: PodDetachRequest): number {
  // Without the pod's namespace its clsact filter cannot be reached safely (and dies with
  // the namespace): only unpin. Never look for it in our own namespace, where the same
  // ifindex may be a different interface (the TSN NIC's restorer uses the same filter
  // handle), nor in the path the marker records, which may name another pod's namespace now.
  const n = detach(
    podPin(req.bpffs, req.containerId, req.ifname),
    req.netns ? { netns: req.netns } : { unpinOnly: true },
  );
  return n + detach(hostVethPin(req.bpffs, req.containerId, req.ifname), {});
}

/**
 * The map side of a DEL (idempotent, under the node lock): the pod's policies, and its
 * counter slot once none of its interfaces is attached any more.
 */
export function removePodPolicies(
  maps: DatapathMaps,
  req: Pick<PodDetachRequest, "bpffs" | "containerId" | "ips">,
): void {
  const cookie = podCookie(req.containerId);
  // The policies ADD wrote are keyed by the addresses DEL's prevResult names again: remove
  // those directly. Only without them (or when none is the pod's) walk the whole map, which
  // costs two syscalls per pod address on the node, under the node-wide lock.
  const own = (req.ips ?? []).filter((ip) => maps.policyCookie(ip) === cookie);
  if (own.length) {
    for (const ip of own) maps.deletePolicy(ip);
  } else {
    for (const { ip, policy } of maps.policies()) {
      if (policy.podCookie === cookie) maps.deletePolicy(ip);
    }
  }
  const prefix = podAttachmentName(req.containerId, "");
  if (!listPodAttachments(req.bpffs).some((a) => a.name.startsWith(prefix))) {
    maps.releaseSlot(cookie);
  }
}

/** DEL in one call: attachments, then policies and slot; returns pins removed. */
export function detachPod(req: PodDetachRequest): number {
  const n = detachAttachments(req);
  const maps = DatapathMaps.open(req.bpffs);
  try {
    removePodPolicies(maps, req);
  } finally {
    maps.close();
  }
  return n;
}

/** Attachment pins of a pod interface that exist now. */
export function podPins(bpffs: string, containerId: string, ifname: string): string[] {
  return [
    ...pinsOf(podPin(bpffs, containerId, ifname)),
    ...pinsOf(hostVethPin(bpffs, containerId, ifname)),
  ];
}

/** Every pod attachment pinned on this node: container id + ifname, parsed back. */
export function listPodAttachments(bpffs: string): Array<{ name: string; pins: string[] }> {
  const dir = new PinLayout(bpffs).podsDir;
  const byName = new Map<string, string[]>();
  try {
    for (const e of Deno.readDirSync(dir)) {
      const name = e.name.replace(/@clsact-.*$/, "").replace(/@host$/, "");
      byName.set(name, [...(byName.get(name) ?? []), `${dir}/${e.name}`]);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return [...byName].map(([name, pins]) => ({ name, pins }));
}
