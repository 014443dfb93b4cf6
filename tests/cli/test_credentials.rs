//! `celeroot hosts credentials --install`: a host's Redis credentials reach it over SSH
//! into a 0600 file its agent reads, and rotate without a lost task (issue 16 part 1).
//! Real sshd host, real redis-server, a real agent running a real Celery worker from
//! the deployed release.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::agent::{heartbeat, AgentProcess};
use crate::common::redis::RedisServer;
use crate::common::sshd::SshLab;
use crate::common::{run, TestRepo};

const WAIT: Duration = Duration::from_secs(60);

fn lab_repo(lab: &SshLab) -> TestRepo {
    let mut repo = crate::common::agent::lab_repo(lab, "[\"true\"]");
    repo.commit("lab");
    repo
}

fn target(lab: &SshLab, i: usize) -> PathBuf {
    crate::common::agent::lab_target(lab, i)
}

fn celeroot(repo: &TestRepo, redis: &RedisServer, lab: &SshLab, args: &[&str]) -> (String, i32) {
    let mut cmd = repo.cmd();
    cmd.args(args)
        .arg("--known-hosts")
        .arg(&lab.known_hosts)
        .env("CELEROOT_REDIS_URL", redis.url());
    run(cmd)
}

/// `hosts credentials host-1 --install [EXTRA...]`.
fn install(repo: &TestRepo, redis: &RedisServer, lab: &SshLab, extra: &[&str]) -> (String, i32) {
    let mut args = vec!["hosts", "credentials", "host-1", "--install"];
    args.extend_from_slice(extra);
    celeroot(repo, redis, lab, &args)
}

fn users(redis: &RedisServer) -> Vec<String> {
    redis::cmd("ACL")
        .arg("USERS")
        .query(&mut redis.conn())
        .expect("ACL USERS")
}

/// How many passwords an ACL user has.
fn passwords(redis: &RedisServer, user: &str) -> usize {
    let fields: Vec<redis::Value> = redis::cmd("ACL")
        .arg("GETUSER")
        .arg(user)
        .query(&mut redis.conn())
        .expect("ACL GETUSER");
    let mut it = fields.into_iter();
    while let Some(f) = it.next() {
        let name: String = redis::from_redis_value(f).unwrap_or_default();
        if name == "passwords" {
            let list: Vec<String> = it
                .next()
                .and_then(|v| redis::from_redis_value(v).ok())
                .unwrap_or_default();
            return list.len();
        }
    }
    panic!("ACL GETUSER {user} has no passwords field");
}

fn can_log_in(url: &str) -> bool {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .is_ok()
}

fn file_vars(path: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    celeroot::state::acl::parse_credentials_file(&std::fs::read_to_string(path).expect("read"))
}

