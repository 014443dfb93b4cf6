//! `celeroot beat`: arguments and output of running Celery Beat, its dry run, its status
//! and stopping it. The work is in [`crate::beat`].

use std::fmt::Write as _;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::observe::ListFormat;
use super::watch::parse_duration;
use super::{live, Cli, CommandError, Ui, EXIT_CHANGES, EXIT_OK};
use crate::beat;

/// Run Celery Beat for the cluster: a real `celery beat -S redbeat.RedBeatScheduler`,
/// supervised, restarted with back-off, and heartbeating in Redis (docs/celery.md, "Beat").
///
/// Safe to run on several machines at once: RedBeat's lock lets one send while the
/// others wait, and a waiting one takes over within the lock timeout plus one max
/// interval after the active one dies. `--dry-run` prints what beat would send instead,
/// from the manifests, without a beat or a server. Runs until SIGTERM, SIGINT or `beat
/// stop`. Exit status: 0, or 1 when it cannot start.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BeatArgs {
    #[command(subcommand)]
    pub command: Option<BeatCommand>,
    #[command(flatten)]
    pub run: BeatRunArgs,
}

#[derive(Debug, Subcommand)]
pub enum BeatCommand {
    /// Show the cluster's beats (which one sends, which wait) and RedBeat's lock. Exit
    /// status: 0 when a beat is active, 2 when none is (a health finding), 1 on error.
    Status(BeatStatusArgs),
    /// Ask the cluster's running beats (or one, --id) to stop; each stops at its next
    /// heartbeat, releasing RedBeat's lock.
    Stop(BeatStopArgs),
}

#[derive(Debug, Args)]
pub struct BeatRunArgs {
    /// Print what beat would send from the manifests at --rev, per target queue, and
    /// exit: no beat, no server.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: how far ahead to look.
    #[arg(long, value_name = "DUR", default_value = "24h", value_parser = parse_duration, requires = "dry_run")]
    pub next: Duration,
    /// The revision whose manifests name the cluster (and, for --dry-run, the schedules)
    /// when --cluster is not given.
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    /// With --dry-run: output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ListFormat::Text)]
    pub output: ListFormat,
    /// The cluster (on a host, the rendered worker.env sets it). Default: the manifests'.
    #[arg(long, env = "CELEROOT_CLUSTER")]
    pub cluster: Option<String>,
    /// Beat's broker: the live state's database (where RedBeat keeps the schedule), or
    /// RabbitMQ's amqp:// URL (RedBeat then reads --redis). Default: --redis.
    #[arg(
        long,
        value_name = "URL",
        env = "CELEROOT_BROKER_URL",
        hide_env_values = true
    )]
    pub broker: Option<String>,
    /// The cluster's time zone for beat. Default: the manifests' (or UTC on a host).
    #[arg(long, value_name = "TZ", env = "CELEROOT_TIMEZONE")]
    pub timezone: Option<String>,
    #[command(flatten)]
    pub release: super::agent::ReleaseArgs,
    /// This instance's name in its heartbeat. Default: <hostname>-<pid>.
    #[arg(long)]
    pub id: Option<String>,
    /// The longest beat sleeps between ticks (a changed schedule waits at most this
    /// long), and how often a waiting beat tries the lock.
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_duration)]
    pub max_interval: Duration,
    /// RedBeat's lock timeout: a dead active beat is replaced within this plus one max
    /// interval. At least twice --max-interval.
    #[arg(long, value_name = "DUR", default_value = "15s", value_parser = parse_duration)]
    pub lock_timeout: Duration,
    /// How often to heartbeat.
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// The heartbeat's TTL: a beat whose heartbeat is older counts as gone.
    #[arg(long, value_name = "DUR", default_value = "15s", value_parser = parse_duration)]
    pub heartbeat_ttl: Duration,
    /// How long beat gets to stop (and release the lock) after SIGTERM.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
    pub stop_timeout: Duration,
    /// An extra `celery beat` argument (repeatable), appended as given.
    #[arg(long = "beat-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub beat_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BeatStatusArgs {
    /// The cluster. Default: the manifests' at --rev.
    #[arg(long, env = "CELEROOT_CLUSTER")]
    pub cluster: Option<String>,
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ListFormat::Text)]
    pub output: ListFormat,
}

#[derive(Debug, Args)]
pub struct BeatStopArgs {
    /// The cluster. Default: the manifests' at --rev.
    #[arg(long, env = "CELEROOT_CLUSTER")]
    pub cluster: Option<String>,
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    /// Stop only this beat (see `beat status`).
    #[arg(long)]
    pub id: Option<String>,
}

