/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * The XDP program's own structs (the ones shared with userspace are in lodestar.h).
 */
#ifndef XDP_LB_STRUCTS_H
#define XDP_LB_STRUCTS_H

#include "lodestar.h"

/* A packet as parse() leaves it: its flow and where its headers are. */
struct parsed {
	struct lx_flow flow;
	void *l3;
	void *l4;
	__u16 *l4_csum;   /* NULL: UDP over IPv4 without a checksum */
	__u16 l3_len;     /* IPv4 total length, or IPv6 header + payload length */
	__u8 tcp_syn;
};

#endif /* XDP_LB_STRUCTS_H */
