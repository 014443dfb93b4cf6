//! Test environment: a real git repository in a temp dir, the real binary, and a real
//! redis-server per test.

pub mod agent;
pub mod celery;
pub mod cluster;
pub mod daemon;
pub mod env;
pub mod http;
pub mod rabbitmq;
pub mod receiver;
pub mod redis;
pub mod sentinel;
pub mod sshd;

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// The clock pinned for reproducible next-fire-time output.
pub const NOW: &str = "2026-11-23T12:00:00Z";

/// A throwaway git repository.
pub struct TestRepo {
    dir: tempfile::TempDir,
    commits: i64,
}

impl TestRepo {
    /// An empty repository.
    pub fn empty() -> Self {
        let dir = tempfile::tempdir().expect("create temp dir");
        git2::Repository::init(dir.path()).expect("git init");
        TestRepo { dir, commits: 0 }
    }

    /// A repository holding the bundled example manifests (not yet committed).
    pub fn with_example() -> Self {
        let r = Self::empty();
        for (path, text) in celeroot::init::EXAMPLE_MANIFESTS {
            r.write(path, text);
        }
        r
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write file");
    }

    pub fn write_bytes(&self, rel: &str, bytes: &[u8]) {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, bytes).expect("write file");
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(rel)).expect("read file")
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.dir.path().join(rel)).expect("remove file");
    }

    /// Replaces `from` with `to` in a file, failing when `from` is absent.
    pub fn edit(&self, rel: &str, from: &str, to: &str) {
        let text = self.read(rel);
        assert!(text.contains(from), "{rel} does not contain {from:?}");
        self.write(rel, &text.replacen(from, to, 1));
    }

    /// Stages everything (including deletions) and commits with a fixed author and time,
    /// so commit ids are reproducible. Returns the commit id.
    pub fn commit(&mut self, message: &str) -> String {
        let repo = git2::Repository::open(self.dir.path()).expect("open repo");
        let mut index = repo.index().expect("index");
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .expect("add");
        index.update_all(["*"], None).expect("update");
        index.write().expect("write index");
        let tree = repo
            .find_tree(index.write_tree().expect("write tree"))
            .expect("tree");
        self.commits += 1;
        let sig = git2::Signature::new(
            "Test",
            "test@example.com",
            &git2::Time::new(1_790_000_000 + self.commits * 60, 0),
        )
        .expect("signature");
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .expect("commit")
            .to_string()
    }

    /// The real binary, run in the repository with a clean, reproducible environment.
    pub fn cmd(&self) -> Command {
        celeroot_cmd(self.dir.path())
    }
}

pub fn celeroot_cmd(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("celeroot").expect("binary");
    c.current_dir(dir)
        .env("CELEROOT_NOW", NOW)
        .env("NO_COLOR", "1")
        .env_remove("GITHUB_ACTIONS")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("CELEROOT_REPO")
        .env_remove("CELEROOT_PATH")
        .env_remove("CELEROOT_FAULT")
        .env_remove("CELEROOT_BROKER_URL")
        .env_remove("CELEROOT_RESULT_BACKEND")
        // Tables fit COLUMNS when it is set: tests that want a width set it themselves.
        .env_remove("COLUMNS")
        .env("CELEROOT_REDIS_URL", "redis://127.0.0.1:1/0")
        .env("CELEROOT_ACTOR", "tester@ci");
    c
}

/// Runs a command and returns stdout, stderr and the exit code as one string, jj style.
/// The bundled example, committed and reconciled into `redis` (`--skip-deploy`: its
/// addresses are placeholders).
pub fn reconciled_example(redis: &redis::RedisServer) -> TestRepo {
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    let mut cmd = repo.cmd();
    cmd.args(["reconcile", "--skip-deploy"])
        .env("CELEROOT_REDIS_URL", redis.url());
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
    repo
}

pub fn run(mut c: Command) -> (String, i32) {
    let out = c.output().expect("run celeroot");
    let code = out.status.code().unwrap_or(-1);
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.is_empty() {
        s.push_str("------- stderr -------\n");
        s.push_str(&err);
    }
    s.push_str(&format!("[exit status: {code}]\n"));
    (s, code)
}

/// The repository's own directory (for reading `manifests/` and `schemas/`).
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
