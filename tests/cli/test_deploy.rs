//! `celeroot deploy` against real sshd hosts (tests/cli/common/sshd.rs): each host has its
//! own address, host key and target directory; transfers are real archives over real ssh.

use std::path::PathBuf;

use crate::common::redis::RedisServer;
use crate::common::sshd::SshLab;
use crate::common::{run, TestRepo};

/// The lab's hosts with a deployment each into its own target directory, commands that
/// need no systemd or uv, and `extra` lines appended to the Cluster's `deployment`.
fn repo_for(lab: &SshLab, cluster_extra: &str, host_extra: &dyn Fn(usize) -> String) -> TestRepo {
    let mut repo = TestRepo::empty();
    let setup = if cluster_extra.contains("setupCommand:") {
        ""
    } else {
        "    setupCommand: [\"true\"]\n"
    };
    repo.write(
        "manifests/cluster.yaml",
        &format!(
            "apiVersion: celeroot.io/v1\nkind: Cluster\nmetadata:\n  name: lab\nspec:\n  ssh:\n    user: {}\n    identityFile: {}\n    connectTimeout: 3s\n  deployment:\n{setup}    restartCommand: [\"true\"]\n    healthCheck:\n      command: [\"true\"]\n      timeout: 10s\n{cluster_extra}",
            SshLab::user(),
            lab.key.display()
        ),
    );
    repo.write(
        "manifests/roles/worker.yaml",
        "apiVersion: celeroot.io/v1\nkind: Role\nmetadata:\n  name: worker\nspec:\n  concurrency: 3\n",
    );
    for (i, h) in lab.hosts.iter().enumerate() {
        repo.write(
            &format!("manifests/hosts/{}.yaml", h.name),
            &format!(
                "apiVersion: celeroot.io/v1\nkind: Host\nmetadata:\n  name: {}\nspec:\n  address: {}\n  roles: [worker]\n  ssh:\n    port: {}\n  deployment:\n    targetDir: {}\n{}",
                h.name,
                h.address,
                h.port,
                target(lab, i).display(),
                host_extra(i)
            ),
        );
    }
    for i in 0..20 {
        repo.write(&format!("tasks/mod{i:02}.py"), &format!("VALUE = {i}\n"));
    }
    repo.write("tasks/__init__.py", "");
    repo.write(
        "pyproject.toml",
        "[project]\nname = \"lab-tasks\"\nversion = \"0\"\n",
    );
    repo.write("README.md", "not shipped\n");
    repo.commit("lab");
    repo
}

fn target(lab: &SshLab, i: usize) -> PathBuf {
    lab.dir.path().join(format!("target-{}", i + 1))
}

fn deploy(repo: &TestRepo, lab: &SshLab, args: &[&str]) -> (serde_json::Value, i32, String) {
    let mut cmd = repo.cmd();
    cmd.arg("deploy")
        .args(args)
        .args(["-o", "json", "--known-hosts"])
        .arg(&lab.known_hosts);
    let out = cmd.output().expect("run celeroot deploy");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (
        v,
        out.status.code().unwrap_or(-1),
        format!("{stdout}\n{stderr}"),
    )
}

fn current(lab: &SshLab, i: usize) -> Option<String> {
    std::fs::read_link(target(lab, i).join("current"))
        .ok()
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
}

fn releases(lab: &SshLab, i: usize) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(target(lab, i).join("releases"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn outcome<'a>(v: &'a serde_json::Value, host: &str) -> &'a serde_json::Value {
    v["hosts"]
        .as_array()
        .and_then(|hs| hs.iter().find(|h| h["host"] == host))
        .unwrap_or(&serde_json::Value::Null)
}

fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(d: &std::path::Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                let meta = std::fs::symlink_metadata(&p).map(|m| (m.len(), m.modified().ok()));
                out.push(format!("{} {meta:?}", p.display()));
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&p, out);
                }
            }
        }
    }
    walk(dir, &mut out);
    out.sort();
    out
}

