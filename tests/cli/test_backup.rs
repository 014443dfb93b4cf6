//! Issue 19, part 4: `celeroot backup` and `celeroot restore` against a real
//! redis-server: a backup survives a FLUSHALL, a restore is refused for an older
//! generation or another cluster unless --force, and a damaged file changes nothing.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use crate::common::redis::RedisServer;
use crate::common::{reconciled_example, run, TestRepo};

fn celeroot(repo: &TestRepo, url: &str, args: &[&str]) -> (String, i32) {
    let mut cmd = repo.cmd();
    cmd.args(args).env("CELEROOT_REDIS_URL", url);
    run(cmd)
}

/// Every key of `redis` with its type and a dump of its value (DUMP bytes are
/// encoding-specific, so the value is read by type).
fn snapshot(redis: &RedisServer) -> BTreeMap<String, String> {
    let mut c = redis.conn();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).expect("KEYS");
    let mut out = BTreeMap::new();
    for k in keys {
        let t: String = redis::cmd("TYPE").arg(&k).query(&mut c).expect("TYPE");
        if t == "hash" {
            // In field order, which Redis does not keep.
            let h: BTreeMap<String, String> = redis::cmd("HGETALL")
                .arg(&k)
                .query(&mut c)
                .expect("HGETALL");
            out.insert(k, format!("hash {h:?}"));
            continue;
        }
        let v: redis::Value = match t.as_str() {
            "string" => redis::cmd("GET").arg(&k).query(&mut c),
            "set" => redis::cmd("SORT").arg(&k).arg("ALPHA").query(&mut c),
            "zset" => redis::cmd("ZRANGE")
                .arg(&k)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query(&mut c),
            "list" => redis::cmd("LRANGE").arg(&k).arg(0).arg(-1).query(&mut c),
            _ => redis::cmd("XRANGE").arg(&k).arg("-").arg("+").query(&mut c),
        }
        .expect("read");
        out.insert(k, format!("{t} {v:?}"));
    }
    out
}

fn generation(redis: &RedisServer) -> String {
    redis::cmd("GET")
        .arg("celeroot:{production}:generation")
        .query::<Option<String>>(&mut redis.conn())
        .expect("GET")
        .unwrap_or_default()
}

