//! The Rust mirror of `ebpf/include/lodestar.h`. [`verify`] checks every struct here against
//! the BTF of the compiled object (sizes and field offsets, by name); the loader refuses an
//! object that does not match, and a test runs the same check on every build.

use crate::btf::Btf;

macro_rules! mirror {
    ($( $(#[$m:meta])* $name:ident = $c:literal { $( $field:ident : $ty:ty ),* $(,)? } )*) => {
        $(
            $(#[$m])*
            #[repr(C)]
            #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
            pub struct $name { $( pub $field: $ty ),* }
            // SAFETY: repr(C), integer fields only, padding explicit (checked by `verify`).
            unsafe impl aya::Pod for $name {}
        )*

        /// Every mirrored struct: (C name, size, [(field, offset)]).
        pub(crate) fn mirrors() -> Vec<(&'static str, usize, Vec<(&'static str, usize)>)> {
            vec![$( (
                $c,
                std::mem::size_of::<$name>(),
                vec![$( (stringify!($field), std::mem::offset_of!($name, $field)) ),*],
            ) ),*]
        }
    };
}

mirror! {
    /// `struct ls_svc_key`: one VIP address, port (network order) and protocol.
    SvcKey = "ls_svc_key" { addr: [u8; 16], port: u16, proto: u8, family: u8 }
    /// `struct ls_svc`.
    Svc = "ls_svc" { id: u32, slots: u16, flags: u16 }
    /// `struct ls_slot_key`.
    SlotKey = "ls_slot_key" { svc_id: u32, slot: u32 }
    /// `struct ls_backend`.
    BackendEntry = "ls_backend" { addr: [u8; 16], port: u16, family: u8, flags: u8, svc_id: u32 }
    /// `struct ls_rev_key`.
    RevKey = "ls_rev_key" { cookie: u64, addr: [u8; 16], port: u16, family: u8, pad: [u8; 5] }
    /// `struct ls_rev`.
    Rev = "ls_rev" { addr: [u8; 16], port: u16, family: u8, pad: u8 }
    /// `struct ls_svc_stats`: per-CPU counters of one service.
    SvcStats = "ls_svc_stats" {
        connects: u64,
        datagrams: u64,
        no_backend: u64,
        fail_open: u64,
        skipped: u64,
    }
    /// `struct ls_be_stats`: per-CPU counters of one backend.
    BackendStats = "ls_be_stats" { connects: u64, datagrams: u64 }
    /// `struct ls_health`: passive health of one backend address.
    Health = "ls_health" {
        consecutive_fails: u32,
        pad: u32,
        fails: u64,
        successes: u64,
        last_fail_ns: u64,
    }
    /// `struct ls_config`: ls_config[0].
    Config = "ls_config" { fail_threshold: u32, pad: u32, hold_ns: u64 }
    /// `struct lx_vip`.
    XVip = "lx_vip" { id: u32, ring_size: u32, mode: u32, gen: u32 }
    /// `struct lx_ring_key`.
    RingKey = "lx_ring_key" { vip_id: u32, slot: u32 }
    /// `struct lx_real`.
    Real = "lx_real" { addr: [u8; 16], node: [u8; 16], port: u16, family: u8, flags: u8, vip_id: u32 }
    /// `struct lx_flow`.
    Flow = "lx_flow" {
        src: [u8; 16],
        dst: [u8; 16],
        sport: u16,
        dport: u16,
        proto: u8,
        family: u8,
        pad: [u8; 2],
    }
    /// `struct lx_ct`.
    Ct = "lx_ct" { real: Real, real_id: u32, gen: u32 }
    /// `struct lx_cache_entry`: a flow in a CPU's flow cache.
    CacheEntry = "lx_cache_entry" { flow: Flow, ct: Ct, touched: u32, pad: u32 }
    /// `struct lx_cache_bucket`: a set of a CPU's flow cache (`LX_CACHE_WAYS` ways).
    CacheBucket = "lx_cache_bucket" { tags: [u32; 4], next: u32, pad: [u32; 3], e: [CacheEntry; 4] }
    /// `struct lx_rev`.
    XRev = "lx_rev" { addr: [u8; 16], port: u16, family: u8, pad: u8 }
    /// `struct lx_vip_stats`.
    XVipStats = "lx_vip_stats" { packets: u64, bytes: u64, new_flows: u64, lru_misses: u64 }
    /// `struct lx_real_stats`.
    RealStats = "lx_real_stats" { packets: u64, bytes: u64, new_flows: u64 }
    /// `struct lx_config`.
    XConfig = "lx_config" { gue_src4: [u8; 4], gue_src6: [u8; 16], gue_port: u16, flags: u16 }
}

/// `LX_MODE_*`, `LX_REAL_VALID`, `LX_CFG_FIB_FORWARD`.
pub const LX_MODE_NAT: u32 = 0;
pub const LX_MODE_GUE: u32 = 1;
pub const LX_REAL_VALID: u8 = 0x1;
pub const LX_CFG_FIB_FORWARD: u16 = 0x1;
/// `LX_FILTER_WORDS`: the VIP filter's size in 64-bit words.
pub const LX_FILTER_WORDS: u32 = 1024;

/// `lx_global` counter slots: (metric label, header define, slot).
pub const LX_COUNTERS: [(&str, &str, u32); 12] = [
    ("pass_fragment", "LX_PASS_FRAGMENT", 0),
    ("pass_ip_options", "LX_PASS_IP_OPTIONS", 1),
    ("drop_no_backend", "LX_DROP_NO_REAL", 2),
    ("drop_encap", "LX_DROP_ENCAP", 3),
    ("xdp_tx", "LX_XDP_TX", 4),
    ("xdp_redirect", "LX_XDP_REDIRECT", 5),
    ("pass_forwarded_by_kernel", "LX_XDP_PASS_FWD", 6),
    ("tc_revnat", "LX_TC_REVNAT", 7),
    ("tc_decap", "LX_TC_DECAP", 8),
    ("pass_malformed", "LX_DROP_MALFORMED", 9),
    ("flow_cache_miss", "LX_CACHE_MISS", 10),
    ("flow_cache_insert", "LX_CACHE_INSERTS", 11),
];

/// `LS_SVC_FAIL_OPEN`.
pub const SVC_FAIL_OPEN: u16 = 0x1;
/// `LS_BE_VALID`.
pub const BE_VALID: u8 = 0x1;
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Map names (and pin file names), as in the header.
pub mod maps {
    pub const SERVICES: &str = "ls_services";
    pub const SLOTS: &str = "ls_slots";
    pub const BACKENDS: &str = "ls_backends";
    pub const REVNAT: &str = "ls_revnat";
    pub const SVC_STATS: &str = "ls_svc_stats";
    pub const BE_STATS: &str = "ls_be_stats";
    pub const HEALTH: &str = "ls_health";
    pub const CONFIG: &str = "ls_config";
    pub const ALL: [&str; 8] = [
        SERVICES, SLOTS, BACKENDS, REVNAT, SVC_STATS, BE_STATS, HEALTH, CONFIG,
    ];
    pub const XDP: [&str; 12] = [
        "lx_vips",
        "lx_vip_live",
        "lx_vip_filter",
        "lx_flow_cache",
        "lx_ring",
        "lx_reals",
        "lx_ct",
        "lx_revnat",
        "lx_vip_stats",
        "lx_real_stats",
        "lx_global",
        "lx_config",
    ];
}

/// A `#define NAME value` of the shared header, as a number.
pub fn header_constant(name: &str) -> Option<u64> {
    lodestar_ebpf::HEADER.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("#define") && w.next() == Some(name))
            .then(|| w.next())
            .flatten()
            .and_then(|v| match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => v.parse().ok(),
            })
    })
}

