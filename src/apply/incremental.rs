//! Incremental work for the `watch` daemon: compile a new revision re-reading only the
//! manifest files git says changed, and reconcile it against the state the daemon last
//! applied instead of observing every key (see [`super::reconcile_from`]).
//!
//! Correctness rule: everything here must give exactly what the full path gives (the
//! differential test `tests/cli/test_perf_incremental.rs` checks plans and the resulting
//! Redis state over a generated history).

use std::collections::BTreeMap;

use git2::Repository;

use super::{Options, Revision};
use crate::desired::DesiredState;
use crate::manifest::{self, LoadedFiles};
use crate::render::RevisionInfo;
use crate::source::{self, BlobFile};
use crate::state::{self, Image, Keys, Observed, Release};
use crate::CompileError;

/// What the live state was left as by the last reconcile of this process.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// The applied commit.
    pub revision: String,
    /// The generation the reconcile left (its own apply, or the one it found for a no-op).
    pub generation: u64,
    /// The applied desired state.
    pub state: DesiredState,
    /// The managed keys as they were left (with the digests hash).
    pub image: Image,
    /// The release recorded with them.
    pub release: Release,
}

impl Baseline {
    /// Whether `head` (from [`crate::state::Store::observe_head`]) shows the live state
    /// still as this baseline left it: same revision, same generation, current layout.
    pub fn matches(&self, head: &Observed) -> bool {
        head.layout.as_deref() == Some(state::LAYOUT_VERSION)
            && head.generation == self.generation
            && head.applied.get("revision") == Some(&self.revision)
    }

    /// Whether every object removed from git since the baseline would be removed (the
    /// baseline path cannot keep objects: keeping needs their live keys).
    pub fn prunes_all(&self, next: &DesiredState, opts: &Options) -> bool {
        self.state
            .objects
            .iter()
            .filter(|(id, _)| !next.objects.contains_key(*id))
            .all(|(_, o)| {
                opts.prune
                    && o.normalized["metadata"]["annotations"][super::PRUNE_ANNOTATION].as_str()
                        != Some("disabled")
            })
    }
}

/// The desired image of `next`, reusing the baseline's digests for unchanged values.
pub fn desired_image_from(
    keys: &Keys,
    baseline: &Baseline,
    next: &DesiredState,
    release: &Release,
) -> Image {
    let img = state::desired_image_undigested(keys, next, release);
    state::with_digests_reusing(keys, img, &baseline.image)
}

/// Counters of one [`Compiler::load`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Manifest files read and parsed.
    pub files_read: usize,
    /// Whether every file was read (no earlier revision, or the diff could not be used).
    pub full: bool,
}

/// A compiler that keeps the parsed files of the last revision it loaded, keyed by
/// path and blob id. Loading a descendant (or any other commit) re-reads only the blobs
/// that git's tree diff reports as added, modified or removed; validation and
/// compilation then run over the cached objects.
#[derive(Debug)]
pub struct Compiler {
    path: String,
    commit: Option<String>,
    files: BTreeMap<String, (git2::Oid, LoadedFiles)>,
    sources: BTreeMap<String, String>,
}

fn parse_one(f: &BlobFile) -> LoadedFiles {
    manifest::load_files(std::slice::from_ref(&f.file))
}

fn parse_all(files: &[BlobFile]) -> Vec<LoadedFiles> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(8);
    if threads < 2 || files.len() < 256 {
        return files.iter().map(parse_one).collect();
    }
    let per = files.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(per)
            .map(|chunk| s.spawn(move || chunk.iter().map(parse_one).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

impl Compiler {
    /// A compiler for the manifests under `path` (relative to the repository root).
    pub fn new(path: &str) -> Self {
        Compiler {
            path: path.to_string(),
            commit: None,
            files: BTreeMap::new(),
            sources: BTreeMap::new(),
        }
    }

    /// Loads, validates and compiles `rev` of `repo` like [`super::load_revision`].
    ///
    /// # Errors
    /// As [`super::load_revision`].
    pub fn load(
        &mut self,
        repo: &Repository,
        rev: &str,
    ) -> Result<(Revision, LoadStats), CompileError> {
        let commit = source::resolve_commit(repo, rev)?.id().to_string();
        let changes = match &self.commit {
            Some(prev) => source::changed_files(repo, prev, &commit, &self.path).ok(),
            None => None,
        };
        let stats = match changes {
            Some(ch) => {
                for p in &ch.removed {
                    self.files.remove(p);
                    self.sources.remove(p);
                }
                for w in &ch.written {
                    self.files
                        .insert(w.file.path.clone(), (w.blob, parse_one(w)));
                    self.sources
                        .insert(w.file.path.clone(), w.file.text.clone());
                }
                LoadStats {
                    files_read: ch.written.len(),
                    full: false,
                }
            }
            None => {
                self.commit = None;
                self.files.clear();
                self.sources.clear();
                let (_, files) = source::read_git_blobs(repo, &commit, &self.path)?;
                let parsed = parse_all(&files);
                for (f, l) in files.into_iter().zip(parsed) {
                    self.files.insert(f.file.path.clone(), (f.blob, l));
                    self.sources.insert(f.file.path, f.file.text);
                }
                LoadStats {
                    files_read: self.files.len(),
                    full: true,
                }
            }
        };
        self.commit = Some(commit.clone());
        let mut loaded = LoadedFiles::default();
        for (_, l) in self.files.values() {
            loaded.objects.extend(l.objects.iter().cloned());
            loaded.diagnostics.extend(l.diagnostics.iter().cloned());
            loaded.undecoded.extend(l.undecoded.iter().cloned());
        }
        let revision = RevisionInfo {
            rev: rev.to_string(),
            commit: Some(commit.clone()),
        };
        let sources = &self.sources;
        let compiled = crate::compile_loaded(revision, loaded, |d| {
            crate::diagnostic::attach_source_lines(d, sources);
        })?;
        let subject = source::commit_subject(repo, &commit)?;
        let release = source::release_id(repo, &commit, &compiled.state.deploy.paths)?;
        Ok((
            Revision {
                compiled,
                subject,
                release,
            },
            stats,
        ))
    }
}
