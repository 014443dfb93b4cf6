//! `celeroot config`: views of the whole configuration (`show`, `hosts`, `roles`,
//! `schedules`, `workers`), the cluster's settings (`init`, `set`, `unset`), and
//! `edit`, which opens `$EDITOR` on a copy and validates before saving.

use clap::{Args, Subcommand};
use serde_json::{json, Value as Json};

use super::edit::{self as e, EditArgs, ReadArgs};
use super::{Cli, CommandError, Ui, Untouched, EXIT_OK};
use crate::edit::{external, ops, Change, Workspace};
use crate::manifest::Kind;
use crate::Compiled;

/// The whole configuration: views, cluster settings, and editing in $EDITOR.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// The cluster's settings and object counts (-o json|yaml: every manifest).
    Show(ReadArgs),
    /// Every host with its effective address, SSH endpoint, roles and queues.
    Hosts(ReadArgs),
    /// Every role with its queue, worker settings and hosts.
    Roles(ReadArgs),
    /// Every schedule with its trigger, task, resolved queues and next fire time.
    Schedules(ReadArgs),
    /// The worker each host runs: queues, concurrency, recycling (as its agent reads it).
    Workers(ReadArgs),
    Init(InitArgs),
    Set(SetArgs),
    Unset(UnsetArgs),
    Edit(EditFileArgs),
}

/// Create the Cluster manifest (`<path>/cluster.yaml`) in a repository that has none.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The cluster's name (an RFC 1123 label, e.g. production).
    pub name: String,
    /// What this cluster is for.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// Default IANA time zone for schedules.
    #[arg(long, value_name = "TZ")]
    pub timezone: Option<String>,
    /// Set a label (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = crate::edit::ops::parse_label)]
    pub labels: Vec<(String, String)>,
    #[command(flatten)]
    pub edit: EditArgs,
}

/// Set a cluster setting: PATH is relative to the Cluster's spec (`timezone`,
/// `ssh.user`, `deployment.strategy.maxParallel`) or starts with `metadata.`
/// (`metadata.labels.env`); VALUE is read as YAML (`22`, `[a, b]`, `"quoted"`).
#[derive(Debug, Args)]
pub struct SetArgs {
    /// The setting, e.g. ssh.port.
    #[arg(value_name = "PATH")]
    pub setting: String,
    /// Its value, read as YAML.
    pub value: String,
    #[command(flatten)]
    pub edit: EditArgs,
}

/// Remove a cluster setting (its default applies again).
#[derive(Debug, Args)]
pub struct UnsetArgs {
    /// The setting, e.g. ssh.identityFile.
    #[arg(value_name = "PATH")]
    pub setting: String,
    #[command(flatten)]
    pub edit: EditArgs,
}

/// Edit a manifest in $VISUAL or $EDITOR (default vi) on a temporary copy; the whole
/// repository is validated with the edited copy before the file is replaced.
///
/// When the result is invalid, nothing is written: the errors are printed and the
/// edited copy is kept (its path is printed) so no work is lost.
#[derive(Debug, Args)]
pub struct EditFileArgs {
    /// What to edit: KIND/NAME (host/web01, role/webserver, schedule/db-backup,
    /// cluster) or a manifest file path. Default: the cluster.
    pub target: Option<String>,
    #[command(flatten)]
    pub edit: EditArgs,
}

pub fn run(ui: &Ui, cli: &Cli, a: &ConfigArgs) -> Result<u8, CommandError> {
    match &a.command {
        ConfigCommand::Show(r) => show(ui, cli, r),
        ConfigCommand::Hosts(r) => hosts(ui, cli, r),
        ConfigCommand::Roles(r) => roles(ui, cli, r),
        ConfigCommand::Schedules(r) => schedules(ui, cli, r),
        ConfigCommand::Workers(r) => workers(ui, cli, r),
        ConfigCommand::Init(i) => init(ui, cli, i),
        ConfigCommand::Set(s) => {
            let (path, value) =
                e::parse_set(&format!("{}={}", s.setting, s.value)).map_err(CommandError::usage)?;
            set(
                ui,
                cli,
                &path,
                value,
                &s.edit,
                &format!("config: set {}", s.setting),
            )
        }
        ConfigCommand::Unset(u) => {
            let (path, _) =
                e::parse_set(&format!("{}=null", u.setting)).map_err(CommandError::usage)?;
            set(
                ui,
                cli,
                &path,
                Json::Null,
                &u.edit,
                &format!("config: unset {}", u.setting),
            )
        }
        ConfigCommand::Edit(x) => edit(ui, cli, x),
    }
}

