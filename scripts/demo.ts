/**
 * `deno task demo`: the one-minute tour on a throwaway node built in network namespaces.
 *
 *   1. a node: bridge CNI (the reference `bridge` + `host-local` plugins), IP forwarding,
 *      MASQUERADE and a DNAT'd "Service" towards tsn0, the TSN NIC, and a far end;
 *   2. a talker pod created through the chain WITHOUT tsnproxy: an unmodified sender with
 *      SO_PRIORITY and SO_TXTIME; what leaves tsn0 is counted;
 *   3. `tsnproxy install` (binary, pinned datapath, restorer on tsn0, entry appended to the
 *      conflist), a second talker pod created through the chain WITH tsnproxy, same traffic;
 *   4. `tsnproxy doctor`, `tsnproxy status`; then DEL, `tsnproxy uninstall`, teardown.
 *
 * Where the kernel has 8021q, a VLAN device tsn0.100 over tsn0 is a second TSN interface with
 * an egress-qos-map in the node config (priority 3 -> PCP 3): the VLAN PCP row reads the
 * 802.1Q tag of each frame at the far end (tests/lib/pcp_capture.py on far0) without and with
 * tsnproxy. Without 8021q (this project's test host) the row is skipped, saying why.
 *
 * `--json` prints one JSON document on stdout instead of the tables.
 */
import { chainAdd, chainDel, type Conflist } from "./lib/cni_chain.ts";
import { Observer } from "../tests/lib/observer.ts";
import {
  createTopology,
  FAR_V4,
  FAR_V6,
  SERVICE_V4,
  type Topology,
} from "../tests/lib/topology.ts";
import { run } from "../tests/lib/run.ts";
import { moduleState } from "../src/doctor/probe.ts";

const json = Deno.args.includes("--json");
const root = new URL("..", import.meta.url).pathname;
const launcher = `${root}scripts/tsnproxy`;
const sender = `${root}tests/lib/sender.py`;
const pcpCapture = `${root}tests/lib/pcp_capture.py`;
const step = (s: string) => json || console.error(`\x1b[1m==>\x1b[0m ${s}`);

