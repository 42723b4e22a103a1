/**
 * A pod's priority policy on the CNI hot path, without zod.
 *
 * ## Precedence (lowest first; a higher layer wins)
 *
 *   1. node default   the datapath's default policy (tsnp_config, written by `tsnproxy
 *                     install` from `policy:` in /etc/tsnproxy/config.yaml)
 *   2. entry          `"policy": {...}` in the tsnproxy entry of the conflist
 *   3. annotations    runtimeConfig["io.kubernetes.cri.pod-annotations"] with
 *                     tsnproxy.io/max-priority and tsnproxy.io/priority-remap (only when the
 *                     entry declares that capability: the admin opts in)
 *   4. runtimeConfig  runtimeConfig.tsnproxy {maxPriority, remap}
 *   5. CNI_ARGS       TSNPROXY_MAX_PRIORITY=5;TSNPROXY_PRIORITY_REMAP=7:3,6:3
 *
 * The operator's layers (node, entry) set the maxPriority ceiling; per-pod layers can only
 * lower it. `remap` merges per priority. The merged policy is written for every pod
 * address, so a pod whose socket asks for a priority above its maxPriority leaves with the
 * clamped (after remap) priority. The rules are src/config/policy_layers.ts (shared with
 * the zod-validated config path); this module adds the datapath form.
 */
import { CniCode, ConfigError } from "../errors.ts";
import {
  type PodPolicy,
  POLICY_LAYERS,
  policyFromRuntimeConfig as layersFromRuntimeConfig,
  type PolicyLayerName,
  type PolicyLayers,
  REMAP_SLOTS,
  resolvePolicy,
  U32_MAX,
} from "../config/policy_layers.ts";
import { validatePolicy } from "./config.ts";

export {
  ANNOTATION_MAX_PRIORITY,
  ANNOTATION_PRIORITY_REMAP,
  CNI_ARG_MAX_PRIORITY,
  CNI_ARG_PRIORITY_REMAP,
  parseRemapString as remapFromString,
  POD_ANNOTATIONS_CAPABILITY,
  policyFromCniArgs,
  RUNTIME_CONFIG_KEY,
} from "../config/policy_layers.ts";
export type { PodPolicy };

/** The saver's remap table holds one byte per priority (struct tsnp_policy.remap). */
export const DATAPATH_REMAP_MAX = 255;

export type Layer = PolicyLayerName;
export const LAYERS = POLICY_LAYERS;
export type Layers = PolicyLayers;

/** The annotation and runtimeConfig layers, validated without zod. */
export function policyFromRuntimeConfig(
  rc: unknown,
): { annotations?: PodPolicy; runtimeConfig?: PodPolicy } {
  return layersFromRuntimeConfig(rc, validatePolicy);
}

/** Merges layers by the precedence above. Pure. */
export function mergePolicy(layers: Layers): PodPolicy {
  return resolvePolicy(layers).policy;
}

/** The datapath's form: maxPriority (0xffffffff = none) and a 16-slot table or none. */
export interface SaverPolicy {
  maxPriority: number;
  remap?: readonly number[];
}

/** The node default as read from tsnp_config, as a policy layer. */
export function layerFromSaver(p: SaverPolicy): PodPolicy {
  const out: PodPolicy = {};
  if (p.maxPriority !== U32_MAX) out.maxPriority = p.maxPriority;
  const remap: Record<string, number> = {};
  p.remap?.forEach((v, i) => {
    if (v !== i) remap[String(i)] = v;
  });
  if (Object.keys(remap).length) out.remap = remap;
  return out;
}

export function toSaver(p: PodPolicy): SaverPolicy {
  const out: SaverPolicy = { maxPriority: p.maxPriority ?? U32_MAX };
  const entries = Object.entries(p.remap ?? {});
  if (entries.length) {
    const table = Array.from({ length: REMAP_SLOTS }, (_, i) => i);
    for (const [k, v] of entries) {
      if (v > DATAPATH_REMAP_MAX) {
        throw new ConfigError(
          `policy remap ${k} -> ${v}: the datapath's remap table holds priorities 0..255`,
          "remap to a priority 0..255 (taprio/mqprio map only 0..15 to traffic classes); " +
            "use maxPriority to clamp",
          CniCode.InvalidNetworkConfig,
        );
      }
      table[Number(k)] = v;
    }
    out.remap = table;
  }
  return out;
}

export function sameSaverPolicy(a: SaverPolicy, b: SaverPolicy): boolean {
  const ta = a.remap ?? Array.from({ length: REMAP_SLOTS }, (_, i) => i);
  const tb = b.remap ?? Array.from({ length: REMAP_SLOTS }, (_, i) => i);
  return a.maxPriority === b.maxPriority && ta.every((v, i) => v === tb[i]);
}
