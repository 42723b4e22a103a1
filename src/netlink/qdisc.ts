/**
 * Qdisc operations over rtnetlink: add, replace and delete (requests from qdisc_request.ts,
 * errors explained: a missing sch_<kind> module, a single-queue interface), and the dumps of
 * qdiscs and classes (decoded by qdisc_parse.ts). What to create is decided elsewhere
 * (src/install/qdisc_plan.ts); this layer only encodes, sends and decodes.
 */
import { Errno, ifIndexToName } from "../ffi/libc.ts";
import { encode } from "../ffi/structs/layout.ts";
import { tcmsg } from "../ffi/structs/netlink.ts";
import {
  formatHandle,
  RTM_GETQDISC,
  RTM_GETTCLASS,
  RTM_NEWQDISC,
  RTM_NEWTCLASS,
  TC_H_ROOT,
  TCA_DUMP_INVISIBLE,
} from "./constants.ts";
import { NlRequest } from "./message.ts";
import { type NetlinkFailure, type RequestContext, type RtnlSocket, withRtnl } from "./socket.ts";
import {
  buildQdiscRequest,
  type QdiscOp,
  type QdiscSpec,
  type QdiscTarget,
  resolveTarget,
} from "./qdisc_request.ts";
import {
  type ClassInfo,
  parseQdisc,
  parseStats,
  parseTcObject,
  type QdiscInfo,
} from "./qdisc_parse.ts";

/** Qdisc kinds that live in modules named sch_<kind> on distribution kernels. */
function moduleFor(kind: string): string {
  return `sch_${kind}`;
}

function ifLabel(ifindex: number): string {
  const name = ifIndexToName(ifindex);
  return name ? `${name} (ifindex ${ifindex})` : `ifindex ${ifindex}`;
}

function qdiscContext(
  op: QdiscOp,
  target: QdiscTarget,
  spec: QdiscSpec | undefined,
  kind: string | undefined = spec?.kind,
): RequestContext {
  const { parent, handle } = resolveTarget(target, spec);
  const what = `${op} qdisc ${kind ?? ""} ${handle ? `handle ${formatHandle(handle)} ` : ""}` +
    `parent ${formatHandle(parent)} on ${ifLabel(target.ifindex)}`;
  return {
    what: what.replace(/\s+/g, " "),
    explain: (f: NetlinkFailure) => {
      if (
        op !== "delete" && kind && f.errno === Errno.ENOENT &&
        (f.extack ?? "").includes("kind is unknown")
      ) {
        const mod = moduleFor(kind);
        return {
          message: `${what.replace(/\s+/g, " ")}: this kernel has no "${kind}" qdisc: module ` +
            `${mod} is missing (kernel says "${f.extack}", ENOENT)`,
          hint: `load it with \`modprobe ${mod}\` (Debian ships it in linux-image-*; the kernel ` +
            `needs CONFIG_NET_SCH_${kind.toUpperCase()}), or set qdisc.kind to keep/none`,
        };
      }
      if (kind === "taprio" || kind === "mqprio") {
        if (f.errno === Errno.EOPNOTSUPP && /multi-?queue/i.test(f.extack ?? "")) {
          return {
            message: `${what.replace(/\s+/g, " ")}: ${kind} needs a multi-queue interface ` +
              `(kernel says "${f.extack}", EOPNOTSUPP)`,
            hint: "use the TSN NIC itself (several tx queues), or keep qdisc.kind: keep",
          };
        }
      }
      return undefined;
    },
  };
}

function sendQdisc(
  op: QdiscOp,
  target: QdiscTarget,
  spec: QdiscSpec | undefined,
  sock?: RtnlSocket,
) {
  const req = buildQdiscRequest(op, target, spec);
  withRtnl(sock, (s) => s.request(req, qdiscContext(op, target, spec)));
}

/** Creates or replaces the qdisc at target (NLM_F_CREATE|NLM_F_REPLACE). */
export function replaceQdisc(target: QdiscTarget, spec: QdiscSpec, sock?: RtnlSocket): void {
  sendQdisc("replace", target, spec, sock);
}

/** Creates the qdisc; EEXIST (KernelError) when one with that handle/parent exists. */
export function addQdisc(target: QdiscTarget, spec: QdiscSpec, sock?: RtnlSocket): void {
  sendQdisc("add", target, spec, sock);
}

/**
 * Deletes the qdisc at target.parent (and target.handle when given). Pass kind "clsact" to
 * delete clsact (parent and handle are then implied).
 */
export function deleteQdisc(
  target: QdiscTarget & { kind?: string },
  sock?: RtnlSocket,
): void {
  const spec = target.kind === "clsact" ? { kind: "clsact" as const } : undefined;
  const req = buildQdiscRequest("delete", target, spec);
  withRtnl(sock, (s) => s.request(req, qdiscContext("delete", target, spec, target.kind)));
}

function tcDumpRequest(type: number, ifindex: number): NlRequest {
  const req = new NlRequest(type, 0);
  req.extraHeader(encode(tcmsg, { tcm_ifindex: ifindex }));
  return req;
}

/**
 * Qdiscs on one interface (root, children, clsact/ingress), in the kernel's order. With
 * `invisible`, TCA_DUMP_INVISIBLE asks for the qdiscs tc hides by default as well.
 */
export function listQdiscs(
  ifindex: number,
  sock?: RtnlSocket,
  opts: { invisible?: boolean } = {},
): QdiscInfo[] {
  const req = tcDumpRequest(RTM_GETQDISC, ifindex);
  if (opts.invisible) req.bytes(TCA_DUMP_INVISIBLE, new Uint8Array(0));
  return withRtnl(sock, (s) =>
    s.dump(req, { what: `list qdiscs on ${ifLabel(ifindex)}` })
      .filter((m) => m.type === RTM_NEWQDISC)
      .map(parseQdisc)
      .filter((q) => q.ifindex === ifindex));
}

/**
 * Classes on one interface with their counters: for taprio/mqprio/mq one class per tx queue
 * (major:queue+1) whose counters are those of the queue's child qdisc.
 */
export function listClasses(ifindex: number, sock?: RtnlSocket): ClassInfo[] {
  return withRtnl(sock, (s) => {
    const classes = s.dump(tcDumpRequest(RTM_GETTCLASS, ifindex), {
      what: `list classes on ${ifLabel(ifindex)}`,
    })
      .filter((m) => m.type === RTM_NEWTCLASS)
      .map((m): ClassInfo => {
        const { t, a, kind } = parseTcObject(m);
        return {
          ifindex: t.tcm_ifindex,
          handle: t.tcm_handle,
          parent: t.tcm_parent,
          kind,
          leaf: t.tcm_info,
          stats: parseStats(a),
        };
      })
      .filter((c) => c.ifindex === ifindex);
    const qdiscs = listQdiscs(ifindex, s, { invisible: true });
    for (const c of classes) {
      const child = qdiscs.find((q) => q.parent === c.handle && (!c.leaf || q.handle === c.leaf));
      if (child) c.leafStats = child.stats;
    }
    return classes;
  });
}

/** The root qdisc (parent TC_H_ROOT), if the dump shows one. */
export function rootQdisc(qdiscs: QdiscInfo[]): QdiscInfo | undefined {
  return qdiscs.find((q) => q.parent === TC_H_ROOT);
}
