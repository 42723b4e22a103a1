/**
 * doctor checks of the pinned datapath: its programs (and which release loaded them), its
 * maps, the config map against the node config, and release 0.1.0's datapath while pods it
 * attached live.
 */
import { DatapathMaps } from "../bpf/maps.ts";
import { MAPS, PinLayout, type ProgramRole, PROGRAMS } from "../bpf/pins.ts";
import { closeFd, objGet, progIdAt, progInfo } from "../bpf/sys.ts";
import { formatRelease, releaseOfProgram } from "../bpf/release.ts";
import { OBJECTS_SHA256 } from "../bpf/objects.ts";
import { isLegacyPod, legacyPresent, legacyRestorers } from "../bpf/legacy.ts";
import { listPodAttachments } from "../bpf/pod.ts";
import { reasonText } from "../bpf/carrier.ts";
import { compileNode, describePolicy, samePolicy } from "../policy/resolve.ts";
import { VERSION } from "../version.ts";
import { type CheckRef, type DoctorContext, plural } from "./context.ts";
import { exists } from "../util/fs.ts";

const INSTALL = "tsnproxy install";
const ROOT: CheckRef = { id: "pins.root", title: "Pin root" };
const PROGRAMS_PINNED: CheckRef = { id: "pins.programs", title: "Pinned programs of this build" };
const MAPS_PINNED: CheckRef = { id: "pins.maps", title: "Pinned maps" };
const CONFIG: CheckRef = { id: "pins.config", title: "Datapath config matches the node config" };
const LEGACY: CheckRef = { id: "pins.legacy", title: "Release 0.1.0's datapath" };

function installFix(ctx: DoctorContext, what: string): string {
  return `${INSTALL} --bpffs ${ctx.bpffs}   (${what})`;
}

/** The pinned program's id, or undefined when the pin is missing. */
export function pinnedProgId(bpffs: string, role: ProgramRole): number | undefined {
  return progIdAt(new PinLayout(bpffs).prog(role));
}

