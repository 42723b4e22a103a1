/** Kernel feature probes the loader and doctor use. Cheap: no program loads. */
import { Errno } from "../ffi/libc.ts";
import { libbpf } from "../ffi/libbpf.ts";
import { BPF_TCX_EGRESS, BpfProgQueryOpts } from "../ffi/structs/bpf.ts";
import { encode } from "../ffi/structs/layout.ts";
import type { TcApi } from "./attach.ts";
import { addressOf } from "../ffi/open.ts";

let tcx: boolean | undefined;

/** tcx exists when BPF_PROG_QUERY accepts BPF_TCX_EGRESS (on lo, always ifindex 1). */
export function hasTcx(): boolean {
  if (tcx !== undefined) return tcx;
  const ids = new Uint32Array(8);
  const opts = encode(BpfProgQueryOpts, {
    sz: BigInt(BpfProgQueryOpts.size),
    prog_ids: addressOf(ids),
    prog_cnt: ids.length,
  });
  const r = libbpf().bpf_prog_query_opts(1, BPF_TCX_EGRESS, opts);
  tcx = r >= 0 || (r !== -Errno.EINVAL && r !== -Errno.EOPNOTSUPP);
  return tcx;
}

function explicitApi(mode: "auto" | TcApi | undefined): TcApi | undefined {
  if (mode === "tcx" || mode === "clsact") return mode;
  const env = Deno.env.get("TSNPROXY_ATTACH_MODE");
  return env === "tcx" || env === "clsact" ? env : undefined;
}

/**
 * The tc API for node devices (the TSN NIC, host veths) under an attach-mode setting
 * ("auto": tcx where the kernel has it, to run in a defined order beside other datapaths).
 */
export function resolveTcApi(mode: "auto" | TcApi | undefined): TcApi {
  return explicitApi(mode) ?? (hasTcx() ? "tcx" : "clsact");
}

/**
 * The tc API for a pod's saver, inside the pod's namespace. "auto" is clsact on every kernel:
 * a tcx attach (and detach) holds RTNL through a full RCU grace period (tcx_entry_sync), ~12
 * ms of every ADD here and serialising the node's concurrent ADDs, where adding the first
 * cls_bpf filter costs an expedited one at most. What tcx adds, ordering among several
 * programs on one hook, matters on node devices shared with other datapaths, not in a pod's
 * own namespace; uninstall reaches clsact filters through the namespace their pin records.
 */
export function resolvePodTcApi(mode: "auto" | TcApi | undefined): TcApi {
  return explicitApi(mode) ?? "clsact";
}
