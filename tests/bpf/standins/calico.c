// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test-only stand-in for Calico's eBPF dataplane on a workload interface, written from the
 * behaviour projectcalico/calico documents (docs/coexistence.md has the file references).
 * Never shipped. What it imitates:
 *
 * - sti_cali_wep: calico_from_workload_ep, on the tc ingress (tcx appended, as
 *   felix/bpf/libbpf/libbpf_api.h bpf_tcx_program_attach() does with default options) of
 *   the pod's routed host interface cali*: no bridge, proxy ARP and a /32 route per pod.
 * - QoS DSCP (felix/bpf-gpl/qos.h qos_dscp_set(), the qos.projectcalico.org/dscp
 *   annotation): packets for destinations outside the cluster get the configured DSCP in
 *   the IPv4 TOS byte (ECN bits kept, header checksum recomputed) or the IPv6 traffic class.
 * - Marks: an allowed packet leaves with skb->mark = CALI_SKB_MARK_SEEN (0x01000000,
 *   felix/bpf-gpl/bpf.h enum calico_skb_mark): the mark is Calico's channel to netfilter.
 *   The stand-in counts packets that arrive already carrying bits of Calico's mark mask.
 * - Verdict TC_ACT_UNSPEC (TCX_NEXT): later programs on the hook still run.
 */
#include "standin.h"

#define CALI_SKB_MARK_SEEN 0x01000000
/* Felix's default iptablesMarkMask: the bits Calico owns in skb->mark. */
#define CALI_MARK_MASK 0xffff0000

struct sti_cali_cfg {
	__s32 dscp;		/* < 0: no DSCP annotation */
	__be32 cluster_net4;	/* in-cluster destinations keep their DSCP */
	__be32 cluster_mask4;
	__u32 _pad;
	__u8 cluster_net6[8];	/* a /64 */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sti_cali_cfg);
} sti_cali_cfg SEC(".maps");

static __always_inline int set_dscp4(struct __sk_buff *skb, __u8 dscp)
{
	__u16 old, new;
	__u8 *b = (__u8 *)&new;

	/* version/IHL and TOS: the checksum is over 16-bit words */
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &old, 2) < 0)
		return -1;
	new = old;
	b[1] = (b[1] & 0x03) | (dscp << 2);
	if (new == old)
		return 0;
	if (bpf_l3_csum_replace(skb, ETH_HLEN + 10, old, new, 2) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, ETH_HLEN, &new, 2, 0);
}

static __always_inline int set_dscp6(struct __sk_buff *skb, __u8 dscp)
{
	__u8 h[2];

	/* version(4) | traffic class(8) | flow label(20): the class spans the first two bytes */
	if (bpf_skb_load_bytes(skb, ETH_HLEN, h, 2) < 0)
		return -1;
	h[0] = (h[0] & 0xf0) | (dscp >> 2);
	h[1] = (h[1] & 0x3f) | ((dscp & 0x3) << 6);
	return bpf_skb_store_bytes(skb, ETH_HLEN, h, 2, 0);
}

static __always_inline int outside_cluster(struct __sk_buff *skb, struct sti_cali_cfg *cfg)
{
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		__be32 dst;

		if (bpf_skb_load_bytes(skb, ETH_HLEN + 16, &dst, 4) < 0)
			return 0;
		return (dst & cfg->cluster_mask4) != cfg->cluster_net4;
	} else {
		__u64 dst, net;

		if (bpf_skb_load_bytes(skb, ETH_HLEN + 24, &dst, 8) < 0)
			return 0;
		__builtin_memcpy(&net, cfg->cluster_net6, 8);
		return dst != net;
	}
}

SEC("tc")
int sti_cali_wep(struct __sk_buff *skb)
{
	struct sti_counts *c = sti_counts_of(STI_POD_EGRESS);
	__u32 zero = 0;
	struct sti_cali_cfg *cfg = bpf_map_lookup_elem(&sti_cali_cfg, &zero);

	if (!c || !cfg)
		return TC_ACT_UNSPEC;
	if (!sti_is_ip(skb)) {
		STI_ADD(c->non_ip);
		return TC_ACT_UNSPEC;
	}
	sti_observe(skb, c);
	if (skb->mark & CALI_MARK_MASK)
		STI_ADD(c->own_mark);
	if (cfg->dscp >= 0 && outside_cluster(skb, cfg)) {
		int r = skb->protocol == bpf_htons(ETH_P_IP) ? set_dscp4(skb, cfg->dscp) :
							       set_dscp6(skb, cfg->dscp);
		if (r == 0)
			STI_ADD(c->rewritten);
	}
	skb->mark = CALI_SKB_MARK_SEEN;
	STI_ADD(c->passed);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
