//! dcos-net's `mesos.thisdcos.directory` zone: the `mesos` zone mirrored, `X.mesos` answered as
//! `X.mesos.thisdcos.directory` with dcos-net's shape (TTL 5, SRV priority 1 and weight 1,
//! SRV targets renamed into the mirror, no additional records) and its own dcos-net apex.
//!
//! dcos-net copies Mesos-DNS's `/v1/axfr` into a second zone every 30 s
//! (`dcos_dns_mesos_dns.erl`). Here nothing is copied: a question is renamed into the `mesos`
//! zone, looked up in the published zone's prepared entries, and its answer written with the
//! mirror's names, so the mirror costs no memory however large the zone is, and is never
//! staler than it.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::catalog::{AnswerSource, Answered, Request};
use crate::dcos_api::RecordSet;
use crate::local_zone::{reply_rcode, respond, Shape};
use crate::records::Rr;
use crate::wire::{self, MAX_NAME};
use crate::zone::{Apex, ApexSpec, NameEntry, Zone};

pub const MIRROR: &str = "mesos.thisdcos.directory.";

pub struct MesosMirror {
    zone: Arc<ArcSwap<Zone>>,
    apex: Apex,
    /// The `mesos` zone's domain: lowercase FQDN, and wire form.
    domain: String,
    domain_wire: Box<[u8]>,
    shape: Shape,
}

impl MesosMirror {
    /// The mirror of the `domain` zone (`mesos.`, lowercase with a trailing dot) in `zone`.
    pub fn new(zone: Arc<ArcSwap<Zone>>, domain: &str, ttl: u32) -> Option<MesosMirror> {
        Some(MesosMirror {
            zone,
            apex: Apex::new(&ApexSpec::dcos_net(MIRROR))?,
            domain: domain.to_string(),
            domain_wire: wire::name_to_wire(domain)?.into_boxed_slice(),
            shape: Shape::dcos_net(ttl),
        })
    }

    /// A mesos-zone name (lowercase FQDN) as the mirror names it; other names as they are.
    fn mirrored(&self, name: &str) -> String {
        match name.strip_suffix(self.domain.as_str()) {
            Some(head) if head.is_empty() || head.ends_with('.') => format!("{head}{MIRROR}"),
            _ => name.to_string(),
        }
    }

    /// An entry's records, SRV targets renamed into the mirror.
    fn records(&self, entry: &NameEntry) -> Vec<Rr> {
        let mirror = |rr| match rr {
            Rr::Srv { target, port } => Rr::Srv {
                target: self.mirrored(&target).into(),
                port,
            },
            rr => rr,
        };
        entry.records().map(mirror).collect()
    }
}

impl AnswerSource for MesosMirror {
    fn origins(&self) -> Vec<Box<[u8]>> {
        vec![self.apex.wire().into()]
    }

    fn answer(&self, request: &Request<'_>, out: &mut Vec<u8>) -> Answered {
        let lower = request.lower_qname();
        let Some(head) = lower.strip_suffix(self.apex.wire()) else {
            return reply_rcode(request, wire::RCODE_REFUSED, out);
        };
        // The question renamed into the `mesos` zone, on the stack.
        let mut name = [0u8; MAX_NAME];
        let len = head.len() + self.domain_wire.len();
        let zone = self.zone.load();
        let entry = (len <= MAX_NAME)
            .then(|| {
                name[..head.len()].copy_from_slice(head);
                name[head.len()..len].copy_from_slice(&self.domain_wire);
                zone.entry(&name[..len])
            })
            .flatten();
        let records = entry.map(|e| self.records(e));
        respond(request, &self.apex, records.as_deref(), self.shape, out)
    }
}

impl RecordSet for MesosMirror {
    fn for_each_record(&self, f: &mut dyn FnMut(&str, &Rr)) {
        let zone = self.zone.load_full();
        for entry in zone.entries() {
            let name = self.mirrored(&entry.name);
            if *name == *entry.name {
                continue;
            }
            for rr in self.records(entry) {
                f(&name, &rr);
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
    use hickory_proto::rr::{RData, RecordType};
    use lodestar_control::demo;

    fn mirror() -> Arc<MesosMirror> {
        let zone = ZoneBuilder::new(ZoneConfig::default(), vec!["127.0.0.1".parse().unwrap()])
            .unwrap()
            .update(&Arc::new(demo::snapshot()));
        Arc::new(MesosMirror::new(Arc::new(ArcSwap::from_pointee(zone)), "mesos.", 5).unwrap())
    }

    #[test]
    fn the_mesos_zone_with_dcos_nets_shape() {
        let m = mirror();
        let r = ask(
            m.clone(),
            "Web.Marathon.Mesos.Thisdcos.Directory.",
            RecordType::A,
        );
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        let mut ips: Vec<String> = r.answers.iter().map(|a| a.data.to_string()).collect();
        ips.sort();
        assert_eq!(ips, ["127.0.1.101", "127.0.2.101"]);
        assert!(r.answers.iter().all(|a| a.ttl == 5));
        assert_eq!(
            r.queries[0].name().to_ascii(),
            "Web.Marathon.Mesos.Thisdcos.Directory."
        );

        let r = ask(
            m.clone(),
            "_web._tcp.marathon.mesos.thisdcos.directory.",
            RecordType::SRV,
        );
        assert_eq!(r.answers.len(), 2);
        assert!(r.additionals.is_empty(), "erldns adds none for SRV");
        for a in &r.answers {
            let RData::SRV(srv) = &a.data else { panic!() };
            assert_eq!((srv.priority, srv.weight, srv.port), (1, 1, 8080));
            let target = srv.target.to_ascii();
            assert!(
                target.ends_with(".marathon.mesos.thisdcos.directory."),
                "{target}"
            );
            // The renamed target resolves in the mirror.
            let t = ask(m.clone(), &target, RecordType::A);
            assert_eq!(t.answers.len(), 1, "{target}");
        }
        let r = ask(m.clone(), "leader.mesos.thisdcos.directory.", RecordType::A);
        assert_eq!(r.answers[0].data.to_string(), "127.0.1.11");

        // Missing names are NXDOMAIN whatever the type, with the mirror's own SOA (TTL 1).
        for qtype in [RecordType::A, RecordType::SRV] {
            let r = ask(
                m.clone(),
                "nothing.marathon.mesos.thisdcos.directory.",
                qtype,
            );
            assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
            let soa = &r.authorities[0];
            assert_eq!(soa.name.to_ascii(), "mesos.thisdcos.directory.");
            assert_eq!(soa.ttl, 1);
        }
        let r = ask(
            m.clone(),
            "web.marathon.mesos.thisdcos.directory.",
            RecordType::TXT,
        );
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        let r = ask(m.clone(), "mesos.thisdcos.directory.", RecordType::SOA);
        let RData::SOA(soa) = &r.answers[0].data else {
            panic!()
        };
        assert_eq!(soa.mname.to_ascii(), "ns.spartan.");
        // The mirror lists the mesos zone's names, renamed.
        let mut names = Vec::new();
        m.for_each_record(&mut |owner, _| names.push(owner.to_string()));
        assert!(names.contains(&"web.marathon.mesos.thisdcos.directory.".to_string()));
        assert!(names.iter().all(|n| n.ends_with(MIRROR)), "{names:?}");
    }
}
