use crate::common::{run, TestRepo};

#[test]
fn usage_errors_exit_1_not_2() {
    // 2 means "changes" for diff, so argument errors must not use clap's default of 2.
    let repo = TestRepo::empty();
    let mut cmd = repo.cmd();
    cmd.args(["diff", "--frm", "HEAD~1"]);
    let (out, code) = run(cmd);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unexpected argument '--frm'"), "{out}");
    assert!(
        out.contains("--from"),
        "clap suggests the right flag: {out}"
    );
}

#[test]
fn help_and_version_exit_0() {
    let repo = TestRepo::empty();
    for args in [vec!["--help"], vec!["diff", "--help"], vec!["--version"]] {
        let mut cmd = repo.cmd();
        cmd.args(&args);
        let (out, code) = run(cmd);
        assert_eq!(code, 0, "{args:?}: {out}");
    }
}

#[test]
fn a_bad_celeroot_now_is_reported() {
    let mut repo = TestRepo::with_example();
    repo.commit("a");
    let mut cmd = repo.cmd();
    cmd.args(["diff", "--from", "HEAD"])
        .env("CELEROOT_NOW", "yesterday");
    let (out, code) = run(cmd);
    assert_eq!(code, 1);
    assert!(
        out.contains("CELEROOT_NOW=\"yesterday\" is not an RFC 3339 timestamp"),
        "{out}"
    );
}

#[test]
fn help_texts() {
    // The help tree is part of the interface: changes show up in review.
    let repo = TestRepo::empty();
    let mut all = String::new();
    for args in [
        vec!["--help"],
        vec!["validate", "--help"],
        vec!["diff", "--help"],
        vec!["schema", "--help"],
        vec!["init", "--help"],
    ] {
        let mut cmd = repo.cmd();
        cmd.args(&args).env("COLUMNS", "100");
        let (out, code) = run(cmd);
        assert_eq!(code, 0);
        all.push_str(&format!("$ celeroot {}\n{out}\n", args.join(" ")));
    }
    insta::assert_snapshot!("help", all);
}
