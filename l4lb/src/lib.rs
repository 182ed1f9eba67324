//! Lodestar's load-balancer control: the BPF loader, typed map mirrors, and the reconciler from
//! a catalog `Snapshot` to maps.
//!
//! [`L4lb`] ties them together for the agent: `start` loads (or takes over) the socket load
//! balancer, `apply` programs a snapshot by difference, `status` and `render_metrics` report.

pub mod btf;
pub mod health;
pub mod kernel;
pub mod kernel_xdp;
pub mod layout;
pub mod maglev;
pub mod plan;
pub mod reconcile;
pub mod sys;
pub mod xdp;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use lodestar_control::Snapshot;
use serde::{Deserialize, Serialize};

pub use health::ActiveConfig;
pub use kernel::{cgroup2_root, detach, KernelConfig, L4lbError, DEFAULT_PIN_PATH};
pub use kernel_xdp::XdpConfig;
pub use plan::{Locality, PlanOptions};
pub use reconcile::Report;

use plan::{BackendAddr, Plan};
use reconcile::Reconciler;

/// One VIP address as the data plane holds it, with counters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VipStatus {
    pub vip: String,
    pub address: SocketAddr,
    pub protocol: String,
    pub fail_open: bool,
    pub slots: usize,
    pub healthy: usize,
    pub total: usize,
    pub connects: u64,
    pub datagrams: u64,
    pub no_backend: u64,
    pub fail_open_steered: u64,
    /// Picks that passed over a backend failing passively.
    #[serde(default)]
    pub skipped: u64,
    #[serde(default)]
    pub locality: String,
    /// The XDP path's view of the VIP, when it runs.
    #[serde(default)]
    pub xdp: Option<XdpVipStatus>,
    pub backends: Vec<BackendStatus>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct XdpVipStatus {
    pub mode: String,
    /// Maglev table size (0: no backend).
    pub table: usize,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub lru_misses: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackendStatus {
    pub address: SocketAddr,
    pub task: String,
    pub weight: u32,
    pub healthy: bool,
    pub local: bool,
    /// Share of new connections, in slots of the VIP's table (0: gets none).
    pub slots: u32,
    pub connects: u64,
    pub datagrams: u64,
    /// The agent's active check found it down.
    #[serde(default)]
    pub active_down: bool,
    /// Packets the XDP path sent it.
    #[serde(default)]
    pub xdp_packets: u64,
    /// Failed connects to its address seen by the kernel (refused, reset, SYN timeout).
    #[serde(default)]
    pub passive_fails: u64,
    /// The kernel passes over it for new connections right now (recent failures).
    #[serde(default)]
    pub passive_failing: bool,
}

struct XdpPart {
    lb: kernel_xdp::XdpLb,
    rec: xdp::XdpReconciler,
    cfg: kernel_xdp::XdpConfig,
}

pub struct L4lb {
    _lock: std::fs::File,
    kernel: Option<kernel::SockLb>,
    reconciler: Reconciler,
    xdp: Option<XdpPart>,
    opts: PlanOptions,
    plan: Plan,
    revision: i64,
    writes: u64,
    errors: u64,
    last: Option<Arc<Snapshot>>,
    /// Bumped by every apply (the active checker re-reads its targets then).
    generation: u64,
}

impl L4lb {
    /// Loads the socket load balancer, or takes over the one an earlier agent pinned (its maps
    /// keep steering while this agent starts).
    pub fn start(
        kernel: &KernelConfig,
        socket: bool,
        xdp_cfg: &kernel_xdp::XdpConfig,
        opts: PlanOptions,
    ) -> Result<L4lb, L4lbError> {
        if !socket && !xdp_cfg.enabled() {
            return Err(L4lbError::Missing(
                "neither the socket load balancer nor any XDP interface is configured".into(),
            ));
        }
        // One lock for the node's load balancer, whichever paths run.
        kernel::ensure_bpffs(&kernel.pin_path)?;
        let links = kernel.pin_path.join("links");
        std::fs::create_dir_all(&links).map_err(|e| L4lbError::Io {
            what: format!("creating {}", links.display()),
            source: e,
        })?;
        let lock = kernel::lock(&kernel.pin_path)?;
        // A path this agent does not run must not keep steering with maps nobody updates:
        // drop the links an earlier agent pinned for it.
        for (prefix, runs, what) in [("ls_", socket, "socket"), ("lx_", xdp_cfg.enabled(), "XDP")] {
            if runs {
                continue;
            }
            for e in std::fs::read_dir(&links).into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().starts_with(prefix) {
                    tracing::warn!(link = %e.path().display(),
                        "detaching the {what} path an earlier agent left attached (this one does not run it)");
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let k = if socket {
            Some(kernel::SockLb::open(kernel, false)?)
        } else {
            None
        };
        let reconciler = match &k {
            Some(k) => Reconciler::restore(k.dump()),
            None => Reconciler::new(),
        };
        let xdp = if xdp_cfg.enabled() {
            let lb = kernel_xdp::XdpLb::open(&kernel.pin_path, xdp_cfg, false)?;
            let rec = xdp::XdpReconciler::restore(lb.dump(), xdp_cfg.max_table, xdp_cfg.seed);
            Some(XdpPart {
                lb,
                rec,
                cfg: xdp_cfg.clone(),
            })
        } else {
            None
        };
        Ok(L4lb {
            _lock: lock,
            kernel: k,
            reconciler,
            xdp,
            opts,
            plan: Plan::new(),
            revision: 0,
            writes: 0,
            errors: 0,
            last: None,
            generation: 0,
        })
    }

    /// Links an earlier agent left pinned and this one took over.
    pub fn took_over(&self) -> usize {
        self.kernel.as_ref().map_or(0, |k| k.took_over)
            + self.xdp.as_ref().map_or(0, |x| x.lb.took_over)
    }

    /// The cgroup the socket hooks are attached to (None: socket path off).
    pub fn cgroup(&self) -> Option<&std::path::Path> {
        self.kernel.as_ref().map(|k| k.cgroup.as_path())
    }

    /// What runs, for logs and status.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = self.cgroup() {
            parts.push(format!("sockets of {}", c.display()));
        }
        if let Some(x) = &self.xdp {
            if !x.cfg.interfaces.is_empty() {
                parts.push(format!("XDP on {}", x.cfg.interfaces.join(",")));
            }
            if !x.cfg.decap_interfaces.is_empty() {
                parts.push(format!("GUE decap on {}", x.cfg.decap_interfaces.join(",")));
            }
        }
        parts.join("; ")
    }

    /// The per-packet path's global counters (label, value), when it runs.
    pub fn xdp_counters(&self) -> Vec<(&'static str, u64)> {
        match &self.xdp {
            Some(x) => layout::LX_COUNTERS
                .iter()
                .zip(x.lb.global())
                .map(|((label, _, _), v)| (*label, v))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Programs a snapshot by difference.
    pub fn apply(&mut self, snapshot: &Arc<Snapshot>) -> Report {
        let plan = plan::plan(snapshot, &self.opts);
        let mut report = match &mut self.kernel {
            Some(k) => self.reconciler.apply(&plan, k),
            None => Report::default(),
        };
        if let Some(x) = &mut self.xdp {
            let cfg = &x.cfg;
            let r = x.rec.apply(&plan, &|vip| cfg.mode_of(vip), &mut x.lb);
            report.writes += r.writes;
            report.errors.extend(r.errors);
        }
        // Say when a VIP starts or stops failing open (the counter says how often it is used).
        for (addr, svc) in &plan {
            let was = self.plan.get(addr).is_some_and(|p| p.fail_open);
            let vip = SocketAddr::new(addr.ip, addr.port);
            if svc.fail_open && !was {
                tracing::warn!(vip = %svc.vip, %vip, backends = svc.backends.len(),
                    "no backend of the VIP is healthy: failing open, using all of them");
            } else if !svc.fail_open && was {
                tracing::info!(vip = %svc.vip, %vip, "a backend of the VIP is healthy again");
            }
        }
        self.writes += report.writes as u64;
        self.errors += report.errors.len() as u64;
        self.plan = plan;
        self.revision = snapshot.revision;
        self.last = Some(snapshot.clone());
        self.generation += 1;
        report
    }

    /// Programs the last snapshot again (after a health verdict changed).
    pub fn reapply(&mut self) -> Option<Report> {
        let last = self.last.clone()?;
        Some(self.apply(&last))
    }

    /// Records an active-check verdict; whether it changes the plan's input.
    pub fn set_active_down(&mut self, addr: &BackendAddr, down: bool) -> bool {
        if down {
            self.opts.active_down.insert(*addr)
        } else {
            self.opts.active_down.remove(addr)
        }
    }

    /// The TCP backend addresses to check actively, each with the first VIP it backs, if the
    /// plan changed since `seen` (and the generation they are from).
    pub fn check_targets(&self, seen: u64) -> (u64, Option<Vec<(BackendAddr, String)>>) {
        if seen == self.generation {
            return (seen, None);
        }
        let mut out: std::collections::BTreeMap<BackendAddr, String> = Default::default();
        for (addr, svc) in &self.plan {
            if addr.protocol != lodestar_control::model::Protocol::Tcp {
                continue;
            }
            for b in svc.backends.keys() {
                out.entry(*b).or_insert_with(|| svc.vip.clone());
            }
        }
        (self.generation, Some(out.into_iter().collect()))
    }

    /// The catalog revision last applied.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    pub fn status(&self) -> Vec<VipStatus> {
        let mut out = Vec::new();
        for (addr, planned) in &self.plan {
            let state = self.reconciler.services().get(addr);
            let xstate = self
                .xdp
                .as_ref()
                .and_then(|x| x.rec.vips().get(addr).map(|v| (x, v)));
            if state.is_none() && xstate.is_none() {
                continue;
            }
            let s = match (&self.kernel, state) {
                (Some(k), Some(st)) => k.service_stats(st.id),
                _ => Default::default(),
            };
            let backends: Vec<BackendStatus> = planned
                .backends
                .iter()
                .map(|(b, p)| {
                    let bs = match (&self.kernel, state.and_then(|st| st.backends.get(b))) {
                        (Some(k), Some(id)) => k.backend_stats(*id),
                        _ => Default::default(),
                    };
                    let (h, failing) = match &self.kernel {
                        Some(k) => k.passive(&reconcile::health_key(b)),
                        None => Default::default(),
                    };
                    let xdp_packets = xstate
                        .and_then(|(x, v)| {
                            v.reals.get(b).map(|(id, _)| x.lb.real_stats(*id).packets)
                        })
                        .unwrap_or(0);
                    BackendStatus {
                        address: SocketAddr::new(b.ip, b.port),
                        task: p.task.clone(),
                        weight: p.weight,
                        healthy: p.healthy,
                        local: p.local,
                        slots: p.slots,
                        connects: bs.connects,
                        datagrams: bs.datagrams,
                        active_down: p.active_down,
                        passive_fails: h.fails,
                        passive_failing: failing,
                        xdp_packets,
                    }
                })
                .collect();
            out.push(VipStatus {
                vip: planned.vip.clone(),
                address: SocketAddr::new(addr.ip, addr.port),
                protocol: addr.protocol.to_string(),
                fail_open: planned.fail_open,
                slots: state.map_or(0, |st| st.slots.len()),
                healthy: backends
                    .iter()
                    .filter(|b| b.healthy && b.weight > 0)
                    .count(),
                total: backends.len(),
                connects: s.connects,
                datagrams: s.datagrams,
                no_backend: s.no_backend,
                fail_open_steered: s.fail_open,
                skipped: s.skipped,
                locality: format!("{:?}", planned.locality),
                xdp: xstate.map(|(x, v)| {
                    let st = x.lb.vip_stats(v.id);
                    XdpVipStatus {
                        mode: format!("{:?}", v.mode).to_lowercase(),
                        table: v.ring.len(),
                        packets: st.packets,
                        bytes: st.bytes,
                        new_flows: st.new_flows,
                        lru_misses: st.lru_misses,
                    }
                }),
                backends,
            });
        }
        out
    }

    /// Prometheus text for the VIPs and the reconciler.
    pub fn render_metrics(&self, out: &mut String) {
        let status = self.status();
        let families: [MetricFamily; 7] = [
            (
                "lodestar_vip_connections_total",
                "counter",
                "connect() calls steered to a backend",
                |v| v.connects,
            ),
            (
                "lodestar_vip_datagrams_total",
                "counter",
                "unconnected UDP sends steered to a backend",
                |v| v.datagrams,
            ),
            (
                "lodestar_vip_no_backend_total",
                "counter",
                "calls to a VIP without any backend (refused)",
                |v| v.no_backend,
            ),
            (
                "lodestar_vip_fail_open_total",
                "counter",
                "calls steered while no backend was healthy",
                |v| v.fail_open_steered,
            ),
            (
                "lodestar_vip_passive_skips_total",
                "counter",
                "picks that passed over a backend failing passively",
                |v| v.skipped,
            ),
            (
                "lodestar_vip_backends_healthy",
                "gauge",
                "backends taking new connections by health",
                |v| v.healthy as u64,
            ),
            (
                "lodestar_vip_backends",
                "gauge",
                "backends known for the VIP",
                |v| v.total as u64,
            ),
        ];
        for (name, kind, help, get) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for v in &status {
                let _ = writeln!(
                    out,
                    "{name}{{vip=\"{}\",address=\"{}\",protocol=\"{}\"}} {}",
                    escape(&v.vip),
                    v.address,
                    v.protocol,
                    get(v)
                );
            }
        }
        let per_backend: [BackendFamily; 2] = [
            (
                "lodestar_vip_backend_connections_total",
                "counter",
                "connect() calls and UDP sends steered to each backend",
                |b| b.connects + b.datagrams,
            ),
            (
                "lodestar_vip_backend_up",
                "gauge",
                "1 while a backend takes new connections (catalog health, active checks and passive failures)",
                |b| u64::from(b.healthy && !b.passive_failing && b.weight > 0),
            ),
        ];
        for (name, kind, help, get) in per_backend {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for v in &status {
                for b in &v.backends {
                    let _ = writeln!(
                        out,
                        "{name}{{vip=\"{}\",address=\"{}\",protocol=\"{}\",backend=\"{}\"}} {}",
                        escape(&v.vip),
                        v.address,
                        v.protocol,
                        b.address,
                        get(b)
                    );
                }
            }
        }
        if self.xdp.is_some() {
            let xdp_families: [MetricFamily; 4] = [
                (
                    "lodestar_xdp_vip_packets_total",
                    "counter",
                    "packets the XDP path forwarded for the VIP",
                    |v| v.xdp.as_ref().map_or(0, |x| x.packets),
                ),
                (
                    "lodestar_xdp_vip_bytes_total",
                    "counter",
                    "bytes the XDP path forwarded for the VIP",
                    |v| v.xdp.as_ref().map_or(0, |x| x.bytes),
                ),
                (
                    "lodestar_xdp_vip_new_flows_total",
                    "counter",
                    "flows the XDP path started tracking",
                    |v| v.xdp.as_ref().map_or(0, |x| x.new_flows),
                ),
                (
                    "lodestar_xdp_vip_lru_misses_total",
                    "counter",
                    "mid-flow packets of untracked flows (sent where Maglev says)",
                    |v| v.xdp.as_ref().map_or(0, |x| x.lru_misses),
                ),
            ];
            for (name, kind, help, get) in xdp_families {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for v in status.iter().filter(|v| v.xdp.is_some()) {
                    let _ = writeln!(
                        out,
                        "{name}{{vip=\"{}\",address=\"{}\",protocol=\"{}\",mode=\"{}\"}} {}",
                        escape(&v.vip),
                        v.address,
                        v.protocol,
                        v.xdp.as_ref().map_or("", |x| x.mode.as_str()),
                        get(v)
                    );
                }
            }
            let name = "lodestar_xdp_events_total";
            let _ = writeln!(
                out,
                "# HELP {name} the XDP/tc path's packets by what happened to them\n# TYPE {name} counter"
            );
            for (event, n) in self.xdp_counters() {
                let _ = writeln!(out, "{name}{{event=\"{event}\"}} {n}");
            }
        }
        let name = "lodestar_backend_connect_failures_total";
        let _ = writeln!(
            out,
            "# HELP {name} failed connects to a backend address seen by the kernel (refused, reset, SYN timeout)\n# TYPE {name} counter"
        );
        let mut seen = std::collections::BTreeSet::new();
        for v in &status {
            for b in &v.backends {
                if seen.insert(b.address) {
                    let _ = writeln!(
                        out,
                        "{name}{{backend=\"{}\"}} {}",
                        b.address, b.passive_fails
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP lodestar_l4lb_map_writes_total BPF map writes made by the reconciler\n\
             # TYPE lodestar_l4lb_map_writes_total counter\n\
             lodestar_l4lb_map_writes_total {}\n\
             # HELP lodestar_l4lb_apply_errors_total VIPs that could not be programmed\n\
             # TYPE lodestar_l4lb_apply_errors_total counter\n\
             lodestar_l4lb_apply_errors_total {}\n\
             # HELP lodestar_l4lb_revision catalog revision last programmed into the maps\n\
             # TYPE lodestar_l4lb_revision gauge\n\
             lodestar_l4lb_revision {}",
            self.writes, self.errors, self.revision
        );
    }
}

/// (name, type, help, value of one VIP).
type MetricFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&VipStatus) -> u64,
);
/// (name, type, help, value of one backend).
type BackendFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&BackendStatus) -> u64,
);

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
