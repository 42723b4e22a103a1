// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * admit: the pod's host-side interface, first of every program there: tc/tcx ingress of a
 * veth's host end, or the netkit peer hook (which runs when the pod transmits).
 *
 * The pod cannot reach this hook, so this is where the node's policy holds:
 *
 *   1. Restore and clear. The saver's request is taken off the packet (tc_index back to 0,
 *      a launch time moved into a mono stamp for the crossing taken off again) before any
 *      other program here can see it: the primary CNI's programs (Cilium keeps its own
 *      flags in tc_index) see the packet as they would without tsnproxy.
 *   2. Decide. The pod is this interface (skb->ifindex keys tsnp_pods), never an address or
 *      anything else in the packet. Its socket's priority goes through the pod's remap and
 *      ceiling; a packet whose socket set none gets the pod's default or rule priority; a
 *      packet without a request at all (the pod removed or bypassed the saver) counts as
 *      one whose socket set none. The result goes into skb->priority.
 *   3. Carry. The tag or the stage (tsnproxy.h), as the pod's carrier says, so the restorer
 *      on the TSN NIC can undo what forwarding does to skb->priority (IPv4 rewrites it from
 *      the TOS byte) and to a launch time without a clock type (cleared).
 */
#include "tsnproxy.h"

static __always_inline __u32 prefix_mask(__u32 len, __u32 word)
{
	if (len >= 32 * (word + 1))
		return 0xffffffff;
	if (len <= 32 * word)
		return 0;
	return bpf_htonl(0xffffffff << (32 - (len - 32 * word)));
}

/* The destination address (IPv4 in the first word) and port, for the pod's rules. */
struct dest {
	__u32 addr[4];
	__u16 port; /* host order; 0: none */
	__u8 family;
	__u8 l4proto;
};

/* This packet as admit sees it: its fingerprint, parsed at most once. */
struct parsed {
	struct tsnp_fp fp;
	struct tsnp_l3 l3;
	int done;
	int ip;
};

static __always_inline int parse(struct __sk_buff *skb, struct parsed *p)
{
	if (!p->done) {
		p->ip = tsnp_fp_of(skb, &p->fp, &p->l3);
		p->done = 1;
	}
	return p->ip;
}

static __always_inline int dest_of(struct __sk_buff *skb, struct parsed *p, struct dest *d)
{
	struct tsnp_pkt pk = tsnp_pkt_of(skb);
	__u16 port;

	if (!parse(skb, p))
		return -1;
	d->family = p->fp.family;
	d->l4proto = p->fp.l4proto;
	if (p->fp.family == 4)
		d->addr[0] = p->l3.daddr;
	else if (tsnp_load(&pk, (__u32)p->l3.off + 24, d->addr, sizeof(d->addr)) < 0)
		return -1;
	if (p->l3.l4off >= 0 && (p->fp.l4proto == IPPROTO_UDP || p->fp.l4proto == IPPROTO_TCP) &&
	    tsnp_load(&pk, (__u32)p->l3.l4off + 2, &port, sizeof(port)) == 0)
		d->port = bpf_ntohs(port);
	return 0;
}

/*
 * The priority of the first of the pod's rules that matches, into *prio; returns
 * 1 when one did. A global function: checked by the verifier once, with its loop, whatever
 * the caller's state.
 */
__noinline int tsnp_match_rules(struct tsnp_pod *pod, struct dest *d, __u32 *prio)
{
	if (!pod || !d || !prio)
		return 0;
	for (__u32 i = 0; i < TSNP_RULES && i < pod->nrules; i++) {
		struct tsnp_rule *r = &pod->rules[i];
		__u32 miss = 0;

		if (r->family && r->family != d->family)
			continue;
		if (r->l4proto && r->l4proto != d->l4proto)
			continue;
		if ((r->port_lo || r->port_hi) && (d->port < r->port_lo || d->port > r->port_hi))
			continue;
		for (__u32 w = 0; w < 4; w++) {
			__u32 want;

			__builtin_memcpy(&want, &r->addr[w * 4], 4);
			miss |= (d->addr[w] ^ want) & prefix_mask(r->prefix_len, w);
		}
		if (!miss) {
			*prio = r->priority;
			return 1;
		}
	}
	return 0;
}

