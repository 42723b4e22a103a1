/**
 * Runs inside a test VM (tests/vm/vlan_pcp_test.ts): the 802.1Q PCP of the frames a pod's
 * packets leave in, read off the wire at the far end, with and without tsnproxy. The guest's
 * own namespace is the node; pods and the far end are netns:
 *
 *   pod0/pod1 netns (eth0) --veth--> node (vpod0/vpod1, ip_forward)
 *     --> tsn0.100 (VLAN 100 over tsn0, 198.18.100.1) --> tsn0 (veth) --veth--> far netns (far0)
 *
 * The far end has no VLAN device: an AF_PACKET socket on far0 (tests/lib/pcp_capture.py)
 * reads each frame's tag as it arrives, by UDP destination port (9000 + the sender's
 * SO_PRIORITY) and PCP.
 *
 *   A. the operator's map on tsn0.100 is 3:5 (iproute2); before install every frame of pod0
 *      leaves with PCP 0 (priority 0 after the veth crossing, unmapped).
 *   B. install (installWithConfig) with tsnInterfaces [tsn0, tsn0.100 with vlan.egressQosMap
 *      0:1 1:2 2:4 3:6 5:7], policy.maxPriority 5: the map is set through our rtnetlink
 *      layer (read back by ours and by `ip -d link`), the restorer sits on both; the second
 *      plan is empty. pod0 (CNI ADD through the installed plugin) sends priorities 0..5: each
 *      leaves with the PCP the map gives (4, unmapped: PCP 0); pod1 (no ADD, no tsnproxy)
 *      sends the same: every frame leaves with the PCP of priority 0 (1).
 *   C. doctor: interface.vlan_pcp shows the map and warns that priority 4 has no PCP.
 *   D. the operator changes 5 to 3 after install; uninstall restores 3:5 and removes 0, 1, 2
 *      (none was there before), leaves 5:3 (no longer what install set) and says so.
 * Prints a TSNVM-JSON "vlanpcp" result; exits 1 when a check failed.
 */
import { installWithConfig } from "../../../src/install/command.ts";
import { formatNodePlan, planIsEmpty } from "../../../src/install/plan.ts";
import { runUninstall } from "../../../src/install/uninstall.ts";
import { DoctorContext } from "../../../src/doctor/context.ts";
import { interfaceChecks } from "../../../src/doctor/checks_net.ts";
import { parseNodeConfig } from "../../../src/config/node.ts";
import { findLink } from "../../../src/netlink/mod.ts";
import { restorerAttached } from "../../../src/bpf/node.ts";
import { loadModules, report } from "./report.ts";
import { run } from "../../lib/run.ts";
import { Netns } from "../../lib/netns.ts";
import { capturePcp, type PcpCounts } from "../../lib/pcp_capture.ts";

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
  cniConfDir: `${DIR}/net.d`,
  cniBinDir: `${DIR}/bin`,
  bpffs: "/sys/fs/bpf/tsnproxy",
  stateDir: `${DIR}/state`,
};
const FAR = "198.18.100.2";
const PRIOS = [0, 1, 2, 3, 4, 5];
/** Distinct per priority so a swapped mapping cannot pass. */
const COUNT = [3, 4, 5, 6, 7, 8];
/** The config's map (priority -> PCP); priority 4 is left out on purpose. */
const MAP: Record<string, number> = { "0": 1, "1": 2, "2": 4, "3": 6, "5": 7 };
const PORT = (prio: number) => 9000 + prio;
const NO_IPV6 = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"];
/** A namespace with IPv6 off (no autoconf or MLD frames in the capture). */
const quietNetns = (name: string) => Netns.create({ name, lo: false, ipv6: false });
const MAC = (n: number) => `02:00:00:00:00:${n.toString(16).padStart(2, "0")}`;

const sh = (...argv: string[]) => run(argv);
async function ipBatch(lines: string[], ns?: string) {
  await Deno.writeTextFile(`${DIR}/ip.batch`, lines.join("\n") + "\n");
  await run(["ip", ...(ns ? ["-n", ns] : []), "-batch", `${DIR}/ip.batch`]);
}

