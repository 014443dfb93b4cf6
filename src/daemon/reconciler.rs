//! The daemon's contract, like kube-runtime's controller: every attempt ends in an
//! [`Action`], and a failed attempt is turned into one by [`error_policy`], a pure
//! function of the error and the number of failures in a row. The worker only carries the
//! action out.
//!
//! Owns: retry, give-up and step-down decisions, and the back-off curve. Must not know:
//! metrics, `/status`, logs (see [`super::events`]).

use std::time::Duration;

use crate::apply::ApplyError;
use crate::state::StateError;

/// First retry delay after a failure; doubled up to [`BACKOFF_MAX`].
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// The longest delay between retries.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the daemon does after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Try the same revision again after this long.
    Requeue(Duration),
    /// Nothing to retry: wait for a new revision (a push, a file change) or an operator.
    AwaitChange,
    /// This daemon is no longer the leader: stop writing and campaign again.
    StepDown,
}

/// The action after `attempts` failures in a row (1 for the first), the last one `e`.
pub fn error_policy(e: &ApplyError, attempts: u32) -> Action {
    match e {
        // A guard refused: the same revision is refused again; a push or an operator
        // (`--allow-...` from the CLI) moves on.
        ApplyError::MassDelete { .. }
        | ApplyError::Rollback { .. }
        | ApplyError::State(StateError::SharedDatabase { .. }) => Action::AwaitChange,
        ApplyError::State(StateError::Fenced(_)) => Action::StepDown,
        // Everything else can pass by itself: Redis back, the lease released, a
        // concurrent writer done.
        ApplyError::State(_) | ApplyError::Fault(_) => Action::Requeue(backoff(attempts)),
    }
}

/// The delay before retry number `attempts` (1 for the first): [`BACKOFF_BASE`] doubled
/// per failure, at most [`BACKOFF_MAX`]. Without jitter; see [`jitter`].
pub fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    BACKOFF_BASE
        .saturating_mul(1u32 << doublings)
        .min(BACKOFF_MAX)
}

/// `d` scaled by a factor in [0.8, 1.2) taken from `seed` (the clock's low bits), so
/// replicas that failed together do not retry together.
pub fn jitter(d: Duration, seed: u32) -> Duration {
    d.mul_f64(0.8 + f64::from(seed % 400) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis_down() -> ApplyError {
        ApplyError::State(StateError::Connect {
            url: "redis://127.0.0.1:1/0".into(),
            reason: "refused".into(),
        })
    }

    #[test]
    fn transient_failures_requeue_with_a_doubling_capped_delay() {
        let delays: Vec<Duration> = (1..=9)
            .map(|n| match error_policy(&redis_down(), n) {
                Action::Requeue(d) => d,
                other => panic!("attempt {n}: {other:?}"),
            })
            .collect();
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(
            ms,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
        for e in [
            ApplyError::State(StateError::Locked(Box::new(crate::state::LeaseInfo {
                id: "9f2c".into(),
                holder: "bob@ci".into(),
                revision: "c0ffee".into(),
                since: "2026-11-23T12:00:00Z".into(),
                pid: 1,
                leader: None,
            }))),
            ApplyError::State(StateError::Conflict("changed".into())),
            ApplyError::Fault("before-apply".into()),
        ] {
            assert_eq!(error_policy(&e, 1), Action::Requeue(BACKOFF_BASE), "{e}");
        }
    }

    #[test]
    fn refusals_wait_for_a_change_and_fencing_steps_down() {
        let refused = ApplyError::MassDelete {
            removed: 4,
            live: 6,
            what: "hosts",
        };
        assert_eq!(error_policy(&refused, 1), Action::AwaitChange);
        assert_eq!(error_policy(&refused, 50), Action::AwaitChange);
        let rollback = ApplyError::Rollback {
            target: "HEAD~1".into(),
            applied: "c0ffee".into(),
            reason: "it is not a descendant of the applied revision",
        };
        assert_eq!(error_policy(&rollback, 3), Action::AwaitChange);
        let shared = ApplyError::State(StateError::SharedDatabase {
            owner: "production".into(),
            cluster: "staging".into(),
        });
        assert_eq!(error_policy(&shared, 1), Action::AwaitChange);
        let fenced = ApplyError::State(StateError::Fenced("lost".into()));
        assert_eq!(error_policy(&fenced, 1), Action::StepDown);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for seed in [0, 1, 199, 200, 399, 400, u32::MAX] {
            let d = jitter(Duration::from_secs(10), seed);
            assert!(
                d >= Duration::from_secs(8) && d < Duration::from_secs(12),
                "{seed}: {d:?}"
            );
        }
    }
}
