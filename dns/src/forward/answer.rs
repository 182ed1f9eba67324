//! What the forwarder sends upstream and what it makes of the reply: the upstream query, and
//! the upstream answer, decoded (and encoded again) by hickory-proto and checked against the
//! question, kept as the records that follow the question with where their TTLs are, so that a
//! cached copy is aged in place and sent after any client's spelling of the same question.

use hickory_proto::op::{Header, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{Name, RData, Record};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, DecodeError};

use crate::catalog::Request;
use crate::wire::{self, Body, Query, HEADER};

/// The query we send upstream. Built afresh rather than relayed, so that what we cache does
/// not depend on one client's EDNS options: the client's question, RD and CD, and our own OPT
/// with the client's DO bit.
#[derive(Debug)]
pub struct UpstreamQuery {
    bytes: Vec<u8>,
    question_len: usize,
}

impl UpstreamQuery {
    pub fn new(client: &Query<'_>) -> Self {
        let mut bytes = Vec::new();
        wire::write_query(
            &mut bytes,
            client.rd,
            client.cd,
            &client.question,
            client.dnssec_ok(),
        );
        UpstreamQuery {
            bytes,
            question_len: client.question.len(),
        }
    }

    /// The query with `id` in its header, ready to send.
    pub fn with_id(&self, id: u16) -> Vec<u8> {
        let mut bytes = self.bytes.clone();
        bytes[..2].copy_from_slice(&id.to_be_bytes());
        bytes
    }

    /// The question, as the client asked it.
    pub fn question(&self) -> &[u8] {
        &self.bytes[HEADER..HEADER + self.question_len]
    }
}

/// Why a datagram from an upstream is not the answer to our query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerError {
    /// Not a response to this query ID: ignore it and keep waiting (it may be a spoof).
    NotOurs,
    /// A response to our ID that is malformed or answers another question.
    Invalid,
}

/// A valid upstream answer to our question, its OPT record removed.
#[derive(Debug, Clone)]
pub struct UpstreamAnswer {
    /// The rcode, its high bits from the OPT (RFC 6891).
    pub rcode: ResponseCode,
    /// AA, TC and AD as the upstream set them.
    pub flags: u16,
    /// The answer, authority and additional records as the upstream sent them, encoded again
    /// by hickory (compression pointers may point into the question, which every response
    /// carries at offset 12 with the same length).
    pub records: Box<[u8]>,
    /// Length of the question the records follow.
    pub question_len: usize,
    pub answers: u16,
    pub authorities: u16,
    pub additionals: u16,
    /// Where the additional records start in `records`.
    pub additional_at: usize,
    /// Where every record's TTL is in `records`.
    pub ttl_offsets: Box<[u16]>,
    /// How long this answer may be cached, if at all (before the cache's own cap).
    pub cache_ttl: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Answer,
    Authority,
    Additional,
}

/// Where one record sits in the message, with what the cache needs of it.
#[derive(Debug)]
struct Located {
    section: Section,
    start: usize,
    end: usize,
    ttl_at: usize,
    record: Record,
}

