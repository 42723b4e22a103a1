/**
 * A private containerd 1.6 with the CRI plugin, driven over gRPC as kubelet drives it.
 *
 * Each fixture has its own root, state, socket and runc root under one temp directory, its own
 * CNI bin/conf dirs (given), and imports the busybox image as sandbox and workload image.
 * `stop()` removes every pod through CRI, stops containerd, then sweeps what a crashed run can
 * leave: shims and runc containers of this instance, the pods' netns files, mounts under the
 * fixture directory, libcni cache entries; finally it deletes the directory.
 *
 * Run one containerd per test file; Deno's sanitizers see its child process, so either keep the
 * fixture inside one Deno.test (steps) or disable sanitizeOps/sanitizeResources.
 */
import {
  type ContainerConfig,
  CriClient,
  type ExecResult,
  type Mount,
  type PodSandboxConfig,
  type PortMapping,
} from "./cri.ts";
import type { Conflist } from "./cni.ts";
import { importIntoContainerd, PAUSE_IMAGE, WORKLOAD_IMAGE } from "./image.ts";
import {
  exists,
  GiveUp,
  mountsUnder,
  pidsWithCmdline,
  removeCgroup,
  removeNetnsFile,
  removeTree,
  waitFor,
} from "./proc.ts";
import { type Child, run, spawn } from "../../lib/run.ts";

export interface ContainerdOptions {
  /** The single CNI plugin directory containerd 1.6 searches (see makeCniBinDir). */
  cniBinDir: string;
  /** The CNI config directory (max_conf_num = 1: the first conflist by name wins). */
  cniConfDir: string;
  /** Where root/state/socket go; a new temp dir by default (removed by stop()). */
  baseDir?: string;
  containerdPath?: string;
  /** containerd log level (default "info"). */
  logLevel?: string;
  /** Extra TOML appended to the generated config. */
  extraConfig?: string;
  /** Import the busybox image (default true). */
  importImages?: boolean;
  /** Give up waiting for the socket after this long (default 60 s; fails at once on exit). */
  startTimeoutMs?: number;
}

export interface PodOptions {
  name: string;
  namespace?: string;
  uid?: string;
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
  portMappings?: PortMapping[];
  /** Host network (no CNI call) instead of a pod network namespace. */
  hostNetwork?: boolean;
  /** Pod cgroup parent (default the fixture's own, removed by stop()). */
  cgroupParent?: string;
}

export interface Pod {
  id: string;
  name: string;
  namespace: string;
  uid: string;
  /** /var/run/netns/cni-<uuid> (empty for host-network pods). */
  netnsPath: string;
  /** Pod IP as CRI reports it (from the CNI result's eth0). */
  ip: string;
  config: PodSandboxConfig;
}

export interface WorkloadOptions {
  command: string[];
  name?: string;
  /** Capabilities to add, without the CAP_ prefix (e.g. ["NET_ADMIN"]). */
  addCaps?: string[];
  env?: Record<string, string>;
  /** Extra mounts, after the read-only host /usr, /lib, /lib64. */
  mounts?: Mount[];
  /** Bind-mount host /usr, /usr/lib as /lib and /usr/lib64 as /lib64 read-only (default true). */
  hostUsr?: boolean;
}

/** Read-only bind mounts giving a busybox container the host's python3, socat, ... */
export const HOST_USR_MOUNTS: Mount[] = [
  { container_path: "/usr", host_path: "/usr", readonly: true },
  { container_path: "/lib", host_path: "/usr/lib", readonly: true },
  { container_path: "/lib64", host_path: "/usr/lib64", readonly: true },
];

export interface Leftovers {
  /** Mount points still present under the fixture directory. */
  mounts: string[];
  /** Netns files of this fixture's pods that still exist. */
  netns: string[];
  /** Shim processes still serving this containerd's socket. */
  shims: number[];
}

function tomlString(s: string): string {
  return JSON.stringify(s);
}

function containerdConfig(
  dir: string,
  o: ContainerdOptions,
): string {
  const cri = `plugins."io.containerd.grpc.v1.cri"`;
  return `version = 2
root = ${tomlString(`${dir}/root`)}
state = ${tomlString(`${dir}/state`)}
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = ${tomlString(`${dir}/containerd.sock`)}
[ttrpc]
  address = ${tomlString(`${dir}/containerd.sock.ttrpc`)}
[debug]
  level = ${tomlString(o.logLevel ?? "info")}

[plugins."io.containerd.internal.v1.opt"]
  path = ${tomlString(`${dir}/opt`)}

[${cri}]
  sandbox_image = ${tomlString(PAUSE_IMAGE)}
  # root here lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj for the sandbox, and
  # without this every sandbox fails with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_cdi = false
  [${cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [${cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [${cri}.containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = ${tomlString(`${dir}/state/runc`)}
        SystemdCgroup = false
  [${cri}.cni]
    bin_dir = ${tomlString(o.cniBinDir)}
    conf_dir = ${tomlString(o.cniConfDir)}
    max_conf_num = 1
    conf_template = ""
${o.extraConfig ?? ""}
`;
}

