//! The daemon's Prometheus metrics (OpenMetrics text on `/metrics`).
//!
//! One registry per daemon (no global state), so tests can run several daemons in one
//! process. Metric names are documented in docs/operations.md.

use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: super::events::Result,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevisionLabels {
    pub revision: String,
    pub cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub provider: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScheduleStateLabels {
    pub schedule: String,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScheduleLabels {
    pub schedule: String,
}

/// Schedules labelled by name at most: beyond this many, only the per-state counts are
/// exported (a label per schedule of a large fleet would flood Prometheus).
pub const MAX_LABELLED_SCHEDULES: usize = 500;

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_duration: Histogram,
    applied_revision: Family<RevisionLabels, Gauge>,
    since_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Unix milliseconds of the last successful reconcile (0: none yet).
    last_success_ms: AtomicI64,
    drift_objects: Gauge,
    beat_healthy: Gauge,
    leader: Gauge,
    suspended: Gauge,
    fetch_duration: Histogram,
    fetch_errors: Counter,
    webhooks: Family<WebhookLabels, Counter>,
    deploys: Family<DeployLabels, Counter>,
    schedule_targets: Family<StateLabels, Gauge>,
    schedule_state: Family<ScheduleStateLabels, Gauge>,
    schedule_last_success: Family<ScheduleLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    alerts: Family<AlertLabels, Counter>,
    /// The run collector's counters (its thread writes them).
    pub runs: std::sync::Arc<crate::runs::collect::Stats>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub channel: String,
    /// `sent` or `failed`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeployLabels {
    /// `ok` or `failed`.
    pub result: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("celeroot");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconcile attempts by result (applied, noop, drift, invalid, refused, locked, conflict, fenced, failed)",
            reconciles.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciles, from compile to recorded result",
            reconcile_duration.clone(),
        );
        let applied_revision = Family::<RevisionLabels, Gauge>::default();
        registry.register(
            "applied_revision_info",
            "The revision this daemon last applied or confirmed (value 1)",
            applied_revision.clone(),
        );
        let since_success = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "seconds_since_last_successful_reconcile",
            "Seconds since the last reconcile that applied or confirmed the live state (-1: none yet)",
            since_success.clone(),
        );
        let drift_objects = Gauge::default();
        registry.register(
            "drift_objects",
            "Live keys that differed from git at the last check (healed or reported)",
            drift_objects.clone(),
        );
        let beat_healthy = Gauge::default();
        beat_healthy.set(-1);
        registry.register(
            "beat_healthy",
            "1 when a beat held RedBeat's lock at the last drift check (or no schedule needs one), 0 when none did (beat-missing, beat-inactive), -1 before the first check",
            beat_healthy.clone(),
        );
        let suspended = Gauge::default();
        registry.register(
            "suspended",
            "1 while the daemons are suspended (celeroot suspend)",
            suspended.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 when this daemon holds the leader lease",
            leader.clone(),
        );
        let fetch_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "git_fetch_duration_seconds",
            "Duration of git fetches (and ref reads of local repositories)",
            fetch_duration.clone(),
        );
        let fetch_errors = Counter::default();
        registry.register(
            "git_fetch_errors",
            "Failed git fetches",
            fetch_errors.clone(),
        );
        let webhooks = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhook_requests",
            "Webhook requests by provider and result (accepted, duplicate, ignored, ping, unauthorized, bad_request, disabled)",
            webhooks.clone(),
        );
        let deploys = Family::<DeployLabels, Counter>::default();
        registry.register(
            "deploys",
            "Rollouts after an apply by result (ok, failed); a failed one is retried with back-off",
            deploys.clone(),
        );
        let schedule_targets = Family::<StateLabels, Gauge>::default();
        registry.register(
            "schedule_targets",
            "Schedule targets by run health (ok, pending, running, paused, unknown, late, failed, missed, stuck) at the last evaluation",
            schedule_targets.clone(),
        );
        let schedule_state = Family::<ScheduleStateLabels, Gauge>::default();
        registry.register(
            "schedule_state",
            "1 for each schedule's worst target state (only while the fleet has at most 500 schedules)",
            schedule_state.clone(),
        );
        let schedule_last_success =
            Family::<ScheduleLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "schedule_last_success_timestamp_seconds",
            "When a run of the schedule last succeeded, UNIX seconds (only while the fleet has at most 500 schedules)",
            schedule_last_success.clone(),
        );
        let alerts = Family::<AlertLabels, Counter>::default();
        registry.register(
            "alerts",
            "Alert notifications by channel and result (sent, failed; a failed one is retried at the next evaluation)",
            alerts.clone(),
        );
        let runs = std::sync::Arc::new(crate::runs::collect::Stats::default());
        registry.register(
            "run_events",
            "Celery task events the run collector decoded",
            runs.events.clone(),
        );
        registry.register(
            "run_updates",
            "Updates of schedule runs the run collector recorded",
            runs.recorded.clone(),
        );
        registry.register(
            "run_envelopes_malformed",
            "Messages on the event channels that did not decode",
            runs.malformed.clone(),
        );
        registry.register(
            "runs_open",
            "Runs the collector remembers as not finished",
            runs.open.clone(),
        );
        Metrics {
            runs,
            alerts,
            schedule_targets,
            schedule_state,
            schedule_last_success,
            deploys,
            registry,
            reconciles,
            reconcile_duration,
            applied_revision,
            since_success,
            last_success_ms: AtomicI64::new(0),
            drift_objects,
            beat_healthy,
            leader,
            suspended,
            fetch_duration,
            fetch_errors,
            webhooks,
        }
    }

    /// Records a rollout after an apply.
    pub fn deployed(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.deploys.get_or_create(&DeployLabels { result }).inc();
    }

    pub fn reconciled(&self, result: super::events::Result, seconds: f64) {
        self.reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
        self.reconcile_duration.observe(seconds);
    }

    /// Records a reconcile that left the live state at `revision`.
    pub fn succeeded(&self, cluster: &str, revision: &str) {
        self.last_success_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
        let labels = RevisionLabels {
            revision: revision.to_string(),
            cluster: cluster.to_string(),
        };
        if self.applied_revision.get(&labels).is_none() {
            self.applied_revision.clear();
        }
        self.applied_revision.get_or_create(&labels).set(1);
    }

    pub fn drift(&self, objects: usize) {
        self.drift_objects
            .set(i64::try_from(objects).unwrap_or(i64::MAX));
    }

    pub fn beat_healthy(&self, healthy: bool) {
        self.beat_healthy.set(i64::from(healthy));
    }

    pub fn set_suspended(&self, suspended: bool) {
        self.suspended.set(i64::from(suspended));
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub fn fetched(&self, seconds: f64, ok: bool) {
        self.fetch_duration.observe(seconds);
        if !ok {
            self.fetch_errors.inc();
        }
    }

    pub fn webhook(&self, provider: &str, result: &str) {
        self.webhooks
            .get_or_create(&WebhookLabels {
                provider: provider.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Records an alert notification.
    pub fn alert(&self, channel: &str, sent: bool) {
        self.alerts
            .get_or_create(&AlertLabels {
                channel: channel.to_string(),
                result: if sent { "sent" } else { "failed" },
            })
            .inc();
    }

    /// Records an evaluation of the schedules' run health.
    pub fn schedules(&self, health: &[crate::runs::expect::TargetHealth]) {
        for (state, n) in crate::runs::expect::counts(health) {
            self.schedule_targets
                .get_or_create(&StateLabels {
                    state: state.as_str(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut worst: std::collections::BTreeMap<&str, crate::runs::expect::RunHealth> =
            std::collections::BTreeMap::new();
        let mut success: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
        for t in health {
            let w = worst.entry(t.schedule.as_str()).or_insert(t.state);
            *w = (*w).max(t.state);
            if let Some(s) = t.last.as_ref().and_then(|l| l.last_success) {
                let e = success.entry(t.schedule.as_str()).or_insert(s);
                *e = e.max(s);
            }
        }
        self.schedule_state.clear();
        self.schedule_last_success.clear();
        if worst.len() > MAX_LABELLED_SCHEDULES {
            return;
        }
        for (schedule, state) in worst {
            self.schedule_state
                .get_or_create(&ScheduleStateLabels {
                    schedule: schedule.to_string(),
                    state: state.as_str(),
                })
                .set(1);
        }
        for (schedule, at) in success {
            self.schedule_last_success
                .get_or_create(&ScheduleLabels {
                    schedule: schedule.to_string(),
                })
                .set(at);
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let last = self.last_success_ms.load(Ordering::Relaxed);
        let since = if last == 0 {
            -1.0
        } else {
            // Milliseconds to seconds; precision loss is irrelevant at these magnitudes.
            #[allow(clippy::cast_precision_loss)]
            let s = (chrono::Utc::now().timestamp_millis() - last) as f64 / 1000.0;
            s
        };
        self.since_success.set(since);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric() {
        let m = Metrics::new();
        m.reconciled(crate::daemon::events::Result::Applied, 0.02);
        m.succeeded("prod", "abc");
        m.succeeded("prod", "def");
        m.webhook("github", "accepted");
        m.fetched(0.01, false);
        m.set_leader(true);
        m.drift(3);
        let text = m.render();
        for needle in [
            "celeroot_reconciles_total{result=\"applied\"} 1",
            "celeroot_reconcile_duration_seconds_bucket",
            "celeroot_applied_revision_info{revision=\"def\",cluster=\"prod\"} 1",
            "celeroot_seconds_since_last_successful_reconcile ",
            "celeroot_drift_objects 3",
            "celeroot_leader 1",
            "celeroot_git_fetch_duration_seconds_count 1",
            "celeroot_git_fetch_errors_total 1",
            "celeroot_webhook_requests_total{provider=\"github\",result=\"accepted\"} 1",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        assert!(
            !text.contains("revision=\"abc\""),
            "the previous revision's info series is dropped"
        );
    }
}
