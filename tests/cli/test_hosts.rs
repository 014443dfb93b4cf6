//! `celeroot hosts test-connection` and the SSH layer, against real sshd hosts.

use std::time::Duration;

use celeroot::deploy::ssh::{run as ssh_run, ssh_args};
use celeroot::deploy::SshOptions;

use crate::common::sshd::SshLab;
use crate::common::{run, TestRepo};

fn lab_repo(lab: &SshLab) -> TestRepo {
    let mut repo = TestRepo::empty();
    for (path, text) in lab.manifests() {
        repo.write(&path, &text);
    }
    repo.commit("lab");
    repo
}

fn test_connection(repo: &TestRepo, lab: &SshLab, args: &[&str]) -> (String, i32) {
    let mut cmd = repo.cmd();
    cmd.args(["hosts", "test-connection"])
        .args(args)
        .arg("--known-hosts")
        .arg(&lab.known_hosts);
    run(cmd)
}

#[test]
fn every_host_answers_with_its_facts() {
    let lab = SshLab::start(3);
    let repo = lab_repo(&lab);
    let (out, code) = test_connection(&repo, &lab, &["--all"]);
    assert_eq!(code, 0, "{out}");
    for h in &lab.hosts {
        let row = out
            .lines()
            .find(|l| l.starts_with(&h.name))
            .unwrap_or_else(|| panic!("no row for {}:\n{out}", h.name));
        assert!(row.contains(&format!("@{}:{}", h.address, h.port)), "{row}");
        assert!(row.contains(" ok "), "{row}");
        assert!(row.contains("Linux"), "the kernel is reported: {row}");
    }
    assert!(out.contains("3 of 3 host(s) reachable."), "{out}");

    let (json, code) = test_connection(&repo, &lab, &["host-2", "-o", "json"]);
    assert_eq!(code, 0, "{json}");
    let doc: serde_json::Value =
        serde_json::from_str(json.split("[exit status").next().unwrap_or_default()).expect("JSON");
    let v = &doc["hosts"];
    assert_eq!(v[0]["host"], "host-2");
    assert_eq!(v[0]["status"], "ok");
    assert!(v[0]["facts"]["kernel"]
        .as_str()
        .is_some_and(|k| k.starts_with("Linux")));
    assert!(v[0]["facts"]["python"].is_string());
}

#[test]
fn unreachable_hosts_and_changed_keys_are_isolated() {
    let mut lab = SshLab::start(3);
    let repo = lab_repo(&lab);
    lab.hosts[1].stop();
    lab.hosts[2].change_host_key();
    let (out, code) = test_connection(&repo, &lab, &["--all", "-o", "json"]);
    assert_eq!(code, 1, "{out}");
    let doc: serde_json::Value =
        serde_json::from_str(out.split("[exit status").next().unwrap_or_default()).expect("JSON");
    let v = &doc["hosts"];
    assert_eq!(v[0]["status"], "ok", "{v}");
    assert_eq!(v[1]["status"], "unreachable", "{v}");
    assert_eq!(v[2]["status"], "host-key-changed", "{v}");
    assert!(v[2]["facts"].is_null(), "nothing ran on the impostor");
    assert!(
        v[2]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("HAS CHANGED"),
        "{v}"
    );
}

#[test]
fn unknown_host_keys_are_refused_unless_accepted() {
    let lab = SshLab::start(1);
    let repo = lab_repo(&lab);
    std::fs::write(&lab.known_hosts, "").expect("empty known_hosts");
    let (out, code) = test_connection(&repo, &lab, &["--all"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("host-key-unknown"), "{out}");
    let (out, code) = test_connection(&repo, &lab, &["--all", "--accept-new-host-keys"]);
    assert_eq!(code, 0, "{out}");
    let known = std::fs::read_to_string(&lab.known_hosts).expect("known_hosts");
    assert!(
        known.contains(lab.hosts[0].host_key.split(' ').nth(1).unwrap_or("?")),
        "the key was recorded: {known}"
    );
}

#[test]
fn naming_hosts_is_checked() {
    let lab = SshLab::start(1);
    let repo = lab_repo(&lab);
    let (out, code) = test_connection(&repo, &lab, &["host-l"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no host named \"host-l\""), "{out}");
    assert!(out.contains("did you mean \"host-1\"?"), "{out}");
    let (out, code) = test_connection(&repo, &lab, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("name the hosts to test, or pass --all"),
        "{out}"
    );
}

#[test]
fn hostile_remote_arguments_arrive_verbatim_and_execute_nothing() {
    let lab = SshLab::start(1);
    let repo = lab_repo(&lab);
    let git = git2::Repository::open(repo.root()).expect("open");
    let rev = celeroot::apply::load_revision(&git, "HEAD", "manifests").expect("compile");
    let host = &rev.compiled.state.hosts["host-1"];
    let canary = lab.dir.path().join("pwned");
    let c = canary.display().to_string();
    let hostile = vec![
        "a b".to_string(),
        "it's".to_string(),
        format!("; touch {c}"),
        format!("$(touch {c})"),
        format!("`touch {c}`"),
        format!("x' ; touch {c} ; echo '"),
        format!("\" && touch {c} && \""),
        "line1\nline2".to_string(),
        "--help".to_string(),
        "*".to_string(),
        "~".to_string(),
        "$HOME".to_string(),
        String::new(),
    ];
    let mut remote = vec!["printf".to_string(), "[%s]\\n".to_string()];
    remote.extend(hostile.iter().cloned());
    let opts = SshOptions {
        known_hosts: Some(lab.known_hosts.clone()),
        accept_new_host_keys: false,
        control_dir: None,
    };
    let out = ssh_run(&ssh_args(host, &opts, &remote), Duration::from_secs(30)).expect("ssh");
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    let want: String = hostile.iter().map(|h| format!("[{h}]\n")).collect();
    assert_eq!(
        out.stdout, want,
        "every argument arrives as exactly one word"
    );
    assert!(!canary.exists(), "nothing was executed");
}
