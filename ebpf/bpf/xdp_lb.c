// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * The per-packet VIP path, for traffic that does not start in a local socket (other sites,
 * VMs, gateways): XDP on the load balancer's interfaces, in the manner of Katran and Cilium.
 *
 * - Parse Ethernet / IPv4 / IPv6 / TCP / UDP; anything else, and traffic to no VIP, passes
 *   untouched. Fragments and IPv4 options / IPv6 extension headers are passed and counted.
 * - Connection tracking (LRU, by 5-tuple) keeps a flow on its backend whatever happens to the
 *   backend set; a new flow gets its backend from the VIP's Maglev table (built in userspace,
 *   l4lb/src/maglev.rs), so a flow whose entry was evicted mostly lands on the same backend.
 * - Per VIP, NAT (rewrite the destination; lx_tc_revnat restores the VIP on replies) or DSR
 *   over GUE (UDP encapsulation to the backend's node; lx_tc_decap strips it there, and the
 *   backend, which holds the VIP locally, replies straight to the client).
 * - Forwarding: XDP_TX or XDP_REDIRECT where the FIB has a resolved route (LX_CFG_FIB_FORWARD),
 *   else XDP_PASS: the kernel forwards the rewritten packet.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lodestar.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LX_MAX_VIPS);
	__type(key, struct ls_svc_key);
	__type(value, struct lx_vip);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} LX_MAP_VIPS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LX_MAX_RING_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lx_ring_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} LX_MAP_RING SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LX_MAX_REALS);
	__type(key, __u32);
	__type(value, struct lx_real);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} LX_MAP_REALS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LX_MAX_CT);
	/* Per-CPU LRU lists: a new flow does not contend on one global list lock. */
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, struct lx_flow);
	__type(value, struct lx_ct);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} LX_MAP_CT SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LX_CACHE_BUCKETS);
	__type(key, __u32);
	__type(value, struct lx_cache_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} LX_MAP_FLOW_CACHE SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LX_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct lx_vip);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} LX_MAP_VIP_LIVE SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LX_FILTER_WORDS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} LX_MAP_VIP_FILTER SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LX_MAX_CT);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, struct lx_flow);
	__type(value, struct lx_rev);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} LX_MAP_REVNAT SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LX_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct lx_vip_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} LX_MAP_VIP_STATS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LX_MAX_REALS);
	__type(key, __u32);
	__type(value, struct lx_real_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} LX_MAP_REAL_STATS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LX_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} LX_MAP_GLOBAL SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lx_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} LX_MAP_XCONFIG SEC(".maps");

static __always_inline void count(__u32 slot)
{
	__u64 *c = bpf_map_lookup_elem(&LX_MAP_GLOBAL, &slot);
	if (c)
		*c += 1;
}

/* ---- checksums (RFC 1624 incremental updates on raw, network-order words) ---- */

static __always_inline __u16 fold(__u32 c)
{
	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	return (__u16)c;
}

static __always_inline __u16 ipv4_csum(struct iphdr *ip)
{
	__u32 c = 0;
	__u16 *w = (__u16 *)ip;
#pragma unroll
	for (int i = 0; i < 10; i++)
		c += w[i];
	return (__u16)~fold(c);
}

/* ---- parsing ---- */

enum { P_OK = 0, P_NOT_OURS, P_FRAGMENT, P_OPTIONS, P_MALFORMED };

struct parsed {
	struct lx_flow flow;
	void *l3;
	void *l4;
	__u16 *l4_csum;   /* NULL: UDP over IPv4 without a checksum */
	__u16 l3_len;     /* IPv4 total length, or IPv6 header + payload length */
	__u8 tcp_syn;
};