/// The whole repository, compiled; an invalid one is an error with diagnostics.
fn compiled(ui: &Ui, cli: &Cli, r: &ReadArgs) -> Result<(Workspace, Compiled), CommandError> {
    let ws = e::read_workspace(cli, &r.rev)?;
    let c = ws.check(&[]).map_err(|err| match err {
        crate::edit::EditError::Invalid(c) => ui.compile_error(*c),
        other => e::error(Some(ui), other),
    })?;
    Ok((ws, c))
}

fn show(ui: &Ui, cli: &Cli, r: &ReadArgs) -> Result<u8, CommandError> {
    let (ws, c) = compiled(ui, cli, r)?;
    let docs = ws.docs();
    if !r.output.is_table() {
        let mut sorted: Vec<_> = docs.iter().collect();
        sorted.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        e::print_documents(
            r.output,
            &sorted.iter().map(|d| &d.value).collect::<Vec<_>>(),
        );
        return Ok(EXIT_OK);
    }
    let s = &ui.stdout_style;
    let state = &c.state;
    let cluster = docs.iter().find(|d| d.kind == Kind::Cluster);
    outln!(
        "{} {}  ({})",
        s.paint(s.bold(), "Cluster"),
        state.cluster,
        cluster
            .map(|d| format!("{}:{}", d.file, d.line))
            .unwrap_or_default()
    );
    let spec = |k: &str| cluster.and_then(|d| d.value.pointer(&format!("/spec/{k}")));
    let row = |k: &str, v: String| outln!("  {k:<12} {v}");
    if let Some(d) = spec("description") {
        row("description", e::scalar_text(d));
    }
    row(
        "timezone",
        spec("timezone").map_or_else(|| "UTC (default)".into(), e::scalar_text),
    );
    row(
        "labels",
        super::hosts::labels_text(cluster.and_then(|d| d.value.pointer("/metadata/labels"))),
    );
    row("ssh", spec("ssh").map_or_else(|| "defaults".into(), flat));
    row(
        "deployment",
        spec("deployment").map_or_else(|| "defaults".into(), flat),
    );
    row(
        "rollout",
        format!(
            "maxParallel {}, canary {}, failureBudget {}; ships {}",
            state.deploy.max_parallel,
            state.deploy.canary,
            state.deploy.failure_budget,
            state.deploy.paths.join(", ")
        ),
    );
    row(
        "objects",
        format!(
            "{} role(s), {} host(s), {} schedule(s) in {} file(s) under {}",
            state.roles.len(),
            state.hosts.len(),
            state.schedules.len(),
            ws.files.len(),
            if ws.dir.is_empty() { "." } else { &ws.dir }
        ),
    );
    Ok(EXIT_OK)
}

/// A JSON value on one line, YAML-flow style (`{user: celeroot, port: 22}`).
fn flat(v: &Json) -> String {
    match v {
        Json::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{k}: {}", flat(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Json::Array(a) => format!("[{}]", a.iter().map(flat).collect::<Vec<_>>().join(", ")),
        other => e::scalar_text(other),
    }
}

