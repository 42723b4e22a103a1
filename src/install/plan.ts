/**
 * The node install plan: every change `tsnproxy install` would make, computed from the
 * machine's current state before anything is touched, printed by `--dry-run` (and before a
 * real run), then executed in this order:
 *
 *   1. qdisc     clsact first on the clsact path, the repair, the configured root (first
 *                because it fails most often, and on failure it undoes itself: nothing changed)
 *   2. datapath  load, verify and pin the programs; write the node config map (the carrier,
 *                from what else runs on the node's devices; the node's policy)
 *   3. binary    the plugin executable in the CNI bin dir (after its datapath: a plugin of
 *                this build finds its own ABI's pins)
 *   4. restorer  tsnp_restore on each TSN interface's egress (after clsact and the root)
 *   5. vlan      a VLAN TSN interface's egress-qos-map entries from the config (vlan_plan.ts)
 *   6. conflist  the tsnproxy entry at the end of the primary network's chain (last: the
 *                runtime only calls the plugin once the node can serve it)
 *   7. state     what install created that the machine cannot tell later (state.ts)
 *
 * Steps 1, 4 and 5 are per TSN interface (the node config's tsnInterfaces, or the single
 * tsnInterface): one qdisc, one restorer and at most one vlan step for each. Planning again
 * after a run yields no change: every step compares with what is there. The agent reuses
 * steps 1, 4, 5 and 6 to heal what the primary CNI or an interface flap undid.
 */
import { flockWithinSync, openForLock } from "../util/flock.ts";
import { KernelError, TsnproxyError } from "../errors.ts";
import { type Attachment, type TcApi } from "../bpf/attach.ts";
import { loadDatapath, type ProgramState } from "../bpf/loader.ts";
import { type DatapathConfig, DatapathMaps } from "../bpf/maps.ts";
import {
  attachRestorer,
  detachRestorer,
  nodeForeignPrograms,
  replaceRestorer,
  restorerInterfaces,
  restorerStatus,
} from "../bpf/node.ts";
import { assertBpffs, MAPS, PinLayout, PROGRAMS } from "../bpf/pins.ts";
import { type CarrierChoice, chooseNodeCarrier, REASONS, reasonText } from "../bpf/carrier.ts";
import { isLegacyPod, legacyPresent, retireLegacyIfUnused } from "../bpf/legacy.ts";
import { type CarrierChange, listPodAttachments, retunePodCarriers } from "../bpf/pod.ts";
import type { NodeConfig, TsnInterfaceConfig } from "../config/node.ts";
import { qosPairs } from "../config/vlan.ts";
import { compileNode, describePolicy, samePolicy } from "../policy/resolve.ts";
import { POD_ANNOTATIONS_CAPABILITY } from "../policy/types.ts";
import { closeFd, ifIndexToName, ifNameToIndex, O_RDONLY } from "../ffi/libc.ts";
import {
  apply as applyConflist,
  type Plan as ConflistPlan,
  planInstall as planConflistInstall,
  PLUGIN_TYPE,
  type TsnproxyEntry,
} from "./conflist.ts";
import { applyBinary, type BinaryPlan, binarySource, planBinary } from "./binary.ts";
import {
  applyQdiscPlan,
  formatQdiscStep,
  planQdisc,
  type QdiscPlan,
  usesClsact,
} from "./qdisc_plan.ts";
import type { InstallPlanJson } from "./plan_schema.ts";
import {
  type InstallState,
  type InterfaceState,
  interfaceState,
  readState,
  sameState,
  statePath,
  withInterface,
  writeState,
} from "./state.ts";
import {
  applyVlanPlan,
  formatQosMap,
  formatVlanChanges,
  planVlan,
  predictVlanState,
  type VlanPlan,
} from "./vlan_plan.ts";
import { recoverInterruptedWrites } from "./atomic.ts";
import { exists } from "../util/fs.ts";

