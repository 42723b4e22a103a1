/**
 * netkit device pairs (kernel 6.7+; the Debian 6.12 guest has CONFIG_NETKIT=y), created
 * through our own rtnetlink layer: iproute2 6.1 here cannot. As Cilium's netkit mode does,
 * the primary device stays in the node's namespace and the peer goes into the pod's.
 */
import { NlRequest } from "../../src/netlink/message.ts";
import { RtnlSocket } from "../../src/netlink/socket.ts";
import {
  IFLA_IFNAME,
  IFLA_INFO_DATA,
  IFLA_INFO_KIND,
  IFLA_LINKINFO,
  IFLA_NET_NS_FD,
  IFLA_NETKIT_MODE,
  IFLA_NETKIT_PEER_INFO,
  IFLA_NETKIT_PEER_POLICY,
  IFLA_NETKIT_POLICY,
  NETKIT_L2,
  NETKIT_L3,
  NETKIT_PASS,
  NLM_F_CREATE,
  NLM_F_EXCL,
  RTM_NEWLINK,
} from "../../src/netlink/constants.ts";
import { ifinfomsg } from "../../src/ffi/structs/netlink.ts";
import { encode } from "../../src/ffi/structs/layout.ts";
import { closeFd, openReadOnly, strerror } from "../../src/ffi/libc.ts";

export interface NetkitPair {
  /** The primary device, in the calling thread's namespace (the node). */
  primary: string;
  /** The peer, moved into the namespace at `peerNetns` (a path, e.g. /run/netns/pod0). */
  peer: string;
  peerNetns: string;
  /** Cilium's default "netkit" mode is L3; "netkit-l2" is L2. */
  mode: "l2" | "l3";
}

/** Creates the pair with both policies "pass" (what runs when no program is attached). */
export function createNetkit(p: NetkitPair): void {
  const nsFd = openReadOnly(p.peerNetns);
  if (nsFd < 0) throw new Error(`cannot open ${p.peerNetns}: ${strerror(-nsFd)}`);
  try {
    const req = new NlRequest(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    req.extraHeader(encode(ifinfomsg, {}));
    req.strz(IFLA_IFNAME, p.primary);
    req.nest(IFLA_LINKINFO, (m) => {
      m.strz(IFLA_INFO_KIND, "netkit");
      m.nest(IFLA_INFO_DATA, (d) => {
        d.u32(IFLA_NETKIT_MODE, p.mode === "l2" ? NETKIT_L2 : NETKIT_L3);
        d.u32(IFLA_NETKIT_POLICY, NETKIT_PASS);
        d.u32(IFLA_NETKIT_PEER_POLICY, NETKIT_PASS);
        // The peer's own ifinfomsg, then its attributes (as veth's VETH_INFO_PEER).
        d.nest(IFLA_NETKIT_PEER_INFO, (peer) => {
          peer.extraHeader(encode(ifinfomsg, {}));
          peer.strz(IFLA_IFNAME, p.peer);
          peer.u32(IFLA_NET_NS_FD, nsFd);
        });
      });
    });
    using sock = RtnlSocket.open();
    sock.request(req, { what: `create netkit pair ${p.primary}/${p.peer}` });
  } finally {
    closeFd(nsFd);
  }
}
