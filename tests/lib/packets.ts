/**
 * Packet builders for BPF_PROG_TEST_RUN, and a TypeScript mirror of the datapath's
 * fingerprint (bpf/tsnproxy.h tsnp_fingerprint) so tests can check the kernel's keys.
 */
import { TsnpFp } from "../../src/ffi/structs/datapath.ts";
import { encode } from "../../src/ffi/structs/layout.ts";

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
    const frag = ((s.df ?? true) ? 0x4000 : 0) | (s.fragOffset ?? 0);
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

/** What tsnp_fingerprint() computes for the packet, encoded as the map key. */
export function fingerprint(pkt: Uint8Array): Uint8Array<ArrayBuffer> {
  const dv = new DataView(pkt.buffer, pkt.byteOffset, pkt.byteLength);
  let off = 12;
  let type = dv.getUint16(off);
  for (let i = 0; i < 2 && (type === 0x8100 || type === 0x88a8); i++) {
    off += 4;
    type = dv.getUint16(off);
  }
  const l3 = off + 2;
  const payload = new Uint8Array(12);
  let end = pkt.length; // the IP packet's end (set below): link-layer padding is not payload
  const sample = (at: number) => {
    if (at < end) payload.set(pkt.subarray(at, Math.min(at + 12, end)));
  };
  // Native-endian u32 of 4 packet bytes (the BPF program copies them as they are).
  const raw32 = (at: number) => dv.getUint32(at, true);
  const fields = { family: 0, l4proto: 0, l3len: 0, l3id: 0, l4a: 0, l4b: 0, l4c: 0 };
  let l4 = 0;
  if (pkt[l3] >> 4 === 4) {
    fields.family = 4;
    fields.l4proto = pkt[l3 + 9];
    fields.l3len = dv.getUint16(l3 + 2, true);
    fields.l3id = raw32(l3 + 4);
    const total = dv.getUint16(l3 + 2);
    if (total) end = Math.min(end, l3 + total);
    l4 = l3 + (pkt[l3] & 0xf) * 4;
    if ((pkt[l3 + 6] & 0x1f) | pkt[l3 + 7]) {
      sample(l4);
      return encode(TsnpFp, { ...fields, payload });
    }
  } else {
    fields.family = 6;
    fields.l4proto = pkt[l3 + 6];
    fields.l3len = dv.getUint16(l3 + 4, true);
    fields.l3id = ((pkt[l3 + 1] & 0x0f) << 16) | (pkt[l3 + 2] << 8) | pkt[l3 + 3];
    const plen = dv.getUint16(l3 + 4);
    if (plen) end = Math.min(end, l3 + 40 + plen);
    l4 = l3 + 40;
  }
  switch (fields.l4proto) {
    case 6:
      fields.l4a = raw32(l4 + 4);
      fields.l4b = raw32(l4 + 8);
      fields.l4c = raw32(l4 + 12);
      sample(l4 + ((pkt[l4 + 12] & 0xf0) >> 2));
      break;
    case 17:
      fields.l4a = raw32(l4 + 4) & 0x0000ffff; // the length's two bytes, in memory order
      sample(l4 + 8);
      break;
    case 1:
    case 58:
      fields.l4a = ((pkt[l4] << 24) | (pkt[l4 + 1] << 16) | (pkt[l4 + 6] << 8) | pkt[l4 + 7]) >>> 0;
      sample(l4 + 8);
      break;
    default:
      sample(l4);
  }
  return encode(TsnpFp, { ...fields, payload });
}
