/**
 * A benchmark node: tests/lib's namespaces with tsnproxy set up as production does it
 * (tests/lib/datapath_env.ts: `tsnproxy install`'s datapath and restorer steps, each pod
 * attached by the real plugin's CNI ADD) with one carrier forced, or the research design's
 * rebuilt datapath; and a uniform way to read what left tsn0.
 */
import { attach, detach, type Direction, queryTcx } from "../../src/bpf/attach.ts";
import { attachRestorer, detachRestorer } from "../../src/bpf/node.ts";
import { attachPodPrograms, detachHostSide, detachPodSide } from "../../src/bpf/pod.ts";
import { ifNameToIndex } from "../../src/ffi/libc.ts";
import { withNetns } from "../../src/util/netns.ts";
import { BpfObject } from "../../src/bpf/object.ts";
import { objectBytes } from "../../src/bpf/objects.ts";
import type { ProgramRole } from "../../src/bpf/pins.ts";
import { type DatapathConfig, DatapathMaps, type PodEntry } from "../../src/bpf/maps.ts";
import { DatapathEnv } from "../../tests/lib/datapath_env.ts";
import { setUpNode } from "../../tests/lib/node.ts";
import type { ObserverCounts } from "../../tests/lib/observer.ts";
import { createTopology, type Pod, type Topology } from "../../tests/lib/topology.ts";
import { onCleanup } from "./common.ts";
import { type Child, run, spawn } from "../../tests/lib/run.ts";
import { BENCH_BPF_OBJECTS } from "./objects.gen.ts";
import { ResearchDatapath } from "./research_dp.ts";

/** tsnproxy's two carriers (node config `carrier:`; "table" is the stage), or the research design. */
export type Carrier = "tag" | "table";
export type Variant = Carrier | "research";

/** The node config for a carrier: every pod packet goes by that carrier. */
export function carrierConfig(c: Carrier): string {
  return `carrier: ${c}`;
}

export class BenchNode {
  #env?: DatapathEnv;
  #research?: ResearchDatapath;
  #maps?: DatapathMaps;

  private constructor(readonly topo: Topology, readonly variant: Variant) {}

  /**
   * tsnproxy: the node set up (restorer on tsn0, observer after it counting UDP) and every
   * pod attached by CNI ADD. research: its restorer (with its in-program observer) and GC
   * on tsn0, its saver on every pod.
   */
  static async create(variant: Variant, pods: number): Promise<BenchNode> {
    if (variant === "research") {
      const topo = await createTopology({ pods });
      const node = new BenchNode(topo, variant);
      onCleanup(`node ${topo.id}`, () => node.destroy());
      const r = ResearchDatapath.load(`/sys/fs/bpf/tsnp-bench-${topo.id}`);
      node.#research = r;
      r.attachRestorer(topo.nodePath, "tsn0", true);
      r.startGc();
      for (const p of topo.pods) r.attachSaver(p.netnsPath, p.ifname, p.name);
      return node;
    }
    const env = await DatapathEnv.create("tcx", { pods, config: carrierConfig(variant) });
    const node = new BenchNode(env.topo, variant);
    node.#env = env;
    onCleanup(`node ${env.topo.id}`, () => node.destroy());
    for (const p of env.topo.pods) await env.attachPod(p);
    env.observer.filter(17);
    node.#maps = env.maps();
    return node;
  }

