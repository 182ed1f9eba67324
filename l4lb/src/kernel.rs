//! The socket load balancer in the kernel: `sock_lb.o` loaded (`loader`), its maps pinned as
//! `ls_*` in the pin directory, its programs attached to one cgroup through pinned links
//! (`attach::cgroup`), and its maps for the reconciler (`MapWriter`) and for status.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;

use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use aya::Ebpf;
use aya_obj::generated::bpf_attach_type as at;
use lodestar_ebpf::header as h;

use crate::error::L4lbError;
use crate::layout::{
    self, BackendEntry, BackendStats, Config, Health, Object, SlotKey, Svc, SvcKey, SvcStats,
};
use crate::maps::percpu::PerCpuCounters;
use crate::maps::{gone_ok, io_error};
use crate::pin::PinDir;
use crate::reconcile::{Dump, MapWriter};
use crate::{loader, sys};
use tracing::warn;

/// The programs and the hook each is attached to.
pub const PROGRAMS: [(&str, at); 9] = [
    ("ls_connect4", at::BPF_CGROUP_INET4_CONNECT),
    ("ls_connect6", at::BPF_CGROUP_INET6_CONNECT),
    ("ls_sendmsg4", at::BPF_CGROUP_UDP4_SENDMSG),
    ("ls_sendmsg6", at::BPF_CGROUP_UDP6_SENDMSG),
    ("ls_recvmsg4", at::BPF_CGROUP_UDP4_RECVMSG),
    ("ls_recvmsg6", at::BPF_CGROUP_UDP6_RECVMSG),
    ("ls_getpeername4", at::BPF_CGROUP_INET4_GETPEERNAME),
    ("ls_getpeername6", at::BPF_CGROUP_INET6_GETPEERNAME),
    ("ls_sockops", at::BPF_CGROUP_SOCK_OPS),
];

#[derive(Clone, Debug)]
pub struct KernelConfig {
    /// The cgroup v2 directory the hooks attach to; None: the root of the cgroup2 mount.
    pub cgroup: Option<PathBuf>,
    pub pin_path: PathBuf,
    /// Consecutive failed connects that make the BPF side pass over a backend; 0: off.
    pub passive_fail_threshold: u32,
    /// How long a failing backend is passed over before it is tried again.
    pub passive_hold: std::time::Duration,
}

/// The root of the cgroup v2 hierarchy, from `/proc/mounts` (it is not always at
/// `/sys/fs/cgroup`).
pub fn cgroup2_root() -> Result<PathBuf, L4lbError> {
    let mounts =
        std::fs::read_to_string("/proc/mounts").map_err(L4lbError::io("reading /proc/mounts"))?;
    mounts
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fs) = (f.next()?, f.next()?, f.next()?);
            (fs == "cgroup2").then(|| PathBuf::from(dir.replace("\\040", " ")))
        })
        .ok_or(L4lbError::NoCgroup2)
}

pub struct SockLb {
    _ebpf: Ebpf,
    services: BpfHashMap<MapData, SvcKey, Svc>,
    slots: BpfHashMap<MapData, SlotKey, u32>,
    backends: Array<MapData, BackendEntry>,
    svc_stats: PerCpuCounters<SvcStats>,
    be_stats: PerCpuCounters<BackendStats>,
    health: BpfHashMap<MapData, SvcKey, Health>,
    fail_threshold: u32,
    hold_ns: u64,
    pub cgroup: PathBuf,
    /// Links found pinned (an earlier agent's) and taken over.
    pub took_over: usize,
}

