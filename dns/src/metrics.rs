//! The DNS metrics, through the `metrics` facade: their names, their descriptions, and the
//! collector that hands the servers' and the forwarder's counters to the recorder.
//!
//! The counters stay where the answer path keeps them (per-worker atomics, the forwarder's
//! atomics); `publish` reads them and sets the recorder's copies (`absolute`, `set`), so a
//! scrape sees totals without the answer path ever calling into the recorder.

use std::sync::PoisonError;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};

use crate::forward::ForwardStats;
use crate::stats::{DnsStats, BUCKETS_NS, DURATION_SLOTS, RCODE_NAMES};

pub const QUERIES_TOTAL: &str = "lodestar_dns_queries_total";
pub const RESPONSES_TOTAL: &str = "lodestar_dns_responses_total";
pub const PREPARED_ANSWERS_TOTAL: &str = "lodestar_dns_prepared_answers_total";
pub const DROPPED_TOTAL: &str = "lodestar_dns_dropped_total";
pub const TRUNCATED_TOTAL: &str = "lodestar_dns_truncated_total";
pub const REFUSED_RECURSION_TOTAL: &str = "lodestar_dns_recursion_refused_total";
pub const FORWARDED_TOTAL: &str = "lodestar_dns_forwarded_total";
pub const DURATION_SECONDS: &str = "lodestar_dns_query_duration_seconds";
pub const FORWARD_TOTAL: &str = "lodestar_dns_forward_total";
pub const CACHE_TOTAL: &str = "lodestar_dns_cache_total";
pub const UPSTREAM_QUERIES_TOTAL: &str = "lodestar_dns_upstream_queries_total";
pub const UPSTREAM_FAILURES_TOTAL: &str = "lodestar_dns_upstream_failures_total";
pub const UPSTREAM_DEMOTED: &str = "lodestar_dns_upstream_demoted";
pub const UPSTREAM_RTT_SECONDS: &str = "lodestar_dns_upstream_rtt_seconds";

/// The bounds of `DURATION_SECONDS`, `stats::BUCKETS_NS` in seconds: the Prometheus exporter
/// must be given them (`set_buckets_for_metric`), or it renders the histogram as a summary.
pub const DURATION_BUCKETS: [f64; 10] = [
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_1,
    0.001,
    0.01,
    0.1,
    1.0,
];

/// How often `publish` should run besides scrapes, with the exporter's upkeep after it: the
/// samples of `DURATION_SECONDS` waiting in the exporter are then about this much traffic.
pub const PUBLISH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Gives every metric here its help text; once, after the recorder is installed.
pub fn describe() {
    describe_counter!(QUERIES_TOTAL, "DNS queries received.");
    describe_counter!(RESPONSES_TOTAL, "DNS responses sent, by rcode.");
    describe_counter!(
        PREPARED_ANSWERS_TOTAL,
        "Authoritative answers served from prepared bytes."
    );
    describe_counter!(
        DROPPED_TOTAL,
        "Packets dropped unanswered (too short, or not a query)."
    );
    describe_counter!(
        TRUNCATED_TOTAL,
        "Responses truncated (TC) to fit the client's UDP size."
    );
    describe_counter!(
        REFUSED_RECURSION_TOTAL,
        "Queries for other zones refused because the client may not recurse."
    );
    describe_counter!(FORWARDED_TOTAL, "Queries handed to the forwarder.");
    describe_histogram!(
        DURATION_SECONDS,
        Unit::Seconds,
        "Time from receiving a query to having its response."
    );
    describe_counter!(FORWARD_TOTAL, "Forwarded queries by outcome.");
    describe_counter!(CACHE_TOTAL, "Forwarding cache lookups.");
    describe_counter!(UPSTREAM_QUERIES_TOTAL, "Queries sent to each upstream.");
    describe_counter!(
        UPSTREAM_FAILURES_TOTAL,
        "Failed attempts per upstream, by kind."
    );
    describe_gauge!(UPSTREAM_DEMOTED, "1 while an upstream is demoted.");
    describe_gauge!(
        UPSTREAM_RTT_SECONDS,
        Unit::Seconds,
        "Smoothed round-trip time per upstream."
    );
}

/// Hands the current counters to the installed recorder: before every scrape, and every
/// `PUBLISH_INTERVAL` (see `DURATION_SECONDS` below).
pub fn publish(dns: &DnsStats, forward: &ForwardStats) {
    publish_servers(dns);
    publish_forwarder(forward);
}

fn publish_servers(dns: &DnsStats) {
    counter!(QUERIES_TOTAL, "transport" => "udp").absolute(dns.udp_queries());
    counter!(QUERIES_TOTAL, "transport" => "tcp").absolute(dns.tcp_queries());
    for (slot, name) in RCODE_NAMES.iter().enumerate() {
        counter!(RESPONSES_TOTAL, "rcode" => *name).absolute(dns.rcode(slot as u8));
    }
    counter!(PREPARED_ANSWERS_TOTAL).absolute(dns.prepared());
    counter!(DROPPED_TOTAL).absolute(dns.dropped());
    counter!(TRUNCATED_TOTAL).absolute(dns.truncated());
    counter!(REFUSED_RECURSION_TOTAL).absolute(dns.refused_recursion());
    counter!(FORWARDED_TOTAL).absolute(dns.forwarded());
    publish_durations(dns);
}

