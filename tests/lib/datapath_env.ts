/**
 * A node topology with tsnproxy's datapath set up the way install + CNI ADD do it, plus the
 * observer on tsn0 and traffic sinks on the far end. Shared by the datapath tests, the demo
 * and the benchmarks.
 */
import { setupNode, teardownNode } from "../../src/bpf/node.ts";
import { attachPod, detachPod } from "../../src/bpf/pod.ts";
import type { TcApi } from "../../src/bpf/attach.ts";
import { DatapathMaps, type DatapathPolicy, NO_CLAMP } from "../../src/bpf/maps.ts";
import { Observer } from "./observer.ts";
import { randomId } from "./run.ts";
import { createTopology, type Pod, type Topology } from "./topology.ts";

export const SENDER = new URL("./sender.py", import.meta.url).pathname;

export interface SendOptions {
  dst: string;
  port?: number;
  proto?: "udp" | "tcp" | "icmp";
  count: number;
  prio?: number;
  txtime?: "tai" | "realtime" | "monotonic";
  pps?: number;
  size?: number;
  constant?: boolean;
  /** IPv4 UDP through a raw socket with this fixed IP id (forged identical fingerprints). */
  rawIpId?: number;
  /** Pin the sender to this CPU (taskset). */
  cpu?: number;
}

export class DatapathEnv {
  readonly bpffs: string;
  #procs: Deno.ChildProcess[] = [];

  private constructor(readonly topo: Topology, readonly api: TcApi, readonly observer: Observer) {
    this.bpffs = `/sys/fs/bpf/tsnp-test-${topo.id}`;
  }

  static async create(
    api: TcApi,
    opts: { pods?: number; mapEntries?: number; tsnTxQueues?: number } = {},
  ): Promise<DatapathEnv> {
    const topo = await createTopology({ pods: opts.pods ?? 1, tsnTxQueues: opts.tsnTxQueues });
    let observer: Observer | undefined;
    try {
      const bpffs = `/sys/fs/bpf/tsnp-test-${topo.id}`;
      setupNode({
        bpffs,
        mapEntries: opts.mapEntries ?? 16384,
        tsnInterface: "tsn0",
        restoreAt: "tsn-egress",
        api,
        netns: topo.nodePath,
        config: {
          maxAgeNs: 1_000_000_000n,
          gcIntervalNs: 500_000_000n,
          defaultPolicy: { podCookie: 0n, maxPriority: NO_CLAMP },
        },
      });
      observer = Observer.attach(topo.nodePath, "tsn0");
      const env = new DatapathEnv(topo, api, observer);
      env.spawn(topo.far, ["socat", "-u", "UDP6-RECV:8080,ipv6only=0", "/dev/null"]);
      env.spawn(topo.far, [
        "socat",
        "-u",
        "TCP6-LISTEN:8080,ipv6only=0,reuseaddr,fork",
        "/dev/null",
      ]);
      await new Promise((r) => setTimeout(r, 200));
      return env;
    } catch (e) {
      observer?.detach();
      teardownNode(`/sys/fs/bpf/tsnp-test-${topo.id}`, topo.nodePath);
      await topo.destroy();
      throw e;
    }
  }

  /** What CNI ADD does for a pod: policy + saver on its eth0. */
  attachPod(pod: Pod, policy: Omit<DatapathPolicy, "podCookie"> = { maxPriority: NO_CLAMP }): void {
    attachPod({
      bpffs: this.bpffs,
      containerId: `ctr-${pod.name}`,
      ifname: pod.ifname,
      netns: pod.netnsPath,
      api: this.api,
      ips: [pod.ipv4, pod.ipv6],
      policy,
    });
  }

  detachPod(pod: Pod): number {
    return detachPod({
      bpffs: this.bpffs,
      containerId: `ctr-${pod.name}`,
      ifname: pod.ifname,
      netns: pod.netnsPath,
    });
  }

  maps(): DatapathMaps {
    return DatapathMaps.open(this.bpffs);
  }

  spawn(ns: string, argv: string[]): Deno.ChildProcess {
    const p = new Deno.Command("ip", {
      args: ["netns", "exec", ns, ...argv],
      stdout: "null",
      stderr: "null",
    }).spawn();
    this.#procs.push(p);
    return p;
  }

  /** Runs the talker in namespace `ns`; resolves when it has sent everything. */
  async send(ns: string, o: SendOptions): Promise<void> {
    const args = [
      SENDER,
      "--dst",
      o.dst,
      "--port",
      String(o.port ?? 8080),
      "--proto",
      o.proto ?? "udp",
      "--count",
      String(o.count),
      "--prio",
      String(o.prio ?? 0),
    ];
    if (o.txtime) args.push("--txtime", o.txtime);
    if (o.pps) args.push("--pps", String(o.pps));
    if (o.size) args.push("--size", String(o.size));
    if (o.constant) args.push("--constant");
    if (o.rawIpId !== undefined) args.push("--raw-ip-id", String(o.rawIpId));
    const argv = o.cpu !== undefined
      ? ["taskset", "-c", String(o.cpu), "python3", ...args]
      : ["python3", ...args];
    const r = await this.topo.exec(ns, argv, true);
    if (r.code !== 0) throw new Error(`sender failed: ${r.stderr}`);
  }

  async destroy(): Promise<void> {
    for (const p of this.#procs) {
      try {
        p.kill("SIGKILL");
        await p.status;
      } catch {
        // already gone
      }
    }
    this.observer.detach();
    teardownNode(this.bpffs, this.topo.nodePath);
    await this.topo.destroy();
  }
}

export function uniqueName(prefix: string): string {
  return `${prefix}-${randomId()}`;
}
