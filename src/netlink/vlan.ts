/**
 * VLAN devices over rtnetlink: what the kernel reports about one (IFLA_LINKINFO ->
 * IFLA_INFO_DATA of kind "vlan") and setting entries of its egress-qos-map, the table
 * vlan_dev_hard_start_xmit reads to turn skb->priority into the frame's 802.1Q PCP:
 *
 *   RTM_NEWLINK ifinfomsg{index} IFLA_LINKINFO { IFLA_INFO_KIND "vlan", IFLA_INFO_DATA {
 *     IFLA_VLAN_EGRESS_QOS { IFLA_VLAN_QOS_MAPPING struct ifla_vlan_qos_mapping{from, to} ... }
 *   } }
 *
 * on the existing device (no NLM_F_CREATE: the kernel's vlan_changelink sets each entry;
 * `to` 0 removes one). The kernel reports only the entries whose PCP is not 0, so a
 * priority absent from `egress` leaves with PCP 0. No iproute2 at run time.
 */
import { Errno } from "../ffi/libc.ts";
import { encode } from "../ffi/structs/layout.ts";
import { ifinfomsg } from "../ffi/structs/netlink.ts";
import {
  IFLA_INFO_DATA,
  IFLA_INFO_KIND,
  IFLA_LINKINFO,
  IFLA_VLAN_EGRESS_QOS,
  IFLA_VLAN_FLAGS,
  IFLA_VLAN_ID,
  IFLA_VLAN_INGRESS_QOS,
  IFLA_VLAN_PROTOCOL,
  IFLA_VLAN_QOS_MAPPING,
  RTM_NEWLINK,
  VLAN_PCP_MAX,
} from "./constants.ts";
import { Attrs, NlRequest } from "./message.ts";
import { type RtnlSocket, withRtnl } from "./socket.ts";

export interface VlanLinkInfo {
  id: number;
  /** "802.1Q" (0x8100) or "802.1ad" (0x88a8); the hex ethertype for anything else. */
  protocol: string;
  /** VLAN_FLAG_* (1: reorder_hdr, ...). */
  flags: number;
  /** egress-qos-map: [priority, PCP] pairs the kernel reports (PCP 0 entries are not). */
  egress: [number, number][];
  /** ingress-qos-map: [PCP, priority]. */
  ingress: [number, number][];
}

function mappings(a: Attrs | undefined): [number, number][] {
  if (!a) return [];
  return a.all(IFLA_VLAN_QOS_MAPPING).filter((b) => b.length >= 8).map((b) => {
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    return [dv.getUint32(0, true), dv.getUint32(4, true)] as [number, number];
  }).sort((x, y) => x[0] - y[0]);
}

function protocolName(p: number | undefined): string {
  if (p === undefined || p === 0x8100) return "802.1Q";
  if (p === 0x88a8) return "802.1ad";
  return `0x${p.toString(16).padStart(4, "0")}`;
}

/** Decodes IFLA_INFO_DATA of a "vlan" link. */
export function parseVlanInfo(data: Attrs | undefined): VlanLinkInfo {
  const proto = data?.raw(IFLA_VLAN_PROTOCOL);
  return {
    id: data?.u16(IFLA_VLAN_ID) ?? 0,
    // struct ifla_vlan_flags {u32 flags; u32 mask}
    protocol: protocolName(
      proto && proto.length >= 2 ? (proto[0] << 8) | proto[1] : undefined, // big endian
    ),
    flags: data?.u32(IFLA_VLAN_FLAGS) ?? 0,
    egress: mappings(data?.nested(IFLA_VLAN_EGRESS_QOS)),
    ingress: mappings(data?.nested(IFLA_VLAN_INGRESS_QOS)),
  };
}

/** The VLAN part of an RTM_NEWLINK's attributes (undefined: not a VLAN device). */
export function vlanOf(linkAttrs: Attrs): VlanLinkInfo | undefined {
  const info = linkAttrs.nested(IFLA_LINKINFO);
  if (info?.str(IFLA_INFO_KIND) !== "vlan") return undefined;
  return parseVlanInfo(info.nested(IFLA_INFO_DATA));
}

function qosMapping(from: number, to: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(new ArrayBuffer(8));
  const dv = new DataView(b.buffer);
  dv.setUint32(0, from >>> 0, true);
  dv.setUint32(4, to >>> 0, true);
  return b;
}

/**
 * The RTM_NEWLINK that sets egress-qos-map entries ([priority, PCP]; PCP 0 removes one) on
 * VLAN device `ifindex`, unsent. Exposed so tests can check the bytes against if_link.h.
 */
export function buildVlanEgressRequest(
  ifindex: number,
  entries: readonly [number, number][],
): NlRequest {
  for (const [prio, pcp] of entries) {
    if (!Number.isInteger(prio) || prio < 0 || prio > 0xffffffff) {
      throw new RangeError(`egress-qos-map priority ${prio} is not a u32`);
    }
    if (!Number.isInteger(pcp) || pcp < 0 || pcp > VLAN_PCP_MAX) {
      throw new RangeError(`egress-qos-map PCP ${pcp} is not 0..${VLAN_PCP_MAX}`);
    }
  }
  const req = new NlRequest(RTM_NEWLINK, 0, 256 + entries.length * 12);
  req.extraHeader(encode(ifinfomsg, { ifi_index: ifindex }));
  req.nest(IFLA_LINKINFO, (li) => {
    li.strz(IFLA_INFO_KIND, "vlan");
    li.nest(IFLA_INFO_DATA, (d) => {
      d.nest(IFLA_VLAN_EGRESS_QOS, (q) => {
        for (const [prio, pcp] of entries) q.bytes(IFLA_VLAN_QOS_MAPPING, qosMapping(prio, pcp));
      });
    });
  });
  return req;
}

/**
 * Sets the given egress-qos-map entries of VLAN device `ifindex` ([priority, PCP]; PCP 0
 * removes the entry). The kernel refuses (EOPNOTSUPP) when the device is not a VLAN device.
 */
export function setVlanEgressQos(
  ifindex: number,
  entries: readonly [number, number][],
  sock?: RtnlSocket,
): void {
  if (entries.length === 0) return;
  withRtnl(sock, (s) => {
    s.request(buildVlanEgressRequest(ifindex, entries), {
      what: `set the egress-qos-map of ifindex ${ifindex}`,
      explain: (f) =>
        f.errno === Errno.EOPNOTSUPP
          ? {
            message: `ifindex ${ifindex} is not a VLAN device: it has no egress-qos-map (${
              f.extack ?? "EOPNOTSUPP"
            })`,
            hint: "name the VLAN device (e.g. tsn0.100) in tsnInterfaces with vlan:, and keep " +
              "the qdisc on the device under it",
          }
          : undefined,
    });
  });
}
