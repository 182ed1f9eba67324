//! The agent's copy of the last etcd snapshot on local disk, so an agent restarted while etcd
//! is out of reach still serves the catalog it had. Written atomically and durably (mode 0600,
//! fsync of the file and its directory before and after the rename), at most every few
//! seconds; read only at start, and refused there when etcd last confirmed it too long ago.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use lodestar_control::{CatalogDocument, Snapshot, Source, WatchStats};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Minimum time between two writes of the cache.
const MIN_INTERVAL: Duration = Duration::from_secs(2);

/// How often, while the catalog does not change, the cache's modification time is moved up to
/// the agent's last contact with etcd: its age is how long ago etcd last confirmed it.
const CONFIRM_INTERVAL: Duration = Duration::from_secs(60);

/// Reads the cached catalog, unless etcd last confirmed it more than `max_age` ago. A file
/// that is not a whole catalog (torn, truncated, garbage) is an error, never a panic.
pub fn read(path: &Path, max_age: Duration) -> Result<Snapshot> {
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .with_context(|| format!("cannot read the catalog cache {}", path.display()))?;
    // A modification time in the future (a clock set back) counts as now.
    let age = SystemTime::now()
        .duration_since(modified)
        .unwrap_or_default();
    if age > max_age {
        bail!(
            "the catalog cache {} was last confirmed by etcd {} ago, longer than \
             catalog.cache_max_age_secs allows ({})",
            path.display(),
            humantime::format_duration(Duration::from_secs(age.as_secs())),
            humantime::format_duration(max_age)
        );
    }
    let doc = lodestar_control::file::read_file(path)
        .with_context(|| format!("the catalog cache {} is not usable", path.display()))?;
    let revision = doc.revision.unwrap_or(0);
    Ok(doc.into_state().snapshot(
        revision,
        Source::File(format!("{} (local cache)", path.display())),
    ))
}

/// Replaces `path` with `snapshot`: a temporary file (mode 0600: the catalog maps every
/// service to its addresses) written and synced, renamed over the old one, and the directory
/// synced, so that a crash leaves either the old cache or the new one, whole.
fn write(path: &Path, snapshot: &Snapshot) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_vec(&CatalogDocument::from_snapshot(snapshot))?;
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    // `mode` applies only to a new file; one left behind by an older agent keeps its own.
    file.set_permissions(Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(&text))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(file);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

/// Moves the cache's modification time up to `at` (never back): etcd confirmed it then.
fn confirm(path: &Path, at: SystemTime) -> std::io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    if file.metadata()?.modified()? < at {
        file.set_modified(at)?;
    }
    Ok(())
}

/// When the agent last heard from etcd, if ever.
fn last_contact(stats: &WatchStats) -> Option<SystemTime> {
    match stats.last_contact_ms.load(Ordering::Relaxed) {
        0 => None,
        ms => Some(UNIX_EPOCH + Duration::from_millis(ms)),
    }
}

/// Keeps `path` a copy of the latest loaded snapshot until `stop`, when the latest one is
/// written once more if it has not been yet. With the watch's counters, the copy's age keeps
/// following the last contact with etcd while the catalog does not change.
pub async fn keep(
    path: PathBuf,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    watch: Option<Arc<WatchStats>>,
    stop: CancellationToken,
) {
    let mut warned = false;
    let mut written = -1;
    let mut confirm_tick = tokio::time::interval(CONFIRM_INTERVAL);
    confirm_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
            _ = confirm_tick.tick() => {
                let at = watch.as_deref().and_then(last_contact);
                if let (Some(at), true) = (at, written >= 0) {
                    let p = path.clone();
                    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || confirm(&p, at)).await {
                        debug!(path = %path.display(), "cannot update the catalog cache's age: {e}");
                    }
                }
            }
            _ = stop.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

    fn cache_in(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("state").join("catalog-cache.json")
    }

    /// A cache of the demo catalog, written in a new directory; `age` old, if given.
    fn written_cache(age: Option<Duration>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = cache_in(&dir);
        write(&path, &lodestar_control::demo::snapshot()).unwrap();
        if let Some(age) = age {
            set_age(&path, age);
        }
        (dir, path)
    }

    const EIGHT_DAYS: Duration = Duration::from_secs(8 * 24 * 3600);

    fn set_age(path: &Path, age: Duration) {
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::now() - age)
            .unwrap();
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_cache_is_private_to_its_owner_even_over_an_old_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = cache_in(&dir);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // A temporary file an older agent left, readable by everyone.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, b"{").unwrap();
        std::fs::set_permissions(&tmp, Permissions::from_mode(0o644)).unwrap();
        write(&path, &lodestar_control::demo::snapshot()).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert!(!tmp.exists(), "the temporary file was renamed");
        let s = read(&path, WEEK).unwrap();
        assert_eq!(
            s.tasks.len(),
            lodestar_control::demo::snapshot().tasks.len()
        );
    }

    #[test]
    fn a_new_cache_directory_is_private_too() {
        let (_dir, path) = written_cache(None);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    #[test]
    fn a_cache_older_than_the_maximum_age_is_refused_and_says_why() {
        let (_dir, path) = written_cache(Some(EIGHT_DAYS));
        let err = format!("{:#}", read(&path, WEEK).unwrap_err());
        assert!(
            err.contains("was last confirmed by etcd 8days")
                && err.contains("longer than catalog.cache_max_age_secs allows (7days)"),
            "{err}"
        );
        // The same file within a longer limit is served.
        assert!(read(&path, 2 * WEEK).is_ok());
    }

    #[test]
    fn contact_with_etcd_renews_the_cache_and_never_ages_it() {
        let (_dir, path) = written_cache(Some(EIGHT_DAYS));
        assert!(read(&path, WEEK).is_err());
        confirm(&path, SystemTime::now()).unwrap();
        assert!(read(&path, WEEK).is_ok());
        // An older contact does not move the time back.
        confirm(&path, SystemTime::now() - EIGHT_DAYS).unwrap();
        assert!(read(&path, WEEK).is_ok());
    }

    #[test]
    fn a_torn_or_garbage_cache_is_refused_without_panic() {
        let (dir, path) = written_cache(None);
        let whole = std::fs::read(&path).unwrap();
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for (what, bytes) in [
            ("torn in half", whole[..whole.len() / 2].to_vec()),
            ("cut by one byte", whole[..whole.len() - 1].to_vec()),
            ("empty", Vec::new()),
            ("garbage", garbage),
            ("another JSON document", b"[1, 2, 3]".to_vec()),
        ] {
            std::fs::write(&path, &bytes).unwrap();
            let err = format!("{:#}", read(&path, WEEK).expect_err(what));
            assert!(err.contains("is not usable"), "{what}: {err}");
        }
        let missing = dir.path().join("none.json");
        let err = format!("{:#}", read(&missing, WEEK).unwrap_err());
        assert!(err.contains("cannot read the catalog cache"), "{err}");
    }
}
