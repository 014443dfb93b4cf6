//! Issue 16, the test that proves it: from a pushed commit to workers and a beat that
//! really run it, with real parts only. Two sshd hosts on loopback addresses, one
//! redis-server, the pinned Celery virtualenv linked into each deployed release, a real
//! agent per host running a real worker from that release with the rendered
//! environment and its own credentials, real `celery beat` under `celeroot beat`, and
//! `celeroot watch` shipping a change of the task code.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::agent::{heartbeat, AgentProcess};
use crate::common::celery::{python, worker_env, CeleryProcess};
use crate::common::daemon::{BareRepo, Daemon};
use crate::common::rabbitmq::RabbitMq;
use crate::common::redis::RedisServer;
use crate::common::sshd::SshLab;
use crate::common::{run, TestRepo};

const WAIT: Duration = Duration::from_secs(60);

/// The task both hosts run: it says which code (`VERSION`) ran where.
fn e2e_tasks(version: &str) -> String {
    format!(
        "import os\n\nfrom tasks.app import app\n\nVERSION = \"{version}\"\n\n\n@app.task(name=\"e2e.where\")\ndef where():\n    return {{\"version\": VERSION, \"host\": os.environ.get(\"CELEROOT_HOST\", \"?\")}}\n"
    )
}

/// The virtualenv of the pinned Celery stack (`<venv>/bin/python`).
fn venv() -> PathBuf {
    python()
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("the virtualenv of CELEROOT_PYTHON")
}

fn target(lab: &SshLab, i: usize) -> PathBuf {
    crate::common::agent::lab_target(lab, i)
}

/// Cluster `lab` (see [`crate::common::agent::lab_repo`]) with `tick` every 2 s on
/// host-1 only and `tasks/e2e.py`; the setup command links the virtualenv into each
/// release (there is no network for `uv sync`).
fn lab_repo(lab: &SshLab, amqp: bool) -> TestRepo {
    let mut repo =
        crate::common::agent::lab_repo(lab, &format!("[ln, -sfn, {}, .venv]", venv().display()));
    if amqp {
        repo.edit(
            "manifests/cluster.yaml",
            "  timezone: Europe/Berlin\n",
            "  timezone: Europe/Berlin\n  broker:\n    transport: amqp\n",
        );
    }
    repo.write(
        "manifests/schedules/tick.yaml",
        "apiVersion: celeroot.io/v1\nkind: Schedule\nmetadata:\n  name: tick\nspec:\n  every: 2s\n  task: e2e.where\n  targets:\n    - host: host-1\n",
    );
    let app = repo.read("tasks/app.py").replace(
        "imports=[\"tasks.system\", *extra]",
        "imports=[\"tasks.system\", \"tasks.e2e\", *extra]",
    );
    repo.write("tasks/app.py", &app);
    repo.write("tasks/e2e.py", &e2e_tasks("v1"));
    repo.commit("lab");
    repo
}

/// `KEY=value` lines of a rendered env file.
fn env_file(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A celeroot command with only the rendered environment of host `i` (as its units get
/// it) and PATH.
fn on_host(lab: &SshLab, i: usize, args: &[&str]) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("celeroot"));
    cmd.args(args)
        .current_dir(target(lab, i))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .envs(env_file(&target(lab, i).join("shared/worker.env")));
    cmd
}

