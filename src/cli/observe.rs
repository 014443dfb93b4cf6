//! `celeroot drift`, `status`, `history` and `unlock`: read-mostly views of the live state.

use std::fmt::Write as _;

use clap::{Args, ValueEnum};

use super::{live, Cli, CommandError, ErrorKind, Ui, Untouched, EXIT_CHANGES, EXIT_OK};
use crate::drift::{self, DriftReport};
use crate::render::{markdown_plan_body, PlanReport, RevisionInfo, Style};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    Markdown,
}

/// Report drift: live keys edited out of band, hosts whose heartbeat disagrees with
/// the live configuration, and changes in git not yet applied.
///
/// Exit status: 0 in sync, 2 drift, 1 error.
#[derive(Debug, Args)]
pub struct DriftArgs {
    /// The revision git says should be live.
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ReportFormat::Text)]
    pub output: ReportFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Text,
    /// The table with every cell in full.
    Wide,
    Json,
}

/// Show the applied revision, pending changes, hosts and the latest events.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The revision to compare the live state with.
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ListFormat::Text)]
    pub output: ListFormat,
}

/// List applied revisions, newest first.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// How many entries to show.
    #[arg(short = 'n', long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..))]
    pub limit: u16,
    /// The cluster (default: the name in the manifests at HEAD).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ListFormat::Text)]
    pub output: ListFormat,
}

/// Show who holds the reconcile lease, or release a stale one by its id.
///
/// Exit status: 0 no lease or released, 1 a lease is held (without ID) or the id does not match.
#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// The lease id to release (shown by `celeroot unlock` and in the lease error).
    pub id: Option<String>,
    /// The cluster (default: the name in the manifests at HEAD). Works when HEAD is invalid.
    #[arg(long)]
    pub cluster: Option<String>,
}

fn compiled(ui: &Ui, cli: &Cli, rev: &str) -> Result<crate::Compiled, CommandError> {
    let (_, r) = live::revision(ui, cli, rev)?;
    Ok(r.compiled)
}

pub fn run_drift(ui: &Ui, cli: &Cli, args: &DriftArgs) -> Result<u8, CommandError> {
    drift_report(ui, cli, &args.rev, args.output)
}

/// The drift check `celeroot restore` runs after writing: `celeroot drift --rev REV`.
pub(super) fn drift_after(ui: &Ui, cli: &Cli, rev: &str) -> Result<u8, CommandError> {
    drift_report(ui, cli, rev, ReportFormat::Text)
}

fn drift_report(ui: &Ui, cli: &Cli, rev: &str, output: ReportFormat) -> Result<u8, CommandError> {
    let now = super::now()?;
    let target = compiled(ui, cli, rev)?;
    let mut store = live::connect(cli, &target.state.cluster)?;
    let report = drift::detect(&mut store, &target, now)?;
    let text = match output {
        ReportFormat::Json => serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
        ReportFormat::Text => drift_text(&report, &ui.stdout_style),
        ReportFormat::Markdown => drift_markdown(&report),
    };
    out!("{text}");
    Ok(if report.in_sync() {
        EXIT_OK
    } else {
        EXIT_CHANGES
    })
}

