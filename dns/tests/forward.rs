//! The forwarder against small upstream servers on 127.0.0.1: dual dispatch, demotion, zone
//! routing, the cache and serve-stale, the in-flight cap, truncation, and malformed input.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use lodestar_dns::forward::{ForwardConfig, Forwarder, STALE_TTL};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// How a test upstream answers.
#[derive(Debug, Clone)]
enum Mode {
    /// `count` A records 198.18.0.`octet`, 198.18.0.`octet`+1, ... with `ttl`.
    Answer {
        ttl: u32,
        octet: u8,
        count: u8,
    },
    ServFail,
    /// NXDOMAIN with an SOA in the authority section.
    NxDomain {
        soa_ttl: u32,
        minimum: u32,
    },
    /// Over UDP, TC=1 and no answers; over TCP, the full `Answer`.
    TruncateUdp {
        ttl: u32,
        count: u8,
    },
    /// First a response with another ID (A 198.18.0.99), then the real one (A 198.18.0.1).
    WrongIdFirst,
    /// Receives and counts queries, never answers.
    Dead,
}

struct Shared {
    mode: Mutex<Mode>,
    delay: Duration,
    /// When set, each UDP answer waits for a permit: the test decides when it goes out.
    gate: Option<tokio::sync::Semaphore>,
    udp_queries: AtomicUsize,
    tcp_queries: AtomicUsize,
}

/// An upstream DNS server on 127.0.0.1, UDP and TCP on the same port.
struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Upstream {
    async fn start(mode: Mode) -> Upstream {
        Self::start_slow(mode, Duration::ZERO).await
    }

    /// Answers after `delay`.
    async fn start_slow(mode: Mode, delay: Duration) -> Upstream {
        Self::start_with(mode, delay, None).await
    }

    /// Answers over UDP only as `release` allows.
    async fn start_gated(mode: Mode) -> Upstream {
        Self::start_with(mode, Duration::ZERO, Some(tokio::sync::Semaphore::new(0))).await
    }

    async fn start_with(
        mode: Mode,
        delay: Duration,
        gate: Option<tokio::sync::Semaphore>,
    ) -> Upstream {
        let (udp, tcp) = bind_pair().await;
        let addr = udp.local_addr().unwrap();
        let shared = Arc::new(Shared {
            mode: Mutex::new(mode),
            delay,
            gate,
            udp_queries: AtomicUsize::new(0),
            tcp_queries: AtomicUsize::new(0),
        });
        tokio::spawn(serve_udp(Arc::new(udp), Arc::clone(&shared)));
        tokio::spawn(serve_tcp(tcp, Arc::clone(&shared)));
        Upstream { addr, shared }
    }

    /// Lets one held UDP answer go out.
    fn release(&self) {
        self.shared.gate.as_ref().unwrap().add_permits(1);
    }

    fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    fn udp_queries(&self) -> usize {
        self.shared.udp_queries.load(Relaxed)
    }

    fn tcp_queries(&self) -> usize {
        self.shared.tcp_queries.load(Relaxed)
    }
}

/// A UDP socket and a TCP listener on one port of 127.0.0.1.
async fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        if let Ok(tcp) = TcpListener::bind(addr).await {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

/// A port on 127.0.0.1 that nothing listens on: queries to it fail at once.
async fn closed_port() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.local_addr().unwrap()
}

async fn serve_udp(socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut buf = vec![0; 65535];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            return;
        };
        shared.udp_queries.fetch_add(1, Relaxed);
        let Ok(request) = Message::from_vec(&buf[..len]) else {
            continue;
        };
        let mode = shared.mode.lock().unwrap().clone();
        let (socket, shared) = (Arc::clone(&socket), Arc::clone(&shared));
        tokio::spawn(async move {
            tokio::time::sleep(shared.delay).await;
            if let Some(gate) = &shared.gate {
                gate.acquire().await.unwrap().forget();
            }
            for response in responses(&request, &mode, false) {
                let _ = socket.send_to(&response, peer).await;
            }
        });
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(serve_tcp_connection(stream, Arc::clone(&shared)));
    }
}

async fn serve_tcp_connection(mut stream: TcpStream, shared: Arc<Shared>) {
    for _ in 0..16 {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let mut buf = vec![0; usize::from(len)];
        if stream.read_exact(&mut buf).await.is_err() {
            return;
        }
        shared.tcp_queries.fetch_add(1, Relaxed);
        let Ok(request) = Message::from_vec(&buf) else {
            return;
        };
        let mode = shared.mode.lock().unwrap().clone();
        tokio::time::sleep(shared.delay).await;
        for response in responses(&request, &mode, true) {
            let mut framed = u16::try_from(response.len())
                .unwrap()
                .to_be_bytes()
                .to_vec();
            framed.extend_from_slice(&response);
            if stream.write_all(&framed).await.is_err() {
                return;
            }
        }
    }
}

