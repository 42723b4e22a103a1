/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * tsnproxy datapath, ABI 2: definitions shared by every program.
 *
 * The kernel erases a pod packet's TSN metadata when it crosses the pod's veth or netkit
 * device (the crossing zeroes skb->priority and clears a launch time without a clock type)
 * and again when the node forwards it (IPv4 forwarding rewrites skb->priority from the TOS
 * byte; forwarding clears an untyped launch time). Three programs carry it across:
 *
 *   save     tc egress of the pod's interface, in the pod's namespace. Writes what the
 *            app's socket set into a *request* (below). The pod can reach this hook and
 *            everything before it, so the request is only a request.
 *   admit    the pod's host-side interface: tc/tcx ingress of the veth peer, or the netkit
 *            peer hook, ahead of every other program there. The pod cannot reach it. It
 *            reads the request, clears every trace of it from the packet (so the primary
 *            CNI's programs see the packet as they would without tsnproxy), decides the
 *            priority from the pod's policy (keyed by this interface, never by anything in
 *            the packet), writes it into skb->priority and hands it to the carrier.
 *   restore  tc egress of the node's TSN interface(s): writes the carried priority and
 *            launch time back, after the node's routing, NAT and tunnels.
 *
 * Two carriers take the admitted metadata from admit to restore; which one is per pod
 * (struct tsnp_pod.flags), chosen by user space from what else is attached on the pod's
 * way (src/bpf/carrier.ts):
 *
 * 1. The tag, in skb->tc_index: for paths where nothing else reads or writes tc_index
 *    (kernel datapaths: bridge, routing, NAT, VXLAN/IPIP, which keep or copy it). One store
 *    at admit, one load and two stores at restore, nothing to parse, no state.
 * 2. The stage, a per-CPU table keyed by a fingerprint of the packet that NAT and
 *    tunnelling leave alone: for paths where another datapath owns tc_index (Cilium keeps
 *    its own flags in it; a classic tc filter returning TC_ACT_OK resets it), and for what
 *    the tag cannot hold (priorities above 15, launch times without a clock type). Per CPU
 *    because admit and restore run in one call chain on one CPU: from the host-side
 *    interface's ingress through bridging, forwarding, netfilter and tunnel encapsulation
 *    to the NIC's tc egress nothing queues the packet, so the entry admit writes is read
 *    by the restore of the same packet before any other packet can be admitted on that
 *    CPU. Two pods sending byte-identical packets at once therefore never share an entry,
 *    and the table needs no locks, no LRU and no garbage collector. One thing does queue
 *    a packet on the way: a next hop whose neighbour is not resolved yet holds it (ARP or
 *    ND) and sends it from the reply's softirq, maybe on another CPU, after later packets
 *    were admitted. So the stage is set-associative (a new entry takes a way that was read
 *    or has aged out before it overwrites one still unread), and a restorer that finds
 *    nothing on its own CPU looks on the others before it gives up.
 *
 * A launch time with a clock type (CLOCK_MONOTONIC, or CLOCK_TAI on 6.11+) needs no
 * carrier: the kernel keeps typed stamps across the crossing and forwarding.
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

/* The datapath's ABI: map layouts, pin layout and the formats below. A change to any of
 * them is a new ABI, pinned beside the old one (src/bpf/pins.ts). */
#define TSNP_ABI 2

/* Hand the packet to the next tc/tcx program (tcx: TCX_NEXT; cls_bpf: TC_ACT_UNSPEC).
 * Returning TC_ACT_OK would end the chain and skip the primary CNI's own programs. */
#define TSNP_NEXT TC_ACT_UNSPEC

/* __sk_buff->tstamp_type values (uapi names changed across versions; the numbers did not). */
#define TSNP_TSTAMP_UNSPEC 0 /* realtime, or an app clock on kernels without clock types */
#define TSNP_TSTAMP_MONO 1
#define TSNP_TSTAMP_TAI 2 /* 6.11+ */