fn drift_text(r: &DriftReport, s: &Style) -> String {
    let mut out = String::new();
    let applied = r
        .applied_revision
        .as_deref()
        .map_or("nothing applied".to_string(), |c| {
            crate::source::short(c).to_string()
        });
    let _ = writeln!(
        out,
        "{}",
        s.paint(
            s.bold(),
            &format!(
                "celeroot drift for cluster {}: live ({applied}) vs {}",
                r.cluster,
                r.target.describe()
            )
        )
    );
    if r.in_sync() {
        let _ = writeln!(
            out,
            "\nIn sync: the live state matches {} and every host reports what it should run.",
            r.target.describe()
        );
        return out;
    }
    let _ = writeln!(out, "\n1. Live state edited out of band: {}", r.live.len());
    for d in &r.live {
        let _ = writeln!(
            out,
            "   {} {} — {} (fix: {})",
            s.paint(s.red(), "!"),
            d.key,
            d.detail,
            d.fixed_by
        );
    }
    let _ = writeln!(
        out,
        "2. Hosts that differ from the live configuration: {}",
        r.hosts.len()
    );
    for d in &r.hosts {
        let _ = writeln!(
            out,
            "   {} {}: {} (fix: {})",
            s.paint(s.yellow(), "!"),
            d.host,
            d.detail,
            d.fixed_by
        );
    }
    let _ = writeln!(
        out,
        "3. Changes in git not yet applied: {}",
        r.pending.changes.len()
    );
    for c in &r.pending.changes {
        let _ = writeln!(out, "   {} {}", c.action.marker(), c.id());
    }
    if let Some(b) = &r.beat {
        let _ = writeln!(
            out,
            "Beat: {} {}: {} (fix: {})",
            s.paint(s.red(), "!"),
            b.kind,
            b.detail,
            b.fixed_by
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "`celeroot reconcile` heals class 1 and applies class 3; class 2 needs the host's agent or a deploy (see \"fix\")."
    );
    out
}

fn drift_markdown(r: &DriftReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### celeroot drift for `{}` vs `{}`\n",
        r.cluster,
        r.target.describe()
    );
    if r.in_sync() {
        let _ = writeln!(out, "**In sync.**");
        return out;
    }
    let _ = writeln!(out, "| Class | Count |\n|---|---|");
    let _ = writeln!(out, "| Live state edited out of band | {} |", r.live.len());
    let _ = writeln!(
        out,
        "| Hosts differing from the live configuration | {} |",
        r.hosts.len()
    );
    let _ = writeln!(
        out,
        "| Changes in git not yet applied | {} |\n",
        r.pending.changes.len()
    );
    if let Some(b) = &r.beat {
        let _ = writeln!(
            out,
            "- **beat** `{}`: {} (fix: `{}`)",
            b.kind, b.detail, b.fixed_by
        );
    }
    for d in &r.live {
        let _ = writeln!(out, "- `{}`: {} (fix: {})", d.key, d.detail, d.fixed_by);
    }
    for d in &r.hosts {
        let _ = writeln!(
            out,
            "- host `{}`: {} (fix: {})",
            d.host, d.detail, d.fixed_by
        );
    }
    if !r.pending.is_empty() {
        let report = PlanReport {
            cluster: r.cluster.clone(),
            from: RevisionInfo {
                rev: "live".into(),
                commit: r.applied_revision.clone(),
            },
            to: r.target.clone(),
            plan: r.pending.clone(),
            warnings: Vec::new(),
        };
        out.push('\n');
        out.push_str(&markdown_plan_body(&report, crate::render::MARKDOWN_BUDGET));
    }
    out
}

