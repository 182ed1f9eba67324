//! Lodestar's BPF programs, written in C (`bpf/`) and compiled by clang from this crate's build
//! script. `include/lodestar.h` is the one definition of what they share with userspace.

/// Bytes aligned for an ELF parser that reads them in place.
#[repr(C, align(8))]
pub struct Aligned<B: ?Sized>(pub B);

static SOCK_LB: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/sock_lb.o")));

/// The socket-level load balancer: `cgroup/connect{4,6}`, `sendmsg{4,6}`, `recvmsg{4,6}` and
/// `getpeername{4,6}` programs and their maps (an ELF object with BTF).
pub fn sock_lb() -> &'static [u8] {
    &SOCK_LB.0
}

static XDP_LB: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/xdp_lb.o")));

/// The per-packet load balancer: the `xdp` program and the `classifier` programs for NAT
/// replies (tc egress) and GUE decapsulation (tc ingress), with their maps.
pub fn xdp_lb() -> &'static [u8] {
    &XDP_LB.0
}

static XDP_FLOOR: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/xdp_floor.o")));

/// The benchmark's floor: an XDP program that only rewrites the destination and bounces the
/// packet (`XDP_TX`).
pub fn xdp_floor() -> &'static [u8] {
    &XDP_FLOOR.0
}

/// The shared header, for tools and tests that check layouts against it.
pub const HEADER: &str = include_str!("../include/lodestar.h");

/// The header's map names and integer `#define`s, generated from it by the build script: the
/// Rust side names a map, a capacity, a flag or a counter slot only through these.
pub mod header {
    include!(concat!(env!("OUT_DIR"), "/lodestar_h.rs"));
}
