//! `celeroot backup` and `celeroot restore`: argument parsing, the archive file, and
//! printing. The archive and both directions are `state::backup`'s.

use std::path::PathBuf;

use clap::Args;

use super::{live, Cli, CommandError, ErrorKind, Ui, Untouched, EXIT_OK};
use crate::state::backup::{Archive, RestoreError};

/// Write a backup of a cluster's live state, history and events (taken at one generation).
///
/// Leases, heartbeats and beat instances are left out. Exit status: 0 written, 1 error.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write it (`-`: stdout). Default:
    /// `<cluster>-g<generation>-<UTC time>.celeroot-backup.json` in the current directory.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The cluster (default: the name in the manifests at HEAD).
    #[arg(long)]
    pub cluster: Option<String>,
}

/// Write a backup back into Redis, all at once, then check drift.
///
/// Refuses a backup of another cluster than --cluster (default: the manifests' at HEAD)
/// and one older than the live state, unless --force. Exit status: 0 restored and in
/// sync, 2 restored with drift against --rev, 1 error (nothing written).
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file (`celeroot backup`).
    pub file: PathBuf,
    /// The cluster it must be of (default: the name in the manifests at HEAD, else the
    /// backup's own).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Restore a backup of another cluster than --cluster, or one older than the live state.
    #[arg(long)]
    pub force: bool,
    /// The revision the drift check after the restore compares with.
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    /// How long to wait for the reconcile lease when a reconcile holds it (`0s`: refuse
    /// at once).
    #[arg(long, default_value = "0s", value_parser = super::watch::parse_wait, env = "CELEROOT_LOCK_TIMEOUT")]
    pub lock_timeout: std::time::Duration,
}

pub fn run_backup(ui: &Ui, cli: &Cli, a: &BackupArgs) -> Result<u8, CommandError> {
    let cluster = super::observe::cluster_name(ui, cli, &a.cluster)?;
    let mut store = live::connect(cli, &cluster)?;
    let archive = store.backup(env!("CARGO_PKG_VERSION"))?;
    let text = archive.to_json();
    let summary = format!(
        "Backed up cluster {cluster} at generation {}: {} keys, {} bytes",
        archive.generation,
        archive.keys.len(),
        text.len()
    );
    match a.out.as_deref() {
        Some(p) if p.as_os_str() == "-" => {
            outln!("{text}");
            errln!("{summary}.");
        }
        out => {
            let path = out.map_or_else(
                || PathBuf::from(archive.file_name(chrono::Utc::now())),
                PathBuf::from,
            );
            crate::source::write_private(&path, &text).map_err(|e| {
                CommandError::new(
                    ErrorKind::Failed,
                    format!("cannot write {}: {e}", path.display()),
                )
            })?;
            outln!("{summary} → {}.", path.display());
        }
    }
    Ok(EXIT_OK)
}

pub fn run_restore(ui: &Ui, cli: &Cli, a: &RestoreArgs) -> Result<u8, CommandError> {
    let file = a.file.display().to_string();
    let text = std::fs::read_to_string(&a.file).map_err(|e| {
        CommandError::usage(format!("cannot read {file}: {e}")).untouched(Untouched::Written)
    })?;
    let archive = Archive::parse(&text).map_err(|e| {
        CommandError::new(ErrorKind::Invalid, format!("{file}: {e}")).untouched(Untouched::Written)
    })?;
    // Which cluster the operator means: --cluster, else the manifests', else the backup's.
    let expected = match &a.cluster {
        Some(_) => Some(super::observe::cluster_name(ui, cli, &a.cluster)?),
        None => super::observe::cluster_name(ui, cli, &None).ok(),
    };
    if let Some(want) = expected.filter(|w| *w != archive.cluster) {
        if !a.force {
            return Err(CommandError::new(
                ErrorKind::Refused,
                format!(
                    "{file} is a backup of cluster {}, not of cluster {want}",
                    archive.cluster
                ),
            )
            .untouched(Untouched::Written)
            .hinted("restore it where that cluster lives, or pass --force to restore it anyway (it keeps its own cluster name)"));
        }
    }
    let mut store = live::connect(cli, &archive.cluster)?;
    let done = store
        .restore_archive(&archive, &crate::apply::actor(), a.force, a.lock_timeout)
        .map_err(|e| match e {
            RestoreError::State(s) => CommandError::from(s).untouched(Untouched::Written),
            e @ RestoreError::Older { .. } => CommandError::new(ErrorKind::Refused, e)
                .untouched(Untouched::Written)
                .hinted("take a new backup, or pass --force to go back to this one (the next reconcile re-applies git)"),
        })?;
    outln!(
        "Restored cluster {} from {file} (taken {} at generation {}): {} keys written, {} replaced; generation {} → {}.",
        archive.cluster,
        archive.taken_at,
        archive.generation,
        done.written,
        done.replaced,
        done.previous_generation,
        done.generation
    );
    // The drift check: the restored keys against their digests, the hosts, and what git
    // at --rev would change.
    match super::observe::drift_after(ui, cli, &a.rev) {
        Ok(code) => Ok(code),
        Err(e) => {
            errln!(
                "The drift check could not run ({}): run `celeroot drift` where the config repository is.",
                e.headline()
            );
            Ok(EXIT_OK)
        }
    }
}