interface Case {
  label: string;
  dst: string;
  port: number;
  prio: number;
  txtime?: "tai" | "realtime";
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

/** The VLAN PCP row: tsn0.100 (VLAN 100 over tsn0), priority 3 -> PCP 3 in the node config. */
const VLAN = { dev: "tsn0.100", id: 100, node: "198.18.100.1", far: "198.18.100.2", prio: 3 };
const VLAN_MAP: Record<string, number> = { "3": 3, "5": 5 };
const VLAN_COUNT = 200;

interface VlanRow {
  tsnproxy: boolean;
  sent: number;
  /** Tagged frames of the case seen at the far end, by PCP. */
  pcps: Record<string, number>;
  rightPcp: number;
}

interface Row {
  case: string;
  tsnproxy: boolean;
  sent: number;
  leftTsn0: number;
  rightPriority: number;
  rightLaunchTime: number | null;
}

async function tsnproxy(node: Topology, args: string[], allowFail = false) {
  return await run(["nsenter", `--net=${node.nodePath}`, launcher, ...args], { allowFail });
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
const pods: Array<{ id: string; netns: string; conf: Conflist; result: unknown }> = [];
let observer: Observer | undefined;
const sinks: Deno.ChildProcess[] = [];
let installed = false;
const rows: Row[] = [];
let doctorSummary: Record<string, number> = {};
const vlanRows: VlanRow[] = [];
let vlanSkipped: string | undefined;

/**
 * Makes tsn0.100 where the kernel can: undefined when it did, else why not (the VLAN PCP row
 * is then skipped).
 */
async function addVlan(node: Topology): Promise<string | undefined> {
  const r = await run(
    ["ip", "-n", node.node, "link", "add", "link", "tsn0", "name", VLAN.dev, "type", "vlan"]
      .concat(["id", String(VLAN.id)]),
    { allowFail: true },
  );
  if (r.code !== 0) {
    const state = await moduleState("8021q", "CONFIG_VLAN_8021Q");
    return `this kernel (${Deno.osRelease()}) cannot create a VLAN device (${r.stderr.trim()}; ` +
      `8021q: ${state === "missing" ? "not built, no module" : state}). ` +
      "tests/vm/vlan_pcp_test.ts shows the row's result in the Debian 6.1 and 6.12 guests";
  }
  const far0 = JSON.parse(
    (await run(["ip", "-n", node.far, "-j", "link", "show", "far0"])).stdout,
  )[0].address;
  for (
    const a of [
      ["addr", "add", `${VLAN.node}/24`, "dev", VLAN.dev],
      ["neigh", "replace", VLAN.far, "lladdr", far0, "dev", VLAN.dev, "nud", "permanent"],
      ["link", "set", VLAN.dev, "up"],
    ]
  ) await run(["ip", "-n", node.node, ...a]);
  return undefined;
}

/** The 802.1Q PCPs of a pod's priority-3 frames to the far end over tsn0.100. */
async function measureVlan(node: Topology, pod: string, withTsnproxy: boolean): Promise<void> {
  const cap = new Deno.Command("ip", {
    args: ["netns", "exec", node.far, "python3", pcpCapture, "--ifname", "far0"],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = cap.stdout.getReader();
  const dec = new TextDecoder();
  let out = "";
  while (!out.includes("ready\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    out += dec.decode(value);
  }
  const args = ["--dst", VLAN.far, "--port", "8080", "--prio", String(VLAN.prio)];
  await run([
    "ip",
    "netns",
    "exec",
    pod,
    "python3",
    sender,
    ...args,
    "--count",
    String(VLAN_COUNT),
  ]);
  await run([
    "ip",
    "netns",
    "exec",
    node.node,
    "python3",
    sender,
    "--dst",
    VLAN.far,
    "--port",
    "9999",
  ]);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    out += dec.decode(value);
  }
  await cap.status;
  const c = JSON.parse(out.slice(out.indexOf("ready\n") + 6)) as {
    ports: Record<string, Record<string, number>>;
  };
  const pcps = c.ports["8080"] ?? {};
  vlanRows.push({
    tsnproxy: withTsnproxy,
    sent: VLAN_COUNT,
    pcps,
    rightPcp: pcps[String(VLAN_MAP[String(VLAN.prio)])] ?? 0,
  });
}
let status: unknown;

try {
  step(`building a node in network namespaces (${topo.node}: bridge CNI, NAT, Service DNAT, tsn0)`);
  await Deno.mkdir(`${tmp}/net.d`);
  await Deno.mkdir(`${tmp}/bin`);
  for (const p of ["bridge", "host-local", "loopback"]) {
    await Deno.symlink(`/usr/lib/cni/${p}`, `${tmp}/bin/${p}`);
  }
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
  vlanSkipped = await addVlan(topo);
  await Deno.writeTextFile(
    `${tmp}/config.yaml`,
    (vlanSkipped
      ? ["# the demo node's tsnproxy config", "tsnInterface: tsn0", "qdisc:", "  kind: keep"]
      : [
        "# the demo node's tsnproxy config: tsn0, and the VLAN device over it with its PCP map",
        "tsnInterfaces:",
        "  - name: tsn0",
        "    qdisc: {kind: keep}",
        `  - name: ${VLAN.dev}`,
        `    vlan: {egressQosMap: ${JSON.stringify(VLAN_MAP)}}`,
      ]).join("\n") + "\n",
  );
  observer = Observer.attach(topo.nodePath, "tsn0");
  for (const l of ["UDP6-RECV:8080,ipv6only=0", "TCP6-LISTEN:8080,ipv6only=0,reuseaddr,fork"]) {
    sinks.push(new Deno.Command("ip", {
      args: ["netns", "exec", topo.far, "socat", "-u", l, "/dev/null"],
      stdout: "null",
      stderr: "null",
    }).spawn());
  }

  const addPod = async (label: string) => {
    const id = `demo-${label}-${topo.id}`;
    await run(["ip", "netns", "add", id]);
    await run([
      "ip",
      "netns",
      "exec",
      id,
      "sysctl",
      "-qw",
      "net.ipv6.conf.all.accept_dad=0",
      "net.ipv6.conf.default.accept_dad=0",
    ]);
    const conf = JSON.parse(await Deno.readTextFile(`${tmp}/net.d/10-demo.conflist`)) as Conflist;
    const ctx = {
      containerId: id,
      netns: `/run/netns/${id}`,
      binDir: `${tmp}/bin`,
      nodeNetns: topo.nodePath,
    };
    const result = await chainAdd(conf, ctx);
    pods.push({ id, netns: ctx.netns, conf, result });
    step(`pod ${id}: ADD through ${conf.plugins.map((p) => p.type).join(" -> ")}`);
    return id;
  };

  const measure = async (pod: string, withTsnproxy: boolean) => {
    await new Promise((r) => setTimeout(r, 300)); // IPv6 routes settle
    for (const c of CASES) {
      const tcp = c.count === 0;
      observer!.filter(tcp ? 6 : 17, 8080);
      const args = ["--dst", c.dst, "--port", String(c.port), "--prio", String(c.prio)];
      args.push("--proto", tcp ? "tcp" : "udp", "--count", String(tcp ? 32 : c.count));
      if (c.txtime) args.push("--txtime", c.txtime);
      await run(["ip", "netns", "exec", pod, "python3", sender, ...args]);
      const o = observer!.counts();
      rows.push({
        case: c.label,
        tsnproxy: withTsnproxy,
        sent: tcp ? o.fwdTotal : c.count,
        leftTsn0: o.fwdTotal,
        rightPriority: o.fwdPrio[c.prio],
        rightLaunchTime: c.txtime ? o.tsOk : null,
      });
    }
  };

  // Resolve the far end's neighbour entries first, so no case loses its first packets to ARP/ND.
  for (const dst of [FAR_V4, FAR_V6]) {
    await run(["ip", "netns", "exec", topo.node, "python3", sender, "--dst", dst, "--count", "2"]);
  }

  step("talker pod WITHOUT tsnproxy");
  const plain = await addPod("plain");
  await measure(plain, false);
  if (vlanSkipped) step(`VLAN PCP row skipped: ${vlanSkipped}`);
  else await measureVlan(topo, plain, false);

  step("tsnproxy install");
  const inst = await tsnproxy(topo, ["install", ...loc]);
  installed = true;
  if (!json) {
    console.error(
      inst.stdout.split("\n").filter((l) => /^\S|^\s+\+/.test(l)).map((l) => `    ${l}`).join("\n"),
    );
  }

  step("talker pod WITH tsnproxy");
  const tsn = await addPod("tsn");
  await measure(tsn, true);
  if (!vlanSkipped) await measureVlan(topo, tsn, true);

  step("tsnproxy doctor");
  const doc = await tsnproxy(topo, [
    "doctor",
    "--json",
    ...loc.filter((_, i) => loc[i] !== "--state-dir" && loc[i - 1] !== "--state-dir"),
  ], true);
  const report = JSON.parse(doc.stdout) as {
    summary: Record<string, number>;
    checks: Array<{ id: string; status: string; found: string }>;
  };
  doctorSummary = report.summary;
  if (!json) {
    const human = await tsnproxy(topo, [
      "doctor",
      ...loc.filter((_, i) => loc[i] !== "--state-dir" && loc[i - 1] !== "--state-dir"),
    ], true);
    console.error(human.stdout.split("\n").map((l) => `    ${l}`).join("\n"));
  }
  step("tsnproxy status");
  const st = await tsnproxy(topo, [
    "status",
    "--json",
    "--bpffs",
    bpffs,
    "--config",
    `${tmp}/config.yaml`,
  ]);
  status = JSON.parse(st.stdout);
  if (!json) {
    const human = await tsnproxy(topo, [
      "status",
      "--bpffs",
      bpffs,
      "--config",
      `${tmp}/config.yaml`,
    ]);
    console.error(human.stdout.split("\n").map((l) => `    ${l}`).join("\n"));
  }
} finally {
  step("teardown: DEL pods, tsnproxy uninstall, delete the node");
  for (const p of pods.reverse()) {
    if (!json) console.error(`    DEL ${p.id}`);
    await chainDel(p.conf, {
      containerId: p.id,
      netns: p.netns,
      binDir: `${tmp}/bin`,
      nodeNetns: topo.nodePath,
    }, p.result)
      .catch((e) => console.error(`DEL ${p.id}: ${e.message}`));
    await run(["ip", "netns", "del", p.id], { allowFail: true });
  }
  if (!json) console.error("    tsnproxy uninstall");
  if (installed) await tsnproxy(topo, ["uninstall", ...loc], true);
  if (!json) console.error("    observer, namespaces");
  observer?.detach();
  for (const p of sinks) {
    p.kill("SIGKILL");
    await p.status;
  }
  await topo.destroy();
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
}

if (json) {
  console.log(
    JSON.stringify(
      {
        kernel: Deno.osRelease(),
        rows,
        vlan: vlanSkipped ? { skipped: vlanSkipped } : { map: VLAN_MAP, rows: vlanRows },
        doctor: doctorSummary,
        status,
      },
      null,
      2,
    ),
  );
} else {
  const pad = (s: string | number, n: number) => String(s).padEnd(n);
  const pct = (n: number, of: number) => `${n} (${of ? Math.round((100 * n) / of) : 0}%)`;
  console.log(
    `\n${pad("traffic from the pod", 38)} ${pad("tsnproxy", 9)} ${pad("sent", 5)} ${
      pad("left tsn0", 10)
    } ${pad("with its priority", 18)} with its launch time`,
  );
  for (const r of rows) {
    console.log(
      `${pad(r.case, 38)} ${pad(r.tsnproxy ? "yes" : "no", 9)} ${pad(r.sent, 5)} ${
        pad(r.leftTsn0, 10)
      } ${pad(pct(r.rightPriority, r.sent), 18)} ${
        r.rightLaunchTime === null ? "-" : pct(r.rightLaunchTime, r.sent)
      }`,
    );
  }
  if (vlanSkipped) {
    console.log(`\nVLAN PCP row skipped: ${vlanSkipped}`);
  } else {
    console.log(
      `\n${pad(`UDP over VLAN ${VLAN.id}, SO_PRIORITY ${VLAN.prio}`, 38)} ${pad("tsnproxy", 9)} ${
        pad("sent", 5)
      } ${pad("tagged", 10)} with PCP ${VLAN_MAP[String(VLAN.prio)]} (the map's)   PCPs seen`,
    );
    for (const r of vlanRows) {
      const tagged = Object.values(r.pcps).reduce((a, b) => a + b, 0);
      console.log(
        `${pad("", 38)} ${pad(r.tsnproxy ? "yes" : "no", 9)} ${pad(r.sent, 5)} ${pad(tagged, 10)} ${
          pad(pct(r.rightPcp, r.sent), 24)
        } ${Object.entries(r.pcps).map(([p, n]) => `PCP ${p} x${n}`).join(", ")}`,
      );
    }
  }
  console.log(`\ndoctor: ${Object.entries(doctorSummary).map(([k, v]) => `${v} ${k}`).join(", ")}`);
  console.log(
    `kernel ${Deno.osRelease()}: CLOCK_TAI launch times cross veth on 6.11+ by themselves; REALTIME ones (and TAI before 6.11) need tsnproxy.`,
  );
}
