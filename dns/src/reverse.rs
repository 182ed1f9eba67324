//! Reverse lookups (`dns.reverse_zones`): the `in-addr.arpa` / `ip6.arpa` zones the agent is
//! authoritative for, and which name each address in them gives (mesos-dns #67, #286).
//!
//! An address gives its agent's hostname when it is an agent's address (also when tasks share
//! it: host networking); else the canonical `mesos` name of the one running task that has it;
//! else nothing (NXDOMAIN). Neither Mesos-DNS nor dcos-net serves PTR records.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use lodestar_control::model::TaskState;
use lodestar_control::Snapshot;

use crate::config::ZoneConfig;
use crate::names::fqdn;
use crate::records::{canonical_name, select_ips};

/// The reverse zones (`18.198.in-addr.arpa.`) that cover `net` exactly: a CIDR that is not on
/// a label boundary (8 bits for IPv4, 4 for IPv6) is covered by the zones of the next boundary
/// inside it, at most 128 of them (`198.18.0.0/15`: `18.198` and `19.198.in-addr.arpa.`).
pub fn zones_of(net: &IpNet) -> Vec<String> {
    let net = net.trunc();
    let step = if net.addr().is_ipv4() { 8 } else { 4 };
    let aligned = net.prefix_len().div_ceil(step) * step;
    match net.subnets(aligned) {
        Ok(subnets) => subnets
            .map(|s| zone_name(s.network(), usize::from(s.prefix_len() / step)))
            .collect(),
        Err(_) => vec![zone_name(
            net.network(),
            usize::from(net.prefix_len() / step),
        )],
    }
}

/// The reverse name of an address (`4.3.18.198.in-addr.arpa.`).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => zone_name(ip, 4),
        IpAddr::V6(_) => zone_name(ip, 32),
    }
}

/// The reverse name of the first `labels` octets (IPv4) or nibbles (IPv6) of `ip`.
fn zone_name(ip: IpAddr, labels: usize) -> String {
    let mut parts: Vec<String> = match ip {
        IpAddr::V4(v4) => v4.octets()[..labels].iter().map(u8::to_string).collect(),
        IpAddr::V6(v6) => v6
            .octets()
            .iter()
            .flat_map(|b| [b >> 4, b & 0xf])
            .take(labels)
            .map(|n| format!("{n:x}"))
            .collect(),
    };
    parts.reverse();
    let suffix = if ip.is_ipv4() {
        "in-addr.arpa."
    } else {
        "ip6.arpa."
    };
    if parts.is_empty() {
        return suffix.to_string();
    }
    format!("{}.{suffix}", parts.join("."))
}

/// Address -> the name its PTR record gives, for the addresses inside `config.reverse_zones`.
pub fn ptr_names(config: &ZoneConfig, snapshot: &Snapshot) -> BTreeMap<IpAddr, String> {
    let inside = |ip: &IpAddr| config.reverse_zones.iter().any(|n| n.contains(ip));
    let mut out = BTreeMap::new();
    for agent in snapshot.agents.values() {
        // An agent known by its address alone has no name to give.
        let named = !agent.hostname.is_empty() && agent.hostname.parse::<IpAddr>().is_err();
        for ip in agent.addresses.iter().filter(|ip| inside(ip)) {
            if named {
                out.insert(*ip, fqdn(&agent.hostname));
            }
        }
    }
    let agent_ips: std::collections::HashSet<IpAddr> = snapshot
        .agents
        .values()
        .flat_map(|a| a.addresses.iter().copied())
        .collect();
    // Address -> the canonical names of the running tasks that have it.
    let mut owners: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
    for task in snapshot.tasks.values() {
        if task.state != TaskState::Running {
            continue;
        }
        let Some(agent) = snapshot.agents.get(&task.agent) else {
            continue;
        };
        let Some(name) = canonical_name(config, agent, task) else {
            continue;
        };
        for ip in select_ips(config, agent, task) {
            if inside(&ip) && !agent_ips.contains(&ip) {
                let names = owners.entry(ip).or_default();
                if !names.contains(&name) {
                    names.push(name.clone());
                }
            }
        }
    }
    for (ip, mut names) in owners {
        if names.len() == 1 {
            out.insert(ip, names.remove(0));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_become_the_zones_that_cover_them() {
        let zones = |s: &str| zones_of(&s.parse().unwrap());
        assert_eq!(
            zones("198.18.0.0/15"),
            ["18.198.in-addr.arpa.", "19.198.in-addr.arpa."]
        );
        assert_eq!(zones("198.18.7.0/24"), ["7.18.198.in-addr.arpa."]);
        assert_eq!(
            zones("198.18.7.4/31"),
            ["4.7.18.198.in-addr.arpa.", "5.7.18.198.in-addr.arpa."]
        );
        assert_eq!(zones("198.18.7.4/32"), ["4.7.18.198.in-addr.arpa."]);
        assert_eq!(zones("198.18.7.9/16"), ["18.198.in-addr.arpa."]);
        assert_eq!(zones("2001:db8::/32"), ["8.b.d.0.1.0.0.2.ip6.arpa."]);
        assert_eq!(zones("2001:db8::/30").len(), 4);
        assert_eq!(zones("0.0.0.0/1").len(), 128);
        assert_eq!(zones("0.0.0.0/0"), ["in-addr.arpa."]);
        assert_eq!(
            reverse_name("198.18.3.4".parse().unwrap()),
            "4.3.18.198.in-addr.arpa."
        );
        assert_eq!(
            reverse_name("2001:db8::1".parse().unwrap()),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
        );
    }
}
