//! Fleet-scale benchmarks (issue 9) on a generated fleet (`benches/support/fleet.rs`,
//! the same generator as `cargo run --release --example gen_fleet`):
//!
//! - a. cold `celeroot validate` of the fleet from git objects (a fresh process);
//! - b. `celeroot diff --from HEAD~1 --to HEAD` where one file changed;
//! - c. a reconcile when the applied revision is already HEAD (no-op), with the Redis
//!   round trips it made: the daemon's path (from its baseline), the library's full
//!   observe, and the CLI in fresh processes: its fast no-op (nothing compiled, every key
//!   read back and compared with its digest) as a share of a first full reconcile of the
//!   same run, and its full path (compile and observe) for reference;
//! - d. a reconcile of a one-file change against a Redis holding the whole fleet: the
//!   daemon's incremental path (re-read the changed blobs, plan against its baseline),
//!   and the CLI's full path for reference;
//! - e. the first full `celeroot reconcile` into an empty Redis, as objects per second,
//!   next to `redis-benchmark -P 64` writing as many hashes on the same server;
//! - f. the peak memory (max RSS) of a and e;
//! - g. `celeroot watch`: push-to-applied latency of one-file changes (signed webhook).
//!
//! Run: `cargo bench --bench fleet_scale` (10,000 hosts, 200 roles, 20,000 schedules).
//! Options: `-- --hosts N --roles N --schedules N --runs N --pushes N --only abcdeg
//! --no-peer` (`--no-peer`: e without the Python peer; `benches/scale_shape.sh` uses it).
//! Needs `redis-server` and `redis-benchmark` (scripts/test.sh installs redis-server,
//! which ships both). Every figure is printed with the command that reproduces it.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failed expectation is the report

#[path = "support/fleet.rs"]
mod fleet;
#[path = "../tests/cli/common/http.rs"]
mod http;
#[path = "support/servers.rs"]
mod servers;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use celeroot::apply::{self, Baseline, Compiler, Options};
use celeroot::state::{RedisUrl, Store};

fn num(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// Median, min and max of samples in milliseconds.
fn stats(samples: &[f64]) -> (f64, f64, f64) {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let med = if s.is_empty() {
        0.0
    } else if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    (
        med,
        s.first().copied().unwrap_or(0.0),
        s.last().copied().unwrap_or(0.0),
    )
}

fn pct(samples: &[f64], p: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((s.len() as f64 * p).ceil() as usize).clamp(1, s.len().max(1)) - 1;
    s.get(i).copied().unwrap_or(0.0)
}

fn spread(label: &str, unit: &str, samples: &[f64]) -> String {
    let (m, lo, hi) = stats(samples);
    format!(
        "{label}: median {m:.1} {unit} (min {lo:.1}, max {hi:.1}, {} runs)",
        samples.len()
    )
}

/// Runs a celeroot command in a fresh process; returns (seconds, max RSS in MB, stdout).
fn run(repo: &Path, args: &[&str], redis: Option<&str>) -> (f64, f64, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_celeroot"));
    cmd.arg("--repo").arg(repo).args(args);
    cmd.env("CELEROOT_SKIP_DEPLOY", "1").env("NO_COLOR", "1");
    if let Some(url) = redis {
        cmd.env("CELEROOT_REDIS_URL", url);
    }
    measure(&mut cmd)
}

/// Runs `cmd` (stdout captured, stderr dropped); returns (seconds, max RSS in MB, stdout).
fn measure(cmd: &mut Command) -> (f64, f64, String) {
    let out = tempfile::NamedTempFile::new().expect("temp file");
    cmd.stdout(out.reopen().expect("reopen"))
        .stderr(Stdio::null());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    let pid = child.id();
    // The child's peak RSS, from its own VmHWM, sampled until it exits: `ru_maxrss` of a
    // child also counts its parent's pages from before `exec` (the benchmark holds a
    // compiled fleet at times), so it cannot be used here.
    let status_file = format!("/proc/{pid}/status");
    let mut hwm_kb = 0u64;
    loop {
        if let Some(kb) = std::fs::read_to_string(&status_file).ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        }) {
            hwm_kb = hwm_kb.max(kb);
        }
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let secs = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(out.path()).unwrap_or_default();
    (secs, hwm_kb as f64 / 1024.0, text)
}

