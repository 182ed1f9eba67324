//! `lodestar mesos-sync` against a local HTTP server playing the Mesos master and a real etcd:
//! the translated catalog, leader redirection, master failure, malformed documents, named VIP
//! addresses, and two competing instances.

mod support;

use std::net::IpAddr;
use std::process::Output;
use std::time::Duration;

use axum::http::StatusCode;
use lodestar_control::mesos::vipalloc::{self, VipRanges};
use lodestar_control::model::{Health, IpSource, TaskKey, TaskState};
use lodestar_control::{EtcdStore, Snapshot};
use serde_json::json;
use support::command::{lodestar_blocking, stderr, stdout};
use support::mesos::{
    state, sync_once_args, task, vip_task, FakeMaster, Reply, SyncProcess, AZURE, VSPHERE,
};
use support::{eventually, EtcdServer};

const PATIENCE: Duration = Duration::from_secs(20);
/// mesos-sync's VIP ranges.
const RANGES: [&str; 4] = [
    "--vip-range-v4",
    "198.19.0.0/24",
    "--vip-range-v6",
    "2001:db8:19::/64",
];

/// The fake master's one framework.
fn marathon(id: &str) -> TaskKey {
    TaskKey::new("fw-marathon", id)
}

/// The ids of the catalog's tasks, all of which must be the fake master's framework's.
fn task_ids(snap: &Snapshot) -> Vec<&str> {
    snap.tasks
        .keys()
        .map(|k| {
            assert_eq!(k.framework_id, "fw-marathon", "{k}");
            k.id.as_str()
        })
        .collect()
}

/// The task keys in etcd, in order.
async fn task_keys(etcd: &EtcdServer) -> Vec<String> {
    let store = etcd.store().await;
    let options = etcd_client::GetOptions::new()
        .with_prefix()
        .with_keys_only();
    let resp = store
        .client()
        .get("/lodestar/v1/tasks/", Some(options))
        .await
        .unwrap();
    resp.kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_string())
        .collect()
}

async fn catalog(etcd: &EtcdServer) -> (Snapshot, i64) {
    let s = etcd.store().await;
    let loaded = s.load(None).await.unwrap();
    assert!(loaded.rejected.is_empty(), "{:?}", loaded.rejected);
    (
        loaded.state.snapshot(loaded.revision, s.source()),
        loaded.revision,
    )
}

