//! The bytes the forwarder reads and writes: the client's question, the query sent upstream, the
//! layout of an upstream answer (where its TTLs and OPT record sit), and locally made responses.

use hickory_proto::op::Message;

pub(super) const HEADER_LEN: usize = 12;
/// The UDP payload size we advertise upstream and to clients (DNS Flag Day 2020): large enough
/// that most answers need no TCP, small enough not to be fragmented.
pub(super) const EDNS_PAYLOAD: u16 = 1232;
/// An OPT record without options: root owner, type, class, TTL, RDLENGTH.
const OPT_LEN: usize = 11;
/// RFC 1035 §3.1: a name on the wire is at most 255 bytes.
const MAX_NAME_LEN: usize = 255;

const TYPE_SOA: u16 = 6;
const TYPE_OPT: u16 = 41;
pub(super) const TYPE_IXFR: u16 = 251;
pub(super) const TYPE_AXFR: u16 = 252;

/// Response codes, extended ones (RFC 6891) included, as 12-bit values.
pub(super) mod rcode {
    pub const NOERROR: u16 = 0;
    pub const FORMERR: u16 = 1;
    pub const SERVFAIL: u16 = 2;
    pub const NXDOMAIN: u16 = 3;
    pub const NOTIMP: u16 = 4;
    pub const REFUSED: u16 = 5;
    pub const BADVERS: u16 = 16;
}

// Header flags, RFC 1035 §4.1.1: byte 2 is QR OPCODE AA TC RD, byte 3 is RA Z AD CD RCODE.
const QR: u8 = 0x80;
const OPCODE: u8 = 0x78;
const TC: u8 = 0x02;
const RD: u8 = 0x01;
const RA: u8 = 0x80;
const CD: u8 = 0x10;
const RCODE: u8 = 0x0F;

fn u16_at(packet: &[u8], at: usize) -> Option<u16> {
    let b = packet.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn u32_at(packet: &[u8], at: usize) -> Option<u32> {
    let b = packet.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// RFC 2181 §8: a TTL with the top bit set is to be read as zero.
fn ttl_value(raw: u32) -> u32 {
    if raw > i32::MAX as u32 {
        0
    } else {
        raw
    }
}

/// The end of an uncompressed name starting at `start`, as questions carry them.
fn name_end_uncompressed(packet: &[u8], start: usize) -> Option<usize> {
    let mut pos = start;
    loop {
        let len = usize::from(*packet.get(pos)?);
        if len > 63 {
            return None;
        }
        pos += 1 + len;
        if pos - start > MAX_NAME_LEN {
            return None;
        }
        if len == 0 {
            return Some(pos);
        }
    }
}

/// The end of a possibly compressed name; pointers end a name and are not followed.
fn skip_name(packet: &[u8], start: usize) -> Option<usize> {
    let mut pos = start;
    loop {
        let len = *packet.get(pos)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(pos + 1),
            0x00 => {
                pos += 1 + usize::from(len);
                if pos - start > MAX_NAME_LEN {
                    return None;
                }
            }
            0xC0 => {
                packet.get(pos + 1)?;
                return Some(pos + 2);
            }
            _ => return None,
        }
    }
}

fn push_opt(out: &mut Vec<u8>, ext_rcode: u8, dnssec_ok: bool) {
    let [hi, lo] = EDNS_PAYLOAD.to_be_bytes();
    let flags = if dnssec_ok { 0x80 } else { 0 };
    out.extend_from_slice(&[0, 0, 41, hi, lo, ext_rcode, 0, flags, 0, 0, 0]);
}

/// The client's EDNS, as far as it shapes our answer.
#[derive(Debug, Clone, Copy)]
pub(super) struct ClientEdns {
    pub version: u8,
    pub dnssec_ok: bool,
}

/// A client's query that parsed: one question, QR=0, opcode QUERY.
#[derive(Debug)]
pub(super) struct ClientQuery<'a> {
    header: [u8; HEADER_LEN],
    /// QNAME QTYPE QCLASS exactly as asked (case included).
    question: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<ClientEdns>,
}

/// Why a query was not forwarded, before any question could be read from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rejection {
    /// Not a well-formed single-question query (FORMERR).
    Malformed,
    /// An opcode other than QUERY (NOTIMP).
    NotImplemented,
}

impl Rejection {
    pub fn rcode(self) -> u16 {
        match self {
            Rejection::Malformed => rcode::FORMERR,
            Rejection::NotImplemented => rcode::NOTIMP,
        }
    }
}

