//! Editing the manifests in a work tree: the library behind `celeroot hosts|roles|
//! schedules add/update/rm`, `config edit` and `import`.
//!
//! Owns: finding an object's document in the work tree, turning a change to its value
//! into the smallest text change (`text`, comments and layout kept), writing new objects
//! one per file (`emit`), checking the whole repository with the change applied before
//! anything is written, atomic writes, unified diffs for `--dry-run`, and committing
//! exactly the changed files.
//! Must not know: Redis, hosts, or how a revision is applied. Git stays the source of
//! truth: nothing here talks to the live state.

pub mod emit;
pub mod external;
pub mod ops;
pub mod text;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::manifest::yaml::{document_chunks, parse_documents};
use crate::manifest::Kind;
use crate::source::{self, Snapshot, SourceError, SourceFile};
use crate::{compile_snapshot, CompileError, Compiled};

/// Why an edit could not be made. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The repository would not validate with the change applied.
    #[error("the change would make the manifests invalid")]
    Invalid(#[source] Box<CompileError>),
    #[error("{kind} {name:?} does not exist")]
    NotFound {
        kind: Kind,
        name: String,
        /// Names of that kind, for suggestions.
        known: Vec<String>,
    },
    #[error("{kind} {name:?} already exists in {file}:{line}")]
    Exists {
        kind: Kind,
        name: String,
        file: String,
        line: u32,
    },
    #[error("{0}")]
    Refused(String),
    /// The editor of `config edit` could not be started.
    #[error("cannot run the editor {program:?}: {source}")]
    NoEditor {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The editor of `config edit` exited with a failure.
    #[error("the editor exited with {0}")]
    EditorFailed(std::process::ExitStatus),
    /// The repository has no `Cluster` manifest.
    #[error("the repository has no Cluster manifest")]
    NoCluster,
    /// `env create`: no such source environment, or the new one exists.
    #[error("{0}")]
    Environment(String),
    #[error(transparent)]
    InUse(InUse),
    #[error("{path}: {message}")]
    Layout { path: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("git: {0}")]
    Git(#[from] git2::Error),
}

/// Why `rm` refuses: the objects that still use the one being removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InUse {
    #[error("role {role:?} is still used by {} host(s): {}", hosts.len(), hosts.join(", "))]
    ByHosts { role: String, hosts: Vec<String> },
    #[error("{} {name:?} is still a target of {} schedule(s): {}", kind.as_str().to_ascii_lowercase(), schedules.len(), schedules.join(", "))]
    ByTargets {
        kind: Kind,
        name: String,
        schedules: Vec<String>,
    },
}

/// One file's change: its text before (`None`: new file) and after (`None`: deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Path relative to the repository root, with `/`.
    pub path: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

impl Change {
    /// A unified diff of the change (`--- a/path`, `+++ b/path`), empty when unchanged.
    pub fn unified_diff(&self) -> String {
        let before = self.before.as_deref().unwrap_or("");
        let after = self.after.as_deref().unwrap_or("");
        if self.before == self.after {
            return String::new();
        }
        let old = match self.before {
            Some(_) => format!("a/{}", self.path),
            None => "/dev/null".into(),
        };
        let new = match self.after {
            Some(_) => format!("b/{}", self.path),
            None => "/dev/null".into(),
        };
        similar::TextDiff::from_lines(before, after)
            .unified_diff()
            .context_radius(3)
            .header(&old, &new)
            .to_string()
    }
}

/// One object's document in the work tree.
#[derive(Debug, Clone)]
pub struct Doc {
    /// File path relative to the repository root.
    pub file: String,
    /// Byte range of the document in its file.
    pub range: std::ops::Range<usize>,
    /// 1-based line where the document starts.
    pub line: u32,
    /// The document's value, untyped.
    pub value: Json,
    pub kind: Kind,
    pub name: String,
}

/// The manifests of a work tree, read once.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The repository's work tree root.
    pub root: PathBuf,
    /// The manifests directory, relative to the root (normalised, may be empty).
    pub dir: String,
    /// Every manifest file under `dir`: repository-relative path → text.
    pub files: BTreeMap<String, String>,
}

impl Workspace {
    /// Reads the manifest files of the work tree at `root`.
    ///
    /// # Errors
    /// A missing manifests directory, unreadable or non-UTF-8 files.
    pub fn open(root: &Path, dir: &str) -> Result<Workspace, EditError> {
        let dir = source::normalize_path(dir)?;
        let snapshot = source::read_worktree(root, &dir)?;
        Ok(Workspace {
            root: root.to_path_buf(),
            dir,
            files: snapshot
                .files
                .into_iter()
                .map(|f| (f.path, f.text))
                .collect(),
        })
    }

