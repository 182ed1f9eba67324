/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * The XDP program's own constants (what it shares with userspace is in lodestar.h).
 */
#ifndef XDP_LB_CONSTS_H
#define XDP_LB_CONSTS_H

/* What parse() makes of a packet. */
enum { P_OK = 0, P_NOT_OURS, P_FRAGMENT, P_OPTIONS, P_MALFORMED };

/* IPv4 frag_off: the MF flag and the offset (either set: a fragment), and DF. */
#define IP_MF_OFFSET   0x3fff
#define IP_DF          0x4000

/* IPv6 next headers that are extension headers, not a transport (RFC 8200). */
#define NH_HOP_BY_HOP  0
#define NH_ROUTING     43
#define NH_FRAGMENT    44
#define NH_DEST_OPTS   60

/* Outer headers of GUE packets: the TTL / hop limit, and the UDP source port, which carries
 * 14 bits of the flow hash in the ephemeral range so that the underlay's ECMP spreads flows. */
#define GUE_TTL        64
#define GUE_SPORT_BASE 0xc000
#define GUE_SPORT_MASK 0x3fff

#endif /* XDP_LB_CONSTS_H */
