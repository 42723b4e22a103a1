/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Shared by the test-only stand-ins for other datapaths in tests/bpf/standins. Each
 * object gets its own copy of these maps: what its programs saw on the packets they
 * handled, so a test can prove that tsnproxy never set one of the stand-in's own bits.
 * Written here from the behaviour the public sources document (docs/coexistence.md);
 * none of their code is used.
 */
#ifndef STANDIN_H
#define STANDIN_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Layout mirrored by tests/lib/standins.ts (StandinCounts). */
struct sti_counts {
	__u64 packets;		/* IPv4/IPv6 packets this program handled */
	__u64 non_ip;		/* ARP and others, passed untouched */
	__u64 tc_index_set;	/* arrived with tc_index != 0 */
	__u64 flag[5];		/* arrived with tc_index bit 0..4 set (0x1 .. 0x10) */
	__u64 tsnp_marker;	/* diagnostic: tsnproxy's 0b101 marker in tc_index bits 15-13 */
	__u64 cleared_skip_nodeport; /* 0x4 read and cleared */
	__u64 priority_set;	/* arrived with skb->priority != 0 */
	__u64 tstamp_set;	/* arrived with skb->tstamp != 0 */
	__u64 own_mark;		/* arrived with mark bits this datapath owns */
	__u64 redirected;	/* bpf_redirect_neigh / bpf_redirect_peer accepted */
	__u64 redirect_failed;
	__u64 rewritten;	/* DSCP rewritten */
	__u64 passed;		/* handed on (to the stack or the next program) */
};

/* Index into sti_counts: which program counted. */
enum sti_role {
	STI_POD_EGRESS = 0,	/* the pod's packets, on its host-side interface */
	STI_NIC_INGRESS = 1,	/* replies arriving on the node's NIC */
	STI_NIC_EGRESS = 2,	/* everything leaving the node's NIC */
	STI_ROLES = 4,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, STI_ROLES);
	__type(key, __u32);
	__type(value, struct sti_counts);
} sti_counts SEC(".maps");

#define STI_ADD(field) __sync_fetch_and_add(&(field), 1)

static __always_inline struct sti_counts *sti_counts_of(__u32 role)
{
	return bpf_map_lookup_elem(&sti_counts, &role);
}

static __always_inline int sti_is_ip(struct __sk_buff *skb)
{
	return skb->protocol == bpf_htons(ETH_P_IP) || skb->protocol == bpf_htons(ETH_P_IPV6);
}

/* What every stand-in records about a packet before acting on it. */
static __always_inline void sti_observe(struct __sk_buff *skb, struct sti_counts *c)
{
	__u32 tci = skb->tc_index;
	__u8 ttype = skb->tstamp_type; /* read it: tc ingress hides TAI stamps otherwise */

	STI_ADD(c->packets);
	if (tci) {
		STI_ADD(c->tc_index_set);
		if (tci & 0x1)
			STI_ADD(c->flag[0]);
		if (tci & 0x2)
			STI_ADD(c->flag[1]);
		if (tci & 0x4)
			STI_ADD(c->flag[2]);
		if (tci & 0x8)
			STI_ADD(c->flag[3]);
		if (tci & 0x10)
			STI_ADD(c->flag[4]);
		if (((tci >> 13) & 0x7) == 0x5)
			STI_ADD(c->tsnp_marker);
	}
	if (skb->priority)
		STI_ADD(c->priority_set);
	if (skb->tstamp || ttype)
		STI_ADD(c->tstamp_set);
}

#endif /* STANDIN_H */
