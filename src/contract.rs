//! The JSON contract: the documents of `-o json` outputs, typed (camelCase, numbers and
//! booleans as such, lists wrapped in an object with `formatVersion`), and the registry of
//! their JSON Schemas, generated from these types into `schemas/output/`
//! ([`output_schemas`]; `celeroot schema --write schemas`).
//!
//! Owns: the shape of those documents, assembled from what the stages return. Must not
//! know: Redis (it converts what the store read), git, or the command line.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{json, Value as Json};

use crate::state::{HistoryEntry, StoredEvent};

/// The version of every output document; bumped on an incompatible change.
pub const OUTPUT_FORMAT_VERSION: u32 = 1;

/// Object counts of a plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Counts {
    pub add: u64,
    pub change: u64,
    pub remove: u64,
}

impl Counts {
    /// From the `{"add":…,"change":…,"remove":…}` JSON events and the applied record
    /// keep (zeros when absent or unreadable).
    pub fn parse(text: &str) -> Counts {
        Counts::of_value(&serde_json::from_str(text).unwrap_or_default())
    }

    fn of_value(v: &Json) -> Counts {
        let n = |k: &str| v.get(k).and_then(Json::as_u64).unwrap_or(0);
        Counts {
            add: n("add"),
            change: n("change"),
            remove: n("remove"),
        }
    }
}

/// The keys an event names: drifted key names (`drift`), or a count (`restore`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum EventKeys {
    Count(u64),
    Names(Vec<String>),
}

/// One event of the stream (docs/state.md, "Events"), as every JSON output shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    /// The stream id (`<milliseconds>-<sequence>`, Redis server time).
    pub id: String,
    /// RFC 3339.
    pub ts: String,
    pub actor: String,
    /// `intentional`, `corrective`, `noop`, `failed`, `deploy`, `drift`, `restore`,
    /// `suspend`, `resume` or `sync`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// The full commit id (empty when unknown).
    pub revision: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rev: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Counts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrective_writes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drifted_keys: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<EventKeys>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taken_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_generation: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forced: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<u64>,
    /// Fields this celeroot does not know (written by a newer one), as stored.
    #[serde(flatten)]
    pub other: BTreeMap<String, String>,
}

impl EventRecord {
    pub fn of(e: &StoredEvent) -> EventRecord {
        let mut f = e.fields.clone();
        let mut take = |k: &str| f.remove(k);
        let mut r = EventRecord {
            id: e.id.clone(),
            ts: take("ts").unwrap_or_default(),
            actor: take("actor").unwrap_or_default(),
            kind: take("kind").unwrap_or_default(),
            result: take("result"),
            revision: take("revision").unwrap_or_default(),
            rev: take("rev"),
            error: take("error"),
            release: take("release"),
            taken_at: take("taken_at"),
            reason: take("reason"),
            ..EventRecord::default()
        };
        // A number that does not parse stays, as stored, among `other`.
        let mut num = |k: &str| -> Option<u64> {
            let v = f.remove(k)?;
            match v.parse() {
                Ok(n) => Some(n),
                Err(_) => {
                    f.insert(k.to_string(), v);
                    None
                }
            }
        };
        r.duration_ms = num("duration_ms");
        r.writes = num("writes");
        r.corrective_writes = num("corrective_writes");
        r.generation = num("generation");
        r.deployed = num("deployed");
        r.failed = num("failed");
        r.rolled_back = num("rolled_back");
        r.skipped = num("skipped");
        r.drifted_keys = num("drifted_keys");
        r.backup_generation = num("backup_generation");
        r.request = num("request");
        r.summary = f.remove("summary").map(|s| Counts::parse(&s));
        r.forced = f.remove("forced").map(|v| v == "true");
        r.keys = f.remove("keys").map(|v| {
            if r.kind == "drift" {
                EventKeys::Names(v.split_whitespace().map(String::from).collect())
            } else {
                v.parse()
                    .map_or_else(|_| EventKeys::Names(vec![v]), EventKeys::Count)
            }
        });
        r.other = f;
        r
    }
}

