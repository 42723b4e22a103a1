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
 * `maxPriority` comes from the highest layer that sets it; `remap` merges per priority. The
 * merged policy is written for every pod address, so a pod whose socket asks for a
 * priority above its maxPriority leaves with the clamped (after remap) priority.
 *
 * The rules are those of src/config/policy.ts (the reference, which uses zod);
 * tests/cni/config_equivalence_test.ts proves this mirror gives the same results.
 */
import { CniCode, type CniCodeValue, ConfigError } from "../errors.ts";
import type { PodPolicy } from "../config/policy.ts";
import { U32_MAX, validatePolicy } from "./config.ts";

export type { PodPolicy };

export const ANNOTATION_MAX_PRIORITY = "tsnproxy.io/max-priority";
export const ANNOTATION_PRIORITY_REMAP = "tsnproxy.io/priority-remap";
export const POD_ANNOTATIONS_CAPABILITY = "io.kubernetes.cri.pod-annotations";
export const RUNTIME_CONFIG_KEY = "tsnproxy";
export const CNI_ARG_MAX_PRIORITY = "TSNPROXY_MAX_PRIORITY";
export const CNI_ARG_PRIORITY_REMAP = "TSNPROXY_PRIORITY_REMAP";
const REMAP_SLOTS = 16;
/** The saver's remap table holds one byte per priority (struct tsnp_policy.remap). */
export const DATAPATH_REMAP_MAX = 255;

export type Layer = "node" | "entry" | "annotations" | "runtimeConfig" | "cniArgs";
export const LAYERS: readonly Layer[] = [
  "node",
  "entry",
  "annotations",
  "runtimeConfig",
  "cniArgs",
];
export type Layers = Partial<Record<Layer, PodPolicy | undefined>>;

function priority(s: string, where: string, code: CniCodeValue): number {
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

/** "7:3,6:3" (also "7=3"; spaces allowed; empty = nothing). */
export function remapFromString(
  s: string,
  where: string,
  code: CniCodeValue,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const raw of s.split(",")) {
    const part = raw.trim();
    if (part === "") continue;
    const m = /^(\d{1,2})\s*[:=]\s*(\d+)$/.exec(part);
    if (!m || Number(m[1]) >= REMAP_SLOTS) {
      throw new ConfigError(
        `${where}: ${JSON.stringify(part)} is not a remap entry`,
        'write "from:to" pairs separated by commas, from in 0..15, e.g. "7:3,6:3"',
        code,
      );
    }
    out[String(Number(m[1]))] = priority(m[2], where, code);
  }
  return out;
}

export function policyFromCniArgs(args: Map<string, string>): PodPolicy | undefined {
  const code = CniCode.InvalidEnvironment;
  const p: PodPolicy = {};
  const max = args.get(CNI_ARG_MAX_PRIORITY);
  const remap = args.get(CNI_ARG_PRIORITY_REMAP);
  if (max !== undefined) p.maxPriority = priority(max, `CNI_ARGS ${CNI_ARG_MAX_PRIORITY}`, code);
  if (remap !== undefined) {
    p.remap = remapFromString(remap, `CNI_ARGS ${CNI_ARG_PRIORITY_REMAP}`, code);
  }
  return p.maxPriority === undefined && p.remap === undefined ? undefined : p;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function policyFromRuntimeConfig(
  rc: unknown,
): { annotations?: PodPolicy; runtimeConfig?: PodPolicy } {
  const out: { annotations?: PodPolicy; runtimeConfig?: PodPolicy } = {};
  if (!isRecord(rc)) return out;
  const ann = rc[POD_ANNOTATIONS_CAPABILITY];
  if (isRecord(ann)) {
    const code = CniCode.InvalidNetworkConfig;
    const p: PodPolicy = {};
    const max = ann[ANNOTATION_MAX_PRIORITY];
    const remap = ann[ANNOTATION_PRIORITY_REMAP];
    if (typeof max === "string") {
      p.maxPriority = priority(max, `annotation ${ANNOTATION_MAX_PRIORITY}`, code);
    }
    if (typeof remap === "string") {
      p.remap = remapFromString(remap, `annotation ${ANNOTATION_PRIORITY_REMAP}`, code);
    }
    if (p.maxPriority !== undefined || p.remap !== undefined) out.annotations = p;
  }
  if (rc[RUNTIME_CONFIG_KEY] !== undefined) {
    out.runtimeConfig = validatePolicy(
      rc[RUNTIME_CONFIG_KEY],
      `runtimeConfig.${RUNTIME_CONFIG_KEY}`,
    );
  }
  return out;
}

/** Merges layers by the precedence above. Pure. */
export function mergePolicy(layers: Layers): PodPolicy {
  let maxPriority: number | undefined;
  const remap: Record<string, number> = {};
  for (const name of LAYERS) {
    const layer = layers[name];
    if (!layer) continue;
    if (layer.maxPriority !== undefined) maxPriority = layer.maxPriority;
    for (const [k, v] of Object.entries(layer.remap ?? {})) remap[String(Number(k))] = v;
  }
  const out: PodPolicy = {};
  if (maxPriority !== undefined) out.maxPriority = maxPriority;
  if (Object.keys(remap).length > 0) out.remap = remap;
  return out;
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
