//! Two sites on one machine, for the partition test and benchmark: network namespaces A and B
//! joined by a veth "WAN link", a three-member etcd cluster split two (A) to one (B), the
//! catalog's agent record written, and helpers to write tasks, ask DNS and read status in a
//! site. Everything is removed on drop. Needs root.

use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::agent::Agent;
use super::netns::{link, Netns};

pub const A_IP: &str = "198.18.0.1";
pub const B_IP: &str = "198.18.0.2";
/// Where the agents listen inside their namespace.
pub const DNS_PORT: u16 = 5353;

/// One etcd member in a namespace; killed on drop.
pub struct Member {
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
        .arg("--initial-cluster-token=lodestar-two-sites")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    super::die_with_test(&mut cmd);
    Member {
        child: cmd.spawn().expect("etcd (Debian package etcd-server)"),
        _dir: dir,
    }
}

/// Polls `f` every 20 ms until it holds; how long that took, or `None` after `limit`.
pub fn time_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

pub struct TwoSites {
    pub a: Netns,
    pub b: Netns,
    /// Site A's end of the WAN link.
    pub wan: String,
    /// The three members; `members[1]` is the second member in site A.
    pub members: Vec<Option<Member>>,
    /// A member of the majority site.
    pub majority: String,
    /// All members, site A's first.
    pub all: String,
}

impl TwoSites {
    /// Builds the sites, starts the cluster, waits for a leader and writes agent `S-1`.
    pub fn start() -> TwoSites {
        let a = Netns::new("sitea");
        let b = Netns::new("siteb");
        let (wan, _) = link(&a, &format!("{A_IP}/24"), &b, &format!("{B_IP}/24"), "w");
        let cluster =
            format!("m1=http://{A_IP}:12380,m2=http://{A_IP}:22380,m3=http://{B_IP}:12380");
        let members = vec![
            Some(member(&a, "m1", A_IP, 12379, 12380, &cluster)),
            Some(member(&a, "m2", A_IP, 22379, 22380, &cluster)),
            Some(member(&b, "m3", B_IP, 12379, 12380, &cluster)),
        ];
        let majority = format!("http://{A_IP}:12379");
        let all = format!("http://{A_IP}:12379,http://{A_IP}:22379,http://{B_IP}:12379");
        time_until(Duration::from_secs(30), || {
            a.exec(&["etcdctl", "--endpoints", &majority, "put", "/probe", "x"])
                .status
                .success()
        })
        .expect("the etcd cluster elects a leader");
        let catalog = super::TempFile::new(
            "catalog.toml",
            "schema = 1\n[[agents]]\nid = \"S-1\"\nhostname = \"h\"\naddresses = [\"198.18.0.1\"]\n",
        );
        let sites = TwoSites {
            a,
            b,
            wan,
            members,
            majority,
            all,
        };
        assert!(sites.lodestar(
            &sites.a,
            &["catalog", "put", "--etcd", &sites.majority, catalog.arg()]
        ));
        sites
    }

    /// An agent in `ns`, following all three members.
    pub fn agent(&self, ns: &Netns) -> Agent {
        let port = DNS_PORT.to_string();
        let dns = format!("127.0.0.1:{port}");
        Agent::start_in(
            ns,
            &[
                "--etcd",
                &self.all,
                "--dns-listen",
                &dns,
                "--http-listen",
                "127.0.0.1:8123",
            ],
        )
    }

    pub fn cut(&self) {
        self.a.exec_ok(&["ip", "link", "set", &self.wan, "down"]);
    }

    pub fn heal(&self) {
        self.a.exec_ok(&["ip", "link", "set", &self.wan, "up"]);
    }

    /// Runs `lodestar ARGS` in `ns`; did it succeed?
    pub fn lodestar(&self, ns: &Netns, args: &[&str]) -> bool {
        ns.command(env!("CARGO_BIN_EXE_lodestar"))
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Registers a task through site A, retrying while the cluster elects a leader (a member
    /// just died or the link just went down: etcd says "leader changed" for a moment).
    pub fn put_task(&self, id: &str, name: &str, ip: &str) {
        let args = [
            "services",
            "put",
            "--etcd",
            &self.majority,
            "--id",
            id,
            "--name",
            name,
            "--agent",
            "S-1",
            "--ip",
            ip,
        ];
        time_until(Duration::from_secs(30), || self.lodestar(&self.a, &args))
            .expect("etcd takes the write");
    }

    /// `dig +short NAME A` inside a site, sorted.
    pub fn dig(&self, ns: &Netns, name: &str) -> Vec<String> {
        let port = DNS_PORT.to_string();
        let out = ns.exec(&[
            "dig",
            "@127.0.0.1",
            "-p",
            &port,
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

    /// Does `lodestar status` in `ns` say the agent's catalog is stale?
    pub fn stale(&self, ns: &Netns, agent: &Agent) -> bool {
        let out = ns
            .command(env!("CARGO_BIN_EXE_lodestar"))
            .args(["status", "--http", &agent.http.to_string()])
            .output();
        out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("STALE"))
    }
}
