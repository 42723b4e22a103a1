/**
 * A TSN node for the e2e tests of tsnproxy under the real runtimes, in the host network
 * namespace (where containerd's and podman's bridge plugin puts the bridge):
 *
 *     pod eth0 --veth-- bridge (host) --routing, nft NAT-- tsnE<id> ==veth== tsnF<id> (far netns)
 *                                                          ^ restorer (tcx/clsact, first)
 *                                                          ^ observer (cls_bpf prio 50, last)
 *
 * `TsnNode.create(podSubnet)` makes the far namespace (198.19.<x>.2/24; the host side is
 * 198.19.<x>.1/24), turns forwarding on (restored afterwards), adds an nftables table of its
 * own (MASQUERADE of the pod subnet out of the TSN veth, DNAT of a fake Service IP
 * 198.18.<x>.10 to the far end), sets the datapath up as install does (tests/lib/node.ts:
 * pinned under /sys/fs/bpf/tsnp-test-<id>, the restorer on the TSN veth), attaches the test
 * observer after it and starts UDP/TCP sinks on the far end. The runtimes' CNI ADDs attach
 * admit on each pod's host veth and the saver in the pod, and write the pod's entry (its
 * policy and carrier) under the host veth's ifindex. `cleanup()` undoes all of it and never
 * throws.
 */
import { queryTcx, type TcApi } from "../../../src/bpf/attach.ts";
import { resolvePodTcApi, resolveTcApi } from "../../../src/bpf/features.ts";
import { DatapathMaps, type PodEntry } from "../../../src/bpf/maps.ts";
import { PinLayout, type PodPin, type ProgramRole } from "../../../src/bpf/pins.ts";
import { listPodAttachments, podCookie, podPins } from "../../../src/bpf/pod.ts";
import { programsOn } from "../../../src/bpf/hooks.ts";
import { closeFd, objGetRequired, progInfo } from "../../../src/bpf/sys.ts";
import { ifIndexToName } from "../../../src/ffi/libc.ts";
import { reconfigureNode, setUpNode, tearDownNode, type TestNode } from "../../lib/node.ts";
import { pluginEntry } from "../../../src/install/plan.ts";
import { Observer, type ObserverCounts } from "../../lib/observer.ts";
import type { Mount } from "./cri.ts";
import { exists, repoRoot } from "./proc.ts";
import { type Child, run, spawn } from "../../lib/run.ts";
import { addVeth, deleteNetns, Netns } from "../../lib/netns.ts";

export const UDP = 17;
export const TCP = 6;

/** The plugin executable the runtimes exec (symlinked into the CNI bin dir as `tsnproxy`). */
export const TSNPROXY_LAUNCHER = `${repoRoot()}/scripts/tsnproxy`;

/** Where the unmodified talker (tests/lib/sender.py) appears inside workload containers. */
export const SENDER_DIR_IN_CONTAINER = "/tsnp";
const SENDER_DIR = `${repoRoot()}/tests/lib`;

/** CRI mount giving a container the talker (read-only). */
export const SENDER_MOUNT: Mount = {
  container_path: SENDER_DIR_IN_CONTAINER,
  host_path: SENDER_DIR,
  readonly: true,
};

/** podman `-v` flags giving a container the talker (read-only). */
export const SENDER_PODMAN_ARGS = ["-v", `${SENDER_DIR}:${SENDER_DIR_IN_CONTAINER}:ro`];

export interface SendArgs {
  dst: string;
  port: number;
  proto: "udp" | "tcp";
  /** UDP: datagrams; TCP: 64 KiB chunks. */
  count: number;
  prio?: number;
  /** SO_TXTIME with this clock; the launch time is 5 ms ahead, also written in the payload. */
  txtime?: "tai" | "realtime";
}

