/**
 * podman 4.3 with its CNI backend, fully private: own containers.conf (CNI plugin dirs,
 * network config dir, ulimits this machine can grant), own storage root/runroot, tmp and
 * events log, all under one temp directory. Networks are conflists written into the fixture's
 * network dir (never /etc/cni/net.d, whose podman default uses 10.88.0.0/16).
 *
 * podman calls the chain like this: VERSION, ADD with CNI_NETNS=/run/netns/netns-<uuid>, and DEL
 * when the container exits (`--rm`), from the podman process itself (no daemon).
 */
import type { Conflist } from "./cni.ts";
import { busyboxImageTarball, IMAGE_REPO } from "./image.ts";
import { exists, mountsUnder, removeCgroup, removeTree } from "./proc.ts";
import { run, type RunResult } from "../../lib/run.ts";
import { deleteLink } from "../../lib/netns.ts";

export interface PodmanOptions {
  /** Directories podman searches for CNI plugins, first match wins. */
  cniPluginDirs: string[];
  /** Where everything goes; a new temp dir by default (removed by stop()). */
  baseDir?: string;
  podmanPath?: string;
  /** Load the busybox image (default true). */
  loadImage?: boolean;
}

export interface PodmanRunOptions {
  /** Network name (a conflist added with addNetwork). */
  network: string;
  command: string[];
  name?: string;
  /** Capabilities to add, without the CAP_ prefix. */
  addCaps?: string[];
  /** Bind-mount host /usr, /usr/lib as /lib and /usr/lib64 as /lib64 read-only (default true). */
  hostUsr?: boolean;
  env?: Record<string, string>;
  /** More `podman run` flags, before the image. */
  extraArgs?: string[];
  timeoutMs?: number;
}

/** The workload image as podman names it after `podman load`. */
export const PODMAN_IMAGE = `${IMAGE_REPO}:latest`;

function containersConf(dir: string, o: PodmanOptions): string {
  const q = JSON.stringify;
  return `[containers]
netns = "bridge"
# root here lacks CAP_SYS_RESOURCE: podman's default nofile/nproc (1048576) cannot be set and
# every container would fail with "error setting rlimit".
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
log_driver = "k8s-file"

[network]
network_backend = "cni"
cni_plugin_dirs = [${o.cniPluginDirs.map((d) => q(d)).join(", ")}]
network_config_dir = ${q(`${dir}/net.d`)}
default_network = "tsnproxy-e2e-unused"
default_subnet = "10.124.255.0/24"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = ${q(`${dir}/events.log`)}
runtime = "runc"
tmp_dir = ${q(`${dir}/tmp`)}
static_dir = ${q(`${dir}/storage/libpod`)}
volume_path = ${q(`${dir}/storage/volumes`)}
no_pivot_root = false
`;
}

function storageConf(dir: string): string {
  const q = JSON.stringify;
  return `[storage]
driver = "overlay"
graphroot = ${q(`${dir}/storage`)}
runroot = ${q(`${dir}/run`)}
`;
}

export class Podman {
  readonly dir: string;
  readonly networkDir: string;
  readonly options: PodmanOptions;
  #ownsDir: boolean;
  /** cgroup parent of this fixture's containers (removed by stop()). */
  readonly cgroupParent: string;
  /** Bridge devices of networks added through this fixture (deleted by stop()). */
  readonly bridges = new Set<string>();

  private constructor(dir: string, ownsDir: boolean, options: PodmanOptions) {
    this.dir = dir;
    this.#ownsDir = ownsDir;
    this.options = options;
    this.networkDir = `${dir}/net.d`;
    this.cgroupParent = `/tsnproxy-e2e-${dir.split("/").pop()!.replace(/[^\w-]/g, "")}`;
  }

  static async start(options: PodmanOptions): Promise<Podman> {
    const ownsDir = options.baseDir === undefined;
    const dir = options.baseDir ?? await Deno.makeTempDir({ prefix: "tsnproxy-e2e-podman-" });
    const p = new Podman(dir, ownsDir, options);
    try {
      for (const d of ["net.d", "tmp", "storage", "run"]) {
        await Deno.mkdir(`${dir}/${d}`, { recursive: true });
      }
      await Deno.writeTextFile(`${dir}/containers.conf`, containersConf(dir, options));
      await Deno.writeTextFile(`${dir}/storage.conf`, storageConf(dir));
      await Deno.writeTextFile(`${dir}/registries.conf`, "unqualified-search-registries = []\n");
      if (options.loadImage ?? true) {
        const tar = await busyboxImageTarball();
        // `podman load` takes one image per OCI archive: pull the tag through the transport.
        await p.podmanOk(["pull", "-q", `oci-archive:${tar}:latest`]);
        const id = (await p.podmanOk(["images", "-q", "--no-trunc"])).trim().split("\n")[0];
        await p.podmanOk(["tag", id, PODMAN_IMAGE]);
      }
    } catch (e) {
      await p.stop();
      throw e;
    }
    return p;
  }

