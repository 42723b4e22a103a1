/**
 * Bad input to the datapath layer: each failure is one clear line naming the problem and
 * the fix, and leaves nothing attached or pinned.
 */
import assert from "node:assert/strict";
import { attach, queryTcx } from "../../src/bpf/attach.ts";
import { loadDatapath } from "../../src/bpf/loader.ts";
import { attachPodPrograms, type HostSide } from "../../src/bpf/pod.ts";
import { attachRestorer } from "../../src/bpf/node.ts";
import { objGetRequired } from "../../src/bpf/sys.ts";
import { PinLayout } from "../../src/bpf/pins.ts";
import { parseNodeConfig } from "../../src/config/node.ts";
import { ifNameToIndex } from "../../src/ffi/libc.ts";
import { NotFoundError } from "../../src/errors.ts";
import { randomId, run } from "../lib/run.ts";
import { addVeth, deleteLink, Netns } from "../lib/netns.ts";
import { thrown } from "../lib/thrown.ts";
import { setUpNode, tearDownNode } from "../lib/node.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

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
    try { loadDatapath({ bpffs: "/sys/fs/bpf/tsnp-nolib" }); }
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
  // The node config refuses it outright (pin roots live under /sys/fs/bpf/)...
  const cfg = thrown(() => parseNodeConfig(`bpffs: ${root}\n`, "node.yaml"));
  assert.match(cfg.message, /bpffs/);
  assert.match(cfg.message, /outside \/sys\/fs\/bpf\//);
  // ...and the loader, which --bpffs and the agent reach too, checks the filesystem itself.
  const err = thrown(() => loadDatapath({ bpffs: root }));
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
    const hostVeth = `ve${randomId()}`;
    await t.step("nothing pinned yet: the CNI path says to run install", () => {
      const err = thrown(() => objGetRequired(new PinLayout(bpffs).prog("save")));
      assert.match(err.oneLine(), /not installed.*tsnproxy install/);
    });
    setUpNode({ bpffs, api: "tcx" });
    const before = listTree(bpffs);
    assert.ok(before.includes("v2/progs/tsnp_admit"), before.join(" "));
    const ns = await Netns.create({ name: pod, lo: false });
    try {
      await addVeth(hostVeth, { name: "eth0", netns: ns }, { up: false });
      const host: HostSide = { name: hostVeth, index: ifNameToIndex(hostVeth), kind: "veth" };
      await t.step("unknown TSN interface", () => {
        const err = thrown(() => attachRestorer(bpffs, "tsn-nope", "tcx"));
        assert.match(err.message, /interface tsn-nope does not exist/);
        assert.match(err.hint, /--tsn-interface/);
        assert.deepEqual(listTree(bpffs), before);
      });
      for (const api of ["tcx", "clsact"] as const) {
        const req = {
          bpffs,
          containerId: "c1",
          ifname: "eth9",
          netns: `/run/netns/${pod}`,
          api,
          host,
          hostApi: api,
        };
        await t.step(`unknown pod interface (${api}): admit is undone too`, () => {
          const err = thrown(() => attachPodPrograms(req));
          assert.match(err.oneLine(), /interface eth9 does not exist in network namespace/);
          assert.deepEqual(listTree(bpffs), before, "no pin left behind");
          assert.deepEqual(queryTcx(hostVeth, "ingress"), [], "admit detached again");
        });
        await t.step(`unknown host interface (${api})`, () => {
          const gone: HostSide = { name: "hv-nope", index: 999999, kind: "veth" };
          const err = thrown(() => attachPodPrograms({ ...req, ifname: "eth0", host: gone }));
          assert.match(err.oneLine(), /interface hv-nope does not exist/);
          assert.deepEqual(listTree(bpffs), before, "no pin left behind");
          assert.deepEqual(queryTcx("eth0", "egress", `/run/netns/${pod}`), []);
        });
      }
      const tc = await run(["tc", "filter", "show", "dev", hostVeth, "ingress"]);
      assert.doesNotMatch(tc.stdout, /tsnp/, "no clsact admit filter left");
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
      await deleteLink(hostVeth);
      await ns.delete();
      tearDownNode({ bpffs });
    }
    assert.deepEqual(listTree(bpffs), []);
  },
);
