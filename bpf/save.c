// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * save: tc egress of the pod's interface, inside the pod's network namespace.
 *
 * Takes the TSN metadata the app's socket put on a packet (SO_PRIORITY -> skb->priority,
 * SO_TXTIME + SCM_TXTIME -> skb->tstamp), applies the pod's priority policy, and puts it
 * where it survives the way to the TSN NIC (see tsnproxy.h): in the tag (skb->tc_index) for
 * a priority of 0-15, in the fingerprint table for what the tag cannot carry. Packets
 * without metadata (priority 0, no launch time) cost a few loads and are left as they are.
 */
#include "tsnproxy.h"

static __always_inline int same_addr(struct tsnp_addr *a, struct tsnp_addr *b)
{
	__u64 x[2], y[2];

	__builtin_memcpy(x, a, sizeof(x));
	__builtin_memcpy(y, b, sizeof(y));
	return x[0] == y[0] && x[1] == y[1];
}

/* The pod's policy: its own entry (by source address) or the node default, through this
 * CPU's one-entry cache (struct tsnp_policy_cache). */
static __always_inline struct tsnp_policy *policy_for(struct tsnp_addr *src, struct tsnp_config *cfg)
{
	__u32 zero = 0;
	struct tsnp_policy_cache *c = bpf_map_lookup_elem(&tsnp_policy_cache, &zero);
	__u64 *genp = bpf_map_lookup_elem(&tsnp_policy_gen, &zero);
	__u64 gen = genp ? *genp : 0;
	struct tsnp_policy *p;

	if (c && gen && c->gen == gen && same_addr(&c->src, src))
		return &c->policy;
	p = bpf_map_lookup_elem(&tsnp_policy, src);
	if (!p)
		p = &cfg->default_policy;
	if (!c)
		return p;
	c->src = *src;
	c->policy = *p;
	c->gen = gen;
	return &c->policy;
}

static __always_inline __u32 apply_policy(struct tsnp_policy *p, __u32 prio)
{
	if ((p->flags & TSNP_POLICY_REMAP) && prio < 16)
		prio = p->remap[prio & 0xf];
	if (prio > p->max_priority)
		prio = p->max_priority;
	return prio;
}

/*
 * A packet without metadata of its own must not carry a tag out of the pod: one that
 * arrived tagged from another pod and is routed on by this one would otherwise restore
 * the first pod's priority. Another program's tc_index is left alone.
 */
static __always_inline int untag(struct __sk_buff *skb)
{
	if (tsnp_is_tag(skb->tc_index))
		skb->tc_index = 0;
	return TSNP_NEXT;
}

/* The fingerprint table, for metadata the tag cannot carry. Returns 0, or -1 (not saved). */
static __always_inline int save_to_table(struct __sk_buff *skb, struct tsnp_meta *meta)
{
	struct tsnp_fp fp = {};
	struct tsnp_meta *old;
	struct tsnp_live *live;

	if (tsnp_fingerprint(skb, &fp) < 0)
		return -1;
	meta->saved_ns = bpf_ktime_get_ns();
	meta->pending = 1;

	/* Byte-identical packets in flight share a fingerprint: count them, so each one
	 * restores. A different packet's old entry under the same key is replaced. */
	old = bpf_map_lookup_elem(&tsnp_meta, &fp);
	if (old && old->priority == meta->priority && old->tstamp == meta->tstamp &&
	    old->flags == meta->flags && old->pending > 0) {
		__sync_fetch_and_add(&old->pending, 1);
		old->saved_ns = meta->saved_ns;
		/* The restorer may have deleted it meanwhile; then store it anew below. */
		if (bpf_map_lookup_elem(&tsnp_meta, &fp) == old)
			goto saved;
	}
	if (bpf_map_update_elem(&tsnp_meta, &fp, meta, BPF_ANY) < 0) {
		tsnp_count(TSNP_SAVE_FAILED);
		return -1;
	}
saved:
	live = tsnp_live_get();
	if (live) {
		/* Before the packet can reach a restorer; written once per jiffy at most, so
		 * savers on different CPUs rarely contend for the cache line. */
		__u64 j = bpf_jiffies64();

		if (live->last_save_jiffies != j)
			live->last_save_jiffies = j;
	}
	tsnp_count(TSNP_SAVED_TABLE);
	return 0;
}

SEC("tc")
int tsnp_save(struct __sk_buff *skb)
{
	__u32 prio = skb->priority;
	__u8 ttype = skb->tstamp_type; /* read it: otherwise tc hides TAI stamps as 0 */
	__u64 ts = skb->tstamp;
	struct tsnp_meta meta = {};
	struct tsnp_pod_counters *c;
	struct tsnp_config *cfg;
	struct tsnp_policy *pol;
	struct tsnp_addr src;
	__u32 allowed;
	__u8 l4proto;

	if (!prio && !ts)
		return untag(skb);
	if (tsnp_source(skb, &src, &l4proto) < 0)
		return untag(skb);
	/* TCP stamps every skb with its monotonic pacing time: that is the stack's, not a
	 * launch time the app chose (TCP has no SO_TXTIME). */
	if (ts && !(l4proto == IPPROTO_TCP && ttype == TSNP_TSTAMP_MONO)) {
		meta.flags |= TSNP_META_HAS_TSTAMP;
		meta.tstamp = ts;
		meta.tstamp_type = ttype;
	}
	if (!prio && !meta.flags)
		return untag(skb);

	cfg = tsnp_config_get();
	if (!cfg)
		return untag(skb);
	pol = policy_for(&src, cfg);
	allowed = apply_policy(pol, prio);
	if (allowed != prio) {
		tsnp_count(TSNP_SAVE_CLAMPED);
		/* Enforce it inside the pod too: the packet may leave by a path we do not restore. */
		skb->priority = allowed;
	}

	/* A typed launch time survives on its own; an untyped one is cleared on the way. */
	if (allowed <= TSNP_TAG_PRIO_MAX && !(cfg->flags & TSNP_CONFIG_TABLE_ONLY) &&
	    !((meta.flags & TSNP_META_HAS_TSTAMP) && ttype == TSNP_TSTAMP_UNSPEC)) {
		skb->tc_index = tsnp_tag(pol->slot, allowed);
	} else {
		untag(skb);
		meta.priority = allowed;
		meta.slot = pol->slot;
		if (save_to_table(skb, &meta) < 0)
			return TSNP_NEXT;
	}
	tsnp_count(TSNP_SAVED);
	c = tsnp_pod_counters_of(pol->slot);
	if (c) {
		c->saved++; /* per-CPU: no atomics needed */
		c->clamped += allowed != prio;
	}
	return TSNP_NEXT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
