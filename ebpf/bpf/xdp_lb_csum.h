/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * Checksums: RFC 1624 incremental updates on raw, network-order words, and the full
 * IPv4 header checksum of a header built from scratch (GUE).
 */
#ifndef XDP_LB_CSUM_H
#define XDP_LB_CSUM_H

#include <linux/ip.h>

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

#endif /* XDP_LB_CSUM_H */
