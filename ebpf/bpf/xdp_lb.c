// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
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
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "lodestar.h"
#include "xdp_lb_consts.h"
#include "xdp_lb_structs.h"
#include "xdp_lb_maps.h"
#include "xdp_lb_csum.h"
#include "xdp_lb_parsing.h"
#include "xdp_lb_helpers.h"
#include "xdp_lb_encap.h"

/* The kernel's name for the SPDX line (GPL-compatible, for the GPL-only helpers such as
 * bpf_fib_lookup); ebpf/build.rs checks the two agree. */
char LICENSE[] SEC("license") = "Dual BSD/GPL";

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
	__u32 zero = 0;
	struct lx_config *cfg = bpf_map_lookup_elem(&LX_MAP_XCONFIG, &zero);

	/* A tracked flow, from this CPU's cache: no hash map lookup at all. A SYN starts a flow
	 * and is decided anew (as Katran does): it is never served from the cache, and keeps its
	 * decision in its flow's lx_first record. It only writes the record, never reads it: a
	 * load of the cold line would hold the packet up until the line arrived, where stores
	 * leave the line's miss to the store buffer, under the rest of the packet's work. */
	struct lx_ct fresh;
	/* The flow's backend and its id: in its cache entry, in `fresh`, or (a new flow's, not
	 * copied: fewer stores) in lx_reals. */
	const struct lx_real *rl;
	__u32 real_id;
	__u32 mode;
	int new_flow = 0;
	__u32 tag = 0;
	__u32 fhash = 0;
	struct lx_first *first = 0;
	struct lx_cache_bucket *cb = 0;
	int way = -1;
	if (p.tcp_syn) {
		fhash = flow_hash(&p.flow);
		__u32 fslot = fhash & (LX_FIRST_SLOTS - 1);
		first = bpf_map_lookup_elem(&LX_MAP_FIRST, &fslot);
		/* An older connection of the same 5-tuple may still be in this CPU's cache, with
		 * the backend it was given then: its entry would take the SYN's second packet
		 * away from the record. A SYN never follows an old entry (Katran's rule), so the
		 * entry goes; the set's tags are one line. */
		__u32 sbucket = cache_index(&p.flow, dst, &tag) |
				(bpf_get_smp_processor_id() << LX_CACHE_BITS);
		struct lx_cache_bucket *sb = bpf_map_lookup_elem(&LX_MAP_FLOW_CACHE, &sbucket);
		if (sb) {
			int old = cache_find(sb, tag, &p.flow);
			if (old >= 0)
				sb->tags[old & (LX_CACHE_WAYS - 1)] = 0;
		}
	} else {
		/* This CPU's run of sets. A CPU past the runs the loader made finds none: uncached. */
		__u32 bucket = cache_index(&p.flow, dst, &tag) |
			       (bpf_get_smp_processor_id() << LX_CACHE_BITS);
		cb = bpf_map_lookup_elem(&LX_MAP_FLOW_CACHE, &bucket);
	}
	if (cb) {
		way = cache_find(cb, tag, &p.flow);
		if (way >= 0) {
			struct lx_cache_entry *e = &cb->e[way & (LX_CACHE_WAYS - 1)];
			__u32 vid = e->ct.real.vip_id;
			struct lx_vip *live = bpf_map_lookup_elem(&LX_MAP_VIP_LIVE, &vid);
			if (live) {
				__u32 lmode;
				__u32 lgen = live_gen(live, &lmode);
				if (lgen && lgen == e->ct.gen) {
					rl = &e->ct.real;
					real_id = e->ct.real_id;
					mode = lmode;
					__u32 now = cache_clock(0);
					if (e->flags & LX_CACHE_UNCONFIRMED) {
						/* A first packet cached by an older agent: the flow's
						 * second packet, so it is real, and the shared table
						 * learns it. */
						e->flags = 0;
						e->touched = now;
						bpf_map_update_elem(&LX_MAP_CT, &p.flow, &e->ct, BPF_ANY);
						count(LX_CONFIRMED);
					} else if (now - e->touched > LX_CT_REFRESH) {
						e->touched = now;
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
	if (!p.tcp_syn) {
		/* Not cached: the flow's record may hold its first packet's decision. Then this is
		 * its second packet, confirmed with that packet's backend (whatever Maglev says
		 * now, and whatever an older connection of the 5-tuple left in lx_ct) while its
		 * VIP keeps the generation, into lx_ct and this CPU's cache. A backend gone since
		 * then leaves the flow to Maglev. */
		fhash = flow_hash(&p.flow);
		__u32 fslot = fhash & (LX_FIRST_SLOTS - 1);
		first = bpf_map_lookup_elem(&LX_MAP_FIRST, &fslot);
		if (first && (first->flags & (LX_FIRST_UNCONFIRMED | LX_FIRST_FLOODED)) &&
		    flow_eq(&first->flow, &p.flow)) {
			__u32 vid = first->vip_id;
			__u32 first_real = first->real_id;
			struct lx_vip *live = bpf_map_lookup_elem(&LX_MAP_VIP_LIVE, &vid);
			struct lx_real *real = bpf_map_lookup_elem(&LX_MAP_REALS, &first_real);
			__u32 lmode;
			__u32 lgen = live ? live_gen(live, &lmode) : 0;
			if (lgen && lgen == first->gen && real && (real->flags & LX_REAL_VALID) &&
			    real->vip_id == vid) {
				__u32 flags = first->flags;
				first->flags = 0;
				__builtin_memset(&fresh, 0, sizeof(fresh));
				__builtin_memcpy(&fresh.real, real, sizeof(*real));
				fresh.real_id = first_real;
				fresh.gen = lgen;
				rl = &fresh.real;
				real_id = first_real;
				mode = lmode;
				if (flags & LX_FIRST_UNCONFIRMED) {
					bpf_map_update_elem(&LX_MAP_CT, &p.flow, &fresh, BPF_ANY);
					count(LX_CONFIRMED);
					if (cb)
						cache_put(cb, way, tag, &p.flow, &fresh,
							  cache_clock(1), 0);
				} else {
					/* A SYN decided while flooded: its ACK follows it, tracked
					 * nowhere, and an older connection's lx_ct entry of the
					 * 5-tuple goes, so that it takes none of the flow's later
					 * packets (which go where Maglev says). Once per flow. */
					bpf_map_delete_elem(&LX_MAP_CT, &p.flow);
				}
				goto tracked;
			}
		}
	}

	/* Otherwise: the VIP, then the shared table (not for a SYN), then its Maglev table. */
	struct lx_vip *vip = svc_lookup(&LX_MAP_VIPS, &p.flow, 0);
	if (!vip)
		return XDP_PASS;
	__u32 vip_id = vip->id;
	__u32 ring = vip->ring_size;
	__u32 base = vip->ring_base;
	__u32 gen = vip->gen;
	mode = vip->mode;

	struct lx_ct *shared = p.tcp_syn ? 0 : bpf_map_lookup_elem(&LX_MAP_CT, &p.flow);
	int first_packet = 0;
	if (shared && (shared->gen == gen || shared->gen == 0) && shared->real.vip_id == vip_id) {
		/* gen 0: an entry from before generations, taken as it was then. */
		__builtin_memcpy(&fresh, shared, sizeof(fresh));
		fresh.gen = gen;
		rl = &fresh.real;
		real_id = fresh.real_id;
		count(LX_CACHE_MISS);
	} else {
		if (ring == 0) {
			count(LX_DROP_NO_REAL);
			return XDP_DROP;
		}
		__u32 slot = base + fhash % ring;
		__u32 *rid = bpf_map_lookup_elem(&LX_MAP_RING, &slot);
		if (!rid) {
			count(LX_DROP_NO_REAL);
			return XDP_DROP;
		}
		real_id = *rid;
		struct lx_real *real = bpf_map_lookup_elem(&LX_MAP_REALS, &real_id);
		if (!real || !(real->flags & LX_REAL_VALID) || real->vip_id != vip_id) {
			count(LX_DROP_NO_REAL);
			return XDP_DROP;
		}
		rl = real;
		if (p.flow.proto == IPPROTO_TCP && !p.tcp_syn && !shared) {
			/* Mid-flow and tracked nowhere (evicted, begun before this load balancer
			 * took over, or made up by a flood): where Maglev says, and nothing is
			 * inserted for it. */
			struct lx_vip_stats *vs0 = bpf_map_lookup_elem(&LX_MAP_VIP_STATS, &vip_id);
			if (vs0)
				vs0->lru_misses++;
			goto tracked;
		}
		/* Counted as new with the packet's own stats, below. */
		new_flow = 1;
		if (shared) {
			/* Its VIP changed under it: decided again, in the entry it has (and in
			 * its CPU's cache, below). */
			__builtin_memset(&fresh, 0, sizeof(fresh));
			__builtin_memcpy(&fresh.real, real, sizeof(*real));
			fresh.real_id = real_id;
			fresh.gen = gen;
			bpf_map_update_elem(&LX_MAP_CT, &p.flow, &fresh, BPF_ANY);
		} else {
			/* Into lx_ct and a cache only once a second packet shows it is real. */
			first_packet = 1;
		}
	}
	if (first_packet) {
		/* Its record. Flooded, no second packet confirms it and the flow is not tracked
		 * (as Katran's flood rule): a SYN's record gives its ACK the SYN's backend, and
		 * a record serves the replies. */
		__u32 flags = LX_FIRST_UNCONFIRMED;
		if (flooded(cfg)) {
			count(LX_FLOOD_UNCACHED);
			flags = p.tcp_syn ? LX_FIRST_FLOODED : 0;
		}
		if (first) {
			__u32 reply_hash = 0;
			if (mode == LX_MODE_NAT && !(rl->flags & LX_REAL_SHARED)) {
				struct lx_flow back;
				reply_flow(&back, &p.flow, rl);
				reply_hash = flow_hash(&back);
			}
			__builtin_memcpy(&first->flow, &p.flow, sizeof(p.flow));
			first->real_id = real_id;
			first->gen = gen;
			first->vip_id = vip_id;
			first->reply_hash = reply_hash;
			first->flags = flags;
		}
	} else if (cb) {
		if (new_flow && flooded(cfg))
			count(LX_FLOOD_UNCACHED);
		else
			cache_put(cb, way, tag, &p.flow, &fresh, cache_clock(1), 0);
	}
tracked:;
	__u32 stats_id = rl->vip_id;
	__u64 bytes = end - data;
	struct lx_vip_stats *vs = bpf_map_lookup_elem(&LX_MAP_VIP_STATS, &stats_id);
	COUNT_PACKET(vs, bytes, new_flow);
	struct lx_real_stats *rs = bpf_map_lookup_elem(&LX_MAP_REAL_STATS, &real_id);
	COUNT_PACKET(rs, bytes, new_flow);

	if (mode == LX_MODE_GUE) {
		if (!cfg)
			return XDP_DROP;
		int kernel = 0;
		int act = gue_encap(ctx, &p, rl, cfg, flow_hash(&p.flow), &kernel);
		if (act != XDP_PASS)
			return act;
		if (kernel) {
			count(LX_XDP_PASS_FWD);
			return XDP_PASS;
		}
		return forward(ctx, cfg);
	}

	/* NAT: a new flow's replies will need their VIP back (tc egress); then rewrite. A backend
	 * of one VIP needs only its flow's record for its first replies (its VIP is in
	 * lx_nat_backends, later replies are known by lx_ct); one that several VIPs share, each
	 * flow's entry. */
	if (!new_flow || !(rl->flags & LX_REAL_SHARED))
		goto rewrite;
	struct lx_flow back;
	reply_flow(&back, &p.flow, rl);
	struct lx_rev rev;
	__builtin_memset(&rev, 0, sizeof(rev));
	__builtin_memcpy(rev.addr, p.flow.dst, 16);
	rev.port = p.flow.dport;
	rev.family = p.flow.family;
	bpf_map_update_elem(&LX_MAP_REVNAT, &back, &rev, BPF_ANY);
rewrite:
	nat_dst(&p, rl, end);
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
	/* Only what a NAT backend sends is ours. */
	struct lx_rev *nb = svc_lookup(&LX_MAP_NAT_BACKENDS, &p.flow, 1);
	if (!nb)
		return TC_ACT_OK;
	struct lx_rev v;
	if (nb->flags & LX_REV_SHARED) {
		struct lx_rev *rev = bpf_map_lookup_elem(&LX_MAP_REVNAT, &p.flow);
		if (!rev) {
			/* Its entry was evicted (or it is no reply): which of the backend's VIPs
			 * it answers for is lost, and it must not leave with the backend's
			 * address. */
			count(LX_DROP_REVNAT);
			return TC_ACT_SHOT;
		}
		__builtin_memcpy(&v, rev, sizeof(v));
	} else {
		/* The backend's one VIP: a reply when its client's flow to that VIP is tracked,
		 * or not yet but marked by its first packet; else a connection made to the
		 * backend's own address, which leaves as it is. */
		struct lx_flow fwd;
		__builtin_memset(&fwd, 0, sizeof(fwd));
		__builtin_memcpy(fwd.src, p.flow.dst, 16);
		__builtin_memcpy(fwd.dst, nb->addr, 16);
		fwd.sport = p.flow.dport;
		fwd.dport = nb->port;
		fwd.proto = p.flow.proto;
		fwd.family = p.flow.family;
		if (!bpf_map_lookup_elem(&LX_MAP_CT, &fwd)) {
			/* The record is in the client's flow's slot: that flow, and this reply's
			 * hash (so, this backend). */
			__u32 slot = flow_hash(&fwd) & (LX_FIRST_SLOTS - 1);
			struct lx_first *first = bpf_map_lookup_elem(&LX_MAP_FIRST, &slot);
			if (!first || first->reply_hash != flow_hash(&p.flow) ||
			    !flow_eq(&first->flow, &fwd))
				return TC_ACT_OK;
			count(LX_NAT_MARKED);
		}
		__builtin_memcpy(&v, nb, sizeof(v));
	}
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

/*
 * GUE decapsulation on a backend's node. Only from the load balancers in lx_gue_peers, and only
 * for a VIP of the catalog as the inner destination: anything else would make this node a relay
 * that forwards whatever an attacker wraps in UDP to the GUE port. Both are dropped, counted.
 */
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
	struct lx_peer peer;
	__builtin_memset(&peer, 0, sizeof(peer));
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
			return TC_ACT_OK;
		u = (void *)(ip + 1);
		olen = sizeof(*ip) + sizeof(*u);
		__builtin_memcpy(peer.addr, &ip->saddr, 4);
		peer.family = AF_INET;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_UDP)
			return TC_ACT_OK;
		u = (void *)(ip6 + 1);
		olen = sizeof(*ip6) + sizeof(*u);
		__builtin_memcpy(peer.addr, &ip6->saddr, 16);
		peer.family = AF_INET6;
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
	if (!bpf_map_lookup_elem(&LX_MAP_GUE_PEERS, &peer)) {
		count(LX_DROP_GUE_PEER);
		return TC_ACT_SHOT;
	}
	if (bpf_skb_adjust_room(skb, -olen, BPF_ADJ_ROOM_MAC, 0))
		return TC_ACT_SHOT;
	if (bpf_skb_pull_data(skb, sizeof(struct ethhdr) + sizeof(struct ipv6hdr) +
					 sizeof(struct tcphdr)) < 0)
		bpf_skb_pull_data(skb, 0);
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	struct parsed p;
	if (parse(data, end, &p) != P_OK) {
		count(LX_DROP_GUE_INNER);
		return TC_ACT_SHOT;
	}
	if (!svc_lookup(&LX_MAP_VIPS, &p.flow, 0)) {
		count(LX_DROP_GUE_INNER);
		return TC_ACT_SHOT;
	}
	count(LX_TC_DECAP);
	return TC_ACT_OK;
}
