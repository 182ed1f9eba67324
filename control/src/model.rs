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

/// A port: from the task's `ports` resource or from its DiscoveryInfo.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub number: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `None` for resource ports, which Mesos-DNS publishes under both `_tcp` and `_udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Port labels; `VIP_<n>` labels put the task behind a VIP.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

/// Mesos DiscoveryInfo: the name and ports a task asks to be discovered by.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

/// A task: one key in etcd, so that a change to it is one small watch event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    pub id: String,
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
    /// The task's `ports` resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryInfo>,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    #[serde(default)]
    pub health: Health,
    /// The task's site, when known; otherwise its agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// A Mesos agent (a node that runs tasks).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    pub id: String,
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// A framework (scheduler) and where it listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Framework {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// A Mesos master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Master {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub address: IpAddr,
    pub port: u16,
}

/// The leading master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Leader {
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// Why a `VIP_<n>` label value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid VIP label {value:?}: {reason}")]
pub struct VipLabelError {
    pub value: String,
    pub reason: &'static str,
}

/// Parses a `VIP_<n>` label value the way dcos-l4lb does: split at the last `:`;
/// the left side is a name starting with `/` or an IP address (IPv6 may be bracketed).
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
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok((VipName::Ip(ip), port));
    }
    if host.len() > 1 && host.starts_with('/') && !host.chars().any(char::is_whitespace) {
        return Ok((VipName::Named(host.to_string()), port));
    }
    Err(err("name is neither /group/app nor an IP address"))
}

/// Is this a label key that names a VIP (`VIP_0`, `VIP_1`, ...)?
pub fn is_vip_label(key: &str) -> bool {
    key.strip_prefix("VIP_")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Building tasks and ports: the one way the CLI, the tests and the benchmarks make them, so
/// that a field added to the model is defaulted in one place.
impl Task {
    /// A running task of `framework` on `agent`, with unknown health and no addresses, ports,
    /// DiscoveryInfo or labels; the `with_*` methods add them.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        framework: impl Into<String>,
        agent: impl Into<String>,
    ) -> Task {
        Task {
            id: id.into(),
            name: name.into(),
            framework: framework.into(),
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

    pub fn with_ip(mut self, ip: IpAddr, source: IpSource) -> Task {
        self.ips.push(TaskIp { ip, source });
        self
    }

    /// A port of the task's `ports` resource.
    pub fn with_resource_port(mut self, number: u16) -> Task {
        self.ports.push(Port::new(number));
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
}

impl Port {
    /// A port without a name, protocol or labels (a resource port: both `_tcp` and `_udp`).
    pub fn new(number: u16) -> Port {
        Port {
            number,
            name: None,
            protocol: None,
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
}

impl Task {
    /// The VIPs this task is a backend of, with the task port behind each,
    /// and the labels that could not be parsed.
    pub fn vips(&self) -> (Vec<(VipKey, u16)>, Vec<VipLabelError>) {
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
                        port.number,
                    )),
                    Err(e) => errors.push(e),
                }
            }
        }
        (vips, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_labels_parse_like_dcos_l4lb() {
        assert_eq!(
            parse_vip_label("/group/app:80").unwrap(),
            (VipName::Named("/group/app".into()), 80)
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
        for bad in [
            "app:80",
            "/app",
            "/app:0",
            "/app:99999",
            ":80",
            "/a b:80",
            "/:80",
        ] {
            assert!(parse_vip_label(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn only_numbered_vip_labels_count() {
        assert!(is_vip_label("VIP_0"));
        assert!(is_vip_label("VIP_12"));
        assert!(!is_vip_label("VIP_"));
        assert!(!is_vip_label("VIP_x"));
        assert!(!is_vip_label("vip_0"));
    }
}
