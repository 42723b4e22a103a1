/**
 * The datapath's own structs (bpf/tsnproxy.h, ABI 2) as user space reads and writes them
 * through the pinned maps. tests/unit/structs_test.ts checks them against the header.
 */
import { struct } from "./layout.ts";

const H = ["tsnproxy.h"];

/** The datapath ABI these layouts belong to (TSNP_ABI). */
export const TSNP_ABI = 2;

export const TsnpRule = struct("struct tsnp_rule", H, 32, {
  family: [0, "u8"],
  l4proto: [1, "u8"],
  prefix_len: [2, "u8"],
  port_lo: [4, "u16"],
  port_hi: [6, "u16"],
  priority: [8, "u32"],
  addr: [16, "bytes", 16],
});

/** The number of rules a pod entry holds (TSNP_RULES). */
export const TSNP_RULES = 8;

export const TsnpPod = struct("struct tsnp_pod", H, 344, {
  cookie: [0, "u64"],
  max_priority: [8, "u32"],
  default_priority: [12, "u32"],
  slot: [16, "u16"],
  flags: [18, "u16"],
  nrules: [20, "u8"],
  reason: [21, "u8"],
  remap: [24, "bytes", 64],
  rules: [88, "bytes", TsnpRule.size * TSNP_RULES],
});

export const TsnpConfig = struct("struct tsnp_config", H, 360, {
  stage_max_age_ns: [0, "u64"],
  flags: [8, "u32"],
  node: [16, "bytes", TsnpPod.size],
});

export const TsnpPodCounters = struct("struct tsnp_pod_counters", H, 24, {
  admitted: [0, "u64"],
  clamped: [8, "u64"],
  restored: [16, "u64"],
});

export const TSNP_POD_CARRY_TAG = 0x1;
export const TSNP_POD_CARRY_STAGE = 0x2;
export const TSNP_POD_REMAP = 0x4;
export const TSNP_POD_CLASSIFY = 0x8;
export const TSNP_POD_NETKIT = 0x10;
export const TSNP_CONFIG_TAGS = 0x1;
/** Per-pod counter slots (tsnp_pod_stats, tsnp_slots); slot 0 is nobody's. */
export const TSNP_SLOTS = 512;
/** The tag on the packet (TSNP_TAG, TSNP_TAG_MASK) and the saver's request (TSNP_REQ*). */
export const TSNP_TAG = 0xa000;
export const TSNP_TAG_MASK = 0xe000;
export const TSNP_REQ = 0xc000;
export const TSNP_REQ_PRIO_MASK = 0x3ff;
/** Size of the release stamp in each object's .rodata.release (tsnp_release). */
export const TSNP_RELEASE_LEN = 64;

/** enum tsnp_counter, in order. */
export const COUNTERS = [
  "admitted",
  "admitRequested",
  "admitClamped",
  "admitClassified",
  "admitNoPod",
  "tagged",
  "staged",
  "stageUnread",
  "stampMoved",
  "reqStageMiss",
  "restoredTag",
  "restoredStage",
  "restoredTstamp",
  "restoredFrag",
  "tagClamped",
  "stageMiss",
  "stageExpired",
  "tstampFailed",
  "restoredElsewhere",
] as const;
export type CounterName = typeof COUNTERS[number];
