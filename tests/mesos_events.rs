//! `lodestar mesos-sync` on the operator API's event stream, against the fake master of
//! `support/operator.rs` (written from the Mesos docs; no Mesos runs here) and a real etcd:
//! events in the orders the docs allow, a stream cut mid-record, a garbage record, a leader
//! change, a master that stops sending heartbeats, and a master without the operator API.

mod support;

use std::time::Duration;

use lodestar_control::model::{Health, TaskState};
use lodestar_control::Snapshot;
use support::mesos::{task, FakeMaster, SyncProcess, AZURE};
use support::operator::{OperatorMaster, Role};
use support::{eventually, EtcdServer, TempFile};

const PATIENCE: Duration = Duration::from_secs(20);
const FW: &str = "fw-marathon";

async fn catalog(etcd: &EtcdServer) -> Snapshot {
    let s = etcd.store().await;
    let loaded = s.load(None).await.unwrap();
    loaded.state.snapshot(loaded.revision, s.source())
}

/// The catalog's tasks as "name state health", sorted.
async fn tasks(etcd: &EtcdServer) -> Vec<String> {
    let mut v: Vec<String> = catalog(etcd)
        .await
        .tasks
        .values()
        .map(|t| format!("{} {:?} {:?}", t.name, t.state, t.health))
        .collect();
    v.sort();
    v
}

/// Waits until the catalog's tasks are `want`.
async fn until_tasks(etcd: &EtcdServer, want: &[&str], what: &str) {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    eventually(PATIENCE, what, || async {
        let have = tasks(etcd).await;
        (have == want).then_some(())
    })
    .await;
}

/// mesos-sync on the event stream, with a poll interval so long that only events can explain
/// a change in time.
fn follow(masters: &str, etcd: &EtcdServer) -> SyncProcess {
    follow_as(masters, etcd, "events", &[])
}

/// `follow` as instance `id`, with `extra` flags.
fn follow_as(masters: &str, etcd: &EtcdServer, id: &str, extra: &[&str]) -> SyncProcess {
    let flags = [&["--interval", "1h", "--source", "events"], extra].concat();
    SyncProcess::start(masters, &["--etcd".into(), etcd.endpoint()], id, &flags)
}

/// Waits until the catalog has a framework named `name`.
async fn until_framework(etcd: &EtcdServer, name: &str, what: &str) {
    eventually(PATIENCE, what, || async {
        let snap = catalog(etcd).await;
        snap.frameworks
            .values()
            .any(|f| f.name == name)
            .then_some(())
    })
    .await;
}

/// Catalog tasks as `tasks` lists them.
const WEB: &str = "web Running Unknown";
const WEB2: &str = "web2 Running Unknown";

async fn cluster(heartbeat: Duration) -> OperatorMaster {
    let m = OperatorMaster::start(heartbeat).await;
    m.add_agent("S1", "198.18.1.21", "azure");
    m.add_framework(FW, "marathon");
    m
}

/// A cluster running `web.1`, and mesos-sync following it into etcd: the SUBSCRIBED state is
/// the first catalog.
async fn following_web() -> (EtcdServer, OperatorMaster, SyncProcess) {
    let etcd = EtcdServer::start();
    let master = cluster(Duration::from_millis(200)).await;
    master.launch(FW, "web.1", "web", "S1", "198.18.1.101");
    let sync = follow(&master.url(), &etcd);
    until_tasks(&etcd, &[WEB], "the subscribed state").await;
    (etcd, master, sync)
}