/// Runs `lodestar mesos-sync --once` off the async runtime (the fake master runs on it).
async fn sync_once(masters: &str, etcd: &EtcdServer, extra: &[&str]) -> Output {
    let mut args = sync_once_args(masters);
    args.extend(["--etcd".into(), etcd.endpoint()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    lodestar_blocking(args).await
}

/// `sync_once` of `master`, which must succeed; its output.
async fn synced(master: &FakeMaster, etcd: &EtcdServer, extra: &[&str]) -> String {
    ok(&sync_once(&master.url(), etcd, extra).await)
}

/// The master's state set to `n` tasks (`tasks_state`), then `synced`.
async fn synced_with_tasks(master: &FakeMaster, etcd: &EtcdServer, n: usize) -> String {
    master.set_state(tasks_state(master, n));
    synced(master, etcd, &[]).await
}

/// Waits until the catalog in etcd holds `n` tasks.
async fn eventually_tasks(etcd: &EtcdServer, n: usize, what: &str) {
    eventually(PATIENCE, what, || async {
        (catalog(etcd).await.0.tasks.len() == n).then_some(())
    })
    .await;
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "mesos-sync failed: {}", stderr(o));
    stdout(o)
}

/// `web.1` running on the azure agent with an IPv4 and an IPv6 address.
fn web_1() -> serde_json::Value {
    let ips = ["198.18.1.101", "2001:db8:1::101"];
    task("web.1", "web", AZURE, "TASK_RUNNING", &ips)
}

#[tokio::test]
async fn a_full_state_becomes_the_catalog_and_an_unchanged_one_writes_nothing() {
    let etcd = EtcdServer::start();
    let master = FakeMaster::start().await;
    let mut killing = task(
        "killing.1",
        "killing",
        AZURE,
        "TASK_KILLING",
        &["198.18.1.60"],
    );
    killing["statuses"][1]["labels"] =
        json!([{"key": "Docker.NetworkSettings.IPAddress", "value": "198.18.1.61"}]);
    let tasks = vec![
        web_1(),
        task("web.2", "web", VSPHERE, "TASK_RUNNING", &["198.18.2.101"]),
        task("odd.1", "My_App.v2 (beta)", VSPHERE, "TASK_RUNNING", &[]),
        killing,
        task("dead.1", "dead", AZURE, "TASK_KILLED", &["198.18.1.70"]),
        task("lost.1", "lost", AZURE, "TASK_LOST", &["198.18.1.71"]),
        vip_task(
            "api.1",
            "api",
            AZURE,
            &["/prod/api:80", "198.19.1.10:8080", "nonsense"],
        ),
    ];
    master.set_tasks(tasks);
    let out = synced(&master, &etcd, &RANGES).await;
    assert!(out.contains("synced"), "{out}");

    let (snap, revision) = catalog(&etcd).await;
    assert_eq!(
        task_ids(&snap),
        ["api.1", "killing.1", "odd.1", "web.1", "web.2"]
    );
    let web1 = &snap.tasks[&marathon("web.1")];
    assert_eq!(web1.state, TaskState::Running);
    assert_eq!(web1.health, Health::Healthy);
    assert_eq!(web1.framework, "marathon");
    let ips: Vec<(String, IpSource)> = web1
        .ips
        .iter()
        .map(|i| (i.ip.to_string(), i.source))
        .collect();
    assert_eq!(
        ips,
        [
            ("198.18.1.101".into(), IpSource::Netinfo),
            ("2001:db8:1::101".into(), IpSource::Netinfo),
            ("198.18.1.21".into(), IpSource::Host)
        ]
    );
    assert_eq!(
        web1.ports.iter().map(|p| p.number).collect::<Vec<_>>(),
        [31000, 31001]
    );
    assert_eq!(snap.tasks[&marathon("odd.1")].name, "My_App.v2 (beta)");
    let killing = &snap.tasks[&marathon("killing.1")];
    assert_eq!(killing.state, TaskState::Draining);
    assert!(killing
        .ips
        .iter()
        .any(|i| i.source == IpSource::Docker && i.ip.to_string() == "198.18.1.61"));
    // Agents with their sites; masters and the leader.
    assert_eq!(snap.agents[AZURE].site.as_deref(), Some("azure"));
    assert_eq!(
        snap.agents[VSPHERE].addresses,
        ["198.18.2.21".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(snap.frameworks["fw-marathon"].port, Some(8080));
    let leader = snap.leader.as_ref().unwrap();
    assert_eq!(
        (leader.address, leader.port),
        (master.addr.ip(), master.addr.port())
    );
    assert_eq!(snap.masters.len(), 1);
    // VIPs: the named one got an address in each range, the IP one is itself, "nonsense" is gone.
    let vips: Vec<String> = snap.vips().iter().map(|v| v.key.to_string()).collect();
    assert_eq!(vips, ["/prod/api:80/tcp", "198.19.1.10:8080/tcp"]);
    let named = &snap.vip_addresses["/prod/api"];
    assert_eq!(named.addresses.len(), 2);
    assert!(named
        .addresses
        .iter()
        .any(|a| a.is_ipv4() && a.to_string().starts_with("198.19.0.")));
    assert!(named
        .addresses
        .iter()
        .any(|a| a.is_ipv6() && a.to_string().starts_with("2001:db8:19:")));

    // The same state again: nothing is written, so watchers see no traffic at all.
    let out = synced(&master, &etcd, &RANGES).await;
    assert!(out.contains("0 written, 0 deleted"), "{out}");
    let (again, revision2) = catalog(&etcd).await;
    assert_eq!(revision2, revision);
    assert_eq!(
        again.vip_addresses["/prod/api"], snap.vip_addresses["/prod/api"],
        "VIP addresses are stable"
    );

    // A changed task is one write; tasks that ended are deleted.
    let tasks = vec![
        web_1(),
        task("web.2", "web", VSPHERE, "TASK_FINISHED", &["198.18.2.101"]),
        vip_task("api.1", "api", AZURE, &["/prod/api:80", "198.19.1.10:8080"]),
        task(
            "odd.1",
            "My_App.v2 (beta)",
            VSPHERE,
            "TASK_RUNNING",
            &["198.18.2.102"],
        ),
    ];
    master.set_tasks(tasks);
    let out = synced(&master, &etcd, &RANGES).await;
    assert!(out.contains("1 written, 2 deleted"), "{out}"); // odd.1 changed; web.2 and killing.1 ended
    let (snap, _) = catalog(&etcd).await;
    assert_eq!(task_ids(&snap), ["api.1", "odd.1", "web.1"]);
}

#[tokio::test]
async fn the_leader_named_in_the_state_is_asked_and_dead_masters_are_skipped() {
    let etcd = EtcdServer::start();
    let follower = FakeMaster::start().await;
    let leader = FakeMaster::start().await;
    let dead = format!("http://127.0.0.1:{}", support::etcd::free_port());
    // The follower knows who leads but has stale tasks; the leader has the truth.
    follower.set_state(state(
        &follower.pid(),
        &leader.pid(),
        vec![task("stale.1", "stale", AZURE, "TASK_RUNNING", &[])],
    ));
    leader.set_tasks(vec![task("fresh.1", "fresh", AZURE, "TASK_RUNNING", &[])]);
    let masters = format!("{dead},{}", follower.url());
    ok(&sync_once(&masters, &etcd, &[]).await);
    let (snap, _) = catalog(&etcd).await;
    assert_eq!(task_ids(&snap), ["fresh.1"]);
    assert_eq!(leader.hits.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(snap.leader.as_ref().unwrap().port, leader.addr.port());
    // The configured masters are listed (the dead one and the follower) and the leader.
    assert_eq!(snap.masters.len(), 3);
}

#[tokio::test]
async fn a_failed_poll_leaves_the_catalog_as_it_was() {
    let etcd = EtcdServer::start();
    let master = FakeMaster::start().await;
    master.set_tasks(vec![task("web.1", "web", AZURE, "TASK_RUNNING", &[])]);
    synced(&master, &etcd, &[]).await;
    let (_, revision) = catalog(&etcd).await;

    let good = state(&master.pid(), &master.pid(), vec![]);
    let truncated = good.to_string()[..40].to_string();
    let mut wrong_shape = good.clone();
    wrong_shape["frameworks"] = json!({"not": "a list"});
    let mut no_leader = good.clone();
    no_leader["leader"] = json!("");
    // A large state cut in the middle of its tasks (the body is parsed as it streams in).
    let large = support::scale::state_text(&master.pid(), 3_000);
    let cut = large[..large.len() / 2].to_string();
    let cases: Vec<(Reply, &str)> = vec![
        (Reply::Raw(StatusCode::OK, cut), "EOF while parsing"),
        (
            Reply::Raw(StatusCode::OK, format!("{good} trailing")),
            "not a Mesos state document",
        ),
        (
            Reply::Raw(StatusCode::OK, "<html>not json</html>".into()),
            "not a Mesos state document",
        ),
        (
            Reply::Raw(StatusCode::OK, truncated),
            "not a Mesos state document",
        ),
        (Reply::Json(wrong_shape), "not a Mesos state document"),
        (Reply::Json(no_leader), "names no leader"),
        (
            Reply::Raw(StatusCode::INTERNAL_SERVER_ERROR, "boom".into()),
            "HTTP 500",
        ),
        // Slower than --timeout 2s.
        (Reply::Slow(Duration::from_secs(5)), "timed out"),
    ];
    for (reply, needle) in cases {
        master.set(reply);
        let o = sync_once(&master.url(), &etcd, &[]).await;
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "a bad poll must fail");
        assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        let (snap, rev) = catalog(&etcd).await;
        assert_eq!(rev, revision, "a failed poll wrote something");
        assert_eq!(snap.tasks.len(), 1);
    }
    // A master that is down entirely.
    let dead = format!("http://127.0.0.1:{}", support::etcd::free_port());
    let o = sync_once(&dead, &etcd, &[]).await;
    assert!(!o.status.success());
    assert_eq!(catalog(&etcd).await.1, revision);
}

#[tokio::test]
async fn named_vip_addresses_are_unique_under_racing_writers_and_exhaustion_hits_one_vip() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    let ranges = VipRanges {
        v4: Some("198.19.3.0/28".parse().unwrap()), // 14 usable addresses
        v6: None,
    };
    // Two writers race over the same 12 names.
    let names: Vec<String> = (0..12).map(|i| format!("/team/app{i}")).collect();
    let run = |s: EtcdStore, names: Vec<String>, r: VipRanges| async move {
        let mut got = Vec::new();
        for n in &names {
            got.push(vipalloc::ensure(&s, &r, n).await.unwrap());
        }
        got
    };
    let mut reversed = names.clone();
    reversed.reverse();
    let (a, b) = tokio::join!(
        run(store.clone(), names.clone(), ranges.clone()),
        run(store.clone(), reversed, ranges.clone())
    );
    let mut seen = std::collections::BTreeMap::new();
    for v in a.iter().chain(&b) {
        assert_eq!(v.addresses.len(), 1);
        let prev = seen.insert(v.addresses[0], v.name.clone());
        assert!(
            prev.is_none() || prev.as_deref() == Some(v.name.as_str()),
            "{} given twice",
            v.addresses[0]
        );
    }
    assert_eq!(
        seen.len(),
        12,
        "each name has one address, whichever writer won"
    );
    // Stable: asking again gives the same address.
    let again = vipalloc::ensure(&store, &ranges, "/team/app3")
        .await
        .unwrap();
    assert_eq!(again.addresses, a[3].addresses);
    // Two more fit, the third is a clear error for that VIP alone.
    vipalloc::ensure(&store, &ranges, "/x/one").await.unwrap();
    vipalloc::ensure(&store, &ranges, "/x/two").await.unwrap();
    let err = vipalloc::ensure(&store, &ranges, "/x/three")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("exhausted") && err.to_string().contains("/x/three"),
        "{err}"
    );
    let err = vipalloc::ensure(&store, &VipRanges::default(), "/y")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no VIP range"), "{err}");
}

/// `lodestar mesos-sync` in the background against a plaintext etcd.
fn start_sync(masters: &str, etcd: &EtcdServer, id: &str, extra: &[&str]) -> SyncProcess {
    SyncProcess::start(masters, &["--etcd".into(), etcd.endpoint()], id, extra)
}

#[tokio::test]
async fn two_instances_one_writer_and_a_takeover_when_it_dies() {
    let etcd = EtcdServer::start();
    let master = FakeMaster::start().await;
    master.set_tasks(vec![task("a.1", "a", AZURE, "TASK_RUNNING", &[])]);
    let (p1, p2) = (support::etcd::free_port(), support::etcd::free_port());
    let m1 = format!("127.0.0.1:{p1}");
    let m2 = format!("127.0.0.1:{p2}");
    let mut one = start_sync(&master.url(), &etcd, "one", &["--metrics-listen", &m1]);
    let mut two = start_sync(&master.url(), &etcd, "two", &["--metrics-listen", &m2]);
    eventually(PATIENCE, "a leader", || async {
        (one.leads() || two.leads()).then_some(())
    })
    .await;
    eventually_tasks(&etcd, 1, "the first sync").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(one.leads() != two.leads(), "exactly one instance leads");
    // The leader's metrics count its polls.
    let leader_metrics = if one.leads() { &m1 } else { &m2 };
    let text = http_get(leader_metrics, "/metrics").await;
    assert!(text.contains("lodestar_mesos_sync_polls_total"), "{text}");
    let (leader, standby) = if one.leads() {
        (&mut one, &two)
    } else {
        (&mut two, &one)
    };
    // The leader dies without resigning; the standby takes over once the lease expires.
    leader.child.kill().unwrap();
    let _ = leader.child.wait();
    assert!(!standby.leads());
    master.set_tasks(vec![
        task("a.1", "a", AZURE, "TASK_RUNNING", &[]),
        task("b.1", "b", AZURE, "TASK_RUNNING", &[]),
    ]);
    eventually_tasks(&etcd, 2, "the standby to take over and sync").await;
    assert!(one.leads() && two.leads(), "the standby leads now");
}

#[tokio::test]
async fn basic_auth_to_the_master() {
    let etcd = EtcdServer::start();
    let master = FakeMaster::start().await;
    master.set_tasks(vec![task("a.1", "a", AZURE, "TASK_RUNNING", &[])]);
    master.require_basic_auth("lodestar", "s3cret:with colon");
    let o = sync_once(&master.url(), &etcd, &[]).await;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("HTTP 401"));
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret:with colon\n").unwrap();
    let flags = ["--master-user", "lodestar", "--master-password-file"];
    synced(
        &master,
        &etcd,
        &[&flags[..], &[pw.to_str().unwrap()]].concat(),
    )
    .await;
    assert_eq!(catalog(&etcd).await.0.tasks.len(), 1);
}

