//! Sources: the manifest files of one revision, read from git objects or from disk.
//!
//! Owns: opening repositories, resolving revisions, and listing `*.yaml`/`*.yml` files
//! under the manifests path, straight from the git object database (no checkout, so a
//! dirty work tree does not matter) or from the work tree (`--worktree`).
//! Must not know: YAML, manifests, or what the files mean.

pub mod remote;

use std::path::{Path, PathBuf};

use git2::{ObjectType, Repository, Tree};

/// Files larger than this are rejected (manifests are small; this bounds memory).
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// The default manifests path, relative to the repository root.
pub const DEFAULT_MANIFESTS_PATH: &str = "manifests";

/// One manifest file: its path relative to the repository root, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

/// The manifest files of one revision.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// What the user asked for (`HEAD~1`, `main`, `worktree`).
    pub label: String,
    /// The full commit id, when read from git.
    pub commit: Option<String>,
    pub files: Vec<SourceFile>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path} is not inside a git repository (pass --repo PATH, or --worktree to read files from disk)")]
    NotARepository { path: String },
    #[error("unknown revision `{rev}`: {detail}")]
    UnknownRevision { rev: String, detail: String },
    #[error("manifests path `{path}` does not exist at {at}")]
    MissingPath { path: String, at: String },
    #[error("manifests path `{path}` at {at} is not a directory")]
    NotADirectory { path: String, at: String },
    #[error("invalid manifests path `{path}`: expected a relative path inside the repository without `..`")]
    BadPath { path: String },
    #[error("{path}: file is {size} bytes, larger than the {limit}-byte limit for manifests")]
    FileTooLarge {
        path: String,
        size: usize,
        limit: usize,
    },
    #[error("{path}: file is not valid UTF-8")]
    NotUtf8 { path: String },
    #[error("{path}: symbolic links are not supported in the manifests path")]
    Symlink { path: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("git: {0}")]
    Git(#[from] git2::Error),
}

/// Opens the repository containing `path` (or the current directory).
///
/// # Errors
/// [`SourceError::NotARepository`] when no repository contains the path.
pub fn open_repo(path: Option<&Path>) -> Result<Repository, SourceError> {
    let p = path
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Repository::discover(&p).map_err(|_| SourceError::NotARepository {
        path: p.display().to_string(),
    })
}

/// Normalises the manifests path (`./manifests/` → `manifests`); `.` means the root.
///
/// # Errors
/// [`SourceError::BadPath`] for absolute paths or paths with `..`.
pub fn normalize_path(path: &str) -> Result<String, SourceError> {
    let bad = || SourceError::BadPath {
        path: path.to_string(),
    };
    if path.starts_with('/') || path.contains('\\') {
        return Err(bad());
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(bad()),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

fn is_manifest_name(name: &str) -> bool {
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

fn text_of(path: String, bytes: &[u8]) -> Result<SourceFile, SourceError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(SourceError::FileTooLarge {
            path,
            size: bytes.len(),
            limit: MAX_FILE_BYTES,
        });
    }
    match std::str::from_utf8(bytes) {
        Ok(t) => Ok(SourceFile {
            path,
            text: t.strip_prefix('\u{feff}').unwrap_or(t).to_string(),
        }),
        Err(_) => Err(SourceError::NotUtf8 { path }),
    }
}

/// Resolves `rev` to a commit id.
///
/// # Errors
/// [`SourceError::UnknownRevision`] when git cannot resolve it to a commit.
pub fn resolve_commit<'r>(
    repo: &'r Repository,
    rev: &str,
) -> Result<git2::Commit<'r>, SourceError> {
    let unknown = |e: git2::Error| SourceError::UnknownRevision {
        rev: rev.to_string(),
        detail: e.message().to_string(),
    };
    repo.revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(unknown)
}

/// Reads the manifest files under `path` at revision `rev` from the object database.
///
/// # Errors
/// Unknown revision, missing path, oversized or non-UTF-8 files, symlinks.
pub fn read_git(repo: &Repository, rev: &str, path: &str) -> Result<Snapshot, SourceError> {
    let path = normalize_path(path)?;
    let commit = resolve_commit(repo, rev)?;
    let at = format!("{rev} ({})", short(&commit.id().to_string()));
    let root = commit.tree()?;
    let tree = if path.is_empty() {
        root
    } else {
        let entry = root
            .get_path(Path::new(&path))
            .map_err(|_| SourceError::MissingPath {
                path: path.clone(),
                at: at.clone(),
            })?;
        if entry.kind() != Some(ObjectType::Tree) {
            return Err(SourceError::NotADirectory { path, at });
        }
        repo.find_tree(entry.id())?
    };
    let mut files = Vec::new();
    collect_tree(repo, &tree, &path, &mut files)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Snapshot {
        label: rev.to_string(),
        commit: Some(commit.id().to_string()),
        files,
    })
}

