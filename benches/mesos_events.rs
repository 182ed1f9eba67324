//! How fast a change at the Mesos master is answered in DNS, and what following the master
//! costs, with `mesos-sync` on the operator API's event stream against today's poll of
//! `/master/state` (and Mesos-DNS's documented 60 s poll, which cannot run here). The master is
//! the fake of `tests/support/operator.rs` (written from the Mesos docs), one model behind its
//! stream and its `/master/state`; etcd, mesos-sync and the agent are real.
//!
//! - **latency**: a task launched at the master (TASK_ADDED, STARTING, RUNNING) until an agent
//!   on etcd answers its name; `--changes` launches on the stream, `--poll-changes` polled.
//! - **load**: on `--tasks` tasks, `--rate` health changes a second for `--seconds`: etcd
//!   writes per change, and the bytes the master serialises, for each source.
//!
//! Run: `cargo bench --bench mesos_events [-- --changes 200 --poll-changes 20 --tasks 10000]`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use support::bench::arg;
use support::http::metric;
use support::mesos::SyncProcess;
use support::operator::OperatorMaster;
use support::report::{percentile, sorted, Plot, Report};
use support::{agent, dns, EtcdServer};

const FW: &str = "fw-marathon";

fn sync(master: &OperatorMaster, etcd: &EtcdServer, id: &str, flags: &[&str]) -> SyncProcess {
    SyncProcess::start(
        &master.url(),
        &["--etcd".into(), etcd.endpoint()],
        id,
        flags,
    )
}

/// The fake master with agent `S1` and the marathon framework.
fn cluster(rt: &tokio::runtime::Runtime) -> OperatorMaster {
    let master = rt.block_on(OperatorMaster::start(Duration::from_secs(15)));
    master.add_agent("S1", "198.18.1.21", "azure");
    master.add_framework(FW, "marathon");
    master
}

/// Waits up to `patience`, checking every `gap`, until `ready`; panics with mesos-sync's log
/// (`what` it never did) after that.
fn wait_for(
    process: &SyncProcess,
    (patience, gap): (Duration, Duration),
    what: &str,
    ready: impl Fn() -> bool,
) {
    let deadline = Instant::now() + patience;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "mesos-sync never {what}:\n{}",
            process.log()
        );
        std::thread::sleep(gap);
    }
}

/// Whether the agent answers `name` with an address. A reply later than 20 ms counts as none
/// and the name is asked again (a longer wait would put the client's patience in the tail).
fn answers(dns_addr: SocketAddr, name: &str) -> bool {
    let packet = dns::build(name, RecordType::A, None);
    dns::udp_raw_within(dns_addr, &packet, Duration::from_millis(20))
        .and_then(|r| hickory_proto::op::Message::from_vec(&r).ok())
        .is_some_and(|m| !m.answers.is_empty())
}

