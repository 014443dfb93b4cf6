use std::collections::BTreeMap;

use crate::common::redis::RedisServer;
use crate::common::{run, TestRepo};

const PREFIX: &str = "celeroot:{production}:";

fn committed_example() -> TestRepo {
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    repo
}

fn reconcile(repo: &TestRepo, redis: &str, args: &[&str]) -> (String, i32) {
    let mut cmd = repo.cmd();
    cmd.arg("reconcile")
        .args(args)
        .env("CELEROOT_REDIS_URL", redis);
    run(cmd)
}

fn celeroot(repo: &TestRepo, redis: &str, args: &[&str]) -> (String, i32) {
    let mut cmd = repo.cmd();
    cmd.args(args).env("CELEROOT_REDIS_URL", redis);
    run(cmd)
}

/// Every key under the cluster prefix with its value, except the event stream and the
/// lease (which record attempts, not state).
pub fn snapshot(conn: &mut redis::Connection) -> BTreeMap<String, String> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{PREFIX}*"))
        .query(conn)
        .expect("KEYS");
    let mut out = BTreeMap::new();
    for k in keys {
        if k.ends_with(":events") || k.ends_with(":lock") || k.ends_with(":lock-epoch") {
            continue;
        }
        let t: String = redis::cmd("TYPE").arg(&k).query(conn).expect("TYPE");
        let v = match t.as_str() {
            "hash" => {
                let mut h = redis::cmd("HGETALL")
                    .arg(&k)
                    .query::<BTreeMap<String, String>>(conn)
                    .expect("HGETALL");
                if k.contains(":redbeat:") {
                    // `meta` belongs to Celery Beat (last run time), not to the reconciled state.
                    h.remove("meta");
                }
                format!("{h:?}")
            }
            "set" => format!(
                "{:?}",
                redis::cmd("SMEMBERS")
                    .arg(&k)
                    .query::<std::collections::BTreeSet<String>>(conn)
                    .expect("SMEMBERS")
            ),
            "list" => format!(
                "{:?}",
                redis::cmd("LRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(-1)
                    .query::<Vec<String>>(conn)
                    .expect("LRANGE")
            ),
            "zset" => format!(
                "{:?}",
                redis::cmd("ZRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(-1)
                    .query::<std::collections::BTreeSet<String>>(conn)
                    .expect("ZRANGE")
            ),
            _ => format!(
                "{:?}",
                redis::cmd("GET")
                    .arg(&k)
                    .query::<Option<String>>(conn)
                    .expect("GET")
            ),
        };
        out.insert(k, v);
    }
    out
}

fn write_commands(conn: &mut redis::Connection) -> Vec<String> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(conn)
        .expect("INFO");
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let calls: u64 = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name, calls))
        })
        // Taking the lease increments `lock-epoch` once (lease bookkeeping, like the
        // SET and DEL of `lock`): not a state write.
        .filter(|(name, calls)| !(*name == "incr" && *calls <= 1))
        .map(|(name, _)| name)
        .filter(|c| {
            [
                "hset", "hdel", "sadd", "srem", "incr", "lpush", "ltrim", "rename", "expire",
            ]
            .contains(c)
        })
        .map(String::from)
        .collect()
}

#[test]
fn first_reconcile_writes_the_documented_keys() {
    let redis = RedisServer::start();
    let repo = committed_example();
    let (out, code) = reconcile(&repo, &redis.url(), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Plan: 16 to add, 0 to change, 0 to remove."),
        "{out}"
    );
    assert!(out.contains("Applied "), "{out}");
    let mut c = redis.conn();
    let worker: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("{PREFIX}worker:web01"))
        .query(&mut c)
        .expect("worker");
    assert_eq!(
        worker["queues"],
        r#"["app","webserver","celeroot.host.web01"]"#
    );
    assert_eq!(
        worker["concurrency"], "8",
        "the largest concurrency of its roles"
    );
    assert_eq!(
        worker["max_tasks_per_child"], "500",
        "the strictest recycling limit of its roles"
    );
    assert_eq!(worker["address"], "192.0.2.11");
    let web: std::collections::BTreeSet<String> = redis::cmd("SMEMBERS")
        .arg(format!("{PREFIX}role:webserver:hosts"))
        .query(&mut c)
        .expect("role index");
    assert_eq!(web.into_iter().collect::<Vec<_>>(), vec!["web01", "web02"]);
    let layout: String = redis::cmd("GET")
        .arg(format!("{PREFIX}layout"))
        .query(&mut c)
        .expect("layout");
    assert_eq!(layout, "2");
    let applied: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("{PREFIX}applied"))
        .query(&mut c)
        .expect("applied");
    assert_eq!(applied["actor"], "tester@ci");
    assert_eq!(applied["subject"], "example");
    assert_eq!(applied["generation"], "1");
}

