//! `celeroot beat --dry-run`: what Celery Beat would send, per target queue, over a
//! window, computed from a compiled revision without a beat or a server.
//!
//! Owns: the fire times of each enabled schedule (cron in its time zone, intervals) and
//! where each firing goes (the host queues of mode `each`, the role queues of mode
//! `any`), counted and listed per queue.
//! Must not know: Redis, Celery processes, output formats.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Serialize;

use crate::desired::{DesiredState, Trigger};

/// Firings counted per schedule at most (beyond, the count says "at least").
pub const MAX_COUNTED: u64 = 100_000;
/// Fire times listed per schedule.
pub const LISTED: usize = 3;

/// What would fire between `from` and `until`.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Forecast {
    #[serde(serialize_with = "rfc3339")]
    #[schemars(with = "String")]
    pub from: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    #[schemars(with = "String")]
    pub until: DateTime<Utc>,
    /// Tasks sent in all (a capped schedule counts [`MAX_COUNTED`]).
    pub total: u64,
    pub queues: Vec<QueueForecast>,
    /// Disabled schedules: they send nothing.
    pub disabled: Vec<String>,
}

/// The firings into one queue.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueForecast {
    pub queue: String,
    /// `host:NAME` or `role:NAME`: whose queue it is.
    pub target: String,
    pub total: u64,
    pub firings: Vec<Firing>,
}

/// One schedule's firings into one queue.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Firing {
    pub schedule: String,
    pub task: String,
    /// `every 2m`, or `cron 0 3 * * * Europe/Berlin`.
    pub when: String,
    pub runs: u64,
    /// More than [`MAX_COUNTED`] runs: `runs` is a lower bound.
    pub capped: bool,
    /// The first fire times (at most [`LISTED`]).
    #[serde(serialize_with = "rfc3339_list")]
    #[schemars(with = "Vec<String>")]
    pub next: Vec<DateTime<Utc>>,
    /// When it fires nothing in the window: its first fire time after it.
    #[serde(
        serialize_with = "rfc3339_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub later: Option<DateTime<Utc>>,
}

fn rfc3339_option<S: serde::Serializer>(
    t: &Option<DateTime<Utc>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn rfc3339_list<S: serde::Serializer>(ts: &[DateTime<Utc>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        ts.iter()
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    )
}

/// The fire times of one trigger after `from` up to `until` (inclusive): the first
/// [`LISTED`], and how many in all (capped at [`MAX_COUNTED`]).
///
/// An interval fires every `N` seconds counted from `from`: a new entry's first run is
/// one interval after it was written (celeroot sets its last run), and an existing one
/// keeps the phase of its last run, which only the live entry knows.
fn fire_times(
    trigger: &Trigger,
    timezone: &str,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> (Vec<DateTime<Utc>>, u64, bool) {
    match trigger {
        Trigger::Every(secs) => {
            let secs = (*secs).max(1);
            let span = u64::try_from((until - from).num_seconds()).unwrap_or(0);
            let runs = span / secs;
            let next = (1..=runs.min(LISTED as u64))
                .filter_map(|k| {
                    i64::try_from(k * secs)
                        .ok()
                        .map(|s| from + ChronoDuration::seconds(s))
                })
                .collect();
            (next, runs.min(MAX_COUNTED), runs > MAX_COUNTED)
        }
        Trigger::Cron(ct) => {
            let Ok(tz) = timezone.parse::<chrono_tz::Tz>() else {
                return (Vec::new(), 0, false);
            };
            let mut next = Vec::new();
            let mut runs = 0u64;
            for t in ct.fire_times_after(tz, from) {
                let t = t.with_timezone(&Utc);
                if t > until {
                    break;
                }
                if runs == MAX_COUNTED {
                    return (next, runs, true);
                }
                if next.len() < LISTED {
                    next.push(t);
                }
                runs += 1;
            }
            (next, runs, false)
        }
    }
}

/// The first fire time after `until` (an interval counted from `from`).
fn first_after(
    trigger: &Trigger,
    timezone: &str,
    until: DateTime<Utc>,
    from: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match trigger {
        Trigger::Every(secs) => i64::try_from(*secs)
            .ok()
            .map(|s| from + ChronoDuration::seconds(s)),
        Trigger::Cron(ct) => {
            let tz = timezone.parse::<chrono_tz::Tz>().ok()?;
            ct.fire_times_after(tz, until)
                .next()
                .map(|t| t.with_timezone(&Utc))
        }
    }
}

/// What beat would send from `state` between `from` and `from + window`.
pub fn forecast(
    state: &DesiredState,
    from: DateTime<Utc>,
    window: std::time::Duration,
) -> Forecast {
    let until =
        from + ChronoDuration::from_std(window).unwrap_or_else(|_| ChronoDuration::days(366));
    let mut queues: BTreeMap<String, QueueForecast> = BTreeMap::new();
    let mut disabled = Vec::new();
    for (name, s) in &state.schedules {
        if !s.enabled {
            disabled.push(name.clone());
            continue;
        }
        let (next, runs, capped) = fire_times(&s.trigger, &s.timezone, from, until);
        let later = if runs == 0 {
            first_after(&s.trigger, &s.timezone, until, from)
        } else {
            None
        };
        let when = match &s.trigger {
            Trigger::Every(secs) => {
                format!("every {}", crate::manifest::values::format_duration(*secs))
            }
            Trigger::Cron(ct) => format!("cron {} {}", ct.expression(), s.timezone),
        };
        for e in &s.entries {
            let q = queues
                .entry(e.queue.clone())
                .or_insert_with(|| QueueForecast {
                    queue: e.queue.clone(),
                    target: format!("{}:{}", e.kind, e.name),
                    total: 0,
                    firings: Vec::new(),
                });
            q.total += runs;
            q.firings.push(Firing {
                schedule: name.clone(),
                task: s.task.clone(),
                when: when.clone(),
                runs,
                capped,
                next: next.clone(),
                later,
            });
        }
    }
    let queues: Vec<QueueForecast> = queues.into_values().collect();
    Forecast {
        from,
        until,
        total: queues.iter().map(|q| q.total).sum(),
        queues,
        disabled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn intervals_count_whole_periods_from_now() {
        let from = at("2026-12-01T00:00:00Z");
        let (next, runs, capped) = fire_times(
            &Trigger::Every(600),
            "UTC",
            from,
            at("2026-12-01T01:00:00Z"),
        );
        assert_eq!((runs, capped), (6, false));
        assert_eq!(
            next,
            [
                at("2026-12-01T00:10:00Z"),
                at("2026-12-01T00:20:00Z"),
                at("2026-12-01T00:30:00Z")
            ]
        );
        let (_, runs, capped) =
            fire_times(&Trigger::Every(1), "UTC", from, at("2026-12-31T00:00:00Z"));
        assert_eq!((runs, capped), (MAX_COUNTED, true));
    }

    #[test]
    fn cron_runs_in_its_time_zone() {
        let ct = crate::manifest::values::parse_cron("0 3 * * *").unwrap_or_else(|e| panic!("{e}"));
        let from = at("2026-12-01T00:00:00Z");
        // 03:00 in Berlin is 02:00 UTC in winter.
        let (next, runs, _) = fire_times(
            &Trigger::Cron(Box::new(ct)),
            "Europe/Berlin",
            from,
            at("2026-12-03T00:00:00Z"),
        );
        assert_eq!(runs, 2);
        assert_eq!(
            next,
            [at("2026-12-01T02:00:00Z"), at("2026-12-02T02:00:00Z")]
        );
    }
}