impl SockLb {
    /// Loads and attaches the programs (or takes over the pinned ones) in `pins`, whose lock
    /// the caller holds. The maps keep what an earlier agent wrote; read it with `dump`.
    pub fn open(cfg: &KernelConfig, pins: &PinDir) -> Result<SockLb, L4lbError> {
        let object = Object::SockLb.name();
        loader::preflight()?;
        let cgroup = match &cfg.cgroup {
            Some(c) => c.clone(),
            None => cgroup2_root()?,
        };
        if sys::fs_magic(&cgroup).ok() != Some(sys::CGROUP2_SUPER_MAGIC) {
            return Err(L4lbError::NotCgroup2 { path: cgroup });
        }
        let mut ebpf = loader::load(Object::SockLb, pins)?;
        let cgroup_dir =
            File::open(&cgroup).map_err(L4lbError::io(format!("opening {}", cgroup.display())))?;
        let cgroup_id = sys::cgroup_id(&cgroup).map_err(L4lbError::io("reading the cgroup id"))?;
        // This process's sockets are never steered (sock_lb.c's from_agent). Written before
        // any program is attached: a takeover's new programs see it from their first call.
        let agent_tgid = sys::bpf_visible_pid().unwrap_or_else(|| {
            warn!(
                "the agent is not in the initial PID namespace: the hooks cannot tell its own \
                 sockets apart, so VIPs steer them too (run it in the host's PID namespace)"
            );
            0
        });
        let mut config: Array<MapData, Config> =
            loader::take_map(&mut ebpf, object, h::LS_MAP_CONFIG)?;
        let hold_ns = cfg.passive_hold.as_nanos() as u64;
        config
            .set(
                0,
                Config {
                    fail_threshold: cfg.passive_fail_threshold,
                    agent_tgid,
                    hold_ns,
                },
                0,
            )
            .map_err(L4lbError::map(h::LS_MAP_CONFIG))?;
        let mut took_over = 0;
        for (name, attach_type) in PROGRAMS {
            let prog = loader::program(&mut ebpf, object, name)?;
            let fd = prog
                .fd()
                .map_err(L4lbError::program(name, "reading its fd"))?;
            let pin = pins.link(name);
            let taken = crate::attach::cgroup::attach(
                fd.as_fd(),
                name,
                cgroup_dir.as_fd(),
                cgroup_id,
                attach_type,
                &pin,
            )?;
            took_over += usize::from(taken);
        }
        Ok(SockLb {
            services: loader::take_map(&mut ebpf, object, h::LS_MAP_SERVICES)?,
            slots: loader::take_map(&mut ebpf, object, h::LS_MAP_SLOTS)?,
            backends: loader::take_map(&mut ebpf, object, h::LS_MAP_BACKENDS)?,
            svc_stats: PerCpuCounters::take(&mut ebpf, object, h::LS_MAP_SVC_STATS)?,
            be_stats: PerCpuCounters::take(&mut ebpf, object, h::LS_MAP_BE_STATS)?,
            health: loader::take_map(&mut ebpf, object, h::LS_MAP_HEALTH)?,
            _ebpf: ebpf,
            fail_threshold: cfg.passive_fail_threshold,
            hold_ns,
            cgroup,
            took_over,
        })
    }

    /// Everything the maps hold (an earlier agent's state, at takeover).
    pub fn dump(&self) -> Dump {
        let mut d = Dump::default();
        d.services.extend(self.services.iter().flatten());
        d.slots.extend(self.slots.iter().flatten());
        d.watched.extend(self.health.keys().flatten());
        for (i, b) in self.backends.iter().enumerate() {
            if let Ok(b) = b {
                if b.flags & layout::BE_VALID != 0 {
                    d.backends.push((i as u32, b));
                }
            }
        }
        d
    }

    /// A service's counters, summed over CPUs.
    pub fn service_stats(&self, id: u32) -> SvcStats {
        self.svc_stats.sum(id)
    }

    /// A backend's counters, summed over CPUs.
    pub fn backend_stats(&self, id: u32) -> BackendStats {
        self.be_stats.sum(id)
    }

    /// A backend address's passive health, and whether the BPF side passes over it now.
    pub fn passive(&self, key: &SvcKey) -> (Health, bool) {
        let h = self.health.get(key, 0).unwrap_or_default();
        let failing = self.fail_threshold > 0
            && h.consecutive_fails >= self.fail_threshold
            && sys::monotonic_ns().saturating_sub(h.last_fail_ns) <= self.hold_ns;
        (h, failing)
    }
}

impl MapWriter for SockLb {
    fn put_service(&mut self, key: &SvcKey, svc: &Svc) -> io::Result<()> {
        self.services.insert(key, svc, 0).map_err(io_error)
    }
    fn delete_service(&mut self, key: &SvcKey) -> io::Result<()> {
        gone_ok(self.services.remove(key))
    }
    fn put_slot(&mut self, key: &SlotKey, backend: u32) -> io::Result<()> {
        self.slots.insert(key, backend, 0).map_err(io_error)
    }
    fn delete_slot(&mut self, key: &SlotKey) -> io::Result<()> {
        gone_ok(self.slots.remove(key))
    }
    fn put_backend(&mut self, id: u32, entry: &BackendEntry) -> io::Result<()> {
        self.backends.set(id, entry, 0).map_err(io_error)
    }
    fn reset_service_stats(&mut self, id: u32) -> io::Result<()> {
        self.svc_stats.reset(id)
    }
    fn watch_backend(&mut self, key: &SvcKey) -> io::Result<()> {
        // BPF_NOEXIST: an entry a previous agent left keeps its history.
        match self.health.insert(key, Health::default(), 1) {
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::EEXIST) =>
            {
                Ok(())
            }
            r => r.map_err(io_error),
        }
    }
    fn unwatch_backend(&mut self, key: &SvcKey) -> io::Result<()> {
        gone_ok(self.health.remove(key))
    }
    fn reset_backend_stats(&mut self, id: u32) -> io::Result<()> {
        self.be_stats.reset(id)
    }
}