export interface InstallTarget {
  cfg: NodeConfig;
  /** The TSN interfaces (at least one), in config order. */
  tsnInterfaces: TsnInterfaceConfig[];
  api: TcApi;
  stateDir: string;
  /** Update conflists in place (flag, config, or the installer's default). */
  inPlace: boolean;
}

/**
 * The entry install puts at the end of the primary network's chain. It declares the pod
 * annotations capability, so containerd and CRI-O pass a pod's `tsnproxy.io/*` annotations
 * (its lower-only policy layer) in runtimeConfig. The node's own policy is not copied here:
 * it lives in the pinned node config, where a conflist author cannot change it.
 */
export function pluginEntry(t: InstallTarget): TsnproxyEntry {
  const e: TsnproxyEntry = {
    type: PLUGIN_TYPE,
    // The plugin restores nothing by interface (the restorers do, on every TSN interface):
    // the field names the first, as release 0.1.0's entry named the only one.
    tsnInterface: t.tsnInterfaces[0].name,
    restoreAt: t.cfg.restoreAt,
    bpffs: t.cfg.bpffs,
    attachMode: t.cfg.attachMode,
    capabilities: { [POD_ANNOTATIONS_CAPABILITY]: true },
  };
  if (t.cfg.cni.agentSocket) e.agentSocket = t.cfg.cni.agentSocket;
  return e;
}

/** The node config map install writes: the stage's age, the carrier, the node's policy. */
export function datapathConfig(cfg: NodeConfig, carrier: CarrierChoice): DatapathConfig {
  return {
    stageMaxAgeNs: BigInt(cfg.gc.maxAgeMs) * 1_000_000n,
    tags: carrier.carrier === "tag",
    carrierReason: REASONS[carrier.reason],
    node: compileNode(cfg.policy),
  };
}

function sameConfig(a: DatapathConfig, b: DatapathConfig): boolean {
  return a.stageMaxAgeNs === b.stageMaxAgeNs && a.tags === b.tags &&
    a.carrierReason === b.carrierReason && samePolicy(a.node, b.node);
}

export interface DatapathPlan {
  root: string;
  rootExists: boolean;
  programs: ProgramState[];
  writeConfig: boolean;
  config: DatapathConfig;
  /** The node's carrier choice, with the programs behind it. */
  carrier: CarrierChoice;
  restoreAt: NodeConfig["restoreAt"];
  /** Release 0.1.0's datapath: kept while pods it attached live. */
  legacy: { present: boolean; pods: number };
  /** Pods whose carrier the facts on their way now decide differently. */
  podCarriers: CarrierChange[];
  notes: string[];
}

export function planDatapath(cfg: NodeConfig, tsnInterfaces: readonly string[]): DatapathPlan {
  const pins = new PinLayout(cfg.bpffs);
  const rootExists = exists(pins.root);
  assertBpffs(pins.root);
  const carrier = chooseNodeCarrier(cfg.carrier, nodeForeignPrograms(tsnInterfaces));
  const config = datapathConfig(cfg, carrier);
  const programs = loadDatapath({ bpffs: cfg.bpffs, dryRun: true });
  const fresh = programs.some((p) => p.action !== "kept") ||
    MAPS.some((m) => !exists(pins.map(m)));
  const legacyPods = rootExists ? listPodAttachments(cfg.bpffs).filter(isLegacyPod).length : 0;
  const plan: DatapathPlan = {
    root: pins.root,
    rootExists,
    programs,
    writeConfig: true,
    config,
    carrier,
    restoreAt: cfg.restoreAt,
    legacy: { present: rootExists && legacyPresent(cfg.bpffs), pods: legacyPods },
    podCarriers: [],
    notes: [],
  };
  if (MAPS.every((m) => exists(pins.map(m)))) {
    const maps = DatapathMaps.open(cfg.bpffs);
    try {
      if (!fresh) plan.writeConfig = !sameConfig(maps.readConfig(), config);
      plan.podCarriers = retunePodCarriers(
        maps,
        { restoreAt: cfg.restoreAt, node: carrier },
        false,
      );
    } catch {
      plan.writeConfig = true;
    } finally {
      maps.close();
    }
  }
  return plan;
}

