//! Forwarding of names outside our zones to upstream resolvers, as Spartan did on every node:
//! two upstreams asked at once, failing ones demoted, answers cached, stale ones served when all fail.
//! The `Forwarder` is the catalog's answer source for the root, and answers only clients that
//! may recurse.
//!
//! Per query: zone transfers are refused; then the cache (a fresh entry is answered at once,
//! with the client's ID and question and its TTLs aged); a name whose zone has no upstreams is
//! refused. Everything else waits on the network (`answer_later`): a permit of the in-flight
//! cap, or REFUSED; then the upstreams of the longest matching zone (or the defaults): the two
//! best at once, each failure starting the next one (demoted upstreams last), for at most twice
//! the per-attempt timeout; then, if none answered, a stale entry (TTL 30) or SERVFAIL. Attempts
//! that lose the race run to their end in the background, so a dead upstream is noticed and
//! demoted even while its partner answers every query. An upstream's answer is relayed as sent,
//! except for the ID, the question's case, the TTLs (aged), the OPT record (ours, and only if
//! the client sent one), and the additional records when the client's limit cannot take them.

mod answer;
mod cache;
mod upstream;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::catalog::{AnswerSource, Answered, Pending, Request};
use crate::wire::{self, Reject, TYPE_AXFR, TYPE_IXFR};
use cache::{Cache, CacheKey, Entry, Lookup};
use upstream::{HealthPolicy, Outcome, Upstreams};

#[doc(hidden)]
pub use answer::exercise_upstream_answer;
pub use answer::{AnswerError, Ttls, UpstreamAnswer, UpstreamQuery};
pub use upstream::UpstreamStats;

/// TTL of an answer served stale (RFC 8767 §4 recommends 30 s).
pub const STALE_TTL: u32 = 30;
/// Upstreams asked at once for one query.
const PARALLEL_ATTEMPTS: usize = 2;
/// Upper bounds that keep time arithmetic far from overflow whatever the configuration says.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_STALE: Duration = Duration::from_secs(30 * 86_400);
const MAX_BACKOFF: Duration = Duration::from_secs(86_400);

#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// Default upstreams, tried when no zone matches.
    pub upstreams: Vec<SocketAddr>,
    /// Per-zone upstreams (zone as a lowercase domain like "example.org", no trailing dot
    /// needed); the longest suffix match wins over the defaults. A zone with no upstreams is
    /// answered REFUSED.
    pub zones: Vec<(String, Vec<SocketAddr>)>,
    /// Per-attempt timeout (default 2 s, at most 60 s); a query gives up after twice this.
    pub timeout: Duration,
    /// Queries in flight at once; past it, answer REFUSED rather than queue (default 1024).
    pub max_in_flight: usize,
    /// Cached responses (default 10_000 entries; 0 turns the cache off).
    pub cache_entries: usize,
    /// How long past expiry a response may be served stale while every upstream fails
    /// (RFC 8767; default 1 day, at most 30 days); stale answers carry TTL 30.
    pub max_stale: Duration,
    /// Consecutive failures (timeouts, socket errors, malformed answers, REFUSED) that demote
    /// an upstream (default 3).
    pub demote_after: u32,
    /// Wait before a demoted upstream is tried again; doubles after each failed retry up to
    /// `demote_backoff_max` (defaults 5 s and 60 s).
    pub demote_backoff: Duration,
    pub demote_backoff_max: Duration,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            upstreams: Vec::new(),
            zones: Vec::new(),
            timeout: Duration::from_secs(2),
            max_in_flight: 1024,
            cache_entries: 10_000,
            max_stale: Duration::from_secs(86_400),
            demote_after: 3,
            demote_backoff: Duration::from_secs(5),
            demote_backoff_max: Duration::from_secs(60),
        }
    }
}

