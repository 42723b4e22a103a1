/**
 * The pod priority policy's zod schema and validator. The rules (precedence, compilation,
 * CNI_ARGS/annotation parsing) are in policy_layers.ts, which the CNI path imports without
 * loading zod; they are re-exported here.
 */
import * as z from "zod/mini";
import { CniCode, type CniCodeValue, ConfigError } from "../errors.ts";
import { policyFromRuntimeConfig as layersFromRuntimeConfig, U32_MAX } from "./policy_layers.ts";

export * from "./policy_layers.ts";

const PRIORITY_MSG = "expected an integer priority 0..4294967295";
const priority = z.int({ error: PRIORITY_MSG }).check(
  z.gte(0, { error: PRIORITY_MSG }),
  z.lte(U32_MAX, { error: PRIORITY_MSG }),
);
const remapKey = z.string().check(
  z.regex(/^(?:[0-9]|1[0-5])$/, { error: 'remap keys are the priorities "0" to "15"' }),
);

export const podPolicySchema = z.strictObject({
  /** Clamp: higher priorities become this value. Absent: no clamp. */
  maxPriority: z.optional(priority),
  /** Explicit per-priority table for 0..15, applied before the clamp. */
  remap: z.optional(z.record(remapKey, priority)),
});
export type PodPolicy = z.infer<typeof podPolicySchema>;

/** Validates a policy object from any source; `where` names it in the error. */
export function parsePodPolicy(input: unknown, where: string, code?: CniCodeValue): PodPolicy {
  const r = z.safeParse(podPolicySchema, input);
  if (r.success) return r.data;
  const problems = r.error.issues.map((i) => {
    const path = i.path.length ? `.${i.path.map(String).join(".")}` : "";
    const msg = i.code === "unrecognized_keys"
      ? `unknown key${i.keys.length > 1 ? "s" : ""} ${
        i.keys.join(", ")
      } (valid: maxPriority, remap)`
      : i.code === "invalid_key"
      ? (i.issues[0]?.message ?? i.message)
      : i.message;
    return `${where}${path}: ${msg}`;
  });
  throw new ConfigError(
    problems.join("; "),
    'a policy is {maxPriority?: 0..4294967295, remap?: {"0".."15": priority}}',
    code ?? CniCode.InvalidNetworkConfig,
  );
}

/** The pod-annotation and runtimeConfig layers, validating runtimeConfig.tsnproxy with zod. */
export function policyFromRuntimeConfig(
  runtimeConfig: unknown,
): { annotations?: PodPolicy; runtimeConfig?: PodPolicy } {
  return layersFromRuntimeConfig(runtimeConfig, (input, where) => parsePodPolicy(input, where));
}
