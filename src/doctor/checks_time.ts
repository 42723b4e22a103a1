/**
 * doctor checks of the clocks launch times depend on, and of the qdiscs that read them:
 *
 * - time.tai_offset: the kernel's TAI-UTC offset (clock_adjtime) is set and plausible;
 * - time.phc: the TSN NIC has a PTP hardware clock and hardware time stamping (SIOCETHTOOL);
 * - time.ptp4l: a ptp4l disciplines that PHC (or, without one, steers the system clock);
 * - time.phc2sys: phc2sys or chronyd (refclock PHC) keeps CLOCK_REALTIME on that PHC;
 * - qdisc.clockid: taprio/etf on the TSN NIC run on CLOCK_TAI, the clock of pods' launch times;
 * - qdisc.etf_sock_check: every etf has skip_sock_check (else it drops forwarded packets);
 * - qdisc.txtime_assist: no taprio in txtime-assist mode (it replaces forwarded launch times).
 */
import { type TsInfo, tsInfo } from "../ffi/ethtool.ts";
import { readClockState } from "../ffi/time.ts";
import {
  CLOCK_IDS,
  formatHandle,
  type LinkInfo,
  listQdiscs,
  type QdiscInfo,
  type QdiscOptions,
  TCA_TAPRIO_ATTR_FLAG_FULL_OFFLOAD,
  TCA_TAPRIO_ATTR_FLAG_TXTIME_ASSIST,
} from "../netlink/mod.ts";
import { withNetns } from "../util/netns.ts";
import type { QdiscConfig } from "../config/qdisc.ts";
import { type CheckRef, type CheckScope, type DoctorContext, plural } from "./context.ts";
import { clockLabel, etfFixCommand, taprioFixCommand } from "./tc_commands.ts";
import {
  type ChronydView,
  chronydView,
  type ClockName,
  type DaemonProcess,
  findProcesses,
  type Phc2sysView,
  phc2sysView,
  procPath,
  type Ptp4lView,
  ptp4lView,
} from "./time_sync.ts";

/** TAI-UTC since 2017-01-01 (IERS Bulletin C: no leap second announced since). */
export const TAI_UTC_SECONDS = 37;

const TAI_OFFSET: CheckRef = { id: "time.tai_offset", title: "Kernel TAI offset" };
const PHC: CheckRef = { id: "time.phc", title: "TSN NIC has a PHC and hardware time stamping" };
const PTP4L: CheckRef = { id: "time.ptp4l", title: "ptp4l disciplines the TSN NIC's clock" };
const PHC2SYS: CheckRef = {
  id: "time.phc2sys",
  title: "System clock follows the PHC (phc2sys or chrony)",
};
const CLOCKID: CheckRef = { id: "qdisc.clockid", title: "taprio/etf run on CLOCK_TAI" };
const ETF_SOCK: CheckRef = {
  id: "qdisc.etf_sock_check",
  title: "etf accepts forwarded packets (skip_sock_check)",
};
const TXTIME_ASSIST: CheckRef = {
  id: "qdisc.txtime_assist",
  title: "taprio keeps pods' launch times (no txtime-assist)",
};

type Etf = QdiscInfo & { options: Extract<QdiscOptions, { kind: "etf" }> };
type Taprio = QdiscInfo & { options: Extract<QdiscOptions, { kind: "taprio" }> };

/** The qdiscs on the TSN interface that read launch times. */
export interface LaunchTimeQdiscs {
  all: QdiscInfo[];
  etf: Etf[];
  taprio?: Taprio;
}

export function launchTimeQdiscs(qdiscs: QdiscInfo[]): LaunchTimeQdiscs {
  const etf = qdiscs.filter((q): q is Etf => q.options?.kind === "etf");
  const taprio = qdiscs.find((q): q is Taprio => q.options?.kind === "taprio");
  return { all: qdiscs, etf, taprio };
}

/** True when something on the interface compares stamps with CLOCK_TAI or the PHC. */
function readsTai(l: LaunchTimeQdiscs): boolean {
  if (l.etf.length) return true;
  const t = l.taprio?.options;
  return t !== undefined &&
    ((t.flags & TCA_TAPRIO_ATTR_FLAG_FULL_OFFLOAD) !== 0 || t.clockid === CLOCK_IDS.CLOCK_TAI);
}

