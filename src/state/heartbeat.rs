//! The heartbeat contract: what each host's agent writes, and how to read it.
//!
//! Key `celeroot:{<cluster>}:heartbeat:<host>`, a hash written every
//! [`HEARTBEAT_INTERVAL_SECS`] with a TTL of [`HEARTBEAT_TTL_SECS`], plus
//! `SADD celeroot:{<cluster>}:heartbeats <host>`. Fields (all strings):
//! `ts` (UNIX seconds), `release`, `queues` (JSON list), `status` (`running`,
//! `restarting`, `crash-looping`, `stopped`), `pid`, `agent_version`, `restart_reason`,
//! and from agent 0.2 on `modified` (JSON list), `modified_count`, `os`, `kernel`,
//! `python`, `uv`, `credentials` (a fingerprint of its credentials file), and since issue
//! 16 `broker`, `ping`, `ping_at` (the worker's health).
//! docs/state.md is the reference.

use std::collections::BTreeMap;

use serde::Serialize;

/// Agents write a heartbeat this often.
pub const HEARTBEAT_INTERVAL_SECS: u64 = 10;
/// A heartbeat key expires after this long; older `ts` values count as stale.
pub const HEARTBEAT_TTL_SECS: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heartbeat {
    /// UNIX seconds when written.
    pub ts: u64,
    pub release: String,
    pub queues: Vec<String>,
    pub status: String,
    pub pid: Option<u32>,
    pub agent_version: String,
    pub restart_reason: String,
    /// Host facts (`os`, `kernel`, `python`, `uv`), empty when not reported.
    pub facts: BTreeMap<String, String>,
    /// Files of the running release that differ from its checksum list (changed or
    /// missing), at most [`MODIFIED_LISTED`] of them.
    pub modified: Vec<String>,
    /// How many files differ in all (may exceed `modified.len()`).
    pub modified_count: u64,
    /// Fingerprint of the credentials file the agent and its worker run with
    /// ([`crate::state::acl::fingerprint`]), empty when there is none.
    pub credentials: String,
    /// Whether the worker's broker answers `PING` with the worker's own user: `ok` or
    /// `unreachable` (empty from agents before issue 16).
    pub broker: String,
    /// The last `celery inspect ping` of the worker: `ok`, `no-reply`,
    /// `broker-unreachable`, `failed`, or `pending` (not asked yet since it started);
    /// empty when no worker runs.
    pub ping: String,
    /// UNIX seconds of that ping.
    pub ping_at: u64,
}

/// At most this many modified files are listed in a heartbeat.
pub const MODIFIED_LISTED: usize = 20;

/// Fact fields a heartbeat may carry.
pub const FACT_FIELDS: &[&str] = &["os", "kernel", "python", "uv"];

impl Heartbeat {
    pub fn from_fields(m: &BTreeMap<String, String>) -> Heartbeat {
        let get = |k: &str| m.get(k).cloned().unwrap_or_default();
        Heartbeat {
            ts: get("ts").parse().unwrap_or(0),
            release: get("release"),
            queues: serde_json::from_str(&get("queues")).unwrap_or_default(),
            status: get("status"),
            pid: get("pid").parse().ok(),
            agent_version: get("agent_version"),
            restart_reason: get("restart_reason"),
            facts: FACT_FIELDS
                .iter()
                .filter_map(|f| m.get(*f).map(|v| (f.to_string(), v.clone())))
                .collect(),
            modified: serde_json::from_str(&get("modified")).unwrap_or_default(),
            modified_count: get("modified_count").parse().unwrap_or(0),
            credentials: get("credentials"),
            broker: get("broker"),
            ping: get("ping"),
            ping_at: get("ping_at").parse().unwrap_or(0),
        }
    }

    /// The fields to write, in the documented format.
    pub fn to_fields(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("ts".into(), self.ts.to_string()),
            ("release".into(), self.release.clone()),
            (
                "queues".into(),
                serde_json::to_string(&self.queues).unwrap_or_default(),
            ),
            ("status".into(), self.status.clone()),
            (
                "pid".into(),
                self.pid.map(|p| p.to_string()).unwrap_or_default(),
            ),
            ("agent_version".into(), self.agent_version.clone()),
            ("restart_reason".into(), self.restart_reason.clone()),
            (
                "modified".into(),
                serde_json::to_string(&self.modified).unwrap_or_default(),
            ),
            ("modified_count".into(), self.modified_count.to_string()),
            ("credentials".into(), self.credentials.clone()),
            ("broker".into(), self.broker.clone()),
            ("ping".into(), self.ping.clone()),
            ("ping_at".into(), self.ping_at.to_string()),
        ])
        .into_iter()
        .chain(self.facts.clone())
        .collect()
    }

    /// Seconds since the heartbeat was written.
    pub fn age(&self, now_unix: u64) -> u64 {
        now_unix.saturating_sub(self.ts)
    }
}
/// The heartbeat of one `celeroot beat` instance: key `celeroot:{<cluster>}:beat:<id>`,
/// a hash written every heartbeat interval with a TTL (docs/celery.md, "Beat").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BeatHeartbeat {
    /// The instance (`--id`, default `<hostname>-<pid>`).
    pub id: String,
    /// UNIX seconds when written.
    pub ts: u64,
    /// The machine it runs on.
    pub host: String,
    /// `celeroot beat`'s pid, and the supervised `celery beat`'s (empty when none runs).
    pub pid: u32,
    pub beat_pid: Option<u32>,
    /// `active` (holds RedBeat's lock and sends), `standby` (waits for the lock),
    /// `starting`, `restarting`, `crash-looping`, `stopped`.
    pub status: String,
    /// UNIX seconds since it has held the lock (0 when not active).
    pub active_since: u64,
    /// Restarts of `celery beat` since this instance started.
    pub restarts: u64,
    /// The lock timeout beat reported, and its maximum sleep between ticks, in seconds.
    pub lock_timeout: u64,
    pub max_interval: u64,
    pub version: String,
    /// Why it last restarted or stopped.
    pub reason: String,
}

impl BeatHeartbeat {
    pub fn from_fields(id: &str, m: &BTreeMap<String, String>) -> BeatHeartbeat {
        let get = |k: &str| m.get(k).cloned().unwrap_or_default();
        let num = |k: &str| get(k).parse().unwrap_or(0);
        BeatHeartbeat {
            id: id.to_string(),
            ts: num("ts"),
            host: get("host"),
            pid: get("pid").parse().unwrap_or(0),
            beat_pid: get("beat_pid").parse().ok(),
            status: get("status"),
            active_since: num("active_since"),
            restarts: num("restarts"),
            lock_timeout: num("lock_timeout"),
            max_interval: num("max_interval"),
            version: get("version"),
            reason: get("reason"),
        }
    }

    pub fn to_fields(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("ts".into(), self.ts.to_string()),
            ("host".into(), self.host.clone()),
            ("pid".into(), self.pid.to_string()),
            (
                "beat_pid".into(),
                self.beat_pid.map(|p| p.to_string()).unwrap_or_default(),
            ),
            ("status".into(), self.status.clone()),
            ("active_since".into(), self.active_since.to_string()),
            ("restarts".into(), self.restarts.to_string()),
            ("lock_timeout".into(), self.lock_timeout.to_string()),
            ("max_interval".into(), self.max_interval.to_string()),
            ("version".into(), self.version.clone()),
            ("reason".into(), self.reason.clone()),
        ])
    }
}
