//! dcos-net's surface end to end: the real `lodestar agent` fed by a real etcd, asked by real
//! DNS clients (ours over UDP and TCP, and `dig`) and over HTTP: `ready.spartan`, `zk-N.zk`,
//! `thisnode`, the `mesos.thisdcos.directory` mirror, the `thisdcos.global`, `dclb` and
//! cluster-key renames, DC/OS's `dcos-dns.json` upstreams, dcos-net's HTTP API, and the dummy
//! listen interface inside a network namespace the test makes.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use lodestar_control::keys::{Record, RecordKey};
use lodestar_control::model::{
    Agent as MesosAgent, Health, IpSource, Leader, Master, Port, Task, VipAddress,
};
use support::agent::Agent;
use support::dns::{answers, tcp, udp, udp_answers, Upstream};
use support::http::http_request;
use support::netns::Netns;
use support::{eventually, EtcdServer, TempFile};

const PATIENCE: Duration = Duration::from_secs(20);
const AGENT_ID: &str = "20261202-000000-0001-0000-S1";

fn rcode(m: &Message) -> ResponseCode {
    m.metadata.response_code
}

fn master(id: &str, ip: &str) -> Record {
    Record::Master(Master {
        id: id.into(),
        hostname: None,
        address: ip.parse().unwrap(),
        port: 5050,
    })
}

/// `web` on marathon: 198.18.7.50, port 8080 named `http`, behind the named VIP `/web:80`.
fn web_task() -> Task {
    Task::new("web.1", "web", "marathon", AGENT_ID)
        .with_health(Health::Healthy)
        .with_ip("198.18.7.50".parse().unwrap(), IpSource::Netinfo)
        .with_discovery_name("web")
        .with_discovery_port(Port::tcp(8080).named("http").with_label("VIP_0", "/web:80"))
}

