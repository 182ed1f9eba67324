// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * Socket-level VIP load balancing (the Minuteman equivalent, done the way Cilium's
 * kube-proxy replacement does it): a connect() or an unconnected sendmsg() to a VIP is
 * rewritten to a backend before any packet exists, so there is no NAT and no per-packet cost.
 * recvmsg() and getpeername() translate back, so applications see the VIP as their peer.
 *
 * Every hook returns 1 (allow) except connect/sendmsg to a VIP with no backend at all, which
 * is refused (the caller gets EPERM at once instead of waiting on an address nobody serves).
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/socket.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lodestar.h"
#include "pinned_map.h"

/* The kernel's name for the SPDX line (GPL-compatible, for the GPL-only helpers such as
 * bpf_fib_lookup); ebpf/build.rs checks the two agree. */
char LICENSE[] SEC("license") = "Dual BSD/GPL";

PINNED_MAP(LS_MAP_SERVICES, BPF_MAP_TYPE_HASH, LS_MAX_SERVICES, struct ls_svc_key, struct ls_svc,
	   0);

PINNED_MAP(LS_MAP_SLOTS, BPF_MAP_TYPE_HASH, LS_MAX_SLOTS, struct ls_slot_key, __u32,
	   BPF_F_NO_PREALLOC);

PINNED_MAP(LS_MAP_BACKENDS, BPF_MAP_TYPE_ARRAY, LS_MAX_BACKENDS, __u32, struct ls_backend, 0);

PINNED_MAP(LS_MAP_REVNAT, BPF_MAP_TYPE_LRU_HASH, LS_MAX_REVNAT, struct ls_rev_key, struct ls_rev,
	   0);

PINNED_MAP(LS_MAP_SVC_STATS, BPF_MAP_TYPE_PERCPU_ARRAY, LS_MAX_SERVICES, __u32,
	   struct ls_svc_stats, 0);

PINNED_MAP(LS_MAP_BE_STATS, BPF_MAP_TYPE_PERCPU_ARRAY, LS_MAX_BACKENDS, __u32, struct ls_be_stats,
	   0);

PINNED_MAP(LS_MAP_HEALTH, BPF_MAP_TYPE_HASH, LS_MAX_HEALTH, struct ls_svc_key, struct ls_health, 0);

PINNED_MAP(LS_MAP_CONFIG, BPF_MAP_TYPE_ARRAY, 1, __u32, struct ls_config, 0);

/*
 * The agent's own sockets are never steered: its connections to etcd, to its DNS upstreams and
 * to the backends it probes go where it sends them, whatever a task's VIP label claims. It is
 * known by its process (thread group) id, which it writes into ls_config when it opens the maps,
 * before it connects anywhere; a restarted agent writes its new one the same way. A process id
 * is unique while its process runs, and a cgroup, a network namespace or a socket cookie would
 * not tell the agent apart: it shares the first two with other processes, and its sockets come
 * and go with every reconnect.
 */
static __always_inline int from_agent(void)
{
	__u32 zero = 0;
	struct ls_config *cfg = bpf_map_lookup_elem(&LS_MAP_CONFIG, &zero);
	return cfg && cfg->agent_tgid &&
	       (__u32)(bpf_get_current_pid_tgid() >> 32) == cfg->agent_tgid;
}

/* Counter kinds for bump(). */
enum { CNT_CONNECT, CNT_DATAGRAM };

static __always_inline void load_v4(struct bpf_sock_addr *ctx, __u8 *out)
{
	__u32 ip = ctx->user_ip4;
	__builtin_memcpy(out, &ip, 4);
}

static __always_inline void load_v6(struct bpf_sock_addr *ctx, __u8 *out)
{
	__u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1];
	__u32 w2 = ctx->user_ip6[2], w3 = ctx->user_ip6[3];
	__builtin_memcpy(out, &w0, 4);
	__builtin_memcpy(out + 4, &w1, 4);
	__builtin_memcpy(out + 8, &w2, 4);
	__builtin_memcpy(out + 12, &w3, 4);
}

static __always_inline void store_v4(struct bpf_sock_addr *ctx, const __u8 *in)
{
	__u32 ip;
	__builtin_memcpy(&ip, in, 4);
	ctx->user_ip4 = ip;
}

static __always_inline void store_v6(struct bpf_sock_addr *ctx, const __u8 *in)
{
	__u32 w[4];
	__builtin_memcpy(w, in, 16);
	ctx->user_ip6[0] = w[0];
	ctx->user_ip6[1] = w[1];
	ctx->user_ip6[2] = w[2];
	ctx->user_ip6[3] = w[3];
}

