/**
 * A CNI plugin for the tests (never shipped) that attaches a stand-in datapath's program to
 * a pod's host-side interface during ADD, before tsnproxy's ADD runs: the moment the real
 * eBPF CNIs attach theirs (Cilium's CNI plugin waits for the agent to attach the endpoint's
 * programs: EndpointChangeRequest.SyncBuildEndpoint; tcx links appended at the tail). The
 * programs and maps were loaded and pinned by the test (tests/lib/standins.ts), as an agent
 * loads them; this plugin only attaches, registers the pod and detaches on DEL.
 *
 * Modes (`standin` in the plugin's config):
 * - cilium-legacy, cilium-hostrouting: chained after a primary plugin (ptp): the host-side
 *   interface comes from prevResult.
 * - calico: the primary itself, as Calico's CNI plugin is: a routed veth cali<hash> (no
 *   bridge, no address on the host side, MAC ee:ee:ee:ee:ee:ee, proxy ARP, a /32 route to
 *   the pod; the pod's default route via 169.254.1.1), IPv4 from the `ipam` plugin.
 * - cilium-netkit: the primary itself: a netkit pair (primary in the node, peer in the pod,
 *   L3 mode, a /32 route to the pod, the pod's default route via its device), IPv4 from the
 *   `ipam` plugin; the program goes on the netkit peer hook (BPF_NETKIT_PEER).
 *
 * Run by tests/lib/standin-cni (a launcher) exactly as a runtime runs a plugin: CNI_* in the
 * environment, config on stdin, result or error on stdout.
 */
import { ifNameToIndex } from "../../src/ffi/libc.ts";
import { run, type RunOptions } from "./run.ts";
import {
  ATTACH,
  attachPinned,
  endpointValue,
  pins,
  setEndpoint,
  type StandinKind,
  STANDINS,
} from "./standin_link.ts";

interface Interface {
  name: string;
  mac?: string;
  sandbox?: string;
}
interface IpConfig {
  address: string;
  gateway?: string;
  interface?: number;
}
interface Result {
  cniVersion: string;
  interfaces?: Interface[];
  ips?: IpConfig[];
  routes?: Array<{ dst: string; gw?: string }>;
  dns?: Record<string, unknown>;
}
interface Conf {
  cniVersion: string;
  name: string;
  type: string;
  standin: StandinKind;
  /** The stand-in datapath's pin root (tests/lib/standins.ts pinned its programs there). */
  pinDir: string;
  /** Where ADD records what DEL must undo (a plain directory). */
  stateDir: string;
  ipam?: Record<string, unknown>;
  /**
   * Do not attach during ADD: the agent attaches later, as Calico's Felix does (it watches
   * for the new workload interface; tests/lib/standins.ts attachPod plays that part).
   */
  attachLater?: boolean;
  prevResult?: Result;
}
interface PodState {
  ips: string[];
  hostIf: string;
  /** Devices this plugin created (primary modes), deleted on DEL. */
  created?: string;
}

class CniError extends Error {
  constructor(readonly code: number, msg: string) {
    super(msg);
  }
}

const env = (k: string) => Deno.env.get(k) ?? "";

/** run(); a failure is a CNI error (code 999) the runtime gets as the result. Its stdout. */
async function sh(argv: string[], opts: RunOptions = {}): Promise<string> {
  const r = await run(argv, { ...opts, allowFail: true });
  if (r.code !== 0) {
    throw new CniError(999, `${argv.join(" ")} exited ${r.code}: ${r.stdout}${r.stderr}`);
  }
  return r.stdout;
}

/** A hash-based name, as Calico (cali + 11 hex) and Cilium (lxc + 11 hex) name theirs. */
async function deviceName(prefix: string): Promise<string> {
  const d = new Uint8Array(
    await crypto.subtle.digest(
      "SHA-1",
      new TextEncoder().encode(`${env("CNI_CONTAINERID")}/${env("CNI_IFNAME")}`),
    ),
  );
  return prefix + [...d].map((b) => b.toString(16).padStart(2, "0")).join("").slice(0, 11);
}

