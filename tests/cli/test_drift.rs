use std::collections::BTreeMap;

use crate::common::redis::RedisServer;
use crate::common::{run, TestRepo};

const PREFIX: &str = "celeroot:{production}:";

fn cmd(repo: &TestRepo, redis: &RedisServer, args: &[&str]) -> (String, i32) {
    let mut c = repo.cmd();
    c.args(args).env("CELEROOT_REDIS_URL", redis.url());
    run(c)
}

fn applied_example(redis: &RedisServer) -> TestRepo {
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    assert_eq!(cmd(&repo, redis, &["reconcile"]).1, 0);
    repo
}

/// Writes a heartbeat exactly as docs/state.md specifies.
fn heartbeat(
    redis: &RedisServer,
    host: &str,
    ts: u64,
    release: &str,
    queues: &[&str],
    status: &str,
) {
    let mut c = redis.conn();
    let key = format!("{PREFIX}heartbeat:{host}");
    let fields: BTreeMap<&str, String> = BTreeMap::from([
        ("ts", ts.to_string()),
        ("release", release.to_string()),
        ("queues", serde_json::to_string(queues).expect("json")),
        ("status", status.to_string()),
        ("pid", "4321".to_string()),
        ("agent_version", "0.1.0".to_string()),
        ("restart_reason", String::new()),
        ("broker", "ok".to_string()),
        ("ping", "ok".to_string()),
    ]);
    let mut hset = redis::cmd("HSET");
    hset.arg(&key);
    for (k, v) in &fields {
        hset.arg(*k).arg(v);
    }
    let _: () = hset.query(&mut c).expect("HSET");
    let _: () = redis::cmd("EXPIRE")
        .arg(&key)
        .arg(30)
        .query(&mut c)
        .expect("EXPIRE");
    let _: () = redis::cmd("SADD")
        .arg(format!("{PREFIX}heartbeats"))
        .arg(host)
        .query(&mut c)
        .expect("SADD");
}

/// `CELEROOT_NOW` in UNIX seconds (the harness pins it).
const NOW: u64 = 1_795_435_200; // 2026-11-23T12:00:00Z

fn healthy_fleet(redis: &RedisServer) {
    let queues: [(&str, &[&str]); 5] = [
        ("app01", &["app", "celeroot.host.app01"]),
        ("db01", &["database", "celeroot.host.db01"]),
        ("db02", &["app", "database", "celeroot.host.db02"]),
        ("web01", &["app", "webserver", "celeroot.host.web01"]),
        ("web02", &["app", "webserver", "celeroot.host.web02"]),
    ];
    for (h, q) in queues {
        heartbeat(redis, h, NOW - 3, "", q, "running");
    }
    // And a beat that sends: RedBeat's lock held, as a live beat holds it (docs/celery.md).
    let _: () = redis::cmd("SET")
        .arg(format!("{PREFIX}redbeat::lock"))
        .arg("9d11f9c4e66311f1909c02fc00000001")
        .arg("PX")
        .arg(60_000)
        .query(&mut redis.conn())
        .expect("SET");
}