fn redis_cmd(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn options() -> Options {
    Options {
        dry_run: false,
        prune: true,
        allow_mass_delete: false,
        allow_rollback: false,
        sweep: false,
        actor: "bench@fleet".into(),
        leader: None,
        lock_wait: std::time::Duration::ZERO,
        fault: None,
    }
}

/// The first-parent chain of HEAD, newest first.
fn history(repo: &git2::Repository) -> Vec<String> {
    let mut out = Vec::new();
    let mut c = repo.head().expect("head").peel_to_commit().ok();
    while let Some(commit) = c {
        out.push(commit.id().to_string());
        c = commit.parent(0).ok();
    }
    out
}

fn reconcile_in_process(
    store: &mut Store,
    repo: &git2::Repository,
    rev: &apply::Revision,
    baseline: Option<Baseline>,
) -> (apply::Outcome, Option<Baseline>) {
    let target = rev.compiled.revision.commit.clone().unwrap_or_default();
    let ancestry = |applied: &str| apply::ancestry(repo, &target, applied);
    apply::reconcile_from(
        store,
        rev,
        &options(),
        &ancestry,
        chrono::Utc::now(),
        baseline,
    )
    .expect("reconcile")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` builds and runs benches without --bench.
        println!("fleet_scale: run with `cargo bench --bench fleet_scale`");
        return;
    }
    let spec = fleet::Spec {
        hosts: num(&args, "--hosts", 10_000),
        roles: num(&args, "--roles", 200),
        schedules: num(&args, "--schedules", 20_000),
    };
    let runs = num(&args, "--runs", 5).max(1);
    let pushes = num(&args, "--pushes", 30).max(1);
    let steps = 20;
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "abcdefg".into());
    let want = |c: char| only.contains(c);
    let size = format!(
        "--hosts {} --roles {} --schedules {}",
        spec.hosts, spec.roles, spec.schedules
    );
    let repro = |what: &str| format!("cargo bench --bench fleet_scale -- {size} --only {what}");

    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("fleet");
    let started = Instant::now();
    let repo = fleet::generate(&dir, &spec);
    for n in 1..=steps + 1 {
        fleet::commit_change(&repo, &spec, n);
    }
    let objects = 1 + spec.hosts + spec.roles + spec.schedules;
    println!(
        "fleet: {} hosts, {} roles, {} schedules ({objects} objects, one per file), {} commits, generated in {:.1} s",
        spec.hosts,
        spec.roles,
        spec.schedules,
        steps + 2,
        started.elapsed().as_secs_f64()
    );

    let (_redis, redis_port) = servers::start_redis(tmp.path());
    let url = format!("redis://127.0.0.1:{redis_port}/0");
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis_cmd(redis_port, &["PING"]).trim() != "PONG" {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut rss = Vec::new();
    if want('a') || want('f') {
        let mut t = Vec::new();
        for _ in 0..runs {
            let (s, m, out) = run(&dir, &["validate"], None);
            assert!(out.contains("are valid"), "validate failed: {out}");
            t.push(s * 1000.0);
            rss.push(("a (validate)", m));
        }
        println!(
            "a. {}",
            spread("cold `celeroot validate` from git objects", "ms", &t)
        );
        println!("   reproduce: {}", repro("a"));
    }
    if want('b') {
        let mut t = Vec::new();
        for _ in 0..runs {
            let (s, _, out) = run(&dir, &["diff", "--from", "HEAD~1", "--to", "HEAD"], None);
            assert!(out.contains("1 to change"), "diff: {out}");
            t.push(s * 1000.0);
        }
        println!(
            "b. {}",
            spread(
                "`celeroot diff --from HEAD~1 --to HEAD`, one file changed",
                "ms",
                &t
            )
        );
        println!("   reproduce: {}", repro("b"));
    }
    if want('e') || want('f') {
        let mut t = Vec::new();
        let mut inner = Vec::new();
        let mut bench_rates = Vec::new();
        let mut writes = 0;
        // The Python peer (benches/peers/register_fleet.py, its own pinned virtualenv).
        let peer_python = if want('e') && !args.iter().any(|a| a == "--no-peer") {
            let out = Command::new("bash")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/benches/peers/setup.sh"
                ))
                .stderr(Stdio::inherit())
                .output()
                .expect("benches/peers/setup.sh");
            assert!(out.status.success(), "benches/peers/setup.sh failed");
            Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            None
        };
        let (mut peer_t, mut peer_rss, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs.min(3) {
            redis_cmd(redis_port, &["FLUSHALL"]);
            let (s, m, out) = run(
                &dir,
                &["reconcile", "--skip-deploy", "-o", "json"],
                Some(&url),
            );
            let v: serde_json::Value = serde_json::from_str(&out).expect("reconcile JSON");
            assert_eq!(v["result"], "applied", "{out}");
            writes = v["writes"].as_u64().unwrap_or(0);
            t.push(objects as f64 / s);
            inner.push(objects as f64 / (v["durationMs"].as_f64().unwrap_or(1.0) / 1000.0));
            rss.push(("e (first reconcile)", m));
            if let Some(py) = &peer_python {
                redis_cmd(redis_port, &["FLUSHALL"]);
                let (ps, pm, pout) = measure(
                    Command::new(py)
                        .arg(concat!(
                            env!("CARGO_MANIFEST_DIR"),
                            "/benches/peers/register_fleet.py"
                        ))
                        .arg(&dir)
                        .arg(&url)
                        .arg("fleet"),
                );
                assert!(
                    pout.starts_with("objects="),
                    "the Python peer failed: {pout}"
                );
                peer_t.push(ps);
                peer_rss.push(pm);
                ratios.push(ps / s);
                redis_cmd(redis_port, &["FLUSHALL"]);
            }
            // The same number of hash writes, pipelined 64 deep, on the same server.
            let out = Command::new("redis-benchmark")
                .args([
                    "-p",
                    &redis_port.to_string(),
                    "-P",
                    "64",
                    "-q",
                    "-r",
                    "100000000",
                ])
                .args(["-n", &objects.to_string()])
                .args(["HSET", "bench:__rand_int__", "field", "value"])
                .output()
                .expect("redis-benchmark");
            let text = String::from_utf8_lossy(&out.stdout);
            let rate: f64 = text
                .rsplit(':')
                .next()
                .and_then(|r| r.split_whitespace().next())
                .and_then(|r| r.parse().ok())
                .unwrap_or(0.0);
            bench_rates.push(rate);
        }
        let (rm, _, _) = stats(&t);
        let (bm, _, _) = stats(&bench_rates);
        println!(
            "e. {}",
            spread(
                &format!("first `celeroot reconcile` into an empty Redis, whole command ({objects} objects, {writes} key writes)"),
                "objects/s",
                &t
            )
        );
        println!(
            "   {}",
            spread(
                "the same, reconcile stage only (lease to commit, without compiling)",
                "objects/s",
                &inner
            )
        );
        println!(
            "   {}",
            spread(
                &format!("redis-benchmark -P 64 -n {objects} HSET (same server, same run)"),
                "writes/s",
                &bench_rates
            )
        );
        println!(
            "   ratio (whole command / redis-benchmark): {:.0} %",
            100.0 * rm / bm.max(1.0)
        );
        if !peer_t.is_empty() {
            println!(
                "   {}; {}",
                spread(
                    "the Python peer (benches/peers/register_fleet.py: PyYAML, pydantic, redis-py, RedBeatSchedulerEntry.save()), same fleet, same server",
                    "s",
                    &peer_t
                ),
                spread("its max RSS", "MB", &peer_rss)
            );
            println!(
                "   {}",
                spread(
                    "ratio (Python peer time / celeroot whole command, run by run)",
                    "x",
                    &ratios
                )
            );
        }
        println!("   reproduce: {}", repro("e"));
    }
    if want('f') {
        for (what, m) in [("a (validate)", 0), ("e (first reconcile)", 1)] {
            let _ = m;
            let s: Vec<f64> = rss
                .iter()
                .filter(|(w, _)| *w == what)
                .map(|(_, m)| *m)
                .collect();
            println!("f. {}", spread(&format!("max RSS of {what}"), "MB", &s));
        }
        println!("   reproduce: {}", repro("aef"));
    }

    let hist = history(&repo);
    let rurl = RedisUrl::parse(&url).expect("url");
    if want('c') {
        // The CLI in fresh processes, in the same run: a full first reconcile into an
        // empty Redis (which records the settled revision), then the applied revision
        // again: the fast no-op, and the full path (settled record deleted first). First,
        // while this process is small: a child's max RSS counts its parent's pages from
        // before `exec`.
        redis_cmd(redis_port, &["FLUSHALL"]);
        let (first, _, out) = run(
            &dir,
            &["reconcile", "--skip-deploy", "-o", "json"],
            Some(&url),
        );
        assert!(out.contains("\"applied\""), "{out}");
        let (mut fast, mut fast_rss, mut full, mut full_rss) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut checked = 0;
        for _ in 0..runs.min(3) {
            let (s, m, out) = run(
                &dir,
                &["reconcile", "--skip-deploy", "-o", "json"],
                Some(&url),
            );
            let v: serde_json::Value = serde_json::from_str(&out).expect("reconcile JSON");
            assert_eq!(v["result"], "noop", "{out}");
            checked = v["settled"].as_u64().expect("the fast no-op");
            fast.push(s * 1000.0);
            fast_rss.push(m);
            let cluster = redis_cmd(redis_port, &["GET", "celeroot:owner"]);
            let settled = format!("celeroot:{{{}}}:settled", cluster.trim());
            redis_cmd(redis_port, &["DEL", &settled]);
            let (s, m, out) = run(
                &dir,
                &["reconcile", "--skip-deploy", "-o", "json"],
                Some(&url),
            );
            assert!(
                out.contains("\"noop\"") && !out.contains("\"settled\""),
                "{out}"
            );
            full.push(s * 1000.0);
            full_rss.push(m);
        }
        println!(
            "c. {}; {}",
            spread(
                &format!("`celeroot reconcile` of the applied revision, a fresh process: the fast no-op (nothing compiled, {checked} keys read back and compared)"),
                "ms",
                &fast
            ),
            spread("max RSS", "MB", &fast_rss)
        );
        let (fm, _, _) = stats(&fast);
        println!(
            "   ratio to the first full `celeroot reconcile` of the same run ({:.0} ms): {:.1} % (issue 18 target: <= 5 %)",
            first * 1000.0,
            100.0 * fm / (first * 1000.0)
        );
        println!(
            "   {}; {}",
            spread(
                "the same without the settled record (the full path: compile + observe every key)",
                "ms",
                &full
            ),
            spread("max RSS", "MB", &full_rss)
        );
        redis_cmd(redis_port, &["FLUSHALL"]);
        let mut compiler = Compiler::new("manifests");
        let (rev, _) = compiler.load(&repo, &hist[0]).expect("compile");
        let mut store = Store::connect(&rurl, &rev.compiled.state.cluster).expect("connect");
        let (_, base) = reconcile_in_process(&mut store, &repo, &rev, None);
        let mut base = base.expect("a baseline");
        let mut t = Vec::new();
        let mut trips = Vec::new();
        for _ in 0..(runs * 20) {
            let started = Instant::now();
            let (o, next) = reconcile_in_process(&mut store, &repo, &rev, Some(base));
            t.push(started.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(o.result, apply::Applied::Noop);
            assert!(o.incremental);
            trips.push(o.round_trips);
            base = next.expect("baseline");
        }
        trips.sort_unstable();
        trips.dedup();
        println!(
            "   {}; Redis round trips: {:?}",
            spread(
                "reconcile with HEAD already applied (the daemon's path, from its baseline)",
                "ms",
                &t
            ),
            trips
        );
        let mut t = Vec::new();
        let mut trips = Vec::new();
        for _ in 0..runs {
            let started = Instant::now();
            let (o, _) = reconcile_in_process(&mut store, &repo, &rev, None);
            t.push(started.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(o.result, apply::Applied::Noop);
            trips.push(o.round_trips);
        }
        trips.sort_unstable();
        trips.dedup();
        println!(
            "   {}; Redis round trips: {:?}",
            spread("the same with a full observe (the CLI's path: checks every key for drift), compiled state in memory", "ms", &t),
            trips
        );
        println!("   reproduce: {}", repro("c"));
    }
    if want('d') {
        redis_cmd(redis_port, &["FLUSHALL"]);
        let mut compiler = Compiler::new("manifests");
        let (rev, _) = compiler.load(&repo, &hist[steps]).expect("compile");
        let mut store = Store::connect(&rurl, &rev.compiled.state.cluster).expect("connect");
        let (_, base) = reconcile_in_process(&mut store, &repo, &rev, None);
        let mut base = base.expect("baseline");
        let (mut total, mut comp, mut rec, mut trips) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in (0..steps).rev() {
            let started = Instant::now();
            let (rev, st) = compiler.load(&repo, &hist[i]).expect("compile");
            let compiled = started.elapsed();
            let (o, next) = reconcile_in_process(&mut store, &repo, &rev, Some(base));
            let all = started.elapsed();
            assert!(o.incremental && !st.full && st.files_read == 1);
            assert!(!o.plan.changes.is_empty());
            total.push(all.as_secs_f64() * 1000.0);
            comp.push(compiled.as_secs_f64() * 1000.0);
            rec.push((all - compiled).as_secs_f64() * 1000.0);
            trips.push(o.round_trips);
            base = next.expect("baseline");
        }
        trips.sort_unstable();
        trips.dedup();
        println!(
            "d. {}; Redis round trips: {:?}",
            spread(
                "one-file change, Redis holding the whole fleet (the daemon's incremental path)",
                "ms",
                &total
            ),
            trips
        );
        println!(
            "   {}",
            spread(
                "of which: incremental compile (tree diff, 1 blob parsed, validate + compile)",
                "ms",
                &comp
            )
        );
        println!(
            "   {}",
            spread("of which: reconcile from the baseline", "ms", &rec)
        );
        // The full path for reference: the CLI on the next commit.
        fleet::commit_change(&repo, &spec, steps + 2);
        let (s, _, out) = run(
            &dir,
            &["reconcile", "--skip-deploy", "-o", "json"],
            Some(&url),
        );
        assert!(out.contains("\"applied\""), "{out}");
        println!(
            "   for reference, `celeroot reconcile` of a one-file change (a fresh process: full compile and observe): {:.0} ms",
            s * 1000.0
        );
        println!("   reproduce: {}", repro("d"));
    }
    if want('g') {
        redis_cmd(redis_port, &["FLUSHALL"]);
        let watch = servers::Watch::start(&repo, tmp.path(), &url);
        let first = history(&repo)[0].clone();
        let started = Instant::now();
        assert!(
            watch.wait(&first, 600),
            "the daemon did not apply the first revision"
        );
        println!(
            "g. (the daemon's first apply of the whole fleet took {:.1} s)",
            started.elapsed().as_secs_f64()
        );
        let mut samples = Vec::new();
        for n in 0..pushes {
            let (id, _) = fleet::commit_change(&repo, &spec, steps + 3 + n);
            watch.push(&repo);
            let t0 = Instant::now();
            let code = watch.webhook(&id, &format!("bench-{n}"));
            assert_eq!(code, 202, "webhook refused");
            assert!(watch.wait(&id, 60), "push {n} was not applied within 60 s");
            samples.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        let hwm = std::fs::read_to_string(format!("/proc/{}/status", watch.daemon.0.id()))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("VmHWM"))
            .map(|l| l.trim_start_matches("VmHWM:").trim().to_string())
            .unwrap_or_default();
        println!(
            "g. push-to-applied through a signed webhook, one-file changes, {} pushes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (daemon peak RSS {hwm})",
            samples.len(),
            pct(&samples, 0.5),
            pct(&samples, 0.99),
            stats(&samples).2
        );
        println!("   reproduce: {} --pushes {pushes}", repro("g"));
    }
}