function describeLaunch(l: LaunchTimeQdiscs): string {
  const parts = [
    ...(l.taprio ? [`taprio ${formatHandle(l.taprio.handle)}`] : []),
    ...l.etf.map((q) => `etf under ${formatHandle(q.parent)}`),
  ];
  return parts.join(", ");
}

const TAI_FIX = (ifname = "<TSN NIC>") =>
  `run phc2sys with -w (Debian: \`systemctl enable --now phc2sys@${ifname}\`): it takes the ` +
  "TAI-UTC offset from ptp4l and sets the kernel's once the grandmaster announces it valid " +
  "and traceable; with chrony instead, add `leapsectz right/UTC` to chrony.conf";

/** A TSN interface's qdiscs that read launch times, for the node-wide TAI check. */
export interface InterfaceLaunch {
  ifname: string;
  launch: LaunchTimeQdiscs;
}

export function taiOffsetCheck(ctx: DoctorContext, launches: readonly InterfaceLaunch[]): void {
  ctx.run(TAI_OFFSET, (check) => {
    const s = readClockState();
    const data = {
      taiOffset: s.taiOffset,
      expected: TAI_UTC_SECONDS,
      synchronized: s.synchronized,
      status: s.status,
    };
    const sync = s.synchronized
      ? "the clock is marked synchronized"
      : "the clock is marked unsynchronized (STA_UNSYNC: nothing disciplines it)";
    const users = launches.filter((l) => readsTai(l.launch))
      .map((l) => `${describeLaunch(l.launch)} on ${l.ifname}`).join("; ");
    if (s.taiOffset === TAI_UTC_SECONDS) {
      check.pass({
        found: `TAI-UTC is ${s.taiOffset} s (right since 2017-01-01): CLOCK_TAI, the clock of ` +
          `pods' launch times, is UTC + ${s.taiOffset} s; ${sync}`,
        data,
      });
      return;
    }
    if (s.taiOffset > TAI_UTC_SECONDS) {
      check.warn({
        found: `TAI-UTC is ${s.taiOffset} s, more than the ${TAI_UTC_SECONDS} s in force since ` +
          "2017-01-01: right only if a leap second was added after this tsnproxy was built",
        fix: `check IERS Bulletin C; if TAI-UTC is still ${TAI_UTC_SECONDS} s, find what set ` +
          `it (phc2sys -O, a grandmaster's currentUtcOffset) and correct it; ${
            TAI_FIX(ctx.tsnInterface)
          }`,
        data,
      });
      return;
    }
    const what = s.taiOffset === 0
      ? "the kernel's TAI offset is 0 (never set): CLOCK_TAI equals UTC"
      : `the kernel's TAI offset is ${s.taiOffset} s, stale (TAI-UTC is ${TAI_UTC_SECONDS} s ` +
        "since 2017-01-01)";
    const found = `${what}, so every CLOCK_TAI launch time a pod computes is ` +
      `${TAI_UTC_SECONDS - s.taiOffset} s off the PTP time the network and the NIC's clock keep` +
      (users ? ` (${users} compare launch times with it)` : "") +
      `; ${sync}`;
    const fix = TAI_FIX(ctx.tsnInterface);
    if (users) check.fail({ found, fix, data });
    else check.warn({ found, fix, data });
  });
}

const NIC_FIX = "use a NIC with a PTP hardware clock and hardware time stamping (e.g. Intel " +
  "i210, i225/i226) as tsnInterface: without one, launch times cannot be offloaded and PTP " +
  "runs on software time stamps (microseconds of jitter)";

