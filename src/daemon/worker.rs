//! The reconcile loop: wait for a trigger or a timer, fetch, compile the branch head, and
//! (when leading) reconcile it; on resync, check drift and heal or report it.
//!
//! Failures of Redis or git back off exponentially with jitter and recover by themselves.
//! An invalid head is reported once and never applied; the last good revision stays live.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::events;
use super::reconciler::{self, Action};
use super::{Config, DaemonError, DriftMode, DriftSummary, InvalidRevision, Shared, Trigger};
use crate::apply::{self, ApplyError, Options, Revision};
use crate::source::remote::Mirror;
use crate::source::SourceError;
use crate::state::{StateError, Store};
use crate::CompileError;

/// Failures in a row, for the back-off of [`reconciler::error_policy`].
#[derive(Debug, Default)]
struct Backoff {
    attempts: u32,
}

impl Backoff {
    /// Counts a failure; the jittered delay before the next attempt.
    fn next(&mut self) -> Duration {
        jittered(reconciler::backoff(self.fail()))
    }

    /// Counts a failure; the failures in a row.
    fn fail(&mut self) -> u32 {
        self.attempts = self.attempts.saturating_add(1);
        self.attempts
    }

    fn reset(&mut self) {
        self.attempts = 0;
    }
}

/// Jitter from the clock's low bits: enough to spread replicas apart.
fn jittered(d: Duration) -> Duration {
    reconciler::jitter(d, chrono::Utc::now().timestamp_subsec_nanos())
}

/// A compiled head, or why it cannot be applied.
enum Head {
    Valid(Box<Revision>),
    Invalid(InvalidRevision),
}

pub(super) struct Worker {
    cfg: Config,
    mirror: Mirror,
    shared: Arc<Shared>,
    rx: Receiver<Trigger>,
    store: Option<Store>,
    /// The last compiled head, by revision key.
    compiled: Option<(String, Head)>,
    /// The last valid revision this daemon applied or confirmed live.
    last_good: Option<Box<Revision>>,
    /// Keeps the parsed files of the last compiled revision: a new revision re-reads
    /// only the files git's tree diff reports as changed.
    compiler: apply::Compiler,
    /// What the last reconcile of this daemon left in Redis: the next push is planned
    /// against it (reading no managed key) while Redis still records it.
    baseline: Option<Box<apply::Baseline>>,
    /// The head last handled (applied, confirmed, refused or reported invalid).
    handled: Option<String>,
    next_fetch: Instant,
    next_resync: Instant,
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// The release this daemon last shipped, and to which hosts: not shipped again unless
    /// the release changes or a host is new.
    deployed: Option<(String, std::collections::BTreeSet<String>)>,
    /// Failed rollouts in a row: its own back-off, since the reconcile before each retry
    /// succeeds (and resets the reconcile's).
    deploy_backoff: Backoff,
}

impl Worker {
    pub(super) fn new(
        cfg: Config,
        mirror: Mirror,
        shared: Arc<Shared>,
        rx: Receiver<Trigger>,
    ) -> Self {
        let now = Instant::now();
        let compiler = apply::Compiler::new(&cfg.path);
        Worker {
            next_resync: now + cfg.resync,
            cfg,
            mirror,
            shared,
            rx,
            store: None,
            compiled: None,
            last_good: None,
            compiler,
            baseline: None,
            handled: None,
            next_fetch: now,
            retry_at: None,
            backoff: Backoff::default(),
            deployed: None,
            deploy_backoff: Backoff::default(),
        }
    }

