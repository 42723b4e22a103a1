/**
 * Runs inside a test VM (tests/vm/coexist_test.ts): the stand-ins that need a guest kernel.
 * The guest's own namespace is the node (tsn0 veth to a far netns, IPv6 off, static
 * neighbours, the far end routing the pod networks back through the node); tsnproxy is
 * installed with installWithConfig (qdisc kind keep) and its CNI entry, as install wrote it,
 * ends each chain; the observer (tests/bpf/observer.c) counts what leaves tsn0.
 *
 *   netkit (6.12 only: CONFIG_NETKIT=y): the stand-in CNI plugin is the primary, as
 *     cilium-cni is in Cilium's netkit mode: a netkit pair (L3) made through our rtnetlink
 *     layer, and cil_from_container's stand-in on the netkit peer hook (BPF_NETKIT_PEER on
 *     the primary device), attached during ADD, before tsnproxy's; cil_to_netdev's on tsn0's
 *     tcx egress, appended (the observer then goes on tcx right before it).
 *   ipvs: kube-proxy's IPVS mode (kube-ipvs0 dummy with the ClusterIP, ipvsadm virtual
 *     servers for the ClusterIP and a NodePort on the node's TSN address, NAT forwarding,
 *     KUBE-MARK-MASQ + MASQUERADE), pods behind the ptp plugin.
 *
 * A pod sends priority p with 10 + p packets for every p in 0..15 (one python process: they
 * start slowly under TCG), so the histogram the observer counts must equal the one sent;
 * then SO_TXTIME CLOCK_TAI at priority 3 and CLOCK_REALTIME at priority 5.
 * Prints a TSNVM-JSON "coexist" result with every failed check (the host side asserts);
 * exits 1 only when a scenario could not run (an exception).
 */
import { installWithConfig } from "../../../src/install/command.ts";
import { Observer, type ObserverCounts } from "../../lib/observer.ts";
import { chainAdd, type Conflist } from "../../../scripts/lib/cni_chain.ts";
import { type StandinCounts, StandinDatapath } from "../../lib/standins.ts";
import { installKubeProxy, ipvsServices, kubeMarkSeen } from "../../lib/kube_proxy.ts";
import { loadModules, report } from "./report.ts";
import { run } from "../../lib/run.ts";
import { Netns } from "../../lib/netns.ts";

const KERNEL = Deno.osRelease();
const NETKIT = !KERNEL.startsWith("6.1.");
const CHECKOUT = new URL("../../..", import.meta.url).pathname.replace(/\/$/, "");
const SENDER = `${CHECKOUT}/tests/lib/sender.py`;
const DIR = "/tmp/tsnp-coexist";
const LOC = {
  tsnInterface: "tsn0",
  cniConfDir: `${DIR}/net.d`,
  cniBinDir: `${DIR}/bin`,
  bpffs: "/sys/fs/bpf/tsnproxy",
  stateDir: `${DIR}/state`,
};
const FAR = "198.18.0.2";
const NODE = "198.18.0.1";
const t0 = performance.now();
const timings: Record<string, number> = {};
const mark = (what: string) => timings[what] = Math.round(performance.now() - t0);
const failures: string[] = [];

const sh = (...argv: string[]) => run(argv);
const MAC = (n: number) => `02:00:00:00:00:${n.toString(16).padStart(2, "0")}`;

async function topology() {
  await sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv4.ip_forward=1");
  await Netns.create({ name: "far", lo: false });
  const batch = async (lines: string[], ns?: string) => {
    await Deno.writeTextFile(`${DIR}/ip.batch`, lines.join("\n") + "\n");
    await run(["ip", ...(ns ? ["-n", ns] : []), "-batch", `${DIR}/ip.batch`]);
  };
  await batch([
    `link add tsn0 address ${MAC(1)} type veth peer name far0 address ${MAC(2)} netns far`,
    `addr add ${NODE}/24 dev tsn0`,
    `neigh replace ${FAR} lladdr ${MAC(2)} dev tsn0 nud permanent`,
    "link set tsn0 up",
    `route add default via ${FAR}`,
  ]);
  await batch([
    `addr add ${FAR}/24 dev far0`,
    `neigh replace ${NODE} lladdr ${MAC(1)} dev far0 nud permanent`,
    "link set far0 up",
    "link set lo up",
    `route add 10.244.0.0/16 via ${NODE}`,
  ], "far");
}

/** Sends from `ns` (runpy: one python process for every sender run). */
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
async function send(ns: string, argvs: string[][]) {
  await run(["python3", "-c", RUNPY, SENDER, JSON.stringify(argvs)], { netns: ns });
}

