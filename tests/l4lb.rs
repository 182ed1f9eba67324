//! The socket-level VIP load balancer end to end: real etcd, the real agent, the real BPF
//! programs attached to a cgroup the test process joins, backends in network namespaces.
//! Needs root (cgroups, namespaces, BPF); fails saying so otherwise.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use support::agent::Agent;
use support::l4lb::{
    attached_programs, connect, in_ns, lab, ping, start_agent, udp_exchange, vips, within, Lab,
    VIP4, VIP6,
};
use support::{assert_contains_all, assert_metric_at_least, http_get, lodestar_ok, TempFile};

#[test]
fn tcp_and_udp_reach_every_backend_over_both_families() {
    let (lab, etcd) = lab("spread", 3, &[]);
    let agent = start_agent(&lab, &etcd, &[]);
    let client = lab.client.name.clone();
    in_ns(&client, || {
        for vip in [VIP4, VIP6] {
            let addr = SocketAddr::new(vip, 80);
            let mut counts: BTreeMap<String, u32> = BTreeMap::new();
            for _ in 0..300 {
                let c = connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
                assert_eq!(c.peer, addr, "getpeername shows the VIP, not the backend");
                *counts.entry(c.backend).or_default() += 1;
            }
            assert_eq!(counts.len(), 3, "every backend over {addr}: {counts:?}");
            // 100 expected each; 60 is more than 4 standard deviations below.
            assert!(
                counts.values().all(|n| *n >= 60),
                "roughly even over {addr}: {counts:?}"
            );

            // Unconnected UDP: replies come from the VIP (recvmsg translates back).
            let udp = SocketAddr::new(vip, 53);
            let mut seen = BTreeSet::new();
            for _ in 0..60 {
                let (b, from) = udp_exchange(udp).unwrap_or_else(|e| panic!("udp {udp}: {e}"));
                assert_eq!(from, udp, "the reply's source is the VIP");
                seen.insert(b);
            }
            assert_eq!(seen.len(), 3, "every backend over UDP {udp}: {seen:?}");

            // Connected UDP: connect() picks the backend, getpeername shows the VIP.
            let bind = if vip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let s = std::net::UdpSocket::bind(bind).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s.connect(udp).unwrap();
            assert_eq!(s.peer_addr().unwrap(), udp);
            s.send(b"x").unwrap();
            let mut buf = [0u8; 16];
            let n = s.recv(&mut buf).expect("connected UDP reply");
            assert!(buf[..n].starts_with(b"b"), "{:?}", &buf[..n]);
        }
        // A dual-stack IPv6 socket reaching the IPv4 VIP as ::ffff:198.19.0.1.
        let mapped: SocketAddr = "[::ffff:198.19.0.1]:80".parse().unwrap();
        let c = connect(mapped).expect("v4-mapped connect");
        assert_eq!(c.peer, mapped);
        assert!(c.backend.starts_with('b'));
    });

    // Counters: per VIP and per backend, on /v1/vips and /metrics.
    let v = vips(&agent);
    let tcp4 = v
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == "198.19.0.1:80" && s["protocol"] == "tcp")
        .expect("the IPv4 TCP VIP");
    assert!(tcp4["connects"].as_u64().unwrap() >= 301, "{tcp4}");
    let per_backend: u64 = tcp4["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["connects"].as_u64().unwrap())
        .sum();
    assert_eq!(per_backend, tcp4["connects"].as_u64().unwrap());
    let m = http_get(agent.http, "/metrics");
    assert_metric_at_least(
        &m,
        "lodestar_vip_datagrams_total{vip=\"198.19.0.1:53/udp\",address=\"198.19.0.1:53\",protocol=\"udp\"}",
        60,
    );

    // `lodestar vips ls --agent` shows backends, weights, health and counters.
    let text = lodestar_ok(&["vips", "ls", "--agent", &agent.http.to_string()]);
    assert_contains_all(
        &text,
        &[
            "198.19.0.1:80/tcp",
            "3/3 healthy",
            "-> 198.18.2.2:8080",
            "weight=1",
        ],
    );
}