    /// As [`Workspace::open`], but a manifests directory that does not exist yet (a fresh
    /// repository) is an empty workspace.
    ///
    /// # Errors
    /// As [`Workspace::open`], except a missing directory.
    pub fn open_or_empty(root: &Path, dir: &str) -> Result<Workspace, EditError> {
        match Workspace::open(root, dir) {
            Err(EditError::Source(SourceError::MissingPath { .. })) => Ok(Workspace {
                root: root.to_path_buf(),
                dir: source::normalize_path(dir)?,
                files: Default::default(),
            }),
            other => other,
        }
    }

    /// The manifests of a snapshot (a git revision), read-only in practice: writes would
    /// go to `root`.
    pub fn from_snapshot(root: &Path, dir: &str, snapshot: Snapshot) -> Workspace {
        Workspace {
            root: root.to_path_buf(),
            dir: source::normalize_path(dir).unwrap_or_default(),
            files: snapshot
                .files
                .into_iter()
                .map(|f| (f.path, f.text))
                .collect(),
        }
    }

    /// Every document that names its kind and name, in file order. Documents that do
    /// not parse are skipped here (validation reports them).
    pub fn docs(&self) -> Vec<Doc> {
        let mut out = Vec::new();
        for (file, text) in &self.files {
            for (line, range) in document_chunks(text) {
                let Some(Ok(doc)) = parse_documents(&text[range.clone()]).into_iter().next() else {
                    continue;
                };
                let value = text::node_to_json(&doc.root);
                let kind = value
                    .get("kind")
                    .and_then(Json::as_str)
                    .and_then(Kind::parse);
                let name = value
                    .pointer("/metadata/name")
                    .and_then(Json::as_str)
                    .map(str::to_string);
                if let (Some(kind), Some(name)) = (kind, name) {
                    out.push(Doc {
                        file: file.clone(),
                        range,
                        line,
                        value,
                        kind,
                        name,
                    });
                }
            }
        }
        out
    }

    /// The document of `kind/name`.
    ///
    /// # Errors
    /// [`EditError::NotFound`] with the known names of that kind.
    pub fn find(&self, kind: Kind, name: &str) -> Result<Doc, EditError> {
        find_doc(&self.docs(), kind, name)
    }

    /// The path a new object of `kind` is written to: `<dir>/<kinds>/<name>.yaml`
    /// (`<dir>/cluster.yaml` for the cluster). `name` must already be a valid name.
    pub fn new_path(&self, kind: Kind, name: &str) -> String {
        let rel = match kind {
            Kind::Cluster => "cluster.yaml".to_string(),
            Kind::Role => format!("roles/{name}.yaml"),
            Kind::Host => format!("hosts/{name}.yaml"),
            Kind::Schedule => format!("schedules/{name}.yaml"),
        };
        if self.dir.is_empty() {
            rel
        } else {
            format!("{}/{rel}", self.dir)
        }
    }

    /// A change that gives the existing document `doc` the value `new`, editing only
    /// the lines that differ.
    ///
    /// # Errors
    /// [`EditError::Layout`] when the document's layout cannot be edited in place.
    pub fn update(&self, doc: &Doc, new: &Json) -> Result<Change, EditError> {
        let before = self.files.get(&doc.file).cloned().unwrap_or_default();
        let chunk = &before[doc.range.clone()];
        let edited =
            text::edit_document(chunk, &doc.value, new).map_err(|e| EditError::Layout {
                path: format!("{}:{}", doc.file, doc.line),
                message: e.0,
            })?;
        let mut after = String::with_capacity(before.len() + 64);
        after.push_str(&before[..doc.range.start]);
        after.push_str(&edited);
        after.push_str(&before[doc.range.end..]);
        Ok(Change {
            path: doc.file.clone(),
            before: Some(before),
            after: Some(after),
        })
    }

    /// A change that writes the new object `value` of `kind/name` to its own file.
    ///
    /// # Errors
    /// [`EditError::Exists`] when the object exists; [`EditError::Refused`] when its
    /// file exists with other content.
    pub fn create(&self, kind: Kind, name: &str, value: &Json) -> Result<Change, EditError> {
        if let Some(doc) = self
            .docs()
            .into_iter()
            .find(|d| d.kind == kind && d.name == name)
        {
            return Err(EditError::Exists {
                kind,
                name: name.to_string(),
                file: doc.file,
                line: doc.line,
            });
        }
        let path = self.new_path(kind, name);
        if self.files.contains_key(&path) || self.root.join(&path).exists() {
            return Err(EditError::Refused(format!(
                "{path} exists and does not hold {kind} {name:?}; move it away or edit it"
            )));
        }
        let mut text = String::new();
        if let Some(modeline) = self.schema_modeline(&path) {
            text.push_str(&modeline);
        }
        let body = emit::document(value);
        let reads_back = match parse_documents(&body).as_slice() {
            [Ok(doc)] => text::node_to_json(&doc.root) == *value,
            _ => false,
        };
        if !reads_back {
            return Err(EditError::Layout {
                path,
                message: "internal: the new document does not read back as written".into(),
            });
        }
        text.push_str(&body);
        Ok(Change {
            path,
            before: None,
            after: Some(text),
        })
    }

