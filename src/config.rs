//! The agent's configuration: a TOML file (docs/config.md) with defaults, overridden by flags.
//! Every problem is reported at once.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use lodestar_control::{ConfigProblem, EtcdAuth, EtcdConfig, EtcdSettingNames, EtcdTls};
use lodestar_dns::config::{DcosConfig, RrlConfig, ZoneConfig};
use lodestar_dns::http::HttpLimits;
use lodestar_dns::server::TcpLimits;
use serde::{Deserialize, Serialize};

/// A configuration that cannot be used: every problem, reported at once (exit code 78,
/// EX_CONFIG).
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ConfigError(pub Vec<ConfigProblem>);

impl ConfigError {
    /// The exit code of a process stopped by a bad configuration.
    pub const EXIT_CODE: u8 = 78;

    pub fn one(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError(vec![ConfigProblem::new(field, message)])
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// This node's name (default: the host name).
    pub node: Option<String>,
    /// This node's site (e.g. `azure`, `vsphere`).
    pub site: Option<String>,
    pub catalog: CatalogConfig,
    pub dns: DnsConfig,
    pub http: HttpConfig,
    pub l4lb: L4lbConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// etcd endpoints; when empty and `file` is unset, the embedded demo catalog is served.
    pub etcd: Vec<String>,
    /// A catalog file (TOML, or JSON by extension), polled for changes.
    pub file: Option<PathBuf>,
    /// How often the catalog file is checked, in milliseconds.
    pub file_poll_ms: u64,
    /// With etcd: a copy of the last snapshot on local disk, served when etcd is out of reach
    /// at start. Empty string: no cache.
    pub cache_file: Option<PathBuf>,
    /// With etcd: how long to wait at start for etcd before serving the local cache.
    pub startup_wait_ms: u64,
    /// A local cache last confirmed current by etcd longer ago than this is not served at
    /// start: DNS names and VIPs that old steer connections to tasks long gone.
    pub cache_max_age_secs: u64,
    /// TLS to etcd (`https://` endpoints): `ca`, and for client-certificate members `cert`
    /// and `key`.
    pub etcd_tls: Option<EtcdTls>,
    /// An etcd user: `user` and `password_file`.
    pub etcd_auth: Option<EtcdAuth>,
}

/// The catalog's etcd settings as the config file spells them.
pub const ETCD_SETTING_NAMES: EtcdSettingNames = EtcdSettingNames {
    endpoints: "catalog.etcd",
    ca: "catalog.etcd_tls.ca",
    cert: "catalog.etcd_tls.cert",
    key: "catalog.etcd_tls.key",
    user: "catalog.etcd_auth.user",
    password_file: "catalog.etcd_auth.password_file",
};

/// A week: an agent restarted during a long etcd outage still serves, but not for ever.
pub const DEFAULT_CACHE_MAX_AGE_SECS: u64 = 7 * 24 * 3600;

impl CatalogConfig {
    /// How to reach etcd: the endpoints with TLS and credentials.
    pub fn etcd_config(&self) -> EtcdConfig {
        EtcdConfig::from_list(&self.etcd.join(","))
            .with_tls(self.etcd_tls.clone())
            .with_auth(self.etcd_auth.clone())
    }

