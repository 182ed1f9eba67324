//! dcos-net's `spartan` zone: `ready.spartan` (what DC/OS units, `gen_resolvconf.py` and the
//! dcos-net watchdog ask, type ANY, to see that the node's DNS works) and `ns.spartan`.
//!
//! `ready.spartan` answers only once the agent says it is ready (catalog loaded, every server
//! bound); before that, and once it starts to drain, it is SERVFAIL, so nothing takes a node
//! whose DNS cannot yet answer the cluster's names for one that can.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::catalog::{AnswerSource, Answered, Request};
use crate::dcos_api::RecordSet;
use crate::local_zone::{reply_rcode, LocalZone};
use crate::records::Rr;
use crate::wire;

/// `ns.spartan`'s address in dcos-net (`dcos_dns_sup:dcos_dns_zone_setup/0`): the first address
/// DC/OS puts on the `spartan` interface.
pub const DCOS_NS_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

pub struct Spartan {
    zone: LocalZone,
    ready_name: Box<[u8]>,
    ready: Arc<AtomicBool>,
}

impl Spartan {
    /// `ready.spartan A 127.0.0.1` (while `ready` is set) and `ns.spartan` at `ns_address`.
    pub fn new(ns_address: IpAddr, ttl: u32, ready: Arc<AtomicBool>) -> Spartan {
        let records = [
            (
                "ready.spartan.".to_string(),
                IpAddr::V4(Ipv4Addr::LOCALHOST),
            ),
            ("ns.spartan.".to_string(), ns_address),
        ];
        Spartan {
            zone: LocalZone::new("spartan.", records, ttl).expect("spartan. is a name"),
            ready_name: wire::name_to_wire("ready.spartan.")
                .expect("a name")
                .into_boxed_slice(),
            ready,
        }
    }
}

impl AnswerSource for Spartan {
    fn origins(&self) -> Vec<Box<[u8]>> {
        self.zone.origins()
    }

    fn answer(&self, request: &Request<'_>, out: &mut Vec<u8>) -> Answered {
        if request.lower_qname() == &*self.ready_name && !self.ready.load(Ordering::Acquire) {
            return reply_rcode(request, wire::RCODE_SERVFAIL, out);
        }
        self.zone.answer(request, out)
    }
}

impl RecordSet for Spartan {
    fn for_each_record(&self, f: &mut dyn FnMut(&str, &Rr)) {
        self.zone.for_each_record(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local_zone::tests::ask;
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;

    #[test]
    fn ready_only_once_the_agent_is() {
        let ready = Arc::new(AtomicBool::new(false));
        let spartan = Arc::new(Spartan::new(DCOS_NS_ADDRESS.into(), 5, ready.clone()));
        for qtype in [RecordType::A, RecordType::ANY] {
            let r = ask(spartan.clone(), "ready.spartan.", qtype);
            assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
            assert!(r.answers.is_empty());
        }
        let r = ask(spartan.clone(), "ns.spartan.", RecordType::A);
        assert_eq!(r.answers[0].data.to_string(), "198.51.100.1");
        ready.store(true, Ordering::Release);
        for qtype in [RecordType::A, RecordType::ANY] {
            let r = ask(spartan.clone(), "Ready.Spartan.", qtype);
            assert_eq!(r.metadata.response_code, ResponseCode::NoError);
            assert_eq!(r.answers.len(), 1, "{qtype}");
            assert_eq!(r.answers[0].data.to_string(), "127.0.0.1");
            assert_eq!(r.answers[0].ttl, 5);
        }
        let r = ask(spartan, "nothing.spartan.", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
}
