//! The agent's DNS: the zone built from snapshots, dcos-net's own zones, the forwarder, and the
//! UDP and TCP servers bound on every listen address (the listen interface made first when one
//! is configured); then the tasks that keep the zones in step with the catalog and the node.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use lodestar_control::Snapshot;
use lodestar_dns::acl::{interface_addresses, RecursionAcl};
use lodestar_dns::catalog::{AnswerSource, Catalog};
use lodestar_dns::config::DcosConfig;
use lodestar_dns::dcos_api::{RecordSet, ThisdcosRecords};
use lodestar_dns::forward::{ForwardConfig, Forwarder};
use lodestar_dns::local_zone::LocalZone;
use lodestar_dns::mesos_mirror::MesosMirror;
use lodestar_dns::rename::Rename;
use lodestar_dns::rrl::Rrl;
use lodestar_dns::server::{serve_tcp, Shared, TcpLimits, UdpServer};
use lodestar_dns::spartan::{Spartan, DCOS_NS_ADDRESS};
use lodestar_dns::stats::DnsStats;
use lodestar_dns::thisnode::ThisNode;
use lodestar_dns::zk::ZkZone;
use lodestar_dns::zone::{Zone, ZoneBuilder};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::error;

use super::interface::ListenInterface;
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
            .dns_addresses()
            .iter()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified())
            .collect();
        let mut zone = config.dns.zone.clone();
        zone.reverse_zones = config.dns.reverse_zones.clone();
        ZoneRecipe {
            config: zone,
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
    tcp_limits: TcpLimits,
    loop_probe: bool,
    /// The addresses served (UDP and TCP on each), in the configured order.
    pub addresses: Vec<SocketAddr>,
    /// The dummy interface some of them are on, owned by the agent.
    pub interface: Option<ListenInterface>,
    /// `ready.spartan` answers while this is set: from "ready" to the start of the drain.
    pub ready: Arc<AtomicBool>,
    /// dcos-net's zones and ours, never the forwarder: what its HTTP API asks.
    pub local: Catalog,
    /// What dcos-net's `/v1/records` lists.
    pub record_sets: Vec<Arc<dyn RecordSet>>,
    /// `thisnode.thisdcos.directory` and how to find its addresses again, when programs do.
    detect: Option<(Arc<ThisNode>, Option<IpAddr>, DcosConfig)>,
}

impl Dns {
    /// Makes the listen interface, builds the first zone from `first` and binds every listen
    /// address; the interface is removed again when that fails.
    pub async fn bind(config: &AgentConfig, first: &Arc<Snapshot>) -> Result<Dns> {
        let interface = match &config.dns.interface {
            Some(i) => Some(ListenInterface::create(&i.name, &i.addresses).await?),
            None => None,
        };
        match Dns::bind_servers(config, first).await {
            Ok(mut dns) => {
                dns.interface = interface;
                Ok(dns)
            }
            Err(e) => {
                if let Some(i) = interface {
                    i.remove().await;
                }
                Err(e)
            }
        }
    }