/// A program that prints `lines`, as DC/OS's `detect_ip` scripts do.
fn script(dir: &std::path::Path, name: &str, lines: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\nprintf '{lines}'\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn a(dns: SocketAddr, name: &str) -> Vec<String> {
    udp_answers(dns, name, RecordType::A)
}

/// The sorted answers to `name` `qtype` and the first one's TTL.
fn answers_and_ttl(dns: SocketAddr, name: &str, qtype: RecordType) -> (Vec<String>, u32) {
    let r = udp(dns, name, qtype, None);
    let ttl = r.answers.first().map(|a| a.ttl).expect("an answer");
    (answers(&r), ttl)
}

/// `name` `qtype` is NXDOMAIN, the SOA in the authority section that of `zone`.
fn assert_nxdomain_of(dns: SocketAddr, name: &str, qtype: RecordType, zone: &str) {
    let r = udp(dns, name, qtype, None);
    assert_eq!(rcode(&r), ResponseCode::NXDomain, "{name}");
    assert_eq!(r.authorities[0].name.to_ascii(), zone, "{name}");
}

/// The agent's configuration file: `text`, in a temporary directory of its own.
fn config_file(text: &str) -> TempFile {
    TempFile::new("agent.toml", text)
}

#[tokio::test]
async fn dcos_nets_names_upstreams_and_api_from_etcd() {
    let etcd = EtcdServer::start();
    let store = etcd.store().await;
    store
        .put(&[
            Record::Agent(MesosAgent::new(
                AGENT_ID,
                "agent-1",
                "198.18.7.1".parse().unwrap(),
            )),
            master("m1", "198.18.3.1"),
            master("m2", "198.18.3.2"),
            master("m3", "198.18.3.3"),
            Record::Leader(Leader {
                hostname: None,
                address: "198.18.3.2".parse().unwrap(),
                port: 5050,
            }),
            Record::Task(web_task()),
            Record::VipAddress(VipAddress {
                name: "/web".into(),
                addresses: vec!["198.19.7.5".parse().unwrap()],
            }),
        ])
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let detect_ip = script(dir.path(), "detect_ip", "198.18.5.5\\n");
    let detect_public = script(
        dir.path(),
        "detect_ip_public",
        "198.18.9.9\\nnot an address\\n2001:db8::9\\n",
    );
    let default_upstream = Upstream::start(Ipv4Addr::new(198, 18, 99, 1));
    let corp_upstream = Upstream::start(Ipv4Addr::new(198, 18, 99, 2));
    let dcos_dns_json = dir.path().join("dcos-dns.json");
    std::fs::write(
        &dcos_dns_json,
        format!(
            r#"{{"upstream_resolvers": ["{}"], "udp_port": 53, "bind_interface": "spartan",
                "forward_zones": {{"Corp.Example": ["{}"]}}}}"#,
            default_upstream.addr, corp_upstream.addr
        ),
    )
    .unwrap();
    let api = std::net::SocketAddr::from(([127, 0, 0, 1], support::etcd::free_port()));
    let config = config_file(&format!(
        "[dns]\ndcos_dns_json = {:?}\n[dns.dcos]\ndetect_ip = {:?}\ndetect_ip_public = {:?}\n\
         cluster_id = \"ybndrfg8\"\n[http]\ndcos_net_listen = \"{api}\"\n",
        dcos_dns_json, detect_ip, detect_public
    ));
    let agent = Agent::start(&["--etcd", &etcd.endpoint(), "--config", config.arg()]);
    let dns = agent.dns;

    // ready.spartan, asked as DC/OS's gen_resolvconf.py and watchdog ask it: type ANY.
    let out = Command::new("dig")
        .args(["+norecurse", "+time=2", "+tries=1", "-p"])
        .arg(dns.port().to_string())
        .arg(format!("@{}", dns.ip()))
        .args(["ready.spartan", "ANY"])
        .output()
        .expect("dig (Debian package bind9-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("status: NOERROR"), "{text}");
    assert!(text.contains("flags: qr aa"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["ready.spartan.", "5", "IN", "A", "127.0.0.1"]),
        "{text}"
    );
    let r = tcp(dns, "ready.spartan.", RecordType::A);
    assert_eq!(answers(&r), ["127.0.0.1"]);
    assert_eq!(a(dns, "ns.spartan."), ["198.51.100.1"]);
    assert_eq!(a(dns, "localhost."), ["127.0.0.1"]);
    // dcos-net's SOA, its minimum (1) the TTL of negative answers.
    let r = udp(dns, "nothing.spartan.", RecordType::A, None);
    assert_eq!(rcode(&r), ResponseCode::NXDomain);
    let soa = &r.authorities[0];
    assert_eq!((soa.name.to_ascii().as_str(), soa.ttl), ("spartan.", 1));
    let RData::SOA(data) = &soa.data else {
        panic!("{soa:?}")
    };
    assert_eq!(
        (
            data.mname.to_ascii().as_str(),
            data.rname.to_ascii().as_str(),
            data.serial,
            data.refresh,
            data.retry,
            data.expire,
            data.minimum
        ),
        (
            "ns.spartan.",
            "support.mesosphere.com.",
            1,
            60,
            180,
            86400,
            1
        )
    );
    assert_eq!(
        answers_and_ttl(dns, "zk.", RecordType::NS),
        (vec!["ns.spartan.".into()], 3600)
    );

    // zk-1..5.zk: the three masters cycled to five names; they follow etcd.
    let zk = |dns| -> Vec<String> {
        (1..=5)
            .flat_map(|n| a(dns, &format!("zk-{n}.zk.")))
            .collect()
    };
    assert_eq!(
        zk(dns),
        [
            "198.18.3.1",
            "198.18.3.2",
            "198.18.3.3",
            "198.18.3.1",
            "198.18.3.2"
        ]
    );
    store.delete(&RecordKey::Master("m3".into())).await.unwrap();
    eventually(PATIENCE, "zk-3.zk to follow the masters", || {
        let got = zk(dns);
        async move {
            (got == [
                "198.18.3.1",
                "198.18.3.2",
                "198.18.3.1",
                "198.18.3.2",
                "198.18.3.1",
            ])
            .then_some(())
        }
    })
    .await;
    assert_eq!(a(dns, "leader.dcos.thisdcos.directory."), ["198.18.3.2"]);
    assert_eq!(
        a(dns, "master.dcos.thisdcos.directory."),
        ["198.18.3.1", "198.18.3.2"]
    );

    // thisnode: what the detect_ip programs print (the line that is no address skipped).
    assert_eq!(
        answers_and_ttl(dns, "thisnode.thisdcos.directory.", RecordType::A),
        (vec!["198.18.5.5".into()], 5)
    );
    let public = "public.thisnode.thisdcos.directory.";
    assert_eq!(a(dns, public), ["198.18.9.9"]);
    assert_eq!(udp_answers(dns, public, RecordType::AAAA), ["2001:db8::9"]);

    // The mesos zone mirrored with dcos-net's shape.
    assert_eq!(
        answers_and_ttl(dns, "web.marathon.mesos.thisdcos.directory.", RecordType::A),
        (vec!["198.18.7.50".into()], 5)
    );
    let r = udp(
        dns,
        "_web._tcp.marathon.mesos.thisdcos.directory.",
        RecordType::SRV,
        None,
    );
    assert_eq!(r.answers.len(), 1, "{r:?}");
    let RData::SRV(srv) = &r.answers[0].data else {
        panic!("{r:?}")
    };
    assert_eq!((srv.priority, srv.weight, srv.port), (1, 1, 8080));
    let target = srv.target.to_ascii();
    assert!(
        target.ends_with(".marathon.mesos.thisdcos.directory."),
        "{target}"
    );
    assert_eq!(a(dns, &target), ["198.18.7.50"]);
    assert_nxdomain_of(
        dns,
        "gone.marathon.mesos.thisdcos.directory.",
        RecordType::SRV,
        "mesos.thisdcos.directory.",
    );

    // The renamed zones answer as what they stand for, under the asked name.
    for (name, want) in [
        ("web.marathon.mesos.thisdcos.global.", "198.18.7.50"),
        ("web.marathon.agentip.dcos.thisdcos.global.", "198.18.7.1"),
        ("web.marathon.l4lb.thisdcos.directory.", "198.19.7.5"),
        ("web.marathon.l4lb.thisdcos.global.", "198.19.7.5"),
        ("web.marathon.dclb.thisdcos.directory.", "198.19.7.5"),
        ("Web.Marathon.DCLB.thisdcos.global.", "198.19.7.5"),
        ("web.marathon.l4lb.ybndrfg8.dcos.directory.", "198.19.7.5"),
        ("thisnode.thisdcos.global.", "198.18.5.5"),
    ] {
        let r = udp(dns, name, RecordType::A, None);
        assert_eq!(answers(&r), [want], "{name}");
        assert_eq!(r.answers[0].name.to_ascii(), name);
        assert!(r.metadata.authoritative, "{name}");
    }
    assert_nxdomain_of(
        dns,
        "nothing.marathon.dclb.thisdcos.global.",
        RecordType::A,
        "dclb.thisdcos.global.",
    );

    // dcos-dns.json's upstream_resolvers and forward_zones.
    assert_eq!(a(dns, "example.org."), ["198.18.99.1"]);
    assert_eq!(a(dns, "host.corp.example."), ["198.18.99.2"]);

    // dcos-net's HTTP API on its own listener.
    let get = |path: &str| http_request(api, "GET", path, &[]);
    let (status, head, body) = get("/v1/version");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/json"), "{head}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["Service"].is_string() && v["Version"].is_string(),
        "{body}"
    );
    for path in ["/v1/config", "/v1/enumerate"] {
        assert_eq!(get(path).0, 501, "{path}");
    }
    assert_eq!(
        get("/v1/hosts/web.marathon.mesos.thisdcos.directory").2,
        r#"[{"host":"web.marathon.mesos.thisdcos.directory","ip":"198.18.7.50"}]"#
    );
    assert_eq!(
        get("/v1/hosts/zk-1.zk").2,
        r#"[{"host":"zk-1.zk","ip":"198.18.3.1"}]"#
    );
    assert_eq!(get("/v1/hosts/nothing.example").2, "[]");
    let (status, _, body) = get("/v1/services/_web._tcp.marathon.mesos.thisdcos.directory");
    assert_eq!(status, 200);
    let services: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(services[0]["ip"], "198.18.7.50", "{body}");
    assert_eq!(services[0]["port"], 8080, "a number, as dcos-net: {body}");
    assert_eq!(
        services[0]["service"],
        "_web._tcp.marathon.mesos.thisdcos.directory"
    );
    assert_eq!(
        get("/v1/services/_none._tcp.marathon.mesos.thisdcos.directory").2,
        "[]"
    );

    let (status, _, body) = get("/v1/records");
    assert_eq!(status, 200);
    let records: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    for (name, host, rtype) in [
        ("ready.spartan", "127.0.0.1", "A"),
        ("zk-1.zk", "198.18.3.1", "A"),
        ("localhost", "127.0.0.1", "A"),
        ("thisnode.thisdcos.directory", "198.18.5.5", "A"),
        ("public.thisnode.thisdcos.directory", "2001:db8::9", "AAAA"),
        ("web.marathon.l4lb.thisdcos.directory", "198.19.7.5", "A"),
        ("web.marathon.mesos.thisdcos.directory", "198.18.7.50", "A"),
    ] {
        let row = serde_json::json!({"host": host, "name": name, "rtype": rtype});
        assert!(records.contains(&row), "{row} in {body}");
    }
    assert!(
        records.iter().any(|r| r["rtype"] == "SRV"
            && r["name"] == "_web._tcp.marathon.mesos.thisdcos.directory"
            && r["host"]
                .as_str()
                .is_some_and(|h| h.ends_with(".mesos.thisdcos.directory:8080"))),
        "{body}"
    );

    let (status, head, body) = get("/v1/vips");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        r#"[{"backend":[{"ip":"198.18.7.50","port":8080}],"protocol":"tcp","vip":"web.marathon.l4lb.thisdcos.directory:80"}]"#
    );
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .expect("an ETag")
        .to_string();
    let (status, _, body) =
        http_request(api, "GET", "/v1/vips", &[&format!("If-None-Match: {etag}")]);
    assert_eq!((status, body.as_str()), (304, ""));
    assert_eq!(http_request(api, "POST", "/v1/vips", &[]).0, 405);
    assert_eq!(http_request(api, "DELETE", "/v1/records", &[]).0, 405);
    assert_eq!(
        http_request(api, "GET", "/v1/vips", &["Accept: text/html"]).0,
        406
    );
    assert_eq!(get("/lashup/key").0, 404);
    assert_eq!(get("/v1/metrics/default").0, 200);
    assert_eq!(get("/v1/metrics/dns").0, 404);
}

