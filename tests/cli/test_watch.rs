//! `celeroot watch`: the daemon binary against real redis-server processes, real git
//! repositories (pushes to local bare repositories, commits in local ones) and real HTTP.

use std::time::{Duration, Instant};

use celeroot::daemon::webhook::sign;

use crate::common::daemon::{branch_of, BareRepo, Daemon};
use crate::common::redis::RedisServer;
use crate::common::{run, TestRepo};

const SECRET: &str = "webhook-s3cret";
const WAIT: Duration = Duration::from_secs(20);

fn committed_example() -> TestRepo {
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    repo
}

/// A Redis, a work repository with the example committed (`first`), and a bare
/// repository it was pushed to as `main`.
pub(crate) fn fleet() -> (RedisServer, TestRepo, String, BareRepo) {
    let redis = RedisServer::start();
    let mut repo = committed_example();
    let first = repo.commit("first");
    let bare = BareRepo::new();
    bare.push_from(&repo, "main");
    (redis, repo, first, bare)
}

/// A daemon following the bare repository, once it has applied `first`.
pub(crate) fn started(bare: &BareRepo, redis: &RedisServer, first: &str, args: &[&str]) -> Daemon {
    let mut d = Daemon::start(&bare.url(), &redis.url(), args);
    d.wait_for("the first revision applied", WAIT, |d| {
        d.applied().as_deref() == Some(first)
    });
    d
}

fn secret_file(dir: &std::path::Path) -> String {
    let p = dir.join("secret");
    std::fs::write(&p, format!("{SECRET}\n")).expect("write secret");
    p.display().to_string()
}

/// The applied revision according to `celeroot status -o json` (reads Redis).
fn live_revision(repo: &TestRepo, redis: &str) -> Option<String> {
    live_revision_at(repo, redis, "HEAD")
}

/// The same, compiling `rev` for the cluster name (HEAD may be invalid).
fn live_revision_at(repo: &TestRepo, redis: &str, rev: &str) -> Option<String> {
    let mut cmd = repo.cmd();
    cmd.args(["status", "-o", "json", "--rev", rev])
        .env("CELEROOT_REDIS_URL", redis);
    let (out, _) = run(cmd);
    let json = out.split("------- stderr").next().unwrap_or_default();
    let json = json.split("[exit status").next().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v["applied"]["revision"].as_str().map(String::from)
}

