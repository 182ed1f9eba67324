//! `lodestar agent` as a DNS server: the real binary on loopback, a real DNS client (and dig),
//! a real etcd. Mesos-DNS's rules name by name, Spartan's zones, forwarding, truncation,
//! freshness after etcd writes, and serving through an etcd outage.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use lodestar_control::keys::{Record, RecordKey};
use lodestar_control::model::{
    Agent as MesosAgent, Framework, Health, IpSource, Port, Task, TaskKey, TaskState, VipAddress,
};
use support::agent::Agent;
use support::command::stderr;
use support::dns::{answers, tcp, udp, udp_answer_count, udp_answers, udp_raw_within, Upstream};
use support::{
    assert_metric_at_least, eventually, http_get, lodestar, metric, EtcdServer, TempFile,
};

const PATIENCE: Duration = Duration::from_secs(20);
const AGENT_ID: &str = "20261121-000000-0001-0000-S7";

fn mesos_agent() -> MesosAgent {
    MesosAgent::new(AGENT_ID, "agent-7", "198.18.7.1".parse().unwrap()).with_site("azure")
}

fn task(id: &str, name: &str, framework: &str, ips: &[&str]) -> Task {
    ips.iter().fold(
        Task::new(id, name, framework, AGENT_ID).with_health(Health::Healthy),
        |t, ip| t.with_ip(ip.parse().unwrap(), IpSource::Netinfo),
    )
}

fn rcode(m: &Message) -> ResponseCode {
    m.metadata.response_code
}

/// Waits until `name` answers `qtype` with exactly `expected` (sorted data).
async fn eventually_answers(dns: SocketAddr, name: &str, qtype: RecordType, expected: &[&str]) {
    let want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    eventually(PATIENCE, &format!("{name} {qtype} -> {want:?}"), || {
        let got = answers(&udp(dns, name, qtype, None));
        let ok = got == want;
        async move { ok.then_some(()) }
    })
    .await;
}

/// etcd with this agent and one healthy marathon task `name` at `ip`.
async fn etcd_with_task(id: &str, name: &str, ip: &str) -> EtcdServer {
    let etcd = EtcdServer::start();
    etcd.store()
        .await
        .put(&[
            Record::Agent(mesos_agent()),
            Record::Task(task(id, name, "marathon", &[ip])),
        ])
        .await
        .unwrap();
    etcd
}

/// Writes one more marathon task `name` at `ip` to etcd and waits until `dns` answers
/// `name.marathon.mesos.` with exactly `expected`.
async fn put_task_and_wait(
    etcd: &EtcdServer,
    dns: SocketAddr,
    (id, name, ip): (&str, &str, &str),
    expected: &[&str],
) {
    etcd.store()
        .await
        .put(&[Record::Task(task(id, name, "marathon", &[ip]))])
        .await
        .unwrap();
    let qname = format!("{name}.marathon.mesos.");
    eventually_answers(dns, &qname, RecordType::A, expected).await;
}

/// Restarts etcd, writes task `id` of `name` at the second of `ips` and waits until `dns`
/// answers `name` with both (the first the one it had): the agent catches up.
async fn etcd_back_and_caught_up(
    etcd: &mut EtcdServer,
    dns: SocketAddr,
    (id, name): (&str, &str),
    ips: [&str; 2],
) {
    etcd.restart();
    put_task_and_wait(etcd, dns, (id, name, ips[1]), &ips).await;
}

/// Each name's sorted A answers are the ones listed.
fn assert_a_answers(dns: SocketAddr, expected: &[(&str, &[&str])]) {
    for (name, want) in expected {
        assert_eq!(udp_answers(dns, name, RecordType::A), *want, "{name}");
    }
}

