/**
 * Which carrier takes a pod's admitted metadata to the restorer (bpf/tsnproxy.h), and where
 * admit attaches, decided from the facts at hand: at install, the node's devices (another
 * datapath's programs on the bridge, the overlay or the TSN NIC make the tag unsafe for every
 * pod: tsnp_config's TAGS flag); at each ADD, after the primary CNI attached its own
 * programs, the pod's host-side interface.
 *
 * The tag is safe only where nothing but tsnproxy reads or writes skb->tc_index on the
 * packet's way from admit to the restorer: Cilium keeps its own flags there, read and
 * cleared in its host-veth, host and overlay programs, and a classic tc filter returning
 * TC_ACT_OK resets it. Any program we did not write on the way makes the stage the carrier.
 */
import type { AttachApi, TcApi } from "./attach.ts";
import type { Carrier } from "./maps.ts";
import { describeProgram, type HookProgram } from "./hooks.ts";

/** The node config's `carrier`. */
export type CarrierSetting = "auto" | "tag" | "table";

/** Reason codes, stored in tsnp_pods (struct tsnp_pod.reason) for status and doctor. */
export const REASONS = {
  unknown: 0,
  clean: 1,
  forcedTag: 2,
  forcedTable: 3,
  foreignOnHost: 4,
  foreignOnNode: 5,
  admitOnly: 6,
} as const;
export type ReasonName = keyof typeof REASONS;

const REASON_TEXT: Record<ReasonName, string> = {
  unknown: "unknown (written by another build)",
  clean: "nothing else on the pod's way reads or writes tc_index",
  forcedTag: "the node config forces it (carrier: tag)",
  forcedTable: "the node config forces it (carrier: table)",
  foreignOnHost: "another datapath's programs run on the pod's host interface",
  foreignOnNode: "another datapath's programs run on the node's devices",
  admitOnly: "restoreAt host-veth-ingress: admit restores on the host side, nothing is carried",
};

/** The reason a code in tsnp_pods or tsnp_config stands for ("unknown": another build's). */
export function reasonName(code: number): ReasonName {
  return (Object.keys(REASONS) as ReasonName[]).find((k) => REASONS[k] === code) ?? "unknown";
}

export function reasonText(code: number): string {
  return REASON_TEXT[reasonName(code)];
}

export interface CarrierChoice {
  carrier: Carrier;
  reason: ReasonName;
  /** The programs behind a foreignOnHost/foreignOnNode reason. */
  programs?: string[];
}

/** The node-wide part (install, agent): may any pod use the tag? */
export function chooseNodeCarrier(
  setting: CarrierSetting,
  nodeForeign: readonly HookProgram[],
): CarrierChoice {
  if (setting === "table") return { carrier: "stage", reason: "forcedTable" };
  if (setting === "tag") return { carrier: "tag", reason: "forcedTag" };
  if (nodeForeign.length) {
    return {
      carrier: "stage",
      reason: "foreignOnNode",
      programs: nodeForeign.map(describeProgram),
    };
  }
  return { carrier: "tag", reason: "clean" };
}

/** The pod's part (CNI ADD): the node's choice, then what runs on its host interface. */
export function choosePodCarrier(
  opts: { restoreAt: "tsn-egress" | "host-veth-ingress"; node: CarrierChoice },
  hostForeign: readonly HookProgram[],
): CarrierChoice {
  if (opts.restoreAt === "host-veth-ingress") return { carrier: "none", reason: "admitOnly" };
  if (opts.node.carrier !== "tag" || opts.node.reason === "forcedTag") return opts.node;
  if (hostForeign.length) {
    return {
      carrier: "stage",
      reason: "foreignOnHost",
      programs: hostForeign.map(describeProgram),
    };
  }
  return { carrier: "tag", reason: "clean" };
}

/**
 * Where admit attaches on the pod's host interface. It must run before every other program
 * there: netkit's peer hook for a netkit pair; tcx with BPF_F_BEFORE when the kernel has tcx
 * and either the setting asks for it or another program sits on tcx (which runs before
 * every clsact filter, whatever the setting says); else a clsact filter at priority 1,
 * ahead of other filters, which costs an ADD no RCU grace period (see features.ts).
 */
export function admitApi(
  kind: "veth" | "netkit",
  mode: "auto" | TcApi,
  hasTcx: boolean,
  hostPrograms: readonly HookProgram[],
): AttachApi {
  if (kind === "netkit") return "netkit";
  const foreignTcx = hostPrograms.some((p) => p.hook === "tcx" && !p.ours);
  // Safety before the setting: behind another tcx program admit would clear nothing.
  if (hasTcx && (mode === "tcx" || foreignTcx)) return "tcx";
  return "clsact";
}
