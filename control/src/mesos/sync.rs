//! One `mesos-sync` poll: fetch the leading master's state, translate it, allocate named VIP
//! addresses, and write only what differs from etcd, in transactions guarded by the revisions
//! it read (and by still leading). A failed poll changes nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use etcd_client::{Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp};
use tracing::{debug, info, warn};

use crate::error::EtcdError;
use crate::etcd::{MAX_TXN_BYTES, MAX_TXN_OPS};
use crate::keys::{self, Kind, Record, PREFIX};
use crate::mesos::election;
use crate::mesos::fetch::{FetchError, MasterClient};
pub use crate::mesos::guard::DeleteGuard;
use crate::mesos::guard::{GuardState, Verdict, GUARD_KEY};
use crate::mesos::state::State;
use crate::mesos::translate::{translate, Translation};
use crate::mesos::vipalloc::{self, VipRanges};
use crate::model::VipAddress;
use crate::EtcdStore;

/// Transactions in flight at once while writing.
const IN_FLIGHT: usize = 8;

/// Metric names.
pub const POLLS_TOTAL: &str = "lodestar_mesos_sync_polls_total";
pub const POLL_FAILURES_TOTAL: &str = "lodestar_mesos_sync_poll_failures_total";
pub const WRITES_TOTAL: &str = "lodestar_mesos_sync_writes_total";
pub const REJECTED_VIP_LABELS_TOTAL: &str = "lodestar_mesos_sync_rejected_vip_labels_total";
pub const VIP_ALLOCATION_FAILURES_TOTAL: &str = "lodestar_mesos_sync_vip_allocation_failures_total";
pub const DUPLICATE_TASK_IDS_TOTAL: &str = "lodestar_mesos_sync_duplicate_task_ids_total";
pub const DELETES_HELD_TOTAL: &str = "lodestar_mesos_sync_deletes_held_total";

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("etcd: {0}")]
    Store(#[source] EtcdError),
    /// A task writing a batch panicked or was cancelled.
    #[error("etcd: a write failed: {0}")]
    WriteTask(#[source] tokio::task::JoinError),
    #[error("another writer changed the catalog since it was read; re-reading it")]
    Conflict,
    #[error("this instance no longer leads")]
    NotLeader,
}

/// Counters readable without a metrics recorder (tests, status).
#[derive(Debug, Default)]
pub struct SyncStats {
    pub polls: AtomicU64,
    pub failures: AtomicU64,
    pub puts: AtomicU64,
    pub deletes: AtomicU64,
    pub txns: AtomicU64,
    pub conflicts: AtomicU64,
    pub rejected_vip_labels: AtomicU64,
    pub vip_allocation_failures: AtomicU64,
    pub duplicate_task_ids: AtomicU64,
    pub deletes_held: AtomicU64,
}

/// What one poll did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollReport {
    pub puts: usize,
    pub deletes: usize,
    pub unchanged: usize,
    pub txns: usize,
}

pub struct Syncer {
    store: EtcdStore,
    masters: MasterClient,
    site_attribute: String,
    ranges: VipRanges,
    /// What etcd holds under the keys we own: key -> (value, mod revision). `None` until read.
    current: Option<BTreeMap<String, (Vec<u8>, i64)>>,
    guard: DeleteGuard,
    /// The guard's memory as etcd holds it, with its revision (0: absent). `None` until read.
    guard_state: Option<(GuardState, i64)>,
    pub stats: SyncStats,
}

impl Syncer {
    pub fn new(
        store: EtcdStore,
        masters: MasterClient,
        site_attribute: String,
        ranges: VipRanges,
    ) -> Self {
        Syncer {
            store,
            masters,
            site_attribute,
            ranges,
            current: None,
            guard: DeleteGuard::default(),
            guard_state: None,
            stats: SyncStats::default(),
        }
    }

    /// The masters this syncer reads.
    pub fn masters(&self) -> &MasterClient {
        &self.masters
    }

    /// Replaces the mass-delete guard.
    pub fn with_delete_guard(mut self, guard: DeleteGuard) -> Self {
        self.guard = guard;
        self
    }

    /// Forget what etcd holds (after a conflict, or on becoming leader): the next poll reads it.
    pub fn invalidate(&mut self) {
        self.current = None;
        self.guard_state = None;
    }