/** time.phc; returns the interface's time-stamping info (undefined when it has none). */
export function phcCheck(
  ctx: DoctorContext,
  link: LinkInfo,
  launch: LaunchTimeQdiscs | undefined,
): TsInfo | undefined {
  let info: TsInfo | undefined;
  ctx.run(PHC, (check) => {
    info = ctx.inNode(() => tsInfo(link.name));
    const offloaded = launch ? offloadedLaunch(launch) : "";
    if (!info) {
      const found = `${link.name} does not report its time stamping (ETHTOOL_GET_TS_INFO is ` +
        "not supported by its driver): no PTP hardware clock is known";
      if (offloaded) check.fail({ found: `${found}, but ${offloaded}`, fix: NIC_FIX });
      else check.warn({ found, fix: NIC_FIX });
      return;
    }
    const data = {
      phcIndex: info.phcIndex ?? null,
      device: info.phcIndex !== undefined ? `/dev/ptp${info.phcIndex}` : null,
      hardware: info.hardware,
      software: info.software,
      timestamping: info.flags,
    };
    const kind = link.kind ?? "physical";
    if (info.phcIndex === undefined) {
      const found = `${link.name} (${kind}) has no PTP hardware clock (phc_index -1; time ` +
        `stamping: ${info.flags.join(", ") || "none"}): ptp4l can only use software time ` +
        "stamps, and no NIC can launch packets at their launch time";
      if (offloaded) check.fail({ found: `${found}, but ${offloaded}`, fix: NIC_FIX, data });
      else check.warn({ found, fix: NIC_FIX, data });
      return;
    }
    if (!info.hardware) {
      check.warn({
        found: `${link.name} has PHC /dev/ptp${info.phcIndex} but no hardware transmit and ` +
          `receive time stamping (${info.flags.join(", ") || "none"}): ptp4l cannot use it`,
        fix: NIC_FIX,
        data,
      });
      return;
    }
    check.pass({
      found: `${link.name}: PHC /dev/ptp${info.phcIndex}, hardware time stamping (` +
        `${info.flags.join(", ")})`,
      data,
    });
  });
  return info;
}

/** What on the interface needs the NIC's clock (offloaded etf, taprio full offload). */
function offloadedLaunch(l: LaunchTimeQdiscs): string {
  const off = [
    ...l.etf.filter((q) => q.options.offload).map((q) =>
      `etf under ${formatHandle(q.parent)} offloads launch times`
    ),
    ...(l.taprio && (l.taprio.options.flags & TCA_TAPRIO_ATTR_FLAG_FULL_OFFLOAD) !== 0
      ? ["taprio runs its schedule in the NIC (full offload)"]
      : []),
  ];
  return off.join(", ");
}

/** The network namespace's inode (what tells two namespaces apart). */
function nsInode(path: string): number | undefined {
  try {
    return Deno.statSync(path).ino ?? undefined;
  } catch {
    return undefined;
  }
}

/** The PHC index behind /dev/ptpN (or a udev symlink to it) as process `pid` sees the path. */
function deviceIndex(pid: number, path: string): number | undefined {
  let real = path;
  try {
    real = Deno.realPathSync(procPath(pid, path));
  } catch {
    // keep the name
  }
  const m = /\/ptp(\d+)$/.exec(real);
  return m ? Number(m[1]) : undefined;
}

/** The PHC of interface `name` in the network namespace of process `pid`. */
function interfacePhc(pid: number, name: string): number | undefined {
  try {
    return withNetns(`/proc/${pid}/ns/net`, () => tsInfo(name))?.phcIndex;
  } catch {
    return undefined;
  }
}

interface Target {
  name: string;
  phc?: number;
  netns?: number;
}

interface Ptp4lMatch {
  view: Ptp4lView;
  iface: string;
  from: string;
  phc?: number;
}

function matchPtp4l(views: Ptp4lView[], t: Target): Ptp4lMatch[] {
  const out: Ptp4lMatch[] = [];
  for (const v of views) {
    const sameNs = t.netns !== undefined && nsInode(`/proc/${v.pid}/ns/net`) === t.netns;
    for (const i of v.interfaces) {
      const phc = v.clockDevice !== undefined
        ? deviceIndex(v.pid, v.clockDevice)
        : interfacePhc(v.pid, i.name);
      const samePhc = t.phc !== undefined && phc === t.phc;
      if (samePhc || (sameNs && i.name === t.name)) {
        out.push({ view: v, iface: i.name, from: i.from, phc });
        break;
      }
    }
  }
  return out;
}

function describePtp4l(v: Ptp4lView): string {
  const where = v.interfaces.map((i) => `${i.name} (${i.from})`).join(", ") ||
    (v.configUnreadable ? `interfaces unknown: ${v.configFile} is unreadable` : "no interface");
  return `pid ${v.pid} on ${where}`;
}

