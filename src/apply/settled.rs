//! The fast no-op: `celeroot reconcile` of the revision the live state has settled on.
//!
//! Owns the decision to skip compiling: when the settled record (written by the reconcile
//! that last left the live state equal to its desired state) names the target commit,
//! the same manifests path and this build of celeroot at the current generation, the
//! desired state is known to be the one whose digests the live state records. What is
//! left to do is the out-of-band edit check, which reads every managed key back with
//! native commands and compares digests: all equal, and the reconcile is a no-op (its
//! event is recorded); anything else, and the caller takes the full path, which heals.
//! Must not know: YAML, argument parsing, or output formats.

use std::time::Instant;

use super::{new_lease, Applied, ApplyError, Options, Outcome};
use crate::plan::Plan;
use crate::state::events::{Counts, Reconciled, What};
use crate::state::{self, Event, RedisUrl, Store};

/// What the fast no-op is asked about.
#[derive(Debug, Clone)]
pub struct Probe<'a> {
    /// The repository (`None`: the one around the working directory).
    pub repo: Option<&'a std::path::Path>,
    /// The revision as the user wrote it (`HEAD`).
    pub rev: &'a str,
    /// The manifests path in the repository.
    pub path: &'a str,
    pub redis: &'a RedisUrl,
    /// A deploy follows the reconcile: a revision that ships a release then needs the
    /// full path (the rollout reads the compiled hosts).
    pub deploying: bool,
}

/// A fast no-op's outcome, with the settled record it relied on.
#[derive(Debug, Clone)]
pub struct SettledNoop {
    pub outcome: Outcome,
    pub settled: state::Settled,
    /// The commit `rev` resolved to.
    pub commit: String,
}

/// Why the fast path was not taken (for the debug log; the full path runs instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotSettled {
    /// `--sweep`: it needs a SCAN of the prefix.
    Sweep,
    /// The repository, the revision or Redis could not be reached; the full path
    /// reports the error properly.
    Unreachable(String),
    /// No cluster owns the database yet.
    NoOwner,
    /// No current settled record, or one for another commit, path or build.
    Other,
    /// The revision ships a release and a deploy follows.
    Deploys,
    /// The lease is held by someone else.
    Locked,
    /// Some managed keys differ from their digests (edited out of band).
    Drift(usize),
    /// A reconcile ran during the check.
    Moved,
}

/// Tries the fast no-op (see the module comment). `Ok(Err(why))`: take the full path.
/// Reads nothing from git but the commit id, and writes to Redis only the no-op event
/// (none with `--dry-run`) under the lease.
///
/// # Errors
/// Redis errors after the lease was taken (the lease is released first).
pub fn settled_noop(
    probe: &Probe<'_>,
    opts: &Options,
) -> Result<Result<SettledNoop, NotSettled>, ApplyError> {
    let started = Instant::now();
    if opts.sweep {
        return Ok(Err(NotSettled::Sweep));
    }
    let unreachable = |e: &dyn std::fmt::Display| NotSettled::Unreachable(e.to_string());
    let commit = match crate::source::open_repo(probe.repo).and_then(|repo| {
        let c = crate::source::resolve_commit(&repo, probe.rev)?;
        Ok(c.id().to_string())
    }) {
        Ok(c) => c,
        Err(e) => return Ok(Err(unreachable(&e))),
    };
    let Ok(path) = crate::source::normalize_path(probe.path) else {
        return Ok(Err(NotSettled::Other));
    };
    let mut store = match Store::connect(probe.redis, "") {
        Ok(s) => s,
        Err(e) => return Ok(Err(unreachable(&e))),
    };
    let cluster = match store.database_owner() {
        Ok(Some(c)) => c,
        Ok(None) => return Ok(Err(NotSettled::NoOwner)),
        Err(e) => return Ok(Err(unreachable(&e))),
    };
    store.rebind(&cluster);
    let settled = match store.settled() {
        Ok(Some(s)) if s.revision == commit && s.path == path && s.build == state::build_id() => s,
        Ok(_) => return Ok(Err(NotSettled::Other)),
        Err(e) => return Ok(Err(unreachable(&e))),
    };
    if probe.deploying && !settled.release.is_empty() {
        return Ok(Err(NotSettled::Deploys));
    }
    let lease = new_lease(opts, &commit);
    if !opts.dry_run && store.acquire_lease(&lease).is_err() {
        // Waiting, refusing and recording the refusal are the full path's.
        return Ok(Err(NotSettled::Locked));
    }
    // Renewed from its own thread, as the full path's, for fleets whose check is long.
    let keeper = (!opts.dry_run)
        .then(|| state::LeaseKeeper::start(store.url().clone(), cluster.clone(), lease.id.clone()));
    let checked = store.check_digests().and_then(|check| {
        if !check.differing.is_empty() {
            return Ok(Err(NotSettled::Drift(check.differing.len())));
        }
        if !check.clean() || check.generations.0 != settled.generation {
            return Ok(Err(NotSettled::Moved));
        }
        if !opts.dry_run {
            let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let event = Event::now(
                &opts.actor,
                &commit,
                What::Reconciled {
                    how: Reconciled::Noop,
                    summary: Counts::default(),
                    writes: 0,
                    corrective_writes: 0,
                },
            )
            .rev(probe.rev)
            .took(took);
            store.record_event(&event)?;
        }
        Ok(Ok(check.checked))
    });
    drop(keeper);
    if !opts.dry_run {
        let _ = store.release_lease(&lease.id);
    }
    let checked = match checked? {
        Ok(n) => n,
        Err(why) => return Ok(Err(why)),
    };
    let outcome = Outcome {
        format_version: 1,
        result: if opts.dry_run {
            Applied::DryRun
        } else {
            Applied::Noop
        },
        cluster,
        revision: commit.clone(),
        previous_revision: Some(commit.clone()),
        plan: Plan::default(),
        writes: 0,
        corrective_writes: 0,
        kept: Vec::new(),
        generation: settled.generation,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        round_trips: store.round_trips(),
        incremental: false,
        settled: Some(checked),
        deploy: None,
    };
    Ok(Ok(SettledNoop {
        outcome,
        settled,
        commit,
    }))
}
