//! Active health checks by the agent: a TCP connect, or an HTTP GET with an expected status,
//! to every TCP backend address of the VIPs, on an interval, with a timeout and rise/fall
//! thresholds. Probes are spread over the interval by a hash of the address, so 1,000
//! backends are not probed in one burst. A backend that falls counts as unhealthy in the plan
//! (its slots go, so new connections avoid it at once); one that rises gets them back.
//!
//! Passive health (refused or timed-out connects seen by the sockops program) needs no agent
//! round trip and lives in the BPF side; see `ebpf/bpf/sock_lb.c`.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lodestar_control::ConfigProblem;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::plan::BackendAddr;
use crate::L4lb;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// The backend accepts a TCP connection.
    #[default]
    Tcp,
    /// `GET path` answers with the expected status.
    Http,
}

/// A VIP whose backends are checked differently from the default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipCheck {
    /// The VIP as `lodestar vips ls` names it: `/web:80/tcp` or `198.19.0.10:80/tcp`.
    pub vip: String,
    pub kind: Option<CheckKind>,
    pub path: Option<String>,
    pub expect_status: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActiveConfig {
    pub enabled: bool,
    pub kind: CheckKind,
    pub path: String,
    pub expect_status: u16,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Consecutive successes that bring a down backend back.
    pub rise: u32,
    /// Consecutive failures that take a backend out.
    pub fall: u32,
    pub max_in_flight: usize,
    pub vips: Vec<VipCheck>,
}

impl Default for ActiveConfig {
    fn default() -> Self {
        ActiveConfig {
            enabled: false,
            kind: CheckKind::Tcp,
            path: "/".into(),
            expect_status: 200,
            interval_ms: 2000,
            timeout_ms: 500,
            rise: 2,
            fall: 2,
            max_in_flight: 64,
            vips: Vec::new(),
        }
    }
}

