//! Run history (issue 17): a real worker and a real `celery beat` (RedBeat) fire
//! schedules every second on a real redis-server; `celeroot runs collect` records their
//! task events; `celeroot runs` reads them back.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::celery::{worker_env, CeleryProcess};
use crate::common::redis::RedisServer;
use crate::common::{run, TestRepo};

const WAIT: Duration = Duration::from_secs(60);

/// Cluster `fleet` keeping 3 runs per target; h1 runs a worker, h2 has none.
fn fleet() -> TestRepo {
    let mut repo = TestRepo::empty();
    repo.write("manifests/cluster.yaml", "apiVersion: celeroot.io/v1\nkind: Cluster\nmetadata:\n  name: fleet\nspec:\n  runHistory:\n    keep: 3\n    maxAge: 1d\n");
    repo.write(
        "manifests/role.yaml",
        "apiVersion: celeroot.io/v1\nkind: Role\nmetadata:\n  name: worker\nspec: {}\n",
    );
    for (h, ip) in [("h1", "192.0.2.1"), ("h2", "192.0.2.2")] {
        repo.write(
            &format!("manifests/{h}.yaml"),
            &format!("apiVersion: celeroot.io/v1\nkind: Host\nmetadata:\n  name: {h}\nspec:\n  address: {ip}\n  roles: [worker]\n"),
        );
    }
    let schedule = |name: &str, body: &str| {
        format!("apiVersion: celeroot.io/v1\nkind: Schedule\nmetadata:\n  name: {name}\nspec:\n  every: 1s\n{body}")
    };
    repo.write(
        "manifests/tick.yaml",
        &schedule(
            "tick",
            "  task: tests.record\n  args: [tick]\n  targets:\n    - host: h1\n",
        ),
    );
    repo.write(
        "manifests/boom.yaml",
        &schedule(
            "boom",
            "  task: tests.fail\n  args: [\"disk full on redis://app:hunter2@db.invalid:6379/0\"]\n  targets:\n    - host: h1\n",
        ),
    );
    repo.write(
        "manifests/idle.yaml",
        &schedule(
            "idle",
            "  task: tests.record\n  args: [idle]\n  targets:\n    - host: h2\n",
        ),
    );
    repo.commit("fleet");
    repo
}

/// celeroot on the test's Redis, at the real time (runs are real events).
fn celeroot(repo: &TestRepo, redis: &RedisServer, args: &[&str]) -> (String, i32) {
    run(on(repo, redis, args))
}

fn on(repo: &TestRepo, redis: &RedisServer, args: &[&str]) -> assert_cmd::Command {
    let mut cmd = repo.cmd();
    cmd.args(args)
        .env("CELEROOT_REDIS_URL", redis.url())
        .env_remove("CELEROOT_NOW");
    cmd
}

