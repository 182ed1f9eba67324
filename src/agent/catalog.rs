//! The agent's catalog: which store feeds it (etcd, a file, or the embedded demo), and the
//! first snapshot, from the store or, when etcd stays out of reach at start, the local cache.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use lodestar_control::WatchStats;
use lodestar_control::{demo, CatalogWatch, FileStore, Snapshot, WatchConfig};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cache;
use crate::config::CatalogConfig;

/// Keeps whichever store feeds the snapshot channel alive (held, never read).
#[allow(dead_code)]
enum Store {
    Etcd(CatalogWatch),
    File(FileStore),
    Demo(watch::Sender<Arc<Snapshot>>),
}

/// An open catalog: its store, the channel it publishes snapshots on, and the first one.
pub(super) struct Catalog {
    store: Store,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// What the agent serves first. When it came from the local cache, the channel's value is
    /// left unseen, so the updaters pick etcd's snapshot up when it comes.
    pub first: Arc<Snapshot>,
    /// True while the served catalog is the local cache's (shared with the ops endpoints).
    pub from_cache: Arc<AtomicBool>,
    /// Where the last etcd snapshot is kept on disk (etcd only).
    pub cache_file: Option<PathBuf>,
    /// What the catalog is, for the log (`etcd http://...`, `file ...`, `demo`).
    pub source: String,
}

impl Catalog {
    /// Opens the configured store and waits for its first snapshot (or the local cache).
    pub async fn open(config: &CatalogConfig) -> Result<Catalog> {
        let (store, mut snapshots) = open_store(config)?;
        let source = snapshots.borrow().source.to_string();
        let cache_file = match &store {
            Store::Etcd(_) => config
                .cache_file
                .clone()
                .filter(|p| !p.as_os_str().is_empty()),
            _ => None,
        };
        let mut cached = None;
        if !snapshots.borrow().is_loaded() {
            info!(catalog = %source, "waiting for the first catalog snapshot");
            let wait = Duration::from_millis(config.startup_wait_ms);
            let loaded = tokio::time::timeout(wait, snapshots.wait_for(|s| s.is_loaded()))
                .await
                .map(|r| r.map(|_| ()));
            match (loaded, &cache_file) {
                (Ok(r), _) => r.context("the catalog store stopped")?,
                (Err(_), Some(path)) => match cache::read(path, config.cache_max_age()) {
                    Ok(s) => {
                        warn!(
                            path = %path.display(),
                            revision = s.revision,
                            "etcd is out of reach: serving the catalog cached on local disk until it answers"
                        );
                        cached = Some(Arc::new(s));
                    }
                    Err(e) => {
                        warn!("etcd is out of reach and there is no usable local cache ({e:#}); still waiting");
                        wait_loaded(&mut snapshots).await?;
                    }
                },
                (Err(_), None) => wait_loaded(&mut snapshots).await?,
            }
        }
        let from_cache = Arc::new(AtomicBool::new(cached.is_some()));
        let first = match cached {
            Some(c) => c,
            None => snapshots.borrow_and_update().clone(),
        };
        Ok(Catalog {
            store,
            snapshots,
            first,
            from_cache,
            cache_file,
            source,
        })
    }

    /// The etcd watch's counters; `None` for a catalog file or the demo (never stale).
    pub fn watch_stats(&self) -> Option<Arc<WatchStats>> {
        match &self.store {
            Store::Etcd(w) => Some(w.stats().clone()),
            _ => None,
        }
    }

    /// Is this the embedded demo catalog?
    pub fn is_demo(&self) -> bool {
        matches!(self.store, Store::Demo(_))
    }
}

async fn wait_loaded(snapshots: &mut watch::Receiver<Arc<Snapshot>>) -> Result<()> {
    snapshots
        .wait_for(|s| s.is_loaded())
        .await
        .context("the catalog store stopped")?;
    Ok(())
}

fn open_store(config: &CatalogConfig) -> Result<(Store, watch::Receiver<Arc<Snapshot>>)> {
    if !config.etcd.is_empty() {
        let w = CatalogWatch::spawn(config.etcd_config(), WatchConfig::default());
        let rx = w.subscribe();
        return Ok((Store::Etcd(w), rx));
    }
    if let Some(path) = &config.file {
        let f = FileStore::spawn(path, Duration::from_millis(config.file_poll_ms))?;
        let rx = f.subscribe();
        return Ok((Store::File(f), rx));
    }
    let (tx, rx) = watch::channel(Arc::new(demo::snapshot()));
    Ok((Store::Demo(tx), rx))
}