fn github_push(d: &Daemon, git_ref: &str, delivery: &str, secret: &str) -> (u16, String) {
    let body = format!(
        r#"{{"ref":"{git_ref}","after":"0000","repository":{{"full_name":"ops/config"}}}}"#
    );
    let sig = sign(secret.as_bytes(), body.as_bytes());
    d.post(
        "/hooks/github",
        &[
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", delivery),
            ("X-Hub-Signature-256", &sig),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
}

pub(crate) fn events(redis: &RedisServer) -> Vec<std::collections::BTreeMap<String, String>> {
    let url = celeroot::state::RedisUrl::parse(&redis.url()).expect("url");
    let mut store = celeroot::state::Store::connect(&url, "production").expect("connect");
    store
        .events(1000)
        .expect("events")
        .into_iter()
        .map(|e| e.fields)
        .collect()
}

#[test]
fn a_signed_github_push_is_applied_and_a_bad_signature_changes_nothing() {
    let (redis, mut repo, first, bare) = fleet();
    let tmp = tempfile::tempdir().expect("tmp");
    let secret = secret_file(tmp.path());
    // Polling every hour: only webhooks can make it fetch.
    let mut d = Daemon::start(
        &bare.url(),
        &redis.url(),
        &["--interval", "1h", "--webhook-secret-file", &secret],
    );
    d.wait_for("the first revision applied", WAIT, |d| {
        d.applied().as_deref() == Some(first.as_str())
    });
    assert_eq!(
        live_revision(&repo, &redis.url()).as_deref(),
        Some(first.as_str())
    );
    let concurrency = || -> String {
        redis::cmd("HGET")
            .arg("celeroot:{production}:worker:web01")
            .arg("concurrency")
            .query(&mut redis.conn())
            .expect("HGET")
    };
    let before = concurrency();

    repo.edit(
        "manifests/roles/webserver.yaml",
        "concurrency: 4",
        "concurrency: 16",
    );
    let second = repo.commit("web: concurrency 16");
    bare.push_from(&repo, "main");

    // A wrong signature: 401, nothing fetched or applied.
    let (code, body) = github_push(&d, "refs/heads/main", "d-bad", "wrong-secret");
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("signature does not match"), "{body}");
    let (code, _) = d.post(
        "/hooks/github",
        &[("X-GitHub-Event", "push")],
        br#"{"ref":"refs/heads/main"}"#,
    );
    assert_eq!(code, 401, "a missing signature is refused");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        d.status()["seenRevision"].as_str(),
        Some(first.as_str()),
        "a refused webhook does not even fetch"
    );
    assert_eq!(
        live_revision(&repo, &redis.url()).as_deref(),
        Some(first.as_str())
    );

    // Signed: accepted, fetched and applied.
    let started = Instant::now();
    let (code, body) = github_push(&d, "refs/heads/main", "d-1", SECRET);
    assert_eq!(code, 202, "{body}");
    d.wait_for("the pushed revision applied", WAIT, |d| {
        d.applied().as_deref() == Some(second.as_str())
    });
    eprintln!("push-to-applied: {:?}", started.elapsed());
    assert_eq!(
        live_revision(&repo, &redis.url()).as_deref(),
        Some(second.as_str())
    );
    assert_ne!(
        concurrency(),
        before,
        "the role change reached the host's worker"
    );

    // The same delivery again is dropped; pings are answered; other branches ignored.
    let (code, body) = github_push(&d, "refs/heads/main", "d-1", SECRET);
    assert_eq!(
        (code, body.contains("already received")),
        (200, true),
        "{body}"
    );
    let ping = br#"{"zen":"Keep it logically awesome."}"#;
    let sig = sign(SECRET.as_bytes(), ping);
    let (code, body) = d.post(
        "/hooks/github",
        &[("X-GitHub-Event", "ping"), ("X-Hub-Signature-256", &sig)],
        ping,
    );
    assert_eq!((code, body.trim()), (200, "pong"));
    let (code, body) = github_push(&d, "refs/heads/feature", "d-2", SECRET);
    assert_eq!(code, 200);
    assert!(
        body.contains("ignored push to refs/heads/feature"),
        "{body}"
    );
    let (code, _) = d.post("/hooks/bitbucket", &[], b"{}");
    assert_eq!(code, 404);
    // Bodies are size-limited.
    // (Only the headers are sent: the length alone gets the answer, and a server that
    // answers before reading a large body may reset the connection under the client.)
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", d.port)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    std::io::Write::write_all(
        &mut sock,
        b"POST /hooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\nExpect: 100-continue\r\nContent-Length: 6291456\r\n\r\n",
    )
    .expect("send headers");
    let mut resp = String::new();
    let _ = std::io::Read::read_to_string(&mut sock, &mut resp);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");

    let (code, metrics) = d.get("/metrics");
    assert_eq!(code, 200);
    for needle in [
        "celeroot_webhook_requests_total{provider=\"github\",result=\"unauthorized\"} 2",
        "celeroot_webhook_requests_total{provider=\"github\",result=\"accepted\"} 1",
        "celeroot_webhook_requests_total{provider=\"github\",result=\"duplicate\"} 1",
        "celeroot_webhook_requests_total{provider=\"github\",result=\"ping\"} 1",
        "celeroot_reconciles_total{result=\"applied\"} 2",
        "celeroot_leader 1",
        &format!(
            "celeroot_applied_revision_info{{revision=\"{second}\",cluster=\"production\"}} 1"
        ),
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing from /metrics:\n{metrics}"
        );
    }
    let (code, ready) = d.get("/readyz");
    assert_eq!((code, ready.trim()), (200, "ready (leader)"));
}

