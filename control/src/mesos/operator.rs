//! The Mesos master's v1 operator API as mesos-sync reads it: the events of the `SUBSCRIBE`
//! stream (`include/mesos/v1/master/master.proto`, `docs/operator-http-api.md`), and a cluster
//! model that applies them and reads as the same `State` as `/master/state`, so one translation
//! serves polling and streaming.
//!
//! Where the docs and the master disagree the master wins: `TASK_UPDATED` carries
//! `{framework_id, status, state}` (not the docs' example), and there is no task removal event,
//! a terminal `state` is a task's last word.

use std::time::Duration;

use serde::Deserialize;

use crate::mesos::state::{Framework, Slave, State, Status, Task};

/// One event of the stream.
#[derive(Debug)]
pub enum Event {
    /// The first event: the whole state, and how often heartbeats come.
    Subscribed {
        state: State,
        heartbeat: Option<Duration>,
    },
    TaskAdded(Box<Task>),
    TaskUpdated {
        framework_id: String,
        task_id: String,
        /// The task's latest state as the agent knows it.
        state: String,
        /// The status being applied (addresses, health).
        status: Box<Status>,
    },
    AgentAdded(Slave),
    AgentRemoved {
        agent_id: String,
    },
    /// A framework registered, or changed (`FRAMEWORK_UPDATED`: its name or host, say).
    FrameworkAdded(Framework),
    FrameworkRemoved {
        framework_id: String,
    },
    Heartbeat,
    /// A type this build does not know; ignored, as the proto's `UNKNOWN` is.
    Unknown(String),
}

impl Event {
    /// The event's type as the stream names it.
    pub fn kind(&self) -> &str {
        match self {
            Event::Subscribed { .. } => "SUBSCRIBED",
            Event::TaskAdded(_) => "TASK_ADDED",
            Event::TaskUpdated { .. } => "TASK_UPDATED",
            Event::AgentAdded(_) => "AGENT_ADDED",
            Event::AgentRemoved { .. } => "AGENT_REMOVED",
            Event::FrameworkAdded(_) => "FRAMEWORK_ADDED",
            Event::FrameworkRemoved { .. } => "FRAMEWORK_REMOVED",
            Event::Heartbeat => "HEARTBEAT",
            Event::Unknown(kind) => kind,
        }
    }
}

/// What is wrong with one event record.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("an event that is not JSON of the operator API: {0}")]
    Json(#[from] serde_json::Error),
    #[error("a {kind} event without its {field:?} payload")]
    Missing { kind: String, field: &'static str },
}

#[derive(Deserialize)]
struct Value {
    value: String,
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "type", default)]
    kind: String,
    subscribed: Option<RawSubscribed>,
    task_added: Option<RawTaskAdded>,
    task_updated: Option<RawTaskUpdated>,
    agent_added: Option<RawAgentAdded>,
    agent_removed: Option<RawAgentRemoved>,
    framework_added: Option<RawFrameworkEvent>,
    framework_updated: Option<RawFrameworkEvent>,
    framework_removed: Option<RawFrameworkRemoved>,
}

#[derive(Deserialize)]
struct RawSubscribed {
    #[serde(default)]
    get_state: GetState,
    #[serde(default)]
    heartbeat_interval_seconds: Option<f64>,
}

#[derive(Deserialize)]
struct RawTaskAdded {
    task: Box<Task>,
}

#[derive(Deserialize)]
struct RawTaskUpdated {
    framework_id: Value,
    status: RawStatus,
    state: String,
}

#[derive(Deserialize)]
struct RawStatus {
    task_id: Value,
    #[serde(flatten)]
    status: Box<Status>,
}

#[derive(Deserialize)]
struct RawAgentAdded {
    agent: Agent,
}

#[derive(Deserialize)]
struct RawAgentRemoved {
    agent_id: Value,
}

#[derive(Deserialize)]
struct RawFrameworkEvent {
    framework: FrameworkEntry,
}

#[derive(Deserialize)]
struct RawFrameworkRemoved {
    framework_info: FrameworkInfo,
}

