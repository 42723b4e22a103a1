/**
 * The node side of the datapath: the restorer on each TSN interface, what else runs on the
 * node's devices (the carrier's node-wide facts), and removing everything of ours. Used by
 * install, the agent, uninstall and doctor; everything here is idempotent.
 */
import { dirNames, removeIfEmpty } from "../util/fs.ts";
import {
  attach,
  type Attachment,
  CLSACT_HANDLES,
  clsactProgId,
  describePin,
  detach,
  pinsOf,
  replaceProgram,
  type TcApi,
} from "./attach.ts";
import { parseNodePin, parsePodPin, PinLayout } from "./pins.ts";
import {
  closeFd,
  linkInfo,
  objGetRequired,
  progIdAt,
  progInfo,
  readPinned,
  unpinIfPresent,
} from "./sys.ts";
import { ifNameToIndex } from "../ffi/libc.ts";
import { withNetns } from "../util/netns.ts";
import { NotFoundError } from "../errors.ts";
import { foreign, type HookProgram, programsOn } from "./hooks.ts";
import { listLinks } from "../netlink/link.ts";
import { retireLegacy } from "./legacy.ts";
import { HOST_HANDLES } from "./pod.ts";
import { MAPS, PROGRAMS } from "./pins.ts";

/** True when a pinned restorer attachment still sits on the interface's current index. */
export function restorerAttached(
  bpffs: string,
  ifname: string,
  netns?: string,
): Attachment | undefined {
  const ifindex = withNetns(netns, () => ifNameToIndex(ifname));
  for (const p of pinsOf(new PinLayout(bpffs).restorer(ifname))) {
    const a = describePin(p);
    // A link whose interface was deleted reports ifindex 0; a recreated interface gets a
    // new index. Either way the old attachment no longer filters this interface.
    if (ifindex !== 0 && a.ifindex === ifindex) return a;
  }
  return undefined;
}

/** What a TSN interface's restorer attachment runs, and what is pinned as tsnp_restore. */
export interface RestorerStatus {
  attachment: Attachment;
  /**
   * The program the hook runs for the attachment (a link's program, or the clsact filter's
   * under the restorer's handle); undefined when the filter is gone behind the marker's back.
   */
  runningId?: number;
  /** The pinned tsnp_restore; undefined without the pin. */
  pinnedId?: number;
}

/** The restorer attachment on the interface's current index, and what it runs. */
export function restorerStatus(
  bpffs: string,
  ifname: string,
  netns?: string,
): RestorerStatus | undefined {
  const a = restorerAttached(bpffs, ifname, netns);
  if (!a) return undefined;
  const runningId = a.api === "clsact"
    ? withNetns(netns, () => clsactProgId(a.ifindex, a.direction, CLSACT_HANDLES.restore))
    : readPinned(a.pin, linkInfo)?.progId;
  const pinnedId = progIdAt(new PinLayout(bpffs).prog("restore"));
  return { attachment: a, runningId, pinnedId };
}

/**
 * Attaches the restorer to the TSN interface's egress, first, unless it is there already (an
 * attachment whose clsact filter is gone is attached again).
 */
export function attachRestorer(
  bpffs: string,
  ifname: string,
  api: TcApi,
  netns?: string,
): Attachment & { action: "kept" | "attached" } {
  const existing = restorerStatus(bpffs, ifname, netns);
  if (existing?.runningId !== undefined) return { ...existing.attachment, action: "kept" };
  const pins = new PinLayout(bpffs);
  const pin = pins.restorer(ifname);
  detach(pin, { netns, handles: [CLSACT_HANDLES.restore] }); // a deleted/recreated interface's
  const fd = objGetRequired(pins.prog("restore"));
  try {
    const a = attach({
      progFd: fd,
      ifname,
      direction: "egress",
      api,
      netns,
      pin,
      first: true,
      handle: CLSACT_HANDLES.restore,
    });
    return { ...a, action: "attached" };
  } finally {
    closeFd(fd);
  }
}

/**
 * Moves the restorer on the interface onto the pinned tsnp_restore (an install that replaced
 * the pinned program, or a pin replaced behind the attachment's back) without a moment off
 * the hook: the same link or filter, its program swapped (attach.ts replaceProgram).
 * Returns the attachment and the program ids before and after.
 */
