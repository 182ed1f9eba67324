//! dcos-net's small zones (`spartan`, `localhost`, `thisnode.thisdcos.directory`) as a handful
//! of names under one apex, and `respond`, which answers by dcos-net's (erldns's) rules for them
//! and for the sources that hold no records of their own (`zk`, the `mesos.thisdcos.directory`
//! mirror).
//!
//! erldns (`erldns_resolver.erl`): a name with the asked type gets its records; a name without
//! it, NOERROR with the SOA; a missing name, NXDOMAIN with the SOA, whatever the type; ANY gets
//! every record of the name (at the apex SOA and NS too); the SOA of a negative answer carries
//! the TTL `min(ttl, minimum)`. These zones are small and rarely asked (`ready.spartan` once a
//! minute by DC/OS's watchdog), so their answers are encoded per query.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use crate::catalog::{AnswerSource, Answered, Request};
use crate::dcos_api::RecordSet;
use crate::records::Rr;
use crate::wire::{self, Body};
use crate::zone::{self, Apex, ApexSpec, POINTER_TO_QUESTION};

/// ANY over UDP is answered within this many bytes (TC beyond), as the zones do.
const ANY_UDP_LIMIT: usize = 512;

/// How a source's records are written: their TTL, and the SRV fields dcos-net sets.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub ttl: u32,
    pub srv_priority: u16,
    pub srv_weight: u16,
}

impl Shape {
    /// dcos-net's records: TTL `ttl` (its `DCOS_DNS_TTL` is 5), SRV priority 1 and weight 1
    /// (`dcos_dns:srv_record/2`).
    pub fn dcos_net(ttl: u32) -> Shape {
        Shape {
            ttl,
            srv_priority: 1,
            srv_weight: 1,
        }
    }
}

/// Answers `request` from the records `found` at its name (None: no such name) under `apex`, by
/// erldns's rules. The catalog has made sure the name is under the apex.
pub fn respond(
    request: &Request<'_>,
    apex: &Apex,
    found: Option<&[Rr]>,
    shape: Shape,
    out: &mut Vec<u8>,
) -> Answered {
    let q = &request.query;
    if q.qclass != wire::CLASS_IN || q.qtype == wire::TYPE_AXFR || q.qtype == wire::TYPE_IXFR {
        return reply_rcode(request, wire::RCODE_REFUSED, out);
    }
    let lower = request.lower_qname();
    let Some(apex_at) = (lower.len() + wire::HEADER).checked_sub(apex.wire().len()) else {
        return reply_rcode(request, wire::RCODE_REFUSED, out);
    };
    let at_apex = lower == apex.wire();
    let records = found.unwrap_or_default();
    let mut bytes = Vec::new();
    let answers = match q.qtype {
        wire::TYPE_SOA if at_apex => {
            bytes.extend_from_slice(&apex.soa_ptr);
            1
        }
        wire::TYPE_NS if at_apex => {
            bytes.extend_from_slice(&apex.ns_ptr);
            1
        }
        wire::TYPE_ANY => {
            let mut n = encode_all(&mut bytes, records.iter(), shape);
            if at_apex {
                bytes.extend_from_slice(&apex.soa_ptr);
                bytes.extend_from_slice(&apex.ns_ptr);
                n += 2;
            }
            n
        }
        qtype => {
            let of_type: Vec<&Rr> = records.iter().filter(|r| rr_type(r) == qtype).collect();
            let turn = request.turn % of_type.len().max(1);
            let rotated = of_type[turn..].iter().chain(&of_type[..turn]).copied();
            encode_all(&mut bytes, rotated, shape)
        }
    };
    let exists = found.is_some() || at_apex;
    let rcode = if answers == 0 && !exists {
        wire::RCODE_NXDOMAIN
    } else {
        wire::RCODE_NOERROR
    };
    let authorities = u16::from(answers == 0);
    if answers == 0 {
        zone::push_at_apex(&mut bytes, &apex.soa_negative_ptr, apex_at);
    }
    let body = Body {
        opcode: 0,
        rcode,
        flags: wire::FLAG_AA,
        bytes: &bytes,
        additional_at: bytes.len(),
        answers,
        authorities,
        additionals: 0,
    };
    let limit = if q.qtype == wire::TYPE_ANY && request.limit < wire::MAX_MESSAGE {
        request.limit.min(ANY_UDP_LIMIT)
    } else {
        request.limit
    };
    wire::write_response(out, q, request.recursion_available, &body, limit);
    Answered::Now {
        rcode,
        prepared: false,
    }
}