#[test]
fn removed_backend_stops_getting_connections_and_draining_keeps_open_ones() {
    let (lab, etcd) = lab("drain", 3, &[]);
    let ep = etcd.endpoint();
    let _agent = start_agent(&lab, &etcd, &[]);
    let client = lab.client.name.clone();
    let vip = SocketAddr::new(VIP4, 80);

    // Open one connection to each backend.
    let mut open: BTreeMap<String, support::l4lb::Conn> = BTreeMap::new();
    in_ns(&client, || {
        within(
            Duration::from_secs(10),
            "a connection to every backend",
            || {
                let c = connect(vip).expect("connect");
                open.entry(c.backend.clone()).or_insert(c);
                open.len() == 3
            },
        );
    });

    // Drain b2: no new connections, its open one keeps working.
    lab.put_backend(&ep, 2, &["--state", "draining"]);
    in_ns(&client, || {
        within(Duration::from_secs(5), "b2 drained", || {
            (0..30).all(|_| connect(vip).expect("connect").backend != "b2")
        });
        for _ in 0..200 {
            assert_ne!(
                connect(vip).unwrap().backend,
                "b2",
                "a draining backend got a new connection"
            );
        }
        ping(open.get_mut("b2").unwrap())
            .expect("the draining backend's open connection still works");
    });

    // Remove b3 from etcd: no new connections within a bounded wait.
    lab.remove_backend(&ep, 3);
    in_ns(&client, || {
        let took = within(Duration::from_secs(5), "b3 removed", || {
            (0..30).all(|_| connect(vip).expect("connect").backend != "b3")
        });
        eprintln!("removed backend stopped getting connections after {took:?}");
        for _ in 0..200 {
            assert_ne!(connect(vip).unwrap().backend, "b3");
        }
        ping(open.get_mut("b1").unwrap()).expect("b1 untouched");
    });
}

#[test]
fn all_unhealthy_fails_open_and_no_backend_is_refused() {
    let (lab, etcd) = lab(
        "failopen",
        2,
        &[&["--health", "unhealthy"], &["--health", "healthy"]],
    );
    let ep = etcd.endpoint();
    let agent = start_agent(&lab, &etcd, &[]);
    let client = lab.client.name.clone();
    let vip = SocketAddr::new(VIP4, 80);
    in_ns(&client, || {
        for _ in 0..50 {
            assert_eq!(
                connect(vip).unwrap().backend,
                "b2",
                "the unhealthy backend is skipped"
            );
        }
    });
    lab.put_backend(&ep, 2, &["--health", "unhealthy"]);
    in_ns(&client, || {
        within(
            Duration::from_secs(5),
            "both backends in use (fail-open)",
            || {
                let seen: BTreeSet<String> =
                    (0..40).map(|_| connect(vip).unwrap().backend).collect();
                seen.len() == 2
            },
        );
    });
    let v = vips(&agent);
    let tcp4 = v
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == "198.19.0.1:80")
        .unwrap();
    assert_eq!(tcp4["fail_open"], true, "{tcp4}");
    assert!(agent.logs().contains("failing open"), "fail-open is logged");
    assert!(tcp4["fail_open_steered"].as_u64().unwrap() > 0, "{tcp4}");

    // Every backend draining: nothing to send to. connect() fails at once, counted.
    lab.put_backend(&ep, 1, &["--state", "draining"]);
    lab.put_backend(&ep, 2, &["--state", "draining"]);
    in_ns(&client, || {
        within(
            Duration::from_secs(5),
            "the VIP refused",
            || matches!(connect(vip), Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied),
        );
        let start = Instant::now();
        assert!(connect(vip).is_err());
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "refused at once, not timed out"
        );
    });
    let m = http_get(agent.http, "/metrics");
    assert_metric_at_least(
        &m,
        "lodestar_vip_no_backend_total{vip=\"198.19.0.1:80/tcp\",address=\"198.19.0.1:80\",protocol=\"tcp\"}",
        1,
    );
}