/// `celeroot events -o json`: one of these per line (JSON lines).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventLine {
    pub format_version: u32,
    #[serde(flatten)]
    pub event: EventRecord,
}

/// `celeroot audit export -o json`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditExport {
    pub format_version: u32,
    pub cluster: String,
    /// RFC 3339; absent: from the first event kept.
    pub since: Option<String>,
    /// RFC 3339; absent: until now.
    pub until: Option<String>,
    /// Oldest first.
    pub events: Vec<EventRecord>,
}

/// One applied revision.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryRecord {
    pub revision: String,
    /// What the operator asked for (`HEAD`, a branch).
    pub rev: String,
    pub subject: String,
    /// RFC 3339.
    pub applied_at: String,
    pub actor: String,
    pub summary: Counts,
    pub generation: u64,
}

impl HistoryRecord {
    pub fn of(h: &HistoryEntry) -> HistoryRecord {
        HistoryRecord {
            revision: h.revision.clone(),
            rev: h.rev.clone(),
            subject: h.subject.clone(),
            applied_at: h.applied_at.clone(),
            actor: h.actor.clone(),
            summary: Counts::of_value(&h.summary),
            generation: h.generation,
        }
    }
}

/// `celeroot history -o json`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct History {
    pub format_version: u32,
    pub cluster: String,
    /// Newest first.
    pub revisions: Vec<HistoryRecord>,
}

/// The applied-revision record (`applied` in Redis), typed.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedRecord {
    pub revision: String,
    pub rev: String,
    pub subject: String,
    /// RFC 3339.
    pub applied_at: String,
    pub actor: String,
    /// The worker release it ships (absent: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    pub summary: Counts,
    pub generation: u64,
    /// The event stream's retention, when the Cluster sets one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_keep: Option<u64>,
    /// Fields this celeroot does not know, as stored.
    #[serde(flatten)]
    pub other: BTreeMap<String, String>,
}

impl AppliedRecord {
    /// `None` when nothing was applied (no `revision`).
    pub fn of(fields: &BTreeMap<String, String>) -> Option<AppliedRecord> {
        let mut f = fields.clone();
        let revision = f.remove("revision")?;
        let mut take = |k: &str| f.remove(k).unwrap_or_default();
        let mut r = AppliedRecord {
            revision,
            rev: take("rev"),
            subject: take("subject"),
            applied_at: take("applied_at"),
            actor: take("actor"),
            ..AppliedRecord::default()
        };
        r.release = f.remove("release").filter(|s| !s.is_empty());
        r.summary = Counts::parse(&f.remove("summary").unwrap_or_default());
        r.generation = f
            .remove("generation")
            .and_then(|g| g.parse().ok())
            .unwrap_or(0);
        r.events_keep = f.remove("events_keep").and_then(|k| k.parse().ok());
        r.other = f;
        Some(r)
    }
}

/// `celeroot health -o json`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthDoc {
    pub format_version: u32,
    pub cluster: String,
    /// No target is late, missed, failed or stuck, and a collector listens.
    pub healthy: bool,
    /// Targets per run-health state.
    pub counts: BTreeMap<String, u64>,
    pub targets: Vec<crate::runs::expect::TargetHealth>,
}

impl HealthDoc {
    pub fn of(
        cluster: &str,
        healthy: bool,
        targets: Vec<crate::runs::expect::TargetHealth>,
    ) -> HealthDoc {
        HealthDoc {
            format_version: OUTPUT_FORMAT_VERSION,
            cluster: cluster.to_string(),
            healthy,
            counts: crate::runs::expect::counts(&targets)
                .into_iter()
                .map(|(k, n)| (k.as_str().to_string(), n as u64))
                .collect(),
            targets,
        }
    }
}

/// `celeroot runs -o json`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunsDoc {
    pub format_version: u32,
    pub cluster: String,
    /// Newest first.
    pub runs: Vec<crate::state::runs::Run>,
}

