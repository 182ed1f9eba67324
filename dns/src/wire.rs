//! The DNS wire format, in one place: its constants, the query parser, names in wire form, and
//! the assembly of responses from prepared sections, for every answer source and the forwarder.
//!
//! hickory-proto encodes and decodes everything off the per-query path (zone records when a
//! snapshot changes, upstream answers). What is written by hand here runs once per query, and
//! `benches/dns.rs` (qps and CPU per query against Knot) is what keeps it: hickory's
//! `Message::from_vec` allocates a `Message` with a `Vec` per section and a `Name` per label
//! chain, where `parse_query` borrows the packet and allocates nothing.

use std::borrow::Cow;

use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::BinEncodable;

/// Header length.
pub const HEADER: usize = 12;
/// RFC 1035 §3.1: a name on the wire is at most 255 bytes.
pub const MAX_NAME: usize = 255;
/// The UDP payload size we advertise and accept at most (the DNS flag day 2020 value): large
/// enough that most answers need no TCP, small enough not to be fragmented.
pub const OUR_UDP_PAYLOAD: u16 = 1232;
/// The UDP limit of a client that sent no OPT (RFC 1035).
pub const MIN_UDP: usize = 512;
/// Largest DNS message (TCP).
pub const MAX_MESSAGE: usize = 65535;
/// An OPT record without options: root owner, type, class, TTL, RDLENGTH.
pub const OPT_LEN: usize = 11;

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_IXFR: u16 = 251;
pub const TYPE_AXFR: u16 = 252;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;
pub const RCODE_REFUSED: u8 = 5;
/// An EDNS version we do not speak (RFC 6891): 16, so its high bits travel in the OPT.
pub const RCODE_BADVERS: u8 = 16;

// Header flags as the 16 bits after the ID (RFC 1035 §4.1.1, RFC 4035 §3.2 for AD and CD).
pub const FLAG_QR: u16 = 0x8000;
pub const FLAG_AA: u16 = 0x0400;
pub const FLAG_TC: u16 = 0x0200;
pub const FLAG_RD: u16 = 0x0100;
pub const FLAG_RA: u16 = 0x0080;
pub const FLAG_AD: u16 = 0x0020;
pub const FLAG_CD: u16 = 0x0010;

/// The client's EDNS(0) OPT record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
}

/// A parsed query. It borrows the packet on the answer path; `into_owned` keeps it for a
/// source that answers later (the forwarder).
#[derive(Clone, Debug)]
pub struct Query<'a> {
    pub id: u16,
    pub rd: bool,
    pub cd: bool,
    /// The question as asked: name (wire form, case as sent), type, class.
    pub question: Cow<'a, [u8]>,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
}

impl Query<'_> {
    /// The question name in wire form, including the root label.
    pub fn qname(&self) -> &[u8] {
        &self.question[..self.question.len() - 4]
    }

    /// The largest response this client accepts over UDP.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(e) => usize::from(e.payload.clamp(MIN_UDP as u16, OUR_UDP_PAYLOAD)),
            None => MIN_UDP,
        }
    }

    pub fn dnssec_ok(&self) -> bool {
        self.edns.is_some_and(|e| e.dnssec_ok)
    }

    pub fn into_owned(self) -> Query<'static> {
        Query {
            question: Cow::Owned(self.question.into_owned()),
            ..self
        }
    }
}

/// Why a packet is not a query we answer normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Too short to reply to, or a response (QR=1): never answer it (no reflection loops).
    Drop,
    /// Answer with an error rcode.
    Error(Rejection),
}

/// What an error reply echoes of a query that did not parse, and its rcode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub id: u16,
    pub rd: bool,
    pub cd: bool,
    /// The query's opcode, echoed in the reply.
    pub opcode: u8,
    pub rcode: u8,
    /// End of the question within the packet (0: no question to echo).
    pub question_end: usize,
    /// The client's OPT, when the reply must carry one (BADVERS).
    pub edns: Option<Edns>,
}