impl UpstreamAnswer {
    /// Checks that `packet` answers `query` sent with ID `id`, and lays it out.
    pub fn parse(packet: &[u8], query: &UpstreamQuery, id: u16) -> Result<Self, AnswerError> {
        let header =
            Header::read(&mut BinDecoder::new(packet)).map_err(|_| AnswerError::NotOurs)?;
        let metadata = header.metadata;
        if metadata.id != id || metadata.message_type != MessageType::Response {
            return Err(AnswerError::NotOurs);
        }
        if metadata.op_code != OpCode::Query || header.counts.queries != 1 {
            return Err(AnswerError::Invalid);
        }
        let asked = query.question();
        let qend = HEADER + asked.len();
        let got = packet.get(HEADER..qend).ok_or(AnswerError::Invalid)?;
        let split = asked.len() - 4;
        // The name is compared without case: some servers do not echo the 0x20 mix they were sent.
        if !got[..split].eq_ignore_ascii_case(&asked[..split]) || got[split..] != asked[split..] {
            return Err(AnswerError::Invalid);
        }
        // The whole message decoded is the strict check (record syntax, where an OPT may be,
        // one OPT at most), and it merges the OPT's rcode bits.
        let mut message = Message::from_vec(packet).map_err(|_| AnswerError::Invalid)?;
        let rcode = message.metadata.response_code;
        let mut flags = 0;
        for (set, flag) in [
            (metadata.authoritative, wire::FLAG_AA),
            (metadata.truncation, wire::FLAG_TC),
            (message.metadata.authentic_data, wire::FLAG_AD),
        ] {
            if set {
                flags |= flag;
            }
        }
        // Encoded again by hickory, without the OPT: then every name points only at names
        // before it in this message, never into the header nor past a section, so the ID and
        // the question's case can change and the additional records can go, names intact.
        message.edns = None;
        let bytes = message.to_vec().map_err(|_| AnswerError::Invalid)?;
        if bytes.get(HEADER..qend) != Some(got) {
            return Err(AnswerError::Invalid);
        }
        let counts = Header::read(&mut BinDecoder::new(&bytes))
            .map_err(|_| AnswerError::Invalid)?
            .counts;
        let located = locate(&bytes, qend, counts).map_err(|_| AnswerError::Invalid)?;
        let end = located.last().map_or(qend, |r| r.end);
        let count = |section| located.iter().filter(|r| r.section == section).count() as u16;
        let additional_at = located
            .iter()
            .find(|r| r.section == Section::Additional)
            .map_or(end, |r| r.start)
            - qend;
        let ttl_offsets = located
            .iter()
            .map(|r| u16::try_from(r.ttl_at - qend).map_err(|_| AnswerError::Invalid))
            .collect::<Result<_, _>>()?;
        let cache_ttl = if metadata.truncation {
            None
        } else {
            cache_ttl(rcode, &located)
        };
        Ok(UpstreamAnswer {
            rcode,
            flags,
            records: bytes[qend..end].into(),
            question_len: asked.len(),
            answers: count(Section::Answer),
            authorities: count(Section::Authority),
            additionals: count(Section::Additional),
            additional_at,
            ttl_offsets,
            cache_ttl,
        })
    }

    /// Whether the upstream truncated it (to be asked again over TCP).
    pub fn truncated(&self) -> bool {
        self.flags & wire::FLAG_TC != 0
    }

    /// Caps every TTL at `ttl`, so no record outlives the cache entry that carries it (this is
    /// also how a negative answer's SOA gets the RFC 2308 TTL).
    pub fn cap_ttls(&mut self, ttl: u32) {
        for &offset in self.ttl_offsets.iter() {
            let at = usize::from(offset);
            if let Some(field) = self.records.get_mut(at..at + 4) {
                let stored = u32::from_be_bytes([field[0], field[1], field[2], field[3]]);
                field.copy_from_slice(&stored.min(ttl).to_be_bytes());
            }
        }
    }

    /// The response to `request` made of this answer: the client's ID and question, TTLs
    /// patched, the additional records dropped first and then everything but the question
    /// when the client's limit is short. `None` if the answer does not fit the question.
    pub fn respond(
        &self,
        request: &Request<'_>,
        ttls: Ttls,
        out: &mut Vec<u8>,
    ) -> Option<wire::Written> {
        if request.query.question.len() != self.question_len {
            return None;
        }
        let body = Body {
            opcode: 0,
            rcode: self.rcode.low(),
            flags: self.flags,
            bytes: &self.records,
            additional_at: self.additional_at,
            answers: self.answers,
            authorities: self.authorities,
            additionals: self.additionals,
        };
        let written = request.respond(out, &body);
        let at = HEADER + self.question_len;
        for &offset in self.ttl_offsets.iter() {
            let offset = usize::from(offset);
            if offset + 4 > written.body {
                continue;
            }
            let field = &mut out[at + offset..at + offset + 4];
            let ttl = u32::from_be_bytes([field[0], field[1], field[2], field[3]]);
            field.copy_from_slice(&ttls.patch(ttl).to_be_bytes());
        }
        Some(written)
    }
}

