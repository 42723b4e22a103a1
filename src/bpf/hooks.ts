/**
 * What runs on a device's hooks: every BPF program on its tcx, clsact and (for netkit) peer
 * hooks, in run order, ours marked. The carrier choice (./carrier.ts) and doctor read it:
 * another datapath's program between admit and the restorer decides whether the tag is safe.
 */
import { type Direction, queryHook } from "./attach.ts";
import { listBpfFilters } from "../netlink/filter.ts";
import { progNameById } from "./sys.ts";
import { withNetns } from "../util/netns.ts";
import { ifNameToIndex } from "../ffi/libc.ts";

export type HookKind = "tcx" | "clsact" | "netkit";

export interface HookProgram {
  hook: HookKind;
  direction: Direction;
  id: number;
  name: string;
  /** Position in run order on its hook (0 first). tcx runs before clsact. */
  order: number;
  /** One of tsnproxy's programs (any release). */
  ours: boolean;
}

/** tsnproxy's program names, of every release (0.1.0 had tsnp_gc_start too). */
export function isOurProgram(name: string): boolean {
  return /^tsnp_(save|admit|restore|gc_start)$/.test(name);
}

/**
 * Programs on one direction of a device, in run order: its tcx programs, then its clsact
 * filters by priority; with `netkit`, the peer hook (which runs when the pod transmits)
 * instead of tcx ingress.
 */
export function programsOn(
  ifname: string,
  direction: Direction,
  opts: { netns?: string; netkit?: boolean } = {},
): HookProgram[] {
  const out: HookProgram[] = [];
  const links = opts.netkit && direction === "ingress"
    ? queryHook(ifname, direction, opts.netns, "netkit")
    : queryHook(ifname, direction, opts.netns, "tcx");
  links.forEach((p, i) =>
    out.push({
      hook: opts.netkit && direction === "ingress" ? "netkit" : "tcx",
      direction,
      id: p.id,
      name: p.name,
      order: i,
      ours: isOurProgram(p.name),
    })
  );
  const filters = withNetns(opts.netns, () => {
    const ifindex = ifNameToIndex(ifname);
    return ifindex ? listBpfFilters(ifindex, direction) : [];
  }).sort((a, b) => a.priority - b.priority || a.chain - b.chain);
  filters.forEach((f, i) => {
    const name = f.progId !== undefined ? progNameById(f.progId) ?? "?" : (f.name ?? "?");
    out.push({
      hook: "clsact",
      direction,
      id: f.progId ?? 0,
      name,
      order: i,
      ours: isOurProgram(name),
    });
  });
  return out;
}

/** The programs on a hook that are not ours. */
export function foreign(programs: readonly HookProgram[]): HookProgram[] {
  return programs.filter((p) => !p.ours);
}

export function describeProgram(p: HookProgram): string {
  return `${p.name} (id ${p.id}, ${p.hook} ${p.direction} #${p.order})`;
}
