//! The per-packet load balancer in the kernel: `xdp_lb.o` loaded (`loader`), its maps pinned
//! as `lx_*` next to the socket load balancer's, XDP and the tc programs attached through
//! links pinned under `links/` (`lx_xdp@eth0`, `lx_tc_revnat@eth0`, `lx_tc_decap@eth1`;
//! `attach::xdp`, `attach::tc`), and its maps for the XDP reconciler (`XdpMaps`).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap as BpfHashMap, IterableMap, MapData, ProgramArray};
use aya::programs::{Program, ProgramFd, TcAttachType};
use aya::Ebpf;
use lodestar_control::ConfigProblem;
use lodestar_ebpf::header as h;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::error::L4lbError;
use crate::layout::{
    self, Ct, Flow, Object, Peer, Real, RealStats, SvcKey, XConfig, XRev, XVip, XVipStats,
    LX_CFG_FIB_FORWARD,
};
use crate::maps::percpu::PerCpuCounters;
use crate::maps::{gone_ok, io_error};
use crate::pin::PinDir;
use crate::xdp::{XDump, XdpMaps};
use crate::{loader, sys};

/// The XDP path's configuration (`[l4lb.xdp]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XdpConfig {
    /// Interfaces whose incoming VIP traffic XDP balances. Empty: the XDP path is off.
    pub interfaces: Vec<String>,
    /// Interfaces where NAT replies leave towards clients (tc egress gives them their VIP back).
    /// Usually the same as `interfaces`.
    pub nat_reply_interfaces: Vec<String>,
    /// Interfaces on which this node decapsulates GUE for its own backends (tc ingress).
    pub decap_interfaces: Vec<String>,
    /// The default mode of a VIP: `nat` or `gue`.
    pub mode: crate::xdp::Mode,
    /// Per-VIP modes: `vip` as `vips ls` names it (`/web:80/tcp`), `mode`.
    pub vips: Vec<VipMode>,
    /// GUE's UDP destination port.
    pub gue_port: u16,
    /// Outer source addresses of GUE packets (this node's).
    pub gue_source_v4: Option<Ipv4Addr>,
    pub gue_source_v6: Option<Ipv6Addr>,
    /// Forward with XDP_TX / XDP_REDIRECT where the FIB has a resolved next hop (else the
    /// kernel forwards the rewritten packet). Redirecting to a veth needs XDP or GRO on its peer.
    pub fib_forward: bool,
    /// Bound on a VIP's Maglev table (rounded down to a prime).
    pub max_table: u32,
    /// The Maglev seed: the same on every load balancer of a site, so they agree.
    pub seed: u64,
    /// The load balancers whose GUE this node decapsulates (their `gue_source_v4/v6`); GUE from
    /// any other sender is dropped. Needed with `decap_interfaces`.
    pub gue_sources: Vec<IpAddr>,
    /// The MTU of the path from this load balancer to the backends' nodes: a packet that would
    /// not fit once encapsulated gets ICMP "fragmentation needed" / "packet too big" back.
    pub gue_mtu: u16,
    /// New flows per second and CPU above which new flows no longer take a place in the CPU's
    /// flow cache (a SYN or UDP flood); 0: never.
    pub flood_new_flows_per_cpu: u32,
}

/// Ethernet's: what Azure and most underlays carry.
pub const DEFAULT_GUE_MTU: u16 = 1500;

/// Katran's `MAX_CONN_RATE`.
pub const DEFAULT_FLOOD_NEW_FLOWS_PER_CPU: u32 = 125_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipMode {
    pub vip: String,
    pub mode: crate::xdp::Mode,
}

impl Default for XdpConfig {
    fn default() -> Self {
        XdpConfig {
            interfaces: Vec::new(),
            nat_reply_interfaces: Vec::new(),
            decap_interfaces: Vec::new(),
            mode: crate::xdp::Mode::Nat,
            vips: Vec::new(),
            gue_port: 6080,
            gue_source_v4: None,
            gue_source_v6: None,
            fib_forward: false,
            max_table: crate::maglev::DEFAULT_MAX,
            seed: crate::maglev::DEFAULT_SEED,
            gue_sources: Vec::new(),
            gue_mtu: DEFAULT_GUE_MTU,
            flood_new_flows_per_cpu: DEFAULT_FLOOD_NEW_FLOWS_PER_CPU,
        }
    }
}

