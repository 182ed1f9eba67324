//! Names of the catalog metrics (Prometheus style: `lodestar_` prefix, `_total` for counters),
//! and the small helpers that record them, so each name is written once.

use crate::keys::Rejection;

/// Values refused (malformed, unknown key, wrong schema, bad VIP label), by `kind` and `reason`.
pub const REJECTED_VALUES_TOTAL: &str = "lodestar_catalog_rejected_values_total";
/// Snapshots handed to dns and l4lb.
pub const SNAPSHOTS_PUBLISHED_TOTAL: &str = "lodestar_catalog_snapshots_published_total";
/// Complete reads of the catalog (start, compaction, reconnect after a compaction).
pub const FULL_LOADS_TOTAL: &str = "lodestar_catalog_full_loads_total";
/// Times the etcd watch was lost and set up again.
pub const WATCH_RECONNECTS_TOTAL: &str = "lodestar_catalog_watch_reconnects_total";
/// Catalog file reloads refused because the file was broken.
pub const FILE_RELOAD_FAILURES_TOTAL: &str = "lodestar_catalog_file_reload_failures_total";
/// The revision of the published snapshot.
pub const REVISION: &str = "lodestar_catalog_revision";
/// Tasks in the published snapshot.
pub const TASKS: &str = "lodestar_catalog_tasks";

pub(crate) fn count_rejection(r: &Rejection) {
    metrics::counter!(REJECTED_VALUES_TOTAL, "kind" => r.kind_label(), "reason" => r.reason())
        .increment(1);
}
