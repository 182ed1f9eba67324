//! The DNS settings: the `mesos` zone's Mesos-DNS options (domain, TTL, SOA, label rules, IP
//! sources), the `thisdcos.directory` zones', and dcos-net's own names'. Defaults are
//! Mesos-DNS's and dcos-net's. Also response-rate limiting (`RrlConfig`, off by default as
//! in Knot's module).

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;

use lodestar_control::model::IpSource;
use lodestar_control::ConfigProblem;
use serde::{Deserialize, Serialize};

use crate::names::{fqdn, LabelSpec};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZoneConfig {
    /// The Mesos-DNS domain (`mesos`).
    pub domain: String,
    /// TTL of the `mesos` zone's records.
    pub ttl: u32,
    /// The server's own name (SOA mname, NS target, and an A/AAAA record).
    pub ns_name: String,
    /// SOA rname (the hostmaster's mailbox as a name).
    pub soa_rname: String,
    pub soa_refresh: u32,
    pub soa_retry: u32,
    pub soa_expire: u32,
    /// SRV weight (Mesos-DNS's `SRVRecordDefaultWeight`).
    pub srv_weight: u16,
    /// RFC 1123 (default) or RFC 952 labels.
    pub labels: LabelSpec,
    /// Where task addresses come from, first source with any address wins.
    pub ip_sources: Vec<IpSource>,
    /// Addresses published for `ns_name`; empty means the agent's DNS listen addresses.
    pub ns_addresses: Vec<IpAddr>,
    /// Serve `thisdcos.directory` (Spartan's zones: l4lb VIP names, autoip/containerip/agentip).
    pub thisdcos: bool,
    /// TTL of the `thisdcos.directory` records (dcos-net uses 5 s).
    pub thisdcos_ttl: u32,
    /// Site-aware answers (off by default, for Mesos-DNS compatibility): A/AAAA answers list
    /// this node's site's addresses first, and SRV gives its targets priority 0 and the other
    /// site's priority 1. Needs the agent's `site`.
    pub locality: bool,
    /// What answers do with tasks Mesos reports unhealthy.
    pub health: HealthPolicy,
    /// The networks whose reverse (PTR) zones are served: the agent's `dns.reverse_zones`.
    #[serde(skip)]
    pub reverse_zones: Vec<ipnet::IpNet>,
}

/// `dns.zone.health`: whether unhealthy tasks are in A, AAAA and SRV answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthPolicy {
    /// Every task is served, healthy or not, as Mesos-DNS does.
    #[default]
    Serve,
    /// Unhealthy tasks are left out of a name's answers, unless all its tasks are unhealthy
    /// (then all are served: fail open, as the VIP plan does).
    Exclude,
}

impl Default for ZoneConfig {
    fn default() -> Self {
        ZoneConfig {
            domain: "mesos".into(),
            ttl: 60,
            ns_name: "ns1.mesos".into(),
            soa_rname: "root.ns1.mesos".into(),
            soa_refresh: 60,
            soa_retry: 600,
            soa_expire: 86400,
            srv_weight: 1,
            labels: LabelSpec::Rfc1123,
            ip_sources: vec![IpSource::Netinfo, IpSource::Mesos, IpSource::Host],
            ns_addresses: Vec::new(),
            thisdcos: true,
            thisdcos_ttl: 5,
            locality: false,
            health: HealthPolicy::Serve,
            reverse_zones: Vec::new(),
        }
    }
}

impl ZoneConfig {
    /// Every problem with the settings, at once, each named by its key in the agent's
    /// configuration file.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let domain = self.domain.trim_end_matches('.');
        if domain.is_empty()
            || domain.split('.').any(|l| {
                l.is_empty()
                    || l.len() > 63
                    || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
        {
            out.push(ConfigProblem::new(
                "dns.zone.domain",
                format!("{:?} is not a valid domain name", self.domain),
            ));
        }
        if self.ip_sources.is_empty() {
            out.push(ConfigProblem::new(
                "dns.zone.ip_sources",
                "must name at least one source",
            ));
        }
        let mut seen = Vec::new();
        for s in &self.ip_sources {
            if seen.contains(s) {
                out.push(ConfigProblem::new(
                    "dns.zone.ip_sources",
                    format!("lists {s:?} twice"),
                ));
            }
            seen.push(*s);
        }
        for (field, name) in [
            ("dns.zone.ns_name", &self.ns_name),
            ("dns.zone.soa_rname", &self.soa_rname),
        ] {
            if hickory_proto::rr::Name::from_ascii(name).is_err()
                || name.trim_matches('.').is_empty()
            {
                out.push(ConfigProblem::new(
                    field,
                    format!("{name:?} is not a valid domain name"),
                ));
            }
        }
        out
    }

    /// The domain in lowercase with a trailing dot.
    pub fn fqdn_domain(&self) -> String {
        fqdn(&self.domain)
    }
}

/// Response-rate limiting of UDP answers from our zones (`crate::rrl`), Knot's `mod-rrl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RrlConfig {
    /// Responses per second per source network (/24, /56), response class and name; 0 (the
    /// default) turns rate limiting off. Knot's `rate-limit`.
    pub responses_per_second: u32,
    /// Every `slip`-th limited response is sent truncated (TC=1) instead of dropped: 0 drops
    /// all, 1 truncates all. Default 2: outgoing packets and bytes both stay below incoming.
    pub slip: u32,
    /// Buckets in the table (rounded up to a power of two; 8 bytes each).
    pub table_size: usize,
    /// Client networks never limited (Knot's `whitelist`). Default: loopback, where a node's
    /// own tasks ask from (sharing one /24), and which no one off the host can spoof.
    pub exempt: Vec<IpNet>,
}

