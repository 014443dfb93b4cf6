//! Apply: one reconcile, from a compiled revision to the live state in Redis.
//!
//! Owns the reconcile sequence: lease → observe (layout check) → rollback guard → plan
//! → mass-delete guard → one atomic apply script → record (applied revision, history,
//! event) → release. Classifies every write as intentional (a new revision) or corrective
//! (healing out-of-band drift).
//! Must not know: YAML, argument parsing, or output formats.

pub mod incremental;
pub mod settled;
mod steps;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde::Serialize;

use crate::manifest::{Kind, ObjectId};
use crate::plan::keys::KeyOp;
use crate::plan::{self, Plan};
use crate::state::{self, Image, KeyValue, Keys, LeaseInfo, Observed, Release, StateError, Store};
use crate::Compiled;
pub use incremental::{Baseline, Compiler};

/// The annotation that keeps an object in the live state when it disappears from git.
pub const PRUNE_ANNOTATION: &str = "celeroot.io/prune";

/// Options of one reconcile.
#[derive(Debug, Clone)]
pub struct Options {
    pub dry_run: bool,
    /// Remove objects that are no longer in git (default true).
    pub prune: bool,
    pub allow_mass_delete: bool,
    pub allow_rollback: bool,
    /// Also delete unknown keys under the cluster prefix (found with SCAN).
    pub sweep: bool,
    /// Who is reconciling (`user@host`), recorded in the lease, history and events.
    pub actor: String,
    /// The `watch` daemon's leader token: the apply is refused (fenced) unless this token
    /// still holds the leader lease. `None` for the CLI.
    pub leader: Option<String>,
    /// How long to wait for a lease held by someone else before refusing (zero: refuse
    /// at once). `celeroot reconcile --lock-timeout`.
    pub lock_wait: std::time::Duration,
    /// A fault to inject, for tests of the all-or-nothing guarantee (the CLI sets it from
    /// `CELEROOT_FAULT`; the library reads no environment for it).
    pub fault: Option<Fault>,
}

/// Faults a test can inject into a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fail after planning, just before the apply script: nothing is written.
    BeforeApply,
    /// Pause for [`PAUSE_IN_TRANSACTION`] inside a pipelined transaction, after its first
    /// request is queued and before `EXEC`, so that a test can kill either side or
    /// write a watched key there.
    PauseInTransaction,
}

/// How long [`Fault::PauseInTransaction`] pauses.
pub const PAUSE_IN_TRANSACTION: std::time::Duration = std::time::Duration::from_secs(3);

impl Fault {
    /// `before-apply` or `pause-in-transaction`, the spellings of `CELEROOT_FAULT`.
    pub fn parse(s: &str) -> Option<Fault> {
        match s {
            "before-apply" => Some(Fault::BeforeApply),
            "pause-in-transaction" => Some(Fault::PauseInTransaction),
            _ => None,
        }
    }
}

/// What is known about the target revision beyond its compiled state.
#[derive(Debug, Clone)]
pub struct Revision {
    pub compiled: Compiled,
    /// First line of the commit message.
    pub subject: String,
    pub release: Release,
    /// The manifests path it was read from (normalised), when it was read from a commit
    /// (`None`: a work tree). With the commit, it is what the settled record names.
    pub path: Option<String>,
}

/// How the target revision relates to the applied one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ancestry {
    /// Nothing applied yet, or the same commit.
    Same,
    /// The applied commit is an ancestor of the target.
    Forward,
    /// The target is not a descendant of the applied commit (a rollback or another branch).
    NotDescendant,
    /// The applied commit is not in this repository.
    Unknown,
}

/// Compiles `rev` of `repo` and gathers what reconcile records about it (commit subject,
/// release). Nothing is written anywhere.
///
/// # Errors
/// [`crate::CompileError`]: an unknown revision, unreadable files, invalid manifests.
pub fn load_revision(
    repo: &git2::Repository,
    rev: &str,
    path: &str,
) -> Result<Revision, crate::CompileError> {
    let snapshot = crate::source::read_git(repo, rev, path)?;
    let commit = snapshot.commit.clone().unwrap_or_default();
    let compiled = crate::compile_snapshot(snapshot)?;
    let subject = crate::source::commit_subject(repo, &commit)?;
    let release = crate::source::release_id(repo, &commit, &compiled.state.deploy.paths)?;
    Ok(Revision {
        compiled,
        subject,
        release,
        path: Some(crate::source::normalize_path(path)?),
    })
}

