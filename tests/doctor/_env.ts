/**
 * A real, throwaway tsnproxy node for doctor/status tests: a "node" network namespace with a
 * TSN veth (tsn0 <-> tsnpeer, 4 tx queues), a node config YAML, the datapath set up from it as
 * install does (tests/lib/node.ts) on a private pin root, a temp CNI conf dir with a bridge
 * conflist and the tsnproxy entry injected by planInstall/apply, a CNI bin dir with the
 * checkout's launcher, and pods attached by the real plugin (CNI ADD in the node's namespace).
 */
import assert from "node:assert/strict";
import { apply, planInstall, planUninstall } from "../../src/install/conflist.ts";
import { collectReport } from "../../src/doctor/report.ts";
import type { DoctorRunOptions } from "../../src/doctor/context.ts";
import type { Check, DoctorReport } from "../../src/doctor/schema.ts";
import { randomId, run, type RunResult } from "../lib/run.ts";
import { addVeth, Netns } from "../lib/netns.ts";
import { setUpNode, tearDownNode } from "../lib/node.ts";
import { until } from "../lib/wait.ts";
import { queryTcx } from "../../src/bpf/attach.ts";
import { withNetns } from "../../src/util/netns.ts";

export const ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
export const LAUNCHER = `${ROOT}/scripts/tsnproxy`;
export const DENO = `${ROOT}/tools/deno/node_modules/deno/deno`;
const MAIN = `${ROOT}/main.ts`;

export const BRIDGE_CONFLIST = `{
  "cniVersion": "1.0.0",
  "name": "testnet",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true,
     "ipam": {"type": "host-local", "subnet": "10.250.0.0/24"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`;

/** A pod the plugin attached: its namespace, host veth, container id and address. */
export interface DoctorPod {
  netns: string;
  netnsPath: string;
  hostVeth: string;
  containerId: string;
  ip: string;
}

export interface ConfigPatch {
  restoreAt?: "tsn-egress" | "host-veth-ingress";
  qdisc?: string;
  /** cni.agentSocket */
  agentSocket?: string;
  extra?: string;
}

export class DoctorEnv {
  readonly id = randomId();
  readonly node = `tnd-node-${this.id}`;
  readonly nodePath = `/run/netns/tnd-node-${this.id}`;
  readonly bpffs = `/sys/fs/bpf/tsnp-test-${this.id}`;
  readonly dir = Deno.makeTempDirSync({ prefix: "tnd-doctor-" });
  readonly confDir = `${this.dir}/net.d`;
  readonly binDir = `${this.dir}/bin`;
  readonly config = `${this.dir}/config.yaml`;
  readonly conflist = `${this.dir}/net.d/10-testnet.conflist`;
  /** The node's namespace (first) and the pods', deleted with the env. */
  readonly #namespaces: Netns[] = [];

  private constructor() {}

  static async create(): Promise<DoctorEnv> {
    const env = new DoctorEnv();
    try {
      await env.#setup();
      return env;
    } catch (e) {
      await env.destroy();
      throw e;
    }
  }

