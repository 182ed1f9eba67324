//! The catalog model: what etcd (or a catalog file) says about tasks, agents,
//! frameworks, masters and VIP addresses. Every value is plain JSON with a schema version.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The schema version this build reads and writes. A value with another version is rejected.
pub const SCHEMA_VERSION: u32 = 1;

/// Layer-4 protocol of a port or a VIP.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that names none of an enumeration's values (a protocol, an IP source).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?} (expected {expected})")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl FromStr for Protocol {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            other => Err(UnknownValue {
                what: "protocol",
                value: other.to_string(),
                expected: "tcp or udp",
            }),
        }
    }
}

/// Key/value labels, stored as a small vector: most carry one to three entries, and a map
/// per task, per port would cost a kilobyte each at 100,000 tasks. Serialized as a JSON
/// object / TOML table; a repeated key keeps its last value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `key`, replacing an earlier value.
    pub fn insert(&mut self, key: String, value: String) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }
}

impl FromIterator<(String, String)> for Labels {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut labels = Labels::default();
        for (k, v) in iter {
            labels.insert(k, v);
        }
        labels
    }
}

impl<const N: usize> From<[(String, String); N]> for Labels {
    fn from(pairs: [(String, String); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl Serialize for Labels {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Labels;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of string labels")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Labels, A::Error> {
                let mut labels = Labels(Vec::with_capacity(map.size_hint().unwrap_or(0).min(64)));
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    labels.insert(k, v);
                }
                labels.0.shrink_to_fit();
                Ok(labels)
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// Whether a task takes new connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Serving: gets DNS records and new VIP connections.
    #[default]
    Running,
    /// Being killed: keeps its open connections, gets no new ones.
    Draining,
}

/// The scheduler's (or a health checker's) verdict on a task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No health check is defined or none has reported yet.
    #[default]
    Unknown,
    Healthy,
    Unhealthy,
}

/// Where a task address was learnt from, named as in Mesos-DNS's `IPSources`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpSource {
    /// `statuses[].container_status.network_infos[].ip_addresses[]`.
    Netinfo,
    /// The `MesosContainerizer.NetworkSettings.IPAddress` status label.
    Mesos,
    /// The `Docker.NetworkSettings.IPAddress` status label.
    Docker,
    /// The address of the agent the task runs on.
    Host,
}

impl FromStr for IpSource {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "netinfo" => Ok(IpSource::Netinfo),
            "mesos" => Ok(IpSource::Mesos),
            "docker" => Ok(IpSource::Docker),
            "host" => Ok(IpSource::Host),
            other => Err(UnknownValue {
                what: "IP source",
                value: other.to_string(),
                expected: "netinfo, mesos, docker or host",
            }),
        }
    }
}

/// One task address and its source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskIp {
    pub ip: IpAddr,
    pub source: IpSource,
}

/// What a DiscoveryInfo port's number means: Marathon's `network-scope` port label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkScope {
    /// A port of the agent (bridge mode): the number is the host port.
    Host,
    /// A port of the container's own network (a virtual network): the number is the
    /// container's port.
    Container,
}

impl NetworkScope {
    /// The port label that carries it.
    pub const LABEL: &'static str = "network-scope";

    pub fn from_label(value: &str) -> Option<NetworkScope> {
        match value {
            "host" => Some(NetworkScope::Host),
            "container" => Some(NetworkScope::Container),
            _ => None,
        }
    }
}

/// A port: from the task's `ports` resource or from its DiscoveryInfo.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// The number Mesos gives: an agent port for a resource port; for a DiscoveryInfo port
    /// whatever the framework wrote (see `scope`). DNS publishes it as Mesos-DNS does.
    pub number: u16,
    pub name: Option<String>,
    /// `None` for resource ports, which Mesos-DNS publishes under both `_tcp` and `_udp`.
    pub protocol: Option<Protocol>,
    /// The agent port that reaches this one, when it is reached through the agent: a port
    /// mapping's host port (Docker or UCR bridge mode), or the number of a `network-scope:
    /// host` port. A VIP then sends to the agent's address and this port, as dcos-net does.
    pub host_port: Option<u16>,
    /// The port inside the container, from a port mapping.
    pub container_port: Option<u16>,
    /// The `network-scope` port label, when the framework gave one.
    pub scope: Option<NetworkScope>,
    /// Port labels; a key starting with `VIP` or `vip` puts the task behind a VIP.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