/* The priority for a packet whose socket set none: the first matching rule, else the
 * pod's default. */
static __always_inline __u32 classify(struct __sk_buff *skb, struct parsed *p,
				      struct tsnp_pod *pod)
{
	struct dest d = {};
	__u32 prio = 0;

	if (pod->nrules && dest_of(skb, p, &d) == 0 &&
	    tsnp_match_rules(pod, &d, &prio))
		return prio;
	return pod->default_priority;
}

/* The request stage's entry for this packet, consumed, or NULL. */
static __always_inline struct tsnp_req_entry *take_request(struct __sk_buff *skb,
							   struct parsed *p)
{
	struct tsnp_req_stage *st;
	struct tsnp_req_entry *e;
	__u32 zero = 0;

	parse(skb, p);
	st = bpf_map_lookup_elem(&tsnp_req_stage, &zero);
	if (!st)
		return NULL;
	e = &st->e[tsnp_fp_hash(&p->fp) & (TSNP_REQ_STAGE_SLOTS - 1)];
	if (!e->when || e->len != skb->len || !tsnp_fp_equal(&e->fp, &p->fp))
		return NULL;
	e->when = 0;
	return e;
}

/*
 * The way a new entry takes in its bucket, read off the bucket's header: the one holding
 * the same fingerprint (the newest admit of identical packets decides, as for a pod that
 * routes another pod's packets: what it sends on is its own), else one never used, already
 * read by a restorer or aged out; else the oldest, whose packet has not reached a restorer
 * yet (counted).
 */
static __always_inline __u32 free_way(struct tsnp_stage_bucket *b, struct tsnp_stage_at *at,
				      const struct tsnp_fp *fp, __u32 now, __u64 max_age)
{
	__u32 free = TSNP_STAGE_WAYS, oldest = 0;
	int i;

#pragma unroll
	for (i = 0; i < TSNP_STAGE_WAYS; i++) {
		__u32 sig = b->sig[i];

		if (tsnp_sig_is(sig, at->sig) && tsnp_fp_equal(&b->e[i].fp, fp))
			return i;
		if (free == TSNP_STAGE_WAYS &&
		    (!sig || (sig & TSNP_SIG_READ) || tsnp_aged32(now, b->when[i], max_age)))
			free = i;
		if ((__s32)(b->when[i] - b->when[oldest & (TSNP_STAGE_WAYS - 1)]) < 0)
			oldest = i;
	}
	if (free < TSNP_STAGE_WAYS)
		return free;
	tsnp_count(TSNP_STAGE_UNREAD);
	return oldest;
}

/* Hands the admitted metadata to the stage. */
static __always_inline void stage(struct __sk_buff *skb, struct parsed *p, __u32 prio,
				  __u64 launch, struct tsnp_pod *pod)
{
	struct tsnp_config *cfg = tsnp_config_get();
	struct tsnp_stage_bucket *b;
	struct tsnp_stage_meta *meta;
	struct tsnp_stage_part *part;
	struct tsnp_stage_entry *e;
	struct tsnp_stage_at at;
	__u32 zero = 0, w;
	__u64 now, *seen;

	parse(skb, p); /* not IP (an AVTP stream): its ethertype and first payload bytes */
	at = tsnp_stage_at(&p->fp);
	part = bpf_map_lookup_elem(&tsnp_stage, &at.part);
	meta = bpf_map_lookup_elem(&tsnp_stage_meta, &zero);
	if (!part || !meta || !cfg)
		return;
	now = bpf_ktime_get_coarse_ns();
	b = tsnp_bucket(part, at.bucket);
	w = free_way(b, &at, &p->fp, tsnp_time32(now), cfg->stage_max_age_ns) &
	    (TSNP_STAGE_WAYS - 1);
	e = &b->e[w];
	b->sig[w] = 0; /* a restorer on another CPU skips it while it is rewritten */
	tsnp_compiler_barrier();
	e->fp = p->fp;
	e->priority = prio;
	e->tstamp = launch;
	e->flags = (launch ? TSNP_STAGED_TSTAMP : 0) |
		   (pod->flags & TSNP_POD_NETKIT ? TSNP_STAGED_ANY_IIF : 0);
	e->slot = pod->slot;
	b->when[w] = tsnp_time32(now);
	tsnp_compiler_barrier();
	b->sig[w] = at.sig;
	meta->last_when = now;
	seen = bpf_map_lookup_elem(&tsnp_stage_seen, &zero);
	if (seen && tsnp_older_than(now, *seen, cfg->stage_max_age_ns >> 3))
		*seen = now; /* a shared line: written a few times per age limit, not per packet */
	tsnp_count(TSNP_STAGED);
}

