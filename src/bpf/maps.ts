/**
 * Typed access to the datapath's pinned maps from user space: the node config, the pods'
 * entries (policy and carrier, by host-side ifindex), the counter slots and the counters.
 */
import { TsnproxyError } from "../errors.ts";
import { Errno } from "../ffi/libc.ts";
import { BPF_ANY } from "../ffi/structs/bpf.ts";
import {
  type CounterName,
  COUNTERS,
  TSNP_CONFIG_TAGS,
  TSNP_POD_CARRY_STAGE,
  TSNP_POD_CARRY_TAG,
  TSNP_POD_CLASSIFY,
  TSNP_POD_NETKIT,
  TSNP_POD_REMAP,
  TSNP_RULES,
  TSNP_SLOTS,
  TsnpConfig,
  TsnpPod,
  TsnpPodCounters,
  TsnpRule,
} from "../ffi/structs/datapath.ts";
import { decode, encode } from "../ffi/structs/layout.ts";
import type { CompiledRule, DatapathPolicy } from "../policy/types.ts";
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

/** How a pod's admitted metadata reaches the restorer (bpf/tsnproxy.h). "none": admit only. */
export type Carrier = "tag" | "stage" | "none";

export interface DatapathConfig {
  stageMaxAgeNs: bigint;
  /** Pods may use the tag, and the restorer trusts it (src/bpf/carrier.ts, node part). */
  tags: boolean;
  /** Why (REASONS code of the node's carrier choice). */
  carrierReason: number;
  /** The node's own policy layer, compiled. */
  node: DatapathPolicy;
}

/** A pod interface's entry in tsnp_pods. */
export interface PodEntry {
  /** Identifies the pod (podCookie of its container id). */
  cookie: bigint;
  /** Its host side is a netkit device (its packets may reach the NIC never received). */
  netkit?: boolean;
  slot: number;
  carrier: Carrier;
  /** Why that carrier (src/bpf/carrier.ts REASONS). */
  reason: number;
  policy: DatapathPolicy;
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

export class PinnedMap {
  constructor(readonly name: string, readonly fd: number) {}

  lookup(key: Uint8Array<ArrayBuffer>, valueSize: number): Uint8Array<ArrayBuffer> | undefined {
    const v = new Uint8Array(valueSize);
    const r = mapLookup(this.fd, key, v);
    if (r === -Errno.ENOENT) return undefined;
    check(r, `lookup in ${this.name}`, "run as root");
    return v;
  }

