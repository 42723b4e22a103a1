/**
 * What tsnproxy does for each CNI verb. Imported lazily by ./main.ts, only for the verbs
 * that touch the datapath.
 *
 * ADD, for a pod interface: its host-side end (./host_side.ts), its policy (the node's,
 * lowered by the pod's layers: src/policy/resolve.ts), its carrier (src/bpf/carrier.ts,
 * from what the primary CNI attached there), its entry in tsnp_pods, then admit on the host
 * side and the saver in the pod. Everything that can be refused is checked before anything
 * is attached, and a failure after that undoes what was done.
 *
 * Concurrency: the runtime runs ADD/DEL/CHECK for many pods at once, each in its own process
 * (never two at once for the same container, the CNI spec says). Counter slots are handed
 * out by reading which are free, and an ifindex can be reused by a new pod whose ADD
 * overwrites an entry between a DEL's check and its delete: the map side of every verb holds
 * an exclusive flock on the pin root directory (bpffs supports flock); the lock dies with the
 * process, so a crashed plugin never blocks the node. Attaching and detaching happen outside
 * it: a tcx attach or detach waits for an RCU grace period, and under the lock concurrent ADDs
 * would wait for each other's. A plugin process waits for the lock in flock(2); the agent,
 * which runs verbs for many plugins on one thread that also answers its probes, polls for it
 * (src/util/flock.ts) for at most AGENT_NODE_LOCK_MS, then answers "try again later" (11):
 * a plugin that holds the lock (running a verb itself) or is stopped while holding it stalls
 * that one verb, never the agent.
 */
import {
  CniCode,
  KernelError,
  NotFoundError,
  NotInstalledError,
  TsnproxyError,
} from "../errors.ts";
import {
  admitIfindex,
  attachPodPrograms,
  detachHostSide,
  detachPodSide,
  HOST_HANDLES,
  listPodAttachments,
  ownedByEntry,
  podCookie,
  removePodEntry,
  writePodEntry,
} from "../bpf/pod.ts";
import { hasTcx, resolvePodTcApi } from "../bpf/features.ts";
import { type DatapathConfig, DatapathMaps } from "../bpf/maps.ts";
import {
  assertBpffs,
  attachmentId,
  MAPS,
  PinLayout,
  podPinMatches,
  PROGRAMS,
} from "../bpf/pins.ts";
import {
  type Attachment,
  CLSACT_HANDLES,
  clsactRunsPin,
  describePin,
  pinsOf,
} from "../bpf/attach.ts";
import {
  admitApi,
  type CarrierChoice,
  choosePodCarrier,
  reasonName,
  REASONS,
} from "../bpf/carrier.ts";
import { foreign, programsOn } from "../bpf/hooks.ts";
import {
  isLegacyPod,
  legacyPresent,
  programNameAt,
  removeLegacyPod,
  retireLegacyIfUnused,
} from "../bpf/legacy.ts";
import { netnsExists, netnsProblem, withNetns } from "../util/netns.ts";
import { closeFd, Errno, ifNameToIndex, O_RDONLY, strerror } from "../ffi/libc.ts";
import { flockWithin, openForLock } from "../util/flock.ts";
import { libbpf } from "../ffi/libbpf.ts";
import { log } from "../log.ts";
import type { PluginConfig } from "./config.ts";
import { type CniEnv, type JsonObject, parseCniArgs, podAddresses } from "./protocol.ts";
import { findHostSide } from "./host_side.ts";
import { layerFromCniArgs, layersFromRuntimeConfig } from "../policy/layers.ts";
import {
  describePolicy,
  type ResolvedPolicy,
  resolvePolicy,
  samePolicy,
} from "../policy/resolve.ts";
import { lexists } from "../util/fs.ts";

export interface Invocation {
  env: CniEnv;
  config: PluginConfig;
  /** Validated (and version-converted) prevResult, when the runtime passed one. */
  prevResult?: JsonObject;
  /** The node agent runs the verb (src/agent/cni_server.ts): locks are waited for politely. */
  inAgent?: boolean;
}

/** How long the agent waits for the node lock before answering "try again later". */
export const AGENT_NODE_LOCK_MS = 20_000;

// ---- shared helpers ---------------------------------------------------------------------

/** The node lock, held: release() unlocks (closing the file). */
interface NodeLock {
  release(): void;
}

