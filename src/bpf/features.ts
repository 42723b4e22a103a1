/** Kernel feature probes the loader and doctor use. Cheap: no program loads. */
import { Errno } from "../ffi/libc.ts";
import { libbpf } from "../ffi/libbpf.ts";
import { BPF_TCX_EGRESS, BpfProgQueryOpts } from "../ffi/structs/bpf.ts";
import { encode } from "../ffi/structs/layout.ts";
import type { TcApi } from "./attach.ts";

let tcx: boolean | undefined;

/** tcx exists when BPF_PROG_QUERY accepts BPF_TCX_EGRESS (on lo, always ifindex 1). */
export function hasTcx(): boolean {
  if (tcx !== undefined) return tcx;
  const ids = new Uint32Array(8);
  const opts = encode(BpfProgQueryOpts, {
    sz: BigInt(BpfProgQueryOpts.size),
    prog_ids: BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(ids))),
    prog_cnt: ids.length,
  });
  const r = libbpf().bpf_prog_query_opts(1, BPF_TCX_EGRESS, opts);
  tcx = r >= 0 || (r !== -Errno.EINVAL && r !== -Errno.EOPNOTSUPP);
  return tcx;
}

/** The tc API for an attach-mode setting ("auto": tcx where the kernel has it). */
export function resolveTcApi(mode: "auto" | TcApi | undefined): TcApi {
  if (mode === "tcx" || mode === "clsact") return mode;
  const env = Deno.env.get("TSNPROXY_ATTACH_MODE");
  if (env === "tcx" || env === "clsact") return env;
  return hasTcx() ? "tcx" : "clsact";
}
