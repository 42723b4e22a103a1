/**
 * Where a pod's policy layers come from on a CNI call, besides the node's (the datapath's
 * tsnp_config) and the entry's own `policy` (src/cni/config.ts):
 *
 *   annotations    runtimeConfig["io.kubernetes.cri.pod-annotations"]: containerd's CRI
 *                  plugin passes every pod annotation there when the entry declares the
 *                  capability (the node's admin opts in): tsnproxy.io/max-priority "5",
 *                  tsnproxy.io/priority-remap "7:3,6:3", tsnproxy.io/default-priority "2",
 *                  tsnproxy.io/priority-rules "udp:319-320=7,@10.0.0.0/8=2"
 *   runtimeConfig  runtimeConfig.tsnproxy, the object form (a runtime that declares the
 *                  "tsnproxy" capability)
 *   cniArgs        CNI_ARGS TSNPROXY_MAX_PRIORITY, TSNPROXY_PRIORITY_REMAP,
 *                  TSNPROXY_DEFAULT_PRIORITY, TSNPROXY_PRIORITY_RULES
 *
 * All three are the pod's (its author writes annotations; whoever runs the plugin writes the
 * rest): src/policy/resolve.ts lets them only lower what the node allows.
 */
import { CniCode, type CniCodeValue } from "../errors.ts";
import {
  ANNOTATION_DEFAULT_PRIORITY,
  ANNOTATION_MAX_PRIORITY,
  ANNOTATION_PRIORITY_REMAP,
  ANNOTATION_PRIORITY_RULES,
  CNI_ARG_DEFAULT_PRIORITY,
  CNI_ARG_MAX_PRIORITY,
  CNI_ARG_PRIORITY_REMAP,
  CNI_ARG_PRIORITY_RULES,
  POD_ANNOTATIONS_CAPABILITY,
  type PodPolicy,
  RUNTIME_CONFIG_KEY,
} from "./types.ts";
import { parsePriority, parseRemapString, parseRulesString, validatePolicy } from "./validate.ts";

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

interface StringKeys {
  max: string;
  remap: string;
  defaultPriority: string;
  rules: string;
}

/** A layer from string values (annotations, CNI_ARGS); undefined when none is set. */
function fromStrings(
  get: (key: string) => unknown,
  keys: StringKeys,
  where: string,
  code: CniCodeValue,
): PodPolicy | undefined {
  const p: PodPolicy = {};
  const str = (k: string) => {
    const v = get(k);
    return typeof v === "string" ? v : undefined;
  };
  const max = str(keys.max), remap = str(keys.remap);
  const def = str(keys.defaultPriority), rules = str(keys.rules);
  if (max !== undefined) p.maxPriority = parsePriority(max, `${where} ${keys.max}`, code);
  if (remap !== undefined) p.remap = parseRemapString(remap, `${where} ${keys.remap}`, code);
  if (def !== undefined) {
    p.defaultPriority = parsePriority(def, `${where} ${keys.defaultPriority}`, code);
  }
  if (rules !== undefined) p.rules = parseRulesString(rules, `${where} ${keys.rules}`, code);
  return Object.keys(p).length ? p : undefined;
}

/** The annotation and runtimeConfig layers of a CNI config's `runtimeConfig`. */
export function layersFromRuntimeConfig(
  runtimeConfig: unknown,
): { annotations?: PodPolicy; runtimeConfig?: PodPolicy } {
  const out: { annotations?: PodPolicy; runtimeConfig?: PodPolicy } = {};
  if (!isRecord(runtimeConfig)) return out;
  const ann = runtimeConfig[POD_ANNOTATIONS_CAPABILITY];
  if (isRecord(ann)) {
    out.annotations = fromStrings(
      (k) => ann[k],
      {
        max: ANNOTATION_MAX_PRIORITY,
        remap: ANNOTATION_PRIORITY_REMAP,
        defaultPriority: ANNOTATION_DEFAULT_PRIORITY,
        rules: ANNOTATION_PRIORITY_RULES,
      },
      "annotation",
      CniCode.InvalidNetworkConfig,
    );
  }
  const own = runtimeConfig[RUNTIME_CONFIG_KEY];
  if (own !== undefined) {
    out.runtimeConfig = validatePolicy(own, `runtimeConfig.${RUNTIME_CONFIG_KEY}`);
  }
  return out;
}

/** The CNI_ARGS layer, from CNI_ARGS as the protocol layer split it. */
export function layerFromCniArgs(args: ReadonlyMap<string, string>): PodPolicy | undefined {
  return fromStrings(
    (k) => args.get(k),
    {
      max: CNI_ARG_MAX_PRIORITY,
      remap: CNI_ARG_PRIORITY_REMAP,
      defaultPriority: CNI_ARG_DEFAULT_PRIORITY,
      rules: CNI_ARG_PRIORITY_RULES,
    },
    "CNI_ARGS",
    CniCode.InvalidEnvironment,
  );
}
