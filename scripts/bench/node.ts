/**
 * A benchmark node: tests/lib's namespaces with tsnproxy set up as production does it
 * (tests/lib/datapath_env.ts: `tsnproxy install`'s datapath and restorer steps, each pod
 * attached by the real plugin's CNI ADD) with one carrier forced, or the research design's
 * rebuilt datapath; and a uniform way to read what left tsn0.
 */
import { attach, detach, type Direction } from "../../src/bpf/attach.ts";
import { detachRestorer } from "../../src/bpf/node.ts";
import { BpfObject } from "../../src/bpf/object.ts";
import { objectBytes } from "../../src/bpf/objects.ts";
import type { ProgramRole } from "../../src/bpf/pins.ts";
import { DatapathMaps } from "../../src/bpf/maps.ts";
import { DatapathEnv } from "../../tests/lib/datapath_env.ts";
import { setUpNode } from "../../tests/lib/node.ts";
import type { ObserverCounts } from "../../tests/lib/observer.ts";
import { createTopology, type Pod, type Topology } from "../../tests/lib/topology.ts";
import { onCleanup, sh } from "./common.ts";
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

/**
 * One pod's path switched between "without tsnproxy" and each carrier, in one topology:
 * without = the pod's DEL done and the restorer detached (nothing of ours on the path; the
 * programs stay loaded, which costs a packet nothing); a carrier = the node set up again with
 * it (install's datapath and restorer steps: the config is rewritten) and the pod's ADD;
 * empty = bench_nop (bench/bpf/calib.c) on the pod's egress, the host side's ingress and
 * tsn0's egress, tcx, where save, admit and restore go. The observer DatapathEnv attaches is
 * removed with its clsact qdisc, so no state pays for it.
 */
export class PathSwitch {
  #state: PathState = "without";

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
    try {
      env.observer.detach();
      await sh(["tc", "-n", env.topo.node, "qdisc", "del", "dev", "tsn0", "clsact"]);
      detachRestorer(env.bpffs, "tsn0", env.topo.nodePath);
    } catch (e) {
      await destroy();
      throw e;
    }
    return new PathSwitch(env, env.topo.pods[0], destroy);
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

  #emptyPins(): Array<{ pin: string; netns: string }> {
    return this.hooks().map((h) => ({ pin: emptyPin(this.env.bpffs, h.role), netns: h.netns }));
  }

  async set(state: PathState): Promise<void> {
    if (state === this.#state) return;
    if (this.#state === "empty") {
      for (const p of this.#emptyPins()) detach(p.pin, { netns: p.netns });
      this.#state = "without";
    } else if (this.#state !== "without") {
      await this.env.detachPod(this.pod);
      detachRestorer(this.env.bpffs, "tsn0", this.env.topo.nodePath);
      this.#state = "without";
    }
    if (state === "empty") {
      const o = BpfObject.open("calib", objectBytes("calib", BENCH_BPF_OBJECTS));
      try {
        o.load();
        const pins = this.#emptyPins();
        this.hooks().forEach((h, i) =>
          attach({
            progFd: o.programFd("bench_nop"),
            ifname: h.ifname,
            direction: h.direction,
            api: "tcx",
            netns: h.netns,
            pin: pins[i].pin,
            first: true,
          })
        );
      } finally {
        o.close(); // the pinned links keep the program
      }
      this.#state = state;
    } else if (state !== "without") {
      setUpNode({
        bpffs: this.env.bpffs,
        netns: this.env.topo.nodePath,
        tsnInterface: "tsn0",
        api: this.env.api,
        config: carrierConfig(state),
      });
      await this.env.attachPod(this.pod);
      this.#state = state;
    }
  }
}

/** Spawns a process inside a namespace; it is killed on cleanup if still running. */
export function spawnIn(ns: string, argv: string[]): Deno.ChildProcess {
  const p = new Deno.Command("ip", {
    args: ["netns", "exec", ns, ...argv],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let done = false;
  p.status.then(() => (done = true));
  onCleanup(`process ${argv[0]} in ${ns}`, async () => {
    if (done) return;
    try {
      p.kill("SIGKILL");
    } catch {
      // exited meanwhile
    }
    await p.output().catch(() => {});
  });
  return p;
}

/** Waits for a flood.py process and parses its JSON line. */
export async function floodResult(
  p: Deno.ChildProcess,
): Promise<{ sent: number; bytes: number; seconds: number }> {
  const o = await p.output();
  const text = new TextDecoder().decode(o.stdout).trim();
  if (!o.success || !text) {
    throw new Error(`flood.py failed: ${new TextDecoder().decode(o.stderr).trim()}`);
  }
  return JSON.parse(text.split("\n").pop()!);
}
