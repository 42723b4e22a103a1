/**
 * Where the datapath lives in the bpf filesystem, and the one codec for every name in it.
 * Everything tsnproxy pins is under one root (default /sys/fs/bpf/tsnproxy):
 *
 *   <root>/v2/maps/<map>      ABI 2 maps, pinned by libbpf (LIBBPF_PIN_BY_NAME)
 *   <root>/v2/progs/<prog>    tsnp_save, tsnp_admit, tsnp_restore
 *   <root>/v2/node/<name>     node attachments: restore_<ifname>, the restorer on a TSN NIC
 *   <root>/pods/<name>        one per pod interface and side, shared by every ABI:
 *                             <container>_<ifname>        the saver, in the pod's namespace
 *                             <container>_<ifname>@host   admit (ABI 1: a host-veth restorer)
 *   <root>/maps, progs, node  ABI 1 (release 0.1.0), kept while pods it attached live
 *
 * Each ABI has its own directory because map layouts differ: libbpf refuses to reuse a pin
 * whose layout does not match, and an older release must find its own maps where it left
 * them while pods it attached still run its programs (src/bpf/legacy.ts).
 *
 * An attachment pin is the BPF link itself (tcx or netkit: unpinning detaches it) or, for a
 * classic clsact filter, which cannot be pinned, the program pinned under a marker name that
 * records the filter's hook: `<name>@clsact-<egress|ingress>-<ifindex>[@netns=<path>]`.
 *
 * Names: bpffs refuses '.' in names (it reserves them), and container ids ([A-Za-z0-9_.-])
 * and interface names may contain it. The codec keeps [A-Za-z0-9-] as it is and writes any
 * other byte as %XX, so every id round-trips and `_` separates container and interface
 * unambiguously. Ids of [A-Za-z0-9-] (every runtime's hex or uuid ids) give the same names as
 * release 0.1.0, whose DEL can then still find them; 0.1.0 turned any other character into
 * `_`, which parses back only as a guess (parsePodPin's `legacy`).
 */
import { NotFoundError } from "../errors.ts";

/** The datapath ABI this build pins (bpf/tsnproxy.h TSNP_ABI). */
export const ABI = 2;

export const PROGRAMS = {
  save: "tsnp_save",
  admit: "tsnp_admit",
  restore: "tsnp_restore",
} as const;
export type ProgramRole = keyof typeof PROGRAMS;

/** Which embedded object (bpf/<name>.c) holds each program. */
export const PROGRAM_OBJECT: Record<ProgramRole, string> = {
  save: "save",
  admit: "admit",
  restore: "restore",
};

export const MAPS = [
  "tsnp_pods",
  "tsnp_config",
  "tsnp_stage",
  "tsnp_stage_meta",
  "tsnp_stage_seen",
  "tsnp_req_stage",
  "tsnp_stats",
  "tsnp_pod_stats",
  "tsnp_slots",
] as const;
export type MapName = typeof MAPS[number];

export class PinLayout {
  constructor(readonly root: string) {}
  /** This ABI's directory. */
  get abiDir(): string {
    return `${this.root}/v${ABI}`;
  }
  get mapsDir(): string {
    return `${this.abiDir}/maps`;
  }
  get progsDir(): string {
    return `${this.abiDir}/progs`;
  }
  get nodeDir(): string {
    return `${this.abiDir}/node`;
  }
  get podsDir(): string {
    return `${this.root}/pods`;
  }
  map(name: MapName): string {
    return `${this.mapsDir}/${name}`;
  }
  prog(role: ProgramRole): string {
    return `${this.progsDir}/${PROGRAMS[role]}`;
  }
  /** The restorer's attachment on a TSN interface. */
  restorer(ifname: string): string {
    return `${this.nodeDir}/${nodePinName("restore", ifname)}`;
  }
  /** A pod interface's attachment on one side. */
  pod(containerId: string, ifname: string, side: PodSide): string {
    return `${this.podsDir}/${podPinName(containerId, ifname, side)}`;
  }
}

// ---- the name codec -------------------------------------------------------------------

const KEEP = /[A-Za-z0-9-]/;

/** A pin-name component: [A-Za-z0-9-] as is, every other UTF-8 byte as %XX. */
export function encodeComponent(s: string): string {
  let out = "";
  for (const ch of s) {
    if (KEEP.test(ch)) out += ch;
    else {
      for (const b of new TextEncoder().encode(ch)) {
        out += "%" + b.toString(16).padStart(2, "0");
      }
    }
  }
  return out;
}

/** The inverse of encodeComponent; undefined for what it never writes. */
export function decodeComponent(s: string): string | undefined {
  if (!/^(?:[A-Za-z0-9-]|%[0-9a-f]{2})*$/.test(s)) return undefined;
  try {
    return decodeURIComponent(s);
  } catch {
    return undefined;
  }
}

export type PodSide = "pod" | "host";
const HOST_SUFFIX = "@host";

export function podPinName(containerId: string, ifname: string, side: PodSide): string {
  const base = `${encodeComponent(containerId)}_${encodeComponent(ifname)}`;
  return side === "host" ? base + HOST_SUFFIX : base;
}

export function nodePinName(role: "restore", ifname: string): string {
  return `${role}_${encodeComponent(ifname)}`;
}

