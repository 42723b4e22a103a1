/**
 * doctor on a real node (root, real kernel): every check is broken FOR REAL, asserted to
 * fail or warn with its fix, then repaired and asserted to pass.
 */
import assert from "node:assert/strict";
import { detach } from "../../src/bpf/attach.ts";
import { attachRestorer, restorerPin } from "../../src/bpf/node.ts";
import { attachPod, detachPod, podPin } from "../../src/bpf/pod.ts";
import { DatapathMaps, NO_CLAMP } from "../../src/bpf/maps.ts";
import { startGc } from "../../src/bpf/loader.ts";
import { PinLayout } from "../../src/bpf/pins.ts";
import { closeFd, mapInfo, mapUpdate, objGetRequired } from "../../src/bpf/sys.ts";
import { doctorReportSchema } from "../../src/doctor/schema.ts";
import { compileTestBpf } from "../netlink/_bpf.ts";
import { randomId, run } from "../lib/run.ts";
import { describe, DoctorEnv, find, ROOT } from "./_env.ts";
import type { DoctorReport } from "../../src/doctor/schema.ts";
import { type CniServer, serveCni } from "../../src/agent/cni_server.ts";
import { readLine, writeLine } from "../../src/cni/delegate.ts";
import { versionInfo } from "../../src/build_info.ts";
import { staleSocket } from "../lib/wait.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };

function expect(r: DoctorReport, id: string, status: string, ...inFixOrFound: RegExp[]): void {
  const c = find(r, id);
  assert.equal(c.status, status, describe(c));
  for (const re of inFixOrFound) {
    assert.match(`${c.found}\n${c.fix ?? ""}`, re, describe(c));
  }
  if (status === "warn" || status === "fail") assert.ok(c.fix, `${id} has no fix`);
}

Deno.test("doctor: a freshly set-up node passes the datapath checks", opts, async () => {
  const env = await DoctorEnv.create();
  try {
    const r = await env.report();
    doctorReportSchema.parse(r);
    for (
      const id of [
        "kernel.bpffs",
        "kernel.tc_api",
        "kernel.bpf_timer",
        "libraries.libbpf",
        "libraries.libmnl",
        "libraries.libc",
        "config.file",
        "config.tsn_interface",
        "cni.entry",
        "cni.order",
        "cni.conflicts",
        "cni.entry_settings",
        "cni.binary",
        "pins.root",
        "pins.programs",
        "pins.maps",
        "pins.config",
        "pins.gc",
        "interface.up",
        "interface.restorer",
        "sysctl.forward_update_priority",
        "xdp.host_veths",
        "interface.tc_index",
        "pods.attachments",
        "pods.policies",
      ]
    ) expect(r, id, "pass");
    expect(r, "qdisc.root", "info", /keep/);
    assert.ok(r.exitCode <= 1, JSON.stringify(r.checks.filter((c) => c.status === "fail")));
  } finally {
    await env.destroy();
  }
});

Deno.test(
  "doctor: pin root not on a bpf filesystem (tmpfs), then bpffs mounted",
  opts,
  async () => {
    const env = await DoctorEnv.create();
    const mnt = `${env.dir}/pins`;
    Deno.mkdirSync(mnt);
    let mounted = 0;
    try {
      await run(["mount", "-t", "tmpfs", "tmpfs", mnt]);
      mounted++;
      let r = await env.report({ bpffs: mnt });
      expect(r, "kernel.bpffs", "fail", /tmpfs/, /mount -t bpf bpf/);
      expect(r, "pins.programs", "skip");
      assert.equal(r.exitCode, 2);
      await run(["mount", "-t", "bpf", "bpf", mnt]);
      mounted++;
      r = await env.report({ bpffs: mnt });
      expect(r, "kernel.bpffs", "pass");
      expect(r, "pins.root", "fail", /tsnproxy install/); // a bpffs, but nothing pinned yet
    } finally {
      for (; mounted > 0; mounted--) await run(["umount", mnt], { allowFail: true });
      await env.destroy();
    }
  },
);

