/**
 * doctor checks of the node's network side: the TSN interface, the restorer's place on it,
 * its qdisc (and the Debian 6.1 clsact-after-taprio stall), the forwarding sysctl that
 * rewrites priorities, and XDP programs on host veths.
 */
import { CLSACT_HANDLES, CLSACT_PRIORITY, queryTcx } from "../bpf/attach.ts";
import { hasTcx } from "../bpf/features.ts";
import { type DeviceProgram, nodeForeignPrograms, restorerAttached } from "../bpf/node.ts";
import { PinLayout, PROGRAMS } from "../bpf/pins.ts";
import { closeFd, fdById, linkInfo, progInfo, readPinned } from "../bpf/sys.ts";
import { compileNode } from "../policy/resolve.ts";
import { REMAP_SLOTS } from "../policy/types.ts";
import {
  findLink,
  formatHandle,
  type LinkInfo,
  listBpfFilters,
  listLinks,
  listQdiscs,
  type QdiscInfo,
  rootQdisc,
} from "../netlink/mod.ts";
import { inspectQdiscOrder, rootMatches } from "../install/qdisc_inspect.ts";
import { formatQosMap } from "../install/vlan_plan.ts";
import { qosPairs } from "../config/vlan.ts";
import { parse as parseYaml } from "yaml";
import type { TsnInterfaceConfig } from "../config/node.ts";
import { type CheckRef, type DoctorContext, plural } from "./context.ts";
import { pinnedProgId } from "./checks_pins.ts";
import { atLeast, moduleState, readSysctl } from "./probe.ts";

/** One TSN interface as the checks see it. */
export interface NetState {
  iface: TsnInterfaceConfig;
  link?: LinkInfo;
  /** Root qdisc stats at the start of the run (for the stall check's second look). */
  rootAtStart?: QdiscInfo;
}

const TSN_INTERFACE: CheckRef = { id: "config.tsn_interface", title: "TSN interface exists" };
const UP: CheckRef = { id: "interface.up", title: "TSN interface up" };
const RESTORER: CheckRef = { id: "interface.restorer", title: "Restorer attached first" };
const VLAN_PCP: CheckRef = {
  id: "interface.vlan_pcp",
  title: "VLAN PCP for every priority pods may use",
};

/**
 * The interface checks, once per configured TSN interface (ctx.forInterface); returns one
 * NetState per interface (empty when none is configured: then the no-interface verdicts).
 */
export function interfaceChecks(ctx: DoctorContext): NetState[] {
  const needIf = ctx.config.restoreAt === "tsn-egress";
  if (ctx.config.tsnInterfaces.length === 0) {
    ctx.run(TSN_INTERFACE, (check) => {
      if (needIf) {
        check.fail({
          found: "no tsnInterface in the node config and no --tsn-interface: restoreAt " +
            "tsn-egress has nowhere to restore",
          fix: `set tsnInterface: <ifname> (or a tsnInterfaces list) in ${ctx.opts.config}`,
        });
      } else {
        check.info({
          found: "no tsnInterface configured (restoreAt host-veth-ingress restores on pod veths)",
        });
      }
    });
    for (const ref of [UP, RESTORER, VLAN_PCP]) {
      ctx.skip({ ...ref, found: "no TSN interface (config.tsn_interface)" });
    }
    return [];
  }
  return ctx.config.tsnInterfaces.map((iface) => {
    const st: NetState = { iface };
    ctx.forInterface(iface.name, () => oneInterface(ctx, st, needIf));
    return st;
  });
}

