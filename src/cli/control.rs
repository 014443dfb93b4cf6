//! The verbs operators know from Flux and Argo CD, on the control record and the event
//! stream in Redis (so every `watch` replica honours them): `suspend`, `resume`, `sync`,
//! `events` and `wait`.

use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use super::{live, Cli, CommandError, ErrorKind, Ui, Untouched, EXIT_OK};
use crate::state::events::What;
use crate::state::{Event, Store, StoredEvent};

/// Stop the `watch` daemons from applying, on every replica, until `celeroot resume`.
///
/// The daemons keep fetching and report the branch head in `/status`; they apply, heal
/// and deploy nothing. `celeroot reconcile` by hand still works (it says the daemons are
/// suspended). Suspending again replaces the reason.
///
/// Example: celeroot suspend --reason "incident 4711: db failover"
///
/// Exit status: 0, 1 on an error.
#[derive(Debug, Args)]
pub struct SuspendArgs {
    /// Why (shown in `/status`, the events and `celeroot resume`).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// The cluster (default: the name in the manifests at HEAD).
    #[arg(long)]
    pub cluster: Option<String>,
}

/// Let the `watch` daemons apply again; the leader reconciles the branch head at once.
///
/// Example: celeroot resume
///
/// Exit status: 0 (also when nothing was suspended), 1 on an error.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The cluster (default: the name in the manifests at HEAD).
    #[arg(long)]
    pub cluster: Option<String>,
}

/// Ask the running `watch` daemon to fetch and reconcile now, and wait for its answer.
///
/// The request goes through Redis, so it reaches whichever replica leads; no webhook
/// secret or `curl` is needed. The leader reconciles the branch head even when it applied
/// it already, observing every key (so drift is healed too).
///
/// Example: celeroot sync --timeout 2m
///
/// Exit status: 0 applied or nothing to do, 1 when the reconcile failed, the daemons are
/// suspended, no daemon leads, or no answer came within --timeout.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// How long to wait for the daemon's answer.
    #[arg(long, default_value = "2m", value_parser = super::watch::parse_duration)]
    pub timeout: Duration,
    /// Return once the request is made, without waiting for the answer.
    #[arg(long)]
    pub no_wait: bool,
    /// The cluster (default: the name in the manifests at HEAD).
    #[arg(long)]
    pub cluster: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventsFormat {
    Text,
    /// One JSON object per line (JSON lines).
    Json,
}

/// The event stream: every reconcile attempt, deploy, reported drift, restore,
/// suspension and sync request, oldest first.
///
/// Example: celeroot events --since 1h --follow
///
/// Exit status: 0, 1 on an error.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// From when: an RFC 3339 time (2026-12-01T08:00:00Z), a date (2026-12-01) or a
    /// duration back from now (90m, 7d). Default: the last --limit events.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// The most events shown before following.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: u32,
    /// Keep printing events as they are recorded (until interrupted).
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = EventsFormat::Text)]
    pub output: EventsFormat,
    /// The cluster (default: the name in the manifests at HEAD).
    #[arg(long)]
    pub cluster: Option<String>,
}

/// Wait until a revision is applied (for pipelines: push, then wait for the daemon).
///
/// A revision counts as applied when the live state's applied revision is it, or, with
/// the config repository at hand, a later commit that contains it. A revision the daemon
/// will not apply (invalid manifests, refused by a guard) fails at once; an attempt that
/// failed for a reason the daemon retries (the lease was held, Redis failed) is reported
/// and waited through.
///
/// Example: celeroot wait --rev "$GITHUB_SHA" --timeout 5m
///
/// Exit status: 0 applied, 1 when it will not be applied, or not within --timeout.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The commit: a commit id (at least 7 hex digits), or any revision git resolves in
    /// the config repository (HEAD, origin/main).
    #[arg(long)]
    pub rev: String,
    /// How long to wait.
    #[arg(long, default_value = "5m", value_parser = super::watch::parse_duration)]
    pub timeout: Duration,
    /// The cluster (default: the name in the manifests at HEAD).
    #[arg(long)]
    pub cluster: Option<String>,
}

