//! Command-line interface: `lodestar services|vips|catalog|snapshot`.
//! Every command that talks to etcd takes `--etcd URL[,URL...]` (env `LODESTAR_ETCD`) and the
//! `--etcd-ca/-cert/-key/-user/-password-file` flags (env `LODESTAR_ETCD_CA` ...).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use lodestar_control::file::read_file;
use lodestar_control::keys::{Record, RecordKey};
use lodestar_control::model::{
    parse_vip_label, Health, IpSource, Port, Protocol, Task, TaskKey, TaskState,
};
use lodestar_control::{
    demo, EtcdAuth, EtcdConfig, EtcdSettingNames, EtcdStore, EtcdTls, Snapshot, SnapshotView,
    Source,
};

use crate::client::AgentClient;
use crate::ops::Status;
use crate::output::{print_dataplane_vips, print_json, print_status, print_tasks, print_vips};

#[derive(Parser, Debug)]
#[command(
    name = "lodestar",
    version,
    about = "Service discovery and L4 load balancing for two-site clusters, fed from etcd"
)]
pub struct Args {
    /// Log format on stderr (the level comes from LODESTAR_LOG, e.g. `debug`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

impl Args {
    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Command::Agent(_) | Command::MesosSync(_) => "info",
            _ => "warn",
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the per-node agent: DNS (and, later, VIPs) from etcd, a catalog file, or the demo.
    Agent(Box<AgentArgs>),
    /// Keep the etcd catalog in step with a Mesos master (docs/mesos-sync.md).
    MesosSync(Box<MesosSyncArgs>),
    /// One screen about a node: catalog revision and age, DNS rates, VIPs, site.
    Status {
        /// The agent's HTTP API.
        #[arg(long, default_value = "127.0.0.1:8123", value_name = "ADDR:PORT")]
        http: std::net::SocketAddr,
    },
    /// Register, remove and list tasks in etcd.
    Services {
        #[command(subcommand)]
        command: ServicesCommand,
    },
    /// List VIPs and their backends.
    Vips {
        #[command(subcommand)]
        command: VipsCommand,
    },
    /// The VIP load balancer's kernel state.
    L4lb {
        #[command(subcommand)]
        command: L4lbCommand,
    },
    /// Write a whole catalog document (TOML or JSON, as for --catalog) into etcd.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Print the catalog as JSON: from etcd, a catalog file, or the embedded demo catalog.
    Snapshot {
        #[command(flatten)]
        source: SourceArgs,
    },
}

/// `lodestar agent` flags; each overrides the config file.
#[derive(ClapArgs, Debug)]
pub struct AgentArgs {
    /// TOML configuration (docs/config.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// etcd endpoints, comma-separated.
    #[arg(long, env = "LODESTAR_ETCD", value_name = "URL[,URL...]")]
    etcd: Option<String>,
    #[command(flatten)]
    etcd_security: EtcdSecurityArgs,
    /// A catalog file instead of etcd.
    #[arg(long, value_name = "FILE", conflicts_with = "etcd")]
    catalog: Option<PathBuf>,
    /// DNS listen address (UDP and TCP); repeat for several.
    #[arg(long = "dns-listen", value_name = "ADDR:PORT")]
    dns_listen: Vec<std::net::SocketAddr>,
    /// HTTP API listen address.
    #[arg(long, value_name = "ADDR:PORT")]
    http_listen: Option<std::net::SocketAddr>,
    /// Upstream resolver for other names; repeat for several (overrides dns.upstreams).
    #[arg(long = "upstream", value_name = "ADDR:PORT")]
    upstreams: Vec<std::net::SocketAddr>,
    /// Do not probe the upstreams for forwarding loops at start (sets dns.loop_probe = false).
    #[arg(long)]
    no_loop_probe: bool,
    /// This node's name.
    #[arg(long)]
    node: Option<String>,
    /// This node's site.
    #[arg(long)]
    site: Option<String>,
    /// Do not program the VIP load balancer.
    #[arg(long)]
    no_l4lb: bool,
    /// Refuse to start without a working VIP load balancer.
    #[arg(long, conflicts_with = "no_l4lb")]
    l4lb_required: bool,
    /// The cgroup v2 directory the VIP hooks attach to (default: the cgroup2 root).
    #[arg(long, value_name = "DIR")]
    l4lb_cgroup: Option<PathBuf>,
    /// Where the load balancer's maps and links are pinned (default /sys/fs/bpf/lodestar).
    #[arg(long, value_name = "DIR")]
    l4lb_pin_path: Option<PathBuf>,
    /// A range VIP addresses may come from (repeatable; replaces l4lb.vip_ranges).
    #[arg(long, value_name = "CIDR")]
    l4lb_vip_range: Vec<ipnet::IpNet>,
    /// Where the last etcd snapshot is kept on local disk (overrides catalog.cache_file).
    #[arg(long, value_name = "FILE")]
    cache_file: Option<PathBuf>,
}

impl AgentArgs {
    /// The config file (or defaults) with these flags applied.
    pub fn merged_config(&self) -> Result<crate::config::AgentConfig, crate::config::ConfigError> {
        let mut c = match &self.config {
            Some(path) => crate::config::load(path)?,
            None => crate::config::AgentConfig::default(),
        };
        if let Some(e) = &self.etcd {
            c.catalog.etcd = e
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            c.catalog.file = None;
        }
        if let Some(f) = &self.catalog {
            c.catalog.file = Some(f.clone());
            c.catalog.etcd.clear();
        }
        self.etcd_security
            .apply(&mut c.catalog.etcd_tls, &mut c.catalog.etcd_auth);
        if !self.dns_listen.is_empty() {
            c.dns.listen = self.dns_listen.clone();
        }
        if let Some(h) = self.http_listen {
            c.http.listen = h;
        }
        if !self.upstreams.is_empty() {
            c.dns.upstreams = Some(self.upstreams.clone());
        }
        if self.no_loop_probe {
            c.dns.loop_probe = false;
        }
        if self.node.is_some() {
            c.node = self.node.clone();
        }
        if self.site.is_some() {
            c.site = self.site.clone();
        }
        if self.no_l4lb {
            c.l4lb.enabled = false;
        }
        if self.l4lb_required {
            c.l4lb.required = true;
        }
        if let Some(d) = &self.l4lb_cgroup {
            c.l4lb.cgroup = Some(d.clone());
        }
        if let Some(d) = &self.l4lb_pin_path {
            c.l4lb.pin_path = d.clone();
        }
        if !self.l4lb_vip_range.is_empty() {
            c.l4lb.vip_ranges = self.l4lb_vip_range.clone();
        }
        if let Some(f) = &self.cache_file {
            c.catalog.cache_file = Some(f.clone());
        }
        let problems = c.problems();
        if problems.is_empty() {
            Ok(c)
        } else {
            Err(crate::config::ConfigError(problems))
        }
    }
}

#[derive(ClapArgs, Debug)]
pub struct MesosSyncArgs {
    /// Mesos masters, comma-separated, tried in order (`http://198.18.0.1:5050`).
    #[arg(long, value_name = "URL[,URL...]", required = true)]
    master: String,
    #[command(flatten)]
    etcd: EtcdArgs,
    /// How to follow the masters: `events` subscribes to the leader's operator API event
    /// stream (falling back to polling when a master has none), `poll` reads /master/state
    /// every --interval.
    #[arg(long, value_enum, default_value = "events")]
    source: crate::mesos_sync::Source,
    /// Time between polls (with --source poll, or when falling back to it).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    interval: std::time::Duration,
    /// How long to gather stream events into one etcd write.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    batch: std::time::Duration,
    /// Sync once (without the election) and exit.
    #[arg(long)]
    once: bool,
    /// IPv4 range for named VIP addresses (no default: see docs/mesos-sync.md).
    #[arg(long, value_name = "CIDR")]
    vip_range_v4: Option<ipnet::Ipv4Net>,
    /// IPv6 range for named VIP addresses.
    #[arg(long, value_name = "CIDR")]
    vip_range_v6: Option<ipnet::Ipv6Net>,
    /// The agent attribute that names a node's site.
    #[arg(long, default_value = "site")]
    site_attribute: String,
    /// Basic auth user for the masters.
    #[arg(long)]
    master_user: Option<String>,
    /// File holding the basic auth password.
    #[arg(long, value_name = "FILE")]
    master_password_file: Option<PathBuf>,
    /// PEM CA certificate to trust for https:// masters.
    #[arg(long, value_name = "FILE")]
    master_ca: Option<PathBuf>,
    /// Timeout of one request to a master.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
    /// Largest state document accepted, in MiB.
    #[arg(long, default_value_t = 256)]
    max_state_mib: usize,
    /// This instance's name in the election (default: host name and process id).
    #[arg(long)]
    instance_id: Option<String>,
    /// Leadership lease, in seconds: a dead leader is replaced within about this long.
    #[arg(long, default_value_t = 3)]
    lease_ttl: i64,
    /// Serve Prometheus metrics on this address (`/metrics`).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Deletes that would shrink the catalog by more than this share of the largest it has
    /// been recently are held (a master that has just been elected reports few tasks until
    /// agents re-register, and a cut-off site disappears agent by agent)...
    #[arg(long, default_value_t = 0.5)]
    max_delete_fraction: f64,
    /// ...until the master has reported them for this long (also the window of "recently";
    /// the default outlasts Mesos's 10-minute --agent_reregister_timeout).
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    mass_delete_delay: std::time::Duration,
}

#[derive(ClapArgs, Debug)]
pub struct EtcdArgs {
    /// etcd endpoints, comma-separated.
    #[arg(long, env = "LODESTAR_ETCD", value_name = "URL[,URL...]")]
    pub etcd: String,
    #[command(flatten)]
    pub security: EtcdSecurityArgs,
}

impl EtcdArgs {
    /// The endpoints with TLS and credentials; every problem with them at once.
    pub fn config(&self) -> Result<EtcdConfig, crate::config::ConfigError> {
        let mut config = EtcdConfig::from_list(&self.etcd);
        self.security.apply(&mut config.tls, &mut config.auth);
        let problems = config.problems(&EtcdSettingNames::FLAGS);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(crate::config::ConfigError(problems))
        }
    }
}

