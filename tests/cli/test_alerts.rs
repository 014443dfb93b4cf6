//! Alerts (issue 17 part 4): `celeroot watch` notifies a real HTTP receiver on loopback in
//! Slack's, a signed generic webhook's and PagerDuty Events v2's formats when a schedule
//! target goes late, then missed, and resolves when it runs again; each change once.

use std::time::{Duration, Instant};

use crate::common::celery::{worker_env, CeleryProcess};
use crate::common::daemon::{BareRepo, Daemon};
use crate::common::receiver::Receiver;
use crate::common::redis::RedisServer;
use crate::common::TestRepo;

const WAIT: Duration = Duration::from_secs(60);

fn wait_until(what: &str, mut cond: impl FnMut() -> bool, log: impl Fn() -> String) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}\n{}", log());
}

/// Cluster `fleet` with `alerts` (the YAML under `spec:`), host h2 of role `worker`
/// running no worker, and `backup` every 2 s (grace 2 s) on h2, labelled team=db; pushed
/// to a bare repository for `celeroot watch`.
fn alerting_fleet(alerts: &str) -> (TestRepo, BareRepo) {
    let mut repo = TestRepo::empty();
    repo.write(
        "manifests/cluster.yaml",
        &format!(
            "apiVersion: celeroot.io/v1\nkind: Cluster\nmetadata:\n  name: fleet\nspec:\n{alerts}"
        ),
    );
    repo.write(
        "manifests/role.yaml",
        "apiVersion: celeroot.io/v1\nkind: Role\nmetadata:\n  name: worker\nspec: {}\n",
    );
    repo.write(
        "manifests/h2.yaml",
        "apiVersion: celeroot.io/v1\nkind: Host\nmetadata:\n  name: h2\nspec:\n  address: 192.0.2.2\n  roles: [worker]\n",
    );
    repo.write(
        "manifests/backup.yaml",
        "apiVersion: celeroot.io/v1\nkind: Schedule\nmetadata:\n  name: backup\n  labels:\n    team: db\nspec:\n  every: 2s\n  grace: 2s\n  task: tests.record\n  args: [backup]\n  targets:\n    - host: h2\n",
    );
    repo.commit("fleet");
    let bare = BareRepo::new();
    bare.push_from(&repo, "main");
    (repo, bare)
}

/// A `watch` daemon on `main` that evaluates run health every 500 ms (so alerts go out
/// quickly), with `env` set.
fn alerting_daemon(bare: &str, redis: &str, env: &[(&str, &str)]) -> Daemon {
    Daemon::start_with_env(
        bare,
        redis,
        &[
            "--branch",
            "main",
            "--health-interval",
            "500ms",
            "--skip-deploy",
        ],
        "daemon@ci",
        env,
    )
}

