//! The errors of the control side, one enum with the context a reader needs.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid etcd endpoint list {endpoints:?}: {source}")]
    Endpoints {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("cannot reach etcd at {endpoints}: {source}")]
    Unreachable {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("cannot reach etcd at {endpoints}: no answer within {after:?} ({op})")]
    Timeout {
        endpoints: String,
        op: &'static str,
        after: Duration,
    },
    #[error("etcd {op} failed: {source}")]
    Request {
        op: &'static str,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd revision {revision} has been compacted")]
    Compacted { revision: i64 },
    #[error("etcd watch canceled: {reason}")]
    WatchCanceled { reason: String },
    #[error("etcd watch stream ended")]
    WatchEnded,
    #[error("cannot read catalog file {path}: {source}")]
    FileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("catalog {origin} is not valid: {}", .problems.join("; "))]
    Invalid {
        origin: String,
        problems: Vec<String>,
    },
}

impl StoreError {
    /// Is this etcd's "required revision has been compacted"?
    pub fn is_compacted(&self) -> bool {
        match self {
            StoreError::Compacted { .. } => true,
            StoreError::Request { source, .. } => is_compacted_error(source),
            _ => false,
        }
    }
}

pub(crate) fn is_compacted_error(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("compacted"))
}
