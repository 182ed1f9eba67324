//! Mesos-DNS's HTTP API (`/v1/version`, `/v1/config`, `/v1/hosts`, `/v1/services`,
//! `/v1/enumerate`, `/v1/axfr`) served from the published zone, plus `/metrics`.
//!
//! The JSON shapes are Mesos-DNS's own (`resolver.go`, `records/generator.go`, `models/`):
//! the same keys, key order, empty-result conventions and string-typed ports, so scripts and
//! dcos-net's `/v1/axfr` reader keep working. Where we had to choose:
//! - `/v1/version` keeps the key names but says `"Service":"Lodestar"` and Lodestar's version:
//!   a client that reads it learns what it talks to, and Mesos-DNS versions had no format anyway.
//! - `/v1/hosts` and `/v1/services` answer every name the DNS server answers (also
//!   `thisdcos.directory`); `/v1/enumerate` and `/v1/axfr` list the `mesos` zone only, as
//!   Mesos-DNS did, so a consumer that mirrors the zone gets no names it did not ask for.
//! - `/v1/axfr`'s `RefreshSeconds` (Mesos-DNS's state poll interval; we do not poll) is the
//!   SOA refresh. Values are in a canonical order where Mesos-DNS's were in map order.
//! - Responses are indented as go-restful indents them. Errors are `{"error": "..."}`.
//!
//! How it is served (`serve`, for every HTTP listener the agent has): HTTP/1.1 only, a cap on
//! connections (past it a new one is closed at once), a deadline for each request's headers
//! (which also ends idle keep-alive connections), and handlers that do blocking or long work
//! (`/metrics`, `/v1/enumerate`, `/v1/axfr`) off the async workers, which also serve DNS over
//! TCP and forwarding.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::config::ZoneConfig;
use crate::names::fqdn;
use crate::records::Rr;
use crate::zone::{records_of, Zone};

/// What `/v1/version` names as the service.
pub const SERVICE: &str = "Lodestar";
/// What `/v1/version` gives as the URL: the workspace's `repository` once the crate inherits it.
pub const URL: &str = if env!("CARGO_PKG_REPOSITORY").is_empty() {
    "https://example.invalid/lodestar"
} else {
    env!("CARGO_PKG_REPOSITORY")
};

const JSON: &str = "application/json";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the HTTP API reads: the published zone and what the agent gives it to show.
#[derive(Clone)]
pub struct HttpState {
    pub zone: Arc<ArcSwap<Zone>>,
    pub zone_config: ZoneConfig,
    /// Served as is by `/v1/config` (the caller maps our settings to Mesos-DNS's key names).
    pub config_json: Arc<serde_json::Value>,
    /// Renders the Prometheus text for `/metrics`; may block (it runs on a blocking thread).
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
    // Extra routes the agent adds (health, readiness) are merged by the caller.
}

/// The API's routes. Unknown paths get a 404, other methods a 405, both with a JSON error.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/v1/version", get(version))
        .route("/v1/config", get(config))
        .route("/v1/hosts/{host}", get(hosts))
        .route("/v1/hosts/{host}/ports", get(host_ports))
        .route("/v1/services/{service}", get(services))
        .route("/v1/enumerate", get(enumerate))
        .route("/v1/axfr", get(axfr))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn version() -> Response {
    // Mesos-DNS serialises a Go map, so its keys come out sorted; a struct keeps that order.
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Version {
        service: &'static str,
        #[serde(rename = "URL")]
        url: &'static str,
        version: &'static str,
    }
    json(
        StatusCode::OK,
        &Version {
            service: SERVICE,
            url: URL,
            version: env!("CARGO_PKG_VERSION"),
        },
    )
}

async fn config(State(state): State<HttpState>) -> Response {
    json(StatusCode::OK, &*state.config_json)
}

