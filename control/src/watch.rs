//! Keeps an `Arc<Snapshot>` current from etcd: a paged full read, then a watch from the next
//! revision, with bursts coalesced, reconnects with backoff, and a full resync on compaction.
//! Whatever happens to etcd, the last good snapshot stays published.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{EventType, WatchOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, warn};

use crate::error::StoreError;
use crate::etcd::{is_too_large, note_rejection, note_vip_errors, EtcdConfig, EtcdStore};
use crate::keys::PREFIX;
use crate::metrics as m;
use crate::snapshot::{CatalogState, Snapshot};

/// Timing of the watch.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// How long after the first change of a burst the first snapshot is published.
    pub quiet: Duration,
    /// Minimum time between two published snapshots during a burst: 10,000 changes in one
    /// second cost about 1 s / `min_interval` rebuilds.
    pub min_interval: Duration,
    /// Changes per second from which the watch counts as in a burst. Below it every change is
    /// published after `quiet` alone, so isolated writes see no rate limit.
    pub burst_events: u64,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A watch silent this long is asked for a progress notification.
    pub progress_interval: Duration,
    /// A watch silent this long (despite progress requests) is abandoned and set up again.
    pub stall_after: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            quiet: Duration::from_millis(2),
            min_interval: Duration::from_millis(100),
            burst_events: 256,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            progress_interval: Duration::from_secs(5),
            stall_after: Duration::from_secs(15),
        }
    }
}

/// Counters a caller (tests, `/metrics`, `lodestar status`) can read without a recorder.
#[derive(Debug, Default)]
pub struct WatchStats {
    pub snapshots_published: AtomicU64,
    pub full_loads: AtomicU64,
    pub reconnects: AtomicU64,
    pub rejected_values: AtomicU64,
    pub events: AtomicU64,
    /// The latest revision applied (published or about to be).
    pub revision: AtomicI64,
    /// Is a watch established right now?
    pub connected: AtomicBool,
    /// Unix milliseconds of the last message from etcd (0: never).
    pub last_contact_ms: AtomicU64,
}

impl WatchStats {
    fn touch(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_contact_ms.store(now, Ordering::Relaxed);
    }
}

/// A running watch. Dropping it stops the background task; the receivers keep the last snapshot.
pub struct CatalogWatch {
    rx: watch::Receiver<Arc<Snapshot>>,
    stats: Arc<WatchStats>,
    task: JoinHandle<()>,
}

impl CatalogWatch {
    /// Starts watching. Returns at once; the first real snapshot follows the first full read
    /// (until then subscribers see `Snapshot::empty()`).
    pub fn spawn(etcd: EtcdConfig, config: WatchConfig) -> Self {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::empty()));
        let stats = Arc::new(WatchStats::default());
        let worker = Worker {
            etcd,
            config,
            tx,
            stats: stats.clone(),
            state: None,
            revision: 0,
            last_publish: None,
            rate: EventRate::default(),
        };
        let task = tokio::spawn(worker.run());
        CatalogWatch { rx, stats, task }
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.rx.clone()
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.rx.borrow().clone()
    }

    pub fn stats(&self) -> &Arc<WatchStats> {
        &self.stats
    }
}

impl Drop for CatalogWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Worker {
    etcd: EtcdConfig,
    config: WatchConfig,
    tx: watch::Sender<Arc<Snapshot>>,
    stats: Arc<WatchStats>,
    /// `None` until the first full read, and again when a compaction forces one.
    state: Option<CatalogState>,
    /// Every event up to this revision is in `state`.
    revision: i64,
    last_publish: Option<Instant>,
    rate: EventRate,
}

/// Events applied in the current and the previous one-second bucket.
#[derive(Default)]
struct EventRate {
    bucket_start: Option<Instant>,
    current: u64,
    previous: u64,
}

impl EventRate {
    fn add(&mut self, now: Instant, n: u64) {
        self.roll(now);
        self.current += n;
    }

