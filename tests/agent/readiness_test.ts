/**
 * Readiness, liveness and repair (src/agent/readiness.ts, src/agent/repair.ts) against a real
 * agent on the real kernel: the agent installs a bare node itself, then each readiness
 * condition is broken for real (a program unpinned, the restorer detached, the entry removed
 * from the conflist, another build's program pinned, another program under a role's pin, the
 * whole pin root removed, the TSN interface deleted). Each time /readyz answers 503 naming the
 * condition (or the agent's log shows it saw it first), the agent repairs it with install's
 * plan, /readyz is 200 again, and /livez answers 200 throughout: no restart is needed for
 * anything the agent can repair. Polls are bounded; no elapsed time is asserted.
 */
import assert from "node:assert/strict";
import {
  addTsn,
  createNode,
  destroyNode,
  FIXTURES,
  type TestNode,
  tsnproxy,
} from "../install/_node.ts";
import { restorerAttached, restorerStatus } from "../../src/bpf/node.ts";
import { PinLayout } from "../../src/bpf/pins.ts";
import { closeFd, objGetRequired, objPin } from "../../src/bpf/sys.ts";
import { isThisBuild, pinnedProgram } from "../../src/bpf/loader.ts";
import { formatRelease, parseRelease } from "../../src/bpf/release.ts";
import { versionInfo } from "../../src/build_info.ts";
import { OTHER_STAMP, pinOfAnotherBuild } from "../lib/other_build.ts";
import { run } from "../lib/run.ts";
import { binaryPath, binarySource } from "../../src/install/binary.ts";
import { until } from "../lib/wait.ts";
import { type Agent, get, type LogLine, startAgent } from "./_agent.ts";

const conflistOf = (node: TestNode) => `${node.confDir}/10-bridge.conflist`;
const tagOf = (node: TestNode, role: "save" | "restore") => pinnedProgram(node.bpffs, role)?.tag;

/** Breaks one condition, watches the probe say so, then waits for the agent's repair. */
async function breakAndWatch(
  agent: Agent,
  condition: string,
  breakIt: () => void | Promise<void>,
): Promise<LogLine[]> {
  const mark = agent.logs().length;
  await breakIt();
  const saw = (r: { status: number; text: string } | undefined) =>
    r?.status === 503 && new RegExp(`^FAIL ${condition.replace(".", "\\.")}:`, "m").test(r.text);
  const probe = await get(`${agent.base}/readyz`);
  const since = () => agent.logs().slice(mark);
  if (!saw(probe)) {
    // Something else (the conf dir watcher, a periodic pass) got there first: the agent's
    // own record of not being ready must name the condition.
    assert.ok(
      since().some((l) =>
        l.msg === "not ready" && condition in (l.failing as Record<string, string>)
      ),
      `the probe answered ${probe?.status} ${probe?.text} and the agent never said ` +
        `${condition} failed`,
    );
  }
  assert.equal((await get(`${agent.base}/livez`))?.status, 200, "liveness is the process only");
  await until(
    `the agent to repair ${condition}`,
    async () => (await get(`${agent.base}/readyz`))?.status === 200,
    20_000,
  );
  // The repair is logged (by the pass that made it: one started for an earlier condition may
  // have fixed this one too, so the line may name another). The line may still be on its way
  // through the agent's stderr pipe when the probe already answers 200.
  await until(
    `the agent to log the repair of ${condition}`,
    () => since().some((l) => l.msg === "node repaired"),
    20_000,
  );
  return since();
}

