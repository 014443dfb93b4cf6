//! One reconcile under the lease, in named steps:
//! [`observe`] (every Redis read) → [`guard_rollback`] → [`plan_writes`] (pure: the plan
//! and the key writes, unit-tested without Redis) → [`commit`] (the one transaction, or
//! the no-op event) → the outcome and the next baseline.
//!
//! Must not know: leases (the caller holds one), YAML, output formats.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use super::incremental::{self, Baseline, Patched};
use super::{
    corrective, desired_keys, guard_mass_delete, keep_unpruned, Ancestry, Applied, ApplyError,
    Fault, Options, Outcome, Revision,
};
use crate::desired::DesiredState;
use crate::manifest::{Kind, ObjectId};
use crate::plan::keys::{plan_keys, KeyOp};
use crate::plan::{self, Plan};
use crate::state::events::{Counts, Reconciled, What};
use crate::state::{self, Event, Image, Keys, LeaseInfo, Observed, Store};

/// Where the "before" side comes from.
pub(super) enum Base {
    /// No trusted baseline: the observed image is the live side.
    Live,
    /// The baseline's own revision again: nothing to plan.
    Same {
        state: Arc<DesiredState>,
        image: Image,
    },
    /// A local change from the baseline: only `ids` can differ.
    Patched {
        state: Arc<DesiredState>,
        patch: Patched,
        ids: Vec<ObjectId>,
    },
    /// A trusted baseline, but not a local change: the whole image against its image.
    Whole {
        state: Arc<DesiredState>,
        image: Image,
    },
}

/// Step 1, every read: the live state (all managed keys, or from a trusted baseline only
/// its head), the desired image to compare with it, and for `--sweep` the keys under the
/// prefix.
pub(super) struct Observation {
    pub observed: Observed,
    pub desired: Image,
    pub base: Base,
    /// Keys under the cluster prefix (SCAN), with `--sweep` only.
    pub scanned: Option<BTreeSet<String>>,
}

/// Step 1: reads what the plan needs.
///
/// # Errors
/// Redis errors.
pub(super) fn observe(
    store: &mut Store,
    rev: &Revision,
    opts: &Options,
    target: &str,
    baseline: Option<Baseline>,
) -> Result<Observation, ApplyError> {
    let keys = store.keys().clone();
    // The baseline is trusted when the live state still records its revision and
    // generation, and nothing removed from git would be kept.
    let mut trusted = None;
    if let (Some(b), false) = (baseline, opts.sweep) {
        let head = store.observe_head()?;
        let same = b.revision == target && b.release == rev.release;
        if b.matches(&head) && (same || b.prunes_all(&rev.compiled.state, opts)) {
            trusted = Some((b, head, same));
        }
    }
    let (observed, desired, base) = match trusted {
        Some((b, head, true)) => (
            head,
            Image::new(),
            Base::Same {
                state: b.state,
                image: b.image,
            },
        ),
        Some((b, head, false)) => {
            let ids = incremental::candidates(&b.state, &rev.compiled.state);
            match incremental::patch_image(
                &keys,
                &b.state,
                b.image,
                &b.release,
                &rev.compiled.state,
                &rev.release,
                &ids,
            ) {
                Ok(patch) => (
                    head,
                    Image::new(),
                    Base::Patched {
                        state: b.state,
                        patch,
                        ids,
                    },
                ),
                Err(image) => {
                    let img =
                        state::desired_image_undigested(&keys, &rev.compiled.state, &rev.release);
                    let desired = state::with_digests_reusing(&keys, img, &image);
                    (
                        head,
                        desired,
                        Base::Whole {
                            state: b.state,
                            image,
                        },
                    )
                }
            }
        }
        None => {
            let desired = state::desired_image(&keys, &rev.compiled.state, &rev.release);
            let observed = store.observe(&desired_keys(&desired))?;
            (observed, desired, Base::Live)
        }
    };
    let scanned = if opts.sweep {
        Some(store.scan_prefix()?)
    } else {
        None
    };
    Ok(Observation {
        observed,
        desired,
        base,
        scanned,
    })
}

