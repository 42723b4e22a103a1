/**
 * `tsnproxy cni`: the CNI plugin entry (spec 1.1.0; supports 0.3.0 to 1.1.0). Reads the
 * CNI_* environment and the plugin config on stdin, writes a Result or an error Result on
 * stdout (and nothing else: logs go to the entry's logFile), exits non-zero on error.
 *
 * Start-up is on every pod's critical path: this module and its static imports are small
 * and zod-free; the datapath code is imported only by the verbs that need it.
 */
import { asTsnproxyError, CniCode, TsnproxyError } from "../errors.ts";
import { configureLog, log, LOG_LEVEL_ENV, type LogLevel, logLevelFromEnv } from "../log.ts";
import { parsePluginEntry, PLUGIN_DEFAULTS, type PluginConfig, withDefaults } from "./config.ts";
import {
  type CniEnv,
  type CniVersion,
  compareVersions,
  convertResult,
  errorResult,
  isObject,
  isSupported,
  type JsonObject,
  LATEST_VERSION,
  parseSemver,
  readEnv,
  selectVersion,
  SUPPORTED_VERSIONS,
  validateResult,
} from "./protocol.ts";
import { ConfigError } from "../errors.ts";
import type { CniEntry } from "./entry.ts";
import { handOff, type PluginInput, writeJsonLine } from "./handoff.ts";
import { pathProblem } from "../config/paths.ts";

function decodeFailure(msg: string): ConfigError {
  return new ConfigError(
    msg,
    "the runtime must pass the plugin's network configuration as JSON on stdin",
    CniCode.DecodeFailure,
  );
}

function needsAtLeast(version: CniVersion, min: string, verb: string): void {
  if (compareVersions(version, min) < 0) {
    throw new ConfigError(
      `config version ${version} does not allow ${verb} (it needs ${min} or later)`,
      `set the conflist's cniVersion to ${min} or later (or add it to "cniVersions")`,
      CniCode.IncompatibleVersion,
    );
  }
}

/**
 * DEL must clean up even when the entry was edited into something invalid since ADD. Its pin
 * root stays confined like a valid entry's: DEL deletes pin-shaped files under it.
 */
function lenientConfig(raw: JsonObject, e: TsnproxyError): PluginConfig {
  const bpffs = pathProblem("bpffs", raw.bpffs) === undefined
    ? raw.bpffs as string
    : PLUGIN_DEFAULTS.bpffs;
  log("warn", "DEL with an invalid tsnproxy entry: cleaning up anyway", {
    error: e.message,
    bpffs,
  });
  return withDefaults({ type: String(raw.type ?? "tsnproxy"), bpffs });
}

/**
 * The entry's logFile and level; TSNPROXY_LOG_LEVEL beats the entry's logLevel. A value of it
 * that names no level is ignored with a warning in the log: the runtime reads only the Result,
 * and a typo in the node's environment must not fail pod creation.
 */
function configureLogging(config: PluginConfig): void {
  const env = logLevelFromEnv();
  const level = env.level ?? config.logLevel as LogLevel;
  configureLog({ stderr: false, file: config.logFile, ...(level ? { level } : {}) });
  if (env.rejected !== undefined) {
    log("warn", `${LOG_LEVEL_ENV} ignored: it names no log level`, {
      value: env.rejected,
      hint: "set it to debug, info, warn or error (any case), or unset it",
    });
  }
}

/** What one invocation answers: the exit code and the JSON for stdout (none for DEL etc.). */
export interface CniOutcome {
  code: number;
  stdout?: unknown;
}

export interface HandleOptions {
  /** Which form of this code runs (src/cni/entry.ts), reported in the debug log. */
  entry?: Pick<CniEntry, "kind" | "reason">;
  /**
   * Set when the node agent runs the verb for a plugin process (src/agent/cni_server.ts): the
   * agent's log configuration stays.
   */
  inAgent?: boolean;
  /** Why the agent the entry names did not run this verb (src/cni/handoff.ts), to be logged. */
  notDelegated?: PluginInput["notDelegated"];
}

/**
 * One CNI invocation: the configuration as read from stdin and the environment in, the
 * outcome out. Never throws: failures become the spec's error Result.
 */
