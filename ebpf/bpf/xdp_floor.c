// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * The floor for the XDP benchmark: the least a load balancer can do to a packet. Parse
 * Ethernet and IPv4, rewrite the destination address (with the checksum update), swap the MAC
 * addresses and send it back out (XDP_TX). No maps, no lookups.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* The kernel's name for the SPDX line (GPL-compatible, for the GPL-only helpers such as
 * bpf_fib_lookup); ebpf/build.rs checks the two agree. */
char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline __u16 fold(__u32 c)
{
	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	return (__u16)c;
}

/* The frame's IPv4 header, with `room` bytes after it in the frame; NULL if it has none. */
static __always_inline struct iphdr *ipv4_of(struct xdp_md *ctx, __u32 room)
{
	struct ethhdr *eth = (void *)(long)ctx->data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) + room > (void *)(long)ctx->data_end ||
	    eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	return ip;
}

SEC("xdp")
int xdp_floor(struct xdp_md *ctx)
{
	struct iphdr *ip = ipv4_of(ctx, 0);
	if (!ip)
		return XDP_PASS;
	struct ethhdr *eth = (struct ethhdr *)ip - 1;
	__u32 to = bpf_htonl(0xc6120102); /* 198.18.1.2 */
	__u32 from = ip->daddr;
	__u32 c = (__u16)~ip->check;
	c += (__u16)~(__u16)from + (__u16)~(__u16)(from >> 16);
	c += (__u16)to + (__u16)(to >> 16);
	ip->check = (__u16)~fold(c);
	ip->daddr = to;
	__u8 tmp[ETH_ALEN];
	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
	return XDP_TX;
}


/*
 * The benchmark's backends' sink: drops UDP to port 8080 at the earliest point and counts it,
 * so what the end-to-end benchmark measures is the load balancer's forwarding, not the
 * backends' stacks.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sink_count SEC(".maps");

SEC("xdp")
int xdp_sink(struct xdp_md *ctx)
{
	struct iphdr *ip = ipv4_of(ctx, 8);
	if (!ip || ip->protocol != 17)
		return XDP_PASS;
	__u16 *dport = (void *)(ip + 1) + 2;
	if (*dport != bpf_htons(8080))
		return XDP_PASS;
	__u32 zero = 0;
	__u64 *c = bpf_map_lookup_elem(&sink_count, &zero);
	if (c)
		*c += 1;
	return XDP_DROP;
}

/*
 * The end-to-end benchmark's generator, run with BPF_PROG_RUN's live-frames mode in the
 * client's namespace: every frame becomes the template (an IPv4/UDP datagram to the VIP, with
 * its checksums), from one of `flows` source ports in turn, and is sent out of the client's
 * interface (XDP_TX). The template is written again each time because the pages are recycled:
 * a frame that the load balancer rewrote would otherwise come round again already rewritten.
 */
#define GEN_FRAME 60

struct gen_tmpl {
	__u8  frame[GEN_FRAME];  /* Ethernet + IPv4 + UDP + 18 bytes */
	__u16 base_port;         /* the template's source port, network order */
	__u16 flows;             /* source ports base_port .. base_port + flows - 1 */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_tmpl);
} gen_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} gen_count SEC(".maps");

/* Writes the template into the frame: the template (NULL when the frame is too short or a map
 * is missing), and this CPU's frame count in *n. */
static __always_inline struct gen_tmpl *put_template(struct xdp_md *ctx, __u64 **n)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (data + GEN_FRAME > end)
		return 0;
	__u32 zero = 0;
	struct gen_tmpl *t = bpf_map_lookup_elem(&gen_cfg, &zero);
	*n = bpf_map_lookup_elem(&gen_count, &zero);
	if (!t || !*n)
		return 0;
	__builtin_memcpy(data, t->frame, GEN_FRAME);
	return t;
}

SEC("xdp")
int xdp_gen(struct xdp_md *ctx)
{
	__u64 *n;
	struct gen_tmpl *t = put_template(ctx, &n);
	if (!t || !t->flows)
		return XDP_ABORTED;
	void *data = (void *)(long)ctx->data;
	if (data + GEN_FRAME > (void *)(long)ctx->data_end)
		return XDP_ABORTED;
	__u16 port = bpf_htons(bpf_ntohs(t->base_port) + (__u16)(*n % t->flows));
	*n += 1;
	__u16 *sport = data + 14 + 20;
	__u16 *check = data + 14 + 20 + 6;
	__u32 c = (__u16)~*check + (__u16)~t->base_port + port;
	__u16 sum = (__u16)~fold(c);
	*check = sum ? sum : 0xffff;
	*sport = port;
	return XDP_TX;
}

/*
 * New flows for the per-packet benchmark: BPF_PROG_TEST_RUN repeats one packet (and keeps what
 * a run wrote into it for the next), and a repeated packet is a tracked flow from its second run
 * on. This program makes every run a flow never seen before: it writes the template (gen_cfg's
 * frame) again, with the low 16 bits of the IPv4 source and the source port counting up per CPU,
 * then tail-calls the program under test (bench_next[0]). That is the cost of new flows as a
 * flood of them pays it, with no system call between packets; or (template flows = 2) every
 * two runs a new connection's SYN and first ACK. Checksums are left as the template has them: the
 * programs under test update them incrementally and never check them.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} bench_next SEC(".maps");

SEC("xdp")
int xdp_new_flows(struct xdp_md *ctx)
{
	__u64 *n;
	struct gen_tmpl *t = put_template(ctx, &n);
	if (!t)
		return XDP_ABORTED;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (data + GEN_FRAME > end)
		return XDP_ABORTED;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	__u8 *l4 = (void *)(ip + 1);
	__u64 i = (*n)++;
	/* flows == 2: two packets per flow, a TCP SYN and then its ACK (a connection's start). */
	__u64 f = t->flows == 2 ? i >> 1 : i;
	if (t->flows == 2 && ip->protocol == IPPROTO_TCP)
		l4[13] = (i & 1) ? 0x10 : 0x02;
	ip->saddr = (ip->saddr & bpf_htonl(0xffff0000)) | bpf_htonl((__u32)(f >> 16) & 0xffff);
	*(__u16 *)l4 = bpf_htons((__u16)f);
	bpf_tail_call(ctx, &bench_next, 0);
	return XDP_ABORTED;
}

/* What xdp_new_flows costs by itself: the benchmark subtracts it. */
SEC("xdp")
int xdp_noop(struct xdp_md *ctx)
{
	return XDP_DROP;
}