/// `celeroot beat status -o json`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BeatStatusDoc {
    pub format_version: u32,
    pub cluster: String,
    pub healthy: bool,
    pub finding: Option<crate::drift::BeatFinding>,
    /// Milliseconds left on RedBeat's lock (null: nobody holds it).
    pub lock_ttl_ms: Option<u64>,
    pub beats: Vec<crate::state::BeatHeartbeat>,
}

/// `celeroot beat --dry-run -o json`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForecastDoc {
    pub format_version: u32,
    #[serde(flatten)]
    pub forecast: crate::beat::forecast::Forecast,
}

/// `celeroot hosts test-connection -o json`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbesDoc {
    pub format_version: u32,
    pub hosts: Vec<crate::deploy::Probe>,
}

/// `celeroot hosts|roles|schedules ls -o json` and `config show -o json`: the manifests.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestList {
    pub format_version: u32,
    /// Each a manifest (schemas/manifest.json).
    pub items: Vec<Json>,
}

/// The draft 2020-12 schema of `T`, with a title and description.
pub fn schema_of<T: JsonSchema>(title: &str, description: &str) -> Json {
    // Described as serialised: fields skipped when empty are optional.
    let settings = schemars::generate::SchemaSettings::draft2020_12().for_serialize();
    let schema = schemars::SchemaGenerator::new(settings).into_root_schema_for::<T>();
    let mut v = serde_json::to_value(schema).unwrap_or(Json::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("title".into(), json!(title));
        o.insert("description".into(), json!(description));
    }
    v
}

/// The schedules part of `status`: targets per run-health state, and the problems.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSummary {
    pub counts: BTreeMap<String, u64>,
    /// Late, missed, failed and stuck targets.
    pub problems: Vec<crate::runs::expect::TargetHealth>,
}

/// `celeroot status -o json`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusDoc {
    pub format_version: u32,
    pub cluster: String,
    /// The Redis URL, without its password.
    pub redis: String,
    /// The applied revision (null: nothing applied yet).
    pub applied: Option<AppliedRecord>,
    /// The revision `pending` is counted against.
    pub target: crate::render::RevisionInfo,
    /// Objects that would change if `target` were reconciled.
    pub pending: u64,
    pub hosts: Vec<crate::drift::HostStatus>,
    /// The newest events, newest first.
    pub events: Vec<EventRecord>,
    /// The `celeroot watch` daemon holding the leader lease (null: none).
    pub daemon_leader: Option<crate::drift::DaemonLeader>,
    /// Set while the daemons are suspended (`celeroot suspend`).
    pub suspended: Option<crate::state::Suspension>,
    pub beat: crate::drift::BeatCheck,
    pub schedules: ScheduleSummary,
}

impl StatusDoc {
    pub fn of(
        st: &crate::drift::Status,
        runs: &[crate::runs::expect::TargetHealth],
        suspended: Option<crate::state::Suspension>,
    ) -> StatusDoc {
        StatusDoc {
            format_version: OUTPUT_FORMAT_VERSION,
            cluster: st.cluster.clone(),
            redis: st.redis.clone(),
            applied: AppliedRecord::of(&st.applied),
            target: st.target.clone(),
            pending: st.pending as u64,
            hosts: st.hosts.clone(),
            events: st.events.iter().map(EventRecord::of).collect(),
            daemon_leader: st.daemon_leader.clone(),
            suspended,
            beat: st.beat.clone(),
            schedules: ScheduleSummary {
                counts: crate::runs::expect::counts(runs)
                    .into_iter()
                    .map(|(k, n)| (k.as_str().to_string(), n as u64))
                    .collect(),
                problems: runs
                    .iter()
                    .filter(|t| t.state.is_problem())
                    .cloned()
                    .collect(),
            },
        }
    }
}

