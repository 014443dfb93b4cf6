//! Task results as Celery's Redis result backend stores them (celery-interop.md §3): the
//! STRING `celery-task-meta-<id>` holding JSON `{status, result, traceback, children,
//! date_done, task_id, ...}`. An absent key means PENDING.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value as Json;

/// The result backend's key prefix (`KeyValueStoreBackend.task_keyprefix`).
pub const TASK_KEY_PREFIX: &str = "celery-task-meta-";

/// The key (and PUB/SUB channel) of a task's result.
pub fn result_key(task_id: &str) -> String {
    format!("{TASK_KEY_PREFIX}{task_id}")
}

/// A task state (`celery/states.py`), plus custom states set by `update_state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    /// No result key: not run yet, unknown id, `ignore_result`, or expired.
    Pending,
    /// Only written with `task_track_started=True`.
    Started,
    Success,
    Failure,
    Retry,
    Revoked,
    /// `RECEIVED`, `REJECTED`, `IGNORED` or a custom state such as `PROGRESS`.
    Other(String),
}

impl TaskState {
    pub fn parse(s: &str) -> TaskState {
        match s {
            "PENDING" => TaskState::Pending,
            "STARTED" => TaskState::Started,
            "SUCCESS" => TaskState::Success,
            "FAILURE" => TaskState::Failure,
            "RETRY" => TaskState::Retry,
            "REVOKED" => TaskState::Revoked,
            other => TaskState::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            TaskState::Pending => "PENDING",
            TaskState::Started => "STARTED",
            TaskState::Success => "SUCCESS",
            TaskState::Failure => "FAILURE",
            TaskState::Retry => "RETRY",
            TaskState::Revoked => "REVOKED",
            TaskState::Other(s) => s,
        }
    }

    /// Final: `READY_STATES` = SUCCESS, FAILURE, REVOKED.
    pub fn is_ready(&self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failure | TaskState::Revoked
        )
    }

    /// `EXCEPTION_STATES` = RETRY, FAILURE, REVOKED: `result` describes an exception.
    pub fn is_exception(&self) -> bool {
        matches!(
            self,
            TaskState::Retry | TaskState::Failure | TaskState::Revoked
        )
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One task's result as read from the backend.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    pub task_id: String,
    pub state: TaskState,
    /// The return value (SUCCESS), the exception (`{exc_type, exc_message, exc_module}`)
    /// or the custom meta; `null` when PENDING.
    pub result: Json,
    pub traceback: Option<String>,
    /// When the task finished (SUCCESS, FAILURE, REVOKED). Celery < 5.5 writes naive UTC,
    /// read as UTC.
    pub date_done: Option<DateTime<Utc>>,
    /// The worker's node name, when the app sets `result_extended` (`web01@host`).
    pub worker: Option<String>,
    /// The task name, when the app sets `result_extended`.
    pub name: Option<String>,
    /// The queue it was consumed from, when the app sets `result_extended`.
    pub queue: Option<String>,
    /// The stored JSON as it was (null when PENDING).
    pub raw: Json,
}

impl TaskResult {
    /// The result of a task with no result key.
    pub fn pending(task_id: &str) -> TaskResult {
        TaskResult {
            task_id: task_id.to_string(),
            state: TaskState::Pending,
            result: Json::Null,
            traceback: None,
            date_done: None,
            worker: None,
            name: None,
            queue: None,
            raw: Json::Null,
        }
    }

    /// Parses the value of `celery-task-meta-<task_id>`; `None` (no key) is PENDING.
    ///
    /// # Errors
    /// When the value is not a JSON object with a string `status`.
    pub fn parse(task_id: &str, stored: Option<&str>) -> Result<TaskResult, String> {
        let Some(text) = stored else {
            return Ok(TaskResult::pending(task_id));
        };
        let raw: Json = serde_json::from_str(text)
            .map_err(|e| format!("the stored result of {task_id} is not JSON: {e}"))?;
        let obj = raw
            .as_object()
            .ok_or_else(|| format!("the stored result of {task_id} is not a JSON object"))?;
        let status = obj
            .get("status")
            .and_then(Json::as_str)
            .ok_or_else(|| format!("the stored result of {task_id} has no `status`"))?;
        let text_field = |k: &str| obj.get(k).and_then(Json::as_str).map(String::from);
        Ok(TaskResult {
            task_id: text_field("task_id").unwrap_or_else(|| task_id.to_string()),
            state: TaskState::parse(status),
            result: obj.get("result").cloned().unwrap_or(Json::Null),
            traceback: text_field("traceback").filter(|t| !t.is_empty()),
            date_done: obj
                .get("date_done")
                .and_then(Json::as_str)
                .and_then(parse_date_done),
            worker: text_field("worker"),
            name: text_field("name"),
            queue: text_field("queue"),
            raw,
        })
    }

