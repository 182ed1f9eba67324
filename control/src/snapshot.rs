//! The immutable catalog snapshot that dns and l4lb serve from, and the mutable
//! `CatalogState` the stores apply changes to. Persistent maps make a snapshot O(1) to take.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use imbl::{OrdMap, OrdSet};
use serde::Serialize;

use crate::keys::{self, Record, RecordKey, Rejection};
use crate::model::{
    Agent, BackendPort, Framework, Health, IpSource, Leader, Master, Task, TaskKey, TaskState,
    VipAddress, VipKey, VipLabelError, VipName,
};

/// Where a snapshot came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "from")]
pub enum Source {
    /// Nothing loaded yet.
    Empty,
    /// The catalog embedded in the binary.
    Demo,
    /// A catalog file.
    File(String),
    /// etcd, with the endpoints it was read from.
    Etcd(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Empty => f.write_str("nothing loaded"),
            Source::Demo => f.write_str("the embedded demo catalog"),
            Source::File(p) => write!(f, "file {p}"),
            Source::Etcd(e) => write!(f, "etcd {e}"),
        }
    }
}

/// Which task port stands behind a VIP, and where it is reached.
type BackendRef = (TaskKey, BackendPort);

/// The catalog as the stores maintain it. Cloning is cheap (structural sharing).
#[derive(Clone, Debug, Default)]
pub struct CatalogState {
    /// The tasks served: every task keyed by framework, and the legacy ones no such task
    /// shadows.
    tasks: OrdMap<TaskKey, Arc<Task>>,
    /// Tasks at legacy keys (`tasks/<task-id>`), by id, shadowed or not.
    legacy: OrdMap<String, Arc<Task>>,
    /// (framework name, task id) -> how many tasks keyed by framework have it. While `mesos-sync`
    /// migrates a catalog, a task is under both keys for a moment; the legacy one is hidden
    /// then, so it is neither served twice nor missing (`docs/etcd-schema.md`).
    keyed_ids: OrdMap<(String, String), usize>,
    agents: OrdMap<String, Arc<Agent>>,
    frameworks: OrdMap<String, Arc<Framework>>,
    masters: OrdMap<String, Arc<Master>>,
    leader: Option<Arc<Leader>>,
    vip_addresses: OrdMap<String, Arc<VipAddress>>,
    vip_index: OrdMap<VipKey, OrdSet<BackendRef>>,
}

