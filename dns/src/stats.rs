//! Counters of the DNS servers, kept per worker thread (no shared cache line on the answer
//! path) and summed when `/metrics` is scraped. Names follow Prometheus conventions.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

pub const QUERIES_TOTAL: &str = "lodestar_dns_queries_total";
pub const RESPONSES_TOTAL: &str = "lodestar_dns_responses_total";
pub const PREPARED_ANSWERS_TOTAL: &str = "lodestar_dns_prepared_answers_total";
pub const DROPPED_TOTAL: &str = "lodestar_dns_dropped_total";
pub const TRUNCATED_TOTAL: &str = "lodestar_dns_truncated_total";
pub const REFUSED_RECURSION_TOTAL: &str = "lodestar_dns_recursion_refused_total";
pub const FORWARDED_TOTAL: &str = "lodestar_dns_forwarded_total";
pub const DURATION_SECONDS: &str = "lodestar_dns_query_duration_seconds";

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

const RCODES: [&str; 6] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
];

/// One worker's counters, on their own cache lines.
#[repr(align(128))]
#[derive(Default)]
pub struct WorkerStats {
    pub udp_queries: AtomicU64,
    pub tcp_queries: AtomicU64,
    /// By rcode 0..=5; everything else (BADVERS, ...) in the last slot.
    pub rcodes: [AtomicU64; 7],
    pub prepared: AtomicU64,
    pub dropped: AtomicU64,
    pub truncated: AtomicU64,
    pub refused_recursion: AtomicU64,
    pub forwarded: AtomicU64,
    pub buckets: [AtomicU64; BUCKETS_NS.len() + 1],
    pub duration_ns: AtomicU64,
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
        self.duration_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// All workers' counters.
pub struct DnsStats {
    workers: Vec<WorkerStats>,
}

impl DnsStats {
    pub fn new(workers: usize) -> Self {
        DnsStats {
            workers: (0..workers.max(1))
                .map(|_| WorkerStats::default())
                .collect(),
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
        self.sum(|w| &w.udp_queries) + self.sum(|w| &w.tcp_queries)
    }

    pub fn rcode(&self, rcode: u8) -> u64 {
        let slot = usize::from(rcode).min(6);
        self.sum(|w| &w.rcodes[slot])
    }

    pub fn dropped(&self) -> u64 {
        self.sum(|w| &w.dropped)
    }

    pub fn truncated(&self) -> u64 {
        self.sum(|w| &w.truncated)
    }

    pub fn forwarded(&self) -> u64 {
        self.sum(|w| &w.forwarded)
    }

    pub fn refused_recursion(&self) -> u64 {
        self.sum(|w| &w.refused_recursion)
    }

    /// Prometheus text exposition of these counters.
    pub fn render(&self, out: &mut String) {
        let mut counter = |name: &str, help: &str, rows: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in rows {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        counter(
            QUERIES_TOTAL,
            "DNS queries received.",
            vec![
                ("{transport=\"udp\"}".into(), self.sum(|w| &w.udp_queries)),
                ("{transport=\"tcp\"}".into(), self.sum(|w| &w.tcp_queries)),
            ],
        );
        let mut rows: Vec<(String, u64)> = RCODES
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("{{rcode=\"{r}\"}}"), self.sum(|w| &w.rcodes[i])))
            .collect();
        rows.push(("{rcode=\"OTHER\"}".into(), self.sum(|w| &w.rcodes[6])));
        counter(RESPONSES_TOTAL, "DNS responses sent, by rcode.", rows);
        counter(
            PREPARED_ANSWERS_TOTAL,
            "Authoritative answers served from prepared bytes.",
            vec![(String::new(), self.sum(|w| &w.prepared))],
        );
        counter(
            DROPPED_TOTAL,
            "Packets dropped unanswered (too short, or not a query).",
            vec![(String::new(), self.dropped())],
        );
        counter(
            TRUNCATED_TOTAL,
            "Responses truncated (TC) to fit the client's UDP size.",
            vec![(String::new(), self.truncated())],
        );
        counter(
            REFUSED_RECURSION_TOTAL,
            "Queries for other zones refused because the client may not recurse.",
            vec![(String::new(), self.refused_recursion())],
        );
        counter(
            FORWARDED_TOTAL,
            "Queries handed to the forwarder.",
            vec![(String::new(), self.forwarded())],
        );
        let _ = writeln!(
            out,
            "# HELP {DURATION_SECONDS} Time from receiving a query to having its response.\n# TYPE {DURATION_SECONDS} histogram"
        );
        let mut cumulative = 0;
        for (i, bound) in BUCKETS_NS.iter().enumerate() {
            cumulative += self.sum(|w| &w.buckets[i]);
            let _ = writeln!(
                out,
                "{DURATION_SECONDS}_bucket{{le=\"{}\"}} {cumulative}",
                *bound as f64 / 1e9
            );
        }
        cumulative += self.sum(|w| &w.buckets[BUCKETS_NS.len()]);
        let _ = writeln!(out, "{DURATION_SECONDS}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(
            out,
            "{DURATION_SECONDS}_sum {}",
            self.sum(|w| &w.duration_ns) as f64 / 1e9
        );
        let _ = writeln!(out, "{DURATION_SECONDS}_count {cumulative}");
    }
}

pub const FORWARD_TOTAL: &str = "lodestar_dns_forward_total";
pub const CACHE_TOTAL: &str = "lodestar_dns_cache_total";
pub const UPSTREAM_QUERIES_TOTAL: &str = "lodestar_dns_upstream_queries_total";
pub const UPSTREAM_FAILURES_TOTAL: &str = "lodestar_dns_upstream_failures_total";
pub const UPSTREAM_DEMOTED: &str = "lodestar_dns_upstream_demoted";
pub const UPSTREAM_RTT_SECONDS: &str = "lodestar_dns_upstream_rtt_seconds";

/// Prometheus text for the forwarder's counters.
pub fn render_forward(s: &crate::forward::ForwardStats, out: &mut String) {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP {FORWARD_TOTAL} Forwarded queries by outcome.\n# TYPE {FORWARD_TOTAL} counter"
    );
    for (outcome, v) in [
        ("forwarded", get(&s.forwarded)),
        ("answered", get(&s.answered)),
        ("stale_served", get(&s.stale_served)),
        ("refused_in_flight", get(&s.refused_in_flight)),
        ("refused_no_upstream", get(&s.refused_no_upstream)),
        ("servfail", get(&s.servfail)),
        ("malformed", get(&s.malformed)),
        ("truncated", get(&s.truncated)),
    ] {
        let _ = writeln!(out, "{FORWARD_TOTAL}{{outcome=\"{outcome}\"}} {v}");
    }
    let _ = writeln!(
        out,
        "# HELP {CACHE_TOTAL} Forwarding cache lookups.\n# TYPE {CACHE_TOTAL} counter"
    );
    let _ = writeln!(
        out,
        "{CACHE_TOTAL}{{result=\"hit\"}} {}",
        get(&s.cache_hits)
    );
    let _ = writeln!(
        out,
        "{CACHE_TOTAL}{{result=\"miss\"}} {}",
        get(&s.cache_misses)
    );
    let _ = writeln!(
        out,
        "# HELP {UPSTREAM_QUERIES_TOTAL} Queries sent to each upstream.\n# TYPE {UPSTREAM_QUERIES_TOTAL} counter"
    );
    for u in &s.upstreams {
        let _ = writeln!(
            out,
            "{UPSTREAM_QUERIES_TOTAL}{{upstream=\"{}\"}} {}",
            u.addr,
            get(&u.queries)
        );
    }
    let _ = writeln!(
        out,
        "# HELP {UPSTREAM_FAILURES_TOTAL} Failed attempts per upstream, by kind.\n# TYPE {UPSTREAM_FAILURES_TOTAL} counter"
    );
    for u in &s.upstreams {
        for (kind, v) in [
            ("timeout", get(&u.timeouts)),
            ("error", get(&u.errors)),
            ("rcode", get(&u.rcode_failures)),
        ] {
            let _ = writeln!(
                out,
                "{UPSTREAM_FAILURES_TOTAL}{{upstream=\"{}\",kind=\"{kind}\"}} {v}",
                u.addr
            );
        }
    }
    let _ = writeln!(out, "# HELP {UPSTREAM_DEMOTED} 1 while an upstream is demoted.\n# TYPE {UPSTREAM_DEMOTED} gauge");
    for u in &s.upstreams {
        let _ = writeln!(
            out,
            "{UPSTREAM_DEMOTED}{{upstream=\"{}\"}} {}",
            u.addr,
            u8::from(u.demoted.load(Ordering::Relaxed))
        );
    }
    let _ = writeln!(out, "# HELP {UPSTREAM_RTT_SECONDS} Smoothed round-trip time per upstream.\n# TYPE {UPSTREAM_RTT_SECONDS} gauge");
    for u in &s.upstreams {
        let _ = writeln!(
            out,
            "{UPSTREAM_RTT_SECONDS}{{upstream=\"{}\"}} {}",
            u.addr,
            get(&u.rtt_ewma_us) as f64 / 1e6
        );
    }
}
