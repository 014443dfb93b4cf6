//! Run history in Redis (docs/state.md, "Run history"): the records the collector writes
//! from Celery's task events, and the reads of `celeroot runs`, `status` and the
//! expectations.
//!
//! Per schedule target (RedBeat entry `<schedule>.<host|role>.<name>`):
//! - `runs:<entry>`: sorted set, task id → fire time;
//! - `runs:<entry>:records`: hash, task id → the run's JSON ([`Run`]).
//!
//! Per cluster: `runs::latest` (entry → [`Latest`]), `runs::index` (task id → fire time)
//! and `runs::entry` (task id → entry), so `celeroot task status ID` finds a run.
//! One Lua script merges an event into its run and trims to the Cluster's `runHistory`
//! (the last `keep` runs per target, none older than `maxAge`), in the same step: the
//! history never grows past its bounds.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::store::Store;
use super::StateError;
use crate::desired::RunRetention;

/// Seconds since the epoch, as run records count time.
pub fn epoch_secs(t: chrono::DateTime<chrono::Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// What celeroot puts in the `root_id` of every task a schedule's RedBeat entry sends:
/// `celeroot:<entry>`. Celery copies `root_id` into the message headers and into the
/// `task-sent` and `task-received` events (custom headers reach neither), and a task's
/// subtasks inherit it, so the run collector tells a schedule's runs from all other
/// traffic by this field alone.
pub const SCHEDULE_ROOT_PREFIX: &str = "celeroot:";

/// The `root_id` of the tasks RedBeat entry `entry` sends.
pub fn schedule_root_id(entry: &str) -> String {
    format!("{SCHEDULE_ROOT_PREFIX}{entry}")
}

/// The RedBeat entry a `root_id` names, when it is one of [`schedule_root_id`]'s.
pub fn entry_of_root_id(root_id: &str) -> Option<&str> {
    root_id
        .strip_prefix(SCHEDULE_ROOT_PREFIX)
        .filter(|e| EntryName::parse(e).is_some())
}

/// Ids removed by one script call at most (a lowered `runHistory` converges over the next
/// events instead of blocking the server).
const TRIM_BATCH: usize = 1000;

const RECORD_RUN: &str = include_str!("scripts/record_run.lua");

/// How long a collector's presence lasts unless renewed ([`Store::collector_alive`]).
pub const COLLECTOR_TTL_SECS: f64 = 30.0;

/// Characters of an exception's message kept in a run record.
pub const MESSAGE_EXCERPT: usize = 200;

/// One run: one task a schedule's RedBeat entry sent, as its events told it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// The Celery task id.
    pub id: String,
    pub schedule: String,
    /// `host/<name>` or `role/<name>`: where the schedule sent it.
    pub target: String,
    pub task: String,
    /// `sent`, `received`, `started`, `retried`, `succeeded`, `failed`, `revoked`, `rejected`.
    pub state: String,
    /// When the run began (seconds since the epoch): sent by beat, or else received.
    pub fired: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<f64>,
    /// The celeroot host whose worker took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// That worker's Celery node name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Seconds the task ran (the worker's measure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<f64>,
    #[serde(default)]
    pub retries: u64,
    /// The exception's type (`RuntimeError`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
    /// The start of the exception's message, at most [`MESSAGE_EXCERPT`] characters,
    /// with URL passwords masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Size in bytes of the result's `repr()` as the worker reported it (Celery cuts that
    /// at 1 KiB, `resultrepr_maxsize`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_size: Option<u64>,
    /// `task-revoked` because the task expired (`options.expires`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expired: bool,
}

impl Run {
    /// Seconds from the fire to the end (or to `now` while it runs).
    pub fn duration(&self, now: f64) -> Option<f64> {
        let start = self.started.or(self.received)?;
        Some((self.finished.unwrap_or(now) - start).max(0.0))
    }
}

/// Whether a run state is final.
pub fn is_terminal(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "revoked" | "rejected")
}

/// The latest run of one schedule target and when it last succeeded (the `runs::latest`
/// hash; what `status`, `schedules ls` and the expectations read).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Latest {
    pub id: String,
    pub state: String,
    pub fired: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// When a run of this target last succeeded (its end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<f64>,
    /// When the newest run of this target that started was fired (the due time the
    /// expectations count from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_started: Option<f64>,
}

