/**
 * CNI side of the e2e fixtures: a plugin directory (reference plugins plus plugins under test),
 * conflists, and a tiny chained logging plugin that records what the runtime passes.
 */
import { exists } from "./proc.ts";
import { run } from "../../lib/run.ts";
import { addBridge, deleteLink, linkExists } from "../../lib/netns.ts";

/** Where Debian's containernetworking-plugins installs the reference plugins. */
export const REFERENCE_PLUGIN_DIR = "/usr/lib/cni";
export const DEFAULT_REFERENCE_PLUGINS = ["bridge", "host-local", "portmap", "loopback"] as const;

export interface CniBinDirOptions {
  /** Reference plugins to link from /usr/lib/cni (default bridge, host-local, portmap, loopback). */
  reference?: readonly string[];
  /** Extra plugins: name in the bin dir -> path of the executable (symlinked). */
  extra?: Record<string, string>;
}

/**
 * Fill `dir` (created if needed) with symlinks: containerd 1.6 takes exactly one `bin_dir`,
 * so the reference plugins and the plugin under test must sit side by side.
 */
export async function makeCniBinDir(dir: string, opts: CniBinDirOptions = {}): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  const links: Record<string, string> = {};
  for (const name of opts.reference ?? DEFAULT_REFERENCE_PLUGINS) {
    links[name] = `${REFERENCE_PLUGIN_DIR}/${name}`;
  }
  Object.assign(links, opts.extra ?? {});
  for (const [name, target] of Object.entries(links)) {
    if (!(await exists(target))) throw new Error(`CNI plugin ${name}: ${target} does not exist`);
    const link = `${dir}/${name}`;
    if (await exists(link)) await Deno.remove(link);
    await Deno.symlink(target, link);
  }
  return dir;
}

/** A CNI network configuration list, as the runtimes read it from their conf dir. */
export interface Conflist {
  cniVersion: string;
  name: string;
  plugins: Record<string, unknown>[];
  [k: string]: unknown;
}

export interface BridgeNetwork {
  /** Network name (conflist `name`; podman's `--network`). */
  name: string;
  /** Linux bridge device, at most 15 characters; unique per test. */
  bridge: string;
  /** IPv4 /24 (or other) subnet, e.g. 10.123.7.0/24; unique per test, never 10.88.0.0/16. */
  subnet: string;
  /** host-local's lease directory; keep it inside the test's temp dir. */
  ipamDataDir: string;
  cniVersion?: string;
}

/** The gateway (first host) address of an IPv4 subnet: the bridge's address with isGateway. */
export function gatewayOf(subnet: string): string {
  const [addr] = subnet.split("/");
  const o = addr.split(".").map(Number);
  o[3] += 1;
  return o.join(".");
}

/** bridge + host-local as the first plugin, optionally followed by more plugins in the chain. */
export function bridgeConflist(
  net: BridgeNetwork,
  chained: Record<string, unknown>[] = [],
): Conflist {
  if (net.bridge.length > 15) throw new Error(`bridge name ${net.bridge} is longer than 15`);
  return {
    cniVersion: net.cniVersion ?? "1.0.0",
    name: net.name,
    plugins: [
      {
        type: "bridge",
        bridge: net.bridge,
        isGateway: true,
        ipMasq: false,
        hairpinMode: true,
        ipam: {
          type: "host-local",
          ranges: [[{ subnet: net.subnet }]],
          routes: [{ dst: "0.0.0.0/0" }],
          dataDir: net.ipamDataDir,
        },
      },
      ...chained,
    ],
  };
}

/** A portmap entry for the chain, receiving the runtime's portMappings capability. */
export function portmapPlugin(): Record<string, unknown> {
  return { type: "portmap", capabilities: { portMappings: true }, snat: false };
}

/**
 * Write a conflist in place (never by rename: containerd 1.6 ignores fsnotify create events of
 * a renamed-in file until it restarts). The file name sorts it first for max_conf_num = 1.
 */
export async function writeConflist(
  confDir: string,
  conflist: Conflist,
  fileName = `10-${conflist.name}.conflist`,
): Promise<string> {
  await Deno.mkdir(confDir, { recursive: true });
  const path = `${confDir}/${fileName}`;
  await Deno.writeTextFile(path, JSON.stringify(conflist, null, 2) + "\n");
  return path;
}

// ---- the logging plugin ----

/** One invocation recorded by the logging plugin. */
export interface CniCall {
  /** Nanoseconds since the epoch when the plugin started (orders calls). */
  ts: string;
  command: string;
  containerId: string;
  netns: string;
  ifname: string;
  /** CNI_ARGS split into key/value pairs (K8S_POD_NAME, K8S_POD_NAMESPACE, ...). */
  args: Record<string, string>;
  rawArgs: string;
  path: string;
  /** The plugin's stdin, parsed: its config plus name, cniVersion, prevResult, runtimeConfig. */
  stdin: Record<string, unknown> | null;
}

