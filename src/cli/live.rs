//! Shared plumbing for commands that talk to Redis: compile a revision first (so invalid
//! manifests never open a connection), then connect.

use super::{Cli, CommandError, Ui};
use crate::apply::{self, Ancestry, Revision};
use crate::source::{self, Repository};
use crate::state::{RedisUrl, Store};

/// The Redis URL from `--redis` / `CELEROOT_REDIS_URL`.
pub(super) fn redis_url(cli: &Cli) -> Result<RedisUrl, CommandError> {
    RedisUrl::parse(&cli.redis).map_err(CommandError::usage)
}

/// Compiles `rev` and gathers what reconcile records about it.
pub(super) fn revision(
    ui: &Ui,
    cli: &Cli,
    rev: &str,
) -> Result<(Repository, Revision), CommandError> {
    let repo = source::open_repo(cli.repo.as_deref())?;
    let revision = apply::load_revision(&repo, rev, &cli.path).map_err(|e| ui.compile_error(e))?;
    ui.diagnostics(&revision.compiled.warnings);
    Ok((repo, revision))
}

/// Connects to the cluster's Redis.
pub(super) fn connect(cli: &Cli, cluster: &str) -> Result<Store, CommandError> {
    let url = redis_url(cli)?;
    Ok(Store::connect(&url, cluster)?)
}

/// How `target` relates to an applied commit, according to `repo`.
pub(super) fn ancestry<'r>(repo: &'r Repository, target: &str) -> impl Fn(&str) -> Ancestry + 'r {
    let target = target.to_string();
    move |applied: &str| apply::ancestry(repo, &target, applied)
}
