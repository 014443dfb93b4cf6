//! `celeroot schedules`: list, show (resolved targets, next fire times), add, enable,
//! disable and remove schedules in the manifests.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value as Json};

use super::edit::{self as e, EditArgs, ReadArgs};
use super::hosts::{RmArgs, ShowArgs};
use super::{Cli, CommandError, Ui, EXIT_OK};
use crate::desired::{schedule, CompiledSchedule, Target, Trigger};
use crate::edit::ops::{self, ScheduleFields};
use crate::manifest::Kind;

/// Schedules: periodic Celery tasks fired by Celery Beat (RedBeat).
#[derive(Debug, Args)]
pub struct SchedulesArgs {
    #[command(subcommand)]
    pub command: SchedulesCommand,
}

#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// List the schedules in the manifests (the work tree, or --rev).
    #[command(alias = "list")]
    Ls(ReadArgs),
    /// Show a schedule: its file, fields, resolved target queues and next fire times.
    Show(ShowArgs),
    Add(Box<AddArgs>),
    /// Resume a disabled schedule (removes `enabled: false`).
    Enable(ToggleArgs),
    /// Stop a schedule firing without deleting it (`enabled: false`).
    Disable(ToggleArgs),
    /// Remove a schedule's manifest.
    #[command(alias = "remove")]
    Rm(RmArgs),
}

/// Stop (`disable`) or resume (`enable`) a schedule without deleting it.
#[derive(Debug, Args)]
pub struct ToggleArgs {
    /// The schedule.
    pub name: String,
    #[command(flatten)]
    pub edit: EditArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Every matched host runs the task, through its host queue.
    Each,
    /// One worker of each targeted role runs it, through the role queue.
    Any,
}

/// Add a schedule: writes `<path>/schedules/NAME.yaml`, after checking the whole
/// repository with it.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("when").required(true).args(["cron", "every"])))]
pub struct AddArgs {
    /// The schedule's name (an RFC 1123 label).
    pub name: String,
    /// A 5-field cron expression with Celery semantics, e.g. "15 2 * * *".
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
    /// A fixed interval, e.g. 30s, 5m, 1h30m.
    #[arg(long, value_name = "DURATION")]
    pub every: Option<String>,
    /// The Celery task name (dotted), e.g. ops.tasks.rotate_logs.
    #[arg(long, value_name = "TASK")]
    pub task: String,
    /// Where it runs: role:NAME, host:NAME or selector:KEY=VALUE[,KEY=VALUE...] (repeatable).
    #[arg(long = "target", value_name = "TARGET", required = true)]
    pub targets: Vec<Target>,
    /// each: every matched host runs it; any: one worker per targeted role.
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Positional arguments as a JSON list, e.g. '["/var/log", 14]'.
    #[arg(long, value_name = "JSON", value_parser = json_value)]
    pub args: Option<Json>,
    /// Keyword arguments as a JSON object, e.g. '{"apply": false}'.
    #[arg(long, value_name = "JSON", value_parser = json_value)]
    pub kwargs: Option<Json>,
    /// What the schedule is for.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// IANA time zone of the cron expression (default: the cluster's).
    #[arg(long, value_name = "TZ")]
    pub timezone: Option<String>,
    /// Discard a message no worker started within this duration.
    #[arg(long, value_name = "DURATION")]
    pub expires: Option<String>,
    /// Message priority, 0-9.
    #[arg(long, value_name = "N")]
    pub priority: Option<u8>,
    /// Add it disabled (`enabled: false`).
    #[arg(long)]
    pub disabled: bool,
    /// Set any field under spec, read as YAML. Repeatable.
    #[arg(long = "set", value_name = "PATH=VALUE", value_parser = ops::parse_set)]
    pub set: Vec<(Vec<String>, Json)>,
    #[command(flatten)]
    pub edit: EditArgs,
}

fn json_value(s: &str) -> Result<Json, String> {
    serde_json::from_str(s).map_err(|e| format!("not valid JSON: {e}"))
}

pub fn run(ui: &Ui, cli: &Cli, a: &SchedulesArgs) -> Result<u8, CommandError> {
    match &a.command {
        SchedulesCommand::Ls(r) => list(cli, r),
        SchedulesCommand::Show(s) => show(ui, cli, s),
        SchedulesCommand::Add(a) => add(ui, cli, a),
        SchedulesCommand::Enable(t) => toggle(ui, cli, t, true),
        SchedulesCommand::Disable(t) => toggle(ui, cli, t, false),
        SchedulesCommand::Rm(r) => super::hosts::remove(ui, cli, Kind::Schedule, &r.name, &r.edit),
    }
}

