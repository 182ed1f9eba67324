/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * The one definition of everything Lodestar's BPF programs share with userspace: map names,
 * sizes, key and value layouts, flags and counter slots. The Rust side (l4lb/src/layout.rs)
 * mirrors these structs and a test checks the mirror against the BTF of the compiled object,
 * so a change here that is not made there fails the build's tests.
 *
 * Conventions: addresses are 16 bytes in network order (IPv4 in the first 4, the rest zero);
 * ports are in network order; families are AF_INET (2) / AF_INET6 (10). Every struct is
 * padded explicitly so that keys hash the same on both sides.
 */
#ifndef LODESTAR_H
#define LODESTAR_H

#include <linux/types.h>

/* Address families as the kernel numbers them (not in the uapi headers BPF programs use). */
#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

/* Map names (also the file names under the pin directory, /sys/fs/bpf/lodestar/). */
#define LS_MAP_SERVICES   ls_services
#define LS_MAP_SLOTS      ls_slots
#define LS_MAP_BACKENDS   ls_backends
#define LS_MAP_REVNAT     ls_revnat
#define LS_MAP_SVC_STATS  ls_svc_stats
#define LS_MAP_BE_STATS   ls_be_stats
#define LS_MAP_HEALTH     ls_health
#define LS_MAP_CONFIG     ls_config

/* Capacities. */
#define LS_MAX_SERVICES       16384   /* (VIP address, port, protocol) entries */
#define LS_MAX_BACKENDS       65536   /* (service, backend) pairs; ids index ls_backends */
#define LS_MAX_SLOTS          262144  /* slot-table entries over all services */
#define LS_MAX_SLOTS_PER_SVC  4096    /* weighted slots of one service */
#define LS_MAX_REVNAT         131072  /* sockets translated at once (LRU) */
#define LS_MAX_HEALTH         65536   /* distinct backend addresses watched passively */
#define LS_PICK_TRIES         8       /* slots tried past a backend marked failing */

/* A service: one VIP address, port and protocol. */
struct ls_svc_key {
	__u8  addr[16];
	__u16 port;     /* network order */
	__u8  proto;    /* IPPROTO_TCP / IPPROTO_UDP */
	__u8  family;   /* AF_INET / AF_INET6 */
};

/* ls_svc.flags */
#define LS_SVC_FAIL_OPEN  0x1   /* no backend is healthy: the slots hold all of them */

struct ls_svc {
	__u32 id;       /* index into ls_svc_stats; key of its slots */
	__u16 slots;    /* number of weighted slots; 0: no backend */
	__u16 flags;
};

/* Slot i of a service's weighted table. Value: a backend id (__u32). */
struct ls_slot_key {
	__u32 svc_id;
	__u32 slot;
};

/* ls_backend.flags */
#define LS_BE_VALID  0x1

/* A backend of one service (array indexed by backend id). */
struct ls_backend {
	__u8  addr[16];
	__u16 port;     /* network order */
	__u8  family;
	__u8  flags;
	__u32 svc_id;   /* the service it belongs to (for userspace taking over pinned maps) */
};

/* Reverse translation: which VIP a socket's backend stands for (recvmsg, getpeername). */
struct ls_rev_key {
	__u64 cookie;   /* bpf_get_socket_cookie */
	__u8  addr[16]; /* the backend, as the socket sees it */
	__u16 port;
	__u8  family;
	__u8  pad[5];
};

struct ls_rev {
	__u8  addr[16]; /* the VIP, as the application asked for it */
	__u16 port;
	__u8  family;
	__u8  pad;
};

/* Per-CPU counter slots per service (ls_svc_stats, indexed by service id). */
struct ls_svc_stats {
	__u64 connects;     /* connect() calls steered to a backend */
	__u64 datagrams;    /* unconnected sendmsg() calls steered */
	__u64 no_backend;   /* calls to the VIP with no backend at all: refused */
	__u64 fail_open;    /* steered while no backend was healthy */
	__u64 skipped;      /* picks that passed over a backend failing passively */
};

/* Per-CPU counter slots per backend (ls_be_stats, indexed by backend id). */
struct ls_be_stats {
	__u64 connects;
	__u64 datagrams;
};

/*
 * Passive health: what connections to a backend address did, whoever made them (the
 * sockops program sees every TCP connect in the cgroup). Userspace creates an entry per
 * backend address; the BPF side only updates entries that exist. Keyed like a service
 * (proto always IPPROTO_TCP).
 */
