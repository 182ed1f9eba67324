//! A fake Mesos master with the v1 operator API, written from apache/mesos'
//! `docs/operator-http-api.md` and `docs/recordio.md` (no Mesos runs here): `POST /api/v1`
//! `SUBSCRIBE` answers a chunked RecordIO stream of JSON events (SUBSCRIBED with `get_state`,
//! a HEARTBEAT right after it and then every interval, then TASK_ADDED, TASK_UPDATED in
//! master.proto's shape, AGENT_ADDED/REMOVED, FRAMEWORK_ADDED/REMOVED), and `GET /master/state`
//! answers the same cluster in the v0 shape. One model drives both; the test drives the model.
//! It can also lead elsewhere (307 with a protocol-relative `Location`, as the master does),
//! know no leader (503), go silent, cut a record in half, or send garbage. Loopback only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// A task in the model.
#[derive(Clone, Debug)]
pub struct ModelTask {
    pub framework: String,
    pub id: String,
    pub name: String,
    pub agent: String,
    pub state: String,
    pub ip: String,
    pub healthy: Option<bool>,
}

#[derive(Clone, Debug)]
pub struct ModelAgent {
    pub id: String,
    pub ip: String,
    pub site: String,
}

#[derive(Default)]
struct Model {
    agents: Vec<ModelAgent>,
    frameworks: Vec<(String, String)>,
    tasks: Vec<ModelTask>,
}

/// How this master answers.
#[derive(Clone, Debug)]
pub enum Role {
    Leader,
    /// Not the leader: 307 to this `host:port`.
    Follower(String),
    /// 503 "No leader elected".
    NoLeader,
}

struct Inner {
    model: Model,
    /// Bytes of events and states this master has serialised (its load).
    bytes_out: u64,
    role: Role,
    subscribers: Vec<mpsc::UnboundedSender<Bytes>>,
    /// No heartbeats (the connection stays open).
    silent: bool,
    /// The `Authorization` header required, if any (401 otherwise, as the master's
    /// authenticator answers).
    auth: Option<String>,
}

/// Whether a request carries the credentials `inner` requires.
fn authorized(inner: &Inner, headers: &HeaderMap) -> bool {
    inner.auth.as_deref().is_none_or(|want| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            == Some(want)
    })
}

pub struct OperatorMaster {
    pub addr: SocketAddr,
    scheme: &'static str,
    inner: Arc<Mutex<Inner>>,
    /// SUBSCRIBE calls answered with a stream.
    pub subscriptions: Arc<AtomicU64>,
    /// `GET /master/state` calls.
    pub state_reads: Arc<AtomicU64>,
    server: tokio::task::JoinHandle<()>,
    heartbeats: tokio::task::JoinHandle<()>,
}

type Shared = (Arc<Mutex<Inner>>, Arc<AtomicU64>, Arc<AtomicU64>, f64);

fn record(event: &Value) -> Bytes {
    let body = event.to_string();
    Bytes::from(format!("{}\n{body}", body.len()))
}

fn v1_agent(a: &ModelAgent) -> Value {
    json!({
        "agent_info": {
            "hostname": a.ip, "port": 5051, "id": {"value": a.id},
            "attributes": [{"name": "site", "type": "TEXT", "text": {"value": a.site}}],
            "resources": [{"name": "ports", "type": "RANGES",
                           "ranges": {"range": [{"begin": 31000, "end": 32000}]}}]
        },
        "active": true, "version": "1.11.0",
        "pid": format!("slave(1)@{}:5051", a.ip),
        "registered_time": {"nanoseconds": 1_600_000_000_000_000_000u64}
    })
}

fn v1_framework(id: &str, name: &str) -> Value {
    json!({
        "framework_info": {"user": "root", "name": name, "id": {"value": id},
                           "hostname": "198.18.0.2", "failover_timeout": 604800.0,
                           "capabilities": [{"type": "PARTITION_AWARE"}]},
        "active": true, "connected": true, "recovered": false
    })
}

fn status(t: &ModelTask, v1: bool) -> Value {
    let network =
        json!({"network_infos": [{"ip_addresses": [{"protocol": "IPv4", "ip_address": t.ip}]}]});
    let mut s = json!({
        "state": t.state, "timestamp": 1_600_000_000.5, "source": "SOURCE_EXECUTOR",
        "container_status": network,
    });
    if let Some(h) = t.healthy {
        s["healthy"] = json!(h);
    }
    if v1 {
        s["task_id"] = json!({"value": t.id});
        s["agent_id"] = json!({"value": t.agent});
        s["uuid"] = json!("5vx6i1n4SE6OIYFSUa3DKg==");
    }
    s
}

