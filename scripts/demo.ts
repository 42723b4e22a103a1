/**
 * `deno task demo`: the one-minute tour on a throwaway node built in network namespaces.
 *
 *   1. a node: bridge CNI (the reference `bridge` + `host-local` plugins), IP forwarding,
 *      MASQUERADE and a DNAT'd "Service" towards tsn0, the TSN NIC, and a far end; an observer
 *      of ours on tsn0's egress counts what really leaves it (priority, launch time); what a
 *      row needs on the node (tsn0.100) and the node's tsnproxy config;
 *   2. pods created through the chain WITHOUT tsnproxy, each sending its traffic;
 *   3. `tsnproxy install` (binary, pinned datapath, restorer on tsn0, entry appended to the
 *      conflist), the same pods again, created through the chain WITH tsnproxy;
 *   4. `tsnproxy doctor`, `tsnproxy status`; then DEL, `tsnproxy uninstall`, teardown, and a
 *      check that nothing is left (namespaces, pins, conflists).
 *
 * The rows, one group per pod (ROW_BUILDERS below; a new row is one more builder):
 *
 *   talker        an unmodified sender with SO_PRIORITY and SO_TXTIME: UDP over IPv4 and IPv6,
 *                 through the Service's DNAT, TCP, launch times with CLOCK_TAI and REALTIME;
 *   default 4     an app that sets no SO_PRIORITY at all, in a pod given a default priority
 *                 (CNI_ARGS TSNPROXY_DEFAULT_PRIORITY=4, what the annotation
 *                 tsnproxy.io/default-priority gives under containerd): it leaves at 4 with
 *                 tsnproxy and at 0 without; a socket that sets its own keeps it;
 *   cilium-like   the talker's traffic from a pod whose host veth also carries a stand-in of
 *                 Cilium's eBPF datapath (tests/bpf/standins/cilium.c, legacy host routing:
 *                 it reads Cilium's flag bits in tc_index and clears 0x4), attached on tcx
 *                 during the chain's ADD, before tsnproxy's, as Cilium attaches its own.
 *                 `carrier: auto` puts this pod on the stage (the "carrier" column and
 *                 `tsnproxy status`), the plain pods on the tag; every priority and launch
 *                 time still arrives, and the stand-in's own counters show that it never saw
 *                 one of its flag bits set on the pod's packets;
 *   vlan pcp      a VLAN device tsn0.100 (VLAN 100 over tsn0) is a second TSN interface, with
 *                 an egress-qos-map in the node config (`tsnInterfaces`, priority 3 -> PCP 3);
 *                 a pod sends UDP with SO_PRIORITY 3 over it and tests/lib/pcp_capture.py on
 *                 far0 reads each frame's 802.1Q tag: PCP 0 without tsnproxy (the priority is
 *                 lost crossing the pod's veth), PCP 3 with it. It has a table of its own under
 *                 the main one. Where the kernel cannot make a VLAN device (no 8021q, as on this
 *                 project's test host) the row is skipped and says why; the demo run in the
 *                 Debian 6.12 test guest shows it (scripts/vm/demo_guest.ts says how).
 *
 * `--json` prints one JSON document on stdout instead of the tables: `rows` (one per case,
 * pod and phase), `doctor`, `status`, `standin` (the stand-in's view), `vlan` (the VLAN PCP
 * row: `skipped` with the reason, or its `rows` by PCP seen at the far end) and `leftovers`.
 */
import { lexists } from "../src/util/fs.ts";
import { chainAdd, chainDel, type Conflist } from "./lib/cni_chain.ts";
import { Observer } from "../tests/lib/observer.ts";
import { tearDownNode } from "../tests/lib/node.ts";
import {
  createTopology,
  FAR_V4,
  FAR_V6,
  farSinks,
  SERVICE_V4,
  type Topology,
} from "../tests/lib/topology.ts";
import { type Child, run } from "../tests/lib/run.ts";
import { deleteNetns, listNetns, Netns } from "../tests/lib/netns.ts";
import { capturePcp } from "../tests/lib/pcp_capture.ts";
import {
  CILIUM_TC_INDEX_FLAGS,
  STANDIN_CNI,
  type StandinCounts,
  StandinDatapath,
} from "../tests/lib/standins.ts";
import { queryTcx } from "../src/bpf/attach.ts";
import type { StatusReport } from "../src/doctor/schema.ts";
import { moduleState } from "../src/doctor/probe.ts";
import type { VlanConfig } from "../src/config/vlan.ts";

