//! The upstream resolvers: how each is doing (failures, demotion, latency), which to ask first,
//! and one exchange with one of them over UDP, again over TCP when the answer is truncated.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::answer::{AnswerError, UpstreamAnswer, UpstreamQuery};

/// Counters and health of one upstream, for metrics and status pages.
#[derive(Debug)]
pub struct UpstreamStats {
    pub addr: SocketAddr,
    /// Queries sent to it (a TCP retry of the same query is not counted again).
    pub queries: AtomicU64,
    /// Usable answers it gave, whether or not they were the ones used.
    pub answers: AtomicU64,
    /// Attempts that timed out.
    pub timeouts: AtomicU64,
    /// Attempts that failed on a socket error or a malformed answer.
    pub errors: AtomicU64,
    /// Answers with SERVFAIL or REFUSED.
    pub rcode_failures: AtomicU64,
    /// Truncated UDP answers asked again over TCP.
    pub tcp_retries: AtomicU64,
    /// Failures since its last success.
    pub consecutive_failures: AtomicU32,
    /// Demoted: asked only when no healthy upstream is left, or when a retry is due.
    pub demoted: AtomicBool,
    /// Smoothed round-trip time in microseconds (0 until it first answers).
    pub rtt_ewma_us: AtomicU64,
}

impl UpstreamStats {
    pub(super) fn new(addr: SocketAddr) -> Self {
        UpstreamStats {
            addr,
            queries: AtomicU64::new(0),
            answers: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            rcode_failures: AtomicU64::new(0),
            tcp_retries: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            demoted: AtomicBool::new(false),
            rtt_ewma_us: AtomicU64::new(0),
        }
    }
}

/// When to demote an upstream and how long to wait before asking it again.
#[derive(Debug, Clone, Copy)]
pub(super) struct HealthPolicy {
    pub demote_after: u32,
    pub backoff: Duration,
    pub backoff_max: Duration,
}

#[derive(Debug)]
struct Demotion {
    since: Instant,
    backoff: Duration,
    retry_at: Instant,
}

#[derive(Debug, Default)]
struct Health {
    consecutive_failures: u32,
    demoted: Option<Demotion>,
    rtt: Option<Duration>,
}

/// How one attempt went, as far as the upstream's health is concerned.
#[derive(Debug, Clone, Copy)]
pub(super) enum Outcome {
    Answered(Duration),
    /// SERVFAIL is usually about the name (a broken delegation, DNSSEC), not the upstream,
    /// so it neither demotes nor restores.
    Neutral,
    /// No usable answer. A timeout also counts its length against the upstream's latency.
    Failed {
        timed_out: Option<Duration>,
    },
}

/// Which upstreams to ask for one query, in order.
#[derive(Debug)]
pub(super) struct Plan {
    pub order: Vec<usize>,
    /// How many of `order` may be asked before any has failed; the rest are demoted
    /// upstreams, asked only once the preferred ones have failed.
    pub preferred: usize,
}

/// The health of every configured upstream, indexed like `ForwardStats::upstreams`.
#[derive(Debug)]
pub(super) struct Upstreams {
    policy: HealthPolicy,
    health: Box<[Mutex<Health>]>,
}

fn ewma(old: Option<Duration>, sample: Duration) -> Duration {
    // Weight 1/8 for the new sample, as TCP's SRTT does: steady, yet a slowdown shows in a few queries.
    old.map_or(sample, |old| (old * 7 + sample) / 8)
}

impl Upstreams {
    pub fn new(count: usize, policy: HealthPolicy) -> Self {
        Upstreams {
            policy,
            health: (0..count).map(|_| Mutex::default()).collect(),
        }
    }

