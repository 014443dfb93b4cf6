//! Deploy: reaching hosts over SSH.
//!
//! Owns: building `ssh` invocations from each host's effective SSH settings (argv only,
//! every remote argument quoted on its own), classifying connection failures, probing
//! hosts (`celeroot hosts test-connection`), reading releases from git objects into
//! per-host archives of only what each host lacks, and rolling them out (transfer, setup,
//! atomic switch, restart, health check, rollback, pruning; canaries, batches and a
//! failure budget). See docs/deploy.md.
//! Records of a rollout go through [`crate::state::Store`] ([`record`]).
//! Must not know: YAML, the Redis protocol, or output formats.

pub mod credentials;
pub mod facts;
pub mod host;
pub mod record;
pub mod release;
pub mod rollout;
pub mod ssh;

pub use facts::{probe, probe_all, Facts, Probe};
pub use host::{HostResult, Outcome};
pub use record::{record, ship, Ship, Shipped};
pub use rollout::{rollout, Announcement, Progress, Report};
pub use ssh::{shell_quote, Failure, SshOptions};
