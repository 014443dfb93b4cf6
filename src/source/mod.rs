//! Sources: the manifest files of one revision, read from git objects or from disk.
//!
//! Owns: opening repositories, resolving revisions, and listing `*.yaml`/`*.yml` files
//! under the manifests path, straight from the git object database (no checkout, so a
//! dirty work tree does not matter) or from the work tree (`--worktree`).
//! Must not know: YAML, manifests, or what the files mean.

pub mod remote;

use std::path::{Path, PathBuf};

use git2::{ObjectType, Tree};

/// An open git repository (git2's), so front ends name it without depending on git2.
pub use git2::Repository;

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
    #[error("{path} is not inside a git repository")]
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
    #[error("commit {commit}: shipped tree entry {path:?} is unsafe: {reason}; the revision is refused and nothing was written")]
    UnsafeEntry {
        commit: String,
        path: String,
        reason: &'static str,
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
    let mut entries = Vec::new();
    list_tree(repo, &tree, &path, &mut entries)?;
    let mut files: Vec<SourceFile> = read_entries(repo, &entries)?
        .into_iter()
        .map(|b| b.file)
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Snapshot {
        label: rev.to_string(),
        commit: Some(commit.id().to_string()),
        files,
    })
}

/// One manifest blob found in a tree: its path, id, and whether it is a symbolic link
/// (an error, reported in path order when the files are read).
type TreeEntry = (String, git2::Oid, bool);

fn read_entry(
    repo: &Repository,
    (path, oid, symlink): &TreeEntry,
) -> Result<BlobFile, SourceError> {
    if *symlink {
        return Err(SourceError::Symlink { path: path.clone() });
    }
    let blob = repo.find_blob(*oid)?;
    Ok(BlobFile {
        file: text_of(path.clone(), blob.content())?,
        blob: *oid,
    })
}

/// Reads the blobs of `entries`, on every core for large trees (each thread opens its
/// own handle on the repository: a `Repository` is not shared between threads). The
/// error reported is the first in entry order, as when reading one by one.
fn read_entries(repo: &Repository, entries: &[TreeEntry]) -> Result<Vec<BlobFile>, SourceError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(8);
    if threads < 2 || entries.len() < 256 {
        return entries.iter().map(|e| read_entry(repo, e)).collect();
    }
    let dir = repo.path().to_path_buf();
    let per = entries.len().div_ceil(threads);
    let mut chunks = entries.chunks(per);
    let first = chunks.next().unwrap_or_default();
    let parts: Vec<Result<Vec<BlobFile>, SourceError>> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .map(|chunk| {
                let dir = dir.clone();
                s.spawn(move || {
                    let own = Repository::open(&dir)?;
                    chunk.iter().map(|e| read_entry(&own, e)).collect()
                })
            })
            .collect();
        let mine = first.iter().map(|e| read_entry(repo, e)).collect();
        std::iter::once(mine)
            .chain(
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))),
            )
            .collect()
    });
    let mut out = Vec::with_capacity(entries.len());
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

/// One manifest file with the id of its git blob (for caches keyed by content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobFile {
    pub file: SourceFile,
    pub blob: git2::Oid,
}

/// The manifest files of one commit with their blob ids: what [`read_git`] reads, for
/// callers that cache per blob. Returns the full commit id and the files sorted by path.
///
/// # Errors
/// As [`read_git`].
pub fn read_git_blobs(
    repo: &Repository,
    rev: &str,
    path: &str,
) -> Result<(String, Vec<BlobFile>), SourceError> {
    let path = normalize_path(path)?;
    let commit = resolve_commit(repo, rev)?;
    let tree = manifests_tree(repo, &commit, &path, rev)?;
    let mut entries = Vec::new();
    list_tree(repo, &tree, &path, &mut entries)?;
    let mut files = read_entries(repo, &entries)?;
    files.sort_by(|a, b| a.file.path.cmp(&b.file.path));
    Ok((commit.id().to_string(), files))
}

/// What changed in the manifests path between two commits, from git's tree diff: the
/// paths of manifest files that were removed or modified (`None`) and the new contents
/// of those added or modified. Only the changed blobs are read.
#[derive(Debug, Clone, Default)]
pub struct TreeChanges {
    /// The full id of the `to` commit.
    pub commit: String,
    pub removed: Vec<String>,
    pub written: Vec<BlobFile>,
}

