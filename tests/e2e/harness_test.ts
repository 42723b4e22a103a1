/**
 * Self-tests of the e2e runtime harness, with the reference CNI plugins and a chained logging
 * plugin only (no tsnproxy): proves that a real containerd 1.6 CRI plugin (driven over gRPC
 * like kubelet) and podman 4.3 (CNI backend) run a conflist chain, pass it what the notes say,
 * carry traffic, and leave nothing behind. Needs root, containerd, runc, podman, umoci,
 * busybox-static, containernetworking-plugins, socat and python3 (scripts/setup.sh).
 */
import assert from "node:assert/strict";
import { type CniCall, CniEnv } from "./lib/cni.ts";
import { linkExists } from "../lib/netns.ts";
import { type Containerd, type Pod, shimSocketPath, startContainerd } from "./lib/containerd.ts";
import { PAUSE_IMAGE, WORKLOAD_IMAGE } from "./lib/image.ts";
import { pySendUdp, udpListen } from "./lib/net.ts";
import { startPodman } from "./lib/podman.ts";
import { exists, mountsUnder, pidsWithCmdline, waitFor } from "./lib/proc.ts";

interface PrevResult {
  interfaces?: { name: string; mac?: string; sandbox?: string }[];
  ips?: { address: string; gateway?: string; interface?: number }[];
}

function prevResultOf(call: CniCall): PrevResult | undefined {
  return call.stdin?.prevResult as PrevResult | undefined;
}

/** Host-side veth names in an ADD's prevResult (not the bridge, not the pod's eth0). */
function hostVeths(call: CniCall, bridge: string): string[] {
  return (prevResultOf(call)?.interfaces ?? [])
    .filter((i) => !i.sandbox && i.name !== bridge)
    .map((i) => i.name);
}

function callsFor(calls: CniCall[], id: string, command: string): CniCall[] {
  return calls.filter((c) => c.containerId === id && c.command === command);
}

async function cgroupExists(path: string): Promise<boolean> {
  return await exists(`/sys/fs/cgroup/memory${path}`) || await exists(`/sys/fs/cgroup${path}`);
}

async function timed<T>(what: string, f: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  try {
    return await f();
  } finally {
    console.log(`  ${what}: ${Math.round(performance.now() - t0)} ms`);
  }
}

/** Send from a container until the listener saw the payload (UDP may drop the first ones). */
async function sendUntil(
  c: Containerd,
  containerId: string,
  argv: string[],
  delivered: () => Promise<boolean>,
  attempts = 10,
): Promise<void> {
  for (let i = 0; i < attempts; i++) {
    const r = await c.exec(containerId, argv);
    assert.equal(r.exitCode, 0, `sender failed: ${r.stderr}`);
    if (await delivered()) return;
  }
  assert.fail(`datagram not delivered after ${attempts} attempts`);
}

