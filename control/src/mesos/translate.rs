//! Mesos master state -> catalog records: running tasks (and killing ones, as draining) of every
//! framework, keyed by framework and id, with their addresses by source, ports and port mappings,
//! DiscoveryInfo and VIP labels; agents with their site; frameworks; masters and the leader.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::keys::Record;
use crate::mesos::state::{self, parse_pid, parse_port_ranges, State};
use crate::model::{
    is_vip_label, parse_vip_label, task_vip_label, Agent, DiscoveryInfo, Framework, Health,
    IpSource, Labels, Leader, Master, NetworkScope, Port, Protocol, Task, TaskIp, TaskKey,
    TaskState, VipLabelError, VipName,
};

/// Ports taken from one task's port resource at most (a `[1-65535]` range is not 65,535 ports).
const MAX_RESOURCE_PORTS: usize = 1000;

/// The catalog a state document describes.
#[derive(Debug, Default)]
pub struct Translation {
    pub records: Vec<Record>,
    /// Named VIPs (`/group/app`) that need an address.
    pub named_vips: BTreeSet<String>,
    /// VIP labels refused, with why (neither `name:port` nor `ip:port`, a `VIP_PORT<n>` that
    /// names no port, ...).
    pub rejected_vip_labels: Vec<VipLabelError>,
    /// Tasks one framework reports twice (a master does not; the first is kept).
    pub duplicate_task_ids: Vec<TaskKey>,
}

/// Translates a state document. `masters` are the configured masters (host, port) in order.
pub fn translate(state: &State, masters: &[(String, u16)], site_attribute: &str) -> Translation {
    let mut t = Translator::new(site_attribute);
    for slave in &state.slaves {
        t.slave(slave);
    }
    for fw in &state.frameworks {
        let first = t.framework_tasks_start();
        for task in &fw.tasks {
            t.task(task);
        }
        t.framework(
            fw.id.clone(),
            fw.name.clone(),
            fw.pid.as_deref(),
            fw.hostname.clone(),
            first,
        );
    }
    t.finish(masters, state.leader.as_deref(), state.leader_info.as_ref())
}

/// A translation built piece by piece, in whatever order a state document lists its agents,
/// frameworks and tasks (a document read as it streams in is never held whole): a task's
/// framework name and its agent's addresses are filled in when those are known.
pub struct Translator {
    out: Translation,
    site_attribute: String,
    agent_ips: BTreeMap<String, Vec<IpAddr>>,
    task_ids: BTreeSet<(String, String)>,
}

impl Translator {
    pub fn new(site_attribute: &str) -> Translator {
        Translator {
            out: Translation::default(),
            site_attribute: site_attribute.to_string(),
            agent_ips: BTreeMap::new(),
            task_ids: BTreeSet::new(),
        }
    }

    /// An agent (`slaves` entry).
    pub fn slave(&mut self, slave: &state::Slave) {
        let addresses: Vec<IpAddr> = parse_pid(&slave.pid)
            .and_then(|(host, _)| host.parse().ok())
            .into_iter()
            .collect();
        self.agent_ips.insert(slave.id.clone(), addresses.clone());
        let site = slave
            .attributes
            .get(&self.site_attribute)
            .and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
        self.out.records.push(Record::Agent(Agent {
            id: slave.id.clone(),
            hostname: slave.hostname.clone(),
            addresses,
            site,
        }));
    }

    /// Where the tasks of the framework about to be read begin (for `framework`).
    pub fn framework_tasks_start(&self) -> usize {
        self.out.records.len()
    }

    /// A task of the framework being read (its name is set by `framework`).
    pub fn task(&mut self, task: &state::Task) {
        let state = match task.state.as_str() {
            "TASK_RUNNING" => TaskState::Running,
            "TASK_KILLING" => TaskState::Draining,
            _ => return,
        };
        // The task's own framework_id, not the list it is in: they agree in a master's state.
        if !self
            .task_ids
            .insert((task.framework_id.clone(), task.id.clone()))
        {
            self.out
                .duplicate_task_ids
                .push(TaskKey::new(task.framework_id.clone(), task.id.clone()));
            return;
        }
        let task = translate_task(task, "", state, &mut self.out);
        self.out.records.push(Record::Task(task));
    }