const json = Deno.args.includes("--json");
const root = new URL("..", import.meta.url).pathname;
const launcher = `${root}scripts/tsnproxy`;
const sender = `${root}tests/lib/sender.py`;
const step = (s: string) => json || console.error(`\x1b[1m==>\x1b[0m ${s}`);
const say = (s: string) => json || console.error(s);

type Phase = "without" | "with";

interface Case {
  label: string;
  dst: string;
  port: number;
  /** SO_PRIORITY; absent: the sender never sets one (an app that knows nothing of it). */
  prio?: number;
  /** The priority every packet should leave tsn0 with (default: its SO_PRIORITY, else 0). */
  expect?: number;
  txtime?: "tai" | "realtime";
  /** UDP datagrams; 0: TCP (32 chunks of 64 KiB, counted as the segments that left). */
  count: number;
}

const CASES: Case[] = [
  { label: "UDP IPv4, SO_PRIORITY 3", dst: FAR_V4, port: 8080, prio: 3, count: 500 },
  { label: "UDP via Service DNAT, SO_PRIORITY 2", dst: SERVICE_V4, port: 80, prio: 2, count: 500 },
  { label: "UDP IPv6, SO_PRIORITY 1", dst: FAR_V6, port: 8080, prio: 1, count: 500 },
  { label: "TCP, SO_PRIORITY 5", dst: FAR_V4, port: 8080, prio: 5, count: 0 },
  {
    label: "SO_TXTIME CLOCK_TAI + SO_PRIORITY 3",
    dst: FAR_V4,
    port: 8080,
    prio: 3,
    txtime: "tai",
    count: 200,
  },
  {
    label: "SO_TXTIME CLOCK_REALTIME",
    dst: FAR_V4,
    port: 8080,
    prio: 0,
    txtime: "realtime",
    count: 200,
  },
];

const DEFAULT_PRIORITY = 4;
const DEFAULT_CASES: Case[] = [
  {
    label: `UDP IPv4, no SO_PRIORITY (default ${DEFAULT_PRIORITY})`,
    dst: FAR_V4,
    port: 8080,
    expect: DEFAULT_PRIORITY,
    count: 500,
  },
  { label: "UDP IPv4, SO_PRIORITY 2 (its own)", dst: FAR_V4, port: 8080, prio: 2, count: 500 },
];

interface Row {
  case: string;
  tsnproxy: boolean;
  sent: number;
  leftTsn0: number;
  /** Left tsn0 at expectedPriority. */
  rightPriority: number;
  rightLaunchTime: number | null;
  /** The row group (ROW_BUILDERS). */
  pod: string;
  containerId: string;
  /** The sender's SO_PRIORITY (null: it set none). */
  soPriority: number | null;
  expectedPriority: number;
  /** What left tsn0, by priority ("16": above 15). */
  priorities: Record<string, number>;
  /** The pod's carrier and why, from `tsnproxy status` (null without tsnproxy). */
  carrier: string | null;
  carrierReason: string | null;
}

interface DemoPod {
  id: string;
  /** The row group's name. */
  name: string;
  netns: string;
  conf: Conflist;
  args?: string;
  result: unknown;
  /** The pod's host-side veth. */
  hostIf: string;
}

interface PodSpec {
  name: string;
  /** CNI_ARGS for the chain (also for DEL). */
  args?: string;
  /** A stand-in datapath whose plugin runs after the primary and before tsnproxy. */
  standin?: StandinDatapath;
}

/** A TSN interface a row builder adds to the node config (next to tsn0). */
interface TsnInterfaceEntry {
  name: string;
  vlan?: VlanConfig;
}

