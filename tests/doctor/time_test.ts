/**
 * doctor's time checks on this host (kernel 6.18, no PHC anywhere, no taprio/etf modules):
 * a veth has no PTP hardware clock and the checks say so; the TAI offset is reported as the
 * kernel keeps it (cross-checked with CLOCK_TAI - CLOCK_REALTIME; the host's offset is not
 * changed here: tests/vm/doctor_time_test.ts sets and clears it in a guest); a real ptp4l
 * (linuxptp, software time stamping, free_running so it never touches the host clock) on the
 * TSN veth, named by -i or by its config file, is found, one on another interface or in
 * another namespace's same-named interface is not, and a stopped one is missed.
 */
import assert from "node:assert/strict";
import { Timespec } from "../../src/ffi/structs/libc.ts";
import { decode } from "../../src/ffi/structs/layout.ts";
import { SYS, sys } from "../../src/ffi/libc.ts";
import { type Child, spawn } from "../lib/run.ts";
import { Netns } from "../lib/netns.ts";
import { describe, DoctorEnv, expect, find } from "./_env.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };

function which(bin: string): string | undefined {
  for (const d of ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]) {
    try {
      Deno.statSync(`${d}/${bin}`);
      return `${d}/${bin}`;
    } catch {
      // next
    }
  }
  return undefined;
}

const PTP4L = which("ptp4l");
if (!PTP4L) console.log("time_test: ptp4l is not installed (apt-get install linuxptp): skipped");

function clockNs(clockid: number): bigint {
  const buf = new Uint8Array(Timespec.size);
  assert.equal(sys(SYS.clock_gettime, clockid, buf), 0);
  const t = decode(Timespec, buf);
  return t.tv_sec * 1_000_000_000n + t.tv_nsec;
}

/** ptp4l (-m, which logs its port states) in a network namespace, with the namespace's /sys. */
function daemon(netns: string, argv: string[]): Child {
  return spawn(argv, { netns, netnsSysfs: true });
}

Deno.test(
  "doctor time: a veth has no PHC; the TAI offset is what the kernel keeps",
  opts,
  async () => {
    const env = await DoctorEnv.create();
    try {
      const r = await env.report();
      const phc = expect(r, "time.phc", "warn", /tsn0 \(veth\) has no PTP hardware clock/, /i210/);
      assert.equal(phc.data?.phcIndex, null);
      assert.deepEqual(phc.data?.timestamping, ["tx-software", "rx-software", "software"]);
      expect(r, "time.phc2sys", "skip", /tsn0 has no PHC/);
      // The host keeps its qdiscs (no taprio/etf module here): nothing reads launch times.
      for (const id of ["qdisc.clockid", "qdisc.etf_sock_check", "qdisc.txtime_assist"]) {
        expect(r, id, "skip", /nothing reads launch times/);
      }

      const tai = find(r, "time.tai_offset");
      // Independently: CLOCK_TAI - CLOCK_REALTIME, whole seconds.
      const diff = Number((clockNs(11) - clockNs(0) + 500_000_000n) / 1_000_000_000n);
      assert.equal(tai.data?.taiOffset, diff, describe(tai));
      if (diff === 37) expect(r, "time.tai_offset", "pass", /TAI-UTC is 37 s/);
      else {
        console.log(
          `this host's TAI offset is ${diff} s: doctor must warn (the guest test fixes it)`,
        );
        expect(r, "time.tai_offset", "warn", new RegExp(`offset is ${diff}`), /phc2sys with -w/);
      }
    } finally {
      await env.destroy();
    }
  },
);

Deno.test({
  name: "doctor time: ptp4l on the TSN veth by -i and by config file; elsewhere; stopped",
  ignore: !PTP4L,
  ...opts,
  fn: async () => {
    const env = await DoctorEnv.create();
    let other: Netns | undefined;
    const daemons: Child[] = [];
    const ptp4l = (netns: string, ...args: string[]) => {
      const d = daemon(netns, [
        PTP4L!,
        "-m",
        "--free_running",
        "1",
        "--uds_address",
        `${env.dir}/ptp4l-${daemons.length}.sock`,
        ...args,
      ]);
      daemons.push(d);
      return d;
    };
    const stopAll = async () => {
      for (const d of daemons.splice(0)) await d.stop("SIGTERM");
    };
    try {
      let r = await env.report();
      expect(r, "time.ptp4l", "warn", /no ptp4l runs for tsn0/, /ptp4l -S -i tsn0/);

      // On the TSN veth, named by -i.
      let d = ptp4l(env.node, "-S", "-i", "tsn0");
      await d.ready(/INITIALIZING to LISTENING/, 10_000);
      r = await env.report();
      let c = expect(
        r,
        "time.ptp4l",
        "pass",
        /ptp4l pid \d+ runs on tsn0 \(-i\), software time stamping: it steers CLOCK_REALTIME/,
      );
      assert.equal((c.data?.matched as { pid: number }[])[0].pid, d.pid);
      await stopAll();

      // On the veth's peer only: another interface, listed but not matched.
      d = ptp4l(env.node, "-S", "-i", "tsnpeer");
      await d.ready(/INITIALIZING to LISTENING/, 10_000);
      // In another namespace, on an interface that is also called tsn0.
      other = await Netns.create({ prefix: "tnd-other", lo: false });
      await other.addVeth("tsn0", "p");
      const elsewhere = ptp4l(other.name, "-S", "-i", "tsn0");
      await elsewhere.ready(/INITIALIZING to LISTENING/, 10_000);
      r = await env.report();
      c = expect(r, "time.ptp4l", "warn", /no ptp4l runs for tsn0; other ptp4l: /);
      assert.match(c.found, new RegExp(`pid ${d.pid} on tsnpeer \\(-i\\)`));
      assert.match(c.found, new RegExp(`pid ${elsewhere.pid} on tsn0 \\(-i\\)`));
      await stopAll();

      // On the TSN veth, named by a section of its config file (and stamping set there).
      const conf = `${env.dir}/ptp4l.conf`;
      Deno.writeTextFileSync(
        conf,
        "[global]\n# software stamps: a veth has no PHC\ntime_stamping software\n" +
          "free_running 1\n\n[tsn0]\n",
      );
      d = ptp4l(env.node, "-f", conf);
      await d.ready(/INITIALIZING to LISTENING/, 10_000);
      r = await env.report();
      expect(
        r,
        "time.ptp4l",
        "pass",
        new RegExp(`runs on tsn0 \\(${conf.replaceAll(".", "\\.")} \\[tsn0\\]\\), software`),
        /free_running/,
      );
      await stopAll();

      r = await env.report();
      expect(r, "time.ptp4l", "warn", /no ptp4l runs for tsn0/);
    } finally {
      await stopAll();
      await other?.delete();
      await env.destroy();
    }
  },
});
