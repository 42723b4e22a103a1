/**
 * kube-proxy's Service datapath, written by hand in each of its modes the way kube-proxy
 * lays it out (pkg/proxy/iptables, pkg/proxy/nftables, pkg/proxy/ipvs in kubernetes; chain,
 * map and mark conventions only, no code): one UDP+TCP Service with a ClusterIP and a
 * NodePort whose endpoint is the far end, so a pod's packets to either leave the TSN NIC
 * DNAT'd (and, for the NodePort, masqueraded).
 *
 * kube-proxy's own bit in skb->mark is 0x4000 (KUBE-MARK-MASQ / mark-for-masquerade, its
 * default masqueradeBit 14). Each mode adds a counter, first in the nat/mangle PREROUTING
 * path, of pod packets that ARRIVE with that bit already set: it must stay 0.
 */
import { run } from "./run.ts";

export type KubeProxyMode = "iptables" | "nftables" | "ipvs";

export interface KubeService {
  clusterIp: string;
  port: number;
  nodePort: number;
  /** The endpoint: ip and port. */
  endpoint: string;
  endpointPort: number;
  /** The cluster's pod CIDR (kube-proxy's clusterCIDR). */
  podCidr: string;
}

export const KUBE_MARK_MASQ = 0x4000;

function iptablesRestore(s: KubeService): string {
  const svc = "KUBE-SVC-TSNPSTANDIN00",
    sep = "KUBE-SEP-TSNPSTANDIN00",
    ext = "KUBE-EXT-TSNPSTANDIN00";
  const lines = [
    "*mangle",
    ":TSNP-KUBE-MARK-SEEN - [0:0]",
    "-A PREROUTING -j TSNP-KUBE-MARK-SEEN",
    // Counts only (no target): pod packets that arrive carrying kube-proxy's bit.
    `-A TSNP-KUBE-MARK-SEEN -s ${s.podCidr} -m mark --mark 0x4000/0x4000`,
    "COMMIT",
    "*nat",
    ":KUBE-SERVICES - [0:0]",
    ":KUBE-NODEPORTS - [0:0]",
    ":KUBE-POSTROUTING - [0:0]",
    ":KUBE-MARK-MASQ - [0:0]",
    `:${svc} - [0:0]`,
    `:${sep} - [0:0]`,
    `:${ext} - [0:0]`,
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
    "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
    "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
    "-A KUBE-POSTROUTING -j MASQUERADE --random-fully",
  ];
  for (const proto of ["udp", "tcp"]) {
    lines.push(
      `-A KUBE-SERVICES -d ${s.clusterIp}/32 -p ${proto} -m ${proto} --dport ${s.port} -j ${svc}`,
      `-A KUBE-NODEPORTS -p ${proto} -m ${proto} --dport ${s.nodePort} -j ${ext}`,
      `-A ${svc} ! -s ${s.podCidr} -d ${s.clusterIp}/32 -p ${proto} -m ${proto} ` +
        `--dport ${s.port} -j KUBE-MARK-MASQ`,
    );
  }
  lines.push(
    "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
    `-A ${ext} -j KUBE-MARK-MASQ`,
    `-A ${ext} -j ${svc}`,
    `-A ${svc} -j ${sep}`,
    `-A ${sep} -s ${s.endpoint}/32 -j KUBE-MARK-MASQ`,
    `-A ${sep} -p udp -j DNAT --to-destination ${s.endpoint}:${s.endpointPort}`,
    `-A ${sep} -p tcp -j DNAT --to-destination ${s.endpoint}:${s.endpointPort}`,
    "COMMIT",
  );
  return lines.join("\n") + "\n";
}

function nftTable(s: KubeService): string {
  // kube-proxy's own names carry namespace/name/protocol/port ("service-HASH-ns/svc/tcp/p80"),
  // which the nft 1.0.6 here cannot declare unquoted: same shape, plain names.
  const svc = "service-TSNPSTAN-default-standin", ep = "endpoint-TSNPSTAN-default-standin";
  return [
    "table ip kube-proxy {",
    '  comment "rules for kube-proxy"',
    "  map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }",
    "  map service-nodeports { type inet_proto . inet_service : verdict; }",
    "  chain mark-seen { type filter hook prerouting priority mangle;",
    `    ip saddr ${s.podCidr} meta mark & 0x4000 == 0x4000 counter; }`,
    "  chain nat-prerouting { type nat hook prerouting priority dstnat; jump services; }",
    "  chain nat-output { type nat hook output priority -100; jump services; }",
    "  chain nat-postrouting { type nat hook postrouting priority srcnat; jump masquerading; }",
    "  chain mark-for-masquerade { meta mark set meta mark | 0x4000; }",
    "  chain masquerading {",
    "    meta mark & 0x4000 == 0 return",
    "    meta mark set meta mark ^ 0x4000",
    "    masquerade fully-random",
    "  }",
    "  chain services {",
    "    ip daddr . meta l4proto . th dport vmap @service-ips",
    "    fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports",
    "  }",
    `  chain ${svc} {`,
    `    ip daddr ${s.clusterIp} ip saddr != ${s.podCidr} jump mark-for-masquerade`,
    `    numgen random mod 1 vmap { 0 : goto ${ep} }`,
    "  }",
    `  chain external-TSNPSTAN-default-standin { jump mark-for-masquerade; goto ${svc}; }`,
    `  chain ${ep} {`,
    `    ip saddr ${s.endpoint} jump mark-for-masquerade`,
    `    meta l4proto { tcp, udp } dnat to ${s.endpoint}:${s.endpointPort}`,
    "  }",
    "}",
    "add element ip kube-proxy service-ips {",
    `  ${s.clusterIp} . udp . ${s.port} : goto ${svc},`,
    `  ${s.clusterIp} . tcp . ${s.port} : goto ${svc} }`,
    "add element ip kube-proxy service-nodeports {",
    `  udp . ${s.nodePort} : goto external-TSNPSTAN-default-standin,`,
    `  tcp . ${s.nodePort} : goto external-TSNPSTAN-default-standin }`,
  ].join("\n") + "\n";
}