Deno.test("containerd CRI runs the conflist chain like kubelet and cleans up", async (t) => {
  await using env = await CniEnv.create({ tag: "ctrd" });
  const c = await timed(
    "containerd start + image import",
    () => startContainerd({ cniBinDir: env.binDir, cniConfDir: env.confDir }),
  );
  let stopped = false;
  try {
    const bridge = env.network.bridge;

    await t.step("runtime and network are ready, images imported", async () => {
      const { conditions } = await c.cri.status();
      const ready = Object.fromEntries(conditions.map((x) => [x.type, x.status]));
      assert.deepEqual(ready, { RuntimeReady: true, NetworkReady: true });
      assert.ok(await c.cri.imageStatus(PAUSE_IMAGE), "pause image missing");
      assert.ok(await c.cri.imageStatus(WORKLOAD_IMAGE), "workload image missing");
      const { conflists, lastLoadStatus } = await c.loadedCniConfig();
      assert.equal(lastLoadStatus, "OK");
      assert.deepEqual(conflists.map((x) => x.name), [env.network.name]);
    });

    let alpha: Pod | undefined;
    const hostPort = 20000 + Math.floor(Math.random() * 20000);
    await t.step("RunPodSandbox calls ADD with the netns, CNI_ARGS and prevResult", async () => {
      alpha = await timed("RunPodSandbox", () =>
        c.runPod({
          name: "alpha",
          namespace: "e2e",
          labels: { app: "alpha" },
          annotations: { "example.com/note": "x" },
          portMappings: [{ protocol: "UDP", container_port: 5000, host_port: hostPort }],
        }));
      assert.match(alpha.netnsPath, /^\/var\/run\/netns\/cni-[0-9a-f-]+$/);
      assert.ok(await exists(alpha.netnsPath), "pod netns file missing");
      assert.match(alpha.ip, /^10\.123\.\d+\.\d+$/);

      const adds = callsFor(await env.calls(), alpha.id, "ADD");
      assert.equal(adds.length, 1);
      const add = adds[0];
      assert.equal(add.netns, alpha.netnsPath);
      assert.equal(add.ifname, "eth0");
      assert.equal(add.path, env.binDir);
      assert.deepEqual(
        {
          name: add.args.K8S_POD_NAME,
          ns: add.args.K8S_POD_NAMESPACE,
          uid: add.args.K8S_POD_UID,
          infra: add.args.K8S_POD_INFRA_CONTAINER_ID,
        },
        { name: "alpha", ns: "e2e", uid: alpha.uid, infra: alpha.id },
      );
      assert.equal(add.stdin?.name, env.network.name);
      assert.equal(add.stdin?.type, "e2elog");
      const prev = prevResultOf(add);
      assert.ok(prev, "ADD without prevResult");
      assert.ok(prev.ips?.some((ip) => ip.address === `${alpha!.ip}/24`), "pod IP not in prev");
      assert.ok(prev.interfaces?.some((i) => i.sandbox === alpha!.netnsPath));
      assert.equal(hostVeths(add, bridge).length, 1);
      // containerd 1.6 (go-cni) marshals its PortMapping struct without json tags: the keys are
      // Go field names. Go plugins decode them case-insensitively; JSON.parse does not.
      assert.deepEqual(add.stdin?.runtimeConfig, {
        portMappings: [{ HostPort: hostPort, ContainerPort: 5000, Protocol: "udp", HostIP: "" }],
      });
    });

    let alphaWorkload = "";
    await t.step("UDP from a pod (python3) reaches a listener on the bridge gateway", async () => {
      assert.ok(alpha);
      alphaWorkload = await timed(
        "CreateContainer + StartContainer",
        () => c.startWorkload(alpha!.id, { command: ["/bin/sleep", "3600"] }),
      );
      const listener = await udpListen(env.gateway);
      try {
        await sendUntil(
          c,
          alphaWorkload,
          pySendUdp(env.gateway, listener.port, "hello-from-alpha", { count: 2, priority: 3 }),
          () => Promise.resolve(listener.received.some((d) => d.data === "hello-from-alpha")),
        );
        const got = await listener.next((d) => d.data === "hello-from-alpha");
        assert.equal(got.from, alpha.ip);
      } finally {
        await listener.close();
      }
    });

    let beta: Pod | undefined;
    await t.step("UDP between two pods reaches a socat listener", async () => {
      assert.ok(alpha && alphaWorkload);
      beta = await c.runPod({ name: "beta", namespace: "e2e" });
      const sink = await c.startWorkload(beta.id, {
        command: ["/usr/bin/socat", "-u", "UDP-RECV:5000", "OPEN:/tmp/got,creat,append"],
      });
      const read = async () => (await c.exec(sink, ["cat", "/tmp/got"])).stdout;
      await sendUntil(
        c,
        alphaWorkload,
        pySendUdp(beta.ip, 5000, "alpha-to-beta\n"),
        async () => (await read()).includes("alpha-to-beta"),
      );
    });

    await t.step("pods started concurrently each get their own ADD, netns and IP", async () => {
      const pods = await timed(
        "3 concurrent RunPodSandbox",
        () => c.runPods(3, (i) => ({ name: `par${i}`, namespace: "e2e" })),
      );
      assert.equal(new Set(pods.map((p) => p.ip)).size, 3);
      assert.equal(new Set(pods.map((p) => p.netnsPath)).size, 3);
      const calls = await env.calls();
      for (const p of pods) {
        const adds = callsFor(calls, p.id, "ADD");
        assert.equal(adds.length, 1, `ADD count for ${p.name}`);
        assert.equal(adds[0].args.K8S_POD_NAME, p.name);
        assert.equal(adds[0].netns, p.netnsPath);
      }
    });

    await t.step("StopPodSandbox then RemovePodSandbox: two DELs, nothing left", async () => {
      assert.ok(alpha);
      const pod = alpha;
      const veths = hostVeths(callsFor(await env.calls(), pod.id, "ADD")[0], bridge);

      await timed("StopPodSandbox", () => c.stopPod(pod.id));
      let dels = callsFor(await env.calls(), pod.id, "DEL");
      assert.equal(dels.length, 1, "one DEL after StopPodSandbox");
      assert.equal(dels[0].netns, pod.netnsPath);
      assert.ok(prevResultOf(dels[0]), "first DEL carries prevResult");
      assert.equal(await exists(pod.netnsPath), false, "netns file left after stop");
      for (const v of veths) assert.equal(await linkExists(v), false, `veth ${v} left`);

      await timed("RemovePodSandbox", () => c.removePod(pod.id));
      dels = callsFor(await env.calls(), pod.id, "DEL");
      assert.equal(dels.length, 2, "a second DEL after RemovePodSandbox");
      assert.equal(dels[1].netns, "");
      assert.equal(dels[1].args.K8S_POD_NAME, "alpha");
      assert.equal(prevResultOf(dels[1]), undefined);
      const mounts = (await mountsUnder(c.dir)).filter((m) => m.includes(pod.id));
      assert.deepEqual(mounts, []);
      assert.equal((await c.cri.listPodSandbox()).some((p) => p.id === pod.id), false);
    });

    await t.step("a failing chained plugin fails RunPodSandbox and is cleaned up", async () => {
      const good = env.conflist;
      await Deno.writeTextFile(
        `${env.binDir}/e2efail`,
        `#!/bin/sh
cat >/dev/null
case "$CNI_COMMAND" in
  ADD) echo '{"cniVersion":"1.0.0","code":100,"msg":"e2efail refuses ADD"}'; exit 1 ;;
  VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}' ;;
esac
exit 0
`,
        { mode: 0o755 },
      );
      await env.writeConflist({ ...good, plugins: [...good.plugins, { type: "e2efail" }] });
      await c.waitForCniConfig((x) => x.plugins.some((p) => p.type === "e2efail"));
      try {
        await assert.rejects(c.runPod({ name: "doomed", namespace: "e2e" }), /e2efail refuses ADD/);
        const calls = (await env.calls()).filter((x) => x.args.K8S_POD_NAME === "doomed");
        const add = calls.find((x) => x.command === "ADD");
        assert.ok(add, "ADD reached the logging plugin before the failing one");
        assert.ok(
          calls.some((x) => x.command === "DEL" && x.containerId === add.containerId),
          "containerd calls DEL after a failed ADD",
        );
        assert.equal(await exists(add.netns), false, "netns of the failed sandbox left");
        const doomedVeths = hostVeths(add, bridge);
        assert.equal(doomedVeths.length, 1, "the failed ADD's prevResult names its host veth");
        for (const v of doomedVeths) assert.equal(await linkExists(v), false, `veth ${v} left`);
        assert.equal(
          (await c.cri.listPodSandbox()).some((p) => p.metadata.name === "doomed"),
          false,
        );
      } finally {
        await env.writeConflist(good);
        await c.waitForCniConfig((x) => !x.plugins.some((p) => p.type === "e2efail"));
      }
    });

    await t.step("fixture stop removes every pod and leaves nothing behind", async () => {
      const calls = await env.calls();
      const adds = calls.filter((x) => x.command === "ADD");
      const veths = adds.flatMap((x) => hostVeths(x, bridge));
      assert.equal(veths.length, adds.length, "one host veth per ADD");
      const netns = [...c.pods.values()].map((p) => p.netnsPath);
      const problems = await timed("fixture stop", () => c.stop());
      stopped = true;
      assert.deepEqual(problems, []);
      // Every pod got its two DELs (the one removed by the fixture too).
      const after = await env.calls();
      for (const p of c.pods.values()) {
        const dels = callsFor(after, p.id, "DEL");
        assert.ok(dels.length >= 2, `${p.name}: ${dels.length} DELs`);
      }
      for (const n of netns) assert.equal(await exists(n), false, `${n} left`);
      for (const v of veths) assert.equal(await linkExists(v), false, `veth ${v} left`);
      assert.deepEqual(await mountsUnder(c.dir), []);
      assert.equal(await exists(c.dir), false);
      assert.equal(await cgroupExists(c.cgroupParent), false);
    });
  } finally {
    if (!stopped) await c.stop();
  }
});