/// Every output document with a schema, as `(file name, schema)`, in the layout of
/// `schemas/output/`.
pub fn output_schemas() -> Vec<(String, Json)> {
    vec![
        (
            "plan.json".into(),
            schema_of::<crate::render::JsonPlan<'static>>(
                "celeroot diff -o json",
                "A plan: what reconciling `to` over `from` would change.",
            ),
        ),
        (
            "reconcile.json".into(),
            schema_of::<crate::apply::Outcome>(
                "celeroot reconcile -o json",
                "What a reconcile (or rollback) did, or would do with --dry-run.",
            ),
        ),
        (
            "drift.json".into(),
            schema_of::<crate::drift::DriftReport>(
                "celeroot drift -o json",
                "How the live state differs from git.",
            ),
        ),
        (
            "deploy.json".into(),
            schema_of::<crate::deploy::Report>(
                "celeroot deploy -o json",
                "A rollout of a release to hosts.",
            ),
        ),
        (
            "health.json".into(),
            schema_of::<HealthDoc>(
                "celeroot health -o json",
                "The schedules' run health, per target.",
            ),
        ),
        (
            "runs.json".into(),
            schema_of::<RunsDoc>("celeroot runs -o json", "Recorded runs of schedules."),
        ),
        (
            "beat-status.json".into(),
            schema_of::<BeatStatusDoc>(
                "celeroot beat status -o json",
                "The cluster's Celery Beat instances and RedBeat's lock.",
            ),
        ),
        (
            "beat-forecast.json".into(),
            schema_of::<ForecastDoc>(
                "celeroot beat --dry-run -o json",
                "What beat would send, per queue.",
            ),
        ),
        (
            "test-connection.json".into(),
            schema_of::<ProbesDoc>(
                "celeroot hosts test-connection -o json",
                "Whether each host answers over SSH, and what it runs.",
            ),
        ),
        (
            "manifests.json".into(),
            schema_of::<ManifestList>(
                "celeroot hosts ls -o json",
                "Manifests listed by the editing commands.",
            ),
        ),
        (
            "status.json".into(),
            schema_of::<StatusDoc>(
                "celeroot status -o json",
                "The live state of a cluster at a glance.",
            ),
        ),
        (
            "events.json".into(),
            schema_of::<EventLine>(
                "celeroot events -o json",
                "One line of `celeroot events -o json` (JSON lines).",
            ),
        ),
        (
            "audit-export.json".into(),
            schema_of::<AuditExport>(
                "celeroot audit export -o json",
                "The event stream between two times.",
            ),
        ),
        (
            "history.json".into(),
            schema_of::<History>(
                "celeroot history -o json",
                "The applied revisions, newest first.",
            ),
        ),
    ]
}

/// [`output_schemas`] as the files of `schemas/output/`: `(file name, pretty JSON)`.
pub fn output_schema_files() -> Vec<(String, String)> {
    output_schemas()
        .into_iter()
        .map(|(name, mut v)| {
            if let Some(o) = v.as_object_mut() {
                o.insert(
                    "$schema".into(),
                    json!("https://json-schema.org/draft/2020-12/schema"),
                );
            }
            (name, crate::manifest::schema::pretty(&v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_typed() {
        let e = StoredEvent {
            id: "1-0".into(),
            fields: BTreeMap::from([
                ("kind".to_string(), "intentional".to_string()),
                ("writes".to_string(), "12".to_string()),
                (
                    "summary".to_string(),
                    r#"{"add":1,"change":2,"remove":0}"#.to_string(),
                ),
                ("future_field".to_string(), "x".to_string()),
                ("generation".to_string(), "not a number".to_string()),
            ]),
        };
        let v = serde_json::to_value(EventRecord::of(&e)).unwrap_or_default();
        assert_eq!(v["writes"], 12);
        assert_eq!(v["summary"]["change"], 2);
        assert_eq!(
            v["futureField"],
            Json::Null,
            "unknown fields keep their name"
        );
        assert_eq!(v["future_field"], "x");
        assert_eq!(v["generation"], "not a number");
    }
}