Deno.test("agent: readiness follows the datapath; each broken condition is repaired", async () => {
  const node = await createNode();
  let agent: Agent | undefined;
  try {
    // Nothing installed, not even the plugin: the agent installs the datapath itself, but
    // adds no entry the runtime could not run.
    agent = await startAgent(node, { reconcileSeconds: 30 });
    await until("the agent to install the datapath", async () => {
      const r = await get(`${agent!.base}/readyz`);
      return r?.status === 503 && /^ok datapath\.pinned: /m.test(r.text) &&
        /^FAIL cni\.binary: \S+ does not exist/m.test(r.text) &&
        /^FAIL conflist\.entry: /m.test(r.text);
    }, 30_000);
    assert.doesNotMatch(await Deno.readTextFile(conflistOf(node)), /"type": "tsnproxy"/);
    assert.ok(
      agent.logs().some((l) => l.msg === "node repaired" && l.why === "start"),
      "the start-up repair installed the datapath",
    );
    // The init container's part: the plugin in the CNI bin dir. Then the agent adds the entry.
    const bin = await binarySource();
    await Deno.writeFile(binaryPath(node.binDir), bin.bytes, { mode: 0o755 });
    await until(
      "the agent to add the entry",
      async () => (await get(`${agent!.base}/readyz`))?.status === 200,
      30_000,
    );
    const ready = (await get(`${agent.base}/readyz`))!.text;
    for (
      const c of [
        "datapath.pinned",
        "datapath.build",
        "restorer.attached",
        "cni.binary",
        "conflist.entry",
      ]
    ) assert.match(ready, new RegExp(`^ok ${c.replace(".", "\\.")}: `, "m"));
    const pins = new PinLayout(node.bpffs);
    assert.doesNotMatch(ready, /gc\./, "no GC any more: nothing to report on it");
    const saveTag = tagOf(node, "save");
    assert.ok(saveTag);

    await breakAndWatch(agent, "datapath.pinned", () => Deno.removeSync(pins.prog("save")));
    assert.equal(tagOf(node, "save"), saveTag);

    await breakAndWatch(agent, "restorer.attached", () => {
      // Unpinning the tcx link detaches it.
      for (const e of Deno.readDirSync(pins.nodeDir)) Deno.removeSync(`${pins.nodeDir}/${e.name}`);
      assert.equal(restorerAttached(node.bpffs, node.tsn), undefined);
    });
    assert.ok(restorerAttached(node.bpffs, node.tsn));

    await breakAndWatch(agent, "conflist.entry", async () => {
      const pristine = await Deno.readTextFile(`${FIXTURES}bridge/10-bridge.conflist`);
      await Deno.writeTextFile(`${conflistOf(node)}.new`, pristine);
      await Deno.rename(`${conflistOf(node)}.new`, conflistOf(node));
    });
    assert.match(await Deno.readTextFile(conflistOf(node)), /"type": "tsnproxy"/);

    // Another build's saver: the same instructions (the same tag), another release stamp.
    let logs = await breakAndWatch(agent, "datapath.build", () => {
      pinOfAnotherBuild(node.bpffs, "save");
      assert.equal(tagOf(node, "save"), saveTag, "a tag cannot tell the two builds apart");
      assert.ok(!isThisBuild("save", pinnedProgram(node.bpffs, "save")!));
    });
    assert.ok(isThisBuild("save", pinnedProgram(node.bpffs, "save")!));
    let replaced = logs.find((l) => l.msg.startsWith("the pinned datapath was another build's"));
    assert.ok(replaced, "the agent says it replaced another build's program");
    assert.deepEqual(
      (replaced.pinnedBuild as Record<string, unknown>).releases,
      { tsnp_save: formatRelease(parseRelease(OTHER_STAMP)) },
    );

    // Another build's restorer pinned: the TSN interface's restorer still runs this build's,
    // which is no longer the pinned one. The repair pins this build's again and moves the
    // restorer onto it in place.
    logs = await breakAndWatch(agent, "datapath.build", () => {
      pinOfAnotherBuild(node.bpffs, "restore");
      const st = restorerStatus(node.bpffs, node.tsn)!;
      assert.notEqual(st.runningId, st.pinnedId);
    });
    const st = restorerStatus(node.bpffs, node.tsn)!;
    assert.equal(st.runningId, st.pinnedId, "the restorer runs the pinned tsnp_restore");
    assert.ok(isThisBuild("restore", pinnedProgram(node.bpffs, "restore")!));
    assert.ok(
      logs.some((l) =>
        l.msg === "restorer re-attached" && l.ifname === node.tsn && l.action === "replace"
      ),
      "the agent says it moved the restorer",
    );

    // Another program of this build under the saver's pin (its name and tag differ).
    logs = await breakAndWatch(agent, "datapath.build", () => {
      const fd = objGetRequired(pins.prog("restore"));
      try {
        Deno.removeSync(pins.prog("save"));
        objPin(fd, pins.prog("save"));
      } finally {
        closeFd(fd);
      }
      assert.notEqual(tagOf(node, "save"), saveTag);
    });
    assert.equal(tagOf(node, "save"), saveTag);
    replaced = logs.find((l) => l.msg.startsWith("the pinned datapath was another build's"));
    assert.ok(replaced, "the agent says it replaced the program under the saver's pin");

    await breakAndWatch(agent, "datapath.pinned", () => {
      Deno.removeSync(pins.root, { recursive: true });
    });
    assert.ok(restorerAttached(node.bpffs, node.tsn));
    assert.equal(tagOf(node, "save"), saveTag);

    // The TSN interface gone: not ready, nothing to repair yet, still alive; back: repaired.
    await run(["ip", "link", "del", node.tsn]);
    await until("/readyz to name the missing interface", async () => {
      const r = await get(`${agent!.base}/readyz`);
      return r?.status === 503 && /^FAIL restorer\.attached: the TSN interface \S+ does not exist/m
        .test(r.text);
    });
    assert.equal((await get(`${agent.base}/livez`))?.status, 200);
    await addTsn(node);
    await until(
      "the agent to re-attach the restorer",
      async () => (await get(`${agent!.base}/readyz`))?.status === 200,
      20_000,
    );
    assert.ok(restorerAttached(node.bpffs, node.tsn));

    // /healthz stays what liveness is; the agent never exited on the way.
    assert.equal((await get(`${agent.base}/healthz`))?.status, 200);
    assert.equal(await agent.stop("SIGTERM"), 0);
    agent = undefined;
  } finally {
    await agent?.kill();
    await destroyNode(node);
  }
});

