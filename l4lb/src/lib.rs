//! Lodestar's load-balancer control: the BPF loader, typed map mirrors, and the reconciler from
//! a catalog `Snapshot` to maps.
//!
//! [`L4lb`] ties them together for the agent: `start` loads (or takes over) the socket load
//! balancer, `apply` programs a snapshot by difference, `status` and `publish_metrics` report.

pub mod adopt;
pub mod attach;
pub mod btf;
pub mod error;
pub mod guard;
pub mod health;
pub mod kernel;
pub mod kernel_xdp;
pub mod layout;
pub mod loader;
pub mod maglev;
pub mod maps;
pub mod metrics;
pub mod pin;
pub mod plan;
pub mod reconcile;
pub mod sys;
#[cfg(test)]
mod test_support;
pub mod xdp;

use std::net::SocketAddr;
use std::sync::Arc;

use ::metrics::Label;
use lodestar_control::Snapshot;
use serde::{Deserialize, Serialize};

pub use error::L4lbError;
pub use health::ActiveConfig;
pub use kernel::{cgroup2_root, KernelConfig};
pub use kernel_xdp::XdpConfig;
pub use pin::{detach, detach_links, Detached, DEFAULT_PIN_PATH};
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
    /// The size its backend count asks for; more than `table` while `lx_ring` has no room.
    #[serde(default)]
    pub table_preferred: usize,
    /// `lx_ring`, shared by every VIP's table: slots in use and its size.
    #[serde(default)]
    pub ring_used: u64,
    #[serde(default)]
    pub ring_slots: u64,
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
    _pins: pin::PinDir,
    kernel: Option<kernel::SockLb>,
    reconciler: Reconciler,
    xdp: Option<XdpPart>,
    opts: PlanOptions,
    plan: Plan,
    revision: i64,
    writes: u64,
    errors: u64,
    last: Option<Arc<Snapshot>>,
    /// VIP addresses the guard leaves out, and how many times each reason refused one.
    refused: std::collections::BTreeMap<plan::ServiceAddr, guard::Refused>,
    refusals: std::collections::BTreeMap<guard::Refusal, u64>,
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
            return Err(L4lbError::NothingToRun);
        }
        // One lock for the node's load balancer, whichever paths run.
        let pins = pin::PinDir::lock(&kernel.pin_path)?;
        // A path this agent does not run must not keep steering with maps nobody updates:
        // drop the links an earlier agent pinned for it.
        for (prefix, runs, what) in [("ls_", socket, "socket"), ("lx_", xdp_cfg.enabled(), "XDP")] {
            if runs {
                continue;
            }
            for link in pins.unpin_links(prefix, &[]) {
                tracing::warn!(link = %link.display(),
                    "detaching the {what} path an earlier agent left attached (this one does not run it)");
            }
        }
        metrics::describe();
        let k = if socket {
            Some(kernel::SockLb::open(kernel, &pins)?)
        } else {
            None
        };
        let reconciler = match &k {
            Some(k) => Reconciler::restore(k.dump()),
            None => Reconciler::new(),
        };
        let xdp = if xdp_cfg.enabled() {
            let lb = kernel_xdp::XdpLb::open_in(&pins, xdp_cfg)?;
            let rec = xdp::XdpReconciler::restore(lb.dump()?, xdp_cfg.max_table, xdp_cfg.seed);
            Some(XdpPart {
                lb,
                rec,
                cfg: xdp_cfg.clone(),
            })
        } else {
            None
        };
        Ok(L4lb {
            _pins: pins,
            kernel: k,
            reconciler,
            xdp,
            opts,
            plan: Plan::new(),
            revision: 0,
            writes: 0,
            errors: 0,
            last: None,
            refused: Default::default(),
            refusals: Default::default(),
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
        let mut plan = plan::plan(snapshot, &self.opts);
        let refused = self.opts.guard.screen(&mut plan, snapshot);
        self.note_refusals(refused);
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

    /// Logs and counts the VIP addresses newly refused, and says which are no longer.
    fn note_refusals(
        &mut self,
        refused: std::collections::BTreeMap<plan::ServiceAddr, guard::Refused>,
    ) {
        for (addr, r) in &refused {
            if self.refused.get(addr) != Some(r) {
                *self.refusals.entry(r.reason).or_default() += 1;
                tracing::warn!(vip = %r.vip, address = %SocketAddr::new(addr.ip, addr.port),
                    protocol = %addr.protocol, reason = r.reason.label(),
                    "VIP address refused: {}", r.reason);
            }
        }
        for (addr, r) in &self.refused {
            if !refused.contains_key(addr) {
                tracing::info!(vip = %r.vip, address = %SocketAddr::new(addr.ip, addr.port),
                    protocol = %addr.protocol, "VIP address no longer refused");
            }
        }
        self.refused = refused;
    }

    /// The VIP addresses left out of the plan, and why.
    pub fn refused(&self) -> &std::collections::BTreeMap<plan::ServiceAddr, guard::Refused> {
        &self.refused
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
                    let (ring_used, ring_slots) = x.rec.ring_usage();
                    XdpVipStatus {
                        mode: format!("{:?}", v.mode).to_lowercase(),
                        table: v.ring.len(),
                        table_preferred: v.preferred as usize,
                        ring_used,
                        ring_slots,
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

    /// Publishes the VIPs' and the reconciler's metrics (read from the maps now) through the
    /// `metrics` facade: call it before rendering the exporter's text.
    pub fn publish_metrics(&self) {
        use crate::metrics as m;
        let status = self.status();
        let mut backends_seen = std::collections::BTreeSet::new();
        for v in &status {
            let vip = vec![
                Label::new("vip", v.vip.clone()),
                Label::new("address", v.address.to_string()),
                Label::new("protocol", v.protocol.clone()),
            ];
            m::counters(
                &vip,
                &[
                    (m::VIP_CONNECTIONS_TOTAL, v.connects),
                    (m::VIP_DATAGRAMS_TOTAL, v.datagrams),
                    (m::VIP_NO_BACKEND_TOTAL, v.no_backend),
                    (m::VIP_FAIL_OPEN_TOTAL, v.fail_open_steered),
                    (m::VIP_PASSIVE_SKIPS_TOTAL, v.skipped),
                ],
            );
            m::gauges(
                &vip,
                &[
                    (m::VIP_BACKENDS_HEALTHY, v.healthy as f64),
                    (m::VIP_BACKENDS, v.total as f64),
                ],
            );
            for b in &v.backends {
                let mut labels = vip.clone();
                labels.push(Label::new("backend", b.address.to_string()));
                m::counters(
                    &labels,
                    &[(m::VIP_BACKEND_CONNECTIONS_TOTAL, b.connects + b.datagrams)],
                );
                let up = b.healthy && !b.passive_failing && b.weight > 0;
                m::gauges(&labels, &[(m::VIP_BACKEND_UP, f64::from(u8::from(up)))]);
                if backends_seen.insert(b.address) {
                    m::counters(
                        &[Label::new("backend", b.address.to_string())],
                        &[(m::BACKEND_CONNECT_FAILURES_TOTAL, b.passive_fails)],
                    );
                }
            }
            if let Some(x) = &v.xdp {
                let mut labels = vip;
                labels.push(Label::new("mode", x.mode.clone()));
                m::counters(
                    &labels,
                    &[
                        (m::XDP_VIP_PACKETS_TOTAL, x.packets),
                        (m::XDP_VIP_BYTES_TOTAL, x.bytes),
                        (m::XDP_VIP_NEW_FLOWS_TOTAL, x.new_flows),
                        (m::XDP_VIP_LRU_MISSES_TOTAL, x.lru_misses),
                    ],
                );
            }
        }
        for (event, n) in self.xdp_counters() {
            m::counters(&[Label::new("event", event)], &[(m::XDP_EVENTS_TOTAL, n)]);
        }
        m::counters(
            &[],
            &[
                (m::MAP_WRITES_TOTAL, self.writes),
                (m::APPLY_ERRORS_TOTAL, self.errors),
            ],
        );
        m::gauges(&[], &[(m::REVISION, self.revision as f64)]);
        for reason in guard::Refusal::ALL {
            let labels = [Label::new("reason", reason.label())];
            let now = self.refused.values().filter(|r| r.reason == reason).count();
            m::gauges(&labels, &[(m::VIP_REFUSED, now as f64)]);
            m::counters(
                &labels,
                &[(
                    m::VIP_REFUSALS_TOTAL,
                    self.refusals.get(&reason).copied().unwrap_or(0),
                )],
            );
        }
    }
}