/// A configuration the forwarder cannot use as written.
#[derive(Debug, thiserror::Error)]
pub enum ForwardConfigError {
    #[error("forward zone {zone:?}: {reason}")]
    InvalidZone { zone: String, reason: &'static str },
    #[error("forward zone {zone:?} is configured twice")]
    DuplicateZone { zone: String },
}

/// Answers larger than this are not cached (10,000 entries stay under about 40 MB).
const MAX_CACHED_BYTES: usize = 4096;

/// Counters for metrics and status, all monotonic except the per-upstream health fields.
#[derive(Debug, Default)]
pub struct ForwardStats {
    /// Queries sent on to upstreams (cache misses that got an in-flight permit).
    pub forwarded: AtomicU64,
    /// Queries answered with a fresh upstream answer.
    pub answered: AtomicU64,
    /// Queries answered from a fresh cache entry.
    pub cache_hits: AtomicU64,
    /// Well-formed queries with no fresh cache entry.
    pub cache_misses: AtomicU64,
    /// Queries answered from an expired entry because every upstream failed.
    pub stale_served: AtomicU64,
    /// Queries refused because `max_in_flight` queries were already under way.
    pub refused_in_flight: AtomicU64,
    /// Queries refused because no upstream is configured for their name, and zone transfers.
    pub refused_no_upstream: AtomicU64,
    /// SERVFAIL sent because every upstream failed and nothing stale was at hand.
    pub servfail: AtomicU64,
    /// Queries `resolve` answered FORMERR, NOTIMP or BADVERS without forwarding them (the
    /// servers answer those themselves, counted by rcode, before a source sees them).
    pub malformed: AtomicU64,
    /// Responses cut to header and question (TC=1) because they exceeded the client's size.
    pub truncated: AtomicU64,
    /// Upstream attempts that produced no usable answer (timeouts, errors, SERVFAIL, REFUSED).
    pub upstream_failures: AtomicU64,
    /// Every configured upstream once, in configuration order (defaults first).
    pub upstreams: Vec<UpstreamStats>,
}

impl ForwardStats {
    pub fn upstream(&self, addr: SocketAddr) -> Option<&UpstreamStats> {
        self.upstreams.iter().find(|u| u.addr == addr)
    }
}

/// The forwarder; cheap to share behind an `Arc`, and `resolve` may run from many tasks.
#[derive(Debug)]
pub struct Forwarder {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    timeout: Duration,
    /// Upstream sets as indices into `stats.upstreams`; `sets[0]` is the defaults.
    sets: Vec<Vec<usize>>,
    /// Zone name in lowercase wire form -> index into `sets`.
    zones: HashMap<Box<[u8]>, usize>,
    health: Upstreams,
    cache: Cache,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    stats: ForwardStats,
}

const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Forwarder>();
};

/// "Example.org." -> `\x07example\x03org\x00`; "" and "." are the root.
fn zone_wire(zone: &str) -> Result<Box<[u8]>, ForwardConfigError> {
    match wire::name_to_wire(zone) {
        Some(wire) => Ok(wire.into_boxed_slice()),
        None => Err(ForwardConfigError::InvalidZone {
            zone: zone.to_owned(),
            reason: "not a domain name (labels of 1 to 63 letters, digits, '-' or '_'; 255 bytes in all)",
        }),
    }
}

impl Forwarder {
    /// A forwarder for `config`. A zone that is malformed or given twice is skipped (the first
    /// wins) with a warning; use [`Forwarder::try_new`] to refuse such a configuration instead.
    pub fn new(config: ForwardConfig) -> Self {
        Self::build(config, |error| {
            tracing::warn!(%error, "forward zone skipped");
            Ok(())
        })
        .unwrap_or_else(|never: std::convert::Infallible| match never {})
    }

    /// A forwarder for `config`, or the first problem found in its zones.
    pub fn try_new(config: ForwardConfig) -> Result<Self, ForwardConfigError> {
        Self::build(config, Err)
    }

    fn build<E>(
        config: ForwardConfig,
        mut on_error: impl FnMut(ForwardConfigError) -> Result<(), E>,
    ) -> Result<Self, E> {
        let mut addrs: Vec<SocketAddr> = Vec::new();
        let mut set_of = |upstreams: &[SocketAddr]| {
            let mut set = Vec::with_capacity(upstreams.len());
            for &addr in upstreams {
                let index = match addrs.iter().position(|&a| a == addr) {
                    Some(index) => index,
                    None => {
                        addrs.push(addr);
                        addrs.len() - 1
                    }
                };
                if !set.contains(&index) {
                    set.push(index);
                }
            }
            set
        };
        let mut sets = vec![set_of(&config.upstreams)];
        let mut zones = HashMap::new();
        for (zone, upstreams) in &config.zones {
            let wire = match zone_wire(zone) {
                Ok(wire) => wire,
                Err(error) => {
                    on_error(error)?;
                    continue;
                }
            };
            if zones.contains_key(&wire) {
                on_error(ForwardConfigError::DuplicateZone { zone: zone.clone() })?;
                continue;
            }
            zones.insert(wire, sets.len());
            sets.push(set_of(upstreams));
        }
        let policy = HealthPolicy {
            demote_after: config.demote_after.max(1),
            backoff: config.demote_backoff.min(MAX_BACKOFF),
            backoff_max: config
                .demote_backoff_max
                .clamp(config.demote_backoff.min(MAX_BACKOFF), MAX_BACKOFF),
        };
        let max_in_flight = config.max_in_flight.min(Semaphore::MAX_PERMITS);
        Ok(Forwarder {
            inner: Arc::new(Inner {
                timeout: config.timeout.min(MAX_TIMEOUT),
                sets,
                zones,
                health: Upstreams::new(addrs.len(), policy),
                cache: Cache::new(config.cache_entries, config.max_stale.min(MAX_STALE)),
                in_flight: Arc::new(Semaphore::new(max_in_flight)),
                max_in_flight,
                stats: ForwardStats {
                    upstreams: addrs.into_iter().map(UpstreamStats::new).collect(),
                    ..ForwardStats::default()
                },
            }),
        })
    }

