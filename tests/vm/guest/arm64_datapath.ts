/**
 * Runs inside the arm64 test VM (tests/vm/arm64_test.ts) with the arm64 deno and Debian's arm64
 * libbpf and libmnl: the datapath (ABI 2: save, admit, restore) loaded, attached and carrying
 * real packets on an arm64 kernel. The guest's own namespace is the node:
 *
 *   pod0/pod1/pod2 netns (eth0 10.244.N.10) --veth--> node (hv0/hv1 10.244.N.1, ip_forward)
 *   --> tsn0 (veth; clsact with the restorer, then a prio qdisc) --veth--> far netns (far0)
 *
 * IPv6 is off and the neighbours are static, so the only packets on the pods' and tsn0's way
 * are the ones sent here and the counts are exact. Forwarding sets skb->priority from the TOS
 * (0), so a priority reaches tsn0's qdisc only when the restorer put it back; prio's default
 * priomap sends priority 2 to band 2 (class 1:3), 6 to band 0 (1:1), 0 to band 1 (1:2), and a
 * priority whose major is the qdisc's handle (0x10001) to that minor's band (1:1).
 *
 *   A. The node's datapath as install sets it up (planDatapath/applyDatapath, which loads,
 *      verifies and pins the programs through loadDatapath, and writes the node config) and
 *      the restorer on tsn0 (attachRestorer: clsact, 6.1 has no tcx).
 *   B. carrier auto (nothing else on the way: the tag): the real plugin (main.ts cni ADD, env
 *      and stdin as a runtime passes them) attaches admit on hv0 and the saver in pod0; pod0
 *      sends SO_PRIORITY 2. The control: pod2, never ADDed, sends the same and its packets
 *      leave tsn0 at the forwarded priority 0.
 *   C. carrier table: the node config rewritten (applyDatapath again, programs kept); pod1's
 *      ADD puts it on the per-CPU stage; pod1 sends SO_PRIORITY 6 and 0x10001 (above what a
 *      request holds: the saver's request stage, then admit's stage).
 *   D. CNI DEL of pod0 and pod1, then teardownNode: no pin left.
 * Prints a TSNVM-JSON "arm64" result.
 */
import { parseNodeConfig } from "../../../src/config/node.ts";
import { applyDatapath, planDatapath } from "../../../src/install/plan.ts";
import { attachRestorer, restorerAttached, teardownNode } from "../../../src/bpf/node.ts";
import { DatapathMaps } from "../../../src/bpf/maps.ts";
import { PinLayout, PROGRAMS } from "../../../src/bpf/pins.ts";
import { findLink, listClasses } from "../../../src/netlink/mod.ts";
import { withNetns } from "../../../src/util/netns.ts";
import { versionInfo } from "../../../src/build_info.ts";
import { report } from "./report.ts";
import { run } from "../../lib/run.ts";
import { addVeth, Netns } from "../../lib/netns.ts";

const CHECKOUT = new URL("../../..", import.meta.url).pathname.replace(/\/$/, "");
const MAIN = `${CHECKOUT}/main.ts`;
const BPFFS = "/sys/fs/bpf/tsnp-arm64";
const FAR = "198.18.0.2";
const SENT = 40;
const t0 = performance.now();
const ms = () => Math.round(performance.now() - t0);
const timings: Record<string, number> = {};

const write = (path: string, value: string) => Deno.writeTextFileSync(path, value);
const ip = (...args: string[]) => run(["ip", ...args]);
/** A device's MAC address, from its namespace (sysfs shows the opener's namespace). */
function mac(ns: string | undefined, dev: string): string {
  const addr = withNetns(ns, () => findLink(dev)?.address);
  if (!addr) throw new Error(`${dev} has no MAC address`);
  return addr;
}

// ---------------------------------------------------------------------------------------------
// topology

/**
 * No IPv6 in a namespace (no router solicitations, MLD or DAD packets), before its devices
 * exist. /proc/sys/net is the opening thread's namespace: withNetns switches it.
 */
function noIpv6(netns?: string): void {
  withNetns(netns, () => {
    for (const c of ["all", "default"]) write(`/proc/sys/net/ipv6/conf/${c}/disable_ipv6`, "1");
  });
}

noIpv6();
write("/proc/sys/net/ipv4/ip_forward", "1");

