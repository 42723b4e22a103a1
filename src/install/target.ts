/**
 * Node config + command-line flags -> what install, uninstall and the agent act on. Flags beat
 * the file (src/config/node.ts flagOverrides decides which flags were given).
 */
import { loadNodeConfigFor, type NodeConfig, requireTsnInterfaces } from "../config/node.ts";
import type { LocationOptions } from "../options.ts";
import { resolveTcApi } from "../bpf/features.ts";
import type { InstallTarget } from "./plan.ts";
import { DEFAULT_STATE_DIR } from "./state.ts";

export interface TargetFlags extends LocationOptions {
  stateDir?: string;
}

export async function loadConfig(o: TargetFlags): Promise<NodeConfig> {
  return await loadNodeConfigFor(o);
}

/**
 * The install target. Conflists are rewritten in place unless the config (or --no-in-place)
 * says `cni.inPlace: false`: an in-place write (journaled, see atomic.ts) is seen by every
 * runtime, while containerd 1.6 ignores a file renamed into its conf dir until it restarts.
 */
export function targetFrom(cfg: NodeConfig, o: TargetFlags): InstallTarget {
  return {
    cfg,
    tsnInterfaces: requireTsnInterfaces(cfg, o.config),
    api: resolveTcApi(cfg.attachMode),
    stateDir: o.stateDir ?? DEFAULT_STATE_DIR,
    inPlace: cfg.cni.inPlace ?? true,
  };
}