pub(super) fn parse_query(packet: &[u8]) -> Result<ClientQuery<'_>, Rejection> {
    let header: [u8; HEADER_LEN] = packet
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(Rejection::Malformed)?;
    if header[2] & QR != 0 {
        return Err(Rejection::Malformed);
    }
    if header[2] & OPCODE != 0 {
        return Err(Rejection::NotImplemented);
    }
    if u16_at(&header, 4) != Some(1) {
        return Err(Rejection::Malformed);
    }
    let name_end = name_end_uncompressed(packet, HEADER_LEN).ok_or(Rejection::Malformed)?;
    let qtype = u16_at(packet, name_end).ok_or(Rejection::Malformed)?;
    let qclass = u16_at(packet, name_end + 2).ok_or(Rejection::Malformed)?;
    let question = packet
        .get(HEADER_LEN..name_end + 4)
        .ok_or(Rejection::Malformed)?;
    // The full decode is the strict check of everything after the question (OPT placement,
    // record syntax), and it reads the EDNS for us.
    let message = Message::from_vec(packet).map_err(|_| Rejection::Malformed)?;
    let edns = message.edns.as_ref().map(|e| ClientEdns {
        version: e.version(),
        dnssec_ok: e.flags().dnssec_ok,
    });
    Ok(ClientQuery {
        header,
        question,
        qtype,
        qclass,
        edns,
    })
}

impl ClientQuery<'_> {
    pub fn id(&self) -> [u8; 2] {
        [self.header[0], self.header[1]]
    }

    pub fn question(&self) -> &[u8] {
        self.question
    }

    /// The question's name in wire form, as asked.
    pub fn qname(&self) -> &[u8] {
        self.question
            .get(..self.question.len().saturating_sub(4))
            .unwrap_or_default()
    }

    pub fn recursion_desired(&self) -> bool {
        self.header[2] & RD != 0
    }

    pub fn checking_disabled(&self) -> bool {
        self.header[3] & CD != 0
    }

    pub fn dnssec_ok(&self) -> bool {
        self.edns.is_some_and(|e| e.dnssec_ok)
    }
}

/// The query we send upstream. Built afresh rather than relayed, so that what we cache does
/// not depend on one client's EDNS options: the client's question, RD and CD, and our own OPT
/// with the client's DO bit.
#[derive(Debug)]
pub(super) struct UpstreamQuery {
    bytes: Vec<u8>,
    qend: usize,
}

impl UpstreamQuery {
    pub fn new(client: &ClientQuery<'_>) -> Self {
        let question = client.question();
        let mut bytes = Vec::with_capacity(HEADER_LEN + question.len() + OPT_LEN);
        bytes.extend_from_slice(&[0, 0, client.header[2] & RD, client.header[3] & CD]);
        bytes.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1]);
        bytes.extend_from_slice(question);
        let qend = bytes.len();
        push_opt(&mut bytes, 0, client.dnssec_ok());
        UpstreamQuery { bytes, qend }
    }

    /// The query with `id` in its header, ready to send.
    pub fn with_id(&self, id: u16) -> Vec<u8> {
        let mut bytes = self.bytes.clone();
        if let Some(head) = bytes.get_mut(..2) {
            head.copy_from_slice(&id.to_be_bytes());
        }
        bytes
    }

    pub fn question(&self) -> &[u8] {
        self.bytes.get(HEADER_LEN..self.qend).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Answer,
    Authority,
    Additional,
}

#[derive(Debug)]
struct RecordInfo {
    section: Section,
    ttl_offset: usize,
    ttl: u32,
    /// For an SOA in the authority section: its MINIMUM field (RFC 2308 §5).
    soa_minimum: Option<u32>,
}

#[derive(Debug, Default)]
struct Layout {
    records: Vec<RecordInfo>,
    /// Byte range of the OPT record and its extended RCODE bits.
    opt: Option<(usize, usize, u8)>,
}

