//! celeroot: a GitOps control plane for fleets of Linux hosts running Celery workers.
//!
//! The data path is one straight line, and each stage is a module:
//!
//! ```text
//! source (git revision) → manifest (YAML → typed objects with file:line)
//!   → validate → desired (compile) → plan (diff) → render
//! ```
//!
//! The live path continues: `state` (observe Redis) → `apply` (one atomic script) →
//! record (applied revision, history, events) → `drift`. The `daemon` (`celeroot watch`)
//! runs that path on every push and resync. SSH deploys and the host agent arrive with
//! later milestones; see docs/architecture.md.

pub mod agent;
pub mod apply;
pub mod beat;
pub mod celery;
pub mod cli;
pub mod contract;
pub mod daemon;
pub mod deploy;
pub mod desired;
pub mod diagnostic;
pub mod drift;
pub mod edit;
pub mod import;
pub mod init;
pub mod manifest;
pub mod plan;
pub mod render;
pub mod runs;
pub mod source;
pub mod state;
pub mod validate;

use std::collections::BTreeMap;

use desired::DesiredState;
use diagnostic::Diagnostic;
use render::RevisionInfo;
use source::{Snapshot, SourceError};

/// A revision loaded, validated and compiled.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub revision: RevisionInfo,
    /// Shared: the daemon keeps revisions and baselines of large fleets without copying them.
    pub state: std::sync::Arc<DesiredState>,
    /// Validation warnings (with source lines attached).
    pub warnings: Vec<Diagnostic>,
}

/// Why a revision could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{} is invalid: {} error(s)", revision.describe(), diagnostics.iter().filter(|d| d.is_error()).count())]
    Invalid {
        revision: RevisionInfo,
        /// All diagnostics (errors and warnings), with source lines attached.
        diagnostics: Vec<Diagnostic>,
    },
}

/// Loads, validates and compiles the files of one snapshot. Nothing is written anywhere.
///
/// # Errors
/// [`CompileError::Invalid`] with every diagnostic when any manifest is invalid.
pub fn compile_snapshot(snapshot: Snapshot) -> Result<Compiled, CompileError> {
    let revision = RevisionInfo {
        rev: snapshot.label,
        commit: snapshot.commit,
    };
    let loaded = manifest::load_files(&snapshot.files);
    compile_loaded(revision, loaded, |diags| {
        // Source lines are only needed for diagnostics: build the map then (cloning
        // every file of a large fleet costs more than the diagnostics).
        let sources: BTreeMap<String, String> = snapshot
            .files
            .iter()
            .map(|f| (f.path.clone(), f.text.clone()))
            .collect();
        diagnostic::attach_source_lines(diags, &sources);
    })
}

/// Validates and compiles files already loaded. `attach` adds source lines to
/// diagnostics; it is called only when there are some.
///
/// # Errors
/// [`CompileError::Invalid`] with every diagnostic when any manifest is invalid.
pub fn compile_loaded(
    revision: RevisionInfo,
    loaded: manifest::LoadedFiles,
    attach: impl FnOnce(&mut Vec<Diagnostic>),
) -> Result<Compiled, CompileError> {
    let (compiled, manifests, _) = compile_loaded_keeping(revision, loaded, attach)?;
    // Freeing a large fleet's parsed manifests takes a while: not on this path.
    apply::incremental::drop_later(manifests);
    Ok(compiled)
}

/// [`compile_loaded`], also returning the validated manifests and the diagnostics
/// [`validate::Kept`] (each file's own, each schedule's cross-object ones), which the incremental compiler keeps to compile the next revision per
/// object.
///
/// # Errors
/// As [`compile_loaded`].
pub fn compile_loaded_keeping(
    revision: RevisionInfo,
    loaded: manifest::LoadedFiles,
    attach: impl FnOnce(&mut Vec<Diagnostic>),
) -> Result<(Compiled, validate::Manifests, validate::Kept), CompileError> {
    match validate::validate_keeping(loaded) {
        Ok((v, kept)) => {
            let mut warnings = v.warnings;
            if !warnings.is_empty() {
                attach(&mut warnings);
            }
            let state = std::sync::Arc::new(desired::compile(&v.manifests));
            let compiled = Compiled {
                revision,
                state,
                warnings,
            };
            Ok((compiled, v.manifests, kept))
        }
        Err(mut diagnostics) => {
            attach(&mut diagnostics);
            Err(CompileError::Invalid {
                revision,
                diagnostics,
            })
        }
    }
}
