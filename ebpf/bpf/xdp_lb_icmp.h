/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * ICMP "fragmentation needed" (IPv4) and "packet too big" (IPv6) for a packet that would not
 * fit its encapsulation, sent back to its sender from the address it was sent to (the VIP), the
 * way Katran's send_icmp_too_big does: the packet is cut down to the quote, the new headers are
 * put in front of it, and it leaves by the interface it came in on (XDP_TX).
 */
#ifndef XDP_LB_ICMP_H
#define XDP_LB_ICMP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/icmpv6.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "xdp_lb_consts.h"
#include "xdp_lb_csum.h"

/* ICMP's "destination unreachable: fragmentation needed" (RFC 1191); <linux/icmp.h> drags in
 * libc's socket headers, which a BPF build cannot use. */
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED  4

struct icmp4_frag {
	__u8  type;
	__u8  code;
	__u16 checksum;
	__u16 unused;
	__u16 mtu;        /* the next hop's MTU, network order */
};

/* What of the packet the message quotes: its IP header and what follows, as Katran quotes. */
#define ICMP4_QUOTE 84
#define ICMP6_QUOTE 248

/* Cuts the frame to the Ethernet header and `quote` bytes, and makes room for `room` more in
 * front. */
static __always_inline int icmp_room(struct xdp_md *ctx, int quote, int room)
{
	int len = (int)(ctx->data_end - ctx->data);
	if (len < ETH_HLEN + quote)
		return -1;
	if (bpf_xdp_adjust_tail(ctx, ETH_HLEN + quote - len))
		return -1;
	return bpf_xdp_adjust_head(ctx, -room);
}

/* The new frame goes back where the old one came from. */
static __always_inline void icmp_eth(struct ethhdr *eth, const struct ethhdr *old, __u16 proto)
{
	__builtin_memcpy(eth->h_dest, old->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, old->h_dest, ETH_ALEN);
	eth->h_proto = bpf_htons(proto);
}

/* Makes the frame an ICMP message's (icmp_room) going back where the old frame came from: its
 * IP header, with the headers and the quote checked to be in the frame; NULL: no room. */
static __always_inline void *icmp_frame(struct xdp_md *ctx, int quote, int room, __u16 proto)
{
	if (icmp_room(ctx, quote, room))
		return 0;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (data + ETH_HLEN + room + quote > end)
		return 0;
	icmp_eth(data, data + room, proto);
	return data + ETH_HLEN;
}

/* Adds n 16-bit words at p to the one's-complement sum c. */
static __always_inline __u32 sum16(__u32 c, const void *p, int n)
{
	const __u16 *w = p;
#pragma unroll
	for (int i = 0; i < n; i++)
		c += w[i];
	return c;
}

/* Fragmentation needed (RFC 1191), with the next hop's MTU, in the frame icmp_frame made. */
static __always_inline void icmp4_fill(struct iphdr *ip, __u16 mtu)
{
	struct icmp4_frag *icmp = (void *)(ip + 1);
	/* The quoted packet's addresses, the other way round. */
	struct iphdr *orig = (void *)(icmp + 1);
	ip->saddr = orig->daddr;
	ip->daddr = orig->saddr;
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = 0;
	ip->tot_len = bpf_htons(sizeof(*ip) + sizeof(*icmp) + ICMP4_QUOTE);
	ip->id = 0;
	ip->frag_off = 0;
	ip->ttl = GUE_TTL;
	ip->protocol = IPPROTO_ICMP;
	ip->check = 0;
	ip->check = ipv4_csum(ip);
	icmp->type = ICMP_DEST_UNREACH;
	icmp->code = ICMP_FRAG_NEEDED;
	icmp->checksum = 0;
	icmp->unused = 0;
	icmp->mtu = bpf_htons(mtu);
	icmp->checksum = (__u16)~fold(sum16(0, icmp, (sizeof(*icmp) + ICMP4_QUOTE) / 2));
}

/* Packet too big (RFC 8201), with the next hop's MTU, in the frame icmp_frame made. */
static __always_inline void icmp6_fill(struct ipv6hdr *ip6, __u32 mtu)
{
	struct icmp6hdr *icmp = (void *)(ip6 + 1);
	struct ipv6hdr *orig = (void *)(icmp + 1);
	__builtin_memcpy(&ip6->saddr, &orig->daddr, 16);
	__builtin_memcpy(&ip6->daddr, &orig->saddr, 16);
	__builtin_memset(ip6, 0, 4);
	ip6->version = 6;
	ip6->payload_len = bpf_htons(sizeof(*icmp) + ICMP6_QUOTE);
	ip6->nexthdr = IPPROTO_ICMPV6;
	ip6->hop_limit = GUE_TTL;
	icmp->icmp6_type = ICMPV6_PKT_TOOBIG;
	icmp->icmp6_code = 0;
	icmp->icmp6_cksum = 0;
	icmp->icmp6_mtu = bpf_htonl(mtu);
	/* The pseudo-header (addresses, length, next header), then the message. */
	__u32 c = bpf_htons(sizeof(*icmp) + ICMP6_QUOTE) + bpf_htons(IPPROTO_ICMPV6);
	c = sum16(c, &ip6->saddr, 16);
	icmp->icmp6_cksum = (__u16)~fold(sum16(c, icmp, (sizeof(*icmp) + ICMP6_QUOTE) / 2));
}

/* The packet back to its sender as ICMP's "too big" (v6) or "fragmentation needed" (IPv4),
 * with the next hop's MTU: XDP_TX, or XDP_DROP when there is no room. */
static __always_inline int icmp_too_big(struct xdp_md *ctx, int v6, __u16 mtu)
{
	void *l3 = v6 ? icmp_frame(ctx, ICMP6_QUOTE,
				   sizeof(struct ipv6hdr) + sizeof(struct icmp6hdr), ETH_P_IPV6)
		      : icmp_frame(ctx, ICMP4_QUOTE,
				   sizeof(struct iphdr) + sizeof(struct icmp4_frag), ETH_P_IP);
	if (!l3)
		return XDP_DROP;
	if (v6)
		icmp6_fill(l3, mtu);
	else
		icmp4_fill(l3, mtu);
	return XDP_TX;
}

#endif /* XDP_LB_ICMP_H */
