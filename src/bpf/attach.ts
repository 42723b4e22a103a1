/**
 * Attaching a pinned program to an interface hook, in any network namespace:
 *
 *   tcx      tc ingress/egress as a BPF link (kernel 6.6+), pinned so it outlives this
 *            process; BPF_F_BEFORE runs it ahead of every program already there
 *   netkit   a netkit device's peer hook (BPF_NETKIT_PEER on the host-side device: it runs
 *            when the pod transmits), a BPF link like tcx
 *   clsact   a classic cls_bpf direct-action filter (older kernels)
 *
 * Every tsnproxy program returns "next", so the primary CNI's own programs on the same hook
 * keep running.
 */
import { KernelError, NotFoundError } from "../errors.ts";
import { Errno, ifNameToIndex, strerror } from "../ffi/libc.ts";
import { libbpf } from "../ffi/libbpf.ts";
import {
  BPF_F_AFTER,
  BPF_F_BEFORE,
  BPF_NETKIT_PEER,
  BPF_TC_EGRESS,
  BPF_TC_F_REPLACE,
  BPF_TC_INGRESS,
  BPF_TCX_EGRESS,
  BPF_TCX_INGRESS,
  BpfLinkCreateOpts,
  BpfProgQueryOpts,
  BpfTcHook,
  BpfTcOpts,
} from "../ffi/structs/bpf.ts";
import { decode, encode } from "../ffi/structs/layout.ts";
import { withNetns } from "../util/netns.ts";
import {
  check,
  closeFd,
  linkDetachAt,
  linkInfo,
  linkUpdateAt,
  objPin,
  progIdAt,
  progNameById,
  readPinned,
} from "./sys.ts";
import { dirNames, exists } from "../util/fs.ts";
import { addressOf } from "../ffi/open.ts";
import { type ClsactMarker, clsactSuffix, splitMarker } from "./pins.ts";

export type Direction = "ingress" | "egress";
export type TcApi = "tcx" | "clsact";
export type AttachApi = TcApi | "netkit";

/**
 * cls_bpf filter handles ("tS", "tT", "tU"), one per program so that two releases' programs
 * (release 0.1.0 used 0x7453 everywhere) can sit on one hook side by side. Priority 1: a new
 * filter at an existing priority joins the front of its list, so ours runs first.
 */
export const CLSACT_HANDLE = 0x7453;
export const CLSACT_HANDLES = { save: 0x7453, admit: 0x7454, restore: 0x7455 } as const;
export const CLSACT_PRIORITY = 1;

export interface AttachRequest {
  /** Program to attach (fd of a loaded or pinned program). */
  progFd: number;
  ifname: string;
  direction: Direction;
  api: AttachApi;
  /** Network namespace path (undefined: the caller's). */
  netns?: string;
  /** Pin path for the attachment (a link, or the clsact marker prefix). */
  pin: string;
  /** tcx/netkit: run before (true) or after (false) programs already attached. */
  first: boolean;
  /** clsact: the filter handle (CLSACT_HANDLES). */
  handle?: number;
}

export interface Attachment {
  api: AttachApi;
  ifindex: number;
  direction: Direction;
  /** The pin that records it. */
  pin: string;
  /**
   * clsact: the network namespace of the filter when it is not the attaching process's own
   * (a pod's), as the marker records it, for uninstall. A link needs none: unpinning
   * detaches it.
   */
  netns?: string;
}

/** Parses a pin back into what it records. */
export function describePin(path: string): Attachment {
  const file = path.slice(path.lastIndexOf("/") + 1);
  const { clsact } = splitMarker(file);
  if (clsact) {
    return {
      api: "clsact",
      direction: clsact.direction,
      ifindex: clsact.ifindex,
      pin: path,
      ...(clsact.netns ? { netns: clsact.netns } : {}),
    };
  }
  const info = readPinned(path, linkInfo);
  if (!info) throw new NotFoundError(`no attachment pinned at ${path}`, "nothing to do");
  const netkit = info.attachType === BPF_NETKIT_PEER;
  return {
    api: netkit ? "netkit" : "tcx",
    ifindex: info.ifindex,
    direction: netkit || info.attachType === BPF_TCX_INGRESS ? "ingress" : "egress",
    pin: path,
  };
}

