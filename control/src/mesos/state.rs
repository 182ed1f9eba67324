//! The parts of a Mesos master's `GET /master/state` document that Lodestar reads. Lenient
//! where Mesos is (unknown fields ignored, absent lists empty), strict where a wrong shape
//! would mean a wrong catalog. A task and its statuses read the v1 operator API's shapes too
//! (`{"value": …}` ids, `{"labels": […]}`, resource lists), so one model serves both.
//!
//! An absent `Option` field reads as `None` (serde's rule for options); other fields that may be
//! absent say `default`, a struct whose every field may be absent once for all of them.

use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct State {
    /// The leading master's PID, `master@198.18.0.1:5050`.
    pub leader: Option<String>,
    pub leader_info: Option<MasterInfo>,
    /// This master's own PID.
    pub pid: Option<String>,
    pub frameworks: Vec<Framework>,
    pub slaves: Vec<Slave>,
}

#[derive(Debug, Deserialize)]
pub struct MasterInfo {
    pub hostname: Option<String>,
    pub port: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct Framework {
    pub id: String,
    pub name: String,
    pub pid: Option<String>,
    pub hostname: Option<String>,
    #[serde(default)]
    pub tasks: Vec<Task>,
}

#[derive(Debug, Deserialize)]
pub struct Slave {
    pub id: String,
    pub pid: String,
    pub hostname: String,
    /// Agent attributes (`--attributes=site:azure`): text or scalar values.
    #[serde(default)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct Task {
    #[serde(alias = "task_id", deserialize_with = "id")]
    pub id: String,
    pub name: String,
    #[serde(deserialize_with = "id")]
    pub framework_id: String,
    #[serde(alias = "agent_id", deserialize_with = "id")]
    pub slave_id: String,
    pub state: String,
    #[serde(default)]
    pub statuses: Vec<Status>,
    #[serde(default, deserialize_with = "resources")]
    pub resources: Resources,
    pub discovery: Option<Discovery>,
    #[serde(default, deserialize_with = "labels")]
    pub labels: Vec<Label>,
    pub container: Option<Container>,
    /// A Mesos-native health check; only whether there is one is read.
    pub health_check: Option<serde::de::IgnoredAny>,
}

/// `ContainerInfo` (JSON::Protobuf of the v0 task).
#[derive(Debug, Default, Deserialize)]
pub struct Container {
    /// `DOCKER` or `MESOS` (the default when absent).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    pub docker: Option<Docker>,
    #[serde(default)]
    pub network_infos: Vec<NetworkInfo>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Docker {
    /// `HOST`, `BRIDGE`, `USER` or `NONE`.
    pub network: Option<String>,
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
}

/// A Docker or CNI port mapping: agent port -> container port. Mesos requires both ports; a
/// mapping without one reads as port 0 and is skipped, rather than failing the whole state.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PortMapping {
    pub host_port: u32,
    pub container_port: u32,
    pub protocol: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Resources {
    /// Port ranges, `[31000-31002, 31005-31005]`.
    pub ports: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Status {
    pub state: String,
    #[serde(default)]
    pub timestamp: f64,
    #[serde(default, deserialize_with = "labels")]
    pub labels: Vec<Label>,
    pub container_status: Option<ContainerStatus>,
    /// The health check's verdict, when the task has one.
    pub healthy: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct ContainerStatus {
    #[serde(default)]
    pub network_infos: Vec<NetworkInfo>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NetworkInfo {
    pub ip_addresses: Vec<IpAddressInfo>,
    /// Mesos 0.25's single address.
    pub ip_address: Option<String>,
    /// The Mesos containerizer's port mappings (UCR bridge mode; in a status, a pod's).
    pub port_mappings: Vec<PortMapping>,
}

#[derive(Debug, Deserialize)]
pub struct IpAddressInfo {
    pub ip_address: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Label {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Deserialize)]
pub struct Discovery {
    pub name: Option<String>,
    pub ports: Option<DiscoveryPorts>,
    pub labels: Option<Labels>,
}

#[derive(Debug, Deserialize)]
pub struct DiscoveryPorts {
    #[serde(default)]
    pub ports: Vec<DiscoveryPort>,
}

#[derive(Debug, Deserialize)]
pub struct DiscoveryPort {
    pub number: u32,
    pub name: Option<String>,
    pub protocol: Option<String>,
    pub labels: Option<Labels>,
}

#[derive(Debug, Deserialize)]
pub struct Labels {
    #[serde(default)]
    pub labels: Vec<Label>,
}

// The two shapes below are told apart by the JSON type (a string or list, or an object), with
// visitors rather than `#[serde(untagged)]`: untagged enums buffer every value before trying
// each variant, which at 100,000 tasks was a tenth of the parse.

/// An id as `/master/state` writes it (`"abc"`) or as the operator API does
/// (`{"value": "abc"}`).
fn id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an id: a string or {\"value\": string}")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
            let mut value = None;
            while let Some(key) = map.next_key::<String>()? {
                if key == "value" {
                    value = Some(map.next_value::<String>()?);
                } else {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
            value.ok_or_else(|| de::Error::missing_field("value"))
        }
    }
    d.deserialize_any(V)
}

/// Labels as a list (`/master/state`) or wrapped in `{"labels": […]}` (the operator API).
fn labels<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Label>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<Label>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("labels: a list or {\"labels\": list}")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Vec<Label>, A::Error> {
            Vec::deserialize(de::value::SeqAccessDeserializer::new(seq))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Vec<Label>, A::Error> {
            Labels::deserialize(de::value::MapAccessDeserializer::new(map)).map(|l| l.labels)
        }
    }
    d.deserialize_any(V)
}

/// Resources as `/master/state`'s object (`{"ports": "[31000-31001]"}`) or the operator API's
/// list of `Resource`s, whose `ports` ranges are written the same way here.
fn resources<'de, D: Deserializer<'de>>(d: D) -> Result<Resources, D::Error> {
    #[derive(Deserialize)]
    struct Range {
        begin: u64,
        end: u64,
    }
    #[derive(Deserialize)]
    struct Ranges {
        #[serde(default)]
        range: Vec<Range>,
    }
    #[derive(Deserialize)]
    struct Resource {
        name: String,
        #[serde(default)]
        ranges: Option<Ranges>,
    }
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Resources;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("resources: an object or a list of resources")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Resources, A::Error> {
            Resources::deserialize(de::value::MapAccessDeserializer::new(map))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Resources, A::Error> {
            let list: Vec<Resource> = Vec::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
            let ranges: Vec<String> = list
                .iter()
                .filter(|r| r.name == "ports")
                .filter_map(|r| r.ranges.as_ref())
                .flat_map(|r| r.range.iter().map(|r| format!("{}-{}", r.begin, r.end)))
                .collect();
            Ok(Resources {
                ports: (!ranges.is_empty()).then(|| format!("[{}]", ranges.join(", "))),
            })
        }
    }
    d.deserialize_any(V)
}

/// `name@host:port` -> (host, port).
pub fn parse_pid(pid: &str) -> Option<(String, u16)> {
    let (_, addr) = pid.split_once('@')?;
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port.parse().ok()?))
}

/// `[31000-31002, 31005-31005]` -> ports, at most `cap` of them; malformed ranges skipped.
pub fn parse_port_ranges(text: &str, cap: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for range in text
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
    {
        let range = range.trim();
        if range.is_empty() {
            continue;
        }
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        let (Ok(lo), Ok(hi)) = (lo.trim().parse::<u16>(), hi.trim().parse::<u16>()) else {
            continue;
        };
        for p in lo..=hi {
            if out.len() >= cap {
                return out;
            }
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_and_port_ranges() {
        assert_eq!(
            parse_pid("slave(1)@198.18.0.1:5051"),
            Some(("198.18.0.1".into(), 5051))
        );
        assert_eq!(
            parse_pid("master@[2001:db8::1]:5050"),
            Some(("2001:db8::1".into(), 5050))
        );
        assert_eq!(parse_pid("nonsense"), None);
        assert_eq!(
            parse_port_ranges("[31000-31002, 31005-31005]", 100),
            [31000, 31001, 31002, 31005]
        );
        assert_eq!(parse_port_ranges("[]", 100), Vec::<u16>::new());
        assert_eq!(parse_port_ranges("[1-65535]", 3), [1, 2, 3]);
        assert_eq!(parse_port_ranges("[x-y, 80-80, 70000-70001]", 10), [80]);
    }
}