/*
 * The request: what the saver writes into skb->tc_index for admit, on the pod's side of the
 * crossing. 0b110 in bits 15-13, then flags, then the priority the socket set (0-1023;
 * larger ones travel in the request stage with TSNP_REQ_STAGED).
 */
#define TSNP_REQ_MASK 0xe000
#define TSNP_REQ 0xc000
#define TSNP_REQ_STAMP_MOVED 0x1000 /* the launch time was untyped: moved into a mono stamp */
#define TSNP_REQ_STAGED 0x0800	    /* the rest is in the request stage (tsnp_req_stage) */
#define TSNP_REQ_PRIO_BITS 10
#define TSNP_REQ_PRIO_MASK ((1 << TSNP_REQ_PRIO_BITS) - 1)

/*
 * The tag: what admit writes into skb->tc_index for the restorer. 0b101 in bits 15-13, the
 * pod's counter slot in bits 12-4, the priority (0-15) in bits 3-0. Unchanged from ABI 1,
 * whose savers wrote it directly: a restorer of either ABI reads the other's tags.
 */
#define TSNP_TAG_MASK 0xe000
#define TSNP_TAG 0xa000
#define TSNP_TAG_PRIO_MAX 15
#define TSNP_SLOTS 512 /* per-pod counter slots; slot 0: nobody's */

static __always_inline __u16 tsnp_tag(__u16 slot, __u32 prio)
{
	return TSNP_TAG | (slot & (TSNP_SLOTS - 1)) << 4 | prio;
}

static __always_inline int tsnp_is_tag(__u32 tc_index)
{
	return (tc_index & TSNP_TAG_MASK) == TSNP_TAG;
}

static __always_inline int tsnp_is_req(__u32 tc_index)
{
	return (tc_index & TSNP_REQ_MASK) == TSNP_REQ;
}

#define TSNP_PAYLOAD_SAMPLE 12

/* Offsets below this are read in place when the linear area holds them (headers, sample). */
#define TSNP_DIRECT_MAX 256

/*
 * The fingerprint: identifies a packet by what SNAT, DNAT, routing and tunnel encapsulation
 * leave alone. 32 bytes, no holes, 8-byte aligned (compared and hashed as four words).
 * Addresses, ports, TTL, TOS/ECN, checksums and the IP total length are left out (NAT,
 * routing, DSCP rewriting and re-fragmentation change them); the UDP length stands in for
 * the datagram's length.
 */
struct tsnp_fp {
	__u8 family;	/* 4 or 6; 0: none */
	__u8 l4proto;	/* IPPROTO_* (IPv6: the fixed header's next header) */
	__u16 frag;	/* IPv4: a later fragment's offset field (flags masked); else 0 */
	__u32 l3id;	/* IPv4 id / IPv6 flow label, network order */
	__u32 l4a;	/* TCP seq; UDP length; ICMP type, code, sequence; fragment: 0 */
	__u32 l4b;	/* TCP ack */
	__u32 l4c;	/* TCP data offset + flags, window */
	__u8 payload[TSNP_PAYLOAD_SAMPLE]; /* first bytes after the L4 header, zero padded */
} __attribute__((aligned(8)));

