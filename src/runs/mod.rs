//! Run history: what each schedule's tasks did. Every fire of a RedBeat entry is one run,
//! recorded from Celery's own task events (beat's `task-sent`, the worker's `received`,
//! `started`, `succeeded`, `failed`, `retried`, `revoked`, `rejected`) and recognised by
//! the `root_id` celeroot puts on the entry ([`crate::celery::schedule_root_id`]).
//!
//! Owns: the run record ([`Run`]), decoding events (event.rs), turning them into record
//! updates, and the collector loop (collect.rs). The Redis layout and its script are in
//! `state::runs`.
//! Must not know: manifests, git, the CLI, or output formats.

pub mod alert;
pub mod checkin;
pub mod collect;
pub mod event;
pub mod expect;
pub mod mail;

pub use event::{EventKind, TaskEvent};

use crate::state::runs::{EntryName, RunUpdate, MESSAGE_EXCERPT};

/// The health of every applied schedule target now, as `celeroot health`, `status` and
/// the daemon see it.
///
/// # Errors
/// [`crate::state::StateError`] when Redis fails.
pub fn health_now(
    store: &mut crate::state::Store,
    evaluator: &mut expect::Evaluator,
    now: f64,
) -> Result<Vec<expect::TargetHealth>, crate::state::StateError> {
    let objects = store.applied_schedules()?;
    let expectations = expect::from_live(&objects);
    let latest = store.latest_runs()?;
    let watched = store.watched_since()?;
    let collecting_since = store.collected_since(now)?;
    Ok(evaluator.evaluate(
        &expectations,
        expect::Observed {
            latest: &latest,
            watched: &watched,
            collecting_since,
        },
        now,
    ))
}

/// The update `ev` makes to the run of `entry`.
pub fn update_of(ev: &TaskEvent, entry: &str) -> RunUpdate {
    let parsed = EntryName::parse(entry);
    // Beat's events name beat's process, not a worker.
    let from_worker = ev.kind != EventKind::Sent && !ev.hostname.is_empty();
    let (exception, message) = ev.exception.as_deref().map(split_exception).unzip();
    RunUpdate {
        id: ev.uuid.clone(),
        entry: entry.to_string(),
        kind: ev.kind.as_str(),
        timestamp: ev.timestamp,
        schedule: parsed.as_ref().map(|p| p.schedule.to_string()),
        target: parsed.as_ref().map(EntryName::target),
        task: ev.name.clone(),
        host: from_worker.then(|| {
            ev.hostname
                .split_once('@')
                .map_or(ev.hostname.as_str(), |(h, _)| h)
                .to_string()
        }),
        worker: from_worker.then(|| ev.hostname.clone()),
        retries: ev.retries,
        runtime: ev.runtime,
        exception,
        message: message.flatten(),
        result_size: ev.result.as_ref().map(|r| r.len() as u64),
        expired: ev.expired,
    }
}

/// `RuntimeError('boom')` → (`RuntimeError`, the message excerpt). A repr without
/// parentheses is all type.
fn split_exception(repr: &str) -> (String, Option<String>) {
    let Some((ty, rest)) = repr.split_once('(') else {
        return (truncate(repr.trim(), 100), None);
    };
    let inner = rest.strip_suffix(')').unwrap_or(rest);
    let inner = inner
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
        .unwrap_or(inner);
    let msg = mask_url_passwords(inner);
    (
        truncate(ty.trim(), 100),
        (!msg.is_empty()).then(|| truncate(&msg, MESSAGE_EXCERPT)),
    )
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Masks the password of every `scheme://user:password@host` in free text.
pub fn mask_url_passwords(text: &str) -> String {
    text.split_inclusive(|c: char| c.is_whitespace() || c == '\'' || c == '"')
        .map(|word| {
            if word.contains("://") {
                crate::source::remote::redact_url(word)
            } else {
                word.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceptions_keep_their_type_and_a_masked_bounded_message() {
        assert_eq!(
            split_exception("RuntimeError('boom')"),
            ("RuntimeError".into(), Some("boom".into()))
        );
        assert_eq!(
            split_exception(
                "ConnectionError('cannot reach redis://app:hunter2@db.invalid:6379/0')"
            ),
            (
                "ConnectionError".into(),
                Some("cannot reach redis://app:***@db.invalid:6379/0".into())
            )
        );
        assert_eq!(split_exception("SystemExit()"), ("SystemExit".into(), None));
        assert_eq!(
            split_exception("KeyboardInterrupt"),
            ("KeyboardInterrupt".into(), None)
        );
        let long = format!("ValueError('{}')", "x".repeat(500));
        let (_, m) = split_exception(&long);
        assert_eq!(m.map(|m| m.chars().count()), Some(MESSAGE_EXCERPT + 1));
    }

    #[test]
    fn an_update_names_the_host_from_the_worker_not_from_beat() {
        let ev = TaskEvent {
            kind: EventKind::Sent,
            uuid: "u1".into(),
            timestamp: 10.0,
            hostname: "gen42@machine".into(),
            root_id: Some("celeroot:tick.role.worker".into()),
            parent_id: None,
            name: Some("tests.record".into()),
            retries: Some(0),
            runtime: None,
            result: None,
            exception: None,
            expired: false,
        };
        let u = update_of(&ev, "tick.role.worker");
        assert_eq!((u.host, u.worker), (None, None));
        assert_eq!(u.target.as_deref(), Some("role/worker"));
        let ev = TaskEvent {
            kind: EventKind::Succeeded,
            hostname: "h2@machine".into(),
            result: Some("'done'".into()),
            ..ev
        };
        let u = update_of(&ev, "tick.role.worker");
        assert_eq!(u.host.as_deref(), Some("h2"));
        assert_eq!(u.worker.as_deref(), Some("h2@machine"));
        assert_eq!(u.result_size, Some(6));
    }
}