/* ::ffff:a.b.c.d, as a dual-stack IPv6 socket spells an IPv4 peer. */
static __always_inline int is_v4_mapped(const __u8 *a)
{
	__u32 w0, w1, w2;
	__builtin_memcpy(&w0, a, 4);
	__builtin_memcpy(&w1, a + 4, 4);
	__builtin_memcpy(&w2, a + 8, 4);
	return w0 == 0 && w1 == 0 && w2 == bpf_htonl(0x0000ffff);
}

/*
 * Looks up the service for (addr, port, proto) and picks a backend: a slot of the service's
 * weighted table, at random for connect() and by socket cookie for unconnected sendmsg()
 * (so one socket's datagrams keep going to one backend while its table is unchanged).
 * Returns 1 if rewritten (*be and *svc_id set), 0 if the address is not a VIP, -1 if it is a
 * VIP without backends.
 */
static __always_inline int pick(const __u8 *addr, __u8 family, __u16 port, __u8 proto,
				__u64 cookie, int by_cookie, struct ls_backend *be, __u32 *be_id_out,
				__u32 *svc_id)
{
	struct ls_svc_key key;
	__builtin_memset(&key, 0, sizeof(key));
	if (family == AF_INET)
		__builtin_memcpy(key.addr, addr, 4);
	else
		__builtin_memcpy(key.addr, addr, 16);
	key.port = port;
	key.proto = proto;
	key.family = family;

	struct ls_svc *svc = bpf_map_lookup_elem(&LS_MAP_SERVICES, &key);
	if (!svc)
		return 0;
	__u32 id = svc->id;
	*svc_id = id;
	__u32 n = svc->slots;
	struct ls_svc_stats *st = bpf_map_lookup_elem(&LS_MAP_SVC_STATS, &id);
	if (n == 0) {
		if (st)
			st->no_backend++;
		return -1;
	}
	if (st && (svc->flags & LS_SVC_FAIL_OPEN))
		st->fail_open++;

	__u32 r = by_cookie ? (__u32)(cookie ^ (cookie >> 32)) * 2654435761u : bpf_get_prandom_u32();
	__u32 zero = 0;
	struct ls_config *cfg = bpf_map_lookup_elem(&LS_MAP_CONFIG, &zero);
	__u64 now = bpf_ktime_get_ns();
	struct ls_backend *b = 0;
	__u32 bid = 0;
	/*
	 * The slot r % n, or, while that backend is failing passively (recent refused or timed
	 * out connects), the next slots. If every one tried is failing, the first pick stands
	 * (fail open).
	 */
	for (int i = 0; i < LS_PICK_TRIES; i++) {
		struct ls_slot_key sk = { .svc_id = id, .slot = (r + i) % n };
		__u32 *be_id = bpf_map_lookup_elem(&LS_MAP_SLOTS, &sk);
		if (!be_id)
			break;
		__u32 cand = *be_id;
		struct ls_backend *c = bpf_map_lookup_elem(&LS_MAP_BACKENDS, &cand);
		if (!c || !(c->flags & LS_BE_VALID) || c->family != family || c->svc_id != id)
			break;
		if (!b) {
			b = c;
			bid = cand;
		}
		if (!cfg || cfg->fail_threshold == 0 || (__u32)i + 1 >= n + 1)
			break;
		struct ls_svc_key hk;
		__builtin_memset(&hk, 0, sizeof(hk));
		__builtin_memcpy(hk.addr, c->addr, 16);
		hk.port = c->port;
		hk.proto = IPPROTO_TCP;
		hk.family = family;
		struct ls_health *h = bpf_map_lookup_elem(&LS_MAP_HEALTH, &hk);
		if (!h || h->consecutive_fails < cfg->fail_threshold ||
		    now - h->last_fail_ns > cfg->hold_ns) {
			b = c;
			bid = cand;
			break;
		}
		if (st)
			st->skipped++;
		if ((__u32)i + 1 >= n)
			break;
	}
	if (!b)
		return 0;
	__builtin_memcpy(be, b, sizeof(*be));
	*be_id_out = bid;
	return 1;
}

/* Counts a steered call on its service and its backend. */
static __always_inline void bump(__u32 svc_id, __u32 be_id, int which)
{
	struct ls_svc_stats *s = bpf_map_lookup_elem(&LS_MAP_SVC_STATS, &svc_id);
	struct ls_be_stats *b = bpf_map_lookup_elem(&LS_MAP_BE_STATS, &be_id);
	if (which == CNT_CONNECT) {
		if (s)
			s->connects++;
		if (b)
			b->connects++;
	} else {
		if (s)
			s->datagrams++;
		if (b)
			b->datagrams++;
	}
}