static __always_inline int tsnp_fp_equal(const struct tsnp_fp *a, const struct tsnp_fp *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

/* A multiplicative hash of the four words: the stage's slot index. */
static __always_inline __u32 tsnp_fp_hash(const struct tsnp_fp *fp)
{
	const __u64 *w = (const __u64 *)fp;
	__u64 h = w[0] * 0x9e3779b97f4a7c15ULL;

	h = (h ^ w[1]) * 0xc2b2ae3d27d4eb4fULL;
	h = (h ^ w[2]) * 0x165667b19e3779f9ULL;
	h = (h ^ w[3]) * 0x9e3779b97f4a7c15ULL;
	return h >> 32;
}

/* A pod's classification rule, for packets whose socket set no priority. */
struct tsnp_rule {
	__u8 family;	 /* 0: any, 4, 6 */
	__u8 l4proto;	 /* 0: any, else IPPROTO_* */
	__u8 prefix_len; /* of addr; 0: any destination */
	__u8 _pad;
	__u16 port_lo;	 /* destination port range (host order); 0-0: any */
	__u16 port_hi;
	__u32 priority;
	__u32 _pad2;
	__u8 addr[16];	 /* destination prefix: IPv4 in the first 4 bytes */
};

#define TSNP_RULES 8

#define TSNP_POD_CARRY_TAG 0x1	 /* carrier: the tag */
#define TSNP_POD_CARRY_STAGE 0x2 /* carrier: the stage; neither: admit only */
#define TSNP_POD_REMAP 0x4	 /* remap[] applies to priorities 0-15 */
#define TSNP_POD_CLASSIFY 0x8	 /* default_priority / rules apply to unprioritized packets */
#define TSNP_POD_NETKIT 0x10	 /* a netkit pair: its packets may reach the NIC redirected
				  * straight from the peer hook, never received by the node */

/* A pod interface's policy and carrier, keyed by its host-side ifindex (tsnp_pods). */
struct tsnp_pod {
	__u64 cookie;		/* identifies the pod (user space: FNV-1a of the container id) */
	__u32 max_priority;	/* the ceiling: the node's, lowered by the pod's own layers */
	__u32 default_priority; /* for packets whose socket set none (TSNP_POD_CLASSIFY) */
	__u16 slot;		/* counter slot in tsnp_pod_stats (0: none) */
	__u16 flags;		/* TSNP_POD_* */
	__u8 nrules;		/* rules[0..nrules) in order; the first match wins */
	__u8 reason;		/* why this carrier (user space's code, for status and doctor) */
	__u8 _pad[2];
	__u32 remap[16];	/* priority p (0-15) becomes remap[p] before the ceiling */
	struct tsnp_rule rules[TSNP_RULES];
};

#define TSNP_CONFIG_TAGS 0x1 /* the restorer trusts tags (some pod may use the tag carrier) */

/* The node: one entry (tsnp_config). */
struct tsnp_config {
	__u64 stage_max_age_ns; /* a staged entry older than this never restores */
	__u32 flags;		/* TSNP_CONFIG_* */
	__u32 _pad;
	/* The node's own policy layer, which every pod's entry in tsnp_pods starts from (user
	 * space merges the pod's layers into it at CNI ADD); its ceiling also bounds tags. */
	struct tsnp_pod node;
};

/* What a staged packet carries. */
#define TSNP_STAGED_TSTAMP 0x1	 /* tstamp holds an untyped launch time to write back */
#define TSNP_STAGED_ANY_IIF 0x4	 /* from a netkit pod: may arrive without an ingress interface */

struct tsnp_stage_entry {
	struct tsnp_fp fp;
	__u64 tstamp;
	__u32 priority;
	__u16 slot;
	__u8 flags;	/* TSNP_STAGED_* */
	__u8 _pad;
};

/* The last first-fragment restored on this CPU: later fragments of its datagram, made by
 * the node after admit saw the whole datagram, carry no L4 header to match on. */
struct tsnp_frag_follow {
	__u64 when;	/* 0: none */
	__u64 tstamp;
	__u32 saddr;	/* as the restorer sees them (after NAT) */
	__u32 daddr;
	__u32 priority;
	__u16 id;
	__u8 l4proto;
	__u8 flags;
	__u16 slot;
	__u16 _pad;
	__u32 _pad2;
};

/*
 * The stage's size: it must hold the newest entries of at least one neighbour queue's worth
 * of held packets (ARP/ND keep ~100-280 small ones per unresolved neighbour) next to the
 * traffic that keeps coming, so 2048 entries per CPU, in buckets of 8 ways. A per-CPU map
 * value is at most 32 KiB, so the table is TSNP_STAGE_PARTS values of one part each.
 *
 * A bucket starts with one cache line that says what its ways hold: a signature (the hash
 * bits the bucket's place does not use) and the admit time of each. Admit and restore read
 * that line, then only the entry whose signature matches: two lines a packet, not eight.
 */
#define TSNP_STAGE_WAYS 8	    /* entries per bucket; a power of two */
#define TSNP_STAGE_PART_BUCKETS 32 /* buckets per part; a power of two */
#define TSNP_STAGE_PART_BITS 3
#define TSNP_STAGE_PARTS (1 << TSNP_STAGE_PART_BITS) /* parts per CPU */
#define TSNP_STAGE_PLACE_BITS 8    /* hash bits that pick the part and the bucket */
#define TSNP_MAX_CPUS 1024	    /* the restorer's look at other CPUs stops at the last one */

#define TSNP_SIG_READ 0x1	/* a restorer has read the way's entry */
#define TSNP_SIG_USED 0x2	/* the way holds an entry (a signature of 0: never used) */
#define TSNP_SIG_HASH 0xffffff00 /* the hash bits above TSNP_STAGE_PLACE_BITS */
#define TSNP_STAGE_TIME_SHIFT 20 /* bucket times count 2^20 ns (~1 ms), wrapping */

_Static_assert(TSNP_STAGE_PARTS * TSNP_STAGE_PART_BUCKETS == 1 << TSNP_STAGE_PLACE_BITS,
	       "the part and the bucket take the hash's low TSNP_STAGE_PLACE_BITS bits");

struct tsnp_stage_bucket {
	__u32 sig[TSNP_STAGE_WAYS];  /* TSNP_SIG_*; 0: empty */
	__u32 when[TSNP_STAGE_WAYS]; /* admit's bpf_ktime_get_coarse_ns() >> TIME_SHIFT */
	struct tsnp_stage_entry e[TSNP_STAGE_WAYS];
};

struct tsnp_stage_part {
	struct tsnp_stage_bucket b[TSNP_STAGE_PART_BUCKETS];
};
_Static_assert(sizeof(struct tsnp_stage_part) <= 32768, "a per-CPU value is at most 32 KiB");

/* A CPU's stage beside its entries. */
struct tsnp_stage_meta {
	__u64 last_when;	/* the newest entry on this CPU (the restorer's idle check) */
	struct tsnp_frag_follow follow;
};

/* Where a fingerprint is staged: its part, its bucket there, its signature. */
struct tsnp_stage_at {
	__u32 part;
	__u32 bucket;
	__u32 sig;
};

static __always_inline struct tsnp_stage_at tsnp_stage_at(const struct tsnp_fp *fp)
{
	__u32 h = tsnp_fp_hash(fp);
	struct tsnp_stage_at at = {
		.part = h & (TSNP_STAGE_PARTS - 1),
		.bucket = (h >> TSNP_STAGE_PART_BITS) & (TSNP_STAGE_PART_BUCKETS - 1),
		.sig = (h & TSNP_SIG_HASH) | TSNP_SIG_USED,
	};

	return at;
}

/* The bucket in a part; the mask is the bound the verifier sees, whatever was spilled. */
static __always_inline struct tsnp_stage_bucket *tsnp_bucket(struct tsnp_stage_part *part,
							    __u32 bucket)
{
	return &part->b[bucket & (TSNP_STAGE_PART_BUCKETS - 1)];
}

/* A bucket time (see TSNP_STAGE_TIME_SHIFT) and whether one is older than an age. */
static __always_inline __u32 tsnp_time32(__u64 ns)
{
	return ns >> TSNP_STAGE_TIME_SHIFT;
}

/* Signed, so that a time another CPU stored a tick after `now` is not old; wrapping, so an
 * entry left untouched for 2^31 ticks (~26 days) may look fresh: its fingerprint still has
 * to match a packet's. */
static __always_inline int tsnp_aged32(__u32 now, __u32 then, __u64 max_age_ns)
{
	return (__s32)(now - then) > (__s32)(max_age_ns >> TSNP_STAGE_TIME_SHIFT);
}

/* Where a fingerprint's entry is in its bucket. */
struct tsnp_way {
	struct tsnp_stage_bucket *b;
	__u32 w; /* < TSNP_STAGE_WAYS */
};

/* Whether a way holds this signature's entry (read or not). */
static __always_inline int tsnp_sig_is(__u32 sig, __u32 want)
{
	return (sig & ~TSNP_SIG_READ) == want;
}

/* Keeps the compiler from moving stores across it: a way's signature is cleared before its
 * entry is rewritten and set after, for a restorer reading it from another CPU. */
#define tsnp_compiler_barrier() asm volatile("" ::: "memory")

/*
 * The request stage: what the tag-sized request cannot hold, from the saver to admit on the
 * same CPU (the pod's packet reaches the host side through this CPU's backlog): a priority
 * above TSNP_REQ_PRIO_MASK, or an untyped launch time on a frame that is not IP (which the
 * kernel will not turn into a typed one). The key adds the skb length to the fingerprint:
 * nothing rewrites the packet between the two hooks.
 */
#define TSNP_REQ_STAGE_SLOTS 16

struct tsnp_req_entry {
	struct tsnp_fp fp;
	__u64 when;
	__u64 tstamp;	/* 0: none */
	__u32 priority;
	__u32 len;
};

struct tsnp_req_stage {
	struct tsnp_req_entry e[TSNP_REQ_STAGE_SLOTS];
};

enum tsnp_counter {
	TSNP_ADMITTED = 0,	/* pod packets admit handled */
	TSNP_ADMIT_REQUESTED,	/* of those, with a request from the pod's saver */
	TSNP_ADMIT_CLAMPED,	/* priority changed by the pod's policy */
	TSNP_ADMIT_CLASSIFIED,	/* priority from the pod's default/rules (the socket set none) */
	TSNP_ADMIT_NO_POD,	/* admit ran on an interface without a pod entry */
	TSNP_TAGGED,		/* handed to the tag */
	TSNP_STAGED,		/* handed to the stage */
	TSNP_STAGE_UNREAD,	/* staged entries overwritten before any restorer read them: pod
				 * packets that left by another way (to pods, the node, other NICs)
				 * or, if the restorer's misses grow with it, staged too far ahead */
	TSNP_STAMP_MOVED,	/* untyped launch times carried */
	TSNP_REQ_STAGE_MISS,	/* request said "staged" but admit found nothing */
	TSNP_RESTORED_TAG,	/* packets restored from the tag */
	TSNP_RESTORED_STAGE,	/* packets restored from the stage */
	TSNP_RESTORED_TSTAMP,	/* of those, launch time written back */
	TSNP_RESTORED_FRAG,	/* later fragments restored from their first fragment */
	TSNP_TAG_CLAMPED,	/* tag above the node's ceiling (not written by our admit) */
	TSNP_STAGE_MISS,	/* parsed while entries were pending, none matched */
	TSNP_STAGE_EXPIRED,	/* matched an entry older than the age limit */
	TSNP_TSTAMP_FAILED,	/* launch time could not be written */
	TSNP_RESTORED_ELSEWHERE, /* of TSNP_RESTORED_STAGE, from another CPU's stage (a packet
				  * held on the way, e.g. for its next hop's ARP/ND) */
	TSNP_COUNTER_MAX,
};

struct tsnp_pod_counters {
	__u64 admitted;
	__u64 clamped;
	__u64 restored;
};

/* Maps: pinned by name under the ABI's pin directory and shared by every program. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); /* host-side ifindex */
	__type(value, struct tsnp_pod);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tsnp_pods SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tsnp_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tsnp_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TSNP_STAGE_PARTS);
	__type(key, __u32);
	__type(value, struct tsnp_stage_part);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tsnp_stage SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tsnp_stage_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tsnp_stage_meta SEC(".maps");