/// TLS and authentication to etcd (docs/security.md). For the agent each flag overrides its
/// `catalog.etcd_tls` / `catalog.etcd_auth` setting.
#[derive(ClapArgs, Debug, Default, Clone)]
pub struct EtcdSecurityArgs {
    /// PEM CA certificate that signed etcd's certificates (needed for https:// endpoints;
    /// the only CA trusted for them).
    #[arg(long, env = "LODESTAR_ETCD_CA", value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// PEM client certificate, for members started with --client-cert-auth (its CN names
    /// the etcd user when no --etcd-user is given).
    #[arg(long, env = "LODESTAR_ETCD_CERT", value_name = "FILE")]
    pub etcd_cert: Option<PathBuf>,
    /// PEM private key of --etcd-cert (not readable by every user).
    #[arg(long, env = "LODESTAR_ETCD_KEY", value_name = "FILE")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user (with --etcd-password-file).
    #[arg(long, env = "LODESTAR_ETCD_USER", value_name = "NAME")]
    pub etcd_user: Option<String>,
    /// File whose first line is the etcd user's password (not readable by every user).
    #[arg(long, env = "LODESTAR_ETCD_PASSWORD_FILE", value_name = "FILE")]
    pub etcd_password_file: Option<PathBuf>,
}

impl EtcdSecurityArgs {
    /// Lays the given flags over `tls` and `auth`; what is missing is left for
    /// `EtcdConfig::problems` to name.
    pub fn apply(&self, tls: &mut Option<EtcdTls>, auth: &mut Option<EtcdAuth>) {
        if let Some(ca) = &self.etcd_ca {
            tls.get_or_insert_with(EtcdTls::default).ca = ca.clone();
        }
        if let Some(cert) = &self.etcd_cert {
            tls.get_or_insert_with(EtcdTls::default).cert = Some(cert.clone());
        }
        if let Some(key) = &self.etcd_key {
            tls.get_or_insert_with(EtcdTls::default).key = Some(key.clone());
        }
        if let Some(user) = &self.etcd_user {
            auth.get_or_insert_with(EtcdAuth::default).user = user.clone();
        }
        if let Some(file) = &self.etcd_password_file {
            auth.get_or_insert_with(EtcdAuth::default).password_file = file.clone();
        }
    }
}

