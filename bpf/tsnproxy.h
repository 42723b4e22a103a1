/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * tsnproxy datapath: definitions shared by every program.
 *
 * The kernel erases a pod packet's TSN metadata when it crosses the pod's veth
 * (__dev_forward_skb zeroes skb->priority, scrubbing clears an untyped skb->tstamp,
 * IPv4 forwarding rewrites priority from TOS). The saver (save.c, pod eth0 egress) puts
 * that metadata where it survives; the restorer (restore.c, TSN NIC egress) writes it back.
 *
 * Two carriers, chosen per packet by the saver:
 *
 * 1. The tag (nearly every packet): skb->tc_index. Nothing between the pod's veth and the
 *    node's NIC touches it: veth scrubbing, bridging, routing, NAT, GSO segmentation, IP
 *    fragmentation and tunnel encapsulation (VXLAN, IPIP) keep or copy it, and its only
 *    in-kernel writers were the dsmark qdisc and the tcindex classifier (removed in 6.8 and
 *    6.3). It holds a priority of 0-15 (all taprio and mqprio look at) and the pod's counter
 *    slot. A launch time with a clock type (CLOCK_MONOTONIC, or CLOCK_TAI on 6.11+) needs no
 *    carrier: scrubbing and forwarding keep typed stamps. No map, no parsing at restore,
 *    nothing to expire: the metadata travels on the packet itself.
 *
 * 2. The fingerprint table (the rest): a launch time without a clock type (CLOCK_TAI before
 *    6.11), which the veth crossing clears, or a priority above 15 (a qdisc class id). The
 *    saver records the metadata under a content fingerprint of the packet; the restorer
 *    recomputes it and looks it up.
 *
 * Why a content fingerprint and not the skb pointer: the pointer is recycled within
 * microseconds (stale entries then restore the wrong metadata onto unrelated packets),
 * changes when anything re-creates the skb (an XDP program on the host veth), and needs
 * bpf_cast_to_kern_ctx (6.2+). The fingerprint uses only fields that SNAT, DNAT and
 * routing leave alone: the IP length and id / IPv6 flow label, the L4 protocol, TCP
 * sequence/ack/flags/window, the ICMP type/code/sequence, the UDP length, and the first
 * payload bytes. Ports, addresses, TTL, TOS/ECN and checksums are left out because NAT,
 * routing or ECN marking change them.
 */
#ifndef TSNPROXY_H
#define TSNPROXY_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Hand the packet to the next tc/tcx program (tcx: TCX_NEXT; cls_bpf: TC_ACT_UNSPEC).
 * Returning TC_ACT_OK would end the chain and skip the primary CNI's own programs. */
#define TSNP_NEXT TC_ACT_UNSPEC

/* __sk_buff->tstamp_type values (uapi names changed across versions; the numbers did not). */
#define TSNP_TSTAMP_UNSPEC 0 /* realtime, or an app clock on kernels without clock types */
#define TSNP_TSTAMP_MONO 1
#define TSNP_TSTAMP_TAI 2 /* 6.11+ */

/*
 * The tag in skb->tc_index: 0b101 in bits 15-13 (another user's value is not mistaken for
 * ours), the pod's counter slot in bits 12-4, the priority in bits 3-0.
 */
#define TSNP_TAG_MASK 0xe000
#define TSNP_TAG 0xa000
#define TSNP_TAG_PRIO_MAX 15
#define TSNP_SLOTS 512 /* per-pod counter slots; slot 0: no pod (the node default policy) */

static __always_inline __u16 tsnp_tag(__u16 slot, __u32 prio)
{
	return TSNP_TAG | (slot & (TSNP_SLOTS - 1)) << 4 | prio;
}

static __always_inline int tsnp_is_tag(__u32 tc_index)
{
	return (tc_index & TSNP_TAG_MASK) == TSNP_TAG;
}

#define TSNP_PAYLOAD_SAMPLE 12

/* Offsets below this are read in place when the linear area holds them (headers, sample). */
#define TSNP_DIRECT_MAX 256

