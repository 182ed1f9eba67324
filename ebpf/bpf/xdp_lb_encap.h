/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * Rewriting a packet for its backend: NAT (the destination, with its checksums) and GUE
 * encapsulation (variant 1: the UDP payload is the inner IP packet).
 */
#ifndef XDP_LB_ENCAP_H
#define XDP_LB_ENCAP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "xdp_lb_consts.h"
#include "xdp_lb_csum.h"
#include "xdp_lb_helpers.h"
#include "xdp_lb_icmp.h"
#include "xdp_lb_structs.h"

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

/*
 * Encapsulates the packet for its backend's node. A packet that would not fit cfg->gue_mtu once
 * encapsulated gets ICMP "fragmentation needed" / "packet too big" back instead (the outer
 * header says DF: nothing on the way may fragment it), except an IPv4 packet without DF, which
 * is encapsulated without DF for the kernel to fragment (*kernel set: it must be XDP_PASS).
 * XDP_PASS: encapsulated; anything else is the packet's verdict.
 */
static __always_inline int gue_encap(struct xdp_md *ctx, struct parsed *p, const struct lx_real *r,
				     struct lx_config *cfg, __u32 hash, int *kernel)
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
	__u16 df = bpf_htons(IP_DF);
	if (cfg->gue_mtu && (__u32)inner + olen > cfg->gue_mtu) {
		__u16 fits = cfg->gue_mtu - olen;
		if (v6) {
			count(LX_ICMP_TOO_BIG);
			return icmp_too_big(ctx, 1, fits);
		}
		struct iphdr *ip = p->l3;
		if ((void *)(ip + 1) > end)
			return XDP_DROP;
		if (ip->frag_off & bpf_htons(IP_DF)) {
			count(LX_ICMP_TOO_BIG);
			return icmp_too_big(ctx, 0, fits);
		}
		df = 0;
		*kernel = 1;
	}
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
		o6->hop_limit = GUE_TTL;
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
		o4->frag_off = df;
		o4->ttl = GUE_TTL;
		o4->protocol = IPPROTO_UDP;
		o4->check = 0;
		__builtin_memcpy(&o4->saddr, cfg->gue_src4, 4);
		__builtin_memcpy(&o4->daddr, r->node, 4);
		o4->check = ipv4_csum(o4);
	}
	u->source = bpf_htons(GUE_SPORT_BASE | (hash & GUE_SPORT_MASK));
	u->dest = cfg->gue_port;
	u->len = bpf_htons(inner + sizeof(*u));
	/* Zero: none over IPv4, and allowed for tunnels over IPv6 (RFC 6935). */
	u->check = 0;
	return XDP_PASS;
}

#endif /* XDP_LB_ENCAP_H */
