//! dcos-net's HTTP API (`apps/dcos_rest`, port 62080 in DC/OS), read-only: `/v1/version`,
//! `/v1/config` and `/v1/enumerate` (501, as dcos-net), `/v1/hosts/{host}`,
//! `/v1/services/{service}`, `/v1/records`, `/v1/vips` and `/v1/metrics[/{registry}]`, with
//! dcos-net's JSON shapes (compact, keys in jsx's order, numeric ports, `[]` when empty) and
//! status codes (GET only, else 405; 406 when `Accept` refuses the type; 404 elsewhere). No
//! `/lashup` endpoints: there is no lashup, and its POST evaluates Erlang sent by the client.
//!
//! Hosts and services are asked of our authoritative sources as DNS questions, so they answer
//! exactly what the DNS server answers itself (never forwarded). `/v1/records` lists the
//! records of the zones dcos-net holds itself (not `mesos`, which it forwards to Mesos-DNS),
//! streamed from a blocking thread: at 100,000 tasks it is tens of megabytes.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RData, Record};
use lodestar_control::model::{TaskState, VipName};
use serde::Serialize;
use sha1::{Digest, Sha1};

use crate::catalog::Catalog;
use crate::names::LabelSpec;
use crate::records::{Rr, THISDCOS};
use crate::wire;
use crate::zone::Zone;

const JSON: &str = "application/json";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `/v1/records` is sent in pieces of about this size.
const CHUNK: usize = 64 * 1024;

/// A source whose records `/v1/records` lists.
pub trait RecordSet: Send + Sync {
    /// Calls `f` with every (owner, record): owners lowercase FQDNs with a trailing dot.
    fn for_each_record(&self, f: &mut dyn FnMut(&str, &Rr));
}

/// The `thisdcos.directory` names the zone itself holds (`dcos.` and `l4lb.`).
pub struct ThisdcosRecords(pub Arc<ArcSwap<Zone>>);

impl RecordSet for ThisdcosRecords {
    fn for_each_record(&self, f: &mut dyn FnMut(&str, &Rr)) {
        let zone = self.0.load_full();
        for e in zone.entries().filter(|e| e.name.ends_with(THISDCOS)) {
            for rr in e.records() {
                f(&e.name, &rr);
            }
        }
    }
}

/// What the API reads.
#[derive(Clone)]
pub struct DcosApiState {
    /// Every authoritative source; a forwarder in it is never asked.
    pub catalog: Catalog,
    /// What `/v1/records` lists, in order.
    pub records: Vec<Arc<dyn RecordSet>>,
    /// The published zone, for its snapshot's VIPs.
    pub zone: Arc<ArcSwap<Zone>>,
    /// How VIP and framework names become labels (the zone's rules).
    pub labels: LabelSpec,
    /// Renders the Prometheus text for `/v1/metrics`.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
}

pub fn router(state: DcosApiState) -> Router {
    Router::new()
        .route("/v1/version", get(version))
        .route("/v1/config", get(not_implemented))
        .route("/v1/enumerate", get(not_implemented))
        .route("/v1/hosts/{host}", get(hosts))
        .route("/v1/services/{service}", get(services))
        .route("/v1/records", get(records))
        .route("/v1/vips", get(vips))
        .route("/v1/metrics", get(metrics))
        .route("/v1/metrics/{registry}", get(metrics_of))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .method_not_allowed_fallback(|| async {
            (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "GET")])
        })
        .with_state(state)
}

/// Whether an `Accept` header (absent: anything) takes `kind/sub`, as cowboy_rest negotiates
/// it: a matching media range, `kind/*` or `*/*`, without `q=0`.
fn accepts(headers: &HeaderMap, kind: &str, sub: &str) -> bool {
    let mut values = headers.get_all(header::ACCEPT).iter().peekable();
    if values.peek().is_none() {
        return true;
    }
    values
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            let Some((k, s)) = media.split_once('/') else {
                return false;
            };
            !refused && (k == "*" || (k == kind && (s == "*" || s == sub)))
        })
}

fn json_body(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, JSON)], body).into_response()
}

