/**
 * doctor checks of the node's network side: the TSN interface, the restorer's place on it,
 * its qdisc (and the Debian 6.1 clsact-after-taprio stall), the forwarding sysctl that
 * rewrites priorities, and XDP programs on host veths.
 */
import { CLSACT_HANDLE, CLSACT_PRIORITY, queryTcx } from "../bpf/attach.ts";
import { hasTcx } from "../bpf/features.ts";
import { restorerAttached, restorerPin } from "../bpf/node.ts";
import { PROGRAMS } from "../bpf/pins.ts";
import { closeFd, fdById, linkInfo, progInfo, readPinned } from "../bpf/sys.ts";
import { compilePolicy, REMAP_SLOTS } from "../config/policy.ts";
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
import { parse as parseYaml } from "yaml";
import { type DoctorContext, plural } from "./context.ts";
import { pinnedProgId } from "./checks_pins.ts";
import { atLeast, moduleState, readSysctl } from "./probe.ts";

export interface NetState {
  link?: LinkInfo;
  /** Root qdisc stats at the start of the run (for the stall check's second look). */
  rootAtStart?: QdiscInfo;
}

export function interfaceChecks(ctx: DoctorContext, st: NetState): void {
  const name = ctx.tsnInterface;
  const needIf = ctx.config.restoreAt === "tsn-egress";
  ctx.run("config", "tsn_interface", "TSN interface exists", () => {
    if (!name) {
      ctx.add(
        needIf ? "fail" : "info",
        "config",
        "tsn_interface",
        "TSN interface exists",
        needIf
          ? "no tsnInterface in the node config and no --tsn-interface: restoreAt tsn-egress " +
            "has nowhere to restore"
          : "no tsnInterface configured (restoreAt host-veth-ingress restores on pod veths)",
        needIf ? `set tsnInterface: <ifname> in ${ctx.opts.config}` : undefined,
      );
      return;
    }
    const link = ctx.inNode(() => findLink(name));
    if (!link) {
      ctx.add(
        "fail",
        "config",
        "tsn_interface",
        "TSN interface exists",
        `${name} does not exist in this network namespace`,
        `check the name with \`ip link\` and set tsnInterface in ${ctx.opts.config} (or ` +
          "--tsn-interface), or create the interface",
        { name },
      );
      return;
    }
    st.link = link;
    ctx.add(
      "pass",
      "config",
      "tsn_interface",
      "TSN interface exists",
      `${name}: ifindex ${link.index}, ${link.kind ?? "physical"}, ${
        plural(link.numTxQueues, "tx queue")
      }`,
      undefined,
      { name, ifindex: link.index, kind: link.kind ?? null, txQueues: link.numTxQueues },
    );
  });
  const link = st.link;
  if (!link) {
    for (const [n, t] of [["up", "TSN interface up"], ["restorer", "Restorer attached first"]]) {
      ctx.add("skip", "interface", n, t, "no TSN interface (config.tsn_interface)");
    }
    return;
  }

  ctx.run("interface", "up", "TSN interface up", () => {
    const data = { up: link.up, operstate: link.operstate };
    if (!link.up) {
      ctx.add(
        "fail",
        "interface",
        "up",
        "TSN interface up",
        `${link.name} is administratively down: nothing leaves it`,
        `ip link set dev ${link.name} up`,
        data,
      );
    } else if (link.operstate === "down" || link.operstate === "lowerlayerdown") {
      ctx.add(
        "warn",
        "interface",
        "up",
        "TSN interface up",
        `${link.name} is up but its operational state is ${link.operstate} (no carrier)`,
        `check the cable/link partner of ${link.name} (\`ip link show ${link.name}\`)`,
        data,
      );
    } else {
      ctx.add(
        "pass",
        "interface",
        "up",
        "TSN interface up",
        `${link.name} is up (${link.operstate})`,
      );
    }
  });

  ctx.run("interface", "restorer", "Restorer attached first", () => {
    if (!needIf) {
      ctx.add(
        "info",
        "interface",
        "restorer",
        "Restorer attached first",
        "restoreAt host-veth-ingress: the restorer runs on each pod's host veth (pods.attachments)",
      );
      return;
    }
    const a = ctx.inNode(() => restorerAttached(ctx.bpffs, link.name, ctx.opts.netns));
    const fix =
      `tsnproxy install --bpffs ${ctx.bpffs}   (re-attaches the restorer to ${link.name})`;
    if (!a) {
      ctx.add(
        "fail",
        "interface",
        "restorer",
        "Restorer attached first",
        `no restorer on ${link.name} egress (pin ${restorerPin(ctx.bpffs, link.name)} missing ` +
          "or recording another ifindex): packets leave without their pods' priority/launch time",
        fix,
      );
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
        ctx.add(
          "fail",
          "interface",
          "restorer",
          "Restorer attached first",
          `the tcx link pinned for ${link.name} runs a program other than the pinned restorer ` +
            `(${restoreId ?? "not pinned"}); chain: ${data.chain.join(", ") || "empty"}`,
          fix,
          data,
        );
      } else if (pos > 0) {
        ctx.add(
          "warn",
          "interface",
          "restorer",
          "Restorer attached first",
          `tcx egress of ${link.name}: ${
            progs.slice(0, pos).map((p) => `${p.name}#${p.id}`).join(", ")
          } run before the restorer: they see packets without the restored metadata, and one ` +
            "that returns TC_ACT_OK/SHOT ends the chain before the restorer runs",
          `re-attach the restorer first: rm ${a.pin} && tsnproxy install --bpffs ${ctx.bpffs}`,
          data,
        );
      } else {
        ctx.add(
          "pass",
          "interface",
          "restorer",
          "Restorer attached first",
          `tcx egress of ${link.name}: ${data.chain.join(" -> ")} (restorer first)`,
          undefined,
          data,
        );
      }
      return;
    }
    const filters = ctx.inNode(() => listBpfFilters(link.index, "egress"));
    const ours = filters.find((f) =>
      f.handle === CLSACT_HANDLE && f.priority === CLSACT_PRIORITY &&
      f.progId !== undefined && progName(f.progId) === PROGRAMS.restore
    );
    const data = {
      api: "clsact",
      filters: filters.map((f) =>
        `pref ${f.priority} handle 0x${f.handle.toString(16)} id ${f.progId}`
      ),
    };
    if (!ours) {
      ctx.add(
        "fail",
        "interface",
        "restorer",
        "Restorer attached first",
        `the clsact marker ${a.pin} exists but ${link.name} egress has no cls_bpf filter running ` +
          `the restorer (filters: ${data.filters.join("; ") || "none"}; was clsact deleted?)`,
        `rm ${a.pin} && ${fix}`,
        data,
      );
      return;
    }
    const before = filters.filter((f) => f !== ours && f.priority < ours.priority);
    const tcxFirst = hasTcx() ? ctx.inNode(() => queryTcx(link.name, "egress")) : [];
    if (before.length || tcxFirst.length) {
      ctx.add(
        "warn",
        "interface",
        "restorer",
        "Restorer attached first",
        `on ${link.name} egress, ${
          [
            ...tcxFirst.map((p) => `tcx ${p.name}#${p.id}`),
            ...before.map((f) => `cls_bpf pref ${f.priority} id ${f.progId}`),
          ].join(", ")
        } run before the restorer (tcx runs before every clsact filter)`,
        "make sure those programs return TC_ACT_UNSPEC/TCX_NEXT, or move them after pref 1",
        data,
      );
      return;
    }
    ctx.add(
      "pass",
      "interface",
      "restorer",
      "Restorer attached first",
      `cls_bpf on ${link.name} egress, pref ${ours.priority} (first)`,
      undefined,
      data,
    );
  });
}

/** The priorities (0..15) pods may end up with under the node's default policy. */
export function allowedPriorities(
  policy: { maxPriority?: number; remap?: Record<string, number> },
) {
  const dp = compilePolicy(policy);
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

/** The configured map's length as written in the YAML (the schema pads it to 16). */
function configuredMapLength(text: string): number | undefined {
  try {
    const raw: unknown = parseYaml(text);
    if (typeof raw !== "object" || raw === null) return undefined;
    const q = (raw as Record<string, unknown>).qdisc;
    if (typeof q !== "object" || q === null) return undefined;
    const m = (q as Record<string, unknown>).map;
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

export function qdiscStart(ctx: DoctorContext, st: NetState): void {
  const link = st.link;
  if (!link) return;
  try {
    st.rootAtStart = ctx.inNode(() => rootQdisc(listQdiscs(link.index)));
  } catch {
    // qdiscChecks reports the failure
  }
}

export async function qdiscChecks(ctx: DoctorContext, st: NetState): Promise<void> {
  const link = st.link;
  if (!link) {
    for (const [n, t] of [["queues", "tx queues"]]) {
      ctx.add("skip", "interface", n, t, "no TSN interface");
    }
    for (
      const [n, t] of [["root", "Root qdisc"], ["priomap", "Priority map"], [
        "stall",
        "clsact/taprio stall (Debian 6.1)",
      ]]
    ) {
      ctx.add("skip", "qdisc", n, t, "no TSN interface");
    }
    return;
  }
  const qdiscs = ctx.inNode(() => listQdiscs(link.index));
  const root = rootQdisc(qdiscs);
  const cfg = ctx.config.qdisc;
  const rootDesc = root
    ? root.handle === 0 ? root.kind : `${root.kind} ${formatHandle(root.handle)}`
    : "none";
  const tsnRoot = root && (root.options?.kind === "taprio" || root.options?.kind === "mqprio")
    ? root.options
    : undefined;

  ctx.run("interface", "queues", "tx queues", () => {
    const layout = tsnRoot ?? (cfg.kind === "taprio" || cfg.kind === "mqprio" ? cfg : undefined);
    const data = { txQueues: link.numTxQueues };
    if (!layout) {
      ctx.add(
        "pass",
        "interface",
        "queues",
        "tx queues",
        `${link.name} has ${plural(link.numTxQueues, "tx queue")} (no taprio/mqprio to compare)`,
        undefined,
        data,
      );
      return;
    }
    const needed = Math.max(...layout.queues.map((q) => q.offset + q.count));
    const source = tsnRoot ? `the ${root?.kind} root` : `qdisc.${cfg.kind} in the config`;
    if (needed > link.numTxQueues) {
      ctx.add(
        "fail",
        "interface",
        "queues",
        "tx queues",
        `${source} uses queues up to ${needed - 1} but ${link.name} has ${
          plural(link.numTxQueues, "tx queue")
        }`,
        `fit qdisc.queues to ${link.numTxQueues} queues in ${ctx.opts.config} (or raise the ` +
          `NIC's channels: ethtool -L ${link.name} tx <n>)`,
        { ...data, needed },
      );
      return;
    }
    ctx.add(
      needed < link.numTxQueues ? "info" : "pass",
      "interface",
      "queues",
      "tx queues",
      `${source} uses ${needed} of ${link.name}'s ${plural(link.numTxQueues, "tx queue")}`,
      undefined,
      { ...data, needed },
    );
  });

  await ctx.runAsync("qdisc", "root", "Root qdisc", async () => {
    const etf = qdiscs.filter((q) => q.kind === "etf").map((q) => formatHandle(q.parent));
    const data = { root: rootDesc, etfParents: etf, configured: cfg.kind };
    const etfNote = etf.length ? `, etf under ${etf.join(", ")}` : "";
    if (cfg.kind === "keep") {
      const tsn = root && ["taprio", "mqprio", "etf"].includes(root.kind) || etf.length > 0;
      ctx.add(
        "info",
        "qdisc",
        "root",
        "Root qdisc",
        `root ${rootDesc}${etfNote} (qdisc.kind keep: tsnproxy leaves it alone)${
          tsn ? "" : "; no taprio/mqprio/etf: restored priorities select no TSN queue"
        }`,
        undefined,
        data,
      );
      return;
    }
    if (cfg.kind === "none") {
      const bad = root?.kind === "taprio" || root?.kind === "mqprio";
      ctx.add(
        bad ? "warn" : "pass",
        "qdisc",
        "root",
        "Root qdisc",
        `root ${rootDesc}${bad ? " but qdisc.kind is none" : " (qdisc.kind none)"}`,
        bad ? `tsnproxy install --config ${ctx.opts.config}   (removes it)` : undefined,
        data,
      );
      return;
    }
    if (root?.kind === cfg.kind) {
      const match = rootMatches(root, qdiscs, cfg);
      ctx.add(
        match ? "pass" : "warn",
        "qdisc",
        "root",
        "Root qdisc",
        match
          ? `root ${rootDesc}${etfNote} matches the configured ${cfg.kind}`
          : `root ${rootDesc}${etfNote} differs from the configured ${cfg.kind} (map, queues, ` +
            "schedule or etf children)",
        match ? undefined : `tsnproxy install --config ${ctx.opts.config}   (re-applies qdisc)`,
        data,
      );
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
    ctx.add(
      "fail",
      "qdisc",
      "root",
      "Root qdisc",
      `root is ${rootDesc}, the config wants ${cfg.kind}${why}`,
      fix,
      { ...data, module, moduleState: state, etfModuleState: etfState },
    );
  });

  ctx.run("qdisc", "priomap", "Priority map covers allowed priorities", () => {
    if (!tsnRoot) {
      ctx.add(
        "skip",
        "qdisc",
        "priomap",
        "Priority map covers allowed priorities",
        `no taprio/mqprio root on ${link.name} (root ${rootDesc})`,
      );
      return;
    }
    const allowed = allowedPriorities(ctx.config.policy);
    const explicit = cfg.kind === root?.kind ? configuredMapLength(ctx.configText) : undefined;
    const defaulted = defaultedToClass0(tsnRoot.map, allowed, explicit);
    const data = {
      map: tsnRoot.map,
      allowed,
      defaultedToClass0: defaulted,
    };
    if (defaulted.length === 0) {
      ctx.add(
        "pass",
        "qdisc",
        "priomap",
        "Priority map covers allowed priorities",
        `map ${tsnRoot.map.join(" ")} names a class for every priority pods may use (${
          allowed.join(",")
        })`,
        undefined,
        data,
      );
      return;
    }
    const top = Math.max(0, ...tsnRoot.map.map((c, i) => (c !== 0 ? i : 0)));
    ctx.add(
      "warn",
      "qdisc",
      "priomap",
      "Priority map covers allowed priorities",
      `the node policy lets pods use ${plural(defaulted.length, "priority")} (${
        defaulted.join(",")
      }) that the ${root?.kind} map sends to traffic class 0 only by default (map ${
        tsnRoot.map.join(" ")
      }): such packets share best effort's queue`,
      `set policy.maxPriority: ${top} in ${ctx.opts.config} (pods' higher priorities are ` +
        `clamped), or extend qdisc.map to name classes for ${defaulted.join(",")}`,
      data,
    );
  });

  await ctx.runAsync("qdisc", "stall", "clsact/taprio stall (Debian 6.1)", async () => {
    const title = "clsact/taprio stall (Debian 6.1)";
    const order = ctx.inNode(() => inspectQdiscOrder(link.index));
    const tcx = ctx.inNode(() => hasTcx()) || atLeast(ctx.kernel, 6, 6);
    const data = { clsact: order.clsact, softwareTaprio: order.softwareTaprio, tcx };
    if (!order.softwareTaprio) {
      ctx.add("pass", "qdisc", "stall", title, "no software-mode taprio root", undefined, data);
      return;
    }
    if (tcx) {
      ctx.add(
        "pass",
        "qdisc",
        "stall",
        title,
        `kernel ${ctx.kernel.release} (6.6+) is not affected by the clsact-after-taprio stall`,
        undefined,
        data,
      );
      return;
    }
    if (!order.clsact) {
      ctx.add(
        "pass",
        "qdisc",
        "stall",
        title,
        "no clsact on the interface (add it BEFORE taprio if you need one)",
        undefined,
        data,
      );
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
      ctx.add(
        "fail",
        "qdisc",
        "stall",
        title,
        `taprio on ${link.name} is not dequeuing (${ev.backlog} packets held, none sent): the ` +
          "Debian 6.1 bug where clsact added after a software taprio stops it for good",
        recreate,
        { ...data, backlog: ev.backlog },
      );
      return;
    }
    ctx.add(
      "warn",
      "qdisc",
      "stall",
      title,
      `kernel ${ctx.kernel.release} (before 6.6) with clsact and a software taprio on ${link.name}: ` +
        "if clsact was added after taprio, taprio stops dequeuing (the kernel cannot tell the " +
        "order; no stall seen right now)",
      `if traffic stops: ${recreate}`,
      data,
    );
  });
}

export function sysctlChecks(ctx: DoctorContext): void {
  const title = "net.ipv4.ip_forward_update_priority";
  ctx.run("sysctl", "forward_update_priority", title, () => {
    const v = ctx.inNode(() => readSysctl("net.ipv4.ip_forward_update_priority"));
    const data = { value: v ?? null, restoreAt: ctx.config.restoreAt };
    if (ctx.config.restoreAt === "host-veth-ingress" && v === "1") {
      ctx.add(
        "fail",
        "sysctl",
        "forward_update_priority",
        title,
        "=1 with restoreAt host-veth-ingress: IPv4 forwarding rewrites skb->priority from the " +
          "TOS byte AFTER the restorer ran on the host veth, so every forwarded pod packet " +
          "leaves with the TOS-derived priority (0 for TOS 0), not the pod's SO_PRIORITY",
        "sysctl -w net.ipv4.ip_forward_update_priority=0 && echo " +
          "net.ipv4.ip_forward_update_priority=0 > /etc/sysctl.d/90-tsnproxy.conf   " +
          "(or use restoreAt: tsn-egress)",
        data,
      );
      return;
    }
    ctx.add(
      "pass",
      "sysctl",
      "forward_update_priority",
      title,
      ctx.config.restoreAt === "tsn-egress"
        ? `=${v ?? "?"}: harmless with restoreAt tsn-egress (the restorer runs after forwarding)`
        : `=${v}: forwarding keeps the priority the restorer set on the host veth`,
      undefined,
      data,
    );
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
  const title = "No XDP on host veths";
  ctx.run("xdp", "host_veths", title, () => {
    const links = ctx.inNode(() => listLinks());
    const veths = links.filter((l) => l.kind === "veth" && l.name !== ctx.tsnInterface);
    const withXdp = veths.filter((l) => l.xdpMode !== "none");
    const list = withXdp.map((l) => ({
      ifname: l.name,
      mode: l.xdpMode,
      progId: l.xdpProgId ?? null,
      progName: l.xdpProgId ? progName(l.xdpProgId) : null,
    }));
    if (list.length === 0) {
      ctx.add(
        "pass",
        "xdp",
        "host_veths",
        title,
        `no XDP program on ${plural(veths.length, "veth")}`,
        undefined,
        { veths: veths.length },
      );
      return;
    }
    ctx.add(
      "warn",
      "xdp",
      "host_veths",
      title,
      `XDP on ${
        list.map((x) => `${x.ifname} (${x.mode}, ${x.progName}#${x.progId ?? "?"})`).join(", ")
      }: XDP re-creates the skb of every packet the pod sends (tsnproxy's tag is copied with ` +
        "it and its table keys by content, so restoring still works, unlike pointer-keyed " +
        "designs), but packets it redirects " +
        "(XDP_REDIRECT/XDP_TX) bypass tc and are never restored",
      `if the primary CNI did not mean to attach it: ${
        list.map((x) => `ip link set dev ${x.ifname} xdp off`).join("; ")
      }`,
      { programs: list },
    );
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
  tsnInterface: string | undefined,
): string[] {
  return links.filter((l) => l.name !== tsnInterface).flatMap((l) =>
    qdiscsOf(l.index).filter((q) => q.kind === "dsmark").map((q) =>
      `${l.name} (dsmark ${formatHandle(q.handle)})`
    )
  );
}

/**
 * Classic tc BPF filters on the node's devices, other than tsnproxy's own: after one returns
 * TC_ACT_OK the kernel sets skb->tc_index = TC_H_MIN(classid) (tc_run()), which erases the
 * tag of the pod packets through it. tcx programs do not. The TSN interface's egress is left
 * out: the restorer runs before its filters (tcx) or is one of them (interface.restorer).
 */
export function classicFilterHooks(
  links: readonly Pick<LinkInfo, "index" | "name">[],
  filtersOf: (ifindex: number, dir: "ingress" | "egress") => readonly { progId?: number }[],
  tsnInterface: string | undefined,
  ours: ReadonlySet<number>,
): string[] {
  const out: string[] = [];
  for (const l of links) {
    if (l.name === "lo") continue;
    for (const dir of ["ingress", "egress"] as const) {
      if (dir === "egress" && l.name === tsnInterface) continue;
      const foreign = filtersOf(l.index, dir).filter((f) => !ours.has(f.progId ?? -1));
      if (foreign.length) out.push(`${l.name} ${dir} (${plural(foreign.length, "filter")})`);
    }
  }
  return out;
}

export function tcIndexChecks(ctx: DoctorContext): void {
  const title = "Nothing on the way resets skb->tc_index";
  ctx.run("interface", "tc_index", title, () => {
    if (ctx.config.carrier === "table") {
      ctx.add(
        "pass",
        "interface",
        "tc_index",
        title,
        "carrier: table: priorities travel in the fingerprint table, tc_index is not used",
      );
      return;
    }
    const ours = new Set(
      [pinnedProgId(ctx.bpffs, "restore"), pinnedProgId(ctx.bpffs, "save")]
        .filter((id): id is number => id !== undefined),
    );
    const { writers, hooks } = ctx.inNode(() => {
      const links = listLinks();
      return {
        writers: tcIndexWriters(links, (i) => listQdiscs(i), ctx.tsnInterface),
        hooks: classicFilterHooks(links, listBpfFilters, ctx.tsnInterface, ours),
      };
    });
    if (writers.length === 0 && hooks.length === 0) {
      ctx.add(
        "pass",
        "interface",
        "tc_index",
        title,
        "no dsmark qdisc and no classic tc filter on the node's devices: the priority tag " +
          "arrives intact",
      );
      return;
    }
    const why = [
      ...(writers.length ? [`${writers.join(", ")}: dsmark rewrites skb->tc_index`] : []),
      ...(hooks.length
        ? [
          `classic tc BPF filters on ${hooks.join(", ")}: one that returns TC_ACT_OK makes ` +
          "the kernel reset skb->tc_index",
        ]
        : []),
    ];
    ctx.add(
      "warn",
      "interface",
      "tc_index",
      title,
      `${why.join("; ")}. tsnproxy carries priorities 0-15 in tc_index: pod packets through ` +
        "these hooks may leave with the priority the node gives them",
      "if `tsnproxy status` shows restored well below saved, set `carrier: table` in the node " +
        "config and run `tsnproxy install` again",
      { writers, hooks },
    );
  });
}
