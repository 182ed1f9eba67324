/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * Counting, the flow hashes (Maglev key, VIP filter bit), the per-CPU flow cache, and
 * forwarding through the FIB.
 */
#ifndef XDP_LB_HELPERS_H
#define XDP_LB_HELPERS_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "xdp_lb_maps.h"
#include "xdp_lb_csum.h"

static __always_inline void count(__u32 slot)
{
	__u64 *c = bpf_map_lookup_elem(&LX_MAP_GLOBAL, &slot);
	if (c)
		*c += 1;
}

/* Counts a packet of `len` bytes on a VIP's or a backend's stats entry `s` (NULL: none), whose
 * first counters lx_vip_stats and lx_real_stats share; a macro, as they are two types. */
#define COUNT_PACKET(s, len, new_flow)            \
	do {                                      \
		if (s) {                          \
			(s)->packets++;           \
			(s)->bytes += (len);      \
			if (new_flow)             \
				(s)->new_flows++; \
		}                                 \
	} while (0)

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
				      const struct lx_flow *f, const struct lx_ct *ct, __u32 now,
				      __u32 flags)
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
	b->e[way].flags = flags;
}

/* The CPU's clock for LX_CT_REFRESH: flows it has cached so far. */
static __always_inline __u32 cache_clock(int tick)
{
	__u32 slot = LX_CACHE_INSERTS;
	__u64 *now = bpf_map_lookup_elem(&LX_MAP_GLOBAL, &slot);
	if (!now)
		return 0;
	return tick ? (__u32)(*now)++ : (__u32)*now;
}

/*
 * Counts a new flow against this CPU's rate; whether the CPU is flooded (more than
 * cfg->flood_rate new flows in the current window). The clock is read every LX_FLOOD_SAMPLE
 * new flows only.
 */
static __always_inline int flooded(const struct lx_config *cfg)
{
	if (!cfg || !cfg->flood_rate)
		return 0;
	__u32 zero = 0;
	struct lx_flood *f = bpf_map_lookup_elem(&LX_MAP_FLOOD, &zero);
	if (!f)
		return 0;
	__u32 n = ++f->flows;
	if ((n & (LX_FLOOD_SAMPLE - 1)) == 0) {
		__u64 now = bpf_ktime_get_ns();
		if (now - f->window_ns >= (__u64)LX_FLOOD_WINDOW_MS * 1000000) {
			/* A new window: flooded while the last one was over the rate. */
			f->flooding = n > cfg->flood_rate;
			f->window_ns = now;
			f->flows = 0;
		} else if (n > cfg->flood_rate) {
			f->flooding = 1;
		}
	}
	return f->flooding;
}

/* A VIP id's generation (0: no VIP has it) and its mode, in one load: a mode change is seen
 * whole. */
static __always_inline __u32 live_gen(const struct lx_vip *live, __u32 *mode)
{
	__u64 mg = *(volatile const __u64 *)&live->mode;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	*mode = (__u32)mg;
	return mg >> 32;
#else
	*mode = mg >> 32;
	return (__u32)mg;
#endif
}

/* The flow of a backend's replies to the client of flow `f`, which was given `real`. */
static __always_inline void reply_flow(struct lx_flow *back, const struct lx_flow *f,
				       const struct lx_real *real)
{
	__builtin_memset(back, 0, sizeof(*back));
	__builtin_memcpy(back->src, real->addr, 16);
	__builtin_memcpy(back->dst, f->src, 16);
	back->sport = real->port;
	back->dport = f->sport;
	back->proto = f->proto;
	back->family = f->family;
}

/* The entry of a flow's destination in `map` (lx_vips), or with `src` of its source
 * (lx_nat_backends): both are keyed by address, port and protocol. */
static __always_inline void *svc_lookup(void *map, const struct lx_flow *f, int src)
{
	struct ls_svc_key k;
	__builtin_memset(&k, 0, sizeof(k));
	__builtin_memcpy(k.addr, src ? f->src : f->dst, 16);
	k.port = src ? f->sport : f->dport;
	k.proto = f->proto;
	k.family = f->family;
	return bpf_map_lookup_elem(map, &k);
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

#endif /* XDP_LB_HELPERS_H */