/** A running private containerd; see the module doc. */
export class Containerd {
  readonly dir: string;
  readonly socket: string;
  readonly configPath: string;
  readonly logPath: string;
  /** cgroup parent of this fixture's pods (one per fixture, so stop() can remove it). */
  readonly cgroupParent: string;
  readonly options: ContainerdOptions;
  #cri: CriClient | undefined;
  #child: Child | undefined;
  #exited: Deno.CommandStatus | undefined;
  #ownsDir: boolean;
  /** Every pod this fixture created (also after removal), for the final sweep. */
  readonly pods = new Map<string, Pod>();
  #workloadSeq = 0;

  private constructor(dir: string, ownsDir: boolean, options: ContainerdOptions) {
    this.dir = dir;
    this.#ownsDir = ownsDir;
    this.options = options;
    this.socket = `${dir}/containerd.sock`;
    this.configPath = `${dir}/containerd.toml`;
    this.logPath = `${dir}/containerd.log`;
    this.cgroupParent = `/tsnproxy-e2e-${dir.split("/").pop()!.replace(/[^\w-]/g, "")}`;
  }

  /** The CRI client (throws if containerd is not running). */
  get cri(): CriClient {
    if (!this.#cri || this.#exited) {
      throw new Error(
        `containerd is not running${this.#exited ? ` (exited ${this.#exited.code})` : ""}`,
      );
    }
    return this.#cri;
  }

  /** containerd's pid while it runs. */
  get pid(): number | undefined {
    return this.running ? this.#child?.pid : undefined;
  }

  get running(): boolean {
    return this.#child !== undefined && this.#exited === undefined;
  }

  static async start(options: ContainerdOptions): Promise<Containerd> {
    const ownsDir = options.baseDir === undefined;
    const dir = options.baseDir ?? await Deno.makeTempDir({ prefix: "tsnproxy-e2e-ctrd-" });
    await Deno.mkdir(dir, { recursive: true });
    const c = new Containerd(dir, ownsDir, options);
    try {
      await Deno.writeTextFile(c.configPath, containerdConfig(dir, options));
      await c.#launch();
      if (options.importImages ?? true) await importIntoContainerd(c.socket);
    } catch (e) {
      const tail = await c.logTail();
      await c.stop().catch(() => {});
      throw new Error(`containerd did not start: ${e}\n--- containerd log ---\n${tail}`, {
        cause: e,
      });
    }
    return c;
  }

  async #launch(): Promise<void> {
    const bin = this.options.containerdPath ?? "/usr/bin/containerd";
    // A shell redirect, so containerd's output goes straight to a file and no pump (an async op
    // Deno's test sanitizer would track) is needed; exec keeps the pid containerd's own.
    this.#exited = undefined;
    const child = spawn(
      ["/bin/sh", "-c", 'exec "$0" --config "$1" >>"$2" 2>&1', bin, this.configPath, this.logPath],
      {
        stdout: "null",
        stderr: "null",
        env: { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" },
      },
    );
    this.#child = child;
    child.status.then((s) => {
      if (this.#child === child) this.#exited = s;
    });
    await waitFor("containerd's socket", async () => {
      if (this.#exited) throw new GiveUp(`containerd exited with ${this.#exited.code}`);
      return (await exists(this.socket)) ? true : undefined;
    }, this.options.startTimeoutMs ?? 60_000);
    this.#cri?.close();
    this.#cri = await CriClient.connect(this.socket, this.options.containerdPath);
    // The CRI plugin serves only once initialized; Version answers then.
    await waitFor(
      "the CRI plugin",
      async () => {
        if (this.#exited) throw new Error(`containerd exited with ${this.#exited.code}`);
        try {
          await this.#cri!.call("runtime", "Version", { version: "v1" }, 5_000);
          return true;
        } catch (e) {
          if (this.#exited) throw e;
          return undefined;
        }
      },
      this.options.startTimeoutMs ?? 60_000,
      100,
    );
  }

  /** Last `bytes` of containerd's log (for failure messages). */
  async logTail(bytes = 6000): Promise<string> {
    try {
      const t = await Deno.readTextFile(this.logPath);
      return t.slice(-bytes);
    } catch {
      return "(no log)";
    }
  }

  async #kill(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    if (!this.#exited) {
      child.kill("SIGTERM");
      const done = await Promise.race([
        child.status.then(() => true),
        new Promise<false>((r) => setTimeout(() => r(false), 15_000)),
      ]);
      if (!done) child.kill("SIGKILL");
    }
    this.#exited = await child.status;
    this.#child = undefined;
    this.#cri?.close();
    this.#cri = undefined;
  }

  /**
   * Restart containerd with the same state (pods survive). Needed after replacing a conflist by
   * rename, which containerd 1.6 does not notice.
   */
  async restart(): Promise<void> {
    await this.#kill();
    await this.#launch();
  }

  /**
   * The pod network conflists containerd has loaded (from verbose Status `cniconfig`), and the
   * last load status ("OK" or an error). containerd reloads on in-place writes to conf_dir.
   */
  async loadedCniConfig(): Promise<{ conflists: Conflist[]; lastLoadStatus: string }> {
    const { info } = await this.cri.status();
    const cfg: LoadedCniConfig = JSON.parse(info.cniconfig ?? "{}");
    const conflists = (cfg.Networks ?? []).filter((n) => n.IFName !== "lo")
      .map((n) => JSON.parse(n.Config.Source) as Conflist);
    return { conflists, lastLoadStatus: info.lastCNILoadStatus ?? "" };
  }

  /** Wait until containerd has loaded a pod network conflist satisfying `pred`. */
  async waitForCniConfig(pred: (c: Conflist) => boolean, timeoutMs = 30_000): Promise<Conflist> {
    return await waitFor(
      "containerd to load the CNI config",
      async () => {
        const { conflists } = await this.loadedCniConfig();
        return conflists.find(pred);
      },
      timeoutMs,
      100,
    );
  }

  // ---- pods ----

  /** RunPodSandbox; returns the pod with its netns path and IP. */
  async runPod(o: PodOptions): Promise<Pod> {
    const namespace = o.namespace ?? "default";
    const uid = o.uid ?? crypto.randomUUID();
    const config: PodSandboxConfig = {
      metadata: { name: o.name, uid, namespace, attempt: 0 },
      hostname: o.name.slice(0, 63),
      log_directory: `${this.dir}/pods/${namespace}_${o.name}_${uid}`,
      port_mappings: o.portMappings ?? [],
      labels: o.labels ?? {},
      annotations: o.annotations ?? {},
      linux: {
        cgroup_parent: o.cgroupParent ?? this.cgroupParent,
        security_context: {
          namespace_options: {
            network: o.hostNetwork ? "NODE" : "POD",
            pid: "CONTAINER",
            ipc: "POD",
          },
        },
      },
    };
    await Deno.mkdir(config.log_directory!, { recursive: true });
    const id = await this.cri.runPodSandbox(config);
    const pod: Pod = { id, name: o.name, namespace, uid, netnsPath: "", ip: "", config };
    this.pods.set(id, pod);
    const st = await this.cri.podSandboxStatus(id, true);
    pod.ip = st.status.network?.ip ?? "";
    pod.netnsPath = netnsFromInfo(st.info) ?? "";
    return pod;
  }

  /** Run `n` pods at once; `make(i)` gives each one's options. */
  async runPods(n: number, make: (i: number) => PodOptions): Promise<Pod[]> {
    return await Promise.all(Array.from({ length: n }, (_, i) => this.runPod(make(i))));
  }

  /** Create and start a container in the pod; returns its id. */
  async startWorkload(podId: string, o: WorkloadOptions): Promise<string> {
    const pod = this.pods.get(podId);
    if (!pod) throw new Error(`pod ${podId} was not created by this fixture`);
    const name = o.name ?? `w${++this.#workloadSeq}`;
    const config: ContainerConfig = {
      metadata: { name, attempt: 0 },
      image: { image: WORKLOAD_IMAGE },
      command: o.command,
      envs: o.env ?? {},
      mounts: [...((o.hostUsr ?? true) ? HOST_USR_MOUNTS : []), ...(o.mounts ?? [])],
      log_path: `${name}.log`,
      linux: {
        security_context: { capabilities: { add_capabilities: o.addCaps ?? [] } },
      },
    };
    const id = await this.cri.createContainer(podId, config, pod.config);
    await this.cri.startContainer(id);
    return id;
  }

  /** ExecSync in a container. */
  async exec(containerId: string, argv: string[], timeoutSeconds = 60): Promise<ExecResult> {
    return await this.cri.execSync(containerId, argv, timeoutSeconds);
  }

  async stopPod(podId: string): Promise<void> {
    await this.cri.stopPodSandbox(podId);
  }

  async removePod(podId: string): Promise<void> {
    await this.cri.removePodSandbox(podId);
  }

  /** Stop and remove every pod containerd knows (containers go with them). */
  async removeAllPods(): Promise<Error[]> {
    const errors: Error[] = [];
    const pods = await this.cri.listPodSandbox();
    for (const p of pods) {
      for (const step of [() => this.stopPod(p.id), () => this.removePod(p.id)]) {
        try {
          await step();
        } catch (e) {
          errors.push(e instanceof Error ? e : new Error(String(e)));
        }
      }
    }
    return errors;
  }

  /** What this fixture's pods left on the host (expect all empty after removing pods). */
  async leftovers(): Promise<Leftovers> {
    const netns: string[] = [];
    for (const p of this.pods.values()) {
      if (p.netnsPath && await exists(p.netnsPath)) netns.push(p.netnsPath);
    }
    const mounts = (await mountsUnder(this.dir)).filter((m) =>
      // The overlay snapshots' own bind of the snapshotter dir is not per pod.
      !m.endsWith("/io.containerd.snapshotter.v1.overlayfs")
    );
    return { mounts, netns, shims: await pidsWithCmdline(`-address ${this.socket}`) };
  }

  /**
   * Remove all pods, stop containerd, and sweep everything it may have left; idempotent.
   * Never throws for a cleanup step: problems are returned (and printed) instead.
   */
  async stop(): Promise<string[]> {
    const problems: string[] = [];
    if (this.running) {
      try {
        for (const e of await this.removeAllPods()) problems.push(`removing pods: ${e.message}`);
      } catch (e) {
        problems.push(`listing pods: ${e}`);
      }
    }
    await this.#kill();
    // runc containers of this instance (own runc root), then their shims.
    const runcRoot = `${this.dir}/state/runc`;
    for await (const ns of readDirNames(runcRoot)) {
      for await (const id of readDirNames(`${runcRoot}/${ns}`)) {
        problems.push(`runc container ${id} left running`);
        await run(["runc", "--root", `${runcRoot}/${ns}`, "delete", "--force", id], {
          allowFail: true,
        });
      }
    }
    for (const pid of await pidsWithCmdline(`-address ${this.socket}`)) {
      problems.push(`shim ${pid} left running`);
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
    for (const p of this.pods.values()) {
      // A killed shim leaves its socket, named by containerd 1.6 after this hash.
      const sock = await shimSocketPath(this.socket, "k8s.io", p.id);
      if (await exists(sock)) {
        problems.push(`shim socket ${sock} left behind`);
        await Deno.remove(sock).catch(() => {});
      }
      if (p.netnsPath && await exists(p.netnsPath)) {
        problems.push(`netns ${p.netnsPath} left behind`);
        await removeNetnsFile(p.netnsPath);
      }
      for await (const f of readDirNames("/var/lib/cni/results")) {
        if (f.includes(p.id)) await Deno.remove(`/var/lib/cni/results/${f}`).catch(() => {});
      }
    }
    for (const cg of await removeCgroup(this.cgroupParent)) problems.push(`cgroup ${cg} busy`);
    if (this.#ownsDir) await removeTree(this.dir);
    else await removeTree(`${this.dir}/root`).then(() => removeTree(`${this.dir}/state`));
    if (problems.length) console.error(`containerd fixture cleanup:\n  ${problems.join("\n  ")}`);
    return problems;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** Start a private containerd (see {@link Containerd}). */
export function startContainerd(options: ContainerdOptions): Promise<Containerd> {
  return Containerd.start(options);
}

async function* readDirNames(dir: string): AsyncGenerator<string> {
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(dir));
  } catch {
    return;
  }
  for (const e of entries) yield e.name;
}

/**
 * Where a containerd 1.6 runc v2 shim listens: /run/containerd/s/sha256(<containerd address>/
 * <namespace>/<group id>), the group being the pod sandbox for CRI containers.
 */
export async function shimSocketPath(address: string, ns: string, id: string): Promise<string> {
  const d = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(`${address}/${ns}/${id}`),
  );
  const hex = [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `/run/containerd/s/${hex}`;
}

interface LoadedCniConfig {
  Networks?: { Config: { Source: string }; IFName: string }[];
}

interface VerboseInfo {
  runtimeSpec?: { linux?: { namespaces?: { type: string; path?: string }[] } };
}

/** The pod's network namespace path from containerd's verbose PodSandboxStatus info. */
export function netnsFromInfo(info: Record<string, string>): string | undefined {
  if (!info.info) return undefined;
  const parsed: VerboseInfo = JSON.parse(info.info);
  return parsed.runtimeSpec?.linux?.namespaces?.find((n) => n.type === "network")?.path;
}