/// Every record after the question, with hickory's decoder: where it starts and ends, where
/// its TTL is (after the owner name, the type and the class), and the record.
fn locate(
    packet: &[u8],
    qend: usize,
    counts: hickory_proto::op::HeaderCounts,
) -> Result<Vec<Located>, DecodeError> {
    let start = u16::try_from(qend).map_err(|_| DecodeError::InsufficientBytes)?;
    let mut decoder = BinDecoder::new(packet).clone(start);
    let sections = [
        (Section::Answer, counts.answers),
        (Section::Authority, counts.authorities),
        (Section::Additional, counts.additionals),
    ];
    let mut out = Vec::with_capacity(sections.iter().map(|s| usize::from(s.1)).sum());
    for (section, count) in sections {
        for _ in 0..count {
            let start = decoder.index();
            let mut owner = decoder.clone(start as u16);
            Name::read(&mut owner)?;
            let ttl_at = owner.index() + 4;
            let record = Record::read(&mut decoder)?;
            out.push(Located {
                section,
                start,
                end: decoder.index(),
                ttl_at,
                record,
            });
        }
    }
    Ok(out)
}

/// RFC 2181 §8: a TTL with the top bit set is to be read as zero.
fn ttl_value(raw: u32) -> u32 {
    if raw > i32::MAX as u32 {
        0
    } else {
        raw
    }
}

/// Positive answers live as long as their shortest answer or authority record; negative ones
/// (RFC 2308) as long as the SOA allows, and not at all without one.
fn cache_ttl(rcode: ResponseCode, records: &[Located]) -> Option<u32> {
    let in_section = |section| records.iter().filter(move |r| r.section == section);
    let ttl_of = |r: &Located| ttl_value(r.record.ttl);
    let shortest_answer = in_section(Section::Answer).map(ttl_of).min();
    let ttl = match (rcode, shortest_answer) {
        (ResponseCode::NoError, Some(answer)) => in_section(Section::Authority)
            .map(ttl_of)
            .fold(answer, u32::min),
        (ResponseCode::NoError | ResponseCode::NXDomain, _) => {
            let (soa_ttl, minimum) =
                in_section(Section::Authority).find_map(|r| match &r.record.data {
                    RData::SOA(soa) => Some((ttl_of(r), soa.minimum)),
                    _ => None,
                })?;
            let negative = soa_ttl.min(minimum);
            shortest_answer.map_or(negative, |answer| answer.min(negative))
        }
        _ => return None,
    };
    (ttl > 0).then_some(ttl)
}

/// How the TTLs of a stored answer are written into a response.
#[derive(Debug, Clone, Copy)]
pub enum Ttls {
    /// As the upstream sent them.
    AsIs,
    /// Decremented by the entry's age in seconds.
    Aged(u32),
    /// All set to one value (serve-stale).
    Fixed(u32),
}

impl Ttls {
    fn patch(self, stored: u32) -> u32 {
        match self {
            Ttls::AsIs => stored,
            Ttls::Aged(age) => stored.saturating_sub(age),
            Ttls::Fixed(ttl) => ttl,
        }
    }
}