static __always_inline int parse(void *data, void *end, struct parsed *p)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return P_NOT_OURS;
	__builtin_memset(&p->flow, 0, sizeof(p->flow));
	void *l4;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return P_NOT_OURS;
		if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
			return P_NOT_OURS;
		if (ip->ihl != 5)
			return P_OPTIONS;
		if (ip->frag_off & bpf_htons(0x3fff))
			return P_FRAGMENT;
		__builtin_memcpy(p->flow.src, &ip->saddr, 4);
		__builtin_memcpy(p->flow.dst, &ip->daddr, 4);
		p->flow.proto = ip->protocol;
		p->flow.family = AF_INET;
		p->l3 = ip;
		p->l3_len = bpf_ntohs(ip->tot_len);
		l4 = ip + 1;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return P_NOT_OURS;
		if (ip6->nexthdr == 44)
			return P_FRAGMENT;
		if (ip6->nexthdr != IPPROTO_TCP && ip6->nexthdr != IPPROTO_UDP) {
			/* Hop-by-hop, routing, destination options: the kernel's job. */
			if (ip6->nexthdr == 0 || ip6->nexthdr == 43 || ip6->nexthdr == 60)
				return P_OPTIONS;
			return P_NOT_OURS;
		}
		__builtin_memcpy(p->flow.src, &ip6->saddr, 16);
		__builtin_memcpy(p->flow.dst, &ip6->daddr, 16);
		p->flow.proto = ip6->nexthdr;
		p->flow.family = AF_INET6;
		p->l3 = ip6;
		p->l3_len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
		l4 = ip6 + 1;
	} else {
		return P_NOT_OURS;
	}
	p->l4 = l4;
	p->tcp_syn = 0;
	if (p->flow.proto == IPPROTO_TCP) {
		struct tcphdr *t = l4;
		if ((void *)(t + 1) > end)
			return P_MALFORMED;
		p->flow.sport = t->source;
		p->flow.dport = t->dest;
		p->l4_csum = &t->check;
		p->tcp_syn = t->syn && !t->ack;
	} else {
		struct udphdr *u = l4;
		if ((void *)(u + 1) > end)
			return P_MALFORMED;
		p->flow.sport = u->source;
		p->flow.dport = u->dest;
		/* 0: no checksum (IPv4; and IPv6 tunnels, RFC 6935): it stays 0. */
		p->l4_csum = u->check == 0 ? 0 : &u->check;
	}
	return P_OK;
}

/* Mixes the flow (40 bytes) into 32 bits: the Maglev key and the GUE source port. */
static __always_inline __u32 flow_hash(const struct lx_flow *f)
{
	const __u32 *w = (const __u32 *)f;
	__u32 h = 0x9e3779b9;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(*f) / 4); i++) {
		h ^= w[i];
		h *= 0x85ebca6b;
		h ^= h >> 13;
	}
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* The destination address folded to 32 bits: the filter's and the cache's input. */
static __always_inline __u32 dst_fold(const struct lx_flow *f)
{
	const __u32 *d = (const __u32 *)f->dst;
	return d[0] ^ d[1] ^ d[2] ^ d[3];
}

/* The VIP filter's bit for a packet's destination (mirrored by filter_bit in xdp.rs). */
static __always_inline __u32 filter_bit(const struct lx_flow *f, __u32 dst)
{
	__u32 x = dst ^ (((__u32)f->dport << 16) | f->proto);
	return (x * 0x9e3779b1u) >> (32 - 16);
}

/* ---- the per-CPU flow cache ---- */

/* A cheap mix of the flow: its bucket (the top bits), and its tag (never 0). */
static __always_inline __u32 cache_index(const struct lx_flow *f, __u32 dst, __u32 *tag)
{
	const __u32 *w = (const __u32 *)f;
	__u64 h = ((__u64)(w[0] ^ w[1] ^ w[2] ^ w[3]) << 32) | dst;
	h ^= (__u64)(w[8] ^ (w[9] << 7)) * 0x9e3779b97f4a7c15ULL;
	h *= 0xc2b2ae3d27d4eb4fULL;
	*tag = (__u32)(h >> 18) | 1;
	return (__u32)(h >> (64 - LX_CACHE_BITS));
}

static __always_inline int flow_eq(const struct lx_flow *a, const struct lx_flow *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;
	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) |
		(x[4] ^ y[4])) == 0;
}

