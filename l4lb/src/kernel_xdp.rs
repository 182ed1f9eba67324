//! The per-packet load balancer in the kernel: loads `xdp_lb.o`, pins its maps next to the
//! socket load balancer's, attaches XDP (and the tc programs) through BPF links pinned under
//! `links/` (`lx_xdp@eth0`, `lx_tc_revnat@eth0`, `lx_tc_decap@eth1`), swaps new programs into
//! existing links on restart, and exposes the maps to the XDP reconciler.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::path::PathBuf;

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuValues};
use aya::programs::Program;
use aya::{Ebpf, EbpfLoader};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::kernel::{bpf_error, ensure_bpffs, gone_ok, io_err, lock, map_io, L4lbError};
use crate::layout::{
    self, Ct, Flow, Real, RealStats, RingKey, SvcKey, XConfig, XVip, XVipStats, LX_CFG_FIB_FORWARD,
};
use crate::sys;
use crate::xdp::{XDump, XdpMaps};

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
}

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

    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let gue = self.mode == crate::xdp::Mode::Gue
            || self.vips.iter().any(|v| v.mode == crate::xdp::Mode::Gue);
        if gue && self.gue_source_v4.is_none() && self.gue_source_v6.is_none() {
            out.push("l4lb.xdp: GUE mode needs gue_source_v4 or gue_source_v6".into());
        }
        if self.max_table < 101 {
            out.push("l4lb.xdp.max_table must be at least 101".into());
        }
        if self.gue_port == 0 {
            out.push("l4lb.xdp.gue_port must not be 0".into());
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
    ring: BpfHashMap<MapData, RingKey, u32>,
    reals: Array<MapData, Real>,
    vip_stats: PerCpuArray<MapData, XVipStats>,
    real_stats: PerCpuArray<MapData, RealStats>,
    global: PerCpuArray<MapData, u64>,
    cpus: usize,
    /// Links an earlier agent pinned and this one took over.
    pub took_over: usize,
    _lock: Option<File>,
}

const PROGS: [(&str, u32); 3] = [
    ("lx_xdp", sys::BPF_XDP),
    ("lx_tc_revnat", sys::BPF_TCX_EGRESS),
    ("lx_tc_decap", sys::BPF_TCX_INGRESS),
];

