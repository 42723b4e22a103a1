/**
 * doctor's time checks in Debian's 6.1 and 6.12 kernels with qemu's e1000e (a PTP hardware
 * clock with hardware time stamping) and real taprio/etf (tests/vm/guest/doctor_time.ts): the
 * TAI offset set to 0, 36 and 37 in the guest, ptp4l and phc2sys started and stopped, and an
 * operator's taprio/etf broken three ways and repaired by running the fix doctor printed.
 */
import assert from "node:assert/strict";
import { kernels, runGuest } from "./_vm.ts";

interface Verdict {
  status: string;
  found: string;
  fix?: string;
  data?: Record<string, unknown>;
}
interface Step {
  step: string;
  ifname: string;
  taiOffset: number;
  taiMinusUtc: number;
  checks: Record<string, Verdict>;
  ranFix?: string;
}
interface Result {
  kernel: string;
  originalTai: number;
  restoredTai: number;
  steps: Step[];
  failures: string[];
}

function at(r: Result, step: string): Step {
  const s = r.steps.find((x) => x.step === step);
  if (!s) throw new Error(`no step ${step} (${r.steps.map((x) => x.step).join("; ")})`);
  return s;
}

function expect(s: Step, id: string, status: string, ...res: RegExp[]): Verdict {
  const c = s.checks[id];
  const show = `${s.step}: ${id} ${c?.status}: ${c?.found} | fix: ${c?.fix}`;
  assert.ok(c, `${s.step}: no ${id}`);
  assert.equal(c.status, status, show);
  for (const re of res) assert.match(`${c.found}\n${c.fix ?? ""}`, re, show);
  if (status === "warn" || status === "fail") assert.ok(c.fix, `${show}: no fix`);
  return c;
}

for (const kernel of kernels()) {
  Deno.test(`vm ${kernel}: doctor time checks on an e1000e PHC and real taprio/etf`, async () => {
    const { result: r } = await runGuest<Result>(kernel, "doctor_time.ts", "doctor-time", {
      timeoutSec: 400,
      nics: ["e1000e"],
    });
    assert.deepEqual(r.failures, []);
    assert.equal(r.restoredTai, r.originalTai, "the guest's TAI offset is restored");

    // The NIC: a PHC with hardware stamps; nothing disciplines it; TAI unset (a warning: no
    // qdisc on eth0 reads launch times).
    let s = at(r, "nic: nothing runs");
    const phc = expect(s, "time.phc", "pass", /eth0: PHC \/dev\/ptp0, hardware time stamping/);
    assert.equal(phc.data?.phcIndex, 0);
    expect(s, "time.ptp4l", "warn", /no ptp4l runs for eth0 or its PHC \/dev\/ptp0/, /ptp4l@eth0/);
    expect(s, "time.phc2sys", "warn", /neither phc2sys nor chronyd/, /phc2sys@eth0/);
    expect(s, "time.tai_offset", "warn", /TAI offset is 0 \(never set\)/, /phc2sys with -w/);
    assert.equal(s.taiMinusUtc, 0);

    // The TAI offset with an etf that compares launch times: unset and stale fail, 37 passes.
    s = at(r, "veth: taprio on CLOCK_MONOTONIC, etf without skip_sock_check, TAI 0");
    expect(s, "time.tai_offset", "fail", /37 s off/, /etf under 100:1 on veth0/);
    expect(s, "qdisc.clockid", "fail", /taprio 100: runs on CLOCK_MONOTONIC/, /clockid CLOCK_TAI/);
    expect(s, "qdisc.etf_sock_check", "fail", /etf under 100:1 on veth0 has no skip_sock_check/);
    expect(s, "qdisc.txtime_assist", "pass");
    expect(s, "time.phc", "warn", /veth0 \(veth\) has no PTP hardware clock/);
    s = at(r, "veth: TAI 36");
    assert.equal(s.taiMinusUtc, 36);
    expect(s, "time.tai_offset", "fail", /offset is 36 s, stale/);
    s = at(r, "veth: TAI 37");
    assert.equal(s.taiMinusUtc, 37);
    expect(s, "time.tai_offset", "pass", /TAI-UTC is 37 s/);

    // doctor's own fixes, run as printed.
    s = at(r, "veth: after the clockid fix");
    expect(s, "qdisc.clockid", "pass", /CLOCK_TAI/);
    expect(s, "qdisc.etf_sock_check", "pass", /skip_sock_check/);
    assert.match(
      at(r, "veth: taprio on CLOCK_MONOTONIC, etf without skip_sock_check, TAI 0")
        .ranFix ?? "",
      /^tc qdisc del dev veth0 root && tc qdisc add dev veth0 root handle 100: taprio/,
    );
    expect(
      at(r, "veth: etf without skip_sock_check"),
      "qdisc.etf_sock_check",
      "fail",
      /tc qdisc del dev veth0 parent 100:1 && tc qdisc replace dev veth0 parent 100:1 .*skip_sock_check/,
    );
    expect(at(r, "veth: after the etf fix"), "qdisc.etf_sock_check", "pass");
    expect(
      at(r, "veth: taprio txtime-assist"),
      "qdisc.txtime_assist",
      "warn",
      /txtime-assist mode/,
      /flags/,
    );
    expect(at(r, "veth: after the txtime-assist fix"), "qdisc.txtime_assist", "pass", /flags 0x0/);
    expect(at(r, "veth: after the txtime-assist fix"), "qdisc.clockid", "pass");

    // ptp4l and phc2sys, for real.
    s = at(r, "nic: ptp4l -H");
    expect(
      s,
      "time.ptp4l",
      "pass",
      /ptp4l pid \d+ runs on eth0 \(-i\), hardware time stamping: it disciplines \/dev\/ptp0/,
    );
    expect(
      at(r, "nic: ptp4l -H, phc2sys -w"),
      "time.phc2sys",
      "pass",
      /keeps CLOCK_REALTIME on \/dev\/ptp0, with the TAI-UTC offset from ptp4l/,
    );
    expect(
      at(r, "nic: ptp4l -H, phc2sys -O 0"),
      "time.phc2sys",
      "warn",
      /runs with -O 0 instead of -37 \(or -w\): the system clock is 37 s off UTC/,
      /-w/,
    );
    expect(at(r, "nic: ptp4l -H, phc2sys -O -37"), "time.phc2sys", "pass", /\(-O -37\)/);
    expect(at(r, "nic: ptp4l -H, phc2sys -a -r"), "time.phc2sys", "pass", /-a -r/);
    expect(at(r, "nic: ptp4l -H, phc2sys -a"), "time.phc2sys", "warn", /without -r/, /-a -r/);
    expect(at(r, "nic: ptp4l -S"), "time.ptp4l", "warn", /stamps in software/, /-H/);
    expect(at(r, "nic: all stopped"), "time.ptp4l", "warn", /no ptp4l runs/);
  });
}
