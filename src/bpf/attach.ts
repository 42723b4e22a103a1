/**
 * Attaching a pinned program to an interface's tc hook, in any network namespace, with
 * tcx (kernel 6.6+: a BPF link, pinned so it outlives this process) or classic clsact +
 * cls_bpf direct-action (older kernels). Either way the programs return "next", so the
 * primary CNI's own programs on the same hook keep running.
 */
import { KernelError, NotFoundError } from "../errors.ts";
import { Errno, ifNameToIndex, strerror } from "../ffi/libc.ts";
import { libbpf } from "../ffi/libbpf.ts";
import {
  BPF_F_AFTER,
  BPF_F_BEFORE,
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
import { check, closeFd, fdById, linkInfo, objPin, progIdAt, progInfo, readPinned } from "./sys.ts";
import { exists } from "../util/fs.ts";
import { addressOf } from "../ffi/open.ts";

export type Direction = "ingress" | "egress";
export type TcApi = "tcx" | "clsact";

/** cls_bpf filter identity used for every tsnproxy filter ("tS"); priority 1 runs first. */
export const CLSACT_HANDLE = 0x7453;
export const CLSACT_PRIORITY = 1;

export interface AttachRequest {
  /** Program to attach (fd of a loaded or pinned program). */
  progFd: number;
  ifname: string;
  direction: Direction;
  api: TcApi;
  /** Network namespace path (undefined: the caller's). */
  netns?: string;
  /** Pin path for the attachment (a tcx link, or the clsact marker prefix). */
  pin: string;
  /** tcx: run before (true) or after (false) programs already attached. */
  first: boolean;
}

export interface Attachment {
  api: TcApi;
  ifindex: number;
  direction: Direction;
  /** The pin that records it. */
  pin: string;
  /**
   * clsact: the network namespace of the filter when it is not the attaching process's own
   * (a pod's), as the marker records it, for uninstall. A tcx link needs none: unpinning
   * detaches it.
   */
  netns?: string;
}

/**
 * A cls_bpf filter is not a kernel object a pin can hold, so a clsact attachment is recorded
 * by pinning its program under a marker name that says where the filter is:
 * <pin>@clsact-<direction>-<ifindex>[@netns=<namespace path, URI-encoded>]. With the
 * namespace, uninstall can still reach a live pod's filter without the runtime.
 */
export function clsactMarker(
  pin: string,
  direction: Direction,
  ifindex: number,
  netns?: string,
): string {
  const ns = netns ? `@netns=${encodeURIComponent(netns)}` : "";
  return `${pin}@clsact-${direction}-${ifindex}${ns}`;
}

/** Parses a pin name back into what it records. */
export function describePin(path: string): Attachment {
  const m = /^(.*)@clsact-(ingress|egress)-(\d+)(?:@netns=([^@/]*))?$/.exec(path);
  if (m) {
    return {
      api: "clsact",
      direction: m[2] as Direction,
      ifindex: Number(m[3]),
      pin: path,
      ...(m[4] ? { netns: decodeURIComponent(m[4]) } : {}),
    };
  }
  const info = readPinned(path, linkInfo);
  if (!info) throw new NotFoundError(`no attachment pinned at ${path}`, "nothing to do");
  return {
    api: "tcx",
    ifindex: info.ifindex,
    direction: info.attachType === BPF_TCX_INGRESS ? "ingress" : "egress",
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
    return req.api === "tcx" ? attachTcx(req, ifindex) : attachClsact(req, ifindex);
  });
}

function attachTcx(req: AttachRequest, ifindex: number): Attachment {
  const opts = encode(BpfLinkCreateOpts, {
    sz: BigInt(BpfLinkCreateOpts.size),
    flags: req.first ? BPF_F_BEFORE : BPF_F_AFTER,
  });
  const type = req.direction === "ingress" ? BPF_TCX_INGRESS : BPF_TCX_EGRESS;
  const link = libbpf().bpf_link_create(req.progFd, ifindex, type, opts);
  if (link < 0) {
    const e = -link;
    throw new KernelError(
      `cannot attach to ${req.ifname} ${req.direction} with tcx: ${strerror(e)}`,
      e === Errno.EINVAL
        ? "this kernel has no tcx (before 6.6): use attachMode clsact (or auto)"
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
  return { api: "tcx", ifindex, direction: req.direction, pin: req.pin };
}

function attachClsact(req: AttachRequest, ifindex: number): Attachment {
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
    handle: CLSACT_HANDLE,
    priority: CLSACT_PRIORITY,
  });
  check(
    libbpf().bpf_tc_attach(hook, opts),
    `cannot attach the cls_bpf filter to ${req.ifname} ${req.direction}`,
    "run as root; the kernel needs CONFIG_NET_CLS_BPF",
  );
  const marker = clsactMarker(req.pin, req.direction, ifindex, req.netns);
  try {
    objPin(req.progFd, marker);
  } catch (err) {
    detachClsact(ifindex, req.direction);
    throw err;
  }
  return {
    api: "clsact",
    ifindex,
    direction: req.direction,
    pin: marker,
    ...(req.netns ? { netns: req.netns } : {}),
  };
}

