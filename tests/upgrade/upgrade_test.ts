/**
 * A rolling upgrade under traffic, and the downgrade back: release 0.1.0 (built from its tag,
 * ABI 1: the saver applies the policy and writes the tag or a fingerprint-table entry) is
 * installed on a node, its pods send steadily, this build is installed over it while they
 * do, new pods are added, the old pods are deleted by this build's plugin; then 0.1.0 is
 * installed over this build again while this build's pod sends, and its plugin deletes that
 * pod. Every packet that leaves the TSN interface, before, during and after each swap, must
 * carry its pod's priority and launch time, and nothing of either release may be left.
 *
 * The two releases' BPF objects differ (new programs, maps and formats), and the swaps run
 * the real `tsnproxy install` of each release in the node's namespace.
 */
import assert from "node:assert/strict";
import { createTopology, FAR_V4, type Pod } from "../lib/topology.ts";
import { Observer } from "../lib/observer.ts";
import { SENDER } from "../lib/datapath_env.ts";
import { buildRelease, type BuiltRelease, CURRENT, PREVIOUS_RELEASE } from "../lib/release.ts";
import { run, spawn } from "../lib/run.ts";
import { queryTcx } from "../../src/bpf/attach.ts";
import { statusReportSchema } from "../../src/doctor/schema.ts";
import { withNetns } from "../../src/util/netns.ts";

const UDP = 17;
const opts = { sanitizeOps: false, sanitizeResources: false };

interface Cli {
  argv(args: string[], netns?: string): string[];
}

