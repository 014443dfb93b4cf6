//! Drift: what no longer matches git, in three classes, and the status overview.
//!
//! 1. live vs applied: keys edited or deleted out of band (their value no longer has the
//!    digest celeroot recorded), objects whose stored hash does not match, and unknown keys
//!    under the cluster prefix;
//! 2. actual vs live: hosts with no or a stale heartbeat, hosts heartbeating that are not
//!    in git, hosts running another release or consuming other queues;
//! 3. desired vs live: changes in git not yet applied.
//!
//! Must not know: YAML, argument parsing, or output formats.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::plan::{self, Plan};
use crate::state::{self, heartbeat::HEARTBEAT_TTL_SECS, Heartbeat, KeyValue, StateError, Store};
use crate::Compiled;

/// Why a live key differs from what celeroot wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KeyDriftKind {
    Edited,
    Deleted,
    Unknown,
    ObjectEdited,
    ForeignDigest,
}

/// Why a host's reported state differs from the live configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HostDriftKind {
    NoHeartbeat,
    StaleHeartbeat,
    Unmanaged,
    /// It runs another release than its configuration names.
    WrongRelease,
    /// Its worker consumes other queues than configured.
    WrongQueues,
    /// No worker runs (stopped, restarting), or it does not answer `celery inspect ping`.
    WorkerDown,
    /// The worker keeps dying (five exits within a minute).
    CrashLooping,
    /// The worker's broker does not answer with the worker's credentials.
    BrokerUnreachable,
    /// The heartbeat carries no worker check (an agent from before issue 16).
    Unverified,
    NotDeployed,
    ModifiedFiles,
}

/// What fixes a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub enum Fix {
    #[serde(rename = "reconcile")]
    Reconcile,
    #[serde(rename = "reconcile --sweep")]
    Sweep,
    #[serde(rename = "agent")]
    Agent,
    #[serde(rename = "deploy")]
    Deploy,
    #[serde(rename = "git")]
    Git,
    #[serde(rename = "celeroot beat")]
    Beat,
}

macro_rules! display_as_serde {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let v = serde_json::to_value(self).unwrap_or_default();
                f.write_str(v.as_str().unwrap_or_default())
            }
        }
    )*};
}
display_as_serde!(KeyDriftKind, HostDriftKind, BeatFindingKind, Fix);

/// What is wrong with the cluster's Celery Beat (a health finding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BeatFindingKind {
    /// No beat runs: no `celeroot beat` heartbeat, and nobody holds RedBeat's lock.
    BeatMissing,
    /// `celeroot beat` instances run, but none holds the lock (a failover in progress, or
    /// all of them restarting or crash-looping).
    BeatInactive,
}

/// The cluster's beat does not send the schedules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BeatFinding {
    pub kind: BeatFindingKind,
    pub detail: String,
    /// `celeroot beat`.
    pub fixed_by: Fix,
}

