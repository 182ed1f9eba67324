//! The etcd side of the catalog: connecting, the paged full read, and the writes the CLI
//! (and later mesos-sync) make. The watch that keeps a snapshot current is in `watch.rs`.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, Identity, KeyValue, KvClient, TlsOptions, Txn,
    TxnOp, WatchClient,
};
use tracing::warn;

use crate::error::{ConfigProblem, StoreError};
use crate::keys::{self, Record, RecordKey, Rejection, PREFIX};
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
    /// As given: a URL, or `host:port` (which gets `https://` with TLS, `http://` without).
    pub endpoints: Vec<String>,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Limit for one unary request (a page, a transaction).
    pub request_timeout: Duration,
    /// Keys per page of a full read; never one unbounded range read.
    pub page_size: i64,
    /// TLS to the members (`https://` endpoints).
    pub tls: Option<EtcdTls>,
    /// An etcd user and its password.
    pub auth: Option<EtcdAuth>,
}

/// TLS to etcd: the CA that signed the members' certificates (the only one trusted) and, for
/// members started with `--client-cert-auth`, this client's certificate and key. The files are
/// read at every connect, so a renewed certificate is used from the next reconnect on.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// An etcd user and the file holding its password (read at every connect, never kept in a
/// value that can be printed).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdAuth {
    pub user: String,
    pub password_file: PathBuf,
}

/// How the settings of [`EtcdConfig`] are spelled where they came from (flags or a config
/// file), so that a problem names the setting the operator wrote.
#[derive(Clone, Copy, Debug)]
pub struct EtcdSettingNames {
    pub endpoints: &'static str,
    pub ca: &'static str,
    pub cert: &'static str,
    pub key: &'static str,
    pub user: &'static str,
    pub password_file: &'static str,
}

impl EtcdSettingNames {
    /// The command-line flags (`lodestar mesos-sync`, the CLI, `lodestar agent`).
    pub const FLAGS: EtcdSettingNames = EtcdSettingNames {
        endpoints: "--etcd",
        ca: "--etcd-ca",
        cert: "--etcd-cert",
        key: "--etcd-key",
        user: "--etcd-user",
        password_file: "--etcd-password-file",
    };
}

impl EtcdConfig {
    /// Parses `URL[,URL...]`; a URL without a scheme gets one by the TLS setting.
    pub fn from_list(list: &str) -> Self {
        let endpoints = list
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(String::from)
            .collect();
        EtcdConfig {
            endpoints,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            page_size: 2000,
            tls: None,
            auth: None,
        }
    }

    pub fn with_tls(mut self, tls: Option<EtcdTls>) -> Self {
        self.tls = tls;
        self
    }

    pub fn with_auth(mut self, auth: Option<EtcdAuth>) -> Self {
        self.auth = auth;
        self
    }