/** What a row builder gets: the node, pods through the chain, the observer. */
interface Demo {
  topo: Topology;
  tmp: string;
  bpffs: string;
  addPod(spec: PodSpec, phase: Phase): Promise<DemoPod>;
  measure(pod: DemoPod, cases: Case[], phase: Phase): Promise<Row[]>;
  /** Runs at teardown after every pod's DEL and the uninstall, last registered first. */
  onTeardown(fn: () => void | Promise<void>): void;
}

/** One group of rows: it runs in each of its phases (before and/or after the install). */
interface RowBuilder {
  name: string;
  phases: readonly Phase[];
  /**
   * While the node is built, before its tsnproxy config is written: what the builder needs on
   * the node, and the TSN interfaces it adds to the config (none: the config names tsn0 alone).
   */
  prepareNode?(demo: Demo): Promise<TsnInterfaceEntry[]>;
  build(demo: Demo, phase: Phase): Promise<Row[]>;
  /** After `tsnproxy status`: lines under the table and a field of its own in --json. */
  report?(status: StatusReport | undefined): { key: string; lines: string[]; json: unknown };
}

/** A pod sending `cases` in each phase. */
function podRows(
  name: string,
  title: string,
  cases: Case[],
  spec: Omit<PodSpec, "name"> = {},
): RowBuilder {
  return {
    name,
    phases: ["without", "with"],
    async build(demo, phase) {
      step(`${title} ${phase === "with" ? "WITH" : "WITHOUT"} tsnproxy`);
      return await demo.measure(await demo.addPod({ name, ...spec }, phase), cases, phase);
    },
  };
}

/** The talker's traffic from a pod behind the Cilium-like stand-in (with tsnproxy only). */
function standinRows(): RowBuilder {
  let pod: DemoPod | undefined;
  let seen: StandinCounts | undefined;
  let order: string[] = [];
  return {
    name: "cilium-like",
    phases: ["with"],
    async build(demo, phase) {
      step("talker pod behind a Cilium-like eBPF datapath (stand-in) WITH tsnproxy");
      const pinDir = `${demo.bpffs}-sti`;
      // Unpinning its links detaches them (after the pod's DEL), even if loading failed halfway.
      demo.onTeardown(() => Deno.remove(pinDir, { recursive: true }).catch(() => {}));
      const sd = StandinDatapath.load("cilium-legacy", pinDir, {
        netns: demo.topo.nodePath,
        podNet4: "10.244.0.0/24",
        podNet6: "fd00:244::/64",
      });
      pod = await demo.addPod({ name: "cilium-like", standin: sd }, phase);
      order = queryTcx(pod.hostIf, "ingress", demo.topo.nodePath).map((p) => p.name);
      say(`    ${pod.hostIf} tcx ingress: ${order.join(" -> ")}`);
      sd.reset();
      const rows = await demo.measure(pod, CASES, phase);
      seen = sd.counts("pod");
      return rows;
    },
    report(status) {
      const st = status?.pods?.find((p) => p.containerId === pod?.id);
      const flags = Object.entries(CILIUM_TC_INDEX_FLAGS).map(([bit, flag]) => ({
        flag,
        packets: seen?.flag[Number(bit)] ?? 0,
      }));
      const flagged = flags.reduce((n, f) => n + f.packets, 0);
      const out = {
        kind: "cilium-legacy",
        hostInterface: pod?.hostIf ?? null,
        tcxIngress: order,
        carrier: st?.carrier ?? null,
        carrierReason: st?.carrierReason ?? null,
        podPackets: seen?.packets ?? 0,
        flags,
        tsnproxyTag: seen?.tsnpMarker ?? 0,
        clearedSkipNodeport: seen?.clearedSkipNodeport ?? 0,
      };
      const lines = [
        `cilium-like stand-in on ${out.hostInterface} (tcx ingress ${order.join(" -> ")}): ` +
        `saw ${out.podPackets} pod packets; Cilium's tc_index flag bits set on them: ${flagged} ` +
        `(${flags.map((f) => `${f.flag.split(" ")[0]}: ${f.packets}`).join(", ")}), ` +
        `tsnproxy's tag on ${out.tsnproxyTag}`,
        `  tsnproxy put its pod on the ${out.carrier}: ${out.carrierReason}`,
      ];
      return { key: "standin", lines, json: out };
    },
  };
}

