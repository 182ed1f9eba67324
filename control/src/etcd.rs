//! The etcd side of the catalog: connecting, the paged full read, and the writes the CLI
//! (and later mesos-sync) make. The watch that keeps a snapshot current is in `watch.rs`.

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, GetOptions, KeyValue, KvClient, Txn, TxnOp, WatchClient,
};
use tracing::warn;

use crate::error::StoreError;
use crate::keys::{self, Kind, Record, Rejection, PREFIX};
use crate::metrics::count_rejection;
use crate::snapshot::{CatalogState, Source};

/// etcd refuses transactions with more operations than this (its `--max-txn-ops` default).
pub const MAX_TXN_OPS: usize = 128;

/// Bytes of keys and values per transaction: below etcd's `--max-request-bytes` default
/// (1.5 MiB) with room for the request's framing.
pub const MAX_TXN_BYTES: usize = 1 << 20;

/// Largest gRPC message we decode (tonic's default is 4 MiB). A watch that catches up after an
/// outage receives up to 1,000 revisions in one response, and a page of large values can exceed
/// 4 MiB; a page that still exceeds this is read again at half the size.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// How to reach etcd.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Limit for one unary request (a page, a transaction).
    pub request_timeout: Duration,
    /// Keys per page of a full read; never one unbounded range read.
    pub page_size: i64,
}

impl EtcdConfig {
    /// Parses `URL[,URL...]`; a URL without a scheme gets `http://`.
    pub fn from_list(list: &str) -> Self {
        let endpoints = list
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                if e.contains("://") {
                    e.to_string()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        EtcdConfig {
            endpoints,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            page_size: 2000,
        }
    }

    pub fn display(&self) -> String {
        self.endpoints.join(",")
    }
}

/// The result of a full read: the state, the revision it is consistent at, what was refused.
pub struct Loaded {
    pub state: CatalogState,
    pub revision: i64,
    pub rejected: Vec<Rejection>,
    /// Range requests it took.
    pub pages: u32,
}

/// A connected etcd client with the catalog's reads and writes.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    kv: KvClient,
    watch: WatchClient,
    config: EtcdConfig,
}

impl EtcdStore {
    /// Connects and checks that etcd answers, so that "unreachable" is reported here.
    /// Connects to the first endpoint, in the configured order, that answers with a leader,
    /// so "unreachable" is reported here and a member cut off from the quorum is skipped.
    ///
    /// One endpoint at a time, rather than the client's balanced channel over all of them:
    /// that channel sends requests to members it cannot reach (or that have no leader) and
    /// fails them, even while other members would answer. Listing the local site's members
    /// first keeps reads in the site.
    pub async fn connect(config: EtcdConfig) -> Result<Self, StoreError> {
        if config.endpoints.is_empty() {
            return Err(StoreError::Endpoints {
                endpoints: config.display(),
                source: etcd_client::Error::InvalidArgs("no endpoint given".into()),
            });
        }
        let mut last = None;
        for endpoint in &config.endpoints {
            match Self::connect_one(&config, endpoint).await {
                Ok(store) => return Ok(store),
                Err(e @ StoreError::Endpoints { .. }) => return Err(e),
                Err(e) => {
                    tracing::debug!(%endpoint, "etcd endpoint unusable: {e}");
                    last = Some(e);
                }
            }
        }
        // With several endpoints, name them all: the last error says why the last failed.
        Err(match last {
            Some(StoreError::Unreachable { error, .. }) => StoreError::Unreachable {
                endpoints: config.display(),
                error,
            },
            Some(StoreError::Timeout { op, after, .. }) => StoreError::Timeout {
                endpoints: config.display(),
                op,
                after,
            },
            Some(other) => other,
            None => unreachable!("at least one endpoint was tried"),
        })
    }