/**
 * Loads (verifying; a pinned program of this build is kept), writes the config and moves
 * pods whose way changed to the carrier it now allows: off the tag before the node's TAGS
 * flag goes (the restorer stops trusting tags then), onto it after the flag is set. Then
 * tidies what DELs that never came left behind: entries of interfaces that are gone, and
 * release 0.1.0's datapath once none of its pods is left.
 */
export function applyDatapath(plan: DatapathPlan): ProgramState[] {
  const programs = loadDatapath({ bpffs: plan.root });
  const changed = programs.some((p) => p.action !== "kept");
  // Under the node lock the plugin takes for its entries: an ADD writing its entry while a
  // pod is moved, or an entry tidied, would otherwise lose one of the two writes.
  withPinRootLock(plan.root, () => {
    const maps = DatapathMaps.open(plan.root);
    try {
      const retune = () =>
        retunePodCarriers(maps, { restoreAt: plan.restoreAt, node: plan.carrier }, true);
      if (!plan.config.tags) retune();
      if (plan.writeConfig || changed) maps.writeConfig(plan.config);
      if (plan.config.tags) retune();
      for (const { ifindex } of maps.pods()) {
        if (ifIndexToName(ifindex) === undefined) maps.deletePod(ifindex);
      }
    } finally {
      maps.close();
    }
    retireLegacyIfUnused(plan.root, listPodAttachments(plan.root));
  });
  return programs;
}

/** How long install waits for the node lock (a plugin holds it for milliseconds). */
const NODE_LOCK_MS = 20_000;

/** Runs fn holding the node lock: flock(2) on the pin root, as the plugin takes it. */
function withPinRootLock<T>(root: string, fn: () => T): T {
  const fd = openForLock(root, O_RDONLY);
  if (fd < 0) throw new KernelError(`cannot open the pin root ${root}`, "run as root", -fd);
  try {
    if (!flockWithinSync(fd, root, Date.now() + NODE_LOCK_MS)) {
      throw new TsnproxyError(
        `the node lock on ${root} was held by another process for ${NODE_LOCK_MS} ms`,
        "run install again; `grep FLOCK /proc/locks` names the holder's pid",
      );
    }
    return fn();
  } finally {
    closeFd(fd);
  }
}

export interface RestorerPlan {
  ifname: string;
  api: TcApi;
  pin: string;
  /**
   * undefined: not on the TSN interface (restoreAt host-veth-ingress). "replace": attached,
   * but to another program than the pinned tsnp_restore (or than the one the datapath step
   * pins): moved onto it in place, the hook never without a restorer.
   */
  action?: "attach" | "kept" | "replace";
  existing?: Attachment;
  /** replace: the program id the hook runs now, and why it is not the right one. */
  replace?: { runningId: number; why: string };
}

/**
 * The restorer step of one TSN interface. `datapath`: the datapath step that runs before it
 * (install's), whose replacement of tsnp_restore the attachment must follow.
 */
export function planRestorer(
  t: InstallTarget,
  ifname: string,
  datapath?: DatapathPlan,
): RestorerPlan {
  const pin = new PinLayout(t.cfg.bpffs).restorer(ifname);
  const plan: RestorerPlan = { ifname, api: t.api, pin };
  if (t.cfg.restoreAt !== "tsn-egress") return plan;
  const st = exists(new PinLayout(t.cfg.bpffs).root)
    ? restorerStatus(t.cfg.bpffs, ifname)
    : undefined;
  // No attachment, or a clsact marker whose filter is gone: attach.
  if (st?.runningId === undefined) {
    plan.action = "attach";
    return plan;
  }
  plan.existing = st.attachment;
  const restore = datapath?.programs.find((p) => p.role === "restore");
  if (restore && restore.action !== "kept") {
    plan.action = "replace";
    plan.replace = {
      runningId: st.runningId,
      why: restore.action === "replaced"
        ? "the datapath step replaces the pinned tsnp_restore"
        : "the datapath step pins tsnp_restore",
    };
  } else if (st.pinnedId !== undefined && st.runningId !== st.pinnedId) {
    plan.action = "replace";
    plan.replace = {
      runningId: st.runningId,
      why: `the pinned tsnp_restore is program ${st.pinnedId}`,
    };
  } else {
    plan.action = "kept";
  }
  return plan;
}