    fn roll(&mut self, now: Instant) {
        match self.bucket_start {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => {}
            Some(start) if now.duration_since(start) < Duration::from_secs(2) => {
                self.previous = self.current;
                self.current = 0;
                self.bucket_start = Some(start + Duration::from_secs(1));
            }
            _ => {
                self.previous = 0;
                self.current = 0;
                self.bucket_start = Some(now);
            }
        }
    }

    /// Events seen within roughly the last one to two seconds.
    fn recent(&self) -> u64 {
        self.current + self.previous
    }
}

impl Worker {
    async fn run(mut self) {
        let mut backoff = self.config.backoff_min;
        let mut needs_full_load = true;
        loop {
            let result = self.session(&mut needs_full_load, &mut backoff).await;
            self.stats.connected.store(false, Ordering::Relaxed);
            match result {
                // The watch fell behind a compaction: read everything again at once. (A read
                // that itself keeps losing to compaction takes the backoff path below.)
                Err(StoreError::Compacted { revision }) => {
                    warn!(
                        revision,
                        "watch fell behind a compaction; reading the whole catalog again"
                    );
                    needs_full_load = true;
                    continue;
                }
                Err(StoreError::Request { error, .. }) if is_too_large(&error) => {
                    warn!(
                        retry_in = ?backoff,
                        "a watch response exceeded the message limit; reading the whole catalog in pages instead"
                    );
                    needs_full_load = true;
                }
                Err(e) => warn!(
                    retry_in = ?backoff,
                    revision = self.revision,
                    "etcd watch interrupted, serving the last snapshot: {e}"
                ),
                Ok(()) => {}
            }
            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::WATCH_RECONNECTS_TOTAL).increment(1);
            tokio::time::sleep(jittered(backoff)).await;
            backoff = (backoff * 2).min(self.config.backoff_max);
        }
    }

    /// One connection: connect, read everything if needed, then follow the watch until it breaks.
    async fn session(
        &mut self,
        needs_full_load: &mut bool,
        backoff: &mut Duration,
    ) -> Result<(), StoreError> {
        let store = EtcdStore::connect(self.etcd.clone()).await?;
        // A member with a leader just answered: we are in contact.
        self.stats.touch();
        if *needs_full_load {
            let loaded = store.load(self.state.as_ref()).await?;
            self.stats
                .rejected_values
                .fetch_add(loaded.rejected.len() as u64, Ordering::Relaxed);
            self.stats.full_loads.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::FULL_LOADS_TOTAL).increment(1);
            info!(
                revision = loaded.revision,
                rejected = loaded.rejected.len(),
                "read the whole catalog from etcd"
            );
            self.state = Some(loaded.state);
            self.revision = loaded.revision;
            *needs_full_load = false;
            self.stats.touch();
            self.stats.connected.store(true, Ordering::Relaxed);
            self.publish(&store);
        }
        self.follow(&store, backoff).await
    }

    async fn follow(
        &mut self,
        store: &EtcdStore,
        backoff: &mut Duration,
    ) -> Result<(), StoreError> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.revision + 1)
            .with_progress_notify();
        let mut client = store.watch_client();
        let mut stream = tokio::time::timeout(
            store.config().connect_timeout,
            client.watch(PREFIX, Some(options)),
        )
        .await
        .map_err(|_| StoreError::Timeout {
            endpoints: store.config().display(),
            op: "watch",
            after: store.config().connect_timeout,
        })?
        .map_err(|error| StoreError::Request { op: "watch", error })?;

        // When the first unpublished change arrived.
        let mut pending_since: Option<Instant> = None;
        // Liveness: a silent stream is asked for progress, and given up after `stall_after`.
        let mut last_message = Instant::now();
        let mut next_progress_request = last_message + self.config.progress_interval;
        let result = loop {
            let publish_at = pending_since.map(|since| self.publish_at(since));
            let wake = publish_at.map_or(next_progress_request, |p| p.min(next_progress_request));
            let message = tokio::select! {
                m = stream.message() => m,
                _ = sleep_until(wake) => {
                    let now = Instant::now();
                    if publish_at.is_some_and(|at| at <= now) {
                        self.publish(store);
                        pending_since = None;
                    }
                    if now.duration_since(last_message) >= self.config.stall_after {
                        break Err(StoreError::WatchStalled { after: now.duration_since(last_message) });
                    }
                    if now >= next_progress_request {
                        if let Err(error) = stream.request_progress().await {
                            break Err(StoreError::Request { op: "watch progress", error });
                        }
                        next_progress_request = now + self.config.progress_interval;
                    }
                    continue;
                }
            };
            let resp = match message {
                Ok(Some(resp)) => resp,
                Ok(None) => break Err(StoreError::WatchEnded),
                Err(error) => break Err(StoreError::Request { op: "watch", error }),
            };
            last_message = Instant::now();
            next_progress_request = last_message + self.config.progress_interval;
            self.stats.touch();
            if resp.compact_revision() > 0 {
                break Err(StoreError::Compacted {
                    revision: self.revision,
                });
            }
            if resp.canceled() {
                break Err(StoreError::WatchCanceled {
                    reason: resp.cancel_reason().to_string(),
                });
            }
            if resp.created() {
                debug!(from = self.revision + 1, "etcd watch established");
                self.stats.connected.store(true, Ordering::Relaxed);
                continue;
            }
            // Past `created`, any message proves the watch works: the next outage starts its
            // backoff afresh.
            *backoff = self.config.backoff_min;
            let events = resp.events();
            if events.is_empty() {
                // A progress notification: proof of life only. Its header revision is not taken
                // as "everything up to here was sent": before etcd 3.5.8 (we meet 3.4) one can
                // overtake its events (etcd issue 15220), and resuming from it would skip them.
                continue;
            }
            let state = self.state.get_or_insert_with(CatalogState::new);
            for event in events {
                let Some(kv) = event.kv() else { continue };
                self.stats.events.fetch_add(1, Ordering::Relaxed);
                let applied = match event.event_type() {
                    EventType::Put => state
                        .apply_put(kv.key(), kv.value())
                        .map(|vip_errors| note_vip_errors(kv.key(), &vip_errors)),
                    EventType::Delete => state.apply_delete(kv.key()),
                };
                if let Err(r) = applied {
                    note_rejection(&r);
                    self.stats.rejected_values.fetch_add(1, Ordering::Relaxed);
                }
                self.revision = self.revision.max(kv.mod_revision());
            }
            self.stats.revision.store(self.revision, Ordering::Relaxed);
            let now = Instant::now();
            self.rate.add(now, events.len() as u64);
            pending_since.get_or_insert(now);
        };
        // Whole revisions arrive in one response, so what was applied is consistent: publish it.
        if pending_since.is_some() {
            self.publish(store);
        }
        result
    }

    /// When changes pending since `since` are published: after `quiet`; and during a burst,
    /// never sooner than `min_interval` after the previous snapshot.
    fn publish_at(&self, since: Instant) -> Instant {
        let after_quiet = since + self.config.quiet;
        match self.last_publish {
            Some(last) if self.rate.recent() >= self.config.burst_events => {
                after_quiet.max(last + self.config.min_interval)
            }
            _ => after_quiet,
        }
    }

    fn publish(&mut self, store: &EtcdStore) {
        let Some(state) = &self.state else { return };
        let snapshot = state.snapshot(self.revision, store.source());
        metrics::gauge!(m::REVISION).set(self.revision as f64);
        metrics::gauge!(m::TASKS).set(snapshot.tasks.len() as f64);
        metrics::counter!(m::SNAPSHOTS_PUBLISHED_TOTAL).increment(1);
        self.stats.revision.store(self.revision, Ordering::Relaxed);
        self.stats
            .snapshots_published
            .fetch_add(1, Ordering::Relaxed);
        self.last_publish = Some(Instant::now());
        self.tx.send_replace(Arc::new(snapshot));
    }
}

/// Backoff with up to 25% jitter, so that a fleet of agents does not reconnect in step.
fn jittered(d: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d + d.mul_f64(f64::from(nanos % 1000) / 4000.0)
}