/// Where every record of a response starts its TTL, and where the OPT is.
fn walk(packet: &[u8], qend: usize) -> Option<Layout> {
    let counts = [
        (Section::Answer, u16_at(packet, 6)?),
        (Section::Authority, u16_at(packet, 8)?),
        (Section::Additional, u16_at(packet, 10)?),
    ];
    let mut layout = Layout::default();
    let mut pos = qend;
    for (section, count) in counts {
        for _ in 0..count {
            let start = pos;
            let name_end = skip_name(packet, pos)?;
            let rtype = u16_at(packet, name_end)?;
            let ttl_offset = name_end + 4;
            let ttl = u32_at(packet, ttl_offset)?;
            let rdlen = usize::from(u16_at(packet, name_end + 8)?);
            let rdata_end = name_end + 10 + rdlen;
            if rdata_end > packet.len() {
                return None;
            }
            pos = rdata_end;
            if rtype == TYPE_OPT {
                if section != Section::Additional || layout.opt.is_some() {
                    return None;
                }
                layout.opt = Some((start, rdata_end, (ttl >> 24) as u8));
                continue;
            }
            let soa_minimum = if rtype == TYPE_SOA && section == Section::Authority {
                // MINIMUM is the last field; the two names before it may be compressed.
                rdata_end.checked_sub(4).and_then(|at| u32_at(packet, at))
            } else {
                None
            };
            layout.records.push(RecordInfo {
                section,
                ttl_offset,
                ttl: ttl_value(ttl),
                soa_minimum,
            });
        }
    }
    Some(layout)
}

/// A valid upstream answer, its OPT record removed.
#[derive(Debug)]
pub(super) struct Answer {
    /// Header, question and records; the header still carries the ID we chose.
    pub message: Vec<u8>,
    pub qend: usize,
    pub rcode: u16,
    pub truncated: bool,
    pub ttl_offsets: Vec<u16>,
    /// How long this answer may be cached, if at all (before the cache's own cap).
    pub cache_ttl: Option<u32>,
}

/// Why a datagram from an upstream is not the answer to our query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AnswerError {
    /// Not a response to this query ID: ignore it and keep waiting (it may be a spoof).
    NotOurs,
    /// A response to our ID that is malformed or answers another question.
    Invalid,
}

/// Checks that `packet` answers `query` sent with ID `id`, and records its layout.
pub(super) fn check_answer(
    packet: &[u8],
    query: &UpstreamQuery,
    id: u16,
) -> Result<Answer, AnswerError> {
    let header = packet.get(..HEADER_LEN).ok_or(AnswerError::NotOurs)?;
    if u16_at(header, 0) != Some(id) || header[2] & QR == 0 {
        return Err(AnswerError::NotOurs);
    }
    if header[2] & OPCODE != 0 || u16_at(header, 4) != Some(1) {
        return Err(AnswerError::Invalid);
    }
    let asked = query.question();
    let qend = HEADER_LEN + asked.len();
    let got = packet.get(HEADER_LEN..qend).ok_or(AnswerError::Invalid)?;
    let split = asked.len().saturating_sub(4);
    // The name is compared without case: some servers do not echo the 0x20 mix they were sent.
    if !got[..split].eq_ignore_ascii_case(&asked[..split]) || got[split..] != asked[split..] {
        return Err(AnswerError::Invalid);
    }
    let message = Message::from_vec(packet).map_err(|_| AnswerError::Invalid)?;
    let layout = walk(packet, qend).ok_or(AnswerError::Invalid)?;
    let (bytes, layout) = match layout.opt {
        None => (packet.to_vec(), layout),
        Some((start, end, _)) if end == packet.len() => {
            let mut bytes = packet.get(..start).ok_or(AnswerError::Invalid)?.to_vec();
            let arcount = u16_at(&bytes, 10)
                .and_then(|n| n.checked_sub(1))
                .ok_or(AnswerError::Invalid)?;
            bytes[10..12].copy_from_slice(&arcount.to_be_bytes());
            (bytes, layout)
        }
        Some(_) => {
            // Cutting an OPT out of the middle could break compression pointers past it, so
            // let the encoder lay the message out again without it.
            let mut message = message;
            message.edns = None;
            let bytes = message.to_vec().map_err(|_| AnswerError::Invalid)?;
            let relaid = walk(&bytes, qend).ok_or(AnswerError::Invalid)?;
            if relaid.opt.is_some() {
                return Err(AnswerError::Invalid);
            }
            (
                bytes,
                Layout {
                    opt: layout.opt,
                    ..relaid
                },
            )
        }
    };
    let ext_rcode = layout.opt.map_or(0, |(_, _, ext)| ext);
    let rcode = (u16::from(ext_rcode) << 4) | u16::from(header[3] & RCODE);
    let truncated = header[2] & TC != 0;
    let cache_ttl = if truncated {
        None
    } else {
        cache_ttl(rcode, &layout.records)
    };
    let ttl_offsets = layout
        .records
        .iter()
        .map(|r| u16::try_from(r.ttl_offset).map_err(|_| AnswerError::Invalid))
        .collect::<Result<_, _>>()?;
    Ok(Answer {
        message: bytes,
        qend,
        rcode,
        truncated,
        ttl_offsets,
        cache_ttl,
    })
}

