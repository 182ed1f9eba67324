//! Lodestar's control side: the catalog model, its etcd layout, the stores that keep an
//! immutable [`Snapshot`] current (etcd watch, catalog file, embedded demo), and their metrics.

pub mod demo;
pub mod error;
pub mod etcd;
pub mod file;
pub mod keys;
pub mod mesos;
pub mod metrics;
pub mod model;
pub mod snapshot;
pub mod watch;

pub use error::{ConfigProblem, CredentialError, DocumentProblem, StoreError};
pub use etcd::{EtcdAuth, EtcdConfig, EtcdSettingNames, EtcdStore, EtcdTls};
pub use file::{CatalogDocument, FileStore};
pub use snapshot::{Backend, CatalogState, Snapshot, SnapshotView, Source, Vip};
pub use watch::{CatalogWatch, WatchConfig, WatchStats};