#[test]
fn the_demo_catalog_answers_by_mesos_dns_rules() {
    let agent = Agent::start(&[]);
    let dns = agent.dns;

    // A, case-insensitive, question echoed as asked, authoritative, TTL 60.
    let r = udp(dns, "WEB.Marathon.MESOS.", RecordType::A, None);
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert!(r.metadata.authoritative);
    assert_eq!(r.queries[0].name().to_ascii(), "WEB.Marathon.MESOS.");
    assert_eq!(answers(&r), ["127.0.1.101", "127.0.2.101"]);
    assert!(r.answers.iter().all(|a| a.ttl == 60));

    // The .slave name gives the agents' addresses; the canonical name the task's.
    let r = udp(dns, "web.marathon.slave.mesos.", RecordType::A, None);
    assert_eq!(answers(&r), ["127.0.1.1", "127.0.2.1"]);

    // SRV for a DiscoveryInfo port, with A records for the targets in the additional section.
    let r = udp(dns, "_web._tcp.marathon.mesos.", RecordType::SRV, None);
    assert_eq!(r.answers.len(), 2);
    let mut targets = Vec::new();
    for a in &r.answers {
        let RData::SRV(srv) = &a.data else {
            panic!("{a:?}")
        };
        assert_eq!((srv.priority, srv.weight, srv.port), (0, 1, 8080));
        targets.push(srv.target.to_ascii());
    }
    assert!(
        targets
            .iter()
            .all(|t| t.starts_with("web-") && t.ends_with(".marathon.mesos.")),
        "{targets:?}"
    );
    let canonical = &targets[0];
    let extra: Vec<String> = r.additionals.iter().map(|a| a.name.to_ascii()).collect();
    assert!(extra.contains(canonical), "{extra:?}");
    assert_eq!(udp_answer_count(dns, canonical, RecordType::A), 1);
    // A named port; resource ports under .slave, both protocols.
    for name in [
        "_http._web._tcp.marathon.mesos.",
        "_web._udp.marathon.slave.mesos.",
    ] {
        assert_eq!(udp_answer_count(dns, name, RecordType::SRV), 2, "{name}");
    }

    // Missing names.
    let r = udp(dns, "nope.marathon.mesos.", RecordType::A, None);
    assert_eq!(rcode(&r), ResponseCode::NXDomain);
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    let r = udp(dns, "web.marathon.mesos.", RecordType::AAAA, None);
    assert_eq!(rcode(&r), ResponseCode::NoError, "NODATA");
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    let r = udp(dns, "_nope._tcp.marathon.mesos.", RecordType::SRV, None);
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);

    // Frameworks, agents, masters, leader, our own name.
    assert_a_answers(
        dns,
        &[
            ("marathon.mesos.", &["127.0.1.11"]),
            ("slave.mesos.", &["127.0.1.1", "127.0.2.1"]),
            ("leader.mesos.", &["127.0.1.11"]),
            ("master.mesos.", &["127.0.1.11", "127.0.1.12", "127.0.2.11"]),
            ("ns1.mesos.", &["127.0.0.1"]),
        ],
    );
    for name in [
        "_framework._tcp.marathon.mesos.",
        "_slave._tcp.mesos.",
        "_leader._tcp.mesos.",
        "_leader._udp.mesos.",
    ] {
        assert_eq!(udp_answer_count(dns, name, RecordType::SRV), 1, "{name}");
    }
    for n in 0..3 {
        let name = format!("master{n}.mesos.");
        assert_eq!(udp_answer_count(dns, &name, RecordType::A), 1, "{name}");
    }
    let r = udp(dns, "mesos.", RecordType::SOA, None);
    let RData::SOA(soa) = &r.answers[0].data else {
        panic!()
    };
    assert_eq!(soa.mname.to_ascii(), "ns1.mesos.");
    assert_eq!(soa.rname.to_ascii(), "root.ns1.mesos.");
    let r = udp(dns, "mesos.", RecordType::NS, None);
    assert_eq!(r.answers[0].data.to_string(), "ns1.mesos.");
    assert_eq!(
        udp_answer_count(dns, "web.marathon.mesos.", RecordType::ANY),
        2
    );

    // Draining tasks get no records.
    let r = udp(dns, "batch.marathon.mesos.", RecordType::A, None);
    assert_eq!(rcode(&r), ResponseCode::NXDomain);

    // Spartan's zones.
    let r = udp(
        dns,
        "web.marathon.l4lb.thisdcos.directory.",
        RecordType::A,
        None,
    );
    assert_eq!(answers(&r), ["198.19.0.10"]);
    assert_eq!(r.answers[0].ttl, 5);
    assert_a_answers(
        dns,
        &[
            (
                "web.marathon.agentip.dcos.thisdcos.directory.",
                &["127.0.1.1", "127.0.2.1"],
            ),
            (
                "echo.marathon.containerip.dcos.thisdcos.directory.",
                &["127.0.1.102"],
            ),
            (
                "web.marathon.autoip.dcos.thisdcos.directory.",
                &["127.0.1.101", "127.0.2.101"],
            ),
        ],
    );

    // TCP gives the same answers.
    assert_eq!(
        answers(&tcp(dns, "web.marathon.mesos.", RecordType::A)),
        ["127.0.1.101", "127.0.2.101"]
    );
}

