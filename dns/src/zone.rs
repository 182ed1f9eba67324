//! The authoritative zones (`mesos` and `thisdcos.directory`) as the answer path reads them:
//! every name's records, and its answers encoded once, the first time the name is asked for,
//! so a query is a lookup and a copy. `ZoneBuilder` keeps them up to date incrementally: a
//! change to one task remakes only the names that task touches, and holds little besides the
//! zone itself (docs/benchmarks.md, "Memory at scale"). `Zone` is an `AnswerSource` of the
//! catalog.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};

use hickory_proto::rr::rdata::{A, AAAA, NS, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
use lodestar_control::model::{Task, TaskKey};
use lodestar_control::Snapshot;
use rustc_hash::FxHasher;

use crate::catalog::{AnswerSource, Answered, Request};
use crate::config::{ConfigProblems, HealthPolicy, ZoneConfig};
use crate::names::fqdn;
use crate::records::{cluster_records, task_records, Records, Rr, THISDCOS};
use crate::reverse;
use crate::wire::{self, Body};

type Fx = BuildHasherDefault<FxHasher>;
/// Owner (lowercase wire name) -> entry, shared structurally between successive zones.
type NameMap =
    imbl::GenericHashMap<Box<[u8]>, Arc<NameEntry>, Fx, imbl::shared_ptr::DefaultSharedPtr>;

/// At most this many rotations of a multi-record answer are kept; queries cycle through them
/// (Mesos-DNS shuffles answers; rotation spreads clients the same way without a shuffle per query).
const MAX_ROTATIONS: usize = 4;

/// Answer bytes prepared per name at most, leaving room in a 65,535-byte TCP message for the
/// header, the question (up to 259 bytes) and an OPT record.
const MAX_ANSWER_BYTES: usize = 64_000;

/// ANY over UDP is answered within this many bytes (TC beyond), so a spoofed ANY cannot be
/// amplified past about 10x; clients that really want it all retry over TCP (RFC 8482's spirit).
const ANY_UDP_LIMIT: usize = 512;

/// One owner name's data and its encoded answers.
#[derive(Debug)]
pub struct NameEntry {
    /// Lowercase FQDN with a trailing dot (the builder's interned copy, not one of its own).
    pub name: Arc<str>,
    pub a: Box<[Ipv4Addr]>,
    pub aaaa: Box<[Ipv6Addr]>,
    pub srv: Box<[(Arc<str>, u16)]>,
    /// How many of the A, AAAA and SRV records are of this site (they come first; with
    /// `locality` off, all of them).
    local: [u32; 3],
    ttl: u32,
    /// SRV weight.
    weight: u16,
    /// Prepared answers for A, AAAA and SRV, encoded when the name is first asked for: most
    /// of a large zone's names (every task's own) are asked rarely or never, and a zone's
    /// first build does not wait for them (docs/benchmarks.md, "Memory at scale"). A name
    /// changed is a new entry, prepared again.
    prepared: OnceLock<Box<[Option<Prepared>; 3]>>,
}

/// `entry`'s prepared answers, encoded now if not yet, its SRV targets looked up in `names`.
fn prepared_in<'a>(
    names: &NameMap,
    entry: &'a NameEntry,
    owner_len: usize,
) -> &'a [Option<Prepared>; 3] {
    entry.prepared.get_or_init(|| {
        Box::new(entry.prepare(owner_len, &|target| first_addresses(names, target)))
    })
}

/// A name's lowest A and AAAA (an SRV target's additional records, as Mesos-DNS gives one of
/// each), and their TTL.
fn first_addresses(names: &NameMap, name: &str) -> TargetAddresses {
    let entry = wire::name_to_wire(name).and_then(|w| names.get(&w[..]).cloned());
    match entry {
        Some(e) => TargetAddresses {
            a: e.a.iter().min().copied(),
            aaaa: e.aaaa.iter().min().copied(),
            ttl: e.ttl,
        },
        None => TargetAddresses::default(),
    }
}

/// What an SRV answer adds for one target: its lowest A and AAAA, with their TTL.
#[derive(Debug, Default)]
struct TargetAddresses {
    a: Option<Ipv4Addr>,
    aaaa: Option<Ipv6Addr>,
    ttl: u32,
}

impl NameEntry {
    /// Its records: A, then AAAA, then SRV.
    pub fn records(&self) -> impl Iterator<Item = Rr> + '_ {
        let a = self.a.iter().map(|ip| Rr::A(*ip));
        let aaaa = self.aaaa.iter().map(|ip| Rr::Aaaa(*ip));
        let srv = self.srv.iter().map(|(target, port)| Rr::Srv {
            target: target.clone(),
            port: *port,
        });
        a.chain(aaaa).chain(srv)
    }

    /// Encodes the answers; `owner_len` is the name's wire length, `targets` gives an SRV
    /// target's first A and AAAA and their TTL.
    fn prepare(
        &self,
        owner_len: usize,
        targets: &dyn Fn(&str) -> TargetAddresses,
    ) -> [Option<Prepared>; 3] {
        let all: Vec<Rr> = self.records().collect();
        let (a, rest) = all.split_at(self.a.len());
        let (aaaa, srv) = rest.split_at(self.aaaa.len());
        let at = |i: usize| self.local[i] as usize;
        let (ttl, weight) = (self.ttl, self.weight);
        [
            prepare(a, at(0), ttl, weight, owner_len, targets),
            prepare(aaaa, at(1), ttl, weight, owner_len, targets),
            prepare(srv, at(2), ttl, weight, owner_len, targets),
        ]
    }
}

/// Encoded answer sections for one (name, type): answer records (owner = pointer to the
/// question) and, for SRV, additional A/AAAA records for the targets. Queries cycle through
/// the rotations by their turn.
#[derive(Debug)]
enum Prepared {
    /// Records of one length (A or AAAA of one site group, none cut), written out once and
    /// then again up to the last rotation's end: rotation `k` is the window of `answers`
    /// records that starts at record `k`. Rotations cost no copies, which at 100,000 tasks
    /// is most of what the multi-record names held (docs/benchmarks.md, "Memory at scale").
    Window {
        bytes: Box<[u8]>,
        record_len: u16,
        answers: u16,
        turns: u16,
    },
    /// Each rotation encoded on its own: SRV (its additional records follow the order of
    /// the targets), and records in two site groups.
    Rotations(Box<[Rotation]>),
}

impl Prepared {
    /// The answer bytes of `turn`, where their additional records start, and the counts.
    fn turn(&self, turn: usize) -> (&[u8], usize, u16, u16) {
        match self {
            Prepared::Window {
                bytes,
                record_len,
                answers,
                turns,
            } => {
                let start = turn % usize::from(*turns) * usize::from(*record_len);
                let len = usize::from(*answers) * usize::from(*record_len);
                (&bytes[start..start + len], len, *answers, 0)
            }
            Prepared::Rotations(rotations) => {
                let r = &rotations[turn % rotations.len()];
                (&r.bytes, r.additional_at, r.answers, r.additionals)
            }
        }
    }
}

/// One order of the records, encoded.
#[derive(Debug)]
struct Rotation {
    bytes: Box<[u8]>,
    /// Where the additional records start.
    additional_at: usize,
    answers: u16,
    additionals: u16,
}

/// A zone apex we are authoritative for, with its SOA and NS records encoded.
#[derive(Debug)]
pub struct Apex {
    pub name: String,
    pub(crate) wire: Box<[u8]>,
    /// SOA and NS records owned by the apex, the owner a pointer to the question (re-pointed
    /// at the apex's place in the question name for authority records below the apex).
    pub(crate) soa_ptr: Vec<u8>,
    /// The SOA of negative answers: its TTL is the lesser of the SOA's TTL and its minimum
    /// (RFC 2308 §3; erldns rewrites it so, and dcos-net's minimum is 1).
    pub(crate) soa_negative_ptr: Vec<u8>,
    pub(crate) ns_ptr: Vec<u8>,
    ns_name: String,
    /// A reverse zone (`dns.reverse_zones`): its names are in `Zone::ptrs`.
    reverse: bool,
    rules: Rules,
}

/// Whose answering rules an apex's zone follows where Mesos-DNS and dcos-net differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rules {
    /// Mesos-DNS: SRV never NXDOMAIN, ANY and SOA/NS below the apex carry SOA and NS.
    MesosDns,
    /// dcos-net (erldns): a missing name is NXDOMAIN whatever the type, ANY is the name's
    /// records alone.
    Erldns,
}

/// What an apex's SOA and NS say.
#[derive(Clone, Debug)]
pub struct ApexSpec<'a> {
    pub name: &'a str,
    pub mname: &'a str,
    pub rname: &'a str,
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub minimum: u32,
    /// TTL of the SOA record.
    pub soa_ttl: u32,
    pub ns_ttl: u32,
    pub rules: Rules,
}

impl ApexSpec<'_> {
    /// The apex dcos-net gives each of its zones (`dcos_dns:soa_record/1`, `ns_record/1`):
    /// `ns.spartan. support.mesosphere.com. 1 60 180 86400 1`, SOA TTL 5, NS TTL 3600.
    pub fn dcos_net(name: &str) -> ApexSpec<'_> {
        ApexSpec {
            name,
            mname: "ns.spartan.",
            rname: "support.mesosphere.com.",
            serial: 1,
            refresh: 60,
            retry: 180,
            expire: 86400,
            minimum: 1,
            soa_ttl: 5,
            ns_ttl: 3600,
            rules: Rules::Erldns,
        }
    }
}