    pub fn stats(&self) -> &ForwardStats {
        &self.inner.stats
    }

    /// Entries in the cache, fresh and stale.
    pub fn cache_len(&self) -> usize {
        self.inner.cache.len()
    }

    /// Queries waiting on upstreams right now (including attempts that lost and are running out).
    pub fn in_flight(&self) -> usize {
        self.inner.max_in_flight - self.inner.in_flight.available_permits()
    }

    /// `query` is a client's raw DNS query (one question, QR=0, already checked by the caller).
    /// Returns the complete response to send back: the client's ID, the question as asked, at
    /// most `max_size` bytes (for UDP: the client's EDNS payload or 512; for TCP 65535; read
    /// as at least 512) — if larger, the additional records are left out, and if still larger,
    /// a TC=1 response with the question (and an OPT if the client sent one) only.
    ///
    /// Never panics. Input that is not a well-formed one-question query is answered FORMERR
    /// (with the ID and opcode echoed from whatever bytes there are), another opcode NOTIMP, an
    /// EDNS version other than 0 BADVERS. A server should not answer packets with QR=1 or
    /// shorter than a header at all (answering responses invites loops); it is the caller's
    /// check, and FORMERR is only what comes back if that check is missing. Upstream failures
    /// give SERVFAIL (or a stale answer); the in-flight cap, a name with no upstream
    /// configured, and AXFR/IXFR give REFUSED.
    ///
    /// The servers do not come here: they decode a query once and hand the `Request` to the
    /// catalog, which calls `answer` and `answer_later`.
    pub async fn resolve(&self, query: &[u8], max_size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let client = match wire::parse_query(query) {
            Ok(client) => client,
            Err(reject) => {
                self.inner.stats.malformed.fetch_add(1, Relaxed);
                let reject = match reject {
                    Reject::Drop => Reject::formerr_for(query),
                    error => error,
                };
                wire::write_rejection(&mut out, query, &reject, true);
                return out;
            }
        };
        let limit = max_size.clamp(wire::MIN_UDP, wire::MAX_MESSAGE);
        let request = Request::new(client, Ipv4Addr::UNSPECIFIED.into(), limit, true, 0);
        match self.answer_now(&request, &mut out) {
            Answered::Now { .. } => out,
            Answered::Later => self.answer_from_upstreams(&request).await,
        }
    }

    /// What needs no upstream: zone transfers, fresh cache entries, names without upstreams.
    fn answer_now(&self, request: &Request<'_>, out: &mut Vec<u8>) -> Answered {
        let stats = &self.inner.stats;
        if matches!(request.query.qtype, TYPE_AXFR | TYPE_IXFR) {
            // A transfer is a stream of messages over TCP; one exchange cannot relay it.
            stats.refused_no_upstream.fetch_add(1, Relaxed);
            return refuse(request, out);
        }
        let key = CacheKey::new(request);
        if let Lookup::Fresh { entry, age } = self.inner.cache.get(&key, Instant::now()) {
            stats.cache_hits.fetch_add(1, Relaxed);
            let rcode = self.respond(request, &entry.answer, Ttls::Aged(age), out);
            return Answered::Now {
                rcode,
                prepared: false,
            };
        }
        stats.cache_misses.fetch_add(1, Relaxed);
        if self.inner.route(request.lower_qname()).is_empty() {
            stats.refused_no_upstream.fetch_add(1, Relaxed);
            return refuse(request, out);
        }
        Answered::Later
    }

