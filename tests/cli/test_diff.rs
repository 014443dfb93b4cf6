use crate::common::{run, TestRepo};

const WEB03: &str = "apiVersion: celeroot.io/v1
kind: Host
metadata:
  name: web03
  labels:
    env: production
    zone: fra1-c
    tier: frontend
spec:
  address: 192.0.2.13
  roles: [webserver]
";

/// `celeroot init`, a commit, a realistic edit, and a second commit.
fn init_edit_commit() -> TestRepo {
    let mut repo = TestRepo::empty();
    let mut init = repo.cmd();
    init.args(["init", "."]);
    assert_eq!(run(init).1, 0);
    repo.commit("Initial celeroot config");
    repo.edit(
        "manifests/roles/webserver.yaml",
        "concurrency: 4",
        "concurrency: 6",
    );
    repo.write("manifests/hosts/web03.yaml", WEB03);
    repo.remove("manifests/schedules/cache-warmup.yaml");
    repo.edit(
        "manifests/schedules/security-updates.yaml",
        "\"30 3 * * sun\"",
        "\"0 4 * * sun\"",
    );
    repo.edit(
        "manifests/hosts/app01.yaml",
        "    tier: backend\n",
        "    tier: backend\n    replica: \"true\"\n",
    );
    repo.commit("Add web03, more web concurrency, retire cache warm-up");
    repo
}

fn diff(repo: &TestRepo, args: &[&str]) -> (String, i32) {
    let mut cmd = repo.cmd();
    cmd.arg("diff").args(args);
    run(cmd)
}

#[test]
fn text_plan_after_init_and_two_commits() {
    let repo = init_edit_commit();
    let (out, code) = diff(&repo, &["--from", "HEAD~1"]);
    assert_eq!(code, 2);
    insta::assert_snapshot!("diff_text", out);
}

#[test]
fn json_plan_after_init_and_two_commits() {
    let repo = init_edit_commit();
    let (out, code) = diff(&repo, &["--from", "HEAD~1", "-o", "json"]);
    assert_eq!(code, 2);
    let json_text = out.split("[exit status").next().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(json_text).expect("valid JSON");
    assert_eq!(v["formatVersion"], 1);
    assert_eq!(
        v["summary"],
        serde_json::json!({"add": 1, "change": 6, "remove": 1})
    );
    insta::assert_snapshot!("diff_json", out);
}

#[test]
fn markdown_plan_after_init_and_two_commits() {
    let repo = init_edit_commit();
    let (out, code) = diff(&repo, &["--from", "HEAD~1", "-o", "markdown"]);
    assert_eq!(code, 2);
    insta::assert_snapshot!("diff_markdown", out);
}

#[test]
fn no_changes_exits_0_in_every_format() {
    let repo = init_edit_commit();
    for fmt in ["text", "json", "markdown"] {
        let (out, code) = diff(&repo, &["--from", "HEAD", "--to", "HEAD", "-o", fmt]);
        assert_eq!(code, 0, "{fmt}: {out}");
    }
    let (out, _) = diff(&repo, &["--from", "HEAD"]);
    assert!(
        out.contains("No changes. Both revisions compile to the same desired state."),
        "{out}"
    );
}

