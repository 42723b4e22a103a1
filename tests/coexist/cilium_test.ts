/**
 * tsnproxy behind a Cilium-like datapath (tests/bpf/standins/cilium.c), installed as
 * production does (`tsnproxy install`, the plugin last in the chain), the stand-in's
 * program attached to each pod's host-side veth during the chain's ADD, before tsnproxy's:
 *
 * - legacy host routing: cil_from_container on the veth's tcx ingress, appended, reading
 *   Cilium's tc_index flags (0x1, 0x2, 0x10) and reading and clearing 0x4; the packet goes
 *   on to the stack (ip_forward, nftables MASQUERADE, the DNAT'd Service);
 * - BPF host routing: the same, but the packet goes straight to tsn0 with
 *   bpf_redirect_neigh (ip_forward turned off after the pod's ADD, to prove it) and replies
 *   come back into the pod with bpf_redirect_peer from tsn0's ingress.
 *
 * In both, bpf_host's stand-in cil_to_netdev is on tsn0's tcx egress (appended at agent
 * start, TC_ACT_OK: it ends the chain), so the observer sits on tcx right before it; and
 * halfway through, the agent regenerates the pod's endpoint as Cilium does (program swapped in
 * its link, every legacy tc filter on the hook deleted) and everything is sent again.
 *
 * Each test sends every priority 0-15 (the node policy allows them all by default) and
 * SO_TXTIME launch times from a pod and asserts, with the observer on tsn0, that every packet
 * left with the pod's values, and with the stand-in's own counters that it never saw one of
 * Cilium's tc_index bits on a pod packet. With a carrier that speaks Cilium's language (the
 * tc_index tag) they fail, with the numbers.
 */
import assert from "node:assert/strict";
import { queryTcx } from "../../src/bpf/attach.ts";
import { CoexistNode, describeFlags, type StandinKind } from "../lib/standins.ts";
import { FAR_V4, SERVICE_V4 } from "../lib/topology.ts";
import {
  launchTimes,
  printMatrix,
  priorityMatrix,
  settled,
  TCP,
  wrongRows,
  wrongTxtime,
} from "./_matrix.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

for (const kind of ["cilium-legacy", "cilium-hostrouting"] as const satisfies StandinKind[]) {
  const hostRouting = kind === "cilium-hostrouting";
  Deno.test(
    {
      name: `coexist [${kind}]: every priority and launch time leaves tsn0 with the pod's ` +
        `values, and Cilium's tc_index flags stay unset`,
      ...opts,
    },
    async () => {
      const node = await CoexistNode.create({ primary: "ptp", standin: kind });
      const failures: string[] = [];
      try {
        await node.install();
        const pod = await node.addPod();
        const chain = node.conflist().plugins.map((p) => p.type);
        assert.deepEqual(chain, ["ptp", "tsnp-standin", "tsnproxy"], "the chain as installed");
        if (hostRouting) {
          // Nothing of the stack's forwarding is needed (or used) on this path.
          await node.sysctl("net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0");
        }
        node.standin!.reset();

        const direct = await priorityMatrix(node, pod, { dst: FAR_V4, port: 8080 });
        printMatrix(`${kind}, pod -> far end`, direct);
        failures.push(...wrongRows(direct, "to the far end"));
        const nicOrder = queryTcx("tsn0", "egress", node.topo.nodePath).map((p) => p.name);
        const vethOrder = () =>
          queryTcx(pod.hostIf, "ingress", node.topo.nodePath).map((p) => p.name);
        console.log(
          `${kind}: tsn0 tcx egress ${nicOrder.join(" -> ")}; ` +
            `${pod.hostIf} tcx ingress ${vethOrder().join(" -> ")}`,
        );
        assert.equal(nicOrder.at(-1), "sti_cil_to_netd", "cil_to_netdev appended last on tsn0");
        assert.ok(node.standin!.counts("nicEgress").packets > 0, "cil_to_netdev saw the packets");
        if (!hostRouting) {
          // The Service is a netfilter DNAT: only the legacy path goes through it.
          const svc = await priorityMatrix(node, pod, { dst: SERVICE_V4, port: 80 });
          printMatrix(`${kind}, pod -> ClusterIP (nftables DNAT)`, svc);
          failures.push(...wrongRows(svc, "via the Service"));
        }
        const tx = await launchTimes(node, pod, { dst: FAR_V4, port: 8080 });
        console.log(`${kind}, launch times:`, tx);
        failures.push(...wrongTxtime(tx, "to the far end"));

        // TCP: its replies must come back (host routing: bpf_redirect_peer into the pod).
        node.observer!.filter(TCP, 8080);
        await node.send(pod, [
          ...["--dst", FAR_V4, "--port", "8080", "--proto", "tcp", "--count", "16"],
          ...["--prio", "5"],
        ]);
        const tcp = await settled(node, 1);
        if (tcp.fwdTotal === 0 || tcp.fwdPrio[5] !== tcp.fwdTotal) {
          failures.push(
            `TCP at priority 5: ${tcp.fwdPrio[5]} of ${tcp.fwdTotal} segments left tsn0 at 5 ` +
              `(by priority: ${JSON.stringify(tcp.fwdPrio)})`,
          );
        }

        // The agent regenerates the endpoint (policy change, agent restart): same again.
        const before = vethOrder();
        await node.standin!.regenerate(pod.id, pod.hostIf);
        assert.deepEqual(vethOrder(), before, "a regenerated link keeps its position");
        const regen = await priorityMatrix(node, pod, { dst: FAR_V4, port: 8080 });
        printMatrix(`${kind}, after the endpoint's regeneration`, regen);
        failures.push(...wrongRows(regen, "after regeneration"));

        const seen = node.standin!.counts("pod");
        console.log(`${kind}: stand-in on the pods' veths:`, seen);
        assert.ok(seen.packets > 0, "the stand-in must see the pod's packets");
        if (seen.flag[0] + seen.flag[1] + seen.flag[2] + seen.flag[4] > 0) {
          failures.push(`Cilium's tc_index flags on pod packets: ${describeFlags(seen)}`);
        }
        if (hostRouting) {
          assert.ok(seen.redirected > 0, "host routing must forward with bpf_redirect_neigh");
          assert.equal(seen.redirectFailed, 0);
          const nic = node.standin!.counts("nic");
          console.log(`${kind}: stand-in on tsn0's ingress:`, nic);
          assert.ok(nic.redirected > 0, "replies must reach the pod with bpf_redirect_peer");
        }
      } finally {
        await node.destroy();
      }
      assert.deepEqual(failures, [], `${kind}:\n  ${failures.join("\n  ")}`);
    },
  );
}