static __always_inline int cache_find(struct lx_cache_bucket *b, __u32 tag,
				      const struct lx_flow *f)
{
#pragma unroll
	for (int i = 0; i < LX_CACHE_WAYS; i++)
		if (b->tags[i] == tag && flow_eq(&b->e[i].flow, f))
			return i;
	return -1;
}

/* Puts a flow in its set: in `way` (its stale entry), or in place of the oldest. */
static __always_inline void cache_put(struct lx_cache_bucket *b, int way, __u32 tag,
				      const struct lx_flow *f, const struct lx_ct *ct, __u32 now)
{
	if (way < 0) {
		way = b->next & (LX_CACHE_WAYS - 1);
		b->next = way + 1;
	}
	way &= LX_CACHE_WAYS - 1;
	b->tags[way] = tag;
	__builtin_memcpy(&b->e[way].flow, f, sizeof(*f));
	__builtin_memcpy(&b->e[way].ct, ct, sizeof(*ct));
	b->e[way].touched = now;
}

/* ---- NAT ---- */

/* The one's-complement difference (unfolded) of replacing the 32-bit word `from` by `to`. */
static __always_inline __u32 csum_diff4(__u32 from, __u32 to)
{
	return (__u16)~from + (__u16)~(from >> 16) + (__u16)to + (__u16)(to >> 16);
}

/* Applies an unfolded difference of at most 2^16 words' worth to a checksum. */
static __always_inline void csum_apply(__u16 *sum, __u32 diff)
{
	*sum = (__u16)~fold((__u16)~*sum + diff);
}

static __always_inline void nat_dst(struct parsed *p, const struct lx_real *r, void *end)
{
	/* The destination port: TCP and UDP both keep it at offset 2. */
	__u16 *dport = (__u16 *)p->l4 + 1;
	if ((void *)(dport + 1) > end)
		return;
	__u32 l4diff = (__u16)~*dport + r->port;
	if (p->flow.family == AF_INET) {
		struct iphdr *ip = p->l3;
		if ((void *)(ip + 1) > end)
			return;
		__u32 to;
		__builtin_memcpy(&to, r->addr, 4);
		__u32 d = csum_diff4(ip->daddr, to);
		csum_apply(&ip->check, d);
		l4diff += d;
		ip->daddr = to;
	} else {
		struct ipv6hdr *ip6 = p->l3;
		if ((void *)(ip6 + 1) > end)
			return;
		__u32 *from = (__u32 *)&ip6->daddr;
		const __u32 *to = (const __u32 *)r->addr;
#pragma unroll
		for (int i = 0; i < 4; i++) {
			l4diff += csum_diff4(from[i], to[i]);
			from[i] = to[i];
		}
	}
	if (p->l4_csum) {
		csum_apply(p->l4_csum, l4diff);
		/* 0 means "no checksum" to UDP: a computed 0 is sent as its equal, 0xffff. */
		if (p->flow.proto == IPPROTO_UDP && *p->l4_csum == 0)
			*p->l4_csum = 0xffff;
	}
	*dport = r->port;
}

/* ---- GUE (variant 1: the UDP payload is the inner IP packet) ---- */