#[test]
fn first_deploy_then_a_one_file_change_sends_only_that_file() {
    let lab = SshLab::start(3);
    let mut repo = repo_for(&lab, "", &|_| String::new());
    let redis = RedisServer::start();
    let mut cmd = repo.cmd();
    cmd.args(["deploy", "--known-hosts"])
        .arg(&lab.known_hosts)
        .env("CELEROOT_REDIS_URL", redis.url());
    let (text, code) = run(cmd);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("3 deployed, 0 up to date, 0 rolled back, 0 failed, 0 skipped"),
        "{text}"
    );
    let first = current(&lab, 0).expect("current release");
    assert!(first.starts_with("r-"), "{first}");
    for i in 0..3 {
        assert_eq!(current(&lab, i).as_deref(), Some(first.as_str()));
        let rel = target(&lab, i).join("current");
        assert_eq!(
            std::fs::read_to_string(rel.join("tasks/mod07.py")).expect("shipped"),
            "VALUE = 7\n"
        );
        assert!(rel.join("pyproject.toml").is_file());
        assert!(
            !rel.join("README.md").exists(),
            "only deployment.paths are shipped"
        );
        let env = std::fs::read_to_string(target(&lab, i).join("shared/worker.env")).expect("env");
        assert!(
            env.contains(&format!(
                "CELEROOT_QUEUES=worker,celeroot.host.host-{}\n",
                i + 1
            )),
            "{env}"
        );
        assert!(env.contains("CELEROOT_CONCURRENCY=3\n"), "{env}");
        let unit = std::fs::read_to_string(target(&lab, i).join("shared/celeroot-worker.service"))
            .expect("unit");
        assert!(
            unit.contains(&format!(
                "ExecStart=/usr/local/bin/celeroot agent --host host-{} --cluster lab --release-dir ",
                i + 1
            )),
            "{unit}"
        );
        // Issue 14, finding 6: the agent and worker run as an unprivileged user in a
        // sandbox that may write only the target directory.
        let t = target(&lab, i).display().to_string();
        assert!(
            unit.contains(&format!(
                "User=celeroot\nGroup=celeroot\nNoNewPrivileges=yes\nProtectSystem=strict\nReadWritePaths={t}\nPrivateTmp=yes\nProtectHome=yes\n"
            )),
            "{unit}"
        );
    }
    let deployed: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg("celeroot:{lab}:deployed")
        .query(&mut redis.conn())
        .expect("HGETALL");
    assert_eq!(deployed.len(), 3);
    assert!(
        deployed["host-2"].contains(&format!("\"release\":\"{first}\"")),
        "{deployed:?}"
    );

    // Nothing changed: every host is up to date and nothing is sent.
    let (v, code, out) = deploy(&repo, &lab, &[]);
    assert_eq!(code, 0, "{out}");
    for i in 1..=3 {
        let h = outcome(&v, &format!("host-{i}"));
        assert_eq!(h["outcome"], "up-to-date", "{out}");
        assert_eq!(h["bytesSent"], 0);
    }

    // One file changes: one file crosses the network per host; the rest is hard-linked.
    repo.write("tasks/mod13.py", "VALUE = 1300\n");
    repo.commit("mod13");
    let (v, code, out) = deploy(&repo, &lab, &[]);
    assert_eq!(code, 0, "{out}");
    let second = current(&lab, 0).expect("current");
    assert_ne!(second, first);
    for i in 0..3 {
        let h = outcome(&v, &format!("host-{}", i + 1));
        assert_eq!(h["outcome"], "deployed", "{out}");
        assert_eq!(
            h["filesSent"], 2,
            "only the changed file and the checksum list: {out}"
        );
        assert_eq!(h["previous"], first.as_str());
        let t = target(&lab, i);
        assert_eq!(
            std::fs::read_to_string(t.join("current/tasks/mod13.py")).expect("new"),
            "VALUE = 1300\n"
        );
        use std::os::unix::fs::MetadataExt;
        let ino = |rel: &str| {
            std::fs::metadata(t.join(rel))
                .map(|m| m.ino())
                .expect("inode")
        };
        assert_eq!(
            ino(&format!("releases/{first}/tasks/mod01.py")),
            ino(&format!("releases/{second}/tasks/mod01.py")),
            "unchanged files are hard links to the previous release"
        );
        assert_eq!(releases(&lab, i), {
            let mut r = vec![first.clone(), second.clone()];
            r.sort();
            r
        });
    }
}

