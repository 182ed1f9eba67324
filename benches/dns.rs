//! DNS benchmark: throughput, CPU cost and latency of `lodestar agent` against Knot DNS serving
//! the same records (dnsperf, same query mix), and freshness: etcd write -> first DNS answer.
//! Run: `cargo bench --bench dns` (`-- --quick` for a smoke run). See docs/benchmarks.md.
//!
//! Knot serves a zone file made from the agent's own `/v1/axfr`, and every distinct query of
//! the mix is checked to get the same answers from both before anything is timed. Mesos-DNS
//! cannot run here (no Mesos master); its 60 s poll is quoted as documented.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "dns/catalog.rs"]
mod catalog;
#[path = "dns/dnsperf.rs"]
mod dnsperf;
#[path = "dns/freshness.rs"]
mod freshness;
#[path = "dns/servers.rs"]
mod servers;

use std::path::{Path, PathBuf};
use std::process::Command;

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

use dnsperf::{Load, Run};
use servers::{Knot, Lodestar};
use support::dns;
use support::report::{median, percentile, Plot, Report};

struct Options {
    quick: bool,
    tasks: usize,
    apps: usize,
    lines: usize,
    runs: usize,
    load: Load,
    latency_seconds: u64,
    /// The latency runs' fixed rates, as fractions of the slower server's throughput.
    latency_loads: Vec<f64>,
    writes: usize,
    /// Copy the catalog, zone file and query file here, to replay by hand.
    keep: Option<PathBuf>,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let mut o = Options {
        quick,
        tasks: if quick { 2_000 } else { 10_000 },
        apps: 0,
        lines: 20_000,
        runs: if quick { 1 } else { 5 },
        // 32 client sockets spread over both servers' SO_REUSEPORT workers. 200 in flight
        // keeps Knot's drops (it leaves its sockets at the default 208 KiB receive buffer) to
        // a few per million; at 2,000 it drops thousands per run, Lodestar none.
        load: Load {
            clients: 32,
            threads: 2,
            outstanding: 200,
            seconds: if quick { 3 } else { 10 },
        },
        latency_seconds: if quick { 2 } else { 5 },
        latency_loads: vec![0.1, 0.5],
        writes: if quick { 50 } else { 200 },
        keep: None,
    };
    support::bench::each_flag(|v| match v.flag {
        "--tasks" => o.tasks = v.number(),
        "--apps" => o.apps = v.number(),
        "--lines" => o.lines = v.number(),
        "--runs" => o.runs = v.number(),
        "--seconds" => o.load.seconds = v.number(),
        "--clients" => o.load.clients = v.number(),
        "--threads" => o.load.threads = v.number(),
        "--outstanding" => o.load.outstanding = v.number(),
        "--latency-seconds" => o.latency_seconds = v.number(),
        // Fractions, e.g. 0.1,0.5.
        "--latency-loads" => o.latency_loads = v.list(),
        "--writes" => o.writes = v.number(),
        "--keep" => o.keep = Some(PathBuf::from(v.text)),
        _ => {}
    });
    if o.apps == 0 {
        o.apps = (o.tasks / 10).max(1);
    }
    assert!(o.tasks >= o.apps && o.runs > 0 && o.writes > 0);
    o
}

/// The program's name and the first line of its output that mentions a version.
fn version(program: &Path, args: &[&str]) -> String {
    let name = program
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let out = Command::new(program).args(args).output();
    let text = out
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .unwrap_or_default();
    let line = text
        .lines()
        .find(|l| l.to_ascii_lowercase().contains("version"))
        .unwrap_or("unknown version")
        .trim();
    format!("{name}: {line}")
}

/// Rcode, answers, and the authority section of a response, as comparable text.
fn answer_set(m: &Message) -> String {
    let mut answers: Vec<String> = m
        .answers
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {}",
                r.name.to_ascii().to_lowercase(),
                r.ttl,
                r.record_type(),
                r.data
            )
        })
        .collect();
    answers.sort();
    let mut authority: Vec<String> = m
        .authorities
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r.name.to_ascii().to_lowercase(),
                r.record_type(),
                r.data
            )
        })
        .collect();
    authority.sort();
    format!(
        "{} | {} | {}",
        m.metadata.response_code,
        answers.join(", "),
        authority.join(", ")
    )
}

