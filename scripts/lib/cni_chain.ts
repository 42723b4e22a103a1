/**
 * Runs a CNI conflist the way libcni does for a runtime: each plugin in order for ADD
 * (each gets the previous plugin's result as prevResult), in reverse for DEL, with the
 * runtime's environment and nothing else. Used by the demo and the benchmarks.
 */
import { run } from "../../tests/lib/run.ts";

export interface ChainContext {
  containerId: string;
  /** Path of the pod's network namespace. */
  netns: string;
  ifname?: string;
  binDir: string;
  /** Run the plugins inside this network namespace (the "node"); nsenter keeps /sys/fs/bpf. */
  nodeNetns?: string;
  args?: string;
}

export type Conflist = {
  cniVersion: string;
  name: string;
  plugins: Array<Record<string, unknown>>;
};

export class ChainError extends Error {
  constructor(readonly plugin: string, readonly code: number, readonly output: string) {
    super(`CNI plugin ${plugin} failed (exit ${code}): ${output.trim()}`);
  }
}

async function exec(
  plugin: Record<string, unknown>,
  command: "ADD" | "DEL" | "CHECK",
  conf: Conflist,
  ctx: ChainContext,
  prevResult: unknown,
): Promise<unknown> {
  const type = String(plugin.type);
  const stdin = JSON.stringify({
    ...plugin,
    cniVersion: conf.cniVersion,
    name: conf.name,
    ...(prevResult !== undefined ? { prevResult } : {}),
  });
  const bin = `${ctx.binDir}/${type}`;
  const out = await run([bin], {
    netns: ctx.nodeNetns,
    clearEnv: true,
    env: {
      CNI_COMMAND: command,
      CNI_CONTAINERID: ctx.containerId,
      CNI_NETNS: ctx.netns,
      CNI_IFNAME: ctx.ifname ?? "eth0",
      CNI_PATH: ctx.binDir,
      ...(ctx.args ? { CNI_ARGS: ctx.args } : {}),
      PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
    },
    stdin,
    allowFail: true,
  });
  const text = out.stdout;
  if (out.code !== 0) throw new ChainError(type, out.code, text || out.stderr);
  return command === "ADD" && text.trim() ? JSON.parse(text) : prevResult;
}

/** ADD through the whole chain; returns the final result. */
export async function chainAdd(conf: Conflist, ctx: ChainContext): Promise<unknown> {
  let result: unknown = undefined;
  for (const plugin of conf.plugins) result = await exec(plugin, "ADD", conf, ctx, result);
  return result;
}

/** DEL through the chain in reverse, with the ADD result as prevResult where given. */
export async function chainDel(
  conf: Conflist,
  ctx: ChainContext,
  prevResult?: unknown,
): Promise<void> {
  for (const plugin of [...conf.plugins].reverse()) {
    await exec(plugin, "DEL", conf, ctx, prevResult);
  }
}