    /// A change that removes `doc`: its file when it is the file's only document,
    /// otherwise just its document.
    pub fn delete(&self, doc: &Doc) -> Change {
        let before = self.files.get(&doc.file).cloned().unwrap_or_default();
        let others = document_chunks(&before)
            .into_iter()
            .filter(|(_, r)| *r != doc.range)
            .count();
        let after = if others == 0 {
            None
        } else {
            let mut rest = String::new();
            rest.push_str(&before[..doc.range.start]);
            rest.push_str(&before[doc.range.end..]);
            Some(rest)
        };
        Change {
            path: doc.file.clone(),
            before: Some(before),
            after,
        }
    }

    /// `# yaml-language-server: $schema=…` for a new file, when the repository keeps the
    /// schemas that `celeroot init` writes.
    fn schema_modeline(&self, path: &str) -> Option<String> {
        if !self.root.join("schemas/manifest.json").is_file() {
            return None;
        }
        let depth = path.matches('/').count();
        Some(format!(
            "# yaml-language-server: $schema={}schemas/manifest.json\n",
            "../".repeat(depth)
        ))
    }

    /// The work tree's files with `changes` applied, as a snapshot.
    pub fn snapshot_with(&self, changes: &[Change]) -> Snapshot {
        let mut files = self.files.clone();
        for c in changes {
            match &c.after {
                Some(text) => files.insert(c.path.clone(), text.clone()),
                None => files.remove(&c.path),
            };
        }
        Snapshot {
            label: "worktree".into(),
            commit: None,
            files: files
                .into_iter()
                .map(|(path, text)| SourceFile { path, text })
                .collect(),
        }
    }

    /// Validates and compiles the whole repository with `changes` applied. Nothing is
    /// written.
    ///
    /// # Errors
    /// [`EditError::Invalid`] with every diagnostic.
    pub fn check(&self, changes: &[Change]) -> Result<Compiled, EditError> {
        compile_snapshot(self.snapshot_with(changes)).map_err(|e| EditError::Invalid(Box::new(e)))
    }

    /// Writes `changes` to the work tree, each file atomically (a temporary file in the
    /// same directory, then a rename). Call [`Workspace::check`] first.
    ///
    /// # Errors
    /// I/O errors; files written before the failing one stay written.
    pub fn write(&self, changes: &[Change]) -> Result<(), EditError> {
        for c in changes {
            let path = self.root.join(&c.path);
            match &c.after {
                Some(text) => write_atomic(&path, text).map_err(|source| EditError::Io {
                    path: c.path.clone(),
                    source,
                })?,
                None => std::fs::remove_file(&path).map_err(|source| EditError::Io {
                    path: c.path.clone(),
                    source,
                })?,
            }
        }
        Ok(())
    }

    /// Commits exactly the changed files on top of `HEAD` (other staged or modified
    /// files are left as they are) and stages them in the index. Returns the new
    /// commit id.
    ///
    /// # Errors
    /// git errors (no repository, a detached or unborn `HEAD` is fine).
    pub fn commit(&self, changes: &[Change], message: &str) -> Result<String, EditError> {
        let repo = git2::Repository::open(&self.root)?;
        let parent = match repo.head() {
            Ok(h) => Some(h.peel_to_commit()?),
            Err(_) => None,
        };
        let mut index = git2::Index::new()?;
        if let Some(p) = &parent {
            index.read_tree(&p.tree()?)?;
        }
        let mut real = repo.index()?;
        for c in changes {
            let path = Path::new(&c.path);
            match &c.after {
                Some(text) => {
                    let blob = repo.blob(text.as_bytes())?;
                    let entry = index_entry(&c.path, blob, text.len());
                    index.add(&entry)?;
                    real.add_path(path)?;
                }
                None => {
                    index.remove_path(path)?;
                    let _ = real.remove_path(path);
                }
            }
        }
        real.write()?;
        let tree_id = index.write_tree_to(&repo)?;
        let tree = repo.find_tree(tree_id)?;
        let sig = repo
            .signature()
            .or_else(|_| git2::Signature::now("celeroot", "celeroot@localhost"))?;
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let id = repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)?;
        Ok(id.to_string())
    }
}

/// The document of `kind/name` among `docs` (from [`Workspace::docs`]).
///
/// # Errors
/// [`EditError::NotFound`] with the known names of that kind.
pub fn find_doc(docs: &[Doc], kind: Kind, name: &str) -> Result<Doc, EditError> {
    docs.iter()
        .find(|d| d.kind == kind && d.name == name)
        .cloned()
        .ok_or_else(|| EditError::NotFound {
            kind,
            name: name.to_string(),
            known: docs
                .iter()
                .filter(|d| d.kind == kind)
                .map(|d| d.name.clone())
                .collect(),
        })
}