#[test]
fn a_missed_schedule_is_told_once_per_change_on_every_channel_and_resolved() {
    let redis = RedisServer::start();
    let rx = Receiver::start();
    let dir = tempfile::tempdir().expect("tmp");
    let secret = dir.path().join("hook-secret");
    std::fs::write(&secret, "hook-key\n").expect("secret");
    let (_repo, bare) = alerting_fleet(&format!(
        "  alerts:\n    channels:\n      - name: ops\n        slack:\n          webhookUrl: env:TEST_SLACK_URL\n      - name: hook\n        webhook:\n          url: {}\n          secret: file:{}\n      - name: pager\n        pagerduty:\n          routingKey: env:TEST_PD_KEY\n          eventsUrl: {}\n    routes:\n      - channels: [ops, hook]\n      - matchLabels: {{team: db}}\n        states: [missed]\n        channels: [pager]\n",
        rx.url("/hook"),
        secret.display(),
        rx.url("/pagerduty/v2/enqueue"),
    ));
    let slack_url = rx.url("/slack/services/T000/B000/XXXX");
    let mut daemon = alerting_daemon(
        &bare.url(),
        &redis.url(),
        &[
            ("TEST_SLACK_URL", &slack_url),
            ("TEST_PD_KEY", "pd-routing-key"),
        ],
    );
    daemon.wait_for("leading", WAIT, Daemon::is_leader);
    let env = worker_env(&redis.url(), "fleet", "h2", "UTC");
    let _beat = CeleryProcess::beat(&env, 1);

    // h2 runs no worker: late, then missed, on ops and hook; missed on pager.
    wait_until(
        "late and missed on every channel",
        || {
            rx.requests("/slack").len() >= 2
                && rx.requests("/hook").len() >= 2
                && !rx.requests("/pagerduty").is_empty()
        },
        || daemon.log(),
    );
    let slack = rx.requests("/slack");
    let texts: Vec<String> = slack
        .iter()
        .map(|r| r.json()["text"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        texts[0].starts_with("[fleet] schedule backup on host/h2 is late"),
        "{texts:?}"
    );
    assert!(
        texts[1].starts_with("[fleet] schedule backup on host/h2 is missed"),
        "{texts:?}"
    );
    assert_eq!(slack[0].json()["attachments"][0]["color"], "warning");
    assert_eq!(slack[1].json()["attachments"][0]["color"], "danger");
    let hook = rx.requests("/hook");
    assert!(rx.requests("/").iter().all(|r| r.method == "POST"));
    for h in &hook {
        let want = celeroot::runs::alert::signature(b"hook-key", &h.body);
        assert_eq!(
            h.headers.get("x-celeroot-signature"),
            Some(&want),
            "signed with the file's key"
        );
        assert_eq!(
            h.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
    }
    let (late, missed) = (hook[0].json(), hook[1].json());
    assert_eq!(
        (
            late["event"].as_str(),
            late["state"].as_str(),
            late["previous"].as_str()
        ),
        (Some("schedule-problem"), Some("late"), None)
    );
    assert_eq!(
        (
            missed["state"].as_str(),
            missed["previous"].as_str(),
            missed["cluster"].as_str(),
            missed["target"].as_str()
        ),
        (Some("missed"), Some("late"), Some("fleet"), Some("host/h2"))
    );
    let pd = rx.requests("/pagerduty");
    let trigger = pd[0].json();
    assert_eq!(trigger["routing_key"], "pd-routing-key");
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], "celeroot/fleet/backup/host/h2");
    assert_eq!(trigger["payload"]["severity"], "error");
    assert_eq!(trigger["payload"]["source"], "celeroot/fleet");
    assert!(trigger["payload"]["summary"]
        .as_str()
        .is_some_and(|s| s.contains("is missed")));

    // h2's worker comes: the waiting task runs, the target is fine, every channel is told.
    let _h2 = CeleryProcess::worker(&env, &["celeroot.host.h2"], "h2");
    wait_until(
        "resolves",
        || {
            rx.requests("/slack").len() >= 3
                && rx.requests("/hook").len() >= 3
                && rx.requests("/pagerduty").len() >= 2
        },
        || daemon.log(),
    );
    let slack = rx.requests("/slack");
    assert!(
        slack[2].json()["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("[fleet] schedule backup on host/h2 recovered")),
        "{:?}",
        slack[2].json()
    );
    assert_eq!(
        rx.requests("/hook")[2].json()["event"],
        "schedule-recovered"
    );
    assert_eq!(
        rx.requests("/pagerduty")[1].json(),
        serde_json::json!({"routing_key": "pd-routing-key", "event_action": "resolve", "dedup_key": "celeroot/fleet/backup/host/h2"})
    );
    // Evaluated every 500 ms, but each change was told once.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        rx.requests("/slack").len(),
        3,
        "{:?}",
        rx.requests("/slack")
            .iter()
            .map(Receiver::text_of)
            .collect::<Vec<_>>()
    );
    assert_eq!(rx.requests("/hook").len(), 3);
    assert_eq!(rx.requests("/pagerduty").len(), 2);
    let (_, metrics) = daemon.get("/metrics");
    assert!(
        metrics.contains("celeroot_alerts_total{channel=\"ops\",result=\"sent\"} 3"),
        "{metrics}"
    );
    assert!(
        !daemon.log().contains("pd-routing-key") && !daemon.log().contains("/slack/services"),
        "no secret in the log"
    );
}

/// `python -m aiosmtpd` on a free loopback port (messages printed to its log by the
/// Debugging handler); with a certificate it offers STARTTLS and requires it.
struct SmtpServer {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
}

