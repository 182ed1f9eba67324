/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * The per-packet path's maps, pinned by name next to the socket path's; their names,
 * key and value layouts and sizes are lodestar.h's.
 */
#ifndef XDP_LB_MAPS_H
#define XDP_LB_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lodestar.h"
#include "pinned_map.h"

PINNED_MAP(LX_MAP_VIPS, BPF_MAP_TYPE_HASH, LX_MAX_VIPS, struct ls_svc_key, struct lx_vip, 0);

/* Every VIP's Maglev table, each a run of whole LX_RING_UNITs: an array, so that reading a
 * new flow's slot is inlined by the verifier (a hash lookup is a kernel call). */
PINNED_MAP(LX_MAP_RING, BPF_MAP_TYPE_ARRAY, LX_RING_ENTRIES, __u32, __u32, 0);

PINNED_MAP(LX_MAP_REALS, BPF_MAP_TYPE_ARRAY, LX_MAX_REALS, __u32, struct lx_real, 0);

/* Per-CPU LRU lists: a new flow does not contend on one global list lock. */
PINNED_MAP(LX_MAP_CT, BPF_MAP_TYPE_LRU_HASH, LX_MAX_CT, struct lx_flow, struct lx_ct,
	   BPF_F_NO_COMMON_LRU);

/* One CPU's run of sets as declared; the loader creates a run per possible CPU (lodestar.h). */
PINNED_MAP(LX_MAP_FLOW_CACHE, BPF_MAP_TYPE_ARRAY, LX_CACHE_BUCKETS, __u32,
	   struct lx_cache_bucket, 0);

PINNED_MAP(LX_MAP_VIP_LIVE, BPF_MAP_TYPE_ARRAY, LX_MAX_VIPS, __u32, struct lx_vip, 0);

PINNED_MAP(LX_MAP_VIP_FILTER, BPF_MAP_TYPE_ARRAY, LX_FILTER_WORDS, __u32, __u64, 0);

/* NAT replies of backends that several VIPs share, by the reply's flow (backend to client). */
PINNED_MAP(LX_MAP_REVNAT, BPF_MAP_TYPE_LRU_HASH, LX_MAX_CT, struct lx_flow, struct lx_rev,
	   BPF_F_NO_COMMON_LRU);

/* New flows' first packets' decisions (LX_FIRST_SLOTS, struct lx_first). */
PINNED_MAP(LX_MAP_FIRST, BPF_MAP_TYPE_ARRAY, LX_FIRST_SLOTS, __u32, struct lx_first, 0);

/* NAT backends by (address, port, protocol): the VIP their replies leave as. */
PINNED_MAP(LX_MAP_NAT_BACKENDS, BPF_MAP_TYPE_HASH, LX_MAX_REALS, struct ls_svc_key,
	   struct lx_rev, 0);

/* The load balancers this node decapsulates GUE from. */
PINNED_MAP(LX_MAP_GUE_PEERS, BPF_MAP_TYPE_HASH, LX_MAX_GUE_PEERS, struct lx_peer, __u32, 0);

PINNED_MAP(LX_MAP_FLOOD, BPF_MAP_TYPE_PERCPU_ARRAY, 1, __u32, struct lx_flood, 0);

PINNED_MAP(LX_MAP_VIP_STATS, BPF_MAP_TYPE_PERCPU_ARRAY, LX_MAX_VIPS, __u32,
	   struct lx_vip_stats, 0);

PINNED_MAP(LX_MAP_REAL_STATS, BPF_MAP_TYPE_PERCPU_ARRAY, LX_MAX_REALS, __u32,
	   struct lx_real_stats, 0);

PINNED_MAP(LX_MAP_GLOBAL, BPF_MAP_TYPE_PERCPU_ARRAY, LX_COUNTERS, __u32, __u64, 0);

PINNED_MAP(LX_MAP_XCONFIG, BPF_MAP_TYPE_ARRAY, 1, __u32, struct lx_config, 0);

#endif /* XDP_LB_MAPS_H */
