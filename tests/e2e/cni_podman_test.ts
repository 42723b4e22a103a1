/**
 * tsnproxy under podman 4.3 with the CNI backend: a network whose conflist is bridge ->
 * tsnproxy, one container's ADD -> prioritized traffic out of the TSN veth -> DEL round trip,
 * and nothing left afterwards. Topology and datapath: tests/e2e/lib/tsn.ts. Needs root and
 * scripts/setup.sh's packages.
 */
import assert from "node:assert/strict";
import { CniEnv, type Conflist } from "./lib/cni.ts";
import { type Podman, startPodman } from "./lib/podman.ts";
import { exists, waitFor } from "./lib/proc.ts";
import {
  bridgePorts,
  SENDER_PODMAN_ARGS,
  senderArgv,
  showPrios,
  TsnNode,
  TSNPROXY_LAUNCHER,
} from "./lib/tsn.ts";
import { PRIORITY_MAX } from "../../src/policy/types.ts";
import { withAgentServer } from "./lib/agent.ts";

const UDP_COUNT = 200;

async function timed<T>(what: string, f: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  try {
    return await f();
  } finally {
    console.log(`  ${what}: ${Math.round(performance.now() - t0)} ms`);
  }
}

/** Everything tsnproxy and podman could leave of a container that is gone. */
async function nothingLeft(node: TsnNode, p: Podman, bridge: string, netns: string) {
  assert.deepEqual(node.podAttachments(), [], "pod pins left");
  assert.deepEqual(node.entries(), [], "pod entries left");
  assert.deepEqual(await node.saverLinks(), [], "saver links left");
  assert.deepEqual(await node.admitLinks(), [], "admit links left");
  assert.equal(await exists(netns), false, `${netns} left`);
  assert.deepEqual(await bridgePorts(bridge), [], "veths left on the bridge");
  assert.deepEqual(await p.leftoverMounts(), []);
  assert.equal((await p.podmanOk(["ps", "-aq"])).trim(), "");
}

