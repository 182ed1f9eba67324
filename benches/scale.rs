//! Scale benchmark: a Mesos cluster of 3,000, 30,000 and 100,000 tasks (three per app, 500
//! agents; `-- --tasks a,b,c` for others), in one run per size:
//! - `lodestar mesos-sync --once` from a local fake master into a fresh real etcd: wall time
//!   and peak RSS;
//! - a fresh `lodestar agent` on that etcd: time from start until the last app answers over
//!   UDP, RSS then, and throughput (dnsperf) over the apps' names;
//! - Knot DNS on the same zone (made from the agent's own `/v1/axfr`, checked to answer the
//!   same): the same three measures.
//!
//! Reported as ratios against Knot, with plots. Run: `cargo bench --bench scale`.

#[path = "../tests/support/mod.rs"]
mod support;

#[allow(dead_code)]
#[path = "dns/catalog.rs"]
mod catalog;
#[allow(dead_code)]
#[path = "dns/dnsperf.rs"]
mod dnsperf;
#[allow(dead_code)]
#[path = "dns/servers.rs"]
mod servers;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use hickory_proto::rr::RecordType;

use dnsperf::Load;
use servers::Knot;
use support::mesos::{FakeMaster, Reply};
use support::report::{median, Plot, Report};
use support::{dns, scale, EtcdServer};

/// How long a server may take to answer the last app's name.
const READY_PATIENCE: Duration = Duration::from_secs(180);
/// How long mesos-sync may take.
const SYNC_PATIENCE: Duration = Duration::from_secs(300);

struct Options {
    tasks: Vec<usize>,
    runs: usize,
    load: Load,
}

fn options() -> Options {
    let mut o = Options {
        tasks: vec![3_000, 30_000, 100_000],
        runs: 2,
        // The load of issue 17's measurements.
        load: Load {
            clients: 16,
            threads: 1,
            outstanding: 200,
            seconds: 5,
        },
    };
    support::bench::each_flag(|v| match v.flag {
        // --tasks 3000,30000
        "--tasks" => o.tasks = v.list(),
        "--runs" => o.runs = v.number(),
        "--seconds" => o.load.seconds = v.number(),
        _ => {}
    });
    assert!(
        o.runs > 0 && o.tasks.iter().all(|&t| t >= scale::TASKS_PER_APP),
        "--runs must be positive and every --tasks at least {}",
        scale::TASKS_PER_APP
    );
    o
}

/// A field of /proc/<pid>/status in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("process {pid}: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        * 1024
}

/// A child process killed on drop unless it was reaped.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What one `mesos-sync --once` cost.
struct Sync {
    wall: Duration,
    peak_rss: u64,
    summary: String,
}

/// Runs `lodestar mesos-sync --once` to completion; its wall time and peak RSS (wait4's
/// ru_maxrss, which the kernel keeps after the process is gone).
fn mesos_sync(binary: &Path, master: &str, etcd: &str, dir: &Path) -> Sync {
    let out = dir.join("mesos-sync.out");
    let err = dir.join("mesos-sync.err");
    let mut cmd = Command::new(binary);
    cmd.args(["mesos-sync", "--once", "--master", master, "--etcd", etcd])
        .args(["--timeout", "120s"])
        .env_remove("LODESTAR_ETCD")
        .env("LODESTAR_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"));
    support::die_with_test(&mut cmd);
    let started = Instant::now();
    let mut child = Running(Some(cmd.spawn().expect("spawn lodestar mesos-sync")));
    let pid = child.0.as_ref().expect("spawned").id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data, filled by wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 on our own child, WNOHANG: it never blocks or reaps another process.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        assert!(
            started.elapsed() < SYNC_PATIENCE,
            "mesos-sync did not finish within {SYNC_PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let wall = started.elapsed();
    // Reaped: nothing left to kill.
    child.0.take();
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "mesos-sync failed (wait status {status}):\n{stdout}{stderr}"
    );
    Sync {
        wall,
        peak_rss: usage.ru_maxrss as u64 * 1024,
        summary: stdout.trim().to_string(),
    }
}

/// True when `server` answers `name` (A) with NOERROR and at least one record.
fn answers(server: SocketAddr, name: &str) -> bool {
    let packet = dns::build(name, RecordType::A, None);
    let Some(r) = dns::udp_raw_within(server, &packet, Duration::from_millis(200)) else {
        return false;
    };
    r.len() >= 12 && r[..2] == packet[..2] && r[3] & 0x0f == 0 && r[6..8] != [0, 0]
}

