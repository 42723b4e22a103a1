/**
 * Regressions for what the CNI fuzzer (tests/fuzz/) found in the plugin's entry and protocol
 * code, each with the plugin run as a process the way runtimes run it. The fuzz seed and case
 * that found each are named; `deno run -A tests/fuzz/run.ts --seed=S --case=N` replays them.
 */
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
import { randomId } from "../lib/run.ts";

async function exists(p: string): Promise<boolean> {
  try {
    await Deno.lstat(p);
    return true;
  } catch {
    return false;
  }
}

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
      for (const f of files) assert.ok(await exists(f), `DEL deleted ${f}`);
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
      const hadRunDir = await exists("/run/tsnproxy");
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