    pub(super) fn run(mut self) {
        loop {
            let now = Instant::now();
            let wake = [Some(self.next_fetch), Some(self.next_resync), self.retry_at]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now);
            let mut led = false;
            let mut sync = None;
            match self.rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(Trigger::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Trigger::Changed) => std::thread::sleep(self.cfg.debounce),
                Ok(Trigger::Led) => led = true,
                Ok(Trigger::Sync(n)) => sync = Some(n),
                Ok(Trigger::Fetch) | Err(RecvTimeoutError::Timeout) => {}
            }
            // Coalesce a burst of triggers into one fetch.
            while let Ok(t) = self.rx.try_recv() {
                match t {
                    Trigger::Stop => return,
                    Trigger::Led => led = true,
                    Trigger::Sync(n) => sync = sync.max(Some(n)),
                    Trigger::Fetch | Trigger::Changed => {}
                }
            }
            // A sync reconciles the head even when it was handled, observing everything
            // (so it also heals drift), like a new leader does.
            self.tick(led || sync.is_some());
            if let Some(n) = sync {
                self.answer_sync(n);
            }
        }
    }

    /// Tells `celeroot sync` (through Redis) how request `n` ended.
    fn answer_sync(&mut self, n: u64) {
        let st = self.shared.status();
        let (result, revision, error) = if let Some(s) = self.shared.suspension() {
            (
                "suspended".to_string(),
                String::new(),
                Some(format!("suspended by {} ({})", s.by, s.reason)),
            )
        } else if !self.shared.is_leader() {
            (
                "standby".to_string(),
                String::new(),
                Some("this daemon lost the leader lease".to_string()),
            )
        } else if let Some(e) = st.last_fetch_error {
            ("failed".to_string(), String::new(), Some(e))
        } else if let Some(r) = st.last_result {
            (r.result.as_str().to_string(), r.revision, r.error)
        } else {
            (
                "failed".to_string(),
                String::new(),
                Some("nothing was reconciled".to_string()),
            )
        };
        let answer = crate::state::SyncAnswer {
            request: n,
            result,
            revision,
            by: self.cfg.identity.clone(),
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            error,
        };
        if let Err(e) = self.store().and_then(|s| s.answer_sync(&answer)) {
            tracing::warn!(error = %e, request = n, "could not answer the sync request");
            self.store = None;
        }
    }

    fn tick(&mut self, led: bool) {
        let head = match self.fetch_head() {
            Ok(h) => h,
            Err(e) => {
                let delay = self.backoff.next();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "git fetch failed");
                self.shared
                    .update(|s| s.last_fetch_error = Some(e.to_string()));
                self.next_fetch = Instant::now() + delay;
                return;
            }
        };
        self.next_fetch = Instant::now() + self.cfg.interval;
        self.shared.update(|s| {
            s.seen_revision = Some(head.clone());
            s.last_fetch_error = None;
        });
        self.compile(&head);
        if !self.shared.is_leader() {
            return;
        }
        if self.shared.suspension().is_some() {
            // Suspended: fetched and compiled (for `/status`), nothing applied, healed
            // or deployed until `celeroot resume`.
            return;
        }
        let now = Instant::now();
        let retry_due = self.retry_at.is_some_and(|t| now >= t);
        if led || retry_due || self.handled.as_deref() != Some(head.as_str()) {
            if led {
                // A new leader observes everything once.
                self.baseline = None;
            }
            self.reconcile_head(&head);
        } else if now >= self.next_resync {
            self.resync();
        }
    }

    /// Fetches and returns the revision key of the branch head (the commit, or for
    /// `--worktree` a digest of the files).
    fn fetch_head(&self) -> Result<String, SourceError> {
        let started = Instant::now();
        let result = self.mirror.fetch().and_then(|()| {
            if self.cfg.worktree {
                self.worktree_key()
            } else {
                self.mirror.head()
            }
        });
        self.shared
            .metrics
            .fetched(started.elapsed().as_secs_f64(), result.is_ok());
        result
    }

    /// The manifests as they are on disk (`--worktree`).
    fn worktree_snapshot(&self) -> Result<crate::source::Snapshot, SourceError> {
        let root = self
            .mirror
            .workdir()
            .ok_or_else(|| SourceError::NotARepository {
                path: self.mirror.dir.display().to_string(),
            })?;
        crate::source::read_worktree(&root, &self.cfg.path)
    }

    fn worktree_key(&self) -> Result<String, SourceError> {
        use sha2::{Digest, Sha256};
        let snap = self.worktree_snapshot()?;
        let mut h = Sha256::new();
        for f in &snap.files {
            h.update(f.path.as_bytes());
            h.update([0]);
            h.update(f.text.as_bytes());
            h.update([0]);
        }
        Ok(format!("worktree-{}", &format!("{:x}", h.finalize())[..12]))
    }

    fn load(&mut self, head: &str) -> Result<Revision, CompileError> {
        let repo = self.mirror.repo()?;
        if !self.cfg.worktree {
            let (rev, stats) = self.compiler.load(&repo, head)?;
            tracing::debug!(
                revision = head,
                files_read = stats.files_read,
                full = stats.full,
                per_object = stats.per_object,
                "compiled"
            );
            return Ok(rev);
        }
        let mut snapshot = self.worktree_snapshot()?;
        snapshot.label = head.to_string();
        let compiled = crate::compile_snapshot(snapshot)?;
        let release = crate::source::release_id(&repo, "HEAD", &compiled.state.deploy.paths)
            .ok()
            .flatten();
        Ok(Revision {
            compiled,
            subject: "work tree".into(),
            release,
            path: None,
        })
    }

    /// Compiles `head` once (standbys too, so they know the cluster and stay warm).
    fn compile(&mut self, head: &str) {
        if self.compiled.as_ref().is_some_and(|(k, _)| k == head) {
            return;
        }
        // A large fleet's compiled state takes a while to free: not on the push's path.
        if let Some(old) = self.compiled.take() {
            apply::incremental::drop_later(old);
        }
        let compiled = match self.load(head) {
            Ok(rev) => match (&self.cfg.cluster, &rev.compiled.state.cluster) {
                (Some(want), got) if want != got => Head::Invalid(InvalidRevision {
                    revision: head.to_string(),
                    errors: 1,
                    first_error: format!(
                        "the Cluster is named {got:?}, this daemon manages {want:?} (--cluster)"
                    ),
                }),
                _ => {
                    // It could not alert: refused like any invalid revision.
                    let missing = crate::runs::alert::unresolved(&rev.compiled.state);
                    match missing.first() {
                        Some(d) => Head::Invalid(InvalidRevision {
                            revision: head.to_string(),
                            errors: missing.len(),
                            first_error: d.headline(),
                        }),
                        None => Head::Valid(Box::new(rev)),
                    }
                }
            },
            Err(CompileError::Invalid { diagnostics, .. }) => {
                let errors: Vec<_> = diagnostics.iter().filter(|d| d.is_error()).collect();
                Head::Invalid(InvalidRevision {
                    revision: head.to_string(),
                    errors: errors.len(),
                    first_error: errors.first().map(|d| d.headline()).unwrap_or_default(),
                })
            }
            Err(CompileError::Source(e)) => Head::Invalid(InvalidRevision {
                revision: head.to_string(),
                errors: 1,
                first_error: e.to_string(),
            }),
        };
        if let Head::Valid(rev) = &compiled {
            let cluster = &rev.compiled.state.cluster;
            if self.shared.cluster.get().is_none() {
                let _ = self.shared.cluster.set(cluster.clone());
                self.shared.update(|s| s.cluster = Some(cluster.clone()));
            } else if self.shared.cluster.get() != Some(cluster) {
                let want = self.shared.cluster.get().cloned().unwrap_or_default();
                self.compiled = Some((
                    head.to_string(),
                    Head::Invalid(InvalidRevision {
                        revision: head.to_string(),
                        errors: 1,
                        first_error: format!(
                            "the Cluster was renamed from {want:?} to {cluster:?}; restart the daemon to manage the new cluster"
                        ),
                    }),
                ));
                return;
            }
        }
        self.compiled = Some((head.to_string(), compiled));
    }

    fn store(&mut self) -> Result<&mut Store, StateError> {
        let cluster = self.shared.cluster.get().cloned().unwrap_or_default();
        if self.store.is_none() {
            self.store = Some(Store::connect(&self.cfg.redis, &cluster)?);
        }
        self.store
            .as_mut()
            .ok_or_else(|| StateError::Protocol("no connection".into()))
    }

    fn options(&self, dry_run: bool) -> Options {
        Options {
            dry_run,
            prune: self.cfg.prune,
            allow_mass_delete: false,
            allow_rollback: self.cfg.allow_rollback,
            sweep: false,
            actor: self.cfg.identity.clone(),
            leader: Some(self.shared.token.clone()),
            lock_wait: std::time::Duration::ZERO,
            fault: None,
        }
    }

    fn reconcile_head(&mut self, head: &str) {
        let rev = match self.compiled.take() {
            Some((k, Head::Valid(rev))) if k == head => {
                let r = rev.clone();
                self.compiled = Some((k, Head::Valid(rev)));
                r
            }
            Some((k, Head::Invalid(inv))) if k == head => {
                self.compiled = Some((k, Head::Invalid(inv.clone())));
                self.report_invalid(head, &inv);
                return;
            }
            other => {
                self.compiled = other;
                return;
            }
        };
        if self.cfg.drift == DriftMode::Report && self.is_live(&rev) {
            // Not a new revision (a restart, or a new leader): with --drift report, any
            // difference is drift to report, not to write.
            let target = target_of(&rev, head);
            self.shared
                .metrics
                .succeeded(&rev.compiled.state.cluster, &target);
            self.shared.update(|s| {
                s.applied_revision = Some(target.clone());
                s.invalid_revision = None;
            });
            self.handled = Some(head.to_string());
            self.retry_at = None;
            self.ship_live(&rev);
            self.last_good = Some(rev);
            self.resync();
            return;
        }
        self.apply(head, &rev);
    }

    /// Whether `rev` is the applied revision in Redis (false when Redis cannot tell).
    fn is_live(&mut self, rev: &Revision) -> bool {
        let target = rev.compiled.revision.commit.clone();
        match self.store().and_then(Store::applied_revision) {
            Ok(applied) => target.is_some() && applied == target,
            Err(_) => {
                self.store = None;
                false
            }
        }
    }

    /// Reconciles `rev`, recording the outcome in metrics, `/status` and logs.
    fn apply(&mut self, head: &str, rev: &Revision) {
        let started = Instant::now();
        let opts = self.options(false);
        let target = target_of(rev, head);
        let repo = self.mirror.repo().ok();
        let worktree = self.cfg.worktree;
        let ancestry = |applied: &str| match (&repo, worktree) {
            (Some(repo), false) => apply::ancestry(repo, &target, applied),
            _ => apply::Ancestry::Same,
        };
        let baseline = self.baseline.take();
        // Ship the release after the transaction, holding the lease, unless this daemon
        // already shipped it (or --skip-deploy). A failed rollout is retried with back-off.
        let redis = self.cfg.redis.clone();
        let shipped_already = self.shipped(rev);
        let ship = self
            .cfg
            .deploy
            .clone()
            .filter(|_| rev.release.is_some() && !shipped_already);
        let progress = log_progress;
        let deploy = match (ship.as_ref(), &repo) {
            (Some(ssh), Some(repo)) => Some(apply::Deploy {
                repo,
                ssh,
                redis: Some(&redis),
                progress: &progress,
            }),
            _ => None,
        };
        let shipping = deploy.is_some();
        let result = self.store().map_err(ApplyError::from).and_then(|s| {
            apply::reconcile_from_and_deploy(
                s,
                rev,
                &opts,
                &ancestry,
                chrono::Utc::now(),
                baseline.map(|b| *b),
                deploy,
            )
        });
        let result = result.map(|(o, after, next)| {
            self.baseline = next.map(Box::new);
            (o, after)
        });
        let secs = started.elapsed().as_secs_f64();
        match result {
            Ok((o, after)) => {
                events::Reconciled { outcome: &o, secs }.emit(&self.shared);
                self.handled = Some(head.to_string());
                if let Some(old) = self.last_good.replace(Box::new(rev.clone())) {
                    apply::incremental::drop_later(old);
                }
                self.retry_at = None;
                self.backoff.reset();
                self.next_resync = Instant::now() + self.cfg.resync;
                if shipping {
                    self.deployed(rev, o.deploy.as_ref(), after);
                }
            }
            Err(e) => self.failed(head, &e, secs),
        }
    }

    /// Whether this daemon shipped `rev`'s release to every host of it already.
    fn shipped(&self, rev: &Revision) -> bool {
        match (&self.deployed, &rev.release) {
            (Some((release, hosts)), Some(want)) => {
                release == want && rev.compiled.state.hosts.keys().all(|h| hosts.contains(h))
            }
            _ => false,
        }
    }

    /// With `--drift report`, a live revision is not reconciled (that would heal drift),
    /// but its release is still shipped when this daemon has not shipped it (a restart,
    /// or a failed rollout whose retry is due): the rollout alone, as after an apply.
    fn ship_live(&mut self, rev: &Revision) {
        let (Some(ssh), Some(release)) = (self.cfg.deploy.clone(), rev.release.clone()) else {
            return;
        };
        if self.shipped(rev) {
            return;
        }
        let Ok(repo) = self.mirror.repo() else {
            return;
        };
        let redis = self.cfg.redis.clone();
        let progress = log_progress;
        let d = apply::Deploy {
            repo: &repo,
            ssh: &ssh,
            redis: Some(&redis),
            progress: &progress,
        };
        let shipped = apply::ship_release(rev, &d, &release, &self.cfg.identity);
        let (report, after) = apply::after_shipping(Some(shipped));
        self.deployed(rev, report.as_ref(), after);
    }

    /// Reports the rollout that followed an apply; a failed one is retried with back-off
    /// (the next attempt reconciles, a no-op, and ships again).
    fn deployed(
        &mut self,
        rev: &Revision,
        report: Option<&crate::deploy::Report>,
        after: apply::AfterTransaction,
    ) {
        let release = rev.release.clone().unwrap_or_default();
        let ok = after.failed.is_none() && report.is_some_and(crate::deploy::Report::succeeded);
        let retry = (!ok).then(|| self.deploy_backoff.next());
        let failures = if ok { 0 } else { self.deploy_backoff.attempts };
        events::Deployed {
            release: &release,
            report,
            error: after.failed.as_ref(),
            unrecorded: after.unrecorded.as_ref(),
            retry,
            failures,
        }
        .emit(&self.shared);
        match retry {
            None => {
                self.deploy_backoff.reset();
                self.deployed = Some((release, rev.compiled.state.hosts.keys().cloned().collect()));
            }
            Some(after) => self.retry_at = Some(Instant::now() + after),
        }
    }

    /// Carries out the [`reconciler::error_policy`] of a failed attempt.
    fn failed(&mut self, head: &str, e: &ApplyError, secs: f64) {
        let action = match reconciler::error_policy(e, self.backoff.fail()) {
            Action::Requeue(after) => Action::Requeue(jittered(after)),
            other => other,
        };
        events::Failed {
            head,
            error: e,
            secs,
            action,
        }
        .emit(&self.shared);
        if matches!(
            e,
            ApplyError::State(StateError::Connect { .. } | StateError::Redis(_))
        ) {
            self.store = None;
        }
        match action {
            Action::AwaitChange => {
                self.handled = Some(head.to_string());
                self.retry_at = None;
            }
            Action::StepDown => self.shared.set_leading(false),
            Action::Requeue(after) => self.retry_at = Some(Instant::now() + after),
        }
    }

    fn report_invalid(&mut self, head: &str, inv: &InvalidRevision) {
        self.handled = Some(head.to_string());
        self.retry_at = None;
        let shared = Arc::clone(&self.shared);
        let (identity, branch) = (self.cfg.identity.clone(), self.cfg.branch.clone());
        let event = events::Invalid {
            invalid: inv,
            identity: &identity,
            branch: &branch,
        };
        let unrecorded = match self.store() {
            Ok(store) => event.emit(&shared, Some(store)),
            Err(e) => event.emit(&shared, None).or(Some(e)),
        };
        if unrecorded.is_some() {
            self.store = None;
        }
    }

    /// Checks the live state against the last good revision; heals or reports drift.
    fn resync(&mut self) {
        self.next_resync = Instant::now() + self.cfg.resync;
        let Some(rev) = self.last_good.clone() else {
            return;
        };
        let report = match self
            .store()
            .and_then(|s| crate::drift::detect(s, &rev.compiled, chrono::Utc::now()))
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "drift check failed");
                self.store = None;
                self.shared.set_redis_ok(false);
                self.next_resync = Instant::now() + self.backoff.next();
                return;
            }
        };
        let healable = report
            .live
            .iter()
            .filter(|d| d.fixed_by == crate::drift::Fix::Reconcile)
            .count();
        let summary = DriftSummary {
            checked_at: now_rfc3339(),
            live_keys: healable,
            unknown_keys: report.live.len() - healable,
            hosts: report.hosts.len(),
            pending: report.pending.changes.len(),
            beat: report.beat.as_ref().map(|b| b.kind.to_string()),
        };
        events::DriftChecked { summary: &summary }.emit(&self.shared);
        if healable == 0 && report.pending.is_empty() {
            return;
        }
        match self.cfg.drift {
            DriftMode::Heal => {
                tracing::info!(keys = healable, pending = summary.pending, "healing drift");
                let head = self.handled.clone().unwrap_or_default();
                // Healing needs the live keys: observe everything.
                self.baseline = None;
                self.apply(&head, &rev);
            }
            DriftMode::Report => {
                let shared = Arc::clone(&self.shared);
                let identity = self.cfg.identity.clone();
                let revision = rev.compiled.revision.commit.clone().unwrap_or_default();
                let event = events::DriftReported {
                    summary: &summary,
                    revision: &revision,
                    keys: report.live.iter().map(|d| d.key.clone()).take(20).collect(),
                    identity: &identity,
                };
                let unrecorded = match self.store() {
                    Ok(store) => event.emit(&shared, Some(store)),
                    Err(e) => event.emit(&shared, None).or(Some(e)),
                };
                if unrecorded.is_some() {
                    self.store = None;
                }
            }
        }
    }
}

