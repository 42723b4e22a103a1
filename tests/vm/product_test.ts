/**
 * The product end to end on real TSN qdiscs, in Debian's 6.1 (classic clsact) and 6.12 (tcx)
 * kernels (tests/vm/guest/product_tsn.ts, one guest run per kernel: starting deno with the
 * installer's module graph costs ~40 s under TCG):
 *
 * - installWithConfig configures taprio through libmnl (6.1: clsact first), the second plan is
 *   empty; a pod's SO_PRIORITY 0..3 all land in class 100:1 before its CNI ADD and in
 *   100:1..100:4 after it (the installed plugin run as a runtime runs it);
 * - mqprio with etf children: the pod's SO_TXTIME CLOCK_TAI packets at priority 2 reach the etf
 *   under 200:3; a pod without the saver loses the priority (class 200:1) and, on 6.1, the
 *   launch time too: that etf drops them;
 * - the 6.1 stall (clsact after taprio) reproduced on a control veth, and repaired by install
 *   when the operator configured taprio first (qdisc kind keep);
 * - uninstall: tsn0 back to its qdiscs before install (or the operator's taprio), no pins.
 */
import assert from "node:assert/strict";
import { kernels, runGuest } from "./_vm.ts";

interface Leaf {
  kind: string;
  packets: number;
  drops: number;
  qlen: number;
}
interface Row {
  scenario: string;
  tsnproxy: "without" | "with";
  pod: string;
  sent: string;
  major: number;
  leaves: Leaf[];
}
interface Product {
  kernel: string;
  rows: Row[];
  installs: Record<string, { steps: string[]; api: string; afterEmpty: boolean }>;
  uninstalled: Record<string, string[]>;
  notes: string[];
  failures: string[];
  timings: Record<string, number>;
  cniRuns: Record<string, number>;
  sendMs: number[];
  uptimeAtStart: number;
  uptimeAtEnd: number;
}

const Z = [0, 0, 0, 0];
/** [scenario, tsnproxy, packets per class, drops per class], in the guest's order. */
function expectedRows(kernel: string): [string, string, number[], number[]][] {
  const is61 = kernel === "6.1";
  return [
    ["taprio (product)", "without", [24, 0, 0, 0], Z],
    ["taprio (product)", "with", [3, 5, 7, 9], Z],
    ["mqprio+etf (product)", "with", [0, 5, 7, 9], Z],
    // 6.1 clears the pod's CLOCK_TAI launch time on the veth crossing: etf drops the packets;
    // 6.12 keeps it (tstamp_type TAI), but the priority is lost: the etf of class 0 sends them.
    ["mqprio+etf (product)", "without", is61 ? Z : [7, 0, 0, 0], is61 ? [7, 0, 0, 0] : Z],
    ["control: tc taprio, then tc clsact", "without", is61 ? Z : [5, 0, 0, 0], Z],
    ["operator's taprio, kind keep", "with", [3, 5, 7, 9], Z],
    ["after uninstall", "without", [24, 0, 0, 0], Z],
  ];
}

const EXPECTED_INSTALLS: Record<string, Record<string, string[]>> = {
  "6.1": {
    "taprio": ["add-clsact", "apply-root"],
    "mqprio+etf": ["apply-root"],
    "keep, operator's taprio": ["add-clsact", "recreate-root"],
  },
  "6.12": { "taprio": ["apply-root"], "mqprio+etf": ["apply-root"], "keep, operator's taprio": [] },
};

/**
 * Left after uninstall. No pod saver (uninstall detaches clsact filters in the namespaces their
 * pins record); 6.1 with the operator's taprio kept: install.json keeps recording the clsact
 * install added (removing it would stop taprio).
 */
const EXPECTED_LEFT: Record<string, Record<string, string[]>> = {
  "6.1": {
    "--remove-qdisc": [],
    "keep": ["/tmp/tsnp/state/install.json"],
  },
  "6.12": { "--remove-qdisc": [], "keep": [] },
};

function cell(x: Leaf): string {
  const kind = x.kind === "etf" ? "etf " : "";
  return `${kind}${x.packets}${x.drops ? ` (${x.drops} dropped)` : ""}` +
    (x.qlen ? ` [${x.qlen} queued]` : "");
}

for (const kernel of kernels()) {
  Deno.test(`vm ${kernel}: tsnproxy install + CNI ADD put each priority in its taprio/mqprio class and launch times into etf`, async () => {
    const { result: r } = await runGuest<Product>(kernel, "product_tsn.ts", "product", {
      timeoutSec: 240,
    });
    const api = r.installs.taprio?.api;
    console.log(`per-class packet counts, ${r.kernel} (${api}), without and with tsnproxy:`);
    console.table(r.rows.map((x) => {
      const major = x.major.toString(16);
      const row: Record<string, string> = {
        scenario: x.scenario,
        tsnproxy: x.tsnproxy,
        from: x.pod,
        sent: x.sent,
      };
      x.leaves.forEach((l, i) => row[`class ${i + 1}`] = `${major}:${i + 1} ${cell(l)}`);
      return row;
    }));
    for (const [what, i] of Object.entries(r.installs)) {
      console.log(`install (${what}): ${i.api}, qdisc steps [${i.steps.join(", ")}]`);
    }
    for (const n of r.notes) console.log(n);
    console.log(
      `guest: deno + imports ${r.uptimeAtStart.toFixed(0)} s after boot, scenarios ` +
        `${(r.uptimeAtEnd - r.uptimeAtStart).toFixed(0)} s; CNI ADD ${
          Object.values(r.cniRuns).map((ms) => `${(ms / 1000).toFixed(1)} s`).join(", ")
        }; senders ${r.sendMs.map((ms) => (ms / 1000).toFixed(1)).join(", ")} s`,
    );

    assert.deepEqual(r.failures, []);
    assert.equal(api, kernel === "6.1" ? "clsact" : "tcx", "attachMode auto");
    assert.deepEqual(
      Object.fromEntries(Object.entries(r.installs).map(([k, v]) => [k, v.steps])),
      EXPECTED_INSTALLS[kernel],
    );
    for (const [what, i] of Object.entries(r.installs)) {
      assert.ok(i.afterEmpty, `${what}: a second plan was not empty`);
    }
    assert.deepEqual(
      r.rows.map((
        x,
      ) => [x.scenario, x.tsnproxy, x.leaves.map((l) => l.packets), x.leaves.map((l) => l.drops)]),
      expectedRows(kernel),
    );
    for (const x of r.rows) {
      assert.deepEqual(
        x.leaves.map((l) => l.qlen),
        x.scenario.startsWith("control") && kernel === "6.1" ? [5, 0, 0, 0] : Z,
        `${x.scenario}: queued`,
      );
    }
    const mq = r.rows.find((x) => x.scenario.startsWith("mqprio"))!;
    assert.deepEqual(mq.leaves.map((l) => l.kind === "etf"), [true, false, true, false]);
    assert.deepEqual(r.uninstalled, EXPECTED_LEFT[kernel]);
  });
}
