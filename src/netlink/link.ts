/**
 * Link queries over RTM_GETLINK: what tsnproxy needs to know about an interface (kind, peer,
 * queues, XDP attachment) without iproute2.
 */
import { KernelError, NotFoundError } from "../errors.ts";
import { Errno } from "../ffi/libc.ts";
import { encode } from "../ffi/structs/layout.ts";
import { ifinfomsg } from "../ffi/structs/netlink.ts";
import {
  IFF_RUNNING,
  IFF_UP,
  IFLA_ADDRESS,
  IFLA_EXT_MASK,
  IFLA_IFNAME,
  IFLA_INFO_KIND,
  IFLA_INFO_SLAVE_KIND,
  IFLA_LINK,
  IFLA_LINK_NETNSID,
  IFLA_LINKINFO,
  IFLA_MASTER,
  IFLA_MTU,
  IFLA_NUM_RX_QUEUES,
  IFLA_NUM_TX_QUEUES,
  IFLA_OPERSTATE,
  IFLA_XDP,
  IFLA_XDP_ATTACHED,
  IFLA_XDP_PROG_ID,
  RTEXT_FILTER_SKIP_STATS,
  RTM_GETLINK,
  RTM_NEWLINK,
} from "./constants.ts";
import { Attrs, type NlMessage, NlRequest } from "./message.ts";
import { type RtnlSocket, withRtnl } from "./socket.ts";
import { type VlanLinkInfo, vlanOf } from "./vlan.ts";

/** RFC 2863 operational states (IF_OPER_*), as `ip link` prints them, lower case. */
const OPERSTATES = [
  "unknown",
  "notpresent",
  "down",
  "lowerlayerdown",
  "testing",
  "dormant",
  "up",
] as const;
export type OperState = typeof OPERSTATES[number];

/** XDP attach modes (XDP_ATTACHED_*). */
const XDP_MODES = ["none", "driver", "generic", "offload", "multi"] as const;
export type XdpMode = typeof XDP_MODES[number];

export interface LinkInfo {
  index: number;
  name: string;
  /** IFF_* flags. */
  flags: number;
  /** Administratively up (IFF_UP). */
  up: boolean;
  /** IFF_RUNNING (carrier and up). */
  running: boolean;
  operstate: OperState;
  mtu: number;
  numTxQueues: number;
  numRxQueues: number;
  /** IFLA_INFO_KIND: "veth", "bridge", "vlan"...; undefined for physical NICs and lo. */
  kind?: string;
  /** IFLA_INFO_SLAVE_KIND, e.g. "bridge" for a bridge port. */
  slaveKind?: string;
  /**
   * IFLA_LINK: for veth the peer's ifindex (in the namespace named by linkNetnsId when set),
   * for vlan/macvlan the lower device. Absent when the kernel reports none.
   */
  link?: number;
  /** IFLA_LINK_NETNSID: the peer/lower device lives in another namespace with this id. */
  linkNetnsId?: number;
  /** IFLA_MASTER: bridge or bond this device is enslaved to. */
  master?: number;
  /** XDP attach mode; "none" when nothing is attached. */
  xdpMode: XdpMode;
  /** Id of the attached XDP program (single attachment), undefined when none. */
  xdpProgId?: number;
  /** Hardware address, "aa:bb:cc:dd:ee:ff" (undefined for devices without one). */
  address?: string;
  /** A VLAN device's id, protocol and qos maps (kind "vlan" only). */
  vlan?: VlanLinkInfo;
}

function macString(b: Uint8Array | undefined): string | undefined {
  if (!b || b.length === 0) return undefined;
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(":");
}