Deno.test(
  "doctor CLI: /sys/fs/bpf unmounted in a mount namespace; --json schema and exit codes",
  opts,
  async () => {
    const env = await DoctorEnv.create();
    try {
      const doctor = (pre: string) =>
        run([
          "unshare",
          "-m",
          "--propagation",
          "private",
          "sh",
          "-c",
          `${pre} exec nsenter --net=${env.nodePath} ${ROOT}/scripts/tsnproxy doctor --json ` +
          env.cliArgs().join(" "),
        ], { allowFail: true });
      let out = await doctor("umount -l /sys/fs/bpf &&");
      assert.equal(out.code, 2, out.stderr);
      let r = doctorReportSchema.parse(JSON.parse(out.stdout));
      expect(r, "kernel.bpffs", "fail", /mount -t bpf bpf \/sys\/fs\/bpf/);
      assert.equal(r.exitCode, 2);
      out = await doctor("");
      r = doctorReportSchema.parse(JSON.parse(out.stdout));
      expect(r, "kernel.bpffs", "pass");
      assert.equal(out.code, r.exitCode);
      assert.ok(out.code <= 1, out.stdout);
      // Human output: no color when not a terminal, a table naming every check.
      const human = await run([
        "nsenter",
        `--net=${env.nodePath}`,
        `${ROOT}/scripts/tsnproxy`,
        "doctor",
        ...env.cliArgs(),
      ], { allowFail: true });
      assert.equal(human.code, r.exitCode);
      assert.ok(!human.stdout.includes("\x1b["), "no ANSI colors on a pipe");
      for (const c of r.checks) assert.ok(human.stdout.includes(c.id), c.id);
    } finally {
      await env.destroy();
    }
  },
);

Deno.test("doctor: unpinned program, then re-pinned", opts, async () => {
  const env = await DoctorEnv.create();
  try {
    const pin = new PinLayout(env.bpffs).prog("restore");
    Deno.removeSync(pin);
    let r = await env.report();
    expect(r, "pins.programs", "fail", /tsnp_restore/, /tsnproxy install --bpffs/);
    env.setupDatapath();
    r = await env.report();
    expect(r, "pins.programs", "pass");
    expect(r, "interface.restorer", "pass"); // the link still runs the earlier instance
  } finally {
    await env.destroy();
  }
});

Deno.test("doctor: GC timer stopped, then re-armed", opts, async () => {
  const env = await DoctorEnv.create();
  try {
    // Updating the timer's map element from user space cancels the timer (the kernel frees
    // the bpf_timer field of the old value).
    const fd = objGetRequired(new PinLayout(env.bpffs).map("tsnp_gc"));
    try {
      const size = mapInfo(fd).valueSize;
      assert.equal(
        mapUpdate(fd, new Uint8Array(4), new Uint8Array(size), 0n),
        0,
      );
    } finally {
      closeFd(fd);
    }
    let r = await env.report();
    expect(r, "pins.gc", "fail", /not armed/, /tsnproxy install/);
    startGc(env.bpffs);
    r = await env.report();
    expect(r, "pins.gc", "pass");
  } finally {
    await env.destroy();
  }
});

Deno.test(
  "doctor: conflist entry removed, misplaced, duplicated; binary missing or foreign",
  opts,
  async () => {
    const env = await DoctorEnv.create();
    try {
      await env.removeEntry();
      let r = await env.report();
      expect(r, "cni.entry", "fail", /10-testnet\.conflist/, /tsnproxy install --cni-conf-dir/);
      expect(r, "cni.order", "skip");
      await env.injectEntry();
      r = await env.report();
      expect(r, "cni.entry", "pass");

      // Not last: a plugin appended after tsnproxy.
      const doc = JSON.parse(Deno.readTextFileSync(env.conflist));
      doc.plugins.push({ type: "bandwidth" });
      Deno.writeTextFileSync(env.conflist, JSON.stringify(doc, null, 2));
      r = await env.report();
      expect(r, "cni.order", "warn", /bandwidth/, /to the end of "plugins"/);
      doc.plugins.pop();
      // Duplicate entry.
      doc.plugins.push(env.entry());
      Deno.writeTextFileSync(env.conflist, JSON.stringify(doc, null, 2));
      r = await env.report();
      expect(r, "cni.conflicts", "fail", /2 tsnproxy entries/, /exactly one/);
      doc.plugins.pop();
      Deno.writeTextFileSync(env.conflist, JSON.stringify(doc, null, 2));
      r = await env.report();
      expect(r, "cni.order", "pass");
      expect(r, "cni.conflicts", "pass");

      // An entry in a file libcni does not load (sorted after the active one).
      Deno.writeTextFileSync(`${env.confDir}/99-other.conflist`, JSON.stringify(doc));
      r = await env.report();
      expect(r, "cni.entry", "warn", /99-other\.conflist/);
      Deno.removeSync(`${env.confDir}/99-other.conflist`);

      // Binary missing, then another build, then this build again.
      const bin = `${env.binDir}/tsnproxy`;
      const link = Deno.readLinkSync(bin);
      Deno.removeSync(bin);
      r = await env.report();
      expect(r, "cni.binary", "fail", /does not exist/, /tsnproxy install --cni-bin-dir/);
      Deno.writeTextFileSync(
        bin,
        `#!/bin/sh\necho '{"version":"0.0.1","bpfObjectsSha256":"00ff","deno":"2","compiled":true}'\n`,
      );
      Deno.chmodSync(bin, 0o755);
      r = await env.report();
      expect(r, "cni.binary", "warn", /0\.0\.1/, /tsnproxy install/);
      Deno.removeSync(bin);
      Deno.symlinkSync(link, bin);
      r = await env.report();
      expect(r, "cni.binary", "pass");
    } finally {
      await env.destroy();
    }
  },
);