/// Step 2: refuses a revision that does not descend from the applied one, unless allowed.
/// Returns the applied revision.
///
/// # Errors
/// [`ApplyError::Rollback`].
pub(super) fn guard_rollback(
    observed: &Observed,
    rev: &Revision,
    opts: &Options,
    ancestry: &dyn Fn(&str) -> Ancestry,
) -> Result<Option<String>, ApplyError> {
    let previous = observed
        .applied
        .get("revision")
        .cloned()
        .filter(|s| !s.is_empty());
    if let Some(applied) = &previous {
        let reason = match ancestry(applied) {
            Ancestry::Same | Ancestry::Forward => None,
            Ancestry::NotDescendant => Some("it is not a descendant of the applied revision"),
            Ancestry::Unknown => Some("this repository does not contain the applied revision"),
        };
        if let (Some(reason), false) = (reason, opts.allow_rollback) {
            return Err(ApplyError::Rollback {
                target: rev.compiled.revision.describe(),
                applied: applied.clone(),
                reason,
            });
        }
    }
    Ok(previous)
}

/// Step 3's result: what to write and why.
pub(super) struct Writes {
    pub plan: Plan,
    /// Objects gone from git that stay live.
    pub kept: Vec<ObjectId>,
    pub ops: Vec<KeyOp>,
    /// The managed keys as they will be after the writes.
    pub desired: Image,
    /// Writes that heal keys edited out of band (0 from a baseline: nothing was read).
    pub corrective_writes: usize,
    pub incremental: bool,
    /// The baseline's state, when this is its own revision again (kept for the next
    /// baseline: cloning a large fleet's state costs more than the rest of a no-op).
    pub same_state: Option<Arc<DesiredState>>,
}

