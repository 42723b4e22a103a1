/**
 * The fuzzer's node, built inside a private "node" network namespace (tests/fuzz/run.ts starts
 * the driver there with nsenter), so no fuzzed CNI_NETNS or CNI_IFNAME can reach the machine's
 * own interfaces or another test's:
 *
 *   - the datapath installed as `tsnproxy install` does it (tests/lib/node.ts setUpNode) on a
 *     private pin root, with a node policy whose ceiling pod layers may only lower;
 *   - pods made by the reference plugins exactly as a runtime's chain makes them, whose real
 *     Results are the corpus's prevResults: bridge + host-local (containerd's conflist at
 *     1.0.0), ptp + host-local (kindnet's, 0.3.1), bridge as podman 4.3 configures it (0.4.0);
 *   - a bystander pod attached by a valid ADD at the start, which no case may disturb;
 *   - odd things a CNI_NETNS can name: a namespace without eth0, one whose eth0 is a bridge,
 *     one whose eth0's veth peer is inside it too, a FIFO, a regular file, a directory, a
 *     missing path; a decoy directory holding pin-shaped files outside the bpf filesystem
 *     (nothing may delete them), agent sockets that accept and hang up (one where an entry
 *     may name it, one outside /run/tsnproxy/ that nothing may connect to).
 *
 * Every name derives from one 6-hex-digit id (and the bridge's veth names, recorded), so a
 * saved failing case replays against a fresh fixture by substituting them (same lengths).
 */
import { lexists } from "../../src/util/fs.ts";
import { handleCni } from "../../src/cni/main.ts";
import { setUpNode, tearDownNode, type TestNode } from "../lib/node.ts";
import { randomId, run } from "../lib/run.ts";
import { addBridge, Netns } from "../lib/netns.ts";
import { type NodeState, snapshot } from "./oracle.ts";

export const REFERENCE_PLUGINS = "/usr/lib/cni";
export type JsonObject = Record<string, unknown>;

export type PodKey = "bridge" | "ptp" | "podman" | "bystander";
export const TARGETS: readonly PodKey[] = ["bridge", "ptp", "podman"];

export interface FuzzPod {
  key: PodKey;
  netnsName: string;
  netns: string;
  ifname: string;
  containerId: string;
  hostVeth: string;
  /** The primary plugin's real Result, in `listVersion`. */
  result: JsonObject;
  /** The conflist version the primary plugin ran with. */
  listVersion: string;
  /** The primary plugin's network config (for its DEL at teardown). */
  primary: JsonObject;
}

export interface Fixture {
  id: string;
  bpffs: string;
  node: TestNode;
  tmp: string;
  logDir: string;
  pods: Record<PodKey, FuzzPod>;
  /** Odd paths and namespaces a case may name. */
  paths: {
    fifo: string;
    file: string;
    dir: string;
    missing: string;
    decoyRoot: string;
    decoyFiles: string[];
    emptyNs: string;
    bridgeEth0Ns: string;
    sameNsVethNs: string;
    deadSocket: string;
    insideSocket: string;
    missingRoot: string;
    emptyRoot: string;
    logFifo: string;
  };
  /** The bystander's entry as a runtime passes it (re-ADDed after a GC removed it). */
  bystanderInput: { env: Record<string, string>; stdin: string };
  /** Fixture strings a saved case contains, for replay against another fixture. */
  names: Record<string, string>;
  /** Things to undo, last first. */
  cleanups: Array<() => Promise<void> | void>;
  /** Connections to the agent socket outside /run/tsnproxy/ (none may happen). */
  outsideConnections: number;
  /** The node's state once built, the bystander attached: every case starts from it. */
  baseline: NodeState;
}

/** The node's policy: pod layers may lower it, never raise it (src/policy/resolve.ts). */
export const NODE_POLICY_YAML = [
  "policy:",
  "  maxPriority: 6",
  "  remap:",
  '    "7": 5',
].join("\n");

/** A runtime-like container id (64 hex digits) that carries the fixture id. */
export function containerIdFor(id: string, tag: string): string {
  return `${id}${tag}`.padEnd(64, "0");
}

/** Runs a reference plugin as a runtime does; its Result. */
async function referencePlugin(
  type: string,
  command: "ADD" | "DEL",
  conf: JsonObject,
  pod: { containerId: string; netns: string; ifname: string },
): Promise<JsonObject | undefined> {
  const r = await run([`${REFERENCE_PLUGINS}/${type}`], {
    env: {
      CNI_COMMAND: command,
      CNI_CONTAINERID: pod.containerId,
      CNI_NETNS: pod.netns,
      CNI_IFNAME: pod.ifname,
      CNI_PATH: REFERENCE_PLUGINS,
      PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
    },
    clearEnv: true,
    stdin: JSON.stringify(conf),
    allowFail: command === "DEL",
  });
  if (command === "DEL") return undefined;
  return JSON.parse(r.stdout) as JsonObject;
}

