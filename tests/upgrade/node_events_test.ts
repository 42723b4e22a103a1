/**
 * What a node goes through between installs: a reboot (the bpf filesystem empty while the
 * conflist still names tsnproxy), a bpf filesystem not mounted, a plugin binary of another
 * build than the pinned programs, and a pin root that holds another datapath's pins.
 */
import assert from "node:assert/strict";
import { DatapathEnv } from "../lib/datapath_env.ts";
import { setUpNode, tearDownNode } from "../lib/node.ts";
import { createTopology, FAR_V4 } from "../lib/topology.ts";
import { commandLine, run } from "../lib/run.ts";
import { CURRENT } from "../lib/release.ts";
import { programsOn } from "../../src/bpf/hooks.ts";
import { BpfObject } from "../../src/bpf/object.ts";
import { objectBytes } from "../../src/bpf/objects.ts";
import { PinLayout } from "../../src/bpf/pins.ts";
import { releaseBytes } from "../../src/bpf/release.ts";
import { objPin } from "../../src/bpf/sys.ts";
import { withNetns } from "../../src/util/netns.ts";
import { doctorReportSchema } from "../../src/doctor/schema.ts";

const UDP = 17;
const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name: "reboot: ADD before the datapath is back fails clearly, attaches nothing",
  ...opts,
}, async () => {
  const env = await DatapathEnv.create("tcx", { pods: 1 });
  const [pod] = env.topo.pods;
  try {
    // A reboot empties bpffs; the conflist (here: the entry the env passes) still names us.
    tearDownNode(env.node);
    const r = await env.cni("ADD", pod);
    assert.notEqual(r.code, 0);
    const err = JSON.parse(r.stdout);
    assert.equal(err.code, 100, r.stdout);
    assert.match(err.msg, /datapath is not loaded \(nothing was attached\)/);
    assert.match(err.details, /tsnproxy install/);
    assert.equal(r.stderr, "");
    const host = withNetns(env.topo.nodePath, () => programsOn(pod.hostVeth, "ingress"));
    const inPod = withNetns(pod.netnsPath, () => programsOn("eth0", "egress"));
    assert.deepEqual([...host, ...inPod], [], "nothing half-attached");
    // The datapath back (the DaemonSet's install after the reboot): the retried ADD works.
    setUpNode({
      bpffs: env.bpffs,
      netns: env.topo.nodePath,
      tsnInterface: "tsn0",
      api: "tcx",
    });
    await env.attachPod(pod);
    env.observer.filter(UDP, 8080);
    await env.send(pod.netns, { dst: FAR_V4, count: 100, prio: 4 });
    assert.equal(env.observer.counts().fwdPrio[4], 100);
  } finally {
    await env.destroy();
  }
});

Deno.test({ name: "bpffs not mounted: the error names the mount", ...opts }, async () => {
  const env = await DatapathEnv.create("tcx", { pods: 1 });
  const [pod] = env.topo.pods;
  try {
    // The plugin in a mount namespace without /sys/fs/bpf (a container without the mount).
    const [bin, ...args] = [
      "unshare",
      "-m",
      "sh",
      "-c",
      'umount -l /sys/fs/bpf && exec "$@"',
      "sh",
      ...commandLine([Deno.execPath(), "run", "-A", "--quiet", `${CURRENT.dir}/main.ts`, "cni"], {
        netns: env.topo.nodePath,
      }),
    ];
    const r = await run([bin, ...args], {
      env: {
        PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
        CNI_COMMAND: "ADD",
        CNI_CONTAINERID: DatapathEnv.containerId(pod),
        CNI_NETNS: pod.netnsPath,
        CNI_IFNAME: "eth0",
      },
      clearEnv: true,
      stdin: env.stdin(pod),
      allowFail: true,
    });
    const err = JSON.parse(r.stdout);
    assert.match(err.msg, /not on a bpf filesystem/, r.stdout);
    assert.match(err.details, /mount -t bpf bpf \/sys\/fs\/bpf/);
  } finally {
    await env.destroy();
  }
});

