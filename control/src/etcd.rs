//! The etcd side of the catalog: connecting, the paged full read, and the writes the CLI
//! (and later mesos-sync) make. The watch that keeps a snapshot current is in `watch.rs`.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, KeyValue, Txn, TxnOp};
use tracing::warn;

use crate::error::{is_compacted_error, StoreError};
use crate::keys::{self, Kind, Record, Rejection, PREFIX};
use crate::metrics::count_rejection;
use crate::snapshot::{CatalogState, Source};

/// etcd refuses transactions with more operations than this (its `--max-txn-ops` default).
pub const MAX_TXN_OPS: usize = 128;

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
    config: EtcdConfig,
}

impl EtcdStore {
    /// Connects and checks that etcd answers, so that "unreachable" is reported here.
    pub async fn connect(config: EtcdConfig) -> Result<Self, StoreError> {
        let endpoints = config.display();
        if config.endpoints.is_empty() {
            return Err(StoreError::Endpoints {
                endpoints,
                source: etcd_client::Error::InvalidArgs("no endpoint given".into()),
            });
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_keep_alive_while_idle(true);
        let connect = Client::connect(&config.endpoints, Some(options));
        let client = match tokio::time::timeout(config.connect_timeout, connect).await {
            Err(_) => {
                return Err(StoreError::Timeout {
                    endpoints,
                    op: "connect",
                    after: config.connect_timeout,
                })
            }
            Ok(Err(
                e @ (etcd_client::Error::InvalidUri(_) | etcd_client::Error::InvalidArgs(_)),
            )) => {
                return Err(StoreError::Endpoints {
                    endpoints,
                    source: e,
                })
            }
            Ok(Err(error)) => return Err(StoreError::Unreachable { endpoints, error }),
            Ok(Ok(c)) => c,
        };
        let store = EtcdStore { client, config };
        // A cheap read proves the cluster answers (and has a leader).
        let mut c = store.client.clone();
        store
            .bounded("connect", store.config.connect_timeout, async move {
                c.get(PREFIX, Some(GetOptions::new().with_count_only()))
                    .await
            })
            .await
            .map_err(|e| match e {
                StoreError::Request { error, .. } => StoreError::Unreachable {
                    endpoints: store.config.display(),
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
        // A compaction between two pages invalidates the pinned revision: start over.
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
        let mut revision = 0;
        let mut state = CatalogState::new();
        let mut rejected = Vec::new();
        let mut pages = 0;
        while let Some(page) = rx.recv().await {
            let (page_revision, kvs): (i64, Vec<KeyValue>) = page?;
            pages += 1;
            revision = page_revision;
            for kv in &kvs {
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
        }
        producer.abort();
        Ok(Loaded {
            state,
            revision,
            rejected,
            pages,
        })
    }

    /// Sends the catalog's pages, all at the revision of the first, then closes the channel.
    async fn fetch_pages(
        &self,
        tx: tokio::sync::mpsc::Sender<Result<(i64, Vec<KeyValue>), StoreError>>,
    ) {
        let end = keys::prefix_end(PREFIX.as_bytes());
        let mut start = PREFIX.as_bytes().to_vec();
        let mut revision = 0;
        loop {
            let mut opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(self.config.page_size);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let mut c = self.client.clone();
            let key = start.clone();
            let page = self
                .bounded("range read", self.config.request_timeout, async move {
                    c.get(key, Some(opts)).await
                })
                .await;
            let mut resp = match page {
                Ok(r) => r,
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
            let done = !more || kvs.is_empty();
            if tx.send(Ok((revision, kvs))).await.is_err() || done {
                return;
            }
        }
    }

    /// Writes records, in transactions of at most `MAX_TXN_OPS`. Returns the last revision.
    pub async fn put(&self, records: &[Record]) -> Result<i64, StoreError> {
        let mut revision = 0;
        for chunk in records.chunks(MAX_TXN_OPS) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|r| TxnOp::put(r.key(), r.to_value(), None))
                .collect();
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

/// Was this etcd error a compaction of the revision asked for?
pub fn is_compacted(e: &etcd_client::Error) -> bool {
    is_compacted_error(e)
}
