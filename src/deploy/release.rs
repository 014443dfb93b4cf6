//! Releases: the shipped paths of one revision, read from git objects once per rollout
//! (every file's mode, blob and sha256), and the archive each host is sent: only the
//! files it lacks, with the list of those to hard-link from its current release. Nothing
//! is staged on this machine. Plus the files rendered for each host.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use git2::Repository;

use crate::desired::DesiredState;
use crate::source::SourceError;

/// The modification time of shipped files: 2000-01-01T00:00:00Z.
pub const SHIPPED_MTIME: u64 = 946_684_800;

/// Where a release lists the sha256 of every shipped file (`sha256sum -c` format), so the
/// agent can report local modifications and a deploy can check what it linked.
pub const CHECKSUMS: &str = ".celeroot/checksums.sha256";

/// One shipped file of a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseFile {
    pub path: String,
    /// git's mode: `0o100644`, `0o100755` or `0o120000` (a symbolic link).
    pub mode: i32,
    pub blob: git2::Oid,
    /// Hex sha256 of the content (of the link target for a symbolic link).
    pub sha256: String,
    pub size: u64,
}

impl ReleaseFile {
    fn is_link(&self) -> bool {
        self.mode == 0o120_000
    }

    fn executable(&self) -> bool {
        self.mode == 0o100_755
    }

    /// Whether the checksum list can hold it (one line per file).
    fn listable(&self) -> bool {
        !self.is_link() && !self.path.contains(['\n', '\r'])
    }
}

/// A release read from git: every shipped file, sorted by path, and its checksum list.
#[derive(Debug, Clone)]
pub struct Release {
    /// `r-<12 hex>` (see [`crate::source::release_id`]).
    pub id: String,
    pub files: Vec<ReleaseFile>,
    /// The text of [`CHECKSUMS`]: `<sha256>  <path>` per regular file.
    pub checksums: String,
}

impl Release {
    /// Reads the shipped `paths` of `commit`: every entry is checked (see
    /// [`crate::source::shipped_files`]) and every blob hashed, once.
    ///
    /// # Errors
    /// Git errors, or an unsafe entry.
    pub fn read(
        repo: &Repository,
        commit: &str,
        id: &str,
        paths: &[String],
    ) -> Result<Release, SourceError> {
        use sha2::{Digest, Sha256};
        let commit = crate::source::resolve_commit(repo, commit)?;
        let tree = commit.tree()?;
        let shipped = crate::source::shipped_files(repo, &commit.id().to_string(), &tree, paths)?;
        let mut files = Vec::with_capacity(shipped.len());
        let mut checksums = String::new();
        for f in shipped {
            confined(Path::new("release"), &f.path)?;
            let blob = repo.find_blob(f.blob)?;
            let file = ReleaseFile {
                sha256: format!("{:x}", Sha256::digest(blob.content())),
                size: blob.content().len() as u64,
                path: f.path,
                mode: f.mode,
                blob: f.blob,
            };
            if file.listable() {
                checksums.push_str(&checksum_line(&file.sha256, &file.path));
            }
            files.push(file);
        }
        Ok(Release {
            id: id.to_string(),
            files,
            checksums,
        })
    }

    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// What a host's current release holds, as its checksum list says: path → (sha256,
/// executable).
pub type Previous = BTreeMap<String, (String, bool)>;

/// The release part of a host's archive: the files `previous` lacks (new, changed, mode
/// changed, symbolic links) and the checksum list, under `release/`, with no
/// end-of-archive marker (see [`archive`]). The host hard-links the files of the list
/// that the archive does not bring from its current release, then checks every file.
#[derive(Debug, Clone, Default)]
pub struct ReleasePart {
    pub tar: Vec<u8>,
    /// Regular files in it, the checksum list included.
    pub files: u64,
    /// Files the host links from its current release.
    pub linked: u64,
}

/// Builds the [`ReleasePart`] for a host whose current release holds `previous` (empty:
/// everything is sent).
///
/// # Errors
/// Git or archive errors.
pub fn release_part(
    repo: &Repository,
    release: &Release,
    previous: &Previous,
) -> Result<ReleasePart, SourceError> {
    let io = |source| SourceError::Io {
        path: "the release archive".into(),
        source,
    };
    let mut b = tar::Builder::new(Vec::new());
    let mut part = ReleasePart::default();
    // Symbolic links last, so that nothing is ever written through one.
    let (symlinks, regular): (Vec<&ReleaseFile>, Vec<&ReleaseFile>) =
        release.files.iter().partition(|f| f.is_link());
    for f in regular {
        let unchanged =
            f.listable() && previous.get(&f.path) == Some(&(f.sha256.clone(), f.executable()));
        if unchanged {
            part.linked += 1;
            continue;
        }
        let blob = repo.find_blob(f.blob)?;
        let mode = if f.executable() { 0o755 } else { 0o644 };
        append_file(&mut b, &format!("release/{}", f.path), mode, blob.content()).map_err(io)?;
        part.files += 1;
    }
    append_file(
        &mut b,
        &format!("release/{CHECKSUMS}"),
        0o644,
        release.checksums.as_bytes(),
    )
    .map_err(io)?;
    part.files += 1;
    for f in symlinks {
        let blob = repo.find_blob(f.blob)?;
        let target = String::from_utf8_lossy(blob.content()).into_owned();
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, format!("release/{}", f.path), target)
            .map_err(io)?;
    }
    let mut tar = b.into_inner().map_err(io)?;
    // `into_inner` ends the archive with two zero blocks; [`archive`] appends the shared
    // files after this part and ends it then.
    tar.truncate(tar.len().saturating_sub(1024));
    part.tar = tar;
    Ok(part)
}

