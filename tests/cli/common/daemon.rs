//! A real `celeroot watch` process, HTTP requests to it over a plain TCP socket, and
//! git pushes to local bare repositories.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::http::http;
use super::TestRepo;

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// A running daemon. Killed (SIGKILL) on drop; its log is printed when a test fails.
pub struct Daemon {
    child: Option<Child>,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `celeroot watch --repo REPO --listen 127.0.0.1:<free port> ARGS...` against
    /// `redis`, with a cache directory of its own, and waits for `/healthz`.
    pub fn start(repo: &str, redis: &str, args: &[&str]) -> Daemon {
        Self::start_as(repo, redis, args, "daemon@ci")
    }

    pub fn start_as(repo: &str, redis: &str, args: &[&str], identity: &str) -> Daemon {
        Self::start_with_env(repo, redis, args, identity, &[])
    }

    /// [`Daemon::start_as`] with extra environment variables (the daemon's environment is
    /// otherwise cleared).
    pub fn start_with_env(
        repo: &str,
        redis: &str,
        args: &[&str],
        identity: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let log = dir.path().join("daemon.log");
        let err = std::fs::File::create(&log).expect("log file");
        let child = Command::new(assert_cmd::cargo::cargo_bin("celeroot"))
            .arg("watch")
            .arg("--repo")
            .arg(repo)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(args)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CELEROOT_REDIS_URL", redis)
            .env("CELEROOT_ACTOR", identity)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn celeroot watch");
        let mut d = Daemon {
            child: Some(child),
            port,
            log,
            _dir: dir,
        };
        d.wait_for("/healthz answers", Duration::from_secs(20), |d| {
            d.get("/healthz").0 == 200
        });
        d
    }

    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .map(|c| i32::try_from(c.id()).expect("pid"))
            .expect("running")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal (libc::SIGTERM, SIGKILL, SIGSTOP, SIGCONT).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on a child process id we own.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid());
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return st.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Polls `cond` every 50 ms until it holds; panics with the daemon's log otherwise.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, cond: impl Fn(&Daemon) -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond(self) {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "the daemon exited ({st}) while waiting for {what}:\n{}",
                        self.log()
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out after {timeout:?} waiting for {what}; daemon log:\n{}",
            self.log()
        );
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http(self.port, "GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
        http(self.port, "POST", path, headers, body)
    }

    /// `/status` as JSON.
    pub fn status(&self) -> serde_json::Value {
        let (code, body) = self.get("/status");
        if code != 200 {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }

    pub fn applied(&self) -> Option<String> {
        self.status()["appliedRevision"].as_str().map(String::from)
    }

    pub fn is_leader(&self) -> bool {
        self.status()["leader"].as_bool() == Some(true)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- daemon log (port {}) ----\n{}", self.port, self.log());
        }
    }
}

/// A bare repository in a temp dir, the "remote" pushes go to.
pub struct BareRepo {
    dir: tempfile::TempDir,
}

impl BareRepo {
    pub fn new() -> BareRepo {
        let dir = tempfile::tempdir().expect("temp dir");
        git2::Repository::init_bare(dir.path()).expect("git init --bare");
        BareRepo { dir }
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }

    /// Pushes the work repository's current branch to `refs/heads/<branch>` (forced).
    pub fn push_from(&self, repo: &TestRepo, branch: &str) {
        let r = git2::Repository::open(repo.root()).expect("open work repo");
        let head = r.head().expect("HEAD");
        let src = head.name().expect("HEAD names a branch").to_string();
        let mut remote = r.remote_anonymous(&self.url()).expect("anonymous remote");
        remote
            .push(&[format!("+{src}:refs/heads/{branch}").as_str()], None)
            .expect("git push");
    }
}

/// The work repository's current branch name (`master` or `main`, per libgit2 defaults).
pub fn branch_of(repo: &TestRepo) -> String {
    let r = git2::Repository::open(repo.root()).expect("open work repo");
    let head = r.head().expect("HEAD");
    head.shorthand().expect("branch").to_string()
}
