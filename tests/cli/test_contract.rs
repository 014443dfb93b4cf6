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
    let mut cmd = repo.cmd();
    cmd.args(args).env("CELEROOT_REDIS_URL", redis);
    let out = cmd.output().expect("run celeroot");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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
    repo.commit("first");
    let (out, code) = {
        let mut cmd = repo.cmd();
        cmd.args(["reconcile", "--skip-deploy"])
            .env("CELEROOT_REDIS_URL", &url);
        run(cmd)
    };
    assert_eq!(code, 0, "{out}");
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

    let lines = json_of(&repo, &url, &["events", "-o", "json"]);
    assert!(lines.lines().count() >= 2, "{lines}");
    for line in lines.lines() {
        let doc: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        check("events.json", &doc);
    }
}
