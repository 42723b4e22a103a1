/**
 * A real, throwaway tsnproxy node for doctor/status tests: a "node" network namespace with a
 * TSN veth (tsn0 <-> tsnpeer, 4 tx queues), the datapath set up with setupNode on a private
 * pin root, a temp CNI conf dir with a bridge conflist and the tsnproxy entry injected by
 * planInstall/apply, a CNI bin dir with the checkout's launcher, and a node config YAML.
 */
import { setupNode, teardownNode } from "../../src/bpf/node.ts";
import { NO_CLAMP } from "../../src/bpf/maps.ts";
import { apply, planInstall, planUninstall } from "../../src/install/conflist.ts";
import { collectReport } from "../../src/doctor/report.ts";
import type { DoctorRunOptions } from "../../src/doctor/context.ts";
import type { Check, DoctorReport } from "../../src/doctor/schema.ts";
import { randomId, run } from "../lib/run.ts";

export const ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
export const LAUNCHER = `${ROOT}/scripts/tsnproxy`;
export const DENO = `${ROOT}/tools/deno/node_modules/deno/deno`;

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
  readonly netnsToDelete: string[] = [];

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
    await run(["ip", "netns", "add", this.node]);
    await this.ip(
      "link",
      "add",
      "tsn0",
      "numtxqueues",
      "4",
      "type",
      "veth",
      "peer",
      "name",
      "tsnpeer",
    );
    await this.ip("link", "set", "tsn0", "up");
    await this.ip("link", "set", "tsnpeer", "up");
    this.setupDatapath();
    Deno.mkdirSync(this.confDir);
    Deno.mkdirSync(this.binDir);
    Deno.writeTextFileSync(this.conflist, BRIDGE_CONFLIST);
    await this.injectEntry();
    Deno.symlinkSync(LAUNCHER, `${this.binDir}/tsnproxy`);
    this.writeConfig();
  }

  setupDatapath(): void {
    setupNode({
      bpffs: this.bpffs,
      mapEntries: 16384,
      tsnInterface: "tsn0",
      restoreAt: "tsn-egress",
      api: "tcx",
      netns: this.nodePath,
      config: {
        maxAgeNs: 1_000_000_000n,
        gcIntervalNs: 200_000_000n,
        defaultPolicy: { podCookie: 0n, maxPriority: NO_CLAMP },
      },
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

  ip(...args: string[]) {
    return run(["ip", "-n", this.node, ...args]);
  }

  /**
   * A pod namespace (deleted with the env) whose eth0 is paired with `hostVeth` in the node
   * namespace. Returns the pod namespace's name.
   */
  async addPod(hostVeth: string): Promise<string> {
    const pod = `tnd-pod-${randomId()}`;
    await run(["ip", "netns", "add", pod]);
    this.netnsToDelete.push(pod);
    await this.ip("link", "add", hostVeth, "type", "veth", "peer", "name", "eth0", "netns", pod);
    return pod;
  }

  nsExec(...args: string[]) {
    return run(["ip", "netns", "exec", this.node, ...args]);
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
      teardownNode(this.bpffs, this.nodePath);
    } catch {
      try {
        Deno.removeSync(this.bpffs, { recursive: true });
      } catch { /* gone */ }
    }
    for (const ns of [...this.netnsToDelete, this.node]) {
      await run(["ip", "netns", "del", ns], { allowFail: true });
    }
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
