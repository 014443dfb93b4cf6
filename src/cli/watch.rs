//! `celeroot watch`: arguments of the reconciler daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{Cli, CommandError, EXIT_OK};
use crate::daemon::{self, Config, DriftMode};
use crate::source::remote::{Credentials, Origin};

/// Run the reconciler daemon: follow a branch, apply each new revision, heal drift.
///
/// The repository (--repo / CELEROOT_REPO) is a local path (watched for changes) or a
/// URL (https://, ssh://, git@host:path, file://) mirrored into --cache-dir and fetched
/// every --interval and at once on a webhook. Several replicas may run against one
/// Redis: one leads and applies, the others stand by (docs/operations.md).
///
/// Runs until SIGTERM or SIGINT; exits 1 when it cannot start.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Write a backup of the cluster (`celeroot backup`) this often, as the leader; the
    /// first as soon as it leads. Needs --backup-dir.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "CELEROOT_BACKUP_EVERY")]
    pub backup_every: Option<Duration>,
    /// Where scheduled backups go (mode 0600 files).
    #[arg(long, value_name = "DIR", env = "CELEROOT_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,
    /// Scheduled backups of this cluster kept in --backup-dir; older ones are deleted.
    #[arg(long, value_name = "N", default_value_t = 7, value_parser = clap::value_parser!(u16).range(1..=1000), env = "CELEROOT_BACKUP_KEEP")]
    pub backup_keep: u16,
    /// Celery's broker when it is RabbitMQ (amqp://): the run collector reads the task
    /// events from its celeryev exchange. A Redis broker is the live state's database:
    /// events are read from --redis.
    #[arg(
        long,
        value_name = "URL",
        env = "CELEROOT_BROKER_URL",
        hide_env_values = true
    )]
    pub broker: Option<String>,
    /// The branch to follow.
    #[arg(long, default_value = "main", env = "CELEROOT_BRANCH")]
    pub branch: String,
    /// How often to fetch (poll) the repository.
    #[arg(long, default_value = "60s", value_parser = parse_duration, env = "CELEROOT_INTERVAL")]
    pub interval: Duration,
    /// How often to check the live state for drift (and heal it with --drift heal).
    #[arg(long, default_value = "5m", value_parser = parse_duration, env = "CELEROOT_RESYNC")]
    pub resync: Duration,
    /// What to do with drift found on a resync.
    #[arg(long, value_enum, default_value_t = DriftArg::Heal, env = "CELEROOT_DRIFT")]
    pub drift: DriftArg,
    /// How often to evaluate the schedules' run health (for /status, /metrics and
    /// alerts; docs/runs.md).
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "CELEROOT_HEALTH_INTERVAL")]
    pub health_interval: Duration,
    /// Address for webhooks, /healthz, /readyz, /status and /metrics (`off` for none).
    #[arg(long, default_value = "127.0.0.1:9470", env = "CELEROOT_LISTEN")]
    pub listen: String,
    /// File holding the webhook secret (HMAC key; GitLab: the token). Without it,
    /// webhooks are refused with 403.
    #[arg(long, value_name = "FILE", env = "CELEROOT_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Read the manifests from the local work tree (uncommitted files) instead of the branch.
    #[arg(long, env = "CELEROOT_WORKTREE", value_parser = super::env_bool)]
    pub worktree: bool,
    /// The cluster this daemon manages (default: the cluster of the first valid revision).
    #[arg(long, env = "CELEROOT_CLUSTER")]
    pub cluster: Option<String>,
    /// Where remote repositories are mirrored.
    #[arg(long, value_name = "DIR", env = "CELEROOT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// File holding an HTTPS token for fetching (or set CELEROOT_GIT_TOKEN).
    #[arg(long, value_name = "FILE", env = "CELEROOT_GIT_TOKEN_FILE")]
    pub git_token_file: Option<PathBuf>,
    /// SSH private key for fetching (default: the SSH agent).
    #[arg(long, value_name = "FILE", env = "CELEROOT_SSH_KEY")]
    pub ssh_key: Option<PathBuf>,
    /// Leader lease duration; renewed every third of it. Failover takes at most this
    /// plus a third of it.
    #[arg(long, default_value = "15s", value_parser = parse_duration, env = "CELEROOT_LEASE_TTL")]
    pub lease_ttl: Duration,
    /// How long file changes of a local repository settle before it is re-read.
    #[arg(long, default_value = "100ms", value_parser = parse_duration, env = "CELEROOT_DEBOUNCE")]
    pub debounce: Duration,
    /// Keep objects removed from git in the live state.
    #[arg(long, env = "CELEROOT_NO_PRUNE", value_parser = super::env_bool)]
    pub no_prune: bool,
    /// Apply a head that is not a descendant of the applied revision (force pushes).
    #[arg(long, env = "CELEROOT_ALLOW_ROLLBACK", value_parser = super::env_bool)]
    pub allow_rollback: bool,
    /// Do not ship a new release to the hosts after applying it (the default ships it,
    /// holding the lease, as `celeroot reconcile` does; a failed rollout is retried).
    #[arg(long, env = "CELEROOT_SKIP_DEPLOY", value_parser = super::env_bool)]
    pub skip_deploy: bool,
    #[command(flatten)]
    pub ssh: super::deploy::SshArgs,
    /// Log format (logs go to stderr; RUST_LOG filters, default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "CELEROOT_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DriftArg {
    Heal,
    Report,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `500ms`, `30s`, `5m`, `1h30m`.
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Some(ms) = s.trim().strip_suffix("ms") {
        return ms
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .map(Duration::from_millis)
            .ok_or_else(|| format!("invalid duration `{s}`: expected e.g. 500ms, 30s, 5m, 1h30m"));
    }
    crate::desired::schedule::parse_duration(s).map(Duration::from_secs)
}

