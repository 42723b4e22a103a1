/**
 * Which pod a per-pod counter belongs to. The datapath keys pod counters by podCookie(container
 * id); the container id comes from the pod attachment pins (`<containerId>_<ifname>`), the
 * pod's namespace/name from libcni's result cache (/var/lib/cni/results/<network>-<id>-<if>,
 * whose `cniArgs` carry K8S_POD_NAMESPACE and K8S_POD_NAME as kubelet's runtimes pass them).
 */
import { listPodAttachments, podCookie } from "../bpf/pod.ts";

export interface PodIdentity {
  containerId: string;
  ifname?: string;
  namespace?: string;
  name?: string;
}

export const DEFAULT_CNI_RESULTS_DIR = "/var/lib/cni/results";
const MAX_CACHE_FILE = 1 << 20;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Reads one libcni cache file; undefined when it is not one. */
export function parseCniCacheEntry(text: string): PodIdentity | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isRecord(v) || typeof v.containerId !== "string" || !v.containerId) return undefined;
  const out: PodIdentity = { containerId: v.containerId };
  if (typeof v.ifName === "string") out.ifname = v.ifName;
  const args = v.cniArgs;
  if (Array.isArray(args)) {
    for (const a of args) {
      if (!Array.isArray(a) || a.length !== 2) continue;
      if (a[0] === "K8S_POD_NAMESPACE" && typeof a[1] === "string") out.namespace = a[1];
      if (a[0] === "K8S_POD_NAME" && typeof a[1] === "string") out.name = a[1];
    }
  }
  return out;
}

/** cookie -> pod, from the pins (every attached pod) enriched by the CNI result cache. */
export function podsByCookie(
  bpffs: string,
  resultsDir = DEFAULT_CNI_RESULTS_DIR,
): Map<bigint, PodIdentity> {
  const out = new Map<bigint, PodIdentity>();
  for (const { name } of listPodAttachments(bpffs)) {
    const cut = name.lastIndexOf("_");
    if (cut <= 0) continue;
    const containerId = name.slice(0, cut);
    out.set(podCookie(containerId), { containerId, ifname: name.slice(cut + 1) });
  }
  let entries: Deno.DirEntry[] = [];
  try {
    entries = [...Deno.readDirSync(resultsDir)];
  } catch {
    return out; // no cache (podman without libcni cache, tests): ids only
  }
  for (const e of entries) {
    if (!e.isFile) continue;
    const path = `${resultsDir}/${e.name}`;
    try {
      if (Deno.statSync(path).size > MAX_CACHE_FILE) continue;
      const id = parseCniCacheEntry(Deno.readTextFileSync(path));
      if (!id) continue;
      const cookie = podCookie(id.containerId);
      const known = out.get(cookie);
      if (known) out.set(cookie, { ...known, ...id }); // only pods attached on this node
    } catch {
      // A file being rewritten by the runtime: skip it this time.
    }
  }
  return out;
}
