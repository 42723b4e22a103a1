/**
 * Node config + command-line flags -> what install, uninstall and the agent act on. Flags
 * beat the file; commander's defaults do not (only flags the user typed count).
 */
import { loadNodeConfig, type NodeConfig, type NodeConfigOverrides } from "../config/node.ts";
import type { AttachMode, LocationOptions } from "../options.ts";
import { resolveTcApi } from "../bpf/features.ts";
import type { InstallTarget } from "./plan.ts";
import { DEFAULT_STATE_DIR } from "./state.ts";
import { requireTsnInterface } from "../config/node.ts";

export interface TargetFlags extends LocationOptions {
  stateDir?: string;
  network?: string;
  attachMode?: AttachMode;
  inPlace?: boolean;
  metricsAddress?: string;
}

function given(o: TargetFlags, key: string): boolean {
  return o.explicit === undefined || o.explicit.includes(key);
}

export function overridesFrom(o: TargetFlags): NodeConfigOverrides {
  const ov: NodeConfigOverrides = {};
  if (o.tsnInterface !== undefined) ov.tsnInterface = o.tsnInterface;
  if (given(o, "bpffs")) ov.bpffs = o.bpffs;
  if (given(o, "cniConfDir")) ov.cniConfDir = o.cniConfDir;
  if (given(o, "cniBinDir")) ov.cniBinDir = o.cniBinDir;
  if (o.network !== undefined) ov.network = o.network;
  if (o.attachMode !== undefined) ov.attachMode = o.attachMode;
  if (o.inPlace !== undefined) ov.inPlace = o.inPlace;
  if (o.metricsAddress !== undefined) ov.metricsAddress = o.metricsAddress;
  return ov;
}

export async function loadConfig(o: TargetFlags): Promise<NodeConfig> {
  return await loadNodeConfig(o.config, overridesFrom(o));
}

/**
 * The install target. Conflists are rewritten in place unless the config says
 * `cni.inPlace: false`: an in-place write (journaled, see atomic.ts) is seen by every runtime,
 * while containerd 1.6 ignores a file renamed into its conf dir until it restarts.
 */
export function targetFrom(cfg: NodeConfig, o: TargetFlags): InstallTarget {
  return {
    cfg,
    tsnInterface: requireTsnInterface(cfg, o.config),
    api: resolveTcApi(cfg.attachMode),
    stateDir: o.stateDir ?? DEFAULT_STATE_DIR,
    inPlace: cfg.cni.inPlace ?? true,
  };
}
