//! The request path against hostile input: mutated and random packets through
//! `Shared::handle` must never panic, and every reply must be a well-formed response to the
//! query it answers. (The libFuzzer target in `fuzz/` explores the same function deeper.)

use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use lodestar_dns::config::ZoneConfig;
use lodestar_dns::server::{Outcome, Shared};
use lodestar_dns::zone::ZoneBuilder;

fn shared() -> Shared {
    let snapshot = Arc::new(lodestar_control::demo::snapshot());
    let zone = ZoneBuilder::new(ZoneConfig::default(), vec!["127.0.0.1".parse().unwrap()])
        .unwrap()
        .update(&snapshot);
    Shared::authoritative(zone)
}

fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (name, qtype) in [
        ("web.marathon.mesos.", RecordType::A),
        ("_web._tcp.marathon.mesos.", RecordType::SRV),
        ("mesos.", RecordType::NS),
        ("mesos.", RecordType::SOA),
        ("nope.mesos.", RecordType::AAAA),
        ("web.marathon.mesos.", RecordType::ANY),
        ("example.org.", RecordType::A),
    ] {
        for edns in [None, Some(4096)] {
            let mut m = Message::new(0xbeef, MessageType::Query, OpCode::Query);
            m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
            if let Some(p) = edns {
                let mut e = Edns::new();
                e.set_max_payload(p);
                m.set_edns(e);
            }
            out.push(m.to_vec().unwrap());
        }
    }
    out
}

/// Checks one reply: a response (QR), to the same ID, parseable by hickory.
fn check_reply(query: &[u8], reply: &[u8]) {
    assert!(reply.len() >= 12, "short reply to {query:?}");
    assert_eq!(&reply[..2], &query[..2], "ID not echoed for {query:?}");
    assert_eq!(reply[2] & 0x80, 0x80, "QR not set for {query:?}");
    if let Err(e) = Message::from_vec(reply) {
        panic!("unparseable reply {reply:?} to {query:?}: {e}");
    }
}

/// The ways a seed packet is damaged.
const MUTATIONS: [fn(&mut fastrand::Rng, &mut Vec<u8>); 6] = [
    |rng, p| overwrite_bytes(rng, p),
    truncate,
    append_garbage,
    replace_with_garbage,
    |rng, p| corrupt_a_count(rng, p),
    insert_a_byte,
];

fn overwrite_bytes(rng: &mut fastrand::Rng, p: &mut [u8]) {
    for _ in 0..rng.usize(1..6) {
        let j = rng.usize(0..p.len());
        p[j] = rng.u8(..);
    }
}

fn truncate(rng: &mut fastrand::Rng, p: &mut Vec<u8>) {
    p.truncate(rng.usize(0..p.len()));
}

fn append_garbage(rng: &mut fastrand::Rng, p: &mut Vec<u8>) {
    p.extend((0..rng.usize(1..64)).map(|_| rng.u8(..)));
}

fn replace_with_garbage(rng: &mut fastrand::Rng, p: &mut Vec<u8>) {
    *p = (0..rng.usize(0..600)).map(|_| rng.u8(..)).collect();
}

/// The header's counts, where parsers most often trust the packet.
fn corrupt_a_count(rng: &mut fastrand::Rng, p: &mut [u8]) {
    let j = 4 + rng.usize(0..8);
    p[j] = rng.u8(..);
}

fn insert_a_byte(rng: &mut fastrand::Rng, p: &mut Vec<u8>) {
    let j = rng.usize(12..p.len());
    p.insert(j, rng.u8(..));
}

#[test]
fn mutated_and_random_packets_never_panic_and_replies_parse() {
    let shared = shared();
    let ws = shared.stats.worker(0);
    let mut out = Vec::new();
    let mut rng = fastrand::Rng::with_seed(0x10de57a2);
    let seeds = seeds();
    let mut replies = 0;
    for i in 0..60_000 {
        let mut p = seeds[i % seeds.len()].clone();
        MUTATIONS[usize::from(rng.u8(0..MUTATIONS.len() as u8))](&mut rng, &mut p);
        match shared.handle(
            &p,
            "127.0.0.1".parse().unwrap(),
            i % 2 == 0,
            i,
            ws,
            &mut out,
        ) {
            Outcome::Reply => {
                check_reply(&p, &out);
                replies += 1;
            }
            Outcome::Forward(_) | Outcome::Drop => {}
        }
    }
    assert!(
        replies > 10_000,
        "only {replies} replies: the mutations are too destructive to test much"
    );
}

#[test]
fn every_seed_gets_a_good_reply() {
    let shared = shared();
    let mut out = Vec::new();
    for p in seeds() {
        match shared.handle(
            &p,
            "127.0.0.1".parse().unwrap(),
            false,
            0,
            shared.stats.worker(0),
            &mut out,
        ) {
            Outcome::Reply => check_reply(&p, &out),
            Outcome::Forward(_) => assert!(
                p.windows(7).any(|w| w == b"example"),
                "only example.org is forwarded"
            ),
            Outcome::Drop => panic!("dropped a valid query"),
        }
    }
}