/// How `target` relates to the `applied` commit, according to `repo`.
pub fn ancestry(repo: &git2::Repository, target: &str, applied: &str) -> Ancestry {
    if applied == target {
        return Ancestry::Same;
    }
    match crate::source::is_descendant(repo, target, applied) {
        Some(true) => Ancestry::Forward,
        Some(false) => Ancestry::NotDescendant,
        None => Ancestry::Unknown,
    }
}

/// Why a reconcile stopped without writing.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("refusing to remove {removed} of {live} live {what} (more than half)")]
    MassDelete {
        removed: usize,
        live: usize,
        what: &'static str,
    },
    #[error("refusing to apply {target}: {reason} {applied}")]
    Rollback {
        target: String,
        applied: String,
        reason: &'static str,
    },
    #[error("injected fault ({0}): nothing was written")]
    Fault(String),
}

impl ApplyError {
    /// What kind of failure, for events and metrics.
    pub fn failure(&self) -> state::events::Failure {
        use state::events::Failure;
        match self {
            ApplyError::State(StateError::Locked(_)) => Failure::Locked,
            ApplyError::State(StateError::Conflict(_)) => Failure::Conflict,
            ApplyError::State(StateError::Fenced(_)) => Failure::Fenced,
            ApplyError::State(StateError::SharedDatabase { .. }) => Failure::Refused,
            ApplyError::State(_) | ApplyError::Fault(_) => Failure::Failed,
            ApplyError::MassDelete { .. } | ApplyError::Rollback { .. } => Failure::Refused,
        }
    }

    /// A short label for events and metrics.
    pub fn label(&self) -> &'static str {
        self.failure().as_str()
    }
}

/// What a reconcile did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Applied {
    /// Writes were applied.
    Applied,
    /// Nothing differed; only the event was written.
    Noop,
    /// `--dry-run`: nothing was written.
    DryRun,
}

/// The outcome of a reconcile, for rendering.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// Version of this JSON structure (docs/cli.md).
    pub format_version: u32,
    pub result: Applied,
    pub cluster: String,
    pub revision: String,
    pub previous_revision: Option<String>,
    pub plan: Plan,
    /// Key writes (Redis commands) in the apply script.
    pub writes: usize,
    /// Writes that heal keys edited or deleted out of band.
    pub corrective_writes: usize,
    /// Objects gone from git but kept (`--no-prune` or the prune annotation).
    pub kept: Vec<String>,
    pub generation: u64,
    pub duration_ms: u64,
    /// Redis round trips this reconcile made.
    pub round_trips: u64,
    /// Planned from the baseline the daemon kept (no managed key was read; see
    /// [`reconcile_from`]). Absent from JSON when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub incremental: bool,
    /// The fast no-op ([`settled::settled_noop`]): nothing was compiled, because the live
    /// state had settled on this very revision; this many managed keys were read back and
    /// matched their digests. Absent from JSON otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled: Option<usize>,
    /// The deploy that followed the transaction (`celeroot reconcile` without
    /// `--skip-deploy`, when the revision ships a release).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy: Option<crate::deploy::Report>,
}

/// The actor recorded in leases and events: `CELEROOT_ACTOR`, or `user@hostname`.
pub fn actor() -> String {
    if let Ok(a) = std::env::var("CELEROOT_ACTOR") {
        if !a.is_empty() {
            return a;
        }
    }
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = state::events::hostname();
    format!("{user}@{host}")
}

/// A fresh lease for `opts.actor` reconciling `revision`.
fn new_lease(opts: &Options, revision: &str) -> LeaseInfo {
    LeaseInfo {
        id: lease_id(),
        holder: opts.actor.clone(),
        revision: revision.to_string(),
        since: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        pid: std::process::id(),
        leader: opts.leader.clone(),
    }
}