const PTP4L_FIX = (ifname: string) =>
  `run ptp4l on ${ifname} with hardware time stamping: \`systemctl enable --now ` +
  `ptp4l@${ifname}\` (Debian's unit runs \`ptp4l -f /etc/linuxptp/ptp4l.conf -i ${ifname}\`)`;

/** time.ptp4l and time.phc2sys. */
export function syncChecks(ctx: DoctorContext, link: LinkInfo, info: TsInfo | undefined): void {
  const target: Target = {
    name: link.name,
    phc: info?.phcIndex,
    netns: nsInode(ctx.opts.netns ?? "/proc/self/ns/net"),
  };
  const procs = findProcesses(["ptp4l", "phc2sys", "chronyd", "timemaster"]);
  const ptp4l = procs.filter((p) => base(p) === "ptp4l").map((p) => ptp4lView(p));
  let matches: Ptp4lMatch[] = [];
  const nothingSeen = "doctor sees the processes of its own PID namespace: in a pod, give it " +
    "hostPID";
  const phcName = target.phc !== undefined ? `/dev/ptp${target.phc}` : undefined;

  ctx.run(PTP4L, (check) => {
    matches = matchPtp4l(ptp4l, target);
    const data = {
      phc: phcName ?? null,
      matched: matches.map((m) => ({
        pid: m.view.pid,
        interface: m.iface,
        from: m.from,
        timeStamping: m.view.timeStamping,
        cmdline: m.view.cmdline,
      })),
      others: ptp4l.filter((v) => !matches.some((m) => m.view === v)).map((v) => v.cmdline),
    };
    const others = data.others.length
      ? `; other ptp4l: ${
        ptp4l.filter((v) => !matches.some((m) => m.view === v)).map(describePtp4l).join("; ")
      }`
      : "";
    if (matches.length === 0) {
      check.warn({
        found: `no ptp4l runs for ${link.name}${phcName ? ` or its PHC ${phcName}` : ""}${
          others || ` (no ptp4l process at all; ${nothingSeen})`
        }: ${
          phcName ? `${phcName} free-runs` : "the system clock is not disciplined by PTP"
        }, and launch times drift from the network's schedule`,
        fix: phcName
          ? PTP4L_FIX(link.name)
          : `run ptp4l on ${link.name} with software time stamping (-S): \`ptp4l -S -i ` +
            `${link.name}\`; better: ${NIC_FIX}`,
        data,
      });
      return;
    }
    const m = matches.find((x) => x.view.timeStamping === "hardware") ?? matches[0];
    const free = m.view.freeRunning
      ? " (free_running: it never adjusts the clock, right only on the grandmaster)"
      : "";
    const how = `ptp4l pid ${m.view.pid} runs on ${m.iface} (${m.from}), ${m.view.timeStamping} ` +
      "time stamping";
    if (phcName === undefined) {
      if (m.view.timeStamping === "software") {
        check.pass({
          found: `${how}: it steers CLOCK_REALTIME directly (${link.name} has no PHC)${free}`,
          data,
        });
      } else {
        check.warn({
          found: `${how}, but ${link.name} has no PHC: ptp4l needs software time stamping here`,
          fix: `run it with -S (or time_stamping software); better: ${NIC_FIX}`,
          data,
        });
      }
      return;
    }
    if (m.view.timeStamping !== "hardware") {
      check.warn({
        found: `${how}: it stamps in software and steers CLOCK_REALTIME, not ${phcName}, so ` +
          "the NIC's clock (which offloaded launch times use) is not disciplined",
        fix: `run it with -H (or time_stamping hardware); ${PTP4L_FIX(link.name)}`,
        data,
      });
      return;
    }
    check.pass({
      found: `${how}: it disciplines ${phcName}${
        m.iface === link.name ? "" : ` (shared with ${link.name})`
      }${free}`,
      data,
    });
  });

  ctx.run(PHC2SYS, (check) => {
    if (phcName === undefined || target.phc === undefined) {
      check.skip({
        found: `${link.name} has no PHC (time.phc): there is no NIC clock to copy to the ` +
          "system clock",
      });
      return;
    }
    const phc = target.phc;
    const resolve = (pid: number, c: ClockName): "realtime" | number | undefined =>
      c.kind === "realtime"
        ? "realtime"
        : c.kind === "device"
        ? deviceIndex(pid, c.path)
        : interfacePhc(pid, c.name);
    const phc2sys = procs.filter((p) => base(p) === "phc2sys").map(phc2sysView);
    const chronyd = procs.filter((p) => base(p) === "chronyd").map((p) => chronydView(p));
    const viaPhc2sys = phc2sys.filter((v) => {
      if (v.automatic) return matches.length > 0;
      if (!v.source) return false;
      const ends = [resolve(v.pid, v.source), resolve(v.pid, v.sink)];
      return ends.includes("realtime") && ends.includes(phc);
    });
    const viaChrony = chronyd.flatMap((v) =>
      v.refclocks.filter((r) => deviceIndex(v.pid, r.device) === phc).map((r) => ({ v, r }))
    );
    const data = {
      phc: phcName,
      phc2sys: viaPhc2sys.map((v) => v.cmdline),
      chronyd: viaChrony.map(({ v, r }) => ({ pid: v.pid, refclock: r.line, file: r.from })),
      seen: [...phc2sys.map((v) => v.cmdline), ...chronyd.map((v) => v.cmdline)],
    };
    const good = viaPhc2sys.find((v) => phc2sysProblem(v) === undefined);
    if (good) {
      check.pass({
        found: `phc2sys pid ${good.pid} (${good.cmdline}) keeps CLOCK_REALTIME on ${phcName}` +
          (good.automatic
            ? " (it follows ptp4l's ports: -a -r)"
            : good.wait
            ? ", with the TAI-UTC offset from ptp4l (-w)"
            : ` (-O ${good.offset})`),
        data,
      });
      return;
    }
    const goodChrony = viaChrony.find(({ v, r }) => chronyProblem(v, r) === undefined);
    if (goodChrony) {
      check.pass({
        found: `chronyd pid ${goodChrony.v.pid} steers the system clock from ${phcName} ` +
          `(${goodChrony.r.from}: \`${goodChrony.r.line}\`)`,
        data,
      });
      return;
    }
    const bad = viaPhc2sys[0];
    if (bad) {
      check.warn({
        found: `phc2sys pid ${bad.pid} (${bad.cmdline}) ${phc2sysProblem(bad)!.found}`,
        fix: phc2sysProblem(bad)!.fix,
        data,
      });
      return;
    }
    const badChrony = viaChrony[0];
    if (badChrony) {
      const p = chronyProblem(badChrony.v, badChrony.r)!;
      check.warn({
        found: `chronyd pid ${badChrony.v.pid} (${badChrony.r.from}: \`${badChrony.r.line}\`) ` +
          p.found,
        fix: p.fix,
        data,
      });
      return;
    }
    check.warn({
      found: `neither phc2sys nor chronyd (refclock PHC) keeps CLOCK_REALTIME on ${phcName}${
        data.seen.length ? ` (seen: ${data.seen.join("; ")})` : ` (none at all; ${nothingSeen})`
      }: CLOCK_TAI, which pods compute launch times from, drifts from the NIC's clock`,
      fix: `\`systemctl enable --now phc2sys@${link.name}\` (Debian's unit runs \`phc2sys -w ` +
        `-s ${link.name}\`), or in chrony.conf: \`refclock PHC ${phcName} tai\` and ` +
        "`leapsectz right/UTC`",
      data,
    });
  });
}

