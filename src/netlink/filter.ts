/**
 * clsact BPF filter listing over RTM_GETTFILTER: which cls_bpf programs sit on an interface's
 * ingress or egress hook, with their program id and direct-action flag. tsnproxy uses it to
 * find its own filters (by name) and to report other CNIs' programs in doctor/status.
 */
import { Errno, ifIndexToName } from "../ffi/libc.ts";
import { decode, encode } from "../ffi/structs/layout.ts";
import { tcmsg } from "../ffi/structs/netlink.ts";
import {
  RTM_GETTFILTER,
  RTM_NEWTFILTER,
  TC_H_CLSACT,
  TC_H_MIN_EGRESS,
  TC_H_MIN_INGRESS,
  TCA_BPF_FLAG_ACT_DIRECT,
  TCA_BPF_FLAGS,
  TCA_BPF_ID,
  TCA_BPF_NAME,
  TCA_BPF_TAG,
  TCA_CHAIN,
  TCA_KIND,
  TCA_OPTIONS,
} from "./constants.ts";
import { Attrs, type NlMessage, NlRequest } from "./message.ts";
import { KernelError } from "../errors.ts";
import { type RtnlSocket, withRtnl } from "./socket.ts";

export type TcDirection = "ingress" | "egress";

export interface BpfFilterInfo {
  direction: TcDirection;
  /** Filter handle inside its priority (tc's "handle 0x1"). */
  handle: number;
  /** tc priority ("pref"). */
  priority: number;
  /** Ethernet protocol in host byte order (0x0003 = ETH_P_ALL, 0x0800 = IPv4). */
  protocol: number;
  chain: number;
  /** Kernel program id (TCA_BPF_ID). */
  progId?: number;
  /** Program name as given at attach time (TCA_BPF_NAME; libbpf leaves it unset). */
  name?: string;
  /** Program tag, hex. */
  tag?: string;
  directAction: boolean;
}

/** The clsact parent handle for a direction (ffff:fff2 ingress, ffff:fff3 egress). */
export function clsactParent(direction: TcDirection): number {
  const min = direction === "ingress" ? TC_H_MIN_INGRESS : TC_H_MIN_EGRESS;
  return ((TC_H_CLSACT & 0xffff0000) | min) >>> 0;
}

function parseFilter(m: NlMessage, direction: TcDirection): BpfFilterInfo | undefined {
  const t = decode(tcmsg, m.payload.subarray(0, tcmsg.size));
  const a = new Attrs(m.payload.subarray(tcmsg.size));
  if (a.str(TCA_KIND) !== "bpf") return undefined;
  const opts = a.nested(TCA_OPTIONS);
  // The dump starts each priority with a header entry without options or handle.
  if (!opts || t.tcm_handle === 0) return undefined;
  const proto = t.tcm_info & 0xffff;
  const out: BpfFilterInfo = {
    direction,
    handle: t.tcm_handle,
    priority: t.tcm_info >>> 16,
    protocol: ((proto & 0xff) << 8) | (proto >>> 8),
    chain: a.u32(TCA_CHAIN) ?? 0,
    directAction: ((opts.u32(TCA_BPF_FLAGS) ?? 0) & TCA_BPF_FLAG_ACT_DIRECT) !== 0,
  };
  const id = opts.u32(TCA_BPF_ID);
  if (id !== undefined) out.progId = id;
  const name = opts.str(TCA_BPF_NAME);
  if (name) out.name = name;
  const tag = opts.raw(TCA_BPF_TAG);
  if (tag) out.tag = Array.from(tag, (b) => b.toString(16).padStart(2, "0")).join("");
  return out;
}

/**
 * BPF filters on the clsact hook of one direction. Empty when the interface has no clsact
 * (the kernel answers such a dump with an error, which is not a failure here).
 */
export function listBpfFilters(
  ifindex: number,
  direction: TcDirection,
  sock?: RtnlSocket,
): BpfFilterInfo[] {
  return withRtnl(sock, (s) => {
    const req = new NlRequest(RTM_GETTFILTER, 0);
    req.extraHeader(encode(tcmsg, { tcm_ifindex: ifindex, tcm_parent: clsactParent(direction) }));
    const name = ifIndexToName(ifindex) ?? `ifindex ${ifindex}`;
    let replies: NlMessage[];
    try {
      replies = s.dump(req, { what: `list ${direction} tc filters on ${name}` });
    } catch (e) {
      if (e instanceof KernelError && (e.errno === Errno.EINVAL || e.errno === Errno.ENOENT)) {
        return [];
      }
      throw e;
    }
    return replies
      .filter((m) => m.type === RTM_NEWTFILTER)
      .map((m) => parseFilter(m, direction))
      .filter((f): f is BpfFilterInfo => f !== undefined);
  });
}