impl XdpConfig {
    pub fn enabled(&self) -> bool {
        !(self.interfaces.is_empty()
            && self.nat_reply_interfaces.is_empty()
            && self.decap_interfaces.is_empty())
    }

    pub fn mode_of(&self, vip: &str) -> crate::xdp::Mode {
        self.vips
            .iter()
            .find(|v| v.vip == vip)
            .map_or(self.mode, |v| v.mode)
    }

    /// Whether any VIP is forwarded in GUE mode.
    fn uses_gue(&self) -> bool {
        self.mode == crate::xdp::Mode::Gue
            || self.vips.iter().any(|v| v.mode == crate::xdp::Mode::Gue)
    }

    /// Everything wrong with the section, all at once.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if self.uses_gue() && self.gue_source_v4.is_none() && self.gue_source_v6.is_none() {
            out.push(ConfigProblem::new(
                "l4lb.xdp",
                "GUE mode needs gue_source_v4 or gue_source_v6",
            ));
        }
        if self.max_table < 101 {
            out.push(ConfigProblem::new(
                "l4lb.xdp.max_table",
                "must be at least 101",
            ));
        }
        if self.gue_port == 0 {
            out.push(ConfigProblem::new("l4lb.xdp.gue_port", "must not be 0"));
        }
        if !self.decap_interfaces.is_empty() && self.gue_sources.is_empty() {
            out.push(ConfigProblem::new(
                "l4lb.xdp.gue_sources",
                "decap_interfaces needs the load balancers GUE is taken from \
                 (their gue_source_v4/v6); GUE from anyone else is dropped",
            ));
        }
        if self.gue_sources.len() > h::LX_MAX_GUE_PEERS as usize {
            out.push(ConfigProblem::new(
                "l4lb.xdp.gue_sources",
                format!("at most {} addresses", h::LX_MAX_GUE_PEERS),
            ));
        }
        if self.gue_mtu < 1280 {
            out.push(ConfigProblem::new(
                "l4lb.xdp.gue_mtu",
                "must be at least 1280 (IPv6's minimum)",
            ));
        }
        out
    }
}

pub struct XdpLb {
    ebpf: Ebpf,
    vips: BpfHashMap<MapData, SvcKey, XVip>,
    live: Array<MapData, XVip>,
    filter: Array<MapData, u64>,
    ct: BpfHashMap<MapData, Flow, Ct>,
    ring: Array<MapData, u32>,
    reals: Array<MapData, Real>,
    nat_backends: BpfHashMap<MapData, SvcKey, XRev>,
    revnat: BpfHashMap<MapData, Flow, XRev>,
    vip_stats: PerCpuCounters<XVipStats>,
    real_stats: PerCpuCounters<RealStats>,
    global: PerCpuCounters<u64>,
    /// Links an earlier agent pinned and this one took over.
    pub took_over: usize,
    _pins: Option<PinDir>,
}

/// The programs and where each is attached.
#[derive(Clone, Copy)]
enum Hook {
    Xdp,
    Tc(TcAttachType),
}

const PROGS: [(&str, Hook); 3] = [
    ("lx_xdp", Hook::Xdp),
    ("lx_tc_revnat", Hook::Tc(TcAttachType::Egress)),
    ("lx_tc_decap", Hook::Tc(TcAttachType::Ingress)),
];

impl XdpLb {
    /// Loads the object with its maps pinned in `pin_path` and attaches it as `cfg` says.
    /// `take_lock`: take the pin directory's lock (false when the caller holds it).
    pub fn open(pin_path: &Path, cfg: &XdpConfig, take_lock: bool) -> Result<XdpLb, L4lbError> {
        let pins = if take_lock {
            PinDir::lock(pin_path)?
        } else {
            PinDir::prepare(pin_path)?
        };
        let mut lb = XdpLb::open_in(&pins, cfg)?;
        lb._pins = take_lock.then_some(pins);
        Ok(lb)
    }