fn collect_tree(
    repo: &Repository,
    tree: &Tree<'_>,
    prefix: &str,
    out: &mut Vec<SourceFile>,
) -> Result<(), SourceError> {
    for entry in tree.iter() {
        let Ok(name) = entry.name() else { continue };
        let full = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        match entry.kind() {
            Some(ObjectType::Tree) if !name.starts_with('.') => {
                let sub = repo.find_tree(entry.id())?;
                collect_tree(repo, &sub, &full, out)?;
            }
            Some(ObjectType::Blob) if is_manifest_name(name) => {
                if entry.filemode() == 0o120000 {
                    return Err(SourceError::Symlink { path: full });
                }
                let blob = repo.find_blob(entry.id())?;
                out.push(text_of(full, blob.content())?);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Reads the manifest files under `root/path` from disk.
///
/// # Errors
/// Missing path, unreadable, oversized or non-UTF-8 files, symlinks.
pub fn read_worktree(root: &Path, path: &str) -> Result<Snapshot, SourceError> {
    let path = normalize_path(path)?;
    let dir = root.join(&path);
    let meta = std::fs::symlink_metadata(&dir).map_err(|_| SourceError::MissingPath {
        path: path.clone(),
        at: "the work tree".into(),
    })?;
    if !meta.is_dir() {
        return Err(SourceError::NotADirectory {
            path,
            at: "the work tree".into(),
        });
    }
    let mut files = Vec::new();
    collect_dir(&dir, &path, &mut files)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Snapshot {
        label: "worktree".into(),
        commit: None,
        files,
    })
}

fn collect_dir(dir: &Path, prefix: &str, out: &mut Vec<SourceFile>) -> Result<(), SourceError> {
    let io = |path: &str| {
        let path = path.to_string();
        move |source| SourceError::Io { path, source }
    };
    for entry in std::fs::read_dir(dir).map_err(io(prefix))? {
        let entry = entry.map_err(io(prefix))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let full = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let ft = entry.file_type().map_err(io(&full))?;
        if name.starts_with('.') {
            continue;
        }
        if ft.is_dir() {
            collect_dir(&entry.path(), &full, out)?;
        } else if is_manifest_name(&name) {
            if ft.is_symlink() {
                return Err(SourceError::Symlink { path: full });
            }
            let len = entry.metadata().map_err(io(&full))?.len();
            if len > MAX_FILE_BYTES as u64 {
                return Err(SourceError::FileTooLarge {
                    path: full,
                    size: usize::try_from(len).unwrap_or(usize::MAX),
                    limit: MAX_FILE_BYTES,
                });
            }
            let bytes = std::fs::read(entry.path()).map_err(io(&full))?;
            out.push(text_of(full, &bytes)?);
        }
    }
    Ok(())
}

/// The release id of a commit: derived from the git object ids of the shipped paths, so
/// an unchanged tree gives the same id. `None` when the commit ships none of them.
///
/// # Errors
/// Git errors reading the commit.
pub fn release_id(
    repo: &Repository,
    commit: &str,
    paths: &[String],
) -> Result<Option<String>, SourceError> {
    use sha2::{Digest, Sha256};
    let commit = resolve_commit(repo, commit)?;
    let tree = commit.tree()?;
    let mut h = Sha256::new();
    let mut any = false;
    for p in paths {
        if let Ok(entry) = tree.get_path(Path::new(p)) {
            any = true;
            h.update(p.as_bytes());
            h.update([0]);
            h.update(entry.id().as_bytes());
        }
    }
    Ok(any.then(|| format!("r-{}", &format!("{:x}", h.finalize())[..12])))
}

/// The first line of a commit's message.
///
/// # Errors
/// Unknown revision.
pub fn commit_subject(repo: &Repository, rev: &str) -> Result<String, SourceError> {
    Ok(resolve_commit(repo, rev)?
        .summary()
        .ok()
        .flatten()
        .unwrap_or_default()
        .to_string())
}

/// Whether `descendant` has `ancestor` in its history (or is it).
pub fn is_descendant(repo: &Repository, descendant: &str, ancestor: &str) -> Option<bool> {
    let d = git2::Oid::from_str(descendant).ok()?;
    let a = git2::Oid::from_str(ancestor).ok()?;
    repo.find_commit(a).ok()?;
    if d == a {
        return Some(true);
    }
    repo.graph_descendant_of(d, a).ok()
}

/// The first 8 characters of a commit id.
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_and_confined() {
        assert_eq!(
            normalize_path("./manifests/").ok().as_deref(),
            Some("manifests")
        );
        assert_eq!(normalize_path(".").ok().as_deref(), Some(""));
        assert!(normalize_path("../etc").is_err());
        assert!(normalize_path("/etc").is_err());
    }
}
