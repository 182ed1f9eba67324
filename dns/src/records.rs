//! Which records the catalog produces, following Mesos-DNS's `records/generator.go` for the
//! `mesos` zone and dcos-net for `thisdcos.directory`. Pure functions of a snapshot's parts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use lodestar_control::model::{Agent, IpSource, Protocol, Task, TaskState, VipName};
use lodestar_control::Snapshot;

use crate::config::ZoneConfig;
use crate::names::{agent_id_tail, task_hash, LabelSpec};

/// The `thisdcos.directory` zone apex.
pub const THISDCOS: &str = "thisdcos.directory.";

/// One resource record's data. Names are lowercase FQDNs with a trailing dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rr {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv { target: Arc<str>, port: u16 },
}

impl Rr {
    pub fn ip(ip: IpAddr) -> Rr {
        match ip {
            IpAddr::V4(a) => Rr::A(a),
            IpAddr::V6(a) => Rr::Aaaa(a),
        }
    }

    /// The address of an A or AAAA record.
    pub fn address(&self) -> Option<IpAddr> {
        match self {
            Rr::A(ip) => Some(IpAddr::V4(*ip)),
            Rr::Aaaa(ip) => Some(IpAddr::V6(*ip)),
            Rr::Srv { .. } => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Rr::A(_) => "A",
            Rr::Aaaa(_) => "AAAA",
            Rr::Srv { .. } => "SRV",
        }
    }
}

/// Records keyed by owner name, in generation order (duplicates are removed later).
pub type Records = Vec<(String, Rr)>;

/// The records one task contributes: the `mesos` zone's A/AAAA and SRV names and the
/// `dcos.thisdcos.directory` names. None unless the task runs on a known agent.
pub fn task_records(config: &ZoneConfig, agent: Option<&Agent>, task: &Task) -> Records {
    let mut out = Records::new();
    let Some(agent) = agent else { return out };
    if task.state != TaskState::Running {
        return out;
    }
    let spec = config.labels;
    let domain = config.fqdn_domain();
    let Some(TaskNames {
        label,
        fw,
        canonical,
        name,
    }) = task_names(config, agent, task)
    else {
        return out;
    };
    let discovery = named_discovery(task);
    // Names are joined with `concat`, which sizes each once, not `format!`: a zone's first
    // build makes ten or so per task (`benches/scale.rs`).
    let short = [&label, ".", &fw].concat();
    let task_ips = select_ips(config, agent, task);
    for ip in &task_ips {
        out.push(([&short, ".", &domain].concat(), Rr::ip(*ip)));
        out.push(([&canonical, ".", &domain].concat(), Rr::ip(*ip)));
    }
    for ip in &agent.addresses {
        out.push(([&short, ".slave.", &domain].concat(), Rr::ip(*ip)));
        out.push(([&canonical, ".slave.", &domain].concat(), Rr::ip(*ip)));
    }

    // SRV: resource ports target the `.slave` canonical name, under the slave subdomain
    // always and under the framework itself only when there is no DiscoveryInfo.
    let has_discovery = discovery.is_some();
    let slave_target: Arc<str> = Arc::from([&canonical, ".slave.", &domain].concat());
    // `_label._proto.fw` and then `.slave.` or `.`, and the domain.
    let srv_name =
        |proto: &str, under: &str| ["_", &label, ".", proto, ".", &fw, under, &domain].concat();
    for port in &task.ports {
        for proto in ["_tcp", "_udp"] {
            let srv = Rr::Srv {
                target: slave_target.clone(),
                port: port.number,
            };
            out.push((srv_name(proto, ".slave."), srv.clone()));
            if !has_discovery {
                out.push((srv_name(proto, "."), srv));
            }
        }
    }
    if let Some(d) = discovery {
        let target: Arc<str> = Arc::from([&canonical, ".", &domain].concat());
        for port in &d.ports {
            let protos: &[&str] = match port.protocol {
                Some(Protocol::Tcp) => &["_tcp"],
                Some(Protocol::Udp) => &["_udp"],
                None => &["_tcp", "_udp"],
            };
            let port_label = port
                .name
                .as_deref()
                .map(|n| spec.label(n))
                .unwrap_or_default();
            for proto in protos {
                let srv = Rr::Srv {
                    target: target.clone(),
                    port: port.number,
                };
                out.push((srv_name(proto, "."), srv.clone()));
                if !port_label.is_empty() {
                    out.push((
                        [
                            "_",
                            &port_label,
                            "._",
                            &label,
                            ".",
                            proto,
                            ".",
                            &fw,
                            ".",
                            &domain,
                        ]
                        .concat(),
                        srv,
                    ));
                }
            }
        }
    }

    if config.thisdcos {
        dcos_task_records(spec, agent, task, name, &mut out);
    }
    out
}