    /// Loads and attaches in `pins`, whose lock the caller holds.
    pub fn open_in(pins: &PinDir, cfg: &XdpConfig) -> Result<XdpLb, L4lbError> {
        let object = Object::XdpLb.name();
        let mut ebpf = loader::load(Object::XdpLb, pins)?;
        let vips = loader::take_map(&mut ebpf, object, h::LX_MAP_VIPS)?;
        let mut live = loader::take_map(&mut ebpf, object, h::LX_MAP_VIP_LIVE)?;
        let mut filter = loader::take_map(&mut ebpf, object, h::LX_MAP_VIP_FILTER)?;
        // Maps of an agent from before the VIP filter and generations: a program swapped into
        // the pinned links must find every VIP through the filter before the first apply.
        seed_from_vips(&vips, &mut live, &mut filter)?;
        // GUE packets leave from this node's own address. When the FIB cannot forward them
        // from XDP (no resolved neighbour yet, or fib_forward off) the kernel does, and it
        // would drop a received packet whose source is local as a martian: accept_local.
        if cfg.uses_gue() {
            for ifname in &cfg.interfaces {
                let knob = format!("/proc/sys/net/ipv4/conf/{ifname}/accept_local");
                if let Err(e) = std::fs::write(&knob, "1") {
                    warn!(
                        "cannot set {knob} (GUE packets the kernel forwards may be dropped): {e}"
                    );
                }
            }
        }
        let mut xc = XConfig {
            gue_port: cfg.gue_port.to_be(),
            flags: if cfg.fib_forward {
                LX_CFG_FIB_FORWARD
            } else {
                0
            },
            gue_mtu: cfg.gue_mtu,
            flood_rate: cfg.flood_new_flows_per_cpu,
            ..XConfig::default()
        };
        if let Some(v4) = cfg.gue_source_v4 {
            xc.gue_src4 = v4.octets();
        }
        if let Some(v6) = cfg.gue_source_v6 {
            xc.gue_src6 = v6.octets();
        }
        // Before any program of this object is attached: it reads both from its first packet.
        let mut config: Array<MapData, XConfig> =
            loader::take_map(&mut ebpf, object, h::LX_MAP_XCONFIG)?;
        config
            .set(0, xc, 0)
            .map_err(L4lbError::map(h::LX_MAP_XCONFIG))?;
        let mut peers: BpfHashMap<MapData, Peer, u32> =
            loader::take_map(&mut ebpf, object, h::LX_MAP_GUE_PEERS)?;
        sync_peers(&mut peers, &cfg.gue_sources)?;
        let mut took_over = 0;
        let mut wanted: Vec<PathBuf> = Vec::new();
        for (name, hook) in PROGS {
            let ifaces = match name {
                "lx_xdp" => &cfg.interfaces,
                "lx_tc_revnat" => &cfg.nat_reply_interfaces,
                _ => &cfg.decap_interfaces,
            };
            let prog = loader::program(&mut ebpf, object, name)?;
            for ifname in ifaces {
                let index = sys::ifindex(ifname).map_err(|source| L4lbError::NoInterface {
                    interface: ifname.clone(),
                    source,
                })?;
                let pin = pins.link(&format!("{name}@{ifname}"));
                let taken = match (hook, &mut *prog) {
                    (Hook::Xdp, Program::Xdp(p)) => {
                        crate::attach::xdp::attach(p, name, index, &pin)?
                    }
                    (Hook::Tc(dir), Program::SchedClassifier(p)) => {
                        crate::attach::tc::attach(p, name, ifname, dir, &pin)?
                    }
                    _ => {
                        return Err(L4lbError::ProgramType {
                            program: name.into(),
                        })
                    }
                };
                took_over += usize::from(taken);
                wanted.push(pin);
            }
        }
        // Links for interfaces no longer configured go (which detaches them).
        pins.unpin_links("lx_", &wanted);

        Ok(XdpLb {
            vips,
            live,
            filter,
            ct: loader::take_map(&mut ebpf, object, h::LX_MAP_CT)?,
            ring: loader::take_map(&mut ebpf, object, h::LX_MAP_RING)?,
            reals: loader::take_map(&mut ebpf, object, h::LX_MAP_REALS)?,
            nat_backends: loader::take_map(&mut ebpf, object, h::LX_MAP_NAT_BACKENDS)?,
            revnat: loader::take_map(&mut ebpf, object, h::LX_MAP_REVNAT)?,
            vip_stats: PerCpuCounters::take(&mut ebpf, object, h::LX_MAP_VIP_STATS)?,
            real_stats: PerCpuCounters::take(&mut ebpf, object, h::LX_MAP_REAL_STATS)?,
            global: PerCpuCounters::take(&mut ebpf, object, h::LX_MAP_GLOBAL)?,
            ebpf,
            took_over,
            _pins: None,
        })
    }

