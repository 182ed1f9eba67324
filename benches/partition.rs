//! Two-site partition benchmark: with the topology of `tests/partition.rs` (three etcd members
//! split two to one over a veth "WAN link", an agent in each site), how long after the link
//! heals the minority site answers a name written during the partition, and how long after the
//! cut it reports its state stale. Run as root: `cargo bench --bench partition [-- --rounds N]`.

#[allow(dead_code)]
#[path = "../tests/support/agent.rs"]
mod agent;
#[allow(dead_code)]
#[path = "../tests/support/netns.rs"]
mod netns;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use agent::Agent;
use netns::{link, Netns};

const A_IP: &str = "198.18.0.1";
const B_IP: &str = "198.18.0.2";

/// An etcd member and the data dir it lives in (kept until the member is killed).
struct Member(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn member(ns: &Netns, name: &str, ip: &str, client: u16, peer: u16, cluster: &str) -> Member {
    let dir = tempfile::tempdir().unwrap();
    let child = ns
        .command("/usr/bin/etcd")
        .arg(format!("--name={name}"))
        .arg(format!("--data-dir={}", dir.path().join("d").display()))
        .arg(format!("--listen-client-urls=http://{ip}:{client}"))
        .arg(format!("--advertise-client-urls=http://{ip}:{client}"))
        .arg(format!("--listen-peer-urls=http://{ip}:{peer}"))
        .arg(format!("--initial-advertise-peer-urls=http://{ip}:{peer}"))
        .arg(format!("--initial-cluster={cluster}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd (Debian package etcd-server)");
    Member(child, dir)
}

/// Polls until `f` holds; the time it took (None past `limit`).
fn time_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn answers(ns: &Netns, name: &str) -> bool {
    let out = ns.exec(&[
        "dig",
        "@127.0.0.1",
        "-p",
        "5353",
        "+short",
        "+time=1",
        "+tries=1",
        name,
        "A",
    ]);
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

fn lodestar(ns: &Netns, args: &[&str]) -> bool {
    ns.command(env!("CARGO_BIN_EXE_lodestar"))
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn stale(ns: &Netns, agent: &Agent) -> bool {
    let out = ns
        .command(env!("CARGO_BIN_EXE_lodestar"))
        .args(["status", "--http", &agent.http.to_string()])
        .output();
    out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("STALE"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args
        .windows(2)
        .find(|w| w[0] == "--rounds")
        .map(|w| w[1].parse().expect("--rounds N"))
        .unwrap_or(5);
    let a = Netns::new("ba");
    let b = Netns::new("bb");
    let (wan, _) = link(&a, &format!("{A_IP}/24"), &b, &format!("{B_IP}/24"), "p");
    let cluster = format!("m1=http://{A_IP}:12380,m2=http://{A_IP}:22380,m3=http://{B_IP}:12380");
    let _m = [
        member(&a, "m1", A_IP, 12379, 12380, &cluster),
        member(&a, "m2", A_IP, 22379, 22380, &cluster),
        member(&b, "m3", B_IP, 12379, 12380, &cluster),
    ];
    let majority = format!("http://{A_IP}:12379");
    let all = format!("http://{A_IP}:12379,http://{A_IP}:22379,http://{B_IP}:12379");
    time_until(Duration::from_secs(30), || {
        a.exec(&["etcdctl", "--endpoints", &majority, "put", "/probe", "x"])
            .status
            .success()
    })
    .expect("the etcd cluster elects a leader");
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("c.toml");
    std::fs::write(
        &catalog,
        "schema = 1\n[[agents]]\nid = \"S-1\"\nhostname = \"h\"\naddresses = [\"198.18.0.1\"]\n",
    )
    .unwrap();
    assert!(lodestar(
        &a,
        &[
            "catalog",
            "put",
            "--etcd",
            &majority,
            catalog.to_str().unwrap()
        ]
    ));
    let agent_args = [
        "--etcd",
        all.as_str(),
        "--dns-listen",
        "127.0.0.1:5353",
        "--http-listen",
        "127.0.0.1:8123",
    ];
    let _agent_a = Agent::start_in(&a, &agent_args);
    let agent_b = Agent::start_in(&b, &agent_args);

    let (mut detect, mut converge) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        a.exec_ok(&["ip", "link", "set", &wan, "down"]);
        let cut = Instant::now();
        let name = format!("round{round}");
        time_until(Duration::from_secs(30), || {
            lodestar(
                &a,
                &[
                    "services",
                    "put",
                    "--etcd",
                    &majority,
                    "--id",
                    &format!("{name}.1"),
                    "--name",
                    &name,
                    "--agent",
                    "S-1",
                    "--ip",
                    "198.18.1.1",
                ],
            )
        })
        .expect("the majority takes a write");
        time_until(Duration::from_secs(60), || stale(&b, &agent_b)).expect("site B notices");
        detect.push(cut.elapsed().as_secs_f64());
        a.exec_ok(&["ip", "link", "set", &wan, "up"]);
        let qname = format!("{name}.marathon.mesos");
        let t =
            time_until(Duration::from_secs(60), || answers(&b, &qname)).expect("site B converges");
        converge.push(t.as_secs_f64());
        // Settle before the next round.
        time_until(Duration::from_secs(30), || !stale(&b, &agent_b));
    }
    detect.sort_by(|x, y| x.partial_cmp(y).unwrap());
    converge.sort_by(|x, y| x.partial_cmp(y).unwrap());
    println!("partition: {rounds} rounds, 3 etcd members split 2/1, one agent per site");
    println!();
    println!("| measure | Lodestar | peer | ratio (peer / Lodestar) |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| heal -> minority site answers the new name, p50 / max | {:.2} s / {:.2} s | Mesos-DNS: next 60 s poll, 30 s mean | {:.0} |",
        percentile(&converge, 0.5),
        converge[converge.len() - 1],
        30.0 / percentile(&converge, 0.5)
    );
    println!(
        "| cut -> minority site reports stale, p50 / max | {:.2} s / {:.2} s | Mesos-DNS: never reports it | - |",
        percentile(&detect, 0.5),
        detect[detect.len() - 1]
    );
}
