//! The hot path's wire format: a query parser that borrows the packet and never allocates,
//! and the assembly of a response from precomputed sections. Anything unusual goes to hickory.

/// Header length.
pub const HEADER: usize = 12;
/// The UDP payload size we advertise and accept at most (the DNS flag day 2020 value).
pub const OUR_UDP_PAYLOAD: u16 = 1232;
/// Largest DNS message (TCP).
pub const MAX_MESSAGE: usize = 65535;

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;
pub const RCODE_REFUSED: u8 = 5;

/// The client's EDNS(0) OPT record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
}

/// A parsed query, borrowing the packet.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    pub id: u16,
    pub rd: bool,
    pub cd: bool,
    /// The question as asked: name (wire form), type, class.
    pub question: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
}

impl<'a> Query<'a> {
    /// The question name in wire form, including the root label.
    pub fn qname(&self) -> &'a [u8] {
        &self.question[..self.question.len() - 4]
    }

    /// The largest response this client accepts over UDP.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(e) => usize::from(e.payload.clamp(512, OUR_UDP_PAYLOAD)),
            None => 512,
        }
    }
}

/// Why a packet is not a query we answer normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Too short to reply to, or a response (QR=1): never answer it (no reflection loops).
    Drop,
    /// Answer with this rcode; `question` is echoed when it could be parsed.
    Error {
        id: u16,
        rd: bool,
        /// The query's opcode, echoed in the reply.
        opcode: u8,
        rcode: u8,
        /// End of the question within the packet (0: no question to echo).
        question_end: usize,
    },
}

