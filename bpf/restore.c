// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * restore: tc egress of the node's TSN interface (default), or tc ingress of the pod's
 * host-side veth.
 *
 * Writes the pod's priority back (taprio/mqprio map it to a traffic class) from the tag the
 * saver put in skb->tc_index. Otherwise recomputes the packet's fingerprint and, when the
 * saver recorded it within the age limit, restores the priority and, when the kernel
 * dropped it on the way, the launch time with its clock type (etf and taprio's
 * txtime-assist read it).
 *
 * Cost order: a tagged packet is done after one load and two stores. Then packets the node
 * itself sends (ingress_ifindex 0) are never in the table and leave; while no pod has saved
 * anything in the table within max_age, forwarded packets leave after one jiffies
 * comparison; only then is the packet parsed and looked up. The tag is checked first
 * because tunnel encapsulation (VXLAN, IPIP) turns a pod's packet into one the node sends.
 */
#include "tsnproxy.h"

static __always_inline void count_pod(__u16 slot)
{
	struct tsnp_pod_counters *c = tsnp_pod_counters_of(slot);

	if (c)
		c->restored++; /* per-CPU: no atomics needed */
}

static __always_inline void restore_tstamp(struct __sk_buff *skb, struct tsnp_meta *m)
{
	if (m->tstamp_type == TSNP_TSTAMP_UNSPEC) {
		/* The clock-less stamp old kernels carry for SO_TXTIME: a plain write keeps
		 * the type unspecified, which is what the app's own packet had. */
		skb->tstamp = m->tstamp;
	} else if (bpf_skb_set_tstamp(skb, m->tstamp, m->tstamp_type) < 0) {
		tsnp_count(TSNP_TSTAMP_FAILED);
		return;
	}
	tsnp_count(TSNP_RESTORED_TSTAMP);
}

SEC("tc")
int tsnp_restore(struct __sk_buff *skb)
{
	__u32 tag = skb->tc_index;
	__u8 ttype;
	struct tsnp_fp fp = {};
	struct tsnp_config *cfg;
	struct tsnp_live *live;
	struct tsnp_meta *m;
	__u64 now;

	if (tsnp_is_tag(tag)) {
		skb->priority = tag & TSNP_TAG_PRIO_MAX;
		tsnp_count(TSNP_RESTORED);
		count_pod((tag >> 4) & (TSNP_SLOTS - 1));
		return TSNP_NEXT;
	}
	ttype = skb->tstamp_type; /* read it: otherwise tc ingress hides TAI stamps */
	/* Sent by the node: even with the same bytes as a pod's packet, not ours to change. */
	if (!skb->ingress_ifindex)
		return TSNP_NEXT;
	live = tsnp_live_get();
	if (!live)
		return TSNP_NEXT;
	if (live->gate_jiffies &&
	    tsnp_older_than(bpf_jiffies64(), live->last_save_jiffies, live->gate_jiffies))
		return TSNP_NEXT; /* nothing saved recently enough to restore: no parsing */
	if (tsnp_fingerprint(skb, &fp) < 0)
		return TSNP_NEXT;
	m = bpf_map_lookup_elem(&tsnp_meta, &fp);
	if (!m) {
		tsnp_count(TSNP_NOT_FOUND);
		return TSNP_NEXT;
	}
	cfg = tsnp_config_get();
	if (!cfg)
		return TSNP_NEXT;
	now = bpf_ktime_get_ns();
	if (tsnp_older_than(now, m->saved_ns, cfg->max_age_ns)) {
		tsnp_count(TSNP_EXPIRED);
		bpf_map_delete_elem(&tsnp_meta, &fp);
		return TSNP_NEXT;
	}
	if (__sync_fetch_and_add(&m->pending, -1) <= 0) {
		/* Every saved copy was restored already: this one is a duplicate we never saw. */
		__sync_fetch_and_add(&m->pending, 1);
		tsnp_count(TSNP_NOT_FOUND);
		return TSNP_NEXT;
	}

	skb->priority = m->priority;
	if ((m->flags & TSNP_META_HAS_TSTAMP) && (!skb->tstamp || ttype != m->tstamp_type))
		restore_tstamp(skb, m);
	tsnp_count(TSNP_RESTORED);
	count_pod(m->slot);
	if (m->pending <= 0)
		bpf_map_delete_elem(&tsnp_meta, &fp);
	return TSNP_NEXT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
