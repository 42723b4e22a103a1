/**
 * Where the datapath lives in the bpf filesystem. Everything tsnproxy pins is under one
 * root (default /sys/fs/bpf/tsnproxy), so uninstall removes exactly what is ours:
 *
 *   <root>/maps/<map>        maps, pinned by libbpf (LIBBPF_PIN_BY_NAME)
 *   <root>/progs/<program>   tsnp_save, tsnp_restore, tsnp_gc_start
 *   <root>/node/<name>       node attachments (the restorer on the TSN interface)
 *   <root>/pods/<name>       one per pod interface: <container id>_<ifname>, and
 *                            <container id>_<ifname>@host for a restorer on its host veth
 *
 * An attachment pin is the tcx link itself (unpinning detaches it) or, for classic
 * clsact filters, which cannot be pinned, the program pinned under a name that records
 * the filter's interface and hook (`<name>@clsact-<egress|ingress>-<ifindex>`).
 * bpffs refuses '.' in names: every name here is built from [A-Za-z0-9_@-].
 */
import { NotFoundError } from "../errors.ts";

export const PROGRAMS = {
  save: "tsnp_save",
  restore: "tsnp_restore",
  gcStart: "tsnp_gc_start",
} as const;
export type ProgramRole = keyof typeof PROGRAMS;

/** Which embedded object (bpf/<name>.c) holds each program. */
export const PROGRAM_OBJECT: Record<ProgramRole, string> = {
  save: "save",
  restore: "restore",
  gcStart: "gc",
};

export const MAPS = [
  "tsnp_meta",
  "tsnp_policy",
  "tsnp_config",
  "tsnp_stats",
  "tsnp_pod_stats",
  "tsnp_slots",
  "tsnp_policy_gen",
  "tsnp_gc",
  "tsnp_live",
] as const;
export type MapName = typeof MAPS[number];

export class PinLayout {
  constructor(readonly root: string) {}
  get mapsDir(): string {
    return `${this.root}/maps`;
  }
  get progsDir(): string {
    return `${this.root}/progs`;
  }
  get nodeDir(): string {
    return `${this.root}/node`;
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
}

/** Attachment names must be valid file names: container ids and ifnames are. */
export function podAttachmentName(containerId: string, ifname: string): string {
  const safe = (s: string) => s.replace(/[^A-Za-z0-9_-]/g, "_");
  return `${safe(containerId)}_${safe(ifname)}`;
}

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