/// The published, immutable zone data.
pub struct Zone {
    pub serial: u32,
    pub apexes: Vec<Apex>,
    names: NameMap,
    /// Records of unhealthy tasks left out of answers (`dns.zone.health = "exclude"`).
    pub held_back: usize,
    /// Reverse names (lowercase wire) -> their PTR record, its owner a pointer to the question.
    ptrs: Arc<HashMap<Box<[u8]>, Vec<u8>, Fx>>,
    /// The snapshot the zone was built from.
    pub snapshot: Arc<Snapshot>,
}

impl Zone {
    /// Number of owner names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The data of one owner name (lowercase FQDN with trailing dot, or any case).
    pub fn lookup(&self, name: &str) -> Option<Arc<NameEntry>> {
        let wire = wire::name_to_wire(name)?;
        self.names.get(&wire[..]).cloned()
    }

    /// `entry`'s prepared answers, encoded now if this is the first time it is asked for.
    fn prepared<'a>(&self, entry: &'a NameEntry, owner_len: usize) -> &'a [Option<Prepared>; 3] {
        prepared_in(&self.names, entry, owner_len)
    }

    /// Every owner name.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<NameEntry>> {
        self.names.values()
    }

    /// The data of one owner name given in lowercase wire form (the answer path's key).
    pub fn entry(&self, lower: &[u8]) -> Option<&Arc<NameEntry>> {
        self.names.get(lower)
    }

    /// The apex whose zone holds `lower` (a lowercase wire name), if any.
    pub fn apex_for(&self, lower: &[u8]) -> Option<&Apex> {
        let mut pos = 0;
        while pos < lower.len() {
            let suffix = &lower[pos..];
            if let Some(apex) = self.apexes.iter().find(|a| &a.wire[..] == suffix) {
                return Some(apex);
            }
            let len = usize::from(lower[pos]);
            if len == 0 {
                break;
            }
            pos += 1 + len;
        }
        None
    }

    /// SOA, NS, ANY, other types, and names without the asked type.
    fn answer_slowly(
        &self,
        request: &Request<'_>,
        apex: &Apex,
        entry: Option<&NameEntry>,
        out: &mut Vec<u8>,
    ) -> u8 {
        SLOW_BODY.with_borrow_mut(|bytes| {
            bytes.clear();
            self.put_together(request, apex, entry, bytes, out)
        })
    }

    /// `answer_slowly` with the body put together in `bytes`.
    fn put_together(
        &self,
        request: &Request<'_>,
        apex: &Apex,
        entry: Option<&NameEntry>,
        bytes: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> u8 {
        let lower = request.lower_qname();
        let at_apex = lower == &apex.wire[..];
        // The apex is a suffix of the question name: records it owns point there.
        let apex_at = wire::HEADER + lower.len() - apex.wire.len();
        let ptr = apex.reverse.then(|| self.ptrs.get(lower)).flatten();
        let exists = entry.is_some() || at_apex || ptr.is_some();
        let q = &request.query;
        let (mut answers, mut authorities, mut additionals) = (0u16, 0u16, 0u16);
        let mut additional_at = None;
        let mut rcode = wire::RCODE_NOERROR;
        let erldns = apex.rules == Rules::Erldns;
        match q.qtype {
            wire::TYPE_SOA if at_apex => {
                bytes.extend_from_slice(&apex.soa_ptr);
                answers = 1;
            }
            wire::TYPE_NS if at_apex => {
                bytes.extend_from_slice(&apex.ns_ptr);
                answers = 1;
                additional_at = Some(bytes.len());
                if let (Some(ns), Some(owner)) = (
                    self.lookup(&apex.ns_name),
                    wire::name_to_wire(&apex.ns_name),
                ) {
                    additionals = encode_addresses(bytes, &owner, &ns.a, &ns.aaaa, ns.ttl);
                }
            }
            // Mesos-DNS answers SOA and NS queries below the apex with the record in authority.
            wire::TYPE_SOA if !erldns => {
                push_at_apex(bytes, &apex.soa_negative_ptr, apex_at);
                authorities = 1;
            }
            wire::TYPE_NS if !erldns => {
                push_at_apex(bytes, &apex.ns_ptr, apex_at);
                authorities = 1;
            }
            wire::TYPE_PTR if ptr.is_some() => {
                bytes.extend_from_slice(ptr.expect("matched"));
                answers = 1;
            }
            wire::TYPE_ANY => {
                if let Some(e) = entry {
                    answers += encode_answers(bytes, e);
                }
                if let Some(p) = ptr {
                    bytes.extend_from_slice(p);
                    answers += 1;
                }
                if at_apex {
                    bytes.extend_from_slice(&apex.soa_ptr);
                    bytes.extend_from_slice(&apex.ns_ptr);
                    answers += 2;
                } else if !erldns {
                    push_at_apex(bytes, &apex.soa_negative_ptr, apex_at);
                    push_at_apex(bytes, &apex.ns_ptr, apex_at);
                    authorities = 2;
                } else if answers == 0 {
                    push_at_apex(bytes, &apex.soa_negative_ptr, apex_at);
                    authorities = 1;
                }
                if answers == 0 && !exists {
                    rcode = wire::RCODE_NXDOMAIN;
                }
            }
            // SRV never says NXDOMAIN (Mesos-DNS); other types do for names we do not have.
            wire::TYPE_SRV if !erldns => {
                push_at_apex(bytes, &apex.soa_negative_ptr, apex_at);
                authorities = 1;
            }
            _ => {
                if !exists {
                    rcode = wire::RCODE_NXDOMAIN;
                }
                push_at_apex(bytes, &apex.soa_negative_ptr, apex_at);
                authorities = 1;
            }
        }
        let body = Body {
            opcode: 0,
            rcode,
            flags: wire::FLAG_AA,
            additional_at: additional_at.unwrap_or(bytes.len()),
            bytes,
            answers,
            authorities,
            additionals,
        };
        let limit = if q.qtype == wire::TYPE_ANY && request.limit < wire::MAX_MESSAGE {
            request.limit.min(ANY_UDP_LIMIT)
        } else {
            request.limit
        };
        wire::write_response(out, q, request.recursion_available, &body, limit);
        rcode
    }
}

impl AnswerSource for Zone {
    fn origins(&self) -> Vec<Box<[u8]>> {
        self.apexes.iter().map(|a| a.wire.clone()).collect()
    }

    /// The authoritative answer path: A, AAAA and SRV from prepared bytes, the rest (and names
    /// without the asked type) put together from the apex's prepared SOA and NS.
    fn answer(&self, request: &Request<'_>, out: &mut Vec<u8>) -> Answered {
        let q = &request.query;
        let lower = request.lower_qname();
        let apex = match request.origin() {
            Some(origin) => self.apexes.iter().find(|a| *a.wire == *origin),
            None => self.apex_for(lower),
        };
        let Some(apex) = apex else {
            // The catalog only hands us names under our origins.
            request.respond_rcode(out, wire::RCODE_REFUSED);
            return Answered::Now {
                rcode: wire::RCODE_REFUSED,
                prepared: false,
            };
        };
        if q.qclass != wire::CLASS_IN || q.qtype == wire::TYPE_AXFR || q.qtype == wire::TYPE_IXFR {
            // Zone transfers: the HTTP API's `/v1/axfr` is the way to read the zone.
            request.respond_rcode(out, wire::RCODE_REFUSED);
            return Answered::Now {
                rcode: wire::RCODE_REFUSED,
                prepared: false,
            };
        }
        let entry = self.names.get(lower);
        let slot = match q.qtype {
            wire::TYPE_A => Some(0),
            wire::TYPE_AAAA => Some(1),
            wire::TYPE_SRV => Some(2),
            _ => None,
        };
        if let (Some(slot), Some(entry)) = (slot, entry) {
            if let Some(p) = &self.prepared(entry, lower.len())[slot] {
                let (bytes, additional_at, answers, additionals) = p.turn(request.turn);
                let body = Body {
                    opcode: 0,
                    rcode: wire::RCODE_NOERROR,
                    flags: wire::FLAG_AA,
                    bytes,
                    additional_at,
                    answers,
                    authorities: 0,
                    additionals,
                };
                request.respond(out, &body);
                return Answered::Now {
                    rcode: wire::RCODE_NOERROR,
                    prepared: true,
                };
            }
        }
        let rcode = self.answer_slowly(request, apex, entry.map(|e| &**e), out);
        Answered::Now {
            rcode,
            prepared: false,
        }
    }
}

