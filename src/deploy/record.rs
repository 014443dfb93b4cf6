//! What a rollout leaves behind: the per-host deploy records (`drift` and `status` read
//! them) and one `deploy` event, written by the library for every front end.
//!
//! Owns: [`ship`] (a rollout, then its records) and [`record`]. Must not know: the command
//! line, how progress is shown.

use std::collections::BTreeMap;

use super::host::Outcome;
use super::rollout::{rollout, Report};
use super::ssh::SshOptions;
use crate::desired::DesiredState;
use crate::source::SourceError;
use crate::state::events::What;
use crate::state::{RedisUrl, StateError, Store};

/// One rollout to run: a release of a commit to some hosts of a compiled state.
pub struct Ship<'a> {
    pub repo: &'a git2::Repository,
    pub commit: &'a str,
    pub release: &'a str,
    pub state: &'a DesiredState,
    pub hosts: &'a [String],
    pub ssh: &'a SshOptions,
    /// Only report which hosts are out of date (nothing is changed or recorded).
    pub check: bool,
    /// Where to record the results; `None` records nothing.
    pub redis: Option<&'a RedisUrl>,
    /// Who ran it, for the event.
    pub actor: &'a str,
}

/// A rollout's report, and why its records could not be written, if they could not (a
/// deploy does not need Redis: recording is best effort).
#[derive(Debug)]
pub struct Shipped {
    pub report: Report,
    pub unrecorded: Option<StateError>,
}

/// Runs the rollout, calling `progress` as each host finishes, then records the results
/// (not for a check).
///
/// # Errors
/// Only when the release cannot be staged locally (git or disk); host failures are results.
pub fn ship(s: &Ship<'_>, progress: &dyn super::rollout::Progress) -> Result<Shipped, SourceError> {
    let report = rollout(
        s.repo, s.commit, s.release, s.state, s.hosts, s.ssh, s.check, progress,
    )?;
    let unrecorded = match s.redis.filter(|_| !s.check) {
        None => None,
        Some(url) => Store::connect(url, &s.state.cluster)
            .and_then(|mut store| record(&mut store, &report, s.actor, chrono::Utc::now()))
            .err(),
    };
    Ok(Shipped { report, unrecorded })
}

/// Writes the per-host records (skipped hosts keep their previous record) and one
/// `deploy` event with the counts.
///
/// # Errors
/// Redis errors.
pub fn record(
    store: &mut Store,
    report: &Report,
    actor: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), StateError> {
    let at = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let entries: BTreeMap<String, String> = report
        .hosts
        .iter()
        .filter(|h| h.outcome != Outcome::Skipped)
        .map(|h| {
            (
                h.host.clone(),
                serde_json::json!({
                    "release": h.current,
                    "outcome": h.outcome.label(),
                    "previous": h.previous,
                    "wanted": report.release,
                    "at": at,
                })
                .to_string(),
            )
        })
        .collect();
    let event = crate::state::Event {
        ts: at,
        ..crate::state::Event::now(
            actor,
            &report.revision,
            What::Deployed {
                release: report.release.clone(),
                ok: report.succeeded(),
                deployed: report.count(Outcome::Deployed),
                failed: report.count(Outcome::Failed),
                rolled_back: report.count(Outcome::RolledBack),
                skipped: report.count(Outcome::Skipped),
            },
        )
    };
    store.claim_database()?;
    store.record_deploys(&entries)?;
    store.record_event(&event)
}