impl XdpLb {
    /// Loads the object with its maps pinned in `pin_path` and attaches it as `cfg` says.
    /// `lock`: take the links directory's lock (an agent without the socket path).
    pub fn open(
        pin_path: &std::path::Path,
        cfg: &XdpConfig,
        take_lock: bool,
    ) -> Result<XdpLb, L4lbError> {
        let object = lodestar_ebpf::xdp_lb();
        ensure_bpffs(pin_path)?;
        let links_dir = pin_path.join("links");
        std::fs::create_dir_all(&links_dir)
            .map_err(io_err(format!("creating {}", links_dir.display())))?;
        let lock = if take_lock {
            Some(lock(&links_dir)?)
        } else {
            None
        };
        let mut ebpf = EbpfLoader::new()
            .map_pin_path(pin_path)
            .load(object)
            .map_err(|e| bpf_error("loading the XDP object", &e))?;
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| L4lbError::Bpf(format!("map {name} missing from the object")))
        };
        let vips = BpfHashMap::try_from(take("lx_vips")?).map_err(|e| bpf_error("lx_vips", &e))?;
        let mut live =
            Array::try_from(take("lx_vip_live")?).map_err(|e| bpf_error("lx_vip_live", &e))?;
        let mut filter =
            Array::try_from(take("lx_vip_filter")?).map_err(|e| bpf_error("lx_vip_filter", &e))?;
        let ct = BpfHashMap::try_from(take("lx_ct")?).map_err(|e| bpf_error("lx_ct", &e))?;
        let ring = BpfHashMap::try_from(take("lx_ring")?).map_err(|e| bpf_error("lx_ring", &e))?;
        let reals = Array::try_from(take("lx_reals")?).map_err(|e| bpf_error("lx_reals", &e))?;
        let vip_stats = PerCpuArray::try_from(take("lx_vip_stats")?)
            .map_err(|e| bpf_error("lx_vip_stats", &e))?;
        let real_stats = PerCpuArray::try_from(take("lx_real_stats")?)
            .map_err(|e| bpf_error("lx_real_stats", &e))?;
        let global =
            PerCpuArray::try_from(take("lx_global")?).map_err(|e| bpf_error("lx_global", &e))?;
        let mut config: Array<MapData, XConfig> =
            Array::try_from(take("lx_config")?).map_err(|e| bpf_error("lx_config", &e))?;
        // Maps of an agent from before the VIP filter and generations: a program swapped into
        // the pinned links must find every VIP through the filter before the first apply.
        seed_from_vips(&vips, &mut live, &mut filter)?;
        // GUE packets leave from this node's own address. When the FIB cannot forward them
        // from XDP (no resolved neighbour yet, or fib_forward off) the kernel does, and it
        // would drop a received packet whose source is local as a martian: accept_local.
        let gue = cfg.mode == crate::xdp::Mode::Gue
            || cfg.vips.iter().any(|v| v.mode == crate::xdp::Mode::Gue);
        if gue {
            for ifname in &cfg.interfaces {
                let knob = format!("/proc/sys/net/ipv4/conf/{ifname}/accept_local");
                if let Err(e) = std::fs::write(&knob, "1") {
                    warn!(
                        "cannot set {knob} (GUE packets the kernel forwards may be dropped): {e}"
                    );
                }
            }
        }
        let mut took_over = 0;
        let mut wanted: Vec<PathBuf> = Vec::new();
        for (name, attach_type) in PROGS {
            let ifaces = match name {
                "lx_xdp" => &cfg.interfaces,
                "lx_tc_revnat" => &cfg.nat_reply_interfaces,
                _ => &cfg.decap_interfaces,
            };
            let prog = ebpf
                .program_mut(name)
                .ok_or_else(|| L4lbError::Bpf(format!("program {name} missing from the object")))?;
            match prog {
                Program::Xdp(p) => p.load(),
                Program::SchedClassifier(p) => p.load(),
                _ => return Err(L4lbError::Bpf(format!("program {name}: unexpected type"))),
            }
            .map_err(|e| bpf_error(name, &e))?;
            let prog_fd = prog.fd().map_err(|e| bpf_error(name, &e))?.as_fd();
            for ifname in ifaces {
                let index = sys::ifindex(ifname).map_err(|e| {
                    L4lbError::Missing(format!("l4lb.xdp: interface {ifname}: {e}"))
                })?;
                let pin = links_dir.join(format!("{name}@{ifname}"));
                wanted.push(pin.clone());
                if let Ok(link) = sys::obj_get(&pin) {
                    if sys::link_update(link.as_fd(), prog_fd).is_ok() {
                        took_over += 1;
                        continue;
                    }
                    warn!(link = %pin.display(), "replacing a pinned link that would not update");
                    let _ = std::fs::remove_file(&pin);
                }
                let link = sys::link_create_raw(prog_fd, index, attach_type)
                    .map_err(io_err(format!("attaching {name} to {ifname}")))?;
                sys::pin(link.as_fd(), &pin)
                    .map_err(io_err(format!("pinning {}", pin.display())))?;
            }
        }
        // Links for interfaces no longer configured go (which detaches them).
        if let Ok(entries) = std::fs::read_dir(&links_dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with("lx_") && !wanted.contains(&e.path()) {
                    let _ = std::fs::remove_file(e.path());
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
            ..XConfig::default()
        };
        if let Some(v4) = cfg.gue_source_v4 {
            xc.gue_src4 = v4.octets();
        }
        if let Some(v6) = cfg.gue_source_v6 {
            xc.gue_src6 = v6.octets();
        }
        config
            .set(0, xc, 0)
            .map_err(|e| bpf_error("lx_config", &e))?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| L4lbError::Io {
            what: "counting possible CPUs".into(),
            source: e,
        })?;
        Ok(XdpLb {
            ebpf,
            vips,
            live,
            filter,
            ct,
            ring,
            reals,
            vip_stats,
            real_stats,
            global,
            cpus,
            took_over,
            _lock: lock,
        })
    }

    /// Runs one of the object's programs on a packet (`BPF_PROG_TEST_RUN`): fixtures and the
    /// per-packet cost benchmark.
    pub fn test_run(&self, program: &str, packet: &[u8], repeat: u32) -> io::Result<sys::TestRun> {
        let prog = self
            .ebpf
            .program(program)
            .ok_or_else(|| io::Error::other(format!("no program {program}")))?;
        let fd = prog.fd().map_err(|e| io::Error::other(e.to_string()))?;
        sys::prog_test_run(fd.as_fd(), packet, repeat)
    }

    pub fn dump(&self) -> XDump {
        let mut d = XDump::default();
        d.vips.extend(self.vips.iter().flatten());
        d.ring.extend(self.ring.iter().flatten());
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
        d
    }

    /// The shared tracking table's entry for a flow (inspection and tests).
    pub fn flow(&self, flow: &Flow) -> Option<Ct> {
        self.ct.get(flow, 0).ok()
    }

    /// Writes a flow's entry in the shared tracking table (tests).
    pub fn set_flow(&mut self, flow: &Flow, ct: &Ct) -> io::Result<()> {
        self.ct.insert(flow, ct, 0).map_err(map_io)
    }

    /// Removes a flow from the shared tracking table (the CPUs' caches keep theirs).
    pub fn remove_flow(&mut self, flow: &Flow) -> io::Result<()> {
        gone_ok(self.ct.remove(flow))
    }

    pub fn vip_stats(&self, id: u32) -> XVipStats {
        let mut s = XVipStats::default();
        if let Ok(v) = self.vip_stats.get(&id, 0) {
            for c in v.iter() {
                s.packets += c.packets;
                s.bytes += c.bytes;
                s.new_flows += c.new_flows;
                s.lru_misses += c.lru_misses;
            }
        }
        s
    }

    pub fn real_stats(&self, id: u32) -> RealStats {
        let mut s = RealStats::default();
        if let Ok(v) = self.real_stats.get(&id, 0) {
            for c in v.iter() {
                s.packets += c.packets;
                s.bytes += c.bytes;
                s.new_flows += c.new_flows;
            }
        }
        s
    }

    /// The `lx_global` counters, summed over CPUs, by slot.
    pub fn global(&self) -> Vec<u64> {
        (0..layout::LX_COUNTERS.len() as u32)
            .map(|i| self.global.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0))
            .collect()
    }
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
            .map_err(|e| bpf_error("lx_vip_filter", &e))?;
        if word & bits != bits {
            filter
                .set(w, word | bits, 0)
                .map_err(|e| bpf_error("lx_vip_filter", &e))?;
        }
    }
    for (_, vip) in all {
        if live.get(&vip.id, 0).is_ok_and(|v| v == XVip::default()) {
            live.set(vip.id, vip, 0)
                .map_err(|e| bpf_error("lx_vip_live", &e))?;
        }
    }
    Ok(())
}