/** The VLAN PCP row: tsn0.100 (VLAN 100 over tsn0), priority 3 -> PCP 3 in the node config. */
const VLAN = {
  dev: "tsn0.100",
  id: 100,
  node: "198.18.100.1",
  far: "198.18.100.2",
  port: 8080,
  prio: 3,
  count: 200,
};
const VLAN_MAP: Record<string, number> = { "3": 3, "5": 5 };

interface VlanRow {
  case: string;
  tsnproxy: boolean;
  pod: string;
  containerId: string;
  soPriority: number;
  /** The PCP the node config's map gives the pod's priority. */
  expectedPcp: number;
  sent: number;
  /** The case's frames seen tagged at the far end, and how many of them with expectedPcp. */
  tagged: number;
  rightPcp: number;
  /** Tagged frames by PCP. */
  pcps: Record<string, number>;
  untagged: number;
  vids: number[];
}

/**
 * The VLAN PCP row: a VLAN device tsn0.100 over tsn0 is a second TSN interface, with an
 * egress-qos-map in the node config (priority 3 -> PCP 3). A pod sends UDP with SO_PRIORITY 3
 * to the far end over it; tests/lib/pcp_capture.py on far0 (an AF_PACKET socket, no VLAN
 * device there) reads the 802.1Q tag of each frame. Without tsnproxy the priority is gone
 * after the veth crossing: PCP 0; with it the restorer on tsn0.100 puts 3 back before the
 * device tags the frame. Where the kernel cannot make a VLAN device (no 8021q) the row is
 * skipped, saying why.
 */
function vlanRows(): RowBuilder {
  let skipped: string | undefined;
  const vlanRows: VlanRow[] = [];
  const expectedPcp = VLAN_MAP[String(VLAN.prio)] ?? 0;
  const label = `UDP over VLAN ${VLAN.id}, SO_PRIORITY ${VLAN.prio}`;
  return {
    name: "vlan pcp",
    phases: ["without", "with"],
    async prepareNode(demo) {
      const node = demo.topo.node;
      const r = await run(
        ["ip", "-n", node, "link", "add", "link", "tsn0", "name", VLAN.dev, "type", "vlan"]
          .concat(["id", String(VLAN.id)]),
        { allowFail: true },
      );
      if (r.code !== 0) {
        const state = await moduleState("8021q", "CONFIG_VLAN_8021Q");
        skipped = `this kernel (${Deno.osRelease()}) cannot create a VLAN device ` +
          `(${r.stderr.trim()}; 8021q: ${state === "missing" ? "not built, no module" : state}). ` +
          "scripts/vm/demo_guest.ts runs the demo in the Debian 6.12 test guest, which has it";
        step(`VLAN PCP row skipped: ${skipped}`);
        return [];
      }
      const far0 = JSON.parse(
        (await run(["ip", "-n", demo.topo.far, "-j", "link", "show", "far0"])).stdout,
      )[0].address;
      for (
        const a of [
          ["addr", "add", `${VLAN.node}/24`, "dev", VLAN.dev],
          ["neigh", "replace", VLAN.far, "lladdr", far0, "dev", VLAN.dev, "nud", "permanent"],
          ["link", "set", VLAN.dev, "up"],
        ]
      ) await run(["ip", "-n", node, ...a]);
      say(
        `    ${VLAN.dev}: VLAN ${VLAN.id} over tsn0, a TSN interface with egress-qos-map ` +
          Object.entries(VLAN_MAP).map(([p, c]) => `${p}:${c}`).join(" "),
      );
      return [{ name: VLAN.dev, vlan: { egressQosMap: VLAN_MAP } }];
    },
    async build(demo, phase) {
      if (skipped) {
        step(`VLAN PCP row ${phase === "with" ? "WITH" : "WITHOUT"} tsnproxy: skipped`);
        return [];
      }
      step(`pod sending over ${VLAN.dev} ${phase === "with" ? "WITH" : "WITHOUT"} tsnproxy`);
      const pod = await demo.addPod({ name: "vlan" }, phase);
      await new Promise((r) => setTimeout(r, 300)); // routes settle
      const out = await capturePcp(demo.topo.far, "far0", async () => {
        await run(
          ["python3", sender, "--dst", VLAN.far]
            .concat(["--port", String(VLAN.port), "--prio", String(VLAN.prio)])
            .concat(["--count", String(VLAN.count)]),
          { netns: pod.id },
        );
        // The capture stops at a frame to port 9999 (tagged too: it leaves over tsn0.100).
        await run(["python3", sender, "--dst", VLAN.far, "--port", "9999"], {
          netns: demo.topo.node,
        });
      });
      const pcps = out.ports[String(VLAN.port)] ?? {};
      vlanRows.push({
        case: label,
        tsnproxy: phase === "with",
        pod: pod.name,
        containerId: pod.id,
        soPriority: VLAN.prio,
        expectedPcp,
        sent: VLAN.count,
        tagged: Object.values(pcps).reduce((a, b) => a + b, 0),
        rightPcp: pcps[String(expectedPcp)] ?? 0,
        pcps,
        untagged: out.untagged[String(VLAN.port)] ?? 0,
        vids: out.vids,
      });
      return [];
    },
    report() {
      const out = {
        device: VLAN.dev,
        vlanId: VLAN.id,
        over: "tsn0",
        map: VLAN_MAP,
        skipped: skipped ?? null,
        rows: vlanRows,
      };
      if (skipped) return { key: "vlan", lines: [`VLAN PCP row skipped: ${skipped}`], json: out };
      const cols: Array<[string, number, (r: VlanRow) => string]> = [
        [label, 38, () => ""],
        ["tsnproxy", 9, (r) => r.tsnproxy ? "yes" : "no"],
        ["sent", 5, (r) => String(r.sent)],
        ["tagged", 10, (r) => String(r.tagged)],
        [`with PCP ${expectedPcp} (the map's)`, 24, (r) => pct(r.rightPcp, r.sent)],
        [
          "PCPs seen at far0",
          0,
          (r) => Object.entries(r.pcps).map(([p, n]) => `PCP ${p} x${n}`).join(", ") || "-",
        ],
      ];
      const line = (cells: string[]) =>
        cells.map((c, i) => cols[i][1] ? c.padEnd(cols[i][1]) : c).join(" ").trimEnd();
      return {
        key: "vlan",
        lines: [
          line(cols.map((c) => c[0])),
          ...vlanRows.map((r) => line(cols.map((c) => c[2](r)))),
          "",
        ],
        json: out,
      };
    },
  };
}

