/**
 * tsnproxy with kube-proxy's Service datapath in its iptables and nftables modes
 * (tests/lib/kube_proxy.ts; IPVS needs a guest kernel: tests/vm/coexist_test.ts), behind the
 * bridge plugin, installed as production does. A pod sends every priority 0-15 and launch
 * times to a ClusterIP and to a NodePort (on the node's TSN address) whose endpoint is the
 * far end: DNAT, kube-proxy's masquerade mark and MASQUERADE on the way. Every packet must
 * leave tsn0 with the pod's values, and no pod packet may arrive carrying kube-proxy's mark
 * bit (0x4000).
 */
import assert from "node:assert/strict";
import { CoexistNode, POD_NET4 } from "../lib/standins.ts";
import { installKubeProxy, kubeMarkSeen, type KubeProxyMode } from "../lib/kube_proxy.ts";
import { FAR_V4, NODE_TSN_V4 } from "../lib/topology.ts";
import { launchTimes, printMatrix, priorityMatrix, wrongRows, wrongTxtime } from "./_matrix.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
export const KUBE_SERVICE = {
  clusterIp: "10.96.0.20",
  port: 80,
  nodePort: 30080,
  endpoint: FAR_V4,
  endpointPort: 8080,
  podCidr: POD_NET4,
};

for (const mode of ["iptables", "nftables"] as const satisfies KubeProxyMode[]) {
  Deno.test(
    {
      name: `coexist [kube-proxy ${mode}]: ClusterIP and NodePort: every priority and launch ` +
        `time leaves tsn0 with the pod's values`,
      ...opts,
    },
    async () => {
      const node = await CoexistNode.create({ primary: "bridge" });
      const failures: string[] = [];
      try {
        await installKubeProxy(mode, node.topo.node, KUBE_SERVICE);
        await node.install();
        const pod = await node.addPod();
        const paths = [
          ["ClusterIP", KUBE_SERVICE.clusterIp, KUBE_SERVICE.port],
          ["NodePort", NODE_TSN_V4, KUBE_SERVICE.nodePort],
        ] as const;
        for (const [label, dst, port] of paths) {
          const rows = await priorityMatrix(node, pod, { dst, port });
          printMatrix(`kube-proxy ${mode}, pod -> ${label} ${dst}:${port}`, rows);
          failures.push(...wrongRows(rows, label));
          const tx = await launchTimes(node, pod, { dst, port });
          console.log(`kube-proxy ${mode}, ${label}, launch times:`, tx);
          failures.push(...wrongTxtime(tx, label));
        }
        const marked = await kubeMarkSeen(mode, node.topo.node);
        if (marked) failures.push(`${marked} pod packets arrived with kube-proxy's 0x4000 set`);
      } finally {
        await node.destroy();
      }
      assert.deepEqual(failures, [], `kube-proxy ${mode}:\n  ${failures.join("\n  ")}`);
    },
  );
}
