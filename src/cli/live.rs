//! Shared plumbing for commands that talk to Redis: compile a revision first (so invalid
//! manifests never open a connection), then connect.

use super::{Cli, CliError, Ui};
use crate::apply::{self, Ancestry, Revision};
use crate::source::{self, Repository};
use crate::state::{RedisUrl, StateError, Store};

/// The Redis URL from `--redis` / `CELEROOT_REDIS_URL`.
pub(super) fn redis_url(cli: &Cli) -> Result<RedisUrl, CliError> {
    RedisUrl::parse(&cli.redis).map_err(CliError::new)
}

/// Compiles `rev` and gathers what reconcile records about it.
pub(super) fn revision(ui: &Ui, cli: &Cli, rev: &str) -> Result<(Repository, Revision), CliError> {
    let repo = source::open_repo(cli.repo.as_deref())?;
    let revision = apply::load_revision(&repo, rev, &cli.path).map_err(|e| ui.compile_error(e))?;
    ui.diagnostics(&revision.compiled.warnings);
    Ok((repo, revision))
}

/// Connects to the cluster's Redis.
pub(super) fn connect(cli: &Cli, cluster: &str) -> Result<Store, CliError> {
    let url = redis_url(cli)?;
    Store::connect(&url, cluster).map_err(state_error)
}

/// How `target` relates to an applied commit, according to `repo`.
pub(super) fn ancestry<'r>(repo: &'r Repository, target: &str) -> impl Fn(&str) -> Ancestry + 'r {
    let target = target.to_string();
    move |applied: &str| apply::ancestry(repo, &target, applied)
}

pub(super) fn state_error(e: StateError) -> CliError {
    let err = CliError::new(e.to_string());
    match e {
        StateError::Connect { .. } => err.hinted("check --redis / CELEROOT_REDIS_URL and that the server is running; nothing was written"),
        StateError::Locked(info) => err.hinted(format!(
            "wait for it to finish; if it is stale (its holder is gone), run `celeroot unlock {}`",
            info.id
        )),
        StateError::Conflict(_) => err.hinted("another writer changed the live state; run the command again to re-plan"),
        _ => err,
    }
}