static __always_inline int gue_encap(struct xdp_md *ctx, struct parsed *p, const struct lx_real *r,
				     struct lx_config *cfg, __u32 hash)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr eth;
	struct ethhdr *old = data;
	if ((void *)(old + 1) > end)
		return XDP_DROP;
	__builtin_memcpy(&eth, old, sizeof(eth));
	__u16 inner = p->l3_len;
	int v6 = p->flow.family == AF_INET6;
	int olen = (v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr)) + sizeof(struct udphdr);
	if (bpf_xdp_adjust_head(ctx, -olen)) {
		count(LX_DROP_ENCAP);
		return XDP_DROP;
	}
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	struct ethhdr *neth = data;
	if ((void *)(neth + 1) > end)
		return XDP_DROP;
	__builtin_memcpy(neth, &eth, sizeof(eth));
	struct udphdr *u;
	if (v6) {
		struct ipv6hdr *o6 = (void *)(neth + 1);
		u = (void *)(o6 + 1);
		if ((void *)(u + 1) > end)
			return XDP_DROP;
		__builtin_memset(o6, 0, sizeof(*o6));
		o6->version = 6;
		o6->payload_len = bpf_htons(inner + sizeof(*u));
		o6->nexthdr = IPPROTO_UDP;
		o6->hop_limit = 64;
		__builtin_memcpy(&o6->saddr, cfg->gue_src6, 16);
		__builtin_memcpy(&o6->daddr, r->node, 16);
	} else {
		struct iphdr *o4 = (void *)(neth + 1);
		u = (void *)(o4 + 1);
		if ((void *)(u + 1) > end)
			return XDP_DROP;
		o4->version = 4;
		o4->ihl = 5;
		o4->tos = 0;
		o4->tot_len = bpf_htons(inner + sizeof(*o4) + sizeof(*u));
		o4->id = 0;
		o4->frag_off = bpf_htons(0x4000); /* DF */
		o4->ttl = 64;
		o4->protocol = IPPROTO_UDP;
		o4->check = 0;
		__builtin_memcpy(&o4->saddr, cfg->gue_src4, 4);
		__builtin_memcpy(&o4->daddr, r->node, 4);
		o4->check = ipv4_csum(o4);
	}
	u->source = bpf_htons(0xc000 | (hash & 0x3fff));
	u->dest = cfg->gue_port;
	u->len = bpf_htons(inner + sizeof(*u));
	/* Zero: none over IPv4, and allowed for tunnels over IPv6 (RFC 6935). */
	u->check = 0;
	return XDP_PASS;
}

/* XDP_TX / XDP_REDIRECT when the FIB has a resolved next hop for the (new) destination. */
static __always_inline int forward(struct xdp_md *ctx, struct lx_config *cfg)
{
	if (!cfg || !(cfg->flags & LX_CFG_FIB_FORWARD)) {
		count(LX_XDP_PASS_FWD);
		return XDP_PASS;
	}
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	struct bpf_fib_lookup fib;
	__builtin_memset(&fib, 0, sizeof(fib));
	fib.ifindex = ctx->ingress_ifindex;
	/* Forwarding here is a hop like the kernel's: the TTL goes down by one, and a packet
	 * with none left is the kernel's (it answers with ICMP time exceeded). */
	__u8 *ttl;
	__u16 *ip4_check = 0;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return XDP_PASS;
		ttl = &ip->ttl;
		ip4_check = &ip->check;
		fib.family = AF_INET;
		fib.tos = ip->tos;
		fib.l4_protocol = ip->protocol;
		fib.tot_len = bpf_ntohs(ip->tot_len);
		fib.ipv4_src = ip->saddr;
		fib.ipv4_dst = ip->daddr;
	} else {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return XDP_PASS;
		ttl = &ip6->hop_limit;
		fib.family = AF_INET6;
		fib.l4_protocol = ip6->nexthdr;
		fib.tot_len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
		__builtin_memcpy(fib.ipv6_src, &ip6->saddr, 16);
		__builtin_memcpy(fib.ipv6_dst, &ip6->daddr, 16);
	}
	if (*ttl <= 1 ||
	    bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS) {
		count(LX_XDP_PASS_FWD);
		return XDP_PASS;
	}
	if (ip4_check) {
		/* The TTL is the high byte of the header's fifth 16-bit word (network order). */
		csum_apply(ip4_check, (__u16)~bpf_htons((__u16)*ttl << 8) +
					      bpf_htons((__u16)(*ttl - 1) << 8));
	}
	*ttl -= 1;
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	if (fib.ifindex == ctx->ingress_ifindex) {
		count(LX_XDP_TX);
		return XDP_TX;
	}
	count(LX_XDP_REDIRECT);
	return bpf_redirect(fib.ifindex, 0);
}