/// The revision recorded for `rev`: its commit, or for the work tree the head key.
fn target_of(rev: &Revision, head: &str) -> String {
    rev.compiled
        .revision
        .commit
        .clone()
        .unwrap_or_else(|| head.to_string())
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Watches a local repository's refs (and with `--worktree` its manifests) and sends
/// [`Trigger::Changed`]. Remote repositories are polled and woken by webhooks instead.
///
/// # Errors
/// [`DaemonError::Watch`] when a path cannot be watched.
pub(super) fn watch_files(
    mirror: &Mirror,
    cfg: &Config,
    tx: Sender<Trigger>,
) -> Result<Option<notify::RecommendedWatcher>, DaemonError> {
    use notify::{RecursiveMode, Watcher};
    let paths = mirror.watch_paths(cfg.worktree, &cfg.path);
    if paths.is_empty() {
        return Ok(None);
    }
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if !ev.kind.is_access() {
                let _ = tx.send(Trigger::Changed);
            }
        }
    })
    .map_err(|e| DaemonError::Watch {
        path: mirror.dir.display().to_string(),
        reason: e.to_string(),
    })?;
    for (path, recursive) in paths {
        if !path.exists() {
            continue;
        }
        let mode = if recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        watcher.watch(&path, mode).map_err(|e| DaemonError::Watch {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(Some(watcher))
}

/// Logs one host's rollout result.
fn log_progress(r: &crate::deploy::HostResult) {
    tracing::info!(
        host = %r.host,
        outcome = r.outcome.label(),
        release = r.current.as_deref().unwrap_or_default(),
        files = r.files_sent,
        duration_ms = r.duration_ms,
        detail = r.detail.as_deref().unwrap_or_default(),
        "deploy"
    );
}

#[cfg(test)]
mod tests {
    use super::reconciler::{BACKOFF_BASE, BACKOFF_MAX};
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let within = |d: Duration, base: Duration| d >= base.mul_f64(0.8) && d <= base.mul_f64(1.2);
        let mut expected = BACKOFF_BASE;
        for _ in 0..10 {
            let d = b.next();
            assert!(within(d, expected), "{d:?} not within 20 % of {expected:?}");
            expected = (expected * 2).min(BACKOFF_MAX);
        }
        assert!(within(b.next(), BACKOFF_MAX), "capped");
        b.reset();
        assert!(within(b.next(), BACKOFF_BASE), "reset");
    }
}
