//! Issue 19, part 3: RabbitMQ as Celery's broker. A real rabbitmq-server per test
//! (common/rabbitmq.rs), real Celery workers of the scaffold app on it, results and
//! RedBeat in a real redis-server; `celeroot task` publishes protocol-v2 messages over
//! AMQP with publisher confirms to quorum queues declared as the workers declare them.

use std::time::Duration;

use crate::common::celery::{python, worker_env, CeleryProcess};
use crate::common::rabbitmq::{RabbitMq, PASSWORD};
use crate::common::redis::RedisServer;
use crate::common::{run, TestRepo};
use crate::test_task::id_for;

/// The example, with `broker: {transport: amqp}` in its Cluster (`queue_type` added when
/// given).
fn amqp_example(queue_type: Option<&str>) -> TestRepo {
    let mut repo = TestRepo::with_example();
    let extra = queue_type.map_or(String::new(), |q| format!("    queueType: {q}\n"));
    repo.edit(
        "manifests/cluster.yaml",
        "  timezone: Europe/Berlin\n",
        &format!("  timezone: Europe/Berlin\n  broker:\n    transport: amqp\n{extra}"),
    );
    repo.commit("example on RabbitMQ");
    repo
}

/// What the agent gives a worker of the cluster on RabbitMQ (the rendered worker.env's
/// two lines and the broker URL), results in `redis`.
fn amqp_env(mq: &RabbitMq, redis: &RedisServer, host: &str) -> Vec<(&'static str, String)> {
    let mut env = worker_env(&redis.url(), "production", host, "Europe/Berlin");
    for (k, v) in &mut env {
        if *k == "CELEROOT_BROKER_URL" {
            *v = mq.url();
        }
    }
    env.push(("CELEROOT_BROKER_TRANSPORT", "amqp".into()));
    env.push(("CELEROOT_QUEUE_TYPE", "quorum".into()));
    env
}

fn task(repo: &TestRepo, redis: &RedisServer, broker: &str, args: &[&str]) -> (String, i32) {
    let mut cmd = repo.cmd();
    cmd.arg("task")
        .args(args)
        .env("CELEROOT_REDIS_URL", redis.url())
        .env("CELEROOT_BROKER_URL", broker)
        .env_remove("CELEROOT_RESULT_BACKEND");
    run(cmd)
}

fn queue<'a>(qs: &'a [(String, String, u64)], name: &str) -> Option<&'a (String, String, u64)> {
    qs.iter().find(|q| q.0 == name)
}