fn discovery(t: &ModelTask) -> Value {
    json!({"visibility": "FRAMEWORK", "name": t.name,
           "ports": {"ports": [{"number": 31000, "name": "http", "protocol": "tcp"}]}})
}

fn v1_task(t: &ModelTask) -> Value {
    let mut task = json!({
        "name": t.name, "task_id": {"value": t.id}, "framework_id": {"value": t.framework},
        "agent_id": {"value": t.agent}, "state": t.state,
        "resources": [{"name": "ports", "type": "RANGES",
                       "ranges": {"range": [{"begin": 31000, "end": 31000}]}}],
        "discovery": discovery(t),
    });
    if t.state != "TASK_STAGING" {
        task["statuses"] = json!([status(t, true)]);
    }
    task
}

impl Model {
    fn get_state(&self) -> Value {
        json!({
            "get_tasks": {"tasks": self.tasks.iter().map(v1_task).collect::<Vec<_>>()},
            "get_executors": {},
            "get_frameworks": {"frameworks": self.frameworks.iter().map(|(id, n)| v1_framework(id, n)).collect::<Vec<_>>()},
            "get_agents": {"agents": self.agents.iter().map(v1_agent).collect::<Vec<_>>()},
        })
    }

    fn master_state(&self, pid: &str) -> Value {
        let frameworks: Vec<Value> = self
            .frameworks
            .iter()
            .map(|(id, name)| {
                let tasks: Vec<Value> = self
                    .tasks
                    .iter()
                    .filter(|t| &t.framework == id)
                    .map(|t| {
                        let mut task = json!({
                            "id": t.id, "name": t.name, "framework_id": t.framework,
                            "slave_id": t.agent, "state": t.state,
                            "resources": {"ports": "[31000-31000]"},
                            "discovery": discovery(t),
                        });
                        if t.state != "TASK_STAGING" {
                            task["statuses"] = json!([status(t, false)]);
                        }
                        task
                    })
                    .collect();
                json!({"id": id, "name": name, "hostname": "198.18.0.2", "tasks": tasks})
            })
            .collect();
        json!({
            "pid": pid, "leader": pid,
            "slaves": self.agents.iter().map(|a| json!({
                "id": a.id, "pid": format!("slave(1)@{}:5051", a.ip), "hostname": a.ip,
                "attributes": {"site": a.site}})).collect::<Vec<_>>(),
            "frameworks": frameworks,
        })
    }
}