// The arm64 userland has iproute2 but no nsenter: namespaces through `ip` and withNetns only.
const far = await Netns.create({ name: "far", lo: false });
noIpv6(far.path);
await addVeth("tsn0", { name: "far0", netns: far }, { up: false });
await ip("addr", "add", "198.18.0.1/24", "dev", "tsn0");
await ip("link", "set", "tsn0", "up");
await ip("-n", "far", "addr", "add", `${FAR}/24`, "dev", "far0");
await ip("-n", "far", "link", "set", "far0", "up");
await ip(
  "neigh",
  "add",
  FAR,
  "lladdr",
  mac("/run/netns/far", "far0"),
  "dev",
  "tsn0",
  "nud",
  "permanent",
);

interface Pod {
  name: string;
  netns: string;
  host: string;
  containerId: string;
  addr: string;
  gateway: string;
}

async function addPod(n: number): Promise<Pod> {
  const pod: Pod = {
    name: `pod${n}`,
    netns: `/run/netns/pod${n}`,
    host: `hv${n}`,
    containerId: `arm64-pod${n}`,
    addr: `10.244.${n}.10`,
    gateway: `10.244.${n}.1`,
  };
  await Netns.create({ name: pod.name, lo: false });
  noIpv6(pod.netns);
  await addVeth({ name: "eth0", netns: pod.name }, pod.host, { up: false });
  await ip("addr", "add", `${pod.gateway}/24`, "dev", pod.host);
  await ip("link", "set", pod.host, "up");
  await ip("-n", pod.name, "link", "set", "lo", "up");
  await ip("-n", pod.name, "addr", "add", `${pod.addr}/24`, "dev", "eth0");
  await ip("-n", pod.name, "link", "set", "eth0", "up");
  await ip("-n", pod.name, "route", "add", "default", "via", pod.gateway);
  await ip(
    "-n",
    pod.name,
    "neigh",
    "add",
    pod.gateway,
    "lladdr",
    mac(undefined, pod.host),
    "dev",
    "eth0",
    "nud",
    "permanent",
  );
  return pod;
}

// ---------------------------------------------------------------------------------------------
// the node's datapath, as install sets it up

function node(carrier: "auto" | "table") {
  const cfg = parseNodeConfig(
    `bpffs: ${BPFFS}\ntsnInterface: tsn0\nattachMode: clsact\ncarrier: ${carrier}\n`,
    "arm64-node.yaml",
  );
  const plan = planDatapath(cfg, ["tsn0"]);
  const programs = applyDatapath(plan);
  return { carrier: plan.carrier, programs: programs.map((p) => `${p.role}:${p.action}`) };
}

// ---------------------------------------------------------------------------------------------
// the plugin, as a runtime runs it

async function cni(command: "ADD" | "DEL", pod: Pod): Promise<void> {
  const entry = {
    cniVersion: "1.1.0",
    name: "tsnp-arm64",
    type: "tsnproxy",
    bpffs: BPFFS,
    attachMode: "clsact",
    prevResult: {
      cniVersion: "1.1.0",
      interfaces: [{ name: pod.host }, { name: "eth0", sandbox: pod.netns }],
      ips: [{ address: `${pod.addr}/24`, gateway: pod.gateway, interface: 1 }],
    },
  };
  const out = await run([Deno.execPath(), "run", "-A", "--quiet", "--no-lock", MAIN, "cni"], {
    clearEnv: true,
    env: {
      PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
      CNI_COMMAND: command,
      CNI_CONTAINERID: pod.containerId,
      CNI_NETNS: pod.netns,
      CNI_IFNAME: "eth0",
      CNI_PATH: "/opt/cni/bin",
    },
    stdin: JSON.stringify(entry),
    allowFail: true,
  });
  if (out.code !== 0) {
    throw new Error(`CNI ${command} ${pod.name} exited ${out.code}: ${out.stdout} ${out.stderr}`);
  }
}

// ---------------------------------------------------------------------------------------------
// traffic: UDP with SO_PRIORITY from inside a pod (libc through FFI: the guest has no python)

const libc = Deno.dlopen("libc.so.6", {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
}).symbols;
const AF_INET = 2, SOCK_DGRAM = 2, SOL_SOCKET = 1, SO_PRIORITY = 12;

