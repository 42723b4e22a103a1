/**
 * Stand-ins for datapaths we cannot run here (Cilium, Calico eBPF), written by us from their
 * documented behaviour (tests/bpf/standins/*.c, docs/coexistence.md), and a throwaway node
 * that runs them the way the real ones run: the "agent" loads and pins the programs
 * (StandinDatapath.load), a CNI plugin of ours attaches the pod's program during the chain's
 * ADD, before tsnproxy's (tests/lib/standin_cni.ts, through tests/lib/standin-cni), and
 * tsnproxy is installed with `tsnproxy install`, as production does (CoexistNode).
 */
import { BpfObject } from "../../src/bpf/object.ts";
import { objectBytes } from "../../src/bpf/objects.ts";
import {
  check,
  closeFd,
  mapLookup,
  mapUpdate,
  objGet,
  objPin,
  progIdAt,
} from "../../src/bpf/sys.ts";
import { BPF_ANY } from "../../src/ffi/structs/bpf.ts";
import { ifNameToIndex } from "../../src/ffi/libc.ts";
import { withNetns } from "../../src/util/netns.ts";
import { chainAdd, chainDel, type Conflist } from "../../scripts/lib/cni_chain.ts";
import { Observer } from "./observer.ts";
import { type Child, netnsPath, run } from "./run.ts";
import { deleteNetns, Netns } from "./netns.ts";
import { createTopology, FAR_V4, farSinks, type Topology } from "./topology.ts";
import { STANDIN_BPF_OBJECTS } from "./standin_objects.gen.ts";
import {
  addrBytes,
  ATTACH,
  attachPinned,
  pins,
  type StandinKind,
  STANDINS,
  updatePinnedLink,
} from "./standin_link.ts";

export { type StandinKind, STANDINS } from "./standin_link.ts";

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
export const STANDIN_CNI = `${ROOT}/tests/lib/standin-cni`;
export const TSNPROXY_LAUNCHER = `${ROOT}/scripts/tsnproxy`;
export const SENDER = `${ROOT}/tests/lib/sender.py`;

/** struct sti_counts (tests/bpf/standins/standin.h). */
export interface StandinCounts {
  packets: number;
  nonIp: number;
  tcIndexSet: number;
  /** Packets that arrived with tc_index bit 0..4 set (0x1, 0x2, 0x4, 0x8, 0x10). */
  flag: number[];
  tsnpMarker: number;
  clearedSkipNodeport: number;
  prioritySet: number;
  tstampSet: number;
  ownMark: number;
  redirected: number;
  redirectFailed: number;
  rewritten: number;
  passed: number;
}
const COUNTS_SIZE = 17 * 8;

export function decodeStandinCounts(v: Uint8Array<ArrayBuffer>): StandinCounts {
  const dv = new DataView(v.buffer, v.byteOffset, v.byteLength);
  let off = 0;
  const next = () => {
    const x = Number(dv.getBigUint64(off, true));
    off += 8;
    return x;
  };
  return {
    packets: next(),
    nonIp: next(),
    tcIndexSet: next(),
    flag: [next(), next(), next(), next(), next()],
    tsnpMarker: next(),
    clearedSkipNodeport: next(),
    prioritySet: next(),
    tstampSet: next(),
    ownMark: next(),
    redirected: next(),
    redirectFailed: next(),
    rewritten: next(),
    passed: next(),
  };
}

/** The bits each stand-in owns in tc_index, by name, for its reports. */
export const CILIUM_TC_INDEX_FLAGS: Record<number, string> = {
  0: "0x1 FROM_INGRESS_PROXY",
  1: "0x2 FROM_EGRESS_PROXY",
  2: "0x4 SKIP_NODEPORT",
  4: "0x10 SKIP_HOST_FIREWALL",
};

/** "0x1 FROM_INGRESS_PROXY on 2502 of 4005 pod packets, ..." or "none". */
export function describeFlags(c: StandinCounts): string {
  const seen = Object.entries(CILIUM_TC_INDEX_FLAGS)
    .filter(([bit]) => c.flag[Number(bit)] > 0)
    .map(([bit, name]) => `${name} on ${c.flag[Number(bit)]}`);
  if (seen.length === 0) return "none";
  return `${seen.join(", ")} of ${c.packets} pod packets (tsnproxy's tag marker on ` +
    `${c.tsnpMarker}; 0x4 read and cleared on ${c.clearedSkipNodeport})`;
}

