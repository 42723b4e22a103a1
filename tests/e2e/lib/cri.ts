/**
 * A thin, typed CRI runtime.v1 client over gRPC, speaking to containerd's CRI plugin exactly as
 * kubelet does. Only the calls and fields the e2e tests use are typed; the wire format comes
 * from the descriptors embedded in the containerd binary (see cri_proto.ts).
 *
 * Field names are the proto names (snake_case, proto-loader `keepCase`). Proto maps arrive as
 * repeated `{key, value}` entries when loaded from a descriptor set: this client takes and
 * returns plain records instead.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { Buffer } from "node:buffer";
import { criDescriptorSet } from "./cri_proto.ts";

// ---- messages (only what we use) ----

export type Protocol = "TCP" | "UDP" | "SCTP";
export type NamespaceMode = "POD" | "CONTAINER" | "NODE" | "TARGET";
export type SandboxState = "SANDBOX_READY" | "SANDBOX_NOTREADY";
export type ContainerState =
  | "CONTAINER_CREATED"
  | "CONTAINER_RUNNING"
  | "CONTAINER_EXITED"
  | "CONTAINER_UNKNOWN";

export interface PodSandboxMetadata {
  name: string;
  uid: string;
  namespace: string;
  attempt: number;
}

export interface PortMapping {
  protocol: Protocol;
  container_port: number;
  host_port: number;
  host_ip?: string;
}

export interface NamespaceOptions {
  network?: NamespaceMode;
  pid?: NamespaceMode;
  ipc?: NamespaceMode;
}

export interface PodSandboxConfig {
  metadata: PodSandboxMetadata;
  hostname?: string;
  log_directory?: string;
  port_mappings?: PortMapping[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  linux?: {
    cgroup_parent?: string;
    sysctls?: Record<string, string>;
    security_context?: { namespace_options?: NamespaceOptions; privileged?: boolean };
  };
}

export interface Mount {
  container_path: string;
  host_path: string;
  readonly?: boolean;
}

export interface ContainerConfig {
  metadata: { name: string; attempt?: number };
  image: { image: string };
  command?: string[];
  args?: string[];
  working_dir?: string;
  envs?: Record<string, string>;
  mounts?: Mount[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  log_path?: string;
  linux?: {
    security_context?: {
      capabilities?: { add_capabilities?: string[]; drop_capabilities?: string[] };
      privileged?: boolean;
    };
  };
}

export interface PodSandboxStatus {
  id: string;
  metadata: PodSandboxMetadata;
  state: SandboxState;
  created_at: string;
  network: { ip: string; additional_ips: { ip: string }[] } | null;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  runtime_handler: string;
}

export interface PodSandboxStatusResult {
  status: PodSandboxStatus;
  /** Verbose only: containerd puts one JSON document under the key "info". */
  info: Record<string, string>;
}