async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body
}

/// An HTTPS master: a certificate for 127.0.0.1 from the test CA (`support::etcd::Pki`), a TLS
/// acceptor, and a minimal HTTP/1.1 reply with the state document.
async fn https_master(
    dir: &std::path::Path,
    body: String,
) -> (String, std::path::PathBuf, tokio::task::JoinHandle<()>) {
    let pki = support::etcd::Pki::create(dir);
    let (cert, key) = pki.server();
    let identity = tokio_native_tls::native_tls::Identity::from_pkcs8(
        &std::fs::read(&cert).unwrap(),
        &std::fs::read(&key).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_native_tls::TlsAcceptor::from(
        tokio_native_tls::native_tls::TlsAcceptor::new(identity).unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(reply.as_bytes()).await;
            let _ = tls.shutdown().await;
        }
    });
    (url, pki.ca(), server)
}

#[tokio::test]
async fn tls_to_the_master_with_a_configured_ca() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    // The state names its own pid; the fake serves any path, so pid just has to match leader.
    let pid = "master@127.0.0.1:5050";
    let body = state(
        pid,
        pid,
        vec![task("tls.1", "tls", AZURE, "TASK_RUNNING", &[])],
    )
    .to_string();
    let (url, cert, server) = https_master(dir.path(), body).await;
    // Without trusting the certificate the poll fails and nothing is written.
    let o = sync_once(&url, &etcd, &[]).await;
    assert!(!o.status.success(), "an untrusted certificate must fail");
    assert!(catalog(&etcd).await.0.tasks.is_empty());
    ok(&sync_once(&url, &etcd, &["--master-ca", cert.to_str().unwrap()]).await);
    assert_eq!(task_ids(&catalog(&etcd).await.0), ["tls.1"]);
    server.abort();
}