impl SmtpServer {
    fn start(
        dir: &std::path::Path,
        name: &str,
        tls: Option<(&std::path::Path, &std::path::Path)>,
    ) -> SmtpServer {
        let port = crate::common::daemon::free_port();
        let log = dir.join(format!("{name}.log"));
        let mut cmd = std::process::Command::new(crate::common::celery::python());
        cmd.args([
            "-u",
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
        ]);
        if let Some((cert, key)) = tls {
            cmd.arg("--tlscert").arg(cert).arg("--tlskey").arg(key);
        }
        let child = cmd
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("aiosmtpd (in the test virtualenv)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "aiosmtpd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        SmtpServer { child, port, log }
    }

    fn received(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test CA and a server certificate for 127.0.0.1 signed by it (openssl).
fn certificates(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let ok = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl")
            .success();
        assert!(ok, "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=celeroot test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
    ]);
    (dir.join("ca.pem"), dir.join("srv.pem"), dir.join("srv.key"))
}

/// E-mail over SMTP with STARTTLS to a real SMTP server; a server that offers no TLS is
/// refused unless the channel says `tls: none`.
#[test]
fn email_alerts_go_over_starttls_and_a_server_without_tls_is_refused() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let (ca, cert, key) = certificates(dir.path());
    let tls = SmtpServer::start(dir.path(), "tls", Some((&cert, &key)));
    let plain = SmtpServer::start(dir.path(), "plain", None);
    let (_repo, bare) = alerting_fleet(&format!(
        "  alerts:\n    channels:\n      - name: mail\n        email:\n          server: 127.0.0.1:{}\n          from: celeroot@example.org\n          to: [ops@example.org, db@example.org]\n          caFile: {}\n      - name: refused\n        email:\n          server: 127.0.0.1:{}\n          from: celeroot@example.org\n          to: [ops@example.org]\n      - name: plain\n        email:\n          server: 127.0.0.1:{}\n          from: celeroot@example.org\n          to: [ops@example.org]\n          tls: none\n    routes:\n      - states: [missed]\n        channels: [mail, refused, plain]\n",
        tls.port,
        ca.display(),
        plain.port,
        plain.port
    ));
    let mut daemon = alerting_daemon(&bare.url(), &redis.url(), &[]);
    daemon.wait_for("leading", WAIT, Daemon::is_leader);
    let _beat = CeleryProcess::beat(&worker_env(&redis.url(), "fleet", "h2", "UTC"), 1);

    wait_until(
        "the missed e-mails",
        || tls.received().contains("is missed") && plain.received().contains("is missed"),
        || {
            format!(
                "{}\n---- tls ----\n{}\n---- plain ----\n{}",
                daemon.log(),
                tls.received(),
                plain.received()
            )
        },
    );
    let got = tls.received();
    assert!(
        got.contains("Subject: [fleet] schedule backup on host/h2 is missed"),
        "{got}"
    );
    assert!(
        got.contains("From: celeroot@example.org")
            && got.contains("ops@example.org, db@example.org"),
        "{got}"
    );
    assert!(
        got.contains("schedule: backup") && got.contains("state:    missed"),
        "{got}"
    );
    wait_until(
        "the refused channel's failure",
        || daemon.log().contains("alert not delivered"),
        || daemon.log(),
    );
    let log = daemon.log();
    assert!(log.contains("channel=refused"), "{log}");
    let (_, metrics) = daemon.get("/metrics");
    assert!(
        metrics.contains("celeroot_alerts_total{channel=\"refused\",result=\"failed\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("celeroot_alerts_total{channel=\"plain\",result=\"sent\"} 1"),
        "{metrics}"
    );
    assert_eq!(
        plain.received().matches("Subject: ").count(),
        1,
        "only the tls: none channel reached the plain server"
    );
}

/// A secret reference that does not resolve where alerts are sent is a located error:
/// `validate --secrets` reports it, and `celeroot watch` refuses the revision (it could
/// not alert) while plain `validate` (a pull-request runner without the secrets) passes.
#[test]
fn a_secret_reference_to_a_missing_variable_is_a_located_error_where_alerts_are_sent() {
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    let redis = RedisServer::start();
    let bare = BareRepo::new();
    bare.push_from(&repo, "main");
    let mut daemon = Daemon::start(
        &bare.url(),
        &redis.url(),
        &["--branch", "main", "--skip-deploy", "--interval", "1s"],
    );
    daemon.wait_for("the example applied", WAIT, |d| d.applied().is_some());
    let applied = daemon.applied();

    let cluster = repo.read("manifests/cluster.yaml");
    repo.write(
        "manifests/cluster.yaml",
        &format!("{cluster}  alerts:\n    channels:\n      - name: ops\n        slack:\n          webhookUrl: env:CELEROOT_TEST_UNSET_SLACK_URL\n    routes:\n      - channels: [ops]\n"),
    );
    repo.commit("alerts");
    let mut cmd = repo.cmd();
    cmd.args(["validate"])
        .env_remove("CELEROOT_TEST_UNSET_SLACK_URL");
    let (out, code) = crate::common::run(cmd);
    assert_eq!(code, 0, "{out}");
    let mut cmd = repo.cmd();
    cmd.args(["validate", "--secrets"])
        .env_remove("CELEROOT_TEST_UNSET_SLACK_URL");
    let (out, _) = crate::common::run(cmd);
    insta::assert_snapshot!(out, @r#"
    ------- stderr -------
    error: the Slack webhook URL of channel "ops" (env:CELEROOT_TEST_UNSET_SLACK_URL): the environment variable CELEROOT_TEST_UNSET_SLACK_URL is not set on this machine
      --> manifests/cluster.yaml:27:23
        |
     27 |           webhookUrl: env:CELEROOT_TEST_UNSET_SLACK_URL
        |                       ^
      = help: secrets are read where alerts are sent: set it in `celeroot watch`'s environment, or point to a readable file
    error: HEAD (43d3fb75): 1 alert secret reference(s) do not resolve on this machine; nothing was changed
    [exit status: 1]
    "#);
    let mut cmd = repo.cmd();
    cmd.args(["validate", "--secrets"])
        .env("CELEROOT_TEST_UNSET_SLACK_URL", "http://127.0.0.1:9/hook");
    let (out, code) = crate::common::run(cmd);
    assert_eq!(code, 0, "{out}");

    bare.push_from(&repo, "main");
    daemon.wait_for("the revision refused", WAIT, |d| {
        d.status()["invalidRevision"]["firstError"]
            .as_str()
            .is_some_and(|e| e.contains("CELEROOT_TEST_UNSET_SLACK_URL"))
    });
    let st = daemon.status();
    assert_eq!(
        daemon.applied(),
        applied,
        "the refused revision is not applied: {st}"
    );
    let first = st["invalidRevision"]["firstError"]
        .as_str()
        .unwrap_or_default();
    assert!(
        first.starts_with("manifests/cluster.yaml:"),
        "located: {first}"
    );
}
