//! The agent's VIP load balancer: started (or taken over from an earlier agent's pins) with
//! the first snapshot before "ready", then fed every new snapshot and health verdict.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lodestar_control::Snapshot;
use lodestar_l4lb::health::ActiveStats;
use lodestar_l4lb::L4lb;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::AgentConfig;

pub(super) type SharedL4lb = Arc<Mutex<L4lb>>;

/// The running load balancer (if any) and what the agent says about it.
pub(super) struct VipPlane {
    pub l4lb: Option<SharedL4lb>,
    /// `running: ...`, `off`, or why it is not running.
    pub state: String,
    pub active_stats: Arc<ActiveStats>,
    health_changed: Arc<Notify>,
}

impl VipPlane {
    /// Starts the VIP load balancer if configured; without the privilege or kernel support it
    /// says what is missing and the agent goes on with DNS only, unless `l4lb.required`.
    pub async fn start(config: &AgentConfig, first: &Arc<Snapshot>) -> Result<VipPlane> {
        let off = |state: String| VipPlane {
            l4lb: None,
            state,
            active_stats: Arc::default(),
            health_changed: Arc::default(),
        };
        let c = &config.l4lb;
        if !c.enabled {
            stop_steering(&c.pin_path, "the VIP load balancer is off (l4lb.enabled)");
            return Ok(off("off".into()));
        }
        let kernel = lodestar_l4lb::KernelConfig {
            cgroup: c.cgroup.clone(),
            pin_path: c.pin_path.clone(),
            passive_fail_threshold: c.passive.fail_threshold,
            passive_hold: Duration::from_millis(c.passive.hold_ms),
        };
        if c.vip_ranges.is_empty() {
            warn!("l4lb.vip_ranges is empty: no VIP address is steered");
        }
        let opts = lodestar_l4lb::PlanOptions {
            site: config.site.clone(),
            locality: c.locality,
            guard: vip_guard(config),
            ..Default::default()
        };
        let first = first.clone();
        let (socket, xdp) = (c.socket, c.xdp.clone());
        let started = tokio::task::spawn_blocking(move || {
            let mut l = L4lb::start(&kernel, socket, &xdp, opts)?;
            let report = l.apply(&first);
            Ok::<_, lodestar_l4lb::L4lbError>((l, report))
        })
        .await
        .context("the load balancer's start panicked")?;
        match started {
            Ok((l, report)) => {
                for e in &report.errors {
                    warn!("VIP not programmed: {e}");
                }
                info!(
                    what = %l.describe(),
                    pin_path = %c.pin_path.display(),
                    took_over_links = l.took_over(),
                    map_writes = report.writes,
                    vips = l.status().len(),
                    "VIP load balancer running"
                );
                Ok(VipPlane {
                    state: format!("running: {}", l.describe()),
                    l4lb: Some(Arc::new(Mutex::new(l))),
                    active_stats: Arc::default(),
                    health_changed: Arc::default(),
                })
            }
            Err(e) if c.required => {
                stop_steering(&c.pin_path, "the VIP load balancer cannot start");
                Err(anyhow::anyhow!(
                    "the VIP load balancer is required (l4lb.required) but cannot start: {e}"
                ))
            }
            Err(e) => {
                warn!("VIP load balancer not running, DNS only: {e}");
                stop_steering(&c.pin_path, "the VIP load balancer cannot start");
                Ok(off(format!("unavailable: {e}")))
            }
        }
    }

    /// Spawns the feeder and, when configured, the active health checks.
    pub fn spawn(
        &self,
        config: &AgentConfig,
        tasks: &mut tokio::task::JoinSet<()>,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        stop: CancellationToken,
    ) {
        let Some(l) = &self.l4lb else {
            return;
        };
        if config.l4lb.active.enabled {
            let checks = lodestar_l4lb::health::run(
                config.l4lb.active.clone(),
                l.clone(),
                self.health_changed.clone(),
                self.active_stats.clone(),
            );
            let stop = stop.clone();
            tasks.spawn(async move {
                tokio::select! {
                    _ = checks => {}
                    _ = stop.cancelled() => {}
                }
            });
        }
        tasks.spawn(feed(
            l.clone(),
            snapshots,
            self.health_changed.clone(),
            stop,
        ));
    }

