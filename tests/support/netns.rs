//! Network namespaces for tests: created with `ip netns add`, joined by veth pairs, removed on
//! drop (also when the test fails). Addresses only from 198.18.0.0/15. Needs root.

use std::process::{Command, Output};

fn ip(args: &[&str]) -> Output {
    super::run_ok_or_say(
        Command::new("ip").args(args),
        "`ip` (Debian package iproute2)",
        " (these tests need root: they create network namespaces)",
    )
}

/// A network namespace with a unique name, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("ls-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside the namespace; its output.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .expect("ip netns exec")
    }

    /// `exec`, which must succeed.
    pub fn exec_ok(&self, cmd: &[&str]) -> Output {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(cmd);
        super::run_ok(&mut c, "ip netns exec")
    }

    /// A command prefix that runs a program inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Joins two namespaces with a veth pair; `a_addr`/`b_addr` are CIDRs in 198.18.0.0/15.
/// Returns the interface names (in `a`, in `b`).
pub fn link(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str, tag: &str) -> (String, String) {
    let pid = std::process::id() % 100_000;
    let (ia, ib) = (format!("v{tag}a{pid}"), format!("v{tag}b{pid}"));
    ip(&[
        "link", "add", &ia, "netns", &a.name, "type", "veth", "peer", "name", &ib, "netns", &b.name,
    ]);
    a.exec_ok(&["ip", "addr", "add", a_addr, "dev", &ia]);
    b.exec_ok(&["ip", "addr", "add", b_addr, "dev", &ib]);
    a.exec_ok(&["ip", "link", "set", &ia, "up"]);
    b.exec_ok(&["ip", "link", "set", &ib, "up"]);
    (ia, ib)
}