    /// A one-line summary: the result as compact JSON (SUCCESS, custom states), or
    /// `ExcType: message` for RETRY, FAILURE and REVOKED; empty when PENDING.
    pub fn summary(&self) -> String {
        if self.state.is_exception() {
            if let Some(e) = exception_summary(&self.result) {
                return e;
            }
        }
        match (&self.state, &self.result) {
            (TaskState::Pending, Json::Null) => String::new(),
            (_, v) => v.to_string(),
        }
    }

    /// The last `n` lines of the traceback, without blank lines and without the marker
    /// lines Python 3.11+ prints under the failing expression (`    ^^^^~~~`).
    pub fn traceback_tail(&self, n: usize) -> Vec<String> {
        let Some(tb) = &self.traceback else {
            return Vec::new();
        };
        let marker = |l: &str| l.trim().chars().all(|c| matches!(c, '^' | '~'));
        let lines: Vec<&str> = tb.lines().filter(|l| !marker(l)).collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(std::string::ToString::to_string)
            .collect()
    }
}

/// `ExcType: message` of an exception result `{exc_type, exc_message, exc_module}`.
pub fn exception_summary(result: &Json) -> Option<String> {
    let ty = result.get("exc_type")?.as_str()?;
    let msg = match result.get("exc_message") {
        Some(Json::Array(parts)) => parts
            .iter()
            .map(|p| match p {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Some(Json::String(s)) => s.clone(),
        Some(Json::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    Some(if msg.is_empty() {
        ty.to_string()
    } else {
        format!("{ty}: {msg}")
    })
}

/// `date_done`: ISO 8601 with an offset (Celery ≥ 5.5) or naive UTC (Celery 5.3, 5.4).
pub fn parse_date_done(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|n| n.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> TaskResult {
        TaskResult::parse("id-1", Some(text)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn absent_key_is_pending() {
        let r = TaskResult::parse("abc", None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.state, TaskState::Pending);
        assert!(!r.state.is_ready());
        assert_eq!(r.summary(), "");
        assert_eq!(result_key("abc"), "celery-task-meta-abc");
    }

    #[test]
    fn success_with_offset_date_done() {
        // §2.10, Celery 5.7.
        let r = parse(
            r#"{"status": "SUCCESS", "result": 5, "traceback": null, "children": [], "date_done": "2026-11-22T11:03:42.661400+00:00", "task_id": "0f6c2a1e-5d7b-4c8e-9a41-3b2d1e0c9f01"}"#,
        );
        assert_eq!(r.state, TaskState::Success);
        assert!(r.state.is_ready());
        assert_eq!(r.result, json!(5));
        assert_eq!(r.traceback, None);
        assert_eq!(r.task_id, "0f6c2a1e-5d7b-4c8e-9a41-3b2d1e0c9f01");
        assert_eq!(
            r.date_done.map(|d| d.to_rfc3339()),
            Some("2026-11-22T11:03:42.661400+00:00".to_string())
        );
        assert_eq!(r.summary(), "5");
    }

    #[test]
    fn naive_date_done_is_utc_and_offsets_are_converted() {
        // Celery 5.3.6 writes naive UTC; ≥ 5.5 the app time zone with its offset.
        assert_eq!(
            parse_date_done("2026-11-22T11:01:03.517270").map(|d| d.to_rfc3339()),
            Some("2026-11-22T11:01:03.517270+00:00".to_string())
        );
        assert_eq!(
            parse_date_done("2026-11-22T12:01:03.517270+01:00").map(|d| d.to_rfc3339()),
            Some("2026-11-22T11:01:03.517270+00:00".to_string())
        );
        assert_eq!(parse_date_done("yesterday"), None);
    }

    #[test]
    fn extended_results_name_the_worker() {
        let r = parse(
            r#"{"status": "SUCCESS", "result": 4, "traceback": null, "children": [], "date_done": "2026-11-22T10:59:39.723979+00:00", "name": "tasks.slow", "args": [4], "kwargs": {}, "worker": "w2@vm", "retries": 0, "queue": "celeroot.ext", "task_id": "77777777-0000-4000-8000-000000000001"}"#,
        );
        assert_eq!(r.worker.as_deref(), Some("w2@vm"));
        assert_eq!(r.name.as_deref(), Some("tasks.slow"));
        assert_eq!(r.queue.as_deref(), Some("celeroot.ext"));
    }

    #[test]
    fn failure_carries_the_exception_and_traceback() {
        let r = parse(
            r#"{"status": "FAILURE", "result": {"exc_type": "ValueError", "exc_message": ["kaboom"], "exc_module": "builtins"}, "traceback": "Traceback (most recent call last):\n  File \"/x/celery/app/trace.py\", line 479, in trace_task\n    R = retval = fun(*args, **kwargs)\n  File \"/x/tasks.py\", line 9, in boom\n    raise ValueError('kaboom')\nValueError: kaboom\n", "children": [], "date_done": "2026-11-22T11:00:00+00:00", "task_id": "id-1"}"#,
        );
        assert_eq!(r.state, TaskState::Failure);
        assert!(r.state.is_ready() && r.state.is_exception());
        assert_eq!(r.summary(), "ValueError: kaboom");
        assert_eq!(
            r.traceback_tail(3),
            vec![
                "  File \"/x/tasks.py\", line 9, in boom".to_string(),
                "    raise ValueError('kaboom')".to_string(),
                "ValueError: kaboom".to_string()
            ]
        );
        assert_eq!(r.traceback_tail(100).len(), 6);
        // Python 3.11+ underlines the failing expression; those lines are not shown.
        let carets = parse(
            r#"{"status": "FAILURE", "result": {"exc_type": "ZeroDivisionError", "exc_message": ["division by zero"], "exc_module": "builtins"}, "traceback": "Traceback (most recent call last):\n  File \"/x/tasks.py\", line 3, in div\n    return a / b\n           ~~^~~\nZeroDivisionError: division by zero\n", "children": [], "date_done": null, "task_id": "id-1"}"#,
        );
        assert_eq!(
            carets.traceback_tail(2),
            vec![
                "    return a / b".to_string(),
                "ZeroDivisionError: division by zero".to_string()
            ]
        );
        let unknown = parse(
            r#"{"status": "FAILURE", "result": {"exc_type": "NotRegistered", "exc_message": ["tasks.nope"], "exc_module": "celery.exceptions"}, "traceback": null, "children": [], "date_done": "2026-11-22T11:00:00+00:00", "task_id": "id-1"}"#,
        );
        assert_eq!(unknown.summary(), "NotRegistered: tasks.nope");
        assert!(unknown.traceback_tail(3).is_empty());
    }

    #[test]
    fn retry_revoked_started_and_custom_states() {
        let retry = parse(
            r#"{"status": "RETRY", "result": {"exc_type": "RuntimeError", "exc_message": ["try again"], "exc_module": "builtins"}, "traceback": "Traceback...\nRuntimeError: try again", "children": [[["abc", null], null]], "date_done": null, "task_id": "id-1"}"#,
        );
        assert_eq!(retry.state, TaskState::Retry);
        assert!(!retry.state.is_ready());
        assert_eq!(retry.date_done, None);
        assert_eq!(retry.summary(), "RuntimeError: try again");
        let revoked = parse(
            r#"{"status": "REVOKED", "result": {"exc_type": "TaskRevokedError", "exc_message": ["expired"], "exc_module": "celery.exceptions"}, "traceback": null, "children": [], "date_done": "2026-11-22T11:00:00+00:00", "task_id": "id-1"}"#,
        );
        assert_eq!(revoked.state, TaskState::Revoked);
        assert!(revoked.state.is_ready());
        assert_eq!(revoked.summary(), "TaskRevokedError: expired");
        let started = parse(
            r#"{"status": "STARTED", "result": {"pid": 20550, "hostname": "w2@vm"}, "traceback": null, "children": [], "date_done": null, "task_id": "id-1"}"#,
        );
        assert_eq!(started.state, TaskState::Started);
        assert_eq!(started.summary(), r#"{"pid":20550,"hostname":"w2@vm"}"#);
        let progress = parse(
            r#"{"status": "PROGRESS", "result": {"done": 0, "n": 4}, "traceback": null, "children": [], "date_done": null, "task_id": "id-1"}"#,
        );
        assert_eq!(progress.state, TaskState::Other("PROGRESS".into()));
        assert_eq!(progress.state.to_string(), "PROGRESS");
        assert!(!progress.state.is_ready());
    }

    #[test]
    fn unreadable_values_are_errors() {
        for bad in ["not json", "[1]", r#"{"result": 1}"#, r#"{"status": 3}"#] {
            assert!(TaskResult::parse("x", Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn exception_messages_of_any_shape() {
        assert_eq!(
            exception_summary(&json!({"exc_type": "E", "exc_message": ["a", 2]})),
            Some("E: a, 2".to_string())
        );
        assert_eq!(
            exception_summary(&json!({"exc_type": "E", "exc_message": []})),
            Some("E".to_string())
        );
        assert_eq!(
            exception_summary(&json!({"exc_type": "E", "exc_message": "text"})),
            Some("E: text".to_string())
        );
        assert_eq!(exception_summary(&json!(5)), None);
    }
}
