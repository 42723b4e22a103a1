/**
 * The pure parts of doctor's time checks: reading ptp4l/phc2sys/chronyd command lines and
 * config files (chronyd is not installed here: its matcher is tested on config text only), the
 * time-stamping summary, and the tc commands doctor prints as fixes (run for real in the
 * guests by tests/vm/doctor_time_test.ts).
 */
import assert from "node:assert/strict";
import { describeTsInfo } from "../../src/ffi/ethtool.ts";
import { chronydView, parseArgs, phc2sysView, ptp4lView } from "../../src/doctor/time_sync.ts";
import { etfFixCommand, taprioFixCommand } from "../../src/doctor/tc_commands.ts";
import type { QdiscInfo } from "../../src/netlink/mod.ts";

const p = (...argv: string[]) => ({ pid: 42, argv });

Deno.test("getopt-style arguments: clustered flags, attached and separate values, --long", () => {
  const a = parseArgs(
    ["ptp4l", "-2Hm", "-ieth0", "-i", "eth1", "--tx_timestamp_timeout=10"],
    "fipl",
  );
  assert.deepEqual(a.short, [["2", true], ["H", true], ["m", true], ["i", "eth0"], ["i", "eth1"]]);
  assert.equal(a.long.get("tx_timestamp_timeout"), "10");
});

Deno.test("ptp4l: interfaces from -i and config sections, stamping from flags, file and --", () => {
  const files: Record<string, string> = {
    "/etc/linuxptp/ptp4l.conf": "[global]\ntime_stamping software # comment\nfree_running 1\n" +
      "[unicast_master_table]\ntable_id 1\n[eth1]\n[ eth2 ]\nnetwork_transport L2\n",
  };
  const v = ptp4lView(
    p("/usr/sbin/ptp4l", "-f", "/etc/linuxptp/ptp4l.conf", "-i", "eth0"),
    (f) => files[f],
  );
  assert.deepEqual(v.interfaces.map((i) => `${i.name} ${i.from}`), [
    "eth1 /etc/linuxptp/ptp4l.conf [eth1]",
    "eth2 /etc/linuxptp/ptp4l.conf [eth2]",
    "eth0 -i",
  ]);
  assert.equal(v.timeStamping, "software");
  assert.ok(v.freeRunning);
  // The command line beats the file.
  const h = ptp4lView(p("ptp4l", "-f", "/etc/linuxptp/ptp4l.conf", "-H"), (f) => files[f]);
  assert.equal(h.timeStamping, "hardware");
  assert.equal(
    ptp4lView(p("ptp4l", "-i", "x", "--time_stamping", "p2p1step")).timeStamping,
    "p2p1step",
  );
  assert.equal(ptp4lView(p("ptp4l", "-i", "x", "-p", "/dev/ptp3")).clockDevice, "/dev/ptp3");
  const lost = ptp4lView(p("ptp4l", "-f", "/nonexistent.conf"), () => undefined);
  assert.ok(lost.configUnreadable);
});

Deno.test("phc2sys: static clocks, automatic mode, -w and -O", () => {
  let v = phc2sysView(p("phc2sys", "-s", "eth0", "-w"));
  assert.deepEqual(v.source, { kind: "interface", name: "eth0" });
  assert.deepEqual(v.sink, { kind: "realtime" });
  assert.ok(v.wait && !v.automatic);
  v = phc2sysView(p("phc2sys", "-s", "CLOCK_REALTIME", "-c", "/dev/ptp1", "-O", "-37"));
  assert.deepEqual(v.source, { kind: "realtime" });
  assert.deepEqual(v.sink, { kind: "device", path: "/dev/ptp1" });
  assert.equal(v.offset, -37);
  v = phc2sysView(p("phc2sys", "-ar", "-m"));
  assert.ok(v.automatic && v.realtime);
});

