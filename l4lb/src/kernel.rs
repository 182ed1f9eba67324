//! The socket load balancer in the kernel: loads `sock_lb.o` with aya, pins its maps and links
//! under one directory on bpffs, takes over what an earlier agent pinned, and detaches.
//!
//! Pin directory layout (default `/sys/fs/bpf/lodestar`):
//! - `ls_*`: the maps (`ebpf/include/lodestar.h`);
//! - `links/<program>`: the cgroup links, which keep the programs attached while no agent runs.
//!
//! The agent holds an exclusive `flock` on the pin directory while it runs, so a second agent
//! on the node (or a `detach` under a running agent) is refused.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuValues};
use aya::programs::Program;
use aya::{Ebpf, EbpfLoader};
use tracing::{info, warn};

use crate::layout::{
    self, BackendEntry, BackendStats, Config, Health, SlotKey, Svc, SvcKey, SvcStats,
};
use crate::reconcile::{Dump, MapWriter};
use crate::sys;

pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/lodestar";

/// The programs and the hook each is attached to.
pub const PROGRAMS: [(&str, u32); 9] = [
    ("ls_connect4", sys::BPF_CGROUP_INET4_CONNECT),
    ("ls_connect6", sys::BPF_CGROUP_INET6_CONNECT),
    ("ls_sendmsg4", sys::BPF_CGROUP_UDP4_SENDMSG),
    ("ls_sendmsg6", sys::BPF_CGROUP_UDP6_SENDMSG),
    ("ls_recvmsg4", sys::BPF_CGROUP_UDP4_RECVMSG),
    ("ls_recvmsg6", sys::BPF_CGROUP_UDP6_RECVMSG),
    ("ls_getpeername4", sys::BPF_CGROUP_INET4_GETPEERNAME),
    ("ls_getpeername6", sys::BPF_CGROUP_INET6_GETPEERNAME),
    ("ls_sockops", sys::BPF_CGROUP_SOCK_OPS),
];

/// Why the load balancer could not start, said so an operator knows what to fix.
#[derive(Debug, thiserror::Error)]
pub enum L4lbError {
    #[error("{0}")]
    Missing(String),
    #[error("another lodestar agent is running on this node: it holds {0} (stop it first)")]
    Busy(PathBuf),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("BPF: {0}")]
    Bpf(String),
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> L4lbError {
    let what = what.into();
    move |source| {
        if source.raw_os_error() == Some(libc::EPERM) || source.raw_os_error() == Some(libc::EACCES)
        {
            L4lbError::Missing(format!(
                "{what}: permission denied: the VIP load balancer needs root \
                 (CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN)"
            ))
        } else {
            L4lbError::Io { what, source }
        }
    }
}

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
    let mounts = std::fs::read_to_string("/proc/mounts").map_err(io_err("reading /proc/mounts"))?;
    mounts
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fs) = (f.next()?, f.next()?, f.next()?);
            (fs == "cgroup2").then(|| PathBuf::from(dir.replace("\\040", " ")))
        })
        .ok_or_else(|| {
            L4lbError::Missing(
                "no cgroup v2 hierarchy is mounted (nothing of type cgroup2 in /proc/mounts); \
                 the socket load balancer attaches there"
                    .into(),
            )
        })
}

/// The capabilities the load balancer needs that this process lacks (from /proc/self/status).
pub fn missing_capabilities() -> Vec<&'static str> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let Some(eff) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
    else {
        return Vec::new();
    };
    let has = |c: u32| eff & (1u64 << c) != 0;
    let mut out = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        out.push("CAP_BPF (or CAP_SYS_ADMIN)");
    }
    if !has(CAP_NET_ADMIN) {
        out.push("CAP_NET_ADMIN");
    }
    out
}

/// Makes sure the pin directory is on bpffs, mounting bpffs at its parent if nothing is there.
pub(crate) fn ensure_bpffs(pin: &Path) -> Result<(), L4lbError> {
    let parent = pin.parent().unwrap_or(Path::new("/"));
    if sys::fs_magic(parent).ok() == Some(sys::BPF_FS_MAGIC) {
        return Ok(());
    }
    std::fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
    if sys::fs_magic(parent).ok() == Some(sys::BPF_FS_MAGIC) {
        return Ok(());
    }
    sys::mount_bpffs(parent).map_err(|e| {
        L4lbError::Missing(format!(
            "{} is not on a BPF filesystem and mounting one there failed ({e}); \
             mount it with: mount -t bpf bpf {}",
            parent.display(),
            parent.display()
        ))
    })?;
    info!(path = %parent.display(), "mounted bpffs");
    Ok(())
}

