/**
 * The tsnproxy entry of a conflist, as the plugin receives it on stdin, validated WITHOUT
 * zod: this runs on every pod ADD/DEL, and importing zod costs more than the whole rest of
 * the plugin. The zod schema in ./schema.ts is the reference (its types are used here,
 * erased at run time); tests/cni/config_equivalence_test.ts proves both accept and reject
 * the same inputs and produce the same values. The policy has one validator for both
 * (src/policy/validate.ts).
 *
 * Entry fields (defaults in PLUGIN_DEFAULTS, ./entry_fields.ts):
 *
 *   type          "tsnproxy" (any non-empty binary name)           required
 *   tsnInterface  the node's TSN NIC; absent = node default          (node config / agent)
 *   restoreAt     "tsn-egress" | "host-veth-ingress"               "tsn-egress"
 *   bpffs         pin root under /sys/fs/bpf/                      "/sys/fs/bpf/tsnproxy"
 *   attachMode    "auto" | "tcx" | "clsact"                        "auto"
 *   policy        a policy layer (src/policy): it can only lower   none (node policy applies)
 *                 what the node's allows
 *   logLevel      "debug" | "info" | "warn" | "error"              "info"
 *   logFile       a file under /var/log/tsnproxy/, JSON lines      none (no log)
 *   agentSocket   the node agent's CNI socket, under /run/tsnproxy/ none (every verb in-process)
 *
 * Paths are confined to the node's own directories (src/config/paths.ts): whoever can write
 * an entry is an input. Standard fields: cniVersion, cniVersions, name, prevResult,
 * runtimeConfig, capabilities, args, and any key starting with "cni.dev/" (reserved for the
 * runtime). Anything else is rejected with code 7, naming the field and the valid ones.
 */
import { CniCode, ConfigError } from "../errors.ts";
import { normalizePolicy, policyProblems } from "../policy/validate.ts";
import { type ConfinedPath, pathProblem } from "../config/paths.ts";
import type { PluginEntry } from "./schema.ts";
import {
  ATTACH_MODES,
  IFNAME,
  LOG_LEVELS,
  OWN_FIELDS,
  PLUGIN_DEFAULTS,
  RESTORE_AT,
  STANDARD_FIELDS,
  withoutReserved,
} from "./entry_fields.ts";

export { ATTACH_MODES, LOG_LEVELS, PLUGIN_DEFAULTS, RESTORE_AT };

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

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

const show = (v: unknown) => JSON.stringify(v) ?? String(v);

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

function confined(v: unknown, field: ConfinedPath, out: string[]): void {
  const p = pathProblem(field, v);
  if (p) out.push(`${field}: ${p}`);
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
  if (e.bpffs !== undefined) confined(e.bpffs, "bpffs", problems);
  if (e.attachMode !== undefined) oneOf(e.attachMode, ATTACH_MODES, "attachMode", problems);
  if (e.policy !== undefined) problems.push(...policyProblems(e.policy, "policy"));
  if (e.logLevel !== undefined) oneOf(e.logLevel, LOG_LEVELS, "logLevel", problems);
  if (e.logFile !== undefined) confined(e.logFile, "logFile", problems);
  if (e.agentSocket !== undefined) confined(e.agentSocket, "agentSocket", problems);
  if (problems.length) {
    throw new ConfigError(
      `invalid tsnproxy entry: ${problems.join("; ")}`,
      "fix the tsnproxy entry of the conflist (see src/cni/README.md for the fields and defaults)",
      CniCode.InvalidNetworkConfig,
    );
  }
  const entry = e as unknown as PluginEntry;
  if (entry.policy) entry.policy = normalizePolicy(entry.policy); // checked above
  return withDefaults(entry);
}