/**
 * Holds an exclusive lock on the pin root; undefined when the root does not exist. A plugin
 * process blocks in flock(2); the agent polls, up to AGENT_NODE_LOCK_MS (see the header).
 */
async function lockRoot(bpffs: string, inAgent = false): Promise<NodeLock | undefined> {
  if (!inAgent) {
    let f: Deno.FsFile;
    try {
      f = Deno.openSync(bpffs, { read: true });
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
    f.lockSync(true);
    return {
      release() {
        try {
          f.unlockSync();
        } finally {
          f.close();
        }
      },
    };
  }
  const fd = openForLock(bpffs, O_RDONLY);
  if (fd === -Errno.ENOENT) return undefined;
  if (fd < 0) {
    throw new KernelError(
      `cannot open the pin root ${bpffs}: ${strerror(-fd)}`,
      "run as root",
      -fd,
    );
  }
  let held = false;
  try {
    held = await flockWithin(fd, bpffs, Date.now() + AGENT_NODE_LOCK_MS, {
      onWait: () => log("info", "waiting for the node lock", { bpffs }),
    });
  } finally {
    if (!held) closeFd(fd);
  }
  if (!held) {
    throw new TsnproxyError(
      `the node lock on ${bpffs} was held by another process for ${AGENT_NODE_LOCK_MS} ms ` +
        "(a plugin running a verb itself, or stopped while holding it); nothing was changed",
      "the runtime retries the call; `grep FLOCK /proc/locks` names the holder's pid",
      CniCode.TryAgainLater,
    );
  }
  return { release: () => closeFd(fd) };
}

function unlock(lock: NodeLock | undefined): void {
  lock?.release();
}

function notInstalled(bpffs: string, what: string): NotInstalledError {
  return new NotInstalledError(
    `tsnproxy is not installed on this node: ${what} (pin root ${bpffs})`,
  );
}

/** Runs fn under the node lock; throws the not-installed error without a pin root. */
async function withNodeLock<T>(
  bpffs: string,
  inAgent: boolean | undefined,
  fn: () => T,
): Promise<T> {
  const lock = await lockRoot(bpffs, inAgent);
  if (!lock) throw notInstalled(bpffs, `${bpffs} does not exist`);
  try {
    return fn();
  } finally {
    unlock(lock);
  }
}

/** The pod's policy: the node's (from the datapath), lowered by the pod's layers. */
export function resolvePodPolicy(inv: Invocation, node: DatapathConfig): ResolvedPolicy {
  const rc = layersFromRuntimeConfig(inv.config.runtimeConfig);
  return resolvePolicy(node.node, {
    entry: inv.config.policy,
    annotations: rc.annotations,
    runtimeConfig: rc.runtimeConfig,
    cniArgs: layerFromCniArgs(parseCniArgs(inv.env.args)),
  });
}

/** The node's carrier choice, as install wrote it into tsnp_config. */
export function nodeCarrier(cfg: DatapathConfig): CarrierChoice {
  return { carrier: cfg.tags ? "tag" : "stage", reason: reasonName(cfg.carrierReason) };
}

/**
 * CNI_NETNS must be a network namespace this process can enter: what it is instead (gone, a
 * FIFO, a file, another namespace type) is the error, found without blocking
 * (src/util/netns.ts).
 */
function netnsMustExist(netns: string): void {
  const problem = netnsProblem(netns);
  if (!problem) return;
  if (problem.missing) {
    throw new NotFoundError(
      `network namespace ${netns} does not exist (CNI_NETNS): ${problem.reason}`,
      "the runtime passed a namespace that is gone or was never created; nothing was attached",
    );
  }
  throw new NotFoundError(
    `CNI_NETNS is not a network namespace: ${problem.reason}`,
    "the runtime must pass the path of the pod's network namespace (e.g. " +
      "/var/run/netns/cni-... or /proc/<pid>/ns/net); nothing was attached",
  );
}

function missingPrevResult(verb: string): TsnproxyError {
  return new TsnproxyError(
    `${verb} without prevResult: tsnproxy is a chained plugin and needs the primary CNI's Result`,
    'put {"type": "tsnproxy"} after the primary CNI in a conflist ("plugins": [...]) with ' +
      "cniVersion 0.3.0 or later (`tsnproxy install` does this)",
    CniCode.InvalidNetworkConfig,
  );
}

/**
 * Turns libbpf's printing off. Its default printer writes to stderr, which a runtime may put in
 * its logs, e.g. "Exclusivity flag on" whenever a pod's clsact qdisc exists already. Every
 * failure the plugin reports comes from a return code, with its own message.
 */
function quietLibbpf(): void {
  libbpf().libbpf_set_print(null);
}

/**
 * The datapath's maps, for a verb that needs them. Missing pins say why: no bpf filesystem
 * (a node just booted, or a container without the host's /sys/fs/bpf), or a node where this
 * build's datapath is not (yet) loaded, e.g. after a reboot before the agent re-installed it.
 */
function openMaps(bpffs: string): { maps: DatapathMaps; node: DatapathConfig } {
  const maps = DatapathMaps.open(bpffs);
  try {
    // Opens the pins: not installed (or another ABI only) fails here.
    return { maps, node: maps.readConfig() };
  } catch (e) {
    maps.close();
    if (e instanceof NotInstalledError) {
      assertBpffs(bpffs);
      throw new NotInstalledError(
        `${e.message}: this node's tsnproxy datapath is not loaded (nothing was attached)`,
        "run `tsnproxy install` on this node; in a cluster the tsnproxy DaemonSet's pod does " +
          "it when it starts (after a reboot, wait for it and retry: the runtime retries ADD)",
      );
    }
    throw e;
  }
}

// ---- ADD --------------------------------------------------------------------------------

export async function cmdAdd(inv: Invocation): Promise<void> {
  const { env, config } = inv;
  const prev = inv.prevResult;
  if (!prev) throw missingPrevResult("ADD");
  netnsMustExist(env.netns);
  quietLibbpf();
  const { maps, node } = openMaps(config.bpffs);
  try {
    const resolved = resolvePodPolicy(inv, node); // a bad layer fails here, before anything
    const host = await findHostSide(env.netns, env.ifname, prev);
    const hostPrograms = programsOn(host.name, "ingress", { netkit: host.kind === "netkit" });
    const hostForeign = foreign(hostPrograms);
    const choice = choosePodCarrier(
      { restoreAt: config.restoreAt, node: nodeCarrier(node) },
      hostForeign,
    );
    const req = {
      bpffs: config.bpffs,
      containerId: env.containerId,
      ifname: env.ifname,
      netns: env.netns,
      api: resolvePodTcApi(config.attachMode),
      host,
      hostApi: admitApi(host.kind, config.attachMode, hasTcx(), hostPrograms),
    };
    const entry = await withNodeLock(config.bpffs, inv.inAgent, () => {
      Deno.mkdirSync(new PinLayout(config.bpffs).podsDir, { recursive: true });
      // A retried ADD that finds another host side (the pod's veth was re-created) leaves
      // no entry behind under the old one.
      const before = admitIfindex(req);
      if (
        before && before !== host.index &&
        maps.getPod(before)?.cookie === podCookie(env.containerId)
      ) maps.deletePod(before);
      return writePodEntry(maps, {
        containerId: env.containerId,
        host,
        carrier: choice.carrier,
        reason: REASONS[choice.reason],
      }, resolved.policy);
    });
    let done: Attachment[];
    try {
      done = attachPodPrograms(req);
    } catch (e) {
      // Nothing half-attached: attachPodPrograms undid its own part, this undoes the map's.
      // The attach error is the one to report; an entry left behind by an undo that could
      // not get the lock is the runtime's DEL's to remove.
      await withNodeLock(
        config.bpffs,
        inv.inAgent,
        () =>
          removePodEntry(maps, {
            bpffs: config.bpffs,
            containerId: env.containerId,
            hostIndex: host.index,
          }),
      ).catch((u) =>
        log("warn", "ADD failed and its pod entry could not be removed yet", {
          error: String(u),
        })
      );
      throw e;
    }
    log("info", "attached", {
      containerId: env.containerId,
      ifname: env.ifname,
      host: `${host.name} (${host.kind}, ifindex ${host.index})`,
      carrier: choice.carrier,
      carrierReason: choice.reason,
      ...(choice.programs ? { foreignPrograms: choice.programs } : {}),
      admit: req.hostApi,
      saver: req.api,
      slot: entry.slot,
      policy: describePolicy(resolved.policy),
      policyFrom: resolved.from,
      ...(resolved.refused.length ? { policyRefused: resolved.refused } : {}),
      addresses: podAddresses(prev, env.ifname),
      pins: done.map((a) => a.pin),
    });
  } finally {
    maps.close();
  }
}

// ---- DEL --------------------------------------------------------------------------------

/**
 * The pod's host-side ifindex now, found as ADD finds it: only a filter there is this pod's
 * to remove (admit's recorded ifindex may have been recycled for another pod), and it finds
 * the entry of a pod whose admit pin is gone (removed by hand, or a crash between the pins
 * and the entry; removePodEntry still checks the entry's cookie).
 */
async function liveHostIndex(inv: Invocation): Promise<number | undefined> {
  if (!inv.env.netns || !netnsExists(inv.env.netns)) return undefined;
  try {
    return (await findHostSide(inv.env.netns, inv.env.ifname, inv.prevResult ?? {})).index;
  } catch {
    return undefined; // no peer any more: removePodEntry sweeps entries of gone interfaces
  }
}

export async function cmdDel(inv: Invocation): Promise<void> {
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
  };
  // The pod's host interface now (none once its namespace is gone: the pair died with it).
  const live = await liveHostIndex(inv);
  const hostIndex = admitIfindex(req) ?? live;
  // Outside the lock: a tcx detach waits for RCU.
  let removed = detachPodSide(req);
  if (live !== undefined) removed += detachHostSide(req, (ifindex) => ifindex === live);
  const lock = await lockRoot(config.bpffs, inv.inAgent);
  if (lock) {
    try {
      let maps: DatapathMaps | undefined;
      try {
        maps = DatapathMaps.open(config.bpffs);
      } catch (e) {
        // This ABI's maps gone (uninstalled, or only release 0.1.0's datapath here).
        if (!(e instanceof NotInstalledError)) throw e;
      }
      try {
        // Without the pod's namespace (containerd's second DEL, or a runtime that leaves it
        // out), tsnp_pods says whether the interface admit's pin names is still this pod's.
        if (live === undefined) removed += detachHostSide(req, ownedByEntry(maps, env.containerId));
        if (maps) {
          removePodEntry(maps, { bpffs: config.bpffs, containerId: env.containerId, hostIndex });
        }
      } finally {
        maps?.close();
      }
      if (legacyPresent(config.bpffs)) {
        removeLegacyPod(config.bpffs, env.containerId);
        if (retireLegacyIfUnused(config.bpffs, listPodAttachments(config.bpffs))) {
          log("info", "release 0.1.0's datapath retired: its last pod is gone", {});
        }
      }
    } finally {
      unlock(lock);
    }
  } else if (live === undefined) {
    removed += detachHostSide(req, () => false); // no lock, no owner known: only the pin
  }
  log("info", "detached", { containerId: env.containerId, ifname: env.ifname, removed });
}

