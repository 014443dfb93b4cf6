//! Expectations: from each schedule's own calendar, whether its targets ran when they
//! should have. No second copy of the schedule is kept anywhere: the due times follow
//! from the cron expression (in its time zone, as beat reads it) or the interval.
//!
//! For one target, counting from the newest run that started (or from when a collector
//! first saw the target, or began listening: whichever is latest), the next due time `D`
//! is the first fire after it. Then, at `now`:
//! - `late` when `now ≥ D + grace` and no run has started since, `missed` when
//!   `now ≥ D + 2 × grace`;
//! - `failed` when the newest run failed (or was rejected, or revoked but not expired);
//! - `stuck` when the newest run started more than `timeout` ago and has not finished;
//! - otherwise `running`, `ok` (the newest run succeeded) or `pending` (none has run
//!   yet, and none is late); `paused` when the schedule is disabled; `unknown` when no
//!   collector listens (nothing can be told).
//!
//! The worst state wins: stuck, missed, failed, late, then the others. docs/runs.md has a
//! timeline.
//!
//! Must not know: Redis, the CLI, output formats.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::manifest::values::{parse_cron, parse_duration, parse_timezone, Crontab};
use crate::state::runs::{EntryName, Latest};
use crate::state::LiveObject;

/// Clock difference tolerated between beat's machine and the one evaluating: a run sent
/// this much before its due time still counts for it.
pub const CLOCK_SLACK_SECS: f64 = 1.0;

/// The health of one schedule target.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RunHealth {
    Ok,
    Pending,
    Running,
    Paused,
    Unknown,
    Late,
    Failed,
    Missed,
    Stuck,
}

impl RunHealth {
    pub const ALL: [RunHealth; 9] = [
        RunHealth::Ok,
        RunHealth::Pending,
        RunHealth::Running,
        RunHealth::Paused,
        RunHealth::Unknown,
        RunHealth::Late,
        RunHealth::Failed,
        RunHealth::Missed,
        RunHealth::Stuck,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunHealth::Ok => "ok",
            RunHealth::Pending => "pending",
            RunHealth::Running => "running",
            RunHealth::Paused => "paused",
            RunHealth::Unknown => "unknown",
            RunHealth::Late => "late",
            RunHealth::Failed => "failed",
            RunHealth::Missed => "missed",
            RunHealth::Stuck => "stuck",
        }
    }

    /// Late, missed, failed or stuck: what `celeroot health` exits 2 for and alerts on.
    pub fn is_problem(self) -> bool {
        matches!(
            self,
            RunHealth::Late | RunHealth::Missed | RunHealth::Failed | RunHealth::Stuck
        )
    }
}

impl std::fmt::Display for RunHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a schedule fires.
#[derive(Debug, Clone)]
pub enum When {
    Cron(Box<Crontab>, chrono_tz::Tz),
    Every(u64),
}

impl When {
    /// The first fire strictly after `t` (seconds since the epoch).
    pub fn next_after(&self, t: f64) -> Option<f64> {
        match self {
            When::Every(s) => Some(t + *s as f64),
            When::Cron(c, tz) => {
                let at = DateTime::<Utc>::from_timestamp_millis((t * 1000.0) as i64)?;
                c.fire_times_after(*tz, at)
                    .next()
                    .map(|d| d.timestamp() as f64)
            }
        }
    }
}

/// What one schedule target is expected to do.
#[derive(Debug, Clone)]
pub struct Expectation {
    pub schedule: String,
    /// The RedBeat entry name.
    pub entry: String,
    /// `host/<name>` or `role/<name>`.
    pub target: String,
    pub when: When,
    pub enabled: bool,
    pub grace_secs: u64,
    pub timeout_secs: Option<u64>,
    /// The schedule's labels (alert routes match on them).
    pub labels: BTreeMap<String, String>,
    /// A check-in: its runs are pings to the daemon, not Celery events, so no collector
    /// is needed; counting starts when its token was issued.
    pub external: bool,
}

fn labels_of(normalized: &serde_json::Value) -> BTreeMap<String, String> {
    serde_json::from_value(normalized["metadata"]["labels"].clone()).unwrap_or_default()
}

