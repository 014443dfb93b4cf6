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

/// Every command's `--help`, the whole tree (issue 15): any change to a flag, a default
/// or a help text shows up in review as a change of this one snapshot.
#[test]
fn cli_reference() {
    use clap::CommandFactory;
    fn paths(cmd: &clap::Command, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(prefix.clone());
        let mut subs: Vec<&clap::Command> = cmd
            .get_subcommands()
            .filter(|s| s.get_name() != "help")
            .collect();
        subs.sort_by_key(|s| s.get_name().to_string());
        for s in subs {
            let mut p = prefix.clone();
            p.push(s.get_name().to_string());
            paths(s, p, out);
        }
    }
    let mut all_paths = Vec::new();
    paths(&celeroot::cli::Cli::command(), Vec::new(), &mut all_paths);
    let repo = TestRepo::empty();
    let mut all = String::new();
    for p in &all_paths {
        let mut cmd = repo.cmd();
        cmd.args(p).arg("--help").env("COLUMNS", "100");
        let (out, code) = run(cmd);
        assert_eq!(code, 0, "{p:?}: {out}");
        all.push_str(
            &format!("$ celeroot {} --help\n{out}\n", p.join(" "))
                .replace("celeroot  --help", "celeroot --help"),
        );
    }
    assert!(all_paths.len() > 30, "{} commands", all_paths.len());
    insta::assert_snapshot!("cli_reference", all);
}

/// A boolean flag's environment variable: empty (as a compose file or a systemd unit
/// leaves it) is false, not an error; a word that is no boolean is refused.
#[test]
fn empty_boolean_environment_variables_are_false() {
    let mut repo = TestRepo::with_example();
    repo.commit("a");
    for v in ["", "0", "false", "no", "1", "TRUE", "yes"] {
        let mut cmd = repo.cmd();
        cmd.args(["reconcile", "--dry-run"])
            .env("CELEROOT_SKIP_DEPLOY", v)
            .env("CELEROOT_REDIS_URL", "redis://127.0.0.1:1/0");
        let (out, code) = run(cmd);
        assert_eq!(code, 1, "{v:?}: {out}");
        assert!(
            out.contains("cannot connect to Redis"),
            "{v:?} parses: {out}"
        );
    }
    let mut cmd = repo.cmd();
    cmd.args(["reconcile", "--dry-run"])
        .env("CELEROOT_SKIP_DEPLOY", "maybe");
    let (out, code) = run(cmd);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("invalid value 'maybe' for '--skip-deploy': \"maybe\" is not a boolean"),
        "{out}"
    );
}
