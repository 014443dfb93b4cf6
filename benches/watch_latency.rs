//! Push-to-applied latency of `celeroot watch` through a signed GitHub webhook, on the
//! bundled example repository: p50, p99 and max over N pushes.
//!
//! Run: `cargo bench --bench watch_latency` (N defaults to 60; `-- --pushes 200`).
//! Needs `redis-server` (scripts/test.sh installs it). Each sample: commit a one-line
//! change, push it to a local bare repository, then time from sending the webhook to the
//! daemon's `/status` reporting the commit as applied (the reconcile transaction has
//! committed in Redis by then).

use std::net::TcpListener;
#[path = "../tests/cli/common/http.rs"]
mod http;
mod support;

use std::path::Path;

use http::http;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn commit(repo: &git2::Repository, dir: &Path, n: usize) -> String {
    let role = dir.join("manifests/roles/webserver.yaml");
    let text = std::fs::read_to_string(&role).expect("read role");
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    for l in &mut lines {
        if l.trim_start().starts_with("description:") {
            *l = format!("  description: Front-end hosts, revision {n}.");
        }
    }
    std::fs::write(&role, lines.join("\n") + "\n").expect("write role");
    support::commit_all(repo, &format!("change {n}"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` builds and runs benches without --bench.
        println!("watch_latency: run with `cargo bench --bench watch_latency`");
        return;
    }
    let pushes: usize = args
        .iter()
        .position(|a| a == "--pushes")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(60);

    let tmp = tempfile::tempdir().expect("tmp");
    let redis_port = free_port();
    let _redis = Kill(
        Command::new("redis-server")
            .args([
                "--port",
                &redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(tmp.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (install it: apt-get install redis-server)"),
    );
    let work = tmp.path().join("work");
    let repo = git2::Repository::init(&work).expect("init");
    for (path, text) in celeroot::init::EXAMPLE_MANIFESTS {
        let p = work.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
    commit(&repo, &work, 0);
    let bare = tmp.path().join("bare.git");
    git2::Repository::init_bare(&bare).expect("bare");
    let url = format!("file://{}", bare.display());
    let head_ref = repo.head().expect("head").name().expect("name").to_string();
    let push = || {
        let mut remote = repo.remote_anonymous(&url).expect("remote");
        remote
            .push(&[format!("+{head_ref}:refs/heads/main").as_str()], None)
            .expect("push");
    };
    push();
    let secret = "bench-secret";
    std::fs::write(tmp.path().join("secret"), secret).expect("secret");
    let port = free_port();
    let _daemon = Kill(
        Command::new(env!("CARGO_BIN_EXE_celeroot"))
            .args(["watch", "--repo", &url, "--interval", "1h", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--webhook-secret-file")
            .arg(tmp.path().join("secret"))
            .arg("--cache-dir")
            .arg(tmp.path().join("cache"))
            .env(
                "CELEROOT_REDIS_URL",
                format!("redis://127.0.0.1:{redis_port}/0"),
            )
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .expect("celeroot watch"),
    );
    let applied = || -> Option<String> {
        let (code, body) = http(port, "GET", "/status", &[], b"");
        if code != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["appliedRevision"].as_str().map(String::from)
    };
    let wait = |want: &str| -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if applied().as_deref() == Some(want) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    };
    let first = repo
        .head()
        .expect("head")
        .target()
        .expect("oid")
        .to_string();
    assert!(wait(&first), "the daemon did not apply the first revision");

    let mut samples = Vec::with_capacity(pushes);
    for n in 1..=pushes {
        let id = commit(&repo, &work, n);
        push();
        let body = format!(r#"{{"ref":"refs/heads/main","after":"{id}"}}"#);
        let sig = celeroot::daemon::webhook::sign(secret.as_bytes(), body.as_bytes());
        let delivery = format!("bench-{n}");
        let started = Instant::now();
        let (code, _) = http(
            port,
            "POST",
            "/hooks/github",
            &[
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", &delivery),
                ("X-Hub-Signature-256", &sig),
            ],
            body.as_bytes(),
        );
        assert_eq!(code, 202, "webhook refused");
        assert!(wait(&id), "push {n} was not applied within 30 s");
        samples.push(started.elapsed());
    }
    samples.sort();
    let pct = |p: f64| {
        let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    println!(
        "watch_latency: push-to-applied through a signed GitHub webhook, {} pushes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        samples.len(),
        pct(0.50),
        pct(0.99),
        samples.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    );
    println!("reproduce: cargo bench --bench watch_latency -- --pushes {pushes}");
}