/** Everything install does to one TSN interface. */
export interface InterfacePlan {
  ifname: string;
  qdisc: QdiscPlan;
  restorer: RestorerPlan;
  /** undefined: the config has no vlan section for it. */
  vlan?: VlanPlan;
}

/** The qdisc, restorer and vlan steps of one TSN interface (the agent's reconcile too). */
export function planInterface(
  t: InstallTarget,
  iface: TsnInterfaceConfig,
  before: InstallState,
  datapath?: DatapathPlan,
): InterfacePlan {
  const qdisc = planQdisc(
    iface.name,
    iface.qdisc,
    usesClsact(t.api, t.cfg.restoreAt),
    before,
  );
  const plan: InterfacePlan = {
    ifname: iface.name,
    qdisc,
    restorer: planRestorer(t, iface.name, datapath),
  };
  if (iface.vlan) plan.vlan = planVlan(iface.name, iface.vlan);
  return plan;
}

/** True when the interface's steps change nothing. */
export function interfacePlanIsEmpty(p: InterfacePlan): boolean {
  return p.qdisc.steps.length === 0 && p.restorer.action !== "attach" &&
    p.restorer.action !== "replace" &&
    (p.vlan?.changes.length ?? 0) === 0;
}

export interface NodePlan {
  target: InstallTarget;
  binary?: BinaryPlan;
  datapath?: DatapathPlan;
  /** One per TSN interface, in config order (with skipMissing: those that exist). */
  interfaces: InterfacePlan[];
  /** skipMissing: the TSN interfaces left out because they do not exist now. */
  missing: string[];
  /**
   * Interfaces with a restorer of ours that the config no longer lists: install detaches it
   * (what install recorded about them stays for uninstall).
   */
  staleRestorers: string[];
  conflist: ConflistPlan;
  state: { before: InstallState; path: string };
}

export interface PlanScope {
  binary: boolean;
  datapath: boolean;
  /** false: dry run (no recovery writes while planning). */
  recover: boolean;
  /**
   * The agent's repair: a TSN interface that does not exist now is left out (its qdisc,
   * restorer and vlan steps wait for it, listed in `missing`) instead of failing the plan.
   * Install plans every interface.
   */
  skipMissing?: boolean;
}

/** Everything install would do, read from the machine; changes nothing when !recover. */
export async function planNode(t: InstallTarget, scope: PlanScope): Promise<NodePlan> {
  const before = await readState(t.stateDir);
  const cfg = t.cfg;
  if (scope.recover && scope.binary) await recoverInterruptedWrites(cfg.cni.binDir).catch(() => {});
  const binary = scope.binary ? await planBinary(cfg.cni.binDir, await binarySource()) : undefined;
  const names = t.tsnInterfaces.map((i) => i.name);
  const datapath = scope.datapath ? planDatapath(cfg, names) : undefined;
  const missing = scope.skipMissing ? names.filter((n) => ifNameToIndex(n) === 0) : [];
  const interfaces = t.tsnInterfaces.filter((i) => !missing.includes(i.name))
    .map((i) => planInterface(t, i, before, datapath));
  const staleRestorers = exists(new PinLayout(cfg.bpffs).root)
    ? restorerInterfaces(cfg.bpffs).filter((n) => !names.includes(n)).sort()
    : [];
  const conflist = await planConflistInstall({
    confDir: cfg.cni.confDir,
    network: cfg.cni.network,
    entry: pluginEntry(t),
    recover: scope.recover,
  });
  return {
    target: t,
    binary,
    datapath,
    interfaces,
    missing,
    staleRestorers,
    conflist,
    state: { before, path: statePath(t.stateDir) },
  };
}

