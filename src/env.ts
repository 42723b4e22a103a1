/**
 * Every environment variable the tsnproxy program reads, with what it accepts: the one place
 * they are validated for the CLI (src/cli.ts checks them before any command runs; a bad value
 * is a usage error, exit 2) and the list docs/cli.md documents (tests/cli checks both agree).
 *
 * The modules that read them (log.ts, bpf/features.ts, bpf/libbpf_log.ts, ffi/open.ts,
 * cni/entry.ts) stay free of this one: most sit on the CNI path, where a bad value must never
 * turn into anything but a CNI Result on stdout, so there they fall back to the default (the
 * plugin logs a warning for TSNPROXY_LOG_LEVEL).
 */
import { UsageError } from "./errors.ts";
import { ATTACH_MODES } from "./options.ts";
import { LOG_LEVEL_ENV, LOG_LEVELS, parseLogLevel } from "./log.ts";
import { AGENT_TIMEOUT_ENV, parseAgentTimeout } from "./cni/handoff.ts";

export interface EnvVar {
  name: string;
  /** The accepted values, for humans. */
  values: string;
  meaning: string;
  /** undefined: every value is accepted. */
  accepts?: (value: string) => boolean;
}

const oneOf = (...values: string[]) => (v: string) => values.includes(v);

export const ENV_VARS: readonly EnvVar[] = [
  {
    name: LOG_LEVEL_ENV,
    values: `${LOG_LEVELS.join(", ")} (any case)`,
    meaning: "the log level (default info); `--log-level` beats it; for the CNI plugin it beats " +
      "the entry's logLevel",
    accepts: (v) => parseLogLevel(v) !== undefined,
  },
  {
    name: "TSNPROXY_ATTACH_MODE",
    values: ATTACH_MODES.join(", "),
    meaning: "the tc API where the node config's attachMode is auto (tests and benchmarks)",
    accepts: oneOf(...ATTACH_MODES),
  },
  {
    name: "TSNPROXY_LIBBPF",
    values: "a file name or path dlopen accepts",
    meaning: "load libbpf from here instead of libbpf.so.1",
  },
  {
    name: "TSNPROXY_LIBMNL",
    values: "a file name or path dlopen accepts",
    meaning: "load libmnl from here instead of libmnl.so.0",
  },
  {
    name: "TSNPROXY_LIBC",
    values: "a file name or path dlopen accepts",
    meaning: "load libc from here instead of libc.so.6",
  },
  {
    name: "TSNPROXY_LIBBPF_DEBUG",
    values: "1",
    meaning: "keep libbpf's debug messages (logged at debug level)",
    accepts: oneOf("1"),
  },
  {
    name: "TSNPROXY_CNI_BUNDLE",
    values: "0, 1",
    meaning: "0: the CNI plugin runs its modules instead of build/cni.js (stack traces name " +
      "the sources); 1 or unset: the bundle while it is fresh",
    accepts: oneOf("0", "1"),
  },
  {
    name: AGENT_TIMEOUT_ENV,
    values: "a whole number of milliseconds, 1 to 999999999",
    meaning: "the CNI plugin: how long the agent named by agentSocket has to be ready to run a " +
      "verb before the plugin runs it itself (default 10000)",
    accepts: (v) => parseAgentTimeout(v) !== undefined,
  },
  {
    name: "NO_COLOR",
    values: "any non-empty value",
    meaning: "no ANSI colors in doctor's and status's output (https://no-color.org)",
  },
];

/**
 * Throws a UsageError naming the first variable set to a value it does not accept (an empty
 * value counts as unset, as it does where they are read).
 */
export function checkEnvironment(
  getEnv: (k: string) => string | undefined = (k) => Deno.env.get(k),
): void {
  for (const v of ENV_VARS) {
    const value = getEnv(v.name);
    if (value === undefined || value === "" || !v.accepts || v.accepts(value)) continue;
    throw new UsageError(
      `environment variable ${v.name} has the invalid value '${value}': expected ${v.values}`,
      `unset ${v.name} or set it to one of: ${v.values}`,
    );
  }
}