pub fn run_status(ui: &Ui, cli: &Cli, args: &StatusArgs) -> Result<u8, CommandError> {
    let now = super::now()?;
    let target = compiled(ui, cli, &args.rev)?;
    let mut store = live::connect(cli, &target.state.cluster)?;
    let url = live::redis_url(cli)?;
    let st = drift::status(&mut store, url.redacted(), &target, now)?;
    let now_s = crate::state::runs::epoch_secs(now);
    let runs = crate::runs::health_now(
        &mut store,
        &mut crate::runs::expect::Evaluator::default(),
        now_s,
    )?;
    let suspended = store.control()?.suspended;
    if args.output == ListFormat::Json {
        let doc = crate::contract::StatusDoc::of(&st, &runs, suspended);
        outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(EXIT_OK);
    }
    let s = &ui.stdout_style;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        s.paint(
            s.bold(),
            &format!("cluster {} (live state in {})", st.cluster, st.redis)
        )
    );
    match st.applied.get("revision") {
        Some(rev) => {
            let _ = writeln!(
                out,
                "applied:  {} {:?} at {} by {} (generation {})",
                crate::source::short(rev),
                st.applied.get("subject").cloned().unwrap_or_default(),
                st.applied.get("applied_at").cloned().unwrap_or_default(),
                st.applied.get("actor").cloned().unwrap_or_default(),
                st.applied.get("generation").cloned().unwrap_or_default()
            );
        }
        None => {
            let _ = writeln!(out, "applied:  nothing yet (run `celeroot reconcile`)");
        }
    }
    if st.beat.needed {
        let active: Vec<&str> = st
            .beat
            .beats
            .iter()
            .filter(|b| b.status == "active")
            .map(|b| b.id.as_str())
            .collect();
        let standby = st
            .beat
            .beats
            .iter()
            .filter(|b| b.status == "standby")
            .count();
        let line = match (&st.beat.finding, st.beat.lock_ttl_ms) {
            (Some(f), _) => format!("{} {}: {}", s.paint(s.red(), "!"), f.kind, f.detail),
            (None, _) if active.is_empty() => {
                "a beat celeroot does not supervise holds RedBeat's lock".to_string()
            }
            (None, _) => format!(
                "{} active{}",
                active.join(", "),
                if standby > 0 {
                    format!(", {standby} on standby")
                } else {
                    String::new()
                }
            ),
        };
        let _ = writeln!(out, "beat:     {line}");
    }
    if !runs.is_empty() {
        let _ = writeln!(out, "{}", schedules_line(&runs, s));
    }
    if let Some(l) = &st.daemon_leader {
        let _ = writeln!(
            out,
            "daemon:   {} leads `celeroot watch` (epoch {}, since {})",
            l.holder, l.epoch, l.since
        );
    }
    if let Some(x) = &suspended {
        let _ = writeln!(
            out,
            "{}",
            s.paint(
                s.yellow(),
                &format!(
                    "daemon:   suspended by {} since {}: {:?} (`celeroot resume` lifts it)",
                    x.by, x.at, x.reason
                )
            )
        );
    }
    let _ = writeln!(
        out,
        "{}: {}",
        st.target.describe(),
        if st.pending == 0 {
            "in sync".to_string()
        } else {
            format!("{} change(s) pending (see `celeroot diff`)", st.pending)
        }
    );
    let _ = writeln!(out);
    let rows: Vec<[String; 5]> = st
        .hosts
        .iter()
        .map(|h| {
            [
                h.host.clone(),
                h.roles.join(","),
                if h.release.is_empty() {
                    "-".into()
                } else {
                    h.release.clone()
                },
                h.heartbeat_age.map_or("-".into(), |a| format!("{a}s ago")),
                h.health.clone(),
            ]
        })
        .collect();
    out.push_str(&super::table(
        args.output == ListFormat::Wide,
        &["HOST", "ROLES", "RELEASE", "HEARTBEAT", "HEALTH"],
        &rows,
    ));
    let _ = writeln!(out, "\nlatest events:");
    if st.events.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for e in &st.events {
        let f = |k: &str| e.fields.get(k).cloned().unwrap_or_default();
        let _ = writeln!(
            out,
            "  {}  {:<11} {:<8} {} by {}{}",
            f("ts"),
            f("kind"),
            f("result"),
            crate::source::short(&f("revision")),
            f("actor"),
            match e.fields.get("error") {
                Some(err) => format!(": {err}"),
                None => String::new(),
            }
        );
    }
    out!("{out}");
    Ok(EXIT_OK)
}

/// The `schedules:` line of `status`: the targets' run health, with the first few that
/// need attention.
fn schedules_line(runs: &[crate::runs::expect::TargetHealth], s: &crate::render::Style) -> String {
    use crate::runs::expect::RunHealth;
    if runs.iter().all(|t| t.state == RunHealth::Unknown) {
        return format!(
            "schedules: {} target(s); no run collector listens, so whether they run is unknown (`celeroot watch` collects)",
            runs.len()
        );
    }
    let mut line = format!(
        "schedules: {} target(s): {}",
        runs.len(),
        crate::runs::expect::counts_text(runs)
    );
    let mut problems: Vec<&crate::runs::expect::TargetHealth> =
        runs.iter().filter(|t| t.state.is_problem()).collect();
    problems.sort_by(|a, b| {
        b.state
            .cmp(&a.state)
            .then_with(|| a.schedule.cmp(&b.schedule))
    });
    for t in problems.iter().take(5) {
        let _ = write!(
            line,
            "\n  {} {} {} {}",
            s.paint(s.red(), "!"),
            t.schedule,
            t.target,
            t.state
        );
    }
    if problems.len() > 5 {
        let _ = write!(
            line,
            "\n  … and {} more (`celeroot health`)",
            problems.len() - 5
        );
    }
    line
}