/// `[dns.interface]`: the agent makes the dummy link, serves on its addresses (198.18.0.0/15
/// and 2001:db8::/32 here, DC/OS's 198.51.100.1-3 in docs/install/agent.dcos.toml), and removes
/// it on SIGTERM; a link already there (DC/OS's own unit makes one) is taken over. The catalog
/// is the embedded demo's: etcd on the root namespace's loopback is out of this namespace's
/// reach, and the addresses are what is tested here.
#[test]
fn the_listen_interface_is_made_served_and_removed() {
    let ns = Netns::new("spartan");
    let config = config_file(
        "[dns.interface]\nname = \"spartan\"\n\
         addresses = [\"198.18.0.1\", \"198.18.0.2\", \"198.18.0.3\", \"2001:db8::53\"]\n",
    );
    let dig = |server: &str, extra: &[&str], name: &str, qtype: &str| -> String {
        let mut args = vec!["dig", "+short", "+time=2", "+tries=1"];
        args.extend_from_slice(extra);
        let at = format!("@{server}");
        args.extend([at.as_str(), name, qtype]);
        String::from_utf8_lossy(&ns.exec(&args).stdout)
            .trim()
            .to_string()
    };
    for take_over in [false, true] {
        if take_over {
            // Of the kind the agent made: a dummy, or a bridge where the kernel has no dummy
            // driver (this CI's kernel is built without CONFIG_DUMMY).
            if !ns
                .exec(&["ip", "link", "add", "spartan", "type", "dummy"])
                .status
                .success()
            {
                ns.exec_ok(&["ip", "link", "add", "spartan", "type", "bridge"]);
            }
        }
        let mut agent = Agent::start_in(&ns, &["--config", config.arg()]);
        let shown = String::from_utf8_lossy(
            &ns.exec_ok(&["ip", "-o", "addr", "show", "dev", "spartan"])
                .stdout,
        )
        .to_string();
        for cidr in [
            "198.18.0.1/32",
            "198.18.0.2/32",
            "198.18.0.3/32",
            "2001:db8::53/128",
        ] {
            assert!(shown.contains(cidr), "{cidr} in {shown}");
        }
        let link = String::from_utf8_lossy(&ns.exec_ok(&["ip", "link", "show", "spartan"]).stdout)
            .to_string();
        assert!(link.contains(",UP"), "{link}");
        for server in ["198.18.0.1", "198.18.0.2", "198.18.0.3", "2001:db8::53"] {
            assert_eq!(
                dig(server, &[], "ready.spartan", "ANY"),
                "127.0.0.1",
                "{server}"
            );
            assert_eq!(
                dig(server, &["+tcp"], "ready.spartan", "A"),
                "127.0.0.1",
                "{server}"
            );
        }
        // ns.spartan is where resolvers are pointed: the interface's first address.
        assert_eq!(dig("198.18.0.2", &[], "ns.spartan", "A"), "198.18.0.1");
        let mut web: Vec<String> = dig("198.18.0.3", &[], "web.marathon.mesos", "A")
            .lines()
            .map(String::from)
            .collect();
        web.sort();
        assert_eq!(web, ["127.0.1.101", "127.0.2.101"]);
        let status = agent.terminate().expect("an exit status");
        assert!(status.success(), "{status}");
        let after = ns.exec(&["ip", "link", "show", "spartan"]);
        assert!(!after.status.success(), "the interface outlived the agent");
    }
}

