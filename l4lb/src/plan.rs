//! What the maps should hold for a snapshot: a pure function, so every decision about which
//! backends get new connections (health, drain, weights, locality, fail-open) is testable
//! without a kernel.

use std::collections::BTreeMap;
use std::net::IpAddr;

use lodestar_control::model::{Health, Protocol, TaskState};
use lodestar_control::Snapshot;
use serde::{Deserialize, Serialize};

/// Which site's backends get new connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Locality {
    /// Healthy backends in this node's site; only when there are none, the other site's.
    #[default]
    PreferLocal,
    /// Only this node's site (fail-open stays within it).
    LocalOnly,
    /// Every healthy backend, wherever it is.
    Any,
}

#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    /// This node's site; without one every policy behaves as `any`.
    pub site: Option<String>,
    /// The default policy; a task's `LODESTAR_LOCALITY` label overrides it for its VIPs.
    pub locality: Locality,
    /// Backends the agent's active checks found down (they count as unhealthy).
    pub active_down: std::collections::HashSet<BackendAddr>,
    /// Which addresses may be VIPs (`L4lb::apply` leaves the others out of the plan).
    pub guard: crate::guard::VipGuard,
}

/// The task label that sets the locality policy of the VIPs a task backs.
pub const LOCALITY_LABEL: &str = "LODESTAR_LOCALITY";

/// A locality policy that is none of the three.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown locality {given:?}: prefer-local, local-only or any")]
pub struct UnknownLocality {
    pub given: String,
}

impl std::str::FromStr for Locality {
    type Err = UnknownLocality;
    fn from_str(s: &str) -> Result<Self, UnknownLocality> {
        match s {
            "prefer-local" => Ok(Locality::PreferLocal),
            "local-only" => Ok(Locality::LocalOnly),
            "any" => Ok(Locality::Any),
            _ => Err(UnknownLocality { given: s.into() }),
        }
    }
}

