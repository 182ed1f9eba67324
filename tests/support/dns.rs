//! A DNS client over real sockets (hickory-proto for the wire format), and small upstream
//! servers for forwarding tests. Loopback only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

pub fn build(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::new(fastrand_id(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    if let Some(p) = edns {
        let mut e = Edns::new();
        e.set_max_payload(p);
        m.set_edns(e);
    }
    m.to_vec().expect("encode")
}

fn fastrand_id() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    (NEXT.fetch_add(7919, Ordering::Relaxed) & 0xffff) as u16
}

/// Sends raw bytes over UDP; the response bytes, or None after a second.
pub fn udp_raw(server: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    udp_raw_within(server, packet, Duration::from_secs(1))
}

/// Sends raw bytes over UDP; the response bytes, or None after `wait`.
pub fn udp_raw_within(server: SocketAddr, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").ok()?;
    s.set_read_timeout(Some(wait)).ok()?;
    s.send_to(packet, server).ok()?;
    let mut buf = [0u8; 65535];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

/// One UDP query (no EDNS unless given); panics if there is no parseable answer.
pub fn udp(server: SocketAddr, name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let packet = build(name, qtype, edns);
    for _ in 0..3 {
        if let Some(r) = udp_raw(server, &packet) {
            let m = Message::from_vec(&r).expect("a parseable response");
            assert_eq!(m.metadata.id, u16::from_be_bytes([packet[0], packet[1]]));
            return m;
        }
    }
    panic!("no answer from {server} for {name} {qtype}");
}

/// One query over TCP.
pub fn tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let packet = build(name, qtype, None);
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(2)).expect("tcp connect");
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&packet);
    s.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    Message::from_vec(&body).expect("a parseable TCP response")
}

/// The answers' data as text, sorted.
pub fn answers(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

/// The sorted answers to one UDP query without EDNS.
pub fn udp_answers(server: SocketAddr, name: &str, qtype: RecordType) -> Vec<String> {
    answers(&udp(server, name, qtype, None))
}

/// How many answers one UDP query without EDNS gets.
pub fn udp_answer_count(server: SocketAddr, name: &str, qtype: RecordType) -> usize {
    udp(server, name, qtype, None).answers.len()
}

/// A tiny upstream resolver on 127.0.0.1: answers every A question with `ip` (TTL 300) and
/// counts the queries it saw. Stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    pub queries: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Upstream {
    /// How many queries it has seen.
    pub fn seen(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    pub fn start(ip: std::net::Ipv4Addr) -> Upstream {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let upstream = Upstream {
            addr: socket.local_addr().unwrap(),
            queries: Arc::default(),
            stop: Arc::default(),
        };
        let (q, st) = (upstream.queries.clone(), upstream.stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(req) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                q.fetch_add(1, Ordering::Relaxed);
                let mut resp = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
                resp.metadata.recursion_desired = req.metadata.recursion_desired;
                resp.metadata.recursion_available = true;
                resp.add_queries(req.queries.iter().cloned());
                if let Some(q) = req.queries.first() {
                    if q.query_type() == RecordType::A {
                        resp.add_answer(Record::from_rdata(q.name().clone(), 300, RData::A(A(ip))));
                    }
                }
                if let Ok(bytes) = resp.to_vec() {
                    let _ = socket.send_to(&bytes, peer);
                }
            }
        });
        upstream
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A bound UDP port that never answers (a dead upstream). Keep it alive while needed.
pub fn dead_upstream() -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let a = s.local_addr().unwrap();
    (s, a)
}