/* When any CPU last staged, coarsely (admit refreshes it once an eighth of the age limit
 * has passed): a restorer whose own CPU staged nothing lately still looks elsewhere for a
 * packet that was held on the way while another CPU staged it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tsnp_stage_seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tsnp_req_stage);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tsnp_req_stage SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TSNP_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tsnp_stats SEC(".maps");

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

/*
 * Which release's objects these are: user space writes "tsnproxy <version> <objects sha>"
 * here before loading (src/bpf/loader.ts), so any release can tell, from a live program's
 * maps, which release loaded it.
 */
const volatile char tsnp_release[64] SEC(".rodata.release") = "unstamped";

static __always_inline void tsnp_count(enum tsnp_counter c)
{
	__u32 key = c;
	__u64 *v = bpf_map_lookup_elem(&tsnp_stats, &key);

	if (v)
		*v += 1; /* per-CPU slot: no atomics needed */
}

static __always_inline struct tsnp_pod_counters *tsnp_pod_counters_of(__u16 slot)
{
	__u32 key = slot;

	return slot ? bpf_map_lookup_elem(&tsnp_pod_stats, &key) : NULL;
}

static __always_inline struct tsnp_config *tsnp_config_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&tsnp_config, &zero);
}

/* True when `then` is more than `age` before `now` (a `then` after `now`, stored by another
 * CPU, is not old). */
