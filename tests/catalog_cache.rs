//! The agent's on-disk catalog cache, with the real binary and a real etcd: written private
//! (0600), and at a start without etcd refused, with a log line saying why, when etcd last
//! confirmed it too long ago or when it is not a whole catalog; the agent then waits for etcd
//! instead of serving it, and serves etcd's catalog when it returns.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use hickory_proto::rr::RecordType;
use support::agent::Agent;
use support::dns::{answers, udp};
use support::{EtcdServer, WEB_CATALOG};

const PATIENCE: Duration = Duration::from_secs(30);

/// An agent started without waiting for it to get ready (it may not, without etcd): its log
/// lines arrive on `lines`. Killed on drop.
struct WaitingAgent {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl WaitingAgent {
    fn start(etcd: &str, cache: &Path) -> WaitingAgent {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lodestar"));
        cmd.args([
            "agent",
            "--no-l4lb",
            "--no-loop-probe",
            "--dns-listen",
            "127.0.0.1:0",
        ])
        .args(["--http-listen", "127.0.0.1:0", "--etcd", etcd])
        .arg("--cache-file")
        .arg(cache)
        .env_remove("LODESTAR_ETCD")
        .env("LODESTAR_LOG", "info")
        .stdin(Stdio::null());
        let (tx, lines) = mpsc::channel();
        let child =
            support::command::spawn_reading_stderr(&mut cmd, "lodestar agent", move |line| {
                let _ = tx.send(line);
            });
        WaitingAgent {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first log line containing `needle`.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
        }
        panic!("no log line with {needle:?}:\n{}", self.seen.join("\n"));
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for WaitingAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn set_age(path: &Path, age: Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

#[test]
fn a_cache_too_old_or_torn_is_refused_at_start_and_etcd_is_awaited() {
    let mut etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.toml");
    std::fs::write(&catalog, WEB_CATALOG).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_lodestar"))
        .args(["catalog", "put", "--etcd", &etcd.endpoint()])
        .arg(&catalog)
        .env_remove("LODESTAR_ETCD")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // A first agent fills the cache: private to its owner.
    let cache = dir.path().join("cache").join("catalog.json");
    let cache_arg = cache.to_str().unwrap().to_string();
    let endpoint = etcd.endpoint();
    let mut first = Agent::start(&["--etcd", &endpoint, "--cache-file", &cache_arg]);
    let deadline = Instant::now() + PATIENCE;
    while !cache.exists() {
        assert!(Instant::now() < deadline, "no cache file");
        std::thread::sleep(Duration::from_millis(50));
    }
    first.terminate();
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let good = std::fs::read(&cache).unwrap();

    // etcd is gone, and etcd last confirmed the cache eight days ago: not served.
    etcd.stop();
    set_age(&cache, Duration::from_secs(8 * 24 * 3600));
    let mut agent = WaitingAgent::start(&endpoint, &cache);
    let line = agent.wait_for("no usable local cache");
    assert!(
        line.contains("was last confirmed by etcd 8days")
            && line.contains("longer than catalog.cache_max_age_secs allows (7days)"),
        "{line}"
    );
    assert!(agent.is_running(), "it waits for etcd");
    drop(agent);

    // A cache torn in half: refused too, and nothing panics.
    std::fs::write(&cache, &good[..good.len() / 2]).unwrap();
    let mut agent = WaitingAgent::start(&endpoint, &cache);
    let line = agent.wait_for("no usable local cache");
    assert!(line.contains("is not usable"), "{line}");
    assert!(agent.is_running(), "it waits for etcd");

    // etcd returns: the waiting agent serves its catalog.
    etcd.restart();
    let ready = agent.wait_for("lodestar agent ready");
    let dns = ready
        .split("dns=")
        .nth(1)
        .and_then(|rest| rest.split([',', ' ']).next())
        .expect("the ready line names the DNS address")
        .trim_matches('"')
        .parse()
        .expect("a DNS address");
    assert_eq!(
        answers(&udp(dns, "web.marathon.mesos.", RecordType::A, None)),
        ["127.0.3.10"]
    );
    assert!(agent.seen.iter().all(|l| !l.contains("panicked")));
}
