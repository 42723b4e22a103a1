// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test-only stand-in for Cilium's endpoint and native-device programs, written from the
 * behaviour cilium/cilium documents in its sources (docs/coexistence.md has the file
 * references). Never shipped. What it imitates:
 *
 * - Cilium keeps per-packet flags in skb->tc_index (bpf/lib/common.h TC_INDEX_F_*):
 *   0x1 from-ingress-proxy, 0x2 from-egress-proxy (bpf/lib/proxy.h readers; bpf_lxc's
 *   ingress policy skips policy_can_ingress*() for 0x1), 0x4 skip-nodeport (read AND
 *   cleared by ctx_skip_nodeport(), bpf/lib/overloadable_skb.h), 0x10 skip-host-firewall
 *   (ctx_skip_host_fw(), read and cleared). The stand-in counts every bit it finds set on a
 *   pod's packet and clears 0x4 the way ctx_skip_nodeport() does.
 * - Its programs return CTX_ACT_OK (== TC_ACT_OK, bpf/include/bpf/ctx/skb.h) to hand a
 *   packet to the stack. On tcx that is TCX_PASS: later tcx programs and every clsact
 *   filter on the hook are skipped.
 * - sti_cil_lxc: cil_from_container, attached to the pod's host-side veth ingress (tcx,
 *   appended at the tail: pkg/datapath/loader/tcx.go uses link.Tail()) or, for netkit
 *   pods, to the netkit peer hook (BPF_NETKIT_PEER, pkg/datapath/loader/netkit.go). Legacy
 *   host routing: the packet goes on to the stack.
 * - sti_cil_lxc_fib: the same with BPF host routing: a packet for outside the pod network
 *   is forwarded straight to the native device's egress, TTL decremented (ipv4_l3()), with
 *   bpf_redirect_neigh() and no FIB lookup by the program (bpf/lib/fib.h, the skip-FIB
 *   path): no netfilter, no routing decision of the stack, no ip_forward.
 * - sti_cil_to_netdev: cil_to_netdev on the native device's egress (tcx, appended at agent
 *   start): hands every packet on with TC_ACT_OK, which ends the tcx chain (anything after
 *   it, and every clsact filter, is skipped) and makes the kernel set tc_index from
 *   tc_classid. Without the bandwidth manager it writes no other field.
 * - sti_cil_netdev: cil_from_netdev on the native device's ingress: clears 0x4 on entry
 *   (ctx_skip_nodeport_clear) and delivers packets for a local pod straight into its
 *   namespace with bpf_redirect_peer() after rewriting the MACs and the TTL
 *   (bpf/lib/local_delivery.h redirect_ep()).
 */
#include "standin.h"

#define CIL_F_FROM_INGRESS_PROXY 0x1
#define CIL_F_FROM_EGRESS_PROXY 0x2
#define CIL_F_SKIP_NODEPORT 0x4
#define CIL_F_SKIP_HOST_FIREWALL 0x10

#define AF_INET 2
#define AF_INET6 10

/* A local pod, as the stand-in CNI plugin registers it (Cilium's endpoints map). */
struct sti_ep {
	__u32 ifindex;		/* the pod's host-side interface */
	__u8 mac[6];		/* the pod's own interface */
	__u8 host_mac[6];	/* its host-side interface */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __be32);
	__type(value, struct sti_ep);
} sti_eps4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct in6_addr);
	__type(value, struct sti_ep);
} sti_eps6 SEC(".maps");

/* Node configuration (the agent's): the direct-routing device and the pod network. */
struct sti_cfg {
	__u32 nic_ifindex;
	__be32 pod_net4;	/* the pod network: stays with the stack (local delivery) */
	__be32 pod_mask4;
	__u32 _pad;
	__u8 pod_net6[8];	/* a /64 */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sti_cfg);
} sti_cfg SEC(".maps");

/* ctx_skip_nodeport(): read the flag, clear it, report it. */
static __always_inline int skip_nodeport(struct __sk_buff *skb, struct sti_counts *c)
{
	volatile __u32 tci = skb->tc_index;

	skb->tc_index = tci & ~CIL_F_SKIP_NODEPORT;
	if (tci & CIL_F_SKIP_NODEPORT) {
		STI_ADD(c->cleared_skip_nodeport);
		return 1;
	}
	return 0;
}

SEC("tc")
int sti_cil_lxc(struct __sk_buff *skb)
{
	struct sti_counts *c = sti_counts_of(STI_POD_EGRESS);

	if (!c)
		return TC_ACT_OK;
	if (!sti_is_ip(skb)) {
		STI_ADD(c->non_ip);
		return TC_ACT_OK;
	}
	sti_observe(skb, c);
	skip_nodeport(skb, c);
	STI_ADD(c->passed);
	return TC_ACT_OK;
}