    /// The endpoints as URLs.
    pub fn urls(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else {
                    format!("{scheme}://{e}")
                }
            })
            .collect()
    }

    pub fn display(&self) -> String {
        self.urls().join(",")
    }

    /// Everything wrong with the endpoints, TLS and credentials, each named as `names` spells
    /// it. Reads the files, so a typo in a path is reported at start, not at the first connect.
    pub fn problems(&self, names: &EtcdSettingNames) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        for url in self.urls() {
            match (url.split_once("://").map(|(s, _)| s), &self.tls) {
                (Some("https"), Some(_)) | (Some("http"), None) => {}
                (Some("https"), None) => out.push(ConfigProblem::new(
                    names.ca,
                    format!("{url} needs the CA that signed etcd's certificates"),
                )),
                (Some("http"), Some(_)) => out.push(ConfigProblem::new(
                    names.endpoints,
                    format!("{url} is plaintext but TLS is configured: write https://"),
                )),
                _ => out.push(ConfigProblem::new(
                    names.endpoints,
                    format!("{url}: the scheme must be http:// or https://"),
                )),
            }
        }
        if let Some(tls) = &self.tls {
            if tls.ca.as_os_str().is_empty() {
                out.push(ConfigProblem::new(
                    names.ca,
                    "needed with a client certificate",
                ));
            } else if let Err(e) = credentials::ca(&tls.ca) {
                out.push(ConfigProblem::new(names.ca, e.to_string()));
            }
            match (&tls.cert, &tls.key) {
                (Some(cert), Some(key)) => {
                    if let Err(e) = credentials::identity(cert, key) {
                        let field = if e.path() == key {
                            names.key
                        } else {
                            names.cert
                        };
                        out.push(ConfigProblem::new(field, e.to_string()));
                    }
                }
                (Some(_), None) => {
                    out.push(ConfigProblem::new(names.key, "needs the certificate's key"))
                }
                (None, Some(_)) => out.push(ConfigProblem::new(
                    names.cert,
                    "needs the key's certificate",
                )),
                (None, None) => {}
            }
        }
        if let Some(auth) = &self.auth {
            if auth.user.is_empty() {
                out.push(ConfigProblem::new(
                    names.user,
                    "needed with a password file",
                ));
            }
            if auth.password_file.as_os_str().is_empty() {
                out.push(ConfigProblem::new(
                    names.password_file,
                    "needed with a user",
                ));
            } else if let Err(e) = credentials::password(&auth.password_file) {
                out.push(ConfigProblem::new(names.password_file, e.to_string()));
            }
        }
        out
    }

    /// The client's options for one member: timeouts, keep-alives, TLS and the user.
    fn connect_options(&self, url: &str) -> Result<ConnectOptions, StoreError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_timeout(self.request_timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_keep_alive_while_idle(true)
            // A member cut off from the quorum cancels our watch instead of going quiet.
            .with_require_leader(true);
        if let Some(tls) = self.tls.as_ref().filter(|_| url.starts_with("https://")) {
            let mut config = TlsOptions::new()
                .ca_certificate(Certificate::from_pem(credentials::ca(&tls.ca)?))
                .timeout(self.connect_timeout);
            if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
                let (cert, key) = credentials::identity(cert, key)?;
                config = config.identity(Identity::from_pem(cert, key));
            }
            options = options.with_tls(config);
        }
        if let Some(auth) = &self.auth {
            let password = credentials::password(&auth.password_file)?;
            // etcd's tokens expire (`--auth-token-ttl`, 5 minutes by default); a long-lived
            // client gets a new one instead of failing every request after that.
            options = options
                .with_user(auth.user.clone(), password)
                .with_auto_token_refresh(true);
        }
        Ok(options)
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
        for endpoint in &config.urls() {
            match Self::connect_one(&config, endpoint).await {
                Ok(store) => return Ok(store),
                Err(e @ (StoreError::Endpoints { .. } | StoreError::Credentials { .. })) => {
                    return Err(e)
                }
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
            Some(StoreError::Tls { reason, .. }) => StoreError::Tls {
                endpoints: config.display(),
                reason,
            },
            Some(StoreError::Authentication { reason, .. }) => StoreError::Authentication {
                endpoints: config.display(),
                reason,
            },
            Some(other) => other,
            None => unreachable!("at least one endpoint was tried"),
        })
    }

    async fn connect_one(config: &EtcdConfig, url: &str) -> Result<Self, StoreError> {
        let options = config.connect_options(url)?;
        let connect = Client::connect([url], Some(options));
        let client = match tokio::time::timeout(config.connect_timeout, connect).await {
            Err(_) => {
                return Err(StoreError::Timeout {
                    endpoints: url.to_string(),
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
            // With a user, connecting already authenticates (and so also shakes hands).
            Ok(Err(error)) => return Err(refusal::explain(config, url, error).await),
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
        let probe = store
            .bounded("connect", store.config.connect_timeout, async move {
                c.get(PREFIX, Some(GetOptions::new().with_count_only()))
                    .await
            })
            .await;
        match probe {
            Ok(_) => {}
            Err(StoreError::Request { error, .. }) => {
                return Err(refusal::explain(config, url, error).await)
            }
            Err(other) => return Err(other),
        }
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
    pub async fn delete(&self, record: &RecordKey) -> Result<bool, StoreError> {
        let key = record.to_key();
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

/// Reading the TLS and password files: each checked for what it must hold, so that a wrong
/// file is named as such instead of surfacing as a failed handshake.
mod credentials {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    use crate::error::CredentialError;

    fn read(path: &Path) -> Result<Vec<u8>, CredentialError> {
        std::fs::read(path).map_err(|source| CredentialError::Read {
            path: path.to_path_buf(),
            source,
        })
    }

    /// A secret must not be readable by every user (group-readable is the operator's choice:
    /// a `lodestar` group beside root).
    fn read_secret(path: &Path) -> Result<Vec<u8>, CredentialError> {
        let bytes = read(path)?;
        let mode = std::fs::metadata(path)
            .map_err(|source| CredentialError::Read {
                path: path.to_path_buf(),
                source,
            })?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o004 != 0 {
            return Err(CredentialError::WorldReadable {
                path: path.to_path_buf(),
                mode,
            });
        }
        Ok(bytes)
    }

    fn certificates(path: &Path, pem: &[u8]) -> Result<(), CredentialError> {
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            cert.map_err(|e| CredentialError::NotPem {
                path: path.to_path_buf(),
                what: "certificate",
                reason: Some(e.to_string()),
            })?;
            found += 1;
        }
        if found == 0 {
            return Err(CredentialError::NotPem {
                path: path.to_path_buf(),
                what: "certificate",
                reason: None,
            });
        }
        Ok(())
    }

    /// The CA bundle, as PEM.
    pub(super) fn ca(path: &Path) -> Result<Vec<u8>, CredentialError> {
        let pem = read(path)?;
        certificates(path, &pem)?;
        Ok(pem)
    }

    /// The client certificate and its key, as PEM.
    pub(super) fn identity(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), CredentialError> {
        let cert_pem = read(cert)?;
        certificates(cert, &cert_pem)?;
        let key_pem = read_secret(key)?;
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| CredentialError::NotPem {
            path: key.to_path_buf(),
            what: "private key",
            reason: Some(e.to_string()),
        })?;
        Ok((cert_pem, key_pem))
    }

    /// The password: the file's first line (a trailing newline is not part of it).
    pub(super) fn password(path: &Path) -> Result<String, CredentialError> {
        let bytes = read_secret(path)?;
        let text = String::from_utf8_lossy(&bytes);
        let password = text.lines().next().unwrap_or("").to_string();
        if password.is_empty() {
            return Err(CredentialError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(password)
    }
}

/// Why a connection was refused, in the operator's words: a TLS failure names what failed to
/// verify, an authentication failure names the user, and a plaintext client talking to a TLS
/// member (which just hangs up) is recognised by asking the member for a TLS handshake.
mod refusal {
    use std::sync::Arc;
    use std::time::Duration;

    use rustls::{AlertDescription, CertificateError};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const PLAINTEXT_PEER: &str = "TLS connection to a plaintext endpoint: etcd does not speak \
                                  TLS here; use http:// or enable TLS on etcd";

    /// Limit for each step of a diagnosing handshake. It runs only after a refusal, so it can
    /// afford to wait: on a loaded machine a second was seen to be too short, and the refusal
    /// came out as a vague "cannot reach etcd" instead of its reason.
    const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

    use super::EtcdConfig;
    use crate::error::{describe, StoreError};

    pub(super) async fn explain(
        config: &EtcdConfig,
        url: &str,
        error: etcd_client::Error,
    ) -> StoreError {
        let endpoints = url.to_string();
        // The client's error may have lost the TLS cause on the way up (hyper reports only
        // "connection closed" when the member hangs up with an alert after the handshake):
        // then shake hands once more, by hand, to see why.
        let tls = match tls_error(&error) {
            Some(e) => Some(e.clone()),
            None if url.starts_with("https://") => {
                let (config, url) = (config.clone(), url.to_string());
                tokio::task::spawn_blocking(move || handshake_error(&config, &url))
                    .await
                    .ok()
                    .flatten()
            }
            None => None,
        };
        if let Some(tls) = tls {
            return StoreError::Tls {
                endpoints,
                reason: tls_reason(config, url, &tls),
            };
        }
        if let etcd_client::Error::GRpcStatus(status) = &error {
            if let Some(reason) = auth_reason(config, status.message()) {
                return StoreError::Authentication { endpoints, reason };
            }
        }
        let refused = describe(&error).contains("refused");
        if let (Some(hostport), false) = (url.strip_prefix("http://"), refused) {
            if answers_tls(hostport).await == Some(true) {
                return StoreError::Tls {
                    endpoints,
                    reason: "plaintext connection to a TLS endpoint: etcd answers TLS here; \
                             use https:// and give its CA"
                        .into(),
                };
            }
        }
        if let (Some(hostport), false) = (url.strip_prefix("https://"), refused) {
            if answers_tls(hostport.split('/').next().unwrap_or(hostport)).await == Some(false) {
                return StoreError::Tls {
                    endpoints,
                    reason: PLAINTEXT_PEER.into(),
                };
            }
        }
        StoreError::Unreachable { endpoints, error }
    }

    /// The rustls error somewhere in the chain (an `io::Error` wrapping it, as tokio-rustls
    /// hands it up through hyper and tonic).
    fn tls_error(e: &etcd_client::Error) -> Option<&rustls::Error> {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = match e {
            etcd_client::Error::GRpcStatus(s) => std::error::Error::source(s),
            etcd_client::Error::TransportError(t) => std::error::Error::source(t),
            _ => None,
        };
        while let Some(c) = cause {
            if let Some(tls) = c.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
            if let Some(io) = c.downcast_ref::<std::io::Error>() {
                if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    return Some(tls);
                }
            }
            cause = c.source();
        }
        None
    }

    fn tls_reason(config: &EtcdConfig, url: &str, e: &rustls::Error) -> String {
        let ca = config
            .tls
            .as_ref()
            .map_or("the configured CA".to_string(), |t| {
                t.ca.display().to_string()
            });
        let has_identity = config.tls.as_ref().is_some_and(|t| t.cert.is_some());
        let host = host_of(url.split_once("://").map_or(url, |(_, r)| r));
        match e {
            rustls::Error::InvalidCertificate(c) => {
                let what = match c {
                    CertificateError::UnknownIssuer => {
                        format!("etcd's certificate is not signed by the CA in {ca} (unknown CA)")
                    }
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. } => {
                        format!(
                            "etcd's certificate is not valid for {host} (see its subjectAltName)"
                        )
                    }
                    CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                        "etcd's certificate has expired".into()
                    }
                    CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                        "etcd's certificate is not valid yet (is this clock right?)".into()
                    }
                    other => format!("{other:?}"),
                };
                format!("certificate verify failed: {what}")
            }
            rustls::Error::AlertReceived(
                AlertDescription::CertificateRequired
                | AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateUnknown
                | AlertDescription::HandshakeFailure,
            ) if !has_identity => {
                "etcd requires a client certificate, and none is configured".into()
            }
            rustls::Error::AlertReceived(alert) => format!(
                "etcd refused our client certificate ({alert:?}): is it signed by the CA etcd \
                 trusts (its --trusted-ca-file), and still valid?"
            ),
            rustls::Error::InvalidMessage(_) => PLAINTEXT_PEER.into(),
            other => other.to_string(),
        }
    }

    /// etcd's refusals of a user: a wrong password, a user without a role, auth not enabled.
    fn auth_reason(config: &EtcdConfig, message: &str) -> Option<String> {
        let message = message.strip_prefix("etcdserver: ").unwrap_or(message);
        let user = config.auth.as_ref().map(|a| a.user.as_str());
        let reason = match (message, user) {
            (m, Some(user)) if m.starts_with("authentication failed") => {
                format!("{m} (user {user:?})")
            }
            ("authentication is not enabled", Some(user)) => {
                format!("authentication is not enabled on etcd, yet user {user:?} is configured")
            }
            ("user name is empty", _) => "etcd requires authentication: give a user and a \
                 password file, or a client certificate whose CN names the user"
                .into(),
            ("permission denied", user) => format!(
                "permission denied: {} may not read {}",
                user.map_or("this client".to_string(), |u| format!("user {u:?}")),
                crate::keys::PREFIX
            ),
            (m, _) if m.contains("invalid auth token") || m.contains("user name not found") => {
                m.to_string()
            }
            _ => return None,
        };
        Some(reason)
    }

    /// How `hostport` answers a TLS ClientHello: `Some(true)` with a TLS record (a handshake
    /// or an alert), `Some(false)` with anything else or by hanging up, `None` if it cannot be
    /// asked (refused, silent).
    async fn answers_tls(hostport: &str) -> Option<bool> {
        let hello = client_hello(host_of(hostport))?;
        let probe = async {
            let mut tcp = tokio::net::TcpStream::connect(hostport).await.ok()?;
            tcp.write_all(&hello).await.ok()?;
            let mut header = [0u8; 2];
            match tcp.read_exact(&mut header).await {
                // A TLS record: content type 22 (handshake) or 21 (alert), version 3.x.
                Ok(_) => Some(matches!(header, [21 | 22, 3])),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Some(false),
                Err(_) => None,
            }
        };
        tokio::time::timeout(PROBE_TIMEOUT, probe)
            .await
            .ok()
            .flatten()
    }

    /// Shakes hands with the member at `url` as the client does and reads once: the TLS
    /// error, if there is one. A TLS 1.3 server checks the client's certificate after the
    /// handshake, so its refusal is an alert on that first read.
    fn handshake_error(config: &EtcdConfig, url: &str) -> Option<rustls::Error> {
        use std::io::Read;
        use std::net::ToSocketAddrs;

        let tls = config.tls.as_ref()?;
        let hostport = url.strip_prefix("https://")?.split('/').next()?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&super::credentials::ca(&tls.ca).ok()?) {
            roots.add(cert.ok()?).ok()?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots);
        let mut client = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => {
                let (cert, key) = super::credentials::identity(cert, key).ok()?;
                let chain = CertificateDer::pem_slice_iter(&cert)
                    .collect::<Result<Vec<_>, _>>()
                    .ok()?;
                let key = PrivateKeyDer::from_pem_slice(&key).ok()?;
                builder.with_client_auth_cert(chain, key).ok()?
            }
            _ => builder.with_no_client_auth(),
        };
        client.alpn_protocols = vec![b"h2".to_vec()];
        let name = ServerName::try_from(host_of(hostport).to_string()).ok()?;
        let mut conn = rustls::ClientConnection::new(Arc::new(client), name).ok()?;
        let addr = hostport.to_socket_addrs().ok()?.next()?;
        let mut tcp = std::net::TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).ok()?;
        tcp.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
        tcp.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
        let mut stream = rustls::Stream::new(&mut conn, &mut tcp);
        let mut byte = [0u8; 1];
        let error = stream.read(&mut byte).err()?;
        error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .cloned()
    }

    fn host_of(hostport: &str) -> &str {
        hostport
            .rsplit_once(':')
            .map_or(hostport, |(h, _)| h)
            .trim_matches(|c| c == '[' || c == ']')
    }

    fn client_hello(host: &str) -> Option<Vec<u8>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = ServerName::try_from(host.to_string()).ok()?;
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).ok()?;
        Some(hello)
    }
}