/* The fingerprint: the key of tsnp_meta. 32 bytes, no holes (hashed as bytes). */
struct tsnp_fp {
	__u8 family;	/* 4 or 6 */
	__u8 l4proto;	/* IPPROTO_* (IPv6: the fixed header's next header) */
	__u16 l3len;	/* IPv4 total length / IPv6 payload length, network order */
	__u32 l3id;	/* IPv4 id << 16 | frag_off (network order) / IPv6 flow label */
	__u32 l4a;	/* TCP seq; UDP length; ICMP type, code, sequence */
	__u32 l4b;	/* TCP ack */
	__u32 l4c;	/* TCP data offset + flags, window */
	__u8 payload[TSNP_PAYLOAD_SAMPLE]; /* first bytes after the L4 header, zero padded */
};

#define TSNP_META_HAS_TSTAMP 0x1

/* What the app's socket put on the packet, as seen at the pod's egress. */
struct tsnp_meta {
	__u64 tstamp;	   /* skb->tstamp (launch time), valid with TSNP_META_HAS_TSTAMP */
	__u64 saved_ns;	   /* bpf_ktime_get_ns() at save, for the age limit */
	__s64 pending;	   /* saved copies not yet restored (identical packets share a key) */
	__u32 priority;	   /* skb->priority after the pod's policy */
	__u8 tstamp_type;  /* TSNP_TSTAMP_* */
	__u8 flags;	   /* TSNP_META_* */
	__u16 slot;	   /* the pod's counter slot (0 = none) */
};

#define TSNP_POLICY_REMAP 0x1

/* A pod's priority policy: remap table for priorities 0-15, then a clamp. */
struct tsnp_policy {
	__u64 pod_cookie;
	__u32 max_priority;
	__u16 flags;	    /* TSNP_POLICY_* */
	__u16 slot;	    /* the pod's counter slot in tsnp_pod_stats (0 = none) */
	__u8 remap[16];
};

/* Key of tsnp_policy: the pod's source address, IPv4 as ::ffff:a.b.c.d. */
struct tsnp_addr {
	__u8 addr[16];
} __attribute__((aligned(8))); /* word loads and stores, not sixteen byte-wide ones */

struct tsnp_config {
	__u64 max_age_ns;     /* entries older than this never restore; GC removes them */
	__u64 gc_interval_ns; /* GC timer period */
	struct tsnp_policy default_policy; /* pods without an entry in tsnp_policy */
	__u32 flags;	      /* TSNP_CONFIG_* */
	__u32 _pad;
};

/*
 * Every saved packet takes the table, none the tag: for nodes where a classic tc filter
 * between the pods and the TSN NIC returns TC_ACT_OK, after which the kernel resets
 * skb->tc_index (tc_run(): tc_index = TC_H_MIN(classid)). Node config `carrier: table`.
 */
#define TSNP_CONFIG_TABLE_ONLY 0x1

/*
 * Each CPU's saver remembers the last source address it looked up and its policy: a pod's
 * packets come in runs, and the hash lookup is the most expensive step of a tagged save.
 * Valid while gen equals tsnp_policy_gen.
 */
struct tsnp_policy_cache {
	struct tsnp_addr src;
	__u64 gen;	/* 0: empty */
	struct tsnp_policy policy;
};

enum tsnp_counter {
	TSNP_SAVED = 0,		/* packets whose metadata was saved */
	TSNP_SAVE_CLAMPED,	/* priority changed by the pod's policy */
	TSNP_SAVE_FAILED,	/* map update failed */
	TSNP_RESTORED,		/* packets whose metadata was restored */
	TSNP_RESTORED_TSTAMP,	/* of those, launch time written back */
	TSNP_EXPIRED,		/* fingerprint found, entry older than max_age (deleted) */
	TSNP_NOT_FOUND,		/* forwarded IP packet without a saved entry */
	TSNP_GC_EXPIRED,	/* entries removed by the GC timer */
	TSNP_GC_RUNS,		/* GC timer callbacks */
	TSNP_TSTAMP_FAILED,	/* launch time could not be written */
	TSNP_SAVED_TABLE,	/* of the saved packets, those that needed the fingerprint table */
	TSNP_COUNTER_MAX,
};

struct tsnp_pod_counters {
	__u64 saved;
	__u64 clamped;
	__u64 restored;
};