#[test]
fn reformatting_without_meaning_is_not_a_change() {
    let mut repo = init_edit_commit();
    // Flow style instead of block style, reordered keys, a comment, Sunday as `0`.
    repo.edit(
        "manifests/hosts/web01.yaml",
        "roles: [webserver, application]",
        "roles:\n    - application   # order does not matter\n    - webserver",
    );
    repo.edit(
        "manifests/schedules/security-updates.yaml",
        "\"0 4 * * sun\"",
        "\"0  4 * * 0\"",
    );
    repo.commit("cosmetic");
    let (out, code) = diff(&repo, &["--from", "HEAD~1"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn worktree_is_compared_with_a_revision() {
    let repo = init_edit_commit();
    repo.edit(
        "manifests/roles/database.yaml",
        "concurrency: 1",
        "concurrency: 2",
    );
    let (out, code) = diff(&repo, &["--from", "HEAD", "--worktree"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("→ worktree"), "{out}");
    assert!(out.contains("~ Role/database"), "{out}");
    assert!(out.contains("affects 2 host(s): db01, db02"), "{out}");
}

#[test]
fn an_invalid_side_is_an_error_and_names_the_place() {
    let mut repo = init_edit_commit();
    repo.edit(
        "manifests/hosts/web03.yaml",
        "roles: [webserver]",
        "roles: [webservers]",
    );
    repo.commit("typo");
    let (out, code) = diff(&repo, &["--from", "HEAD~1"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("--> manifests/hosts/web03.yaml:11:11"),
        "{out}"
    );
    assert!(out.contains("did you mean \"webserver\"?"), "{out}");
    assert!(out.contains("manifests at HEAD ("), "{out}");
    // The old side being invalid is an error too.
    let (out, code) = diff(&repo, &["--from", "HEAD", "--to", "HEAD~1"]);
    assert_eq!(code, 1, "{out}");
}

#[test]
fn unknown_from_revision_is_an_error() {
    let repo = init_edit_commit();
    let (out, code) = diff(&repo, &["--from", "v9.9.9"]);
    assert_eq!(code, 1);
    assert!(out.contains("unknown revision `v9.9.9`"), "{out}");
}

#[test]
fn color_follows_the_flag_and_no_color() {
    let repo = init_edit_commit();
    let (plain, _) = diff(&repo, &["--from", "HEAD~1"]);
    assert!(
        !plain.contains('\u{1b}'),
        "NO_COLOR=1 is set by the harness"
    );
    let (colored, _) = diff(&repo, &["--from", "HEAD~1", "--color", "always"]);
    assert!(colored.contains("\u{1b}[32m+ Host/web03"), "{colored}");
    let mut cmd = repo.cmd();
    cmd.args(["diff", "--from", "HEAD~1"])
        .env_remove("NO_COLOR")
        .env("CLICOLOR_FORCE", "1");
    let (forced, _) = run(cmd);
    assert!(forced.contains('\u{1b}'), "CLICOLOR_FORCE colours a pipe");
}

#[test]
fn json_stays_valid_under_github_actions_with_warnings() {
    let mut repo = init_edit_commit();
    repo.write(
        "manifests/schedules/nobody.yaml",
        "apiVersion: celeroot.io/v1\nkind: Schedule\nmetadata:\n  name: nobody\nspec:\n  every: 1h\n  task: ops.tasks.ping\n  targets:\n    - selector:\n        matchLabels:\n          env: staging\n",
    );
    repo.commit("warning");
    let mut cmd = repo.cmd();
    cmd.args(["diff", "--from", "HEAD~1", "-o", "json"])
        .env("GITHUB_ACTIONS", "true");
    let out = cmd.output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is only JSON");
    assert_eq!(v["warnings"][0]["severity"], "warning");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("::warning file=manifests/schedules/nobody.yaml,line=9,col=7::"),
        "{stderr}"
    );
}

#[test]
fn errors_on_both_sides_are_all_reported() {
    let mut repo = init_edit_commit();
    repo.edit(
        "manifests/hosts/web03.yaml",
        "roles: [webserver]",
        "roles: [webservers]",
    );
    repo.commit("typo");
    repo.edit(
        "manifests/roles/database.yaml",
        "concurrency: 1",
        "concurrency: 0",
    );
    repo.commit("another");
    let (out, code) = diff(&repo, &["--from", "HEAD~1"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("--> manifests/hosts/web03.yaml:11:11"),
        "{out}"
    );
    assert!(
        out.contains("--> manifests/roles/database.yaml:8:16"),
        "{out}"
    );
    assert!(out.contains("manifests at HEAD~1 ("), "{out}");
}
