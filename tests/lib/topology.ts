/**
 * A throwaway node in network namespaces, shaped like a Kubernetes node with a bridge CNI:
 *
 *   pod netns (eth0 10.244.0.x, fd00:244::x) --veth--> node netns: br0 (10.244.0.1,
 *   fd00:244::1), ip_forward, nftables MASQUERADE out of tsn0 and a DNAT rule standing in
 *   for a ClusterIP Service (10.96.0.10:80 / [fd00:96::10]:80 -> far end :8080)
 *   --> tsn0 (198.18.0.1, 2001:db8:18::1) --veth--> far netns (far0 198.18.0.2, ...::2)
 *
 * With `secondTsn`, a second TSN NIC to a second far end, routing splitting the destinations
 * between the two: tsn1 (198.19.0.1, 2001:db8:19::1) --veth--> far2 netns (far1 198.19.0.2,
 * ...::2, and 203.0.113.2 on its loopback, reached through a route via tsn1).
 *
 * All addresses live only inside these namespaces, made with ./netns.ts.
 */
import { type Child, netnsPath, randomId, spawn } from "./run.ts";
import { addBridge, addVeth, Netns } from "./netns.ts";

export const SERVICE_V4 = "10.96.0.10";
export const SERVICE_V6 = "fd00:96::10";
export const FAR_V4 = "198.18.0.2";
export const FAR_V6 = "2001:db8:18::2";
export const NODE_TSN_V4 = "198.18.0.1";
/** The second far end (secondTsn), on tsn1's subnet. */
export const FAR2_V4 = "198.19.0.2";
export const FAR2_V6 = "2001:db8:19::2";
/** An address behind the second far end: the node routes it via tsn1 (secondTsn). */
export const FAR2_ROUTED_V4 = "203.0.113.2";
/** The far end's address inside the VXLAN overlay (see addOverlay). */
export const OVERLAY_FAR_V4 = "10.250.0.2";
/** VXLAN's IANA port: the outer UDP packets on tsn0 go to it. */
export const VXLAN_PORT = 4789;

export interface Pod {
  name: string;
  netns: string;
  /** /run/netns/<name> */
  netnsPath: string;
  ifname: "eth0";
  hostVeth: string;
  ipv4: string;
  ipv6: string;
}

export interface Topology {
  id: string;
  node: string;
  nodePath: string;
  far: string;
  farPath: string;
  /** The second far end's namespace (secondTsn; undefined otherwise). */
  far2?: string;
  pods: Pod[];
  addPod(): Promise<Pod>;
  /**
   * A VXLAN overlay from the node to the far end over tsn0, the way Flannel's default
   * backend carries pod traffic between nodes: 10.250.0.1 (node) - 10.250.0.2 (far end), the
   * far end routing the pod network back through it. Pod packets to OVERLAY_FAR_V4 leave
   * tsn0 encapsulated, as packets the node itself sends.
   */
  addOverlay(): Promise<void>;
  destroy(): Promise<void>;
}

/**
 * Traffic sinks on the far end: UDP and TCP on port 8080 (IPv4 and IPv6), so what pods send
 * there is taken (no ICMP port unreachable). The caller stops them before topo.destroy().
 */
export function farSinks(topo: Pick<Topology, "far">): Child[] {
  return ["UDP6-RECV:8080,ipv6only=0", "TCP6-LISTEN:8080,ipv6only=0,reuseaddr,fork"].map((l) =>
    spawn(["socat", "-u", l, "/dev/null"], { netns: topo.far, stdout: "null", stderr: "null" })
  );
}

