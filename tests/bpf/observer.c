// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test-only observer, attached AFTER the restorer on the TSN interface's egress (as a
 * classic cls_bpf filter, which runs after every tcx program and after earlier filters).
 * It counts what actually leaves: priorities, and whether the launch time equals the one
 * the sender wrote into the first 8 payload bytes. Never shipped.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct obs_filter {
	__u8 l4proto;	/* 0 = any IP packet */
	__u8 ts_off;	/* payload offset of the sender's launch time */
	__u16 dport;	/* network order, 0 = any */
};

struct obs_counts {
	__u64 fwd_total;	/* matching packets forwarded (from a pod) */
	__u64 fwd_prio[17];	/* by priority, 16 = above 15 */
	__u64 local_total;	/* matching packets the node itself sent */
	__u64 local_prio[17];
	__u64 ts_ok;		/* skb->tstamp equals the payload's launch time */
	__u64 ts_bad;
	__u64 ts_none;
	__u64 ttype[4];		/* skb->tstamp_type of packets with a stamp */
	__u64 gso;		/* GSO super-packets seen */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct obs_filter);
} obs_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct obs_counts);
} obs_counts SEC(".maps");

#define ADD(field) __sync_fetch_and_add(&(field), 1)

#define ETH_P_TSN_ 0x22F0 /* IEEE 1722 (AVTP) */
#define OBS_L2 0xff	  /* obs_filter.l4proto: count AVTP frames instead of IP */

SEC("tc")
int tsnp_observer(struct __sk_buff *skb)
{
	__u8 ttype = skb->tstamp_type;
	__u64 ts = skb->tstamp;
	__u32 zero = 0, l3 = ETH_HLEN, l4;
	struct obs_filter *f = bpf_map_lookup_elem(&obs_filter, &zero);
	struct obs_counts *c = bpf_map_lookup_elem(&obs_counts, &zero);
	__u8 proto, vihl;
	__u16 ports[2];
	__u32 prio = skb->priority;

	if (!f || !c)
		return TC_ACT_UNSPEC;
	if (skb->protocol == bpf_htons(ETH_P_TSN_)) {
		__u64 want;

		if (f->l4proto != OBS_L2)
			return TC_ACT_UNSPEC;
		if (prio > 16)
			prio = 16;
		ADD(c->fwd_total);
		ADD(c->fwd_prio[prio & 0x1f]);
		if (bpf_skb_load_bytes(skb, ETH_HLEN + (f->ts_off & 0x3f), &want, sizeof(want)) == 0 &&
		    want) {
			if (!ts)
				ADD(c->ts_none);
			else if (ts == want)
				ADD(c->ts_ok);
			else
				ADD(c->ts_bad);
		}
		if (ts)
			ADD(c->ttype[ttype & 3]);
		return TC_ACT_UNSPEC;
	}
	if (f->l4proto == OBS_L2)
		return TC_ACT_UNSPEC;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if (bpf_skb_load_bytes(skb, l3, &vihl, 1) || bpf_skb_load_bytes(skb, l3 + 9, &proto, 1))
			return TC_ACT_UNSPEC;
		l4 = l3 + (vihl & 0xf) * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, l3 + 6, &proto, 1))
			return TC_ACT_UNSPEC;
		l4 = l3 + 40;
	} else {
		return TC_ACT_UNSPEC;
	}
	if (f->l4proto && f->l4proto != proto)
		return TC_ACT_UNSPEC;
	if (f->dport) {
		if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
			return TC_ACT_UNSPEC;
		if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)) || ports[1] != f->dport)
			return TC_ACT_UNSPEC;
	}
	if (prio > 16)
		prio = 16;
	if (skb->gso_segs > 1)
		ADD(c->gso);
	if (!skb->ingress_ifindex) {
		ADD(c->local_total);
		ADD(c->local_prio[prio & 0x1f]);
		return TC_ACT_UNSPEC;
	}
	ADD(c->fwd_total);
	ADD(c->fwd_prio[prio & 0x1f]);
	if (proto == IPPROTO_UDP) {
		__u64 want;

		if (bpf_skb_load_bytes(skb, l4 + 8 + (f->ts_off & 0x3f), &want, sizeof(want)) == 0 &&
		    want) {
			if (!ts)
				ADD(c->ts_none);
			else if (ts == want)
				ADD(c->ts_ok);
			else
				ADD(c->ts_bad);
		}
		if (ts)
			ADD(c->ttype[ttype & 3]);
	}
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