thread_local! {
    /// The slow path's body while it is put together, kept per thread so that a negative
    /// answer (NXDOMAIN and NODATA are 30% of the `benches/dns.rs` mix) allocates nothing.
    static SLOW_BODY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Appends a record encoded with a pointer owner (`rr_ptr`, owner at its first two bytes),
/// re-pointed at offset `at`. By hand because it runs per query: negative answers (NXDOMAIN and
/// NODATA, 30% of the mix `benches/dns.rs` sends) carry the apex's SOA, owned by wherever the
/// apex sits in the question.
pub(crate) fn push_at_apex(out: &mut Vec<u8>, rr_ptr: &[u8], at: usize) {
    out.extend_from_slice(&(0xc000 | at as u16).to_be_bytes());
    out.extend_from_slice(&rr_ptr[2..]);
}

pub(crate) const POINTER_TO_QUESTION: [u8; 2] = [0xc0, 0x0c];

/// Appends one record: `owner` as given (a pointer, or a name in wire form), then the type,
/// class, TTL and data, which hickory-proto encodes (names in the data uncompressed, so the
/// bytes can follow any question). False if hickory refuses the data.
///
/// Owners are not left to hickory's name compression: prepared bytes follow every spelling of
/// their question, so an owner is a pointer to it (or to an SRV target before it) that we place,
/// and hickory compresses at most 120 names in a message, past which a name with many records
/// would carry its full owner in each and fit fewer of them.
pub(crate) fn encode(out: &mut Vec<u8>, owner: &[u8], rdata: RData, ttl: u32) -> bool {
    let start = out.len();
    let record = Record::from_rdata(Name::root(), ttl, rdata);
    let mut encoder = BinEncoder::with_offset(out, start as u32);
    encoder.set_name_encoding(NameEncoding::Uncompressed);
    if record.emit(&mut encoder).is_err() {
        out.truncate(start);
        return false;
    }
    // Hickory wrote the root (one zero byte) as the owner.
    out.splice(start..start + 1, owner.iter().copied());
    true
}

/// The record data of `rr`; an SRV target hickory does not take as a name gives none.
pub(crate) fn rdata(rr: &Rr, priority: u16, weight: u16) -> Option<RData> {
    Some(match rr {
        Rr::A(ip) => RData::A(A(*ip)),
        Rr::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        // RFC 2782: the target is not compressed (hickory writes SRV data that way anyway).
        Rr::Srv { target, port } => RData::SRV(SRV::new(
            priority,
            weight,
            *port,
            Name::from_ascii(&**target).ok()?,
        )),
    })
}

/// A/AAAA/SRV answers of an entry (owner = the question), for ANY.
fn encode_answers(out: &mut Vec<u8>, e: &NameEntry) -> u16 {
    let mut n = 0;
    for rr in e.records() {
        if out.len() > MAX_ANSWER_BYTES {
            break;
        }
        if let Some(data) = rdata(&rr, 0, e.weight) {
            n += u16::from(encode(out, &POINTER_TO_QUESTION, data, e.ttl));
        }
    }
    n
}

/// A/AAAA records with `owner` already encoded (a full name or a compression pointer).
fn encode_addresses(
    out: &mut Vec<u8>,
    owner: &[u8],
    a: &[Ipv4Addr],
    aaaa: &[Ipv6Addr],
    ttl: u32,
) -> u16 {
    let ips = a.iter().map(|ip| IpAddr::V4(*ip));
    let ips = ips.chain(aaaa.iter().map(|ip| IpAddr::V6(*ip)));
    let mut n = 0;
    for ip in ips {
        encode_address(out, owner, ip, ttl);
        n += 1;
    }
    n
}

/// One A or AAAA record: `owner` as given, then the fixed fields and the address. By hand,
/// not through hickory's `Record::emit`, because a zone's first build encodes one for nearly
/// every name: at 100,000 tasks that was 0.6 s of the agent's start-up (`benches/scale.rs`,
/// docs/benchmarks.md "Memory at scale"). The zone tests decode every kind with hickory.
fn encode_address(out: &mut Vec<u8>, owner: &[u8], ip: IpAddr, ttl: u32) {
    out.extend_from_slice(owner);
    let (rtype, len) = match ip {
        IpAddr::V4(_) => (wire::TYPE_A, 4u16),
        IpAddr::V6(_) => (wire::TYPE_AAAA, 16u16),
    };
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&wire::CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    match ip {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
}

impl Apex {
    /// The apex of `spec`, its SOA and NS encoded; `None` if its name is not a name.
    pub fn new(spec: &ApexSpec<'_>) -> Option<Apex> {
        let wire = wire::name_to_wire(spec.name)?;
        // The config check has made sure these are names; the root is what a bad one would get.
        let name_of = |n: &str| Name::from_ascii(n).unwrap_or_else(|_| Name::root());
        // Refresh, retry and expire are 32-bit fields that hickory types as i32: same bits.
        let soa = SOA::new(
            name_of(spec.mname),
            name_of(spec.rname),
            spec.serial,
            spec.refresh as i32,
            spec.retry as i32,
            spec.expire as i32,
            spec.minimum,
        );
        let mut apex = Apex {
            name: spec.name.to_string(),
            wire: wire.into_boxed_slice(),
            soa_ptr: Vec::new(),
            soa_negative_ptr: Vec::new(),
            ns_ptr: Vec::new(),
            ns_name: spec.mname.to_string(),
            rules: spec.rules,
            reverse: false,
        };
        let negative_ttl = spec.soa_ttl.min(spec.minimum);
        encode(
            &mut apex.soa_negative_ptr,
            &POINTER_TO_QUESTION,
            RData::SOA(soa.clone()),
            negative_ttl,
        );
        encode(
            &mut apex.soa_ptr,
            &POINTER_TO_QUESTION,
            RData::SOA(soa),
            spec.soa_ttl,
        );
        encode(
            &mut apex.ns_ptr,
            &POINTER_TO_QUESTION,
            RData::NS(NS(name_of(spec.mname))),
            spec.ns_ttl,
        );
        Some(apex)
    }

    /// The apex's lowercase wire name.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }
}

/// Keeps a `Zone` current from successive snapshots, re-encoding only what changed.
///
/// It keeps no copy of what each task contributed: a changed task's old records are made
/// again from the last snapshot (they are a pure function of the task, its agent and the
/// config), so the builder holds one entry per owner name and nothing per task.
pub struct ZoneBuilder {
    config: ZoneConfig,
    ns_addresses: Vec<IpAddr>,
    last: Option<Arc<Snapshot>>,
    cluster_rrs: Records,
    /// Owner -> its records with their contributors. The keys are the one copy of each owner
    /// name: `NameEntry::name` and SRV targets share them.
    owners: HashMap<Arc<str>, NameRecords, Fx>,
    /// How many records of unhealthy tasks are left out of answers, over all names.
    held_back_total: usize,
    /// Reverse names -> PTR records, remade from each snapshot when reverse zones are set.
    ptrs: Arc<HashMap<Box<[u8]>, Vec<u8>, Fx>>,
    /// SRV target -> the SRV owners that point at it, with how many records (their
    /// additional sections follow the target's addresses).
    srv_owners: HashMap<Arc<str>, Referrers, Fx>,
    names: NameMap,
    /// Names rebuilt in this update with more than `EAGER_FROM` records.
    eager: Vec<Box<[u8]>>,
    /// This node's site, for site-aware answers (`ZoneConfig::locality`).
    site: Option<String>,
    /// Where addresses and SRV targets are, learnt from tasks and agents.
    ip_site: HashMap<IpAddr, String, Fx>,
    target_site: HashMap<String, String, Fx>,
}

/// The SRV owners that point at one target, with how many of their records do.
type Referrers = Vec<(Arc<str>, u32)>;

/// One owner's records and how many contributions each has: from tasks served (healthy or of
/// unknown health, and the cluster's own records) and from tasks held back as unhealthy
/// (`dns.zone.health = "exclude"`), which a name serves only when it has nothing else (fail
/// open, as the VIP plan).
#[derive(Debug, Default)]
struct NameRecords {
    records: Vec<(Rr, Contributions)>,
    /// Where each record is in `records`, once a name has more than `INDEX_FROM` of them
    /// (a linear search is cheaper below, and most names have one to three).
    // Boxed: one pointer in the half a million names that have no index, not a whole map.
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<Rr, usize, Fx>>>,
    /// How many of its held records the name does not serve.
    withheld: usize,
}

#[derive(Clone, Copy, Debug, Default)]
struct Contributions {
    served: u32,
    held: u32,
}

/// Names with more records than this are prepared when the zone is built, not on their first
/// query.
const EAGER_FROM: usize = 64;

/// Names with more records than this find them through an index.
const INDEX_FROM: usize = 32;

impl NameRecords {
    fn position(&self, rr: &Rr) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(rr).copied(),
            None => self.records.iter().position(|(r, _)| r == rr),
        }
    }

    fn add(&mut self, rr: Rr, held: bool) {
        let i = match self.position(&rr) {
            Some(i) => i,
            None => {
                self.records.push((rr, Contributions::default()));
                let i = self.records.len() - 1;
                match &mut self.index {
                    Some(index) => drop(index.insert(self.records[i].0.clone(), i)),
                    None if self.records.len() > INDEX_FROM => {
                        let index = self.records.iter().enumerate();
                        self.index =
                            Some(Box::new(index.map(|(i, (r, _))| (r.clone(), i)).collect()));
                    }
                    None => {}
                }
                i
            }
        };
        let c = &mut self.records[i].1;
        if held {
            c.held += 1;
        } else {
            c.served += 1;
        }
    }

    fn remove(&mut self, rr: &Rr, held: bool) {
        let Some(i) = self.position(rr) else { return };
        let c = &mut self.records[i].1;
        let n = if held { &mut c.held } else { &mut c.served };
        *n = n.saturating_sub(1);
        if c.held + c.served > 0 {
            return;
        }
        self.records.swap_remove(i);
        if let Some(index) = &mut self.index {
            index.remove(rr);
            if let Some((moved, _)) = self.records.get(i) {
                index.insert(moved.clone(), i);
            }
        }
    }

    /// The records served: those served by any contributor, or, when none is, the held ones.
    fn served(&self) -> impl Iterator<Item = &Rr> {
        let any_served = self.records.iter().any(|(_, c)| c.served > 0);
        self.records
            .iter()
            .filter(move |(_, c)| if any_served { c.served > 0 } else { c.held > 0 })
            .map(|(rr, _)| rr)
    }

    /// How many held records are not served (another, healthy task having one serves it).
    fn count_withheld(&self) -> usize {
        if !self.records.iter().any(|(_, c)| c.served > 0) {
            return 0;
        }
        self.records
            .iter()
            .filter(|(_, c)| c.held > 0 && c.served == 0)
            .count()
    }
}

/// The records one task contributes, each (owner, record) once: what the builder adds for a
/// task and takes away again when it changes, and what `/v1/enumerate` lists.
pub fn records_of(config: &ZoneConfig, snapshot: &Snapshot, task: &Task) -> Records {
    let agent = snapshot.agents.get(&task.agent).map(|a| &**a);
    dedup(task_records(config, agent, task))
}

