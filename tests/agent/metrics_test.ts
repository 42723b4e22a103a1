/**
 * Metrics as documented and served: docs/metrics.md lists exactly FAMILIES (src/agent/metrics.ts),
 * every family has one label set and escaped HELP, the example alert rules and dashboard name
 * only families the code exposes and pass `promtool check rules` / `promtool test rules`, a
 * running agent's real /metrics passes `promtool check metrics` and shows every family, and N
 * scrapes read libcni's result cache once, not N times (counted in the production ResultCache).
 */
import assert from "node:assert/strict";
import {
  type AgentStats,
  escapeHelp,
  Exposition,
  FAMILIES,
  MetricsEndpoint,
  renderMetrics,
} from "../../src/agent/metrics.ts";
import { ResultCache } from "../../src/agent/pods.ts";
import { podPins } from "../../src/bpf/pod.ts";
import { createNode, destroyNode, spawnAgent, tsnproxy } from "../install/_node.ts";
import {
  assertOk,
  cni,
  createPod,
  deletePod,
  prevResultFor,
  type TestPod,
} from "../cni/helpers.ts";
import { freePort, until } from "../lib/wait.ts";
import { installedEntry } from "./_agent.ts";
import { type Child, installed, run } from "../lib/run.ts";
import { nodeSocketDir, removeNodePath } from "../lib/node_dirs.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const MONITORING = `${ROOT}deploy/monitoring/`;

async function promtoolMissing(): Promise<string | false> {
  if (await installed("promtool")) return false;
  const why = "promtool is not installed (apt-get install prometheus; scripts/setup.sh does)";
  console.log(`ignored: ${why}`);
  return why;
}
const NO_PROMTOOL = await promtoolMissing();

async function promtool(args: string[], stdin?: string): Promise<{ code: number; out: string }> {
  const r = await run(["promtool", ...args], { cwd: MONITORING, stdin, allowFail: true });
  return { code: r.code, out: r.stdout + r.stderr };
}

/** The families table of docs/metrics.md: name -> [type, labels, when]. */
function documentedFamilies(): Map<string, [string, string[], string]> {
  const text = Deno.readTextFileSync(`${ROOT}docs/metrics.md`);
  const out = new Map<string, [string, string[], string]>();
  for (const line of text.split("\n")) {
    const cells = line.split("|").map((c) => c.trim());
    const name = /^`(tsnproxy_\w+)`$/.exec(cells[1] ?? "")?.[1];
    if (!name || cells.length < 6) continue;
    assert.ok(!out.has(name), `docs/metrics.md lists ${name} twice`);
    const labels = [...cells[3].matchAll(/`(\w+)`/g)].map((l) => l[1]);
    out.set(name, [cells[2], labels, cells[4]]);
  }
  return out;
}

Deno.test("metrics: docs/metrics.md documents exactly the families the code exposes", () => {
  const docs = documentedFamilies();
  const code = new Map(FAMILIES.map((f) => [f.name, [f.type, [...f.labels], f.when]]));
  const undocumented = [...code.keys()].filter((n) => !docs.has(n));
  const stale = [...docs.keys()].filter((n) => !code.has(n));
  assert.deepEqual(undocumented, [], "families missing from docs/metrics.md");
  assert.deepEqual(stale, [], "docs/metrics.md lists families the code does not expose");
  for (const [name, want] of code) assert.deepEqual(docs.get(name), want, `${name} in the docs`);
});

