//! A lab for the VIP load balancer: a cgroup of the test's own that the test process joins
//! (so its sockets get the hooks), a client network namespace, and backends each in a
//! namespace of its own behind a veth (198.18.N.2 and 2001:db8:N::2), serving TCP and UDP on
//! port 8080 with their name as the first line. Everything is removed on drop.
//!
//! Moving the test process into a cgroup needs one test per process (cargo nextest's model);
//! a process-wide lock keeps `cargo test`'s threads from sharing one anyway.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::netns::Netns;

static ONE_LAB: Mutex<()> = Mutex::new(());

/// The root of the cgroup v2 hierarchy, from /proc/mounts.
pub fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts");
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("these tests need a cgroup v2 hierarchy mounted (none in /proc/mounts)")
}

/// A cgroup v2 directory the test process is moved into; moved back and removed on drop.
pub struct Cgroup {
    pub path: PathBuf,
    home: PathBuf,
    _one: MutexGuard<'static, ()>,
}

impl Cgroup {
    pub fn enter(tag: &str) -> Cgroup {
        let one = ONE_LAB.lock().unwrap_or_else(|p| p.into_inner());
        let root = cgroup2_root();
        let me = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
        let rel = me
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a cgroup v2 membership")
            .trim_start_matches('/')
            .to_string();
        let home = root.join(rel);
        let path = root.join(format!("lodestar-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).unwrap_or_else(|e| {
            panic!(
                "cannot create cgroup {}: {e} (these tests need root)",
                path.display()
            )
        });
        std::fs::write(path.join("cgroup.procs"), std::process::id().to_string())
            .unwrap_or_else(|e| panic!("cannot join cgroup {}: {e}", path.display()));
        Cgroup {
            path,
            home,
            _one: one,
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(
            self.home.join("cgroup.procs"),
            std::process::id().to_string(),
        );
        // Children still in it (an agent being killed) move home too.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            if let Ok(procs) = std::fs::read_to_string(self.path.join("cgroup.procs")) {
                for pid in procs.lines() {
                    let _ = std::fs::write(self.home.join("cgroup.procs"), pid);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs `f` on a thread inside `ns` (sockets it creates belong to that namespace).
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_ns(ns);
            f()
        })
        .join()
        .expect("thread in namespace panicked")
    })
}

fn enter_ns(ns: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("netns file");
    // SAFETY: setns on an open namespace file; affects this thread only.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
}

pub const PORT: u16 = 8080;
/// Each backend's HTTP server (200, or 503 while `sick`), behind VIP 198.19.0.2:80.
pub const HTTP_PORT: u16 = 8081;

pub struct Backend {
    pub name: String,
    pub ns: Netns,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    stop: Mutex<Arc<AtomicBool>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// The HTTP server on `HTTP_PORT` answers 503 while set.
    pub sick: Arc<AtomicBool>,
}

impl Backend {
    /// Stops its servers: new connections are refused (open ones carry on).
    pub fn kill(&self) {
        self.stop.lock().unwrap().store(true, Ordering::Relaxed);
        for t in self.threads.lock().unwrap().drain(..) {
            let _ = t.join();
        }
    }

    /// Starts its servers again.
    pub fn revive(&self) {
        *self.stop.lock().unwrap() = Arc::new(AtomicBool::new(false));
        let threads = serve(self);
        *self.threads.lock().unwrap() = threads;
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.lock().unwrap().store(true, Ordering::Relaxed);
    }
}

pub struct Lab {
    pub client: Netns,
    pub backends: Vec<Backend>,
    pub pin: PathBuf,
    // Dropped last: processes leave it before it goes.
    pub cgroup: Cgroup,
}

impl Lab {
    /// `n` backends named b1..bn.
    pub fn new(tag: &str, n: u8) -> Lab {
        let cgroup = Cgroup::enter(tag);
        let client = Netns::new(&format!("{tag}c"));
        let mut backends = Vec::new();
        for i in 1..=n {
            backends.push(backend_behind(&client, tag, i).0);
        }
        let pin = PathBuf::from(format!(
            "/sys/fs/bpf/lodestar-test-{tag}-{}",
            std::process::id()
        ));
        Lab {
            client,
            backends,
            pin,
            cgroup,
        }
    }

