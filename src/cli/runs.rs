//! `celeroot runs`: the run history of schedules (what ran, where, and how it ended), and
//! `runs collect`, the collector that records it from Celery's task events.

use std::sync::Arc;

use clap::{Args, Subcommand};

use super::observe::{cluster_name, ListFormat};
use super::{Cli, CommandError, Ui, EXIT_OK};
use crate::desired::schedule::{format_duration, parse_duration};
use crate::runs::collect;
use crate::state::runs::{EntryName, Run};

/// Runs of schedules: when each fired, which host ran it, and how it ended.
///
/// Records come from Celery's task events, which a collector (`celeroot watch`, or
/// `celeroot runs collect`) writes to Redis; see docs/runs.md.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub command: Option<RunsCommand>,
    #[command(flatten)]
    pub list: ListArgs,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Record runs from Celery's task events until SIGTERM or SIGINT (what `celeroot
    /// watch` does in a thread).
    Collect(CollectArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this schedule's runs (a schedule named `collect`: `celeroot runs -- collect`).
    pub schedule: Option<String>,
    /// Only runs on this host.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Only runs that did not succeed (failed, rejected, or revoked).
    #[arg(long)]
    pub failed: bool,
    /// Only runs fired within this duration (`1h`, `7d`).
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// How many runs to show at most, newest first.
    #[arg(short = 'n', long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: u32,
    /// The cluster (default: the name in the manifests at HEAD).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ListFormat::Text)]
    pub output: ListFormat,
}

#[derive(Debug, Args)]
pub struct CollectArgs {
    /// The cluster (default: the name in the manifests at HEAD).
    #[arg(long)]
    pub cluster: Option<String>,
    /// This collector's name in Redis (default: `<hostname>-<pid>`).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Celery's broker when it is RabbitMQ (amqp://): the task events are read from its
    /// celeryev exchange. A Redis broker is the live state's database: events are read
    /// from --redis.
    #[arg(
        long,
        value_name = "URL",
        env = "CELEROOT_BROKER_URL",
        hide_env_values = true
    )]
    pub broker: Option<String>,
}

/// The RabbitMQ broker the task events are read from, when `raw` names one.
pub(super) fn events_broker(
    raw: Option<&str>,
) -> Result<Option<crate::celery::AmqpUrl>, CommandError> {
    match raw.filter(|r| !r.trim().is_empty()) {
        None => Ok(None),
        Some(r) => match crate::celery::BrokerUrl::parse(r)
            .map_err(|e| CommandError::usage(format!("--broker: {e}")))?
        {
            crate::celery::BrokerUrl::Amqp(u) => Ok(Some(u)),
            crate::celery::BrokerUrl::Redis(_) => Ok(None),
        },
    }
}

pub fn run(ui: &Ui, cli: &Cli, a: &RunsArgs) -> Result<u8, CommandError> {
    match &a.command {
        Some(RunsCommand::Collect(c)) => run_collect(ui, cli, c),
        None => list(ui, cli, &a.list),
    }
}

/// This machine's name and the process id: a collector's default id.
pub(super) fn default_collector_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!(
        "{}-{}",
        if host.is_empty() { "celeroot" } else { &host },
        std::process::id()
    )
}

fn run_collect(ui: &Ui, cli: &Cli, c: &CollectArgs) -> Result<u8, CommandError> {
    let cluster = cluster_name(ui, cli, &c.cluster)?;
    if let Some(id) = &c.id {
        super::beat::check_id(id)?;
    }
    let cfg = collect::Config {
        url: super::live::redis_url(cli)?,
        events: events_broker(c.broker.as_deref())?,
        cluster,
        id: c.id.clone().unwrap_or_else(default_collector_id),
    };
    super::agent::log_to_stderr();
    let stats = Arc::new(collect::Stats::default());
    super::agent::until_signal(|stop| collect::run(&cfg, stop, &stats))?;
    tracing::info!(
        events = stats.events.get(),
        recorded = stats.recorded.get(),
        malformed = stats.malformed.get(),
        "run collector stopped"
    );
    Ok(EXIT_OK)
}

