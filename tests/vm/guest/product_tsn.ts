/**
 * Runs inside a test VM (tests/vm/product_test.ts): tsnproxy end to end on a real TSN qdisc.
 * The guest's own namespace is the node; pods and the far end are netns:
 *
 *   pod0/pod1 netns (eth0) --veth--> node (vpod0/vpod1, ip_forward, nftables MASQUERADE out of
 *   tsn0) --> tsn0 (veth, 4 tx queues) --veth--> far netns (far0)
 *
 * No IPv6 and static neighbours on tsn0: the only packets leaving tsn0 are the senders'
 * (tests/lib/sender.py, unmodified, run in the pod netns), so class counts are exact.
 *
 *   A. installWithConfig(taprio: num_tc 4, map 0 1 2 3, queues 1@0..1@3, two schedule entries,
 *      CLOCK_TAI): the product creates clsact (no tcx) then taprio through libmnl; the second
 *      plan is empty. pod0 sends SO_PRIORITY 0..3 before its CNI ADD (all in class 100:1),
 *      then the installed plugin runs ADD (env + stdin, as a runtime does) and the same
 *      traffic lands in classes 100:1..100:4.
 *   B. installWithConfig(mqprio hw 0, etf under 200:1 and 200:3): pod0 (saver) sends
 *      priority 2 with SO_TXTIME CLOCK_TAI -> etf 200:3 counts them; pod1 (no saver) sends the
 *      same -> priority lost -> class 200:1, whose etf sees the launch time only if the kernel
 *      kept it across the veth (6.12) and drops them when it was cleared (6.1).
 *   C. uninstall --remove-qdisc: tsn0's qdiscs as before install, no pins, no conflist entry,
 *      and no saver left on pod0's eth0 (a clsact filter, found through the namespace its pin
 *      records).
 *   D. a control on its own veth: taprio, then clsact (no tsnproxy): 6.1 stops dequeuing.
 *      Then the operator's taprio on tsn0 (iproute2 tc) BEFORE install with qdisc kind keep:
 *      the installer adds clsact and re-creates taprio (6.1); ADD; every class flows.
 *   E. uninstall: taprio as the operator configured it (6.1 keeps the empty clsact under it),
 *      no pins; traffic still flows (all in 100:1 without tsnproxy).
 * Prints a TSNVM-JSON "product" result; exits 1 when a check failed.
 */
import { queryTcx } from "../../../src/bpf/attach.ts";
import { installWithConfig } from "../../../src/install/command.ts";
import { formatNodePlan, type NodePlan, planIsEmpty } from "../../../src/install/plan.ts";
import { runUninstall } from "../../../src/install/uninstall.ts";
import { findLink, listBpfFilters, listQdiscs, TC_H_ROOT } from "../../../src/netlink/mod.ts";
import { withNetns } from "../../../src/util/netns.ts";
import { report } from "./report.ts";
import { run } from "../../lib/run.ts";
import { Netns } from "../../lib/netns.ts";

/** Guest uptime when this module started running (its imports loaded): start-up cost. */
const UPTIME_AT_START = Number(Deno.readTextFileSync("/proc/uptime").split(" ")[0]);
const t0 = performance.now();
const timings: Record<string, number> = {};
const mark = (what: string) => timings[what] = Math.round(performance.now() - t0);
const failures: string[] = [];
const check = (ok: boolean, what: string) => {
  if (!ok) failures.push(what);
  return ok;
};

const KERNEL = Deno.osRelease();
const SENDER = new URL("../../lib/sender.py", import.meta.url).pathname;
const CHECKOUT = new URL("../../..", import.meta.url).pathname.replace(/\/$/, "");
const FIXTURE = `${CHECKOUT}/tests/fixtures/cni/bridge/10-bridge.conflist`;
const DIR = "/tmp/tsnp";
const LOC = {
  tsnInterface: "tsn0",
  cniConfDir: `${DIR}/net.d`,
  cniBinDir: `${DIR}/bin`,
  bpffs: "/sys/fs/bpf/tsnproxy",
  stateDir: `${DIR}/state`,
};
const FAR = "198.18.0.2";
const PRIOS = [0, 1, 2, 3];
/** Distinct per priority so a swapped mapping cannot pass. */
const COUNT = [3, 5, 7, 9];
const TXTIME_COUNT = 7;
const TXTIME_OFFSET_MS = 500;
/** etf dequeues in [txtime - delta, txtime]: wide, TCG timers fire tens of ms late. */
const ETF_DELTA_NS = 450_000_000;
const TC_MAP = "map 0 1 2 3 0 0 0 0 0 0 0 0 0 0 0 0 queues 1@0 1@1 1@2 1@3";
const SCHEDULE = "base-time 0 sched-entry S 0f 500000 sched-entry S 05 500000 clockid CLOCK_TAI";

