/**
 * doctor checks per pod interface: attachment pins that outlived their pod, tsnp_pods entries
 * no attachment accounts for, and each pod's carrier and admit's place on its host interface
 * (first, ahead of every other datapath's program there).
 */
import { type Attachment, CLSACT_HANDLES, clsactRunsPin, describePin } from "../bpf/attach.ts";
import { DatapathMaps, type PodEntry } from "../bpf/maps.ts";
import { HOST_HANDLES, listPodAttachments, podCookie } from "../bpf/pod.ts";
import { foreign, programsOn } from "../bpf/hooks.ts";
import { reasonText } from "../bpf/carrier.ts";
import { findLink } from "../netlink/mod.ts";
import { parsePodPin } from "../bpf/pins.ts";
import { ifIndexToName } from "../ffi/libc.ts";
import { type CheckRef, type DoctorContext, plural } from "./context.ts";
import { pinnedProgId } from "./checks_pins.ts";

export interface Leak {
  pin: string;
  reason: string;
}

/** Attachment pins that no longer sit on a live interface. */
export function findLeaks(ctx: DoctorContext): { leaks: Leak[]; total: number } {
  const leaks: Leak[] = [];
  let total = 0;
  for (const { pins } of listPodAttachments(ctx.bpffs)) {
    for (const pin of pins) {
      total++;
      const hostSide = parsePodPin(pin.slice(pin.lastIndexOf("/") + 1))?.side === "host";
      let a: Attachment;
      try {
        a = describePin(pin);
      } catch (e) {
        leaks.push({ pin, reason: `unreadable pin (${e instanceof Error ? e.message : e})` });
        continue;
      }
      if (a.api !== "clsact") {
        // The kernel zeroes a link's ifindex when its interface (or its namespace) dies.
        if (a.ifindex === 0) {
          leaks.push({
            pin,
            reason: `${a.api} link's interface is gone (ifindex 0): the ${
              hostSide ? "host side" : "pod namespace or interface"
            } was deleted`,
          });
        }
        continue;
      }
      if (hostSide) {
        const alive = ctx.inNode(() => findLink(a.ifindex)) !== undefined &&
          clsactRunsPin(pin, a, HOST_HANDLES, ctx.opts.netns);
        if (!alive) leaks.push({ pin, reason: `no admit filter on host ifindex ${a.ifindex}` });
        continue;
      }
      // A pod's clsact filter lives in the pod's namespace, which its marker records.
      if (a.netns === undefined || !clsactRunsPin(pin, a, [CLSACT_HANDLES.save], a.netns)) {
        leaks.push({
          pin,
          reason: `no saver on ifindex ${a.ifindex} in ${a.netns ?? "an unrecorded namespace"}` +
            " any more (pod gone)",
        });
      }
    }
  }
  return { leaks, total };
}

const ATTACHMENTS: CheckRef = { id: "pods.attachments", title: "No leaked pod attachments" };
const ENTRIES: CheckRef = { id: "pods.entries", title: "No orphaned pod entries" };
const CARRIERS: CheckRef = {
  id: "pods.carrier",
  title: "Each pod's carrier fits its way; admit runs first",
};

interface PodView {
  ifindex: number;
  host?: string;
  entry: PodEntry;
}

function podViews(ctx: DoctorContext): PodView[] {
  const maps = DatapathMaps.open(ctx.bpffs);
  try {
    return maps.pods().map(({ ifindex, entry }) => ({
      ifindex,
      host: ctx.inNode(() => ifIndexToName(ifindex)),
      entry,
    }));
  } finally {
    maps.close();
  }
}