fn runs_json(repo: &TestRepo, redis: &RedisServer, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["runs", "-o", "json"];
    all.extend_from_slice(args);
    let out = on(repo, redis, &all).output().expect("celeroot runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    v["runs"].as_array().cloned().unwrap_or_default()
}

/// `celeroot runs collect` as a child; SIGTERM on drop.
struct Collector {
    child: Option<Child>,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Collector {
    fn start(repo: &TestRepo, redis: &RedisServer) -> Collector {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("collect.log");
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("celeroot"));
        cmd.current_dir(repo.root())
            .args(["runs", "collect", "--id", "test"])
            .env("CELEROOT_REDIS_URL", redis.url())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"));
        let c = Collector {
            child: Some(cmd.spawn().expect("spawn runs collect")),
            log,
            _dir: dir,
        };
        c.wait_for_log("listening for task events");
        c
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("collector did not log {needle:?}:\n{}", self.log_text());
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(pid) = i32::try_from(c.id()) {
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- collector ----\n{}", self.log_text());
        }
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}

fn str_of<'a>(v: &'a serde_json::Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_default()
}

/// Beat fires three schedules every second: one succeeds on h1, one fails on h1, one
/// waits for a worker h2 does not run. Every run is recorded with its host, outcome and
/// exception (the URL password masked), and each target keeps only `runHistory.keep`.
#[test]
fn runs_are_recorded_from_celery_events_with_outcome_host_and_bounded_retention() {
    let redis = RedisServer::start();
    let repo = fleet();
    let (out, code) = celeroot(&repo, &redis, &["reconcile"]);
    assert_eq!(code, 0, "{out}");
    let collector = Collector::start(&repo, &redis);
    let env = worker_env(&redis.url(), "fleet", "h1", "UTC");
    let _h1 = CeleryProcess::worker(&env, &["celeroot.host.h1"], "h1");
    let beat = CeleryProcess::beat(&env, 1);

    wait_until("a succeeded tick", || {
        runs_json(&repo, &redis, &["tick"])
            .iter()
            .any(|r| str_of(r, "state") == "succeeded")
    });
    let tick = runs_json(&repo, &redis, &["tick"]);
    let ok = tick
        .iter()
        .find(|r| str_of(r, "state") == "succeeded")
        .expect("a succeeded run");
    assert_eq!(str_of(ok, "schedule"), "tick");
    assert_eq!(str_of(ok, "target"), "host/h1");
    assert_eq!(str_of(ok, "host"), "h1");
    assert_eq!(str_of(ok, "task"), "tests.record");
    assert!(str_of(ok, "worker").starts_with("h1@"), "{ok}");
    // Beat's task-sent (the scaffold enables it) and the worker's events, in order.
    let (sent, received, started, finished) = (
        ok["sent"].as_f64().expect("sent"),
        ok["received"].as_f64().expect("received"),
        ok["started"].as_f64().expect("started"),
        ok["finished"].as_f64().expect("finished"),
    );
    assert!(
        sent <= received + 0.5 && received <= started && started <= finished,
        "{ok}"
    );
    assert_eq!(ok["fired"].as_f64(), Some(sent.min(received)));
    assert!(ok["runtime"].as_f64().is_some_and(|r| r >= 0.0), "{ok}");
    assert!(ok["resultSize"].as_u64().is_some_and(|s| s > 0), "{ok}");

    wait_until("a failed boom", || {
        !runs_json(&repo, &redis, &["boom", "--failed"]).is_empty()
    });
    let failed = runs_json(&repo, &redis, &["boom", "--failed"]);
    let f = &failed[0];
    assert_eq!(str_of(f, "state"), "failed");
    assert_eq!(str_of(f, "exception"), "RuntimeError");
    assert_eq!(
        str_of(f, "message"),
        "disk full on redis://app:***@db.invalid:6379/0"
    );
    let stored: Vec<String> = redis::cmd("HVALS")
        .arg("celeroot:{fleet}:runs:boom.host.h1:records")
        .query(&mut redis.conn())
        .expect("HVALS");
    assert!(
        stored.iter().all(|r| !r.contains("hunter2")),
        "the password never reaches the run history: {stored:?}"
    );

    // h2 runs no worker: its runs were sent and wait in its queue.
    wait_until("an idle run sent", || {
        !runs_json(&repo, &redis, &["idle"]).is_empty()
    });
    let idle = runs_json(&repo, &redis, &["idle"]);
    assert!(
        idle.iter()
            .all(|r| str_of(r, "state") == "sent" && r["host"].is_null()),
        "{idle:?}"
    );

    // Retention: once a target has fired more than `keep` times, it holds exactly `keep`.
    wait_until("more than 3 ticks", || {
        let n: usize = redis::cmd("LLEN")
            .arg("tests:record:tick")
            .query(&mut redis.conn())
            .unwrap_or(0);
        n > 4
    });
    std::thread::sleep(Duration::from_millis(500));
    for entry in ["tick.host.h1", "boom.host.h1", "idle.host.h2"] {
        let n: usize = redis::cmd("ZCARD")
            .arg(format!("celeroot:{{fleet}}:runs:{entry}"))
            .query(&mut redis.conn())
            .expect("ZCARD");
        let m: usize = redis::cmd("HLEN")
            .arg(format!("celeroot:{{fleet}}:runs:{entry}:records"))
            .query(&mut redis.conn())
            .expect("HLEN");
        assert!(n == 3 && m == 3, "{entry}: {n} ids, {m} records");
    }
    let ttl: i64 = redis::cmd("TTL")
        .arg("celeroot:{fleet}:runs:tick.host.h1")
        .query(&mut redis.conn())
        .expect("TTL");
    assert!(
        ttl > 0 && ttl <= 86_400,
        "the history of a target expires: {ttl}"
    );

    // The filters, and the table a person reads.
    let on_h1 = runs_json(&repo, &redis, &["--host", "h1", "-n", "100"]);
    assert!(!on_h1.is_empty());
    assert!(on_h1.iter().all(|r| str_of(r, "host") == "h1"), "{on_h1:?}");
    let since = runs_json(&repo, &redis, &["--since", "1h"]);
    assert!(since.len() >= 6, "{since:?}");
    let (out, code) = celeroot(&repo, &redis, &["runs", "boom", "-n", "1"]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with("[exit")).collect();
    assert!(
        lines[0].starts_with("FIRED (UTC)") && lines[0].contains("DETAIL"),
        "{out}"
    );
    assert!(
        lines[1].contains("boom")
            && lines[1].contains("host/h1")
            && lines[1].contains("failed")
            && lines[1].contains("RuntimeError: disk full on redis://app:***@db.invalid"),
        "{out}"
    );
    assert_eq!(lines.len(), 2, "{out}");

    // The last run where people look: schedules ls / show, status, task status.
    let (out, code) = celeroot(&repo, &redis, &["schedules", "ls"]);
    assert_eq!(code, 0, "{out}");
    let line = |out: &str, name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        out.lines().next().unwrap_or_default().ends_with("LAST RUN"),
        "{out}"
    );
    assert!(line(&out, "tick").contains("succeeded"), "{out}");
    assert!(line(&out, "boom").contains("failed"), "{out}");
    assert!(line(&out, "idle").contains("sent"), "{out}");
    let (out, code) = celeroot(&repo, &redis, &["schedules", "show", "boom"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("celeroot.host.h1") && out.contains("last run: failed"),
        "{out}"
    );
    let (out, code) = celeroot(&repo, &redis, &["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("schedules: 3 target(s): "), "{out}");
    assert!(out.contains("! boom host/h1 failed"), "{out}");
    // (A fresh id: with `keep: 3`, older runs are gone already.)
    let newest = runs_json(&repo, &redis, &["boom", "-n", "1"]);
    let id = str_of(&newest[0], "id").to_string();
    let (out, code) = celeroot(&repo, &redis, &["task", "status", &id]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Schedule runs (celeroot runs):"), "{out}");
    let records = out.split("Schedule runs").nth(1).unwrap_or_default();
    assert!(
        records.lines().any(|l| l.trim_start().starts_with(&id)
            && l.contains("boom")
            && l.contains("host/h1")
            && l.contains("failed")),
        "{out}"
    );

    // Runs are visible across the collector's restart, and the new one keeps recording.
    drop(collector);
    let before = runs_json(&repo, &redis, &["tick"]);
    let _collector = Collector::start(&repo, &redis);
    wait_until("a tick after the restart", || {
        let now = runs_json(&repo, &redis, &["tick"]);
        now.first().map(|r| str_of(r, "id")) != before.first().map(|r| str_of(r, "id"))
    });
    drop(beat);
}

#[test]
fn runs_of_an_unknown_schedule_and_bad_flags_are_errors() {
    let redis = RedisServer::start();
    let repo = fleet();
    let (out, code) = celeroot(&repo, &redis, &["reconcile"]);
    assert_eq!(code, 0, "{out}");
    let (out, _) = celeroot(&repo, &redis, &["runs", "tik"]);
    insta::assert_snapshot!(out, @r#"
    ------- stderr -------
    error: no schedule "tik" is applied to cluster fleet (did you mean "tick"?)
    [exit status: 1]
    "#);
    let (out, _) = celeroot(&repo, &redis, &["runs", "--since", "yesterday"]);
    insta::assert_snapshot!(out, @r#"
    ------- stderr -------
    error: invalid --since "yesterday": invalid duration `yesterday`: expected a duration such as `30s`, `5m`, `1h30m` or `1d` (units d, h, m, s, largest first)
    [exit status: 1]
    "#);
    let (out, _) = celeroot(&repo, &redis, &["runs", "tick"]);
    insta::assert_snapshot!(out, @r"
    No runs recorded for schedule tick.
    No run collector is running: `celeroot watch` collects, or run `celeroot runs collect`.
    [exit status: 0]
    ");
}

/// `celeroot health` from the schedules' own calendars: a schedule that runs is ok, one
/// that raises is failed, one whose host runs no worker is late then missed, one that
/// outlives its timeout is stuck; exit 2 says something needs attention.
#[test]
fn health_tells_ok_failed_missed_and_stuck_from_the_schedules_alone() {
    let redis = RedisServer::start();
    let mut repo = TestRepo::empty();
    repo.write(
        "manifests/cluster.yaml",
        "apiVersion: celeroot.io/v1\nkind: Cluster\nmetadata:\n  name: fleet\nspec: {}\n",
    );
    repo.write(
        "manifests/role.yaml",
        "apiVersion: celeroot.io/v1\nkind: Role\nmetadata:\n  name: worker\nspec: {}\n",
    );
    for (h, ip) in [
        ("h1", "192.0.2.1"),
        ("h2", "192.0.2.2"),
        ("h3", "192.0.2.3"),
    ] {
        repo.write(
            &format!("manifests/{h}.yaml"),
            &format!("apiVersion: celeroot.io/v1\nkind: Host\nmetadata:\n  name: {h}\nspec:\n  address: {ip}\n  roles: [worker]\n"),
        );
    }
    for (name, body) in [
        ("tick", "  every: 2s\n  grace: 2s\n  task: tests.record\n  args: [tick]\n  targets:\n    - host: h1\n"),
        ("boom", "  every: 2s\n  task: tests.fail\n  targets:\n    - host: h1\n"),
        ("idle", "  every: 2s\n  grace: 2s\n  task: tests.record\n  args: [idle]\n  targets:\n    - host: h2\n"),
        ("slow", "  every: 1m\n  timeout: 1s\n  task: tests.sleep\n  args: [60]\n  targets:\n    - host: h3\n"),
    ] {
        repo.write(
            &format!("manifests/{name}.yaml"),
            &format!("apiVersion: celeroot.io/v1\nkind: Schedule\nmetadata:\n  name: {name}\nspec:\n{body}"),
        );
    }
    repo.commit("fleet");
    let (out, code) = celeroot(&repo, &redis, &["reconcile"]);
    assert_eq!(code, 0, "{out}");

    // No collector yet: nothing can be told, and health says so.
    let (out, code) = celeroot(&repo, &redis, &["health"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("4 target(s): 4 unknown") && out.contains("No run collector is listening"),
        "{out}"
    );

    let _collector = Collector::start(&repo, &redis);
    let _h1 = CeleryProcess::worker(
        &worker_env(&redis.url(), "fleet", "h1", "UTC"),
        &["celeroot.host.h1"],
        "h1",
    );
    // Prefork: a solo worker would send the long task's events only after it ends.
    let _h3 = CeleryProcess::prefork_worker(
        &worker_env(&redis.url(), "fleet", "h3", "UTC"),
        &["celeroot.host.h3"],
        "h3",
    );
    // `slow` fires one minute after its creation: make it due now (what beat does when
    // its last run is a minute old), so the test need not wait.
    let _: () = redis::cmd("HSET")
        .arg("celeroot:{fleet}:redbeat:slow.host.h3")
        .arg("meta")
        .arg(r#"{"last_run_at": {"__type__": "datetime", "year": 2020, "month": 1, "day": 1, "hour": 0, "minute": 0, "second": 0, "microsecond": 0, "timezone": "UTC"}, "total_run_count": 0}"#)
        .query(&mut redis.conn())
        .expect("HSET meta");
    let _beat = CeleryProcess::beat(&worker_env(&redis.url(), "fleet", "h1", "UTC"), 1);

    let states = || -> std::collections::BTreeMap<String, String> {
        let out = on(&repo, &redis, &["health", "-o", "json"])
            .output()
            .expect("health");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        v["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    str_of(t, "schedule").to_string(),
                    str_of(t, "state").to_string(),
                )
            })
            .collect()
    };
    let want: std::collections::BTreeMap<String, String> = [
        ("boom", "failed"),
        ("idle", "missed"),
        ("slow", "stuck"),
        ("tick", "ok"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let deadline = Instant::now() + WAIT;
    let mut last = states();
    while last != want {
        assert!(
            Instant::now() < deadline,
            "health never became {want:?}; last {last:?}\n{}",
            celeroot(&repo, &redis, &["health", "--all", "-o", "wide"]).0
        );
        std::thread::sleep(Duration::from_millis(200));
        last = states();
    }
    let (out, code) = celeroot(&repo, &redis, &["health"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("4 target(s): 1 ok, 1 failed, 1 missed, 1 stuck"),
        "{out}"
    );
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        row("idle").contains("host/h2") && row("idle").contains("not started within 2 × 2s"),
        "{out}"
    );
    assert!(
        row("slow").contains("stuck") && row("slow").contains("(timeout 1s)"),
        "{out}"
    );
    assert!(row("boom").contains("the newest run failed"), "{out}");
    assert!(
        row("tick").is_empty(),
        "only targets that need attention: {out}"
    );
}

#[test]
fn a_grace_longer_than_the_period_is_a_located_error() {
    let mut repo = TestRepo::with_example();
    repo.write(
        "manifests/schedules/fast.yaml",
        "apiVersion: celeroot.io/v1\nkind: Schedule\nmetadata:\n  name: fast\nspec:\n  cron: \"*/5 * * * *\"\n  grace: 10m\n  timeout: soon\n  task: ops.tasks.rotate_logs\n  targets:\n    - role: webserver\n",
    );
    repo.commit("fast");
    let mut cmd = repo.cmd();
    cmd.args(["validate"]);
    let (out, _) = run(cmd);
    insta::assert_snapshot!(out, @r#"
    ------- stderr -------
    error: grace "10m" is longer than the schedule's period (5m)
      --> manifests/schedules/fast.yaml:7:10
       |
     7 |   grace: 10m
       |          ^
      = help: a run is late after its grace and missed after twice that: keep grace at most the period
    error: invalid timeout
      --> manifests/schedules/fast.yaml:8:12
       |
     8 |   timeout: soon
       |            ^
      = help: invalid duration `soon`: expected a duration such as `30s`, `5m`, `1h30m` or `1d` (units d, h, m, s, largest first)
    error: manifests at HEAD (3bac489d) are invalid: 2 error(s), 0 warning(s); nothing was changed
    [exit status: 1]
    "#);
}