Deno.test("podman (CNI backend) runs the chain for a container and cleans up", async (t) => {
  await using env = await CniEnv.create({ tag: "pdmn" });
  const p = await timed(
    "podman setup + image load",
    () => startPodman({ cniPluginDirs: [env.binDir] }),
  );
  let stopped = false;
  try {
    await p.addNetwork(env.conflist);
    // The bridge exists before the container, so the host listener can bind the gateway.
    await env.ensureBridge();

    await t.step("podman run: VERSION, ADD, traffic, DEL on exit", async () => {
      const listener = await udpListen(env.gateway);
      try {
        const send = pySendUdp(env.gateway, listener.port, "hello-from-podman", { count: 5 });
        const r = await timed("podman run --rm", () =>
          p.runContainer({
            network: env.network.name,
            name: "e2e-podman-1",
            command: [
              "/bin/sh",
              "-c",
              'ip -4 -o addr show dev eth0 && "$@"',
              "sh",
              ...send,
            ],
          }));
        assert.equal(r.code, 0, r.stderr);
        const ip = r.stdout.match(/inet (10\.123\.\d+\.\d+)\//)?.[1];
        assert.ok(ip, `no eth0 address in: ${r.stdout}`);
        const got = await listener.next((d) => d.data === "hello-from-podman", 10_000);
        assert.equal(got.from, ip);

        const calls = await env.calls();
        const add = calls.find((x) => x.command === "ADD");
        assert.ok(add, "no ADD");
        assert.ok(calls.some((x) => x.command === "VERSION"));
        assert.match(add.netns, /^\/run\/netns\/netns-[0-9a-f-]+$/);
        assert.equal(add.args.K8S_POD_NAME, "e2e-podman-1");
        assert.ok(prevResultOf(add)?.ips?.some((x) => x.address === `${ip}/24`));
        const dels = callsFor(calls, add.containerId, "DEL");
        assert.equal(dels.length, 1);
        assert.equal(dels[0].netns, add.netns);
        assert.equal(await exists(add.netns), false, "podman netns left");
        const veths = hostVeths(add, env.network.bridge);
        assert.equal(veths.length, 1, "the ADD's prevResult names the host veth");
        for (const v of veths) {
          assert.equal(await linkExists(v), false, `veth ${v} left`);
        }
        assert.deepEqual(await p.leftoverMounts(), []);
      } finally {
        await listener.close();
      }
    });

    await t.step("fixture stop leaves nothing behind", async () => {
      const problems = await p.stop();
      stopped = true;
      assert.deepEqual(problems, []);
      assert.equal(await exists(p.dir), false);
      assert.equal(await linkExists(env.network.bridge), false);
      assert.equal(await cgroupExists(p.cgroupParent), false);
    });
  } finally {
    if (!stopped) await p.stop();
  }
});

Deno.test("stop() after containerd crashed still sweeps pods, shims and mounts", async () => {
  await using env = await CniEnv.create({ tag: "crash" });
  const c = await startContainerd({ cniBinDir: env.binDir, cniConfDir: env.confDir });
  let pods: Pod[] = [];
  try {
    pods = await c.runPods(2, (i) => ({ name: `crash${i}` }));
    await c.startWorkload(pods[0].id, { command: ["/bin/sleep", "3600"] });
    assert.ok(c.pid);
    Deno.kill(c.pid, "SIGKILL");
    await waitFor("containerd to die", () => c.running ? undefined : true);
    assert.throws(() => c.cri, /containerd is not running/);
  } finally {
    const problems = await c.stop();
    // The sweep had work to do: the pods' containers outlived containerd.
    assert.ok(problems.some((p) => p.startsWith("runc container")), problems.join("; "));
  }
  const veths = (await env.calls()).filter((x) => x.command === "ADD")
    .flatMap((x) => hostVeths(x, env.network.bridge));
  assert.equal(veths.length, 2);
  for (const p of pods) {
    assert.equal(await exists(p.netnsPath), false, `${p.netnsPath} left`);
    assert.equal(await exists(await shimSocketPath(c.socket, "k8s.io", p.id)), false);
  }
  // Veths go with their netns, which the kernel frees asynchronously.
  await waitFor("pod veths to go", async () => {
    for (const v of veths) if (await linkExists(v)) return undefined;
    return true;
  });
  assert.deepEqual(await pidsWithCmdline(c.socket), []);
  assert.deepEqual(await mountsUnder(c.dir), []);
  assert.equal(await exists(c.dir), false);
  assert.equal(await cgroupExists(c.cgroupParent), false);
});

Deno.test("a containerd that cannot start fails at once, with its log", async () => {
  await using env = await CniEnv.create({ tag: "bad" });
  await assert.rejects(
    startContainerd({
      cniBinDir: env.binDir,
      cniConfDir: env.confDir,
      extraConfig: "this is not toml",
      startTimeoutMs: 60_000,
    }),
    /containerd did not start: .*exited.*containerd log/s,
  );
});
