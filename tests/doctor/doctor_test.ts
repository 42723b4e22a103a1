/**
 * doctor on a real node (root, real kernel): every check is broken FOR REAL, asserted to
 * fail or warn with its fix, then repaired and asserted to pass.
 */
import assert from "node:assert/strict";
import { attach, CLSACT_HANDLES, detach, queryTcx } from "../../src/bpf/attach.ts";
import { attachRestorer } from "../../src/bpf/node.ts";
import { podPins } from "../../src/bpf/pod.ts";
import { DatapathMaps } from "../../src/bpf/maps.ts";
import { PinLayout } from "../../src/bpf/pins.ts";
import { BpfObject } from "../../src/bpf/object.ts";
import { closeFd, objGetRequired, objPin } from "../../src/bpf/sys.ts";
import { withNetns } from "../../src/util/netns.ts";
import { doctorReportSchema } from "../../src/doctor/schema.ts";
import { compileTestBpf } from "../netlink/_bpf.ts";
import { randomId, run } from "../lib/run.ts";
import { addBridge, addVeth, deleteNetns } from "../lib/netns.ts";
import { DoctorEnv, expect, find, ROOT } from "./_env.ts";
import type { DoctorReport } from "../../src/doctor/schema.ts";
import { type CniServer, serveCni } from "../../src/agent/cni_server.ts";
import { LineReader, writeLine } from "../../src/cni/delegate.ts";
import { versionInfo } from "../../src/build_info.ts";
import { staleSocket, until } from "../lib/wait.ts";
import { nodeSocketDir, removeNodePath } from "../lib/node_dirs.ts";
import { pinOfAnotherBuild } from "../lib/other_build.ts";
import { assertOk } from "../cni/helpers.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };

Deno.test("doctor: a freshly set-up node passes the datapath checks", opts, async () => {
  const env = await DoctorEnv.create();
  try {
    const r = await env.report();
    doctorReportSchema.parse(r);
    for (
      const id of [
        "kernel.bpffs",
        "kernel.tc_api",
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
        "pins.legacy",
        "interface.up",
        "interface.restorer",
        "sysctl.forward_update_priority",
        "xdp.host_veths",
        "interface.carrier",
        "pods.attachments",
        "pods.entries",
        "pods.carrier",
      ]
    ) expect(r, id, "pass");
    expect(r, "pins.programs", "pass", /loaded by this build/);
    expect(r, "pins.config", "pass", /carrier tag/);
    expect(r, "pins.legacy", "pass", /none pinned/);
    for (const gone of ["pins.gc", "kernel.bpf_timer", "interface.tc_index", "pods.policies"]) {
      assert.ok(!r.checks.some((c) => c.id === gone), `${gone} is gone with ABI 1`);
    }
    expect(r, "qdisc.root", "info", /keep/);
    assert.notEqual(r.exitCode, 1, JSON.stringify(r.checks.filter((c) => c.status === "fail")));
  } finally {
    await env.destroy();
  }
});