// ---- CHECK ------------------------------------------------------------------------------

const ROLE_OF: Record<string, string> = { tsnp_save: "the saver", tsnp_admit: "admit" };

/** Problems with one attachment (empty = fine). */
function checkAttachment(
  pin: string,
  ifname: string,
  netns: string | undefined,
  program: string,
  handles: readonly number[],
  wantApi?: string,
): string[] {
  let a: Attachment;
  try {
    a = describePin(pin);
  } catch (e) {
    return [`${pin}: ${e instanceof Error ? e.message : String(e)}`];
  }
  const apiProblem = wantApi !== undefined && a.api !== wantApi
    ? [`${ROLE_OF[program]} is attached with ${a.api}, attachMode asks for ${wantApi}`]
    : [];
  const ifindex = withNetns(netns, () => ifNameToIndex(ifname));
  if (ifindex === 0) {
    return [`interface ${ifname} does not exist${netns ? ` in ${netns}` : ""}`, ...apiProblem];
  }
  const out: string[] = [];
  if (a.ifindex !== ifindex) {
    out.push(`${pin} is on ifindex ${a.ifindex}, but ${ifname} is ifindex ${ifindex} (recreated?)`);
  }
  const running = programNameAt(pin);
  if (running !== program) out.push(`${pin} runs ${running ?? "nothing"}, not ${program}`);
  // A link lives while pinned; a clsact filter can be deleted behind the pin's back.
  if (a.api === "clsact" && !clsactRunsPin(pin, a, handles, netns)) {
    out.push(`${ROLE_OF[program]}'s clsact filter on ${ifname} ${a.direction} is gone`);
  }
  return [...out, ...apiProblem];
}