    /// One poll. `fence`: the leadership lease writes are fenced on (None: unfenced, `--once`).
    pub async fn poll(&mut self, fence: Option<i64>) -> Result<PollReport, SyncError> {
        self.stats.polls.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(POLLS_TOTAL).increment(1);
        let started = std::time::Instant::now();
        let result = match self.masters.fetch(&self.site_attribute).await {
            Ok(t) => {
                debug!(
                    records = t.records.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "read and translated the master's state"
                );
                self.write_translation(t, fence).await
            }
            Err(e) => Err(e.into()),
        };
        self.account(result)
    }

    /// Writes the catalog `state` describes (the event stream's view of the cluster) with the
    /// same difference, mass-delete guard and fencing as a poll.
    pub async fn sync_state(
        &mut self,
        state: &State,
        fence: Option<i64>,
    ) -> Result<PollReport, SyncError> {
        let t = translate(
            state,
            &self.masters.master_addresses(),
            &self.site_attribute,
        );
        let result = self.write_translation(t, fence).await;
        self.account(result)
    }

    fn account(&mut self, result: Result<PollReport, SyncError>) -> Result<PollReport, SyncError> {
        if let Err(e) = &result {
            // Whatever failed, what we believe etcd holds may be wrong now: read it again.
            self.invalidate();
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            let kind = match e {
                SyncError::Fetch(f) => f.kind(),
                SyncError::Store(_) | SyncError::WriteTask(_) => "etcd",
                SyncError::Conflict => "conflict",
                SyncError::NotLeader => "not_leader",
            };
            metrics::counter!(POLL_FAILURES_TOTAL, "kind" => kind).increment(1);
            if matches!(e, SyncError::Conflict) {
                self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    async fn write_translation(
        &mut self,
        t: Translation,
        fence: Option<i64>,
    ) -> Result<PollReport, SyncError> {
        for bad in &t.rejected_vip_labels {
            warn!("rejecting VIP label: {bad}");
        }
        self.stats
            .rejected_vip_labels
            .fetch_add(t.rejected_vip_labels.len() as u64, Ordering::Relaxed);
        metrics::counter!(REJECTED_VIP_LABELS_TOTAL).increment(t.rejected_vip_labels.len() as u64);

        for key in &t.duplicate_task_ids {
            warn!(
                task = %key.id,
                framework = %key.framework_id,
                "the framework reports this task twice; keeping the first"
            );
        }
        self.stats
            .duplicate_task_ids
            .fetch_add(t.duplicate_task_ids.len() as u64, Ordering::Relaxed);
        metrics::counter!(DUPLICATE_TASK_IDS_TOTAL).increment(t.duplicate_task_ids.len() as u64);

        // Someone else (an operator, a restore, another tool) may have changed the catalog
        // since we last read or wrote it; a cheap probe says whether to read it again.
        if self.current.is_some() && self.catalog_changed_behind_us().await? {
            self.current = None;
        }
        if self.current.is_none() {
            self.current = Some(self.read_current().await?);
        }
        // Named VIP addresses: kept when present, allocated (compare-and-swap) when missing.
        for name in &t.named_vips {
            let key = keys::key(Kind::VipAddress, name);
            if self.has_complete_address(&key) {
                continue;
            }
            match vipalloc::ensure(&self.store, &self.ranges, name).await {
                Ok(_) => {
                    // Re-read later; the allocator wrote it.
                    self.current = None;
                }
                Err(e) => {
                    self.stats
                        .vip_allocation_failures
                        .fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(VIP_ALLOCATION_FAILURES_TOTAL).increment(1);
                    warn!(vip = %name, "named VIP gets no address: {e}");
                }
            }
        }
        if self.current.is_none() {
            self.current = Some(self.read_current().await?);
        }

        // Each record becomes its key and value as it is consumed: the translation, the
        // desired catalog and the changes are never all held at once.
        let desired: BTreeMap<String, Vec<u8>> = t
            .records
            .into_iter()
            .map(|r| (r.key(), r.to_value()))
            .collect();
        let current = self.current.as_ref().expect("read above");
        // Deletes come after every put, so a task moving to another key (the legacy
        // `tasks/<id>` to `tasks/<framework>/<id>`) is under the new key before it leaves the
        // old one.
        let mut legacy = 0;
        let mut deletes: Vec<Change> = Vec::new();
        for (key, (_, rev)) in current {
            if owned(key) && !desired.contains_key(key) {
                legacy += usize::from(is_legacy_task(key));
                deletes.push((key.clone(), None, *rev));
            }
        }
        let mut changes: Vec<Change> = Vec::new();
        let mut unchanged = 0;
        for (key, value) in desired {
            match current.get(&key) {
                Some((v, _)) if *v == value => unchanged += 1,
                Some((_, rev)) => {
                    let rev = *rev;
                    changes.push((key, Some(value), rev));
                }
                None => changes.push((key, Some(value), 0)),
            }
        }
        changes.append(&mut deletes);
        if legacy > 0 {
            info!(
                tasks = legacy,
                "moving tasks from legacy keys (tasks/<task-id>) to tasks/<framework-id>/<task-id>"
            );
        }
        let (changes, guard_state) = self.hold_mass_deletes(changes).await?;
        let mut report = PollReport {
            unchanged,
            ..PollReport::default()
        };
        let (puts, deletes): (Vec<Change>, Vec<Change>) =
            changes.into_iter().partition(|(_, v, _)| v.is_some());
        report.puts = puts.len();
        report.deletes = deletes.len();
        // Every put is acknowledged before the first delete is sent.
        let started = std::time::Instant::now();
        report.txns += self.write_all(puts, fence).await?;
        report.txns += self.write_all(deletes, fence).await?;
        debug!(
            puts = report.puts,
            deletes = report.deletes,
            txns = report.txns,
            ms = started.elapsed().as_millis() as u64,
            "wrote the changes"
        );
        self.save_guard_state(guard_state, fence).await?;
        self.stats
            .puts
            .fetch_add(report.puts as u64, Ordering::Relaxed);
        self.stats
            .deletes
            .fetch_add(report.deletes as u64, Ordering::Relaxed);
        self.stats
            .txns
            .fetch_add(report.txns as u64, Ordering::Relaxed);
        metrics::counter!(WRITES_TOTAL).increment((report.puts + report.deletes) as u64);
        Ok(report)
    }

    fn has_complete_address(&self, key: &str) -> bool {
        let Some((value, _)) = self.current.as_ref().and_then(|c| c.get(key)) else {
            return false;
        };
        let Ok(Record::VipAddress(VipAddress { addresses, .. })) =
            keys::decode(key.as_bytes(), value)
        else {
            return false;
        };
        (self.ranges.v4.is_none() || addresses.iter().any(|a| a.is_ipv4()))
            && (self.ranges.v6.is_none() || addresses.iter().any(|a| a.is_ipv6()))
    }

    /// Writes `changes` in transactions within etcd's limits, several in flight at once (etcd
    /// commits concurrent transactions together, where one at a time each waits for its own
    /// commit). Each is guarded on its keys' revisions, so their order does not matter. Returns
    /// the number of transactions; what was written is what `current` now holds.
    async fn write_all(
        &mut self,
        changes: Vec<Change>,
        fence: Option<i64>,
    ) -> Result<usize, SyncError> {
        let mut batches = batches(changes, usize::from(fence.is_some())).into_iter();
        let count = batches.len();
        let mut in_flight = tokio::task::JoinSet::new();
        let mut failed = None;
        loop {
            while failed.is_none() && in_flight.len() < IN_FLIGHT {
                let Some(batch) = batches.next() else { break };
                let mut kv = self.store.client().kv_client();
                in_flight.spawn(async move {
                    let resp = kv.txn(txn(&batch, fence)).await;
                    (batch, resp)
                });
            }
            let Some(done) = in_flight.join_next().await else {
                break;
            };
            let (batch, resp) = done.map_err(SyncError::WriteTask)?;
            match resp {
                Ok(resp) if resp.succeeded() => {
                    let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
                    let current = self.current.get_or_insert_with(BTreeMap::new);
                    for (key, value, _) in batch {
                        match value {
                            Some(v) => {
                                current.insert(key, (v, revision));
                            }
                            None => {
                                current.remove(&key);
                            }
                        }
                    }
                }
                Ok(_) => {
                    if failed.is_none() {
                        failed = Some(self.refused(fence).await);
                    }
                }
                Err(e) => {
                    failed.get_or_insert(SyncError::Store(EtcdError(e)));
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(count),
        }
    }

    /// Why a transaction's compares failed: this instance no longer leads, or another writer
    /// changed a key.
    async fn refused(&self, fence: Option<i64>) -> SyncError {
        if let Some(lease) = fence {
            let holder = self
                .store
                .client()
                .kv_client()
                .get(election::LEADER_KEY, None)
                .await
                .ok()
                .and_then(|r| r.kvs().first().map(|kv| kv.lease()));
            if holder != Some(lease) {
                return SyncError::NotLeader;
            }
        }
        SyncError::Conflict
    }

    /// Is the catalog in etcd not what we last read or wrote? One small range request: the
    /// number of keys and the newest modification revision change with any put or delete.
    async fn catalog_changed_behind_us(&self) -> Result<bool, SyncError> {
        let Some(current) = &self.current else {
            return Ok(true);
        };
        let mut kv = self.store.client().kv_client();
        let opts = GetOptions::new()
            .with_range(keys::prefix_end(PREFIX.as_bytes()))
            .with_sort(SortTarget::Mod, SortOrder::Descend)
            .with_limit(1)
            .with_keys_only();
        let resp = kv
            .get(PREFIX, Some(opts))
            .await
            .map_err(|e| SyncError::Store(EtcdError(e)))?;
        let newest = resp.kvs().first().map(|kv| kv.mod_revision()).unwrap_or(0);
        let ours = current.values().map(|(_, rev)| *rev).max().unwrap_or(0);
        Ok(resp.count() as usize != current.len() || newest != ours)
    }

    /// Holds deletes that would shrink the catalog below `1 - max_delete_fraction` of the
    /// largest it has been recently, until the master has reported them for
    /// `mass_delete_delay`: a master that has just been elected lists few agents and tasks
    /// until they re-register, and acting on that would wipe every site's names and VIPs.
    /// Returns the changes to make and the guard's new memory.
    async fn hold_mass_deletes(
        &mut self,
        changes: Vec<(String, Option<Vec<u8>>, i64)>,
    ) -> Result<(Vec<(String, Option<Vec<u8>>, i64)>, GuardState), SyncError> {
        let mut state = self.guard_state().await?;
        let before = self
            .current
            .as_ref()
            .map_or(0, |c| c.keys().filter(|k| owned(k)).count());
        let deletes = changes.iter().filter(|(_, v, _)| v.is_none()).count();
        let added = changes
            .iter()
            .filter(|(k, v, rev)| v.is_some() && *rev == 0 && owned(k))
            .count();
        let after = (before + added).saturating_sub(deletes);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        match state.judge(&self.guard, now_ms, before, after) {
            Verdict::Apply => Ok((changes, state)),
            Verdict::Release { high_water } => {
                warn!(
                    deletes,
                    keys = before,
                    high_water,
                    "applying a mass delete the master has reported for the whole delay"
                );
                Ok((changes, state))
            }
            Verdict::Hold { high_water, wait } => {
                warn!(
                    deletes,
                    keys = before,
                    would_leave = after,
                    high_water,
                    wait = ?wait,
                    "holding deletes: the master reports far fewer tasks than the catalog had recently"
                );
                self.stats
                    .deletes_held
                    .fetch_add(deletes as u64, Ordering::Relaxed);
                metrics::counter!(DELETES_HELD_TOTAL).increment(deletes as u64);
                let puts = changes
                    .into_iter()
                    .filter(|(_, v, _)| v.is_some())
                    .collect();
                Ok((puts, state))
            }
        }
    }

    /// The guard's memory: as last read or written, else from etcd (absent or unreadable:
    /// start afresh, which measures against the catalog as it is).
    async fn guard_state(&mut self) -> Result<GuardState, SyncError> {
        if let Some((state, _)) = &self.guard_state {
            return Ok(state.clone());
        }
        let mut kv = self.store.client().kv_client();
        let resp = kv
            .get(GUARD_KEY, None)
            .await
            .map_err(|e| SyncError::Store(EtcdError(e)))?;
        let (state, rev) = match resp.kvs().first() {
            Some(found) => match serde_json::from_slice(found.value()) {
                Ok(state) => (state, found.mod_revision()),
                Err(e) => {
                    warn!(
                        key = GUARD_KEY,
                        "ignoring the mass-delete guard's unreadable memory: {e}"
                    );
                    (GuardState::default(), found.mod_revision())
                }
            },
            None => (GuardState::default(), 0),
        };
        self.guard_state = Some((state.clone(), rev));
        Ok(state)
    }

    /// Writes the guard's memory when it changed, fenced like the catalog writes.
    async fn save_guard_state(
        &mut self,
        state: GuardState,
        fence: Option<i64>,
    ) -> Result<(), SyncError> {
        let rev = match &self.guard_state {
            Some((old, _)) if *old == state => return Ok(()),
            Some((_, rev)) => *rev,
            None => 0,
        };
        let value = serde_json::to_vec(&state).expect("the guard state serializes");
        let mut compares: Vec<Compare> = fence.map(election::fence).into_iter().collect();
        compares.push(if rev == 0 {
            Compare::version(GUARD_KEY, CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(GUARD_KEY, CompareOp::Equal, rev)
        });
        let mut kv = self.store.client().kv_client();
        let resp = kv
            .txn(
                Txn::new()
                    .when(compares)
                    .and_then([TxnOp::put(GUARD_KEY, value, None)]),
            )
            .await
            .map_err(|e| SyncError::Store(EtcdError(e)))?;
        if !resp.succeeded() {
            return Err(SyncError::Conflict);
        }
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        self.guard_state = Some((state, revision));
        Ok(())
    }

    /// Every key under `/lodestar/v1/` with its value and revision, in pages.
    async fn read_current(&self) -> Result<BTreeMap<String, (Vec<u8>, i64)>, SyncError> {
        let mut out = BTreeMap::new();
        let end = keys::prefix_end(PREFIX.as_bytes());
        let mut start = PREFIX.as_bytes().to_vec();
        let mut kv = self.store.client().kv_client();
        let mut revision = 0;
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(2000);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let resp = kv
                .get(start.clone(), Some(opts))
                .await
                .map_err(|e| SyncError::Store(EtcdError(e)))?;
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            for item in resp.kvs() {
                if let Ok(k) = std::str::from_utf8(item.key()) {
                    out.insert(k.to_string(), (item.value().to_vec(), item.mod_revision()));
                }
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok(out)
    }
}

/// A change to one key: its new value (`None`: delete it) and the revision it was read at
/// (0: absent).
type Change = (String, Option<Vec<u8>>, i64);

/// Groups changes into transactions within etcd's limits: at most `MAX_TXN_OPS` compares (one
/// per key, and `extra` more: the fence) and about `MAX_TXN_BYTES` of keys and values.
fn batches(changes: Vec<Change>, extra: usize) -> Vec<Vec<Change>> {
    let keys = MAX_TXN_OPS - extra;
    let mut out = Vec::new();
    let mut batch: Vec<Change> = Vec::new();
    let mut bytes = 0;
    for c in changes {
        let size = 2 * c.0.len() + c.1.as_ref().map_or(0, Vec::len);
        if !batch.is_empty() && (batch.len() == keys || bytes + size > MAX_TXN_BYTES) {
            out.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes += size;
        batch.push(c);
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

/// The transaction that makes `batch`'s changes if its keys are still at the revisions read
/// (and, with a fence, this instance still leads).
fn txn(batch: &[Change], fence: Option<i64>) -> Txn {
    let mut compares: Vec<Compare> = fence.map(election::fence).into_iter().collect();
    let mut ops = Vec::with_capacity(batch.len());
    for (key, value, rev) in batch {
        compares.push(if *rev == 0 {
            Compare::version(key.clone(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(key.clone(), CompareOp::Equal, *rev)
        });
        ops.push(match value {
            Some(v) => TxnOp::put(key.clone(), v.clone(), None),
            None => TxnOp::delete(key.clone(), None),
        });
    }
    Txn::new().when(compares).and_then(ops)
}

/// A task key from before tasks were keyed by framework.
fn is_legacy_task(key: &str) -> bool {
    matches!(keys::parse_key(key), Ok(keys::RecordKey::Task(t)) if t.is_legacy())
}

/// The kinds `mesos-sync` owns (and so deletes when the master no longer reports them). VIP
/// addresses are never deleted: an address stays with its name.
fn owned(key: &str) -> bool {
    keys::parse_key(key).is_ok_and(|k| {
        matches!(
            k.kind(),
            Kind::Task | Kind::Agent | Kind::Framework | Kind::Master | Kind::Leader
        )
    })
}
