/**
 * Typed access to the datapath's pinned maps from user space: the pod policy table, the
 * node config, the counters and the fingerprint table's occupancy.
 */
import { TsnproxyError } from "../errors.ts";
import { Errno, monotonicNs } from "../ffi/libc.ts";
import { BPF_ANY } from "../ffi/structs/bpf.ts";
import {
  type CounterName,
  COUNTERS,
  TSNP_CONFIG_TABLE_ONLY,
  TSNP_POLICY_REMAP,
  TSNP_SLOTS,
  TsnpAddr,
  TsnpConfig,
  TsnpFp,
  TsnpLive,
  TsnpMeta,
  TsnpPodCounters,
  TsnpPolicy,
} from "../ffi/structs/datapath.ts";
import { decode, encode } from "../ffi/structs/layout.ts";
import {
  check,
  closeFd,
  mapDelete,
  mapLookup,
  mapLookupBatch,
  mapNextKey,
  mapUpdate,
  objGetRequired,
} from "./sys.ts";
import { type MapName, PinLayout } from "./pins.ts";

/** A pod policy in the form the saver applies it. */
export interface DatapathPolicy {
  /** Identifies the pod: DEL finds its policies by it (0 = none). */
  podCookie: bigint;
  /** The pod's counter slot (0 = none): see acquireSlot(). */
  slot?: number;
  /** Priorities above this are clamped to it (0xffffffff = no clamp). */
  maxPriority: number;
  /** remap[p] replaces priority p (0-15) before the clamp; undefined = identity. */
  remap?: readonly number[];
}

/** How priorities 0-15 travel (bpf/tsnproxy.h): the tc_index tag, or the table for all. */
export type Carrier = "tag" | "table";

export interface DatapathConfig {
  maxAgeNs: bigint;
  gcIntervalNs: bigint;
  defaultPolicy: DatapathPolicy;
  /** Default "tag". */
  carrier?: Carrier;
}

export const NO_CLAMP = 0xffffffff;

export function encodePolicyFields(p: DatapathPolicy): { flags: number; remap: Uint8Array } {
  const remap = new Uint8Array(16);
  for (let i = 0; i < 16; i++) remap[i] = p.remap?.[i] ?? i;
  return { flags: p.remap ? TSNP_POLICY_REMAP : 0, remap };
}

/** IPv4 addresses as ::ffff:a.b.c.d, IPv6 as is (the saver's key format). */
export function addrKey(ip: string): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(16);
  if (ip.includes(".") && !ip.includes(":")) {
    const parts = ip.split(".").map(Number);
    if (parts.length !== 4 || parts.some((n) => !Number.isInteger(n) || n < 0 || n > 255)) {
      throw new Error(`not an IPv4 address: ${ip}`);
    }
    out[10] = 0xff;
    out[11] = 0xff;
    out.set(parts, 12);
    return out;
  }
  const [head, tail = ""] = ip.split("::");
  const h = head ? head.split(":") : [];
  const t = ip.includes("::") ? (tail ? tail.split(":") : []) : [];
  const groups = ip.includes("::") ? [...h, ...Array(8 - h.length - t.length).fill("0"), ...t] : h;
  if (groups.length !== 8) throw new Error(`not an IPv6 address: ${ip}`);
  groups.forEach((g, i) => {
    const v = parseInt(g, 16);
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw new Error(`not an IPv6 address: ${ip}`);
    out[i * 2] = v >> 8;
    out[i * 2 + 1] = v & 0xff;
  });
  return out;
}

export function addrFromKey(key: Uint8Array): string {
  const v4mapped = key.subarray(0, 10).every((b) => b === 0) && key[10] === 0xff &&
    key[11] === 0xff;
  if (v4mapped) return [...key.subarray(12)].join(".");
  const g: string[] = [];
  for (let i = 0; i < 16; i += 2) g.push(((key[i] << 8) | key[i + 1]).toString(16));
  return g.join(":").replace(/(^|:)0(:0)+(:|$)/, "::");
}

const POSSIBLE_CPUS = "/sys/devices/system/cpu/possible";
let possible: number | undefined;

/**
 * How many CPUs the kernel may ever bring up: per-CPU map values hold one slot for each, as
 * libbpf_num_possible_cpus() says. Fixed at boot, so read once per process (the agent opens
 * the maps for every verb).
 */