Deno.test(
  "doctor: pin root not on a bpf filesystem (tmpfs), then bpffs mounted",
  opts,
  async () => {
    const env = await DoctorEnv.create();
    // Outside /sys/fs/bpf/ a pin root is refused before anything is looked at.
    await assert.rejects(
      () => env.report({ bpffs: `${env.dir}/pins` }),
      /--bpffs.* is outside \/sys\/fs\/bpf\//,
    );
    // Inside it, a directory with another filesystem mounted over it.
    const mnt = `/sys/fs/bpf/tsnp-test-mnt-${randomId()}`;
    Deno.mkdirSync(mnt);
    let mounted = 0;
    try {
      await run(["mount", "-t", "tmpfs", "tmpfs", mnt]);
      mounted++;
      let r = await env.report({ bpffs: mnt });
      expect(r, "kernel.bpffs", "fail", /tmpfs/, /mount -t bpf bpf/);
      expect(r, "pins.programs", "skip");
      assert.equal(r.exitCode, 1);
      await run(["mount", "-t", "bpf", "bpf", mnt]);
      mounted++;
      r = await env.report({ bpffs: mnt });
      expect(r, "kernel.bpffs", "pass");
      expect(r, "pins.root", "fail", /tsnproxy install/); // a bpffs, but nothing pinned yet
    } finally {
      for (; mounted > 0; mounted--) await run(["umount", mnt], { allowFail: true });
      Deno.removeSync(mnt);
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
      assert.equal(out.code, 1, out.stderr); // failures: 1 (2 is a usage error, 3 warnings)
      let r = doctorReportSchema.parse(JSON.parse(out.stdout));
      expect(r, "kernel.bpffs", "fail", /mount -t bpf bpf \/sys\/fs\/bpf/);
      assert.equal(r.exitCode, 1);
      out = await doctor("");
      r = doctorReportSchema.parse(JSON.parse(out.stdout));
      expect(r, "kernel.bpffs", "pass");
      assert.equal(out.code, r.exitCode);
      assert.ok(out.code === 0 || out.code === 3, out.stdout); // passes or warnings only
      // Human output: no color when not a terminal, a table naming every check.
      const human = await run([`${ROOT}/scripts/tsnproxy`, "doctor", ...env.cliArgs()], {
        netns: env.nodePath,
        allowFail: true,
      });
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

Deno.test("doctor: pinned programs of another build, then this build's", opts, async () => {
  const env = await DoctorEnv.create();
  try {
    pinOfAnotherBuild(env.bpffs, "admit");
    let r = await env.report();
    expect(
      r,
      "pins.programs",
      "warn",
      /tsnp_admit: 0\.0\.9 \(objects 0123456789ab\)/,
      /another build/,
      /tsnproxy install --bpffs/,
    );
    // A pin of this build again (install replaces a program whose instructions differ; this
    // one's differ only in the stamp: see the ignored test below).
    Deno.removeSync(new PinLayout(env.bpffs).prog("admit"));
    env.setupDatapath();
    r = await env.report();
    expect(r, "pins.programs", "pass", /loaded by this build/);
  } finally {
    await env.destroy();
  }
});

Deno.test({
  name: "doctor: pins.programs' fix, tsnproxy install, replaces another build's program",
  ...opts,
  fn: async () => {
    const env = await DoctorEnv.create();
    try {
      pinOfAnotherBuild(env.bpffs, "admit");
      expect(await env.report(), "pins.programs", "warn", /another build/);
      env.setupDatapath();
      expect(await env.report(), "pins.programs", "pass", /loaded by this build/);
    } finally {
      await env.destroy();
    }
  },
});

Deno.test("doctor: release 0.1.0's datapath left without pods, then retired", opts, async () => {
  const env = await DoctorEnv.create();
  try {
    // A map of 0.1.0's left pinned under its name (its pods are all gone).
    const pins = new PinLayout(env.bpffs);
    const fd = objGetRequired(pins.map("tsnp_stats"));
    try {
      Deno.mkdirSync(`${env.bpffs}/maps`);
      objPin(fd, `${env.bpffs}/maps/tsnp_meta`);
    } finally {
      closeFd(fd);
    }
    let r = await env.report();
    expect(r, "pins.legacy", "warn", /none of its pods is left/, /tsnproxy install --bpffs/);
    env.setupDatapath(); // install's datapath step retires it
    r = await env.report();
    expect(r, "pins.legacy", "pass", /none pinned/);
    assert.ok(!Deno.readDirSync(env.bpffs).some((e) => e.name === "maps"), "retired");
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
    detach(new PinLayout(env.bpffs).restorer("tsn0"), {
      netns: env.nodePath,
      handles: [CLSACT_HANDLES.restore],
    });
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
    // A skipped check keeps the title it has when it runs (one id, one title).
    assert.equal(find(r, "qdisc.priomap").title, "Priority map covers allowed priorities");
    await addVeth({ name: "tsn0", netns: env.node }, { name: "tsnpeer", netns: env.node });
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
  const bpf = await compileTestBpf();
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

/** A one-program BPF object (SEC("tc"), returns TC_ACT_UNSPEC), compiled now. */
async function compileTcProgram(name: string): Promise<Uint8Array<ArrayBuffer>> {
  const dir = await Deno.makeTempDir({ prefix: "tnd-bpf-" });
  try {
    await Deno.writeTextFile(
      `${dir}/p.c`,
      `__attribute__((section("tc"), used)) int ${name}(void *ctx) { return -1; }\n` +
        `char _license[] __attribute__((section("license"), used)) = "GPL";\n`,
    );
    await run(["clang", "-O2", "-target", "bpf", "-c", `${dir}/p.c`, "-o", `${dir}/p.o`]);
    return await Deno.readFile(`${dir}/p.o`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The test object's tc classifiers, on the node's side of things. */
async function classicFilter(env: DoctorEnv, dev: string, object: string): Promise<void> {
  await env.nsExec("tc", "qdisc", "add", "dev", dev, "clsact");
  await env.nsExec(
    ...["tc", "filter", "add", "dev", dev, "ingress", "bpf", "da", "obj", object],
    ...["sec", "classifier_ok"],
  );
}

function podsData(r: DoctorReport): Array<Record<string, unknown>> {
  return (find(r, "pods.carrier").data?.pods ?? []) as Array<Record<string, unknown>>;
}

Deno.test(
  "doctor: other datapaths' programs on a pod's host veth: the stage, a warning, a failure",
  opts,
  async () => {
    const env = await DoctorEnv.create();
    const bpf = await compileTestBpf();
    let foreignPin: string | undefined;
    try {
      // A primary CNI that attaches a classic filter before tsnproxy's ADD: the pod takes the
      // stage, and admit still runs first.
      const before = await env.attachPod("hv4", {
        beforeAdd: () => classicFilter(env, "hv4", bpf.object),
      });
      let r = await env.report();
      expect(r, "pods.carrier", "pass", /1 pod interface: 0 on the tag, 1 on the stage/);
      const [p4] = podsData(r);
      assert.equal(p4.carrier, "stage");
      assert.match(String(p4.reason), /another datapath's programs run on the pod's host/);
      assert.match(String((p4.chain as string[])[0]), /^tsnp_admit#/);
      assert.match(String((p4.chain as string[])[1]), /^tn_cls_ok#\d+ \(clsact\)/);
      expect(r, "interface.carrier", "pass", /no other program on the bridges or tunnels/);

      // One attached after the ADD of a pod on the tag: warned; install moves the pod.
      const after = await env.attachPod("hv5", { ip: "10.250.0.10" });
      expect(await env.report(), "pods.carrier", "pass", /1 on the tag, 1 on the stage/);
      await classicFilter(env, "hv5", bpf.object);
      r = await env.report();
      expect(
        r,
        "pods.carrier",
        "warn",
        /hv5: the tag with tn_cls_ok \(clsact\) on its way \(attached after the pod's ADD\)/,
        /tsnproxy install .*moves them to the stage/,
      );
      // With carrier: tag forced in the node config, the same is a failure.
      env.writeConfig({ extra: "carrier: tag" });
      r = await env.report();
      expect(r, "pods.carrier", "fail", /carrier: tag is forced/, /carrier: auto/);
      env.writeConfig();
      env.setupDatapath(); // the fix: install's datapath step
      r = await env.report();
      expect(r, "pods.carrier", "pass", /0 on the tag, 2 on the stage/);

      // A tcx program put before admit: it sees the pod's request. A failure.
      const obj = BpfObject.open("tn", await compileTcProgram("tn_first"));
      try {
        obj.load();
        foreignPin = `${env.bpffs}/foreign-${randomId()}`;
        const fd = obj.programFd("tn_first");
        attach({
          progFd: fd,
          ifname: "hv4",
          direction: "ingress",
          api: "tcx",
          netns: env.nodePath,
          pin: foreignPin,
          first: true,
        });
      } finally {
        obj.close();
      }
      assert.deepEqual(
        withNetns(env.nodePath, () => queryTcx("hv4", "ingress")).map((p) => p.name),
        ["tn_first", "tsnp_admit"],
      );
      r = await env.report();
      expect(r, "pods.carrier", "fail", /hv4: tn_first \(tcx\) runs before admit/, /re-create/);
      Deno.removeSync(foreignPin); // unpinning the link detaches it
      foreignPin = undefined;
      expect(await env.report(), "pods.carrier", "pass");
      assertOk(await env.cni("DEL", before));
      assertOk(await env.cni("DEL", after));
      expect(await env.report(), "pods.carrier", "pass", /no pod attached/);
    } finally {
      if (foreignPin) Deno.removeSync(foreignPin);
      bpf.cleanup();
      await env.destroy();
    }
  },
);

Deno.test(
  "doctor: other datapaths' programs on the node's devices: every pod on the stage",
  opts,
  async () => {
    const env = await DoctorEnv.create();
    const bpf = await compileTestBpf();
    try {
      await addBridge("br-x", { netns: env.node, up: false });
      await classicFilter(env, "br-x", bpf.object);
      let r = await env.report();
      expect(
        r,
        "interface.carrier",
        "pass",
        /br-x ingress: tn_cls_ok \(clsact\).*every pod takes the stage/,
      );
      // install sees them too: the node's carrier is the stage, and so is a new pod's.
      env.setupDatapath();
      r = await env.report();
      expect(
        r,
        "pins.config",
        "pass",
        /carrier stage \(another datapath's programs run on the node/,
      );
      await env.attachPod("hv7");
      r = await env.report();
      assert.equal(podsData(r)[0].carrier, "stage");
      // Forcing the tag among them is a failure with the fix.
      env.writeConfig({ extra: "carrier: tag" });
      r = await env.report();
      expect(
        r,
        "interface.carrier",
        "fail",
        /carrier: tag is forced, but br-x ingress/,
        /carrier: auto/,
      );
      env.writeConfig();
      await env.ip("link", "del", "br-x");
      expect(await env.report(), "interface.carrier", "pass");
    } finally {
      bpf.cleanup();
      await env.destroy();
    }
  },
);

Deno.test("doctor: leaked pod attachments (netns deleted) and orphaned entries", opts, async () => {
  const env = await DoctorEnv.create();
  try {
    // An id with underscores and dots: its pins name it exactly, so its entry is its own.
    const pod = await env.attachPod("hv1", { containerId: `k8s_ctr.${randomId()}_0` });
    let r = await env.report();
    expect(r, "pods.attachments", "pass", /2 pod attachment pins, all on live interfaces/);
    expect(r, "pods.entries", "pass", /1 pod entry, each owned by an attachment/);
    expect(r, "pods.carrier", "pass", /1 pod interface: 1 on the tag/);

    await deleteNetns(pod.netns); // the pod is gone; no DEL came
    // netns teardown is asynchronous: the host veth goes with its peer
    await until(
      "the host veth to go",
      async () => !(await env.ip("link", "show")).includes("hv1"),
    );
    const pins = podPins(env.bpffs, pod.containerId, "eth0");
    assert.equal(pins.length, 2);
    r = await env.report();
    expect(r, "pods.attachments", "warn", /2 leaked attachments of 2/, /ifindex 0/);
    for (const p of pins) assert.match(find(r, "pods.attachments").fix ?? "", new RegExp(p));
    expect(r, "pods.entries", "warn", /\(gone\)/, /tsnproxy install --bpffs/);

    // The leaked pins removed as the fix says; the entry as its fix says (install).
    for (const p of pins) Deno.removeSync(p);
    r = await env.report();
    expect(r, "pods.attachments", "pass");
    expect(r, "pods.entries", "warn");
    env.setupDatapath();
    r = await env.report();
    expect(r, "pods.entries", "pass", /^0 pod entr/);

    // A live pod whose attachments someone unpinned: its entry is orphaned, admit is gone.
    const live = await env.attachPod("hv6", { ip: "10.250.0.11" });
    for (const p of podPins(env.bpffs, live.containerId, "eth0")) Deno.removeSync(p);
    r = await env.report();
    expect(r, "pods.entries", "warn", /ifindex \d+ \(hv6\)/);
    expect(r, "pods.carrier", "fail", /hv6: admit is not attached/);
    // Re-created (the carrier check's fix): attached again, its entry owned again.
    await env.linksGone(live);
    assertOk(await env.cni("ADD", live));
    r = await env.report();
    expect(r, "pods.entries", "pass");
    expect(r, "pods.carrier", "pass");
    assertOk(await env.cni("DEL", live));
    r = await env.report();
    expect(r, "pods.entries", "pass", /^0 pod entr/);
    expect(r, "pods.carrier", "pass", /no pod attached/);
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
    const sockDir = nodeSocketDir("doctor"); // agentSocket must be under /run/tsnproxy/
    const socket = `${sockDir}/cni.sock`;
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
          await new LineReader((b) => conn.read(b)).next();
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
      removeNodePath(sockDir);
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

Deno.test(
  "doctor: the datapath's config differs from the node config, then installed",
  opts,
  async () => {
    const env = await DoctorEnv.create();
    try {
      // mapEntries and gc.intervalMs sized release 0.1.0's table and GC: accepted, ignored.
      env.writeConfig({ extra: "mapEntries: 4096\ncarrier: table\npolicy: {maxPriority: 3}" });
      Deno.writeTextFileSync(
        env.config,
        Deno.readTextFileSync(env.config).replace(
          "maxAgeMs: 1000, intervalMs: 200",
          "maxAgeMs: 2000, intervalMs: 300",
        ),
      );
      let r = await env.report();
      expect(r, "pins.maps", "pass");
      expect(
        r,
        "pins.config",
        "warn",
        /gc\.maxAgeMs 1000 \(config 2000\)/,
        /policy \{"maxPriority":"none"\} \(config \{"maxPriority":3\}\)/,
        /carrier tag \(config table\)/,
        /tsnproxy install/,
      );
      env.setupDatapath(); // what install does with that config
      r = await env.report();
      expect(
        r,
        "pins.config",
        "pass",
        /carrier stage \(the node config forces it \(carrier: table\)\)/,
      );
      const maps = DatapathMaps.open(env.bpffs);
      try {
        assert.equal(maps.readConfig().node.maxPriority, 3);
        assert.equal(maps.readConfig().stageMaxAgeNs, 2_000_000_000n);
      } finally {
        maps.close();
      }
    } finally {
      await env.destroy();
    }
  },
);