function base(p: DaemonProcess): string {
  return p.argv[0].slice(p.argv[0].lastIndexOf("/") + 1);
}

function phc2sysProblem(v: Phc2sysView): { found: string; fix: string } | undefined {
  if (v.automatic) {
    return v.realtime ? undefined : {
      found: "follows ptp4l (-a) without -r: it never steers CLOCK_REALTIME",
      fix: "add -r to its command line (`phc2sys -a -r`)",
    };
  }
  if (v.wait) return undefined;
  // -O is slave minus master: UTC - TAI when the system clock follows the PHC.
  const want = v.sink.kind === "realtime" ? -TAI_UTC_SECONDS : TAI_UTC_SECONDS;
  if (v.offset === want) return undefined;
  return {
    found: v.offset === undefined
      ? "runs without -w or -O: it assumes 0 s between the PHC (TAI) and CLOCK_REALTIME " +
        `(UTC), so the system clock is ${TAI_UTC_SECONDS} s off`
      : `runs with -O ${v.offset} instead of ${want} (or -w): the system clock is ` +
        `${Math.abs(want - v.offset)} s off UTC, and CLOCK_TAI with it`,
    fix: "replace -O with -w (phc2sys then takes the TAI-UTC offset from ptp4l and sets the " +
      `kernel's), or use -O ${want}`,
  };
}