    async fn connect_one(config: &EtcdConfig, endpoint: &str) -> Result<Self, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_keep_alive_while_idle(true)
            // A member cut off from the quorum cancels our watch instead of going quiet.
            .with_require_leader(true);
        let connect = Client::connect([endpoint], Some(options));
        let client = match tokio::time::timeout(config.connect_timeout, connect).await {
            Err(_) => {
                return Err(StoreError::Timeout {
                    endpoints: endpoint.to_string(),
                    op: "connect",
                    after: config.connect_timeout,
                })
            }
            Ok(Err(
                e @ (etcd_client::Error::InvalidUri(_) | etcd_client::Error::InvalidArgs(_)),
            )) => {
                return Err(StoreError::Endpoints {
                    endpoints: config.display(),
                    source: e,
                })
            }
            Ok(Err(error)) => {
                return Err(StoreError::Unreachable {
                    endpoints: endpoint.to_string(),
                    error,
                })
            }
            Ok(Ok(c)) => c,
        };
        let store = EtcdStore {
            kv: client
                .kv_client()
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            watch: client
                .watch_client()
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            client,
            config: config.clone(),
        };
        // A cheap read proves the member answers and has a leader.
        let mut c = store.kv.clone();
        store
            .bounded("connect", store.config.connect_timeout, async move {
                c.get(PREFIX, Some(GetOptions::new().with_count_only()))
                    .await
            })
            .await
            .map_err(|e| match e {
                StoreError::Request { error, .. } => StoreError::Unreachable {
                    endpoints: endpoint.to_string(),
                    error,
                },
                other => other,
            })?;
        Ok(store)
    }

    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A watch client that accepts large catch-up responses.
    pub fn watch_client(&self) -> WatchClient {
        self.watch.clone()
    }

    pub fn source(&self) -> Source {
        Source::Etcd(self.config.display())
    }

    /// Runs one request with the request timeout, mapping errors to `StoreError`.
    async fn bounded<T>(
        &self,
        op: &'static str,
        after: Duration,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(after, fut).await {
            Err(_) => Err(StoreError::Timeout {
                endpoints: self.config.display(),
                op,
                after,
            }),
            Ok(Err(error)) => Err(StoreError::Request { op, error }),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// Reads the whole catalog in pages of `page_size` keys, all at one revision.
    /// `previous` supplies the last good value of keys whose current value is malformed.
    pub async fn load(&self, previous: Option<&CatalogState>) -> Result<Loaded, StoreError> {
        // A compaction between two pages invalidates the pinned revision: start over (a few
        // times; past that the caller backs off).
        let mut attempts = 0;
        loop {
            match self.load_once(previous).await {
                Err(e) if e.is_compacted() && attempts < 3 => attempts += 1,
                other => return other,
            }
        }
    }

    async fn load_once(&self, previous: Option<&CatalogState>) -> Result<Loaded, StoreError> {
        // Fetching the next page overlaps decoding this one.
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let fetcher = self.clone();
        let producer = tokio::spawn(async move { fetcher.fetch_pages(tx).await });
        let _stop = AbortOnDrop(producer);
        let mut state = CatalogState::new();
        let mut rejected = Vec::new();
        let mut pages = 0;
        loop {
            // The producer always ends with a last page or an error; a closed channel without
            // one means it died, and a partial catalog must not be published.
            let page: Page = rx.recv().await.ok_or(StoreError::LoadInterrupted)??;
            pages += 1;
            for kv in &page.kvs {
                match state.apply_put(kv.key(), kv.value()) {
                    Ok(vip_errors) => note_vip_errors(kv.key(), &vip_errors),
                    Err(r) => {
                        note_rejection(&r);
                        if let Some(good) = previous.and_then(|p| p.record_at(key_str(kv.key()))) {
                            state.upsert(good);
                        }
                        rejected.push(r);
                    }
                }
            }
            if page.last {
                return Ok(Loaded {
                    state,
                    revision: page.revision,
                    rejected,
                    pages,
                });
            }
        }
    }

    /// Sends the catalog's pages, all at the revision of the first, the last one marked.
    async fn fetch_pages(&self, tx: tokio::sync::mpsc::Sender<Result<Page, StoreError>>) {
        let end = keys::prefix_end(PREFIX.as_bytes());
        let mut start = PREFIX.as_bytes().to_vec();
        let mut revision = 0;
        let mut limit = self.config.page_size.max(1);
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(limit);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let mut c = self.kv.clone();
            let key = start.clone();
            let page = self
                .bounded("range read", self.config.request_timeout, async move {
                    c.get(key, Some(opts)).await
                })
                .await;
            let mut resp = match page {
                Ok(r) => r,
                Err(StoreError::Request { error, .. }) if is_too_large(&error) && limit > 1 => {
                    limit = (limit / 2).max(1);
                    warn!(
                        page_size = limit,
                        "a catalog page exceeded the message limit; reading smaller pages"
                    );
                    continue;
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            if let Some(last) = kvs.last() {
                start = last.key().to_vec();
                start.push(0);
            }
            let last = !more || kvs.is_empty();
            let page = Page {
                revision,
                kvs,
                last,
            };
            if tx.send(Ok(page)).await.is_err() || last {
                return;
            }
        }
    }

    /// Writes records, in transactions of at most `MAX_TXN_OPS`. Returns the last revision.
    /// Records go in transactions of at most `MAX_TXN_OPS` operations and `MAX_TXN_BYTES`
    /// (etcd's limits), so a large batch is not atomic: watchers may see it in parts.
    pub async fn put(&self, records: &[Record]) -> Result<i64, StoreError> {
        let mut revision = 0;
        for ops in txn_batches(records) {
            let mut c = self.client.clone();
            let resp = self
                .bounded("put", self.config.request_timeout, async move {
                    c.txn(Txn::new().and_then(ops)).await
                })
                .await?;
            revision = resp.header().map(|h| h.revision()).unwrap_or(revision);
        }
        Ok(revision)
    }

    /// Deletes one record. Returns whether it existed.
    pub async fn delete(&self, kind: Kind, id: &str) -> Result<bool, StoreError> {
        let key = keys::key(kind, id);
        let mut c = self.client.clone();
        let resp = self
            .bounded("delete", self.config.request_timeout, async move {
                c.delete(key, None).await
            })
            .await?;
        Ok(resp.deleted() > 0)
    }
}

/// One page of a full read.
struct Page {
    revision: i64,
    kvs: Vec<KeyValue>,
    last: bool,
}

/// Groups puts into transactions within etcd's operation and request-size limits.
fn txn_batches(records: &[Record]) -> Vec<Vec<TxnOp>> {
    let mut batches = Vec::new();
    let mut ops = Vec::new();
    let mut bytes = 0;
    for r in records {
        let (key, value) = (r.key(), r.to_value());
        let size = key.len() + value.len();
        if !ops.is_empty() && (ops.len() == MAX_TXN_OPS || bytes + size > MAX_TXN_BYTES) {
            batches.push(std::mem::take(&mut ops));
            bytes = 0;
        }
        bytes += size;
        ops.push(TxnOp::put(key, value, None));
    }
    if !ops.is_empty() {
        batches.push(ops);
    }
    batches
}

/// Stops the page fetcher when the load returns early.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Did a response exceed the gRPC message limit?
pub(crate) fn is_too_large(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("message length too large"))
}

fn key_str(key: &[u8]) -> &str {
    std::str::from_utf8(key).unwrap_or("")
}

pub(crate) fn note_rejection(r: &Rejection) {
    warn!(reason = r.reason(), "skipping catalog value: {r}");
    count_rejection(r);
}

pub(crate) fn note_vip_errors(key: &[u8], errors: &[crate::model::VipLabelError]) {
    for e in errors {
        warn!(key = key_str(key), "ignoring VIP label: {e}");
        metrics::counter!(crate::metrics::REJECTED_VALUES_TOTAL, "kind" => "task", "reason" => "vip_label")
            .increment(1);
    }
}
