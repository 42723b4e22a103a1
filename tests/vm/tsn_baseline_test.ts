/**
 * TSN baseline without tsnproxy, in both kernels (tests/vm/guest/tsn_baseline.ts): taprio in
 * software mode and mqprio hw 0 on a 4-queue veth put SO_PRIORITY p into class p+1; etf under
 * one mqprio class passes SO_TXTIME packets and drops untimed ones.
 */
import assert from "node:assert/strict";
import { kernels, runGuest } from "./_vm.ts";

interface Row {
  scenario: string;
  prio: number;
  class: string;
  sent: number;
  classShow: number;
  leaf: string;
  leafCount: number;
  note: string;
}
interface Baseline {
  kernel: string;
  rows: Row[];
  failures: string[];
  taprioClassStats: string;
}

/**
 * What `tc -s class show` reports for taprio's classes in software mode. 6.1 repeats the root
 * qdisc's totals in every class (later kernels report the child qdisc of each queue); the leaf
 * qdisc counters are right on both, and those are what the guest asserts.
 */
const TAPRIO_CLASS_STATS: Record<string, string> = { "6.1": "root totals", "6.12": "per-class" };

for (const kernel of kernels()) {
  Deno.test(`vm ${kernel}: taprio/mqprio map SO_PRIORITY p to class p+1, etf counts SO_TXTIME`, async () => {
    const { result: r } = await runGuest<Baseline>(kernel, "tsn_baseline.ts", "tsn-baseline");
    console.log(`per-class packet counts, ${r.kernel} (taprio class stats: ${r.taprioClassStats})`);
    console.table(r.rows.map((x) => ({
      scenario: x.scenario,
      prio: x.prio,
      class: x.class,
      sent: x.sent,
      "tc class show": x.classShow,
      leaf: `${x.leaf} ${x.leafCount}`,
      note: x.note,
    })));
    assert.deepEqual(r.failures, []);
    assert.equal(r.rows.length, 8);
    for (const x of r.rows) assert.equal(x.leafCount, x.sent, `${x.scenario} ${x.class}`);
    assert.equal(r.rows.find((x) => x.class === "200:3")?.leaf, "etf");
    assert.equal(r.taprioClassStats, TAPRIO_CLASS_STATS[kernel]);
  });
}