Deno.test({ name: "upgrade from 0.1.0 and downgrade back, under traffic", ...opts }, async (t) => {
  const old: BuiltRelease = await buildRelease(PREVIOUS_RELEASE);
  const topo = await createTopology({ pods: 3 });
  const [p1, p2, p3] = topo.pods;
  const dir = Deno.makeTempDirSync({ prefix: "tsnp-upgrade-" });
  const bpffs = `/sys/fs/bpf/tsnp-test-${topo.id}`;
  const conf = `${dir}/net.d`, bin = `${dir}/bin`, state = `${dir}/state`;
  Deno.mkdirSync(conf);
  Deno.mkdirSync(bin);
  Deno.copyFileSync(
    new URL("../fixtures/cni/bridge/10-bridge.conflist", import.meta.url).pathname,
    `${conf}/10-bridge.conflist`,
  );
  const loc = [
    "--config",
    `${dir}/none.yaml`,
    "--tsn-interface",
    "tsn0",
    "--bpffs",
    bpffs,
    "--cni-conf-dir",
    conf,
    "--cni-bin-dir",
    bin,
  ];
  const install = async (cli: Cli) => {
    const r = await run(cli.argv(["install", ...loc, "--state-dir", state], topo.nodePath), {
      allowFail: true,
    });
    assert.equal(r.code, 0, `install failed: ${r.stdout}\n${r.stderr}`);
  };
  const cni = async (cli: Cli, command: string, pod: Pod) => {
    const stdin = JSON.stringify({
      cniVersion: "1.0.0",
      name: "dbnet",
      type: "tsnproxy",
      bpffs,
      tsnInterface: "tsn0",
      prevResult: {
        cniVersion: "1.0.0",
        interfaces: [{ name: "br0" }, { name: pod.hostVeth }, {
          name: "eth0",
          sandbox: pod.netnsPath,
        }],
        ips: [{ address: `${pod.ipv4}/24`, gateway: "10.244.0.1", interface: 2 }],
      },
    });
    const r = await run(cli.argv(["cni"], topo.nodePath), {
      env: {
        PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
        CNI_COMMAND: command,
        CNI_CONTAINERID: `ctr-${pod.name}`,
        CNI_NETNS: pod.netnsPath,
        CNI_IFNAME: "eth0",
        CNI_PATH: bin,
      },
      clearEnv: true,
      stdin,
      allowFail: true,
    });
    assert.equal(r.code, 0, `${command} failed: ${r.stdout}\n${r.stderr}`);
  };
  const send = (pod: Pod, prio: number, count: number, txtime?: string) =>
    run([
      "python3",
      SENDER,
      "--dst",
      FAR_V4,
      "--count",
      String(count),
      "--prio",
      String(prio),
      "--pps",
      "400",
      ...(txtime ? ["--txtime", txtime] : []),
    ], { netns: pod.netns });
  const sink = spawn(["socat", "-u", "UDP-RECV:8080", "/dev/null"], {
    netns: topo.far,
    stdout: "null",
    stderr: "null",
  });
  const obs = Observer.attach(topo.nodePath, "tsn0");
  const pins = () => {
    const out: string[] = [];
    const walk = (d: string) => {
      try {
        for (const e of Deno.readDirSync(d)) {
          if (e.isDirectory) walk(`${d}/${e.name}`);
          else out.push(`${d}/${e.name}`.slice(bpffs.length + 1));
        }
      } catch { /* gone */ }
    };
    walk(bpffs);
    return out.sort();
  };
  try {
    await t.step("0.1.0 installed, its pods attached by its plugin", async () => {
      await install(old);
      await cni(old, "ADD", p1);
      await cni(old, "ADD", p2);
      assert.ok(pins().includes("maps/tsnp_meta"), `0.1.0's layout: ${pins()}`);
    });

    await t.step(
      "0.1.0's pods send through the upgrade: every packet keeps its metadata",
      async () => {
        obs.filter(UDP, 8080);
        // p1: a REALTIME launch time (0.1.0 carries it in its fingerprint table) at priority 3;
        // p2: priority 5 (0.1.0's tag). ~10 s each, the upgrade in the middle.
        const traffic = Promise.all([send(p1, 3, 4000, "realtime"), send(p2, 5, 4000)]);
        await new Promise((r) => setTimeout(r, 2500));
        await install(CURRENT);
        await cni(CURRENT, "ADD", p3);
        const p3traffic = send(p3, 6, 1200, "realtime");
        await traffic;
        await p3traffic;
        const c = obs.counts();
        assert.equal(c.fwdTotal, 9200, `every packet left tsn0: ${c.fwdTotal}`);
        assert.equal(c.fwdPrio[3], 4000, `0.1.0's pod p1 (table): ${c.fwdPrio}`);
        assert.equal(c.fwdPrio[5], 4000, `0.1.0's pod p2 (tag): ${c.fwdPrio}`);
        assert.equal(c.fwdPrio[6], 1200, `this build's pod p3: ${c.fwdPrio}`);
        assert.equal(c.tsOk, 5200, `launch times: ok ${c.tsOk} none ${c.tsNone} bad ${c.tsBad}`);
      },
    );

    await t.step("status names the release behind each pod and program", async () => {
      const r = await run(CURRENT.argv(["status", "--json", "--bpffs", bpffs], topo.nodePath));
      const s = statusReportSchema.parse(JSON.parse(r.stdout));
      assert.equal(s.node?.legacyPods, 2);
      assert.match(s.node?.programs.tsnp_admit ?? "", /^0\.2\.0 \(objects [0-9a-f]{12}\)$/);
      const p3s = s.pods?.find((p) => p.containerId === `ctr-${p3.name}`);
      assert.match(p3s?.saver ?? "", /^0\.2\.0/);
      assert.match(p3s?.admit ?? "", /^0\.2\.0/);
    });

    await t.step("this build's DEL cleans up 0.1.0's pods, then retires 0.1.0", async () => {
      await cni(CURRENT, "DEL", p1);
      assert.ok(pins().some((p) => p.startsWith("maps/")), "kept while p2 lives");
      await cni(CURRENT, "DEL", p2);
      const left = pins();
      assert.ok(!left.some((p) => /^(maps|progs|node)\//.test(p)), `0.1.0 left: ${left}`);
      assert.ok(!left.some((p) => p.includes(`ctr-${p1.name}`) || p.includes(`ctr-${p2.name}`)));
      const onNic = withNetns(topo.nodePath, () => queryTcx("tsn0", "egress"));
      assert.deepEqual(onNic.map((p) => p.name), ["tsnp_restore"], "0.1.0's restorer detached");
    });

    await t.step("downgrade to 0.1.0 under this build's pod's traffic", async () => {
      obs.filter(UDP, 8080);
      const traffic = send(p3, 6, 3000, "realtime");
      await new Promise((r) => setTimeout(r, 2000));
      await install(old);
      await traffic;
      const c = obs.counts();
      assert.equal(c.fwdPrio[6], 3000, `this build's pod under 0.1.0: ${c.fwdPrio}`);
      assert.equal(c.tsOk, 3000, `launch times: ok ${c.tsOk} none ${c.tsNone}`);
    });

    await t.step(
      "0.1.0's DEL cleans up this build's pod; its uninstall leaves nothing",
      async () => {
        await cni(old, "DEL", p3);
        assert.ok(!pins().some((p) => p.includes(`ctr-${p3.name}`)), `left: ${pins()}`);
        const r = await run(old.argv(["uninstall", ...loc, "--state-dir", state], topo.nodePath), {
          allowFail: true,
        });
        assert.equal(r.code, 0, r.stderr);
        assert.deepEqual(pins(), []);
        const onNic = withNetns(topo.nodePath, () => queryTcx("tsn0", "egress"));
        assert.deepEqual(onNic, []);
      },
    );
  } finally {
    obs.detach();
    await sink.stop();
    await run(CURRENT.argv(["uninstall", ...loc, "--state-dir", state], topo.nodePath), {
      allowFail: true,
    });
    await topo.destroy();
    Deno.removeSync(dir, { recursive: true });
  }
});
