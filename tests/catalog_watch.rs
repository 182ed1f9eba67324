//! The etcd store and its watch against a real etcd: paged initial load, incremental updates,
//! coalescing, an etcd restart mid-watch, compaction past the watcher, malformed values.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lodestar_control::keys::{self, Kind, Record, RecordKey};
use lodestar_control::model::{Health, IpSource, Port, Task, TaskKey, TaskState};
use lodestar_control::{CatalogWatch, EtcdConfig, EtcdStore, Snapshot, WatchConfig};
use support::{eventually, EtcdServer};

const PATIENCE: Duration = Duration::from_secs(20);

fn task(i: usize, vip: Option<&str>) -> Task {
    let ip = format!("198.18.{}.{}", (i / 250) % 256, i % 250 + 1);
    let mut http = Port::tcp(8080).named("http");
    if let Some(v) = vip {
        http = http.with_label("VIP_0", v);
    }
    Task::new(
        format!("app-{i}.{i:08x}-0000-11ef-9c9a-0242ac110002"),
        format!("app-{}", i % 100),
        "marathon",
        format!("agent-{}", i % 50),
    )
    .with_ip(ip.parse().unwrap(), IpSource::Netinfo)
    .with_resource_port(31000 + (i % 1000) as u16)
    .with_discovery_port(http)
    .with_health(Health::Healthy)
}

fn config(endpoint: &str) -> EtcdConfig {
    let mut c = EtcdConfig::from_list(endpoint);
    c.page_size = 500;
    c
}

fn fast_watch() -> WatchConfig {
    WatchConfig {
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ..WatchConfig::default()
    }
}

async fn store(endpoint: &str) -> EtcdStore {
    EtcdStore::connect(config(endpoint))
        .await
        .expect("connect to test etcd")
}

