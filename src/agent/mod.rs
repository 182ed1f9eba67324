//! `lodestar agent`: wires a catalog source (etcd, a file, or the demo) to the DNS zones and
//! servers, the VIP load balancer and the HTTP API, and runs until SIGTERM or SIGINT.
//!
//! Startup is config -> [`App::build`] (each part built and bound, in order: catalog, DNS, VIPs,
//! HTTP) -> [`App::spawn`] (the tasks that keep them current) -> "ready"; a signal starts the
//! drain ([`Running::drain`]): the tasks stop at a clean point, in-flight work finishes.

mod catalog;
mod dns;
mod http;
mod interface;
mod l4lb;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use crate::config::AgentConfig;
use crate::demo::{Demo, DEMO_PIN_PATH, DEMO_VIP_RANGE};
use crate::ops::Ops;
use catalog::Catalog;
use dns::Dns;
use l4lb::VipPlane;

/// How long the drain waits for tasks and connections before it stops them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run(config: AgentConfig) -> Result<()> {
    // Listen for SIGTERM before anything can log "ready": a stop right after must be graceful.
    let mut stop_signal = StopSignal::install()?;
    let app = App::build(config).await?;
    let running = app.spawn().await?;
    stop_signal.wait().await;
    running.drain().await;
    Ok(())
}

/// SIGTERM or SIGINT.
struct StopSignal {
    term: Signal,
    int: Signal,
}

impl StopSignal {
    fn install() -> Result<StopSignal> {
        Ok(StopSignal {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Everything built and bound, nothing running yet.
struct App {
    config: AgentConfig,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    catalog: Catalog,
    dns: Dns,
    vips: VipPlane,
    http: tokio::net::TcpListener,
    /// dcos-net's API, when it has a listener of its own.
    dcos_http: Option<tokio::net::TcpListener>,
}

impl App {
    async fn build(mut config: AgentConfig) -> Result<App> {
        config.apply_dcos_dns_json()?;
        let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(
                    lodestar_dns::metrics::DURATION_SECONDS.into(),
                ),
                &lodestar_dns::metrics::DURATION_BUCKETS,
            )
            .context("the DNS latency buckets")?
            .install_recorder()
            .context("installing the metrics recorder")?;
        lodestar_dns::metrics::describe();
        let catalog = Catalog::open(&config.catalog)
            .instrument(info_span!("catalog"))
            .await?;
        if catalog.is_demo() && config.l4lb.pin_path.as_os_str() == lodestar_l4lb::DEFAULT_PIN_PATH
        {
            config.l4lb.pin_path = DEMO_PIN_PATH.into();
        }
        if catalog.is_demo() && config.l4lb.vip_ranges.is_empty() {
            config.l4lb.vip_ranges = vec![DEMO_VIP_RANGE.parse().expect("the demo's range")];
        }
        let mut dns = Dns::bind(&config, &catalog.first)
            .instrument(info_span!("dns"))
            .await?;
        let rest = App::bind_rest(&config, &catalog).await;
        let (vips, http, dcos_http) = match rest {
            Ok(r) => r,
            Err(e) => {
                // The listen interface is ours to remove whenever the agent does not run.
                if let Some(i) = dns.interface.take() {
                    i.remove().await;
                }
                return Err(e);
            }
        };
        Ok(App {
            config,
            prometheus,
            catalog,
            dns,
            vips,
            http,
            dcos_http,
        })
    }

    /// The parts bound after DNS: the VIP load balancer and the HTTP listeners.
    async fn bind_rest(
        config: &AgentConfig,
        catalog: &Catalog,
    ) -> Result<(
        VipPlane,
        tokio::net::TcpListener,
        Option<tokio::net::TcpListener>,
    )> {
        // The VIP load balancer is loaded (or taken over from the pins of an earlier agent) and
        // fed the first snapshot before "ready", so VIPs work as soon as the agent says so.
        let vips = VipPlane::start(config, &catalog.first)
            .instrument(info_span!("l4lb"))
            .await?;
        let http = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("cannot serve HTTP on {}", config.http.listen))?;
        let dcos_http = match config.http.dcos_net_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot serve dcos-net's HTTP API on {addr}"))?,
            ),
            None => None,
        };
        Ok((vips, http, dcos_http))
    }