/* ipv4_l3(): decrement the TTL and fix the header checksum. */
static __always_inline int dec_ttl4(struct __sk_buff *skb)
{
	__u16 old, new;
	__u8 *b = (__u8 *)&new;

	if (bpf_skb_load_bytes(skb, ETH_HLEN + 8, &old, 2) < 0)
		return -1;
	new = old;
	if (b[0] <= 1)
		return -1;
	b[0]--;
	if (bpf_l3_csum_replace(skb, ETH_HLEN + 10, old, new, 2) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, ETH_HLEN + 8, &new, 2, 0);
}

static __always_inline int dec_hop6(struct __sk_buff *skb)
{
	__u8 hop;

	if (bpf_skb_load_bytes(skb, ETH_HLEN + 7, &hop, 1) < 0 || hop <= 1)
		return -1;
	hop--;
	return bpf_skb_store_bytes(skb, ETH_HLEN + 7, &hop, 1, 0);
}

/* Is the destination outside the pod network (Cilium: not a local endpoint or the host)? */
static __always_inline int to_world(struct __sk_buff *skb, struct sti_cfg *cfg)
{
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		__be32 dst;

		if (bpf_skb_load_bytes(skb, ETH_HLEN + 16, &dst, 4) < 0)
			return 0;
		return (dst & cfg->pod_mask4) != cfg->pod_net4;
	} else {
		__u64 dst, net;

		if (bpf_skb_load_bytes(skb, ETH_HLEN + 24, &dst, 8) < 0)
			return 0;
		__builtin_memcpy(&net, cfg->pod_net6, 8);
		return dst != net;
	}
}

SEC("tc")
int sti_cil_lxc_fib(struct __sk_buff *skb)
{
	struct sti_counts *c = sti_counts_of(STI_POD_EGRESS);
	__u32 zero = 0;
	struct sti_cfg *cfg = bpf_map_lookup_elem(&sti_cfg, &zero);
	long r;

	if (!c || !cfg)
		return TC_ACT_OK;
	if (!sti_is_ip(skb)) {
		STI_ADD(c->non_ip);
		return TC_ACT_OK;
	}
	sti_observe(skb, c);
	skip_nodeport(skb, c);
	if (!cfg->nic_ifindex || !to_world(skb, cfg)) {
		STI_ADD(c->passed);
		return TC_ACT_OK;
	}
	if ((skb->protocol == bpf_htons(ETH_P_IP) ? dec_ttl4(skb) : dec_hop6(skb)) < 0) {
		STI_ADD(c->passed); /* TTL expired: the stack sends the ICMP error */
		return TC_ACT_OK;
	}
	r = bpf_redirect_neigh(cfg->nic_ifindex, 0, 0, 0);
	if (r == TC_ACT_REDIRECT)
		STI_ADD(c->redirected);
	else
		STI_ADD(c->redirect_failed);
	return r;
}

SEC("tc")
int sti_cil_netdev(struct __sk_buff *skb)
{
	struct sti_counts *c = sti_counts_of(STI_NIC_INGRESS);
	struct sti_ep *ep;
	long r;

	if (!c)
		return TC_ACT_OK;
	if (!sti_is_ip(skb)) {
		STI_ADD(c->non_ip);
		return TC_ACT_OK;
	}
	sti_observe(skb, c);
	skb->tc_index &= ~CIL_F_SKIP_NODEPORT; /* ctx_skip_nodeport_clear() */
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		__be32 dst;

		if (bpf_skb_load_bytes(skb, ETH_HLEN + 16, &dst, 4) < 0)
			return TC_ACT_OK;
		ep = bpf_map_lookup_elem(&sti_eps4, &dst);
	} else {
		struct in6_addr dst;

		if (bpf_skb_load_bytes(skb, ETH_HLEN + 24, &dst, 16) < 0)
			return TC_ACT_OK;
		ep = bpf_map_lookup_elem(&sti_eps6, &dst);
	}
	if (!ep) {
		STI_ADD(c->passed);
		return TC_ACT_OK;
	}
	if ((skb->protocol == bpf_htons(ETH_P_IP) ? dec_ttl4(skb) : dec_hop6(skb)) < 0 ||
	    bpf_skb_store_bytes(skb, 0, ep->mac, 6, 0) < 0 ||
	    bpf_skb_store_bytes(skb, 6, ep->host_mac, 6, 0) < 0) {
		STI_ADD(c->passed);
		return TC_ACT_OK;
	}
	r = bpf_redirect_peer(ep->ifindex, 0);
	if (r == TC_ACT_REDIRECT)
		STI_ADD(c->redirected);
	else
		STI_ADD(c->redirect_failed);
	return r;
}

SEC("tc")
int sti_cil_to_netdev(struct __sk_buff *skb)
{
	struct sti_counts *c = sti_counts_of(STI_NIC_EGRESS);

	if (!c)
		return TC_ACT_OK;
	if (!sti_is_ip(skb)) {
		STI_ADD(c->non_ip);
		return TC_ACT_OK;
	}
	sti_observe(skb, c);
	STI_ADD(c->passed);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
