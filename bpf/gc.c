// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * gc: a bpf_timer (CLOCK_MONOTONIC) that removes fingerprint entries older than the
 * configured age: packets that were saved but never reached the restorer (pod-to-pod
 * traffic, drops). tsnp_meta is an LRU, so the GC is hygiene and accounting, not what
 * keeps saving possible. `tsnproxy install` runs tsnp_gc_start once (BPF_PROG_TEST_RUN);
 * the timer lives as long as the pinned tsnp_gc map does.
 */
#include "tsnproxy.h"

#define CLOCK_MONOTONIC 1

struct gc_ctx {
	__u64 now;
	__u64 max_age;
	__u64 expired;
};

static long expire_one(void *map, struct tsnp_fp *key, struct tsnp_meta *m, struct gc_ctx *ctx)
{
	if (tsnp_older_than(ctx->now, m->saved_ns, ctx->max_age)) {
		bpf_map_delete_elem(map, key);
		ctx->expired++;
	}
	return 0;
}

/*
 * Expresses max_age in jiffies for the restorer's gate (see struct tsnp_live), from the
 * jiffies that passed since the previous tick against the clock. One more jiffy than
 * measured, and two of slack, so the gate errs open: a late close costs a lookup, an early
 * one would lose a restore.
 */
static void calibrate_gate(struct tsnp_live *live, __u64 now, __u64 max_age)
{
	__u64 j = bpf_jiffies64();

	if (live->cal_ns && now > live->cal_ns && j >= live->cal_jiffies)
		live->gate_jiffies = max_age * (j - live->cal_jiffies + 1) / (now - live->cal_ns) + 2;
	live->cal_ns = now;
	live->cal_jiffies = j;
}

static int gc_tick(void *map, __u32 *key, struct tsnp_gc_timer *t)
{
	struct tsnp_live *live = tsnp_live_get();
	struct tsnp_config *cfg = tsnp_config_get();
	struct gc_ctx ctx = {};
	__u32 k = TSNP_GC_EXPIRED;
	__u64 *v;

	if (!cfg)
		return 0;
	ctx.now = bpf_ktime_get_ns();
	ctx.max_age = cfg->max_age_ns;
	if (live)
		calibrate_gate(live, ctx.now, ctx.max_age);
	bpf_for_each_map_elem(&tsnp_meta, expire_one, &ctx, 0);
	v = bpf_map_lookup_elem(&tsnp_stats, &k);
	if (v)
		*v += ctx.expired;
	tsnp_count(TSNP_GC_RUNS);
	bpf_timer_start(&t->timer, cfg->gc_interval_ns, 0);
	return 0;
}

/* Arms (or re-arms) the GC timer; safe to run again after a config change. */
SEC("tc")
int tsnp_gc_start(struct __sk_buff *skb)
{
	struct tsnp_config *cfg = tsnp_config_get();
	struct tsnp_gc_timer *t;
	__u32 zero = 0;
	long err;

	t = bpf_map_lookup_elem(&tsnp_gc, &zero);
	if (!t || !cfg || !cfg->gc_interval_ns)
		return 1;
	err = bpf_timer_init(&t->timer, &tsnp_gc, CLOCK_MONOTONIC);
	if (err && err != -16 /* -EBUSY: already initialized */)
		return 2;
	if (bpf_timer_set_callback(&t->timer, gc_tick))
		return 3;
	if (bpf_timer_start(&t->timer, cfg->gc_interval_ns, 0))
		return 4;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