    /// Agent flags that put the load balancer on this lab's cgroup and pin directory.
    pub fn agent_args(&self) -> Vec<String> {
        vec![
            "--l4lb-cgroup".into(),
            self.cgroup.path.display().to_string(),
            "--l4lb-pin-path".into(),
            self.pin.display().to_string(),
            "--l4lb-required".into(),
            // The only ranges the tests' VIPs may be in (the network rule's).
            "--l4lb-vip-range".into(),
            "198.18.0.0/15".into(),
            "--l4lb-vip-range".into(),
            "2001:db8::/32".into(),
        ]
    }

    /// `lodestar services put` for backend `i` (1-based) with VIPs on TCP and UDP 8080, for
    /// both families, plus any extra flags.
    pub fn put_backend(&self, etcd: &str, i: usize, extra: &[&str]) {
        let b = &self.backends[i - 1];
        let mut args: Vec<String> = [
            "services",
            "put",
            "--etcd",
            etcd,
            "--id",
            &b.name,
            "--name",
            "web",
            "--agent",
            "a1",
            "--ip",
            &b.v4.to_string(),
            "--ip",
            &b.v6.to_string(),
            "--port",
            "8080",
            "--port",
            "8080/udp",
            "--port",
            "8081",
            "--vip",
            "8081/tcp=198.19.0.2:80",
            "--vip",
            "8080/tcp=198.19.0.1:80",
            "--vip",
            "8080/tcp=[2001:db8:ffff::1]:80",
            "--vip",
            "8080/udp=198.19.0.1:53",
            "--vip",
            "8080/udp=[2001:db8:ffff::1]:53",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        super::lodestar_ok(&args);
    }

    /// A catalog document (for `--catalog`) with every backend behind the TCP VIPs
    /// 198.19.0.1:80 (echo, port 8080) and 198.19.0.2:80 (HTTP, port 8081).
    pub fn catalog_toml(&self) -> String {
        let mut doc = String::from("schema = 1\n");
        for b in &self.backends {
            doc.push_str(&format!(
                "[[tasks]]\nid = \"{n}\"\nname = \"web\"\nframework = \"marathon\"\n\
                 agent = \"a1\"\nips = [{{ ip = \"{v4}\", source = \"netinfo\" }}]\n\
                 [tasks.discovery]\nname = \"web\"\n\
                 [[tasks.discovery.ports]]\nnumber = {PORT}\nprotocol = \"tcp\"\n\
                 labels = {{ VIP_0 = \"198.19.0.1:80\" }}\n\
                 [[tasks.discovery.ports]]\nnumber = {HTTP_PORT}\nprotocol = \"tcp\"\n\
                 labels = {{ VIP_0 = \"198.19.0.2:80\" }}\n",
                n = b.name,
                v4 = b.v4
            ));
        }
        doc
    }

    pub fn remove_backend(&self, etcd: &str, i: usize) {
        let name = self.backends[i - 1].name.clone();
        super::lodestar_ok(&[
            "services".into(),
            "rm".into(),
            "--etcd".into(),
            etcd.into(),
            name,
        ]);
    }

    pub fn detach(&self) -> std::process::Output {
        let pin = self.pin.display().to_string();
        super::lodestar(&["l4lb", "detach", "--pin-path", &pin])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Whatever the test left pinned goes (a no-op after a successful detach).
        let _ = self.detach();
    }
}

pub const VIP4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1));
pub const VIP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1));

/// Backend `i` in a namespace of its own behind a veth from `front` (front side 198.18.i.1 and
/// 2001:db8:i::1, backend 198.18.i.2 and 2001:db8:i::2, routed back through the front), with
/// its servers running. Also the interface names (front side, backend side).
pub fn backend_behind(front: &Netns, tag: &str, i: u8) -> (Backend, String, String) {
    let ns = Netns::new(&format!("{tag}b{i}"));
    let (ci, bi) = super::netns::link(
        front,
        &format!("198.18.{i}.1/24"),
        &ns,
        &format!("198.18.{i}.2/24"),
        // Interface names have 15 bytes: v + 3 + index + a/b + pid.
        &format!("{}{i}", &tag[..tag.len().min(3)]),
    );
    front.exec_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("2001:db8:{i}::1/64"),
        "dev",
        &ci,
        "nodad",
    ]);
    ns.exec_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("2001:db8:{i}::2/64"),
        "dev",
        &bi,
        "nodad",
    ]);
    // Replies find the client whatever source address it used (DNAT keeps it).
    ns.exec_ok(&[
        "ip",
        "route",
        "add",
        "default",
        "via",
        &format!("198.18.{i}.1"),
    ]);
    let b = Backend {
        name: format!("b{i}"),
        v4: Ipv4Addr::new(198, 18, i, 2),
        v6: format!("2001:db8:{i}::2").parse().unwrap(),
        ns,
        stop: Mutex::new(Arc::new(AtomicBool::new(false))),
        threads: Mutex::new(Vec::new()),
        sick: Arc::new(AtomicBool::new(false)),
    };
    ns_default_v6(&b.ns, &format!("2001:db8:{i}::1"));
    b.revive();
    (b, ci, bi)
}

