/**
 * The stand-ins that need a guest kernel (tests/vm/guest/coexist.ts, one guest run per
 * kernel): Cilium's netkit mode in Debian's 6.12 (CONFIG_NETKIT=y; the host kernel has no
 * netkit) and kube-proxy's IPVS mode in 6.1 and 6.12 (IPVS is a module there, absent on the
 * host). tsnproxy is installed with installWithConfig; each pod is created through a CNI
 * chain ending with the entry install wrote. Every priority 0-15 and the launch times must
 * leave tsn0 with the pod's values; the Cilium stand-in must never see its tc_index bits.
 */
import assert from "node:assert/strict";
import { kernels, runGuest } from "./_vm.ts";

interface Coexist {
  kernel: string;
  cases: Array<{
    scenario: string;
    path: string;
    sent: number[];
    left: number[];
    txtime: Array<{ clock: string; prio: number; sent: number; atPrio: number; ok: number }>;
  }>;
  standins: Record<string, { packets: number; flag: number[]; tsnpMarker: number }>;
  notes: string[];
  failures: string[];
  timings: Record<string, number>;
}

for (const kernel of kernels()) {
  const netkit = kernel !== "6.1";
  Deno.test(
    `vm ${kernel}: ${netkit ? "Cilium netkit pods and " : ""}kube-proxy IPVS: every priority ` +
      `and launch time leaves tsn0 with the pod's values`,
    async () => {
      const { result: r } = await runGuest<Coexist>(kernel, "coexist.ts", "coexist", {
        timeoutSec: 480,
      });
      for (const c of r.cases) {
        console.log(`${c.scenario}, ${c.path}:`);
        console.table(
          c.sent.map((n, p) => ({ priority: p, sent: n, "left at it": c.left[p] })),
        );
        console.table(c.txtime);
      }
      for (const [k, v] of Object.entries(r.standins)) console.log(`stand-in ${k}:`, v);
      for (const n of r.notes) console.log(n);
      console.log(`timings: ${JSON.stringify(r.timings)}`);
      const scenarios = r.cases.map((c) => `${c.scenario}, ${c.path}`);
      assert.deepEqual(scenarios, [
        ...(netkit ? ["cilium-netkit, pod -> far end"] : []),
        "kube-proxy ipvs, ClusterIP",
        "kube-proxy ipvs, NodePort",
      ]);
      assert.deepEqual(r.failures, [], `${kernel}:\n  ${r.failures.join("\n  ")}`);
    },
  );
}