export async function cmdCheck(inv: Invocation): Promise<void> {
  const { env, config } = inv;
  const prev = inv.prevResult;
  if (!prev) throw missingPrevResult("CHECK");
  netnsMustExist(env.netns);
  quietLibbpf();
  const pins = new PinLayout(config.bpffs);
  const missing = [
    ...Object.keys(PROGRAMS).map((r) => pins.prog(r as keyof typeof PROGRAMS)),
    ...MAPS.map((m) => pins.map(m)),
  ].filter((p) => !lexists(p));
  if (missing.length) throw notInstalled(config.bpffs, `missing ${missing.join(", ")}`);
  const problems: string[] = [];
  const podSide = pinsOf(pins.pod(env.containerId, env.ifname, "pod"));
  const hostSide = pinsOf(pins.pod(env.containerId, env.ifname, "host"));
  if (podSide.length === 0) problems.push(`no saver attached for ${env.containerId} ${env.ifname}`);
  // The saver's tc API, when the entry names one.
  const wantApi = config.attachMode === "auto" ? undefined : resolvePodTcApi(config.attachMode);
  for (const p of podSide) {
    problems.push(
      ...checkAttachment(p, env.ifname, env.netns, "tsnp_save", [CLSACT_HANDLES.save], wantApi),
    );
  }
  const host = await findHostSide(env.netns, env.ifname, prev);
  if (hostSide.length === 0) problems.push(`no admit attached on ${host.name}`);
  for (const p of hostSide) {
    problems.push(...checkAttachment(p, host.name, undefined, "tsnp_admit", HOST_HANDLES));
  }
  const maps = DatapathMaps.open(config.bpffs);
  try {
    const node = maps.readConfig();
    const want = resolvePodPolicy(inv, node).policy;
    const got = maps.getPod(host.index);
    if (!got) problems.push(`no entry for ${host.name} (ifindex ${host.index}) in tsnp_pods`);
    else if (got.cookie !== podCookie(env.containerId)) {
      problems.push(`the entry for ${host.name} belongs to another pod`);
    } else if (!samePolicy(got.policy, want)) {
      problems.push(
        `the policy is ${JSON.stringify(describePolicy(got.policy))}, the config resolves to ` +
          JSON.stringify(describePolicy(want)),
      );
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

// ---- STATUS -----------------------------------------------------------------------------

/** Pins an ADD needs; STATUS stats them only (no libbpf), it is polled often. */
export function cmdStatus(config: PluginConfig): void {
  const pins = new PinLayout(config.bpffs);
  const needed = [
    pins.prog("save"),
    pins.prog("admit"),
    pins.map("tsnp_pods"),
    pins.map("tsnp_config"),
    pins.map("tsnp_slots"),
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
export async function cmdGc(
  config: PluginConfig,
  valid: readonly GcAttachmentRef[],
  inAgent = false,
): Promise<number> {
  const lock = await lockRoot(config.bpffs, inAgent);
  if (!lock) return 0;
  quietLibbpf();
  try {
    const stale = listPodAttachments(config.bpffs).filter((a) =>
      !valid.some((v) => podPinMatches(a, v.containerID))
    );
    let removed = 0;
    const maps = lexists(new PinLayout(config.bpffs).map("tsnp_pods"))
      ? DatapathMaps.open(config.bpffs)
      : undefined;
    try {
      for (const a of stale) {
        // Pod side: a link detaches on unpin; a clsact filter lives in a namespace we cannot
        // name safely (the recorded path may have been reused by another pod), so only
        // unpin: it dies with its namespace. Host side: in our namespace.
        const id = attachmentId(a);
        const legacy = isLegacyPod(a);
        if (id) {
          const { containerId, ifname } = id;
          const hostIndex = admitIfindex({ bpffs: config.bpffs, containerId, ifname });
          const req = { bpffs: config.bpffs, containerId, ifname };
          removed += detachPodSide(req) + detachHostSide(req, ownedByEntry(maps, containerId));
          if (maps) removePodEntry(maps, { bpffs: config.bpffs, containerId, hostIndex });
          if (legacy) removeLegacyPod(config.bpffs, containerId);
        }
        for (const p of a.pins) {
          if (lexists(p)) {
            Deno.removeSync(p);
            removed++;
          }
        }
      }
    } finally {
      maps?.close();
    }
    retireLegacyIfUnused(config.bpffs, listPodAttachments(config.bpffs));
    log("info", "GC", { stale: stale.map((a) => a.name), removed });
    return removed;
  } finally {
    unlock(lock);
  }
}
