/**
 * The agent's readiness: whether this node runs the datapath this agent would install, as a
 * list of named conditions, each read from the machine when asked (a few bpf(2) and netlink
 * calls and one read of the CNI conf dir, ~1 ms). /readyz answers 200 only when all hold;
 * the agent repairs what does not (src/agent/repair.ts).
 *
 *   datapath.pinned    the pin root, every program and map pin of this ABI
 *   datapath.build     every pinned program is this build's: its release stamp (which the
 *                      loader writes into each program, src/bpf/release.ts) is RELEASE_STAMP
 *                      and the pin holds the program of its role
 *   restorer.attached  tsnp_restore on every TSN interface's egress (restoreAt tsn-egress
 *                      only; per interface: ./tsn_interfaces.ts)
 *   cni.binary         the plugin executable in the CNI bin dir (the init container's to
 *                      install: the agent never writes it, and never adds the entry without it)
 *   conflist.entry     the active conflist holds the entry install would write
 *
 * Liveness is not here: it is the agent process answering at all (command.ts).
 */
import { MAPS, PinLayout, type ProgramRole, PROGRAMS } from "../bpf/pins.ts";
import { formatRelease } from "../bpf/release.ts";
import { isThisBuild, pinnedProgram, RELEASE_STAMP } from "../bpf/loader.ts";
import { asTsnproxyError } from "../errors.ts";
import { planInstall as planConflistInstall } from "../install/conflist.ts";
import { type InstallTarget, pluginEntry } from "../install/plan.ts";
import { binaryPath } from "../install/binary.ts";
import { exists, lexists } from "../util/fs.ts";
import { type RestorerState, restorerStates } from "./tsn_interfaces.ts";

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

function buildCondition(bpffs: string): Condition {
  return {
    name: "datapath.build",
    check() {
      const wrong: string[] = [];
      for (const role of Object.keys(PROGRAMS) as ProgramRole[]) {
        const p = pinnedProgram(bpffs, role);
        if (!p) wrong.push(`${PROGRAMS[role]} not pinned`);
        else if (p.name !== PROGRAMS[role]) wrong.push(`${PROGRAMS[role]}'s pin holds ${p.name}`);
        else if (!isThisBuild(role, p)) {
          wrong.push(`${PROGRAMS[role]} loaded by ${formatRelease(p.release)}`);
        }
      }
      if (wrong.length > 0) {
        return {
          ok: false,
          detail: `not this build's (${RELEASE_STAMP}): ${wrong.join(", ")}`,
        };
      }
      return { ok: true, detail: `every pinned program is this build's (${RELEASE_STAMP})` };
    },
  };
}

function restorerCondition(
  t: InstallTarget,
  seen?: (states: RestorerState[]) => void,
): Condition {
  return {
    name: "restorer.attached",
    check() {
      const states = restorerStates(t);
      seen?.(states);
      const bad = states.filter((s) => !s.ok);
      if (bad.length > 0) return { ok: false, detail: bad.map((s) => s.detail).join("; ") };
      return { ok: true, detail: states.map((s) => s.detail).join("; ") };
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

/** The conditions for this node, in the order they are reported. */
export function datapathConditions(
  t: InstallTarget,
  restorersSeen?: (states: RestorerState[]) => void,
): Condition[] {
  const out = [pinnedCondition(t.cfg.bpffs), buildCondition(t.cfg.bpffs)];
  if (t.cfg.restoreAt === "tsn-egress") out.push(restorerCondition(t, restorersSeen));
  out.push(binaryCondition(t), conflistCondition(t));
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
