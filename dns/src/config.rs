//! The DNS settings: the `mesos` zone's Mesos-DNS options (domain, TTL, SOA, label rules, IP
//! sources) and the `thisdcos.directory` zones'. Defaults are Mesos-DNS's and dcos-net's.

use std::net::IpAddr;

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