function chronyProblem(
  v: ChronydView,
  r: { tai: boolean },
): { found: string; fix: string } | undefined {
  if (v.noClockControl) {
    return {
      found: "runs with -x: it never steers the system clock",
      fix: "start chronyd without -x",
    };
  }
  if (!r.tai) {
    return {
      found: `has no \`tai\` option: chrony takes the PHC's TAI time for UTC, ${TAI_UTC_SECONDS} ` +
        "s off",
      fix: `add \`tai\` to that refclock line${
        v.leapsectz ? "" : " and `leapsectz right/UTC` to the config"
      }, then restart chronyd`,
    };
  }
  return undefined;
}

/** qdisc.clockid, qdisc.etf_sock_check, qdisc.txtime_assist; `qdisc`: the config's for link. */
export function launchQdiscChecks(
  ctx: DoctorContext,
  link: LinkInfo,
  l: LaunchTimeQdiscs,
  qdisc: QdiscConfig = { kind: "keep" },
): void {
  const managed = qdisc.kind === "taprio" || qdisc.kind === "mqprio";
  const install = `tsnproxy install --config ${ctx.opts.config}`;
  const none = (check: CheckScope, what: string) =>
    check.skip({ found: `no ${what} on ${link.name}: nothing reads launch times there` });

  ctx.run(CLOCKID, (check) => {
    const t = l.taprio;
    const wrongEtf = l.etf.filter((q) => q.options.clockid !== CLOCK_IDS.CLOCK_TAI);
    const softTaprio = t && (t.options.flags & TCA_TAPRIO_ATTR_FLAG_FULL_OFFLOAD) === 0;
    const wrongTaprio = softTaprio && t.options.clockid !== CLOCK_IDS.CLOCK_TAI;
    const data = {
      taprio: t
        ? {
          clockid: clockLabel(t.options.clockid),
          fullOffload: !softTaprio,
        }
        : null,
      etf: l.etf.map((q) => ({
        parent: formatHandle(q.parent),
        clockid: clockLabel(q.options.clockid),
      })),
    };
    if (!t && l.etf.length === 0) return none(check, "taprio or etf");
    if (!wrongTaprio && wrongEtf.length === 0) {
      check.pass({
        found: `${describeLaunch(l)} on ${link.name}: ${
          softTaprio || l.etf.length ? "CLOCK_TAI" : "the NIC's PHC (full offload)"
        }, the clock of pods' SO_TXTIME launch times`,
        data,
      });
      return;
    }
    const wrong = [
      ...(wrongTaprio
        ? [`taprio ${formatHandle(t.handle)} runs on ${clockLabel(t.options.clockid)}`]
        : []),
      ...wrongEtf.map((q) =>
        `etf under ${formatHandle(q.parent)} runs on ${clockLabel(q.options.clockid)}`
      ),
    ];
    const fix = managed
      ? `set clockid: CLOCK_TAI for qdisc (and qdisc.etf) in ${ctx.opts.config}, then ${install}`
      : (t && taprioFixCommand(link.name, t, t.options, l.all, { clockid: "CLOCK_TAI" })) ??
        `re-create the qdisc with \`clockid CLOCK_TAI\``;
    const found = `${wrong.join("; ")}: pods' launch times are CLOCK_TAI, so the gates and ` +
      "launch times are read on another clock (a schedule written in TAI opens at the wrong " +
      "moments)";
    if (l.etf.length || (t && (t.options.flags & TCA_TAPRIO_ATTR_FLAG_TXTIME_ASSIST) !== 0)) {
      check.fail({ found, fix, data });
    } else {
      check.warn({ found, fix, data });
    }
  });

  ctx.run(ETF_SOCK, (check) => {
    if (l.etf.length === 0) return none(check, "etf");
    const bad = l.etf.filter((q) => !q.options.skipSockCheck);
    const data = {
      etf: l.etf.map((q) => ({
        parent: formatHandle(q.parent),
        skipSockCheck: q.options.skipSockCheck,
      })),
    };
    if (bad.length === 0) {
      check.pass({
        found: `${plural(l.etf.length, "etf")} on ${link.name}, each with skip_sock_check`,
        data,
      });
      return;
    }
    check.fail({
      found: `etf under ${bad.map((q) => formatHandle(q.parent)).join(", ")} on ${link.name} ` +
        "has no skip_sock_check: it drops every packet that carries no SO_TXTIME socket, and " +
        "a pod's packet reaches the NIC forwarded, without one: every pod packet in that " +
        "queue is dropped",
      fix: managed
        ? `set skipSockCheck: true (the default) on qdisc.etf in ${ctx.opts.config}, then ` +
          install
        : bad.map((q) => etfFixCommand(link.name, q, q.options)).join(" && "),
      data,
    });
  });

  ctx.run(TXTIME_ASSIST, (check) => {
    const t = l.taprio;
    if (!t) return none(check, "taprio");
    const assist = (t.options.flags & TCA_TAPRIO_ATTR_FLAG_TXTIME_ASSIST) !== 0;
    const data = { flags: t.options.flags, txtimeDelayNs: t.options.txtimeDelayNs ?? null };
    if (!assist) {
      check.pass({
        found: `taprio ${formatHandle(t.handle)} on ${link.name} is not in txtime-assist ` +
          `mode (flags 0x${t.options.flags.toString(16)})`,
        data,
      });
      return;
    }
    check.warn({
      found: `taprio ${formatHandle(t.handle)} on ${link.name} runs in txtime-assist mode ` +
        "(flags 0x1): for a packet whose socket is not a SO_TXTIME socket on this node, and " +
        "every forwarded pod packet is one, it replaces the launch time with one of its own: " +
        "pods' SO_TXTIME launch times are lost (their priorities still select the class)",
      fix: managed
        ? `set txtimeAssist: false in qdisc of ${ctx.opts.config} (software mode; or ` +
          `fullOffload where the NIC supports it), then ${install}`
        : taprioFixCommand(link.name, t, t.options, l.all, { noTxtimeAssist: true }) ??
          "re-create taprio without `flags 0x1`",
      data,
    });
  });
}