impl CatalogState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts or replaces a record. Returns the VIP labels of a task that could not be
    /// parsed; the task itself is kept, without those VIPs.
    pub fn upsert(&mut self, record: Record) -> Vec<VipLabelError> {
        match record {
            Record::Task(mut task) => {
                task.shrink_to_fit();
                let errors = task.vips().1;
                let key = task.key();
                let task = Arc::new(task);
                if key.is_legacy() {
                    self.legacy.insert(key.id.clone(), task);
                } else {
                    if let Some(old) = self.tasks.get(&key).cloned() {
                        self.unshadow(&old);
                    }
                    *self
                        .keyed_ids
                        .entry((task.framework.clone(), key.id.clone()))
                        .or_default() += 1;
                    self.publish(key.clone(), task);
                }
                self.refresh_legacy(&key.id);
                return errors;
            }
            Record::Agent(a) => {
                self.agents.insert(a.id.clone(), Arc::new(a));
            }
            Record::Framework(f) => {
                self.frameworks.insert(f.id.clone(), Arc::new(f));
            }
            Record::Master(m) => {
                self.masters.insert(m.id.clone(), Arc::new(m));
            }
            Record::Leader(l) => self.leader = Some(Arc::new(l)),
            Record::VipAddress(v) => {
                self.vip_addresses.insert(v.name.clone(), Arc::new(v));
            }
        }
        Vec::new()
    }

    /// Removes a record; removing one that is not there is not an error.
    pub fn remove(&mut self, key: &RecordKey) {
        match key {
            RecordKey::Task(task) => {
                if task.is_legacy() {
                    self.legacy.remove(&task.id);
                } else if let Some(old) = self.tasks.get(task).cloned() {
                    self.unshadow(&old);
                }
                self.unpublish(task);
                self.refresh_legacy(&task.id);
            }
            RecordKey::Agent(id) => drop(self.agents.remove(id)),
            RecordKey::Framework(id) => drop(self.frameworks.remove(id)),
            RecordKey::Master(id) => drop(self.masters.remove(id)),
            RecordKey::Leader => self.leader = None,
            RecordKey::VipAddress(id) => drop(self.vip_addresses.remove(id)),
        }
    }

    /// A task keyed by framework no longer shadows the legacy task with its id and framework.
    fn unshadow(&mut self, keyed: &Task) {
        let id = (keyed.framework.clone(), keyed.id.clone());
        if let Some(n) = self.keyed_ids.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.keyed_ids.remove(&id);
            }
        }
    }

    /// Serves the legacy task with this id unless a task keyed by framework shadows it.
    fn refresh_legacy(&mut self, id: &str) {
        let key = TaskKey::new("", id);
        match self.legacy.get(id).cloned() {
            Some(task)
                if !self
                    .keyed_ids
                    .contains_key(&(task.framework.clone(), key.id.clone())) =>
            {
                self.publish(key, task)
            }
            _ => self.unpublish(&key),
        }
    }

    fn publish(&mut self, key: TaskKey, task: Arc<Task>) {
        self.unindex_task(&key);
        for (vip, port) in task.vips().0 {
            self.vip_index
                .entry(vip)
                .or_default()
                .insert((key.clone(), port));
        }
        self.tasks.insert(key, task);
    }

    fn unpublish(&mut self, key: &TaskKey) {
        self.unindex_task(key);
        self.tasks.remove(key);
    }

    fn unindex_task(&mut self, key: &TaskKey) {
        let Some(old) = self.tasks.get(key).cloned() else {
            return;
        };
        for (vip, port) in old.vips().0 {
            let backend = (key.clone(), port);
            let now_empty = match self.vip_index.get_mut(&vip) {
                Some(set) => {
                    set.remove(&backend);
                    set.is_empty()
                }
                None => false,
            };
            if now_empty {
                self.vip_index.remove(&vip);
            }
        }
    }

    /// Applies an etcd put. A value that does not decode leaves the state untouched:
    /// the last good version of that key stays.
    pub fn apply_put(&mut self, key: &[u8], value: &[u8]) -> Result<Vec<VipLabelError>, Rejection> {
        let record = keys::decode(key, value)?;
        Ok(self.upsert(record))
    }

    /// Applies an etcd delete.
    pub fn apply_delete(&mut self, key: &[u8]) -> Result<(), Rejection> {
        let key = std::str::from_utf8(key).map_err(|_| Rejection::UnknownKey {
            key: String::from_utf8_lossy(key).into_owned(),
        })?;
        self.remove(&keys::parse_key(key)?);
        Ok(())
    }

    /// The record currently held under `key`, if any (used to keep a last good value).
    pub fn record_at(&self, key: &str) -> Option<Record> {
        Some(match keys::parse_key(key).ok()? {
            RecordKey::Task(t) if t.is_legacy() => {
                Record::Task((**self.legacy.get(&t.id)?).clone())
            }
            RecordKey::Task(t) => Record::Task((**self.tasks.get(&t)?).clone()),
            RecordKey::Agent(id) => Record::Agent((**self.agents.get(&id)?).clone()),
            RecordKey::Framework(id) => Record::Framework((**self.frameworks.get(&id)?).clone()),
            RecordKey::Master(id) => Record::Master((**self.masters.get(&id)?).clone()),
            RecordKey::Leader => Record::Leader((**self.leader.as_ref()?).clone()),
            RecordKey::VipAddress(id) => {
                Record::VipAddress((**self.vip_addresses.get(&id)?).clone())
            }
        })
    }

    /// An immutable snapshot of the current state, O(1).
    pub fn snapshot(&self, revision: i64, source: Source) -> Snapshot {
        Snapshot {
            revision,
            source,
            published_at: SystemTime::now(),
            tasks: self.tasks.clone(),
            agents: self.agents.clone(),
            frameworks: self.frameworks.clone(),
            masters: self.masters.clone(),
            leader: self.leader.clone(),
            vip_addresses: self.vip_addresses.clone(),
            vip_index: self.vip_index.clone(),
        }
    }
}