function resolveIfindex(ifname: string, netns?: string): number {
  const idx = ifNameToIndex(ifname);
  if (idx === 0) {
    throw new NotFoundError(
      `interface ${ifname} does not exist${netns ? ` in network namespace ${netns}` : ""}`,
      netns
        ? "check CNI_IFNAME and that the primary CNI created the pod interface before tsnproxy runs (tsnproxy must be last in the chain)"
        : "create the interface or name the right one (--tsn-interface / tsnInterface in the node config)",
    );
  }
  return idx;
}

function tcHook(ifindex: number, direction: Direction) {
  return encode(BpfTcHook, {
    sz: BigInt(BpfTcHook.size),
    ifindex,
    attach_point: direction === "ingress" ? BPF_TC_INGRESS : BPF_TC_EGRESS,
  });
}

/** Attaches and pins. On any failure nothing stays attached. */
export function attach(req: AttachRequest): Attachment {
  return withNetns(req.netns, () => {
    const ifindex = resolveIfindex(req.ifname, req.netns);
    return req.api === "clsact" ? attachClsact(req, ifindex) : attachLink(req, ifindex);
  });
}

function linkAttachType(api: AttachApi, direction: Direction): number {
  if (api === "netkit") return BPF_NETKIT_PEER;
  return direction === "ingress" ? BPF_TCX_INGRESS : BPF_TCX_EGRESS;
}

function attachLink(req: AttachRequest, ifindex: number): Attachment {
  const opts = encode(BpfLinkCreateOpts, {
    sz: BigInt(BpfLinkCreateOpts.size),
    flags: req.first ? BPF_F_BEFORE : BPF_F_AFTER,
  });
  const type = linkAttachType(req.api, req.direction);
  const link = libbpf().bpf_link_create(req.progFd, ifindex, type, opts);
  if (link < 0) {
    const e = -link;
    throw new KernelError(
      `cannot attach to ${req.ifname} ${req.direction} with ${req.api}: ${strerror(e)}`,
      e === Errno.EINVAL
        ? req.api === "netkit"
          ? `${req.ifname} is not the host side of a netkit pair`
          : "this kernel has no tcx (before 6.6): use attachMode clsact (or auto)"
        : "run as root; see `tsnproxy doctor`",
      e,
    );
  }
  try {
    objPin(link, req.pin); // the pin holds the link: it outlives this process
  } catch (err) {
    closeFd(link); // closing the only reference detaches it again
    throw err;
  }
  closeFd(link);
  return { api: req.api, ifindex, direction: req.direction, pin: req.pin };
}

function attachClsact(req: AttachRequest, ifindex: number): Attachment {
  const handle = req.handle ?? CLSACT_HANDLE;
  const hook = tcHook(ifindex, req.direction);
  const r = libbpf().bpf_tc_hook_create(hook);
  if (r < 0 && r !== -Errno.EEXIST) {
    check(
      r,
      `cannot create the clsact qdisc on ${req.ifname}`,
      "run as root; the kernel needs CONFIG_NET_CLS_ACT",
    );
  }
  const opts = encode(BpfTcOpts, {
    sz: BigInt(BpfTcOpts.size),
    prog_fd: req.progFd,
    flags: BPF_TC_F_REPLACE,
    handle,
    priority: CLSACT_PRIORITY,
  });
  check(
    libbpf().bpf_tc_attach(hook, opts),
    `cannot attach the cls_bpf filter to ${req.ifname} ${req.direction}`,
    "run as root; the kernel needs CONFIG_NET_CLS_BPF",
  );
  const marker: ClsactMarker = { direction: req.direction, ifindex, netns: req.netns };
  const pin = req.pin + clsactSuffix(marker);
  try {
    objPin(req.progFd, pin);
  } catch (err) {
    detachClsact(ifindex, req.direction, handle);
    throw err;
  }
  return {
    api: "clsact",
    ifindex,
    direction: req.direction,
    pin,
    ...(req.netns ? { netns: req.netns } : {}),
  };
}