#[test]
fn gitea_gitlab_and_generic_webhooks_are_verified() {
    let (redis, mut repo, first, bare) = fleet();
    let tmp = tempfile::tempdir().expect("tmp");
    let secret = secret_file(tmp.path());
    let mut d = started(
        &bare,
        &redis,
        &first,
        &["--interval", "1h", "--webhook-secret-file", &secret],
    );

    let body = br#"{"ref":"refs/heads/main"}"#;
    let sig = sign(SECRET.as_bytes(), body);
    let bare_sig = sig.trim_start_matches("sha256=");
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16);
    let cases: Vec<Case> = vec![
        (
            "/hooks/gitea",
            vec![("X-Gitea-Event", "push"), ("X-Gitea-Signature", bare_sig)],
            202,
        ),
        (
            "/hooks/forgejo",
            vec![
                ("X-Forgejo-Event", "push"),
                ("X-Forgejo-Signature", bare_sig),
            ],
            202,
        ),
        (
            "/hooks/gitea",
            vec![("X-Gitea-Event", "push"), ("X-Gitea-Signature", "00ff")],
            401,
        ),
        (
            "/hooks/gitlab",
            vec![("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", SECRET)],
            202,
        ),
        (
            "/hooks/gitlab",
            vec![("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "nope")],
            401,
        ),
        (
            "/hooks/gitlab",
            vec![
                ("X-Gitlab-Event", "Tag Push Hook"),
                ("X-Gitlab-Token", SECRET),
            ],
            200,
        ),
        ("/hooks/generic", vec![("X-Celeroot-Signature", &sig)], 202),
        ("/hooks/generic", vec![], 401),
    ];
    for (path, headers, want) in &cases {
        let (code, text) = d.post(path, headers, body);
        assert_eq!(code, *want, "{path} {headers:?}: {text}");
    }

    // Each accepted hook fetches: a new push is picked up through the generic one.
    repo.edit(
        "manifests/roles/webserver.yaml",
        "concurrency: 4",
        "concurrency: 5",
    );
    let second = repo.commit("web: 5");
    bare.push_from(&repo, "main");
    let (code, _) = d.post("/hooks/generic", &[("X-Celeroot-Signature", &sig)], body);
    assert_eq!(code, 202);
    d.wait_for("applied via generic", WAIT, |d| {
        d.applied().as_deref() == Some(second.as_str())
    });
}

#[test]
fn webhooks_without_a_secret_are_refused() {
    let (redis, _repo, first, bare) = fleet();
    let d = started(&bare, &redis, &first, &["--interval", "1h"]);
    let (code, body) = github_push(&d, "refs/heads/main", "x", SECRET);
    assert_eq!(code, 403);
    assert!(body.contains("--webhook-secret-file"), "{body}");
}

#[test]
fn polling_picks_up_a_push_without_a_webhook() {
    let (redis, mut repo, first, bare) = fleet();
    let mut d = started(&bare, &redis, &first, &["--interval", "300ms"]);
    repo.edit(
        "manifests/roles/webserver.yaml",
        "concurrency: 4",
        "concurrency: 7",
    );
    let second = repo.commit("web: 7");
    bare.push_from(&repo, "main");
    d.wait_for("the push picked up by polling", WAIT, |d| {
        d.applied().as_deref() == Some(second.as_str())
    });
    assert_eq!(
        live_revision(&repo, &redis.url()).as_deref(),
        Some(second.as_str())
    );
}

#[test]
fn a_local_repository_is_followed_through_file_events() {
    let redis = RedisServer::start();
    let mut repo = committed_example();
    let first = repo.commit("first");
    let branch = branch_of(&repo);
    let root = repo.root().display().to_string();
    let mut d = Daemon::start(
        &root,
        &redis.url(),
        &["--interval", "1h", "--branch", &branch],
    );
    d.wait_for("applied", WAIT, |d| {
        d.applied().as_deref() == Some(first.as_str())
    });
    repo.edit(
        "manifests/roles/webserver.yaml",
        "concurrency: 4",
        "concurrency: 8",
    );
    let second = repo.commit("web: 8");
    d.wait_for("the commit picked up through notify", WAIT, |d| {
        d.applied().as_deref() == Some(second.as_str())
    });
}

#[test]
fn an_invalid_commit_is_not_applied_and_the_next_valid_one_is() {
    let (redis, mut repo, first, bare) = fleet();
    let mut d = started(&bare, &redis, &first, &["--interval", "200ms"]);

    repo.edit(
        "manifests/roles/webserver.yaml",
        "concurrency: 4",
        "concurrency: many",
    );
    let bad = repo.commit("broken");
    bare.push_from(&repo, "main");
    d.wait_for("the invalid head reported", WAIT, |d| {
        d.status()["invalidRevision"]["revision"].as_str() == Some(bad.as_str())
    });
    let st = d.status();
    assert_eq!(st["appliedRevision"].as_str(), Some(first.as_str()));
    assert_eq!(st["lastResult"]["result"], "invalid");
    let first_error = st["invalidRevision"]["firstError"]
        .as_str()
        .unwrap_or_default();
    assert!(
        first_error.starts_with("manifests/roles/webserver.yaml:"),
        "the error names the file and line: {first_error}"
    );
    assert_eq!(
        live_revision_at(&repo, &redis.url(), &first).as_deref(),
        Some(first.as_str())
    );
    let invalid_events: Vec<_> = events(&redis)
        .into_iter()
        .filter(|e| e.get("result").map(String::as_str) == Some("invalid"))
        .collect();
    assert_eq!(invalid_events.len(), 1, "reported once, not on every poll");
    assert_eq!(invalid_events[0]["revision"], bad);
    let (_, metrics) = d.get("/metrics");
    assert!(
        metrics.contains("celeroot_reconciles_total{result=\"invalid\"} 1"),
        "{metrics}"
    );
    assert!(
        d.log().contains("the branch head is invalid"),
        "{}",
        d.log()
    );

    repo.edit(
        "manifests/roles/webserver.yaml",
        "concurrency: many",
        "concurrency: 3",
    );
    let fixed = repo.commit("fixed");
    bare.push_from(&repo, "main");
    d.wait_for("the fixed revision applied", WAIT, |d| {
        d.applied().as_deref() == Some(fixed.as_str())
    });
    assert!(d.status()["invalidRevision"].is_null());
}

#[test]
fn drift_is_healed_on_resync_or_only_reported() {
    let (redis, _repo, first, bare) = fleet();
    let key = "celeroot:{production}:worker:web01";

    let mut heal = started(
        &bare,
        &redis,
        &first,
        &["--interval", "1h", "--resync", "300ms"],
    );
    let want: String = redis::cmd("HGET")
        .arg(key)
        .arg("concurrency")
        .query(&mut redis.conn())
        .expect("HGET");
    let _: () = redis::cmd("HSET")
        .arg(key)
        .arg("concurrency")
        .arg("99")
        .query(&mut redis.conn())
        .expect("HSET");
    heal.wait_for("drift healed", WAIT, |_| {
        redis::cmd("HGET")
            .arg(key)
            .arg("concurrency")
            .query::<String>(&mut redis.conn())
            .is_ok_and(|v| v == want)
    });
    heal.kill();
    let _: () = redis::cmd("DEL")
        .arg("celeroot:{production}:leader")
        .query(&mut redis.conn())
        .expect("DEL leader");

    let mut report = Daemon::start(
        &bare.url(),
        &redis.url(),
        &["--interval", "1h", "--resync", "300ms", "--drift", "report"],
    );
    report.wait_for("leading", WAIT, Daemon::is_leader);
    let _: () = redis::cmd("HSET")
        .arg(key)
        .arg("concurrency")
        .arg("42")
        .query(&mut redis.conn())
        .expect("HSET");
    report.wait_for("drift reported", WAIT, |d| {
        d.status()["drift"]["liveKeys"].as_u64() == Some(1)
    });
    std::thread::sleep(Duration::from_millis(800));
    let v: String = redis::cmd("HGET")
        .arg(key)
        .arg("concurrency")
        .query(&mut redis.conn())
        .expect("HGET");
    assert_eq!(v, "42", "--drift report never writes");
    assert!(events(&redis).iter().any(|e| {
        e.get("kind").map(String::as_str) == Some("drift")
            && e.get("keys").is_some_and(|k| k.contains(key))
    }));
    let (_, metrics) = report.get("/metrics");
    assert!(metrics.contains("celeroot_drift_objects 1"), "{metrics}");
    // The example has schedules and no beat runs: the resync found the beat missing.
    assert!(metrics.contains("celeroot_beat_healthy 0"), "{metrics}");
    assert_eq!(
        report.status()["drift"]["beat"].as_str(),
        Some("beat-missing"),
        "{}",
        report.status()
    );
}

#[test]
fn two_daemons_one_leader_and_failover_after_sigkill() {
    let (redis, mut repo, first, bare) = fleet();
    let args = ["--interval", "200ms", "--lease-ttl", "2s"];
    let mut a = Daemon::start_as(&bare.url(), &redis.url(), &args, "a@ci");
    a.wait_for("a applied", WAIT, |d| {
        d.applied().as_deref() == Some(first.as_str())
    });
    let mut b = Daemon::start_as(&bare.url(), &redis.url(), &args, "b@ci");
    b.wait_for("b sees the leader", WAIT, |d| {
        d.status()["leaderHolder"].as_str() == Some("a@ci")
    });
    // Exactly one leads, for a while.
    for _ in 0..10 {
        assert!(a.is_leader() && !b.is_leader(), "a leads, b stands by");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(b.get("/readyz"), (200, "ready (standby)\n".into()));
    assert_eq!(
        b.status()["seenRevision"].as_str(),
        Some(first.as_str()),
        "the standby keeps fetching"
    );

    a.signal(libc::SIGKILL);
    let killed = Instant::now();
    b.wait_for("b takes over", WAIT, Daemon::is_leader);
    let failover = killed.elapsed();
    // Documented worst case: lease TTL + a third of it (renewal period), here 2.67 s; plus
    // scheduling slack on a loaded CI machine.
    assert!(
        failover < Duration::from_millis(2667 + 2000),
        "failover took {failover:?}"
    );

    repo.edit(
        "manifests/roles/webserver.yaml",
        "concurrency: 4",
        "concurrency: 9",
    );
    let second = repo.commit("web: 9");
    bare.push_from(&repo, "main");
    b.wait_for("b applies", WAIT, |d| {
        d.applied().as_deref() == Some(second.as_str())
    });
    let leader: String = redis::cmd("GET")
        .arg("celeroot:{production}:leader")
        .query(&mut redis.conn())
        .expect("GET leader");
    assert!(leader.contains("\"holder\":\"b@ci\""), "{leader}");
    let mut cmd = repo.cmd();
    cmd.arg("status").env("CELEROOT_REDIS_URL", redis.url());
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("daemon:   b@ci leads `celeroot watch` (epoch 2,"),
        "celeroot status names the leading daemon:\n{out}"
    );
}

#[test]
fn a_paused_former_leader_cannot_apply() {
    let (redis, mut repo, first, bare) = fleet();
    let args = ["--interval", "200ms", "--lease-ttl", "2s"];
    let mut a = Daemon::start_as(&bare.url(), &redis.url(), &args, "a@ci");
    a.wait_for("a applied", WAIT, |d| {
        d.applied().as_deref() == Some(first.as_str())
    });
    let mut b = Daemon::start_as(&bare.url(), &redis.url(), &args, "b@ci");
    b.wait_for("b stands by", WAIT, |d| {
        d.status()["leaderHolder"].as_str() == Some("a@ci")
    });

    // Freeze a (a GC pause, a stopped VM): its lease runs out and b takes over.
    a.signal(libc::SIGSTOP);
    b.wait_for("b takes over", WAIT, Daemon::is_leader);
    repo.edit(
        "manifests/roles/webserver.yaml",
        "concurrency: 4",
        "concurrency: 2",
    );
    let second = repo.commit("web: 2");
    bare.push_from(&repo, "main");
    b.wait_for("b applies", WAIT, |d| {
        d.applied().as_deref() == Some(second.as_str())
    });
    let generation = |r: &RedisServer| -> u64 {
        redis::cmd("GET")
            .arg("celeroot:{production}:generation")
            .query(&mut r.conn())
            .expect("GET generation")
    };
    let before = generation(&redis);

    // Thaw a: it learns it lost the lease and stands by; nothing it does is applied.
    a.signal(libc::SIGCONT);
    a.wait_for("a stands by", WAIT, |d| {
        d.status()["leader"].as_bool() == Some(false)
            && d.status()["leaderHolder"].as_str() == Some("b@ci")
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        generation(&redis),
        before,
        "the former leader wrote nothing"
    );
    assert!(b.is_leader());
}

#[test]
fn fencing_refuses_an_apply_with_a_stale_leader_token() {
    use celeroot::apply::{self, Options};
    use celeroot::state::{Leadership, RedisUrl, StateError, Store};

    let redis = RedisServer::start();
    let mut repo = committed_example();
    repo.commit("first");
    let git = git2::Repository::open(repo.root()).expect("open");
    let rev = apply::load_revision(&git, "HEAD", "manifests").expect("compile");
    let url = RedisUrl::parse(&redis.url()).expect("url");
    let mut store = Store::connect(&url, "production").expect("connect");
    let ttl = Duration::from_millis(300);
    assert_eq!(
        store.lead("token-a", ttl, "a").expect("lead"),
        Leadership::Leading { epoch: 1 }
    );
    assert!(matches!(
        store.lead("token-b", ttl, "b").expect("lead"),
        Leadership::Standby(Some(ref h)) if h.holder == "a"
    ));
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        store
            .lead("token-b", Duration::from_secs(10), "b")
            .expect("lead"),
        Leadership::Leading { epoch: 2 },
        "the epoch (fencing counter) moves with each new leader"
    );
    let opts = |token: &str| Options {
        dry_run: false,
        prune: true,
        allow_mass_delete: false,
        allow_rollback: false,
        sweep: false,
        actor: "test".into(),
        leader: Some(token.into()),
        lock_wait: std::time::Duration::ZERO,
        fault: None,
    };
    let now = chrono::Utc::now();
    let err = apply::reconcile(
        &mut store,
        &rev,
        &opts("token-a"),
        &|_| apply::Ancestry::Same,
        now,
    )
    .expect_err("a stale token is fenced");
    assert!(
        matches!(err, apply::ApplyError::State(StateError::Fenced(_))),
        "{err}"
    );
    let gen: Option<u64> = redis::cmd("GET")
        .arg("celeroot:{production}:generation")
        .query(&mut redis.conn())
        .expect("GET");
    assert_eq!(gen, None, "nothing was written");
    let out = apply::reconcile(
        &mut store,
        &rev,
        &opts("token-b"),
        &|_| apply::Ancestry::Same,
        now,
    )
    .expect("the current leader applies");
    assert_eq!(out.generation, 1);
    // A reconcile lease left behind by the former leader does not block the new one.
    let stale = r#"{"id":"x","holder":"a","revision":"r","since":"s","pid":1,"leader":"token-a"}"#;
    let _: () = redis::cmd("SET")
        .arg("celeroot:{production}:lock")
        .arg(stale)
        .query(&mut redis.conn())
        .expect("SET");
    let cli = apply::reconcile(
        &mut store,
        &rev,
        &Options {
            leader: None,
            lock_wait: std::time::Duration::ZERO,
            fault: None,
            ..opts("")
        },
        &|_| apply::Ancestry::Same,
        now,
    );
    assert!(
        matches!(cli, Err(apply::ApplyError::State(StateError::Locked(_)))),
        "a CLI reconcile still respects the stale daemon's lease"
    );
    apply::reconcile(
        &mut store,
        &rev,
        &opts("token-b"),
        &|_| apply::Ancestry::Same,
        now,
    )
    .expect("the leader takes over a lease left by a former leader");
    assert!(
        !store.resign("token-a").expect("resign"),
        "not a's lease any more"
    );
    assert!(store.resign("token-b").expect("resign"));
}

#[test]
fn redis_restarted_under_a_running_daemon_recovers() {
    let (mut redis, mut repo, first, bare) = fleet();
    let mut d = started(
        &bare,
        &redis,
        &first,
        &["--interval", "200ms", "--lease-ttl", "2s"],
    );

    redis.kill();
    d.wait_for("Redis seen as down", WAIT, |d| {
        d.status()["redis"].as_str() == Some("unreachable")
    });
    assert_eq!(d.get("/readyz").0, 503);
    repo.edit(
        "manifests/roles/webserver.yaml",
        "concurrency: 4",
        "concurrency: 11",
    );
    let second = repo.commit("web: 11");
    bare.push_from(&repo, "main");
    std::thread::sleep(Duration::from_millis(500));
    redis.restart();
    d.wait_for(
        "applied after Redis came back",
        Duration::from_secs(40),
        |d| d.applied().as_deref() == Some(second.as_str()),
    );
    assert_eq!(
        live_revision(&repo, &redis.url()).as_deref(),
        Some(second.as_str())
    );
    assert_eq!(d.get("/readyz").0, 200);
}

#[test]
fn sigterm_stops_cleanly_and_releases_the_lease() {
    let (redis, _repo, first, bare) = fleet();
    let mut d = started(
        &bare,
        &redis,
        &first,
        &["--interval", "1h", "--log-format", "json"],
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0), "{}", d.log());
    let leader: Option<String> = redis::cmd("GET")
        .arg("celeroot:{production}:leader")
        .query(&mut redis.conn())
        .expect("GET");
    assert_eq!(leader, None, "the leader lease was released");
    let lines: Vec<serde_json::Value> = d
        .log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines
        .iter()
        .any(|l| l["message"] == "reconciled" && l["revision"] == first.as_str()));
    assert!(lines
        .iter()
        .any(|l| l["message"] == "released the leader lease"));
}