/// Where a read-only command takes the catalog from; neither flag means the demo catalog.
#[derive(ClapArgs, Debug)]
pub struct SourceArgs {
    /// etcd endpoints, comma-separated.
    #[arg(long, env = "LODESTAR_ETCD", value_name = "URL[,URL...]")]
    pub etcd: Option<String>,
    #[command(flatten)]
    pub security: EtcdSecurityArgs,
    /// A catalog file (TOML, or JSON by its .json extension).
    #[arg(long, value_name = "FILE", conflicts_with = "etcd")]
    pub catalog: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ServicesCommand {
    /// Register (or replace) a task.
    Put(Box<PutArgs>),
    /// Remove tasks by framework and id.
    Rm {
        #[command(flatten)]
        etcd: EtcdArgs,
        /// The id of the framework that runs them (task ids are unique within a framework
        /// only). `--framework-id ''` removes tasks at legacy keys (`tasks/<task-id>`).
        #[arg(long, default_value = "marathon")]
        framework_id: String,
        /// Task ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// List tasks.
    Ls {
        #[command(flatten)]
        etcd: EtcdArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(ClapArgs, Debug)]
pub struct PutArgs {
    #[command(flatten)]
    etcd: EtcdArgs,
    /// Task id (unique within its framework).
    #[arg(long)]
    id: String,
    /// Task name (its DNS label unless --discovery-name is given).
    #[arg(long)]
    name: String,
    /// Framework name, e.g. marathon.
    #[arg(long, default_value = "marathon")]
    framework: String,
    /// The framework's id, with --id the task's identity; defaults to --framework.
    #[arg(long)]
    framework_id: Option<String>,
    /// Id of the agent the task runs on.
    #[arg(long)]
    agent: String,
    /// Task address (source netinfo); repeat for several.
    #[arg(long = "ip", value_name = "IP")]
    ips: Vec<IpAddr>,
    /// A discovery port, `[NAME:]NUMBER[/tcp|udp]`; repeat for several.
    #[arg(long = "port", value_name = "PORT", value_parser = parse_port_spec)]
    ports: Vec<Port>,
    /// Put a discovery port behind a VIP: `PORT[/tcp|udp]=/group/app:80` or `PORT=198.19.0.1:80`.
    #[arg(long = "vip", value_name = "PORT=VIP", value_parser = parse_vip_spec)]
    vips: Vec<VipSpec>,
    /// DiscoveryInfo name (DNS label); defaults to --name.
    #[arg(long)]
    discovery_name: Option<String>,
    /// A task label `KEY=VALUE`; repeat for several.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    #[arg(long, value_enum, default_value_t = StateArg::Running)]
    state: StateArg,
    #[arg(long, value_enum, default_value_t = HealthArg::Unknown)]
    health: HealthArg,
    /// The task's site, if it differs from its agent's.
    #[arg(long)]
    site: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum StateArg {
    Running,
    Draining,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum HealthArg {
    Unknown,
    Healthy,
    Unhealthy,
}

#[derive(Subcommand, Debug)]
pub enum VipsCommand {
    /// List VIPs with their addresses and backends.
    Ls {
        #[command(flatten)]
        source: SourceArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Ask a running agent (its HTTP API) for what its data plane holds: backends with
        /// weights, health, share of slots and connection counters.
        #[arg(long, value_name = "ADDR:PORT", conflicts_with_all = ["etcd", "catalog"])]
        agent: Option<std::net::SocketAddr>,
    },
}

#[derive(Subcommand, Debug)]
pub enum L4lbCommand {
    /// Remove every trace of the load balancer: detach its programs, unpin its maps and links.
    /// Refused while an agent runs (stop it first).
    Detach {
        /// The pin directory (l4lb.pin_path).
        #[arg(long, default_value = lodestar_l4lb::DEFAULT_PIN_PATH, value_name = "DIR")]
        pin_path: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum CatalogCommand {
    /// Write every record of a catalog document into etcd (existing keys are replaced).
    Put {
        #[command(flatten)]
        etcd: EtcdArgs,
        /// The document (TOML, or JSON by its .json extension).
        file: PathBuf,
    },
}

/// A command-line value that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
struct BadValue {
    what: &'static str,
    value: String,
    reason: String,
}

impl BadValue {
    fn new(what: &'static str, value: &str, reason: impl ToString) -> BadValue {
        BadValue {
            what,
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

fn parse_port_spec(s: &str) -> Result<Port, BadValue> {
    let bad = |reason: String| BadValue::new("port", s, reason);
    let (rest, protocol) = match s.rsplit_once('/') {
        Some((r, p)) => (r, p.parse::<Protocol>().map_err(|e| bad(e.to_string()))?),
        None => (s, Protocol::default()),
    };
    let (name, number) = match rest.rsplit_once(':') {
        Some((n, num)) if !n.is_empty() => (Some(n), num),
        Some(_) => return Err(bad("empty name before ':'".into())),
        None => (None, rest),
    };
    let number: u16 =
        number.parse().ok().filter(|n| *n != 0).ok_or_else(|| {
            bad("expected [NAME:]NUMBER[/tcp|udp] with NUMBER in 1..=65535".into())
        })?;
    let port = Port::new(number).with_protocol(protocol);
    Ok(match name {
        Some(n) => port.named(n),
        None => port,
    })
}

/// `--vip PORT[/PROTO]=VIP`: which discovery port goes behind which VIP.
#[derive(Clone, Debug, PartialEq)]
struct VipSpec {
    port: u16,
    protocol: Option<Protocol>,
    vip: String,
}

fn parse_vip_spec(s: &str) -> Result<VipSpec, BadValue> {
    let bad = |reason: String| BadValue::new("VIP", s, reason);
    let (port, vip) = s
        .split_once('=')
        .ok_or_else(|| bad("expected PORT=VIP, e.g. 8080=/web:80".into()))?;
    let (port, protocol) = match port.split_once('/') {
        Some((p, proto)) => (
            p,
            Some(proto.parse::<Protocol>().map_err(|e| bad(e.to_string()))?),
        ),
        None => (port, None),
    };
    let port: u16 = port
        .parse()
        .map_err(|_| bad(format!("{port:?} is not a port number")))?;
    parse_vip_label(vip).map_err(|e| bad(e.to_string()))?;
    Ok(VipSpec {
        port,
        protocol,
        vip: vip.to_string(),
    })
}

fn parse_label(s: &str) -> Result<(String, String), BadValue> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| BadValue::new("label", s, "expected KEY=VALUE"))
}

pub async fn run(args: Args) -> Result<()> {
    match args.command {
        Command::MesosSync(a) => {
            let a = *a;
            let ca_cert = match &a.master_ca {
                Some(p) => {
                    Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?)
                }
                None => None,
            };
            if a.lease_ttl < 1 {
                bail!("--lease-ttl must be at least 1 second");
            }
            if !(0.0..=1.0).contains(&a.max_delete_fraction) {
                bail!("--max-delete-fraction must be between 0 and 1");
            }
            if a.max_state_mib == 0 {
                bail!("--max-state-mib must be at least 1");
            }
            let instance_id = a.instance_id.clone().unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                format!("{}-{}", host.trim(), std::process::id())
            });
            crate::mesos_sync::run(crate::mesos_sync::SyncArgs {
                masters: a
                    .master
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(String::from)
                    .collect(),
                etcd: a.etcd.config()?,
                source: a.source,
                interval: a.interval,
                batch: a.batch,
                once: a.once,
                ranges: lodestar_control::mesos::vipalloc::VipRanges {
                    v4: a.vip_range_v4,
                    v6: a.vip_range_v6,
                },
                site_attribute: a.site_attribute,
                auth: crate::mesos_sync::auth(a.master_user, a.master_password_file.as_deref())?,
                ca_cert,
                timeout: a.timeout,
                max_body: a.max_state_mib << 20,
                instance_id,
                lease_ttl: a.lease_ttl,
                metrics_listen: a.metrics_listen,
                guard: lodestar_control::mesos::sync::DeleteGuard {
                    max_delete_fraction: a.max_delete_fraction,
                    mass_delete_delay: a.mass_delete_delay,
                },
            })
            .await
        }
        Command::Status { http } => {
            let agent = AgentClient::new(http)?;
            let first: Status = agent.get("/v1/status").await?;
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let second: Status = agent.get("/v1/status").await?;
            print_status(&first, &second);
            Ok(())
        }
        Command::Agent(agent) => {
            let config = agent.merged_config()?;
            crate::agent::run(config).await
        }
        Command::Services { command } => services(command).await,
        Command::Vips {
            command:
                VipsCommand::Ls {
                    agent: Some(agent),
                    json,
                    ..
                },
        } => {
            let vips: Vec<lodestar_l4lb::VipStatus> =
                AgentClient::new(agent)?.get("/v1/vips").await?;
            if json {
                print_json(&vips)
            } else {
                print_dataplane_vips(&vips);
                Ok(())
            }
        }
        Command::L4lb {
            command: L4lbCommand::Detach { pin_path },
        } => {
            let d = lodestar_l4lb::detach(&pin_path)?;
            println!(
                "detached: {} links and {} maps removed from {}",
                d.links,
                d.maps,
                pin_path.display()
            );
            Ok(())
        }
        Command::Vips {
            command: VipsCommand::Ls { source, json, .. },
        } => {
            let snapshot = load(&source).await?;
            if json {
                print_json(&snapshot.vips())
            } else {
                print_vips(&snapshot);
                Ok(())
            }
        }
        Command::Catalog {
            command: CatalogCommand::Put { etcd, file },
        } => {
            let records = read_file(&file)?.into_records();
            let store = connect(&etcd).await?;
            let revision = store.put(&records).await?;
            println!("wrote {} records (revision {revision})", records.len());
            Ok(())
        }
        Command::Snapshot { source } => {
            let snapshot = load(&source).await?;
            print_json(&SnapshotView::from(&*snapshot))
        }
    }
}

async fn connect(etcd: &EtcdArgs) -> Result<EtcdStore> {
    Ok(EtcdStore::connect(etcd.config()?).await?)
}

/// Reads the catalog from the chosen source.
async fn load(source: &SourceArgs) -> Result<Arc<Snapshot>> {
    if let Some(list) = &source.etcd {
        let store = connect(&EtcdArgs {
            etcd: list.clone(),
            security: source.security.clone(),
        })
        .await?;
        let loaded = store.load(None).await?;
        for r in &loaded.rejected {
            eprintln!("lodestar: warning: skipped {r}");
        }
        return Ok(Arc::new(
            loaded.state.snapshot(loaded.revision, store.source()),
        ));
    }
    if let Some(path) = &source.catalog {
        let doc = read_file(path)?;
        return Ok(Arc::new(
            doc.into_state()
                .snapshot(1, Source::File(path.display().to_string())),
        ));
    }
    Ok(Arc::new(demo::snapshot()))
}

async fn services(command: ServicesCommand) -> Result<()> {
    match command {
        ServicesCommand::Put(put) => {
            let id = put.id.clone();
            // Checked before the task, so that a bad --etcd-* flag is reported first.
            let config = put.etcd.config()?;
            let task = task_from_args(*put)?;
            let store = EtcdStore::connect(config).await?;
            let revision = store.put(&[Record::Task(task)]).await?;
            println!("registered task {id} (revision {revision})");
            Ok(())
        }
        ServicesCommand::Rm {
            etcd,
            framework_id,
            ids,
        } => {
            let store = connect(&etcd).await?;
            let mut missing = Vec::new();
            for id in &ids {
                let key = RecordKey::Task(TaskKey::new(framework_id.clone(), id.clone()));
                if store.delete(&key).await? {
                    println!("removed task {id}");
                } else {
                    missing.push(id.as_str());
                }
            }
            if !missing.is_empty() {
                bail!(
                    "no task with id {} of framework {framework_id:?} in etcd",
                    missing.join(", ")
                );
            }
            Ok(())
        }
        ServicesCommand::Ls { etcd, json } => {
            let snapshot = load(&SourceArgs {
                etcd: Some(etcd.etcd),
                security: etcd.security,
                catalog: None,
            })
            .await?;
            if json {
                let tasks: Vec<&Task> = snapshot.tasks.values().map(|t| &**t).collect();
                print_json(&tasks)
            } else {
                print_tasks(&snapshot);
                Ok(())
            }
        }
    }
}

fn task_from_args(put: PutArgs) -> Result<Task> {
    let mut ports = put.ports;
    for spec in put.vips {
        let wanted = |p: &&mut Port| {
            p.number == spec.port && spec.protocol.is_none_or(|proto| p.protocol == Some(proto))
        };
        let Some(p) = ports.iter_mut().find(wanted) else {
            let proto = spec.protocol.map(|p| format!("/{p}")).unwrap_or_default();
            bail!(
                "--vip {}{proto}={}: no --port with number {}{proto}",
                spec.port,
                spec.vip,
                spec.port
            );
        };
        let n = p.labels.keys().filter(|k| k.starts_with("VIP_")).count();
        p.labels.insert(format!("VIP_{n}"), spec.vip);
    }
    if put.id.is_empty() {
        bail!("--id must not be empty");
    }
    let state = match put.state {
        StateArg::Running => TaskState::Running,
        StateArg::Draining => TaskState::Draining,
    };
    let health = match put.health {
        HealthArg::Unknown => Health::Unknown,
        HealthArg::Healthy => Health::Healthy,
        HealthArg::Unhealthy => Health::Unhealthy,
    };
    let framework_id = put.framework_id.unwrap_or_else(|| put.framework.clone());
    let mut task = Task::new(put.id, put.name.clone(), put.framework, put.agent)
        .with_framework_id(framework_id)
        .with_state(state)
        .with_health(health)
        .with_discovery_name(put.discovery_name.unwrap_or(put.name));
    for ip in put.ips {
        task = task.with_ip(ip, IpSource::Netinfo);
    }
    for p in ports {
        task = task.with_resource_port(p.number).with_discovery_port(p);
    }
    for (k, v) in put.labels {
        task = task.with_label(k, v);
    }
    if let Some(site) = put.site {
        task = task.with_site(site);
    }
    Ok(task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs() {
        let p = parse_port_spec("http:8080/udp").unwrap();
        assert_eq!(
            (p.name.as_deref(), p.number, p.protocol),
            (Some("http"), 8080, Some(Protocol::Udp))
        );
        let p = parse_port_spec("53").unwrap();
        assert_eq!(
            (p.name, p.number, p.protocol),
            (None, 53, Some(Protocol::Tcp))
        );
        for bad in ["", "0", "x:70000", ":80", "80/sctp", "http"] {
            assert!(parse_port_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn vip_specs() {
        let spec = parse_vip_spec("8080=/web:80").unwrap();
        assert_eq!(
            (spec.port, spec.protocol, spec.vip.as_str()),
            (8080, None, "/web:80")
        );
        let spec = parse_vip_spec("53/udp=198.19.0.53:53").unwrap();
        assert_eq!((spec.port, spec.protocol), (53, Some(Protocol::Udp)));
        // dcos-net's form without the leading slash names the same VIP.
        assert_eq!(parse_vip_spec("8080=web:80").unwrap().vip, "web:80");
        assert_eq!(
            parse_vip_label("web:80").unwrap(),
            parse_vip_label("/web:80").unwrap()
        );
        for bad in [
            "8080",
            "x=/web:80",
            "8080=we b:80",
            "8080=/web",
            "53/sctp=/dns:53",
        ] {
            assert!(parse_vip_spec(bad).is_err(), "{bad}");
        }
    }
}