/// A task's DNS label, its framework's domain fragment, its canonical name (`<label>-<h>-<s>.<fw>`,
/// without the domain) and the name the label comes from.
struct TaskNames<'a> {
    label: String,
    fw: String,
    canonical: String,
    name: &'a str,
}

/// Mesos-DNS's `HasDiscoveryInfo`: a DiscoveryInfo counts only when it has a name.
fn named_discovery(task: &Task) -> Option<&lodestar_control::model::DiscoveryInfo> {
    task.discovery
        .as_ref()
        .filter(|d| d.name.as_deref().is_some_and(|n| !n.is_empty()))
}

fn task_names<'a>(config: &ZoneConfig, agent: &Agent, task: &'a Task) -> Option<TaskNames<'a>> {
    let spec = config.labels;
    let fw = spec.domain_frag(&task.framework);
    let name = named_discovery(task)
        .and_then(|d| d.name.as_deref())
        .unwrap_or(&task.name);
    let label = spec.label(name);
    if fw.is_empty() || label.is_empty() {
        return None;
    }
    let canonical = format!(
        "{label}-{}-{}.{fw}",
        task_hash(&task.id),
        agent_id_tail(&agent.id)
    );
    Some(TaskNames {
        label,
        fw,
        canonical,
        name,
    })
}

/// The name a reverse (PTR) answer gives for a task's address: its canonical name in the
/// `mesos` zone, whose A/AAAA records are the addresses `select_ips` gives.
pub fn canonical_name(config: &ZoneConfig, agent: &Agent, task: &Task) -> Option<String> {
    let names = task_names(config, agent, task)?;
    Some(format!("{}.{}", names.canonical, config.fqdn_domain()))
}

/// `<task>.<fw>.{agentip,containerip,autoip}.dcos.thisdcos.directory`, as dcos-net names them:
/// task and framework are one label each.
fn dcos_task_records(spec: LabelSpec, agent: &Agent, task: &Task, name: &str, out: &mut Records) {
    let (t, f) = (spec.label(name), spec.label(&task.framework));
    if t.is_empty() || f.is_empty() {
        return;
    }
    let container: Vec<IpAddr> = task
        .ips
        .iter()
        .filter(|i| i.source != IpSource::Host)
        .map(|i| i.ip)
        .collect();
    let base = [&t, ".", &f].concat();
    for ip in &agent.addresses {
        out.push(([&base, ".agentip.dcos.", THISDCOS].concat(), Rr::ip(*ip)));
    }
    for ip in &container {
        out.push((
            [&base, ".containerip.dcos.", THISDCOS].concat(),
            Rr::ip(*ip),
        ));
    }
    // autoip, as dcos-net: the agent's addresses when a port is reached through the agent (a
    // port mapping: bridge mode), else the task's own, else the agent's.
    let auto = if task.has_host_ports() || container.is_empty() {
        &agent.addresses
    } else {
        &container
    };
    for ip in auto {
        out.push(([&base, ".autoip.dcos.", THISDCOS].concat(), Rr::ip(*ip)));
    }
}

