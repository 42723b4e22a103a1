/**
 * VLAN PCP on the wire, in Debian's 6.1 (clsact) and 6.12 (tcx) kernels, which have 8021q as
 * a module (this host's kernel has none): tests/vm/guest/vlan_pcp.ts, one guest run per
 * kernel. Install sets the VLAN device's egress-qos-map from the node config through our own
 * rtnetlink layer; frames captured at the far end (the 802.1Q tag of each, read by an
 * AF_PACKET socket on the physical peer) show each pod priority leaving with the PCP the map
 * gives with tsnproxy, and with the PCP of priority 0 without it; doctor shows the map and the
 * priority it lacks; uninstall puts the operator's entries back.
 */
import assert from "node:assert/strict";
import { kernels, runGuest } from "./_vm.ts";

interface Row {
  scenario: string;
  tsnproxy: string;
  pod: string;
  pcp: Record<string, Record<string, number>>;
  untagged: number;
  vids: number[];
}
interface Result {
  kernel: string;
  operatorMap: { ours: [number, number][]; iproute2: string };
  install: {
    api: string;
    interfaces: string[];
    vlanChanges: { priority: number; pcp: number; before: number }[] | null;
    afterEmpty: boolean;
  };
  installedMap: { ours: [number, number][]; iproute2: string };
  uninstalledMap: { ours: [number, number][]; iproute2: string };
  doctor: { status: string; found: string; fix?: string; data?: Record<string, unknown> }[];
  restorerChecks: [string, string][];
  rows: Row[];
  failures: string[];
}

const COUNT = [3, 4, 5, 6, 7, 8];
/** [scenario, tsnproxy, pod, PCP per priority 0..5]; every frame of a priority has one PCP. */
const EXPECTED: [string, string, string, number[]][] = [
  ["operator's map 3:5, before install", "without", "pod0", [0, 0, 0, 0, 0, 0]],
  ["config map 0:1 1:2 2:4 3:6 5:7", "with", "pod0", [1, 2, 4, 6, 0, 7]],
  ["config map 0:1 1:2 2:4 3:6 5:7", "without", "pod1", [1, 1, 1, 1, 1, 1]],
  ["after uninstall: 3:5 back, 5:3 kept", "without", "node", [0, 0, 0, 5, 0, 3]],
  ["after uninstall: 3:5 back, 5:3 kept", "without", "pod0", [0, 0, 0, 0, 0, 0]],
];

for (const kernel of kernels()) {
  Deno.test(`vm ${kernel}: each pod priority leaves with the PCP the VLAN map gives, with and without tsnproxy`, async () => {
    const { result: r } = await runGuest<Result>(kernel, "vlan_pcp.ts", "vlanpcp", {
      timeoutSec: 420,
    });
    console.log(`PCP per priority on the wire, ${r.kernel} (${r.install?.api}):`);
    console.table(r.rows.map((x) => {
      const row: Record<string, string> = {
        scenario: x.scenario,
        tsnproxy: x.tsnproxy,
        from: x.pod,
      };
      for (const [p, by] of Object.entries(x.pcp)) {
        row[`prio ${p}`] = Object.entries(by).map(([pcp, n]) => `PCP ${pcp} x${n}`).join(", ");
      }
      return row;
    }));
    for (const d of r.doctor ?? []) {
      console.log(`doctor interface.vlan_pcp: ${d.status}: ${d.found}`);
    }

    assert.deepEqual(r.failures, []);
    assert.equal(r.install.api, kernel === "6.1" ? "clsact" : "tcx");
    assert.deepEqual(r.install.interfaces, ["tsn0", "tsn0.100"]);
    assert.ok(r.install.afterEmpty, "a second plan was not empty");
    // Set by install through rtnetlink: the operator's 3:5 replaced, 0, 1, 2, 5 added.
    assert.deepEqual(r.operatorMap.ours, [[3, 5]]);
    assert.deepEqual(r.install.vlanChanges, [
      { priority: 0, pcp: 1, before: 0 },
      { priority: 1, pcp: 2, before: 0 },
      { priority: 2, pcp: 4, before: 0 },
      { priority: 3, pcp: 6, before: 5 },
      { priority: 5, pcp: 7, before: 0 },
    ]);
    assert.deepEqual(r.installedMap.ours, [[0, 1], [1, 2], [2, 4], [3, 6], [5, 7]]);
    assert.equal(r.installedMap.iproute2, "0:1 1:2 2:4 3:6 5:7", "iproute2 reads the same map");
    assert.deepEqual(r.restorerChecks, [["tsn0", "pass"], ["tsn0.100", "pass"]]);
    // On the wire.
    assert.deepEqual(
      r.rows.map((x) => [
        x.scenario,
        x.tsnproxy,
        x.pod,
        Object.values(x.pcp).map((by) => Object.keys(by).map(Number)),
      ]),
      EXPECTED.map(([s, t, p, pcps]) => [s, t, p, pcps.map((c) => [c])]),
    );
    for (const x of r.rows) {
      assert.deepEqual(
        Object.values(x.pcp).map((by) => Object.values(by)[0]),
        COUNT,
        `${x.scenario} ${x.pod}: frames per priority`,
      );
      assert.deepEqual(x.vids, [100]);
      assert.equal(x.untagged, 0);
    }
    // doctor: tsn0 carries tsn0.100, which is a TSN interface (no warning); tsn0.100's map
    // lacks priority 4, which the policy (maxPriority 5) lets pods use.
    const [onTsn0, onVlan] = r.doctor;
    assert.equal(onTsn0.status, "pass", onTsn0.found);
    assert.match(onTsn0.found, /tsn0\.100 over it is a TSN interface/);
    assert.equal(onVlan.status, "warn", onVlan.found);
    assert.match(
      onVlan.found,
      /egress-qos-map of tsn0\.100 \(VLAN 100 802\.1Q over tsn0\) is 0:1 1:2 2:4 3:6 5:7/,
    );
    assert.match(onVlan.found, /\(4\) it names no PCP for/);
    assert.match(onVlan.fix ?? "", /"4": <pcp>.*or set policy\.maxPriority: 3/);
    assert.deepEqual(onVlan.data?.unmapped, [4]);
    assert.deepEqual(onVlan.data?.pcp, { "0": 1, "1": 2, "2": 4, "3": 6, "4": 0, "5": 7 });
    // Uninstall: 3 back to the operator's 5; 0, 1, 2 removed; 5 changed since (5:3) kept.
    assert.deepEqual(r.uninstalledMap.ours, [[3, 5], [5, 3]]);
    assert.equal(r.uninstalledMap.iproute2, "3:5 5:3");
  });
}