    /// The framework whose tasks were read since `first` (from `framework_tasks_start`).
    pub fn framework(
        &mut self,
        id: String,
        name: String,
        pid: Option<&str>,
        hostname: Option<String>,
        first: usize,
    ) {
        let first = first.min(self.out.records.len());
        for r in &mut self.out.records[first..] {
            if let Record::Task(t) = r {
                t.framework.clone_from(&name);
            }
        }
        let pid = pid.and_then(parse_pid);
        let addresses: Vec<IpAddr> = pid
            .as_ref()
            .and_then(|(h, _)| h.parse().ok())
            .into_iter()
            .collect();
        self.out.records.push(Record::Framework(Framework {
            id,
            name,
            hostname,
            addresses,
            port: pid.map(|(_, p)| p),
        }));
    }

    /// The translation, with each task's agent addresses, the masters and the leader.
    pub fn finish(
        mut self,
        masters: &[(String, u16)],
        leader: Option<&str>,
        leader_info: Option<&state::MasterInfo>,
    ) -> Translation {
        let mut out = std::mem::take(&mut self.out);
        for r in &mut out.records {
            let Record::Task(t) = r else { continue };
            for &ip in self.agent_ips.get(&t.agent).into_iter().flatten() {
                if !t
                    .ips
                    .iter()
                    .any(|have| have.ip == ip && have.source == IpSource::Host)
                {
                    t.ips.push(TaskIp {
                        ip,
                        source: IpSource::Host,
                    });
                }
            }
        }
        let leader = leader.and_then(parse_pid);
        let mut seen = BTreeSet::new();
        let mut index = 0;
        for (host, port) in masters.iter().cloned().chain(leader.clone()) {
            let Ok(address) = host.parse::<IpAddr>() else {
                continue;
            };
            if !seen.insert((address, port)) {
                continue;
            }
            out.records.push(Record::Master(Master {
                id: format!("master-{index}"),
                hostname: None,
                address,
                port,
            }));
            index += 1;
        }
        if let Some((host, port)) = leader {
            if let Ok(address) = host.parse::<IpAddr>() {
                out.records.push(Record::Leader(Leader {
                    hostname: leader_info.and_then(|i| i.hostname.clone()),
                    address,
                    port,
                }));
            }
        }
        out
    }
}

fn translate_task(
    task: &state::Task,
    framework: &str,
    state: TaskState,
    out: &mut Translation,
) -> Task {
    // The newest TASK_RUNNING status carries the addresses (Mesos-DNS does the same).
    let status = task
        .statuses
        .iter()
        .filter(|s| s.state == "TASK_RUNNING")
        .max_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
    let mut ips = Vec::new();
    let mut push = |ip: Option<&str>, source| {
        if let Some(ip) = ip.and_then(|s| s.parse::<IpAddr>().ok()) {
            if !ips
                .iter()
                .any(|t: &TaskIp| t.ip == ip && t.source == source)
            {
                ips.push(TaskIp { ip, source });
            }
        }
    };
    if let Some(s) = status {
        for ni in s.container_status.iter().flat_map(|c| &c.network_infos) {
            for a in &ni.ip_addresses {
                push(a.ip_address.as_deref(), IpSource::Netinfo);
            }
            push(ni.ip_address.as_deref(), IpSource::Netinfo);
        }
        for (key, source) in [
            (
                "MesosContainerizer.NetworkSettings.IPAddress",
                IpSource::Mesos,
            ),
            ("Docker.NetworkSettings.IPAddress", IpSource::Docker),
        ] {
            for l in s.labels.iter().filter(|l| l.key == key) {
                push(Some(&l.value), source);
            }
        }
    }
    let mappings = port_mappings(task, status);
    // Resource ports are the agent's; in bridge mode a mapping names the container's port.
    let ports = task
        .resources
        .ports
        .as_deref()
        .map(|p| parse_port_ranges(p, MAX_RESOURCE_PORTS))
        .unwrap_or_default()
        .into_iter()
        .map(
            |number| match mappings.iter().find(|m| m.host_port == number) {
                Some(m) => Port::new(number)
                    .with_host_port(number)
                    .with_container_port(m.container_port),
                None => Port::new(number),
            },
        )
        .collect();
    let discovery = task.discovery.as_ref().map(|d| DiscoveryInfo {
        name: d.name.clone().filter(|n| !n.is_empty()),
        ports: d
            .ports
            .iter()
            .flat_map(|p| &p.ports)
            .filter_map(|p| discovery_port(p, &mappings, out))
            .collect(),
        labels: d
            .labels
            .iter()
            .flat_map(|l| &l.labels)
            .map(|l| (l.key.clone(), l.value.clone()))
            .collect(),
    });
    let mut translated = Task {
        id: task.id.clone(),
        framework_id: task.framework_id.clone(),
        name: task.name.clone(),
        framework: framework.to_string(),
        agent: task.slave_id.clone(),
        state,
        ips,
        ports,
        discovery,
        labels: Labels::default(),
        // dcos-net's rule: a task with a Mesos health check that has not reported yet is not
        // healthy; without one, its health is unknown.
        health: match status.and_then(|s| s.healthy) {
            Some(true) => Health::Healthy,
            Some(false) => Health::Unhealthy,
            None if task.health_check.is_some() => Health::Unhealthy,
            None => Health::Unknown,
        },
        site: None,
    };
    translated.labels = task_labels(task, &translated.ports, out);
    translated
}