/* Remembers that this socket's `backend` stands for `vip` (both as the socket spells them). */
static __always_inline void remember(__u64 cookie, const __u8 *be_addr, __u16 be_port,
				     const __u8 *vip_addr, __u16 vip_port, __u8 family)
{
	struct ls_rev_key k;
	struct ls_rev v;
	__builtin_memset(&k, 0, sizeof(k));
	__builtin_memset(&v, 0, sizeof(v));
	k.cookie = cookie;
	__builtin_memcpy(k.addr, be_addr, 16);
	k.port = be_port;
	k.family = family;
	__builtin_memcpy(v.addr, vip_addr, 16);
	v.port = vip_port;
	v.family = family;
	bpf_map_update_elem(&LS_MAP_REVNAT, &k, &v, BPF_ANY);
}

/* After a pick: the socket goes to `be`, counted, and remembered for the way back. */
static __always_inline int steer(struct bpf_sock_addr *ctx, int which, __u64 cookie, __u32 svc_id,
				 __u32 be_id, const struct ls_backend *be, const __u8 *vip,
				 __u16 port, __u8 family)
{
	if (family == AF_INET)
		store_v4(ctx, be->addr);
	else
		store_v6(ctx, be->addr);
	ctx->user_port = be->port;
	bump(svc_id, be_id, which);
	remember(cookie, be->addr, be->port, vip, port, family);
	return 1;
}

/* A connect() or sendmsg() to steer: its destination port, protocol and socket cookie, and
 * which counter it bumps (a connect's backend is picked at random, a datagram's by cookie). */
struct call {
	__u64 cookie;
	__u16 port;
	__u8 proto;
	int which;
};

/* Reads the call into *c; 0 when it is not one to steer (neither TCP nor UDP, or the agent's). */
static __always_inline int steerable(struct bpf_sock_addr *ctx, int which, struct call *c)
{
	c->port = (__u16)ctx->user_port;
	c->proto = (__u8)ctx->protocol;
	if (c->proto != IPPROTO_TCP && c->proto != IPPROTO_UDP)
		return 0;
	if (from_agent())
		return 0;
	c->cookie = bpf_get_socket_cookie(ctx);
	c->which = which;
	return 1;
}

/*
 * Picks a backend for the service at (addr, family) and steers the call there; `vip` is the
 * destination as the socket (of `sock_family`) spells it. An IPv4 backend of an IPv6 socket is
 * written as a v4-mapped address. Returns the hook's verdict.
 */
static __always_inline int xlate(struct bpf_sock_addr *ctx, const struct call *c,
				 const __u8 *addr, __u8 family, const __u8 *vip, __u8 sock_family)
{
	struct ls_backend be;
	__u32 svc_id = 0, be_id = 0;
	int r = pick(addr, family, c->port, c->proto, c->cookie, c->which == CNT_DATAGRAM, &be,
		     &be_id, &svc_id);
	if (r == 0)
		return 1;
	if (r < 0)
		return 0;
	if (family != sock_family) {
		__u8 mapped[16] = {};
		mapped[10] = 0xff;
		mapped[11] = 0xff;
		__builtin_memcpy(mapped + 12, be.addr, 4);
		__builtin_memcpy(be.addr, mapped, 16);
	}
	return steer(ctx, c->which, c->cookie, svc_id, be_id, &be, vip, c->port, sock_family);
}

static __always_inline int xlate4(struct bpf_sock_addr *ctx, int which)
{
	struct call c;
	if (!steerable(ctx, which, &c))
		return 1;
	__u8 vip[16] = {};
	load_v4(ctx, vip);
	return xlate(ctx, &c, vip, AF_INET, vip, AF_INET);
}

static __always_inline int xlate6(struct bpf_sock_addr *ctx, int which)
{
	struct call c;
	if (!steerable(ctx, which, &c))
		return 1;
	__u8 vip[16];
	load_v6(ctx, vip);
	/* A dual-stack socket reaching an IPv4 VIP: steered to an IPv4 backend, mapped. */
	const __u8 *addr = vip;
	__u8 family = AF_INET6;
	if (is_v4_mapped(vip)) {
		addr = vip + 12;
		family = AF_INET;
	}
	return xlate(ctx, &c, addr, family, vip, AF_INET6);
}