#[test]
fn reconciling_the_applied_revision_again_writes_nothing_but_the_event() {
    let redis = RedisServer::start();
    let repo = committed_example();
    assert_eq!(reconcile(&repo, &redis.url(), &[]).1, 0);
    let mut c = redis.conn();
    let before = snapshot(&mut c);
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut c)
        .expect("RESETSTAT");
    let (out, code) = reconcile(&repo, &redis.url(), &["-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let json = out.split("[exit status").next().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(json).expect("JSON outcome");
    assert_eq!(v["result"], "noop");
    assert_eq!(v["writes"], 0);
    assert_eq!(snapshot(&mut c), before, "no key changed");
    let epoch: String = redis::cmd("GET")
        .arg(format!("{PREFIX}lock-epoch"))
        .query(&mut c)
        .expect("GET");
    assert_eq!(
        epoch, "2",
        "the one INCR is the lease's: two reconciles took it"
    );
    assert!(
        write_commands(&mut c).is_empty(),
        "no state writes: {:?}",
        write_commands(&mut c)
    );
    let events: usize = redis::cmd("XLEN")
        .arg(format!("{PREFIX}events"))
        .query(&mut c)
        .expect("XLEN");
    assert_eq!(events, 2, "one event per attempt");
}

/// Adds `n` extra hosts to the example.
fn grow(repo: &TestRepo, n: usize) {
    for i in 0..n {
        repo.write(
            &format!("manifests/hosts/gen/w{i:04}.yaml"),
            &format!("apiVersion: celeroot.io/v1\nkind: Host\nmetadata:\n  name: w{i:04}\n  labels: {{env: production, tier: batch}}\nspec:\n  address: w{i:04}.fleet.example\n  roles: [application]\n"),
        );
    }
}

#[test]
fn a_no_op_costs_the_same_round_trips_for_any_fleet_size() {
    let mut trips = Vec::new();
    for n in [0, 300] {
        let redis = RedisServer::start();
        let mut repo = TestRepo::with_example();
        grow(&repo, n);
        repo.commit("fleet");
        assert_eq!(reconcile(&repo, &redis.url(), &[]).1, 0);
        let (out, code) = reconcile(&repo, &redis.url(), &["-o", "json"]);
        assert_eq!(code, 0, "{out}");
        let v: serde_json::Value =
            serde_json::from_str(out.split("[exit status").next().unwrap_or_default())
                .expect("JSON");
        assert_eq!(v["result"], "noop");
        // The fast no-op: nothing compiled, every managed key read back.
        assert!(v["settled"].as_u64().is_some_and(|n| n > 0), "{out}");
        trips.push(v["roundTrips"].as_u64().expect("roundTrips"));
    }
    assert_eq!(
        trips[0], trips[1],
        "round trips of a no-op must not grow with the fleet (below 4,000 keys a request)"
    );
    assert!(
        trips[0] <= 10,
        "owner, settled record, database claim, lease, digests, types, values, generation, event, release: {trips:?}"
    );
}

#[test]
fn the_applied_revision_again_skips_compiling_unless_a_key_was_edited_out_of_band() {
    let redis = RedisServer::start();
    let mut repo = committed_example();
    let json = |out: &str| -> serde_json::Value {
        let stdout = out.split("------- stderr").next().unwrap_or_default();
        serde_json::from_str(stdout.split("[exit status").next().unwrap_or_default()).expect("JSON")
    };
    assert_eq!(reconcile(&repo, &redis.url(), &["--skip-deploy"]).1, 0);
    let (out, code) = reconcile(&repo, &redis.url(), &["--skip-deploy", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let v = json(&out);
    assert_eq!(v["result"], "noop", "{out}");
    assert!(
        v["settled"].as_u64().is_some_and(|n| n > 0),
        "fast no-op: {out}"
    );

    // An out-of-band edit: the fast path sees the digest differ and the full path heals.
    let mut c = redis.conn();
    let _: i64 = redis::cmd("HSET")
        .arg(format!("{PREFIX}worker:web01"))
        .arg("concurrency")
        .arg("99")
        .query(&mut c)
        .expect("HSET");
    let before = snapshot(&mut c);
    let (out, code) = reconcile(&repo, &redis.url(), &["--skip-deploy", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let v = json(&out);
    assert_eq!(v["result"], "applied", "{out}");
    assert_eq!(v["correctiveWrites"], 1, "{out}");
    assert!(v.get("settled").is_none(), "the full path: {out}");
    assert_ne!(before, snapshot(&mut c));
    let (out, _) = reconcile(&repo, &redis.url(), &["--skip-deploy", "-o", "json"]);
    assert!(
        json(&out)["settled"].is_u64(),
        "settled again after healing: {out}"
    );

    // A deleted key, a changed type and a RedBeat definition are caught the same way;
    // beat's own `meta` field is not celeroot's and changes nothing.
    let entry: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{PREFIX}redbeat:*.*"))
        .query(&mut c)
        .expect("KEYS");
    let entry = entry.first().expect("a RedBeat entry").clone();
    let _: i64 = redis::cmd("HSET")
        .arg(&entry)
        .arg("meta")
        .arg("{\"last_run_at\": null}")
        .query(&mut c)
        .expect("HSET meta");
    let (out, _) = reconcile(&repo, &redis.url(), &["--skip-deploy", "-o", "json"]);
    assert!(
        json(&out)["settled"].is_u64(),
        "beat's meta is not drift: {out}"
    );
    for edit in [
        vec!["HSET", entry.as_str(), "definition", "{}"],
        vec!["DEL", &format!("{PREFIX}role:webserver:hosts")],
        vec!["SADD", &format!("{PREFIX}hosts"), "intruder"],
    ] {
        let _: redis::Value = redis::cmd(edit[0])
            .arg(&edit[1..])
            .query(&mut c)
            .expect("edit");
        let (out, code) = reconcile(&repo, &redis.url(), &["--skip-deploy", "-o", "json"]);
        assert_eq!(code, 0, "{out}");
        let v = json(&out);
        assert_eq!(v["result"], "applied", "{edit:?}: {out}");
        assert!(v.get("settled").is_none(), "{edit:?}: {out}");
    }

    // --sweep takes the full path (it needs a SCAN of the prefix).
    let (out, _) = reconcile(
        &repo,
        &redis.url(),
        &["--skip-deploy", "--sweep", "-o", "json"],
    );
    assert!(json(&out).get("settled").is_none(), "{out}");
    // --dry-run checks the same way and writes nothing, not even the event.
    let events = |c: &mut redis::Connection| -> usize {
        redis::cmd("XLEN")
            .arg(format!("{PREFIX}events"))
            .query(c)
            .expect("XLEN")
    };
    let n = events(&mut c);
    let (out, code) = reconcile(
        &repo,
        &redis.url(),
        &["--skip-deploy", "--dry-run", "-o", "json"],
    );
    assert_eq!(code, 0, "{out}");
    let v = json(&out);
    assert_eq!(v["result"], "dryrun", "{out}");
    assert!(v["settled"].is_u64(), "{out}");
    assert_eq!(events(&mut c), n);

    // A revision with warnings: the fast no-op names them (nothing was parsed to show them).
    repo.remove("manifests/hosts/web01.yaml");
    repo.remove("manifests/hosts/web02.yaml");
    repo.commit("no web hosts");
    assert_eq!(reconcile(&repo, &redis.url(), &["--skip-deploy"]).1, 0);
    let (out, code) = reconcile(&repo, &redis.url(), &["--skip-deploy"]);
    assert_eq!(code, 0, "{out}");
    insta::assert_snapshot!(out, @r"
    celeroot plan for cluster production: live (f873000b) → HEAD (f873000b)

    No changes. The live state matches HEAD (f873000b).

    Nothing to do: the live state already matches HEAD (f873000b). Recorded a no-op event.
    ------- stderr -------
    note: HEAD (f873000b) has 1 warning(s), reported when it was applied (`celeroot validate --rev HEAD` shows them)
    [exit status: 0]
    ");
}

#[test]
fn invalid_manifests_write_nothing() {
    let redis = RedisServer::start();
    let mut repo = TestRepo::with_example();
    repo.edit(
        "manifests/hosts/web01.yaml",
        "roles: [webserver, application]",
        "roles: [nope]",
    );
    repo.commit("broken");
    let (out, code) = reconcile(&repo, &redis.url(), &[]);
    assert_eq!(code, 1, "{out}");
    insta::assert_snapshot!(out, @r#"
    ------- stderr -------
    error: host "web01" references unknown role "nope"
      --> manifests/hosts/web01.yaml:12:11
        |
     12 |   roles: [nope]
        |           ^
      = help: defined roles: application, database, webserver
    error: manifests at HEAD (85b80b8a) are invalid: 1 error(s), 0 warning(s); nothing was changed
    [exit status: 1]
    "#);
    let n: usize = redis::cmd("DBSIZE")
        .query(&mut redis.conn())
        .expect("DBSIZE");
    assert_eq!(n, 0, "not a single key, not even an event");
}

#[test]
fn redis_down_is_a_clear_error_without_the_password() {
    let repo = committed_example();
    let (out, code) = reconcile(&repo, "redis://ops:Zebra-Secret-42@127.0.0.1:1/0", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cannot connect to Redis at redis://ops:***@127.0.0.1:1/0"),
        "{out}"
    );
    assert!(!out.contains("Zebra-Secret-42"), "{out}");
}

#[test]
fn requirepass_and_acl_users_work_and_passwords_never_show() {
    let redis = RedisServer::with_password("Quokka-Pass-7");
    let repo = committed_example();
    let (out, code) = reconcile(&repo, &redis.url(), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("Quokka-Pass-7"), "{out}");
    // A wrong password: a clear error, no password in it.
    let bad = format!("redis://:Wrong-Pass-9@127.0.0.1:{}/0", redis.port);
    let (out, code) = reconcile(&repo, &bad, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        !out.contains("Wrong-Pass-9") && !out.contains("Quokka-Pass-7"),
        "{out}"
    );
    assert!(out.contains("redis://:***@127.0.0.1"), "{out}");
    // An ACL user limited to celeroot's keys.
    let mut c = redis.conn();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("reconciler")
        .arg("on")
        .arg(">Ibex-Acl-3")
        .arg("~celeroot:*")
        .arg("+@all")
        .query(&mut c)
        .expect("ACL SETUSER");
    let acl = format!("redis://reconciler:Ibex-Acl-3@127.0.0.1:{}/0", redis.port);
    let (out, code) = reconcile(&repo, &acl, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Nothing to do"), "{out}");
    let (out, code) = celeroot(&repo, &acl, &["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("Ibex-Acl-3"), "{out}");
}

#[test]
fn a_fault_between_plan_and_apply_leaves_the_old_state() {
    let redis = RedisServer::start();
    let mut repo = committed_example();
    assert_eq!(reconcile(&repo, &redis.url(), &[]).1, 0);
    let mut c = redis.conn();
    let old = snapshot(&mut c);
    repo.edit(
        "manifests/roles/webserver.yaml",
        "concurrency: 4",
        "concurrency: 6",
    );
    grow(&repo, 20);
    repo.commit("change");
    let mut cmd = repo.cmd();
    cmd.arg("reconcile")
        .env("CELEROOT_REDIS_URL", redis.url())
        .env("CELEROOT_FAULT", "before-apply");
    let (out, code) = run(cmd);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("injected fault"), "{out}");
    assert_eq!(snapshot(&mut c), old, "entirely the old state");
    let lease: Option<String> = redis::cmd("GET")
        .arg(format!("{PREFIX}lock"))
        .query(&mut c)
        .expect("GET");
    assert!(lease.is_none(), "the lease is released after a failure");
    assert_eq!(
        reconcile(&repo, &redis.url(), &[]).1,
        0,
        "a rerun converges"
    );
    let (out, _) = reconcile(&repo, &redis.url(), &[]);
    assert!(out.contains("Nothing to do"), "{out}");
}

#[test]
fn killing_redis_during_apply_leaves_old_or_new_and_a_rerun_converges() {
    let mut redis =
        RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"], None);
    let mut repo = committed_example();
    assert_eq!(reconcile(&repo, &redis.url(), &[]).1, 0);
    let old = snapshot(&mut redis.conn());
    grow(&repo, 1500);
    repo.commit("big change");
    // The new state, computed on a second server, to compare with.
    let reference = RedisServer::start();
    assert_eq!(reconcile(&repo, &reference.url(), &[]).1, 0);
    let mut outcomes = Vec::new();
    for delay_ms in [5u64, 30, 80, 150] {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("celeroot"));
        cmd.current_dir(repo_path(&repo))
            .args(["reconcile", "--allow-rollback"])
            .env("CELEROOT_REDIS_URL", redis.url())
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().expect("spawn reconcile");
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        redis.kill();
        let _ = child.wait();
        redis.restart();
        let now = snapshot(&mut redis.conn());
        let is_old = strip_meta(&now) == strip_meta(&old);
        let is_new = strip_meta(&now) == strip_meta(&snapshot(&mut reference.conn()));
        assert!(
            is_old || is_new,
            "after a crash at {delay_ms} ms the state is neither old nor new"
        );
        outcomes.push(if is_new { "new" } else { "old" });
        if is_new {
            break;
        }
    }
    // Whatever happened, a rerun converges to the new state. A crash may leave the lease
    // behind: it expires within LEASE_TTL (15 s), which the rerun waits for.
    let (out, code) = reconcile(
        &repo,
        &redis.url(),
        &["--allow-rollback", "--lock-timeout", "30s"],
    );
    assert_eq!(code, 0, "{out} (crash outcomes: {outcomes:?})");
    assert_same(
        &strip_meta(&snapshot(&mut redis.conn())),
        &strip_meta(&snapshot(&mut reference.conn())),
        "converged state",
    );
}

fn repo_path(repo: &TestRepo) -> std::path::PathBuf {
    repo.root()
}

/// Asserts two snapshots are equal, naming only the keys that differ.
fn assert_same(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>, what: &str) {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let diff: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}:\n  left:  {:?}\n  right: {:?}", a.get(k), b.get(k)))
        .collect();
    assert!(
        diff.is_empty(),
        "{what}: {} key(s) differ:\n{}",
        diff.len(),
        diff.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// Drops what legitimately differs between two servers applying the same revision.
fn strip_meta(s: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    s.iter()
        .filter(|(k, _)| {
            !k.ends_with(":applied")
                && !k.ends_with(":history")
                && !k.ends_with(":generation")
                && !k.ends_with(":settled")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn the_mass_delete_guard_refuses_and_can_be_overridden() {
    let redis = RedisServer::start();
    let mut repo = committed_example();
    assert_eq!(reconcile(&repo, &redis.url(), &[]).1, 0);
    for h in ["web01", "web02", "app01"] {
        repo.remove(&format!("manifests/hosts/{h}.yaml"));
    }
    repo.commit("oops");
    let before = snapshot(&mut redis.conn());
    let (out, code) = reconcile(&repo, &redis.url(), &[]);
    assert_eq!(code, 1, "{out}");
    insta::assert_snapshot!(out, @r#"
    ------- stderr -------
    warning: schedule "rotate-logs": no host has role "webserver", so this target runs nowhere
      --> manifests/schedules/rotate-logs.yaml:12:13
        |
     12 |     - role: webserver
        |             ^
    error: refusing to remove 3 of 5 live hosts (more than half)
      = hint: pass --allow-mass-delete if this is intended (a wrong --path or an emptied commit looks like this)
    [exit status: 1]
    "#);
    assert_eq!(snapshot(&mut redis.conn()), before);
    let (out, code) = reconcile(&repo, &redis.url(), &["--allow-mass-delete"]);
    assert_eq!(code, 0, "{out}");
    let exists: bool = redis::cmd("EXISTS")
        .arg(format!("{PREFIX}worker:web01"))
        .query(&mut redis.conn())
        .expect("EXISTS");
    assert!(!exists);
}

#[test]
fn the_rollback_guard_history_and_rollback() {
    let redis = RedisServer::start();
    let mut repo = committed_example();
    assert_eq!(reconcile(&repo, &redis.url(), &[]).1, 0);
    repo.edit(
        "manifests/roles/webserver.yaml",
        "concurrency: 4",
        "concurrency: 6",
    );
    repo.commit("more web workers");
    assert_eq!(reconcile(&repo, &redis.url(), &[]).1, 0);
    let (out, code) = reconcile(&repo, &redis.url(), &["--rev", "HEAD~1"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("is not a descendant of the applied revision"),
        "{out}"
    );
    let (out, code) = celeroot(&repo, &redis.url(), &["history"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("more web workers"), "{out}");
    assert!(out.contains("example"), "{out}");
    let (out, code) = celeroot(&repo, &redis.url(), &["rollback", "HEAD~1"]);
    assert_eq!(code, 0, "{out}");
    let worker: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("{PREFIX}worker:web02"))
        .query(&mut redis.conn())
        .expect("worker");
    assert_eq!(
        worker["concurrency"], "8",
        "application's 8 again dominates webserver's 4"
    );
}

#[test]
fn pruning_no_prune_and_the_prune_annotation() {
    let redis = RedisServer::start();
    let mut repo = TestRepo::with_example();
    repo.edit(
        "manifests/hosts/db02.yaml",
        "  name: db02\n",
        "  name: db02\n  annotations:\n    celeroot.io/prune: disabled\n",
    );
    repo.commit("example");
    assert_eq!(reconcile(&repo, &redis.url(), &[]).1, 0);
    repo.remove("manifests/hosts/app01.yaml");
    repo.commit("retire app01");
    let exists = |k: &str| -> bool {
        redis::cmd("EXISTS")
            .arg(format!("{PREFIX}{k}"))
            .query(&mut redis.conn())
            .expect("EXISTS")
    };
    let (out, code) = reconcile(&repo, &redis.url(), &["--no-prune"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("kept Host/app01"), "{out}");
    assert!(exists("worker:app01"));
    let (out, code) = reconcile(&repo, &redis.url(), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(!exists("worker:app01"), "pruned");
    repo.remove("manifests/hosts/db02.yaml");
    repo.edit(
        "manifests/schedules/replica-check.yaml",
        "    - selector:\n        matchLabels:\n          replica: \"true\"\n",
        "",
    );
    repo.commit("retire db02");
    let (out, code) = reconcile(&repo, &redis.url(), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("kept Host/db02"), "{out}");
    assert!(
        exists("worker:db02"),
        "celeroot.io/prune: disabled keeps it"
    );
}

#[test]
fn a_held_lease_stops_a_second_reconciler_and_unlock_releases_it() {
    let redis = RedisServer::start();
    let repo = committed_example();
    let lease = r#"{"id":"abc123","holder":"ops@bastion","revision":"deadbeef","since":"2026-11-23T10:00:00+00:00","pid":4242}"#;
    let _: () = redis::cmd("SET")
        .arg(format!("{PREFIX}lock"))
        .arg(lease)
        .query(&mut redis.conn())
        .expect("SET");
    let (out, code) = reconcile(&repo, &redis.url(), &[]);
    assert_eq!(code, 1, "{out}");
    insta::assert_snapshot!(out, @r"
    ------- stderr -------
    error: another reconcile holds the lease: ops@bastion since 2026-11-23T10:00:00+00:00 for revision deadbeef (lease id abc123)
      = hint: wait for it to finish; if it is stale (its holder is gone), run `celeroot unlock abc123`
    [exit status: 1]
    ");
    let n: usize = redis::cmd("DBSIZE")
        .query(&mut redis.conn())
        .expect("DBSIZE");
    assert_eq!(
        n, 3,
        "only the database claim, the lease and the event of the refused attempt"
    );
    let (out, code) = celeroot(&repo, &redis.url(), &["unlock"]);
    assert_eq!(code, 1, "{out}");
    insta::assert_snapshot!(out, @r"
    Lease abc123 held by ops@bastion (pid 4242) since 2026-11-23T10:00:00+00:00 for revision deadbeef.
    ------- stderr -------
    error: the lease abc123 is held; nothing was released
      = hint: if that reconcile is gone, release the lease with `celeroot unlock abc123`
    [exit status: 1]
    ");
    let (out, code) = celeroot(&repo, &redis.url(), &["unlock", "abc123"]);
    assert_eq!(code, 0, "{out}");
    insta::assert_snapshot!(out, @r"
    Lease abc123 held by ops@bastion (pid 4242) since 2026-11-23T10:00:00+00:00 for revision deadbeef.
    Released.
    [exit status: 0]
    ");
    assert_eq!(reconcile(&repo, &redis.url(), &[]).1, 0);
}

#[test]
fn racing_reconcilers_never_interleave() {
    let redis = RedisServer::start();
    let mut repo = TestRepo::with_example();
    grow(&repo, 400);
    repo.commit("fleet");
    let reference = RedisServer::start();
    assert_eq!(reconcile(&repo, &reference.url(), &[]).1, 0);
    let spawn = || {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("celeroot"))
            .current_dir(repo_path(&repo))
            .arg("reconcile")
            .env("CELEROOT_REDIS_URL", redis.url())
            .env("NO_COLOR", "1")
            .output()
    };
    let outputs: Vec<std::process::Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(spawn)).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("join").expect("run"))
            .collect()
    });
    let applied = outputs
        .iter()
        .filter(|o| String::from_utf8_lossy(&o.stdout).contains("Applied "))
        .count();
    assert_eq!(applied, 1, "exactly one reconciler applies the revision");
    for o in &outputs {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let ok = o.status.code() == Some(0);
        let lost = o.status.code() == Some(1)
            && (text.contains("holds the lease") || text.contains("live state changed"));
        assert!(ok || lost, "unexpected outcome: {text}");
    }
    assert_eq!(
        strip_meta(&snapshot(&mut redis.conn())),
        strip_meta(&snapshot(&mut reference.conn()))
    );
    let mut c = redis.conn();
    let generation: u64 = redis::cmd("GET")
        .arg(format!("{PREFIX}generation"))
        .query(&mut c)
        .expect("GET");
    assert_eq!(generation, 1, "one write transaction");
}

#[test]
fn diff_against_live_and_dry_run() {
    let redis = RedisServer::start();
    let mut repo = committed_example();
    let (out, code) = celeroot(&repo, &redis.url(), &["diff"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("live → HEAD ("), "{out}");
    let (out, code) = reconcile(&repo, &redis.url(), &["--dry-run"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("nothing was written"), "{out}");
    let n: usize = redis::cmd("DBSIZE")
        .query(&mut redis.conn())
        .expect("DBSIZE");
    assert_eq!(n, 0, "a dry run writes nothing");
    assert_eq!(reconcile(&repo, &redis.url(), &[]).1, 0);
    let (out, code) = celeroot(&repo, &redis.url(), &["diff"]);
    assert_eq!(code, 0, "{out}");
    repo.edit(
        "manifests/roles/database.yaml",
        "concurrency: 1",
        "concurrency: 2",
    );
    repo.commit("db");
    let (out, code) = celeroot(&repo, &redis.url(), &["diff", "-o", "json"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("\"name\": \"database\""), "{out}");
}

#[test]
fn an_applied_revision_unknown_to_this_repository_is_guarded() {
    let redis = RedisServer::start();
    let repo = committed_example();
    assert_eq!(reconcile(&repo, &redis.url(), &[]).1, 0);
    // Another repository describing the same cluster, with unrelated history.
    let mut other = TestRepo::with_example();
    other.edit(
        "manifests/roles/database.yaml",
        "concurrency: 1",
        "concurrency: 2",
    );
    other.commit("unrelated history");
    let (out, code) = reconcile(&other, &redis.url(), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("this repository does not contain the applied revision"),
        "{out}"
    );
    assert_eq!(reconcile(&other, &redis.url(), &["--allow-rollback"]).1, 0);
}

#[test]
fn a_key_whose_type_was_changed_out_of_band_is_reported_and_rewritten() {
    let redis = RedisServer::start();
    let repo = committed_example();
    assert_eq!(reconcile(&repo, &redis.url(), &[]).1, 0);
    let mut c = redis.conn();
    let key = format!("{PREFIX}worker:web02");
    let _: () = redis::cmd("DEL").arg(&key).query(&mut c).expect("DEL");
    let _: () = redis::cmd("RPUSH")
        .arg(&key)
        .arg("surprise")
        .query(&mut c)
        .expect("RPUSH");
    let (out, code) = celeroot(&repo, &redis.url(), &["drift"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("worker:web02 — has type list, which celeroot never writes"),
        "{out}"
    );
    let (out, code) = reconcile(&repo, &redis.url(), &[]);
    assert_eq!(code, 0, "{out}");
    let t: String = redis::cmd("TYPE").arg(&key).query(&mut c).expect("TYPE");
    assert_eq!(t, "hash");
    let (out, _) = reconcile(&repo, &redis.url(), &[]);
    assert!(out.contains("Nothing to do"), "{out}");
}

#[test]
fn an_unreadable_lease_value_is_reported_and_can_be_removed() {
    let redis = RedisServer::start();
    let repo = committed_example();
    let _: () = redis::cmd("SET")
        .arg(format!("{PREFIX}lock"))
        .arg("not json")
        .query(&mut redis.conn())
        .expect("SET");
    let (out, code) = reconcile(&repo, &redis.url(), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("an unknown writer"), "{out}");
    assert!(out.contains("celeroot unlock unreadable"), "{out}");
    let (out, code) = celeroot(&repo, &redis.url(), &["unlock", "unreadable"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(reconcile(&repo, &redis.url(), &[]).1, 0);
}

#[test]
fn unlock_and_history_work_with_an_invalid_head_given_the_cluster() {
    let redis = RedisServer::start();
    let mut repo = committed_example();
    assert_eq!(reconcile(&repo, &redis.url(), &[]).1, 0);
    let lease = r#"{"id":"stale1","holder":"ci@runner","revision":"cafe","since":"2026-11-23T09:00:00Z","pid":7}"#;
    let _: () = redis::cmd("SET")
        .arg(format!("{PREFIX}lock"))
        .arg(lease)
        .query(&mut redis.conn())
        .expect("SET");
    repo.edit(
        "manifests/hosts/web01.yaml",
        "roles: [webserver, application]",
        "roles: []",
    );
    repo.commit("broken HEAD");
    let (out, code) = celeroot(
        &repo,
        &redis.url(),
        &["unlock", "stale1", "--cluster", "production"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Released."), "{out}");
    let (out, code) = celeroot(
        &repo,
        &redis.url(),
        &["history", "--cluster", "production", "-o", "json"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"subject\": \"example\""), "{out}");
    let (out, code) = celeroot(&repo, &redis.url(), &["history", "--cluster", "Bad_Name"]);
    assert_eq!(code, 1, "{out}");
}

/// Queue names, RedBeat keys and results are not scoped by cluster, so a database holds
/// one cluster's live state: a second cluster is refused there and writes nothing, and
/// works in a database of its own on the same redis-server.
#[test]
fn a_second_cluster_is_refused_in_a_database_another_cluster_holds() {
    let redis = RedisServer::start();
    let production = committed_example();
    assert_eq!(reconcile(&production, &redis.url(), &[]).1, 0);
    let mut staging = TestRepo::with_example();
    staging.edit(
        "manifests/cluster.yaml",
        "name: production",
        "name: staging",
    );
    staging.commit("staging");
    let keys = |conn: &mut redis::Connection| {
        let mut k: Vec<String> = redis::cmd("KEYS").arg("*").query(conn).expect("KEYS");
        k.sort();
        k
    };
    let before = keys(&mut redis.conn());
    let (out, code) = reconcile(&staging, &redis.url(), &[]);
    assert_eq!(code, 1, "{out}");
    insta::assert_snapshot!(out, @r#"
    ------- stderr -------
    error: this Redis database holds the live state of cluster "production"; celeroot keeps one cluster per database (queue names, RedBeat keys and task results are not scoped by cluster), so cluster "staging" was refused and nothing was written
      = hint: give each cluster a Redis database of its own (--redis redis://HOST:PORT/N); if cluster "production" is gone for good, delete the key celeroot:owner
    [exit status: 1]
    "#);
    assert_eq!(
        keys(&mut redis.conn()),
        before,
        "nothing of staging was written"
    );
    let own = redis.url().replace("/0", "/1");
    let (out, code) = reconcile(&staging, &own, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        reconcile(&production, &redis.url(), &[]).1,
        0,
        "production keeps its database"
    );
}

/// The `writes` of a `reconcile -o json` run (exit status checked).
fn json_writes(repo: &TestRepo, redis: &str) -> u64 {
    let (out, code) = reconcile(repo, redis, &["-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value =
        serde_json::from_str(out.split("[exit status").next().unwrap_or_default()).expect("JSON");
    v["writes"].as_u64().expect("writes")
}

#[test]
fn a_large_apply_in_one_pipelined_transaction_equals_the_same_fleet_applied_in_small_scripts() {
    // Above 1,000 writes an apply is one pipelined MULTI/EXEC of native commands; below,
    // the apply script. Both must leave the same keys.
    let small_steps = RedisServer::start();
    let at_once = RedisServer::start();
    let mut repo = TestRepo::with_example();
    for step in 1..=8 {
        grow(&repo, 150 * step);
        repo.commit(&format!("{} generated hosts", 150 * step));
        let writes = json_writes(&repo, &small_steps.url());
        assert!(
            writes <= 1_000,
            "step {step} took the script path ({writes} writes)"
        );
    }
    let writes = json_writes(&repo, &at_once.url());
    assert!(
        writes > 5_000,
        "one pipelined transaction ({writes} writes)"
    );
    assert_same(
        &strip_meta(&snapshot(&mut at_once.conn())),
        &strip_meta(&snapshot(&mut small_steps.conn())),
        "one transaction vs eight scripts",
    );
    let (out, code) = reconcile(&repo, &at_once.url(), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Nothing to do"),
        "nothing left to write: {out}"
    );
}

/// The example plus 1,500 generated hosts, committed: a first apply above
/// `PIPELINED_ABOVE` writes, so it takes the pipelined transaction.
fn large_first_apply() -> TestRepo {
    let mut repo = TestRepo::with_example();
    grow(&repo, 1500);
    repo.commit("a large first apply");
    repo
}

/// Spawns `celeroot reconcile` paused inside its pipelined transaction
/// (`CELEROOT_FAULT=pause-in-transaction`) and returns once Redis shows a client with
/// queued commands.
#[allow(clippy::zombie_processes)] // the caller waits for the child it returns
fn paused_in_transaction(repo: &TestRepo, redis: &RedisServer) -> std::process::Child {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("celeroot"));
    cmd.current_dir(repo_path(repo))
        .arg("reconcile")
        .env("CELEROOT_REDIS_URL", redis.url())
        .env("NO_COLOR", "1")
        .env("CELEROOT_FAULT", "pause-in-transaction")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn reconcile");
    let mut c = redis.conn();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut c)
            .expect("CLIENT LIST");
        let queued = clients.lines().any(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("multi="))
                .and_then(|n| n.parse::<i64>().ok())
                .is_some_and(|n| n > 0)
        });
        if queued {
            return child;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reconcile exits");
            panic!("no client queued a transaction: {clients}\n{out:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn killing_the_client_or_redis_inside_the_pipelined_first_apply_writes_nothing() {
    let mut redis =
        RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"], None);
    let repo = large_first_apply();
    // The reconciler dies with half its transaction queued: Redis drops the queue.
    let mut child = paused_in_transaction(&repo, &redis);
    child.kill().expect("SIGKILL celeroot");
    let _ = child.wait();
    let managed = |redis: &RedisServer| {
        let s = snapshot(&mut redis.conn());
        s.into_keys().collect::<Vec<_>>()
    };
    assert_eq!(managed(&redis), Vec::<String>::new(), "nothing written");
    // The killed reconciler's lease would expire within 15 s; remove it now.
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{PREFIX}lock"))
        .query(&mut redis.conn())
        .expect("DEL");
    // Redis dies with the transaction queued (SIGKILL, AOF on): nothing after restart.
    let child = paused_in_transaction(&repo, &redis);
    redis.kill();
    let out = child.wait_with_output().expect("reconcile exits");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nothing was written"), "{stderr}");
    redis.restart();
    assert_eq!(
        managed(&redis),
        Vec::<String>::new(),
        "nothing written after a crash"
    );
}

#[test]
fn renewing_the_lease_inside_the_pipelined_transaction_commits_and_a_takeover_writes_nothing() {
    // The lease keeper renews the lease (PEXPIRE) every 5 s; a transaction that takes
    // longer than that to queue (a first apply of 50,000 hosts) must still commit.
    let redis = RedisServer::start();
    let mut repo = large_first_apply();
    let child = paused_in_transaction(&repo, &redis);
    let mut c = redis.conn();
    let renewed: i64 = redis::cmd("PEXPIRE")
        .arg(format!("{PREFIX}lock"))
        .arg(15_000)
        .query(&mut c)
        .expect("PEXPIRE");
    assert_eq!(
        renewed, 1,
        "the lease is held while the transaction is queued"
    );
    let out = child.wait_with_output().expect("reconcile exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let generation: String = redis::cmd("GET")
        .arg(format!("{PREFIX}generation"))
        .query(&mut c)
        .expect("GET");
    assert_eq!(generation, "1");
    // In one attempt (each attempt sends one WATCH): the renewal did not abort it (before the fix, each
    // renewal did, and a 50,000-host first apply failed all three attempts).
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut c)
        .expect("INFO");
    let watches = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_watch:calls="))
        .and_then(|l| l.split(',').next())
        .unwrap_or("0");
    assert_eq!(watches, "1", "one WATCH, one attempt: {stats}");

    // Another reconciler takes the lease over (as after an expiry) while the
    // transaction is queued: it aborts, and the retry finds the lease lost.
    grow(&repo, 3000);
    repo.commit("another large apply");
    let before = snapshot(&mut c);
    let child = paused_in_transaction(&repo, &redis);
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{PREFIX}lock"))
        .query(&mut c)
        .expect("DEL");
    let taken: i64 = redis::cmd("EVAL")
        .arg(include_str!("../../src/state/scripts/lock.lua"))
        .arg(3)
        .arg(format!("{PREFIX}lock"))
        .arg(format!("{PREFIX}leader"))
        .arg(format!("{PREFIX}lock-epoch"))
        .arg(r#"{"id":"0123456789abcdef","holder":"someone-else"}"#)
        .arg(15_000)
        .arg("")
        .query(&mut c)
        .expect("EVAL lock.lua");
    assert_eq!(taken, 1);
    let out = child.wait_with_output().expect("reconcile exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .contains("the reconcile lease was lost (expired or taken over); nothing was written"),
        "{stderr}"
    );
    assert_same(&snapshot(&mut c), &before, "a lost lease writes nothing");
}

#[test]
fn a_watched_key_written_inside_the_pipelined_transaction_is_a_conflict_that_writes_nothing() {
    let redis = RedisServer::start();
    let repo = large_first_apply();
    let child = paused_in_transaction(&repo, &redis);
    // Another reconcile commits meanwhile (it moves the generation).
    let mut c = redis.conn();
    let _: i64 = redis::cmd("INCR")
        .arg(format!("{PREFIX}generation"))
        .query(&mut c)
        .expect("INCR");
    let out = child.wait_with_output().expect("reconcile exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("live state changed during the reconcile (generation 1, expected 0)"),
        "{stderr}"
    );
    assert_eq!(
        snapshot(&mut c).into_keys().collect::<Vec<_>>(),
        vec![format!("{PREFIX}generation")],
        "only the other writer's generation"
    );
}

/// Rewrites every field of the digests hash as an earlier release recorded it: `sha256:`
/// of the canonical JSON of the key's owned value (docs/state.md, "Earlier format").
fn record_legacy_digests(c: &mut redis::Connection) -> usize {
    use sha2::Digest;
    let dk = format!("{PREFIX}digests");
    let keys: Vec<String> = redis::cmd("HKEYS").arg(&dk).query(c).expect("HKEYS");
    for key in &keys {
        let t: String = redis::cmd("TYPE").arg(key).query(c).expect("TYPE");
        let canonical = match t.as_str() {
            "hash" if key.contains(":redbeat:") => {
                let d: String = redis::cmd("HGET")
                    .arg(key)
                    .arg("definition")
                    .query(c)
                    .expect("HGET");
                let owned = BTreeMap::from([("definition", d)]);
                let owned = serde_json::to_string(&owned).expect("JSON");
                format!(r#"{{"type":"fields","value":{{"owned":{owned}}}}}"#)
            }
            "hash" => {
                let h: BTreeMap<String, String> =
                    redis::cmd("HGETALL").arg(key).query(c).expect("HGETALL");
                let h = serde_json::to_string(&h).expect("JSON");
                format!(r#"{{"type":"hash","value":{h}}}"#)
            }
            "set" => {
                let mut m: Vec<String> =
                    redis::cmd("SMEMBERS").arg(key).query(c).expect("SMEMBERS");
                m.sort();
                let m = serde_json::to_string(&m).expect("JSON");
                format!(r#"{{"type":"set","value":{m}}}"#)
            }
            "zset" => {
                let m: Vec<String> = redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .query(c)
                    .expect("ZRANGE");
                let m: std::collections::BTreeSet<String> = m.into_iter().collect();
                let m = serde_json::to_string(&m).expect("JSON");
                format!(r#"{{"type":"members","value":{{"members":{m}}}}}"#)
            }
            other => panic!("{key}: a managed key of type {other}"),
        };
        let digest = format!("sha256:{:x}", sha2::Sha256::digest(canonical.as_bytes()));
        let _: () = redis::cmd("HSET")
            .arg(&dk)
            .arg(key)
            .arg(digest)
            .query(c)
            .expect("HSET");
    }
    keys.len()
}

#[test]
fn digests_an_earlier_release_recorded_are_checked_and_replaced_on_the_next_write() {
    let redis = RedisServer::start();
    let mut repo = committed_example();
    assert_eq!(reconcile(&repo, &redis.url(), &[]).1, 0);
    let mut c = redis.conn();
    let digests = |c: &mut redis::Connection| -> Vec<String> {
        redis::cmd("HVALS")
            .arg(format!("{PREFIX}digests"))
            .query(c)
            .expect("HVALS")
    };
    assert!(digests(&mut c).iter().all(|d| d.starts_with("sum256:")));
    let n = record_legacy_digests(&mut c);
    assert!(n > 20, "every kind of managed key: {n}");
    // No drift, and the applied revision again is a no-op (the settled check reads them).
    let (out, code) = celeroot(&repo, &redis.url(), &["drift"]);
    assert!(out.contains("1. Live state edited out of band: 0"), "{out}");
    assert_eq!(code, 2, "only hosts without agents and no beat: {out}");
    let (out, code) = reconcile(&repo, &redis.url(), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Nothing to do"), "{out}");
    // An edit under a legacy digest is still found.
    let worker = format!("{PREFIX}worker:web01");
    let _: () = redis::cmd("HSET")
        .arg(&worker)
        .arg("concurrency")
        .arg("64")
        .query(&mut c)
        .expect("HSET");
    let (out, _) = celeroot(&repo, &redis.url(), &["drift"]);
    assert!(out.contains("1. Live state edited out of band: 1"), "{out}");
    assert_eq!(reconcile(&repo, &redis.url(), &[]).1, 0);
    // The next reconcile that writes records every digest in this release's format.
    repo.write(
        "manifests/hosts/web02.yaml",
        &std::fs::read_to_string(repo_path(&repo).join("manifests/hosts/web02.yaml"))
            .expect("web02.yaml")
            .replace("zone: ", "zone: x"),
    );
    repo.commit("a zone");
    let (out, code) = reconcile(&repo, &redis.url(), &[]);
    assert_eq!(code, 0, "{out}");
    let after = digests(&mut c);
    assert_eq!(after.len(), n);
    assert!(after.iter().all(|d| d.starts_with("sum256:")), "{after:?}");
    let (out, _) = celeroot(&repo, &redis.url(), &["drift"]);
    assert!(out.contains("1. Live state edited out of band: 0"), "{out}");
}
