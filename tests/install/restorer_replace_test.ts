/**
 * An install over another build's datapath replaces the pinned tsnp_restore (the loader
 * compares each pin's tag and release stamp), and then the TSN interface's restorer must run
 * the new program: a restorer left on the old instance would keep restoring with the old
 * build's code until the interface is re-created. Per tc API, as an operator runs it:
 *
 * - the dry run plans the replacement ("replaced" program, restorer "replace");
 * - after install the hook runs the pinned tsnp_restore, of this build's release, exactly
 *   once: tcx swaps the link's program in place (the same link, BPF_LINK_UPDATE: no moment
 *   without a restorer and none with two), clsact replaces its filter's program under the
 *   same handle (BPF_TC_F_REPLACE);
 * - a restorer that runs another instance than the one pinned (the pin replaced behind its
 *   back) is re-attached too, by install and by the agent's repair;
 * - install again changes nothing.
 */
import assert from "node:assert/strict";
import { CLSACT_HANDLES, clsactProgId, describePin, queryTcx } from "../../src/bpf/attach.ts";
import {
  attachRestorer,
  detachRestorer,
  restorerAttached,
  restorerStatus,
} from "../../src/bpf/node.ts";
import { PinLayout } from "../../src/bpf/pins.ts";
import { RELEASE_STAMP } from "../../src/bpf/loader.ts";
import { releaseOfProgram, releaseStamp } from "../../src/bpf/release.ts";
import { closeFd, fdById, linkInfo, progIdAt, readPinned } from "../../src/bpf/sys.ts";
import { type InstallPlanJson, installPlanSchema } from "../../src/install/plan_schema.ts";
import { pinOfAnotherBuild } from "../lib/other_build.ts";
import { createNode, destroyNode, ok, type TestNode } from "./_node.ts";

async function plan(node: TestNode, api: string): Promise<InstallPlanJson> {
  return installPlanSchema.parse(
    JSON.parse(await ok(node, "install", "--dry-run", "--json", "--attach-mode", api)),
  );
}

/** The program the TSN interface's egress hook runs for our restorer attachment. */
function running(node: TestNode): { id: number | undefined; linkId?: number } {
  const a = restorerAttached(node.bpffs, node.tsn);
  assert.ok(a, "a restorer attachment");
  if (a.api === "clsact") {
    return { id: clsactProgId(a.ifindex, "egress", CLSACT_HANDLES.restore) };
  }
  const info = readPinned(a.pin, linkInfo)!;
  return { id: info.progId, linkId: info.id };
}

function stampOf(progId: number): string | undefined {
  const fd = fdById("prog", progId);
  assert.ok(fd >= 0, `program ${progId} is loaded`);
  try {
    const r = releaseOfProgram(fd);
    return r && releaseStamp(r.version, r.objects);
  } finally {
    closeFd(fd);
  }
}

/** Our restorer runs exactly once on the hook (tcx: the first program of the chain). */
function runsOnce(node: TestNode, api: string, id: number): void {
  if (api === "tcx") {
    const chain = queryTcx(node.tsn, "egress");
    assert.equal(chain[0]?.id, id, `tsnp_restore first: ${JSON.stringify(chain)}`);
    assert.equal(chain.filter((p) => p.name === "tsnp_restore").length, 1, JSON.stringify(chain));
  } else {
    const a = restorerAttached(node.bpffs, node.tsn)!;
    assert.equal(describePin(a.pin).api, "clsact");
    assert.equal(clsactProgId(a.ifindex, "egress", CLSACT_HANDLES.restore), id);
  }
}

for (const api of ["tcx", "clsact"] as const) {
  Deno.test(`install (${api}) over another build's restorer re-attaches it to the new program`, async () => {
    const node = await createNode();
    try {
      await ok(node, "install", "--attach-mode", api);
      const pins = new PinLayout(node.bpffs);
      // The previous build's install: its tsnp_restore pinned and attached.
      const theirs = pinOfAnotherBuild(node.bpffs, "restore");
      detachRestorer(node.bpffs, node.tsn);
      attachRestorer(node.bpffs, node.tsn, api);
      const before = running(node);
      assert.equal(before.id, theirs);

      const p = await plan(node, api);
      assert.equal(p.datapath?.programs.find((x) => x.role === "restore")?.action, "replaced");
      assert.equal(p.interfaces[0].restorer.action, "replace");
      assert.equal(p.restorer.action, "replace");
      const text = await ok(node, "install", "--dry-run", "--attach-mode", api);
      assert.match(
        text,
        new RegExp(`\\+ re-attach ${node.tsn}'s restorer to the new tsnp_restore`),
      );

      await ok(node, "install", "--attach-mode", api);
      const pinned = progIdAt(pins.prog("restore"))!;
      assert.notEqual(pinned, theirs, "the loader replaced the other build's program");
      const after = running(node);
      assert.equal(after.id, pinned, "the restorer runs the pinned tsnp_restore");
      assert.equal(stampOf(after.id!), RELEASE_STAMP);
      if (api === "tcx") assert.equal(after.linkId, before.linkId, "the same link, updated");
      runsOnce(node, api, pinned);
      assert.equal(restorerStatus(node.bpffs, node.tsn)?.runningId, pinned);

      // Install again: nothing to do.
      const again = await plan(node, api);
      assert.equal(again.changes, false, JSON.stringify(again));
      assert.equal(again.interfaces[0].restorer.action, "kept");

      // The pin replaced behind the restorer's back (this build's program, a new instance):
      // the restorer runs another instance than the pinned one, install re-attaches it.
      const old = pinned;
      const fresh = pinOfAnotherBuild(node.bpffs, "restore", RELEASE_STAMP);
      assert.equal(running(node).id, old);
      const p2 = await plan(node, api);
      assert.equal(p2.datapath?.programs.find((x) => x.role === "restore")?.action, "kept");
      assert.equal(p2.interfaces[0].restorer.action, "replace");
      await ok(node, "install", "--attach-mode", api);
      assert.equal(running(node).id, fresh);
      runsOnce(node, api, fresh);
      assert.equal((await plan(node, api)).changes, false);
    } finally {
      await destroyNode(node);
    }
  });
}