/** Runs in namespace `ns` (undefined: this process's own namespace, as in a test VM). */
function inNode(ns: string | undefined) {
  return (argv: string[], stdin?: string) => run(argv, { netns: ns, stdin });
}

/** Installs the Service in the node's namespace `ns` (a name under /run/netns). */
export async function installKubeProxy(
  mode: KubeProxyMode,
  ns: string | undefined,
  s: KubeService,
): Promise<void> {
  const inNs = inNode(ns);
  if (mode === "iptables") {
    await inNs(["iptables-restore", "--noflush", "-w"], iptablesRestore(s));
  } else if (mode === "nftables") {
    await inNs(["nft", "-f", "-"], nftTable(s));
  } else {
    // IPVS: the ClusterIP on a dummy interface (kube-ipvs0), virtual servers for it and the
    // NodePort on every node address, NAT ("masq") forwarding; masquerade and the mark as
    // kube-proxy's iptables rules in IPVS mode set them (KUBE-MARK-MASQ for traffic from
    // outside the cluster CIDR, here all of it to make SNAT certain).
    await inNs(["sysctl", "-qw", "net.ipv4.vs.conntrack=1"]);
    await inNs(["ip", "link", "add", "kube-ipvs0", "type", "dummy"]);
    await inNs(["ip", "addr", "add", `${s.clusterIp}/32`, "dev", "kube-ipvs0"]);
    const rules = [
      "*mangle",
      ":TSNP-KUBE-MARK-SEEN - [0:0]",
      "-A PREROUTING -j TSNP-KUBE-MARK-SEEN",
      `-A TSNP-KUBE-MARK-SEEN -s ${s.podCidr} -m mark --mark 0x4000/0x4000`,
      "COMMIT",
      "*nat",
      ":KUBE-SERVICES - [0:0]",
      ":KUBE-POSTROUTING - [0:0]",
      ":KUBE-MARK-MASQ - [0:0]",
      "-A PREROUTING -j KUBE-SERVICES",
      "-A OUTPUT -j KUBE-SERVICES",
      "-A POSTROUTING -j KUBE-POSTROUTING",
      "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
      `-A KUBE-SERVICES -d ${s.clusterIp}/32 -j KUBE-MARK-MASQ`,
      "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-MARK-MASQ",
      "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
      "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
      "-A KUBE-POSTROUTING -j MASQUERADE --random-fully",
      "COMMIT",
    ].join("\n") + "\n";
    await inNs(["iptables-restore", "--noflush", "-w"], rules);
  }
}

/** IPVS virtual servers for a node address (the NodePort) and the ClusterIP. */
export async function ipvsServices(ns: string | undefined, s: KubeService, nodeIps: string[]) {
  const inNs = inNode(ns);
  const vips = [`${s.clusterIp}:${s.port}`, ...nodeIps.map((ip) => `${ip}:${s.nodePort}`)];
  for (const flag of ["-u", "-t"]) {
    for (const vip of vips) {
      await inNs(["ipvsadm", "-A", flag, vip, "-s", "rr"]);
      await inNs(["ipvsadm", "-a", flag, vip, "-r", `${s.endpoint}:${s.endpointPort}`, "-m"]);
    }
  }
}

/** Pod packets that arrived with kube-proxy's 0x4000 already set (the mark-seen counter). */
export async function kubeMarkSeen(mode: KubeProxyMode, ns?: string): Promise<number> {
  const inNs = inNode(ns);
  if (mode === "nftables") {
    const r = await inNs(["nft", "-j", "list", "chain", "ip", "kube-proxy", "mark-seen"]);
    const doc = JSON.parse(r.stdout) as { nftables: Array<Record<string, unknown>> };
    const counters = doc.nftables.flatMap((o) =>
      ((o.rule as { expr?: Array<Record<string, { packets?: number }>> } | undefined)?.expr ?? [])
        .filter((e) => e.counter).map((e) => e.counter.packets ?? 0)
    );
    if (counters.length !== 1) throw new Error(`no mark-seen counter in:\n${r.stdout}`);
    return counters[0];
  }
  const list = ["iptables", "-w", "-t", "mangle", "-L", "TSNP-KUBE-MARK-SEEN", "-v", "-x", "-n"];
  const r = await inNs(list);
  const line = r.stdout.split("\n").find((l) => /mark match/i.test(l));
  if (!line) throw new Error(`no mark-seen rule in:\n${r.stdout}`);
  return Number(line.trim().split(/\s+/)[0]);
}