struct ls_health {
	__u32 consecutive_fails;  /* failed connects since the last success */
	__u32 pad;
	__u64 fails;              /* refused, reset, or a SYN retransmission timeout */
	__u64 successes;          /* connects that reached ESTABLISHED */
	__u64 last_fail_ns;       /* bpf_ktime_get_ns() of the last failure */
};

/*
 * Knobs userspace sets (ls_config[0]). fail_threshold 0: passive health off. agent_tgid: the
 * running agent's process (thread group) id in the initial PID namespace, as
 * bpf_get_current_pid_tgid() reports it; its own sockets are never steered (0: none).
 */
struct ls_config {
	__u32 fail_threshold;     /* consecutive failures that mark a backend failing */
	__u32 agent_tgid;
	__u64 hold_ns;            /* how long a failing backend is passed over */
};

/* ---------------------------------------------------------------------------------------
 * The per-packet path (xdp_lb.c): XDP on the load balancer's interfaces, a tc egress program
 * that restores the VIP on NAT replies, and a tc ingress program that decapsulates GUE on
 * backend nodes.
 */
#define LX_MAP_VIPS        lx_vips
#define LX_MAP_RING        lx_ring
#define LX_MAP_REALS       lx_reals
#define LX_MAP_CT          lx_ct
#define LX_MAP_REVNAT      lx_revnat
#define LX_MAP_VIP_STATS   lx_vip_stats
#define LX_MAP_REAL_STATS  lx_real_stats
#define LX_MAP_GLOBAL      lx_global
#define LX_MAP_XCONFIG     lx_config
#define LX_MAP_VIP_LIVE    lx_vip_live
#define LX_MAP_VIP_FILTER  lx_vip_filter
#define LX_MAP_FLOW_CACHE  lx_flow_cache
#define LX_MAP_NAT_BACKENDS lx_nat_backends
#define LX_MAP_GUE_PEERS   lx_gue_peers
#define LX_MAP_FLOOD       lx_flood
#define LX_MAP_FIRST       lx_first

#define LX_MAX_VIPS          4096
#define LX_MAX_REALS         65536
#define LX_MAX_CT            262144
/*
 * lx_first: a new flow's first packet (a TCP SYN, or an unknown UDP flow's first datagram)
 * writes its decision as one 64-byte record (struct lx_first) into the slot of its flow's hash
 * (flow_hash % LX_FIRST_SLOTS, the hash its Maglev slot uses), and enters no flow cache: its
 * second packet, on any CPU, finds the record and confirms the flow from it into lx_ct and that
 * CPU's cache, with the backend the first packet was given. tc egress knows the first NAT
 * replies (before the flow is in lx_ct) by the record, rebuilding the client's flow from the
 * reply and its backend's VIP. A SYN only stores into its slot, never loads it: a load of the
 * cold line would hold the packet up until the line came. An array write, where an LRU insert
 * costs an eviction; a later flow may take the slot, which only matters for a flow that is not
 * confirmed yet (its second packet then goes where Maglev says, untracked, and a NAT reply
 * leaves as it is).
 * (It replaces lx_nat_marks, a 32-bit reply hash per slot, whose pin the loader removes.)
 */
#define LX_FIRST_SLOTS       262144
#define LX_MAX_GUE_PEERS     256      /* load balancers a node takes GUE from */

/*
 * The Maglev tables of all VIPs share one array, lx_ring: a VIP's table is the run of slots
 * [ring_base, ring_base + ring_size), made of whole units of LX_RING_UNIT slots, handed out
 * by userspace. The array is sized per VIP: one unit for each of LX_MAX_VIPS, so every VIP has
 * room for the smallest table (4,099 slots); bigger tables (16,381 and 65,537 slots: 4 and 16
 * units) use the room that VIPs with small tables leave.
 */
#define LX_RING_UNIT         4100
#define LX_RING_ENTRIES      16793600  /* LX_MAX_VIPS * LX_RING_UNIT: 64 MiB */

/*
 * The VIP filter: a bitmap of LX_FILTER_WORDS * 64 bits, one bit (filter_bit in xdp_lb.c,
 * mirrored by l4lb/src/xdp.rs) set for every (VIP address, port, protocol). A packet whose
 * bit is clear is no VIP's, and passes after one array read.
 */
#define LX_FILTER_WORDS      1024