fn add(ui: &Ui, cli: &Cli, a: &AddArgs) -> Result<u8, CommandError> {
    let ws = e::workspace(cli)?;
    let f = ScheduleFields {
        description: a.description.clone(),
        cron: a.cron.clone(),
        every: a.every.clone(),
        timezone: a.timezone.clone(),
        task: a.task.clone(),
        targets: a.targets.clone(),
        mode: a.mode.map(|m| match m {
            ModeArg::Each => "each".to_string(),
            ModeArg::Any => "any".to_string(),
        }),
        args: a.args.clone(),
        kwargs: a.kwargs.clone(),
        enabled: a.disabled.then_some(false),
        expires: a.expires.clone(),
        priority: a.priority,
        set: a.set.clone(),
    };
    let change = ops::add_schedule(&ws, &a.name, &f).map_err(|err| e::error(Some(ui), err))?;
    e::finish(
        ui,
        &ws,
        &[change],
        &a.edit,
        &format!("schedules: add {}", a.name),
    )
}

fn toggle(ui: &Ui, cli: &Cli, t: &ToggleArgs, enabled: bool) -> Result<u8, CommandError> {
    let ws = e::workspace(cli)?;
    let verb = if enabled { "enable" } else { "disable" };
    match ops::set_schedule_enabled(&ws, &t.name, enabled).map_err(|err| e::error(Some(ui), err))? {
        Some(change) => e::finish(
            ui,
            &ws,
            &[change],
            &t.edit,
            &format!("schedules: {verb} {}", t.name),
        ),
        None => {
            outln!("nothing to change: schedule {} is already {verb}d", t.name);
            Ok(EXIT_OK)
        }
    }
}

/// `cron "…" [tz]` or `every 5m`.
fn when_text(v: &Json) -> String {
    let spec = |k: &str| v.pointer(&format!("/spec/{k}"));
    match (spec("cron"), spec("every")) {
        (Some(c), _) => format!("cron {}", e::scalar_text(c)),
        (None, Some(d)) => format!("every {}", e::scalar_text(d)),
        _ => "-".into(),
    }
}

fn targets_text(v: Option<&Json>) -> String {
    let items: Vec<String> = v
        .and_then(Json::as_array)
        .map(|ts| {
            ts.iter()
                .map(|t| Target::from_manifest(t).map_or_else(|| t.to_string(), |t| t.to_string()))
                .collect()
        })
        .unwrap_or_default();
    e::list_or_dash(&items)
}

/// The newest run of each schedule target, when the live state answers at once (these
/// commands read manifests and work without a server: then there is no LAST RUN).
fn latest_runs(
    cli: &Cli,
    ws: &crate::edit::Workspace,
) -> Option<std::collections::BTreeMap<String, crate::state::runs::Latest>> {
    let cluster = ws
        .docs()
        .into_iter()
        .find(|d| d.kind == Kind::Cluster)?
        .name;
    let url = super::live::redis_url(cli).ok()?;
    let mut store = crate::state::Store::connect(&url, &cluster).ok()?;
    store.latest_runs().ok()
}

/// The applied targets of schedule `name` that have runs.
fn entries_of<'a>(
    latest: &'a std::collections::BTreeMap<String, crate::state::runs::Latest>,
    name: &'a str,
) -> impl Iterator<Item = String> + 'a {
    latest
        .keys()
        .filter(move |e| {
            crate::state::runs::EntryName::parse(e).is_some_and(|n| n.schedule == name)
        })
        .cloned()
}

/// `succeeded 2m ago` for the newest of `entries`' runs.
fn last_run_text(
    latest: &std::collections::BTreeMap<String, crate::state::runs::Latest>,
    entries: impl Iterator<Item = String>,
    now: f64,
) -> String {
    entries
        .filter_map(|e| latest.get(&e))
        .max_by(|a, b| a.fired.total_cmp(&b.fired))
        .map_or_else(
            || "-".into(),
            |l| format!("{} {}", l.state, super::runs::age_text(l.fired, now)),
        )
}

fn list(cli: &Cli, r: &ReadArgs) -> Result<u8, CommandError> {
    let ws = e::read_workspace(cli, &r.rev)?;
    let mut docs: Vec<_> = ws
        .docs()
        .into_iter()
        .filter(|d| d.kind == Kind::Schedule)
        .collect();
    if !r.output.is_table() {
        e::print_documents(r.output, &docs.iter().map(|d| &d.value).collect::<Vec<_>>());
        return Ok(EXIT_OK);
    }
    docs.sort_by(|a, b| a.name.cmp(&b.name));
    let latest = latest_runs(cli, &ws);
    let now = crate::state::runs::epoch_secs(super::now()?);
    let rows: Vec<[String; 6]> = docs
        .iter()
        .map(|d| {
            let spec = |k: &str| d.value.pointer(&format!("/spec/{k}"));
            [
                d.name.clone(),
                when_text(&d.value),
                spec("task").map_or_else(|| "-".into(), e::scalar_text),
                targets_text(spec("targets")),
                spec("mode").map_or_else(|| "each".into(), e::scalar_text),
                match spec("enabled").and_then(Json::as_bool) {
                    Some(false) => "no".into(),
                    _ => "yes".into(),
                },
            ]
        })
        .collect();
    match &latest {
        Some(latest) => {
            let rows: Vec<[String; 7]> = docs
                .iter()
                .zip(rows)
                .map(|(d, [a, b, c, d2, e2, f])| {
                    let last = last_run_text(latest, entries_of(latest, &d.name), now);
                    [a, b, c, d2, e2, f, last]
                })
                .collect();
            out!(
                "{}",
                super::table(
                    r.output.wide(),
                    &["NAME", "WHEN", "TASK", "TARGETS", "MODE", "ENABLED", "LAST RUN"],
                    &rows
                )
            );
        }
        None => out!(
            "{}",
            super::table(
                r.output.wide(),
                &["NAME", "WHEN", "TASK", "TARGETS", "MODE", "ENABLED"],
                &rows
            )
        ),
    }
    Ok(EXIT_OK)
}