/// The task's addresses from the first configured source that has any, all of them.
pub fn select_ips(config: &ZoneConfig, agent: &Agent, task: &Task) -> Vec<IpAddr> {
    for source in &config.ip_sources {
        let ips: Vec<IpAddr> = task
            .ips
            .iter()
            .filter(|i| i.source == *source)
            .map(|i| i.ip)
            .collect();
        if !ips.is_empty() {
            return ips;
        }
        if *source == IpSource::Host && !agent.addresses.is_empty() {
            return agent.addresses.clone();
        }
    }
    Vec::new()
}

/// Records that do not belong to one task: frameworks, agents, masters and leader, the
/// server's own name, and the l4lb names of named VIPs.
pub fn cluster_records(
    config: &ZoneConfig,
    snapshot: &Snapshot,
    ns_addresses: &[IpAddr],
) -> Records {
    let mut out = Records::new();
    let spec = config.labels;
    let domain = config.fqdn_domain();

    for fw in snapshot.frameworks.values() {
        let name = spec.domain_frag(&fw.name);
        if name.is_empty() {
            continue;
        }
        let owner = format!("{name}.{domain}");
        for ip in &fw.addresses {
            out.push((owner.clone(), Rr::ip(*ip)));
        }
        if let (Some(port), false) = (fw.port, fw.addresses.is_empty()) {
            out.push((
                format!("_framework._tcp.{owner}"),
                Rr::Srv {
                    target: Arc::from(owner.as_str()),
                    port,
                },
            ));
        }
    }

    let slave: Arc<str> = Arc::from(format!("slave.{domain}"));
    for agent in snapshot.agents.values() {
        for ip in &agent.addresses {
            out.push((slave.to_string(), Rr::ip(*ip)));
        }
        if !agent.addresses.is_empty() {
            // Mesos agents listen on 5051; the catalog does not carry the agent's port.
            out.push((
                format!("_slave._tcp.{domain}"),
                Rr::Srv {
                    target: slave.clone(),
                    port: 5051,
                },
            ));
        }
    }

    let master = format!("master.{domain}");
    let mut index = 0;
    let mut leader_numbered = false;
    let leader = snapshot.leader.as_deref();
    if let Some(l) = leader {
        out.push((format!("leader.{domain}"), Rr::ip(l.address)));
        out.push((master.clone(), Rr::ip(l.address)));
        let target: Arc<str> = Arc::from(format!("leader.{domain}"));
        for proto in ["_tcp", "_udp"] {
            out.push((
                format!("_leader.{proto}.{domain}"),
                Rr::Srv {
                    target: target.clone(),
                    port: l.port,
                },
            ));
        }
    }
    // masterN follows the masters' order (by id); the leader gets the next number if absent.
    let mut seen = Vec::new();
    for m in snapshot.masters.values() {
        let is_leader = leader.is_some_and(|l| l.address == m.address && l.port == m.port);
        if seen.contains(&(m.address, m.port)) {
            continue;
        }
        seen.push((m.address, m.port));
        if !is_leader {
            out.push((master.clone(), Rr::ip(m.address)));
        }
        out.push((format!("master{index}.{domain}"), Rr::ip(m.address)));
        index += 1;
        leader_numbered |= is_leader;
    }
    if let (Some(l), false) = (leader, leader_numbered) {
        out.push((format!("master{index}.{domain}"), Rr::ip(l.address)));
    }

    let ns = format!(
        "{}.",
        config.ns_name.trim_end_matches('.').to_ascii_lowercase()
    );
    let ns_ips = if config.ns_addresses.is_empty() {
        ns_addresses
    } else {
        &config.ns_addresses
    };
    for ip in ns_ips {
        out.push((ns.clone(), Rr::ip(*ip)));
    }

    if config.thisdcos {
        l4lb_records(spec, snapshot, &mut out);
        dcos_master_records(snapshot, &mut out);
    }
    out
}

/// `leader.dcos.thisdcos.directory` (the leading master) and `master.dcos.thisdcos.directory`
/// (every master), as dcos-net's `dcos_dns_mesos` names them.
fn dcos_master_records(snapshot: &Snapshot, out: &mut Records) {
    if let Some(l) = &snapshot.leader {
        out.push((format!("leader.dcos.{THISDCOS}"), Rr::ip(l.address)));
    }
    for m in snapshot.masters.values() {
        out.push((format!("master.dcos.{THISDCOS}"), Rr::ip(m.address)));
    }
}

