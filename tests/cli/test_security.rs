//! Regression tests for the findings of the security and reliability review (issue 14,
//! docs/security.md): each runs the real binary against real git, Redis or sshd and fails
//! on the code before its fix.

use std::path::Path;

use crate::common::redis::RedisServer;
use crate::common::{run, TestRepo};

const PREFIX: &str = "celeroot:{production}:";

/// Every key under the production cluster's prefix.
fn cluster_keys(redis: &RedisServer) -> Vec<String> {
    let mut c = redis.conn();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{PREFIX}*"))
        .query(&mut c)
        .expect("KEYS");
    keys.sort();
    keys
}

/// Appends one raw entry to a git tree object, bypassing every name check git and
/// libgit2 make (what `git hash-object -t tree --literally` does): `mode name\0oid`.
fn raw_tree(repo: &git2::Repository, entries: &[(&str, &[u8], git2::Oid)]) -> git2::Oid {
    let mut bytes = Vec::new();
    for (mode, name, oid) in entries {
        bytes.extend_from_slice(mode.as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(name);
        bytes.push(0);
        bytes.extend_from_slice(oid.as_bytes());
    }
    repo.odb()
        .expect("odb")
        .write(git2::ObjectType::Tree, &bytes)
        .expect("write raw tree")
}

/// Commits, on HEAD, HEAD's tree with `tasks` replaced by a tree holding `entries`
/// (each a blob of `print('pwned')`). Returns the new commit id.
fn commit_with_tasks(root: &Path, names: &[&[u8]]) -> String {
    let repo = git2::Repository::open(root).expect("open");
    let blob = repo.blob(b"print('pwned')\n").expect("blob");
    let entries: Vec<(&str, &[u8], git2::Oid)> =
        names.iter().map(|n| ("100644", *n, blob)).collect();
    let tasks = raw_tree(&repo, &entries);
    let head = repo.head().expect("head").peel_to_commit().expect("commit");
    let mut tb = repo
        .treebuilder(Some(&head.tree().expect("tree")))
        .expect("tb");
    tb.insert("tasks", tasks, 0o040_000).expect("insert tasks");
    let tree = repo.find_tree(tb.write().expect("write")).expect("tree");
    let sig = git2::Signature::new(
        "Mallory",
        "m@example.com",
        &git2::Time::new(1_790_100_000, 0),
    )
    .expect("sig");
    repo.commit(Some("HEAD"), &sig, &sig, "innocent change", &tree, &[&head])
        .expect("commit")
        .to_string()
}

/// Finding 1 (high): a tree entry named `../…/x` under a shipped path made `deploy` and
/// `reconcile` write outside the staging directory before any SSH.
#[test]
fn a_tree_entry_that_climbs_out_of_the_release_is_refused_and_nothing_is_written() {
    let redis = RedisServer::start();
    let mut repo = TestRepo::with_example();
    repo.write("tasks/__init__.py", "");
    repo.commit("example");
    let scratch = tempfile::tempdir().expect("tmp");
    let victim = scratch.path().join("pwned");
    let mut name = "../".repeat(24).into_bytes();
    name.extend_from_slice(victim.to_string_lossy().trim_start_matches('/').as_bytes());
    let commit = commit_with_tasks(&repo.root(), &[&name]);

    for args in [
        &["deploy"][..],
        &["reconcile"][..],
        &["deploy", "--check"][..],
    ] {
        let mut cmd = repo.cmd();
        cmd.args(args)
            .env("CELEROOT_REDIS_URL", redis.url())
            .env("TMPDIR", scratch.path());
        let (out, code) = run(cmd);
        assert_eq!(code, 1, "{args:?}: {out}");
        let entry = format!("tasks/{}", String::from_utf8_lossy(&name));
        assert!(
            out.contains(&format!(
                "commit {commit}: shipped tree entry {entry:?} is unsafe: the name contains a path separator (`/` or `\\`); the revision is refused and nothing was written"
            )),
            "{args:?}: {out}"
        );
        assert!(!victim.exists(), "{args:?} wrote {}", victim.display());
    }
    assert_eq!(
        cluster_keys(&redis),
        Vec::<String>::new(),
        "nothing reached Redis"
    );
}

/// Finding 1: every other name git's `verify_path` refuses, and a name given twice.
#[test]
fn unsafe_and_duplicate_entry_names_are_refused_before_staging() {
    let cases: &[(&[&[u8]], &str)] = &[
        (&[b".."], "`.` and `..` are not file names"),
        (&[b"."], "`.` and `..` are not file names"),
        (&[b"a\\b"], "path separator"),
        // libgit2 itself refuses to parse an empty name (a NUL ends a name, so no name
        // holds one): refused all the same, before anything is written.
        (&[b""], "failed to parse tree"),
        (&[b".GIT"], "`.git` is reserved"),
        (&[b"same.py", b"same.py"], "the tree holds this name twice"),
    ];
    for (names, reason) in cases {
        let mut repo = TestRepo::with_example();
        repo.write("tasks/__init__.py", "");
        repo.commit("example");
        let scratch = tempfile::tempdir().expect("tmp");
        let commit = commit_with_tasks(&repo.root(), names);
        let mut cmd = repo.cmd();
        cmd.arg("deploy").env("TMPDIR", scratch.path());
        let (out, code) = run(cmd);
        assert_eq!(code, 1, "{names:?}: {out}");
        assert!(out.contains(reason), "{names:?}: {out}");
        if !reason.starts_with("failed to parse") {
            assert!(out.contains(&commit), "{names:?}: {out}");
        }
        // Nothing was staged: the scratch directory holds no release file.
        let mut staged = Vec::new();
        celeroot::deploy::release::list_files(scratch.path(), scratch.path(), &mut staged);
        assert_eq!(staged, Vec::<String>::new(), "{names:?}");
    }
}

/// Finding 3 (medium): a field of the digests hash is the only record of what celeroot
/// wrote, but anyone who can write it (an agent, a worker) could name any key, and the
/// next full reconcile deleted that key. Now only keys under the cluster's own prefix are
/// ever owned; the rest are reported and left alone.
#[test]
fn a_digest_field_naming_a_foreign_key_is_reported_and_never_deleted() {
    let redis = RedisServer::start();
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    let reconcile = |args: &[&str]| {
        let mut cmd = repo.cmd();
        cmd.arg("reconcile")
            .args(args)
            .env("CELEROOT_REDIS_URL", redis.url());
        run(cmd)
    };
    let (out, code) = reconcile(&[]);
    assert_eq!(code, 0, "{out}");
    let foreign = [
        "celeroot:{staging}:objects",
        "celeroot:{production-web}:hosts",
        "celeroot:{production}:heartbeat:web01",
        "celeroot:{production}:history",
        "session:42",
    ];
    let mut c = redis.conn();
    for k in [foreign[0], foreign[1], foreign[2], foreign[4]] {
        let _: () = redis::cmd("HSET")
            .arg(k)
            .arg("precious")
            .arg("1")
            .query(&mut c)
            .expect("HSET");
    }
    for k in foreign {
        let _: () = redis::cmd("HSET")
            .arg(format!("{PREFIX}digests"))
            .arg(k)
            .arg("0000")
            .query(&mut c)
            .expect("HSET");
    }
    let history_before: i64 = redis::cmd("LLEN")
        .arg(format!("{PREFIX}history"))
        .query(&mut c)
        .expect("LLEN");

    let mut cmd = repo.cmd();
    cmd.args(["drift", "-o", "json"])
        .env("CELEROOT_REDIS_URL", redis.url());
    let (out, _) = run(cmd);
    for k in foreign {
        assert!(
            out.contains(&format!(
                "\"key\": \"{k}\",\n      \"kind\": \"foreign-digest\""
            )),
            "drift reports {k}: {out}"
        );
    }
    // A full reconcile, with a heal of every drifted key and a sweep of unknown ones.
    let (out, code) = reconcile(&["--sweep"]);
    assert_eq!(code, 0, "{out}");
    for k in [foreign[0], foreign[1], foreign[2], foreign[4]] {
        let v: Option<String> = redis::cmd("HGET")
            .arg(k)
            .arg("precious")
            .query(&mut c)
            .expect("HGET");
        assert_eq!(v.as_deref(), Some("1"), "{k} survived: {out}");
    }
    let history_after: i64 = redis::cmd("LLEN")
        .arg(format!("{PREFIX}history"))
        .query(&mut c)
        .expect("LLEN");
    assert!(history_after >= history_before, "history kept");
    // The reconcile removed the foreign fields from celeroot's own index.
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(format!("{PREFIX}digests"))
        .query(&mut c)
        .expect("HKEYS");
    for k in foreign {
        assert!(!fields.iter().any(|f| f == k), "{k} still in digests");
    }
    let mut cmd = repo.cmd();
    cmd.args(["drift"]).env("CELEROOT_REDIS_URL", redis.url());
    let (out, _) = run(cmd);
    assert!(
        !out.contains("foreign-digest") && !out.contains("not a key celeroot owns"),
        "{out}"
    );
}

/// Finding 2 (medium): the did-you-mean edit distance allocated (n+1)×(m+1) cells, so a
/// Role named with 450,000 characters and a Host referring to another long name aborted
/// `validate` (and `watch`); a 100,000-character time zone took seconds. Both now give a
/// located error at once (the time is measured in `cargo bench --bench hostile_input`;
/// the timeout here only keeps a regression from hanging the suite).
#[test]
fn huge_names_and_time_zones_give_a_located_error_without_exhausting_memory() {
    let long_role = "r".repeat(450_000);
    let other = format!("{}x", "q".repeat(449_999));
    let mut repo = TestRepo::with_example();
    repo.write(
        "manifests/roles/huge.yaml",
        &format!("apiVersion: celeroot.io/v1\nkind: Role\nmetadata:\n  name: {long_role}\nspec:\n  concurrency: 1\n"),
    );
    repo.edit(
        "manifests/hosts/web01.yaml",
        "roles: [webserver, application]",
        &format!("roles: [webserver, {other}]"),
    );
    repo.commit("huge names");
    validate_fails_at(
        &repo,
        &[
            "manifests/roles/huge.yaml:4:9",
            "manifests/hosts/web01.yaml:",
        ],
    );

    let mut repo = TestRepo::with_example();
    repo.edit(
        "manifests/cluster.yaml",
        "timezone: Europe/Berlin",
        &format!("timezone: {}", "E".repeat(100_000)),
    );
    repo.commit("huge time zone");
    validate_fails_at(&repo, &["manifests/cluster.yaml:10:13"]);
}

/// `validate` exits 1 naming every location (with a timeout that only keeps a
/// regression from hanging the suite); failures show the start of the output.
fn validate_fails_at(repo: &TestRepo, locations: &[&str]) {
    let mut cmd = repo.cmd();
    cmd.arg("validate")
        .timeout(std::time::Duration::from_secs(30));
    let (out, code) = run(cmd);
    let head: String = out.chars().take(2000).collect();
    assert_eq!(code, 1, "{head}");
    for l in locations {
        assert!(out.contains(l), "{l}: {head}");
    }
}

/// Finding 2: the daemon meets the same revision, reports it invalid and keeps running.
#[test]
fn the_daemon_reports_a_hostile_revision_invalid_and_keeps_running() {
    use crate::common::daemon::{BareRepo, Daemon};
    let wait = std::time::Duration::from_secs(30);
    let redis = RedisServer::start();
    let mut repo = TestRepo::with_example();
    let first = repo.commit("example");
    let bare = BareRepo::new();
    bare.push_from(&repo, "main");
    let mut d = Daemon::start(&bare.url(), &redis.url(), &["--interval", "200ms"]);
    d.wait_for("the first revision applied", wait, |d| {
        d.applied().as_deref() == Some(first.as_str())
    });
    repo.write(
        "manifests/roles/huge.yaml",
        &format!("apiVersion: celeroot.io/v1\nkind: Role\nmetadata:\n  name: {}\nspec:\n  concurrency: 1\n", "r".repeat(450_000)),
    );
    repo.edit(
        "manifests/hosts/web01.yaml",
        "roles: [webserver, application]",
        &format!("roles: [webserver, {}x]", "q".repeat(449_999)),
    );
    let bad = repo.commit("huge names");
    bare.push_from(&repo, "main");
    d.wait_for("the hostile head reported invalid", wait, |d| {
        d.status()["invalidRevision"]["revision"].as_str() == Some(bad.as_str())
    });
    // Still serving, still on the last good revision.
    let (code, body) = d.get("/healthz");
    assert_eq!(code, 200, "{body}");
    assert_eq!(d.applied().as_deref(), Some(first.as_str()));
}

/// Finding 4 (medium): `args`/`kwargs` holding a mapping with a `__type__` key passed
/// validation, and RedBeat's decoder then raised inside beat, which died (every schedule
/// stopped firing). Now refused at any depth, located at the mapping that holds it.
#[test]
fn a_type_tag_in_task_arguments_is_refused_with_a_located_error() {
    let mut repo = TestRepo::with_example();
    repo.edit(
        "manifests/schedules/billing-sync.yaml",
        "  task: ",
        "  args:\n    - 1\n    - nested:\n        - {__type__: datetime, year: 1}\n  kwargs:\n    __type__: crontab\n  task: ",
    );
    repo.commit("tagged args");
    let mut cmd = repo.cmd();
    cmd.arg("validate");
    let (out, code) = run(cmd);
    assert_eq!(code, 1, "{out}");
    insta::assert_snapshot!(out, @r"
    ------- stderr -------
    error: the key `__type__` is reserved: Celery Beat (RedBeat) reads a mapping holding it as a tagged type and stops firing every schedule; rename the key (at `spec.args[1].nested[0]`)
      --> manifests/schedules/billing-sync.yaml:12:11
        |
     12 |         - {__type__: datetime, year: 1}
        |           ^
    error: manifests at HEAD (ebc739d5) are invalid: 1 error(s), 0 warning(s); nothing was changed
    [exit status: 1]
    ");
    // At the top of `kwargs` too.
    repo.edit(
        "manifests/schedules/billing-sync.yaml",
        "__type__: datetime",
        "when: datetime",
    );
    repo.commit("tagged kwargs");
    let mut cmd = repo.cmd();
    cmd.arg("validate");
    let (out, code) = run(cmd);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("the key `__type__` is reserved"), "{out}");
    assert!(
        out.contains("manifests/schedules/billing-sync.yaml:14:5"),
        "{out}"
    );
}

/// Finding 6: the unit's user comes from the manifests and is checked like every value
/// that reaches a file on the host.
#[test]
fn a_deployment_user_that_is_not_a_user_name_is_refused() {
    let mut repo = TestRepo::with_example();
    repo.edit(
        "manifests/cluster.yaml",
        "    targetDir: /opt/celeroot\n",
        "    targetDir: /opt/celeroot\n    user: \"root\\nExecStartPre=/bin/sh\"\n",
    );
    repo.commit("bad user");
    let mut cmd = repo.cmd();
    cmd.arg("validate");
    let (out, code) = run(cmd);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("invalid deployment user"), "{out}");
    assert!(out.contains("manifests/cluster.yaml:"), "{out}");
}

