/**
 * The tsnproxy entry of a conflist, as the plugin receives it on stdin, validated WITHOUT
 * zod: this runs on every pod ADD/DEL, and importing zod costs more than the whole rest of
 * the plugin. The zod schema in ./schema.ts is the reference (its types are used here,
 * erased at run time); tests/cni/config_equivalence_test.ts proves both accept and reject
 * the same inputs and produce the same values.
 *
 * Entry fields (defaults in PLUGIN_DEFAULTS):
 *
 *   type          "tsnproxy" (any non-empty binary name)           required
 *   tsnInterface  the node's TSN NIC; absent = node default          (node config / agent)
 *   restoreAt     "tsn-egress" | "host-veth-ingress"               "tsn-egress"
 *   bpffs         absolute pin root                                "/sys/fs/bpf/tsnproxy"
 *   attachMode    "auto" | "tcx" | "clsact"                        "auto" (pod: clsact; host: tcx if present)
 *   policy        {maxPriority?, remap?} (src/config/policy.ts)    none (node default applies)
 *   logLevel      "debug" | "info" | "warn" | "error"              "info"
 *   logFile       absolute path, JSON lines appended               none (no log)
 *   agentSocket   absolute path of the node agent's CNI socket     none (every verb in-process)
 *                 (src/cni/delegate.ts; the agent's node config cni.agentSocket writes it)
 *
 * Standard fields: cniVersion, cniVersions, name, prevResult, runtimeConfig, capabilities,
 * args, and any key starting with "cni.dev/" (reserved for the runtime). Anything else is
 * rejected with code 7, naming the field and the valid ones.
 */
import { CniCode, ConfigError } from "../errors.ts";
import type { PodPolicy } from "../config/policy.ts";
import type { PluginEntry } from "./schema.ts";

export const RESTORE_AT = ["tsn-egress", "host-veth-ingress"] as const;
export const ATTACH_MODES = ["auto", "tcx", "clsact"] as const;
export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;