/// The release parts built so far in a rollout, by what the hosts had (usually one or
/// two distinct current releases across a fleet): built from git objects under one lock,
/// because a repository handle is not shared between threads.
pub struct PartCache {
    repo_path: PathBuf,
    inner: std::sync::Mutex<Built>,
}

#[derive(Default)]
struct Built {
    repo: Option<Repository>,
    parts: Vec<(Previous, std::sync::Arc<ReleasePart>)>,
}

impl PartCache {
    pub fn new(repo: &Repository) -> PartCache {
        PartCache {
            repo_path: repo.path().to_path_buf(),
            inner: std::sync::Mutex::new(Built::default()),
        }
    }

    /// The part of `release` for a host whose current release holds `previous`.
    ///
    /// # Errors
    /// A message when the repository or a blob cannot be read.
    pub fn get(
        &self,
        release: &Release,
        previous: &Previous,
    ) -> Result<std::sync::Arc<ReleasePart>, String> {
        let mut guard = self
            .inner
            .lock()
            .map_err(|_| "a deploy thread panicked while building an archive".to_string())?;
        let built = &mut *guard;
        if let Some((_, p)) = built.parts.iter().find(|(prev, _)| prev == previous) {
            return Ok(p.clone());
        }
        let repo = match &mut built.repo {
            Some(r) => r,
            slot => slot.insert(
                Repository::open(&self.repo_path)
                    .map_err(|e| format!("cannot open the repository: {e}"))?,
            ),
        };
        let part = std::sync::Arc::new(
            release_part(repo, release, previous)
                .map_err(|e| format!("cannot read the release from git: {e}"))?,
        );
        built.parts.push((previous.clone(), part.clone()));
        Ok(part)
    }
}

