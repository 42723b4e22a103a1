/**
 * The agent's readiness: whether this node runs the datapath this agent would install, as a
 * list of named conditions, each read from the machine when asked (a few bpf(2) and netlink
 * calls and one read of the CNI conf dir, ~1 ms). /readyz answers 200 only when all hold;
 * the agent repairs what does not (src/agent/repair.ts). A condition that stops making sense
 * (the datapath rewrite may drop the GC timer) is one entry to delete from datapathConditions().
 *
 *   datapath.pinned    the pin root, every program and map pin
 *   datapath.build     every pinned program is the one this build loads (same tag)
 *   restorer.attached  tsnp_restore on the TSN interface's egress (restoreAt tsn-egress only)
 *   cni.binary         the plugin executable in the CNI bin dir (the init container's to
 *                      install: the agent never writes it, and never adds the entry without it)
 *   conflist.entry     the active conflist holds the entry install would write
 *   gc.ticking         the GC timer's last tick is at most two intervals (and 1 s) old
 *
 * Liveness is not here: it is the agent process answering at all (command.ts).
 */
import { restorerAttached } from "../bpf/node.ts";
import { DatapathMaps } from "../bpf/maps.ts";
import { MAPS, PinLayout, type ProgramRole, PROGRAMS } from "../bpf/pins.ts";
import { closeFd, objGet, progInfo } from "../bpf/sys.ts";
import { ifNameToIndex, monotonicNs } from "../ffi/libc.ts";
import { asTsnproxyError } from "../errors.ts";
import { planInstall as planConflistInstall } from "../install/conflist.ts";
import { type InstallTarget, pluginEntry } from "../install/plan.ts";
import { binaryPath } from "../install/binary.ts";
import { exists, lexists } from "../util/fs.ts";

export interface ConditionState {
  name: string;
  ok: boolean;
  detail: string;
}

export interface Condition {
  name: string;
  check(): Omit<ConditionState, "name"> | Promise<Omit<ConditionState, "name">>;
}

export interface Readiness {
  ready: boolean;
  conditions: ConditionState[];
}

/** What the conditions need from the agent besides the node config. */
export interface ReadinessContext {
  target: InstallTarget;
  /** This build's program tags, known once the agent loaded its objects (repair.ts). */
  buildTags(): Partial<Record<ProgramRole, string>> | undefined;
  /** When the agent last (re)armed the GC timer, CLOCK_MONOTONIC ns; undefined: never. */
  gcArmedAtNs(): bigint | undefined;
}

/** The tag of the program pinned for `role`; undefined without the pin. */
export function pinnedTag(bpffs: string, role: ProgramRole): string | undefined {
  const fd = objGet(new PinLayout(bpffs).prog(role));
  if (fd === undefined) return undefined;
  try {
    return progInfo(fd).tag;
  } finally {
    closeFd(fd);
  }
}

function pinnedCondition(bpffs: string): Condition {
  return {
    name: "datapath.pinned",
    check() {
      const pins = new PinLayout(bpffs);
      if (!exists(pins.root)) return { ok: false, detail: `${pins.root} does not exist` };
      const roles = Object.keys(PROGRAMS) as ProgramRole[];
      const missing = [...roles.map((r) => pins.prog(r)), ...MAPS.map((m) => pins.map(m))]
        .filter((p) => !lexists(p));
      if (missing.length > 0) return { ok: false, detail: `missing: ${missing.join(", ")}` };
      return { ok: true, detail: `${roles.length} programs and ${MAPS.length} maps pinned` };
    },
  };
}

function buildCondition(ctx: ReadinessContext): Condition {
  const bpffs = ctx.target.cfg.bpffs;
  return {
    name: "datapath.build",
    check() {
      const want = ctx.buildTags();
      if (!want) return { ok: false, detail: "this build's programs are not loaded yet" };
      const wrong: string[] = [];
      for (const role of Object.keys(PROGRAMS) as ProgramRole[]) {
        const have = pinnedTag(bpffs, role);
        if (have !== want[role]) {
          wrong.push(
            `${PROGRAMS[role]} ${have ? `tag ${have}` : "not pinned"} (this build: ${want[role]})`,
          );
        }
      }
      if (wrong.length > 0) return { ok: false, detail: `not this build's: ${wrong.join(", ")}` };
      return { ok: true, detail: "every pinned program is this build's" };
    },
  };
}