/// `Response.GetState`: what `SUBSCRIBED` carries and `GET_STATE` answers.
#[derive(Debug, Default, Deserialize)]
pub struct GetState {
    #[serde(default)]
    get_tasks: GetTasks,
    #[serde(default)]
    get_frameworks: GetFrameworks,
    #[serde(default)]
    get_agents: GetAgents,
}

#[derive(Debug, Default, Deserialize)]
struct GetTasks {
    /// Staging to running, and terminal ones not yet acknowledged (`unreachable_tasks` and
    /// `completed_tasks` are not served, as `/master/state`'s are not).
    #[serde(default)]
    tasks: Vec<Task>,
}

#[derive(Debug, Default, Deserialize)]
struct GetFrameworks {
    #[serde(default)]
    frameworks: Vec<FrameworkEntry>,
}

#[derive(Debug, Deserialize)]
struct FrameworkEntry {
    framework_info: FrameworkInfo,
}

#[derive(Debug, Deserialize)]
struct FrameworkInfo {
    /// Absent only in a framework's first registration request, never in the master's view.
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    hostname: Option<String>,
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.value.fmt(f)
    }
}

#[derive(Debug, Default, Deserialize)]
struct GetAgents {
    #[serde(default)]
    agents: Vec<Agent>,
    /// Agents recovered from the registry that have not reregistered yet (after a failover).
    #[serde(default)]
    recovered_agents: Vec<AgentInfo>,
}