/// A host's whole archive: `release` (when the host needs the release) and the rendered
/// `shared` files under `shared/` (when they differ), ended.
///
/// # Errors
/// Archive errors (in memory: none in practice).
pub fn archive(
    release: Option<&ReleasePart>,
    shared: &BTreeMap<String, String>,
) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(release.map(|r| r.tar.clone()).unwrap_or_default());
    for (name, text) in shared {
        append_file(&mut b, &format!("shared/{name}"), 0o644, text.as_bytes())?;
    }
    b.into_inner()
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(SHIPPED_MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append_file(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> std::io::Result<()> {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
    b.append_data(&mut h, path, data)
}

/// Parses the lines a host printed about its current release (`sum=<sha256>  <path>`,
/// `exec=<path>`) into a [`Previous`].
pub fn parse_previous<'a>(lines: impl Iterator<Item = &'a str>) -> Previous {
    let mut sums = Previous::new();
    let mut exec = BTreeSet::new();
    for line in lines {
        if let Some(rest) = line.strip_prefix("sum=") {
            if let Some((sum, path)) = rest.split_once("  ") {
                sums.insert(path.to_string(), (sum.to_string(), false));
            }
        } else if let Some(path) = line.strip_prefix("exec=") {
            exec.insert(path.to_string());
        }
    }
    for (path, v) in &mut sums {
        v.1 = exec.contains(path);
    }
    sums
}

/// One line of [`CHECKSUMS`] (`sha256sum -c` format).
fn checksum_line(sha256: &str, path: &str) -> String {
    format!("{sha256}  {path}\n")
}

/// Writes [`CHECKSUMS`] for the regular files of a release directory (a release made on
/// disk, as the agent's tests do; a deploy sends the list it read from git).
///
/// # Errors
/// I/O errors.
pub fn write_checksums(root: &Path) -> Result<(), SourceError> {
    use sha2::{Digest, Sha256};
    let mut files = Vec::new();
    list_files(root, root, &mut files);
    files.sort();
    let mut out = String::new();
    for rel in &files {
        let p = root.join(rel);
        let bytes = std::fs::read(&p).map_err(|source| SourceError::Io {
            path: p.display().to_string(),
            source,
        })?;
        out.push_str(&checksum_line(
            &format!("{:x}", Sha256::digest(&bytes)),
            rel,
        ));
    }
    let dest = root.join(CHECKSUMS);
    let io = |source| SourceError::Io {
        path: dest.display().to_string(),
        source,
    };
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(&dest, out).map_err(io)
}

/// Regular files under `dir`, relative to `root` (symbolic links are not followed).
pub fn list_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => list_files(root, &p, out),
                Ok(t) if t.is_file() => {
                    if let Ok(rel) = p.strip_prefix(root) {
                        out.push(rel.to_string_lossy().into_owned());
                    }
                }
                _ => {}
            }
        }
    }
}

/// Files of the release at `root` that differ from its checksum list: changed or missing
/// (files added locally, like `__pycache__` or `.venv`, are not reported). `None` when the
/// release has no checksum list.
pub fn verify_checksums(root: &Path) -> Option<Vec<String>> {
    use sha2::{Digest, Sha256};
    let list = std::fs::read_to_string(root.join(CHECKSUMS)).ok()?;
    let mut bad = Vec::new();
    for line in list.lines() {
        let Some((sum, rel)) = line.split_once("  ") else {
            continue;
        };
        match std::fs::read(root.join(rel)) {
            Ok(bytes) if format!("{:x}", Sha256::digest(&bytes)) == sum => {}
            _ => bad.push(rel.to_string()),
        }
    }
    Some(bad)
}

/// The unit's user and sandbox (docs/security.md): the agent and its worker run as
/// `user`, may write only under the target directory, never gain privileges, and see
/// neither `/home` nor the host's `/tmp`. `root` (an explicit `deployment.user: root`,
/// for hosts whose workers run real APT tasks) gets no sandbox, and the unit says so.
fn sandbox(user: &str, group: &str, target: &str) -> String {
    if user == "root" {
        return format!(
            "# deployment.user is root: no sandbox, the worker can change the whole host.\nUser=root\nGroup={group}\n"
        );
    }
    format!(
        "User={user}\nGroup={group}\nNoNewPrivileges=yes\nProtectSystem=strict\nReadWritePaths={target}\n\
         PrivateTmp=yes\nProtectHome=yes\nPrivateDevices=yes\nProtectKernelTunables=yes\nProtectKernelModules=yes\n\
         ProtectControlGroups=yes\nRestrictSUIDSGID=yes\nLockPersonality=yes\n"
    )
}

