/**
 * Runs inside a test VM with an emulated e1000e NIC (tests/vm/doctor_time_test.ts): doctor's
 * time and launch-time qdisc checks, each broken and fixed for real.
 *
 * - eth0 (e1000e: PHC /dev/ptp0, hardware time stamping) is the TSN NIC for time.phc,
 *   time.ptp4l and time.phc2sys, with real ptp4l/phc2sys processes started and stopped;
 * - the kernel's TAI offset is set to 0, 36 and 37 with clock_adjtime(ADJ_TAI) (the guest's
 *   clock, never the host's) and restored at the end;
 * - veth0 (4 tx queues) carries taprio/etf for qdisc.clockid, qdisc.etf_sock_check and
 *   qdisc.txtime_assist; every fix doctor prints there is run with bash as printed.
 * Prints a TSNVM-JSON "doctor-time" result: the checks' verdicts per step.
 */
import { timeChecks } from "../../../src/doctor/checks_time.ts";
import { DoctorContext } from "../../../src/doctor/context.ts";
import { CLOCK_REALTIME, clockAdjtime, readClockState } from "../../../src/ffi/time.ts";
import { encode } from "../../../src/ffi/structs/layout.ts";
import { ADJ_TAI, Timex } from "../../../src/ffi/structs/time.ts";
import { findLink } from "../../../src/netlink/mod.ts";
import { DEFAULTS } from "../../../src/options.ts";
import { report } from "./report.ts";
import { type Child, run, spawn } from "../../lib/run.ts";
import { addVeth } from "../../lib/netns.ts";

interface Verdict {
  status: string;
  found: string;
  fix?: string;
  data?: unknown;
}
interface Step {
  step: string;
  ifname: string;
  taiOffset: number;
  /** CLOCK_TAI - CLOCK_REALTIME in whole seconds, measured apart from clock_adjtime. */
  taiMinusUtc: number;
  checks: Record<string, Verdict>;
  /** The fix that was run after this step, if any. */
  ranFix?: string;
}

const steps: Step[] = [];
const failures: string[] = [];

function setTai(seconds: number): void {
  const r = clockAdjtime(
    CLOCK_REALTIME,
    encode(Timex, { modes: ADJ_TAI, constant: BigInt(seconds) }),
  );
  if (r < 0) throw new Error(`clock_adjtime(ADJ_TAI, ${seconds}): errno ${-r}`);
}

/** CLOCK_TAI - CLOCK_REALTIME (Deno reads neither clock by id: python3 reads both). */
async function measuredTaiMinusUtc(): Promise<number> {
  const out = await run([
    "python3",
    "-c",
    "import time; print(round((time.clock_gettime_ns(time.CLOCK_TAI) - time.time_ns()) / 1e9))",
  ]);
  return Number(out.stdout.trim());
}

async function look(step: string, ifname: string): Promise<Step> {
  const ctx = new DoctorContext({
    ...DEFAULTS,
    config: "/nonexistent/tsnproxy.yaml",
    json: true,
    tsnInterface: ifname,
  });
  timeChecks(ctx, [{ ifname, qdisc: { kind: "keep" }, link: findLink(ifname) }]);
  const checks: Record<string, Verdict> = {};
  for (const c of ctx.checks) {
    checks[c.id] = { status: c.status, found: c.found, fix: c.fix, data: c.data };
  }
  const s: Step = {
    step,
    ifname,
    taiOffset: readClockState().taiOffset,
    taiMinusUtc: await measuredTaiMinusUtc(),
    checks,
  };
  steps.push(s);
  return s;
}

/** Runs the fix doctor printed for `id` in the last step, exactly as printed. */
async function runFix(s: Step, id: string): Promise<void> {
  const fix = s.checks[id]?.fix;
  if (!fix) {
    failures.push(`${s.step}: ${id} printed no fix`);
    return;
  }
  s.ranFix = fix;
  const r = await run(["bash", "-c", fix], { allowFail: true });
  if (r.code !== 0) {
    failures.push(`${s.step}: the fix for ${id} failed: ${fix}\n${r.stdout}${r.stderr}`);
  }
}

/** A daemon (ptp4l, phc2sys) running while the checks look; -m logs its states. */
const daemon = (argv: string[]) => spawn(argv);
/** Under TCG a daemon may take a minute to reach its main loop. */
const STARTED_MS = 60_000;

const tc = (...args: string[]) => run(["tc", ...args]);
const MAP2 = ["map", "0", "1", ..."00000000000000".split(""), "queues", "1@0", "1@1"];
const originalTai = readClockState().taiOffset;
const daemons: Child[] = [];

