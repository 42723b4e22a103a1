/**
 * The operator-facing CLI (commander). Imported only off the CNI path; each subcommand
 * imports its implementation when it runs, so `tsnproxy version` and `--help` stay instant.
 *
 * Strict by design (docs/cli.md): every numeric and enum flag is parsed here and refused with
 * a message naming the flag, the value and what is accepted; flags that the node config
 * checks (interface names, paths, addresses) are refused the same way before anything runs
 * (src/config/node.ts); the environment is checked first (src/env.ts). Exit codes are
 * src/exit_codes.ts: 0 ok, 1 failure, 2 usage error, 3 doctor warnings.
 */
import { Command, CommanderError, InvalidArgumentError, Option } from "@commander-js/extra-typings";
import { checkEnvironment, ENV_VARS } from "./env.ts";
import { asTsnproxyError, UsageError } from "./errors.ts";
import { ExitCode } from "./exit_codes.ts";
import {
  configureLog,
  log,
  LOG_LEVEL_ENV,
  LOG_LEVELS,
  type LogLevel,
  logLevelFromEnv,
  parseLogLevel,
} from "./log.ts";
import { ATTACH_MODES, DEFAULTS, RESTORE_AT } from "./options.ts";
import { VERSION } from "./version.ts";

// ---- value parsers: the CLI library refuses a bad value with the flag's name and this text

/** An integer in [min, max]. */
export function integerIn(min: number, max: number): (v: string) => number {
  return (v) => {
    const n = /^\s*-?\d+\s*$/.test(v) ? Number(v) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`expected an integer from ${min} to ${max}`);
    }
    return n;
  };
}

/** A decimal number of seconds in [min, max]. */
export function secondsIn(min: number, max: number): (v: string) => number {
  return (v) => {
    const n = /^\s*\d+(\.\d+)?\s*$/.test(v) ? Number(v) : NaN;
    if (!Number.isFinite(n) || n < min || n > max) {
      throw new InvalidArgumentError(`expected a number of seconds from ${min} to ${max}`);
    }
    return n;
  };
}

function logLevel(v: string): LogLevel {
  const l = parseLogLevel(v);
  if (!l) throw new InvalidArgumentError(`expected one of ${LOG_LEVELS.join(", ")} (any case)`);
  return l;
}

function path(v: string): string {
  if (v.trim() === "") throw new InvalidArgumentError("expected a path");
  return v;
}

// ---- flag groups ---------------------------------------------------------------------------

/**
 * The node config flags every node command takes. None has a default here: undefined means
 * "not given, the node config decides" (src/config/node.ts flagOverrides), so an explicit
 * value beats the file even when it equals the built-in default.
 */
function locationFlags<C extends Command>(cmd: C) {
  return cmd
    .option("--config <path>", "node config YAML (absent file: built-in defaults)", DEFAULTS.config)
    .option("--tsn-interface <name>", "the TSN NIC [config: tsnInterface]")
    .option("--bpffs <dir>", `pin root in a bpf filesystem [config: bpffs, ${DEFAULTS.bpffs}]`)
    .option(
      "--cni-conf-dir <dir>",
      `CNI network config directory [config: cni.confDir, ${DEFAULTS.cniConfDir}]`,
    )
    .option(
      "--cni-bin-dir <dir>",
      `CNI plugin binary directory [config: cni.binDir, ${DEFAULTS.cniBinDir}]`,
    );
}

const restoreAtOption = () =>
  new Option(
    "--restore-at <where>",
    `where the restorer runs [config: restoreAt, ${DEFAULTS.restoreAt}]`,
  ).choices(RESTORE_AT);
const attachModeOption = () =>
  new Option("--attach-mode <mode>", `tc attach API [config: attachMode, ${DEFAULTS.attachMode}]`)
    .choices(ATTACH_MODES);
const networkOption = () =>
  new Option("--network <name>", "the CNI network (conflist) by name [config: cni.network]");
const inPlaceOption = () =>
  new Option(
    "--in-place",
    "rewrite conflists in place, for runtimes that ignore renames [config: cni.inPlace, on]",
  );
const noInPlaceOption = () =>
  new Option("--no-in-place", "write conflists by rename instead [config: cni.inPlace: false]");