/*
 * The restorer's gate: when no pod saved anything for longer than max_age, no packet on the
 * TSN NIC can restore, so the restorer skips parsing and lookup. It runs on every packet the
 * NIC sends, so it reads jiffies (a load) rather than the clock (a helper call that costs
 * more than the rest of the idle path). The kernel's HZ is not known to BPF: the GC timer
 * measures jiffies against the monotonic clock on each tick and stores max_age in jiffies,
 * rounded up with two jiffies of slack. Until it has (the first GC interval after install)
 * gate_jiffies is 0 and the restorer always looks.
 */
struct tsnp_live {
	__u64 last_save_jiffies; /* stored by savers before their packet leaves them */
	__u64 gate_jiffies;	 /* max_age in jiffies, or 0: not measured yet */
	__u64 cal_ns;		 /* the GC's last tick: its clock reading (also a heartbeat) ... */
	__u64 cal_jiffies;	 /* ... and of jiffies */
};

struct tsnp_gc_timer {
	struct bpf_timer timer;
};

/* Maps are pinned by name under the install's pin root and shared by every program. */
#ifndef TSNP_META_ENTRIES
#define TSNP_META_ENTRIES 16384 /* the loader sets the configured size before load */
#endif

/*
 * An LRU, so saving never fails on a full map. Per-CPU LRU lists (BPF_F_NO_COMMON_LRU): an
 * insert evicts the oldest entry saved on its own CPU, strictly in age order. With the common
 * list, a CPU that runs out of free nodes steals unreferenced ones from other CPUs' pending
 * lists, which can be entries saved microseconds ago whose packet is still on its way: a
 * pod-to-pod flood through a 4096-entry table cost 1 of 5000 prioritized packets that way.
 * Lookups and deletes still see one table across CPUs.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TSNP_META_ENTRIES);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, struct tsnp_fp);
	__type(value, struct tsnp_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tsnp_meta SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct tsnp_addr);
	__type(value, struct tsnp_policy);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tsnp_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tsnp_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tsnp_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TSNP_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tsnp_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tsnp_policy_cache);
} tsnp_policy_cache SEC(".maps");

/*
 * The policies' generation: user space writes CLOCK_MONOTONIC ns into it after every change
 * to tsnp_policy or the default policy (a new value each time, 0 = never written), which
 * empties every CPU's tsnp_policy_cache. A map of its own: bumping it rewrites nothing else.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tsnp_policy_gen SEC(".maps");

/* Per-pod counters by slot. User space hands out slots at CNI ADD and zeroes them. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TSNP_SLOTS);
	__type(key, __u32);
	__type(value, struct tsnp_pod_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tsnp_pod_stats SEC(".maps");

/* The pod cookie that owns each slot (0 = free). Only user space reads and writes it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TSNP_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tsnp_slots SEC(".maps");

static __always_inline struct tsnp_pod_counters *tsnp_pod_counters_of(__u16 slot)
{
	__u32 key = slot;

	return slot ? bpf_map_lookup_elem(&tsnp_pod_stats, &key) : NULL;
}

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tsnp_gc_timer);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tsnp_gc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tsnp_live);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tsnp_live SEC(".maps");

static __always_inline struct tsnp_live *tsnp_live_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&tsnp_live, &zero);
}

static __always_inline void tsnp_count(enum tsnp_counter c)
{
	__u32 key = c;
	__u64 *v = bpf_map_lookup_elem(&tsnp_stats, &key);

	if (v)
		*v += 1; /* per-CPU slot: no atomics needed */
}

/* True when `then` is more than `age` before `now`. Another CPU may have stored a `then`
 * taken after this program read `now`: that is not old, and must not wrap around. */
static __always_inline int tsnp_older_than(__u64 now, __u64 then, __u64 age)
{
	return now > then && now - then > age;
}

static __always_inline struct tsnp_config *tsnp_config_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&tsnp_config, &zero);
}

/*
 * Copies len bytes at off into to. Headers are read in place (direct packet access) when
 * they lie in the skb's linear area, as they do for everything a local socket sends and for
 * forwarded packets once NAT has touched them; otherwise bpf_skb_load_bytes copies them out
 * of the fragments. len must be a compile-time constant. The packet is never modified.
 */
