//! A real `celeroot agent` running a real Celery worker (the pinned virtualenv) from a
//! deployed release directory, as the rendered unit would: for the tests that follow a
//! host from its deploy to tasks running on it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::celery::python;

/// The scaffold's worker code (`tasks/`), for a config repository whose release runs a
/// real worker: (path, text) pairs to commit.
pub fn scaffold_tasks() -> Vec<(String, String)> {
    let dir = super::project_root().join("templates/config-repo/tasks");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("the scaffold's tasks")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "py"))
        .map(|e| {
            (
                format!("tasks/{}", e.file_name().to_string_lossy()),
                std::fs::read_to_string(e.path()).expect("read"),
            )
        })
        .collect();
    out.sort();
    out
}

/// The target directory of the lab's host `i` (0-based).
pub fn lab_target(lab: &super::sshd::SshLab, i: usize) -> PathBuf {
    lab.dir.path().join(format!("target-{}", i + 1))
}

/// A config repository of cluster `lab` (Europe/Berlin): one role `worker` on every host
/// of the lab, each deployed into its own target directory as the test user, with
/// `setup` as the setup command (a YAML list), and the scaffold's worker code. Not
/// committed yet.
pub fn lab_repo(lab: &super::sshd::SshLab, setup: &str) -> super::TestRepo {
    let user = super::sshd::SshLab::user();
    let repo = super::TestRepo::empty();
    repo.write(
        "manifests/cluster.yaml",
        &format!(
            "apiVersion: celeroot.io/v1\nkind: Cluster\nmetadata:\n  name: lab\nspec:\n  timezone: Europe/Berlin\n  ssh:\n    user: {user}\n    identityFile: {key}\n    connectTimeout: 3s\n  deployment:\n    user: {user}\n    group: {user}\n    setupCommand: {setup}\n    restartCommand: [\"true\"]\n    healthCheck:\n      command: [\"true\"]\n",
            key = lab.key.display(),
        ),
    );
    repo.write(
        "manifests/roles/worker.yaml",
        "apiVersion: celeroot.io/v1\nkind: Role\nmetadata:\n  name: worker\nspec:\n  tasks: [tests, e2e]\n",
    );
    for (i, h) in lab.hosts.iter().enumerate() {
        repo.write(
            &format!("manifests/hosts/{}.yaml", h.name),
            &format!(
                "apiVersion: celeroot.io/v1\nkind: Host\nmetadata:\n  name: {}\nspec:\n  address: {}\n  roles: [worker]\n  ssh:\n    port: {}\n  deployment:\n    targetDir: {}\n",
                h.name,
                h.address,
                h.port,
                lab_target(lab, i).display(),
            ),
        );
    }
    for (path, text) in scaffold_tasks() {
        repo.write(&path, &text);
    }
    repo
}

/// A running agent; SIGTERM (then SIGKILL) on drop, printing its log when the test failed.
pub struct AgentProcess {
    child: Option<Child>,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl AgentProcess {
    /// `celeroot agent` for `host` of `cluster`, with the worker run from `release_dir`
    /// by the pinned celery (solo pool), and `env` added. The agent finds its Redis URL
    /// in `env` or in the credentials file beside the release.
    pub fn start(host: &str, cluster: &str, release_dir: &Path, env: &[(&str, String)]) -> Self {
        let celery = python().with_file_name("celery");
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("celeroot"));
        cmd.args([
            "agent",
            "--host",
            host,
            "--cluster",
            cluster,
            "--release-dir",
        ])
        .arg(release_dir)
        .arg("--celery")
        .arg(&celery)
        .args([
            "--heartbeat-interval",
            "300ms",
            "--heartbeat-ttl",
            "3s",
            "--reread-interval",
            "500ms",
            "--stop-timeout",
            "20s",
        ]);
        for a in ["--pool", "solo", "--without-gossip", "--without-mingle"] {
            cmd.args(["--worker-arg", a]);
        }
        cmd.env_remove("CELEROOT_REDIS_URL")
            .env_remove("CELEROOT_BROKER_URL")
            .env_remove("CELEROOT_RESULT_BACKEND")
            .env(
                "PYTHONPATH",
                format!(
                    "{}:{}",
                    release_dir.display(),
                    super::project_root().join("tests/celery").display()
                ),
            )
            .env("CELEROOT_IMPORTS", "testtasks")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::spawn(cmd)
    }

    /// Any `celeroot` process (an agent, a beat), its stderr logged; SIGTERM on drop.
    pub fn spawn(mut cmd: Command) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("celeroot.log");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"));
        AgentProcess {
            child: Some(cmd.spawn().expect("spawn celeroot")),
            log,
            _dir: dir,
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `cond` holds, failing with the agent's log.
    pub fn wait_until(&self, what: &str, timeout: Duration, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out waiting for {what}; agent log:\n{}",
            self.log_text()
        );
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(pid) = i32::try_from(c.id()) {
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let deadline = Instant::now() + Duration::from_secs(25);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- agent log ----\n{}", self.log_text());
        }
    }
}

/// A host's heartbeat hash.
pub fn heartbeat(
    conn: &mut redis::Connection,
    cluster: &str,
    host: &str,
) -> BTreeMap<String, String> {
    redis::cmd("HGETALL")
        .arg(format!("celeroot:{{{cluster}}}:heartbeat:{host}"))
        .query(conn)
        .unwrap_or_default()
}
