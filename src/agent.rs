//! `lodestar agent`: wires a catalog source (etcd, a file, or the demo) to the DNS zones, the
//! DNS servers and the HTTP API, and runs until SIGTERM or SIGINT.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use lodestar_control::{demo, CatalogWatch, EtcdConfig, FileStore, Snapshot, WatchConfig};
use lodestar_dns::acl::{interface_addresses, RecursionAcl};
use lodestar_dns::forward::{ForwardConfig, Forwarder};
use lodestar_dns::http::{router, HttpState};
use lodestar_dns::metrics as dns_metrics;
use lodestar_dns::server::{serve_tcp, Shared, TcpLimits, UdpServer};
use lodestar_dns::stats::DnsStats;
use lodestar_dns::zone::ZoneBuilder;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::cache;
use crate::config::AgentConfig;
use crate::ops::Ops;

/// This host's name, for a node without a configured name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Keeps whichever store feeds the snapshot channel alive (held, never read).
#[allow(dead_code)]
enum Store {
    Etcd(CatalogWatch),
    File(FileStore),
    Demo(watch::Sender<Arc<Snapshot>>),
}

pub async fn run(config: AgentConfig) -> Result<()> {
    // Listen for SIGTERM before anything can log "ready": a stop right after must be graceful.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(dns_metrics::DURATION_SECONDS.into()),
            &dns_metrics::DURATION_BUCKETS,
        )
        .context("the DNS latency buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    dns_metrics::describe();

    let (store, mut snapshots) = open_store(&config)?;
    let source = snapshots.borrow().source.to_string();
    let cache_file = match &store {
        Store::Etcd(_) => config
            .catalog
            .cache_file
            .clone()
            .filter(|p| !p.as_os_str().is_empty()),
        _ => None,
    };
    // The first snapshot: from the store; or, when etcd stays out of reach at start, the copy
    // of the last one kept on local disk (said in the log, /v1/status and /metrics).
    let mut cached: Option<Arc<Snapshot>> = None;
    if !snapshots.borrow().is_loaded() {
        info!(catalog = %source, "waiting for the first catalog snapshot");
        let wait = Duration::from_millis(config.catalog.startup_wait_ms);
        let loaded = tokio::time::timeout(wait, snapshots.wait_for(|s| s.is_loaded()))
            .await
            .map(|r| r.map(|_| ()));
        match (loaded, &cache_file) {
            (Ok(r), _) => r.context("the catalog store stopped")?,
            (Err(_), Some(path)) => match cache::read(path) {
                Ok(s) => {
                    warn!(
                        path = %path.display(),
                        revision = s.revision,
                        "etcd is out of reach: serving the catalog cached on local disk until it answers"
                    );
                    cached = Some(Arc::new(s));
                }
                Err(e) => {
                    warn!("etcd is out of reach and there is no usable local cache ({e}); still waiting");
                    snapshots
                        .wait_for(|s| s.is_loaded())
                        .await
                        .context("the catalog store stopped")?;
                }
            },
            (Err(_), None) => {
                snapshots
                    .wait_for(|s| s.is_loaded())
                    .await
                    .context("the catalog store stopped")?;
            }
        }
    }

    let ns_addresses: Vec<IpAddr> = {
        let listen: Vec<IpAddr> = config
            .dns
            .listen
            .iter()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified())
            .collect();
        if listen.is_empty() {
            interface_addresses()
        } else {
            listen
        }
    };
    let mut builder = ZoneBuilder::new(config.dns.zone.clone(), ns_addresses.clone())?
        .with_site(config.site.clone());
    let from_cache = Arc::new(std::sync::atomic::AtomicBool::new(cached.is_some()));
    let first = match cached {
        // Leave the channel's value unseen, so the updater picks etcd's snapshot up when it comes.
        Some(c) => c,
        None => snapshots.borrow_and_update().clone(),
    };
    let zone = Arc::new(ArcSwap::from_pointee(builder.update(&first)));

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
        // A mistyped forward zone must not quietly send internal names to the default upstreams.
        .map_err(|e| crate::cli::ConfigError(vec![format!("dns.forward_zones: {e}")]))?,
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
    // reply leaves from the address its query came to (a wildcard socket would let the kernel
    // pick, and clients drop replies from an address they did not ask).
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
    let mut udp_servers = Vec::new();
    let mut tcp_tasks = Vec::new();
    let mut dns_addrs = Vec::new();
    let mut slot = 0;
    for (addr, udp_ips) in &plan {
        let mut port = addr.port();
        for ip in udp_ips {
            let udp_addr = SocketAddr::new(*ip, port);
            let udp = UdpServer::start(udp_addr, workers, shared.clone(), runtime.clone(), slot)
                .with_context(|| format!("cannot serve DNS on udp {udp_addr}"))?;
            slot += workers;
            port = udp.local.port();
            udp_servers.push(udp);
        }
        let local = SocketAddr::new(addr.ip(), port);
        let tcp = tokio::net::TcpListener::bind(local)
            .await
            .with_context(|| format!("cannot serve DNS on tcp {local}"))?;
        tcp_tasks.push(tokio::spawn(serve_tcp(
            tcp,
            shared.clone(),
            TcpLimits::default(),
            slot,
        )));
        slot += 1;
        dns_addrs.push(local);
    }

    // The VIP load balancer: loaded (or taken over from the pins of an earlier agent) and fed
    // the first snapshot before "ready", so VIPs work as soon as the agent says so.
    let (l4lb, l4lb_state) = start_l4lb(&config, &first).await?;
    let health_changed = Arc::new(tokio::sync::Notify::new());
    let active_stats = Arc::new(lodestar_l4lb::health::ActiveStats::default());

    let ops = Ops {
        node: config.node.clone().unwrap_or_else(host_name),
        site: config.site.clone(),
        started: std::time::Instant::now(),
        dns: dns_addrs.clone(),
        zone: zone.clone(),
        stats: stats.clone(),
        watch: match &store {
            Store::Etcd(w) => Some(w.stats().clone()),
            _ => None,
        },
        from_cache: from_cache.clone(),
        l4lb: l4lb.clone(),
        l4lb_state: l4lb_state.clone(),
    };
    let cache_task = cache_file.map(|path| tokio::spawn(cache::keep(path, snapshots.clone())));
    let forward_stats = forwarder.clone();
    let dns_stats = stats.clone();
    let ops_metrics = ops.clone();
    let l4lb_metrics = l4lb.clone();
    let active_metrics = active_stats.clone();
    // The DNS latency histogram reaches the exporter as samples that wait for its upkeep.
    let (upkeep, upkeep_dns, upkeep_forward) =
        (prometheus.clone(), stats.clone(), forwarder.clone());
    let upkeep_task = tokio::spawn(async move {
        let mut every = tokio::time::interval(dns_metrics::PUBLISH_INTERVAL);
        loop {
            every.tick().await;
            dns_metrics::publish(&upkeep_dns, upkeep_forward.stats());
            upkeep.run_upkeep();
        }
    });
    let metrics = Arc::new(move || {
        dns_metrics::publish(&dns_stats, forward_stats.stats());
        let mut text = prometheus.render();
        if let Some(l) = &l4lb_metrics {
            l.lock()
                .unwrap_or_else(|p| p.into_inner())
                .render_metrics(&mut text);
            active_metrics.render(&mut text);
        }
        ops_metrics.render(&mut text);
        text
    });
    let freshness_task = tokio::spawn(ops.clone().watch_freshness());
    let config_json = Arc::new(mesos_dns_config(&config, &upstreams));
    let http = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot serve HTTP on {}", config.http.listen))?;
    let http_addr = http.local_addr()?;
    let app = router(HttpState {
        zone: zone.clone(),
        zone_config: config.dns.zone.clone(),
        config_json,
        metrics,
    })
    .merge(ops.router());
    let http_task = tokio::spawn(async move {
        if let Err(e) = axum::serve(http, app).await {
            warn!("HTTP server stopped: {e}");
        }
    });

    let active_task = match &l4lb {
        Some(l) if config.l4lb.active.enabled => Some(tokio::spawn(lodestar_l4lb::health::run(
            config.l4lb.active.clone(),
            l.clone(),
            health_changed.clone(),
            active_stats.clone(),
        ))),
        _ => None,
    };
    let l4lb_task = l4lb
        .clone()
        .map(|l| tokio::spawn(feed_l4lb(l, snapshots.clone(), health_changed.clone())));

    // Snapshot -> zone, off the async workers (a first build of a large catalog takes a while).
    let zone_for_updates = zone.clone();
    let zone_config = config.dns.zone.clone();
    let site = config.site.clone();
    let updater = tokio::spawn(async move {
        let mut builder = Some(builder);
        while snapshots.changed().await.is_ok() {
            let snapshot = snapshots.borrow_and_update().clone();
            // A builder lost to a panic is replaced by a fresh one, which rebuilds everything:
            // one bad update must not freeze the zone for good.
            let b = match builder.take() {
                Some(b) => b,
                None => match ZoneBuilder::new(zone_config.clone(), ns_addresses.clone()) {
                    Ok(b) => b.with_site(site.clone()),
                    Err(p) => {
                        error!("cannot rebuild the zone: {p}");
                        continue;
                    }
                },
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
                        from_cache.store(false, std::sync::atomic::Ordering::Relaxed);
                    }
                    zone_for_updates.store(Arc::new(z));
                }
                Err(e) => {
                    metrics::counter!(ZONE_UPDATE_FAILURES_TOTAL).increment(1);
                    error!(
                        "zone update failed, serving the previous zone until the next change: {e}"
                    );
                    snapshots.mark_changed();
                }
            }
        }
    });

    let listen: Vec<String> = dns_addrs.iter().map(SocketAddr::to_string).collect();
    info!(
        dns = %listen.join(","),
        http = %http_addr,
        catalog = %source,
        revision = zone.load().serial,
        names = zone.load().len(),
        upstreams = ?upstreams,
        l4lb = %l4lb_state,
        "lodestar agent ready"
    );

    tokio::select! {
        _ = sigterm.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    info!("shutting down");
    updater.abort();
    // The load balancer's maps and links stay pinned: VIPs keep working until the next agent
    // takes them over (`lodestar l4lb detach` removes them).
    for t in [l4lb_task, active_task].into_iter().flatten() {
        t.abort();
    }
    http_task.abort();
    upkeep_task.abort();
    freshness_task.abort();
    if let Some(t) = cache_task {
        t.abort();
    }
    for t in tcp_tasks {
        t.abort();
    }
    drop(udp_servers);
    drop(store);
    Ok(())
}

