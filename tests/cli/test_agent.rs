//! `celeroot agent`: the real binary supervising real worker processes (a recording
//! stand-in, and a real `celery worker`), against a real redis-server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::celery::{app_dir, python, worker_env};
use crate::common::redis::RedisServer;
use crate::common::{run, TestRepo};

const WAIT: Duration = Duration::from_secs(20);

/// A worker stand-in: records its argv and pid, exits on SIGTERM. Asked `inspect ping`,
/// it answers like Celery, or (when `$AGENT_TEST_LOG.mute` exists) like a hung worker.
const FAKE_WORKER: &str = r#"#!/bin/sh
case " $* " in *" inspect ping "*)
  if [ -e "$AGENT_TEST_LOG.mute" ]; then echo "Error: No nodes replied within time constraint" >&2; exit 69; fi
  echo "-> worker@host: OK"; echo "        pong"; exit 0;;
esac
echo "$$ $*" >> "$AGENT_TEST_LOG"
trap 'exit 0' TERM
while :; do sleep 0.1; done
"#;

struct Agent {
    child: Option<Child>,
    log: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Agent {
    fn start(
        redis_url: &str,
        host: &str,
        release_dir: &Path,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> Agent {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("agent.log");
        let script = dir.path().join("fake-celery");
        std::fs::write(&script, FAKE_WORKER).expect("script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("celeroot"));
        cmd.args([
            "agent",
            "--host",
            host,
            "--cluster",
            "production",
            "--release-dir",
        ])
        .arg(release_dir)
        .args([
            "--heartbeat-interval",
            "300ms",
            "--heartbeat-ttl",
            "2s",
            "--reread-interval",
            "1s",
            "--stop-timeout",
            "3s",
        ])
        .args(extra)
        .env("CELEROOT_REDIS_URL", redis_url)
        .env("AGENT_TEST_LOG", dir.path().join("worker-argv.log"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
        if !extra.contains(&"--celery") {
            cmd.arg("--celery").arg(&script);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        Agent {
            child: Some(cmd.spawn().expect("spawn celeroot agent")),
            log,
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lines `pid args...` of every worker start.
    fn starts(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("worker-argv.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // SIGTERM first, so the agent stops its worker.
            if let Ok(pid) = i32::try_from(c.id()) {
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- agent log ----\n{}", self.log());
        }
    }
}

fn heartbeat(redis: &RedisServer, host: &str) -> BTreeMap<String, String> {
    redis::cmd("HGETALL")
        .arg(format!("celeroot:{{production}}:heartbeat:{host}"))
        .query(&mut redis.conn())
        .unwrap_or_default()
}

fn wait_until(what: &str, agent: &Agent, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}; agent log:\n{}", agent.log());
}

/// The example reconciled into `redis`.
fn reconciled(redis: &RedisServer) -> TestRepo {
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    let mut cmd = repo.cmd();
    cmd.arg("reconcile").env("CELEROOT_REDIS_URL", redis.url());
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
    repo
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// A release directory `releases/r-test` with a checksum list, and `current` pointing at it.
fn release(dir: &Path) -> PathBuf {
    let rel = dir.join("releases/r-test");
    std::fs::create_dir_all(rel.join("tasks")).expect("mkdir");
    std::fs::write(rel.join("tasks/__init__.py"), "").expect("write");
    std::fs::write(rel.join("tasks/jobs.py"), "X = 1\n").expect("write");
    celeroot::deploy::release::write_checksums(&rel).expect("checksums");
    let current = dir.join("current");
    std::os::unix::fs::symlink("releases/r-test", &current).expect("symlink");
    current
}

#[test]
fn the_worker_runs_the_configuration_and_restarts_when_it_changes() {
    let redis = RedisServer::start();
    let mut repo = reconciled(&redis);
    let tmp = tempfile::tempdir().expect("tmp");
    let current = release(tmp.path());
    let agent = Agent::start(&redis.url(), "web01", &current, &[], &[]);
    wait_until("a running heartbeat", &agent, || {
        heartbeat(&redis, "web01").get("status").map(String::as_str) == Some("running")
    });
    let hb = heartbeat(&redis, "web01");
    assert_eq!(hb["release"], "r-test");
    assert_eq!(hb["queues"], r#"["app","webserver","celeroot.host.web01"]"#);
    assert!(hb["kernel"].starts_with("Linux"), "{hb:?}");
    assert_eq!(hb["agent_version"], env!("CARGO_PKG_VERSION"));
    // "running" is reported once the process is spawned; the stand-in worker writes its
    // argv a moment later (under load, after the heartbeat).
    wait_until("the worker's argv logged", &agent, || {
        !agent.starts().is_empty()
    });
    let starts = agent.starts();
    assert_eq!(starts.len(), 1, "{starts:?}");
    assert!(
        starts[0].contains("-A tasks.app worker -Q app,webserver,celeroot.host.web01 -n web01@%h"),
        "{starts:?}"
    );

    // A new queue in git, reconciled: the agent learns it (pub/sub) and restarts.
    repo.edit(
        "manifests/roles/webserver.yaml",
        "queue: webserver",
        "queue: frontend",
    );
    repo.commit("webserver: queue frontend");
    let mut cmd = repo.cmd();
    cmd.arg("reconcile").env("CELEROOT_REDIS_URL", redis.url());
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
    let changed = Instant::now();
    wait_until("the worker restarted with the new queue", &agent, || {
        agent.starts().len() == 2
            && heartbeat(&redis, "web01")
                .get("queues")
                .is_some_and(|q| q.contains("frontend"))
    });
    assert!(
        changed.elapsed() < Duration::from_secs(5),
        "took {:?}",
        changed.elapsed()
    );
    let starts = agent.starts();
    assert!(
        starts[1].contains("frontend") && starts[1].contains("-Q app,"),
        "{starts:?}"
    );
    let old_pid: i32 = starts[0]
        .split(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("pid");
    assert!(!alive(old_pid), "the old worker was stopped");
    assert!(heartbeat(&redis, "web01")["restart_reason"].contains("configuration changed"));
    // drift agrees with the host.
    let mut cmd = repo.cmd();
    cmd.args(["drift", "-o", "json"])
        .env("CELEROOT_REDIS_URL", redis.url());
    let (out, _) = run(cmd);
    let json: serde_json::Value =
        serde_json::from_str(out.split("[exit status").next().unwrap_or_default()).expect("json");
    let web01: Vec<&serde_json::Value> = json["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["host"] == "web01")
        .collect();
    assert!(web01.is_empty(), "web01 runs what git says: {web01:?}");
}

fn host_finding(repo: &TestRepo, redis: &RedisServer, host: &str) -> Vec<String> {
    let mut cmd = repo.cmd();
    cmd.args(["drift", "-o", "json"])
        .env("CELEROOT_REDIS_URL", redis.url());
    let (out, _) = run(cmd);
    let json: serde_json::Value =
        serde_json::from_str(out.split("[exit status").next().unwrap_or_default()).expect("json");
    json["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["host"] == host)
        .filter_map(|h| h["kind"].as_str().map(String::from))
        .collect()
}

/// Issue 16 part 5: a host is ok only when its worker answers `celery inspect ping` and
/// its broker answers; otherwise the finding says which.
#[test]
fn health_names_a_worker_that_does_not_answer_and_a_broker_it_cannot_reach() {
    let redis = RedisServer::start();
    let repo = reconciled(&redis);
    let tmp = tempfile::tempdir().expect("tmp");
    let current = release(tmp.path());
    let agent = Agent::start(
        &redis.url(),
        "web01",
        &current,
        &["--ping-interval", "1s"],
        &[],
    );
    wait_until("a ping answered", &agent, || {
        let hb = heartbeat(&redis, "web01");
        hb.get("ping").map(String::as_str) == Some("ok")
            && hb.get("broker").map(String::as_str) == Some("ok")
    });
    assert!(host_finding(&repo, &redis, "web01").is_empty());
    let ping = agent.starts().iter().any(|l| l.contains("inspect ping"));
    assert!(!ping, "a ping is not a worker start");

    // The worker hangs: it no longer answers.
    std::fs::write(agent.dir.path().join("worker-argv.log.mute"), "").expect("mute");
    wait_until("a ping unanswered", &agent, || {
        heartbeat(&redis, "web01").get("ping").map(String::as_str) == Some("no-reply")
    });
    assert_eq!(host_finding(&repo, &redis, "web01"), ["worker-down"]);

    // A worker whose broker is gone.
    let dead = "redis://127.0.0.1:1/0".to_string();
    let other = Agent::start(
        &redis.url(),
        "web02",
        &current,
        &["--ping-interval", "1s"],
        &[("CELEROOT_BROKER_URL", dead)],
    );
    wait_until("the broker found unreachable", &other, || {
        heartbeat(&redis, "web02").get("broker").map(String::as_str) == Some("unreachable")
    });
    assert!(
        host_finding(&repo, &redis, "web02").contains(&"broker-unreachable".to_string()),
        "{:?}",
        host_finding(&repo, &redis, "web02")
    );
}

#[test]
fn a_killed_worker_is_restarted_and_reported() {
    let redis = RedisServer::start();
    reconciled(&redis);
    let tmp = tempfile::tempdir().expect("tmp");
    let current = release(tmp.path());
    let agent = Agent::start(&redis.url(), "web02", &current, &[], &[]);
    wait_until("running", &agent, || {
        heartbeat(&redis, "web02").get("status").map(String::as_str) == Some("running")
    });
    let pid: i32 = heartbeat(&redis, "web02")["pid"].parse().expect("pid");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_until("a new worker", &agent, || {
        let hb = heartbeat(&redis, "web02");
        hb.get("pid")
            .is_some_and(|p| p != &pid.to_string() && !p.is_empty())
            && hb.get("status").map(String::as_str) == Some("running")
    });
    let hb = heartbeat(&redis, "web02");
    assert!(hb["restart_reason"].contains("the worker exited"), "{hb:?}");
    assert!(hb["restart_reason"].contains("signal: 9"), "{hb:?}");
}

#[test]
fn a_killed_agent_expires_and_drift_shows_the_host_down() {
    let redis = RedisServer::start();
    let repo = reconciled(&redis);
    let tmp = tempfile::tempdir().expect("tmp");
    let current = release(tmp.path());
    let mut agent = Agent::start(&redis.url(), "db01", &current, &[], &[]);
    wait_until("running", &agent, || {
        heartbeat(&redis, "db01").get("status").map(String::as_str) == Some("running")
    });
    let worker: i32 = heartbeat(&redis, "db01")["pid"].parse().expect("pid");
    agent.kill();
    wait_until("the heartbeat expired", &agent, || {
        heartbeat(&redis, "db01").is_empty()
    });
    wait_until("the orphaned worker stopped", &agent, || !alive(worker));
    let mut cmd = repo.cmd();
    cmd.args(["drift", "-o", "json"])
        .env("CELEROOT_REDIS_URL", redis.url());
    let (out, code) = run(cmd);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(
            r#""host": "db01",
      "kind": "no-heartbeat""#
        ),
        "{out}"
    );
}

#[test]
fn a_redis_restart_does_not_stop_the_worker() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes"], None);
    reconciled(&redis);
    let tmp = tempfile::tempdir().expect("tmp");
    let current = release(tmp.path());
    let agent = Agent::start(&redis.url(), "app01", &current, &[], &[]);
    wait_until("running", &agent, || {
        heartbeat(&redis, "app01").get("status").map(String::as_str) == Some("running")
    });
    let pid = heartbeat(&redis, "app01")["pid"].clone();
    redis.kill();
    std::thread::sleep(Duration::from_millis(1500));
    redis.restart();
    let restarted = chrono::Utc::now().timestamp();
    wait_until("heartbeats after the restart", &agent, || {
        heartbeat(&redis, "app01")
            .get("ts")
            .and_then(|t| t.parse::<i64>().ok())
            .is_some_and(|t| t >= restarted)
    });
    assert_eq!(
        heartbeat(&redis, "app01")["pid"],
        pid,
        "the worker kept running through the outage"
    );
    assert_eq!(agent.starts().len(), 1);
}

#[test]
fn locally_modified_release_files_show_as_drift() {
    let redis = RedisServer::start();
    let repo = reconciled(&redis);
    let tmp = tempfile::tempdir().expect("tmp");
    let current = release(tmp.path());
    std::fs::write(current.join("tasks/jobs.py"), "X = 'patched on the host'\n").expect("tamper");
    let agent = Agent::start(&redis.url(), "web01", &current, &[], &[]);
    wait_until("a heartbeat", &agent, || {
        heartbeat(&redis, "web01")
            .get("modified_count")
            .map(String::as_str)
            == Some("1")
    });
    assert_eq!(
        heartbeat(&redis, "web01")["modified"],
        r#"["tasks/jobs.py"]"#
    );
    let mut cmd = repo.cmd();
    cmd.args(["drift"]).env("CELEROOT_REDIS_URL", redis.url());
    let (out, code) = run(cmd);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("1 file(s) of release r-test differ from what was deployed: tasks/jobs.py"),
        "{out}"
    );
}

#[test]
fn per_host_credentials_cannot_touch_another_host() {
    let redis = RedisServer::start();
    let repo = reconciled(&redis);
    let creds = |host: &str, extra: &[&str]| {
        let mut cmd = repo.cmd();
        cmd.args(["hosts", "credentials", host])
            .args(extra)
            .env("CELEROOT_REDIS_URL", redis.url());
        run(cmd)
    };
    let (out, code) = creds("web01", &[]);
    assert_eq!(code, 0, "{out}");
    let url = out
        .lines()
        .find_map(|l| l.strip_prefix("CELEROOT_REDIS_URL="))
        .expect("a URL")
        .to_string();
    assert!(url.contains("celeroot.production.web01:"), "{url}");
    let (again, code) = creds("web01", &[]);
    assert_eq!(code, 1, "an existing user needs --rotate: {again}");

    let mut c = redis::Client::open(url.as_str())
        .expect("client")
        .get_connection()
        .expect("log in as web01's agent");
    let own: redis::RedisResult<BTreeMap<String, String>> = redis::cmd("HGETALL")
        .arg("celeroot:{production}:worker:web01")
        .query(&mut c);
    assert!(own.is_ok_and(|m| m.contains_key("queues")));
    let ok: redis::RedisResult<i64> = redis::cmd("HSET")
        .arg("celeroot:{production}:heartbeat:web01")
        .arg("ts")
        .arg("1")
        .query(&mut c);
    assert!(ok.is_ok(), "{ok:?}");
    for (cmd, key) in [
        ("HSET", "celeroot:{production}:heartbeat:web02"),
        ("HSET", "celeroot:{production}:worker:web01"),
        ("HGETALL", "celeroot:{production}:worker:web02"),
        ("DEL", "celeroot:{production}:applied"),
    ] {
        let mut q = redis::cmd(cmd);
        q.arg(key);
        if cmd == "HSET" {
            q.arg("ts").arg("1");
        }
        let r: redis::RedisResult<redis::Value> = q.query(&mut c);
        let e = r.expect_err(&format!("{cmd} {key} must be refused"));
        assert!(
            e.to_string().to_lowercase().contains("noperm"),
            "{cmd} {key}: {e}"
        );
    }

    // The agent runs with these credentials.
    let tmp = tempfile::tempdir().expect("tmp");
    let current = release(tmp.path());
    let agent = Agent::start(&url, "web01", &current, &[], &[]);
    wait_until(
        "a heartbeat written with the host's own credentials",
        &agent,
        || heartbeat(&redis, "web01").get("status").map(String::as_str) == Some("running"),
    );
    let (out, code) = creds("web01", &["--rotate"]);
    assert_eq!(code, 0, "{out}");
    let old = redis::Client::open(url.as_str())
        .expect("client")
        .get_connection();
    assert!(old.is_err(), "the rotated password no longer works");
}

/// The environment and arguments of a real `celery worker` under the agent: the
/// scaffold's app and the test tasks, with `broker` as its broker.
fn real_worker(broker: &str, redis: &RedisServer) -> (Vec<(&'static str, String)>, Vec<String>) {
    let celery = python().with_file_name("celery");
    let env = worker_env(broker, "production", "web01", "Europe/Berlin")
        .into_iter()
        .chain([
            (
                "PYTHONPATH",
                format!(
                    "{}:{}",
                    app_dir().display(),
                    crate::common::project_root().join("tests/celery").display()
                ),
            ),
            ("PYTHONDONTWRITEBYTECODE", "1".to_string()),
            // The test tasks record into the test's Redis (not through the broker URL).
            ("TESTS_RECORD_URL", redis.url()),
        ])
        .collect();
    let args = ["--celery", &celery.display().to_string()]
        .into_iter()
        .map(String::from)
        .collect();
    (env, args)
}

fn solo(args: &mut Vec<String>) {
    for a in ["--pool", "solo", "--without-gossip", "--without-mingle"] {
        args.extend(["--worker-arg".to_string(), a.to_string()]);
    }
}

#[test]
fn a_real_celery_worker_under_the_agent_executes_a_task() {
    let redis = RedisServer::start();
    let repo = reconciled(&redis);
    let (env, mut args) = real_worker(&redis.url(), &redis);
    solo(&mut args);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start(&redis.url(), "web01", &app_dir(), &args, &env);
    wait_until("the celery worker running", &agent, || {
        heartbeat(&redis, "web01").get("status").map(String::as_str) == Some("running")
    });
    let mut cmd = repo.cmd();
    cmd.args([
        "task",
        "run",
        "tests.record",
        "--target",
        "host:web01",
        "--args",
        r#"["agent"]"#,
        "--wait",
        "--timeout",
        "30",
    ])
    .env("CELEROOT_REDIS_URL", redis.url())
    .env_remove("CELEROOT_BROKER_URL")
    .env_remove("CELEROOT_RESULT_BACKEND");
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}\n{}", agent.log());
    let ran: Vec<String> = redis::cmd("LRANGE")
        .arg("tests:record:agent")
        .arg(0)
        .arg(-1)
        .query(&mut redis.conn())
        .expect("LRANGE");
    assert_eq!(
        ran,
        ["web01"],
        "the worker the agent runs executed the task"
    );
}

/// The environment variables of a running process.
fn environ(pid: &str) -> BTreeMap<String, String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// Issue 16 part 1: a default `celery worker` (prefork, gossip, mingle, heartbeats)
/// runs under its host's own ACL user: it starts, consumes its queues, stores results,
/// answers `celery inspect ping` sent with the same user, and restores an unacked
/// message at shutdown, and Redis logs no denial on the way. The same user cannot reach
/// another host's queue or celeroot's keys, and the worker never sees the agent's URL.
#[test]
fn a_worker_runs_with_its_own_acl_user_and_nothing_more() {
    let redis = RedisServer::start();
    let repo = reconciled(&redis);
    let mut cmd = repo.cmd();
    cmd.args(["hosts", "credentials", "web01"])
        .env("CELEROOT_REDIS_URL", redis.url());
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
    let line = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in {out}"))
            .to_string()
    };
    let (agent_url, broker) = (line("CELEROOT_REDIS_URL"), line("CELEROOT_BROKER_URL"));
    assert_eq!(line("CELEROOT_RESULT_BACKEND"), broker);
    assert!(
        broker.contains("celeroot.production.web01.worker:"),
        "{broker}"
    );

    let _: () = redis::cmd("ACL")
        .arg("LOG")
        .arg("RESET")
        .query(&mut redis.conn())
        .expect("ACL LOG RESET");
    let (mut env, mut args) = real_worker("", &redis);
    env.retain(|(k, _)| !matches!(*k, "CELEROOT_BROKER_URL" | "CELEROOT_RESULT_BACKEND"));
    env.push(("CELEROOT_BROKER_URL", broker.clone()));
    for a in ["--concurrency", "1"] {
        args.extend(["--worker-arg".to_string(), a.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = Agent::start(&agent_url, "web01", &app_dir(), &args, &env);
    wait_until("the celery worker running", &agent, || {
        heartbeat(&redis, "web01").get("status").map(String::as_str) == Some("running")
    });
    let pid = heartbeat(&redis, "web01")
        .get("pid")
        .cloned()
        .unwrap_or_default();
    let worker_env = environ(&pid);
    assert_eq!(worker_env.get("CELEROOT_BROKER_URL"), Some(&broker));
    assert_eq!(worker_env.get("CELEROOT_RESULT_BACKEND"), Some(&broker));
    assert!(
        !worker_env.contains_key("CELEROOT_REDIS_URL"),
        "the worker must not see the agent's credentials"
    );

    let task = |extra: &[&str]| {
        let mut cmd = repo.cmd();
        cmd.args(["task", "run", "tests.sleep", "--target", "host:web01"])
            .args(extra)
            .env("CELEROOT_REDIS_URL", redis.url())
            .env_remove("CELEROOT_BROKER_URL")
            .env_remove("CELEROOT_RESULT_BACKEND");
        run(cmd)
    };
    let (out, code) = task(&["--args", "[0.1]", "--wait", "--timeout", "60"]);
    assert_eq!(code, 0, "{out}\n{}", agent.log());
    assert!(out.contains("SUCCESS"), "{out}");

    // `celery inspect ping`, sent with the worker's own user (as the agent's health check
    // does), is answered.
    let celery = python().with_file_name("celery");
    let ping = Command::new(&celery)
        .args(["-A", "tasks.app", "inspect", "ping", "--timeout", "5"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(app_dir())
        .output()
        .expect("celery inspect ping");
    let said =
        String::from_utf8_lossy(&ping.stdout).into_owned() + &String::from_utf8_lossy(&ping.stderr);
    assert!(ping.status.success() && said.contains("pong"), "{said}");

    // A message the worker holds unacknowledged (a countdown) is back in its queue after
    // a graceful stop.
    let (out, code) = task(&["--args", "[0.1]", "--countdown", "600"]);
    assert_eq!(code, 0, "{out}");
    let unacked = || -> i64 {
        redis::cmd("HLEN")
            .arg("unacked")
            .query(&mut redis.conn())
            .unwrap_or(-1)
    };
    wait_until("the countdown message held unacknowledged", &agent, || {
        unacked() == 1
    });
    drop_gracefully(&mut agent);
    let queued: i64 = redis::cmd("LLEN")
        .arg("celeroot.host.web01")
        .query(&mut redis.conn())
        .expect("LLEN");
    assert_eq!((unacked(), queued), (0, 1), "restored at shutdown");

    let denials: Vec<redis::Value> = redis::cmd("ACL")
        .arg("LOG")
        .query(&mut redis.conn())
        .expect("ACL LOG");
    assert!(denials.is_empty(), "Redis refused the worker: {denials:?}");

    // What the same user may not do.
    let mut c = redis::Client::open(broker.as_str())
        .expect("client")
        .get_connection()
        .expect("log in as web01's worker");
    for (cmd, key) in [
        ("LLEN", "celeroot.host.web02"),
        ("LLEN", "database"),
        ("LPUSH", "celeroot.host.web02"),
        ("HGETALL", "celeroot:{production}:worker:web01"),
        ("GET", "celeroot:{production}:applied"),
        ("HGETALL", "celeroot:{production}:redbeat:fleet-ping"),
    ] {
        let mut q = redis::cmd(cmd);
        q.arg(key);
        if cmd == "LPUSH" {
            q.arg("x");
        }
        let e = q
            .query::<redis::Value>(&mut c)
            .expect_err(&format!("{cmd} {key} must be refused"));
        assert!(
            e.to_string().to_lowercase().contains("noperm"),
            "{cmd} {key}: {e}"
        );
    }
    for denied in [
        &["FLUSHDB"][..],
        &["ACL", "WHOAMI"],
        &["CLIENT", "KILL", "ID", "1"],
    ] {
        let e = redis::cmd(denied[0])
            .arg(&denied[1..])
            .query::<redis::Value>(&mut c)
            .expect_err(&format!("{denied:?} must be refused"));
        assert!(
            e.to_string().to_lowercase().contains("noperm"),
            "{denied:?}: {e}"
        );
    }
}

/// SIGTERM, and wait for the agent (and so its worker) to exit.
fn drop_gracefully(agent: &mut Agent) {
    if let Some(mut c) = agent.child.take() {
        if let Ok(pid) = i32::try_from(c.id()) {
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = c.kill();
        let _ = c.wait();
        panic!("the agent did not stop within 30 s:\n{}", agent.log());
    }
}
