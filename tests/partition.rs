//! Two sites on one machine: network namespaces joined by a veth "WAN link", a three-member
//! etcd cluster (two members in site A, one in site B) and an agent in each site. Cutting the
//! link, every agent keeps answering from its last snapshot; the minority side says its state
//! is stale; after the link heals every agent converges without a restart. Also: a member dies.

mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::agent::Agent;
use support::netns::{link, Netns};

const A_IP: &str = "198.18.0.1";
const B_IP: &str = "198.18.0.2";
const PATIENCE: Duration = Duration::from_secs(30);

/// One etcd member in a namespace; killed on drop.
struct Member {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn member(ns: &Netns, name: &str, ip: &str, client: u16, peer: u16, cluster: &str) -> Member {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = ns.command("/usr/bin/etcd");
    cmd.arg(format!("--name={name}"))
        .arg(format!("--data-dir={}", dir.path().join("data").display()))
        .arg(format!("--listen-client-urls=http://{ip}:{client}"))
        .arg(format!("--advertise-client-urls=http://{ip}:{client}"))
        .arg(format!("--listen-peer-urls=http://{ip}:{peer}"))
        .arg(format!("--initial-advertise-peer-urls=http://{ip}:{peer}"))
        .arg(format!("--initial-cluster={cluster}"))
        .arg("--initial-cluster-state=new")
        .arg("--initial-cluster-token=lodestar-partition-test")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: prctl only asks the kernel to kill etcd with the test.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    Member {
        child: cmd.spawn().expect("etcd (Debian package etcd-server)"),
        _dir: dir,
    }
}

/// Polls `f` until it returns true.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "gave up after {PATIENCE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `dig +short` inside a namespace.
fn dig(ns: &Netns, port: u16, name: &str) -> Vec<String> {
    let out = ns.exec(&[
        "dig",
        "@127.0.0.1",
        "-p",
        &port.to_string(),
        "+short",
        "+time=1",
        "+tries=1",
        name,
        "A",
    ]);
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with(';'))
        .map(String::from)
        .collect();
    v.sort();
    v
}

fn lodestar(ns: &Netns, args: &[&str]) -> String {
    let out = ns
        .command(env!("CARGO_BIN_EXE_lodestar"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lodestar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stale(ns: &Netns, agent: &Agent) -> bool {
    let out = ns
        .command(env!("CARGO_BIN_EXE_lodestar"))
        .args(["status", "--http", &agent.http.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("STALE")
}

/// Registers a task, retrying while the cluster elects a leader (a member just died or the
/// link just went down: etcd answers "leader changed" / "no leader" for a moment).
fn put_task(ns: &Netns, etcd: &str, id: &str, name: &str, ip: &str) {
    let args = [
        "services", "put", "--etcd", etcd, "--id", id, "--name", name, "--agent", "S-1", "--ip", ip,
    ];
    eventually("etcd to take the write", || {
        ns.command(env!("CARGO_BIN_EXE_lodestar"))
            .args(args)
            .output()
            .unwrap()
            .status
            .success()
    });
}

#[test]
fn a_wan_partition_keeps_both_sites_answering_and_they_converge_when_it_heals() {
    let a = Netns::new("sitea");
    let b = Netns::new("siteb");
    let (wan_a, _) = link(&a, &format!("{A_IP}/24"), &b, &format!("{B_IP}/24"), "w");
    let cluster = format!("m1=http://{A_IP}:12380,m2=http://{A_IP}:22380,m3=http://{B_IP}:12380");
    let _m1 = member(&a, "m1", A_IP, 12379, 12380, &cluster);
    let mut m2 = Some(member(&a, "m2", A_IP, 22379, 22380, &cluster));
    let _m3 = member(&b, "m3", B_IP, 12379, 12380, &cluster);
    let all = format!("http://{A_IP}:12379,http://{A_IP}:22379,http://{B_IP}:12379");
    let majority = format!("http://{A_IP}:12379");
    eventually("the etcd cluster to elect a leader", || {
        a.exec(&["etcdctl", "--endpoints", &majority, "put", "/probe", "x"])
            .status
            .success()
    });

    // One agent record, one task; then an agent in each site.
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.toml");
    std::fs::write(
        &catalog,
        "schema = 1\n[[agents]]\nid = \"S-1\"\nhostname = \"h\"\naddresses = [\"198.18.0.1\"]\n",
    )
    .unwrap();
    lodestar(
        &a,
        &[
            "catalog",
            "put",
            "--etcd",
            &majority,
            catalog.to_str().unwrap(),
        ],
    );
    put_task(&a, &majority, "before.1", "before", "198.18.1.1");
    let args = [
        "--etcd",
        all.as_str(),
        "--dns-listen",
        "127.0.0.1:5353",
        "--http-listen",
        "127.0.0.1:8123",
    ];
    let agent_a = Agent::start_in(&a, &args);
    let agent_b = Agent::start_in(&b, &args);
    for ns in [&a, &b] {
        eventually("both sites to answer", || {
            dig(ns, 5353, "before.marathon.mesos") == ["198.18.1.1"]
        });
    }
    assert!(!stale(&a, &agent_a) && !stale(&b, &agent_b));

    // Cut the WAN link. Site A keeps the quorum and takes a write; site B cannot see it.
    a.exec_ok(&["ip", "link", "set", &wan_a, "down"]);
    put_task(&a, &majority, "during.1", "during", "198.18.1.2");
    eventually("site A to see the write", || {
        dig(&a, 5353, "during.marathon.mesos") == ["198.18.1.2"]
    });
    eventually("site B to say its state is stale", || stale(&b, &agent_b));
    // Site B still answers from its last snapshot.
    assert_eq!(dig(&b, 5353, "before.marathon.mesos"), ["198.18.1.1"]);
    assert!(dig(&b, 5353, "during.marathon.mesos").is_empty());
    assert!(!stale(&a, &agent_a), "the majority side is not stale");
    eventually("site B's log to say so", || {
        agent_b.logs().contains("catalog is stale")
    });

    // Heal: site B converges without a restart.
    a.exec_ok(&["ip", "link", "set", &wan_a, "up"]);
    eventually("site B to converge", || {
        dig(&b, 5353, "during.marathon.mesos") == ["198.18.1.2"]
    });
    eventually("site B to be fresh again", || !stale(&b, &agent_b));

    // A member dies: the other two keep the quorum; both sites follow a new write.
    drop(m2.take());
    put_task(&a, &majority, "after.1", "after", "198.18.1.3");
    for ns in [&a, &b] {
        eventually("both sites to see the write after a member died", || {
            dig(ns, 5353, "after.marathon.mesos") == ["198.18.1.3"]
        });
    }
}