    pub fn cache_max_age(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.cache_max_age_secs)
    }
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            etcd: Vec::new(),
            file: None,
            file_poll_ms: 500,
            cache_file: Some(PathBuf::from("/var/lib/lodestar/catalog-cache.json")),
            startup_wait_ms: 3000,
            cache_max_age_secs: DEFAULT_CACHE_MAX_AGE_SECS,
            etcd_tls: None,
            etcd_auth: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// UDP and TCP listen addresses.
    pub listen: Vec<SocketAddr>,
    /// UDP worker threads per listen address (default: the number of cores).
    pub workers: Option<usize>,
    /// Client networks that may use us recursively (default: loopback and this node's networks).
    pub recursion_networks: Option<Vec<IpNet>>,
    /// Default upstream resolvers (default: the nameservers in /etc/resolv.conf that are not us).
    pub upstreams: Option<Vec<SocketAddr>>,
    /// Per-zone upstreams, matched by longest suffix before the defaults.
    pub forward_zones: Vec<ForwardZone>,
    /// Per-attempt upstream timeout, in milliseconds.
    pub forward_timeout_ms: u64,
    /// Forwarded queries in flight at once; past this, REFUSED.
    pub max_in_flight: usize,
    /// Cached forwarded responses.
    pub cache_entries: usize,
    /// How long past expiry a cached answer may be served while every upstream is down, seconds.
    pub max_stale_secs: u64,
    /// DNS-over-TCP connections at once, per listen address.
    pub tcp_max_connections: usize,
    /// DNS-over-TCP connections at once from one IPv4 address or IPv6 /64.
    pub tcp_max_per_source: usize,
    /// At start, ask each upstream for a random name and watch for it coming back to us
    /// (CoreDNS's `loop`): an upstream that forwards to us is then never asked.
    pub loop_probe: bool,
    /// Response-rate limiting of UDP answers from our zones (off by default).
    pub rrl: RrlConfig,
    /// The `mesos` and `thisdcos.directory` zones.
    pub zone: ZoneConfig,
    /// Networks whose `in-addr.arpa` / `ip6.arpa` names are answered here (PTR), not forwarded.
    pub reverse_zones: Vec<IpNet>,
    /// dcos-net's own names (`ready.spartan`, `zk-N.zk`, `thisnode`, the mirrors).
    pub dcos: DcosConfig,
    /// A dummy interface the agent makes, puts these addresses on and serves DNS on
    /// (dcos-net's `spartan`).
    pub interface: Option<ListenInterfaceConfig>,
    /// DC/OS's `dcos-dns.json` (`/opt/mesosphere/etc/dcos-dns.json`): its
    /// `upstream_resolvers` and `forward_zones` are read as dcos-net reads them (docs/dns.md).
    pub dcos_dns_json: Option<PathBuf>,
}

/// The listen interface: a dummy link called `name` with `addresses`, DNS on `port` of each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenInterfaceConfig {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    #[serde(default = "dns_port")]
    pub port: u16,
}

