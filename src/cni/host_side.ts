/**
 * The pod interface's other end in the node's namespace, where admit runs: the peer of a
 * veth pair, or the primary device of a netkit pair. Found by the pod interface's IFLA_LINK
 * (the peer's ifindex in the node's namespace) and checked both ways; the Result's host
 * interfaces disambiguate an ifindex that exists in several namespaces.
 */
import { NotFoundError } from "../errors.ts";
import type { HostSide } from "../bpf/pod.ts";
import { withNetns } from "../util/netns.ts";
import { hostInterfaces, type JsonObject } from "./protocol.ts";

const HINT = "tsnproxy needs a pod interface with a host-side end in the node's namespace: a " +
  "veth (bridge, ptp, Flannel, Calico, kindnet, Cilium) or a netkit pair (Cilium's netkit " +
  "mode). ipvlan, macvlan and SR-IOV interfaces have none and are not supported";

export async function findHostSide(
  netns: string,
  ifname: string,
  prev: JsonObject,
): Promise<HostSide> {
  const { findLink, getLink } = await import("../netlink/link.ts");
  const pod = withNetns(netns, () => getLink(ifname));
  const kind = pod.kind;
  if ((kind !== "veth" && kind !== "netkit") || pod.link === undefined) {
    throw new NotFoundError(`${ifname} in ${netns} is a ${kind ?? "device"} without a peer`, HINT);
  }
  // The two ends name each other: the host end's peer is the pod end's index in the pod's
  // namespace (2 for every pod's eth0), and the pod end's peer is the host end's index here.
  // Both must hold: the first alone matches any pod's host veth.
  const pairs = (name: string | number) => {
    const l = findLink(name);
    return l?.kind === kind && l.link === pod.index && l.index === pod.link ? l : undefined;
  };
  for (const name of hostInterfaces(prev)) {
    const l = pairs(name);
    if (l) return { name: l.name, index: l.index, kind };
  }
  const l = pairs(pod.link);
  if (l) return { name: l.name, index: l.index, kind };
  throw new NotFoundError(`the host-side end of ${ifname} in ${netns} was not found`, HINT);
}
