//! Leader election for `mesos-sync` instances: the leader holds a key bound to its lease;
//! the others watch the key and campaign when it goes (the lease expires a few seconds after
//! a leader dies). Every write the leader makes is fenced on still holding the key.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::error::describe;
use crate::{EtcdStore, StoreError};

/// The election key (outside `/lodestar/v1/`, which agents read).
pub const LEADER_KEY: &str = "/lodestar/sync/leader";

/// Held leadership. `lost()` turns true when the lease could not be kept alive.
pub struct Leadership {
    lease: i64,
    lost: watch::Receiver<bool>,
    keeper: JoinHandle<()>,
    store: EtcdStore,
}

impl Leadership {
    /// The lease writes are fenced on.
    pub fn lease_id(&self) -> i64 {
        self.lease
    }

    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// A receiver that turns true when leadership is lost.
    pub fn lost(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    /// Gives leadership up at once (revoking the lease deletes the key), so a standby takes
    /// over without waiting for the lease to expire.
    pub async fn resign(self) {
        self.keeper.abort();
        let mut c = self.store.client();
        let _ = c.lease_revoke(self.lease).await;
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// The compare that fences a write on the leader key still being bound to `lease` (unique
/// per campaign, unlike an instance id an operator might reuse).
pub fn fence(lease: i64) -> Compare {
    Compare::lease(LEADER_KEY, CompareOp::Equal, lease)
}

/// Waits until this instance (`id`) leads, with a lease of `ttl` seconds.
pub async fn campaign(store: &EtcdStore, id: &str, ttl: i64) -> Result<Leadership, StoreError> {
    let mut client = store.client();
    let mut announced = false;
    loop {
        let lease = client
            .lease_grant(ttl, None)
            .await
            .map_err(|error| StoreError::Request {
                op: "lease grant",
                error,
            })?
            .id();
        let txn = Txn::new()
            .when([Compare::version(LEADER_KEY, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                LEADER_KEY,
                id,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(LEADER_KEY, None)]);
        let resp = client.txn(txn).await.map_err(|error| StoreError::Request {
            op: "leader key transaction",
            error,
        })?;
        if resp.succeeded() {
            info!(id, "leading: this mesos-sync instance writes the catalog");
            return Ok(start_keeper(store.clone(), lease, ttl).await);
        }
        let _ = client.lease_revoke(lease).await;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        if !announced {
            let holder = client
                .get(LEADER_KEY, None)
                .await
                .ok()
                .and_then(|r| {
                    r.kvs()
                        .first()
                        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                })
                .unwrap_or_default();
            info!(leader = %holder, "standing by: another mesos-sync instance leads");
            announced = true;
        }
        wait_for_vacancy(store, revision, ttl).await;
    }
}

/// Returns when the leader key is deleted after `revision`, or after a while regardless.
async fn wait_for_vacancy(store: &EtcdStore, revision: i64, ttl: i64) {
    let mut watcher = store.watch_client();
    let opts = WatchOptions::new().with_start_revision(revision + 1);
    let patience = Duration::from_secs(ttl.max(1) as u64 * 2);
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(patience, watcher.watch(LEADER_KEY, Some(opts))).await
    else {
        tokio::time::sleep(Duration::from_millis(500)).await;
        return;
    };
    let deadline = tokio::time::Instant::now() + patience;
    while let Ok(Ok(Some(resp))) = tokio::time::timeout_at(deadline, stream.message()).await {
        if resp
            .events()
            .iter()
            .any(|e| e.event_type() == EventType::Delete)
        {
            return;
        }
    }
}

async fn start_keeper(store: EtcdStore, lease: i64, ttl: i64) -> Leadership {
    let (tx, rx) = watch::channel(false);
    let s = store.clone();
    let keeper = tokio::spawn(async move {
        let period = Duration::from_millis((ttl.max(1) as u64 * 1000) / 3);
        let mut client = s.client();
        let lose = |why: String| {
            warn!("lost leadership: {why}");
            let _ = tx.send(true);
        };
        let (mut keeper, mut stream) = match client.lease_keep_alive(lease).await {
            Ok(k) => k,
            Err(e) => return lose(describe(&e)),
        };
        loop {
            if let Err(e) = keeper.keep_alive().await {
                return lose(describe(&e));
            }
            match tokio::time::timeout(period * 2, stream.message()).await {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                Ok(Ok(Some(_))) => return lose("the lease expired".into()),
                Ok(Ok(None)) => return lose("the keep-alive stream ended".into()),
                Ok(Err(e)) => return lose(describe(&e)),
                Err(_) => return lose("no keep-alive answer".into()),
            }
            tokio::time::sleep(period).await;
        }
    });
    Leadership {
        lease,
        lost: rx,
        keeper,
        store,
    }
}
