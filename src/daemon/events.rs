//! What the daemon reports, like Vector's internal events: each observable event is one
//! type whose [`emit`](Reconciled::emit) updates the log line, the metric and `/status`
//! together (and, for the events only the daemon knows of, the Redis event stream), so
//! the four never disagree. Labels are bounded: [`Result`] is an enum.
//!
//! Owns: the daemon's log lines, metric updates and `/status` results. Must not know:
//! when to retry (that is [`super::reconciler`]).

use serde::Serialize;

use super::reconciler::Action;
use super::{DriftSummary, InvalidRevision, LastResult, Shared};
use crate::apply::{self, ApplyError, Outcome};
use crate::state::events::{Failure, What};
use crate::state::{Event, StateError, Store};

/// The result of an attempt: `/status`'s `lastResult.result` and the
/// `celeroot_reconciles_total` label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Result {
    Applied,
    Noop,
    Drift,
    Invalid,
    Refused,
    Locked,
    Conflict,
    Fenced,
    #[default]
    Failed,
}

impl Result {
    pub fn as_str(self) -> &'static str {
        match self {
            Result::Applied => "applied",
            Result::Noop => "noop",
            Result::Drift => "drift",
            Result::Invalid => "invalid",
            Result::Refused => "refused",
            Result::Locked => "locked",
            Result::Conflict => "conflict",
            Result::Fenced => "fenced",
            Result::Failed => "failed",
        }
    }
}

/// `/status` and the metric label read the same strings, from [`Result::as_str`].
impl Serialize for Result {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl prometheus_client::encoding::EncodeLabelValue for Result {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> std::result::Result<(), std::fmt::Error> {
        self.as_str().encode(encoder)
    }
}

impl From<Failure> for Result {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Locked => Result::Locked,
            Failure::Conflict => Result::Conflict,
            Failure::Fenced => Result::Fenced,
            Failure::Refused => Result::Refused,
            Failure::Invalid => Result::Invalid,
            Failure::Failed => Result::Failed,
        }
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A reconcile that applied a revision or found nothing to do.
pub struct Reconciled<'a> {
    pub outcome: &'a Outcome,
    pub secs: f64,
}

impl Reconciled<'_> {
    pub fn emit(&self, shared: &Shared) {
        let o = self.outcome;
        let result = match o.result {
            apply::Applied::Applied => Result::Applied,
            _ => Result::Noop,
        };
        tracing::info!(
            revision = %o.revision,
            result = result.as_str(),
            writes = o.writes,
            corrective = o.corrective_writes,
            generation = o.generation,
            duration_ms = o.duration_ms,
            incremental = o.incremental,
            round_trips = o.round_trips,
            "reconciled"
        );
        shared.metrics.reconciled(result, self.secs);
        shared.metrics.succeeded(&o.cluster, &o.revision);
        let at = now_rfc3339();
        shared.update(|s| {
            s.applied_revision = Some(o.revision.clone());
            s.last_success_at = Some(at.clone());
            s.invalid_revision = None;
            s.last_result = Some(LastResult {
                result,
                revision: o.revision.clone(),
                at,
                writes: o.writes,
                corrective_writes: o.corrective_writes,
                duration_ms: o.duration_ms,
                error: None,
            });
        });
        shared.set_redis_ok(true);
    }
}

/// A reconcile that wrote nothing, and what the daemon does next (the library recorded
/// the Redis event).
pub struct Failed<'a> {
    pub head: &'a str,
    pub error: &'a ApplyError,
    pub secs: f64,
    pub action: Action,
}

impl Failed<'_> {
    pub fn emit(&self, shared: &Shared) {
        let result = Result::from(self.error.failure());
        shared.metrics.reconciled(result, self.secs);
        let error = self.error.to_string();
        shared.update(|s| {
            s.last_result = Some(LastResult {
                result,
                revision: self.head.to_string(),
                at: now_rfc3339(),
                duration_ms: u64::try_from((self.secs * 1000.0) as i64).unwrap_or(0),
                error: Some(error.clone()),
                ..LastResult::default()
            });
        });
        let head = self.head;
        match self.action {
            Action::AwaitChange => tracing::error!(
                revision = head,
                error,
                "reconcile refused; the live state is unchanged"
            ),
            Action::StepDown => tracing::warn!(
                revision = head,
                error,
                "fenced: this daemon lost the leader lease; nothing was written"
            ),
            Action::Requeue(after) => tracing::warn!(
                revision = head,
                error,
                retry_in_ms = after.as_millis() as u64,
                "reconcile failed; retrying"
            ),
        }
        if matches!(
            self.error,
            ApplyError::State(StateError::Connect { .. } | StateError::Redis(_))
        ) {
            shared.set_redis_ok(false);
        }
    }
}

/// The rollout after an apply (the library recorded its Redis records and event).
pub struct Deployed<'a> {
    pub release: &'a str,
    /// The rollout's report, when it ran.
    pub report: Option<&'a crate::deploy::Report>,
    /// Why it did not run or could not start.
    pub error: Option<&'a apply::DeployError>,
    /// Why its records could not be written.
    pub unrecorded: Option<&'a StateError>,
    /// When it failed: the delay before the next attempt.
    pub retry: Option<std::time::Duration>,
    /// Failed rollouts in a row, this one included.
    pub failures: u32,
}