/// Parses a query. Names must be uncompressed (queries are), at most 255 bytes, labels at
/// most 63; exactly one question; an OPT record is recognised in the additional section.
pub fn parse_query(packet: &[u8]) -> Result<Query<'_>, Reject> {
    if packet.len() < HEADER {
        return Err(Reject::Drop);
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    if flags & 0x8000 != 0 {
        return Err(Reject::Drop);
    }
    let rd = flags & 0x0100 != 0;
    let cd = flags & 0x0010 != 0;
    let opcode = ((flags >> 11) & 0xf) as u8;
    let count = |i: usize| u16::from_be_bytes([packet[4 + 2 * i], packet[5 + 2 * i]]);
    let (qd, an, ns, ar) = (count(0), count(1), count(2), count(3));
    let err = |rcode, question_end| Reject::Error {
        id,
        rd,
        opcode,
        rcode,
        question_end,
    };
    if qd != 1 {
        return Err(err(RCODE_FORMERR, 0));
    }
    let name_end = skip_uncompressed_name(packet, HEADER).ok_or(err(RCODE_FORMERR, 0))?;
    let question_end = name_end + 4;
    if packet.len() < question_end {
        return Err(err(RCODE_FORMERR, 0));
    }
    if opcode != 0 {
        return Err(err(RCODE_NOTIMP, question_end));
    }
    if an != 0 || ns != 0 {
        return Err(err(RCODE_FORMERR, question_end));
    }
    let qtype = u16::from_be_bytes([packet[name_end], packet[name_end + 1]]);
    let qclass = u16::from_be_bytes([packet[name_end + 2], packet[name_end + 3]]);
    let mut edns = None;
    let mut pos = question_end;
    for _ in 0..ar {
        let name_end = skip_any_name(packet, pos).ok_or(err(RCODE_FORMERR, question_end))?;
        let fixed = packet
            .get(name_end..name_end + 10)
            .ok_or(err(RCODE_FORMERR, question_end))?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let end = name_end + 10 + rdlen;
        if end > packet.len() {
            return Err(err(RCODE_FORMERR, question_end));
        }
        if rtype == TYPE_OPT {
            // One OPT, owned by the root.
            if edns.is_some() || name_end != pos + 1 {
                return Err(err(RCODE_FORMERR, question_end));
            }
            edns = Some(Edns {
                payload: u16::from_be_bytes([fixed[2], fixed[3]]),
                version: fixed[5],
                dnssec_ok: fixed[6] & 0x80 != 0,
            });
        }
        pos = end;
    }
    Ok(Query {
        id,
        rd,
        cd,
        question: &packet[HEADER..question_end],
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
        if len > 63 || pos + 1 + len - start > 254 {
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
pub fn lowercase_name(name: &[u8], buf: &mut [u8; 256]) -> usize {
    let n = name.len().min(256);
    for (dst, src) in buf.iter_mut().zip(&name[..n]) {
        *dst = src.to_ascii_lowercase();
    }
    n
}

/// The parts of a response after the question.
#[derive(Clone, Copy, Debug, Default)]
pub struct Body<'a> {
    /// The query's opcode, echoed (0 for QUERY, the only one answered with data).
    pub opcode: u8,
    pub rcode: u8,
    pub authoritative: bool,
    /// Answer and authority records, then additional records, encoded for this question's
    /// length (compression pointers may point into the question at offset 12).
    pub bytes: &'a [u8],
    /// Where the additional records start in `bytes` (dropped first when space is short).
    pub additional_at: usize,
    pub answers: u16,
    pub authorities: u16,
    pub additionals: u16,
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
) {
    write_response_parts(
        out,
        q.id,
        q.rd,
        q.cd,
        q.question,
        q.edns,
        recursion_available,
        body,
        limit,
    );
}

/// `write_response` for callers that have no parsed `Query` (error replies).
#[allow(clippy::too_many_arguments)]
pub fn write_response_parts(
    out: &mut Vec<u8>,
    id: u16,
    rd: bool,
    cd: bool,
    question: &[u8],
    edns: Option<Edns>,
    recursion_available: bool,
    body: &Body<'_>,
    limit: usize,
) {
    const OPT_LEN: usize = 11;
    let opt_len = if edns.is_some() { OPT_LEN } else { 0 };
    let fixed = HEADER + question.len() + opt_len;
    let (bytes, answers, authorities, additionals, truncated) = if fixed + body.bytes.len() <= limit
    {
        (
            body.bytes,
            body.answers,
            body.authorities,
            body.additionals,
            false,
        )
    } else if fixed + body.additional_at <= limit {
        (
            &body.bytes[..body.additional_at],
            body.answers,
            body.authorities,
            0,
            false,
        )
    } else {
        (&[][..], 0, 0, 0, true)
    };
    let mut flags: u16 = 0x8000 | (u16::from(body.opcode & 0x0f) << 11);
    if body.authoritative {
        flags |= 0x0400;
    }
    if truncated {
        flags |= 0x0200;
    }
    if rd {
        flags |= 0x0100;
    }
    if recursion_available {
        flags |= 0x0080;
    }
    if cd {
        flags |= 0x0010;
    }
    flags |= u16::from(body.rcode & 0x0f);
    out.clear();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    let qd: u16 = if question.is_empty() { 0 } else { 1 };
    let ar = additionals + u16::from(edns.is_some());
    for c in [qd, answers, authorities, ar] {
        out.extend_from_slice(&c.to_be_bytes());
    }
    out.extend_from_slice(question);
    out.extend_from_slice(bytes);
    if let Some(e) = edns {
        // Root owner, type OPT, our payload, extended rcode (BADVERS = 16 -> 1), version 0, DO copied.
        let ext_rcode = body.rcode >> 4;
        let do_flag = if e.dnssec_ok { 0x80 } else { 0 };
        out.extend_from_slice(&[0, 0, 41]);
        out.extend_from_slice(&OUR_UDP_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&[ext_rcode, 0, do_flag, 0, 0, 0]);
    }
}

/// Rcode BADVERS (16): an EDNS version we do not speak.
pub const RCODE_BADVERS: u8 = 16;

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
        let mut buf = [0u8; 256];
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
            assert!(
                matches!(
                    parse_query(&p[..cut]),
                    Err(Reject::Error {
                        rcode: RCODE_FORMERR,
                        ..
                    })
                ),
                "{cut}"
            );
        }
        // A compression pointer in the question.
        let mut p = query("a.", RecordType::A, None);
        p[12] = 0xc0;
        assert!(matches!(
            parse_query(&p),
            Err(Reject::Error {
                rcode: RCODE_FORMERR,
                ..
            })
        ));
        // Two OPT records.
        let mut p = query("a.", RecordType::A, Some(1232));
        let opt = p[p.len() - 11..].to_vec();
        p.extend_from_slice(&opt);
        p[11] = 2;
        assert!(matches!(
            parse_query(&p),
            Err(Reject::Error {
                rcode: RCODE_FORMERR,
                ..
            })
        ));
    }

    #[test]
    fn truncation_drops_additional_then_everything() {
        let p = query("a.", RecordType::A, None);
        let q = parse_query(&p).unwrap();
        let body = Body {
            opcode: 0,
            rcode: 0,
            authoritative: true,
            bytes: &[7; 600],
            additional_at: 400,
            answers: 3,
            authorities: 0,
            additionals: 2,
        };
        let mut out = Vec::new();
        write_response(&mut out, &q, false, &body, 512);
        assert_eq!(out.len(), 12 + q.question.len() + 400);
        assert_eq!(&out[6..12], &[0, 3, 0, 0, 0, 0]);
        write_response(&mut out, &q, false, &body, 100);
        assert_eq!(out.len(), 12 + q.question.len());
        assert_eq!(out[2] & 0x02, 0x02, "TC set");
        write_response(&mut out, &q, false, &body, MAX_MESSAGE);
        assert_eq!(out.len(), 12 + q.question.len() + 600);
        let m = Message::from_vec(&query("a.", RecordType::A, Some(4096))).unwrap();
        assert!(m.edns.is_some());
    }
}
