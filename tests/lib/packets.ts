/**
 * Packet builders for BPF_PROG_TEST_RUN: Ethernet frames carrying IPv4/IPv6 with UDP, TCP or
 * ICMP (VLAN tags, IP and TCP options, fragments), and the same frames as the node's tunnels
 * send them (VXLAN, Geneve, IPIP, SIT), so tests can run the datapath's real programs over
 * what NAT, routing and encapsulation make of a pod's packet.
 */

export interface PacketSpec {
  family: 4 | 6;
  proto: "udp" | "tcp" | "icmp";
  src?: string;
  dst?: string;
  sport?: number;
  dport?: number;
  ttl?: number;
  tos?: number;
  ipId?: number;
  df?: boolean;
  /** IPv4 fragment offset in 8-byte units (non-zero: a later fragment). */
  fragOffset?: number;
  /** IPv4 more-fragments flag (a first or middle fragment). */
  moreFragments?: boolean;
  flowLabel?: number;
  tcpSeq?: number;
  tcpAck?: number;
  tcpFlags?: number;
  tcpWindow?: number;
  icmpId?: number;
  icmpSeq?: number;
  payload?: Uint8Array;
  /** 802.1Q tag in the frame. */
  vlan?: number;
  /** An 802.1ad outer tag before the 802.1Q one (QinQ). */
  outerVlan?: number;
  /** IPv4 options, in 4-byte words (NOPs). */
  ipOptionWords?: number;
  /** TCP options, in 4-byte words (NOPs). */
  tcpOptionWords?: number;
  /** Value of the bytes padding a short frame to 60 bytes (default 0). */
  padByte?: number;
  /** Garbage in the L4 checksum field (NAT rewrites it). */
  l4Checksum?: number;
}

function v4(a: string): number[] {
  return a.split(".").map(Number);
}
function v6(a: string): number[] {
  const [h, t = ""] = a.split("::");
  const hs = h ? h.split(":") : [];
  const ts = a.includes("::") && t ? t.split(":") : [];
  const g = [...hs, ...Array(8 - hs.length - ts.length).fill("0"), ...ts];
  return g.flatMap((x) => {
    const n = parseInt(x, 16);
    return [n >> 8, n & 0xff];
  });
}

/** An Ethernet frame carrying the described packet. */
export function buildPacket(s: PacketSpec): Uint8Array<ArrayBuffer> {
  const payload = s.payload ?? new TextEncoder().encode("tsnproxy-payload-0123456789");
  const l4: number[] = [];
  const u16 = (n: number) => [(n >> 8) & 0xff, n & 0xff];
  const u32 = (n: number) => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
  if (s.proto === "udp") {
    l4.push(
      ...u16(s.sport ?? 40000),
      ...u16(s.dport ?? 8080),
      ...u16(8 + payload.length),
      ...u16(s.l4Checksum ?? 0),
    );
  } else if (s.proto === "tcp") {
    l4.push(
      ...u16(s.sport ?? 40000),
      ...u16(s.dport ?? 8080),
      ...u32(s.tcpSeq ?? 1000),
      ...u32(s.tcpAck ?? 2000),
      (5 + (s.tcpOptionWords ?? 0)) << 4,
      s.tcpFlags ?? 0x18,
      ...u16(s.tcpWindow ?? 512),
      ...u16(s.l4Checksum ?? 0),
      0,
      0,
      ...Array(4 * (s.tcpOptionWords ?? 0)).fill(1),
    );
  } else {
    l4.push(
      s.family === 4 ? 8 : 128,
      0,
      ...u16(s.l4Checksum ?? 0),
      ...u16(s.icmpId ?? 7),
      ...u16(s.icmpSeq ?? 1),
    );
  }
  const body = [...l4, ...payload];
  const proto = s.proto === "udp" ? 17 : s.proto === "tcp" ? 6 : s.family === 4 ? 1 : 58;
  let l3: number[];
  if (s.family === 4) {
    const frag = ((s.df ?? true) ? 0x4000 : 0) | (s.moreFragments ? 0x2000 : 0) |
      (s.fragOffset ?? 0);
    const options = Array(4 * (s.ipOptionWords ?? 0)).fill(1);
    l3 = [
      0x40 | (5 + (s.ipOptionWords ?? 0)),
      s.tos ?? 0,
      ...u16(20 + options.length + body.length),
      ...u16(s.ipId ?? 0x1234),
      ...u16(frag),
      s.ttl ?? 64,
      proto,
      0,
      0,
      ...v4(s.src ?? "10.244.0.10"),
      ...v4(s.dst ?? "198.18.0.2"),
      ...options,
    ];
  } else {
    const fl = s.flowLabel ?? 0x12345;
    const tc = s.tos ?? 0;
    l3 = [
      0x60 | (tc >> 4),
      ((tc & 0xf) << 4) | ((fl >> 16) & 0xf),
      (fl >> 8) & 0xff,
      fl & 0xff,
      ...u16(body.length),
      proto,
      s.ttl ?? 64,
      ...v6(s.src ?? "fd00:244::a"),
      ...v6(s.dst ?? "2001:db8:18::2"),
    ];
  }
  const ethType = s.family === 4 ? [0x08, 0x00] : [0x86, 0xdd];
  const macs = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
  const vlan = [
    ...(s.outerVlan !== undefined ? [0x88, 0xa8, ...u16(s.outerVlan)] : []),
    ...(s.vlan !== undefined ? [0x81, 0x00, ...u16(s.vlan)] : []),
  ];
  const frame = [...macs, ...vlan, ...ethType, ...l3, ...body];
  // Ethernet minimum; the IP length bounds the packet. Padding bytes are normally zero; a test
  // can make them garbage to prove they are not part of the fingerprint.
  while (frame.length < 60) frame.push(s.padByte ?? 0);
  return new Uint8Array(frame);
}