/** Decodes one RTM_NEWLINK message. */
export function parseLink(m: NlMessage): LinkInfo {
  const dv = new DataView(m.payload.buffer, m.payload.byteOffset, m.payload.byteLength);
  const index = dv.getInt32(ifinfomsg.fields.ifi_index[0], true);
  const flags = dv.getUint32(ifinfomsg.fields.ifi_flags[0], true);
  const a = new Attrs(m.payload.subarray(ifinfomsg.size));
  const info = a.nested(IFLA_LINKINFO);
  const xdp = a.nested(IFLA_XDP);
  const xdpAttached = xdp?.u8(IFLA_XDP_ATTACHED) ?? 0;
  const xdpProgId = xdp?.u32(IFLA_XDP_PROG_ID);
  const link = a.u32(IFLA_LINK);
  const master = a.u32(IFLA_MASTER);
  const out: LinkInfo = {
    index,
    name: a.str(IFLA_IFNAME) ?? "",
    flags,
    up: (flags & IFF_UP) !== 0,
    running: (flags & IFF_RUNNING) !== 0,
    operstate: OPERSTATES[a.u8(IFLA_OPERSTATE) ?? 0] ?? "unknown",
    mtu: a.u32(IFLA_MTU) ?? 0,
    numTxQueues: a.u32(IFLA_NUM_TX_QUEUES) ?? 1,
    numRxQueues: a.u32(IFLA_NUM_RX_QUEUES) ?? 1,
    xdpMode: XDP_MODES[xdpAttached] ?? "multi",
  };
  const kind = info?.str(IFLA_INFO_KIND);
  if (kind) out.kind = kind;
  const slaveKind = info?.str(IFLA_INFO_SLAVE_KIND);
  if (slaveKind) out.slaveKind = slaveKind;
  if (link !== undefined && link !== index) out.link = link;
  const nsid = a.s32(IFLA_LINK_NETNSID);
  if (nsid !== undefined) out.linkNetnsId = nsid;
  if (master !== undefined && master !== 0) out.master = master;
  if (xdpProgId !== undefined && xdpProgId !== 0) out.xdpProgId = xdpProgId;
  const mac = macString(a.raw(IFLA_ADDRESS));
  if (mac) out.address = mac;
  const vlan = vlanOf(a);
  if (vlan) out.vlan = vlan;
  return out;
}

function linkRequest(flags: number, index: number): NlRequest {
  const req = new NlRequest(RTM_GETLINK, flags);
  req.extraHeader(encode(ifinfomsg, { ifi_index: index }));
  req.u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
  return req;
}

/** The link, or undefined when no interface has that name/index in this namespace. */
export function findLink(nameOrIndex: string | number, sock?: RtnlSocket): LinkInfo | undefined {
  return withRtnl(sock, (s) => {
    const byIndex = typeof nameOrIndex === "number";
    const req = linkRequest(0, byIndex ? nameOrIndex : 0);
    if (!byIndex) req.strz(IFLA_IFNAME, nameOrIndex);
    try {
      const replies = s.request(req, { what: `get link ${nameOrIndex}` });
      const m = replies.find((r) => r.type === RTM_NEWLINK);
      return m ? parseLink(m) : undefined;
    } catch (e) {
      if (e instanceof KernelError && e.errno === Errno.ENODEV) return undefined;
      throw e;
    }
  });
}

/** The link; NotFoundError when it does not exist in the calling thread's namespace. */
export function getLink(nameOrIndex: string | number, sock?: RtnlSocket): LinkInfo {
  const found = findLink(nameOrIndex, sock);
  if (found) return found;
  throw new NotFoundError(
    `interface ${nameOrIndex} not found in this network namespace`,
    typeof nameOrIndex === "string"
      ? "check the interface name (`ip link`) and the network namespace tsnproxy runs in"
      : "the interface index is stale: the interface was deleted or moved to another namespace",
  );
}

/** Every link in the calling thread's network namespace. */
export function listLinks(sock?: RtnlSocket): LinkInfo[] {
  return withRtnl(sock, (s) =>
    s.dump(linkRequest(0, 0), { what: "list links" })
      .filter((m) => m.type === RTM_NEWLINK)
      .map(parseLink));
}
