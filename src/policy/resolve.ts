/**
 * The one precedence function. A pod's policy is the node's, lowered by the pod's own
 * layers:
 *
 *   node           the node config's `policy` (trusted: the operator's): sets the ceiling, may
 *                  remap any priority 0-15 to any other, and a default priority and rules
 *   entry          the conflist entry's `policy` (whoever can write a chained entry, e.g. a
 *                  NetworkAttachmentDefinition, is an input)
 *   annotations, runtimeConfig, cniArgs   the pod's (src/policy/layers.ts)
 *
 * Every layer after the node's can only lower: its ceiling replaces the current one only if
 * lower, its remap p -> q only if q is below what p maps to so far, and whatever it asks
 * above that is refused (reported, never applied). Its defaultPriority and rules replace the
 * lower layers' (the highest layer that sets them wins), and like every priority they are
 * capped by the final ceiling. The result is what admit applies (bpf/admit.c): remap[p] for
 * a socket priority p of 0-15, min(p, ceiling) above, the rules or the default for a packet
 * whose socket set none.
 */
import { compileRule, formatRule } from "./validate.ts";
import {
  type CompiledRule,
  type DatapathPolicy,
  type PodPolicy,
  POLICY_LAYERS,
  type PolicyLayerName,
  PRIORITY_MAX,
  REMAP_SLOTS,
} from "./types.ts";

/** A policy with every priority it can give (remap, default, rules) held to its ceiling. */
function capped(
  ceiling: number,
  remap: number[],
  defaultPriority: number,
  rules: CompiledRule[],
): DatapathPolicy {
  return {
    maxPriority: ceiling,
    remap: remap.map((q) => Math.min(q, ceiling)),
    defaultPriority: Math.min(defaultPriority, ceiling),
    rules: rules.map((r) => ({ ...r, priority: Math.min(r.priority, ceiling) })),
  };
}

/** The node layer alone, as install writes it into the datapath's tsnp_config. */
export function compileNode(node: PodPolicy | undefined): DatapathPolicy {
  return capped(
    node?.maxPriority ?? PRIORITY_MAX,
    Array.from({ length: REMAP_SLOTS }, (_, p) => node?.remap?.[String(p)] ?? p),
    node?.defaultPriority ?? 0,
    (node?.rules ?? []).map(compileRule),
  );
}

export type PodLayers = Partial<Record<Exclude<PolicyLayerName, "node">, PodPolicy | undefined>>;
/** The pod's own layers, lowest precedence first: every layer but the node's. */
const POD_LAYERS = POLICY_LAYERS.filter((l): l is keyof PodLayers => l !== "node");

export interface ResolvedPolicy {
  policy: DatapathPolicy;
  /** Which layer decided each part (logs, `tsnproxy status`). */
  from: {
    maxPriority: PolicyLayerName;
    remap: Record<string, PolicyLayerName>;
    defaultPriority?: PolicyLayerName;
    rules?: PolicyLayerName;
  };
  /** What a layer asked for above what the layers before it allow, and did not get. */
  refused: string[];
}

/** Merges the pod's layers onto the node's policy by the rules above. Pure. */
export function resolvePolicy(node: DatapathPolicy, layers: PodLayers): ResolvedPolicy {
  let ceiling = node.maxPriority;
  const remap = [...node.remap];
  let defaultPriority = node.defaultPriority;
  let rules = node.rules;
  const from: ResolvedPolicy["from"] = {
    maxPriority: "node",
    remap: {},
    ...(defaultPriority ? { defaultPriority: "node" as const } : {}),
    ...(rules.length ? { rules: "node" as const } : {}),
  };
  const refused: string[] = [];
  for (const name of POD_LAYERS) {
    const l = layers[name];
    if (!l) continue;
    if (l.maxPriority !== undefined) {
      if (l.maxPriority < ceiling) {
        ceiling = l.maxPriority;
        from.maxPriority = name;
      } else if (l.maxPriority > ceiling) {
        refused.push(`${name}: maxPriority ${l.maxPriority} above the ceiling ${ceiling}`);
      }
    }
    for (const [k, q] of Object.entries(l.remap ?? {})) {
      const p = Number(k);
      if (q < remap[p]) {
        remap[p] = q;
        from.remap[k] = name;
      } else if (q > remap[p]) {
        refused.push(`${name}: remap ${p} -> ${q} above ${remap[p]}`);
      }
    }
    if (l.defaultPriority !== undefined) {
      defaultPriority = l.defaultPriority;
      from.defaultPriority = name;
    }
    if (l.rules !== undefined) {
      rules = l.rules.map(compileRule);
      from.rules = name;
    }
  }
  return { policy: capped(ceiling, remap, defaultPriority, rules), from, refused };
}

/** True when two compiled policies act the same on every packet. */
export function samePolicy(a: DatapathPolicy, b: DatapathPolicy): boolean {
  return a.maxPriority === b.maxPriority && a.defaultPriority === b.defaultPriority &&
    a.remap.every((v, i) => v === b.remap[i]) && a.rules.length === b.rules.length &&
    a.rules.every((r, i) => formatRule(r) === formatRule(b.rules[i]));
}

/** A compact description for logs and status. */
export function describePolicy(
  p: DatapathPolicy,
): Record<string, string | number | string[] | Record<string, number>> {
  const remap: Record<string, number> = {};
  p.remap.forEach((q, i) => {
    if (q !== Math.min(i, p.maxPriority)) remap[i] = q;
  });
  return {
    maxPriority: p.maxPriority === PRIORITY_MAX ? "none" : p.maxPriority,
    ...(Object.keys(remap).length ? { remap } : {}),
    ...(p.defaultPriority ? { defaultPriority: p.defaultPriority } : {}),
    ...(p.rules.length ? { rules: p.rules.map(formatRule) } : {}),
  };
}