export interface PodSandbox {
  id: string;
  metadata: PodSandboxMetadata;
  state: SandboxState;
  created_at: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export interface Container {
  id: string;
  pod_sandbox_id: string;
  metadata: { name: string; attempt: number };
  state: ContainerState;
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface RuntimeCondition {
  type: string;
  status: boolean;
  reason: string;
  message: string;
}

export interface ImageInfo {
  id: string;
  repo_tags: string[];
  size: string;
}

// ---- wire shapes that differ from the public ones ----

interface KV {
  key: string;
  value: string;
}
function toEntries(r: Record<string, string> | undefined): KV[] {
  return Object.entries(r ?? {}).map(([key, value]) => ({ key, value }));
}

function fromEntries(e: KV[] | undefined): Record<string, string> {
  return Object.fromEntries((e ?? []).map(({ key, value }) => [key, value]));
}

interface WireSandboxConfig extends Omit<PodSandboxConfig, "labels" | "annotations" | "linux"> {
  labels: KV[];
  annotations: KV[];
  linux?: Omit<NonNullable<PodSandboxConfig["linux"]>, "sysctls"> & { sysctls: KV[] };
}

function wireSandboxConfig(c: PodSandboxConfig): WireSandboxConfig {
  const { linux, labels, annotations, ...rest } = c;
  return {
    ...rest,
    labels: toEntries(labels),
    annotations: toEntries(annotations),
    linux: linux ? { ...linux, sysctls: toEntries(linux.sysctls) } : undefined,
  };
}

interface WireWithMaps {
  labels: KV[];
  annotations: KV[];
}

function unwireMaps<T extends WireWithMaps>(
  w: T,
): Omit<T, "labels" | "annotations"> & {
  labels: Record<string, string>;
  annotations: Record<string, string>;
} {
  return { ...w, labels: fromEntries(w.labels), annotations: fromEntries(w.annotations) };
}

// ---- the client ----

export interface CriClientOptions {
  /** Deadline of each call in milliseconds (default 120 s: the machine is small). */
  deadlineMs?: number;
}

type MethodDef = protoLoader.MethodDefinition<object, object>;

/** Typed CRI client for one runtime endpoint (a unix socket path). */
export class CriClient {
  readonly socket: string;
  #client: grpc.Client;
  #services: Record<"runtime" | "image", Record<string, MethodDef>>;
  #deadlineMs: number;

  private constructor(
    socket: string,
    services: Record<"runtime" | "image", Record<string, MethodDef>>,
    opts: CriClientOptions,
  ) {
    this.socket = socket;
    this.#services = services;
    this.#deadlineMs = opts.deadlineMs ?? 120_000;
    this.#client = new grpc.Client(`unix://${socket}`, grpc.credentials.createInsecure(), {
      // CRI messages (image lists, verbose status) exceed the 4 MiB default only rarely;
      // kubelet raises it to 16 MiB, do the same.
      "grpc.max_receive_message_length": 16 * 1024 * 1024,
    });
  }

  /** Connect to `socket`, loading the CRI descriptors from `containerdPath`. */
  static async connect(
    socket: string,
    containerdPath = "/usr/bin/containerd",
    opts: CriClientOptions = {},
  ): Promise<CriClient> {
    const def = protoLoader.loadFileDescriptorSetFromBuffer(
      await criDescriptorSet(containerdPath),
      {
        keepCase: true,
        longs: String,
        enums: String,
        defaults: true,
      },
    );
    const svc = (name: string): Record<string, MethodDef> => {
      const s = def[name];
      if (!s || !("RunPodSandbox" in s || "ListImages" in s)) {
        throw new Error(`CRI descriptors lack ${name}`);
      }
      return s as unknown as Record<string, MethodDef>;
    };
    return new CriClient(
      socket,
      { runtime: svc("runtime.v1.RuntimeService"), image: svc("runtime.v1.ImageService") },
      opts,
    );
  }

  close(): void {
    this.#client.close();
  }