/// Safety net: the bundled example points only at documentation addresses and reserved
/// names, and `deploy` / `hosts test-connection` refuse them at once (before, a newcomer's
/// first `reconcile` SSH-connected to 10.0.x.x example addresses and waited 31 s).
#[test]
fn example_addresses_are_placeholders_that_deploy_and_test_connection_refuse_at_once() {
    for (path, text) in celeroot::init::EXAMPLE_MANIFESTS {
        for line in text
            .lines()
            .filter(|l| l.trim_start().starts_with("address:"))
        {
            let addr = line.trim_start().trim_start_matches("address:").trim();
            assert!(
                celeroot::deploy::ssh::placeholder(addr).is_some(),
                "{path}: {addr} is not a documentation address or reserved name"
            );
        }
    }
    let mut repo = TestRepo::with_example();
    repo.write("tasks/__init__.py", "");
    repo.commit("example");
    let started = std::time::Instant::now();
    let mut cmd = repo.cmd();
    cmd.args(["hosts", "test-connection", "--all"]);
    let (out, code) = run(cmd);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("web01: 192.0.2.11 is a documentation address (RFC 5737), a placeholder from the example manifests: replace it with the real address of web01 (`celeroot hosts update web01 --address ADDR`); nothing was sent"),
        "{out}"
    );
    assert!(
        out.contains("db02: db02.fra1.example is a reserved example name"),
        "{out}"
    );
    let mut cmd = repo.cmd();
    cmd.args(["deploy"]);
    let (out, code) = run(cmd);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("web01: failed"), "{out}");
    assert!(
        out.contains("a placeholder from the example manifests"),
        "{out}"
    );
    // Refused, not timed out: far below one SSH connect timeout (10 s in the example).
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