fn lease_id() -> String {
    use sha2::{Digest, Sha256};
    let seed = format!(
        "{}-{}-{:?}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        std::thread::current().id()
    );
    format!("{:x}", Sha256::digest(seed.as_bytes()))[..16].to_string()
}

/// The keys a desired state will write, so observe reads them in the same round trip.
fn desired_keys(img: &Image) -> Vec<String> {
    img.keys().cloned().collect()
}

/// Objects removed from git that stay live, and the desired image with their keys kept.
fn keep_unpruned(
    keys: &Keys,
    desired: Image,
    live: &Image,
    removed: &[ObjectId],
    opts: &Options,
) -> (Image, Vec<ObjectId>) {
    let live_objects = state::live_objects(keys, live);
    let kept: Vec<ObjectId> = removed
        .iter()
        .filter(|id| {
            !opts.prune
                || live_objects.get(*id).is_some_and(|o| {
                    o.object.normalized.annotation(PRUNE_ANNOTATION).as_deref() == Some("disabled")
                })
        })
        .cloned()
        .collect();
    if kept.is_empty() {
        return (desired, kept);
    }
    // Role indexes each live host is in, computed once (not once per kept host).
    let role_prefix = format!("{}role:", keys.prefix());
    let mut memberships: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for (k, v) in live {
        if let (KeyValue::Set(members), true) =
            (v, k.starts_with(&role_prefix) && k.ends_with(":hosts"))
        {
            for m in members {
                memberships.entry(m.as_str()).or_default().push(k);
            }
        }
    }
    let mut img = desired;
    for id in &kept {
        if let (Some(KeyValue::Hash(live_objs)), Some(KeyValue::Hash(want))) =
            (live.get(&keys.objects()), img.get_mut(&keys.objects()))
        {
            if let Some(v) = live_objs.get(&id.to_string()) {
                want.insert(id.to_string(), v.clone());
            }
        }
        match id.kind {
            Kind::Host => {
                if let Some(v) = live.get(&keys.worker(&id.name)) {
                    img.insert(keys.worker(&id.name), v.clone());
                }
                if let Some(KeyValue::Set(hosts)) = img.get_mut(&keys.hosts()) {
                    hosts.insert(id.name.clone());
                }
                // Keep its membership in every role index it was in.
                for role_key in memberships.get(id.name.as_str()).into_iter().flatten() {
                    if let Some(KeyValue::Set(want)) = img.get_mut(*role_key) {
                        want.insert(id.name.clone());
                    }
                }
            }
            Kind::Role => {
                if let Some(v) = live.get(&keys.role_hosts(&id.name)) {
                    img.insert(keys.role_hosts(&id.name), v.clone());
                }
            }
            Kind::Schedule => {
                // A kept schedule keeps firing: its RedBeat entries and index membership stay.
                let entry_prefix = keys.redbeat_entry(&format!("{}.", id.name));
                for (k, v) in live.range(entry_prefix.clone()..) {
                    if !k.starts_with(&entry_prefix) {
                        break;
                    }
                    img.insert(k.clone(), v.clone());
                    if let Some(KeyValue::Members { members, .. }) =
                        img.get_mut(&keys.redbeat_schedule())
                    {
                        members.insert(k.clone());
                    } else {
                        img.insert(
                            keys.redbeat_schedule(),
                            KeyValue::Members {
                                members: BTreeSet::from([k.clone()]),
                                now: u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0),
                            },
                        );
                    }
                }
            }
            Kind::Cluster => {}
        }
    }
    (state::with_digests(keys, img), kept)
}

/// Writes that restore keys whose live value differs from what celeroot last wrote.
fn corrective(keys: &Keys, observed: &Observed, ops: &[KeyOp]) -> usize {
    let empty = BTreeMap::new();
    let digests = match observed.image.get(&keys.digests()) {
        Some(KeyValue::Hash(d)) => d,
        _ => &empty,
    };
    let drifted: BTreeSet<&String> = digests
        .iter()
        .filter(|(k, d)| !observed.image.get(*k).is_some_and(|v| v.digest_matches(d)))
        .map(|(k, _)| k)
        .chain(observed.foreign_types.keys())
        .collect();
    // Writes to drifted keys, and deletions of keys celeroot never wrote (--sweep).
    ops.iter()
        .filter(|op| {
            let key = op.key().to_string();
            drifted.contains(&key)
                || (matches!(op, KeyOp::Del { .. })
                    && !digests.contains_key(&key)
                    && !observed.image.contains_key(&key))
        })
        .count()
}

