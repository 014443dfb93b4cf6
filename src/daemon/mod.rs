//! The reconciler daemon (`celeroot watch`): turns pushes into applied revisions, heals
//! drift, and runs safely as several replicas.
//!
//! Owns: the sources of change (polling, webhooks, file watching), leader election and
//! fencing tokens, the reconcile loop with its back-off, and the HTTP endpoints
//! (`/hooks/*`, `/healthz`, `/readyz`, `/status`, `/metrics`).
//! Must not know: YAML, the key layout, or how a plan is computed. It calls
//! [`crate::apply::reconcile`] and [`crate::drift::detect`] like the CLI does.
//!
//! Threads: an HTTP server and signal handling on a small tokio runtime; the reconcile
//! loop and the leader election each on their own OS thread with their own synchronous
//! Redis connection (git2 and the store are synchronous). They talk through a channel of
//! [`Trigger`]s and the [`Shared`] state.

mod backups;
mod control;
mod events;
mod http;
mod leader;
pub mod metrics;
pub mod reconciler;
pub mod webhook;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use serde::Serialize;

use crate::source::remote::{Credentials, Mirror, Origin};
use crate::source::SourceError;
use crate::state::RedisUrl;

pub use metrics::Metrics;

/// A secret (the webhook key): its `Debug` form never shows it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What to do with drift found on a resync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftMode {
    /// Reconcile: write the keys back to what git says.
    Heal,
    /// Record it (event, metric, `/status`) and write nothing.
    Report,
}

/// Everything `celeroot watch` is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    pub origin: Origin,
    pub branch: String,
    /// The manifests directory inside the repository.
    pub path: String,
    /// Read the manifests from the local work tree instead of commits.
    pub worktree: bool,
    /// How often remote repositories are fetched (and local refs re-read).
    pub interval: Duration,
    /// How often the live state is checked for drift.
    pub resync: Duration,
    /// How often the schedules' run health is evaluated (and alerts sent).
    pub health_interval: Duration,
    /// How long file events settle before a local repository is re-read.
    pub debounce: Duration,
    pub drift: DriftMode,
    pub listen: Option<SocketAddr>,
    /// The webhook secret (HMAC key, or GitLab's token). Webhooks are refused without it.
    pub webhook_secret: Option<Secret>,
    pub redis: RedisUrl,
    /// Celery's broker when it is RabbitMQ: the run collector reads task events there
    /// (a Redis broker is the live state's database).
    pub events_broker: Option<crate::celery::AmqpUrl>,
    /// The cluster to lead; default: the cluster of the first valid revision.
    pub cluster: Option<String>,
    pub cache_dir: PathBuf,
    pub credentials: Credentials,
    /// Leader lease duration; renewed every third of it.
    pub lease_ttl: Duration,
    pub prune: bool,
    pub allow_rollback: bool,
    /// Who this daemon is in leases, events and logs.
    pub identity: String,
    /// How to reach hosts to ship a new release after applying; `None`: do not deploy
    /// (`--skip-deploy`).
    pub deploy: Option<crate::deploy::SshOptions>,
    /// Scheduled backups by the leader (`--backup-every`, `--backup-dir`, `--backup-keep`).
    pub backups: Option<BackupSchedule>,
}

/// When and where the leader writes backups.
#[derive(Debug, Clone)]
pub struct BackupSchedule {
    pub every: Duration,
    pub dir: PathBuf,
    /// Backups of this cluster kept in `dir`, newest first; older ones are deleted.
    pub keep: usize,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot watch {path}: {reason}")]
    Watch { path: String, reason: String },
    #[error("cannot start: {0}")]
    Runtime(#[from] std::io::Error),
}

/// What wakes the reconcile loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A webhook or a poll: fetch now.
    Fetch,
    /// Files of a local repository changed: settle, then re-read.
    Changed,
    /// This daemon just became the leader: reconcile the head even if it was seen.
    Led,
    /// `celeroot sync` request N: fetch and reconcile the head now, then answer it.
    Sync(u64),
    /// Shut down.
    Stop,
}

