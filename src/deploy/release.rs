//! Releases: the shipped paths of one revision, exported from git objects into a local
//! staging directory (once per release), plus the files rendered for each host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use git2::Repository;

use crate::desired::DesiredState;
use crate::source::SourceError;

/// The modification time of shipped files: 2000-01-01T00:00:00Z.
pub const SHIPPED_MTIME: u64 = 946_684_800;

/// A release staged on this machine, ready to be sent with rsync.
#[derive(Debug, Clone)]
pub struct Staged {
    /// `r-<12 hex>` (see [`crate::source::release_id`]).
    pub id: String,
    /// The directory holding the release's files.
    pub root: PathBuf,
    pub files: usize,
    pub bytes: u64,
}

/// Exports the shipped `paths` of `commit` into `<stage_dir>/<id>/`. An existing complete
/// export is reused (the id names the content).
///
/// # Errors
/// Git or I/O errors.
pub fn stage(
    repo: &Repository,
    commit: &str,
    id: &str,
    paths: &[String],
    stage_dir: &Path,
) -> Result<Staged, SourceError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| SourceError::Io { path, source }
    };
    let root = stage_dir.join(id);
    let done = stage_dir.join(format!("{id}.complete"));
    let commit = crate::source::resolve_commit(repo, commit)?;
    let tree = commit.tree()?;
    // Every entry is checked before the first byte is written.
    let shipped = crate::source::shipped_files(repo, &commit.id().to_string(), &tree, paths)?;
    let mut files = 0;
    let mut bytes = 0;
    if !done.exists() {
        let tmp = stage_dir.join(format!("{id}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        // Symbolic links last, so no file is ever written through one.
        let (links, regular): (Vec<_>, Vec<_>) = shipped.iter().partition(|f| f.mode == 0o120_000);
        for f in regular.into_iter().chain(links) {
            let dest = confined(&tmp, &f.path)?;
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            write_blob(repo, f.blob, f.mode, &dest)?;
        }
        write_checksums(&tmp)?;
        let _ = std::fs::remove_dir_all(&root);
        std::fs::rename(&tmp, &root).map_err(io(&root))?;
        std::fs::write(&done, id).map_err(io(&done))?;
    }
    count(&root, &mut files, &mut bytes);
    Ok(Staged {
        id: id.to_string(),
        root,
        files,
        bytes,
    })
}

/// Where a release lists the sha256 of every shipped file (`sha256sum -c` format), so the
/// agent can report local modifications.
pub const CHECKSUMS: &str = ".celeroot/checksums.sha256";

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
        out.push_str(&format!("{:x}  {rel}\n", Sha256::digest(&bytes)));
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

fn count(dir: &Path, files: &mut usize, bytes: &mut u64) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => count(&e.path(), files, bytes),
                Ok(_) => {
                    *files += 1;
                    *bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                }
                Err(_) => {}
            }
        }
    }
}

fn write_blob(repo: &Repository, id: git2::Oid, mode: i32, dest: &Path) -> Result<(), SourceError> {
    let io = |source| SourceError::Io {
        path: dest.display().to_string(),
        source,
    };
    let blob = repo.find_blob(id)?;
    if mode == 0o120_000 {
        // A symbolic link: its target is the blob's content.
        let target = String::from_utf8_lossy(blob.content()).into_owned();
        std::os::unix::fs::symlink(target, dest).map_err(io)?;
        return Ok(());
    }
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt};
    // A new file only, and never through a symbolic link.
    let mut f = std::fs::File::options()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dest)
        .map_err(io)?;
    f.write_all(blob.content()).map_err(io)?;
    let perm = if mode == 0o100_755 { 0o755 } else { 0o644 };
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(perm)).map_err(io)?;
    // One fixed modification time for every shipped file: an unchanged file then has the
    // same content, size, mode and time as in the previous release, so rsync hard-links it
    // (`--link-dest`) instead of copying it. Changed content is found by `--checksum`.
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(SHIPPED_MTIME))
        .map_err(io)?;
    Ok(())
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
