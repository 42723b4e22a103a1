/**
 * Runs inside a test VM (tests/vm/tsn_baseline_test.ts). The TSN baseline WITHOUT tsnproxy:
 * two netns joined by a veth with 4 tx queues; python3 senders with SO_PRIORITY 0..3.
 *   1. taprio root (software mode, num_tc 4, map 0 1 2 3, queues 1@0..1@3, one entry with all
 *      gates open, CLOCK_TAI): priority p must land in class 100:(p+1).
 *   2. mqprio hw 0 with the same mapping, an etf child (skip_sock_check) under 200:3; priority
 *      2 is sent with SO_TXTIME, plus a few priority-2 packets without a txtime, which etf
 *      must drop (their timestamp 0 is in the past).
 * Counts come from `tc -s class show` and from the leaf qdisc under each class (`tc -s qdisc
 * show`): on 6.1 taprio's software-mode class stats repeat the root's totals, so the leaf
 * counters are what proves the mapping there. The qdiscs are set with iproute2's tc for now
 * (the product's libmnl code will take over).
 * Prints a table and a TSNVM-JSON "tsn-baseline" result; exits 1 when a leaf count is off.
 */
import { report } from "./report.ts";
import { run } from "../../lib/run.ts";
import { addVeth, Netns } from "../../lib/netns.ts";

const PRIOS = [0, 1, 2, 3];
/** Distinct per priority so a swapped mapping cannot pass. */
const COUNT: Record<number, number> = { 0: 3, 1: 5, 2: 7, 3: 9 };
const ETF_UNTIMED = 2;
const MAP = "map 0 1 2 3 0 0 0 0 0 0 0 0 0 0 0 0 queues 1@0 1@1 1@2 1@3";

const SENDER = `
import json, socket, struct, sys, time
SO_TXTIME = 61
for prio, count, offset_ns in json.loads(sys.argv[1]):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, prio)
    if offset_ns:
        s.setsockopt(socket.SOL_SOCKET, SO_TXTIME, struct.pack("iI", time.CLOCK_TAI, 0))
    for i in range(count):
        data = b"tsnvm prio %d #%d" % (prio, i)
        if offset_ns:
            t = time.clock_gettime_ns(time.CLOCK_TAI) + offset_ns
            s.sendmsg([data], [(socket.SOL_SOCKET, SO_TXTIME, struct.pack("Q", t))], 0,
                      ("10.0.0.2", 9000))
        else:
            s.sendto(data, ("10.0.0.2", 9000))
    s.close()
`;

const tcA = (...args: string[]) => run(["tc", "-n", "a", ...args]);

async function send(plan: [prio: number, count: number, txtimeOffsetNs: number][]) {
  await run(["python3", "-c", SENDER, JSON.stringify(plan)], { netns: "a" });
}

interface Stat {
  kind: string;
  packets: number;
  dropped: number;
}

/**
 * Parses `tc -s class|qdisc show`: "<what> <kind> <handle> ...\n Sent B bytes N pkt (dropped D,".
 * Classes are keyed by handle, qdiscs by parent ("root" for the root).
 */
function parseStats(text: string, what: "class" | "qdisc"): Map<string, Stat> {
  const stats = new Map<string, Stat>();
  const re = new RegExp(
    `^${what} (\\S+) (\\S+)([^\\n]*)\\n\\s*Sent \\d+ bytes (\\d+) pkt \\(dropped (\\d+)`,
    "gm",
  );
  for (const m of text.matchAll(re)) {
    const key = what === "class" ? m[2] : (m[3].match(/parent (\S+)/)?.[1] ?? "root");
    stats.set(key, { kind: m[1], packets: Number(m[4]), dropped: Number(m[5]) });
  }
  return stats;
}

async function readStats() {
  return {
    classes: parseStats((await tcA("-s", "class", "show", "dev", "veth0")).stdout, "class"),
    qdiscs: parseStats((await tcA("-s", "qdisc", "show", "dev", "veth0")).stdout, "qdisc"),
  };
}
type Stats = Awaited<ReturnType<typeof readStats>>;