/// Mesos DiscoveryInfo: the name and ports a task asks to be discovered by.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryInfo {
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

/// A task's identity: Mesos makes task ids unique within a framework only, so two Spark or
/// two Marathon frameworks may each run a task `1`. An empty `framework_id` is a task written
/// before the catalog keyed tasks by framework (a legacy key, `docs/etcd-schema.md`).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskKey {
    pub framework_id: String,
    pub id: String,
}

impl TaskKey {
    pub fn new(framework_id: impl Into<String>, id: impl Into<String>) -> TaskKey {
        TaskKey {
            framework_id: framework_id.into(),
            id: id.into(),
        }
    }

    /// A key from before tasks were keyed by framework.
    pub fn is_legacy(&self) -> bool {
        self.framework_id.is_empty()
    }
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_legacy() {
            write!(f, "{}", self.id)
        } else {
            write!(f, "{} (framework {})", self.id, self.framework_id)
        }
    }
}

/// A task: one key in etcd, so that a change to it is one small watch event.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    pub id: String,
    /// The id of the framework that runs it: with `id`, the task's identity (`TaskKey`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub framework_id: String,
    pub name: String,
    /// The framework's name (what DNS names use), e.g. `marathon`.
    pub framework: String,
    /// The agent id the task runs on.
    pub agent: String,
    #[serde(default)]
    pub state: TaskState,
    /// Addresses in source order; DNS applies its configured source preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<TaskIp>,
    /// The task's `ports` resource: agent ports (a bridge-mode one with its container port).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    pub discovery: Option<DiscoveryInfo>,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    #[serde(default)]
    pub health: Health,
    /// The task's site, when known; otherwise its agent's.
    pub site: Option<String>,
}

/// A Mesos agent (a node that runs tasks).
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    pub id: String,
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpAddr>,
    pub site: Option<String>,
}

impl Agent {
    /// An agent at one address, of no known site.
    pub fn new(id: impl Into<String>, hostname: impl Into<String>, address: IpAddr) -> Agent {
        Agent {
            id: id.into(),
            hostname: hostname.into(),
            addresses: vec![address],
            site: None,
        }
    }

    /// The site the agent is in (its Mesos `site` attribute).
    pub fn with_site(mut self, site: impl Into<String>) -> Agent {
        self.site = Some(site.into());
        self
    }
}

/// A framework (scheduler) and where it listens.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Framework {
    pub id: String,
    pub name: String,
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpAddr>,
    pub port: Option<u16>,
}

/// A Mesos master.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Master {
    pub id: String,
    pub hostname: Option<String>,
    pub address: IpAddr,
    pub port: u16,
}

/// The leading master.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Leader {
    pub hostname: Option<String>,
    pub address: IpAddr,
    pub port: u16,
}

/// The addresses allocated to a named VIP (`/group/app`), one per family at most.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipAddress {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpAddr>,
}

/// What a VIP is called: a name (`/group/app`) that gets an allocated address, or an address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VipName {
    Named(String),
    Ip(IpAddr),
}

impl fmt::Display for VipName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VipName::Named(n) => f.write_str(n),
            VipName::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            VipName::Ip(a) => write!(f, "{a}"),
        }
    }
}

/// A VIP: name or address, port and protocol.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VipKey {
    pub name: VipName,
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for VipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.name, self.port, self.protocol)
    }
}

/// Why a VIP label was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid VIP label {value:?}: {reason}")]
pub struct VipLabelError {
    pub value: String,
    pub reason: &'static str,
}

