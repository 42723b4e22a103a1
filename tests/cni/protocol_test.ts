/**
 * The CNI protocol, with the plugin run as a process the way runtimes run it: every verb,
 * every supported version, and malformed inputs, each leaving nothing attached or pinned.
 * Root and a real kernel required; each test uses a private pin root.
 */
import assert from "node:assert/strict";
import {
  assertCniError,
  assertNothingFor,
  assertOk,
  cni,
  createPod,
  deletePod,
  entry,
  podState,
  prevResultFor,
  withNode,
  withPod,
} from "./helpers.ts";
import { podPins } from "../../src/bpf/pod.ts";
import { PinLayout } from "../../src/bpf/pins.ts";
import { randomId, run } from "../lib/run.ts";
import { lexists } from "../../src/util/fs.ts";

const VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

Deno.test("VERSION reports the supported versions, via `cni` and via CNI_COMMAND alone", async () => {
  for (const noSubcommand of [false, true]) {
    for (const v of [...VERSIONS, "0.2.0"]) {
      const r = await cni({ command: "VERSION", stdin: { cniVersion: v }, noSubcommand });
      assertOk(r);
      assert.deepEqual(r.json, { cniVersion: v, supportedVersions: VERSIONS });
    }
  }
  const empty = await cni({ command: "VERSION", stdin: "" });
  assertOk(empty);
  assert.equal(empty.json?.cniVersion, "1.1.0");
});

Deno.test("ADD, CHECK, DEL in every supported version; result converted to that version", async () => {
  await withNode(async (node) => {
    for (const v of VERSIONS) {
      await withPod(async (pod) => {
        // The previous plugin answered in 1.0.0: the output must be in the config's version.
        const prev = prevResultFor(pod, "1.0.0");
        const conf = { ...entry(node, {}, v), prevResult: prev };
        const add = await cni({ command: "ADD", pod, stdin: conf, noSubcommand: v === "0.3.1" });
        assertOk(add);
        assert.equal(add.stderr, "");
        assert.equal(add.json?.cniVersion, v);
        const ips = add.json?.ips as Array<Record<string, unknown>>;
        assert.equal(ips.length, 2);
        assert.equal(ips[0].version, v.startsWith("0.") ? "4" : undefined);
        // Both sides: admit on the host veth, the saver in the pod.
        assert.equal(podPins(node.bpffs, pod.containerId, pod.ifname).length, 2);
        const check = await cni({ command: "CHECK", pod, stdin: conf });
        if (v === "0.3.0" || v === "0.3.1") assertCniError(check, 1, /does not allow CHECK/);
        else {
          assertOk(check);
          assert.equal(check.stdout, "");
        }
        const del = await cni({ command: "DEL", pod, stdin: conf });
        assertOk(del);
        assert.equal(del.stdout, "");
        assertNothingFor(node, pod);
      });
    }
  });
});

Deno.test("ADD passes prevResult through unchanged when versions match", async () => {
  await withNode(async (node) => {
    await withPod(async (pod) => {
      const prev = { ...prevResultFor(pod, "1.1.0"), extra: { vendor: [1, 2] } };
      const add = await cni({ command: "ADD", pod, stdin: { ...entry(node), prevResult: prev } });
      assertOk(add);
      assert.equal(add.stdout.trim(), JSON.stringify(prev));
      await cni({ command: "DEL", pod, stdin: entry(node) });
    });
  });
});