Deno.test("tsnproxy chained after bridge under podman (CNI backend)", async (t) => {
  await using env = await CniEnv.create({
    tag: "tsnp",
    logPlugin: false,
    chain: () => [],
    extraPlugins: { tsnproxy: TSNPROXY_LAUNCHER },
  });
  await using node = await timed(
    "TSN node setup",
    () => TsnNode.create({ podSubnet: env.network.subnet }),
  );
  const conflist: Conflist = { ...env.conflist, plugins: [...env.conflist.plugins, node.entry()] };
  const p = await timed(
    "podman setup + image load",
    () => startPodman({ cniPluginDirs: [env.binDir] }),
  );
  let stopped = false;
  try {
    await p.addNetwork(conflist);
    const bridge = env.network.bridge;

    await t.step("ADD -> traffic with priority -> DEL round trip, nothing left", async () => {
      const name = "tsn-podman-1";
      const r = await timed("podman run -d", () =>
        p.runContainer({
          network: conflist.name,
          name,
          command: ["/bin/sleep", "3600"],
          extraArgs: ["-d", ...SENDER_PODMAN_ARGS],
        }));
      assert.equal(r.code, 0, r.stderr);
      const netns = (await p.podmanOk(["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", name]))
        .trim();
      assert.match(netns, /^\/run\/netns\/netns-[0-9a-f-]+$/);
      const addr = await p.podmanOk([
        "exec",
        name,
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "dev",
        "eth0",
      ]);
      const ip = addr.match(/inet (\d+\.\d+\.\d+\.\d+)\//)?.[1];
      assert.ok(ip, `no eth0 address in: ${addr}`);

      // ADD: one pod interface (admit and the saver), its entry under its host veth's
      // ifindex, the saver on its eth0, admit first on the host veth.
      const atts = node.podAttachments();
      assert.equal(atts.length, 1, JSON.stringify(atts));
      assert.equal(atts[0].ifname, "eth0");
      assert.equal(atts[0].pins.length, 2, JSON.stringify(atts[0].pins));
      const e = node.entryOf(atts[0].containerId!);
      assert.ok(e?.host, "no entry for the container");
      assert.equal(e.entry.policy.maxPriority, PRIORITY_MAX);
      assert.equal(node.entries().length, 1);
      assert.deepEqual(await bridgePorts(bridge), [e.host]);
      assert.equal(node.hostPrograms(e.host)[0], "tsnp_admit");
      assert.ok((await node.podEgressPrograms(netns)).includes("tsnp_save"), "saver missing");

      // Traffic: UDP 3 and TCP 5, to the far end and through the Service DNAT.
      const exec = async (argv: string[]) => {
        const x = await p.podman(["exec", name, ...argv]);
        assert.equal(x.code, 0, `${argv.join(" ")}: ${x.stderr}`);
      };
      for (const dst of [node.farIp, node.serviceIp]) {
        const u = await timed(
          `UDP x${UDP_COUNT} to ${dst}`,
          () =>
            node.measure(17, () =>
              exec(
                senderArgv({ dst, port: node.farPort, proto: "udp", count: UDP_COUNT, prio: 3 }),
              )),
        );
        assert.equal(u.fwdTotal, UDP_COUNT, `UDP to ${dst}: ${showPrios(u)}`);
        assert.equal(u.fwdPrio[3], UDP_COUNT, `UDP to ${dst}: ${showPrios(u)}`);
        const tc = await timed(
          `TCP 16x64KiB to ${dst}`,
          () =>
            node.measure(
              6,
              () => exec(senderArgv({ dst, port: node.farPort, proto: "tcp", count: 16, prio: 5 })),
            ),
        );
        assert.ok(tc.fwdTotal > 0, `TCP to ${dst}: nothing left the TSN veth`);
        assert.equal(tc.fwdPrio[5], tc.fwdTotal, `TCP to ${dst}: ${showPrios(tc)}`);
      }

      // DEL: podman stop of a --rm container tears the network down and removes it.
      await timed("podman stop (--rm)", () => p.podmanOk(["stop", "-t", "0", name]));
      await waitFor(
        "podman to remove the container",
        async () => (await p.podmanOk(["ps", "-aq"])).trim() === "" ? true : undefined,
        30_000,
        100,
      );
      await nothingLeft(node, p, bridge, netns);
    });

    await t.step(
      "podman run --rm, talker with SO_TXTIME as the command: restored, then nothing",
      async () => {
        const script = [
          'ip -4 -o addr show dev eth0 && "$@"',
          "sh",
          ...senderArgv({
            dst: node.serviceIp,
            port: node.farPort,
            proto: "udp",
            count: 100,
            prio: 4,
            txtime: "tai",
          }),
        ];
        let stdout = "";
        const c = await timed("podman run --rm (talker)", () =>
          node.measure(17, async () => {
            const r = await p.runContainer({
              network: conflist.name,
              name: "tsn-podman-2",
              command: ["/bin/sh", "-c", ...script],
              // SO_TXTIME with CLOCK_TAI needs CAP_NET_ADMIN (any clock but MONOTONIC).
              addCaps: ["NET_ADMIN"],
              extraArgs: SENDER_PODMAN_ARGS,
            });
            assert.equal(r.code, 0, r.stderr);
            stdout = r.stdout;
          }));
        assert.equal(c.fwdTotal, 100, showPrios(c));
        assert.equal(c.fwdPrio[4], 100, showPrios(c));
        assert.equal(c.tsOk, 100, showPrios(c));
        assert.match(stdout, /inet 10\.123\.\d+\.\d+\//);
        assert.deepEqual(node.podAttachments(), []);
        assert.deepEqual(node.entries(), []);
        assert.deepEqual(await node.saverLinks(), []);
        assert.deepEqual(await bridgePorts(bridge), []);
        assert.deepEqual(await p.leftoverMounts(), []);
      },
    );

    await t.step(
      "agentSocket: podman's plugin processes hand their verbs to the agent",
      async () => {
        await withAgentServer(async (socket, st) => {
          await p.addNetwork({
            ...conflist,
            plugins: [...env.conflist.plugins, node.entry({ agentSocket: socket })],
          });
          const c = await timed(
            "podman run --rm (talker, via the agent)",
            () =>
              node.measure(17, async () => {
                const r = await p.runContainer({
                  network: conflist.name,
                  name: "tsn-podman-agent",
                  command: senderArgv({
                    dst: node.farIp,
                    port: node.farPort,
                    proto: "udp",
                    count: 100,
                    prio: 2,
                  }),
                  extraArgs: SENDER_PODMAN_ARGS,
                });
                assert.equal(r.code, 0, r.stderr);
              }),
          );
          assert.equal(c.fwdPrio[2], 100, showPrios(c));
          assert.equal(st.served.ADD?.ok, 1, JSON.stringify(st));
          assert.ok((st.served.DEL?.ok ?? 0) >= 1, JSON.stringify(st));
          assert.deepEqual([st.declined, st.bad, st.served.DEL?.error], [0, 0, 0]);
          assert.deepEqual(node.podAttachments(), []);
          assert.deepEqual(node.entries(), []);
          assert.deepEqual(await bridgePorts(bridge), []);
        });
      },
    );

    await t.step("fixture stop, then the node's teardown, leave nothing behind", async () => {
      const problems = await p.stop();
      stopped = true;
      assert.deepEqual(problems, []);
      assert.equal(await exists(p.dir), false);
      assert.deepEqual(node.podAttachments(), []);
      assert.deepEqual(await node.cleanup(), []);
      assert.deepEqual(await node.leftovers(), []);
    });
  } finally {
    if (!stopped) await p.stop();
  }
});