#[tokio::test]
async fn awkward_catalog_entries_through_etcd() {
    let etcd = EtcdServer::start();
    let s = etcd.store().await;
    let named = task("named.1", "named", "marathon", &["198.18.7.10"])
        .with_discovery_name("named")
        .with_discovery_port(Port::tcp(53).named("dns"))
        .with_discovery_port(Port::udp(53).named("dns"));
    let long_name = "a".repeat(70);
    let mut records = vec![
        Record::Agent(mesos_agent()),
        Record::Framework(Framework {
            id: "fw-1".into(),
            name: "My Framework".into(),
            hostname: None,
            addresses: vec!["198.18.7.2".parse().unwrap()],
            port: Some(8080),
        }),
        Record::Task(task("mixed.1", "My_App.V2", "marathon", &["198.18.7.11"])),
        Record::Task(task("long.1", &long_name, "marathon", &["198.18.7.12"])),
        Record::Task(task("v6.1", "ipv6only", "marathon", &["2001:db8::7"])),
        Record::Task(task("spaced.1", "svc", "My Framework", &["198.18.7.13"])),
        Record::Task(named),
    ];
    let mut killed = task("killed.1", "killed", "marathon", &["198.18.7.14"]);
    killed.state = TaskState::Draining;
    records.push(Record::Task(killed));
    s.put(&records).await.unwrap();

    let agent = Agent::start(&["--etcd", &etcd.endpoint()]);
    let dns = agent.dns;
    // Mixed case, dots and underscores: lowercase, '.' and '_' become '-'; 70 characters are
    // cut to 63; a framework name with a space: the space is dropped.
    let cut = format!("{}.marathon.mesos.", "a".repeat(63));
    assert_a_answers(
        dns,
        &[
            ("my-app-v2.marathon.mesos.", &["198.18.7.11"]),
            (&cut, &["198.18.7.12"]),
            ("svc.myframework.mesos.", &["198.18.7.13"]),
            ("myframework.mesos.", &["198.18.7.2"]),
        ],
    );
    // IPv6-only: AAAA answers, A is NODATA.
    let v6 = "ipv6only.marathon.mesos.";
    assert_eq!(udp_answers(dns, v6, RecordType::AAAA), ["2001:db8::7"]);
    let r = udp(dns, v6, RecordType::A, None);
    assert_eq!((rcode(&r), r.answers.len()), (ResponseCode::NoError, 0));
    // A named port on both protocols.
    for proto in ["_tcp", "_udp"] {
        let name = format!("_dns._named.{proto}.marathon.mesos.");
        assert_eq!(udp_answer_count(dns, &name, RecordType::SRV), 1, "{proto}");
    }
    // A killed (draining) task has no records.
    let r = udp(dns, "killed.marathon.mesos.", RecordType::A, None);
    assert_eq!(rcode(&r), ResponseCode::NXDomain);

    // Fresh answers after etcd writes: a new task appears, a removed one goes.
    put_task_and_wait(
        &etcd,
        dns,
        ("new.1", "fresh", "198.18.7.20"),
        &["198.18.7.20"],
    )
    .await;
    s.delete(&RecordKey::Task(TaskKey::new("marathon", "mixed.1")))
        .await
        .unwrap();
    eventually(PATIENCE, "the removed task to go", || {
        let gone = rcode(&udp(dns, "my-app-v2.marathon.mesos.", RecordType::A, None))
            == ResponseCode::NXDomain;
        async move { gone.then_some(()) }
    })
    .await;
    // A VIP address appears in the l4lb zone once allocated.
    let vip_task = task("vip.1", "vipper", "marathon", &["198.18.7.30"])
        .with_discovery_name("vipper")
        .with_discovery_port(
            Port::tcp(8080)
                .named("http")
                .with_label("VIP_0", "/group/vipper:80"),
        );
    s.put(&[
        Record::Task(vip_task),
        Record::VipAddress(VipAddress {
            name: "/group/vipper".into(),
            addresses: vec!["198.19.7.1".parse().unwrap()],
        }),
    ])
    .await
    .unwrap();
    eventually_answers(
        dns,
        "groupvipper.marathon.l4lb.thisdcos.directory.",
        RecordType::A,
        &["198.19.7.1"],
    )
    .await;
}

