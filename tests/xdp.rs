//! The per-packet (XDP) path end to end: a client namespace, a load-balancer namespace running
//! the agent with XDP on its front interface, backends behind it. NAT and DSR over GUE, TCP and
//! UDP, IPv4 and IPv6; flows surviving a backend being added, drain, and an agent restart.
//! Real BPF in the real kernel; needs root.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use support::agent::Agent;
use support::http::http_get;
use support::l4lb::{connect, in_ns, ping, udp_exchange, within};
use support::xdp::XdpLab;

const NAT_VIPS: [(&str, u16, &str); 4] = [
    ("198.19.0.1:80", 8080, "tcp"),
    ("[2001:db8:ffff::1]:80", 8080, "tcp"),
    ("198.19.0.1:53", 8080, "udp"),
    ("[2001:db8:ffff::1]:53", 8080, "udp"),
];

fn agent_vips(lab: &XdpLab, agent: &Agent) -> serde_json::Value {
    let body = in_ns(&lab.lb.name, || http_get(agent.http, "/v1/vips"));
    serde_json::from_str(&body).expect("/v1/vips")
}

fn xdp_of(all: &serde_json::Value, address: &str, protocol: &str) -> serde_json::Value {
    all.as_array()
        .unwrap()
        .iter()
        .find(|v| v["address"] == address && v["protocol"] == protocol)
        .map(|v| v["xdp"].clone())
        .unwrap_or_else(|| panic!("no {address}/{protocol} in {all}"))
}