export function replaceRestorer(
  bpffs: string,
  ifname: string,
  netns?: string,
): Attachment & { from?: number; to: number } {
  const st = restorerStatus(bpffs, ifname, netns);
  if (!st) {
    throw new NotFoundError(
      `no restorer attached to ${ifname} to move onto the pinned tsnp_restore`,
      "run `tsnproxy install` (it attaches one)",
    );
  }
  const fd = objGetRequired(new PinLayout(bpffs).prog("restore"));
  try {
    const to = progInfo(fd).id;
    if (st.runningId !== to) {
      replaceProgram(st.attachment, fd, CLSACT_HANDLES.restore, netns);
    }
    return { ...st.attachment, from: st.runningId, to };
  } finally {
    closeFd(fd);
  }
}

export function detachRestorer(bpffs: string, ifname: string, netns?: string): number {
  return detach(new PinLayout(bpffs).restorer(ifname), {
    netns,
    handles: [CLSACT_HANDLES.restore],
  });
}

/** The TSN interfaces that have a restorer pin of this ABI. */
export function restorerInterfaces(bpffs: string): string[] {
  const out = new Set<string>();
  for (const f of dirNames(new PinLayout(bpffs).nodeDir)) {
    const p = parseNodePin(f);
    if (p) out.add(p.ifname);
  }
  return [...out];
}

export interface DeviceProgram extends HookProgram {
  device: string;
}

const OVERLAY_KINDS = new Set(["vxlan", "geneve", "ipip", "sit", "ip6tnl", "gre", "gretap"]);

/**
 * Other datapaths' programs on the node devices a pod's packet crosses between admit and the
 * restorer: bridges (a routed packet enters the stack through its bridge's ingress), tunnel
 * devices, and the devices an eBPF CNI creates for itself (cilium_*). The TSN interfaces are
 * not among them: the restorer runs first on their egress and clears the tag, so what runs
 * after it there never sees one (doctor's interface.restorer checks it stays first).
 */
export function nodeForeignPrograms(
  tsnInterfaces: readonly string[],
  netns?: string,
): DeviceProgram[] {
  return withNetns(netns, () => {
    const out: DeviceProgram[] = [];
    for (const l of listLinks()) {
      if (tsnInterfaces.includes(l.name)) continue;
      const onWay = l.kind === "bridge" || (l.kind !== undefined && OVERLAY_KINDS.has(l.kind)) ||
        l.name.startsWith("cilium_");
      if (!onWay) continue;
      for (const dir of ["ingress", "egress"] as const) {
        for (const p of foreign(programsOn(l.name, dir))) out.push({ ...p, device: l.name });
      }
    }
    return out;
  });
}

/**
 * Uninstall's datapath part: detaches and unpins everything tsnproxy pinned under the root,
 * of this ABI and of release 0.1.0's, and nothing else: every file is matched by a name we
 * write, and a directory goes only when it is empty (another datapath's pins under our root
 * stay where they are). Node attachments are in `netns` (the node's; tests pass theirs).
 * Pod savers: links detach on unpin; clsact filters are removed in the pod namespace their
 * marker records, while it lives.
 */
export function teardownNode(bpffs: string, netns?: string): number {
  const pins = new PinLayout(bpffs);
  let n = 0;
  for (const ifname of restorerInterfaces(bpffs)) n += detachRestorer(bpffs, ifname, netns);
  const seen = new Set<string>();
  for (const f of dirNames(pins.podsDir)) {
    const p = parsePodPin(f);
    if (!p) continue;
    const base = `${pins.podsDir}/${p.name}${p.side === "host" ? "@host" : ""}`;
    if (seen.has(base)) continue;
    seen.add(base);
    n += p.side === "host"
      ? detach(base, { netns, handles: HOST_HANDLES })
      : detach(base, { recorded: true, handles: [CLSACT_HANDLES.save] });
  }
  n += retireLegacy(bpffs, netns);
  for (const role of Object.values(PROGRAMS)) n += unpinIfPresent(`${pins.progsDir}/${role}`);
  for (const m of MAPS) n += unpinIfPresent(pins.map(m));
  for (const d of [pins.nodeDir, pins.progsDir, pins.mapsDir, pins.abiDir, pins.podsDir]) {
    removeIfEmpty(d);
  }
  removeIfEmpty(pins.root);
  return n;
}