#[tokio::test]
async fn serves_the_last_catalog_through_an_etcd_outage() {
    let mut etcd = etcd_with_task("t.1", "steady", "198.18.7.40").await;
    let agent = Agent::start(&["--etcd", &etcd.endpoint()]);
    let steady = "steady.marathon.mesos.";
    assert_eq!(
        udp_answers(agent.dns, steady, RecordType::A),
        ["198.18.7.40"]
    );
    etcd.stop();
    for _ in 0..20 {
        assert_eq!(
            udp_answers(agent.dns, steady, RecordType::A),
            ["198.18.7.40"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And it catches up when etcd is back.
    let ips = ["198.18.7.40", "198.18.7.41"];
    etcd_back_and_caught_up(&mut etcd, agent.dns, ("t.2", "steady"), ips).await;
}

#[test]
fn forwards_other_names_with_one_upstream_dead() {
    let good = Upstream::start(Ipv4Addr::new(198, 18, 99, 1));
    let (_dead_socket, dead) = support::dns::dead_upstream();
    let agent = Agent::start(&[
        "--upstream",
        &dead.to_string(),
        "--upstream",
        &good.addr.to_string(),
    ]);
    for i in 0..5 {
        let r = udp(
            agent.dns,
            &format!("host{i}.example.org."),
            RecordType::A,
            None,
        );
        assert_eq!(rcode(&r), ResponseCode::NoError);
        assert_eq!(answers(&r), ["198.18.99.1"]);
        assert!(r.metadata.recursion_available);
    }
    // Cached: asking again does not reach the upstream.
    let before = good.seen();
    let r = udp(agent.dns, "host0.example.org.", RecordType::A, None);
    assert_eq!(answers(&r), ["198.18.99.1"]);
    assert_eq!(good.seen(), before);
    // Our own zones are never forwarded.
    let r = udp(agent.dns, "nope.marathon.mesos.", RecordType::A, None);
    assert_eq!(rcode(&r), ResponseCode::NXDomain);
}

#[test]
fn recursion_is_refused_to_clients_outside_the_configured_networks() {
    let good = Upstream::start(Ipv4Addr::new(198, 18, 99, 2));
    let config = TempFile::new(
        "agent.toml",
        format!(
            "[dns]\nrecursion_networks = [\"198.18.0.0/16\"]\nupstreams = [\"{}\"]\n",
            good.addr
        ),
    );
    let agent = Agent::start(&["--config", config.arg()]);
    let r = udp(agent.dns, "example.org.", RecordType::A, None);
    assert_eq!(rcode(&r), ResponseCode::Refused);
    assert!(!r.metadata.recursion_available);
    assert_eq!(good.seen(), 0);
    // Authoritative answers are for everyone.
    let r = udp(agent.dns, "leader.mesos.", RecordType::A, None);
    assert_eq!(answers(&r), ["127.0.1.11"]);
}

/// A catalog with one name that has 60 addresses: 1,000+ bytes of answers.
fn big_catalog() -> TempFile {
    let mut text = String::from(
        "schema = 1\n[[agents]]\nid = \"a1\"\nhostname = \"h1\"\naddresses = [\"198.18.0.1\"]\n",
    );
    for i in 0..60 {
        text.push_str(&format!(
            "[[tasks]]\nid = \"big.{i}\"\nname = \"big\"\nframework = \"marathon\"\nagent = \"a1\"\nips = [{{ ip = \"198.18.1.{i}\", source = \"netinfo\" }}]\n"
        ));
    }
    TempFile::new("catalog.toml", text)
}

#[test]
fn large_answers_truncate_over_udp_and_complete_over_tcp() {
    let catalog = big_catalog();
    let agent = Agent::start(&["--catalog", catalog.arg()]);
    // Without EDNS the limit is 512: TC, and no partial answer.
    let r = udp(agent.dns, "big.marathon.mesos.", RecordType::A, None);
    assert!(r.metadata.truncation);
    assert!(r.answers.is_empty());
    // EDNS 4096: we honour it up to our 1232.
    let r = udp(agent.dns, "big.marathon.mesos.", RecordType::A, Some(4096));
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 60);
    assert_eq!(r.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    // Small EDNS: still truncated.
    assert!(
        udp(agent.dns, "big.marathon.mesos.", RecordType::A, Some(512))
            .metadata
            .truncation
    );
    // TCP has it all.
    assert_eq!(
        tcp(agent.dns, "big.marathon.mesos.", RecordType::A)
            .answers
            .len(),
        60
    );
    // dig, a real resolver client, retries over TCP on TC by itself.
    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &agent.dns.port().to_string(),
            "+noedns",
            "+tries=1",
            "+time=3",
            "big.marathon.mesos",
            "A",
        ])
        .output()
        .expect("dig (Debian package dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Truncated, retrying in TCP mode"), "{text}");
    assert_eq!(text.matches("\tA\t198.18.1.").count(), 60, "{text}");
}

