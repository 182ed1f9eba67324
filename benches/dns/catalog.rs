//! The benchmark's data: a Marathon-like catalog, the same records as a zone file for Knot
//! (read back from the agent's own `/v1/axfr`), and the query mix dnsperf replays at both.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use lodestar_control::model::{Agent, Framework, Health, IpSource, Port, Task, SCHEMA_VERSION};
use lodestar_control::CatalogDocument;
use serde::Deserialize;

pub const AGENT_ID: &str = "20261121-000000-0001-0000-S1";
pub const FRAMEWORK: &str = "marathon";

/// A small deterministic generator (splitmix64): the same query file on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

pub fn agent() -> Agent {
    Agent::new(
        AGENT_ID,
        "agent-1.azure.example",
        "198.18.255.21".parse().expect("ip"),
    )
    .with_site("azure")
}

pub fn framework() -> Framework {
    Framework {
        id: "20261121-000000-0001-0000-0000".into(),
        name: FRAMEWORK.into(),
        hostname: Some("master-1.azure.example".into()),
        addresses: vec!["198.18.255.11".parse().expect("ip")],
        port: Some(8080),
    }
}

/// Task `i` of app `i % apps`: a netinfo IPv4, an IPv6 too for every fourth app, one resource
/// port and a named DiscoveryInfo port.
pub fn task(i: usize, apps: usize) -> Task {
    let app = i % apps;
    let name = format!("app-{app}");
    let v4 = format!("198.18.{}.{}", (i / 250) % 250, i % 250 + 1);
    let mut t = Task::new(
        format!("{name}.{i:08x}-7c1b-11ef-9c9a-0242ac110002"),
        name.clone(),
        FRAMEWORK,
        AGENT_ID,
    )
    .with_ip(v4.parse().expect("ipv4"), IpSource::Netinfo);
    if app % 4 == 0 {
        let v6 = format!("2001:db8::{:x}", i + 1);
        t = t.with_ip(v6.parse().expect("ipv6"), IpSource::Netinfo);
    }
    t.with_resource_port(31000 + (i % 1000) as u16)
        .with_discovery_name(name)
        .with_discovery_port(Port::tcp(8080).named("http"))
        .with_health(Health::Healthy)
}

/// The catalog file: one framework, one agent, `tasks` tasks over `apps` app names.
pub fn document(tasks: usize, apps: usize) -> CatalogDocument {
    CatalogDocument {
        schema: SCHEMA_VERSION,
        frameworks: vec![framework()],
        agents: vec![agent()],
        tasks: (0..tasks).map(|i| task(i, apps)).collect(),
        ..CatalogDocument::default()
    }
}

/// The `mesos` zone as the agent's Mesos-DNS-compatible `/v1/axfr` lists it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Axfr {
    #[serde(rename = "TTL")]
    pub ttl: u32,
    pub records: AxfrRecords,
}

#[derive(Debug, Deserialize)]
pub struct AxfrRecords {
    #[serde(rename = "As")]
    pub a: BTreeMap<String, Vec<String>>,
    #[serde(rename = "AAAAs")]
    pub aaaa: BTreeMap<String, Vec<String>>,
    #[serde(rename = "SRVs")]
    pub srv: BTreeMap<String, Vec<String>>,
}

impl Axfr {
    pub fn fetch(http: SocketAddr) -> Axfr {
        let body = http_get(http, "/v1/axfr");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/v1/axfr: {e}"))
    }

    pub fn record_count(&self) -> usize {
        let r = &self.records;
        [&r.a, &r.aaaa, &r.srv]
            .iter()
            .map(|m| m.values().map(Vec::len).sum::<usize>())
            .sum()
    }

