//! `suspend`, `resume`, `sync`, `events` and `wait` against a real `celeroot watch`
//! daemon, a real redis-server and real git repositories.

use std::time::Duration;

use crate::common::{run, TestRepo};
use crate::test_watch::{events, fleet, started};

const WAIT: Duration = Duration::from_secs(20);

fn celeroot(repo: &TestRepo, redis: &str, args: &[&str]) -> (String, i32) {
    let mut cmd = repo.cmd();
    cmd.args(args).env("CELEROOT_REDIS_URL", redis);
    run(cmd)
}

/// The commit ids in `out` shortened as celeroot prints them, replaced by names.
fn named(out: &str, commits: &[(&str, &str)]) -> String {
    let mut s = out.to_string();
    for (id, name) in commits {
        s = s.replace(&id[..8], name);
    }
    s
}

#[test]
fn suspend_holds_pushes_resume_applies_them_and_sync_reconciles_at_once() {
    let (redis, mut repo, first, bare) = fleet();
    // Polling every hour: only resume and sync make this daemon fetch.
    let mut d = started(&bare, &redis, &first, &["--interval", "1h"]);
    let url = redis.url();

    let (out, code) = celeroot(&repo, &url, &["suspend", "--reason", "incident 42"]);
    assert_eq!(code, 0, "{out}");
    insta::assert_snapshot!(out, @r"
    Suspended cluster production: the watch daemons apply, heal and deploy nothing until `celeroot resume`.
    [exit status: 0]
    ");
    d.wait_for("the suspension in /status", WAIT, |d| {
        d.status()["suspended"]["reason"] == "incident 42"
    });
    let (_, metrics) = d.get("/metrics");
    assert!(metrics.contains("celeroot_suspended 1"), "{metrics}");

    // A push while suspended: sync is refused, nothing is applied.
    repo.edit(
        "manifests/roles/webserver.yaml",
        "concurrency: 4",
        "concurrency: 5",
    );
    let second = repo.commit("web: concurrency 5");
    bare.push_from(&repo, "main");
    let (out, code) = celeroot(&repo, &url, &["sync"]);
    assert_eq!(code, 1, "{out}");
    let out = out.replace(
        &d.status()["suspended"]["at"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        "AT",
    );
    assert!(
        out.contains("error: cluster production is suspended (by ")
            && out.contains(" since AT: \"incident 42\")")
            && out.contains("`celeroot resume` lifts the suspension"),
        "{out}"
    );
    assert_eq!(d.applied().as_deref(), Some(first.as_str()));

    // Resume: the leader fetches and applies the push at once (it polls only hourly).
    let (out, code) = celeroot(&repo, &url, &["resume"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Resumed cluster production (suspended by "),
        "{out}"
    );
    d.wait_for("the held push applied after resume", WAIT, |d| {
        d.applied().as_deref() == Some(second.as_str())
    });
    assert!(d.status()["suspended"].is_null());
    let (_, metrics) = d.get("/metrics");
    assert!(metrics.contains("celeroot_suspended 0"), "{metrics}");

    // Sync: another push, applied when asked, and the answer says so.
    repo.edit(
        "manifests/roles/webserver.yaml",
        "concurrency: 5",
        "concurrency: 6",
    );
    let third = repo.commit("web: concurrency 6");
    bare.push_from(&repo, "main");
    let (out, code) = celeroot(&repo, &url, &["sync", "--timeout", "20s"]);
    let out = named(&out, &[(&third, "THIRD")]);
    let identity = d.status()["identity"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    insta::assert_snapshot!(out.replace(&identity, "DAEMON"), @r"
    DAEMON: applied THIRD.
    ------- stderr -------
    Asked DAEMON to reconcile cluster production; waiting for its answer…
    [exit status: 0]
    ");
    assert_eq!(code, 0);
    assert_eq!(d.applied().as_deref(), Some(third.as_str()));

    // wait: an applied commit, and an earlier one it contains.
    let (out, code) = celeroot(&repo, &url, &["wait", "--rev", &third, "--timeout", "5s"]);
    assert_eq!(code, 0, "{out}");
    let (out, _) = celeroot(
        &repo,
        &url,
        &["wait", "--rev", &second[..10], "--timeout", "5s"],
    );
    insta::assert_snapshot!(named(&out, &[(&second, "SECOND"), (&third, "THIRD")]), @r"
    SECOND is applied to cluster production, as part of THIRD.
    [exit status: 0]
    ");

    // Every verb left an event; `events -o json` is JSON lines with typed numbers.
    let kinds: Vec<String> = events(&redis)
        .into_iter()
        .filter_map(|e| e.get("kind").cloned())
        .collect();
    for k in ["suspend", "resume", "sync"] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing from {kinds:?}");
    }
    let (out, code) = celeroot(&repo, &url, &["events", "-o", "json", "--limit", "100"]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let sync = lines
        .iter()
        .find(|e| e["kind"] == "sync")
        .expect("a sync event");
    assert_eq!(sync["formatVersion"], 1);
    assert!(sync["request"].is_u64(), "{sync}");
    let suspend = lines
        .iter()
        .find(|e| e["kind"] == "suspend")
        .expect("a suspend event");
    assert_eq!(suspend["reason"], "incident 42");
    let (out, code) = celeroot(&repo, &url, &["events", "--since", "1h"]);
    assert_eq!(code, 0, "{out}");
    let header = out.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("TIME") && header.ends_with("DETAIL"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains(" suspend ") && l.ends_with("incident 42")),
        "{out}"
    );
}

#[test]
fn wait_fails_at_once_on_an_invalid_revision_and_sync_needs_a_daemon() {
    let (redis, mut repo, first, bare) = fleet();
    let url = redis.url();

    // No daemon: sync says so and changes nothing; wait times out.
    let (out, code) = celeroot(&repo, &url, &["sync"]);
    insta::assert_snapshot!(out, @r"
    ------- stderr -------
    error: no `celeroot watch` daemon leads cluster production; nothing was changed
      = hint: start one with `celeroot watch`, or apply by hand with `celeroot reconcile`
    [exit status: 1]
    ");
    assert_eq!(code, 1);
    let (out, code) = celeroot(&repo, &url, &["wait", "--rev", &first, "--timeout", "1s"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("was not applied within 1s (the live state has nothing)"),
        "{out}"
    );
    let (out, code) = celeroot(&repo, &url, &["wait", "--rev", "no-such-thing"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("--rev \"no-such-thing\" is not a commit id"),
        "{out}"
    );

    let mut d = started(&bare, &redis, &first, &["--interval", "200ms"]);
    repo.edit(
        "manifests/roles/webserver.yaml",
        "concurrency: 4",
        "concurrency: many",
    );
    let bad = repo.commit("broken");
    bare.push_from(&repo, "main");
    d.wait_for("the invalid head reported", WAIT, |d| {
        d.status()["invalidRevision"]["revision"].as_str() == Some(bad.as_str())
    });
    // HEAD is invalid here, so the cluster is named.
    let (out, code) = celeroot(
        &repo,
        &url,
        &[
            "wait",
            "--rev",
            &bad,
            "--timeout",
            "20s",
            "--cluster",
            "production",
        ],
    );
    assert_eq!(code, 1, "{out}");
    let out = named(&out, &[(&bad, "BAD")]);
    assert!(
        out.contains("error: BAD will not be applied: invalid: "),
        "{out}"
    );
    assert_eq!(d.applied().as_deref(), Some(first.as_str()));
}
