//! `celeroot agent`: arguments of the host agent.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{live, Cli, CommandError, EXIT_OK};
use crate::agent::{self, Config};
use crate::state::RedisUrl;

/// Run the host agent: read this host's worker configuration from Redis, run and
/// supervise the Celery worker with it, and heartbeat what really runs (docs/agent.md).
///
/// Runs until SIGTERM or SIGINT, then stops the worker gracefully. Exit status: 0, or 1
/// when it cannot start (invalid arguments).
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// This host's name (as in its Host manifest).
    #[arg(long, env = "CELEROOT_HOST")]
    pub host: String,
    /// The cluster.
    #[arg(long, env = "CELEROOT_CLUSTER")]
    pub cluster: String,
    #[command(flatten)]
    pub release: ReleaseArgs,
    /// The worker's broker: its own Redis user's URL (`celeroot hosts credentials`), or
    /// amqp://USER:PASSWORD@HOST:PORT/VHOST for RabbitMQ. Default: the agent's --redis URL
    /// (for a Redis without ACL users).
    #[arg(
        long,
        value_name = "URL",
        env = "CELEROOT_BROKER_URL",
        hide_env_values = true
    )]
    pub broker: Option<String>,
    /// The worker's result backend (Redis). Default: the broker, or --redis when the
    /// broker is RabbitMQ.
    #[arg(
        long,
        value_name = "URL",
        env = "CELEROOT_RESULT_BACKEND",
        hide_env_values = true
    )]
    pub result_backend: Option<String>,
    /// The credentials file `celeroot hosts credentials --install` writes (its URLs take
    /// the place of --redis, --broker and --result-backend, and a rotated file is picked
    /// up). Default: <release-dir>/../shared/credentials.env.
    #[arg(long, value_name = "PATH", env = "CELEROOT_CREDENTIALS_FILE")]
    pub credentials_file: Option<PathBuf>,
    /// An extra worker argument (repeatable), appended as given.
    #[arg(long = "worker-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub worker_args: Vec<String>,
    /// How often to heartbeat.
    #[arg(long, default_value = "5s", value_parser = super::watch::parse_duration)]
    pub heartbeat_interval: Duration,
    /// The heartbeat's TTL (docs/state.md: 30 s).
    #[arg(long, default_value = "30s", value_parser = super::watch::parse_duration)]
    pub heartbeat_ttl: Duration,
    /// How often to ask the worker `celery inspect ping` (its health in the heartbeat).
    #[arg(long, default_value = "30s", value_parser = super::watch::parse_duration)]
    pub ping_interval: Duration,
    /// Re-read the configuration at least this often (changes are also pushed).
    #[arg(long, default_value = "10s", value_parser = super::watch::parse_duration)]
    pub reread_interval: Duration,
    /// How long the worker gets to stop after SIGTERM before SIGKILL.
    #[arg(long, default_value = "30s", value_parser = super::watch::parse_duration)]
    pub stop_timeout: Duration,
}

/// An optional URL argument; empty counts as not given.
pub(super) fn optional_url(
    what: &str,
    raw: Option<&str>,
) -> Result<Option<RedisUrl>, CommandError> {
    raw.filter(|r| !r.trim().is_empty())
        .map(|r| RedisUrl::parse(r).map_err(|e| CommandError::usage(format!("{what}: {e}"))))
        .transpose()
}

/// Where a Celery process (the agent's worker, beat) runs from.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The release directory the Celery app runs from.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/opt/celeroot/current",
        env = "CELEROOT_RELEASE_DIR"
    )]
    pub release_dir: PathBuf,
    /// The Celery app.
    #[arg(long, default_value = "tasks.app", env = "CELEROOT_APP")]
    pub app: String,
    /// The celery program (default: <release-dir>/.venv/bin/celery, else `celery`).
    #[arg(long, value_name = "PATH", env = "CELEROOT_CELERY")]
    pub celery: Option<PathBuf>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Logs to stderr (`RUST_LOG`, default `info`): the long-running `agent` and `beat`.
pub(super) fn log_to_stderr() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// Runs `work` with a flag that SIGTERM or SIGINT raises (for `agent` and `beat`).
pub(super) fn until_signal<T>(work: impl FnOnce(&Arc<AtomicBool>) -> T) -> T {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let relay = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !STOP.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            stop.store(true, Ordering::SeqCst);
        })
    };
    let out = work(&stop);
    stop.store(true, Ordering::SeqCst);
    let _ = relay.join();
    out
}

pub fn run(cli: &Cli, a: &AgentArgs) -> Result<u8, CommandError> {
    for (what, v) in [("--host", &a.host), ("--cluster", &a.cluster)] {
        crate::validate::rules::rfc1123_label(v)
            .map_err(|e| CommandError::invalid(format!("invalid {what} {v:?}: {e}")))?;
    }
    log_to_stderr();
    let cfg = Config {
        host: a.host.clone(),
        cluster: a.cluster.clone(),
        redis: live::redis_url(cli)?,
        broker: a
            .broker
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|raw| {
                crate::celery::BrokerUrl::parse(raw)
                    .map_err(|e| CommandError::usage(format!("--broker: {e}")))
            })
            .transpose()?,
        result_backend: optional_url("--result-backend", a.result_backend.as_deref())?,
        credentials_file: a.credentials_file.clone(),
        release_dir: a.release.release_dir.clone(),
        app: a.release.app.clone(),
        celery: a.release.celery.clone(),
        worker_args: a.worker_args.clone(),
        heartbeat_interval: a.heartbeat_interval,
        heartbeat_ttl: a.heartbeat_ttl,
        ping_interval: a.ping_interval,
        reread_interval: a.reread_interval,
        stop_timeout: a.stop_timeout,
    };
    if let Some(why) = cfg.broker_url().redis().and_then(RedisUrl::broker_refusal) {
        return Err(CommandError::usage(format!(
            "--broker (default: --redis): {why}"
        )));
    }
    // The worker (and the task code it runs) has the same Unix user: a process that is not
    // dumpable has a root-owned /proc/<pid>/environ, so it cannot read the agent's Redis
    // credentials there. Children are dumpable again after exec.
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_DUMPABLE) only changes a flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0);
    }
    until_signal(|stop| agent::run(&cfg, stop));
    Ok(EXIT_OK)
}