/** True when running the plan would change nothing. */
export function planIsEmpty(p: NodePlan): boolean {
  return (!p.binary || p.binary.action === "none") &&
    (!p.datapath ||
      (p.datapath.rootExists && p.datapath.programs.every((x) => x.action === "kept") &&
        !p.datapath.writeConfig && p.datapath.podCarriers.length === 0)) &&
    p.interfaces.every(interfacePlanIsEmpty) &&
    p.staleRestorers.length === 0 &&
    p.conflist.changes.length === 0;
}

/** Conflist changes for the plan: diffs for the files the runtime loads, one line per backup. */
export function formatConflistChanges(plan: ConflistPlan, sign = "+"): string {
  const out: string[] = [];
  for (const c of plan.changes) {
    if (c.role === "backup") {
      out.push(`${sign} ${c.action} ${c.path}: ${c.why}`);
    } else {
      out.push(`${sign} ${c.action} ${c.path}: ${c.why}`, ...c.diff.trimEnd().split("\n"));
    }
  }
  for (const w of plan.warnings) out.push(`! ${w}`);
  return out.join("\n");
}

function ms(ns: bigint): string {
  return `${ns / 1_000_000n} ms`;
}

function indent(text: string, by = "    "): string {
  return text.split("\n").map((l) => (l ? by + l : l)).join("\n");
}

