// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * BENCHMARK ONLY: the pieces admit and restore are made of, one per program, so the
 * benchmark can say where their time goes (BPF_PROG_TEST_RUN, net of bench_nop). Loaded with
 * the datapath's pin root: the maps are the datapath's own. Results go into skb->cb[0] so the
 * compiler keeps the work.
 */
#include "tsnproxy.h"

/* The fingerprint parse (tsnp_fp_of: L2, L3, L4 headers and the payload sample). */
SEC("tc")
int part_fp(struct __sk_buff *skb)
{
	struct tsnp_fp fp = {};
	struct tsnp_l3 l3 = {};

	skb->cb[0] = tsnp_fp_of(skb, &fp, &l3) + fp.l3id;
	return TSNP_NEXT;
}

/* The parse and the stage slot's hash. */
SEC("tc")
int part_fp_hash(struct __sk_buff *skb)
{
	struct tsnp_fp fp = {};
	struct tsnp_l3 l3 = {};

	tsnp_fp_of(skb, &fp, &l3);
	skb->cb[0] = tsnp_fp_hash(&fp);
	return TSNP_NEXT;
}

/* The pod's entry: one hash map lookup by the interface's index. */
SEC("tc")
int part_pod_lookup(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct tsnp_pod *pod = bpf_map_lookup_elem(&tsnp_pods, &ifindex);

	skb->cb[0] = pod ? pod->flags : 0;
	return TSNP_NEXT;
}

/* One node counter (per-CPU array lookup and increment). */
SEC("tc")
int part_count(struct __sk_buff *skb)
{
	tsnp_count(TSNP_ADMITTED);
	return TSNP_NEXT;
}

/* The coarse clock admit and restore read. */
SEC("tc")
int part_clock(struct __sk_buff *skb)
{
	skb->cb[0] = bpf_ktime_get_coarse_ns();
	return TSNP_NEXT;
}

/* The restorer's idle gate without the parse: this CPU's stage, the config, the clock. */
SEC("tc")
int part_stage_gate(struct __sk_buff *skb)
{
	struct tsnp_config *cfg = tsnp_config_get();
	struct tsnp_stage_meta *st;
	__u32 zero = 0;

	st = bpf_map_lookup_elem(&tsnp_stage_meta, &zero);
	if (!st || !cfg)
		return TSNP_NEXT;
	skb->cb[0] = tsnp_older_than(bpf_ktime_get_coarse_ns(), st->last_when,
				     cfg->stage_max_age_ns);
	return TSNP_NEXT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