use crate::common::reconciled_example;

fn agent_url(repo: &TestRepo, redis: &str, host: &str) -> String {
    let mut cmd = repo.cmd();
    cmd.args(["hosts", "credentials", host])
        .env("CELEROOT_REDIS_URL", redis);
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
    out.lines()
        .find_map(|l| l.strip_prefix("CELEROOT_REDIS_URL="))
        .expect("an agent URL")
        .to_string()
}

/// Finding 8: agent user names could collide across clusters (`production`/`web-01` and
/// `production-web`/`01` were both `celeroot-production-web-01`); `+select` let an agent
/// reach the same key names in another database; a pruned host's user lived on.
#[test]
fn agent_users_are_unique_cannot_select_and_are_deleted_with_their_host() {
    assert_ne!(
        celeroot::state::agent_user("production", "web-01"),
        celeroot::state::agent_user("production-web", "01")
    );
    let redis = RedisServer::start();
    let mut repo = reconciled_example(&redis);
    let url = agent_url(&repo, &redis.url(), "web01");
    assert!(url.contains("celeroot.production.web01:"), "{url}");
    let mut c = redis::Client::open(url.as_str())
        .expect("client")
        .get_connection()
        .expect("log in as web01's agent");
    let e = redis::cmd("SELECT")
        .arg(1)
        .query::<()>(&mut c)
        .expect_err("SELECT must be refused");
    assert!(e.to_string().to_lowercase().contains("noperm"), "{e}");
    // Credentials for a URL that selects another database are refused: the agent could
    // not log in without SELECT.
    let mut cmd = repo.cmd();
    cmd.args(["hosts", "credentials", "web02"])
        .env("CELEROOT_REDIS_URL", redis.url().replace("/0", "/3"));
    let (out, code) = run(cmd);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("selects database 3"), "{out}");

    // A host whose queues change gets its worker's user changed with them.
    let worker_keys = |redis: &RedisServer| -> String {
        let user: redis::Value = redis::cmd("ACL")
            .arg("GETUSER")
            .arg("celeroot.production.web01.worker")
            .query(&mut redis.conn())
            .expect("ACL GETUSER");
        format!("{user:?}")
    };
    assert!(
        worker_keys(&redis).contains("~app "),
        "{}",
        worker_keys(&redis)
    );
    repo.edit(
        "manifests/hosts/web01.yaml",
        "roles: [webserver, application]",
        "roles: [webserver]",
    );
    repo.commit("web01 serves web only");
    let mut cmd = repo.cmd();
    cmd.args(["reconcile", "--skip-deploy"])
        .env("CELEROOT_REDIS_URL", redis.url());
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
    let keys = worker_keys(&redis);
    assert!(
        !keys.contains("~app ") && keys.contains("~webserver "),
        "{keys}"
    );

    // Pruning the host deletes its agent's and its worker's users.
    repo.remove("manifests/hosts/web01.yaml");
    repo.commit("retire web01");
    let mut cmd = repo.cmd();
    cmd.args(["reconcile", "--skip-deploy"])
        .env("CELEROOT_REDIS_URL", redis.url());
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query(&mut redis.conn())
        .expect("ACL USERS");
    assert!(
        !users
            .iter()
            .any(|u| u.starts_with("celeroot.production.web01")),
        "{users:?}"
    );
    assert!(redis::Client::open(url.as_str())
        .expect("client")
        .get_connection()
        .is_err());
}