fn a_record(owner: &Name, ttl: u32, octet: u8) -> Record {
    Record::from_rdata(owner.clone(), ttl, RData::A(A::new(198, 18, 0, octet)))
}

/// The datagrams a test upstream sends back for `request` in `mode`.
fn responses(request: &Message, mode: &Mode, over_tcp: bool) -> Vec<Vec<u8>> {
    let mut response = Message::new(0, MessageType::Response, OpCode::Query);
    response.metadata = Metadata::response_from_request(&request.metadata);
    response.metadata.recursion_available = true;
    response.add_queries(request.queries.iter().cloned());
    if let Some(edns) = &request.edns {
        let mut ours = Edns::new();
        ours.set_max_payload(1232);
        ours.set_dnssec_ok(edns.flags().dnssec_ok);
        response.set_edns(ours);
    }
    // Owners are the question's name, so they compress to a pointer to it.
    let owner = request.queries[0].name.clone();
    let mut extra = Vec::new();
    match *mode {
        Mode::Answer { ttl, octet, count } => {
            for i in 0..count {
                response.add_answer(a_record(&owner, ttl, octet + i));
            }
        }
        Mode::ServFail => response.metadata.response_code = ResponseCode::ServFail,
        Mode::NxDomain { soa_ttl, minimum } => {
            response.metadata.response_code = ResponseCode::NXDomain;
            let zone = owner.base_name();
            let soa = SOA::new(
                Name::from_ascii("ns1.test.").unwrap(),
                Name::from_ascii("hostmaster.test.").unwrap(),
                1,
                60,
                60,
                600,
                minimum,
            );
            response.add_authority(Record::from_rdata(zone, soa_ttl, RData::SOA(soa)));
        }
        Mode::TruncateUdp { ttl, count } if over_tcp => {
            for i in 0..count {
                response.add_answer(a_record(&owner, ttl, 1 + i));
            }
        }
        Mode::TruncateUdp { .. } => response.metadata.truncation = true,
        Mode::WrongIdFirst => {
            let mut spoof = response.clone();
            spoof.metadata.id = request.metadata.id.wrapping_add(1);
            spoof.add_answer(a_record(&owner, 300, 99));
            extra.push(spoof.to_vec().unwrap());
            response.add_answer(a_record(&owner, 300, 1));
        }
        Mode::Dead => return Vec::new(),
    }
    extra.push(response.to_vec().unwrap());
    extra
}

/// A client query; `edns` is the UDP payload size of an OPT to include.
fn query(id: u16, name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    message.edns = edns.map(opt_record);
    message.to_vec().unwrap()
}

/// An OPT record offering `payload` bytes.
fn opt_record(payload: u16) -> Edns {
    let mut opt = Edns::new();
    opt.set_max_payload(payload);
    opt
}

fn a_query(id: u16, name: &str) -> Vec<u8> {
    query(id, name, RecordType::A, None)
}

/// The forwarder's parsed answer to A `name` with `id`, for a client of 512 bytes.
async fn ask(forwarder: &Forwarder, id: u16, name: &str) -> Message {
    parse(&forwarder.resolve(&a_query(id, name), 512).await)
}

fn parse(response: &[u8]) -> Message {
    Message::from_vec(response).expect("the forwarder's response parses")
}

/// The A records of an answer as (last octet, TTL).
fn answers(message: &Message) -> Vec<(u8, u32)> {
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some((a.0.octets()[3], r.ttl)),
            _ => None,
        })
        .collect()
}

fn config(upstreams: Vec<SocketAddr>) -> ForwardConfig {
    ForwardConfig {
        upstreams,
        timeout: Duration::from_millis(300),
        ..ForwardConfig::default()
    }
}

/// Polls `condition` until it holds, failing the test after 5 s.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn answer_mode(octet: u8) -> Mode {
    answer_with_ttl(octet, 300)
}

/// One A record, 198.18.0.`octet`, with `ttl`.
fn answer_with_ttl(octet: u8, ttl: u32) -> Mode {
    Mode::Answer {
        ttl,
        octet,
        count: 1,
    }
}

/// An upstream answering A 198.18.0.1 (TTL 300), and one that never answers.
async fn healthy_and_dead() -> (Upstream, Upstream) {
    (
        Upstream::start(answer_mode(1)).await,
        Upstream::start(Mode::Dead).await,
    )
}