/// The last reconcile attempt, for `/status`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastResult {
    /// applied, noop, drift, invalid, refused, locked, conflict, fenced or failed.
    pub result: events::Result,
    pub revision: String,
    /// RFC 3339.
    pub at: String,
    pub writes: usize,
    pub corrective_writes: usize,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Drift found by the last resync.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftSummary {
    /// RFC 3339.
    pub checked_at: String,
    /// Live keys that differ from what celeroot wrote (healable).
    pub live_keys: usize,
    /// Unknown keys under the prefix (removed only by `reconcile --sweep`).
    pub unknown_keys: usize,
    /// Hosts whose heartbeat disagrees with git.
    pub hosts: usize,
    /// Objects whose change in git is not applied.
    pub pending: usize,
    /// The beat finding (`beat-missing`, `beat-inactive`), when there is one.
    pub beat: Option<String>,
}

/// The daemon's view, served on `/status` (version 1 of this JSON, docs/operations.md).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub format_version: u32,
    pub identity: String,
    pub repo: String,
    pub branch: String,
    pub cluster: Option<String>,
    pub leader: bool,
    /// Who holds the leader lease (this daemon or another).
    pub leader_holder: Option<String>,
    pub leader_epoch: Option<u64>,
    /// Set while the daemons are suspended (`celeroot suspend`): nothing is applied.
    pub suspended: Option<crate::state::Suspension>,
    /// `ok` or `unreachable`.
    pub redis: String,
    /// The branch head last fetched.
    pub seen_revision: Option<String>,
    /// The revision this daemon last applied or confirmed live.
    pub applied_revision: Option<String>,
    pub last_result: Option<LastResult>,
    pub last_success_at: Option<String>,
    /// The branch head when it is invalid (the last good revision stays live).
    pub invalid_revision: Option<InvalidRevision>,
    pub drift: Option<DriftSummary>,
    pub last_fetch_error: Option<String>,
    /// The last rollout after an apply.
    pub last_deploy: Option<LastDeploy>,
    /// The schedules' run health at the last evaluation (docs/runs.md).
    pub schedules: Option<ScheduleHealth>,
    /// The last scheduled backup (`--backup-every`).
    pub last_backup: Option<LastBackup>,
}

/// The last scheduled backup, for `/status`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastBackup {
    /// RFC 3339.
    pub at: String,
    /// `ok` or `failed`.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<usize>,
    /// Backups deleted after it (beyond `--backup-keep`).
    pub pruned: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Problems listed in `/status` at most (the counts cover every target).
pub const MAX_STATUS_PROBLEMS: usize = 50;

/// The schedules' run health, for `/status`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleHealth {
    /// RFC 3339.
    pub evaluated_at: String,
    /// Targets per state.
    pub counts: std::collections::BTreeMap<String, usize>,
    /// Targets that are late, missed, failed or stuck, worst first (at most
    /// [`MAX_STATUS_PROBLEMS`]).
    pub problems: Vec<crate::runs::expect::TargetHealth>,
}

/// The last rollout, for `/status`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastDeploy {
    pub release: String,
    /// `ok` or `failed`.
    pub result: String,
    pub deployed: usize,
    pub up_to_date: usize,
    pub failed: usize,
    pub rolled_back: usize,
    pub skipped: usize,
    /// RFC 3339.
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the next attempt is due, when this one failed (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
    /// The delay before the next attempt, when this one failed: it doubles per failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
    /// Failed rollouts in a row (0 after a success).
    pub failures: u32,
}

/// An invalid head, for `/status`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvalidRevision {
    pub revision: String,
    pub errors: usize,
    /// The first error, as `file:line:col: message`.
    pub first_error: String,
}