/**
 * Write a chained CNI plugin as a POSIX shell script at `${binDir}/${name}`. Each call writes
 * one JSON file into `logDir` (one file per call, so concurrent pods never interleave), then:
 * ADD prints prevResult back (a chained plugin must pass it on), VERSION prints the supported
 * versions, DEL/CHECK print nothing.
 *
 * No jq or python here: libcni marshals the plugin's stdin from a Go map, so keys are sorted
 * and `prevResult` is followed only by `runtimeConfig` and/or `type` as long as the plugin's
 * own config keys sort before "prevResult" (hence `logTag`, not e.g. `someKey`).
 */
export async function writeLogPlugin(
  binDir: string,
  name: string,
  logDir: string,
): Promise<string> {
  await Deno.mkdir(logDir, { recursive: true });
  const path = `${binDir}/${name}`;
  const script = `#!/bin/sh
# tsnproxy e2e: chained CNI logging plugin (generated by tests/e2e/lib/cni.ts)
LOGDIR='${logDir}'
IN=$(cat)
TS=$(date +%s%N)
[ -n "$IN" ] || IN=null
printf '{"ts":"%s","command":"%s","containerId":"%s","netns":"%s","ifname":"%s","args":"%s","path":"%s","stdin":%s}\\n' \\
  "$TS" "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_IFNAME" "$CNI_ARGS" "$CNI_PATH" "$IN" \\
  > "$LOGDIR/.$TS-$$.json" && mv "$LOGDIR/.$TS-$$.json" "$LOGDIR/$TS-$$.json"
case "$CNI_COMMAND" in
  ADD)
    VER=$(printf '%s' "$IN" | sed -n 's/^{\\("capabilities":{[^}]*},\\)\\{0,1\\}"cniVersion":"\\([^"]*\\)".*/\\2/p')
    PREV=$(printf '%s' "$IN" | sed -e 's/^.*"prevResult":\\(.*\\)$/\\1/' -e 's/,"runtimeConfig":.*$//' -e 's/,"type":"[^"]*"}$//')
    case "$PREV" in
      "{"*"}") ;;
      *) printf '{"cniVersion":"%s","code":999,"msg":"logging plugin: no prevResult in stdin"}\\n' "$VER"; exit 1 ;;
    esac
    case "$PREV" in
      *'"cniVersion"'*) printf '%s\\n' "$PREV" ;;
      *) printf '{"cniVersion":"%s",%s\\n' "$VER" "\${PREV#?}" ;;
    esac
    ;;
  VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]}' ;;
  *) : ;;
esac
exit 0
`;
  await Deno.writeTextFile(path, script, { mode: 0o755 });
  await Deno.chmod(path, 0o755);
  return path;
}

/** The config entry for the logging plugin in a chain. */
export function logPluginEntry(type: string, capabilities?: Record<string, boolean>) {
  return capabilities ? { type, capabilities, logTag: type } : { type, logTag: type };
}

