//! A local HTTP server that plays a Mesos master: it serves `GET /master/state` from a
//! document the test sets (or garbage, or an error status). Loopback only; stops on drop.
//! And the real `lodestar mesos-sync` in the background, its log collected, killed on drop.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{json, Value};

#[derive(Clone)]
pub enum Reply {
    Json(Value),
    Raw(StatusCode, String),
    /// Answers only after this long (a master that hangs).
    Slow(std::time::Duration),
}

pub struct FakeMaster {
    pub addr: SocketAddr,
    reply: Arc<Mutex<Reply>>,
    pub hits: Arc<AtomicU64>,
    auth: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

type Shared = (
    Arc<Mutex<Reply>>,
    Arc<AtomicU64>,
    Arc<Mutex<Option<String>>>,
);

async fn serve_state(
    State((reply, hits, auth)): State<Shared>,
    headers: axum::http::HeaderMap,
) -> Response {
    hits.fetch_add(1, Ordering::Relaxed);
    if let Some(expected) = auth.lock().unwrap().clone() {
        let given = headers.get("authorization").and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            return (StatusCode::UNAUTHORIZED, "credentials required").into_response();
        }
    }
    let reply = reply.lock().unwrap().clone();
    match reply {
        Reply::Json(v) => axum::Json(v).into_response(),
        Reply::Raw(status, body) => (status, body).into_response(),
        Reply::Slow(d) => {
            tokio::time::sleep(d).await;
            (StatusCode::OK, "{}").into_response()
        }
    }
}

impl FakeMaster {
    pub async fn start() -> FakeMaster {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reply = Arc::new(Mutex::new(Reply::Raw(
            StatusCode::SERVICE_UNAVAILABLE,
            "not set".into(),
        )));
        let hits = Arc::new(AtomicU64::new(0));
        let auth = Arc::new(Mutex::new(None));
        let app = axum::Router::new()
            .route("/master/state", get(serve_state))
            .with_state((reply.clone(), hits.clone(), auth.clone()));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeMaster {
            addr,
            reply,
            hits,
            auth,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// This master's PID as Mesos writes it.
    pub fn pid(&self) -> String {
        format!("master@{}", self.addr)
    }

    pub fn set(&self, reply: Reply) {
        *self.reply.lock().unwrap() = reply;
    }

    /// Requires HTTP basic auth with this user and password from now on.
    pub fn require_basic_auth(&self, user: &str, password: &str) {
        *self.auth.lock().unwrap() = Some(basic_auth(user, password));
    }

    pub fn set_state(&self, v: Value) {
        self.set(Reply::Json(v));
    }

    /// Leads, with `state`'s two agents and these tasks.
    pub fn set_tasks(&self, tasks: Vec<Value>) {
        self.set_state(state(&self.pid(), &self.pid(), tasks));
    }
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `Authorization` header of HTTP basic auth for this user and password.
pub fn basic_auth(user: &str, password: &str) -> String {
    use std::fmt::Write;
    let raw = format!("{user}:{password}");
    // Base64 without a dependency: the standard alphabet, padded.
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut enc = String::new();
    for chunk in raw.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let _ = enc.write_char(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                enc.push('=');
            }
        }
    }
    format!("Basic {enc}")
}

/// The two agents of `state`: one per site.
pub const AZURE: &str = "S-azure-S1";
pub const VSPHERE: &str = "S-vsphere-S2";

/// A task in state.json's shape.
pub fn task(id: &str, name: &str, slave: &str, state: &str, ips: &[&str]) -> Value {
    json!({
        "id": id,
        "name": name,
        "framework_id": "fw-marathon",
        "slave_id": slave,
        "state": state,
        "resources": {"ports": "[31000-31001]"},
        "statuses": [
            {"state": "TASK_STARTING", "timestamp": 1.0},
            {
                "state": "TASK_RUNNING",
                "timestamp": 2.0,
                "healthy": true,
                "container_status": {"network_infos": [{"ip_addresses": ips.iter().map(|ip| json!({"ip_address": ip})).collect::<Vec<_>>()}]}
            }
        ]
    })
}

/// A running task whose discovery port 8080 carries the VIP labels `vips` (`VIP_0`, ...).
pub fn vip_task(id: &str, name: &str, slave: &str, vips: &[&str]) -> serde_json::Value {
    let mut t = task(id, name, slave, "TASK_RUNNING", &["198.18.1.50"]);
    let labels: Vec<_> = vips
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"key": format!("VIP_{i}"), "value": v}))
        .collect();
    t["discovery"] = json!({
        "name": name,
        "ports": {"ports": [{"number": 8080, "name": "http", "protocol": "tcp", "labels": {"labels": labels}}]}
    });
    t
}