SEC("xdp")
int lx_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct parsed p;
	int r = parse(data, end, &p);
	if (r == P_NOT_OURS)
		return XDP_PASS;
	if (r == P_FRAGMENT) {
		count(LX_PASS_FRAGMENT);
		return XDP_PASS;
	}
	if (r == P_OPTIONS) {
		count(LX_PASS_IP_OPTIONS);
		return XDP_PASS;
	}

	if (r == P_MALFORMED) {
		/* A truncated L4 header: the kernel drops it. */
		count(LX_DROP_MALFORMED);
		return XDP_PASS;
	}
	/* Traffic to no VIP leaves after one array read. */
	__u32 dst = dst_fold(&p.flow);
	__u32 bit = filter_bit(&p.flow, dst);
	__u32 word_ix = bit >> 6;
	__u64 *word = bpf_map_lookup_elem(&LX_MAP_VIP_FILTER, &word_ix);
	if (!word || !(*word & (1ULL << (bit & 63))))
		return XDP_PASS;

	/* A tracked flow, from this CPU's cache: no hash map lookup at all. */
	struct lx_ct fresh;
	const struct lx_ct *ct;
	__u32 mode;
	int new_flow = 0;
	__u32 tag;
	__u32 bucket = cache_index(&p.flow, dst, &tag);
	struct lx_cache_bucket *cb = bpf_map_lookup_elem(&LX_MAP_FLOW_CACHE, &bucket);
	int way = -1;
	if (cb) {
		way = cache_find(cb, tag, &p.flow);
		if (way >= 0) {
			struct lx_cache_entry *e = &cb->e[way & (LX_CACHE_WAYS - 1)];
			__u32 vid = e->ct.real.vip_id;
			struct lx_vip *live = bpf_map_lookup_elem(&LX_MAP_VIP_LIVE, &vid);
			if (live) {
				/* mode and gen in one load: a mode change is seen whole. */
				__u64 mg = *(volatile __u64 *)&live->mode;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
				__u32 lgen = mg >> 32, lmode = (__u32)mg;
#else
				__u32 lgen = (__u32)mg, lmode = mg >> 32;
#endif
				if (lgen && lgen == e->ct.gen) {
					ct = &e->ct;
					mode = lmode;
					__u32 clock = LX_CACHE_INSERTS;
					__u64 *now = bpf_map_lookup_elem(&LX_MAP_GLOBAL, &clock);
					if (now && (__u32)*now - e->touched > LX_CT_REFRESH) {
						e->touched = (__u32)*now;
						/* Keeps lx_ct's entry from ageing out, or puts it back. */
						if (!bpf_map_lookup_elem(&LX_MAP_CT, &p.flow))
							bpf_map_update_elem(&LX_MAP_CT, &p.flow, &e->ct,
									    BPF_NOEXIST);
					}
					goto tracked;
				}
			}
		}
	}

	/* Otherwise: the VIP, then the shared table, then its Maglev table. */
	struct ls_svc_key key;
	__builtin_memset(&key, 0, sizeof(key));
	__builtin_memcpy(key.addr, p.flow.dst, 16);
	key.port = p.flow.dport;
	key.proto = p.flow.proto;
	key.family = p.flow.family;
	struct lx_vip *vip = bpf_map_lookup_elem(&LX_MAP_VIPS, &key);
	if (!vip)
		return XDP_PASS;
	__u32 vip_id = vip->id;
	__u32 ring = vip->ring_size;
	__u32 gen = vip->gen;
	mode = vip->mode;

	struct lx_ct *shared = bpf_map_lookup_elem(&LX_MAP_CT, &p.flow);
	if (shared && (shared->gen == gen || shared->gen == 0) && shared->real.vip_id == vip_id) {
		/* gen 0: an entry from before generations, taken as it was then. */
		__builtin_memcpy(&fresh, shared, sizeof(fresh));
		fresh.gen = gen;
		count(LX_CACHE_MISS);
	} else {
		if (ring == 0) {
			count(LX_DROP_NO_REAL);
			return XDP_DROP;
		}
		struct lx_ring_key rk = { .vip_id = vip_id, .slot = flow_hash(&p.flow) % ring };
		__u32 *rid = bpf_map_lookup_elem(&LX_MAP_RING, &rk);
		if (!rid) {
			count(LX_DROP_NO_REAL);
			return XDP_DROP;
		}
		__u32 real_id = *rid;
		struct lx_real *real = bpf_map_lookup_elem(&LX_MAP_REALS, &real_id);
		if (!real || !(real->flags & LX_REAL_VALID) || real->vip_id != vip_id) {
			count(LX_DROP_NO_REAL);
			return XDP_DROP;
		}
		__builtin_memset(&fresh, 0, sizeof(fresh));
		__builtin_memcpy(&fresh.real, real, sizeof(*real));
		fresh.real_id = real_id;
		fresh.gen = gen;
		bpf_map_update_elem(&LX_MAP_CT, &p.flow, &fresh, BPF_ANY);
		new_flow = 1;
		struct lx_vip_stats *vs0 = bpf_map_lookup_elem(&LX_MAP_VIP_STATS, &vip_id);
		if (vs0) {
			if (p.flow.proto == IPPROTO_TCP && !p.tcp_syn)
				vs0->lru_misses++;
			else
				vs0->new_flows++;
		}
		struct lx_real_stats *rs0 = bpf_map_lookup_elem(&LX_MAP_REAL_STATS, &real_id);
		if (rs0)
			rs0->new_flows++;
	}
	if (cb) {
		__u32 clock = LX_CACHE_INSERTS;
		__u64 *now = bpf_map_lookup_elem(&LX_MAP_GLOBAL, &clock);
		__u32 t = 0;
		if (now)
			t = (__u32)(*now)++;
		cache_put(cb, way, tag, &p.flow, &fresh, t);
	}
	ct = &fresh;