#[test]
fn agent_restart_fails_no_connection_and_detach_leaves_nothing() {
    let (lab, etcd) = lab("restart", 2, &[]);
    let ep = etcd.endpoint();
    let mut agent = start_agent(&lab, &etcd, &[]);

    // A second agent on the same node (same pins) is refused.
    let second = {
        let extra = lab.agent_args();
        let mut args = vec!["--etcd", ep.as_str()];
        args.extend(extra.iter().map(String::as_str));
        Agent::try_start(&args)
    };
    let log = second.err().expect("a second agent must not start");
    assert!(log.contains("another lodestar agent is running"), "{log}");
    // And detach under a running agent is refused.
    let out = lab.detach();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another lodestar agent"));

    // Connections keep going while the agent stops and a new one takes over.
    let client = lab.client.name.clone();
    let vip = SocketAddr::new(VIP4, 80);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (made, failed) = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            in_ns(&client, || {
                let (mut made, mut failed) = (0u32, Vec::new());
                let start = Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && made < 20_000
                    && start.elapsed() < Duration::from_secs(60)
                {
                    match connect(vip) {
                        Ok(_) => made += 1,
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (made, failed)
            })
        });
        std::thread::sleep(Duration::from_millis(300));
        agent.terminate();
        std::thread::sleep(Duration::from_millis(500));
        agent = start_agent(&lab, &etcd, &[]);
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        worker.join().unwrap()
    });
    assert!(made > 100, "only {made} connections made");
    assert!(
        failed.is_empty(),
        "{} of {made} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let logs = agent.logs();
    assert!(
        logs.contains("\"took_over_links\":9"),
        "the new agent took the pinned links over: {logs}"
    );
    // The new agent goes on from the pinned state: one more backend is a few writes.
    lab.put_backend(&ep, 1, &["--label", "LODESTAR_WEIGHT=3"]);
    within(Duration::from_secs(5), "weight 3 programmed", || {
        let v = vips(&agent);
        v.as_array().unwrap().iter().any(|s| {
            s["address"] == "198.19.0.1:80"
                && s["backends"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|b| b["slots"] == 3)
        })
    });

    // Detach: programs off the cgroup, pins gone, programs unloaded.
    let prog_ids = attached_programs(&lab.cgroup.path);
    assert_eq!(prog_ids.len(), 9, "nine hooks attached");
    agent.terminate();
    assert_eq!(
        attached_programs(&lab.cgroup.path).len(),
        9,
        "still attached with no agent running"
    );
    let out = lab.detach();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        attached_programs(&lab.cgroup.path).is_empty(),
        "nothing attached after detach"
    );
    assert!(!lab.pin.exists(), "pin directory removed");
    within(Duration::from_secs(5), "programs unloaded", || {
        prog_ids.iter().all(|id| {
            !std::process::Command::new("bpftool")
                .args(["prog", "show", "id", &id.to_string()])
                .output()
                .unwrap()
                .status
                .success()
        })
    });
    // With nothing attached, the VIP is just an unrouted address again.
    in_ns(&client, || {
        assert!(connect(vip).is_err());
    });
}

#[test]
fn without_privilege_the_agent_says_what_is_missing() {
    let lab = Lab::new("noperm", 1);
    let run = |required: bool| {
        // The embedded demo catalog (it has VIPs), so nothing needs reading as `nobody`.
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lodestar"));
        cmd.args([
            "agent",
            "--no-loop-probe",
            "--dns-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(lab.agent_args().iter().filter(|a| *a != "--l4lb-required"));
        if required {
            cmd.arg("--l4lb-required");
        }
        // SAFETY: setgid/setuid between fork and exec, to the unprivileged `nobody`.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
                let done = l.contains("lodestar agent ready");
                lines.push(l);
                if done {
                    break;
                }
            }
            if let Ok(Some(_)) = child.try_wait() {
                while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
                    lines.push(l);
                }
                break;
            }
        }
        let status = child.try_wait().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        (status, lines.join("\n"))
    };
    // Not required: DNS keeps running, the log says what is missing.
    let (status, log) = run(false);
    assert!(status.is_none(), "the agent keeps running: {log}");
    assert!(log.contains("lodestar agent ready"), "{log}");
    assert!(log.contains("VIP load balancer not running"), "{log}");
    assert!(log.contains("needs root"), "{log}");
    // Required: it refuses to start, saying why.
    let (status, log) = run(true);
    assert!(status.is_some_and(|s| !s.success()), "{log}");
    assert!(
        log.contains("required") && log.contains("needs root"),
        "{log}"
    );
}

