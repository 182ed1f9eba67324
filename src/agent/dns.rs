//! The agent's DNS: the zone built from snapshots, the forwarder, and the UDP and TCP servers
//! bound on every listen address; then the task that keeps the zone in step with the catalog.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use lodestar_control::Snapshot;
use lodestar_dns::acl::{interface_addresses, RecursionAcl};
use lodestar_dns::forward::{ForwardConfig, Forwarder};
use lodestar_dns::server::{serve_tcp, Shared, TcpLimits, UdpServer};
use lodestar_dns::stats::DnsStats;
use lodestar_dns::zone::{Zone, ZoneBuilder};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::config::{AgentConfig, ConfigError};

/// Zone updates that failed (a panic in the builder); the previous zone stays served.
const ZONE_UPDATE_FAILURES_TOTAL: &str = "lodestar_dns_zone_update_failures_total";

/// What the zone builder needs, kept so that a builder lost to a panic can be made again.
#[derive(Clone)]
pub(super) struct ZoneRecipe {
    config: lodestar_dns::config::ZoneConfig,
    ns_addresses: Vec<IpAddr>,
    site: Option<String>,
}

impl ZoneRecipe {
    fn new(config: &AgentConfig) -> ZoneRecipe {
        let listen: Vec<IpAddr> = config
            .dns
            .listen
            .iter()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified())
            .collect();
        ZoneRecipe {
            config: config.dns.zone.clone(),
            ns_addresses: if listen.is_empty() {
                interface_addresses()
            } else {
                listen
            },
            site: config.site.clone(),
        }
    }

    /// The one place a `ZoneBuilder` is made.
    fn builder(&self) -> Result<ZoneBuilder, ConfigError> {
        Ok(
            ZoneBuilder::new(self.config.clone(), self.ns_addresses.clone())
                .map_err(|p| ConfigError(p.problems))?
                .with_site(self.site.clone()),
        )
    }
}

/// The DNS side, bound and ready to serve.
pub(super) struct Dns {
    pub zone: Arc<ArcSwap<Zone>>,
    recipe: ZoneRecipe,
    /// Moves to the zone updater when it is spawned.
    builder: Option<ZoneBuilder>,
    pub forwarder: Arc<Forwarder>,
    pub stats: Arc<DnsStats>,
    pub upstreams: Vec<SocketAddr>,
    shared: Arc<Shared>,
    /// One server per UDP address, each on worker threads of its own.
    udp: Vec<UdpServer>,
    /// One TCP listener per listen address, with its counter slot.
    tcp: Vec<(TcpListener, usize)>,
    /// The addresses served (UDP and TCP on each), in the configured order.
    pub addresses: Vec<SocketAddr>,
}

impl Dns {
    /// Builds the first zone from `first` and binds every listen address.
    pub async fn bind(config: &AgentConfig, first: &Arc<Snapshot>) -> Result<Dns> {
        let recipe = ZoneRecipe::new(config);
        let mut builder = recipe.builder()?;
        let zone = Arc::new(ArcSwap::from_pointee(builder.update(first)));

        let upstreams = config.upstreams();
        let forwarder = Arc::new(
            Forwarder::try_new(ForwardConfig {
                upstreams: upstreams.clone(),
                zones: config
                    .dns
                    .forward_zones
                    .iter()
                    .map(|z| (z.zone.clone(), z.upstreams.clone()))
                    .collect(),
                timeout: Duration::from_millis(config.dns.forward_timeout_ms),
                max_in_flight: config.dns.max_in_flight,
                cache_entries: config.dns.cache_entries,
                max_stale: Duration::from_secs(config.dns.max_stale_secs),
                ..ForwardConfig::default()
            })
            // A mistyped forward zone must not quietly send internal names to the default
            // upstreams.
            .map_err(|e| ConfigError::one("dns.forward_zones", e.to_string()))?,
        );
        let acl = match &config.dns.recursion_networks {
            Some(n) => RecursionAcl::new(n.clone()),
            None => RecursionAcl::local_default(),
        };
        let workers = config
            .dns
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        // A wildcard address is served by one UDP socket per interface address, so that each
        // reply leaves from the address its query came to (a wildcard socket would let the
        // kernel pick, and clients drop replies from an address they did not ask).
        let plan: Vec<(SocketAddr, Vec<IpAddr>)> = config
            .dns
            .listen
            .iter()
            .map(|a| (*a, udp_addresses(*a)))
            .collect();
        let udp_sockets: usize = plan.iter().map(|(_, u)| u.len()).sum();
        let stats = Arc::new(DnsStats::new(udp_sockets * workers + plan.len()));
        let shared = Arc::new(Shared::new(
            zone.clone(),
            Some(forwarder.clone()),
            acl,
            stats.clone(),
        ));

        let runtime = tokio::runtime::Handle::current();
        let (mut udp, mut tcp, mut addresses) = (Vec::new(), Vec::new(), Vec::new());
        let mut slot = 0;
        for (addr, udp_ips) in &plan {
            // A port of 0 is picked by the first UDP socket, and TCP must then get the same
            // one; another process may hold it for TCP, so pick again a few times.
            let attempts = if addr.port() == 0 { 16 } else { 1 };
            let mut attempt = 0;
            let (servers, listener, local) = loop {
                attempt += 1;
                let mut port = addr.port();
                let mut servers = Vec::new();
                let mut taken = None;
                for ip in udp_ips {
                    let udp_addr = SocketAddr::new(*ip, port);
                    let first = slot + servers.len() * workers;
                    match UdpServer::start(
                        udp_addr,
                        workers,
                        shared.clone(),
                        runtime.clone(),
                        first,
                    ) {
                        Ok(server) => {
                            port = server.local.port();
                            servers.push(server);
                        }
                        Err(e) => {
                            taken = Some((e, format!("udp {udp_addr}")));
                            break;
                        }
                    }
                }
                let local = SocketAddr::new(addr.ip(), port);
                if taken.is_none() {
                    match TcpListener::bind(local).await {
                        Ok(listener) => break (servers, listener, local),
                        Err(e) => taken = Some((e, format!("tcp {local}"))),
                    }
                }
                let (e, what) = taken.expect("set when not bound");
                if e.kind() != std::io::ErrorKind::AddrInUse || attempt >= attempts {
                    return Err(anyhow::Error::new(e))
                        .with_context(|| format!("cannot serve DNS on {what}"));
                }
                drop(servers);
            };
            slot += servers.len() * workers;
            udp.extend(servers);
            tcp.push((listener, slot));
            slot += 1;
            addresses.push(local);
        }
        Ok(Dns {
            zone,
            recipe,
            builder: Some(builder),
            forwarder,
            stats,
            upstreams,
            shared,
            udp,
            tcp,
            addresses,
        })
    }