#[tokio::test]
async fn changes_made_behind_its_back_are_corrected_on_the_next_poll() {
    use lodestar_control::keys::{Record, RecordKey};
    use lodestar_control::mesos::fetch::MasterClient;
    use lodestar_control::mesos::sync::Syncer;
    let etcd = EtcdServer::start();
    let master = FakeMaster::start().await;
    master.set_tasks(vec![task("web.1", "web", AZURE, "TASK_RUNNING", &[])]);
    let store = etcd.store().await;
    let client =
        MasterClient::new(&[master.url()], Duration::from_secs(2), None, None, 1 << 20).unwrap();
    let mut syncer = Syncer::new(store.clone(), client, "site".into(), VipRanges::default());
    syncer.poll(None).await.unwrap();
    // An operator deletes a task the master still reports and adds one it does not.
    assert!(store
        .delete(&RecordKey::Task(marathon("web.1")))
        .await
        .unwrap());
    let ghost = lodestar_control::model::Task::new("ghost.1", "ghost", "marathon", AZURE)
        .with_framework_id("fw-marathon");
    store.put(&[Record::Task(ghost)]).await.unwrap();
    let r = syncer.poll(None).await.unwrap();
    assert_eq!((r.puts, r.deletes), (1, 1), "{r:?}");
    assert_eq!(task_ids(&catalog(&etcd).await.0), ["web.1"]);
}