    fn lock(&self, index: usize) -> Option<std::sync::MutexGuard<'_, Health>> {
        let health = self.health.get(index)?;
        Some(health.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The order in which to ask the upstreams of `set`: healthy ones by latency, with one
    /// demoted upstream whose retry is due riding along second (the best healthy one still
    /// answers if it has not recovered), then the other demoted ones as a last resort. When
    /// every upstream is demoted, the ones due soonest come first and none is a last resort.
    pub fn plan(&self, set: &[usize], now: Instant) -> Plan {
        let mut healthy = Vec::with_capacity(set.len());
        let mut demoted = Vec::new();
        for &index in set {
            let Some(health) = self.lock(index) else {
                continue;
            };
            match &health.demoted {
                None => healthy.push((health.rtt.unwrap_or_default(), index)),
                Some(d) => demoted.push((d.retry_at, index)),
            }
        }
        healthy.sort_unstable();
        demoted.sort_unstable();
        let mut order = Vec::with_capacity(healthy.len() + demoted.len());
        let mut healthy = healthy.into_iter().map(|(_, index)| index);
        let preferred = match healthy.next() {
            Some(best) => {
                order.push(best);
                if let Some(&(retry_at, probe)) = demoted.first() {
                    if retry_at <= now && self.reserve_retry(probe, now) {
                        order.push(probe);
                        demoted.remove(0);
                    }
                }
                order.extend(healthy);
                order.len()
            }
            None => demoted.len(),
        };
        order.extend(demoted.into_iter().map(|(_, index)| index));
        Plan { order, preferred }
    }

    /// Claims a due retry of a demoted upstream, so that concurrent queries do not all send
    /// theirs to it: the next one is due a backoff later.
    fn reserve_retry(&self, index: usize, now: Instant) -> bool {
        let Some(mut health) = self.lock(index) else {
            return false;
        };
        match &mut health.demoted {
            Some(d) if d.retry_at <= now => {
                d.retry_at = now + d.backoff;
                true
            }
            _ => false,
        }
    }

    /// Updates the health of upstream `index` with an attempt that began at `started`.
    pub fn record(&self, index: usize, outcome: Outcome, started: Instant, stats: &UpstreamStats) {
        let Some(mut health) = self.lock(index) else {
            return;
        };
        let now = Instant::now();
        match outcome {
            Outcome::Answered(rtt) => {
                health.rtt = Some(ewma(health.rtt, rtt));
                health.consecutive_failures = 0;
                if health.demoted.take().is_some() {
                    tracing::info!(upstream = %stats.addr, "upstream answers again, restored");
                }
            }
            Outcome::Neutral => {}
            Outcome::Failed { timed_out } => {
                if let Some(waited) = timed_out {
                    health.rtt = Some(ewma(health.rtt, waited));
                }
                health.consecutive_failures = health.consecutive_failures.saturating_add(1);
                let policy = self.policy;
                let failures = health.consecutive_failures;
                match &mut health.demoted {
                    // Attempts already under way when it was demoted say nothing new; only a
                    // failed retry lengthens the wait.
                    Some(d) if started >= d.since => {
                        d.backoff = (d.backoff * 2).min(policy.backoff_max);
                        d.retry_at = now + d.backoff;
                    }
                    Some(_) => {}
                    None if failures >= policy.demote_after => {
                        tracing::warn!(
                            upstream = %stats.addr,
                            failures,
                            retry_in = ?policy.backoff,
                            "upstream keeps failing, demoted"
                        );
                        health.demoted = Some(Demotion {
                            since: now,
                            backoff: policy.backoff,
                            retry_at: now + policy.backoff,
                        });
                    }
                    None => {}
                }
            }
        }
        stats
            .consecutive_failures
            .store(health.consecutive_failures, Relaxed);
        stats.demoted.store(health.demoted.is_some(), Relaxed);
        let rtt_us = health.rtt.map_or(0, |rtt| rtt.as_micros());
        stats
            .rtt_ewma_us
            .store(u64::try_from(rtt_us).unwrap_or(u64::MAX), Relaxed);
    }
}

/// Why an exchange with an upstream produced no answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum ExchangeError {
    #[error("timed out")]
    Timeout,
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    #[error("malformed answer or an answer to another question")]
    Invalid,
}

