/** Which carrier a pod gets, and where admit attaches, from the facts on its way. */
import assert from "node:assert/strict";
import { admitApi, chooseNodeCarrier, choosePodCarrier } from "../../src/bpf/carrier.ts";
import type { HookProgram } from "../../src/bpf/hooks.ts";

const prog = (name: string, hook: HookProgram["hook"] = "tcx", ours = false): HookProgram => ({
  hook,
  direction: "ingress",
  id: 7,
  name,
  order: 0,
  ours,
});

Deno.test("carrier: the node's choice", () => {
  assert.deepEqual(chooseNodeCarrier("auto", []), { carrier: "tag", reason: "clean" });
  const c = chooseNodeCarrier("auto", [prog("cil_to_netdev")]);
  assert.equal(c.carrier, "stage");
  assert.equal(c.reason, "foreignOnNode");
  assert.match(c.programs?.[0] ?? "", /cil_to_netdev \(id 7, tcx ingress #0\)/);
  assert.equal(chooseNodeCarrier("table", []).carrier, "stage");
  assert.equal(chooseNodeCarrier("tag", [prog("x")]).carrier, "tag");
});

Deno.test("carrier: the pod's choice follows its host interface", () => {
  const clean = chooseNodeCarrier("auto", []);
  assert.equal(choosePodCarrier({ restoreAt: "tsn-egress", node: clean }, []).carrier, "tag");
  const foreign = choosePodCarrier({ restoreAt: "tsn-egress", node: clean }, [
    prog("cil_from_container"),
  ]);
  assert.equal(foreign.carrier, "stage");
  assert.equal(foreign.reason, "foreignOnHost");
  // Forced tag stays the tag (doctor fails it); the node's stage stays the stage.
  const forced = chooseNodeCarrier("tag", []);
  assert.equal(
    choosePodCarrier({ restoreAt: "tsn-egress", node: forced }, [prog("x")]).carrier,
    "tag",
  );
  const staged = chooseNodeCarrier("auto", [prog("y")]);
  assert.equal(
    choosePodCarrier({ restoreAt: "tsn-egress", node: staged }, []).reason,
    "foreignOnNode",
  );
  assert.equal(
    choosePodCarrier({ restoreAt: "host-veth-ingress", node: clean }, []).carrier,
    "none",
  );
});

Deno.test("carrier: admit runs first, whatever the setting says", () => {
  assert.equal(admitApi("netkit", "auto", true, []), "netkit");
  assert.equal(
    admitApi("veth", "auto", true, []),
    "clsact",
    "no foreign tcx: clsact (no RCU wait)",
  );
  assert.equal(admitApi("veth", "auto", true, [prog("cil_from_container")]), "tcx");
  assert.equal(admitApi("veth", "clsact", true, [prog("cil_from_container")]), "tcx");
  assert.equal(admitApi("veth", "tcx", true, []), "tcx");
  assert.equal(admitApi("veth", "auto", false, []), "clsact");
  assert.equal(admitApi("veth", "auto", true, [prog("tsnp_admit", "tcx", true)]), "clsact");
});