    /// Runs one of the object's programs on a packet (`BPF_PROG_TEST_RUN`): fixtures and the
    /// per-packet cost benchmark.
    pub fn test_run(
        &self,
        program: &str,
        packet: &[u8],
        repeat: u32,
    ) -> Result<sys::TestRun, L4lbError> {
        test_run(&self.ebpf, Object::XdpLb.name(), program, packet, repeat)
    }

    /// One of the object's programs (the benchmark tail-calls `lx_xdp`).
    pub fn program(&self, program: &str) -> Result<&ProgramFd, L4lbError> {
        loaded_program(&self.ebpf, Object::XdpLb.name(), program)
    }

    pub fn dump(&self) -> Result<XDump, L4lbError> {
        let mut d = XDump::default();
        d.vips.extend(self.vips.iter().flatten());
        d.nat_backends.extend(self.nat_backends.iter().flatten());
        // Only the VIPs' tables are read: the array is 16.8 million slots.
        for (_, v) in &d.vips {
            let mut from = v.ring_base;
            let end = v.ring_base.saturating_add(v.ring_size).min(self.ring.len());
            let mut values = vec![0u8; 4 * (end.saturating_sub(from)) as usize];
            while from < end {
                let off = 4 * (from - v.ring_base) as usize;
                let got = sys::bpf::array_lookup_batch(
                    self.ring.map().fd().as_fd(),
                    from,
                    end - from,
                    &mut values[off..],
                )
                .map_err(L4lbError::syscall(format!("reading {}", h::LX_MAP_RING)))?;
                if got == 0 {
                    break;
                }
                from += got;
            }
            d.ring.extend(
                values
                    .chunks_exact(4)
                    .take((from - v.ring_base) as usize)
                    .enumerate()
                    .map(|(i, b)| {
                        (
                            v.ring_base + i as u32,
                            u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
                        )
                    }),
            );
        }
        for (i, v) in self.live.iter().enumerate() {
            if let Ok(v) = v {
                if v != XVip::default() {
                    d.live.push((i as u32, v));
                }
            }
        }
        for (i, w) in self.filter.iter().enumerate() {
            if let Ok(w) = w {
                if w != 0 {
                    d.filter.push((i as u32, w));
                }
            }
        }
        for (i, r) in self.reals.iter().enumerate() {
            if let Ok(r) = r {
                if r.flags & layout::LX_REAL_VALID != 0 {
                    d.reals.push((i as u32, r));
                }
            }
        }
        Ok(d)
    }

    /// The shared tracking table's entry for a flow (inspection and tests).
    pub fn flow(&self, flow: &Flow) -> Option<Ct> {
        self.ct.get(flow, 0).ok()
    }

    /// Writes a flow's entry in the shared tracking table (tests).
    pub fn set_flow(&mut self, flow: &Flow, ct: &Ct) -> io::Result<()> {
        self.ct.insert(flow, ct, 0).map_err(io_error)
    }