struct tsnp_pkt {
	struct __sk_buff *skb;
	void *data;	/* skb->data and skb->data_end, read once: nothing here moves them */
	void *data_end;
};

static __always_inline struct tsnp_pkt tsnp_pkt_of(struct __sk_buff *skb)
{
	struct tsnp_pkt pk = {
		.skb = skb,
		.data = (void *)(long)skb->data,
		.data_end = (void *)(long)skb->data_end,
	};

	return pk;
}

static __always_inline int tsnp_load(struct tsnp_pkt *pk, __u32 off, void *to, const __u32 len)
{
	void *p;

	if (off < TSNP_DIRECT_MAX) {
		p = pk->data + off;
		if (p + len <= pk->data_end) {
			/* Whole words: the headers start 2 bytes off a word boundary after Ethernet,
			 * and the JIT and verifier accept unaligned packet loads on this target. */
			__builtin_memcpy(to, __builtin_assume_aligned(p, 4), len);
			return 0;
		}
	}
	return bpf_skb_load_bytes(pk->skb, off, to, len);
}

/* Byte offset of the L3 header, or -1. Handles Ethernet (with up to two in-band VLAN
 * tags) and raw-IP devices, which have no link-layer header at tc. */
static __always_inline int tsnp_l3_offset(struct tsnp_pkt *pk)
{
	struct __sk_buff *skb = pk->skb;
	__u16 proto;
	int off = 12;

	if (tsnp_load(pk, off, &proto, sizeof(proto)) < 0)
		goto raw;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		off += 4;
		if (tsnp_load(pk, off, &proto, sizeof(proto)) < 0)
			return -1;
	}
	if (proto == bpf_htons(ETH_P_IP) || proto == bpf_htons(ETH_P_IPV6))
		return off + 2;
raw:
	/* No Ethernet header: a raw-IP device; trust skb->protocol. */
	if (skb->protocol == bpf_htons(ETH_P_IP) || skb->protocol == bpf_htons(ETH_P_IPV6))
		return 0;
	return -1;
}

/* Copies up to TSNP_PAYLOAD_SAMPLE bytes at off into fp->payload (the rest stays zero). */
static __always_inline void tsnp_sample(struct tsnp_pkt *pk, __u32 off, __u32 end,
					struct tsnp_fp *fp)
{
	__u32 avail;

	/* The IP packet's end, not the frame's: link-layer padding is not payload. */
	if (end > pk->skb->len)
		end = pk->skb->len;
	if (off >= end)
		return;
	avail = end - off;
	if (avail >= TSNP_PAYLOAD_SAMPLE) {
		tsnp_load(pk, off, fp->payload, TSNP_PAYLOAD_SAMPLE);
	} else {
		/*
		 * Short tail: byte by byte, constant sizes. A variable length (1..11) is refused by
		 * Debian 6.1's verifier ("invalid zero-sized read"): it does not narrow a length
		 * register from a "!= 0" test on a 32-bit copy of it, so it sees 0..11.
		 */
#pragma unroll
		for (__u32 i = 0; i < TSNP_PAYLOAD_SAMPLE - 1; i++) {
			if (i < avail)
				tsnp_load(pk, off + i, &fp->payload[i], 1);
		}
	}
}

/* L4 part of the fingerprint; off is the L4 header's offset. */
static __always_inline void tsnp_fp_l4(struct tsnp_pkt *pk, __u32 off, __u32 end,
				       struct tsnp_fp *fp)
{
	switch (fp->l4proto) {
	case IPPROTO_TCP: {
		__u32 h[4]; /* source/dest ports, seq, ack; then doff/flags + window */

		if (tsnp_load(pk, off, h, sizeof(h)) < 0)
			return;
		fp->l4a = h[1];
		fp->l4b = h[2];
		fp->l4c = h[3];
		tsnp_sample(pk, off + ((h[3] & 0xf0) >> 2), end, fp); /* doff in 32-bit words */
		return;
	}
	case IPPROTO_UDP: {
		__u32 h[2]; /* ports; length + checksum */

		if (tsnp_load(pk, off, h, sizeof(h)) < 0)
			return;
		fp->l4a = h[1] & bpf_htonl(0xffff0000); /* the length, not the checksum */
		tsnp_sample(pk, off + 8, end, fp);
		return;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		__u8 h[8]; /* type, code, checksum, identifier (NAT rewrites it), sequence */

		if (tsnp_load(pk, off, h, sizeof(h)) < 0)
			return;
		fp->l4a = (__u32)h[0] << 24 | (__u32)h[1] << 16 | (__u32)h[6] << 8 | h[7];
		tsnp_sample(pk, off + 8, end, fp);
		return;
	}
	default:
		tsnp_sample(pk, off, end, fp);
	}
}