#[tokio::test]
async fn events_reach_etcd_without_a_poll_in_every_order_the_docs_allow() {
    let (etcd, master, sync) = following_web().await;

    // A launch: TASK_ADDED (staging), then STARTING and RUNNING updates.
    master.launch(FW, "web.2", "web2", "S1", "198.18.1.102");
    until_tasks(&etcd, &[WEB, WEB2], "a launched task").await;

    // TASK_ADDED may come before its agent and its framework (an agent reregistering with a
    // failed-over master): the task waits, then is served under its framework's name.
    master.add_task(support::operator::ModelTask {
        framework: "fw-chronos".into(),
        id: "1".into(),
        name: "nightly".into(),
        agent: "S2".into(),
        state: "TASK_STAGING".into(),
        ip: "198.18.2.50".into(),
        healthy: None,
    });
    master.update_task("fw-chronos", "1", "TASK_RUNNING", None);
    // Served at once, under a framework named by its id.
    until_framework(&etcd, "fw-chronos", "a task of an unknown framework").await;
    master.add_agent("S2", "198.18.2.21", "vsphere");
    master.add_framework("fw-chronos", "chronos");
    until_tasks(
        &etcd,
        &["nightly Running Unknown", WEB, WEB2],
        "a task added before its agent and framework",
    )
    .await;
    until_framework(&etcd, "chronos", "the chronos framework by name").await;

    // A health check flips without a state change; then a kill, a killed task, and a
    // framework torn down with its tasks.
    master.update_task(FW, "web.1", "TASK_RUNNING", Some(false));
    master.update_task(FW, "web.2", "TASK_KILLING", None);
    until_tasks(
        &etcd,
        &[
            "nightly Running Unknown",
            "web Running Unhealthy",
            "web2 Draining Unknown",
        ],
        "health and killing updates",
    )
    .await;
    master.update_task(FW, "web.2", "TASK_KILLED", None);
    master.remove_framework("fw-chronos");
    until_tasks(
        &etcd,
        &["web Running Unhealthy"],
        "a killed task and a removed framework",
    )
    .await;
    assert_eq!(
        master
            .state_reads
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "nothing polled /master/state"
    );
    assert_eq!(master.subscriptions(), 1, "{}", sync.log());
    let snap = catalog(&etcd).await;
    let web = snap.tasks.values().find(|t| t.name == "web").unwrap();
    assert_eq!(
        (web.state, web.health),
        (TaskState::Running, Health::Unhealthy)
    );
}

#[tokio::test]
async fn a_cut_or_garbled_stream_is_subscribed_again_and_reconciled() {
    let (etcd, master, sync) = following_web().await;

    // What happens while the stream is down is only in the next SUBSCRIBED state.
    master.change_quietly(|tasks| {
        let mut t = tasks[0].clone();
        t.id = "db.1".into();
        t.name = "db".into();
        tasks.push(t);
    });
    master.send_raw(b"120\n{\"type\":\"TASK_");
    master.close_streams();
    until_tasks(
        &etcd,
        &["db Running Unknown", "web Running Unknown"],
        "reconciled after a cut record",
    )
    .await;
    assert!(master.subscriptions() >= 2);
    sync.assert_logged("lost the event stream");

    master.change_quietly(|tasks| tasks.retain(|t| t.name != "db"));
    master.send_raw(b"garbage that is not RecordIO\n");
    until_tasks(&etcd, &[WEB], "reconciled after a garbage record").await;
    assert!(master.subscriptions() >= 3);
    sync.assert_logged("not a decimal number");
    // Each broken stream costs one new subscription, after a pause: no loop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(master.subscriptions() <= 4, "{}", sync.log());
}

#[tokio::test]
async fn a_leader_change_is_followed_through_the_redirect() {
    let etcd = EtcdServer::start();
    let one = cluster(Duration::from_millis(200)).await;
    let two = cluster(Duration::from_millis(200)).await;
    one.launch(FW, "web.1", "web", "S1", "198.18.1.101");
    two.set_role(Role::Follower(one.addr.to_string()));
    // The follower is asked first; its 307 names the leader, protocol-relative.
    let sync = follow(&format!("{},{}", two.url(), one.url()), &etcd);
    until_tasks(&etcd, &[WEB], "the leader's state").await;
    assert_eq!(two.subscriptions(), 0);

    // Failover: the other master leads with what it recovered; the old one redirects.
    two.launch(FW, "web.1", "web", "S1", "198.18.1.101");
    two.launch(FW, "api.1", "api", "S1", "198.18.1.120");
    // The master redirects by host name (`MasterInfo.hostname`), which is resolved for the
    // leader record.
    one.set_role(Role::Follower(format!("localhost:{}", two.addr.port())));
    two.set_role(Role::Leader);
    until_tasks(
        &etcd,
        &["api Running Unknown", "web Running Unknown"],
        "the new leader's state",
    )
    .await;
    assert_eq!(two.subscriptions(), 1, "{}", sync.log());
    let leader = catalog(&etcd)
        .await
        .leader
        .expect("a leader in the catalog");
    assert_eq!(leader.port, two.addr.port(), "{leader:?}");
}

