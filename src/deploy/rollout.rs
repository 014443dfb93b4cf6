//! A rollout: one release to many hosts, canaries first, then batches of `maxParallel`,
//! stopped when a canary fails or the failure budget is spent. One failing host never
//! breaks the others: each host is its own job with its own result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::host::{HostResult, Job, Outcome};
use super::release::{self, Previous, Release, ReleasePart};
use super::ssh::SshOptions;
use crate::desired::{CompiledHost, DeploySettings, DesiredState};
use crate::source::SourceError;

/// The result of a rollout.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Version of this JSON structure (docs/deploy.md).
    pub format_version: u32,
    pub cluster: String,
    pub revision: String,
    pub release: String,
    pub check: bool,
    /// Why the rollout stopped early, if it did.
    pub stopped: Option<String>,
    pub hosts: Vec<HostResult>,
}

impl Report {
    pub fn count(&self, o: Outcome) -> usize {
        self.hosts.iter().filter(|h| h.outcome == o).count()
    }

    /// No host failed, was rolled back or was skipped.
    pub fn succeeded(&self) -> bool {
        self.count(Outcome::Failed) + self.count(Outcome::RolledBack) + self.count(Outcome::Skipped)
            == 0
    }
}

/// What a rollout is about to do, said before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub release: String,
    /// Hosts it will go through.
    pub hosts: usize,
    /// Hosts deployed at once after the canaries (`deploy.maxParallel`).
    pub parallel: usize,
    /// Hosts deployed one by one first (`deploy.canary`).
    pub canaries: usize,
    /// `--check`: only compare.
    pub check: bool,
}

impl std::fmt::Display for Announcement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.check {
            return write!(
                f,
                "checking release {} on {} host(s), {} at a time",
                self.release, self.hosts, self.parallel
            );
        }
        write!(
            f,
            "deploying release {} to {} host(s), {} at a time",
            self.release, self.hosts, self.parallel
        )?;
        if self.canaries > 0 {
            write!(f, ", after {} canary host(s) one by one", self.canaries)?;
        }
        Ok(())
    }
}

/// Who is told how a rollout goes: the terminal, the daemon's log. Each host is reported
/// once, when it is done (or skipped).
pub trait Progress: Sync {
    /// Before the first host.
    fn start(&self, _plan: &Announcement) {}
    /// A host is done.
    fn host(&self, r: &HostResult);
    /// After the last host.
    fn finish(&self) {}
}

/// A function of each finished host is a [`Progress`] that announces nothing.
impl<F: Fn(&HostResult) + Sync> Progress for F {
    fn host(&self, r: &HostResult) {
        self(r);
    }
}