/* The source address (the saver looks the pod's policy up by it) and the L4 protocol
 * (IPv6: the fixed header's next header). Returns 0, or -1 for packets that are not IP. */
static __always_inline int tsnp_source(struct __sk_buff *skb, struct tsnp_addr *src,
				       __u8 *l4proto)
{
	struct tsnp_pkt pk = tsnp_pkt_of(skb);
	int l3 = tsnp_l3_offset(&pk);
	/* IPv4: through the source address; IPv6: next header, hop limit. Word-aligned, so the
	 * copy out of the packet is four loads, not sixteen byte loads and the shifts joining
	 * them. */
	__u8 h[16] __attribute__((aligned(8)));

	if (l3 < 0 || tsnp_load(&pk, l3, h, sizeof(h)) < 0)
		return -1;
	switch (h[0] >> 4) {
	case 4:
		*l4proto = h[9];
		__builtin_memset(src, 0, sizeof(*src));
		src->addr[10] = 0xff;
		src->addr[11] = 0xff;
		__builtin_memcpy(&src->addr[12], &h[12], 4);
		return 0;
	case 6:
		*l4proto = h[6];
		return tsnp_load(&pk, l3 + 8, src->addr, sizeof(src->addr));
	}
	return -1;
}

/* Fills fp from the packet. Returns 0, or -1 for packets that are not IPv4/IPv6. */
static __always_inline int tsnp_fingerprint(struct __sk_buff *skb, struct tsnp_fp *fp)
{
	struct tsnp_pkt pk = tsnp_pkt_of(skb);
	int l3 = tsnp_l3_offset(&pk);
	__u32 end, plen;
	__u8 version;

	if (l3 < 0 || tsnp_load(&pk, l3, &version, 1) < 0)
		return -1;
	version >>= 4;
	if (version == 4) {
		__u8 h[20];
		__u32 ihl;

		if (tsnp_load(&pk, l3, h, sizeof(h)) < 0)
			return -1;
		ihl = (h[0] & 0xf) * 4;
		if (ihl < 20)
			return -1;
		fp->family = 4;
		fp->l4proto = h[9];
		__builtin_memcpy(&fp->l3len, &h[2], 2);
		__builtin_memcpy(&fp->l3id, &h[4], 4); /* id, flags + fragment offset */
		plen = ((__u32)h[2] << 8) | h[3];
		/* total length 0: a BIG TCP GSO packet, bounded by the skb */
		end = plen ? l3 + plen : skb->len;
		/* Later fragments carry no L4 header: sample their payload instead. */
		if ((h[6] & 0x1f) | h[7])
			tsnp_sample(&pk, l3 + ihl, end, fp);
		else
			tsnp_fp_l4(&pk, l3 + ihl, end, fp);
		return 0;
	}
	if (version == 6) {
		__u8 h[40];

		if (tsnp_load(&pk, l3, h, sizeof(h)) < 0)
			return -1;
		fp->family = 6;
		fp->l4proto = h[6];
		__builtin_memcpy(&fp->l3len, &h[4], 2);
		fp->l3id = ((__u32)(h[1] & 0x0f) << 16) | ((__u32)h[2] << 8) | h[3];
		plen = ((__u32)h[4] << 8) | h[5];
		/* payload length 0: a jumbogram (BIG TCP), bounded by the skb */
		end = plen ? l3 + 40 + plen : skb->len;
		tsnp_fp_l4(&pk, l3 + 40, end, fp);
		return 0;
	}
	return -1;
}

#endif /* TSNPROXY_H */