#[tokio::test]
async fn a_master_that_suddenly_reports_nothing_does_not_wipe_the_catalog() {
    let etcd = EtcdServer::start();
    let master = FakeMaster::start().await;
    let tasks: Vec<_> = (0..20)
        .map(|i| task(&format!("t.{i}"), "app", AZURE, "TASK_RUNNING", &[]))
        .collect();
    master.set_tasks(tasks);
    synced(&master, &etcd, &[]).await;
    // Just elected: no frameworks, no agents yet.
    let mut empty = state(&master.pid(), &master.pid(), vec![]);
    empty["frameworks"] = json!([]);
    empty["slaves"] = json!([]);
    master.set_state(empty);
    let out = synced(&master, &etcd, &[]).await;
    assert!(out.contains("0 deleted"), "{out}");
    assert_eq!(catalog(&etcd).await.0.tasks.len(), 20);
    // Once the master has said so for long enough (here: at once), the deletes go through.
    let out = synced(&master, &etcd, &["--mass-delete-delay", "0s"]).await;
    assert!(!out.contains(" 0 deleted"), "{out}");
    assert!(catalog(&etcd).await.0.tasks.is_empty());
}

/// Task ids are unique within a framework only: two frameworks' task `0` are two tasks, each
/// under its framework's key, as Mesos-DNS serves both.
#[tokio::test]
async fn the_same_task_id_in_two_frameworks_is_two_tasks() {
    let etcd = EtcdServer::start();
    let master = FakeMaster::start().await;
    let mut s = state(
        &master.pid(),
        &master.pid(),
        vec![task("0", "spark-exec", AZURE, "TASK_RUNNING", &[])],
    );
    let mut other = s["frameworks"][0].clone();
    other["id"] = json!("fw-chronos");
    other["name"] = json!("chronos");
    let mut job = task("0", "job", AZURE, "TASK_RUNNING", &[]);
    job["framework_id"] = json!("fw-chronos");
    other["tasks"] = json!([job]);
    s["frameworks"].as_array_mut().unwrap().push(other);
    master.set_state(s);
    let o = sync_once(&master.url(), &etcd, &[]).await;
    ok(&o);
    let (snap, _) = catalog(&etcd).await;
    let keys: Vec<(&str, &str, &str)> = snap
        .tasks
        .iter()
        .map(|(k, t)| (k.framework_id.as_str(), k.id.as_str(), t.name.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("fw-chronos", "0", "job"),
            ("fw-marathon", "0", "spark-exec")
        ]
    );
    assert_eq!(
        task_keys(&etcd).await,
        [
            "/lodestar/v1/tasks/fw-chronos/0",
            "/lodestar/v1/tasks/fw-marathon/0"
        ]
    );
}

