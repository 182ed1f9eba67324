//! dcos-net's `zk` zone: `zk-1.zk` ... `zk-5.zk`, the ZooKeeper (Exhibitor) ensemble, which is
//! the masters. Mesos-DNS and other DC/OS components are configured with these five names.
//!
//! dcos-net's rule (`dcos_dns_zk_record_server.erl`): the masters repeated until there are five,
//! in order, so three masters `a b c` give `a b c a b`. The masters are the catalog's (in the
//! order of their ids, then the leader if it is not among them), read at answer time from the
//! published zone's snapshot: the zone is empty (SOA and NS only) until the catalog has masters.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use lodestar_control::Snapshot;

use crate::catalog::{AnswerSource, Answered, Request};
use crate::dcos_api::RecordSet;
use crate::local_zone::{respond, Shape};
use crate::records::Rr;
use crate::zone::{Apex, ApexSpec, Zone};

/// dcos-net's `ZOOKEEPER_RECORDS`.
const RECORDS: usize = 5;

pub struct ZkZone {
    zone: Arc<ArcSwap<Zone>>,
    apex: Apex,
    shape: Shape,
}

impl ZkZone {
    pub fn new(zone: Arc<ArcSwap<Zone>>, ttl: u32) -> ZkZone {
        ZkZone {
            zone,
            apex: Apex::new(&ApexSpec::dcos_net("zk.")).expect("zk. is a name"),
            shape: Shape::dcos_net(ttl),
        }
    }
}

/// The ensemble's addresses, each once: the masters by id, then the leader if it is not one.
pub fn ensemble(snapshot: &Snapshot) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    let masters = snapshot.masters.values().map(|m| m.address);
    for ip in masters.chain(snapshot.leader.iter().map(|l| l.address)) {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// `zk-n.zk`'s address (n from 1): the ensemble cycled to five names.
fn member(ensemble: &[IpAddr], n: usize) -> Option<IpAddr> {
    if !(1..=RECORDS).contains(&n) || ensemble.is_empty() {
        return None;
    }
    Some(ensemble[(n - 1) % ensemble.len()])
}

/// The `n` of a lowercase wire name `zk-<n>.zk.`.
fn number(lower: &[u8]) -> Option<usize> {
    let (&len, rest) = lower.split_first()?;
    let (label, tail) = rest.split_at_checked(usize::from(len))?;
    if tail != b"\x02zk\x00" {
        return None;
    }
    let digits = label.strip_prefix(b"zk-")?;
    if digits.is_empty() || digits.len() > 2 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

impl AnswerSource for ZkZone {
    fn origins(&self) -> Vec<Box<[u8]>> {
        vec![self.apex.wire().into()]
    }

    fn answer(&self, request: &Request<'_>, out: &mut Vec<u8>) -> Answered {
        let found = number(request.lower_qname())
            .and_then(|n| member(&ensemble(&self.zone.load().snapshot), n))
            .map(Rr::ip);
        respond(
            request,
            &self.apex,
            found.as_ref().map(std::slice::from_ref),
            self.shape,
            out,
        )
    }
}

impl RecordSet for ZkZone {
    fn for_each_record(&self, f: &mut dyn FnMut(&str, &Rr)) {
        let ensemble = ensemble(&self.zone.load().snapshot);
        for n in 1..=RECORDS {
            if let Some(ip) = member(&ensemble, n) {
                f(&format!("zk-{n}.zk."), &Rr::ip(ip));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ZoneConfig;
    use crate::local_zone::tests::ask;
    use crate::zone::ZoneBuilder;
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;
    use lodestar_control::keys::Record;
    use lodestar_control::model::{Leader, Master};
    use lodestar_control::{CatalogState, Source};

    fn zk(masters: &[&str], leader: Option<&str>) -> Arc<ZkZone> {
        let mut st = CatalogState::new();
        for (i, ip) in masters.iter().enumerate() {
            st.upsert(Record::Master(Master {
                id: format!("m{i}"),
                hostname: None,
                address: ip.parse().unwrap(),
                port: 5050,
            }));
        }
        if let Some(ip) = leader {
            st.upsert(Record::Leader(Leader {
                hostname: None,
                address: ip.parse().unwrap(),
                port: 5050,
            }));
        }
        let zone = ZoneBuilder::new(ZoneConfig::default(), vec![])
            .unwrap()
            .update(&Arc::new(st.snapshot(1, Source::Demo)));
        Arc::new(ZkZone::new(Arc::new(ArcSwap::from_pointee(zone)), 5))
    }

    fn names(zk: &ZkZone) -> Vec<String> {
        let mut out = Vec::new();
        zk.for_each_record(&mut |owner, rr| out.push(format!("{owner} {rr:?}")));
        out
    }

    #[test]
    fn masters_cycle_to_five_names() {
        let three = zk(
            &["198.18.0.1", "198.18.0.2", "198.18.0.3"],
            Some("198.18.0.2"),
        );
        assert_eq!(
            names(&three),
            [
                "zk-1.zk. A(198.18.0.1)",
                "zk-2.zk. A(198.18.0.2)",
                "zk-3.zk. A(198.18.0.3)",
                "zk-4.zk. A(198.18.0.1)",
                "zk-5.zk. A(198.18.0.2)",
            ]
        );
        let r = ask(three.clone(), "ZK-4.zk.", RecordType::A);
        assert_eq!(r.answers[0].data.to_string(), "198.18.0.1");
        for name in ["zk-6.zk.", "zk-0.zk.", "zk-01x.zk.", "a.zk-1.zk."] {
            let r = ask(three.clone(), name, RecordType::A);
            assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{name}");
        }
        // One master (here only known as the leader): all five are it.
        let one = zk(&[], Some("198.18.0.9"));
        assert_eq!(names(&one).len(), 5);
        assert!(names(&one).iter().all(|n| n.ends_with("A(198.18.0.9)")));
        // No masters yet: an empty zone, SOA and NS only.
        let none = zk(&[], None);
        assert!(names(&none).is_empty());
        let r = ask(none.clone(), "zk-1.zk.", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        let r = ask(none, "zk.", RecordType::SOA);
        assert_eq!(r.answers.len(), 1);
    }
}