impl ActiveConfig {
    /// Everything wrong with the section, all at once.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if self.interval_ms == 0 || self.timeout_ms == 0 {
            out.push(ConfigProblem::new(
                "l4lb.active",
                "interval_ms and timeout_ms must be at least 1",
            ));
        }
        if self.rise == 0 || self.fall == 0 {
            out.push(ConfigProblem::new(
                "l4lb.active",
                "rise and fall must be at least 1",
            ));
        }
        if self.max_in_flight == 0 {
            out.push(ConfigProblem::new(
                "l4lb.active.max_in_flight",
                "must be at least 1",
            ));
        }
        out
    }

    fn check_for(&self, vip: &str) -> Check {
        let o = self.vips.iter().find(|v| v.vip == vip);
        Check {
            kind: o.and_then(|o| o.kind).unwrap_or(self.kind),
            path: o
                .and_then(|o| o.path.clone())
                .unwrap_or_else(|| self.path.clone()),
            expect: o
                .and_then(|o| o.expect_status)
                .unwrap_or(self.expect_status),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Check {
    kind: CheckKind,
    path: String,
    expect: u16,
}

/// One probe: did the backend pass?
async fn probe(addr: SocketAddr, check: &Check, timeout: Duration) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        if check.kind == CheckKind::Tcp {
            return Some(true);
        }
        let req = format!(
            "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: lodestar-health\r\n\r\n",
            check.path,
            addr.ip()
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 64];
        let mut n = 0;
        while n < 12 {
            match s.read(&mut buf[n..]).await.ok()? {
                0 => break,
                k => n += k,
            }
        }
        let line = std::str::from_utf8(&buf[..n]).ok()?;
        let code: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(code == check.expect)
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

struct Target {
    check: Check,
    /// None until the first verdict (counts as up).
    up: Option<bool>,
    run_ok: u32,
    run_fail: u32,
    due: Instant,
    in_flight: bool,
}

/// The checker's counters, for metrics.
#[derive(Debug, Default)]
pub struct ActiveStats {
    pub probes_ok: std::sync::atomic::AtomicU64,
    pub probes_failed: std::sync::atomic::AtomicU64,
    pub transitions: std::sync::atomic::AtomicU64,
}

impl ActiveStats {
    /// Publishes the counters through the `metrics` facade (at scrape time).
    pub fn publish(&self) {
        use crate::metrics::{HEALTH_PROBES_TOTAL, HEALTH_TRANSITIONS_TOTAL};
        use std::sync::atomic::Ordering::Relaxed;
        for (result, n) in [("ok", &self.probes_ok), ("failed", &self.probes_failed)] {
            ::metrics::counter!(HEALTH_PROBES_TOTAL, "result" => result).absolute(n.load(Relaxed));
        }
        ::metrics::counter!(HEALTH_TRANSITIONS_TOTAL).absolute(self.transitions.load(Relaxed));
    }
}

/// Runs the checks until the task is dropped. `changed` is notified after a verdict changed
/// the plan, so the caller re-programs the maps.
pub async fn run(
    cfg: ActiveConfig,
    l4lb: Arc<Mutex<L4lb>>,
    changed: Arc<Notify>,
    stats: Arc<ActiveStats>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let interval = Duration::from_millis(cfg.interval_ms);
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let limit = Arc::new(Semaphore::new(cfg.max_in_flight));
    let (tx, mut rx) = mpsc::unbounded_channel::<(BackendAddr, bool)>();
    let mut targets: HashMap<BackendAddr, Target> = HashMap::new();
    let mut generation = u64::MAX;
    let start = Instant::now();
    loop {
        // Targets follow the plan.
        let (g, list) = l4lb
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check_targets(generation);
        if let Some(list) = list {
            generation = g;
            let mut next = HashMap::new();
            for (addr, vip) in list {
                let t = targets.remove(&addr).unwrap_or_else(|| {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    addr.hash(&mut h);
                    let phase =
                        Duration::from_nanos(h.finish() % interval.as_nanos().max(1) as u64);
                    Target {
                        check: cfg.check_for(&vip),
                        up: None,
                        run_ok: 0,
                        run_fail: 0,
                        due: Instant::now().max(start + phase),
                        in_flight: false,
                    }
                });
                next.insert(addr, t);
            }
            // Verdicts of targets that left the plan go with them.
            let mut l = l4lb.lock().unwrap_or_else(|p| p.into_inner());
            for gone in targets.keys() {
                l.set_active_down(gone, false);
            }
            targets = next;
        }

        let now = Instant::now();
        for (addr, t) in targets.iter_mut() {
            if t.in_flight || t.due > now {
                continue;
            }
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                break;
            };
            t.in_flight = true;
            t.due += interval;
            if t.due < now {
                t.due = now + interval;
            }
            let (addr, check, tx) = (*addr, t.check.clone(), tx.clone());
            tokio::spawn(async move {
                let ok = probe(SocketAddr::new(addr.ip, addr.port), &check, timeout).await;
                drop(permit);
                let _ = tx.send((addr, ok));
            });
        }

        let next_due = targets
            .values()
            .filter(|t| !t.in_flight)
            .map(|t| t.due)
            .min()
            .unwrap_or(now + Duration::from_millis(100))
            .min(now + Duration::from_millis(100));
        tokio::select! {
            Some((addr, ok)) = rx.recv() => {
                let mut results = vec![(addr, ok)];
                while let Ok(r) = rx.try_recv() {
                    results.push(r);
                }
                let mut flipped = false;
                for (addr, ok) in results {
                    let Some(t) = targets.get_mut(&addr) else { continue };
                    t.in_flight = false;
                    if ok {
                        stats.probes_ok.fetch_add(1, Relaxed);
                        t.run_ok += 1;
                        t.run_fail = 0;
                    } else {
                        stats.probes_failed.fetch_add(1, Relaxed);
                        t.run_fail += 1;
                        t.run_ok = 0;
                    }
                    let verdict = match t.up {
                        Some(false) if t.run_ok >= cfg.rise => Some(true),
                        None if ok => Some(true),
                        Some(true) | None if t.run_fail >= cfg.fall => Some(false),
                        _ => None,
                    };
                    if let Some(up) = verdict {
                        let was = t.up.replace(up);
                        if was == Some(!up) || (was.is_none() && !up) {
                            stats.transitions.fetch_add(1, Relaxed);
                            let backend = SocketAddr::new(addr.ip, addr.port);
                            if up {
                                info!(%backend, "active check: backend is up again");
                            } else {
                                warn!(%backend, fails = t.run_fail, "active check: backend is down");
                            }
                            let mut l = l4lb.lock().unwrap_or_else(|p| p.into_inner());
                            flipped |= l.set_active_down(&addr, !up);
                        }
                    }
                }
                if flipped {
                    changed.notify_one();
                }
            }
            _ = tokio::time::sleep_until(next_due) => {}
        }
    }
}