export interface StandinConfig {
  /** The node's network namespace path (undefined: the caller's, as in a test VM). */
  netns?: string;
  /** Cilium: the native (direct-routing) device; host routing forwards to it. */
  nic?: string;
  /** The pod network (IPv4 CIDR, IPv6 /64): Cilium keeps it local, Calico's cluster. */
  podNet4?: string;
  podNet6?: string;
  /** Calico: the pods' DSCP annotation (undefined: none). */
  dscp?: number;
  /** Attach the pods' program after the CNI ADD (Calico's Felix), not during it. */
  attachLater?: boolean;
}

/** A stand-in datapath loaded and pinned under its own root, as an agent would. */
export class StandinDatapath {
  private constructor(
    readonly kind: StandinKind,
    readonly pinDir: string,
    readonly cfg: StandinConfig,
  ) {}

  static load(kind: StandinKind, pinDir: string, cfg: StandinConfig): StandinDatapath {
    const objName = STANDINS[kind].object;
    Deno.mkdirSync(pinDir, { recursive: true });
    const obj = BpfObject.open(`sti_${objName}`, objectBytes(objName, STANDIN_BPF_OBJECTS));
    try {
      obj.load();
      const programs = objName === "cilium"
        ? ["sti_cil_lxc", "sti_cil_lxc_fib", "sti_cil_netdev", "sti_cil_to_netdev"]
        : ["sti_cali_wep"];
      const maps = objName === "cilium"
        ? ["sti_counts", "sti_eps4", "sti_eps6", "sti_cfg"]
        : ["sti_counts", "sti_cali_cfg"];
      for (const p of programs) objPin(obj.programFd(p), pins.prog(pinDir, p));
      for (const m of maps) objPin(obj.mapFd(m), pins.map(pinDir, m));
    } finally {
      obj.close();
    }
    const sd = new StandinDatapath(kind, pinDir, cfg);
    sd.#configure();
    if (objName === "cilium" && cfg.nic) {
      // bpf_host on the native device, at agent start (tcx, appended): cil_to_netdev on
      // egress in every mode; cil_from_netdev on ingress (the stand-in needs it for host
      // routing's replies only).
      withNetns(cfg.netns, () => {
        const nic = ifNameToIndex(cfg.nic!);
        if (!nic) throw new Error(`stand-in: no native device ${cfg.nic}`);
        const attach = (prog: string, type: number, owner: string) =>
          attachPinned(pins.prog(pinDir, prog), nic, type, pins.link(pinDir, owner));
        attach("sti_cil_to_netdev", ATTACH.tcxEgress, "nic-egress");
        if (kind === "cilium-hostrouting") attach("sti_cil_netdev", ATTACH.tcxIngress, "nic");
      });
    }
    return sd;
  }

