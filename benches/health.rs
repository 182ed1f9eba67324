//! Dead-backend reaction time, over `--kills` kills each:
//! - **passive**: a backend's process dies (connects to it are refused); a client keeps
//!   connecting through the VIP; the reaction is the time from the kill to the last connect
//!   that still went to the dead backend, and the number of connects that failed;
//! - **active**: a backend goes silent (its replies are blackholed: no RST, no ICMP, only
//!   timeouts); the reaction is the time from then until the agent's checks have taken it out
//!   of the maps (its slots are 0 in `/v1/vips`).
//!
//! Topology: `tests/support/l4lb.rs` (three backends in namespaces); the agent runs inside the
//! client namespace so its checks reach the backends. Run as root:
//! `cargo bench --bench health [-- --kills 50 --interval-ms 250]`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::bench::arg;
use support::report::{percentile as pct, sorted, Plot, Report};
use support::{agent, http, l4lb};

use l4lb::{backend_status, connect, in_ns, vip_status, within, Lab, VIP4};

fn main() {
    let kills = arg("--kills", 50) as usize;
    let interval = arg("--interval-ms", 250);
    let lab = Lab::new("health", 3);
    let client = lab.client.name.clone();
    let vip = SocketAddr::new(VIP4, 80);
    let dir = tempfile::tempdir().unwrap();

    // Passive: no active checks; two refusals mark a backend failing for 1 s.
    let passive_agent = start_in_client(
        &lab,
        dir.path(),
        "passive.toml",
        "[l4lb.passive]\nfail_threshold = 2\nhold_ms = 1000\n",
    );
    let (mut passive_ms, mut passive_failed) = (Vec::new(), Vec::new());
    for k in 0..kills {
        let b = &lab.backends[k % 3];
        b.kill();
        let killed = Instant::now();
        let (last, failed) = in_ns(&client, || {
            let (mut last, mut failed, mut run) = (Duration::ZERO, 0u32, 0);
            while run < 300 && killed.elapsed() < Duration::from_secs(5) {
                match connect(vip) {
                    Ok(_) => run += 1,
                    Err(_) => {
                        last = killed.elapsed();
                        failed += 1;
                        run = 0;
                    }
                }
            }
            (last, failed)
        });
        passive_ms.push(last.as_secs_f64() * 1000.0);
        passive_failed.push(f64::from(failed));
        b.revive();
        // Back in once its hold is over (a connect reaches it).
        in_ns(&client, || {
            within(Duration::from_secs(10), "the revived backend back", || {
                (0..20).any(|_| connect(vip).is_ok_and(|c| c.backend == b.name))
            })
        });
    }
    drop(passive_agent);

    // Active: TCP checks every `interval` ms, timeout = interval, fall 2, rise 2; passive off.
    let active_cfg = format!(
        "[l4lb.passive]\nfail_threshold = 0\n[l4lb.active]\nenabled = true\ninterval_ms = {interval}\n\
         timeout_ms = {interval}\nrise = 2\nfall = 2\n"
    );
    let active_agent = start_in_client(&lab, dir.path(), "active.toml", &active_cfg);
    let status = |address: &str, backend: &str| {
        let all = in_ns(&client, || http::http_get(active_agent.http, "/v1/vips"));
        backend_status(
            &vip_status(&serde_json::from_str(&all).unwrap(), address),
            backend,
        )
    };
    let mut active_ms = Vec::new();
    for k in 0..kills {
        let b = &lab.backends[k % 3];
        let backend = format!("{}:8080", b.v4);
        let client_addr = format!("198.18.{}.1/32", k % 3 + 1);
        b.ns.exec_ok(&["ip", "route", "add", "blackhole", &client_addr]);
        let silent = Instant::now();
        while status("198.19.0.1:80", &backend)["slots"] != 0 {
            assert!(
                silent.elapsed() < Duration::from_secs(30),
                "never taken out"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        active_ms.push(silent.elapsed().as_secs_f64() * 1000.0);
        b.ns.exec_ok(&["ip", "route", "del", "blackhole", &client_addr]);
        within(Duration::from_secs(30), "back after the blackhole", || {
            status("198.19.0.1:80", &backend)["slots"] == 1
        });
    }
    drop(active_agent);
    let _ = lab.detach();

    let (passive_ms, passive_failed, active_ms) = (
        sorted(&passive_ms),
        sorted(&passive_failed),
        sorted(&active_ms),
    );
    let p = |v: &[f64], digits: usize| [0.5, 0.99, 1.0].map(|q| format!("{:.digits$}", pct(v, q)));
    let row = |measure: String, v: &[f64], digits: usize, target: &str, peer: &str| {
        let mut r = vec![measure];
        r.extend(p(v, digits));
        r.extend([target.to_string(), peer.to_string()]);
        r
    };
    let mut report = Report::new("health");
    report.say(format!(
        "health: {kills} kills each, 3 backends behind one VIP"
    ));
    report.table(
        &["measure", "p50", "p99", "max", "target", "dcos-l4lb (documented)"],
        &[
            row(
                "passive: process dies (refused), kill -> last connect to it (ms)".into(),
                &passive_ms,
                2,
                "< 1000",
                "seconds, up to 30 s",
            ),
            row(
                "passive: failed connects per kill".into(),
                &passive_failed,
                0,
                "",
                "",
            ),
            row(
                format!("active ({interval} ms interval, fall 2): host goes silent -> out of the maps (ms)"),
                &active_ms,
                0,
                "< 1000",
                "seconds, up to 30 s",
            ),
        ],
    );
    report.plot(
        "reaction",
        Plot::cdf(
            "Dead backend: time until no new connection goes to it",
            "ms",
            &[
                ("passive (process killed, connects refused)", &passive_ms),
                ("active checks (host silent)", &active_ms),
            ],
        ),
    );
    report.finish();
}

/// The agent inside the client namespace (its checks must reach the backends), on a catalog
/// file, with the load balancer on the lab's cgroup.
fn start_in_client(lab: &Lab, dir: &std::path::Path, name: &str, config: &str) -> agent::Agent {
    let catalog = dir.join("catalog.toml");
    std::fs::write(&catalog, lab.catalog_toml()).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, config).unwrap();
    support::l4lb::agent_on_files(lab, &catalog, &path)
}