#[test]
fn hostile_packets_get_formerr_or_are_dropped_and_counted() {
    let agent = Agent::start(&[]);
    let good = support::dns::build("leader.mesos.", RecordType::A, None);
    let mut cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0; 5],
        vec![0xff; 12],
        good[..15].to_vec(),
        {
            let mut p = good.clone();
            p[12] = 0xc0; // a compression pointer in the question
            p
        },
        {
            let mut p = good.clone();
            p[5] = 2; // two questions claimed
            p
        },
        vec![0x41; 600],
    ];
    let mut rng = 0x2545F4914F6CDD1Du64;
    for _ in 0..200 {
        let mut p = good.clone();
        for _ in 0..4 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let i = (rng as usize) % p.len();
            p[i] = (rng >> 32) as u8;
        }
        cases.push(p);
    }
    for p in &cases {
        // Drops are expected, so wait briefly: a reply on loopback takes microseconds.
        let reply = udp_raw_within(agent.dns, p, Duration::from_millis(150));
        if let Some(r) = reply.filter(|_| p.len() >= 12 && p[2] & 0x80 == 0) {
            // Whatever was answered parses.
            let m = Message::from_vec(&r);
            assert!(m.is_ok() || r.len() >= 12, "unparseable answer to {p:?}");
        }
    }
    // Still serving, and counting.
    assert_eq!(
        udp_answers(agent.dns, "leader.mesos.", RecordType::A),
        ["127.0.1.11"]
    );
    let metrics = http_get(agent.http, "/metrics");
    assert!(metrics.contains("lodestar_dns_dropped_total"), "{metrics}");
    let formerr = metric(&metrics, "lodestar_dns_responses_total{rcode=\"FORMERR\"}");
    assert!(formerr >= 2, "FORMERR count {formerr}");
}

#[test]
fn metrics_and_the_mesos_dns_http_api() {
    let agent = Agent::start(&[]);
    for _ in 0..3 {
        udp(agent.dns, "web.marathon.mesos.", RecordType::A, None);
    }
    let metrics = http_get(agent.http, "/metrics");
    assert_metric_at_least(&metrics, "lodestar_dns_queries_total{transport=\"udp\"}", 3);
    assert!(
        metrics.contains("lodestar_dns_query_duration_seconds_bucket"),
        "{metrics}"
    );
    let hosts: serde_json::Value =
        serde_json::from_str(&http_get(agent.http, "/v1/hosts/leader.mesos")).unwrap();
    assert_eq!(hosts[0]["ip"], "127.0.1.11");
    let services: serde_json::Value = serde_json::from_str(&http_get(
        agent.http,
        "/v1/services/_web._tcp.marathon.mesos",
    ))
    .unwrap();
    assert_eq!(services.as_array().unwrap().len(), 2);
}

#[test]
fn a_bad_config_reports_every_problem_with_exit_code_78() {
    let config = TempFile::new(
        "agent.toml",
        "[dns]\nlisten = []\nworkers = 0\n[dns.zone]\ndomain = \"bad domain\"\n",
    );
    let err = refused_config(&["agent", "--config", config.arg()]);
    assert_eq!(err.matches("lodestar: config error:").count(), 3, "{err}");
    // A mistyped forward zone is refused rather than falling through to the default upstreams.
    config
        .write("[[dns.forward_zones]]\nzone = \"corp..example\"\nupstreams = [\"127.0.0.1:9\"]\n");
    let err = refused_config(&[
        "agent",
        "--no-l4lb",
        "--dns-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--config",
        config.arg(),
    ]);
    assert!(err.contains("corp..example"), "{err}");
    config.write("[dns]\nlisen = [\"127.0.0.1:53\"]\n");
    let err = refused_config(&["agent", "--config", config.arg()]);
    assert!(err.contains("lisen"), "{err}");
}

