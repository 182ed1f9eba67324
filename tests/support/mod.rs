//! Shared test harness: real etcd, the real `lodestar` binary, patience instead of sleeps.
#![allow(dead_code, unused_imports)]

pub mod agent;
pub mod bench;
pub mod dns;
pub mod etcd;
pub mod http;
pub mod l4lb;
pub mod mesos;
pub mod netns;
pub mod sites;
pub mod xdp;

use std::future::Future;
use std::time::Duration;

pub use etcd::EtcdServer;
pub use http::{http_get, metric};

/// Waits until `check` returns `Some`, polling; fails the test with `what` after `patience`.
pub async fn eventually<T, F, Fut>(patience: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up after {patience:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
