//! Which addresses a VIP may take: only those inside `l4lb.vip_ranges`, and never one that this
//! node or its agent needs for itself (its own addresses, loopback, etcd, the masters, DNS).
//!
//! A task's `VIP_<n>` label names any address it likes, and every node steers connections to a
//! VIP: without this, a label `VIP_0=<etcd address>:2379` would take over every agent's catalog
//! connection, and `<upstream>:53` its forwarded DNS. A refused VIP address is left out of the
//! plan (its maps entries go), counted by reason and logged when it is first refused.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use lodestar_control::Snapshot;
use serde::Serialize;

use crate::plan::{Plan, ServiceAddr};

/// Why a VIP address is not steered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// Inside none of `l4lb.vip_ranges` (or none is configured).
    OutsideRanges,
    /// 127.0.0.0/8 or ::1: the node's own services.
    Loopback,
    /// Unspecified, multicast, broadcast or link-local: no service's address.
    NotUnicast,
    /// An address of one of this node's interfaces.
    NodeAddress,
    /// An etcd endpoint the agent reads the catalog from.
    Etcd,
    /// A Mesos master (or the leader) of the catalog.
    Master,
    /// A DNS upstream the agent forwards to.
    Upstream,
}

impl Refusal {
    pub const ALL: [Refusal; 7] = [
        Refusal::OutsideRanges,
        Refusal::Loopback,
        Refusal::NotUnicast,
        Refusal::NodeAddress,
        Refusal::Etcd,
        Refusal::Master,
        Refusal::Upstream,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::OutsideRanges => "outside_ranges",
            Refusal::Loopback => "loopback",
            Refusal::NotUnicast => "not_unicast",
            Refusal::NodeAddress => "node_address",
            Refusal::Etcd => "etcd",
            Refusal::Master => "master",
            Refusal::Upstream => "upstream",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::OutsideRanges => "outside l4lb.vip_ranges",
            Refusal::Loopback => "a loopback address",
            Refusal::NotUnicast => "not a unicast address",
            Refusal::NodeAddress => "an address of this node",
            Refusal::Etcd => "an etcd endpoint's address",
            Refusal::Master => "a Mesos master's address",
            Refusal::Upstream => "a DNS upstream's address",
        })
    }
}

/// What the agent protects, besides the ranges.
#[derive(Clone, Debug, Default)]
pub struct VipGuard {
    /// `l4lb.vip_ranges`: empty refuses every VIP address.
    pub ranges: Vec<IpNet>,
    /// Addresses the agent itself talks to (etcd endpoints, DNS upstreams), with which.
    pub protected: Vec<(IpAddr, Refusal)>,
    /// This node's interface addresses, read again at every apply (they change at run time).
    pub node_addresses: Option<fn() -> Vec<IpAddr>>,
}

/// A VIP address left out of the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Refused {
    /// The catalog's name for it (`/web:80/tcp`).
    pub vip: String,
    pub reason: Refusal,
}

impl VipGuard {
    /// Why `ip` may not be a VIP address, if it may not (`masters`: the catalog's).
    pub fn check(&self, ip: IpAddr, node: &[IpAddr], masters: &[IpAddr]) -> Option<Refusal> {
        let ip = canonical(ip);
        if ip.is_loopback() {
            return Some(Refusal::Loopback);
        }
        let not_unicast = ip.is_unspecified()
            || ip.is_multicast()
            || match ip {
                IpAddr::V4(v4) => v4.is_broadcast() || v4.is_link_local(),
                IpAddr::V6(v6) => v6.is_unicast_link_local(),
            };
        if not_unicast {
            return Some(Refusal::NotUnicast);
        }
        if node.iter().any(|a| canonical(*a) == ip) {
            return Some(Refusal::NodeAddress);
        }
        if let Some((_, why)) = self.protected.iter().find(|(a, _)| canonical(*a) == ip) {
            return Some(*why);
        }
        if masters.iter().any(|a| canonical(*a) == ip) {
            return Some(Refusal::Master);
        }
        if !self.ranges.iter().any(|r| r.contains(&ip)) {
            return Some(Refusal::OutsideRanges);
        }
        None
    }

    /// Takes every refused VIP address out of `plan`, and says why.
    pub fn screen(&self, plan: &mut Plan, snapshot: &Snapshot) -> BTreeMap<ServiceAddr, Refused> {
        let node = self.node_addresses.map(|f| f()).unwrap_or_default();
        let mut masters: Vec<IpAddr> = snapshot.masters.values().map(|m| m.address).collect();
        masters.extend(snapshot.leader.as_ref().map(|l| l.address));
        let mut out = BTreeMap::new();
        plan.retain(|addr, svc| match self.check(addr.ip, &node, &masters) {
            Some(reason) => {
                out.insert(
                    *addr,
                    Refused {
                        vip: svc.vip.clone(),
                        reason,
                    },
                );
                false
            }
            None => true,
        });
        out
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is (`::ffff:10.0.0.1` reaches 10.0.0.1).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> VipGuard {
        VipGuard {
            ranges: vec![
                "198.19.0.0/16".parse().unwrap(),
                "2001:db8:ff::/48".parse().unwrap(),
            ],
            protected: vec![
                ("198.19.0.11".parse().unwrap(), Refusal::Etcd),
                ("2001:db8:ff::53".parse().unwrap(), Refusal::Upstream),
            ],
            node_addresses: None,
        }
    }

    #[test]
    fn every_address_the_agent_needs_is_refused_with_its_reason() {
        let g = guard();
        let node: Vec<IpAddr> = vec!["198.19.0.1".parse().unwrap()];
        let masters: Vec<IpAddr> = vec!["198.19.0.5".parse().unwrap()];
        for (ip, want) in [
            ("198.19.7.7", None),
            ("2001:db8:ff::7", None),
            ("198.18.7.7", Some(Refusal::OutsideRanges)),
            ("2001:db8:1::7", Some(Refusal::OutsideRanges)),
            ("127.0.0.53", Some(Refusal::Loopback)),
            ("::1", Some(Refusal::Loopback)),
            ("::ffff:127.0.0.1", Some(Refusal::Loopback)),
            ("0.0.0.0", Some(Refusal::NotUnicast)),
            ("224.0.0.251", Some(Refusal::NotUnicast)),
            ("255.255.255.255", Some(Refusal::NotUnicast)),
            ("169.254.169.254", Some(Refusal::NotUnicast)),
            ("fe80::1", Some(Refusal::NotUnicast)),
            ("198.19.0.1", Some(Refusal::NodeAddress)),
            ("::ffff:198.19.0.1", Some(Refusal::NodeAddress)),
            ("198.19.0.11", Some(Refusal::Etcd)),
            ("2001:db8:ff::53", Some(Refusal::Upstream)),
            ("198.19.0.5", Some(Refusal::Master)),
        ] {
            assert_eq!(g.check(ip.parse().unwrap(), &node, &masters), want, "{ip}");
        }
    }

    #[test]
    fn without_ranges_no_address_is_a_vip() {
        let g = VipGuard::default();
        assert_eq!(
            g.check("198.19.7.7".parse().unwrap(), &[], &[]),
            Some(Refusal::OutsideRanges)
        );
    }
}