pub fn run(ui: &Ui, cli: &Cli, a: &BeatArgs) -> Result<u8, CommandError> {
    match &a.command {
        Some(BeatCommand::Status(s)) => status(ui, cli, s),
        Some(BeatCommand::Stop(s)) => stop(ui, cli, s),
        None if a.run.dry_run => dry_run(ui, cli, &a.run),
        None => supervise(ui, cli, &a.run),
    }
}

/// The cluster: `--cluster`, else the manifests' at `rev`.
fn cluster(ui: &Ui, cli: &Cli, given: Option<&String>, rev: &str) -> Result<String, CommandError> {
    match given.filter(|c| !c.is_empty()) {
        Some(c) => {
            crate::validate::rules::rfc1123_label(c)
                .map_err(|e| CommandError::invalid(format!("invalid --cluster {c:?}: {e}")))?;
            Ok(c.clone())
        }
        None => Ok(live::revision(ui, cli, rev)?
            .1
            .compiled
            .state
            .cluster
            .clone()),
    }
}

fn dry_run(ui: &Ui, cli: &Cli, a: &BeatRunArgs) -> Result<u8, CommandError> {
    let (_, rev) = live::revision(ui, cli, &a.rev)?;
    let now = super::now()?;
    let f = beat::forecast(&rev.compiled.state, now, a.next);
    if a.output == ListFormat::Json {
        let doc = crate::contract::ForecastDoc {
            format_version: crate::contract::OUTPUT_FORMAT_VERSION,
            forecast: f,
        };
        outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(EXIT_OK);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Beat would send {} task(s) from {} between {} and {} (times in UTC), to {} queue(s):",
        thousands(f.total),
        rev.compiled.revision.describe(),
        f.from.format("%Y-%m-%d %H:%M:%S"),
        f.until.format("%Y-%m-%d %H:%M:%S"),
        f.queues.len()
    );
    let mut rows: Vec<[String; 6]> = Vec::new();
    for q in &f.queues {
        for x in &q.firings {
            rows.push([
                q.queue.clone(),
                x.schedule.clone(),
                x.task.clone(),
                x.when.clone(),
                format!("{}{}", if x.capped { "≥" } else { "" }, thousands(x.runs)),
                match &x.later {
                    Some(t) => format!("(after the window: {})", t.format("%m-%d %H:%M:%S")),
                    None => x
                        .next
                        .iter()
                        .map(|t| t.format("%m-%d %H:%M:%S").to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                },
            ]);
        }
    }
    if !rows.is_empty() {
        out.push('\n');
        out.push_str(&super::table(
            a.output == ListFormat::Wide,
            &["QUEUE", "SCHEDULE", "TASK", "WHEN", "RUNS", "FIRST"],
            &rows,
        ));
    }
    if !f.disabled.is_empty() {
        let _ = writeln!(
            out,
            "\n{} disabled schedule(s) send nothing: {}.",
            f.disabled.len(),
            f.disabled.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "\nIntervals are counted from now; a live entry keeps the phase of its last run."
    );
    out!("{out}");
    Ok(EXIT_OK)
}

/// A beat's (or a run collector's) id names its Redis key or field: 1-128 letters,
/// digits, `.`, `-` and `_`.
pub(super) fn check_id(id: &str) -> Result<(), CommandError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(CommandError::usage(format!(
            "--id {id:?}: use 1-128 letters, digits, `.`, `-` and `_`"
        )))
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn supervise(ui: &Ui, cli: &Cli, a: &BeatRunArgs) -> Result<u8, CommandError> {
    if a.lock_timeout < a.max_interval * 2 {
        return Err(CommandError::usage(format!(
            "--lock-timeout {:?} must be at least twice --max-interval {:?}: beat extends its lock once a tick, so a shorter lock expires under a live beat",
            a.lock_timeout, a.max_interval
        )));
    }
    // On a host (the rendered unit) the cluster and time zone come from worker.env; on
    // a machine with the config repository, from the manifests.
    let (cluster, timezone) = match a.cluster.as_ref().filter(|c| !c.is_empty()) {
        Some(_) => (
            cluster(ui, cli, a.cluster.as_ref(), &a.rev)?,
            a.timezone.clone(),
        ),
        None => {
            let (_, rev) = live::revision(ui, cli, &a.rev)?;
            let state = &rev.compiled.state;
            (
                state.cluster.clone(),
                a.timezone.clone().or_else(|| Some(state.timezone.clone())),
            )
        }
    };
    let broker = a
        .broker
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(|raw| {
            crate::celery::BrokerUrl::parse(raw).map_err(|e| {
                CommandError::usage(format!(
                    "--broker: {e}; with the live state on a Redis Cluster, give beat the broker's URL in --broker (RedBeat reads the schedule from --redis)"
                ))
            })
        })
        .transpose()?;
    let redis = live::redis_url(cli)?;
    if let Some(why) = broker.is_none().then(|| redis.broker_refusal()).flatten() {
        return Err(CommandError::usage(format!(
            "--broker (default: --redis): {why}; with the live state on a Redis Cluster, give beat the broker's URL in --broker (RedBeat reads the schedule from --redis)"
        )));
    }
    let id = a.id.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            crate::state::events::hostname(),
            std::process::id()
        )
    });
    check_id(&id)?;
    super::agent::log_to_stderr();
    let cfg = beat::Config {
        id,
        cluster,
        redis,
        broker,
        timezone,
        app: a.release.app.clone(),
        celery: a.release.celery.clone(),
        workdir: a.release.release_dir.clone(),
        max_interval: a.max_interval,
        lock_timeout: a.lock_timeout,
        heartbeat_interval: a.heartbeat_interval,
        heartbeat_ttl: a.heartbeat_ttl,
        stop_timeout: a.stop_timeout,
        beat_args: a.beat_args.clone(),
    };
    super::agent::until_signal(|stop| beat::supervise::run(&cfg, stop));
    Ok(EXIT_OK)
}