/// Issue 18, target 6: a host gets an archive of only what differs from its current
/// release (content, executable bit, symbolic links, removals) and hard-links the rest;
/// a file of the current release changed on the host fails the check of every file
/// against the release's checksums, and the whole release is sent instead.
#[test]
fn a_deploy_sends_what_changed_links_the_rest_and_heals_a_file_changed_on_the_host() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let lab = SshLab::start(1);
    let mut repo = repo_for(&lab, "", &|_| String::new());
    std::os::unix::fs::symlink("mod01.py", repo.root().join("tasks/alias.py")).expect("symlink");
    repo.write("tasks/run.sh", "#!/bin/sh\necho run\n");
    repo.commit("a link and a script");
    let (v, code, out) = deploy(&repo, &lab, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(outcome(&v, "host-1")["outcome"], "deployed", "{out}");
    let first = current(&lab, 0).expect("current");
    let t = target(&lab, 0);
    let mode = |rel: &str| {
        std::fs::metadata(t.join(rel))
            .map(|m| m.permissions().mode() & 0o777)
            .expect("mode")
    };
    let ino = |rel: &str| {
        std::fs::metadata(t.join(rel))
            .map(|m| m.ino())
            .expect("inode")
    };
    assert_eq!(mode(&format!("releases/{first}/tasks/run.sh")), 0o644);

    // One commit: a changed file, a removed one, a mode change, a link pointed elsewhere.
    repo.write("tasks/mod03.py", "VALUE = 303\n");
    repo.remove("tasks/mod04.py");
    let script = repo.root().join("tasks/run.sh");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::remove_file(repo.root().join("tasks/alias.py")).expect("rm link");
    std::os::unix::fs::symlink("mod05.py", repo.root().join("tasks/alias.py")).expect("symlink");
    repo.commit("change, remove, chmod, relink");
    let (v, code, out) = deploy(&repo, &lab, &[]);
    assert_eq!(code, 0, "{out}");
    let h = outcome(&v, "host-1");
    assert_eq!(h["outcome"], "deployed", "{out}");
    assert_eq!(
        h["filesSent"], 3,
        "mod03.py, run.sh (its mode changed) and the checksum list: {out}"
    );
    let second = current(&lab, 0).expect("current");
    assert_ne!(second, first);
    let cur = |rel: &str| format!("releases/{second}/{rel}");
    assert_eq!(
        std::fs::read_to_string(t.join(cur("tasks/mod03.py"))).expect("mod03"),
        "VALUE = 303\n"
    );
    assert!(!t.join(cur("tasks/mod04.py")).exists(), "removed in git");
    assert_eq!(mode(&cur("tasks/run.sh")), 0o755);
    assert_eq!(
        mode(&format!("releases/{first}/tasks/run.sh")),
        0o644,
        "the previous release keeps its own copy"
    );
    assert_eq!(
        std::fs::read_link(t.join(cur("tasks/alias.py"))).expect("link"),
        PathBuf::from("mod05.py")
    );
    assert_eq!(
        ino(&format!("releases/{first}/tasks/mod01.py")),
        ino(&cur("tasks/mod01.py")),
        "unchanged files are hard links to the previous release"
    );
    assert!(
        !t.join(".incoming").exists() && !t.join(format!("releases/{second}.partial")).exists(),
        "nothing of the transfer is left behind"
    );

    // Someone edits a file of the running release on the host; the next deploy must not
    // carry the edit into the new release through a hard link.
    let edited = t.join(cur("tasks/mod02.py"));
    std::fs::write(&edited, "VALUE = 'edited on the host'\n").expect("edit on the host");
    repo.write("tasks/mod06.py", "VALUE = 606\n");
    repo.commit("mod06");
    let (v, code, out) = deploy(&repo, &lab, &[]);
    assert_eq!(code, 0, "{out}");
    let h = outcome(&v, "host-1");
    assert_eq!(h["outcome"], "deployed", "{out}");
    let third = current(&lab, 0).expect("current");
    let rel3 = |rel: &str| t.join(format!("releases/{third}/{rel}"));
    assert_eq!(
        std::fs::read_to_string(rel3("tasks/mod02.py")).expect("mod02"),
        "VALUE = 2\n",
        "the file is healed from git"
    );
    assert_eq!(
        std::fs::read_to_string(rel3("tasks/mod06.py")).expect("mod06"),
        "VALUE = 606\n"
    );
    assert!(
        h["filesSent"].as_u64().unwrap_or(0) > 20,
        "after the failed check the whole release was sent: {out}"
    );
}