/** The plan as text: one section per step, `+` for a change, `=` for no change. */
export function formatNodePlan(p: NodePlan, verb = "install"): string {
  const out: string[] = [];
  const line = (changed: boolean, text: string) => out.push(`  ${changed ? "+" : "="} ${text}`);
  const t = p.target;
  const names = t.tsnInterfaces.map((i) => i.name);
  out.push(
    `tsnproxy ${verb} plan: TSN interface${names.length > 1 ? "s" : ""} ${names.join(", ")}, ` +
      `tc API ${t.api}, restoreAt ${t.cfg.restoreAt}, pin root ${t.cfg.bpffs}`,
  );
  for (const { qdisc } of p.interfaces) {
    out.push(`qdisc (${qdisc.ifname}):`);
    for (const s of qdisc.steps) line(true, formatQdiscStep(s));
    for (const n of qdisc.notes) line(false, n);
    for (const w of qdisc.warnings) out.push(`  ! ${w}`);
  }
  if (p.binary) {
    out.push("binary:");
    const b = p.binary;
    const what = b.source.kind === "compiled"
      ? `copy of ${b.source.from} (${b.source.bytes.length} bytes)`
      : `launcher exec'ing ${b.source.from}`;
    line(
      b.action !== "none",
      `${b.action === "none" ? "keep" : b.action} ${b.path}: ${what}` +
        (b.action === "none" ? " (up to date)" : ` (${b.why})`),
    );
  }
  if (p.datapath) {
    const d = p.datapath;
    out.push("datapath:");
    if (!d.rootExists) line(true, `create pin root ${d.root}`);
    for (const prog of d.programs) {
      line(
        prog.action !== "kept",
        prog.action === "kept"
          ? `keep ${PROGRAMS[prog.role]} (pinned, id ${prog.id}, tag ${prog.tag}; re-verified, ` +
            "replaced only if this build differs)"
          : `load, verify and pin ${PROGRAMS[prog.role]}`,
      );
    }
    line(
      d.writeConfig,
      `${d.writeConfig ? "write" : "keep"} node config: carrier ${
        d.carrier.carrier === "tag" ? "tag where a pod's way is clear" : "stage for every pod"
      } (${reasonText(REASONS[d.carrier.reason])}${
        d.carrier.programs ? `: ${d.carrier.programs.join(", ")}` : ""
      }), stage age ${ms(d.config.stageMaxAgeNs)}, node policy ${
        JSON.stringify(describePolicy(d.config.node))
      }`,
    );
    for (const c of d.podCarriers) {
      line(
        true,
        `move pod interface ${c.ifname} from the ${c.from} to the ${c.to} (${
          reasonText(REASONS[c.reason])
        }${c.programs ? `: ${c.programs.join(", ")}` : ""})`,
      );
    }
    if (d.legacy.present) {
      line(
        false,
        d.legacy.pods
          ? `keep release 0.1.0's datapath for its ${d.legacy.pods} pod(s) (retired by their DEL)`
          : "retire release 0.1.0's datapath (none of its pods is left)",
      );
    }
  }
  out.push("restorer:");
  if (t.cfg.restoreAt !== "tsn-egress") {
    line(
      false,
      "attached per pod on the host-side veth by the plugin (restoreAt host-veth-ingress)",
    );
  }
  for (const { restorer: r } of p.interfaces) {
    if (r.action === "kept") {
      line(
        false,
        `tsnp_restore attached to ${r.ifname} egress (${r.existing?.api}, ${r.existing?.pin})`,
      );
    } else if (r.action === "attach") {
      line(true, `attach tsnp_restore to ${r.ifname} egress with ${r.api}, first (pin ${r.pin})`);
    } else if (r.action === "replace") {
      line(
        true,
        `re-attach ${r.ifname}'s restorer to the new tsnp_restore in place (${r.existing?.api}; ` +
          `it runs program ${r.replace?.runningId}: ${r.replace?.why})`,
      );
    }
  }
  for (const ifname of p.missing) {
    line(false, `${ifname} does not exist now: its qdisc, restorer and vlan steps wait for it`);
  }
  for (const ifname of p.staleRestorers) {
    line(
      true,
      `detach tsnp_restore from ${ifname} egress (no longer a TSN interface in the config)`,
    );
  }
  for (const { vlan } of p.interfaces) {
    if (!vlan) continue;
    out.push(`vlan (${vlan.ifname}):`);
    if (vlan.changes.length) line(true, formatVlanChanges(vlan));
    for (const n of vlan.notes) line(false, n);
  }
  out.push(`conflist (${p.conflist.target}):`);
  if (p.conflist.changes.length === 0) line(false, `entry present (${p.conflist.status})`);
  else {
    out.push(indent(formatConflistChanges(p.conflist)));
    if (t.inPlace) out.push("    (existing conflists are rewritten in place)");
  }
  if (p.conflist.changes.length === 0) {
    for (const w of p.conflist.warnings) out.push(`  ! ${w}`);
  }
  out.push(`state (${p.state.path}):`);
  const next = predictState(p);
  const changed = !sameState(p.state.before, next);
  const records = next.interfaces.flatMap((rec) => [
    rec.clsactCreated ? `clsact on ${rec.ifname} created by install` : "",
    rec.rootCreated
      ? `root ${rec.rootCreated.kind}${
        next.interfaces.length > 1 ? ` on ${rec.ifname}` : ""
      } created by install`
      : "",
    rec.vlan
      ? `egress-qos-map of ${rec.ifname} before install: ${
        formatQosMap(qosPairs(rec.vlan.previous))
      }`
      : "",
  ]).filter(Boolean);
  line(
    changed,
    `${changed ? "record" : "unchanged"}: ` +
      (records.length ? records.join("; ") : "nothing install created needs recording"),
  );
  return out.join("\n") + "\n";
}

/** A conflist plan as plain data (the --json plan of install and uninstall). */
export function conflistPlanJson(p: ConflistPlan): InstallPlanJson["conflist"] {
  return {
    confDir: p.confDir,
    target: p.target,
    status: p.status,
    changes: p.changes.map((c) => ({
      action: c.action,
      path: c.path,
      role: c.role,
      why: c.why,
      diff: c.diff,
    })),
    warnings: [...p.warnings],
  };
}

