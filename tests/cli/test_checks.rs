//! Check-ins (issue 17 part 5): a job celeroot does not run pings `celeroot watch` with
//! `curl`; the same late, missed and failed rules apply; tokens are stored only as
//! hashes, rate-limited, and bodies are bounded.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::daemon::{BareRepo, Daemon};
use crate::common::redis::RedisServer;
use crate::common::{run, TestRepo};

const WAIT: Duration = Duration::from_secs(60);

fn celeroot(repo: &TestRepo, redis: &RedisServer, args: &[&str]) -> (String, i32) {
    let mut cmd = repo.cmd();
    cmd.args(args)
        .env("CELEROOT_REDIS_URL", redis.url())
        .env_remove("CELEROOT_NOW");
    run(cmd)
}

/// `curl -s -o /dev/null -w %{http_code} -X POST [--data-binary @file] URL`.
fn curl(url: &str, body: Option<&std::path::Path>) -> u16 {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-m",
        "10",
        "-X",
        "POST",
    ]);
    if let Some(b) = body {
        cmd.arg("--data-binary").arg(format!("@{}", b.display()));
    }
    let out = cmd.arg(url).output().expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn state(repo: &TestRepo, redis: &RedisServer) -> String {
    let mut cmd = repo.cmd();
    cmd.args(["health", "--all", "-o", "json"])
        .env("CELEROOT_REDIS_URL", redis.url())
        .env_remove("CELEROOT_NOW");
    let out = cmd.output().expect("health");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["targets"][0]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn wait_state(repo: &TestRepo, redis: &RedisServer, want: &str) {
    let deadline = Instant::now() + WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        last = state(repo, redis);
        if last == want {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the check never became {want}; last {last}");
}

#[test]
fn a_job_outside_celery_checks_in_with_curl_and_goes_late_missed_and_failed() {
    let redis = RedisServer::start();
    let mut repo = TestRepo::empty();
    repo.write(
        "manifests/cluster.yaml",
        "apiVersion: celeroot.io/v1\nkind: Cluster\nmetadata:\n  name: fleet\nspec: {}\n",
    );
    repo.write(
        "manifests/dump.yaml",
        "apiVersion: celeroot.io/v1\nkind: Schedule\nmetadata:\n  name: nightly-dump\nspec:\n  description: pg_dump from the database host's crontab\n  external: true\n  every: 3s\n  grace: 3s\n  timeout: 2s\n",
    );
    repo.commit("fleet");
    let (out, code) = celeroot(&repo, &redis, &["reconcile"]);
    assert_eq!(code, 0, "{out}");
    // A check-in has no RedBeat entry: beat never sends anything for it.
    let entries: Vec<String> = redis::cmd("KEYS")
        .arg("celeroot:{fleet}:redbeat:*")
        .query(&mut redis.conn())
        .expect("KEYS");
    assert!(
        entries.iter().all(|k| !k.contains("nightly-dump")),
        "{entries:?}"
    );

    let bare = BareRepo::new();
    bare.push_from(&repo, "main");
    let daemon = Daemon::start(
        &bare.url(),
        &redis.url(),
        &["--branch", "main", "--skip-deploy"],
    );
    let base = format!("http://127.0.0.1:{}", daemon.port);

    let (out, code) = celeroot(
        &repo,
        &redis,
        &["checks", "token", "nightly-dump", "--url", &base],
    );
    assert_eq!(code, 0, "{out}");
    let token = out
        .lines()
        .nth(1)
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    assert_eq!(token.len(), 64, "{out}");
    assert!(
        out.contains(&format!("success:  {base}/ping/{token}")),
        "{out}"
    );
    // Only its hash is stored.
    let dump: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut redis.conn())
        .expect("KEYS");
    for k in &dump {
        let t: String = redis::cmd("TYPE")
            .arg(k)
            .query(&mut redis.conn())
            .expect("TYPE");
        if t == "hash" {
            let v: Vec<String> = redis::cmd("HGETALL")
                .arg(k)
                .query(&mut redis.conn())
                .expect("HGETALL");
            assert!(v.iter().all(|x| !x.contains(&token)), "{k} holds the token");
        }
    }

    let url = format!("{base}/ping/{token}");
    assert_eq!(curl(&format!("{url}/start"), None), 200);
    assert_eq!(curl(&url, None), 200);
    wait_state(&repo, &redis, "ok");
    let (out, code) = celeroot(&repo, &redis, &["runs", "nightly-dump", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value =
        serde_json::from_str(out.split("[exit").next().unwrap_or_default()).expect("JSON");
    let r = &v["runs"][0];
    assert_eq!(r["state"], "succeeded", "{v}");
    assert_eq!(r["target"], "check/nightly-dump");
    assert!(
        r["runtime"].as_f64().is_some(),
        "start and success make one run with a duration: {v}"
    );
    assert_eq!(v["runs"].as_array().map(Vec::len), Some(1), "{v}");

    // No ping: late after its period and grace, then missed.
    wait_state(&repo, &redis, "late");
    wait_state(&repo, &redis, "missed");
    let (out, code) = celeroot(&repo, &redis, &["health"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("nightly-dump")
            && out.contains("check/nightly-dump")
            && out.contains("missed"),
        "{out}"
    );

    // A failure, with the job's output as its message (bounded, URL passwords masked).
    let dir = tempfile::tempdir().expect("tmp");
    let log = dir.path().join("job.log");
    std::fs::write(
        &log,
        "pg_dump: error: connection to postgres://dump:s3cret@db.invalid/prod failed\n",
    )
    .expect("log");
    assert_eq!(curl(&format!("{url}/fail"), Some(&log)), 200);
    wait_state(&repo, &redis, "failed");
    let (out, _) = celeroot(&repo, &redis, &["runs", "nightly-dump", "--failed"]);
    assert!(out.contains("CheckInFailed: pg_dump: error: connection to postgres://dump:***@db.invalid/prod failed"), "{out}");
    assert!(!out.contains("s3cret"), "{out}");

    // A start that outlives the timeout: stuck.
    assert_eq!(curl(&format!("{url}/start"), None), 200);
    wait_state(&repo, &redis, "stuck");

    // Wrong tokens, bodies over 10,000 bytes, and more than 30 pings a minute.
    let other = "0".repeat(64);
    assert_eq!(curl(&format!("{base}/ping/{other}"), None), 404);
    assert_eq!(curl(&format!("{base}/ping/not-a-token"), None), 404);
    assert_eq!(curl(&format!("{url}/log"), None), 404);
    let big = dir.path().join("big");
    std::fs::write(&big, "x".repeat(10_001)).expect("big");
    assert_eq!(curl(&url, Some(&big)), 413);
    // A new token replaces the old one.
    let (out, code) = celeroot(
        &repo,
        &redis,
        &["checks", "token", "nightly-dump", "--url", &base],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("The previous token of nightly-dump no longer works."),
        "{out}"
    );
    let fresh = out
        .lines()
        .nth(1)
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    assert_eq!(curl(&format!("{base}/ping/{fresh}"), None), 200);
    assert_eq!(
        curl(&format!("{base}/ping/{token}"), None),
        404,
        "the old token no longer works"
    );
    // At most 30 pings a minute per token: the fresh one has used 1.
    let codes: Vec<u16> = (0..30)
        .map(|_| curl(&format!("{base}/ping/{fresh}"), None))
        .collect();
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 29, "{codes:?}");
    assert_eq!(codes.last(), Some(&429), "the rate limit holds: {codes:?}");
    let (out, code) = celeroot(&repo, &redis, &["checks", "token", "nightly-dmp"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("did you mean \"nightly-dump\"?"), "{out}");
}

#[test]
fn an_external_check_with_a_task_or_targets_is_a_located_error() {
    let mut repo = TestRepo::with_example();
    repo.write(
        "manifests/schedules/ext.yaml",
        "apiVersion: celeroot.io/v1\nkind: Schedule\nmetadata:\n  name: ext\nspec:\n  external: true\n  every: 1h\n  task: ops.tasks.rotate_logs\n  targets:\n    - role: webserver\n",
    );
    repo.write(
        "manifests/schedules/notask.yaml",
        "apiVersion: celeroot.io/v1\nkind: Schedule\nmetadata:\n  name: notask\nspec:\n  every: 1h\n  targets:\n    - role: webserver\n",
    );
    repo.commit("ext");
    let mut cmd = repo.cmd();
    cmd.args(["validate"]);
    let (out, _) = run(cmd);
    insta::assert_snapshot!(out, @r#"
    ------- stderr -------
    error: an external check-in has no `task`
      --> manifests/schedules/ext.yaml:8:9
       |
     8 |   task: ops.tasks.rotate_logs
       |         ^
      = help: celeroot does not run external jobs: they ping `POST /ping/<token>` (`celeroot checks token NAME`)
    error: an external check-in has no `targets`
      --> manifests/schedules/ext.yaml:10:5
        |
     10 |     - role: webserver
        |     ^
      = help: celeroot does not run external jobs: they ping `POST /ping/<token>` (`celeroot checks token NAME`)
    error: a schedule needs a `task`
      --> manifests/schedules/notask.yaml:4:9
       |
     4 |   name: notask
       |         ^
      = help: add e.g. `task: ops.tasks.rotate_logs` (or `external: true` for a check-in of a job celeroot does not run)
    error: manifests at HEAD (cc4d7ac0) are invalid: 3 error(s), 0 warning(s); nothing was changed
    [exit status: 1]
    "#);
}
