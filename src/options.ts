/**
 * Where a tsnproxy installation lives on a node. install, uninstall, agent, doctor and status
 * take the same flags so every command can look at a non-default installation.
 */
export interface LocationOptions {
  /** Node config YAML (default /etc/tsnproxy/config.yaml; absent file = built-in defaults). */
  config: string;
  /** Overrides the config's tsnInterface. */
  tsnInterface?: string;
  cniConfDir: string;
  cniBinDir: string;
  /** Pin root (default /sys/fs/bpf/tsnproxy). */
  bpffs: string;
  /**
   * Which of the fields above were given on the command line (the rest are commander's
   * defaults, which must not beat the node config file). undefined: all of them were.
   */
  explicit?: readonly string[];
}

export const DEFAULTS = {
  config: "/etc/tsnproxy/config.yaml",
  cniConfDir: "/etc/cni/net.d",
  cniBinDir: "/opt/cni/bin",
  bpffs: "/sys/fs/bpf/tsnproxy",
} as const;

export type AttachMode = "auto" | "tcx" | "clsact";
export type RestoreAt = "tsn-egress" | "host-veth-ingress";

export interface InstallOptions extends LocationOptions {
  /** Where install records what it created (default /var/lib/tsnproxy). */
  stateDir?: string;
  network?: string;
  dryRun: boolean;
  attachMode?: AttachMode;
  /** Write conflists in place instead of rename (for runtimes that ignore renames). */
  inPlace?: boolean;
}

export interface UninstallOptions extends LocationOptions {
  stateDir?: string;
  network?: string;
  dryRun: boolean;
  removeQdisc: boolean;
}

export interface AgentOptions extends LocationOptions {
  stateDir?: string;
  network?: string;
  attachMode?: AttachMode;
  inPlace?: boolean;
  /** undefined: the node config's metrics.address. */
  metricsAddress?: string;
  reconcileSeconds: number;
  /** Where libcni caches results (pod names for metrics); default /var/lib/cni/results. */
  cniResultsDir?: string;
}

export interface DoctorOptions extends LocationOptions {
  json: boolean;
}

export interface StatusOptions extends LocationOptions {
  json: boolean;
  watch?: number;
}