export function possibleCpus(): number {
  if (possible !== undefined) return possible;
  let text: string;
  try {
    text = Deno.readTextFileSync(POSSIBLE_CPUS);
  } catch (e) {
    throw new TsnproxyError(
      `cannot read ${POSSIBLE_CPUS}: ${(e as Error).message}`,
      "per-CPU maps are sized by it: tsnproxy needs sysfs mounted at /sys",
    );
  }
  possible = countCpuList(text);
  return possible;
}

/** The number of CPUs in a kernel cpu list such as "0-3" or "0,2-5". */
export function countCpuList(text: string): number {
  let n = 0;
  for (const part of text.trim().split(",")) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) {
      throw new TsnproxyError(
        `cannot parse the possible CPUs: "${text.trim()}"`,
        `${POSSIBLE_CPUS} should hold a list such as 0-3: is sysfs mounted at /sys?`,
      );
    }
    n += (m[2] === undefined ? 0 : Number(m[2]) - Number(m[1])) + 1;
  }
  return n;
}

class PinnedMap {
  constructor(readonly name: MapName, readonly fd: number) {}

  lookup(key: Uint8Array<ArrayBuffer>, valueSize: number): Uint8Array<ArrayBuffer> | undefined {
    const v = new Uint8Array(valueSize);
    const r = mapLookup(this.fd, key, v);
    if (r === -Errno.ENOENT) return undefined;
    check(r, `lookup in ${this.name}`, "run as root");
    return v;
  }

  update(key: Uint8Array<ArrayBuffer>, value: Uint8Array<ArrayBuffer>, flags = BPF_ANY): void {
    check(
      mapUpdate(this.fd, key, value, flags),
      `update of ${this.name}`,
      "run as root",
    );
  }

  /** True when something was deleted. */
  delete(key: Uint8Array<ArrayBuffer>): boolean {
    const r = mapDelete(this.fd, key);
    if (r === -Errno.ENOENT) return false;
    check(r, `delete from ${this.name}`, "run as root");
    return true;
  }

  *keys(keySize: number): Generator<Uint8Array<ArrayBuffer>> {
    let prev: Uint8Array<ArrayBuffer> | null = null;
    for (;;) {
      const next = new Uint8Array(keySize);
      const r = mapNextKey(this.fd, prev, next); // null: the first key
      if (r === -Errno.ENOENT) return;
      check(r, `iteration of ${this.name}`, "run as root");
      yield next;
      prev = next;
    }
  }

  close(): void {
    closeFd(this.fd);
  }
}

export type Counters = Record<CounterName, bigint>;

export interface PodCounters {
  podCookie: bigint;
  saved: bigint;
  clamped: bigint;
  restored: bigint;
}

/** The datapath's maps, opened from their pins. Close when done. */
export class DatapathMaps {
  readonly #maps = new Map<MapName, PinnedMap>();
  readonly #ncpus: number;

  constructor(readonly pins: PinLayout) {
    this.#ncpus = possibleCpus();
  }

  static open(root: string): DatapathMaps {
    return new DatapathMaps(new PinLayout(root));
  }