const ROW_BUILDERS: RowBuilder[] = [
  podRows("talker", "talker pod", CASES),
  podRows(
    `default ${DEFAULT_PRIORITY}`,
    "pod with a default priority, app sets none",
    DEFAULT_CASES,
    {
      args: `IgnoreUnknown=1;TSNPROXY_DEFAULT_PRIORITY=${DEFAULT_PRIORITY}`,
    },
  ),
  standinRows(),
  vlanRows(),
];

async function tsnproxy(node: Topology, args: string[], allowFail = false) {
  return await run([launcher, ...args], { netns: node.nodePath, allowFail });
}

const topo = await createTopology({ pods: 0, bridge: false });
const tmp = await Deno.makeTempDir({ prefix: "tsnproxy-demo-" });
const bpffs = `/sys/fs/bpf/tsnproxy-demo-${topo.id}`;
const loc = [
  "--config",
  `${tmp}/config.yaml`,
  "--cni-conf-dir",
  `${tmp}/net.d`,
  "--cni-bin-dir",
  `${tmp}/bin`,
  "--bpffs",
  bpffs,
  "--state-dir",
  `${tmp}/state`,
];
const pods: DemoPod[] = [];
const teardowns: Array<() => void | Promise<void>> = [];
let observer: Observer | undefined;
let sinks: Child[] = [];
let installed = false;
const rows: Row[] = [];
let doctorSummary: Record<string, number> = {};
let status: StatusReport | undefined;
const leftovers: string[] = [];