fn record(store: &mut Store, what: What) {
    let revision = store.applied_revision().ok().flatten().unwrap_or_default();
    let event = Event::now(&crate::apply::actor(), &revision, what);
    if let Err(e) = store.record_event(&event) {
        errln!("warning: the event was not recorded: {e}");
    }
}

fn connect(ui: &Ui, cli: &Cli, cluster: &Option<String>) -> Result<(String, Store), CommandError> {
    let cluster = super::observe::cluster_name(ui, cli, cluster)?;
    let store = live::connect(cli, &cluster)?;
    Ok((cluster, store))
}

pub fn suspend(ui: &Ui, cli: &Cli, a: &SuspendArgs) -> Result<u8, CommandError> {
    let (cluster, mut store) = connect(ui, cli, &a.cluster)?;
    let before = store.suspend(&a.reason, &crate::apply::actor())?;
    record(
        &mut store,
        What::Suspended {
            reason: a.reason.clone(),
        },
    );
    match before {
        Some(b) => outln!(
            "Cluster {cluster} was already suspended by {} since {}; the reason is now {:?}.",
            b.by,
            b.at,
            a.reason
        ),
        None => outln!(
            "Suspended cluster {cluster}: the watch daemons apply, heal and deploy nothing until `celeroot resume`."
        ),
    }
    Ok(EXIT_OK)
}

pub fn resume(ui: &Ui, cli: &Cli, a: &ResumeArgs) -> Result<u8, CommandError> {
    let (cluster, mut store) = connect(ui, cli, &a.cluster)?;
    match store.resume()? {
        Some(s) => {
            record(
                &mut store,
                What::Resumed {
                    reason: s.reason.clone(),
                },
            );
            let why = if s.reason.is_empty() {
                String::new()
            } else {
                format!(": {:?}", s.reason)
            };
            outln!(
                "Resumed cluster {cluster} (suspended by {} since {}{why}); the leader reconciles the branch head now.",
                s.by,
                s.at
            );
        }
        None => outln!("Cluster {cluster} was not suspended."),
    }
    Ok(EXIT_OK)
}

/// Results of a reconcile that leave the branch head live.
fn succeeded(result: &str) -> bool {
    matches!(result, "applied" | "noop" | "drift")
}

