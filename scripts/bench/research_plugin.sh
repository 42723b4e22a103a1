#!/bin/bash
# BENCHMARK ONLY: the research proof of concept's per-pod CNI work, re-created from its
# description (shared/notes/research-design.md) to measure what one-process-per-step costs.
# Same steps and tools: jq per field and to echo prevResult, `bpftool prog show | grep | awk
# | sed | tail` per program id, a `bpftool net` + grep check before attaching the restorer
# once, lsns + grep + awk to resolve the pod netns, an attach via `ip netns exec`, and
# `bpftool prog run` to (re)start the GC. Logs to a file. DEL only logs.
#
# Substitution: bpftool 7.1 (Debian 12) cannot attach tc/tcx programs, so the two attach
# steps run `tc` (one process: `tc -batch`) on programs pinned in a bpffs mounted outside
# /sys (ip netns exec remounts /sys). Environment from the benchmark: RSCH_PINS (that bpffs),
# RSCH_LOG, RSCH_PKT (a packet file for bpftool prog run).
stdin=$(cat)
echo "$(date +%s.%N) $CNI_COMMAND $CNI_CONTAINERID $CNI_NETNS" >>"$RSCH_LOG"

if [ "$CNI_COMMAND" != "ADD" ]; then
  [ "$CNI_COMMAND" = "VERSION" ] && echo '{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}'
  exit 0
fi

cni_version=$(echo "$stdin" | jq -r '.cniVersion')
tsn_if=$(echo "$stdin" | jq -r '.tsnIfname')
direction=$(echo "$stdin" | jq -r '.tsnIngressOrEgress')
pod_if=$(echo "$stdin" | jq -r '.prevResult.interfaces[] | select(.sandbox != null) | .name')
echo "version=$cni_version tsn=$tsn_if dir=$direction if=$pod_if" >>"$RSCH_LOG"

if [ ! -e "$RSCH_PINS/rsch_save" ]; then
  echo "programs not pinned: the benchmark pins them before the first ADD" >>"$RSCH_LOG"
  exit 1
fi
save_id=$(bpftool prog show | grep rsch_save | awk '{print $1}' | sed 's/://' | tail -1)
restore_id=$(bpftool prog show | grep rsch_restore | awk '{print $1}' | sed 's/://' | tail -1)
echo "save=$save_id restore=$restore_id" >>"$RSCH_LOG"

if ! bpftool net show dev "$tsn_if" | grep -q rsch_restore; then
  tc -batch - <<TC >>"$RSCH_LOG" 2>&1
qdisc replace dev $tsn_if clsact
filter replace dev $tsn_if $direction prio 1 handle 1 bpf da pinned $RSCH_PINS/rsch_restore
TC
fi

# kind keeps netns under /var/run/netns; others are resolved through lsns (the PoC's path)
netns_name=$(basename "$CNI_NETNS")
lsns -t net | grep "$netns_name" | awk '{print $4}' >>"$RSCH_LOG"

ip netns exec "$netns_name" tc -batch - <<TC >>"$RSCH_LOG" 2>&1
qdisc replace dev $pod_if clsact
filter replace dev $pod_if egress prio 1 handle 1 bpf da pinned $RSCH_PINS/rsch_save
TC

bpftool prog run pinned "$RSCH_PINS/rsch_gc_start" data_in "$RSCH_PKT" repeat 1 >>"$RSCH_LOG" 2>&1

echo "$stdin" | jq '.prevResult'