/// The manifest files that differ between commits `from` and `to` under `path`.
///
/// # Errors
/// As [`read_git`] (for the files that changed), and git errors.
pub fn changed_files(
    repo: &Repository,
    from: &str,
    to: &str,
    path: &str,
) -> Result<TreeChanges, SourceError> {
    let path = normalize_path(path)?;
    let old = resolve_commit(repo, from)?;
    let new = resolve_commit(repo, to)?;
    let old_tree = manifests_tree(repo, &old, &path, from)?;
    let new_tree = manifests_tree(repo, &new, &path, to)?;
    let diff = repo.diff_tree_to_tree(Some(&old_tree), Some(&new_tree), None)?;
    let mut out = TreeChanges {
        commit: new.id().to_string(),
        ..TreeChanges::default()
    };
    let full = |rel: &Path| -> Option<String> {
        let rel = rel.to_str()?;
        let mut parts = rel.split('/').peekable();
        while let Some(p) = parts.next() {
            // Hidden directories are skipped; the file name must be a manifest's.
            if parts.peek().is_some() && p.starts_with('.') {
                return None;
            }
            if parts.peek().is_none() && !is_manifest_name(p) {
                return None;
            }
        }
        Some(if path.is_empty() {
            rel.to_string()
        } else {
            format!("{path}/{rel}")
        })
    };
    for delta in diff.deltas() {
        if let Some(p) = delta.old_file().path().and_then(full) {
            if delta.old_file().exists() && !delta.old_file().id().is_zero() {
                out.removed.push(p);
            }
        }
        let nf = delta.new_file();
        if let Some(p) = nf.path().and_then(full) {
            if nf.id().is_zero() || !nf.exists() {
                continue;
            }
            if u32::from(nf.mode()) == 0o120000 {
                return Err(SourceError::Symlink { path: p });
            }
            let blob = repo.find_blob(nf.id())?;
            out.written.push(BlobFile {
                file: text_of(p, blob.content())?,
                blob: nf.id(),
            });
        }
    }
    Ok(out)
}

fn manifests_tree<'r>(
    repo: &'r Repository,
    commit: &git2::Commit<'r>,
    path: &str,
    rev: &str,
) -> Result<Tree<'r>, SourceError> {
    let at = format!("{rev} ({})", short(&commit.id().to_string()));
    let root = commit.tree()?;
    if path.is_empty() {
        return Ok(root);
    }
    let entry = root
        .get_path(Path::new(path))
        .map_err(|_| SourceError::MissingPath {
            path: path.to_string(),
            at: at.clone(),
        })?;
    if entry.kind() != Some(ObjectType::Tree) {
        return Err(SourceError::NotADirectory {
            path: path.to_string(),
            at,
        });
    }
    Ok(repo.find_tree(entry.id())?)
}