  /** Environment that points podman at this fixture's configuration. */
  get env(): Record<string, string> {
    return {
      PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      HOME: Deno.env.get("HOME") ?? "/root",
      CONTAINERS_CONF: `${this.dir}/containers.conf`,
      CONTAINERS_STORAGE_CONF: `${this.dir}/storage.conf`,
      // No registries: nothing may be pulled from the network.
      CONTAINERS_REGISTRIES_CONF: `${this.dir}/registries.conf`,
      TMPDIR: `${this.dir}/tmp`,
    };
  }

  /** Run the podman CLI against this fixture (`--root`/`--runroot` forced). */
  podman(args: string[], timeoutMs = 180_000): Promise<RunResult> {
    return run([
      this.options.podmanPath ?? "/usr/bin/podman",
      "--root",
      `${this.dir}/storage`,
      "--runroot",
      `${this.dir}/run`,
      ...args,
    ], { allowFail: true, env: this.env, timeoutMs });
  }

  async podmanOk(args: string[], timeoutMs?: number): Promise<string> {
    const r = await this.podman(args, timeoutMs);
    if (r.code !== 0) {
      throw new Error(`podman ${args.join(" ")} exited ${r.code}: ${r.stderr.trim()}`);
    }
    return r.stdout;
  }

  /** Install a conflist as a podman network (written in place into the network dir). */
  async addNetwork(conflist: Conflist): Promise<string> {
    const path = `${this.networkDir}/${conflist.name}.conflist`;
    await Deno.writeTextFile(path, JSON.stringify(conflist, null, 2) + "\n");
    for (const p of conflist.plugins) {
      if (p.type === "bridge" && typeof p.bridge === "string") this.bridges.add(p.bridge);
    }
    return path;
  }

  /** `podman run --rm --network <net>` of the busybox image; resolves with its exit/output. */
  async runContainer(o: PodmanRunOptions): Promise<RunResult> {
    const args = ["run", "--rm", "--pull", "never", "--network", o.network];
    args.push("--cgroup-parent", this.cgroupParent);
    if (o.name) args.push("--name", o.name);
    for (const c of o.addCaps ?? []) args.push("--cap-add", c);
    if (o.hostUsr ?? true) {
      args.push(
        "-v",
        "/usr:/usr:ro",
        "-v",
        "/usr/lib:/lib:ro",
        "-v",
        "/usr/lib64:/lib64:ro",
      );
    }
    for (const [k, v] of Object.entries(o.env ?? {})) args.push("-e", `${k}=${v}`);
    args.push(...(o.extraArgs ?? []), PODMAN_IMAGE, ...o.command);
    return await this.podman(args, o.timeoutMs);
  }

  /** Mount points left under the fixture directory (expect none once containers are gone). */
  async leftoverMounts(): Promise<string[]> {
    return (await mountsUnder(this.dir)).filter((m) =>
      // containers/storage keeps its overlay home privately bind-mounted while in use.
      m !== `${this.dir}/storage/overlay`
    );
  }

  /** Remove all containers, the fixture's bridges, mounts and directory; idempotent. */
  async stop(): Promise<string[]> {
    const problems: string[] = [];
    if (await exists(`${this.dir}/containers.conf`)) {
      const r = await this.podman(["rm", "--all", "--force", "--time", "0"]);
      if (r.code !== 0) problems.push(`podman rm: ${r.stderr.trim()}`);
      const left = await this.podman(["ps", "-aq"]);
      if (left.stdout.trim()) problems.push(`containers left: ${left.stdout.trim()}`);
    }
    for (const b of this.bridges) await deleteLink(b);
    for (const cg of await removeCgroup(this.cgroupParent)) problems.push(`cgroup ${cg} busy`);
    if (this.#ownsDir) await removeTree(this.dir);
    if (problems.length) console.error(`podman fixture cleanup:\n  ${problems.join("\n  ")}`);
    return problems;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** Start (configure) a private podman; see {@link Podman}. */
export function startPodman(options: PodmanOptions): Promise<Podman> {
  return Podman.start(options);
}

/** Check podman is usable at all (for skipping with a clear message). */
export async function podmanVersion(path = "/usr/bin/podman"): Promise<string> {
  return (await run([path, "--version"])).stdout.trim();
}
