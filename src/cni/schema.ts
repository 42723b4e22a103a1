/**
 * Reference zod schemas for what `tsnproxy cni` reads: the tsnproxy entry of a conflist and
 * GC's valid-attachments list. The types the plugin uses come from here (z.infer), but the
 * ADD/DEL path never imports this module at run time (zod is too slow to load there): it
 * validates with the hand-written mirror in ./config.ts, and a unit test proves the two
 * agree. doctor, tests and anything off the hot path use these directly.
 */
import * as z from "zod/mini";
import { podPolicySchema } from "../config/policy.ts";
import { ATTACH_MODES, IFNAME, LOG_LEVELS, RESTORE_AT, withoutReserved } from "./config.ts";

const absolutePath = z.string().check(
  z.startsWith("/", { error: "expected an absolute path" }),
  z.refine((s) => !s.includes("\0"), { error: "expected an absolute path" }),
);
const object = z.record(z.string(), z.unknown());

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
  // tsnproxy's own fields; defaults in config.ts PLUGIN_DEFAULTS.
  tsnInterface: z.optional(z.string().check(z.regex(IFNAME, { error: "not an interface name" }))),
  restoreAt: z.optional(z.enum(RESTORE_AT)),
  bpffs: z.optional(absolutePath),
  attachMode: z.optional(z.enum(ATTACH_MODES)),
  policy: z.optional(podPolicySchema),
  logLevel: z.optional(z.enum(LOG_LEVELS)),
  logFile: z.optional(absolutePath),
  agentSocket: z.optional(absolutePath),
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