/// `<vip>.<fw>.l4lb.thisdcos.directory` for each named VIP with an allocated address:
/// `/mygroup/myapp` on marathon -> `mygroupmyapp.marathon.l4lb.thisdcos.directory`.
fn l4lb_records(spec: LabelSpec, snapshot: &Snapshot, out: &mut Records) {
    for vip in snapshot.vips() {
        let VipName::Named(name) = &vip.key.name else {
            continue;
        };
        let Some(addresses) = snapshot.vip_addresses.get(name) else {
            continue;
        };
        let vip_label = spec.domain_frag(name);
        if vip_label.is_empty() {
            continue;
        }
        let mut frameworks: Vec<String> = vip
            .backends
            .iter()
            .filter_map(|b| {
                let key =
                    lodestar_control::model::TaskKey::new(b.framework_id.clone(), b.task.clone());
                snapshot.tasks.get(&key)
            })
            .map(|t| spec.domain_frag(&t.framework))
            .filter(|f| !f.is_empty())
            .collect();
        frameworks.sort();
        frameworks.dedup();
        for fw in frameworks {
            for ip in &addresses.addresses {
                out.push((format!("{vip_label}.{fw}.l4lb.{THISDCOS}"), Rr::ip(*ip)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lodestar_control::model::Port;

    fn agent() -> Agent {
        Agent::new(
            "20150925-143318-1660156426-5050-2036-S3",
            "agent-1",
            "198.18.0.1".parse().unwrap(),
        )
    }

    fn task() -> Task {
        Task::new("test", "Liquor_Store", "Marathon", agent().id)
            .with_ip("198.18.0.10".parse().unwrap(), IpSource::Netinfo)
            .with_ip("2001:db8::10".parse().unwrap(), IpSource::Netinfo)
            .with_ip("198.18.0.11".parse().unwrap(), IpSource::Mesos)
            .with_resource_port(31000)
    }

    fn names(r: &Records) -> Vec<String> {
        let mut n: Vec<String> = r.iter().map(|(n, rr)| format!("{n} {rr:?}")).collect();
        n.sort();
        n.dedup();
        n
    }

    #[test]
    fn task_without_discovery_info() {
        let cfg = ZoneConfig {
            thisdcos: false,
            ..ZoneConfig::default()
        };
        let r = task_records(&cfg, Some(&agent()), &task());
        let n = names(&r);
        let expect = [
            "_liquor-store._tcp.marathon.mesos. Srv { target: \"liquor-store-iffe9-s3.marathon.slave.mesos.\", port: 31000 }",
            "_liquor-store._tcp.marathon.slave.mesos. Srv { target: \"liquor-store-iffe9-s3.marathon.slave.mesos.\", port: 31000 }",
            "_liquor-store._udp.marathon.mesos. Srv { target: \"liquor-store-iffe9-s3.marathon.slave.mesos.\", port: 31000 }",
            "_liquor-store._udp.marathon.slave.mesos. Srv { target: \"liquor-store-iffe9-s3.marathon.slave.mesos.\", port: 31000 }",
            "liquor-store-iffe9-s3.marathon.mesos. A(198.18.0.10)",
            "liquor-store-iffe9-s3.marathon.mesos. Aaaa(2001:db8::10)",
            "liquor-store-iffe9-s3.marathon.slave.mesos. A(198.18.0.1)",
            "liquor-store.marathon.mesos. A(198.18.0.10)",
            "liquor-store.marathon.mesos. Aaaa(2001:db8::10)",
            "liquor-store.marathon.slave.mesos. A(198.18.0.1)",
        ];
        assert_eq!(n, expect);
    }

    #[test]
    fn discovery_ports_and_sources() {
        let t = task()
            .with_discovery_name("shop")
            .with_discovery_port(Port::tcp(80).named("HTTP"))
            .with_discovery_port(Port::new(53));
        let cfg = ZoneConfig {
            ip_sources: vec![IpSource::Mesos, IpSource::Host],
            thisdcos: false,
            ..ZoneConfig::default()
        };
        let n = names(&task_records(&cfg, Some(&agent()), &t));
        assert!(
            n.contains(&"shop.marathon.mesos. A(198.18.0.11)".to_string()),
            "{n:#?}"
        );
        assert!(!n
            .iter()
            .any(|x| x.starts_with("shop.marathon.mesos. A(198.18.0.10)")));
        assert!(n.contains(&"_http._shop._tcp.marathon.mesos. Srv { target: \"shop-iffe9-s3.marathon.mesos.\", port: 80 }".to_string()), "{n:#?}");
        assert!(n.contains(&"_shop._udp.marathon.mesos. Srv { target: \"shop-iffe9-s3.marathon.mesos.\", port: 53 }".to_string()));
        assert!(
            !n.iter().any(|x| x.starts_with("_http._shop._udp")),
            "{n:#?}"
        );
        // Resource ports of a task with DiscoveryInfo: only under .slave.
        assert!(
            !n.iter()
                .any(|x| x.contains("port: 31000") && !x.contains(".slave.mesos. Srv")),
            "{n:#?}"
        );
    }

    #[test]
    fn only_running_tasks_on_known_agents() {
        let cfg = ZoneConfig::default();
        assert!(task_records(&cfg, None, &task()).is_empty());
        let mut t = task();
        t.state = TaskState::Draining;
        assert!(task_records(&cfg, Some(&agent()), &t).is_empty());
    }

    #[test]
    fn dcos_names() {
        let cfg = ZoneConfig::default();
        let n = names(&task_records(&cfg, Some(&agent()), &task()));
        assert!(
            n.contains(
                &"liquor-store.marathon.agentip.dcos.thisdcos.directory. A(198.18.0.1)".to_string()
            ),
            "{n:#?}"
        );
        assert!(n.contains(
            &"liquor-store.marathon.autoip.dcos.thisdcos.directory. Aaaa(2001:db8::10)".to_string()
        ));
        assert!(n.contains(
            &"liquor-store.marathon.containerip.dcos.thisdcos.directory. A(198.18.0.11)"
                .to_string()
        ));
    }

    /// dcos-net's `dcos_dns_mesos_tests` table: bridge mode gives the agent for `autoip` and the
    /// container for `containerip`; a virtual network gives the container for both.
    #[test]
    fn autoip_is_the_agent_in_bridge_mode_as_in_dcos_net() {
        use lodestar_control::model::NetworkScope;
        let cfg = ZoneConfig::default();
        let on = |name: &str, ip: &str| {
            Task::new(format!("{name}.1"), name, "marathon", agent().id)
                .with_ip(ip.parse().unwrap(), IpSource::Netinfo)
                .with_ip("198.18.0.1".parse().unwrap(), IpSource::Host)
        };
        let bridge = on("docker-on-bridge", "198.19.18.2").with_discovery_port(
            Port::tcp(20560)
                .with_scope(NetworkScope::Host)
                .with_host_port(20560)
                .with_container_port(8080),
        );
        let overlay = on("docker-on-dcos", "198.19.2.130")
            .with_discovery_port(Port::tcp(8080).with_scope(NetworkScope::Container));
        for (task, auto, container) in [
            (bridge, "198.18.0.1", "198.19.18.2"),
            (overlay, "198.19.2.130", "198.19.2.130"),
        ] {
            let n = names(&task_records(&cfg, Some(&agent()), &task));
            let base = format!("{}.marathon", task.name);
            for (kind, ip) in [
                ("autoip", auto),
                ("containerip", container),
                ("agentip", "198.18.0.1"),
            ] {
                let want = format!("{base}.{kind}.dcos.thisdcos.directory. A({ip})");
                assert!(n.contains(&want), "{want} in {n:#?}");
                let others = n
                    .iter()
                    .filter(|x| x.starts_with(&format!("{base}.{kind}.")));
                assert_eq!(others.count(), 1, "{kind}: {n:#?}");
            }
        }
    }
}