/// `ready.spartan` is the agent's readiness, not its sockets': once SIGTERM starts the drain it
/// is SERVFAIL while the servers still answer everything else. An HTTP request left half sent
/// holds the drain open (the HTTP server waits for it, up to the drain timeout).
#[tokio::test]
async fn ready_spartan_answers_only_while_the_agent_is_ready() {
    use std::io::Write;
    let mut agent = Agent::start(&[]);
    let dns = agent.dns;
    assert_eq!(a(dns, "ready.spartan."), ["127.0.0.1"]);
    let mut held = std::net::TcpStream::connect(agent.http).unwrap();
    held.write_all(b"GET /v1/version HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(agent.pid() as libc::pid_t, libc::SIGTERM) };
    eventually(PATIENCE, "ready.spartan to go with the drain", || {
        let r = udp(dns, "ready.spartan.", RecordType::A, None);
        async move { (rcode(&r) == ResponseCode::ServFail && r.answers.is_empty()).then_some(()) }
    })
    .await;
    let r = udp(dns, "web.marathon.mesos.", RecordType::A, None);
    assert_eq!(rcode(&r), ResponseCode::NoError, "the servers still answer");
    assert_eq!(a(dns, "ns.spartan."), ["198.51.100.1"]);
    drop(held);
    let status = agent.terminate().expect("an exit status");
    assert!(status.success(), "{status}");
}

/// An agent that cannot start leaves no interface behind: here its own listen address takes the
/// interface address's DNS port first, so binding the interface's fails.
#[test]
fn an_agent_that_fails_to_start_removes_its_interface() {
    let ns = Netns::new("spartanfail");
    let config = config_file(
        "[dns]\nlisten = [\"198.18.0.1:53\"]\n[dns.interface]\nname = \"spartan\"\n\
         addresses = [\"198.18.0.1\"]\n",
    );
    let out = ns
        .command(env!("CARGO_BIN_EXE_lodestar"))
        .args([
            "agent",
            "--no-l4lb",
            "--http-listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&config.path)
        .arg("--cache-file")
        .arg(config.dir().join("cache.json"))
        .env_remove("LODESTAR_ETCD")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("cannot serve DNS on"), "{log}");
    assert!(log.contains("listen interface removed"), "{log}");
    let after = ns.exec(&["ip", "link", "show", "spartan"]);
    assert!(
        !after.status.success(),
        "the interface outlived the agent:\n{log}"
    );
}