impl ZoneBuilder {
    /// Sets this node's site (used when `locality` is on).
    pub fn with_site(mut self, site: Option<String>) -> Self {
        self.site = site;
        self
    }

    fn locality(&self) -> Option<&str> {
        self.site.as_deref().filter(|_| self.config.locality)
    }

    fn is_remote_ip(&self, ip: IpAddr) -> bool {
        match self.locality() {
            Some(site) => self.ip_site.get(&ip).is_some_and(|s| s != site),
            None => false,
        }
    }

    fn is_remote_target(&self, target: &str) -> bool {
        match self.locality() {
            Some(site) => self.target_site.get(target).is_some_and(|s| s != site),
            None => false,
        }
    }

    /// `ns_addresses` are published for the server's own name unless the config names some.
    pub fn new(config: ZoneConfig, ns_addresses: Vec<IpAddr>) -> Result<Self, ConfigProblems> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(ConfigProblems { problems });
        }
        Ok(ZoneBuilder {
            config,
            ns_addresses,
            last: None,
            cluster_rrs: Records::new(),
            owners: HashMap::default(),
            held_back_total: 0,
            ptrs: Arc::default(),
            srv_owners: HashMap::default(),
            names: NameMap::default(),
            eager: Vec::new(),
            site: None,
            ip_site: HashMap::default(),
            target_site: HashMap::default(),
        })
    }

    pub fn config(&self) -> &ZoneConfig {
        &self.config
    }

    /// Whether `task`'s records are held back (`dns.zone.health = "exclude"`).
    fn is_held(&self, task: &Task) -> bool {
        self.config.health == HealthPolicy::Exclude
            && task.health == lodestar_control::model::Health::Unhealthy
    }

    /// Brings the zone to `snapshot` and returns it.
    pub fn update(&mut self, snapshot: &Arc<Snapshot>) -> Zone {
        // A first build touches some five names per task: room for them up front, not a
        // rehash at every doubling (the map is shrunk again below).
        let expected = if self.last.is_none() {
            snapshot.tasks.len() * 5
        } else {
            0
        };
        let mut dirty: HashSet<Arc<str>, Fx> =
            HashSet::with_capacity_and_hasher(expected, Fx::default());
        self.owners.reserve(expected);
        let changed = self.changed_tasks(snapshot);
        if self.config.locality {
            for agent in snapshot.agents.values() {
                if let Some(site) = &agent.site {
                    for ip in &agent.addresses {
                        self.ip_site.insert(*ip, site.clone());
                    }
                }
            }
        }
        for id in changed {
            self.retract_task(&id, &mut dirty);
            let Some(task) = snapshot.tasks.get(&id) else {
                continue;
            };
            let rrs = records_of(&self.config, snapshot, task);
            let site = task.site.clone().or_else(|| {
                snapshot
                    .agents
                    .get(&task.agent)
                    .and_then(|a| a.site.clone())
            });
            let held = self.is_held(task);
            for (owner, rr) in rrs {
                if let (true, Some(site)) = (self.config.locality, &site) {
                    match rr {
                        Rr::A(ip) => drop(self.ip_site.insert(IpAddr::V4(ip), site.clone())),
                        Rr::Aaaa(ip) => drop(self.ip_site.insert(IpAddr::V6(ip), site.clone())),
                        Rr::Srv { .. } => {}
                    }
                    // The canonical names this task's SRV records target are its own.
                    if !owner.starts_with('_') {
                        self.target_site.insert(owner.clone(), site.clone());
                    }
                }
                self.add(&owner, rr, held, &mut dirty);
            }
        }
        let cluster = dedup(cluster_records(&self.config, snapshot, &self.ns_addresses));
        if cluster != self.cluster_rrs {
            for (owner, rr) in std::mem::take(&mut self.cluster_rrs) {
                self.remove(&owner, &rr, false, &mut dirty);
            }
            for (owner, rr) in &cluster {
                self.add(owner, rr.clone(), false, &mut dirty);
            }
            self.cluster_rrs = cluster;
        }
        // A changed target changes the additional section of every SRV name pointing at it.
        let targets_of: Vec<Arc<str>> = dirty
            .iter()
            .filter_map(|name| self.srv_owners.get(name))
            .flat_map(|owners| owners.iter().map(|(owner, _)| owner.clone()))
            .collect();
        dirty.extend(targets_of);
        for owner in dirty {
            self.rebuild(&owner);
        }
        // Names with many records are prepared here, once every name is rebuilt, rather than
        // by the DNS worker that first gets a query for one (up to 64 kB of records to encode).
        for wire in std::mem::take(&mut self.eager) {
            if let Some(entry) = self.names.get(&wire[..]) {
                prepared_in(&self.names, entry, wire.len());
            }
        }
        // A first build has every name in `owners` for a moment, and leaves few there.
        if self.owners.capacity() > 4 * self.owners.len() + 1024 {
            self.owners.shrink_to_fit();
        }
        if !self.config.reverse_zones.is_empty() {
            self.ptrs = Arc::new(self.ptr_records(snapshot));
        }
        self.last = Some(snapshot.clone());
        self.zone(snapshot)
    }

    /// Tasks to recompute: all at first; then the ones that changed, and those on changed
    /// agents (found by a pass over the tasks: agents change far less often than tasks).
    fn changed_tasks(&self, snapshot: &Snapshot) -> Vec<TaskKey> {
        let Some(last) = &self.last else {
            return snapshot.tasks.keys().cloned().collect();
        };
        let mut ids: BTreeSet<TaskKey> = BTreeSet::new();
        for d in last.tasks.diff(&snapshot.tasks) {
            ids.insert(diff_key(d).clone());
        }
        let agents: HashSet<&String> = last.agents.diff(&snapshot.agents).map(diff_key).collect();
        if !agents.is_empty() {
            let on_them = last.tasks.iter().filter(|(_, t)| agents.contains(&t.agent));
            ids.extend(on_them.map(|(id, _)| id.clone()));
        }
        ids.into_iter().collect()
    }

    /// Takes away what `id` contributed as of the last snapshot, made again from it.
    fn retract_task(&mut self, id: &TaskKey, dirty: &mut HashSet<Arc<str>, Fx>) {
        let Some(last) = self.last.clone() else {
            return;
        };
        let Some(old) = last.tasks.get(id) else {
            return;
        };
        let held = self.is_held(old);
        for (owner, rr) in records_of(&self.config, &last, old) {
            self.remove(&owner, &rr, held, dirty);
        }
    }

    /// The one copy of `name` if some owner has it.
    fn interned(&self, name: &str) -> Option<Arc<str>> {
        if let Some((k, _)) = self.owners.get_key_value(name) {
            return Some(k.clone());
        }
        let wire = wire::name_to_wire(name)?;
        self.names.get(&wire[..]).map(|e| e.name.clone())
    }

    /// Makes sure `owners` has `name`'s records if the zone has the name: a name whose every
    /// record has one served contribution is kept only as its zone entry (most names are so:
    /// at 100,000 tasks, nearly all half a million of them), and comes back from it here.
    fn promote(&mut self, name: &str) -> Option<Arc<str>> {
        if let Some((k, _)) = self.owners.get_key_value(name) {
            return Some(k.clone());
        }
        let wire = wire::name_to_wire(name)?;
        let entry = self.names.get(&wire[..])?.clone();
        let mut records = NameRecords::default();
        for rr in entry.records() {
            records.add(rr, false);
        }
        self.owners.insert(entry.name.clone(), records);
        Some(entry.name.clone())
    }

    fn add(&mut self, owner: &str, rr: Rr, held: bool, dirty: &mut HashSet<Arc<str>, Fx>) {
        let owner = self.promote(owner).unwrap_or_else(|| Arc::from(owner));
        // An SRV target is a name of the same task, added before it: share its copy.
        let rr = match rr {
            Rr::Srv { target, port } => {
                let target = self.interned(&target).unwrap_or(target);
                let owners = self.srv_owners.entry(target.clone()).or_default();
                match owners.iter_mut().find(|(o, _)| *o == owner) {
                    Some((_, n)) => *n += 1,
                    None => owners.push((owner.clone(), 1)),
                }
                Rr::Srv { target, port }
            }
            rr => rr,
        };
        self.owners.entry(owner.clone()).or_default().add(rr, held);
        dirty.insert(owner);
    }

    fn remove(&mut self, owner: &str, rr: &Rr, held: bool, dirty: &mut HashSet<Arc<str>, Fx>) {
        let Some(owner) = self.promote(owner) else {
            return;
        };
        if let Some(records) = self.owners.get_mut(&owner) {
            records.remove(rr, held);
        }
        if let Rr::Srv { target, .. } = rr {
            if let Some(owners) = self.srv_owners.get_mut(&**target) {
                if let Some(i) = owners.iter().position(|(o, _)| *o == owner) {
                    owners[i].1 -= 1;
                    if owners[i].1 == 0 {
                        owners.swap_remove(i);
                    }
                }
                if owners.is_empty() {
                    self.srv_owners.remove(&**target);
                }
            }
        }
        // A name left without records goes when it is rebuilt.
        dirty.insert(owner);
    }

    fn ttl_for(&self, owner: &str) -> u32 {
        if owner.ends_with(THISDCOS) {
            self.config.thisdcos_ttl
        } else {
            self.config.ttl
        }
    }

    /// Re-encodes one owner name from its current records.
    fn rebuild(&mut self, owner: &Arc<str>) {
        // An SRV name dirty because a target changed has records of its own unchanged, and
        // may be kept only as its zone entry: it gets a new entry all the same, since the
        // old one's prepared answers carry the target's old addresses.
        if !self.owners.contains_key(&**owner) {
            self.promote(owner);
        }
        let Some(records) = self.owners.get(owner) else {
            return;
        };
        let withheld = records.count_withheld();
        let before = records.withheld;
        let empty = records.records.is_empty();
        let mut served: Vec<Rr> = records.served().cloned().collect();
        self.held_back_total = self.held_back_total + withheld - before;
        let wire = wire::name_to_wire(owner);
        let single = |c: &Contributions| c.served == 1 && c.held == 0;
        if empty || (wire.is_some() && records.records.iter().all(|(_, c)| single(c))) {
            // Its zone entry says all there is to say (see `promote`).
            self.owners.remove(owner);
        } else if let Some(r) = self.owners.get_mut(owner) {
            r.withheld = withheld;
            // Most names keep one to three records: not the room for four a push leaves.
            r.records.shrink_to_fit();
        }
        let Some(wire) = wire else {
            return;
        };
        if empty {
            self.names.remove(&wire[..]);
            return;
        }
        // A canonical order, so every node (and every history) encodes the same bytes; with
        // locality, this site's records first.
        served.sort_by(|x, y| (self.is_remote(x), x).cmp(&(self.is_remote(y), y)));
        // The three lists keep that order; each type's records of this site come first.
        let (mut a, mut aaaa, mut srv) = (Vec::new(), Vec::new(), Vec::new());
        let mut local = [0u32; 3];
        for rr in &served {
            let slot = match rr {
                Rr::A(ip) => {
                    a.push(*ip);
                    0
                }
                Rr::Aaaa(ip) => {
                    aaaa.push(*ip);
                    1
                }
                Rr::Srv { target, port } => {
                    srv.push((target.clone(), *port));
                    2
                }
            };
            local[slot] += u32::from(!self.is_remote(rr));
        }
        let ttl = self.ttl_for(owner);
        let entry = NameEntry {
            name: owner.clone(),
            a: a.into(),
            aaaa: aaaa.into(),
            srv: srv.into(),
            local,
            ttl,
            weight: self.config.srv_weight,
            prepared: OnceLock::new(),
        };
        let records = entry.a.len() + entry.aaaa.len() + entry.srv.len();
        let wire = wire.into_boxed_slice();
        if records > EAGER_FROM {
            self.eager.push(wire.clone());
        }
        self.names.insert(wire, Arc::new(entry));
    }

    /// Whether a record is of another site (when locality is on).
    fn is_remote(&self, rr: &Rr) -> bool {
        match rr {
            Rr::A(ip) => self.is_remote_ip(IpAddr::V4(*ip)),
            Rr::Aaaa(ip) => self.is_remote_ip(IpAddr::V6(*ip)),
            Rr::Srv { target, .. } => self.is_remote_target(target),
        }
    }

    /// Every reverse name's PTR record (a whole pass over the catalog: reverse zones are off
    /// by default, and a name's owner depends on every task that has its address).
    fn ptr_records(&self, snapshot: &Snapshot) -> HashMap<Box<[u8]>, Vec<u8>, Fx> {
        let ttl = self.config.ttl;
        reverse::ptr_names(&self.config, snapshot)
            .into_iter()
            .filter_map(|(ip, target)| {
                let owner = wire::name_to_wire(&reverse::reverse_name(ip))?;
                let target = Name::from_ascii(&target).ok()?;
                let mut rr = Vec::new();
                encode(&mut rr, &POINTER_TO_QUESTION, RData::PTR(PTR(target)), ttl);
                Some((owner.into_boxed_slice(), rr))
            })
            .collect()
    }

    fn zone(&self, snapshot: &Arc<Snapshot>) -> Zone {
        let serial = snapshot.revision as u32;
        let c = &self.config;
        let (domain, mname, rname) = (c.fqdn_domain(), fqdn(&c.ns_name), fqdn(&c.soa_rname));
        // The `mesos` zone's SOA and NS, which the reverse zones share. Mesos-DNS puts the
        // record TTL in the minimum field (negative answers cache for a TTL).
        let mesos_apex = |name: &str| {
            Apex::new(&ApexSpec {
                name,
                mname: &mname,
                rname: &rname,
                serial,
                refresh: c.soa_refresh,
                retry: c.soa_retry,
                expire: c.soa_expire,
                minimum: c.ttl,
                soa_ttl: c.ttl,
                ns_ttl: c.ttl,
                rules: Rules::MesosDns,
            })
        };
        let mut apexes: Vec<Apex> = mesos_apex(&domain).into_iter().collect();
        if c.thisdcos {
            // dcos-net gives each of its zones an apex of its own; `thisdcos.directory` itself
            // answers the names in none of them (docs/dns.md says why).
            for name in THISDCOS_APEXES {
                apexes.extend(Apex::new(&ApexSpec::dcos_net(name)));
            }
        }
        let mut reverse_zones: Vec<String> =
            c.reverse_zones.iter().flat_map(reverse::zones_of).collect();
        reverse_zones.sort();
        reverse_zones.dedup();
        for zone in reverse_zones {
            apexes.extend(mesos_apex(&zone).map(|mut a| {
                a.reverse = true;
                a
            }));
        }
        Zone {
            serial,
            apexes,
            names: self.names.clone(),
            held_back: self.held_back_total,
            ptrs: self.ptrs.clone(),
            snapshot: snapshot.clone(),
        }
    }
}