/// One consistent view of the catalog at one etcd revision (or file version).
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The etcd revision this snapshot includes everything up to (0: nothing loaded).
    pub revision: i64,
    pub source: Source,
    pub published_at: SystemTime,
    /// The tasks served, by framework and id (a legacy task: by id alone).
    pub tasks: OrdMap<TaskKey, Arc<Task>>,
    pub agents: OrdMap<String, Arc<Agent>>,
    pub frameworks: OrdMap<String, Arc<Framework>>,
    pub masters: OrdMap<String, Arc<Master>>,
    pub leader: Option<Arc<Leader>>,
    pub vip_addresses: OrdMap<String, Arc<VipAddress>>,
    vip_index: OrdMap<VipKey, OrdSet<BackendRef>>,
}

/// A VIP resolved against the snapshot: its addresses and the task ports behind it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Vip {
    #[serde(flatten)]
    pub key: VipKey,
    /// The VIP's own address for an IP VIP; the allocated ones for a named VIP (maybe none yet).
    pub addresses: Vec<IpAddr>,
    pub backends: Vec<Backend>,
}

/// One task port behind a VIP, with the addresses and port it is reached at: the agent's and
/// the host port for a port reached through the agent (bridge mode), else the task's own and
/// the port it listens on, as dcos-l4lb picks them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Backend {
    pub task: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub framework_id: String,
    pub agent: String,
    pub ips: Vec<IpAddr>,
    pub port: u16,
    pub state: TaskState,
    pub health: Health,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Relative share of new connections (the task's `LODESTAR_WEIGHT` label, 0..=1000,
    /// default 1). 0 drains like `state = draining`.
    pub weight: u32,
    /// The task's `LODESTAR_LOCALITY` label: the locality policy of the VIPs it backs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
}

/// The task label that sets a backend's load-balancing weight.
pub const WEIGHT_LABEL: &str = "LODESTAR_WEIGHT";

/// A backend's weight from its task's labels: an integer in 0..=1000, else the default 1.
pub fn backend_weight(task: &crate::model::Task) -> u32 {
    task.labels
        .get(WEIGHT_LABEL)
        .and_then(|w| w.trim().parse::<u32>().ok())
        .filter(|w| *w <= 1000)
        .unwrap_or(1)
}

impl Snapshot {
    /// The snapshot published before anything was loaded.
    pub fn empty() -> Self {
        CatalogState::new().snapshot(0, Source::Empty)
    }

    /// Has a store published real content yet?
    pub fn is_loaded(&self) -> bool {
        self.source != Source::Empty
    }

    /// Number of distinct VIPs (name or address, port, protocol).
    pub fn vip_count(&self) -> usize {
        self.vip_index.len()
    }

    /// Every VIP with its backends, in a stable order.
    pub fn vips(&self) -> Vec<Vip> {
        self.vip_index
            .iter()
            .map(|(key, backends)| self.resolve_vip(key, backends))
            .collect()
    }

    /// One VIP, if any task carries it.
    pub fn vip(&self, key: &VipKey) -> Option<Vip> {
        self.vip_index
            .get(key)
            .map(|backends| self.resolve_vip(key, backends))
    }

    fn resolve_vip(&self, key: &VipKey, backends: &OrdSet<BackendRef>) -> Vip {
        let addresses = match &key.name {
            VipName::Ip(ip) => vec![*ip],
            VipName::Named(name) => self
                .vip_addresses
                .get(name)
                .map(|a| a.addresses.clone())
                .unwrap_or_default(),
        };
        let backends = backends
            .iter()
            .filter_map(|(key, reach)| {
                let task = self.tasks.get(key)?;
                let agent = self.agents.get(&task.agent);
                let site = task
                    .site
                    .clone()
                    .or_else(|| agent.and_then(|a| a.site.clone()));
                let ips = if reach.on_agent {
                    match agent.filter(|a| !a.addresses.is_empty()) {
                        Some(a) => a.addresses.clone(),
                        None => task
                            .ips
                            .iter()
                            .filter(|i| i.source == IpSource::Host)
                            .map(|i| i.ip)
                            .collect(),
                    }
                } else {
                    task.ips.iter().map(|i| i.ip).collect()
                };
                Some(Backend {
                    task: task.id.clone(),
                    framework_id: task.framework_id.clone(),
                    agent: task.agent.clone(),
                    ips,
                    port: reach.port,
                    state: task.state,
                    health: task.health,
                    site,
                    weight: backend_weight(task),
                    locality: task.labels.get("LODESTAR_LOCALITY").map(str::to_string),
                })
            })
            .collect();
        Vip {
            key: key.clone(),
            addresses,
            backends,
        }
    }
}