  #configure(): void {
    const v = new Uint8Array(24);
    const dv = new DataView(v.buffer);
    const [net4, len4] = (this.cfg.podNet4 ?? "0.0.0.0/32").split("/");
    const mask = len4 === "0" ? 0 : (0xffffffff << (32 - Number(len4))) >>> 0;
    const n4 = addrBytes(net4);
    const n6 = addrBytes((this.cfg.podNet6 ?? "::/64").split("/")[0]).subarray(0, 8);
    if (STANDINS[this.kind].object === "cilium") {
      withNetns(this.cfg.netns, () => {
        dv.setUint32(0, this.cfg.nic ? ifNameToIndex(this.cfg.nic) : 0, true);
      });
    } else {
      dv.setInt32(0, this.cfg.dscp ?? -1, true);
    }
    v.set(n4, 4);
    dv.setUint32(8, mask, false); // network order, as the packet's address
    v.set(n6, 16);
    const name = STANDINS[this.kind].object === "cilium" ? "sti_cfg" : "sti_cali_cfg";
    this.#withMap(name, (fd) => {
      check(mapUpdate(fd, new Uint8Array(4), v, BPF_ANY), `stand-in ${name}`, "run as root");
    });
  }

  #withMap<T>(name: string, fn: (fd: number) => T): T {
    const fd = objGet(pins.map(this.pinDir, name));
    if (fd === undefined) throw new Error(`stand-in map ${name} is not pinned`);
    try {
      return fn(fd);
    } finally {
      closeFd(fd);
    }
  }

  /** The program on the NIC's egress that ends the tcx chain (Cilium's cil_to_netdev). */
  nicEgressProgId(): number | undefined {
    return STANDINS[this.kind].object === "cilium" && this.cfg.nic
      ? progIdAt(pins.prog(this.pinDir, "sti_cil_to_netdev"))
      : undefined;
  }

  /**
   * What the program on the pods' host-side interfaces ("pod"), on the NIC's ingress ("nic")
   * or on its egress ("nicEgress") saw.
   */
  counts(role: "pod" | "nic" | "nicEgress" = "pod"): StandinCounts {
    const key = new Uint8Array(4);
    new DataView(key.buffer).setUint32(0, { pod: 0, nic: 1, nicEgress: 2 }[role], true);
    const v = new Uint8Array(COUNTS_SIZE);
    this.#withMap("sti_counts", (fd) => check(mapLookup(fd, key, v), "stand-in counts", ""));
    return decodeStandinCounts(v);
  }

  reset(): void {
    for (const role of [0, 1, 2]) {
      const key = new Uint8Array(4);
      new DataView(key.buffer).setUint32(0, role, true);
      this.#withMap("sti_counts", (fd) => {
        check(mapUpdate(fd, key, new Uint8Array(COUNTS_SIZE), BPF_ANY), "stand-in reset", "");
      });
    }
  }

  /** The plugin entry for the conflist. */
  pluginEntry(stateDir: string, ipam?: Record<string, unknown>): Record<string, unknown> {
    return {
      type: "tsnp-standin",
      standin: this.kind,
      pinDir: this.pinDir,
      stateDir,
      ...(ipam ? { ipam } : {}),
      ...(this.cfg.attachLater ? { attachLater: true } : {}),
    };
  }

  /** The agent attaches the pod's program after its ADD (attachLater: Calico's Felix). */
  attachPod(containerId: string, hostIf: string): void {
    withNetns(this.cfg.netns, () => {
      const ifindex = ifNameToIndex(hostIf);
      if (!ifindex) throw new Error(`stand-in: no interface ${hostIf}`);
      attachPinned(
        pins.prog(this.pinDir, STANDINS[this.kind].podProgram),
        ifindex,
        ATTACH.tcxIngress,
        pins.link(this.pinDir, containerId),
      );
    });
  }

  /**
   * The agent regenerates a pod's endpoint, as Cilium does on a policy change or restart:
   * the program is replaced in its link (position kept, pkg/datapath/loader/tcx.go
   * updateTCX), then every legacy tc filter on that hook is deleted (pkg/datapath/loader/
   * tc.go attachSKBProgram -> removeTCFilters, whoever's they are).
   */
  async regenerate(containerId: string, hostIf: string): Promise<void> {
    updatePinnedLink(
      pins.link(this.pinDir, containerId),
      pins.prog(this.pinDir, STANDINS[this.kind].podProgram),
    );
    await run(["tc", "filter", "del", "dev", hostIf, "ingress"], {
      netns: this.cfg.netns,
      allowFail: true, // no clsact qdisc: nothing to delete
    });
  }

  /** Unpins everything: links detach, programs and maps go with their last reference. */
  destroy(): void {
    try {
      Deno.removeSync(this.pinDir, { recursive: true });
    } catch { /* gone */ }
  }
}

// ---- a node with a CNI chain, the stand-in and tsnproxy installed -------------------------

export type Primary = "ptp" | "bridge" | "standin";

export interface CoexistOptions {
  /** The primary plugin: a reference plugin, or the stand-in itself (calico). */
  primary: Primary;
  /** The stand-in in the chain (none: tsnproxy behind the plain primary). */
  standin?: StandinKind;
  /** Calico's DSCP annotation. */
  dscp?: number;
  /** The stand-in attaches after the pod's ADD, as Calico's Felix does. */
  attachLater?: boolean;
}

