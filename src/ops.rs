//! The agent's operational surface: `/healthz`, `/readyz`, `/v1/status` (what `lodestar
//! status` prints), catalog freshness in `/metrics`, and a log line when the catalog goes stale.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use lodestar_control::WatchStats;
use lodestar_dns::stats::DnsStats;
use lodestar_dns::zone::Zone;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// Without contact with etcd for this long, the catalog counts as stale.
pub const STALE_AFTER: Duration = Duration::from_secs(15);

pub const CATALOG_CONNECTED: &str = "lodestar_catalog_connected";
pub const CATALOG_CONTACT_AGE_SECONDS: &str = "lodestar_catalog_last_contact_age_seconds";
pub const CATALOG_STALE: &str = "lodestar_catalog_stale";

/// What the ops endpoints read.
#[derive(Clone)]
pub struct Ops {
    pub node: String,
    pub site: Option<String>,
    pub started: Instant,
    pub dns: Vec<SocketAddr>,
    pub zone: Arc<ArcSwap<Zone>>,
    pub stats: Arc<DnsStats>,
    /// The etcd watch's counters; `None` for a catalog file or the demo (never stale).
    pub watch: Option<Arc<WatchStats>>,
    /// Where the served catalog came from when it is the local cache (etcd unreachable at start).
    pub from_cache: Arc<std::sync::atomic::AtomicBool>,
    /// The VIP load balancer, when it runs.
    pub l4lb: Option<Arc<std::sync::Mutex<lodestar_l4lb::L4lb>>>,
    /// What the load balancer is doing (`attached to <cgroup>`, `off`, or why it is not).
    pub l4lb_state: String,
}