const stateDirOption = () =>
  new Option(
    "--state-dir <dir>",
    `where install records what it created (uninstall reads it) [${DEFAULTS.stateDir}]`,
  ).argParser(path);
const jsonOption = () =>
  new Option("--json", "print the result as one JSON document").conflicts("output");
const outputOption = () =>
  new Option("-o, --output <format>", "output format (-o json is --json)").choices(
    ["text", "json"] as const,
  );
const dryRunOption = () => new Option("--dry-run", "print the plan and change nothing");

/** --json or -o json. */
function wantsJson(o: { json?: true; output?: "text" | "json" }): boolean {
  return o.json === true || o.output === "json";
}

const EXIT_HELP = `
Exit codes: 0 success, 1 failure, 2 usage error (nothing was changed), 3 doctor: warnings only.`;

function envHelp(): string {
  const width = Math.max(...ENV_VARS.map((v) => v.name.length));
  return "\nEnvironment:\n" +
    ENV_VARS.map((v) => `  ${v.name.padEnd(width)}  ${v.values}`).join("\n") +
    "\nSee docs/cli.md for what each one does.";
}

const CNI_HELP = `
The container runtime executes the plugin with CNI_COMMAND (ADD, DEL, CHECK, STATUS, GC,
VERSION), CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS and CNI_PATH set and the plugin's
entry of the conflist on stdin; the plugin prints only the CNI Result (or error Result) on
stdout and exits 0 or 1 (CNI spec 1.1.0; versions 0.3.0 to 1.1.0). It logs to the entry's
logFile, never to stdout. Runtimes call the binary without arguments; \`tsnproxy cni\` is the
same for a human. Example:

  echo '{"cniVersion":"1.1.0"}' | CNI_COMMAND=VERSION tsnproxy cni`;