    async fn bind_servers(config: &AgentConfig, first: &Arc<Snapshot>) -> Result<Dns> {
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
            .dns_addresses()
            .iter()
            .map(|a| (*a, udp_addresses(*a)))
            .collect();
        let udp_sockets: usize = plan.iter().map(|(_, u)| u.len()).sum();
        let stats = Arc::new(DnsStats::new(udp_sockets * workers + plan.len()));
        let mut shared = Shared::new(zone.clone(), Some(forwarder.clone()), acl, stats.clone())
            .with_rrl(Rrl::new(&config.dns.rrl));
        let ready = Arc::new(AtomicBool::new(false));
        let dcos = DcosZones::new(config, &zone, &ready).await;
        shared.catalog = Catalog::new().with(forwarder.clone()).with(zone.clone());
        shared.catalog = dcos
            .sources
            .iter()
            .fold(shared.catalog, |c, s| c.with(s.clone()));
        let local = dcos
            .sources
            .iter()
            .fold(Catalog::new().with(zone.clone()), |c, s| {
                if s.is_recursive() {
                    c
                } else {
                    c.with(s.clone())
                }
            });
        let shared = Arc::new(shared);

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
        // `nameserver 127.0.0.1` with a wildcard listen address, or an upstream that is one of
        // ours: asking it would be asking ourselves (logged and counted by the forwarder).
        let local_ips: Vec<IpAddr> = lodestar_dns::acl::interfaces()
            .iter()
            .map(|n| n.addr())
            .collect();
        forwarder.refuse_own_addresses(&addresses, &local_ips);
        let tcp_limits = TcpLimits {
            max_connections: config.dns.tcp_max_connections,
            max_per_source: config.dns.tcp_max_per_source,
            ..TcpLimits::default()
        };
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
            tcp_limits,
            loop_probe: config.dns.loop_probe,
            addresses,
            interface: None,
            ready,
            local,
            record_sets: dcos.record_sets,
            detect: dcos.detect,
        })
    }

    /// Spawns the TCP servers, the forwarder's loop probe and the zone updater; UDP already
    /// runs on its threads.
    pub fn spawn(
        &mut self,
        tasks: &mut tokio::task::JoinSet<()>,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        from_cache: Arc<AtomicBool>,
        stop: CancellationToken,
    ) {
        for (listener, slot) in self.tcp.drain(..) {
            let serve = serve_tcp(listener, self.shared.clone(), self.tcp_limits.clone(), slot);
            tasks.spawn(until_stopped(serve, stop.clone()));
        }
        // Once every server is bound, so that a probe that comes back finds us listening.
        if self.loop_probe {
            let forwarder = self.forwarder.clone();
            tasks.spawn(until_stopped(
                async move { forwarder.probe_for_loops().await },
                stop.clone(),
            ));
        }
        if let Some((node, private, dcos)) = self.detect.take() {
            tasks.spawn(keep_thisnode(node, private, dcos, stop.clone()));
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

/// Runs `work` until it ends or `stop`.
async fn until_stopped(work: impl std::future::Future<Output = ()>, stop: CancellationToken) {
    tokio::select! {
        _ = work => {}
        _ = stop.cancelled() => {}
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

/// dcos-net's zones, by the agent's configuration.
struct DcosZones {
    sources: Vec<Arc<dyn AnswerSource>>,
    record_sets: Vec<Arc<dyn RecordSet>>,
    detect: Option<(Arc<ThisNode>, Option<IpAddr>, DcosConfig)>,
}

impl DcosZones {
    async fn new(config: &AgentConfig, zone: &Arc<ArcSwap<Zone>>, ready: &Arc<AtomicBool>) -> Self {
        let mut out = DcosZones {
            sources: Vec::new(),
            record_sets: Vec::new(),
            detect: None,
        };
        let dcos = &config.dns.dcos;
        let zc = &config.dns.zone;
        if zc.thisdcos {
            out.record_sets
                .push(Arc::new(ThisdcosRecords(zone.clone())));
        }
        if !dcos.enabled {
            return out;
        }
        let ttl = zc.thisdcos_ttl;
        // `ns.spartan` is where DC/OS points resolvers: the listen interface's first address,
        // dcos-net's fixed one otherwise.
        let ns = config
            .dns
            .interface
            .as_ref()
            .and_then(|i| i.addresses.first().copied())
            .unwrap_or(DCOS_NS_ADDRESS.into());
        let spartan = Arc::new(Spartan::new(ns, ttl, ready.clone()));
        let zk = Arc::new(ZkZone::new(zone.clone(), ttl));
        let localhost = Arc::new(LocalZone::localhost(ttl));
        out.sources.extend([
            spartan.clone() as Arc<dyn AnswerSource>,
            zk.clone(),
            localhost.clone(),
        ]);
        out.record_sets
            .extend([spartan as Arc<dyn RecordSet>, zk, localhost]);
        if !zc.thisdcos {
            return out;
        }
        let route = config.catalog.etcd.first().and_then(|e| route_source(e));
        let (private, public) = detect(dcos, route).await;
        let thisnode = Arc::new(ThisNode::new(private, &public, ttl));
        if dcos.detect_ip.is_some() || dcos.detect_ip_public.is_some() {
            out.detect = Some((thisnode.clone(), private, dcos.clone()));
        }
        let domain = zc.fqdn_domain().to_ascii_lowercase();
        let mirror = MesosMirror::new(zone.clone(), &domain, ttl).map(Arc::new);
        let mut inner = Catalog::new().with(zone.clone()).with(thisnode.clone());
        if let Some(m) = &mirror {
            inner = inner.with(m.clone());
        }
        out.sources.push(thisnode.clone());
        out.record_sets.push(thisnode);
        if let Some(m) = mirror {
            out.sources.push(m.clone());
            out.record_sets.push(m);
        }
        for rename in Rename::dcos_net(&inner, dcos.cluster_id.as_deref()) {
            out.sources.push(Arc::new(rename));
        }
        out
    }
}

/// This node's private address and its public ones: configured, else what the programs print;
/// the private one, failing both, `fallback`.
async fn detect(dcos: &DcosConfig, fallback: Option<IpAddr>) -> (Option<IpAddr>, Vec<IpAddr>) {
    let private = match (dcos.node_ip, &dcos.detect_ip) {
        (Some(ip), _) => Some(ip),
        (None, Some(program)) => run_detect(program).await.into_iter().next(),
        (None, None) => None,
    };
    let public = match (&dcos.detect_ip_public, dcos.public_ips.is_empty()) {
        (Some(program), true) => run_detect(program).await,
        _ => dcos.public_ips.clone(),
    };
    (private.or(fallback), public)
}

/// The addresses a `detect_ip` program prints, one a line; lines that are none are skipped.
async fn run_detect(program: &std::path::Path) -> Vec<IpAddr> {
    let run = tokio::process::Command::new(program)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(Ok(out)) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect(),
        Ok(Ok(out)) => {
            error!(program = %program.display(), status = %out.status, "address detection failed");
            Vec::new()
        }
        Ok(Err(e)) => {
            error!(program = %program.display(), "cannot run the address detection: {e}");
            Vec::new()
        }
        Err(_) => {
            error!(program = %program.display(), "address detection took over 10 s");
            Vec::new()
        }
    }
}

/// The source address of the route to an etcd endpoint (`http://host:port`; an address, not
/// a name): a connected UDP socket, which sends nothing.
fn route_source(endpoint: &str) -> Option<IpAddr> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let target: SocketAddr = authority.parse().ok().or_else(|| {
        authority
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 2379))
    })?;
    let bind: SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(target).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

/// Runs the address programs again every `detect_interval_secs` (dcos-net: 30 minutes); a
/// run that finds no private address keeps the one known.
async fn keep_thisnode(
    node: Arc<ThisNode>,
    mut private: Option<IpAddr>,
    dcos: DcosConfig,
    stop: CancellationToken,
) {
    let every = Duration::from_secs(dcos.detect_interval_secs);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let (found, public) = detect(&dcos, private).await;
        private = found;
        node.set(private, &public);
    }
}
