/**
 * What tsnproxy does for each CNI verb. Imported lazily by ./main.ts, only for the verbs
 * that touch the datapath.
 *
 * Concurrency: the runtime runs ADD/DEL/CHECK for many pods at once, each in its own
 * process (never two at once for the same container, the CNI spec says). Per-pod pins have
 * per-pod names and BPF map updates are atomic per element, but DEL removes a pod's
 * policies by checking the owner of each entry, an address can be reused by a new pod whose
 * ADD overwrites the entry between that check and the delete, and counter slots are handed
 * out by reading which are free. The map side of every verb therefore holds an exclusive
 * flock on the pin root directory (bpffs supports flock); the lock dies with the process, so
 * a crashed plugin never blocks the node. Attaching and detaching the pod's own programs
 * happen outside it: a tcx attach or detach waits for an RCU grace period, and under the
 * lock concurrent ADDs would wait for each other's. The pods directory is created with a
 * recursive mkdir, which tolerates a concurrent creator.
 */
import { CniCode, NotFoundError, NotInstalledError, TsnproxyError } from "../errors.ts";
import {
  attachSavers,
  detachAttachments,
  hostVethPin,
  podCookie,
  podPin,
  removePodPolicies,
  writePodPolicies,
} from "../bpf/pod.ts";
import { resolvePodTcApi, resolveTcApi } from "../bpf/features.ts";
import { addrFromKey, addrKey, DatapathMaps } from "../bpf/maps.ts";
import { MAPS, PinLayout, podAttachmentName, PROGRAMS } from "../bpf/pins.ts";
import { type Attachment, clsactProgId, describePin, detach, pinsOf } from "../bpf/attach.ts";
import { progIdAt } from "../bpf/sys.ts";
import { netnsExists, withNetns } from "../util/netns.ts";
import { ifNameToIndex } from "../ffi/libc.ts";
import { libbpf } from "../ffi/libbpf.ts";
import { log } from "../log.ts";
import type { PluginConfig } from "./config.ts";
import {
  type CniEnv,
  hostInterfaces,
  type JsonObject,
  parseCniArgs,
  podAddresses,
} from "./protocol.ts";
import {
  layerFromSaver,
  mergePolicy,
  policyFromCniArgs,
  policyFromRuntimeConfig,
  sameSaverPolicy,
  type SaverPolicy,
  toSaver,
} from "./pod_policy.ts";
import { lexists } from "../util/fs.ts";

export interface Invocation {
  env: CniEnv;
  config: PluginConfig;
  /** Validated (and version-converted) prevResult, when the runtime passed one. */
  prevResult?: JsonObject;
}

// ---- shared helpers ---------------------------------------------------------------------