/// State shared by the HTTP handlers, the election and the reconcile loop.
#[derive(Debug)]
pub struct Shared {
    status: Mutex<Status>,
    pub metrics: Metrics,
    deliveries: Mutex<webhook::Deliveries>,
    triggers: mpsc::Sender<Trigger>,
    webhook_secret: Option<Secret>,
    branch: String,
    /// The cluster name, once known (flag or first valid revision).
    cluster: OnceLock<String>,
    /// This daemon's leader token (never changes for the life of the process).
    token: String,
    leading: AtomicBool,
    /// When the lease runs out unless renewed (measured from before the renewal was sent).
    lease_until: Mutex<Option<std::time::Instant>>,
    redis_ok: AtomicBool,
    /// Where check-in pings are recorded.
    redis: crate::state::RedisUrl,
    /// Pings per token hash in the current minute (the rate limit of `/ping`).
    pings: Mutex<std::collections::HashMap<String, (std::time::Instant, u32)>>,
    /// The suspension in Redis, as last read by the control thread.
    suspended: Mutex<Option<crate::state::Suspension>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Counts a ping of the token whose hash is `hash`; `false` when it is over
    /// [`crate::runs::checkin::PINGS_PER_MINUTE`] in the current minute.
    pub fn allow_ping(&self, hash: &str) -> bool {
        let now = std::time::Instant::now();
        let mut pings = lock(&self.pings);
        // Bounded: forget tokens not seen for a minute; while 10,000 distinct tokens
        // pinged within one (a spray of made-up tokens), refuse new ones.
        if pings.len() >= 10_000 {
            pings.retain(|_, (t, _)| now.duration_since(*t) < std::time::Duration::from_secs(60));
            if pings.len() >= 10_000 && !pings.contains_key(hash) {
                return false;
            }
        }
        let e = pings.entry(hash.to_string()).or_insert((now, 0));
        if now.duration_since(e.0) >= std::time::Duration::from_secs(60) {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1 <= crate::runs::checkin::PINGS_PER_MINUTE
    }

    pub fn status(&self) -> Status {
        lock(&self.status).clone()
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut lock(&self.status));
    }

    fn trigger(&self, t: Trigger) {
        // The loop is gone only during shutdown.
        let _ = self.triggers.send(t);
    }

    /// Leading, and the lease has not run out by this daemon's clock.
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
            && lock(&self.lease_until).is_some_and(|t| std::time::Instant::now() < t)
    }

    /// The suspension, when the daemons are suspended.
    pub fn suspension(&self) -> Option<crate::state::Suspension> {
        lock(&self.suspended).clone()
    }

    fn set_suspended(&self, now: Option<crate::state::Suspension>) {
        let mut cur = lock(&self.suspended);
        if *cur == now {
            return;
        }
        match &now {
            Some(s) => {
                tracing::warn!(by = %s.by, reason = %s.reason, "suspended: nothing is applied until `celeroot resume`");
            }
            None => {
                tracing::info!("resumed: applying again");
            }
        }
        self.metrics.set_suspended(now.is_some());
        self.update(|st| st.suspended = now.clone());
        let resumed = now.is_none();
        *cur = now;
        drop(cur);
        if resumed {
            // Apply what waited, now rather than at the next poll.
            self.trigger(Trigger::Fetch);
        }
    }

    fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::SeqCst);
        self.metrics.set_leader(leading);
        self.update(|s| s.leader = leading);
    }

    fn set_redis_ok(&self, ok: bool) {
        self.redis_ok.store(ok, Ordering::SeqCst);
        self.update(|s| s.redis = if ok { "ok" } else { "unreachable" }.into());
    }

    /// Ready: Redis answered the last election round, and the cluster is known.
    pub fn ready(&self) -> bool {
        self.redis_ok.load(Ordering::SeqCst) && self.cluster.get().is_some()
    }
}

fn random_token() -> String {
    use sha2::{Digest, Sha256};
    // Unique per process and start: pid, wall clock, and a stack address (ASLR).
    let marker = 0u8;
    let seed = format!(
        "{}-{}-{:p}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        &marker
    );
    format!("{:x}", Sha256::digest(seed.as_bytes()))[..24].to_string()
}

