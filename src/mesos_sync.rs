//! `lodestar mesos-sync`: follows the Mesos masters, on the leader's operator API event stream
//! or by polling `/master/state`, and keeps the etcd catalog in step. With several instances,
//! only the elected one writes; `--once` does one unfenced sync and exits.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use lodestar_control::mesos::election::campaign;
use lodestar_control::mesos::fetch::MasterClient;
use lodestar_control::mesos::operator::{Applied, Cluster, Event};
use lodestar_control::mesos::subscribe::{StreamError, SubscribeError, Subscription};
use lodestar_control::mesos::sync::{PollReport, SyncError, Syncer};
use lodestar_control::mesos::vipalloc::VipRanges;
use lodestar_control::{EtcdConfig, EtcdStore};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How mesos-sync learns of changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// The leader's `SUBSCRIBE` event stream; polling where a master has no operator API.
    Events,
    /// `GET /master/state` every interval.
    Poll,
}

pub struct SyncArgs {
    pub masters: Vec<String>,
    pub etcd: EtcdConfig,
    pub source: Source,
    pub interval: Duration,
    /// How long stream events are gathered into one write.
    pub batch: Duration,
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
    // One listener for the whole run: a signal that comes while nothing waits on it is kept.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let stop = CancellationToken::new();
    let stopping = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        stopping.cancel();
    });
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
            _ = stop.cancelled() => return Ok(()),
        };
        syncer.invalidate();
        let mut lost = leadership.lost();
        let fence = Some(leadership.lease_id());
        let mut source = args.source;
        let ended = loop {
            let step = match source {
                Source::Events => follow(&mut syncer, fence, args.batch, &mut lost, &stop).await,
                Source::Poll => poll(&mut syncer, fence, args.interval, &mut lost, &stop).await,
            };
            match step {
                Step::Ended(why) => break why,
                Step::FallBackToPolling => {
                    source = Source::Poll;
                }
            }
        };
        match ended {
            Ended::NotLeader => warn!("another instance leads now; standing by"),
            Ended::Lost => {}
            Ended::Stop => {
                info!("resigning and shutting down");
                leadership.resign().await;
                return Ok(());
            }
        }
    }
}

/// The state document is parsed on a blocking thread while the rest runs on the runtime's:
/// with glibc's default of an arena per thread, what the parse frees stays in its arena while
/// the catalog it became is allocated in another, and at 100,000 tasks the peak RSS was 235 MB
/// where the heap's peak was 134 MB. One arena lets each phase reuse the last one's memory
/// (168 MB). Called before any thread starts; mesos-sync is a process of its own, so this
/// changes nothing for the agent.
pub fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; glibc allows it at any time.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Why following the masters stopped.
enum Ended {
    /// The election was lost (the lease expired or was revoked).
    Lost,
    /// A write found another instance's lease.
    NotLeader,
    /// SIGTERM or Ctrl-C.
    Stop,
}

enum Step {
    Ended(Ended),
    /// No master has the operator API: poll instead, for as long as this leadership lasts.
    FallBackToPolling,
}

/// Logs what a write did.
fn report(result: Result<PollReport, SyncError>, what: &str) -> Result<(), Ended> {
    match result {
        Ok(r) if r.puts + r.deletes > 0 => info!(
            written = r.puts,
            deleted = r.deletes,
            unchanged = r.unchanged,
            txns = r.txns,
            "catalog updated from Mesos ({what})"
        ),
        Ok(r) => debug!(unchanged = r.unchanged, "no change in Mesos ({what})"),
        Err(SyncError::NotLeader) => return Err(Ended::NotLeader),
        Err(e) => warn!("sync failed, the catalog is left as it was: {e}"),
    }
    Ok(())
}

/// `$fut`'s output; or, when leadership is lost or the process is told to stop first, the
/// function returns that as its `Step::Ended`.
macro_rules! unless_ended {
    ($fut:expr, $lost:expr, $stop:expr) => {
        tokio::select! {
            v = $fut => v,
            _ = $lost.changed() => return Step::Ended(Ended::Lost),
            _ = $stop.cancelled() => return Step::Ended(Ended::Stop),
        }
    };
}

/// Polls `/master/state` every `interval` while this instance leads.
async fn poll(
    syncer: &mut Syncer,
    fence: Option<i64>,
    interval: Duration,
    lost: &mut tokio::sync::watch::Receiver<bool>,
    stop: &CancellationToken,
) -> Step {
    loop {
        if let Err(why) = report(syncer.poll(fence).await, "poll") {
            return Step::Ended(why);
        }
        if stop.is_cancelled() {
            return Step::Ended(Ended::Stop);
        }
        unless_ended!(tokio::time::sleep(interval), lost, stop);
    }
}