#[test]
fn watch_refuses_to_start_on_bad_arguments() {
    let repo = committed_example();
    for (args, needle) in [
        (vec!["--listen", "nowhere"], "invalid --listen"),
        (vec!["--interval", "soon"], "invalid duration"),
        (
            vec!["--webhook-secret-file", "/nonexistent/secret"],
            "cannot read the webhook secret file",
        ),
        (vec!["--cluster", "Bad_Name"], "invalid --cluster"),
        (vec!["--branch", "a..b"], "not a valid branch name"),
    ] {
        let mut cmd = repo.cmd();
        cmd.arg("watch").args(&args).arg("--listen").arg("off");
        if args[0] == "--listen" {
            cmd = repo.cmd();
            cmd.arg("watch").args(&args);
        }
        let (out, code) = run(cmd);
        assert_eq!(code, 1, "{args:?}: {out}");
        assert!(out.contains(needle), "{args:?}: {out}");
    }
}

#[test]
fn worktree_mode_applies_uncommitted_files() {
    let redis = RedisServer::start();
    let repo = committed_example();
    let root = repo.root().display().to_string();
    let mut d = Daemon::start(&root, &redis.url(), &["--interval", "1h", "--worktree"]);
    d.wait_for("the work tree applied", WAIT, |d| {
        d.applied().is_some_and(|r| r.starts_with("worktree-"))
    });
    let first = d.applied().unwrap_or_default();
    repo.edit(
        "manifests/roles/webserver.yaml",
        "concurrency: 4",
        "concurrency: 24",
    );
    d.wait_for("the edited file applied without a commit", WAIT, |d| {
        d.applied()
            .is_some_and(|r| r.starts_with("worktree-") && r != first)
    });
    let v: String = redis::cmd("HGET")
        .arg("celeroot:{production}:worker:web01")
        .arg("concurrency")
        .query(&mut redis.conn())
        .expect("HGET");
    assert_eq!(v, "24");
}

