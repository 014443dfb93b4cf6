//! Push-to-applied latency of `celeroot watch` through a signed GitHub webhook, on the
//! bundled example repository: p50, p99 and max over N pushes.
//!
//! Run: `cargo bench --bench watch_latency` (N defaults to 60; `-- --pushes 200`).
//! Needs `redis-server` (scripts/test.sh installs it). Each sample: commit a one-line
//! change, push it to a local bare repository, then time from sending the webhook to the
//! daemon's `/status` reporting the commit as applied (the reconcile transaction has
//! committed in Redis by then).

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failed expectation is the report

#[path = "../tests/cli/common/http.rs"]
mod http;
// `fleet_scale` reads the daemon's pid; this bench only keeps it alive.
#[allow(dead_code)]
#[path = "support/servers.rs"]
mod servers;
mod support;

use std::path::Path;

use std::time::Instant;

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
    let (_redis, redis_port) = servers::start_redis(tmp.path());
    let work = tmp.path().join("work");
    let repo = git2::Repository::init(&work).expect("init");
    for (path, text) in celeroot::init::EXAMPLE_MANIFESTS {
        let p = work.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
    commit(&repo, &work, 0);
    let watch = servers::Watch::start(
        &repo,
        tmp.path(),
        &format!("redis://127.0.0.1:{redis_port}/0"),
    );
    let first = repo
        .head()
        .expect("head")
        .target()
        .expect("oid")
        .to_string();
    assert!(
        watch.wait(&first, 30),
        "the daemon did not apply the first revision"
    );

    let mut samples = Vec::with_capacity(pushes);
    for n in 1..=pushes {
        let id = commit(&repo, &work, n);
        watch.push(&repo);
        let started = Instant::now();
        let code = watch.webhook(&id, &format!("bench-{n}"));
        assert_eq!(code, 202, "webhook refused");
        assert!(watch.wait(&id, 30), "push {n} was not applied within 30 s");
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