  /** The tsnproxy datapath's environment (throws for the research variant). */
  get env(): DatapathEnv {
    if (!this.#env) throw new Error(`${this.variant}: not a tsnproxy node`);
    return this.#env;
  }

  counts(): ObserverCounts {
    return this.#env ? this.#env.observer.counts() : this.#research!.counts();
  }

  resetCounts(): void {
    if (this.#env) this.#env.observer.reset();
    else this.#research!.resetCounts();
  }

  /** The research design's metadata table entries; tsnproxy keeps no table to fill. */
  occupancy(): number | undefined {
    return this.#research?.occupancy();
  }

  /** The datapath's own counters (for the report). */
  datapathStats(): Record<string, number> {
    if (this.#research) return { ...this.#research.stats() };
    const c = this.#maps!.counters();
    return Object.fromEntries(Object.entries(c).map(([k, v]) => [k, Number(v)]));
  }

  async destroy(): Promise<void> {
    this.#maps?.close();
    this.#maps = undefined;
    if (this.#env) {
      const env = this.#env;
      this.#env = undefined;
      await env.destroy();
    }
    if (this.#research) {
      this.#research.close();
      this.#research = undefined;
      await this.topo.destroy();
    }
  }
}

const emptyPin = (bpffs: string, role: string) => `${bpffs}/bench_empty_${role}`;

/**
 * What is on a pod's path: nothing of tsnproxy's; an empty program at each of the three hooks
 * tsnproxy uses (what the hooks cost by themselves); tsnproxy with one carrier.
 */
export type PathState = "without" | "empty" | Carrier;

/** What the plugin's ADD left for a carrier: the node's config and the pod's entry. */
interface Captured {
  config: DatapathConfig;
  pod: PodEntry;
  /** Program ids on the pod's egress, the host side's ingress and tsn0's egress. */
  hooks: number[][];
}

/**
 * One pod's path switched between the states in one topology, fast enough to alternate many
 * times a minute. For each carrier the node is first set up with it (install's datapath and
 * restorer steps) and the pod added by the real plugin (CNI ADD); what that left in the maps
 * (the node config, the pod's entry) is kept and the pod deleted again (CNI DEL). A switch
 * then replays it with the production functions the plugin and install call: the map
 * entries written back, attachPodPrograms() for save and admit, attachRestorer() on tsn0;
 * leaving, detachPodSide(), detachHostSide() and detachRestorer(). The programs on the hooks are checked to
 * be the ones the plugin attached. empty = bench_nop (bench/bpf/calib.c) on the same three
 * hooks, tcx, first. The observer DatapathEnv attaches is removed with its clsact qdisc, so no
 * state pays for it.
 */
export class PathSwitch {
  #state: PathState = "without";
  #captured = new Map<Carrier, Captured>();
  #hostIndex = 0;

  private constructor(
    readonly env: DatapathEnv,
    readonly pod: Pod,
    readonly destroy: () => Promise<void>,
  ) {}

  static async create(): Promise<PathSwitch> {
    const env = await DatapathEnv.create("tcx", { pods: 1, config: carrierConfig("tag") });
    const destroy = onCleanup(`node ${env.topo.id}`, async () => {
      // The empty programs' links (tcx: unpinning detaches them), then the node.
      for (const role of ["save", "admit", "restore"]) detach(emptyPin(env.bpffs, role));
      await env.destroy();
    });
    const sw = new PathSwitch(env, env.topo.pods[0], destroy);
    try {
      env.observer.detach();
      await run(["tc", "-n", env.topo.node, "qdisc", "del", "dev", "tsn0", "clsact"]);
      sw.#hostIndex = withNetns(env.topo.nodePath, () => ifNameToIndex(sw.pod.hostVeth));
      for (const c of ["tag", "table"] as const) {
        setUpNode({
          bpffs: env.bpffs,
          netns: env.topo.nodePath,
          tsnInterface: "tsn0",
          api: env.api,
          config: carrierConfig(c),
        });
        await env.attachPod(sw.pod);
        const maps = env.maps();
        try {
          const pod = maps.getPod(sw.#hostIndex);
          if (!pod) throw new Error(`${c}: the plugin's ADD left no pod entry`);
          const want = c === "tag" ? "tag" : "stage";
          if (pod.carrier !== want) throw new Error(`${c}: the pod got carrier ${pod.carrier}`);
          sw.#captured.set(c, { config: maps.readConfig(), pod, hooks: sw.#hookIds() });
        } finally {
          maps.close();
        }
        await env.detachPod(sw.pod);
        detachRestorer(env.bpffs, "tsn0", env.topo.nodePath);
      }
    } catch (e) {
      await destroy();
      throw e;
    }
    return sw;
  }

  get state(): PathState {
    return this.#state;
  }

  /** Where save, admit and restore attach. */
  hooks(): Array<{ role: ProgramRole; ifname: string; direction: Direction; netns: string }> {
    return [
      { role: "save", ifname: this.pod.ifname, direction: "egress", netns: this.pod.netnsPath },
      {
        role: "admit",
        ifname: this.pod.hostVeth,
        direction: "ingress",
        netns: this.env.topo.nodePath,
      },
      { role: "restore", ifname: "tsn0", direction: "egress", netns: this.env.topo.nodePath },
    ];
  }

  #hookIds(): number[][] {
    return this.hooks().map((h) => queryTcx(h.ifname, h.direction, h.netns).map((p) => p.id));
  }

  #podRequest() {
    return {
      bpffs: this.env.bpffs,
      containerId: DatapathEnv.containerId(this.pod),
      ifname: this.pod.ifname,
      netns: this.pod.netnsPath,
    };
  }

  set(state: PathState): void {
    if (state === this.#state) return;
    const node = this.env.topo.nodePath;
    if (this.#state === "empty") {
      for (const h of this.hooks()) {
        detach(emptyPin(this.env.bpffs, h.role), { netns: h.netns });
      }
    } else if (this.#state !== "without") {
      const r = this.#podRequest();
      // detach() detaches links at once (BPF_LINK_DETACH): the next state attaches right after.
      withNetns(node, () => detachPodSide(r) + detachHostSide(r, () => true));
      detachRestorer(this.env.bpffs, "tsn0", node);
    }
    this.#state = "without";
    if (state === "empty") {
      const o = BpfObject.open("calib", objectBytes("calib", BENCH_BPF_OBJECTS));
      try {
        o.load();
        for (const h of this.hooks()) {
          attach({
            progFd: o.programFd("bench_nop"),
            ifname: h.ifname,
            direction: h.direction,
            api: "tcx",
            netns: h.netns,
            pin: emptyPin(this.env.bpffs, h.role),
            first: true,
          });
        }
      } finally {
        o.close(); // the pinned links keep the program
      }
    } else if (state !== "without") {
      const c = this.#captured.get(state)!;
      const maps = this.env.maps();
      try {
        maps.writeConfig(c.config);
        maps.putPod(this.#hostIndex, c.pod);
      } finally {
        maps.close();
      }
      withNetns(node, () =>
        attachPodPrograms({
          ...this.#podRequest(),
          api: this.env.api,
          host: { name: this.pod.hostVeth, index: this.#hostIndex, kind: "veth" },
          hostApi: this.env.api,
        }));
      attachRestorer(this.env.bpffs, "tsn0", this.env.api, node);
      const now = this.#hookIds();
      if (JSON.stringify(now) !== JSON.stringify(c.hooks)) {
        throw new Error(
          `${state}: programs on the hooks ${JSON.stringify(now)}, the plugin attached ${
            JSON.stringify(c.hooks)
          }`,
        );
      }
    }
    this.#state = state;
  }
}

/** Spawns a process inside a namespace; it is killed on cleanup if still running. */
export function spawnIn(ns: string, argv: string[]): Child {
  const p = spawn(argv, { netns: ns });
  onCleanup(`process ${argv[0]} in ${ns}`, () => p.stop());
  return p;
}

/** Waits for a flood.py process and parses its JSON line. */
export async function floodResult(
  p: Child,
): Promise<{ sent: number; bytes: number; seconds: number }> {
  const o = await p.wait();
  const text = o.stdout.trim();
  if (o.code !== 0 || !text) throw new Error(`flood.py failed: ${o.stderr.trim()}`);
  return JSON.parse(text.split("\n").pop()!);
}
