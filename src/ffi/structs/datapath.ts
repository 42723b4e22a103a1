/**
 * The datapath's own structs (bpf/tsnproxy.h) as user space reads and writes them through
 * the pinned maps. tests/unit/structs_test.ts checks them against the header.
 */
import { struct } from "./layout.ts";

const H = ["tsnproxy.h"];

export const TsnpFp = struct("struct tsnp_fp", H, 32, {
  family: [0, "u8"],
  l4proto: [1, "u8"],
  l3len: [2, "u16"],
  l3id: [4, "u32"],
  l4a: [8, "u32"],
  l4b: [12, "u32"],
  l4c: [16, "u32"],
  payload: [20, "bytes", 12],
});

export const TsnpMeta = struct("struct tsnp_meta", H, 32, {
  tstamp: [0, "u64"],
  saved_ns: [8, "u64"],
  pending: [16, "i64"],
  priority: [24, "u32"],
  tstamp_type: [28, "u8"],
  flags: [29, "u8"],
  slot: [30, "u16"],
});

export const TsnpPolicy = struct("struct tsnp_policy", H, 32, {
  pod_cookie: [0, "u64"],
  max_priority: [8, "u32"],
  flags: [12, "u16"],
  slot: [14, "u16"],
  remap: [16, "bytes", 16],
});

export const TsnpAddr = struct("struct tsnp_addr", H, 16, {
  addr: [0, "bytes", 16],
});

export const TsnpConfig = struct("struct tsnp_config", H, 56, {
  max_age_ns: [0, "u64"],
  gc_interval_ns: [8, "u64"],
  "default_policy.pod_cookie": [16, "u64"],
  "default_policy.max_priority": [24, "u32"],
  "default_policy.flags": [28, "u16"],
  "default_policy.slot": [30, "u16"],
  "default_policy.remap": [32, "bytes", 16],
  flags: [48, "u32"],
});

export const TsnpLive = struct("struct tsnp_live", H, 32, {
  last_save_jiffies: [0, "u64"],
  gate_jiffies: [8, "u64"],
  cal_ns: [16, "u64"],
  cal_jiffies: [24, "u64"],
});

export const TsnpPodCounters = struct("struct tsnp_pod_counters", H, 24, {
  saved: [0, "u64"],
  clamped: [8, "u64"],
  restored: [16, "u64"],
});

export const TSNP_POLICY_REMAP = 1;
export const TSNP_CONFIG_TABLE_ONLY = 1;
/** Per-pod counter slots (tsnp_pod_stats, tsnp_slots); slot 0 is nobody's. */
export const TSNP_SLOTS = 512;
export const TSNP_META_HAS_TSTAMP = 1;

/** enum tsnp_counter, in order. */
export const COUNTERS = [
  "saved",
  "saveClamped",
  "saveFailed",
  "restored",
  "restoredTstamp",
  "expired",
  "notFound",
  "gcExpired",
  "gcRuns",
  "tstampFailed",
  "savedTable",
] as const;
export type CounterName = typeof COUNTERS[number];