/// Waits for a published snapshot that satisfies `pred`.
async fn snapshot_where(
    watch: &CatalogWatch,
    what: &str,
    pred: impl Fn(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    let mut rx = watch.subscribe();
    let found = tokio::time::timeout(PATIENCE, rx.wait_for(|s| pred(s))).await;
    match found {
        Ok(Ok(s)) => s.clone(),
        _ => panic!(
            "gave up after {PATIENCE:?} waiting for {what}; last snapshot: revision {}, {} tasks",
            watch.current().revision,
            watch.current().tasks.len()
        ),
    }
}

#[tokio::test]
async fn initial_load_of_10000_tasks_is_paged_and_complete() {
    let etcd = EtcdServer::start();
    let s = store(&etcd.endpoint()).await;
    let records: Vec<Record> = (0..10_000)
        .map(|i| Record::Task(task(i, (i % 10 == 0).then_some("/app:80"))))
        .collect();
    let revision = s.put(&records).await.unwrap();

    let loaded = s.load(None).await.unwrap();
    assert_eq!(loaded.revision, revision);
    assert_eq!(loaded.state.snapshot(0, s.source()).tasks.len(), 10_000);
    // 10,000 keys in pages of 500: never one unbounded read.
    assert_eq!(loaded.pages, 20);
    assert!(loaded.rejected.is_empty());

    let watch = CatalogWatch::spawn(config(&etcd.endpoint()), fast_watch());
    let snap = snapshot_where(&watch, "the initial load", |s| s.is_loaded()).await;
    assert_eq!(snap.revision, revision);
    assert_eq!(snap.tasks.len(), 10_000);
    let vip = snap.vips();
    assert_eq!(vip.len(), 1);
    assert_eq!(vip[0].backends.len(), 1_000);
    assert_eq!(watch.stats().full_loads.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn incremental_updates_follow_puts_and_deletes() {
    let etcd = EtcdServer::start();
    let s = store(&etcd.endpoint()).await;
    s.put(&[Record::Task(task(1, Some("/web:80")))])
        .await
        .unwrap();
    let watch = CatalogWatch::spawn(config(&etcd.endpoint()), fast_watch());
    snapshot_where(&watch, "the initial load", |s| s.tasks.len() == 1).await;

    // A new backend joins the VIP.
    let rev = s
        .put(&[Record::Task(task(2, Some("/web:80")))])
        .await
        .unwrap();
    let snap = snapshot_where(&watch, "task 2", |s| s.revision >= rev).await;
    assert_eq!(snap.revision, rev);
    assert_eq!(snap.vips()[0].backends.len(), 2);

    // A change to one task: it drains, and leaves the VIP for another one.
    let mut t = task(1, Some("/api:81"));
    t.state = TaskState::Draining;
    let rev = s.put(&[Record::Task(t.clone())]).await.unwrap();
    let snap = snapshot_where(&watch, "task 1 updated", |s| s.revision >= rev).await;
    assert_eq!(snap.tasks[&t.key()].state, TaskState::Draining);
    let vips: Vec<String> = snap.vips().iter().map(|v| v.key.to_string()).collect();
    assert_eq!(vips, ["/api:81/tcp", "/web:80/tcp"]);

    // A delete.
    assert!(s.delete(&RecordKey::Task(t.key())).await.unwrap());
    let snap = snapshot_where(&watch, "task 1 deleted", |s| {
        !s.tasks.contains_key(&t.key())
    })
    .await;
    assert_eq!(snap.tasks.len(), 1);
    assert_eq!(snap.vip_count(), 1);
    assert_eq!(watch.stats().full_loads.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_burst_of_10000_changes_costs_a_handful_of_rebuilds() {
    let etcd = EtcdServer::start();
    let s = store(&etcd.endpoint()).await;
    let watch = CatalogWatch::spawn(config(&etcd.endpoint()), fast_watch());
    snapshot_where(&watch, "the (empty) initial load", |s| s.is_loaded()).await;
    let before = watch.stats().snapshots_published.load(Ordering::Relaxed);

    let records: Vec<Record> = (0..10_000).map(|i| Record::Task(task(i, None))).collect();
    let started = Instant::now();
    let rev = s.put(&records).await.unwrap();
    let snap = snapshot_where(&watch, "all 10,000 tasks", |s| s.revision >= rev).await;
    let elapsed = started.elapsed();
    assert_eq!(snap.tasks.len(), 10_000);

    let rebuilds = watch.stats().snapshots_published.load(Ordering::Relaxed) - before;
    // Until `burst_events` changes have arrived each transaction may be published on its own
    // (128 changes each); after that, at most one rebuild per min_interval, however the 79
    // transactions are spread over the burst.
    let config = WatchConfig::default();
    let before_burst = config.burst_events.div_ceil(128) + 1;
    let bound = (elapsed.as_millis() / config.min_interval.as_millis()) as u64 + before_burst + 1;
    assert!(
        rebuilds <= bound,
        "{rebuilds} rebuilds for 10,000 changes in {elapsed:?} (bound {bound})"
    );
    assert!(rebuilds < 100, "{rebuilds} rebuilds for 10,000 changes");
    assert_eq!(watch.stats().events.load(Ordering::Relaxed), 10_000);
}

#[tokio::test]
async fn etcd_restart_mid_watch_resumes_with_the_writes_made_during_the_outage() {
    let mut etcd = EtcdServer::start();
    let s = store(&etcd.endpoint()).await;
    s.put(&[
        Record::Task(task(1, Some("/web:80"))),
        Record::Task(task(2, Some("/web:80"))),
    ])
    .await
    .unwrap();
    let watch = CatalogWatch::spawn(config(&etcd.endpoint()), fast_watch());
    let before = snapshot_where(&watch, "the initial load", |s| s.tasks.len() == 2).await;

    // etcd goes away for the watcher; meanwhile the cluster changes through another port.
    let hidden = etcd.restart_hidden();
    let writer = store(&hidden).await;
    writer
        .put(&[Record::Task(task(3, Some("/web:80")))])
        .await
        .unwrap();
    assert!(writer
        .delete(&RecordKey::Task(task(1, None).key()))
        .await
        .unwrap());
    let mut t2 = task(2, Some("/web:80"));
    t2.health = Health::Unhealthy;
    let last = writer.put(&[Record::Task(t2.clone())]).await.unwrap();
    drop(writer);

    // While etcd is unreachable, the last good snapshot stays published.
    eventually(PATIENCE, "the watcher to notice the outage", || async {
        (!watch.stats().connected.load(Ordering::Relaxed)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = watch.current();
    assert_eq!(during.revision, before.revision);
    assert_eq!(during.tasks.len(), 2);

    etcd.restart();
    let after = snapshot_where(&watch, "the writes made during the outage", |s| {
        s.revision >= last
    })
    .await;
    let ids: Vec<TaskKey> = after.tasks.keys().cloned().collect();
    assert_eq!(ids, [task(2, None).key(), task(3, None).key()]);
    assert_eq!(after.tasks[&t2.key()].health, Health::Unhealthy);
    let stats = watch.stats();
    assert!(stats.reconnects.load(Ordering::Relaxed) >= 1);
    // It resumed from its revision: no second full read was needed.
    assert_eq!(stats.full_loads.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn compaction_past_the_watcher_forces_one_consistent_resync() {
    let mut etcd = EtcdServer::start();
    let s = store(&etcd.endpoint()).await;
    s.put(
        &(1..=3)
            .map(|i| Record::Task(task(i, None)))
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    let watch = CatalogWatch::spawn(config(&etcd.endpoint()), fast_watch());
    snapshot_where(&watch, "the initial load", |s| s.tasks.len() == 3).await;
    let published_before = watch.stats().snapshots_published.load(Ordering::Relaxed);

    let hidden = etcd.restart_hidden();
    let writer = store(&hidden).await;
    assert!(writer
        .delete(&RecordKey::Task(task(1, None).key()))
        .await
        .unwrap());
    for i in 10..20 {
        writer.put(&[Record::Task(task(i, None))]).await.unwrap();
    }
    let last = writer.put(&[Record::Task(task(20, None))]).await.unwrap();
    let mut raw = writer.client();
    raw.compact(
        last,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .expect("compact");
    drop((writer, raw));
    etcd.restart();

    let snap = snapshot_where(&watch, "the resync after compaction", |s| {
        s.revision >= last
    })
    .await;
    assert_eq!(snap.revision, last);
    assert!(
        !snap.tasks.contains_key(&task(1, None).key()),
        "a delete during the outage was lost"
    );
    assert_eq!(snap.tasks.len(), 2 + 11);
    let stats = watch.stats();
    assert_eq!(stats.full_loads.load(Ordering::Relaxed), 2);
    // One consistent snapshot: no intermediate state between the old one and the resynced one.
    assert_eq!(
        stats.snapshots_published.load(Ordering::Relaxed),
        published_before + 1
    );
}

#[tokio::test]
async fn malformed_values_are_skipped_counted_and_never_stop_the_watch() {
    let etcd = EtcdServer::start();
    let s = store(&etcd.endpoint()).await;
    let mut raw = s.client();
    let good = Record::Task(task(1, Some("/web:80")));
    s.put(std::slice::from_ref(&good)).await.unwrap();
    raw.put(keys::key(Kind::Task, "garbage"), "{not json", None)
        .await
        .unwrap();
    raw.put(
        keys::key(Kind::Agent, "future"),
        r#"{"schema":9,"data":{}}"#,
        None,
    )
    .await
    .unwrap();
    raw.put("/lodestar/v1/unknown/thing", "{}", None)
        .await
        .unwrap();

    let watch = CatalogWatch::spawn(config(&etcd.endpoint()), fast_watch());
    let snap = snapshot_where(&watch, "the initial load", |s| s.is_loaded()).await;
    assert_eq!(snap.tasks.len(), 1);
    assert!(snap.agents.is_empty());
    assert_eq!(watch.stats().rejected_values.load(Ordering::Relaxed), 3);

    // A good task overwritten with garbage keeps its last good value.
    let rev = raw
        .put(good.key(), vec![0xff, 0x00, 0x13], None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let snap = snapshot_where(&watch, "the bad overwrite", |s| s.revision >= rev).await;
    assert_eq!(snap.tasks.len(), 1);
    assert_eq!(snap.vips()[0].backends.len(), 1);
    assert_eq!(watch.stats().rejected_values.load(Ordering::Relaxed), 4);

    // ... and the watch goes on.
    let rev = s.put(&[Record::Task(task(2, None))]).await.unwrap();
    let snap = snapshot_where(&watch, "a good value after the bad ones", |s| {
        s.revision >= rev
    })
    .await;
    assert_eq!(snap.tasks.len(), 2);
    // A delete of a key that never decoded is harmless.
    raw.delete(keys::key(Kind::Task, "garbage"), None)
        .await
        .unwrap();
    let rev = s.put(&[Record::Task(task(3, None))]).await.unwrap();
    let snap = snapshot_where(&watch, "task 3", |s| s.revision >= rev).await;
    assert_eq!(snap.tasks.len(), 3);
}

#[tokio::test]
async fn an_unreachable_etcd_publishes_nothing_and_retries() {
    let port = support::etcd::free_port();
    let watch = CatalogWatch::spawn(config(&format!("127.0.0.1:{port}")), fast_watch());
    eventually(PATIENCE, "a few reconnect attempts", || async {
        (watch.stats().reconnects.load(Ordering::Relaxed) >= 3).then_some(())
    })
    .await;
    assert!(!watch.current().is_loaded());
    assert_eq!(watch.stats().snapshots_published.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn isolated_writes_are_published_without_the_burst_rate_limit() {
    let etcd = EtcdServer::start();
    let s = store(&etcd.endpoint()).await;
    // With an hour between rebuilds during bursts, only the isolated-write path can
    // publish these in time.
    let slow_bursts = WatchConfig {
        min_interval: Duration::from_secs(3600),
        ..fast_watch()
    };
    let watch = CatalogWatch::spawn(config(&etcd.endpoint()), slow_bursts);
    snapshot_where(&watch, "the initial load", |s| s.is_loaded()).await;
    for i in 0..20 {
        let rev = s.put(&[Record::Task(task(i, None))]).await.unwrap();
        let snap = snapshot_where(&watch, "an isolated write", |s| s.revision >= rev).await;
        assert_eq!(snap.tasks.len(), i + 1);
    }
}

/// A task whose value is about 100 KB (a big label), to push pages and watch responses past
/// gRPC's default 4 MiB message limit.
fn big_task(i: usize) -> Task {
    let mut t = task(i, Some("/big:80"));
    t.labels = [("blob".to_string(), "x".repeat(100_000))].into();
    t
}

#[tokio::test]
async fn pages_and_watch_catch_up_beyond_4_mib_still_load() {
    let mut etcd = EtcdServer::start();
    let s = store(&etcd.endpoint()).await;
    // 60 x 100 KB: one page of 500 keys is 6 MB.
    let rev = s
        .put(
            &(0..60)
                .map(|i| Record::Task(big_task(i)))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    let watch = CatalogWatch::spawn(config(&etcd.endpoint()), fast_watch());
    let snap = snapshot_where(&watch, "the initial load of big values", |s| {
        s.revision >= rev
    })
    .await;
    assert_eq!(snap.tasks.len(), 60);

    // Catching up after an outage: 60 more revisions, 6 MB, arrive in one watch response.
    let hidden = etcd.restart_hidden();
    let writer = store(&hidden).await;
    let mut last = 0;
    for i in 60..120 {
        last = writer.put(&[Record::Task(big_task(i))]).await.unwrap();
    }
    drop(writer);
    etcd.restart();
    let snap = snapshot_where(&watch, "the catch-up of big values", |s| s.revision >= last).await;
    assert_eq!(snap.tasks.len(), 120);
    assert_eq!(snap.vips()[0].backends.len(), 120);
    // It followed the watch: no fallback to a full read was needed.
    assert_eq!(watch.stats().full_loads.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_frozen_etcd_is_detected_and_the_watch_recovers_when_it_thaws() {
    let etcd = EtcdServer::start();
    let s = store(&etcd.endpoint()).await;
    s.put(&[Record::Task(task(1, None))]).await.unwrap();
    let quick = WatchConfig {
        progress_interval: Duration::from_millis(300),
        stall_after: Duration::from_secs(1),
        ..fast_watch()
    };
    let watch = CatalogWatch::spawn(config(&etcd.endpoint()), quick);
    snapshot_where(&watch, "the initial load", |s| s.tasks.len() == 1).await;
    eventually(PATIENCE, "the watch to be established", || async {
        watch
            .stats()
            .connected
            .load(Ordering::Relaxed)
            .then_some(())
    })
    .await;

    // A partition that resets nothing: the sockets stay open, nothing answers.
    etcd.pause();
    eventually(
        PATIENCE,
        "the watcher to give up on the silent stream",
        || async { (!watch.stats().connected.load(Ordering::Relaxed)).then_some(()) },
    )
    .await;
    assert_eq!(
        watch.current().tasks.len(),
        1,
        "the last snapshot stays published"
    );

    etcd.resume();
    let rev = s.put(&[Record::Task(task(2, None))]).await.unwrap();
    let snap = snapshot_where(&watch, "the watch to resume after the thaw", |s| {
        s.revision >= rev
    })
    .await;
    assert_eq!(snap.tasks.len(), 2);
}