/// Whether someone sends the schedules: RedBeat's lock is held (by a `celeroot beat`, or
/// by a beat celeroot does not supervise). `beats` are the live beat heartbeats.
pub fn beat_health(
    beats: &[state::BeatHeartbeat],
    lock_ttl_ms: Option<u64>,
) -> Option<BeatFinding> {
    if lock_ttl_ms.is_some() {
        return None;
    }
    let live: Vec<&state::BeatHeartbeat> = beats.iter().filter(|b| b.status != "stopped").collect();
    Some(if live.is_empty() {
        BeatFinding {
            kind: BeatFindingKind::BeatMissing,
            detail: "no beat is running (no `celeroot beat` heartbeat, RedBeat's lock is free): schedules do not fire".into(),
            fixed_by: Fix::Beat,
        }
    } else {
        BeatFinding {
            kind: BeatFindingKind::BeatInactive,
            detail: format!(
                "no beat holds RedBeat's lock ({}): schedules do not fire until one does",
                live.iter()
                    .map(|b| format!("{} {}", b.id, b.status))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            fixed_by: Fix::Beat,
        }
    })
}

/// The beat's health, read only when `state` has an enabled schedule (without one, no
/// beat is needed): the finding, the beats' heartbeats, and the lock's time left.
///
/// # Errors
/// Redis errors.
pub fn check_beat(
    store: &mut Store,
    state: &crate::desired::DesiredState,
) -> Result<BeatCheck, StateError> {
    if !state.schedules.values().any(|s| s.enabled) {
        return Ok(BeatCheck::default());
    }
    let lock_ttl_ms = store.redbeat_lock_ttl()?;
    let beats = store.beat_heartbeats()?;
    Ok(BeatCheck {
        finding: beat_health(&beats, lock_ttl_ms),
        needed: true,
        beats,
        lock_ttl_ms,
    })
}

/// What [`check_beat`] found.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BeatCheck {
    /// An enabled schedule exists, so a beat is needed (false: nothing was read).
    pub needed: bool,
    pub finding: Option<BeatFinding>,
    pub beats: Vec<state::BeatHeartbeat>,
    pub lock_ttl_ms: Option<u64>,
}

/// One live key (class 1) that differs from what celeroot wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyDrift {
    pub key: String,
    pub kind: KeyDriftKind,
    pub detail: String,
    /// What fixes it: `reconcile`, or `reconcile --sweep` for unknown keys.
    pub fixed_by: Fix,
}

/// One host (class 2) whose reported state differs from the live configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostDrift {
    pub host: String,
    pub kind: HostDriftKind,
    pub detail: String,
    /// What fixes it: `agent`, `deploy`, or `git` (add the host, or stop its agent).
    pub fixed_by: Fix,
}

/// The drift report.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftReport {
    /// Version of this JSON structure (docs/cli.md).
    pub format_version: u32,
    pub cluster: String,
    pub applied_revision: Option<String>,
    pub target: crate::render::RevisionInfo,
    pub live: Vec<KeyDrift>,
    pub hosts: Vec<HostDrift>,
    /// The cluster's beat, when it does not send the schedules (a health finding).
    pub beat: Option<BeatFinding>,
    /// Changes in git not yet applied (the plan from live to the target revision).
    pub pending: Plan,
}

impl DriftReport {
    pub fn in_sync(&self) -> bool {
        self.live.is_empty()
            && self.hosts.is_empty()
            && self.beat.is_none()
            && self.pending.is_empty()
    }
}

fn now_unix(now: chrono::DateTime<chrono::Utc>) -> u64 {
    u64::try_from(now.timestamp()).unwrap_or(0)
}

