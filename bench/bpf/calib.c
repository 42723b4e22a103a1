// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * BENCHMARK ONLY.
 *
 * bench_nop: an empty tc program. BPF_PROG_TEST_RUN's duration includes the test loop's own
 * overhead; running this one the same way gives the floor that the benchmark subtracts from
 * every program's figure.
 *
 * bench_tagged: BPF_PROG_TEST_RUN cannot set skb->tc_index, so the restorer's tag path is
 * reached through this: it writes the tag a saver would have written for priority 3, then
 * tail-calls bench_next[0] (the restorer; bench_nop for this wrapper's own floor).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#define BENCH_TAG_PRIO3 0xa003 /* tsnp_tag(0, 3) in bpf/tsnproxy.h: slot 0, priority 3 */

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} bench_next SEC(".maps");

SEC("tc")
int bench_nop(struct __sk_buff *skb)
{
	return TC_ACT_UNSPEC;
}

SEC("tc")
int bench_tagged(struct __sk_buff *skb)
{
	skb->tc_index = BENCH_TAG_PRIO3;
	bpf_tail_call(skb, &bench_next, 0);
	return TC_ACT_SHOT; /* bench_next[0] empty: the benchmark checks the return value */
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