fn dns_port() -> u16 {
    53
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: vec!["127.0.0.1:53".parse().expect("valid")],
            workers: None,
            recursion_networks: None,
            upstreams: None,
            forward_zones: Vec::new(),
            forward_timeout_ms: 2000,
            max_in_flight: 1024,
            cache_entries: 10_000,
            max_stale_secs: 86_400,
            tcp_max_connections: TcpLimits::default().max_connections,
            tcp_max_per_source: TcpLimits::default().max_per_source,
            loop_probe: true,
            rrl: RrlConfig::default(),
            zone: ZoneConfig::default(),
            reverse_zones: Vec::new(),
            dcos: DcosConfig::default(),
            interface: None,
            dcos_dns_json: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardZone {
    pub zone: String,
    pub upstreams: Vec<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// The HTTP API (Mesos-DNS's /v1, /metrics); Mesos-DNS used port 8123.
    pub listen: SocketAddr,
    /// Connections at once; past it a new one is closed at once.
    pub max_connections: usize,
    /// How long a request's headers may take to arrive (and a keep-alive connection may
    /// idle), in milliseconds.
    pub header_timeout_ms: u64,
    /// dcos-net's HTTP API (`/v1/vips`, `/v1/records`, its `/v1/hosts` and `/v1/services`) on
    /// a listener of its own; dcos-net uses 127.0.0.1:62080. Unset: not served.
    pub dcos_net_listen: Option<SocketAddr>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        let limits = HttpLimits::default();
        HttpConfig {
            listen: "127.0.0.1:8123".parse().expect("valid"),
            max_connections: limits.max_connections,
            header_timeout_ms: limits.header_timeout.as_millis() as u64,
            dcos_net_listen: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct L4lbConfig {
    /// Program the socket-level VIP load balancer. Without the privilege or kernel support
    /// for it the agent says what is missing and keeps serving DNS, unless `required`.
    pub enabled: bool,
    /// Refuse to start without a working load balancer.
    pub required: bool,
    /// The cgroup v2 directory whose processes get VIPs; default: the root of the cgroup2
    /// mount (found in /proc/mounts), i.e. every process on the node.
    pub cgroup: Option<PathBuf>,
    /// Where maps and links are pinned on bpffs; they outlive the agent, so VIPs keep working
    /// while it restarts. `lodestar l4lb detach` removes them.
    pub pin_path: PathBuf,
    /// Which site's backends get new connections: `prefer-local`, `local-only` or `any`.
    /// Needs `site`; without one every policy is `any`. A task's `LODESTAR_LOCALITY` label
    /// overrides it for the VIPs it backs.
    pub locality: lodestar_l4lb::Locality,
    /// Passive health: failed connects seen in the kernel.
    pub passive: PassiveConfig,
    /// Active health checks by the agent.
    pub active: lodestar_l4lb::ActiveConfig,
    /// The socket-level load balancer (cgroup hooks). Off on a node that only runs the XDP
    /// path (a gateway) or only decapsulates GUE.
    pub socket: bool,
    /// The per-packet XDP/tc path; off until interfaces are configured.
    pub xdp: lodestar_l4lb::XdpConfig,
    /// The only ranges VIP addresses (IP VIPs and named VIPs' allocated ones) may come from;
    /// empty: no VIP is steered. This node's own addresses, loopback, etcd's, the masters' and
    /// the DNS upstreams' are refused even inside them (docs/security.md, "VIP labels").
    pub vip_ranges: Vec<IpNet>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveConfig {
    /// Consecutive failed connects (refused, reset, SYN timeout) to a backend address that make
    /// new connections pass over it; 0 turns passive health off.
    pub fail_threshold: u32,
    /// How long such a backend is passed over before it is tried again.
    pub hold_ms: u64,
}

impl Default for PassiveConfig {
    fn default() -> Self {
        PassiveConfig {
            fail_threshold: 2,
            hold_ms: 10_000,
        }
    }
}

impl Default for L4lbConfig {
    fn default() -> Self {
        L4lbConfig {
            enabled: true,
            required: false,
            cgroup: None,
            pin_path: PathBuf::from(lodestar_l4lb::DEFAULT_PIN_PATH),
            locality: lodestar_l4lb::Locality::default(),
            passive: PassiveConfig::default(),
            active: lodestar_l4lb::ActiveConfig::default(),
            socket: true,
            xdp: lodestar_l4lb::XdpConfig::default(),
            vip_ranges: Vec::new(),
        }
    }
}

/// Reads a config file; every problem of the file at once.
pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::one(&file, format!("cannot read the config file: {e}")))?;
    toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let message = e.message().trim();
        ConfigError::one(
            &file,
            match line {
                Some(l) => format!("line {l}: {message}"),
                None => message.to_string(),
            },
        )
    })
}