    /// Spawns the TCP servers and the zone updater; UDP already runs on its threads.
    pub fn spawn(
        &mut self,
        tasks: &mut tokio::task::JoinSet<()>,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        from_cache: Arc<AtomicBool>,
        stop: CancellationToken,
    ) {
        for (listener, slot) in self.tcp.drain(..) {
            let serve = serve_tcp(listener, self.shared.clone(), TcpLimits::default(), slot);
            let stop = stop.clone();
            tasks.spawn(async move {
                tokio::select! {
                    _ = serve => {}
                    _ = stop.cancelled() => {}
                }
            });
        }
        let Some(builder) = self.builder.take() else {
            return;
        };
        tasks.spawn(keep_zone(
            self.recipe.clone(),
            builder,
            self.zone.clone(),
            snapshots,
            from_cache,
            stop,
        ));
    }
}

impl Dns {
    /// Stops the UDP workers (each finishes the batch it is answering).
    pub fn stop(self) {
        for server in self.udp {
            drop(server);
        }
    }
}

/// Snapshot -> zone, off the async workers (a first build of a large catalog takes a while),
/// until `stop`.
async fn keep_zone(
    recipe: ZoneRecipe,
    builder: ZoneBuilder,
    zone: Arc<ArcSwap<Zone>>,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    from_cache: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut builder = Some(builder);
    loop {
        tokio::select! {
            changed = snapshots.changed() => if changed.is_err() { return },
            _ = stop.cancelled() => return,
        }
        let snapshot = snapshots.borrow_and_update().clone();
        // A builder lost to a panic is replaced by a fresh one, which rebuilds everything:
        // one bad update must not freeze the zone for good.
        let b = match builder.take().map_or_else(|| recipe.builder(), Ok) {
            Ok(b) => b,
            Err(e) => {
                error!("cannot rebuild the zone: {e}");
                continue;
            }
        };
        let built = tokio::task::spawn_blocking(move || {
            let mut b = b;
            let z = b.update(&snapshot);
            (b, z)
        })
        .await;
        match built {
            Ok((b, z)) => {
                builder = Some(b);
                if z.snapshot.is_loaded() {
                    from_cache.store(false, Ordering::Relaxed);
                }
                zone.store(Arc::new(z));
            }
            Err(e) => {
                metrics::counter!(ZONE_UPDATE_FAILURES_TOTAL).increment(1);
                error!("zone update failed, serving the previous zone until the next change: {e}");
                snapshots.mark_changed();
            }
        }
    }
}

/// The addresses a UDP listen address is served on: itself, or for a wildcard every
/// interface address of its family (link-local IPv6 left out: it needs a scope).
fn udp_addresses(addr: SocketAddr) -> Vec<IpAddr> {
    if !addr.ip().is_unspecified() {
        return vec![addr.ip()];
    }
    let mut ips: Vec<IpAddr> = lodestar_dns::acl::interfaces()
        .iter()
        .map(|n| n.addr())
        .filter(|ip| ip.is_ipv4() == addr.is_ipv4())
        .filter(|ip| match ip {
            IpAddr::V6(v6) => !v6.is_unicast_link_local(),
            IpAddr::V4(_) => true,
        })
        .collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        vec![addr.ip()]
    } else {
        ips
    }
}
