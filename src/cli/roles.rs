//! `celeroot roles`: list, show, add, update and remove roles in the manifests.

use clap::{Args, Subcommand};
use serde_json::{json, Value as Json};

use super::edit::{self as e, EditArgs, ReadArgs};
use super::hosts::{RmArgs, ShowArgs};
use super::{Cli, CommandError, Ui, EXIT_OK};
use crate::edit::ops::{self, RoleFields};
use crate::manifest::Kind;

/// Roles: kinds of Celery workers, one queue each.
#[derive(Debug, Args)]
pub struct RolesArgs {
    #[command(subcommand)]
    pub command: RolesCommand,
}

#[derive(Debug, Subcommand)]
pub enum RolesCommand {
    /// List the roles in the manifests (the work tree, or --rev).
    #[command(alias = "list")]
    Ls(ReadArgs),
    /// Show a role: its file, fields, hosts, and the schedules that target it.
    Show(ShowArgs),
    Add(AddArgs),
    Update(UpdateArgs),
    /// Remove a role. Refused while any host still has it or a schedule targets it.
    #[command(alias = "remove")]
    Rm(RmArgs),
}

/// Add a role: writes `<path>/roles/NAME.yaml`, after checking the whole repository with it.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The role's name (an RFC 1123 label).
    pub name: String,
    #[command(flatten)]
    pub fields: RoleOptions,
    /// A task name or module this role provides (repeatable).
    #[arg(long = "task", value_name = "TASK")]
    pub tasks: Vec<String>,
    #[command(flatten)]
    pub edit: EditArgs,
}

/// Options shared by `roles add` and `roles update`.
#[derive(Debug, Clone, Args)]
pub struct RoleOptions {
    /// What workers of this role do.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// The Celery queue (default: the role name).
    #[arg(long, value_name = "QUEUE")]
    pub queue: Option<String>,
    /// Worker processes per host.
    #[arg(long, value_name = "N")]
    pub concurrency: Option<u32>,
    /// Recycle a worker process after N tasks.
    #[arg(long, value_name = "N")]
    pub max_tasks_per_child: Option<u32>,
    /// Set any field under spec, read as YAML (`null` removes it). Repeatable.
    #[arg(long = "set", value_name = "PATH=VALUE", value_parser = ops::parse_set)]
    pub set: Vec<(Vec<String>, Json)>,
}

/// Change fields of a role in place, keeping the file's comments and layout.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The role.
    pub name: String,
    #[command(flatten)]
    pub fields: RoleOptions,
    /// Replace the role's tasks (repeat for several).
    #[arg(long = "task", value_name = "TASK")]
    pub tasks: Vec<String>,
    /// Add a task.
    #[arg(long = "add-task", value_name = "TASK")]
    pub add_tasks: Vec<String>,
    /// Remove a task.
    #[arg(long = "remove-task", value_name = "TASK")]
    pub remove_tasks: Vec<String>,
    #[command(flatten)]
    pub edit: EditArgs,
}

pub fn run(ui: &Ui, cli: &Cli, a: &RolesArgs) -> Result<u8, CommandError> {
    match &a.command {
        RolesCommand::Ls(r) => list(cli, r),
        RolesCommand::Show(s) => show(ui, cli, s),
        RolesCommand::Add(a) => {
            let ws = e::workspace(cli)?;
            let f = RoleFields {
                tasks: (!a.tasks.is_empty()).then(|| a.tasks.clone()),
                ..fields(&a.fields)
            };
            let change = ops::add_role(&ws, &a.name, &f).map_err(|err| e::error(Some(ui), err))?;
            e::finish(
                ui,
                &ws,
                &[change],
                &a.edit,
                &format!("roles: add {}", a.name),
            )
        }
        RolesCommand::Update(u) => {
            let ws = e::workspace(cli)?;
            let f = RoleFields {
                tasks: (!u.tasks.is_empty()).then(|| u.tasks.clone()),
                add_tasks: u.add_tasks.clone(),
                remove_tasks: u.remove_tasks.clone(),
                ..fields(&u.fields)
            };
            let change =
                ops::update_role(&ws, &u.name, &f).map_err(|err| e::error(Some(ui), err))?;
            e::finish(
                ui,
                &ws,
                &[change],
                &u.edit,
                &format!("roles: update {}", u.name),
            )
        }
        RolesCommand::Rm(r) => super::hosts::remove(ui, cli, Kind::Role, &r.name, &r.edit),
    }
}