#[test]
fn vips_keep_steering_while_etcd_is_down_and_across_a_restart_without_it() {
    let (lab, mut etcd) = lab("etcdgone", 2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.json");
    let cache_arg = cache.to_str().unwrap().to_string();
    let mut agent = start_agent(&lab, &etcd, &["--cache-file", &cache_arg]);
    within(
        Duration::from_secs(10),
        "the catalog cached on disk",
        || cache.exists(),
    );
    let client = lab.client.name.clone();
    let vip = SocketAddr::new(VIP4, 80);
    let both = |what: &str| {
        in_ns(&client, || {
            let mut seen = BTreeSet::new();
            within(Duration::from_secs(5), what, || {
                seen.insert(connect(vip).expect("connect").backend);
                seen.len() == 2
            });
        })
    };
    both("both backends");

    // etcd dies: the maps are the kernel's, nothing about steering needs etcd.
    etcd.stop();
    both("both backends with etcd down");

    // The agent restarts while etcd is still down: it serves the snapshot it kept on disk,
    // says so, takes the pinned maps over and keeps them as they are.
    agent.terminate();
    let agent = start_agent(&lab, &etcd, &["--cache-file", &cache_arg]);
    assert!(
        agent
            .logs()
            .contains("serving the catalog cached on local disk"),
        "{}",
        agent.logs()
    );
    assert!(
        agent.logs().contains("\"took_over_links\":9"),
        "{}",
        agent.logs()
    );
    both("both backends after a restart without etcd");
    let status: serde_json::Value =
        serde_json::from_str(&http_get(agent.http, "/v1/status")).unwrap();
    assert_eq!(status["catalog"]["from_local_cache"], true, "{status}");
    assert_eq!(
        status["l4lb"]["vips"].as_array().map(Vec::len),
        Some(5),
        "{status}"
    );
}

#[test]
fn an_agent_without_the_socket_path_detaches_the_one_left_pinned() {
    let (lab, etcd) = lab("off", 1, &[]);
    let mut agent = start_agent(&lab, &etcd, &[]);
    agent.terminate();
    assert_eq!(
        attached_programs(&lab.cgroup.path).len(),
        9,
        "pinned and attached"
    );
    // Next on this node: an agent that only decapsulates GUE (no socket path). It must not
    // leave the old hooks steering with maps nobody updates any more.
    let client_if = String::from_utf8_lossy(
        &lab.client
            .exec_ok(&["ip", "-o", "link", "show", "type", "veth"])
            .stdout,
    )
    .split(':')
    .nth(1)
    .and_then(|s| s.trim().split('@').next().map(String::from))
    .expect("the client's veth");
    let cfg = TempFile::new(
        "agent.toml",
        format!("[l4lb]\nsocket = false\nvip_ranges = [\"198.18.0.0/15\"]\n[l4lb.xdp]\ndecap_interfaces = [\"{client_if}\"]\ngue_sources = [\"198.18.0.1\"]\n"),
    );
    let pin = lab.pin.display().to_string();
    let agent = Agent::start_in(
        &lab.client,
        &["--config", cfg.arg(), "--l4lb-pin-path", &pin],
    );
    assert!(
        attached_programs(&lab.cgroup.path).is_empty(),
        "the socket hooks are detached"
    );
    assert!(
        agent.logs().contains("detaching the socket path"),
        "{}",
        agent.logs()
    );
}

/// A VIP whose backend is a bridge-mode task (Docker `BRIDGE`, `network-scope: host`): its
/// container address is unreachable from other hosts, and it listens only on its agent's
/// address and host port. The backend is that, as dcos-l4lb makes it, not the container
/// address and the port the container listens on.
#[test]
fn a_bridge_mode_backend_is_reached_at_its_agent_and_host_port() {
    use lodestar_control::file::CatalogDocument;
    use lodestar_control::model::{
        Agent as MesosAgent, IpSource, NetworkScope, Port, Task, SCHEMA_VERSION,
    };

    let lab = Lab::new("bridge", 0);
    // The agent's host: 198.18.1.2 behind the client's namespace. The task's servers listen
    // only on the agent's address and the host port.
    let (host, _, _) = support::l4lb::backend_behind(&lab.client, "bridge", 1);
    let agent_addr: SocketAddr = "198.18.1.2:20560".parse().unwrap();
    support::l4lb::listen_echo(&host.ns.name, agent_addr, "bridged");
    // The container's own address, on a bridge no other host routes to.
    let container: SocketAddr = "198.18.200.2:8080".parse().unwrap();
    lab.client
        .exec_ok(&["ip", "route", "add", "unreachable", "198.18.200.0/24"]);

    let task = Task::new("web.1", "web", "marathon", "a1")
        .with_framework_id("fw-0001")
        .with_ip(container.ip(), IpSource::Netinfo)
        .with_resource(
            Port::new(20560)
                .with_host_port(20560)
                .with_container_port(8080),
        )
        .with_discovery_name("web")
        .with_discovery_port(
            Port::tcp(20560)
                .named("http")
                .with_scope(NetworkScope::Host)
                .with_host_port(20560)
                .with_container_port(8080)
                .with_label("VIP_0", "198.19.0.7:80"),
        );
    let doc = CatalogDocument {
        schema: SCHEMA_VERSION,
        agents: vec![MesosAgent {
            id: "a1".into(),
            hostname: "agent-1".into(),
            addresses: vec![agent_addr.ip()],
            site: None,
        }],
        tasks: vec![task],
        ..CatalogDocument::default()
    };
    let catalog = TempFile::new("catalog.json", serde_json::to_string(&doc).unwrap());
    let extra = lab.agent_args();
    let mut args = vec!["--catalog", catalog.arg()];
    args.extend(extra.iter().map(String::as_str));
    let agent = Agent::start(&args);

    let vip: SocketAddr = "198.19.0.7:80".parse().unwrap();
    let client = lab.client.name.clone();
    in_ns(&client, || {
        // The container address is not reachable: only the agent's host port is.
        assert!(
            std::net::TcpStream::connect_timeout(&container, Duration::from_secs(1)).is_err(),
            "{container} must be unreachable"
        );
        within(Duration::from_secs(10), "the VIP programmed", || {
            connect(vip).is_ok()
        });
        for _ in 0..20 {
            let mut c = connect(vip).unwrap_or_else(|e| panic!("connect {vip}: {e}"));
            assert_eq!(c.backend, "bridged");
            assert_eq!(c.peer, vip);
            ping(&mut c).expect("an echo through the VIP");
        }
    });
    let v = support::l4lb::vip_status(&vips(&agent), "198.19.0.7:80");
    support::l4lb::backend_status(&v, "198.18.1.2:20560");
}

#[test]
fn an_agent_with_the_load_balancer_off_or_failing_detaches_what_was_left_steering() {
    let (lab, etcd) = lab("quit", 1, &[]);
    let ep = etcd.endpoint();
    let pin = lab.pin.display().to_string();
    let detached = "detached the links an earlier agent left steering";
    for (what, args) in [
        // Turned off on this node.
        (
            "off",
            vec!["--etcd", &ep, "--no-l4lb", "--l4lb-pin-path", &pin],
        ),
        // Failing to start (its cgroup is gone), without l4lb.required: DNS only.
        (
            "failing",
            vec![
                "--etcd",
                &ep,
                "--l4lb-pin-path",
                &pin,
                "--l4lb-cgroup",
                "/nonexistent-lodestar-cgroup",
            ],
        ),
    ] {
        let mut first = start_agent(&lab, &etcd, &[]);
        first.terminate();
        assert_eq!(
            attached_programs(&lab.cgroup.path).len(),
            9,
            "pinned and attached"
        );
        let agent = Agent::start(&args);
        assert!(
            attached_programs(&lab.cgroup.path).is_empty(),
            "{what}: the hooks left steering from maps nobody updates are detached"
        );
        assert!(agent.logs().contains(detached), "{what}: {}", agent.logs());
        // The maps stay, for the next agent to adopt.
        let maps = std::fs::read_dir(&lab.pin)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("ls_"))
            .count();
        assert!(maps > 0, "{what}: the maps are kept");
    }
}
