/**
 * The VLAN egress-qos-map request and the VLAN part of RTM_NEWLINK replies, against byte
 * layouts derived by hand from include/uapi/linux/if_link.h (IFLA_VLAN_*, struct
 * ifla_vlan_qos_mapping) and rtnetlink.h (struct ifinfomsg). The host kernel has no 8021q:
 * tests/vm/vlan_pcp_test.ts sets and reads real maps in the Debian 6.1 and 6.12 guests.
 */
import assert from "node:assert/strict";
import {
  Attrs,
  buildVlanEgressRequest,
  IFLA_INFO_DATA,
  IFLA_INFO_KIND,
  IFLA_LINKINFO,
  IFLA_VLAN_EGRESS_QOS,
  IFLA_VLAN_ID,
  IFLA_VLAN_INGRESS_QOS,
  IFLA_VLAN_PROTOCOL,
  IFLA_VLAN_QOS_MAPPING,
  NLA_F_NESTED,
  parseVlanInfo,
  RTM_NEWLINK,
  vlanOf,
} from "../../src/netlink/mod.ts";

const le16 = (v: number) => [v & 0xff, v >>> 8];
const le32 = (v: number) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24];
/** One netlink attribute: len, type, payload, padding to 4. */
const attr = (type: number, payload: number[]) => {
  const len = 4 + payload.length;
  return [...le16(len), ...le16(type), ...payload, ...Array((4 - (len % 4)) % 4).fill(0)];
};
const nest = (type: number, ...children: number[][]) => attr(type | NLA_F_NESTED, children.flat());
const mapping = (from: number, to: number) =>
  attr(IFLA_VLAN_QOS_MAPPING, [...le32(from), ...le32(to)]);

Deno.test("vlan: the egress-qos-map request, byte for byte", () => {
  const req = buildVlanEgressRequest(7, [[3, 3], [5, 7], [0xffffffff, 0]]);
  const msg = req.message();
  const dv = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
  assert.equal(dv.getUint32(0, true), msg.length, "nlmsg_len");
  assert.equal(dv.getUint16(4, true), RTM_NEWLINK);
  assert.equal(dv.getUint16(6, true) & 0x600, 0, "no NLM_F_CREATE/EXCL: the device exists");
  // struct ifinfomsg {u8 family, u8 pad, u16 type, s32 index, u32 flags, u32 change}
  assert.deepEqual([...msg.subarray(16, 32)], [0, 0, 0, 0, ...le32(7), ...le32(0), ...le32(0)]);
  const kind = [..."vlan"].map((c) => c.charCodeAt(0)).concat(0);
  const expected = nest(
    IFLA_LINKINFO,
    attr(IFLA_INFO_KIND, kind),
    nest(
      IFLA_INFO_DATA,
      nest(IFLA_VLAN_EGRESS_QOS, mapping(3, 3), mapping(5, 7), mapping(0xffffffff, 0)),
    ),
  );
  assert.deepEqual([...msg.subarray(32)], expected);
});

Deno.test("vlan: out-of-range entries are refused before anything is sent", () => {
  assert.throws(() => buildVlanEgressRequest(1, [[1, 8]]), /PCP 8 is not 0\.\.7/);
  assert.throws(() => buildVlanEgressRequest(1, [[-1, 1]]), /priority -1 is not a u32/);
  assert.throws(() => buildVlanEgressRequest(1, [[2 ** 32, 1]]), /is not a u32/);
});

Deno.test("vlan: a link's IFLA_INFO_DATA decodes to id, protocol, both maps", () => {
  const data = [
    ...attr(IFLA_VLAN_ID, le16(100)),
    ...attr(IFLA_VLAN_PROTOCOL, [0x88, 0xa8]), // big endian
    ...nest(IFLA_VLAN_EGRESS_QOS, mapping(5, 7), mapping(3, 3)),
    ...nest(IFLA_VLAN_INGRESS_QOS, mapping(1, 2)),
  ];
  const v = parseVlanInfo(new Attrs(new Uint8Array(data)));
  assert.deepEqual(v, {
    id: 100,
    protocol: "802.1ad",
    flags: 0,
    egress: [[3, 3], [5, 7]],
    ingress: [[1, 2]],
  });
  const link = new Attrs(
    new Uint8Array(
      nest(
        IFLA_LINKINFO,
        attr(IFLA_INFO_KIND, [..."vlan"].map((c) => c.charCodeAt(0)).concat(0)),
        nest(IFLA_INFO_DATA, attr(IFLA_VLAN_ID, le16(5))),
      ),
    ),
  );
  assert.deepEqual(vlanOf(link), {
    id: 5,
    protocol: "802.1Q",
    flags: 0,
    egress: [],
    ingress: [],
  });
  const veth = new Attrs(
    new Uint8Array(
      nest(IFLA_LINKINFO, attr(IFLA_INFO_KIND, [..."veth"].map((c) => c.charCodeAt(0)).concat(0))),
    ),
  );
  assert.equal(vlanOf(veth), undefined);
});
