//! Celery Beat for a cluster: what it would send (`beat --dry-run`, [`forecast`]), and
//! running and supervising it ([`supervise`]). Whether a beat is healthy is a finding of
//! [`crate::drift::beat_health`].
//!
//! Owns: the forecast of a compiled revision's schedules, the `celery beat` process and
//! its heartbeat.
//! Must not know: YAML, git, output formats.

pub mod forecast;
pub mod supervise;

pub use forecast::{forecast, Firing, Forecast, QueueForecast};
pub use supervise::{beat_command, Config, Stopped};