/** The host-side interface of a Result (the one without a sandbox that is not a bridge). */
function hostVethOf(result: JsonObject, bridge?: string): string {
  const ifs = (result.interfaces ?? []) as Array<{ name: string; sandbox?: string }>;
  const host = ifs.find((i) => !i.sandbox && i.name !== bridge);
  if (!host) throw new Error(`no host veth in ${JSON.stringify(result)}`);
  return host.name;
}

async function makePod(
  f: Fixture,
  key: PodKey,
  tag: string,
  type: "bridge" | "ptp",
  listVersion: string,
  plugin: JsonObject,
): Promise<FuzzPod> {
  const ns = await Netns.create({ name: `tsnp-fz-${f.id}-${tag}`, lo: false });
  f.cleanups.push(() => ns.delete());
  const netnsName = ns.name;
  const pod = {
    netns: ns.path,
    ifname: "eth0",
    containerId: containerIdFor(f.id, tag),
  };
  const primary = { cniVersion: listVersion, name: `fuzz-${key}`, ...plugin };
  const result = await referencePlugin(type, "ADD", primary, pod) as JsonObject;
  f.cleanups.push(async () => {
    await referencePlugin(type, "DEL", primary, pod);
  });
  const hostVeth = hostVethOf(result, plugin.bridge as string | undefined);
  f.names[`veth-${key}`] = hostVeth;
  return { key, netnsName, ...pod, hostVeth, result, listVersion, primary };
}

function hostLocal(f: Fixture, subnet: string): JsonObject {
  return {
    type: "host-local",
    ranges: [[{ subnet }]],
    routes: [{ dst: "0.0.0.0/0" }],
    dataDir: `${f.tmp}/ipam`,
  };
}

/** The bystander's input: a valid entry for it, as containerd passes it. */
function bystanderInput(f: Fixture): Fixture["bystanderInput"] {
  const p = f.pods.bystander;
  return {
    env: {
      CNI_COMMAND: "ADD",
      CNI_CONTAINERID: p.containerId,
      CNI_NETNS: p.netns,
      CNI_IFNAME: p.ifname,
      CNI_PATH: "/opt/cni/bin",
    },
    stdin: JSON.stringify({
      cniVersion: p.listVersion,
      name: "fuzz-bystander",
      type: "tsnproxy",
      bpffs: f.bpffs,
      prevResult: p.result,
    }),
  };
}

/** ADDs the bystander (at the start, and after a GC that removed it); throws on failure. */
export async function attachBystander(f: Fixture): Promise<void> {
  const { env, stdin } = f.bystanderInput;
  const out = await handleCni(stdin, (k) => env[k]);
  if (out.code !== 0) throw new Error(`bystander ADD failed: ${JSON.stringify(out.stdout)}`);
}

/** Builds the fixture; `id` fixes the names (replay), else a random one. */
export async function createFixture(id = randomId(6)): Promise<Fixture> {
  const tmp = `/tmp/tsnp-fuzz-${id}`;
  const f: Fixture = {
    id,
    bpffs: "",
    node: undefined as unknown as TestNode,
    tmp,
    logDir: `/var/log/tsnproxy/fuzz-${id}`,
    pods: {} as Fixture["pods"],
    paths: {
      fifo: `${tmp}/fifo`,
      file: `${tmp}/file`,
      dir: `${tmp}/dir`,
      missing: `${tmp}/missing`,
      decoyRoot: `${tmp}/decoy`,
      decoyFiles: [],
      emptyNs: `/run/netns/tsnp-fz-${id}-e`,
      bridgeEth0Ns: `/run/netns/tsnp-fz-${id}-k`,
      sameNsVethNs: `/run/netns/tsnp-fz-${id}-s`,
      deadSocket: `${tmp}/dead.sock`,
      insideSocket: `/run/tsnproxy/fuzz-${id}/dead.sock`,
      missingRoot: `/sys/fs/bpf/tsnp-fz-${id}-missing`,
      emptyRoot: `/sys/fs/bpf/tsnp-fz-${id}-empty`,
      logFifo: `/var/log/tsnproxy/fuzz-${id}/fifo`,
    },
    bystanderInput: { env: {}, stdin: "" },
    names: { id },
    cleanups: [],
    outsideConnections: 0,
    baseline: undefined as unknown as NodeState,
  };
  try {
    await build(f);
  } catch (e) {
    await destroyFixture(f);
    throw e;
  }
  return f;
}

