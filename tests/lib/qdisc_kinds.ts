/**
 * Which qdisc kinds the running kernel has, asked of the kernel itself (module files and
 * /sys/module do not tell: a built-in qdisc without parameters shows in neither, and the
 * Debian guests load theirs from the checkout): RTM_NEWQDISC of the kind, without options,
 * on `lo` of a throwaway netns. An unknown kind is refused with ENOENT before anything else;
 * a known one fails its option check (EINVAL) and creates nothing. The kernel may load the
 * module on the way (request_module), as it would for the test itself.
 *
 * For tests that need a kind: `ignore: !have.taprio` plus `ignoredBecause()` printed once,
 * so a missing kernel feature is visible instead of a silent early return.
 */
import { KernelError } from "../../src/errors.ts";
import { Errno } from "../../src/ffi/libc.ts";
import { encode } from "../../src/ffi/structs/layout.ts";
import { tcmsg } from "../../src/ffi/structs/netlink.ts";
import {
  NLM_F_CREATE,
  NLM_F_EXCL,
  NlRequest,
  RTM_NEWQDISC,
  RtnlSocket,
  TC_H_ROOT,
  TCA_KIND,
} from "../../src/netlink/mod.ts";
import { withNetns } from "../../src/util/netns.ts";
import { Netns } from "./netns.ts";

const LO = 1; // ifindex of lo in every netns

function request(kind: string): NlRequest {
  const req = new NlRequest(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL);
  req.extraHeader(encode(tcmsg, { tcm_ifindex: LO, tcm_parent: TC_H_ROOT }));
  req.strz(TCA_KIND, kind);
  return req;
}

/** kind -> whether this kernel has it. */
export async function qdiscKinds<K extends string>(...kinds: K[]): Promise<Record<K, boolean>> {
  await using ns = await Netns.create({ prefix: "tsnp-probe", lo: false });
  return withNetns(ns.path, () => {
    using s = RtnlSocket.open();
    const out = {} as Record<K, boolean>;
    for (const kind of kinds) {
      try {
        s.request(request(kind), { what: `probe qdisc ${kind}` });
        out[kind] = true; // accepted without options (clsact, mq): it goes with the netns
      } catch (e) {
        if (!(e instanceof KernelError)) throw e;
        out[kind] = e.errno !== Errno.ENOENT;
      }
    }
    return out;
  });
}

/** "this kernel (6.18...) has no sch_taprio, sch_etf" for a test's printed ignore reason. */
export function ignoredBecause(have: Record<string, boolean>): string {
  const missing = Object.entries(have).filter(([, v]) => !v).map(([k]) => `sch_${k}`);
  return `this kernel (${Deno.osRelease()}) has no ${missing.join(", ")}`;
}