fn guard_mass_delete(
    plan: &Plan,
    live: usize,
    live_hosts: usize,
    kept: &[ObjectId],
    opts: &Options,
) -> Result<(), ApplyError> {
    if opts.allow_mass_delete {
        return Ok(());
    }
    let removed: Vec<&plan::Change> = plan
        .changes
        .iter()
        .filter(|c| c.action == plan::Action::Remove && !kept.contains(&c.id()))
        .collect();
    let removed_hosts = removed.iter().filter(|c| c.kind == Kind::Host).count();
    if live_hosts > 0 && removed_hosts * 2 > live_hosts {
        return Err(ApplyError::MassDelete {
            removed: removed_hosts,
            live: live_hosts,
            what: "hosts",
        });
    }
    if live > 0 && removed.len() * 2 > live {
        return Err(ApplyError::MassDelete {
            removed: removed.len(),
            live,
            what: "objects",
        });
    }
    Ok(())
}

/// Reconciles the live state with `rev`. `ancestry` tells how `rev` relates to a
/// given applied commit (the caller asks git).
///
/// # Guarantees
/// Either every write of the plan is applied in one atomic script, or none is. Invalid
/// manifests never reach this function (it takes a compiled revision).
///
/// # Errors
/// [`ApplyError`]: Redis errors, the lease held by someone else, a concurrent change of the
/// live state, the mass-delete and rollback guards.
pub fn reconcile(
    store: &mut Store,
    rev: &Revision,
    opts: &Options,
    ancestry: &dyn Fn(&str) -> Ancestry,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Outcome, ApplyError> {
    reconcile_from(store, rev, opts, ancestry, now, None).map(|(o, _)| o)
}

/// [`reconcile`], optionally from a [`Baseline`]: the desired state and key image of the
/// revision this process last applied, with the generation it left. When the live state
/// still records that revision and generation (one small script reads only the layout,
/// generation, applied revision and lease), the plan is made against the baseline
/// instead of observing every managed key, so the Redis work is a constant number of
/// round trips plus the writes of the change. Otherwise (another writer applied, the
/// layout changed, objects removed from git would be kept, `--sweep`) it observes
/// everything, exactly as [`reconcile`] does.
///
/// What the baseline path does not do: heal keys edited out of band since the last
/// full observe (a baseline trusts that the live keys are what it wrote; `celeroot
/// watch` heals drift on its resync timer with a full reconcile).
///
/// Returns the outcome and, after a successful write or no-op that left the live state
/// equal to the desired image, the baseline for the next call.
///
/// # Errors
/// As [`reconcile`].
pub fn reconcile_from(
    store: &mut Store,
    rev: &Revision,
    opts: &Options,
    ancestry: &dyn Fn(&str) -> Ancestry,
    now: chrono::DateTime<chrono::Utc>,
    baseline: Option<Baseline>,
) -> Result<(Outcome, Option<Baseline>), ApplyError> {
    reconcile_hooked(store, rev, opts, ancestry, now, baseline, &mut |_, _| {})
}

/// The rollout that follows an applied reconcile, for [`reconcile_and_deploy`].
pub struct Deploy<'a> {
    pub repo: &'a git2::Repository,
    pub ssh: &'a crate::deploy::SshOptions,
    /// Where the rollout's records go (the store's own Redis, on a second connection).
    pub redis: Option<&'a state::RedisUrl>,
    /// Called as each host finishes.
    pub progress: &'a dyn crate::deploy::Progress,
}

/// Why the rollout after an applied reconcile did not run or could not start. The live
/// state was applied either way.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("the reconcile lease was lost before the deploy")]
    LeaseLost,
    #[error("cannot stage release {release}: {source}")]
    Stage {
        release: String,
        #[source]
        source: crate::source::SourceError,
    },
}