/// The expectations of the applied schedules, read back from the live objects (what
/// `celeroot health` and `status` evaluate).
pub fn from_live(objects: &BTreeMap<crate::manifest::ObjectId, LiveObject>) -> Vec<Expectation> {
    let mut out = Vec::new();
    for (id, o) in objects {
        if id.kind != crate::manifest::Kind::Schedule {
            continue;
        }
        let tree = o.object.normalized.tree();
        let spec = &tree["spec"];
        let text = |k: &str| spec[k].as_str().map(str::to_string);
        let when = match (text("cron"), text("every")) {
            (Some(c), _) => match parse_cron(&c) {
                Ok(ct) => When::Cron(
                    Box::new(ct),
                    text("timezone")
                        .and_then(|t| parse_timezone(&t).ok())
                        .unwrap_or(chrono_tz::UTC),
                ),
                Err(_) => continue,
            },
            (None, Some(e)) => match parse_duration(&e) {
                Ok(s) => When::Every(s),
                Err(_) => continue,
            },
            (None, None) => continue,
        };
        let period = match &when {
            When::Cron(c, _) => c.min_period_secs().unwrap_or(86_400),
            When::Every(s) => *s,
        };
        let grace_secs = text("grace")
            .and_then(|g| parse_duration(&g).ok())
            .unwrap_or_else(|| crate::manifest::values::default_grace_secs(period));
        let timeout_secs = text("timeout").and_then(|t| parse_duration(&t).ok());
        let enabled = spec["enabled"].as_bool().unwrap_or(true);
        let labels = labels_of(&tree);
        if spec["external"].as_bool() == Some(true) {
            out.push(Expectation {
                schedule: id.name.clone(),
                target: format!("check/{}", id.name),
                entry: crate::state::runs::check_entry(&id.name),
                when,
                enabled,
                grace_secs,
                timeout_secs,
                labels,
                external: true,
            });
            continue;
        }
        for e in &o.entries {
            let entry = crate::state::redbeat_entry_name(&id.name, e);
            out.push(Expectation {
                schedule: id.name.clone(),
                target: EntryName::parse(&entry).map_or_else(String::new, |n| n.target()),
                entry,
                when: when.clone(),
                enabled,
                grace_secs,
                timeout_secs,
                labels: labels.clone(),
                external: false,
            });
        }
    }
    out
}

/// One target's evaluated health.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetHealth {
    pub schedule: String,
    pub target: String,
    pub state: RunHealth,
    /// The due time the state is about (seconds since the epoch), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due: Option<f64>,
    /// The newest run, when one is recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<Latest>,
    pub grace_secs: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// The schedule's labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// What the evaluation reads besides the expectations.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub latest: &'a BTreeMap<String, Latest>,
    /// When a collector first saw each target.
    pub watched: &'a BTreeMap<String, f64>,
    /// Since when some live collector has listened (`None`: none listens).
    pub collecting_since: Option<f64>,
}

/// Evaluates expectations, caching each target's next due time by the instant it counts
/// from: a tick recomputes only targets whose newest started run changed (the daemon
/// keeps one evaluator; `celeroot health` uses a fresh one).
#[derive(Debug, Default)]
pub struct Evaluator {
    due: HashMap<String, (u64, Option<f64>)>,
}

impl Evaluator {
    pub fn evaluate(
        &mut self,
        expectations: &[Expectation],
        seen: Observed<'_>,
        now: f64,
    ) -> Vec<TargetHealth> {
        if self.due.len() > 2 * expectations.len() + 1024 {
            self.due.clear();
        }
        expectations
            .iter()
            .map(|x| self.one(x, seen, now))
            .collect()
    }

    fn one(&mut self, x: &Expectation, seen: Observed<'_>, now: f64) -> TargetHealth {
        let last = seen.latest.get(&x.entry);
        let health = |state: RunHealth, due: Option<f64>| TargetHealth {
            schedule: x.schedule.clone(),
            target: x.target.clone(),
            state,
            due,
            last: last.cloned(),
            grace_secs: x.grace_secs,
            timeout_secs: x.timeout_secs,
            labels: x.labels.clone(),
        };
        if !x.enabled {
            return health(RunHealth::Paused, None);
        }
        // A check-in counts from when its token was issued (pings need no collector);
        // a Celery target from when a collector listens and has seen it.
        let mut base = if x.external {
            match seen.watched.get(&x.entry) {
                Some(w) => *w,
                None => return health(RunHealth::Unknown, None),
            }
        } else {
            let Some(since) = seen.collecting_since else {
                return health(RunHealth::Unknown, None);
            };
            seen.watched.get(&x.entry).map_or(since, |w| since.max(*w))
        };
        if let Some(s) = last.and_then(|l| l.last_started) {
            base = base.max(s);
        }
        let key = (base + CLOCK_SLACK_SECS).to_bits();
        let due = match self.due.get(&x.entry) {
            Some((k, d)) if *k == key => *d,
            _ => {
                let d = x.when.next_after(base + CLOCK_SLACK_SECS);
                self.due.insert(x.entry.clone(), (key, d));
                d
            }
        };
        let grace = x.grace_secs as f64;
        let overdue = due.filter(|d| now >= d + grace);
        let running = last.filter(|l| l.state == "started" || l.state == "retried");
        let stuck = running.is_some_and(|l| {
            x.timeout_secs
                .zip(l.started)
                .is_some_and(|(t, s)| now - s > t as f64)
        });
        let failed = last.is_some_and(|l| matches!(l.state.as_str(), "failed" | "rejected"));
        if stuck {
            return health(RunHealth::Stuck, running.and_then(|l| l.started));
        }
        if let Some(d) = overdue.filter(|d| now >= d + 2.0 * grace) {
            return health(RunHealth::Missed, Some(d));
        }
        if failed {
            return health(RunHealth::Failed, last.map(|l| l.fired));
        }
        if let Some(d) = overdue {
            return health(RunHealth::Late, Some(d));
        }
        if running.is_some() {
            return health(RunHealth::Running, due);
        }
        match last {
            Some(l) if l.state == "succeeded" => health(RunHealth::Ok, due),
            _ => health(RunHealth::Pending, due),
        }
    }
}