/// Polls until `server` answers `name`; how long after `since` that was.
fn ready(
    server: SocketAddr,
    name: &str,
    since: Instant,
    mut alive: impl FnMut() -> bool,
) -> Duration {
    loop {
        if answers(server, name) {
            return since.elapsed();
        }
        assert!(alive(), "the server exited before answering {name}");
        assert!(
            since.elapsed() < READY_PATIENCE,
            "{name} was not answered within {READY_PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sorted answers (rcode and records) to a query, as comparable text.
fn answer_text(server: SocketAddr, name: &str, qtype: RecordType) -> String {
    let m = dns::udp(server, name, qtype, Some(4096));
    let mut records: Vec<String> = m
        .answers
        .iter()
        .map(|r| format!("{} {} {}", r.name.to_ascii().to_lowercase(), r.ttl, r.data))
        .collect();
    records.sort();
    format!("{} {}", m.metadata.response_code, records.join(", "))
}

/// One server's measures at one size.
#[derive(Default, Clone)]
struct Side {
    ready: Duration,
    rss: u64,
    qps: Vec<f64>,
}

impl Side {
    fn qps(&self) -> f64 {
        median(&self.qps)
    }
}

struct Size {
    tasks: usize,
    records: usize,
    zone_bytes: usize,
    state_bytes: usize,
    sync: Sync,
    lodestar: Side,
    knot: Side,
}

/// Named values as `Plot::bars` takes them.
fn bars(v: &[(String, f64)]) -> Vec<(&str, f64)> {
    v.iter().map(|(n, x)| (n.as_str(), *x)).collect()
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn measure(o: &Options, tasks: usize, rt: &tokio::runtime::Runtime, knotd: &Path) -> Size {
    let binary = servers::lodestar_binary();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let apps = scale::apps(tasks);
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = EtcdServer::start();
    let master = rt.block_on(FakeMaster::start());
    let state = scale::state_text(&master.pid(), tasks);
    let state_bytes = state.len();
    master.set(Reply::Raw(StatusCode::OK, state));

    let sync = mesos_sync(&binary, &master.url(), &etcd.endpoint(), dir.path());
    drop(master);
    println!(
        "{tasks} tasks: mesos-sync --once {:.2} s, peak RSS {:.0} MB ({:.1} MB of state); {}",
        sync.wall.as_secs_f64(),
        mb(sync.peak_rss),
        mb(state_bytes as u64),
        sync.summary
    );

    let last = scale::app_fqdn(apps - 1);
    let started = Instant::now();
    let mut agent = servers::start_lodestar(&binary, &["--etcd", &etcd.endpoint()]);
    let mut lodestar = Side {
        ready: ready(agent.dns, &last, started, || true),
        rss: status_bytes(agent.pid(), "VmRSS"),
        qps: Vec::new(),
    };

    // Knot gets exactly the records the agent serves, and the agent's SOA.
    let axfr = catalog::Axfr::fetch(agent.http);
    let records = axfr.record_count();
    for k in [0, apps / 2, apps - 1] {
        let ips = axfr.records.a.get(&scale::app_fqdn(k)).map_or(0, Vec::len);
        let want = (tasks - k * scale::TASKS_PER_APP).min(scale::TASKS_PER_APP);
        assert_eq!(ips, want, "{} has {ips} A records", scale::app_fqdn(k));
    }
    let soa = servers::agent_soa(agent.dns);
    let zone = axfr.zone_file(&soa);
    let zone_lines = zone.lines().filter(|l| !l.starts_with('$')).count();
    assert_eq!(
        zone_lines,
        records + 2,
        "the zone file has other records than /v1/axfr"
    );
    drop(axfr);
    let mut knot = Knot::spawn(knotd, &zone, cores);
    let since = knot.spawned;
    let knot_ready = ready(knot.dns, &last, since, || knot.running());
    let mut knot_side = Side {
        ready: knot_ready,
        rss: status_bytes(knot.pid(), "VmRSS"),
        qps: Vec::new(),
    };
    println!(
        "  agent ready {:.2} s, {:.0} MB; knotd ready {:.2} s, {:.0} MB; {records} records",
        lodestar.ready.as_secs_f64(),
        mb(lodestar.rss),
        knot_side.ready.as_secs_f64(),
        mb(knot_side.rss)
    );

    // Every app name, in a fixed shuffled order; a sample asked of both must answer the same.
    let mut names: Vec<String> = (0..apps).map(scale::app_fqdn).collect();
    catalog::Rng::new(0x5ca1_e017).shuffle(&mut names);
    let sample: Vec<&String> = names.iter().step_by((apps / 200).max(1)).collect();
    for name in &sample {
        let srv = format!("_{}", name.replacen('.', "._tcp.", 1));
        for (n, t) in [
            (name.as_str(), RecordType::A),
            (srv.as_str(), RecordType::SRV),
        ] {
            let (l, k) = (answer_text(agent.dns, n, t), answer_text(knot.dns, n, t));
            assert_eq!(l, k, "{n} {t}: the agent and Knot answer differently");
        }
    }
    let data = dir.path().join("queries.txt");
    let mut text = String::with_capacity(names.len() * 32);
    for n in &names {
        text.push_str(n);
        text.push_str(" A\n");
    }
    std::fs::write(&data, text).expect("query file");

    let warm = Load {
        seconds: 1,
        ..o.load.clone()
    };
    dnsperf::run(knot.dns, knot.pid(), &data, &warm, None, false);
    dnsperf::run(agent.dns, agent.pid(), &data, &warm, None, false);
    for _ in 0..o.runs {
        let k = dnsperf::run(knot.dns, knot.pid(), &data, &o.load, None, false);
        let l = dnsperf::run(agent.dns, agent.pid(), &data, &o.load, None, false);
        println!(
            "  qps: knot {:.0} (lost {}), lodestar {:.0} (lost {})",
            k.qps, k.lost, l.qps, l.lost
        );
        knot_side.qps.push(k.qps);
        lodestar.qps.push(l.qps);
    }
    agent.terminate();
    drop(agent);
    drop(knot);
    drop(etcd);
    Size {
        tasks,
        records,
        zone_bytes: zone.len(),
        state_bytes,
        sync,
        lodestar,
        knot: knot_side,
    }
}

fn main() {
    let o = options();
    let knotd = servers::require("knotd", "knot");
    servers::require("dnsperf", "dnsperf");
    servers::require("etcd", "etcd-server");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let setup = format!(
        "{} tasks per app, {} agents, one framework; dnsperf -c {} -T {} -q {} -l {} over every \
         app's A name, median of {} runs",
        scale::TASKS_PER_APP,
        scale::AGENTS,
        o.load.clients,
        o.load.threads,
        o.load.outstanding,
        o.load.seconds,
        o.runs
    );
    println!("scale: {:?} tasks; {setup}", o.tasks);
    let sizes: Vec<Size> = o
        .tasks
        .iter()
        .map(|&t| measure(&o, t, &rt, &knotd))
        .collect();

    let mut report = Report::new("scale");
    report.say(format!("\nscale: {setup}\n"));
    let mut rows = Vec::new();
    for s in &sizes {
        let (l, k) = (&s.lodestar, &s.knot);
        let per_task = |b: u64| b as f64 / s.tasks as f64;
        rows.push(vec![
            format!("{}", s.tasks),
            format!("{}", s.records),
            format!(
                "{:.2} s / {:.2} s = {:.2}",
                l.ready.as_secs_f64(),
                k.ready.as_secs_f64(),
                l.ready.as_secs_f64() / k.ready.as_secs_f64()
            ),
            format!(
                "{:.0} MB / {:.0} MB = {:.2}",
                mb(l.rss),
                mb(k.rss),
                l.rss as f64 / k.rss as f64
            ),
            format!("{:.0} B / {:.0} B", per_task(l.rss), per_task(k.rss)),
            format!(
                "{:.0}k / {:.0}k = {:.2}",
                l.qps() / 1e3,
                k.qps() / 1e3,
                l.qps() / k.qps()
            ),
        ]);
    }
    report.say("Lodestar agent / Knot on the same zone (ready: start until the last app answers; RSS after that):");
    report.table(
        &[
            "tasks",
            "zone records",
            "time to ready",
            "RSS",
            "RSS per task",
            "qps",
        ],
        &rows,
    );
    let rows: Vec<Vec<String>> = sizes
        .iter()
        .map(|s| {
            vec![
                format!("{}", s.tasks),
                format!("{:.1} MB", mb(s.state_bytes as u64)),
                format!("{:.2} s", s.sync.wall.as_secs_f64()),
                format!("{:.0} MB", mb(s.sync.peak_rss)),
                format!("{:.0} B", s.sync.peak_rss as f64 / s.tasks as f64),
                s.sync.summary.clone(),
            ]
        })
        .collect();
    report.say("`lodestar mesos-sync --once` from the master's /master/state into an empty etcd:");
    report.table(
        &[
            "tasks",
            "state document",
            "wall time",
            "peak RSS",
            "peak RSS per task",
            "result",
        ],
        &rows,
    );
    report.say(format!(
        "zone files for Knot: {}",
        sizes
            .iter()
            .map(|s| format!("{} tasks {:.1} MB", s.tasks, mb(s.zone_bytes as u64)))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let label = |s: &Size, who: &str| format!("{}k {who}", s.tasks / 1000);
    let pairs = |f: &dyn Fn(&Side) -> f64| -> Vec<(String, f64)> {
        sizes
            .iter()
            .flat_map(|s| {
                [
                    (label(s, "Lodestar"), f(&s.lodestar)),
                    (label(s, "Knot"), f(&s.knot)),
                ]
            })
            .collect()
    };
    let memory = pairs(&|s| mb(s.rss));
    report.plot(
        "memory",
        Plot::bars("RSS after ready, by task count", "MB", &bars(&memory)),
    );
    let ready_s = pairs(&|s| s.ready.as_secs_f64());
    report.plot(
        "ready",
        Plot::bars(
            "start until the last app answers, by task count",
            "seconds",
            &bars(&ready_s),
        ),
    );
    let qps = pairs(&|s| s.qps());
    report.plot(
        "qps",
        Plot::bars(
            "throughput over the apps' names",
            "queries per second",
            &bars(&qps),
        ),
    );
    let sync: Vec<(String, f64)> = sizes
        .iter()
        .map(|s| (format!("{}k tasks", s.tasks / 1000), mb(s.sync.peak_rss)))
        .collect();
    report.plot(
        "mesos-sync",
        Plot::bars("mesos-sync --once peak RSS", "MB", &bars(&sync)),
    );
    report.finish();
}