  update(key: Uint8Array<ArrayBuffer>, value: Uint8Array<ArrayBuffer>, flags = BPF_ANY): void {
    check(mapUpdate(this.fd, key, value, flags), `update of ${this.name}`, "run as root");
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
  admitted: bigint;
  clamped: bigint;
  restored: bigint;
}

const u32Key = (n: number) => new Uint8Array(new Uint32Array([n]).buffer);

function encodeRules(rules: readonly CompiledRule[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(TsnpRule.size * TSNP_RULES);
  rules.slice(0, TSNP_RULES).forEach((r, i) => {
    out.set(
      encode(TsnpRule, {
        family: r.family,
        l4proto: r.l4proto,
        prefix_len: r.prefixLen,
        port_lo: r.portLo,
        port_hi: r.portHi,
        priority: r.priority,
        addr: r.addr,
      }),
      i * TsnpRule.size,
    );
  });
  return out;
}

function decodeRules(bytes: Uint8Array, n: number): CompiledRule[] {
  const out: CompiledRule[] = [];
  for (let i = 0; i < Math.min(n, TSNP_RULES); i++) {
    const r = decode(TsnpRule, bytes.subarray(i * TsnpRule.size, (i + 1) * TsnpRule.size));
    out.push({
      family: r.family,
      l4proto: r.l4proto,
      prefixLen: r.prefix_len,
      addr: new Uint8Array(r.addr),
      portLo: r.port_lo,
      portHi: r.port_hi,
      priority: r.priority,
    });
  }
  return out;
}

function identityRemap(p: DatapathPolicy): boolean {
  return p.remap.every((q, i) => q === Math.min(i, p.maxPriority));
}

/** struct tsnp_pod's bytes for a policy (and, for a pod, its identity and carrier). */
export function encodePod(
  policy: DatapathPolicy,
  pod: Omit<PodEntry, "policy"> = { cookie: 0n, slot: 0, carrier: "none", reason: 0 },
): Uint8Array<ArrayBuffer> {
  let flags = 0;
  if (pod.carrier === "tag") flags |= TSNP_POD_CARRY_TAG;
  if (pod.carrier === "stage") flags |= TSNP_POD_CARRY_STAGE;
  if (!identityRemap(policy)) flags |= TSNP_POD_REMAP;
  if (pod.netkit) flags |= TSNP_POD_NETKIT;
  if (policy.defaultPriority || policy.rules.length) flags |= TSNP_POD_CLASSIFY;
  return encode(TsnpPod, {
    cookie: pod.cookie,
    max_priority: policy.maxPriority,
    default_priority: policy.defaultPriority,
    slot: pod.slot,
    flags,
    nrules: Math.min(policy.rules.length, TSNP_RULES),
    reason: pod.reason,
    remap: new Uint8Array(new Uint32Array(policy.remap).buffer),
    rules: encodeRules(policy.rules),
  });
}

export function decodePod(bytes: Uint8Array): PodEntry {
  const d = decode(TsnpPod, bytes);
  const policy: DatapathPolicy = {
    maxPriority: d.max_priority,
    remap: [...new Uint32Array(d.remap.slice().buffer)],
    defaultPriority: d.default_priority,
    rules: decodeRules(d.rules, d.nrules),
  };
  return {
    cookie: d.cookie,
    ...(d.flags & TSNP_POD_NETKIT ? { netkit: true } : {}),
    slot: d.slot,
    carrier: d.flags & TSNP_POD_CARRY_TAG
      ? "tag"
      : d.flags & TSNP_POD_CARRY_STAGE
      ? "stage"
      : "none",
    reason: d.reason,
    policy,
  };
}

/** The datapath's maps, opened from their pins. Close when done. */
/**
 * The owner (pod cookie, 0 = free) of every counter slot in a tsnp_slots map, index = slot.
 * One BPF_MAP_LOOKUP_BATCH: CNI ADD and DEL read it under the node lock.
 */
export function slotOwners(slots: PinnedMap): BigUint64Array<ArrayBuffer> {
  const owners = new BigUint64Array(TSNP_SLOTS);
  const { ret, count } = mapLookupBatch(slots.fd, {
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

/** Frees a pod's slots in a tsnp_slots map (ABI 1's has the same layout). */
export function releaseSlots(slots: PinnedMap, podCookie: bigint): void {
  const owners = slotOwners(slots);
  for (let s = 1; s < TSNP_SLOTS; s++) {
    if (owners[s] === podCookie) slots.update(u32Key(s), new Uint8Array(8));
  }
}

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
    const value = encode(TsnpConfig, {
      stage_max_age_ns: c.stageMaxAgeNs,
      flags: c.tags ? TSNP_CONFIG_TAGS : 0,
      node: encodePod(c.node, { cookie: 0n, slot: 0, carrier: "none", reason: c.carrierReason }),
    });
    this.#get("tsnp_config").update(u32Key(0), value);
  }

  readConfig(): DatapathConfig {
    const v = this.#get("tsnp_config").lookup(u32Key(0), TsnpConfig.size);
    if (!v) throw new Error("tsnp_config has no entry");
    const d = decode(TsnpConfig, v);
    const node = decodePod(d.node);
    return {
      stageMaxAgeNs: d.stage_max_age_ns,
      tags: (d.flags & TSNP_CONFIG_TAGS) !== 0,
      carrierReason: node.reason,
      node: node.policy,
    };
  }

  putPod(ifindex: number, e: PodEntry): void {
    this.#get("tsnp_pods").update(u32Key(ifindex), encodePod(e.policy, e));
  }

  getPod(ifindex: number): PodEntry | undefined {
    const v = this.#get("tsnp_pods").lookup(u32Key(ifindex), TsnpPod.size);
    return v ? decodePod(v) : undefined;
  }

  deletePod(ifindex: number): boolean {
    return this.#get("tsnp_pods").delete(u32Key(ifindex));
  }

  /** Every pod interface's entry, by host-side ifindex. */
  pods(): Array<{ ifindex: number; entry: PodEntry }> {
    const m = this.#get("tsnp_pods");
    const out: Array<{ ifindex: number; entry: PodEntry }> = [];
    for (const k of m.keys(4)) {
      const v = m.lookup(k, TsnpPod.size);
      if (v) out.push({ ifindex: new DataView(k.buffer).getUint32(0, true), entry: decodePod(v) });
    }
    return out;
  }

  /** Node-wide counters, summed over CPUs. */
  counters(): Counters {
    const m = this.#get("tsnp_stats");
    const out = Object.fromEntries(COUNTERS.map((c) => [c, 0n])) as Counters;
    COUNTERS.forEach((name, i) => {
      const v = m.lookup(u32Key(i), 8 * this.#ncpus);
      if (!v) return;
      const dv = new DataView(v.buffer);
      for (let c = 0; c < this.#ncpus; c++) out[name] += dv.getBigUint64(c * 8, true);
    });
    return out;
  }

  #slotOwners(): BigUint64Array<ArrayBuffer> {
    return slotOwners(this.#get("tsnp_slots"));
  }

  /**
   * The pod's counter slot: the one it holds already (a retried ADD, a second network), else
   * the lowest free one, its counters zeroed. 0 when every slot is taken: the pod's packets
   * are still carried, only not counted per pod. Call under the node lock.
   */
  acquireSlot(podCookie: bigint): number {
    const owners = this.#slotOwners();
    let free = 0;
    for (let s = 1; s < TSNP_SLOTS; s++) {
      if (owners[s] === podCookie) return s;
      if (!free && owners[s] === 0n) free = s;
    }
    if (!free) return 0;
    const key = u32Key(free);
    this.#get("tsnp_pod_stats").update(key, new Uint8Array(TsnpPodCounters.size * this.#ncpus));
    this.#get("tsnp_slots").update(key, new Uint8Array(new BigUint64Array([podCookie]).buffer));
    return free;
  }

  /** Frees the pod's slots; its counters stay until the slot's next owner zeroes them. */
  releaseSlot(podCookie: bigint): void {
    releaseSlots(this.#get("tsnp_slots"), podCookie);
  }

  /** Per-pod counters (summed over CPUs) of every pod that holds a slot. */
  podCounters(): PodCounters[] {
    const owners = this.#slotOwners();
    const m = this.#get("tsnp_pod_stats");
    const stride = TsnpPodCounters.size; // 8-byte aligned already
    const out: PodCounters[] = [];
    for (let s = 1; s < TSNP_SLOTS; s++) {
      if (owners[s] === 0n) continue;
      const v = m.lookup(u32Key(s), stride * this.#ncpus);
      if (!v) continue;
      const sum: PodCounters = { podCookie: owners[s], admitted: 0n, clamped: 0n, restored: 0n };
      for (let c = 0; c < this.#ncpus; c++) {
        const d = decode(TsnpPodCounters, v.subarray(c * stride, (c + 1) * stride));
        sum.admitted += d.admitted;
        sum.clamped += d.clamped;
        sum.restored += d.restored;
      }
      out.push(sum);
    }
    return out;
  }

  close(): void {
    for (const m of this.#maps.values()) m.close();
    this.#maps.clear();
  }
}
