// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * BENCHMARK ONLY, NEVER SHIPPED: the research proof of concept's datapath rebuilt from its
 * description (shared/notes/research-design.md), so `deno task bench` can measure it side
 * by side with tsnproxy on the same topology and load.
 *
 *   saver     pod eth0 egress: EVERY packet is stored {priority, tstamp} under the kernel
 *             skb pointer (bpf_cast_to_kern_ctx); a packet without a stamp gets "now" in
 *             TAI; an existing entry is never overwritten (BPF_NOEXIST).
 *   restorer  TSN NIC egress: looks the pointer up, sets priority and the stamp with the
 *             mono delivery type, deletes the entry, returns TC_ACT_OK (ends the tc chain).
 *   gc        a bpf_timer every second deleting entries whose tstamp is in the past (TAI),
 *             armed by running rsch_gc_start once with BPF_PROG_TEST_RUN.
 *   map       2048-entry BPF_MAP_TYPE_HASH (preallocated: saving fails when it is full).
 *
 * No skb_clone tracking: fentry/fexit are refused on this kernel, and the measured paths
 * never clone. Because its restorer ends the chain, no observer after it ever runs, so
 * rsch_obs_restore is the same restorer that also counts what it lets leave, with the
 * same classification as tests/bpf/observer.c (it is the last program on the hook).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define CLOCK_MONOTONIC 1
#define RESEARCH_ENTRIES 2048
#define RESEARCH_GC_NS 1000000000ULL
#define SKB_CLOCK_MONO 1 /* BPF_SKB_TSTAMP_DELIVERY_MONO / BPF_SKB_CLOCK_MONOTONIC */

/* bpf_ktime_get_tai_ns is helper 208; libbpf 1.1.2's helper list predates it. */
static __u64 (*ktime_get_tai_ns)(void) = (void *)208;
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

struct research_meta {
	__u32 priority;
	__u32 _pad;
	__u64 tstamp;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RESEARCH_ENTRIES);
	__type(key, __u64);
	__type(value, struct research_meta);
} research_meta SEC(".maps");

struct research_timer {
	struct bpf_timer timer;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct research_timer);
} research_gc SEC(".maps");

/* What the benchmark reads: saves that failed (map full or key present), restores. */
enum { R_SAVED, R_SAVE_FULL, R_SAVE_EXISTS, R_RESTORED, R_MISS, R_GC_DELETED, R_GC_RUNS, R_MAX };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, R_MAX);
	__type(key, __u32);
	__type(value, __u64);
} research_stats SEC(".maps");

static __always_inline void count(__u32 k, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&research_stats, &k);

	if (v)
		*v += n;
}

static __always_inline __u64 skb_key(struct __sk_buff *skb)
{
	return (__u64)(unsigned long)bpf_cast_to_kern_ctx(skb);
}

SEC("tc")
int rsch_save(struct __sk_buff *skb)
{
	__u8 ttype = skb->tstamp_type; /* read so that a TAI stamp is visible */
	struct research_meta m = { .priority = skb->priority, .tstamp = skb->tstamp };
	__u64 key = skb_key(skb);
	long err;

	(void)ttype;
	if (!m.tstamp)
		m.tstamp = ktime_get_tai_ns();
	err = bpf_map_update_elem(&research_meta, &key, &m, BPF_NOEXIST);
	if (err == -17 /* EEXIST */)
		count(R_SAVE_EXISTS, 1);
	else if (err)
		count(R_SAVE_FULL, 1);
	else
		count(R_SAVED, 1);
	return TC_ACT_OK;
}

static __always_inline void restore(struct __sk_buff *skb)
{
	__u64 key = skb_key(skb);
	struct research_meta *m = bpf_map_lookup_elem(&research_meta, &key);

	if (!m) {
		count(R_MISS, 1);
		return;
	}
	skb->priority = m->priority;
	bpf_skb_set_tstamp(skb, m->tstamp, SKB_CLOCK_MONO);
	bpf_map_delete_elem(&research_meta, &key);
	count(R_RESTORED, 1);
}

SEC("tc")
int rsch_restore(struct __sk_buff *skb)
{
	restore(skb);
	return TC_ACT_OK;
}

/* ---- the in-program observer (same counts as tests/bpf/observer.c) ---- */

struct obs_counts {
	__u64 fwd_total;
	__u64 fwd_prio[17];
	__u64 local_total;
	__u64 local_prio[17];
	__u64 ts_ok, ts_bad, ts_none;
	__u64 ttype[4];
	__u64 gso;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct obs_counts);
} research_obs SEC(".maps");

static __always_inline void observe(struct __sk_buff *skb)
{
	__u32 zero = 0, prio = skb->priority;
	struct obs_counts *c = bpf_map_lookup_elem(&research_obs, &zero);
	__u8 proto;

	if (!c || skb->protocol != bpf_htons(ETH_P_IP))
		return;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + 9, &proto, 1) || proto != IPPROTO_UDP)
		return;
	if (prio > 16)
		prio = 16;
	if (skb->ingress_ifindex) {
		__sync_fetch_and_add(&c->fwd_total, 1);
		__sync_fetch_and_add(&c->fwd_prio[prio & 0x1f], 1);
	} else {
		__sync_fetch_and_add(&c->local_total, 1);
		__sync_fetch_and_add(&c->local_prio[prio & 0x1f], 1);
	}
}

SEC("tc")
int rsch_obs_restore(struct __sk_buff *skb)
{
	restore(skb);
	observe(skb);
	return TC_ACT_OK;
}

/* ---- GC ---- */

struct gc_ctx {
	__u64 now;
	__u64 deleted;
};

static long gc_one(void *map, __u64 *key, struct research_meta *m, struct gc_ctx *ctx)
{
	if (m->tstamp < ctx->now) {
		bpf_map_delete_elem(map, key);
		ctx->deleted++;
	}
	return 0;
}

static int gc_tick(void *map, __u32 *key, struct research_timer *t)
{
	struct gc_ctx ctx = { .now = ktime_get_tai_ns() };

	bpf_for_each_map_elem(&research_meta, gc_one, &ctx, 0);
	count(R_GC_DELETED, ctx.deleted);
	count(R_GC_RUNS, 1);
	bpf_timer_start(&t->timer, RESEARCH_GC_NS, 0);
	return 0;
}

SEC("tc")
int rsch_gc_start(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct research_timer *t = bpf_map_lookup_elem(&research_gc, &zero);
	long err;

	if (!t)
		return 1;
	err = bpf_timer_init(&t->timer, &research_gc, CLOCK_MONOTONIC);
	if (err && err != -16 /* EBUSY: armed already */)
		return 2;
	if (bpf_timer_set_callback(&t->timer, gc_tick))
		return 3;
	if (bpf_timer_start(&t->timer, RESEARCH_GC_NS, 0))
		return 4;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