/// A response with only `rcode`.
pub(crate) fn reply_rcode(request: &Request<'_>, rcode: u8, out: &mut Vec<u8>) -> Answered {
    request.respond_rcode(out, rcode);
    Answered::Now {
        rcode,
        prepared: false,
    }
}

fn rr_type(rr: &Rr) -> u16 {
    match rr {
        Rr::A(_) => wire::TYPE_A,
        Rr::Aaaa(_) => wire::TYPE_AAAA,
        Rr::Srv { .. } => wire::TYPE_SRV,
    }
}

/// Encodes `records` as answers owned by the question; how many went in.
fn encode_all<'r>(out: &mut Vec<u8>, records: impl Iterator<Item = &'r Rr>, shape: Shape) -> u16 {
    let mut n = 0;
    for rr in records {
        let Some(data) = zone::rdata(rr, shape.srv_priority, shape.srv_weight) else {
            continue;
        };
        n += u16::from(zone::encode(out, &POINTER_TO_QUESTION, data, shape.ttl));
    }
    n
}

/// A few names with A and AAAA records under one dcos-net apex.
pub struct LocalZone {
    apex: Apex,
    /// Lowercase wire name -> (lowercase FQDN, records).
    names: HashMap<Box<[u8]>, (String, Vec<Rr>)>,
    shape: Shape,
}

impl LocalZone {
    /// The zone `apex` (a dcos-net apex) with `records`; owners outside the apex, or not names,
    /// are left out. `None` if the apex is not a name.
    pub fn new(
        apex: &str,
        records: impl IntoIterator<Item = (String, IpAddr)>,
        ttl: u32,
    ) -> Option<LocalZone> {
        let apex = Apex::new(&ApexSpec::dcos_net(apex))?;
        let mut names: HashMap<Box<[u8]>, (String, Vec<Rr>)> = HashMap::new();
        for (owner, ip) in records {
            let Some(wire) = wire::name_to_wire(&owner) else {
                continue;
            };
            if !wire.ends_with(apex.wire()) || !is_label_boundary(&wire, apex.wire().len()) {
                continue;
            }
            let entry = names
                .entry(wire.into_boxed_slice())
                .or_insert_with(|| (crate::names::fqdn(&owner), Vec::new()));
            let rr = Rr::ip(ip);
            if !entry.1.contains(&rr) {
                entry.1.push(rr);
            }
        }
        Some(LocalZone {
            apex,
            names,
            shape: Shape::dcos_net(ttl),
        })
    }

    /// dcos-net's `localhost` zone: `localhost. A 127.0.0.1` (`dcos_dns_sup:localhost_zone_setup/0`).
    pub fn localhost(ttl: u32) -> LocalZone {
        let records = [("localhost.".to_string(), IpAddr::V4(Ipv4Addr::LOCALHOST))];
        LocalZone::new("localhost.", records, ttl).expect("localhost. is a name")
    }

    pub fn apex(&self) -> &Apex {
        &self.apex
    }
}

/// Whether the last `suffix_len` bytes of the wire name `wire` start at a label.
fn is_label_boundary(wire: &[u8], suffix_len: usize) -> bool {
    let target = wire.len() - suffix_len;
    let mut at = 0;
    while at < target {
        at += 1 + usize::from(wire[at]);
    }
    at == target
}

impl AnswerSource for LocalZone {
    fn origins(&self) -> Vec<Box<[u8]>> {
        vec![self.apex.wire().into()]
    }

    fn answer(&self, request: &Request<'_>, out: &mut Vec<u8>) -> Answered {
        let found = self.names.get(request.lower_qname());
        respond(
            request,
            &self.apex,
            found.map(|(_, rrs)| &rrs[..]),
            self.shape,
            out,
        )
    }
}