/// The JSON form of a snapshot, as `lodestar snapshot` prints it.
#[derive(Serialize)]
pub struct SnapshotView<'a> {
    pub revision: i64,
    pub source: &'a Source,
    pub tasks: Vec<&'a Task>,
    pub agents: Vec<&'a Agent>,
    pub frameworks: Vec<&'a Framework>,
    pub masters: Vec<&'a Master>,
    pub leader: Option<&'a Leader>,
    pub vip_addresses: Vec<&'a VipAddress>,
    pub vips: Vec<Vip>,
}

impl<'a> From<&'a Snapshot> for SnapshotView<'a> {
    fn from(s: &'a Snapshot) -> Self {
        SnapshotView {
            revision: s.revision,
            source: &s.source,
            tasks: s.tasks.values().map(|t| &**t).collect(),
            agents: s.agents.values().map(|a| &**a).collect(),
            frameworks: s.frameworks.values().map(|f| &**f).collect(),
            masters: s.masters.values().map(|m| &**m).collect(),
            leader: s.leader.as_deref(),
            vip_addresses: s.vip_addresses.values().map(|v| &**v).collect(),
            vips: s.vips(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IpSource, NetworkScope, Port};

    fn task(id: &str, vip: Option<&str>) -> Task {
        let http = Port::tcp(8080).named("http");
        Task::new(id, "web", "marathon", "a1")
            .with_ip("198.18.0.10".parse().unwrap(), IpSource::Netinfo)
            .with_discovery_port(match vip {
                Some(v) => http.with_label("VIP_0", v),
                None => http,
            })
    }

    fn key(framework_id: &str, id: &str) -> RecordKey {
        RecordKey::Task(TaskKey::new(framework_id, id))
    }

    #[test]
    fn vip_index_follows_task_changes() {
        let mut st = CatalogState::new();
        st.upsert(Record::Task(task("a", Some("/web:80"))));
        st.upsert(Record::Task(task("b", Some("/web:80"))));
        let snap = st.snapshot(1, Source::Demo);
        let vips = snap.vips();
        assert_eq!(vips.len(), 1);
        assert_eq!(vips[0].backends.len(), 2);
        assert_eq!(vips[0].key.to_string(), "/web:80/tcp");

        // Moving a task to another VIP takes it out of the first one.
        st.upsert(Record::Task(task("b", Some("/api:81"))));
        st.remove(&key("marathon", "a"));
        let snap2 = st.snapshot(2, Source::Demo);
        let vips: Vec<String> = snap2.vips().iter().map(|v| v.key.to_string()).collect();
        assert_eq!(vips, ["/api:81/tcp"]);
        // The earlier snapshot is untouched.
        assert_eq!(snap.vips().len(), 1);
        assert_eq!(snap.tasks.len(), 2);
    }

    #[test]
    fn the_same_task_id_in_two_frameworks_is_two_tasks() {
        let mut st = CatalogState::new();
        for fw in ["fw-0000", "fw-0001"] {
            st.upsert(Record::Task(
                task("1", Some("/web:80")).with_framework_id(fw),
            ));
        }
        let snap = st.snapshot(1, Source::Demo);
        assert_eq!(snap.tasks.len(), 2);
        let backends = &snap.vip(&snap.vips()[0].key).unwrap().backends;
        let frameworks: Vec<&str> = backends.iter().map(|b| b.framework_id.as_str()).collect();
        assert_eq!(frameworks, ["fw-0000", "fw-0001"]);
        st.remove(&key("fw-0000", "1"));
        assert_eq!(st.snapshot(2, Source::Demo).tasks.len(), 1);
    }

    /// While `mesos-sync` migrates a catalog a task is under its legacy key and its
    /// framework's key at once: it is served once, and never missing.
    #[test]
    fn a_legacy_task_is_shadowed_by_its_keyed_copy() {
        let mut st = CatalogState::new();
        let legacy = task("web.1", Some("/web:80")).with_framework_id("");
        st.upsert(Record::Task(legacy.clone()));
        let served = |st: &CatalogState| {
            let s = st.snapshot(0, Source::Demo);
            let keys: Vec<TaskKey> = s.tasks.keys().cloned().collect();
            let backends = s.vips().iter().map(|v| v.backends.len()).sum::<usize>();
            (keys, backends)
        };
        assert_eq!(served(&st), (vec![TaskKey::new("", "web.1")], 1));
        let keyed = task("web.1", Some("/web:80")).with_framework_id("fw-0001");
        st.upsert(Record::Task(keyed.clone()));
        assert_eq!(served(&st), (vec![TaskKey::new("fw-0001", "web.1")], 1));
        // The legacy value is still held (a bad write to its key keeps it).
        let legacy_key = keys::key(crate::keys::Kind::Task, "web.1");
        assert_eq!(
            st.record_at(&legacy_key),
            Some(Record::Task(legacy.clone()))
        );
        // Removing the keyed copy first (a migration undone) serves the legacy one again.
        st.remove(&key("fw-0001", "web.1"));
        assert_eq!(served(&st), (vec![TaskKey::new("", "web.1")], 1));
        st.upsert(Record::Task(keyed));
        st.remove(&key("", "web.1"));
        assert_eq!(served(&st), (vec![TaskKey::new("fw-0001", "web.1")], 1));
        // A legacy task of another framework name is not the same task.
        let other = task("web.1", None).with_framework_id("");
        let mut other = other;
        other.framework = "chronos".into();
        st.upsert(Record::Task(other));
        assert_eq!(served(&st).0.len(), 2);
    }

    #[test]
    fn a_bridge_port_is_reached_at_the_agent_and_an_overlay_port_at_the_task() {
        let mut st = CatalogState::new();
        st.upsert(Record::Agent(Agent::new(
            "a1",
            "agent-1",
            "198.18.0.1".parse().unwrap(),
        )));
        let bridge = Task::new("bridge.1", "bridge", "marathon", "a1")
            .with_ip("198.18.100.2".parse().unwrap(), IpSource::Netinfo)
            .with_ip("198.18.0.1".parse().unwrap(), IpSource::Host)
            .with_discovery_port(
                Port::tcp(20560)
                    .with_scope(NetworkScope::Host)
                    .with_host_port(20560)
                    .with_container_port(8080)
                    .with_label("VIP_0", "/bridge:80"),
            );
        let overlay = Task::new("overlay.1", "overlay", "marathon", "a1")
            .with_ip("198.18.200.5".parse().unwrap(), IpSource::Netinfo)
            .with_discovery_port(
                Port::tcp(8080)
                    .with_scope(NetworkScope::Container)
                    .with_label("VIP_0", "overlay:80"),
            );
        st.upsert(Record::Task(bridge));
        st.upsert(Record::Task(overlay));
        let snap = st.snapshot(1, Source::Demo);
        let reached: Vec<(String, Vec<IpAddr>, u16)> = snap
            .vips()
            .into_iter()
            .map(|v| {
                (
                    v.key.to_string(),
                    v.backends[0].ips.clone(),
                    v.backends[0].port,
                )
            })
            .collect();
        assert_eq!(
            reached,
            [
                (
                    "/bridge:80/tcp".into(),
                    vec!["198.18.0.1".parse().unwrap()],
                    20560
                ),
                (
                    "/overlay:80/tcp".into(),
                    vec!["198.18.200.5".parse().unwrap()],
                    8080
                ),
            ]
        );
    }

    #[test]
    fn bad_vip_label_keeps_the_task() {
        let mut st = CatalogState::new();
        let errs = st.upsert(Record::Task(task("a", Some("nonsense"))));
        assert_eq!(errs.len(), 1);
        let snap = st.snapshot(1, Source::Demo);
        assert_eq!(snap.tasks.len(), 1);
        assert_eq!(snap.vip_count(), 0);
    }

    #[test]
    fn malformed_put_keeps_last_good_value() {
        let mut st = CatalogState::new();
        let good = Record::Task(task("a", None));
        st.apply_put(good.key().as_bytes(), &good.to_value())
            .unwrap();
        assert!(st.apply_put(good.key().as_bytes(), b"{oops").is_err());
        assert_eq!(st.record_at(&good.key()), Some(good));
    }
}
