//! Check-ins for jobs celeroot does not run (`external: true` schedules): unguessable
//! tokens stored only as hashes, and pings (`/ping/<token>`, `/start`, `/fail`) recorded
//! as runs, so the same late, missed, failed and stuck rules and the same alerts apply.
//!
//! Must not know: HTTP, the CLI.

use std::io::Read;

use sha2::{Digest, Sha256};

use crate::state::runs::{check_entry, RunUpdate};
use crate::state::{StateError, Store};

/// The largest ping body read (healthchecks.io's default limit); larger is refused.
pub const MAX_PING_BODY: usize = 10_000;
/// Pings accepted per token per minute; more are refused with 429.
pub const PINGS_PER_MINUTE: u32 = 30;

/// What a ping says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The job finished well (`/ping/<token>`).
    Success,
    /// The job began (`/ping/<token>/start`): from now it may be stuck.
    Start,
    /// The job failed (`/ping/<token>/fail`).
    Fail,
}

impl Signal {
    pub fn parse(s: &str) -> Option<Signal> {
        match s {
            "" | "success" => Some(Signal::Success),
            "start" => Some(Signal::Start),
            "fail" => Some(Signal::Fail),
            _ => None,
        }
    }
}

/// A fresh token: 32 bytes from the kernel's CSPRNG, in hex (64 characters).
///
/// # Errors
/// When `/dev/urandom` cannot be read.
pub fn new_token() -> std::io::Result<String> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(hex::encode(b))
}

/// What is stored of a token: its SHA-256, in hex.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `token` looks like one [`new_token`] makes (anything else is not looked up).
pub fn well_formed(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Records a ping of check `check`: a start opens a run; a success or failure closes the
/// open one (or is a run of its own when none is open). Returns the run's id.
///
/// # Errors
/// [`StateError`] when Redis fails.
pub fn record(
    store: &mut Store,
    check: &str,
    signal: Signal,
    body: &[u8],
    from: &str,
    now: f64,
) -> Result<String, StateError> {
    let entry = check_entry(check);
    let open = store
        .latest_run(&entry)?
        .filter(|l| l.state == "started" || l.state == "received");
    let id = match (signal, &open) {
        (Signal::Success | Signal::Fail, Some(l)) => l.id.clone(),
        _ => crate::celery::uuid4(),
    };
    let base = RunUpdate {
        id: id.clone(),
        entry: entry.clone(),
        kind: "received",
        timestamp: now,
        schedule: Some(check.to_string()),
        target: Some(format!("check/{check}")),
        task: Some("check-in".into()),
        host: None,
        worker: Some(format!("check-in from {from}")),
        retries: None,
        runtime: None,
        exception: None,
        message: None,
        result_size: None,
        expired: false,
    };
    let at = |kind: &'static str| RunUpdate {
        kind,
        ..base.clone()
    };
    let mut updates = Vec::new();
    let started = open.as_ref().and_then(|l| l.started);
    if open.is_none() || signal == Signal::Start {
        updates.push(at("received"));
        updates.push(at("started"));
    }
    match signal {
        Signal::Start => {}
        Signal::Success => updates.push(RunUpdate {
            runtime: started.map(|s| (now - s).max(0.0)),
            result_size: Some(body.len() as u64),
            ..at("succeeded")
        }),
        Signal::Fail => {
            let text = String::from_utf8_lossy(body);
            let excerpt: String = text
                .trim()
                .chars()
                .take(crate::state::runs::MESSAGE_EXCERPT)
                .collect();
            updates.push(RunUpdate {
                runtime: started.map(|s| (now - s).max(0.0)),
                exception: Some("CheckInFailed".into()),
                message: (!excerpt.is_empty()).then(|| super::mask_url_passwords(&excerpt)),
                ..at("failed")
            });
        }
    }
    let retention = store.run_retention()?;
    store.record_runs(&updates, retention, now)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_stored_hashed() {
        let a = new_token().expect("urandom");
        let b = new_token().expect("urandom");
        assert!(well_formed(&a) && well_formed(&b) && a != b);
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), a);
        assert!(!well_formed("short") && !well_formed(&"g".repeat(64)));
        assert_eq!(Signal::parse("start"), Some(Signal::Start));
        assert_eq!(Signal::parse(""), Some(Signal::Success));
        assert_eq!(Signal::parse("log"), None);
    }
}
