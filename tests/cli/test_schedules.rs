//! Schedules against the real thing: celeroot writes RedBeat entries, a real
//! `celery beat -S redbeat.RedBeatScheduler` fires them, real workers run them.

use std::time::{Duration, Instant};

use crate::common::celery::{python, worker_env, CeleryProcess};
use crate::common::redis::RedisServer;
use crate::common::{run, TestRepo};

const PREFIX: &str = "celeroot:{fleet}:";

fn fleet(tick: Option<&str>) -> TestRepo {
    let repo = TestRepo::empty();
    repo.write("manifests/cluster.yaml", "apiVersion: celeroot.io/v1\nkind: Cluster\nmetadata:\n  name: fleet\nspec:\n  timezone: Europe/Berlin\n");
    repo.write("manifests/role.yaml", "apiVersion: celeroot.io/v1\nkind: Role\nmetadata:\n  name: worker\nspec:\n  concurrency: 1\n");
    for (h, ip) in [("h1", "192.0.2.1"), ("h2", "192.0.2.2")] {
        repo.write(
            &format!("manifests/{h}.yaml"),
            &format!("apiVersion: celeroot.io/v1\nkind: Host\nmetadata:\n  name: {h}\nspec:\n  address: {ip}\n  roles: [worker]\n"),
        );
    }
    if let Some(spec) = tick {
        repo.write("manifests/tick.yaml", &format!("apiVersion: celeroot.io/v1\nkind: Schedule\nmetadata:\n  name: tick\nspec:\n{spec}"));
    }
    repo
}

fn reconcile(repo: &TestRepo, redis: &RedisServer) -> String {
    let mut cmd = repo.cmd();
    cmd.arg("reconcile").env("CELEROOT_REDIS_URL", redis.url());
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
    out
}

fn recorded(redis: &RedisServer, tag: &str) -> Vec<String> {
    redis::cmd("LRANGE")
        .arg(format!("tests:record:{tag}"))
        .arg(0)
        .arg(-1)
        .query(&mut redis.conn())
        .expect("LRANGE")
}

fn keys(redis: &RedisServer, pattern: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(pattern)
        .query(&mut redis.conn())
        .expect("KEYS")
}

#[test]
fn an_interval_schedule_fires_on_every_host_and_stops_when_removed() {
    let redis = RedisServer::start();
    let mut repo = fleet(Some("  every: 2s\n  task: tests.record\n  args: [tick]\n  targets:\n    - role: worker\n  mode: each\n"));
    repo.commit("tick every 2s on each host");
    reconcile(&repo, &redis);
    let entries = keys(&redis, &format!("{PREFIX}redbeat:tick.*"));
    assert_eq!(entries.len(), 2, "{entries:?}");

    let w1 = CeleryProcess::worker(
        &worker_env(&redis.url(), "fleet", "h1", "Europe/Berlin"),
        &["celeroot.host.h1"],
        "h1",
    );
    let w2 = CeleryProcess::worker(
        &worker_env(&redis.url(), "fleet", "h2", "Europe/Berlin"),
        &["celeroot.host.h2"],
        "h2",
    );
    let beat = CeleryProcess::beat(
        &worker_env(&redis.url(), "fleet", "beat", "Europe/Berlin"),
        1,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = recorded(&redis, "tick");
        if r.iter().filter(|h| *h == "h1").count() >= 2
            && r.iter().filter(|h| *h == "h2").count() >= 2
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tick did not run twice on both hosts: {r:?}\nbeat:\n{}\nh1:\n{}",
            beat.log_text(),
            w1.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Remove the schedule in git: reconcile deletes its entries and the index members.
    repo.remove("manifests/tick.yaml");
    repo.commit("no more ticks");
    reconcile(&repo, &redis);
    assert!(
        keys(&redis, &format!("{PREFIX}redbeat:tick.*")).is_empty(),
        "no orphan entry"
    );
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{PREFIX}redbeat::schedule"))
        .arg(0)
        .arg(-1)
        .query(&mut redis.conn())
        .expect("ZRANGE");
    assert!(members.is_empty(), "{members:?}");
    std::thread::sleep(Duration::from_secs(3));
    let settled = recorded(&redis, "tick").len();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        recorded(&redis, "tick").len(),
        settled,
        "the task stopped firing\nbeat:\n{}",
        beat.log_text()
    );
    assert!(
        !beat.log_text().contains("Traceback"),
        "beat logged an error:\n{}",
        beat.log_text()
    );
    drop(w2);
}