export async function handleCni(
  text: string,
  getEnv: (k: string) => string | undefined,
  opts: HandleOptions = {},
): Promise<CniOutcome> {
  const started = performance.now();
  let version: string = LATEST_VERSION;
  let env: CniEnv | undefined;
  const here = opts.inAgent ? "agent" : "process";
  try {
    let raw: unknown;
    let decodeError: string | undefined;
    try {
      raw = text.trim() === "" ? undefined : JSON.parse(text);
    } catch (e) {
      decodeError = `the network configuration is not valid JSON: ${(e as Error).message}`;
    }
    // Errors are reported in the caller's version whenever it is one we speak.
    if (isObject(raw) && isSupported(raw.cniVersion)) version = raw.cniVersion;

    env = readEnv(getEnv);
    if (env.command === "VERSION") {
      const asked = isObject(raw) && typeof raw.cniVersion === "string" &&
          parseSemver(raw.cniVersion)
        ? raw.cniVersion
        : LATEST_VERSION;
      return { code: 0, stdout: { cniVersion: asked, supportedVersions: [...SUPPORTED_VERSIONS] } };
    }
    if (decodeError) throw decodeFailure(decodeError);
    if (raw === undefined) throw decodeFailure("no network configuration on stdin");
    if (!isObject(raw)) throw decodeFailure("the network configuration is not a JSON object");

    const selected = selectVersion(raw.cniVersion, raw.cniVersions);
    version = selected;
    let config: PluginConfig;
    try {
      config = parsePluginEntry(raw);
    } catch (e) {
      const err = asTsnproxyError(e);
      if (env.command !== "DEL" || err.code !== CniCode.InvalidNetworkConfig) throw err;
      config = lenientConfig(raw, err);
    }
    if (!opts.inAgent) configureLogging(config);

    let prevResult: JsonObject | undefined;
    if (raw.prevResult !== undefined) {
      try {
        prevResult = convertResult(validateResult(raw.prevResult), selected);
      } catch (e) {
        if (env.command !== "DEL") throw e;
        log("warn", "DEL with an unusable prevResult: ignored", { error: String(e) });
      }
    }

    if (opts.notDelegated) {
      // No agent yet (install wrote the entry before the agent started) is routine.
      log(opts.notDelegated.cause === "absent" ? "debug" : "warn", "running in-process", {
        command: env.command,
        containerId: env.containerId,
        reason: opts.notDelegated.reason,
      });
    }

    let stdout: unknown;
    const verbs = () => import("./verbs.ts");
    switch (env.command) {
      case "ADD": {
        if (!prevResult) {
          const { cmdAdd } = await verbs();
          await cmdAdd({ env, config, inAgent: opts.inAgent }); // the "chained plugin" error
          break;
        }
        const { cmdAdd } = await verbs();
        await cmdAdd({ env, config, prevResult, inAgent: opts.inAgent });
        stdout = prevResult;
        break;
      }
      case "DEL": {
        const { cmdDel } = await verbs();
        await cmdDel({ env, config, prevResult, inAgent: opts.inAgent });
        break;
      }
      case "CHECK": {
        needsAtLeast(selected, "0.4.0", "CHECK");
        const { cmdCheck } = await verbs();
        await cmdCheck({ env, config, prevResult, inAgent: opts.inAgent });
        break;
      }
      case "STATUS": {
        needsAtLeast(selected, "1.1.0", "STATUS");
        const { cmdStatus } = await verbs();
        cmdStatus(config);
        break;
      }
      case "GC": {
        needsAtLeast(selected, "1.1.0", "GC");
        const valid = validAttachments(raw["cni.dev/valid-attachments"]);
        const { cmdGc } = await verbs();
        await cmdGc(config, valid, opts.inAgent);
        break;
      }
    }
    log("debug", "done", {
      command: env.command,
      containerId: env.containerId,
      ms: Math.round((performance.now() - started) * 100) / 100,
      entry: opts.entry?.kind,
      ...(opts.entry?.reason ? { modulesBecause: opts.entry.reason } : {}),
      via: here,
    });
    return { code: 0, stdout };
  } catch (e) {
    const err = asTsnproxyError(e);
    log("error", err.message, {
      command: env?.command,
      containerId: env?.containerId,
      ifname: env?.ifname,
      code: err.code,
      hint: err.hint,
      via: here,
    });
    return { code: 1, stdout: errorResult(err, version) };
  }
}

/**
 * The plugin process: stdin and the environment in, the Result on stdout, the exit code.
 * `input` is what main.ts's hand-off left when the agent did not serve the verb; without it
 * the hand-off happens here.
 */
export async function runCni(
  entry?: Pick<CniEntry, "kind" | "reason">,
  input?: PluginInput,
): Promise<number> {
  configureLog({ stderr: false, cmd: "cni" });
  if (!input) {
    const h = await handOff((k) => Deno.env.get(k));
    if ("served" in h) return h.served;
    input = h;
  }
  if (input.agentLost !== undefined) {
    // The agent may still run the verb: running it here too could race with it.
    const err = new TsnproxyError(
      input.agentLost,
      "the runtime retries the call; see the agent's log for the verb it was running",
      CniCode.TryAgainLater,
    );
    log("error", err.message, { code: err.code, hint: err.hint, via: "agent" });
    writeJsonLine(errorResult(err, versionOf(input.text)));
    return 1;
  }
  if (input.text === undefined) {
    const err = new ConfigError(
      input.unreadable ?? "cannot read the network configuration on stdin",
      "the runtime must pass the plugin's entry of the conflist on stdin",
      CniCode.IoFailure,
    );
    log("error", err.message, { code: err.code, hint: err.hint });
    writeJsonLine(errorResult(err, LATEST_VERSION));
    return 1;
  }
  const out = await handleCni(input.text, (k) => Deno.env.get(k), {
    entry,
    notDelegated: input.notDelegated,
  });
  if (out.stdout !== undefined) writeJsonLine(out.stdout);
  return out.code;
}

/** The configuration's cniVersion when it is one we speak, else the latest. */
function versionOf(text: string | undefined): string {
  try {
    const raw = JSON.parse(text ?? "");
    if (isObject(raw) && isSupported(raw.cniVersion)) return raw.cniVersion;
  } catch {
    // not JSON: the latest version
  }
  return LATEST_VERSION;
}

function validAttachments(v: unknown): Array<{ containerID: string; ifname: string }> {
  const bad = () =>
    new ConfigError(
      `GC needs "cni.dev/valid-attachments": a list of {"containerID", "ifname"}, got ${
        JSON.stringify(v)
      }`,
      "the runtime fills this in for GC (libcni 1.2+)",
      CniCode.InvalidNetworkConfig,
    );
  if (!Array.isArray(v)) throw bad();
  return v.map((a) => {
    if (!isObject(a) || typeof a.containerID !== "string" || a.containerID === "") throw bad();
    return { containerID: a.containerID, ifname: typeof a.ifname === "string" ? a.ifname : "" };
  });
}
