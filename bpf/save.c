// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * save: tc egress of the pod's interface, inside the pod's network namespace.
 *
 * Records the TSN metadata the app's socket put on a packet (SO_PRIORITY ->
 * skb->priority, SO_TXTIME + SCM_TXTIME -> skb->tstamp) under the packet's
 * fingerprint, after applying the pod's priority policy. Packets without metadata
 * (priority 0, no launch time) cost two loads and are not stored, so unprioritized
 * traffic never touches the map.
 */
#include "tsnproxy.h"

/* The pod's policy: its own entry (by source address) or the node default. */
static __always_inline struct tsnp_policy *policy_for(struct tsnp_addr *src, struct tsnp_config *cfg)
{
	struct tsnp_policy *p = bpf_map_lookup_elem(&tsnp_policy, src);

	return p ? p : &cfg->default_policy;
}

/* An untagged Ethernet frame carrying TCP (one load: EtherType through the L4 protocol). */
static __always_inline int tsnp_is_plain_tcp(struct __sk_buff *skb)
{
	struct tsnp_pkt pk = tsnp_pkt_of(skb);
	__u8 h[12]; /* bytes 12..23: EtherType, then the IP header's first 10 bytes */
	__u16 proto;

	if (tsnp_load(&pk, 12, h, sizeof(h)) < 0)
		return 0;
	__builtin_memcpy(&proto, h, 2);
	if (proto != skb->protocol)
		return 0;
	if (proto == bpf_htons(ETH_P_IP))
		return h[11] == IPPROTO_TCP;
	if (proto == bpf_htons(ETH_P_IPV6))
		return h[8] == IPPROTO_TCP;
	return 0;
}

static __always_inline __u32 apply_policy(struct tsnp_policy *p, __u32 prio)
{
	if ((p->flags & TSNP_POLICY_REMAP) && prio < 16)
		prio = p->remap[prio & 0xf];
	if (prio > p->max_priority)
		prio = p->max_priority;
	return prio;
}

static __always_inline void count_pod(__u64 cookie, __u32 clamped)
{
	struct tsnp_pod_counters *c, init = {};

	if (!cookie)
		return;
	c = bpf_map_lookup_elem(&tsnp_pod_stats, &cookie);
	if (!c) {
		bpf_map_update_elem(&tsnp_pod_stats, &cookie, &init, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&tsnp_pod_stats, &cookie);
		if (!c)
			return;
	}
	c->saved++;
	c->clamped += clamped;
}

SEC("tc")
int tsnp_save(struct __sk_buff *skb)
{
	__u32 prio = skb->priority;
	__u8 ttype = skb->tstamp_type; /* read it: otherwise tc hides TAI stamps as 0 */
	__u64 ts = skb->tstamp;
	struct tsnp_fp fp = {};
	struct tsnp_addr src;
	struct tsnp_meta meta = {}, *old;
	struct tsnp_config *cfg;
	struct tsnp_policy *pol;
	struct tsnp_live *live;
	__u32 allowed;

	if (!prio) {
		if (!ts)
			return TSNP_NEXT;
		/* Every TCP skb carries the stack's monotonic pacing stamp: without a priority
		 * there is nothing to save, so leave before parsing the whole packet. */
		if (ttype == TSNP_TSTAMP_MONO && tsnp_is_plain_tcp(skb))
			return TSNP_NEXT;
	}
	if (tsnp_fingerprint(skb, &fp, &src) < 0)
		return TSNP_NEXT;
	/* TCP stamps every skb with its monotonic pacing time: that is the stack's, not a
	 * launch time the app chose (TCP has no SO_TXTIME). */
	if (ts && !(fp.l4proto == IPPROTO_TCP && ttype == TSNP_TSTAMP_MONO)) {
		meta.flags |= TSNP_META_HAS_TSTAMP;
		meta.tstamp = ts;
		meta.tstamp_type = ttype;
	}
	if (!prio && !meta.flags)
		return TSNP_NEXT;

	cfg = tsnp_config_get();
	if (!cfg)
		return TSNP_NEXT;
	pol = policy_for(&src, cfg);
	allowed = apply_policy(pol, prio);
	if (allowed != prio) {
		tsnp_count(TSNP_SAVE_CLAMPED);
		/* Enforce it inside the pod too: the packet may leave by a path we do not restore. */
		skb->priority = allowed;
	}
	meta.priority = allowed;
	meta.pod_cookie = pol->pod_cookie;
	meta.saved_ns = bpf_ktime_get_ns();
	meta.pending = 1;

	/* Byte-identical packets in flight share a fingerprint: count them, so each one
	 * restores. A different packet's old entry under the same key is replaced. */
	old = bpf_map_lookup_elem(&tsnp_meta, &fp);
	if (old && old->priority == meta.priority && old->tstamp == meta.tstamp &&
	    old->flags == meta.flags && old->pending > 0) {
		__sync_fetch_and_add(&old->pending, 1);
		old->saved_ns = meta.saved_ns;
		/* The restorer may have deleted it meanwhile; then store it anew below. */
		if (bpf_map_lookup_elem(&tsnp_meta, &fp) == old)
			goto saved;
	}
	if (bpf_map_update_elem(&tsnp_meta, &fp, &meta, BPF_ANY) < 0) {
		tsnp_count(TSNP_SAVE_FAILED);
		return TSNP_NEXT;
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
	tsnp_count(TSNP_SAVED);
	count_pod(meta.pod_cookie, allowed != prio);
	return TSNP_NEXT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