async function topology() {
  await sh("sysctl", "-qw", ...NO_IPV6, "net.ipv4.ip_forward=1");
  await quietNetns("far");
  await ipBatch([
    `link add tsn0 address ${MAC(1)} type veth peer name far0 address ${MAC(2)} netns far`,
    "link set tsn0 up",
    "link add link tsn0 name tsn0.100 type vlan id 100",
    "addr add 198.18.100.1/24 dev tsn0.100",
    `neigh replace ${FAR} lladdr ${MAC(2)} dev tsn0.100 nud permanent`,
    "link set tsn0.100 up",
  ]);
  await ipBatch(["link set far0 up", "link set lo up"], "far");
  for (const n of [0, 1]) {
    const ns = `pod${n}`;
    await quietNetns(ns);
    await ipBatch([
      `link add vpod${n} address ${MAC(0x10 + 2 * n)} type veth peer name eth0 address ${
        MAC(0x11 + 2 * n)
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
}

/**
 * Runs tests/lib/sender.py once per priority in one python process (runpy: python starts in
 * ~2 s under TCG), in netns `ns` (the node's own when empty).
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
async function sendAll(ns: string, sends: { prio: number; count: number; port: number }[]) {
  const argvs = sends.map((s) => [
    ...["--dst", FAR, "--port", String(s.port), "--count", String(s.count)],
    ...["--prio", String(s.prio)],
  ]);
  const argv = ["python3", "-c", RUNPY, SENDER, JSON.stringify(argvs)];
  await run(argv, { netns: ns || undefined });
}

/** What far0 saw while `pod` sent every priority: port -> PCP -> frames. */
function capture(pod: string): Promise<PcpCounts> {
  return capturePcp("far", "far0", async () => {
    await sendAll(pod, PRIOS.map((p) => ({ prio: p, count: COUNT[p], port: PORT(p) })));
    await sendAll("", [{ prio: 0, count: 1, port: 9999 }]);
  });
}

interface Row {
  scenario: string;
  tsnproxy: "without" | "with";
  pod: string;
  /** per priority: PCP -> frames */
  pcp: Record<string, Record<string, number>>;
  untagged: number;
  vids: number[];
}
const rows: Row[] = [];

/** Sends from `pod` and checks each priority's frames all carry `want(prio)`. */
async function measure(
  scenario: string,
  tsnproxy: Row["tsnproxy"],
  pod: string,
  want: (prio: number) => number,
) {
  const c = await capture(pod);
  const pcp: Row["pcp"] = {};
  for (const p of PRIOS) pcp[String(p)] = c.ports[String(PORT(p))] ?? {};
  const untagged = Object.values(c.untagged).reduce((a, b) => a + b, 0);
  rows.push({ scenario, tsnproxy, pod: pod || "node", pcp, untagged, vids: c.vids });
  check(c.stopped, `${scenario}: the capture never saw the stop frame`);
  check(untagged === 0, `${scenario}: ${untagged} untagged frames`);
  check(JSON.stringify(c.vids) === "[100]", `${scenario}: VLAN ids ${c.vids}`);
  for (const p of PRIOS) {
    const expected = { [String(want(p))]: COUNT[p] };
    check(
      JSON.stringify(pcp[String(p)]) === JSON.stringify(expected),
      `${scenario} (${tsnproxy}, ${pod || "node"}): priority ${p}: PCP counts ${
        JSON.stringify(pcp[String(p)])
      }, expected ${JSON.stringify(expected)}`,
    );
  }
}

/** tsn0.100's egress map as our netlink layer reads it, and as iproute2 prints it. */
async function maps(): Promise<{ ours: [number, number][]; iproute2: string }> {
  const ours = findLink("tsn0.100")?.vlan?.egress ?? [];
  const d = (await run(["ip", "-d", "link", "show", "dev", "tsn0.100"])).stdout;
  const m = /egress-qos-map \{([^}]*)\}/.exec(d);
  return { ours, iproute2: (m?.[1] ?? "").trim().replace(/\s+/g, " ") };
}

async function cniAdd(n: number): Promise<boolean> {
  const v = JSON.parse(Deno.readTextFileSync(`${LOC.cniConfDir}/10-bridge.conflist`));
  const entry = v.plugins.at(-1);
  if (!check(entry?.type === "tsnproxy", "no tsnproxy entry at the end of the conflist")) {
    return false;
  }
  const prevResult = {
    cniVersion: v.cniVersion,
    interfaces: [
      { name: `vpod${n}`, mac: MAC(0x10 + 2 * n) },
      { name: "eth0", mac: MAC(0x11 + 2 * n), sandbox: `/run/netns/pod${n}` },
    ],
    ips: [{ address: `10.244.${n}.10/24`, gateway: `10.244.${n}.1`, interface: 1 }],
    routes: [{ dst: "0.0.0.0/0" }],
    dns: {},
  };
  const r = await run([`${LOC.cniBinDir}/tsnproxy`], {
    env: {
      CNI_COMMAND: "ADD",
      CNI_CONTAINERID: `pod${n}-${"0".repeat(60)}`.slice(0, 64),
      CNI_NETNS: `/run/netns/pod${n}`,
      CNI_IFNAME: "eth0",
      CNI_PATH: LOC.cniBinDir,
    },
    clearEnv: true,
    cwd: "/",
    stdin: JSON.stringify({ cniVersion: v.cniVersion, name: v.name, ...entry, prevResult }),
    allowFail: true,
  });
  return check(r.code === 0, `CNI ADD pod${n} exited ${r.code}: ${r.stdout} ${r.stderr}`);
}

const CONFIG = `policy:
  maxPriority: 5
tsnInterfaces:
  - name: tsn0
  - name: tsn0.100
    vlan:
      egressQosMap: ${JSON.stringify(MAP)}
`;

const result: Record<string, unknown> = { kernel: KERNEL };
try {
  await loadModules(["8021q"]);
  await Deno.mkdir(LOC.cniConfDir, { recursive: true });
  await Deno.copyFile(FIXTURE, `${LOC.cniConfDir}/10-bridge.conflist`);
  await topology();

  // --- A. the operator's map; no tsnproxy
  await sh("ip", "link", "set", "dev", "tsn0.100", "type", "vlan", "egress-qos-map", "3:5");
  result.operatorMap = await maps();
  await measure("operator's map 3:5, before install", "without", "pod0", () => 0);

  // --- B. install: the configured map, restorers on tsn0 and tsn0.100
  await Deno.writeTextFile(`${DIR}/config.yaml`, CONFIG);
  const r = await installWithConfig(CONFIG, LOC);
  console.log(`--- install:\n${r.text}`);
  const vlanPlan = r.ran.interfaces.find((i) => i.ifname === "tsn0.100")?.vlan;
  result.install = {
    api: r.ran.target.api,
    interfaces: r.ran.interfaces.map((i) => i.ifname),
    vlanChanges: vlanPlan?.changes ?? null,
    afterEmpty: planIsEmpty(r.after),
  };
  check(planIsEmpty(r.after), `second plan not empty:\n${formatNodePlan(r.after)}`);
  for (const dev of ["tsn0", "tsn0.100"]) {
    check(restorerAttached(LOC.bpffs, dev) !== undefined, `no restorer on ${dev}`);
  }
  result.installedMap = await maps();
  check(await cniAdd(0), "ADD pod0");
  const pcpOf = (p: number) => MAP[String(p)] ?? 0;
  await measure("config map 0:1 1:2 2:4 3:6 5:7", "with", "pod0", pcpOf);
  await measure("config map 0:1 1:2 2:4 3:6 5:7", "without", "pod1", () => MAP["0"]);

  // --- C. doctor's interface checks (the whole report would start the installed plugin for
  // its version: ~40 s more under TCG)
  const ctx = new DoctorContext({ config: `${DIR}/config.yaml`, json: true, ...LOC });
  ctx.config = parseNodeConfig(CONFIG, "config.yaml", { bpffs: LOC.bpffs });
  interfaceChecks(ctx);
  result.doctor = ctx.checks.filter((c) => c.id === "interface.vlan_pcp")
    .map((c) => ({ status: c.status, found: c.found, fix: c.fix, data: c.data }));
  result.restorerChecks = ctx.checks.filter((c) => c.id === "interface.restorer")
    .map((c) => [c.data?.interface, c.status]);

  // --- D. the operator changes priority 5 after install; uninstall
  await sh("ip", "link", "set", "dev", "tsn0.100", "type", "vlan", "egress-qos-map", "5:3");
  const code = await runUninstall({
    config: `${DIR}/config.yaml`,
    ...LOC,
    dryRun: false,
    removeQdisc: false,
  });
  check(code === 0, `uninstall exited ${code}`);
  result.uninstalledMap = await maps();
  // The node's own sockets keep their priority: the restored map on the wire.
  const after: Record<number, number> = { 3: 5, 5: 3 };
  await measure("after uninstall: 3:5 back, 5:3 kept", "without", "", (p) => after[p] ?? 0);
  // pod0's saver is gone: every frame is priority 0, unmapped now: PCP 0.
  await measure("after uninstall: 3:5 back, 5:3 kept", "without", "pod0", () => 0);
} catch (e) {
  failures.push(`exception: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
}

console.log(`\nPCP per priority on ${KERNEL} (port 900p = SO_PRIORITY p):`);
for (const r of rows) {
  console.log(
    `${r.scenario.padEnd(40)} ${r.tsnproxy.padEnd(8)} ${r.pod.padEnd(5)} ` +
      PRIOS.map((p) => `p${p}:${JSON.stringify(r.pcp[String(p)])}`).join(" "),
  );
}
if (failures.length) console.log("\nFAILURES:\n  " + failures.join("\n  "));
report("vlanpcp", { ...result, rows, failures });
Deno.exit(failures.length === 0 ? 0 : 1);