/**
 * Makes an attachment run `progFd` instead of its program, with no moment in which the hook
 * runs neither or both: a link's program is swapped in place (BPF_LINK_UPDATE, the link keeps
 * its place in the chain); a clsact filter is replaced under its own handle and priority
 * (BPF_TC_F_REPLACE), then its marker is re-pinned to the new program (pinned beside it and
 * renamed over it, so the marker always names the program the filter runs, as detach() needs).
 */
export function replaceProgram(
  a: Attachment,
  progFd: number,
  handle: number,
  netns?: string,
): void {
  if (a.api !== "clsact") {
    check(
      linkUpdateAt(a.pin, progFd),
      `cannot swap the program of the ${a.api} link ${a.pin}`,
      "run as root; see `tsnproxy doctor`",
    );
    return;
  }
  withNetns(netns, () => {
    const opts = encode(BpfTcOpts, {
      sz: BigInt(BpfTcOpts.size),
      prog_fd: progFd,
      flags: BPF_TC_F_REPLACE,
      handle,
      priority: CLSACT_PRIORITY,
    });
    check(
      libbpf().bpf_tc_attach(tcHook(a.ifindex, a.direction), opts),
      `cannot replace the cls_bpf filter on ifindex ${a.ifindex} ${a.direction}`,
      "run as root; see `tsnproxy doctor`",
    );
  });
  // A name no pin parser takes for an attachment of ours (see pins.ts; bpffs allows no dots).
  const slash = a.pin.lastIndexOf("/");
  const next = `${a.pin.slice(0, slash)}/next-${a.pin.slice(slash + 1)}`;
  try {
    Deno.removeSync(next); // left by a run killed between the pin and the rename
  } catch { /* none */ }
  objPin(progFd, next);
  Deno.renameSync(next, a.pin);
}

/** The program id of a cls_bpf filter of ours on a hook, in the calling thread's namespace. */
export function clsactProgId(
  ifindex: number,
  direction: Direction,
  handle = CLSACT_HANDLE,
): number | undefined {
  const opts = encode(BpfTcOpts, {
    sz: BigInt(BpfTcOpts.size),
    handle,
    priority: CLSACT_PRIORITY,
  });
  if (libbpf().bpf_tc_query(tcHook(ifindex, direction), opts) < 0) return undefined;
  return decode(BpfTcOpts, opts).prog_id;
}

/**
 * Whether the clsact filter a pin records (one of handles, in netns) still runs the pinned
 * program: false when the filter, the interface or the namespace is gone, or another program
 * took the handle.
 */
export function clsactRunsPin(
  pin: string,
  a: Attachment,
  handles: readonly number[],
  netns?: string,
): boolean {
  try {
    return withNetns(netns, () => {
      const id = progIdAt(pin);
      return id !== undefined &&
        handles.some((h) => clsactProgId(a.ifindex, a.direction, h) === id);
    });
  } catch {
    return false;
  }
}

function detachClsact(ifindex: number, direction: Direction, handle: number): void {
  const hook = tcHook(ifindex, direction);
  const opts = encode(BpfTcOpts, {
    sz: BigInt(BpfTcOpts.size),
    handle,
    priority: CLSACT_PRIORITY,
  });
  const r = libbpf().bpf_tc_detach(hook, opts);
  // ENOENT: the filter is gone already (interface or namespace deleted); ENODEV likewise.
  if (r < 0 && r !== -Errno.ENOENT && r !== -Errno.ENODEV && r !== -Errno.EINVAL) {
    check(r, `cannot detach the cls_bpf filter from ifindex ${ifindex}`, "run as root");
  }
}

/** The pins recording attachments under `pin` (the link and/or clsact markers). */
export function pinsOf(pin: string): string[] {
  const slash = pin.lastIndexOf("/");
  const dir = pin.slice(0, slash);
  const base = pin.slice(slash + 1);
  return dirNames(dir).filter((n) => splitMarker(n).name === base).map((n) => `${dir}/${n}`);
}