/// Finding 9: any agent could flood (SADD) or expire the shared heartbeat index, and
/// `drift` read all of it (500,000 fake members: 1.6 s, 240 MB). The index is gone: an
/// agent may write only its own heartbeat key, and readers find unmanaged hosts by SCAN,
/// reading at most MAX_UNMANAGED_HEARTBEATS.
#[test]
fn an_agent_cannot_touch_a_shared_heartbeat_index_and_drift_ignores_a_flooded_one() {
    let redis = RedisServer::start();
    let repo = reconciled_example(&redis);
    let url = agent_url(&repo, &redis.url(), "web01");
    let mut c = redis::Client::open(url.as_str())
        .expect("client")
        .get_connection()
        .expect("log in as web01's agent");
    for (cmd, args) in [
        ("SADD", vec!["celeroot:{production}:heartbeats", "ghost"]),
        ("EXPIRE", vec!["celeroot:{production}:heartbeats", "1"]),
        (
            "HSET",
            vec!["celeroot:{production}:heartbeat:ghost", "ts", "1"],
        ),
    ] {
        let e = redis::cmd(cmd)
            .arg(&args)
            .query::<redis::Value>(&mut c)
            .expect_err(&format!("{cmd} must be refused"));
        assert!(
            e.to_string().to_lowercase().contains("noperm"),
            "{cmd}: {e}"
        );
    }
    // A flooded index left by an old agent, and one real unmanaged heartbeat.
    let mut admin = redis.conn();
    for chunk in 0..50 {
        let mut sadd = redis::cmd("SADD");
        sadd.arg("celeroot:{production}:heartbeats");
        for i in 0..2000 {
            sadd.arg(format!("fake-{chunk}-{i}"));
        }
        let _: i64 = sadd.query(&mut admin).expect("SADD");
    }
    let _: () = redis::cmd("HSET")
        .arg("celeroot:{production}:heartbeat:stray01")
        .arg("ts")
        .arg(
            chrono::DateTime::parse_from_rfc3339(crate::common::NOW)
                .expect("NOW")
                .timestamp(),
        )
        .arg("status")
        .arg("running")
        .query(&mut admin)
        .expect("HSET");
    let mut cmd = repo.cmd();
    cmd.args(["drift", "-o", "json"])
        .env("CELEROOT_REDIS_URL", redis.url());
    let (out, _) = run(cmd);
    assert!(out.contains("\"host\": \"stray01\""), "{out}");
    assert!(!out.contains("fake-"), "the old index is not read");
}

