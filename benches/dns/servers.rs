//! The two servers under test as child processes on loopback: the real `lodestar agent` and
//! Knot DNS (`knotd`). Both die with the bench (drop guard, and PR_SET_PDEATHSIG on panic
//! paths that skip drops); CPU time is read from /proc.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::{die_with_test, dns};

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// `lodestar agent` on 127.0.0.1, started by the test harness (`tests/support/agent.rs`).
pub type Lodestar = crate::support::agent::Agent;

/// The agent's own SOA rdata for `mesos.`: Knot's zone file takes it, so that negative answers
/// carry the same SOA from both.
pub fn agent_soa(dns: std::net::SocketAddr) -> String {
    let soa = crate::support::dns::udp(dns, "mesos.", hickory_proto::rr::RecordType::SOA, None);
    soa.answers
        .first()
        .expect("the agent's SOA")
        .data
        .to_string()
}

/// The path of a required program, or a panic naming the Debian package that has it.
pub fn require(program: &str, package: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(std::path::PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{program}` not found: this benchmark needs it; install it with `apt-get install -y {package}`")
        })
}

/// The release `lodestar` the bench was built with (`cargo bench` builds it).
pub fn lodestar_binary() -> std::path::PathBuf {
    let path = std::path::PathBuf::from(env!("CARGO_BIN_EXE_lodestar"));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --release --bin lodestar` (or `cargo bench`, which builds it)",
        path.display()
    );
    path
}

/// Starts `lodestar agent --no-l4lb SOURCE...` on free loopback ports and waits until ready.
/// Every query is in-zone, so the upstream (a discard port) is never asked.
pub fn start_lodestar(binary: &Path, source: &[&str]) -> Lodestar {
    let mut args = source.to_vec();
    args.extend(["--upstream", "127.0.0.1:9"]);
    Lodestar::start_binary(binary, &args, "info")
}

/// `knotd` in the foreground serving one zone file for `mesos.`, from a private directory.
pub struct Knot {
    child: Option<Child>,
    pub dns: SocketAddr,
    dir: tempfile::TempDir,
    /// When knotd was started.
    pub spawned: Instant,
}

impl Knot {
    /// Writes the config and zone, starts knotd with `workers` UDP threads and waits until it
    /// answers the zone's SOA.
    pub fn start(binary: &Path, zone: &str, workers: usize) -> Knot {
        let mut knot = Knot::spawn(binary, zone, workers);
        knot.wait_for_soa();
        knot
    }

    /// Writes the config and zone and starts knotd, without waiting for it to load the zone
    /// (`spawned` says when it was started).
    pub fn spawn(binary: &Path, zone: &str, workers: usize) -> Knot {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("mesos.zone"), zone).expect("zone file");
        let port = free_udp_and_tcp_port();
        let d = dir.path().display();
        // No journal, no DNSSEC, no zone file write-back: a plain authoritative server.
        let conf = format!(
            "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.1@{port}\n    \
             udp-workers: {workers}\n    tcp-workers: 1\n    background-workers: 1\n\
             database:\n    storage: \"{d}\"\n\
             log:\n  - target: stderr\n    any: info\n\
             zone:\n  - domain: mesos\n    storage: \"{d}\"\n    file: \"mesos.zone\"\n    \
             semantic-checks: off\n    zonefile-load: whole\n    zonefile-sync: -1\n    \
             journal-content: none\n"
        );
        let conf_path = dir.path().join("knot.conf");
        std::fs::write(&conf_path, conf).expect("knot.conf");
        let log = std::fs::File::create(dir.path().join("knotd.log")).expect("knot log");
        let mut cmd = Command::new(binary);
        cmd.arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        die_with_test(&mut cmd);
        let spawned = Instant::now();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start knotd: {e}"));
        Knot {
            child: Some(child),
            dns: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            spawned,
        }
    }

    /// Waits (a minute at most) until knotd answers the zone's SOA; how long after its start.
    pub fn wait_for_soa(&mut self) -> Duration {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                self.running() && Instant::now() < deadline,
                "knotd did not start serving mesos.:\n{}",
                self.logs()
            );
            if let Some(r) = dns::udp_raw(self.dns, &dns::build("mesos.", RecordType::SOA, None)) {
                let m = hickory_proto::op::Message::from_vec(&r).expect("a DNS message");
                if m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty() {
                    return self.spawned.elapsed();
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether knotd has not exited.
    pub fn running(&mut self) -> bool {
        !matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(Some(_))))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("knotd.log")).unwrap_or_default()
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        kill(&mut self.child);
        if std::thread::panicking() {
            eprintln!("---- knotd log ----\n{}\n----", self.logs());
        }
    }
}

/// A loopback port free for both UDP and TCP a moment ago.
fn free_udp_and_tcp_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback UDP port");
        let port = udp.local_addr().expect("addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

/// The clock ticks per second of /proc's CPU times.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The fields of a /proc `stat` line after the command name: [0] is the state (field 3).
fn stat_fields(path: &Path) -> Option<(String, Vec<u64>)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let rest = text[close + 1..]
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    Some((comm, rest))
}

// Indices into `stat_fields` (state skipped): utime is field 14, stime 15, cutime 16, cstime 17.
const UTIME: usize = 10;

/// User + system CPU seconds of a whole process (all its threads).
pub fn cpu_seconds(pid: u32) -> f64 {
    let (_, f) = stat_fields(&PathBuf::from(format!("/proc/{pid}/stat")))
        .unwrap_or_else(|| panic!("process {pid} is gone"));
    (f[UTIME] + f[UTIME + 1]) as f64 / clock_ticks()
}

/// User + system CPU seconds of this process's waited-for children (here: dnsperf runs).
pub fn children_cpu_seconds() -> f64 {
    let (_, f) = stat_fields(Path::new("/proc/self/stat")).expect("/proc/self/stat");
    (f[UTIME + 2] + f[UTIME + 3]) as f64 / clock_ticks()
}

/// CPU seconds of each thread, keyed `name[tid]`, for the CPU split between threads.
pub fn thread_cpu_seconds(pid: u32) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Some((comm, f)) = stat_fields(&entry.path().join("stat")) else {
            continue;
        };
        let tid = entry.file_name().to_string_lossy().into_owned();
        out.push((
            format!("{comm}[{tid}]"),
            (f[UTIME] + f[UTIME + 1]) as f64 / clock_ticks(),
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Datagrams the kernel dropped at UDP sockets (receive buffer full): (those bound to
/// `port`, i.e. the server's, and all on this host), from /proc/net/udp's `drops` column.
pub fn udp_drops(port: u16) -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let (mut server, mut all) = (0, 0);
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(drops) = f.last().and_then(|d| d.parse::<u64>().ok()) else {
            continue;
        };
        all += drops;
        let local_port = f
            .get(1)
            .and_then(|a| a.split(':').nth(1))
            .and_then(|p| u16::from_str_radix(p, 16).ok());
        if local_port == Some(port) {
            server += drops;
        }
    }
    (server, all)
}