pub fn sync(ui: &Ui, cli: &Cli, a: &SyncArgs) -> Result<u8, CommandError> {
    let (cluster, mut store) = connect(ui, cli, &a.cluster)?;
    if let Some(s) = store.control()?.suspended {
        return Err(CommandError::message(
            ErrorKind::Refused,
            format!(
                "cluster {cluster} is suspended (by {} since {}: {:?})",
                s.by, s.at, s.reason
            ),
        )
        .untouched(Untouched::Changed)
        .hinted("`celeroot resume` lifts the suspension (and reconciles at once)"));
    }
    let Some(leader) = store.leader()? else {
        return Err(CommandError::message(
            ErrorKind::Unavailable,
            format!("no `celeroot watch` daemon leads cluster {cluster}"),
        )
        .untouched(Untouched::Changed)
        .hinted("start one with `celeroot watch`, or apply by hand with `celeroot reconcile`"));
    };
    let n = store.request_sync()?;
    record(&mut store, What::SyncRequested { request: n });
    if a.no_wait {
        outln!(
            "Asked {} to reconcile cluster {cluster} (request {n}).",
            leader.holder
        );
        return Ok(EXIT_OK);
    }
    errln!(
        "Asked {} to reconcile cluster {cluster}; waiting for its answer…",
        leader.holder
    );
    let deadline = Instant::now() + a.timeout;
    loop {
        if let Some(ans) = store.control()?.synced.filter(|s| s.request >= n) {
            let rev = crate::source::short(&ans.revision).to_string();
            if succeeded(&ans.result) {
                outln!("{}: {} {rev}.", ans.by, ans.result);
                return Ok(EXIT_OK);
            }
            let why = ans.error.map(|e| format!(": {e}")).unwrap_or_default();
            return Err(CommandError::message(
                ErrorKind::Failed,
                format!("{} answered {}{why}", ans.by, ans.result),
            )
            .hinted("`celeroot events` shows the attempt; the daemon's `/status` its state"));
        }
        if Instant::now() >= deadline {
            return Err(CommandError::message(
                ErrorKind::Unavailable,
                format!(
                    "no answer from the daemon within {}",
                    crate::manifest::values::format_duration(a.timeout.as_secs())
                ),
            )
            .hinted(
                "the request stays: the leader handles it when it can; see `celeroot events`",
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A short description of what an event says beyond its kind and result.
fn detail(e: &StoredEvent) -> String {
    let f = |k: &str| e.fields.get(k).map_or("", String::as_str);
    match f("kind") {
        "intentional" | "corrective" | "noop" => {
            let s: serde_json::Value = serde_json::from_str(f("summary")).unwrap_or_default();
            format!(
                "+{} ~{} -{}, {} writes",
                s["add"],
                s["change"],
                s["remove"],
                f("writes")
            )
        }
        "failed" => f("error").to_string(),
        "deploy" => format!(
            "release {}: {} deployed, {} failed",
            f("release"),
            f("deployed"),
            f("failed")
        ),
        "drift" => format!("{} drifted keys", f("drifted_keys")),
        "restore" => format!(
            "backup of generation {} taken {}",
            f("backup_generation"),
            f("taken_at")
        ),
        "suspend" | "resume" => f("reason").to_string(),
        "sync" => format!("request {}", f("request")),
        _ => String::new(),
    }
}

fn text_line(e: &StoredEvent) -> String {
    let f = |k: &str| e.fields.get(k).map_or("", String::as_str);
    format!(
        "{:<20}  {:<11}  {:<9}  {:<8}  {:<24}  {}",
        f("ts"),
        f("kind"),
        f("result"),
        crate::source::short(f("revision")),
        f("actor"),
        detail(e)
    )
    .trim_end()
    .to_string()
}

fn print_events(events: &[StoredEvent], output: EventsFormat) {
    for e in events {
        match output {
            EventsFormat::Text => outln!("{}", text_line(e)),
            EventsFormat::Json => {
                let line = crate::contract::EventLine {
                    format_version: crate::contract::OUTPUT_FORMAT_VERSION,
                    event: crate::contract::EventRecord::of(e),
                };
                outln!("{}", serde_json::to_string(&line).unwrap_or_default());
            }
        }
    }
}

pub fn events(ui: &Ui, cli: &Cli, a: &EventsArgs) -> Result<u8, CommandError> {
    let now = super::now()?;
    let since = a
        .since
        .as_deref()
        .map(|t| super::audit::when("--since", t, now))
        .transpose()?;
    let (cluster, mut store) = connect(ui, cli, &a.cluster)?;
    let limit = a.limit as usize;
    let events = match since {
        Some(t) => {
            let mut v = store.events_between(super::audit::millis(t), None, usize::MAX)?;
            let skip = v.len().saturating_sub(limit);
            v.drain(..skip);
            v
        }
        None => {
            let mut v = store.events(limit)?;
            v.reverse();
            v
        }
    };
    if a.output == EventsFormat::Text {
        if events.is_empty() && !a.follow {
            outln!("No events recorded for cluster {cluster}.");
            return Ok(EXIT_OK);
        }
        outln!(
            "{:<20}  {:<11}  {:<9}  {:<8}  {:<24}  DETAIL",
            "TIME",
            "KIND",
            "RESULT",
            "REVISION",
            "ACTOR"
        );
    }
    print_events(&events, a.output);
    if !a.follow {
        return Ok(EXIT_OK);
    }
    let mut last = events
        .last()
        .map_or_else(|| "$".to_string(), |e| e.id.clone());
    loop {
        let new = store.events_after(&last, 1000)?;
        if let Some(e) = new.last() {
            last = e.id.clone();
        }
        print_events(&new, a.output);
    }
}

/// Whether two commit ids name the same commit (one may be abbreviated).
fn same_commit(a: &str, b: &str) -> bool {
    !a.is_empty() && !b.is_empty() && (a.starts_with(b) || b.starts_with(a))
}

/// Results of an attempt the daemon does not retry for the same commit.
fn is_final(result: &str) -> bool {
    matches!(result, "invalid" | "refused")
}

pub fn wait(ui: &Ui, cli: &Cli, a: &WaitArgs) -> Result<u8, CommandError> {
    // The config repository, when there is one: resolves names and abbreviations, and
    // tells whether a later applied commit contains the one waited for.
    let repo = crate::source::open_repo(cli.repo.as_deref()).ok();
    let target = match repo
        .as_ref()
        .and_then(|r| crate::source::resolve_commit(r, &a.rev).ok())
    {
        Some(c) => c.id().to_string(),
        None if a.rev.len() >= 7 && a.rev.chars().all(|c| c.is_ascii_hexdigit()) => {
            a.rev.to_ascii_lowercase()
        }
        None => {
            return Err(CommandError::usage(format!(
                "--rev {:?} is not a commit id (7 to 40 hex digits), and no config repository here resolves it",
                a.rev
            )))
        }
    };
    let (cluster, mut store) = connect(ui, cli, &a.cluster)?;
    let short = crate::source::short(&target).to_string();
    let deadline = Instant::now() + a.timeout;
    let mut reported: Option<String> = None;
    loop {
        let applied = store.applied_revision()?.unwrap_or_default();
        if same_commit(&applied, &target) {
            outln!("{short} is applied to cluster {cluster}.");
            return Ok(EXIT_OK);
        }
        let contained = repo.as_ref().is_some_and(|r| {
            !applied.is_empty() && crate::source::is_descendant(r, &applied, &target) == Some(true)
        });
        if contained {
            outln!(
                "{short} is applied to cluster {cluster}, as part of {}.",
                crate::source::short(&applied)
            );
            return Ok(EXIT_OK);
        }
        // The newest attempt at this commit says whether it can still come.
        if let Some(e) = store.events(200)?.into_iter().find(|e| {
            e.fields
                .get("revision")
                .is_some_and(|r| same_commit(r, &target))
        }) {
            let result = e.fields.get("result").cloned().unwrap_or_default();
            let error = e.fields.get("error").cloned().unwrap_or_default();
            if is_final(&result) {
                return Err(CommandError::message(
                    ErrorKind::Failed,
                    format!("{short} will not be applied: {result}: {error}"),
                )
                .hinted("`celeroot events` shows the attempt; fix the manifests and push again"));
            }
            if e.fields.get("kind").map(String::as_str) == Some("failed")
                && reported.as_deref() != Some(e.id.as_str())
            {
                errln!(
                    "note: an attempt at {short} failed ({result}: {error}); the daemon retries it"
                );
                reported = Some(e.id.clone());
            }
        }
        if Instant::now() >= deadline {
            let live = if applied.is_empty() {
                "nothing".to_string()
            } else {
                crate::source::short(&applied).to_string()
            };
            return Err(CommandError::message(
                ErrorKind::Failed,
                format!(
                    "{short} was not applied within {} (the live state has {live})",
                    crate::manifest::values::format_duration(a.timeout.as_secs())
                ),
            )
            .hinted("is a `celeroot watch` daemon running and not suspended? `celeroot events` and its `/status` say"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