#[test]
fn a_burst_of_webhooks_is_coalesced_into_fewer_fetches() {
    let (redis, mut repo, first, bare) = fleet();
    let tmp = tempfile::tempdir().expect("tmp");
    let secret = secret_file(tmp.path());
    let mut d = started(
        &bare,
        &redis,
        &first,
        &["--interval", "1h", "--webhook-secret-file", &secret],
    );
    let fetches = |d: &Daemon| -> u64 {
        let (_, m) = d.get("/metrics");
        m.lines()
            .find_map(|l| l.strip_prefix("celeroot_git_fetch_duration_seconds_count "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    let before = fetches(&d);
    repo.edit(
        "manifests/roles/webserver.yaml",
        "concurrency: 4",
        "concurrency: 12",
    );
    let second = repo.commit("web: 12");
    bare.push_from(&repo, "main");
    const BURST: u64 = 20;
    std::thread::scope(|s| {
        for i in 0..BURST {
            let d = &d;
            s.spawn(move || {
                let (code, body) = github_push(d, "refs/heads/main", &format!("burst-{i}"), SECRET);
                assert_eq!(code, 202, "{body}");
            });
        }
    });
    d.wait_for("applied", WAIT, |d| {
        d.applied().as_deref() == Some(second.as_str())
    });
    std::thread::sleep(Duration::from_millis(300));
    let used = fetches(&d) - before;
    assert!(
        (1..BURST).contains(&used),
        "{BURST} deliveries caused {used} fetches"
    );
}