export async function createTopology(
  opts: { pods?: number; tsnTxQueues?: number; bridge?: boolean; secondTsn?: boolean } = {},
): Promise<Topology> {
  const id = randomId();
  const created: Netns[] = [];
  const make = async (name: string) => {
    const ns = await Netns.create({ name });
    created.push(ns);
    return ns;
  };
  const pods: Pod[] = [];
  const q = opts.tsnTxQueues ?? 1;
  const tsnQueues = { txQueues: q, rxQueues: q };
  const names = {
    node: `tn-node-${id}`,
    far: `tn-far-${id}`,
    far2: opts.secondTsn ? `tn-far2-${id}` : undefined,
  };
  let node: Netns | undefined;

  const topo: Topology = {
    id,
    node: names.node,
    nodePath: netnsPath(names.node),
    far: names.far,
    farPath: netnsPath(names.far),
    far2: names.far2,
    pods,
    async addPod() {
      const n = pods.length;
      const pod: Pod = {
        name: `tn-pod${n}-${id}`,
        netns: `tn-pod${n}-${id}`,
        netnsPath: netnsPath(`tn-pod${n}-${id}`),
        ifname: "eth0",
        hostVeth: `tnv${n}${id}`.slice(0, 15),
        ipv4: `10.244.0.${10 + n}`,
        ipv6: `fd00:244::${(10 + n).toString(16)}`,
      };
      const ns = await make(pod.name);
      await addVeth({ name: "eth0", netns: ns }, { name: pod.hostVeth, netns: node! }, {
        up: false,
      });
      await ns.ip("link", "set", "eth0", "up");
      await ns.ip("addr", "add", `${pod.ipv4}/24`, "dev", "eth0");
      await ns.ip("addr", "add", `${pod.ipv6}/64`, "dev", "eth0", "nodad");
      await ns.ip("route", "add", "default", "via", "10.244.0.1");
      await ns.ip("-6", "route", "add", "default", "via", "fd00:244::1");
      // unprivileged ICMP echo sockets, as a pod's ping has
      await ns.run(["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"]);
      await node!.ip("link", "set", pod.hostVeth, "master", "br0");
      await node!.ip("link", "set", pod.hostVeth, "up");
      pods.push(pod);
      return pod;
    },
    async addOverlay() {
      const vxlan = (ns: Netns, local: string, remote: string, dev: string) =>
        ns.ip(
          ...["link", "add", "vxlan0", "type", "vxlan", "id", "42"],
          ...["local", local, "remote", remote, "dstport", String(VXLAN_PORT), "dev", dev],
        );
      const far = created.find((n) => n.name === names.far)!;
      await vxlan(node!, NODE_TSN_V4, FAR_V4, "tsn0");
      await node!.ip("addr", "add", "10.250.0.1/24", "dev", "vxlan0");
      await node!.ip("link", "set", "vxlan0", "up");
      await vxlan(far, FAR_V4, NODE_TSN_V4, "far0");
      await far.ip("addr", "add", `${OVERLAY_FAR_V4}/24`, "dev", "vxlan0");
      await far.ip("link", "set", "vxlan0", "up");
      await far.ip("route", "add", "10.244.0.0/24", "via", "10.250.0.1");
    },
    async destroy() {
      for (const n of created.reverse()) await n.delete();
      created.length = 0;
    },
  };

  try {
    node = await make(names.node);
    const far = await make(names.far);
    const far2 = names.far2 ? await make(names.far2) : undefined;
    const nft = [
      "table inet tsnp_test {",
      "  chain pre { type nat hook prerouting priority dstnat;",
      `    ip daddr ${SERVICE_V4} udp dport 80 dnat ip to ${FAR_V4}:8080`,
      `    ip daddr ${SERVICE_V4} tcp dport 80 dnat ip to ${FAR_V4}:8080`,
      `    ip6 daddr ${SERVICE_V6} udp dport 80 dnat ip6 to [${FAR_V6}]:8080`,
      `    ip6 daddr ${SERVICE_V6} tcp dport 80 dnat ip6 to [${FAR_V6}]:8080`,
      "  }",
      "  chain post { type nat hook postrouting priority srcnat;",
      '    oifname { "tsn0", "tsn1" } masquerade',
      "  }",
      "}",
    ].join("\n");
    // Without `bridge` a CNI bridge plugin creates the pods' bridge and gateway itself.
    if (opts.bridge !== false) {
      await addBridge("br0", { netns: node, up: false });
      await node.ip("addr", "add", "10.244.0.1/24", "dev", "br0");
      await node.ip("addr", "add", "fd00:244::1/64", "dev", "br0", "nodad");
      await node.ip("link", "set", "br0", "up");
    }
    await addVeth({ name: "tsn0", netns: node, ...tsnQueues }, { name: "far0", netns: far }, {
      up: false,
    });
    await node.ip("addr", "add", `${NODE_TSN_V4}/24`, "dev", "tsn0");
    await node.ip("addr", "add", "2001:db8:18::1/64", "dev", "tsn0", "nodad");
    await node.ip("link", "set", "tsn0", "up");
    await far.ip("addr", "add", `${FAR_V4}/24`, "dev", "far0");
    await far.ip("addr", "add", `${FAR_V6}/64`, "dev", "far0", "nodad");
    await far.ip("link", "set", "far0", "up");
    await node.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    await node.run(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    if (far2) {
      await addVeth({ name: "tsn1", netns: node, ...tsnQueues }, { name: "far1", netns: far2 }, {
        up: false,
      });
      await node.ip("addr", "add", "198.19.0.1/24", "dev", "tsn1");
      await node.ip("addr", "add", "2001:db8:19::1/64", "dev", "tsn1", "nodad");
      await node.ip("link", "set", "tsn1", "up");
      await node.ip("route", "add", `${FAR2_ROUTED_V4}/32`, "via", FAR2_V4, "dev", "tsn1");
      await far2.ip("addr", "add", `${FAR2_ROUTED_V4}/32`, "dev", "lo");
      await far2.ip("addr", "add", `${FAR2_V4}/24`, "dev", "far1");
      await far2.ip("addr", "add", `${FAR2_V6}/64`, "dev", "far1", "nodad");
      await far2.ip("link", "set", "far1", "up");
    }
    await node.run(["nft", "-f", "-"], { stdin: nft });
    for (let i = 0; i < (opts.pods ?? 1); i++) await topo.addPod();
    return topo;
  } catch (e) {
    await topo.destroy();
    throw e;
  }
}