/** Delegates address allocation to the IPAM plugin named in the config (host-local). */
async function ipam(conf: Conf, command: "ADD" | "DEL"): Promise<Result | undefined> {
  if (!conf.ipam) throw new CniError(7, `standin ${conf.standin}: no ipam in the config`);
  const type = String(conf.ipam.type);
  const bin = env("CNI_PATH").split(":").map((d) => `${d}/${type}`).find((p) => {
    try {
      return Deno.statSync(p).isFile;
    } catch {
      return false;
    }
  });
  if (!bin) throw new CniError(7, `IPAM plugin ${type} not found in CNI_PATH`);
  const out = await sh([bin], {
    stdin: JSON.stringify({ cniVersion: conf.cniVersion, name: conf.name, ipam: conf.ipam }),
  });
  return command === "ADD" ? JSON.parse(out) as Result : undefined;
}

const nsExec = (netns: string, argv: string[]) => sh(argv, { netns });

async function macOf(netns: string | undefined, dev: string): Promise<string> {
  const argv = ["ip", "-j", "link", "show", "dev", dev];
  const out = netns ? await nsExec(netns, argv) : await sh(argv);
  return (JSON.parse(out) as Array<{ address: string }>)[0].address;
}

function sysctl(key: string, value: string): void {
  Deno.writeTextFileSync(`/proc/sys/${key.replaceAll(".", "/")}`, value);
}

/** Calico's routed workload interface. */
async function addCalico(conf: Conf): Promise<{ result: Result; state: PodState }> {
  const netns = env("CNI_NETNS"), ifname = env("CNI_IFNAME");
  const alloc = await ipam(conf, "ADD");
  const v4 = (alloc?.ips ?? []).filter((i) => !i.address.includes(":"));
  if (v4.length !== 1) throw new CniError(7, "standin calico: IPv4 only, one address");
  const ip = v4[0].address.split("/")[0];
  const host = await deviceName("cali");
  await sh([
    "ip",
    "link",
    "add",
    host,
    "address",
    "ee:ee:ee:ee:ee:ee",
    "type",
    "veth",
    "peer",
    "name",
    ifname,
    "netns",
    netns,
  ]);
  for (const [k, v] of [["proxy_arp", "1"], ["forwarding", "1"]]) {
    sysctl(`net.ipv4.conf.${host}.${k}`, v);
  }
  sysctl(`net.ipv4.neigh.${host}.proxy_delay`, "0");
  await sh(["ip", "link", "set", host, "up"]);
  await sh(["ip", "route", "add", `${ip}/32`, "dev", host, "scope", "link"]);
  for (
    const argv of [
      ["ip", "addr", "add", `${ip}/32`, "dev", ifname],
      ["ip", "link", "set", ifname, "up"],
      ["ip", "route", "add", "169.254.1.1", "dev", ifname, "scope", "link"],
      ["ip", "route", "add", "default", "via", "169.254.1.1", "dev", ifname],
    ]
  ) await nsExec(netns, argv);
  const result: Result = {
    cniVersion: conf.cniVersion,
    interfaces: [
      { name: host, mac: "ee:ee:ee:ee:ee:ee" },
      { name: ifname, mac: await macOf(netns, ifname), sandbox: netns },
    ],
    ips: [{ address: `${ip}/32`, interface: 1 }],
    routes: [{ dst: "0.0.0.0/0", gw: "169.254.1.1" }],
    dns: {},
  };
  return { result, state: { ips: [ip], hostIf: host, created: host } };
}

/** Cilium's netkit endpoint (L3 mode). */
async function addNetkit(conf: Conf): Promise<{ result: Result; state: PodState }> {
  const { createNetkit } = await import("./netkit.ts");
  const netns = env("CNI_NETNS"), ifname = env("CNI_IFNAME");
  const alloc = await ipam(conf, "ADD");
  const v4 = (alloc?.ips ?? []).filter((i) => !i.address.includes(":"));
  if (v4.length !== 1) throw new CniError(7, "standin cilium-netkit: IPv4 only, one address");
  const ip = v4[0].address.split("/")[0];
  const host = await deviceName("lxc");
  createNetkit({ primary: host, peer: ifname, peerNetns: netns, mode: "l3" });
  sysctl(`net.ipv4.conf.${host}.forwarding`, "1");
  await sh(["ip", "link", "set", host, "up"]);
  await sh(["ip", "route", "add", `${ip}/32`, "dev", host, "scope", "link"]);
  for (
    const argv of [
      ["ip", "addr", "add", `${ip}/32`, "dev", ifname],
      ["ip", "link", "set", ifname, "up"],
      ["ip", "route", "add", "default", "dev", ifname],
    ]
  ) await nsExec(netns, argv);
  const result: Result = {
    cniVersion: conf.cniVersion,
    interfaces: [
      { name: host, mac: await macOf(undefined, host) },
      { name: ifname, mac: await macOf(netns, ifname), sandbox: netns },
    ],
    ips: [{ address: `${ip}/32`, interface: 1 }],
    routes: [{ dst: "0.0.0.0/0" }],
    dns: {},
  };
  return { result, state: { ips: [ip], hostIf: host, created: host } };
}