/// How many targets are in each state (every state present, zero or not).
pub fn counts(h: &[TargetHealth]) -> BTreeMap<RunHealth, usize> {
    let mut out: BTreeMap<RunHealth, usize> = RunHealth::ALL.iter().map(|s| (*s, 0)).collect();
    for t in h {
        *out.entry(t.state).or_default() += 1;
    }
    out
}

/// `2 ok, 1 late` (the states with a count, worst last; `none` without targets).
pub fn counts_text(h: &[TargetHealth]) -> String {
    let parts: Vec<String> = counts(h)
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(secs: u64, grace: u64, timeout: Option<u64>) -> Expectation {
        Expectation {
            schedule: "tick".into(),
            entry: "tick.host.h1".into(),
            target: "host/h1".into(),
            when: When::Every(secs),
            enabled: true,
            grace_secs: grace,
            timeout_secs: timeout,
            labels: BTreeMap::new(),
            external: false,
        }
    }

    fn latest(state: &str, fired: f64, started: Option<f64>) -> Latest {
        Latest {
            id: "t1".into(),
            state: state.into(),
            fired,
            started,
            finished: None,
            host: Some("h1".into()),
            last_success: None,
            last_started: started.map(|_| fired),
        }
    }

    fn state_at(x: &Expectation, l: Option<Latest>, since: Option<f64>, now: f64) -> RunHealth {
        let latest: BTreeMap<String, Latest> =
            l.into_iter().map(|l| (x.entry.clone(), l)).collect();
        let watched = BTreeMap::new();
        let seen = Observed {
            latest: &latest,
            watched: &watched,
            collecting_since: since,
        };
        Evaluator::default().evaluate(std::slice::from_ref(x), seen, now)[0].state
    }

    /// The timeline of docs/runs.md: every 10 min, grace 2 min, last run started at 0.
    #[test]
    fn a_run_that_does_not_start_is_late_then_missed() {
        let x = every(600, 120, None);
        let ok = || Some(latest("succeeded", 0.0, Some(1.0)));
        assert_eq!(state_at(&x, ok(), Some(-100.0), 300.0), RunHealth::Ok);
        // Due at 600 (+1 s of clock slack): fine until the grace is over.
        assert_eq!(state_at(&x, ok(), Some(-100.0), 700.0), RunHealth::Ok);
        assert_eq!(state_at(&x, ok(), Some(-100.0), 722.0), RunHealth::Late);
        assert_eq!(state_at(&x, ok(), Some(-100.0), 842.0), RunHealth::Missed);
        // A run sent at 600 that no worker took does not count: still missed.
        let mut l = latest("sent", 600.0, None);
        l.last_started = Some(0.0);
        assert_eq!(
            state_at(&x, Some(l), Some(-100.0), 842.0),
            RunHealth::Missed
        );
        // It started at 605: the next due is 1200.
        assert_eq!(
            state_at(
                &x,
                Some(latest("started", 600.0, Some(605.0))),
                Some(-100.0),
                842.0
            ),
            RunHealth::Running
        );
    }

    #[test]
    fn failures_timeouts_pauses_and_missing_collectors() {
        let x = every(600, 120, Some(60));
        assert_eq!(
            state_at(
                &x,
                Some(latest("failed", 0.0, Some(1.0))),
                Some(-1.0),
                100.0
            ),
            RunHealth::Failed
        );
        assert_eq!(
            state_at(
                &x,
                Some(latest("started", 0.0, Some(1.0))),
                Some(-1.0),
                50.0
            ),
            RunHealth::Running
        );
        assert_eq!(
            state_at(
                &x,
                Some(latest("started", 0.0, Some(1.0))),
                Some(-1.0),
                62.0
            ),
            RunHealth::Stuck
        );
        assert_eq!(state_at(&x, None, None, 62.0), RunHealth::Unknown);
        // Counting starts when the collector began listening: nothing is due before.
        assert_eq!(state_at(&x, None, Some(1000.0), 1500.0), RunHealth::Pending);
        assert_eq!(state_at(&x, None, Some(1000.0), 1722.0), RunHealth::Late);
        let paused = Expectation {
            enabled: false,
            ..every(600, 120, None)
        };
        assert_eq!(state_at(&paused, None, None, 5000.0), RunHealth::Paused);
    }

    #[test]
    fn cron_due_times_follow_the_calendar_in_its_time_zone() {
        let c = parse_cron("30 2 * * *").expect("cron");
        let w = When::Cron(Box::new(c), chrono_tz::Europe::Berlin);
        // 2026-12-01 00:00 UTC → 02:30 Berlin (01:30 UTC) the same day.
        let d = w.next_after(1_796_083_200.0).expect("due");
        assert_eq!(d, 1_796_083_200.0 + 5400.0);
    }
}
