//! The audit stream's entries, typed: every event celeroot writes is one [`Event`],
//! turned into the stream's fields (docs/state.md, "Events") in one place, [`Event::fields`].
//!
//! Owns: the event kinds and their field names. Must not know: who emits them (the CLI,
//! the daemon), how they are shown.

use std::collections::BTreeMap;

use serde_json::json;

/// This machine's name: `/etc/hostname`, else `$HOSTNAME`, else `localhost`. Names the
/// actor of events and leases, and the producer of task messages.
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "localhost".into())
}

/// How a reconcile that wrote (or would have written) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
    /// A new revision, or writes beyond healing.
    Intentional,
    /// The same revision again; every write heals out-of-band drift.
    Corrective,
    /// Nothing differed.
    Noop,
}

/// Why an attempt wrote nothing (`result` of a `failed` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Another reconcile held the lease.
    Locked,
    /// The live state changed during the reconcile, or the lease was lost.
    Conflict,
    /// A daemon lost its leader lease.
    Fenced,
    /// A guard (rollback, mass delete) refused.
    Refused,
    /// The revision does not validate.
    Invalid,
    /// Anything else (Redis errors, an injected fault).
    Failed,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Locked => "locked",
            Failure::Conflict => "conflict",
            Failure::Fenced => "fenced",
            Failure::Refused => "refused",
            Failure::Invalid => "invalid",
            Failure::Failed => "failed",
        }
    }
}

/// Object counts of a plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub add: usize,
    pub change: usize,
    pub remove: usize,
}

impl Counts {
    /// `{"add":…,"change":…,"remove":…}`, as events and the applied revision store it.
    pub fn json(&self) -> String {
        json!({"add": self.add, "change": self.change, "remove": self.remove}).to_string()
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// A reconcile applied its writes (or found nothing to do).
    Reconciled {
        how: Reconciled,
        summary: Counts,
        writes: usize,
        corrective_writes: usize,
    },
    /// An attempt that wrote nothing.
    Failed { why: Failure, error: String },
    /// A rollout.
    Deployed {
        release: String,
        ok: bool,
        deployed: usize,
        failed: usize,
        rolled_back: usize,
        skipped: usize,
    },
    /// Drift the daemon reported without healing it (`--drift report`).
    Drift {
        drifted_keys: usize,
        keys: Vec<String>,
    },
    /// A backup was written back (`celeroot restore`).
    Restored {
        /// When the backup was taken (RFC 3339).
        taken_at: String,
        /// The backup's generation, and the generation the live state has now.
        backup_generation: u64,
        generation: u64,
        keys: usize,
        /// Restored over a newer live state (`--force`).
        forced: bool,
    },
    /// `celeroot suspend`: the daemons stop applying.
    Suspended { reason: String },
    /// `celeroot resume`: the daemons apply again (`reason`: the suspension's).
    Resumed { reason: String },
    /// `celeroot sync`: the leader was asked to reconcile now.
    SyncRequested { request: u64 },
}

/// One entry of the event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// RFC 3339, seconds.
    pub ts: String,
    pub actor: String,
    /// The commit (empty when unknown).
    pub revision: String,
    /// What the revision was asked as (`HEAD`, a branch); absent for deploys and drift.
    pub rev: Option<String>,
    pub duration_ms: Option<u64>,
    pub what: What,
}

impl Event {
    /// An event stamped now.
    pub fn now(actor: &str, revision: &str, what: What) -> Event {
        Event {
            ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            actor: actor.to_string(),
            revision: revision.to_string(),
            rev: None,
            duration_ms: None,
            what,
        }
    }

    pub fn rev(mut self, rev: &str) -> Event {
        self.rev = Some(rev.to_string());
        self
    }

    pub fn took(mut self, ms: u64) -> Event {
        self.duration_ms = Some(ms);
        self
    }