impl Rejection {
    /// Header fields as far as the packet has them.
    fn of(packet: &[u8], rcode: u8, question_end: usize, edns: Option<Edns>) -> Rejection {
        let byte = |i: usize| packet.get(i).copied().unwrap_or(0);
        let flags = u16::from_be_bytes([byte(2), byte(3)]);
        Rejection {
            id: u16::from_be_bytes([byte(0), byte(1)]),
            rd: flags & FLAG_RD != 0,
            cd: flags & FLAG_CD != 0,
            opcode: ((flags >> 11) & 0xf) as u8,
            rcode,
            question_end,
            edns,
        }
    }
}

impl Reject {
    /// FORMERR for any bytes at all, echoing ID, opcode, RD and CD from whatever is there: for
    /// a caller that answers what a server would drop (the forwarder's `resolve`).
    pub fn formerr_for(packet: &[u8]) -> Reject {
        Reject::Error(Rejection::of(packet, RCODE_FORMERR, 0, None))
    }

    /// The rcode of the reply, if there is one.
    pub fn rcode(&self) -> Option<u8> {
        match self {
            Reject::Drop => None,
            Reject::Error(r) => Some(r.rcode),
        }
    }
}

/// Parses a query. Names must be uncompressed (queries are), at most 255 bytes, labels at
/// most 63; exactly one question; an OPT record is recognised in the additional section, and
/// an EDNS version other than 0 is rejected with BADVERS here, once for every source.
pub fn parse_query(packet: &[u8]) -> Result<Query<'_>, Reject> {
    if packet.len() < HEADER {
        return Err(Reject::Drop);
    }
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    if flags & FLAG_QR != 0 {
        return Err(Reject::Drop);
    }
    let head = Rejection::of(packet, RCODE_FORMERR, 0, None);
    let count = |i: usize| u16::from_be_bytes([packet[4 + 2 * i], packet[5 + 2 * i]]);
    let (qd, an, ns, ar) = (count(0), count(1), count(2), count(3));
    let err = |rcode, question_end, edns| {
        Reject::Error(Rejection {
            rcode,
            question_end,
            edns,
            ..head
        })
    };
    if qd != 1 {
        return Err(err(RCODE_FORMERR, 0, None));
    }
    let name_end = skip_uncompressed_name(packet, HEADER).ok_or(err(RCODE_FORMERR, 0, None))?;
    let question_end = name_end + 4;
    if packet.len() < question_end {
        return Err(err(RCODE_FORMERR, 0, None));
    }
    if head.opcode != 0 {
        return Err(err(RCODE_NOTIMP, question_end, None));
    }
    let formerr = err(RCODE_FORMERR, question_end, None);
    if an != 0 || ns != 0 {
        return Err(formerr);
    }
    let qtype = u16::from_be_bytes([packet[name_end], packet[name_end + 1]]);
    let qclass = u16::from_be_bytes([packet[name_end + 2], packet[name_end + 3]]);
    let mut edns = None;
    let mut pos = question_end;
    for _ in 0..ar {
        let name_end = skip_any_name(packet, pos).ok_or(formerr)?;
        let fixed = packet.get(name_end..name_end + 10).ok_or(formerr)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let end = name_end + 10 + rdlen;
        if end > packet.len() {
            return Err(formerr);
        }
        if rtype == TYPE_OPT {
            // One OPT, owned by the root.
            if edns.is_some() || name_end != pos + 1 {
                return Err(formerr);
            }
            edns = Some(Edns {
                payload: u16::from_be_bytes([fixed[2], fixed[3]]),
                version: fixed[5],
                dnssec_ok: fixed[6] & 0x80 != 0,
            });
        }
        pos = end;
    }
    if let Some(e) = edns.filter(|e| e.version > 0) {
        return Err(err(RCODE_BADVERS, question_end, Some(e)));
    }
    Ok(Query {
        id: head.id,
        rd: head.rd,
        cd: head.cd,
        question: Cow::Borrowed(&packet[HEADER..question_end]),
        qtype,
        qclass,
        edns,
    })
}

/// The end of an uncompressed name starting at `pos`.
fn skip_uncompressed_name(packet: &[u8], mut pos: usize) -> Option<usize> {
    let start = pos;
    loop {
        let len = usize::from(*packet.get(pos)?);
        if len == 0 {
            return Some(pos + 1);
        }
        if len > 63 || pos + 1 + len - start >= MAX_NAME {
            return None;
        }
        pos += 1 + len;
    }
}