/// One kernel service: a VIP address, port and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ServiceAddr {
    pub ip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct BackendAddr {
    pub ip: IpAddr,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedBackend {
    pub task: String,
    /// The configured weight (0 while draining).
    pub weight: u32,
    pub healthy: bool,
    /// The agent's active check says it is down.
    pub active_down: bool,
    pub local: bool,
    /// Slots in the service's table: its share of new connections. 0: none.
    pub slots: u32,
    /// The address of the node it runs on, of the VIP's family (its agent's first address;
    /// else its own): where the XDP path's GUE mode sends its packets.
    pub node: IpAddr,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedService {
    /// The catalog's name for it (`/web:80/tcp`).
    pub vip: String,
    pub backends: BTreeMap<BackendAddr, PlannedBackend>,
    /// No backend is healthy: the slots hold every live one.
    pub fail_open: bool,
    pub locality: Locality,
}

impl PlannedService {
    pub fn total_slots(&self) -> u32 {
        self.backends.values().map(|b| b.slots).sum()
    }
}

pub type Plan = BTreeMap<ServiceAddr, PlannedService>;

/// The plan for a snapshot: every VIP address with its backends of the same address family.
pub fn plan(snapshot: &Snapshot, opts: &PlanOptions) -> Plan {
    let mut out = Plan::new();
    for vip in snapshot.vips() {
        for ip in &vip.addresses {
            let key = ServiceAddr {
                ip: *ip,
                port: vip.key.port,
                protocol: vip.key.protocol,
            };
            // A backend's LODESTAR_LOCALITY label sets the VIP's policy (the first that
            // parses, in backend order); else the node's default.
            let locality = vip
                .backends
                .iter()
                .find_map(|b| b.locality.as_deref().and_then(|l| l.parse().ok()))
                .unwrap_or(opts.locality);
            let svc = out.entry(key).or_insert_with(|| PlannedService {
                vip: vip.key.to_string(),
                backends: BTreeMap::new(),
                fail_open: false,
                locality,
            });
            for b in &vip.backends {
                let Some(bip) = b.ips.iter().find(|a| a.is_ipv4() == ip.is_ipv4()) else {
                    continue;
                };
                let weight = if b.state == TaskState::Draining {
                    0
                } else {
                    b.weight
                };
                let local = opts.site.is_some() && b.site == opts.site;
                let addr = BackendAddr {
                    ip: *bip,
                    port: b.port,
                };
                let active_down = opts.active_down.contains(&addr);
                let node = snapshot
                    .agents
                    .get(&b.agent)
                    .and_then(|a| a.addresses.iter().find(|n| n.is_ipv4() == ip.is_ipv4()))
                    .copied()
                    .unwrap_or(*bip);
                svc.backends.entry(addr).or_insert(PlannedBackend {
                    node,
                    task: b.task.clone(),
                    weight,
                    healthy: b.health != Health::Unhealthy && !active_down,
                    active_down,
                    local,
                    slots: 0,
                });
            }
        }
    }
    let max = crate::layout::MAX_SLOTS_PER_SERVICE;
    for svc in out.values_mut() {
        choose(svc, opts, max);
    }
    out
}

/// Sets each backend's slots: the chosen set by policy and health, weights scaled to `max`.
fn choose(svc: &mut PlannedService, opts: &PlanOptions, max: u32) {
    let policy = if opts.site.is_none() {
        Locality::Any
    } else {
        svc.locality
    };
    let live = |b: &PlannedBackend| b.weight > 0;
    let in_pool = |b: &PlannedBackend| match policy {
        Locality::LocalOnly => live(b) && b.local,
        _ => live(b),
    };
    let healthy = |b: &PlannedBackend| in_pool(b) && b.healthy;
    let any_local_healthy = svc.backends.values().any(|b| healthy(b) && b.local);
    let chosen = |b: &PlannedBackend| match policy {
        Locality::PreferLocal if any_local_healthy => healthy(b) && b.local,
        _ => healthy(b),
    };
    let mut fail_open = false;
    let mut pick: Vec<bool> = svc.backends.values().map(chosen).collect();
    if !pick.iter().any(|p| *p) {
        pick = svc.backends.values().map(in_pool).collect();
        fail_open = pick.iter().any(|p| *p);
    }
    let weights: Vec<u32> = svc
        .backends
        .values()
        .zip(&pick)
        .map(|(b, p)| if *p { b.weight } else { 0 })
        .collect();
    let slots = scale(&weights, max);
    for (b, n) in svc.backends.values_mut().zip(slots) {
        b.slots = n;
    }
    svc.fail_open = fail_open;
}

/// Weights to slot counts: divided by their gcd, and scaled down (every chosen backend keeps at
/// least one slot) when they add up to more than `max`.
pub fn scale(weights: &[u32], max: u32) -> Vec<u32> {
    let g = weights
        .iter()
        .copied()
        .filter(|w| *w > 0)
        .fold(0, gcd)
        .max(1);
    let reduced: Vec<u64> = weights.iter().map(|w| u64::from(w / g)).collect();
    let sum: u64 = reduced.iter().sum();
    let chosen = reduced.iter().filter(|w| **w > 0).count() as u64;
    if sum <= u64::from(max) {
        return reduced.iter().map(|w| *w as u32).collect();
    }
    // Keep one slot each, and share the rest in proportion.
    let spare = u64::from(max).saturating_sub(chosen);
    reduced
        .iter()
        .map(|&w| {
            if w == 0 {
                0
            } else {
                (1 + (w - 1) * spare / sum) as u32
            }
        })
        .collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lodestar_control::file::CatalogDocument;

    fn snapshot(toml: &str) -> Snapshot {
        let doc: CatalogDocument = toml::from_str(&format!("schema = 1\n{toml}")).unwrap();
        let mut state = lodestar_control::CatalogState::new();
        for r in doc.into_records() {
            state.upsert(r);
        }
        state.snapshot(1, lodestar_control::Source::Empty)
    }

    /// A snapshot of one VIP's backends: the n-th (site, extra TOML) is task `t<n>` at
    /// 198.18.<n>.2.
    fn backends(specs: &[(&str, &str)]) -> Snapshot {
        let toml: String = (1..)
            .zip(specs)
            .map(|(n, (site, extra))| task(&format!("t{n}"), &format!("198.18.{n}.2"), site, extra))
            .collect();
        snapshot(&toml)
    }

    fn task(id: &str, ip: &str, site: &str, extra: &str) -> String {
        task_vip(id, ip, site, extra, "198.19.0.1:80")
    }

    fn task_vip(id: &str, ip: &str, site: &str, extra: &str, vip: &str) -> String {
        format!(
            r#"
[[tasks]]
id = "{id}"
name = "web"
framework = "marathon"
agent = "a1"
ips = [{{ ip = "{ip}", source = "netinfo" }}]
site = "{site}"
{extra}
[tasks.discovery]
name = "web"
[[tasks.discovery.ports]]
number = 8080
protocol = "tcp"
labels = {{ VIP_0 = "{vip}" }}
"#
        )
    }

    /// Slots per backend, in backend address order (198.18.1.2, 198.18.2.2, ...).
    fn slots(plan: &Plan) -> Vec<u32> {
        let svc = plan.values().next().unwrap();
        svc.backends.values().map(|b| b.slots).collect()
    }

    fn opts(site: Option<&str>, locality: Locality) -> PlanOptions {
        PlanOptions {
            site: site.map(String::from),
            locality,
            ..PlanOptions::default()
        }
    }

    #[test]
    fn health_drain_and_fail_open() {
        let s = backends(&[
            ("azure", ""),
            ("azure", "state = \"draining\""),
            ("azure", "health = \"unhealthy\""),
        ]);
        let p = plan(&s, &PlanOptions::default());
        assert_eq!(slots(&p), [1, 0, 0]);
        assert!(!p.values().next().unwrap().fail_open);

        // Every live backend unhealthy: all of them, flagged; the draining one still gets none.
        let s = backends(&[
            ("azure", "health = \"unhealthy\""),
            ("azure", "state = \"draining\""),
            ("azure", "health = \"unhealthy\""),
        ]);
        let p = plan(&s, &PlanOptions::default());
        assert_eq!(slots(&p), [1, 0, 1]);
        assert!(p.values().next().unwrap().fail_open);
    }

    #[test]
    fn weights_from_labels() {
        let s = backends(&[
            ("a", "labels = { LODESTAR_WEIGHT = \"6\" }"),
            ("a", "labels = { LODESTAR_WEIGHT = \"2\" }"),
            ("a", "labels = { LODESTAR_WEIGHT = \"0\" }"),
        ]);
        let p = plan(&s, &PlanOptions::default());
        assert_eq!(slots(&p), [3, 1, 0]);
    }

    #[test]
    fn locality_policies() {
        let s = backends(&[
            ("azure", ""),
            ("vsphere", ""),
            ("azure", "health = \"unhealthy\""),
        ]);
        let p = plan(&s, &opts(Some("azure"), Locality::PreferLocal));
        assert_eq!(slots(&p), [1, 0, 0]);
        let p = plan(&s, &opts(Some("vsphere"), Locality::PreferLocal));
        assert_eq!(slots(&p), [0, 1, 0]);
        let p = plan(&s, &opts(Some("azure"), Locality::Any));
        assert_eq!(slots(&p), [1, 1, 0]);
        // No site on this node: every policy is `any`.
        let p = plan(&s, &opts(None, Locality::LocalOnly));
        assert_eq!(slots(&p)[1], 1);

        // The local site down: prefer-local crosses over, local-only fails open locally.
        let s = backends(&[("azure", "health = \"unhealthy\""), ("vsphere", "")]);
        let p = plan(&s, &opts(Some("azure"), Locality::PreferLocal));
        assert_eq!(slots(&p), [0, 1]);
        let p = plan(&s, &opts(Some("azure"), Locality::LocalOnly));
        assert_eq!(slots(&p), [1, 0]);
        assert!(p.values().next().unwrap().fail_open);
    }

    #[test]
    fn a_task_label_sets_the_vip_policy_and_active_checks_count_as_health() {
        let s = backends(&[
            ("azure", "labels = { LODESTAR_LOCALITY = \"any\" }"),
            ("vsphere", ""),
        ]);
        // The node default is prefer-local, but the VIP says any.
        let p = plan(&s, &opts(Some("azure"), Locality::PreferLocal));
        assert_eq!(slots(&p), [1, 1]);
        assert_eq!(p.values().next().unwrap().locality, Locality::Any);

        let mut o = opts(Some("azure"), Locality::PreferLocal);
        o.active_down.insert(BackendAddr {
            ip: "198.18.1.2".parse().unwrap(),
            port: 8080,
        });
        let p = plan(&s, &o);
        assert_eq!(slots(&p), [0, 1]);
        assert!(
            p.values()
                .next()
                .unwrap()
                .backends
                .values()
                .next()
                .unwrap()
                .active_down
        );
    }

    #[test]
    fn families_do_not_mix() {
        let s = snapshot(&format!(
            "{}{}",
            task_vip("t1", "198.18.1.2", "a", "", "[2001:db8::1]:80"),
            task_vip("t2", "2001:db8:2::2", "a", "", "[2001:db8::1]:80"),
        ));
        let p = plan(&s, &PlanOptions::default());
        assert_eq!(slots(&p), [1]);
    }

    #[test]
    fn scaling() {
        assert_eq!(scale(&[1, 1, 1], 4096), [1, 1, 1]);
        assert_eq!(scale(&[4, 8, 0], 4096), [1, 2, 0]);
        let s = scale(&[1000, 1, 999], 100);
        assert!(s.iter().sum::<u32>() <= 100, "{s:?}");
        assert_eq!(s[1], 1);
        assert!(s[0] > 40 && s[2] > 40, "{s:?}");
        assert_eq!(scale(&[0, 0], 10), [0, 0]);
    }
}