  async #setup(): Promise<void> {
    const node = await Netns.create({ name: this.node, lo: false });
    this.#namespaces.push(node);
    await addVeth({ name: "tsn0", netns: node, txQueues: 4 }, { name: "tsnpeer", netns: node });
    Deno.mkdirSync(this.confDir);
    Deno.mkdirSync(this.binDir);
    this.writeConfig();
    this.setupDatapath();
    Deno.writeTextFileSync(this.conflist, BRIDGE_CONFLIST);
    await this.injectEntry();
    Deno.symlinkSync(LAUNCHER, `${this.binDir}/tsnproxy`);
  }

  /**
   * install's datapath and restorer steps from the node config file as it is now (what
   * `tsnproxy install` does with it; the pin root, TSN interface and attach mode are the
   * env's).
   */
  setupDatapath(): void {
    const rest = Deno.readTextFileSync(this.config).split("\n")
      .filter((l) => !/^(tsnInterface|bpffs|attachMode):/.test(l)).join("\n");
    setUpNode({
      bpffs: this.bpffs,
      tsnInterface: "tsn0",
      api: "tcx",
      netns: this.nodePath,
      config: rest,
    });
  }

  writeConfig(p: ConfigPatch = {}): void {
    Deno.writeTextFileSync(
      this.config,
      [
        "tsnInterface: tsn0",
        `restoreAt: ${p.restoreAt ?? "tsn-egress"}`,
        `bpffs: ${this.bpffs}`,
        "attachMode: tcx",
        "gc: {maxAgeMs: 1000, intervalMs: 200}",
        `cni: {confDir: ${this.confDir}, binDir: ${this.binDir}${
          p.agentSocket ? `, agentSocket: ${p.agentSocket}` : ""
        }}`,
        `qdisc: ${p.qdisc ?? "{kind: keep}"}`,
        p.extra ?? "",
      ].join("\n") + "\n",
    );
  }

  entry(restoreAt = "tsn-egress", extra: Record<string, string> = {}) {
    return {
      type: "tsnproxy",
      tsnInterface: "tsn0",
      restoreAt,
      bpffs: this.bpffs,
      attachMode: "tcx",
      ...extra,
    };
  }

  async injectEntry(restoreAt = "tsn-egress", extra: Record<string, string> = {}): Promise<void> {
    await apply(
      await planInstall({ confDir: this.confDir, entry: this.entry(restoreAt, extra) }),
    );
  }

  async removeEntry(): Promise<void> {
    await apply(await planUninstall({ confDir: this.confDir }));
  }

  /** `ip -n <node> ...`: its stdout. */
  ip(...args: string[]): Promise<string> {
    return this.#namespaces[0].ip(...args);
  }

  /**
   * A pod namespace (deleted with the env) whose eth0 is paired with `hostVeth` in the node
   * namespace. Returns the pod namespace's name.
   */
  async addPod(hostVeth: string): Promise<string> {
    const pod = await Netns.create({ prefix: "tnd-pod", lo: false });
    this.#namespaces.push(pod);
    await addVeth({ name: hostVeth, netns: this.node }, { name: "eth0", netns: pod }, {
      up: false,
    });
    return pod.name;
  }

  /**
   * A pod attached by the real plugin: a namespace whose eth0 (address `ip`/24) is paired with
   * `hostVeth` in the node namespace, then CNI ADD with the env's entry (and `entry`), run in
   * the node's namespace as a runtime would.
   */
  async attachPod(
    hostVeth: string,
    opts: {
      ip?: string;
      containerId?: string;
      entry?: Record<string, unknown>;
      /** Runs after the veth exists, before the ADD (as a primary CNI attaching its own). */
      beforeAdd?: () => Promise<unknown>;
    } = {},
  ): Promise<DoctorPod> {
    const ip = opts.ip ?? "10.250.0.9";
    const netns = await this.addPod(hostVeth);
    await this.ip("link", "set", hostVeth, "up");
    await opts.beforeAdd?.();
    await run(["ip", "-n", netns, "addr", "add", `${ip}/24`, "dev", "eth0"]);
    await run(["ip", "-n", netns, "link", "set", "eth0", "up"]);
    const pod: DoctorPod = {
      netns,
      netnsPath: `/run/netns/${netns}`,
      hostVeth,
      containerId: opts.containerId ?? `ctr-${randomId(12)}`,
      ip,
    };
    const r = await this.cni("ADD", pod, opts.entry);
    if (r.code !== 0) throw new Error(`ADD failed: ${r.stdout} ${r.stderr}`);
    return pod;
  }

  /**
   * Waits until no tcx link is left on the pod's two sides: an unpinned link goes only once
   * the kernel frees the pin (after an RCU grace period), and attaching the same program
   * again before that fails with EEXIST (see tests/cni/roundtrip_test.ts, retried ADD).
   */
  async linksGone(pod: DoctorPod): Promise<void> {
    await until(
      "the pod's tcx links to go",
      () =>
        !withNetns(this.nodePath, () => queryTcx(pod.hostVeth, "ingress")).length &&
        !queryTcx("eth0", "egress", pod.netnsPath).length,
    );
  }

  /** Runs the plugin for `pod` in the node's namespace (nsenter keeps /sys/fs/bpf). */
  cni(command: string, pod: DoctorPod, entry: Record<string, unknown> = {}): Promise<RunResult> {
    const stdin = {
      cniVersion: "1.0.0",
      name: "testnet",
      ...this.entry(),
      ...entry,
      prevResult: {
        cniVersion: "1.0.0",
        interfaces: [
          { name: "cni0" },
          { name: pod.hostVeth },
          { name: "eth0", sandbox: pod.netnsPath },
        ],
        ips: [{ address: `${pod.ip}/24`, gateway: "10.250.0.1", interface: 2 }],
      },
    };
    return run(
      [Deno.execPath(), "run", "-A", "--quiet", MAIN, "cni"],
      {
        netns: this.nodePath,
        env: {
          PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
          CNI_COMMAND: command,
          CNI_CONTAINERID: pod.containerId,
          CNI_NETNS: pod.netnsPath,
          CNI_IFNAME: "eth0",
          CNI_PATH: "/opt/cni/bin",
        },
        clearEnv: true,
        stdin: JSON.stringify(stdin),
        allowFail: true,
      },
    );
  }

  /** Runs argv in the node's namespace. */
  nsExec(...args: string[]): Promise<RunResult> {
    return run(args, { netns: this.node });
  }

  /** Options as the CLI would pass them, with the node namespace for the network checks. */
  opts(over: Partial<DoctorRunOptions> = {}): DoctorRunOptions {
    return {
      config: this.config,
      cniConfDir: this.confDir,
      cniBinDir: this.binDir,
      bpffs: this.bpffs,
      json: true,
      netns: this.nodePath,
      ...over,
    };
  }

  report(over: Partial<DoctorRunOptions> = {}): Promise<DoctorReport> {
    return collectReport(this.opts(over));
  }

  /** CLI arguments for `tsnproxy doctor`/`status` against this node. */
  cliArgs(): string[] {
    return [
      "--config",
      this.config,
      "--cni-conf-dir",
      this.confDir,
      "--cni-bin-dir",
      this.binDir,
      "--bpffs",
      this.bpffs,
    ];
  }

  async destroy(): Promise<void> {
    try {
      tearDownNode({ bpffs: this.bpffs, netns: this.nodePath });
    } catch {
      try {
        Deno.removeSync(this.bpffs, { recursive: true });
      } catch { /* gone */ }
    }
    for (const ns of this.#namespaces.reverse()) await ns.delete();
    Deno.removeSync(this.dir, { recursive: true });
  }
}

export function find(r: DoctorReport, id: string): Check {
  const c = r.checks.find((x) => x.id === id);
  if (!c) throw new Error(`no check ${id} in the report (${r.checks.map((x) => x.id).join(", ")})`);
  return c;
}

export function describe(c: Check): string {
  return `${c.id} ${c.status}: ${c.found}${c.fix ? ` | fix: ${c.fix}` : ""}`;
}

/** Asserts a check's status and that its found/fix text matches each pattern; a warn or a
 * fail must say how to fix it. */
export function expect(r: DoctorReport, id: string, status: string, ...inFoundOrFix: RegExp[]) {
  const c = find(r, id);
  assert.equal(c.status, status, describe(c));
  for (const re of inFoundOrFix) assert.match(`${c.found}\n${c.fix ?? ""}`, re, describe(c));
  if (status === "warn" || status === "fail") assert.ok(c.fix, `${id} has no fix`);
  return c;
}