// ---------------------------------------------------------------------------------------------
// topology

const sh = (...argv: string[]) => run(argv);
/** Runs `ip` commands (one a line) in one process: process starts are slow under TCG. */
async function ipBatch(lines: string[], ns?: string) {
  await Deno.writeTextFile(`${DIR}/ip.batch`, lines.join("\n") + "\n");
  await run(["ip", ...(ns ? ["-n", ns] : []), "-batch", `${DIR}/ip.batch`]);
}
const NO_IPV6 = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"];
/** A namespace with IPv6 off (no autoconf or MLD frames in the counts). */
const quietNetns = (name: string) => Netns.create({ name, lo: false, ipv6: false });
/** Fixed MACs: static neighbours and prevResult need no lookups. */
const MAC = (n: number) => `02:00:00:00:00:${n.toString(16).padStart(2, "0")}`;

/** nftables is a module in Debian's kernels: load it from the unpacked kernel in the checkout. */
async function loadNftModules() {
  let root = "";
  for (const e of Deno.readDirSync(`${CHECKOUT}/.cache/vm/kernels`)) {
    try {
      Deno.statSync(`${CHECKOUT}/.cache/vm/kernels/${e.name}/lib/modules/${KERNEL}/modules.dep`);
      root = `${CHECKOUT}/.cache/vm/kernels/${e.name}`;
    } catch { /* another kernel */ }
  }
  if (!root) throw new Error(`no unpacked modules for ${KERNEL} under ${CHECKOUT}/.cache/vm`);
  await sh("modprobe", "-d", root, "-a", "nft_masq", "nft_chain_nat");
}

/**
 * netns `ns` (IPv6 off) with `peer` (4 tx queues) of the node's `dev`, `net`.1 <-> `net`.2,
 * static neighbours both ways, MACs 02:..:m and m+1.
 */
async function addTsnVeth(dev: string, peer: string, ns: string, net: string, m: number) {
  await quietNetns(ns);
  await ipBatch([
    `link add ${dev} address ${MAC(m)} numtxqueues 4 numrxqueues 4 type veth peer name ${peer} ` +
    `address ${MAC(m + 1)} netns ${ns} numtxqueues 4 numrxqueues 4`,
    `addr add ${net}.1/24 dev ${dev}`,
    `neigh replace ${net}.2 lladdr ${MAC(m + 1)} dev ${dev} nud permanent`,
    `link set ${dev} up`,
  ]);
  await ipBatch([
    `addr add ${net}.2/24 dev ${peer}`,
    `neigh replace ${net}.1 lladdr ${MAC(m)} dev ${peer} nud permanent`,
    `link set ${peer} up`,
    "link set lo up",
  ], ns);
}

/** pod<n>: eth0 10.244.n.10/24 (MAC m+1), default via the node's vpod<n> (10.244.n.1, MAC m). */
async function addPod(n: number, m: number) {
  const ns = `pod${n}`;
  await quietNetns(ns);
  await ipBatch([
    `link add vpod${n} address ${MAC(m)} type veth peer name eth0 address ${
      MAC(m + 1)
    } netns ${ns}`,
    `addr add 10.244.${n}.1/24 dev vpod${n}`,
    `link set vpod${n} up`,
  ]);
  await ipBatch([
    "link set lo up",
    `addr add 10.244.${n}.10/24 dev eth0`,
    "link set eth0 up",
    `route add default via 10.244.${n}.1`,
  ], ns);
}

// ---------------------------------------------------------------------------------------------
// counters: the child qdisc under each class (listQdiscs through libmnl)

interface Leaf {
  kind: string;
  packets: number;
  drops: number;
  qlen: number;
}
type Leaves = Leaf[]; // index = class minor - 1