Deno.test("DEL is idempotent: twice, without netns, without prevResult, without ADD, netns gone", async () => {
  await withNode(async (node) => {
    for (const api of ["tcx", "clsact"]) {
      const pod = await createPod();
      try {
        const conf = { ...entry(node, { attachMode: api }), prevResult: prevResultFor(pod) };
        // Never added.
        assertOk(await cni({ command: "DEL", pod, stdin: conf }));
        assertOk(await cni({ command: "ADD", pod, stdin: conf }));
        // containerd: StopPodSandbox (netns + prevResult), then RemovePodSandbox (neither).
        assertOk(await cni({ command: "DEL", pod, stdin: conf }));
        assertOk(
          await cni({ command: "DEL", pod, env: { CNI_NETNS: "" }, stdin: entry(node) }),
        );
        assertNothingFor(node, pod);
        // ADD again, then the namespace disappears before DEL.
        assertOk(await cni({ command: "ADD", pod, stdin: conf }));
        await deletePod(pod);
        assertOk(await cni({ command: "DEL", pod, stdin: conf }));
        assertOk(await cni({ command: "DEL", pod, env: { CNI_NETNS: "" }, stdin: entry(node) }));
        assertNothingFor(node, pod);
      } finally {
        await deletePod(pod);
      }
    }
    // DEL with an entry edited into something invalid since ADD still cleans up.
    await withPod(async (pod) => {
      const conf = { ...entry(node), prevResult: prevResultFor(pod) };
      assertOk(await cni({ command: "ADD", pod, stdin: conf }));
      assertOk(await cni({ command: "DEL", pod, stdin: { ...conf, bogus: 1 } }));
      assertNothingFor(node, pod);
    });
  });
});