/// `/v1/status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub node: String,
    pub site: Option<String>,
    pub uptime_seconds: u64,
    pub catalog: CatalogStatus,
    pub dns: DnsStatus,
    #[serde(default)]
    pub l4lb: L4lbStatus,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct L4lbStatus {
    pub state: String,
    /// Catalog revision last programmed into the maps.
    pub revision: i64,
    /// (VIP, address/protocol, healthy backends, backends, connections).
    pub vips: Vec<(String, String, usize, usize, u64)>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CatalogStatus {
    pub source: String,
    pub revision: i64,
    /// Seconds since the last message from etcd (None: not an etcd catalog, or never).
    pub last_contact_age_seconds: Option<f64>,
    pub connected: bool,
    pub stale: bool,
    pub from_local_cache: bool,
    pub tasks: usize,
    pub vips: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DnsStatus {
    pub listen: Vec<String>,
    pub names: usize,
    pub queries: u64,
    pub responses: Vec<(String, u64)>,
    pub forwarded: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Ops {
    /// (connected, seconds since last contact, stale).
    fn freshness(&self) -> (bool, Option<f64>, bool) {
        let from_cache = self.from_cache.load(Ordering::Relaxed);
        match &self.watch {
            None => (true, None, false),
            Some(w) => {
                let connected = w.connected.load(Ordering::Relaxed);
                let last = w.last_contact_ms.load(Ordering::Relaxed);
                let age = (last > 0).then(|| now_ms().saturating_sub(last) as f64 / 1e3);
                let stale =
                    from_cache || !connected || age.is_none_or(|a| a > STALE_AFTER.as_secs_f64());
                (connected, age, stale)
            }
        }
    }

    pub fn status(&self) -> Status {
        let zone = self.zone.load();
        let (connected, age, stale) = self.freshness();
        let rcodes = [
            "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
        ];
        Status {
            node: self.node.clone(),
            site: self.site.clone(),
            uptime_seconds: self.started.elapsed().as_secs(),
            catalog: CatalogStatus {
                source: zone.snapshot.source.to_string(),
                revision: zone.snapshot.revision,
                last_contact_age_seconds: age,
                connected,
                stale,
                from_local_cache: self.from_cache.load(Ordering::Relaxed),
                tasks: zone.snapshot.tasks.len(),
                vips: zone.snapshot.vip_count(),
            },
            dns: DnsStatus {
                listen: self.dns.iter().map(ToString::to_string).collect(),
                names: zone.len(),
                queries: self.stats.queries(),
                responses: rcodes
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (r.to_string(), self.stats.rcode(i as u8)))
                    .collect(),
                forwarded: self.stats.forwarded(),
            },
            l4lb: self.l4lb_status(),
        }
    }

    fn l4lb_status(&self) -> L4lbStatus {
        let mut out = L4lbStatus {
            state: self.l4lb_state.clone(),
            ..L4lbStatus::default()
        };
        if let Some(l) = &self.l4lb {
            let l = l.lock().unwrap_or_else(|p| p.into_inner());
            out.revision = l.revision();
            out.vips = l
                .status()
                .into_iter()
                .map(|v| {
                    (
                        v.vip,
                        format!("{}/{}", v.address, v.protocol),
                        v.healthy,
                        v.total,
                        v.connects + v.datagrams,
                    )
                })
                .collect();
        }
        out
    }

    /// The data plane's VIPs with backends and counters (`lodestar vips ls --agent`).
    pub fn vips(&self) -> Vec<lodestar_l4lb::VipStatus> {
        match &self.l4lb {
            Some(l) => l.lock().unwrap_or_else(|p| p.into_inner()).status(),
            None => Vec::new(),
        }
    }

    /// The help text of the freshness gauges, once at start.
    pub fn describe_metrics() {
        metrics::describe_gauge!(CATALOG_CONNECTED, "1 while the etcd watch is established.");
        metrics::describe_gauge!(
            CATALOG_CONTACT_AGE_SECONDS,
            "Seconds since the last message from etcd."
        );
        metrics::describe_gauge!(
            CATALOG_STALE,
            "1 while the served catalog may be out of date."
        );
    }

    /// Catalog freshness, computed at scrape time.
    pub fn publish_metrics(&self) {
        let (connected, age, stale) = self.freshness();
        metrics::gauge!(CATALOG_CONNECTED).set(f64::from(u8::from(connected)));
        if let Some(age) = age {
            metrics::gauge!(CATALOG_CONTACT_AGE_SECONDS).set(age);
        }
        metrics::gauge!(CATALOG_STALE).set(f64::from(u8::from(stale)));
    }

    /// Logs once when the catalog goes stale and once when it is fresh again. The first look
    /// is at once: an agent that starts on its local cache is stale from its first moment, and
    /// etcd may be back before a second has passed.
    pub async fn watch_freshness(self, stop: tokio_util::sync::CancellationToken) {
        let mut was_stale = false;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let (_, age, stale) = self.freshness();
            if stale && !was_stale {
                warn!(
                    last_contact_age_seconds = age,
                    "catalog is stale: etcd is out of reach; serving the last snapshot"
                );
            } else if !stale && was_stale {
                info!("catalog is fresh again: etcd is back");
            }
            was_stale = stale;
        }
    }

    /// `/healthz`, `/readyz` and `/v1/status`.
    pub fn router(self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/v1/status", get(status))
            .route("/v1/vips", get(vips))
            .with_state(Arc::new(self))
    }
}

/// Ready once a catalog is loaded and the servers are bound (this router only runs then);
/// a stale catalog is still served, so still ready, and the body says so.
async fn readyz(State(ops): State<Arc<Ops>>) -> (StatusCode, String) {
    let zone = ops.zone.load();
    if !zone.snapshot.is_loaded() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no catalog loaded\n".into(),
        );
    }
    let (_, _, stale) = ops.freshness();
    let text = if stale {
        "ready (catalog stale)\n"
    } else {
        "ready\n"
    };
    (StatusCode::OK, text.into())
}

async fn status(State(ops): State<Arc<Ops>>) -> Json<Status> {
    Json(ops.status())
}

async fn vips(State(ops): State<Arc<Ops>>) -> Json<Vec<lodestar_l4lb::VipStatus>> {
    Json(ops.vips())
}