/// The end of a name that may end in a compression pointer (additional records).
fn skip_any_name(packet: &[u8], mut pos: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *packet.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            1..=63 => pos += 1 + usize::from(len),
            0xc0..=0xff => {
                packet.get(pos + 1)?;
                return Some(pos + 2);
            }
            _ => return None,
        }
    }
    None
}

/// Lowercases a wire-form name into `buf`; returns its length.
pub fn lowercase_name(name: &[u8], buf: &mut [u8; MAX_NAME]) -> usize {
    let n = name.len().min(MAX_NAME);
    buf[..n].copy_from_slice(&name[..n]);
    buf[..n].make_ascii_lowercase();
    n
}

/// A dotted name (trailing dot optional, "" and "." the root) in lowercase wire form, as the
/// zones and the forwarder key their names; `None` if hickory-proto does not take it as a name.
pub fn name_to_wire(name: &str) -> Option<Vec<u8>> {
    if let Some(wire) = plain_name_to_wire(name) {
        return Some(wire);
    }
    let name = if name.is_empty() { "." } else { name };
    Name::from_ascii(name).ok()?.to_lowercase().to_bytes().ok()
}

/// `name_to_wire` by hand for the names the zones make (lowercase letters, digits, `-` and
/// `_`, labels of 1 to 63 bytes not starting with `-`, 253 in all), which hickory would take unchanged; anything
/// else (escapes, upper case, empty labels, the root) is left to hickory. A zone's first
/// build converts every owner name: through hickory that was a tenth of it at 100,000 tasks
/// (`benches/scale.rs`, docs/benchmarks.md "Memory at scale").
fn plain_name_to_wire(name: &str) -> Option<Vec<u8>> {
    let name = name.strip_suffix('.').unwrap_or(name).as_bytes();
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.split(|b| *b == b'.') {
        let plain =
            |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_';
        // hickory takes no label that starts with a hyphen.
        let bad = label.is_empty() || label.len() > 63 || label[0] == b'-';
        if bad || !label.iter().all(plain) {
            return None;
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    Some(out)
}

/// The parts of a response after the question.
#[derive(Clone, Copy, Debug, Default)]
pub struct Body<'a> {
    /// The query's opcode, echoed (0 for QUERY, the only one answered with data).
    pub opcode: u8,
    pub rcode: u8,
    /// Header flags the source sets itself: AA, AD, or TC relayed from an upstream.
    pub flags: u16,
    /// Answer and authority records, then additional records, encoded for this question's
    /// length (compression pointers may point into the question at offset 12).
    pub bytes: &'a [u8],
    /// Where the additional records start in `bytes` (dropped first when space is short).
    pub additional_at: usize,
    pub answers: u16,
    pub authorities: u16,
    pub additionals: u16,
}

/// What `write_response` put in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// Bytes of the body that went in (all, all but the additional records, or none).
    pub body: usize,
    /// Nothing but the question fitted: TC is set.
    pub truncated: bool,
}

/// Writes a complete response into `out` (cleared first): header, the question as asked, the
/// body, and an OPT if the client sent one. Past `limit` the additional records go, then
/// everything but the question and OPT, with TC set.
pub fn write_response(
    out: &mut Vec<u8>,
    q: &Query<'_>,
    recursion_available: bool,
    body: &Body<'_>,
    limit: usize,
) -> Written {
    let header = Header {
        id: q.id,
        rd: q.rd,
        cd: q.cd,
        recursion_available,
    };
    header.write(out, &q.question, q.edns, body, limit)
}

/// The reply to a rejected query (FORMERR, NOTIMP, BADVERS): the ID, opcode and flags echoed,
/// the question when it parsed, an OPT when the rcode needs one. Nothing for `Reject::Drop`.
pub fn write_rejection(
    out: &mut Vec<u8>,
    packet: &[u8],
    reject: &Reject,
    recursion_available: bool,
) {
    out.clear();
    let Reject::Error(r) = reject else {
        return;
    };
    let header = Header {
        id: r.id,
        rd: r.rd,
        cd: r.cd,
        recursion_available,
    };
    let body = Body {
        opcode: r.opcode,
        rcode: r.rcode,
        ..Body::default()
    };
    let question = packet.get(HEADER..r.question_end).unwrap_or_default();
    header.write(out, question, r.edns, &body, MAX_MESSAGE);
}