/// One port mapping, agent port -> container port.
struct Mapping {
    host_port: u16,
    container_port: u16,
    protocol: Protocol,
}

/// The task's port mappings, where dcos-net finds them: Docker's in `container.docker`; the
/// Mesos containerizer's in `container.network_infos`, or for a pod (whose network is its
/// executor's) in the status's `container_status.network_infos`. Mappings of other protocols
/// (Docker's `sctp`) are left out; one without a protocol is tcp, as Docker makes it.
fn port_mappings(task: &state::Task, status: Option<&state::Status>) -> Vec<Mapping> {
    let container = task.container.as_ref();
    let raw: Vec<&state::PortMapping> = match container.and_then(|c| c.kind.as_deref()) {
        Some("DOCKER") => container
            .and_then(|c| c.docker.as_ref())
            .map(|d| d.port_mappings.iter().collect())
            .unwrap_or_default(),
        _ => {
            let own = container.map(|c| &c.network_infos[..]).unwrap_or_default();
            let infos = if own.is_empty() {
                status
                    .and_then(|s| s.container_status.as_ref())
                    .map(|c| &c.network_infos[..])
                    .unwrap_or_default()
            } else {
                own
            };
            infos.iter().flat_map(|ni| &ni.port_mappings).collect()
        }
    };
    raw.into_iter()
        .filter_map(|m| {
            Some(Mapping {
                host_port: u16::try_from(m.host_port).ok().filter(|p| *p != 0)?,
                container_port: u16::try_from(m.container_port).ok().filter(|p| *p != 0)?,
                protocol: match m.protocol.as_deref() {
                    None => Protocol::Tcp,
                    Some(p) => p.parse().ok()?,
                },
            })
        })
        .collect()
}

/// A DiscoveryInfo port, with what its `network-scope` label says and the port mapping that
/// goes with it (matched on protocol and the host or container port, as dcos-net merges them).
/// Port 0 (Marathon's placeholder for a virtual-network app without ports) is dropped.
fn discovery_port(
    p: &state::DiscoveryPort,
    mappings: &[Mapping],
    out: &mut Translation,
) -> Option<Port> {
    let number = u16::try_from(p.number).ok().filter(|n| *n != 0)?;
    let labels = labels_of(p.labels.as_ref(), out);
    let protocol = p
        .protocol
        .as_deref()
        .and_then(|s| s.parse::<Protocol>().ok());
    let scope = labels
        .get(NetworkScope::LABEL)
        .and_then(NetworkScope::from_label);
    let same_protocol = |m: &&Mapping| protocol.is_none_or(|p| p == m.protocol);
    let mut port = Port {
        number,
        name: p.name.clone().filter(|n| !n.is_empty()),
        protocol,
        host_port: None,
        container_port: None,
        scope,
        labels,
    };
    if scope == Some(NetworkScope::Host) {
        port.host_port = Some(number);
        let mapping = mappings
            .iter()
            .filter(same_protocol)
            .find(|m| m.host_port == number);
        port.container_port = mapping.map(|m| m.container_port);
    } else if let Some(m) = mappings
        .iter()
        .filter(same_protocol)
        .find(|m| m.container_port == number)
    {
        port.host_port = Some(m.host_port);
        port.container_port = Some(m.container_port);
    }
    Some(port)
}