Deno.test("malformed inputs: right error code, nothing attached or pinned", async () => {
  await withNode(async (node) => {
    await withPod(async (pod) => {
      const good = { ...entry(node), prevResult: prevResultFor(pod) };
      // A file an entry author must not get appends to.
      const escapeLog = `/tmp/tsnp-escape-${randomId()}.log`;
      // Paths a runtime (or whoever calls the plugin) may pass as CNI_NETNS that are no
      // namespace.
      const notNs = Deno.makeTempDirSync({ prefix: "tsnp-not-netns-" });
      const fifo = `${notNs}/fifo`;
      await run(["mkfifo", fifo]);
      const file = `${notNs}/file`;
      Deno.writeTextFileSync(file, "");
      const cases: Array<{
        name: string;
        stdin: unknown;
        env?: Record<string, string | undefined>;
        command?: string;
        code: number;
        msg?: RegExp;
      }> = [
        { name: "bad JSON", stdin: "{not json", code: 6, msg: /not valid JSON/ },
        { name: "empty stdin", stdin: "", code: 6 },
        {
          name: "stdin over 16 MiB",
          stdin: `{"pad": "${"x".repeat(16 << 20)}"}`,
          code: 5,
          msg: /exceeds 16 MiB/,
        },
        { name: "JSON array", stdin: "[]", code: 6 },
        { name: "no prevResult", stdin: entry(node), code: 7, msg: /chained plugin/ },
        { name: "prevResult not object", stdin: { ...good, prevResult: "x" }, code: 7 },
        {
          name: "prevResult ips bad",
          stdin: { ...good, prevResult: { cniVersion: "1.1.0", ips: [{ address: 3 }] } },
          code: 6,
        },
        {
          name: "prevResult interface index out of range",
          stdin: {
            ...good,
            prevResult: { cniVersion: "1.1.0", ips: [{ address: "10.0.0.1/8", interface: 4 }] },
          },
          code: 6,
        },
        {
          name: "prevResult unsupported version",
          stdin: { ...good, prevResult: { ...prevResultFor(pod), cniVersion: "0.2.0" } },
          code: 1,
        },
        { name: "unknown cniVersion", stdin: { ...good, cniVersion: "2.0.0" }, code: 1 },
        { name: "old cniVersion", stdin: { ...good, cniVersion: "0.2.0" }, code: 1 },
        { name: "no cniVersion", stdin: { ...good, cniVersion: undefined }, code: 1 },
        {
          name: "cniVersions without supported",
          stdin: { ...good, cniVersion: undefined, cniVersions: ["0.1.0", "3.0.0"] },
          code: 1,
        },
        {
          name: "missing CNI_NETNS",
          stdin: good,
          env: { CNI_NETNS: undefined },
          code: 4,
          msg: /CNI_NETNS/,
        },
        { name: "missing CNI_IFNAME", stdin: good, env: { CNI_IFNAME: "" }, code: 4 },
        { name: "missing CNI_CONTAINERID", stdin: good, env: { CNI_CONTAINERID: "" }, code: 4 },
        { name: "bad CNI_CONTAINERID", stdin: good, env: { CNI_CONTAINERID: "-x/y" }, code: 4 },
        { name: "unknown CNI_COMMAND", stdin: good, command: "FROB", code: 4 },
        {
          name: "nonexistent netns",
          stdin: good,
          env: { CNI_NETNS: `/run/netns/tsnp-nope-${randomId()}` },
          code: 103,
          msg: /does not exist \(CNI_NETNS\): cannot open \S+: No such file or directory/,
        },
        {
          name: "netns a FIFO (never opened for reading: it would block)",
          stdin: good,
          env: { CNI_NETNS: fifo },
          code: 103,
          msg: /CNI_NETNS is not a network namespace: \S+ is a FIFO, not a network namespace/,
        },
        {
          name: "netns a regular file",
          stdin: good,
          env: { CNI_NETNS: file },
          code: 103,
          msg: /CNI_NETNS is not a network namespace: \S+ is a regular file/,
        },
        {
          name: "nonexistent ifname",
          stdin: good,
          env: { CNI_IFNAME: "eth9" },
          code: 103,
          msg: /eth9/,
        },
        {
          name: "bad policy value",
          stdin: { ...good, policy: { maxPriority: -1 } },
          code: 7,
          msg: /policy\.maxPriority/,
        },
        {
          name: "bad policy key",
          stdin: { ...good, policy: { remap: { "20": 1 } } },
          code: 7,
          msg: /remap/,
        },
        {
          name: "remap beyond the datapath",
          stdin: { ...good, policy: { remap: { "7": 2 ** 32 } } },
          code: 7,
          msg: /policy\.remap\.7: .*0\.\.4294967295/,
        },
        {
          name: "logFile outside /var/log/tsnproxy",
          stdin: { ...good, logFile: escapeLog },
          code: 7,
          msg: /logFile: .*outside \/var\/log\/tsnproxy\//,
        },
        {
          name: "bpffs outside /sys/fs/bpf",
          stdin: { ...good, bpffs: "/tmp/pins" },
          code: 7,
          msg: /bpffs: .*outside \/sys\/fs\/bpf\//,
        },
        {
          name: "agentSocket outside /run/tsnproxy",
          stdin: { ...good, agentSocket: "/run/containerd/containerd.sock" },
          code: 7,
          msg: /agentSocket: .*outside \/run\/tsnproxy\//,
        },
        {
          name: "bad CNI_ARGS policy",
          stdin: good,
          env: { CNI_ARGS: "IgnoreUnknown=1;TSNPROXY_MAX_PRIORITY=high" },
          code: 4,
        },
        {
          name: "bad runtimeConfig policy",
          stdin: { ...good, runtimeConfig: { tsnproxy: { maxPriority: "x" } } },
          code: 7,
        },
        {
          name: "unknown field",
          stdin: { ...good, tsnIfname: "tsn0" },
          code: 7,
          msg: /unknown field "tsnIfname".*valid: tsnInterface/,
        },
        { name: "bad restoreAt", stdin: { ...good, restoreAt: "egress" }, code: 7 },
        { name: "bad attachMode", stdin: { ...good, attachMode: "xdp" }, code: 7 },
        {
          name: "not installed",
          stdin: { ...good, bpffs: `/sys/fs/bpf/tsnp-missing-${randomId()}` },
          code: 100,
          msg: /tsnproxy install|not installed/,
        },
      ];
      for (const c of cases) {
        const r = await cni({ command: c.command ?? "ADD", pod, env: c.env, stdin: c.stdin });
        const err = assertCniError(r, c.code, c.msg);
        assert.equal(r.stderr, "", `${c.name}: stderr must stay empty`);
        if (c.code >= 100) assert.equal(typeof err.details, "string", c.name);
        assert.deepEqual(podState(node), { pins: [], entries: 0 }, `${c.name} left state`);
      }
      assert.ok(!lexists(escapeLog), "a logFile outside /var/log/tsnproxy is never written");
      Deno.removeSync(notNs, { recursive: true });
      // The not-installed error says what to do.
      const r = await cni({
        command: "ADD",
        pod,
        stdin: { ...good, bpffs: `/sys/fs/bpf/tsnp-missing-${randomId()}` },
      });
      assert.match(String(r.json?.details), /tsnproxy install/);
    });
  });
});