/*
 * The per-CPU flow cache in front of lx_ct: LX_CACHE_BUCKETS sets of LX_CACHE_WAYS flows for
 * every CPU, read with array lookups the verifier inlines (a hash map lookup is a kernel call).
 * One plain array holds every CPU's run of sets, CPU n's from set n << LX_CACHE_BITS: the
 * object declares one run and the loader creates it with one per possible CPU. (A per-CPU
 * array's inlined lookup first reads the element's per-CPU pointer, a second cold load for a
 * new flow's set.)
 * lx_ct stays the shared, authoritative table; a cache miss falls back to it. A cached flow
 * looks its lx_ct entry up again (an LRU entry ages unless looked up), or puts it back, once
 * LX_CT_REFRESH flows have entered its CPU's cache since it last did: well within the
 * LX_MAX_CT / CPUs new flows that could push it out of lx_ct.
 */
#define LX_CACHE_BITS        14
#define LX_CACHE_BUCKETS     (1 << LX_CACHE_BITS)
#define LX_CACHE_WAYS        4
#define LX_CT_REFRESH        1024

/* lx_vip.mode */
#define LX_MODE_NAT  0   /* rewrite the destination; replies come back through this node */
#define LX_MODE_GUE  1   /* encapsulate in UDP to the backend's node; the backend replies directly */

/*
 * New flows per second and CPU above which the XDP path counts itself flooded (SYN or UDP
 * floods; as Katran's MAX_CONN_RATE): new flows are then sent where Maglev says without taking a
 * place in the CPU's flow cache, so the flows it holds stay. Checked every LX_FLOOD_SAMPLE new
 * flows (a clock read is a kernel call) over windows of LX_FLOOD_WINDOW_MS.
 */
#define LX_FLOOD_SAMPLE      64
#define LX_FLOOD_WINDOW_MS   1000

/*
 * A VIP: the value of lx_vips (keyed by struct ls_svc_key), and of lx_vip_live (an array
 * indexed by the id), where a tracked flow finds its VIP's mode, and whether the VIP it was
 * given a backend for still exists: gen is drawn anew whenever an id is given to a VIP, and
 * 0 in lx_vip_live means no VIP has the id. mode and gen share one aligned 64-bit word, which
 * the data path reads at once. lx_ct entries written before generations existed hold 0, and
 * are taken as the program of that time took them.
 */
struct lx_vip {
	__u32 id;         /* index of lx_vip_stats and lx_vip_live */
	__u32 ring_size;  /* Maglev table size M (a prime); 0: no backend */
	__u32 mode;
	__u32 gen;
	__u32 ring_base;  /* its table's first slot in lx_ring (value: a real id, __u32) */
	__u32 pad;
};

/* lx_real.flags */
#define LX_REAL_VALID  0x1
#define LX_REAL_SHARED 0x2   /* NAT: its (address, port, protocol) backs more than one VIP here */

/* A backend of a VIP (array indexed by real id). */
struct lx_real {
	__u8  addr[16];   /* the backend (NAT destination) */
	__u8  node[16];   /* its node (GUE outer destination) */
	__u16 port;       /* network order */
	__u8  family;
	__u8  flags;
	__u32 vip_id;     /* the VIP it belongs to (userspace takeover) */
};

/* A flow as the load balancer sees it (also the reverse-NAT key, with the reply's fields). */
struct lx_flow {
	__u8  src[16];
	__u8  dst[16];
	__u16 sport;
	__u16 dport;
	__u8  proto;
	__u8  family;
	__u8  pad[2];
};

/*
 * Connection tracking: the backend a flow was given, kept even if the backend set changes,
 * for as long as its VIP (real.vip_id) keeps the generation gen.
 */
struct lx_ct {
	struct lx_real real;
	__u32 real_id;
	__u32 gen;
};

/* lx_cache_entry.flags */
#define LX_CACHE_UNCONFIRMED 0x1  /* only its first packet seen: not in lx_ct yet (older agents) */

/* lx_first.flags */
#define LX_FIRST_UNCONFIRMED 0x1  /* its second packet confirms it (neither flag: confirmed, or flooded UDP) */
#define LX_FIRST_FLOODED     0x2  /* a SYN decided flooded: its ACK follows it, untracked, once */

/*
 * A new flow's first packet's decision (lx_first, indexed by flow_hash % LX_FIRST_SLOTS), one
 * cache line: the flow (all zero: an empty slot), the backend it was given in its VIP's
 * generation, and for a NAT backend of one VIP the hash of its replies' flow.
 */
struct lx_first {
	struct lx_flow flow;
	__u32 real_id;
	__u32 gen;
	__u32 vip_id;
	__u32 reply_hash;  /* flow_hash of the backend's reply flow; 0 unless NAT, not shared */
	__u32 flags;
	__u32 pad;
};

/*
 * A set of the per-CPU flow cache: tags[i] is 0 (empty) or a hash of e[i].flow, never 0. A new
 * flow enters neither the cache nor lx_ct with its first packet (that writes its lx_first
 * record); its second packet puts it in both, so a flood of first packets (SYNs, one-off
 * datagrams) never takes room in either.
 */