#[tokio::test]
async fn one_exhausted_family_does_not_block_the_other_and_lost_records_keep_their_address() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    let ranges = VipRanges {
        v4: Some("198.19.5.7/32".parse().unwrap()),
        v6: Some("2001:db8:19::/64".parse().unwrap()),
    };
    let a = vipalloc::ensure(&store, &ranges, "/a").await.unwrap();
    assert_eq!(a.addresses.len(), 2);
    let err = vipalloc::ensure(&store, &ranges, "/b").await.unwrap_err();
    assert!(err.to_string().contains("IPv4"), "{err}");
    let (snap, _) = catalog(&etcd).await;
    let b = &snap.vip_addresses["/b"];
    assert_eq!(b.addresses.len(), 1);
    assert!(
        b.addresses[0].is_ipv6(),
        "the IPv6 address is given even though IPv4 is full"
    );
    // The record is lost (a restore, another tool): the name gets the same addresses back.
    store
        .delete(&lodestar_control::keys::RecordKey::VipAddress("/a".into()))
        .await
        .unwrap();
    let again = vipalloc::ensure(&store, &ranges, "/a").await.unwrap();
    let mut x = again.addresses.clone();
    let mut y = a.addresses.clone();
    x.sort();
    y.sort();
    assert_eq!(x, y);
}