/// Compares live, actual and desired state.
///
/// # Errors
/// Redis errors.
pub fn detect(
    store: &mut Store,
    target: &Compiled,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<DriftReport, StateError> {
    let keys = store.keys().clone();
    let live_plan = plan::against_live(store, &target.state, now)?;
    let applied_revision = live_plan.applied_revision();
    let plan::LivePlan {
        plan: pending,
        observed,
        ..
    } = live_plan;
    let mut live = Vec::new();

    // Class 1: live vs what celeroot wrote.
    let digests = match observed.image.get(&keys.digests()) {
        Some(KeyValue::Hash(d)) => d.clone(),
        _ => BTreeMap::new(),
    };
    for key in &observed.foreign_digests {
        live.push(KeyDrift {
            key: key.clone(),
            kind: KeyDriftKind::ForeignDigest,
            detail: format!(
                "listed in {} but not a key celeroot owns; ignored, never written or deleted",
                keys.digests()
            ),
            fixed_by: Fix::Reconcile,
        });
    }
    for (key, digest) in &digests {
        if observed.foreign_digests.contains(key) {
            continue;
        }
        match observed.image.get(key) {
            // A key of another type is reported once, below.
            None if observed.foreign_types.contains_key(key) => {}
            None => live.push(KeyDrift {
                key: key.clone(),
                kind: KeyDriftKind::Deleted,
                detail: "deleted out of band".into(),
                fixed_by: Fix::Reconcile,
            }),
            Some(v) if !v.digest_matches(digest) => live.push(KeyDrift {
                key: key.clone(),
                kind: KeyDriftKind::Edited,
                detail: format!(
                    "edited out of band ({} differs from what celeroot wrote)",
                    v.type_name()
                ),
                fixed_by: Fix::Reconcile,
            }),
            Some(_) => {}
        }
    }
    for o in state::live_objects(&keys, &observed.image)
        .values()
        .filter(|o| !o.intact)
    {
        live.push(KeyDrift {
            key: format!("{} {}", keys.objects(), o.id),
            kind: KeyDriftKind::ObjectEdited,
            detail: format!("stored object {} does not match its hash", o.id),
            fixed_by: Fix::Reconcile,
        });
    }
    for (key, t) in &observed.foreign_types {
        live.push(KeyDrift {
            key: key.clone(),
            kind: KeyDriftKind::Edited,
            detail: format!("has type {t}, which celeroot never writes"),
            fixed_by: Fix::Reconcile,
        });
    }
    let known: BTreeSet<String> = digests
        .keys()
        .filter(|k| !observed.foreign_digests.contains(*k))
        .cloned()
        .chain(keys.fixed())
        .chain([keys.digests()])
        .collect();
    let scanned = store.scan_prefix()?;
    for key in &scanned {
        if !known.contains(key) && !keys.is_runtime(key) {
            live.push(KeyDrift {
                key: key.clone(),
                kind: KeyDriftKind::Unknown,
                detail: "under celeroot's prefix but not written by celeroot".into(),
                fixed_by: Fix::Sweep,
            });
        }
    }

    // Class 2: actual (heartbeats) vs live worker configuration.
    let workers: BTreeMap<String, BTreeMap<String, String>> = observed
        .image
        .iter()
        .filter_map(|(k, v)| {
            let host = k.strip_prefix(&format!("{}worker:", keys.prefix()))?;
            match v {
                KeyValue::Hash(m) if digests.contains_key(k) => Some((host.to_string(), m.clone())),
                _ => None,
            }
        })
        .collect();
    // The keys were scanned above: no second SCAN for unmanaged heartbeats.
    let beats = store.heartbeats_among(&workers.keys().cloned().collect(), &scanned)?;
    let now_s = now_unix(now);
    let deployed = store.deployed()?;
    let mut hosts = Vec::new();
    for (host, w) in &workers {
        hosts.extend(host_drift(host, w, beats.get(host), now_s));
        // What `celeroot deploy` last left on the host, when it recorded a deploy there.
        let want = w.get("release").filter(|r| !r.is_empty());
        let got = deployed
            .get(host)
            .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
            .map(|v| v["release"].as_str().unwrap_or_default().to_string());
        if let (Some(want), Some(got)) = (want, got) {
            if &got != want {
                hosts.push(HostDrift {
                    host: host.clone(),
                    kind: HostDriftKind::NotDeployed,
                    detail: format!(
                        "the last deploy left {} current, the live configuration wants {want}",
                        if got.is_empty() {
                            "no release"
                        } else {
                            got.as_str()
                        }
                    ),
                    fixed_by: Fix::Deploy,
                });
            }
        }
    }
    for (host, hb) in &beats {
        if !workers.contains_key(host) && hb.age(now_s) <= HEARTBEAT_TTL_SECS {
            hosts.push(HostDrift {
                host: host.clone(),
                kind: HostDriftKind::Unmanaged,
                detail: format!(
                    "heartbeating (release {:?}) but not in the live configuration",
                    hb.release
                ),
                fixed_by: Fix::Git,
            });
        }
    }

    // Health: the cluster's beat.
    let beat = check_beat(store, &target.state)?.finding;

    // Class 3: desired vs live (`pending`, planned above).
    Ok(DriftReport {
        format_version: 1,
        cluster: target.state.cluster.clone(),
        applied_revision,
        target: target.revision.clone(),
        live,
        hosts,
        beat,
        pending,
    })
}

/// Class-2 drift of one host.
fn host_drift(
    host: &str,
    w: &BTreeMap<String, String>,
    hb: Option<&Heartbeat>,
    now: u64,
) -> Vec<HostDrift> {
    let d = |kind, detail: String, fixed_by| HostDrift {
        host: host.to_string(),
        kind,
        detail,
        fixed_by,
    };
    let Some(hb) = hb else {
        return vec![d(
            HostDriftKind::NoHeartbeat,
            "no heartbeat: its agent is not running or cannot reach Redis".into(),
            Fix::Agent,
        )];
    };
    if hb.age(now) > HEARTBEAT_TTL_SECS {
        return vec![d(
            HostDriftKind::StaleHeartbeat,
            format!("last heartbeat {}s ago", hb.age(now)),
            Fix::Agent,
        )];
    }
    let mut out = Vec::new();
    let status = if hb.status.is_empty() {
        "unknown"
    } else {
        hb.status.as_str()
    };
    if hb.status == "crash-looping" {
        out.push(d(
            HostDriftKind::CrashLooping,
            format!("the worker keeps dying: {}", hb.restart_reason),
            Fix::Agent,
        ));
    } else if hb.status != "running" {
        out.push(d(
            HostDriftKind::WorkerDown,
            format!("no worker runs (status {status}): {}", hb.restart_reason),
            Fix::Agent,
        ));
    } else if matches!(hb.ping.as_str(), "no-reply" | "failed") {
        out.push(d(
            HostDriftKind::WorkerDown,
            format!(
                "the worker (pid {}) does not answer `celery inspect ping` ({})",
                hb.pid.map_or("?".to_string(), |p| p.to_string()),
                hb.ping
            ),
            Fix::Agent,
        ));
    }
    if hb.broker == "unreachable" || hb.ping == "broker-unreachable" {
        out.push(d(
            HostDriftKind::BrokerUnreachable,
            "the worker's broker does not answer with the worker's credentials (check `hosts credentials` and the network)".into(),
            Fix::Agent,
        ));
    }
    let want_release = w.get("release").cloned().unwrap_or_default();
    if !want_release.is_empty() && hb.release != want_release {
        out.push(d(
            HostDriftKind::WrongRelease,
            format!("runs release {:?}, should run {want_release:?}", hb.release),
            Fix::Deploy,
        ));
    }
    let want_queues: BTreeSet<String> = w
        .get("queues")
        .and_then(|q| serde_json::from_str(q).ok())
        .unwrap_or_default();
    let got: BTreeSet<String> = hb.queues.iter().cloned().collect();
    if got != want_queues {
        out.push(d(
            HostDriftKind::WrongQueues,
            format!(
                "consumes {}, should consume {}",
                got.into_iter().collect::<Vec<_>>().join(","),
                want_queues.into_iter().collect::<Vec<_>>().join(",")
            ),
            Fix::Agent,
        ));
    }
    if hb.modified_count > 0 {
        out.push(d(
            HostDriftKind::ModifiedFiles,
            format!(
                "{} file(s) of release {} differ from what was deployed: {}",
                hb.modified_count,
                hb.release,
                hb.modified.join(", ")
            ),
            Fix::Deploy,
        ));
    }
    if hb.status == "running" && hb.broker.is_empty() {
        out.push(d(
            HostDriftKind::Unverified,
            format!(
                "its agent ({}) does not check the worker and its broker: upgrade celeroot on the host",
                if hb.agent_version.is_empty() { "unknown version" } else { &hb.agent_version }
            ),
            Fix::Agent,
        ));
    }
    out
}

/// One row of the status host table.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostStatus {
    pub host: String,
    pub roles: Vec<String>,
    pub release: String,
    /// Seconds since the last heartbeat, when there is one.
    pub heartbeat_age: Option<u64>,
    /// `ok`, or the first drift of the host.
    pub health: String,
}