/// `DURATION_SECONDS` goes to the recorder as samples, the only way a histogram goes through
/// the facade, and metrics-exporter-prometheus keeps every sample until its upkeep (or a
/// render) folds them into the buckets. Recording each response there would put a clock read
/// and two atomic read-modify-writes on a cache line shared by all workers into the answer
/// path. So the workers count into buckets of their own (as for every other counter), and here
/// each bucket's growth since the last publish becomes that many samples at its mean: bucket
/// counts, count and sum come out as the workers counted them. The cost is one sample per
/// response, paid here, off the answer path: about 35 ns to record it and 10 ns for the
/// exporter's upkeep to fold it (measured on the 2-core machine of docs/benchmarks.md, 1 M
/// samples). Published every `PUBLISH_INTERVAL`, the samples waiting in the exporter stay a
/// second's worth of traffic (16 bytes each: about 3 MB at 200,000 queries per second).
fn publish_durations(dns: &DnsStats) {
    let histogram = metrics::histogram!(DURATION_SECONDS);
    let mut published = dns
        .published_durations
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    for (slot, (done_count, done_ns)) in published.iter_mut().enumerate() {
        let (count, ns) = dns.durations(slot);
        let new = count.saturating_sub(*done_count);
        if new == 0 {
            continue;
        }
        // The mean of samples in (lower, upper] is in it too; the clamp is for a response
        // counted between the two reads of `durations`, whose nanoseconds then wait here.
        let lower = slot.checked_sub(1).map_or(0, |s| BUCKETS_NS[s]) as f64 + 1.0;
        let upper = BUCKETS_NS.get(slot).map_or(f64::MAX, |b| *b as f64);
        let mean = (ns.saturating_sub(*done_ns) as f64 / new as f64).clamp(lower, upper);
        let count = usize::try_from(new).unwrap_or(usize::MAX);
        histogram.record_many(mean / 1e9, count);
        *done_count += new;
        *done_ns = done_ns.saturating_add((mean * new as f64) as u64);
    }
    debug_assert_eq!(published.len(), DURATION_SLOTS);
}

fn publish_forwarder(s: &ForwardStats) {
    for (outcome, value) in [
        ("forwarded", &s.forwarded),
        ("answered", &s.answered),
        ("stale_served", &s.stale_served),
        ("refused_in_flight", &s.refused_in_flight),
        ("refused_no_upstream", &s.refused_no_upstream),
        ("servfail", &s.servfail),
        ("malformed", &s.malformed),
        ("truncated", &s.truncated),
    ] {
        counter!(FORWARD_TOTAL, "outcome" => outcome).absolute(load(value));
    }
    counter!(CACHE_TOTAL, "result" => "hit").absolute(load(&s.cache_hits));
    counter!(CACHE_TOTAL, "result" => "miss").absolute(load(&s.cache_misses));
    for u in &s.upstreams {
        let upstream = u.addr.to_string();
        counter!(UPSTREAM_QUERIES_TOTAL, "upstream" => upstream.clone()).absolute(load(&u.queries));
        for (kind, value) in [
            ("timeout", &u.timeouts),
            ("error", &u.errors),
            ("rcode", &u.rcode_failures),
        ] {
            counter!(UPSTREAM_FAILURES_TOTAL, "upstream" => upstream.clone(), "kind" => kind)
                .absolute(load(value));
        }
        let demoted = u.demoted.load(std::sync::atomic::Ordering::Relaxed);
        gauge!(UPSTREAM_DEMOTED, "upstream" => upstream.clone()).set(f64::from(u8::from(demoted)));
        gauge!(UPSTREAM_RTT_SECONDS, "upstream" => upstream).set(load(&u.rtt_ewma_us) as f64 / 1e6);
    }
}