/** All calls the logging plugin recorded in `logDir`, oldest first. */
export async function readCniCalls(logDir: string): Promise<CniCall[]> {
  const files: string[] = [];
  try {
    for await (const e of Deno.readDir(logDir)) {
      if (e.isFile && e.name.endsWith(".json") && !e.name.startsWith(".")) files.push(e.name);
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  files.sort((a, b) => {
    const [ta, tb] = [BigInt(a.split("-")[0]), BigInt(b.split("-")[0])];
    return ta < tb ? -1 : ta > tb ? 1 : a.localeCompare(b);
  });
  const calls: CniCall[] = [];
  for (const f of files) {
    const text = await Deno.readTextFile(`${logDir}/${f}`);
    let rec: Omit<CniCall, "args" | "rawArgs"> & { args: string };
    try {
      rec = JSON.parse(text);
    } catch (e) {
      throw new Error(`logging plugin wrote unparsable ${f}: ${e}\n${text}`);
    }
    const args = Object.fromEntries(
      rec.args.split(";").filter(Boolean).map((kv) => {
        const i = kv.indexOf("=");
        return i < 0 ? [kv, ""] : [kv.slice(0, i), kv.slice(i + 1)];
      }),
    );
    calls.push({ ...rec, rawArgs: rec.args, args });
  }
  return calls;
}

// ---- a per-test CNI environment ----

export interface CniEnvOptions {
  /** Short tag (letters/digits, <= 8 chars) naming the network and its bridge. */
  tag: string;
  /** IPv4 subnet; default a free 10.123.<n>.0/24. */
  subnet?: string;
  /** Reference plugins to link (default bridge, host-local, portmap, loopback). */
  reference?: readonly string[];
  /** Plugins under test: name in the bin dir -> executable path. */
  extraPlugins?: Record<string, string>;
  /** Name of the logging plugin written into the bin dir (default "e2elog"; false: none). */
  logPlugin?: string | false;
  /** The chain after bridge (default: just the logging plugin). */
  chain?: (env: { logPlugin: string | false }) => Record<string, unknown>[];
  cniVersion?: string;
}

/**
 * Everything a runtime needs for one test network, under one temp dir: bin dir (symlinks plus
 * the logging plugin), conf dir holding a bridge + host-local conflist, IPAM and log dirs.
 * `cleanup()` deletes the bridge device and the directory.
 */
export class CniEnv {
  readonly dir: string;
  readonly binDir: string;
  readonly confDir: string;
  readonly logDir: string;
  readonly network: BridgeNetwork;
  readonly logPlugin: string | false;
  conflist: Conflist;

  private constructor(
    dir: string,
    network: BridgeNetwork,
    logPlugin: string | false,
    conflist: Conflist,
  ) {
    this.dir = dir;
    this.binDir = `${dir}/bin`;
    this.confDir = `${dir}/net.d`;
    this.logDir = `${dir}/cni-log`;
    this.network = network;
    this.logPlugin = logPlugin;
    this.conflist = conflist;
  }

  static async create(o: CniEnvOptions): Promise<CniEnv> {
    if (!/^[a-z0-9]{1,8}$/.test(o.tag)) throw new Error(`bad CNI env tag ${o.tag}`);
    const dir = await Deno.makeTempDir({ prefix: `tsnproxy-e2e-cni-${o.tag}-` });
    const subnet = o.subnet ?? await freeSubnet();
    const third = subnet.split(".")[2];
    const network: BridgeNetwork = {
      name: `e2e-${o.tag}`,
      bridge: `e2e${o.tag}${third}`.slice(0, 15),
      subnet,
      ipamDataDir: `${dir}/ipam`,
      cniVersion: o.cniVersion,
    };
    const logPlugin = o.logPlugin === undefined ? "e2elog" : o.logPlugin;
    const chain = o.chain
      ? o.chain({ logPlugin })
      : logPlugin
      ? [logPluginEntry(logPlugin, { portMappings: true })]
      : [];
    const env = new CniEnv(dir, network, logPlugin, bridgeConflist(network, chain));
    await makeCniBinDir(env.binDir, { reference: o.reference, extra: o.extraPlugins });
    if (logPlugin) await writeLogPlugin(env.binDir, logPlugin, env.logDir);
    await env.writeConflist();
    return env;
  }

  /** (Re)write the conflist in place; pass a new one to change the chain. */
  async writeConflist(conflist: Conflist = this.conflist): Promise<string> {
    this.conflist = conflist;
    return await writeConflist(this.confDir, conflist, "10-e2e.conflist");
  }

  /** Calls recorded by the logging plugin, oldest first. */
  calls(): Promise<CniCall[]> {
    return readCniCalls(this.logDir);
  }

  get gateway(): string {
    return gatewayOf(this.network.subnet);
  }

  /**
   * Create the bridge with its gateway address before any pod exists, so a host listener can
   * bind to the gateway first (the bridge plugin adopts an existing bridge and address).
   */
  async ensureBridge(): Promise<void> {
    const br = this.network.bridge;
    if (!(await linkExists(br))) await addBridge(br, { up: false });
    const prefix = this.network.subnet.split("/")[1];
    const has = (await run(["ip", "-4", "-o", "addr", "show", "dev", br])).stdout.includes(
      ` ${this.gateway}/`,
    );
    if (!has) await run(["ip", "addr", "add", `${this.gateway}/${prefix}`, "dev", br]);
    await run(["ip", "link", "set", br, "up"]);
  }

  async cleanup(): Promise<void> {
    // The bridge plugin's DEL never removes the bridge.
    await deleteLink(this.network.bridge);
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.cleanup();
  }
}

/**
 * A 10.123.<n>.0/24 no host interface or route uses yet (random n, so concurrent test files
 * rarely pick the same one; a clash shows up as an address already in use on the bridge).
 */
export async function freeSubnet(): Promise<string> {
  const used =
    (await run(["ip", "-4", "route", "show", "table", "all"], { allowFail: true })).stdout;
  for (let tries = 0; tries < 200; tries++) {
    const n = 1 + Math.floor(Math.random() * 254);
    if (!used.includes(`10.123.${n}.`)) return `10.123.${n}.0/24`;
  }
  throw new Error("no free 10.123.x.0/24 subnet");
}
