/** The doctor's tc_index check: which qdiscs and classic tc filters would erase the saver's tag. */
import assert from "node:assert/strict";
import { classicFilterHooks, tcIndexWriters } from "../../src/doctor/checks_net.ts";

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
  const found = tcIndexWriters(links, (i) => qdiscs[i] ?? [], "tsn0");
  assert.deepEqual(found, ["vxlan0 (dsmark 2:)"]);
  assert.deepEqual(tcIndexWriters(links, () => [], "tsn0"), []);
  assert.equal(tcIndexWriters(links, (i) => qdiscs[i] ?? [], undefined).length, 2);
});

Deno.test("tc_index: classic filters anywhere but ours and the TSN egress are reported", () => {
  const filters: Record<string, { progId?: number }[]> = {
    "2/egress": [{ progId: 7 }], // the TSN interface's egress: the restorer's business
    "2/ingress": [{ progId: 8 }],
    "3/ingress": [{ progId: 42 }], // ours (a host-veth restorer in clsact mode)
    "4/ingress": [{ progId: 9 }, { progId: 10 }],
    "1/ingress": [{ progId: 11 }], // lo: never on a pod packet's way
  };
  const got = classicFilterHooks(
    links,
    (i, dir) => filters[`${i}/${dir}`] ?? [],
    "tsn0",
    new Set([42]),
  );
  assert.deepEqual(got, ["tsn0 ingress (1 filter)", "br0 ingress (2 filters)"]);
});