    /// The `kind` field.
    pub fn kind(&self) -> &'static str {
        match &self.what {
            What::Reconciled { how, .. } => match how {
                Reconciled::Intentional => "intentional",
                Reconciled::Corrective => "corrective",
                Reconciled::Noop => "noop",
            },
            What::Failed { .. } => "failed",
            What::Deployed { .. } => "deploy",
            What::Drift { .. } => "drift",
            What::Restored { .. } => "restore",
            What::Suspended { .. } => "suspend",
            What::Resumed { .. } => "resume",
            What::SyncRequested { .. } => "sync",
        }
    }

    /// The stream entry's fields.
    pub fn fields(&self) -> BTreeMap<String, String> {
        let mut f = BTreeMap::from([
            ("ts".to_string(), self.ts.clone()),
            ("actor".to_string(), self.actor.clone()),
            ("revision".to_string(), self.revision.clone()),
            ("kind".to_string(), self.kind().to_string()),
        ]);
        let mut put = |k: &str, v: String| {
            f.insert(k.to_string(), v);
        };
        if let Some(r) = &self.rev {
            put("rev", r.clone());
        }
        if let Some(ms) = self.duration_ms {
            put("duration_ms", ms.to_string());
        }
        match &self.what {
            What::Reconciled {
                how,
                summary,
                writes,
                corrective_writes,
            } => {
                let result = if *how == Reconciled::Noop {
                    "noop"
                } else {
                    "applied"
                };
                put("result", result.into());
                put("summary", summary.json());
                put("writes", writes.to_string());
                put("corrective_writes", corrective_writes.to_string());
            }
            What::Failed { why, error } => {
                put("result", why.as_str().into());
                put("error", error.clone());
            }
            What::Deployed {
                release,
                ok,
                deployed,
                failed,
                rolled_back,
                skipped,
            } => {
                put("release", release.clone());
                put("result", if *ok { "ok" } else { "failed" }.into());
                put("deployed", deployed.to_string());
                put("failed", failed.to_string());
                put("rolled_back", rolled_back.to_string());
                put("skipped", skipped.to_string());
            }
            What::Drift { drifted_keys, keys } => {
                put("result", "reported".into());
                put("drifted_keys", drifted_keys.to_string());
                put("keys", keys.join(" "));
            }
            What::Restored {
                taken_at,
                backup_generation,
                generation,
                keys,
                forced,
            } => {
                put("result", "restored".into());
                put("taken_at", taken_at.clone());
                put("backup_generation", backup_generation.to_string());
                put("generation", generation.to_string());
                put("keys", keys.to_string());
                put("forced", forced.to_string());
            }
            What::Suspended { reason } => {
                put("result", "suspended".into());
                put("reason", reason.clone());
            }
            What::Resumed { reason } => {
                put("result", "resumed".into());
                put("reason", reason.clone());
            }
            What::SyncRequested { request } => {
                put("result", "requested".into());
                put("request", request.to_string());
            }
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(what: What) -> Event {
        Event {
            ts: "2026-11-23T12:00:00Z".into(),
            actor: "tester@ci".into(),
            revision: "2fe2788".into(),
            rev: Some("HEAD".into()),
            duration_ms: Some(12),
            what,
        }
    }

    #[test]
    fn each_kind_has_the_documented_fields() {
        let e = at(What::Reconciled {
            how: Reconciled::Intentional,
            summary: Counts {
                add: 1,
                change: 2,
                remove: 0,
            },
            writes: 7,
            corrective_writes: 1,
        });
        let f = e.fields();
        assert_eq!(
            f.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                "actor",
                "corrective_writes",
                "duration_ms",
                "kind",
                "result",
                "rev",
                "revision",
                "summary",
                "ts",
                "writes"
            ]
        );
        assert_eq!(f["kind"], "intentional");
        assert_eq!(f["result"], "applied");
        assert_eq!(f["summary"], r#"{"add":1,"change":2,"remove":0}"#);
        let noop = at(What::Reconciled {
            how: Reconciled::Noop,
            summary: Counts::default(),
            writes: 0,
            corrective_writes: 0,
        });
        assert_eq!(
            (
                noop.fields()["kind"].as_str(),
                noop.fields()["result"].as_str()
            ),
            ("noop", "noop")
        );
        let failed = at(What::Failed {
            why: Failure::Locked,
            error: "held".into(),
        })
        .fields();
        assert_eq!(
            (
                failed["kind"].as_str(),
                failed["result"].as_str(),
                failed["error"].as_str()
            ),
            ("failed", "locked", "held")
        );
        let drift = Event::now(
            "d",
            "c",
            What::Drift {
                drifted_keys: 2,
                keys: vec!["a".into(), "b".into()],
            },
        )
        .fields();
        assert_eq!(drift["keys"], "a b");
        assert!(!drift.contains_key("rev") && !drift.contains_key("duration_ms"));
    }
}