/// Runs `UpstreamAnswer::parse` on any bytes, as an upstream might send them, and checks what
/// it promises: it never panics, and an answer it accepts makes, for the client that asked, a
/// response within the client's limit that hickory-proto decodes, with the client's ID and
/// question, whatever the TTLs are set to. Panics when a promise is broken: this is the body of
/// the `upstream_answer` fuzz target and of a test over a corpus, not for the answer path.
///
/// The first byte picks the layout: odd, our question is put after the first 12 bytes (as a
/// header), so that mutations get past the question check; even, the bytes go as they are.
/// The ID that the answer must carry is whatever its first two bytes say. True if accepted.
#[doc(hidden)]
pub fn exercise_upstream_answer(data: &[u8]) -> bool {
    const CLIENT: &[u8] = b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01\x03WwW\x07example\x03com\x00\x00\x01\x00\x01\x00\x00\x29\x04\xd0\x00\x00\x80\x00\x00\x00";
    let client = wire::parse_query(CLIENT).expect("the fixed query parses");
    let query = UpstreamQuery::new(&client);
    let Some((&layout, rest)) = data.split_first() else {
        return false;
    };
    let packet: Vec<u8> = if layout & 1 == 1 && rest.len() >= HEADER {
        [&rest[..HEADER], query.question(), &rest[HEADER..]].concat()
    } else {
        rest.to_vec()
    };
    let id = packet
        .get(..2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let Ok(answer) = UpstreamAnswer::parse(&packet, &query, id) else {
        return false;
    };
    assert!(answer.additional_at <= answer.records.len());
    for &offset in answer.ttl_offsets.iter() {
        assert!(
            usize::from(offset) + 4 <= answer.records.len(),
            "TTL at {offset}"
        );
    }
    for limit in [
        wire::MIN_UDP,
        usize::from(wire::OUR_UDP_PAYLOAD),
        wire::MAX_MESSAGE,
    ] {
        let request = Request::new(client.clone(), [127, 0, 0, 1].into(), limit, true, 0);
        for ttls in [Ttls::AsIs, Ttls::Aged(7), Ttls::Fixed(30)] {
            let mut out = Vec::new();
            let written = answer
                .respond(&request, ttls, &mut out)
                .expect("an answer fits the question it answers");
            assert!(
                out.len() <= limit,
                "{} bytes for a limit of {limit}",
                out.len()
            );
            let response = Message::from_vec(&out).expect("hickory decodes what we send");
            assert_eq!(response.metadata.id, 0xbeef);
            assert_eq!(response.queries.len(), 1);
            assert_eq!(response.queries[0].name().to_ascii(), "WwW.example.com.");
            assert_eq!(
                response.metadata.truncation,
                written.truncated || answer.truncated()
            );
            if let Ttls::Fixed(ttl) = ttls {
                let all = response.answers.iter().chain(&response.authorities);
                assert!(all.chain(&response.additionals).all(|r| r.ttl == ttl));
            }
        }
    }
    true
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    const A: u16 = 1;
    const QR: u8 = 0x80;
    const RD: u8 = 0x01;
    const RA: u8 = 0x80;

    /// A query for `name` (dotted, no escapes) and `qtype`, RD set, optionally with an OPT.
    pub(in crate::forward) fn test_query(id: u16, name: &str, qtype: u16, edns: bool) -> Vec<u8> {
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
            out.extend_from_slice(&opt_record());
        }
        out
    }

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
        vec![0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]
    }

    fn upstream_query(name: &str) -> UpstreamQuery {
        let query = test_query(1, name, A, false);
        UpstreamQuery::new(&wire::parse_query(&query).unwrap())
    }

    fn parse(packet: &[u8], query: &UpstreamQuery, id: u16) -> Result<UpstreamAnswer, AnswerError> {
        UpstreamAnswer::parse(packet, query, id)
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
        let answer = parse(&packet, &query, 7).unwrap();
        assert_eq!(answer.cache_ttl, Some(200));
        assert_eq!(answer.ttl_offsets.len(), 4);
        assert_eq!(answer.records[..], packet[HEADER + answer.question_len..]);
        assert_eq!(
            (answer.answers, answer.authorities, answer.additionals),
            (2, 1, 1)
        );
        assert_eq!(answer.additional_at, records.len() - a_record(5, 3).len());
    }

    #[test]
    fn negative_ttl_needs_an_soa() {
        let query = upstream_query("nothing.example.com");
        let nx = response(&query, 7, 3, [0, 1, 0], &soa_record(3600, 60));
        assert_eq!(parse(&nx, &query, 7).unwrap().cache_ttl, Some(60));
        let nodata = response(&query, 7, 0, [0, 1, 0], &soa_record(30, 60));
        assert_eq!(parse(&nodata, &query, 7).unwrap().cache_ttl, Some(30));
        let bare = response(&query, 7, 3, [0, 0, 0], &[]);
        assert_eq!(parse(&bare, &query, 7).unwrap().cache_ttl, None);
        let servfail = response(&query, 7, 2, [0, 0, 0], &[]);
        let answer = parse(&servfail, &query, 7).unwrap();
        assert_eq!(
            (answer.rcode, answer.cache_ttl),
            (ResponseCode::ServFail, None)
        );
    }

    #[test]
    fn ttl_with_the_top_bit_set_is_zero_and_not_cached() {
        let query = upstream_query("www.example.com");
        let packet = response(&query, 7, 0, [1, 0, 0], &a_record(0x8000_0000, 1));
        assert_eq!(parse(&packet, &query, 7).unwrap().cache_ttl, None);
    }

    #[test]
    fn opt_is_cut_off_the_end() {
        let query = upstream_query("www.example.com");
        let records = [a_record(300, 1), opt_record()].concat();
        let packet = response(&query, 7, 0, [1, 0, 1], &records);
        let answer = parse(&packet, &query, 7).unwrap();
        assert_eq!(
            answer.records.len(),
            packet.len() - HEADER - answer.question_len - wire::OPT_LEN
        );
        assert_eq!(answer.additionals, 0);
    }

    #[test]
    fn opt_in_the_middle_is_laid_out_again() {
        let query = upstream_query("www.example.com");
        let records = [a_record(300, 1), opt_record(), a_record(3600, 2)].concat();
        let packet = response(&query, 7, 0, [1, 0, 2], &records);
        let answer = parse(&packet, &query, 7).unwrap();
        assert_eq!(answer.additionals, 1);
        let mut out = Vec::new();
        let client = wire::parse_query(&test_query(9, "www.example.com", A, false))
            .unwrap()
            .into_owned();
        let request = Request::new(client, [127, 0, 0, 1].into(), 512, true, 0);
        answer.respond(&request, Ttls::AsIs, &mut out).unwrap();
        let message = Message::from_vec(&out).unwrap();
        assert!(message.edns.is_none());
        assert_eq!(message.additionals.len(), 1);
        assert_eq!(answer.ttl_offsets.len(), 2);
        assert_eq!(answer.cache_ttl, Some(300));
    }

    #[test]
    fn foreign_or_mismatched_answers_are_rejected() {
        let query = upstream_query("www.example.com");
        let good = response(&query, 7, 0, [1, 0, 0], &a_record(300, 1));
        assert_eq!(parse(&good, &query, 8).unwrap_err(), AnswerError::NotOurs);
        assert_eq!(
            parse(&good[..11], &query, 7).unwrap_err(),
            AnswerError::NotOurs
        );
        let mut not_response = good.clone();
        not_response[2] &= !QR;
        assert_eq!(
            parse(&not_response, &query, 7).unwrap_err(),
            AnswerError::NotOurs
        );
        let other = upstream_query("www.example.org");
        let wrong_question = response(&other, 7, 0, [1, 0, 0], &a_record(300, 1));
        assert_eq!(
            parse(&wrong_question, &query, 7).unwrap_err(),
            AnswerError::Invalid
        );
        let cut = &good[..good.len() - 1];
        assert_eq!(parse(cut, &query, 7).unwrap_err(), AnswerError::Invalid);
        // The upstream may change the case of the name it echoes.
        let upper = upstream_query("WWW.EXAMPLE.COM");
        let recased = response(&upper, 7, 0, [1, 0, 0], &a_record(300, 1));
        assert!(parse(&recased, &query, 7).is_ok());
    }

    #[test]
    fn respond_patches_id_question_and_ttls() {
        let query = upstream_query("www.example.com");
        let packet = response(&query, 7, 0, [1, 0, 0], &a_record(300, 1));
        let answer = parse(&packet, &query, 7).unwrap();
        let client_bytes = test_query(0xBEEF, "WwW.example.COM", A, true);
        let client = wire::parse_query(&client_bytes).unwrap();
        let request = Request::new(client, [127, 0, 0, 1].into(), 512, true, 0);
        for (ttls, expected) in [
            (Ttls::AsIs, 300),
            (Ttls::Aged(42), 258),
            (Ttls::Fixed(30), 30),
        ] {
            let mut out = Vec::new();
            let written = answer.respond(&request, ttls, &mut out).unwrap();
            assert!(!written.truncated);
            let message = Message::from_vec(&out).unwrap();
            assert_eq!(message.metadata.id, 0xBEEF);
            assert_eq!(message.queries[0].name.to_ascii(), "WwW.example.COM.");
            assert_eq!(message.answers[0].ttl, expected);
            assert!(message.edns.is_some());
            assert!(message.metadata.recursion_available);
        }
        // Another question's length cannot take these records.
        let other = wire::parse_query(&test_query(1, "ww.example.com", A, false))
            .unwrap()
            .into_owned();
        let request = Request::new(other, [127, 0, 0, 1].into(), 512, true, 0);
        assert!(answer
            .respond(&request, Ttls::AsIs, &mut Vec::new())
            .is_none());
    }

    /// Answers to `exercise_upstream_answer`'s question, as hickory writes them.
    fn seeds() -> Vec<Vec<u8>> {
        use hickory_proto::op::{Edns, Query as HQuery};
        use hickory_proto::rr::rdata::{A as RA_, CNAME, SOA, SRV, TXT};
        use hickory_proto::rr::RecordType;
        let owner = Name::from_ascii("WwW.example.com.").unwrap();
        let target = Name::from_ascii("srv.example.net.").unwrap();
        let base = |id: u16| {
            let mut m = Message::new(id, MessageType::Response, OpCode::Query);
            m.metadata.recursion_available = true;
            m.add_query(HQuery::query(owner.clone(), RecordType::A));
            m
        };
        let a = |ttl, last| {
            Record::from_rdata(owner.clone(), ttl, RData::A(RA_::new(198, 18, 0, last)))
        };
        let mut out = Vec::new();
        let mut m = base(1);
        m.add_answers([a(300, 1), a(200, 2), a(100, 3)]);
        out.push(m.to_vec().unwrap());
        let mut m = base(2);
        let cname = Record::from_rdata(owner.clone(), 60, RData::CNAME(CNAME(target.clone())));
        m.add_answer(cname);
        m.add_answer(Record::from_rdata(
            target.clone(),
            30,
            RData::A(RA_::new(198, 18, 1, 1)),
        ));
        m.add_additional(Record::from_rdata(
            target.clone(),
            30,
            RData::SRV(SRV::new(0, 1, 80, owner.clone())),
        ));
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        m.set_edns(edns);
        out.push(m.to_vec().unwrap());
        let mut m = base(3);
        m.metadata.response_code = ResponseCode::NXDomain;
        let soa = SOA::new(target.clone(), target.clone(), 1, 60, 60, 600, 30);
        m.add_authority(Record::from_rdata(owner.base_name(), 900, RData::SOA(soa)));
        out.push(m.to_vec().unwrap());
        let mut m = base(4);
        m.metadata.truncation = true;
        out.push(m.to_vec().unwrap());
        let mut m = base(5);
        for i in 0..40 {
            m.add_answer(a(3600, i));
        }
        m.add_additional(Record::from_rdata(
            owner.clone(),
            5,
            RData::TXT(TXT::new(vec!["x".repeat(200)])),
        ));
        out.push(m.to_vec().unwrap());
        out
    }

    #[test]
    fn mutated_upstream_answers_keep_the_promises_of_parse() {
        let mut rng = fastrand::Rng::with_seed(0x5eed_a45e);
        let seeds = seeds();
        for seed in &seeds {
            assert!(
                exercise_upstream_answer(&[[0].as_slice(), seed].concat()),
                "{seed:?}"
            );
        }
        let mut accepted = 0;
        for i in 0..30_000 {
            let mut p = seeds[i % seeds.len()].clone();
            match rng.u8(0..5) {
                0 => {
                    for _ in 0..rng.usize(1..4) {
                        let j = rng.usize(..p.len());
                        p[j] = rng.u8(..);
                    }
                }
                1 => p.truncate(rng.usize(..p.len())),
                2 => {
                    // The counts, which parsers most often trust.
                    let j = rng.usize(4..12);
                    p[j] = rng.u8(..);
                }
                3 => {
                    let j = rng.usize(12..p.len());
                    p.insert(j, rng.u8(..));
                }
                _ => p.extend((0..rng.usize(1..32)).map(|_| rng.u8(..))),
            }
            // Keep the header's ID so that most of them are answers to us.
            let layout = u8::from(rng.bool()) & u8::from(p.len() > 40);
            let data = if layout == 1 {
                // The question is put back after the header by the exercise.
                let mut d = vec![1];
                d.extend_from_slice(&p[..HEADER]);
                d.extend_from_slice(&p[HEADER + 21..]);
                d
            } else {
                [&[0u8][..], &p].concat()
            };
            accepted += usize::from(exercise_upstream_answer(&data));
        }
        assert!(
            accepted > 3_000,
            "only {accepted} accepted: the mutations test little"
        );
    }
}