static __always_inline int tsnp_older_than(__u64 now, __u64 then, __u64 age)
{
	return now > then && now - then > age;
}

/*
 * Header access. Headers are read in place (direct packet access) when they lie in the
 * skb's linear area, as they do for everything a local socket sends and for forwarded
 * packets once NAT has touched them; otherwise bpf_skb_load_bytes copies them out of the
 * fragments. len must be a compile-time constant. The packet is never modified.
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
	__u64 o = off;
	void *p;

	/* Opaque to the compiler: it then bounds-checks and adds the same register. Folding
	 * a caller's "x + 2" into the check ("x <= 253") leaves the register it adds
	 * unbounded for verifiers before 6.13 (Debian's 6.1 and 6.12 reject the program). */
	asm volatile("" : "+r"(off));
	if (off < TSNP_DIRECT_MAX) {
		/* The bound again, in the register the pointer is built from: older verifiers (6.1,
		 * 6.12) do not carry a bound from the compared register to a copy clang made of
		 * it before the comparison. */
		asm volatile("%[o] &= %[mask]" : [o] "+r"(o) : [mask] "i"(TSNP_DIRECT_MAX - 1));
		p = pk->data + o;
		if (p + len <= pk->data_end) {
			/* Whole words: the headers start 2 bytes off a word boundary after Ethernet,
			 * and the JIT and verifier accept unaligned packet loads on this target. */
			__builtin_memcpy(to, __builtin_assume_aligned(p, 4), len);
			return 0;
		}
	}
	return bpf_skb_load_bytes(pk->skb, off, to, len);
}