/// Runs `lodestar ARGS`, which must exit with 78 (a bad configuration); its standard error.
fn refused_config(args: &[&str]) -> String {
    let out = lodestar(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    err
}

#[test]
fn sigterm_stops_the_agent_cleanly() {
    let mut agent = Agent::start(&[]);
    let status = agent.terminate().expect("exit status");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_wildcard_listener_answers_from_the_address_asked() {
    let agent = Agent::start(&["--dns-listen", "0.0.0.0:0"]);
    assert!(agent.dns.ip().is_unspecified());
    let server: SocketAddr = format!("127.0.0.1:{}", agent.dns.port()).parse().unwrap();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket
        .send_to(
            &support::dns::build("leader.mesos.", RecordType::A, None),
            server,
        )
        .unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = socket.recv_from(&mut buf).unwrap();
    assert_eq!(
        from, server,
        "the reply must come from the address the query went to"
    );
    assert!(Message::from_vec(&buf[..n]).is_ok());
    // The server's own name lists this node's reachable IPv4 addresses as `ip` reports them:
    // not loopback, not link-local, not their network addresses.
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .expect("ip (iproute2)");
    let mut expected: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1))
        .filter_map(|cidr| cidr.split('/').next())
        .filter(|ip| !ip.starts_with("127.") && !ip.starts_with("169.254."))
        .map(String::from)
        .collect();
    expected.sort();
    expected.dedup();
    assert_eq!(udp_answers(server, "ns1.mesos.", RecordType::A), expected);
}

/// `/v1/status` as JSON.
fn status(agent: &Agent) -> serde_json::Value {
    serde_json::from_str(&http_get(agent.http, "/v1/status")).expect("status JSON")
}

#[tokio::test]
async fn restarted_without_etcd_it_serves_the_local_cache_and_says_it_is_stale() {
    let mut etcd = etcd_with_task("c.1", "cached", "198.18.7.50").await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.json");
    let cache_arg = cache.to_str().unwrap().to_string();
    let endpoint = etcd.endpoint();
    let args = [
        "--etcd",
        endpoint.as_str(),
        "--cache-file",
        cache_arg.as_str(),
    ];
    let mut first = Agent::start(&args);
    let st = status(&first);
    assert_eq!(st["catalog"]["stale"], false, "{st}");
    assert_eq!(st["catalog"]["connected"], true, "{st}");
    assert_eq!(http_get(first.http, "/healthz"), "ok\n");
    // Every metric the shipped Grafana dashboard plots is one the agent exports (the VIP
    // panels' metrics are checked in tests/vip_health.rs, with the load balancer running).
    let metrics = http_get(first.http, "/metrics");
    let dashboard = include_str!("../docs/install/grafana-dashboard.json");
    serde_json::from_str::<serde_json::Value>(dashboard).expect("the dashboard is JSON");
    for name in dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("lodestar_"))
        .filter(|w| !VIP_METRIC_PREFIXES.iter().any(|p| w.starts_with(p)))
    {
        assert!(
            metrics.contains(name),
            "the dashboard plots {name}, which /metrics lacks"
        );
    }
    assert_eq!(http_get(first.http, "/readyz"), "ready\n");
    eventually(PATIENCE, "the cache file", || {
        let ok = std::fs::read_to_string(&cache).is_ok_and(|t| t.contains("cached"));
        async move { ok.then_some(()) }
    })
    .await;
    first.terminate();

    // etcd is gone; a restarted agent serves what it had, and says so.
    etcd.stop();
    let second = Agent::start(&args);
    assert_eq!(
        udp_answers(second.dns, "cached.marathon.mesos.", RecordType::A),
        ["198.18.7.50"]
    );
    let st = status(&second);
    assert_eq!(st["catalog"]["from_local_cache"], true, "{st}");
    assert_eq!(st["catalog"]["stale"], true, "{st}");
    assert_eq!(http_get(second.http, "/readyz"), "ready (catalog stale)\n");
    let m = http_get(second.http, "/metrics");
    assert_eq!(metric(&m, "lodestar_catalog_stale"), 1, "{m}");
    assert!(second
        .logs()
        .contains("serving the catalog cached on local disk"));

    // etcd returns: fresh again, and new writes show.
    let ips = ["198.18.7.50", "198.18.7.51"];
    etcd_back_and_caught_up(&mut etcd, second.dns, ("c.2", "cached"), ips).await;
    eventually(PATIENCE, "the catalog to be fresh", || {
        let st = status(&second);
        let fresh = st["catalog"]["stale"] == false && st["catalog"]["from_local_cache"] == false;
        async move { fresh.then_some(()) }
    })
    .await;
    eventually(PATIENCE, "the log to say so", || {
        let said = second.logs().contains("catalog is fresh again");
        async move { said.then_some(()) }
    })
    .await;
    assert!(second.logs().contains("catalog is stale"));
}