#[test]
fn in_sync_exits_0() {
    let redis = RedisServer::start();
    let repo = applied_example(&redis);
    healthy_fleet(&redis);
    let (out, code) = cmd(&repo, &redis, &["drift"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("In sync"), "{out}");
}

#[test]
fn out_of_band_edits_deletions_and_unknown_keys_are_reported_and_healed() {
    let redis = RedisServer::start();
    let repo = applied_example(&redis);
    healthy_fleet(&redis);
    let mut c = redis.conn();
    let _: () = redis::cmd("HSET")
        .arg(format!("{PREFIX}worker:web01"))
        .arg("concurrency")
        .arg("64")
        .query(&mut c)
        .expect("HSET");
    let _: () = redis::cmd("DEL")
        .arg(format!("{PREFIX}role:database:hosts"))
        .query(&mut c)
        .expect("DEL");
    let _: () = redis::cmd("SET")
        .arg(format!("{PREFIX}worker:ghost"))
        .arg("x")
        .query(&mut c)
        .expect("SET");
    let (out, code) = cmd(&repo, &redis, &["drift"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("worker:web01 — edited out of band"), "{out}");
    assert!(
        out.contains("role:database:hosts — deleted out of band"),
        "{out}"
    );
    assert!(
        out.contains("worker:ghost — under celeroot's prefix but not written by celeroot"),
        "{out}"
    );
    let (json, _) = cmd(&repo, &redis, &["drift", "-o", "json"]);
    let v: serde_json::Value =
        serde_json::from_str(json.split("[exit status").next().unwrap_or_default()).expect("JSON");
    assert_eq!(v["live"].as_array().map(Vec::len), Some(3));
    // Reconcile heals the edit and the deletion (corrective writes); --sweep removes the unknown key.
    let (out, code) = cmd(&repo, &redis, &["reconcile", "--sweep", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let r: serde_json::Value =
        serde_json::from_str(out.split("[exit status").next().unwrap_or_default()).expect("JSON");
    assert_eq!(r["result"], "applied");
    assert_eq!(
        r["writes"], r["correctiveWrites"],
        "every write heals drift: {out}"
    );
    let events: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg(format!("{PREFIX}events"))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(&mut c)
        .expect("XREVRANGE");
    assert!(
        events[0]
            .1
            .contains(&("kind".to_string(), "corrective".to_string())),
        "{events:?}"
    );
    let (out, code) = cmd(&repo, &redis, &["drift"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn hosts_whose_heartbeat_disagrees_are_reported() {
    let redis = RedisServer::start();
    let repo = applied_example(&redis);
    heartbeat(
        &redis,
        "web01",
        NOW - 3,
        "",
        &["app", "webserver", "celeroot.host.web01"],
        "running",
    );
    heartbeat(&redis, "web02", NOW - 3, "", &["webserver"], "running");
    heartbeat(
        &redis,
        "db01",
        NOW - 300,
        "",
        &["database", "celeroot.host.db01"],
        "running",
    );
    heartbeat(
        &redis,
        "db02",
        NOW - 3,
        "",
        &["app", "database", "celeroot.host.db02"],
        "crash-looping",
    );
    heartbeat(&redis, "rogue01", NOW - 2, "r-123", &["app"], "running");
    // app01 never heartbeats.
    let (out, code) = cmd(&repo, &redis, &["drift"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("app01: no heartbeat"), "{out}");
    assert!(
        out.contains("web02: consumes webserver, should consume app,celeroot.host.web02,webserver"),
        "{out}"
    );
    assert!(out.contains("db01: last heartbeat 300s ago"), "{out}");
    assert!(out.contains("db02: the worker keeps dying"), "{out}");
    assert!(out.contains("(fix: agent)"), "{out}");
    assert!(out.contains("rogue01: heartbeating (release \"r-123\") but not in the live configuration (fix: git)"), "{out}");
    assert!(!out.contains("web01:"), "web01 is healthy: {out}");
    let (out, code) = cmd(&repo, &redis, &["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("in sync"), "{out}");
    assert!(
        out.contains("web01  application,webserver  -        3s ago     ok"),
        "{out}"
    );
    assert!(
        out.contains("app01  application            -        -          no-heartbeat"),
        "{out}"
    );
}

#[test]
fn unapplied_commits_are_reported_as_pending() {
    let redis = RedisServer::start();
    let mut repo = applied_example(&redis);
    healthy_fleet(&redis);
    repo.edit(
        "manifests/roles/database.yaml",
        "concurrency: 1",
        "concurrency: 2",
    );
    repo.commit("db concurrency");
    let (out, code) = cmd(&repo, &redis, &["drift"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("3. Changes in git not yet applied: 1"),
        "{out}"
    );
    assert!(out.contains("~ Role/database"), "{out}");
    let (md, code) = cmd(&repo, &redis, &["drift", "-o", "markdown"]);
    assert_eq!(code, 2);
    assert!(
        md.contains("| Changes in git not yet applied | 1 |"),
        "{md}"
    );
    let (status, _) = cmd(&repo, &redis, &["status", "-o", "json"]);
    let v: serde_json::Value =
        serde_json::from_str(status.split("[exit status").next().unwrap_or_default())
            .expect("JSON");
    assert_eq!(v["pending"], 1);
    assert_eq!(v["applied"]["subject"], "example");
    assert_eq!(v["events"][0]["kind"], "intentional");
}

#[test]
fn a_layout_version_mismatch_is_a_clear_error_and_writes_nothing() {
    let redis = RedisServer::start();
    let repo = applied_example(&redis);
    let _: () = redis::cmd("SET")
        .arg(format!("{PREFIX}layout"))
        .arg("99")
        .query(&mut redis.conn())
        .expect("SET");
    for args in [vec!["reconcile"], vec!["drift"], vec!["status"]] {
        let (out, code) = cmd(&repo, &redis, &args);
        assert_eq!(code, 1, "{args:?}: {out}");
        assert!(
            out.contains("uses layout version 99, this celeroot understands 2"),
            "{out}"
        );
    }
    let gen: u64 = redis::cmd("GET")
        .arg(format!("{PREFIX}generation"))
        .query(&mut redis.conn())
        .expect("GET");
    assert_eq!(gen, 1);
}

#[test]
fn a_role_without_hosts_is_not_drift() {
    // Found by the planner property test: an empty role index cannot exist in Redis.
    let redis = RedisServer::start();
    let mut repo = TestRepo::with_example();
    repo.write(
        "manifests/roles/spare.yaml",
        "apiVersion: celeroot.io/v1\nkind: Role\nmetadata:\n  name: spare\nspec: {}\n",
    );
    repo.commit("a role nobody runs yet");
    assert_eq!(cmd(&repo, &redis, &["reconcile"]).1, 0);
    healthy_fleet(&redis);
    let (out, code) = cmd(&repo, &redis, &["drift"]);
    assert_eq!(code, 0, "{out}");
    let (out, _) = cmd(&repo, &redis, &["reconcile"]);
    assert!(out.contains("Nothing to do"), "{out}");
}

#[test]
fn a_layout_1_state_is_upgraded_in_place() {
    let redis = RedisServer::start();
    let repo = applied_example(&redis);
    let _: () = redis::cmd("SET")
        .arg(format!("{PREFIX}layout"))
        .arg("1")
        .query(&mut redis.conn())
        .expect("SET");
    let (out, code) = cmd(&repo, &redis, &["reconcile"]);
    assert_eq!(code, 0, "{out}");
    let layout: String = redis::cmd("GET")
        .arg(format!("{PREFIX}layout"))
        .query(&mut redis.conn())
        .expect("GET");
    assert_eq!(layout, "2");
}

/// Issue 16 part 2: with enabled schedules and nobody holding RedBeat's lock, drift and
/// status say the schedules do not fire; a cluster without schedules needs no beat.
#[test]
fn a_missing_beat_is_a_health_finding_when_schedules_need_one() {
    let redis = RedisServer::start();
    let repo = applied_example(&redis);
    healthy_fleet(&redis);
    let _: () = redis::cmd("DEL")
        .arg(format!("{PREFIX}redbeat::lock"))
        .query(&mut redis.conn())
        .expect("DEL");
    let (out, code) = cmd(&repo, &redis, &["drift"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("Beat: ! beat-missing: no beat is running (no `celeroot beat` heartbeat, RedBeat's lock is free): schedules do not fire (fix: celeroot beat)"),
        "{out}"
    );
    let (json, _) = cmd(&repo, &redis, &["drift", "-o", "json"]);
    let v: serde_json::Value =
        serde_json::from_str(json.split("[exit status").next().unwrap_or_default()).expect("JSON");
    assert_eq!(v["beat"]["kind"], "beat-missing", "{json}");
    let (out, code) = cmd(&repo, &redis, &["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("beat:     ! beat-missing"), "{out}");

    // A standby celeroot beat that does not hold the lock: inactive.
    let _: () = redis::cmd("HSET")
        .arg(format!("{PREFIX}beat:vm-1"))
        .arg("status")
        .arg("standby")
        .arg("ts")
        .arg(NOW)
        .query(&mut redis.conn())
        .expect("HSET");
    let (out, code) = cmd(&repo, &redis, &["drift"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("beat-inactive: no beat holds RedBeat's lock (vm-1 standby)"),
        "{out}"
    );

    // Without enabled schedules, no beat is needed.
    let mut repo = repo;
    for f in std::fs::read_dir(repo.root().join("manifests/schedules"))
        .expect("dir")
        .flatten()
    {
        std::fs::remove_file(f.path()).expect("rm");
    }
    repo.commit("no schedules");
    assert_eq!(cmd(&repo, &redis, &["reconcile"]).1, 0);
    let (out, code) = cmd(&repo, &redis, &["drift"]);
    assert_eq!(code, 0, "{out}");
    let (out, _) = cmd(&repo, &redis, &["status"]);
    assert!(!out.contains("beat:"), "{out}");
}