/// Finding 10: terminal escape sequences from heartbeats, commit subjects and object
/// values reached the operator's terminal raw in `drift`, `history`, `status` and `diff`.
#[test]
fn escape_sequences_from_outside_are_shown_never_sent_to_the_terminal() {
    let redis = RedisServer::start();
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    repo.edit(
        "manifests/schedules/billing-sync.yaml",
        "  description: Push new invoices",
        "  description: \"\\e]0;owned\\a\\e[2JPush new invoices\"\n  # was: Push new invoices",
    );
    repo.commit("subject \x1b[31mred\x1b[0m \x1b]0;title\x07 and a \r carriage return");
    let celeroot = |args: &[&str]| {
        let mut cmd = repo.cmd();
        cmd.args(args).env("CELEROOT_REDIS_URL", redis.url());
        run(cmd).0
    };
    let _ = celeroot(&["reconcile", "--skip-deploy"]);
    let _: () = redis::cmd("HSET")
        .arg("celeroot:{production}:heartbeat:web01")
        .arg("ts")
        .arg(
            chrono::DateTime::parse_from_rfc3339(crate::common::NOW)
                .expect("NOW")
                .timestamp(),
        )
        .arg("status")
        .arg("running\x1b[2J\x1b]0;pwned\x07")
        .arg("release")
        .arg("r-\x1b[8mhidden")
        .query(&mut redis.conn())
        .expect("HSET");
    for args in [
        &["history"][..],
        &["status"][..],
        &["drift"][..],
        &["diff"][..],
    ] {
        let out = celeroot(args);
        let raw: Vec<char> = out
            .chars()
            .filter(|c| c.is_control() && *c != '\n' && *c != '\t')
            .collect();
        assert!(
            raw.is_empty(),
            "{args:?} printed raw control characters {raw:?}: {out}"
        );
    }
    let history = celeroot(&["history"]);
    assert!(history.contains("\\x1b[31mred\\x1b[0m"), "{history}");
    let drift = celeroot(&["drift"]);
    assert!(
        drift.contains("\\x1b"),
        "the heartbeat's fields are shown escaped: {drift}"
    );
}