/// A query for `question` (wire form, as a client asked it), RD and CD as given, with our OPT
/// and the DO bit: what the forwarder sends upstream. The ID is left 0 for the sender to set.
pub fn write_query(out: &mut Vec<u8>, rd: bool, cd: bool, question: &[u8], dnssec_ok: bool) {
    let mut flags = 0;
    if rd {
        flags |= FLAG_RD;
    }
    if cd {
        flags |= FLAG_CD;
    }
    out.clear();
    push_header(out, 0, flags, [1, 0, 0, 1]);
    out.extend_from_slice(question);
    push_opt(out, 0, dnssec_ok);
}

/// The header fields a response takes from its query and its transport.
struct Header {
    id: u16,
    rd: bool,
    cd: bool,
    recursion_available: bool,
}

impl Header {
    fn write(
        &self,
        out: &mut Vec<u8>,
        question: &[u8],
        edns: Option<Edns>,
        body: &Body<'_>,
        limit: usize,
    ) -> Written {
        let opt_len = if edns.is_some() { OPT_LEN } else { 0 };
        let fixed = HEADER + question.len() + opt_len;
        let (bytes, additionals, truncated) = if fixed + body.bytes.len() <= limit {
            (body.bytes, body.additionals, false)
        } else if fixed + body.additional_at <= limit {
            (&body.bytes[..body.additional_at], 0, false)
        } else {
            (&[][..], 0, true)
        };
        let (answers, authorities) = if truncated {
            (0, 0)
        } else {
            (body.answers, body.authorities)
        };
        let mut flags = FLAG_QR | (u16::from(body.opcode & 0x0f) << 11) | body.flags;
        for (set, flag) in [
            (truncated, FLAG_TC),
            (self.rd, FLAG_RD),
            (self.recursion_available, FLAG_RA),
            (self.cd, FLAG_CD),
        ] {
            if set {
                flags |= flag;
            }
        }
        flags |= u16::from(body.rcode & 0x0f);
        out.clear();
        let qd = u16::from(!question.is_empty());
        let ar = additionals + u16::from(edns.is_some());
        push_header(out, self.id, flags, [qd, answers, authorities, ar]);
        out.extend_from_slice(question);
        out.extend_from_slice(bytes);
        if let Some(e) = edns {
            // The extended rcode's high bits (BADVERS = 16 -> 1), version 0, DO copied.
            push_opt(out, body.rcode >> 4, e.dnssec_ok);
        }
        Written {
            body: bytes.len(),
            truncated,
        }
    }
}

fn push_header(out: &mut Vec<u8>, id: u16, flags: u16, counts: [u16; 4]) {
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    for c in counts {
        out.extend_from_slice(&c.to_be_bytes());
    }
}

/// Our OPT record: root owner, our payload, the extended rcode's high bits, version 0, DO.
fn push_opt(out: &mut Vec<u8>, ext_rcode: u8, dnssec_ok: bool) {
    let [hi, lo] = OUR_UDP_PAYLOAD.to_be_bytes();
    let do_flag = if dnssec_ok { 0x80 } else { 0 };
    out.extend_from_slice(&[0, 0, 41, hi, lo, ext_rcode, 0, do_flag, 0, 0, 0]);
}

/// Whether a response in `out` has TC set.
pub fn is_truncated(response: &[u8]) -> bool {
    response.get(2).is_some_and(|b| b & 0x02 != 0)
}

