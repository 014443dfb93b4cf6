use crate::common::{celeroot_cmd, run, TestRepo};

#[test]
fn the_bundled_example_is_valid() {
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    let mut cmd = repo.cmd();
    cmd.arg("validate");
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "are valid: 16 file(s); cluster production, 3 role(s), 5 host(s), 7 schedule(s)"
        ),
        "{out}"
    );
}

#[test]
fn validate_reads_git_objects_not_the_dirty_work_tree() {
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    repo.edit(
        "manifests/hosts/web01.yaml",
        "address: 192.0.2.11",
        "address: not/an/address",
    );
    let mut head = repo.cmd();
    head.arg("validate");
    assert_eq!(run(head).1, 0, "HEAD is unaffected by the dirty work tree");
    let mut wt = repo.cmd();
    wt.args(["validate", "--worktree"]);
    let (out, code) = run(wt);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("--> manifests/hosts/web01.yaml:11:12"),
        "{out}"
    );
    assert!(
        out.contains("11 |   address: not/an/address"),
        "the source line is shown: {out}"
    );
}

#[test]
fn validate_an_older_revision() {
    let mut repo = TestRepo::with_example();
    repo.commit("good");
    repo.edit(
        "manifests/hosts/web01.yaml",
        "roles: [webserver, application]",
        "roles: [nope]",
    );
    repo.commit("bad");
    let mut bad = repo.cmd();
    bad.arg("validate");
    assert_eq!(run(bad).1, 1);
    let mut good = repo.cmd();
    good.args(["validate", "--rev", "HEAD~1"]);
    let (out, code) = run(good);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("manifests at HEAD~1 ("), "{out}");
}

#[test]
fn warnings_do_not_fail_validation() {
    let mut repo = TestRepo::with_example();
    repo.write(
        "manifests/schedules/nobody.yaml",
        "apiVersion: celeroot.io/v1\nkind: Schedule\nmetadata:\n  name: nobody\nspec:\n  every: 1h\n  task: ops.tasks.ping\n  targets:\n    - selector:\n        matchLabels:\n          env: staging\n",
    );
    repo.commit("selector that matches nothing");
    let mut cmd = repo.cmd();
    cmd.arg("validate");
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "warning: schedule \"nobody\": selector {\"env\": \"staging\"} matches no host"
        ),
        "{out}"
    );
    assert!(
        out.contains("--> manifests/schedules/nobody.yaml:9:7"),
        "{out}"
    );
    assert!(out.contains("; 1 warning(s)"), "{out}");
}

#[test]
fn github_actions_environment_turns_on_annotations() {
    let mut repo = TestRepo::with_example();
    repo.edit(
        "manifests/roles/webserver.yaml",
        "concurrency: 4",
        "concurrency: 0",
    );
    repo.commit("bad");
    let mut cmd = repo.cmd();
    cmd.arg("validate").env("GITHUB_ACTIONS", "true");
    let out = cmd.output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        "::error file=manifests/roles/webserver.yaml,line=9,col=16::invalid concurrency 0 (expected a number of worker processes from 1 to 1024)\n"
    );
}

#[test]
fn unknown_revision_is_an_error() {
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    let mut cmd = repo.cmd();
    cmd.args(["validate", "--rev", "no-such-branch"]);
    let (out, code) = run(cmd);
    assert_eq!(code, 1);
    assert!(
        out.contains("error: unknown revision `no-such-branch`"),
        "{out}"
    );
}

#[test]
fn missing_manifests_path_is_an_error() {
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    let mut cmd = repo.cmd();
    cmd.args(["validate", "--path", "config"]);
    let (out, code) = run(cmd);
    assert_eq!(code, 1);
    assert!(
        out.contains("error: manifests path `config` does not exist at HEAD ("),
        "{out}"
    );
}

#[test]
fn a_directory_that_is_not_a_repository_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = celeroot_cmd(dir.path());
    cmd.arg("validate");
    let (out, code) = run(cmd);
    assert_eq!(code, 1);
    assert!(out.contains("is not inside a git repository"), "{out}");
}