/// Takes the pin directory's lock, or says who holds it.
pub(crate) fn lock(pin: &Path) -> Result<File, L4lbError> {
    let dir = File::open(pin).map_err(io_err(format!("opening {}", pin.display())))?;
    // SAFETY: flock on an open descriptor.
    if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            L4lbError::Busy(pin.to_path_buf())
        } else {
            io_err(format!("locking {}", pin.display()))(e)
        });
    }
    Ok(dir)
}

pub struct SockLb {
    _ebpf: Ebpf,
    services: BpfHashMap<MapData, SvcKey, Svc>,
    slots: BpfHashMap<MapData, SlotKey, u32>,
    backends: Array<MapData, BackendEntry>,
    svc_stats: PerCpuArray<MapData, SvcStats>,
    be_stats: PerCpuArray<MapData, BackendStats>,
    health: BpfHashMap<MapData, SvcKey, Health>,
    cpus: usize,
    fail_threshold: u32,
    hold_ns: u64,
    pub cgroup: PathBuf,
    pub pin_path: PathBuf,
    /// Links found pinned (an earlier agent's) and taken over.
    pub took_over: usize,
    _lock: Option<File>,
}

impl SockLb {
    /// Loads and attaches the programs (or takes over the pinned ones). The maps keep what an
    /// earlier agent wrote; read it with `dump`.
    /// `take_lock`: take the pin directory's lock (false when the caller holds it).
    pub fn open(cfg: &KernelConfig, take_lock: bool) -> Result<SockLb, L4lbError> {
        let object = lodestar_ebpf::sock_lb();
        layout::verify_objects(&[object, lodestar_ebpf::xdp_lb()]).map_err(|p| {
            L4lbError::Bpf(format!(
                "the compiled object does not match the Rust layout: {}",
                p.join("; ")
            ))
        })?;
        let missing = missing_capabilities();
        if !missing.is_empty() {
            return Err(L4lbError::Missing(format!(
                "the VIP load balancer needs root: this process lacks {}",
                missing.join(" and ")
            )));
        }
        let cgroup = match &cfg.cgroup {
            Some(c) => c.clone(),
            None => cgroup2_root()?,
        };
        if sys::fs_magic(&cgroup).ok() != Some(sys::CGROUP2_SUPER_MAGIC) {
            return Err(L4lbError::Missing(format!(
                "{} is not a cgroup v2 directory",
                cgroup.display()
            )));
        }
        ensure_bpffs(&cfg.pin_path)?;
        let links_dir = cfg.pin_path.join("links");
        std::fs::create_dir_all(&links_dir)
            .map_err(io_err(format!("creating {}", links_dir.display())))?;
        let lock = if take_lock {
            Some(lock(&cfg.pin_path)?)
        } else {
            None
        };

        let mut ebpf = EbpfLoader::new()
            .map_pin_path(&cfg.pin_path)
            .load(object)
            .map_err(|e| bpf_error("loading the BPF object", &e))?;
        let cgroup_dir =
            File::open(&cgroup).map_err(io_err(format!("opening {}", cgroup.display())))?;
        let cgroup_id = sys::cgroup_id(&cgroup).map_err(io_err("reading the cgroup id"))?;
        let mut took_over = 0;
        for (name, attach_type) in PROGRAMS {
            let prog = ebpf
                .program_mut(name)
                .ok_or_else(|| L4lbError::Bpf(format!("program {name} missing from the object")))?;
            match prog {
                Program::CgroupSockAddr(p) => p.load(),
                Program::SockOps(p) => p.load(),
                _ => {
                    return Err(L4lbError::Bpf(format!(
                        "program {name} has an unexpected type"
                    )))
                }
            }
            .map_err(|e| bpf_error(name, &e))?;
            let prog_fd = prog.fd().map_err(|e| bpf_error(name, &e))?.as_fd();
            let pin = links_dir.join(name);
            // An earlier agent's link on the same cgroup and hook: swap the program in place,
            // so the hook never goes missing. Anything else pinned there is replaced.
            if let Ok(link) = sys::obj_get(&pin) {
                let same = sys::cgroup_link_info(link.as_fd())
                    .is_ok_and(|(_, _, cg, at)| cg == cgroup_id && at == attach_type);
                if same && sys::link_update(link.as_fd(), prog_fd).is_ok() {
                    took_over += 1;
                    continue;
                }
                warn!(link = %pin.display(), "replacing a pinned link for another cgroup or hook");
                let _ = std::fs::remove_file(&pin);
            }
            let link = sys::link_create(prog_fd, cgroup_dir.as_fd(), attach_type)
                .map_err(io_err(format!("attaching {name} to {}", cgroup.display())))?;
            sys::pin(link.as_fd(), &pin).map_err(io_err(format!("pinning {}", pin.display())))?;
        }

        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| L4lbError::Bpf(format!("map {name} missing from the object")))
        };
        let services = BpfHashMap::try_from(take(layout::maps::SERVICES)?)
            .map_err(|e| bpf_error("ls_services", &e))?;
        let slots = BpfHashMap::try_from(take(layout::maps::SLOTS)?)
            .map_err(|e| bpf_error("ls_slots", &e))?;
        let backends = Array::try_from(take(layout::maps::BACKENDS)?)
            .map_err(|e| bpf_error("ls_backends", &e))?;
        let svc_stats = PerCpuArray::try_from(take(layout::maps::SVC_STATS)?)
            .map_err(|e| bpf_error("ls_svc_stats", &e))?;
        let be_stats = PerCpuArray::try_from(take(layout::maps::BE_STATS)?)
            .map_err(|e| bpf_error("ls_be_stats", &e))?;
        let health = BpfHashMap::try_from(take(layout::maps::HEALTH)?)
            .map_err(|e| bpf_error("ls_health", &e))?;
        let mut config: Array<MapData, Config> =
            Array::try_from(take(layout::maps::CONFIG)?).map_err(|e| bpf_error("ls_config", &e))?;
        config
            .set(
                0,
                Config {
                    fail_threshold: cfg.passive_fail_threshold,
                    pad: 0,
                    hold_ns: cfg.passive_hold.as_nanos() as u64,
                },
                0,
            )
            .map_err(|e| bpf_error("ls_config", &e))?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| L4lbError::Io {
            what: "counting possible CPUs".into(),
            source: e,
        })?;
        Ok(SockLb {
            _ebpf: ebpf,
            services,
            slots,
            backends,
            svc_stats,
            be_stats,
            health,
            cpus,
            fail_threshold: cfg.passive_fail_threshold,
            hold_ns: cfg.passive_hold.as_nanos() as u64,
            cgroup,
            pin_path: cfg.pin_path.clone(),
            took_over,
            _lock: lock,
        })
    }

    /// Everything the maps hold (an earlier agent's state, at takeover).
    pub fn dump(&self) -> Dump {
        let mut d = Dump::default();
        for (k, v) in self.services.iter().flatten() {
            d.services.push((k, v));
        }
        for (k, v) in self.slots.iter().flatten() {
            d.slots.push((k, v));
        }
        for k in self.health.keys().flatten() {
            d.watched.push(k);
        }
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
        let mut s = SvcStats::default();
        if let Ok(v) = self.svc_stats.get(&id, 0) {
            for c in v.iter() {
                s.connects += c.connects;
                s.datagrams += c.datagrams;
                s.no_backend += c.no_backend;
                s.fail_open += c.fail_open;
                s.skipped += c.skipped;
            }
        }
        s
    }

    /// A backend address's passive health, and whether the BPF side passes over it now.
    pub fn passive(&self, key: &SvcKey) -> (Health, bool) {
        let h = self.health.get(key, 0).unwrap_or_default();
        let failing = self.fail_threshold > 0
            && h.consecutive_fails >= self.fail_threshold
            && sys::monotonic_ns().saturating_sub(h.last_fail_ns) <= self.hold_ns;
        (h, failing)
    }

    /// A backend's counters, summed over CPUs.
    pub fn backend_stats(&self, id: u32) -> BackendStats {
        let mut s = BackendStats::default();
        if let Ok(v) = self.be_stats.get(&id, 0) {
            for c in v.iter() {
                s.connects += c.connects;
                s.datagrams += c.datagrams;
            }
        }
        s
    }
}