/// Positive answers live as long as their shortest answer or authority record; negative ones
/// (RFC 2308) as long as the SOA allows, and not at all without one.
fn cache_ttl(rcode: u16, records: &[RecordInfo]) -> Option<u32> {
    let in_section = |section| records.iter().filter(move |r| r.section == section);
    let shortest_answer = in_section(Section::Answer).map(|r| r.ttl).min();
    let ttl = match (rcode, shortest_answer) {
        (rcode::NOERROR, Some(answer)) => in_section(Section::Authority)
            .map(|r| r.ttl)
            .fold(answer, u32::min),
        (rcode::NOERROR | rcode::NXDOMAIN, _) => {
            let (soa_ttl, minimum) = in_section(Section::Authority)
                .find_map(|r| r.soa_minimum.map(|minimum| (r.ttl, minimum)))?;
            let negative = soa_ttl.min(minimum);
            shortest_answer.map_or(negative, |answer| answer.min(negative))
        }
        _ => return None,
    };
    (ttl > 0).then_some(ttl)
}

/// How the TTLs of a stored answer are written into a response.
#[derive(Debug, Clone, Copy)]
pub(super) enum Ttls<'a> {
    /// As the upstream sent them.
    AsIs,
    /// Decremented by the entry's age in seconds.
    Aged { offsets: &'a [u16], age: u32 },
    /// All set to one value (serve-stale).
    Fixed { offsets: &'a [u16], ttl: u32 },
}

impl Ttls<'_> {
    fn offsets(&self) -> &[u16] {
        match self {
            Ttls::AsIs => &[],
            Ttls::Aged { offsets, .. } | Ttls::Fixed { offsets, .. } => offsets,
        }
    }

    fn patch(&self, stored: u32) -> u32 {
        match *self {
            Ttls::AsIs => stored,
            Ttls::Aged { age, .. } => stored.saturating_sub(age),
            Ttls::Fixed { ttl, .. } => ttl,
        }
    }
}

/// A response to `client` built from a stored answer: the client's ID and question, TTLs
/// patched in place, and an OPT if the client sent one. Past `max_size`, a TC=1 response with
/// only the question (and OPT). `None` if the answer does not fit the client's question.
pub(super) fn render(
    message: &[u8],
    qend: usize,
    client: &ClientQuery<'_>,
    ttls: Ttls<'_>,
    max_size: usize,
) -> Option<(Vec<u8>, bool)> {
    let mut out = Vec::with_capacity(message.len() + OPT_LEN);
    out.extend_from_slice(message);
    out.get_mut(..2)?.copy_from_slice(&client.id());
    out.get_mut(HEADER_LEN..qend)
        .filter(|q| q.len() == client.question().len())?
        .copy_from_slice(client.question());
    for &offset in ttls.offsets() {
        let at = usize::from(offset);
        let field = out.get_mut(at..at + 4)?;
        let ttl = u32::from_be_bytes([field[0], field[1], field[2], field[3]]);
        field.copy_from_slice(&ttls.patch(ttl).to_be_bytes());
    }
    if let Some(edns) = client.edns {
        let arcount = u16_at(&out, 10)?.checked_add(1)?;
        out[10..12].copy_from_slice(&arcount.to_be_bytes());
        push_opt(&mut out, 0, edns.dnssec_ok);
    }
    if out.len() > max_size {
        let flags = [out[2] | TC, out[3]];
        return Some((question_only(client, flags, 0), true));
    }
    Some((out, false))
}

/// Header, question and (if the client sent one) OPT: a truncated response, or an error.
fn question_only(client: &ClientQuery<'_>, flags: [u8; 2], ext_rcode: u8) -> Vec<u8> {
    let id = client.id();
    let arcount = u8::from(client.edns.is_some());
    let mut out = Vec::with_capacity(HEADER_LEN + client.question().len() + OPT_LEN);
    out.extend_from_slice(&[
        id[0], id[1], flags[0], flags[1], 0, 1, 0, 0, 0, 0, 0, arcount,
    ]);
    out.extend_from_slice(client.question());
    if let Some(edns) = client.edns {
        push_opt(&mut out, ext_rcode, edns.dnssec_ok);
    }
    out
}

