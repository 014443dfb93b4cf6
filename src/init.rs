//! `init`: scaffolding a new config repository.
//!
//! Owns: the files a new config repository starts with: the bundled example manifests
//! (the same files as `manifests/` in this repository, embedded at build time), the
//! generated JSON Schemas, a README, a GitHub workflow for pull-request checks, and the
//! worker scaffold (the `tasks/` Celery package and its pinned `pyproject.toml`, from
//! `templates/config-repo/`).
//! Never overwrites a file that exists.
//! Must not know: how manifests are validated or compiled.

use std::path::{Path, PathBuf};

macro_rules! embedded {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../", $path)))),*]
    };
}

/// The example manifests, as `(path, contents)`; a test keeps this list in sync with `manifests/`.
pub const EXAMPLE_MANIFESTS: &[(&str, &str)] = embedded![
    "manifests/cluster.yaml",
    "manifests/roles/application.yaml",
    "manifests/roles/database.yaml",
    "manifests/roles/webserver.yaml",
    "manifests/hosts/app01.yaml",
    "manifests/hosts/db01.yaml",
    "manifests/hosts/db02.yaml",
    "manifests/hosts/web01.yaml",
    "manifests/hosts/web02.yaml",
    "manifests/schedules/billing-sync.yaml",
    "manifests/schedules/cache-warmup.yaml",
    "manifests/schedules/db-backup.yaml",
    "manifests/schedules/fleet-ping.yaml",
    "manifests/schedules/replica-check.yaml",
    "manifests/schedules/rotate-logs.yaml",
    "manifests/schedules/security-updates.yaml",
];

const README: &str = include_str!("../templates/config-repo/README.md");
const WORKFLOW: &str = include_str!("../templates/config-repo/celeroot.yml");

/// The worker scaffold, as `(path in the new repository, contents)`.
pub const WORKER_SCAFFOLD: &[(&str, &str)] = &[
    (
        "tasks/__init__.py",
        include_str!("../templates/config-repo/tasks/__init__.py"),
    ),
    (
        "tasks/app.py",
        include_str!("../templates/config-repo/tasks/app.py"),
    ),
    (
        "tasks/system.py",
        include_str!("../templates/config-repo/tasks/system.py"),
    ),
    (
        "pyproject.toml",
        include_str!("../templates/config-repo/pyproject.toml"),
    ),
];

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    /// It existed and was left as it was.
    Kept,
}

#[derive(Debug, Default)]
pub struct InitReport {
    pub git_initialized: bool,
    /// Paths relative to the target directory, in creation order.
    pub files: Vec<(String, Outcome)>,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("git init in {path}: {source}")]
    Git {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
}

/// The pull-request workflow, pinned to this celeroot's version.
pub fn workflow() -> String {
    WORKFLOW.replace("@CELEROOT_VERSION@", env!("CARGO_PKG_VERSION"))
}

/// Every file `init` writes, as `(relative path, contents)`.
pub fn files() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = EXAMPLE_MANIFESTS
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    for (name, text) in crate::manifest::schema::all_schemas() {
        out.push((format!("schemas/{name}"), text));
    }
    out.push(("README.md".into(), README.into()));
    out.push((".github/workflows/celeroot.yml".into(), workflow()));
    out.extend(
        WORKER_SCAFFOLD
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string())),
    );
    out
}

/// Creates the config repository in `dir`.
///
/// # Errors
/// I/O errors writing files, or git errors creating the repository.
pub fn scaffold(dir: &Path) -> Result<InitReport, InitError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InitError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut report = InitReport::default();
    if git2::Repository::discover(dir).is_err() {
        // `main`, whatever git's `init.defaultBranch` says: the workflow and
        // `watch --branch` expect it.
        let mut opts = git2::RepositoryInitOptions::new();
        opts.initial_head("main");
        git2::Repository::init_opts(dir, &opts).map_err(|source| InitError::Git {
            path: dir.to_path_buf(),
            source,
        })?;
        report.git_initialized = true;
    }
    for (rel, text) in files() {
        let path = dir.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let created = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                std::io::Write::write_all(&mut f, text.as_bytes()).map_err(io(&path))?;
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(io(&path)(e)),
        };
        report.files.push((
            rel,
            if created {
                Outcome::Created
            } else {
                Outcome::Kept
            },
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_workflow_finds_its_comment_by_the_markdown_marker() {
        let workflow = super::workflow();
        let marker = crate::render::MARKDOWN_MARKER;
        assert!(
            workflow.contains(&format!("startswith(\"{marker}\")")),
            "{workflow}"
        );
        assert!(!workflow.contains("@CELEROOT_VERSION@"));
        let action = include_str!("../action.yml");
        assert!(action.contains(&format!("startswith(\"{marker}\")")));
        assert!(!action.contains("2>/dev/null"));
    }
}
