/** The pin-name codec: every name tsnproxy writes parses back to what it records. */
import assert from "node:assert/strict";
import {
  clsactSuffix,
  decodeComponent,
  encodeComponent,
  nodePinName,
  parseNodePin,
  parsePodPin,
  podPinMatches,
  podPinName,
  splitMarker,
} from "../../src/bpf/pins.ts";

const IDS = [
  "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", // containerd
  "cbpod.with.dots",
  "under_score_id",
  "a-b_c.d",
  "100%-sure",
  "Ω-unicode",
];
const IFNAMES = ["eth0", "net1", "eth0.100", "a_b", "x%y"];

Deno.test("pin names: container ids and ifnames with any character round-trip", () => {
  for (const id of IDS) {
    for (const ifname of IFNAMES) {
      for (const side of ["pod", "host"] as const) {
        const name = podPinName(id, ifname, side);
        assert.ok(!name.includes("."), `bpffs refuses dots: ${name}`);
        assert.ok(!name.includes("/"), name);
        const p = parsePodPin(name);
        assert.ok(p, `parses: ${name}`);
        assert.deepEqual(
          { containerId: p.containerId, ifname: p.ifname, side: p.side },
          { containerId: id, ifname, side },
          name,
        );
        assert.ok(podPinMatches(p, id));
        assert.ok(!podPinMatches(p, id + "x"));
      }
    }
  }
  // Distinct ids never share a name (release 0.1.0 mapped "a.b" and "a_b" both to "a_b").
  assert.notEqual(podPinName("a.b", "eth0", "pod"), podPinName("a_b", "eth0", "pod"));
});

Deno.test("pin names: ids runtimes use keep release 0.1.0's names", () => {
  assert.equal(podPinName("abc123", "eth0", "pod"), "abc123_eth0");
  assert.equal(podPinName("abc123", "eth0", "host"), "abc123_eth0@host");
  assert.equal(encodeComponent("a-b"), "a-b");
  assert.equal(decodeComponent("a%2eb"), "a.b");
  assert.equal(decodeComponent("a.b"), undefined);
});

Deno.test("pin names: a 0.1.0 name with a lossy id parses as the candidates it may be", () => {
  const p = parsePodPin("cbpod_with_dots_eth0");
  assert.ok(p);
  assert.equal(p.containerId, undefined);
  assert.deepEqual(p.legacy?.[0], { containerId: "cbpod_with_dots", ifname: "eth0" });
  assert.ok(podPinMatches(p, "cbpod.with.dots"), "0.1.0 wrote it for this id");
  assert.ok(!podPinMatches(p, "other"));
  assert.equal(parsePodPin("has spaces"), undefined);
});

Deno.test("pin names: clsact markers keep direction, ifindex and namespace", () => {
  for (
    const netns of [
      "/var/run/netns/cni-1f0e-77",
      "/proc/4242/ns/net",
      "/run/netns/odd name@with%chars",
      undefined,
    ]
  ) {
    for (const direction of ["ingress", "egress"] as const) {
      const base = podPinName("abc", "eth0", "host");
      const file = base + clsactSuffix({ direction, ifindex: 7, netns });
      assert.ok(!file.includes("/"), file);
      assert.deepEqual(splitMarker(file), {
        name: base,
        clsact: { direction, ifindex: 7, ...(netns ? { netns } : {}) },
      });
      const p = parsePodPin(file);
      assert.equal(p?.side, "host");
      assert.equal(p?.containerId, "abc");
      assert.equal(p?.clsact?.netns, netns);
    }
  }
});

Deno.test("pin names: node attachments", () => {
  for (const ifname of ["tsn0", "eth0.100", "enp1s0f0"]) {
    const file = nodePinName("restore", ifname);
    assert.deepEqual(parseNodePin(file), { role: "restore", ifname, clsact: undefined });
    const marked = file + clsactSuffix({ direction: "egress", ifindex: 3 });
    assert.equal(parseNodePin(marked)?.ifname, ifname);
  }
  assert.equal(parseNodePin("something_else"), undefined);
});