/** Builds the program; `run` collects the exit code the action decides. */
function buildProgram(run: { code: number }) {
  const program = new Command()
    .name("tsnproxy")
    .description(
      "Carries TSN socket metadata (SO_PRIORITY, SO_TXTIME) from Kubernetes pods to the " +
        "node's TSN NIC with eBPF.",
    )
    .version(VERSION, "-V, --version")
    .addOption(
      new Option(
        "--log-level <level>",
        `log level: ${LOG_LEVELS.join(", ")} (default: ${LOG_LEVEL_ENV}, else info)`,
      ).argParser(logLevel),
    )
    .showHelpAfterError("(run 'tsnproxy --help' or 'tsnproxy <command> --help' for usage)")
    .configureHelp({ showGlobalOptions: true })
    .exitOverride()
    .addHelpText("after", EXIT_HELP + "\n" + envHelp());

  // Before any command runs (never before --help): the environment, then the log.
  program.hook("preAction", (_self, action) => {
    if (action.name() === "cni") return; // the plugin answers CNI Results, never usage errors
    try {
      checkEnvironment();
    } catch (e) {
      action.error(`error: ${(e as UsageError).message}`, {
        exitCode: ExitCode.Usage,
        code: "tsnproxy.environment",
      });
    }
    const level = program.opts().logLevel ?? logLevelFromEnv().level ?? "info";
    configureLog({ level, stderr: true, cmd: action.name() });
  });

  program.command("cni")
    .description("run as a CNI plugin (the container runtime does this)")
    .addHelpText("after", CNI_HELP)
    .action(async () => {
      const { runCni } = await import("./cni/main.ts");
      run.code = await runCni();
    });

  locationFlags(program.command("install"))
    .description(
      "set this node up: pins the BPF datapath, attaches the restorer, injects the CNI entry; " +
        "prints the plan first",
    )
    .addOption(restoreAtOption())
    .addOption(attachModeOption())
    .addOption(networkOption())
    .addOption(inPlaceOption())
    .addOption(noInPlaceOption())
    .addOption(stateDirOption())
    .addOption(dryRunOption())
    .addOption(jsonOption())
    .addOption(outputOption())
    .action(async (o) => {
      const { runInstall } = await import("./install/command.ts");
      run.code = await runInstall({ ...o, dryRun: o.dryRun === true, json: wantsJson(o) });
    });

  locationFlags(program.command("uninstall"))
    .description(
      "undo install: CNI entry, attachments, pins, binary (and the qdisc with --remove-qdisc)",
    )
    .addOption(networkOption())
    .addOption(inPlaceOption())
    .addOption(noInPlaceOption())
    .addOption(stateDirOption())
    .option("--remove-qdisc", "also remove the root qdisc install created")
    .addOption(dryRunOption())
    .addOption(jsonOption())
    .addOption(outputOption())
    .action(async (o) => {
      const { runUninstall } = await import("./install/uninstall.ts");
      run.code = await runUninstall({
        ...o,
        dryRun: o.dryRun === true,
        removeQdisc: o.removeQdisc === true,
        json: wantsJson(o),
      });
    });

  locationFlags(program.command("agent"))
    .description(
      "long-running node agent: keeps the CNI entry and restorer in place, serves metrics " +
        "(and CNI verbs on cni.agentSocket); logs JSON lines on stderr",
    )
    .addOption(restoreAtOption())
    .addOption(attachModeOption())
    .addOption(networkOption())
    .addOption(inPlaceOption())
    .addOption(noInPlaceOption())
    .addOption(stateDirOption())
    .option(
      "--metrics-address <host:port>",
      `Prometheus metrics listen address [config: metrics.address, ${DEFAULTS.metricsAddress}]`,
    )
    .option(
      "--reconcile-seconds <n>",
      "periodic reconcile interval in seconds (1 to 86400)",
      integerIn(1, 86400),
      DEFAULTS.reconcileSeconds,
    )
    .option(
      "--cni-results-dir <dir>",
      "libcni's result cache (pod names for metrics) [/var/lib/cni/results]",
      path,
    )
    .action(async (o) => {
      const { runAgent } = await import("./agent/command.ts");
      run.code = await runAgent(o);
    });

  locationFlags(program.command("doctor"))
    .description(
      "check this node and say how to fix what is wrong " +
        "(exit 0 all passed, 3 warnings only, 1 failures)",
    )
    .addOption(restoreAtOption())
    .addOption(attachModeOption())
    .addOption(networkOption())
    .addOption(jsonOption())
    .addOption(outputOption())
    .action(async (o) => {
      const { runDoctor } = await import("./doctor/command.ts");
      run.code = await runDoctor({ ...o, json: wantsJson(o) });
    });

  locationFlags(program.command("status"))
    .description("live datapath counters, per node and per pod (exit 1 when not installed)")
    .addOption(jsonOption())
    .addOption(outputOption())
    .addOption(
      new Option(
        "--watch [seconds]",
        `sample every N seconds (0.1 to 86400; default ${DEFAULTS.watchSeconds}) until ` +
          "interrupted",
      ).preset(String(DEFAULTS.watchSeconds)).argParser(secondsIn(0.1, 86400)),
    )
    .action(async (o) => {
      const { runStatus } = await import("./doctor/status.ts");
      run.code = await runStatus({ ...o, json: wantsJson(o) });
    });

  program.command("version")
    .description("print the version and build facts")
    .addOption(jsonOption())
    .addOption(outputOption())
    .action(async (o) => {
      const { versionInfo } = await import("./build_info.ts");
      const info = versionInfo();
      console.log(
        wantsJson(o)
          ? JSON.stringify(info)
          : `tsnproxy ${info.version} (bpf ${
            info.bpfObjectsSha256.slice(0, 12)
          }, deno ${info.deno})`,
      );
    });

  return program;
}

/** Runs the CLI on `argv` (without the program name); resolves to the exit code. */
export async function runCli(argv: string[]): Promise<number> {
  const run = { code: ExitCode.Ok as number };
  const program = buildProgram(run);
  try {
    await program.parseAsync(argv, { from: "user" });
  } catch (e) {
    if (e instanceof CommanderError) {
      // commander printed the help, the version or the usage error already.
      return e.exitCode === 0 ? ExitCode.Ok : ExitCode.Usage;
    }
    const err = asTsnproxyError(e);
    if (err instanceof UsageError) {
      console.error(`error: ${err.message}\n(fix: ${err.hint})`);
      return ExitCode.Usage;
    }
    log("error", err.message, { hint: err.hint, error: err.name });
    return ExitCode.Failure;
  }
  return run.code;
}