const demo: Demo = {
  topo,
  tmp,
  bpffs,
  async addPod(spec, phase) {
    const id = `demo-${spec.name.replace(/\W+/g, "")}-${
      phase === "with" ? "tsn" : "plain"
    }-${topo.id}`;
    await Netns.create({ name: id, lo: false });
    await run([
      "sysctl",
      "-qw",
      "net.ipv6.conf.all.accept_dad=0",
      "net.ipv6.conf.default.accept_dad=0",
    ], { netns: id });
    const conf = JSON.parse(await Deno.readTextFile(`${tmp}/net.d/10-demo.conflist`)) as Conflist;
    if (spec.standin) {
      // The stand-in's plugin runs right after the primary, before tsnproxy: its program is on
      // the host veth when tsnproxy's ADD looks.
      conf.plugins.splice(1, 0, spec.standin.pluginEntry(`${tmp}/standin-state`));
    }
    const ctx = {
      containerId: id,
      netns: `/run/netns/${id}`,
      binDir: `${tmp}/bin`,
      nodeNetns: topo.nodePath,
      args: spec.args,
    };
    const pod: DemoPod = {
      id,
      name: spec.name,
      netns: ctx.netns,
      conf,
      args: spec.args,
      result: undefined,
      hostIf: "",
    };
    pods.push(pod); // DEL'd at teardown even when ADD fails halfway
    pod.result = await chainAdd(conf, ctx);
    const ifs = (pod.result as { interfaces?: Array<{ name: string; sandbox?: string }> })
      .interfaces ?? [];
    pod.hostIf = ifs.find((i) => !i.sandbox && i.name !== "cni0")?.name ?? "";
    step(
      `pod ${id}: ADD through ${conf.plugins.map((p) => p.type).join(" -> ")}` +
        (spec.args ? ` (CNI_ARGS ${spec.args})` : ""),
    );
    return pod;
  },
  async measure(pod, cases, phase) {
    await new Promise((r) => setTimeout(r, 300)); // IPv6 routes settle
    const out: Row[] = [];
    for (const c of cases) {
      const tcp = c.count === 0;
      observer!.filter(tcp ? 6 : 17, 8080);
      const args = ["--dst", c.dst, "--port", String(c.port)];
      if (c.prio !== undefined) args.push("--prio", String(c.prio));
      args.push("--proto", tcp ? "tcp" : "udp", "--count", String(tcp ? 32 : c.count));
      if (c.txtime) args.push("--txtime", c.txtime);
      await run(["python3", sender, ...args], { netns: pod.id });
      const o = observer!.counts();
      const expected = c.expect ?? c.prio ?? 0;
      out.push({
        case: c.label,
        tsnproxy: phase === "with",
        sent: tcp ? o.fwdTotal : c.count,
        leftTsn0: o.fwdTotal,
        rightPriority: o.fwdPrio[expected],
        rightLaunchTime: c.txtime ? o.tsOk : null,
        pod: pod.name,
        containerId: pod.id,
        soPriority: c.prio ?? null,
        expectedPriority: expected,
        priorities: Object.fromEntries(o.fwdPrio.flatMap((n, p) => n ? [[String(p), n]] : [])),
        carrier: null,
        carrierReason: null,
      });
    }
    return out;
  },
  onTeardown(fn) {
    teardowns.push(fn);
  },
};

let tornDown: Promise<void> | undefined;
/** Undoes everything, once, whatever failed before; then lists what is left. */
function teardown(): Promise<void> {
  tornDown ??= (async () => {
    step("teardown: DEL pods, tsnproxy uninstall, delete the node");
    for (const p of [...pods].reverse()) {
      say(`    DEL ${p.id}`);
      await chainDel(p.conf, {
        containerId: p.id,
        netns: p.netns,
        binDir: `${tmp}/bin`,
        nodeNetns: topo.nodePath,
        args: p.args,
      }, p.result)
        .catch((e) => console.error(`DEL ${p.id}: ${e.message}`));
      await deleteNetns(p.id);
    }
    say("    tsnproxy uninstall");
    if (installed) await tsnproxy(topo, ["uninstall", ...loc], true);
    if (lexists(bpffs)) {
      // An install that failed halfway, or an uninstall that did: remove what is ours.
      try {
        tearDownNode({ bpffs, netns: topo.nodePath });
      } catch (e) {
        console.error(`pins: ${e instanceof Error ? e.message : e}`);
      }
    }
    say("    stand-ins, observer, namespaces");
    for (const fn of teardowns.reverse()) {
      try {
        await fn();
      } catch (e) {
        console.error(`teardown: ${e instanceof Error ? e.message : e}`);
      }
    }
    observer?.detach();
    for (const p of sinks) await p.stop();
    await topo.destroy();
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    for (const name of await listNetns()) {
      if (name.includes(topo.id)) leftovers.push(`netns ${name}`);
    }
    for (const p of [bpffs, `${bpffs}-sti`, tmp]) if (lexists(p)) leftovers.push(p);
    say(`    left behind: ${leftovers.length ? leftovers.join(", ") : "nothing"}`);
  })();
  return tornDown;
}