  /** One unary call; rejects with the gRPC status (UNAVAILABLE at once on a dead socket). */
  call<Res>(
    service: "runtime" | "image",
    method: string,
    req: object,
    deadlineMs = this.#deadlineMs,
  ): Promise<Res> {
    const m = this.#services[service][method];
    if (!m) throw new Error(`no CRI method ${service}.${method}`);
    return new Promise<Res>((resolve, reject) => {
      this.#client.makeUnaryRequest<object, object>(
        m.path,
        m.requestSerialize,
        m.responseDeserialize,
        req,
        new grpc.Metadata(),
        { deadline: Date.now() + deadlineMs },
        (err, res) => {
          if (err) {
            reject(new Error(`CRI ${method}: ${err.details || err.message}`, { cause: err }));
          } else resolve(res as Res);
        },
      );
    });
  }

  // -- RuntimeService --

  async version(): Promise<{ runtime_name: string; runtime_version: string }> {
    return await this.call("runtime", "Version", { version: "v1" });
  }

  async status(): Promise<{ conditions: RuntimeCondition[]; info: Record<string, string> }> {
    const r = await this.call<{ status: { conditions: RuntimeCondition[] }; info: KV[] }>(
      "runtime",
      "Status",
      { verbose: true },
    );
    return { conditions: r.status?.conditions ?? [], info: fromEntries(r.info) };
  }

  async runPodSandbox(config: PodSandboxConfig, runtimeHandler = ""): Promise<string> {
    const r = await this.call<{ pod_sandbox_id: string }>("runtime", "RunPodSandbox", {
      config: wireSandboxConfig(config),
      runtime_handler: runtimeHandler,
    });
    return r.pod_sandbox_id;
  }

  async stopPodSandbox(podId: string): Promise<void> {
    await this.call("runtime", "StopPodSandbox", { pod_sandbox_id: podId });
  }

  async removePodSandbox(podId: string): Promise<void> {
    await this.call("runtime", "RemovePodSandbox", { pod_sandbox_id: podId });
  }

  async podSandboxStatus(podId: string, verbose = false): Promise<PodSandboxStatusResult> {
    type WireStatus = Omit<PodSandboxStatus, "labels" | "annotations"> & WireWithMaps;
    const r = await this.call<{ status: WireStatus; info: KV[] }>("runtime", "PodSandboxStatus", {
      pod_sandbox_id: podId,
      verbose,
    });
    return { status: unwireMaps(r.status), info: fromEntries(r.info) };
  }

  async listPodSandbox(): Promise<PodSandbox[]> {
    type WirePod = Omit<PodSandbox, "labels" | "annotations"> & WireWithMaps;
    const r = await this.call<{ items: WirePod[] }>("runtime", "ListPodSandbox", {});
    return (r.items ?? []).map(unwireMaps);
  }

  async createContainer(
    podId: string,
    config: ContainerConfig,
    sandboxConfig: PodSandboxConfig,
  ): Promise<string> {
    const { envs, labels, annotations, ...rest } = config;
    const r = await this.call<{ container_id: string }>("runtime", "CreateContainer", {
      pod_sandbox_id: podId,
      config: {
        ...rest,
        envs: toEntries(envs),
        labels: toEntries(labels),
        annotations: toEntries(annotations),
      },
      sandbox_config: wireSandboxConfig(sandboxConfig),
    });
    return r.container_id;
  }

  async startContainer(containerId: string): Promise<void> {
    await this.call("runtime", "StartContainer", { container_id: containerId });
  }

  async stopContainer(containerId: string, timeoutSeconds = 0): Promise<void> {
    await this.call("runtime", "StopContainer", {
      container_id: containerId,
      timeout: timeoutSeconds,
    });
  }

  async removeContainer(containerId: string): Promise<void> {
    await this.call("runtime", "RemoveContainer", { container_id: containerId });
  }

  async listContainers(podId?: string): Promise<Container[]> {
    const r = await this.call<{ containers: Container[] }>("runtime", "ListContainers", {
      filter: podId ? { pod_sandbox_id: podId } : undefined,
    });
    return r.containers ?? [];
  }

  /** Run `cmd` in a running container and wait (at most `timeoutSeconds`, 0 = no limit). */
  async execSync(containerId: string, cmd: string[], timeoutSeconds = 60): Promise<ExecResult> {
    const r = await this.call<{ stdout: Buffer; stderr: Buffer; exit_code: number }>(
      "runtime",
      "ExecSync",
      { container_id: containerId, cmd, timeout: timeoutSeconds },
      timeoutSeconds > 0 ? timeoutSeconds * 1000 + 30_000 : undefined,
    );
    const dec = new TextDecoder();
    return { exitCode: r.exit_code, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr) };
  }

  // -- ImageService (images come from `ctr images import`: CRI has no import call) --

  async listImages(): Promise<ImageInfo[]> {
    const r = await this.call<{ images: ImageInfo[] }>("image", "ListImages", {});
    return r.images ?? [];
  }

  async imageStatus(ref: string): Promise<ImageInfo | null> {
    const r = await this.call<{ image: ImageInfo | null }>("image", "ImageStatus", {
      image: { image: ref },
    });
    return r.image ?? null;
  }
}