fn fields(o: &RoleOptions) -> RoleFields {
    RoleFields {
        description: o.description.clone(),
        queue: o.queue.clone(),
        concurrency: o.concurrency,
        max_tasks_per_child: o.max_tasks_per_child,
        set: o.set.clone(),
        ..RoleFields::default()
    }
}

fn list(cli: &Cli, r: &ReadArgs) -> Result<u8, CommandError> {
    let ws = e::read_workspace(cli, &r.rev)?;
    let all = ws.docs();
    let mut docs: Vec<_> = all.iter().filter(|d| d.kind == Kind::Role).collect();
    if !r.output.is_table() {
        e::print_documents(r.output, &docs.iter().map(|d| &d.value).collect::<Vec<_>>());
        return Ok(EXIT_OK);
    }
    docs.sort_by(|a, b| a.name.cmp(&b.name));
    let rows: Vec<[String; 6]> = docs
        .iter()
        .map(|d| {
            let spec = |k: &str| d.value.pointer(&format!("/spec/{k}"));
            let hosts = ops::hosts_with_role(&all, &d.name);
            [
                d.name.clone(),
                spec("queue").map_or_else(|| d.name.clone(), e::scalar_text),
                spec("concurrency").map_or_else(|| "-".into(), e::scalar_text),
                hosts.len().to_string(),
                e::list_or_dash(&e::strings(spec("tasks"))),
                format!("{}:{}", d.file, d.line),
            ]
        })
        .collect();
    out!(
        "{}",
        super::table(
            r.output.wide(),
            &["NAME", "QUEUE", "CONCURRENCY", "HOSTS", "TASKS", "FILE"],
            &rows
        )
    );
    Ok(EXIT_OK)
}

fn show(ui: &Ui, cli: &Cli, a: &ShowArgs) -> Result<u8, CommandError> {
    let ws = e::read_workspace(cli, &a.read.rev)?;
    let all = ws.docs();
    let doc =
        crate::edit::find_doc(&all, Kind::Role, &a.name).map_err(|err| e::error(Some(ui), err))?;
    let hosts = ops::hosts_with_role(&all, &a.name);
    let schedules = ops::schedules_targeting(&all, Kind::Role, &a.name);
    let compiled = ws.check(&[]).ok();
    let role = compiled.as_ref().and_then(|c| c.state.roles.get(&a.name));
    if !a.read.output.is_table() {
        let value = json!({
            "file": doc.file,
            "line": doc.line,
            "manifest": doc.value,
            "effective": role,
            "hosts": hosts,
            "schedules": schedules,
        });
        e::print_value(a.read.output, &value);
        return Ok(EXIT_OK);
    }
    e::print_header(ui, &doc);
    let spec = |k: &str| doc.value.pointer(&format!("/spec/{k}"));
    let row = |k: &str, v: String| outln!("  {k:<20} {v}");
    if let Some(d) = spec("description") {
        row("description", e::scalar_text(d));
    }
    row(
        "queue",
        role.map_or_else(
            || spec("queue").map_or_else(|| a.name.clone(), e::scalar_text),
            |r| r.queue.clone(),
        ),
    );
    row(
        "concurrency",
        spec("concurrency").map_or_else(|| "Celery default (CPU count)".into(), e::scalar_text),
    );
    row(
        "max tasks per child",
        spec("maxTasksPerChild").map_or_else(|| "unlimited".into(), e::scalar_text),
    );
    row("tasks", e::list_or_dash(&e::strings(spec("tasks"))));
    row("hosts", e::list_or_dash(&hosts));
    row("targeted by", e::list_or_dash(&schedules));
    Ok(EXIT_OK)
}
