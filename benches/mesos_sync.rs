//! mesos-sync benchmark: a Mesos state of 5,000 tasks served by a local HTTP master, synced
//! into a real etcd. Reports the full sync, a no-change poll, and the etcd writes for a 1%
//! change, next to what a sync that rewrites everything (the Mesos-DNS way: regenerate it all
//! every poll) would cost. Run: `cargo bench --bench mesos_sync [-- --tasks N]`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use lodestar_control::mesos::fetch::MasterClient;
use lodestar_control::mesos::sync::Syncer;
use lodestar_control::mesos::vipalloc::VipRanges;
use lodestar_control::{EtcdConfig, EtcdStore};
use serde_json::json;
use support::mesos::{AZURE, VSPHERE};
use support::report::{Plot, Report};

fn tasks(n: usize, generation: usize, changed: usize) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| {
            let slave = if i % 2 == 0 { AZURE } else { VSPHERE };
            // The first `changed` tasks move to a new address in each generation.
            let ip = if i < changed {
                format!("198.18.{}.{}", 100 + generation % 100, i % 250 + 1)
            } else {
                format!("198.18.{}.{}", (i / 250) % 100, i % 250 + 1)
            };
            let mut t = support::mesos::task(&format!("app{}.{i:08x}", i % 500), &format!("app{}", i % 500), slave, "TASK_RUNNING", &[&ip]);
            t["discovery"] = json!({
                "name": format!("app{}", i % 500),
                "ports": {"ports": [{"number": 8080, "name": "http", "protocol": "tcp",
                    "labels": {"labels": [{"key": "VIP_0", "value": format!("/app{}:80", i % 500)}]}}]}
            });
            t
        })
        .collect()
}

fn main() {
    let n = support::bench::arg("--tasks", 5000) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = support::EtcdServer::start();
    rt.block_on(async {
        let master = support::mesos::FakeMaster::start().await;
        master.set_state(support::mesos::state(&master.pid(), &master.pid(), tasks(n, 0, 0)));
        let store = EtcdStore::connect(EtcdConfig::from_list(&server.endpoint())).await.unwrap();
        let client = MasterClient::new(&[master.url()], Duration::from_secs(10), None, None, 512 << 20).unwrap();
        let ranges = VipRanges {
            v4: Some("198.19.0.0/16".parse().unwrap()),
            v6: None,
        };
        let mut syncer = Syncer::new(store.clone(), client, "site".into(), ranges);

        let started = Instant::now();
        let full = syncer.poll(None).await.unwrap();
        let full_time = started.elapsed();

        let mut idle = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let r = syncer.poll(None).await.unwrap();
            assert_eq!(r.puts + r.deletes, 0);
            idle.push(started.elapsed());
        }
        idle.sort();

        let changed = n / 100;
        master.set_state(support::mesos::state(&master.pid(), &master.pid(), tasks(n, 1, changed)));
        let started = Instant::now();
        let delta = syncer.poll(None).await.unwrap();
        let delta_time = started.elapsed();

        let records = full.puts + full.unchanged;
        let mut report = Report::new("mesos_sync");
        report.say(format!("mesos_sync: {n} tasks, {} records, 500 named VIPs", records));
        report.say("");
        report.say("| measure | Lodestar | rewrite-everything sync | ratio (rewrite / Lodestar) |");
        report.say("| --- | --- | --- | --- |");
        report.say(format!(
            "| full sync into an empty etcd | {:.0} ms ({} keys, {} txns) | same keys | 1.00 |",
            full_time.as_secs_f64() * 1e3,
            full.puts,
            full.txns
        ));
        report.say(format!(
            "| no-change poll (median of 5) | {:.0} ms, 0 etcd writes | {} writes | {} |",
            idle[2].as_secs_f64() * 1e3,
            records,
            if records > 0 { "∞ (0 writes)" } else { "-" }
        ));
        report.say(format!(
            "| 1% change ({changed} tasks move) | {:.0} ms, {} etcd writes in {} txns | {} writes | {:.0} |",
            delta_time.as_secs_f64() * 1e3,
            delta.puts + delta.deletes,
            delta.txns,
            records,
            records as f64 / (delta.puts + delta.deletes).max(1) as f64
        ));
        report.plot(
            "writes",
            Plot::bars(
                &format!("etcd writes per poll, {n} tasks"),
                "etcd writes",
                &[
                    ("full sync", full.puts as f64),
                    ("no change: Lodestar", 0.0),
                    ("1% change: Lodestar", (delta.puts + delta.deletes) as f64),
                    ("any poll: rewrite-everything", records as f64),
                ],
            ),
        );
        report.finish();
    });
}
