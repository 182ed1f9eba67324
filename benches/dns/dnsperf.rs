//! dnsperf runs and their summaries. dnsperf 2.10 (Debian 12) has no latency histogram, so
//! percentiles come from `-v`, which prints one `> RCODE name type seconds` line per query.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::servers;

/// The load shape, identical for both servers.
#[derive(Clone, Debug)]
pub struct Load {
    /// Client sockets (`-c`): several, so SO_REUSEPORT spreads them over the server's workers.
    pub clients: usize,
    /// dnsperf threads (`-T`).
    pub threads: usize,
    /// Queries in flight at most (`-q`).
    pub outstanding: usize,
    /// Seconds per run (`-l`).
    pub seconds: u64,
}

/// One run's numbers, as dnsperf printed them, plus the CPU the server and dnsperf used.
#[derive(Clone, Debug, Default)]
pub struct Run {
    pub sent: u64,
    pub completed: u64,
    pub lost: u64,
    pub qps: f64,
    pub run_seconds: f64,
    pub avg_latency_ms: f64,
    pub min_latency_ms: f64,
    pub max_latency_ms: f64,
    pub response_bytes: f64,
    pub rcodes: String,
    /// The summary block, verbatim.
    pub summary: String,
    pub server_cpu: f64,
    pub client_cpu: f64,
    pub wall: f64,
    /// Per-query latencies in ms (only with `verbose`).
    pub latencies_ms: Vec<f64>,
    /// Datagrams dropped by the kernel for want of receive buffer: at the server's sockets,
    /// and at the others (dnsperf's).
    pub server_drops: u64,
    pub client_drops: u64,
    /// Server threads' CPU seconds during the run (`name[tid]`, busiest first).
    pub threads: Vec<(String, f64)>,
}

impl Run {
    pub fn cpu_per_million(&self) -> f64 {
        self.server_cpu / self.completed.max(1) as f64 * 1e6
    }
}

/// Runs dnsperf at `server` (process `pid`) with `data`; `max_qps` caps the rate (`-Q`).
pub fn run(
    server: SocketAddr,
    pid: u32,
    data: &Path,
    load: &Load,
    max_qps: Option<u64>,
    verbose: bool,
) -> Run {
    let mut cmd = Command::new("dnsperf");
    cmd.arg("-s")
        .arg(server.ip().to_string())
        .arg("-p")
        .arg(server.port().to_string())
        .arg("-d")
        .arg(data)
        .args(["-m", "udp", "-e"])
        .args(["-c", &load.clients.to_string()])
        .args(["-T", &load.threads.to_string()])
        .args(["-q", &load.outstanding.to_string()])
        .args(["-l", &load.seconds.to_string()])
        // A query not answered within 2 s is lost.
        .args(["-t", "2"]);
    if let Some(q) = max_qps {
        cmd.args(["-Q", &q.to_string()]);
    }
    if verbose {
        cmd.arg("-v");
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let threads_before = servers::thread_cpu_seconds(pid);
    let drops_before = servers::udp_drops(server.port());
    let server_before = servers::cpu_seconds(pid);
    let client_before = servers::children_cpu_seconds();
    let started = std::time::Instant::now();
    let mut child = cmd.spawn().expect("spawn dnsperf");
    let mut stderr = child.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut out = Run::default();
    let mut text = String::new();
    for line in BufReader::new(child.stdout.take().expect("stdout"))
        .lines()
        .map_while(Result::ok)
    {
        if let Some(q) = line.strip_prefix("> ") {
            if let Some(s) = q.rsplit(' ').next().and_then(|s| s.parse::<f64>().ok()) {
                out.latencies_ms.push(s * 1e3);
            }
        } else {
            text.push_str(&line);
            text.push('\n');
        }
    }
    let status = child.wait().expect("dnsperf exit status");
    out.wall = started.elapsed().as_secs_f64();
    out.client_cpu = servers::children_cpu_seconds() - client_before;
    out.server_cpu = servers::cpu_seconds(pid) - server_before;
    let drops_after = servers::udp_drops(server.port());
    out.server_drops = drops_after.0 - drops_before.0;
    out.client_drops = (drops_after.1 - drops_before.1) - out.server_drops;
    let errors = err_reader.join().unwrap_or_default();
    assert!(
        status.success(),
        "dnsperf failed ({status}):\n{text}\n{errors}"
    );
    out.threads = thread_deltas(&threads_before, &servers::thread_cpu_seconds(pid));
    parse_summary(&text, &mut out);
    assert!(
        out.completed > 0,
        "dnsperf completed no queries:\n{text}\n{errors}"
    );
    out
}

fn thread_deltas(before: &[(String, f64)], after: &[(String, f64)]) -> Vec<(String, f64)> {
    let mut d: Vec<(String, f64)> = after
        .iter()
        .map(|(k, v)| {
            let b = before.iter().find(|(kb, _)| kb == k).map_or(0.0, |x| x.1);
            (k.clone(), v - b)
        })
        .filter(|(_, v)| *v >= 0.01)
        .collect();
    d.sort_by(|a, b| b.1.total_cmp(&a.1));
    d
}

fn parse_summary(text: &str, out: &mut Run) {
    let first_number = |s: &str| -> f64 {
        s.split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .find(|t| !t.is_empty())
            .and_then(|t| t.parse().ok())
            .unwrap_or(0.0)
    };
    let mut summary = Vec::new();
    let mut in_stats = false;
    for line in text.lines() {
        if line.starts_with("Statistics:") {
            in_stats = true;
            continue;
        }
        if !in_stats || line.trim().is_empty() {
            continue;
        }
        summary.push(line.trim().to_string());
        let Some((key, value)) = line.trim().split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Queries sent" => out.sent = first_number(value) as u64,
            "Queries completed" => out.completed = first_number(value) as u64,
            "Queries lost" => out.lost = first_number(value) as u64,
            "Queries per second" => out.qps = first_number(value),
            "Run time (s)" => out.run_seconds = first_number(value),
            "Response codes" => out.rcodes = value.to_string(),
            "Average packet size" => {
                out.response_bytes = value.split("response").nth(1).map_or(0.0, first_number);
            }
            "Average Latency (s)" => {
                out.avg_latency_ms = first_number(value) * 1e3;
                let after = |tag: &str| value.split(tag).nth(1).map_or(0.0, first_number) * 1e3;
                out.min_latency_ms = after("min");
                out.max_latency_ms = after("max");
            }
            _ => {}
        }
    }
    out.summary = summary.join("\n");
}