function restorerCondition(t: InstallTarget): Condition {
  return {
    name: "restorer.attached",
    check() {
      if (ifNameToIndex(t.tsnInterface) === 0) {
        return { ok: false, detail: `the TSN interface ${t.tsnInterface} does not exist` };
      }
      const a = exists(new PinLayout(t.cfg.bpffs).root)
        ? restorerAttached(t.cfg.bpffs, t.tsnInterface)
        : undefined;
      return a
        ? { ok: true, detail: `on ${t.tsnInterface} egress (${a.api}, ifindex ${a.ifindex})` }
        : { ok: false, detail: `not attached to ${t.tsnInterface}` };
    },
  };
}

/** Whether the CNI bin dir holds an executable tsnproxy (undefined) or why not. */
export function binaryProblem(binDir: string): string | undefined {
  const path = binaryPath(binDir);
  try {
    const st = Deno.statSync(path);
    if (st.isFile && ((st.mode ?? 0) & 0o111) !== 0) return undefined;
    return `${path} is not an executable file`;
  } catch {
    return `${path} does not exist (the init container's \`tsnproxy install\` puts it there)`;
  }
}

function binaryCondition(t: InstallTarget): Condition {
  return {
    name: "cni.binary",
    check() {
      const problem = binaryProblem(t.cfg.cni.binDir);
      return problem
        ? { ok: false, detail: problem }
        : { ok: true, detail: binaryPath(t.cfg.cni.binDir) };
    },
  };
}

function conflistCondition(t: InstallTarget): Condition {
  return {
    name: "conflist.entry",
    async check() {
      const plan = await planConflistInstall({
        confDir: t.cfg.cni.confDir,
        network: t.cfg.cni.network,
        entry: pluginEntry(t),
        recover: false,
      });
      if (plan.changes.length === 0) {
        return { ok: true, detail: `${plan.target}: entry present (${plan.status})` };
      }
      return {
        ok: false,
        detail: `${plan.target}: the entry install writes is missing or different (${
          plan.changes.map((c) => `${c.action} ${c.path}`).join(", ")
        })`,
      };
    },
  };
}

/** Same bound as install's check of the timer (src/install/plan.ts gcLooksArmed). */
const GC_SLACK_NS = 1_000_000_000n;

function gcCondition(ctx: ReadinessContext): Condition {
  const bpffs = ctx.target.cfg.bpffs;
  return {
    name: "gc.ticking",
    check() {
      const maps = DatapathMaps.open(bpffs);
      try {
        const interval = maps.readConfig().gcIntervalNs;
        const last = maps.lastGcTickNs();
        const now = monotonicNs();
        const bound = 2n * interval + GC_SLACK_NS;
        if (last > 0n && now - last <= bound) {
          return { ok: true, detail: `last tick ${(now - last) / 1_000_000n} ms ago` };
        }
        const armed = ctx.gcArmedAtNs();
        if (armed !== undefined && now - armed <= interval + GC_SLACK_NS) {
          return { ok: true, detail: "armed by this agent, first tick pending" };
        }
        return {
          ok: false,
          detail: last > 0n
            ? `last tick ${(now - last) / 1_000_000n} ms ago (interval ${interval / 1_000_000n} ms)`
            : "the timer never ticked",
        };
      } finally {
        maps.close();
      }
    },
  };
}

/** The conditions for this node, in the order they are reported. */
export function datapathConditions(ctx: ReadinessContext): Condition[] {
  const out = [pinnedCondition(ctx.target.cfg.bpffs), buildCondition(ctx)];
  if (ctx.target.cfg.restoreAt === "tsn-egress") out.push(restorerCondition(ctx.target));
  out.push(binaryCondition(ctx.target), conflistCondition(ctx.target), gcCondition(ctx));
  return out;
}

/** Checks every condition; one that throws does not hold, with the error as its detail. */
export async function evaluate(conditions: Condition[]): Promise<Readiness> {
  const states: ConditionState[] = [];
  for (const c of conditions) {
    try {
      states.push({ name: c.name, ...(await c.check()) });
    } catch (e) {
      states.push({ name: c.name, ok: false, detail: asTsnproxyError(e).message });
    }
  }
  return { ready: states.every((s) => s.ok), conditions: states };
}

/** The probe's body: one line per condition. */
export function formatReadiness(r: Readiness): string {
  return r.conditions.map((c) => `${c.ok ? "ok" : "FAIL"} ${c.name}: ${c.detail}`).join("\n") +
    "\n";
}
