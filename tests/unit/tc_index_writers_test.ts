/** The doctor's tc_index check: which qdiscs and classic tc filters would erase the saver's tag. */
import assert from "node:assert/strict";
import { recognise, tcIndexWriters } from "../../src/doctor/checks_net.ts";

const links = [
  { index: 1, name: "lo" },
  { index: 2, name: "tsn0" },
  { index: 3, name: "vxlan0" },
  { index: 4, name: "br0" },
];

Deno.test("tc_index writers: dsmark anywhere but the TSN interface, other kinds ignored", () => {
  const qdiscs: Record<number, { kind: string; handle: number }[]> = {
    2: [{ kind: "dsmark", handle: 0x10000 }], // after the restorer: harmless
    3: [{ kind: "dsmark", handle: 0x20000 }, { kind: "clsact", handle: 0xffff0000 }],
    4: [{ kind: "noqueue", handle: 0 }, { kind: "htb", handle: 0x30000 }],
  };
  const found = tcIndexWriters(links, (i) => qdiscs[i] ?? [], ["tsn0"]);
  assert.deepEqual(found, ["vxlan0 (dsmark 2:)"]);
  assert.deepEqual(tcIndexWriters(links, () => [], ["tsn0"]), []);
  assert.equal(tcIndexWriters(links, (i) => qdiscs[i] ?? [], []).length, 2);
  assert.deepEqual(tcIndexWriters(links, (i) => qdiscs[i] ?? [], ["tsn0", "vxlan0"]), []);
});

Deno.test("other datapaths are recognised by their programs and devices", () => {
  assert.deepEqual(recognise([{ name: "cil_from_container", device: "lxc1" }], []), ["Cilium"]);
  assert.deepEqual(recognise([], ["eth0", "cilium_host"]), ["Cilium"]);
  assert.deepEqual(recognise([{ name: "calico_tc_main", device: "eth0" }], []), [
    "Calico (eBPF dataplane)",
  ]);
  assert.deepEqual(recognise([{ name: "my_filter", device: "br0" }], ["br0"]), []);
});