#[test]
fn task_run_over_amqp_reaches_a_worker_through_quorum_queues() {
    let mq = RabbitMq::start();
    let redis = RedisServer::start();
    let repo = amqp_example(None);
    let url = mq.url();

    // Before any worker exists: celeroot declares the host's queue (quorum, as the worker
    // will) and the confirmed message waits in it.
    let (out, code) = task(
        &repo,
        &redis,
        &url,
        &["run", "celeroot.ping", "--target", "host:web01"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("via amqp://celeroot:***@127.0.0.1:{}//:", mq.port)),
        "{out}"
    );
    assert!(!out.contains(PASSWORD), "{out}");
    let early = id_for(&out, "host/web01");
    let qs = mq.queues();
    assert_eq!(
        queue(&qs, "celeroot.host.web01").map(|q| q.1.as_str()),
        Some("quorum"),
        "{qs:?}"
    );
    assert_eq!(mq.ready("celeroot.host.web01"), Some(1));

    // A worker of the scaffold app on the same queues declares them the same way (a
    // mismatch would stop it with PRECONDITION_FAILED) and runs the waiting task.
    let w = CeleryProcess::worker(
        &amqp_env(&mq, &redis, "web01"),
        &["app", "webserver", "celeroot.host.web01"],
        "web01",
    );
    w.wait_for_log(
        &format!("Task celeroot.ping[{early}] succeeded"),
        Duration::from_secs(30),
    );
    let qs = mq.queues();
    for name in ["app", "webserver", "celeroot.host.web01"] {
        assert_eq!(
            queue(&qs, name).map(|q| q.1.as_str()),
            Some("quorum"),
            "{name}: {qs:?}"
        );
    }

    // --wait: the result comes back from the Redis result backend (--redis, as the
    // agent gives its workers when the broker is RabbitMQ).
    let (out, code) = task(
        &repo,
        &redis,
        &url,
        &[
            "run",
            "celeroot.ping",
            "--target",
            "role:application",
            "--mode",
            "any",
            "--wait",
        ],
    );
    assert_eq!(code, 0, "{out}\n{}", w.log_text());
    assert!(out.contains("1 succeeded."), "{out}");
    assert!(out.contains(r#"{"pong":true,"host":"web01"}"#), "{out}");

    // A task with an ETA, revoked over the celery.pidbox fanout exchange before it runs.
    let (out, code) = task(
        &repo,
        &redis,
        &url,
        &[
            "run",
            "tests.record",
            "--target",
            "host:web01",
            "--args",
            r#"["revoked"]"#,
            "--countdown",
            "3",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let id = id_for(&out, "host/web01");
    let (out, code) = task(&repo, &redis, &url, &["revoke", &id]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("broadcast to the listening workers"), "{out}");
    w.wait_for_log(
        &format!("Discarding revoked task: tests.record[{id}]"),
        Duration::from_secs(20),
    );
    let (out, code) = task(&repo, &redis, &url, &["status", &id]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("REVOKED"), "{out}");
    let ran: i64 = redis::cmd("LLEN")
        .arg("tests:record:revoked")
        .query(&mut redis.conn())
        .expect("LLEN");
    assert_eq!(ran, 0, "the revoked task ran");
}

#[test]
fn a_broker_that_is_not_the_manifests_or_refuses_sends_nothing() {
    let mq = RabbitMq::start();
    let redis = RedisServer::start();
    let repo = amqp_example(None);
    let before = mq.queues();

    // The Cluster says amqp; a Redis broker URL is refused before anything is sent.
    let (out, code) = task(
        &repo,
        &redis,
        &redis.url(),
        &["run", "celeroot.ping", "--target", "host:web01"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("is Redis, but the Cluster manifest's broker.transport is amqp"),
        "{out}"
    );
    assert!(out.contains("nothing was sent"), "{out}");
    let mut conn = redis.conn();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).expect("KEYS");
    assert!(keys.is_empty(), "{keys:?}");

    // A wrong password: refused by RabbitMQ, and the message never shows a password.
    let wrong = mq.url().replace(PASSWORD, "not-the-password");
    let (out, code) = task(
        &repo,
        &redis,
        &wrong,
        &["run", "celeroot.ping", "--target", "host:web01"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cannot connect to the broker at amqp://celeroot:***@"),
        "{out}"
    );
    assert!(
        !out.contains("not-the-password") && !out.contains(PASSWORD),
        "{out}"
    );
    assert!(out.contains("nothing was sent"), "{out}");

    // Nobody listening on the port.
    let (out, code) = task(
        &repo,
        &redis,
        "amqp://celeroot:x@127.0.0.1:9//",
        &["run", "celeroot.ping", "--target", "host:web01"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot connect to the broker"), "{out}");

    // A bad URL is a usage error.
    let (out, code) = task(
        &repo,
        &redis,
        "amqp://127.0.0.1:5672/?heartbeat=1",
        &["run", "celeroot.ping", "--target", "host:web01"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("query parameters are not supported"), "{out}");
    assert_eq!(mq.queues(), before);

    // A queue that exists as a classic queue while the Cluster asks for quorum queues:
    // named, with what to do, and nothing published to it.
    let declared = std::process::Command::new(python())
        .args([
            "-c",
            "import sys, amqp\nc = amqp.Connection('127.0.0.1:%s' % sys.argv[1], userid='celeroot', password=sys.argv[2])\nc.connect()\nc.channel().queue_declare('celeroot.host.web02', durable=True, auto_delete=False)\nc.close()",
            &mq.port.to_string(),
            PASSWORD,
        ])
        .output()
        .expect("python");
    assert!(declared.status.success(), "{declared:?}");
    let (out, code) = task(
        &repo,
        &redis,
        &mq.url(),
        &["run", "celeroot.ping", "--target", "host:web02"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("queue celeroot.host.web02 exists with other arguments than a quorum queue"),
        "{out}"
    );
    let qs = mq.queues();
    assert_eq!(
        queue(&qs, "celeroot.host.web02").map(|q| q.1.as_str()),
        Some("classic"),
        "{qs:?}"
    );
    assert_eq!(mq.ready("celeroot.host.web02"), Some(0));

    // queueType is for RabbitMQ only: a located error.
    let mut bad = TestRepo::with_example();
    bad.edit(
        "manifests/cluster.yaml",
        "  timezone: Europe/Berlin\n",
        "  timezone: Europe/Berlin\n  broker:\n    queueType: classic\n",
    );
    bad.commit("queueType without amqp");
    let mut cmd = bad.cmd();
    cmd.arg("validate");
    let (out, code) = run(cmd);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("manifests/cluster.yaml:12:16"), "{out}");
    assert!(
        out.contains("broker.queueType applies to RabbitMQ only"),
        "{out}"
    );
}

#[test]
fn a_message_the_broker_refuses_is_named_and_the_others_delivered() {
    let mq = RabbitMq::start();
    let redis = RedisServer::start();
    // Classic queues, where RabbitMQ enforces a length limit exactly (a quorum queue
    // checks it asynchronously and lets a few more in).
    let repo = amqp_example(Some("classic"));
    let url = mq.url();
    // web01's queue holds at most one message and refuses more (a policy: the queue's
    // declared arguments stay celeroot's and Celery's).
    mq.ctl(&[
        "set_policy",
        "--apply-to",
        "queues",
        "full",
        "^celeroot\\.host\\.web01$",
        r#"{"max-length":1,"overflow":"reject-publish"}"#,
    ]);
    let (out, code) = task(
        &repo,
        &redis,
        &url,
        &["run", "celeroot.ping", "--target", "host:web01"],
    );
    assert_eq!(code, 0, "{out}");
    let (out, code) = task(
        &repo,
        &redis,
        &url,
        &[
            "run",
            "celeroot.ping",
            "--target",
            "host:web01",
            "--target",
            "host:web02",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("1 of 2 message(s) not confirmed (1 delivered)")
            && out.contains("to queue celeroot.host.web01: the broker refused it (nack)"),
        "{out}"
    );
    assert!(!out.contains("nothing was sent"), "{out}");
    assert_eq!(mq.ready("celeroot.host.web01"), Some(1));
    assert_eq!(mq.ready("celeroot.host.web02"), Some(1));
}