/// Parses a VIP label value the way dcos-l4lb does: split at the last `:`; the left side is
/// an IP address (IPv6 may be bracketed) or else a name. A name is normalised to start with
/// `/` (`service:8080` and `/service:8080` are one VIP, as Marathon's `/service` and dcos-net's
/// label rules make them one DNS name); names with spaces or control characters are refused.
pub fn parse_vip_label(value: &str) -> Result<(VipName, u16), VipLabelError> {
    let err = |reason| VipLabelError {
        value: value.to_string(),
        reason,
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(|| err("no :port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| err("port is not a number in 1..=65535"))?;
    if port == 0 {
        return Err(err("port is not a number in 1..=65535"));
    }
    let unbracketed = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok((VipName::Ip(ip), port));
    }
    let name = host.strip_prefix('/').unwrap_or(host);
    if name.is_empty() {
        return Err(err("no name before the :port"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err("the name has spaces or control characters"));
    }
    Ok((VipName::Named(format!("/{name}")), port))
}

/// Is this a port label key that names a VIP? dcos-net takes any key that starts with `VIP`
/// or `vip` (`VIP_0`, `vip_1`, and the DC/OS SDK's `VIP_<uuid>`).
pub fn is_vip_label(key: &str) -> bool {
    key.starts_with("VIP") || key.starts_with("vip")
}

/// A task label `VIP_PORT<n>` (any case) = `tcp://name:port` or `udp://name:port`: Minuteman's
/// older form, which puts the n-th port of the task's `ports` resource behind a VIP. `None`
/// for any other label; else the port's index, the protocol and the VIP label after the scheme.
pub fn task_vip_label<'a>(
    key: &str,
    value: &'a str,
) -> Option<Result<(usize, Protocol, &'a str), VipLabelError>> {
    let index = key
        .get(..8)
        .filter(|k| k.eq_ignore_ascii_case("vip_port"))
        .map(|_| &key[8..])
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))?;
    let refused = |reason| {
        Some(Err(VipLabelError {
            value: value.to_string(),
            reason,
        }))
    };
    let Ok(index) = index.parse::<usize>() else {
        return refused("the VIP_PORT index is too large");
    };
    let (protocol, label) = if let Some(rest) = value.strip_prefix("tcp://") {
        (Protocol::Tcp, rest)
    } else if let Some(rest) = value.strip_prefix("udp://") {
        (Protocol::Udp, rest)
    } else {
        return refused("a VIP_PORT label is tcp://name:port or udp://name:port");
    };
    Some(Ok((index, protocol, label)))
}

/// Where a VIP reaches one task port: at the agent's address (a host port: bridge mode, a
/// `network-scope: host` port, a resource port) or at the task's own address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct BackendPort {
    pub port: u16,
    pub on_agent: bool,
}

/// Building tasks and ports: the one way the CLI, the tests and the benchmarks make them, so
/// that a field added to the model is defaulted in one place.
impl Task {
    /// A running task of `framework` on `agent`, with unknown health and no addresses, ports,
    /// DiscoveryInfo or labels; the `with_*` methods add them. Its framework id is the
    /// framework's name until `with_framework_id` says otherwise.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        framework: impl Into<String>,
        agent: impl Into<String>,
    ) -> Task {
        let framework = framework.into();
        Task {
            id: id.into(),
            framework_id: framework.clone(),
            name: name.into(),
            framework,
            agent: agent.into(),
            state: TaskState::Running,
            ips: Vec::new(),
            ports: Vec::new(),
            discovery: None,
            labels: Labels::default(),
            health: Health::Unknown,
            site: None,
        }
    }

    /// The framework's id (empty: a task from before tasks were keyed by framework).
    pub fn with_framework_id(mut self, id: impl Into<String>) -> Task {
        self.framework_id = id.into();
        self
    }

    pub fn with_ip(mut self, ip: IpAddr, source: IpSource) -> Task {
        self.ips.push(TaskIp { ip, source });
        self
    }

    /// A port of the task's `ports` resource.
    pub fn with_resource_port(self, number: u16) -> Task {
        self.with_resource(Port::new(number))
    }

    /// A port of the task's `ports` resource, with more said about it (a bridge-mode
    /// mapping's container port).
    pub fn with_resource(mut self, port: Port) -> Task {
        self.ports.push(port);
        self
    }

    /// A DiscoveryInfo port (DiscoveryInfo is made if the task has none).
    pub fn with_discovery_port(mut self, port: Port) -> Task {
        self.discovery
            .get_or_insert_with(Default::default)
            .ports
            .push(port);
        self
    }

    /// The DiscoveryInfo name (DiscoveryInfo is made if the task has none).
    pub fn with_discovery_name(mut self, name: impl Into<String>) -> Task {
        self.discovery.get_or_insert_with(Default::default).name = Some(name.into());
        self
    }

    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Task {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn with_state(mut self, state: TaskState) -> Task {
        self.state = state;
        self
    }

    pub fn with_health(mut self, health: Health) -> Task {
        self.health = health;
        self
    }

    pub fn with_site(mut self, site: impl Into<String>) -> Task {
        self.site = Some(site.into());
        self
    }

    /// Gives back the spare capacity of its vectors. A decoded or built task's vectors grow
    /// by pushes (serde's JSON sequences have no length to reserve), to room for four ports
    /// where most tasks have one: at 100,000 tasks that was about 40 MB of every agent's
    /// catalog (docs/benchmarks.md, "Memory at scale").
    pub fn shrink_to_fit(&mut self) {
        self.ips.shrink_to_fit();
        self.ports.shrink_to_fit();
        self.ports.iter_mut().for_each(|p| p.labels.shrink_to_fit());
        if let Some(d) = &mut self.discovery {
            d.ports.shrink_to_fit();
            d.ports.iter_mut().for_each(|p| p.labels.shrink_to_fit());
            d.labels.shrink_to_fit();
        }
        self.labels.shrink_to_fit();
    }
}