/// What happened after the transaction: the rollout's problems, if any (its report is
/// in [`Outcome::deploy`]).
#[derive(Debug, Default)]
pub struct AfterTransaction {
    /// The rollout did not run or could not start.
    pub failed: Option<DeployError>,
    /// The rollout ran, but its records could not be written.
    pub unrecorded: Option<StateError>,
}

/// A reconcile, then, while the lease is still held, the rollout of the revision's
/// release to every host of the revision (hosts already running it are left alone).
/// `deploy: None` (or a dry run, or a revision that ships nothing) skips the rollout.
/// `celeroot reconcile` calls this; so can the daemon.
///
/// # Errors
/// As [`reconcile`]; a rollout that fails is in [`AfterTransaction`], not an error.
pub fn reconcile_and_deploy(
    store: &mut Store,
    rev: &Revision,
    opts: &Options,
    ancestry: &dyn Fn(&str) -> Ancestry,
    now: chrono::DateTime<chrono::Utc>,
    deploy: Option<Deploy<'_>>,
) -> Result<(Outcome, AfterTransaction), ApplyError> {
    reconcile_from_and_deploy(store, rev, opts, ancestry, now, None, deploy)
        .map(|(o, after, _)| (o, after))
}

/// [`reconcile_and_deploy`] from a baseline, as [`reconcile_from`]: the daemon's entry
/// point. Also returns the next baseline.
///
/// # Errors
/// As [`reconcile`].
pub fn reconcile_from_and_deploy(
    store: &mut Store,
    rev: &Revision,
    opts: &Options,
    ancestry: &dyn Fn(&str) -> Ancestry,
    now: chrono::DateTime<chrono::Utc>,
    baseline: Option<Baseline>,
    deploy: Option<Deploy<'_>>,
) -> Result<(Outcome, AfterTransaction, Option<Baseline>), ApplyError> {
    let mut deploy = deploy.filter(|_| !opts.dry_run);
    let mut shipped = None;
    let (mut outcome, next) =
        reconcile_hooked(store, rev, opts, ancestry, now, baseline, &mut |_, held| {
            let (Some(d), Some(release)) = (deploy.take(), rev.release.as_deref()) else {
                return;
            };
            if !held() {
                shipped = Some(Err(DeployError::LeaseLost));
                return;
            }
            shipped = Some(ship_release(rev, &d, release, &opts.actor));
        })?;
    let (report, after) = after_shipping(shipped);
    outcome.deploy = report;
    Ok((outcome, after, next))
}

/// Ships `release` of `rev` to every host of the revision (hosts already running it are
/// left alone) and records the results: the rollout after a reconcile, or on its own
/// (the daemon retrying a failed rollout of a revision that is live already).
///
/// # Errors
/// [`DeployError::Stage`] when the release cannot be staged locally.
pub fn ship_release(
    rev: &Revision,
    d: &Deploy<'_>,
    release: &str,
    actor: &str,
) -> Result<crate::deploy::Shipped, DeployError> {
    let hosts: Vec<String> = rev.compiled.state.hosts.keys().cloned().collect();
    let commit = rev.compiled.revision.commit.clone().unwrap_or_default();
    crate::deploy::ship(
        &crate::deploy::Ship {
            repo: d.repo,
            commit: &commit,
            release,
            state: &rev.compiled.state,
            hosts: &hosts,
            ssh: d.ssh,
            check: false,
            redis: d.redis,
            actor,
        },
        d.progress,
    )
    .map_err(|source| DeployError::Stage {
        release: release.to_string(),
        source,
    })
}

/// The report and the [`AfterTransaction`] of a rollout (`None`: none ran).
pub fn after_shipping(
    shipped: Option<Result<crate::deploy::Shipped, DeployError>>,
) -> (Option<crate::deploy::Report>, AfterTransaction) {
    let mut after = AfterTransaction::default();
    match shipped {
        None => (None, after),
        Some(Ok(s)) => {
            after.unrecorded = s.unrecorded;
            (Some(s.report), after)
        }
        Some(Err(e)) => {
            after.failed = Some(e);
            (None, after)
        }
    }
}

