#!/usr/bin/env python3
"""Reads the 802.1Q tag of every UDP/IPv4 frame arriving on an interface, the way a TSN
bridge's ingress port sees it, and counts frames by UDP destination port and PCP.

An AF_PACKET socket bound to the interface: the kernel hands frames to packet sockets before
any VLAN device could strip the tag, and a tag the NIC (or veth) carried out of band comes in
the PACKET_AUXDATA control message; an in-band one is parsed from the frame. Prints "ready" once
bound; stops after a frame to --stop-port (then drains for --drain seconds, for frames still in
another CPU's backlog) or after --timeout seconds, and prints one JSON document:

  {"ports": {"9003": {"6": 5}}, "untagged": {"9000": 2}, "vids": [100], "stopped": true}

ports: port -> PCP -> frames; untagged: port -> frames without a tag.
"""
import argparse
import json
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 1 << 4
VLAN_TPIDS = (0x8100, 0x88A8)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ifname", required=True)
    ap.add_argument("--stop-port", type=int, default=9999)
    ap.add_argument("--drain", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=120.0)
    a = ap.parse_args()

    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((a.ifname, 0))
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    ports: dict = {}
    untagged: dict = {}
    vids: set = set()
    stopped = False
    deadline = time.monotonic() + a.timeout
    print("ready", flush=True)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            data, anc, _flags, addr = s.recvmsg(65535, socket.CMSG_SPACE(64))
        except socket.timeout:
            break
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        tci = None
        for level, kind, d in anc:
            if level == SOL_PACKET and kind == PACKET_AUXDATA and len(d) >= 20:
                status, _len, _snap, _mac, _net, vtci, _tpid = struct.unpack("IIIHHHH", d[:20])
                if status & TP_STATUS_VLAN_VALID:
                    tci = vtci
        if len(data) < 14:
            continue
        etype = struct.unpack("!H", data[12:14])[0]
        off = 14
        if etype in VLAN_TPIDS and len(data) >= 18:
            tci = struct.unpack("!H", data[14:16])[0]
            etype = struct.unpack("!H", data[16:18])[0]
            off = 18
        ip = data[off:]
        if etype != 0x0800 or len(ip) < 20 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        if len(ip) < ihl + 4:
            continue
        dport = struct.unpack("!H", ip[ihl + 2:ihl + 4])[0]
        if dport == a.stop_port:
            if not stopped:
                stopped = True
                deadline = time.monotonic() + a.drain
            continue
        key = str(dport)
        if tci is None:
            untagged[key] = untagged.get(key, 0) + 1
            continue
        pcp = str(tci >> 13)
        vids.add(tci & 0x0FFF)
        by_pcp = ports.setdefault(key, {})
        by_pcp[pcp] = by_pcp.get(pcp, 0) + 1
    json.dump({"ports": ports, "untagged": untagged, "vids": sorted(vids), "stopped": stopped},
              sys.stdout)
    print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
