/**
 * clsact BPF filter listing against filters added with iproute2's tc (test only: the product
 * lists them over RTM_GETTFILTER without iproute2).
 */
import assert from "node:assert/strict";
import { clsactParent, getLink, listBpfFilters, RtnlSocket } from "../../src/netlink/mod.ts";
import { withNetns } from "../../src/util/netns.ts";
import { compileTestBpf } from "./_bpf.ts";
import { withTestNetns } from "../lib/netns.ts";

Deno.test("clsact parents", () => {
  assert.equal(clsactParent("ingress"), 0xfffffff2);
  assert.equal(clsactParent("egress"), 0xfffffff3);
});

Deno.test("listBpfFilters: handle, priority, protocol, prog id/name/tag, direct-action", async () => {
  const bpf = await compileTestBpf();
  try {
    await withTestNetns(async (ns) => {
      await ns.addVeth("va", "vb");
      const ifindex = withNetns(ns.path, () => getLink("va").index);
      assert.deepEqual(
        withNetns(ns.path, () => listBpfFilters(ifindex, "ingress")),
        [],
        "no clsact",
      );
      await ns.tc("qdisc", "add", "dev", "va", "clsact");
      assert.deepEqual(withNetns(ns.path, () => listBpfFilters(ifindex, "egress")), []);
      await ns.tc(
        "filter",
        "add",
        "dev",
        "va",
        "ingress",
        "bpf",
        "da",
        "obj",
        bpf.object,
        "sec",
        "classifier",
      );
      await ns.tc(
        "filter",
        "add",
        "dev",
        "va",
        "egress",
        "prio",
        "7",
        "handle",
        "0x2",
        "protocol",
        "ip",
        "bpf",
        "obj",
        bpf.object,
        "sec",
        "classifier",
      );
      withNetns(ns.path, () => {
        using s = RtnlSocket.open();
        const ingress = listBpfFilters(ifindex, "ingress", s);
        const egress = listBpfFilters(ifindex, "egress", s);
        assert.equal(ingress.length, 1);
        assert.equal(egress.length, 1);
        const [i] = ingress;
        const [e] = egress;
        assert.equal(i.direction, "ingress");
        assert.equal(i.handle, 1);
        assert.equal(i.priority, 49152, "tc's default pref");
        assert.equal(i.protocol, 0x0003, "ETH_P_ALL");
        assert.equal(i.directAction, true);
        assert.equal(i.chain, 0);
        assert.ok(i.progId && i.progId > 0);
        assert.match(i.name ?? "", /prog\.o:\[classifier\]/);
        assert.match(i.tag ?? "", /^[0-9a-f]{16}$/);
        assert.equal(e.direction, "egress");
        assert.equal(e.handle, 2);
        assert.equal(e.priority, 7);
        assert.equal(e.protocol, 0x0800, "ETH_P_IP");
        assert.equal(e.directAction, false);
        assert.notEqual(e.progId, i.progId, "two loads, two programs");
        assert.equal(e.tag, i.tag, "same instructions, same tag");
      });
      // The program ids agree with what tc itself prints.
      const shown = await ns.tc("filter", "show", "dev", "va", "ingress");
      const id = withNetns(ns.path, () => listBpfFilters(ifindex, "ingress")[0].progId);
      assert.match(shown, new RegExp(` id ${id} `));
    }, { ipv6: false });
  } finally {
    bpf.cleanup();
  }
});