/* recvmsg / getpeername: the backend the socket talks to becomes the VIP again. */
static __always_inline int rev(struct bpf_sock_addr *ctx, __u8 family)
{
	struct ls_rev_key k;
	__builtin_memset(&k, 0, sizeof(k));
	k.cookie = bpf_get_socket_cookie(ctx);
	if (family == AF_INET)
		load_v4(ctx, k.addr);
	else
		load_v6(ctx, k.addr);
	k.port = (__u16)ctx->user_port;
	k.family = family;
	struct ls_rev *v = bpf_map_lookup_elem(&LS_MAP_REVNAT, &k);
	if (!v)
		return 1;
	if (family == AF_INET)
		store_v4(ctx, v->addr);
	else
		store_v6(ctx, v->addr);
	ctx->user_port = v->port;
	return 1;
}

/* The hooks: each is one of the three bodies above. */
#define LS_HOOK(section, name, body) \
	SEC(section) int name(struct bpf_sock_addr *ctx) { return body; }

LS_HOOK("cgroup/connect4", ls_connect4, xlate4(ctx, CNT_CONNECT))
LS_HOOK("cgroup/connect6", ls_connect6, xlate6(ctx, CNT_CONNECT))
LS_HOOK("cgroup/sendmsg4", ls_sendmsg4, xlate4(ctx, CNT_DATAGRAM))
LS_HOOK("cgroup/sendmsg6", ls_sendmsg6, xlate6(ctx, CNT_DATAGRAM))
LS_HOOK("cgroup/recvmsg4", ls_recvmsg4, rev(ctx, AF_INET))
LS_HOOK("cgroup/recvmsg6", ls_recvmsg6, rev(ctx, AF_INET6))
LS_HOOK("cgroup/getpeername4", ls_getpeername4, rev(ctx, AF_INET))
LS_HOOK("cgroup/getpeername6", ls_getpeername6, rev(ctx, AF_INET6))

/*
 * Passive health: TCP connects from the cgroup to a watched backend address. A connect that
 * dies in SYN_SENT (refused, reset, given up) or whose SYN times out counts against the
 * backend; one that reaches ESTABLISHED clears its run of failures.
 */
static __always_inline struct ls_health *health_of(struct bpf_sock_ops *skops)
{
	struct ls_svc_key k;
	__builtin_memset(&k, 0, sizeof(k));
	if (skops->family == AF_INET) {
		__u32 ip = skops->remote_ip4;
		__builtin_memcpy(k.addr, &ip, 4);
		k.family = AF_INET;
	} else if (skops->family == AF_INET6) {
		/* One 4-byte load per word: the verifier refuses wider context reads. */
		volatile __u32 *ip6 = skops->remote_ip6;
		__u32 w[4] = { ip6[0], ip6[1], ip6[2], ip6[3] };
		if (w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff)) {
			/* A dual-stack socket's IPv4 peer: watched under its IPv4 address. */
			__builtin_memcpy(k.addr, &w[3], 4);
			k.family = AF_INET;
		} else {
			__builtin_memcpy(k.addr, w, 16);
			k.family = AF_INET6;
		}
	} else {
		return 0;
	}
	k.port = (__u16)(skops->remote_port >> 16);
	k.proto = IPPROTO_TCP;
	return bpf_map_lookup_elem(&LS_MAP_HEALTH, &k);
}

static __always_inline void failed(struct ls_health *h)
{
	__sync_fetch_and_add(&h->fails, 1);
	__sync_fetch_and_add(&h->consecutive_fails, 1);
	h->last_fail_ns = bpf_ktime_get_ns();
}

#define LS_TCP_SYN_SENT 2
#define LS_TCP_CLOSE 7

SEC("sockops")
int ls_sockops(struct bpf_sock_ops *skops)
{
	struct ls_health *h;
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		/* Only connects to watched backends get the state and timeout callbacks. */
		if (health_of(skops))
			bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG |
							 BPF_SOCK_OPS_RTO_CB_FLAG);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		h = health_of(skops);
		if (h) {
			__sync_fetch_and_add(&h->successes, 1);
			h->consecutive_fails = 0;
		}
		/* Nothing more to learn from this connection. */
		bpf_sock_ops_cb_flags_set(skops, 0);
		break;
	case BPF_SOCK_OPS_RTO_CB:
		/* The first SYN timeout counts; its retransmissions' do not (one connect, one
		 * failure). */
		if (skops->state == LS_TCP_SYN_SENT && skops->args[0] == 0) {
			h = health_of(skops);
			if (h)
				failed(h);
		}
		break;
	case BPF_SOCK_OPS_STATE_CB:
		/* Refused or reset before any SYN timed out (a timed-out one was counted). */
		if (skops->args[0] == LS_TCP_SYN_SENT && skops->args[1] == LS_TCP_CLOSE &&
		    skops->total_retrans == 0) {
			h = health_of(skops);
			if (h)
				failed(h);
		}
		break;
	}
	return 1;
}