/// `--cluster`, validated, or the cluster named by the manifests at HEAD.
pub(super) fn cluster_name(
    ui: &Ui,
    cli: &Cli,
    explicit: &Option<String>,
) -> Result<String, CommandError> {
    match explicit {
        Some(c) => crate::validate::rules::rfc1123_label(c)
            .map(|()| c.clone())
            .map_err(|e| CommandError::usage(format!("invalid --cluster {c:?}: {e}"))),
        None => Ok(compiled(ui, cli, "HEAD")?.state.cluster.clone()),
    }
}

pub fn run_history(ui: &Ui, cli: &Cli, args: &HistoryArgs) -> Result<u8, CommandError> {
    let cluster = cluster_name(ui, cli, &args.cluster)?;
    let mut store = live::connect(cli, &cluster)?;
    let entries = store.history(usize::from(args.limit))?;
    if args.output == ListFormat::Json {
        let doc = crate::contract::History {
            format_version: crate::contract::OUTPUT_FORMAT_VERSION,
            cluster: cluster.clone(),
            revisions: entries
                .iter()
                .map(crate::contract::HistoryRecord::of)
                .collect(),
        };
        outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(EXIT_OK);
    }
    if entries.is_empty() {
        outln!("No revision has been applied to cluster {cluster} yet.");
        return Ok(EXIT_OK);
    }
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|e| {
            let s = &e.summary;
            [
                e.generation.to_string(),
                crate::source::short(&e.revision).to_string(),
                e.applied_at.clone(),
                e.actor.clone(),
                format!("+{} ~{} -{}", s["add"], s["change"], s["remove"]),
                e.subject.clone(),
            ]
        })
        .collect();
    out!(
        "{}",
        super::table(
            args.output == ListFormat::Wide,
            &["GEN", "REVISION", "APPLIED AT", "BY", "CHANGES", "SUBJECT"],
            &rows
        )
    );
    outln!("\nReturn to one with `celeroot rollback REVISION`.");
    Ok(EXIT_OK)
}

pub fn run_unlock(ui: &Ui, cli: &Cli, args: &UnlockArgs) -> Result<u8, CommandError> {
    let cluster = cluster_name(ui, cli, &args.cluster)?;
    let mut store = live::connect(cli, &cluster)?;
    let lease = store.lease()?;
    let Some(lease) = lease else {
        outln!("No reconcile lease is held for cluster {cluster}.");
        return Ok(EXIT_OK);
    };
    outln!(
        "Lease {} held by {} (pid {}) since {} for revision {}.",
        lease.id,
        lease.holder,
        lease.pid,
        lease.since,
        lease.revision
    );
    match &args.id {
        None => Err(CommandError::message(
            ErrorKind::Conflict,
            format!("the lease {} is held", lease.id),
        )
        .untouched(Untouched::Released)
        .hinted(format!(
            "if that reconcile is gone, release the lease with `celeroot unlock {}`",
            lease.id
        ))),
        Some(id) if *id == lease.id => {
            if store.force_release(id)? {
                outln!("Released.");
                Ok(EXIT_OK)
            } else {
                Err(CommandError::message(
                    ErrorKind::Conflict,
                    "the lease changed hands before it could be released",
                )
                .untouched(Untouched::Released)
                .hinted("run `celeroot unlock` again to see the new holder"))
            }
        }
        Some(id) => Err(CommandError::usage(format!(
            "lease id {id} does not match the held lease {}",
            lease.id
        ))
        .untouched(Untouched::Released)),
    }
}
