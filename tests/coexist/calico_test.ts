/**
 * tsnproxy behind a Calico-like eBPF dataplane (tests/bpf/standins/calico.c): the stand-in
 * CNI plugin is the primary, as Calico's is (routed cali* veth, no bridge, proxy ARP, a /32
 * route per pod, the pod's default route via 169.254.1.1), and attaches
 * calico_from_workload_ep's stand-in to the cali* interface's tcx ingress during ADD,
 * before tsnproxy's. The pod carries a DSCP annotation (EF, 46): Calico rewrites the DSCP of
 * its packets to destinations outside the cluster, on that same hook, sets its mark, and
 * passes the packet on (TC_ACT_UNSPEC).
 *
 * Felix attaches its programs asynchronously, after the CNI ADD (the design doc's
 * attach-gap protection): the test runs both orders, the stand-in attached during the ADD
 * and after it.
 *
 * Asserted, as for every stand-in: every priority 0-15 and the launch times leave tsn0
 * with the pod's values (IPv4 forwarding derives skb->priority from the TOS byte Calico just
 * rewrote: ip_forward_update_priority, on by default), the DSCP rewrite happened, and the
 * stand-in never found its own mark bits on a pod packet.
 */
import assert from "node:assert/strict";
import { CoexistNode } from "../lib/standins.ts";
import { FAR_V4, SERVICE_V4 } from "../lib/topology.ts";
import { launchTimes, printMatrix, priorityMatrix, wrongRows, wrongTxtime } from "./_matrix.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const EF = 46;

for (const attachLater of [false, true]) {
  const when = attachLater ? "after the ADD (as Felix does)" : "during the ADD";
  Deno.test(
    {
      name: `coexist [calico, attached ${when}]: routed cali* veth with a DSCP annotation: ` +
        "every priority and launch time leaves tsn0 with the pod's values, Calico's mark bits " +
        "stay unset",
      ...opts,
    },
    async () => {
      const node = await CoexistNode.create({
        primary: "standin",
        standin: "calico",
        dscp: EF,
        attachLater,
      });
      const failures: string[] = [];
      try {
        await node.install();
        const pod = await node.addPod();
        assert.deepEqual(node.conflist().plugins.map((p) => p.type), ["tsnp-standin", "tsnproxy"]);
        assert.match(pod.hostIf, /^cali[0-9a-f]{11}$/, "Calico names the host side cali<hash>");
        node.standin!.reset();

        for (
          const [label, dst, port] of [["far end", FAR_V4, 8080], ["ClusterIP", SERVICE_V4, 80]]
        ) {
          const rows = await priorityMatrix(node, pod, { dst: String(dst), port: Number(port) });
          printMatrix(`calico (DSCP ${EF}), pod -> ${label}`, rows);
          failures.push(...wrongRows(rows, `to the ${label}`));
        }
        const tx = await launchTimes(node, pod, { dst: FAR_V4, port: 8080 });
        console.log("calico, launch times:", tx);
        failures.push(...wrongTxtime(tx, "to the far end"));

        const seen = node.standin!.counts("pod");
        console.log("calico: stand-in on the cali* interface:", seen);
        assert.ok(seen.packets > 0, "the stand-in must see the pod's packets");
        assert.ok(seen.rewritten > 0, "the DSCP annotation must rewrite packets to the world");
        if (seen.ownMark > 0) {
          failures.push(
            `Calico's mark bits (0xffff0000) on ${seen.ownMark} of ${seen.packets} ` +
              `pod packets`,
          );
        }
      } finally {
        await node.destroy();
      }
      assert.deepEqual(failures, [], `calico (${when}):\n  ${failures.join("\n  ")}`);
    },
  );
}
