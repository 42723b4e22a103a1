/**
 * The operator-facing CLI (commander). Imported only off the CNI path; each subcommand
 * imports its implementation when it runs, so `tsnproxy version` stays instant.
 */
import { Command, Option } from "@commander-js/extra-typings";
import { asTsnproxyError } from "./errors.ts";
import { DEFAULTS, type LocationOptions } from "./options.ts";
import { VERSION } from "./version.ts";

/** A subcommand with the location flags every node command shares. */
function locationCommand(program: Command, name: string) {
  return program.command(name)
    .option("--config <path>", "node config YAML", DEFAULTS.config)
    .option("--tsn-interface <name>", "the TSN NIC (overrides the config)")
    .option("--cni-conf-dir <dir>", "CNI network config directory", DEFAULTS.cniConfDir)
    .option("--cni-bin-dir <dir>", "CNI plugin binary directory", DEFAULTS.cniBinDir)
    .option("--bpffs <dir>", "pin root in a bpf filesystem", DEFAULTS.bpffs);
}

function location(o: LocationOptions): LocationOptions {
  return {
    config: o.config,
    tsnInterface: o.tsnInterface,
    cniConfDir: o.cniConfDir,
    cniBinDir: o.cniBinDir,
    bpffs: o.bpffs,
  };
}

/** Option names the user gave (not commander defaults): those beat the node config file. */
function explicit(cmd: { getOptionValueSource(key: string): string | undefined }, o: object) {
  return Object.keys(o).filter((k) => cmd.getOptionValueSource(k) === "cli");
}

const STATE_DIR_HELP = "where install records what it created (uninstall reads it)";

export async function runCli(argv: string[]): Promise<number> {
  let code = 0;
  const program = new Command()
    .name("tsnproxy")
    .description(
      "Carries TSN socket metadata (SO_PRIORITY, SO_TXTIME) from Kubernetes pods to the node's TSN NIC with eBPF.",
    )
    .version(VERSION, "-V, --version")
    .showHelpAfterError()
    .exitOverride();

  program.command("cni")
    .description("run as a CNI plugin (the runtime does this; reads CNI_* env and stdin)")
    .action(async () => {
      const { runCni } = await import("./cni/main.ts");
      code = await runCni();
    });

  locationCommand(program, "install")
    .description(
      "set this node up: pins the BPF datapath, attaches the restorer, injects the CNI entry",
    )
    .option("--network <name>", "conflist to inject into when several exist (by network name)")
    .option("--dry-run", "print the planned changes and change nothing", false)
    .addOption(
      new Option("--attach-mode <mode>", "tc attach API").choices(
        ["auto", "tcx", "clsact"] as const,
      ),
    )
    .option("--in-place", "rewrite conflists in place (runtimes that ignore renames)")
    .option("--state-dir <dir>", STATE_DIR_HELP, "/var/lib/tsnproxy")
    .action(async (o, cmd) => {
      const { runInstall } = await import("./install/command.ts");
      code = await runInstall({
        ...location(o),
        explicit: explicit(cmd, o),
        stateDir: o.stateDir,
        network: o.network,
        dryRun: o.dryRun,
        attachMode: o.attachMode,
        inPlace: o.inPlace,
      });
    });

  locationCommand(program, "uninstall")
    .description(
      "undo install: CNI entry, attachments, pins, binary (and the qdisc with --remove-qdisc)",
    )
    .option("--dry-run", "print the planned changes and change nothing", false)
    .option("--remove-qdisc", "also remove the qdisc install created", false)
    .option("--network <name>", "conflist to remove the entry from (by network name)")
    .option("--state-dir <dir>", STATE_DIR_HELP, "/var/lib/tsnproxy")
    .action(async (o, cmd) => {
      const { runUninstall } = await import("./install/uninstall.ts");
      code = await runUninstall({
        ...location(o),
        explicit: explicit(cmd, o),
        stateDir: o.stateDir,
        network: o.network,
        dryRun: o.dryRun,
        removeQdisc: o.removeQdisc,
      });
    });

  locationCommand(program, "agent")
    .description(
      "long-running node agent: keeps the CNI entry and restorer in place, serves metrics",
    )
    .option(
      "--metrics-address <host:port>",
      "Prometheus metrics listen address (default: the config's metrics.address, 0.0.0.0:9489)",
    )
    .option("--reconcile-seconds <n>", "periodic reconcile interval", (v) => Number(v), 10)
    .option("--network <name>", "conflist to keep the entry in (by network name)")
    .addOption(
      new Option("--attach-mode <mode>", "tc attach API").choices(
        ["auto", "tcx", "clsact"] as const,
      ),
    )
    .option("--in-place", "rewrite conflists in place (runtimes that ignore renames)")
    .option("--state-dir <dir>", STATE_DIR_HELP, "/var/lib/tsnproxy")
    .option("--cni-results-dir <dir>", "libcni's result cache (pod names for metrics)")
    .action(async (o, cmd) => {
      const { runAgent } = await import("./agent/command.ts");
      code = await runAgent({
        ...location(o),
        explicit: explicit(cmd, o),
        stateDir: o.stateDir,
        network: o.network,
        attachMode: o.attachMode,
        inPlace: o.inPlace,
        metricsAddress: o.metricsAddress,
        reconcileSeconds: o.reconcileSeconds,
        cniResultsDir: o.cniResultsDir,
      });
    });

  locationCommand(program, "doctor")
    .description(
      "check this node and say how to fix what is wrong (exit 0 ok, 1 warnings, 2 failures)",
    )
    .option("--json", "machine-readable output", false)
    .action(async (o) => {
      const { runDoctor } = await import("./doctor/command.ts");
      code = await runDoctor({ ...location(o), json: o.json });
    });

  locationCommand(program, "status")
    .description("live datapath counters, per node and per pod")
    .option("--json", "machine-readable output", false)
    .option("--watch [seconds]", "refresh every N seconds", (v) => Number(v))
    .action(async (o) => {
      const { runStatus } = await import("./doctor/status.ts");
      code = await runStatus({
        ...location(o),
        json: o.json,
        watch: o.watch === true ? 2 : o.watch,
      });
    });

  program.command("version")
    .description("print the version and build facts")
    .option("--json", "machine-readable output", false)
    .action(async (o) => {
      const { versionInfo } = await import("./build_info.ts");
      const info = versionInfo();
      console.log(
        o.json
          ? JSON.stringify(info)
          : `tsnproxy ${info.version} (bpf ${
            info.bpfObjectsSha256.slice(0, 12)
          }, deno ${info.deno})`,
      );
    });

  try {
    await program.parseAsync(argv, { from: "user" });
  } catch (e) {
    if (e instanceof Error && "exitCode" in e && typeof e.exitCode === "number") {
      return e.exitCode; // commander already printed help / the usage error
    }
    const err = asTsnproxyError(e);
    console.error(`tsnproxy: ${err.oneLine()}`);
    return 2;
  }
  return code;
}
