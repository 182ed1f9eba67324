//! The servers under abuse, over real sockets on loopback: a cache-miss flood that must not
//! pile up tasks, a forwarding loop, one host taking every TCP slot, a UDP flood against the
//! rate limit, and HTTP clients that hold connections open or ask for slow pages.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use lodestar_dns::acl::RecursionAcl;
use lodestar_dns::config::{RrlConfig, ZoneConfig};
use lodestar_dns::forward::{ForwardConfig, Forwarder};
use lodestar_dns::http::{router, serve, HttpLimits, HttpState};
use lodestar_dns::rrl::Rrl;
use lodestar_dns::server::{serve_tcp, Shared, TcpLimits, UdpServer};
use lodestar_dns::stats::DnsStats;
use lodestar_dns::zone::{Zone, ZoneBuilder};

fn zone() -> Arc<ArcSwap<Zone>> {
    let snapshot = Arc::new(lodestar_control::demo::snapshot());
    let zone = ZoneBuilder::new(ZoneConfig::default(), vec!["127.0.0.1".parse().unwrap()])
        .unwrap()
        .update(&snapshot);
    Arc::new(ArcSwap::from_pointee(zone))
}

/// The zones and, when given, a forwarder, for loopback clients; one stats slot per worker.
fn shared(forwarder: Option<Arc<Forwarder>>, rrl: Option<Rrl>) -> Arc<Shared> {
    let stats = Arc::new(DnsStats::new(2));
    Arc::new(Shared::new(zone(), forwarder, RecursionAcl::local_default(), stats).with_rrl(rrl))
}

fn query(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.to_vec().unwrap()
}

/// Sends every packet from one socket bound to `from`, then collects what comes back until
/// nothing has for `quiet`.
fn udp_burst(
    server: SocketAddr,
    from: Ipv4Addr,
    packets: &[Vec<u8>],
    quiet: Duration,
) -> Vec<Message> {
    let socket = UdpSocket::bind((from, 0)).unwrap();
    socket.set_read_timeout(Some(quiet)).unwrap();
    for p in packets {
        socket.send_to(p, server).unwrap();
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 65535];
    while let Ok((n, _)) = socket.recv_from(&mut buf) {
        out.push(Message::from_vec(&buf[..n]).expect("a parseable response"));
    }
    out
}

#[test]
fn a_cache_miss_flood_queues_no_more_tasks_than_the_in_flight_cap() {
    // The runtime that would run forwarded queries is never driven here, so every task given
    // to it stays alive: what is alive is exactly what the server queued.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let closed = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let forwarder = runtime.block_on(async {
        Arc::new(Forwarder::new(ForwardConfig {
            upstreams: vec![closed],
            max_in_flight: 4,
            ..ForwardConfig::default()
        }))
    });
    let shared = shared(Some(forwarder.clone()), None);
    let server = UdpServer::start(
        "127.0.0.1:0".parse().unwrap(),
        1,
        shared,
        runtime.handle().clone(),
        0,
    )
    .unwrap();
    let flood: Vec<Vec<u8>> = (0..200u16)
        .map(|i| query(i, &format!("miss{i}.example.org."), RecordType::A))
        .collect();
    let replies = udp_burst(
        server.local,
        Ipv4Addr::LOCALHOST,
        &flood,
        Duration::from_millis(500),
    );
    // Past the cap every query is answered REFUSED at once by the UDP worker, not queued.
    assert_eq!(replies.len(), 196, "replies to the flood");
    assert!(replies
        .iter()
        .all(|r| r.metadata.response_code == ResponseCode::Refused));
    assert_eq!(forwarder.stats().refused_in_flight.load(Relaxed), 196);
    assert_eq!(runtime.metrics().num_alive_tasks(), 4, "tasks queued");
    drop(server);
}

/// A forwarder in front of the upstream at `next`: relays every query there and the answer
/// back, counting them. Loopback only.
struct Relay {
    relayed: Arc<AtomicUsize>,
}

