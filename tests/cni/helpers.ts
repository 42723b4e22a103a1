/**
 * Helpers for the CNI tests: a private pin root set up as install does it
 * (tests/lib/node.ts), throwaway pod network namespaces with a veth (tests/lib/netns.ts), and
 * the plugin run as a process exactly as a runtime runs it (environment + stdin, result on
 * stdout).
 */
import assert from "node:assert/strict";
import type { TcApi } from "../../src/bpf/attach.ts";
import { listPodAttachments, podCookie } from "../../src/bpf/pod.ts";
import { DatapathMaps } from "../../src/bpf/maps.ts";
import { podPinMatches } from "../../src/bpf/pins.ts";
import { randomId, run } from "../lib/run.ts";
import { addVeth, deleteLink, deleteNetns, Netns } from "../lib/netns.ts";
import { setUpNode, tearDownNode } from "../lib/node.ts";

export const MAIN = new URL("../../main.ts", import.meta.url).pathname;
export const DENO = Deno.execPath();

export interface Node {
  bpffs: string;
}

/** Runs fn with a freshly set-up pin root (node config YAML `config`); tears it down after. */
export async function withNode<T>(
  fn: (node: Node) => Promise<T>,
  api: TcApi = "tcx",
  config = "",
): Promise<T> {
  const node = setUpNode({ api, config });
  try {
    return await fn({ bpffs: node.bpffs });
  } finally {
    tearDownNode(node);
  }
}

export interface TestPod {
  name: string;
  netns: string;
  hostVeth: string;
  ifname: string;
  ipv4: string;
  ipv6: string;
  containerId: string;
}

let podSeq = 0;

/** A pod netns with eth0 (10.77.x.y/16, fd00:77::x:y/64) paired with a host veth. */
export async function createPod(): Promise<TestPod> {
  const id = randomId(6);
  const n = ++podSeq;
  const name = `tsnp-cni-${id}`;
  const hostVeth = `vt${id}`;
  const a = (n % 250) + 2;
  const b = Math.floor(Math.random() * 250) + 1;
  const pod: TestPod = {
    name,
    netns: `/run/netns/${name}`,
    hostVeth,
    ifname: "eth0",
    ipv4: `10.77.${b}.${a}`,
    ipv6: `fd00:77::${b.toString(16)}:${a.toString(16)}`,
    containerId: `c${id}${"0".repeat(56)}`.slice(0, 64),
  };
  const ns = await Netns.create({ name, lo: false });
  try {
    await addVeth(hostVeth, { name: "eth0", netns: ns });
    await ns.ip("addr", "add", `${pod.ipv4}/16`, "dev", "eth0");
  } catch (e) {
    await deletePod(pod);
    throw e;
  }
  return pod;
}

export async function deletePod(pod: TestPod): Promise<void> {
  await deleteLink(pod.hostVeth);
  await deleteNetns(pod.name);
}

export async function withPod<T>(fn: (pod: TestPod) => Promise<T>): Promise<T> {
  const pod = await createPod();
  try {
    return await fn(pod);
  } finally {
    await deletePod(pod);
  }
}

/** A bridge-plugin-shaped Result for the pod, in the given version. */
export function prevResultFor(pod: TestPod, cniVersion = "1.1.0"): Record<string, unknown> {
  const old = cniVersion.startsWith("0.");
  const ip = (address: string, gateway: string, v: string) => ({
    ...(old ? { version: v } : {}),
    address,
    gateway,
    interface: 2,
  });
  return {
    cniVersion,
    interfaces: [
      { name: "cni0", mac: "aa:bb:cc:00:00:01" },
      { name: pod.hostVeth, mac: "aa:bb:cc:00:00:02" },
      { name: pod.ifname, mac: "aa:bb:cc:00:00:03", sandbox: pod.netns },
    ],
    ips: [
      ip(`${pod.ipv4}/16`, "10.77.0.1", "4"),
      ip(`${pod.ipv6}/64`, "fd00:77::1", "6"),
    ],
    routes: [{ dst: "0.0.0.0/0" }],
    dns: {},
  };
}

export interface Entry {
  [k: string]: unknown;
}

export function entry(node: Node, extra: Entry = {}, cniVersion = "1.1.0"): Entry {
  return { cniVersion, name: "tsnp-test", type: "tsnproxy", bpffs: node.bpffs, ...extra };
}

export interface PluginRun {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed (undefined when empty). */
  json?: Record<string, unknown>;
}

export interface Invoke {
  command?: string;
  pod?: TestPod;
  env?: Record<string, string | undefined>;
  stdin: unknown;
  /** Run as `main.ts` with CNI_COMMAND and no argument (as an installed binary). */
  noSubcommand?: boolean;
}

/** Runs the plugin as a process. */
export async function cni(inv: Invoke): Promise<PluginRun> {
  const env: Record<string, string> = {
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    CNI_PATH: "/opt/cni/bin",
  };
  if (inv.command !== undefined) env.CNI_COMMAND = inv.command;
  if (inv.pod) {
    env.CNI_CONTAINERID = inv.pod.containerId;
    env.CNI_NETNS = inv.pod.netns;
    env.CNI_IFNAME = inv.pod.ifname;
  }
  for (const [k, v] of Object.entries(inv.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  const stdin = typeof inv.stdin === "string" ? inv.stdin : JSON.stringify(inv.stdin);
  const args = ["run", "-A", "--quiet", MAIN, ...(inv.noSubcommand ? [] : ["cni"])];
  const res: PluginRun = await run([DENO, ...args], {
    env,
    clearEnv: true,
    stdin,
    allowFail: true,
  });
  if (res.stdout.trim()) res.json = JSON.parse(res.stdout);
  return res;
}

/** Asserts a spec error result with the code; returns it. */
export function assertCniError(
  r: PluginRun,
  code: number,
  msgPart?: RegExp,
): Record<string, unknown> {
  assert.notEqual(r.code, 0, `expected failure, got success: ${r.stdout}`);
  assert.ok(r.json, `no error JSON on stdout (stderr: ${r.stderr})`);
  assert.equal(r.json.code, code, `wrong code: ${r.stdout}`);
  assert.equal(typeof r.json.msg, "string");
  assert.equal(typeof r.json.cniVersion, "string");
  if (msgPart) assert.match(String(r.json.msg), msgPart);
  return r.json;
}

export function assertOk(r: PluginRun): void {
  assert.equal(r.code, 0, `plugin failed: ${r.stdout} ${r.stderr}`);
}

/** Nothing of the pod left: no pins, no entry for its cookie. */
export function assertNothingFor(node: Node, pod: TestPod): void {
  const left = listPodAttachments(node.bpffs).filter((a) => podPinMatches(a, pod.containerId));
  assert.deepEqual(left.flatMap((a) => a.pins), []);
  const maps = DatapathMaps.open(node.bpffs);
  try {
    const cookie = podCookie(pod.containerId);
    assert.ok(!maps.pods().some((p) => p.entry.cookie === cookie), "entry left");
  } finally {
    maps.close();
  }
}

/** Every pod pin and entry under the root. */
export function podState(node: Node): { pins: string[]; entries: number } {
  let pins: string[] = [];
  try {
    pins = [...Deno.readDirSync(`${node.bpffs}/pods`)].map((e) => e.name);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const maps = DatapathMaps.open(node.bpffs);
  try {
    return { pins, entries: maps.pods().length };
  } finally {
    maps.close();
  }
}