/// Follows the leader's event stream while this instance leads: the `SUBSCRIBED` state is
/// written as a poll would be, then events are applied to the cluster model and the change is
/// written once per `batch`. A lost stream (closed, cut, garbled, or silent for three
/// heartbeats) is subscribed again, and the fresh state reconciles whatever was missed.
async fn follow(
    syncer: &mut Syncer,
    fence: Option<i64>,
    batch: Duration,
    lost: &mut tokio::sync::watch::Receiver<bool>,
    stop: &CancellationToken,
) -> Step {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let subscription = unless_ended!(syncer.masters().subscribe(), lost, stop);
        let mut subscription = match subscription {
            Ok(s) => s,
            Err(e @ SubscribeError::NoOperatorApi { .. }) => {
                warn!("{e}; polling /master/state instead");
                metrics::counter!(STREAM_FALLBACKS_TOTAL).increment(1);
                return Step::FallBackToPolling;
            }
            Err(e) => {
                warn!("cannot subscribe to the masters, retrying in {backoff:?}: {e}");
                unless_ended!(tokio::time::sleep(backoff), lost, stop);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let started = tokio::time::Instant::now();
        let outcome = unless_ended!(stream(syncer, &mut subscription, fence, batch), lost, stop);
        match outcome {
            Err(why) => return Step::Ended(why),
            Ok(e) => {
                metrics::counter!(STREAM_ENDS_TOTAL, "kind" => e.kind()).increment(1);
                // A stream that held for a heartbeat was a good one; one that fails at once
                // (a proxy's 200, a state too large, garbage) backs off, or the leader would
                // serialise its whole state in a loop.
                backoff = if started.elapsed() >= subscription.heartbeat() {
                    FIRST_BACKOFF
                } else {
                    (backoff * 2).min(MAX_BACKOFF)
                };
                warn!("lost the event stream, subscribing again in {backoff:?}: {e}");
                unless_ended!(tokio::time::sleep(backoff), lost, stop);
            }
        }
    }
}

/// Reads one subscription until it ends (the error says how), writing as it goes.
async fn stream(
    syncer: &mut Syncer,
    subscription: &mut Subscription,
    fence: Option<i64>,
    batch: Duration,
) -> Result<StreamError, Ended> {
    let mut cluster = match subscription.subscribed().await {
        Ok(state) => Cluster::from_state(state),
        Err(e) => return Ok(e),
    };
    info!(
        master = subscription.url(),
        heartbeat = ?subscription.heartbeat(),
        tasks = cluster.task_count(),
        "subscribed to the master's event stream"
    );
    cluster.set_leader(subscription.leader_pid().await);
    report(
        syncer.sync_state(cluster.state(), fence).await,
        "subscribed",
    )?;
    loop {
        let event = match subscription.next().await {
            Ok(e) => e,
            Err(e) => return Ok(e),
        };
        metrics::counter!(STREAM_EVENTS_TOTAL, "type" => event.kind().to_string()).increment(1);
        let heartbeat = matches!(event, Event::Heartbeat);
        if cluster.apply(event) == Applied::Unchanged {
            // Each heartbeat writes the model again: a write that failed is retried, and
            // deletes the mass-delete guard held are judged again, on a quiet cluster too.
            if heartbeat {
                report(syncer.sync_state(cluster.state(), fence).await, "heartbeat")?;
            }
            continue;
        }
        // Gather what arrives within the batch window into the same write.
        let until = tokio::time::Instant::now() + batch;
        loop {
            match tokio::time::timeout_at(until, subscription.next()).await {
                Err(_) => break,
                Ok(Ok(event)) => {
                    metrics::counter!(STREAM_EVENTS_TOTAL, "type" => event.kind().to_string())
                        .increment(1);
                    cluster.apply(event);
                }
                Ok(Err(e)) => {
                    report(syncer.sync_state(cluster.state(), fence).await, "events")?;
                    return Ok(e);
                }
            }
        }
        report(syncer.sync_state(cluster.state(), fence).await, "events")?;
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

const STREAM_EVENTS_TOTAL: &str = "lodestar_mesos_sync_stream_events_total";
const STREAM_ENDS_TOTAL: &str = "lodestar_mesos_sync_stream_ends_total";
const STREAM_FALLBACKS_TOTAL: &str = "lodestar_mesos_sync_stream_fallbacks_total";

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
