//! The real `lodestar agent` binary on free loopback ports: started with JSON logs, ready when
//! it logs "lodestar agent ready" (whose fields give its addresses), killed on drop. Its log is
//! printed when the test fails.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Agent {
    child: Option<Child>,
    /// Holds the agent's catalog cache unless the test names its own.
    _dir: tempfile::TempDir,
    pub dns: SocketAddr,
    pub http: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    /// Starts `lodestar agent ARGS` on 127.0.0.1:0 for DNS and HTTP (unless ARGS say otherwise).
    pub fn start(args: &[&str]) -> Agent {
        Self::try_start(args).unwrap_or_else(|log| panic!("the agent did not get ready:\n{log}"))
    }

    /// Like `start`, but returns the log instead of panicking when it does not get ready.
    pub fn try_start(args: &[&str]) -> Result<Agent, String> {
        Self::try_start_in(None, args)
    }

    /// Starts the agent inside a network namespace.
    pub fn start_in(ns: &super::netns::Netns, args: &[&str]) -> Agent {
        Self::try_start_in(Some(ns), args)
            .unwrap_or_else(|log| panic!("the agent did not get ready:\n{log}"))
    }

    /// Starts a given `lodestar` binary with a given log filter (benchmarks: less logging).
    pub fn start_binary(binary: &std::path::Path, args: &[&str], log_filter: &str) -> Agent {
        Self::launch(binary, None, args, log_filter)
            .unwrap_or_else(|log| panic!("the agent did not get ready:\n{log}"))
    }

    /// The agent's process id (for reading its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn try_start_in(ns: Option<&super::netns::Netns>, args: &[&str]) -> Result<Agent, String> {
        let binary = std::path::Path::new(env!("CARGO_BIN_EXE_lodestar"));
        Self::launch(binary, ns, args, "info,lodestar_dns=debug")
    }

    fn launch(
        binary: &std::path::Path,
        ns: Option<&super::netns::Netns>,
        args: &[&str],
        log_filter: &str,
    ) -> Result<Agent, String> {
        let mut cmd = Command::new(binary);
        // Only the network namespace changes (setns before exec): `ip netns exec` would also
        // remount /sys, hiding the cgroup2 and bpffs mounts the VIP load balancer uses.
        let netns = ns.map(|ns| {
            std::fs::File::open(format!("/var/run/netns/{}", ns.name)).expect("netns file")
        });
        if let Some(f) = &netns {
            use std::os::fd::AsRawFd;
            let fd = f.as_raw_fd();
            // SAFETY: setns is a plain syscall, safe between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd.args(["--log-format", "json", "agent"]);
        // The VIP load balancer only where a test gives it a cgroup of its own: attached at the
        // root it would steer every process on the machine.
        if !args.contains(&"--l4lb-cgroup") && !args.contains(&"--l4lb-pin-path") {
            cmd.arg("--no-l4lb");
        }
        if !args.contains(&"--dns-listen") {
            cmd.args(["--dns-listen", "127.0.0.1:0"]);
        }
        if !args.contains(&"--http-listen") {
            cmd.args(["--http-listen", "127.0.0.1:0"]);
        }
        // The loop probe asks the upstreams at start: without upstreams given, those are the
        // machine's own resolvers (/etc/resolv.conf), which tests must never reach.
        if !args.contains(&"--upstream") {
            cmd.arg("--no-loop-probe");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        if !args.contains(&"--cache-file") {
            cmd.arg("--cache-file")
                .arg(dir.path().join("catalog-cache.json"));
        }
        cmd.args(args)
            .env_remove("LODESTAR_ETCD")
            .env("LODESTAR_LOG", log_filter)
            .stdin(Stdio::null());
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        let child = super::command::spawn_reading_stderr(&mut cmd, "lodestar agent", move |line| {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["fields"]["message"] == "lodestar agent ready" {
                    let _ = tx.send(v["fields"].clone());
                }
            }
            sink.lock().unwrap().push(line);
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut agent = Agent {
            child: Some(child),
            _dir: dir,
            dns: "0.0.0.0:0".parse().unwrap(),
            http: "0.0.0.0:0".parse().unwrap(),
            log,
        };
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(fields) => {
                    let dns = fields["dns"].as_str().unwrap_or_default();
                    agent.dns = dns
                        .split(',')
                        .next()
                        .unwrap_or_default()
                        .parse()
                        .expect("dns address");
                    agent.http = fields["http"]
                        .as_str()
                        .unwrap_or_default()
                        .parse()
                        .expect("http address");
                    return Ok(agent);
                }
                Err(_) if Instant::now() > deadline => return Err(agent.logs()),
                Err(_) => {
                    if let Some(Ok(Some(_))) = agent.child.as_mut().map(|c| c.try_wait()) {
                        std::thread::sleep(Duration::from_millis(100));
                        return Err(agent.logs());
                    }
                }
            }
        }
    }

    pub fn logs(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Agent {
    /// Stops the agent as an operator would (SIGTERM, SIGKILL after 10 s), so that what it
    /// made on the machine goes with it: a demo agent's blackhole routes, a listen interface.
    fn drop(&mut self) {
        self.terminate();
        if std::thread::panicking() {
            eprintln!("---- lodestar agent log ----\n{}\n----", self.logs());
        }
    }
}