Deno.test("doctor: restorer detached, TSN interface down and missing", opts, async () => {
  const env = await DoctorEnv.create();
  try {
    detach(restorerPin(env.bpffs, "tsn0"), { netns: env.nodePath });
    let r = await env.report();
    expect(r, "interface.restorer", "fail", /no restorer on tsn0/, /tsnproxy install/);
    attachRestorer(env.bpffs, "tsn0", "tcx", env.nodePath);
    r = await env.report();
    expect(r, "interface.restorer", "pass", /first/);

    await env.ip("link", "set", "tsn0", "down");
    r = await env.report();
    expect(r, "interface.up", "fail", /ip link set dev tsn0 up/);
    await env.ip("link", "set", "tsn0", "up");
    r = await env.report();
    expect(r, "interface.up", "pass");

    await env.ip("link", "del", "tsn0");
    r = await env.report();
    expect(r, "config.tsn_interface", "fail", /tsn0 does not exist/, /tsnInterface/);
    expect(r, "interface.restorer", "skip");
    await env.ip("link", "add", "tsn0", "type", "veth", "peer", "name", "tsnpeer");
    await env.ip("link", "set", "tsn0", "up");
    await env.ip("link", "set", "tsnpeer", "up");
    r = await env.report();
    expect(r, "config.tsn_interface", "pass");
    expect(r, "interface.restorer", "fail"); // the old link died with the old interface
    attachRestorer(env.bpffs, "tsn0", "tcx", env.nodePath);
    r = await env.report();
    expect(r, "interface.restorer", "pass");
  } finally {
    await env.destroy();
  }
});