#[derive(Debug, Deserialize)]
struct Agent {
    agent_info: AgentInfo,
    /// `slave(1)@198.18.0.1:5051`: where the agent's address comes from, as in `/master/state`.
    #[serde(default)]
    pid: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AgentInfo {
    #[serde(default)]
    id: Option<Value>,
    hostname: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    attributes: Vec<Attribute>,
}

#[derive(Debug, Deserialize)]
struct Attribute {
    name: String,
    #[serde(default)]
    text: Option<Value>,
    #[serde(default)]
    scalar: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
struct Scalar {
    value: f64,
}

impl Agent {
    /// The agent as `/master/state` lists it; `None` without an id.
    fn into_slave(self) -> Option<Slave> {
        let info = self.agent_info;
        let id = info.id?.value;
        // A recovered agent has no pid yet: its hostname stands in, which gives it an address
        // when Mesos was told to use IPs as hostnames (DC/OS does).
        let pid = self
            .pid
            .unwrap_or_else(|| format!("slave(1)@{}:{}", info.hostname, info.port.unwrap_or(5051)));
        let attributes = info
            .attributes
            .into_iter()
            .filter_map(|a| {
                let value = match (a.text, a.scalar) {
                    (Some(t), _) => serde_json::Value::String(t.value),
                    (None, Some(s)) => serde_json::Number::from_f64(s.value)?.into(),
                    (None, None) => return None,
                };
                Some((a.name, value))
            })
            .collect();
        Some(Slave {
            id,
            pid,
            hostname: info.hostname,
            attributes,
        })
    }
}

impl FrameworkEntry {
    /// The framework as `/master/state` lists it, without tasks. The v1 API gives no scheduler
    /// pid, so no scheduler port (Mesos-DNS's `_framework._tcp` SRV) comes from a stream.
    fn into_framework(self) -> Option<Framework> {
        let info = self.framework_info;
        Some(Framework {
            id: info.id?.value,
            name: info.name,
            pid: None,
            hostname: info.hostname,
            tasks: Vec::new(),
        })
    }
}

impl GetState {
    /// The state in `/master/state`'s model; `leader` is the pid of the master that sent it
    /// (the operator API only streams from the leader).
    pub fn into_state(self, leader: Option<String>) -> State {
        let mut cluster = Cluster::default();
        for f in self.get_frameworks.frameworks.into_iter() {
            if let Some(f) = f.into_framework() {
                cluster.apply(Event::FrameworkAdded(f));
            }
        }
        let agents = self.get_agents.agents.into_iter();
        let recovered = self
            .get_agents
            .recovered_agents
            .into_iter()
            .map(|agent_info| Agent {
                agent_info,
                pid: None,
            });
        for a in agents.chain(recovered) {
            if let Some(s) = a.into_slave() {
                if !cluster.state.slaves.iter().any(|known| known.id == s.id) {
                    cluster.state.slaves.push(s);
                }
            }
        }
        for t in self.get_tasks.tasks {
            cluster.add_task(t);
        }
        cluster.set_leader(leader);
        cluster.state
    }
}

/// Parses one record of the stream.
pub fn parse_event(record: &[u8]) -> Result<Event, EventError> {
    let raw: RawEvent = serde_json::from_slice(record)?;
    let missing = |field| EventError::Missing {
        kind: raw.kind.clone(),
        field,
    };
    Ok(match raw.kind.as_str() {
        "SUBSCRIBED" => {
            let s = raw.subscribed.ok_or_else(|| missing("subscribed"))?;
            let heartbeat = s
                .heartbeat_interval_seconds
                .filter(|s| s.is_finite() && *s > 0.0 && *s < 86_400.0)
                .map(Duration::from_secs_f64);
            Event::Subscribed {
                state: s.get_state.into_state(None),
                heartbeat,
            }
        }
        "TASK_ADDED" => Event::TaskAdded(raw.task_added.ok_or_else(|| missing("task_added"))?.task),
        "TASK_UPDATED" => {
            let u = raw.task_updated.ok_or_else(|| missing("task_updated"))?;
            Event::TaskUpdated {
                framework_id: u.framework_id.value,
                task_id: u.status.task_id.value,
                state: u.state,
                status: u.status.status,
            }
        }
        "AGENT_ADDED" => {
            let a = raw.agent_added.ok_or_else(|| missing("agent_added"))?;
            Event::AgentAdded(
                a.agent
                    .into_slave()
                    .ok_or_else(|| missing("agent_info.id"))?,
            )
        }
        "AGENT_REMOVED" => Event::AgentRemoved {
            agent_id: raw
                .agent_removed
                .ok_or_else(|| missing("agent_removed"))?
                .agent_id
                .value,
        },
        "FRAMEWORK_ADDED" | "FRAMEWORK_UPDATED" => {
            let f = match raw.kind.as_str() {
                "FRAMEWORK_ADDED" => raw.framework_added,
                _ => raw.framework_updated,
            }
            .ok_or_else(|| missing("framework"))?;
            Event::FrameworkAdded(
                f.framework
                    .into_framework()
                    .ok_or_else(|| missing("framework_info.id"))?,
            )
        }
        "FRAMEWORK_REMOVED" => Event::FrameworkRemoved {
            framework_id: raw
                .framework_removed
                .ok_or_else(|| missing("framework_removed"))?
                .framework_info
                .id
                .ok_or_else(|| missing("framework_info.id"))?
                .value,
        },
        "HEARTBEAT" => Event::Heartbeat,
        _ => Event::Unknown(raw.kind),
    })
}

/// Mesos's terminal task states (`isTerminalState`): a task in one of them is gone for good.
pub fn is_terminal(state: &str) -> bool {
    matches!(
        state,
        "TASK_FINISHED"
            | "TASK_FAILED"
            | "TASK_KILLED"
            | "TASK_LOST"
            | "TASK_ERROR"
            | "TASK_DROPPED"
            | "TASK_GONE"
            | "TASK_GONE_BY_OPERATOR"
    )
}

/// How many statuses a task keeps: the newest running one gives its addresses.
const STATUSES_KEPT: usize = 8;

/// The cluster as the stream has told it, held in `/master/state`'s model so that the poll's
/// translation reads it as it is. Lookups scan a framework's tasks: a few microseconds for ten
/// thousand, against milliseconds for the etcd write that follows.
#[derive(Debug, Default)]
pub struct Cluster {
    state: State,
}

/// What applying an event did to the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The catalog may change: translate and write the difference.
    Changed,
    /// Nothing a catalog holds changed (a heartbeat, an update of an unknown task).
    Unchanged,
}

impl Cluster {
    /// The cluster `state` describes (from `SUBSCRIBED`, or a poll), without its terminal tasks.
    pub fn from_state(mut state: State) -> Cluster {
        for f in &mut state.frameworks {
            f.tasks.retain(|t| !is_terminal(&t.state));
        }
        Cluster { state }
    }

