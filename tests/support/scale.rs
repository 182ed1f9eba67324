//! A large Mesos cluster as `/master/state` writes it, for the scale benchmark and the tests
//! that check mesos-sync at that size: `tasks` Marathon tasks, three per app, spread over 500
//! agents. Every address is in 198.18.0.0/15 (agents from 198.18.0.1, tasks from 198.18.4.0),
//! only ever named in DNS, never connected to.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

/// Agents in the cluster.
pub const AGENTS: usize = 500;
/// Tasks per app.
pub const TASKS_PER_APP: usize = 3;
/// The framework the tasks run under.
pub const FRAMEWORK: &str = "marathon";
pub const FRAMEWORK_ID: &str = "20261121-000000-0001-0000-0000";

/// The apps `tasks` tasks make (the last may have fewer than three).
pub fn apps(tasks: usize) -> usize {
    tasks.div_ceil(TASKS_PER_APP)
}

/// App `k`'s name (`app-k`), also its Marathon id and its DiscoveryInfo name.
pub fn app_name(k: usize) -> String {
    format!("app-{k}")
}

/// App `k`'s A name in the agent's zone.
pub fn app_fqdn(k: usize) -> String {
    format!("{}.{FRAMEWORK}.mesos.", app_name(k))
}

/// The 198.18.0.0/15 address `offset` places after 198.18.0.0.
fn address(offset: usize) -> Ipv4Addr {
    let a = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + offset as u32;
    assert!(offset < 1 << 17, "{offset} is outside 198.18.0.0/15");
    Ipv4Addr::from(a)
}

/// Agent `a`'s id and address.
pub fn agent_id(a: usize) -> String {
    format!("{FRAMEWORK_ID}-S{a}")
}

pub fn agent_address(a: usize) -> Ipv4Addr {
    address(1 + a)
}

/// Task `i`'s address (one per task, on its container network).
pub fn task_address(i: usize) -> Ipv4Addr {
    address(4 * 256 + i)
}

/// Task `i`: app `i / 3` on agent `i % 500`, running and healthy, with its netinfo address, a
/// resource port, a named DiscoveryInfo port, Marathon's labels and the fields a master
/// writes that Lodestar does not read (so the document has a real task's size).
pub fn task(i: usize) -> Value {
    let app = app_name(i / TASKS_PER_APP);
    let agent = agent_id(i % AGENTS);
    let ip = task_address(i).to_string();
    let port = 31000 + (i % 1000) as u64;
    json!({
        "id": format!("{app}.{i:08x}-7c1b-11ef-9c9a-0242ac110002"),
        "name": app,
        "framework_id": FRAMEWORK_ID,
        "executor_id": "",
        "slave_id": agent,
        "state": "TASK_RUNNING",
        "resources": {"cpus": 0.1, "mem": 128.0, "disk": 0.0, "gpus": 0.0, "ports": format!("[{port}-{port}]")},
        "role": "*",
        "labels": [{"key": "MARATHON_SINGLE_INSTANCE_APP", "value": "false"}],
        "discovery": {
            "visibility": "FRAMEWORK",
            "name": app,
            "ports": {"ports": [{"number": 8080, "name": "http", "protocol": "tcp"}]}
        },
        "container": {
            "type": "MESOS",
            "network_infos": [{"name": "dcos", "ip_addresses": [{"protocol": "IPv4"}]}]
        },
        "statuses": [
            {
                "state": "TASK_STARTING",
                "timestamp": 1_763_700_000.0 + i as f64,
                "container_status": {"container_id": {"value": format!("c-{i:08x}")}}
            },
            {
                "state": "TASK_RUNNING",
                "timestamp": 1_763_700_010.0 + i as f64,
                "healthy": true,
                "container_status": {
                    "container_id": {"value": format!("c-{i:08x}")},
                    "network_infos": [{"name": "dcos", "ip_addresses": [{"protocol": "IPv4", "ip_address": ip}]}]
                }
            }
        ]
    })
}

/// The leading master's state (`pid` is both its own and the leader's) with `tasks` tasks.
pub fn state(pid: &str, tasks: usize) -> Value {
    let slaves: Vec<Value> = (0..AGENTS)
        .map(|a| {
            let site = if a % 2 == 0 { "azure" } else { "vsphere" };
            json!({
                "id": agent_id(a),
                "pid": format!("slave(1)@{}:5051", agent_address(a)),
                "hostname": format!("agent-{a}.{site}.example"),
                "attributes": {"site": site, "rack": a % 20},
                "active": true
            })
        })
        .collect();
    json!({
        "pid": pid,
        "leader": pid,
        "leader_info": {"hostname": "master-1.example", "port": 5050},
        "slaves": slaves,
        "frameworks": [{
            "id": FRAMEWORK_ID,
            "name": FRAMEWORK,
            "pid": "scheduler-1@198.18.3.250:8080",
            "hostname": "master-1.example",
            "active": true,
            "tasks": (0..tasks).map(task).collect::<Vec<_>>()
        }]
    })
}

/// `state` as the text a master sends, written task by task (a 100,000-task document as one
/// `Value` would take far more memory than its text).
pub fn state_text(pid: &str, tasks: usize) -> String {
    let mut doc = state(pid, 0);
    doc["frameworks"][0]["tasks"] = json!(["TASKS"]);
    let skeleton = serde_json::to_string(&doc).expect("the state serializes");
    let (head, tail) = skeleton
        .split_once(r#"["TASKS"]"#)
        .expect("the placeholder");
    let mut text = String::with_capacity(head.len() + tail.len() + tasks * 1100);
    text.push_str(head);
    text.push('[');
    for i in 0..tasks {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&task(i).to_string());
    }
    text.push(']');
    text.push_str(tail);
    text
}