#[test]
fn lodestar_status_prints_one_screen() {
    let agent = Agent::start(&[]);
    udp(agent.dns, "leader.mesos.", RecordType::A, None);
    let text = support::lodestar_ok(&["status", "--http", &agent.http.to_string()]);
    support::assert_contains_all(
        &text,
        &[
            "the embedded demo catalog",
            "revision 1",
            "fresh",
            "NOERROR 1",
        ],
    );
    let dead = format!("127.0.0.1:{}", support::etcd::free_port());
    let out = lodestar(&["status", "--http", &dead]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot reach the agent's HTTP API"));
}

/// Metrics that exist only while the VIP load balancer runs.
const VIP_METRIC_PREFIXES: [&str; 4] = [
    "lodestar_vip_",
    "lodestar_l4lb_",
    "lodestar_health_",
    "lodestar_backend_",
];

/// `dns.reverse_zones`: PTR names inside them are answered here, authoritatively (the one
/// task's canonical name, the agent's name, NXDOMAIN); PTR names outside are forwarded.
#[test]
fn reverse_zones_are_answered_here_and_other_ptr_names_forwarded() {
    let upstream = Upstream::start(Ipv4Addr::new(198, 18, 99, 3));
    let agent_id = "20150925-143318-1660156426-5050-2036-S3";
    let hdfs = Task::new("hdfs.1", "hdfs", "marathon", agent_id)
        .with_ip("198.18.7.11".parse().unwrap(), IpSource::Netinfo);
    let config = format!(
        "[dns]\nreverse_zones = [\"198.18.0.0/16\"]\nupstreams = [\"{}\"]\n",
        upstream.addr
    );
    let (agent, _dir) = agent_on(agent_id, "agent-1.example", vec![hdfs], &config);
    let name = answers(&authoritative_ptr(
        agent.dns,
        "11.7.18.198.in-addr.arpa.",
        ResponseCode::NoError,
    ));
    assert!(
        name.len() == 1 && name[0].starts_with("hdfs-") && name[0].ends_with(".marathon.mesos."),
        "{name:?}"
    );
    assert_a_answers(agent.dns, &[(&name[0], &["198.18.7.11"])]);
    let agent_ptr = "1.0.18.198.in-addr.arpa.";
    assert_eq!(
        udp_answers(agent.dns, agent_ptr, RecordType::PTR),
        ["agent-1.example."]
    );
    authoritative_ptr(
        agent.dns,
        "99.7.18.198.in-addr.arpa.",
        ResponseCode::NXDomain,
    );
    assert_eq!(upstream.seen(), 0);
    // Outside the reverse zones: forwarded, as before.
    let r = udp(agent.dns, "1.0.19.198.in-addr.arpa.", RecordType::PTR, None);
    assert!(!r.metadata.authoritative);
    assert_eq!(upstream.seen(), 1);
}

/// Asks `name` PTR, which must be answered here, authoritatively, with `expected`.
fn authoritative_ptr(dns: SocketAddr, name: &str, expected: ResponseCode) -> Message {
    let r = udp(dns, name, RecordType::PTR, None);
    assert_eq!(rcode(&r), expected, "{name}");
    assert!(r.metadata.authoritative, "{name}");
    r
}

/// `dns.zone.health = "exclude"` on the real agent: the unhealthy task is out of the answer,
/// and `/metrics` says how many records are held back.
#[test]
fn unhealthy_tasks_are_held_back_when_asked_and_counted() {
    let task = |id: &str, ip: &str, health| {
        Task::new(id, "web", "marathon", "a1")
            .with_ip(ip.parse().unwrap(), IpSource::Netinfo)
            .with_health(health)
    };
    let tasks = vec![
        task("web.1", "198.18.7.21", Health::Healthy),
        task("web.2", "198.18.7.22", Health::Unhealthy),
    ];
    let config = "[dns.zone]\nhealth = \"exclude\"\n";
    let (agent, _dir) = agent_on("a1", "agent-1", tasks, config);
    assert_a_answers(agent.dns, &[("web.marathon.mesos.", &["198.18.7.21"])]);
    let m = http_get(agent.http, "/metrics");
    assert_metric_at_least(&m, "lodestar_dns_unhealthy_held_back", 1);
}

/// The agent on a catalog file of one agent (`id`, `hostname`, at 198.18.0.1) and `tasks`,
/// with the configuration file `config`; the directory holding both.
fn agent_on(
    id: &str,
    hostname: &str,
    tasks: Vec<Task>,
    config: &str,
) -> (Agent, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let doc = lodestar_control::file::CatalogDocument {
        schema: lodestar_control::model::SCHEMA_VERSION,
        agents: vec![MesosAgent::new(id, hostname, "198.18.0.1".parse().unwrap())],
        tasks,
        ..Default::default()
    };
    let catalog = dir.path().join("catalog.json");
    std::fs::write(&catalog, serde_json::to_string(&doc).unwrap()).unwrap();
    let config_file = dir.path().join("agent.toml");
    std::fs::write(&config_file, config).unwrap();
    let agent = Agent::start(&[
        "--config",
        config_file.to_str().unwrap(),
        "--catalog",
        catalog.to_str().unwrap(),
    ]);
    (agent, dir)
}

/// A port free for both UDP and TCP on `ip` (the agent is then told to listen on it).
fn free_port(ip: Ipv4Addr) -> u16 {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind((ip, 0)).unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for UDP and TCP on {ip}");
}

#[test]
fn an_agent_listening_on_the_wildcard_with_itself_as_upstream_refuses_instead_of_looping() {
    // `nameserver 127.0.0.1` in resolv.conf, and the agent on 0.0.0.0: the loop.
    let port = free_port(Ipv4Addr::UNSPECIFIED);
    let listen = format!("0.0.0.0:{port}");
    let upstream = format!("127.0.0.1:{port}");
    let agent = Agent::start(&["--dns-listen", &listen, "--upstream", &upstream]);
    let server: SocketAddr = upstream.parse().unwrap();
    let r = udp(server, "www.example.org.", RecordType::A, None);
    assert_eq!(rcode(&r), ResponseCode::Refused);
    let metrics = http_get(agent.http, "/metrics");
    assert_eq!(
        metric(
            &metrics,
            &format!("lodestar_dns_upstream_loop{{upstream=\"{upstream}\"}}")
        ),
        1
    );
    assert_eq!(
        metric(
            &metrics,
            "lodestar_dns_forward_total{outcome=\"refused_loop\"}"
        ),
        1
    );
    assert!(agent.logs().contains("forwarding loop"), "{}", agent.logs());
    // Our own names are still answered.
    assert_eq!(
        rcode(&udp(server, "leader.mesos.", RecordType::A, None)),
        ResponseCode::NoError
    );
}

#[tokio::test]
async fn an_upstream_that_forwards_back_to_the_agent_is_found_by_the_probe() {
    // The upstream is another forwarder (a relay on 127.0.0.1) that sends everything to the
    // agent on 127.0.0.77: a loop no address comparison can see.
    let port = free_port(Ipv4Addr::new(127, 0, 0, 77));
    let agent_addr: SocketAddr = format!("127.0.0.77:{port}").parse().unwrap();
    let relay = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    relay
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let relayed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let relay_thread = {
        let (relayed, stop) = (relayed.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((n, peer)) = relay.recv_from(&mut buf) else {
                    continue;
                };
                relayed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(answer) = udp_raw_within(agent_addr, &buf[..n], Duration::from_secs(1))
                {
                    let _ = relay.send_to(&answer, peer);
                }
            }
        })
    };
    let agent = Agent::start(&[
        "--dns-listen",
        &agent_addr.to_string(),
        "--upstream",
        &relay_addr.to_string(),
    ]);
    let gauge = format!("lodestar_dns_upstream_loop{{upstream=\"{relay_addr}\"}}");
    eventually(PATIENCE, "the probe finds the loop", || async {
        (metric(&http_get(agent.http, "/metrics"), &gauge) == 1).then_some(())
    })
    .await;
    assert!(
        agent
            .logs()
            .contains("our probe query sent to this upstream came back"),
        "{}",
        agent.logs()
    );
    let before = relayed.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(before, 1, "the probe went round once");
    let r = udp(agent_addr, "www.example.org.", RecordType::A, None);
    assert_eq!(rcode(&r), ResponseCode::Refused);
    assert_eq!(relayed.load(std::sync::atomic::Ordering::Relaxed), before);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    relay_thread.join().unwrap();
}