/// A scratch directory removed on drop (connection sockets).
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> std::io::Result<Scratch> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!(
            "celeroot-{what}-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Ships `release_id` (the shipped paths of `commit`) to `hosts`, or with `check_only`
/// reports which are out of date. `progress` is called as each host finishes.
///
/// # Errors
/// Only when the release cannot be read from git; host failures are results.
#[allow(clippy::too_many_arguments)]
pub fn rollout(
    repo: &git2::Repository,
    commit: &str,
    release_id: &str,
    state: &DesiredState,
    hosts: &[String],
    ssh: &SshOptions,
    check_only: bool,
    progress: &dyn Progress,
) -> Result<Report, SourceError> {
    let io = |p: &Path| {
        let path = p.display().to_string();
        move |source| SourceError::Io { path, source }
    };
    // The release's files and checksums, read from git once; `--check` compares ids only.
    let release: Option<Release> = if check_only {
        None
    } else {
        Some(Release::read(
            repo,
            commit,
            release_id,
            &state.deploy.paths,
        )?)
    };
    let parts = release::PartCache::new(repo);
    let part_for = |previous: &Previous| -> Result<Arc<ReleasePart>, String> {
        match &release {
            Some(release) => parts.get(release, previous),
            None => Err("no release was read (`--check`)".into()),
        }
    };
    // Identifies this rollout in each host's deploy lock.
    let token = format!(
        "celeroot-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let sockets = Scratch::new("ssh").map_err(io(&std::env::temp_dir()))?;
    let opts = SshOptions {
        control_dir: Some(sockets.0.clone()),
        ..ssh.clone()
    };
    // Rendered files per host.
    let shared: BTreeMap<&str, BTreeMap<String, String>> = hosts
        .iter()
        .map(|name| {
            (
                name.as_str(),
                release::host_files(state, name, release_id).unwrap_or_default(),
            )
        })
        .collect();
    let jobs: Vec<(&String, &CompiledHost)> = hosts
        .iter()
        .filter_map(|n| state.hosts.get(n).map(|h| (n, &**h)))
        .collect();
    let run = |(name, host): (&String, &CompiledHost), canary: bool| -> HostResult {
        let empty = BTreeMap::new();
        let files = shared.get(name.as_str()).unwrap_or(&empty);
        let mut r = Job {
            name,
            token: &token,
            host,
            release_id,
            release_part: &part_for,
            shared: files,
            opts: &opts,
            check_only,
        }
        .run();
        r.canary = canary;
        progress.host(&r);
        r
    };
    let DeploySettings {
        max_parallel,
        canary,
        failure_budget,
        ..
    } = state.deploy.clone();
    let mut results: Vec<HostResult> = Vec::new();
    let mut stopped: Option<String> = None;
    let canaries = if check_only {
        0
    } else {
        (canary as usize).min(jobs.len())
    };
    progress.start(&Announcement {
        release: release_id.to_string(),
        hosts: jobs.len(),
        parallel: (max_parallel as usize).max(1).min(jobs.len().max(1)),
        canaries,
        check: check_only,
    });
    for job in &jobs[..canaries] {
        let r = run(*job, true);
        let failed = r.outcome.is_failure();
        let name = r.host.clone();
        results.push(r);
        if failed {
            stopped = Some(format!("canary {name} failed"));
            break;
        }
    }
    let mut rest = jobs[results.len()..].iter().copied();
    if stopped.is_none() {
        let batch = (max_parallel as usize).max(1);
        loop {
            let chunk: Vec<_> = rest.by_ref().take(batch).collect();
            if chunk.is_empty() {
                break;
            }
            let out: Vec<HostResult> = std::thread::scope(|s| {
                let handles: Vec<_> = chunk.iter().map(|j| s.spawn(|| run(*j, false))).collect();
                handles
                    .into_iter()
                    .zip(&chunk)
                    .map(|(h, (name, _))| {
                        h.join().unwrap_or_else(|_| {
                            let mut r = HostResult::new(name, Outcome::Failed);
                            r.detail = Some("the deploy thread panicked".into());
                            r
                        })
                    })
                    .collect()
            });
            results.extend(out);
            let failures = results.iter().filter(|r| r.outcome.is_failure()).count();
            if !check_only && failures > failure_budget as usize {
                stopped = Some(format!(
                    "{failures} host(s) failed, more than the failure budget ({failure_budget})"
                ));
                break;
            }
        }
    }
    if let Some(why) = &stopped {
        for (name, _) in rest {
            let mut r = HostResult::new(name, Outcome::Skipped);
            r.detail = Some(format!("not attempted: {why}"));
            progress.host(&r);
            results.push(r);
        }
    }
    progress.finish();
    // Close the shared connections now rather than when ControlPersist runs out.
    for (_, host) in &jobs {
        let args = super::ssh::exit_master_args(host, &opts);
        let _ = super::ssh::run(&args, std::time::Duration::from_secs(5));
    }
    Ok(Report {
        format_version: 1,
        cluster: state.cluster.clone(),
        revision: commit.to_string(),
        release: release_id.to_string(),
        check: check_only,
        stopped,
        hosts: results,
    })
}