impl Relay {
    async fn start(socket: tokio::net::UdpSocket, next: SocketAddr) -> Relay {
        let relayed = Arc::new(AtomicUsize::new(0));
        let count = relayed.clone();
        let socket = Arc::new(socket);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65535];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                count.fetch_add(1, Relaxed);
                let (packet, socket) = (buf[..n].to_vec(), socket.clone());
                tokio::spawn(async move {
                    let out = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                    out.send_to(&packet, next).await.unwrap();
                    let mut answer = vec![0u8; 65535];
                    let got = tokio::time::timeout(Duration::from_secs(2), out.recv(&mut answer));
                    if let Ok(Ok(len)) = got.await {
                        let _ = socket.send_to(&answer[..len], peer).await;
                    }
                });
            }
        });
        Relay { relayed }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_sends_our_queries_back_is_found_and_never_asked_again() {
    // Upstream 1 is a forwarder that forwards to us (a loop); upstream 2 forwards to a real
    // resolver, here another Lodestar serving the zones (no loop).
    let (looping, honest) = (
        tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
    );
    let (looping_addr, honest_addr) = (looping.local_addr().unwrap(), honest.local_addr().unwrap());
    let forwarder = Arc::new(Forwarder::new(ForwardConfig {
        upstreams: vec![looping_addr],
        zones: vec![("mesos.example.".into(), vec![honest_addr])],
        timeout: Duration::from_millis(500),
        ..ForwardConfig::default()
    }));
    let runtime = tokio::runtime::Handle::current();
    let ours = UdpServer::start(
        "127.0.0.1:0".parse().unwrap(),
        1,
        shared(Some(forwarder.clone()), None),
        runtime.clone(),
        0,
    )
    .unwrap();
    let resolver = UdpServer::start(
        "127.0.0.1:0".parse().unwrap(),
        1,
        shared(None, None),
        runtime,
        0,
    )
    .unwrap();
    let looping = Relay::start(looping, ours.local).await;
    let honest = Relay::start(honest, resolver.local).await;

    forwarder.probe_for_loops().await;
    let stats = forwarder.stats();
    assert!(
        stats.upstreams[0].looped.load(Relaxed),
        "the loop was not found"
    );
    assert!(
        !stats.upstreams[1].looped.load(Relaxed),
        "a loop where there is none"
    );
    assert_eq!(
        stats.refused_loop.load(Relaxed),
        1,
        "our probe came back once"
    );
    // Our probe went round once and was answered by us; it was not forwarded again.
    assert_eq!(looping.relayed.load(Relaxed), 1);
    // Names for the looping upstream are refused without asking it; the others still go out.
    let before = looping.relayed.load(Relaxed);
    let r = forwarder
        .resolve(&query(7, "www.example.org.", RecordType::A), 512)
        .await;
    assert_eq!(
        Message::from_vec(&r).unwrap().metadata.response_code,
        ResponseCode::Refused
    );
    assert_eq!(looping.relayed.load(Relaxed), before);
    assert_eq!(stats.refused_loop.load(Relaxed), 2);
    let before = honest.relayed.load(Relaxed);
    forwarder
        .resolve(&query(8, "x.mesos.example.", RecordType::A), 512)
        .await;
    assert_eq!(honest.relayed.load(Relaxed), before + 1);
}