#[test]
fn resolve_is_send() {
    fn send<T: Send>(_: T) {}
    let forwarder = Forwarder::new(ForwardConfig::default());
    send(forwarder.resolve(&[], 512));
}

#[tokio::test]
async fn answers_with_one_upstream_dead() {
    let (healthy, dead) = healthy_and_dead().await;
    let forwarder = Forwarder::new(config(vec![dead.addr, healthy.addr]));

    let response = ask(&forwarder, 7, "www.example.com.").await;
    assert_eq!(response.metadata.id, 7);
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answers(&response), [(1, 300)]);
    // Both were asked at once: the dead one got the query too, and did not hold the answer up.
    eventually("the dead upstream receives the query", || {
        dead.udp_queries() == 1
    })
    .await;
    assert_eq!(healthy.udp_queries(), 1);
    let stats = forwarder.stats();
    assert_eq!(stats.forwarded.load(Relaxed), 1);
    assert_eq!(stats.answered.load(Relaxed), 1);
    eventually("the dead upstream's attempt times out", || {
        stats.upstream(dead.addr).unwrap().timeouts.load(Relaxed) == 1
    })
    .await;
}

#[tokio::test]
async fn failing_upstream_is_demoted_and_skipped() {
    let (healthy, dead) = healthy_and_dead().await;
    let forwarder = Forwarder::new(ForwardConfig {
        timeout: Duration::from_millis(250),
        ..config(vec![healthy.addr, dead.addr])
    });
    let dead_stats = forwarder.stats().upstream(dead.addr).unwrap();

    for i in 0..3 {
        let name = format!("n{i}.example.com.");
        let response = ask(&forwarder, i, &name).await;
        assert_eq!(answers(&response), [(1, 300)]);
        let failures = u64::from(i) + 1;
        eventually("the dead upstream's failure is recorded", || {
            dead_stats.timeouts.load(Relaxed) == failures
        })
        .await;
    }
    assert!(dead_stats.demoted.load(Relaxed));
    assert_eq!(dead_stats.consecutive_failures.load(Relaxed), 3);
    assert_eq!(dead.udp_queries(), 3);

    // While demoted (the first retry is 5 s away) it is not asked, and answers keep coming.
    for i in 3..8 {
        let name = format!("n{i}.example.com.");
        let response = ask(&forwarder, i, &name).await;
        assert_eq!(answers(&response), [(1, 300)]);
    }
    assert_eq!(dead.udp_queries(), 3);
    assert_eq!(healthy.udp_queries(), 8);
    assert_eq!(forwarder.stats().upstream_failures.load(Relaxed), 3);
    assert!(!forwarder
        .stats()
        .upstream(healthy.addr)
        .unwrap()
        .demoted
        .load(Relaxed));
}

#[tokio::test]
async fn demoted_upstream_is_retried_and_restored() {
    let (healthy, flaky) = healthy_and_dead().await;
    let forwarder = Forwarder::new(ForwardConfig {
        timeout: Duration::from_millis(150),
        demote_backoff: Duration::from_millis(100),
        ..config(vec![healthy.addr, flaky.addr])
    });
    let flaky_stats = forwarder.stats().upstream(flaky.addr).unwrap();
    for i in 0..3 {
        forwarder
            .resolve(&a_query(i, &format!("d{i}.example.com.")), 512)
            .await;
        let failures = u64::from(i) + 1;
        eventually("the failure is recorded", || {
            flaky_stats.timeouts.load(Relaxed) == failures
        })
        .await;
    }
    assert!(flaky_stats.demoted.load(Relaxed));

    flaky.set_mode(answer_mode(2));
    let mut i = 100;
    // The retry rides along with real queries; keep sending until it has happened.
    let deadline = Instant::now() + Duration::from_secs(5);
    while flaky_stats.demoted.load(Relaxed) {
        assert!(
            Instant::now() < deadline,
            "the demoted upstream was never retried"
        );
        let response = forwarder
            .resolve(&a_query(i, &format!("r{i}.example.com.")), 512)
            .await;
        assert_eq!(
            parse(&response).metadata.response_code,
            ResponseCode::NoError
        );
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(flaky_stats.answers.load(Relaxed) >= 1);
    assert_eq!(flaky_stats.consecutive_failures.load(Relaxed), 0);
}

#[tokio::test]
async fn remaining_upstreams_are_tried_when_the_first_two_fail() {
    let closed_a = closed_port().await;
    let closed_b = closed_port().await;
    let healthy = Upstream::start(answer_mode(3)).await;
    let forwarder = Forwarder::new(config(vec![closed_a, closed_b, healthy.addr]));

    let response = ask(&forwarder, 1, "www.example.com.").await;
    assert_eq!(answers(&response), [(3, 300)]);
    let stats = forwarder.stats();
    for closed in [closed_a, closed_b] {
        let upstream = stats.upstream(closed).unwrap();
        assert_eq!(upstream.queries.load(Relaxed), 1);
        assert_eq!(upstream.answers.load(Relaxed), 0);
    }
    assert_eq!(healthy.udp_queries(), 1);
}

#[tokio::test]
async fn servfail_does_not_win_over_a_slower_answer() {
    let failing = Upstream::start(Mode::ServFail).await;
    let slow = Upstream::start_slow(answer_mode(2), Duration::from_millis(100)).await;
    let forwarder = Forwarder::new(ForwardConfig {
        timeout: Duration::from_secs(2),
        ..config(vec![failing.addr, slow.addr])
    });

    let response = ask(&forwarder, 1, "www.example.com.").await;
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answers(&response), [(2, 300)]);
    let failing_stats = forwarder.stats().upstream(failing.addr).unwrap();
    assert_eq!(failing_stats.rcode_failures.load(Relaxed), 1);
    // SERVFAIL is about the name more than the upstream: no strike against it.
    assert_eq!(failing_stats.consecutive_failures.load(Relaxed), 0);
}