fn list(ui: &Ui, cli: &Cli, a: &ListArgs) -> Result<u8, CommandError> {
    let since_secs = a
        .since
        .as_deref()
        .map(|s| {
            parse_duration(s)
                .map_err(|e| CommandError::usage(format!("invalid --since {s:?}: {e}")))
        })
        .transpose()?;
    let cluster = cluster_name(ui, cli, &a.cluster)?;
    let mut store = super::live::connect(cli, &cluster)?;
    let now = super::now()?;
    let now_s = crate::state::runs::epoch_secs(now);
    let mut entries: Vec<String> = store
        .redbeat_entry_names()?
        .into_iter()
        .chain(store.latest_runs()?.into_keys())
        .collect();
    entries.sort();
    entries.dedup();
    if let Some(s) = &a.schedule {
        let of_schedule = |e: &String| EntryName::parse(e).is_some_and(|n| n.schedule == s);
        if !entries.iter().any(of_schedule) {
            let mut known: Vec<&str> = entries
                .iter()
                .filter_map(|e| EntryName::parse(e).map(|n| n.schedule))
                .collect();
            known.dedup();
            let hint = crate::manifest::did_you_mean(s, known.iter().copied())
                .map(|m| format!(" (did you mean {m:?}?)"))
                .unwrap_or_default();
            return Err(CommandError::invalid(format!(
                "no schedule {s:?} is applied to cluster {cluster}{hint}"
            )));
        }
        entries.retain(of_schedule);
    }
    if let Some(h) = &a.host {
        // Host entries of other hosts cannot hold this host's runs; role entries can.
        entries.retain(|e| EntryName::parse(e).is_some_and(|n| n.kind == "role" || n.name == h));
    }
    let since = since_secs.map_or(0.0, |s| now_s - s as f64);
    // Filters apply after the read: read enough to fill the page after filtering.
    let filtered = a.failed || a.host.is_some();
    let want = a.limit as usize;
    let read = if filtered {
        want.saturating_mul(20).min(100_000)
    } else {
        want
    };
    let mut runs = store.runs_of(&entries, since, read)?;
    runs.retain(|r| {
        (!a.failed || matches!(r.state.as_str(), "failed" | "rejected" | "revoked"))
            && a.host
                .as_ref()
                .is_none_or(|h| r.host.as_deref() == Some(h.as_str()))
    });
    runs.truncate(want);
    if a.output == ListFormat::Json {
        let doc = crate::contract::RunsDoc {
            format_version: crate::contract::OUTPUT_FORMAT_VERSION,
            cluster,
            runs,
        };
        outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(EXIT_OK);
    }
    if runs.is_empty() {
        let collectors = store.collected_since(now_s)?;
        outln!(
            "No runs recorded{}.",
            match &a.schedule {
                Some(s) => format!(" for schedule {s}"),
                None => String::new(),
            }
        );
        if collectors.is_none() {
            outln!("No run collector is running: `celeroot watch` collects, or run `celeroot runs collect`.");
        }
        return Ok(EXIT_OK);
    }
    let rows: Vec<[String; 7]> = runs.iter().map(|r| row(r, now_s)).collect();
    out!(
        "{}",
        super::table(
            a.output == ListFormat::Wide,
            &[
                "FIRED (UTC)",
                "AGE",
                "SCHEDULE",
                "TARGET",
                "HOST",
                "STATE",
                "DETAIL"
            ],
            &rows
        )
    );
    Ok(EXIT_OK)
}