/** Chained after ptp/bridge: the host side and addresses come from prevResult. */
function chained(conf: Conf): { result: Result; state: PodState } {
  const prev = conf.prevResult;
  if (!prev) throw new CniError(7, `standin ${conf.standin} must follow a primary plugin`);
  const ifaces = prev.interfaces ?? [];
  const host = ifaces.find((i) => !i.sandbox && i.name !== "cni0" && i.mac !== undefined);
  const pod = ifaces.find((i) => i.sandbox);
  if (!host || !pod) throw new CniError(7, "prevResult names no host-side and pod interface");
  const ips = (prev.ips ?? []).map((i) => i.address.split("/")[0]);
  return {
    result: { ...prev, cniVersion: conf.cniVersion },
    state: { ips, hostIf: host.name },
  };
}

async function add(conf: Conf): Promise<Result> {
  const { result, state } = conf.standin === "calico"
    ? await addCalico(conf)
    : conf.standin === "cilium-netkit"
    ? await addNetkit(conf)
    : chained(conf);
  const ifindex = ifNameToIndex(state.hostIf);
  if (!ifindex) throw new CniError(7, `host-side interface ${state.hostIf} not found`);
  const id = env("CNI_CONTAINERID");
  Deno.writeTextFileSync(`${conf.stateDir}/${id}.json`, JSON.stringify(state));
  const spec = STANDINS[conf.standin];
  // Appended at the tail (flags 0), as Cilium's link.Tail() and Calico's default options do.
  if (!conf.attachLater) {
    attachPinned(
      pins.prog(conf.pinDir, spec.podProgram),
      ifindex,
      conf.standin === "cilium-netkit" ? ATTACH.netkitPeer : ATTACH.tcxIngress,
      pins.link(conf.pinDir, id),
    );
  }
  const ifs = result.interfaces ?? [];
  const hostMac = ifs.find((i) => i.name === state.hostIf)?.mac;
  const podMac = ifs.find((i) => i.sandbox)?.mac;
  if (hostMac && podMac) {
    for (const ip of state.ips) {
      setEndpoint(conf.pinDir, ip, endpointValue(ifindex, podMac, hostMac));
    }
  }
  return result;
}

async function del(conf: Conf): Promise<void> {
  const id = env("CNI_CONTAINERID");
  const file = `${conf.stateDir}/${id}.json`;
  let state: PodState | undefined;
  try {
    state = JSON.parse(Deno.readTextFileSync(file));
  } catch {
    return; // nothing recorded: nothing to undo (DEL must be idempotent)
  }
  for (const ip of state!.ips) setEndpoint(conf.pinDir, ip, undefined);
  try {
    Deno.removeSync(pins.link(conf.pinDir, id)); // unpinning the last reference detaches
  } catch { /* gone */ }
  if (state!.created) {
    await sh(["ip", "link", "del", state!.created]).catch(() => {});
    if (conf.ipam) await ipam(conf, "DEL").catch(() => {});
  }
  Deno.removeSync(file);
}

async function main(): Promise<number> {
  const command = env("CNI_COMMAND");
  const text = new TextDecoder().decode(await new Response(Deno.stdin.readable).arrayBuffer());
  let conf: Conf | undefined;
  try {
    if (command === "VERSION") {
      console.log(JSON.stringify({ cniVersion: "1.0.0", supportedVersions: ["0.4.0", "1.0.0"] }));
      return 0;
    }
    conf = JSON.parse(text) as Conf;
    if (!(conf.standin in STANDINS)) {
      throw new CniError(7, `unknown standin ${conf.standin}: one of ${Object.keys(STANDINS)}`);
    }
    if (command === "ADD") console.log(JSON.stringify(await add(conf)));
    else if (command === "DEL") await del(conf);
    else if (command !== "CHECK") throw new CniError(4, `unknown CNI_COMMAND ${command}`);
    return 0;
  } catch (e) {
    const code = e instanceof CniError ? e.code : 999;
    const msg = e instanceof Error ? e.message : String(e);
    console.log(JSON.stringify({ cniVersion: conf?.cniVersion ?? "1.0.0", code, msg }));
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main());