/// Runs the daemon until SIGTERM or SIGINT.
///
/// # Errors
/// [`DaemonError`] when it cannot start (bad repository, address in use, ...). Once
/// running, failures are retried with back-off and reported, never returned.
pub fn run(cfg: Config) -> Result<(), DaemonError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve(cfg))
}

async fn serve(cfg: Config) -> Result<(), DaemonError> {
    let mirror = Mirror::open(
        cfg.origin.clone(),
        &cfg.branch,
        &cfg.cache_dir,
        cfg.credentials.clone(),
    )?;
    let (tx, rx) = mpsc::channel();
    let shared = Arc::new(Shared {
        status: Mutex::new(Status {
            format_version: 1,
            identity: cfg.identity.clone(),
            repo: cfg.origin.redacted(),
            branch: cfg.branch.clone(),
            redis: "unknown".into(),
            ..Status::default()
        }),
        metrics: Metrics::new(),
        deliveries: Mutex::new(webhook::Deliveries::new(1024)),
        triggers: tx.clone(),
        webhook_secret: cfg.webhook_secret.clone(),
        branch: cfg.branch.clone(),
        cluster: OnceLock::new(),
        token: random_token(),
        leading: AtomicBool::new(false),
        lease_until: Mutex::new(None),
        redis_ok: AtomicBool::new(false),
        redis: cfg.redis.clone(),
        pings: Mutex::new(std::collections::HashMap::new()),
        suspended: Mutex::new(None),
    });
    if let Some(c) = &cfg.cluster {
        let _ = shared.cluster.set(c.clone());
    }
    let listener = match cfg.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::Listen { addr, source })?,
        ),
        None => None,
    };
    let watcher = worker::watch_files(&mirror, &cfg, tx.clone())?;
    tracing::info!(
        repo = %cfg.origin.redacted(),
        branch = %cfg.branch,
        identity = %cfg.identity,
        listen = ?listener.as_ref().and_then(|l| l.local_addr().ok()),
        "celeroot watch started"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let election = {
        let (shared, cfg, stop) = (shared.clone(), cfg.clone(), stop.clone());
        std::thread::Builder::new()
            .name("election".into())
            .spawn(move || leader::run(&shared, &cfg, &stop))?
    };
    let control = {
        let (shared, cfg, stop) = (shared.clone(), cfg.clone(), stop.clone());
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || control::run(&shared, &cfg, &stop))?
    };
    let reconciler = {
        let (shared, cfg) = (shared.clone(), cfg.clone());
        std::thread::Builder::new()
            .name("reconcile".into())
            .spawn(move || worker::Worker::new(cfg, mirror, shared, rx).run())?
    };
    let collector = {
        let (shared, cfg, stop) = (shared.clone(), cfg.clone(), stop.clone());
        std::thread::Builder::new()
            .name("runs".into())
            .spawn(move || collect_runs(&shared, &cfg, &stop))?
    };
    let backups = match cfg.backups.clone() {
        Some(b) => {
            let (shared, cfg, stop) = (shared.clone(), cfg.clone(), stop.clone());
            Some(
                std::thread::Builder::new()
                    .name("backups".into())
                    .spawn(move || backups::run(&shared, &cfg, &b, &stop))?,
            )
        }
        None => None,
    };

    match listener {
        Some(l) => {
            let app = http::router(shared.clone());
            http::serve(l, app, shutdown_signal()).await;
        }
        None => shutdown_signal().await,
    }
    tracing::info!("shutting down: finishing the current reconcile");
    drop(watcher);
    let _ = tx.send(Trigger::Stop);
    stop.store(true, Ordering::SeqCst);
    let joined = tokio::task::spawn_blocking(move || {
        let _ = reconciler.join();
        let _ = election.join();
        let _ = control.join();
        let _ = collector.join();
        if let Some(b) = backups {
            let _ = b.join();
        }
    })
    .await;
    if joined.is_err() {
        tracing::error!("a daemon thread panicked");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Evaluates the schedules' run health every `--health-interval` for `/status` and
/// `/metrics` (every replica), and sends alerts (the leader).
fn evaluate_runs(shared: &Shared, cfg: &Config, cluster: &str, stop: &AtomicBool) {
    let mut evaluator = crate::runs::expect::Evaluator::default();
    let mut store: Option<crate::state::Store> = None;
    while !stop.load(Ordering::SeqCst) {
        if store.is_none() {
            store = crate::state::Store::connect(&cfg.redis, cluster).ok();
        }
        if let Some(s) = store.as_mut() {
            let now = chrono::Utc::now();
            let now_s = crate::state::runs::epoch_secs(now);
            match crate::runs::health_now(s, &mut evaluator, now_s) {
                Ok(mut health) => {
                    shared.metrics.schedules(&health);
                    // Only the leader notifies; what was told is in Redis, so a new
                    // leader neither repeats nor forgets.
                    if shared.leading.load(Ordering::SeqCst) {
                        if let Err(e) = alert_round(shared, cfg, s, cluster, &health) {
                            tracing::warn!(error = %e, "alerts: reading or recording their state failed");
                        }
                    }
                    let counts = crate::runs::expect::counts(&health)
                        .into_iter()
                        .map(|(k, n)| (k.as_str().to_string(), n))
                        .collect();
                    health.retain(|t| t.state.is_problem());
                    health.sort_by(|a, b| {
                        b.state
                            .cmp(&a.state)
                            .then_with(|| a.schedule.cmp(&b.schedule))
                    });
                    health.truncate(MAX_STATUS_PROBLEMS);
                    shared.update(|st| {
                        st.schedules = Some(ScheduleHealth {
                            evaluated_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                            counts,
                            problems: health,
                        });
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "evaluating the schedules' run health failed");
                    store = None;
                }
            }
        }
        let until = std::time::Instant::now() + cfg.health_interval;
        while std::time::Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// One round of alert notifications.
fn alert_round(
    shared: &Shared,
    cfg: &Config,
    store: &mut crate::state::Store,
    cluster: &str,
    health: &[crate::runs::expect::TargetHealth],
) -> Result<(), crate::state::StateError> {
    let settings = crate::runs::alert::Settings::of_cluster_spec(&store.applied_cluster_spec()?);
    let out = crate::runs::alert::notify(store, cluster, &settings, health)?;
    for (channel, what) in &out.delivered {
        shared.metrics.alert(channel, true);
        tracing::info!(channel = %channel, "alert sent: {what}");
    }
    for (channel, why) in &out.failed {
        shared.metrics.alert(channel, false);
        tracing::warn!(channel = %channel, "alert not delivered (retried in {} s): {why}", cfg.health_interval.as_secs());
    }
    Ok(())
}

/// The run collector thread ([`crate::runs::collect`]): starts once the cluster is
/// known, and restarts after a failure until the daemon stops. It also runs the
/// evaluation of the schedules' run health, in a thread of its own.
fn collect_runs(shared: &Shared, cfg: &Config, stop: &AtomicBool) {
    let pause = |d: std::time::Duration| {
        let until = std::time::Instant::now() + d;
        while std::time::Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let cluster = loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if let Some(c) = shared.cluster.get() {
            break c.clone();
        }
        pause(std::time::Duration::from_millis(500));
    };
    let rc = crate::runs::collect::Config {
        url: cfg.redis.clone(),
        events: cfg.events_broker.clone(),
        cluster,
        id: format!("{}-runs", cfg.identity),
    };
    std::thread::scope(|scope| {
        scope.spawn(|| evaluate_runs(shared, cfg, &rc.cluster, stop));
        let stats = shared.metrics.runs.clone();
        while !stop.load(Ordering::SeqCst) {
            if let Err(e) = crate::runs::collect::run(&rc, stop, &stats) {
                tracing::warn!(error = %e, "run collector failed; retrying in 5 s");
                pause(std::time::Duration::from_secs(5));
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
