/**
 * A pod's priority policy: the types and ranges every layer shares (the leaf of the policy
 * package; no imports). The datapath holds every priority as a u32 (struct tsnp_pod in
 * bpf/tsnproxy.h), so every priority a policy names is 0..4294967295.
 *
 *   maxPriority       the ceiling: a priority above it becomes it
 *   remap             {"p": q}: the socket's priority p (0-15) becomes q, before the ceiling
 *   defaultPriority   for packets whose socket set no priority (SO_PRIORITY 0)
 *   rules             the same, by destination: [{protocol?, ports?, destination?, priority}]
 *                     in order, the first match wins, else defaultPriority
 */

export const PRIORITY_MAX = 0xffffffff;
/** Priorities the remap table covers (taprio/mqprio's TC_QOPT_BITMASK + 1). */
export const REMAP_SLOTS = 16;
/** Rules a pod may have (TSNP_RULES). */
export const MAX_RULES = 8;

export const PROTOCOLS = { tcp: 6, udp: 17, icmp: 1, icmpv6: 58, sctp: 132 } as const;
export type ProtocolName = keyof typeof PROTOCOLS;

/** A classification rule as written (node config, entry, runtimeConfig, annotation). */
export interface Rule {
  /** Protocol name or number; absent: any. */
  protocol?: ProtocolName | number;
  /** Destination port or inclusive range; absent: any. */
  ports?: { from: number; to: number };
  /** Destination prefix "10.0.0.0/8", "fd00::/8", or one address; absent: any. */
  destination?: string;
  priority: number;
}

/** One policy layer as written. Every field optional: a layer says only what it sets. */
export interface PodPolicy {
  maxPriority?: number;
  remap?: Record<string, number>;
  defaultPriority?: number;
  rules?: Rule[];
}

/** A rule as the datapath matches it (struct tsnp_rule). */
export interface CompiledRule {
  /** 0: any, 4, 6. */
  family: number;
  /** 0: any. */
  l4proto: number;
  prefixLen: number;
  /** 16 bytes; IPv4 in the first 4. */
  addr: Uint8Array;
  portLo: number;
  portHi: number;
  priority: number;
}

/** A policy as the datapath applies it: every field present. */
export interface DatapathPolicy {
  /** PRIORITY_MAX: no ceiling. */
  maxPriority: number;
  /** remap[p] for p in 0..15, the ceiling already applied. */
  remap: number[];
  /** For packets whose socket set no priority and no rule matches (0: they keep 0). */
  defaultPriority: number;
  rules: CompiledRule[];
}

/** Where a pod's policy comes from, lowest precedence first. */
export const POLICY_LAYERS = ["node", "entry", "annotations", "runtimeConfig", "cniArgs"] as const;
export type PolicyLayerName = typeof POLICY_LAYERS[number];

export const ANNOTATION_MAX_PRIORITY = "tsnproxy.io/max-priority";
export const ANNOTATION_PRIORITY_REMAP = "tsnproxy.io/priority-remap";
export const ANNOTATION_DEFAULT_PRIORITY = "tsnproxy.io/default-priority";
export const ANNOTATION_PRIORITY_RULES = "tsnproxy.io/priority-rules";
export const POD_ANNOTATIONS_CAPABILITY = "io.kubernetes.cri.pod-annotations";
export const RUNTIME_CONFIG_KEY = "tsnproxy";
export const CNI_ARG_MAX_PRIORITY = "TSNPROXY_MAX_PRIORITY";
export const CNI_ARG_PRIORITY_REMAP = "TSNPROXY_PRIORITY_REMAP";
export const CNI_ARG_DEFAULT_PRIORITY = "TSNPROXY_DEFAULT_PRIORITY";
export const CNI_ARG_PRIORITY_RULES = "TSNPROXY_PRIORITY_RULES";