/// Datagrams that are not our answer before we give up on the socket: enough to ride out a
/// few strays or spoofs, few enough that a flood cannot keep an attempt busy for its whole timeout.
const MAX_STRAY_DATAGRAMS: usize = 16;

/// Room for any answer to our advertised 1232-byte payload, with slack for upstreams that
/// overshoot it; kept small because every attempt in flight holds one.
const UDP_BUFFER: usize = 4096;

fn local_addr_for(upstream: SocketAddr) -> SocketAddr {
    // An upstream on loopback is reached from loopback, so nothing binds wider than it needs.
    let ip = match (upstream, upstream.ip().is_loopback()) {
        (SocketAddr::V4(_), true) => Ipv4Addr::LOCALHOST.into(),
        (SocketAddr::V4(_), false) => Ipv4Addr::UNSPECIFIED.into(),
        (SocketAddr::V6(_), true) => Ipv6Addr::LOCALHOST.into(),
        (SocketAddr::V6(_), false) => Ipv6Addr::UNSPECIFIED.into(),
    };
    SocketAddr::new(ip, 0)
}

/// Asks `upstream` over UDP from a fresh ephemeral port with a random ID; a truncated answer
/// is asked again over TCP. Each leg gets `timeout`, and neither runs past `deadline`.
pub(super) async fn exchange(
    upstream: SocketAddr,
    query: &UpstreamQuery,
    timeout: Duration,
    deadline: tokio::time::Instant,
    stats: &UpstreamStats,
) -> Result<UpstreamAnswer, ExchangeError> {
    let leg_deadline = || (tokio::time::Instant::now() + timeout).min(deadline);
    let answer = tokio::time::timeout_at(leg_deadline(), exchange_udp(upstream, query))
        .await
        .map_err(|_| ExchangeError::Timeout)??;
    if !answer.truncated() {
        return Ok(answer);
    }
    stats.tcp_retries.fetch_add(1, Relaxed);
    tokio::time::timeout_at(leg_deadline(), exchange_tcp(upstream, query))
        .await
        .map_err(|_| ExchangeError::Timeout)?
}

/// A query ID from the operating system's CSPRNG: an off-path attacker must not be able to
/// predict it from the IDs it has seen (a fast PRNG's output can be). Falls back to the
/// fast generator only if the OS refuses.
fn query_id() -> u16 {
    let mut b = [0u8; 2];
    match getrandom::fill(&mut b) {
        Ok(()) => u16::from_be_bytes(b),
        Err(_) => fastrand::u16(..),
    }
}

async fn exchange_udp(
    upstream: SocketAddr,
    query: &UpstreamQuery,
) -> Result<UpstreamAnswer, ExchangeError> {
    let id = query_id();
    let socket = UdpSocket::bind(local_addr_for(upstream)).await?;
    // Connected, so the kernel drops datagrams from anyone but the upstream.
    socket.connect(upstream).await?;
    socket.send(&query.with_id(id)).await?;
    let mut buf = vec![0; UDP_BUFFER];
    for _ in 0..MAX_STRAY_DATAGRAMS {
        let len = socket.recv(&mut buf).await?;
        match UpstreamAnswer::parse(buf.get(..len).unwrap_or_default(), query, id) {
            Ok(answer) => return Ok(answer),
            Err(AnswerError::NotOurs) => continue,
            Err(AnswerError::Invalid) => return Err(ExchangeError::Invalid),
        }
    }
    Err(ExchangeError::Invalid)
}

async fn exchange_tcp(
    upstream: SocketAddr,
    query: &UpstreamQuery,
) -> Result<UpstreamAnswer, ExchangeError> {
    let id = query_id();
    let mut stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let bytes = query.with_id(id);
    let len = u16::try_from(bytes.len()).map_err(|_| ExchangeError::Invalid)?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await?;
    let mut buf = vec![0; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    UpstreamAnswer::parse(&buf, query, id).map_err(|_| ExchangeError::Invalid)
}