pub(crate) fn bpf_error(what: &str, e: &dyn std::error::Error) -> L4lbError {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    if text.contains("Operation not permitted") || text.contains("EPERM") {
        return L4lbError::Missing(format!(
            "{what}: {text}: the VIP load balancer needs root (CAP_BPF, CAP_NET_ADMIN and \
             CAP_SYS_ADMIN)"
        ));
    }
    L4lbError::Bpf(format!("{what}: {text}"))
}

/// A delete of something already gone is a success.
pub(crate) fn gone_ok(r: Result<(), aya::maps::MapError>) -> io::Result<()> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        r => r.map_err(map_io),
    }
}

pub(crate) fn map_io(e: aya::maps::MapError) -> io::Error {
    io::Error::other(e.to_string())
}

impl MapWriter for SockLb {
    fn put_service(&mut self, key: &SvcKey, svc: &Svc) -> io::Result<()> {
        self.services.insert(key, svc, 0).map_err(map_io)
    }
    fn delete_service(&mut self, key: &SvcKey) -> io::Result<()> {
        gone_ok(self.services.remove(key))
    }
    fn put_slot(&mut self, key: &SlotKey, backend: u32) -> io::Result<()> {
        self.slots.insert(key, backend, 0).map_err(map_io)
    }
    fn delete_slot(&mut self, key: &SlotKey) -> io::Result<()> {
        gone_ok(self.slots.remove(key))
    }
    fn put_backend(&mut self, id: u32, entry: &BackendEntry) -> io::Result<()> {
        self.backends.set(id, entry, 0).map_err(map_io)
    }
    fn reset_service_stats(&mut self, id: u32) -> io::Result<()> {
        let zero = PerCpuValues::try_from(vec![SvcStats::default(); self.cpus])
            .map_err(io::Error::other)?;
        self.svc_stats.set(id, zero, 0).map_err(map_io)
    }
    fn watch_backend(&mut self, key: &SvcKey) -> io::Result<()> {
        // BPF_NOEXIST: an entry a previous agent left keeps its history.
        match self.health.insert(key, Health::default(), 1) {
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::EEXIST) =>
            {
                Ok(())
            }
            r => r.map_err(map_io),
        }
    }
    fn unwatch_backend(&mut self, key: &SvcKey) -> io::Result<()> {
        gone_ok(self.health.remove(key))
    }
    fn reset_backend_stats(&mut self, id: u32) -> io::Result<()> {
        let zero = PerCpuValues::try_from(vec![BackendStats::default(); self.cpus])
            .map_err(io::Error::other)?;
        self.be_stats.set(id, zero, 0).map_err(map_io)
    }
}