    /// Removes a flow from the shared tracking table (the CPUs' caches keep theirs).
    pub fn remove_flow(&mut self, flow: &Flow) -> io::Result<()> {
        gone_ok(self.ct.remove(flow))
    }

    /// A NAT reply's entry (keyed by the reply's flow, backend to client), as tc egress reads it.
    pub fn reply(&self, reply: &Flow) -> Option<XRev> {
        self.revnat.get(reply, 0).ok()
    }

    pub fn vip_stats(&self, id: u32) -> XVipStats {
        self.vip_stats.sum(id)
    }

    pub fn real_stats(&self, id: u32) -> RealStats {
        self.real_stats.sum(id)
    }

    /// The `lx_global` counters, summed over CPUs, by slot.
    pub fn global(&self) -> Vec<u64> {
        (0..layout::LX_COUNTERS.len() as u32)
            .map(|i| self.global.sum(i))
            .collect()
    }
}

/// `BPF_PROG_TEST_RUN` of a loaded program of `ebpf`.
fn test_run(
    ebpf: &Ebpf,
    object: &'static str,
    program: &str,
    packet: &[u8],
    repeat: u32,
) -> Result<sys::TestRun, L4lbError> {
    let fd = program_fd(ebpf, object, program)?;
    sys::bpf::prog_test_run(fd, packet, repeat)
        .map_err(L4lbError::syscall(format!("running {program} on a packet")))
}

fn program_fd<'a>(
    ebpf: &'a Ebpf,
    object: &'static str,
    program: &str,
) -> Result<std::os::fd::BorrowedFd<'a>, L4lbError> {
    Ok(loaded_program(ebpf, object, program)?.as_fd())
}

/// A loaded program of `ebpf`, as aya hands it to a program array.
fn loaded_program<'a>(
    ebpf: &'a Ebpf,
    object: &'static str,
    program: &str,
) -> Result<&'a ProgramFd, L4lbError> {
    let prog = ebpf.program(program).ok_or_else(|| L4lbError::Missing {
        object,
        kind: "program",
        name: program.into(),
    })?;
    prog.fd()
        .map_err(L4lbError::program(program, "reading its fd"))
}

/// Makes `lx_gue_peers` hold exactly `sources`.
fn sync_peers(
    peers: &mut BpfHashMap<MapData, Peer, u32>,
    sources: &[IpAddr],
) -> Result<(), L4lbError> {
    let want: Vec<Peer> = sources
        .iter()
        .map(|ip| {
            let (addr, family) = crate::reconcile::addr_bytes(*ip);
            Peer {
                addr,
                family,
                pad: [0; 3],
            }
        })
        .collect();
    let gone: Vec<Peer> = peers
        .keys()
        .flatten()
        .filter(|p| !want.contains(p))
        .collect();
    for p in gone {
        gone_ok(peers.remove(&p))
            .map_err(L4lbError::io(format!("updating {}", h::LX_MAP_GUE_PEERS)))?;
    }
    for p in &want {
        peers
            .insert(p, 1, 0)
            .map_err(L4lbError::map(h::LX_MAP_GUE_PEERS))?;
    }
    Ok(())
}

/// Sets the filter bit of every VIP in `lx_vips`, and its `lx_vip_live` entry where that is
/// empty: what maps written by an agent from before either existed lack.
fn seed_from_vips(
    vips: &BpfHashMap<MapData, SvcKey, XVip>,
    live: &mut Array<MapData, XVip>,
    filter: &mut Array<MapData, u64>,
) -> Result<(), L4lbError> {
    let all: Vec<(SvcKey, XVip)> = vips.iter().flatten().collect();
    for (w, bits) in crate::xdp::filter_words(all.iter().map(|(k, _)| *k)) {
        let word = filter
            .get(&w, 0)
            .map_err(L4lbError::map(h::LX_MAP_VIP_FILTER))?;
        if word & bits != bits {
            filter
                .set(w, word | bits, 0)
                .map_err(L4lbError::map(h::LX_MAP_VIP_FILTER))?;
        }
    }
    for (_, vip) in all {
        if live.get(&vip.id, 0).is_ok_and(|v| v == XVip::default()) {
            live.set(vip.id, vip, 0)
                .map_err(L4lbError::map(h::LX_MAP_VIP_LIVE))?;
        }
    }
    Ok(())
}