fn ns_default_v6(ns: &Netns, via: &str) {
    ns.exec_ok(&["ip", "-6", "route", "add", "default", "via", via]);
}

/// Extra TCP echo and UDP servers (the same protocols as the backends') on `addr` inside
/// `ns`, until the process ends.
pub fn listen_echo(ns: &str, addr: SocketAddr, name: &str) {
    let (l, u) = in_ns(ns, || {
        (
            TcpListener::bind(addr).expect("bind extra echo listener"),
            UdpSocket::bind(addr).expect("bind extra UDP server"),
        )
    });
    let reply_name = name.to_string();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = u.recv_from(&mut buf) {
            let mut reply = format!("{reply_name}:").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = u.send_to(&reply, from);
        }
    });
    let name = name.to_string();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let name = name.clone();
            std::thread::spawn(move || echo(c, &name));
        }
    });
}

/// TCP and UDP servers on port 8080 (both families) inside the backend's namespace: TCP says
/// the backend's name, then echoes lines; UDP answers `name:payload`. And an HTTP server on
/// 8081. Returns the server threads (they end when `stop` is set).
fn serve(b: &Backend) -> Vec<std::thread::JoinHandle<()>> {
    let ns = b.ns.name.clone();
    let name = b.name.clone();
    let stop_flag = b.stop.lock().unwrap().clone();
    let mut threads = Vec::new();
    let (tcp, http, udp) = in_ns(&ns, || {
        let tcp: Vec<TcpListener> = [IpAddr::V4(b.v4), IpAddr::V6(b.v6)]
            .iter()
            .map(|ip| TcpListener::bind(SocketAddr::new(*ip, PORT)).expect("bind backend tcp"))
            .collect();
        let http = TcpListener::bind(SocketAddr::new(IpAddr::V4(b.v4), HTTP_PORT))
            .expect("bind backend http");
        let udp: Vec<UdpSocket> = [IpAddr::V4(b.v4), IpAddr::V6(b.v6)]
            .iter()
            .map(|ip| UdpSocket::bind(SocketAddr::new(*ip, PORT)).expect("bind backend udp"))
            .collect();
        (tcp, http, udp)
    });
    let mut listeners: Vec<(TcpListener, bool)> = tcp.into_iter().map(|l| (l, false)).collect();
    listeners.push((http, true));
    for (l, is_http) in listeners {
        let (name, stop, sick) = (name.clone(), stop_flag.clone(), b.sick.clone());
        l.set_nonblocking(true).unwrap();
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let name = name.clone();
                        let sick = sick.load(Ordering::Relaxed);
                        std::thread::spawn(move || {
                            if is_http {
                                http_reply(c, &name, sick)
                            } else {
                                echo(c, &name)
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }));
    }
    for u in udp {
        let (name, stop) = (name.clone(), stop_flag.clone());
        u.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = u.recv_from(&mut buf) {
                    let mut reply = format!("{name}:").into_bytes();
                    reply.extend_from_slice(&buf[..n]);
                    let _ = u.send_to(&reply, from);
                }
            }
        }));
    }
    threads
}

/// Reads a request head and answers 200 (or 503 when sick) with the backend's name.
fn http_reply(mut c: TcpStream, name: &str, sick: bool) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 4096 {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let status = if sick {
        "503 Service Unavailable"
    } else {
        "200 OK"
    };
    let _ = write!(
        c,
        "HTTP/1.0 {status}\r\nContent-Length: {}\r\n\r\n{name}\n",
        name.len() + 1
    );
}

fn echo(c: TcpStream, name: &str) {
    let _ = c.set_nonblocking(false);
    let mut w = match c.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    if w.write_all(format!("{name}\n").as_bytes()).is_err() {
        return;
    }
    let mut lines = BufReader::new(c).lines();
    while let Some(Ok(line)) = lines.next() {
        if w.write_all(format!("{line}\n").as_bytes()).is_err() {
            return;
        }
    }
}

