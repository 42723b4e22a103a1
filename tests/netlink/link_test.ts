/** Link queries against real veth/bridge devices in a throwaway netns. */
import assert from "node:assert/strict";
import { NotFoundError } from "../../src/errors.ts";
import { ifNameToIndex } from "../../src/ffi/libc.ts";
import { findLink, getLink, listLinks, RtnlSocket } from "../../src/netlink/mod.ts";
import { withNetns } from "../../src/util/netns.ts";
import { Netns, withTestNetns } from "../lib/netns.ts";
import { compileTestBpf } from "./_bpf.ts";

Deno.test("veth and bridge: kind, peer, queues, master, mac, state", async () => {
  await withTestNetns(async (ns) => {
    await ns.addVeth("va", "vb", { queues: 3 });
    await ns.ip("link", "add", "br-tn", "type", "bridge");
    await ns.ip("link", "set", "vb", "master", "br-tn");
    await ns.ip("link", "set", "va", "address", "02:00:00:00:0a:01");
    await ns.ip("link", "set", "va", "mtu", "1400");
    withNetns(ns.path, () => {
      using s = RtnlSocket.open();
      const va = getLink("va", s);
      const vb = getLink("vb", s);
      const br = getLink("br-tn", s);
      assert.equal(va.index, ifNameToIndex("va"));
      assert.equal(va.kind, "veth");
      assert.equal(va.link, vb.index, "IFLA_LINK is the peer");
      assert.equal(vb.link, va.index);
      assert.equal(va.linkNetnsId, undefined, "peer in the same netns");
      assert.equal(va.numTxQueues, 3);
      assert.equal(va.numRxQueues, 3);
      assert.equal(va.mtu, 1400);
      assert.equal(va.address, "02:00:00:00:0a:01");
      assert.equal(va.up, true);
      assert.equal(va.xdpMode, "none");
      assert.equal(va.xdpProgId, undefined);
      assert.equal(br.kind, "bridge");
      assert.equal(br.up, false);
      assert.equal(br.operstate, "down");
      assert.equal(vb.master, br.index);
      assert.equal(vb.slaveKind, "bridge");
      assert.equal(va.master, undefined);
      assert.deepEqual(getLink(va.index, s), va, "by index and by name agree");

      const all = listLinks(s);
      assert.deepEqual(all.map((l) => l.name).sort(), ["br-tn", "lo", "va", "vb"]);
      assert.deepEqual(all.find((l) => l.name === "va"), va);
      const lo = all.find((l) => l.name === "lo");
      assert.equal(lo?.kind, undefined);
      assert.equal(lo?.link, undefined);

      assert.equal(findLink("nope0", s), undefined);
      assert.throws(() => getLink("nope0", s), NotFoundError);
      assert.throws(() => getLink(99999, s), NotFoundError);
    });
  }, { ipv6: false });
});

Deno.test("veth peer in another netns: IFLA_LINK_NETNSID and the peer's index there", async () => {
  await withTestNetns(async (ns) => {
    await using other = await Netns.create({ lo: false });
    await ns.addVeth("va", "vb");
    await ns.ip("link", "set", "vb", "netns", other.name);
    const vbIndex = withNetns(other.path, () => getLink("vb").index);
    const va = withNetns(ns.path, () => getLink("va"));
    assert.equal(va.link, vbIndex);
    assert.equal(typeof va.linkNetnsId, "number");
    assert.ok(va.linkNetnsId! >= 0);
    assert.notEqual(va.operstate, "up", "peer moved away and down: no carrier");
    assert.equal(va.running, false);
  }, { ipv6: false });
});

Deno.test("XDP attachment: program id and mode reported while attached", async () => {
  const bpf = await compileTestBpf();
  try {
    await withTestNetns(async (ns) => {
      await ns.addVeth("va", "vb");
      await ns.ip("link", "set", "dev", "va", "xdpgeneric", "obj", bpf.object, "sec", "xdp");
      const va = withNetns(ns.path, () => getLink("va"));
      assert.equal(va.xdpMode, "generic");
      assert.ok(va.xdpProgId && va.xdpProgId > 0);
      await ns.ip("link", "set", "dev", "va", "xdpgeneric", "off");
      const after = withNetns(ns.path, () => getLink("va"));
      assert.equal(after.xdpMode, "none");
      assert.equal(after.xdpProgId, undefined);
    }, { ipv6: false });
  } finally {
    bpf.cleanup();
  }
});