/// Takes the lease (waiting up to `opts.lock_wait` for another holder), recording a
/// refused attempt as an event.
fn acquire(
    store: &mut Store,
    lease: &LeaseInfo,
    rev: &Revision,
    opts: &Options,
    target: &str,
    started: Instant,
) -> Result<(), ApplyError> {
    let wait = opts.lock_wait.saturating_sub(started.elapsed());
    match store.acquire_lease_within(lease, wait) {
        Ok(()) => Ok(()),
        // Another cluster's database: write nothing at all, not even an event.
        Err(e @ StateError::SharedDatabase { .. }) => Err(e.into()),
        Err(e) => {
            // Record the refused attempt too: the stream is the audit log of every
            // attempt.
            let e = ApplyError::from(e);
            record_failure(store, opts, target, rev, started, &e);
            Err(e)
        }
    }
}

/// Records a failed or refused attempt in the event stream (best effort).
fn record_failure(
    store: &mut Store,
    opts: &Options,
    target: &str,
    rev: &Revision,
    started: Instant,
    e: &ApplyError,
) {
    let event = state::Event::now(
        &opts.actor,
        target,
        state::events::What::Failed {
            why: e.failure(),
            error: e.to_string(),
        },
    )
    .rev(&rev.compiled.revision.rev)
    .took(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    let _ = store.record_event(&event);
}

type AfterApplyHook<'a> = dyn FnMut(&Outcome, &dyn Fn() -> bool) + 'a;

fn reconcile_hooked(
    store: &mut Store,
    rev: &Revision,
    opts: &Options,
    ancestry: &dyn Fn(&str) -> Ancestry,
    now: chrono::DateTime<chrono::Utc>,
    baseline: Option<Baseline>,
    after: &mut AfterApplyHook<'_>,
) -> Result<(Outcome, Option<Baseline>), ApplyError> {
    let started = Instant::now();
    let round_trips_before = store.round_trips();
    let target = rev
        .compiled
        .revision
        .commit
        .clone()
        .unwrap_or_else(|| rev.compiled.revision.rev.clone());
    let lease = new_lease(opts, &target);
    if !opts.dry_run {
        acquire(store, &lease, rev, opts, &target, started)?;
    }
    // Renewed from its own thread until released, so a crashed holder's lease expires
    // within LEASE_TTL.
    let keeper = (!opts.dry_run).then(|| {
        state::LeaseKeeper::start(
            store.url().clone(),
            store.cluster().to_string(),
            lease.id.clone(),
        )
    });
    let mut result = reconcile_locked(
        store, rev, opts, ancestry, now, &lease, &target, started, baseline,
    );
    if let Ok((o, _)) = &result {
        let held = || keeper.as_ref().is_none_or(|k| !k.lost());
        after(o, &held);
    }
    drop(keeper);
    if !opts.dry_run {
        if let Err(e) = &result {
            record_failure(store, opts, &target, rev, started, e);
        }
        let _ = store.release_lease(&lease.id);
    }
    if let Ok((o, _)) = &mut result {
        o.round_trips = store.round_trips() - round_trips_before;
    }
    result
}

/// One reconcile under the lease, in named steps ([`steps`]).
#[allow(clippy::too_many_arguments)]
fn reconcile_locked(
    store: &mut Store,
    rev: &Revision,
    opts: &Options,
    ancestry: &dyn Fn(&str) -> Ancestry,
    now: chrono::DateTime<chrono::Utc>,
    lease: &LeaseInfo,
    target: &str,
    started: Instant,
    baseline: Option<Baseline>,
) -> Result<(Outcome, Option<Baseline>), ApplyError> {
    let keys = store.keys().clone();
    let observation = steps::observe(store, rev, opts, target, baseline)?;
    let previous = steps::guard_rollback(&observation.observed, rev, opts, ancestry)?;
    let (writes, observed) = steps::plan_writes(&keys, rev, opts, observation, now)?;
    steps::commit(
        store, rev, opts, lease, target, started, previous, &observed, writes,
    )
}
