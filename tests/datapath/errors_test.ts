/**
 * Bad input to the datapath layer: each failure is one clear line naming the problem and
 * the fix, and leaves nothing attached or pinned.
 */
import assert from "node:assert/strict";
import { attach } from "../../src/bpf/attach.ts";
import { loadDatapath } from "../../src/bpf/loader.ts";
import { attachPod } from "../../src/bpf/pod.ts";
import { NO_CLAMP } from "../../src/bpf/maps.ts";
import { setupNode, teardownNode } from "../../src/bpf/node.ts";
import { objGetRequired } from "../../src/bpf/sys.ts";
import { PinLayout } from "../../src/bpf/pins.ts";
import { NotFoundError } from "../../src/errors.ts";
import { randomId, run } from "../lib/run.ts";
import { thrown } from "../lib/thrown.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const config = {
  maxAgeNs: 1_000_000_000n,
  gcIntervalNs: 1_000_000_000n,
  defaultPolicy: { podCookie: 0n, maxPriority: NO_CLAMP },
};

function listTree(dir: string): string[] {
  const out: string[] = [];
  try {
    for (const e of Deno.readDirSync(dir)) {
      out.push(e.name);
      if (e.isDirectory) out.push(...listTree(`${dir}/${e.name}`).map((n) => `${e.name}/${n}`));
    }
  } catch {
    // absent
  }
  return out.sort();
}

Deno.test(
  { name: "errors: a missing libbpf names the package and the override", ...opts },
  async () => {
    const script = `
    import { loadDatapath } from "${new URL("../../src/bpf/loader.ts", import.meta.url).href}";
    import { asTsnproxyError } from "${new URL("../../src/errors.ts", import.meta.url).href}";
    try { loadDatapath({ bpffs: "/sys/fs/bpf/tsnp-nolib", mapEntries: 1024 }); }
    catch (e) { console.log(asTsnproxyError(e).oneLine()); Deno.exit(3); }`;
    const r = await run([Deno.execPath(), "eval", script], {
      env: { TSNPROXY_LIBBPF: "/nonexistent/libbpf.so.1" },
      allowFail: true,
    });
    assert.equal(r.code, 3);
    const line = r.stdout.trim();
    assert.equal(line.split("\n").length, 1, line);
    assert.match(line, /cannot load libbpf/);
    assert.match(line, /TSNPROXY_LIBBPF=\/nonexistent\/libbpf\.so\.1/);
    assert.deepEqual(listTree("/sys/fs/bpf/tsnp-nolib"), []);
  },
);

Deno.test({ name: "errors: a pin root off bpffs says how to mount it", ...opts }, () => {
  const root = `/tmp/tsnp-notbpf-${randomId()}`;
  const err = thrown(() => loadDatapath({ bpffs: root, mapEntries: 1024 }));
  assert.ok(err instanceof NotFoundError);
  assert.match(err.message, /not on a bpf filesystem/);
  assert.match(err.hint, /mount -t bpf bpf \/sys\/fs\/bpf/);
  assert.deepEqual(listTree(root), []);
});

Deno.test(
  { name: "errors: not installed, unknown interface, missing netns", ...opts },
  async (t) => {
    const bpffs = `/sys/fs/bpf/tsnp-test-err-${randomId()}`;
    const pod = `tn-err-${randomId()}`;
    await t.step("nothing pinned yet: the CNI path says to run install", () => {
      const err = thrown(() => objGetRequired(new PinLayout(bpffs).prog("save")));
      assert.match(err.oneLine(), /not installed.*tsnproxy install/);
    });
    setupNode({ bpffs, mapEntries: 1024, restoreAt: "tsn-egress", api: "tcx", config });
    const before = listTree(bpffs);
    await run(["ip", "netns", "add", pod]);
    try {
      await t.step("unknown TSN interface", () => {
        const err = thrown(() =>
          setupNode({
            bpffs,
            mapEntries: 1024,
            tsnInterface: "tsn-nope",
            restoreAt: "tsn-egress",
            api: "tcx",
            config,
          })
        );
        assert.match(err.message, /interface tsn-nope does not exist/);
        assert.match(err.hint, /--tsn-interface/);
        assert.deepEqual(listTree(bpffs), before);
      });
      for (const api of ["tcx", "clsact"] as const) {
        await t.step(`unknown pod interface (${api})`, () => {
          const err = thrown(() =>
            attachPod({
              bpffs,
              containerId: "c1",
              ifname: "eth9",
              netns: `/run/netns/${pod}`,
              api,
              ips: ["10.9.9.9"],
              policy: { maxPriority: NO_CLAMP },
            })
          );
          assert.match(err.oneLine(), /interface eth9 does not exist in network namespace/);
          assert.deepEqual(listTree(bpffs), before, "no pin and no policy left behind");
        });
      }
      await t.step("netns path that does not exist", () => {
        const err = thrown(() =>
          attach({
            progFd: -1,
            ifname: "eth0",
            direction: "egress",
            api: "tcx",
            netns: "/run/netns/nope-404",
            pin: `${bpffs}/pods/x`,
            first: true,
          })
        );
        assert.match(err.message, /cannot open network namespace \/run\/netns\/nope-404/);
        assert.match(err.hint, /CNI_NETNS/);
        assert.deepEqual(listTree(bpffs), before);
      });
    } finally {
      await run(["ip", "netns", "del", pod], { allowFail: true });
      teardownNode(bpffs);
    }
    assert.deepEqual(listTree(bpffs), []);
  },
);