/// A state document led by `leader_pid`, with two agents in two sites.
pub fn state(self_pid: &str, leader_pid: &str, tasks: Vec<Value>) -> Value {
    json!({
        "pid": self_pid,
        "leader": leader_pid,
        "leader_info": {"hostname": "master-1.example", "port": 5050},
        "slaves": [
            {"id": AZURE, "pid": "slave(1)@198.18.1.21:5051", "hostname": "agent-1", "attributes": {"site": "azure", "rack": 3}},
            {"id": VSPHERE, "pid": "slave(1)@198.18.2.21:5051", "hostname": "agent-2", "attributes": {"site": "vsphere"}}
        ],
        "frameworks": [
            {"id": "fw-marathon", "name": "marathon", "pid": "scheduler-1@198.18.1.11:8080", "hostname": "master-1", "tasks": tasks}
        ]
    })
}

/// `lodestar mesos-sync --once` of `masters` with a 2 s timeout; the etcd flags to be added.
pub fn sync_once_args(masters: &str) -> Vec<String> {
    [
        "mesos-sync",
        "--once",
        "--timeout",
        "2s",
        "--master",
        masters,
    ]
    .map(String::from)
    .to_vec()
}

/// A background `lodestar mesos-sync`, its log collected; killed on drop (its log printed if
/// the test failed).
pub struct SyncProcess {
    pub child: Child,
    pub log: Arc<Mutex<String>>,
}

impl SyncProcess {
    /// Follows `masters` (polling every 200 ms unless `extra` sets `--interval`) as instance
    /// `id` with a 2 s lease; `etcd` are the `--etcd ...` flags (with any credentials), `extra`
    /// more flags.
    pub fn start(masters: &str, etcd: &[String], id: &str, extra: &[&str]) -> SyncProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lodestar"));
        cmd.args(["mesos-sync", "--master", masters]).args(etcd);
        if !extra.contains(&"--interval") {
            cmd.args(["--interval", "200ms"]);
        }
        cmd.args(["--lease-ttl", "2", "--instance-id", id])
            .args(["--timeout", "2s"])
            .args(extra)
            .env_remove("LODESTAR_ETCD")
            .stdin(Stdio::null());
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let child =
            super::command::spawn_reading_stderr(&mut cmd, "lodestar mesos-sync", move |line| {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            });
        SyncProcess { child, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Fails the test unless the log has a line with `needle` (the log is the message).
    #[track_caller]
    pub fn assert_logged(&self, needle: &str) {
        let log = self.log();
        assert!(log.contains(needle), "no {needle:?} in the log:\n{log}");
    }

    /// Waits until the log has a line with `needle`.
    pub async fn until_logged(&self, needle: &str) {
        super::eventually(Duration::from_secs(20), needle, || async {
            self.log().contains(needle).then_some(())
        })
        .await;
    }

    pub fn leads(&self) -> bool {
        self.log()
            .contains("leading: this mesos-sync instance writes")
    }
}

impl Drop for SyncProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- mesos-sync log ----\n{}", self.log());
        }
    }
}
