//! The DNS servers. UDP runs on dedicated threads, one socket each (SO_REUSEPORT), reading
//! and writing in batches (recvmmsg/sendmmsg); TCP runs on tokio. Both share `Shared::handle`,
//! which decodes a query once and hands it to the catalog's answer sources.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::acl::RecursionAcl;
use crate::catalog::{Answered, Catalog, Deferred, Request};
use crate::forward::Forwarder;
use crate::stats::{DnsStats, WorkerStats};
use crate::wire::{self, Reject};
use crate::zone::Zone;

/// What a query needs after `handle`.
pub enum Outcome {
    /// `out` holds the response.
    Reply,
    /// Its source answers later: run this on tokio, and send what it gives.
    Forward(Deferred),
    /// No response at all.
    Drop,
}

/// What every server thread and task shares.
pub struct Shared {
    pub catalog: Catalog,
    pub acl: RecursionAcl,
    pub stats: Arc<DnsStats>,
}

impl Shared {
    /// The published zones, and the forwarder for everything else (for the clients `acl` lets
    /// recurse).
    pub fn new(
        zone: Arc<ArcSwap<Zone>>,
        forwarder: Option<Arc<Forwarder>>,
        acl: RecursionAcl,
        stats: Arc<DnsStats>,
    ) -> Shared {
        let mut catalog = Catalog::new();
        if let Some(forwarder) = forwarder {
            catalog = catalog.with(forwarder);
        }
        Shared {
            catalog: catalog.with(zone),
            acl,
            stats,
        }
    }

    /// Answers from `zone` alone: no forwarder, recursion for this host only (tests, fuzzing).
    pub fn authoritative(zone: Zone) -> Shared {
        Shared::new(
            Arc::new(ArcSwap::from_pointee(zone)),
            None,
            RecursionAcl::local_default(),
            Arc::new(DnsStats::new(1)),
        )
    }

    /// Answers one query into `out`, or says what else to do with it. The packet is decoded
    /// here, once, and the request goes to the source with the longest matching origin.
    pub fn handle(
        &self,
        packet: &[u8],
        peer: IpAddr,
        tcp: bool,
        turn: usize,
        ws: &WorkerStats,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let may_recurse = self.acl.allows(peer);
        let query = match wire::parse_query(packet) {
            Ok(q) => q,
            Err(Reject::Drop) => {
                ws.dropped.fetch_add(1, Ordering::Relaxed);
                return Outcome::Drop;
            }
            Err(reject) => {
                wire::write_rejection(out, packet, &reject, may_recurse);
                ws.count_rcode(reject.rcode().unwrap_or(wire::RCODE_FORMERR));
                return Outcome::Reply;
            }
        };
        let limit = if tcp {
            wire::MAX_MESSAGE
        } else {
            query.udp_limit()
        };
        let mut lower = [0u8; wire::MAX_NAME];
        let mut request = Request::in_buffer(query, &mut lower, peer, limit, may_recurse, turn);
        let found = self.catalog.find(request.lower_qname());
        let source = match found {
            Some(found) if !found.recursive => found,
            Some(found) if may_recurse => {
                ws.forwarded.fetch_add(1, Ordering::Relaxed);
                found
            }
            // Never an open resolver: names outside our zones are refused to strangers.
            _ => {
                ws.refused_recursion.fetch_add(1, Ordering::Relaxed);
                let mut refused = request;
                refused.recursion_available = false;
                refused.respond_rcode(out, wire::RCODE_REFUSED);
                self.count_reply(ws, out);
                return Outcome::Reply;
            }
        };
        request.set_origin(source.origin_at);
        let source = source.source;
        match source.answer(&request, out) {
            Answered::Now { prepared, .. } => {
                if prepared {
                    ws.prepared.fetch_add(1, Ordering::Relaxed);
                }
                self.count_reply(ws, out);
                Outcome::Reply
            }
            Answered::Later => {
                Outcome::Forward(Deferred::new(Arc::clone(source), request.into_owned()))
            }
        }
    }

