/**
 * The options of tsnproxy's commands, as src/cli.ts hands them to each command. Imports
 * nothing: the CLI reads the defaults and choices from here without loading zod.
 *
 * Flags that override a node config setting (NodeConfigOverrides) have no default on the
 * command line: undefined means "not given, the node config decides", any value means the
 * user typed it, equal to the default or not. src/config/node.ts `flagOverrides` is the one
 * place that turns them into overrides; every command loads its config through it.
 */

export const ATTACH_MODES = ["auto", "tcx", "clsact"] as const;
export type AttachMode = typeof ATTACH_MODES[number];
export const RESTORE_AT = ["tsn-egress", "host-veth-ingress"] as const;
export type RestoreAt = typeof RESTORE_AT[number];

/** Defaults: the node config's (src/config/node.ts uses these) and the commands' own. */
export const DEFAULTS = {
  config: "/etc/tsnproxy/config.yaml",
  cniConfDir: "/etc/cni/net.d",
  cniBinDir: "/opt/cni/bin",
  bpffs: "/sys/fs/bpf/tsnproxy",
  restoreAt: "tsn-egress",
  attachMode: "auto",
  /** The node's loopback: see docs/metrics.md before widening it. */
  metricsAddress: "127.0.0.1:9489",
  stateDir: "/var/lib/tsnproxy",
  reconcileSeconds: 10,
  watchSeconds: 2,
} as const;

/** Node config settings a flag overrides (undefined: not given on the command line). */
export interface NodeConfigOverrides {
  tsnInterface?: string;
  restoreAt?: RestoreAt;
  bpffs?: string;
  attachMode?: AttachMode;
  cniConfDir?: string;
  cniBinDir?: string;
  network?: string;
  inPlace?: boolean;
  metricsAddress?: string;
}

/**
 * Where a tsnproxy installation lives on a node and how it is set up: the node config file
 * and the flags that override it. install, uninstall, agent, doctor and status all take these.
 */
export interface LocationOptions extends NodeConfigOverrides {
  /** Node config YAML (default /etc/tsnproxy/config.yaml; absent file = built-in defaults). */
  config: string;
}

export interface InstallOptions extends LocationOptions {
  /** Where install records what it created (default /var/lib/tsnproxy). */
  stateDir?: string;
  dryRun: boolean;
  /** Print one JSON document (src/install/plan_schema.ts) instead of text. */
  json?: boolean;
}

export interface UninstallOptions extends LocationOptions {
  stateDir?: string;
  dryRun: boolean;
  removeQdisc: boolean;
  json?: boolean;
}

export interface AgentOptions extends LocationOptions {
  stateDir?: string;
  /** Seconds between periodic reconciles (a positive integer). */
  reconcileSeconds: number;
  /** Where libcni caches results (pod names for metrics); default /var/lib/cni/results. */
  cniResultsDir?: string;
}

export interface DoctorOptions extends LocationOptions {
  json: boolean;
}

export interface StatusOptions extends LocationOptions {
  json: boolean;
  /** Seconds between samples (> 0); undefined: one sample. */
  watch?: number;
}