/// Compact JSON, as jsx writes it; 406 if the client does not take JSON.
fn json<T: Serialize + ?Sized>(headers: &HeaderMap, value: &T) -> Response {
    if !accepts(headers, "application", "json") {
        return StatusCode::NOT_ACCEPTABLE.into_response();
    }
    match serde_json::to_vec(value) {
        Ok(body) => json_body(StatusCode::OK, body),
        Err(e) => {
            tracing::error!(error = %e, "could not serialise a dcos-net API response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn version(headers: HeaderMap) -> Response {
    // dcos-net says `dcos-dns` and its application's version; this says what answers instead,
    // as our Mesos-DNS `/v1/version` does (docs/dns.md).
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Version {
        service: &'static str,
        version: &'static str,
    }
    let v = Version {
        service: crate::http::SERVICE,
        version: env!("CARGO_PKG_VERSION"),
    };
    json(&headers, &v)
}

/// dcos-net routes `/v1/config` and `/v1/enumerate` and answers 501 with nothing.
async fn not_implemented(headers: HeaderMap) -> Response {
    if !accepts(&headers, "application", "json") {
        return StatusCode::NOT_ACCEPTABLE.into_response();
    }
    StatusCode::NOT_IMPLEMENTED.into_response()
}

/// A name as dcos-net writes it: lowercase, without the trailing dot.
fn plain(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// The answer of our own sources to `name` (a path parameter) and `qtype`.
fn ask(state: &DcosApiState, name: &str, qtype: u16) -> Option<Message> {
    let wire = wire::name_to_wire(name.trim())?;
    let out = state
        .catalog
        .answer_locally(&wire, qtype, wire::CLASS_IN, 0, 0)
        .ok()?;
    Message::from_vec(&out).ok()
}

/// What `row` makes of each record that `name` answers `qtype` with (none when it has none).
fn answer_rows<T>(
    state: &DcosApiState,
    name: &str,
    qtype: u16,
    row: impl FnMut(&Record) -> Option<T>,
) -> Vec<T> {
    ask(state, name, qtype)
        .map(|m| m.answers.iter().filter_map(row).collect())
        .unwrap_or_default()
}

/// The A records `name` answers with: `[{"host": owner, "ip": address}]`.
async fn hosts(
    State(state): State<DcosApiState>,
    headers: HeaderMap,
    Path(host): Path<String>,
) -> Response {
    #[derive(Serialize)]
    struct Host {
        host: String,
        ip: String,
    }
    let out = answer_rows(&state, &host, wire::TYPE_A, |r| match &r.data {
        RData::A(a) => Some(Host {
            host: plain(&r.name),
            ip: a.0.to_string(),
        }),
        _ => None,
    });
    json(&headers, &out)
}

/// The first A record of `name`, if it has one.
fn first_a(state: &DcosApiState, name: &str) -> Option<String> {
    let ips = answer_rows(state, name, wire::TYPE_A, |r| match &r.data {
        RData::A(a) => Some(a.0.to_string()),
        _ => None,
    });
    ips.into_iter().next()
}

/// The SRV records `service` answers with, each with its target's first A record when it has
/// one: `[{"host", "ip", "port", "service"}]`.
async fn services(
    State(state): State<DcosApiState>,
    headers: HeaderMap,
    Path(service): Path<String>,
) -> Response {
    // jsx writes map keys in order; `ip` is left out when the target has no A record.
    #[derive(Serialize)]
    struct Service {
        host: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        ip: Option<String>,
        port: u16,
        service: String,
    }
    let out = answer_rows(&state, &service, wire::TYPE_SRV, |r| match &r.data {
        RData::SRV(srv) => Some(Service {
            host: plain(&srv.target),
            ip: first_a(&state, &srv.target.to_ascii()),
            port: srv.port,
            service: plain(&r.name),
        }),
        _ => None,
    });
    json(&headers, &out)
}

/// One element of `/v1/records`, keys in jsx's order.
#[derive(Serialize)]
struct RecordRow<'a> {
    host: String,
    name: &'a str,
    rtype: &'static str,
}

/// Every A, AAAA and SRV record of dcos-net's zones: `[` + rows joined by `,\n` + `]`.
async fn records(State(state): State<DcosApiState>, headers: HeaderMap) -> Response {
    if !accepts(&headers, "application", "json") {
        return StatusCode::NOT_ACCEPTABLE.into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, Infallible>>(4);
    tokio::task::spawn_blocking(move || {
        let mut chunk = Vec::with_capacity(CHUNK + 512);
        chunk.push(b'[');
        let mut first = true;
        // A send fails only when the client has gone: then stop.
        let mut open = true;
        for set in &state.records {
            set.for_each_record(&mut |owner, rr| {
                if !open {
                    return;
                }
                let row = RecordRow {
                    host: match rr {
                        Rr::A(ip) => ip.to_string(),
                        Rr::Aaaa(ip) => ip.to_string(),
                        Rr::Srv { target, port } => {
                            format!("{}:{port}", target.trim_end_matches('.'))
                        }
                    },
                    name: owner.trim_end_matches('.'),
                    rtype: rr.type_name(),
                };
                if !first {
                    chunk.extend_from_slice(b",\n");
                }
                first = false;
                if serde_json::to_writer(&mut chunk, &row).is_err() {
                    return;
                }
                if chunk.len() >= CHUNK {
                    open = tx.blocking_send(Ok(std::mem::take(&mut chunk))).is_ok();
                }
            });
        }
        chunk.push(b']');
        let _ = tx.blocking_send(Ok(chunk));
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    (StatusCode::OK, [(header::CONTENT_TYPE, JSON)], body).into_response()
}

/// One VIP as dcos-net lists it (keys in jsx's order).
#[derive(Serialize)]
struct VipRow {
    backend: Vec<BackendRow>,
    protocol: &'static str,
    vip: String,
}

#[derive(Serialize)]
struct BackendRow {
    ip: IpAddr,
    port: u16,
}

/// Every VIP with its running backends, a named VIP once per framework of its backends and by
/// its `l4lb` name (dcos-net keys named VIPs by name and framework); with an `ETag` that
/// changes when the list does, and 304 for a client that already has it.
async fn vips(State(state): State<DcosApiState>, headers: HeaderMap) -> Response {
    let zone = state.zone.load_full();
    let snapshot = &zone.snapshot;
    let mut rows = Vec::new();
    for vip in snapshot.vips() {
        let running: Vec<_> = vip
            .backends
            .iter()
            .filter(|b| b.state == TaskState::Running)
            .collect();
        let protocol = match vip.key.protocol {
            lodestar_control::model::Protocol::Tcp => "tcp",
            lodestar_control::model::Protocol::Udp => "udp",
        };
        // Each backend by its first address of each family the VIP is served in.
        let rows_of = |backends: &[&lodestar_control::Backend], families: &[bool]| {
            let mut out = Vec::new();
            for b in backends {
                for v4 in families {
                    if let Some(ip) = b.ips.iter().find(|ip| ip.is_ipv4() == *v4) {
                        out.push(BackendRow {
                            ip: *ip,
                            port: b.port,
                        });
                    }
                }
            }
            out
        };
        match &vip.key.name {
            VipName::Ip(ip) => rows.push(VipRow {
                backend: rows_of(&running, &[ip.is_ipv4()]),
                protocol,
                // inet:ntoa: no brackets around an IPv6 address.
                vip: format!("{ip}:{}", vip.key.port),
            }),
            VipName::Named(name) => {
                let mut frameworks: Vec<&str> = running
                    .iter()
                    .filter_map(|b| snapshot.tasks.get(&task_key(b)))
                    .map(|t| t.framework.as_str())
                    .collect();
                frameworks.sort_unstable();
                frameworks.dedup();
                for fw in frameworks {
                    let of_fw: Vec<_> = running
                        .iter()
                        .copied()
                        .filter(|b| {
                            snapshot
                                .tasks
                                .get(&task_key(b))
                                .is_some_and(|t| t.framework == fw)
                        })
                        .collect();
                    rows.push(VipRow {
                        backend: rows_of(&of_fw, &[true, false]),
                        protocol,
                        vip: format!(
                            "{}.{}.l4lb.thisdcos.directory:{}",
                            state.labels.domain_frag(name),
                            state.labels.domain_frag(fw),
                            vip.key.port
                        ),
                    });
                }
            }
        }
    }
    let body = match serde_json::to_vec(&rows) {
        Ok(b) => b,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let tag = format!("\"{}\"", hex(&Sha1::digest(&body)));
    let etag = HeaderValue::from_str(&tag).expect("hex in quotes is a header value");
    if headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == tag || t.trim() == "*")
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    if !accepts(&headers, "application", "json") {
        return StatusCode::NOT_ACCEPTABLE.into_response();
    }
    let mut response = json_body(StatusCode::OK, body);
    response.headers_mut().insert(header::ETAG, etag);
    response
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn metrics(State(state): State<DcosApiState>, headers: HeaderMap) -> Response {
    metrics_text(&state, &headers)
}

/// dcos-net's registries (`dns`, `l4lb`, ...) hold its own metrics; ours are one set, which
/// is its `default` registry here.
async fn metrics_of(
    State(state): State<DcosApiState>,
    headers: HeaderMap,
    Path(registry): Path<String>,
) -> Response {
    if registry != "default" {
        return (StatusCode::NOT_FOUND, "Unknown Registry").into_response();
    }
    metrics_text(&state, &headers)
}

fn metrics_text(state: &DcosApiState, headers: &HeaderMap) -> Response {
    if !accepts(headers, "text", "plain") {
        return StatusCode::NOT_ACCEPTABLE.into_response();
    }
    let text = (state.metrics)();
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response()
}

/// The catalog key of a VIP backend's task.
fn task_key(b: &lodestar_control::Backend) -> lodestar_control::model::TaskKey {
    lodestar_control::model::TaskKey::new(b.framework_id.clone(), b.task.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(accept: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for a in accept {
            h.append(header::ACCEPT, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn accept_negotiation() {
        assert!(accepts(&headers(&[]), "application", "json"));
        for yes in [
            "application/json",
            "*/*",
            "text/html, application/*;q=0.5",
            "Application/JSON; charset=utf-8",
        ] {
            assert!(accepts(&headers(&[yes]), "application", "json"), "{yes}");
        }
        for no in [
            "text/plain",
            "application/json;q=0",
            "application/xml",
            "",
            "*",
        ] {
            assert!(!accepts(&headers(&[no]), "application", "json"), "{no}");
        }
        assert!(accepts(&headers(&["text/html", "text/*"]), "text", "plain"));
    }
}