/* Byte offset of the L3 header after an Ethernet header at `off` (with up to two in-band
 * VLAN tags), or -1 when the frame carries neither IPv4 nor IPv6. */
static __always_inline int tsnp_l3_after_eth(struct tsnp_pkt *pk, int off)
{
	__u16 proto;

	off += 12;
	if (tsnp_load(pk, off, &proto, sizeof(proto)) < 0)
		return -1;
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
	return -1;
}

/* Byte offset of the packet's L3 header, or -1. Raw-IP devices (netkit in L3 mode, tun)
 * have no link-layer header at tc: then skb->protocol says what the first byte starts. */
static __always_inline int tsnp_l3_offset(struct tsnp_pkt *pk)
{
	struct __sk_buff *skb = pk->skb;
	int off = tsnp_l3_after_eth(pk, 0);
	__u8 v;

	if (off >= 0)
		return off;
	if (tsnp_load(pk, 0, &v, 1) < 0)
		return -1;
	if ((skb->protocol == bpf_htons(ETH_P_IP) && (v >> 4) == 4) ||
	    (skb->protocol == bpf_htons(ETH_P_IPV6) && (v >> 4) == 6))
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

/* What the fingerprint parser also reports about the packet (the restorer's fragment and
 * tunnel handling, admit's rules). */
struct tsnp_l3 {
	__s32 off;	/* L3 header offset */
	__s32 l4off;	/* L4 header offset, or -1 for a later fragment */
	__u32 saddr;	/* IPv4 only */
	__u32 daddr;
	__u16 id;	/* IPv4 id (network order) */
	__u8 more_frags;
	__u8 _pad;
};

#define TSNP_FP_L2 0xff /* struct tsnp_fp.family of a frame that is not IP */
#define TSNP_L3_MAX 1024 /* the deepest L3 header looked for (tunnels with options) */

/*
 * Fills fp (zeroed by the caller) from the IP header at `l3`. Returns 1 for IPv4/IPv6, 0
 * otherwise. A global function: the verifier checks it once, not once per call site and
 * path, which keeps every program that parses well inside the verifier's limits.
 */
__noinline int tsnp_fp_at(struct __sk_buff *skb, int l3, struct tsnp_fp *fp,
			  struct tsnp_l3 *info)
{
	struct tsnp_pkt pk = tsnp_pkt_of(skb);
	__u8 h[40] __attribute__((aligned(8)));
	__u32 end, plen, ihl;
	__u16 fo;

	if (!fp || !info)
		return 0;
	if (l3 < 0 || l3 > TSNP_L3_MAX || tsnp_load(&pk, l3, h, 20) < 0)
		return 0;
	info->off = l3;
	switch (h[0] >> 4) {
	case 4:
		ihl = (h[0] & 0xf) * 4;
		if (ihl < 20)
			return 0;
		fp->family = 4;
		fp->l4proto = h[9];
		__builtin_memcpy(&info->id, &h[4], 2);
		fp->l3id = info->id;
		__builtin_memcpy(&info->saddr, &h[12], 4);
		__builtin_memcpy(&info->daddr, &h[16], 4);
		fo = ((__u16)(h[6] & 0x1f) << 8) | h[7];
		info->more_frags = (h[6] & 0x20) != 0;
		plen = ((__u32)h[2] << 8) | h[3];
		/* total length 0: a BIG TCP GSO packet, bounded by the skb */
		end = plen ? l3 + plen : skb->len;
		if (fo) {
			/* A later fragment carries no L4 header: its offset and payload instead. */
			fp->frag = fo;
			info->l4off = -1;
			tsnp_sample(&pk, l3 + ihl, end, fp);
		} else {
			info->l4off = l3 + ihl;
			tsnp_fp_l4(&pk, l3 + ihl, end, fp);
		}
		return 1;
	case 6:
		if (tsnp_load(&pk, l3, h, sizeof(h)) < 0)
			return 0;
		fp->family = 6;
		fp->l4proto = h[6];
		fp->l3id = bpf_htonl(((__u32)(h[1] & 0x0f) << 16) | ((__u32)h[2] << 8) | h[3]);
		plen = ((__u32)h[4] << 8) | h[5];
		/* payload length 0: a jumbogram (BIG TCP), bounded by the skb */
		end = plen ? l3 + 40 + plen : skb->len;
		info->l4off = l3 + 40;
		tsnp_fp_l4(&pk, l3 + 40, end, fp);
		return 1;
	}
	return 0;
}

/*
 * The fingerprint of any frame (fp zeroed by the caller): IP as above; anything else (an IEEE
 * 1722 AVTP stream, PTP) by its ethertype and first payload bytes, which for a stream
 * protocol hold the stream id and sequence number. Returns 1 for IP, 0 for another frame.
 */
__noinline int tsnp_fp_of(struct __sk_buff *skb, struct tsnp_fp *fp, struct tsnp_l3 *info)
{
	struct tsnp_pkt pk = tsnp_pkt_of(skb);

	if (!fp || !info)
		return 0;
	if (tsnp_fp_at(skb, tsnp_l3_offset(&pk), fp, info))
		return 1;
	__builtin_memset(fp, 0, sizeof(*fp));
	fp->family = TSNP_FP_L2;
	tsnp_sample(&pk, 12, skb->len, fp);
	return 0;
}

#endif /* TSNPROXY_H */
