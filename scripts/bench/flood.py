#!/usr/bin/env python3
"""Benchmark talker: UDP (or TCP) with SO_PRIORITY, as fast as possible or paced, for a
count or a duration. Each UDP payload starts with a sequence number, so no two packets are
byte-identical. Prints one JSON line: {"sent": packets, "bytes": ..., "seconds": ...}."""
import argparse, json, socket, struct, time

p = argparse.ArgumentParser()
p.add_argument("--dst", required=True)
p.add_argument("--port", type=int, default=9000)
p.add_argument("--proto", choices=["udp", "tcp"], default="udp")
p.add_argument("--prio", type=int, default=0)
p.add_argument("--size", type=int, default=64, help="UDP payload bytes")
p.add_argument("--pps", type=float, default=0, help="paced rate (0 = flat out)")
p.add_argument("--count", type=int, default=0, help="packets (0 = until --duration)")
p.add_argument("--duration", type=float, default=0, help="seconds (0 = until --count)")
a = p.parse_args()

fam = socket.AF_INET6 if ":" in a.dst else socket.AF_INET
start = time.monotonic()
end = start + a.duration if a.duration else float("inf")
sent = 0
nbytes = 0
if a.proto == "tcp":
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, a.prio)
    s.connect((a.dst, a.port))
    chunk = b"x" * 262144
    while time.monotonic() < end and (not a.count or sent < a.count):
        s.sendall(chunk)
        sent += 1
        nbytes += len(chunk)
    s.close()
else:
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, a.prio)
    s.connect((a.dst, a.port))  # connected: the kernel numbers the IP ids
    pad = b"p" * max(0, a.size - 8)
    pack = struct.Struct("<Q").pack
    send = s.send
    gap = 1.0 / a.pps if a.pps else 0.0
    count = a.count or (1 << 62)
    if gap:
        nxt = start
        while sent < count and time.monotonic() < end:
            now = time.monotonic()
            if now < nxt:
                time.sleep(nxt - now)
            nxt += gap
            try:
                send(pack(sent) + pad)
            except OSError:
                pass
            sent += 1
    else:
        check = 0
        while sent < count:
            try:
                send(pack(sent) + pad)
            except OSError:
                pass
            sent += 1
            check += 1
            if check == 256:
                check = 0
                if time.monotonic() >= end:
                    break
    nbytes = sent * (8 + len(pad))
print(json.dumps({"sent": sent, "bytes": nbytes, "seconds": time.monotonic() - start}))