/** Holds an exclusive lock on the pin root; undefined when the root does not exist. */
function lockRoot(bpffs: string): Deno.FsFile | undefined {
  let f: Deno.FsFile;
  try {
    f = Deno.openSync(bpffs, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  f.lockSync(true);
  return f;
}

function unlock(f: Deno.FsFile | undefined): void {
  if (!f) return;
  try {
    f.unlockSync();
  } finally {
    f.close();
  }
}

function notInstalled(bpffs: string, what: string): NotInstalledError {
  return new NotInstalledError(
    `tsnproxy is not installed on this node: ${what} (pin root ${bpffs})`,
  );
}

/** The pod's policy: every layer merged, in the datapath's form. */
export function resolvePodPolicy(inv: Invocation, nodeDefault: SaverPolicy): SaverPolicy {
  const rc = policyFromRuntimeConfig(inv.config.runtimeConfig);
  const merged = mergePolicy({
    node: layerFromSaver(nodeDefault),
    entry: inv.config.policy,
    annotations: rc.annotations,
    runtimeConfig: rc.runtimeConfig,
    cniArgs: policyFromCniArgs(parseCniArgs(inv.env.args)),
  });
  return toSaver(merged);
}

function netnsMustExist(netns: string): void {
  if (!netnsExists(netns)) {
    throw new NotFoundError(
      `network namespace ${netns} does not exist (CNI_NETNS)`,
      "the runtime passed a namespace that is gone or was never created; nothing was attached",
    );
  }
}

/** The host side of the pod's veth: peer ifindex pairing over rtnetlink, checked both ways. */
async function findHostVeth(netns: string, ifname: string, prev: JsonObject): Promise<string> {
  const { findLink, getLink } = await import("../netlink/link.ts");
  const pod = withNetns(netns, () => getLink(ifname));
  const hint = "restoreAt host-veth-ingress needs a veth pod interface whose peer is in the " +
    "node's namespace (bridge/ptp-style primary CNIs); otherwise use restoreAt tsn-egress";
  if (pod.kind !== "veth" || pod.link === undefined) {
    throw new NotFoundError(
      `${ifname} in ${netns} is not a veth (kind ${pod.kind ?? "none"})`,
      hint,
    );
  }
  const pairs = (name: string | number) => {
    const l = findLink(name);
    return l?.kind === "veth" && l.link === pod.index ? l.name : undefined;
  };
  // The Result's host interfaces disambiguate an ifindex that exists in several namespaces.
  for (const name of hostInterfaces(prev)) {
    const found = pairs(name);
    if (found) return found;
  }
  const found = pairs(pod.link);
  if (found) return found;
  throw new NotFoundError(`the host-side peer of ${ifname} in ${netns} was not found`, hint);
}

// ---- ADD --------------------------------------------------------------------------------

export async function cmdAdd(inv: Invocation): Promise<void> {
  const { env, config } = inv;
  const prev = inv.prevResult;
  if (!prev) throw missingPrevResult("ADD");
  netnsMustExist(env.netns);
  const ips = podAddresses(prev, env.ifname);
  if (ips.length === 0) {
    log("warn", "prevResult has no addresses for the pod interface: no per-pod policy", {
      containerId: env.containerId,
      ifname: env.ifname,
    });
  }
  quietLibbpf();
  const api = resolvePodTcApi(config.attachMode);
  const hostVeth = config.restoreAt === "host-veth-ingress"
    ? await findHostVeth(env.netns, env.ifname, prev)
    : undefined;
  const hostApi = hostVeth ? resolveTcApi(config.attachMode) : undefined;
  const maps = DatapathMaps.open(config.bpffs); // opens pins on first use
  try {
    const policy = withNodeLock(config.bpffs, () => {
      const p = resolvePodPolicy(inv, maps.readConfig().defaultPolicy);
      Deno.mkdirSync(new PinLayout(config.bpffs).podsDir, { recursive: true });
      writePodPolicies(maps, { containerId: env.containerId, ips, policy: p });
      return p;
    });
    const req = {
      bpffs: config.bpffs,
      containerId: env.containerId,
      ifname: env.ifname,
      netns: env.netns,
      api,
      hostApi,
      ips,
      policy,
      hostVeth,
    };
    let done: Attachment[];
    try {
      done = attachSavers(req);
    } catch (e) {
      // Nothing half-attached: attachSavers undid its own part, this undoes the maps'.
      withNodeLock(config.bpffs, () => removePodPolicies(maps, req));
      throw e;
    }
    log("info", "attached", {
      containerId: env.containerId,
      ifname: env.ifname,
      api,
      ips,
      hostVeth,
      hostApi,
      maxPriority: policy.maxPriority,
      remap: policy.remap,
      pins: done.map((a) => a.pin),
    });
  } finally {
    maps.close();
  }
}

/**
 * Turns libbpf's printing off. Its default printer writes to stderr, which a runtime may put in
 * its logs, e.g. "Exclusivity flag on" whenever a pod's clsact qdisc exists already. Every
 * failure the plugin reports comes from a return code, with its own message.
 */
function quietLibbpf(): void {
  libbpf().libbpf_set_print(null);
}

/** Runs fn under the node lock; throws the not-installed error without a pin root. */
function withNodeLock<T>(bpffs: string, fn: () => T): T {
  const lock = lockRoot(bpffs);
  if (!lock) throw notInstalled(bpffs, `${bpffs} does not exist`);
  try {
    return fn();
  } finally {
    unlock(lock);
  }
}

function missingPrevResult(verb: string): TsnproxyError {
  return new TsnproxyError(
    `${verb} without prevResult: tsnproxy is a chained plugin and needs the primary CNI's Result`,
    'put {"type": "tsnproxy"} after the primary CNI in a conflist ("plugins": [...]) with ' +
      "cniVersion 0.3.0 or later (`tsnproxy install` does this)",
    CniCode.InvalidNetworkConfig,
  );
}

// ---- DEL --------------------------------------------------------------------------------

export function cmdDel(inv: Invocation): void {
  const { env, config } = inv;
  if (!lexists(config.bpffs)) {
    log("info", "DEL: pin root does not exist, nothing to remove", { bpffs: config.bpffs });
    return;
  }
  quietLibbpf();
  const req = {
    bpffs: config.bpffs,
    containerId: env.containerId,
    ifname: env.ifname,
    // A namespace that is gone is passed on: detach() skips its filters, they died with it.
    // Without one (containerd's second DEL) only the pod side's pin is removed.
    netns: env.netns || undefined,
    ips: inv.prevResult ? podAddresses(inv.prevResult, env.ifname) : undefined,
  };
  const removed = detachAttachments(req); // outside the lock: a tcx detach waits for RCU
  const lock = lockRoot(config.bpffs);
  if (lock) {
    const maps = DatapathMaps.open(config.bpffs);
    try {
      removePodPolicies(maps, req);
    } catch (e) {
      // Maps gone (node uninstalled): the pins were removed before the maps were needed.
      if (!(e instanceof NotInstalledError)) throw e;
    } finally {
      maps.close();
      unlock(lock);
    }
  }
  log("info", "detached", { containerId: env.containerId, ifname: env.ifname, removed });
}

// ---- CHECK ------------------------------------------------------------------------------

/** Problems with one attachment (empty = fine). */
function checkAttachment(
  pin: string,
  expectApi: "tcx" | "clsact" | undefined,
  ifname: string,
  netns: string | undefined,
  progId: number | undefined,
): string[] {
  const out: string[] = [];
  let a: Attachment;
  try {
    a = describePin(pin);
  } catch (e) {
    return [`${pin}: ${e instanceof Error ? e.message : String(e)}`];
  }
  if (expectApi && a.api !== expectApi) {
    out.push(`${pin} is attached with ${a.api}, the config says attachMode ${expectApi}`);
  }
  const ifindex = withNetns(netns, () => ifNameToIndex(ifname));
  if (ifindex === 0) {
    return [...out, `interface ${ifname} does not exist${netns ? ` in ${netns}` : ""}`];
  }
  if (a.ifindex !== ifindex) {
    out.push(
      `${pin} is on ifindex ${a.ifindex}, but ${ifname} is ifindex ${ifindex} (interface recreated?)`,
    );
  }
  if (a.api === "clsact") {
    const id = withNetns(netns, () => clsactProgId(a.ifindex, a.direction));
    if (id === undefined) out.push(`the cls_bpf filter of ${pin} is missing on ${ifname}`);
    else if (progId !== undefined && id !== progId) {
      out.push(
        `the cls_bpf filter on ${ifname} runs program ${id}, not the pinned one (${progId})`,
      );
    }
  }
  return out;
}

export function cmdCheck(inv: Invocation): void {
  const { env, config } = inv;
  const prev = inv.prevResult;
  if (!prev) throw missingPrevResult("CHECK");
  netnsMustExist(env.netns);
  quietLibbpf();
  const pins = new PinLayout(config.bpffs);
  const missing = [
    ...Object.keys(PROGRAMS).filter((r) =>
      !lexists(pins.prog(r as keyof typeof PROGRAMS)) && r !== "gcStart"
    ).map((r) => pins.prog(r as keyof typeof PROGRAMS)),
    ...MAPS.filter((m) => !lexists(pins.map(m))).map((m) => pins.map(m)),
  ];
  if (missing.length) throw notInstalled(config.bpffs, `missing ${missing.join(", ")}`);
  const problems: string[] = [];
  const api = config.attachMode === "auto" ? undefined : config.attachMode;
  const podSide = pinsOf(podPin(config.bpffs, env.containerId, env.ifname));
  const hostSide = pinsOf(hostVethPin(config.bpffs, env.containerId, env.ifname));
  if (podSide.length === 0) {
    problems.push(`no saver attachment pinned for container ${env.containerId} ${env.ifname}`);
  }
  const saveId = progIdAt(pins.prog("save"));
  for (const p of podSide) problems.push(...checkAttachment(p, api, env.ifname, env.netns, saveId));
  if (config.restoreAt === "host-veth-ingress") {
    if (hostSide.length === 0) problems.push("no restorer attachment on the host-side veth");
    const restoreId = progIdAt(pins.prog("restore"));
    for (const p of hostSide) {
      let hostIf: string | undefined;
      try {
        hostIf = ifNameOf(describePin(p).ifindex);
      } catch { /* reported below */ }
      if (!hostIf) problems.push(`${p}: its host interface no longer exists`);
      else problems.push(...checkAttachment(p, api, hostIf, undefined, restoreId));
    }
  } else if (hostSide.length) {
    problems.push(
      `a host-veth restorer is attached but the config says restoreAt ${config.restoreAt}`,
    );
  }
  // Policies: every pod address has this pod's entry with the resolved policy.
  const maps = DatapathMaps.open(config.bpffs);
  try {
    const want = resolvePodPolicy(inv, maps.readConfig().defaultPolicy);
    const cookie = podCookie(env.containerId);
    const have = new Map(maps.policies().map((e) => [e.ip, e.policy]));
    for (const ip of podAddresses(prev, env.ifname)) {
      const got = have.get(canonicalIp(ip));
      if (!got) problems.push(`no policy entry for ${ip}`);
      else if (got.podCookie !== cookie) {
        problems.push(`the policy entry for ${ip} belongs to another pod`);
      } else if (!sameSaverPolicy(got, want)) {
        problems.push(
          `the policy for ${ip} is ${
            JSON.stringify({ maxPriority: got.maxPriority, remap: got.remap })
          }, ` +
            `the config resolves to ${JSON.stringify(want)}`,
        );
      }
    }
  } finally {
    maps.close();
  }
  if (problems.length) {
    throw new TsnproxyError(
      `CHECK failed for ${env.containerId} ${env.ifname}: ${problems.join("; ")}`,
      "delete and re-create the pod (or re-run ADD); `tsnproxy doctor` shows the node's state",
      CniCode.CheckFailed,
    );
  }
}

function ifNameOf(ifindex: number): string | undefined {
  const dir = "/sys/class/net";
  for (const e of Deno.readDirSync(dir)) {
    try {
      if (Number(Deno.readTextFileSync(`${dir}/${e.name}/ifindex`).trim()) === ifindex) {
        return e.name;
      }
    } catch { /* raced with a deletion */ }
  }
  return undefined;
}

/** The policy map's textual form of an address. */
function canonicalIp(ip: string): string {
  return addrFromKey(addrKey(ip));
}

// ---- STATUS -----------------------------------------------------------------------------

/** Pins an ADD needs; STATUS stats them only (no libbpf), it is polled often. */
export function cmdStatus(config: PluginConfig): void {
  const pins = new PinLayout(config.bpffs);
  const needed = [
    pins.prog("save"),
    ...(config.restoreAt === "host-veth-ingress" ? [pins.prog("restore")] : []),
    pins.map("tsnp_policy"),
    pins.map("tsnp_config"),
    pins.map("tsnp_meta"),
    pins.map("tsnp_pod_stats"),
  ];
  const missing = needed.filter((p) => !lexists(p));
  if (missing.length) {
    throw new TsnproxyError(
      `tsnproxy cannot attach pods: ${missing.join(", ")} missing`,
      "run `tsnproxy install` on this node (or apply deploy/tsnproxy.yaml)",
      CniCode.PluginNotAvailable,
    );
  }
}

// ---- GC ---------------------------------------------------------------------------------

export interface GcAttachmentRef {
  containerID: string;
  ifname: string;
}

/**
 * Removes pod attachments whose container id is in no valid attachment. Matching is by
 * container id only (not ifname): another network's GC lists the same sandboxes under its
 * own ifnames, so keeping every attachment of a listed container never deletes a live one.
 */
export function cmdGc(config: PluginConfig, valid: readonly GcAttachmentRef[]): number {
  const lock = lockRoot(config.bpffs);
  if (!lock) return 0;
  quietLibbpf();
  try {
    const dir = new PinLayout(config.bpffs).podsDir;
    const keepPrefixes = valid.map((a) => podAttachmentName(a.containerID, ""));
    let names: string[] = [];
    try {
      names = [...Deno.readDirSync(dir)].map((e) => e.name);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    const stale = new Set<string>();
    for (const n of names) {
      const base = n.replace(/@clsact-.*$/, "").replace(/@host$/, "");
      if (!keepPrefixes.some((k) => base.startsWith(k))) stale.add(base);
    }
    const cookies = new Set<bigint>();
    let removed = 0;
    for (const base of stale) {
      // Pod side: a tcx link detaches on unpin; a clsact filter lives in a namespace we
      // cannot name safely (the recorded path may have been reused by another pod), so only
      // unpin: it dies with its namespace. Host veth side: in our namespace.
      removed += detach(`${dir}/${base}`, { unpinOnly: true });
      removed += detach(`${dir}/${base}@host`, {});
      // The container id is the name up to one of its '_' (ids are [A-Za-z0-9_.-]).
      for (let i = base.indexOf("_"); i > 0; i = base.indexOf("_", i + 1)) {
        cookies.add(podCookie(base.slice(0, i)));
      }
    }
    if (cookies.size) {
      const validCookies = new Set(valid.map((a) => podCookie(a.containerID)));
      const maps = DatapathMaps.open(config.bpffs);
      try {
        for (const { ip, policy } of maps.policies()) {
          if (cookies.has(policy.podCookie) && !validCookies.has(policy.podCookie)) {
            maps.deletePolicy(ip);
          }
        }
        for (const c of cookies) if (!validCookies.has(c)) maps.releaseSlot(c);
      } catch (e) {
        if (!(e instanceof NotInstalledError)) throw e;
      } finally {
        maps.close();
      }
    }
    log("info", "GC", { stale: [...stale], removed });
    return removed;
  } finally {
    unlock(lock);
  }
}
