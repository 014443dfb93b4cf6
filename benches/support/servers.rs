//! The servers the latency benchmarks run against: a throwaway `redis-server`, and a
//! release `celeroot watch` following a local bare repository, driven by signed GitHub
//! push webhooks. Included with `#[path]` by `watch_latency` and `fleet_scale`, which
//! both declare `mod http` (tests/cli/common/http.rs).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http::http;

/// A child process killed (and reaped) when dropped.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `redis-server` without persistence on a free loopback port; returns it and its port.
pub fn start_redis(dir: &Path) -> (Kill, u16) {
    let port = free_port();
    let redis = Kill(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (install it: apt-get install redis-server)"),
    );
    (redis, port)
}

const SECRET: &str = "bench-secret";

/// A release `celeroot watch --interval 1h` following `main` of a bare repository that
/// [`Watch::push`] pushes `repo`'s HEAD to, so only webhooks make it fetch.
pub struct Watch {
    pub daemon: Kill,
    pub port: u16,
    bare_url: String,
}

impl Watch {
    /// Pushes `repo`'s HEAD to a new bare repository in `dir` and starts the daemon.
    pub fn start(repo: &git2::Repository, dir: &Path, redis_url: &str) -> Watch {
        let bare = dir.join("bare.git");
        git2::Repository::init_bare(&bare).expect("bare");
        let bare_url = format!("file://{}", bare.display());
        std::fs::write(dir.join("secret"), SECRET).expect("secret");
        let port = free_port();
        let daemon = Kill(
            Command::new(env!("CARGO_BIN_EXE_celeroot"))
                // The generated fleet's hosts are `.example` names: never deploy to them.
                .args([
                    "watch",
                    "--skip-deploy",
                    "--repo",
                    &bare_url,
                    "--interval",
                    "1h",
                    "--listen",
                ])
                .arg(format!("127.0.0.1:{port}"))
                .arg("--webhook-secret-file")
                .arg(dir.join("secret"))
                .arg("--cache-dir")
                .arg(dir.join("cache"))
                .env("CELEROOT_REDIS_URL", redis_url)
                .env("RUST_LOG", "warn")
                .stderr(Stdio::null())
                .spawn()
                .expect("celeroot watch"),
        );
        let watch = Watch {
            daemon,
            port,
            bare_url,
        };
        watch.push(repo);
        watch
    }

    /// Pushes `repo`'s HEAD to the followed branch (libgit2, local transport).
    pub fn push(&self, repo: &git2::Repository) {
        let head_ref = repo.head().expect("head").name().expect("name").to_string();
        let mut remote = repo.remote_anonymous(&self.bare_url).expect("remote");
        remote
            .push(&[format!("+{head_ref}:refs/heads/main").as_str()], None)
            .expect("push");
    }

    /// The revision `/status` reports as applied.
    pub fn applied(&self) -> Option<String> {
        let (code, body) = http(self.port, "GET", "/status", &[], b"");
        if code != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["appliedRevision"].as_str().map(String::from)
    }

    /// Polls `/status` every millisecond until `want` is applied; false after `secs`.
    pub fn wait(&self, want: &str, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if self.applied().as_deref() == Some(want) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    /// Sends a signed GitHub push webhook for commit `id`; returns the HTTP status.
    pub fn webhook(&self, id: &str, delivery: &str) -> u16 {
        let body = format!(r#"{{"ref":"refs/heads/main","after":"{id}"}}"#);
        let sig = celeroot::daemon::webhook::sign(SECRET.as_bytes(), body.as_bytes());
        let (code, _) = http(
            self.port,
            "POST",
            "/hooks/github",
            &[
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", delivery),
                ("X-Hub-Signature-256", &sig),
            ],
            body.as_bytes(),
        );
        code
    }
}