// Ctrl-C or a kill: undo everything before leaving.
const onSignal = (sig: "SIGINT" | "SIGTERM") => () => {
  console.error(`\n${sig}: cleaning up`);
  teardown().finally(() => Deno.exit(130));
};
const signals = (["SIGINT", "SIGTERM"] as const).map((sig) => [sig, onSignal(sig)] as const);
for (const [sig, fn] of signals) Deno.addSignalListener(sig, fn);

try {
  step(`building a node in network namespaces (${topo.node}: bridge CNI, NAT, Service DNAT, tsn0)`);
  for (const d of ["net.d", "bin", "standin-state"]) await Deno.mkdir(`${tmp}/${d}`);
  for (const p of ["bridge", "host-local", "loopback"]) {
    await Deno.symlink(`/usr/lib/cni/${p}`, `${tmp}/bin/${p}`);
  }
  await Deno.symlink(STANDIN_CNI, `${tmp}/bin/tsnp-standin`);
  const conflist: Conflist = {
    cniVersion: "1.0.0",
    name: "demo",
    plugins: [{
      type: "bridge",
      bridge: "cni0",
      isGateway: true,
      ipMasq: false,
      ipam: {
        type: "host-local",
        ranges: [[{ subnet: "10.244.0.0/24" }], [{ subnet: "fd00:244::/64" }]],
        routes: [{ dst: "0.0.0.0/0" }, { dst: "::/0" }],
        dataDir: `${tmp}/ipam`,
      },
    }],
  };
  await Deno.writeTextFile(
    `${tmp}/net.d/10-demo.conflist`,
    JSON.stringify(conflist, null, 2) + "\n",
  );
  const more: TsnInterfaceEntry[] = [];
  for (const b of ROW_BUILDERS) if (b.prepareNode) more.push(...await b.prepareNode(demo));
  await Deno.writeTextFile(`${tmp}/config.yaml`, nodeConfig(more));
  observer = Observer.attach(topo.nodePath, "tsn0");
  sinks = farSinks(topo);

  // Resolve the far end's neighbour entries first, so no case loses its first packets to ARP/ND.
  for (const dst of [FAR_V4, FAR_V6]) {
    await run(["python3", sender, "--dst", dst, "--count", "2"], { netns: topo.node });
  }

  for (const b of ROW_BUILDERS.filter((b) => b.phases.includes("without"))) {
    rows.push(...await b.build(demo, "without"));
  }

  step("tsnproxy install");
  installed = true; // whatever it did, uninstall undoes it
  const inst = await tsnproxy(topo, ["install", ...loc]);
  say(
    inst.stdout.split("\n").filter((l) => /^\S|^\s+\+/.test(l)).map((l) => `    ${l}`).join("\n"),
  );

  for (const b of ROW_BUILDERS.filter((b) => b.phases.includes("with"))) {
    rows.push(...await b.build(demo, "with"));
  }

  step("tsnproxy doctor");
  const doctorLoc = loc.filter((_, i) => loc[i] !== "--state-dir" && loc[i - 1] !== "--state-dir");
  const doc = await tsnproxy(topo, ["doctor", "--json", ...doctorLoc], true);
  const report = JSON.parse(doc.stdout) as {
    summary: Record<string, number>;
    checks: Array<{ id: string; status: string; found: string }>;
  };
  doctorSummary = report.summary;
  if (!json) {
    const human = await tsnproxy(topo, ["doctor", ...doctorLoc], true);
    say(human.stdout.split("\n").map((l) => `    ${l}`).join("\n"));
  }
  step("tsnproxy status");
  const statusLoc = ["--bpffs", bpffs, "--config", `${tmp}/config.yaml`];
  const st = await tsnproxy(topo, ["status", "--json", ...statusLoc]);
  status = JSON.parse(st.stdout) as StatusReport;
  if (!json) {
    const human = await tsnproxy(topo, ["status", ...statusLoc]);
    say(human.stdout.split("\n").map((l) => `    ${l}`).join("\n"));
  }
  for (const r of rows) {
    const p = status.pods?.find((p) => p.containerId === r.containerId);
    if (r.tsnproxy && p) {
      r.carrier = p.carrier;
      r.carrierReason = p.carrierReason;
    }
  }
} finally {
  await teardown();
  for (const [sig, fn] of signals) Deno.removeSignalListener(sig, fn);
}

