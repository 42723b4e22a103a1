/**
 * A benchmark node: tests/lib/topology.ts's namespaces with either tsnproxy's datapath (set
 * up as install + CNI ADD do) or the research design's rebuilt one, and a uniform way to
 * read what left tsn0 and how full the metadata table is.
 */
import { setupNode, teardownNode } from "../../src/bpf/node.ts";
import { attachPod, detachPod } from "../../src/bpf/pod.ts";
import { DatapathMaps, NO_CLAMP } from "../../src/bpf/maps.ts";
import { Observer, type ObserverCounts } from "../../tests/lib/observer.ts";
import { createTopology, type Pod, type Topology } from "../../tests/lib/topology.ts";
import { onCleanup } from "./common.ts";
import { ResearchDatapath } from "./research_dp.ts";

export type Variant = "tsnproxy" | "research";

export const TSNPROXY_CONFIG = {
  maxAgeNs: 1_000_000_000n,
  gcIntervalNs: 1_000_000_000n,
  defaultPolicy: { podCookie: 0n, maxPriority: NO_CLAMP },
};

export class BenchNode {
  #observer?: Observer;
  #research?: ResearchDatapath;
  #maps?: DatapathMaps;
  #attached = new Set<Pod>();
  #nodeUp = false;

  private constructor(readonly topo: Topology, readonly variant: Variant) {}

  get bpffs(): string {
    return `/sys/fs/bpf/tsnp-bench-${this.topo.id}`;
  }

  /** Creates the namespaces and registers their removal; nothing attached yet. */
  static async create(variant: Variant, pods: number): Promise<BenchNode> {
    const topo = await createTopology({ pods });
    const node = new BenchNode(topo, variant);
    onCleanup(`node ${topo.id}`, () => node.destroy());
    return node;
  }

  /** Node side: tsnproxy install (restorer on tsn0), or the research restorer + GC. */
  setupDatapath(observe: boolean): void {
    if (this.variant === "tsnproxy") {
      setupNode({
        bpffs: this.bpffs,
        mapEntries: 16384,
        tsnInterface: "tsn0",
        restoreAt: "tsn-egress",
        api: "tcx",
        netns: this.topo.nodePath,
        config: TSNPROXY_CONFIG,
      });
      this.#nodeUp = true;
      this.#maps = DatapathMaps.open(this.bpffs);
      if (observe) {
        this.#observer = Observer.attach(this.topo.nodePath, "tsn0");
        this.#observer.filter(17);
      }
    } else {
      this.#research = ResearchDatapath.load(this.bpffs);
      this.#research.attachRestorer(this.topo.nodePath, "tsn0", observe);
      this.#research.startGc();
    }
  }

  /** Pod side: what each design's CNI ADD attaches to the pod's eth0. */
  attachPod(pod: Pod): void {
    if (this.variant === "tsnproxy") {
      attachPod({
        bpffs: this.bpffs,
        containerId: `bench-${pod.name}`,
        ifname: pod.ifname,
        netns: pod.netnsPath,
        api: "tcx",
        ips: [pod.ipv4, pod.ipv6],
        policy: { maxPriority: NO_CLAMP },
      });
    } else {
      this.#research!.attachSaver(pod.netnsPath, pod.ifname, pod.name);
    }
    this.#attached.add(pod);
  }

  counts(): ObserverCounts {
    return this.variant === "tsnproxy" ? this.#observer!.counts() : this.#research!.counts();
  }

  resetCounts(): void {
    if (this.variant === "tsnproxy") this.#observer!.reset();
    else this.#research!.resetCounts();
  }

  occupancy(): number {
    return this.variant === "tsnproxy" ? this.#maps!.metaOccupancy() : this.#research!.occupancy();
  }

  /** The datapath's own counters (for the report). */
  datapathStats(): Record<string, number> {
    if (this.variant === "research") return { ...this.#research!.stats() };
    const c = this.#maps!.counters();
    return Object.fromEntries(Object.entries(c).map(([k, v]) => [k, Number(v)]));
  }

  /** Removes tsnproxy entirely (pods and node) so the path runs without it. */
  teardownDatapath(): void {
    this.#observer?.detach();
    this.#observer = undefined;
    this.#maps?.close();
    this.#maps = undefined;
    if (this.variant === "tsnproxy" && this.#nodeUp) {
      for (const pod of this.#attached) {
        detachPod({
          bpffs: this.bpffs,
          containerId: `bench-${pod.name}`,
          ifname: pod.ifname,
          netns: pod.netnsPath,
        });
      }
      teardownNode(this.bpffs, this.topo.nodePath);
      this.#nodeUp = false;
    }
    this.#research?.close();
    this.#research = undefined;
    this.#attached.clear();
  }

  async destroy(): Promise<void> {
    try {
      this.teardownDatapath();
    } finally {
      await this.topo.destroy();
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