/** A qdisc plan as plain data (the --json plan of install and uninstall). */
export function qdiscPlanJson(q: QdiscPlan): InstallPlanJson["qdisc"] {
  return {
    ifname: q.ifname,
    steps: q.steps.map((s) => ({ op: s.op, text: formatQdiscStep(s) })),
    notes: [...q.notes],
    warnings: [...q.warnings],
  };
}

/**
 * The plan as plain data, what `install --json` prints (src/install/plan_schema.ts): the same
 * facts formatNodePlan writes as text. `outcome` and `error` are the caller's.
 */
export function nodePlanJson(
  p: NodePlan,
  run: Pick<InstallPlanJson, "dryRun" | "outcome" | "error">,
): InstallPlanJson {
  const t = p.target;
  const d = p.datapath;
  const nsToMs = (ns: bigint) => Number(ns) / 1e6;
  const restorerJson = (r: RestorerPlan) => ({
    ifname: r.ifname,
    api: r.api,
    pin: r.pin,
    action: r.action ?? null,
  });
  const [first] = p.interfaces;
  return {
    version: 1,
    command: "install",
    dryRun: run.dryRun,
    changes: !planIsEmpty(p),
    outcome: run.outcome,
    ...(run.error ? { error: run.error } : {}),
    target: {
      tsnInterface: t.tsnInterfaces[0].name,
      tsnInterfaces: t.tsnInterfaces.map((i) => i.name),
      api: t.api,
      restoreAt: t.cfg.restoreAt,
      bpffs: t.cfg.bpffs,
      stateDir: t.stateDir,
      inPlace: t.inPlace,
    },
    qdisc: qdiscPlanJson(first.qdisc),
    interfaces: p.interfaces.map((i) => ({
      ifname: i.ifname,
      qdisc: qdiscPlanJson(i.qdisc),
      restorer: restorerJson(i.restorer),
      vlan: i.vlan ? vlanPlanJson(i.vlan) : null,
    })),
    binary: p.binary
      ? {
        path: p.binary.path,
        action: p.binary.action,
        why: p.binary.why,
        source: {
          kind: p.binary.source.kind,
          from: p.binary.source.from,
          bytes: p.binary.source.bytes.length,
        },
      }
      : null,
    datapath: d
      ? {
        root: d.root,
        createRoot: !d.rootExists,
        programs: d.programs.map((x) => ({
          role: x.role,
          name: PROGRAMS[x.role],
          action: x.action,
          id: x.id,
          tag: x.tag,
        })),
        writeConfig: d.writeConfig,
        config: {
          stageMaxAgeMs: nsToMs(d.config.stageMaxAgeNs),
          carrier: d.carrier.carrier,
          carrierReason: d.carrier.reason,
          ...(d.carrier.programs ? { foreignPrograms: d.carrier.programs } : {}),
          policy: describePolicy(d.config.node),
        },
        legacy: d.legacy,
        podCarriers: d.podCarriers,
      }
      : null,
    restorer: restorerJson(first.restorer),
    staleRestorers: [...p.staleRestorers],
    conflist: conflistPlanJson(p.conflist),
    state: { path: p.state.path, change: !sameState(p.state.before, predictState(p)) },
  };
}

/** A VLAN plan as plain data (the --json plan of install and uninstall). */
export function vlanPlanJson(v: VlanPlan): NonNullable<InstallPlanJson["interfaces"][0]["vlan"]> {
  return {
    ifname: v.ifname,
    vlanId: v.vlanId ?? null,
    changes: v.changes.map((c) => ({ ...c })),
    notes: [...v.notes],
  };
}