/// The run-history entry of a check-in (`external: true`): `<schedule>.check.<schedule>`
/// (no RedBeat entry has it: those are `.host.` or `.role.`).
pub fn check_entry(schedule: &str) -> String {
    format!("{schedule}.check.{schedule}")
}

fn is_check(entry: &str) -> bool {
    EntryName::parse(entry).is_some_and(|n| n.kind == "check")
}

/// A RedBeat entry name split: `<schedule>.<host|role>.<name>` (or a check-in's
/// `<schedule>.check.<schedule>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryName<'a> {
    pub schedule: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
}

impl<'a> EntryName<'a> {
    /// Splits an entry name (schedule, host and role names are RFC 1123 labels, so the
    /// first two dots separate the parts).
    pub fn parse(entry: &'a str) -> Option<EntryName<'a>> {
        let (schedule, rest) = entry.split_once('.')?;
        let (kind, name) = rest.split_once('.')?;
        if schedule.is_empty() || name.is_empty() || !matches!(kind, "host" | "role" | "check") {
            return None;
        }
        Some(EntryName {
            schedule,
            kind,
            name,
        })
    }

    /// `host/<name>` or `role/<name>`.
    pub fn target(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

/// What one event changes in a run record: the fields the store's script merges
/// (docs/state.md, "Run history").
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunUpdate {
    pub id: String,
    pub entry: String,
    pub kind: &'static str,
    pub timestamp: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_size: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub expired: bool,
}

/// One collector's presence (`runs::collectors`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct CollectorInfo {
    since: f64,
    seen: f64,
}

impl Store {
    /// Merges each update into its run and trims that target's history to `retention`
    /// (one pipelined round trip of script calls). Updates whose run was never opened
    /// (by a `sent` or `received` event) are ignored by the script.
    ///
    /// # Errors
    /// [`StateError::Redis`] when the server fails.
    pub fn record_runs(
        &mut self,
        updates: &[RunUpdate],
        retention: RunRetention,
        now: f64,
    ) -> Result<(), StateError> {
        if updates.is_empty() {
            return Ok(());
        }
        let script = redis::Script::new(RECORD_RUN);
        let keys = self.keys().clone();
        let build = || {
            let mut pipe = redis::pipe();
            for u in updates {
                let json = serde_json::to_string(u).unwrap_or_default();
                pipe.cmd("EVALSHA")
                    .arg(script.get_hash())
                    .arg(5)
                    .arg(keys.runs(&u.entry))
                    .arg(keys.run_records(&u.entry))
                    .arg(keys.runs_index())
                    .arg(keys.runs_entry())
                    .arg(keys.runs_latest())
                    .arg(json)
                    .arg(retention.keep)
                    .arg(retention.max_age_secs)
                    .arg(now)
                    .arg(TRIM_BATCH)
                    .ignore();
            }
            pipe
        };
        match self.query_pipe::<()>(&build()) {
            Err(StateError::Redis(e)) if e.to_ascii_lowercase().contains("noscript") => {
                self.query::<String>(redis::cmd("SCRIPT").arg("LOAD").arg(RECORD_RUN))?;
                self.query_pipe::<()>(&build())
            }
            other => other,
        }
    }

    /// The applied Cluster's `runHistory` (defaults when nothing is applied).
    ///
    /// # Errors
    /// [`StateError::Redis`] when the server fails.
    pub fn run_retention(&mut self) -> Result<RunRetention, StateError> {
        Ok(RunRetention::of_cluster_spec(&self.applied_cluster_spec()?))
    }

    /// The applied Cluster object's normalized `spec` (`null` when nothing is applied).
    ///
    /// # Errors
    /// [`StateError::Redis`] when the server fails.
    pub fn applied_cluster_spec(&mut self) -> Result<serde_json::Value, StateError> {
        let field = format!("Cluster/{}", self.cluster());
        let k = self.keys().objects();
        let raw: Option<String> = self.query(redis::cmd("HGET").arg(k).arg(field))?;
        let v: serde_json::Value = raw
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default();
        Ok(v["object"]["spec"].clone())
    }

    /// What each alert channel was last told about each target
    /// (`<channel>|<schedule>|<target>` → the problem state it was told).
    ///
    /// # Errors
    /// [`StateError::Redis`] when the server fails.
    pub fn alert_state(&mut self) -> Result<BTreeMap<String, String>, StateError> {
        let k = self.keys().runs_alerts();
        self.query(redis::cmd("HGETALL").arg(k))
    }

    /// Records what a channel was told: a problem state, or `None` after a resolve.
    ///
    /// # Errors
    /// [`StateError::Redis`] when the server fails.
    pub fn set_alert_state(&mut self, key: &str, state: Option<&str>) -> Result<(), StateError> {
        let k = self.keys().runs_alerts();
        match state {
            Some(s) => self.query(redis::cmd("HSET").arg(k).arg(key).arg(s)),
            None => self.query(redis::cmd("HDEL").arg(k).arg(key)),
        }
    }

    /// Forgets what channels were told about targets or channels that no longer exist.
    ///
    /// # Errors
    /// [`StateError::Redis`] when the server fails.
    pub fn forget_alert_state(&mut self, keys: &[String]) -> Result<(), StateError> {
        if keys.is_empty() {
            return Ok(());
        }
        let k = self.keys().runs_alerts();
        self.query(redis::cmd("HDEL").arg(k).arg(keys))
    }

    /// Says that collector `id` has seen every event since `since` (its subscription's
    /// start), and forgets collectors silent for [`COLLECTOR_TTL_SECS`].
    ///
    /// # Errors
    /// [`StateError::Redis`] when the server fails.
    pub fn collector_alive(&mut self, id: &str, since: f64, now: f64) -> Result<(), StateError> {
        let k = self.keys().runs_collectors();
        let all: BTreeMap<String, String> = self.query(redis::cmd("HGETALL").arg(&k))?;
        let stale: Vec<&String> = all
            .iter()
            .filter(|(c, v)| {
                *c != id
                    && serde_json::from_str::<CollectorInfo>(v)
                        .map_or(true, |i| now - i.seen > COLLECTOR_TTL_SECS)
            })
            .map(|(c, _)| c)
            .collect();
        let mut pipe = redis::pipe();
        if !stale.is_empty() {
            pipe.cmd("HDEL").arg(&k).arg(&stale).ignore();
        }
        let info = serde_json::to_string(&CollectorInfo { since, seen: now }).unwrap_or_default();
        pipe.cmd("HSET").arg(&k).arg(id).arg(info).ignore();
        self.query_pipe(&pipe)
    }

    /// Since when some live collector has seen every event: the earliest start among
    /// collectors seen within [`COLLECTOR_TTL_SECS`]; `None` when none runs.
    ///
    /// # Errors
    /// [`StateError::Redis`] when the server fails.
    pub fn collected_since(&mut self, now: f64) -> Result<Option<f64>, StateError> {
        let k = self.keys().runs_collectors();
        let all: BTreeMap<String, String> = self.query(redis::cmd("HGETALL").arg(&k))?;
        Ok(all
            .values()
            .filter_map(|v| serde_json::from_str::<CollectorInfo>(v).ok())
            .filter(|i| now - i.seen <= COLLECTOR_TTL_SECS)
            .map(|i| i.since)
            .reduce(f64::min))
    }

    /// The names of the RedBeat entries reconcile wrote (members of RedBeat's index).
    ///
    /// # Errors
    /// [`StateError::Redis`] when the server fails.
    pub fn redbeat_entry_names(&mut self) -> Result<BTreeSet<String>, StateError> {
        let keys = self.keys().clone();
        let members: Vec<String> = self.query(
            redis::cmd("ZRANGE")
                .arg(keys.redbeat_schedule())
                .arg(0)
                .arg(-1),
        )?;
        let prefix = keys.redbeat_prefix();
        Ok(members
            .iter()
            .filter_map(|m| m.strip_prefix(&prefix).map(str::to_string))
            .collect())
    }

    /// Records when a collector first saw each of `live` (the schedule targets in RedBeat's
    /// index) and forgets targets no longer there: the expectations count due times only
    /// from then (a new schedule is not late for fires before it existed).
    ///
    /// # Errors
    /// [`StateError::Redis`] when the server fails.
    pub fn watch_entries(&mut self, live: &BTreeSet<String>, now: f64) -> Result<(), StateError> {
        let k = self.keys().runs_watch();
        let known: BTreeSet<String> = self.query(redis::cmd("HKEYS").arg(&k))?;
        let mut pipe = redis::pipe();
        let mut any = false;
        for e in live.difference(&known) {
            pipe.cmd("HSETNX").arg(&k).arg(e).arg(now).ignore();
            any = true;
        }
        let gone: Vec<&String> = known.difference(live).filter(|f| !is_check(f)).collect();
        if !gone.is_empty() {
            pipe.cmd("HDEL").arg(&k).arg(&gone).ignore();
            any = true;
        }
        if any {
            self.query_pipe::<()>(&pipe)?;
        }
        Ok(())
    }

    /// When a collector first saw each schedule target ([`Store::watch_entries`]).
    ///
    /// # Errors
    /// [`StateError::Redis`] when the server fails.
    pub fn watched_since(&mut self) -> Result<BTreeMap<String, f64>, StateError> {
        let k = self.keys().runs_watch();
        let raw: BTreeMap<String, f64> = self.query(redis::cmd("HGETALL").arg(k))?;
        Ok(raw)
    }

    /// The applied Schedule objects (from the `objects` hash, by `HSCAN`: host objects
    /// are not read).
    ///
    /// # Errors
    /// [`StateError::Redis`] when the server fails.
    pub fn applied_schedules(
        &mut self,
    ) -> Result<BTreeMap<crate::manifest::ObjectId, super::LiveObject>, StateError> {
        let keys = self.keys().clone();
        let k = keys.objects();
        let mut fields = BTreeMap::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, page): (u64, Vec<(String, String)>) = self.query(
                redis::cmd("HSCAN")
                    .arg(&k)
                    .arg(cursor)
                    .arg("MATCH")
                    .arg("Schedule/*")
                    .arg("COUNT")
                    .arg(1000),
            )?;
            fields.extend(page);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let img = super::Image::from([(k, super::KeyValue::Hash(fields))]);
        Ok(super::live_objects(&keys, &img))
    }

    /// Issues a check-in token for check `name`: stores only its SHA-256 (`runs::checks`,
    /// hash → name), removes the check's earlier tokens, and starts counting its due
    /// times now (`runs::watch`, unless already counting).
    ///
    /// # Errors
    /// [`StateError::Redis`] when the server fails.
    pub fn issue_check_token(
        &mut self,
        name: &str,
        token_hash: &str,
        now: f64,
    ) -> Result<usize, StateError> {
        let k = self.keys().runs_checks();
        let all: BTreeMap<String, String> = self.query(redis::cmd("HGETALL").arg(&k))?;
        let old: Vec<&String> = all
            .iter()
            .filter(|(_, n)| *n == name)
            .map(|(h, _)| h)
            .collect();
        let mut pipe = redis::pipe();
        if !old.is_empty() {
            pipe.cmd("HDEL").arg(&k).arg(&old).ignore();
        }
        pipe.cmd("HSET").arg(&k).arg(token_hash).arg(name).ignore();
        pipe.cmd("HSETNX")
            .arg(self.keys().runs_watch())
            .arg(check_entry(name))
            .arg(now)
            .ignore();
        self.query_pipe::<()>(&pipe)?;
        Ok(old.len())
    }

    /// The check a token's SHA-256 belongs to.
    ///
    /// # Errors
    /// [`StateError::Redis`] when the server fails.
    pub fn check_of_token(&mut self, token_hash: &str) -> Result<Option<String>, StateError> {
        let k = self.keys().runs_checks();
        self.query(redis::cmd("HGET").arg(k).arg(token_hash))
    }

    /// The latest run of one target.
    ///
    /// # Errors
    /// [`StateError::Redis`] when the server fails.
    pub fn latest_run(&mut self, entry: &str) -> Result<Option<Latest>, StateError> {
        let k = self.keys().runs_latest();
        let raw: Option<String> = self.query(redis::cmd("HGET").arg(k).arg(entry))?;
        Ok(raw.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// The latest run of every schedule target that has one, by entry name.
    ///
    /// # Errors
    /// [`StateError::Redis`] when the server fails.
    pub fn latest_runs(&mut self) -> Result<BTreeMap<String, Latest>, StateError> {
        let k = self.keys().runs_latest();
        let raw: BTreeMap<String, String> = self.query(redis::cmd("HGETALL").arg(k))?;
        Ok(raw
            .into_iter()
            .filter_map(|(e, v)| Some((e, serde_json::from_str(&v).ok()?)))
            .collect())
    }

    /// Forgets the latest run of targets that no longer exist (not in `live`).
    ///
    /// # Errors
    /// [`StateError::Redis`] when the server fails.
    pub fn prune_latest_runs(&mut self, live: &BTreeSet<String>) -> Result<usize, StateError> {
        let k = self.keys().runs_latest();
        let fields: Vec<String> = self.query(redis::cmd("HKEYS").arg(&k))?;
        // Check-ins are not RedBeat entries: `forget_check_ins` prunes those.
        let gone: Vec<&String> = fields
            .iter()
            .filter(|f| !live.contains(*f) && !is_check(f))
            .collect();
        if !gone.is_empty() {
            self.query::<()>(redis::cmd("HDEL").arg(&k).arg(&gone))?;
        }
        Ok(gone.len())
    }

    /// The runs of `entries` fired at or after `since`, newest first, at most `limit` per
    /// entry and `limit` in all (one pipelined round trip for the ids, one for the records).
    ///
    /// # Errors
    /// [`StateError::Redis`] when the server fails.
    pub fn runs_of(
        &mut self,
        entries: &[String],
        since: f64,
        limit: usize,
    ) -> Result<Vec<Run>, StateError> {
        if entries.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let keys = self.keys().clone();
        let mut pipe = redis::pipe();
        for e in entries {
            pipe.cmd("ZREVRANGEBYSCORE")
                .arg(keys.runs(e))
                .arg("+inf")
                .arg(since)
                .arg("LIMIT")
                .arg(0)
                .arg(limit);
        }
        let ids: Vec<Vec<String>> = self.query_pipe(&pipe)?;
        let mut pipe = redis::pipe();
        let mut any = false;
        for (e, ids) in entries.iter().zip(&ids) {
            if !ids.is_empty() {
                pipe.cmd("HMGET").arg(keys.run_records(e)).arg(ids);
                any = true;
            }
        }
        if !any {
            return Ok(Vec::new());
        }
        let records: Vec<Vec<Option<String>>> = self.query_pipe(&pipe)?;
        let mut runs: Vec<Run> = records
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|j| serde_json::from_str(&j).ok())
            .collect();
        runs.sort_by(|a, b| b.fired.total_cmp(&a.fired).then_with(|| a.id.cmp(&b.id)));
        runs.truncate(limit);
        Ok(runs)
    }

    /// The run record of one task id, when that task was a schedule's run and is still
    /// within the history's retention.
    ///
    /// # Errors
    /// [`StateError::Redis`] when the server fails.
    pub fn run_by_id(&mut self, id: &str) -> Result<Option<Run>, StateError> {
        let k = self.keys().runs_entry();
        let entry: Option<String> = self.query(redis::cmd("HGET").arg(k).arg(id))?;
        let Some(entry) = entry else {
            return Ok(None);
        };
        let rk = self.keys().run_records(&entry);
        let raw: Option<String> = self.query(redis::cmd("HGET").arg(rk).arg(id))?;
        Ok(raw.and_then(|j| serde_json::from_str(&j).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_ids_name_entries() {
        let r = schedule_root_id("tick.host.h1");
        assert_eq!(r, "celeroot:tick.host.h1");
        assert_eq!(entry_of_root_id(&r), Some("tick.host.h1"));
        assert_eq!(entry_of_root_id("celeroot:"), None);
        assert_eq!(entry_of_root_id("celeroot:nonsense"), None);
        assert_eq!(
            entry_of_root_id("0f6c2a1e-5d7b-4c8e-9a41-3b2d1e0c9f01"),
            None
        );
    }

    #[test]
    fn entry_names_split_into_schedule_and_target() {
        let e = EntryName::parse("db-backup.host.db01").expect("parses");
        assert_eq!((e.schedule, e.kind, e.name), ("db-backup", "host", "db01"));
        assert_eq!(e.target(), "host/db01");
        assert_eq!(
            EntryName::parse("tick.role.worker").map(|e| e.target()),
            Some("role/worker".into())
        );
        for bad in ["tick", "tick.host", "tick.other.x", ".host.x", "tick.host."] {
            assert_eq!(EntryName::parse(bad), None, "{bad}");
        }
    }
}