interface Case {
  scenario: string;
  path: string;
  /** Packets per priority the pod sent (index = priority). */
  sent: number[];
  /** What left tsn0, by priority (forwarded + node-sent: IPVS re-sends from LOCAL_IN). */
  left: number[];
  txtime: Array<{ clock: string; prio: number; sent: number; atPrio: number; ok: number }>;
}
const cases: Case[] = [];
const standins: Record<string, StandinCounts> = {};
const notes: string[] = [];

const PRIO_COUNTS = Array.from({ length: 16 }, (_, p) => 10 + p);
const TX = [{ clock: "tai", prio: 3, count: 20 }, { clock: "realtime", prio: 5, count: 20 }];

async function settle(obs: Observer, n: number): Promise<ObserverCounts> {
  const end = Date.now() + 8000;
  let c = obs.counts();
  while (c.fwdTotal + c.localTotal < n && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 100));
    c = obs.counts();
  }
  await new Promise((r) => setTimeout(r, 200)); // late extras would show up too
  return obs.counts();
}

/** Every priority, then the launch times, from pod `ns` to dst:port. */
async function measure(
  obs: Observer,
  scenario: string,
  path: string,
  ns: string,
  dst: string,
  port: number,
) {
  obs.filter(17, 8080);
  const base = ["--dst", dst, "--port", String(port)];
  await send(ns, PRIO_COUNTS.map((n, p) => [...base, "--count", String(n), "--prio", String(p)]));
  const total = PRIO_COUNTS.reduce((a, b) => a + b, 0);
  const c = await settle(obs, total);
  const left = c.fwdPrio.map((n, p) => n + c.localPrio[p]);
  const kase: Case = { scenario, path, sent: PRIO_COUNTS, left, txtime: [] };
  if (JSON.stringify(left.slice(0, 16)) !== JSON.stringify(PRIO_COUNTS) || left[16]) {
    failures.push(
      `${scenario}, ${path}: left tsn0 by priority ${JSON.stringify(left)}, sent ` +
        JSON.stringify(PRIO_COUNTS),
    );
  }
  for (const t of TX) {
    obs.reset();
    await send(ns, [[
      ...base,
      ...["--count", String(t.count), "--prio", String(t.prio), "--txtime", t.clock],
      ...["--txtime-offset-ms", "500"],
    ]]);
    const x = await settle(obs, t.count);
    const atPrio = x.fwdPrio[t.prio] + x.localPrio[t.prio];
    kase.txtime.push({ clock: t.clock, prio: t.prio, sent: t.count, atPrio, ok: x.tsOk });
    if (x.tsOk !== t.count || atPrio !== t.count) {
      failures.push(
        `${scenario}, ${path}: SO_TXTIME ${t.clock} at priority ${t.prio}: ${x.tsOk} of ` +
          `${t.count} left tsn0 with their launch time (${x.tsBad} wrong, ${x.tsNone} none), ` +
          `${atPrio} at priority ${t.prio}`,
      );
    }
  }
  cases.push(kase);
  mark(`${scenario} ${path}`);
}

async function addPod(conf: Conflist, id: string): Promise<void> {
  const { path } = await Netns.create({ name: id, lo: false });
  const t = performance.now();
  await chainAdd(conf, { containerId: id, netns: path, binDir: LOC.cniBinDir });
  timings[`ADD ${id} (ms)`] = Math.round(performance.now() - t);
}