Deno.test(
  "doctor: config wants taprio, NIC runs htb (no sch_taprio on this kernel)",
  opts,
  async () => {
    const env = await DoctorEnv.create();
    try {
      await run([
        "tc",
        "-n",
        env.node,
        "qdisc",
        "add",
        "dev",
        "tsn0",
        "root",
        "handle",
        "1:",
        "htb",
      ]);
      env.writeConfig({
        qdisc: '{kind: taprio, numTc: 2, map: [0, 1], queues: ["1@0", "1@1"], ' +
          "entries: [{gateMask: 3, intervalNs: 1000000}]}",
      });
      let r = await env.report();
      expect(r, "qdisc.root", "fail", /root is htb 1:, the config wants taprio/);
      const root = find(r, "qdisc.root");
      if (root.data?.moduleState === "missing") {
        assert.match(root.found, /no sch_taprio: CONFIG_NET_SCH_TAPRIO is not set/);
        assert.match(root.fix ?? "", /boot a kernel with CONFIG_NET_SCH_TAPRIO/);
      }
      expect(r, "interface.queues", "info", /qdisc.taprio in the config uses 2 of tsn0's 4/);
      // Queues that do not fit the NIC.
      env.writeConfig({
        qdisc: '{kind: taprio, numTc: 2, map: [0, 1], queues: ["1@0", "4@1"], ' +
          "entries: [{gateMask: 3, intervalNs: 1000000}]}",
      });
      r = await env.report();
      expect(r, "interface.queues", "fail", /up to 4 but tsn0 has 4 tx queues/);
      // Fixed: the operator keeps the NIC's qdisc.
      env.writeConfig({ qdisc: "{kind: none}" });
      r = await env.report();
      expect(r, "qdisc.root", "pass", /htb 1:/);
      expect(r, "qdisc.priomap", "skip");
    } finally {
      await env.destroy();
    }
  },
);

Deno.test("doctor: XDP program on a host veth, then removed", opts, async () => {
  const env = await DoctorEnv.create();
  const bpf = compileTestBpf();
  try {
    await env.addPod("hv0");
    await env.ip("link", "set", "hv0", "up");
    await env.ip("link", "set", "dev", "hv0", "xdpgeneric", "obj", bpf.object, "sec", "xdp");
    let r = await env.report();
    expect(
      r,
      "xdp.host_veths",
      "warn",
      /hv0 \(generic, tn_xdp#\d+\)/,
      /ip link set dev hv0 xdp off/,
    );
    await env.ip("link", "set", "dev", "hv0", "xdpgeneric", "off");
    r = await env.report();
    expect(r, "xdp.host_veths", "pass");
  } finally {
    bpf.cleanup();
    await env.destroy();
  }
});

Deno.test("doctor: a classic tc filter on a host veth would reset the tag", opts, async () => {
  const env = await DoctorEnv.create();
  const bpf = compileTestBpf();
  try {
    await env.addPod("hv4");
    await env.ip("link", "set", "hv4", "up");
    await env.nsExec("tc", "qdisc", "add", "dev", "hv4", "clsact");
    await env.nsExec(
      ...["tc", "filter", "add", "dev", "hv4", "ingress", "bpf", "da", "obj", bpf.object],
      ...["sec", "classifier_ok"],
    );
    const r = await env.report();
    expect(r, "interface.tc_index", "warn", /hv4 ingress \(1 filter\)/, /carrier: table/);
    await env.nsExec("tc", "qdisc", "del", "dev", "hv4", "clsact");
    expect(await env.report(), "interface.tc_index", "pass");
  } finally {
    bpf.cleanup();
    await env.destroy();
  }
});

Deno.test("doctor: leaked pod attachment (netns deleted) and orphaned policy", opts, async () => {
  const env = await DoctorEnv.create();
  try {
    const pod = await env.addPod("hv1");
    await run(["ip", "-n", pod, "link", "set", "eth0", "up"]);
    const req = {
      bpffs: env.bpffs,
      containerId: `ctr_${randomId()}`,
      ifname: "eth0",
      netns: `/run/netns/${pod}`,
      api: "tcx" as const,
      ips: ["10.250.0.9"],
      policy: { maxPriority: NO_CLAMP },
    };
    attachPod(req);
    let r = await env.report();
    expect(r, "pods.attachments", "pass", /1 pod attachment pin/);
    expect(r, "pods.policies", "pass");

    await run(["ip", "netns", "del", pod]); // the pod is gone; no DEL came
    await new Promise((res) => setTimeout(res, 300)); // netns teardown is asynchronous
    r = await env.report();
    const pin = podPin(env.bpffs, req.containerId, "eth0");
    expect(r, "pods.attachments", "warn", /ifindex 0/, new RegExp(`rm ${pin}`));
    expect(r, "pods.policies", "pass"); // the pin still accounts for the policy

    // The leaked pin removed by hand, as the fix says: the policy entry is now orphaned.
    Deno.removeSync(pin);
    r = await env.report();
    expect(r, "pods.attachments", "pass");
    expect(
      r,
      "pods.policies",
      "warn",
      /10\.250\.0\.9/,
      /bpftool map delete pinned .*tsnp_policy key hex/,
    );
    detachPod({ bpffs: env.bpffs, containerId: req.containerId, ifname: "eth0" });
    r = await env.report();
    expect(r, "pods.policies", "pass");
  } finally {
    await env.destroy();
  }
});

Deno.test(
  "doctor: ip_forward_update_priority=1 with restoreAt host-veth-ingress",
  opts,
  async () => {
    const env = await DoctorEnv.create();
    try {
      const set = (v: number) =>
        env.nsExec("sysctl", "-qw", `net.ipv4.ip_forward_update_priority=${v}`);
      await set(1);
      let r = await env.report();
      expect(r, "sysctl.forward_update_priority", "pass", /harmless with restoreAt tsn-egress/);
      env.writeConfig({ restoreAt: "host-veth-ingress" });
      r = await env.report();
      expect(
        r,
        "sysctl.forward_update_priority",
        "fail",
        /rewrites skb->priority from the TOS/,
        /sysctl -w net.ipv4.ip_forward_update_priority=0/,
      );
      // The entry still says tsn-egress: the plugin would use it.
      expect(r, "cni.entry_settings", "warn", /restoreAt/);
      await set(0);
      r = await env.report();
      expect(r, "sysctl.forward_update_priority", "pass");
    } finally {
      await env.destroy();
    }
  },
);

Deno.test(
  "doctor: cni.agent_socket — no agent, a serving one, a stale socket, another protocol",
  opts,
  async () => {
    const env = await DoctorEnv.create();
    const socket = `${env.dir}/agent/cni.sock`;
    let server: CniServer | undefined;
    try {
      let r = await env.report();
      expect(r, "cni.agent_socket", "skip", /not set/);

      // The node config names a socket the entry does not: the entry must follow.
      env.writeConfig({ agentSocket: socket });
      r = await env.report();
      expect(r, "cni.entry_settings", "warn", /agentSocket: entry undefined/);
      expect(r, "cni.agent_socket", "warn", /no socket/, /start the node agent/);
      await env.injectEntry("tsn-egress", { agentSocket: socket });
      r = await env.report();
      expect(r, "cni.entry_settings", "pass");

      // The agent's server (src/agent/cni_server.ts), this build: it answers.
      server = serveCni(socket);
      r = await env.report();
      expect(r, "cni.agent_socket", "pass", /answered in .* ms \(protocol 2, this build\)/);
      assert.equal(find(r, "cni.agent_socket").data?.agentVersion, versionInfo().version);
      assert.deepEqual(server.stats.served.VERSION, { ok: 1, error: 0 });

      // A pin root the agent does not see: it declines, and doctor says what to mount.
      r = await env.report({ bpffs: `${env.bpffs}-absent` });
      expect(r, "cni.agent_socket", "warn", /declined.*-absent/, /\/sys\/fs\/bpf/);

      // Killed without cleanup: the socket file stays and nobody accepts on it.
      await server.close();
      server = undefined;
      await staleSocket(socket);
      r = await env.report();
      expect(r, "cni.agent_socket", "warn", /nobody listens/, /restart the node agent/);

      // An agent of another protocol version (a build this checkout cannot produce, so a peer
      // speaking it on the real socket): the plugin would not use it.
      Deno.removeSync(socket);
      const other = Deno.listen({ transport: "unix", path: socket });
      const answering = (async () => {
        for await (const conn of other) {
          await readLine(conn);
          await writeLine(conn, {
            v: 3,
            code: 0,
            agent: { version: "9.9.9", bpfObjectsSha256: "ab" },
          });
          conn.close();
        }
      })();
      r = await env.report();
      expect(r, "cni.agent_socket", "warn", /protocol 3, not 2/, /same tsnproxy build/);
      other.close();
      await answering.catch(() => undefined);
    } finally {
      await server?.close();
      await env.destroy();
    }
  },
);

Deno.test("doctor: invalid node config, then fixed", opts, async () => {
  const env = await DoctorEnv.create();
  try {
    Deno.writeTextFileSync(env.config, `tsnInterface: tsn0\ngc:\n  maxAgeMs: -5\n`);
    let r = await env.report();
    expect(r, "config.file", "fail", /config\.yaml:3:\d+: gc\.maxAgeMs/);
    env.writeConfig();
    r = await env.report();
    expect(r, "config.file", "pass");
  } finally {
    await env.destroy();
  }
});

Deno.test("doctor: datapath config and map size differ from the node config", opts, async () => {
  const env = await DoctorEnv.create();
  try {
    env.writeConfig({ extra: "mapEntries: 4096" });
    Deno.writeTextFileSync(
      env.config,
      Deno.readTextFileSync(env.config).replace("intervalMs: 200", "intervalMs: 300"),
    );
    let r = await env.report();
    expect(r, "pins.maps", "warn", /4096/);
    expect(r, "pins.config", "warn", /gc\.intervalMs 200 \(config 300\)/, /tsnproxy install/);
    env.writeConfig();
    r = await env.report();
    expect(r, "pins.maps", "pass");
    expect(r, "pins.config", "pass");
    const maps = DatapathMaps.open(env.bpffs);
    maps.close();
  } finally {
    await env.destroy();
  }
});
