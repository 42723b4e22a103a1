/**
 * The two forms of the CNI code under `deno run` (src/cni/entry.ts): the bundle while it is
 * fresh, the modules otherwise. Both must answer every verb identically; a source edited after
 * bundling must send the plugin back to the modules.
 */
import assert from "node:assert/strict";
import {
  assertNothingFor,
  assertOk,
  cni,
  entry,
  prevResultFor,
  withNode,
  withPod,
} from "./helpers.ts";
import { podPins } from "../../src/bpf/pod.ts";
import { run } from "../lib/run.ts";
import { nodeLogFile, removeNodePath } from "../lib/node_dirs.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

async function bundle(): Promise<void> {
  await run([Deno.execPath(), "run", "-A", `${ROOT}scripts/bundle_cni.ts`]);
}

/** The entry and reason of each "done" line the plugin logged since `from`. */
function doneLines(
  logFile: string,
  from: number,
): Array<{ command: string; entry: string; modulesBecause?: string }> {
  return Deno.readTextFileSync(logFile).slice(from).trim().split("\n")
    .map((l) => JSON.parse(l))
    .filter((l) => l.msg === "done");
}

Deno.test("the bundle and the modules run ADD, CHECK, DEL alike", async () => {
  await bundle();
  const logFile = nodeLogFile("entry"); // an entry's logFile must be under /var/log/tsnproxy/
  try {
    await withNode(async (node) => {
      await withPod(async (pod) => {
        const conf = {
          ...entry(node, { logLevel: "debug", logFile }),
          prevResult: prevResultFor(pod),
        };
        const outputs: Record<string, string[]> = {};
        for (const form of ["bundle", "modules"] as const) {
          const env = form === "modules" ? { TSNPROXY_CNI_BUNDLE: "0" } : {};
          const from = Deno.statSync(logFile).size;
          const out: string[] = [];
          for (const command of ["ADD", "CHECK", "DEL"]) {
            const r = await cni({ command, pod, stdin: conf, env });
            assertOk(r);
            out.push(r.stdout);
            if (command === "ADD") {
              // admit on the host veth and the saver in the pod
              assert.equal(podPins(node.bpffs, pod.containerId, pod.ifname).length, 2);
            }
          }
          assertNothingFor(node, pod);
          outputs[form] = out;
          const done = doneLines(logFile, from);
          assert.deepEqual(done.map((l) => [l.command, l.entry]), [
            ["ADD", form],
            ["CHECK", form],
            ["DEL", form],
          ]);
          if (form === "modules") assert.equal(done[0].modulesBecause, "TSNPROXY_CNI_BUNDLE=0");
        }
        assert.deepEqual(outputs.bundle, outputs.modules);
      });
    });
  } finally {
    removeNodePath(logFile);
  }
});

Deno.test("a source edited after bundling sends the plugin back to the modules", async () => {
  await bundle();
  const logFile = nodeLogFile("entry"); // an entry's logFile must be under /var/log/tsnproxy/
  const source = `${ROOT}src/cni/protocol.ts`;
  const st = Deno.statSync(source);
  const status = async () => {
    const from = Deno.statSync(logFile).size;
    await withNode(async (node) => {
      assertOk(
        await cni({ command: "STATUS", stdin: entry(node, { logLevel: "debug", logFile }) }),
      );
    });
    const [done] = doneLines(logFile, from);
    return { entry: done.entry, because: done.modulesBecause };
  };
  try {
    assert.deepEqual(await status(), { entry: "bundle", because: undefined });
    const later = new Date(st.mtime!.getTime() + 2000);
    Deno.utimeSync(source, st.atime ?? later, later);
    assert.deepEqual(await status(), { entry: "modules", because: "src/cni/protocol.ts changed" });
    // Back to the stamped time: the bundle is what the sources give again.
    Deno.utimeSync(source, st.atime ?? st.mtime!, st.mtime!);
    assert.deepEqual(await status(), { entry: "bundle", because: undefined });
  } finally {
    Deno.utimeSync(source, st.atime ?? st.mtime!, st.mtime!);
    removeNodePath(logFile);
  }
});