    /// An RFC 1035 zone file for `mesos.` with exactly these records, and `soa` (the agent's
    /// own SOA rdata) so that negative answers carry the same SOA too.
    pub fn zone_file(&self, soa: &str) -> String {
        let ttl = self.ttl;
        let mut z = String::with_capacity(self.record_count() * 64);
        z.push_str(&format!(
            "$ORIGIN mesos.\n$TTL {ttl}\n@ {ttl} IN SOA {soa}\n@ {ttl} IN NS ns1.mesos.\n"
        ));
        for (name, ips) in &self.records.a {
            for ip in ips {
                z.push_str(&format!("{name} {ttl} IN A {ip}\n"));
            }
        }
        for (name, ips) in &self.records.aaaa {
            for ip in ips {
                z.push_str(&format!("{name} {ttl} IN AAAA {ip}\n"));
            }
        }
        for (name, targets) in &self.records.srv {
            for value in targets {
                let (target, port) = value
                    .rsplit_once(':')
                    .unwrap_or_else(|| panic!("SRV value {value:?} is not target:port"));
                z.push_str(&format!("{name} {ttl} IN SRV 0 1 {port} {target}\n"));
            }
        }
        z
    }

    fn contains(&self, name: &str) -> bool {
        let r = &self.records;
        r.a.contains_key(name) || r.aaaa.contains_key(name) || r.srv.contains_key(name)
    }
}

/// A minimal HTTP/1.0 GET on loopback; the body.
fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("HTTP connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("HTTP request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("HTTP response");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "GET {path}: {head}"
    );
    body.to_string()
}

/// One dnsperf input line.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Query {
    pub name: String,
    pub qtype: &'static str,
}

/// The query mix, shuffled with a fixed seed: 40% A (half short app names, half any A name:
/// canonical, `.slave`), 20% SRV (mostly `_app._tcp`), 20% NXDOMAIN, 20% AAAA (half names
/// with an IPv6, half without: NODATA).
pub fn queries(zone: &Axfr, apps: usize, lines: usize, seed: u64) -> Vec<Query> {
    let mut rng = Rng::new(seed);
    let a_names: Vec<&String> = zone.records.a.keys().collect();
    let aaaa_names: Vec<&String> = zone.records.aaaa.keys().collect();
    let nodata_names: Vec<&String> = a_names
        .iter()
        .copied()
        .filter(|n| !zone.records.aaaa.contains_key(*n))
        .collect();
    let srv_names: Vec<&String> = zone.records.srv.keys().collect();
    assert!(
        !aaaa_names.is_empty() && !nodata_names.is_empty() && !srv_names.is_empty(),
        "the catalog gave no AAAA, A-only or SRV names"
    );
    let mut out = Vec::with_capacity(lines);
    for i in 0..lines {
        let q = match i % 20 {
            0..=3 => {
                let name = format!("app-{}.{FRAMEWORK}.mesos.", rng.below(apps));
                assert!(zone.records.a.contains_key(&name), "{name} has no A record");
                (name, "A")
            }
            4..=7 => (a_names[rng.below(a_names.len())].clone(), "A"),
            8..=10 => {
                let name = format!("_app-{}._tcp.{FRAMEWORK}.mesos.", rng.below(apps));
                assert!(
                    zone.records.srv.contains_key(&name),
                    "{name} has no SRV record"
                );
                (name, "SRV")
            }
            11 => (srv_names[rng.below(srv_names.len())].clone(), "SRV"),
            12..=15 => {
                let name = if i % 4 == 0 {
                    format!("nx-{:012x}.mesos.", rng.next_u64() >> 16)
                } else {
                    format!("nx-{:012x}.{FRAMEWORK}.mesos.", rng.next_u64() >> 16)
                };
                assert!(!zone.contains(&name));
                (name, "A")
            }
            16 | 17 => (aaaa_names[rng.below(aaaa_names.len())].clone(), "AAAA"),
            _ => (nodata_names[rng.below(nodata_names.len())].clone(), "AAAA"),
        };
        out.push(Query {
            name: q.0,
            qtype: q.1,
        });
    }
    rng.shuffle(&mut out);
    out
}

/// The dnsperf data file.
pub fn dnsperf_input(queries: &[Query]) -> String {
    let mut s = String::with_capacity(queries.len() * 48);
    for q in queries {
        s.push_str(&q.name);
        s.push(' ');
        s.push_str(q.qtype);
        s.push('\n');
    }
    s
}

/// Each distinct query once, in a stable order.
pub fn distinct(queries: &[Query]) -> Vec<Query> {
    let set: BTreeSet<&Query> = queries.iter().collect();
    set.into_iter().cloned().collect()
}
