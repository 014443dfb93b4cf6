//! `celeroot task`: protocol-v2 messages sent straight to the broker lists, consumed by
//! real Celery workers (the scaffold app from the pinned virtualenv), results read back
//! from Celery's Redis result backend; revoke through Celery's remote-control broadcast;
//! bad input sends nothing.

use std::time::{Duration, Instant};

use crate::common::celery::{worker_env, CeleryProcess};
use crate::common::redis::RedisServer;
use crate::common::{run, TestRepo};

/// The queues of the example hosts web01 and web02 (roles application and webserver).
fn queues(host: &str) -> Vec<String> {
    vec![
        "app".to_string(),
        "webserver".to_string(),
        format!("celeroot.host.{host}"),
    ]
}

fn worker(redis: &RedisServer, host: &str) -> CeleryProcess {
    let q = queues(host);
    let q: Vec<&str> = q.iter().map(String::as_str).collect();
    CeleryProcess::worker(
        &worker_env(&redis.url(), "production", host, "Europe/Berlin"),
        &q,
        host,
    )
}

fn example() -> TestRepo {
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    repo
}

/// `celeroot task ARGS...` with the live-state Redis at `redis` (the broker and result
/// backend default to it).
fn task(repo: &TestRepo, redis: &str, args: &[&str]) -> (String, i32) {
    let mut cmd = repo.cmd();
    cmd.arg("task")
        .args(args)
        .env("CELEROOT_REDIS_URL", redis)
        .env_remove("CELEROOT_BROKER_URL")
        .env_remove("CELEROOT_RESULT_BACKEND");
    run(cmd)
}

/// The task id printed for `target` (`host/web01`) in the "Sent" table.
pub(crate) fn id_for(out: &str, target: &str) -> String {
    out.lines()
        .find_map(|l| {
            let mut cols = l.split_whitespace();
            (cols.next() == Some(target)).then(|| cols.next().unwrap_or_default().to_string())
        })
        .unwrap_or_else(|| panic!("no task id for {target} in:\n{out}"))
}

fn keys(redis: &RedisServer) -> Vec<String> {
    let mut conn = redis.conn();
    let mut k: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).expect("KEYS");
    k.sort();
    k
}