async fn api(
    State((inner, subscriptions, _, heartbeat)): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut inner = inner.lock().unwrap();
    if !authorized(&inner, &headers) {
        return (StatusCode::UNAUTHORIZED, "credentials required").into_response();
    }
    match &inner.role {
        Role::Leader => {}
        Role::Follower(leader) => {
            let location = format!("//{leader}/api/v1");
            return (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location)],
            )
                .into_response();
        }
        Role::NoLeader => {
            return (StatusCode::SERVICE_UNAVAILABLE, "No leader elected").into_response()
        }
    }
    // The checks of `Master::Http::api`, in its order.
    match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        None => {
            return (
                StatusCode::BAD_REQUEST,
                "Expecting 'Content-Type' to be present",
            )
                .into_response()
        }
        Some("application/json") => {}
        Some(_) => return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response(),
    }
    let call: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("Failed to parse body into JSON: {e}"),
            )
                .into_response()
        }
    };
    if call["type"] != "SUBSCRIBE" {
        return (StatusCode::BAD_REQUEST, "only SUBSCRIBE is played here").into_response();
    }
    subscriptions.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let subscribed = json!({"type": "SUBSCRIBED", "subscribed": {
        "get_state": inner.model.get_state(), "heartbeat_interval_seconds": heartbeat}});
    let first = record(&subscribed);
    inner.bytes_out += first.len() as u64;
    let _ = tx.send(first);
    let _ = tx.send(record(&json!({"type": "HEARTBEAT"})));
    inner.subscribers.push(tx);
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|b| b.map(Ok::<Bytes, std::io::Error>))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn master_state(State((inner, _, reads, _)): State<Shared>, headers: HeaderMap) -> Response {
    reads.fetch_add(1, Ordering::Relaxed);
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:5050")
        .to_string();
    let mut inner = inner.lock().unwrap();
    let body = inner
        .model
        .master_state(&format!("master@{host}"))
        .to_string();
    inner.bytes_out += body.len() as u64;
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

impl OperatorMaster {
    /// A leading master announcing `heartbeat`, with no agents, frameworks or tasks yet.
    pub async fn start(heartbeat: Duration) -> OperatorMaster {
        Self::start_with(heartbeat, None).await
    }

    /// The same over HTTPS, with a certificate for 127.0.0.1 from the test CA made in `dir`;
    /// the CA's file is returned for `--master-ca`.
    pub async fn start_tls(
        heartbeat: Duration,
        dir: &std::path::Path,
    ) -> (OperatorMaster, std::path::PathBuf) {
        let pki = super::etcd::Pki::create(dir);
        let (cert, key) = pki.server();
        let identity = tokio_native_tls::native_tls::Identity::from_pkcs8(
            &std::fs::read(&cert).expect("server certificate"),
            &std::fs::read(&key).expect("server key"),
        )
        .expect("a PKCS#8 identity");
        let acceptor = tokio_native_tls::TlsAcceptor::from(
            tokio_native_tls::native_tls::TlsAcceptor::new(identity).expect("a TLS acceptor"),
        );
        (Self::start_with(heartbeat, Some(acceptor)).await, pki.ca())
    }

    async fn start_with(
        heartbeat: Duration,
        tls: Option<tokio_native_tls::TlsAcceptor>,
    ) -> OperatorMaster {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Mutex::new(Inner {
            model: Model::default(),
            bytes_out: 0,
            role: Role::Leader,
            subscribers: Vec::new(),
            silent: false,
            auth: None,
        }));
        let subscriptions = Arc::new(AtomicU64::new(0));
        let state_reads = Arc::new(AtomicU64::new(0));
        let shared: Shared = (
            inner.clone(),
            subscriptions.clone(),
            state_reads.clone(),
            heartbeat.as_secs_f64(),
        );
        let app = axum::Router::new()
            .route("/api/v1", post(api))
            .route("/master/state", get(master_state))
            .with_state(shared);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let server = tokio::spawn(async move {
            let _ = match tls {
                Some(acceptor) => {
                    axum::serve(
                        TlsListener {
                            tcp: listener,
                            acceptor,
                        },
                        app,
                    )
                    .await
                }
                None => axum::serve(listener, app).await,
            };
        });
        let beat = inner.clone();
        let heartbeats = tokio::spawn(async move {
            loop {
                tokio::time::sleep(heartbeat).await;
                let mut inner = beat.lock().unwrap();
                if !inner.silent {
                    let hb = record(&json!({"type": "HEARTBEAT"}));
                    inner.subscribers.retain(|s| s.send(hb.clone()).is_ok());
                }
            }
        });
        OperatorMaster {
            addr,
            scheme,
            inner,
            subscriptions,
            state_reads,
            server,
            heartbeats,
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Sends raw bytes to every subscriber.
    pub fn send_raw(&self, bytes: &[u8]) {
        let mut inner = self.inner.lock().unwrap();
        let b = Bytes::copy_from_slice(bytes);
        inner.subscribers.retain(|s| s.send(b.clone()).is_ok());
    }

    fn emit(inner: &mut Inner, event: Value) {
        if inner.subscribers.is_empty() {
            return;
        }
        let r = record(&event);
        inner.bytes_out += (r.len() * inner.subscribers.len()) as u64;
        inner.subscribers.retain(|s| s.send(r.clone()).is_ok());
    }

    /// Changes the model, then sends the events the change makes (returned by `f`).
    fn change(&self, f: impl FnOnce(&mut Model) -> Vec<Value>) {
        let mut inner = self.inner.lock().unwrap();
        for event in f(&mut inner.model) {
            Self::emit(&mut inner, event);
        }
    }

    pub fn add_agent(&self, id: &str, ip: &str, site: &str) {
        let agent = ModelAgent {
            id: id.into(),
            ip: ip.into(),
            site: site.into(),
        };
        self.change(|m| {
            let event = json!({"type": "AGENT_ADDED", "agent_added": {"agent": v1_agent(&agent)}});
            m.agents.push(agent);
            vec![event]
        });
    }

    pub fn remove_agent(&self, id: &str) {
        self.change(|m| {
            m.agents.retain(|a| a.id != id);
            vec![json!({"type": "AGENT_REMOVED", "agent_removed": {"agent_id": {"value": id}}})]
        });
    }

    pub fn add_framework(&self, id: &str, name: &str) {
        self.change(|m| {
            m.frameworks.push((id.into(), name.into()));
            vec![json!({"type": "FRAMEWORK_ADDED", "framework_added": {"framework": v1_framework(id, name)}})]
        });
    }

    pub fn remove_framework(&self, id: &str) {
        self.change(|m| {
            m.frameworks.retain(|(f, _)| f != id);
            m.tasks.retain(|t| t.framework != id);
            vec![json!({"type": "FRAMEWORK_REMOVED", "framework_removed": {
                "framework_info": {"name": "x", "id": {"value": id}}}})]
        });
    }

    /// A new task, staging: TASK_ADDED.
    pub fn add_task(&self, task: ModelTask) {
        self.change(|m| {
            let event = json!({"type": "TASK_ADDED", "task_added": {"task": v1_task(&task)}});
            m.tasks.push(task);
            vec![event]
        });
    }

    /// A task's new state (and health): TASK_UPDATED as master.proto has it. A terminal
    /// state removes the task from the model, as the master forgets it from `tasks`.
    pub fn update_task(&self, framework: &str, id: &str, state: &str, healthy: Option<bool>) {
        self.change(|m| {
            let Some(at) = m
                .tasks
                .iter()
                .position(|t| t.framework == framework && t.id == id)
            else {
                return Vec::new();
            };
            m.tasks[at].state = state.into();
            m.tasks[at].healthy = healthy;
            let event = json!({"type": "TASK_UPDATED", "task_updated": {
                "framework_id": {"value": framework},
                "status": status(&m.tasks[at], true),
                "state": state}});
            if TERMINAL.contains(&state) {
                m.tasks.remove(at);
            }
            vec![event]
        });
    }

    /// A task running at once (TASK_ADDED, then TASK_STARTING and TASK_RUNNING updates).
    pub fn launch(&self, framework: &str, id: &str, name: &str, agent: &str, ip: &str) {
        self.add_task(ModelTask {
            framework: framework.into(),
            id: id.into(),
            name: name.into(),
            agent: agent.into(),
            state: "TASK_STAGING".into(),
            ip: ip.into(),
            healthy: None,
        });
        self.update_task(framework, id, "TASK_STARTING", None);
        self.update_task(framework, id, "TASK_RUNNING", None);
    }

    /// Changes the model without telling subscribers (what a dropped connection misses).
    pub fn change_quietly(&self, f: impl FnOnce(&mut Vec<ModelTask>)) {
        f(&mut self.inner.lock().unwrap().model.tasks);
    }

    /// Ends every open stream (the connection closes cleanly).
    pub fn close_streams(&self) {
        self.inner.lock().unwrap().subscribers.clear();
    }

    pub fn set_role(&self, role: Role) {
        let mut inner = self.inner.lock().unwrap();
        inner.role = role;
        // A master that stops leading closes its subscriptions.
        if !matches!(inner.role, Role::Leader) {
            inner.subscribers.clear();
        }
    }

    /// Requires HTTP basic auth with this user and password from now on.
    pub fn require_basic_auth(&self, user: &str, password: &str) {
        self.inner.lock().unwrap().auth = Some(super::mesos::basic_auth(user, password));
    }

    /// Stops (or resumes) heartbeats, leaving connections open.
    pub fn set_silent(&self, silent: bool) {
        self.inner.lock().unwrap().silent = silent;
    }

    /// Bytes of events and state documents served so far.
    pub fn bytes_out(&self) -> u64 {
        self.inner.lock().unwrap().bytes_out
    }

    /// `GET /master/state` calls answered so far.
    pub fn state_reads(&self) -> u64 {
        self.state_reads.load(Ordering::Relaxed)
    }

    pub fn subscriptions(&self) -> u64 {
        self.subscriptions.load(Ordering::Relaxed)
    }
}

/// TLS over the listener, for `start_tls`: a handshake that fails drops that connection only.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_native_tls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_native_tls::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Mesos's terminal task states.
pub const TERMINAL: &[&str] = &[
    "TASK_FINISHED",
    "TASK_FAILED",
    "TASK_KILLED",
    "TASK_LOST",
    "TASK_ERROR",
    "TASK_DROPPED",
    "TASK_GONE",
    "TASK_GONE_BY_OPERATOR",
];

impl Drop for OperatorMaster {
    fn drop(&mut self) {
        self.server.abort();
        self.heartbeats.abort();
    }
}
