//! Shared test harness: real etcd, the real `lodestar` binary, patience instead of sleeps.
#![allow(dead_code, unused_imports)]

pub mod agent;
pub mod bench;
pub mod command;
pub mod dns;
pub mod etcd;
pub mod http;
pub mod l4lb;
pub mod mesos;
pub mod netns;
pub mod operator;
pub mod report;
pub mod scale;
pub mod sites;
pub mod xdp;

use std::future::Future;
use std::time::Duration;

pub use command::{lodestar, lodestar_ok, TempFile};
pub use etcd::EtcdServer;

/// Runs `cmd` to completion with nothing on its standard input, and returns its output.
/// Panics when it cannot start (`missing` names the program and its Debian package) or when it
/// fails (with its command line and standard error).
pub fn run_ok(cmd: &mut std::process::Command, missing: &str) -> std::process::Output {
    run_ok_or_say(cmd, missing, "")
}

/// `run_ok`, with `hint` (what the failure most likely means) after the standard error.
pub fn run_ok_or_say(
    cmd: &mut std::process::Command,
    missing: &str,
    hint: &str,
) -> std::process::Output {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{missing}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{hint}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

/// Asks the kernel to kill the process `cmd` starts if the test process dies first, so that
/// nothing a test starts outlives it.
pub fn die_with_test(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the child with us.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A catalog document of one agent and one task on it: `web.marathon.mesos` -> 127.0.3.10,
/// an address of this machine's loopback.
pub const WEB_CATALOG: &str = r#"schema = 1

[[agents]]
id = "a1"
hostname = "agent-1"
addresses = ["127.0.3.1"]

[[tasks]]
id = "web.1"
name = "web"
framework = "marathon"
agent = "a1"
ips = [{ ip = "127.0.3.10", source = "netinfo" }]
"#;
pub use http::{assert_metric_at_least, http_get, metric};

/// Fails the test, showing `text`, unless it contains every one of `needles`.
#[track_caller]
pub fn assert_contains_all(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
}

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