/// Capacities from the header.
pub fn max_slots_per_service() -> u32 {
    header_constant("LS_MAX_SLOTS_PER_SVC").unwrap_or(4096) as u32
}
pub fn max_services() -> u32 {
    header_constant("LS_MAX_SERVICES").unwrap_or(16384) as u32
}
pub fn max_backends() -> u32 {
    header_constant("LS_MAX_BACKENDS").unwrap_or(65536) as u32
}

/// Checks the mirror against a compiled object's BTF and the header's flag values; every
/// difference, or none.
pub fn verify(object: &[u8]) -> Result<(), Vec<String>> {
    verify_objects(&[object])
}

/// [`verify`] over several objects: each struct is checked in every object that has it, and
/// must be in at least one.
pub fn verify_objects(objects: &[&[u8]]) -> Result<(), Vec<String>> {
    let btfs = objects
        .iter()
        .map(|o| Btf::from_elf(o))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| vec![e])?;
    let mut problems = Vec::new();
    for (name, size, fields) in mirrors() {
        let found: Vec<_> = btfs.iter().filter_map(|b| b.struct_by_name(name)).collect();
        if found.is_empty() {
            problems.push(format!("struct {name}: in no object's BTF"));
            continue;
        }
        for s in found {
            if s.size as usize != size {
                problems.push(format!(
                    "struct {name}: {} bytes in BTF, {size} in Rust",
                    s.size
                ));
            }
            for (field, offset) in &fields {
                match s.members.iter().find(|m| m.name == *field) {
                    None => problems.push(format!("struct {name}: no field {field} in BTF")),
                    Some(m) if m.bit_offset as usize != offset * 8 => problems.push(format!(
                        "struct {name}.{field}: at byte {} in BTF, {offset} in Rust",
                        m.bit_offset / 8
                    )),
                    Some(_) => {}
                }
            }
            for m in &s.members {
                if !fields.iter().any(|(f, _)| *f == m.name) {
                    problems.push(format!("struct {name}.{}: missing in Rust", m.name));
                }
            }
        }
    }
    for (define, value) in [
        ("LS_SVC_FAIL_OPEN", SVC_FAIL_OPEN as u64),
        ("LS_BE_VALID", BE_VALID as u64),
        ("LX_MODE_NAT", LX_MODE_NAT as u64),
        ("LX_MODE_GUE", LX_MODE_GUE as u64),
        ("LX_REAL_VALID", LX_REAL_VALID as u64),
        ("LX_CFG_FIB_FORWARD", LX_CFG_FIB_FORWARD as u64),
        ("LX_COUNTERS", LX_COUNTERS.len() as u64),
        ("LX_CACHE_WAYS", 4),
        ("LX_FILTER_WORDS", u64::from(LX_FILTER_WORDS)),
    ] {
        if header_constant(define) != Some(value) {
            problems.push(format!(
                "{define}: the header says {:?}, Rust {value}",
                header_constant(define)
            ));
        }
    }
    for (_, define, slot) in LX_COUNTERS {
        if header_constant(define) != Some(u64::from(slot)) {
            problems.push(format!(
                "{define}: the header says {:?}, Rust {slot}",
                header_constant(define)
            ));
        }
    }
    for map in maps::ALL.iter().chain(maps::XDP.iter()) {
        if !lodestar_ebpf::HEADER.contains(&format!(" {map}\n")) {
            problems.push(format!("map {map}: not named in the header"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_matches_the_compiled_objects() {
        verify_objects(&[lodestar_ebpf::sock_lb(), lodestar_ebpf::xdp_lb()])
            .unwrap_or_else(|p| panic!("{}", p.join("\n")));
    }

    #[test]
    fn verify_notices_a_wrong_mirror() {
        // The same check against a struct list with one field moved must fail: compare the
        // real BTF with a doctored expectation.
        let btf = Btf::from_elf(lodestar_ebpf::sock_lb()).unwrap();
        let s = btf.struct_by_name("ls_backend").unwrap();
        let port = s.members.iter().find(|m| m.name == "port").unwrap();
        assert_eq!(port.bit_offset, 16 * 8);
        assert_ne!(port.bit_offset, 18 * 8);
        assert_eq!(s.size as usize, std::mem::size_of::<BackendEntry>());
    }

    #[test]
    fn header_constants() {
        assert_eq!(max_slots_per_service(), 4096);
        assert_eq!(header_constant("LS_SVC_FAIL_OPEN"), Some(1));
    }
}