Deno.test("chronyd: refclock PHC lines through include and confdir, tai, leapsectz, -x", () => {
  const files: Record<string, string> = {
    "/etc/chrony/chrony.conf": "# Debian default\npool 2.debian.pool.ntp.org iburst\n" +
      "confdir /etc/chrony/conf.d\ninclude /etc/chrony/extra/*.conf\n",
    "/etc/chrony/conf.d/ptp.conf":
      "refclock PHC /dev/ptp0:extpps poll 0 tai\nleapsectz right/UTC\n",
    "/etc/chrony/extra/b.conf": "! refclock PHC /dev/ptp9\nrefclock PHC /dev/ptp1 dpoll -2\n",
  };
  const dirs: Record<string, string[]> = {
    "/etc/chrony/conf.d": ["ptp.conf", "README"],
    "/etc/chrony/extra": ["b.conf"],
  };
  const v = chronydView(p("/usr/sbin/chronyd", "-F", "1"), (f) => files[f], (d) => dirs[d]);
  assert.equal(v.configFile, "/etc/chrony/chrony.conf");
  assert.deepEqual(v.refclocks.map((r) => [r.device, r.tai, r.from]), [
    ["/dev/ptp0", true, "/etc/chrony/conf.d/ptp.conf"],
    ["/dev/ptp1", false, "/etc/chrony/extra/b.conf"],
  ]);
  assert.ok(v.leapsectz && !v.noClockControl);
  const x = chronydView(p("chronyd", "-x", "-f", "/tmp/c.conf"), () => "refclock PHC /dev/ptp2\n");
  assert.ok(x.noClockControl);
  assert.equal(x.configFile, "/tmp/c.conf");
});

Deno.test("time stamping summary: hardware needs tx, rx and raw stamps and HWTSTAMP_TX_ON", () => {
  // What qemu's e1000e reports in the guests, and what a veth reports here.
  const nic = describeTsInfo({ so_timestamping: 95, phc_index: 0, tx_types: 3, rx_filters: 32179 });
  assert.equal(nic.phcIndex, 0);
  assert.ok(nic.hardware && nic.software);
  assert.deepEqual(nic.flags, [
    "tx-hardware",
    "tx-software",
    "rx-hardware",
    "rx-software",
    "software",
    "raw-hardware",
  ]);
  const veth = describeTsInfo({ so_timestamping: 26, phc_index: -1, tx_types: 0, rx_filters: 0 });
  assert.equal(veth.phcIndex, undefined);
  assert.ok(!veth.hardware && veth.software);
});

const stats = { bytes: 0n, packets: 0, drops: 0, overlimits: 0, requeues: 0, qlen: 0, backlog: 0 };

Deno.test("fix commands re-create an operator's etf and taprio as the kernel reports them", () => {
  const etf: QdiscInfo = {
    ifindex: 3,
    handle: 0x80010000,
    parent: 0x01000002,
    kind: "etf",
    options: {
      kind: "etf",
      clockid: 11,
      deltaNs: 300000,
      flags: 2,
      deadlineMode: false,
      offload: true,
      skipSockCheck: false,
    },
    stats,
  };
  assert.equal(
    etfFixCommand("tsn0", etf, etf.options as Extract<typeof etf.options, { kind: "etf" }>),
    "tc qdisc del dev tsn0 parent 100:2 && tc qdisc replace dev tsn0 parent 100:2 " +
      "etf clockid CLOCK_TAI delta 300000 offload skip_sock_check",
  );
  const taprio: QdiscInfo = {
    ifindex: 3,
    handle: 0x01000000,
    parent: 0xffffffff,
    kind: "taprio",
    options: {
      kind: "taprio",
      numTc: 2,
      map: [0, 1, ...Array(14).fill(0)],
      queues: [{ count: 1, offset: 0 }, { count: 1, offset: 1 }],
      hw: 0,
      clockid: 1,
      flags: 1,
      txtimeDelayNs: 500000,
      oper: {
        baseTime: 1000n,
        cycleTime: 1000000n,
        entries: [{ index: 0, command: "S", gateMask: 3, intervalNs: 1000000 }],
      },
    },
    stats,
  };
  const o = taprio.options as Extract<typeof taprio.options, { kind: "taprio" }>;
  assert.equal(
    taprioFixCommand("tsn0", taprio, o, [taprio, etf], { clockid: "CLOCK_TAI" }),
    "tc qdisc del dev tsn0 root && tc qdisc add dev tsn0 root handle 100: taprio num_tc 2 " +
      "map 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 queues 1@0 1@1 base-time 1000 sched-entry S 03 " +
      "1000000 flags 0x1 txtime-delay 500000 clockid CLOCK_TAI && tc qdisc replace dev tsn0 " +
      "parent 100:2 etf clockid CLOCK_TAI delta 300000 offload skip_sock_check",
  );
  assert.match(
    taprioFixCommand("tsn0", taprio, o, [taprio], { noTxtimeAssist: true }) ?? "",
    /sched-entry S 03 1000000 clockid CLOCK_MONOTONIC$/,
  );
});
