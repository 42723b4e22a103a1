/**
 * Pod priority policy, without zod (the CNI ADD path imports this module): what the restorer may put into skb->priority for a pod.
 *
 *   policy:
 *     maxPriority: 5          # clamp: a pod's priority above 5 becomes 5
 *     remap: {"7": 3, "6": 3} # explicit table for priorities 0..15, applied BEFORE the clamp
 *
 * Effective priority of a packet: p' = min(remap[p] ?? p, maxPriority). Priorities above 15
 * are not remapped (taprio/mqprio map only 0..15 to traffic classes) but are clamped.
 *
 * ## Where a pod's policy comes from (lowest precedence first)
 *
 *   1. node default      — `policy:` in the node config (/etc/tsnproxy/config.yaml)
 *   2. plugin entry      — `"policy": {...}` in the tsnproxy entry of the conflist
 *   3. pod annotations   — `tsnproxy.io/max-priority: "5"`, `tsnproxy.io/priority-remap:
 *                          "7:3,6:3"`. Kubelet does NOT put annotations into CNI_ARGS (it
 *                          carries only K8S_POD_NAMESPACE, K8S_POD_NAME,
 *                          K8S_POD_INFRA_CONTAINER_ID, K8S_POD_UID and IgnoreUnknown).
 *                          containerd's CRI plugin passes all pod annotations as the
 *                          capability arg `io.kubernetes.cri.pod-annotations`, which libcni
 *                          hands to a plugin only if its conflist entry declares
 *                          `"capabilities": {"io.kubernetes.cri.pod-annotations": true}` —
 *                          so this layer is opt-in by the node admin (pod authors control
 *                          annotations; without the capability they cannot raise anything).
 *   4. runtimeConfig     — `runtimeConfig.tsnproxy: {maxPriority, remap}`: capability args a
 *                          runtime or tool passes when the entry declares
 *                          `"capabilities": {"tsnproxy": true}` (no stock runtime does: this
 *                          is for custom callers such as podman/cnitool test harnesses).
 *   5. CNI_ARGS          — `TSNPROXY_MAX_PRIORITY=5;TSNPROXY_PRIORITY_REMAP=7:3,6:3`: set by
 *                          whoever execs the plugin (runtime configuration, cnitool).
 *
 * Merge: the operator's layers (node, entry) set the ceiling: the entry's `maxPriority`
 * replaces the node's. The per-pod layers (annotations, runtimeConfig, CNI_ARGS) can only
 * LOWER it (effective = min of the ceiling and every per-pod value): pod authors control
 * annotations, and a pod must never raise its own priority above what the node allows.
 * `remap` merges per key (a higher layer's entry for priority 7 replaces a lower one's);
 * the clamp applies after the remap, so a remap cannot escape the ceiling either.
 *
 * The zod schema (podPolicySchema) and its validator live in policy.ts.
 */
import { CniCode, type CniCodeValue, ConfigError } from "../errors.ts";
import type { PodPolicy } from "./policy.ts";

export type { PodPolicy };

export const U32_MAX = 0xffffffff;
/** Priorities the remap table covers (taprio/mqprio's TC_QOPT_BITMASK + 1). */
export const REMAP_SLOTS = 16;
export const ANNOTATION_MAX_PRIORITY = "tsnproxy.io/max-priority";
export const ANNOTATION_PRIORITY_REMAP = "tsnproxy.io/priority-remap";
export const POD_ANNOTATIONS_CAPABILITY = "io.kubernetes.cri.pod-annotations";
export const RUNTIME_CONFIG_KEY = "tsnproxy";
export const CNI_ARG_MAX_PRIORITY = "TSNPROXY_MAX_PRIORITY";
export const CNI_ARG_PRIORITY_REMAP = "TSNPROXY_PRIORITY_REMAP";

/** What the datapath consumes: always fully populated. */
export interface DatapathPolicy {
  /** 0xffffffff = no clamp. */
  maxPriority: number;
  /** remap[p] for p in 0..15; identity by default. */
  remap: number[];
}

export type PolicyLayerName = "node" | "entry" | "annotations" | "runtimeConfig" | "cniArgs";
/** Precedence order, lowest first. */
export const POLICY_LAYERS: readonly PolicyLayerName[] = [
  "node",
  "entry",
  "annotations",
  "runtimeConfig",
  "cniArgs",
];
export type PolicyLayers = Partial<Record<PolicyLayerName, PodPolicy | undefined>>;

export interface ResolvedPolicy {
  policy: PodPolicy;
  /** Which layer decided each part (for logs and `tsnproxy status`). */
  from: { maxPriority?: PolicyLayerName; remap: Record<string, PolicyLayerName> };
}

/** Merges the layers by the precedence documented above. Pure. */
export function resolvePolicy(layers: PolicyLayers): ResolvedPolicy {
  let maxPriority: number | undefined;
  let maxFrom: PolicyLayerName | undefined;
  const remap: Record<string, number> = {};
  const remapFrom: Record<string, PolicyLayerName> = {};
  for (const name of POLICY_LAYERS) {
    const layer = layers[name];
    if (!layer) continue;
    if (layer.maxPriority !== undefined) {
      const operator = name === "node" || name === "entry";
      if (operator || maxPriority === undefined || layer.maxPriority < maxPriority) {
        maxPriority = layer.maxPriority;
        maxFrom = name;
      }
    }
    for (const [k, v] of Object.entries(layer.remap ?? {})) {
      remap[String(Number(k))] = v;
      remapFrom[String(Number(k))] = name;
    }
  }
  const policy: PodPolicy = {};
  if (maxPriority !== undefined) policy.maxPriority = maxPriority;
  if (Object.keys(remap).length > 0) policy.remap = remap;
  return { policy, from: { maxPriority: maxFrom, remap: remapFrom } };
}