SEC("tc")
int tsnp_admit(struct __sk_buff *skb)
{
	__u32 tci = skb->tc_index;
	__u32 ifindex = skb->ifindex;
	__u8 ttype = skb->tstamp_type; /* read it: otherwise tc ingress hides typed stamps */
	__u64 ts = skb->tstamp;
	struct parsed parsed = {};
	struct tsnp_pod_counters *c;
	struct tsnp_req_entry *staged;
	struct tsnp_pod *pod;
	__u32 want = 0, prio;
	__u64 launch = 0;
	int requested = tsnp_is_req(tci);

	/* 1. Restore and clear. */
	if (tci)
		skb->tc_index = 0;
	if (requested && (tci & TSNP_REQ_STAMP_MOVED) && ttype == TSNP_TSTAMP_MONO && ts) {
		/* Untyped again, as the app's packet had it: where nothing forwards it by IP (a
		 * bridged TSN port, a CNI that redirects to the NIC) it reaches the NIC as it is;
		 * where forwarding clears it, the carrier brings it back. A mono stamp holding a
		 * TAI value must not travel on: fq on another egress would hold it as a departure
		 * time decades ahead. */
		if (bpf_skb_set_tstamp(skb, 0, TSNP_TSTAMP_UNSPEC) == 0)
			skb->tstamp = ts;
		launch = ts;
	}
	pod = bpf_map_lookup_elem(&tsnp_pods, &ifindex);
	if (!pod) {
		tsnp_count(TSNP_ADMIT_NO_POD);
		return TSNP_NEXT;
	}

	/* 2. Decide. */
	if (requested) {
		want = tci & TSNP_REQ_PRIO_MASK;
		if (tci & TSNP_REQ_STAGED) {
			staged = take_request(skb, &parsed);
			if (staged) {
				want = staged->priority;
				if (staged->tstamp) {
					/* A frame that is not IP: its untyped stamp was cleared at
					 * the crossing, so the plain write leaves it untyped. */
					launch = staged->tstamp;
					skb->tstamp = launch;
				}
			} else {
				tsnp_count(TSNP_REQ_STAGE_MISS);
			}
		}
		tsnp_count(TSNP_ADMIT_REQUESTED);
	}
	if (want) {
		prio = want;
		if ((pod->flags & TSNP_POD_REMAP) && prio < 16)
			prio = pod->remap[prio & 0xf];
	} else if (pod->flags & TSNP_POD_CLASSIFY) {
		prio = classify(skb, &parsed, pod);
		tsnp_count(TSNP_ADMIT_CLASSIFIED);
	} else {
		prio = 0;
	}
	if (prio > pod->max_priority)
		prio = pod->max_priority;
	skb->priority = prio;
	if (launch)
		tsnp_count(TSNP_STAMP_MOVED);

	/* 3. Carry. */
	if ((pod->flags & TSNP_POD_CARRY_TAG) && prio <= TSNP_TAG_PRIO_MAX && !launch) {
		skb->tc_index = tsnp_tag(pod->slot, prio);
		tsnp_count(TSNP_TAGGED);
	} else if (pod->flags & (TSNP_POD_CARRY_TAG | TSNP_POD_CARRY_STAGE)) {
		stage(skb, &parsed, prio, launch, pod);
	}

	tsnp_count(TSNP_ADMITTED);
	c = tsnp_pod_counters_of(pod->slot);
	if (c) {
		c->admitted++; /* per-CPU: no atomics needed */
		c->clamped += want && prio != want;
	}
	if (want && prio != want)
		tsnp_count(TSNP_ADMIT_CLAMPED);
	return TSNP_NEXT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
