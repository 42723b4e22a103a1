/** The clsact marker name: what a pod's cls_bpf filter is recorded as, parsed back. */
import assert from "node:assert/strict";
import { clsactMarker, describePin } from "../../src/bpf/attach.ts";

Deno.test("clsact marker: direction, ifindex and namespace survive the round trip", () => {
  const pin = "/sys/fs/bpf/tsnproxy/pods/abc_eth0";
  for (
    const netns of [
      "/var/run/netns/cni-1f0e-77",
      "/proc/4242/ns/net",
      "/run/netns/odd name@with%chars",
      undefined,
    ]
  ) {
    for (const direction of ["ingress", "egress"] as const) {
      const marker = clsactMarker(pin, direction, 7, netns);
      assert.ok(!marker.slice(pin.length).includes("/"), `one bpffs name: ${marker}`);
      const a = describePin(marker);
      assert.deepEqual(
        { api: a.api, direction: a.direction, ifindex: a.ifindex, netns: a.netns },
        { api: "clsact", direction, ifindex: 7, netns },
      );
      assert.equal(a.pin, marker);
    }
  }
});

Deno.test("clsact marker: the pre-namespace form still parses (no namespace)", () => {
  const a = describePin("/p/pods/abc_eth0@clsact-egress-3");
  assert.equal(a.api, "clsact");
  assert.equal(a.ifindex, 3);
  assert.equal(a.netns, undefined);
});