async fn hosts(State(state): State<HttpState>, NamePath(host): NamePath) -> Response {
    #[derive(Serialize, Default)]
    struct Host {
        host: String,
        ip: String,
    }
    let name = query_name(&host);
    let zone = state.zone.load();
    let mut out = Vec::new();
    if let Some(entry) = zone.lookup(&name) {
        let ips = entry.a.iter().map(ToString::to_string);
        for ip in ips.chain(entry.aaaa.iter().map(ToString::to_string)) {
            out.push(Host {
                host: name.clone(),
                ip,
            });
        }
    }
    if out.is_empty() {
        out.push(Host::default());
    }
    json(StatusCode::OK, &out)
}

async fn host_ports(_host: NamePath) -> Response {
    // Mesos-DNS routes it and answers 501 too.
    error(StatusCode::NOT_IMPLEMENTED, "not implemented")
}

async fn services(State(state): State<HttpState>, NamePath(service): NamePath) -> Response {
    #[derive(Serialize, Default)]
    struct Service {
        service: String,
        host: String,
        ip: String,
        port: String,
    }
    let zone = state.zone.load();
    let mut out = Vec::new();
    if let Some(entry) = zone.lookup(&query_name(&service)) {
        for (target, port) in &entry.srv {
            // One address of each family per target, as the DNS answer's additional section.
            let Some(t) = zone.lookup(target) else {
                continue;
            };
            let ips = t.a.first().map(ToString::to_string);
            for ip in ips
                .into_iter()
                .chain(t.aaaa.first().map(ToString::to_string))
            {
                out.push(Service {
                    service: service.clone(),
                    host: target.to_string(),
                    ip,
                    port: port.to_string(),
                });
            }
        }
    }
    if out.is_empty() {
        out.push(Service::default());
    }
    json(StatusCode::OK, &out)
}

// Field order is Mesos-DNS's struct order: tasks then name; name, id, records.
#[derive(Serialize)]
struct Enumeration<'a> {
    frameworks: Vec<EnumFramework<'a>>,
}

#[derive(Serialize)]
struct EnumFramework<'a> {
    tasks: Vec<EnumTask<'a>>,
    name: &'a str,
}

#[derive(Serialize)]
struct EnumTask<'a> {
    name: &'a str,
    id: &'a str,
    records: Vec<EnumRecord>,
}

#[derive(Serialize)]
struct EnumRecord {
    name: String,
    host: String,
    rtype: &'static str,
}

/// Enumerating a large zone is hundreds of milliseconds of CPU: off the async workers, which
/// also serve DNS over TCP and forwarding.
async fn enumerate(State(state): State<HttpState>) -> Response {
    blocking(move || enumerate_now(state)).await
}

async fn axfr(State(state): State<HttpState>) -> Response {
    blocking(move || axfr_now(state)).await
}

/// `f`'s response, computed on tokio's blocking threads: for handlers that take locks or
/// make system calls (reading BPF maps) or run long, so they never stall the async workers.
pub async fn blocking(f: impl FnOnce() -> Response + Send + 'static) -> Response {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(_) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({"error": "internal error"}),
        ),
    }
}

fn enumerate_now(state: HttpState) -> Response {
    let zone = state.zone.load_full();
    let domain = state.zone_config.fqdn_domain();
    let mut frameworks: Vec<EnumFramework<'_>> = Vec::new();
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    // Every framework, with or without tasks; tasks name their framework by name, so
    // frameworks that share a name share an entry.
    for fw in zone.snapshot.frameworks.values() {
        by_name.entry(&fw.name).or_insert_with(|| {
            frameworks.push(EnumFramework {
                tasks: Vec::new(),
                name: &fw.name,
            });
            frameworks.len() - 1
        });
    }
    for (id, task) in &zone.snapshot.tasks {
        // What the task contributes, made again from the snapshot (the zone keeps no copy).
        let all = records_of(&state.zone_config, &zone.snapshot, task);
        if all.is_empty() {
            continue;
        }
        let records = all
            .into_iter()
            .filter(|(owner, _)| zone_of(&zone, owner) == Some(domain.as_str()))
            .map(|(owner, rr)| EnumRecord {
                host: rr_value(&rr),
                rtype: rr.type_name(),
                name: owner,
            })
            .collect();
        let i = *by_name.entry(&task.framework).or_insert_with(|| {
            frameworks.push(EnumFramework {
                tasks: Vec::new(),
                name: &task.framework,
            });
            frameworks.len() - 1
        });
        frameworks[i].tasks.push(EnumTask {
            name: &task.name,
            id: &id.id,
            records,
        });
    }
    json(StatusCode::OK, &Enumeration { frameworks })
}