impl XdpMaps for XdpLb {
    fn put_vip(&mut self, key: &SvcKey, vip: &XVip) -> io::Result<()> {
        self.vips.insert(key, vip, 0).map_err(io_error)
    }
    fn delete_vip(&mut self, key: &SvcKey) -> io::Result<()> {
        gone_ok(self.vips.remove(key))
    }
    fn put_live(&mut self, id: u32, vip: &XVip) -> io::Result<()> {
        self.live.set(id, vip, 0).map_err(io_error)
    }
    fn put_filter_word(&mut self, word: u32, bits: u64) -> io::Result<()> {
        self.filter.set(word, bits, 0).map_err(io_error)
    }
    fn put_ring(&mut self, slots: &[(u32, u32)]) -> io::Result<()> {
        // In batches: a new table is up to 65,537 slots, one system call each otherwise.
        for chunk in slots.chunks(16_384) {
            let keys: Vec<u8> = chunk.iter().flat_map(|(k, _)| k.to_ne_bytes()).collect();
            let values: Vec<u8> = chunk.iter().flat_map(|(_, v)| v.to_ne_bytes()).collect();
            sys::bpf::map_update_batch(
                self.ring.map().fd().as_fd(),
                &keys,
                &values,
                chunk.len() as u32,
            )
            .map_err(|e| e.io_error)?;
        }
        Ok(())
    }
    fn put_nat_backend(&mut self, key: &SvcKey, rev: &XRev) -> io::Result<()> {
        self.nat_backends.insert(key, rev, 0).map_err(io_error)
    }
    fn delete_nat_backend(&mut self, key: &SvcKey) -> io::Result<()> {
        gone_ok(self.nat_backends.remove(key))
    }
    fn put_real(&mut self, id: u32, real: &Real) -> io::Result<()> {
        self.reals.set(id, real, 0).map_err(io_error)
    }
    fn reset_vip_stats(&mut self, id: u32) -> io::Result<()> {
        self.vip_stats.reset(id)
    }
    fn reset_real_stats(&mut self, id: u32) -> io::Result<()> {
        self.real_stats.reset(id)
    }
}

/// The benchmark generator's template (`struct gen_tmpl` in xdp_floor.c).
#[repr(C)]
#[derive(Clone, Copy)]
struct GenTemplate {
    frame: [u8; GEN_FRAME],
    base_port: u16,
    flows: u16,
}

// SAFETY: repr(C), integers only, no padding (60 + 2 + 2 bytes).
unsafe impl aya::Pod for GenTemplate {}

/// The size of the generator's frames: Ethernet, IPv4, UDP and 18 bytes.
pub const GEN_FRAME: usize = 60;

/// The benchmark's programs (`xdp_floor.o`): the floor, the backends' sink, and the
/// live-frames generator. Whatever it attached stays attached while it lives.
pub struct Floor {
    ebpf: Ebpf,
    sunk: PerCpuCounters<u64>,
    template: Array<MapData, GenTemplate>,
    next: ProgramArray<MapData>,
}

const FLOOR: &str = "xdp_floor";

impl Floor {
    pub fn load() -> Result<Floor, L4lbError> {
        loader::preflight()?;
        let mut ebpf =
            Ebpf::load(lodestar_ebpf::xdp_floor()).map_err(|source| L4lbError::Load {
                object: FLOOR,
                source: Box::new(source),
            })?;
        for name in [
            "xdp_floor",
            "xdp_sink",
            "xdp_gen",
            "xdp_new_flows",
            "xdp_noop",
        ] {
            loader::program(&mut ebpf, FLOOR, name)?;
        }
        let sunk = PerCpuCounters::take(&mut ebpf, FLOOR, "sink_count")?;
        let template = loader::take_map(&mut ebpf, FLOOR, "gen_cfg")?;
        let next = loader::take_map(&mut ebpf, FLOOR, "bench_next")?;
        Ok(Floor {
            ebpf,
            sunk,
            template,
            next,
        })
    }