async function build(f: Fixture): Promise<void> {
  await run(["ip", "link", "set", "lo", "up"]);
  await Deno.mkdir(`${f.tmp}/ipam`, { recursive: true });
  f.cleanups.push(() => Deno.remove(f.tmp, { recursive: true }).catch(() => {}));
  const hadLogRoot = lexists("/var/log/tsnproxy");
  await Deno.mkdir(f.logDir, { recursive: true });
  f.cleanups.push(async () => {
    await Deno.remove(f.logDir, { recursive: true }).catch(() => {});
    if (!hadLogRoot) await Deno.remove("/var/log/tsnproxy").catch(() => {});
  });
  await run(["mkfifo", f.paths.fifo]);
  await run(["mkfifo", f.paths.logFifo]);
  await Deno.writeTextFile(f.paths.file, "not a namespace\n");
  await Deno.mkdir(f.paths.dir);
  await Deno.mkdir(f.paths.emptyRoot);
  f.cleanups.push(() => Deno.remove(f.paths.emptyRoot, { recursive: true }).catch(() => {}));

  f.node = setUpNode({
    api: "tcx",
    config: NODE_POLICY_YAML,
    bpffs: `/sys/fs/bpf/tsnp-fz-${f.id}`,
  });
  f.bpffs = f.node.bpffs;
  f.cleanups.push(() => tearDownNode(f.node));

  // Agent sockets that accept and hang up at once: the plugin must fall back to itself. One
  // where an entry may name it (/run/tsnproxy/), one outside, which nothing may connect to.
  const hadRunRoot = lexists("/run/tsnproxy");
  await Deno.mkdir(f.paths.insideSocket.slice(0, f.paths.insideSocket.lastIndexOf("/")), {
    recursive: true,
  });
  f.cleanups.push(async () => {
    await Deno.remove(`/run/tsnproxy/fuzz-${f.id}`, { recursive: true }).catch(() => {});
    if (!hadRunRoot) await Deno.remove("/run/tsnproxy").catch(() => {});
  });
  for (
    const [path, outside] of [[f.paths.insideSocket, false], [f.paths.deadSocket, true]] as const
  ) {
    const listener = Deno.listen({ transport: "unix", path });
    (async () => {
      try {
        for await (const conn of listener) {
          if (outside) f.outsideConnections++;
          conn.close();
        }
      } catch { /* closed */ }
    })();
    f.cleanups.push(() => {
      try {
        listener.close();
      } catch { /* closed */ }
    });
  }

  f.pods.bridge = await makePod(f, "bridge", "a", "bridge", "1.0.0", {
    type: "bridge",
    bridge: "fzbr0",
    isGateway: true,
    ipMasq: false,
    hairpinMode: true,
    ipam: hostLocal(f, "10.250.1.0/24"),
  });
  f.pods.ptp = await makePod(f, "ptp", "b", "ptp", "0.3.1", {
    type: "ptp",
    ipMasq: false,
    mtu: 1500,
    ipam: hostLocal(f, "10.250.2.0/24"),
  });
  f.pods.podman = await makePod(f, "podman", "c", "bridge", "0.4.0", {
    type: "bridge",
    bridge: "cni-podman9",
    isGateway: true,
    ipMasq: false,
    hairpinMode: true,
    ipam: {
      ...hostLocal(f, "10.250.3.0/24"),
      ranges: [[{ subnet: "10.250.3.0/24", gateway: "10.250.3.1" }]],
    },
  });
  f.pods.bystander = await makePod(f, "bystander", "d", "bridge", "1.0.0", {
    type: "bridge",
    bridge: "fzbr0",
    isGateway: true,
    ipMasq: false,
    hairpinMode: true,
    ipam: hostLocal(f, "10.250.1.0/24"),
  });

  // Odd namespaces.
  const odd = async (path: string) => {
    const ns = await Netns.create({ name: path.slice("/run/netns/".length), lo: false });
    f.cleanups.push(() => ns.delete());
    return ns;
  };
  await odd(f.paths.emptyNs);
  await addBridge("eth0", { netns: await odd(f.paths.bridgeEth0Ns), up: false });
  await (await odd(f.paths.sameNsVethNs)).addVeth("eth0", "peer0", { up: false });

  // Pin-shaped files outside the bpf filesystem: an entry's bpffs naming this directory must
  // not make any verb delete them.
  await Deno.mkdir(`${f.paths.decoyRoot}/pods`, { recursive: true });
  await Deno.mkdir(`${f.paths.decoyRoot}/v2/maps`, { recursive: true });
  for (const p of Object.values(f.pods)) {
    for (const side of ["", "@host"]) {
      const file = `${f.paths.decoyRoot}/pods/${p.containerId}_eth0${side}`;
      await Deno.writeTextFile(file, "decoy\n");
      f.paths.decoyFiles.push(file);
    }
  }

  f.bystanderInput = bystanderInput(f);
  await attachBystander(f);
  f.baseline = snapshot(f);
}

export async function destroyFixture(f: Fixture): Promise<void> {
  for (const c of f.cleanups.reverse()) {
    try {
      await c();
    } catch (e) {
      console.error(`fuzz fixture cleanup: ${(e as Error).message}`);
    }
  }
  f.cleanups = [];
}