#[test]
fn a_failing_health_check_rolls_that_host_back_and_the_others_proceed() {
    let lab = SshLab::start(3);
    let broken_check = |i: usize| {
        if i == 1 {
            "    healthCheck:\n      command: [test, \"!\", -e, tasks/broken.py]\n".to_string()
        } else {
            String::new()
        }
    };
    let mut repo = repo_for(
        &lab,
        "    strategy:\n      failureBudget: 1\n",
        &broken_check,
    );
    let (_, code, out) = deploy(&repo, &lab, &[]);
    assert_eq!(code, 0, "{out}");
    let first = current(&lab, 1).expect("current");

    repo.write("tasks/broken.py", "raise SystemExit(1)\n");
    let new_commit = repo.commit("break host-2's health check");
    let (v, code, out) = deploy(&repo, &lab, &[]);
    assert_eq!(code, 1, "{out}");
    let h2 = outcome(&v, "host-2");
    assert_eq!(h2["outcome"], "rolled-back", "{out}");
    assert!(
        h2["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("health check failed"),
        "{out}"
    );
    assert_eq!(
        current(&lab, 1).as_deref(),
        Some(first.as_str()),
        "host-2 is back on the previous release"
    );
    for (i, name) in [(0, "host-1"), (2, "host-3")] {
        assert_eq!(outcome(&v, name)["outcome"], "deployed", "{out}");
        assert_ne!(current(&lab, i).as_deref(), Some(first.as_str()));
    }
    assert!(
        v["stopped"].is_null(),
        "one failure is within the budget: {out}"
    );
    assert_eq!(v["revision"], new_commit.as_str());
}

#[test]
fn a_failing_canary_stops_the_rollout() {
    let lab = SshLab::start(3);
    let canary_check = |i: usize| {
        if i == 0 {
            "    healthCheck:\n      command: [test, \"!\", -e, tasks/broken.py]\n".to_string()
        } else {
            String::new()
        }
    };
    let mut repo = repo_for(
        &lab,
        "    strategy:\n      canary: 1\n      maxParallel: 1\n      failureBudget: 5\n",
        &canary_check,
    );
    let (_, code, out) = deploy(&repo, &lab, &[]);
    assert_eq!(code, 0, "{out}");
    let first: Vec<Option<String>> = (0..3).map(|i| current(&lab, i)).collect();

    repo.write("tasks/broken.py", "raise SystemExit(1)\n");
    repo.commit("broken");
    let (v, code, out) = deploy(&repo, &lab, &[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(outcome(&v, "host-1")["outcome"], "rolled-back", "{out}");
    assert_eq!(outcome(&v, "host-1")["canary"], true);
    for name in ["host-2", "host-3"] {
        assert_eq!(outcome(&v, name)["outcome"], "skipped", "{out}");
    }
    assert_eq!(v["stopped"], "canary host-1 failed");
    // Piped, progress is plain lines: the announcement, then each host exactly once (the
    // rolled-back canary and the skipped hosts too); no bar, no escape sequences.
    let release = v["release"].as_str().unwrap_or_default();
    assert!(
        out.contains(&format!(
            "Deploying release {release} to 3 host(s), 1 at a time, after 1 canary host(s) one by one…"
        )),
        "{out}"
    );
    for name in ["host-1", "host-2", "host-3"] {
        let lines = out
            .lines()
            .filter(|l| l.starts_with(&format!("{name}: ")))
            .count();
        assert_eq!(lines, 1, "{name} is reported once: {out}");
    }
    assert!(!out.contains('\u{1b}'), "{out}");
    let after: Vec<Option<String>> = (0..3).map(|i| current(&lab, i)).collect();
    assert_eq!(after, first, "every host still runs the previous release");
}

#[test]
fn unreachable_hosts_and_changed_host_keys_are_isolated() {
    let mut lab = SshLab::start(3);
    let repo = repo_for(&lab, "    strategy:\n      failureBudget: 2\n", &|_| {
        String::new()
    });
    lab.hosts[1].stop();
    lab.hosts[2].change_host_key();
    let (v, code, out) = deploy(&repo, &lab, &[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(outcome(&v, "host-1")["outcome"], "deployed", "{out}");
    let h2 = outcome(&v, "host-2");
    assert_eq!(h2["outcome"], "failed");
    assert!(
        h2["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("unreachable"),
        "{out}"
    );
    assert!(
        h2["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("after 3 attempts"),
        "{out}"
    );
    let h3 = outcome(&v, "host-3");
    assert_eq!(h3["outcome"], "failed");
    assert!(
        h3["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("host-key-changed"),
        "{out}"
    );
    assert!(
        !target(&lab, 2).exists(),
        "nothing was written on the host with the changed key"
    );
    assert!(current(&lab, 0).is_some());
}

#[test]
fn old_releases_are_pruned() {
    let lab = SshLab::start(1);
    let mut repo = repo_for(&lab, "    keepReleases: 2\n", &|_| String::new());
    let mut ids = Vec::new();
    for n in 0..4 {
        repo.write("tasks/mod00.py", &format!("VALUE = {n}\n"));
        repo.commit(&format!("change {n}"));
        let (v, code, out) = deploy(&repo, &lab, &[]);
        assert_eq!(code, 0, "{out}");
        ids.push(current(&lab, 0).expect("current"));
        if n >= 2 {
            assert_eq!(
                outcome(&v, "host-1")["pruned"].as_array().map(Vec::len),
                Some(1),
                "{out}"
            );
        }
    }
    let mut want = ids[2..].to_vec();
    want.sort();
    assert_eq!(releases(&lab, 0), want);
}

#[test]
fn check_reports_without_changing_anything() {
    let lab = SshLab::start(2);
    let mut repo = repo_for(&lab, "", &|_| String::new());
    let (v, code, out) = deploy(&repo, &lab, &["--check"]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(outcome(&v, "host-1")["outcome"], "out-of-date");
    assert!(!target(&lab, 0).exists(), "--check wrote nothing: {out}");
    let (_, code, out) = deploy(&repo, &lab, &[]);
    assert_eq!(code, 0, "{out}");
    repo.write("tasks/mod05.py", "VALUE = 55\n");
    repo.commit("change");
    let before = (listing(&target(&lab, 0)), listing(&target(&lab, 1)));
    let (v, code, out) = deploy(&repo, &lab, &["--check"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        outcome(&v, "host-2")["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("git wants"),
        "{out}"
    );
    assert_eq!(
        (listing(&target(&lab, 0)), listing(&target(&lab, 1))),
        before,
        "--check changed nothing"
    );
    let (_, code, out) = deploy(&repo, &lab, &["--host", "host-1"]);
    assert_eq!(code, 0, "{out}");
    let (v, code, out) = deploy(&repo, &lab, &["--check"]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(outcome(&v, "host-1")["outcome"], "up-to-date");
    assert_eq!(outcome(&v, "host-2")["outcome"], "out-of-date");
}

#[test]
fn hostile_command_arguments_are_passed_verbatim() {
    let lab = SshLab::start(1);
    // No `/` in it: cp creates it in the release directory, where the command runs.
    let weird = "name with 'quotes'; touch pwned; $(touch pwned) `touch pwned` \"x\"".to_string();
    let yaml_weird = weird.replace('\\', "\\\\").replace('"', "\\\"");
    let repo = repo_for(
        &lab,
        &format!("    setupCommand: [cp, /dev/null, \"{yaml_weird}\"]\n"),
        &|_| String::new(),
    );
    let (_, code, out) = deploy(&repo, &lab, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        target(&lab, 0).join("current").join(&weird).is_file(),
        "the argument arrived as one file name"
    );
    assert!(
        !target(&lab, 0).join("current/pwned").exists(),
        "nothing was executed"
    );
}

#[test]
fn selecting_hosts_and_roles_is_checked() {
    let lab = SshLab::start(1);
    let repo = repo_for(&lab, "", &|_| String::new());
    let (_, code, out) = deploy(&repo, &lab, &["--host", "host-9"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no host named \"host-9\""), "{out}");
    assert!(out.contains("did you mean \"host-1\"?"), "{out}");
    let (_, code, out) = deploy(&repo, &lab, &["--role", "workers"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("did you mean \"worker\"?"), "{out}");
    let (v, code, out) = deploy(&repo, &lab, &["--role", "worker", "--check"]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(v["hosts"].as_array().map(Vec::len), Some(1));
}

#[test]
fn reconcile_brings_a_new_host_up_and_skip_deploy_opts_out() {
    let lab = SshLab::start(2);
    let mut repo = repo_for(&lab, "", &|_| String::new());
    let redis = RedisServer::start();
    let host2 = repo.read("manifests/hosts/host-2.yaml");
    repo.remove("manifests/hosts/host-2.yaml");
    repo.commit("only host-1");
    let reconcile = |repo: &TestRepo, extra: &[&str]| {
        let mut cmd = repo.cmd();
        cmd.arg("reconcile")
            .args(extra)
            .arg("--known-hosts")
            .arg(&lab.known_hosts)
            .env("CELEROOT_REDIS_URL", redis.url());
        run(cmd)
    };
    let (out, code) = reconcile(&repo, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Applied "), "{out}");
    assert!(out.contains("1 deployed, 0 up to date"), "{out}");
    assert!(current(&lab, 0).is_some());
    assert!(!target(&lab, 1).exists());

    // A new Host manifest: one reconcile registers it and ships the release to it.
    repo.write("manifests/hosts/host-2.yaml", &host2);
    repo.commit("add host-2");
    let (out, code) = reconcile(&repo, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 deployed, 1 up to date"), "{out}");
    assert_eq!(current(&lab, 1), current(&lab, 0));

    // --skip-deploy: Redis moves, hosts do not.
    let before = current(&lab, 0);
    repo.write("tasks/mod03.py", "VALUE = 33\n");
    repo.commit("change");
    let (out, code) = reconcile(&repo, &["--skip-deploy", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("\"deploy\""), "{out}");
    assert_eq!(current(&lab, 0), before);
    let (v, code, out) = deploy(&repo, &lab, &["--check"]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(outcome(&v, "host-1")["outcome"], "out-of-date");
    // Drift shows it too: the last recorded deploy is not what the live state wants.
    let mut cmd = repo.cmd();
    cmd.args(["drift", "-o", "json"])
        .env("CELEROOT_REDIS_URL", redis.url());
    let (out, code) = run(cmd);
    assert_eq!(code, 2, "{out}");
    let json = out.split("[exit status").next().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(json).expect("drift JSON");
    let kinds: Vec<(String, String)> = v["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            (
                h["host"].as_str().unwrap_or_default().to_string(),
                h["kind"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for host in ["host-1", "host-2"] {
        assert!(
            kinds.contains(&(host.to_string(), "not-deployed".to_string())),
            "{kinds:?}"
        );
    }
}

#[test]
fn a_health_check_that_hangs_times_out_and_rolls_back() {
    let lab = SshLab::start(1);
    let mut repo = repo_for(&lab, "", &|_| String::new());
    let (_, code, out) = deploy(&repo, &lab, &[]);
    assert_eq!(code, 0, "{out}");
    let first = current(&lab, 0);
    repo.edit(
        "manifests/hosts/host-1.yaml",
        "  deployment:\n",
        "  deployment:\n    healthCheck:\n      command: [sleep, \"30\"]\n      timeout: 1s\n",
    );
    repo.write("tasks/mod00.py", "VALUE = -1\n");
    repo.commit("a health check that hangs");
    let started = std::time::Instant::now();
    let (v, code, out) = deploy(&repo, &lab, &[]);
    assert_eq!(code, 1, "{out}");
    let h = outcome(&v, "host-1");
    assert_eq!(h["outcome"], "rolled-back", "{out}");
    assert!(
        h["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out after 1s"),
        "{out}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the timeout was enforced"
    );
    assert_eq!(current(&lab, 0), first);
}

fn spawn_reconcile(
    repo: &TestRepo,
    lab: &SshLab,
    redis: &str,
    extra: &[&str],
) -> std::process::Child {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("celeroot"));
    cmd.current_dir(repo.root())
        .arg("reconcile")
        .args(extra)
        .arg("--known-hosts")
        .arg(&lab.known_hosts)
        .env("CELEROOT_REDIS_URL", redis)
        .env("CELEROOT_ACTOR", "tester@ci")
        .env("NO_COLOR", "1")
        .env_remove("CELEROOT_FAULT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd.spawn().expect("spawn reconcile")
}

fn finish(child: std::process::Child) -> (i32, String) {
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Issue 14, finding 5: the deploy after `reconcile` ran after the lease was released, so
/// an older revision's slow rollout could finish after a newer one's and leave hosts on
/// the older release. Now the lease is held (and renewed) through the rollout, and a
/// second reconcile waits for it (`--lock-timeout`).
#[test]
fn concurrent_reconciles_of_two_revisions_end_with_every_host_on_the_newer_one() {
    let lab = SshLab::start(2);
    let redis = RedisServer::start();
    let mut repo = repo_for(&lab, "    setupCommand: [\"sleep\", \"3\"]\n", &|_| {
        String::new()
    });
    let older = repo.commit("older, with a slow setup");
    repo.edit(
        "manifests/cluster.yaml",
        "setupCommand: [\"sleep\", \"3\"]",
        "setupCommand: [\"true\"]",
    );
    repo.write("tasks/mod01.py", "VALUE = 101\n");
    let newer = repo.commit("newer");
    let paths: Vec<String> = celeroot::desired::DEFAULT_DEPLOY_PATHS
        .iter()
        .map(std::string::ToString::to_string)
        .collect();
    let git = git2::Repository::open(repo.root()).expect("open");
    let want = celeroot::source::release_id(&git, &newer, &paths)
        .expect("release id")
        .expect("a release");

    let first = spawn_reconcile(
        &repo,
        &lab,
        &redis.url(),
        &["--rev", &older, "--lock-timeout", "60s"],
    );
    // The older revision is applied and its rollout is under way.
    let mut c = redis.conn();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let applied: Option<String> = redis::cmd("HGET")
            .arg("celeroot:{lab}:applied")
            .arg("revision")
            .query(&mut c)
            .expect("HGET");
        if applied.as_deref() == Some(older.as_str()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the older revision was never applied"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let second = spawn_reconcile(&repo, &lab, &redis.url(), &["--lock-timeout", "60s"]);
    let (code, out) = finish(first);
    assert_eq!(code, 0, "older: {out}");
    let (code, out) = finish(second);
    assert_eq!(code, 0, "newer: {out}");
    for i in 0..2 {
        assert_eq!(
            current(&lab, i).as_deref(),
            Some(want.as_str()),
            "host-{}",
            i + 1
        );
    }
    let applied: Option<String> = redis::cmd("HGET")
        .arg("celeroot:{lab}:applied")
        .arg("revision")
        .query(&mut c)
        .expect("HGET");
    assert_eq!(applied.as_deref(), Some(newer.as_str()));
    // No deploy lock is left on any host.
    for i in 0..2 {
        assert!(
            !target(&lab, i).join(".deploy-lock").exists(),
            "host-{}",
            i + 1
        );
    }
}

/// Issue 14, finding 5: two deploys to one host at once: the second is refused on that
/// host by its deploy lock instead of deleting the first one's partial transfer.
#[test]
fn a_second_deploy_to_a_host_being_deployed_is_refused_by_the_host_lock() {
    let lab = SshLab::start(1);
    let mut repo = repo_for(&lab, "    setupCommand: [\"sleep\", \"3\"]\n", &|_| {
        String::new()
    });
    repo.commit("slow setup");
    let spawn = || {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("celeroot"));
        cmd.current_dir(repo.root())
            .args(["deploy", "-o", "json", "--known-hosts"])
            .arg(&lab.known_hosts)
            .env("NO_COLOR", "1")
            .env("CELEROOT_REDIS_URL", "redis://127.0.0.1:1/0")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().expect("spawn deploy")
    };
    let first = spawn();
    let lock = target(&lab, 0).join(".deploy-lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !lock.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first deploy never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (code, out) = finish(spawn());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("another deploy holds the host's deploy lock"),
        "{out}"
    );
    let (code, out) = finish(first);
    assert_eq!(code, 0, "the first deploy is unharmed: {out}");
    assert!(current(&lab, 0).is_some());
    assert!(!lock.exists(), "released");
}

/// Issue 14, finding 14: a reconcile's lease has a short TTL that its holder renews while
/// it works (here through a rollout longer than the TTL), so a holder that dies leaves it
/// behind for at most `LEASE_TTL`, not minutes.
#[test]
fn the_lease_is_renewed_while_held_and_a_dead_holders_lease_expires_within_its_ttl() {
    let lab = SshLab::start(1);
    let redis = RedisServer::start();
    let ttl_ms = celeroot::state::LEASE_TTL.as_millis() as i64;
    let hold = celeroot::state::LEASE_TTL.as_secs() + 5;
    let mut repo = repo_for(
        &lab,
        &format!("    setupCommand: [\"sleep\", \"{}\"]\n", hold * 2),
        &|_| String::new(),
    );
    repo.commit("slow setup");
    let mut c = redis.conn();
    let pttl = |c: &mut redis::Connection| -> i64 {
        redis::cmd("PTTL")
            .arg("celeroot:{lab}:lock")
            .query(c)
            .expect("PTTL")
    };
    let mut child = spawn_reconcile(&repo, &lab, &redis.url(), &[]);
    let started = std::time::Instant::now();
    while pttl(&mut c) < 0 {
        assert!(
            started.elapsed().as_secs() < 30,
            "the lease was never taken"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(pttl(&mut c) <= ttl_ms, "a short TTL");
    // Held past its TTL: renewed.
    std::thread::sleep(std::time::Duration::from_secs(hold));
    let left = pttl(&mut c);
    assert!(
        left > 0 && left <= ttl_ms,
        "still held and renewed after {hold}s: {left} ms"
    );
    // The holder dies without releasing it.
    child.kill().expect("kill");
    let _ = child.wait();
    let died = std::time::Instant::now();
    while pttl(&mut c) > 0 {
        assert!(
            died.elapsed() <= celeroot::state::LEASE_TTL + std::time::Duration::from_secs(2),
            "the dead holder's lease outlived its TTL"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The next reconcile goes ahead (the host still holds the dead deploy's lock, so it
    // skips the deploy here).
    let mut cmd = repo.cmd();
    cmd.args(["reconcile", "--skip-deploy"])
        .env("CELEROOT_REDIS_URL", redis.url());
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
}

/// `celeroot watch --branch main --known-hosts LAB ARGS` following a bare repository that
/// `repo` was pushed to, against its own Redis.
fn watching(
    lab: &SshLab,
    repo: &TestRepo,
    args: &[&str],
) -> (
    RedisServer,
    crate::common::daemon::BareRepo,
    crate::common::daemon::Daemon,
) {
    let redis = RedisServer::start();
    let bare = crate::common::daemon::BareRepo::new();
    bare.push_from(repo, "main");
    let known = lab.known_hosts.display().to_string();
    let mut all = vec!["--branch", "main", "--known-hosts", known.as_str()];
    all.extend_from_slice(args);
    let d = crate::common::daemon::Daemon::start(&bare.url(), &redis.url(), &all);
    (redis, bare, d)
}

/// `celeroot watch` ships a pushed release after applying it, through the same library
/// rollout as `reconcile`; a host that cannot be reached fails the rollout, which is
/// reported in /status and the metrics and retried with back-off until it succeeds.
#[test]
fn watch_ships_a_pushed_release_and_retries_a_failed_rollout() {
    use crate::common::daemon::Daemon;
    use std::time::Duration;
    let mut lab = SshLab::start(2);
    let mut repo = repo_for(&lab, "", &|_| String::new());
    let host2 = repo.read("manifests/hosts/host-2.yaml");
    repo.remove("manifests/hosts/host-2.yaml");
    repo.commit("only host-1");
    let (_redis, bare, mut d) = watching(&lab, &repo, &["--interval", "1s"]);
    let wait = |d: &mut Daemon, what: &str, cond: &dyn Fn(&Daemon) -> bool| {
        d.wait_for(what, Duration::from_secs(30), |d| cond(d));
    };
    wait(&mut d, "the first release shipped", &|d| {
        d.status()["lastDeploy"]["result"] == "ok"
    });
    let first = current(&lab, 0).expect("a release is current");
    assert_eq!(d.status()["lastDeploy"]["deployed"], 1);

    // The host goes away; a push changes a shipped file: applied, the rollout fails.
    lab.hosts[0].stop();
    repo.write("tasks/mod03.py", "VALUE = 33\n");
    repo.commit("change a task");
    bare.push_from(&repo, "main");
    wait(&mut d, "a failed rollout reported", &|d| {
        d.status()["lastDeploy"]["result"] == "failed"
    });
    let status = d.status();
    assert!(status["lastDeploy"]["retryAt"].is_string(), "{status}");
    // Retried with back-off, not in a loop: the delay doubles per failure (±20 %).
    wait(&mut d, "three failed rollouts in a row", &|d| {
        d.status()["lastDeploy"]["failures"].as_u64() >= Some(3)
    });
    let status = d.status();
    let delay = status["lastDeploy"]["retryInMs"].as_u64().unwrap_or(0);
    let failures = status["lastDeploy"]["failures"].as_u64().unwrap_or(0);
    let expected = (500 * 2u64.pow(u32::try_from(failures).unwrap_or(1) - 1)).min(30_000);
    assert!(
        delay >= expected * 8 / 10 && delay <= expected * 12 / 10,
        "after {failures} failures the next retry is in {delay} ms, not about {expected} ms: {status}"
    );
    assert_eq!(current(&lab, 0).as_deref(), Some(first.as_str()));
    let (_, metrics) = d.get("/metrics");
    assert!(
        metrics.contains("celeroot_deploys_total{result=\"failed\"}"),
        "{metrics}"
    );

    // The host is back: the retry ships the new release, without a new push.
    lab.hosts[0].start();
    wait(&mut d, "the retried rollout shipped", &|d| {
        d.status()["lastDeploy"]["result"] == "ok"
    });
    assert_ne!(current(&lab, 0).as_deref(), Some(first.as_str()));

    // A new host, the release unchanged: the daemon ships it to the new host.
    repo.write("manifests/hosts/host-2.yaml", &host2);
    repo.commit("add host-2");
    bare.push_from(&repo, "main");
    wait(&mut d, "the release shipped to the new host", &|_| {
        current(&lab, 1).is_some()
    });
    assert_eq!(current(&lab, 1), current(&lab, 0));
}

#[test]
fn watch_with_skip_deploy_applies_without_shipping() {
    let lab = SshLab::start(1);
    let repo = repo_for(&lab, "", &|_| String::new());
    let (_redis, _bare, mut d) = watching(&lab, &repo, &["--skip-deploy"]);
    d.wait_for("applied", std::time::Duration::from_secs(20), |d| {
        d.status()["lastResult"]["result"] == "applied"
    });
    let status = d.status();
    assert!(status["lastDeploy"].is_null(), "{status}");
    assert_eq!(current(&lab, 0), None);
}

/// With `--drift report` a live revision is not reconciled again, but a failed rollout
/// of it is still retried with back-off until it succeeds, without a new push.
#[test]
fn watch_with_drift_report_retries_a_failed_rollout_too() {
    use std::time::Duration;
    let mut lab = SshLab::start(1);
    let mut repo = repo_for(&lab, "", &|_| String::new());
    let (_redis, bare, mut d) = watching(&lab, &repo, &["--interval", "1s", "--drift", "report"]);
    d.wait_for("the first release shipped", Duration::from_secs(30), |d| {
        d.status()["lastDeploy"]["result"] == "ok"
    });
    let first = current(&lab, 0).expect("a release is current");
    lab.hosts[0].stop();
    repo.write("tasks/mod03.py", "VALUE = 33\n");
    repo.commit("change a task");
    bare.push_from(&repo, "main");
    d.wait_for(
        "two failed rollouts in a row",
        Duration::from_secs(30),
        |d| d.status()["lastDeploy"]["failures"].as_u64() >= Some(2),
    );
    lab.hosts[0].start();
    d.wait_for(
        "the retried rollout shipped",
        Duration::from_secs(60),
        |d| d.status()["lastDeploy"]["result"] == "ok",
    );
    assert_ne!(current(&lab, 0).as_deref(), Some(first.as_str()));
}

/// On a terminal, a live bar stays under the per-host lines and is cleared at the end.
/// Run under a real pseudo-terminal (`script`, from util-linux's bsdutils, which Debian
/// always installs).
#[test]
fn on_a_terminal_a_live_bar_shows_the_rollout() {
    let lab = SshLab::start(3);
    let repo = repo_for(&lab, "", &|_| String::new());
    let template = repo.cmd();
    let program = template.get_program().to_string_lossy().into_owned();
    let line = [
        program.as_str(),
        "deploy",
        "--known-hosts",
        &lab.known_hosts.display().to_string(),
    ]
    .iter()
    .map(|a| celeroot::deploy::shell_quote(a))
    .collect::<Vec<_>>()
    .join(" ");
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qefc", &line, "/dev/null"])
        .current_dir(repo.root());
    for (k, v) in template.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().expect("script (bsdutils) runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("Deploying release r-"), "{text}");
    assert!(text.contains("/3 host(s), "), "the bar was drawn: {text}");
    assert!(text.contains("\u{1b}[2K"), "and cleared: {text}");
    for name in ["host-1", "host-2", "host-3"] {
        assert_eq!(
            text.matches(&format!("{name}: deployed")).count(),
            1,
            "{name} once: {text}"
        );
    }
}