Deno.test(
  { name: "programs pinned by another build: doctor says so, pods still attach", ...opts },
  async () => {
    const env = await DatapathEnv.create("tcx", { pods: 1 });
    const [pod] = env.topo.pods;
    try {
      // Another build's saver (same ABI) pinned over ours, as an older or newer binary's
      // install would leave it.
      const pins = new PinLayout(env.bpffs);
      const obj = BpfObject.open("tsnp_save", objectBytes("save"), pins.mapsDir);
      try {
        obj.setInitialValue(".rodata.release", releaseBytes("tsnproxy 0.1.9 0123456789ab"));
        obj.load();
        Deno.removeSync(pins.prog("save"));
        objPin(obj.programFd("tsnp_save"), pins.prog("save"));
      } finally {
        obj.close();
      }
      const d = await run(
        CURRENT.argv(
          ["doctor", "--json", "--bpffs", env.bpffs, "--tsn-interface", "tsn0"],
          env.topo.nodePath,
        ),
        { allowFail: true },
      );
      const report = doctorReportSchema.parse(JSON.parse(d.stdout));
      const progs = report.checks.find((c) => c.id === "pins.programs");
      assert.equal(progs?.status, "warn", JSON.stringify(progs));
      assert.match(progs?.found ?? "", /tsnp_save: 0\.1\.9 \(objects 0123456789ab\)/);
      await env.attachPod(pod);
      env.observer.filter(UDP, 8080);
      await env.send(pod.netns, { dst: FAR_V4, count: 100, prio: 2 });
      assert.equal(env.observer.counts().fwdPrio[2], 100);
      const s = await run(
        CURRENT.argv(["status", "--json", "--bpffs", env.bpffs], env.topo.nodePath),
      );
      const st = JSON.parse(s.stdout);
      assert.match(st.pods[0].saver, /^0\.1\.9 /, "the pod runs the program that was pinned");
    } finally {
      await env.destroy();
    }
  },
);

Deno.test(
  { name: "another datapath's pins under our root survive install and uninstall", ...opts },
  async () => {
    const topo = await createTopology({ pods: 0 });
    const bpffs = `/sys/fs/bpf/tsnp-test-${topo.id}`;
    const dir = Deno.makeTempDirSync({ prefix: "tsnp-foreign-" });
    try {
      // Someone else's map pinned in our pin root (and in a subdirectory of it) beforehand.
      Deno.mkdirSync(`${bpffs}/theirs`, { recursive: true });
      const obj = BpfObject.open("tsnp_save", objectBytes("save"), `${bpffs}/theirs`);
      try {
        obj.load(); // its maps pinned under <root>/theirs by name
      } finally {
        obj.close();
      }
      const before = [...Deno.readDirSync(`${bpffs}/theirs`)].map((e) => e.name).sort();
      assert.ok(before.length > 0);
      Deno.mkdirSync(`${dir}/net.d`);
      Deno.copyFileSync(
        new URL("../fixtures/cni/bridge/10-bridge.conflist", import.meta.url).pathname,
        `${dir}/net.d/10-bridge.conflist`,
      );
      const loc = [
        "--config",
        `${dir}/none.yaml`,
        "--tsn-interface",
        "tsn0",
        "--bpffs",
        bpffs,
        "--cni-conf-dir",
        `${dir}/net.d`,
        "--cni-bin-dir",
        dir,
        "--state-dir",
        `${dir}/state`,
      ];
      await run(CURRENT.argv(["install", ...loc], topo.nodePath));
      await run(CURRENT.argv(["uninstall", ...loc], topo.nodePath));
      const after = [...Deno.readDirSync(`${bpffs}/theirs`)].map((e) => e.name).sort();
      assert.deepEqual(after, before, "their pins are theirs");
      assert.deepEqual(
        [...Deno.readDirSync(bpffs)].map((e) => e.name),
        ["theirs"],
        "only our own names went",
      );
    } finally {
      Deno.removeSync(bpffs, { recursive: true });
      Deno.removeSync(dir, { recursive: true });
      await topo.destroy();
    }
  },
);
