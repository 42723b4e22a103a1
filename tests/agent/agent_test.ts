/**
 * `tsnproxy agent` as the DaemonSet runs it, on the real kernel: the conflist entry comes
 * back after the primary CNI rewrites its file, the restorer comes back after the TSN
 * interface is deleted and re-created, /metrics serves the counters, and SIGTERM exits 0
 * leaving the datapath attached.
 */
import assert from "node:assert/strict";
import { restorerAttached } from "../../src/bpf/node.ts";
import { parseCniCacheEntry } from "../../src/agent/pods.ts";
import { parseListenAddress } from "../../src/agent/command.ts";
import { escapeLabel, snake } from "../../src/agent/metrics.ts";
import { type Child, run } from "../lib/run.ts";
import {
  addTsn,
  createNode,
  destroyNode,
  FIXTURES,
  spawnAgent,
  tsnproxy,
} from "../install/_node.ts";
import { logLines } from "../lib/logs.ts";
import { freePort, until } from "../lib/wait.ts";

async function get(url: string): Promise<{ status: number; text: string } | undefined> {
  try {
    const r = await fetch(url);
    return { status: r.status, text: await r.text() };
  } catch {
    return undefined;
  }
}

for (const api of ["tcx", "clsact"] as const) {
  Deno.test(`agent (${api}): re-injects, re-attaches, serves metrics, SIGTERM keeps the datapath`, async () => {
    const node = await createNode();
    const results = `${node.dir}/results`;
    await Deno.mkdir(results);
    let agent: Child | undefined;
    try {
      const inst = await tsnproxy(node, "install", "--attach-mode", api);
      assert.equal(inst.code, 0, inst.stderr);
      // A pod the runtime set up: libcni's cache names it.
      const cid = "c0ffee" + "0".repeat(58);
      await Deno.mkdir(`${node.bpffs}/pods`, { recursive: true });
      await Deno.writeTextFile(
        `${results}/dbnet-${cid}-eth0`,
        JSON.stringify({
          kind: "cniCacheV1",
          containerId: cid,
          ifName: "eth0",
          networkName: "dbnet",
          cniArgs: [["K8S_POD_NAMESPACE", "tsn"], ["K8S_POD_NAME", "talker-0"]],
        }),
      );
      const port = freePort();
      const base = `http://127.0.0.1:${port}`;
      agent = spawnAgent(node, {
        port,
        reconcileSeconds: 3,
        extra: ["--attach-mode", api, "--cni-results-dir", results],
      });
      await until("/healthz", async () => (await get(`${base}/healthz`))?.status === 200);

      // The primary CNI rewrites its conflist without our entry (rename, like most do).
      const conflist = `${node.confDir}/10-bridge.conflist`;
      const pristine = await Deno.readTextFile(`${FIXTURES}bridge/10-bridge.conflist`);
      await Deno.writeTextFile(`${conflist}.new`, pristine);
      await Deno.rename(`${conflist}.new`, conflist);
      // Within a few reconcile periods (3 s each): until() fails the test past its deadline.
      await until(
        "the entry to come back",
        async () => (await Deno.readTextFile(conflist)).includes('"type": "tsnproxy"'),
        5000,
      );
      JSON.parse(await Deno.readTextFile(conflist));

      // The TSN interface goes away and comes back with a new ifindex.
      await run(["ip", "link", "del", node.tsn]);
      await addTsn(node);
      await until(
        "the restorer to be re-attached",
        () => restorerAttached(node.bpffs, node.tsn) !== undefined,
        6000,
      );
      if (api === "clsact") {
        const q = (await run(["tc", "qdisc", "show", "dev", node.tsn])).stdout;
        assert.match(q, /clsact/);
      }

      const m = await get(`${base}/metrics`);
      assert.equal(m?.status, 200);
      const text = m?.text ?? "";
      for (
        const needle of [
          /^tsnproxy_admitted_total \d+$/m,
          /^tsnproxy_tagged_total \d+$/m,
          /^tsnproxy_staged_total \d+$/m,
          /^tsnproxy_restored_tag_total \d+$/m,
          /^tsnproxy_restored_stage_total \d+$/m,
          /^tsnproxy_pods\{carrier="tag"\} \d+$/m,
          /^tsnproxy_legacy_pods 0$/m,
          /^tsnproxy_up 1$/m,
          new RegExp(`^tsnproxy_restorer_attached\\{interface="${node.tsn}"\\} 1$`, "m"),
          /^tsnproxy_build_info\{version="[^"]+",bpf_objects="[0-9a-f]{12}",.*\} 1$/m,
          /^tsnproxy_agent_conflist_reinjections_total [1-9]\d*$/m,
          /^tsnproxy_agent_restorer_reattachments_total [1-9]\d*$/m,
        ]
      ) assert.match(text, needle);
      // No pod identity unless metrics.podLabels opts in (docs/metrics.md).
      assert.doesNotMatch(text, /tsnproxy_pod_admitted_total|tsnproxy_pod_carrier|talker-0|c0ffee/);

      const out = await agent.stop("SIGTERM");
      const err = out.stderr;
      assert.equal(out.code, 0, err);
      agent = undefined;
      assert.ok(restorerAttached(node.bpffs, node.tsn), "SIGTERM must not detach the restorer");
      logLines(err); // structured logs only: every line parses with the schema
      assert.match(err, /"msg":"conflist entry re-injected"/);
      assert.match(err, /"msg":"restorer re-attached"/);
    } finally {
      await agent?.stop();
      await destroyNode(node);
    }
  });
}

Deno.test("agent: libcni cache entries name pods; metrics helpers", () => {
  const id = parseCniCacheEntry(JSON.stringify({
    kind: "cniCacheV1",
    containerId: "abc",
    ifName: "eth0",
    cniArgs: [["IgnoreUnknown", "1"], ["K8S_POD_NAMESPACE", "ns"], ["K8S_POD_NAME", "p"]],
  }));
  assert.deepEqual(id, { containerId: "abc", ifname: "eth0", namespace: "ns", name: "p" });
  assert.equal(parseCniCacheEntry("{"), undefined);
  assert.equal(parseCniCacheEntry("{}"), undefined);
  assert.equal(snake("restoredTstamp"), "restored_tstamp");
  assert.equal(escapeLabel('a"b\\c\nd'), 'a\\"b\\\\c\\nd');
  assert.deepEqual(parseListenAddress("0.0.0.0:9489"), { hostname: "0.0.0.0", port: 9489 });
  assert.deepEqual(parseListenAddress("[::1]:80"), { hostname: "::1", port: 80 });
  assert.deepEqual(parseListenAddress(":80"), { hostname: "0.0.0.0", port: 80 });
});