/// The results of `e2e.where` in `redis` (database `db`): (version, host) per task.
fn results(redis: &RedisServer, db: u8) -> Vec<(String, String)> {
    let mut c = redis::Client::open(redis.url().replace("/0", &format!("/{db}")))
        .and_then(|c| c.get_connection())
        .expect("connect");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("celery-task-meta-*")
        .query(&mut c)
        .unwrap_or_default();
    keys.iter()
        .filter_map(|k| redis::cmd("GET").arg(k).query::<String>(&mut c).ok())
        .filter_map(|v| serde_json::from_str::<serde_json::Value>(&v).ok())
        .filter(|v| v["name"] == "e2e.where" && v["status"] == "SUCCESS")
        .map(|v| {
            (
                v["result"]["version"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                v["result"]["host"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn count(redis: &RedisServer, version: &str, host: &str) -> usize {
    results(redis, 0)
        .iter()
        .filter(|(v, h)| v == version && h == host)
        .count()
}

fn wait_for(what: &str, logs: &[&AgentProcess], cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs: Vec<String> = logs.iter().map(|p| p.log_text()).collect();
    panic!("timed out waiting for {what}\n{}", logs.join("\n----\n"));
}

fn beat(lab: &SshLab, redis: &RedisServer, mq: Option<&RabbitMq>, id: &str) -> AgentProcess {
    let release = target(lab, 0).join("current").display().to_string();
    let mut cmd = on_host(
        lab,
        0,
        &[
            "beat",
            "--id",
            id,
            "--cluster",
            "lab",
            "--release-dir",
            &release,
            "--max-interval",
            "1s",
            "--lock-timeout",
            "4s",
            "--heartbeat-interval",
            "300ms",
            "--heartbeat-ttl",
            "3s",
        ],
    );
    // /etc/celeroot/beat.env of the unit: beat's Redis URL (and RabbitMQ's).
    cmd.env("CELEROOT_REDIS_URL", redis.url());
    if let Some(mq) = mq {
        cmd.env("CELEROOT_BROKER_URL", mq.url());
    }
    AgentProcess::spawn(cmd)
}

fn beat_field(redis: &RedisServer, id: &str, field: &str) -> String {
    redis::cmd("HGET")
        .arg(format!("celeroot:{{lab}}:beat:{id}"))
        .arg(field)
        .query::<Option<String>>(&mut redis.conn())
        .ok()
        .flatten()
        .unwrap_or_default()
}

#[test]
fn a_pushed_commit_reaches_workers_and_a_beat_that_run_it() {
    pushed_commit_story(None);
}

/// Issue 19, part 3: the same story with RabbitMQ as the broker (quorum queues), the live
/// state, results and RedBeat in Redis.
#[test]
fn a_pushed_commit_reaches_workers_and_a_beat_on_rabbitmq() {
    let mq = RabbitMq::start();
    pushed_commit_story(Some(&mq));
    let qs = mq.queues();
    for q in ["worker", "celeroot.host.host-1", "celeroot.host.host-2"] {
        assert!(
            qs.iter()
                .any(|(name, kind, _)| name == q && kind == "quorum"),
            "{q} is not a quorum queue: {qs:?}"
        );
    }
}

fn pushed_commit_story(mq: Option<&RabbitMq>) {
    let lab = SshLab::start(2);
    let redis = RedisServer::start();
    let mut repo = lab_repo(&lab, mq.is_some());
    let celeroot = |args: &[&str]| {
        let mut cmd = repo.cmd();
        cmd.args(args).env("CELEROOT_REDIS_URL", redis.url());
        if let Some(mq) = mq {
            cmd.env("CELEROOT_BROKER_URL", mq.url());
        }
        run(cmd)
    };
    let known = lab.known_hosts.display().to_string();

    // A second cluster on the same redis-server, in database 1 (a database holds one
    // cluster), whose worker consumes the same queue name as lab's host-1.
    let mut other = TestRepo::empty();
    other.write(
        "manifests/cluster.yaml",
        "apiVersion: celeroot.io/v1\nkind: Cluster\nmetadata:\n  name: other\nspec: {}\n",
    );
    other.write(
        "manifests/role.yaml",
        "apiVersion: celeroot.io/v1\nkind: Role\nmetadata:\n  name: worker\nspec: {}\n",
    );
    other.write("manifests/host.yaml", "apiVersion: celeroot.io/v1\nkind: Host\nmetadata:\n  name: host-1\nspec:\n  address: 192.0.2.50\n  roles: [worker]\n");
    other.commit("other");
    let db1 = redis.url().replace("/0", "/1");
    let mut cmd = other.cmd();
    cmd.args(["reconcile"]).env("CELEROOT_REDIS_URL", &db1);
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
    let other_worker = CeleryProcess::worker(
        &worker_env(&db1, "other", "host-1", "UTC"),
        &["worker", "celeroot.host.host-1"],
        "other-host-1",
    );

    // reconcile applies and deploys; each host gets its credentials over SSH.
    let (out, code) = celeroot(&["reconcile", "--known-hosts", &known]);
    assert_eq!(code, 0, "{out}");
    for h in ["host-1", "host-2"] {
        let (out, code) = celeroot(&[
            "hosts",
            "credentials",
            h,
            "--install",
            "--known-hosts",
            &known,
        ]);
        assert_eq!(code, 0, "{out}");
    }
    assert!(target(&lab, 0).join("current/.venv/bin/celery").exists());

    // An agent per host, from the deployed release, with the rendered environment and no
    // Redis URL but the credentials file.
    let agents: Vec<AgentProcess> = (0..2)
        .map(|i| {
            let release = target(&lab, i).join("current").display().to_string();
            let mut cmd = on_host(
                &lab,
                i,
                &[
                    "agent",
                    "--release-dir",
                    &release,
                    "--ping-interval",
                    "2s",
                    "--heartbeat-interval",
                    "300ms",
                    "--heartbeat-ttl",
                    "3s",
                    "--reread-interval",
                    "500ms",
                    "--worker-arg",
                    "--pool",
                    "--worker-arg",
                    "solo",
                ],
            );
            // /etc/celeroot/agent.env: on RabbitMQ, the broker's URL (the credentials
            // file's Redis user then holds the results only).
            if let Some(mq) = mq {
                cmd.env("CELEROOT_BROKER_URL", mq.url());
            }
            AgentProcess::spawn(cmd)
        })
        .collect();
    let logs: Vec<&AgentProcess> = agents.iter().collect();
    for h in ["host-1", "host-2"] {
        wait_for(&format!("{h}'s worker answering its ping"), &logs, || {
            let hb = heartbeat(&mut redis.conn(), "lab", h);
            hb.get("ping").map(String::as_str) == Some("ok")
                && hb.get("broker").map(String::as_str) == Some("ok")
        });
    }

    // celeroot beat runs real beat; the schedule runs on host-1's worker only.
    let mut b1 = beat(&lab, &redis, mq, "b1");
    wait_for("b1 active", &[&b1], || {
        beat_field(&redis, "b1", "status") == "active"
    });
    wait_for("ticks on host-1", &[&b1, &agents[0]], || {
        count(&redis, "v1", "host-1") >= 2
    });

    // task run --wait returns the worker's result.
    let (out, code) = celeroot(&[
        "task",
        "run",
        "e2e.where",
        "--target",
        "host:host-2",
        "--wait",
        "--timeout",
        "30",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("host-2") && out.contains("v1"), "{out}");
    let ran = results(&redis, 0);
    assert!(
        ran.iter().filter(|(_, h)| h == "host-2").count() == 1,
        "only the task run reached host-2: {ran:?}"
    );

    // status: both hosts ok, the beat active.
    let (out, code) = celeroot(&["status"]);
    assert_eq!(code, 0, "{out}");
    for h in ["host-1", "host-2"] {
        let row = out.lines().find(|l| l.starts_with(h)).unwrap_or_default();
        assert!(row.trim_end().ends_with(" ok"), "{h}: {out}");
    }
    assert!(out.contains("beat:     b1 active"), "{out}");

    // Kill the beat: status says so within its TTL (and the lock's).
    let beat_pid: i32 = beat_field(&redis, "b1", "beat_pid")
        .parse()
        .expect("beat_pid");
    b1.kill();
    unsafe { libc::kill(beat_pid, libc::SIGKILL) };
    let killed = Instant::now();
    wait_for("status saying the beat is missing", &[], || {
        celeroot(&["status"]).0.contains("beat:     ! beat-missing")
    });
    let noticed = killed.elapsed();
    assert!(noticed <= Duration::from_secs(10), "took {noticed:?}");
    let (out, code) = celeroot(&["drift"]);
    assert_eq!(code, 2, "{out}");

    // A second beat: schedules fire again.
    let before = count(&redis, "v1", "host-1");
    let b2 = beat(&lab, &redis, mq, "b2");
    wait_for("ticks again", &[&b2], || {
        count(&redis, "v1", "host-1") >= before + 2
    });

    // Push a change of the task code: watch applies and deploys it, the agent restarts
    // its worker on the new release, and the next run uses the new code.
    let bare = BareRepo::new();
    bare.push_from(&repo, "main");
    let mq_url = mq.map(RabbitMq::url);
    let mut daemon_args = vec![
        "--branch",
        "main",
        "--interval",
        "1s",
        "--known-hosts",
        &known,
    ];
    // On RabbitMQ the daemon's run collector reads the task events there.
    if let Some(u) = &mq_url {
        daemon_args.extend(["--broker", u.as_str()]);
    }
    let mut daemon = Daemon::start(&bare.url(), &redis.url(), &daemon_args);
    daemon.wait_for("leading", WAIT, Daemon::is_leader);
    repo.write("tasks/e2e.py", &e2e_tasks("v2"));
    repo.commit("e2e: v2");
    bare.push_from(&repo, "main");
    wait_for("a tick running the new code", &[&b2, &agents[0]], || {
        count(&redis, "v2", "host-1") >= 1
    });
    let status = daemon.status();
    assert_eq!(status["lastDeploy"]["result"], "ok", "{status}");
    // The daemon's run collector recorded the ticks from the workers' events (the agent
    // runs them with -E), from Redis pub/sub or RabbitMQ's celeryev exchange.
    runs_recorded(&repo, &redis, &mut daemon, &agents[0]);
    assert_eq!(count(&redis, "v2", "host-2"), 0);

    // The second cluster's worker, on the same queue name in database 1, got nothing.
    assert!(results(&redis, 1).is_empty());
    assert!(
        !other_worker.log_text().contains("e2e.where"),
        "{}",
        other_worker.log_text()
    );
    // And that cluster may not share lab's database.
    let mut cmd = other.cmd();
    cmd.args(["reconcile"])
        .env("CELEROOT_REDIS_URL", redis.url());
    let (out, code) = run(cmd);
    assert_eq!(code, 1, "{out}");
    eprintln!(
        "beat missing noticed by status {:.1} s after SIGKILL",
        noticed.as_secs_f64()
    );
}

/// The daemon's run collector recorded the ticks from the workers' events: where each ran
/// and how it ended; its run health is in /status and /metrics.
fn runs_recorded(repo: &TestRepo, redis: &RedisServer, daemon: &mut Daemon, agent: &AgentProcess) {
    wait_for("runs recorded by watch", &[agent], || {
        let mut cmd = repo.cmd();
        cmd.args(["runs", "tick", "-o", "json"])
            .env("CELEROOT_REDIS_URL", redis.url());
        let (out, _) = run(cmd);
        out.contains("\"state\": \"succeeded\"") && out.contains("\"host\": \"host-1\"")
    });
    // Its evaluation of the schedules' run health: in /status and /metrics.
    daemon.wait_for("the run health in /status", WAIT, |d| {
        d.status()["schedules"]["counts"]["ok"].as_u64() == Some(1)
    });
    let (code, metrics) = daemon.get("/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("celeroot_schedule_targets{state=\"ok\"} 1")
            && metrics.contains("celeroot_schedule_state{schedule=\"tick\",state=\"ok\"} 1")
            && metrics
                .contains("celeroot_schedule_last_success_timestamp_seconds{schedule=\"tick\"}"),
        "{metrics}"
    );
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(
        counter("celeroot_run_events_total ") > 0 && counter("celeroot_run_updates_total ") > 0,
        "the collector's counters: {metrics}"
    );
}