/// The rcode in a response's header (its low four bits).
pub fn header_rcode(response: &[u8]) -> Option<u8> {
    response.get(3).map(|b| b & 0x0f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns as HEdns, Message, MessageType, OpCode, Query as HQuery};
    use hickory_proto::rr::{Name, RecordType};

    fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(HQuery::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some(p) = edns {
            let mut e = HEdns::new();
            e.set_max_payload(p);
            e.set_dnssec_ok(true);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn parses_what_hickory_writes() {
        let p = query("Web.Marathon.Mesos.", RecordType::SRV, Some(4096));
        let q = parse_query(&p).unwrap();
        assert_eq!(q.id, 0x1234);
        assert!(q.rd);
        assert_eq!(q.qtype, TYPE_SRV);
        assert_eq!(q.qclass, CLASS_IN);
        assert_eq!(
            q.edns,
            Some(Edns {
                payload: 4096,
                version: 0,
                dnssec_ok: true
            })
        );
        assert_eq!(q.udp_limit(), usize::from(OUR_UDP_PAYLOAD));
        let mut buf = [0u8; MAX_NAME];
        let n = lowercase_name(q.qname(), &mut buf);
        assert_eq!(&buf[..n], b"\x03web\x08marathon\x05mesos\x00");
        let p = query("a.", RecordType::A, None);
        let q = parse_query(&p).unwrap();
        assert_eq!((q.edns, q.udp_limit()), (None, 512));
    }

    #[test]
    fn responses_and_garbage_are_rejected() {
        let mut p = query("a.", RecordType::A, None);
        p[2] |= 0x80;
        assert_eq!(parse_query(&p).unwrap_err(), Reject::Drop);
        assert_eq!(parse_query(&[0; 11]).unwrap_err(), Reject::Drop);
        let p = query("a.", RecordType::A, None);
        for cut in 12..p.len() {
            assert_eq!(
                parse_query(&p[..cut]).unwrap_err().rcode(),
                Some(RCODE_FORMERR),
                "{cut}"
            );
        }
        // A compression pointer in the question.
        let mut p = query("a.", RecordType::A, None);
        p[12] = 0xc0;
        assert_eq!(parse_query(&p).unwrap_err().rcode(), Some(RCODE_FORMERR));
        // Two OPT records.
        let mut p = query("a.", RecordType::A, Some(1232));
        let opt = p[p.len() - 11..].to_vec();
        p.extend_from_slice(&opt);
        p[11] = 2;
        assert_eq!(parse_query(&p).unwrap_err().rcode(), Some(RCODE_FORMERR));
    }

    #[test]
    fn names_of_255_bytes_parse_and_longer_ones_do_not() {
        // 3 labels of 63 and one of 61, plus lengths and the root: 255 bytes.
        let longest = format!("{0}.{0}.{0}.{1}.", "a".repeat(63), "b".repeat(61));
        let p = query(&longest, RecordType::A, None);
        assert_eq!(parse_query(&p).unwrap().qname().len(), MAX_NAME);
        let mut too_long = p[..HEADER].to_vec();
        for _ in 0..4 {
            too_long.push(63);
            too_long.extend_from_slice(&[b'a'; 63]);
        }
        too_long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(
            parse_query(&too_long).unwrap_err().rcode(),
            Some(RCODE_FORMERR)
        );
    }

    #[test]
    fn an_edns_version_we_do_not_speak_is_badvers_with_an_opt() {
        let mut p = query("a.b.", RecordType::A, Some(1232));
        // The OPT is last: its TTL's second byte is the version.
        let version_at = p.len() - 11 + 6;
        p[version_at] = 1;
        let reject = parse_query(&p).unwrap_err();
        assert_eq!(reject.rcode(), Some(RCODE_BADVERS));
        let mut out = Vec::new();
        write_rejection(&mut out, &p, &reject, true);
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(u16::from(m.metadata.response_code), 16);
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.queries.len(), 1);
        assert!(m.edns.is_some());
    }

    #[test]
    fn formerr_for_any_bytes_echoes_what_it_can() {
        let mut out = Vec::new();
        write_rejection(&mut out, &[], &Reject::formerr_for(&[]), true);
        assert_eq!(out, [0, 0, 0x80, 0x80 | 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        write_rejection(&mut out, &[0xAB], &Reject::formerr_for(&[0xAB]), true);
        assert_eq!(out[..2], [0xAB, 0]);
        // Opcode and RD are echoed.
        let notify = [0, 7, (4 << 3) | 0x01, 0];
        write_rejection(&mut out, &notify, &Reject::formerr_for(&notify), false);
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.op_code, OpCode::Notify);
        assert!(m.metadata.recursion_desired);
        assert!(!m.metadata.recursion_available);
    }

    #[test]
    fn truncation_drops_additional_then_everything() {
        let p = query("a.", RecordType::A, None);
        let q = parse_query(&p).unwrap();
        let body = Body {
            opcode: 0,
            rcode: 0,
            flags: FLAG_AA,
            bytes: &[7; 600],
            additional_at: 400,
            answers: 3,
            authorities: 0,
            additionals: 2,
        };
        let mut out = Vec::new();
        let written = write_response(&mut out, &q, false, &body, 512);
        assert_eq!(out.len(), 12 + q.question.len() + 400);
        assert_eq!(&out[6..12], &[0, 3, 0, 0, 0, 0]);
        assert_eq!(
            written,
            Written {
                body: 400,
                truncated: false
            }
        );
        let written = write_response(&mut out, &q, false, &body, 100);
        assert_eq!(out.len(), 12 + q.question.len());
        assert_eq!(out[2] & 0x02, 0x02, "TC set");
        assert!(written.truncated && is_truncated(&out));
        write_response(&mut out, &q, false, &body, MAX_MESSAGE);
        assert_eq!(out.len(), 12 + q.question.len() + 600);
        let m = Message::from_vec(&query("a.", RecordType::A, Some(4096))).unwrap();
        assert!(m.edns.is_some());
    }

    #[test]
    fn names_to_wire() {
        assert_eq!(
            name_to_wire("Web.Marathon.mesos").unwrap(),
            b"\x03web\x08marathon\x05mesos\x00"
        );
        assert_eq!(name_to_wire("a.b.").unwrap(), b"\x01a\x01b\x00");
        assert_eq!(name_to_wire(".").unwrap(), [0]);
        assert_eq!(name_to_wire("").unwrap(), [0]);
        assert_eq!(name_to_wire("a..b"), None);
        assert_eq!(name_to_wire(&"x".repeat(64)), None);
        assert_eq!(name_to_wire(&"-.toolong".repeat(40)), None);
    }

    #[test]
    fn queries_for_upstreams_parse_back() {
        let p = query("Www.Example.com.", RecordType::AAAA, None);
        let q = parse_query(&p).unwrap();
        let mut out = Vec::new();
        write_query(&mut out, true, true, &q.question, true);
        let m = Message::from_vec(&out).unwrap();
        assert!(m.metadata.recursion_desired && m.metadata.checking_disabled);
        assert_eq!(m.queries[0].name().to_ascii(), "Www.Example.com.");
        let edns = m.edns.unwrap();
        assert!(edns.flags().dnssec_ok);
        assert_eq!(edns.max_payload(), OUR_UDP_PAYLOAD);
    }

    /// The hand-written conversion gives hickory's bytes for every name it takes.
    #[test]
    fn plain_names_convert_as_hickory_converts_them() {
        let hickory = |name: &str| Name::from_ascii(name).ok()?.to_lowercase().to_bytes().ok();
        let long = "a".repeat(63);
        let names = [
            "app.marathon.mesos.".to_string(),
            "app.marathon.mesos".to_string(),
            "_http._app-1._tcp.marathon.slave.mesos.".to_string(),
            format!("{long}.mesos."),
            format!("{long}.{long}.{long}.{}.", "b".repeat(61)),
        ];
        for name in &names {
            assert_eq!(plain_name_to_wire(name), hickory(name), "{name}");
        }
        let mut rng = fastrand::Rng::with_seed(3);
        let alphabet = b"abz09-_.";
        for _ in 0..2000 {
            let name: String = (0..rng.usize(1..40))
                .map(|_| alphabet[rng.usize(..alphabet.len())] as char)
                .collect();
            if let Some(wire) = plain_name_to_wire(&name) {
                assert_eq!(Some(wire), hickory(&name), "{name:?}");
            }
        }
        // Left to hickory: upper case, escapes, empty labels, labels and names too long.
        let refused = [
            "App.mesos.".to_string(),
            "a\\.b.mesos.".to_string(),
            "a..mesos.".to_string(),
            "-a.mesos.".to_string(),
            ".".to_string(),
            String::new(),
            format!("{}a.mesos.", long),
            format!("{long}.{long}.{long}.{long}."),
        ];
        for name in &refused {
            assert_eq!(plain_name_to_wire(name), None, "{name:?}");
        }
        assert_eq!(name_to_wire("App.Mesos."), hickory("app.mesos."));
    }
}