/// `root` joined with the `/`-separated `rel`, checked to stay under `root`: every
/// component a plain name (see [`crate::source::unsafe_name`]).
fn confined(root: &Path, rel: &str) -> Result<PathBuf, SourceError> {
    let mut out = root.to_path_buf();
    for c in rel.split('/') {
        if crate::source::unsafe_name(c.as_bytes()).is_some() {
            return Err(SourceError::BadPath {
                path: rel.to_string(),
            });
        }
        out.push(c);
    }
    if !out.starts_with(root) {
        return Err(SourceError::BadPath {
            path: rel.to_string(),
        });
    }
    Ok(out)
}

/// The name of beat's rendered unit in `<target>/shared/`.
pub const BEAT_UNIT: &str = "celeroot-beat.service";

/// The files rendered for one host, written to `<target>/shared/` on it: the worker's
/// environment file and its systemd unit.
pub fn host_files(
    state: &DesiredState,
    host: &str,
    release: &str,
) -> Option<BTreeMap<String, String>> {
    let h = state.hosts.get(host)?;
    // The release is not written into these files (`current` says which one runs), so
    // they change only when the worker's configuration does.
    let fields = crate::state::worker_fields(state, host, &Some(release.to_string()))?;
    let queues = h.queues.join(",");
    let mut env =
        String::from("# Rendered by celeroot deploy from the compiled state; do not edit.\n");
    let line = |k: &str, v: &str| format!("{k}={v}\n");
    env.push_str(&line("CELEROOT_CLUSTER", &state.cluster));
    env.push_str(&line("CELEROOT_HOST", host));
    env.push_str(&line("CELEROOT_TIMEZONE", &state.timezone));
    env.push_str(&line("CELEROOT_QUEUES", &queues));
    if state.broker.transport == crate::manifest::BrokerTransport::Amqp {
        // tasks/app.py declares the queues as celeroot does (docs/celery.md#brokers).
        env.push_str(&line("CELEROOT_BROKER_TRANSPORT", "amqp"));
        env.push_str(&line(
            "CELEROOT_QUEUE_TYPE",
            match state.broker.queue_type {
                crate::manifest::AmqpQueueType::Quorum => "quorum",
                crate::manifest::AmqpQueueType::Classic => "classic",
            },
        ));
    }
    env.push_str(&line(
        "CELEROOT_CONCURRENCY",
        fields.get("concurrency").map_or("", String::as_str),
    ));
    env.push_str(&line(
        "CELEROOT_MAX_TASKS_PER_CHILD",
        fields.get("max_tasks_per_child").map_or("", String::as_str),
    ));
    let d = &h.deployment;
    // The unit runs the agent, which runs and supervises the worker with the live
    // configuration (docs/agent.md); /etc/celeroot/agent.env holds its Redis URL and the
    // worker's broker URL (`celeroot hosts credentials`), never this file.
    let unit = format!(
        "# Rendered by celeroot deploy; enable once with `systemctl enable {target}/shared/{service}.service`.\n\
         [Unit]\nDescription=celeroot agent and Celery worker of {host} (cluster {cluster})\nAfter=network-online.target\nWants=network-online.target\n\n\
         [Service]\nType=simple\nWorkingDirectory={target}\nEnvironmentFile={target}/shared/worker.env\nEnvironmentFile=-/etc/celeroot/agent.env\n\
         ExecStart=/usr/local/bin/celeroot agent --host {host} --cluster {cluster} --release-dir {target}/current\n\
         Restart=always\nRestartSec=2\nKillMode=control-group\nKillSignal=SIGTERM\nTimeoutStopSec=60\n\
         {sandbox}\n\
         [Install]\nWantedBy=multi-user.target\n",
        target = d.target_dir,
        service = d.service_name,
        cluster = state.cluster,
        sandbox = sandbox(&d.user, &d.group, &d.target_dir),
    );
    // Beat's unit, for the machines that should run one (two or three: RedBeat's lock
    // keeps one active); not enabled by deploy. /etc/celeroot/beat.env holds its Redis URL.
    let beat = format!(
        "# Rendered by celeroot deploy; enable it on the hosts that should run Celery Beat (two or three: RedBeat's lock keeps one active)\n\
         # with `systemctl enable --now {target}/shared/celeroot-beat.service`, after writing CELEROOT_REDIS_URL to /etc/celeroot/beat.env.\n\
         [Unit]\nDescription=celeroot beat: Celery Beat of cluster {cluster}\nAfter=network-online.target\nWants=network-online.target\n\n\
         [Service]\nType=simple\nWorkingDirectory={target}\nEnvironmentFile={target}/shared/worker.env\nEnvironmentFile=-/etc/celeroot/beat.env\n\
         ExecStart=/usr/local/bin/celeroot beat --cluster {cluster} --release-dir {target}/current --id %H\n\
         Restart=always\nRestartSec=2\nKillMode=control-group\nKillSignal=SIGTERM\nTimeoutStopSec=60\n\
         {sandbox}\n\
         [Install]\nWantedBy=multi-user.target\n",
        target = d.target_dir,
        cluster = state.cluster,
        sandbox = sandbox(&d.user, &d.group, &d.target_dir),
    );
    Some(BTreeMap::from([
        ("worker.env".to_string(), env),
        (format!("{}.service", d.service_name), unit),
        (BEAT_UNIT.to_string(), beat),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries of an archive: (path, kind, mode, content or link target).
    fn entries(tar_bytes: &[u8]) -> Vec<(String, String, u32, String)> {
        let mut a = tar::Archive::new(tar_bytes);
        let mut out = Vec::new();
        for e in a.entries().expect("entries") {
            let mut e = e.expect("entry");
            let path = e.path().expect("path").display().to_string();
            let kind = format!("{:?}", e.header().entry_type());
            let mode = e.header().mode().expect("mode");
            let mut text = String::new();
            if let Ok(Some(l)) = e.link_name() {
                text = l.display().to_string();
            } else {
                std::io::Read::read_to_string(&mut e, &mut text).expect("read");
            }
            out.push((path, kind, mode, text));
        }
        out
    }

    #[test]
    fn a_part_holds_what_the_host_lacks_and_counts_the_rest_as_linked() {
        let dir = tempfile::tempdir().expect("tmp");
        let repo = Repository::init(dir.path()).expect("init");
        let sig = git2::Signature::now("t", "t@example.com").expect("sig");
        let mut tb = repo.treebuilder(None).expect("tb");
        let blob = |text: &str| repo.blob(text.as_bytes()).expect("blob");
        let mut sub = repo.treebuilder(None).expect("sub");
        sub.insert("same.py", blob("A\n"), 0o100_644)
            .expect("insert");
        sub.insert("changed.py", blob("B2\n"), 0o100_644)
            .expect("insert");
        sub.insert("now-exec.sh", blob("C\n"), 0o100_755)
            .expect("insert");
        sub.insert("link.py", blob("same.py"), 0o120_000)
            .expect("insert");
        let sub = sub.write().expect("write");
        tb.insert("tasks", sub, 0o040_000).expect("insert");
        let tree = repo.find_tree(tb.write().expect("write")).expect("tree");
        let commit = repo
            .commit(Some("HEAD"), &sig, &sig, "c", &tree, &[])
            .expect("commit")
            .to_string();
        let release = Release::read(&repo, &commit, "r-test", &["tasks".into()]).expect("read");
        let sum = |t: &str| {
            use sha2::{Digest, Sha256};
            format!("{:x}", Sha256::digest(t.as_bytes()))
        };
        assert_eq!(
            release.checksums,
            format!(
                "{}  tasks/changed.py\n{}  tasks/now-exec.sh\n{}  tasks/same.py\n",
                sum("B2\n"),
                sum("C\n"),
                sum("A\n")
            ),
            "regular files only, by path"
        );
        // The host runs a release where same.py is equal, changed.py differs, now-exec.sh
        // has the same content but is not executable, and gone.py is no longer shipped.
        let previous = parse_previous(
            [
                format!("sum={}  tasks/same.py", sum("A\n")),
                format!("sum={}  tasks/changed.py", sum("B1\n")),
                format!("sum={}  tasks/now-exec.sh", sum("C\n")),
                format!("sum={}  tasks/gone.py", sum("D\n")),
                "exec=tasks/gone.py".to_string(),
                "unrelated line".to_string(),
            ]
            .iter()
            .map(String::as_str),
        );
        assert_eq!(previous["tasks/gone.py"], (sum("D\n"), true));
        assert_eq!(previous["tasks/same.py"], (sum("A\n"), false));
        let part = release_part(&repo, &release, &previous).expect("part");
        assert_eq!((part.files, part.linked), (3, 1));
        let shared = BTreeMap::from([("worker.env".to_string(), "X=1\n".to_string())]);
        let all = archive(Some(&part), &shared).expect("archive");
        let e = entries(&all);
        let names: Vec<(&str, &str, u32)> = e
            .iter()
            .map(|(p, k, m, _)| (p.as_str(), k.as_str(), *m))
            .collect();
        assert_eq!(
            names,
            [
                ("release/tasks/changed.py", "Regular", 0o644),
                ("release/tasks/now-exec.sh", "Regular", 0o755),
                ("release/.celeroot/checksums.sha256", "Regular", 0o644),
                ("release/tasks/link.py", "Symlink", 0o777),
                ("shared/worker.env", "Regular", 0o644),
            ],
            "symbolic links after every file of the release"
        );
        assert_eq!(e[0].3, "B2\n");
        assert_eq!(e[3].3, "same.py");
        // A host with nothing: everything is sent, nothing linked.
        let cold = release_part(&repo, &release, &Previous::new()).expect("part");
        assert_eq!((cold.files, cold.linked), (4, 0));
        // No release part: only the shared files.
        let only_shared = entries(&archive(None, &shared).expect("archive"));
        assert_eq!(only_shared.len(), 1);
    }

    #[test]
    fn the_unit_sandboxes_every_user_but_an_explicit_root() {
        let s = sandbox("celeroot", "workers", "/opt/celeroot");
        for line in [
            "User=celeroot",
            "Group=workers",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ReadWritePaths=/opt/celeroot",
            "PrivateTmp=yes",
            "ProtectHome=yes",
        ] {
            assert!(s.lines().any(|l| l == line), "{line} in {s}");
        }
        let root = sandbox("root", "root", "/opt/celeroot");
        assert!(root.contains("User=root\n"), "{root}");
        assert!(!root.contains("NoNewPrivileges"), "{root}");
        assert!(root.starts_with("# deployment.user is root"), "{root}");
    }

    #[test]
    fn release_paths_stay_under_the_root() {
        let root = Path::new("/stage/r-1");
        assert_eq!(
            confined(root, "tasks/a.py").ok(),
            Some(PathBuf::from("/stage/r-1/tasks/a.py"))
        );
        for bad in ["../x", "tasks/../../x", "/etc/passwd", "tasks//a", "a/./b"] {
            assert!(confined(root, bad).is_err(), "{bad}");
        }
    }
}