/// The `thisdcos.directory` apexes this zone holds: dcos-net's task and VIP zones, and the
/// parent, which holds nothing of its own.
const THISDCOS_APEXES: [&str; 3] = [
    THISDCOS,
    "dcos.thisdcos.directory.",
    "l4lb.thisdcos.directory.",
];

/// `owner_len`: the owner's wire length, which fixes where the answers start in every
/// response to this name (after the 12-byte header and the question), so records can
/// point back at earlier names.
/// `n_local`: how many records (first) are of this site.
fn prepare(
    rrs: &[Rr],
    n_local: usize,
    ttl: u32,
    weight: u16,
    owner_len: usize,
    targets: &dyn Fn(&str) -> TargetAddresses,
) -> Option<Prepared> {
    if rrs.is_empty() {
        return None;
    }
    let answers_at = wire::HEADER + owner_len + 4;
    // Records come this site's first (when locality is on); rotation stays within each
    // group, so the local ones always lead.
    // Every record is the same bytes in every rotation (its owner is the question).
    let encoded: Vec<Option<Vec<u8>>> = rrs
        .iter()
        .enumerate()
        .map(|(i, rr)| {
            let mut bytes = Vec::new();
            if let Some(ip) = rr.address() {
                encode_address(&mut bytes, &POINTER_TO_QUESTION, ip, ttl);
                return Some(bytes);
            }
            let data = rdata(rr, u16::from(i >= n_local), weight)?;
            encode(&mut bytes, &POINTER_TO_QUESTION, data, ttl).then_some(bytes)
        })
        .collect();
    let (local, others) = (0..n_local, n_local..rrs.len());
    let turns = local.len().max(others.len()).min(MAX_ROTATIONS);
    if let Some(window) = window(rrs, &encoded, n_local, turns) {
        return Some(window);
    }
    let rotate = |group: std::ops::Range<usize>, turn: usize| {
        let k = if group.is_empty() {
            0
        } else {
            turn % group.len()
        };
        let split = group.start + k;
        (split..group.end).chain(group.start..split)
    };
    // The SRV targets, each once, with the addresses of their additional records (looked
    // up once for every rotation), and which target each record has.
    let mut found: Vec<(&Arc<str>, TargetAddresses)> = Vec::new();
    let mut target_of: Vec<usize> = Vec::with_capacity(rrs.len());
    {
        let mut index: HashMap<&str, usize, Fx> = HashMap::default();
        for rr in rrs {
            let Rr::Srv { target, .. } = rr else {
                target_of.push(usize::MAX);
                continue;
            };
            let i = *index.entry(target).or_insert_with(|| {
                found.push((target, targets(target)));
                found.len() - 1
            });
            target_of.push(i);
        }
    }
    let mut rotations = Vec::with_capacity(turns);
    for turn in 0..turns {
        let mut bytes = Vec::new();
        let mut answers: u16 = 0;
        // Where each SRV target's name was first written, for the additional records'
        // owners, in the order the targets come.
        let mut target_at: Vec<Option<usize>> = vec![None; found.len()];
        let mut order: Vec<usize> = Vec::new();
        for i in rotate(local.clone(), turn).chain(rotate(others.clone(), turn)) {
            // Whole records up to what a TCP message holds; past that the rest is left
            // out (as Mesos-DNS drops records from the end), never a broken message.
            if bytes.len() > MAX_ANSWER_BYTES {
                break;
            }
            let Some(record) = &encoded[i] else { continue };
            if let Some(at) = target_at.get_mut(target_of[i]) {
                if at.is_none() {
                    // Pointer to question (2), type, class, TTL, length (10), SRV fields (6).
                    *at = Some(answers_at + bytes.len() + 2 + 10 + 6);
                    order.push(target_of[i]);
                }
            }
            bytes.extend_from_slice(record);
            answers += 1;
        }
        let additional_at = bytes.len();
        // SRV: one A and one AAAA per target, as Mesos-DNS does.
        let mut additionals: u16 = 0;
        for t in order {
            if bytes.len() > MAX_ANSWER_BYTES {
                break;
            }
            let (target, addresses) = &found[t];
            let owner = match target_at[t] {
                Some(at) if at < 0x3fff => (0xc000 | at as u16).to_be_bytes().to_vec(),
                _ => match wire::name_to_wire(target) {
                    Some(w) => w,
                    None => continue,
                },
            };
            additionals += encode_addresses(
                &mut bytes,
                &owner,
                addresses.a.as_slice(),
                addresses.aaaa.as_slice(),
                addresses.ttl,
            );
        }
        rotations.push(Rotation {
            bytes: bytes.into_boxed_slice(),
            additional_at,
            answers,
            additionals,
        });
    }
    Some(Prepared::Rotations(rotations.into_boxed_slice()))
}

