//! Integration tests: the real `celeroot` binary against real git repositories in temp dirs.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failed expectation is the report

mod common;
mod test_agent;
mod test_alerts;
mod test_backup;
mod test_beat;
mod test_checks;
mod test_contract;
mod test_control;
mod test_credentials;
mod test_deploy;
mod test_diff;
mod test_drift;
mod test_edit;
mod test_end_to_end;
mod test_env;
mod test_ha;
mod test_hosts;
mod test_import;
mod test_init;
mod test_invalid_corpus;
mod test_perf_incremental;
mod test_pr;
mod test_rabbitmq;
mod test_reconcile;
mod test_runs;
mod test_scaffold;
mod test_schedules;
mod test_schema;
mod test_security;
mod test_story;
mod test_task;
mod test_usage;
mod test_validate;
mod test_watch;