export const PLUGIN_DEFAULTS = {
  restoreAt: "tsn-egress",
  bpffs: "/sys/fs/bpf/tsnproxy",
  attachMode: "auto",
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

export const U32_MAX = 0xffffffff;
const REMAP_KEY = /^(?:[0-9]|1[0-5])$/;
/** Same rule as protocol.validIfname (kept here so the schema module can share it). */
export const IFNAME = /^(?!\.{1,2}$)[^/:\s]{1,15}$/;

/** The entry with defaults applied: what the verbs use. */
export interface PluginConfig extends PluginEntry {
  restoreAt: typeof RESTORE_AT[number];
  bpffs: string;
  attachMode: typeof ATTACH_MODES[number];
  logLevel: typeof LOG_LEVELS[number];
}

export function withDefaults(e: PluginEntry): PluginConfig {
  return {
    ...e,
    restoreAt: e.restoreAt ?? PLUGIN_DEFAULTS.restoreAt,
    bpffs: e.bpffs ?? PLUGIN_DEFAULTS.bpffs,
    attachMode: e.attachMode ?? PLUGIN_DEFAULTS.attachMode,
    logLevel: e.logLevel ?? PLUGIN_DEFAULTS.logLevel,
  };
}

/** Entry keys without the runtime's reserved "cni.dev/" keys (both validators do this). */
export function withoutReserved(input: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(input)) if (!k.startsWith(RESERVED_PREFIX)) out[k] = input[k];
  return out;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

const show = (v: unknown) => JSON.stringify(v) ?? String(v);

function priorityProblem(v: unknown): boolean {
  return typeof v !== "number" || !Number.isSafeInteger(v) || v < 0 || v > U32_MAX;
}

/** Problems of a pod policy object, as "path: message"; empty when valid. */
export function policyProblems(input: unknown, where: string): string[] {
  if (!isRecord(input)) return [`${where}: expected an object, got ${show(input)}`];
  const out: string[] = [];
  const unknown = Object.keys(input).filter((k) => k !== "maxPriority" && k !== "remap");
  if (unknown.length) {
    out.push(
      `${where}: unknown key${unknown.length > 1 ? "s" : ""} ${
        unknown.join(", ")
      } (valid: maxPriority, remap)`,
    );
  }
  if ("maxPriority" in input && input.maxPriority !== undefined) {
    if (priorityProblem(input.maxPriority)) {
      out.push(`${where}.maxPriority: expected an integer priority 0..4294967295`);
    }
  }
  if ("remap" in input && input.remap !== undefined) {
    const remap = input.remap;
    if (!isRecord(remap)) out.push(`${where}.remap: expected an object`);
    else {
      for (const [k, v] of Object.entries(remap)) {
        if (!REMAP_KEY.test(k)) {
          out.push(`${where}.remap.${k}: remap keys are the priorities "0" to "15"`);
        }
        if (priorityProblem(v)) {
          out.push(`${where}.remap.${k}: expected an integer priority 0..4294967295`);
        }
      }
    }
  }
  return out;
}

export function validatePolicy(input: unknown, where: string): PodPolicy {
  const problems = policyProblems(input, where);
  if (problems.length) {
    throw new ConfigError(
      problems.join("; "),
      'a policy is {maxPriority?: 0..4294967295, remap?: {"0".."15": priority}}',
      CniCode.InvalidNetworkConfig,
    );
  }
  const p = input as Record<string, unknown>;
  const out: PodPolicy = {};
  if (p.maxPriority !== undefined) out.maxPriority = p.maxPriority as number;
  if (p.remap !== undefined) out.remap = { ...(p.remap as Record<string, number>) };
  return out;
}

function oneOf<T extends string>(
  v: unknown,
  allowed: readonly T[],
  field: string,
  out: string[],
): void {
  if (typeof v !== "string" || !(allowed as readonly string[]).includes(v)) {
    out.push(`${field}: ${show(v)} is not one of ${allowed.map((a) => `"${a}"`).join(", ")}`);
  }
}

function absolutePath(v: unknown, field: string, out: string[]): void {
  if (typeof v !== "string" || !v.startsWith("/") || v.includes("\0")) {
    out.push(`${field}: expected an absolute path, got ${show(v)}`);
  }
}

function objectField(v: unknown, field: string, out: string[]): void {
  if (!isRecord(v)) out.push(`${field}: expected an object, got ${show(v)}`);
}

/** Validates the entry (hand-written mirror of schema.ts's pluginEntrySchema). */
export function parsePluginEntry(input: unknown): PluginConfig {
  if (!isRecord(input)) {
    throw new ConfigError(
      "the network configuration is not a JSON object",
      "pass the plugin's entry of the conflist on stdin",
      CniCode.DecodeFailure,
    );
  }
  const e = withoutReserved(input);
  const problems: string[] = [];
  const known = new Set<string>([...STANDARD_FIELDS, ...OWN_FIELDS]);
  const unknown = Object.keys(e).filter((k) => !known.has(k));
  for (const k of unknown) {
    problems.push(
      `unknown field ${show(k)} in the tsnproxy entry (valid: ${OWN_FIELDS.join(", ")}; ` +
        `standard: ${STANDARD_FIELDS.join(", ")})`,
    );
  }
  if (e.cniVersion !== undefined && typeof e.cniVersion !== "string") {
    problems.push(`cniVersion: expected a string, got ${show(e.cniVersion)}`);
  }
  if (
    e.cniVersions !== undefined &&
    (!Array.isArray(e.cniVersions) || e.cniVersions.some((v) => typeof v !== "string"))
  ) {
    problems.push(`cniVersions: expected a list of strings, got ${show(e.cniVersions)}`);
  }
  if (e.name !== undefined && typeof e.name !== "string") {
    problems.push(`name: expected a string, got ${show(e.name)}`);
  }
  if (typeof e.type !== "string" || e.type === "") {
    problems.push(`type: expected the plugin's name, got ${show(e.type)}`);
  }
  for (const f of ["prevResult", "runtimeConfig", "args"] as const) {
    if (e[f] !== undefined) objectField(e[f], f, problems);
  }
  if (e.capabilities !== undefined) {
    if (
      !isRecord(e.capabilities) || Object.values(e.capabilities).some((v) => typeof v !== "boolean")
    ) {
      problems.push(`capabilities: expected {name: true|false}, got ${show(e.capabilities)}`);
    }
  }
  if (e.tsnInterface !== undefined) {
    if (typeof e.tsnInterface !== "string" || !IFNAME.test(e.tsnInterface)) {
      problems.push(`tsnInterface: ${show(e.tsnInterface)} is not an interface name`);
    }
  }
  if (e.restoreAt !== undefined) oneOf(e.restoreAt, RESTORE_AT, "restoreAt", problems);
  if (e.bpffs !== undefined) absolutePath(e.bpffs, "bpffs", problems);
  if (e.attachMode !== undefined) oneOf(e.attachMode, ATTACH_MODES, "attachMode", problems);
  if (e.policy !== undefined) problems.push(...policyProblems(e.policy, "policy"));
  if (e.logLevel !== undefined) oneOf(e.logLevel, LOG_LEVELS, "logLevel", problems);
  if (e.logFile !== undefined) absolutePath(e.logFile, "logFile", problems);
  if (e.agentSocket !== undefined) absolutePath(e.agentSocket, "agentSocket", problems);
  if (problems.length) {
    throw new ConfigError(
      `invalid tsnproxy entry: ${problems.join("; ")}`,
      "fix the tsnproxy entry of the conflist (see src/cni/README.md for the fields and defaults)",
      CniCode.InvalidNetworkConfig,
    );
  }
  const entry = e as unknown as PluginEntry;
  if (entry.policy) entry.policy = validatePolicy(entry.policy, "policy");
  return withDefaults(entry);
}
