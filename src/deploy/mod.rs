//! Deploy: reaching hosts over SSH.
//!
//! Owns: building `ssh` invocations from each host's effective SSH settings (argv only,
//! every remote argument quoted on its own), classifying connection failures, and probing
//! hosts (`celeroot hosts test-connection`).
//! Must not know: YAML, Redis, or output formats.
//!
//! Status: connections and facts are built; shipping releases (rsync with `--link-dest`,
//! the atomic `current` switch, restart, health checks, rollback, rolling and canary
//! strategies) is not built yet. See docs/deploy.md.

pub mod facts;
pub mod ssh;

pub use facts::{probe, probe_all, Facts, Probe};
pub use ssh::{shell_quote, Failure, SshOptions};