    /// Attaches the sink to an interface of the caller's network namespace.
    pub fn attach_sink(&mut self, ifname: &str) -> Result<(), L4lbError> {
        let index = sys::ifindex(ifname).map_err(|source| L4lbError::NoInterface {
            interface: ifname.into(),
            source,
        })?;
        match self.ebpf.program_mut("xdp_sink") {
            Some(Program::Xdp(p)) => p
                .attach_to_if_index(index, aya::programs::XdpFlags::default())
                .map(drop)
                .map_err(L4lbError::program("xdp_sink", "attaching")),
            _ => Err(L4lbError::ProgramType {
                program: "xdp_sink".into(),
            }),
        }
    }

    /// Datagrams the sink dropped, over all CPUs.
    pub fn sunk(&self) -> u64 {
        self.sunk.sum(0)
    }

    /// Sends `frames` copies of `frame` (an IPv4/UDP datagram of [`GEN_FRAME`] bytes with
    /// source port `base_port`, cycling through `flows` source ports) out of `ifname` of the
    /// caller's network namespace, from XDP (live frames). Returns the kernel's ns per frame.
    pub fn generate(
        &mut self,
        ifname: &str,
        frame: &[u8],
        base_port: u16,
        flows: u16,
        frames: u32,
    ) -> Result<u32, L4lbError> {
        self.set_template(frame, base_port, flows)?;
        let index = sys::ifindex(ifname).map_err(|source| L4lbError::NoInterface {
            interface: ifname.into(),
            source,
        })?;
        let fd = program_fd(&self.ebpf, FLOOR, "xdp_gen")?;
        sys::bpf::prog_test_run_live(fd, frame, index, frames, 64)
            .map_err(L4lbError::syscall("generating live frames"))
    }

    pub fn test_run(&self, packet: &[u8], repeat: u32) -> Result<sys::TestRun, L4lbError> {
        test_run(&self.ebpf, FLOOR, "xdp_floor", packet, repeat)
    }

    /// The frame `xdp_gen` and `xdp_new_flows` write into every packet.
    fn set_template(&mut self, frame: &[u8], base_port: u16, flows: u16) -> Result<(), L4lbError> {
        let t = GenTemplate {
            frame: frame.try_into().map_err(|_| L4lbError::Io {
                action: "writing the generator's template".into(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("a template frame is {GEN_FRAME} bytes, not {}", frame.len()),
                ),
            })?,
            base_port: base_port.to_be(),
            flows: flows.max(1),
        };
        self.template
            .set(0, t, 0)
            .map_err(L4lbError::map("gen_cfg"))
    }

    /// Runs `program` (`None`: a program that only drops, to time this wrapper itself) on
    /// `repeat` packets made from `packet` (IPv4, TCP or UDP, [`GEN_FRAME`] bytes), each of a
    /// flow not seen before: `xdp_new_flows` writes the packet again for every run, with the
    /// source address and port counted up, then tail-calls `program`. `per_flow` 2 (TCP): a
    /// new flow every two runs, its SYN and then its first ACK.
    pub fn new_flows(
        &mut self,
        program: Option<&ProgramFd>,
        packet: &[u8],
        repeat: u32,
        per_flow: u16,
    ) -> Result<sys::TestRun, L4lbError> {
        self.set_template(packet, 0, per_flow)?;
        let noop = loaded_program(&self.ebpf, FLOOR, "xdp_noop")?;
        self.next
            .set(0, program.unwrap_or(noop), 0)
            .map_err(L4lbError::map("bench_next"))?;
        test_run(&self.ebpf, FLOOR, "xdp_new_flows", packet, repeat)
    }
}