#[tokio::test]
async fn a_master_that_stops_sending_heartbeats_is_left_and_subscribed_again() {
    let etcd = EtcdServer::start();
    let master = cluster(Duration::from_millis(100)).await;
    master.launch(FW, "web.1", "web", "S1", "198.18.1.101");
    master.set_silent(true);
    let sync = follow(&master.url(), &etcd);
    until_tasks(&etcd, &[WEB], "the subscribed state").await;
    eventually(PATIENCE, "two resubscriptions", || async {
        (master.subscriptions() >= 3).then_some(())
    })
    .await;
    sync.assert_logged("nothing received for 300ms");
    // With heartbeats back, the subscription holds.
    master.set_silent(false);
    master.launch(FW, "web.2", "web2", "S1", "198.18.1.102");
    until_tasks(&etcd, &[WEB, WEB2], "events after the heartbeats resume").await;
}

#[tokio::test]
async fn a_master_without_the_operator_api_is_polled_and_says_so() {
    let etcd = EtcdServer::start();
    let master = FakeMaster::start().await;
    master.set_tasks(vec![task("web.1", "web", AZURE, "TASK_RUNNING", &[])]);
    let sync = SyncProcess::start(
        &master.url(),
        &["--etcd".into(), etcd.endpoint()],
        "poller",
        &["--source", "events"],
    );
    until_tasks(&etcd, &["web Running Healthy"], "the polled state").await;
    sync.assert_logged("has no operator API (HTTP 404)");
    sync.assert_logged("polling /master/state");
}

#[tokio::test]
async fn the_stream_takes_the_masters_basic_auth_and_a_refusal_is_not_a_reason_to_poll() {
    let etcd = EtcdServer::start();
    let master = cluster(Duration::from_millis(200)).await;
    master.launch(FW, "web.1", "web", "S1", "198.18.1.101");
    master.require_basic_auth("lodestar", "s3cret:with colon");
    let without = follow(&master.url(), &etcd);
    without.until_logged("HTTP 401").await;
    assert_eq!(master.subscriptions(), 0);
    assert!(
        !without.log().contains("polling /master/state"),
        "{}",
        without.log()
    );
    assert_eq!(master.state_reads(), 0);
    drop(without);

    let pw = TempFile::new("pw", "s3cret:with colon\n");
    let auth = [
        "--master-user",
        "lodestar",
        "--master-password-file",
        pw.arg(),
    ];
    let with = follow_as(&master.url(), &etcd, "with-auth", &auth);
    until_tasks(&etcd, &[WEB], "the state, with credentials").await;
    assert_eq!(master.subscriptions(), 1, "{}", with.log());
}

#[tokio::test]
async fn the_stream_over_tls_trusts_the_configured_ca_only() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (master, ca) = OperatorMaster::start_tls(Duration::from_millis(200), dir.path()).await;
    master.add_agent("S1", "198.18.1.21", "azure");
    master.add_framework(FW, "marathon");
    master.launch(FW, "web.1", "web", "S1", "198.18.1.101");
    assert!(master.url().starts_with("https://"));
    // Without the CA the handshake fails and nothing is written.
    let untrusted = follow(&master.url(), &etcd);
    untrusted
        .until_logged("cannot subscribe to the masters")
        .await;
    assert_eq!(master.subscriptions(), 0);
    drop(untrusted);
    let ca = ca.to_str().unwrap();
    let trusted = follow_as(&master.url(), &etcd, "tls", &["--master-ca", ca]);
    until_tasks(&etcd, &[WEB], "the state over TLS").await;
    assert_eq!(master.subscriptions(), 1, "{}", trusted.log());
}