/// The rotations of A or AAAA records as one window (`Prepared::Window`), when they allow it:
/// every record encoded, all of the same length, one site group, and none cut.
fn window(
    rrs: &[Rr],
    encoded: &[Option<Vec<u8>>],
    n_local: usize,
    turns: usize,
) -> Option<Prepared> {
    if rrs.iter().any(|rr| matches!(rr, Rr::Srv { .. })) || (n_local != 0 && n_local != rrs.len()) {
        return None;
    }
    let encoded: Vec<&[u8]> = encoded
        .iter()
        .map(|e| e.as_deref())
        .collect::<Option<_>>()?;
    let record_len = encoded.first()?.len();
    if encoded.iter().any(|e| e.len() != record_len) || record_len * rrs.len() > MAX_ANSWER_BYTES {
        return None;
    }
    // Rotation k starts at record k: the records, then the first `turns - 1` again.
    let mut bytes = Vec::with_capacity(record_len * (rrs.len() + turns - 1));
    for e in encoded.iter().chain(&encoded[..turns - 1]) {
        bytes.extend_from_slice(e);
    }
    Some(Prepared::Window {
        bytes: bytes.into_boxed_slice(),
        record_len: u16::try_from(record_len).ok()?,
        answers: u16::try_from(rrs.len()).ok()?,
        turns: u16::try_from(turns).ok()?,
    })
}

fn diff_key<'a, K, V>(d: imbl::ordmap::DiffItem<'a, 'a, K, V>) -> &'a K {
    match d {
        imbl::ordmap::DiffItem::Add(k, _) | imbl::ordmap::DiffItem::Remove(k, _) => k,
        imbl::ordmap::DiffItem::Update { new: (k, _), .. } => k,
    }
}