    /// Starts every task, then says "ready".
    async fn spawn(mut self) -> Result<Running> {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let demo = if self.catalog.is_demo() {
            Some(Demo::start(&self.catalog.first, &mut tasks, stop.clone()).await?)
        } else {
            None
        };
        let snapshots = &self.catalog.snapshots;
        self.dns.spawn(
            &mut tasks,
            snapshots.clone(),
            self.catalog.from_cache.clone(),
            stop.clone(),
        );
        self.vips
            .spawn(&self.config, &mut tasks, snapshots.clone(), stop.clone());
        if let Some(path) = self.catalog.cache_file.clone() {
            let watch = self.catalog.watch_stats();
            tasks.spawn(crate::cache::keep(
                path,
                snapshots.clone(),
                watch,
                stop.clone(),
            ));
        }
        let ops = Ops {
            node: self.config.node.clone().unwrap_or_else(host_name),
            site: self.config.site.clone(),
            started: Instant::now(),
            dns: self.dns.addresses.clone(),
            zone: self.dns.zone.clone(),
            stats: self.dns.stats.clone(),
            watch: self.catalog.watch_stats(),
            from_cache: self.catalog.from_cache.clone(),
            l4lb: self.vips.l4lb.clone(),
            l4lb_state: self.vips.state.clone(),
        };
        tasks.spawn(ops.clone().watch_freshness(stop.clone()));
        let collectors =
            http::Collectors::new(self.prometheus.clone(), &self.dns, &self.vips, &ops);
        tasks.spawn(collectors.clone().keep(stop.clone()));
        let dcos_app = http::dcos_net_routes(&self.config, &self.dns, collectors.clone());
        let app = http::routes(&self.config, &self.dns, collectors, &ops);
        let http_addr = self.http.local_addr()?;
        let limits = lodestar_dns::http::HttpLimits {
            max_connections: self.config.http.max_connections,
            header_timeout: Duration::from_millis(self.config.http.header_timeout_ms),
        };
        serve_http(&mut tasks, self.http, app, limits.clone(), &stop);
        let dcos_http_addr = match self.dcos_http {
            Some(listener) => {
                let addr = listener.local_addr()?;
                serve_http(&mut tasks, listener, dcos_app, limits, &stop);
                Some(addr)
            }
            None => None,
        };

        let zone = self.dns.zone.load();
        let listen: Vec<String> = self
            .dns
            .addresses
            .iter()
            .map(SocketAddr::to_string)
            .collect();
        release_freed_memory();
        // Every server is bound and the catalog loaded: DC/OS's units may now take this node's
        // DNS for working.
        self.dns.ready.store(true, Ordering::Release);
        info!(
            dns = %listen.join(","),
            http = %http_addr,
            dcos_net_http = ?dcos_http_addr,
            catalog = %self.catalog.source,
            revision = zone.serial,
            names = zone.len(),
            upstreams = ?self.dns.upstreams,
            l4lb = %self.vips.state,
            "lodestar agent ready"
        );
        Ok(Running {
            config: self.config,
            stop,
            tasks,
            catalog: self.catalog,
            dns: self.dns,
            vips: self.vips,
            demo,
        })
    }
}

/// The agent at work, until [`Running::drain`].
struct Running {
    config: AgentConfig,
    stop: CancellationToken,
    tasks: JoinSet<()>,
    catalog: Catalog,
    dns: Dns,
    vips: VipPlane,
    demo: Option<Demo>,
}

impl Running {
    /// Stops accepting, lets every task finish what it is doing (up to [`DRAIN_TIMEOUT`]),
    /// stops the UDP servers, and then, for the demo only, removes what it attached.
    async fn drain(mut self) {
        info!("shutting down");
        self.dns.ready.store(false, Ordering::Release);
        self.stop.cancel();
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                left = self.tasks.len(),
                "tasks still running after {DRAIN_TIMEOUT:?}; stopping them"
            );
            self.tasks.shutdown().await;
        }
        let interface = self.dns.interface.take();
        self.dns.stop();
        if let Some(i) = interface {
            i.remove().await;
        }
        let demo = self.demo.is_some();
        self.vips.stop(&self.config, demo);
        if let Some(d) = self.demo {
            d.stop();
        }
        drop(self.catalog);
    }
}

/// Serves `app` on `listener` until `stop`.
fn serve_http(
    tasks: &mut JoinSet<()>,
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: lodestar_dns::http::HttpLimits,
    stop: &CancellationToken,
) {
    tasks.spawn(lodestar_dns::http::serve(
        listener,
        app,
        limits,
        stop.clone().cancelled_owned(),
    ));
}

/// This host's name, for a node without a configured name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Hands the heap pages that start-up used and freed back to the kernel. Loading a large
/// catalog parses every value and builds the zone through short-lived buffers; glibc keeps
/// what they freed, which at 100,000 tasks was a sizeable part of the agent's resident memory
/// on every node (docs/benchmarks.md, "Memory at scale").
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; 0 keeps no extra padding at the heap's top.
    unsafe {
        libc::malloc_trim(0);
    }
}
