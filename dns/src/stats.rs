//! Counters of the DNS servers, kept per worker thread (no shared cache line on the answer
//! path) and summed when `crate::metrics::publish` hands them to the metrics recorder.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds of the latency histogram, in nanoseconds (last bucket: +Inf).
pub const BUCKETS_NS: [u64; 10] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

/// Slots of the histogram: one per bound, then +Inf.
pub const DURATION_SLOTS: usize = BUCKETS_NS.len() + 1;

/// Rcodes counted by name, by value 0..=5; everything else (BADVERS, ...) in one more slot.
pub const RCODE_NAMES: [&str; 7] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "OTHER",
];

/// One worker's counters, on their own cache lines.
#[repr(align(128))]
#[derive(Default)]
pub struct WorkerStats {
    pub udp_queries: AtomicU64,
    pub tcp_queries: AtomicU64,
    /// By rcode, slots as `RCODE_NAMES`.
    pub rcodes: [AtomicU64; 7],
    pub prepared: AtomicU64,
    pub dropped: AtomicU64,
    pub truncated: AtomicU64,
    pub refused_recursion: AtomicU64,
    pub forwarded: AtomicU64,
    /// UDP responses over the rate limit, dropped or sent truncated (`crate::rrl`) ...
    pub rrl_dropped: AtomicU64,
    pub rrl_slipped: AtomicU64,
    /// ... and both together, which the slip counts in.
    pub rrl_limited: AtomicU64,
    /// TCP connections closed at once: every slot taken, or the source's share of them.
    pub tcp_refused_full: AtomicU64,
    pub tcp_refused_per_source: AtomicU64,
    /// Responses by how long they took, slots as `BUCKETS_NS` then +Inf ...
    pub buckets: [AtomicU64; DURATION_SLOTS],
    /// ... and their durations summed per slot, so each slot's mean is known.
    pub bucket_ns: [AtomicU64; DURATION_SLOTS],
}

impl WorkerStats {
    #[inline]
    pub fn count_rcode(&self, rcode: u8) {
        let slot = usize::from(rcode).min(6);
        self.rcodes[slot].fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub fn observe_ns(&self, ns: u64) {
        let slot = BUCKETS_NS
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(BUCKETS_NS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.bucket_ns[slot].fetch_add(ns, Ordering::Relaxed);
    }
}

/// All workers' counters.
pub struct DnsStats {
    workers: Vec<WorkerStats>,
    /// Per duration slot, the count and nanoseconds already handed to the recorder.
    pub(crate) published_durations: Mutex<[(u64, u64); DURATION_SLOTS]>,
}

impl DnsStats {
    pub fn new(workers: usize) -> Self {
        DnsStats {
            workers: (0..workers.max(1))
                .map(|_| WorkerStats::default())
                .collect(),
            published_durations: Mutex::new([(0, 0); DURATION_SLOTS]),
        }
    }

    /// Worker `i`'s counters (wrapping, so any index is valid).
    pub fn worker(&self, i: usize) -> &WorkerStats {
        &self.workers[i % self.workers.len()]
    }

    fn sum(&self, f: impl Fn(&WorkerStats) -> &AtomicU64) -> u64 {
        self.workers
            .iter()
            .map(|w| f(w).load(Ordering::Relaxed))
            .sum()
    }

    pub fn queries(&self) -> u64 {
        self.udp_queries() + self.tcp_queries()
    }

    pub fn rcode(&self, rcode: u8) -> u64 {
        let slot = usize::from(rcode).min(6);
        self.sum(|w| &w.rcodes[slot])
    }

    /// Responses in duration slot `slot`, and their nanoseconds summed. The two are read
    /// apart, so a response being counted meanwhile may be in one and not yet in the other.
    pub fn durations(&self, slot: usize) -> (u64, u64) {
        (
            self.sum(|w| &w.buckets[slot]),
            self.sum(|w| &w.bucket_ns[slot]),
        )
    }
}

/// The counters summed over the workers, each by its field's name.
macro_rules! summed {
    ($($name:ident),* $(,)?) => {
        impl DnsStats {
            $(pub fn $name(&self) -> u64 {
                self.sum(|w| &w.$name)
            })*
        }
    };
}

summed!(
    udp_queries,
    tcp_queries,
    prepared,
    dropped,
    truncated,
    forwarded,
    refused_recursion,
    rrl_dropped,
    rrl_slipped,
    tcp_refused_full,
    tcp_refused_per_source,
);
