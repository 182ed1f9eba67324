//! The agent's HTTP API: Mesos-DNS's `/v1` routes, `/metrics`, and the ops endpoints; and
//! dcos-net's API, for a listener of its own.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use lodestar_dns::forward::Forwarder;
use lodestar_dns::http::{router, HttpState};
use lodestar_dns::stats::DnsStats;
use lodestar_l4lb::health::ActiveStats;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use super::dns::Dns;
use super::l4lb::{SharedL4lb, VipPlane};
use crate::config::AgentConfig;
use crate::ops::Ops;

/// Every metric the agent exports, read from the parts' own counters when `/metrics` is
/// scraped and published through the `metrics` facade to the one exporter.
#[derive(Clone)]
pub(super) struct Collectors {
    prometheus: PrometheusHandle,
    dns: Arc<DnsStats>,
    forwarder: Arc<Forwarder>,
    l4lb: Option<SharedL4lb>,
    active: Arc<ActiveStats>,
    ops: Ops,
}

impl Collectors {
    pub fn new(prometheus: PrometheusHandle, dns: &Dns, vips: &VipPlane, ops: &Ops) -> Self {
        Ops::describe_metrics();
        Collectors {
            prometheus,
            dns: dns.stats.clone(),
            forwarder: dns.forwarder.clone(),
            l4lb: vips.l4lb.clone(),
            active: vips.active_stats.clone(),
            ops: ops.clone(),
        }
    }

    /// The Prometheus text of everything, as of now.
    fn render(&self) -> String {
        lodestar_dns::metrics::publish(&self.dns, self.forwarder.stats());
        if let Some(l) = &self.l4lb {
            l.lock()
                .unwrap_or_else(|p| p.into_inner())
                .publish_metrics();
            self.active.publish();
        }
        self.ops.publish_metrics();
        self.prometheus.render()
    }

    /// Every `PUBLISH_INTERVAL` until `stop`: the DNS latency histogram reaches the exporter as
    /// samples, which its upkeep folds into buckets, so memory stays bounded between scrapes.
    pub async fn keep(self, stop: CancellationToken) {
        let mut every = tokio::time::interval(lodestar_dns::metrics::PUBLISH_INTERVAL);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.cancelled() => return,
            }
            // The collectors' locks are also taken by a scrape (on a blocking thread): wait
            // for them there too, never on an async worker.
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || {
                lodestar_dns::metrics::publish(&this.dns, this.forwarder.stats());
                this.prometheus.run_upkeep();
            })
            .await;
        }
    }
}

/// Every route the agent serves.
pub(super) fn routes(config: &AgentConfig, dns: &Dns, collectors: Collectors, ops: &Ops) -> Router {
    router(HttpState {
        zone: dns.zone.clone(),
        zone_config: config.dns.zone.clone(),
        config_json: Arc::new(mesos_dns_config(config, &dns.upstreams)),
        metrics: Arc::new(move || collectors.render()),
    })
    .merge(ops.clone().router())
}

/// dcos-net's routes (its `/v1` differs from Mesos-DNS's at the same paths).
pub(super) fn dcos_net_routes(config: &AgentConfig, dns: &Dns, collectors: Collectors) -> Router {
    lodestar_dns::dcos_api::router(lodestar_dns::dcos_api::DcosApiState {
        catalog: dns.local.clone(),
        records: dns.record_sets.clone(),
        zone: dns.zone.clone(),
        labels: config.dns.zone.labels,
        metrics: Arc::new(move || collectors.render()),
    })
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
