/**
 * doctor checks for per-pod state that outlived its pod: attachment pins whose interface or
 * namespace is gone, and policy entries no pod attachment accounts for.
 */
import { type Attachment, CLSACT_HANDLE, describePin } from "../bpf/attach.ts";
import { addrKey, DatapathMaps } from "../bpf/maps.ts";
import { PinLayout } from "../bpf/pins.ts";
import { listPodAttachments, podCookie } from "../bpf/pod.ts";
import { findLink, listBpfFilters } from "../netlink/mod.ts";
import { withNetns } from "../util/netns.ts";
import { type CheckRef, type DoctorContext, plural } from "./context.ts";
import { pinnedProgId } from "./checks_pins.ts";

const NETNS_DIRS = ["/run/netns", "/var/run/netns"];

function namedNetns(): string[] {
  const out = new Set<string>();
  for (const d of NETNS_DIRS) {
    try {
      for (const e of Deno.readDirSync(d)) {
        let real = `${d}/${e.name}`;
        try {
          real = Deno.realPathSync(real);
        } catch {
          continue;
        }
        out.add(real);
      }
    } catch {
      // no such directory
    }
  }
  return [...out];
}

/** Cookies the attachment names can stand for (<container id>_<ifname>, ids may hold "_"). */
export function cookiesOf(names: readonly string[]): Set<bigint> {
  const out = new Set<bigint>();
  for (const n of names) {
    for (let i = n.indexOf("_"); i > 0; i = n.indexOf("_", i + 1)) {
      out.add(podCookie(n.slice(0, i)));
    }
  }
  return out;
}

export interface Leak {
  pin: string;
  reason: string;
}

function clsactAlive(a: Attachment, progId: number | undefined, netns?: string): boolean {
  try {
    return withNetns(
      netns,
      () =>
        listBpfFilters(a.ifindex, a.direction).some((f) =>
          f.handle === CLSACT_HANDLE && (progId === undefined || f.progId === progId)
        ),
    );
  } catch {
    return false;
  }
}

/** Attachment pins that no longer filter a live interface. */
export function findLeaks(ctx: DoctorContext): { leaks: Leak[]; total: number; names: string[] } {
  const atts = listPodAttachments(ctx.bpffs);
  const saveId = pinnedProgId(ctx.bpffs, "save");
  const restoreId = pinnedProgId(ctx.bpffs, "restore");
  const leaks: Leak[] = [];
  let total = 0;
  let nsList: string[] | undefined;
  for (const { pins } of atts) {
    for (const pin of pins) {
      total++;
      const hostSide = /@host(@clsact-.*)?$/.test(pin);
      let a: Attachment;
      try {
        a = describePin(pin);
      } catch (e) {
        leaks.push({ pin, reason: `unreadable pin (${e instanceof Error ? e.message : e})` });
        continue;
      }
      if (a.api === "tcx") {
        // The kernel zeroes a tcx link's ifindex when its interface (or its namespace) dies.
        if (a.ifindex === 0) {
          leaks.push({
            pin,
            reason: `tcx link's interface is gone (ifindex 0): the ${
              hostSide ? "host veth" : "pod namespace or interface"
            } was deleted`,
          });
        }
        continue;
      }
      if (hostSide) {
        const alive = ctx.inNode(() => findLink(a.ifindex)) !== undefined &&
          clsactAlive(a, restoreId, ctx.opts.netns);
        if (!alive) {
          leaks.push({ pin, reason: `no cls_bpf restorer on host ifindex ${a.ifindex} any more` });
        }
        continue;
      }
      // A pod's clsact filter lives in the pod's namespace: the one its pin records, else
      // (pins from before namespaces were recorded) any named one (runtimes bind-mount pod
      // namespaces there).
      if (a.netns !== undefined) {
        if (!clsactAlive(a, saveId, a.netns)) {
          leaks.push({
            pin,
            reason: `no saver on ifindex ${a.ifindex} in ${a.netns} any more (pod gone)`,
          });
        }
        continue;
      }
      nsList ??= namedNetns();
      if (!nsList.some((ns) => clsactAlive(a, saveId, ns))) {
        leaks.push({
          pin,
          reason: `no named network namespace has the saver on ifindex ${a.ifindex} (pod gone)`,
        });
      }
    }
  }
  return { leaks, total, names: atts.map((a) => a.name) };
}

function hexKey(ip: string): string {
  return [...addrKey(ip)].map((b) => b.toString(16).padStart(2, "0")).join(" ");
}

const ATTACHMENTS: CheckRef = { id: "pods.attachments", title: "No leaked pod attachments" };
const POLICIES: CheckRef = { id: "pods.policies", title: "No orphaned pod policies" };

export function podChecks(ctx: DoctorContext, installed: boolean): void {
  if (!installed) {
    ctx.skip({ ...ATTACHMENTS, found: "not installed" });
    ctx.skip({ ...POLICIES, found: "not installed" });
    return;
  }
  let names: string[] = [];
  ctx.run(ATTACHMENTS, (check) => {
    const r = findLeaks(ctx);
    names = r.names;
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

  ctx.run(POLICIES, (check) => {
    const maps = DatapathMaps.open(ctx.bpffs);
    try {
      const cookies = cookiesOf(names);
      const orphans = maps.policies().filter((p) =>
        p.policy.podCookie !== 0n && !cookies.has(p.policy.podCookie)
      );
      const total = maps.policies().length;
      const mapPin = new PinLayout(ctx.bpffs).map("tsnp_policy");
      const data = {
        policies: total,
        orphaned: orphans.map((o) => ({
          ip: o.ip,
          cookie: o.policy.podCookie.toString(16).padStart(16, "0"),
        })),
      };
      if (orphans.length === 0) {
        check.pass({
          found: `${total} policy ${
            total === 1 ? "entry" : "entries"
          }, each owned by a pod attachment`,
          data,
        });
        return;
      }
      check.warn({
        found:
          `${orphans.length} policy ${
            orphans.length === 1 ? "entry" : "entries"
          } without a pod attachment pin: ${
            orphans.map((o) => o.ip).join(", ")
          } (a DEL that never came); they fill the 4096-entry policy table, and a full table ` +
          "makes pod ADDs fail",
        fix: orphans.map((o) => `bpftool map delete pinned ${mapPin} key hex ${hexKey(o.ip)}`)
          .join(" && "),
        data,
      });
    } finally {
      maps.close();
    }
  });
}
