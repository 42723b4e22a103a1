/**
 * A node topology with tsnproxy set up the way production does it: the datapath and the
 * restorer as `tsnproxy install` sets them up (tests/lib/node.ts), each pod attached by the
 * real plugin process (CNI ADD with a bridge-shaped prevResult, run in the node's
 * namespace), plus the observer on tsn0 and traffic sinks on the far end. Shared by the
 * datapath tests, the demo and the benchmarks.
 */
import { DatapathMaps } from "../../src/bpf/maps.ts";
import type { TcApi } from "../../src/bpf/attach.ts";
import type { PodPolicy } from "../../src/policy/types.ts";
import { Observer } from "./observer.ts";
import { type Child, run, type RunResult, spawn } from "./run.ts";
import { createTopology, farSinks, type Pod, type Topology } from "./topology.ts";
import { setUpNode, tearDownNode, type TestNode } from "./node.ts";

export const SENDER = new URL("./sender.py", import.meta.url).pathname;
const MAIN = new URL("../../main.ts", import.meta.url).pathname;

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
  /** Extra sender arguments (e.g. ["--tos", "16"]). */
  extra?: string[];
}

/** What a pod's CNI ADD carries besides the node's policy. */
export interface PodLayers {
  /** runtimeConfig.tsnproxy (the object form of a pod layer). */
  policy?: PodPolicy;
  /** Pod annotations as containerd passes them (runtimeConfig, capability declared). */
  annotations?: Record<string, string>;
  /** CNI_ARGS. */
  args?: string;
}

export class DatapathEnv {
  #procs: Child[] = [];

  private constructor(
    readonly topo: Topology,
    readonly api: TcApi,
    readonly observer: Observer,
    readonly node: TestNode,
  ) {}

  get bpffs(): string {
    return this.node.bpffs;
  }

  /** `config`: node config YAML (carrier, policy, gc). */
  static async create(
    api: TcApi,
    opts: { pods?: number; tsnTxQueues?: number; config?: string } = {},
  ): Promise<DatapathEnv> {
    const topo = await createTopology({ pods: opts.pods ?? 1, tsnTxQueues: opts.tsnTxQueues });
    let observer: Observer | undefined;
    let node: TestNode | undefined;
    try {
      node = setUpNode({
        bpffs: `/sys/fs/bpf/tsnp-test-${topo.id}`,
        netns: topo.nodePath,
        tsnInterface: "tsn0",
        api,
        config: opts.config,
      });
      observer = Observer.attach(topo.nodePath, "tsn0");
      const env = new DatapathEnv(topo, api, observer, node);
      env.#procs.push(...farSinks(topo));
      await new Promise((r) => setTimeout(r, 200));
      return env;
    } catch (e) {
      observer?.detach();
      if (node) tearDownNode(node);
      await topo.destroy();
      throw e;
    }
  }

  static containerId(pod: Pod): string {
    return `ctr-${pod.name}`;
  }

  /** The conflist entry + bridge-shaped prevResult the plugin gets for a pod. */
  stdin(pod: Pod, layers: PodLayers = {}): string {
    const rc: Record<string, unknown> = {};
    if (layers.policy) rc.tsnproxy = layers.policy;
    if (layers.annotations) rc["io.kubernetes.cri.pod-annotations"] = layers.annotations;
    return JSON.stringify({
      cniVersion: "1.1.0",
      name: "tsnp-test",
      type: "tsnproxy",
      bpffs: this.bpffs,
      attachMode: this.api,
      ...(Object.keys(rc).length ? { runtimeConfig: rc } : {}),
      prevResult: {
        cniVersion: "1.1.0",
        interfaces: [
          { name: "br0" },
          { name: pod.hostVeth },
          { name: pod.ifname, sandbox: pod.netnsPath },
        ],
        ips: [
          { address: `${pod.ipv4}/24`, gateway: "10.244.0.1", interface: 2 },
          { address: `${pod.ipv6}/64`, gateway: "fd00:244::1", interface: 2 },
        ],
      },
    });
  }

  /** Runs the plugin in the node's namespace as a runtime would (nsenter keeps /sys/fs/bpf). */
  async cni(command: string, pod: Pod, layers: PodLayers = {}): Promise<RunResult> {
    return await run(
      [Deno.execPath(), "run", "-A", "--quiet", MAIN, "cni"],
      {
        netns: this.topo.nodePath,
        env: {
          PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
          CNI_COMMAND: command,
          CNI_CONTAINERID: DatapathEnv.containerId(pod),
          CNI_NETNS: pod.netnsPath,
          CNI_IFNAME: pod.ifname,
          CNI_PATH: "/opt/cni/bin",
          ...(layers.args ? { CNI_ARGS: layers.args } : {}),
        },
        clearEnv: true,
        stdin: this.stdin(pod, layers),
        allowFail: true,
      },
    );
  }

  /** CNI ADD for a pod (throws with the plugin's error Result on failure). */
  async attachPod(pod: Pod, layers: PodLayers = {}): Promise<void> {
    const r = await this.cni("ADD", pod, layers);
    if (r.code !== 0) throw new Error(`ADD failed: ${r.stdout} ${r.stderr}`);
  }

  async detachPod(pod: Pod): Promise<void> {
    const r = await this.cni("DEL", pod);
    if (r.code !== 0) throw new Error(`DEL failed: ${r.stdout} ${r.stderr}`);
  }

  maps(): DatapathMaps {
    return DatapathMaps.open(this.bpffs);
  }

  /** A long-running child in namespace `ns` (a traffic sink), killed by destroy(). */
  spawn(ns: string, argv: string[]): Child {
    const p = spawn(argv, { netns: ns, stdout: "null", stderr: "null" });
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
    if (o.extra) args.push(...o.extra);
    const argv = o.cpu !== undefined
      ? ["taskset", "-c", String(o.cpu), "python3", ...args]
      : ["python3", ...args];
    const r = await run(argv, { netns: ns, allowFail: true });
    if (r.code !== 0) throw new Error(`sender failed: ${r.stderr}`);
  }

  async destroy(): Promise<void> {
    for (const p of this.#procs) await p.stop();
    this.observer.detach();
    tearDownNode(this.node);
    await this.topo.destroy();
  }
}