fn hosts(ui: &Ui, cli: &Cli, r: &ReadArgs) -> Result<u8, CommandError> {
    let (_, c) = compiled(ui, cli, r)?;
    if !r.output.is_table() {
        e::print_keyed(r.output, "hosts", &json!(c.state.hosts));
        return Ok(EXIT_OK);
    }
    let rows: Vec<[String; 4]> = c
        .state
        .hosts
        .iter()
        .map(|(n, h)| {
            [
                n.clone(),
                format!("{}@{}:{}", h.ssh.user, h.address, h.ssh.port),
                h.roles.join(", "),
                h.queues.join(", "),
            ]
        })
        .collect();
    out!(
        "{}",
        super::table(r.output.wide(), &["HOST", "SSH", "ROLES", "QUEUES"], &rows)
    );
    Ok(EXIT_OK)
}

fn roles(ui: &Ui, cli: &Cli, r: &ReadArgs) -> Result<u8, CommandError> {
    let (_, c) = compiled(ui, cli, r)?;
    if !r.output.is_table() {
        e::print_keyed(r.output, "roles", &json!(c.state.roles));
        return Ok(EXIT_OK);
    }
    let opt = |v: Option<u32>| v.map_or_else(|| "-".into(), |n| n.to_string());
    let rows: Vec<[String; 5]> = c
        .state
        .roles
        .iter()
        .map(|(n, role)| {
            [
                n.clone(),
                role.queue.clone(),
                opt(role.concurrency),
                opt(role.max_tasks_per_child),
                e::list_or_dash(&role.hosts),
            ]
        })
        .collect();
    out!(
        "{}",
        super::table(
            r.output.wide(),
            &[
                "ROLE",
                "QUEUE",
                "CONCURRENCY",
                "MAX-TASKS-PER-CHILD",
                "HOSTS"
            ],
            &rows
        )
    );
    Ok(EXIT_OK)
}

fn schedules(ui: &Ui, cli: &Cli, r: &ReadArgs) -> Result<u8, CommandError> {
    let (_, c) = compiled(ui, cli, r)?;
    let now = super::now()?;
    let entries: Vec<(String, Json)> = c
        .state
        .schedules
        .iter()
        .map(|(n, s)| {
            let when = match &s.trigger {
                crate::desired::Trigger::Cron(ct) => format!("cron \"{}\"", ct.expression()),
                crate::desired::Trigger::Every(secs) => {
                    format!("every {}", crate::desired::schedule::format_duration(*secs))
                }
            };
            let next = super::schedules::next_fire_times(s, now, 1);
            (
                n.clone(),
                json!({
                    "when": when,
                    "timezone": s.timezone,
                    "task": s.task,
                    "mode": s.mode,
                    "enabled": s.enabled,
                    "queues": s.entries.iter().map(|en| en.queue.clone()).collect::<Vec<_>>(),
                    "nextFireTime": next.first(),
                }),
            )
        })
        .collect();
    if !r.output.is_table() {
        let map: serde_json::Map<String, Json> = entries.into_iter().collect();
        e::print_keyed(r.output, "schedules", &Json::Object(map));
        return Ok(EXIT_OK);
    }
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|(n, v)| {
            [
                n.clone(),
                e::scalar_text(&v["when"]),
                e::scalar_text(&v["task"]),
                e::scalar_text(&v["mode"]),
                e::list_or_dash(&e::strings(v.get("queues"))),
                if v["enabled"] == json!(false) {
                    "disabled".into()
                } else {
                    v.get("nextFireTime")
                        .and_then(Json::as_str)
                        .map_or_else(|| "after each interval".into(), str::to_string)
                },
            ]
        })
        .collect();
    out!(
        "{}",
        super::table(
            r.output.wide(),
            &["SCHEDULE", "WHEN", "TASK", "MODE", "QUEUES", "NEXT"],
            &rows
        )
    );
    Ok(EXIT_OK)
}

