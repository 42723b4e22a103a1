#!/usr/bin/env python3
"""An unmodified TSN-style talker: plain sockets with SO_PRIORITY and SO_TXTIME.

Writes the launch time (u64, little endian) into the first 8 payload bytes so the test
observer can compare it with skb->tstamp, then a sequence number.
"""
import argparse, socket, struct, time

SO_TXTIME = 61
SCM_TXTIME = SO_TXTIME
CLOCKS = {"tai": 11, "realtime": 0, "monotonic": 1}

p = argparse.ArgumentParser()
p.add_argument("--dst", required=True)
p.add_argument("--port", type=int, default=8080)
p.add_argument("--proto", choices=["udp", "tcp", "icmp"], default="udp")
p.add_argument("--count", type=int, default=100)
p.add_argument("--prio", type=int, help="SO_PRIORITY (absent: the socket's priority is never set, "
               "as an app that knows nothing of priorities)")
p.add_argument("--txtime", choices=list(CLOCKS), help="set SO_TXTIME with this clock")
p.add_argument("--txtime-offset-ms", type=float, default=5.0)
p.add_argument("--size", type=int, default=64, help="UDP/ICMP payload bytes")
p.add_argument("--pps", type=float, default=0, help="rate limit (0 = as fast as possible)")
p.add_argument("--constant", action="store_true", help="identical payloads (no sequence number)")
p.add_argument("--raw-ip-id", type=int, help="IPv4 UDP via a raw socket with this fixed IP id "
               "(forges byte-identical fingerprints from different senders)")
p.add_argument("--launch-offset", type=int, default=0,
               help="payload offset of the launch time (zeros before it: two senders can then "
               "share every byte a fingerprint reads)")
p.add_argument("--raw-src", help="with --raw-ip-id: this source address (a spoofed one)")
p.add_argument("--tos", type=int, help="IP_TOS / IPV6_TCLASS, set before SO_PRIORITY (which "
               "it would otherwise set from the TOS)")
a = p.parse_args()


def prioritize(s):
    if a.tos is not None:
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, a.tos)
        else:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, a.tos)
    if a.prio is not None or a.tos is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, a.prio or 0)

fam = socket.AF_INET6 if ":" in a.dst else socket.AF_INET
gap = 1.0 / a.pps if a.pps else 0
if a.proto == "tcp":
    s = socket.socket(fam, socket.SOCK_STREAM)
    prioritize(s)
    s.connect((a.dst, a.port))
    chunk = b"x" * 65536
    for _ in range(a.count):
        s.sendall(chunk)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    s.close()
    raise SystemExit(0)

if a.raw_ip_id is not None:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    if a.prio is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, a.prio)
    body = struct.pack("<QQ", 0, 0).ljust(max(a.size, 16), b"p")
    udp = struct.pack("!HHHH", 40000, a.port, 8 + len(body), 0) + body
    # version/ihl, tos, total length, id, DF, ttl, UDP, checksum and source filled by the kernel
    src = socket.inet_aton(a.raw_src) if a.raw_src else bytes(4)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), a.raw_ip_id, 0x4000, 64, 17, 0,
                     src, socket.inet_aton(a.dst))
    for _ in range(a.count):
        s.sendto(ip + udp, (a.dst, 0))
        if gap:
            time.sleep(gap)
    raise SystemExit(0)

if a.proto == "icmp":
    s = socket.socket(fam, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6 if fam == socket.AF_INET6 else socket.IPPROTO_ICMP)
else:
    s = socket.socket(fam, socket.SOCK_DGRAM)
prioritize(s)
if a.txtime:
    s.setsockopt(socket.SOL_SOCKET, SO_TXTIME, struct.pack("iI", CLOCKS[a.txtime], 0))
clock = {"tai": time.CLOCK_TAI, "realtime": time.CLOCK_REALTIME, "monotonic": time.CLOCK_MONOTONIC}
for i in range(a.count):
    launch = 0
    anc = []
    if a.txtime:
        launch = time.clock_gettime_ns(clock[a.txtime]) + int(a.txtime_offset_ms * 1e6)
        anc = [(socket.SOL_SOCKET, SCM_TXTIME, struct.pack("Q", launch))]
    seq = 0 if a.constant else i + 1
    body = (bytes(a.launch_offset) + struct.pack("<QQ", launch, seq)).ljust(max(a.size, 16), b"p")
    if a.proto == "icmp":
        body = struct.pack("!BBHHH", 128 if fam == socket.AF_INET6 else 8, 0, 0, 0, i & 0xFFFF) + body
    s.sendmsg([body], anc, 0, (a.dst, 0 if a.proto == "icmp" else a.port))
    if gap:
        time.sleep(gap)