    /// The cluster in `/master/state`'s model.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Names the master the events come from (the leader).
    pub fn set_leader(&mut self, pid: Option<String>) {
        self.state.leader.clone_from(&pid);
        self.state.pid = pid;
    }

    pub fn task_count(&self) -> usize {
        self.state.frameworks.iter().map(|f| f.tasks.len()).sum()
    }

    fn framework(&mut self, id: &str) -> &mut Framework {
        let at = match self.state.frameworks.iter().position(|f| f.id == id) {
            Some(at) => at,
            None => {
                // A task whose framework is not known yet (TASK_ADDED may come first) waits
                // under a framework named by its id, until FRAMEWORK_ADDED names it.
                self.state.frameworks.push(Framework {
                    id: id.to_string(),
                    name: id.to_string(),
                    pid: None,
                    hostname: None,
                    tasks: Vec::new(),
                });
                self.state.frameworks.len() - 1
            }
        };
        &mut self.state.frameworks[at]
    }

    fn add_task(&mut self, task: Task) {
        if is_terminal(&task.state) {
            return;
        }
        let tasks = &mut self.framework(&task.framework_id).tasks;
        match tasks.iter_mut().find(|t| t.id == task.id) {
            Some(known) => *known = task,
            None => tasks.push(task),
        }
    }

