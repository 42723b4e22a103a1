#!/usr/bin/env python3
"""Sends IEEE 1722 (AVTP) frames from an AF_PACKET socket, as a TSN talker does, with
SO_PRIORITY and, optionally, SO_TXTIME launch times: not IP, so nothing but tsnproxy's
request stage carries an untyped launch time across the pod's veth. Test-only."""
import argparse, socket, struct, time

SO_TXTIME, SCM_TXTIME = 61, 61
CLOCKS = {"tai": 11, "realtime": 0, "monotonic": 1}
p = argparse.ArgumentParser()
p.add_argument("--ifname", default="eth0")
p.add_argument("--count", type=int, default=100)
p.add_argument("--prio", type=int, default=0)
p.add_argument("--txtime", choices=list(CLOCKS))
p.add_argument("--txtime-offset-ms", type=float, default=5.0)
p.add_argument("--pps", type=float, default=0)
p.add_argument("--stream", type=int, default=1, help="the AVTP stream id")
a = p.parse_args()

ETH_P_TSN = 0x22F0
dst = bytes.fromhex("91e0f000fe00")  # the AVTP multicast range
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_TSN))
s.bind((a.ifname, 0))
src = s.getsockname()[4]
s.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, a.prio)
if a.txtime:
    s.setsockopt(socket.SOL_SOCKET, SO_TXTIME, struct.pack("iI", CLOCKS[a.txtime], 0))
clock = {"tai": time.CLOCK_TAI, "realtime": time.CLOCK_REALTIME, "monotonic": time.CLOCK_MONOTONIC}
gap = 1.0 / a.pps if a.pps else 0
for i in range(a.count):
    launch, anc = 0, []
    if a.txtime:
        launch = time.clock_gettime_ns(clock[a.txtime]) + int(a.txtime_offset_ms * 1e6)
        anc = [(socket.SOL_SOCKET, SCM_TXTIME, struct.pack("Q", launch))]
    # AVTP common header: subtype 0x02 (AAF), sv, sequence, stream id; then the launch time
    # at payload offset 16 (the observer reads it there), padding.
    avtp = struct.pack("!BBBBQI", 0x02, 0x81, i & 0xFF, 0, a.stream, 0) + struct.pack("<Q", launch)
    s.sendmsg([dst + src + struct.pack("!H", ETH_P_TSN) + avtp.ljust(64, b"\0")], anc)
    if gap:
        time.sleep(gap)