    /// A cache miss: the upstreams, or else what the cache has left, or SERVFAIL.
    async fn answer_from_upstreams(&self, request: &Request<'_>) -> Vec<u8> {
        let stats = &self.inner.stats;
        let mut out = Vec::new();
        let key = CacheKey::new(request);
        let set = self.inner.route(request.lower_qname());
        let Ok(permit) = Arc::clone(&self.inner.in_flight).try_acquire_owned() else {
            // At the cap, an expired answer still beats REFUSED (RFC 8767).
            if let Lookup::Stale(entry) = self.inner.cache.get(&key, Instant::now()) {
                stats.stale_served.fetch_add(1, Relaxed);
                self.respond(request, &entry.answer, Ttls::Fixed(STALE_TTL), &mut out);
                return out;
            }
            stats.refused_in_flight.fetch_add(1, Relaxed);
            refuse(request, &mut out);
            return out;
        };
        stats.forwarded.fetch_add(1, Relaxed);
        if let Some(answer) = self.dispatch(request, set, permit).await {
            stats.answered.fetch_add(1, Relaxed);
            self.store_and_respond(request, key, answer, &mut out);
            return out;
        }
        // Every upstream failed. A concurrent query may have refreshed the entry meanwhile;
        // otherwise an expired one will do (RFC 8767).
        match self.inner.cache.get(&key, Instant::now()) {
            Lookup::Fresh { entry, age } => {
                stats.cache_hits.fetch_add(1, Relaxed);
                self.respond(request, &entry.answer, Ttls::Aged(age), &mut out);
            }
            Lookup::Stale(entry) => {
                stats.stale_served.fetch_add(1, Relaxed);
                self.respond(request, &entry.answer, Ttls::Fixed(STALE_TTL), &mut out);
            }
            Lookup::Miss => {
                stats.servfail.fetch_add(1, Relaxed);
                request.respond_rcode(&mut out, wire::RCODE_SERVFAIL);
            }
        }
        out
    }

    /// Caches an upstream answer when its TTLs allow, and answers the client from it.
    fn store_and_respond(
        &self,
        request: &Request<'_>,
        key: CacheKey,
        answer: UpstreamAnswer,
        out: &mut Vec<u8>,
    ) {
        // Large answers (up to 64 KB over TCP) are relayed but not cached, so the cache's
        // size in bytes stays bounded by its entry count.
        let Some(ttl) = answer
            .cache_ttl
            .filter(|_| answer.records.len() <= MAX_CACHED_BYTES)
        else {
            self.respond(request, &answer, Ttls::AsIs, out);
            return;
        };
        let entry = Entry::new(answer, ttl, Instant::now());
        self.respond(request, &entry.answer, Ttls::Aged(0), out);
        self.inner.cache.insert(key, entry);
    }

    /// Writes the response from `answer`; its rcode.
    fn respond(
        &self,
        request: &Request<'_>,
        answer: &UpstreamAnswer,
        ttls: Ttls,
        out: &mut Vec<u8>,
    ) -> u8 {
        let stats = &self.inner.stats;
        match answer.respond(request, ttls, out) {
            Some(written) => {
                if written.truncated {
                    stats.truncated.fetch_add(1, Relaxed);
                }
                answer.rcode.low()
            }
            None => {
                // The cache key holds the question's name, so a stored answer always fits it.
                stats.servfail.fetch_add(1, Relaxed);
                request.respond_rcode(out, wire::RCODE_SERVFAIL);
                wire::RCODE_SERVFAIL
            }
        }
    }