struct lx_cache_entry {
	struct lx_flow flow;
	struct lx_ct ct;
	__u32 touched;    /* the CPU's LX_CACHE_INSERTS count when lx_ct was last looked up */
	__u32 flags;
};

struct lx_cache_bucket {
	__u32 tags[LX_CACHE_WAYS];
	__u32 next;       /* the way the next insertion replaces (FIFO) */
	__u32 pad[3];
	struct lx_cache_entry e[LX_CACHE_WAYS];
};

/*
 * NAT replies: the VIP to put back as the source. The value of lx_nat_backends, keyed by a NAT
 * backend's (address, port, protocol) as struct ls_svc_key: its one VIP, or LX_REV_SHARED when
 * it backs several, whose replies need their flow's entry in lx_revnat (keyed by the reply's
 * flow). A reply from a NAT backend that finds neither is dropped: it must never leave with
 * the backend's address.
 */
#define LX_REV_SHARED 0x1

struct lx_rev {
	__u8  addr[16];
	__u16 port;
	__u8  family;
	__u8  flags;
};

/* A load balancer GUE is taken from (lx_gue_peers' key; value: __u32, unused). */
struct lx_peer {
	__u8  addr[16];
	__u8  family;
	__u8  pad[3];
};

/* Per-CPU new-flow rate (lx_flood[0]). */
struct lx_flood {
	__u64 window_ns;  /* bpf_ktime_get_ns() when the current window began */
	__u32 flows;      /* new flows in it */
	__u32 flooding;   /* the rate is above lx_config.flood_rate */
};

struct lx_vip_stats {
	__u64 packets;
	__u64 bytes;
	__u64 new_flows;   /* flows started (a SYN, or a datagram of an unknown UDP flow) */
	__u64 lru_misses;  /* TCP packets without SYN of no tracked flow: sent where Maglev says */
};

struct lx_real_stats {
	__u64 packets;
	__u64 bytes;
	__u64 new_flows;
};

/* lx_global slots (per-CPU __u64 counters). */
#define LX_PASS_FRAGMENT    0   /* IP fragments: passed to the kernel */
#define LX_PASS_IP_OPTIONS  1   /* IPv4 options or IPv6 extension headers: passed */
#define LX_DROP_NO_REAL     2   /* a VIP whose table slot has no valid backend */
#define LX_DROP_ENCAP       3   /* no room to encapsulate */
#define LX_XDP_TX           4
#define LX_XDP_REDIRECT     5
#define LX_XDP_PASS_FWD     6   /* rewritten, then forwarded by the kernel */
#define LX_TC_REVNAT        7   /* NAT replies given the VIP back */
#define LX_TC_DECAP         8   /* GUE packets decapsulated */
#define LX_DROP_MALFORMED   9   /* truncated TCP/UDP headers: passed for the kernel to drop */
#define LX_CACHE_MISS       10  /* tracked flows not in this CPU's flow cache: read from lx_ct */
#define LX_CACHE_INSERTS    11  /* flows put in this CPU's flow cache (its clock for LX_CT_REFRESH) */
#define LX_CONFIRMED        12  /* flows whose second packet put them in lx_ct */
#define LX_FLOOD_UNCACHED   13  /* new flows not cached because the CPU was flooded */
#define LX_DROP_REVNAT      14  /* NAT replies of a shared backend whose lx_revnat entry is gone */
#define LX_DROP_GUE_PEER    15  /* GUE from a sender not in lx_gue_peers */
#define LX_DROP_GUE_INNER   16  /* GUE whose inner packet is to no VIP */
#define LX_ICMP_TOO_BIG     17  /* too big to encapsulate: ICMP frag needed / packet too big sent */
#define LX_NAT_MARKED       18  /* NAT replies of a flow not in lx_ct yet, known by its first packet's record */
#define LX_COUNTERS         19

/* lx_config.flags */
#define LX_CFG_FIB_FORWARD  0x1  /* forward with XDP_TX / XDP_REDIRECT where the FIB allows */

struct lx_config {
	__u8  gue_src4[4];   /* outer source for IPv4 GUE */
	__u8  gue_src6[16];  /* outer source for IPv6 GUE */
	__u16 gue_port;      /* network order */
	__u16 flags;
	__u16 gue_mtu;       /* the outer packets' MTU towards the backends' nodes */
	__u16 pad;
	__u32 flood_rate;    /* new flows per second and CPU; 0: never flooded */
};

#endif /* LODESTAR_H */