/** A frame that is not IP (e.g. an IEEE 1722 AVTP stream: ethertype 0x22f0). */
export function buildL2Frame(ethType: number, payload: Uint8Array): Uint8Array<ArrayBuffer> {
  const frame = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, ethType >> 8, ethType & 0xff, ...payload];
  while (frame.length < 60) frame.push(0);
  return new Uint8Array(frame);
}

export type Tunnel = "vxlan" | "vxlan-linux" | "geneve" | "ipip" | "sit";

export interface TunnelSpec {
  kind: Tunnel;
  /** The outer IP family (IPIP/SIT: always 4). */
  outerFamily?: 4 | 6;
  /** Geneve options, in 4-byte words. */
  geneveOptionWords?: number;
}

const VXLAN_PORT = 4789;
const VXLAN_LINUX_PORT = 8472;
const GENEVE_PORT = 6081;

/** The IP packet inside an Ethernet frame built above (no VLAN tags; padding dropped). */
function innerIp(frame: Uint8Array): Uint8Array {
  const ip = frame.subarray(14);
  const len = ip[0] >> 4 === 4 ? (ip[2] << 8) | ip[3] : 40 + ((ip[4] << 8) | ip[5]);
  return ip.subarray(0, len);
}

/**
 * The frame as the node's tunnel device sends it: an outer Ethernet + IP (+ UDP and the
 * VXLAN/Geneve header, carrying the whole inner frame; IPIP/SIT carry the inner IP packet).
 */
export function encapsulate(frame: Uint8Array, t: TunnelSpec): Uint8Array<ArrayBuffer> {
  const u16 = (n: number) => [(n >> 8) & 0xff, n & 0xff];
  let proto: number;
  let body: number[];
  if (t.kind === "ipip" || t.kind === "sit") {
    const inner = innerIp(frame);
    if ((inner[0] >> 4) !== (t.kind === "ipip" ? 4 : 6)) {
      throw new Error(`${t.kind} carries IPv${t.kind === "ipip" ? 4 : 6}`);
    }
    proto = t.kind === "ipip" ? 4 : 41;
    body = [...inner];
  } else {
    let header: number[];
    let port: number;
    if (t.kind === "geneve") {
      const words = t.geneveOptionWords ?? 0;
      header = [words & 0x3f, 0, 0x65, 0x58, 0, 0x12, 0x34, 0, ...Array(words * 4).fill(0xa5)];
      port = GENEVE_PORT;
    } else {
      header = [0x08, 0, 0, 0, 0, 0x12, 0x34, 0];
      port = t.kind === "vxlan" ? VXLAN_PORT : VXLAN_LINUX_PORT;
    }
    const udpLen = 8 + header.length + frame.length;
    proto = 17;
    body = [...u16(51234), ...u16(port), ...u16(udpLen), 0, 0, ...header, ...frame];
  }
  const family = t.kind === "ipip" || t.kind === "sit" ? 4 : t.outerFamily ?? 4;
  const l3 = family === 4
    ? [
      0x45,
      0,
      ...u16(20 + body.length),
      ...u16(0x7777),
      0x40,
      0,
      64,
      proto,
      0,
      0,
      ...[192, 0, 2, 1],
      ...[192, 0, 2, 2],
    ]
    : [
      0x60,
      0,
      0,
      0,
      ...u16(body.length),
      proto,
      64,
      ...[0x20, 0x01, 0x0d, 0xb8, ...Array(11).fill(0), 1],
      ...[0x20, 0x01, 0x0d, 0xb8, ...Array(11).fill(0), 2],
    ];
  const ethType = family === 4 ? [0x08, 0x00] : [0x86, 0xdd];
  const out = [2, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0, 3, ...ethType, ...l3, ...body];
  while (out.length < 60) out.push(0);
  return new Uint8Array(out);
}