    /// Asks the upstreams of `set`, two at a time in the order of their health, until one
    /// gives a usable answer or the query's time (twice the per-attempt timeout) is up.
    async fn dispatch(
        &self,
        request: &Request<'_>,
        set: &[usize],
        permit: OwnedSemaphorePermit,
    ) -> Option<UpstreamAnswer> {
        let plan = self.inner.health.plan(set, Instant::now());
        let query = Arc::new(UpstreamQuery::new(&request.query));
        // The permit counts this client's query, not its attempts: it is released when the
        // query has its answer, while losing attempts run out on their own (bounded by the
        // deadline), so a dead partner upstream does not halve the capacity.
        let _permit = permit;
        let deadline = tokio::time::Instant::now() + self.inner.timeout * 2;
        let mut order = plan.order.into_iter();
        let mut attempts = JoinSet::new();
        let mut launch = |attempts: &mut JoinSet<Option<UpstreamAnswer>>| match order.next() {
            Some(index) => {
                let attempt = attempt(Arc::clone(&self.inner), index, Arc::clone(&query), deadline);
                attempts.spawn(attempt);
                true
            }
            None => false,
        };
        for _ in 0..PARALLEL_ATTEMPTS.min(plan.preferred) {
            launch(&mut attempts);
        }
        let mut winner = None;
        while winner.is_none() {
            match tokio::time::timeout_at(deadline, attempts.join_next()).await {
                Ok(Some(Ok(Some(answer)))) => winner = Some(answer),
                Ok(Some(_)) => {
                    if tokio::time::Instant::now() < deadline {
                        launch(&mut attempts);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        // The losers finish on their own (each within the deadline) so that their outcome
        // still counts towards their upstream's health.
        attempts.detach_all();
        winner
    }
}

impl AnswerSource for Forwarder {
    fn origins(&self) -> Vec<Box<[u8]>> {
        vec![Box::new([0])]
    }

    fn is_recursive(&self) -> bool {
        true
    }

    fn answer(&self, request: &Request<'_>, out: &mut Vec<u8>) -> Answered {
        self.answer_now(request, out)
    }

    fn answer_later<'a>(&'a self, request: &'a Request<'a>) -> Pending<'a> {
        Box::pin(self.answer_from_upstreams(request))
    }
}

fn refuse(request: &Request<'_>, out: &mut Vec<u8>) -> Answered {
    request.respond_rcode(out, wire::RCODE_REFUSED);
    Answered::Now {
        rcode: wire::RCODE_REFUSED,
        prepared: false,
    }
}

impl Inner {
    /// The upstreams for `qname` (lowercase wire form): the longest matching zone's, else the defaults.
    fn route(&self, qname: &[u8]) -> &[usize] {
        let mut at = 0;
        let set = loop {
            let Some(suffix) = qname.get(at..) else {
                break 0;
            };
            if let Some(&set) = self.zones.get(suffix) {
                break set;
            }
            match suffix.first() {
                Some(&len) if len > 0 => at += 1 + usize::from(len),
                _ => break 0,
            }
        };
        self.sets.get(set).map_or(&[], Vec::as_slice)
    }
}

/// One upstream asked once (twice, over TCP, if it truncates): the answer if it is usable,
/// and its health updated either way.
async fn attempt(
    inner: Arc<Inner>,
    index: usize,
    query: Arc<UpstreamQuery>,
    deadline: tokio::time::Instant,
) -> Option<UpstreamAnswer> {
    let stats = inner.stats.upstreams.get(index)?;
    stats.queries.fetch_add(1, Relaxed);
    let started = Instant::now();
    let result = upstream::exchange(stats.addr, &query, inner.timeout, deadline, stats).await;
    let (outcome, answer) = match result {
        Ok(answer) => match answer.rcode {
            ResponseCode::ServFail => {
                stats.rcode_failures.fetch_add(1, Relaxed);
                (Outcome::Neutral, None)
            }
            // REFUSED means it will not serve us (an ACL, the wrong server): that is about the
            // upstream, not the name.
            ResponseCode::Refused => {
                stats.rcode_failures.fetch_add(1, Relaxed);
                (Outcome::Failed { timed_out: None }, None)
            }
            // It could not take our query (EDNS, an opcode): a failure of that upstream, never
            // an answer to relay.
            ResponseCode::FormErr | ResponseCode::NotImp => {
                stats.rcode_failures.fetch_add(1, Relaxed);
                (Outcome::Failed { timed_out: None }, None)
            }
            // We sent EDNS version 0 without cookies, so an extended RCODE means a broken upstream.
            code if u16::from(code) > 0x0F => {
                stats.errors.fetch_add(1, Relaxed);
                (Outcome::Failed { timed_out: None }, None)
            }
            _ => {
                stats.answers.fetch_add(1, Relaxed);
                (Outcome::Answered(started.elapsed()), Some(answer))
            }
        },
        Err(error) => {
            tracing::debug!(upstream = %stats.addr, %error, "upstream attempt failed");
            match error {
                upstream::ExchangeError::Timeout => {
                    stats.timeouts.fetch_add(1, Relaxed);
                    (
                        Outcome::Failed {
                            timed_out: Some(started.elapsed()),
                        },
                        None,
                    )
                }
                _ => {
                    stats.errors.fetch_add(1, Relaxed);
                    (Outcome::Failed { timed_out: None }, None)
                }
            }
        }
    };
    if answer.is_none() {
        inner.stats.upstream_failures.fetch_add(1, Relaxed);
    }
    inner.health.record(index, outcome, started, stats);
    answer
}