export interface CoexistPod {
  id: string;
  netns: string;
  netnsPath: string;
  ipv4: string;
  /** The host-side interface the primary created. */
  hostIf: string;
  result: Record<string, unknown>;
}

export const POD_NET4 = "10.244.0.0/24";
export const POD_NET6 = "fd00:244::/64";

/**
 * tests/lib/topology.ts's node (no bridge of its own: the primary plugin makes the pods'
 * interfaces), a conflist [primary, stand-in], `tsnproxy install` (which appends its entry
 * last), the observer on tsn0 and sinks on the far end.
 */
export class CoexistNode {
  readonly bpffs: string;
  readonly standin?: StandinDatapath;
  observer?: Observer;
  readonly pods: CoexistPod[] = [];
  #sinks: Child[] = [];
  #installed = false;

  private constructor(
    readonly topo: Topology,
    readonly tmp: string,
    readonly opts: CoexistOptions,
    standin: StandinDatapath | undefined,
  ) {
    this.bpffs = `/sys/fs/bpf/tsnp-test-${topo.id}`;
    this.standin = standin;
  }

  get loc(): string[] {
    return [
      "--config",
      `${this.tmp}/config.yaml`,
      "--cni-conf-dir",
      `${this.tmp}/net.d`,
      "--cni-bin-dir",
      `${this.tmp}/bin`,
      "--bpffs",
      this.bpffs,
      "--state-dir",
      `${this.tmp}/state`,
    ];
  }

  static async create(opts: CoexistOptions): Promise<CoexistNode> {
    const topo = await createTopology({ pods: 0, bridge: false });
    const tmp = await Deno.makeTempDir({ prefix: "tsnproxy-coexist-" });
    let standin: StandinDatapath | undefined;
    try {
      if (opts.standin) {
        standin = StandinDatapath.load(opts.standin, `/sys/fs/bpf/tsnp-test-${topo.id}-sti`, {
          netns: topo.nodePath,
          nic: "tsn0",
          podNet4: POD_NET4,
          podNet6: POD_NET6,
          dscp: opts.dscp,
          attachLater: opts.attachLater,
        });
      }
      const node = new CoexistNode(topo, tmp, opts, standin);
      await node.#prepare();
      return node;
    } catch (e) {
      standin?.destroy();
      await topo.destroy();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
      throw e;
    }
  }