tracked:;
	__u32 real_id = ct->real_id;
	__u32 stats_id = ct->real.vip_id;
	__u64 bytes = end - data;
	struct lx_vip_stats *vs = bpf_map_lookup_elem(&LX_MAP_VIP_STATS, &stats_id);
	if (vs) {
		vs->packets++;
		vs->bytes += bytes;
	}
	struct lx_real_stats *rs = bpf_map_lookup_elem(&LX_MAP_REAL_STATS, &real_id);
	if (rs) {
		rs->packets++;
		rs->bytes += bytes;
	}

	__u32 zero = 0;
	struct lx_config *cfg = bpf_map_lookup_elem(&LX_MAP_XCONFIG, &zero);
	if (mode == LX_MODE_GUE) {
		if (!cfg)
			return XDP_DROP;
		int act = gue_encap(ctx, &p, &ct->real, cfg, flow_hash(&p.flow));
		if (act != XDP_PASS)
			return act;
		return forward(ctx, cfg);
	}

	/* NAT: a new flow's replies will need their VIP back (tc egress); then rewrite. */
	if (!new_flow)
		goto rewrite;
	struct lx_flow back;
	__builtin_memset(&back, 0, sizeof(back));
	__builtin_memcpy(back.src, ct->real.addr, 16);
	__builtin_memcpy(back.dst, p.flow.src, 16);
	back.sport = ct->real.port;
	back.dport = p.flow.sport;
	back.proto = p.flow.proto;
	back.family = p.flow.family;
	struct lx_rev rev;
	__builtin_memset(&rev, 0, sizeof(rev));
	__builtin_memcpy(rev.addr, p.flow.dst, 16);
	rev.port = p.flow.dport;
	rev.family = p.flow.family;
	bpf_map_update_elem(&LX_MAP_REVNAT, &back, &rev, BPF_ANY);
rewrite:
	nat_dst(&p, &ct->real, end);
	return forward(ctx, cfg);
}

/* ---- tc: NAT replies (egress on the client-facing side) and GUE decapsulation ---- */