/** Where detach() finds the clsact filters a pin records. */
export interface DetachTarget {
  /** Network namespace of the interface (undefined: the caller's). */
  netns?: string;
  /** Only unpin: the filter lives in a namespace the caller cannot name, or that is gone. */
  unpinOnly?: boolean;
  /**
   * For a clsact pin: whether the interface it records is still the attachment's own. A
   * filter running a program shared by many attachments (admit) cannot be told from another
   * attachment's on a recycled ifindex by its program id; the caller knows the owner.
   */
  owns?: (a: Attachment) => boolean;
  /**
   * Uninstall, where every saver goes whichever pod it serves: detach in the namespace the
   * marker records, while it lives and its filter still runs the marker's program. Not for
   * GC or a DEL without CNI_NETNS: a reused path (/proc/<pid>/ns/net) can name another pod's
   * namespace, whose saver runs the same program on the same ifindex. Without a recorded
   * namespace, only unpin.
   */
  recorded?: boolean;
  /**
   * clsact: the filter handles the pins' program may have been attached with (CLSACT_HANDLES;
   * default the saver's, which release 0.1.0 used everywhere). Only a filter that still runs
   * the pinned program is detached.
   */
  handles?: readonly number[];
}

/**
 * Detaches everything pinned under `pin`. Idempotent: missing pins, a deleted interface
 * or a namespace that no longer exists (its filters died with it) are not errors.
 */
export function detach(pin: string, target: DetachTarget = {}): number {
  let n = 0;
  const handles = target.handles ?? [CLSACT_HANDLE];
  for (const p of pinsOf(pin)) {
    const a = describePinSafe(p);
    if (a?.api === "clsact" && !target.unpinOnly) {
      const netns = target.recorded ? a.netns : target.netns;
      const reachable = (target.recorded ? netns !== undefined : true) &&
        (target.owns?.(a) ?? true);
      if (reachable && (netns === undefined || exists(netns))) {
        try {
          withNetns(netns, () => {
            // Only our filter, and only while it still runs the pinned program: the same
            // handle on a recreated interface may be another attachment's.
            const id = progIdAt(p);
            for (const handle of handles) {
              if (clsactProgId(a.ifindex, a.direction, handle) === id) {
                detachClsact(a.ifindex, a.direction, handle);
              }
            }
          });
        } catch (e) {
          if (!(e instanceof NotFoundError)) throw e;
        }
      }
    }
    // A link is detached at once, then its pin (the last reference) goes.
    if (a !== undefined && a.api !== "clsact") linkDetachAt(p);
    Deno.removeSync(p);
    n++;
  }
  return n;
}

function describePinSafe(p: string): Attachment | undefined {
  try {
    return describePin(p);
  } catch {
    return undefined;
  }
}

export interface HookProgram {
  id: number;
  name: string;
}

/** Programs attached to a link hook (tcx, or netkit's peer hook), in run order. */
export function queryHook(
  ifname: string,
  direction: Direction,
  netns?: string,
  api: "tcx" | "netkit" = "tcx",
): HookProgram[] {
  return withNetns(netns, () => {
    const ifindex = resolveIfindex(ifname, netns);
    const ids = new Uint32Array(64);
    const opts = encode(BpfProgQueryOpts, {
      sz: BigInt(BpfProgQueryOpts.size),
      prog_ids: addressOf(ids),
      prog_cnt: ids.length,
    });
    const r = libbpf().bpf_prog_query_opts(ifindex, linkAttachType(api, direction), opts);
    if (r === -Errno.EINVAL || r === -Errno.EOPNOTSUPP) return [];
    check(r, `cannot query ${api} programs on ${ifname}`, "run as root");
    const cnt = new DataView(opts.buffer).getUint32(BpfProgQueryOpts.fields.prog_cnt[0], true);
    return [...ids.subarray(0, cnt)].map((id) => ({ id, name: progNameById(id) ?? "?" }));
  });
}

/** Programs attached to an interface's tcx hook, in run order. Empty without tcx. */
export function queryTcx(ifname: string, direction: Direction, netns?: string): HookProgram[] {
  return queryHook(ifname, direction, netns, "tcx");
}