/// A state with tasks `app.0` .. `app.{n-1}`.
fn tasks_state(master: &FakeMaster, n: usize) -> serde_json::Value {
    let tasks = (0..n)
        .map(|i| task(&format!("app.{i}"), "app", AZURE, "TASK_RUNNING", &[]))
        .collect();
    state(&master.pid(), &master.pid(), tasks)
}

/// Polls a master whose state has, in turn, each `(tasks, deleted)` of `polls` tasks: each
/// poll deletes that many; then the catalog holds `left` tasks.
async fn assert_polls_delete(polls: &[(usize, usize)], left: usize) {
    let etcd = EtcdServer::start();
    let master = FakeMaster::start().await;
    for (tasks, deleted) in polls {
        let out = synced_with_tasks(&master, &etcd, *tasks).await;
        assert!(
            out.contains(&format!(" {deleted} deleted")),
            "{tasks}: {out}"
        );
    }
    assert_eq!(catalog(&etcd).await.0.tasks.len(), left);
}

#[tokio::test]
async fn two_polls_deleting_49_percent_each_are_held_at_the_second() {
    // 49 of 100: below half, applied. 25 of the 51 left is below half of them too, but it
    // would leave 26 of a recent 100: held.
    assert_polls_delete(&[(100, 0), (51, 49), (26, 0)], 51).await;
}

#[tokio::test]
async fn the_high_water_mark_follows_the_catalog_as_it_grows() {
    // At last 16 tasks (21 keys with the agents, framework, master and leader) is more than
    // half of the 30 there are, and more than the 12 the catalog began with, but less than
    // half of the 40 (45 keys) it grew to: held.
    assert_polls_delete(&[(12, 0), (40, 0), (30, 10), (16, 0)], 30).await;
}

#[tokio::test]
async fn a_real_shrink_is_released_once_the_master_has_reported_it_for_the_whole_hold() {
    let etcd = EtcdServer::start();
    let master = FakeMaster::start().await;
    master.set_state(tasks_state(&master, 20));
    let sync = start_sync(
        &master.url(),
        &etcd,
        "shrink",
        &["--mass-delete-delay", "3s"],
    );
    eventually_tasks(&etcd, 20, "the first sync").await;
    master.set_state(tasks_state(&master, 5));
    let held_at = std::time::Instant::now();
    eventually(PATIENCE, "the deletes to be held", || async {
        sync.log().contains("holding deletes").then_some(())
    })
    .await;
    assert_eq!(catalog(&etcd).await.0.tasks.len(), 20, "held, not applied");
    eventually_tasks(&etcd, 5, "the shrink to be applied").await;
    assert!(
        held_at.elapsed() >= Duration::from_secs(3),
        "released only after the hold"
    );
    assert!(sync
        .log()
        .contains("applying a mass delete the master has reported for the whole delay"));
}