/// A TCP connection through a VIP: which backend answered, and the peer the socket reports.
pub struct Conn {
    pub backend: String,
    pub peer: SocketAddr,
    pub stream: TcpStream,
}

pub fn connect(vip: SocketAddr) -> std::io::Result<Conn> {
    let stream = TcpStream::connect_timeout(&vip, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let peer = stream.peer_addr()?;
    let mut first = String::new();
    BufReader::new(stream.try_clone()?).read_line(&mut first)?;
    Ok(Conn {
        backend: first.trim().to_string(),
        peer,
        stream,
    })
}

/// Sends a line on an open connection and reads it back.
pub fn ping(c: &mut Conn) -> std::io::Result<()> {
    c.stream.write_all(b"ping\n")?;
    let mut buf = [0u8; 5];
    c.stream.read_exact(&mut buf)?;
    if &buf != b"ping\n" {
        return Err(std::io::Error::other("bad echo"));
    }
    Ok(())
}

/// One unconnected UDP exchange through a VIP: (backend, the address the reply came from).
pub fn udp_exchange(vip: SocketAddr) -> std::io::Result<(String, SocketAddr)> {
    let bind: SocketAddr = if vip.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let s = UdpSocket::bind(bind)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.send_to(b"hi", vip)?;
    let mut buf = [0u8; 64];
    let (n, from) = s.recv_from(&mut buf)?;
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    let backend = text.strip_suffix(":hi").unwrap_or(&text).to_string();
    Ok((backend, from))
}

/// Program ids attached to a cgroup (bpftool).
pub fn attached_programs(cgroup: &std::path::Path) -> Vec<u64> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(cgroup)
        .output()
        .expect("bpftool (Debian package bpftool)");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .map(|a| a.iter().filter_map(|p| p["id"].as_u64()).collect())
        .unwrap_or_default()
}

/// Is `path` gone (and nothing of ours pinned there)?
pub fn gone(path: &Path) -> bool {
    !path.exists()
}

/// A lab with `n` backends registered in a fresh etcd (`extra[i]`: flags for backend i+1).
pub fn lab(tag: &str, n: u8, extra: &[&[&str]]) -> (Lab, super::etcd::EtcdServer) {
    let lab = Lab::new(tag, n);
    let etcd = super::etcd::EtcdServer::start();
    for i in 1..=n as usize {
        lab.put_backend(
            &etcd.endpoint(),
            i,
            extra.get(i - 1).copied().unwrap_or(&[]),
        );
    }
    (lab, etcd)
}

/// The agent on the lab's etcd, with the load balancer on the lab's cgroup.
pub fn start_agent(
    lab: &Lab,
    etcd: &super::etcd::EtcdServer,
    more: &[&str],
) -> super::agent::Agent {
    let ep = etcd.endpoint();
    let extra = lab.agent_args();
    let mut args = vec!["--etcd", ep.as_str()];
    args.extend(extra.iter().map(String::as_str));
    args.extend(more);
    super::agent::Agent::start(&args)
}

/// The agent inside the client namespace (it must reach the backends itself), on a catalog
/// file and a config file, with the load balancer on the lab's cgroup.
pub fn agent_on_files(lab: &Lab, catalog: &Path, config: &Path) -> super::agent::Agent {
    let extra = lab.agent_args();
    let mut args = vec![
        "--catalog",
        catalog.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    args.extend(extra.iter().map(String::as_str));
    super::agent::Agent::start_in(&lab.client, &args)
}

/// The agent's `/v1/vips`.
pub fn vips(agent: &super::agent::Agent) -> serde_json::Value {
    serde_json::from_str(&super::http::http_get(agent.http, "/v1/vips")).expect("/v1/vips is JSON")
}

/// One VIP address's entry in a `/v1/vips` answer.
pub fn vip_status(all: &serde_json::Value, address: &str) -> serde_json::Value {
    all.as_array()
        .and_then(|a| {
            a.iter()
                .find(|v| v["address"] == address && v["protocol"] == "tcp")
        })
        .cloned()
        .unwrap_or_else(|| panic!("no VIP {address} in {all}"))
}

/// A backend's entry in one VIP's status.
pub fn backend_status(vip: &serde_json::Value, backend: &str) -> serde_json::Value {
    vip["backends"]
        .as_array()
        .and_then(|a| a.iter().find(|b| b["address"] == backend))
        .cloned()
        .unwrap_or_else(|| panic!("no backend {backend} in {vip}"))
}

/// Polls (bounded) until `f` holds; how long it took.
pub fn within(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = std::time::Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "gave up after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}
