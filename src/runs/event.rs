//! Celery's task events as they cross Redis: a kombu envelope published on
//! `/<db>.celeryev/task.<type>` (beat's `task-sent`) or `/<db>.celeryev/task.multi`
//! (a worker's buffered groups: the body is a JSON list of events).
//!
//! Owns: decoding an envelope into [`TaskEvent`]s. Must not know: schedules, Redis.

use serde_json::Value as Json;

/// The task events the run history reads (worker events are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Sent,
    Received,
    Started,
    Succeeded,
    Failed,
    Retried,
    Revoked,
    Rejected,
}

impl EventKind {
    fn of(t: &str) -> Option<EventKind> {
        Some(match t {
            "task-sent" => EventKind::Sent,
            "task-received" => EventKind::Received,
            "task-started" => EventKind::Started,
            "task-succeeded" => EventKind::Succeeded,
            "task-failed" => EventKind::Failed,
            "task-retried" => EventKind::Retried,
            "task-revoked" => EventKind::Revoked,
            "task-rejected" => EventKind::Rejected,
            _ => return None,
        })
    }

    /// The run state this event moves a run to (docs/runs.md).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Sent => "sent",
            EventKind::Received => "received",
            EventKind::Started => "started",
            EventKind::Succeeded => "succeeded",
            EventKind::Failed => "failed",
            EventKind::Retried => "retried",
            EventKind::Revoked => "revoked",
            EventKind::Rejected => "rejected",
        }
    }

    /// Whether the event carries `root_id` (the events that open a run).
    pub fn opens(self) -> bool {
        matches!(self, EventKind::Sent | EventKind::Received)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            EventKind::Succeeded | EventKind::Failed | EventKind::Revoked | EventKind::Rejected
        )
    }
}

/// One task event, with the fields the run history keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskEvent {
    pub kind: EventKind,
    pub uuid: String,
    /// Seconds since the epoch, by the sender's clock.
    pub timestamp: f64,
    /// The sender's node name (`web01@machine` for a worker; beat's `gen<pid>@machine`).
    pub hostname: String,
    pub root_id: Option<String>,
    pub parent_id: Option<String>,
    pub name: Option<String>,
    pub retries: Option<u64>,
    pub runtime: Option<f64>,
    /// `repr()` of the return value (Celery truncates it to `resultrepr_maxsize`, 1 KiB).
    pub result: Option<String>,
    /// `repr()` of the exception (`RuntimeError('boom')`).
    pub exception: Option<String>,
    /// `task-revoked`: the task had expired.
    pub expired: bool,
}

/// Why an envelope was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("not a kombu envelope: {0}")]
    Envelope(String),
    #[error("the event body is not JSON: {0}")]
    Body(String),
}

/// Decodes one published envelope: its task events (an empty list for worker events
/// and for events of kinds the run history does not read).
///
/// # Errors
/// [`EventError`] when the payload is not a kombu JSON envelope with a JSON body.
pub fn parse(payload: &[u8]) -> Result<Vec<TaskEvent>, EventError> {
    let env: Json =
        serde_json::from_slice(payload).map_err(|e| EventError::Envelope(e.to_string()))?;
    let body = env
        .get("body")
        .and_then(Json::as_str)
        .ok_or_else(|| EventError::Envelope("no `body` string".into()))?;
    let encoding = env
        .pointer("/properties/body_encoding")
        .and_then(Json::as_str)
        .unwrap_or("");
    let decoded: Json = if encoding == "base64" {
        let raw = crate::celery::message::base64_decode(body)
            .ok_or_else(|| EventError::Body("invalid base64".into()))?;
        serde_json::from_slice(&raw).map_err(|e| EventError::Body(e.to_string()))?
    } else {
        serde_json::from_str(body).map_err(|e| EventError::Body(e.to_string()))?
    };
    Ok(events_of(decoded))
}