#[test]
fn a_backup_survives_a_flushall_and_restores_at_its_generation() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut repo = reconciled_example(&redis);
    repo.edit(
        "manifests/roles/application.yaml",
        "concurrency: 8",
        "concurrency: 6",
    );
    repo.commit("application: 6 workers");
    let (out, code) = celeroot(&repo, &url, &["reconcile", "--skip-deploy"]);
    assert_eq!(code, 0, "{out}");
    // What a restore must not bring back: a heartbeat and the lease.
    let mut c = redis.conn();
    redis::cmd("HSET")
        .arg("celeroot:{production}:heartbeat:web01")
        .arg("release")
        .arg("r-1")
        .query::<()>(&mut c)
        .expect("HSET");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("prod.json");
    let f = file.display().to_string();
    let (out, code) = celeroot(&repo, &url, &["backup", "--out", &f]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("Backed up cluster production at generation 2: "),
        "{out}"
    );
    let mode = std::fs::metadata(&file).expect("file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(!text.contains("heartbeat:web01"), "a heartbeat was kept");
    let before: BTreeMap<String, String> = snapshot(&redis)
        .into_iter()
        .filter(|(k, _)| !k.contains(":heartbeat:"))
        .collect();

    // The server loses everything; the restore brings the state, history and events back.
    redis::cmd("FLUSHALL")
        .query::<()>(&mut c)
        .expect("FLUSHALL");
    let (out, code) = celeroot(&repo, &url, &["restore", &f]);
    // 2: the drift check after it finds what a restore cannot bring back, the example's
    // hosts have no agents and no beat runs. The restored keys are as celeroot wrote them,
    // and they are HEAD's.
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("Restored cluster production from ")
            && out.contains("at generation 2): ")
            && out.contains(" 0 replaced; generation 0 → 2."),
        "{out}"
    );
    assert!(
        out.contains("1. Live state edited out of band: 0")
            && out.contains("3. Changes in git not yet applied: 0"),
        "the drift check after the restore: {out}"
    );
    let after = snapshot(&redis);
    for (k, v) in &before {
        // The event stream has one more entry; the lease counter moved on.
        if k.ends_with(":events") || k.ends_with(":lock-epoch") {
            continue;
        }
        assert_eq!(after.get(k), Some(v), "{k}");
    }
    let extra: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    assert!(extra.is_empty(), "keys that were not there: {extra:?}");
    // The event stream has its old entries and the restore's.
    let events: Vec<redis::Value> = redis::cmd("XRANGE")
        .arg("celeroot:{production}:events")
        .arg("-")
        .arg("+")
        .query(&mut c)
        .expect("XRANGE");
    let text = format!("{events:?}");
    assert!(
        text.contains("restore") && text.contains("intentional"),
        "{text}"
    );
    let (out, code) = celeroot(&repo, &url, &["history", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("application: 6 workers"), "{out}");
    let (out, code) = celeroot(&repo, &url, &["reconcile", "--skip-deploy"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("No changes"),
        "the restored state is HEAD's: {out}"
    );

    // A newer live state: refused without --force, and nothing is written.
    repo.edit(
        "manifests/roles/application.yaml",
        "concurrency: 6",
        "concurrency: 4",
    );
    repo.commit("application: 4 workers");
    let (out, code) = celeroot(&repo, &url, &["reconcile", "--skip-deploy"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(generation(&redis), "3");
    let newer = snapshot(&redis);
    let (out, code) = celeroot(&repo, &url, &["restore", &f]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("is at generation 3, newer than the backup's 2: restoring it would undo 1 applied reconcile(s); nothing was written"),
        "{out}"
    );
    assert_eq!(snapshot(&redis), newer);
    // --force goes back; the generation moves on, and drift shows what git would change.
    let (out, code) = celeroot(&repo, &url, &["restore", &f, "--force"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("generation 3 → 4."), "{out}");
    assert!(
        out.contains("Role/application"),
        "pending in the drift check: {out}"
    );
    assert_eq!(generation(&redis), "4");
}

#[test]
fn a_damaged_backup_or_one_of_another_cluster_writes_nothing() {
    let redis = RedisServer::start();
    let url = redis.url();
    let repo = reconciled_example(&redis);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("prod.json");
    let f = file.display().to_string();
    let (out, code) = celeroot(&repo, &url, &["backup", "--out", &f]);
    assert_eq!(code, 0, "{out}");
    let text = std::fs::read_to_string(&file).expect("read");
    let before = snapshot(&redis);
    let bad = |name: &str, body: &str| -> (String, i32) {
        let p = dir.path().join(name);
        std::fs::write(&p, body).expect("write");
        celeroot(&repo, &url, &["restore", &p.display().to_string()])
    };

    let (out, code) = bad("cut.json", &text[..text.len() / 2]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "cut.json: not a celeroot backup: the file is truncated or not JSON (EOF while parsing"
        ),
        "{out}"
    );
    assert!(out.contains("nothing was written"), "{out}");
    let (out, code) = bad(
        "edited.json",
        &text.replacen("\"generation\":1", "\"generation\":9", 1),
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("the backup's checksum does not match its contents"),
        "{out}"
    );
    let (out, code) = bad("other.json", "{\"format\":\"something-else\"}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("no \"format\": \"celeroot-backup\" field"),
        "{out}"
    );
    let (out, code) = celeroot(&repo, &url, &["restore", "/nonexistent/b.json"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot read /nonexistent/b.json"), "{out}");
    assert_eq!(snapshot(&redis), before);

    // A backup of cluster "staging" (its own database) is refused by production's
    // repository; with --force it is restored, under its own name, into its own database.
    let mut staging = TestRepo::with_example();
    staging.edit(
        "manifests/cluster.yaml",
        "name: production",
        "name: staging",
    );
    staging.commit("staging");
    let db1 = url.replace("/0", "/1");
    let (out, code) = celeroot(&staging, &db1, &["reconcile", "--skip-deploy"]);
    assert_eq!(code, 0, "{out}");
    let sfile = dir.path().join("staging.json").display().to_string();
    let (out, code) = celeroot(&staging, &db1, &["backup", "--out", &sfile]);
    assert_eq!(code, 0, "{out}");
    let (out, code) = celeroot(&repo, &url, &["restore", &sfile]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "is a backup of cluster staging, not of cluster production; nothing was written"
        ),
        "{out}"
    );
    assert_eq!(snapshot(&redis), before);
    // Into production's database even --force cannot: the database belongs to production.
    let (out, code) = celeroot(&repo, &url, &["restore", &sfile, "--force"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("holds the live state of cluster \"production\""),
        "{out}"
    );
    assert_eq!(snapshot(&redis), before);
}

#[test]
fn audit_export_says_who_applied_what_when_and_why() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut repo = reconciled_example(&redis);
    repo.edit(
        "manifests/roles/application.yaml",
        "concurrency: 8",
        "concurrency: 6",
    );
    repo.commit("application: 6 workers");
    let mut cmd = repo.cmd();
    cmd.args(["reconcile", "--skip-deploy"])
        .env("CELEROOT_REDIS_URL", &url)
        .env("CELEROOT_ACTOR", "alice@ops01");
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
    // Out of band edit, healed: a corrective reconcile.
    redis::cmd("HSET")
        .arg("celeroot:{production}:worker:web01")
        .arg("concurrency")
        .arg("99")
        .query::<()>(&mut redis.conn())
        .expect("HSET");
    let (out, code) = celeroot(&repo, &url, &["reconcile", "--skip-deploy"]);
    assert_eq!(code, 0, "{out}");

    let (out, code) = celeroot(&repo, &url, &["audit", "export", "--since", "2026-01-01"]);
    assert_eq!(code, 0, "{out}");
    let json = &out[..out.find("[exit").unwrap_or(out.len())];
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["formatVersion"], 1);
    assert_eq!(v["cluster"], "production");
    let events = v["events"].as_array().expect("events");
    let kinds: Vec<(&str, &str, u64)> = events
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default(),
                e["actor"].as_str().unwrap_or_default(),
                e["generation"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("intentional", "tester@ci", 1),
            ("intentional", "alice@ops01", 2),
            ("corrective", "tester@ci", 3),
        ],
        "{out}"
    );
    assert_eq!(events[1]["summary"]["change"], 1, "{out}");
    assert!(events[2]["correctiveWrites"].as_u64() >= Some(1), "{out}");

    let (out, code) = celeroot(
        &repo,
        &url,
        &["audit", "export", "--since", "2026-01-01", "-o", "csv"],
    );
    assert_eq!(code, 0, "{out}");
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("id,ts,actor,kind,result,revision,rev,generation,summary,writes,corrective_writes,release,error")
    );
    let rows: Vec<&str> = lines.take_while(|l| !l.starts_with("[exit")).collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(
        rows[1].contains(",alice@ops01,intentional,applied,"),
        "{out}"
    );
    // The summary's JSON is quoted as CSV quotes it.
    assert!(
        rows[1].contains(r#""{""add"":0,""change"":1,""remove"":0}""#),
        "{out}"
    );

    // Nothing after a future date; a bad time is a usage error.
    let (out, code) = celeroot(&repo, &url, &["audit", "export", "--since", "2100-01-01"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"events\": []"), "{out}");
    let (out, code) = celeroot(&repo, &url, &["audit", "export", "--since", "last week"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("invalid --since \"last week\": expected an RFC 3339 time"),
        "{out}"
    );
}

#[test]
fn the_event_streams_retention_is_the_clusters() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut repo = reconciled_example(&redis);
    let xlen = || -> u64 {
        redis::cmd("XLEN")
            .arg("celeroot:{production}:events")
            .query(&mut redis.conn())
            .expect("XLEN")
    };
    let flood = || {
        let mut pipe = redis::pipe();
        for i in 0..600 {
            pipe.cmd("XADD")
                .arg("celeroot:{production}:events")
                .arg("*")
                .arg("kind")
                .arg("noop")
                .arg("n")
                .arg(i)
                .ignore();
        }
        pipe.query::<()>(&mut redis.conn()).expect("XADD");
    };
    // The default (10000) keeps them all.
    flood();
    let (out, code) = celeroot(&repo, &url, &["reconcile", "--skip-deploy"]);
    assert_eq!(code, 0, "{out}");
    assert!(xlen() > 600);

    // keep: 100, applied: the reconcile's event trims the stream; a no-op's event,
    // recorded outside the apply with the retention read from the applied revision,
    // keeps to it too.
    repo.edit(
        "manifests/cluster.yaml",
        "  timezone: Europe/Berlin\n",
        "  timezone: Europe/Berlin\n  eventRetention:\n    keep: 100\n",
    );
    repo.commit("keep 100 events");
    let (out, code) = celeroot(&repo, &url, &["reconcile", "--skip-deploy"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("eventRetention"), "the plan shows it: {out}");
    let n = xlen();
    assert!((100..300).contains(&n), "{n} events kept");
    flood();
    let (out, code) = celeroot(&repo, &url, &["reconcile", "--skip-deploy"]);
    assert_eq!(code, 0, "{out}");
    let n = xlen();
    assert!((100..300).contains(&n), "{n} events kept after a no-op");

    // Out of range: a located error.
    repo.edit("manifests/cluster.yaml", "keep: 100", "keep: 5");
    repo.commit("keep 5");
    let (out, code) = celeroot(&repo, &url, &["validate"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("manifests/cluster.yaml:12:11"), "{out}");
    assert!(out.contains("invalid eventRetention.keep 5"), "{out}");
    assert!(out.contains("expected 100 to 1000000 events"), "{out}");
}

#[test]
fn the_leading_daemon_writes_backups_and_keeps_the_newest() {
    use crate::common::daemon::{BareRepo, Daemon};
    use std::time::Duration;
    let redis = RedisServer::start();
    let url = redis.url();
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    let bare = BareRepo::new();
    bare.push_from(&repo, "main");
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path().join("backups").display().to_string();
    let mut daemon = Daemon::start(
        &bare.url(),
        &url,
        &[
            "--interval",
            "1s",
            "--skip-deploy",
            "--backup-every",
            "1s",
            "--backup-dir",
            &d,
            "--backup-keep",
            "2",
        ],
    );
    daemon.wait_for("three backups", Duration::from_secs(60), |d| {
        d.status()["lastBackup"]["result"] == "ok"
            && d.status()["lastBackup"]["generation"] == 1
            && d.status()["lastBackup"]["pruned"].as_u64() >= Some(1)
    });
    let status = daemon.status();
    let files: Vec<String> = std::fs::read_dir(&d)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2, "{files:?} {status}");
    assert!(
        files
            .iter()
            .all(|f| f.starts_with("production-g1-") && f.ends_with(".celeroot-backup.json")),
        "{files:?}"
    );
    // A scheduled backup restores: into another database of the server.
    let file = status["lastBackup"]["file"]
        .as_str()
        .expect("file")
        .to_string();
    let (out, code) = celeroot(&repo, &url.replace("/0", "/3"), &["restore", &file]);
    assert!(code == 0 || code == 2, "{out}");
    assert!(out.contains("Restored cluster production from "), "{out}");

    // The two flags go together.
    let mut cmd = repo.cmd();
    cmd.args(["watch", "--backup-every", "1h"])
        .env("CELEROOT_REDIS_URL", &url);
    let (out, code) = run(cmd);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("--backup-every needs --backup-dir"), "{out}");
}
