/**
 * Which pod a per-pod counter belongs to (only with `metrics.podLabels`). The datapath keys pod
 * counters by podCookie(container id); the container id comes from the pod attachment pins
 * (`<containerId>_<ifname>`), the pod's namespace/name from libcni's result cache
 * (/var/lib/cni/results/<network>-<id>-<if>, whose `cniArgs` carry K8S_POD_NAMESPACE and
 * K8S_POD_NAME as kubelet's runtimes pass them).
 *
 * The agent serves scrapes on the thread that also serves the CNI socket, so the result cache
 * is not re-read per scrape: ResultCache reads each file once (libcni writes a file at ADD and
 * removes it at DEL; its name, holding the container id, never gets other content) and looks
 * at the directory again only when its mtime moved (or is too recent to trust), reading only
 * the names it has not seen. The work per refresh and the entries kept are bounded.
 */
import { listPodAttachments, podCookie } from "../bpf/pod.ts";
import { attachmentId } from "../bpf/pins.ts";

export interface PodIdentity {
  containerId: string;
  ifname?: string;
  namespace?: string;
  name?: string;
}

export const DEFAULT_CNI_RESULTS_DIR = "/var/lib/cni/results";
const MAX_CACHE_FILE = 1 << 20;
/** Files read per refresh at most; the rest are read by the next ones. */
export const MAX_READS_PER_REFRESH = 256;
/** Result files remembered at most (a node runs at most a few hundred pods). */
export const MAX_ENTRIES = 8192;
/**
 * A directory mtime this close to now may hide a later change in the same clock tick (the
 * kernel stamps with a coarse clock): the directory is listed again until it is older.
 */
const RACY_MTIME_MS = 2000;
/** Reads of a file that holds no cache entry before it is left alone. */
const MAX_TRIES = 3;

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

export interface ResultCacheStats {
  /** Directory listings. */
  listings: number;
  /** Result files read (each file once, unless it was unreadable or half written). */
  filesRead: number;
}

/** libcni's result cache, read incrementally (see the module comment). */
export class ResultCache {
  readonly stats: ResultCacheStats = { listings: 0, filesRead: 0 };
  /**
   * file name -> identity, or how many reads found no cache entry in it (half written by the
   * runtime, or not libcni's): tried again at the next listings, MAX_TRIES times in all.
   */
  #files = new Map<string, PodIdentity | number>();
  /** Directory mtime at the last listing that left nothing to read; undefined: list again. */
  #cleanAt: number | undefined;

  constructor(
    readonly dir: string,
    readonly now: () => number = Date.now,
  ) {}

  /** container id -> identity, for every result file seen. */
  byContainerId(): Map<string, PodIdentity> {
    this.refresh();
    const out = new Map<string, PodIdentity>();
    for (const id of this.#files.values()) if (typeof id === "object") out.set(id.containerId, id);
    return out;
  }

  refresh(): void {
    let mtime: number;
    try {
      mtime = Deno.statSync(this.dir).mtime?.getTime() ?? 0;
    } catch {
      this.#files.clear(); // no cache (podman without libcni cache): ids only
      this.#cleanAt = undefined;
      return;
    }
    if (this.#cleanAt !== undefined && mtime === this.#cleanAt) return;
    this.stats.listings++;
    const names = new Set<string>();
    try {
      for (const e of Deno.readDirSync(this.dir)) if (e.isFile) names.add(e.name);
    } catch {
      return;
    }
    for (const name of this.#files.keys()) if (!names.has(name)) this.#files.delete(name);
    let budget = MAX_READS_PER_REFRESH;
    let pending = false;
    for (const name of names) {
      const known = this.#files.get(name);
      if (typeof known === "object" || (known ?? 0) >= MAX_TRIES) continue;
      if (budget === 0 || (known === undefined && this.#files.size >= MAX_ENTRIES)) {
        pending = true;
        continue;
      }
      budget--;
      const id = this.#read(`${this.dir}/${name}`);
      const tries = (known ?? 0) + 1;
      this.#files.set(name, id ?? tries);
      if (!id && tries < MAX_TRIES) pending = true;
    }
    const racy = this.now() - mtime < RACY_MTIME_MS;
    this.#cleanAt = pending || racy ? undefined : mtime;
  }

  #read(path: string): PodIdentity | undefined {
    try {
      if (Deno.statSync(path).size > MAX_CACHE_FILE) return undefined;
      this.stats.filesRead++;
      return parseCniCacheEntry(Deno.readTextFileSync(path));
    } catch {
      return undefined; // removed or being rewritten: skip it this time
    }
  }
}

/** cookie -> pod for every attached pod: the pins, named by the result cache. */
export class PodIdentities {
  readonly results: ResultCache;

  constructor(readonly bpffs: string, resultsDir = DEFAULT_CNI_RESULTS_DIR) {
    this.results = new ResultCache(resultsDir);
  }

  /** From the pod pins (`attachments`: as listPodAttachments gives them, when listed already). */
  current(attachments = listPodAttachments(this.bpffs)): Map<bigint, PodIdentity> {
    const out = new Map<bigint, PodIdentity>();
    for (const a of attachments) {
      const id = attachmentId(a);
      if (id) out.set(podCookie(id.containerId), id);
    }
    if (out.size === 0) return out;
    const named = this.results.byContainerId();
    for (const [cookie, known] of out) {
      const id = named.get(known.containerId);
      if (id) out.set(cookie, { ...known, ...id }); // only pods attached on this node
    }
    return out;
  }
}