fn load(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::{ForwardConfig, Forwarder};
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

    fn recorder() -> metrics_exporter_prometheus::PrometheusRecorder {
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(DURATION_SECONDS.into()), &DURATION_BUCKETS)
            .unwrap()
            .build_recorder()
    }

    /// The value of the sample line that starts with `series` (name and labels as rendered).
    fn value(text: &str, series: &str) -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"));
        line[series.len() + 1..].parse().unwrap()
    }

    #[test]
    fn the_buckets_in_seconds_are_the_buckets_in_nanoseconds() {
        for (ns, seconds) in BUCKETS_NS.iter().zip(DURATION_BUCKETS) {
            assert_eq!(*ns as f64 / 1e9, seconds);
        }
    }

    #[test]
    fn published_counters_render_with_their_names_labels_and_types() {
        let recorder = recorder();
        let handle = recorder.handle();
        let forwarder = Forwarder::new(ForwardConfig {
            upstreams: vec!["127.0.0.1:53".parse().unwrap(), "[::1]:53".parse().unwrap()],
            ..ForwardConfig::default()
        });
        let dns = DnsStats::new(2);
        let text = metrics::with_local_recorder(&recorder, || {
            describe();
            let (w0, w1) = (dns.worker(0), dns.worker(1));
            w0.udp_queries.fetch_add(3, Ordering::Relaxed);
            w1.udp_queries.fetch_add(4, Ordering::Relaxed);
            w1.tcp_queries.fetch_add(1, Ordering::Relaxed);
            w0.count_rcode(1);
            w1.count_rcode(16);
            for ns in [500, 800, 3_000, 2_000_000_000] {
                w0.observe_ns(ns);
            }
            w1.observe_ns(700);
            forwarder.stats().cache_hits.fetch_add(9, Ordering::Relaxed);
            forwarder.stats().upstreams[1]
                .timeouts
                .fetch_add(2, Ordering::Relaxed);
            forwarder.stats().upstreams[1]
                .rtt_ewma_us
                .store(1_500, Ordering::Relaxed);
            publish(&dns, forwarder.stats());
            // A second publish adds only what is new.
            w1.observe_ns(900);
            publish(&dns, forwarder.stats());
            handle.render()
        });
        for (series, expected) in [
            ("lodestar_dns_queries_total{transport=\"udp\"}", 7.0),
            ("lodestar_dns_queries_total{transport=\"tcp\"}", 1.0),
            ("lodestar_dns_responses_total{rcode=\"FORMERR\"}", 1.0),
            ("lodestar_dns_responses_total{rcode=\"OTHER\"}", 1.0),
            ("lodestar_dns_responses_total{rcode=\"NOERROR\"}", 0.0),
            ("lodestar_dns_cache_total{result=\"hit\"}", 9.0),
            (
                "lodestar_dns_upstream_failures_total{upstream=\"[::1]:53\",kind=\"timeout\"}",
                2.0,
            ),
            (
                "lodestar_dns_upstream_rtt_seconds{upstream=\"[::1]:53\"}",
                0.0015,
            ),
            (
                "lodestar_dns_upstream_demoted{upstream=\"127.0.0.1:53\"}",
                0.0,
            ),
        ] {
            assert_eq!(value(&text, series), expected, "{series}");
        }
        // A histogram family: cumulative buckets at our bounds, +Inf, sum and count.
        let bucket = |le: &str| {
            value(
                &text,
                &format!("lodestar_dns_query_duration_seconds_bucket{{le=\"{le}\"}}"),
            )
        };
        assert_eq!(bucket("0.000001"), 4.0);
        assert_eq!(bucket("0.000005"), 5.0);
        assert_eq!(bucket("1"), 5.0);
        assert_eq!(bucket("+Inf"), 6.0);
        assert_eq!(
            value(&text, "lodestar_dns_query_duration_seconds_count"),
            6.0
        );
        let sum = value(&text, "lodestar_dns_query_duration_seconds_sum");
        assert!((sum - 2.000_005_9).abs() < 1e-9, "{sum}");
        for (name, kind) in [
            (QUERIES_TOTAL, "counter"),
            (RESPONSES_TOTAL, "counter"),
            (PREPARED_ANSWERS_TOTAL, "counter"),
            (DROPPED_TOTAL, "counter"),
            (TRUNCATED_TOTAL, "counter"),
            (REFUSED_RECURSION_TOTAL, "counter"),
            (FORWARDED_TOTAL, "counter"),
            (DURATION_SECONDS, "histogram"),
            (FORWARD_TOTAL, "counter"),
            (CACHE_TOTAL, "counter"),
            (UPSTREAM_QUERIES_TOTAL, "counter"),
            (UPSTREAM_FAILURES_TOTAL, "counter"),
            (UPSTREAM_DEMOTED, "gauge"),
            (UPSTREAM_RTT_SECONDS, "gauge"),
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name}\n{text}"
            );
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
    }

    #[test]
    fn label_sets_no_longer_published_go_after_the_idle_timeout() {
        let recorder = PrometheusBuilder::new()
            .idle_timeout(
                metrics_util::MetricKindMask::COUNTER | metrics_util::MetricKindMask::GAUGE,
                Some(std::time::Duration::from_millis(200)),
            )
            .build_recorder();
        let handle = recorder.handle();
        let config = |upstreams: &[&str]| ForwardConfig {
            upstreams: upstreams.iter().map(|u| u.parse().unwrap()).collect(),
            ..ForwardConfig::default()
        };
        let before = Forwarder::new(config(&["127.0.0.1:53", "127.0.0.2:53"]));
        let after = Forwarder::new(config(&["127.0.0.1:53"]));
        let dns = DnsStats::new(1);
        metrics::with_local_recorder(&recorder, || {
            publish(&dns, before.stats());
            assert!(handle.render().contains("upstream=\"127.0.0.2:53\""));
            std::thread::sleep(std::time::Duration::from_millis(400));
            publish(&dns, after.stats());
            let text = handle.render();
            assert!(!text.contains("upstream=\"127.0.0.2:53\""), "{text}");
            assert!(text.contains("upstream=\"127.0.0.1:53\""), "{text}");
        });
    }

    use std::sync::atomic::Ordering;
}