#[tokio::test]
async fn servfail_everywhere_gives_servfail_and_is_not_cached() {
    let a = Upstream::start(Mode::ServFail).await;
    let b = Upstream::start(Mode::ServFail).await;
    let forwarder = Forwarder::new(config(vec![a.addr, b.addr]));

    for id in [1, 2] {
        let response = ask(&forwarder, id, "www.example.com.").await;
        assert_eq!(response.metadata.id, id);
        assert_eq!(response.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(response.queries.len(), 1);
    }
    assert_eq!(a.udp_queries(), 2);
    assert_eq!(b.udp_queries(), 2);
    assert_eq!(forwarder.stats().servfail.load(Relaxed), 2);
    assert_eq!(forwarder.cache_len(), 0);
}

#[tokio::test]
async fn longest_zone_suffix_picks_the_upstreams() {
    let org = Upstream::start(answer_mode(1)).await;
    let sub = Upstream::start(answer_mode(2)).await;
    let default = Upstream::start(answer_mode(3)).await;
    let forwarder = Forwarder::try_new(ForwardConfig {
        zones: vec![
            ("example.org".to_owned(), vec![org.addr]),
            ("Sub.Example.ORG.".to_owned(), vec![sub.addr]),
        ],
        ..config(vec![default.addr])
    })
    .unwrap();

    let cases = [
        ("www.sub.example.org.", 2),
        ("sub.example.org.", 2),
        ("WWW2.SUB.EXAMPLE.ORG.", 2),
        ("www.example.org.", 1),
        ("example.org.", 1),
        ("deep.er.example.org.", 1),
        ("notexample.org.", 3),
        ("www.example.com.", 3),
        ("org.", 3),
    ];
    for (id, (name, octet)) in (1..).zip(cases) {
        let response = ask(&forwarder, id, name).await;
        assert_eq!(answers(&response), [(octet, 300)], "{name}");
    }
    assert_eq!(sub.udp_queries(), 3);
    assert_eq!(org.udp_queries(), 3);
    assert_eq!(default.udp_queries(), 3);
}

#[tokio::test]
async fn bad_zones_are_rejected_by_try_new() {
    for zone in ["a..b", &"x".repeat(64), "-.toolong".repeat(40).as_str()] {
        let config = ForwardConfig {
            zones: vec![(zone.to_owned(), Vec::new())],
            ..ForwardConfig::default()
        };
        assert!(Forwarder::try_new(config).is_err(), "{zone:?}");
    }
    let twice = ForwardConfig {
        zones: vec![
            ("a.b".to_owned(), Vec::new()),
            ("A.B.".to_owned(), Vec::new()),
        ],
        ..ForwardConfig::default()
    };
    assert!(Forwarder::try_new(twice.clone()).is_err());
    // `new` skips what it cannot use instead.
    Forwarder::new(twice);
}

#[tokio::test]
async fn no_upstream_is_refused() {
    let upstream = Upstream::start(answer_mode(1)).await;
    let forwarder = Forwarder::new(ForwardConfig {
        zones: vec![("blocked.example.".to_owned(), Vec::new())],
        ..config(Vec::new())
    });
    for name in ["www.example.com.", "www.blocked.example."] {
        let response = ask(&forwarder, 9, name).await;
        assert_eq!(
            response.metadata.response_code,
            ResponseCode::Refused,
            "{name}"
        );
        assert_eq!(response.metadata.id, 9);
        assert_eq!(response.queries[0].name, Name::from_ascii(name).unwrap());
    }
    assert_eq!(forwarder.stats().refused_no_upstream.load(Relaxed), 2);
    assert_eq!(upstream.udp_queries(), 0);
}

#[tokio::test]
async fn cache_hit_keeps_the_clients_id_and_case() {
    let upstream = Upstream::start(answer_mode(1)).await;
    let forwarder = Forwarder::new(config(vec![upstream.addr]));

    let first = ask(&forwarder, 0x1234, "Www.Example.COM.").await;
    assert_eq!(first.metadata.id, 0x1234);
    let [(1, first_ttl)] = answers(&first)[..] else {
        panic!("one A record expected: {first:?}");
    };
    assert_eq!(first_ttl, 300);

    let asked = Name::from_ascii("wWW.eXAMPLE.com.").unwrap();
    let second = ask(&forwarder, 0x4321, "wWW.eXAMPLE.com.").await;
    assert_eq!(upstream.udp_queries(), 1);
    assert_eq!(second.metadata.id, 0x4321);
    assert_eq!(second.metadata.message_type, MessageType::Response);
    assert!(
        second.queries[0].name.eq_case(&asked),
        "{:?}",
        second.queries[0]
    );
    // The owner was a pointer to the question, so it follows the client's case too.
    assert!(second.answers[0].name.eq_case(&asked));
    let [(1, ttl)] = answers(&second)[..] else {
        panic!("one A record expected: {second:?}");
    };
    assert!(ttl <= first_ttl, "{ttl} > {first_ttl}");
    let stats = forwarder.stats();
    assert_eq!(stats.cache_hits.load(Relaxed), 1);
    assert_eq!(stats.cache_misses.load(Relaxed), 1);

    // Another type, or DO set, is another entry.
    forwarder
        .resolve(&query(1, "www.example.com.", RecordType::AAAA, None), 512)
        .await;
    let mut dnssec =
        Message::from_vec(&query(2, "www.example.com.", RecordType::A, Some(1232))).unwrap();
    dnssec.edns.as_mut().unwrap().set_dnssec_ok(true);
    forwarder.resolve(&dnssec.to_vec().unwrap(), 1232).await;
    assert_eq!(upstream.udp_queries(), 3);
}

#[tokio::test]
async fn negative_answer_is_cached_for_the_soa_minimum() {
    let upstream = Upstream::start(Mode::NxDomain {
        soa_ttl: 3600,
        minimum: 60,
    })
    .await;
    let forwarder = Forwarder::new(config(vec![upstream.addr]));

    for id in [1, 2] {
        let response = ask(&forwarder, id, "nothing.example.com.").await;
        assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(response.authorities.len(), 1);
        assert!(
            response.authorities[0].ttl <= 60,
            "{:?}",
            response.authorities[0]
        );
    }
    assert_eq!(upstream.udp_queries(), 1);
}

#[tokio::test]
async fn expired_entry_is_queried_again() {
    let upstream = Upstream::start(answer_with_ttl(1, 1)).await;
    let forwarder = Forwarder::new(config(vec![upstream.addr]));

    let first = ask(&forwarder, 1, "short.example.com.").await;
    assert_eq!(answers(&first), [(1, 1)]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = ask(&forwarder, 2, "short.example.com.").await;
    assert_eq!(answers(&second), [(1, 1)]);
    assert_eq!(upstream.udp_queries(), 2);
    assert_eq!(forwarder.stats().cache_hits.load(Relaxed), 0);
}

#[tokio::test]
async fn stale_answer_when_every_upstream_fails_after_expiry() {
    let short = answer_with_ttl(5, 1);
    let a = Upstream::start(short.clone()).await;
    let b = Upstream::start(short).await;
    let forwarder = Forwarder::new(config(vec![a.addr, b.addr]));

    let fresh = ask(&forwarder, 1, "stale.example.com.").await;
    assert_eq!(answers(&fresh), [(5, 1)]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    a.set_mode(Mode::Dead);
    b.set_mode(Mode::ServFail);

    let stale = ask(&forwarder, 2, "Stale.Example.com.").await;
    assert_eq!(stale.metadata.id, 2);
    assert_eq!(stale.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answers(&stale), [(5, STALE_TTL)]);
    assert!(stale.queries[0]
        .name
        .eq_case(&Name::from_ascii("Stale.Example.com.").unwrap()));
    assert_eq!(forwarder.stats().stale_served.load(Relaxed), 1);
    assert_eq!(a.udp_queries(), 2);
    assert_eq!(b.udp_queries(), 2);
}

#[tokio::test]
async fn nothing_stale_is_served_past_max_stale() {
    let upstream = Upstream::start(answer_with_ttl(5, 1)).await;
    let forwarder = Forwarder::new(ForwardConfig {
        max_stale: Duration::ZERO,
        ..config(vec![upstream.addr])
    });

    forwarder
        .resolve(&a_query(1, "stale.example.com."), 512)
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    upstream.set_mode(Mode::ServFail);
    let response = ask(&forwarder, 2, "stale.example.com.").await;
    assert_eq!(response.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(forwarder.stats().stale_served.load(Relaxed), 0);
}

#[tokio::test]
async fn in_flight_cap_refuses() {
    let slow = Upstream::start_gated(answer_mode(1)).await;
    let forwarder = Arc::new(Forwarder::new(ForwardConfig {
        max_in_flight: 1,
        timeout: Duration::from_secs(5),
        ..config(vec![slow.addr])
    }));

    let first = {
        let forwarder = Arc::clone(&forwarder);
        tokio::spawn(async move {
            forwarder
                .resolve(&a_query(1, "one.example.com."), 512)
                .await
        })
    };
    eventually("the first query reaches the upstream", || {
        slow.udp_queries() == 1
    })
    .await;
    assert_eq!(forwarder.in_flight(), 1);

    let refused = ask(&forwarder, 2, "two.example.com.").await;
    assert_eq!(refused.metadata.id, 2);
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    assert_eq!(forwarder.stats().refused_in_flight.load(Relaxed), 1);

    slow.release();
    let answered = parse(&first.await.unwrap());
    assert_eq!(answers(&answered), [(1, 300)]);
    eventually("the permit is given back", || forwarder.in_flight() == 0).await;
    assert_eq!(slow.udp_queries(), 1);
}

#[tokio::test]
async fn truncated_upstream_answer_is_asked_again_over_tcp() {
    let upstream = Upstream::start(Mode::TruncateUdp { ttl: 300, count: 3 }).await;
    let forwarder = Forwarder::new(config(vec![upstream.addr]));

    let response = parse(
        &forwarder
            .resolve(&a_query(1, "tc.example.com."), 65535)
            .await,
    );
    assert!(!response.metadata.truncation);
    assert_eq!(answers(&response), [(1, 300), (2, 300), (3, 300)]);
    assert_eq!(upstream.udp_queries(), 1);
    assert_eq!(upstream.tcp_queries(), 1);
    let stats = forwarder.stats().upstream(upstream.addr).unwrap();
    assert_eq!(stats.tcp_retries.load(Relaxed), 1);
}

#[tokio::test]
async fn answer_with_another_id_is_ignored() {
    let upstream = Upstream::start(Mode::WrongIdFirst).await;
    let forwarder = Forwarder::new(config(vec![upstream.addr]));

    let response = ask(&forwarder, 1, "spoof.example.com.").await;
    assert_eq!(answers(&response), [(1, 300)]);
}

#[tokio::test]
async fn oversized_answer_is_truncated_for_the_client() {
    let upstream = Upstream::start(Mode::Answer {
        ttl: 300,
        octet: 1,
        count: 60,
    })
    .await;
    let forwarder = Forwarder::new(config(vec![upstream.addr]));

    // No EDNS: 512 bytes, and no OPT in the truncated response.
    let response = ask(&forwarder, 1, "big.example.com.").await;
    assert!(response.metadata.truncation);
    assert_eq!(response.metadata.id, 1);
    assert!(response.answers.is_empty() && response.additionals.is_empty());
    assert_eq!(response.queries.len(), 1);
    assert!(response.edns.is_none());

    // EDNS with room: everything (from the cache), with an OPT.
    let query_edns = query(2, "big.example.com.", RecordType::A, Some(4096));
    let response = parse(&forwarder.resolve(&query_edns, 4096).await);
    assert!(!response.metadata.truncation);
    assert_eq!(response.answers.len(), 60);
    assert!(response.edns.is_some());

    // EDNS without enough room: truncated, the OPT kept.
    let query_edns = query(3, "big.example.com.", RecordType::A, Some(600));
    let response = parse(&forwarder.resolve(&query_edns, 600).await);
    assert!(response.metadata.truncation);
    assert!(response.answers.is_empty());
    assert!(response.edns.is_some());

    assert_eq!(upstream.udp_queries(), 1);
    assert_eq!(forwarder.stats().truncated.load(Relaxed), 2);
}

/// Every input that is not a well-formed query gets FORMERR, with the ID echoed when present;
/// other opcodes get NOTIMP, EDNS versions other than 0 BADVERS, zone transfers REFUSED.
#[tokio::test]
async fn malformed_queries_get_formerr() {
    let forwarder = Forwarder::new(config(Vec::new()));
    let valid = a_query(0xABCD, "www.example.com.");

    let mut is_response = valid.clone();
    is_response[2] |= 0x80;
    let mut two_questions = valid.clone();
    two_questions[5] = 2;
    let mut pointer = valid[..12].to_vec();
    pointer.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
    let mut long_label = valid[..12].to_vec();
    long_label.push(64);
    long_label.extend_from_slice(&[b'a'; 64]);
    long_label.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut trailing_garbage = valid.clone();
    trailing_garbage[11] = 1; // one additional record that is not there
    let cases: [(&str, &[u8]); 9] = [
        ("empty", &[]),
        ("one byte", &[0xAB]),
        ("short header", &valid[..11]),
        ("header only", &valid[..12]),
        ("question cut short", &valid[..valid.len() - 2]),
        ("QR=1", &is_response),
        ("two questions", &two_questions),
        ("compression pointer in the question", &pointer),
        ("label of 64 bytes", &long_label),
    ];
    for (what, input) in cases {
        let response = parse(&forwarder.resolve(input, 512).await);
        assert_eq!(
            response.metadata.response_code,
            ResponseCode::FormErr,
            "{what}"
        );
        assert_eq!(
            response.metadata.message_type,
            MessageType::Response,
            "{what}"
        );
        if input.len() >= 2 {
            assert_eq!(response.metadata.id.to_be_bytes(), input[..2], "{what}");
        }
    }
    let response = parse(&forwarder.resolve(&trailing_garbage, 512).await);
    assert_eq!(response.metadata.response_code, ResponseCode::FormErr);

    let mut notify = valid.clone();
    notify[2] = (notify[2] & !0x78) | (4 << 3);
    let response = parse(&forwarder.resolve(&notify, 512).await);
    assert_eq!(response.metadata.response_code, ResponseCode::NotImp);
    assert_eq!(response.metadata.op_code, OpCode::Notify);

    let mut version_one =
        Message::from_vec(&query(5, "www.example.com.", RecordType::A, Some(1232))).unwrap();
    version_one.edns.as_mut().unwrap().set_version(1);
    let response = parse(&forwarder.resolve(&version_one.to_vec().unwrap(), 512).await);
    assert_eq!(u16::from(response.metadata.response_code), 16, "BADVERS");
    assert_eq!(response.metadata.id, 5);
    assert!(response.edns.is_some());

    let axfr = query(6, "example.com.", RecordType::AXFR, None);
    let response = parse(&forwarder.resolve(&axfr, 512).await);
    assert_eq!(response.metadata.response_code, ResponseCode::Refused);

    assert_eq!(forwarder.stats().malformed.load(Relaxed), 12);
}

/// Random bytes and randomly damaged queries: always a response with QR=1 and the ID echoed.
#[tokio::test]
async fn garbage_never_panics() {
    // No upstreams: anything that happens to be a valid query is REFUSED without a network.
    let forwarder = Forwarder::new(config(Vec::new()));
    let mut rng = fastrand::Rng::with_seed(0x10de57a4);
    let valid = query(0x5555, "www.example.com.", RecordType::A, Some(1232));
    for round in 0..4000 {
        let input: Vec<u8> = if round % 2 == 0 {
            let len = rng.usize(..100);
            (0..len).map(|_| rng.u8(..)).collect()
        } else {
            let mut damaged = valid.clone();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..damaged.len());
                damaged[at] = rng.u8(..);
            }
            damaged.truncate(rng.usize(damaged.len() / 2..=damaged.len()));
            damaged
        };
        let response = forwarder.resolve(&input, 512).await;
        assert!(response.len() >= 12, "{input:?}");
        assert_eq!(response[2] & 0x80, 0x80, "{input:?}");
        if input.len() >= 2 {
            assert_eq!(response[..2], input[..2], "{input:?}");
        }
        assert!(Message::from_vec(&response).is_ok(), "{input:?}");
    }
    let stats = forwarder.stats();
    let refused = stats.refused_no_upstream.load(Relaxed);
    assert_eq!(stats.malformed.load(Relaxed) + refused, 4000);
}

#[tokio::test]
async fn a_dead_partner_does_not_eat_the_in_flight_cap() {
    // Every query races the healthy upstream against the dead one; the dead one's attempts
    // run out in the background and must not hold the client's permit.
    let (healthy, dead) = healthy_and_dead().await;
    let forwarder = Forwarder::new(ForwardConfig {
        max_in_flight: 2,
        demote_after: 1000,
        ..config(vec![dead.addr, healthy.addr])
    });
    for i in 0..20u16 {
        let r = ask(&forwarder, i, &format!("n{i}.example.com.")).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "query {i}");
    }
    assert_eq!(forwarder.stats().refused_in_flight.load(Relaxed), 0);
}

#[tokio::test]
async fn at_the_in_flight_cap_a_stale_answer_beats_refused() {
    let upstream = Upstream::start(answer_with_ttl(1, 1)).await;
    let forwarder = Arc::new(Forwarder::new(ForwardConfig {
        max_in_flight: 1,
        timeout: Duration::from_secs(5),
        ..config(vec![upstream.addr])
    }));
    let r = ask(&forwarder, 1, "stale.example.com.").await;
    assert_eq!(answers(&r), [(1, 1)]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The only permit is taken by a query that hangs on the (now dead) upstream.
    upstream.set_mode(Mode::Dead);
    let hung = {
        let f = Arc::clone(&forwarder);
        tokio::spawn(async move { f.resolve(&a_query(2, "other.example.com."), 512).await })
    };
    eventually("the permit is taken", || forwarder.in_flight() == 1).await;
    let r = ask(&forwarder, 3, "stale.example.com.").await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answers(&r), [(1, 30)], "served stale with TTL 30");
    assert_eq!(forwarder.stats().stale_served.load(Relaxed), 1);
    hung.abort();
}

/// Sockets this process holds open (each test runs in a process of its own under nextest).
fn open_sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

#[tokio::test]
async fn a_loser_is_not_asked_again_over_tcp_once_a_winner_answered() {
    // The slow upstream truncates over UDP after the fast one has won: the query is settled,
    // so its attempt must end there rather than open a TCP connection for another timeout.
    let fast = Upstream::start(answer_mode(1)).await;
    let slow = Upstream::start_slow(
        Mode::TruncateUdp { ttl: 60, count: 1 },
        Duration::from_millis(100),
    )
    .await;
    let forwarder = Forwarder::new(ForwardConfig {
        timeout: Duration::from_secs(2),
        demote_after: 1000,
        ..config(vec![slow.addr, fast.addr])
    });
    for i in 0..5u16 {
        let r = ask(&forwarder, i, &format!("t{i}.example.com.")).await;
        assert_eq!(answers(&r), [(1, 300)]);
    }
    eventually("the slow upstream saw every query", || {
        slow.udp_queries() == 5
    })
    .await;
    eventually("the losers ended", || forwarder.lingering_attempts() == 0).await;
    assert_eq!(
        slow.tcp_queries(),
        0,
        "a settled query was retried over TCP"
    );
}

#[tokio::test]
async fn losing_attempts_linger_only_up_to_the_cap_and_one_timeout() {
    // A dead partner loses every race. Its attempts may wait for an answer (that is how it is
    // found dead), but no more of them than `max_in_flight`, each for one timeout at most;
    // the others end, and close their sockets, as soon as the winner answers.
    let (healthy, dead) = healthy_and_dead().await;
    let timeout = Duration::from_millis(1500);
    let forwarder = Forwarder::new(ForwardConfig {
        max_in_flight: 2,
        demote_after: 1000,
        timeout,
        ..config(vec![dead.addr, healthy.addr])
    });
    let baseline = open_sockets();
    let started = Instant::now();
    for i in 0..10u16 {
        let r = ask(&forwarder, i, &format!("n{i}.example.com.")).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "query {i}");
    }
    eventually("the dead upstream saw every query", || {
        dead.udp_queries() == 10
    })
    .await;
    // Asked well within one timeout of the first query, so none of the lingering ones is
    // over yet: two linger, eight were abandoned, and only two sockets are still open.
    assert!(
        started.elapsed() < timeout,
        "the queries took too long to say anything"
    );
    eventually("eight losers abandoned", || {
        forwarder.stats().abandoned_attempts.load(Relaxed) == 8
    })
    .await;
    assert_eq!(forwarder.lingering_attempts(), 2);
    assert!(
        open_sockets() <= baseline + 2,
        "{} sockets open, {baseline} before",
        open_sockets()
    );
    // One timeout after they started, the lingering ones are gone too, and counted as
    // timeouts against the dead upstream.
    eventually("the lingering attempts ended", || {
        forwarder.lingering_attempts() == 0
    })
    .await;
    assert!(
        started.elapsed() < timeout * 2,
        "an attempt outlived its own timeout"
    );
    eventually("their sockets closed", || open_sockets() <= baseline).await;
    assert_eq!(forwarder.stats().upstreams[0].timeouts.load(Relaxed), 2);
}