Deno.test("metrics: one label set per family, HELP escaped, names valid", () => {
  for (const f of FAMILIES) {
    assert.match(f.name, /^tsnproxy_[a-z][a-z0-9_]*$/);
    if (f.type === "counter") assert.match(f.name, /_total$/, `${f.name}: counters end in _total`);
    for (const l of f.labels) assert.match(l, /^[a-z][a-z0-9_]*$/);
  }
  assert.equal(escapeHelp("a\\b\nc"), "a\\\\b\\nc");
  const e = new Exposition();
  assert.throws(() => e.add("tsnproxy_nope", []), /not in FAMILIES/);
  assert.throws(
    () => e.add("tsnproxy_agent_reconciles_total", [[{ result: "ok", extra: "x" }, 1]]),
    /takes labels \{result\}/,
  );
  const e2 = new Exposition().add("tsnproxy_agent_cni_requests_total", [
    [{ command: "ADD", result: "ok" }, 1],
    [{ command: 'a"b\\c\nd', result: "error" }, 2],
  ]);
  assert.throws(() => e2.add("tsnproxy_agent_cni_requests_total", []), /written twice/);
  assert.match(e2.text(), /^tsnproxy_agent_cni_requests_total\{command="a\\"b\\\\c\\nd",/m);
});

Deno.test("metrics: readiness per condition and the CNI socket's counts are rendered", () => {
  const text = renderMetrics({
    bpffs: "/sys/fs/bpf/tsnp-test-absent",
    stats: {
      ...stats(),
      installed: false,
      readiness: [{ name: "datapath.pinned", ok: false }, { name: "cni.binary", ok: true }],
      cni: {
        served: { ADD: { ok: 7, error: 1 } },
        declined: 1,
        bad: 2,
        expired: 3,
        busy: 4,
        abandoned: 5,
        open: 6,
      },
    },
    agentSocket: true,
  });
  for (
    const line of [
      'tsnproxy_agent_ready{condition="datapath.pinned"} 0',
      'tsnproxy_agent_ready{condition="cni.binary"} 1',
      'tsnproxy_agent_cni_requests_total{command="ADD",result="ok"} 7',
      'tsnproxy_agent_cni_requests_total{command="",result="declined"} 1',
      'tsnproxy_agent_cni_requests_total{command="",result="bad_request"} 2',
      'tsnproxy_agent_cni_requests_total{command="",result="expired"} 3',
      'tsnproxy_agent_cni_requests_total{command="",result="busy"} 4',
      'tsnproxy_agent_cni_requests_total{command="",result="abandoned"} 5',
      "tsnproxy_agent_cni_connections 6",
    ]
  ) assert.ok(text.split("\n").includes(line), `${line} in:\n${text}`);
});

/** Every tsnproxy_* name in a file is a family the code exposes. */
function assertKnownNames(file: string) {
  const names = new Set(FAMILIES.map((f) => f.name));
  const text = Deno.readTextFileSync(`${MONITORING}${file}`);
  const used = new Set([...text.matchAll(/\btsnproxy_[a-z0-9_]+/g)].map((m) => m[0]));
  assert.ok(used.size > 5, `${file} names metrics`);
  assert.deepEqual([...used].filter((n) => !names.has(n)), [], `${file}: unknown metrics`);
}

Deno.test("metrics: the example dashboard and alert rules name only exposed families", () => {
  assertKnownNames("tsnproxy-alerts.yaml");
  assertKnownNames("tsnproxy-alerts.test.yaml");
  assertKnownNames("tsnproxy-dashboard.json");
  const dash = JSON.parse(Deno.readTextFileSync(`${MONITORING}tsnproxy-dashboard.json`));
  assert.ok(dash.panels.length > 0);
  for (const p of dash.panels) {
    assert.ok(p.targets.length > 0 && p.targets.every((t: { expr: string }) => t.expr));
  }
});

Deno.test({
  name: "metrics: promtool check rules and test rules on the example alerts",
  ignore: NO_PROMTOOL !== false,
  fn: async () => {
    const check = await promtool(["check", "rules", "tsnproxy-alerts.yaml"]);
    assert.equal(check.code, 0, check.out);
    assert.match(check.out, /SUCCESS: 12 rules found/);
    const test = await promtool(["test", "rules", "tsnproxy-alerts.test.yaml"]);
    assert.equal(test.code, 0, test.out);
    assert.match(test.out, /SUCCESS/);
  },
});

Deno.test("metrics: N scrapes read libcni's result cache once (production ResultCache)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tsnp-results-" });
  // The directory's mtime must be old enough to trust (see RACY_MTIME_MS): a clock ahead.
  let now = Date.now() + 60_000;
  const cache = new ResultCache(dir, () => now);
  const entry = (cid: string, pod: string) =>
    JSON.stringify({
      kind: "cniCacheV1",
      containerId: cid,
      ifName: "eth0",
      cniArgs: [["K8S_POD_NAMESPACE", "tsn"], ["K8S_POD_NAME", pod]],
    });
  try {
    for (let i = 0; i < 20; i++) {
      Deno.writeTextFileSync(`${dir}/net-c${i}-eth0`, entry(`c${i}`, `p${i}`));
    }
    Deno.writeTextFileSync(`${dir}/junk`, "not json");
    for (let i = 0; i < 50; i++) assert.equal(cache.byContainerId().size, 20);
    // 21 files read once each, plus the junk one retried twice more (a file half written by
    // the runtime gets three tries); listed again only while something was left to read.
    assert.equal(cache.stats.filesRead, 23);
    assert.equal(cache.stats.listings, 3);

    // A pod added: only its file is read; a pod removed: forgotten without reading anything.
    // While the directory's mtime is as recent as the clock (a later change could share its
    // tick) it is listed at every refresh, but no file is read twice.
    await new Promise((r) => setTimeout(r, 20)); // a new directory mtime
    Deno.writeTextFileSync(`${dir}/net-c20-eth0`, entry("c20", "p20"));
    Deno.removeSync(`${dir}/net-c0-eth0`);
    now = Deno.statSync(dir).mtime!.getTime();
    const check = () => {
      const ids = cache.byContainerId();
      assert.equal(ids.get("c20")?.name, "p20");
      assert.equal(ids.has("c0"), false);
      assert.equal(ids.size, 20);
    };
    for (let i = 0; i < 5; i++) check();
    assert.equal(cache.stats.filesRead, 24);
    assert.equal(cache.stats.listings, 8);
    now += 60_000;
    for (let i = 0; i < 50; i++) check();
    assert.equal(cache.stats.filesRead, 24);
    assert.equal(cache.stats.listings, 9);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

const stats = (): AgentStats => ({
  reconciles: { ok: 0, error: 0 },
  conflistReinjected: 0,
  restorerReattached: 0,
  restorers: { tsn0: true },
  installed: true,
  startedAt: Date.now(),
  readiness: [],
});

Deno.test({
  name: "metrics: a running agent's /metrics passes promtool; scrapes do not re-read the cache",
  ignore: NO_PROMTOOL !== false,
  fn: async () => {
    // An entry's agentSocket must be under /run/tsnproxy/.
    const run = nodeSocketDir("tsnp-metrics");
    const socket = `${run}/cni.sock`;
    const node = await createNode({
      config: `qdisc:\n  kind: keep\ncni:\n  agentSocket: ${socket}\nmetrics:\n  podLabels: true\n`,
    });
    const results = `${node.dir}/results`;
    Deno.mkdirSync(results);
    let pod: TestPod | undefined;
    let agent: Child | undefined;
    try {
      const inst = await tsnproxy(node, "install");
      assert.equal(inst.code, 0, inst.stderr);
      pod = await createPod();
      const conf = { ...installedEntry(node), prevResult: prevResultFor(pod) };
      assertOk(await cni({ command: "ADD", pod, stdin: { ...conf, agentSocket: undefined } }));
      // admit on the host side and the saver in the pod
      assert.equal(podPins(node.bpffs, pod.containerId, pod.ifname).length, 2);
      // What libcni writes after the chain's ADD, plus another network's pod on this node.
      const cacheEntry = (cid: string, name: string) =>
        JSON.stringify({
          kind: "cniCacheV1",
          containerId: cid,
          ifName: "eth0",
          networkName: "dbnet",
          cniArgs: [["K8S_POD_NAMESPACE", "tsn"], ["K8S_POD_NAME", name]],
        });
      Deno.writeTextFileSync(
        `${results}/dbnet-${pod.containerId}-eth0`,
        cacheEntry(pod.containerId, "talker-0"),
      );
      Deno.writeTextFileSync(`${results}/dbnet-other-eth0`, cacheEntry("other", "elsewhere"));

      // In-process, the agent's own endpoint: 30 scrapes.
      const endpoint = new MetricsEndpoint({
        bpffs: node.bpffs,
        stats: stats(),
        podLabels: true,
        resultsDir: results,
        agentSocket: false,
      });
      let body = "";
      for (let i = 0; i < 30; i++) body = endpoint.scrape();
      assert.match(
        body,
        new RegExp(
          `^tsnproxy_pod_admitted_total\\{namespace="tsn",pod="talker-0",container_id="${pod.containerId}"\\} \\d+$`,
          "m",
        ),
      );
      assert.equal(endpoint.pods?.results.stats.filesRead, 2, "each result file read once");

      // The real agent, with the socket and pod labels: every family, promtool-clean.
      const port = freePort();
      agent = spawnAgent(node, {
        port,
        reconcileSeconds: 30,
        extra: ["--cni-results-dir", results],
        stdout: "null",
      });
      const url = `http://127.0.0.1:${port}/metrics`;
      let text = "";
      await until("the agent's /metrics with pod names", async () => {
        try {
          text = await (await fetch(url)).text();
          return /pod="talker-0"/.test(text) && /tsnproxy_agent_cni_socket_up 1/.test(text);
        } catch {
          return false;
        }
      }, 15_000);
      const check = await promtool(["check", "metrics"], text);
      assert.equal(check.code, 0, `promtool check metrics:\n${check.out}\n${text}`);
      assert.equal(check.out.trim(), "", `promtool: ${check.out}`);
      const served = new Set([...text.matchAll(/^# TYPE (\w+) /gm)].map((m) => m[1]));
      assert.deepEqual([...served].sort(), FAMILIES.map((f) => f.name).sort());
    } finally {
      await agent?.stop("SIGTERM");
      if (pod) {
        await cni({
          command: "DEL",
          pod,
          stdin: { ...installedEntry(node), agentSocket: undefined },
        });
        await deletePod(pod);
      }
      await destroyNode(node);
      removeNodePath(run);
    }
  },
});