    /// Counts a response about to be sent, by rcode and truncation.
    fn count_reply(&self, ws: &WorkerStats, response: &[u8]) {
        if let Some(rcode) = wire::header_rcode(response) {
            ws.count_rcode(rcode);
        }
        if wire::is_truncated(response) {
            ws.truncated.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a response that a source gave later.
    fn count_deferred(&self, worker: usize, response: &[u8], started: Instant) {
        let ws = self.stats.worker(worker);
        self.count_reply(ws, response);
        ws.observe_ns(started.elapsed().as_nanos() as u64);
    }
}

/// Running UDP workers; dropping this stops them.
pub struct UdpServer {
    pub local: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl UdpServer {
    /// Binds `workers` sockets to `addr` (the first picks the port if it is 0) and starts a
    /// thread on each. Forwarded queries are handed to `runtime`.
    pub fn start(
        addr: SocketAddr,
        workers: usize,
        shared: Arc<Shared>,
        runtime: tokio::runtime::Handle,
        first_worker: usize,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut local = addr;
        let mut threads = Vec::new();
        for i in 0..workers.max(1) {
            let socket = Arc::new(bind_udp(local)?);
            local = socket.local_addr()?;
            let (shared, stop, runtime) = (shared.clone(), stop.clone(), runtime.clone());
            let worker = first_worker + i;
            let thread = std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || udp_loop(socket, shared, stop, runtime, worker))?;
            threads.push(thread);
        }
        Ok(UdpServer {
            local,
            stop,
            threads,
        })
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Periodic wake-ups let a worker notice shutdown.
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

const BATCH: usize = 32;
const PACKET: usize = 4096;

/// One worker: receive a batch, answer each, send the answers in one call.
fn udp_loop(
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    runtime: tokio::runtime::Handle,
    worker: usize,
) {
    let ws = shared.stats.worker(worker);
    let mut bufs = vec![[0u8; PACKET]; BATCH];
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1500)).collect();
    // SAFETY: all-zero is a valid sockaddr_storage, iovec and mmsghdr.
    let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut send_iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut send_hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let turn = AtomicUsize::new(worker);
    let fd = socket.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        for i in 0..BATCH {
            iovs[i].iov_base = bufs[i].as_mut_ptr().cast();
            iovs[i].iov_len = PACKET;
            hdrs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
            hdrs[i].msg_hdr.msg_control = std::ptr::null_mut();
            hdrs[i].msg_hdr.msg_controllen = 0;
            hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at buffers that live across the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue;
        }
        let mut to_send = 0;
        for i in 0..n as usize {
            let started = Instant::now();
            let len = (hdrs[i].msg_len as usize).min(PACKET);
            let Some(peer) = sockaddr_to_std(&addrs[i]) else {
                continue;
            };
            ws.udp_queries.fetch_add(1, Ordering::Relaxed);
            let packet = &bufs[i][..len];
            let t = turn.fetch_add(1, Ordering::Relaxed);
            let out = &mut outs[i];
            match shared.handle(packet, peer.ip(), false, t, ws, out) {
                Outcome::Reply => {
                    send_iovs[to_send].iov_base = out.as_mut_ptr().cast();
                    send_iovs[to_send].iov_len = out.len();
                    send_hdrs[to_send].msg_hdr.msg_name =
                        (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
                    send_hdrs[to_send].msg_hdr.msg_namelen = hdrs[i].msg_hdr.msg_namelen;
                    send_hdrs[to_send].msg_hdr.msg_iov = &mut send_iovs[to_send];
                    send_hdrs[to_send].msg_hdr.msg_iovlen = 1;
                    to_send += 1;
                    ws.observe_ns(started.elapsed().as_nanos() as u64);
                }
                Outcome::Forward(deferred) => {
                    let (socket, shared) = (socket.clone(), shared.clone());
                    runtime.spawn(async move {
                        let response = deferred.resolve().await;
                        if !response.is_empty() {
                            shared.count_deferred(worker, &response, started);
                            let _ = socket.send_to(&response, peer);
                        }
                    });
                }
                Outcome::Drop => {}
            }
        }
        let mut sent = 0;
        while sent < to_send {
            // SAFETY: the headers point at `outs` and `addrs`, untouched until the next batch.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    send_hdrs[sent..].as_mut_ptr(),
                    (to_send - sent) as u32,
                    0,
                )
            };
            if r <= 0 {
                // A send error (e.g. an unreachable peer) affects that datagram only.
                sent += 1;
            } else {
                sent += r as usize;
            }
        }
    }
}

fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::new(ip.into(), u16::from_be(sin6.sin6_port)))
        }
        _ => None,
    }
}

/// TCP limits.
#[derive(Clone, Debug)]
pub struct TcpLimits {
    pub max_connections: usize,
    /// A connection idle this long is closed (RFC 7766 suggests seconds).
    pub idle: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 1024,
            idle: Duration::from_secs(10),
        }
    }
}

/// Serves DNS over TCP on `listener` until the task is dropped.
pub async fn serve_tcp(
    listener: TcpListener,
    shared: Arc<Shared>,
    limits: TcpLimits,
    worker: usize,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!("DNS TCP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "too many DNS TCP connections; closing");
            continue;
        };
        let (shared, idle) = (shared.clone(), limits.idle);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = tcp_connection(stream, peer, shared, idle, worker).await {
                debug!(%peer, "DNS TCP connection ended: {e}");
            }
        });
    }
}

async fn tcp_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    idle: Duration,
    worker: usize,
) -> io::Result<()> {
    let ws = shared.stats.worker(worker);
    let mut packet = Vec::new();
    let mut out = Vec::new();
    let mut turn = 0;
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(idle, stream.read_exact(&mut len)).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(r) => r?,
        };
        let len = usize::from(u16::from_be_bytes(len));
        packet.resize(len, 0);
        tokio::time::timeout(idle, stream.read_exact(&mut packet))
            .await
            .map_err(|_| {
                io::Error::new(io::ErrorKind::TimedOut, "idle in the middle of a message")
            })??;
        let started = Instant::now();
        ws.tcp_queries.fetch_add(1, Ordering::Relaxed);
        turn += 1;
        let response = match shared.handle(&packet, peer.ip(), true, turn, ws, &mut out) {
            Outcome::Reply => &out[..],
            Outcome::Forward(deferred) => {
                out = deferred.resolve().await;
                if !out.is_empty() {
                    shared.count_reply(ws, &out);
                }
                &out[..]
            }
            Outcome::Drop => continue,
        };
        if response.is_empty() {
            continue;
        }
        ws.observe_ns(started.elapsed().as_nanos() as u64);
        let mut framed = Vec::with_capacity(response.len() + 2);
        framed.extend_from_slice(&(response.len() as u16).to_be_bytes());
        framed.extend_from_slice(response);
        // A client that stops reading must not hold a connection slot forever.
        tokio::time::timeout(idle, stream.write_all(&framed))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"))??;
    }
}