impl Port {
    /// A port without a name, protocol or labels (a resource port: both `_tcp` and `_udp`).
    pub fn new(number: u16) -> Port {
        Port {
            number,
            name: None,
            protocol: None,
            host_port: None,
            container_port: None,
            scope: None,
            labels: Labels::default(),
        }
    }

    pub fn tcp(number: u16) -> Port {
        Port::new(number).with_protocol(Protocol::Tcp)
    }

    pub fn udp(number: u16) -> Port {
        Port::new(number).with_protocol(Protocol::Udp)
    }

    pub fn with_protocol(mut self, protocol: Protocol) -> Port {
        self.protocol = Some(protocol);
        self
    }

    pub fn named(mut self, name: impl Into<String>) -> Port {
        self.name = Some(name.into());
        self
    }

    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Port {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Reached through the agent's port `host_port` (bridge mode).
    pub fn with_host_port(mut self, host_port: u16) -> Port {
        self.host_port = Some(host_port);
        self
    }

    /// Listening on `container_port` inside the container (a port mapping's).
    pub fn with_container_port(mut self, container_port: u16) -> Port {
        self.container_port = Some(container_port);
        self
    }

    /// The `network-scope` label's meaning, also set as the label.
    pub fn with_scope(mut self, scope: NetworkScope) -> Port {
        self.scope = Some(scope);
        let value = match scope {
            NetworkScope::Host => "host",
            NetworkScope::Container => "container",
        };
        self.with_label(NetworkScope::LABEL, value)
    }

    /// Where a VIP reaches this DiscoveryInfo port, as dcos-l4lb does: a port with a host port
    /// at the agent's address and the host port, any other at the task's address and the port
    /// it listens on.
    pub fn backend(&self) -> BackendPort {
        match self.host_port {
            Some(port) => BackendPort {
                port,
                on_agent: true,
            },
            None => BackendPort {
                port: self.container_port.unwrap_or(self.number),
                on_agent: false,
            },
        }
    }
}

impl Task {
    /// The task's identity.
    pub fn key(&self) -> TaskKey {
        TaskKey::new(self.framework_id.clone(), self.id.clone())
    }

    /// Is any of its ports reached through the agent (a port mapping: bridge mode)? Then
    /// dcos-net's `autoip` name gives the agent's address.
    pub fn has_host_ports(&self) -> bool {
        let discovery = self.discovery.iter().flat_map(|d| d.ports.iter());
        self.ports
            .iter()
            .chain(discovery)
            .any(|p| p.host_port.is_some())
    }