impl XdpMaps for XdpLb {
    fn put_vip(&mut self, key: &SvcKey, vip: &XVip) -> io::Result<()> {
        self.vips.insert(key, vip, 0).map_err(map_io)
    }
    fn delete_vip(&mut self, key: &SvcKey) -> io::Result<()> {
        gone_ok(self.vips.remove(key))
    }
    fn put_live(&mut self, id: u32, vip: &XVip) -> io::Result<()> {
        self.live.set(id, vip, 0).map_err(map_io)
    }
    fn put_filter_word(&mut self, word: u32, bits: u64) -> io::Result<()> {
        self.filter.set(word, bits, 0).map_err(map_io)
    }
    fn put_slot(&mut self, key: &RingKey, real: u32) -> io::Result<()> {
        self.ring.insert(key, real, 0).map_err(map_io)
    }
    fn delete_slot(&mut self, key: &RingKey) -> io::Result<()> {
        gone_ok(self.ring.remove(key))
    }
    fn put_real(&mut self, id: u32, real: &Real) -> io::Result<()> {
        self.reals.set(id, real, 0).map_err(map_io)
    }
    fn reset_vip_stats(&mut self, id: u32) -> io::Result<()> {
        let zero = PerCpuValues::try_from(vec![XVipStats::default(); self.cpus])
            .map_err(io::Error::other)?;
        self.vip_stats.set(id, zero, 0).map_err(map_io)
    }
    fn reset_real_stats(&mut self, id: u32) -> io::Result<()> {
        let zero = PerCpuValues::try_from(vec![RealStats::default(); self.cpus])
            .map_err(io::Error::other)?;
        self.real_stats.set(id, zero, 0).map_err(map_io)
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
/// live-frames generator.
pub struct Floor(Ebpf);

impl Floor {
    pub fn load() -> Result<Floor, L4lbError> {
        let mut ebpf = Ebpf::load(lodestar_ebpf::xdp_floor())
            .map_err(|e| bpf_error("loading the floor program", &e))?;
        for name in ["xdp_floor", "xdp_sink", "xdp_gen"] {
            match ebpf.program_mut(name) {
                Some(Program::Xdp(p)) => p.load().map_err(|e| bpf_error(name, &e))?,
                _ => return Err(L4lbError::Bpf(format!("{name} missing"))),
            }
        }
        Ok(Floor(ebpf))
    }

    /// Attaches the sink to an interface of the caller's network namespace; attached while the
    /// returned link lives.
    pub fn attach_sink(&self, ifname: &str) -> io::Result<std::os::fd::OwnedFd> {
        let prog = self.0.program("xdp_sink").expect("loaded");
        let fd = prog.fd().map_err(|e| io::Error::other(e.to_string()))?;
        sys::link_create_raw(fd.as_fd(), sys::ifindex(ifname)?, sys::BPF_XDP)
    }

    /// Datagrams the sink dropped, over all CPUs.
    pub fn sunk(&self) -> u64 {
        let map = self.0.map("sink_count").expect("sink_count");
        let counts: PerCpuArray<&MapData, u64> = match PerCpuArray::try_from(map) {
            Ok(c) => c,
            Err(_) => return 0,
        };
        counts.get(&0, 0).map(|v| v.iter().sum()).unwrap_or(0)
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
    ) -> io::Result<u32> {
        let mut t = GenTemplate {
            frame: [0; GEN_FRAME],
            base_port: base_port.to_be(),
            flows: flows.max(1),
        };
        if frame.len() != GEN_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a generator frame is {GEN_FRAME} bytes, not {}",
                    frame.len()
                ),
            ));
        }
        t.frame.copy_from_slice(frame);
        let map = self.0.map_mut("gen_cfg").expect("gen_cfg");
        let mut cfg: Array<&mut MapData, GenTemplate> =
            Array::try_from(map).map_err(|e| io::Error::other(e.to_string()))?;
        cfg.set(0, t, 0).map_err(map_io)?;
        let prog = self.0.program("xdp_gen").expect("loaded");
        let fd = prog.fd().map_err(|e| io::Error::other(e.to_string()))?;
        sys::prog_test_run_live(fd.as_fd(), frame, sys::ifindex(ifname)?, frames, 64)
    }

    pub fn test_run(&self, packet: &[u8], repeat: u32) -> io::Result<sys::TestRun> {
        let prog = self.0.program("xdp_floor").expect("loaded");
        let fd = prog.fd().map_err(|e| io::Error::other(e.to_string()))?;
        sys::prog_test_run(fd.as_fd(), packet, repeat)
    }
}
