//! Issue 19, part 5: environments, one directory per cluster under `environments/`:
//! `--env NAME` picks one for every command, `env create NAME --clone ENV` scaffolds one,
//! and clusters sharing a Redis server stay apart.

use crate::common::redis::RedisServer;
use crate::common::{run, TestRepo};

/// A repository with the example as `environments/production/`.
fn with_production() -> TestRepo {
    let mut repo = TestRepo::empty();
    for (path, text) in celeroot::init::EXAMPLE_MANIFESTS {
        let rel = path.strip_prefix("manifests/").unwrap_or(path);
        repo.write(&format!("environments/production/{rel}"), text);
    }
    repo.commit("production");
    repo
}

fn celeroot(repo: &TestRepo, url: &str, args: &[&str]) -> (String, i32) {
    let mut cmd = repo.cmd();
    cmd.args(args).env("CELEROOT_REDIS_URL", url);
    run(cmd)
}

#[test]
fn env_picks_a_directory_and_create_clones_one() {
    let redis = RedisServer::start();
    let db0 = redis.url();
    let db1 = db0.replace("/0", "/1");
    let repo = with_production();

    let (out, code) = celeroot(&repo, &db0, &["--env", "production", "validate"]);
    assert_eq!(code, 0, "{out}");
    // Without --env the default manifests/ directory is not there.
    let (out, code) = celeroot(&repo, &db0, &["validate"]);
    assert_eq!(code, 1, "{out}");

    let (out, code) = celeroot(
        &repo,
        &db0,
        &[
            "env",
            "create",
            "staging",
            "--clone",
            "production",
            "--commit",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("+ created environments/staging/cluster.yaml"),
        "{out}"
    );
    assert!(out.contains("committed "), "{out}");
    let cluster = repo.read("environments/staging/cluster.yaml");
    assert!(cluster.contains("name: staging"), "{cluster}");
    assert!(!cluster.contains("name: production"), "{cluster}");
    assert_eq!(
        repo.read("environments/staging/roles/application.yaml"),
        repo.read("environments/production/roles/application.yaml")
    );
    let (out, code) = celeroot(&repo, &db0, &["env", "list"]);
    assert_eq!(code, 0, "{out}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("[exit"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["production", "production", "environments/production/"],
            vec!["staging", "staging", "environments/staging/"],
        ],
        "{out}"
    );

    // Each environment is its own cluster, in its own database.
    let (out, code) = celeroot(
        &repo,
        &db0,
        &["--env", "production", "reconcile", "--skip-deploy"],
    );
    assert_eq!(code, 0, "{out}");
    let (out, code) = celeroot(
        &repo,
        &db1,
        &["--env", "staging", "reconcile", "--skip-deploy"],
    );
    assert_eq!(code, 0, "{out}");
    let mut cmd = repo.cmd();
    cmd.args(["status"])
        .env("CELEROOT_REDIS_URL", &db1)
        .env("CELEROOT_ENV", "staging");
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("staging"), "{out}");
    // Not in one database: they would share queue names and RedBeat's keys.
    let (out, code) = celeroot(
        &repo,
        &db0,
        &["--env", "staging", "reconcile", "--skip-deploy"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("this Redis database holds the live state of cluster \"production\""),
        "{out}"
    );

    // A change to one environment: its plan shows it, the other's is empty.
    repo.edit(
        "environments/staging/roles/application.yaml",
        "concurrency: 8",
        "concurrency: 2",
    );
    let mut repo = repo;
    repo.commit("staging: 2 workers");
    let (out, code) = celeroot(
        &repo,
        &db0,
        &["--env", "staging", "diff", "--from", "HEAD~1"],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("Role/application"), "{out}");
    let (out, code) = celeroot(
        &repo,
        &db0,
        &["--env", "production", "diff", "--from", "HEAD~1"],
    );
    assert_eq!(code, 0, "{out}");
    // The pull-request check: one plan per environment the change touches.
    let (out, code) = celeroot(&repo, &db0, &["diff", "--from", "HEAD~1", "--every-env"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("celeroot plan for cluster staging:"), "{out}");
    assert!(!out.contains("plan for cluster production"), "{out}");
    assert!(
        out.contains("Environments without changes: production."),
        "{out}"
    );
    let (out, code) = celeroot(
        &repo,
        &db0,
        &["diff", "--from", "HEAD~1", "--every-env", "-o", "markdown"],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("### celeroot plan for `staging`"), "{out}");
    // The commit that created staging: everything in it is new.
    let (out, code) = celeroot(
        &repo,
        &db0,
        &[
            "diff",
            "--from",
            "HEAD~2",
            "--to",
            "HEAD~1",
            "--every-env",
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 2, "{out}");
    let json = &out[..out.find("[exit").unwrap_or(out.len())];
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["unchanged"], serde_json::json!(["production"]), "{out}");
    assert_eq!(v["environments"][0]["cluster"], "staging", "{out}");
    // Without --from it has no meaning (each environment has its own Redis).
    let (out, code) = celeroot(&repo, &db0, &["diff", "--every-env"]);
    assert_eq!(code, 1, "{out}");
}

#[test]
fn bad_environment_names_and_clones_write_nothing() {
    let redis = RedisServer::start();
    let url = redis.url();
    let repo = with_production();
    let (out, code) = celeroot(
        &repo,
        &url,
        &["env", "create", "production", "--clone", "production"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("environments/production/ exists already"),
        "{out}"
    );
    let (out, code) = celeroot(
        &repo,
        &url,
        &["env", "create", "staging", "--clone", "nope"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("there is no environment nope: environments/nope/ does not exist"),
        "{out}"
    );
    assert!(out.contains("the change was not written"), "{out}");
    assert!(!repo.root().join("environments/staging").exists());
    let (out, code) = celeroot(
        &repo,
        &url,
        &["env", "create", "Bad_Name", "--clone", "production"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("invalid environment name \"Bad_Name\""),
        "{out}"
    );
    let (out, code) = celeroot(&repo, &url, &["--env", "../etc", "validate"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("--env: invalid environment name \"../etc\""),
        "{out}"
    );
    let (out, code) = celeroot(
        &repo,
        &url,
        &["--env", "production", "--path", "x", "validate"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot be used with"), "{out}");
    // A clone that would not validate is refused: an environment without a Cluster.
    repo.write(
        "environments/empty/roles/r.yaml",
        "apiVersion: celeroot.io/v1\nkind: Role\nmetadata:\n  name: r\nspec: {}\n",
    );
    let (out, code) = celeroot(&repo, &url, &["env", "create", "other", "--clone", "empty"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("the repository has no Cluster manifest"),
        "{out}"
    );
    assert!(!repo.root().join("environments/other").exists());
}