fn axfr_now(state: HttpState) -> Response {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Axfr {
        #[serde(rename = "TTL")]
        ttl: u32,
        serial: u32,
        refresh_seconds: u32,
        mname: String,
        rname: String,
        domain: String,
        records: AxfrRecords,
    }
    #[derive(Serialize, Default)]
    struct AxfrRecords {
        #[serde(rename = "As")]
        a: BTreeMap<String, Vec<String>>,
        #[serde(rename = "AAAAs")]
        aaaa: BTreeMap<String, Vec<String>>,
        #[serde(rename = "SRVs")]
        srv: BTreeMap<String, Vec<String>>,
    }
    let c = &state.zone_config;
    let zone = state.zone.load();
    let domain = c.fqdn_domain();
    let mut records = AxfrRecords::default();
    for e in zone.entries() {
        if zone_of(&zone, &e.name) != Some(domain.as_str()) {
            continue;
        }
        if !e.a.is_empty() {
            records.a.insert(
                e.name.to_string(),
                e.a.iter().map(ToString::to_string).collect(),
            );
        }
        if !e.aaaa.is_empty() {
            records.aaaa.insert(
                e.name.to_string(),
                e.aaaa.iter().map(ToString::to_string).collect(),
            );
        }
        if !e.srv.is_empty() {
            let values = e.srv.iter().map(|(t, p)| format!("{t}:{p}")).collect();
            records.srv.insert(e.name.to_string(), values);
        }
    }
    let body = Axfr {
        ttl: c.ttl,
        serial: zone.serial,
        refresh_seconds: c.soa_refresh,
        mname: fqdn(&c.ns_name),
        rname: fqdn(&c.soa_rname),
        domain: domain.trim_end_matches('.').to_string(),
        records,
    };
    json(StatusCode::OK, &body)
}

async fn metrics(State(state): State<HttpState>) -> Response {
    blocking(move || {
        let text = (state.metrics)();
        ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response()
    })
    .await
}

/// Limits of an HTTP listener.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// Connections at once; past it a new connection is closed at once.
    pub max_connections: usize,
    /// A request's headers must arrive within this; an idle keep-alive connection is closed
    /// after it too (slowloris holds no slot for longer).
    pub header_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 256,
            header_timeout: Duration::from_secs(5),
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes, then lets each
/// open connection finish the request it is serving and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let label = listener
        .local_addr()
        .map_or_else(|_| "unknown".to_owned(), |a| a.to_string());
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    // Dropped at shutdown, which every connection sees as its signal to finish.
    let (draining, drain) = tokio::sync::watch::channel(());
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: wait a little rather than spin.
                warn!(listener = %label, "HTTP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics::counter!(crate::metrics::HTTP_REFUSED_TOTAL, "listener" => label.clone())
                .increment(1);
            debug!(listener = %label, %peer, "too many HTTP connections; closing");
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let mut drain = drain.clone();
        let (label, header_timeout) = (label.clone(), limits.header_timeout);
        connections.spawn(async move {
            let _slot = slot;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let connection = http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = drain.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            match result {
                Err(e) if e.is_timeout() => {
                    metrics::counter!(crate::metrics::HTTP_HEADER_TIMEOUTS_TOTAL, "listener" => label)
                        .increment(1);
                    debug!(%peer, "HTTP headers too slow; closed");
                }
                Err(e) => debug!(%peer, "HTTP connection ended: {e}"),
                Ok(()) => {}
            }
        });
    }
    drop(draining);
    while connections.join_next().await.is_some() {}
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not found")
}

async fn method_not_allowed() -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