/// The status overview.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub cluster: String,
    pub redis: String,
    pub applied: BTreeMap<String, String>,
    pub target: crate::render::RevisionInfo,
    /// Objects that would change if `target` were reconciled.
    pub pending: usize,
    pub hosts: Vec<HostStatus>,
    pub events: Vec<state::StoredEvent>,
    /// The `celeroot watch` daemon holding the leader lease, if any.
    pub daemon_leader: Option<DaemonLeader>,
    /// The cluster's Celery Beat.
    pub beat: BeatCheck,
}

/// Who leads the `celeroot watch` daemons (the token is left out).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaemonLeader {
    pub holder: String,
    pub epoch: u64,
    pub since: String,
}

/// Gathers the status overview.
///
/// # Errors
/// Redis errors.
pub fn status(
    store: &mut Store,
    redis: &str,
    target: &Compiled,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Status, StateError> {
    let keys = store.keys().clone();
    let live_plan = plan::against_live(store, &target.state, now)?;
    let pending = live_plan.plan.changes.len();
    let observed = live_plan.observed;
    let workers: BTreeMap<String, BTreeMap<String, String>> = observed
        .image
        .iter()
        .filter_map(|(k, v)| match v {
            KeyValue::Hash(m) => Some((
                k.strip_prefix(&format!("{}worker:", keys.prefix()))?
                    .to_string(),
                m.clone(),
            )),
            _ => None,
        })
        .collect();
    let beats = store.heartbeats(&workers.keys().cloned().collect())?;
    let now_s = now_unix(now);
    let hosts = workers
        .iter()
        .map(|(h, w)| {
            let hb = beats.get(h);
            HostStatus {
                host: h.clone(),
                roles: w
                    .get("roles")
                    .and_then(|r| serde_json::from_str(r).ok())
                    .unwrap_or_default(),
                release: w.get("release").cloned().unwrap_or_default(),
                heartbeat_age: hb.map(|b| b.age(now_s)),
                health: host_drift(h, w, hb, now_s)
                    .first()
                    .map_or_else(|| "ok".to_string(), |d| d.kind.to_string()),
            }
        })
        .collect();
    let events = store.events(5)?;
    let daemon_leader = store.leader()?.map(|l| DaemonLeader {
        holder: l.holder,
        epoch: l.epoch,
        since: l.since,
    });
    let beat = check_beat(store, &target.state)?;
    Ok(Status {
        cluster: target.state.cluster.clone(),
        redis: redis.to_string(),
        applied: observed.applied,
        target: target.revision.clone(),
        pending,
        hosts,
        events,
        daemon_leader,
        beat,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(id: &str, status: &str) -> state::BeatHeartbeat {
        state::BeatHeartbeat {
            id: id.into(),
            status: status.into(),
            ..state::BeatHeartbeat::default()
        }
    }

    #[test]
    fn a_beat_is_healthy_when_redbeat_s_lock_is_held() {
        let kind = |b: &[state::BeatHeartbeat], lock| beat_health(b, lock).map(|f| f.kind);
        assert_eq!(kind(&[], None), Some(BeatFindingKind::BeatMissing));
        assert_eq!(
            kind(&[beat("a", "stopped")], None),
            Some(BeatFindingKind::BeatMissing)
        );
        assert_eq!(
            kind(&[beat("a", "active"), beat("b", "standby")], Some(9000)),
            None
        );
        // A beat celeroot does not supervise holds the lock: the schedules fire.
        assert_eq!(kind(&[], Some(9000)), None);
        assert_eq!(
            kind(&[beat("b", "standby")], None),
            Some(BeatFindingKind::BeatInactive)
        );
        // An "active" heartbeat without the lock: it expired under a dying beat.
        assert_eq!(
            kind(&[beat("a", "active")], None),
            Some(BeatFindingKind::BeatInactive)
        );
    }
}