impl Default for RrlConfig {
    fn default() -> Self {
        RrlConfig {
            responses_per_second: 0,
            slip: 2,
            table_size: 1 << 18,
            exempt: vec![
                "127.0.0.0/8".parse().expect("valid"),
                "::1/128".parse().expect("valid"),
            ],
        }
    }
}

/// dcos-net's own names (docs/dns.md): `spartan`, `localhost`, `zk`, `thisnode`, the
/// `mesos.thisdcos.directory` mirror and the renamed zones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DcosConfig {
    /// Serve them (those under `thisdcos.directory` also need `dns.zone.thisdcos`).
    pub enabled: bool,
    /// `thisnode.thisdcos.directory`: this node's private address. Default: what `detect_ip`
    /// prints, else the local address of the route to the first etcd endpoint.
    pub node_ip: Option<IpAddr>,
    /// `public.thisnode.thisdcos.directory`, with what `detect_ip_public` prints.
    pub public_ips: Vec<IpAddr>,
    /// A program that prints this node's private address (DC/OS:
    /// `/opt/mesosphere/bin/detect_ip`).
    pub detect_ip: Option<PathBuf>,
    /// A program that prints its public addresses, one a line (DC/OS:
    /// `/opt/mesosphere/bin/detect_ip_public`).
    pub detect_ip_public: Option<PathBuf>,
    /// How often the programs are run again, in seconds (dcos-net: 30 minutes).
    pub detect_interval_secs: u64,
    /// The cluster's zbase32 public key: `*.<key>.dcos.directory` is answered as
    /// `*.thisdcos.directory`. dcos-net keeps it in lashup (`GET /lashup/key` on a dcos-net
    /// node shows it); unset, those names are forwarded like any other.
    pub cluster_id: Option<String>,
}

impl Default for DcosConfig {
    fn default() -> Self {
        DcosConfig {
            enabled: true,
            node_ip: None,
            public_ips: Vec::new(),
            detect_ip: None,
            detect_ip_public: None,
            detect_interval_secs: 30 * 60,
            cluster_id: None,
        }
    }
}

impl RrlConfig {
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if self.responses_per_second > crate::rrl::MAX_RATE {
            out.push(ConfigProblem::new(
                "dns.rrl.responses_per_second",
                format!("at most {}", crate::rrl::MAX_RATE),
            ));
        }
        if self.slip > 100 {
            out.push(ConfigProblem::new("dns.rrl.slip", "at most 100"));
        }
        if !(1..=1 << 26).contains(&self.table_size) {
            out.push(ConfigProblem::new(
                "dns.rrl.table_size",
                format!("from 1 to {}", 1 << 26),
            ));
        }
        out
    }
}

impl DcosConfig {
    /// Every problem, each named by its key in the agent's configuration file.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        for (field, path) in [
            ("dns.dcos.detect_ip", &self.detect_ip),
            ("dns.dcos.detect_ip_public", &self.detect_ip_public),
        ] {
            if path.as_ref().is_some_and(|p| !p.is_absolute()) {
                out.push(ConfigProblem::new(field, "must be an absolute path"));
            }
        }
        if self.detect_interval_secs == 0 {
            out.push(ConfigProblem::new(
                "dns.dcos.detect_interval_secs",
                "must be at least 1",
            ));
        }
        if let Some(id) = &self.cluster_id {
            let zbase32 = |b: u8| b"ybndrfg8ejkmcpqxot1uwisza345h769".contains(&b);
            if id.is_empty() || id.len() > 63 || !id.bytes().all(zbase32) {
                out.push(ConfigProblem::new(
                    "dns.dcos.cluster_id",
                    format!("{id:?} is not a zbase32 key of at most 63 characters"),
                ));
            }
        }
        out
    }
}

/// Zone settings that cannot be served, every problem at once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the DNS zone settings are not usable: {}", list(.problems))]
pub struct ConfigProblems {
    pub problems: Vec<ConfigProblem>,
}

fn list(problems: &[ConfigProblem]) -> String {
    let texts: Vec<String> = problems.iter().map(ToString::to_string).collect();
    texts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dcos_problems() {
        let config = DcosConfig {
            detect_ip: Some("bin/detect_ip".into()),
            detect_interval_secs: 0,
            cluster_id: Some("Not-ZBase32".into()),
            ..DcosConfig::default()
        };
        let fields: Vec<String> = config.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "dns.dcos.detect_ip",
                "dns.dcos.detect_interval_secs",
                "dns.dcos.cluster_id"
            ]
        );
        assert!(DcosConfig::default().problems().is_empty());
    }

    #[test]
    fn every_problem_names_its_setting() {
        let config = ZoneConfig {
            domain: "bad domain".into(),
            ip_sources: vec![IpSource::Host, IpSource::Host],
            ns_name: ".".into(),
            ..ZoneConfig::default()
        };
        let fields: Vec<String> = config.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            ["dns.zone.domain", "dns.zone.ip_sources", "dns.zone.ns_name"]
        );
        assert!(ZoneConfig::default().problems().is_empty());
        let error = ConfigProblems {
            problems: config.problems(),
        };
        assert!(
            error
                .to_string()
                .contains("dns.zone.domain: \"bad domain\" is not a valid domain name; "),
            "{error}"
        );
    }
}