type SharedL4lb = Arc<std::sync::Mutex<lodestar_l4lb::L4lb>>;

/// Starts the VIP load balancer if configured; without the privilege or kernel support it
/// says what is missing and the agent goes on with DNS only, unless `l4lb.required`.
async fn start_l4lb(
    config: &AgentConfig,
    first: &Arc<Snapshot>,
) -> Result<(Option<SharedL4lb>, String)> {
    let c = &config.l4lb;
    if !c.enabled {
        return Ok((None, "off".into()));
    }
    let kernel = lodestar_l4lb::KernelConfig {
        cgroup: c.cgroup.clone(),
        pin_path: c.pin_path.clone(),
        passive_fail_threshold: c.passive.fail_threshold,
        passive_hold: Duration::from_millis(c.passive.hold_ms),
    };
    let opts = lodestar_l4lb::PlanOptions {
        site: config.site.clone(),
        locality: c.locality,
        ..Default::default()
    };
    let first = first.clone();
    let (socket, xdp) = (c.socket, c.xdp.clone());
    let started = tokio::task::spawn_blocking(move || {
        let mut l = lodestar_l4lb::L4lb::start(&kernel, socket, &xdp, opts)?;
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
            let state = format!("running: {}", l.describe());
            info!(
                what = %l.describe(),
                pin_path = %c.pin_path.display(),
                took_over_links = l.took_over(),
                map_writes = report.writes,
                vips = l.status().len(),
                "VIP load balancer running"
            );
            Ok((Some(Arc::new(std::sync::Mutex::new(l))), state))
        }
        Err(e) if c.required => Err(anyhow::anyhow!(
            "the VIP load balancer is required (l4lb.required) but cannot start: {e}"
        )),
        Err(e) => {
            warn!("VIP load balancer not running, DNS only: {e}");
            Ok((None, format!("unavailable: {e}")))
        }
    }
}

