//! `lodestar mesos-sync`: polls the Mesos masters and keeps the etcd catalog in step. With
//! several instances, only the elected one writes; `--once` does one unfenced sync and exits.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use lodestar_control::mesos::election::campaign;
use lodestar_control::mesos::fetch::MasterClient;
use lodestar_control::mesos::sync::{SyncError, Syncer};
use lodestar_control::mesos::vipalloc::VipRanges;
use lodestar_control::{EtcdConfig, EtcdStore};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{debug, info, warn};

pub struct SyncArgs {
    pub masters: Vec<String>,
    pub etcd: EtcdConfig,
    pub interval: Duration,
    pub once: bool,
    pub ranges: VipRanges,
    pub site_attribute: String,
    pub auth: Option<(String, String)>,
    pub ca_cert: Option<Vec<u8>>,
    pub timeout: Duration,
    pub max_body: usize,
    pub instance_id: String,
    pub lease_ttl: i64,
    /// Where to serve Prometheus `/metrics` (poll failures by kind, writes, VIP problems).
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub guard: lodestar_control::mesos::sync::DeleteGuard,
}

pub async fn run(args: SyncArgs) -> Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    if let Some(addr) = args.metrics_listen {
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .context("installing the metrics recorder")?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        info!(metrics = %listener.local_addr()?, "serving /metrics");
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let h = handle.clone();
                async move { h.render() }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }
    let store = EtcdStore::connect(args.etcd.clone()).await?;
    let masters = MasterClient::new(
        &args.masters,
        args.timeout,
        args.auth.clone(),
        args.ca_cert.as_deref(),
        args.max_body,
    )?;
    let mut syncer = Syncer::new(
        store.clone(),
        masters,
        args.site_attribute.clone(),
        args.ranges.clone(),
    )
    .with_delete_guard(args.guard.clone());

    if args.once {
        let r = syncer.poll(None).await?;
        println!(
            "synced: {} written, {} deleted, {} unchanged, in {} transactions",
            r.puts, r.deletes, r.unchanged, r.txns
        );
        return Ok(());
    }

    loop {
        let leadership = tokio::select! {
            l = campaign(&store, &args.instance_id, args.lease_ttl) => match l {
                Ok(l) => l,
                Err(e) => {
                    warn!("election failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            _ = sigterm.recv() => return Ok(()),
        };
        syncer.invalidate();
        let mut lost = leadership.lost();
        loop {
            match syncer.poll(Some(leadership.lease_id())).await {
                Ok(r) if r.puts + r.deletes > 0 => info!(
                    written = r.puts,
                    deleted = r.deletes,
                    unchanged = r.unchanged,
                    txns = r.txns,
                    "catalog updated from Mesos"
                ),
                Ok(r) => debug!(unchanged = r.unchanged, "no change in Mesos"),
                Err(SyncError::NotLeader) => {
                    warn!("another instance leads now; standing by");
                    break;
                }
                Err(e) => warn!("sync failed, the catalog is left as it was: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(args.interval) => {}
                _ = lost.changed() => break,
                _ = sigterm.recv() => {
                    info!("resigning and shutting down");
                    leadership.resign().await;
                    return Ok(());
                }
                _ = tokio::signal::ctrl_c() => {
                    info!("resigning and shutting down");
                    leadership.resign().await;
                    return Ok(());
                }
            }
            if leadership.is_lost() {
                break;
            }
        }
    }
}

/// Reads `--master-password-file` and checks the pair.
pub fn auth(
    user: Option<String>,
    password_file: Option<&std::path::Path>,
) -> Result<Option<(String, String)>> {
    match (user, password_file) {
        (None, None) => Ok(None),
        (Some(u), Some(p)) => {
            let pass = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            Ok(Some((u, pass.trim_end_matches(['\n', '\r']).to_string())))
        }
        _ => bail!("--master-user and --master-password-file go together"),
    }
}