    /// The VIPs this task is a backend of, with where each reaches the task, and the labels
    /// that could not be used: port labels of its DiscoveryInfo ports, and `VIP_PORT<n>` task
    /// labels on its resource ports (always agent ports).
    pub fn vips(&self) -> (Vec<(VipKey, BackendPort)>, Vec<VipLabelError>) {
        let mut vips = Vec::new();
        let mut errors = Vec::new();
        let ports = self.discovery.iter().flat_map(|d| d.ports.iter());
        for port in ports {
            for (key, value) in port.labels.iter() {
                if !is_vip_label(key) {
                    continue;
                }
                match parse_vip_label(value) {
                    Ok((name, vip_port)) => vips.push((
                        VipKey {
                            name,
                            port: vip_port,
                            protocol: port.protocol.unwrap_or_default(),
                        },
                        port.backend(),
                    )),
                    Err(e) => errors.push(e),
                }
            }
        }
        for (key, value) in self.labels.iter() {
            let Some(found) = task_vip_label(key, value) else {
                continue;
            };
            let resolved = found.and_then(|(index, protocol, label)| {
                let port = self.ports.get(index).ok_or_else(|| VipLabelError {
                    value: value.to_string(),
                    reason: "the VIP_PORT index names no port of the task's ports resource",
                })?;
                let (name, vip_port) = parse_vip_label(label)?;
                let backend = BackendPort {
                    port: port.number,
                    on_agent: true,
                };
                Ok((
                    VipKey {
                        name,
                        port: vip_port,
                        protocol,
                    },
                    backend,
                ))
            });
            match resolved {
                Ok(vip) => vips.push(vip),
                Err(e) => errors.push(e),
            }
        }
        (vips, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values in etcd, to the byte: mesos-sync compares them with what it would write, so
    /// a change here rewrites every key. An absent `Option` is left out, never `null`.
    #[test]
    fn records_serialize_to_the_same_json_with_and_without_their_optional_fields() {
        let bare = Task::new("web.1", "web", "marathon", "a1");
        assert_eq!(
            serde_json::to_string(&bare).unwrap(),
            r#"{"id":"web.1","framework_id":"marathon","name":"web","framework":"marathon","agent":"a1","state":"running","health":"unknown"}"#
        );
        let port = Port::tcp(31000)
            .named("http")
            .with_host_port(31000)
            .with_container_port(8080)
            .with_scope(NetworkScope::Host);
        let full = bare
            .with_resource(Port::new(31000))
            .with_discovery_name("web")
            .with_discovery_port(port)
            .with_site("azure");
        let json = serde_json::to_string(&full).unwrap();
        assert_eq!(
            json,
            r#"{"id":"web.1","framework_id":"marathon","name":"web","framework":"marathon","agent":"a1","state":"running","ports":[{"number":31000}],"discovery":{"name":"web","ports":[{"number":31000,"name":"http","protocol":"tcp","host_port":31000,"container_port":8080,"scope":"host","labels":{"network-scope":"host"}}]},"health":"unknown","site":"azure"}"#
        );
        assert_eq!(serde_json::from_str::<Task>(&json).unwrap(), full);
        let agent = Agent::new("a1", "agent-1", "198.18.0.1".parse().unwrap());
        assert_eq!(
            serde_json::to_string(&agent).unwrap(),
            r#"{"id":"a1","hostname":"agent-1","addresses":["198.18.0.1"]}"#
        );
        assert_eq!(
            serde_json::to_string(&agent.with_site("azure")).unwrap(),
            r#"{"id":"a1","hostname":"agent-1","addresses":["198.18.0.1"],"site":"azure"}"#
        );
    }

    #[test]
    fn vip_labels_parse_like_dcos_l4lb() {
        let named = |n: &str| VipName::Named(n.into());
        assert_eq!(
            parse_vip_label("/group/app:80").unwrap(),
            (named("/group/app"), 80)
        );
        // dcos-net takes any left side that is not an address as a name: with or without the
        // leading slash, one VIP.
        for value in ["service:8080", "/service:8080"] {
            assert_eq!(
                parse_vip_label(value).unwrap(),
                (named("/service"), 8080),
                "{value}"
            );
        }
        assert_eq!(
            parse_vip_label("overlay-vip:80").unwrap(),
            (named("/overlay-vip"), 80)
        );
        assert_eq!(
            parse_vip_label("198.19.0.10:5000").unwrap(),
            (VipName::Ip("198.19.0.10".parse().unwrap()), 5000)
        );
        assert_eq!(
            parse_vip_label("[2001:db8::10]:53").unwrap(),
            (VipName::Ip("2001:db8::10".parse().unwrap()), 53)
        );
        // Split at the last ':' as dcos-l4lb does, so unbracketed IPv6 works too.
        assert_eq!(
            parse_vip_label("2001:db8::10:53").unwrap(),
            (VipName::Ip("2001:db8::10".parse().unwrap()), 53)
        );
        for (bad, reason) in [
            ("/app", "no :port"),
            ("/app:0", "port is not a number in 1..=65535"),
            ("/app:99999", "port is not a number in 1..=65535"),
            (":80", "no name before the :port"),
            ("/:80", "no name before the :port"),
            ("/a b:80", "the name has spaces or control characters"),
            ("a\u{7}:80", "the name has spaces or control characters"),
        ] {
            assert_eq!(parse_vip_label(bad).unwrap_err().reason, reason, "{bad}");
        }
    }

    #[test]
    fn vip_label_keys_are_dcos_nets() {
        for key in [
            "VIP_0",
            "VIP_12",
            "vip_0",
            "VIP_d8c37956-f5e8-4c3c-870d-306b40dd1492",
            "VIPx",
        ] {
            assert!(is_vip_label(key), "{key}");
        }
        for key in ["Vip_0", "network-scope", "xVIP_0", ""] {
            assert!(!is_vip_label(key), "{key}");
        }
    }

    #[test]
    fn task_label_vips_name_resource_ports() {
        assert_eq!(
            task_vip_label("vip_PORT0", "tcp://def:80"),
            Some(Ok((0, Protocol::Tcp, "def:80")))
        );
        assert_eq!(
            task_vip_label("VIP_PORT12", "udp://198.19.0.1:53"),
            Some(Ok((12, Protocol::Udp, "198.19.0.1:53")))
        );
        for other in ["VIP_PORT", "VIP_PORTx", "vip_port-1", "VIP_0", "team"] {
            assert_eq!(task_vip_label(other, "tcp://a:1"), None, "{other}");
        }
        let refused = task_vip_label("VIP_PORT0", "TCP://def:80")
            .unwrap()
            .unwrap_err();
        assert!(refused.reason.contains("tcp://"), "{refused}");

        let task = Task::new("app.1", "app", "marathon", "a1")
            .with_resource_port(9999)
            .with_resource_port(10000)
            .with_label("vip_port1", "tcp://jkl:80")
            .with_label("VIP_PORT7", "tcp://far:80")
            .with_label("VIP_PORT0", "tcp://:80");
        let (vips, errors) = task.vips();
        assert_eq!(
            vips,
            [(
                VipKey {
                    name: VipName::Named("/jkl".into()),
                    port: 80,
                    protocol: Protocol::Tcp
                },
                BackendPort {
                    port: 10000,
                    on_agent: true
                }
            )]
        );
        let reasons: Vec<&str> = errors.iter().map(|e| e.reason).collect();
        assert_eq!(
            reasons,
            [
                "the VIP_PORT index names no port of the task's ports resource",
                "no name before the :port"
            ]
        );
    }

    #[test]
    fn a_port_with_a_host_port_is_reached_at_the_agent() {
        let bridge = Port::tcp(20560)
            .with_scope(NetworkScope::Host)
            .with_host_port(20560)
            .with_container_port(8080);
        assert_eq!(
            bridge.backend(),
            BackendPort {
                port: 20560,
                on_agent: true
            }
        );
        let overlay = Port::tcp(8080).with_scope(NetworkScope::Container);
        assert_eq!(
            overlay.backend(),
            BackendPort {
                port: 8080,
                on_agent: false
            }
        );
        let task = Task::new("t", "t", "marathon", "a1").with_discovery_port(bridge);
        assert!(task.has_host_ports());
        assert!(!Task::new("t", "t", "marathon", "a1")
            .with_discovery_port(overlay)
            .has_host_ports());
    }
}
