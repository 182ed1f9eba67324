/* SPDX-License-Identifier: Apache-2.0 */
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

/* Knobs userspace sets (ls_config[0]). fail_threshold 0: passive health off. */
struct ls_config {
	__u32 fail_threshold;     /* consecutive failures that mark a backend failing */
	__u32 pad;
	__u64 hold_ns;            /* how long a failing backend is passed over */
};

#endif /* LODESTAR_H */
