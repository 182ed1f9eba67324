/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * Parsing Ethernet / IPv4 / IPv6 / TCP / UDP into a flow, for XDP and tc alike; what is not
 * ours (or is a fragment, has options, or is truncated) says so.
 */
#ifndef XDP_LB_PARSING_H
#define XDP_LB_PARSING_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include "xdp_lb_consts.h"
#include "xdp_lb_structs.h"

/* The network header's part of the flow: its addresses (alen bytes each), the transport,
 * the family, where the header is and the length it gives. */
static __always_inline void parse_l3(struct parsed *p, const void *src, const void *dst, int alen,
				     __u8 proto, __u8 family, void *l3, __u16 l3_len)
{
	__builtin_memcpy(p->flow.src, src, alen);
	__builtin_memcpy(p->flow.dst, dst, alen);
	p->flow.proto = proto;
	p->flow.family = family;
	p->l3 = l3;
	p->l3_len = l3_len;
}

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
		if (ip->frag_off & bpf_htons(IP_MF_OFFSET))
			return P_FRAGMENT;
		parse_l3(p, &ip->saddr, &ip->daddr, 4, ip->protocol, AF_INET, ip,
			 bpf_ntohs(ip->tot_len));
		l4 = ip + 1;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return P_NOT_OURS;
		if (ip6->nexthdr == NH_FRAGMENT)
			return P_FRAGMENT;
		if (ip6->nexthdr != IPPROTO_TCP && ip6->nexthdr != IPPROTO_UDP) {
			/* Hop-by-hop, routing, destination options: the kernel's job. */
			if (ip6->nexthdr == NH_HOP_BY_HOP || ip6->nexthdr == NH_ROUTING ||
			    ip6->nexthdr == NH_DEST_OPTS)
				return P_OPTIONS;
			return P_NOT_OURS;
		}
		parse_l3(p, &ip6->saddr, &ip6->daddr, 16, ip6->nexthdr, AF_INET6, ip6,
			 bpf_ntohs(ip6->payload_len) + sizeof(*ip6));
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

#endif /* XDP_LB_PARSING_H */