impl Deployed<'_> {
    pub fn emit(&self, shared: &Shared) {
        use crate::deploy::Outcome as O;
        let count = |o: O| self.report.map_or(0, |r| r.count(o));
        let failed_hosts: Vec<String> = self
            .report
            .map(|r| {
                r.hosts
                    .iter()
                    .filter(|h| matches!(h.outcome, O::Failed | O::RolledBack | O::Skipped))
                    .map(|h| match &h.detail {
                        Some(d) => format!("{}: {} ({d})", h.host, h.outcome.label()),
                        None => format!("{}: {}", h.host, h.outcome.label()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let error = match (self.error, failed_hosts.is_empty()) {
            (Some(e), _) => Some(e.to_string()),
            (None, false) => Some(failed_hosts.join("; ")),
            (None, true) => None,
        };
        let ok = error.is_none();
        let retry_at = self.retry.map(|d| {
            (chrono::Utc::now() + chrono::Duration::from_std(d).unwrap_or_default())
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        });
        match (&error, self.retry) {
            (None, _) => tracing::info!(
                release = self.release,
                deployed = count(O::Deployed),
                up_to_date = count(O::UpToDate),
                "release shipped"
            ),
            (Some(e), retry) => tracing::warn!(
                release = self.release,
                error = %e,
                retry_in_ms = retry.map_or(0, |d| d.as_millis() as u64),
                "deploy failed; the live state is applied, retrying the rollout"
            ),
        }
        if let Some(e) = self.unrecorded {
            tracing::warn!(error = %e, "the deploy was not recorded in Redis");
        }
        shared.metrics.deployed(ok);
        shared.update(|s| {
            s.last_deploy = Some(super::LastDeploy {
                release: self.release.to_string(),
                result: if ok { "ok" } else { "failed" }.into(),
                deployed: count(O::Deployed),
                up_to_date: count(O::UpToDate),
                failed: count(O::Failed),
                rolled_back: count(O::RolledBack),
                skipped: count(O::Skipped),
                at: now_rfc3339(),
                error,
                retry_at,
                retry_in_ms: self
                    .retry
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                failures: self.failures,
            });
        });
    }
}

/// The branch head does not validate; the last good revision stays live.
pub struct Invalid<'a> {
    pub invalid: &'a InvalidRevision,
    pub identity: &'a str,
    pub branch: &'a str,
}

impl Invalid<'_> {
    /// Also records the Redis event (best effort); returns its error, if any.
    pub fn emit(&self, shared: &Shared, store: Option<&mut Store>) -> Option<StateError> {
        let inv = self.invalid;
        tracing::error!(
            revision = inv.revision,
            errors = inv.errors,
            first_error = %inv.first_error,
            "the branch head is invalid and was not applied; the last good revision stays live"
        );
        shared.metrics.reconciled(Result::Invalid, 0.0);
        shared.update(|s| {
            s.invalid_revision = Some(inv.clone());
            s.last_result = Some(LastResult {
                result: Result::Invalid,
                revision: inv.revision.clone(),
                at: now_rfc3339(),
                error: Some(inv.first_error.clone()),
                ..LastResult::default()
            });
        });
        let event = Event::now(
            self.identity,
            &inv.revision,
            What::Failed {
                why: Failure::Invalid,
                error: format!("{} error(s); first: {}", inv.errors, inv.first_error),
            },
        )
        .rev(self.branch);
        record(
            store,
            &event,
            "could not record the invalid revision as an event",
        )
    }
}

/// A resync's findings.
pub struct DriftChecked<'a> {
    pub summary: &'a DriftSummary,
}

impl DriftChecked<'_> {
    pub fn emit(&self, shared: &Shared) {
        shared.metrics.drift(self.summary.live_keys);
        shared.metrics.beat_healthy(self.summary.beat.is_none());
        shared.update(|s| s.drift = Some(self.summary.clone()));
    }
}

/// Drift found with `--drift report`: reported, not healed.
pub struct DriftReported<'a> {
    pub summary: &'a DriftSummary,
    pub revision: &'a str,
    /// The first drifted keys.
    pub keys: Vec<String>,
    pub identity: &'a str,
}

impl DriftReported<'_> {
    /// Also records the Redis event (best effort); returns its error, if any.
    pub fn emit(self, shared: &Shared, store: Option<&mut Store>) -> Option<StateError> {
        tracing::warn!(
            keys = self.summary.live_keys,
            pending = self.summary.pending,
            "drift found (--drift report: not healed)"
        );
        shared.metrics.reconciled(Result::Drift, 0.0);
        let event = Event::now(
            self.identity,
            self.revision,
            What::Drift {
                drifted_keys: self.summary.live_keys,
                keys: self.keys,
            },
        );
        record(store, &event, "could not record drift")
    }
}

fn record(store: Option<&mut Store>, event: &Event, what: &str) -> Option<StateError> {
    let e = store?.record_event(event).err()?;
    tracing::warn!(error = %e, "{what}");
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_the_documented_strings_in_status_and_metrics() {
        let all = [
            Result::Applied,
            Result::Noop,
            Result::Drift,
            Result::Invalid,
            Result::Refused,
            Result::Locked,
            Result::Conflict,
            Result::Fenced,
            Result::Failed,
        ];
        let json: Vec<serde_json::Value> = all
            .iter()
            .map(|r| serde_json::to_value(r).unwrap_or_default())
            .collect();
        // docs/operations.md, "Metrics" and "Endpoints".
        assert_eq!(
            json,
            [
                "applied", "noop", "drift", "invalid", "refused", "locked", "conflict", "fenced",
                "failed"
            ]
        );
        assert_eq!(Result::from(Failure::Invalid), Result::Invalid);
        assert_eq!(Result::from(Failure::Refused), Result::Refused);
    }
}
