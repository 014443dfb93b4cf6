//! Celery Beat for a cluster: what it would send (`beat --dry-run`, [`forecast`]), running
//! and supervising it ([`supervise`]), and whether one is healthy ([`health`]).
//!
//! Owns: the forecast of a compiled revision's schedules, the `celery beat` process and
//! its heartbeat, and the rule for a healthy beat.
//! Must not know: YAML, git, output formats.

pub mod forecast;
pub mod supervise;

pub use forecast::{forecast, Firing, Forecast, QueueForecast};
pub use supervise::{beat_command, Config, Stopped};

use crate::state::BeatHeartbeat;

/// What is wrong with a cluster's beat, if anything: `None` when a beat is active (its
/// heartbeat is live: the key has a TTL) and RedBeat's lock is held.
pub fn health(beats: &[BeatHeartbeat], lock_ttl_ms: Option<u64>) -> Option<BeatProblem> {
    let live: Vec<&BeatHeartbeat> = beats.iter().filter(|b| b.status != "stopped").collect();
    if live.is_empty() {
        return Some(BeatProblem::Missing);
    }
    if live.iter().any(|b| b.status == "active") && lock_ttl_ms.is_some() {
        return None;
    }
    Some(BeatProblem::Inactive {
        statuses: live
            .iter()
            .map(|b| format!("{} {}", b.id, b.status))
            .collect(),
    })
}

/// Why the beat is not healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeatProblem {
    /// No `celeroot beat` heartbeats: nothing sends the schedules.
    Missing,
    /// Beats run but none holds the lock and sends (a failover in progress, or all of
    /// them restarting).
    Inactive { statuses: Vec<String> },
}

impl BeatProblem {
    /// The finding's kind: `beat-missing` or `beat-inactive`.
    pub fn kind(&self) -> &'static str {
        match self {
            BeatProblem::Missing => "beat-missing",
            BeatProblem::Inactive { .. } => "beat-inactive",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            BeatProblem::Missing => "no `celeroot beat` is running for this cluster (no beat heartbeat): schedules do not fire".into(),
            BeatProblem::Inactive { statuses } => format!(
                "no beat holds RedBeat's lock and sends ({}): schedules do not fire until one does",
                statuses.join(", ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(id: &str, status: &str) -> BeatHeartbeat {
        BeatHeartbeat {
            id: id.into(),
            status: status.into(),
            ..BeatHeartbeat::default()
        }
    }

    #[test]
    fn a_beat_is_healthy_when_one_is_active_and_the_lock_is_held() {
        assert_eq!(health(&[], None), Some(BeatProblem::Missing));
        assert_eq!(
            health(&[beat("a", "stopped")], None),
            Some(BeatProblem::Missing)
        );
        assert_eq!(
            health(&[beat("a", "active"), beat("b", "standby")], Some(9000)),
            None
        );
        assert_eq!(
            health(&[beat("b", "standby")], Some(9000)).map(|p| p.kind()),
            Some("beat-inactive")
        );
        // An "active" heartbeat without the lock: the lock expired under it.
        assert_eq!(
            health(&[beat("a", "active")], None).map(|p| p.kind()),
            Some("beat-inactive")
        );
    }
}