    /// After the drain: a demo agent removes every trace of what it attached; a real agent
    /// leaves its maps and links pinned, so VIPs keep working until the next agent takes them
    /// over (`lodestar l4lb detach` removes them).
    pub fn stop(self, config: &AgentConfig, detach: bool) {
        let Some(l) = self.l4lb else {
            return;
        };
        // The load balancer holds the pin directory's lock: let go of it first (every other
        // holder has stopped with the drain).
        if Arc::try_unwrap(l).is_err() {
            warn!("the VIP load balancer is still in use at shutdown; leaving it as it is");
            return;
        }
        if !detach {
            return;
        }
        match lodestar_l4lb::detach(&config.l4lb.pin_path) {
            Ok(d) => info!(
                links = d.links,
                maps = d.maps,
                pin_path = %config.l4lb.pin_path.display(),
                "demo VIPs detached"
            ),
            Err(e) => warn!("cannot detach the demo VIPs: {e}"),
        }
    }
}

/// Detaches the programs an earlier agent left pinned in `pin_path`: without this agent to
/// update their maps they would go on steering to backends that may be long gone. Their maps
/// stay, for the next agent that runs the load balancer to adopt. Another agent that holds
/// the directory keeps its links.
fn stop_steering(pin_path: &std::path::Path, why: &str) {
    match lodestar_l4lb::detach_links(pin_path) {
        Ok(0) => {}
        Ok(links) => warn!(links, pin_path = %pin_path.display(),
            "{why}: detached the links an earlier agent left steering from maps nobody updates"),
        Err(e) => warn!(pin_path = %pin_path.display(),
            "{why}; the links pinned there are left as they are: {e}"),
    }
}

/// What VIP addresses may be: inside `l4lb.vip_ranges`, and none of the addresses the agent
/// itself reaches (etcd, DNS upstreams) or this node's.
fn vip_guard(config: &AgentConfig) -> lodestar_l4lb::guard::VipGuard {
    use lodestar_l4lb::guard::Refusal;
    let mut protected: Vec<(std::net::IpAddr, Refusal)> = config
        .catalog
        .etcd
        .iter()
        .filter_map(|e| endpoint_ip(e))
        .map(|ip| (ip, Refusal::Etcd))
        .collect();
    let zones = config.dns.forward_zones.iter().flat_map(|z| &z.upstreams);
    protected.extend(
        config
            .upstreams()
            .iter()
            .chain(zones)
            .map(|u| (u.ip(), Refusal::Upstream)),
    );
    lodestar_l4lb::guard::VipGuard {
        ranges: config.l4lb.vip_ranges.clone(),
        protected,
        node_addresses: Some(lodestar_dns::acl::non_loopback_interface_addresses),
    }
}

/// The address of an etcd endpoint given by address (`https://198.18.1.11:2379`); a host name
/// is not resolved here (a VIP cannot take a name, only the addresses it resolves to).
fn endpoint_ip(endpoint: &str) -> Option<std::net::IpAddr> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.parse().ok()
}

/// Programs every new snapshot into the maps, and the last one again when an active check
/// changes a verdict; off the async workers. Stops between two programmings.
async fn feed(
    l4lb: SharedL4lb,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    health_changed: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        let snapshot = tokio::select! {
            r = snapshots.changed() => {
                if r.is_err() {
                    return;
                }
                let s = snapshots.borrow_and_update().clone();
                if !s.is_loaded() {
                    continue;
                }
                Some(s)
            }
            _ = health_changed.notified() => None,
            _ = stop.cancelled() => return,
        };
        let l = l4lb.clone();
        let done = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let mut l = l.lock().unwrap_or_else(|p| p.into_inner());
            let report = match &snapshot {
                Some(s) => l.apply(s),
                None => l.reapply().unwrap_or_default(),
            };
            (report, started.elapsed(), l.revision())
        })
        .await;
        match done {
            Ok((report, took, revision)) => {
                for e in &report.errors {
                    warn!(revision, "VIP not programmed: {e}");
                }
                debug!(
                    revision,
                    writes = report.writes,
                    took_us = took.as_micros() as u64,
                    "VIPs programmed"
                );
            }
            Err(e) => error!("programming VIPs failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn etcd_endpoints_give_their_addresses() {
        for (e, want) in [
            ("http://198.18.1.11:2379", Some("198.18.1.11")),
            ("https://[2001:db8::11]:2379", Some("2001:db8::11")),
            ("198.18.1.12:2379", Some("198.18.1.12")),
            ("https://etcd.example:2379", None),
        ] {
            assert_eq!(
                super::endpoint_ip(e),
                want.map(|w| w.parse().unwrap()),
                "{e}"
            );
        }
    }
}