/** The program id of our cls_bpf filter on a hook, in the calling thread's namespace. */
export function clsactProgId(ifindex: number, direction: Direction): number | undefined {
  const opts = encode(BpfTcOpts, {
    sz: BigInt(BpfTcOpts.size),
    handle: CLSACT_HANDLE,
    priority: CLSACT_PRIORITY,
  });
  if (libbpf().bpf_tc_query(tcHook(ifindex, direction), opts) < 0) return undefined;
  return decode(BpfTcOpts, opts).prog_id;
}

function detachClsact(ifindex: number, direction: Direction): void {
  const hook = tcHook(ifindex, direction);
  const opts = encode(BpfTcOpts, {
    sz: BigInt(BpfTcOpts.size),
    handle: CLSACT_HANDLE,
    priority: CLSACT_PRIORITY,
  });
  const r = libbpf().bpf_tc_detach(hook, opts);
  // ENOENT: the filter is gone already (interface or namespace deleted); ENODEV likewise.
  if (r < 0 && r !== -Errno.ENOENT && r !== -Errno.ENODEV && r !== -Errno.EINVAL) {
    check(r, `cannot detach the cls_bpf filter from ifindex ${ifindex}`, "run as root");
  }
}

/** The pins recording attachments under `pin` (the tcx link and/or clsact markers). */
export function pinsOf(pin: string): string[] {
  const slash = pin.lastIndexOf("/");
  const dir = pin.slice(0, slash);
  const base = pin.slice(slash + 1);
  try {
    return [...Deno.readDirSync(dir)]
      .map((e) => e.name)
      .filter((n) => n === base || n.startsWith(base + "@clsact-"))
      .map((n) => `${dir}/${n}`);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
}

/** Where detach() finds the clsact filters a pin records. */
export interface DetachTarget {
  /** Network namespace of the interface (undefined: the caller's). */
  netns?: string;
  /** Only unpin: the filter lives in a namespace the caller cannot name, or that is gone. */
  unpinOnly?: boolean;
  /**
   * Uninstall, where every saver goes whichever pod it serves: detach in the namespace the
   * marker records, while it lives and its filter still runs the marker's program. Not for
   * GC or a DEL without CNI_NETNS: a reused path (/proc/<pid>/ns/net) can name another pod's
   * namespace, whose saver runs the same program on the same ifindex. Without a recorded
   * namespace, only unpin.
   */
  recorded?: boolean;
}

/**
 * Detaches everything pinned under `pin`. Idempotent: missing pins, a deleted interface
 * or a namespace that no longer exists (its filters died with it) are not errors.
 */
export function detach(pin: string, target: DetachTarget = {}): number {
  let n = 0;
  for (const p of pinsOf(pin)) {
    const a = describePinSafe(p);
    if (a?.api === "clsact" && !target.unpinOnly) {
      const netns = target.recorded ? a.netns : target.netns;
      const reachable = target.recorded ? netns !== undefined : true;
      if (reachable && (netns === undefined || exists(netns))) {
        try {
          withNetns(netns, () => {
            if (!target.recorded || clsactProgId(a.ifindex, a.direction) === progIdAt(p)) {
              detachClsact(a.ifindex, a.direction);
            }
          });
        } catch (e) {
          if (!(e instanceof NotFoundError)) throw e;
        }
      }
    }
    // Unpinning the tcx link drops its last reference: the kernel detaches it.
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

/** Programs attached to an interface's tcx hook, in run order. Empty without tcx. */
export function queryTcx(ifname: string, direction: Direction, netns?: string): HookProgram[] {
  return withNetns(netns, () => {
    const ifindex = resolveIfindex(ifname, netns);
    const ids = new Uint32Array(64);
    const opts = encode(BpfProgQueryOpts, {
      sz: BigInt(BpfProgQueryOpts.size),
      prog_ids: addressOf(ids),
      prog_cnt: ids.length,
    });
    const r = libbpf().bpf_prog_query_opts(
      ifindex,
      direction === "ingress" ? BPF_TCX_INGRESS : BPF_TCX_EGRESS,
      opts,
    );
    if (r === -Errno.EINVAL) return [];
    check(r, `cannot query tcx programs on ${ifname}`, "run as root");
    const cnt = new DataView(opts.buffer).getUint32(BpfProgQueryOpts.fields.prog_cnt[0], true);
    return [...ids.subarray(0, cnt)].map((id) => {
      const fd = fdById("prog", id);
      if (fd < 0) return { id, name: "?" };
      try {
        return { id, name: progInfo(fd).name };
      } finally {
        closeFd(fd);
      }
    });
  });
}