fn status(ui: &Ui, cli: &Cli, a: &BeatStatusArgs) -> Result<u8, CommandError> {
    let cluster = cluster(ui, cli, a.cluster.as_ref(), &a.rev)?;
    let mut store = live::connect(cli, &cluster)?;
    let beats = store.beat_heartbeats()?;
    let lock = store.redbeat_lock_ttl()?;
    let problem = crate::drift::beat_health(&beats, lock);
    let code = if problem.is_some() {
        EXIT_CHANGES
    } else {
        EXIT_OK
    };
    if a.output == ListFormat::Json {
        let v = crate::contract::BeatStatusDoc {
            format_version: crate::contract::OUTPUT_FORMAT_VERSION,
            cluster,
            healthy: problem.is_none(),
            finding: problem,
            lock_ttl_ms: lock,
            beats,
        };
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(code);
    }
    let now = u64::try_from(super::now()?.timestamp()).unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "RedBeat lock {}: {}",
        store.keys().redbeat_lock(),
        lock.map_or("not held".to_string(), |ms| format!(
            "held, {:.1} s left",
            ms as f64 / 1000.0
        ))
    );
    if !beats.is_empty() {
        let rows: Vec<[String; 7]> = beats
            .iter()
            .map(|b| {
                [
                    b.id.clone(),
                    b.host.clone(),
                    b.status.clone(),
                    if b.active_since > 0 {
                        format!("{}s", now.saturating_sub(b.active_since))
                    } else {
                        "-".into()
                    },
                    b.restarts.to_string(),
                    format!("{}s", b.lock_timeout),
                    format!("{}s ago", now.saturating_sub(b.ts)),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&super::table(
            a.output == ListFormat::Wide,
            &[
                "ID",
                "HOST",
                "STATUS",
                "ACTIVE FOR",
                "RESTARTS",
                "LOCK TIMEOUT",
                "HEARTBEAT",
            ],
            &rows,
        ));
    }
    match &problem {
        None => {
            let _ = writeln!(out, "\nhealthy: a beat sends the schedules");
        }
        Some(p) => {
            let _ = writeln!(out, "\n{}: {}", p.kind, p.detail);
        }
    }
    out!("{out}");
    Ok(code)
}

fn stop(ui: &Ui, cli: &Cli, a: &BeatStopArgs) -> Result<u8, CommandError> {
    let cluster = cluster(ui, cli, a.cluster.as_ref(), &a.rev)?;
    let mut store = live::connect(cli, &cluster)?;
    let ids: Vec<String> = match &a.id {
        Some(id) => {
            check_id(id)?;
            vec![id.clone()]
        }
        None => store
            .beat_heartbeats()?
            .into_iter()
            .filter(|b| b.status != "stopped")
            .map(|b| b.id)
            .collect(),
    };
    if ids.is_empty() {
        outln!("No beat of cluster {cluster} is running; nothing to stop.");
        return Ok(EXIT_OK);
    }
    let mut asked = Vec::new();
    for id in &ids {
        if store.request_beat_stop(id)? {
            asked.push(id.clone());
        } else if a.id.is_some() {
            return Err(CommandError::invalid(format!(
                "no running beat of cluster {cluster} is named {id:?}"
            ))
            .hinted("`celeroot beat status` lists them"));
        }
    }
    outln!(
        "Asked {} to stop (at its next heartbeat): {}.",
        if asked.len() == 1 {
            "one beat"
        } else {
            "the beats"
        },
        asked.join(", ")
    );
    Ok(EXIT_OK)
}