/// The supported upgrade order (docs/etcd-schema.md): agents first, serving a catalog that an
/// older `mesos-sync` wrote under legacy keys (`tasks/<task-id>`, values without
/// `framework_id`); then the new `mesos-sync`, which moves every task to
/// `tasks/<framework-id>/<task-id>` over several transactions. DNS is asked for every name
/// all along: none is ever missing.
#[tokio::test]
async fn legacy_task_keys_are_migrated_with_no_gap_in_dns() {
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;
    use lodestar_control::keys::{Record, RecordKey};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use support::agent::Agent;
    use support::dns::{answers, udp};

    const TASKS: usize = 300; // several write transactions' worth of puts (127 keys each)
    let etcd = EtcdServer::start();
    let master = FakeMaster::start().await;
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let ip = format!("198.18.{}.{}", 1 + i / 200, 10 + i % 200);
            task(
                &format!("app{i}.1"),
                &format!("app{i}"),
                AZURE,
                "TASK_RUNNING",
                &[&ip],
            )
        })
        .collect();
    master.set_tasks(tasks);
    // What an older mesos-sync wrote: the same records, tasks at their legacy keys.
    synced(&master, &etcd, &[]).await;
    let store = etcd.store().await;
    let (snap, _) = catalog(&etcd).await;
    let legacy: Vec<Record> = snap
        .tasks
        .values()
        .map(|t| Record::Task((**t).clone().with_framework_id("")))
        .collect();
    store.put(&legacy).await.unwrap();
    for key in snap.tasks.keys() {
        assert!(store.delete(&RecordKey::Task(key.clone())).await.unwrap());
    }
    let before = task_keys(&etcd).await;
    assert_eq!(before.len(), TASKS);
    assert!(
        before.iter().all(|k| k.matches('/').count() == 4),
        "{before:?}"
    );

    let agent = Agent::start(&["--etcd", &etcd.endpoint()]);
    let dns = agent.dns;
    let name = |i: usize| format!("app{i}.marathon.mesos.");
    eventually(PATIENCE, "every legacy task in DNS", || async move {
        (0..TASKS)
            .all(|i| !udp(dns, &name(i), RecordType::A, None).answers.is_empty())
            .then_some(())
    })
    .await;

    // Ask for every name, round and round, while the migration runs.
    let stop = Arc::new(AtomicBool::new(false));
    let asker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut asked = 0usize;
            let mut missing = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for i in 0..TASKS {
                    let r = udp(dns, &name(i), RecordType::A, None);
                    asked += 1;
                    let want = vec![format!("198.18.{}.{}", 1 + i / 200, 10 + i % 200)];
                    if r.metadata.response_code != ResponseCode::NoError || answers(&r) != want {
                        missing.push((name(i), r.metadata.response_code, answers(&r)));
                    }
                }
            }
            (asked, missing)
        })
    };
    let out = synced(&master, &etcd, &[]).await;
    assert!(
        out.contains(&format!("{TASKS} written, {TASKS} deleted")),
        "{out}"
    );
    // Let the agent see the last transaction and answer from it for a while.
    let migrated = task_keys(&etcd).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let (asked, missing) = tokio::task::spawn_blocking(move || asker.join().unwrap())
        .await
        .unwrap();
    assert!(
        missing.is_empty(),
        "names missing or wrong during the migration: {missing:?}"
    );
    assert!(asked >= 2 * TASKS, "asked only {asked} times");
    assert_eq!(migrated.len(), TASKS);
    assert!(
        migrated
            .iter()
            .all(|k| k.starts_with("/lodestar/v1/tasks/fw-marathon/")),
        "{migrated:?}"
    );
    // The next poll has nothing to move.
    let out = synced(&master, &etcd, &[]).await;
    assert!(out.contains("0 written, 0 deleted"), "{out}");
}
