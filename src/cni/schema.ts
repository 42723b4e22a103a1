/**
 * Reference zod schemas for what `tsnproxy cni` reads: the tsnproxy entry of a conflist and
 * GC's valid-attachments list. The types the plugin uses come from here (z.infer), but the
 * ADD/DEL path never imports this module at run time (zod is too slow to load there): it
 * validates with the hand-written mirror in ./config.ts, and a unit test proves the two
 * agree. The policy and the confined paths have one validator each, which both use.
 */
import * as z from "zod/mini";
import type { PodPolicy } from "../policy/types.ts";
import { normalizePolicy, policyProblems } from "../policy/validate.ts";
import { type ConfinedPath, pathProblem } from "../config/paths.ts";
import { ATTACH_MODES, IFNAME, LOG_LEVELS, RESTORE_AT, withoutReserved } from "./entry_fields.ts";

const confined = (kind: ConfinedPath) =>
  z.string().check(
    z.superRefine((s, ctx) => {
      const p = pathProblem(kind, s);
      if (p) ctx.issues.push({ code: "custom", message: p, input: s });
    }),
  );
const object = z.record(z.string(), z.unknown());

const policy = z.pipe(
  z.unknown().check(
    z.superRefine((v, ctx) => {
      for (const p of policyProblems(v, "policy")) {
        ctx.issues.push({ code: "custom", message: p, input: v });
      }
    }),
  ),
  z.transform((v): PodPolicy => normalizePolicy(v)),
);

export const pluginEntrySchema = z.strictObject({
  // Standard fields (the runtime fills in cniVersion, name, prevResult, runtimeConfig).
  cniVersion: z.optional(z.string()),
  cniVersions: z.optional(z.array(z.string())),
  name: z.optional(z.string()),
  type: z.string().check(z.minLength(1)),
  prevResult: z.optional(object),
  runtimeConfig: z.optional(object),
  capabilities: z.optional(z.record(z.string(), z.boolean())),
  args: z.optional(object),
  // tsnproxy's own fields; defaults in entry_fields.ts PLUGIN_DEFAULTS.
  tsnInterface: z.optional(z.string().check(z.regex(IFNAME, { error: "not an interface name" }))),
  restoreAt: z.optional(z.enum(RESTORE_AT)),
  bpffs: z.optional(confined("bpffs")),
  attachMode: z.optional(z.enum(ATTACH_MODES)),
  policy: z.optional(policy),
  logLevel: z.optional(z.enum(LOG_LEVELS)),
  logFile: z.optional(confined("logFile")),
  agentSocket: z.optional(confined("agentSocket")),
});
export type PluginEntry = z.infer<typeof pluginEntrySchema>;

/** Validates an entry with zod (keys starting with "cni.dev/" are the runtime's: ignored). */
export function parsePluginEntryZod(input: unknown) {
  const value = typeof input === "object" && input !== null && !Array.isArray(input)
    ? withoutReserved(input as Record<string, unknown>)
    : input;
  return z.safeParse(pluginEntrySchema, value);
}

export const gcAttachmentSchema = z.looseObject({
  containerID: z.string().check(z.minLength(1)),
  ifname: z.string(),
});
export const validAttachmentsSchema = z.array(gcAttachmentSchema);
export type GcAttachment = z.infer<typeof gcAttachmentSchema>;