SEC("classifier")
int lx_tc_revnat(struct __sk_buff *skb)
{
	if (bpf_skb_pull_data(skb, sizeof(struct ethhdr) + sizeof(struct ipv6hdr) +
					 sizeof(struct tcphdr)) < 0) {
		/* Shorter than that: pull what there is. */
		bpf_skb_pull_data(skb, 0);
	}
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct parsed p;
	if (parse(data, end, &p) != P_OK)
		return TC_ACT_OK;
	struct lx_rev *rev = bpf_map_lookup_elem(&LX_MAP_REVNAT, &p.flow);
	if (!rev)
		return TC_ACT_OK;
	struct lx_rev v;
	__builtin_memcpy(&v, rev, sizeof(v));
	__u32 l3 = sizeof(struct ethhdr);
	__u32 l4 = (__u32)((long)p.l4 - (long)data);
	__u32 csum_off = l4 + (p.flow.proto == IPPROTO_TCP ? 16 : 6);
	int has_l4_csum = p.l4_csum != 0;
	/* UDP: a checksum that comes out 0 must be sent as 0xffff. */
	__u64 mangled0 = p.flow.proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	if (p.flow.family == AF_INET) {
		__u32 from, to;
		__builtin_memcpy(&from, p.flow.src, 4);
		__builtin_memcpy(&to, v.addr, 4);
		bpf_l3_csum_replace(skb, l3 + 10, from, to, 4);
		if (has_l4_csum)
			bpf_l4_csum_replace(skb, csum_off, from, to,
					    BPF_F_PSEUDO_HDR | mangled0 | 4);
		bpf_skb_store_bytes(skb, l3 + 12, &to, 4, 0);
	} else {
#pragma unroll
		for (int i = 0; i < 4; i++) {
			__u32 from, to;
			__builtin_memcpy(&from, p.flow.src + 4 * i, 4);
			__builtin_memcpy(&to, v.addr + 4 * i, 4);
			bpf_l4_csum_replace(skb, csum_off, from, to,
					    BPF_F_PSEUDO_HDR | mangled0 | 4);
		}
		bpf_skb_store_bytes(skb, l3 + 8, v.addr, 16, 0);
	}
	if (has_l4_csum)
		bpf_l4_csum_replace(skb, csum_off, p.flow.sport, v.port, mangled0 | 2);
	bpf_skb_store_bytes(skb, l4, &v.port, 2, 0);
	count(LX_TC_REVNAT);
	return TC_ACT_OK;
}

SEC("classifier")
int lx_tc_decap(struct __sk_buff *skb)
{
	bpf_skb_pull_data(skb, sizeof(struct ethhdr) + sizeof(struct ipv6hdr) +
				       sizeof(struct udphdr) + 1);
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u32 zero = 0;
	struct lx_config *cfg = bpf_map_lookup_elem(&LX_MAP_XCONFIG, &zero);
	if (!cfg)
		return TC_ACT_OK;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return TC_ACT_OK;
	int olen;
	struct udphdr *u;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
			return TC_ACT_OK;
		u = (void *)(ip + 1);
		olen = sizeof(*ip) + sizeof(*u);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_UDP)
			return TC_ACT_OK;
		u = (void *)(ip6 + 1);
		olen = sizeof(*ip6) + sizeof(*u);
	} else {
		return TC_ACT_OK;
	}
	if ((void *)(u + 1) + 1 > end || u->dest != cfg->gue_port)
		return TC_ACT_OK;
	/* Variant 1: the payload's version nibble must match the outer family. */
	__u8 version = *(__u8 *)(u + 1) >> 4;
	if ((eth->h_proto == bpf_htons(ETH_P_IP) && version != 4) ||
	    (eth->h_proto == bpf_htons(ETH_P_IPV6) && version != 6))
		return TC_ACT_OK;
	if (bpf_skb_adjust_room(skb, -olen, BPF_ADJ_ROOM_MAC, 0))
		return TC_ACT_SHOT;
	count(LX_TC_DECAP);
	return TC_ACT_OK;
}
