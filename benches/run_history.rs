//! Run history (issue 17), docs/performance.md:
//!
//! - a. evaluating the expectations of 20,000 schedule targets (late, missed, failed,
//!   stuck): a first tick (every next due time computed) and later ticks (cached);
//!   target ≤ 50 ms per tick;
//! - b. the collector (`celeroot runs collect`, release build, a real redis-server) fed
//!   task events at a steady rate on the Celery event channel: how many events per
//!   second it records, how far behind it ends, its peak memory; target ≥ 2,000 events/s
//!   with bounded memory;
//! - c. `celeroot runs SCHEDULE` for a target holding a year of history at the retention
//!   limit (100,000 runs): the library call and the whole command; target ≤ 20 ms.
//!
//! Run: `cargo bench --bench run_history` (`-- --schedules N --events N --rate N
//! --history N --only abc`). Needs `redis-server`.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failed expectation is the report

#[allow(dead_code)] // shared with the latency benchmarks: only start_redis is used here
#[path = "../tests/cli/common/http.rs"]
mod http;
#[allow(dead_code)]
#[path = "support/servers.rs"]
mod servers;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use celeroot::desired::RunRetention;
use celeroot::manifest::values::{default_grace_secs, parse_cron};
use celeroot::runs::expect::{Evaluator, Expectation, Observed, When};
use celeroot::state::runs::{Latest, RunUpdate};
use celeroot::state::{RedisUrl, Store};

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn expectations(n: usize) -> Vec<Expectation> {
    const CRONS: [&str; 5] = [
        "*/5 * * * *",
        "15 2 * * *",
        "0 */6 * * *",
        "30 3 * * 0",
        "0 9 * * 1-5",
    ];
    (0..n)
        .map(|i| {
            let when = if i % 2 == 0 {
                When::Every(60 * (1 + (i as u64 % 60)))
            } else {
                When::Cron(
                    Box::new(parse_cron(CRONS[i % CRONS.len()]).unwrap()),
                    chrono_tz::Europe::Berlin,
                )
            };
            let period = match &when {
                When::Every(s) => *s,
                When::Cron(c, _) => c.min_period_secs().unwrap(),
            };
            Expectation {
                schedule: format!("s{i}"),
                entry: format!("s{i}.host.h{}", i % 10_000),
                target: format!("host/h{}", i % 10_000),
                when,
                enabled: true,
                grace_secs: default_grace_secs(period),
                timeout_secs: Some(3600),
                labels: BTreeMap::new(),
                external: false,
            }
        })
        .collect()
}

fn bench_expectations(n: usize) {
    let xs = expectations(n);
    let now = now_secs();
    let latest: BTreeMap<String, Latest> = xs
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let fired = now - (i % 3600) as f64;
            (
                x.entry.clone(),
                Latest {
                    id: format!("t{i}"),
                    state: "succeeded".into(),
                    fired,
                    started: Some(fired + 0.01),
                    finished: Some(fired + 0.2),
                    host: Some(format!("h{}", i % 10_000)),
                    last_success: Some(fired + 0.2),
                    last_started: Some(fired),
                },
            )
        })
        .collect();
    let watched = BTreeMap::new();
    let seen = Observed {
        latest: &latest,
        watched: &watched,
        collecting_since: Some(now - 7.0 * 86_400.0),
    };
    let mut cold = Vec::new();
    for _ in 0..5 {
        let mut ev = Evaluator::default();
        let t = Instant::now();
        let h = ev.evaluate(&xs, seen, now);
        cold.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(h.len(), n);
    }
    let mut ev = Evaluator::default();
    ev.evaluate(&xs, seen, now);
    let mut warm = Vec::new();
    for k in 1..=20 {
        let t = Instant::now();
        let h = ev.evaluate(&xs, seen, now + f64::from(k));
        warm.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(h.len(), n);
    }
    println!(
        "a. expectations of {n} schedule targets: first tick {:.1} ms (median of 5), later ticks {:.1} ms (median of 20; max {:.1} ms); target ≤ 50 ms per tick\n   command: cargo bench --bench run_history -- --only a --schedules {n}",
        median(cold),
        median(warm.clone()),
        warm.iter().copied().fold(0.0, f64::max)
    );
}