/// Every distinct query of the mix must get the same answer set from both servers.
fn assert_same_answers(lodestar: &Lodestar, knot: &Knot, queries: &[catalog::Query]) -> usize {
    let mut mismatches = Vec::new();
    for q in queries {
        let qtype: RecordType = q.qtype.parse().expect("record type");
        let l = answer_set(&dns::udp(lodestar.dns, &q.name, qtype, Some(4096)));
        let k = answer_set(&dns::udp(knot.dns, &q.name, qtype, Some(4096)));
        if l != k {
            mismatches.push(format!(
                "{} {}\n  lodestar: {l}\n  knot:     {k}",
                q.name, q.qtype
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} queries answer differently; the comparison would be void:\n{}",
        mismatches.len(),
        queries.len(),
        mismatches[..mismatches.len().min(10)].join("\n")
    );
    queries.len()
}

struct Side {
    runs: Vec<Run>,
    /// Per fixed rate, its runs.
    latency: Vec<Vec<Run>>,
}

impl Side {
    fn qps(&self) -> f64 {
        median(&self.runs.iter().map(|r| r.qps).collect::<Vec<_>>())
    }
    fn cpu_per_million(&self) -> f64 {
        median(
            &self
                .runs
                .iter()
                .map(Run::cpu_per_million)
                .collect::<Vec<_>>(),
        )
    }
    fn avg_latency(&self) -> f64 {
        median(
            &self
                .runs
                .iter()
                .map(|r| r.avg_latency_ms)
                .collect::<Vec<_>>(),
        )
    }
    fn lost(&self) -> u64 {
        self.runs.iter().map(|r| r.lost).sum()
    }
    fn sent(&self) -> u64 {
        self.runs.iter().map(|r| r.sent).sum()
    }
    fn latencies(&self, rate: usize) -> Vec<f64> {
        let mut v: Vec<f64> = self.latency[rate]
            .iter()
            .flat_map(|r| r.latencies_ms.iter().copied())
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }
    fn latency_lost(&self, rate: usize) -> u64 {
        self.latency[rate].iter().map(|r| r.lost).sum()
    }
}

fn describe(who: &str, r: &Run, cores: usize) {
    let threads: Vec<String> = r
        .threads
        .iter()
        .take(6)
        .map(|(t, s)| format!("{t} {s:.2}"))
        .collect();
    println!(
        "  {who:8} {:>9.0} qps  lost {:>5}  server {:.2} CPU s  dnsperf {:.2} CPU s  wall {:.1} s  busy {:.0}%  \
         avg {:.3} ms  max {:.1} ms  drops server {} client {}  threads: {}",
        r.qps,
        r.lost,
        r.server_cpu,
        r.client_cpu,
        r.wall,
        (r.server_cpu + r.client_cpu) / (r.wall * cores as f64) * 100.0,
        r.avg_latency_ms,
        r.max_latency_ms,
        r.server_drops,
        r.client_drops,
        threads.join(", ")
    );
}

fn main() {
    let o = options();
    let knotd = servers::require("knotd", "knot");
    let dnsperf_bin = servers::require("dnsperf", "dnsperf");
    let etcd_bin = servers::require("etcd", "etcd-server");
    let binary = servers::lodestar_binary();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "dns: {} tasks in {} apps, {} queries, {} cores; {}; {}; {}",
        o.tasks,
        o.apps,
        o.lines,
        cores,
        version(&knotd, &["-V"]),
        version(&dnsperf_bin, &["-h"]),
        version(&etcd_bin, &["--version"]),
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let catalog_path = dir.path().join("catalog.toml");
    let doc = toml::to_string(&catalog::document(o.tasks, o.apps)).expect("catalog as TOML");
    std::fs::write(&catalog_path, doc).expect("write catalog");
    let lodestar = servers::start_lodestar(
        &binary,
        &["--catalog", catalog_path.to_str().expect("utf-8 path")],
    );

    // Knot gets exactly the records the agent serves, and the agent's SOA.
    let axfr = catalog::Axfr::fetch(lodestar.http);
    let soa = servers::agent_soa(lodestar.dns);
    let zone = axfr.zone_file(&soa);
    std::fs::write(dir.path().join("mesos.zone"), &zone).expect("zone copy");
    // One UDP worker per core, as the agent runs by default.
    let knot = Knot::start(&knotd, &zone, cores);
    println!(
        "servers: lodestar {} (pid {}), knotd {} (pid {}) with {} zone records",
        lodestar.dns,
        lodestar.pid(),
        knot.dns,
        knot.pid(),
        axfr.record_count()
    );

    let queries = catalog::queries(&axfr, o.apps, o.lines, 0x10de_57a2);
    let data = dir.path().join("queries.txt");
    std::fs::write(&data, catalog::dnsperf_input(&queries)).expect("query file");
    let distinct = catalog::distinct(&queries);
    if let Some(keep) = &o.keep {
        std::fs::create_dir_all(keep).expect("--keep directory");
        for f in ["catalog.toml", "mesos.zone", "queries.txt"] {
            std::fs::copy(dir.path().join(f), keep.join(f)).expect("copy for --keep");
        }
        println!(
            "kept catalog.toml, mesos.zone and queries.txt in {}",
            keep.display()
        );
    }
    let checked = assert_same_answers(&lodestar, &knot, &distinct);
    println!("same answers from both for all {checked} distinct queries of the mix");

    // Warm up both (caches, page faults), then alternate to spread drift evenly.
    let warm = Load {
        seconds: 1,
        ..o.load.clone()
    };
    dnsperf::run(knot.dns, knot.pid(), &data, &warm, None, false);
    dnsperf::run(lodestar.dns, lodestar.pid(), &data, &warm, None, false);
    let mut k = Side {
        runs: Vec::new(),
        latency: Vec::new(),
    };
    let mut l = Side {
        runs: Vec::new(),
        latency: Vec::new(),
    };
    println!(
        "\nthroughput: dnsperf -e -c {} -T {} -q {} -l {}, {} runs each, alternating",
        o.load.clients, o.load.threads, o.load.outstanding, o.load.seconds, o.runs
    );
    for _ in 0..o.runs {
        let r = dnsperf::run(knot.dns, knot.pid(), &data, &o.load, None, false);
        describe("knot", &r, cores);
        k.runs.push(r);
        let r = dnsperf::run(lodestar.dns, lodestar.pid(), &data, &o.load, None, false);
        describe("lodestar", &r, cores);
        l.runs.push(r);
    }

    // Latency at the same fixed rates for both, below either's saturation.
    let slower = k.qps().min(l.qps());
    let rates: Vec<u64> = o
        .latency_loads
        .iter()
        .map(|f| (slower * f).max(1000.0) as u64)
        .collect();
    let lat_load = Load {
        seconds: o.latency_seconds,
        ..o.load.clone()
    };
    for &rate in &rates {
        println!(
            "\nlatency: dnsperf -v -Q {rate} -l {}, 2 runs each, alternating",
            o.latency_seconds
        );
        let (mut kr, mut lr) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            let r = dnsperf::run(knot.dns, knot.pid(), &data, &lat_load, Some(rate), true);
            describe("knot", &r, cores);
            kr.push(r);
            let r = dnsperf::run(
                lodestar.dns,
                lodestar.pid(),
                &data,
                &lat_load,
                Some(rate),
                true,
            );
            describe("lodestar", &r, cores);
            lr.push(r);
        }
        k.latency.push(kr);
        l.latency.push(lr);
    }
    println!("\nlast throughput run, dnsperf's summary:");
    for (who, side) in [("knot", &k), ("lodestar", &l)] {
        let last = side.runs.last().expect("a run");
        println!("-- {who}\n{}", last.summary);
    }
    drop(knot);
    drop(lodestar);

    println!(
        "\nfreshness: {} writes on a catalog of {} tasks in etcd",
        o.writes, o.tasks
    );
    let fresh = freshness::measure(&binary, o.tasks, o.apps, o.writes);

    // Tables.
    let mut report = Report::new("dns");
    let ratio = |a: f64, b: f64| a / b;
    report.say(format!(
        "\n{} tasks ({} zone records), {} cores, dnsperf -e -c {} -T {} -q {}, {} x {} s runs each, median:\n",
        o.tasks,
        axfr.record_count(),
        cores,
        o.load.clients,
        o.load.threads,
        o.load.outstanding,
        o.runs,
        o.load.seconds
    ));
    report.say("| measure | Lodestar | Knot | ratio (Lodestar / Knot) | target |");
    report.say("| --- | --- | --- | --- | --- |");
    report.say(format!(
        "| throughput, qps | {:.0} | {:.0} | {:.2} | >= 1.00 |",
        l.qps(),
        k.qps(),
        ratio(l.qps(), k.qps())
    ));
    report.say(format!(
        "| lost queries (all runs) | {} of {} | {} of {} | - | 0 |",
        l.lost(),
        l.sent(),
        k.lost(),
        k.sent()
    ));
    report.say(format!(
        "| server CPU per million queries | {:.2} s | {:.2} s | {:.2} | - |",
        l.cpu_per_million(),
        k.cpu_per_million(),
        ratio(l.cpu_per_million(), k.cpu_per_million())
    ));
    report.say(format!(
        "| mean latency at saturation (dnsperf) | {:.3} ms | {:.3} ms | {:.2} | - |",
        l.avg_latency(),
        k.avg_latency(),
        ratio(l.avg_latency(), k.avg_latency())
    ));
    for (i, rate) in rates.iter().enumerate() {
        let (ll, kl) = (l.latencies(i), k.latencies(i));
        for (label, p, target) in [
            ("p50", 0.5, "-"),
            ("p99", 0.99, "<= 1.00"),
            ("max", 1.0, "-"),
        ] {
            let (a, b) = (percentile(&ll, p), percentile(&kl, p));
            report.say(format!(
                "| latency {label} at {rate} qps ({} + {} queries) | {a:.3} ms | {b:.3} ms | {:.2} | {target} |",
                ll.len(),
                kl.len(),
                ratio(a, b)
            ));
        }
        report.say(format!(
            "| lost queries at {rate} qps | {} | {} | - | 0 |",
            l.latency_lost(i),
            k.latency_lost(i)
        ));
    }
    let size = |s: &Side| s.runs.last().map_or(0.0, |r| r.response_bytes);
    report.say(format!(
        "| mean response size | {:.0} B | {:.0} B | {:.2} | - |",
        size(&l),
        size(&k),
        ratio(size(&l), size(&k))
    ));

    let mut f = fresh.latencies_ms.clone();
    f.sort_by(f64::total_cmp);
    let mut puts = fresh.put_ms.clone();
    puts.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        percentile(&f, 0.5),
        percentile(&f, 0.99),
        percentile(&f, 1.0),
    );
    report.say(format!(
        "\n{} writes of a new task on {} tasks in etcd; each polled with UDP A queries ({} in all):\n",
        f.len(),
        fresh.base_tasks,
        fresh.polls
    ));
    report.say("| measure | Lodestar | Mesos-DNS (documented; cannot run here) | ratio (Mesos-DNS / Lodestar) | target |");
    report.say("| --- | --- | --- | --- | --- |");
    report.say(format!(
        "| etcd write -> first DNS answer, p50 | {p50:.1} ms | mean staleness, 60 s poll: 30,000 ms | {:.0} | - |",
        30_000.0 / p50
    ));
    report.say(format!(
        "| etcd write -> first DNS answer, p99 | {p99:.1} ms | worst case: 60,000 ms | {:.0} | < 100 ms |",
        60_000.0 / p99
    ));
    report.say(format!(
        "| etcd write -> first DNS answer, max | {max:.1} ms | - | - | - |"
    ));
    report.say(format!(
        "| of which etcd put acknowledged, p50 / p99 | {:.1} / {:.1} ms | - | - | - |",
        percentile(&puts, 0.5),
        percentile(&puts, 0.99)
    ));
    report.say(format!(
        "| writes not answered within 10 s | {} | - | - | 0 |",
        fresh.timeouts
    ));
    if o.quick {
        report.say("\n(--quick: a smoke run; use the full run for numbers)");
    }
    let per_run = |s: &Side| s.runs.iter().map(|r| r.qps).collect::<Vec<_>>();
    report.plot(
        "throughput",
        Plot::rounds(
            &format!("DNS throughput per run, {} tasks", o.tasks),
            "queries per second",
            &[("Lodestar", &per_run(&l)), ("Knot", &per_run(&k))],
        ),
    );
    for (i, rate) in rates.iter().enumerate() {
        report.plot(
            &format!("latency-{rate}qps"),
            Plot::cdf(
                &format!("DNS latency at {rate} qps"),
                "ms",
                &[("Lodestar", &l.latencies(i)), ("Knot", &k.latencies(i))],
            ),
        );
    }
    report.plot(
        "freshness",
        Plot::cdf(
            "etcd write to first DNS answer (Mesos-DNS: up to 60,000 ms)",
            "ms",
            &[("Lodestar", &f)],
        ),
    );
    report.finish();
}
