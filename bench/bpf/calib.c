// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * BENCHMARK ONLY.
 *
 * bench_nop: an empty tc program. BPF_PROG_TEST_RUN's duration includes the test loop's own
 * overhead, and the kernel's run-time stats on a real hook include the stats' own clock reads
 * and the dispatch: running or attaching this one the same way gives the floor that the
 * benchmark subtracts from every program's figure.
 *
 * bench_tc_index: BPF_PROG_TEST_RUN cannot set skb->tc_index, but it can set skb->mark. This
 * moves the mark into tc_index (a saver's request for admit, a tag for the restorer), clears
 * the mark and tail-calls bench_next[0] (the program measured; bench_nop for this wrapper's
 * own floor).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

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
int bench_tc_index(struct __sk_buff *skb)
{
	skb->tc_index = skb->mark;
	skb->mark = 0;
	bpf_tail_call(skb, &bench_next, 0);
	return TC_ACT_SHOT; /* bench_next[0] empty: the benchmark checks the return value */
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