/// A path parameter as Mesos-DNS normalises it: wildcards (`.*`) removed (Mesos-DNS's
/// `cleanWild`), lowercase, with a trailing dot.
fn query_name(param: &str) -> String {
    let mut name = param.replace(".*", "").to_lowercase();
    if !name.ends_with('.') {
        name.push('.');
    }
    name
}

/// The apex of the most specific of our zones that holds `name`, if any.
fn zone_of<'z>(zone: &'z Zone, name: &str) -> Option<&'z str> {
    zone.apexes
        .iter()
        .map(|a| a.name.as_str())
        .filter(|apex| is_under(name, apex))
        .max_by_key(|apex| apex.len())
}

/// Whether `name` is `apex` or below it (both lowercase FQDNs with trailing dots).
fn is_under(name: &str, apex: &str) -> bool {
    match name.strip_suffix(apex) {
        Some("") => true,
        Some(head) => head.ends_with('.') || apex == ".",
        None => false,
    }
}

/// A record's value as Mesos-DNS writes it: the address, or `target:port` for SRV.
fn rr_value(rr: &Rr) -> String {
    match rr {
        Rr::A(ip) => ip.to_string(),
        Rr::Aaaa(ip) => ip.to_string(),
        Rr::Srv { target, port } => format!("{target}:{port}"),
    }
}

/// A name from the path (`/v1/hosts/{host}`), or the JSON error for a path that does not
/// decode.
struct NamePath(String);

impl<S: Send + Sync> FromRequestParts<S> for NamePath {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(name)) => Ok(NamePath(name)),
            Err(e) => Err(bad_path(&e)),
        }
    }
}