/// [`parse_duration`], also accepting `0` and `0s` (no wait).
pub(super) fn parse_wait(s: &str) -> Result<Duration, String> {
    match s.trim() {
        "0" | "0s" => Ok(Duration::ZERO),
        _ => parse_duration(s),
    }
}

fn read_secret(path: &PathBuf, what: &str) -> Result<Vec<u8>, CommandError> {
    let bytes = std::fs::read(path).map_err(|e| {
        CommandError::invalid(format!(
            "cannot read the {what} file {}: {e}",
            path.display()
        ))
    })?;
    let trimmed = bytes.trim_ascii().to_vec();
    if trimmed.is_empty() {
        return Err(CommandError::invalid(format!(
            "the {what} file {} is empty",
            path.display()
        )));
    }
    Ok(trimmed)
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("celeroot")
        .join("repos")
}

pub fn run(cli: &Cli, a: &WatchArgs) -> Result<u8, CommandError> {
    init_logging(a.log_format);
    let origin = match &cli.repo {
        Some(r) => Origin::parse(&r.to_string_lossy()),
        None => Origin::Local(PathBuf::from(".")),
    };
    let listen: Option<SocketAddr> = match a.listen.as_str() {
        "off" | "" => None,
        s => Some(s.parse().map_err(|e| {
            CommandError::usage(format!("invalid --listen {s:?}: {e}"))
                .hinted("use HOST:PORT, e.g. 127.0.0.1:9470 or 0.0.0.0:9470, or `off`")
        })?),
    };
    let webhook_secret = match &a.webhook_secret_file {
        Some(p) => Some(daemon::Secret::new(read_secret(p, "webhook secret")?)),
        None => None,
    };
    let token = match &a.git_token_file {
        Some(p) => Some(String::from_utf8_lossy(&read_secret(p, "git token")?).into_owned()),
        None => std::env::var("CELEROOT_GIT_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    };
    if let Some(c) = &a.cluster {
        crate::validate::rules::rfc1123_label(c)
            .map_err(|e| CommandError::usage(format!("invalid --cluster {c:?}: {e}")))?;
    }
    let cfg = Config {
        origin,
        branch: a.branch.clone(),
        path: crate::source::normalize_path(&cli.path)?,
        worktree: a.worktree,
        interval: a.interval,
        resync: a.resync,
        health_interval: a.health_interval,
        debounce: a.debounce,
        drift: match a.drift {
            DriftArg::Heal => DriftMode::Heal,
            DriftArg::Report => DriftMode::Report,
        },
        listen,
        webhook_secret,
        redis: super::live::redis_url(cli)?,
        events_broker: super::runs::events_broker(a.broker.as_deref())?,
        cluster: a.cluster.clone(),
        cache_dir: a.cache_dir.clone().unwrap_or_else(default_cache_dir),
        credentials: Credentials {
            token,
            ssh_key: a.ssh_key.clone(),
        },
        lease_ttl: a.lease_ttl,
        prune: !a.no_prune,
        allow_rollback: a.allow_rollback,
        identity: crate::apply::actor(),
        deploy: (!a.skip_deploy).then(|| a.ssh.options()),
        backups: match (a.backup_every, &a.backup_dir) {
            (None, None) => None,
            (Some(every), Some(dir)) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    CommandError::usage(format!(
                        "--backup-dir {}: cannot create it: {e}",
                        dir.display()
                    ))
                })?;
                Some(daemon::BackupSchedule {
                    every,
                    dir: dir.clone(),
                    keep: usize::from(a.backup_keep),
                })
            }
            (Some(_), None) => {
                return Err(CommandError::usage(
                    "--backup-every needs --backup-dir: where should the backups go?",
                ))
            }
            (None, Some(_)) => {
                return Err(CommandError::usage(
                    "--backup-dir needs --backup-every: how often should the leader take one?",
                ))
            }
        },
    };
    daemon::run(cfg)?;
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("0ms").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
