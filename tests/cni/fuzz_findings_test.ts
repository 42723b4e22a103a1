/**
 * Regressions for what the CNI fuzzer (tests/fuzz/) found in the plugin's entry and protocol
 * code, each with the plugin run as a process the way runtimes run it. The fuzz seed and case
 * that found each are named; `deno run -A tests/fuzz/run.ts --seed=S --case=N` replays them.
 */
import { lexists } from "../../src/util/fs.ts";
import assert from "node:assert/strict";
import {
  assertCniError,
  assertNothingFor,
  assertOk,
  cni,
  entry,
  prevResultFor,
  withNode,
  withPod,
} from "./helpers.ts";
import { randomId, run } from "../lib/run.ts";
import { MAPS, PinLayout } from "../../src/bpf/pins.ts";
import { DatapathMaps } from "../../src/bpf/maps.ts";
import { podCookie } from "../../src/bpf/pod.ts";
import { programsOn } from "../../src/bpf/hooks.ts";
import { ifNameToIndex } from "../../src/ffi/libc.ts";
import { NODE_DIRS } from "../../src/config/paths.ts";

Deno.test("DEL with an invalid entry never deletes files outside /sys/fs/bpf (fuzz seed 4 case 1394)", async () => {
  await withPod(async (pod) => {
    // An entry whose bpffs is outside the bpf filesystem is invalid; DEL still cleans up, but
    // must not take that directory as its pin root: pin-shaped files there are not ours.
    const dir = await Deno.makeTempDir({ prefix: "tsnp-decoy-" });
    try {
      await Deno.mkdir(`${dir}/pods`);
      const files = [
        `${dir}/pods/${pod.containerId}_eth0`,
        `${dir}/pods/${pod.containerId}_eth0@host`,
      ];
      for (const f of files) await Deno.writeTextFile(f, "not a pin\n");
      const r = await cni({
        command: "DEL",
        pod,
        stdin: { cniVersion: "1.0.0", name: "n", type: "tsnproxy", bpffs: dir },
      });
      assertOk(r);
      for (const f of files) assert.ok(lexists(f), `DEL deleted ${f}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
});

/** A unix socket that accepts and hangs up, counting connections. */
function deadAgent(path: string): { connections: () => number; close: () => void } {
  let n = 0;
  const l = Deno.listen({ transport: "unix", path });
  (async () => {
    try {
      for await (const c of l) {
        n++;
        c.close();
      }
    } catch { /* closed */ }
  })();
  return { connections: () => n, close: () => l.close() };
}

Deno.test("the plugin hands off only to an agentSocket under /run/tsnproxy/ (fuzz seed 3 case 37)", async () => {
  await withNode(async (node) => {
    await withPod(async (pod) => {
      const outsideDir = await Deno.makeTempDir({ prefix: "tsnp-sock-" });
      const insideDir = `/run/tsnproxy/test-${randomId(8)}`;
      const hadRunDir = lexists("/run/tsnproxy");
      await Deno.mkdir(insideDir, { recursive: true });
      const outside = deadAgent(`${outsideDir}/cni.sock`);
      const inside = deadAgent(`${insideDir}/cni.sock`);
      try {
        const conf = { ...entry(node), prevResult: prevResultFor(pod) };
        // Outside the node's directory: never connected to (the entry is then invalid).
        const r = await cni({
          command: "ADD",
          pod,
          stdin: { ...conf, agentSocket: `${outsideDir}/cni.sock` },
        });
        assertCniError(r, 7, /agentSocket/);
        assert.equal(outside.connections(), 0, "the plugin connected outside /run/tsnproxy/");
        assertNothingFor(node, pod);
        // Under it: handed off (the agent hangs up, so the plugin runs the verb itself).
        const ok = await cni({
          command: "ADD",
          pod,
          stdin: { ...conf, agentSocket: `${insideDir}/cni.sock` },
        });
        assertOk(ok);
        assert.equal(inside.connections(), 1);
        assertOk(
          await cni({
            command: "DEL",
            pod,
            stdin: { ...conf, agentSocket: `${insideDir}/cni.sock` },
          }),
        );
        assertNothingFor(node, pod);
      } finally {
        outside.close();
        inside.close();
        await Deno.remove(outsideDir, { recursive: true });
        await Deno.remove(insideDir, { recursive: true });
        if (!hadRunDir) await Deno.remove("/run/tsnproxy").catch(() => {});
      }
    });
  });
});

Deno.test("CNI_IFNAME longer than 15 bytes is an environment error, whatever its characters", async () => {
  await withNode(async (node) => {
    await withPod(async (pod) => {
      const conf = { ...entry(node), prevResult: prevResultFor(pod) };
      for (const ifname of ["éééééééé", "🦕🦕🦕🦕", "x".repeat(16)]) {
        const r = await cni({ command: "ADD", pod, env: { CNI_IFNAME: ifname }, stdin: conf });
        assertCniError(r, 4, /CNI_IFNAME/);
      }
      assertNothingFor(node, pod);
    });
  });
});

Deno.test("a prevResult interface name no interface can have is skipped (fuzz seed 4 case 657)", async () => {
  await withNode(async (node) => {
    await withPod(async (pod) => {
      const prev = prevResultFor(pod);
      const interfaces = prev.interfaces as Array<Record<string, unknown>>;
      interfaces[0] = { name: "x".repeat(65538), mac: "aa:bb:cc:00:00:01" };
      const conf = { ...entry(node), prevResult: prev };
      assertOk(await cni({ command: "ADD", pod, stdin: conf }));
      assertOk(await cni({ command: "CHECK", pod, stdin: conf }));
      assertOk(await cni({ command: "DEL", pod, stdin: conf }));
      assertNothingFor(node, pod);
    });
  });
});

Deno.test("a prevResult whose cniVersion is null is refused, never echoed (fuzz seed 555095885 case 2269)", async () => {
  await withNode(async (node) => {
    await withPod(async (pod) => {
      const conf = { ...entry(node), prevResult: { ...prevResultFor(pod), cniVersion: null } };
      assertCniError(await cni({ command: "ADD", pod, stdin: conf }), 1, /prevResult/);
      assertNothingFor(node, pod);
      // Without one it is the config's version, converted as such.
      const { cniVersion: _, ...bare } = prevResultFor(pod, "0.4.0");
      const r = await cni({ command: "ADD", pod, stdin: { ...entry(node), prevResult: bare } });
      assertOk(r);
      assert.equal(r.json?.cniVersion, "1.1.0");
      assertOk(await cni({ command: "DEL", pod, stdin: { ...entry(node), prevResult: bare } }));
      assertNothingFor(node, pod);
    });
  });
});

Deno.test("a DEL whose bpffs names the pin root's ABI directory never retires the datapath (fuzz seed 555095885 case 1183)", async () => {
  await withNode(async (node) => {
    await withPod(async (pod) => {
      assertOk(
        await cni({
          command: "ADD",
          pod,
          stdin: { ...entry(node), prevResult: prevResultFor(pod) },
        }),
      );
      // <root>/v2 has maps/, progs/ and node/ as release 0.1.0's root had: refused as a root.
      const r = await cni({
        command: "DEL",
        pod,
        stdin: { ...entry(node), bpffs: `${node.bpffs}/v2` },
      });
      assertOk(r); // DEL cleans up with the default root instead: nothing of this node's
      const pins = new PinLayout(node.bpffs);
      for (const m of MAPS) assert.ok(lexists(pins.map(m)), `${m} still pinned`);
      for (const role of ["save", "admit", "restore"] as const) {
        assert.ok(lexists(pins.prog(role)), `${role} still pinned`);
      }
      const add = await cni({
        command: "ADD",
        pod,
        stdin: { ...entry(node), bpffs: `${node.bpffs}/v2`, prevResult: prevResultFor(pod) },
      });
      assertCniError(add, 7, /names a directory inside a pin root/);
      assertOk(await cni({ command: "DEL", pod, stdin: entry(node) }));
      assertNothingFor(node, pod);
    });
  });
});

Deno.test("a prevResult naming another pod's host veth never attaches to that pod (fuzz seed 555095885 case 591)", async () => {
  await withNode(async (node) => {
    await withPod(async (a) => {
      await withPod(async (b) => {
        assertOk(
          await cni({
            command: "ADD",
            pod: b,
            stdin: { ...entry(node), prevResult: prevResultFor(b) },
          }),
        );
        // a's ADD with b's interfaces in its prevResult: a's own host side is what counts.
        assertOk(
          await cni({
            command: "ADD",
            pod: a,
            stdin: { ...entry(node), prevResult: prevResultFor(b) },
          }),
        );
        const maps = DatapathMaps.open(node.bpffs);
        try {
          assert.equal(maps.getPod(ifNameToIndex(a.hostVeth))?.cookie, podCookie(a.containerId));
          assert.equal(maps.getPod(ifNameToIndex(b.hostVeth))?.cookie, podCookie(b.containerId));
        } finally {
          maps.close();
        }
        assertOk(await cni({ command: "DEL", pod: a, stdin: entry(node) }));
        assertOk(
          await cni({
            command: "CHECK",
            pod: b,
            stdin: { ...entry(node), prevResult: prevResultFor(b) },
          }),
        );
        assertOk(await cni({ command: "DEL", pod: b, stdin: entry(node) }));
        assertNothingFor(node, a);
        assertNothingFor(node, b);
      });
    });
  });
});

Deno.test("a DEL whose CNI_NETNS is another pod's namespace leaves that pod's saver (fuzz seed 555095885 case 363)", async () => {
  await withNode(async (node) => {
    await withPod(async (a) => {
      await withPod(async (b) => {
        const conf = (p: typeof a) => ({
          ...entry(node, { attachMode: "clsact" }),
          prevResult: prevResultFor(p),
        });
        assertOk(await cni({ command: "ADD", pod: a, stdin: conf(a) }));
        assertOk(await cni({ command: "ADD", pod: b, stdin: conf(b) }));
        assertOk(
          await cni({ command: "DEL", pod: a, stdin: conf(a), env: { CNI_NETNS: b.netns } }),
        );
        const savers = programsOn("eth0", "egress", { netns: b.netns }).map((p) => p.name);
        assert.deepEqual(savers, ["tsnp_save"], "b's saver is still attached");
        assertOk(await cni({ command: "CHECK", pod: b, stdin: conf(b) }));
        assertOk(await cni({ command: "DEL", pod: b, stdin: conf(b) }));
      });
    });
  });
});

Deno.test("a logFile that is a FIFO is not written: the plugin never blocks on it (fuzz seed 20261204 case 171)", async () => {
  const dir = nodeLogDir();
  const fifo = `${dir}/plugin.log`;
  await run(["mkfifo", fifo]);
  try {
    await withNode(async (node) => {
      await withPod(async (pod) => {
        let hung = false;
        // Bounded: if the plugin blocked on the FIFO, a reader after 20 s lets it finish.
        const guard = setTimeout(() => {
          hung = true;
          Deno.open(fifo, { read: true }).then((f) => f.close(), () => {});
        }, 20_000);
        const r = await cni({
          command: "ADD",
          pod,
          stdin: { ...entry(node), logFile: fifo, prevResult: prevResultFor(pod) },
        });
        clearTimeout(guard);
        assert.equal(hung, false, "the plugin waited for a reader of its log FIFO");
        assertOk(r);
        assertOk(await cni({ command: "DEL", pod, stdin: { ...entry(node), logFile: fifo } }));
      });
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A fresh directory under /var/log/tsnproxy/ (the node's log directory). */
function nodeLogDir(): string {
  const dir = `${NODE_DIRS.logFile}fifo-${randomId(8)}`;
  Deno.mkdirSync(dir, { recursive: true });
  return dir;
}