  #get(name: MapName): PinnedMap {
    let m = this.#maps.get(name);
    if (!m) {
      m = new PinnedMap(name, objGetRequired(this.pins.map(name)));
      this.#maps.set(name, m);
    }
    return m;
  }

  writeConfig(c: DatapathConfig): void {
    const { flags, remap } = encodePolicyFields(c.defaultPolicy);
    const value = encode(TsnpConfig, {
      flags: c.carrier === "table" ? TSNP_CONFIG_TABLE_ONLY : 0,
      max_age_ns: c.maxAgeNs,
      gc_interval_ns: c.gcIntervalNs,
      "default_policy.pod_cookie": c.defaultPolicy.podCookie,
      "default_policy.max_priority": c.defaultPolicy.maxPriority,
      "default_policy.flags": flags,
      "default_policy.slot": c.defaultPolicy.slot ?? 0,
      "default_policy.remap": remap,
    });
    this.#get("tsnp_config").update(new Uint8Array(4), value);
    this.#policiesChanged(); // a new default policy must reach the savers' caches too
    // The restorer's gate holds max_age in jiffies: a new age must be measured again (until
    // then the restorer always looks). The last save time is kept.
    this.#get("tsnp_live").update(
      new Uint8Array(4),
      encode(TsnpLive, { last_save_jiffies: this.#live().last_save_jiffies }),
    );
  }

  /**
   * Empties every CPU's cached policy (struct tsnp_policy_cache) after a policy change, by
   * writing a new generation (CLOCK_MONOTONIC ns: different from every earlier one, whoever
   * writes it, without reading the old one). Until it lands, a saver may apply the address's
   * previous policy: the window is the time between two syscalls.
   */
  #policiesChanged(): void {
    this.#get("tsnp_policy_gen").update(
      new Uint8Array(4),
      new Uint8Array(new BigUint64Array([monotonicNs()]).buffer),
    );
  }

  /** struct tsnp_live: the restorer's gate and the GC timer's last tick. */
  #live() {
    const v = this.#get("tsnp_live").lookup(new Uint8Array(4), TsnpLive.size);
    if (!v) throw new Error("tsnp_live has no entry");
    return decode(TsnpLive, v);
  }

  /** CLOCK_MONOTONIC ns of the GC timer's last tick (0: none since the last config write). */
  lastGcTickNs(): bigint {
    return this.#live().cal_ns;
  }

  /** The restorer's gate: gateJiffies 0 = not measured yet. */
  restorerGate(): { lastSaveJiffies: bigint; gateJiffies: bigint } {
    const d = this.#live();
    return { lastSaveJiffies: d.last_save_jiffies, gateJiffies: d.gate_jiffies };
  }

  readConfig(): DatapathConfig {
    const v = this.#get("tsnp_config").lookup(new Uint8Array(4), TsnpConfig.size);
    if (!v) throw new Error("tsnp_config has no entry");
    const d = decode(TsnpConfig, v);
    return {
      maxAgeNs: d.max_age_ns,
      gcIntervalNs: d.gc_interval_ns,
      carrier: d.flags & TSNP_CONFIG_TABLE_ONLY ? "table" : "tag",
      defaultPolicy: {
        podCookie: d["default_policy.pod_cookie"],
        slot: d["default_policy.slot"],
        maxPriority: d["default_policy.max_priority"],
        remap: d["default_policy.flags"] & TSNP_POLICY_REMAP
          ? [...d["default_policy.remap"]]
          : undefined,
      },
    };
  }

  putPolicy(ip: string, p: DatapathPolicy): void {
    const { flags, remap } = encodePolicyFields(p);
    const value = encode(TsnpPolicy, {
      pod_cookie: p.podCookie,
      max_priority: p.maxPriority,
      flags,
      slot: p.slot ?? 0,
      remap,
    });
    this.#get("tsnp_policy").update(addrKey(ip), value);
    this.#policiesChanged();
  }

  /** The pod cookie of the policy stored under ip, if any. */
  policyCookie(ip: string): bigint | undefined {
    const v = this.#get("tsnp_policy").lookup(addrKey(ip), TsnpPolicy.size);
    return v ? decode(TsnpPolicy, v).pod_cookie : undefined;
  }

  deletePolicy(ip: string): boolean {
    const deleted = this.#get("tsnp_policy").delete(addrKey(ip));
    if (deleted) this.#policiesChanged();
    return deleted;
  }

  policies(): Array<{ ip: string; policy: DatapathPolicy }> {
    const m = this.#get("tsnp_policy");
    const out: Array<{ ip: string; policy: DatapathPolicy }> = [];
    for (const k of m.keys(TsnpAddr.size)) {
      const v = m.lookup(k, TsnpPolicy.size);
      if (!v) continue;
      const d = decode(TsnpPolicy, v);
      out.push({
        ip: addrFromKey(k),
        policy: {
          podCookie: d.pod_cookie,
          slot: d.slot,
          maxPriority: d.max_priority,
          remap: d.flags & TSNP_POLICY_REMAP ? [...d.remap] : undefined,
        },
      });
    }
    return out;
  }

  /** Node-wide counters, summed over CPUs. */
  counters(): Counters {
    const m = this.#get("tsnp_stats");
    const out = Object.fromEntries(COUNTERS.map((c) => [c, 0n])) as Counters;
    COUNTERS.forEach((name, i) => {
      const key = new Uint8Array(new Uint32Array([i]).buffer);
      const v = m.lookup(key, 8 * this.#ncpus);
      if (!v) return;
      const dv = new DataView(v.buffer);
      for (let c = 0; c < this.#ncpus; c++) out[name] += dv.getBigUint64(c * 8, true);
    });
    return out;
  }

  /**
   * The owner (pod cookie, 0 = free) of every counter slot, index = slot. One
   * BPF_MAP_LOOKUP_BATCH: CNI ADD and DEL read it under the node lock.
   */
  #slotOwners(): BigUint64Array<ArrayBuffer> {
    const owners = new BigUint64Array(TSNP_SLOTS);
    const { ret, count } = mapLookupBatch(this.#get("tsnp_slots").fd, {
      inBatch: null,
      outBatch: new Uint8Array(4),
      keys: new Uint8Array(4 * TSNP_SLOTS),
      values: new Uint8Array(owners.buffer),
      count: TSNP_SLOTS,
    });
    if (ret < 0 && ret !== -Errno.ENOENT) check(ret, "batch lookup of tsnp_slots", "run as root");
    if (count !== TSNP_SLOTS) {
      throw new Error(`tsnp_slots returned ${count} of ${TSNP_SLOTS} slots`);
    }
    return owners;
  }

  #slotKey(slot: number): Uint8Array<ArrayBuffer> {
    return new Uint8Array(new Uint32Array([slot]).buffer);
  }

  /**
   * The pod's counter slot: the one it holds already (a retried ADD, a second network), else
   * the lowest free one, its counters zeroed. 0 when every slot is taken: the pod's packets
   * are still restored, only not counted per pod. Call under the node lock.
   */
  acquireSlot(podCookie: bigint): number {
    const owners = this.#slotOwners();
    let free = 0;
    for (let s = 1; s < TSNP_SLOTS; s++) {
      if (owners[s] === podCookie) return s;
      if (!free && owners[s] === 0n) free = s;
    }
    if (!free) return 0;
    const key = this.#slotKey(free);
    this.#get("tsnp_pod_stats").update(key, new Uint8Array(TsnpPodCounters.size * this.#ncpus));
    this.#get("tsnp_slots").update(key, new Uint8Array(new BigUint64Array([podCookie]).buffer));
    return free;
  }

  /** Frees the pod's slots; its counters stay until the slot's next owner zeroes them. */
  releaseSlot(podCookie: bigint): void {
    const owners = this.#slotOwners();
    for (let s = 1; s < TSNP_SLOTS; s++) {
      if (owners[s] === podCookie) {
        this.#get("tsnp_slots").update(this.#slotKey(s), new Uint8Array(8));
      }
    }
  }

  /** Per-pod counters (summed over CPUs) of every pod that holds a slot. */
  podCounters(): PodCounters[] {
    const owners = this.#slotOwners();
    const m = this.#get("tsnp_pod_stats");
    const stride = TsnpPodCounters.size; // 8-byte aligned already
    const out: PodCounters[] = [];
    for (let s = 1; s < TSNP_SLOTS; s++) {
      if (owners[s] === 0n) continue;
      const v = m.lookup(this.#slotKey(s), stride * this.#ncpus);
      if (!v) continue;
      const sum: PodCounters = { podCookie: owners[s], saved: 0n, clamped: 0n, restored: 0n };
      for (let c = 0; c < this.#ncpus; c++) {
        const d = decode(TsnpPodCounters, v.subarray(c * stride, (c + 1) * stride));
        sum.saved += d.saved;
        sum.clamped += d.clamped;
        sum.restored += d.restored;
      }
      out.push(sum);
    }
    return out;
  }

  /**
   * Entries in the fingerprint table. Uses BPF_MAP_LOOKUP_BATCH, which walks the hash
   * buckets in order: a get_next_key walk restarts from the first key whenever the key it
   * stands on is evicted, and over-counted a churning LRU several times over.
   */
  metaOccupancy(): number {
    const fd = this.#get("tsnp_meta").fd;
    const chunk = 1024;
    const keys = new Uint8Array(TsnpFp.size * chunk);
    const values = new Uint8Array(TsnpMeta.size * chunk);
    const token = [new Uint8Array(8), new Uint8Array(8)];
    let n = 0;
    for (let i = 0;; i++) {
      const inBatch = i === 0 ? null : token[(i + 1) % 2];
      const { ret, count } = mapLookupBatch(fd, {
        inBatch,
        outBatch: token[i % 2],
        keys,
        values,
        count: chunk,
      });
      if (ret < 0 && ret !== -Errno.ENOENT) check(ret, "batch lookup of tsnp_meta", "run as root");
      n += count;
      if (ret === -Errno.ENOENT) return n;
    }
  }

  close(): void {
    for (const m of this.#maps.values()) m.close();
    this.#maps.clear();
  }
}