function leaves(dev: string, major: number): Leaves {
  const link = findLink(dev);
  if (!link) throw new Error(`${dev} is gone`);
  const out: Leaves = [0, 1, 2, 3].map(() => ({ kind: "-", packets: 0, drops: 0, qlen: 0 }));
  for (const q of listQdiscs(link.index)) {
    const minor = q.parent & 0xffff;
    if (q.parent === TC_H_ROOT || q.parent >>> 16 !== major || minor < 1 || minor > 4) continue;
    out[minor - 1] = {
      kind: q.kind,
      packets: q.stats.packets,
      drops: q.stats.drops,
      qlen: q.stats.qlen,
    };
  }
  return out;
}

const diff = (a: Leaves, b: Leaves): Leaves =>
  b.map((x, i) => ({
    kind: x.kind,
    packets: x.packets - a[i].packets,
    drops: x.drops - a[i].drops,
    qlen: x.qlen,
  }));

/**
 * Polls until `total` packets were dequeued or dropped and none is queued, or 6 s pass. With
 * `stall`, stops 1.5 s after all of them are accounted for, queued ones included.
 */
async function settle(
  dev: string,
  major: number,
  before: Leaves,
  total: number,
  stall = false,
): Promise<Leaves> {
  const end = Date.now() + 6000;
  let queuedSince = 0;
  for (;;) {
    const d = diff(before, leaves(dev, major));
    const seen = d.reduce((n, x) => n + x.packets + x.drops, 0);
    const queued = d.reduce((n, x) => n + x.qlen, 0);
    if (stall && seen + queued >= total && !queuedSince) queuedSince = Date.now();
    const done = (seen >= total && queued === 0) ||
      (queuedSince && Date.now() > queuedSince + 1500);
    if (done || Date.now() > end) {
      // A little longer: late extra packets would show up in the counts.
      await new Promise((r) => setTimeout(r, 200));
      return diff(before, leaves(dev, major));
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface Send {
  prio: number;
  count: number;
  txtime?: boolean;
}

/**
 * Runs the unmodified tests/lib/sender.py once per entry, in one python process (runpy), in
 * netns `ns` (the node's own namespace when empty): python starts in ~2 s under TCG.
 */
const RUNPY = `
import json, runpy, sys
path = sys.argv[1]
for argv in json.loads(sys.argv[2]):
    sys.argv = [path] + argv
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as e:
        if e.code:
            raise
`;
async function send(ns: string, sends: Send[], dst = FAR) {
  const argvs = sends.map((s) => [
    ...["--dst", dst, "--port", "9000", "--count", String(s.count), "--prio", String(s.prio)],
    ...(s.txtime ? ["--txtime", "tai", "--txtime-offset-ms", String(TXTIME_OFFSET_MS)] : []),
  ]);
  const argv = ["python3", "-c", RUNPY, SENDER, JSON.stringify(argvs)];
  await run(argv, { netns: ns || undefined });
}

interface Row {
  scenario: string;
  tsnproxy: "without" | "with";
  pod: string;
  sent: string;
  major: number;
  leaves: Leaves;
}
const rows: Row[] = [];

async function measure(
  scenario: string,
  tsnproxy: Row["tsnproxy"],
  ns: string,
  sends: Send[],
  opts: { dev?: string; dst?: string; major?: number; stall?: boolean } = {},
) {
  const { dev = "tsn0", dst = FAR, major = 0x100, stall = false } = opts;
  const before = leaves(dev, major);
  const t = performance.now();
  await send(ns, sends, dst);
  sendMs.push(Math.round(performance.now() - t));
  const total = sends.reduce((n, s) => n + s.count, 0);
  const d = await settle(dev, major, before, total, stall);
  const sent = sends.map((s) => `p${s.prio}${s.txtime ? "+txtime" : ""}:${s.count}`).join(" ");
  rows.push({ scenario, tsnproxy, pod: ns || "node", sent, major, leaves: d });
  mark(`${scenario} ${tsnproxy}`);
  return d;
}
const sendMs: number[] = [];

/** Checks per-class packets (and drops) exactly. */
function expectCounts(d: Leaves, packets: number[], drops: number[], what: string) {
  check(
    JSON.stringify(d.map((x) => x.packets)) === JSON.stringify(packets) &&
      JSON.stringify(d.map((x) => x.drops)) === JSON.stringify(drops),
    `${what}: per-class packets ${d.map((x) => x.packets).join(" ")} drops ` +
      `${d.map((x) => x.drops).join(" ")}, expected ${packets.join(" ")} / ${drops.join(" ")}`,
  );
}

// ---------------------------------------------------------------------------------------------
// the CNI plugin, executed as a runtime does

interface CniRun {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

async function cniExec(
  command: string,
  containerId: string,
  ns: string,
  stdin: unknown,
): Promise<CniRun> {
  const t = performance.now();
  const out = await run([`${LOC.cniBinDir}/tsnproxy`], {
    env: {
      CNI_COMMAND: command,
      CNI_CONTAINERID: containerId,
      CNI_NETNS: `/run/netns/${ns}`,
      CNI_IFNAME: "eth0",
      CNI_PATH: LOC.cniBinDir,
    },
    clearEnv: true,
    cwd: "/",
    stdin: JSON.stringify(stdin),
    allowFail: true,
  });
  return { ...out, ms: Math.round(performance.now() - t) };
}

/** The tsnproxy entry install put at the end of the conflist, as a runtime passes it. */
function installedEntry(): Record<string, unknown> | undefined {
  const v = JSON.parse(Deno.readTextFileSync(`${LOC.cniConfDir}/10-bridge.conflist`));
  const last = v.plugins.at(-1);
  if (last?.type !== "tsnproxy") return undefined;
  return { cniVersion: v.cniVersion, name: v.name, ...last };
}

const cniRuns: Record<string, number> = {};

async function cniAdd(n: number, what: string): Promise<boolean> {
  const ns = `pod${n}`;
  const entry = installedEntry();
  if (!check(entry !== undefined, `${what}: no tsnproxy entry at the end of the conflist`)) {
    return false;
  }
  const prevResult = {
    cniVersion: entry!.cniVersion,
    interfaces: [
      { name: `vpod${n}`, mac: MAC(0x10 + 2 * n) },
      { name: "eth0", mac: MAC(0x11 + 2 * n), sandbox: `/run/netns/${ns}` },
    ],
    ips: [{ address: `10.244.${n}.10/24`, gateway: `10.244.${n}.1`, interface: 1 }],
    routes: [{ dst: "0.0.0.0/0" }],
    dns: {},
  };
  const id = `pod${n}-${"0".repeat(60)}`.slice(0, 64);
  const r = await cniExec("ADD", id, ns, { ...entry, prevResult });
  cniRuns[what] = r.ms;
  if (!check(r.code === 0, `${what}: CNI ADD exited ${r.code}: ${r.stdout} ${r.stderr}`)) {
    return false;
  }
  const result = JSON.parse(r.stdout);
  return check(
    JSON.stringify(result.ips) === JSON.stringify(prevResult.ips),
    `${what}: ADD result ips ${JSON.stringify(result.ips)}`,
  );
}

// ---------------------------------------------------------------------------------------------
// install / uninstall

const installs: Record<string, { steps: string[]; api: string; afterEmpty: boolean }> = {};

async function install(what: string, yaml: string, wantSteps: string[]): Promise<NodePlan> {
  await Deno.writeTextFile(`${DIR}/config.yaml`, yaml);
  const r = await installWithConfig(yaml, LOC);
  const steps = r.ran.interfaces[0].qdisc.steps.map((s) => s.op);
  installs[what] = { steps, api: r.ran.target.api, afterEmpty: planIsEmpty(r.after) };
  console.log(`--- install (${what}):\n${r.text}`);
  check(
    JSON.stringify(steps) === JSON.stringify(wantSteps),
    `${what}: qdisc steps ${steps.join(",")}, expected ${wantSteps.join(",")}`,
  );
  check(planIsEmpty(r.after), `${what}: second plan not empty:\n${formatNodePlan(r.after)}`);
  mark(`install ${what}`);
  return r.ran;
}

async function uninstall(what: string, removeQdisc: boolean) {
  const code = await runUninstall({
    config: `${DIR}/config.yaml`,
    ...LOC,
    dryRun: false,
    removeQdisc,
  });
  check(code === 0, `${what}: uninstall exited ${code}`);
  mark(`uninstall ${what}`);
}

/**
 * What of ours is left: pins, programs on tsn0 and on the pods' eth0 (by name, without the
 * program id), files in the CNI bin and state dirs.
 */
function leftovers(): string[] {
  const out: string[] = [];
  try {
    Deno.statSync(LOC.bpffs);
    out.push(`${LOC.bpffs} exists`);
  } catch { /* gone */ }
  const name = (s?: string) => (s ?? "?").replace(/:\[\d+\]$/, "");
  const link = findLink("tsn0")!;
  for (const dir of ["ingress", "egress"] as const) {
    for (const f of listBpfFilters(link.index, dir)) out.push(`tsn0 ${dir} filter ${name(f.name)}`);
    for (const p of queryTcx("tsn0", dir)) out.push(`tsn0 tcx ${dir} ${p.name}`);
  }
  for (const ns of ["pod0", "pod1"]) {
    const path = `/run/netns/${ns}`;
    const eth0 = withNetns(path, () => findLink("eth0")!.index);
    for (const f of withNetns(path, () => listBpfFilters(eth0, "egress"))) {
      out.push(`${ns} eth0 egress filter ${name(f.name)}`);
    }
    for (const p of queryTcx("eth0", "egress", path)) out.push(`${ns} eth0 tcx ${p.name}`);
  }
  for (const d of [LOC.cniBinDir, LOC.stateDir]) {
    try {
      for (const e of Deno.readDirSync(d)) out.push(`${d}/${e.name}`);
    } catch { /* absent */ }
  }
  return out.sort();
}

/** One string per qdisc of `dev` (its `tc qdisc show` lines joined), sorted. */
async function qdiscShape(dev = "tsn0"): Promise<string[]> {
  const out: string[] = [];
  for (const line of (await run(["tc", "qdisc", "show", "dev", dev])).stdout.split("\n")) {
    if (line.startsWith("qdisc ")) out.push(line.trim());
    else if (line.trim() && out.length) out[out.length - 1] += " " + line.trim();
  }
  return out.map((q) => q.replace(/\s+/g, " ")).sort();
}

const taprioYaml = (attach: string) =>
  `tsnInterface: tsn0
attachMode: ${attach}
qdisc:
  kind: taprio
  numTc: 4
  map: [0, 1, 2, 3]
  queues: ["1@0", "1@1", "1@2", "1@3"]
  baseTime: "0"
  entries:
    - {command: S, gateMask: 0xf, intervalNs: 500000}
    - {command: S, gateMask: 0x5, intervalNs: 500000}
  clockid: CLOCK_TAI
`;
const mqprioYaml = (attach: string) =>
  `tsnInterface: tsn0
attachMode: ${attach}
qdisc:
  kind: mqprio
  handle: 512
  numTc: 4
  map: [0, 1, 2, 3]
  queues: ["1@0", "1@1", "1@2", "1@3"]
  hw: 0
  etf:
    - {queue: 0, clockid: CLOCK_TAI, deltaNs: ${ETF_DELTA_NS}, skipSockCheck: true}
    - {queue: 2, clockid: CLOCK_TAI, deltaNs: ${ETF_DELTA_NS}, skipSockCheck: true}
`;
const keepYaml = (attach: string) =>
  `tsnInterface: tsn0
attachMode: ${attach}
qdisc:
  kind: keep
`;

// ---------------------------------------------------------------------------------------------

const is61 = KERNEL.startsWith("6.1.");
const wantApi = is61 ? "clsact" : "tcx";
const attach = "auto"; // the default: feature detection must pick clsact on 6.1, tcx on 6.12
const notes: string[] = [];
const uninstalled: Record<string, string[]> = {};

try {
  await sh("sysctl", "-qw", ...NO_IPV6, "net.ipv4.ip_forward=1");
  await Deno.mkdir(LOC.cniConfDir, { recursive: true });
  await loadNftModules();
  await addTsnVeth("tsn0", "far0", "far", "198.18.0", 1);
  await addPod(0, 0x10);
  await addPod(1, 0x12);
  await Deno.writeTextFile(
    `${DIR}/nat.nft`,
    "table ip tsnp_test {\n  chain post {\n    type nat hook postrouting priority srcnat;\n" +
      '    oifname "tsn0" masquerade\n  }\n}\n',
  );
  await sh("nft", "-f", `${DIR}/nat.nft`);
  await Deno.copyFile(FIXTURE, `${LOC.cniConfDir}/10-bridge.conflist`);
  const conflistBefore = Deno.readTextFileSync(`${LOC.cniConfDir}/10-bridge.conflist`);
  const shapeBefore = await qdiscShape();
  mark("topology");

  // --- A. the product configures taprio; priorities without and with tsnproxy
  const a = await install(
    "taprio",
    taprioYaml(attach),
    is61 ? ["add-clsact", "apply-root"] : ["apply-root"],
  );
  check(a.target.api === wantApi, `auto attach mode resolved to ${a.target.api}`);
  const taprioShape = await qdiscShape();
  check(
    taprioShape.some((q) =>
      q.startsWith("qdisc taprio 100: root") && / clockid TAI /.test(q) &&
      / index 0 cmd S gatemask 0xf interval 500000 index 1 cmd S gatemask 0x5 interval 500000/
        .test(q)
    ),
    `no taprio 100: root with the configured schedule: ${taprioShape.join(" | ")}`,
  );
  check(
    taprioShape.some((q) => q.startsWith("qdisc clsact ")) === is61,
    `clsact on tsn0 ${is61 ? "missing" : "present"} with ${a.target.api}`,
  );
  const every = PRIOS.map((p) => ({ prio: p, count: COUNT[p] }));
  const total = COUNT.reduce((x, y) => x + y, 0);
  let d = await measure("taprio (product)", "without", "pod0", every);
  expectCounts(d, [total, 0, 0, 0], [0, 0, 0, 0], "taprio, pod0 before its ADD");
  if (await cniAdd(0, "ADD pod0 (taprio)")) {
    d = await measure("taprio (product)", "with", "pod0", every);
    expectCounts(d, COUNT, [0, 0, 0, 0], "taprio, pod0 after its ADD");
  }

  // --- B. mqprio + etf: launch times reach etf
  await install("mqprio+etf", mqprioYaml(attach), ["apply-root"]);
  const mqShape = await qdiscShape();
  check(
    mqShape.filter((q) =>
      /^qdisc etf \S+ parent 200:[13] clockid TAI delta 450000000 offload off deadline_mode off skip_sock_check on/
        .test(q)
    ).length === 2,
    `etf children under 200:1 and 200:3: ${mqShape.join(" | ")}`,
  );
  d = await measure("mqprio+etf (product)", "with", "pod0", [
    { prio: 1, count: COUNT[1] },
    { prio: 2, count: TXTIME_COUNT, txtime: true },
    { prio: 3, count: COUNT[3] },
  ], { major: 0x200 });
  expectCounts(d, [0, COUNT[1], TXTIME_COUNT, COUNT[3]], [0, 0, 0, 0], "mqprio+etf, pod0 (saver)");
  check(d[2].kind === "etf", `200:3 holds ${d[2].kind}`);
  d = await measure("mqprio+etf (product)", "without", "pod1", [
    { prio: 2, count: TXTIME_COUNT, txtime: true },
  ], { major: 0x200 });
  // 6.1 clears a CLOCK_TAI skb->tstamp on the veth crossing: etf drops the packets as late;
  // 6.12 keeps it (tstamp_type TAI): etf launches them, in the wrong class (priority lost).
  expectCounts(
    d,
    [is61 ? 0 : TXTIME_COUNT, 0, 0, 0],
    [is61 ? TXTIME_COUNT : 0, 0, 0, 0],
    "mqprio+etf, pod1 (no saver)",
  );

  // --- C. uninstall --remove-qdisc: tsn0 as before install, no pins, conflist restored
  await uninstall("product qdisc", true);
  uninstalled["--remove-qdisc"] = leftovers();
  check(
    JSON.stringify(uninstalled["--remove-qdisc"]) === "[]",
    `left after uninstall: ${uninstalled["--remove-qdisc"].join(", ")}`,
  );
  const shapeAfter = await qdiscShape();
  check(
    JSON.stringify(shapeAfter) === JSON.stringify(shapeBefore),
    `tsn0 after uninstall: ${shapeAfter.join(" | ")}; before install: ${shapeBefore.join(" | ")}`,
  );
  check(
    Deno.readTextFileSync(`${LOC.cniConfDir}/10-bridge.conflist`) === conflistBefore,
    "the conflist differs from the original after uninstall",
  );

  // --- D. control: clsact added after a software taprio, no tsnproxy (the 6.1 stall)
  await addTsnVeth("ctl0", "ctl1", "ctl", "10.99.0", 3);
  await sh(
    "tc",
    "qdisc",
    "replace",
    "dev",
    "ctl0",
    "parent",
    "root",
    "handle",
    "100",
    "taprio",
    "num_tc",
    "4",
    ...TC_MAP.split(" "),
    ...SCHEDULE.split(" "),
  );
  await sh("tc", "qdisc", "add", "dev", "ctl0", "clsact");
  const c = await measure("control: tc taprio, then tc clsact", "without", "", [
    { prio: 0, count: 5 },
  ], { dev: "ctl0", dst: "10.99.0.2", stall: true });
  const stalled = c[0].packets === 0 && c[0].qlen === 5;
  notes.push(
    `control (tc clsact after tc taprio): ${stalled ? "stalled" : "flows"}, ` +
      `dequeued ${c[0].packets}, queued ${c[0].qlen}`,
  );
  expectCounts(c, [is61 ? 0 : 5, 0, 0, 0], [0, 0, 0, 0], "control");
  check(c[0].qlen === (is61 ? 5 : 0), `control: ${c[0].qlen} queued`);

  // --- D. the operator's taprio first (iproute2), then install with qdisc kind keep
  await sh(
    "tc",
    "qdisc",
    "replace",
    "dev",
    "tsn0",
    "parent",
    "root",
    "handle",
    "100",
    "taprio",
    "num_tc",
    "4",
    ...TC_MAP.split(" "),
    ...SCHEDULE.split(" "),
  );
  const operatorShape = await qdiscShape();
  await install(
    "keep, operator's taprio",
    keepYaml(attach),
    is61 ? ["add-clsact", "recreate-root"] : [],
  );
  const repairedShape = await qdiscShape();
  const wantRepaired = is61
    ? [...operatorShape, "qdisc clsact ffff: parent ffff:fff1"].sort()
    : operatorShape;
  check(
    JSON.stringify(repairedShape) === JSON.stringify(wantRepaired),
    `tsn0 after install (keep): ${repairedShape.join(" | ")}; operator's: ${
      operatorShape.join(" | ")
    }`,
  );
  if (await cniAdd(0, "ADD pod0 (operator taprio)")) {
    d = await measure("operator's taprio, kind keep", "with", "pod0", every);
    expectCounts(d, COUNT, [0, 0, 0, 0], "operator's taprio + keep, after ADD");
  }

  // --- E. uninstall: the operator's taprio stays (6.1: with the empty clsact), flows
  await uninstall("keep", false);
  uninstalled["keep"] = leftovers();
  const wantLeft = is61 ? [`${LOC.stateDir}/install.json`] : [];
  check(
    JSON.stringify(uninstalled["keep"]) === JSON.stringify(wantLeft),
    `left after uninstall (keep): ${uninstalled["keep"].join(", ")}`,
  );
  const finalShape = await qdiscShape();
  check(
    JSON.stringify(finalShape) === JSON.stringify(wantRepaired),
    `tsn0 after uninstall: ${finalShape.join(" | ")}; expected ${wantRepaired.join(" | ")}`,
  );
  d = await measure("after uninstall", "without", "pod0", every);
  expectCounts(d, [total, 0, 0, 0], [0, 0, 0, 0], "after uninstall");
} catch (e) {
  failures.push(`exception: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
}

// --- report
const cell = (x: Leaf) =>
  `${x.kind === "pfifo" || x.kind === "pfifo_fast" ? "" : x.kind + " "}${x.packets}` +
  (x.drops ? ` (${x.drops} dropped)` : "") + (x.qlen ? ` [${x.qlen} queued]` : "");
console.log(`\nper-class packet counts on ${KERNEL}`);
for (const r of rows) {
  console.log(
    `${r.scenario.padEnd(36)} ${r.tsnproxy.padEnd(8)} ${r.pod.padEnd(5)} ${r.sent.padEnd(34)} ` +
      r.leaves.map(cell).join(" | "),
  );
}
console.log(`timings (ms since start): ${JSON.stringify(timings)}`);
console.log(`CNI plugin runs (ms): ${JSON.stringify(cniRuns)}`);
if (failures.length > 0) {
  console.log("\nFAILURES:\n  " + failures.join("\n  "));
  console.log(
    (await run(["tc", "-s", "-d", "qdisc", "show", "dev", "tsn0"], { allowFail: true })).stdout,
  );
}
report("product", {
  kernel: KERNEL,
  rows,
  installs,
  uninstalled,
  notes,
  failures,
  timings,
  cniRuns,
  sendMs,
  uptimeAtStart: UPTIME_AT_START,
  uptimeAtEnd: Number(Deno.readTextFileSync("/proc/uptime").split(" ")[0]),
});
Deno.exit(failures.length === 0 ? 0 : 1);