fn workers(ui: &Ui, cli: &Cli, r: &ReadArgs) -> Result<u8, CommandError> {
    let (_, c) = compiled(ui, cli, r)?;
    let workers: serde_json::Map<String, Json> = c
        .state
        .hosts
        .keys()
        .filter_map(|h| {
            let f = crate::state::worker_fields(&c.state, h, &None)?;
            let parse = |k: &str| -> Json {
                let v = f.get(k).cloned().unwrap_or_default();
                serde_json::from_str(&v).unwrap_or(if v.is_empty() {
                    Json::Null
                } else {
                    Json::String(v)
                })
            };
            Some((
                h.clone(),
                json!({
                    "queues": parse("queues"),
                    "concurrency": parse("concurrency"),
                    "maxTasksPerChild": parse("max_tasks_per_child"),
                }),
            ))
        })
        .collect();
    if !r.output.is_table() {
        e::print_keyed(r.output, "workers", &Json::Object(workers));
        return Ok(EXIT_OK);
    }
    let rows: Vec<[String; 4]> = workers
        .iter()
        .map(|(h, w)| {
            [
                h.clone(),
                e::list_or_dash(&e::strings(w.get("queues"))),
                match &w["concurrency"] {
                    Json::Null => "CPU count".into(),
                    v => e::scalar_text(v),
                },
                match &w["maxTasksPerChild"] {
                    Json::Null => "-".into(),
                    v => e::scalar_text(v),
                },
            ]
        })
        .collect();
    out!(
        "{}",
        super::table(
            r.output.wide(),
            &["HOST", "QUEUES", "CONCURRENCY", "MAX-TASKS-PER-CHILD"],
            &rows
        )
    );
    Ok(EXIT_OK)
}

fn init(ui: &Ui, cli: &Cli, a: &InitArgs) -> Result<u8, CommandError> {
    let root =
        crate::edit::worktree_root(cli.repo.as_deref()).map_err(|err| e::error(None, err))?;
    // A fresh repository has no manifests directory yet.
    let ws = Workspace::open_or_empty(&root, &cli.path).map_err(|err| e::error(Some(ui), err))?;
    let fields = ops::ClusterFields {
        description: a.description.clone(),
        timezone: a.timezone.clone(),
        labels: a.labels.clone(),
    };
    let change = ops::init_cluster(&ws, &a.name, &fields).map_err(|err| e::error(Some(ui), err))?;
    e::finish(
        ui,
        &ws,
        &[change],
        &a.edit,
        &format!("config: init cluster {}", a.name),
    )
}

fn set(
    ui: &Ui,
    cli: &Cli,
    path: &[String],
    value: Json,
    args: &EditArgs,
    summary: &str,
) -> Result<u8, CommandError> {
    let ws = e::workspace(cli)?;
    let change = ops::set_cluster(&ws, path, value).map_err(|err| e::error(Some(ui), err))?;
    e::finish(ui, &ws, &[change], args, summary)
}

fn edit(ui: &Ui, cli: &Cli, a: &EditFileArgs) -> Result<u8, CommandError> {
    let ws = e::workspace(cli)?;
    let file = ops::file_of(&ws, a.target.as_deref()).map_err(|err| e::error(None, err))?;
    let before = ws.files.get(&file).cloned().unwrap_or_default();
    let copy = external::TempCopy::new(&file, &before)?;
    if let Err(err) = copy.edit_with(&external::editor()) {
        let no_editor = matches!(err, crate::edit::EditError::NoEditor { .. });
        let kept = copy.keep();
        let err = CommandError::from(err)
            .untouched(Untouched::Written)
            .hinted(format!("your copy: {}", kept.display()));
        return Err(if no_editor {
            err.hinted("set $EDITOR")
        } else {
            err
        });
    }
    let after = copy.read()?;
    if after == before {
        outln!("nothing to change: {file} was not edited");
        return Ok(EXIT_OK);
    }
    let change = Change {
        path: file.clone(),
        before: Some(before),
        after: Some(after),
    };
    match e::finish(ui, &ws, &[change], &a.edit, &format!("config: edit {file}")) {
        Ok(code) => Ok(code),
        Err(mut err) => {
            let kept = copy.keep();
            err.hints.push(format!(
                "your edited copy is kept in {}; fix it and copy it over {file}, or run `celeroot config edit` again",
                kept.display()
            ));
            Err(err)
        }
    }
}
