//! dcos-net's renamed zones (`dcos_dns_router.erl`, `{rename, From, To}`): a question under
//! `From` is asked as the same name under `To` of our own zones, and the answer's names under
//! `To` (owners, and the names in CNAME, NS, SOA and SRV data) are renamed back under `From`.
//! That is `*.thisdcos.global` (as `*.thisdcos.directory`), `*.dclb.thisdcos.directory` and
//! `*.dclb.thisdcos.global` (as `*.l4lb.thisdcos.directory`), and, with the cluster's key
//! configured, `*.<key>.dcos.directory` (as `*.thisdcos.directory`).
//!
//! The inner answer is decoded and the renamed one encoded with hickory-proto per query: these
//! are aliases, asked far less than the names they stand for, and the lengths of `From` and
//! `To` differ, so no prepared byte would stay where it was.

use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RData, Record};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};

use crate::catalog::{AnswerSource, Answered, Catalog, Request};
use crate::local_zone::reply_rcode;
use crate::wire::{self, Body, MAX_NAME};

pub struct Rename {
    /// Lowercase wire forms of the two suffixes.
    from_wire: Box<[u8]>,
    to_wire: Box<[u8]>,
    from: Name,
    to: Name,
    /// Where the renamed question is asked: our authoritative sources, never the forwarder.
    inner: Catalog,
}

impl Rename {
    /// Answers names under `from` as the same names under `to` in `inner`. `None` if either
    /// is not a name.
    pub fn new(from: &str, to: &str, inner: Catalog) -> Option<Rename> {
        Some(Rename {
            from_wire: wire::name_to_wire(from)?.into_boxed_slice(),
            to_wire: wire::name_to_wire(to)?.into_boxed_slice(),
            from: Name::from_ascii(from).ok()?,
            to: Name::from_ascii(to).ok()?,
            inner,
        })
    }

    /// dcos-net's renames into `inner`, plus `*.<cluster_id>.dcos.directory` when given.
    pub fn dcos_net(inner: &Catalog, cluster_id: Option<&str>) -> Vec<Rename> {
        let keyed = cluster_id.map(|id| (format!("{id}.dcos.directory."), "thisdcos.directory."));
        let fixed = [
            ("thisdcos.global.", "thisdcos.directory."),
            ("dclb.thisdcos.global.", "l4lb.thisdcos.directory."),
            ("dclb.thisdcos.directory.", "l4lb.thisdcos.directory."),
        ];
        fixed
            .into_iter()
            .map(|(f, t)| (f.to_string(), t))
            .chain(keyed)
            .filter_map(|(from, to)| Rename::new(&from, to, inner.clone()))
            .collect()
    }

    /// The inner answer to `request`'s question renamed, or an rcode to answer with.
    fn ask_inner(&self, request: &Request<'_>) -> Result<Message, u8> {
        let head = request
            .lower_qname()
            .strip_suffix(&*self.from_wire)
            .ok_or(wire::RCODE_REFUSED)?;
        if head.len() + self.to_wire.len() > MAX_NAME {
            // Renamed, it would be no name at all, so nothing can be under it.
            return Err(wire::RCODE_NXDOMAIN);
        }
        let renamed = [head, &self.to_wire].concat();
        let q = &request.query;
        let out = self
            .inner
            .answer_locally(&renamed, q.qtype, q.qclass, q.id, request.turn)?;
        Message::from_vec(&out).map_err(|_| wire::RCODE_SERVFAIL)
    }

    /// `record` with its names under `to` moved under `from`; the question's own name as the
    /// client spelled it.
    fn rename(&self, mut record: Record, asked: &Name) -> Record {
        record.name = self.back(&record.name);
        if record.name == *asked {
            record.name = asked.clone();
        }
        match &mut record.data {
            RData::CNAME(n) => n.0 = self.back(&n.0),
            RData::NS(n) => n.0 = self.back(&n.0),
            RData::SOA(soa) => {
                soa.mname = self.back(&soa.mname);
                soa.rname = self.back(&soa.rname);
            }
            RData::SRV(srv) => srv.target = self.back(&srv.target),
            _ => {}
        }
        record
    }

    /// A name under `to` moved under `from`; any other name as it is.
    fn back(&self, name: &Name) -> Name {
        if !self.to.zone_of(name) {
            return name.clone();
        }
        let keep = usize::from(name.num_labels() - self.to.num_labels());
        Name::from_labels(name.iter().take(keep).chain(self.from.iter()))
            .unwrap_or_else(|_| name.clone())
    }
}

impl AnswerSource for Rename {
    fn origins(&self) -> Vec<Box<[u8]>> {
        vec![self.from_wire.clone()]
    }