#[test]
fn oversized_files_are_rejected() {
    let mut repo = TestRepo::with_example();
    let big = format!("# {}\n", "x".repeat(celeroot::source::MAX_FILE_BYTES));
    repo.write("manifests/big.yaml", &big);
    repo.commit("big");
    let mut cmd = repo.cmd();
    cmd.arg("validate");
    let (out, code) = run(cmd);
    assert_eq!(code, 1);
    assert!(
        out.contains(
            "manifests/big.yaml: file is 1048579 bytes, larger than the 1048576-byte limit"
        ),
        "{out}"
    );
}

#[test]
fn files_that_are_not_utf8_are_rejected() {
    let mut repo = TestRepo::with_example();
    repo.write_bytes("manifests/latin1.yaml", b"# caf\xe9\n");
    repo.commit("latin1");
    let mut cmd = repo.cmd();
    cmd.arg("validate");
    let (out, code) = run(cmd);
    assert_eq!(code, 1);
    assert!(
        out.contains("manifests/latin1.yaml: file is not valid UTF-8"),
        "{out}"
    );
}

#[test]
fn multi_document_files_and_nested_directories_are_read() {
    let mut repo = TestRepo::with_example();
    let web01 = repo.read("manifests/hosts/web01.yaml");
    let web02 = repo.read("manifests/hosts/web02.yaml");
    repo.remove("manifests/hosts/web01.yaml");
    repo.remove("manifests/hosts/web02.yaml");
    repo.write(
        "manifests/fleet/frontends/web.yml",
        &format!("{web01}---\n{web02}"),
    );
    repo.commit("one file, two hosts");
    let mut cmd = repo.cmd();
    cmd.arg("validate");
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("5 host(s)"), "{out}");
}

#[test]
fn error_rendering() {
    // What an operator sees for a typical broken change: every problem, located, with the
    // source line, a caret and a suggestion, then one summary line. Commit ids are
    // reproducible: the harness commits with a fixed author and time.
    let mut repo = TestRepo::with_example();
    repo.edit(
        "manifests/hosts/web02.yaml",
        "address: 192.0.2.12",
        "adress: 192.0.2.12",
    );
    repo.edit(
        "manifests/hosts/web01.yaml",
        "roles: [webserver, application]",
        "roles: [webserver, aplication]",
    );
    repo.edit(
        "manifests/schedules/rotate-logs.yaml",
        "\"0 */6 * * *\"",
        "\"0 */6 * *\"",
    );
    repo.edit(
        "manifests/cluster.yaml",
        "timezone: Europe/Berlin",
        "timezone: Europe/Berln",
    );
    repo.commit("four mistakes");
    let mut cmd = repo.cmd();
    cmd.arg("validate");
    let (out, code) = run(cmd);
    assert_eq!(code, 1);
    insta::assert_snapshot!("validate_errors", out);
}

#[test]
fn a_task_no_selected_host_provides_is_a_warning_naming_every_selected_role() {
    let mut repo = TestRepo::with_example();
    let schedule = |name: &str, labels: &str| {
        format!("apiVersion: celeroot.io/v1\nkind: Schedule\nmetadata:\n  name: {name}\nspec:\n  every: 1h\n  task: dbops.tasks.vacuum\n  targets:\n    - selector:\n        matchLabels:\n{labels}")
    };
    // The first selected host (app01) runs only `application`; the second (db01)
    // runs `database`, which provides the task: no warning.
    repo.write(
        "manifests/schedules/vacuum-all.yaml",
        &schedule("vacuum-all", "          env: production\n"),
    );
    // Only web01 (webserver, application): neither provides it.
    repo.write(
        "manifests/schedules/vacuum-web.yaml",
        &schedule(
            "vacuum-web",
            "          zone: fra1-a\n          tier: frontend\n",
        ),
    );
    repo.commit("two selector schedules");
    let mut cmd = repo.cmd();
    cmd.arg("validate");
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: task \"dbops.tasks.vacuum\" is not provided by any targeted role (application, webserver)"),
        "{out}"
    );
    assert!(
        out.contains("--> manifests/schedules/vacuum-web.yaml:7:9"),
        "{out}"
    );
    assert!(!out.contains("vacuum-all.yaml"), "{out}");
    assert!(out.contains("; 1 warning(s)"), "{out}");
}
