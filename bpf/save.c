// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * save: tc egress of the pod's interface, inside the pod's network namespace.
 *
 * Turns what the app's socket set (SO_PRIORITY -> skb->priority, SO_TXTIME + SCM_TXTIME ->
 * skb->tstamp) into a request admit reads on the host side of the crossing (tsnproxy.h).
 * Nothing here decides anything: the pod can reach this hook (its own tc filters may run
 * after it), so admit treats the request as the pod's wish and applies the node's policy.
 *
 * Every packet gets a request, so none carries a stale one into the crossing (a pod that
 * routes another pod's packets passes on its own request, not the first pod's). No maps,
 * no parsing on the common path.
 */
#include "tsnproxy.h"

/*
 * The request stage, for what the request cannot hold: a priority above its bits, or an
 * untyped launch time on a frame that is not IP. Returns 0 when staged.
 */
static __always_inline int stage_request(struct __sk_buff *skb, __u32 prio, __u64 ts)
{
	struct tsnp_fp fp = {};
	struct tsnp_l3 l3 = {};
	struct tsnp_req_stage *st;
	struct tsnp_req_entry *e;
	__u32 zero = 0;

	tsnp_fp_of(skb, &fp, &l3);
	st = bpf_map_lookup_elem(&tsnp_req_stage, &zero);
	if (!st)
		return -1;
	e = &st->e[tsnp_fp_hash(&fp) & (TSNP_REQ_STAGE_SLOTS - 1)];
	e->fp = fp;
	e->priority = prio;
	e->tstamp = ts;
	e->len = skb->len;
	e->when = bpf_ktime_get_coarse_ns();
	return 0;
}

SEC("tc")
int tsnp_save(struct __sk_buff *skb)
{
	__u32 prio = skb->priority;
	__u8 ttype = skb->tstamp_type; /* read it: otherwise tc hides TAI stamps as 0 */
	__u64 ts = skb->tstamp;
	__u16 req = TSNP_REQ;
	__u64 staged_ts = 0;

	/*
	 * A launch time without a clock type (CLOCK_TAI before 6.11, CLOCK_REALTIME) is cleared
	 * at the crossing; a mono-typed one is kept. Mark it mono for the crossing only: admit
	 * takes it off again before anything else sees the packet.
	 */
	if (ts && ttype == TSNP_TSTAMP_UNSPEC) {
		if (bpf_skb_set_tstamp(skb, ts, BPF_SKB_TSTAMP_DELIVERY_MONO) == 0)
			req |= TSNP_REQ_STAMP_MOVED;
		else
			staged_ts = ts; /* not IP: the kernel types only IP stamps */
	}
	if (prio > TSNP_REQ_PRIO_MASK || staged_ts) {
		if (stage_request(skb, prio, staged_ts) == 0)
			req |= TSNP_REQ_STAGED;
		if (prio > TSNP_REQ_PRIO_MASK)
			prio = TSNP_REQ_PRIO_MASK; /* the stage missing: admit clamps this one */
	}
	skb->tc_index = req | prio;
	return TSNP_NEXT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
