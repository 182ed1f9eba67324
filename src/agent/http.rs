//! The agent's HTTP API: Mesos-DNS's `/v1` routes, `/metrics`, and the ops endpoints.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use lodestar_dns::http::{router, HttpState};
use metrics_exporter_prometheus::PrometheusHandle;

use super::dns::Dns;
use super::l4lb::VipPlane;
use crate::config::AgentConfig;
use crate::ops::Ops;

/// Every route the agent serves.
pub(super) fn routes(
    config: &AgentConfig,
    prometheus: PrometheusHandle,
    dns: &Dns,
    vips: &VipPlane,
    ops: &Ops,
) -> Router {
    let forward_stats = dns.forwarder.clone();
    let dns_stats = dns.stats.clone();
    let ops_metrics = ops.clone();
    let l4lb = vips.l4lb.clone();
    let active = vips.active_stats.clone();
    let metrics = Arc::new(move || {
        if let Some(l) = &l4lb {
            l.lock()
                .unwrap_or_else(|p| p.into_inner())
                .publish_metrics();
            active.publish();
        }
        let mut text = prometheus.render();
        dns_stats.render(&mut text);
        lodestar_dns::stats::render_forward(forward_stats.stats(), &mut text);
        ops_metrics.render(&mut text);
        text
    });
    router(HttpState {
        zone: dns.zone.clone(),
        zone_config: config.dns.zone.clone(),
        config_json: Arc::new(mesos_dns_config(config, &dns.upstreams)),
        metrics,
    })
    .merge(ops.clone().router())
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