const ALL_NEED_LINK = [PHC, PTP4L, PHC2SYS, CLOCKID, ETF_SOCK, TXTIME_ASSIST];

/** A TSN interface for the time checks: its config's qdisc and its link (undefined: absent). */
export interface TimeTarget {
  ifname: string;
  qdisc: QdiscConfig;
  link?: LinkInfo;
}

/**
 * Every time check: time.tai_offset once for the node, the others once per TSN interface
 * (ctx.forInterface; skipped when none is configured).
 */
export function timeChecks(ctx: DoctorContext, targets: readonly TimeTarget[]): void {
  const launches = new Map<string, LaunchTimeQdiscs>();
  const errors = new Map<string, unknown>();
  for (const t of targets) {
    const link = t.link;
    if (!link) continue;
    try {
      launches.set(t.ifname, launchTimeQdiscs(ctx.inNode(() => listQdiscs(link.index))));
    } catch (e) {
      errors.set(t.ifname, e);
    }
  }
  taiOffsetCheck(ctx, [...launches].map(([ifname, launch]) => ({ ifname, launch })));
  if (targets.length === 0) {
    for (const ref of ALL_NEED_LINK) {
      ctx.skip({ ...ref, found: "no TSN interface (config.tsn_interface)" });
    }
  }
  for (const t of targets) {
    ctx.forInterface(t.ifname, () => {
      const link = t.link;
      if (!link) {
        for (const ref of ALL_NEED_LINK) {
          ctx.skip({ ...ref, found: `${t.ifname} does not exist (config.tsn_interface)` });
        }
        return;
      }
      const launch = launches.get(t.ifname);
      const info = phcCheck(ctx, link, launch);
      syncChecks(ctx, link, info);
      if (!launch) {
        for (const ref of [CLOCKID, ETF_SOCK, TXTIME_ASSIST]) {
          ctx.run(ref, () => {
            throw errors.get(t.ifname);
          });
        }
        return;
      }
      launchQdiscChecks(ctx, link, launch, t.qdisc);
    });
  }
}