function send(pod: Pod, priority: number, count: number): void {
  // A socket belongs to the namespace it was made in, whichever thread sends on it later.
  const fd = withNetns(pod.netns, () => libc.socket(AF_INET, SOCK_DGRAM, 0));
  if (fd < 0) throw new Error(`socket() in ${pod.name} failed`);
  try {
    const prio = new Uint8Array(4);
    new DataView(prio.buffer).setUint32(0, priority, true);
    if (libc.setsockopt(fd, SOL_SOCKET, SO_PRIORITY, prio, 4) !== 0) {
      throw new Error(`SO_PRIORITY ${priority} refused`);
    }
    const sa = new Uint8Array(16);
    const v = new DataView(sa.buffer);
    v.setUint16(0, AF_INET, true);
    v.setUint16(2, 9, false); // discard
    sa.set(FAR.split(".").map(Number), 4);
    const payload = new TextEncoder().encode(`arm64 ${pod.name} priority ${priority}`);
    for (let i = 0; i < count; i++) {
      if (Number(libc.sendto(fd, payload, BigInt(payload.length), 0, sa, 16)) < 0) {
        throw new Error(`sendto from ${pod.name} failed`);
      }
    }
  } finally {
    libc.close(fd);
  }
}

/** Packets per prio band class on tsn0 ("1:1".."1:3"). */
function bands(): Record<string, number> {
  const link = findLink("tsn0");
  if (!link) throw new Error("tsn0 is gone");
  const out: Record<string, number> = {};
  for (const c of listClasses(link.index)) {
    if (c.kind !== "prio") continue;
    out[`${c.handle >>> 16}:${c.handle & 0xffff}`] = c.stats.packets;
  }
  return out;
}

function counters(): Record<string, bigint> {
  const maps = DatapathMaps.open(BPFFS);
  try {
    return maps.counters();
  } finally {
    maps.close();
  }
}

async function measure(fn: () => void) {
  const [c0, b0] = [counters(), bands()];
  fn();
  // veth delivers through the backlog: let the softirq drain before reading the counts.
  await new Promise((r) => setTimeout(r, 300));
  const [c1, b1] = [counters(), bands()];
  const delta = Object.fromEntries(
    Object.entries(c1).map(([k, v]) => [k, Number(v - c0[k])]).filter(([, v]) => v !== 0),
  );
  const classes = Object.fromEntries(Object.keys(b1).map((k) => [k, b1[k] - (b0[k] ?? 0)]));
  return { delta, classes };
}

function podCarriers(): Record<string, string> {
  const maps = DatapathMaps.open(BPFFS);
  try {
    return Object.fromEntries(
      maps.pods().map(({ ifindex, entry }) => {
        const name = findLink(ifindex)?.name ?? String(ifindex);
        return [name, entry.carrier];
      }),
    );
  } finally {
    maps.close();
  }
}

// ---------------------------------------------------------------------------------------------

const pod0 = await addPod(0);
const pod1 = await addPod(1);
const control = await addPod(2);
timings.topology = ms();

// A. The datapath and the restorer, then the qdisc (clsact first: 6.1, see docs/kernels.md).
const installA = node("auto");
const attachment = attachRestorer(BPFFS, "tsn0", "clsact");
await run(["tc", "qdisc", "add", "dev", "tsn0", "root", "handle", "1:", "prio"]);
timings.install = ms();
const pins = new PinLayout(BPFFS);
const programs = Object.values(PROGRAMS).filter((p) => {
  try {
    return Deno.statSync(`${pins.progsDir}/${p}`).isFile;
  } catch {
    return false;
  }
});
const restorer = restorerAttached(BPFFS, "tsn0");

// B. The tag.
await cni("ADD", pod0);
timings.add0 = ms();
const tag = await measure(() => send(pod0, 2, SENT));
const lost = await measure(() => send(control, 2, SENT));

// C. The stage.
const installC = node("table");
await cni("ADD", pod1);
timings.add1 = ms();
const stage = await measure(() => {
  send(pod1, 6, SENT);
  send(pod1, 0x10001, SENT);
});
const carriers = podCarriers();

// D. Remove everything.
await cni("DEL", pod0);
await cni("DEL", pod1);
const unpinned = teardownNode(BPFFS);
let pinsLeft: string[] = [];
try {
  pinsLeft = [...Deno.readDirSync(BPFFS)].map((e) => e.name);
} catch (e) {
  if (!(e instanceof Deno.errors.NotFound)) throw e;
}
timings.teardown = ms();

report("arm64", {
  arch: Deno.build.arch,
  kernel: Deno.osRelease(),
  deno: Deno.version.deno,
  bpfObjects: versionInfo().bpfObjectsSha256,
  programs,
  loaded: installA.programs,
  reloaded: installC.programs,
  nodeCarrier: [installA.carrier.carrier, installC.carrier.carrier],
  restorer: restorer ? { api: restorer.api, direction: restorer.direction } : null,
  attachedApi: attachment.api,
  carriers,
  sent: SENT,
  tag,
  lost,
  stage,
  unpinned,
  pinsLeft,
  timings,
  totalMs: ms(),
});