/// `2026-12-02 01:46:56` from seconds since the epoch.
pub(super) fn utc_text(secs: f64) -> String {
    chrono::DateTime::from_timestamp_millis((secs * 1000.0) as i64)
        .map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// `3m ago` (whole seconds; `just now` under a second).
pub(super) fn age_text(secs: f64, now: f64) -> String {
    let d = (now - secs).max(0.0).round() as u64;
    if d == 0 {
        "just now".into()
    } else {
        format!("{} ago", format_duration(d))
    }
}

/// What a run's DETAIL column says: its duration, and why it did not succeed.
fn detail(r: &Run, now: f64) -> String {
    let mut parts = Vec::new();
    if let Some(rt) = r.runtime {
        parts.push(if rt < 1.0 {
            format!("ran {:.0} ms", rt * 1000.0)
        } else {
            format!("ran {rt:.1} s")
        });
    } else if r.state == "started" {
        if let Some(d) = r.duration(now) {
            parts.push(format!("running for {}", format_duration(d.round() as u64)));
        }
    }
    if r.retries > 0 {
        parts.push(format!("retry {}", r.retries));
    }
    if r.expired {
        parts.push("expired".into());
    }
    if let Some(e) = &r.exception {
        parts.push(match &r.message {
            Some(m) => format!("{e}: {m}"),
            None => e.clone(),
        });
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

fn row(r: &Run, now: f64) -> [String; 7] {
    [
        utc_text(r.fired),
        age_text(r.fired, now),
        r.schedule.clone(),
        r.target.clone(),
        r.host.clone().unwrap_or_else(|| "-".into()),
        r.state.clone(),
        detail(r, now),
    ]
}

/// Whether each schedule target ran when its schedule says it should have.
///
/// Exit status: 0 all well, 2 when any target is late, missed, failed or stuck (or when
/// no run collector listens, so nothing can be told), 1 on error. See docs/runs.md.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Show every target, not only those that need attention.
    #[arg(long)]
    pub all: bool,
    /// The cluster (default: the name in the manifests at HEAD).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ListFormat::Text)]
    pub output: ListFormat,
}

/// What a health row's DETAIL says.
fn health_detail(t: &crate::runs::expect::TargetHealth, now: f64) -> String {
    use crate::runs::expect::RunHealth;
    let grace = format_duration(t.grace_secs);
    match t.state {
        RunHealth::Late => format!("not started within {grace} of its due time"),
        RunHealth::Missed => format!("not started within 2 × {grace} of its due time"),
        RunHealth::Stuck => format!(
            "running for {} (timeout {})",
            t.due.map_or_else(
                || "?".into(),
                |s| format_duration((now - s).max(0.0) as u64)
            ),
            t.timeout_secs.map_or_else(|| "-".into(), format_duration)
        ),
        RunHealth::Failed => "the newest run failed".into(),
        RunHealth::Paused => "disabled".into(),
        RunHealth::Unknown => "no run collector listens".into(),
        RunHealth::Pending => "no run yet".into(),
        RunHealth::Running | RunHealth::Ok => "-".into(),
    }
}

pub fn health(ui: &Ui, cli: &Cli, a: &HealthArgs) -> Result<u8, CommandError> {
    let cluster = cluster_name(ui, cli, &a.cluster)?;
    let mut store = super::live::connect(cli, &cluster)?;
    let now = super::now()?;
    let now_s = crate::state::runs::epoch_secs(now);
    let mut evaluator = crate::runs::expect::Evaluator::default();
    let mut all = crate::runs::health_now(&mut store, &mut evaluator, now_s)?;
    all.sort_by(|x, y| {
        y.state
            .cmp(&x.state)
            .then_with(|| x.schedule.cmp(&y.schedule))
            .then_with(|| x.target.cmp(&y.target))
    });
    let problems = all.iter().filter(|t| t.state.is_problem()).count();
    let blind = !all.is_empty()
        && all
            .iter()
            .all(|t| t.state == crate::runs::expect::RunHealth::Unknown);
    let code = if problems > 0 || blind {
        super::EXIT_CHANGES
    } else {
        EXIT_OK
    };
    if a.output == ListFormat::Json {
        let doc = crate::contract::HealthDoc::of(&cluster, code == EXIT_OK, all);
        outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(code);
    }
    outln!(
        "Schedules of cluster {cluster}: {} target(s): {}.",
        all.len(),
        crate::runs::expect::counts_text(&all)
    );
    if blind {
        outln!("No run collector is listening, so nothing can be told: `celeroot watch` collects, or run `celeroot runs collect`.");
    }
    let shown: Vec<&crate::runs::expect::TargetHealth> = all
        .iter()
        .filter(|t| a.all || t.state.is_problem())
        .collect();
    if !shown.is_empty() {
        let rows: Vec<[String; 6]> = shown
            .iter()
            .map(|t| {
                [
                    t.schedule.clone(),
                    t.target.clone(),
                    t.state.to_string(),
                    t.due.map_or_else(|| "-".into(), utc_text),
                    t.last.as_ref().map_or_else(
                        || "-".into(),
                        |l| format!("{} {}", l.state, age_text(l.fired, now_s)),
                    ),
                    health_detail(t, now_s),
                ]
            })
            .collect();
        outln!();
        out!(
            "{}",
            super::table(
                a.output == ListFormat::Wide,
                &[
                    "SCHEDULE",
                    "TARGET",
                    "STATE",
                    "DUE (UTC)",
                    "LAST RUN",
                    "DETAIL"
                ],
                &rows
            )
        );
    }
    Ok(code)
}

/// Check-ins of jobs celeroot does not run (`external: true` schedules).
#[derive(Debug, Args)]
pub struct ChecksArgs {
    #[command(subcommand)]
    pub command: ChecksCommand,
}

#[derive(Debug, Subcommand)]
pub enum ChecksCommand {
    /// Issue a check's ping token and print its URLs, once (celeroot keeps only a hash;
    /// a new token replaces the old one).
    Token(TokenArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The check: an applied Schedule with `external: true`.
    pub name: String,
    /// Where jobs reach `celeroot watch` (its --listen, or the proxy in front of it).
    #[arg(long, default_value = "http://127.0.0.1:9470", value_name = "URL")]
    pub url: String,
    /// The cluster (default: the name in the manifests at HEAD).
    #[arg(long)]
    pub cluster: Option<String>,
}

pub fn checks(ui: &Ui, cli: &Cli, a: &ChecksArgs) -> Result<u8, CommandError> {
    let ChecksCommand::Token(t) = &a.command;
    crate::validate::rules::rfc1123_label(&t.name)
        .map_err(|e| CommandError::usage(format!("invalid check name {:?}: {e}", t.name)))?;
    crate::validate::rules::http_url(&t.url)
        .map_err(|e| CommandError::usage(format!("invalid --url {:?}: {e}", t.url)))?;
    let cluster = cluster_name(ui, cli, &t.cluster)?;
    let mut store = super::live::connect(cli, &cluster)?;
    let schedules = store.applied_schedules()?;
    let id = crate::manifest::ObjectId {
        kind: crate::manifest::Kind::Schedule,
        name: t.name.clone(),
    };
    let external = schedules
        .get(&id)
        .is_some_and(|o| o.object.normalized.tree()["spec"]["external"].as_bool() == Some(true));
    if !external {
        let known: Vec<&str> = schedules
            .iter()
            .filter(|(_, o)| o.object.normalized.tree()["spec"]["external"].as_bool() == Some(true))
            .map(|(id, _)| id.name.as_str())
            .collect();
        let hint = crate::manifest::did_you_mean(&t.name, known.iter().copied())
            .map(|m| format!(" (did you mean {m:?}?)"))
            .unwrap_or_default();
        return Err(CommandError::invalid(format!(
            "no check {:?} is applied to cluster {cluster}: a check is a Schedule with `external: true`{hint}",
            t.name
        )));
    }
    let token = crate::runs::checkin::new_token()
        .map_err(|e| CommandError::failed(format!("cannot make a random token: {e}")))?;
    let now = crate::state::runs::epoch_secs(super::now()?);
    let replaced =
        store.issue_check_token(&t.name, &crate::runs::checkin::token_hash(&token), now)?;
    let base = format!("{}/ping/{token}", t.url.trim_end_matches('/'));
    outln!(
        "Token for check {} (shown once: celeroot keeps only its hash):",
        t.name
    );
    outln!("  {token}");
    outln!();
    outln!("Ping `celeroot watch` from the job (POST or GET; a body of at most 10,000 bytes):");
    outln!("  success:  {base}");
    outln!("  start:    {base}/start");
    outln!("  failure:  {base}/fail");
    outln!();
    outln!("  e.g.  curl -fsS -m 10 --retry 3 -X POST {base}");
    if replaced > 0 {
        outln!();
        outln!("The previous token of {} no longer works.", t.name);
    }
    Ok(EXIT_OK)
}