#[test]
fn a_disabled_schedule_does_not_fire_and_an_update_keeps_the_last_run() {
    let redis = RedisServer::start();
    let mut repo = fleet(Some(
        "  every: 1h\n  task: tests.record\n  args: [slow]\n  targets:\n    - host: h1\n",
    ));
    repo.commit("hourly");
    reconcile(&repo, &redis);
    let key = format!("{PREFIX}redbeat:tick.host.h1");
    let meta_before: String = redis::cmd("HGET")
        .arg(&key)
        .arg("meta")
        .query(&mut redis.conn())
        .expect("meta");
    assert!(
        meta_before.contains("\"timezone\":\"Europe/Berlin\""),
        "{meta_before}"
    );
    repo.write("manifests/tick.yaml", "apiVersion: celeroot.io/v1\nkind: Schedule\nmetadata:\n  name: tick\nspec:\n  every: 2s\n  task: tests.record\n  args: [disabled]\n  targets:\n    - host: h1\n  enabled: false\n");
    repo.commit("faster, but disabled");
    reconcile(&repo, &redis);
    let meta_after: String = redis::cmd("HGET")
        .arg(&key)
        .arg("meta")
        .query(&mut redis.conn())
        .expect("meta");
    assert_eq!(
        meta_before, meta_after,
        "an update keeps last_run_at: no extra or skipped run"
    );
    let definition: String = redis::cmd("HGET")
        .arg(&key)
        .arg("definition")
        .query(&mut redis.conn())
        .expect("definition");
    assert!(definition.contains("\"enabled\":false"), "{definition}");
    let _w = CeleryProcess::worker(
        &worker_env(&redis.url(), "fleet", "h1", "Europe/Berlin"),
        &["celeroot.host.h1"],
        "h1",
    );
    let beat = CeleryProcess::beat(
        &worker_env(&redis.url(), "fleet", "beat", "Europe/Berlin"),
        1,
    );
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        recorded(&redis, "disabled").is_empty(),
        "a disabled schedule fired\n{}",
        beat.log_text()
    );
}