/// What `detach` removed.
#[derive(Debug, Default)]
pub struct Detached {
    pub links: usize,
    pub maps: usize,
}

/// Removes every trace of the socket load balancer: unpins the links (which detaches the
/// programs) and the maps, and removes the pin directory. Refused while an agent runs.
pub fn detach(pin: &Path) -> Result<Detached, L4lbError> {
    let mut out = Detached::default();
    if !pin.exists() {
        return Ok(out);
    }
    let _lock = lock(pin)?;
    let links = pin.join("links");
    // An agent running only the XDP path holds the links directory.
    let _xdp_lock = if links.exists() {
        Some(lock(&links)?)
    } else {
        None
    };
    if let Ok(entries) = std::fs::read_dir(&links) {
        for e in entries.flatten() {
            std::fs::remove_file(e.path())
                .map_err(io_err(format!("removing {}", e.path().display())))?;
            out.links += 1;
        }
        std::fs::remove_dir(&links).map_err(io_err(format!("removing {}", links.display())))?;
    }
    for e in std::fs::read_dir(pin)
        .map_err(io_err(format!("reading {}", pin.display())))?
        .flatten()
    {
        std::fs::remove_file(e.path())
            .map_err(io_err(format!("removing {}", e.path().display())))?;
        out.maps += 1;
    }
    std::fs::remove_dir(pin).map_err(io_err(format!("removing {}", pin.display())))?;
    Ok(out)
}

/// Per-service counters for display, keyed by kernel service id.
pub type ServiceCounters = BTreeMap<u32, SvcStats>;