impl RecordSet for LocalZone {
    fn for_each_record(&self, f: &mut dyn FnMut(&str, &Rr)) {
        let mut names: Vec<&(String, Vec<Rr>)> = self.names.values().collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (owner, records) in names {
            for rr in records {
                f(owner, rr);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, OpCode, Query as HQuery, ResponseCode};
    use hickory_proto::rr::{Name, RData, RecordType};

    use crate::catalog::Catalog;

    /// Asks `source` (through a catalog, as the servers do) one question from loopback.
    pub(crate) fn ask(
        source: std::sync::Arc<dyn AnswerSource>,
        name: &str,
        qtype: RecordType,
    ) -> Message {
        ask_catalog(&Catalog::new().with(source), name, qtype, 0)
    }

    pub(crate) fn ask_catalog(
        catalog: &Catalog,
        name: &str,
        qtype: RecordType,
        id: u16,
    ) -> Message {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.add_query(HQuery::query(Name::from_ascii(name).unwrap(), qtype));
        let packet = m.to_vec().unwrap();
        let q = wire::parse_query(&packet).unwrap();
        let mut request = Request::new(q, [127, 0, 0, 1].into(), wire::MAX_MESSAGE, false, 0);
        let found = catalog.find(request.lower_qname()).expect("a source");
        request.set_origin(found.origin_at);
        let mut out = Vec::new();
        assert!(matches!(
            found.source.answer(&request, &mut out),
            Answered::Now { .. }
        ));
        Message::from_vec(&out).expect("a valid response")
    }

    #[test]
    fn erldns_rules() {
        let zone = std::sync::Arc::new(LocalZone::localhost(5));
        let r = ask(zone.clone(), "LocalHost.", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative);
        assert_eq!(r.answers[0].data.to_string(), "127.0.0.1");
        assert_eq!(r.answers[0].ttl, 5);
        assert_eq!(r.queries[0].name().to_ascii(), "LocalHost.");
        // NODATA and NXDOMAIN carry the SOA with TTL min(5, minimum 1) = 1.
        for (name, rcode) in [
            ("localhost.", ResponseCode::NoError),
            ("x.localhost.", ResponseCode::NXDomain),
        ] {
            for qtype in [RecordType::AAAA, RecordType::SRV, RecordType::TXT] {
                let r = ask(zone.clone(), name, qtype);
                assert_eq!(r.metadata.response_code, rcode, "{name} {qtype}");
                assert!(r.answers.is_empty());
                let soa = &r.authorities[0];
                assert_eq!((soa.name.to_ascii().as_str(), soa.ttl), ("localhost.", 1));
                let RData::SOA(data) = &soa.data else {
                    panic!()
                };
                assert_eq!(data.mname.to_ascii(), "ns.spartan.");
                assert_eq!(data.rname.to_ascii(), "support.mesosphere.com.");
                assert_eq!(
                    (
                        data.serial,
                        data.refresh,
                        data.retry,
                        data.expire,
                        data.minimum
                    ),
                    (1, 60, 180, 86400, 1)
                );
            }
        }
        let r = ask(zone.clone(), "localhost.", RecordType::SOA);
        assert_eq!((r.answers.len(), r.answers[0].ttl), (1, 5));
        let r = ask(zone.clone(), "localhost.", RecordType::NS);
        assert_eq!(r.answers[0].data.to_string(), "ns.spartan.");
        assert_eq!(r.answers[0].ttl, 3600);
        // ANY at the apex: its A, SOA and NS, nothing in authority.
        let r = ask(zone.clone(), "localhost.", RecordType::ANY);
        assert_eq!(r.answers.len(), 3);
        assert!(r.authorities.is_empty());
        let r = ask(zone, "x.localhost.", RecordType::ANY);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn owners_outside_the_apex_are_left_out() {
        let zone = LocalZone::new(
            "zk.",
            [
                ("zk-1.zk.".to_string(), "198.18.0.1".parse().unwrap()),
                ("zk-1.zk.".to_string(), "198.18.0.1".parse().unwrap()),
                ("xzk.".to_string(), "198.18.0.2".parse().unwrap()),
                ("zk.example.".to_string(), "198.18.0.3".parse().unwrap()),
                ("bad..zk.".to_string(), "198.18.0.4".parse().unwrap()),
            ],
            5,
        )
        .unwrap();
        let mut seen = Vec::new();
        zone.for_each_record(&mut |owner, rr| seen.push(format!("{owner} {rr:?}")));
        assert_eq!(seen, ["zk-1.zk. A(198.18.0.1)"]);
    }
}