#[test]
fn redbeat_reads_the_cron_definition_with_crontab_fields_timezone_and_next_due_time() {
    let redis = RedisServer::start();
    let mut repo = fleet(Some("  cron: \"30 3 * * sun\"\n  task: tests.record\n  args: [weekly]\n  targets:\n    - host: h2\n  options:\n    expires: 1h\n    priority: 7\n"));
    repo.commit("weekly");
    // The next fire time celeroot predicts, with the real clock (not the pinned one).
    let mut diff = repo.cmd();
    diff.args(["diff", "-o", "json"])
        .env("CELEROOT_REDIS_URL", redis.url())
        .env_remove("CELEROOT_NOW");
    let (out, _) = run(diff);
    let v: serde_json::Value =
        serde_json::from_str(out.split("[exit status").next().unwrap_or_default()).expect("JSON");
    let change = v["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["name"] == "tick")
        .expect("tick")
        .clone();
    let predicted = change["effects"]
        .as_array()
        .expect("effects")
        .iter()
        .find(|e| e["type"] == "nextRuns")
        .expect("nextRuns")["times"][0]
        .as_str()
        .expect("time")
        .to_string();
    reconcile(&repo, &redis);

    let script = format!(
        r#"
import json, os
from tasks.app import app
from redbeat.schedulers import RedBeatSchedulerEntry
e = RedBeatSchedulerEntry.from_key("{PREFIX}redbeat:tick.host.h2", app=app)
s = e.schedule
print(json.dumps({{
    "type": type(s).__name__,
    "minute": s._orig_minute, "hour": s._orig_hour, "day_of_week": s._orig_day_of_week,
    "day_of_month": s._orig_day_of_month, "month_of_year": s._orig_month_of_year,
    "tz": str(s.tz), "queue": e.options.get("queue"), "expires": e.options.get("expires"),
    "priority": e.options.get("priority"), "task": e.task, "args": list(e.args),
    "due_at": e.due_at.isoformat(),
}}))
"#
    );
    let out = std::process::Command::new(python())
        .arg("-c")
        .arg(script)
        .current_dir(crate::common::celery::app_dir())
        .env("PYTHONPATH", crate::common::celery::app_dir())
        .envs(worker_env(&redis.url(), "fleet", "h2", "Europe/Berlin"))
        .env("CELEROOT_IMPORTS", "")
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON from RedBeat");
    assert_eq!(got["type"], "crontab");
    assert_eq!(
        (got["minute"].as_str(), got["hour"].as_str()),
        (Some("30"), Some("3"))
    );
    assert_eq!(got["day_of_week"], "0");
    assert_eq!(
        (got["day_of_month"].as_str(), got["month_of_year"].as_str()),
        (Some("*"), Some("*"))
    );
    assert_eq!(got["tz"], "Europe/Berlin");
    assert_eq!(got["queue"], "celeroot.host.h2");
    assert_eq!(got["expires"], 3600);
    assert_eq!(got["priority"], 7);
    assert_eq!(got["task"], "tests.record");
    // RedBeat's next due time equals the first fire time celeroot predicted (RedBeat
    // computes it as now + remaining time, so it carries sub-second noise).
    let due = chrono::DateTime::parse_from_rfc3339(got["due_at"].as_str().expect("due_at"))
        .expect("due_at time");
    let want = chrono::DateTime::parse_from_rfc3339(&predicted).expect("predicted time");
    let off = (due - want).num_milliseconds().abs();
    assert!(
        off < 5000,
        "RedBeat due_at {due} vs celeroot's prediction {want} ({off} ms apart)"
    );
}

#[test]
fn drift_reports_and_reconcile_heals_redbeat_entries() {
    let redis = RedisServer::start();
    let mut repo = fleet(Some(
        "  every: 1h\n  task: tests.record\n  args: [x]\n  targets:\n    - role: worker\n",
    ));
    repo.commit("hourly");
    reconcile(&repo, &redis);
    let mut c = redis.conn();
    let key = format!("{PREFIX}redbeat:tick.host.h1");
    let _: () = redis::cmd("HSET").arg(&key).arg("definition").arg(r#"{"name":"tick.host.h1","task":"evil.task","args":[],"kwargs":{},"options":{"queue":"celeroot.host.h1"},"schedule":{"__type__":"interval","every":1.0,"relative":false},"enabled":true}"#).query(&mut c).expect("HSET");
    let _: () = redis::cmd("HSET")
        .arg(format!("{PREFIX}redbeat:rogue"))
        .arg("definition")
        .arg("{}")
        .query(&mut c)
        .expect("HSET");
    let _: () = redis::cmd("ZADD")
        .arg(format!("{PREFIX}redbeat::schedule"))
        .arg(0)
        .arg(format!("{PREFIX}redbeat:rogue"))
        .query(&mut c)
        .expect("ZADD");
    // Beat's own meta updates are not drift.
    let _: () = redis::cmd("HSET")
        .arg(format!("{PREFIX}redbeat:tick.host.h2"))
        .arg("meta")
        .arg(r#"{"last_run_at": null}"#)
        .query(&mut c)
        .expect("HSET");
    let mut drift = repo.cmd();
    drift.arg("drift").env("CELEROOT_REDIS_URL", redis.url());
    let (out, code) = run(drift);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("redbeat:tick.host.h1 — edited out of band"),
        "{out}"
    );
    assert!(
        out.contains("redbeat::schedule — edited out of band"),
        "the rogue member: {out}"
    );
    assert!(
        out.contains("redbeat:rogue — under celeroot's prefix but not written by celeroot"),
        "{out}"
    );
    assert!(
        !out.contains("tick.host.h2"),
        "beat's meta is not drift: {out}"
    );
    reconcile(&repo, &redis);
    let def: String = redis::cmd("HGET")
        .arg(&key)
        .arg("definition")
        .query(&mut c)
        .expect("HGET");
    assert!(def.contains("tests.record"), "{def}");
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{PREFIX}redbeat::schedule"))
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .expect("ZRANGE");
    assert!(
        !members.iter().any(|m| m.ends_with("rogue")),
        "the rogue entry no longer fires: {members:?}"
    );
}

#[test]
fn a_schedule_kept_by_no_prune_keeps_its_redbeat_entries() {
    let redis = RedisServer::start();
    let mut repo = fleet(Some(
        "  every: 1h\n  task: tests.record\n  args: [kept]\n  targets:\n    - role: worker\n",
    ));
    repo.commit("hourly");
    reconcile(&repo, &redis);
    repo.remove("manifests/tick.yaml");
    repo.commit("gone from git");
    let mut cmd = repo.cmd();
    cmd.args(["reconcile", "--no-prune"])
        .env("CELEROOT_REDIS_URL", redis.url());
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("kept Schedule/tick"), "{out}");
    assert_eq!(
        keys(&redis, &format!("{PREFIX}redbeat:tick.*")).len(),
        2,
        "still firing on both hosts"
    );
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{PREFIX}redbeat::schedule"))
        .arg(0)
        .arg(-1)
        .query(&mut redis.conn())
        .expect("ZRANGE");
    assert_eq!(members.len(), 2, "{members:?}");
    // A plain reconcile then prunes it.
    reconcile(&repo, &redis);
    assert!(keys(&redis, &format!("{PREFIX}redbeat:tick.*")).is_empty());
}
