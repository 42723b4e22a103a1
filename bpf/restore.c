// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * restore: tc egress of the node's TSN interface, first of every program there.
 *
 * Writes back what admit decided for a pod's packet, after the node's bridging, routing,
 * NAT and tunnels have had it: from the tag (skb->tc_index, then cleared, so the programs
 * after this one see the packet as they would without tsnproxy), or from this CPU's stage,
 * matched by fingerprint (tsnproxy.h says why this CPU's stage is the place to look, and
 * when the others' are). A launch time
 * without a clock type, which forwarding clears, is written back with the priority.
 *
 * Cost order: a tagged packet is done after one load and a few stores. Otherwise, while this
 * CPU has staged nothing within the age limit, one map lookup and a clock read. Only then is
 * the packet parsed: its own headers (only for a forwarded packet: one the node sends is
 * never a pod's), then, for a tunnel (VXLAN, Geneve, IPIP), the encapsulated packet's, which
 * is what admit saw.
 */
#include "tsnproxy.h"

#define VXLAN_PORT 4789
#define VXLAN_LINUX_PORT 8472 /* the Linux kernel's default, Flannel's */
#define GENEVE_PORT 6081
#define ETH_P_TEB_ 0x6558     /* Transparent Ethernet Bridging (Geneve's inner Ethernet) */

static __always_inline void count_pod(__u16 slot)
{
	struct tsnp_pod_counters *c = tsnp_pod_counters_of(slot);

	if (c)
		c->restored++; /* per-CPU: no atomics needed */
}

static __always_inline void write_tstamp(struct __sk_buff *skb, __u64 ts)
{
	/* An untyped stamp, as the app's packet had: clear whatever type the stack left
	 * (bpf_skb_set_tstamp takes an untyped value only as 0 before 6.11), then write the
	 * value; a write at egress keeps the type bits. The helper serves IP only: a frame that
	 * is not IP (an AVTP stream) gets the plain write while it carries no typed stamp. */
	if (bpf_skb_set_tstamp(skb, 0, TSNP_TSTAMP_UNSPEC) < 0 &&
	    skb->tstamp_type != TSNP_TSTAMP_UNSPEC) {
		tsnp_count(TSNP_TSTAMP_FAILED);
		return;
	}
	skb->tstamp = ts;
	tsnp_count(TSNP_RESTORED_TSTAMP);
}

/* The encapsulated packet's L3 offset for VXLAN, Geneve and IPIP/SIT, or -1. */
static __always_inline int inner_l3(struct tsnp_pkt *pk, struct tsnp_fp *outer, struct tsnp_l3 *l3)
{
	__u16 dport;
	__u8 g[4];

	if (l3->l4off < 0)
		return -1;
	if (outer->l4proto == IPPROTO_IPIP || outer->l4proto == IPPROTO_IPV6)
		return l3->l4off;
	if (outer->l4proto != IPPROTO_UDP ||
	    tsnp_load(pk, l3->l4off + 2, &dport, sizeof(dport)) < 0)
		return -1;
	if (dport == bpf_htons(VXLAN_PORT) || dport == bpf_htons(VXLAN_LINUX_PORT))
		return tsnp_l3_after_eth(pk, l3->l4off + 8 + 8);
	if (dport != bpf_htons(GENEVE_PORT) || tsnp_load(pk, l3->l4off + 8, g, sizeof(g)) < 0 ||
	    g[2] != (ETH_P_TEB_ >> 8) || g[3] != (ETH_P_TEB_ & 0xff))
		return -1;
	/* Geneve: 8 bytes, then options of (byte 0 & 0x3f) words, then the inner Ethernet. */
	return tsnp_l3_after_eth(pk, l3->l4off + 8 + 8 + (g[0] & 0x3f) * 4);
}

/* This packet's way in a CPU's part of the stage (fresh or not), into *at; 0 when none.
 * The bucket's header says which way can hold it; only that way's entry is read. */
static __always_inline int lookup(struct tsnp_stage_part *part, const struct tsnp_fp *fp,
				  const struct tsnp_stage_at *where, struct tsnp_way *at)
{
	struct tsnp_stage_bucket *b = tsnp_bucket(part, where->bucket);
	int i;

#pragma unroll
	for (i = 0; i < TSNP_STAGE_WAYS; i++) {
		if (tsnp_sig_is(b->sig[i], where->sig) && tsnp_fp_equal(&b->e[i].fp, fp)) {
			at->b = b;
			at->w = i;
			return 1;
		}
	}
	return 0;
}

/* The packet's way in this CPU's stage, into *at; 0 when none. */
static __always_inline int lookup_here(const struct tsnp_fp *fp, struct tsnp_way *at)
{
	struct tsnp_stage_at where = tsnp_stage_at(fp);
	struct tsnp_stage_part *part = bpf_map_lookup_elem(&tsnp_stage, &where.part);

	return part ? lookup(part, fp, &where, at) : 0;
}

/* What a restore writes back, from this CPU's stage or another's. */
struct hit {
	__u64 tstamp;
	__u32 priority;
	__u16 slot;
	__u8 flags;
};

static __always_inline void take(struct hit *h, struct tsnp_way *at)
{
	__u32 w = at->w & (TSNP_STAGE_WAYS - 1);
	struct tsnp_stage_entry *e = &at->b->e[w];

	h->priority = e->priority;
	h->tstamp = e->tstamp;
	h->slot = e->slot;
	h->flags = e->flags;
	if (!(at->b->sig[w] & TSNP_SIG_READ))
		at->b->sig[w] |= TSNP_SIG_READ;
}

/* Whether a way is past the age limit. */
static __always_inline int aged(struct tsnp_way *at, __u64 now, __u64 max_age)
{
	return tsnp_aged32(tsnp_time32(now), at->b->when[at->w & (TSNP_STAGE_WAYS - 1)], max_age);
}

/* Whether an entry may restore this packet: one of a veth pod's packets arrives forwarded
 * (it has an ingress interface); a netkit pod's, redirected from the peer hook, may not. */
static __always_inline int may_restore(struct tsnp_way *at, __u32 ingress)
{
	return ingress || (at->b->e[at->w & (TSNP_STAGE_WAYS - 1)].flags & TSNP_STAGED_ANY_IIF);
}

/* The search of the other CPUs' stages (bpf_loop), for a packet held on the way. */
struct elsewhere {
	struct tsnp_fp fp;
	struct tsnp_stage_at where; /* of fp: the same part and bucket on every CPU */
	__u64 now;
	__u64 max_age;
	__u32 self;
	__u32 ingress;
	struct hit hit;
	int found;
};

static long look_on_cpu(__u32 cpu, void *ctx)
{
	struct elsewhere *x = ctx;
	struct tsnp_stage_meta *meta;
	struct tsnp_stage_part *part;
	struct tsnp_way at;
	__u32 zero = 0;

	if (cpu == x->self)
		return 0;
	meta = bpf_map_lookup_percpu_elem(&tsnp_stage_meta, &zero, cpu);
	if (!meta)
		return 1; /* past the last possible CPU */
	if (tsnp_older_than(x->now, meta->last_when, x->max_age))
		return 0; /* staged nothing lately */
	part = bpf_map_lookup_percpu_elem(&tsnp_stage, &x->where.part, cpu);
	if (!part || !lookup(part, &x->fp, &x->where, &at) || !may_restore(&at, x->ingress) ||
	    aged(&at, x->now, x->max_age))
		return 0;
	take(&x->hit, &at);
	x->found = 1;
	return 1;
}

static __always_inline int restore_tag(struct __sk_buff *skb, __u32 tag)
{
	struct tsnp_config *cfg = tsnp_config_get();
	__u32 prio = tag & TSNP_TAG_PRIO_MAX;

	if (!cfg || !(cfg->flags & TSNP_CONFIG_TAGS))
		return 0;
	/* Our admit never tags above the node's ceiling; a pod that bypasses admit could. */
	if (prio > cfg->node.max_priority) {
		prio = cfg->node.max_priority;
		tsnp_count(TSNP_TAG_CLAMPED);
	}
	skb->priority = prio;
	skb->tc_index = 0;
	tsnp_count(TSNP_RESTORED_TAG);
	count_pod((tag >> 4) & (TSNP_SLOTS - 1));
	return 1;
}

SEC("tc")
int tsnp_restore(struct __sk_buff *skb)
{
	__u32 tci = skb->tc_index;
	__u32 ingress = skb->ingress_ifindex;
	struct tsnp_pkt pk = tsnp_pkt_of(skb);
	struct elsewhere x = {};
	struct tsnp_frag_follow *f;
	struct tsnp_way at = {};
	struct tsnp_config *cfg;
	struct tsnp_l3 l3 = {};
	struct tsnp_stage_meta *st;
	struct hit h = {};
	__u64 now, max_age, *seen;
	__u32 zero = 0;
	int ip, in, idle, found = 0;

	if (tsnp_is_tag(tci) && restore_tag(skb, tci))
		return TSNP_NEXT;

	st = bpf_map_lookup_elem(&tsnp_stage_meta, &zero);
	cfg = tsnp_config_get();
	if (!st || !cfg)
		return TSNP_NEXT;
	now = bpf_ktime_get_coarse_ns();
	max_age = cfg->stage_max_age_ns;
	idle = tsnp_older_than(now, st->last_when, max_age);
	if (idle) {
		/* Nothing staged on this CPU lately; on another, maybe (a held packet). */
		seen = bpf_map_lookup_elem(&tsnp_stage_seen, &zero);
		if (!seen || !*seen || tsnp_older_than(now, *seen, max_age + (max_age >> 3)))
			return TSNP_NEXT; /* nothing staged anywhere lately: nothing to parse for */
	}

	ip = tsnp_fp_of(skb, &x.fp, &l3);
	/* A packet the node sends (no ingress interface) is never a pod's, whatever its bytes:
	 * only one it encapsulates may be. Forwarded packets, redirected ones included, keep
	 * the interface they entered by; a netkit pod's, redirected from the peer hook, never
	 * had one. */
	if (!idle)
		found = lookup_here(&x.fp, &at) && may_restore(&at, ingress);
	if (!found && ip) {
		/* A tunnel: admit saw the encapsulated packet. */
		in = inner_l3(&pk, &x.fp, &l3);
		if (in >= 0) {
			__builtin_memset(&x.fp, 0, sizeof(x.fp));
			if (tsnp_fp_at(skb, in, &x.fp, &l3) && !idle)
				found = lookup_here(&x.fp, &at);
		}
	}
	if (found) {
		if (aged(&at, now, max_age)) {
			at.b->sig[at.w & (TSNP_STAGE_WAYS - 1)] = 0;
			tsnp_count(TSNP_STAGE_EXPIRED);
			return TSNP_NEXT;
		}
		take(&h, &at);
	} else {
		/* A later fragment of a datagram the node fragmented after admit. */
		f = &st->follow;
		if (ip && x.fp.frag && f->when && x.fp.family == 4 && f->id == l3.id &&
		    f->l4proto == x.fp.l4proto && f->saddr == l3.saddr && f->daddr == l3.daddr &&
		    !tsnp_older_than(now, f->when, max_age)) {
			skb->priority = f->priority;
			if (f->flags & TSNP_STAGED_TSTAMP)
				write_tstamp(skb, f->tstamp);
			tsnp_count(TSNP_RESTORED_FRAG);
			count_pod(f->slot);
			return TSNP_NEXT;
		}
		/* Held on the way (a next hop's ARP/ND) and sent from another CPU. */
		x.where = tsnp_stage_at(&x.fp);
		x.now = now;
		x.max_age = max_age;
		x.self = bpf_get_smp_processor_id();
		x.ingress = ingress;
		bpf_loop(TSNP_MAX_CPUS, look_on_cpu, &x, 0);
		if (!x.found) {
			tsnp_count(TSNP_STAGE_MISS);
			return TSNP_NEXT;
		}
		h = x.hit;
		tsnp_count(TSNP_RESTORED_ELSEWHERE);
	}

	skb->priority = h.priority;
	if (h.flags & TSNP_STAGED_TSTAMP)
		write_tstamp(skb, h.tstamp);
	tsnp_count(TSNP_RESTORED_STAGE);
	count_pod(h.slot);
	if (l3.more_frags && x.fp.family == 4 && !x.fp.frag) {
		f = &st->follow;
		f->when = now;
		f->saddr = l3.saddr;
		f->daddr = l3.daddr;
		f->id = l3.id;
		f->l4proto = x.fp.l4proto;
		f->priority = h.priority;
		f->tstamp = h.tstamp;
		f->flags = h.flags & TSNP_STAGED_TSTAMP;
		f->slot = h.slot;
	}
	/* Not consumed: the same packet may leave by a second TSN interface (a bridge flood, a
	 * multicast route); a later admit on this CPU takes its way once it was read. */
	return TSNP_NEXT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