export interface ClsactMarker {
  direction: "ingress" | "egress";
  ifindex: number;
  /** The filter's network namespace when it is not the node's (a pod's). */
  netns?: string;
}

/** The marker suffix a clsact attachment's pin carries (see the module header). */
export function clsactSuffix(m: ClsactMarker): string {
  const ns = m.netns ? `@netns=${encodeURIComponent(m.netns)}` : "";
  return `@clsact-${m.direction}-${m.ifindex}${ns}`;
}

/** Splits a pin file name into its attachment name and clsact marker, if any. */
export function splitMarker(fileName: string): { name: string; clsact?: ClsactMarker } {
  const m = /^(.*)@clsact-(ingress|egress)-(\d+)(?:@netns=([^@/]*))?$/.exec(fileName);
  if (!m) return { name: fileName };
  return {
    name: m[1],
    clsact: {
      direction: m[2] as "ingress" | "egress",
      ifindex: Number(m[3]),
      ...(m[4] ? { netns: decodeURIComponent(m[4]) } : {}),
    },
  };
}

export interface PodPin {
  /** The file name under the pods directory. */
  file: string;
  /** The attachment's name without marker or side (the same for both sides). */
  name: string;
  side: PodSide;
  clsact?: ClsactMarker;
  /** Parsed exactly; undefined for an ambiguous release-0.1.0 name. */
  containerId?: string;
  ifname?: string;
  /**
   * A 0.1.0 name that turned other characters into `_`: the ways it may split into
   * container id and interface (id prefixes), longest id first.
   */
  legacy?: Array<{ containerId: string; ifname: string }>;
}

/** Parses a file name in the pods directory; undefined when it is not a name we write. */
export function parsePodPin(file: string): PodPin | undefined {
  const { name: withSide, clsact } = splitMarker(file);
  const side: PodSide = withSide.endsWith(HOST_SUFFIX) ? "host" : "pod";
  const name = side === "host" ? withSide.slice(0, -HOST_SUFFIX.length) : withSide;
  const parts = name.split("_");
  if (parts.length === 2) {
    const containerId = decodeComponent(parts[0]);
    const ifname = decodeComponent(parts[1]);
    if (containerId && ifname) return { file, name, side, clsact, containerId, ifname };
  }
  if (parts.length > 2 && /^[A-Za-z0-9_-]+$/.test(name)) {
    const legacy = [];
    for (let i = parts.length - 1; i >= 1; i--) {
      legacy.push({ containerId: parts.slice(0, i).join("_"), ifname: parts.slice(i).join("_") });
    }
    return { file, name, side, clsact, legacy };
  }
  return undefined;
}

/** The pod interface a pin stands for: its exact name, or a 0.1.0 name's longest guess. */
export function attachmentId(pin: PodPin): { containerId: string; ifname: string } | undefined {
  return pin.containerId !== undefined && pin.ifname !== undefined
    ? { containerId: pin.containerId, ifname: pin.ifname }
    : pin.legacy?.[0];
}

/** True when a pod pin may belong to this container (exactly, or as a 0.1.0 guess). */
export function podPinMatches(pin: PodPin, containerId: string): boolean {
  if (pin.containerId !== undefined) return pin.containerId === containerId;
  const lossy = containerId.replace(/[^A-Za-z0-9_-]/g, "_");
  return pin.legacy?.some((c) => c.containerId === lossy) ?? false;
}

/** Parses a node attachment's file name (restore_<ifname>[marker]). */
export function parseNodePin(
  file: string,
): { role: "restore"; ifname: string; clsact?: ClsactMarker } | undefined {
  const { name, clsact } = splitMarker(file);
  const m = /^restore_(.+)$/.exec(name);
  const ifname = m ? decodeComponent(m[1]) : undefined;
  return ifname ? { role: "restore", ifname, clsact } : undefined;
}

// ---- the filesystem -------------------------------------------------------------------

interface Mount {
  point: string;
  fstype: string;
}

function mounts(): Mount[] {
  const text = Deno.readTextFileSync("/proc/self/mounts");
  return text.split("\n").filter(Boolean).map((l) => {
    const f = l.split(" ");
    return { point: f[1].replace(/\\040/g, " "), fstype: f[2] };
  });
}

/** The filesystem type that holds path (longest mount-point prefix). */
export function fsTypeOf(path: string): string | undefined {
  let best: Mount | undefined;
  for (const m of mounts()) {
    const inside = path === m.point ||
      path.startsWith(m.point.endsWith("/") ? m.point : m.point + "/");
    if (inside && (!best || m.point.length >= best.point.length)) best = m;
  }
  return best?.fstype;
}

/** Throws a clear error unless root is (or would be created) on a bpf filesystem. */
export function assertBpffs(root: string): void {
  const fstype = fsTypeOf(root);
  if (fstype !== "bpf") {
    throw new NotFoundError(
      `${root} is not on a bpf filesystem (it is on ${fstype ?? "nothing mounted"})`,
      "mount the BPF filesystem: `mount -t bpf bpf /sys/fs/bpf` (systemd does this on boot; in a DaemonSet, mount the host's /sys/fs/bpf), or pass --bpffs on one",
    );
  }
}