Deno.test("STATUS: ready on an installed node, 50 without pins, 1 before spec 1.1.0", async () => {
  await withNode(async (node) => {
    const ok = await cni({ command: "STATUS", stdin: entry(node) });
    assertOk(ok);
    assert.equal(ok.stdout, "");
    const old = await cni({ command: "STATUS", stdin: entry(node, {}, "1.0.0") });
    assertCniError(old, 1, /STATUS/);
    // Missing maps/programs: not ready.
    Deno.removeSync(new PinLayout(node.bpffs).prog("save"));
    assertCniError(await cni({ command: "STATUS", stdin: entry(node) }), 50, /tsnp_save/);
  });
  const missing = await cni({
    command: "STATUS",
    stdin: { cniVersion: "1.1.0", name: "n", type: "tsnproxy", bpffs: "/sys/fs/bpf/tsnp-none" },
  });
  assertCniError(missing, 50);
});

Deno.test("GC removes attachments of containers not in cni.dev/valid-attachments", async () => {
  await withNode(async (node) => {
    const pods = [await createPod(), await createPod(), await createPod()];
    try {
      for (const [i, pod] of pods.entries()) {
        const api = i === 1 ? "clsact" : "tcx";
        const conf = { ...entry(node, { attachMode: api }), prevResult: prevResultFor(pod) };
        assertOk(await cni({ command: "ADD", pod, stdin: conf }));
      }
      assertCniError(
        await cni({ command: "GC", stdin: { ...entry(node, {}, "1.0.0") } }),
        1,
        /GC/,
      );
      assertCniError(await cni({ command: "GC", stdin: entry(node) }), 7, /valid-attachments/);
      const keep = pods[0];
      const gc = await cni({
        command: "GC",
        stdin: {
          ...entry(node),
          "cni.dev/valid-attachments": [{ containerID: keep.containerId, ifname: "eth0" }],
        },
      });
      assertOk(gc);
      assert.equal(gc.stdout, "");
      assert.equal(podPins(node.bpffs, keep.containerId, "eth0").length, 2);
      assertNothingFor(node, pods[1]);
      assertNothingFor(node, pods[2]);
      assert.equal(podState(node).entries, 1); // keep's host veth
      assertOk(await cni({ command: "DEL", pod: keep, stdin: entry(node) }));
      assert.deepEqual(podState(node), { pins: [], entries: 0 });
    } finally {
      for (const p of pods) await deletePod(p);
    }
  });
});

Deno.test("cniVersions alone selects the highest supported version", async () => {
  await withNode(async (node) => {
    await withPod(async (pod) => {
      const conf = {
        ...entry(node),
        cniVersion: undefined,
        cniVersions: ["0.4.0", "1.0.0", "9.0.0"],
        prevResult: prevResultFor(pod, "1.0.0"),
      };
      const add = await cni({ command: "ADD", pod, stdin: conf });
      assertOk(add);
      assert.equal(add.json?.cniVersion, "1.0.0");
      assertOk(await cni({ command: "DEL", pod, stdin: conf }));
    });
  });
});
