//! Stable addresses for named VIPs: a hash of the name picks the first candidate in the
//! configured range, linear probing skips taken ones (as dcos-l4lb did), and every claim is a
//! compare-and-swap in etcd, so two writers can never hand one address to two names.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::error::EtcdError;
use crate::keys::{self, Kind, Record};
use crate::model::VipAddress;
use crate::EtcdStore;

/// Where claimed addresses are indexed (outside `/lodestar/v1/`, which agents read).
pub const INDEX_PREFIX: &str = "/lodestar/alloc/vip/";

/// The ranges named VIPs get addresses from. No default: the operator chooses a range that
/// is routed nowhere else (see docs/mesos-sync.md).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VipRanges {
    pub v4: Option<Ipv4Net>,
    pub v6: Option<Ipv6Net>,
}

#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error("no VIP range is configured for named VIP {name:?} (set --vip-range-v4 and/or --vip-range-v6)")]
    NoRange { name: String },
    #[error("the {family} VIP range {range} is exhausted; {name:?} gets no address")]
    Exhausted {
        name: String,
        family: &'static str,
        range: String,
    },
    #[error("etcd: {0}")]
    Store(#[source] EtcdError),
    #[error("could not claim an address for {name:?}: {attempts} conflicting writers in a row")]
    Contended { name: String, attempts: u32 },
}

/// The usable addresses of a range: all of it, minus the network and broadcast addresses of
/// an IPv4 range wider than /31.
trait Range {
    fn size(&self) -> u128;
    fn nth(&self, i: u128) -> IpAddr;
}

impl Range for Ipv4Net {
    fn size(&self) -> u128 {
        let total = 1u128 << (32 - self.prefix_len());
        if self.prefix_len() < 31 {
            total - 2
        } else {
            total
        }
    }
    fn nth(&self, i: u128) -> IpAddr {
        let skip = u32::from(self.prefix_len() < 31);
        IpAddr::V4(Ipv4Addr::from(u32::from(self.network()) + skip + i as u32))
    }
}

impl Range for Ipv6Net {
    fn size(&self) -> u128 {
        if self.prefix_len() == 0 {
            u128::MAX
        } else {
            1u128 << (128 - self.prefix_len())
        }
    }
    fn nth(&self, i: u128) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from(u128::from(self.network()) + i))
    }
}