/// The task's labels, with its `VIP_PORT<n>` labels checked against its resource ports.
fn task_labels(task: &state::Task, ports: &[Port], out: &mut Translation) -> Labels {
    let labels = task.labels.iter();
    checked_labels(labels, out, |l| {
        task_vip_label(&l.key, &l.value).map(|found| {
            found.and_then(|(index, _, label)| {
                if index >= ports.len() {
                    return Err(VipLabelError {
                        value: l.value.clone(),
                        reason: "the VIP_PORT index names no port of the task's ports resource",
                    });
                }
                parse_vip_label(label)
            })
        })
    })
}

/// Port labels, with VIP labels checked.
fn labels_of(labels: Option<&state::Labels>, out: &mut Translation) -> Labels {
    let labels = labels.iter().flat_map(|l| &l.labels);
    checked_labels(labels, out, |l| {
        is_vip_label(&l.key).then(|| parse_vip_label(&l.value))
    })
}

/// Labels, with those `vip` says are VIP labels checked: a bad one is dropped and counted with
/// its reason; a named VIP is noted for address allocation.
fn checked_labels<'a>(
    labels: impl Iterator<Item = &'a state::Label>,
    out: &mut Translation,
    vip: impl Fn(&state::Label) -> Option<Result<(VipName, u16), VipLabelError>>,
) -> Labels {
    let mut kept = Labels::default();
    for l in labels {
        match vip(l) {
            Some(Ok((VipName::Named(name), _))) => drop(out.named_vips.insert(name)),
            Some(Err(e)) => {
                out.rejected_vip_labels.push(e);
                continue;
            }
            Some(Ok(_)) | None => {}
        }
        kept.insert(l.key.clone(), l.value.clone());
    }
    kept
}