#[test]
fn credentials_reach_the_host_in_a_private_file_and_rotate_without_a_lost_task() {
    let lab = SshLab::start(1);
    let redis = RedisServer::start();
    let repo = lab_repo(&lab);
    let (out, code) = celeroot(&repo, &redis, &lab, &["reconcile"]);
    assert_eq!(code, 0, "{out}");

    let (out, code) = install(&repo, &redis, &lab, &[]);
    assert_eq!(code, 0, "{out}");
    let file = target(&lab, 0).join("shared/credentials.env");
    let mode = std::fs::metadata(&file)
        .expect("the credentials file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let first = file_vars(&file);
    let agent_url = first["CELEROOT_REDIS_URL"].clone();
    let worker_url = first["CELEROOT_BROKER_URL"].clone();
    assert!(agent_url.contains("celeroot.lab.host-1:"), "{agent_url}");
    assert!(
        worker_url.contains("celeroot.lab.host-1.worker:"),
        "{worker_url}"
    );
    let password = |url: &str| {
        url.rsplit_once('@')
            .and_then(|(u, _)| u.rsplit_once(':'))
            .map(|(_, p)| p.to_string())
            .expect("a password")
    };
    assert!(
        !out.contains(&password(&agent_url)) && !out.contains(&password(&worker_url)),
        "a password was shown: {out}"
    );
    let fp = celeroot::state::acl::fingerprint(&std::fs::read_to_string(&file).expect("read"));
    assert!(out.contains(&format!("fingerprint {fp}")), "{out}");
    let (again, code) = install(&repo, &redis, &lab, &[]);
    assert_eq!(code, 1, "existing users need --rotate: {again}");
    assert_eq!(
        file_vars(&file),
        first,
        "a refused install leaves the file alone"
    );

    // The agent takes its Redis URL and its worker's broker from the file.
    let release = target(&lab, 0).join("current");
    let agent = AgentProcess::start(
        "host-1",
        "lab",
        &release,
        &[("TESTS_RECORD_URL", redis.url())],
    );
    let beat = || heartbeat(&mut redis.conn(), "lab", "host-1");
    agent.wait_until(
        "the worker running with the installed credentials",
        WAIT,
        || {
            let b = beat();
            b.get("status").map(String::as_str) == Some("running")
                && b.get("credentials") == Some(&fp)
        },
    );
    let first_pid = beat().get("pid").cloned().unwrap_or_default();

    // Tasks keep arriving while the credentials rotate; every one of them runs once.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (stop, root, url) = (stop.clone(), repo.root(), redis.url());
        std::thread::spawn(move || {
            let mut sent = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let mut cmd = crate::common::celeroot_cmd(&root);
                cmd.args([
                    "task",
                    "run",
                    "tests.record",
                    "--target",
                    "host:host-1",
                    "--args",
                ])
                .arg(format!(r#"["rotation", "{sent}"]"#))
                .env("CELEROOT_REDIS_URL", &url)
                .env_remove("CELEROOT_BROKER_URL")
                .env_remove("CELEROOT_RESULT_BACKEND");
                let (out, code) = run(cmd);
                assert_eq!(code, 0, "{out}");
                sent += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let (out, code) = install(&repo, &redis, &lab, &["--rotate", "--wait", "60s"]);
    assert_eq!(code, 0, "{out}\n{}", agent.log_text());
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    let sent = sender.join().expect("the sender");
    let ran = || -> Vec<String> {
        redis::cmd("LRANGE")
            .arg("tests:record:rotation")
            .arg(0)
            .arg(-1)
            .query(&mut redis.conn())
            .unwrap_or_default()
    };
    agent.wait_until("every task sent during the rotation ran", WAIT, || {
        ran().len() >= sent as usize
    });
    let mut got: Vec<u32> = ran().iter().filter_map(|n| n.parse().ok()).collect();
    got.sort_unstable();
    assert_eq!(
        got,
        (0..sent).collect::<Vec<_>>(),
        "each task ran exactly once"
    );
    assert!(sent >= 10, "tasks were sent throughout: {sent}");

    let second = file_vars(&file);
    assert_ne!(second, first);
    let fp2 = celeroot::state::acl::fingerprint(&std::fs::read_to_string(&file).expect("read"));
    assert!(out.contains(&format!("fingerprint {fp2}")), "{out}");
    let b = beat();
    assert_eq!(b.get("credentials"), Some(&fp2));
    assert_ne!(
        b.get("pid"),
        Some(&first_pid),
        "the worker restarted on the new broker URL"
    );
    assert!(
        !can_log_in(&agent_url) && !can_log_in(&worker_url),
        "the old passwords are retired"
    );
    assert!(
        can_log_in(&second["CELEROOT_REDIS_URL"]) && can_log_in(&second["CELEROOT_BROKER_URL"])
    );
}

#[test]
fn an_install_that_cannot_reach_the_host_changes_nothing() {
    let mut lab = SshLab::start(1);
    let redis = RedisServer::start();
    let repo = lab_repo(&lab);
    let (out, code) = celeroot(&repo, &redis, &lab, &["reconcile"]);
    assert_eq!(code, 0, "{out}");
    let before = users(&redis);
    lab.hosts[0].stop();
    let (out, code) = install(&repo, &redis, &lab, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cannot install the credentials file on host-1"),
        "{out}"
    );
    assert_eq!(users(&redis), before, "the new users were deleted again");

    // A rotation that cannot reach the host keeps the old passwords, and only them.
    lab.hosts[0].start();
    let (out, code) = install(&repo, &redis, &lab, &[]);
    assert_eq!(code, 0, "{out}");
    let file = target(&lab, 0).join("shared/credentials.env");
    let first = file_vars(&file);
    lab.hosts[0].stop();
    let (out, code) = install(&repo, &redis, &lab, &["--rotate"]);
    assert_eq!(code, 1, "{out}");
    assert!(can_log_in(&first["CELEROOT_REDIS_URL"]) && can_log_in(&first["CELEROOT_BROKER_URL"]));
    for user in ["celeroot.lab.host-1", "celeroot.lab.host-1.worker"] {
        assert_eq!(
            passwords(&redis, user),
            1,
            "{user}: the new password was taken back"
        );
    }
    assert_eq!(file_vars(&file), first);
}

#[test]
fn installing_to_a_placeholder_address_is_refused_before_anything_is_written() {
    let redis = RedisServer::start();
    let repo = crate::common::reconciled_example(&redis);
    let before = users(&redis);
    let mut cmd = repo.cmd();
    cmd.args(["hosts", "credentials", "web01", "--install"])
        .env("CELEROOT_REDIS_URL", redis.url());
    let (out, code) = run(cmd);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("is a documentation address (RFC 5737), a placeholder"),
        "{out}"
    );
    assert_eq!(users(&redis), before, "no user was created");
}
