//! The JSON contract: real outputs of the binary, against a real redis-server, validate
//! against the schemas in `schemas/output/` (generated from the Rust types), carry
//! `formatVersion`, use camelCase names and real numbers.

use crate::common::redis::RedisServer;
use crate::common::{project_root, run, TestRepo};

fn validator(name: &str) -> jsonschema::Validator {
    let path = project_root().join("schemas/output").join(name);
    let text = std::fs::read_to_string(&path).expect("output schema file");
    let v: serde_json::Value = serde_json::from_str(&text).expect("schema JSON");
    jsonschema::validator_for(&v).expect("schema compiles")
}

fn json_of(repo: &TestRepo, redis: &str, args: &[&str]) -> String {
    json_exiting(repo, redis, args, 0)
}

/// Standard output of a command that must exit with `code` (2: changes or drift).
fn json_exiting(repo: &TestRepo, redis: &str, args: &[&str], code: i32) -> String {
    let mut cmd = repo.cmd();
    cmd.args(args).env("CELEROOT_REDIS_URL", redis);
    let out = cmd.output().expect("run celeroot");
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn doc(text: &str) -> serde_json::Value {
    serde_json::from_str(text).expect("one JSON document")
}

fn check(schema: &str, doc: &serde_json::Value) {
    let v = validator(schema);
    let errors: Vec<String> = v
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{schema}: {errors:?}\n{doc:#}");
    assert_eq!(doc["formatVersion"], 1, "{schema}: {doc:#}");
    let names: Vec<&String> = doc.as_object().expect("an object").keys().collect();
    for n in names {
        assert!(
            !n.contains('_') && !n.contains('-'),
            "{schema}: {n} is not camelCase"
        );
    }
}

#[test]
fn real_outputs_validate_against_their_schemas() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut repo = TestRepo::with_example();
    // The worker code too, so the revision ships a release to deploy.
    for (path, text) in celeroot::init::WORKER_SCAFFOLD {
        repo.write(path, text);
    }
    repo.commit("first");
    // Before anything is applied: the plan, a dry run and drift all report changes.
    let plan = doc(&json_exiting(&repo, &url, &["diff", "-o", "json"], 2));
    check("plan.json", &plan);
    let dry = doc(&json_exiting(
        &repo,
        &url,
        &["reconcile", "--dry-run", "-o", "json"],
        2,
    ));
    check("reconcile.json", &dry);
    let drift = doc(&json_exiting(&repo, &url, &["drift", "-o", "json"], 2));
    check("drift.json", &drift);
    let applied = doc(&json_of(
        &repo,
        &url,
        &["reconcile", "--skip-deploy", "-o", "json"],
    ));
    check("reconcile.json", &applied);
    assert!(
        applied["writes"].is_u64() && applied["generation"] == 1,
        "{applied:#}"
    );
    // A check of the example's placeholder addresses: refused per host, without traffic.
    let deploy = doc(&json_exiting(
        &repo,
        &url,
        &["deploy", "--check", "-o", "json"],
        1,
    ));
    check("deploy.json", &deploy);
    assert!(deploy["hosts"][0]["durationMs"].is_u64(), "{deploy:#}");
    let mut suspend = repo.cmd();
    suspend
        .args(["suspend", "--reason", "contract test"])
        .env("CELEROOT_REDIS_URL", &url);
    assert_eq!(run(suspend).1, 0);

    let status: serde_json::Value =
        serde_json::from_str(&json_of(&repo, &url, &["status", "-o", "json"])).expect("JSON");
    check("status.json", &status);
    assert!(status["applied"]["generation"].is_u64(), "{status:#}");
    assert!(status["applied"]["summary"]["add"].is_u64(), "{status:#}");
    assert_eq!(status["suspended"]["reason"], "contract test");
    let event = &status["events"][0];
    assert!(
        event["request"].is_null() && event["kind"] == "suspend",
        "{event}"
    );

    let history: serde_json::Value =
        serde_json::from_str(&json_of(&repo, &url, &["history", "-o", "json"])).expect("JSON");
    check("history.json", &history);
    assert_eq!(history["revisions"][0]["generation"], 1);

    let audit: serde_json::Value =
        serde_json::from_str(&json_of(&repo, &url, &["audit", "export", "-o", "json"]))
            .expect("JSON");
    check("audit-export.json", &audit);
    let applied = audit["events"]
        .as_array()
        .and_then(|v| v.iter().find(|e| e["kind"] == "intentional"))
        .expect("the applied event");
    assert!(
        applied["writes"].is_u64() && applied["durationMs"].is_u64(),
        "{applied}"
    );

    // Beat, runs and health: none runs here, so beat is missing and nothing has run.
    check(
        "beat-status.json",
        &doc(&json_exiting(
            &repo,
            &url,
            &["beat", "status", "-o", "json"],
            2,
        )),
    );
    check(
        "beat-forecast.json",
        &doc(&json_of(&repo, &url, &["beat", "--dry-run", "-o", "json"])),
    );
    check(
        "runs.json",
        &doc(&json_of(&repo, &url, &["runs", "-o", "json"])),
    );
    let mut health = repo.cmd();
    health
        .args(["health", "-o", "json"])
        .env("CELEROOT_REDIS_URL", &url);
    let out = health.output().expect("run celeroot");
    let health = doc(&String::from_utf8_lossy(&out.stdout));
    check("health.json", &health);
    assert!(health["healthy"].is_boolean(), "{health:#}");
    // The editing commands and the SSH probe.
    let hosts = doc(&json_of(&repo, &url, &["hosts", "ls", "-o", "json"]));
    check("manifests.json", &hosts);
    assert_eq!(hosts["items"][0]["kind"], "Host");
    let probes = doc(&json_exiting(
        &repo,
        &url,
        &["hosts", "test-connection", "--all", "-o", "json"],
        1,
    ));
    check("test-connection.json", &probes);

    let lines = json_of(&repo, &url, &["events", "-o", "json"]);
    assert!(lines.lines().count() >= 2, "{lines}");
    for line in lines.lines() {
        let doc: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        check("events.json", &doc);
    }
}
