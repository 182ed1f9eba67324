//! Mesos master state -> catalog records: running tasks (and killing ones, as draining) with
//! their addresses by source, ports, DiscoveryInfo and VIP labels; agents with their site;
//! frameworks; masters and the leader.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::keys::Record;
use crate::mesos::state::{self, parse_pid, parse_port_ranges, State};
use crate::model::{
    is_vip_label, parse_vip_label, Agent, DiscoveryInfo, Framework, Health, IpSource, Labels,
    Leader, Master, Port, Protocol, Task, TaskIp, TaskState, VipName,
};

/// Ports taken from one task's port resource at most (a `[1-65535]` range is not 65,535 ports).
const MAX_RESOURCE_PORTS: usize = 1000;

/// The catalog a state document describes.
#[derive(Debug, Default)]
pub struct Translation {
    pub records: Vec<Record>,
    /// Named VIPs (`/group/app`) that need an address.
    pub named_vips: BTreeSet<String>,
    /// `VIP_<n>` label values refused (neither `/name:port` nor `ip:port`).
    pub rejected_vip_labels: Vec<String>,
    /// Task ids reported by more than one framework (Mesos makes ids unique per framework
    /// only; the catalog keys tasks by id, so the first is kept).
    pub duplicate_task_ids: Vec<String>,
}

/// Translates a state document. `masters` are the configured masters (host, port) in order.
pub fn translate(state: &State, masters: &[(String, u16)], site_attribute: &str) -> Translation {
    let mut out = Translation::default();
    let mut agent_ips: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
    let mut task_ids: BTreeSet<&str> = BTreeSet::new();
    for slave in &state.slaves {
        let addresses: Vec<IpAddr> = parse_pid(&slave.pid)
            .and_then(|(host, _)| host.parse().ok())
            .into_iter()
            .collect();
        agent_ips.insert(&slave.id, addresses.clone());
        let site = slave.attributes.get(site_attribute).and_then(|v| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
        out.records.push(Record::Agent(Agent {
            id: slave.id.clone(),
            hostname: slave.hostname.clone(),
            addresses,
            site,
        }));
    }

    for fw in &state.frameworks {
        let pid = fw.pid.as_deref().and_then(parse_pid);
        let addresses: Vec<IpAddr> = pid
            .as_ref()
            .and_then(|(h, _)| h.parse().ok())
            .into_iter()
            .collect();
        out.records.push(Record::Framework(Framework {
            id: fw.id.clone(),
            name: fw.name.clone(),
            hostname: fw.hostname.clone(),
            addresses,
            port: pid.map(|(_, p)| p),
        }));
        for task in &fw.tasks {
            let state = match task.state.as_str() {
                "TASK_RUNNING" => TaskState::Running,
                "TASK_KILLING" => TaskState::Draining,
                _ => continue,
            };
            if !task_ids.insert(task.id.as_str()) {
                out.duplicate_task_ids.push(task.id.clone());
                continue;
            }
            let host_ips = agent_ips
                .get(task.slave_id.as_str())
                .cloned()
                .unwrap_or_default();
            let task = translate_task(task, &fw.name, state, &host_ips, &mut out);
            out.records.push(Record::Task(task));
        }
    }

    let leader = state.leader.as_deref().and_then(parse_pid);
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
                hostname: state.leader_info.as_ref().and_then(|i| i.hostname.clone()),
                address,
                port,
            }));
        }
    }
    out
}

fn translate_task(
    task: &state::Task,
    framework: &str,
    state: TaskState,
    host_ips: &[IpAddr],
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
    for ip in host_ips {
        push(Some(&ip.to_string()), IpSource::Host);
    }
    let ports = task
        .resources
        .ports
        .as_deref()
        .map(|p| parse_port_ranges(p, MAX_RESOURCE_PORTS))
        .unwrap_or_default()
        .into_iter()
        .map(|number| Port {
            number,
            name: None,
            protocol: None,
            labels: Labels::default(),
        })
        .collect();
    let discovery = task.discovery.as_ref().map(|d| DiscoveryInfo {
        name: d.name.clone().filter(|n| !n.is_empty()),
        ports: d
            .ports
            .iter()
            .flat_map(|p| &p.ports)
            .filter_map(|p| {
                let number = u16::try_from(p.number).ok().filter(|n| *n != 0)?;
                let labels = labels_of(p.labels.as_ref(), out);
                Some(Port {
                    number,
                    name: p.name.clone().filter(|n| !n.is_empty()),
                    protocol: p
                        .protocol
                        .as_deref()
                        .and_then(|s| s.parse::<Protocol>().ok()),
                    labels,
                })
            })
            .collect(),
        labels: d
            .labels
            .iter()
            .flat_map(|l| &l.labels)
            .map(|l| (l.key.clone(), l.value.clone()))
            .collect(),
    });
    Task {
        id: task.id.clone(),
        name: task.name.clone(),
        framework: framework.to_string(),
        agent: task.slave_id.clone(),
        state,
        ips,
        ports,
        discovery,
        labels: task
            .labels
            .iter()
            .map(|l| (l.key.clone(), l.value.clone()))
            .collect(),
        health: match status.and_then(|s| s.healthy) {
            Some(true) => Health::Healthy,
            Some(false) => Health::Unhealthy,
            None => Health::Unknown,
        },
        site: None,
    }
}

/// Port labels, with `VIP_<n>` values checked: a bad one is dropped and counted; a named
/// VIP is noted for address allocation.
fn labels_of(labels: Option<&state::Labels>, out: &mut Translation) -> Labels {
    let mut kept = Labels::default();
    for l in labels.iter().flat_map(|l| &l.labels) {
        if is_vip_label(&l.key) {
            match parse_vip_label(&l.value) {
                Ok((VipName::Named(name), _)) => {
                    out.named_vips.insert(name);
                }
                Ok(_) => {}
                Err(_) => {
                    out.rejected_vip_labels.push(l.value.clone());
                    continue;
                }
            }
        }
        kept.insert(l.key.clone(), l.value.clone());
    }
    kept
}
