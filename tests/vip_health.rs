//! VIP backend health end to end: passive (failed connects seen by the kernel make new
//! connections pass over a backend) and active (the agent's TCP and HTTP checks take a backend
//! out of the maps and bring it back). Real BPF in a cgroup the test joins; needs root.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::agent::Agent;
use support::l4lb::{
    agent_on_files, backend_status, connect, in_ns, lab, start_agent, vip_status, vips, within,
    Lab, VIP4,
};
use support::{http_get, TempFile};

#[test]
fn passive_health_passes_over_a_refusing_backend_and_tries_it_again_after_the_hold() {
    let (lab, etcd) = lab("passive", 3, &[]);
    let config = TempFile::new(
        "agent.toml",
        "[l4lb.passive]\nfail_threshold = 2\nhold_ms = 1500\n",
    );
    let agent = start_agent(&lab, &etcd, &["--config", config.arg()]);
    let client = lab.client.name.clone();
    let vip = SocketAddr::new(VIP4, 80);
    in_ns(&client, || {
        let mut seen = std::collections::BTreeSet::new();
        within(Duration::from_secs(5), "all three backends", || {
            seen.insert(connect(vip).expect("connect").backend);
            seen.len() == 3
        });
    });

    // b2's servers stop: connects to it are refused. After two refusals the kernel passes
    // over it; nothing in userspace has to notice first.
    lab.backends[1].kill();
    let killed = Instant::now();
    let (fails, last_fail, run) = in_ns(&client, || {
        let (mut fails, mut last, mut run) = (0, Duration::ZERO, 0);
        while run < 200 && killed.elapsed() < Duration::from_secs(10) {
            match connect(vip) {
                Ok(c) => {
                    assert_ne!(c.backend, "b2");
                    run += 1;
                }
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
                    fails += 1;
                    last = killed.elapsed();
                    run = 0;
                }
            }
        }
        (fails, last, run)
    });
    assert_eq!(
        run, 200,
        "200 connects in a row succeed once b2 is passed over"
    );
    assert!(fails <= 3, "{fails} refused connects (threshold 2)");
    eprintln!("passive: {fails} refused connects, the last {last_fail:?} after the kill");
    let v = vip_status(&vips(&agent), "198.19.0.1:80");
    let b2 = backend_status(&v, "198.18.2.2:8080");
    assert_eq!(b2["passive_failing"], true, "{v}");
    assert!(b2["passive_fails"].as_u64().unwrap() >= 2, "{v}");
    assert!(v["skipped"].as_u64().unwrap() > 0, "{v}");
    assert!(http_get(agent.http, "/metrics")
        .contains("lodestar_backend_connect_failures_total{backend=\"198.18.2.2:8080\"}"));

    // Back up: after the hold it is tried again, and a success makes it a full member.
    lab.backends[1].revive();
    in_ns(&client, || {
        within(
            Duration::from_secs(10),
            "b2 taking connections again",
            || (0..30).any(|_| connect(vip).is_ok_and(|c| c.backend == "b2")),
        );
    });
    let v = vip_status(&vips(&agent), "198.19.0.1:80");
    assert_eq!(
        backend_status(&v, "198.18.2.2:8080")["passive_failing"],
        false,
        "{v}"
    );
}

/// The agent inside the client namespace (its checks must reach the backends), on a catalog
/// file, with active checks every 200 ms and passive health off.
fn active_agent(lab: &Lab, dir: &std::path::Path) -> Agent {
    let catalog = dir.join("catalog.toml");
    std::fs::write(&catalog, lab.catalog_toml()).unwrap();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        r#"
[l4lb.passive]
fail_threshold = 0

[l4lb.active]
enabled = true
interval_ms = 200
timeout_ms = 200
rise = 2
fall = 2

[[l4lb.active.vips]]
vip = "198.19.0.2:80/tcp"
kind = "http"
path = "/health"
expect_status = 200
"#,
    )
    .unwrap();
    agent_on_files(lab, &catalog, &config)
}

#[test]
fn active_checks_take_a_silent_backend_out_and_bring_it_back() {
    let lab = Lab::new("active", 2);
    let dir = tempfile::tempdir().unwrap();
    let agent = active_agent(&lab, dir.path());
    let client = lab.client.name.clone();
    let status = |address: &str| {
        let all = in_ns(&client, || http_get(agent.http, "/v1/vips"));
        vip_status(&serde_json::from_str(&all).unwrap(), address)
    };
    let vip = SocketAddr::new(VIP4, 80);

    // b2 goes silent: its replies to the client namespace vanish (no RST, no ICMP), so only
    // timeouts tell. The TCP check takes it out.
    let b2 = &lab.backends[1];
    b2.ns
        .exec_ok(&["ip", "route", "add", "blackhole", "198.18.2.1/32"]);
    let took = within(Duration::from_secs(5), "b2 taken out", || {
        let b = backend_status(&status("198.19.0.1:80"), "198.18.2.2:8080");
        b["active_down"] == true && b["slots"] == 0
    });
    eprintln!("active: a silent backend was taken out {took:?} after it went silent");
    in_ns(&client, || {
        for _ in 0..100 {
            assert_eq!(connect(vip).expect("connect").backend, "b1");
        }
    });
    b2.ns
        .exec_ok(&["ip", "route", "del", "blackhole", "198.18.2.1/32"]);
    within(Duration::from_secs(5), "b2 back", || {
        let b = backend_status(&status("198.19.0.1:80"), "198.18.2.2:8080");
        b["active_down"] == false && b["slots"] == 1
    });

    // The HTTP check of VIP 198.19.0.2:80 (backends' port 8081): b1 answers 503, so it goes
    // out of that VIP; the TCP check of the other VIP (port 8080) still passes.
    lab.backends[0]
        .sick
        .store(true, std::sync::atomic::Ordering::Relaxed);
    within(Duration::from_secs(5), "b1 out of the HTTP VIP", || {
        backend_status(&status("198.19.0.2:80"), "198.18.1.2:8081")["active_down"] == true
    });
    assert_eq!(
        backend_status(&status("198.19.0.1:80"), "198.18.1.2:8080")["active_down"],
        false
    );
    let metrics = in_ns(&client, || http_get(agent.http, "/metrics"));
    support::assert_metric_at_least(&metrics, "lodestar_health_transitions_total", 3);
    // Every metric the Grafana dashboard's VIP panels plot is exported.
    let dashboard = include_str!("../docs/install/grafana-dashboard.json");
    let vip_names: Vec<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("lodestar_"))
        .filter(|w| !w.starts_with("lodestar_dns_") && !w.starts_with("lodestar_catalog_"))
        .collect();
    assert!(vip_names.len() >= 10, "{vip_names:?}");
    for name in vip_names {
        assert!(
            metrics.contains(name),
            "the dashboard plots {name}, which /metrics lacks"
        );
    }
    lab.backends[0]
        .sick
        .store(false, std::sync::atomic::Ordering::Relaxed);
    within(Duration::from_secs(5), "b1 back in the HTTP VIP", || {
        backend_status(&status("198.19.0.2:80"), "198.18.1.2:8081")["active_down"] == false
    });
}