fn bad_path(rejection: &PathRejection) -> Response {
    let status = rejection.status();
    if status.is_client_error() {
        // The rejection's own text quotes the parameter, which may be any size.
        error(status, "the path is not valid UTF-8 once percent-decoded")
    } else {
        error(status, "internal error")
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": message }))
}

/// `value` as indented JSON (go-restful indents Mesos-DNS's responses by one space).
fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    let mut body = Vec::with_capacity(512);
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut ser = serde_json::Serializer::with_formatter(&mut body, formatter);
    match value.serialize(&mut ser) {
        Ok(()) => (status, [(header::CONTENT_TYPE, JSON)], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not serialise an HTTP API response");
            let body = r#"{"error":"internal error"}"#;
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, JSON)],
                body,
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;

    use lodestar_control::file::{CatalogDocument, Format};
    use lodestar_control::{demo, Source};
    use serde_json::{json, Value};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use crate::zone::ZoneBuilder;

    /// The demo catalog plus a framework without tasks and a task with an IPv6 address.
    const EXTRA: &str = r#"
[[frameworks]]
id = "20261121-000000-0001-0000-0001"
name = "Chronos"

[[tasks]]
id = "api.0d0d0d0d-5555-11ef-9c9a-0242ac110002"
name = "api"
framework = "marathon"
agent = "20261121-000000-0001-0000-S1"
ips = [{ ip = "198.18.1.110", source = "netinfo" }, { ip = "2001:db8::110", source = "netinfo" }]
[tasks.discovery]
name = "api"
[[tasks.discovery.ports]]
number = 9000
name = "grpc"
protocol = "tcp"
"#;

    fn state() -> HttpState {
        let text = format!("{}\n{EXTRA}", demo::DEMO_CATALOG);
        let snap = CatalogDocument::parse(&text, Format::Toml, "test catalog")
            .unwrap()
            .into_state()
            .snapshot(7, Source::Demo);
        let zone = ZoneBuilder::new(ZoneConfig::default(), vec!["127.0.0.1".parse().unwrap()])
            .unwrap()
            .update(&Arc::new(snap));
        HttpState {
            zone: Arc::new(ArcSwap::from_pointee(zone)),
            zone_config: ZoneConfig::default(),
            config_json: Arc::new(json!({"Domain": "mesos", "TTL": 60})),
            metrics: Arc::new(|| "lodestar_test_total 1\n".to_string()),
        }
    }

    async fn serve(state: HttpState) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(state)).await });
        addr
    }

    struct Reply {
        status: u16,
        head: String,
        body: String,
    }

    impl Reply {
        fn json(&self) -> Value {
            serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
        }

        fn content_type(&self) -> &str {
            self.head
                .lines()
                .find_map(|l| l.strip_prefix("content-type: "))
                .unwrap_or("")
        }
    }

    /// A minimal HTTP/1.0 client: one request, the response read to the end.
    async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
        let exchange = async {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let req = format!("{method} {path} HTTP/1.0\r\nHost: test\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.unwrap();
            String::from_utf8(buf).unwrap()
        };
        let text = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .expect("the server answers");
        let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        Reply {
            status,
            head: head.to_ascii_lowercase(),
            body: body.to_string(),
        }
    }

    async fn get_ok(addr: SocketAddr, path: &str) -> Value {
        let r = request(addr, "GET", path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(r.content_type(), JSON, "{path}");
        r.json()
    }

    #[tokio::test]
    async fn version_and_config() {
        let addr = serve(state()).await;
        let r = request(addr, "GET", "/v1/version").await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.json(),
            json!({"Service": "Lodestar", "URL": URL, "Version": env!("CARGO_PKG_VERSION")})
        );
        let (s, u, v) = (
            r.body.find("Service"),
            r.body.find("URL"),
            r.body.find("Version"),
        );
        assert!(s < u && u < v, "Mesos-DNS's key order: {}", r.body);
        assert_eq!(
            get_ok(addr, "/v1/config").await,
            json!({"Domain": "mesos", "TTL": 60})
        );
    }

    #[tokio::test]
    async fn hosts() {
        let addr = serve(state()).await;
        assert_eq!(
            get_ok(addr, "/v1/hosts/web.marathon.mesos").await,
            json!([
                {"host": "web.marathon.mesos.", "ip": "127.0.1.101"},
                {"host": "web.marathon.mesos.", "ip": "127.0.2.101"},
            ])
        );
        // Case, a trailing dot and wildcards do not matter; A before AAAA.
        let api = json!([
            {"host": "api.marathon.mesos.", "ip": "198.18.1.110"},
            {"host": "api.marathon.mesos.", "ip": "2001:db8::110"},
        ]);
        for path in [
            "/v1/hosts/API.Marathon.MESOS.",
            "/v1/hosts/api.*.marathon.mesos",
            "/v1/hosts/api.marathon.mesos.*",
            "/v1/hosts/api%2Emarathon.mesos",
        ] {
            assert_eq!(get_ok(addr, path).await, api, "{path}");
        }
        assert_eq!(
            get_ok(addr, "/v1/hosts/web.marathon.l4lb.thisdcos.directory").await,
            json!([{"host": "web.marathon.l4lb.thisdcos.directory.", "ip": "198.19.0.10"}])
        );
        let empty = json!([{"host": "", "ip": ""}]);
        for path in [
            "/v1/hosts/nothing.marathon.mesos",
            "/v1/hosts/.*",
            "/v1/hosts/%20",
            "/v1/hosts/..",
        ] {
            assert_eq!(get_ok(addr, path).await, empty, "{path}");
        }
        let r = request(addr, "GET", "/v1/hosts/web.marathon.mesos/ports").await;
        assert_eq!(r.status, 501);
    }

    #[tokio::test]
    async fn services() {
        let addr = serve(state()).await;
        let v = get_ok(addr, "/v1/services/_web._tcp.marathon.mesos").await;
        let rows = v.as_array().unwrap();
        assert_eq!(rows.len(), 2, "{v}");
        let mut ips = Vec::new();
        for row in rows {
            assert_eq!(
                row["service"], "_web._tcp.marathon.mesos",
                "the raw parameter"
            );
            assert_eq!(row["port"], "8080", "a string");
            let host = row["host"].as_str().unwrap();
            assert!(
                host.starts_with("web-") && host.ends_with(".marathon.mesos."),
                "{host}"
            );
            ips.push(row["ip"].as_str().unwrap().to_string());
        }
        ips.sort();
        assert_eq!(ips, ["127.0.1.101", "127.0.2.101"]);

        // One A and one AAAA of the target; the service echoed as given.
        let v = get_ok(addr, "/v1/services/_API._tcp.Marathon.mesos.").await;
        let rows = v.as_array().unwrap();
        assert_eq!(rows.len(), 2, "{v}");
        assert_eq!(rows[0]["service"], "_API._tcp.Marathon.mesos.");
        assert_eq!(rows[0]["host"], rows[1]["host"]);
        assert_eq!(
            (&rows[0]["ip"], &rows[1]["ip"]),
            (&json!("198.18.1.110"), &json!("2001:db8::110"))
        );
        assert_eq!(rows[1]["port"], "9000");

        let empty = json!([{"service": "", "host": "", "ip": "", "port": ""}]);
        assert_eq!(
            get_ok(addr, "/v1/services/_nothing._tcp.marathon.mesos").await,
            empty
        );
        // A name with addresses but no SRV records.
        assert_eq!(get_ok(addr, "/v1/services/web.marathon.mesos").await, empty);
    }

    #[tokio::test]
    async fn enumerate_lists_every_framework() {
        let addr = serve(state()).await;
        let r = request(addr, "GET", "/v1/enumerate").await;
        assert_eq!(r.status, 200);
        let v = r.json();
        let fws = v["frameworks"].as_array().unwrap();
        let names: Vec<&str> = fws.iter().map(|f| f["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["marathon", "Chronos"]);
        assert_eq!(
            fws[1]["tasks"],
            json!([]),
            "a framework without tasks is listed"
        );
        let tasks = fws[0]["tasks"].as_array().unwrap();
        let ids: Vec<&str> = tasks.iter().map(|t| t["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 4, "running tasks only: {ids:?}");
        assert!(!ids.iter().any(|id| id.starts_with("batch.")), "{ids:?}");
        let api = tasks.iter().find(|t| t["name"] == "api").unwrap();
        let records = api["records"].as_array().unwrap();
        let has = |name: &str, host: &str, rtype: &str| {
            records
                .iter()
                .any(|r| r == &json!({"name": name, "host": host, "rtype": rtype}))
        };
        assert!(
            has("api.marathon.mesos.", "198.18.1.110", "A"),
            "{records:?}"
        );
        assert!(
            has("api.marathon.mesos.", "2001:db8::110", "AAAA"),
            "{records:?}"
        );
        assert!(
            has("api.marathon.slave.mesos.", "127.0.1.1", "A"),
            "{records:?}"
        );
        assert!(records.iter().any(|r| r["rtype"] == "SRV"
            && r["name"] == "_api._tcp.marathon.mesos."
            && r["host"]
                .as_str()
                .unwrap()
                .ends_with(".marathon.mesos.:9000")));
        assert!(!r.body.contains("thisdcos"), "the mesos zone only");
        // Mesos-DNS's field order.
        let t = r.body.find("\"tasks\"").unwrap();
        let (n, i, rec) = (
            r.body[t..].find("\"name\""),
            r.body[t..].find("\"id\""),
            r.body[t..].find("\"records\""),
        );
        assert!(n < i && i < rec, "{}", r.body);
        let last_fw = &r.body[r.body.rfind("\"tasks\"").unwrap()..];
        assert!(
            last_fw.contains("\"name\": \"Chronos\""),
            "tasks before name"
        );
    }

    #[tokio::test]
    async fn axfr_shape() {
        let addr = serve(state()).await;
        let r = request(addr, "GET", "/v1/axfr").await;
        assert_eq!(r.status, 200);
        let v = r.json();
        assert_eq!(v["TTL"], 60);
        assert_eq!(v["Serial"], 7);
        assert_eq!(v["RefreshSeconds"], 60);
        assert_eq!(v["Mname"], "ns1.mesos.");
        assert_eq!(v["Rname"], "root.ns1.mesos.");
        assert_eq!(v["Domain"], "mesos");
        let keys = [
            "TTL",
            "Serial",
            "RefreshSeconds",
            "Mname",
            "Rname",
            "Domain",
            "Records",
            "As",
            "AAAAs",
            "SRVs",
        ];
        let at: Vec<usize> = keys
            .iter()
            .map(|k| r.body.find(&format!("\"{k}\"")).unwrap())
            .collect();
        assert!(
            at.windows(2).all(|w| w[0] < w[1]),
            "Mesos-DNS's key order: {}",
            r.body
        );
        let rec = &v["Records"];
        assert_eq!(
            rec["As"]["web.marathon.mesos."],
            json!(["127.0.1.101", "127.0.2.101"])
        );
        assert_eq!(rec["As"]["ns1.mesos."], json!(["127.0.0.1"]));
        assert_eq!(
            rec["AAAAs"]["api.marathon.mesos."],
            json!(["2001:db8::110"])
        );
        let web = rec["SRVs"]["_web._tcp.marathon.mesos."].as_array().unwrap();
        assert_eq!(web.len(), 2);
        assert!(
            web.iter()
                .all(|s| s.as_str().unwrap().ends_with(".marathon.mesos.:8080")),
            "{web:?}"
        );
        assert_eq!(
            rec["SRVs"]["_leader._tcp.mesos."],
            json!(["leader.mesos.:5050"])
        );
        assert!(!r.body.contains("thisdcos"), "the mesos zone only");
    }

    #[tokio::test]
    async fn metrics_text() {
        let addr = serve(state()).await;
        let r = request(addr, "GET", "/metrics").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type(), PROMETHEUS_TEXT);
        assert_eq!(r.body, "lodestar_test_total 1\n");
    }

    #[tokio::test]
    async fn unknown_paths_and_hostile_parameters() {
        let addr = serve(state()).await;
        for path in [
            "/",
            "/nope",
            "/v1",
            "/v1/hosts",
            "/v1/hosts/",
            "/v1/services/a/b",
            "/v1/hosts/a/b/c",
        ] {
            let r = request(addr, "GET", path).await;
            assert_eq!(r.status, 404, "{path}");
            assert_eq!(r.content_type(), JSON);
            assert_eq!(r.json(), json!({"error": "not found"}));
        }
        let r = request(addr, "POST", "/v1/version").await;
        assert_eq!(r.status, 405);
        assert_eq!(r.json(), json!({"error": "method not allowed"}));

        for path in [
            "/v1/hosts/%ff",
            "/v1/services/a%c3%28.mesos",
            "/v1/hosts/%ff/ports",
        ] {
            let r = request(addr, "GET", path).await;
            assert_eq!(r.status, 400, "{path}: {}", r.body);
            assert!(r.json()["error"].is_string());
        }
        // Broken escapes are left as they are, and find nothing.
        assert_eq!(
            get_ok(addr, "/v1/hosts/%zz%").await,
            json!([{"host": "", "ip": ""}])
        );

        let long = "a".repeat(10 * 1024);
        assert_eq!(
            get_ok(addr, &format!("/v1/hosts/{long}.mesos")).await,
            json!([{"host": "", "ip": ""}])
        );
        let labels = ["x"; 3000].join(".");
        assert_eq!(
            get_ok(addr, &format!("/v1/services/{labels}")).await,
            json!([{"service": "", "host": "", "ip": "", "port": ""}])
        );
        let wild = ".*".repeat(4000);
        assert_eq!(
            get_ok(addr, &format!("/v1/hosts/{wild}")).await,
            json!([{"host": "", "ip": ""}])
        );
        // The server is still up.
        assert_eq!(get_ok(addr, "/v1/version").await["Service"], SERVICE);
    }

    #[test]
    fn names() {
        assert_eq!(query_name("A.*.B"), "a.b.");
        assert_eq!(query_name("a.b."), "a.b.");
        assert_eq!(query_name(""), ".");
        assert!(is_under("a.mesos.", "mesos."));
        assert!(is_under("mesos.", "mesos."));
        assert!(!is_under("amesos.", "mesos."));
        assert!(is_under("a.", "."));
    }
}