function oneInterface(ctx: DoctorContext, st: NetState, needIf: boolean): void {
  const name = st.iface.name;
  ctx.run(TSN_INTERFACE, (check) => {
    const link = ctx.inNode(() => findLink(name));
    if (!link) {
      check.fail({
        found: `${name} does not exist in this network namespace`,
        fix: `check the name with \`ip link\` and set tsnInterface in ${ctx.opts.config} (or ` +
          "--tsn-interface), or create the interface",
        data: { name },
      });
      return;
    }
    st.link = link;
    check.pass({
      found: `${name}: ifindex ${link.index}, ${link.kind ?? "physical"}, ${
        plural(link.numTxQueues, "tx queue")
      }`,
      data: { name, ifindex: link.index, kind: link.kind ?? null, txQueues: link.numTxQueues },
    });
  });
  const link = st.link;
  if (!link) {
    for (const ref of [UP, RESTORER, VLAN_PCP]) {
      ctx.skip({ ...ref, found: `${name} does not exist (config.tsn_interface)` });
    }
    return;
  }

  ctx.run(UP, (check) => {
    const data = { up: link.up, operstate: link.operstate };
    if (!link.up) {
      check.fail({
        found: `${link.name} is administratively down: nothing leaves it`,
        fix: `ip link set dev ${link.name} up`,
        data,
      });
    } else if (link.operstate === "down" || link.operstate === "lowerlayerdown") {
      check.warn({
        found: `${link.name} is up but its operational state is ${link.operstate} (no carrier)`,
        fix: `check the cable/link partner of ${link.name} (\`ip link show ${link.name}\`)`,
        data,
      });
    } else {
      check.pass({ found: `${link.name} is up (${link.operstate})` });
    }
  });

  ctx.run(RESTORER, (check) => {
    if (!needIf) {
      check.info({
        found: "restoreAt host-veth-ingress: the restorer runs on each pod's host veth " +
          "(pods.attachments)",
      });
      return;
    }
    const a = ctx.inNode(() => restorerAttached(ctx.bpffs, link.name, ctx.opts.netns));
    const fix =
      `tsnproxy install --bpffs ${ctx.bpffs}   (re-attaches the restorer to ${link.name})`;
    if (!a) {
      check.fail({
        found:
          `no restorer on ${link.name} egress (pin ${
            new PinLayout(ctx.bpffs).restorer(link.name)
          } ` +
          "missing or recording another ifindex): packets leave without their pods' " +
          "priority/launch time",
        fix,
      });
      return;
    }
    if (a.api === "tcx") {
      // The link's own program: after a re-pin (upgrade) it may be an older instance of the
      // restorer than the pinned one, which is fine until the next install re-attaches.
      const restoreId = linkProgId(a.pin) ?? pinnedProgId(ctx.bpffs, "restore");
      const progs = ctx.inNode(() => queryTcx(link.name, "egress"));
      const pos = progs.findIndex((p) => p.id === restoreId);
      const data = { api: "tcx", chain: progs.map((p) => `${p.name}#${p.id}`) };
      if (pos < 0) {
        check.fail({
          found: `the tcx link pinned for ${link.name} runs a program other than the pinned ` +
            `restorer (${restoreId ?? "not pinned"}); chain: ${data.chain.join(", ") || "empty"}`,
          fix,
          data,
        });
      } else if (pos > 0) {
        check.warn({
          found: `tcx egress of ${link.name}: ${
            progs.slice(0, pos).map((p) => `${p.name}#${p.id}`).join(", ")
          } run before the restorer: they see packets without the restored metadata, and one ` +
            "that returns TC_ACT_OK/SHOT ends the chain before the restorer runs",
          fix: `re-attach the restorer first: rm ${a.pin} && tsnproxy install --bpffs ${ctx.bpffs}`,
          data,
        });
      } else {
        check.pass({
          found: `tcx egress of ${link.name}: ${data.chain.join(" -> ")} (restorer first)`,
          data,
        });
      }
      return;
    }
    const filters = ctx.inNode(() => listBpfFilters(link.index, "egress"));
    const ours = filters.find((f) =>
      f.handle === CLSACT_HANDLES.restore && f.priority === CLSACT_PRIORITY &&
      f.progId !== undefined && progName(f.progId) === PROGRAMS.restore
    );
    const data = {
      api: "clsact",
      filters: filters.map((f) =>
        `pref ${f.priority} handle 0x${f.handle.toString(16)} id ${f.progId}`
      ),
    };
    if (!ours) {
      check.fail({
        found: `the clsact marker ${a.pin} exists but ${link.name} egress has no cls_bpf filter ` +
          `running the restorer (filters: ${data.filters.join("; ") || "none"}; was clsact ` +
          "deleted?)",
        fix: `rm ${a.pin} && ${fix}`,
        data,
      });
      return;
    }
    const before = filters.filter((f) => f !== ours && f.priority < ours.priority);
    const tcxFirst = hasTcx() ? ctx.inNode(() => queryTcx(link.name, "egress")) : [];
    if (before.length || tcxFirst.length) {
      check.warn({
        found: `on ${link.name} egress, ${
          [
            ...tcxFirst.map((p) => `tcx ${p.name}#${p.id}`),
            ...before.map((f) => `cls_bpf pref ${f.priority} id ${f.progId}`),
          ].join(", ")
        } run before the restorer (tcx runs before every clsact filter)`,
        fix: "make sure those programs return TC_ACT_UNSPEC/TCX_NEXT, or move them after pref 1",
        data,
      });
      return;
    }
    check.pass({ found: `cls_bpf on ${link.name} egress, pref ${ours.priority} (first)`, data });
  });
  vlanCheck(ctx, st.iface, link);
}

/** [[p, c], ...] as {"p": c} (JSON data). */
function pcpObject(pairs: readonly (readonly [number, number])[]): Record<string, number> {
  return Object.fromEntries(pairs.map(([p, c]) => [String(p), c]));
}

/**
 * interface.vlan_pcp: a VLAN TSN interface's egress-qos-map against the config and against
 * the priorities the node's policy lets pods use (one the map does not name leaves with PCP
 * 0); on other interfaces, VLAN devices stacked on them that are no TSN interface (their PCP
 * comes from the priority before any restorer ran).
 */
function vlanCheck(ctx: DoctorContext, iface: TsnInterfaceConfig, link: LinkInfo): void {
  ctx.run(VLAN_PCP, (check) => {
    const links = ctx.inNode(() => listLinks());
    const byIndex = new Map(links.map((l) => [l.index, l.name]));
    const config = ctx.opts.config;
    if (link.kind !== "vlan" || !link.vlan) {
      if (iface.vlan) {
        check.fail({
          found: `${link.name} is not a VLAN device (kind ${link.kind ?? "physical"}), but the ` +
            "config sets vlan.egressQosMap for it: install refuses it",
          fix: `move the vlan section to the VLAN device over ${link.name} and list that ` +
            `device in tsnInterfaces of ${config} (e.g. {name: ${link.name}.100, vlan: ...})`,
        });
        return;
      }
      const stacked = links.filter((l) =>
        l.kind === "vlan" && l.link === link.index && l.linkNetnsId === undefined
      );
      const uppers = stacked.filter((l) => !ctx.tsnInterfaces.includes(l.name));
      const tsnUppers = stacked.filter((l) => ctx.tsnInterfaces.includes(l.name));
      if (uppers.length) {
        const names = uppers.map((u) => `${u.name} (VLAN ${u.vlan?.id ?? "?"})`);
        check.warn({
          found:
            `${link.name} carries ${names.join(", ")}, which ${
              uppers.length === 1 ? "is no TSN interface" : "are no TSN interfaces"
            }: pod packets routed through ${
              uppers.length === 1 ? "it" : "them"
            } get their PCP from the priority they have before any restorer ran (after ` +
            "forwarding, the one derived from the TOS byte), so the pods' priorities never " +
            "reach the wire's PCP",
          fix: `list ${uppers.map((u) => u.name).join(", ")} in tsnInterfaces of ${config} ` +
            `with their egress-qos-map (e.g. {name: ${uppers[0].name}, vlan: {egressQosMap: ` +
            `{"3": 3}}}) next to {name: ${link.name}, qdisc: ...}, then run tsnproxy install`,
          data: { uppers: uppers.map((u) => u.name) },
        });
        return;
      }
      check.pass({
        found: tsnUppers.length
          ? `${link.name} is not a VLAN device; ${
            tsnUppers.map((u) => u.name).join(", ")
          } over it ${
            tsnUppers.length === 1
              ? "is a TSN interface (its PCP map is checked there)"
              : "are TSN interfaces (their PCP maps are checked there)"
          }; its own frames leave untagged`
          : `${link.name} is not a VLAN device and carries none: its frames leave untagged ` +
            "(no PCP)",
      });
      return;
    }
    const v = link.vlan;
    const map = new Map(v.egress);
    const allowed = allowedPriorities(ctx.config.policy);
    const unmapped = allowed.filter((p) => p !== 0 && !map.has(p));
    const want = iface.vlan ? qosPairs(iface.vlan.egressQosMap) : [];
    const differs = want.filter(([p, c]) => (map.get(p) ?? 0) !== c);
    const lower = v && link.link !== undefined
      ? byIndex.get(link.link) ?? `ifindex ${link.link}`
      : "?";
    const where = `${link.name} (VLAN ${v.id} ${v.protocol} over ${lower})`;
    const mapText = formatQosMap(v.egress);
    const data = {
      vlanId: v.id,
      protocol: v.protocol,
      lower,
      egressQosMap: pcpObject(v.egress),
      configured: iface.vlan ? { ...iface.vlan.egressQosMap } : null,
      allowed,
      pcp: pcpObject(allowed.map((p) => [p, map.get(p) ?? 0])),
      unmapped,
    };
    if (differs.length) {
      check.warn({
        found: `egress-qos-map of ${where} is ${mapText}, but the config sets ${
          formatQosMap(differs)
        }`,
        fix: `tsnproxy install --config ${config}   (sets the configured entries)`,
        data,
      });
      return;
    }
    if (unmapped.length) {
      // The highest ceiling under which every priority has a PCP (higher ones clamp to it).
      let cap = 0;
      for (const p of allowed) {
        if (p !== 0 && !map.has(p)) break;
        cap = p;
      }
      check.warn({
        found:
          `egress-qos-map of ${where} is ${mapText}: the node policy lets pods use ${
            plural(unmapped.length, "priority")
          } (${unmapped.join(",")}) it names no PCP for, so their frames leave with PCP 0 ` +
          "(best effort)",
        fix: `add ${
          unmapped.map((p) => `"${p}": <pcp>`).join(", ")
        } to vlan.egressQosMap of ${link.name} in ${config} and run tsnproxy install, or set policy.maxPriority: ${cap}`,
        data,
      });
      return;
    }
    check.pass({
      found: `egress-qos-map of ${where}: ${
        allowed.map((p) => `${p}->PCP ${map.get(p) ?? 0}`).join(", ")
      }: every priority pods may use has its PCP`,
      data,
    });
  });
}

/** The priorities (0..15) pods may end up with under the node's default policy. */
export function allowedPriorities(
  policy: { maxPriority?: number; remap?: Record<string, number> },
) {
  const dp = compileNode(policy);
  const out = new Set<number>();
  for (let p = 0; p < REMAP_SLOTS; p++) {
    const v = Math.min(dp.remap[p], dp.maxPriority);
    if (v < REMAP_SLOTS) out.add(v);
  }
  return [...out].sort((a, b) => a - b);
}

/**
 * Priorities that land in traffic class 0 only because the map does not name them: past the
 * configured map's length, or (for a map read from the kernel) after its last non-zero entry.
 */
export function defaultedToClass0(
  map: readonly number[],
  allowed: readonly number[],
  explicitLength?: number,
): number[] {
  let len = explicitLength;
  if (len === undefined) {
    len = 0;
    map.forEach((c, i) => {
      if (c !== 0) len = i + 1;
    });
  }
  return allowed.filter((p) => p !== 0 && p >= (len ?? 0) && (map[p] ?? 0) === 0);
}

/**
 * The configured map's length as written in the YAML (the schema pads it to 16): the
 * top-level qdisc's, or that of the tsnInterfaces entry named `ifname`.
 */
function configuredMapLength(text: string, ifname: string): number | undefined {
  const obj = (v: unknown) =>
    typeof v === "object" && v !== null && !Array.isArray(v)
      ? v as Record<string, unknown>
      : undefined;
  try {
    const raw = obj(parseYaml(text));
    if (!raw) return undefined;
    const entry = Array.isArray(raw.tsnInterfaces)
      ? raw.tsnInterfaces.map(obj).find((e) => e?.name === ifname)
      : raw;
    const m = obj(entry?.qdisc)?.map;
    return Array.isArray(m) ? m.length : undefined;
  } catch {
    return undefined;
  }
}

export interface StallEvidence {
  /** taprio held packets and sent none between the two looks. */
  stalled: boolean;
  backlog: number;
}

/** Pure: did a software taprio dequeue anything between two looks at its root stats? */
export function stallEvidence(before: QdiscInfo, after: QdiscInfo): StallEvidence {
  const stuck = after.stats.qlen > 0 || after.stats.backlog > 0;
  return {
    stalled: stuck && after.stats.packets === before.stats.packets,
    backlog: after.stats.qlen,
  };
}

export function qdiscStart(ctx: DoctorContext, nets: NetState[]): void {
  for (const st of nets) {
    const link = st.link;
    if (!link) continue;
    try {
      st.rootAtStart = ctx.inNode(() => rootQdisc(listQdiscs(link.index)));
    } catch {
      // qdiscChecks reports the failure
    }
  }
}

const QUEUES: CheckRef = { id: "interface.queues", title: "tx queues" };
const ROOT: CheckRef = { id: "qdisc.root", title: "Root qdisc" };
const PRIOMAP: CheckRef = { id: "qdisc.priomap", title: "Priority map covers allowed priorities" };
const STALL: CheckRef = { id: "qdisc.stall", title: "clsact/taprio stall (Debian 6.1)" };

/** The qdisc checks, once per TSN interface. */
export async function qdiscChecks(ctx: DoctorContext, nets: NetState[]): Promise<void> {
  if (nets.length === 0) {
    for (const ref of [QUEUES, ROOT, PRIOMAP, STALL]) {
      ctx.skip({ ...ref, found: "no TSN interface" });
    }
  }
  for (const st of nets) {
    await ctx.forInterfaceAsync(st.iface.name, () => oneQdisc(ctx, st));
  }
}

async function oneQdisc(ctx: DoctorContext, st: NetState): Promise<void> {
  const link = st.link;
  if (!link) {
    for (const ref of [QUEUES, ROOT, PRIOMAP, STALL]) {
      ctx.skip({ ...ref, found: `${st.iface.name} does not exist` });
    }
    return;
  }
  const qdiscs = ctx.inNode(() => listQdiscs(link.index));
  const root = rootQdisc(qdiscs);
  const cfg = st.iface.qdisc;
  const rootDesc = root
    ? root.handle === 0 ? root.kind : `${root.kind} ${formatHandle(root.handle)}`
    : "none";
  const tsnRoot = root && (root.options?.kind === "taprio" || root.options?.kind === "mqprio")
    ? root.options
    : undefined;

  ctx.run(QUEUES, (check) => {
    const layout = tsnRoot ?? (cfg.kind === "taprio" || cfg.kind === "mqprio" ? cfg : undefined);
    const data = { txQueues: link.numTxQueues };
    if (!layout) {
      check.pass({
        found: `${link.name} has ${
          plural(link.numTxQueues, "tx queue")
        } (no taprio/mqprio to compare)`,
        data,
      });
      return;
    }
    const needed = Math.max(...layout.queues.map((q) => q.offset + q.count));
    const source = tsnRoot ? `the ${root?.kind} root` : `qdisc.${cfg.kind} in the config`;
    if (needed > link.numTxQueues) {
      check.fail({
        found: `${source} uses queues up to ${needed - 1} but ${link.name} has ${
          plural(link.numTxQueues, "tx queue")
        }`,
        fix: `fit qdisc.queues to ${link.numTxQueues} queues in ${ctx.opts.config} (or raise ` +
          `the NIC's channels: ethtool -L ${link.name} tx <n>)`,
        data: { ...data, needed },
      });
      return;
    }
    const finding = {
      found: `${source} uses ${needed} of ${link.name}'s ${plural(link.numTxQueues, "tx queue")}`,
      data: { ...data, needed },
    };
    if (needed < link.numTxQueues) check.info(finding);
    else check.pass(finding);
  });

  await ctx.runAsync(ROOT, async (check) => {
    const etf = qdiscs.filter((q) => q.kind === "etf").map((q) => formatHandle(q.parent));
    const data = { root: rootDesc, etfParents: etf, configured: cfg.kind };
    const etfNote = etf.length ? `, etf under ${etf.join(", ")}` : "";
    if (cfg.kind === "keep") {
      const tsn = root && ["taprio", "mqprio", "etf"].includes(root.kind) || etf.length > 0;
      check.info({
        found: `root ${rootDesc}${etfNote} (qdisc.kind keep: tsnproxy leaves it alone)${
          tsn ? "" : "; no taprio/mqprio/etf: restored priorities select no TSN queue"
        }`,
        data,
      });
      return;
    }
    if (cfg.kind === "none") {
      if (root?.kind === "taprio" || root?.kind === "mqprio") {
        check.warn({
          found: `root ${rootDesc} but qdisc.kind is none`,
          fix: `tsnproxy install --config ${ctx.opts.config}   (removes it)`,
          data,
        });
      } else {
        check.pass({ found: `root ${rootDesc} (qdisc.kind none)`, data });
      }
      return;
    }
    if (root?.kind === cfg.kind) {
      if (rootMatches(root, qdiscs, cfg)) {
        check.pass({
          found: `root ${rootDesc}${etfNote} matches the configured ${cfg.kind}`,
          data,
        });
      } else {
        check.warn({
          found: `root ${rootDesc}${etfNote} differs from the configured ${cfg.kind} (map, ` +
            "queues, schedule or etf children)",
          fix: `tsnproxy install --config ${ctx.opts.config}   (re-applies qdisc)`,
          data,
        });
      }
      return;
    }
    const module = cfg.kind === "taprio" ? "sch_taprio" : "sch_mqprio";
    const symbol = cfg.kind === "taprio" ? "CONFIG_NET_SCH_TAPRIO" : "CONFIG_NET_SCH_MQPRIO";
    const state = await moduleState(module, symbol);
    const etfState = cfg.etf?.length ? await moduleState("sch_etf", "CONFIG_NET_SCH_ETF") : "n/a";
    const install = `tsnproxy install --config ${ctx.opts.config}`;
    let fix: string;
    let why = "";
    if (state === "missing") {
      why = `; this kernel (${ctx.kernel.release}) has no ${module}: ${symbol} is not set and ` +
        "no module is installed";
      fix = `boot a kernel with ${symbol}=y/m (Debian's linux-image-amd64 ships ${module} as a ` +
        `module), then ${install}; or set qdisc.kind: keep`;
    } else if (state === "loadable") {
      fix = `modprobe ${module}${etfState === "loadable" ? " sch_etf" : ""} && ${install}`;
    } else {
      fix = `${install}   (creates the ${cfg.kind} root${cfg.etf?.length ? " and etf" : ""})`;
    }
    if (etfState === "missing") why += "; sch_etf is missing too";
    check.fail({
      found: `root is ${rootDesc}, the config wants ${cfg.kind}${why}`,
      fix,
      data: { ...data, module, moduleState: state, etfModuleState: etfState },
    });
  });

  ctx.run(PRIOMAP, (check) => {
    if (!tsnRoot) {
      check.skip({ found: `no taprio/mqprio root on ${link.name} (root ${rootDesc})` });
      return;
    }
    const allowed = allowedPriorities(ctx.config.policy);
    const explicit = cfg.kind === root?.kind
      ? configuredMapLength(ctx.configText, link.name)
      : undefined;
    const defaulted = defaultedToClass0(tsnRoot.map, allowed, explicit);
    const data = {
      map: tsnRoot.map,
      allowed,
      defaultedToClass0: defaulted,
    };
    if (defaulted.length === 0) {
      check.pass({
        found: `map ${tsnRoot.map.join(" ")} names a class for every priority pods may use (${
          allowed.join(",")
        })`,
        data,
      });
      return;
    }
    const top = Math.max(0, ...tsnRoot.map.map((c, i) => (c !== 0 ? i : 0)));
    check.warn({
      found: `the node policy lets pods use ${plural(defaulted.length, "priority")} (${
        defaulted.join(",")
      }) that the ${root?.kind} map sends to traffic class 0 only by default (map ${
        tsnRoot.map.join(" ")
      }): such packets share best effort's queue`,
      fix: `set policy.maxPriority: ${top} in ${ctx.opts.config} (pods' higher priorities are ` +
        `clamped), or extend qdisc.map to name classes for ${defaulted.join(",")}`,
      data,
    });
  });

  await ctx.runAsync(STALL, async (check) => {
    const order = ctx.inNode(() => inspectQdiscOrder(link.index));
    const tcx = ctx.inNode(() => hasTcx()) || atLeast(ctx.kernel, 6, 6);
    const data = { clsact: order.clsact, softwareTaprio: order.softwareTaprio, tcx };
    if (!order.softwareTaprio) {
      check.pass({ found: "no software-mode taprio root", data });
      return;
    }
    if (tcx) {
      check.pass({
        found:
          `kernel ${ctx.kernel.release} (6.6+) is not affected by the clsact-after-taprio stall`,
        data,
      });
      return;
    }
    if (!order.clsact) {
      check.pass({
        found: "no clsact on the interface (add it BEFORE taprio if you need one)",
        data,
      });
      return;
    }
    // Look twice: a stalled taprio holds a backlog and sends nothing.
    const before = st.rootAtStart ?? order.root;
    if (before === st.rootAtStart) await new Promise((r) => setTimeout(r, 200));
    const after = ctx.inNode(() => rootQdisc(listQdiscs(link.index)));
    const ev = before && after ? stallEvidence(before, after) : undefined;
    const recreate = `tc qdisc del dev ${link.name} root && tsnproxy install --config ` +
      `${ctx.opts.config}   (re-creates taprio after the existing clsact; with qdisc.kind keep, ` +
      "re-run your own taprio command after the delete)";
    if (ev?.stalled) {
      check.fail({
        found: `taprio on ${link.name} is not dequeuing (${ev.backlog} packets held, none ` +
          "sent): the Debian 6.1 bug where clsact added after a software taprio stops it for " +
          "good",
        fix: recreate,
        data: { ...data, backlog: ev.backlog },
      });
      return;
    }
    check.warn({
      found: `kernel ${ctx.kernel.release} (before 6.6) with clsact and a software taprio on ` +
        `${link.name}: if clsact was added after taprio, taprio stops dequeuing (the kernel ` +
        "cannot tell the order; no stall seen right now)",
      fix: `if traffic stops: ${recreate}`,
      data,
    });
  });
}

export function sysctlChecks(ctx: DoctorContext): void {
  const ref: CheckRef = {
    id: "sysctl.forward_update_priority",
    title: "net.ipv4.ip_forward_update_priority",
  };
  ctx.run(ref, (check) => {
    const v = ctx.inNode(() => readSysctl("net.ipv4.ip_forward_update_priority"));
    const data = { value: v ?? null, restoreAt: ctx.config.restoreAt };
    if (ctx.config.restoreAt === "host-veth-ingress" && v === "1") {
      check.fail({
        found: "=1 with restoreAt host-veth-ingress: IPv4 forwarding rewrites skb->priority " +
          "from the TOS byte AFTER the restorer ran on the host veth, so every forwarded pod " +
          "packet leaves with the TOS-derived priority (0 for TOS 0), not the pod's SO_PRIORITY",
        fix: "sysctl -w net.ipv4.ip_forward_update_priority=0 && echo " +
          "net.ipv4.ip_forward_update_priority=0 > /etc/sysctl.d/90-tsnproxy.conf   " +
          "(or use restoreAt: tsn-egress)",
        data,
      });
      return;
    }
    check.pass({
      found: ctx.config.restoreAt === "tsn-egress"
        ? `=${v ?? "?"}: harmless with restoreAt tsn-egress (the restorer runs after forwarding)`
        : `=${v}: forwarding keeps the priority the restorer set on the host veth`,
      data,
    });
  });
}

function linkProgId(pin: string): number | undefined {
  return readPinned(pin, (fd) => linkInfo(fd).progId);
}

function progName(id: number): string {
  const fd = fdById("prog", id);
  if (fd < 0) return "?";
  try {
    return progInfo(fd).name || "?";
  } finally {
    closeFd(fd);
  }
}

export function xdpChecks(ctx: DoctorContext): void {
  ctx.run({ id: "xdp.host_veths", title: "No XDP on host veths" }, (check) => {
    const links = ctx.inNode(() => listLinks());
    const veths = links.filter((l) => l.kind === "veth" && !ctx.tsnInterfaces.includes(l.name));
    const withXdp = veths.filter((l) => l.xdpMode !== "none");
    const list = withXdp.map((l) => ({
      ifname: l.name,
      mode: l.xdpMode,
      progId: l.xdpProgId ?? null,
      progName: l.xdpProgId ? progName(l.xdpProgId) : null,
    }));
    if (list.length === 0) {
      check.pass({
        found: `no XDP program on ${plural(veths.length, "veth")}`,
        data: { veths: veths.length },
      });
      return;
    }
    check.warn({
      found: `XDP on ${
        list.map((x) => `${x.ifname} (${x.mode}, ${x.progName}#${x.progId ?? "?"})`).join(", ")
      }: XDP re-creates the skb of every packet the pod sends (admit runs after it at tc ` +
        "ingress, so restoring still works, unlike pointer-keyed designs), but packets it " +
        "redirects (XDP_REDIRECT/XDP_TX) bypass tc: they are never admitted nor restored",
      fix: `if the primary CNI did not mean to attach it: ${
        list.map((x) =>
          `ip link set dev ${x.ifname} xdp off`
        ).join("; ")
      }`,
      data: { programs: list },
    });
  });
}

/**
 * Devices whose dsmark qdisc (kernels before 6.8) rewrites skb->tc_index, where the saver's
 * tag travels. On the TSN interface itself the qdisc runs after the restorer; anywhere else
 * (an overlay, a bond in front of the NIC) the tag of every packet through it is lost.
 */
export function tcIndexWriters(
  links: readonly Pick<LinkInfo, "index" | "name">[],
  qdiscsOf: (ifindex: number) => readonly Pick<QdiscInfo, "kind" | "handle">[],
  tsnInterfaces: readonly string[],
): string[] {
  return links.filter((l) => !tsnInterfaces.includes(l.name)).flatMap((l) =>
    qdiscsOf(l.index).filter((q) => q.kind === "dsmark").map((q) =>
      `${l.name} (dsmark ${formatHandle(q.handle)})`
    )
  );
}

/** What a foreign program or device says about the datapath it belongs to. */
export function recognise(
  programs: readonly Pick<DeviceProgram, "name" | "device">[],
  deviceNames: readonly string[],
): string[] {
  const out = new Set<string>();
  const cilium = (n: string) => /^cil_/.test(n);
  const calico = (n: string) => /^(calico|cali)_/.test(n);
  if (programs.some((p) => cilium(p.name)) || deviceNames.some((d) => d.startsWith("cilium_"))) {
    out.add("Cilium");
  }
  if (
    programs.some((p) => calico(p.name)) ||
    deviceNames.some((d) => d === "vxlan.calico" || d === "wireguard.cali")
  ) out.add("Calico (eBPF dataplane)");
  return [...out];
}

export function carrierChecks(ctx: DoctorContext): void {
  const ref: CheckRef = {
    id: "interface.carrier",
    title: "Other datapaths on the pods' way, and the carrier",
  };
  ctx.run(ref, (check) => {
    const tsn = ctx.tsnInterfaces;
    const { programs, writers, devices } = ctx.inNode(() => {
      const links = listLinks();
      return {
        programs: nodeForeignPrograms(tsn),
        writers: tcIndexWriters(links, (i) => listQdiscs(i), tsn),
        devices: links.map((l) => l.name),
      };
    });
    const names = programs.map((p) => `${p.device} ${p.direction}: ${p.name} (${p.hook})`);
    const datapaths = recognise(programs, devices);
    const data = { programs: names, dsmark: writers, datapaths, setting: ctx.config.carrier };
    const unsafe = [...names, ...writers.map((w) => `${w}: dsmark rewrites tc_index`)];
    if (unsafe.length && ctx.config.carrier === "tag") {
      check.fail({
        found:
          `carrier: tag is forced, but ${unsafe.join("; ")} ${
            datapaths.length ? `(${datapaths.join(", ")}) ` : ""
          }read or reset skb->tc_index on the pods' way: their flags would carry pods' ` +
          "priorities, and the priorities their values",
        fix: "set `carrier: auto` (or table) in the node config and run `tsnproxy install`; " +
          "re-create the pods",
        data,
      });
      return;
    }
    if (unsafe.length) {
      check.pass({
        found: `${datapaths.length ? `${datapaths.join(", ")}: ` : ""}${unsafe.join("; ")}: ` +
          `every pod takes the stage (the tag in tc_index is theirs)`,
        data,
      });
      return;
    }
    check.pass({
      found: "no other program on the bridges or tunnels: pods take the tag " +
        "unless their own host interface has other programs (pods.carrier)" +
        (ctx.config.carrier === "table" ? "; carrier: table puts every pod on the stage" : ""),
      data,
    });
  });
}