/// Finding 11: the daemon's HTTP server had no header read timeout and no connection cap:
/// 371 half-open requests made `/healthz` time out. Now a client that does not finish its
/// headers within HEADER_READ_TIMEOUT (5 s) is disconnected, and at most 256 connections
/// are served at once. A slow-loris client on loopback, bounded in count and time.
#[test]
fn slow_loris_clients_are_cut_off_and_healthz_keeps_answering() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let redis = RedisServer::start();
    let mut repo = TestRepo::with_example();
    let first = repo.commit("example");
    let bare = crate::common::daemon::BareRepo::new();
    bare.push_from(&repo, "main");
    let mut d = crate::common::daemon::Daemon::start(&bare.url(), &redis.url(), &[]);
    d.wait_for("applied", Duration::from_secs(30), |d| {
        d.applied().as_deref() == Some(first.as_str())
    });
    // 400 connections, each sending half a request and then nothing.
    let mut loris = Vec::new();
    for _ in 0..400 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port)).expect("connect");
        s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .expect("write");
        loris.push(s);
    }
    let asked = Instant::now();
    let (code, body) = d.get("/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "{:?}",
        asked.elapsed()
    );
    // Every half-open connection is closed by the server once the timeout passes.
    std::thread::sleep(Duration::from_secs(7));
    let mut closed = 0;
    for s in &mut loris {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 256];
        // Closed: EOF, or a reset; a request timeout answer (408) counts too.
        match s.read(&mut buf) {
            Ok(_) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            Err(_) => {}
        }
    }
    assert_eq!(closed, loris.len(), "half-open connections still held open");
    let (code, _) = d.get("/healthz");
    assert_eq!(code, 200);
}