#[test]
fn nat_balances_tcp_and_udp_over_both_families() {
    let mut lab = XdpLab::new("xnat", 2);
    lab.write_catalog(&[(1, ""), (2, "")], &NAT_VIPS);
    let agent = lab.lb_agent("");
    let client = lab.client.name.clone();
    in_ns(&client, || {
        for vip in ["198.19.0.1:80", "[2001:db8:ffff::1]:80"] {
            let vip: SocketAddr = vip.parse().unwrap();
            let mut seen: BTreeMap<String, u32> = BTreeMap::new();
            for k in 0..60 {
                let mut c = connect(vip).unwrap_or_else(|e| panic!("connect {vip} #{k}: {e}"));
                assert_eq!(c.peer, vip);
                ping(&mut c).expect("data both ways through NAT");
                *seen.entry(c.backend).or_default() += 1;
            }
            assert_eq!(seen.len(), 2, "both backends over {vip}: {seen:?}");
        }
        for vip in ["198.19.0.1:53", "[2001:db8:ffff::1]:53"] {
            let vip: SocketAddr = vip.parse().unwrap();
            let mut seen = BTreeSet::new();
            for _ in 0..40 {
                let (b, from) = udp_exchange(vip).unwrap_or_else(|e| panic!("udp {vip}: {e}"));
                assert_eq!(
                    from, vip,
                    "the reply comes from the VIP (tc egress restored it)"
                );
                seen.insert(b);
            }
            assert_eq!(seen.len(), 2, "both backends over UDP {vip}: {seen:?}");
        }
    });
    let all = agent_vips(&lab, &agent);
    let x = xdp_of(&all, "198.19.0.1:80", "tcp");
    assert_eq!(x["mode"], "nat", "{x}");
    assert!(x["packets"].as_u64().unwrap() >= 120, "{x}");
    assert!(x["table"].as_u64().unwrap() >= 200, "{x}");
    let metrics = in_ns(&lab.lb.name, || http_get(agent.http, "/metrics"));
    assert!(
        support::metric(&metrics, "lodestar_xdp_events_total{event=\"tc_revnat\"}") >= 120,
        "{metrics}"
    );
    // `vips ls --agent` shows the mode, table size and counters.
    let out = in_ns(&lab.lb.name, || {
        std::process::Command::new(env!("CARGO_BIN_EXE_lodestar"))
            .args(["vips", "ls", "--agent", &agent.http.to_string()])
            .output()
            .unwrap()
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("xdp=nat") && text.contains("table=") && text.contains(" ring="),
        "{text}"
    );
}

#[test]
fn dsr_over_gue_reaches_every_backend_and_replies_come_straight_back() {
    let mut lab = XdpLab::new("xgue", 2);
    let vips: Vec<SocketAddr> = ["198.19.0.2:8080", "[2001:db8:ffff::2]:8080"]
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    lab.write_catalog(
        &[(1, ""), (2, "")],
        &[
            ("198.19.0.2:8080", 8080, "tcp"),
            ("[2001:db8:ffff::2]:8080", 8080, "tcp"),
            ("198.19.0.2:8080", 8080, "udp"),
            ("[2001:db8:ffff::2]:8080", 8080, "udp"),
        ],
    );
    let decap = lab.gue_backends(&vips);
    let agent = lab.lb_agent("mode = \"gue\"\n");
    let client = lab.client.name.clone();
    in_ns(&client, || {
        for vip in &vips {
            let mut seen = BTreeSet::new();
            for _ in 0..60 {
                let mut c = connect(*vip).unwrap_or_else(|e| panic!("connect {vip}: {e}"));
                assert_eq!(c.peer, *vip);
                ping(&mut c).expect("data both ways");
                seen.insert(c.backend);
            }
            assert_eq!(seen.len(), 2, "TCP over {vip}: {seen:?}");
            let mut seen = BTreeSet::new();
            for _ in 0..40 {
                let (b, from) = udp_exchange(*vip).unwrap_or_else(|e| panic!("udp {vip}: {e}"));
                assert_eq!(from, *vip, "the backend answers from the VIP itself");
                seen.insert(b);
            }
            assert_eq!(seen.len(), 2, "UDP over {vip}: {seen:?}");
        }
    });
    let x = xdp_of(&agent_vips(&lab, &agent), "198.19.0.2:8080", "tcp");
    assert_eq!(x["mode"], "gue", "{x}");
    for (i, d) in decap.iter().enumerate() {
        let m = in_ns(&lab.backends[i].ns.name, || http_get(d.http, "/metrics"));
        assert!(
            support::metric(&m, "lodestar_xdp_events_total{event=\"tc_decap\"}") > 0,
            "backend {} decapsulated nothing: {m}",
            i + 1
        );
    }
    // The load balancer saw only the client's half: replies went straight back (no NAT).
    let m = in_ns(&lab.lb.name, || http_get(agent.http, "/metrics"));
    assert_eq!(
        support::metric(&m, "lodestar_xdp_events_total{event=\"tc_revnat\"}"),
        0
    );
}

#[test]
fn xdp_redirect_forwards_without_the_kernel_where_the_fib_has_a_route() {
    let mut lab = XdpLab::new("xfib", 2);
    lab.write_catalog(&[(1, ""), (2, "")], &NAT_VIPS);
    let _backends = lab.xdp_on_backends();
    let agent = lab.lb_agent("fib_forward = true\n");
    let client = lab.client.name.clone();
    let vip: SocketAddr = "198.19.0.1:80".parse().unwrap();
    in_ns(&client, || {
        let mut seen = BTreeSet::new();
        for k in 0..60 {
            let mut c = connect(vip).unwrap_or_else(|e| panic!("connect #{k}: {e}"));
            ping(&mut c).expect("data both ways");
            seen.insert(c.backend);
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
        // A hop like the kernel's: with one hop left a datagram is the kernel's (which drops
        // it with ICMP time exceeded); with two it gets through, its IPv4 checksum mended.
        for vip in ["198.19.0.1:53", "[2001:db8:ffff::1]:53"] {
            let vip: SocketAddr = vip.parse().unwrap();
            within(Duration::from_secs(5), "neighbours resolved", || {
                udp_with_hops(vip, 2).is_some()
            });
            assert_eq!(udp_with_hops(vip, 1), None, "{vip} with one hop left");
            assert!(udp_with_hops(vip, 2).is_some(), "{vip} with two hops left");
        }
    });
    let m = in_ns(&lab.lb.name, || http_get(agent.http, "/metrics"));
    assert!(
        support::metric(&m, "lodestar_xdp_events_total{event=\"xdp_redirect\"}") > 100,
        "most packets leave by XDP_REDIRECT once neighbours are resolved: {m}"
    );
}

/// One UDP exchange through `vip` with the datagram's TTL (hop limit) set: the reply, if any
/// came within a second.
fn udp_with_hops(vip: SocketAddr, hops: u32) -> Option<String> {
    use std::os::fd::AsRawFd;
    let bind = if vip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let s = std::net::UdpSocket::bind(bind).unwrap();
    if vip.is_ipv4() {
        s.set_ttl(hops).unwrap();
    } else {
        let v = hops as libc::c_int;
        // SAFETY: setsockopt with a c_int option value that outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_UNICAST_HOPS,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "IPV6_UNICAST_HOPS");
    }
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    s.send_to(b"hi", vip).unwrap();
    let mut buf = [0u8; 64];
    s.recv_from(&mut buf)
        .ok()
        .map(|(n, _)| String::from_utf8_lossy(&buf[..n]).to_string())
}

#[test]
fn flows_survive_a_new_backend_drain_and_an_agent_restart() {
    let mut lab = XdpLab::new("xflow", 3);
    let vips = [("198.19.0.1:80", 8080, "tcp")];
    lab.write_catalog(&[(1, ""), (2, "")], &vips);
    let mut agent = lab.lb_agent("");
    let client = lab.client.name.clone();
    let vip: SocketAddr = "198.19.0.1:80".parse().unwrap();
    let mut open = in_ns(&client, || {
        (0..30)
            .map(|_| connect(vip).expect("connect"))
            .collect::<Vec<_>>()
    });
    // A third backend: the Maglev table changes, tracked flows do not move.
    lab.write_catalog(&[(1, ""), (2, ""), (3, "")], &vips);
    within(Duration::from_secs(5), "b3 in the table", || {
        in_ns(&client, || {
            (0..20).any(|_| connect(vip).is_ok_and(|c| c.backend == "b3"))
        })
    });
    in_ns(&client, || {
        for c in open.iter_mut() {
            ping(c).unwrap_or_else(|e| panic!("an open flow to {} broke: {e}", c.backend));
        }
    });
    // Drain b1: no new flows, its open ones carry on.
    lab.write_catalog(&[(1, "state = \"draining\""), (2, ""), (3, "")], &vips);
    in_ns(&client, || {
        within(Duration::from_secs(5), "b1 drained", || {
            (0..30).all(|_| connect(vip).expect("connect").backend != "b1")
        });
        for _ in 0..100 {
            assert_ne!(connect(vip).unwrap().backend, "b1");
        }
        for c in open.iter_mut() {
            ping(c).unwrap_or_else(|e| panic!("an open flow to {} broke: {e}", c.backend));
        }
    });
    assert!(
        open.iter().any(|c| c.backend == "b1"),
        "some flow was on b1"
    );
    // Restart the agent: the pinned program and maps keep forwarding; nothing breaks.
    agent.terminate();
    in_ns(&client, || {
        for c in open.iter_mut() {
            ping(c).expect("flows keep going with no agent running");
        }
        assert!(connect(vip).is_ok(), "new flows too");
    });
    agent = lab.lb_agent("");
    assert!(agent.logs().contains("took_over_links"), "{}", agent.logs());
    in_ns(&client, || {
        for c in open.iter_mut() {
            ping(c).expect("flows keep going after the restart");
        }
    });
    let x = xdp_of(&agent_vips(&lab, &agent), "198.19.0.1:80", "tcp");
    assert!(x["packets"].as_u64().unwrap() > 0, "{x}");
}
