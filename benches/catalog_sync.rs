//! Catalog sync benchmark: initial sync time and resident memory for a large catalog, and the
//! latency from an etcd write to the published snapshot. Run: `cargo bench --bench catalog_sync`
//! (`-- --tasks N --writes N --runs N` to change the sizes). See docs/benchmarks.md.
//!
//! Side by side in the same run: `etcdctl get --prefix` reading the same keys (raw bytes, no
//! decoding) as the floor for the sync. Mesos-DNS and dcos-net cannot run here (no Mesos
//! master); their propagation delays are their documented poll intervals, quoted as such.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lodestar_control::keys::Record;
use lodestar_control::model::{Health, IpSource, Port, Task};
use lodestar_control::{CatalogWatch, EtcdConfig, EtcdStore, WatchConfig};
use support::report::{median, percentile, sorted, Plot, Report};

struct Options {
    tasks: usize,
    writes: usize,
    runs: usize,
}

fn options() -> Options {
    let flag = |name, default| support::bench::arg(name, default) as usize;
    Options {
        tasks: flag("--tasks", 100_000),
        writes: flag("--writes", 200),
        runs: flag("--runs", 3),
    }
}

/// A task shaped like a Marathon task with DiscoveryInfo and one VIP label (~600 bytes).
fn task(i: usize) -> Task {
    let ip = |net: &str| {
        format!("{net}.{}.{}", (i / 250) % 256, i % 250 + 1)
            .parse()
            .unwrap()
    };
    Task::new(
        format!("group_app-{i}.{i:08x}-7c1b-11ef-9c9a-0242ac110002"),
        format!("app-{}", i % 500),
        "marathon",
        format!("20261121-000000-0001-0000-S{}", i % 1000),
    )
    .with_ip(ip("198.18"), IpSource::Netinfo)
    .with_ip(ip("198.19"), IpSource::Host)
    .with_resource_port(31000 + (i % 1000) as u16)
    .with_discovery_name(format!("app-{}", i % 500))
    .with_discovery_port(
        Port::tcp(8080)
            .named("http")
            .with_label("VIP_0", format!("/app-{}:80", i % 500)),
    )
    .with_label("team", "payments")
    .with_health(Health::Healthy)
}

fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The child: sync once from `endpoint`, print `sync_ms tasks peak_rss_kb rss_kb`.
fn child_sync(endpoint: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let started = Instant::now();
        let watch = CatalogWatch::spawn(EtcdConfig::from_list(endpoint), WatchConfig::default());
        let mut rx = watch.subscribe();
        let snap = rx.wait_for(|s| s.is_loaded()).await.unwrap().clone();
        let ms = started.elapsed().as_secs_f64() * 1e3;
        println!(
            "{ms:.1} {} {} {}",
            snap.tasks.len(),
            status_kb("VmHWM:"),
            status_kb("VmRSS:")
        );
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child-sync") {
        child_sync(&args[i + 1]);
        return;
    }
    let o = options();
    let server = support::EtcdServer::start();
    let endpoint = server.endpoint();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    println!(
        "catalog_sync: {} tasks, {} writes, etcd at {endpoint}",
        o.tasks, o.writes
    );
    let store = rt
        .block_on(EtcdStore::connect(EtcdConfig::from_list(&endpoint)))
        .unwrap();
    let fill = Instant::now();
    let records: Vec<Record> = (0..o.tasks).map(|i| Record::Task(task(i))).collect();
    let bytes: usize = records.iter().map(|r| r.to_value().len()).sum();
    let records = Arc::new(records);
    rt.block_on(async {
        let per = records.len().div_ceil(4).max(1);
        let mut handles = Vec::new();
        for part in 0..4 {
            let (store, records) = (store.clone(), records.clone());
            handles.push(tokio::spawn(async move {
                let end = ((part + 1) * per).min(records.len());
                let start = (part * per).min(end);
                store.put(&records[start..end]).await.unwrap();
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
    });
    println!(
        "filled etcd with {} tasks ({:.1} MB of values) in {:.1} s",
        o.tasks,
        bytes as f64 / 1e6,
        fill.elapsed().as_secs_f64()
    );

    // Initial sync, each run in a fresh process so that its memory is its own.
    let exe = std::env::current_exe().unwrap();
    let mut sync_ms = Vec::new();
    let mut peak_kb = 0;
    for _ in 0..o.runs {
        let out = Command::new(&exe)
            .args(["--child-sync", &endpoint])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let f: Vec<f64> = text
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(
            f[1] as usize, o.tasks,
            "the child saw an incomplete catalog"
        );
        sync_ms.push(f[0]);
        peak_kb = peak_kb.max(f[2] as u64);
    }
    let mut raw_ms = Vec::new();
    for _ in 0..o.runs {
        let started = Instant::now();
        support::run_ok(
            Command::new("etcdctl")
                .args(["--endpoints", &endpoint, "get", "--prefix", "/lodestar/v1/"])
                .env("ETCDCTL_API", "3"),
            "etcdctl (Debian package etcd-client)",
        );
        raw_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let sync = median(&sync_ms);
    let raw = median(&raw_ms);

    // Write -> published snapshot, isolated writes on the full catalog.
    let latencies = rt.block_on(async {
        let watch = CatalogWatch::spawn(EtcdConfig::from_list(&endpoint), WatchConfig::default());
        let mut rx = watch.subscribe();
        rx.wait_for(|s| s.is_loaded()).await.unwrap();
        let mut lat = Vec::new();
        for i in 0..o.writes {
            let mut t = task(i * 7 % o.tasks.max(1));
            t.health = if i % 2 == 0 {
                Health::Unhealthy
            } else {
                Health::Healthy
            };
            let started = Instant::now();
            let rev = store.put(&[Record::Task(t)]).await.unwrap();
            rx.wait_for(|s| s.revision >= rev).await.unwrap();
            lat.push(started.elapsed().as_secs_f64() * 1e3);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        lat
    });
    let sorted = sorted(&latencies);
    let (p50, p99, max) = (
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        percentile(&sorted, 1.0),
    );
    let mut report = Report::new("catalog_sync");

    report.say("");
    report.say("| measure | Lodestar | peer | ratio (peer / Lodestar) | target |");
    report.say("| --- | --- | --- | --- | --- |");
    report.say(format!(
        "| initial sync of {} tasks, median of {} | {:.0} ms | etcdctl get --prefix (raw, no decode): {:.0} ms | {:.2} | < 2000 ms |",
        o.tasks, o.runs, sync, raw, raw / sync
    ));
    report.say(format!(
        "| peak RSS of the syncing process | {:.0} MB | - | - | < 300 MB |",
        peak_kb as f64 / 1024.0
    ));
    report.say(format!(
        "| write -> snapshot p50 ({} writes) | {p50:.1} ms | Mesos-DNS poll (60 s interval, mean 30 s): 30000 ms | {:.0} | - |",
        o.writes,
        30_000.0 / p50
    ));
    report.say(format!(
        "| write -> snapshot p99 | {p99:.1} ms | dcos-net propagation (1-11 s, best case 1 s): 1000 ms | {:.0} | < 50 ms |",
        1_000.0 / p99
    ));
    report.say(format!(
        "| write -> snapshot max | {max:.1} ms | Mesos-DNS worst case: 60000 ms | {:.0} | - |",
        60_000.0 / max
    ));
    report.plot(
        "write-to-snapshot",
        Plot::cdf(
            &format!(
                "etcd write to published snapshot, {} tasks (dcos-net: 1,000 ms at best)",
                o.tasks
            ),
            "ms",
            &[("Lodestar", &sorted)],
        ),
    );
    report.finish();
    drop(server);
}
