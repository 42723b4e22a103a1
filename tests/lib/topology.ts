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
 * All addresses live only inside these namespaces.
 */
import { randomId, run, runAll } from "./run.ts";

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
  /** Runs argv inside a namespace (ip netns exec). */
  exec(
    ns: string,
    argv: string[],
    allowFail?: boolean,
  ): Promise<{ code: number; stdout: string; stderr: string }>;
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

const nsPath = (n: string) => `/run/netns/${n}`;

export async function createTopology(
  opts: { pods?: number; tsnTxQueues?: number; bridge?: boolean; secondTsn?: boolean } = {},
): Promise<Topology> {
  const id = randomId();
  const node = `tn-node-${id}`;
  const far = `tn-far-${id}`;
  const far2 = opts.secondTsn ? `tn-far2-${id}` : undefined;
  const pods: Pod[] = [];
  const created: string[] = [];
  const ip = (...a: string[]) => ["ip", ...a];
  const inNode = (...a: string[]) => ["ip", "-n", node, ...a];
  const q = String(opts.tsnTxQueues ?? 1);

  const topo: Topology = {
    id,
    node,
    nodePath: nsPath(node),
    far,
    farPath: nsPath(far),
    far2,
    pods,
    exec: (ns, argv, allowFail = false) => run(["ip", "netns", "exec", ns, ...argv], { allowFail }),
    async addPod() {
      const n = pods.length;
      const name = `tn-pod${n}-${id}`;
      const hostVeth = `tnv${n}${id}`.slice(0, 15);
      await run(ip("netns", "add", name));
      created.push(name);
      await runAll([
        ip(
          "link",
          "add",
          "eth0",
          "netns",
          name,
          "type",
          "veth",
          "peer",
          "name",
          hostVeth,
          "netns",
          node,
        ),
        ip("-n", name, "link", "set", "lo", "up"),
        ip("-n", name, "link", "set", "eth0", "up"),
        ip("-n", name, "addr", "add", `10.244.0.${10 + n}/24`, "dev", "eth0"),
        ip(
          "-n",
          name,
          "addr",
          "add",
          `fd00:244::${(10 + n).toString(16)}/64`,
          "dev",
          "eth0",
          "nodad",
        ),
        ip("-n", name, "route", "add", "default", "via", "10.244.0.1"),
        ip("-n", name, "-6", "route", "add", "default", "via", "fd00:244::1"),
        // unprivileged ICMP echo sockets, as a pod's ping has
        ["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"],
        inNode("link", "set", hostVeth, "master", "br0"),
        inNode("link", "set", hostVeth, "up"),
      ]);
      const pod: Pod = {
        name,
        netns: name,
        netnsPath: nsPath(name),
        ifname: "eth0",
        hostVeth,
        ipv4: `10.244.0.${10 + n}`,
        ipv6: `fd00:244::${(10 + n).toString(16)}`,
      };
      pods.push(pod);
      return pod;
    },
    async addOverlay() {
      const vxlan = (ns: string, local: string, remote: string, dev: string) => [
        ...ip("-n", ns, "link", "add", "vxlan0", "type", "vxlan", "id", "42"),
        ...["local", local, "remote", remote, "dstport", String(VXLAN_PORT), "dev", dev],
      ];
      await runAll([
        vxlan(node, NODE_TSN_V4, FAR_V4, "tsn0"),
        inNode("addr", "add", "10.250.0.1/24", "dev", "vxlan0"),
        inNode("link", "set", "vxlan0", "up"),
        vxlan(far, FAR_V4, NODE_TSN_V4, "far0"),
        ip("-n", far, "addr", "add", `${OVERLAY_FAR_V4}/24`, "dev", "vxlan0"),
        ip("-n", far, "link", "set", "vxlan0", "up"),
        ip("-n", far, "route", "add", "10.244.0.0/24", "via", "10.250.0.1"),
      ]);
    },
    async destroy() {
      for (const n of created.reverse()) await run(ip("netns", "del", n), { allowFail: true });
      created.length = 0;
    },
  };

  try {
    for (const n of [node, far, ...(far2 ? [far2] : [])]) {
      await run(ip("netns", "add", n));
      created.push(n);
    }
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
    await runAll([
      inNode("link", "set", "lo", "up"),
      // Without `bridge` a CNI bridge plugin creates the pods' bridge and gateway itself.
      ...(opts.bridge === false ? [] : [
        inNode("link", "add", "br0", "type", "bridge"),
        inNode("addr", "add", "10.244.0.1/24", "dev", "br0"),
        inNode("addr", "add", "fd00:244::1/64", "dev", "br0", "nodad"),
        inNode("link", "set", "br0", "up"),
      ]),
      inNode(
        "link",
        "add",
        "tsn0",
        "numtxqueues",
        q,
        "numrxqueues",
        q,
        "type",
        "veth",
        "peer",
        "name",
        "far0",
        "netns",
        far,
      ),
      inNode("addr", "add", `${NODE_TSN_V4}/24`, "dev", "tsn0"),
      inNode("addr", "add", "2001:db8:18::1/64", "dev", "tsn0", "nodad"),
      inNode("link", "set", "tsn0", "up"),
      ip("-n", far, "link", "set", "lo", "up"),
      ip("-n", far, "addr", "add", `${FAR_V4}/24`, "dev", "far0"),
      ip("-n", far, "addr", "add", `${FAR_V6}/64`, "dev", "far0", "nodad"),
      ip("-n", far, "link", "set", "far0", "up"),
      ["ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
      ["ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"],
    ]);
    if (far2) {
      await runAll([
        inNode(
          "link",
          "add",
          "tsn1",
          "numtxqueues",
          q,
          "numrxqueues",
          q,
          "type",
          "veth",
          "peer",
          "name",
          "far1",
          "netns",
          far2,
        ),
        inNode("addr", "add", "198.19.0.1/24", "dev", "tsn1"),
        inNode("addr", "add", "2001:db8:19::1/64", "dev", "tsn1", "nodad"),
        inNode("link", "set", "tsn1", "up"),
        inNode("route", "add", `${FAR2_ROUTED_V4}/32`, "via", FAR2_V4, "dev", "tsn1"),
        ip("-n", far2, "link", "set", "lo", "up"),
        ip("-n", far2, "addr", "add", `${FAR2_ROUTED_V4}/32`, "dev", "lo"),
        ip("-n", far2, "addr", "add", `${FAR2_V4}/24`, "dev", "far1"),
        ip("-n", far2, "addr", "add", `${FAR2_V6}/64`, "dev", "far1", "nodad"),
        ip("-n", far2, "link", "set", "far1", "up"),
      ]);
    }
    await run(["ip", "netns", "exec", node, "nft", "-f", "-"], { stdin: nft });
    for (let i = 0; i < (opts.pods ?? 1); i++) await topo.addPod();
    return topo;
  } catch (e) {
    await topo.destroy();
    throw e;
  }
}