try {
  await Deno.mkdir(LOC.cniConfDir, { recursive: true });
  await Deno.mkdir(LOC.cniBinDir, { recursive: true });
  await Deno.mkdir(`${DIR}/standin-state`, { recursive: true });
  await loadModules([
    "nf_tables",
    "nft_compat",
    "nft_chain_nat",
    "nft_masq",
    "xt_mark",
    "xt_addrtype",
    "xt_comment",
    "xt_MASQUERADE",
    "xt_nat",
    "ip_vs",
    "ip_vs_rr",
    "dummy",
  ]);
  await topology();
  for (const p of ["ptp", "host-local"]) {
    await Deno.symlink(`/usr/lib/cni/${p}`, `${LOC.cniBinDir}/${p}`);
  }
  await Deno.symlink(`${CHECKOUT}/tests/lib/standin-cni`, `${LOC.cniBinDir}/tsnp-standin`);
  // install appends tsnproxy's entry to this conflist; each scenario's chain ends with it.
  const base: Conflist = {
    cniVersion: "1.0.0",
    name: "coexist",
    plugins: [{ type: "ptp", ipMasq: false, ipam: { type: "host-local" } }],
  };
  await Deno.writeTextFile(`${LOC.cniConfDir}/10-coexist.conflist`, JSON.stringify(base));
  await installWithConfig("tsnInterface: tsn0\nqdisc:\n  kind: keep\n", LOC);
  const installed = JSON.parse(Deno.readTextFileSync(`${LOC.cniConfDir}/10-coexist.conflist`));
  const tsnproxy = installed.plugins.at(-1);
  if (tsnproxy?.type !== "tsnproxy") throw new Error("install appended no tsnproxy entry");
  let obs = Observer.attach(undefined, "tsn0");
  mark("installed");

  if (NETKIT) {
    const sti = StandinDatapath.load("cilium-netkit", "/sys/fs/bpf/sti", {
      nic: "tsn0",
      podNet4: "10.244.0.0/16",
    });
    // cil_to_netdev now ends tsn0's tcx egress with TC_ACT_OK: clsact filters no longer run,
    // so the observer moves onto tcx, right before it (after tsnproxy's restorer).
    obs.detach();
    obs = Observer.attachTcxBefore(undefined, "tsn0", sti.nicEgressProgId()!);
    const conf: Conflist = {
      cniVersion: "1.0.0",
      name: "coexist",
      plugins: [
        sti.pluginEntry(`${DIR}/standin-state`, {
          type: "host-local",
          ranges: [[{ subnet: "10.244.1.0/24" }]],
          dataDir: `${DIR}/ipam`,
        }),
        tsnproxy,
      ],
    };
    await addPod(conf, "nkpod");
    const links = (await run(["ip", "-d", "link", "show"])).stdout;
    notes.push(...links.split("\n").filter((l) => /netkit/.test(l)).map((l) => l.trim()));
    sti.reset();
    await measure(obs, "cilium-netkit", "pod -> far end", "nkpod", FAR, 8080);
    standins["cilium-netkit"] = sti.counts("pod");
    const seen = standins["cilium-netkit"];
    if (seen.packets === 0) failures.push("cilium-netkit: the stand-in saw no pod packet");
    const flags = [0, 1, 2, 4].map((b) => seen.flag[b]);
    if (flags.some((n) => n > 0)) {
      failures.push(
        `cilium-netkit: Cilium's tc_index flags on pod packets (0x1 0x2 0x4 0x10): ` +
          `${flags.join(" ")} of ${seen.packets} (tsnproxy's marker on ${seen.tsnpMarker})`,
      );
    }
  }

  // kube-proxy IPVS: ClusterIP on kube-ipvs0 and a NodePort on the node's TSN address.
  const svc = {
    clusterIp: "10.96.0.20",
    port: 80,
    nodePort: 30080,
    endpoint: FAR,
    endpointPort: 8080,
    podCidr: "10.244.0.0/16",
  };
  await installKubeProxy("ipvs", undefined, svc);
  await ipvsServices(undefined, svc, [NODE]);
  const ipvsConf: Conflist = {
    cniVersion: "1.0.0",
    name: "coexist",
    plugins: [{
      type: "ptp",
      ipMasq: false,
      ipam: {
        type: "host-local",
        ranges: [[{ subnet: "10.244.2.0/24" }]],
        routes: [{ dst: "0.0.0.0/0" }],
        dataDir: `${DIR}/ipam`,
      },
    }, tsnproxy],
  };
  await addPod(ipvsConf, "ipvspod");
  await measure(obs, "kube-proxy ipvs", "ClusterIP", "ipvspod", svc.clusterIp, svc.port);
  await measure(obs, "kube-proxy ipvs", "NodePort", "ipvspod", NODE, svc.nodePort);
  notes.push((await run(["ipvsadm", "-L", "-n", "--stats"])).stdout);
  const marked = await kubeMarkSeen("ipvs");
  if (marked) failures.push(`kube-proxy ipvs: ${marked} pod packets arrived with 0x4000 set`);
} catch (e) {
  failures.push(`exception: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
}

console.log(`\ncoexistence on ${KERNEL}`);
for (const c of cases) {
  console.log(`${c.scenario}, ${c.path}: left ${JSON.stringify(c.left)}`);
  for (const t of c.txtime) console.log(`  txtime ${JSON.stringify(t)}`);
}
for (const [k, v] of Object.entries(standins)) console.log(`stand-in ${k}: ${JSON.stringify(v)}`);
console.log(`timings (ms since start): ${JSON.stringify(timings)}`);
if (failures.length) console.log("\nFAILURES:\n  " + failures.join("\n  "));
report("coexist", { kernel: KERNEL, cases, standins, notes, failures, timings });
Deno.exit(failures.some((f) => f.startsWith("exception")) ? 1 : 0);