fn list_tree(
    repo: &Repository,
    tree: &Tree<'_>,
    prefix: &str,
    out: &mut Vec<TreeEntry>,
) -> Result<(), SourceError> {
    for entry in tree {
        let Ok(name) = entry.name() else { continue };
        let full = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        match entry.kind() {
            Some(ObjectType::Tree) if !name.starts_with('.') => {
                let sub = repo.find_tree(entry.id())?;
                list_tree(repo, &sub, &full, out)?;
            }
            Some(ObjectType::Blob) if is_manifest_name(name) => {
                out.push((full, entry.id(), entry.filemode() == 0o120000));
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
/// Every entry under the shipped paths is checked first ([`shipped_files`]): a revision
/// whose trees hold a name that could leave the staging directory has no release.
///
/// # Errors
/// Git errors reading the commit; [`SourceError::UnsafeEntry`].
pub fn release_id(
    repo: &Repository,
    commit: &str,
    paths: &[String],
) -> Result<Option<String>, SourceError> {
    use sha2::{Digest, Sha256};
    let commit = resolve_commit(repo, commit)?;
    let tree = commit.tree()?;
    shipped_files(repo, &commit.id().to_string(), &tree, paths)?;
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

/// One file of a release: its path relative to the release root (`/`-separated, every
/// component checked by [`unsafe_name`]), its blob and its git file mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippedFile {
    pub path: String,
    pub blob: git2::Oid,
    pub mode: i32,
}

/// Why a tree entry name must not become a path component, after git's own
/// `verify_path` rules: `None` when it is safe.
pub fn unsafe_name(name: &[u8]) -> Option<&'static str> {
    if name.is_empty() {
        return Some("the name is empty");
    }
    if name == b"." || name == b".." {
        return Some("`.` and `..` are not file names");
    }
    if name.contains(&0) {
        return Some("the name contains a NUL byte");
    }
    if name.contains(&b'/') || name.contains(&b'\\') {
        return Some("the name contains a path separator (`/` or `\\`)");
    }
    if name.eq_ignore_ascii_case(b".git") {
        return Some("`.git` is reserved");
    }
    if std::str::from_utf8(name).is_err() {
        return Some("the name is not valid UTF-8");
    }
    None
}

/// Every file under the shipped `paths` of `tree` (of `commit`), sorted by path, after
/// checking every entry name on the way: no name may be empty, `.`, `..`, `.git`, hold a
/// separator or NUL; no tree may hold one name twice; no path may lead through a symbolic
/// link. Only tree objects are read, never blobs.
///
/// # Errors
/// [`SourceError::UnsafeEntry`] naming the commit and the entry; git errors.
pub fn shipped_files(
    repo: &Repository,
    commit: &str,
    tree: &Tree<'_>,
    paths: &[String],
) -> Result<Vec<ShippedFile>, SourceError> {
    let bad = |path: &str, reason: &'static str| SourceError::UnsafeEntry {
        commit: commit.to_string(),
        path: path.to_string(),
        reason,
    };
    let mut out: Vec<ShippedFile> = Vec::new();
    for p in paths {
        let Ok(entry) = tree.get_path(Path::new(p)) else {
            continue;
        };
        // The shipped path itself was validated with the manifests; each of its
        // components must still be a plain name.
        for c in p.split('/') {
            if let Some(reason) = unsafe_name(c.as_bytes()) {
                return Err(bad(p, reason));
            }
        }
        match entry.kind() {
            Some(ObjectType::Tree) => {
                let t = repo.find_tree(entry.id())?;
                walk_shipped(repo, &t, p, &bad, &mut out)?;
            }
            Some(ObjectType::Blob) => out.push(ShippedFile {
                path: p.clone(),
                blob: entry.id(),
                mode: entry.filemode(),
            }),
            _ => {}
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    // Overlapping shipped paths (`tasks` and `tasks/a.py`) list a file twice.
    out.dedup();
    for w in out.windows(2) {
        if w[0].path == w[1].path {
            return Err(bad(&w[0].path, "the path names two different objects"));
        }
    }
    // A symbolic link must not be a directory of another file: writing that file would
    // follow the link out of the release.
    let links: std::collections::BTreeSet<&str> = out
        .iter()
        .filter(|f| f.mode == 0o120_000)
        .map(|f| f.path.as_str())
        .collect();
    for f in &out {
        let mut prefix = f.path.as_str();
        while let Some((parent, _)) = prefix.rsplit_once('/') {
            if links.contains(parent) {
                return Err(bad(&f.path, "the path leads through a symbolic link"));
            }
            prefix = parent;
        }
    }
    Ok(out)
}

fn walk_shipped(
    repo: &Repository,
    tree: &Tree<'_>,
    prefix: &str,
    bad: &dyn Fn(&str, &'static str) -> SourceError,
    out: &mut Vec<ShippedFile>,
) -> Result<(), SourceError> {
    let mut seen = std::collections::HashSet::new();
    for entry in tree {
        let raw = entry.name_bytes();
        let shown = format!("{prefix}/{}", String::from_utf8_lossy(raw));
        if let Some(reason) = unsafe_name(raw) {
            return Err(bad(&shown, reason));
        }
        if !seen.insert(raw.to_vec()) {
            return Err(bad(&shown, "the tree holds this name twice"));
        }
        match entry.kind() {
            Some(ObjectType::Tree) => {
                let t = repo.find_tree(entry.id())?;
                walk_shipped(repo, &t, &shown, bad, out)?;
            }
            Some(ObjectType::Blob) => out.push(ShippedFile {
                path: shown,
                blob: entry.id(),
                mode: entry.filemode(),
            }),
            // Submodules (commits) are not shipped.
            _ => {}
        }
    }
    Ok(())
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

/// The directories directly under `dir` (say `environments`) at `rev`, sorted; none when
/// `dir` does not exist there.
///
/// # Errors
/// An unknown revision; git errors.
pub fn dirs_at(repo: &Repository, rev: &str, dir: &str) -> Result<Vec<String>, SourceError> {
    let commit = resolve_commit(repo, rev)?;
    let root = commit.tree()?;
    let Ok(entry) = root.get_path(Path::new(dir)) else {
        return Ok(Vec::new());
    };
    let Ok(tree) = repo.find_tree(entry.id()) else {
        return Ok(Vec::new());
    };
    let mut out: Vec<String> = tree
        .iter()
        .filter(|e| e.kind() == Some(ObjectType::Tree))
        .filter_map(|e| e.name().ok().map(str::to_string))
        .collect();
    out.sort();
    Ok(out)
}

/// Writes `path` atomically: a new, exclusively created temporary file with an
/// unpredictable name beside it (never a link someone planted), given `mode`, synced,
/// then renamed over `path`. Creates missing parent directories.
///
/// # Errors
/// I/O errors; `path` is then unchanged.
pub fn write_atomic_mode(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    // A new, exclusively created file with an unpredictable name (never a link someone
    // planted).
    let mut tmp = tempfile::Builder::new()
        .prefix(".celeroot-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// [`write_atomic_mode`] with mode 0600: for files only their owner may read (backups).
///
/// # Errors
/// I/O errors; `path` is then unchanged.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    write_atomic_mode(path, text, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_entry_names_follow_gits_verify_path() {
        for bad in [
            &b""[..],
            b".",
            b"..",
            b"a/b",
            b"a\\b",
            b"a\0b",
            b".git",
            b".Git",
            b"\xff",
        ] {
            assert!(unsafe_name(bad).is_some(), "{bad:?}");
        }
        for ok in [
            &b"a.py"[..],
            b"...",
            b".gitignore",
            b"__init__.py",
            "caf\u{e9}".as_bytes(),
        ] {
            assert_eq!(unsafe_name(ok), None, "{ok:?}");
        }
    }

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