/// A one-shot-per-connection HTTP server on `addr` answering every request with
/// `response`; returns its port and every request it received (bounded: it stops after
/// 20 requests or when the test ends).
fn tiny_http(addr: &str, response: String) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind((addr, 0)).expect("bind");
    let port = l.local_addr().expect("addr").port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming().take(20) {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let mut buf = vec![0u8; 8192];
            let n = s.read(&mut buf).unwrap_or(0);
            if let Ok(mut v) = log.lock() {
                v.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            let _ = s.write_all(response.replace("{port}", &port.to_string()).as_bytes());
        }
    });
    (port, seen)
}

/// Finding 12: the git token went to whatever host the origin redirected to, and over
/// plain http://. Now it is sent only to the configured origin's host and port, over
/// https://; an http:// origin with a token is refused before any request.
#[test]
fn the_git_token_never_goes_over_http_or_to_a_redirected_host() {
    // The "other host" asks for credentials and records what it gets.
    let (other, other_seen) = tiny_http(
        "127.0.0.2",
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
    );
    let (origin, origin_seen) = tiny_http(
        "127.0.0.1",
        format!("HTTP/1.1 301 Moved Permanently\r\nLocation: http://127.0.0.2:{other}/config.git/info/refs?service=git-upload-pack\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    );
    let cache = tempfile::tempdir().expect("cache");
    let url = format!("http://127.0.0.1:{origin}/config.git");
    let creds = celeroot::source::remote::Credentials {
        token: Some("TOKEN-never-sent-42".into()),
        ssh_key: None,
    };
    let opened = celeroot::source::remote::Mirror::open(
        celeroot::source::remote::Origin::parse(&url),
        "main",
        cache.path(),
        creds,
    );
    if let Ok(m) = &opened {
        let _ = m.fetch();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let e = opened.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("it is sent only over https://"), "{e}");
    for (who, seen) in [("origin", &origin_seen), ("other host", &other_seen)] {
        let seen = seen.lock().map(|v| v.join("\n")).unwrap_or_default();
        assert!(
            !seen.contains("Authorization"),
            "{who} got credentials: {seen}"
        );
        assert!(
            !seen.to_lowercase().contains("token-never-sent"),
            "{who}: {seen}"
        );
    }
}

/// Finding 13: `config edit` wrote its copy to a predictable path in /tmp with the
/// default mode (0644, following a planted link). Now a `tempfile` copy: created
/// exclusively, unpredictable name, 0600; kept only when the edit is refused.
#[test]
fn config_edit_uses_a_private_unpredictable_temporary_copy() {
    use std::os::unix::fs::PermissionsExt;
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    let tmp = tempfile::tempdir().expect("tmp");
    let seen = tmp.path().join("seen");
    let script = repo.root().join("editor.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nstat -c '%a %n' \"$1\" > {}\nsed -i 's|Europe/Berlin|Europe/Paris|' \"$1\"\n",
            seen.display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut c = repo.cmd();
    c.args(["config", "edit"])
        .env("EDITOR", &script)
        .env_remove("VISUAL")
        .env("TMPDIR", tmp.path());
    let (out, code) = run(c);
    assert_eq!(code, 0, "{out}");
    let seen = std::fs::read_to_string(&seen).expect("the editor ran");
    let (mode, path) = seen.trim().split_once(' ').expect("mode and path");
    assert_eq!(mode, "600", "{seen}");
    let name = std::path::Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    assert!(
        name.starts_with("celeroot-edit-") && name.ends_with("-cluster.yaml"),
        "{name}"
    );
    assert!(
        !name.contains(&format!("-{}-", std::process::id())),
        "{name}"
    );
    assert!(
        !std::path::Path::new(path).exists(),
        "removed after a saved edit"
    );
    // The manifest keeps its mode after the atomic write.
    let mode = std::fs::metadata(repo.root().join("manifests/cluster.yaml"))
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644);
}