export function podChecks(ctx: DoctorContext, installed: boolean): void {
  if (!installed) {
    for (const ref of [ATTACHMENTS, ENTRIES, CARRIERS]) {
      ctx.skip({ ...ref, found: "not installed" });
    }
    return;
  }
  ctx.run(ATTACHMENTS, (check) => {
    const r = findLeaks(ctx);
    const data = {
      attachments: r.total,
      leaked: r.leaks.map((l) => ({ pin: l.pin, reason: l.reason })),
    };
    if (r.leaks.length === 0) {
      check.pass({
        found: `${plural(r.total, "pod attachment pin")}, all on live interfaces`,
        data,
      });
      return;
    }
    check.warn({
      found: `${plural(r.leaks.length, "leaked attachment")} of ${r.total}: ${
        r.leaks.map((l) => `${l.pin}: ${l.reason}`).join("; ")
      } (a DEL that never came, or a crash between netns deletion and DEL)`,
      fix: `rm ${r.leaks.map((l) => l.pin).join(" ")}   (unpinning releases them; the ` +
        "runtime's CNI GC does the same)",
      data,
    });
  });

  const views = podViews(ctx);
  ctx.run(ENTRIES, (check) => {
    const atts = listPodAttachments(ctx.bpffs);
    const cookies = new Set(
      atts.flatMap((a) =>
        a.containerId !== undefined
          ? [podCookie(a.containerId)]
          : (a.legacy ?? []).map((c) => podCookie(c.containerId))
      ),
    );
    const orphans = views.filter((v) => v.host === undefined || !cookies.has(v.entry.cookie));
    const data = {
      entries: views.length,
      orphaned: orphans.map((o) => ({
        ifindex: o.ifindex,
        host: o.host ?? null,
        cookie: o.entry.cookie.toString(16).padStart(16, "0"),
      })),
    };
    if (orphans.length === 0) {
      check.pass({
        found: `${plural(views.length, "pod entry")}, each owned by an attachment`,
        data,
      });
      return;
    }
    check.warn({
      found: `${plural(orphans.length, "entry")} in tsnp_pods without a live interface or an ` +
        `attachment: ${
          orphans.map((o) => `ifindex ${o.ifindex}${o.host ? ` (${o.host})` : " (gone)"}`).join(
            ", ",
          )
        } (a DEL that never came); a new interface with the same index would find it`,
      fix: `tsnproxy install --bpffs ${ctx.bpffs}   (removes entries of interfaces that are gone)`,
      data,
    });
  });

  ctx.run(CARRIERS, (check) => {
    const admitId = pinnedProgId(ctx.bpffs, "admit");
    const problems: string[] = [];
    const warnings: string[] = [];
    const pods = views.filter((v) => v.host !== undefined).map((v) => {
      const host = v.host as string;
      const kind = ctx.inNode(() => findLink(host))?.kind;
      const progs = ctx.inNode(() =>
        programsOn(host, "ingress", { netns: ctx.opts.netns, netkit: kind === "netkit" })
      );
      const first = progs[0];
      const others = foreign(progs);
      const admitFirst = first !== undefined && first.name === "tsnp_admit";
      if (!progs.some((p) => p.name === "tsnp_admit")) {
        problems.push(`${host}: admit is not attached (its pod's packets are not admitted)`);
      } else if (!admitFirst) {
        problems.push(
          `${host}: ${first?.name ?? "?"} (${first?.hook}) runs before admit: it sees the ` +
            "pod's request in tc_index",
        );
      }
      if (v.entry.carrier === "tag" && others.length) {
        const names = others.map((p) => `${p.name} (${p.hook})`).join(", ");
        (ctx.config.carrier === "tag" ? problems : warnings).push(
          `${host}: the tag with ${names} on its way` +
            (ctx.config.carrier === "tag"
              ? " (carrier: tag is forced: those programs read or reset tc_index)"
              : " (attached after the pod's ADD)"),
        );
      }
      return {
        host,
        ifindex: v.ifindex,
        carrier: v.entry.carrier,
        reason: reasonText(v.entry.reason),
        slot: v.entry.slot,
        chain: progs.map((p) => `${p.name}#${p.id} (${p.hook})`),
        admitPinnedId: admitId ?? null,
      };
    });
    const data = { pods };
    if (problems.length) {
      check.fail({
        found: problems.join("; "),
        fix: ctx.config.carrier === "tag"
          ? "set `carrier: auto` in the node config, run `tsnproxy install`, re-create the pods"
          : "re-create the affected pods (their ADD attaches admit first and picks the carrier)",
        data,
      });
      return;
    }
    if (warnings.length) {
      check.warn({
        found: warnings.join("; "),
        fix: `tsnproxy install --bpffs ${ctx.bpffs}   (moves them to the stage; the agent ` +
          "does the same at its next reconcile)",
        data,
      });
      return;
    }
    const tags = pods.filter((p) => p.carrier === "tag").length;
    check.pass({
      found: pods.length
        ? `${plural(pods.length, "pod interface")}: ${tags} on the tag, ${
          pods.length - tags
        } on the stage or admit only; admit first on every host interface`
        : "no pod attached",
      data,
    });
  });
}