/// Programs every new snapshot into the maps, and the last one again when an active check
/// changes a verdict; off the async workers.
async fn feed_l4lb(
    l4lb: SharedL4lb,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    health_changed: Arc<tokio::sync::Notify>,
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
        };
        let l = l4lb.clone();
        let done = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
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
                tracing::debug!(
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

/// `/v1/config` in Mesos-DNS's key names (what its tooling reads), with the whole Lodestar
/// configuration under `Lodestar`.
fn mesos_dns_config(config: &AgentConfig, upstreams: &[SocketAddr]) -> serde_json::Value {
    let z = &config.dns.zone;
    let dot = |n: &str| format!("{}.", n.trim_end_matches('.'));
    let first = config.dns.listen.first();
    let zone_resolvers: serde_json::Map<String, serde_json::Value> = config
        .dns
        .forward_zones
        .iter()
        .map(|f| {
            let list: Vec<String> = f.upstreams.iter().map(ToString::to_string).collect();
            (f.zone.clone(), serde_json::json!(list))
        })
        .collect();
    serde_json::json!({
        "RefreshSeconds": 0,
        "Port": first.map(|a| a.port()),
        "Timeout": config.dns.forward_timeout_ms.div_ceil(1000),
        "HttpPort": config.http.listen.port(),
        "TTL": z.ttl,
        "SOARefresh": z.soa_refresh,
        "SOARetry": z.soa_retry,
        "SOAExpire": z.soa_expire,
        "SOAMinttl": z.ttl,
        "SOAMname": dot(&z.ns_name),
        "SOARname": dot(&z.soa_rname),
        "Masters": [],
        "ZoneResolvers": zone_resolvers,
        "Resolvers": upstreams.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "IPSources": serde_json::to_value(&z.ip_sources).unwrap_or_default(),
        "Domain": z.domain,
        "Listener": first.map(|a| a.ip().to_string()),
        "HTTPListener": config.http.listen.ip().to_string(),
        "RecurseOn": true,
        "DnsOn": true,
        "HttpOn": true,
        "ExternalOn": !upstreams.is_empty(),
        "EnforceRFC952": z.labels == lodestar_dns::names::LabelSpec::Rfc952,
        "SetTruncateBit": true,
        "EnumerationOn": true,
        "SRVRecordDefaultWeight": z.srv_weight,
        "Lodestar": serde_json::to_value(config).unwrap_or_default(),
    })
}

/// Zone updates that failed (a panic in the builder); the previous zone stays served.
const ZONE_UPDATE_FAILURES_TOTAL: &str = "lodestar_dns_zone_update_failures_total";

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

fn open_store(config: &AgentConfig) -> Result<(Store, watch::Receiver<Arc<Snapshot>>)> {
    if !config.catalog.etcd.is_empty() {
        let etcd = EtcdConfig::from_list(&config.catalog.etcd.join(","));
        let w = CatalogWatch::spawn(etcd, WatchConfig::default());
        let rx = w.subscribe();
        return Ok((Store::Etcd(w), rx));
    }
    if let Some(path) = &config.catalog.file {
        let f = FileStore::spawn(path, Duration::from_millis(config.catalog.file_poll_ms))?;
        let rx = f.subscribe();
        return Ok((Store::File(f), rx));
    }
    let (tx, rx) = watch::channel(Arc::new(demo::snapshot()));
    Ok((Store::Demo(tx), rx))
}
