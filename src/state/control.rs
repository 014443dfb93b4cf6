//! The daemon's control record (`celeroot:{<cluster>}:control`): whether the `watch`
//! daemons are suspended and why, and the sync requests of `celeroot sync` with the
//! leader's answer. Every replica reads it, so a suspension or a request holds for all
//! of them and survives a restart or a change of leader.
//!
//! Owns: the control hash's fields. Must not know: the daemon's loop or the CLI.

use std::collections::BTreeMap;

use super::{StateError, Store};

/// Why and since when the daemons are suspended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Suspension {
    /// The operator's reason (may be empty).
    pub reason: String,
    /// Who suspended (the actor: user@host).
    pub by: String,
    /// RFC 3339.
    pub at: String,
}

/// The leader's answer to the last sync request it handled.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncAnswer {
    /// The request answered (the counter's value it handled).
    pub request: u64,
    /// The reconcile's result (`applied`, `noop`, `invalid`, `failed`, ... or
    /// `suspended` when the daemons are suspended).
    pub result: String,
    /// The revision it reconciled (empty when none).
    pub revision: String,
    /// The daemon that answered.
    pub by: String,
    /// RFC 3339.
    pub at: String,
    /// The error, when the reconcile failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The control record as read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Control {
    pub suspended: Option<Suspension>,
    /// Sync requests made so far (a counter that only grows).
    pub sync_requested: u64,
    /// The last request a leader answered.
    pub synced: Option<SyncAnswer>,
}

impl Control {
    fn from_fields(f: &BTreeMap<String, String>) -> Control {
        let get = |k: &str| f.get(k).cloned().unwrap_or_default();
        let num = |k: &str| f.get(k).and_then(|v| v.parse::<u64>().ok());
        Control {
            suspended: (get("suspended") == "1").then(|| Suspension {
                reason: get("suspend_reason"),
                by: get("suspend_by"),
                at: get("suspend_at"),
            }),
            sync_requested: num("sync_requested").unwrap_or(0),
            synced: num("synced").map(|request| SyncAnswer {
                request,
                result: get("synced_result"),
                revision: get("synced_revision"),
                by: get("synced_by"),
                at: get("synced_at"),
                error: f.get("synced_error").cloned().filter(|e| !e.is_empty()),
            }),
        }
    }

    /// Requests not answered yet.
    pub fn pending_sync(&self) -> Option<u64> {
        let answered = self.synced.as_ref().map_or(0, |s| s.request);
        (self.sync_requested > answered).then_some(self.sync_requested)
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Store {
    /// The control record (empty when never written).
    ///
    /// # Errors
    /// Redis errors.
    pub fn control(&mut self) -> Result<Control, StateError> {
        let key = self.keys().control();
        let f: BTreeMap<String, String> = self.query(redis::cmd("HGETALL").arg(key))?;
        Ok(Control::from_fields(&f))
    }

    /// Suspends the daemons; returns the suspension it replaced, if any.
    ///
    /// # Errors
    /// Redis errors.
    pub fn suspend(&mut self, reason: &str, by: &str) -> Result<Option<Suspension>, StateError> {
        let before = self.control()?.suspended;
        let key = self.keys().control();
        self.query::<()>(
            redis::cmd("HSET")
                .arg(key)
                .arg("suspended")
                .arg("1")
                .arg("suspend_reason")
                .arg(reason)
                .arg("suspend_by")
                .arg(by)
                .arg("suspend_at")
                .arg(now()),
        )?;
        Ok(before)
    }

    /// Lifts a suspension; returns it (`None`: there was none).
    ///
    /// # Errors
    /// Redis errors.
    pub fn resume(&mut self) -> Result<Option<Suspension>, StateError> {
        let before = self.control()?.suspended;
        let key = self.keys().control();
        self.query::<()>(
            redis::cmd("HDEL")
                .arg(key)
                .arg("suspended")
                .arg("suspend_reason")
                .arg("suspend_by")
                .arg("suspend_at"),
        )?;
        Ok(before)
    }

    /// Asks the leader to reconcile now; the request's number.
    ///
    /// # Errors
    /// Redis errors.
    pub fn request_sync(&mut self) -> Result<u64, StateError> {
        let key = self.keys().control();
        self.query(redis::cmd("HINCRBY").arg(key).arg("sync_requested").arg(1))
    }

    /// Records the leader's answer to the requests up to `answer.request`.
    ///
    /// # Errors
    /// Redis errors.
    pub fn answer_sync(&mut self, answer: &SyncAnswer) -> Result<(), StateError> {
        let key = self.keys().control();
        self.query::<()>(
            redis::cmd("HSET")
                .arg(key)
                .arg("synced")
                .arg(answer.request)
                .arg("synced_result")
                .arg(&answer.result)
                .arg("synced_revision")
                .arg(&answer.revision)
                .arg("synced_by")
                .arg(&answer.by)
                .arg("synced_at")
                .arg(&answer.at)
                .arg("synced_error")
                .arg(answer.error.as_deref().unwrap_or("")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_pending_until_answered() {
        let mut f = BTreeMap::from([("sync_requested".to_string(), "3".to_string())]);
        assert_eq!(Control::from_fields(&f).pending_sync(), Some(3));
        f.insert("synced".into(), "3".into());
        f.insert("synced_result".into(), "noop".into());
        let c = Control::from_fields(&f);
        assert_eq!(c.pending_sync(), None);
        assert_eq!(c.synced.map(|s| s.result), Some("noop".to_string()));
        assert_eq!(c.suspended, None);
    }

    #[test]
    fn suspension_fields() {
        let f = BTreeMap::from([
            ("suspended".to_string(), "1".to_string()),
            ("suspend_reason".to_string(), "incident 42".to_string()),
            ("suspend_by".to_string(), "ada@ops".to_string()),
        ]);
        let s = Control::from_fields(&f).suspended;
        assert_eq!(s.map(|s| s.reason), Some("incident 42".to_string()));
    }
}