/** Polls until every leaf has seen `want` packets (etf holds its own) or 5 s pass. */
async function settle(want: (parent: string) => number, parents: string[]): Promise<Stats> {
  const end = Date.now() + 5000;
  for (;;) {
    const s = await readStats();
    const done = parents.every((p) => (s.qdiscs.get(p)?.packets ?? 0) >= want(p));
    if (done || Date.now() > end) return s;
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface Row {
  scenario: string;
  prio: number;
  class: string;
  sent: number;
  /** From `tc -s class show`. */
  classShow: number;
  /** The leaf qdisc under the class. */
  leaf: string;
  leafCount: number;
  note: string;
}

const t0 = performance.now();
const timings: Record<string, number> = {};
const mark = (what: string) => timings[what] = Math.round(performance.now() - t0);
const rows: Row[] = [];
const failures: string[] = [];

function record(scenario: string, major: string, stats: Stats, sent: (p: number) => number) {
  for (const p of PRIOS) {
    const cls = `${major}:${p + 1}`;
    const leaf = stats.qdiscs.get(cls);
    const row: Row = {
      scenario,
      prio: p,
      class: cls,
      sent: sent(p),
      classShow: stats.classes.get(cls)?.packets ?? -1,
      leaf: leaf?.kind ?? "?",
      leafCount: leaf?.packets ?? -1,
      note: "",
    };
    rows.push(row);
    if (row.leafCount !== row.sent) {
      failures.push(
        `${scenario}: prio ${p} sent ${row.sent}, ${row.leaf} under ${cls} counted ${row.leafCount}`,
      );
    }
  }
}

// --- topology: a/veth0 (4 tx queues) <-> b/veth1; no IPv6, static ARP: only our UDP leaves
for (const name of ["a", "b"]) await Netns.create({ name, lo: false, ipv6: false });
const q4 = { txQueues: 4, rxQueues: 4 };
await addVeth({ name: "veth0", netns: "a", ...q4 }, { name: "veth1", netns: "b", ...q4 }, {
  up: false,
});
await run(["ip", "-n", "a", "addr", "add", "10.0.0.1/24", "dev", "veth0"]);
await run(["ip", "-n", "b", "addr", "add", "10.0.0.2/24", "dev", "veth1"]);
for (const [ns, dev] of [["a", "veth0"], ["b", "veth1"], ["a", "lo"], ["b", "lo"]]) {
  await run(["ip", "-n", ns, "link", "set", dev, "up"]);
}
// Static neighbours both ways: no ARP (priority 0) on veth0, not even for b's ICMP replies.
const mac = async (ns: string, dev: string): Promise<string> =>
  JSON.parse((await run(["ip", "-n", ns, "-j", "link", "show", dev])).stdout)[0].address;
await run([
  "ip",
  "-n",
  "a",
  "neigh",
  "replace",
  "10.0.0.2",
  "lladdr",
  await mac("b", "veth1"),
  "dev",
  "veth0",
  "nud",
  "permanent",
]);
await run([
  "ip",
  "-n",
  "b",
  "neigh",
  "replace",
  "10.0.0.1",
  "lladdr",
  await mac("a", "veth0"),
  "dev",
  "veth1",
  "nud",
  "permanent",
]);
mark("topology");

// --- 1. taprio, software mode
await tcA(
  ..."qdisc replace dev veth0 parent root handle 100 taprio num_tc 4".split(" "),
  ...MAP.split(" "),
  ..."base-time 0 sched-entry S 0f 1000000 clockid CLOCK_TAI".split(" "),
);
await send(PRIOS.map((p) => [p, COUNT[p], 0]));
mark("taprio-sent");
const taprio = await settle((parent) => COUNT[Number(parent.split(":")[1]) - 1], [
  "100:1",
  "100:2",
  "100:3",
  "100:4",
]);
mark("taprio-counted");
record("taprio", "100", taprio, (p) => COUNT[p]);
const taprioTotal = PRIOS.reduce((n, p) => n + COUNT[p], 0);
const classCounts = PRIOS.map((p) => taprio.classes.get(`100:${p + 1}`)?.packets ?? -1);
const taprioClassStats = classCounts.every((c, p) => c === COUNT[p])
  ? "per-class"
  : classCounts.every((c) => c === taprioTotal)
  ? "root totals"
  : `other: ${classCounts.join(" ")}`;

// --- 2. mqprio hw 0 + etf under 200:3 (priority 2 -> tc 2 -> queue 2 -> class 200:3)
await tcA("qdisc", "del", "dev", "veth0", "root");
await tcA(
  ..."qdisc add dev veth0 root handle 200 mqprio num_tc 4".split(" "),
  ...MAP.split(" "),
  "hw",
  "0",
);
// etf dequeues a packet in [txtime - delta, txtime] and drops it (overlimits) after that. Under
// TCG on a busy host the guest's watchdog timer fires tens of ms late, so the window is wide:
// each packet is held ~50 ms, then has 450 ms to leave (delta is ~300 us on real hardware).
const TXTIME_OFFSET_NS = 500_000_000;
await tcA(
  ..."qdisc replace dev veth0 parent 200:3 etf clockid CLOCK_TAI delta 450000000".split(" "),
  "skip_sock_check",
);
await send([
  [0, COUNT[0], 0],
  [1, COUNT[1], 0],
  [2, COUNT[2], TXTIME_OFFSET_NS],
  [2, ETF_UNTIMED, 0],
  [3, COUNT[3], 0],
]);
mark("mqprio-sent");
const mq = await settle((parent) => COUNT[Number(parent.split(":")[1]) - 1], [
  "200:1",
  "200:2",
  "200:3",
  "200:4",
]);
mark("mqprio-counted");
record("mqprio hw 0", "200", mq, (p) => COUNT[p]);
const etf = mq.qdiscs.get("200:3");
rows.find((r) => r.scenario === "mqprio hw 0" && r.prio === 2)!.note = `SO_TXTIME +${
  TXTIME_OFFSET_NS / 1e6
} ms; ${ETF_UNTIMED} more without: etf dropped ${etf?.dropped}`;
if (etf?.kind !== "etf") failures.push(`no etf under 200:3 (found ${etf?.kind})`);
if (etf?.dropped !== ETF_UNTIMED) {
  failures.push(
    `etf dropped ${etf?.dropped} packets, expected the ${ETF_UNTIMED} without a txtime`,
  );
}
for (const p of [0, 1, 3]) {
  const r = rows.find((r) => r.scenario === "mqprio hw 0" && r.prio === p)!;
  if (r.classShow !== r.sent) {
    failures.push(`mqprio class ${r.class} shows ${r.classShow}, sent ${r.sent}`);
  }
}

// --- report
const kernel = Deno.osRelease();
console.log(`\nper-class packet counts on ${kernel} (taprio class stats: ${taprioClassStats})`);
console.log("scenario      prio  class  sent  class-show  leaf qdisc    note");
for (const r of rows) {
  console.log(
    `${r.scenario.padEnd(13)} ${String(r.prio).padEnd(5)} ${r.class.padEnd(6)} ` +
      `${String(r.sent).padStart(4)}  ${String(r.classShow).padStart(10)}  ` +
      `${(r.leaf + " " + r.leafCount).padEnd(12)}  ${r.note}`,
  );
}
console.log(`timings (ms since start): ${JSON.stringify(timings)}`);
if (failures.length > 0) {
  console.log("\nFAILURES:\n  " + failures.join("\n  "));
  console.log((await tcA("-s", "-d", "qdisc", "show", "dev", "veth0")).stdout);
  console.log((await tcA("-s", "class", "show", "dev", "veth0")).stdout);
}
report("tsn-baseline", { kernel, rows, failures, taprioClassStats, timings });
Deno.exit(failures.length === 0 ? 0 : 1);