const reports = ROW_BUILDERS.flatMap((b) => b.report ? [b.report(status)] : []);

if (json) {
  console.log(
    JSON.stringify(
      {
        kernel: Deno.osRelease(),
        rows,
        doctor: doctorSummary,
        status,
        ...Object.fromEntries(reports.map((r) => [r.key, r.json])),
        leftovers,
      },
      null,
      2,
    ),
  );
} else {
  const cols: Array<[string, number, (r: Row) => string]> = [
    ["pod", 12, (r) => r.pod],
    ["traffic from the pod", 38, (r) => r.case],
    ["tsnproxy", 9, (r) => r.tsnproxy ? "yes" : "no"],
    ["carrier", 8, (r) => r.carrier ?? "-"],
    ["sent", 5, (r) => String(r.sent)],
    ["left tsn0", 10, (r) => String(r.leftTsn0)],
    ["with its priority", 18, (r) => pct(r.rightPriority, r.sent)],
    ["left at", 14, (r) => leftAt(r)],
    [
      "with its launch time",
      0,
      (r) => r.rightLaunchTime === null ? "-" : pct(r.rightLaunchTime, r.sent),
    ],
  ];
  const line = (cells: string[]) =>
    cells.map((c, i) => cols[i][1] ? c.padEnd(cols[i][1]) : c).join(" ").trimEnd();
  console.log(`\n${line(cols.map((c) => c[0]))}`);
  for (const r of rows) console.log(line(cols.map((c) => c[2](r))));
  console.log("");
  for (const r of reports) for (const l of r.lines) console.log(l);
  console.log(`doctor: ${Object.entries(doctorSummary).map(([k, v]) => `${v} ${k}`).join(", ")}`);
  console.log(
    `kernel ${Deno.osRelease()}: CLOCK_TAI launch times cross veth on 6.11+ by themselves; REALTIME ones (and TAI before 6.11) need tsnproxy.`,
  );
  console.log(`teardown: ${leftovers.length ? `LEFT ${leftovers.join(", ")}` : "nothing left"}`);
}
if (leftovers.length) Deno.exitCode = 1;

/** The demo node's tsnproxy config: tsn0 alone, or the list with what row builders added. */
function nodeConfig(more: TsnInterfaceEntry[]): string {
  const lines = more.length === 0
    ? ["# the demo node's tsnproxy config", "tsnInterface: tsn0", "qdisc:", "  kind: keep"]
    : [
      "# the demo node's tsnproxy config: tsn0, and the TSN interfaces the rows add",
      "tsnInterfaces:",
      "  - name: tsn0",
      "    qdisc: {kind: keep}",
      ...more.flatMap((t) => [
        `  - name: ${t.name}`,
        ...(t.vlan ? [`    vlan: {egressQosMap: ${JSON.stringify(t.vlan.egressQosMap)}}`] : []),
      ]),
    ];
  return lines.join("\n") + "\n";
}

function pct(n: number, of: number): string {
  return `${n} (${of ? Math.round((100 * n) / of) : 0}%)`;
}

/** "0:500", "4:498 0:2": what left tsn0 at which priority. */
function leftAt(r: Row): string {
  const e = Object.entries(r.priorities);
  return e.length ? e.map(([p, n]) => `${p === "16" ? ">15" : p}:${n}`).join(" ") : "-";
}
