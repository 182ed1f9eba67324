//! The errors of the control side, one enum with the context a reader needs.

use std::path::PathBuf;
use std::time::Duration;

/// One thing wrong with a configuration: which setting, and what is wrong with it. A
/// configuration is checked whole, so that every problem is reported at once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigProblem {
    /// The setting, as the file spells it (`dns.workers`), or the file itself.
    pub field: String,
    pub message: String,
}

impl ConfigProblem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigProblem {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid etcd endpoint list {endpoints:?}: {source}")]
    Endpoints {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("cannot reach etcd at {endpoints}: {}", describe(.error))]
    Unreachable {
        endpoints: String,
        error: etcd_client::Error,
    },
    #[error("etcd at {endpoints}: TLS: {reason}")]
    Tls { endpoints: String, reason: String },
    #[error("etcd at {endpoints}: {reason}")]
    Authentication { endpoints: String, reason: String },
    #[error(transparent)]
    Credentials {
        #[from]
        source: CredentialError,
    },
    #[error("cannot reach etcd at {endpoints}: no answer within {after:?} ({op})")]
    Timeout {
        endpoints: String,
        op: &'static str,
        after: Duration,
    },
    #[error("etcd {op} failed: {}", describe(.error))]
    Request {
        op: &'static str,
        error: etcd_client::Error,
    },
    #[error("etcd revision {revision} has been compacted")]
    Compacted { revision: i64 },
    #[error("etcd watch canceled: {reason}")]
    WatchCanceled { reason: String },
    #[error("etcd watch stream ended")]
    WatchEnded,
    #[error("etcd watch silent for {after:?} despite progress requests")]
    WatchStalled { after: Duration },
    #[error("the catalog read stopped before its last page")]
    LoadInterrupted,
    #[error("cannot read catalog file {path}: {source}")]
    FileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("catalog {origin} is not valid: {}", joined(.problems))]
    Invalid {
        origin: String,
        problems: Vec<DocumentProblem>,
    },
}

/// One thing wrong with a catalog document; a document is checked whole, so that every
/// problem is reported at once.
#[derive(Debug, thiserror::Error)]
pub enum DocumentProblem {
    /// Not TOML or JSON, or not a catalog's shape: the parser's message, with its place.
    #[error("{0}")]
    Syntax(String),
    #[error(
        "schema version {found} (this build reads {})",
        crate::model::SCHEMA_VERSION
    )]
    Schema { found: u32 },
    #[error("task {0} appears twice")]
    DuplicateTask(crate::model::TaskKey),
    #[error("{what} {id:?} appears twice")]
    Duplicate { what: &'static str, id: String },
    #[error("a {what} has an empty id")]
    EmptyId { what: &'static str },
    #[error("task {task:?}: {source}")]
    VipLabel {
        task: String,
        #[source]
        source: crate::model::VipLabelError,
    },
}

/// Each of `items` as it displays, joined by "; ": several problems or failures in one line.
pub(crate) fn joined<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let texts: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    texts.join("; ")
}

/// A TLS or password file for etcd that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} holds no PEM {what}{}", .path.display(), .reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())]
    NotPem {
        path: PathBuf,
        what: &'static str,
        reason: Option<String>,
    },
    #[error("{} is empty", .path.display())]
    Empty { path: PathBuf },
    #[error("{} can be read by every user on this machine (mode {mode:03o}): chmod o-rwx it", .path.display())]
    WorldReadable { path: PathBuf, mode: u32 },
}

impl CredentialError {
    /// The file at fault.
    pub fn path(&self) -> &std::path::Path {
        match self {
            CredentialError::Read { path, .. }
            | CredentialError::NotPem { path, .. }
            | CredentialError::Empty { path }
            | CredentialError::WorldReadable { path, .. } => path,
        }
    }
}

impl StoreError {
    /// Is this etcd's "required revision has been compacted", from a read or a watch?
    pub fn is_compacted(&self) -> bool {
        match self {
            StoreError::Compacted { .. } => true,
            StoreError::Request { error, .. } => is_compacted_error(error),
            _ => false,
        }
    }
}

pub(crate) fn is_compacted_error(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("compacted"))
}

/// An etcd client error that displays as `describe` renders it. The client's error is kept
/// whole for a caller to inspect, but it is not this error's `source()`: a cause chain would
/// print tonic's debug dump after the line that already says what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(.0))]
pub struct EtcdError(pub etcd_client::Error);

/// A one-line description of an etcd client error: the gRPC status message or, for a
/// transport failure, the innermost OS error ("Connection refused"), not tonic's debug dump.
pub fn describe(e: &etcd_client::Error) -> String {
    let mut innermost: Option<String> = None;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = match e {
        etcd_client::Error::GRpcStatus(s) => std::error::Error::source(s),
        etcd_client::Error::TransportError(t) => std::error::Error::source(t),
        _ => None,
    };
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            innermost = Some(io.to_string());
        }
        cause = c.source();
    }
    match (e, innermost) {
        (_, Some(io)) => io,
        (etcd_client::Error::GRpcStatus(s), None) => {
            let message = s.message();
            // etcd prefixes every error it returns with its own name; the caller names etcd.
            let message = message.strip_prefix("etcdserver: ").unwrap_or(message);
            format!("{message} ({:?})", s.code())
        }
        (other, None) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_etcd_error_shows_one_line_and_keeps_the_client_error() {
        let e = EtcdError(etcd_client::Error::InvalidArgs("no key".into()));
        assert_eq!(e.to_string(), describe(&e.0));
        assert_eq!(e.to_string(), "invalid arguments: no key");
        assert!(matches!(e.0, etcd_client::Error::InvalidArgs(_)));
        // Not a cause of its own: a cause chain would print it a second time.
        assert!(std::error::Error::source(&e).is_none());
    }

    #[test]
    fn joined_puts_each_item_on_one_line() {
        assert_eq!(joined(["a", "b c", "d"]), "a; b c; d");
        assert_eq!(joined(Vec::<String>::new()), "");
    }
}