/// Step 3, pure: the plan against what was observed, the pruning and mass-delete
/// decisions, and the key writes. Reads nothing.
///
/// # Errors
/// [`ApplyError::MassDelete`].
pub(super) fn plan_writes(
    keys: &Keys,
    rev: &Revision,
    opts: &Options,
    obs: Observation,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(Writes, Observed), ApplyError> {
    let Observation {
        observed,
        desired,
        base,
        scanned,
    } = obs;
    let incremental = !matches!(base, Base::Live);
    let after = &rev.compiled.state;
    let mut ops: Vec<KeyOp> = Vec::new();
    let (plan, kept, desired, same_state) = match base {
        Base::Same { state, image } => (Plan::default(), Vec::new(), image, Some(state)),
        Base::Patched { state, patch, ids } => {
            let before_side = plan::Side::of_some(&state, &ids);
            let after_side = plan::Side::of_some(after, &ids);
            let plan = plan::diff_among(&before_side, &after_side, after, &ids, now);
            guard_mass_delete(&plan, state.objects.len(), state.hosts.len(), &[], opts)?;
            ops.extend(plan_keys(&patch.after, &patch.before));
            incremental::drop_later(state);
            (plan, Vec::new(), patch.image, None)
        }
        base @ (Base::Live | Base::Whole { .. }) => {
            let (live_side, base_image, base_state) = match base {
                Base::Whole { state, image } => (plan::Side::of(&state), Some(image), Some(state)),
                _ => (plan::live_side(keys, &observed.image), None, None),
            };
            let plan = plan::diff_sides(&live_side, after, now);
            let removed: Vec<ObjectId> = plan
                .changes
                .iter()
                .filter(|c| c.action == plan::Action::Remove)
                .map(plan::Change::id)
                .collect();
            let (desired, kept) = keep_unpruned(keys, desired, &observed.image, &removed, opts);
            let plan = Plan {
                changes: plan
                    .changes
                    .into_iter()
                    .filter(|c| !kept.contains(&c.id()))
                    .collect(),
            };
            let live_hosts = live_side
                .objects
                .keys()
                .filter(|id| id.kind == Kind::Host)
                .count();
            guard_mass_delete(&plan, live_side.objects.len(), live_hosts, &kept, opts)?;
            let live_managed: Image = match base_image {
                Some(img) => img,
                None => observed
                    .image
                    .iter()
                    .filter(|(k, _)| !keys.is_runtime(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            };
            // Keys celeroot manages whose type was changed out of band (a list where a
            // hash belongs): delete them first, then write them afresh.
            ops.extend(
                observed
                    .foreign_types
                    .keys()
                    .map(|key| KeyOp::Del { key: key.clone() }),
            );
            ops.extend(plan_keys(&desired, &live_managed));
            if let Some(scanned) = scanned {
                let known: BTreeSet<String> = desired.keys().cloned().chain(keys.fixed()).collect();
                for key in scanned {
                    if !known.contains(&key)
                        && !keys.is_runtime(&key)
                        && !live_managed.contains_key(&key)
                    {
                        ops.push(KeyOp::Del { key });
                    }
                }
            }
            if let Some(s) = base_state {
                incremental::drop_later(s);
            }
            (plan, kept, desired, None)
        }
    };
    let corrective_writes = if incremental {
        0
    } else {
        corrective(keys, &observed, &ops)
    };
    Ok((
        Writes {
            plan,
            kept,
            ops,
            desired,
            corrective_writes,
            incremental,
            same_state,
        },
        observed,
    ))
}

/// Step 4: the transaction (or, with nothing to write, the no-op event), then the agent
/// users of pruned hosts. Returns the outcome and the next baseline.
///
/// # Errors
/// Redis errors, a conflict, a lost lease or leadership, an injected fault.
#[allow(clippy::too_many_arguments)]
pub(super) fn commit(
    store: &mut Store,
    rev: &Revision,
    opts: &Options,
    lease: &LeaseInfo,
    target: &str,
    started: Instant,
    previous: Option<String>,
    observed: &Observed,
    w: Writes,
) -> Result<(Outcome, Option<Baseline>), ApplyError> {
    let summary = w.plan.summary();
    let counts = Counts {
        add: summary.add,
        change: summary.change,
        remove: summary.remove,
    };
    let elapsed = || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut outcome = Outcome {
        format_version: 1,
        result: Applied::DryRun,
        cluster: rev.compiled.state.cluster.clone(),
        revision: target.to_string(),
        previous_revision: previous.clone(),
        plan: w.plan,
        writes: w.ops.len(),
        corrective_writes: w.corrective_writes,
        kept: w.kept.iter().map(ToString::to_string).collect(),
        generation: observed.generation,
        duration_ms: 0,
        round_trips: 0,
        incremental: w.incremental,
        settled: None,
        deploy: None,
    };
    if opts.dry_run {
        outcome.duration_ms = elapsed();
        return Ok((outcome, None));
    }
    // After this reconcile the live managed keys equal `desired` (unless objects were
    // kept): the baseline for the next one.
    let kept_nothing = w.kept.is_empty();
    let same_state = w.same_state;
    // A baseline's own revision again read nothing: its settled record stands.
    let reread = same_state.is_none();
    let next_baseline = |generation: u64, desired: Image| {
        kept_nothing.then(|| Baseline {
            revision: target.to_string(),
            generation,
            state: same_state.unwrap_or_else(|| rev.compiled.state.clone()),
            image: desired,
            release: rev.release.clone(),
        })
    };
    let same_revision = previous.as_deref() == Some(target);
    let event = |how: Reconciled| {
        Event::now(
            &opts.actor,
            target,
            What::Reconciled {
                how,
                summary: counts,
                writes: w.ops.len(),
                corrective_writes: w.corrective_writes,
            },
        )
        .rev(&rev.compiled.revision.rev)
        .took(elapsed())
    };
    if w.ops.is_empty()
        && same_revision
        && observed.layout.as_deref() == Some(state::LAYOUT_VERSION)
    {
        store.record_event(&event(Reconciled::Noop))?;
        outcome.result = Applied::Noop;
        if kept_nothing && reread {
            record_settled(store, rev, target, outcome.generation);
        }
        outcome.duration_ms = elapsed();
        let next = next_baseline(outcome.generation, w.desired);
        return Ok((outcome, next));
    }
    if opts.fault == Some(Fault::BeforeApply) {
        return Err(ApplyError::Fault("before-apply".into()));
    }
    let how = if !same_revision || w.corrective_writes < w.ops.len() {
        Reconciled::Intentional
    } else {
        Reconciled::Corrective
    };
    let applied_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let applied = BTreeMap::from([
        ("revision".to_string(), target.to_string()),
        ("rev".to_string(), rev.compiled.revision.rev.clone()),
        ("subject".to_string(), rev.subject.clone()),
        ("applied_at".to_string(), applied_at.clone()),
        ("actor".to_string(), opts.actor.clone()),
        (
            "release".to_string(),
            rev.release.clone().unwrap_or_default(),
        ),
        ("summary".to_string(), counts.json()),
    ]);
    let mut applied = applied;
    let keep = rev.compiled.state.events_keep;
    if let Some(keep) = keep {
        // Writers that do not compile the Cluster (deploys, restores) read the
        // retention from here.
        applied.insert("events_keep".to_string(), keep.to_string());
    }
    store.set_events_keep(keep.map_or(crate::state::EVENTS_MAX, |k| k as usize));
    let history = serde_json::json!({
        "revision": target,
        "rev": rev.compiled.revision.rev,
        "subject": rev.subject,
        "applied_at": applied_at,
        "actor": opts.actor,
        "summary": {"add": counts.add, "change": counts.change, "remove": counts.remove},
    });
    if opts.fault == Some(Fault::PauseInTransaction) {
        store.pause_in_transaction(super::PAUSE_IN_TRANSACTION);
    }
    outcome.generation = store.apply(
        observed.generation,
        &lease.id,
        &w.ops,
        &applied,
        &history,
        &event(how),
        opts.leader.as_deref(),
    )?;
    outcome.result = Applied::Applied;
    // A host whose queues changed gets its worker's ACL user brought up to date (its
    // worker is restarted on the new queues by its agent). Best effort, like the prune
    // below: the reconciling user may lack ACL rights.
    let keys = store.keys().clone();
    let written: BTreeSet<&str> = w
        .ops
        .iter()
        .filter(|op| !matches!(op, KeyOp::Del { .. }))
        .map(KeyOp::key)
        .collect();
    let hosts = &rev.compiled.state.hosts;
    let changed: Vec<(&str, &[String])> = written
        .iter()
        .filter_map(|k| keys.worker_host(k))
        .filter_map(|name| Some((name, hosts.get(name)?.queues.as_slice())))
        .collect();
    if let Err(e) = store.refresh_worker_users(&changed) {
        tracing::warn!(hosts = changed.len(), error = %e, "cannot update the workers' ACL users to their new queues");
    }
    // A pruned host's agent loses its Redis user (best effort: the reconciling user may
    // lack ACL rights; the user could then still read only its own, now deleted, keys).
    for c in outcome
        .plan
        .changes
        .iter()
        .filter(|c| c.kind == Kind::Host && c.action == plan::Action::Remove)
    {
        if let Err(e) = store.delete_host_users(&c.name) {
            tracing::warn!(host = %c.name, error = %e, "cannot delete the ACL users of a pruned host");
        }
    }
    if kept_nothing {
        record_settled(store, rev, target, outcome.generation);
    }
    outcome.duration_ms = elapsed();
    let next = next_baseline(outcome.generation, w.desired);
    Ok((outcome, next))
}

/// Records that the live state at `generation` is `rev`'s desired state (best effort: a
/// missing or stale record only means the next no-op takes the full path).
fn record_settled(store: &mut Store, rev: &Revision, target: &str, generation: u64) {
    let (Some(_), Some(path)) = (&rev.compiled.revision.commit, &rev.path) else {
        return;
    };
    let settled = state::Settled {
        revision: target.to_string(),
        generation,
        path: path.clone(),
        build: state::build_id(),
        release: rev.release.clone().unwrap_or_default(),
        warnings: rev.compiled.warnings.len(),
    };
    if let Err(e) = store.record_settled(&settled) {
        tracing::warn!(error = %e, "cannot record the settled revision");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Snapshot, SourceFile};
    use crate::state::KeyValue;

    /// The repository's bundled example manifests, each file passed through `edit`
    /// (`None` drops it).
    fn revision(edit: impl Fn(&str, &str) -> Option<String>) -> Revision {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let example = crate::source::read_worktree(root, "manifests")
            .unwrap_or_else(|e| panic!("the example manifests: {e}"));
        let files = example
            .files
            .into_iter()
            .filter_map(|f| edit(&f.path, &f.text).map(|text| SourceFile { path: f.path, text }))
            .collect();
        let compiled = crate::compile_snapshot(Snapshot {
            label: "HEAD".into(),
            commit: Some("c0ffee".into()),
            files,
        });
        Revision {
            compiled: compiled.unwrap_or_else(|e| panic!("the example compiles: {e}")),
            subject: "example".into(),
            release: None,
            path: Some("manifests".into()),
        }
    }

    fn example() -> Revision {
        revision(|_, text| Some(text.to_string()))
    }

    fn options() -> Options {
        Options {
            dry_run: false,
            prune: true,
            allow_mass_delete: false,
            allow_rollback: false,
            sweep: false,
            actor: "tester@ci".into(),
            leader: None,
            lock_wait: std::time::Duration::ZERO,
            fault: None,
        }
    }

    /// What observe would have read from a live state holding `image`.
    fn observation(keys: &Keys, rev: &Revision, image: Image) -> Observation {
        Observation {
            observed: Observed {
                layout: Some(state::LAYOUT_VERSION.into()),
                generation: 1,
                applied: BTreeMap::new(),
                lease: None,
                image,
                foreign_types: BTreeMap::new(),
                foreign_digests: BTreeSet::new(),
            },
            desired: state::desired_image(keys, &rev.compiled.state, &rev.release),
            base: Base::Live,
            scanned: None,
        }
    }

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
            .map(|d| d.with_timezone(&chrono::Utc))
            .unwrap_or_default()
    }

    #[test]
    fn an_empty_live_state_gets_every_key_and_a_matching_one_none() {
        let rev = example();
        let keys = Keys::new(&rev.compiled.state.cluster);
        let opts = options();
        let (w, _) = plan_writes(
            &keys,
            &rev,
            &opts,
            observation(&keys, &rev, Image::new()),
            now(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let desired = state::desired_image(&keys, &rev.compiled.state, &rev.release);
        let written: BTreeSet<String> = w.ops.iter().map(|op| op.key().to_string()).collect();
        assert_eq!(
            written,
            desired.keys().cloned().collect::<BTreeSet<_>>(),
            "every desired key is written, and nothing else"
        );
        assert!(!w.ops.iter().any(|op| matches!(op, KeyOp::Del { .. })));
        assert_eq!(w.plan.summary().add, rev.compiled.state.objects.len());
        assert_eq!(w.corrective_writes, 0);
        let (w, _) = plan_writes(&keys, &rev, &opts, observation(&keys, &rev, desired), now())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(w.ops.is_empty() && w.plan.changes.is_empty(), "{:?}", w.ops);
    }

    #[test]
    fn a_key_edited_out_of_band_is_one_corrective_write() {
        let rev = example();
        let keys = Keys::new(&rev.compiled.state.cluster);
        let mut live = state::desired_image(&keys, &rev.compiled.state, &rev.release);
        let worker = keys.worker("web01");
        let Some(KeyValue::Hash(fields)) = live.get_mut(&worker) else {
            panic!("no worker hash for web01");
        };
        fields.insert("queues".into(), "[\"rogue\"]".into());
        let (w, _) = plan_writes(
            &keys,
            &rev,
            &options(),
            observation(&keys, &rev, live),
            now(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((w.ops.len(), w.corrective_writes), (1, 1), "{:?}", w.ops);
    }

    #[test]
    fn removing_most_hosts_is_refused_unless_allowed_and_kept_objects_stay() {
        let full = example();
        let keys = Keys::new(&full.compiled.state.cluster);
        let live = state::desired_image(&keys, &full.compiled.state, &full.release);
        // Four of five hosts gone (and the schedules that named them).
        let rev = revision(|path, text| {
            let gone = (path.contains("/hosts/") && !path.ends_with("web01.yaml"))
                || path.contains("/schedules/");
            (!gone).then(|| text.to_string())
        });
        let obs = || observation(&keys, &rev, live.clone());
        let refused = plan_writes(&keys, &rev, &options(), obs(), now());
        assert!(
            matches!(refused, Err(ApplyError::MassDelete { what: "hosts", .. })),
            "{:?}",
            refused.err()
        );
        let allowed = Options {
            allow_mass_delete: true,
            ..options()
        };
        let (w, _) =
            plan_writes(&keys, &rev, &allowed, obs(), now()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            w.plan.summary().remove,
            full.compiled.state.objects.len() - rev.compiled.state.objects.len()
        );
        let no_prune = Options {
            prune: false,
            ..allowed
        };
        let (w, _) =
            plan_writes(&keys, &rev, &no_prune, obs(), now()).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            w.plan.summary().remove == 0 && !w.kept.is_empty(),
            "{:?}",
            w.kept
        );
        assert!(
            w.desired.contains_key(&keys.worker("db01")),
            "a kept host keeps its worker"
        );
    }
}