#[test]
fn ping_failure_and_timeout_against_a_real_worker() {
    let repo = example();
    let redis = RedisServer::start();
    let url = redis.url();
    let w = worker(&redis, "web01");

    // Success, with the result in the table.
    let (out, code) = task(
        &repo,
        &url,
        &["run", "celeroot.ping", "--target", "host:web01", "--wait"],
    );
    assert_eq!(code, 0, "{out}\n{}", w.log_text());
    assert!(
        out.contains("Sent celeroot.ping to 1 host (mode each"),
        "{out}"
    );
    assert!(out.contains("celeroot.host.web01"), "{out}");
    let id = id_for(&out, "host/web01");
    let row = out
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("host/web01"))
        .unwrap_or_default();
    assert!(row.contains("SUCCESS"), "{out}");
    assert!(row.contains(r#"{"pong":true,"host":"web01"}"#), "{out}");
    assert!(out.contains("1 succeeded."), "{out}");
    assert!(
        w.log_text()
            .contains(&format!("Task celeroot.ping[{id}] succeeded")),
        "{}",
        w.log_text()
    );

    // status and result read the same backend.
    let (out, code) = task(&repo, &url, &["status", &id, "no-such-id"]);
    assert_eq!(code, 0, "{out}");
    let mine = out
        .lines()
        .find(|l| l.starts_with(&format!("  {id}")))
        .unwrap_or_default();
    assert!(mine.contains("SUCCESS") && mine.contains("web01@"), "{out}");
    let unknown = out
        .lines()
        .find(|l| l.contains("no-such-id"))
        .unwrap_or_default();
    assert!(unknown.contains("PENDING"), "{out}");
    let (out, code) = task(&repo, &url, &["result", &id]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out[..out.find("[exit").unwrap_or(0)])
        .unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v, serde_json::json!({"pong": true, "host": "web01"}));
    let (out, code) = task(&repo, &url, &["result", "no-such-id"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("has no result") && out.contains("PENDING"),
        "{out}"
    );

    // Failure: exit 1, the traceback's last lines under the row.
    let (out, code) = task(
        &repo,
        &url,
        &[
            "run",
            "tests.fail",
            "--target",
            "host:web01",
            "--kwargs",
            r#"{"message": "kaboom"}"#,
            "--wait",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILURE"), "{out}");
    assert!(out.contains("RuntimeError: kaboom"), "{out}");
    assert!(out.contains("| RuntimeError: kaboom"), "{out}");
    assert!(out.contains("|     raise RuntimeError(message)"), "{out}");
    assert!(out.contains("0 succeeded, 1 failed."), "{out}");
    assert!(out.contains("error: 1 of 1 task did not succeed"), "{out}");
    let failed = id_for(&out, "host/web01");
    let (out, code) = task(&repo, &url, &["result", &failed]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("Traceback (most recent call last):"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "error: task {failed} failed: RuntimeError: kaboom"
        )),
        "{out}"
    );

    // Timeout: the worker is still sleeping when --timeout runs out.
    let start = Instant::now();
    let (out, code) = task(
        &repo,
        &url,
        &[
            "run",
            "tests.sleep",
            "--target",
            "host:web01",
            "--args",
            "[2]",
            "--wait",
            "--timeout",
            "1",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(start.elapsed() < Duration::from_secs(10), "{out}");
    let row = out
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("host/web01"))
        .unwrap_or_default();
    assert!(
        row.contains("PENDING") && row.contains("timed out after 1s"),
        "{out}"
    );
    assert!(out.contains("0 succeeded, 1 timed out."), "{out}");
}

#[test]
fn a_role_in_mode_each_reaches_every_host_and_any_reaches_one() {
    let repo = example();
    let redis = RedisServer::start();
    let url = redis.url();
    let w1 = worker(&redis, "web01");
    let w2 = worker(&redis, "web02");

    let (out, code) = task(
        &repo,
        &url,
        &[
            "run",
            "celeroot.ping",
            "--target",
            "role:webserver",
            "--mode",
            "each",
            "--wait",
            "--timeout",
            "20",
        ],
    );
    assert_eq!(code, 0, "{out}\n{}\n{}", w1.log_text(), w2.log_text());
    assert!(out.contains("Sent celeroot.ping to 2 hosts"), "{out}");
    for host in ["web01", "web02"] {
        let id = id_for(&out, &format!("host/{host}"));
        let row = out
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with(&format!("host/{host}")))
            .unwrap_or_default();
        assert!(row.contains("SUCCESS"), "{out}");
        assert!(row.contains(&format!(r#""host":"{host}""#)), "{out}");
        let log = if host == "web01" { &w1 } else { &w2 };
        assert!(
            log.log_text().contains(&format!("[{id}] succeeded")),
            "{host}"
        );
    }
    assert!(out.contains("2 succeeded."), "{out}");

    // mode any: one message on the role queue; one of the two workers runs it.
    let (out, code) = task(
        &repo,
        &url,
        &[
            "run",
            "celeroot.echo",
            "--target",
            "role:webserver",
            "--mode",
            "any",
            "--args",
            r#"[1, "two", {"three": null}]"#,
            "--wait",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Sent celeroot.echo to 1 role (mode any"),
        "{out}"
    );
    let id = id_for(&out, "role/webserver");
    assert!(
        out.contains(r#"{"args":[1,"two",{"three":null}],"kwargs":{}}"#),
        "{out}"
    );
    let ran = [&w1, &w2]
        .iter()
        .filter(|w| w.log_text().contains(&format!("[{id}] succeeded")))
        .count();
    assert_eq!(ran, 1);
    // The role queue is empty again: nothing was left behind for a second run.
    let mut conn = redis.conn();
    let len: i64 = redis::cmd("LLEN")
        .arg("webserver")
        .query(&mut conn)
        .expect("LLEN");
    assert_eq!(len, 0);
}

#[test]
fn bad_input_sends_nothing() {
    let mut repo = example();
    let redis = RedisServer::start();
    let url = redis.url();
    let cases: &[(&[&str], &str)] = &[
        (
            &["run", "celeroot.ping", "--target", "host:web99"],
            "target not resolved at HEAD",
        ),
        (
            &[
                "run",
                "celeroot.ping",
                "--target",
                "role:webserver",
                "--target",
                "role:nope",
            ],
            "role:nope: no Role `nope`",
        ),
        (
            &["run", "celeroot.ping", "--target", "label:zone=mars"],
            "selector:zone=mars: matches no host",
        ),
        (
            &["run", "celeroot.ping", "--target", "web01"],
            "invalid target `web01`",
        ),
        (
            &[
                "run",
                "celeroot.ping",
                "--mode",
                "any",
                "--target",
                "host:web01",
            ],
            "takes role targets only",
        ),
        (
            &[
                "run",
                "celeroot.ping",
                "--target",
                "host:web01",
                "--args",
                "[1, oops]",
            ],
            "--args is not valid JSON: expected value at line 1 column 5",
        ),
        (
            &[
                "run",
                "celeroot.ping",
                "--target",
                "host:web01",
                "--args",
                r#"{"a": 1}"#,
            ],
            "--args must be a JSON array",
        ),
        (
            &[
                "run",
                "celeroot.ping",
                "--target",
                "host:web01",
                "--kwargs",
                "[1]",
            ],
            "--kwargs must be a JSON object",
        ),
        (
            &["run", "celeroot ping", "--target", "host:web01"],
            "invalid task name `celeroot ping`",
        ),
        (
            &[
                "run",
                "celeroot.ping",
                "--target",
                "host:web01",
                "--countdown",
                "10",
                "--expires",
                "5",
            ],
            "must be later than --countdown",
        ),
    ];
    for (args, needle) in cases {
        let (out, code) = task(&repo, &url, args);
        assert_eq!(code, 1, "{args:?}: {out}");
        assert!(out.contains(needle), "{args:?}: {out}");
        assert!(out.contains("nothing was sent"), "{args:?}: {out}");
        assert!(!out.contains("Sent "), "{args:?}: {out}");
        assert_eq!(keys(&redis), Vec::<String>::new(), "{args:?}");
    }

    // Unreachable broker: a clear error without the password, nothing sent anywhere.
    let (out, code) = task(
        &repo,
        &url,
        &[
            "run",
            "celeroot.ping",
            "--target",
            "host:web01",
            "--broker",
            "redis://ops:Broker-Secret-7@127.0.0.1:1/0",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cannot connect to the broker at redis://ops:***@127.0.0.1:1/0"),
        "{out}"
    );
    assert!(out.contains("nothing was sent"), "{out}");
    assert!(!out.contains("Broker-Secret-7"), "{out}");
    // An unreachable result backend stops --wait before anything is sent, too.
    let (out, code) = task(
        &repo,
        &url,
        &[
            "run",
            "celeroot.ping",
            "--target",
            "host:web01",
            "--wait",
            "--result-backend",
            "redis://:Backend-Secret-8@127.0.0.1:1/1",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cannot connect to the result backend at redis://:***@127.0.0.1:1/1"),
        "{out}"
    );
    assert!(!out.contains("Backend-Secret-8"), "{out}");
    assert_eq!(keys(&redis), Vec::<String>::new());

    // Invalid manifests at HEAD: compile error, nothing sent.
    repo.write(
        "manifests/hosts/broken.yaml",
        "kind: Host\nmetadata: {name: broken}\n",
    );
    repo.commit("broken host");
    let (out, code) = task(
        &repo,
        &url,
        &["run", "celeroot.ping", "--target", "host:web01"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("are invalid"), "{out}");
    assert!(out.contains("nothing was sent"), "{out}");
    assert_eq!(keys(&redis), Vec::<String>::new());
    // ... while an earlier, valid revision still works (and writes exactly the message).
    let (out, code) = task(
        &repo,
        &url,
        &[
            "run",
            "celeroot.ping",
            "--target",
            "host:web01",
            "--rev",
            "HEAD~1",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        keys(&redis),
        vec![
            "_kombu.binding.celeroot.host.web01".to_string(),
            "celeroot.host.web01".to_string()
        ]
    );
}

#[test]
fn the_message_on_the_list_is_protocol_v2() {
    let repo = example();
    let redis = RedisServer::start();
    let url = redis.url();
    let (out, code) = task(
        &repo,
        &url,
        &[
            "run",
            "tests.record",
            "--target",
            "host:db01",
            "--args",
            r#"["x"]"#,
            "--kwargs",
            r#"{"host": "h"}"#,
            "--countdown",
            "30",
            "--expires",
            "1h",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let id = id_for(&out, "host/db01");
    let mut conn = redis.conn();
    let raw: Vec<String> = redis::cmd("LRANGE")
        .arg("celeroot.host.db01")
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .expect("LRANGE");
    assert_eq!(raw.len(), 1);
    let m: serde_json::Value = serde_json::from_str(&raw[0]).expect("JSON envelope");
    assert_eq!(m["content-type"], "application/json");
    assert_eq!(m["headers"]["task"], "tests.record");
    assert_eq!(m["headers"]["id"], serde_json::json!(id));
    assert_eq!(m["headers"]["argsrepr"], "['x']");
    assert_eq!(m["headers"]["kwargsrepr"], "{'host': 'h'}");
    assert!(m["headers"]["eta"]
        .as_str()
        .unwrap_or_default()
        .ends_with("+00:00"));
    assert!(m["headers"]["expires"]
        .as_str()
        .unwrap_or_default()
        .ends_with("+00:00"));
    assert_eq!(m["properties"]["expiration"], "3600000");
    assert_eq!(
        m["properties"]["delivery_info"],
        serde_json::json!({"exchange": "", "routing_key": "celeroot.host.db01"})
    );
    assert_eq!(m["properties"]["body_encoding"], "base64");
    let body = celeroot::celery::message::base64_decode(m["body"].as_str().unwrap_or_default())
        .expect("base64 body");
    let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
    assert_eq!(body[0], serde_json::json!(["x"]));
    assert_eq!(body[1], serde_json::json!({"host": "h"}));
    assert_eq!(body.as_array().map(Vec::len), Some(3));
}

#[test]
fn revoke_reaches_the_workers_and_the_task_never_runs() {
    let repo = example();
    let redis = RedisServer::start();
    let url = redis.url();

    // Nobody listening: the broadcast reaches nobody, and celeroot says so.
    let (out, code) = task(
        &repo,
        &url,
        &["revoke", "0f6c2a1e-5d7b-4c8e-9a41-3b2d1e0c9f01"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("broadcast to 0 listening workers"), "{out}");
    assert!(
        out.contains("no worker is listening for remote control"),
        "{out}"
    );

    let w = worker(&redis, "web01");
    let (out, code) = task(
        &repo,
        &url,
        &[
            "run",
            "tests.record",
            "--target",
            "host:web01",
            "--args",
            r#"["revoked"]"#,
            "--countdown",
            "2",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let id = id_for(&out, "host/web01");
    let (out, code) = task(&repo, &url, &["revoke", &id]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("broadcast to 1 listening worker"), "{out}");
    // The worker flags it and records REVOKED; when the ETA comes, it discards it.
    w.wait_for_log(
        &format!("Discarding revoked task: tests.record[{id}]"),
        Duration::from_secs(15),
    );
    let (out, code) = task(&repo, &url, &["status", &id]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("REVOKED") && out.contains("TaskRevokedError: revoked"),
        "{out}"
    );
    let (out, code) = task(&repo, &url, &["result", &id]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("task {id} was revoked")), "{out}");
    let mut conn = redis.conn();
    let ran: i64 = redis::cmd("LLEN")
        .arg("tests:record:revoked")
        .query(&mut conn)
        .expect("LLEN");
    assert_eq!(ran, 0, "the revoked task ran");
}
