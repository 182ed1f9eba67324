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

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LX_MAX_VIPS);
	__type(key, struct ls_svc_key);
	__type(value, struct lx_vip);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} LX_MAP_VIPS SEC(".maps");

/* Every VIP's Maglev table, each a run of whole LX_RING_UNITs: an array, so that reading a
 * new flow's slot is inlined by the verifier (a hash lookup is a kernel call). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LX_RING_ENTRIES);
	__type(key, __u32);
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

/* One CPU's run of sets as declared; the loader creates a run per possible CPU (lodestar.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
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

/* NAT replies of backends that several VIPs share, by the reply's flow (backend to client). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LX_MAX_CT);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, struct lx_flow);
	__type(value, struct lx_rev);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} LX_MAP_REVNAT SEC(".maps");

/* New flows' first packets' decisions (LX_FIRST_SLOTS, struct lx_first). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LX_FIRST_SLOTS);
	__type(key, __u32);
	__type(value, struct lx_first);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} LX_MAP_FIRST SEC(".maps");

/* NAT backends by (address, port, protocol): the VIP their replies leave as. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LX_MAX_REALS);
	__type(key, struct ls_svc_key);
	__type(value, struct lx_rev);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} LX_MAP_NAT_BACKENDS SEC(".maps");

/* The load balancers this node decapsulates GUE from. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LX_MAX_GUE_PEERS);
	__type(key, struct lx_peer);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} LX_MAP_GUE_PEERS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lx_flood);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} LX_MAP_FLOOD SEC(".maps");

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

#endif /* XDP_LB_MAPS_H */
