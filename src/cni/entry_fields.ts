/**
 * The tsnproxy entry's field names, values and defaults: shared by the entry's validator
 * (./config.ts) and its zod schema (./schema.ts), which import this leaf and not each other.
 */
import { DEFAULTS } from "../options.ts";

export { ATTACH_MODES, RESTORE_AT } from "../options.ts";
export { LOG_LEVELS } from "../log.ts";

export const PLUGIN_DEFAULTS = {
  restoreAt: DEFAULTS.restoreAt,
  bpffs: DEFAULTS.bpffs,
  attachMode: DEFAULTS.attachMode,
  logLevel: "info",
} as const;

export const STANDARD_FIELDS = [
  "cniVersion",
  "cniVersions",
  "name",
  "type",
  "prevResult",
  "runtimeConfig",
  "capabilities",
  "args",
] as const;
export const OWN_FIELDS = [
  "tsnInterface",
  "restoreAt",
  "bpffs",
  "attachMode",
  "policy",
  "logLevel",
  "logFile",
  "agentSocket",
] as const;
export const RESERVED_PREFIX = "cni.dev/";

/** Linux interface names: 1-15 bytes, no '/', ':' or whitespace, not "." or "..". */
export const IFNAME = /^(?!\.{1,2}$)[^/:\s]{1,15}$/;

/** Entry keys without the runtime's reserved "cni.dev/" keys (both validators do this). */
export function withoutReserved(input: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(input)) if (!k.startsWith(RESERVED_PREFIX)) out[k] = input[k];
  return out;
}
