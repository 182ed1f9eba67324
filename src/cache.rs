//! The agent's copy of the last etcd snapshot on local disk, so an agent restarted while etcd
//! is out of reach still serves the catalog it had. Written atomically, at most every few
//! seconds; read only at start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use lodestar_control::{CatalogDocument, Snapshot, Source};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Minimum time between two writes of the cache.
const MIN_INTERVAL: Duration = Duration::from_secs(2);

/// Reads the cached catalog.
pub fn read(path: &Path) -> Result<Snapshot> {
    let doc = lodestar_control::file::read_file(path)?;
    let revision = doc.revision.unwrap_or(0);
    Ok(doc.into_state().snapshot(
        revision,
        Source::File(format!("{} (local cache)", path.display())),
    ))
}

fn write(path: &Path, snapshot: &Snapshot) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_vec(&CatalogDocument::from_snapshot(snapshot))?;
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Keeps `path` a copy of the latest loaded snapshot until `stop`, when the latest one is
/// written once more if it has not been yet.
pub async fn keep(
    path: PathBuf,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    stop: CancellationToken,
) {
    let mut warned = false;
    let mut written = -1;
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        if snapshot.is_loaded() && snapshot.revision != written {
            let p = path.clone();
            let s = snapshot.clone();
            match tokio::task::spawn_blocking(move || write(&p, &s)).await {
                Ok(Ok(())) => {
                    debug!(path = %path.display(), revision = snapshot.revision, "catalog cached on disk");
                    written = snapshot.revision;
                    warned = false;
                }
                Ok(Err(e)) if !warned => {
                    warn!("cannot keep the catalog cache: {e:#}");
                    warned = true;
                }
                _ => {}
            }
        }
        if stop.is_cancelled() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(MIN_INTERVAL) => {}
            // One last write of whatever came since.
            _ = stop.cancelled() => continue,
        }
        tokio::select! {
            changed = snapshots.changed() => if changed.is_err() { return },
            _ = stop.cancelled() => {}
        }
    }
}