/** Intent and previous records together (a root created earlier stays recorded). */
function mergeStates(intent: InstallState, before: InstallState): InstallState {
  let out = intent;
  for (const a of intent.interfaces) {
    const b = interfaceState(before, a.ifname);
    if (!b) continue;
    out = withInterface(out, {
      ...a,
      clsactCreated: a.clsactCreated || b.clsactCreated,
      ...(a.rootCreated ?? b.rootCreated ? { rootCreated: a.rootCreated ?? b.rootCreated } : {}),
    });
  }
  return out;
}

/** One interface's record after its qdisc and vlan steps ran. */
function predictInterface(p: InterfacePlan, prev: InterfaceState | undefined): InterfaceState {
  const q = p.qdisc;
  const st: InterfaceState = prev ? { ...prev } : { ifname: q.ifname, clsactCreated: false };
  for (const s of q.steps) {
    if (s.op === "add-clsact") st.clsactCreated = true;
    if (s.op === "apply-root") st.rootCreated = { kind: s.cfg.kind, handle: s.cfg.handle };
    if (s.op === "delete-root") delete st.rootCreated;
  }
  const vlan = p.vlan ? predictVlanState(p.vlan, prev?.vlan) : prev?.vlan;
  if (vlan) st.vlan = vlan;
  return st;
}

/** The state file after the plan ran (for the plan output, and recorded as intent). */
function predictState(p: NodePlan): InstallState {
  let st = p.state.before;
  for (const i of p.interfaces) {
    st = withInterface(st, predictInterface(i, interfaceState(p.state.before, i.ifname)));
  }
  return st;
}

export interface NodeResult {
  programs?: ProgramState[];
  changed: boolean;
}

/** Executes a plan made by planNode (re-checking what it can), writing state as it goes. */
export async function executeNodePlan(p: NodePlan): Promise<NodeResult> {
  const t = p.target;
  const res: NodeResult = { changed: !planIsEmpty(p) };
  // The qdisc first: it is what most often fails (a missing sch_taprio module, queues that do
  // not fit), and applyQdiscPlan undoes its own clsact on failure, so such an install leaves
  // the node as it was.
  // What the qdisc step will create is recorded BEFORE it is created: an install killed in
  // between leaves a record of something absent (harmless: uninstall checks the kernel), never
  // an unrecorded clsact or root that uninstall would not remove.
  // The same for the VLAN entries: their previous values are in the intent.
  const intent = predictState(p);
  if (!sameState(intent, p.state.before)) {
    await writeState(t.stateDir, mergeStates(intent, p.state.before));
  }
  let state = p.state.before;
  for (const i of p.interfaces) {
    try {
      state = withInterface(state, applyQdiscPlan(i.qdisc, interfaceState(state, i.ifname)));
    } catch (e) {
      // This interface's qdisc left nothing behind (see applyQdiscPlan); the interfaces
      // before it did what the state now records.
      await writeState(t.stateDir, state);
      throw e;
    }
  }
  // The datapath before the binary: a plugin of this build finds its own ABI's pins.
  if (p.datapath) res.programs = applyDatapath(p.datapath);
  if (p.binary) await applyBinary(p.binary);
  for (const i of p.interfaces) {
    // On the clsact path planQdisc added clsact already: the restorer never creates it.
    if (i.restorer.action === "attach") attachRestorer(t.cfg.bpffs, i.ifname, t.api);
    // After the datapath step: the pinned tsnp_restore is the one to run now.
    if (i.restorer.action === "replace") replaceRestorer(t.cfg.bpffs, i.ifname);
  }
  for (const ifname of p.staleRestorers) detachRestorer(t.cfg.bpffs, ifname);
  for (const i of p.interfaces) {
    if (!i.vlan) continue;
    const rec = interfaceState(state, i.ifname) ?? { ifname: i.ifname, clsactCreated: false };
    const vlan = applyVlanPlan(i.vlan, rec.vlan);
    state = withInterface(state, vlan ? { ...rec, vlan } : rec);
  }
  if (!sameState(state, intent)) await writeState(t.stateDir, state);
  await applyConflist(p.conflist, { inPlace: t.inPlace });
  return res;
}