    fn answer(&self, request: &Request<'_>, out: &mut Vec<u8>) -> Answered {
        let q = &request.query;
        let asked = match Name::read(&mut BinDecoder::new(q.qname())) {
            Ok(name) => name,
            Err(_) => return reply_rcode(request, wire::RCODE_FORMERR, out),
        };
        let inner = match self.ask_inner(request) {
            Ok(m) => m,
            Err(rcode) => return reply_rcode(request, rcode, out),
        };
        let rcode = (u16::from(inner.metadata.response_code) & 0x0f) as u8;
        // The body is encoded after a copy of the question at its place in the response, so
        // that hickory's compression pointers, into the question too, land where they should.
        let mut bytes = vec![0u8; wire::HEADER];
        let mut counts = [0u16; 3];
        let mut additional_at = 0;
        let encoded = {
            let mut encoder = BinEncoder::with_offset(&mut bytes, wire::HEADER as u32);
            let emit = || -> Result<(), hickory_proto::ProtoError> {
                asked.emit(&mut encoder)?;
                encoder.emit_u16(q.qtype)?;
                encoder.emit_u16(q.qclass)?;
                let sections = [inner.answers, inner.authorities, inner.additionals];
                for (i, section) in sections.into_iter().enumerate() {
                    if i == 2 {
                        additional_at = encoder.offset();
                    }
                    for record in section {
                        self.rename(record, &asked).emit(&mut encoder)?;
                        counts[i] += 1;
                    }
                }
                Ok(())
            };
            emit().is_ok()
        };
        let start = wire::HEADER + q.question.len();
        if !encoded || bytes.get(wire::HEADER..start) != Some(&q.question[..]) {
            return reply_rcode(request, wire::RCODE_SERVFAIL, out);
        }
        let flags = if inner.metadata.authoritative {
            wire::FLAG_AA
        } else {
            0
        };
        let body = Body {
            opcode: 0,
            rcode,
            flags,
            bytes: &bytes[start..],
            additional_at: additional_at - start,
            answers: counts[0],
            authorities: counts[1],
            additionals: counts[2],
        };
        request.respond(out, &body);
        Answered::Now {
            rcode,
            prepared: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arc_swap::ArcSwap;
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;
    use lodestar_control::demo;

    use crate::config::ZoneConfig;
    use crate::local_zone::tests::ask_catalog;
    use crate::mesos_mirror::MesosMirror;
    use crate::zone::ZoneBuilder;

    fn catalog(cluster_id: Option<&str>) -> Catalog {
        let zone = ZoneBuilder::new(ZoneConfig::default(), vec![])
            .unwrap()
            .update(&Arc::new(demo::snapshot()));
        let zone = Arc::new(ArcSwap::from_pointee(zone));
        let mirror = MesosMirror::new(zone.clone(), "mesos.", 5).unwrap();
        let inner = Catalog::new().with(zone).with(Arc::new(mirror));
        Rename::dcos_net(&inner, cluster_id)
            .into_iter()
            .fold(inner, |c, r| c.with(Arc::new(r)))
    }

    #[test]
    fn aliases_answer_as_what_they_stand_for() {
        let c = catalog(Some("ybndrfg8"));
        for name in [
            "web.marathon.l4lb.thisdcos.global.",
            "Web.Marathon.DCLB.thisdcos.directory.",
            "web.marathon.dclb.thisdcos.global.",
            "web.marathon.l4lb.ybndrfg8.dcos.directory.",
        ] {
            let r = ask_catalog(&c, name, RecordType::A, 9);
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{name}");
            assert!(r.metadata.authoritative);
            assert_eq!(r.answers.len(), 1, "{name}");
            assert_eq!(r.answers[0].data.to_string(), "198.19.0.10");
            assert_eq!(r.answers[0].ttl, 5);
            assert_eq!(
                r.answers[0].name.to_ascii(),
                name,
                "the owner is the question"
            );
            assert_eq!(r.queries[0].name().to_ascii(), name);
        }
        // A rename of a mirror: SRV targets come back under the asked suffix.
        let r = ask_catalog(
            &c,
            "_web._tcp.marathon.mesos.thisdcos.global.",
            RecordType::SRV,
            1,
        );
        assert_eq!(r.answers.len(), 2);
        for a in &r.answers {
            let RData::SRV(srv) = &a.data else { panic!() };
            assert!(srv
                .target
                .to_ascii()
                .ends_with(".marathon.mesos.thisdcos.global."));
        }
        // Negative answers: the SOA's owner renamed too, its data left alone.
        let r = ask_catalog(
            &c,
            "nothing.marathon.dclb.thisdcos.global.",
            RecordType::A,
            2,
        );
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        let soa = &r.authorities[0];
        assert_eq!(soa.name.to_ascii(), "dclb.thisdcos.global.");
        let RData::SOA(data) = &soa.data else {
            panic!()
        };
        assert_eq!(data.mname.to_ascii(), "ns.spartan.");
        // Another cluster's key is not ours.
        let c = catalog(None);
        assert!(c
            .find(&wire::name_to_wire("a.l4lb.ybndrfg8.dcos.directory.").unwrap())
            .is_none());
    }

    #[test]
    fn names_that_would_grow_too_long_are_nxdomain() {
        let c = catalog(None);
        // 253 bytes in wire form: a name as `.dclb.thisdcos.global`, 256 (none) as
        // `.l4lb.thisdcos.directory`.
        let label = "a".repeat(63);
        let name = format!(
            "{label}.{label}.{label}.{}.dclb.thisdcos.global.",
            "b".repeat(38)
        );
        assert_eq!(wire::name_to_wire(&name).map(|w| w.len()), Some(253));
        let r = ask_catalog(&c, &name, RecordType::A, 3);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
}