    /// Applies one event. `SUBSCRIBED` replaces everything but the leader.
    pub fn apply(&mut self, event: Event) -> Applied {
        match event {
            Event::Subscribed { state, .. } => {
                let (leader, pid) = (self.state.leader.take(), self.state.pid.take());
                *self = Cluster::from_state(state);
                self.state.leader = self.state.leader.take().or(leader);
                self.state.pid = self.state.pid.take().or(pid);
                Applied::Changed
            }
            Event::TaskAdded(task) => {
                self.add_task(*task);
                Applied::Changed
            }
            Event::TaskUpdated {
                framework_id,
                task_id,
                state,
                status,
            } => {
                let Some(f) = self
                    .state
                    .frameworks
                    .iter_mut()
                    .find(|f| f.id == framework_id)
                else {
                    return Applied::Unchanged;
                };
                // An update for a task never added (terminal before we subscribed, say) has
                // no name or ports to serve: ignored.
                let Some(at) = f.tasks.iter().position(|t| t.id == task_id) else {
                    return Applied::Unchanged;
                };
                if is_terminal(&state) {
                    f.tasks.swap_remove(at);
                    return Applied::Changed;
                }
                let task = &mut f.tasks[at];
                task.state = state;
                task.statuses.push(*status);
                if task.statuses.len() > STATUSES_KEPT {
                    let extra = task.statuses.len() - STATUSES_KEPT;
                    task.statuses.drain(..extra);
                }
                Applied::Changed
            }
            Event::AgentAdded(agent) => {
                let slaves = &mut self.state.slaves;
                match slaves.iter_mut().find(|s| s.id == agent.id) {
                    Some(known) => *known = agent,
                    None => slaves.push(agent),
                }
                Applied::Changed
            }
            Event::AgentRemoved { agent_id } => {
                // Its tasks are reported lost or gone by their own updates.
                let before = self.state.slaves.len();
                self.state.slaves.retain(|s| s.id != agent_id);
                changed(before != self.state.slaves.len())
            }
            Event::FrameworkAdded(framework) => {
                let known = self.framework(&framework.id);
                known.name = framework.name;
                known.hostname = framework.hostname;
                Applied::Changed
            }
            Event::FrameworkRemoved { framework_id } => {
                // Mesos kills a removed framework's tasks; their names go with it.
                let before = self.state.frameworks.len();
                self.state.frameworks.retain(|f| f.id != framework_id);
                changed(before != self.state.frameworks.len())
            }
            Event::Heartbeat | Event::Unknown(_) => Applied::Unchanged,
        }
    }
}

fn changed(yes: bool) -> Applied {
    if yes {
        Applied::Changed
    } else {
        Applied::Unchanged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Record;
    use crate::mesos::translate::translate;
    use serde_json::json;

    const FW: &str = "30257977-0153-499d-a5b0-35afd842ef4d-0001";
    const S0: &str = "30257977-0153-499d-a5b0-35afd842ef4d-S0";

    /// The shapes of dcos-net's recorded stream (`apps/dcos_net/test/operator-api.json`), its
    /// addresses moved into 198.18.0.0/15.
    fn subscribed() -> serde_json::Value {
        json!({"type": "SUBSCRIBED", "subscribed": {"get_state": {
            "get_tasks": {},
            "get_executors": {},
            "get_frameworks": {"frameworks": [{"framework_info": {
                "user": "root", "name": "metronome",
                "id": {"value": "30257977-0153-499d-a5b0-35afd842ef4d-0000"},
                "failover_timeout": 604800000.0, "checkpoint": true, "hostname": "198.18.0.2"},
                "active": true, "connected": true, "recovered": false,
                "registered_time": {"nanoseconds": 1520884809204943872u64}}]},
            "get_agents": {"agents": [{"agent_info": {
                "hostname": "198.18.0.4", "port": 5051,
                "resources": [{"name": "ports", "type": "RANGES",
                    "ranges": {"range": [{"begin": 1025, "end": 2180}]}}],
                "attributes": [{"name": "site", "type": "TEXT", "text": {"value": "azure"}},
                               {"name": "rack", "type": "SCALAR", "scalar": {"value": 4.0}}],
                "id": {"value": S0}},
                "active": true, "version": "1.5.0", "pid": "slave(1)@198.18.0.4:5051"}],
                "recovered_agents": [{"hostname": "198.18.0.3", "port": 5051,
                    "id": {"value": "30257977-0153-499d-a5b0-35afd842ef4d-S1"}}]}},
            "heartbeat_interval_seconds": 15.0}})
    }

    fn framework_updated() -> serde_json::Value {
        json!({"type": "FRAMEWORK_UPDATED", "framework_updated": {"framework": {
            "framework_info": {"user": "root", "name": "marathon", "id": {"value": FW},
                "hostname": "198.18.0.2", "capabilities": [{"type": "TASK_KILLING_STATE"}]},
            "active": true, "connected": true, "recovered": false}}})
    }

    fn bridge_task_added() -> serde_json::Value {
        json!({"type": "TASK_ADDED", "task_added": {"task": {
            "name": "docker-on-bridge",
            "task_id": {"value": "docker-on-bridge.0ef76549"},
            "framework_id": {"value": FW},
            "agent_id": {"value": S0},
            "state": "TASK_STAGING",
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                {"name": "ports", "type": "RANGES",
                 "ranges": {"range": [{"begin": 20560, "end": 20560}]},
                 "allocation_info": {"role": "slave_public"}}],
            "labels": {"labels": [{"key": "owner", "value": "web"}]},
            "discovery": {"visibility": "FRAMEWORK", "name": "docker-on-bridge",
                "ports": {"ports": [{"number": 20560, "name": "http", "protocol": "tcp",
                    "labels": {"labels": [{"key": "network-scope", "value": "host"}]}}]}},
            "container": {"type": "DOCKER", "docker": {"image": "python:3-alpine",
                "network": "BRIDGE",
                "port_mappings": [{"host_port": 20560, "container_port": 8080,
                                   "protocol": "tcp"}]}}}}})
    }

    fn task_updated(state: &str, ip: &str) -> serde_json::Value {
        json!({"type": "TASK_UPDATED", "task_updated": {
            "framework_id": {"value": FW},
            "status": {"task_id": {"value": "docker-on-bridge.0ef76549"},
                "state": state, "source": "SOURCE_EXECUTOR",
                "agent_id": {"value": S0},
                "timestamp": 1520884850.64141, "uuid": "5vx6i1n4SE6OIYFSUa3DKg==",
                "labels": {"labels": [{"key": "Docker.NetworkSettings.IPAddress",
                                       "value": ip}]},
                "container_status": {"container_id": {"value": "e305b7bd"},
                    "network_infos": [{"ip_addresses": [{"protocol": "IPv4",
                                                         "ip_address": ip}]}]}},
            "state": state}})
    }

    fn event(v: serde_json::Value) -> Event {
        parse_event(v.to_string().as_bytes()).expect("a valid event")
    }

    fn task_names(cluster: &Cluster) -> Vec<String> {
        translate(cluster.state(), &[], "site")
            .records
            .into_iter()
            .filter_map(|r| match r {
                Record::Task(t) => Some(format!("{} {:?}", t.name, t.state)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn subscribed_reads_as_the_state_a_poll_would_give() {
        let Event::Subscribed { state, heartbeat } = event(subscribed()) else {
            panic!("not SUBSCRIBED");
        };
        assert_eq!(heartbeat, Some(Duration::from_secs(15)));
        let ids: Vec<&str> = state.slaves.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, [S0, "30257977-0153-499d-a5b0-35afd842ef4d-S1"]);
        let s0 = &state.slaves[0];
        assert_eq!(s0.pid, "slave(1)@198.18.0.4:5051");
        assert_eq!(s0.attributes["site"], "azure");
        assert_eq!(s0.attributes["rack"], 4.0);
        // Not yet reregistered: its hostname stands in for the pid.
        assert_eq!(state.slaves[1].pid, "slave(1)@198.18.0.3:5051");
        assert_eq!(state.frameworks[0].name, "metronome");
        assert_eq!(state.frameworks[0].pid, None);
    }

    #[test]
    fn a_task_is_served_once_running_and_gone_at_a_terminal_state() {
        let mut c = Cluster::default();
        c.set_leader(Some("master@198.18.0.2:5050".into()));
        for e in [subscribed(), framework_updated(), bridge_task_added()] {
            assert_eq!(c.apply(event(e)), Applied::Changed);
        }
        assert_eq!(c.task_count(), 1);
        assert!(task_names(&c).is_empty(), "staging is not served");
        c.apply(event(task_updated("TASK_STARTING", "198.18.0.4")));
        c.apply(event(task_updated("TASK_RUNNING", "198.18.9.2")));
        assert_eq!(task_names(&c), ["docker-on-bridge Running"]);
        let task = &c
            .state()
            .frameworks
            .iter()
            .find(|f| f.id == FW)
            .unwrap()
            .tasks[0];
        assert_eq!(task.resources.ports.as_deref(), Some("[20560-20560]"));
        assert_eq!(task.labels[0].key, "owner");
        assert_eq!(task.statuses.len(), 2);
        assert_eq!(c.state().leader.as_deref(), Some("master@198.18.0.2:5050"));

        c.apply(event(task_updated("TASK_KILLING", "198.18.9.2")));
        assert_eq!(task_names(&c), ["docker-on-bridge Draining"]);
        assert_eq!(
            c.apply(event(task_updated("TASK_KILLED", "198.18.9.2"))),
            Applied::Changed
        );
        assert_eq!(c.task_count(), 0);
        // A late update for a task that is gone changes nothing.
        assert_eq!(
            c.apply(event(task_updated("TASK_RUNNING", "198.18.9.2"))),
            Applied::Unchanged
        );
    }

    #[test]
    fn a_task_added_before_its_framework_waits_under_its_id_and_a_heartbeat_changes_nothing() {
        let mut c = Cluster::default();
        c.apply(event(bridge_task_added()));
        c.apply(event(task_updated("TASK_RUNNING", "198.18.9.2")));
        assert_eq!(c.state().frameworks[0].name, FW);
        c.apply(event(framework_updated()));
        assert_eq!(c.state().frameworks.len(), 1);
        assert_eq!(c.state().frameworks[0].name, "marathon");
        assert_eq!(c.task_count(), 1);
        assert_eq!(
            c.apply(event(json!({"type": "HEARTBEAT"}))),
            Applied::Unchanged
        );
        assert_eq!(
            c.apply(event(json!({"type": "SOMETHING_NEW", "something_new": {}}))),
            Applied::Unchanged
        );
        // A new subscription starts again from its state, keeping the leader.
        c.set_leader(Some("master@198.18.0.2:5050".into()));
        c.apply(event(subscribed()));
        assert_eq!(c.task_count(), 0);
        assert_eq!(c.state().leader.as_deref(), Some("master@198.18.0.2:5050"));
    }

    #[test]
    fn agents_and_frameworks_come_and_go() {
        let mut c = Cluster::default();
        c.apply(event(subscribed()));
        c.apply(event(framework_updated()));
        c.apply(event(bridge_task_added()));
        let removed = json!({"type": "AGENT_REMOVED",
                             "agent_removed": {"agent_id": {"value": S0}}});
        assert_eq!(c.apply(event(removed.clone())), Applied::Changed);
        assert_eq!(c.apply(event(removed)), Applied::Unchanged);
        assert_eq!(c.state().slaves.len(), 1);
        let added = json!({"type": "AGENT_ADDED", "agent_added": {"agent": {
            "agent_info": {"hostname": "198.18.0.5", "id": {"value": "S5"}},
            "pid": "slave(1)@198.18.0.5:5051", "active": true, "version": "1.5.0"}}});
        c.apply(event(added));
        assert_eq!(c.state().slaves.len(), 2);
        let gone = json!({"type": "FRAMEWORK_REMOVED", "framework_removed": {
            "framework_info": {"name": "marathon", "id": {"value": FW}}}});
        assert_eq!(c.apply(event(gone)), Applied::Changed);
        assert_eq!(c.task_count(), 0);
    }

    #[test]
    fn broken_events_are_errors_not_panics() {
        for bad in [
            &b"not json"[..],
            br#"{"type": "TASK_ADDED"}"#,
            br#"{"type": "TASK_ADDED", "task_added": {"task": {"name": "x"}}}"#,
            br#"{"type": "TASK_UPDATED", "task_updated": {"state": "TASK_RUNNING"}}"#,
            br#"{"type": "AGENT_ADDED", "agent_added": {"agent": {"agent_info": {"hostname": "h"}}}}"#,
            br#"{"type": "FRAMEWORK_REMOVED", "framework_removed": {"framework_info": {}}}"#,
            br#"{"type": "SUBSCRIBED", "subscribed": {"get_state": {"get_tasks": {"tasks": 7}}}}"#,
            br#"[1, 2, 3]"#,
        ] {
            assert!(
                parse_event(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // A heartbeat interval that is not a sane duration is ignored, not a panic.
        let Event::Subscribed { heartbeat, .. } = parse_event(
            br#"{"type": "SUBSCRIBED", "subscribed": {"heartbeat_interval_seconds": -1}}"#,
        )
        .unwrap() else {
            panic!("not SUBSCRIBED");
        };
        assert_eq!(heartbeat, None);
    }

    #[test]
    fn v0_and_v1_tasks_read_the_same() {
        let v1: Task =
            serde_json::from_value(bridge_task_added()["task_added"]["task"].clone()).unwrap();
        let v0: Task = serde_json::from_value(json!({
            "id": "docker-on-bridge.0ef76549", "name": "docker-on-bridge",
            "framework_id": FW, "slave_id": S0, "state": "TASK_STAGING",
            "resources": {"cpus": 0.1, "ports": "[20560-20560]"},
            "labels": [{"key": "owner", "value": "web"}]}))
        .unwrap();
        assert_eq!(
            (&v1.id, &v1.framework_id, &v1.slave_id, &v1.resources.ports),
            (&v0.id, &v0.framework_id, &v0.slave_id, &v0.resources.ports)
        );
        assert_eq!(v1.labels[0].value, v0.labels[0].value);
    }
}
