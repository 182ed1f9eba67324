//! What makes the embedded demo catalog demonstrate something: its VIP backends served by the
//! agent itself on loopback addresses, and a blackhole route for each demo VIP so that a
//! connection the hooks do not steer fails here instead of leaving for the default gateway.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use anyhow::{Context, Result};
use lodestar_control::model::Protocol;
use lodestar_control::Snapshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Where a demo agent pins its maps and links unless told otherwise: never the real agent's
/// directory, since a demo removes everything there when it stops.
pub const DEMO_PIN_PATH: &str = "/sys/fs/bpf/lodestar-demo";

/// The demo catalog's VIP addresses (RFC 2544 benchmarking space), its `l4lb.vip_ranges` unless
/// configured.
pub const DEMO_VIP_RANGE: &str = "198.19.0.0/16";

/// The demo's backends and routes, removed by [`Demo::stop`].
pub struct Demo {
    routes: Vec<IpAddr>,
}

impl Demo {
    /// Serves every VIP backend of `snapshot` that is a loopback address (a TCP backend answers
    /// HTTP with its task's name, a UDP backend echoes its task's name), and blackholes the VIP
    /// addresses. Backends elsewhere are refused: a demo never points at an address this
    /// machine does not have.
    pub async fn start(
        snapshot: &Snapshot,
        tasks: &mut JoinSet<()>,
        stop: CancellationToken,
    ) -> Result<Demo> {
        let mut routes = Vec::new();
        for vip in snapshot.vips() {
            for backend in &vip.backends {
                for ip in &backend.ips {
                    anyhow::ensure!(
                        ip.is_loopback(),
                        "demo VIP {} has a backend at {ip}, not on loopback",
                        vip.key
                    );
                    let at = SocketAddr::new(*ip, backend.port);
                    let reply = format!("{} at {at}\n", backend.task);
                    // A backend that cannot be served (a port taken, or below 1024 without
                    // the privilege) leaves the rest of the demo working.
                    if let Err(e) = serve(vip.key.protocol, at, reply, tasks, &stop).await {
                        warn!("demo backend {at} not served: {e:#}");
                    }
                }
            }
            for addr in &vip.addresses {
                if !routes.contains(addr) {
                    match blackhole(*addr, "replace") {
                        Ok(()) => routes.push(*addr),
                        Err(e) => warn!(
                            "cannot blackhole the demo VIP {addr} ({e:#}): unsteered connections to it may leave this machine"
                        ),
                    }
                }
            }
        }
        info!(
            vips = ?routes,
            "demo backends serving on loopback; demo VIPs blackholed"
        );
        Ok(Demo { routes })
    }

    /// Removes the routes.
    pub fn stop(self) {
        for addr in self.routes {
            if let Err(e) = blackhole(addr, "del") {
                warn!("cannot remove the blackhole route of demo VIP {addr}: {e:#}");
            }
        }
    }
}

/// Serves one demo backend until `stop`.
async fn serve(
    protocol: Protocol,
    at: SocketAddr,
    reply: String,
    tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
) -> Result<()> {
    match protocol {
        Protocol::Tcp => {
            let l = tokio::net::TcpListener::bind(at).await?;
            tasks.spawn(serve_http(l, reply, stop.clone()));
        }
        Protocol::Udp => {
            let s = tokio::net::UdpSocket::bind(at).await?;
            tasks.spawn(serve_udp(s, reply, stop.clone()));
        }
    }
    Ok(())
}

/// `ip route replace|del blackhole ADDR` (a host route; replace, so that one left by a demo that
/// was killed is taken over).
fn blackhole(addr: IpAddr, op: &str) -> Result<()> {
    let family = if addr.is_ipv4() { "-4" } else { "-6" };
    let out = Command::new("ip")
        .args([family, "route", op, "blackhole"])
        .arg(addr.to_string())
        .output()
        .context("cannot run ip (iproute2)")?;
    anyhow::ensure!(
        out.status.success(),
        "ip route {op} blackhole {addr}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A backend that answers every HTTP request with `reply`.
async fn serve_http(listener: tokio::net::TcpListener, reply: String, stop: CancellationToken) {
    let app = axum::Router::new().fallback(move || {
        let r = reply.clone();
        async move { r }
    });
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
}

/// A backend that answers every datagram with `reply`.
async fn serve_udp(socket: tokio::net::UdpSocket, reply: String, stop: CancellationToken) {
    let mut buf = [0u8; 1500];
    loop {
        let peer = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((_, peer)) => peer,
                Err(_) => continue,
            },
            _ = stop.cancelled() => return,
        };
        let _ = socket.send_to(reply.as_bytes(), peer).await;
    }
}