/// Connects to `server` from `from` and asks one query; Err if the server closed instead.
fn tcp_query(server: SocketAddr, from: Ipv4Addr) -> std::io::Result<(TcpStream, Message)> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((from, 0)).into())?;
    socket.connect(&server.into())?;
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    let packet = query(1, "leader.mesos.", RecordType::A);
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&packet);
    stream.write_all(&framed)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut body = vec![0; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut body)?;
    Ok((
        stream,
        Message::from_vec(&body).expect("a parseable response"),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_cannot_take_every_tcp_slot() {
    let shared = shared(None, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let limits = TcpLimits {
        max_connections: 8,
        max_per_source: 3,
        idle: Duration::from_secs(30),
    };
    tokio::spawn(serve_tcp(listener, shared.clone(), limits, 0));
    let held = tokio::task::spawn_blocking(move || {
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(tcp_query(server, Ipv4Addr::LOCALHOST).expect("within the host's share"));
        }
        // The fourth from the same host is closed at once; another host still gets in.
        let fourth = tcp_query(server, Ipv4Addr::LOCALHOST);
        assert!(
            fourth.is_err(),
            "a fourth connection from one host was served"
        );
        let (_, other) = tcp_query(server, Ipv4Addr::new(127, 0, 0, 2)).expect("another host");
        assert_eq!(other.metadata.response_code, ResponseCode::NoError);
        held
    })
    .await
    .unwrap();
    assert_eq!(shared.stats.tcp_refused_per_source(), 1);
    // Closed connections give their places back (once the server has seen them close).
    drop(held);
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while tcp_query(server, Ipv4Addr::LOCALHOST).is_err() {
            assert!(Instant::now() < deadline, "no place was given back");
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
}

fn rrl(rate: u32) -> Option<Rrl> {
    Rrl::new(&RrlConfig {
        responses_per_second: rate,
        slip: 2,
        // The default exempts loopback, and loopback is all a test may flood from.
        exempt: Vec::new(),
        ..RrlConfig::default()
    })
}

/// A UDP server of the zones alone, rate-limited as `rrl` says.
struct Authoritative {
    server: UdpServer,
    shared: Arc<Shared>,
    // With no forwarder it is never given anything to run.
    _runtime: tokio::runtime::Runtime,
}

impl Authoritative {
    fn start(rrl: Option<Rrl>) -> Authoritative {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let shared = shared(None, rrl);
        let server = UdpServer::start(
            "127.0.0.1:0".parse().unwrap(),
            1,
            shared.clone(),
            runtime.handle().clone(),
            0,
        )
        .unwrap();
        Authoritative {
            server,
            shared,
            _runtime: runtime,
        }
    }

    /// `n` queries for `leader.mesos.` at once from `from`; the replies.
    fn flood(&self, from: Ipv4Addr, n: u16) -> Vec<Message> {
        let queries: Vec<Vec<u8>> = (0..n)
            .map(|i| query(i, "leader.mesos.", RecordType::A))
            .collect();
        udp_burst(
            self.server.local,
            from,
            &queries,
            Duration::from_millis(300),
        )
    }
}

#[test]
fn a_udp_flood_is_rate_limited_per_network_and_part_of_it_slips() {
    let limited = Authoritative::start(rrl(5));
    let replies = limited.flood(Ipv4Addr::LOCALHOST, 60);
    let full = replies.iter().filter(|r| !r.metadata.truncation).count();
    let slipped: Vec<&Message> = replies.iter().filter(|r| r.metadata.truncation).collect();
    // Four seconds' worth (20) at once, a second's more if the burst crossed a second; half
    // the rest slipped (TC, no records), half dropped.
    assert!((20..=25).contains(&full), "{full} full answers");
    assert!(slipped.len() >= 17, "{} slipped", slipped.len());
    assert!(slipped.iter().all(|r| r.answers.is_empty()));
    assert!(replies.len() < 60, "nothing was dropped");
    let stats = &limited.shared.stats;
    assert_eq!(stats.rrl_slipped(), slipped.len() as u64);
    assert_eq!(stats.rrl_dropped() + stats.rrl_slipped() + full as u64, 60);
    // Another /24 has a budget of its own.
    let other = limited.flood(Ipv4Addr::new(127, 0, 1, 1), 20);
    assert_eq!(other.iter().filter(|r| !r.metadata.truncation).count(), 20);
    // Off (the default), the same flood is answered whole.
    let replies = Authoritative::start(rrl(0)).flood(Ipv4Addr::LOCALHOST, 60);
    assert_eq!(replies.len(), 60);
    assert!(replies.iter().all(|r| !r.metadata.truncation));
    // On with the default exemptions, loopback (the node's own tasks) is not limited.
    let defaults = Rrl::new(&RrlConfig {
        responses_per_second: 5,
        ..RrlConfig::default()
    });
    let replies = Authoritative::start(defaults).flood(Ipv4Addr::LOCALHOST, 60);
    assert_eq!(replies.len(), 60);
    assert!(replies.iter().all(|r| !r.metadata.truncation));
}

/// An HTTP server with the Mesos-DNS routes whose `/metrics` takes `metrics_delay` (it holds
/// a lock or reads per-CPU maps), within `limits`.
async fn http_server(limits: HttpLimits, metrics_delay: Duration) -> SocketAddr {
    let state = HttpState {
        zone: zone(),
        zone_config: ZoneConfig::default(),
        config_json: Arc::new(serde_json::json!({})),
        metrics: Arc::new(move || {
            std::thread::sleep(metrics_delay);
            String::from("# nothing\n")
        }),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        router(state),
        limits,
        std::future::pending(),
    ));
    addr
}

/// Reads until the server closes, or the 5 s read timeout; true if it closed.
fn closes(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_http_headers_are_cut_off_and_connections_are_capped() {
    let limits = HttpLimits {
        max_connections: 3,
        header_timeout: Duration::from_millis(300),
    };
    let addr = http_server(limits, Duration::ZERO).await;
    tokio::task::spawn_blocking(move || {
        // Slowloris: headers that never end are cut off.
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET /v1/version HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        assert!(
            closes(&mut slow),
            "a connection with unfinished headers stayed open"
        );
        // Three idle connections take every slot: a fourth is closed at once, ...
        let mut idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(50));
        let mut fourth = TcpStream::connect(addr).unwrap();
        fourth
            .write_all(b"GET /v1/version HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut reply = String::new();
        let _ = fourth.read_to_string(&mut reply);
        assert!(reply.is_empty(), "served past the cap: {reply}");
        // ... and once the header timeout has closed them, requests are served again.
        for s in &mut idle {
            assert!(closes(s), "an idle connection stayed open");
        }
        assert!(get(addr, "/v1/version").starts_with("HTTP/1.1 200"));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_slow_metrics_scrape_does_not_stall_the_async_workers() {
    // One async worker: if `/metrics` ran on it, nothing else could be served meanwhile.
    let addr = http_server(HttpLimits::default(), Duration::from_secs(2)).await;
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let scrape = {
        let order = order.clone();
        std::thread::spawn(move || {
            assert!(get(addr, "/metrics").starts_with("HTTP/1.1 200"));
            order.lock().unwrap().push("metrics");
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let version = {
        let order = order.clone();
        std::thread::spawn(move || {
            assert!(get(addr, "/v1/version").starts_with("HTTP/1.1 200"));
            order.lock().unwrap().push("version");
        })
    };
    // The test's own runtime is the server's: wait for the clients without blocking it.
    while !(scrape.is_finished() && version.is_finished()) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    scrape.join().unwrap();
    version.join().unwrap();
    assert_eq!(*order.lock().unwrap(), ["version", "metrics"]);
}