/// One `task.multi` envelope as a worker publishes it: received, started and succeeded
/// of one task of schedule target `entry`.
fn multi(uuid: &str, entry: &str, ts: f64) -> String {
    let host = entry.rsplit('.').next().unwrap_or("h");
    let body = serde_json::json!([
        {"hostname": format!("{host}@bench"), "uuid": uuid, "name": "bench.task", "args": "[]", "kwargs": "{}",
         "root_id": format!("celeroot:{entry}"), "parent_id": null, "retries": 0, "eta": null, "expires": null,
         "timestamp": ts, "type": "task-received", "clock": 1, "pid": 1, "utcoffset": 0},
        {"hostname": format!("{host}@bench"), "uuid": uuid, "timestamp": ts + 0.001, "type": "task-started", "clock": 2, "pid": 1, "utcoffset": 0},
        {"hostname": format!("{host}@bench"), "uuid": uuid, "result": "'ok'", "runtime": 0.01, "timestamp": ts + 0.011, "type": "task-succeeded", "clock": 3, "pid": 1, "utcoffset": 0},
    ]);
    serde_json::json!({
        "body": celeroot::celery::message::base64_encode(body.to_string().as_bytes()),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"hostname": format!("{host}@bench")},
        "properties": {"delivery_mode": 1, "delivery_info": {"exchange": "celeryev", "routing_key": "task.multi"},
                       "priority": 0, "body_encoding": "base64", "delivery_tag": uuid},
    })
    .to_string()
}

fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn bench_collector(events: usize, rate: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (_redis, port) = servers::start_redis(dir.path());
    let url = format!("redis://127.0.0.1:{port}/0");
    let mut conn = wait_redis(&url);
    let collector = Command::new(env!("CARGO_BIN_EXE_celeroot"))
        .args(["runs", "collect", "--cluster", "bench", "--id", "bench"])
        .env("CELEROOT_REDIS_URL", &url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let collector = servers::Kill(collector);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let n: usize = redis::cmd("HLEN")
            .arg("celeroot:{bench}:runs::collectors")
            .query(&mut conn)
            .unwrap_or(0);
        if n > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let tasks = events / 3;
    let entries = 1000;
    // Envelopes built beforehand: the publisher only paces and publishes.
    let now = now_secs();
    let payloads: Vec<String> = (0..tasks)
        .map(|i| {
            multi(
                &format!("00000000-0000-4000-8000-{i:012}"),
                &format!("s{}.host.h{}", i % entries, i % entries),
                now + i as f64 / 1000.0,
            )
        })
        .collect();
    let per_batch = 20; // envelopes (60 events) per pipelined round trip
    let batch_every = Duration::from_secs_f64((per_batch * 3) as f64 / rate as f64);
    let start = Instant::now();
    for (b, chunk) in payloads.chunks(per_batch).enumerate() {
        let due = start + batch_every * u32::try_from(b).unwrap();
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut pipe = redis::pipe();
        for p in chunk {
            pipe.cmd("PUBLISH")
                .arg("/0.celeryev/task.multi")
                .arg(p)
                .ignore();
        }
        let () = pipe.query(&mut conn).unwrap();
    }
    let published = start.elapsed();
    let mut recorded = 0;
    let until = Instant::now() + Duration::from_secs(120);
    while Instant::now() < until {
        recorded = redis::cmd("HLEN")
            .arg("celeroot:{bench}:runs::entry")
            .query(&mut conn)
            .unwrap_or(0);
        if recorded >= tasks {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let done = start.elapsed();
    let rss = peak_rss_mb(collector.0.id());
    let latest: usize = redis::cmd("HLEN")
        .arg("celeroot:{bench}:runs::latest")
        .query(&mut conn)
        .unwrap_or(0);
    assert_eq!(latest, entries.min(tasks));
    println!(
        "b. collector: {} events ({tasks} runs on {entries} targets) published at {:.0} events/s over {:.1} s; all {recorded} runs recorded {:.0} ms after the last publish: {:.0} events/s sustained; peak RSS {rss:.1} MB; target ≥ 2,000 events/s\n   command: cargo bench --bench run_history -- --only b --events {events} --rate {rate}",
        tasks * 3,
        (tasks * 3) as f64 / published.as_secs_f64(),
        published.as_secs_f64(),
        (done - published).as_secs_f64() * 1000.0,
        (tasks * 3) as f64 / done.as_secs_f64(),
    );
    assert!(
        recorded >= tasks,
        "the collector recorded {recorded} of {tasks} runs"
    );
}

fn wait_redis(url: &str) -> redis::Connection {
    let client = redis::Client::open(url).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(c) = client.get_connection() {
            return c;
        }
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn bench_query(history: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (_redis, port) = servers::start_redis(dir.path());
    let url = format!("redis://127.0.0.1:{port}/0");
    drop(wait_redis(&url));
    let mut store = Store::connect(&RedisUrl::parse(&url).unwrap(), "bench").unwrap();
    let retention = RunRetention {
        keep: celeroot::manifest::MAX_RUNS_KEPT,
        max_age_secs: 366 * 86_400,
    };
    let now = now_secs();
    let step = 365.0 * 86_400.0 / history as f64;
    let entry = "nightly.host.h1";
    let t = Instant::now();
    let updates: Vec<RunUpdate> = (0..history)
        .flat_map(|i| {
            let ts = now - (history - i) as f64 * step;
            let id = format!("00000000-0000-4000-8000-{i:012}");
            let open = RunUpdate {
                id: id.clone(),
                entry: entry.into(),
                kind: "received",
                timestamp: ts,
                schedule: Some("nightly".into()),
                target: Some("host/h1".into()),
                task: Some("bench.task".into()),
                host: Some("h1".into()),
                worker: Some("h1@bench".into()),
                retries: Some(0),
                runtime: None,
                exception: None,
                message: None,
                result_size: None,
                expired: false,
            };
            let close = RunUpdate {
                kind: if i % 10 == 0 { "failed" } else { "succeeded" },
                timestamp: ts + 1.5,
                runtime: Some(1.5),
                exception: (i % 10 == 0).then(|| "RuntimeError".to_string()),
                message: (i % 10 == 0).then(|| "boom".to_string()),
                result_size: (i % 10 != 0).then_some(4),
                ..open.clone()
            };
            [open, close]
        })
        .collect();
    for chunk in updates.chunks(1000) {
        store.record_runs(chunk, retention, now).unwrap();
    }
    let filled = t.elapsed();
    let entries = vec![entry.to_string()];
    let mut lib = Vec::new();
    for _ in 0..100 {
        let t = Instant::now();
        let runs = store.runs_of(&entries, 0.0, 50).unwrap();
        lib.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(runs.len(), 50);
    }
    let mut cli = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_celeroot"))
            .args(["runs", "nightly", "--cluster", "bench", "-n", "50"])
            .env("CELEROOT_REDIS_URL", &url)
            .output()
            .unwrap();
        cli.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 51);
    }
    let mut failed = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_celeroot"))
            .args([
                "runs",
                "nightly",
                "--cluster",
                "bench",
                "--failed",
                "-n",
                "50",
            ])
            .env("CELEROOT_REDIS_URL", &url)
            .output()
            .unwrap();
        failed.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(out.status.success());
    }
    let kept: usize = redis::cmd("ZCARD")
        .arg(format!("celeroot:{{bench}}:runs:{entry}"))
        .query(&mut wait_redis(&url))
        .unwrap();
    println!(
        "c. `celeroot runs` for a target holding a year of history ({kept} runs, written in {:.1} s): the last 50 in {:.2} ms (library, median of 100), {:.1} ms (the command, a fresh process, median of 20), {:.1} ms with --failed; target ≤ 20 ms\n   command: cargo bench --bench run_history -- --only c --history {history}",
        filled.as_secs_f64(),
        median(lib),
        median(cli),
        median(failed),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` builds and runs benches without --bench.
        println!("run_history: run with `cargo bench --bench run_history`");
        return;
    }
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "abc".into());
    if only.contains('a') {
        bench_expectations(arg(&args, "--schedules", 20_000));
    }
    if only.contains('b') {
        bench_collector(arg(&args, "--events", 60_000), arg(&args, "--rate", 4_000));
    }
    if only.contains('c') {
        bench_query(arg(&args, "--history", 100_000));
    }
}