/// Decodes one AMQP event message's body (RabbitMQ carries the event JSON itself, not a
/// kombu envelope): its task events.
///
/// # Errors
/// [`EventError::Body`] when the body is not JSON.
pub fn parse_body(body: &[u8]) -> Result<Vec<TaskEvent>, EventError> {
    let decoded: Json =
        serde_json::from_slice(body).map_err(|e| EventError::Body(e.to_string()))?;
    Ok(events_of(decoded))
}

fn events_of(decoded: Json) -> Vec<TaskEvent> {
    match decoded {
        Json::Array(items) => items.iter().filter_map(event).collect(),
        one => event(&one).into_iter().collect(),
    }
}

fn event(v: &Json) -> Option<TaskEvent> {
    let kind = EventKind::of(v.get("type")?.as_str()?)?;
    let s = |k: &str| v.get(k).and_then(Json::as_str).map(str::to_string);
    Some(TaskEvent {
        kind,
        uuid: s("uuid").filter(|u| !u.is_empty())?,
        timestamp: v.get("timestamp").and_then(Json::as_f64)?,
        hostname: s("hostname").unwrap_or_default(),
        root_id: s("root_id"),
        parent_id: s("parent_id"),
        name: s("name"),
        retries: v.get("retries").and_then(Json::as_u64),
        runtime: v.get("runtime").and_then(Json::as_f64),
        result: s("result"),
        exception: s("exception"),
        expired: v.get("expired").and_then(Json::as_bool).unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `task.multi` envelope as celery 5.7.0 published it (captured with PSUBSCRIBE):
    /// received, started and failed of one task.
    const MULTI: &str = r#"{"body": "W3siaG9zdG5hbWUiOiAiaDFAdm0iLCAidXRjb2Zmc2V0IjogMC4wLCAicGlkIjogMTgxMDIsICJjbG9jayI6IDQsICJ1dWlkIjogImFjZGI1ZDJmLWY4Y2QtNDcyNy1hOTE2LWE4YWFjOTZiNGQyOCIsICJuYW1lIjogInRlc3RzLmZhaWwiLCAiYXJncyI6ICJbJ3NlY3JldCB4J10iLCAia3dhcmdzIjogInt9IiwgInJvb3RfaWQiOiAiY2VsZXJvb3Q6dGljay5ob3N0LmgxIiwgInBhcmVudF9pZCI6IG51bGwsICJyZXRyaWVzIjogMCwgImV0YSI6IG51bGwsICJleHBpcmVzIjogbnVsbCwgInRpbWVzdGFtcCI6IDE3OTYxNzYwMTYuODgyNjM0LCAidHlwZSI6ICJ0YXNrLXJlY2VpdmVkIn0sIHsiaG9zdG5hbWUiOiAiaDFAdm0iLCAidXRjb2Zmc2V0IjogMC4wLCAicGlkIjogMTgxMDIsICJjbG9jayI6IDUsICJ1dWlkIjogImFjZGI1ZDJmLWY4Y2QtNDcyNy1hOTE2LWE4YWFjOTZiNGQyOCIsICJ0aW1lc3RhbXAiOiAxNzk2MTc2MDE2Ljg4Mjc5MiwgInR5cGUiOiAidGFzay1zdGFydGVkIn0sIHsiaG9zdG5hbWUiOiAiaDFAdm0iLCAidXRjb2Zmc2V0IjogMC4wLCAicGlkIjogMTgxMDIsICJjbG9jayI6IDYsICJ1dWlkIjogImFjZGI1ZDJmLWY4Y2QtNDcyNy1hOTE2LWE4YWFjOTZiNGQyOCIsICJleGNlcHRpb24iOiAiUnVudGltZUVycm9yKCdzZWNyZXQgeCcpIiwgInRyYWNlYmFjayI6ICJUcmFjZWJhY2sgKG1vc3QgcmVjZW50IGNhbGwgbGFzdCk6XG4gIEZpbGUgXCIvcm9vdC8uY2FjaGUvY2VsZXJvb3QvcHllbnYtYTIwMzUxOTg3ODEyL2xpYi9weXRob24zLjExL3NpdGUtcGFja2FnZXMvY2VsZXJ5L2FwcC90cmFjZS5weVwiLCBsaW5lIDU2NCwgaW4gdHJhY2VfdGFza1xuICAgIFIgPSByZXR2YWwgPSBmdW4oKmFyZ3MsICoqa3dhcmdzKVxuICAgICAgICAgICAgICAgICBeXl5eXl5eXl5eXl5eXl5eXl5eXlxuICBGaWxlIFwiL3Jvb3QvLmNhY2hlL2NlbGVyb290L3B5ZW52LWEyMDM1MTk4NzgxMi9saWIvcHl0aG9uMy4xMS9zaXRlLXBhY2thZ2VzL2NlbGVyeS9hcHAvdHJhY2UucHlcIiwgbGluZSA4ODMsIGluIF9fcHJvdGVjdGVkX2NhbGxfX1xuICAgIHJldHVybiBzZWxmLnJ1bigqYXJncywgKiprd2FyZ3MpXG4gICAgICAgICAgIF5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5cbiAgRmlsZSBcIi93b3JrL21haW4vdGVzdHMvY2VsZXJ5L3Rlc3R0YXNrcy5weVwiLCBsaW5lIDExLCBpbiBmYWlsXG4gICAgcmFpc2UgUnVudGltZUVycm9yKG1lc3NhZ2UpXG5SdW50aW1lRXJyb3I6IHNlY3JldCB4XG4iLCAidGltZXN0YW1wIjogMTc5NjE3NjAxNi44ODg0NjMzLCAidHlwZSI6ICJ0YXNrLWZhaWxlZCJ9XQ==", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"hostname": "h1@vm"}, "properties": {"delivery_mode": 1, "delivery_info": {"exchange": "celeryev", "routing_key": "task.multi"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "4d55ecde-3a81-402d-aab7-a2d83a222f82"}}"#;

    #[test]
    fn a_workers_buffered_group_decodes_in_order() {
        let evs = parse(MULTI.as_bytes()).expect("parses");
        let kinds: Vec<EventKind> = evs.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [EventKind::Received, EventKind::Started, EventKind::Failed]
        );
        let r = &evs[0];
        assert_eq!(r.uuid, "acdb5d2f-f8cd-4727-a916-a8aac96b4d28");
        assert_eq!(r.root_id.as_deref(), Some("celeroot:tick.host.h1"));
        assert_eq!(r.parent_id, None);
        assert_eq!(r.hostname, "h1@vm");
        assert_eq!(r.name.as_deref(), Some("tests.fail"));
        assert!((r.timestamp - 1_796_176_016.882_634).abs() < 1e-6);
        assert_eq!(
            evs[2].exception.as_deref(),
            Some("RuntimeError('secret x')")
        );
    }

    #[test]
    fn worker_events_and_bad_payloads() {
        let hb = r#"{"body": "eyJ0eXBlIjogIndvcmtlci1oZWFydGJlYXQiLCAidGltZXN0YW1wIjogMS4wfQ==", "properties": {"body_encoding": "base64"}}"#;
        assert_eq!(parse(hb.as_bytes()), Ok(vec![]));
        assert!(matches!(parse(b"nope"), Err(EventError::Envelope(_))));
        assert!(matches!(
            parse(br#"{"body": "!!", "properties": {"body_encoding": "base64"}}"#),
            Err(EventError::Body(_))
        ));
        // An event without a uuid or a timestamp is skipped, not a failure.
        let plain = r#"{"body": "{\"type\": \"task-started\", \"timestamp\": 2.5}"}"#;
        assert_eq!(parse(plain.as_bytes()), Ok(vec![]));
    }
}
