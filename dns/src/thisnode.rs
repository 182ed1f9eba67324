//! dcos-net's `thisnode.thisdcos.directory` zone: this node's private address at the apex and
//! its public ones at `public.thisnode.thisdcos.directory` (`dcos_net_node:push_dns_records/2`).
//! Which addresses those are is the agent's to find out (configured or detected); it sets them
//! here, and again whenever it looks again.

use std::net::IpAddr;

use arc_swap::ArcSwap;

use crate::catalog::{AnswerSource, Answered, Request};
use crate::dcos_api::RecordSet;
use crate::local_zone::LocalZone;
use crate::records::Rr;

pub const THISNODE: &str = "thisnode.thisdcos.directory.";
const PUBLIC: &str = "public.thisnode.thisdcos.directory.";

pub struct ThisNode {
    zone: ArcSwap<LocalZone>,
    ttl: u32,
}

impl ThisNode {
    pub fn new(private: Option<IpAddr>, public: &[IpAddr], ttl: u32) -> ThisNode {
        ThisNode {
            zone: ArcSwap::from_pointee(zone(private, public, ttl)),
            ttl,
        }
    }

    /// Publishes new addresses.
    pub fn set(&self, private: Option<IpAddr>, public: &[IpAddr]) {
        self.zone.store(zone(private, public, self.ttl).into());
    }
}

fn zone(private: Option<IpAddr>, public: &[IpAddr], ttl: u32) -> LocalZone {
    let records = private
        .map(|ip| (THISNODE.to_string(), ip))
        .into_iter()
        .chain(public.iter().map(|ip| (PUBLIC.to_string(), *ip)));
    LocalZone::new(THISNODE, records, ttl).expect("thisnode.thisdcos.directory. is a name")
}

impl AnswerSource for ThisNode {
    fn origins(&self) -> Vec<Box<[u8]>> {
        self.zone.load().origins()
    }

    fn answer(&self, request: &Request<'_>, out: &mut Vec<u8>) -> Answered {
        self.zone.load().answer(request, out)
    }
}

impl RecordSet for ThisNode {
    fn for_each_record(&self, f: &mut dyn FnMut(&str, &Rr)) {
        self.zone.load().for_each_record(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local_zone::tests::ask;
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;
    use std::sync::Arc;

    #[test]
    fn private_at_the_apex_public_below() {
        let public: Vec<IpAddr> = vec![
            "198.18.9.1".parse().unwrap(),
            "2001:db8::9".parse().unwrap(),
        ];
        let node = Arc::new(ThisNode::new(
            Some("198.18.0.7".parse().unwrap()),
            &public,
            5,
        ));
        let r = ask(node.clone(), THISNODE, RecordType::A);
        assert_eq!(r.answers[0].data.to_string(), "198.18.0.7");
        let r = ask(node.clone(), PUBLIC, RecordType::AAAA);
        assert_eq!(r.answers[0].data.to_string(), "2001:db8::9");
        node.set(None, &[]);
        let r = ask(node.clone(), THISNODE, RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        let r = ask(node, PUBLIC, RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
}