/// A response made up here: `rcode` (the high bits of an extended one go into the OPT, so
/// they need a client that sent one), the question when there is one, an OPT when the client
/// sent one. Works on any input: ID, opcode and RD are echoed from whatever bytes there are.
pub(super) fn error_response(
    packet: &[u8],
    client: Option<&ClientQuery<'_>>,
    rcode: u16,
) -> Vec<u8> {
    let byte = |i: usize| packet.get(i).copied().unwrap_or(0);
    let flags = [
        QR | (byte(2) & (OPCODE | RD)),
        RA | (byte(3) & CD) | (rcode as u8 & RCODE),
    ];
    match client {
        Some(client) => question_only(client, flags, (rcode >> 4) as u8),
        None => vec![byte(0), byte(1), flags[0], flags[1], 0, 0, 0, 0, 0, 0, 0, 0],
    }
}

/// A query for `name` (dotted, no escapes) and `qtype`, RD set, optionally with an OPT.
#[cfg(test)]
pub(super) fn test_query(id: u16, name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    let mut out = id.to_be_bytes().to_vec();
    out.extend_from_slice(&[RD, 0, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&[0, 1]);
    if edns {
        push_opt(&mut out, 0, false);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u16 = 1;

    /// A response to `query` sent with `id`: `rcode`, then `records` appended as given (the
    /// counts say how many are in each section).
    fn response(
        query: &UpstreamQuery,
        id: u16,
        rcode: u8,
        counts: [u16; 3],
        records: &[u8],
    ) -> Vec<u8> {
        let mut out = id.to_be_bytes().to_vec();
        out.extend_from_slice(&[QR | RD, RA | rcode, 0, 1]);
        for count in counts {
            out.extend_from_slice(&count.to_be_bytes());
        }
        out.extend_from_slice(query.question());
        out.extend_from_slice(records);
        out
    }

    /// An A record owned by the question's name (a pointer to offset 12).
    fn a_record(ttl: u32, last: u8) -> Vec<u8> {
        let mut out = vec![0xC0, 0x0C, 0, 1, 0, 1];
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&[0, 4, 198, 18, 0, last]);
        out
    }

    fn soa_record(ttl: u32, minimum: u32) -> Vec<u8> {
        let mut rdata = vec![0xC0, 0x0C, 0xC0, 0x0C];
        for field in [1u32, 60, 60, 600, minimum] {
            rdata.extend_from_slice(&field.to_be_bytes());
        }
        let mut out = vec![0xC0, 0x0C, 0, 6, 0, 1];
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
        out
    }

    fn opt_record() -> Vec<u8> {
        let mut out = Vec::new();
        push_opt(&mut out, 0, false);
        out
    }

    fn upstream_query(name: &str) -> UpstreamQuery {
        let query = test_query(1, name, A, false);
        UpstreamQuery::new(&parse_query(&query).unwrap())
    }

    #[test]
    fn positive_ttl_is_the_shortest_answer_or_authority() {
        let query = upstream_query("www.example.com");
        let records = [
            a_record(300, 1),
            a_record(200, 2),
            soa_record(250, 100),
            a_record(5, 3),
        ]
        .concat();
        let packet = response(&query, 7, 0, [2, 1, 1], &records);
        let answer = check_answer(&packet, &query, 7).unwrap();
        assert_eq!(answer.cache_ttl, Some(200));
        assert_eq!(answer.ttl_offsets.len(), 4);
        assert_eq!(answer.message, packet);
    }

    #[test]
    fn negative_ttl_needs_an_soa() {
        let query = upstream_query("nothing.example.com");
        let nx = response(&query, 7, 3, [0, 1, 0], &soa_record(3600, 60));
        assert_eq!(check_answer(&nx, &query, 7).unwrap().cache_ttl, Some(60));
        let nodata = response(&query, 7, 0, [0, 1, 0], &soa_record(30, 60));
        assert_eq!(
            check_answer(&nodata, &query, 7).unwrap().cache_ttl,
            Some(30)
        );
        let bare = response(&query, 7, 3, [0, 0, 0], &[]);
        assert_eq!(check_answer(&bare, &query, 7).unwrap().cache_ttl, None);
        let servfail = response(&query, 7, 2, [0, 0, 0], &[]);
        let answer = check_answer(&servfail, &query, 7).unwrap();
        assert_eq!((answer.rcode, answer.cache_ttl), (rcode::SERVFAIL, None));
    }

    #[test]
    fn ttl_with_the_top_bit_set_is_zero_and_not_cached() {
        let query = upstream_query("www.example.com");
        let packet = response(&query, 7, 0, [1, 0, 0], &a_record(0x8000_0000, 1));
        assert_eq!(check_answer(&packet, &query, 7).unwrap().cache_ttl, None);
    }

    #[test]
    fn opt_is_cut_off_the_end() {
        let query = upstream_query("www.example.com");
        let records = [a_record(300, 1), opt_record()].concat();
        let packet = response(&query, 7, 0, [1, 0, 1], &records);
        let answer = check_answer(&packet, &query, 7).unwrap();
        assert_eq!(answer.message.len(), packet.len() - OPT_LEN);
        assert_eq!(u16_at(&answer.message, 10), Some(0));
    }

    #[test]
    fn opt_in_the_middle_is_laid_out_again() {
        let query = upstream_query("www.example.com");
        let records = [a_record(300, 1), opt_record(), a_record(3600, 2)].concat();
        let packet = response(&query, 7, 0, [1, 0, 2], &records);
        let answer = check_answer(&packet, &query, 7).unwrap();
        assert_eq!(u16_at(&answer.message, 10), Some(1));
        let message = Message::from_vec(&answer.message).unwrap();
        assert!(message.edns.is_none());
        assert_eq!(message.additionals.len(), 1);
        assert_eq!(answer.ttl_offsets.len(), 2);
        assert_eq!(answer.cache_ttl, Some(300));
    }

    #[test]
    fn foreign_or_mismatched_answers_are_rejected() {
        let query = upstream_query("www.example.com");
        let good = response(&query, 7, 0, [1, 0, 0], &a_record(300, 1));
        assert_eq!(
            check_answer(&good, &query, 8).unwrap_err(),
            AnswerError::NotOurs
        );
        assert_eq!(
            check_answer(&good[..11], &query, 7).unwrap_err(),
            AnswerError::NotOurs
        );
        let mut not_response = good.clone();
        not_response[2] &= !QR;
        assert_eq!(
            check_answer(&not_response, &query, 7).unwrap_err(),
            AnswerError::NotOurs
        );
        let other = upstream_query("www.example.org");
        let wrong_question = response(&other, 7, 0, [1, 0, 0], &a_record(300, 1));
        assert_eq!(
            check_answer(&wrong_question, &query, 7).unwrap_err(),
            AnswerError::Invalid
        );
        let cut = &good[..good.len() - 1];
        assert_eq!(
            check_answer(cut, &query, 7).unwrap_err(),
            AnswerError::Invalid
        );
        // The upstream may change the case of the name it echoes.
        let upper = upstream_query("WWW.EXAMPLE.COM");
        let recased = response(&upper, 7, 0, [1, 0, 0], &a_record(300, 1));
        assert!(check_answer(&recased, &query, 7).is_ok());
    }

    #[test]
    fn render_patches_id_question_and_ttls() {
        let query = upstream_query("www.example.com");
        let packet = response(&query, 7, 0, [1, 0, 0], &a_record(300, 1));
        let answer = check_answer(&packet, &query, 7).unwrap();
        let client_bytes = test_query(0xBEEF, "WwW.example.COM", A, true);
        let client = parse_query(&client_bytes).unwrap();
        let offsets = &answer.ttl_offsets;
        for (ttls, expected) in [
            (Ttls::AsIs, 300),
            (Ttls::Aged { offsets, age: 42 }, 258),
            (Ttls::Fixed { offsets, ttl: 30 }, 30),
        ] {
            let (out, truncated) =
                render(&answer.message, answer.qend, &client, ttls, 512).unwrap();
            assert!(!truncated);
            let message = Message::from_vec(&out).unwrap();
            assert_eq!(message.metadata.id, 0xBEEF);
            assert_eq!(message.queries[0].name.to_ascii(), "WwW.example.COM.");
            assert_eq!(message.answers[0].ttl, expected);
            assert!(message.edns.is_some());
        }
    }

    #[test]
    fn error_response_echoes_what_it_can() {
        assert_eq!(
            error_response(&[], None, rcode::FORMERR),
            [0, 0, QR, RA | 1, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            error_response(&[0xAB], None, rcode::FORMERR)[..2],
            [0xAB, 0]
        );
        let query = test_query(5, "a.b", A, true);
        let client = parse_query(&query).unwrap();
        let badvers =
            Message::from_vec(&error_response(&query, Some(&client), rcode::BADVERS)).unwrap();
        assert_eq!(u16::from(badvers.metadata.response_code), rcode::BADVERS);
        assert_eq!(badvers.queries.len(), 1);
    }
}