/** True when the pin root holds this ABI's datapath (so per-pin checks make sense). */
export function pinChecks(ctx: DoctorContext): boolean {
  const pins = new PinLayout(ctx.bpffs);
  const rest = [PROGRAMS_PINNED, MAPS_PINNED, CONFIG, LEGACY];
  if (!ctx.has("kernel.bpffs", "pass")) {
    for (const ref of [ROOT, ...rest]) {
      ctx.skip({ ...ref, found: "the pin root is not on a bpf filesystem (kernel.bpffs)" });
    }
    return false;
  }
  if (!exists(pins.abiDir)) {
    const old = exists(pins.root) && legacyPresent(ctx.bpffs);
    ctx.fail({
      ...ROOT,
      found: old
        ? `${pins.root} holds only release 0.1.0's datapath: this build's (${pins.abiDir}) ` +
          "is not loaded, so new pods cannot be attached by this build's plugin"
        : `${pins.root} ${
          exists(pins.root) ? `has no ${pins.abiDir}` : "does not exist"
        }: tsnproxy is not installed on this node (or with another --bpffs)`,
      fix: installFix(ctx, "loads and pins the datapath; 0.1.0's pods keep theirs"),
    });
    for (const ref of rest) ctx.skip({ ...ref, found: "no datapath of this build (pins.root)" });
    return false;
  }
  ctx.pass({ ...ROOT, found: `${pins.abiDir} exists` });

  ctx.run(PROGRAMS_PINNED, (check) => {
    const found: Record<string, { id: number; tag: string; release: string }> = {};
    const missing: string[] = [];
    const other: string[] = [];
    const ours = OBJECTS_SHA256.slice(0, 12);
    for (const role of Object.keys(PROGRAMS) as ProgramRole[]) {
      const fd = objGet(pins.prog(role));
      if (fd === undefined) {
        missing.push(pins.prog(role));
        continue;
      }
      try {
        const i = progInfo(fd);
        const r = releaseOfProgram(fd);
        found[PROGRAMS[role]] = { id: i.id, tag: i.tag, release: formatRelease(r) };
        if (r?.objects !== ours) other.push(`${PROGRAMS[role]}: ${formatRelease(r)}`);
      } finally {
        closeFd(fd);
      }
    }
    const list = Object.entries(found).map(([n, p]) => `${n} (id ${p.id})`).join(", ");
    const data = { programs: found, missing, thisBuild: `${VERSION} (objects ${ours})` };
    if (missing.length) {
      check.fail({
        found: `missing: ${missing.join(", ")}${list ? `; present: ${list}` : ""}. New pods ` +
          "cannot be attached (the CNI plugin only attaches pinned programs)",
        fix: installFix(ctx, "re-pins the programs; maps and pod state are kept"),
        data,
      });
      return;
    }
    if (other.length) {
      check.warn({
        found: `${list}, but loaded by another build than this binary's ${data.thisBuild}: ` +
          `${other.join("; ")}. New pods get those programs until install loads this build's`,
        fix: installFix(ctx, "loads this build's programs; attached pods keep theirs"),
        data,
      });
      return;
    }
    check.pass({ found: `${list}, loaded by this build ${data.thisBuild}`, data });
  });

  ctx.run(MAPS_PINNED, (check) => {
    const missing = MAPS.filter((m) => !exists(pins.map(m))).map((m) => pins.map(m));
    if (missing.length) {
      check.fail({
        found: `missing: ${missing.join(", ")}: the programs pinned earlier use maps that ` +
          "nothing else can reach any more",
        fix: `tsnproxy uninstall --bpffs ${ctx.bpffs} && ${INSTALL} --bpffs ${ctx.bpffs}   ` +
          "(re-creates the maps; pods re-attach on their next ADD)",
        data: { missing },
      });
      return;
    }
    check.pass({ found: `${plural(MAPS.length, "map")} pinned under ${pins.mapsDir}` });
  });

  ctx.run(CONFIG, (check) => {
    const maps = DatapathMaps.open(ctx.bpffs);
    try {
      const c = maps.readConfig();
      const diffs: string[] = [];
      const ageMs = Number(c.stageMaxAgeNs / 1_000_000n);
      if (ageMs !== ctx.config.gc.maxAgeMs) {
        diffs.push(`gc.maxAgeMs ${ageMs} (config ${ctx.config.gc.maxAgeMs})`);
      }
      const want = compileNode(ctx.config.policy);
      if (!samePolicy(c.node, want)) {
        diffs.push(
          `policy ${JSON.stringify(describePolicy(c.node))} (config ${
            JSON.stringify(describePolicy(want))
          })`,
        );
      }
      const setting = ctx.config.carrier;
      if ((setting === "table" && c.tags) || (setting === "tag" && !c.tags)) {
        diffs.push(`carrier ${c.tags ? "tag" : "stage"} (config ${setting})`);
      }
      const data = {
        stageMaxAgeMs: ageMs,
        carrier: c.tags ? "tag" : "stage",
        carrierReason: reasonText(c.carrierReason),
        policy: describePolicy(c.node),
      };
      if (diffs.length) {
        check.warn({
          found: `the running datapath has ${diffs.join(", ")}`,
          fix: installFix(ctx, "writes the config map; new pods get the new policy"),
          data,
        });
        return;
      }
      check.pass({
        found: `carrier ${data.carrier} (${data.carrierReason}), stage age ${ageMs} ms, ` +
          `node policy ${JSON.stringify(data.policy)}`,
        data,
      });
    } finally {
      maps.close();
    }
  });

  ctx.run(LEGACY, (check) => {
    if (!legacyPresent(ctx.bpffs)) {
      check.pass({ found: "none pinned (no pod of release 0.1.0 on this node)" });
      return;
    }
    const pods = listPodAttachments(ctx.bpffs).filter(isLegacyPod);
    const restorers = ctx.inNode(() => legacyRestorers(ctx.bpffs));
    const data = { pods: pods.map((p) => p.name), restorers: restorers.map((r) => r.pin) };
    if (pods.length) {
      check.info({
        found: `${plural(pods.length, "pod")} still run release 0.1.0's saver; its restorer ` +
          `(${restorers.length ? restorers.map((r) => r.pin).join(", ") : "none attached"}) and ` +
          "maps stay until their DEL, which retires them",
        data,
      });
      return;
    }
    check.warn({
      found: "release 0.1.0's maps or programs are pinned, but none of its pods is left",
      fix: installFix(ctx, `retires them (the upgrade's last step)`),
      data,
    });
  });
  return true;
}