/** The datapath form of a policy. */
export function compilePolicy(p: PodPolicy): DatapathPolicy {
  const remap = Array.from({ length: REMAP_SLOTS }, (_, i) => i);
  for (const [k, v] of Object.entries(p.remap ?? {})) remap[Number(k)] = v;
  return { maxPriority: p.maxPriority ?? U32_MAX, remap };
}

/** What the restorer does with a saved priority (reference semantics for tests and docs). */
export function applyPolicy(dp: DatapathPolicy, prio: number): number {
  const p = prio < REMAP_SLOTS ? dp.remap[prio] : prio;
  return Math.min(p, dp.maxPriority) >>> 0;
}

/** True when the policy changes nothing (the datapath can skip the lookup). */
export function isIdentityPolicy(dp: DatapathPolicy): boolean {
  return dp.maxPriority === U32_MAX && dp.remap.every((v, i) => v === i);
}

function parsePriority(s: string, where: string, code: CniCodeValue): number {
  const t = s.trim();
  const n = /^\d{1,10}$/.test(t) ? Number(t) : NaN;
  if (!Number.isInteger(n) || n > U32_MAX) {
    throw new ConfigError(
      `${where}: ${JSON.stringify(s)} is not a priority 0..4294967295`,
      "use a decimal integer, e.g. 5",
      code,
    );
  }
  return n;
}

/** Parses the compact remap syntax "7:3,6:3" (spaces allowed, empty = no entries). */
export function parseRemapString(
  s: string,
  where: string,
  code: CniCodeValue,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of s.split(",").map((x) => x.trim()).filter((x) => x !== "")) {
    const m = /^(\d{1,2})\s*[:=]\s*(\d+)$/.exec(part);
    if (!m || Number(m[1]) >= REMAP_SLOTS) {
      throw new ConfigError(
        `${where}: ${JSON.stringify(part)} is not a remap entry`,
        'write "from:to" pairs separated by commas, from in 0..15, e.g. "7:3,6:3"',
        code,
      );
    }
    out[String(Number(m[1]))] = parsePriority(m[2], where, code);
  }
  return out;
}

/**
 * The CNI_ARGS layer, from the raw `K=V;K=V` string or already split; unrelated keys
 * (K8S_POD_*, IgnoreUnknown) are ignored.
 */
export function policyFromCniArgs(
  cniArgs: string | ReadonlyMap<string, string> | undefined,
): PodPolicy | undefined {
  if (!cniArgs) return undefined;
  const args = typeof cniArgs === "string" ? splitCniArgs(cniArgs) : cniArgs;
  const code = CniCode.InvalidEnvironment;
  const p: PodPolicy = {};
  const max = args.get(CNI_ARG_MAX_PRIORITY);
  const remap = args.get(CNI_ARG_PRIORITY_REMAP);
  if (max !== undefined) {
    p.maxPriority = parsePriority(max, `CNI_ARGS ${CNI_ARG_MAX_PRIORITY}`, code);
  }
  if (remap !== undefined) {
    p.remap = parseRemapString(remap, `CNI_ARGS ${CNI_ARG_PRIORITY_REMAP}`, code);
  }
  return p.maxPriority === undefined && p.remap === undefined ? undefined : p;
}

function splitCniArgs(s: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const kv of s.split(";")) {
    const eq = kv.indexOf("=");
    if (eq >= 0) m.set(kv.slice(0, eq).trim(), kv.slice(eq + 1));
  }
  return m;
}

/** Validates a policy object (runtimeConfig.tsnproxy); `where` names it in errors. */
export type PolicyValidator = (input: unknown, where: string) => PodPolicy;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The pod-annotation and runtimeConfig layers from a CNI config's `runtimeConfig`. */
export function policyFromRuntimeConfig(
  runtimeConfig: unknown,
  validate: PolicyValidator,
): { annotations?: PodPolicy; runtimeConfig?: PodPolicy } {
  const out: { annotations?: PodPolicy; runtimeConfig?: PodPolicy } = {};
  if (!isRecord(runtimeConfig)) return out;
  const ann = runtimeConfig[POD_ANNOTATIONS_CAPABILITY];
  if (isRecord(ann)) {
    const code = CniCode.InvalidNetworkConfig;
    const p: PodPolicy = {};
    const max = ann[ANNOTATION_MAX_PRIORITY];
    const remap = ann[ANNOTATION_PRIORITY_REMAP];
    if (typeof max === "string") {
      p.maxPriority = parsePriority(max, `annotation ${ANNOTATION_MAX_PRIORITY}`, code);
    }
    if (typeof remap === "string") {
      p.remap = parseRemapString(remap, `annotation ${ANNOTATION_PRIORITY_REMAP}`, code);
    }
    if (p.maxPriority !== undefined || p.remap !== undefined) out.annotations = p;
  }
  const own = runtimeConfig[RUNTIME_CONFIG_KEY];
  if (own !== undefined) {
    out.runtimeConfig = validate(own, `runtimeConfig.${RUNTIME_CONFIG_KEY}`);
  }
  return out;
}