/// Removes repeated (owner, record) pairs, keeping the first. Most tasks have tens of
/// records, for which a search of the kept ones beats hashing copies of them.
fn dedup(rrs: Records) -> Records {
    if rrs.len() > 64 {
        let mut seen = HashSet::with_capacity(rrs.len());
        return rrs
            .into_iter()
            .filter(|(o, r)| seen.insert((o.clone(), r.clone())))
            .collect();
    }
    let mut out = Records::with_capacity(rrs.len());
    for pair in rrs {
        if !out.contains(&pair) {
            out.push(pair);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, OpCode, Query as HQuery, ResponseCode};
    use hickory_proto::rr::{Name, RData, RecordType};
    use lodestar_control::keys::Record;
    use lodestar_control::model::{IpSource, Task, TaskState};
    use lodestar_control::{demo, CatalogState, Source};

    /// Asks `zone` one question over TCP-sized limits; the decoded response.
    pub(super) fn ask(zone: &Zone, name: &str, qtype: RecordType) -> Message {
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        m.add_query(HQuery::query(Name::from_ascii(name).unwrap(), qtype));
        let packet = m.to_vec().unwrap();
        let mut out = Vec::new();
        let request = request(&packet, 0);
        assert!(zone.apex_for(request.lower_qname()).is_some(), "in zone");
        let answered = zone.answer(&request, &mut out);
        assert!(matches!(answered, Answered::Now { .. }), "answered at once");
        Message::from_vec(&out).expect("a valid response")
    }

    /// A request for `packet` over TCP (no size limit to speak of) from loopback.
    pub(super) fn request(packet: &[u8], turn: usize) -> Request<'_> {
        let q = wire::parse_query(packet).unwrap();
        Request::new(q, [127, 0, 0, 1].into(), wire::MAX_MESSAGE, false, turn)
    }

    fn demo_zone() -> Zone {
        let mut b =
            ZoneBuilder::new(ZoneConfig::default(), vec!["127.0.0.1".parse().unwrap()]).unwrap();
        b.update(&Arc::new(demo::snapshot()))
    }

    #[test]
    fn answers_decode_and_echo_the_question() {
        let zone = demo_zone();
        let r = ask(&zone, "WEB.Marathon.mesos.", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative);
        assert_eq!(r.queries[0].name().to_ascii(), "WEB.Marathon.mesos.");
        let ips: Vec<String> = r.answers.iter().map(|a| a.data.to_string()).collect();
        assert_eq!(ips.len(), 2, "{ips:?}");
        assert!(r.answers.iter().all(|a| a.ttl == 60));

        let r = ask(&zone, "_web._tcp.marathon.mesos.", RecordType::SRV);
        assert_eq!(r.answers.len(), 2);
        assert_eq!(r.additionals.len(), 2, "one A per target");
        let RData::SRV(srv) = &r.answers[0].data else {
            panic!()
        };
        assert_eq!((srv.priority, srv.weight, srv.port), (0, 1, 8080));
        assert!(srv.target.to_ascii().starts_with("web-"), "{}", srv.target);

        let r = ask(&zone, "nothing.marathon.mesos.", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
        let r = ask(&zone, "web.marathon.mesos.", RecordType::TXT);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        let r = ask(&zone, "nothing.marathon.mesos.", RecordType::SRV);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        let r = ask(&zone, "mesos.", RecordType::SOA);
        assert_eq!(r.answers[0].record_type(), RecordType::SOA);
        let r = ask(&zone, "mesos.", RecordType::NS);
        assert_eq!(r.answers[0].record_type(), RecordType::NS);
        assert_eq!(r.additionals[0].data.to_string(), "127.0.0.1");
        let r = ask(&zone, "leader.mesos.", RecordType::A);
        assert_eq!(r.answers[0].data.to_string(), "127.0.1.11");
        let r = ask(&zone, "web.marathon.mesos.", RecordType::ANY);
        assert_eq!(r.answers.len(), 2);
        assert_eq!(r.authorities.len(), 2);
        let r = ask(
            &zone,
            "web.marathon.l4lb.thisdcos.directory.",
            RecordType::A,
        );
        assert_eq!(r.answers[0].data.to_string(), "198.19.0.10");
        assert_eq!(r.answers[0].ttl, 5);
    }

    fn task(i: usize, agent: &str) -> Task {
        let state = if i % 5 == 0 {
            TaskState::Draining
        } else {
            TaskState::Running
        };
        Task::new(format!("t{i}"), format!("app{}", i % 3), "marathon", agent)
            .with_state(state)
            .with_ip(format!("198.18.0.{i}").parse().unwrap(), IpSource::Netinfo)
            .with_resource_port(31000 + i as u16)
    }

    /// Every name's answers, for comparing zones.
    pub(super) fn dump(zone: &Zone) -> Vec<String> {
        let mut out: Vec<String> = zone
            .entries()
            .map(|e| {
                let wire = wire::name_to_wire(&e.name).unwrap();
                let prepared = zone.prepared(e, wire.len());
                format!("{} {:?} {:?} {:?} {prepared:?}", e.name, e.a, e.aaaa, e.srv)
            })
            .collect();
        out.sort();
        out
    }

    /// A catalog of the demo's agents and no tasks, and the agents' ids.
    fn demo_agents() -> (CatalogState, Vec<String>) {
        let mut state = CatalogState::new();
        let base = demo::snapshot();
        for a in base.agents.values() {
            state.upsert(Record::Agent((**a).clone()));
        }
        (state, base.agents.keys().cloned().collect())
    }

    #[test]
    fn incremental_updates_equal_a_fresh_build() {
        let cfg = ZoneConfig::default();
        let mut incremental = ZoneBuilder::new(cfg.clone(), vec![]).unwrap();
        let (mut state, agent_ids) = demo_agents();
        let mut rng = fastrand::Rng::with_seed(7);
        for step in 0..200 {
            let i = rng.usize(0..30);
            match rng.u8(0..10) {
                0..=5 => drop(state.upsert(Record::Task(task(i, &agent_ids[i % 2])))),
                6..=7 => state.remove(&lodestar_control::keys::RecordKey::Task(TaskKey::new(
                    "marathon",
                    format!("t{i}"),
                ))),
                8 => drop(state.upsert(Record::Task(task(i, "unknown-agent")))),
                _ => {
                    // An agent changes address: its tasks' .slave names follow.
                    let base = demo::snapshot();
                    let mut a = (**base.agents.values().nth(i % 2).unwrap()).clone();
                    a.addresses = vec![format!("198.18.9.{}", step % 250).parse().unwrap()];
                    state.upsert(Record::Agent(a));
                }
            }
            let snap = Arc::new(state.snapshot(step + 1, Source::Demo));
            let z1 = incremental.update(&snap);
            let z2 = ZoneBuilder::new(cfg.clone(), vec![]).unwrap().update(&snap);
            assert_eq!(dump(&z1), dump(&z2), "diverged at step {step}");
        }
    }
    /// The builder keeps a name's records only while one of them has more than one
    /// contributor (or is held back); the rest live in the zone alone.
    #[test]
    fn names_with_one_contributor_per_record_live_only_in_the_zone() {
        let (mut state, agent_ids) = demo_agents();
        for i in 1..=12 {
            drop(state.upsert(Record::Task(task(i, &agent_ids[i % 2]))));
        }
        let mut builder = ZoneBuilder::new(ZoneConfig::default(), vec![]).unwrap();
        let zone = builder.update(&Arc::new(state.snapshot(1, Source::Demo)));
        assert!(zone.len() > 20, "{} names", zone.len());
        // Every name kept has a record with two contributors (an app's `.slave` names, whose
        // tasks share two agents' addresses).
        for (name, records) in &builder.owners {
            assert!(
                records.records.iter().any(|(_, c)| c.served + c.held > 1),
                "{name} is kept with one contributor per record"
            );
        }
        assert!(
            builder.owners.len() < zone.len() / 4,
            "{} kept",
            builder.owners.len()
        );
    }

    /// Names with many records are encoded with the zone; the rest on their first query.
    #[test]
    fn large_names_are_prepared_with_the_zone_and_the_rest_when_asked() {
        let (mut state, agent_ids) = demo_agents();
        for i in 1..=100 {
            let mut t = task(i, &agent_ids[i % 2]);
            t.name = "big".into();
            drop(state.upsert(Record::Task(t)));
        }
        let zone = ZoneBuilder::new(ZoneConfig::default(), vec![])
            .unwrap()
            .update(&Arc::new(state.snapshot(1, Source::Demo)));
        let big = zone.lookup("big.marathon.mesos.").unwrap();
        assert!(big.a.len() > EAGER_FROM, "{} records", big.a.len());
        assert!(big.prepared.get().is_some(), "prepared with the zone");
        let small = zone.entries().find(|e| e.a.len() == 1).unwrap();
        assert!(
            small.prepared.get().is_none(),
            "{} prepared before a query",
            small.name
        );
        let answer = tests::ask(&zone, &small.name, RecordType::A);
        assert_eq!(answer.answers.len(), 1);
        assert!(
            small.prepared.get().is_some(),
            "prepared by its first query"
        );
    }

    /// Names past `INDEX_FROM` records (found through their index) and records held back as
    /// unhealthy come and go through the same bookkeeping a fresh build does.
    #[test]
    fn incremental_updates_equal_a_fresh_build_for_large_names_and_held_records() {
        use lodestar_control::model::Health;
        let cfg = ZoneConfig {
            health: HealthPolicy::Exclude,
            ..ZoneConfig::default()
        };
        let mut incremental = ZoneBuilder::new(cfg.clone(), vec![]).unwrap();
        let (mut state, agent_ids) = demo_agents();
        let mut rng = fastrand::Rng::with_seed(11);
        for step in 0..300 {
            for _ in 0..5 {
                let i = rng.usize(0..120);
                let health = [Health::Healthy, Health::Unhealthy, Health::Unknown][rng.usize(0..3)];
                if rng.u8(0..4) == 0 {
                    state.remove(&lodestar_control::keys::RecordKey::Task(TaskKey::new(
                        "marathon",
                        format!("t{i}"),
                    )));
                } else {
                    let mut t = task(i, &agent_ids[i % 2]).with_health(health);
                    t.name = format!("app{}", i % 2);
                    drop(state.upsert(Record::Task(t)));
                }
            }
            let snap = Arc::new(state.snapshot(step + 1, Source::Demo));
            let z1 = incremental.update(&snap);
            let z2 = ZoneBuilder::new(cfg.clone(), vec![]).unwrap().update(&snap);
            assert_eq!(dump(&z1), dump(&z2), "diverged at step {step}");
            assert_eq!(z1.held_back, z2.held_back, "held back at step {step}");
        }
        let big = incremental
            .owners
            .values()
            .map(|r| r.records.len())
            .max()
            .unwrap();
        assert!(
            big > INDEX_FROM,
            "a name large enough for its index ({big} records)"
        );
    }
}

#[cfg(test)]
mod edge_tests {
    use super::*;
    use hickory_proto::rr::RecordType;
    use lodestar_control::keys::Record;
    use lodestar_control::model::{Agent, Framework, IpSource, Task};
    use lodestar_control::{CatalogState, Source};

    fn agent() -> Agent {
        Agent::new("a-S1", "h", "198.18.0.1".parse().unwrap())
    }

    fn task(id: &str, name: &str, fw: &str, ip: &str, ports: usize) -> Task {
        (0..ports).fold(
            Task::new(id, name, fw, "a-S1").with_ip(ip.parse().unwrap(), IpSource::Netinfo),
            |t, i| t.with_resource_port(i as u16 + 1),
        )
    }

    #[test]
    fn names_with_more_records_than_a_message_holds_are_cut_not_broken() {
        let mut st = CatalogState::new();
        st.upsert(Record::Agent(agent()));
        // 65,535 resource ports on one task: 131,070 SRV records under one name.
        st.upsert(Record::Task(task(
            "t1",
            "huge",
            "marathon",
            "198.18.0.2",
            65_535,
        )));
        let zone = ZoneBuilder::new(ZoneConfig::default(), vec![])
            .unwrap()
            .update(&Arc::new(st.snapshot(1, Source::Demo)));
        let r = super::tests::ask(&zone, "_huge._tcp.marathon.slave.mesos.", RecordType::SRV);
        assert!(
            r.answers.len() > 1000 && r.answers.len() < 65_535,
            "{}",
            r.answers.len()
        );
        let r = super::tests::ask(&zone, "_huge._tcp.marathon.slave.mesos.", RecordType::ANY);
        assert!(!r.answers.is_empty());
    }

    #[test]
    fn srv_additionals_follow_their_targets_when_names_collide() {
        // Framework "web.marathon" announces `_framework._tcp.web.marathon.mesos` -> target
        // `web.marathon.mesos`, which is also the A name of task "web" in marathon.
        let cfg = ZoneConfig::default();
        let mut st = CatalogState::new();
        st.upsert(Record::Agent(agent()));
        st.upsert(Record::Framework(Framework {
            id: "f".into(),
            name: "web.marathon".into(),
            hostname: None,
            addresses: vec!["198.18.0.9".parse().unwrap()],
            port: Some(9090),
        }));
        st.upsert(Record::Task(task("t1", "web", "marathon", "198.18.0.2", 0)));
        let mut b = ZoneBuilder::new(cfg.clone(), vec![]).unwrap();
        let first = b.update(&Arc::new(st.snapshot(1, Source::Demo)));
        let name = "_framework._tcp.web.marathon.mesos.";
        // Asked for once, so its answers are prepared (and kept with its entry).
        let before = super::tests::ask(&first, name, RecordType::SRV);
        assert_eq!(before.additionals[0].data.to_string(), "198.18.0.2");
        st.upsert(Record::Task(task("t1", "web", "marathon", "198.18.0.0", 0)));
        let snap = Arc::new(st.snapshot(2, Source::Demo));
        let incremental = b.update(&snap);
        let fresh = ZoneBuilder::new(cfg, vec![]).unwrap().update(&snap);
        let a = super::tests::ask(&incremental, name, RecordType::SRV);
        let f = super::tests::ask(&fresh, name, RecordType::SRV);
        assert_eq!(a.additionals, f.additionals);
        assert_eq!(a.additionals[0].data.to_string(), "198.18.0.0");
    }
}

#[cfg(test)]
mod locality_tests {
    use super::*;
    use hickory_proto::rr::{RData, RecordType};
    use lodestar_control::keys::Record;
    use lodestar_control::model::{Agent, IpSource, Port, Task};
    use lodestar_control::{CatalogState, Source};

    fn state() -> CatalogState {
        let mut st = CatalogState::new();
        for (id, site, ip) in [
            ("a-S1", "azure", "198.18.1.1"),
            ("v-S2", "vsphere", "198.18.2.1"),
        ] {
            st.upsert(Record::Agent(
                Agent::new(id, id, ip.parse().unwrap()).with_site(site),
            ));
        }
        for (i, agent) in ["a-S1", "v-S2", "a-S1", "v-S2"].iter().enumerate() {
            let ip = format!(
                "198.18.{}.{}",
                if agent.starts_with('a') { 1 } else { 2 },
                10 + i
            );
            st.upsert(Record::Task(
                Task::new(format!("web.{i}"), "web", "marathon", *agent)
                    .with_ip(ip.parse().unwrap(), IpSource::Netinfo)
                    .with_discovery_name("web")
                    .with_discovery_port(Port::tcp(80).named("http")),
            ));
        }
        st
    }

    fn build(locality: bool) -> Zone {
        let cfg = ZoneConfig {
            locality,
            ..ZoneConfig::default()
        };
        ZoneBuilder::new(cfg, vec![])
            .unwrap()
            .with_site(Some("vsphere".into()))
            .update(&Arc::new(state().snapshot(1, Source::Demo)))
    }

    fn ask(zone: &Zone, turn: usize, name: &str, qtype: RecordType) -> hickory_proto::op::Message {
        use hickory_proto::op::{Message, MessageType, OpCode, Query};
        let mut m = Message::new(1, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(
            hickory_proto::rr::Name::from_ascii(name).unwrap(),
            qtype,
        ));
        let packet = m.to_vec().unwrap();
        let mut out = Vec::new();
        zone.answer(&super::tests::request(&packet, turn), &mut out);
        Message::from_vec(&out).unwrap()
    }

    #[test]
    fn local_site_first_in_every_rotation_and_srv_priorities() {
        let zone = build(true);
        for turn in 0..4 {
            let r = ask(&zone, turn, "web.marathon.mesos.", RecordType::A);
            let ips: Vec<String> = r.answers.iter().map(|a| a.data.to_string()).collect();
            assert_eq!(ips.len(), 4);
            assert!(
                ips[0].starts_with("198.18.2.") && ips[1].starts_with("198.18.2."),
                "turn {turn}: {ips:?}"
            );
            assert!(ips[2].starts_with("198.18.1."), "turn {turn}: {ips:?}");
        }
        let r = ask(&zone, 0, "_web._tcp.marathon.mesos.", RecordType::SRV);
        let mut prio: Vec<(u16, String)> = r
            .answers
            .iter()
            .map(|a| match &a.data {
                RData::SRV(s) => (s.priority, s.target.to_ascii()),
                _ => unreachable!(),
            })
            .collect();
        prio.sort();
        assert_eq!(prio.iter().map(|p| p.0).collect::<Vec<_>>(), [0, 0, 1, 1]);
        // Off (the default): Mesos-DNS's answers, priority 0 everywhere.
        let zone = build(false);
        let r = ask(&zone, 0, "_web._tcp.marathon.mesos.", RecordType::SRV);
        assert!(r
            .answers
            .iter()
            .all(|a| matches!(&a.data, RData::SRV(s) if s.priority == 0)));
    }
}

#[cfg(test)]
mod health_tests {
    use super::*;
    use hickory_proto::rr::RecordType;
    use lodestar_control::keys::Record;
    use lodestar_control::model::{Agent, Health, IpSource, Task};
    use lodestar_control::{CatalogState, Source};

    fn task(id: &str, name: &str, ip: &str, port: u16, health: Health) -> Record {
        Record::Task(
            Task::new(id, name, "marathon", "a-S1")
                .with_ip(ip.parse().unwrap(), IpSource::Netinfo)
                .with_resource_port(port)
                .with_health(health),
        )
    }

    fn addresses(zone: &Zone, name: &str) -> Vec<String> {
        let r = super::tests::ask(zone, name, RecordType::A);
        let mut v: Vec<String> = r.answers.iter().map(|a| a.data.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn unhealthy_tasks_are_left_out_unless_a_name_has_no_other() {
        let exclude = ZoneConfig {
            health: HealthPolicy::Exclude,
            ..ZoneConfig::default()
        };
        let mut st = CatalogState::new();
        st.upsert(Record::Agent(Agent::new(
            "a-S1",
            "h",
            "198.18.0.1".parse().unwrap(),
        )));
        st.upsert(task("web.1", "web", "198.18.0.11", 31001, Health::Healthy));
        st.upsert(task(
            "web.2",
            "web",
            "198.18.0.12",
            31002,
            Health::Unhealthy,
        ));
        st.upsert(task("web.3", "web", "198.18.0.13", 31003, Health::Unknown));
        st.upsert(task("db.1", "db", "198.18.0.21", 31004, Health::Unhealthy));
        st.upsert(task("db.2", "db", "198.18.0.22", 31005, Health::Unhealthy));
        let mut incremental = ZoneBuilder::new(exclude.clone(), vec![]).unwrap();
        let zone = incremental.update(&Arc::new(st.snapshot(1, Source::Demo)));
        // Unknown health is served: only a verdict of unhealthy holds a task back.
        assert_eq!(
            addresses(&zone, "web.marathon.mesos."),
            ["198.18.0.11", "198.18.0.13"]
        );
        let srv = super::tests::ask(&zone, "_web._tcp.marathon.mesos.", RecordType::SRV);
        assert_eq!(srv.answers.len(), 2);
        assert_eq!(
            addresses(&zone, "web.marathon.autoip.dcos.thisdcos.directory."),
            ["198.18.0.11", "198.18.0.13"]
        );
        // Every task of `db` is unhealthy: all are served (fail open).
        assert_eq!(
            addresses(&zone, "db.marathon.mesos."),
            ["198.18.0.21", "198.18.0.22"]
        );
        assert!(zone.held_back > 0);
        let held_then = zone.held_back;

        // The healthy ones go bad: `web` fails open too; one recovers: it alone is served.
        st.upsert(task(
            "web.1",
            "web",
            "198.18.0.11",
            31001,
            Health::Unhealthy,
        ));
        st.upsert(task(
            "web.3",
            "web",
            "198.18.0.13",
            31003,
            Health::Unhealthy,
        ));
        let zone = incremental.update(&Arc::new(st.snapshot(2, Source::Demo)));
        assert_eq!(addresses(&zone, "web.marathon.mesos.").len(), 3);
        assert_eq!(zone.held_back, 0);
        st.upsert(task("db.2", "db", "198.18.0.22", 31005, Health::Healthy));
        let snap = Arc::new(st.snapshot(3, Source::Demo));
        let zone = incremental.update(&snap);
        assert_eq!(addresses(&zone, "db.marathon.mesos."), ["198.18.0.22"]);
        // db.1 held back where web.2 was: as many records.
        assert_eq!(zone.held_back, held_then);
        // Built incrementally or afresh, the same zone.
        let fresh = ZoneBuilder::new(exclude, vec![]).unwrap().update(&snap);
        assert_eq!(super::tests::dump(&zone), super::tests::dump(&fresh));
        assert_eq!(zone.held_back, fresh.held_back);

        // Off by default: Mesos-DNS publishes unhealthy tasks.
        let zone = ZoneBuilder::new(ZoneConfig::default(), vec![])
            .unwrap()
            .update(&snap);
        assert_eq!(addresses(&zone, "web.marathon.mesos.").len(), 3);
        assert_eq!(addresses(&zone, "db.marathon.mesos.").len(), 2);
        assert_eq!(zone.held_back, 0);
    }
}

#[cfg(test)]
mod reverse_tests {
    use super::*;
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;
    use lodestar_control::keys::Record;
    use lodestar_control::model::{Agent, IpSource, Task};
    use lodestar_control::{CatalogState, Source};

    fn ptr(zone: &Zone, ip: &str) -> (ResponseCode, Vec<String>, bool) {
        let name = reverse::reverse_name(ip.parse().unwrap());
        let r = super::tests::ask(zone, &name, RecordType::PTR);
        let answers = r.answers.iter().map(|a| a.data.to_string()).collect();
        (r.metadata.response_code, answers, r.metadata.authoritative)
    }

    #[test]
    fn ptr_gives_the_one_task_or_the_agent_and_nxdomain_otherwise() {
        let cfg = ZoneConfig {
            reverse_zones: vec![
                "198.18.0.0/15".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
            ..ZoneConfig::default()
        };
        let mut st = CatalogState::new();
        st.upsert(Record::Agent(Agent::new(
            "20150925-143318-1660156426-5050-2036-S3",
            "agent-1.example",
            "198.18.0.1".parse().unwrap(),
        )));
        let on_agent = |id: &str, name: &str| {
            Task::new(
                id,
                name,
                "marathon",
                "20150925-143318-1660156426-5050-2036-S3",
            )
        };
        let ip = |s: &str| s.parse().unwrap();
        // One task, two families: its canonical name (Mesos-DNS's `<task>-<hash>-<agent>`).
        st.upsert(Record::Task(
            on_agent("hdfs.1", "hdfs")
                .with_ip(ip("198.18.0.11"), IpSource::Netinfo)
                .with_ip(ip("2001:db8::11"), IpSource::Netinfo),
        ));
        // Two tasks with one container address: no single owner.
        st.upsert(Record::Task(
            on_agent("a.1", "a").with_ip(ip("198.18.0.12"), IpSource::Netinfo),
        ));
        st.upsert(Record::Task(
            on_agent("b.1", "b").with_ip(ip("198.18.0.12"), IpSource::Netinfo),
        ));
        // Host networking: tasks on the agent's address, which gives the agent's name.
        for id in ["h.1", "h.2"] {
            st.upsert(Record::Task(
                on_agent(id, "h").with_ip(ip("198.18.0.1"), IpSource::Host),
            ));
        }
        let zone = ZoneBuilder::new(cfg, vec![])
            .unwrap()
            .update(&Arc::new(st.snapshot(1, Source::Demo)));
        let (rcode, answers, aa) = ptr(&zone, "198.18.0.11");
        assert_eq!((rcode, aa), (ResponseCode::NoError, true));
        let canonical = &answers[0];
        assert!(
            canonical.starts_with("hdfs-") && canonical.ends_with("-s3.marathon.mesos."),
            "{answers:?}"
        );
        assert_eq!(answers.len(), 1);
        // The canonical name resolves back to the address.
        let back = super::tests::ask(&zone, canonical, RecordType::A);
        assert_eq!(back.answers[0].data.to_string(), "198.18.0.11");
        assert_eq!(ptr(&zone, "2001:db8::11").1, answers);
        assert_eq!(ptr(&zone, "198.18.0.1").1, ["agent-1.example."]);
        for nobody in ["198.18.0.12", "198.18.0.99", "198.19.255.1", "2001:db8::99"] {
            let (rcode, answers, aa) = ptr(&zone, nobody);
            assert_eq!(
                (rcode, answers.len(), aa),
                (ResponseCode::NXDomain, 0, true),
                "{nobody}"
            );
        }
        // A name with a PTR has no A: NODATA, not NXDOMAIN.
        let name = reverse::reverse_name(ip("198.18.0.11"));
        let r = super::tests::ask(&zone, &name, RecordType::A);
        assert_eq!(
            (r.metadata.response_code, r.answers.len()),
            (ResponseCode::NoError, 0)
        );
        // Outside the reverse zones the zone claims nothing: those queries are forwarded.
        let origins: Vec<String> = zone.apexes.iter().map(|a| a.name.clone()).collect();
        assert_eq!(
            origins,
            [
                "mesos.",
                "thisdcos.directory.",
                "dcos.thisdcos.directory.",
                "l4lb.thisdcos.directory.",
                "18.198.in-addr.arpa.",
                "19.198.in-addr.arpa.",
                "8.b.d.0.1.0.0.2.ip6.arpa."
            ]
        );
        // Without reverse zones there is no reverse origin at all.
        let plain = ZoneBuilder::new(ZoneConfig::default(), vec![])
            .unwrap()
            .update(&Arc::new(st.snapshot(1, Source::Demo)));
        assert!(
            plain
                .apexes
                .iter()
                .all(|a| !a.reverse && !a.name.ends_with(".arpa.")),
            "{:?}",
            plain.apexes.iter().map(|a| &a.name).collect::<Vec<_>>()
        );
    }
}