/// States shaped like real Mesos output: the tasks are dcos-net's `operator-api.json`,
/// `vip-labels.json`, `hello-overlay.json` and `unhealthy.json` shapes in the v0
/// `/master/state` form (`dcos/mesos_state`'s fixtures), with their addresses moved into
/// 198.18.0.0/15.
#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::model::{BackendPort, VipKey};

    const FW: &str = "30257977-0153-499d-a5b0-35afd842ef4d-0001";

    fn translated(tasks: Vec<Value>) -> Translation {
        let state: State = serde_json::from_value(json!({
            "leader": "master@198.18.0.2:5050",
            "slaves": [{"id": "30257977-0153-499d-a5b0-35afd842ef4d-S1",
                        "pid": "slave(1)@198.18.0.4:5051", "hostname": "198.18.0.4"}],
            "frameworks": [{"id": FW, "name": "marathon", "pid": "scheduler-1@198.18.0.2:15101",
                            "tasks": tasks}]
        }))
        .unwrap();
        translate(&state, &[], "site")
    }

    fn tasks(t: &Translation) -> Vec<&Task> {
        t.records
            .iter()
            .filter_map(|r| match r {
                Record::Task(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    /// A running Marathon task in v0 form: `extra` is merged into it.
    fn mesos_task(name: &str, ip: &str, extra: Value) -> Value {
        let mut t = json!({
            "id": format!("{name}.0ef76549-2630-11e8-af52-70b3d5800001"),
            "name": name,
            "framework_id": FW,
            "slave_id": "30257977-0153-499d-a5b0-35afd842ef4d-S1",
            "state": "TASK_RUNNING",
            "resources": {"cpus": 0.1, "mem": 32.0, "disk": 0.0, "gpus": 0.0},
            "statuses": [
                {"state": "TASK_STARTING", "timestamp": 1521215058.1},
                {"state": "TASK_RUNNING", "timestamp": 1521215060.2,
                 "container_status": {"network_infos": [
                     {"ip_addresses": [{"protocol": "IPv4", "ip_address": ip}], "labels": []}]}}
            ]
        });
        for (k, v) in extra.as_object().unwrap() {
            t[k] = v.clone();
        }
        t
    }

    fn http_port(number: u32, labels: Value) -> Value {
        json!({"ports": {"ports": [
            {"number": number, "name": "http", "protocol": "tcp", "labels": {"labels": labels}}]}})
    }

    fn vip(name: &str, port: u16) -> VipKey {
        VipKey {
            name: VipName::Named(name.into()),
            port,
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn bridge_mode_ports_are_reached_at_the_agent_and_overlay_ports_at_the_task() {
        let scope_host = json!([{"key": "VIP_0", "value": "/app:80"},
                                {"key": "network-scope", "value": "host"}]);
        let t = translated(vec![
            // Docker bridge: the mapping is in container.docker.
            mesos_task(
                "docker-on-bridge",
                "198.19.18.2",
                json!({
                    "resources": {"ports": "[20560-20560]"},
                    "discovery": {"visibility": "FRAMEWORK", "name": "docker-on-bridge",
                                  "ports": http_port(20560, scope_host.clone())["ports"]},
                    "container": {"type": "DOCKER", "docker": {"image": "python:3-alpine",
                        "network": "BRIDGE",
                        "port_mappings": [{"host_port": 20560, "container_port": 8080, "protocol": "tcp"}]}}
                }),
            ),
            // UCR bridge: on the task's network_info, whose address only the status has.
            mesos_task(
                "ucr-on-bridge",
                "198.19.254.3",
                json!({
                    "resources": {"ports": "[15263-15263]"},
                    "discovery": {"visibility": "FRAMEWORK", "name": "ucr-on-bridge",
                                  "ports": http_port(15263, scope_host.clone())["ports"]},
                    "container": {"type": "MESOS", "network_infos": [{
                        "ip_addresses": [{"protocol": "IPv4"}], "name": "mesos-bridge", "labels": {},
                        "port_mappings": [{"host_port": 15263, "container_port": 8080, "protocol": "tcp"}]}]}
                }),
            ),
            // A pod on the bridge: no container.network_infos; the status carries the mapping.
            {
                let mut t = mesos_task(
                    "pod-on-bridge",
                    "198.19.254.4",
                    json!({
                        "resources": {"ports": "[2254-2254]"},
                        "discovery": {"visibility": "FRAMEWORK", "name": "pod-on-bridge",
                                      "ports": http_port(2254, scope_host)["ports"]},
                        "container": {"type": "MESOS", "mesos": {"image": {"type": "DOCKER"}}}
                    }),
                );
                t["statuses"][1]["container_status"]["network_infos"][0]["port_mappings"] =
                    json!([{"host_port": 2254, "container_port": 8080, "protocol": "tcp"}]);
                t
            },
            // Docker on a virtual network: the number is the container's port.
            mesos_task(
                "docker-on-dcos",
                "198.19.2.130",
                json!({
                    "discovery": {"visibility": "FRAMEWORK", "name": "docker-on-dcos",
                        "ports": http_port(8080, json!([{"key": "VIP_0", "value": "/app:80"},
                            {"key": "network-scope", "value": "container"},
                            {"key": "network-name", "value": "dcos"}]))["ports"]},
                    "container": {"type": "DOCKER", "docker": {"image": "nginx", "network": "USER"},
                        "network_infos": [{"ip_addresses": [{"protocol": "IPv4"}], "name": "dcos"}]}
                }),
            ),
            // No ports at all on the overlay: Marathon's placeholder port 0.
            mesos_task(
                "none-on-dcos",
                "198.19.2.5",
                json!({
                    "discovery": {"visibility": "FRAMEWORK", "name": "none-on-dcos",
                        "ports": {"ports": [{"number": 0, "name": "default", "protocol": "tcp"}]}}
                }),
            ),
        ]);
        assert!(
            t.rejected_vip_labels.is_empty(),
            "{:?}",
            t.rejected_vip_labels
        );
        type Ports = Vec<(u16, Option<u16>, Option<u16>)>;
        let ports: Vec<(&str, Ports)> = tasks(&t)
            .iter()
            .map(|task| {
                let d = task.discovery.as_ref().unwrap();
                let ports = d.ports.iter();
                (
                    task.name.as_str(),
                    ports
                        .map(|p| (p.number, p.host_port, p.container_port))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                ("docker-on-bridge", vec![(20560, Some(20560), Some(8080))]),
                ("ucr-on-bridge", vec![(15263, Some(15263), Some(8080))]),
                ("pod-on-bridge", vec![(2254, Some(2254), Some(8080))]),
                ("docker-on-dcos", vec![(8080, None, None)]),
                ("none-on-dcos", vec![]),
            ]
        );
        // The resource port of a bridge-mode task knows its container port too.
        let docker = tasks(&t)[0];
        assert_eq!(docker.ports[0].container_port, Some(8080));
        assert!(docker.has_host_ports());
        assert!(!tasks(&t)[3].has_host_ports());
        // VIP backends as dcos-l4lb picks them.
        let backends: Vec<(&str, BackendPort)> = tasks(&t)
            .iter()
            .flat_map(|task| {
                task.vips()
                    .0
                    .into_iter()
                    .map(|(_, b)| (task.name.as_str(), b))
            })
            .collect();
        let at = |port, on_agent| BackendPort { port, on_agent };
        assert_eq!(
            backends,
            [
                ("docker-on-bridge", at(20560, true)),
                ("ucr-on-bridge", at(15263, true)),
                ("pod-on-bridge", at(2254, true)),
                ("docker-on-dcos", at(8080, false)),
            ]
        );
    }

    /// dcos-net's `vip-labels.json`: task labels `vip_portN` on the ports resource and port
    /// labels `VIP_N`, names with and without the leading slash.
    #[test]
    fn every_vip_label_form_dcos_net_takes() {
        let t = translated(vec![mesos_task(
            "app",
            "198.18.0.4",
            json!({
                "resources": {"ports": "[9999-10002]"},
                "labels": [{"value": "tcp://def:80", "key": "vip_port0"},
                           {"value": "tcp://jkl:80", "key": "vip_port1"},
                           {"value": "tcp://far:80", "key": "VIP_PORT9"},
                           {"value": "sctp://x:80", "key": "VIP_PORT2"}],
                "discovery": {"visibility": "FRAMEWORK", "name": "app", "ports": {"ports": [
                    {"protocol": "tcp", "number": 9999, "name": "foo", "labels": {"labels": [
                        {"value": "/abc:80", "key": "VIP_0"}, {"value": "/cbd:80", "key": "VIP_1"}]}},
                    {"protocol": "tcp", "number": 10000, "name": "bar"},
                    {"protocol": "tcp", "number": 10001, "name": "baz", "labels": {"labels": [
                        {"value": "/xyz:443", "key": "VIP_2"}]}},
                    {"protocol": "tcp", "number": 10002, "name": "qux", "labels": {"labels": [
                        {"value": "overlay-vip:80", "key": "VIP_d8c37956-f5e8-4c3c-870d-306b40dd1492"},
                        {"value": "/sdk:80", "key": "vip_0"},
                        {"value": "no-port", "key": "VIP_9"}]}}]}}
            }),
        )]);
        let task = tasks(&t)[0];
        let mut vips: Vec<(String, u16)> = task
            .vips()
            .0
            .into_iter()
            .map(|(k, b)| (k.to_string(), b.port))
            .collect();
        vips.sort();
        assert_eq!(
            vips,
            [
                ("/abc:80/tcp".to_string(), 9999),
                ("/cbd:80/tcp".into(), 9999),
                ("/def:80/tcp".into(), 9999),
                ("/jkl:80/tcp".into(), 10000),
                ("/overlay-vip:80/tcp".into(), 10002),
                ("/sdk:80/tcp".into(), 10002),
                ("/xyz:443/tcp".into(), 10001),
            ]
        );
        let named: Vec<&str> = t.named_vips.iter().map(String::as_str).collect();
        assert_eq!(
            named,
            [
                "/abc",
                "/cbd",
                "/def",
                "/jkl",
                "/overlay-vip",
                "/sdk",
                "/xyz"
            ]
        );
        // Each refusal is counted with its reason; the task keeps every good label.
        let mut refused: Vec<(&str, &str)> = t
            .rejected_vip_labels
            .iter()
            .map(|e| (e.value.as_str(), e.reason))
            .collect();
        refused.sort();
        assert_eq!(
            refused,
            [
                ("no-port", "no :port"),
                (
                    "sctp://x:80",
                    "a VIP_PORT label is tcp://name:port or udp://name:port"
                ),
                (
                    "tcp://far:80",
                    "the VIP_PORT index names no port of the task's ports resource"
                ),
            ]
        );
        assert_eq!(task.vips().1, []);
        // `/abc:80` and `abc:80` are one VIP.
        assert_eq!(parse_vip_label("abc:80"), parse_vip_label("/abc:80"));
        assert!(task.vips().0.iter().any(|(k, _)| *k == vip("/abc", 80)));
    }

    /// dcos-net's `unhealthy.json`: a Mesos health check, no verdict yet: not healthy.
    #[test]
    fn a_health_check_without_a_verdict_is_unhealthy() {
        let check = json!({"delay_seconds": 15.0, "interval_seconds": 60.0, "timeout_seconds": 10.0,
            "consecutive_failures": 3, "grace_period_seconds": 150.0, "type": "HTTP",
            "http": {"protocol": "IPv4", "scheme": "http", "port": 80, "path": "/"}});
        let mut healthy = mesos_task("checked", "198.19.1.3", json!({"health_check": check}));
        healthy["id"] = json!("checked.2");
        healthy["statuses"][1]["healthy"] = json!(true);
        let t = translated(vec![
            mesos_task("checked", "198.19.1.3", json!({"health_check": check})),
            healthy,
            mesos_task("unchecked", "198.19.1.4", json!({})),
        ]);
        let health: Vec<Health> = tasks(&t).iter().map(|t| t.health).collect();
        assert_eq!(
            health,
            [Health::Unhealthy, Health::Healthy, Health::Unknown]
        );
    }

    /// Task ids are unique per framework only (two Marathons, Mesos-DNS's `state_di.json`):
    /// both tasks are kept, each keyed by its framework.
    #[test]
    fn two_frameworks_with_one_task_id_are_two_tasks() {
        let mut other = mesos_task("web", "198.19.1.9", json!({}));
        other["framework_id"] = json!("30257977-0153-499d-a5b0-35afd842ef4d-0000");
        let state: State = serde_json::from_value(json!({
            "slaves": [{"id": "30257977-0153-499d-a5b0-35afd842ef4d-S1",
                        "pid": "slave(1)@198.18.0.4:5051", "hostname": "198.18.0.4"}],
            "frameworks": [
                {"id": FW, "name": "marathon", "tasks": [mesos_task("web", "198.19.1.8", json!({}))]},
                {"id": "30257977-0153-499d-a5b0-35afd842ef4d-0000", "name": "marathon",
                 "tasks": [other.clone(), other]}
            ]
        }))
        .unwrap();
        let t = translate(&state, &[], "site");
        let keys: Vec<TaskKey> = tasks(&t).iter().map(|t| t.key()).collect();
        let id = "web.0ef76549-2630-11e8-af52-70b3d5800001";
        assert_eq!(
            keys,
            [
                TaskKey::new(FW, id),
                TaskKey::new("30257977-0153-499d-a5b0-35afd842ef4d-0000", id)
            ]
        );
        // A framework reporting one id twice (Mesos-DNS's fake.json): the first is kept.
        assert_eq!(
            t.duplicate_task_ids,
            [TaskKey::new(
                "30257977-0153-499d-a5b0-35afd842ef4d-0000",
                id
            )]
        );
    }

    /// A port mapping without its ports or with an unknown protocol is skipped, not the state.
    #[test]
    fn a_broken_port_mapping_loses_only_itself() {
        let t = translated(vec![mesos_task(
            "docker",
            "198.19.18.9",
            json!({
                "resources": {"ports": "[20000-20001]"},
                "container": {"type": "DOCKER", "docker": {"image": "x", "network": "BRIDGE",
                    "port_mappings": [{"container_port": 80}, {"host_port": 20000, "container_port": 81,
                        "protocol": "sctp"}, {"host_port": 20001, "container_port": 82}]}}
            }),
        )]);
        let ports: Vec<(u16, Option<u16>)> = tasks(&t)[0]
            .ports
            .iter()
            .map(|p| (p.number, p.container_port))
            .collect();
        assert_eq!(ports, [(20000, None), (20001, Some(82))]);
    }
}