impl AgentConfig {
    /// Everything wrong with the merged configuration.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut problem = |field: &str, message: &str| out.push(ConfigProblem::new(field, message));
        if !self.catalog.etcd.is_empty() && self.catalog.file.is_some() {
            problem("catalog", "give etcd endpoints or a catalog file, not both");
        }
        if self.dns.listen.is_empty() {
            problem("dns.listen", "at least one address is needed");
        }
        let counts = [
            ("dns.workers", self.dns.workers.map_or(1, |w| w as u64)),
            ("dns.max_in_flight", self.dns.max_in_flight as u64),
            ("dns.forward_timeout_ms", self.dns.forward_timeout_ms),
            (
                "dns.tcp_max_connections",
                self.dns.tcp_max_connections as u64,
            ),
            ("dns.tcp_max_per_source", self.dns.tcp_max_per_source as u64),
            ("http.max_connections", self.http.max_connections as u64),
            ("http.header_timeout_ms", self.http.header_timeout_ms),
        ];
        for (field, n) in counts {
            if n == 0 {
                problem(field, "must be at least 1");
            }
        }
        for z in &self.dns.forward_zones {
            if z.upstreams.is_empty() {
                problem(
                    "dns.forward_zones",
                    &format!("zone {:?} has no upstreams", z.zone),
                );
            }
        }
        if self.catalog.file_poll_ms == 0 {
            problem("catalog.file_poll_ms", "must be at least 1");
        }
        if self.catalog.cache_max_age_secs == 0 {
            problem("catalog.cache_max_age_secs", "must be at least 1");
        }
        if self.catalog.etcd.is_empty() {
            if self.catalog.etcd_tls.is_some() {
                problem("catalog.etcd_tls", "needs catalog.etcd");
            }
            if self.catalog.etcd_auth.is_some() {
                problem("catalog.etcd_auth", "needs catalog.etcd");
            }
        }
        if self.l4lb.required && !self.l4lb.enabled {
            problem("l4lb.required", "needs l4lb.enabled");
        }
        if !self.l4lb.pin_path.is_absolute() {
            problem("l4lb.pin_path", "must be an absolute path on bpffs");
        }
        if self.dns.zone.locality && self.site.is_none() {
            problem(
                "dns.zone.locality",
                "needs this node's site (site = \"...\" or --site)",
            );
        }
        if !self.catalog.etcd.is_empty() {
            out.extend(self.catalog.etcd_config().problems(&ETCD_SETTING_NAMES));
        }
        out.extend(self.l4lb.active.problems());
        out.extend(self.l4lb.xdp.problems());
        out.extend(self.dns.zone.problems());
        out.extend(self.dns.rrl.problems());
        out.extend(self.dns.dcos.problems());
        if let Some(i) = &self.dns.interface {
            // IFNAMSIZ less the terminating NUL.
            if i.name.is_empty() || i.name.len() > 15 || i.name.contains(['/', ' ', ':']) {
                out.push(ConfigProblem::new(
                    "dns.interface.name",
                    format!("{:?} is not an interface name", i.name),
                ));
            }
            if i.addresses.is_empty() {
                out.push(ConfigProblem::new(
                    "dns.interface.addresses",
                    "at least one address is needed",
                ));
            }
            if i.addresses
                .iter()
                .any(|a| a.is_unspecified() || a.is_loopback())
            {
                out.push(ConfigProblem::new(
                    "dns.interface.addresses",
                    "a wildcard or loopback address cannot go on an interface of its own",
                ));
            }
        }
        out
    }

    /// Every address DNS is served on: `dns.listen`, then the listen interface's.
    pub fn dns_addresses(&self) -> Vec<SocketAddr> {
        let interface = self
            .dns
            .interface
            .iter()
            .flat_map(|i| i.addresses.iter().map(|ip| SocketAddr::new(*ip, i.port)));
        self.dns.listen.iter().copied().chain(interface).collect()
    }

    /// Takes `dns.dcos_dns_json`'s upstreams (unless `dns.upstreams` is set) and its forward
    /// zones (after those of this file, which win for the same zone).
    pub fn apply_dcos_dns_json(&mut self) -> Result<(), ConfigError> {
        let Some(path) = &self.dns.dcos_dns_json else {
            return Ok(());
        };
        let json = crate::dcos_dns_json::read(path)?;
        if self.dns.upstreams.is_none() && !json.upstream_resolvers.is_empty() {
            self.dns.upstreams = Some(json.upstream_resolvers);
        }
        for zone in json.forward_zones {
            let known = |z: &ForwardZone| {
                z.zone
                    .trim_end_matches('.')
                    .eq_ignore_ascii_case(zone.zone.trim_end_matches('.'))
            };
            if !self.dns.forward_zones.iter().any(known) {
                self.dns.forward_zones.push(zone);
            }
        }
        Ok(())
    }

    /// Upstreams: configured, else /etc/resolv.conf's nameservers except our own addresses.
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        if let Some(u) = &self.dns.upstreams {
            return u.clone();
        }
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let ours: Vec<IpAddr> = self.dns_addresses().iter().map(|a| a.ip()).collect();
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
            .filter(|ip| !ours.contains(ip))
            .map(|ip| SocketAddr::new(ip, 53))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_examples_parse() {
        let text = include_str!("../docs/agent.example.toml");
        let c: AgentConfig = toml::from_str(text).unwrap();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(c.dns.zone.domain, "mesos");
        assert_eq!(
            c.l4lb,
            L4lbConfig::default(),
            "the example shows the defaults"
        );
        assert_eq!(
            c.dns.rrl,
            RrlConfig::default(),
            "the example shows the defaults"
        );
        assert_eq!(
            c.http,
            HttpConfig::default(),
            "the example shows the defaults"
        );
        for (text, site) in [
            (include_str!("../docs/install/agent.azure.toml"), "azure"),
            (
                include_str!("../docs/install/agent.vsphere.toml"),
                "vsphere",
            ),
        ] {
            let c: AgentConfig = toml::from_str(text).unwrap();
            assert!(c.problems().is_empty(), "{:?}", c.problems());
            assert_eq!(c.site.as_deref(), Some(site));
        }
        let c: AgentConfig =
            toml::from_str(include_str!("../docs/install/agent.dcos.toml")).unwrap();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        let spartan = c.dns.interface.as_ref().expect("the spartan interface");
        assert_eq!(spartan.name, "spartan");
        let dcos: Vec<IpAddr> = [
            "198.51.100.1",
            "198.51.100.2",
            "198.51.100.3",
            "fd01:d::c633:6401",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        assert_eq!(spartan.addresses, dcos, "DC/OS's addresses");
        let served: Vec<String> = c.dns_addresses().iter().map(ToString::to_string).collect();
        assert_eq!(served[1], "198.51.100.1:53");
        assert_eq!(
            c.http.dcos_net_listen,
            Some("127.0.0.1:62080".parse().unwrap())
        );
    }

    #[test]
    fn interface_problems() {
        let mut c = AgentConfig::default();
        c.dns.interface = Some(ListenInterfaceConfig {
            name: "a-name-longer-than-15".into(),
            addresses: vec!["127.0.0.1".parse().unwrap()],
            port: 53,
        });
        let fields: Vec<String> = c.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["dns.interface.name", "dns.interface.addresses"]);
    }

    #[test]
    fn problems_are_all_reported() {
        let mut c = AgentConfig::default();
        c.catalog.etcd = vec!["http://127.0.0.1:2379".into()];
        c.catalog.file = Some("x.toml".into());
        c.dns.listen.clear();
        c.dns.zone.domain = "bad domain".into();
        assert_eq!(c.problems().len(), 3, "{:?}", c.problems());
        let mut c = AgentConfig::default();
        c.dns.zone.locality = true;
        assert!(
            c.problems()[0].message.contains("needs this node's site"),
            "{:?}",
            c.problems()
        );
        c.site = Some("azure".into());
        assert!(c.problems().is_empty());
    }

    #[test]
    fn abuse_limits_that_would_refuse_everything_or_overflow_are_problems() {
        let mut c = AgentConfig::default();
        c.dns.tcp_max_connections = 0;
        c.dns.tcp_max_per_source = 0;
        c.http.max_connections = 0;
        c.http.header_timeout_ms = 0;
        c.dns.rrl.responses_per_second = u32::MAX;
        c.dns.rrl.slip = 1000;
        c.dns.rrl.table_size = 0;
        let fields: Vec<String> = c.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "dns.tcp_max_connections",
                "dns.tcp_max_per_source",
                "http.max_connections",
                "http.header_timeout_ms",
                "dns.rrl.responses_per_second",
                "dns.rrl.slip",
                "dns.rrl.table_size",
            ]
        );
    }
}