try {
  await run(["ip", "link", "set", "eth0", "up"]);
  await addVeth({ name: "veth0", txQueues: 4 }, "veth1");

  // The NIC with nothing running: a PHC, no ptp4l, no phc2sys; the TAI offset unset.
  setTai(0);
  await look("nic: nothing runs", "eth0");

  // An operator's taprio on CLOCK_MONOTONIC with an etf child lacking skip_sock_check.
  await tc(
    "qdisc",
    "add",
    "dev",
    "veth0",
    "root",
    "handle",
    "100:",
    "taprio",
    "num_tc",
    "2",
    ...MAP2,
    "base-time",
    "0",
    "sched-entry",
    "S",
    "03",
    "1000000",
    "clockid",
    "CLOCK_MONOTONIC",
  );
  await tc(
    "qdisc",
    "add",
    "dev",
    "veth0",
    "parent",
    "100:1",
    "etf",
    "clockid",
    "CLOCK_TAI",
    "delta",
    "300000",
  );
  let s = await look(
    "veth: taprio on CLOCK_MONOTONIC, etf without skip_sock_check, TAI 0",
    "veth0",
  );
  setTai(36);
  await look("veth: TAI 36", "veth0");
  setTai(37);
  await look("veth: TAI 37", "veth0");
  // doctor's fix for the clock re-creates taprio on CLOCK_TAI, and its etf with skip_sock_check.
  await runFix(s, "qdisc.clockid");
  await look("veth: after the clockid fix", "veth0");

  // The etf alone loses skip_sock_check again; its own fix.
  await tc("qdisc", "del", "dev", "veth0", "parent", "100:1");
  await tc(
    "qdisc",
    "add",
    "dev",
    "veth0",
    "parent",
    "100:1",
    "etf",
    "clockid",
    "CLOCK_TAI",
    "delta",
    "300000",
  );
  s = await look("veth: etf without skip_sock_check", "veth0");
  await runFix(s, "qdisc.etf_sock_check");
  await look("veth: after the etf fix", "veth0");

  // taprio in txtime-assist mode.
  await tc("qdisc", "del", "dev", "veth0", "root");
  await tc(
    "qdisc",
    "add",
    "dev",
    "veth0",
    "root",
    "handle",
    "100:",
    "taprio",
    "num_tc",
    "2",
    ...MAP2,
    "base-time",
    "0",
    "sched-entry",
    "S",
    "03",
    "1000000",
    "flags",
    "0x1",
    "txtime-delay",
    "500000",
    "clockid",
    "CLOCK_TAI",
  );
  await tc(
    "qdisc",
    "add",
    "dev",
    "veth0",
    "parent",
    "100:1",
    "etf",
    "clockid",
    "CLOCK_TAI",
    "delta",
    "300000",
    "skip_sock_check",
  );
  s = await look("veth: taprio txtime-assist", "veth0");
  await runFix(s, "qdisc.txtime_assist");
  await look("veth: after the txtime-assist fix", "veth0");

  // ptp4l with hardware time stamping on the NIC, then phc2sys in four ways.
  const ptp4l = daemon(["ptp4l", "-i", "eth0", "-H", "-m"]);
  daemons.push(ptp4l);
  await ptp4l.ready(/INITIALIZING to LISTENING/, STARTED_MS);
  await look("nic: ptp4l -H", "eth0");
  for (
    const [name, argv] of [
      ["phc2sys -w", ["phc2sys", "-s", "eth0", "-c", "CLOCK_REALTIME", "-w", "-m"]],
      // linuxptp 3.1 refuses to start without -w or -O; -O 0 takes the PHC's TAI for UTC.
      ["phc2sys -O 0", ["phc2sys", "-s", "/dev/ptp0", "-c", "CLOCK_REALTIME", "-O", "0", "-m"]],
      ["phc2sys -O -37", ["phc2sys", "-s", "/dev/ptp0", "-c", "CLOCK_REALTIME", "-O", "-37", "-m"]],
      ["phc2sys -a -r", ["phc2sys", "-a", "-r", "-m"]],
      ["phc2sys -a", ["phc2sys", "-a", "-m"]],
    ] as const
  ) {
    const d = daemon([...argv]);
    daemons.push(d);
    // Started: the process exists (phc2sys -w/-a wait for ptp4l before printing anything).
    await new Promise((r) => setTimeout(r, 1000));
    if (d.exited) failures.push(`${argv.join(" ")} exited ${d.exited.code}: ${d.output}`);
    await look(`nic: ptp4l -H, ${name}`, "eth0");
    await d.stop("SIGTERM");
  }
  await ptp4l.stop("SIGTERM");

  const soft = daemon(["ptp4l", "-i", "eth0", "-S", "-m"]);
  daemons.push(soft);
  await soft.ready(/INITIALIZING to LISTENING/, STARTED_MS);
  await look("nic: ptp4l -S", "eth0");
  await soft.stop("SIGTERM");
  await look("nic: all stopped", "eth0");
} catch (e) {
  failures.push(e instanceof Error ? e.stack ?? e.message : String(e));
} finally {
  for (const d of daemons) await d.stop("SIGTERM");
  setTai(originalTai);
}

report("doctor-time", {
  kernel: Deno.osRelease(),
  originalTai,
  restoredTai: readClockState().taiOffset,
  steps,
  failures,
});
if (failures.length) {
  console.error(failures.join("\n"));
  Deno.exit(1);
}