/// Launches `n` tasks one after another, each after a random pause of up to `jitter` (so
/// that a launch lands anywhere in a poll interval, not just after the poll that answered the
/// last one); for each, the time until the agent answers it.
fn launch_latencies(
    master: &OperatorMaster,
    dns_addr: SocketAddr,
    tag: &str,
    n: usize,
    jitter: Duration,
) -> (Vec<f64>, usize) {
    let (mut ms, mut missed) = (Vec::new(), 0);
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    for i in 0..n {
        std::thread::sleep(jitter.mul_f64(rng.f64()));
        let name = format!("{tag}{i}");
        let ip = format!("198.18.{}.{}", 100 + i / 250, i % 250 + 1);
        let started = Instant::now();
        master.launch(FW, &format!("{name}.1"), &name, "S1", &ip);
        let qname = format!("{name}.marathon.mesos.");
        let mut seen = false;
        while started.elapsed() < Duration::from_secs(30) {
            if answers(dns_addr, &qname) {
                seen = true;
                break;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        if seen {
            ms.push(started.elapsed().as_secs_f64() * 1e3);
        } else {
            missed += 1;
        }
    }
    (sorted(&ms), missed)
}

struct Load {
    changes: u64,
    writes: f64,
    master_bytes: u64,
    subscriptions: u64,
    state_reads: u64,
}

/// `rate` health flips a second for `seconds` on a master with `tasks` tasks.
fn load(
    rt: &tokio::runtime::Runtime,
    etcd_tasks: usize,
    rate: u64,
    seconds: u64,
    flags: &[&str],
) -> Load {
    let etcd = EtcdServer::start();
    let master = cluster(rt);
    for i in 0..etcd_tasks {
        let ip = format!("198.18.{}.{}", 10 + i / 250, i % 250 + 1);
        master.launch(FW, &format!("t{i}.1"), &format!("app{}", i / 3), "S1", &ip);
    }
    let metrics_port = support::etcd::free_port().to_string();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let mut args = vec!["--metrics-listen", metrics_addr.as_str()];
    args.extend(flags);
    let process = sync(&master, &etcd, "load", &args);
    let page = || {
        support::http::try_http_get(metrics_addr.parse().unwrap(), "/metrics").unwrap_or_default()
    };
    // Settled: the whole state written.
    let written = || metric(&page(), "lodestar_mesos_sync_writes_total") >= etcd_tasks as u64;
    let patience = (Duration::from_secs(120), Duration::from_millis(100));
    wait_for(&process, patience, "wrote the state", written);
    std::thread::sleep(Duration::from_millis(500));
    let (writes0, bytes0, reads0) = (
        metric(&page(), "lodestar_mesos_sync_writes_total") as f64,
        master.bytes_out(),
        master.state_reads(),
    );
    let started = Instant::now();
    let mut changes = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        let i = (changes as usize * 7919) % etcd_tasks;
        let healthy = (changes / etcd_tasks as u64) % 2 == 0;
        master.update_task(FW, &format!("t{i}.1"), "TASK_RUNNING", Some(healthy));
        changes += 1;
        let due = started + Duration::from_secs_f64(changes as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    // Let the last batch (or poll) land.
    std::thread::sleep(Duration::from_secs(6));
    let result = Load {
        changes,
        writes: metric(&page(), "lodestar_mesos_sync_writes_total") as f64 - writes0,
        master_bytes: master.bytes_out() - bytes0,
        subscriptions: master.subscriptions(),
        state_reads: master.state_reads() - reads0,
    };
    drop(process);
    result
}

fn main() {
    let changes = arg("--changes", 200) as usize;
    let poll_changes = arg("--poll-changes", 20) as usize;
    let tasks = arg("--tasks", 10_000) as usize;
    let rate = arg("--rate", 100);
    let seconds = arg("--seconds", 10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut report = Report::new("mesos_events");

    // Latency: one master, one agent; the stream first, then the poll.
    let etcd = EtcdServer::start();
    let master = cluster(&rt);
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_lodestar"));
    let agent = agent::Agent::start_binary(
        binary,
        &["--etcd", &etcd.endpoint()],
        "warn,lodestar::agent=info",
    );
    // Each mesos-sync is measured once it follows the master (elected, subscribed or polled).
    let settle = |ready: &dyn Fn() -> bool, process: &SyncProcess| {
        let patience = (Duration::from_secs(30), Duration::from_millis(20));
        wait_for(process, patience, "followed", ready);
        std::thread::sleep(Duration::from_millis(300));
    };
    let events = {
        let process = sync(&master, &etcd, "events", &["--source", "events"]);
        settle(&|| master.subscriptions() >= 1, &process);
        launch_latencies(&master, agent.dns, "ev", changes, Duration::from_millis(20))
    };
    let polled = {
        let process = sync(
            &master,
            &etcd,
            "poll",
            &["--source", "poll", "--interval", "5s"],
        );
        settle(&|| master.state_reads() >= 1, &process);
        launch_latencies(
            &master,
            agent.dns,
            "po",
            poll_changes,
            Duration::from_secs(5),
        )
    };
    drop(agent);
    let row = |what: &str, (v, missed): &(Vec<f64>, usize)| {
        vec![
            what.to_string(),
            v.len().to_string(),
            format!("{:.1}", percentile(v, 0.5)),
            format!("{:.1}", percentile(v, 0.99)),
            format!("{:.1}", percentile(v, 1.0)),
            missed.to_string(),
        ]
    };
    report.say(format!(
        "mesos_events latency: a task launched at the master -> an agent answers its name \
         ({changes} launches on the stream, {poll_changes} polled every 5 s)"
    ));
    report.table(
        &[
            "source",
            "changes",
            "p50 ms",
            "p99 ms",
            "max ms",
            "not answered in 30 s",
        ],
        &[
            row("operator API events (Lodestar)", &events),
            row("poll /master/state every 5 s (Lodestar before)", &polled),
            vec![
                "Mesos-DNS, documented 60 s refresh".into(),
                "-".into(),
                "30000 (mean)".into(),
                "60000".into(),
                "60000".into(),
                "-".into(),
            ],
        ],
    );
    let p99 = percentile(&events.0, 0.99);
    report.say(format!(
        "ratios: poll p50 / events p50 = {:.0}; Mesos-DNS worst case / events p99 = {:.0}; \
         target events p99 < 50 ms: {}",
        percentile(&polled.0, 0.5) / percentile(&events.0, 0.5),
        60_000.0 / p99,
        if p99 < 50.0 { "met" } else { "NOT met" }
    ));
    report.plot(
        "latency",
        Plot::cdf(
            "Task launched at the master -> DNS answer on an agent",
            "ms",
            &[
                ("operator API events", &events.0),
                ("poll every 5 s", &polled.0),
            ],
        ),
    );
    drop(master);
    drop(etcd);

    // Load: the same changes on a large cluster, each source in turn.
    let ev = load(&rt, tasks, rate, seconds, &["--source", "events"]);
    let po = load(
        &rt,
        tasks,
        rate,
        seconds,
        &["--source", "poll", "--interval", "5s"],
    );
    let per = |l: &Load| l.writes / l.changes.max(1) as f64;
    report.say(format!(
        "\nmesos_events load: {tasks} tasks, {rate} health changes/s for {seconds} s"
    ));
    report.table(
        &[
            "measure",
            "events",
            "poll every 5 s",
            "ratio (poll / events)",
        ],
        &[
            vec![
                "changes made".into(),
                ev.changes.to_string(),
                po.changes.to_string(),
                "-".into(),
            ],
            vec![
                "etcd writes per change".into(),
                format!("{:.2}", per(&ev)),
                format!("{:.2}", per(&po)),
                format!("{:.2}", per(&po) / per(&ev).max(f64::MIN_POSITIVE)),
            ],
            vec![
                "master: bytes serialised during the run".into(),
                ev.master_bytes.to_string(),
                po.master_bytes.to_string(),
                format!(
                    "{:.0}",
                    po.master_bytes as f64 / ev.master_bytes.max(1) as f64
                ),
            ],
            vec![
                "master: requests during the run (subscriptions / state reads)".into(),
                format!("{} subscription(s) in all", ev.subscriptions),
                format!("{} state reads", po.state_reads),
                "-".into(),
            ],
        ],
    );
    report.plot(
        "master-load",
        Plot::bars(
            &format!("Bytes the master serialises in {seconds} s, {tasks} tasks"),
            "bytes",
            &[
                ("operator API events", ev.master_bytes as f64),
                ("poll every 5 s", po.master_bytes as f64),
            ],
        ),
    );
    report.finish();
}
