//! DC/OS's `dcos-dns.json` as dcos-net reads it (`dcos_dns_app:maybe_load_json_config/0`,
//! `dcos_dns_config.erl`): the `upstream_resolvers` and `forward_zones` an operator carries over.
//!
//! Each upstream is `"a.b.c.d"` or `"a.b.c.d:port"` (port 53 when left out), IPv4 only as in
//! dcos-net (which stops on anything else; here it is a configuration problem). A forward zone
//! with no upstreams falls back to the defaults in dcos-net, so it is left out here. The keys
//! that say where dcos-net listens (`udp_port`, `tcp_port`, `bind_interface`, `bind_ips`,
//! `bind_ip_blacklist`) are ours to set in `dns.listen` and `dns.interface`; they are ignored.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;

use lodestar_control::ConfigProblem;
use serde::Deserialize;

use crate::config::{ConfigError, ForwardZone};

/// What the agent takes from the file.
#[derive(Debug, Default, PartialEq)]
pub struct DcosDnsJson {
    pub upstream_resolvers: Vec<SocketAddr>,
    pub forward_zones: Vec<ForwardZone>,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    upstream_resolvers: Vec<String>,
    #[serde(default)]
    forward_zones: BTreeMap<String, Vec<String>>,
}

/// Reads and checks the file; every problem at once, each under `dns.dcos_dns_json`.
pub fn read(path: &Path) -> Result<DcosDnsJson, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::one(FIELD, format!("cannot read {}: {e}", path.display())))?;
    parse(&text).map_err(|mut e| {
        for p in &mut e.0 {
            p.message = format!("{}: {}", path.display(), p.message);
        }
        e
    })
}

const FIELD: &str = "dns.dcos_dns_json";

pub fn parse(text: &str) -> Result<DcosDnsJson, ConfigError> {
    let raw: Raw =
        serde_json::from_str(text).map_err(|e| ConfigError::one(FIELD, e.to_string()))?;
    let mut problems = Vec::new();
    let mut addresses = |list: &[String], key: &str| -> Vec<SocketAddr> {
        list.iter()
            .filter_map(|s| match upstream(s) {
                Some(a) => Some(a),
                None => {
                    problems.push(ConfigProblem::new(
                        FIELD,
                        format!("{key}: {s:?} is not an IPv4 address with an optional port"),
                    ));
                    None
                }
            })
            .collect()
    };
    let upstream_resolvers = addresses(&raw.upstream_resolvers, "upstream_resolvers");
    let mut forward_zones: Vec<ForwardZone> = raw
        .forward_zones
        .iter()
        .map(|(zone, list)| ForwardZone {
            zone: zone.to_ascii_lowercase(),
            upstreams: addresses(list, &format!("forward_zones.{zone}")),
        })
        .filter(|z| !z.upstreams.is_empty())
        .collect();
    forward_zones.sort_by(|a, b| a.zone.cmp(&b.zone));
    if problems.is_empty() {
        Ok(DcosDnsJson {
            upstream_resolvers,
            forward_zones,
        })
    } else {
        Err(ConfigError(problems))
    }
}

/// `parse_ipv4_address_with_port/2`: split at `:`, port 53 when there is none.
fn upstream(s: &str) -> Option<SocketAddr> {
    let (ip, port) = match s.split_once(':') {
        Some((ip, port)) => (ip, port.parse::<u16>().ok().filter(|p| *p != 0)?),
        None => (s, 53),
    };
    let ip: Ipv4Addr = ip.parse().ok()?;
    Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dcos_nets_sample_reads_as_it_does() {
        // The sample in dcos_dns_config.erl, with DC/OS's listen keys.
        let json = parse(
            r#"{
              "upstream_resolvers": ["169.254.169.253"],
              "udp_port": 53, "tcp_port": 53, "bind_interface": "spartan",
              "bind_ip_blacklist": ["198.51.100.4"],
              "forward_zones": {
                "a.contoso.com" : ["1.1.1.1:53", "2.2.2.2"],
                "B.contoso.com" : ["3.3.3.3", "4.4.4.4:5353"],
                "empty.contoso.com" : []
              }
            }"#,
        )
        .unwrap();
        assert_eq!(
            json.upstream_resolvers,
            ["169.254.169.253:53".parse().unwrap()]
        );
        let zones: Vec<(String, Vec<String>)> = json
            .forward_zones
            .iter()
            .map(|z| {
                (
                    z.zone.clone(),
                    z.upstreams.iter().map(ToString::to_string).collect(),
                )
            })
            .collect();
        assert_eq!(
            zones,
            [
                (
                    "a.contoso.com".into(),
                    vec!["1.1.1.1:53".into(), "2.2.2.2:53".into()]
                ),
                (
                    "b.contoso.com".into(),
                    vec!["3.3.3.3:53".into(), "4.4.4.4:5353".into()]
                ),
            ]
        );
        assert_eq!(parse("{}").unwrap(), DcosDnsJson::default());
    }

    #[test]
    fn bad_upstreams_are_each_reported() {
        let e = parse(
            r#"{"upstream_resolvers": ["2001:db8::1", "1.2.3.4:0", "x"],
                "forward_zones": {"a.b": ["1.2.3.4:99999"]}}"#,
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 4, "{e}");
        assert!(e.0.iter().all(|p| p.field == FIELD));
        assert!(e.0[3].message.contains("forward_zones.a.b"), "{e}");
        assert!(parse("[1]").is_err());
        assert!(parse(r#"{"upstream_resolvers": "1.1.1.1"}"#).is_err());
    }
}