  async #prepare(): Promise<void> {
    const { tmp, topo, opts } = this;
    for (const d of ["net.d", "bin", "standin-state", "ipam"]) await Deno.mkdir(`${tmp}/${d}`);
    for (const p of ["bridge", "ptp", "host-local", "loopback"]) {
      await Deno.symlink(`/usr/lib/cni/${p}`, `${tmp}/bin/${p}`);
    }
    await Deno.symlink(STANDIN_CNI, `${tmp}/bin/tsnp-standin`);
    const ipam = {
      type: "host-local",
      ranges: [[{ subnet: POD_NET4 }]],
      routes: [{ dst: "0.0.0.0/0" }],
      dataDir: `${tmp}/ipam`,
    };
    const plugins: Record<string, unknown>[] = [];
    if (opts.primary === "standin") {
      if (!this.standin) throw new Error("primary standin needs a stand-in");
      plugins.push(this.standin.pluginEntry(`${tmp}/standin-state`, ipam));
    } else {
      plugins.push(
        opts.primary === "bridge"
          ? { type: "bridge", bridge: "cni0", isGateway: true, ipMasq: false, ipam }
          : { type: "ptp", ipMasq: false, ipam },
      );
      if (this.standin) plugins.push(this.standin.pluginEntry(`${tmp}/standin-state`));
    }
    const conflist: Conflist = { cniVersion: "1.0.0", name: "coexist", plugins };
    await Deno.writeTextFile(`${tmp}/net.d/10-coexist.conflist`, JSON.stringify(conflist));
    await Deno.writeTextFile(
      `${tmp}/config.yaml`,
      ["tsnInterface: tsn0", "qdisc:", "  kind: keep", ""].join("\n"),
    );
    // The far end routes the pod network back through the node (no NAT needed on the paths
    // that skip netfilter, as with Cilium's native routing).
    await run(["ip", "-n", topo.far, "route", "add", POD_NET4, "via", "198.18.0.1"]);
    // A node has a default route; proxy ARP (Calico's gateway 169.254.1.1) needs one.
    await run(["ip", "-n", topo.node, "route", "add", "default", "via", FAR_V4]);
    this.#sinks = farSinks(topo);
    // Cilium's cil_to_netdev ends tsn0's tcx egress chain with TC_ACT_OK, which skips every
    // clsact filter: then the observer goes on tcx, right before it (and after tsnproxy's
    // restorer, which install puts first).
    const before = this.standin?.nicEgressProgId();
    this.observer = before
      ? Observer.attachTcxBefore(topo.nodePath, "tsn0", before)
      : Observer.attach(topo.nodePath, "tsn0");
    // Resolve the far end's neighbour entry first, so no case loses packets to ARP.
    await run(["python3", SENDER, "--dst", FAR_V4, "--count", "2"], { netns: topo.node });
  }

  /** Runs the tsnproxy CLI in the node's namespace (nsenter keeps /sys/fs/bpf). */
  async tsnproxy(args: string[], allowFail = false) {
    return await run([TSNPROXY_LAUNCHER, ...args], { netns: this.topo.nodePath, allowFail });
  }

  /** `tsnproxy install`: binary, pinned datapath, restorer on tsn0, entry appended last. */
  async install(): Promise<string> {
    const r = await this.tsnproxy(["install", ...this.loc]);
    this.#installed = true;
    return r.stdout;
  }

  conflist(): Conflist {
    return JSON.parse(Deno.readTextFileSync(`${this.tmp}/net.d/10-coexist.conflist`));
  }

  /** A pod through the whole chain, as a runtime creates it. */
  async addPod(): Promise<CoexistPod> {
    const n = this.pods.length;
    const id = `coexist${n}-${this.topo.id}`;
    const ns = await Netns.create({ name: id, lo: false });
    const conf = this.conflist();
    const result = await chainAdd(conf, this.#ctx(id)) as Record<string, unknown> & {
      interfaces: Array<{ name: string; sandbox?: string }>;
      ips: Array<{ address: string }>;
    };
    const pod: CoexistPod = {
      id,
      netns: id,
      netnsPath: ns.path,
      ipv4: result.ips.find((i) => !i.address.includes(":"))!.address.split("/")[0],
      hostIf: result.interfaces.find((i) => !i.sandbox)!.name,
      result,
    };
    this.pods.push(pod);
    if (this.opts.attachLater) this.standin?.attachPod(id, pod.hostIf);
    return pod;
  }

  #ctx(id: string) {
    return {
      containerId: id,
      netns: netnsPath(id),
      binDir: `${this.tmp}/bin`,
      nodeNetns: this.topo.nodePath,
    };
  }

  /** The sender (tests/lib/sender.py) in a pod: argv after the script. */
  async send(pod: CoexistPod, args: string[]): Promise<void> {
    const r = await run(["python3", SENDER, ...args], { netns: pod.netns, allowFail: true });
    if (r.code !== 0) throw new Error(`sender in ${pod.id} failed: ${r.stderr}`);
  }

  async sysctl(...kv: string[]): Promise<void> {
    await run(["sysctl", "-qw", ...kv], { netns: this.topo.node });
  }

  async destroy(): Promise<void> {
    const conf = this.conflist();
    for (const p of [...this.pods].reverse()) {
      await chainDel(conf, this.#ctx(p.id), p.result).catch((e) =>
        console.error(`DEL ${p.id}: ${e.message}`)
      );
      await deleteNetns(p.id);
    }
    if (this.#installed) await this.tsnproxy(["uninstall", ...this.loc], true);
    this.observer?.detach();
    for (const p of this.#sinks) await p.stop();
    this.standin?.destroy();
    await this.topo.destroy();
    await Deno.remove(this.tmp, { recursive: true }).catch(() => {});
  }
}