/** argv running tests/lib/sender.py in a container (host /usr mounted for python3). */
export function senderArgv(a: SendArgs): string[] {
  const argv = [
    "/usr/bin/python3",
    `${SENDER_DIR_IN_CONTAINER}/sender.py`,
    "--dst",
    a.dst,
    "--port",
    String(a.port),
    "--proto",
    a.proto,
    "--count",
    String(a.count),
  ];
  if (a.prio !== undefined) argv.push("--prio", String(a.prio));
  if (a.txtime) argv.push("--txtime", a.txtime);
  return argv;
}

export function sum(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

/** "prio:count" pairs of the non-zero priorities, for assertion messages. */
export function showPrios(c: ObserverCounts): string {
  const seen = c.fwdPrio.flatMap((n, p) => n ? [`${p}:${n}`] : []);
  return `forwarded ${c.fwdTotal} (${seen.join(" ") || "none"}), node-local ${c.localTotal}, ` +
    `launch time ok ${c.tsOk} bad ${c.tsBad} none ${c.tsNone}`;
}

function randomHex(n: number): string {
  return crypto.randomUUID().replaceAll("-", "").slice(0, n);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A free 198.19.<x>.0/24 (no address or route of the host uses it yet). */
async function freeThirdOctet(): Promise<number> {
  const used =
    (await run(["ip", "-4", "route", "show", "table", "all"], { allowFail: true })).stdout +
    (await run(["ip", "-4", "-o", "addr"], { allowFail: true })).stdout;
  for (let i = 0; i < 200; i++) {
    const x = 1 + Math.floor(Math.random() * 254);
    if (!used.includes(`198.19.${x}.`) && !used.includes(`198.18.${x}.`)) return x;
  }
  throw new Error("no free 198.19.x.0/24");
}

export interface TsnNodeOptions {
  /** The pods' subnet (masqueraded out of the TSN veth). */
  podSubnet: string;
  /**
   * attachMode for the datapath and the entry (default TSNPROXY_E2E_ATTACH_MODE, else auto:
   * tcx when the kernel has it).
   */
  attachMode?: "auto" | TcApi;
  /** The far end's UDP and TCP sink port (default 8080). */
  farPort?: number;
}

/** TSNPROXY_E2E_ATTACH_MODE=clsact|tcx|auto overrides "auto" (e.g. clsact on a tcx kernel). */
export function attachModeFromEnv(): "auto" | TcApi {
  const v = Deno.env.get("TSNPROXY_E2E_ATTACH_MODE") ?? "auto";
  if (v !== "auto" && v !== "tcx" && v !== "clsact") {
    throw new Error(`TSNPROXY_E2E_ATTACH_MODE=${v}: expected auto, tcx or clsact`);
  }
  return v;
}

const NODE_CONFIG = "restoreAt: tsn-egress\ngc: {maxAgeMs: 1000}\n";

export class TsnNode {
  readonly id: string;
  /** The TSN interface in the host namespace. */
  readonly tsnIf: string;
  readonly farIf: string;
  readonly farNs: string;
  readonly hostIp: string;
  readonly farIp: string;
  /** Fake ClusterIP, DNATed to farIp (same ports). */
  readonly serviceIp: string;
  readonly farPort: number;
  readonly bpffs: string;
  /** The TSN NIC's restorer. */
  readonly api: TcApi;
  /** Pod savers (attachMode auto: clsact). */
  readonly podApi: TcApi;
  /** admit on the pods' host veths (auto: clsact, as nothing else is on tcx there). */
  readonly hostApi: TcApi;
  readonly attachMode: "auto" | TcApi;
  readonly nftTable: string;
  readonly podSubnet: string;
  observer: Observer | undefined;
  /** The node as install set it up (its parsed config included). */
  node: TestNode | undefined;
  #procs: Child[] = [];
  #savedForward: string | undefined;
  #cleaned = false;

  private constructor(x: number, o: TsnNodeOptions) {
    this.id = randomHex(6);
    this.tsnIf = `tsnE${this.id}`;
    this.farIf = `tsnF${this.id}`;
    this.farNs = `tsnp-e2e-far-${this.id}`;
    this.hostIp = `198.19.${x}.1`;
    this.farIp = `198.19.${x}.2`;
    this.serviceIp = `198.18.${x}.10`;
    this.farPort = o.farPort ?? 8080;
    this.bpffs = `/sys/fs/bpf/tsnp-test-${this.id}`;
    this.attachMode = o.attachMode ?? attachModeFromEnv();
    this.api = resolveTcApi(this.attachMode);
    this.podApi = resolvePodTcApi(this.attachMode);
    this.hostApi = this.attachMode === "tcx" ? "tcx" : "clsact";
    this.nftTable = `tsnp_e2e_${this.id}`;
    this.podSubnet = o.podSubnet;
  }

  static async create(o: TsnNodeOptions): Promise<TsnNode> {
    const node = new TsnNode(await freeThirdOctet(), o);
    try {
      await node.#setup();
    } catch (e) {
      const problems = await node.cleanup();
      throw new Error(
        `TSN node setup failed: ${e instanceof Error ? e.message : e}` +
          (problems.length ? `\n(cleanup: ${problems.join("; ")})` : ""),
        { cause: e },
      );
    }
    return node;
  }

  async #setup(): Promise<void> {
    const [tsn, far, ns] = [this.tsnIf, this.farIf, this.farNs];
    const farNs = await Netns.create({ name: ns, ipv6: false });
    await addVeth(tsn, { name: far, netns: farNs }, { up: false });
    // No IPv6 on the TSN link: only the test's IPv4 traffic leaves it.
    await Deno.writeTextFile(`/proc/sys/net/ipv6/conf/${tsn}/disable_ipv6`, "1");
    await run(["ip", "addr", "add", `${this.hostIp}/24`, "dev", tsn]);
    await run(["ip", "link", "set", tsn, "up"]);
    await farNs.ip("addr", "add", `${this.farIp}/24`, "dev", far);
    await farNs.ip("link", "set", far, "up");

    this.#savedForward = (await Deno.readTextFile("/proc/sys/net/ipv4/ip_forward")).trim();
    await Deno.writeTextFile("/proc/sys/net/ipv4/ip_forward", "1");

    const t = this.nftTable;
    const p = this.farPort;
    await run(["nft", "-f", "-"], {
      stdin: `table ip ${t} {
  chain pre {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr ${this.serviceIp} udp dport ${p} dnat to ${this.farIp}:${p}
    ip daddr ${this.serviceIp} tcp dport ${p} dnat to ${this.farIp}:${p}
  }
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr ${this.podSubnet} oifname "${tsn}" masquerade
  }
}
`,
    });

    this.node = setUpNode({
      bpffs: this.bpffs,
      tsnInterface: tsn,
      api: this.api,
      config: NODE_CONFIG,
    });
    this.observer = Observer.attach(undefined, tsn);

    this.#spawn(["socat", "-u", `UDP-RECV:${p}`, "/dev/null"]);
    this.#spawn(["socat", "-u", `TCP-LISTEN:${p},reuseaddr,fork`, "/dev/null"]);
    // A static neighbour: no first packet waits in the neighbour queue, no ARP noise.
    const mac = (await farNs.run(["cat", `/sys/class/net/${far}/address`], { netnsSysfs: true }))
      .stdout.trim();
    await run([
      "ip",
      "neigh",
      "replace",
      this.farIp,
      "lladdr",
      mac,
      "dev",
      tsn,
      "nud",
      "permanent",
    ]);
    await waitListening(ns, p);
  }

  #spawn(argv: string[]): void {
    this.#procs.push(spawn(argv, { netns: this.farNs, stdout: "null", stderr: "null" }));
  }

  /**
   * Rewrites the node config with this `policy:` block (YAML, e.g. "policy:\n  maxPriority: 3";
   * "" for none), as `tsnproxy install` run again with a changed config does. Pods created
   * from now on get the node's new policy.
   */
  setNodePolicy(policyYaml: string): void {
    reconfigureNode({
      bpffs: this.bpffs,
      tsnInterface: this.tsnIf,
      api: this.api,
      config: NODE_CONFIG + policyYaml,
    });
  }

  /** The tsnproxy entry of a conflist for this node (plus `extra` fields, e.g. policy). */
  entry(extra: Record<string, unknown> = {}): Record<string, unknown> {
    // What `tsnproxy install` writes for this node (the pod-annotations capability
    // included), with the test's attach mode.
    return {
      ...pluginEntry({
        cfg: this.#node().cfg,
        tsnInterfaces: this.#node().cfg.tsnInterfaces,
        api: this.api,
        stateDir: "/nonexistent",
        inPlace: true,
      }),
      attachMode: this.attachMode,
      ...extra,
    };
  }

  #node(): TestNode {
    if (!this.node) throw new Error("the node is not set up");
    return this.node;
  }

  #observer(): Observer {
    if (!this.observer) throw new Error("the observer is not attached");
    return this.observer;
  }

  /**
   * Counts what leaves the TSN veth with this L4 protocol and (translated) destination port
   * while `send` runs.
   */
  async measure(
    l4proto: number,
    send: () => Promise<void>,
    dport = this.farPort,
  ): Promise<ObserverCounts> {
    const obs = this.#observer();
    obs.filter(l4proto, dport);
    await send();
    await sleep(100);
    return obs.counts();
  }

  #maps<T>(fn: (m: DatapathMaps) => T): T {
    const m = DatapathMaps.open(this.bpffs);
    try {
      return fn(m);
    } finally {
      m.close();
    }
  }

  /** Every pod interface's entry (policy, carrier), with its host veth's name. */
  entries(): Array<{ ifindex: number; host?: string; entry: PodEntry }> {
    return this.#maps((m) => m.pods()).map((p) => ({ ...p, host: ifIndexToName(p.ifindex) }));
  }

  /** The entry of a pod (by its CNI container id: containerd's sandbox id). */
  entryOf(containerId: string): { ifindex: number; host?: string; entry: PodEntry } | undefined {
    const cookie = podCookie(containerId);
    return this.entries().find((e) => e.entry.cookie === cookie);
  }

  /** The programs on a host veth's ingress, in run order (admit must be first). */
  hostPrograms(ifname: string): string[] {
    return programsOn(ifname, "ingress").map((p) => p.name);
  }

  /** Attachment pins of a pod's interface. */
  podPins(containerId: string, ifname = "eth0"): string[] {
    return podPins(this.bpffs, containerId, ifname);
  }

  /** Every pod attachment pinned under the node's pin root (both sides of an interface). */
  podAttachments(): Array<PodPin & { pins: string[] }> {
    return listPodAttachments(this.bpffs);
  }

  /** The kernel id of a pinned program. */
  progId(role: ProgramRole): number {
    const fd = objGetRequired(new PinLayout(this.bpffs).prog(role));
    try {
      return progInfo(fd).id;
    } finally {
      closeFd(fd);
    }
  }

  /** The kernel id of the pinned saver program. */
  saverProgId(): number {
    return this.progId("save");
  }

  /** BPF links anywhere on the system running one of the node's programs (tcx attachments). */
  async links(role: ProgramRole): Promise<Array<{ id: number; ifindex?: number }>> {
    const prog = this.progId(role);
    const out = (await run(["bpftool", "-j", "link", "show"])).stdout;
    const links = JSON.parse(out) as Array<{ id: number; prog_id: number; ifindex?: number }>;
    return links.filter((l) => l.prog_id === prog).map((l) => ({ id: l.id, ifindex: l.ifindex }));
  }

  /** BPF links running the saver (tcx attachments of pods). */
  saverLinks(): Promise<Array<{ id: number; ifindex?: number }>> {
    return this.links("save");
  }

  /** BPF links running admit (tcx attachments on host veths). */
  admitLinks(): Promise<Array<{ id: number; ifindex?: number }>> {
    return this.links("admit");
  }

  /**
   * Programs on a pod interface's egress inside its namespace: tcx programs (queried through
   * libbpf; bpftool 7.1 does not know tcx), or the cls_bpf filters `tc` lists (clsact).
   */
  async podEgressPrograms(netns: string, ifname = "eth0"): Promise<string[]> {
    if (this.podApi === "tcx") return queryTcx(ifname, "egress", netns).map((p) => p.name);
    const out = (await run(["tc", "filter", "show", "dev", ifname, "egress"], { netns })).stdout;
    return [...out.matchAll(/bpf .*?name (\S+)/g)].map((m) => m[1]);
  }

  /** Undo everything (idempotent); returns what could not be undone. */
  async cleanup(): Promise<string[]> {
    if (this.#cleaned) return [];
    this.#cleaned = true;
    const problems: string[] = [];
    const step = async (what: string, f: () => unknown) => {
      try {
        await f();
      } catch (e) {
        problems.push(`${what}: ${e instanceof Error ? e.message : e}`);
      }
    };
    await step("observer", () => this.observer?.detach());
    this.observer = undefined;
    for (const p of this.#procs) {
      await step("far sink", () => p.stop());
    }
    this.#procs = [];
    await step("datapath", () => tearDownNode({ bpffs: this.bpffs }));
    if (await exists(this.bpffs)) problems.push(`pin root ${this.bpffs} left`);
    await step("TSN veth", async () => {
      const r = await run(["ip", "link", "del", this.tsnIf], { allowFail: true });
      if (r.code !== 0 && !/Cannot find device/.test(r.stderr)) throw new Error(r.stderr.trim());
    });
    await step("far netns", () => deleteNetns(this.farNs));
    await step("nft table", async () => {
      const r = await run(["nft", "delete", "table", "ip", this.nftTable], { allowFail: true });
      if (r.code !== 0 && !/No such file/.test(r.stderr)) throw new Error(r.stderr.trim());
    });
    if (this.#savedForward !== undefined) {
      const saved = this.#savedForward;
      await step("ip_forward", () => Deno.writeTextFile("/proc/sys/net/ipv4/ip_forward", saved));
    }
    if (problems.length) console.error(`TSN node cleanup:\n  ${problems.join("\n  ")}`);
    return problems;
  }

  /** What the node's own setup left behind after cleanup (expect all empty). */
  async leftovers(): Promise<string[]> {
    const left: string[] = [];
    if (await exists(this.bpffs)) left.push(`pin root ${this.bpffs}`);
    if ((await run(["ip", "link", "show", "dev", this.tsnIf], { allowFail: true })).code === 0) {
      left.push(`link ${this.tsnIf}`);
    }
    if (await exists(`/run/netns/${this.farNs}`)) left.push(`netns ${this.farNs}`);
    if (
      (await run(["nft", "list", "table", "ip", this.nftTable], { allowFail: true })).code === 0
    ) {
      left.push(`nft table ${this.nftTable}`);
    }
    return left;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.cleanup();
  }
}

/** Wait until the far end's TCP sink accepts connections. */
async function waitListening(ns: string, port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const r = await run(["ss", "-Hltn", `sport = :${port}`], { netns: ns, allowFail: true });
    if (r.stdout.trim()) return;
    await sleep(50);
  }
  throw new Error(`the far end's TCP sink on :${port} did not start`);
}

/** Host-side ports of a bridge (pod veths still plugged in). */
export async function bridgePorts(bridge: string): Promise<string[]> {
  const r = await run(["ip", "-o", "link", "show", "master", bridge], { allowFail: true });
  if (r.code !== 0) return [];
  return [...r.stdout.matchAll(/^\d+: ([^:@]+)/gm)].map((m) => m[1]);
}
