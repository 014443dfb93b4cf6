//! `celeroot env`: the environments of a repository (one directory per cluster under
//! `environments/`, docs/environments.md). Parsing and printing only: the copy is
//! `edit::clone_environment`'s.

use clap::{Args, Subcommand};

use super::edit::{error, finish, EditArgs};
use super::{Cli, CommandError, ErrorKind, Ui, EXIT_OK};
use crate::edit;

/// The environments of the repository: `environments/<name>/`, one cluster each.
#[derive(Debug, Args)]
pub struct EnvArgs {
    #[command(subcommand)]
    pub command: EnvCommand,
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// List the environments and the cluster each holds.
    #[command(alias = "ls")]
    List,
    /// Create environment NAME as a copy of another (its Cluster renamed to NAME).
    ///
    /// Example: `celeroot env create staging --clone production --commit`.
    Create(CreateArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The new environment's name (an RFC 1123 label; also its cluster's name).
    pub name: String,
    /// The environment to copy.
    #[arg(long, value_name = "ENV")]
    pub clone: String,
    #[command(flatten)]
    pub edit: EditArgs,
}

pub fn run(ui: &Ui, cli: &Cli, a: &EnvArgs) -> Result<u8, CommandError> {
    let root = edit::worktree_root(cli.repo.as_deref()).map_err(|e| error(None, e))?;
    match &a.command {
        EnvCommand::List => {
            let envs = edit::environments(&root).map_err(|e| {
                CommandError::new(
                    ErrorKind::Failed,
                    format!("cannot read {}/: {e}", edit::ENVIRONMENTS_DIR),
                )
            })?;
            if envs.is_empty() {
                outln!(
                    "No environments: {}/ has no directories (create one with `celeroot env create NAME --clone ENV`, or by hand).",
                    edit::ENVIRONMENTS_DIR
                );
                return Ok(EXIT_OK);
            }
            let rows: Vec<[String; 3]> = envs
                .iter()
                .map(|e| {
                    let dir = format!("{}/{e}", edit::ENVIRONMENTS_DIR);
                    let cluster = edit::Workspace::open(&root, &dir)
                        .ok()
                        .and_then(|ws| {
                            ws.docs()
                                .into_iter()
                                .find(|d| d.kind == crate::manifest::Kind::Cluster)
                                .map(|d| d.name)
                        })
                        .unwrap_or_else(|| "(no Cluster)".into());
                    [e.clone(), cluster, format!("{dir}/")]
                })
                .collect();
            out!(
                "{}",
                super::table(false, &["ENV", "CLUSTER", "MANIFESTS"], &rows)
            );
            Ok(EXIT_OK)
        }
        EnvCommand::Create(c) => {
            let (ws, changes) = edit::clone_environment(&root, &c.clone, &c.name)
                .map_err(|e| error(Some(ui), e))?;
            let summary = format!("env: create {} from {}", c.name, c.clone);
            let code = finish(ui, &ws, &changes, &c.edit, &summary)?;
            if !c.edit.dry_run {
                outln!(
                    "Environment {} created from {}: use it with `--env {}` (or CELEROOT_ENV={}), on a Redis database of its own.",
                    c.name,
                    c.clone,
                    c.name,
                    c.name
                );
            }
            Ok(code)
        }
    }
}
