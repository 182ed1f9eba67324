//! Names of the load balancer's metrics (`lodestar_` prefix, `_total` for counters), their
//! descriptions, and their publication through the `metrics` facade: the BPF per-CPU counters
//! are read when the exporter is scraped (`L4lb::publish_metrics`), like any collector's.

use std::sync::Once;

use metrics::{describe_counter, describe_gauge, gauge, Label};

/// Labels of the per-VIP metrics: `vip` (the catalog's name), `address`, `protocol`.
pub const VIP_CONNECTIONS_TOTAL: &str = "lodestar_vip_connections_total";
pub const VIP_DATAGRAMS_TOTAL: &str = "lodestar_vip_datagrams_total";
pub const VIP_NO_BACKEND_TOTAL: &str = "lodestar_vip_no_backend_total";
pub const VIP_FAIL_OPEN_TOTAL: &str = "lodestar_vip_fail_open_total";
pub const VIP_PASSIVE_SKIPS_TOTAL: &str = "lodestar_vip_passive_skips_total";
pub const VIP_BACKENDS_HEALTHY: &str = "lodestar_vip_backends_healthy";
pub const VIP_BACKENDS: &str = "lodestar_vip_backends";
/// Per backend of a VIP: the VIP's labels and `backend`.
pub const VIP_BACKEND_CONNECTIONS_TOTAL: &str = "lodestar_vip_backend_connections_total";
pub const VIP_BACKEND_UP: &str = "lodestar_vip_backend_up";
/// Per VIP of the XDP path: the VIP's labels and `mode`.
pub const XDP_VIP_PACKETS_TOTAL: &str = "lodestar_xdp_vip_packets_total";
pub const XDP_VIP_BYTES_TOTAL: &str = "lodestar_xdp_vip_bytes_total";
pub const XDP_VIP_NEW_FLOWS_TOTAL: &str = "lodestar_xdp_vip_new_flows_total";
pub const XDP_VIP_LRU_MISSES_TOTAL: &str = "lodestar_xdp_vip_lru_misses_total";
/// The XDP/tc path's `lx_global` counters, by `event` (`layout::LX_COUNTERS`' labels).
pub const XDP_EVENTS_TOTAL: &str = "lodestar_xdp_events_total";
/// Per backend address (`backend`), whichever VIPs it backs.
pub const BACKEND_CONNECT_FAILURES_TOTAL: &str = "lodestar_backend_connect_failures_total";
pub const MAP_WRITES_TOTAL: &str = "lodestar_l4lb_map_writes_total";
pub const APPLY_ERRORS_TOTAL: &str = "lodestar_l4lb_apply_errors_total";
pub const REVISION: &str = "lodestar_l4lb_revision";
/// VIP addresses the guard leaves out (`guard::Refusal`), by `reason`: now, and ever refused.
pub const VIP_REFUSED: &str = "lodestar_vip_refused";
pub const VIP_REFUSALS_TOTAL: &str = "lodestar_vip_refusals_total";
/// Active health probes by `result` (`ok`, `failed`).
pub const HEALTH_PROBES_TOTAL: &str = "lodestar_health_probes_total";
pub const HEALTH_TRANSITIONS_TOTAL: &str = "lodestar_health_transitions_total";

/// Gives every metric its help text, once (the recorder must be installed first).
pub fn describe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (name, help) in [
            (VIP_CONNECTIONS_TOTAL, "connect() calls steered to a backend"),
            (
                VIP_DATAGRAMS_TOTAL,
                "unconnected UDP sends steered to a backend",
            ),
            (
                VIP_NO_BACKEND_TOTAL,
                "calls to a VIP without any backend (refused)",
            ),
            (
                VIP_FAIL_OPEN_TOTAL,
                "calls steered while no backend was healthy",
            ),
            (
                VIP_PASSIVE_SKIPS_TOTAL,
                "picks that passed over a backend failing passively",
            ),
            (
                VIP_BACKEND_CONNECTIONS_TOTAL,
                "connect() calls and UDP sends steered to each backend",
            ),
            (
                XDP_VIP_PACKETS_TOTAL,
                "packets the XDP path forwarded for the VIP",
            ),
            (XDP_VIP_BYTES_TOTAL, "bytes the XDP path forwarded for the VIP"),
            (
                XDP_VIP_NEW_FLOWS_TOTAL,
                "flows the XDP path started tracking",
            ),
            (
                XDP_VIP_LRU_MISSES_TOTAL,
                "mid-flow packets of untracked flows (sent where Maglev says)",
            ),
            (
                XDP_EVENTS_TOTAL,
                "the XDP/tc path's packets by what happened to them",
            ),
            (
                BACKEND_CONNECT_FAILURES_TOTAL,
                "failed connects to a backend address seen by the kernel (refused, reset, SYN timeout)",
            ),
            (MAP_WRITES_TOTAL, "BPF map writes made by the reconciler"),
            (APPLY_ERRORS_TOTAL, "VIPs that could not be programmed"),
            (
                VIP_REFUSALS_TOTAL,
                "VIP addresses refused (outside l4lb.vip_ranges, or the node's, etcd's, a master's, an upstream's, loopback) when first seen",
            ),
            (HEALTH_PROBES_TOTAL, "active health probes by result"),
            (
                HEALTH_TRANSITIONS_TOTAL,
                "backends taken out or brought back by active checks",
            ),
        ] {
            describe_counter!(name, help);
        }
        for (name, help) in [
            (
                VIP_BACKENDS_HEALTHY,
                "backends taking new connections by health",
            ),
            (VIP_BACKENDS, "backends known for the VIP"),
            (
                VIP_BACKEND_UP,
                "1 while a backend takes new connections (catalog health, active checks and passive failures)",
            ),
            (REVISION, "catalog revision last programmed into the maps"),
            (VIP_REFUSED, "VIP addresses refused now, by reason"),
        ] {
            describe_gauge!(name, help);
        }
    });
}

/// Sets counters of one label set to the totals read from the kernel.
pub(crate) fn counters(labels: &[Label], values: &[(&'static str, u64)]) {
    for (name, v) in values {
        metrics::counter!(*name, labels.iter()).absolute(*v);
    }
}

/// Sets gauges of one label set.
pub(crate) fn gauges(labels: &[Label], values: &[(&'static str, f64)]) {
    for (name, v) in values {
        gauge!(*name, labels.iter()).set(*v);
    }
}