fn hash(name: &str) -> u128 {
    let d = Sha1::digest(name.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    u128::from_be_bytes(b)
}

/// The first free candidate for `name`: hash, then +1 with wrap-around. `None` if all taken.
/// Probing is bounded by the number of taken addresses, so a huge IPv6 range costs nothing.
fn candidate(range: &dyn Range, name: &str, taken: &BTreeSet<IpAddr>) -> Option<IpAddr> {
    let size = range.size();
    let start = hash(name) % size;
    let probes = (taken.len() as u128 + 1).min(size);
    (0..probes)
        .map(|i| range.nth((start + i) % size))
        .find(|ip| !taken.contains(ip))
}

fn index_key(ip: IpAddr) -> String {
    format!("{INDEX_PREFIX}{ip}")
}

/// Ensures `name` has an address from each configured range; returns its record.
/// Existing addresses are kept, so an address never changes once given.
pub async fn ensure(
    store: &EtcdStore,
    ranges: &VipRanges,
    name: &str,
) -> Result<VipAddress, AllocError> {
    if ranges.v4.is_none() && ranges.v6.is_none() {
        return Err(AllocError::NoRange {
            name: name.to_string(),
        });
    }
    let vip_key = keys::key(Kind::VipAddress, name);
    let mut kv = store.client().kv_client();
    let err = |e| AllocError::Store(EtcdError(e));
    for _attempt in 0..8 {
        // The current record (and its revision, for the swap).
        let resp = kv.get(vip_key.clone(), None).await.map_err(err)?;
        let (mut record, mod_rev) = match resp.kvs().first() {
            Some(found) => match keys::decode(found.key(), found.value()) {
                Ok(Record::VipAddress(v)) => (v, found.mod_revision()),
                _ => (
                    VipAddress {
                        name: name.to_string(),
                        addresses: vec![],
                    },
                    found.mod_revision(),
                ),
            },
            None => (
                VipAddress {
                    name: name.to_string(),
                    addresses: vec![],
                },
                0,
            ),
        };
        let has_v4 = record.addresses.iter().any(IpAddr::is_ipv4);
        let has_v6 = record.addresses.iter().any(IpAddr::is_ipv6);
        let mut wanted: Vec<(&dyn Range, &'static str, String)> = Vec::new();
        if let (Some(r), false) = (&ranges.v4, has_v4) {
            wanted.push((r, "IPv4", r.to_string()));
        }
        if let (Some(r), false) = (&ranges.v6, has_v6) {
            wanted.push((r, "IPv6", r.to_string()));
        }
        if wanted.is_empty() {
            return Ok(record);
        }
        // Every claimed address, and whom it was claimed for.
        let index: Vec<(IpAddr, Vec<u8>)> = {
            let resp = kv
                .get(INDEX_PREFIX, Some(GetOptions::new().with_prefix()))
                .await
                .map_err(err)?;
            resp.kvs()
                .iter()
                .filter_map(|kv| {
                    let k = std::str::from_utf8(kv.key()).ok()?;
                    let ip = k.strip_prefix(INDEX_PREFIX)?.parse().ok()?;
                    Some((ip, kv.value().to_vec()))
                })
                .collect()
        };
        let taken: BTreeSet<IpAddr> = index.iter().map(|(ip, _)| *ip).collect();
        let mut compares = vec![if mod_rev == 0 {
            Compare::version(vip_key.clone(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(vip_key.clone(), CompareOp::Equal, mod_rev)
        }];
        let mut ops = Vec::new();
        let mut exhausted = None;
        let before = record.addresses.len();
        for (range, family, text) in wanted {
            // An address already claimed for this name (its record lost, say) is its again:
            // a name never silently moves to a new address.
            let mine = index.iter().find(|(ip, owner)| {
                owner.as_slice() == name.as_bytes() && ip.is_ipv4() == (family == "IPv4")
            });
            if let Some((ip, _)) = mine {
                record.addresses.push(*ip);
                continue;
            }
            let Some(ip) = candidate(range, name, &taken) else {
                // One family full does not keep the other from being given.
                exhausted = Some(AllocError::Exhausted {
                    name: name.to_string(),
                    family,
                    range: text,
                });
                continue;
            };
            compares.push(Compare::version(index_key(ip), CompareOp::Equal, 0));
            ops.push(TxnOp::put(index_key(ip), name, None));
            record.addresses.push(ip);
        }
        if record.addresses.len() == before {
            // Nothing to give: leave the record alone (no write, no watch event).
            return match exhausted {
                Some(e) => Err(e),
                None => Ok(record),
            };
        }
        let rec = Record::VipAddress(record.clone());
        ops.push(TxnOp::put(rec.key(), rec.to_value(), None));
        let resp = kv
            .txn(Txn::new().when(compares).and_then(ops))
            .await
            .map_err(err)?;
        if resp.succeeded() {
            return match exhausted {
                Some(e) => Err(e),
                None => Ok(record),
            };
        }
        // Someone else claimed the address or wrote this VIP first: look again.
    }
    Err(AllocError::Contended {
        name: name.to_string(),
        attempts: 8,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_deterministic_and_skip_taken_ones() {
        let r: Ipv4Net = "198.19.0.0/24".parse().unwrap();
        let a = candidate(&r, "/web", &BTreeSet::new()).unwrap();
        assert_eq!(a, candidate(&r, "/web", &BTreeSet::new()).unwrap());
        assert!(r.contains(&match a {
            IpAddr::V4(v) => v,
            _ => unreachable!(),
        }));
        let taken: BTreeSet<IpAddr> = [a].into();
        let b = candidate(&r, "/web", &taken).unwrap();
        assert_ne!(a, b);
        // A /30 has two usable addresses.
        let small: Ipv4Net = "198.19.0.0/30".parse().unwrap();
        let all: BTreeSet<IpAddr> =
            ["198.19.0.1".parse().unwrap(), "198.19.0.2".parse().unwrap()].into();
        assert_eq!(candidate(&small, "/x", &all), None);
        let one = candidate(&small, "/x", &BTreeSet::new()).unwrap();
        assert!(
            all.contains(&one),
            "network and broadcast are never given: {one}"
        );
        let v6: Ipv6Net = "2001:db8:19::/64".parse().unwrap();
        assert!(matches!(
            candidate(&v6, "/web", &BTreeSet::new()),
            Some(IpAddr::V6(_))
        ));
    }
}