/// The next `n` fire times of a compiled schedule as RFC 3339 strings (cron only:
/// an interval fires relative to its last run, which Beat keeps).
pub(super) fn next_fire_times(
    s: &CompiledSchedule,
    now: chrono::DateTime<chrono::Utc>,
    n: usize,
) -> Vec<String> {
    match &s.trigger {
        Trigger::Cron(c) if s.enabled => match schedule::parse_timezone(&s.timezone) {
            Ok(tz) => c
                .next_fire_times(tz, now, n)
                .into_iter()
                .map(|t| t.to_rfc3339())
                .collect(),
            Err(_) => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn show(ui: &Ui, cli: &Cli, a: &ShowArgs) -> Result<u8, CommandError> {
    let ws = e::read_workspace(cli, &a.read.rev)?;
    let doc = ws
        .find(Kind::Schedule, &a.name)
        .map_err(|err| e::error(Some(ui), err))?;
    let compiled = ws.check(&[]).ok();
    let compiled_schedule = compiled
        .as_ref()
        .and_then(|c| c.state.schedules.get(&a.name));
    let now = super::now()?;
    let next = compiled_schedule
        .map(|s| next_fire_times(s, now, 5))
        .unwrap_or_default();
    if !a.read.output.is_table() {
        let value = json!({
            "file": doc.file,
            "line": doc.line,
            "manifest": doc.value,
            "entries": compiled_schedule.map(|s| &s.entries),
            "timezone": compiled_schedule.map(|s| &s.timezone),
            "nextFireTimes": next,
        });
        e::print_value(a.read.output, &value);
        return Ok(EXIT_OK);
    }
    e::print_header(ui, &doc);
    let spec = |k: &str| doc.value.pointer(&format!("/spec/{k}"));
    let row = |k: &str, v: String| outln!("  {k:<12} {v}");
    if let Some(d) = spec("description") {
        row("description", e::scalar_text(d));
    }
    row("when", when_text(&doc.value));
    row(
        "task",
        spec("task").map_or_else(|| "-".into(), e::scalar_text),
    );
    if let Some(args) = spec("args") {
        row("args", args.to_string());
    }
    if let Some(kwargs) = spec("kwargs") {
        row("kwargs", kwargs.to_string());
    }
    row("targets", targets_text(spec("targets")));
    let Some(cs) = compiled_schedule else {
        outln!(
            "  (the manifests do not validate, so targets are not resolved: run `celeroot validate --worktree`)"
        );
        return Ok(EXIT_OK);
    };
    row(
        "mode",
        match cs.mode {
            crate::manifest::Mode::Each => {
                "each (every matched host, through its host queue)".into()
            }
            crate::manifest::Mode::Any => {
                "any (one worker per role, through the role queue)".into()
            }
        },
    );
    row(
        "enabled",
        if cs.enabled {
            "yes".into()
        } else {
            "no".into()
        },
    );
    outln!("  resolved to {} queue(s):", cs.entries.len());
    let latest = latest_runs(cli, &ws);
    let now_s = crate::state::runs::epoch_secs(now);
    for en in &cs.entries {
        match &latest {
            Some(l) => outln!(
                "    {} {:<16} → {:<28} last run: {}",
                en.kind,
                en.name,
                en.queue,
                last_run_text(
                    l,
                    std::iter::once(crate::state::redbeat_entry_name(&a.name, en)),
                    now_s
                )
            ),
            None => outln!("    {} {:<16} → {}", en.kind, en.name, en.queue),
        }
    }
    match &cs.trigger {
        Trigger::Cron(_) if cs.enabled => {
            outln!("  next fire times ({}):", cs.timezone);
            for t in &next {
                outln!("    {t}");
            }
        }
        Trigger::Cron(_) => outln!("  next fire times: none (disabled)"),
        Trigger::Every(secs) => outln!(
            "  fires every {}, counted by Beat from its last run",
            schedule::format_duration(*secs)
        ),
    }
    Ok(EXIT_OK)
}