Deno.test("agent: started on pins of another build, it says which and converges", async () => {
  const node = await createNode();
  let agent: Agent | undefined;
  try {
    const inst = await tsnproxy(node, "install");
    assert.equal(inst.code, 0, inst.stderr);
    const ours = tagOf(node, "save")!;
    // The previous build's installer and saver.
    Deno.mkdirSync(node.stateDir, { recursive: true });
    Deno.writeTextFileSync(
      `${node.stateDir}/install.json`,
      JSON.stringify({ v: 1, version: "0.0.9-previous" }),
    );
    pinOfAnotherBuild(node.bpffs, "save");
    const theirs = tagOf(node, "save")!;

    agent = await startAgent(node, { reconcileSeconds: 30 });
    await until(
      "the agent to converge",
      async () => (await get(`${agent!.base}/readyz`))?.status === 200,
      30_000,
    );
    assert.ok(isThisBuild("save", pinnedProgram(node.bpffs, "save")!));
    assert.equal(tagOf(node, "save"), ours);
    assert.ok(restorerAttached(node.bpffs, node.tsn), "the restorer stayed attached");
    const line = agent.logs().find((l) =>
      l.msg === "the pinned datapath was another build's: replaced by this build's"
    );
    assert.ok(line, "no log line about another build");
    const me = versionInfo();
    assert.deepEqual(line.pinnedBuild, {
      installedBy: "0.0.9-previous",
      programs: { tsnp_save: theirs },
      releases: { tsnp_save: formatRelease(parseRelease(OTHER_STAMP)) },
    });
    assert.deepEqual(line.thisBuild, {
      version: me.version,
      bpfObjectsSha256: me.bpfObjectsSha256,
      programs: { tsnp_save: ours },
    });
  } finally {
    await agent?.kill();
    await destroyNode(node);
  }
});