fn index_entry(path: &str, id: git2::Oid, len: usize) -> git2::IndexEntry {
    git2::IndexEntry {
        ctime: git2::IndexTime::new(0, 0),
        mtime: git2::IndexTime::new(0, 0),
        dev: 0,
        ino: 0,
        mode: 0o100644,
        uid: 0,
        gid: 0,
        file_size: u32::try_from(len).unwrap_or(u32::MAX),
        id,
        flags: 0,
        flags_extended: 0,
        path: path.as_bytes().to_vec(),
    }
}

/// Writes `text` to `path` atomically: a temporary file beside it, flushed, then renamed
/// over it. Creates missing parent directories.
///
/// # Errors
/// I/O errors; `path` is then unchanged.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // The mode of the file it replaces (0644 for a new one).
    let mode = std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o777);
    source::write_atomic_mode(path, text, mode)
}

/// The work tree root of the repository at (or containing) `path`.
///
/// # Errors
/// No repository, or a bare one.
pub fn worktree_root(path: Option<&Path>) -> Result<PathBuf, EditError> {
    let repo = source::open_repo(path)?;
    repo.workdir()
        .map(Path::to_path_buf)
        .ok_or_else(|| EditError::Refused("the repository is bare: edits need a work tree".into()))
}

/// Where environments live: one directory per cluster, `environments/<name>/`.
pub const ENVIRONMENTS_DIR: &str = "environments";

/// The manifests directory of environment `name` (`environments/<name>`).
///
/// # Errors
/// `name` is not an RFC 1123 label.
pub fn environment_dir(name: &str) -> Result<String, String> {
    crate::validate::rules::rfc1123_label(name)
        .map_err(|e| format!("invalid environment name {name:?}: {e}"))?;
    Ok(format!("{ENVIRONMENTS_DIR}/{name}"))
}

/// The environments of the work tree at `root`: the directories under `environments/`,
/// sorted.
///
/// # Errors
/// An unreadable `environments/` (a missing one is no environment).
pub fn environments(root: &Path) -> std::io::Result<Vec<String>> {
    let dir = root.join(ENVIRONMENTS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if crate::validate::rules::rfc1123_label(&name).is_ok() {
                out.push(name);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `env create NAME --clone FROM`: the files of environment `from`, copied under
/// `environments/<name>/` with the Cluster renamed to `name`, validated as a repository
/// of their own. Nothing is written (see [`Workspace::write`]).
///
/// # Errors
/// No environment `from`; `name` exists already; no Cluster in `from`; the copy does not
/// validate.
pub fn clone_environment(
    root: &Path,
    from: &str,
    name: &str,
) -> Result<(Workspace, Vec<Change>), EditError> {
    let src_dir = environment_dir(from).map_err(EditError::Environment)?;
    let dst_dir = environment_dir(name).map_err(EditError::Environment)?;
    if root.join(&dst_dir).exists() {
        return Err(EditError::Environment(format!(
            "{dst_dir}/ exists already: the environment {name} is there"
        )));
    }
    let src = Workspace::open(root, &src_dir).map_err(|e| match e {
        EditError::Source(SourceError::MissingPath { .. }) => EditError::Environment(format!(
            "there is no environment {from}: {src_dir}/ does not exist"
        )),
        e => e,
    })?;
    let files: BTreeMap<String, String> = src
        .files
        .iter()
        .map(|(p, t)| {
            let rel = p.strip_prefix(&format!("{src_dir}/")).unwrap_or(p);
            (format!("{dst_dir}/{rel}"), t.clone())
        })
        .collect();
    let dst = Workspace {
        root: root.to_path_buf(),
        dir: dst_dir,
        files: BTreeMap::new(),
    };
    let copy = Workspace {
        files: files.clone(),
        ..dst.clone()
    };
    let Some(cluster) = copy.docs().into_iter().find(|d| d.kind == Kind::Cluster) else {
        return Err(EditError::NoCluster);
    };
    let mut renamed = cluster.value.clone();
    ops::set_path(
        &mut renamed,
        &["metadata".to_string(), "name".to_string()],
        Json::String(name.to_string()),
    );
    let rename = copy.update(&cluster, &renamed)?;
    let changes: Vec<Change> = files
        .into_iter()
        .map(|(path, text)| {
            let after = if path == rename.path {
                rename.after.clone()
            } else {
                Some(text)
            };
            Change {
                path,
                before: None,
                after,
            }
        })
        .collect();
    dst.check(&changes)?;
    Ok((dst, changes))
}
