//! High availability (issue 19): celeroot against a real Redis Sentinel deployment on
//! loopback (one master, one replica, three sentinels), with the master SIGKILLed in the
//! middle of a reconcile.

use std::time::{Duration, Instant};

use crate::common::sentinel::{role, SentinelSet, MASTER};
use crate::common::{run, TestRepo};

const PREFIX: &str = "celeroot:{production}:";

fn reconcile(repo: &TestRepo, url: &str, args: &[&str]) -> (String, i32) {
    let mut cmd = repo.cmd();
    cmd.arg("reconcile")
        .arg("--skip-deploy")
        .args(args)
        .env("CELEROOT_REDIS_URL", url);
    run(cmd)
}

/// The example plus `n` generated hosts.
fn grow(repo: &TestRepo, n: usize) {
    for i in 0..n {
        repo.write(
            &format!("manifests/hosts/gen/w{i:04}.yaml"),
            &format!("apiVersion: celeroot.io/v1\nkind: Host\nmetadata:\n  name: w{i:04}\n  labels: {{env: production, tier: batch}}\nspec:\n  address: w{i:04}.fleet.example\n  roles: [application]\n"),
        );
    }
}

fn get(port: u16, key: &str) -> Option<String> {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
        .expect("client")
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("connect");
    redis::cmd("GET").arg(key).query(&mut c).expect("GET")
}

fn managed_keys(port: u16) -> Vec<String> {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
        .expect("client")
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("connect");
    redis::cmd("KEYS")
        .arg(format!("{PREFIX}*"))
        .query(&mut c)
        .expect("KEYS")
}

/// Spawns `celeroot reconcile` paused inside its pipelined transaction and returns once
/// the master shows a client with queued commands.
#[allow(clippy::zombie_processes)] // the caller waits for the child it returns
fn paused_in_transaction(repo: &TestRepo, url: &str, master: u16) -> std::process::Child {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("celeroot"));
    cmd.current_dir(repo.root())
        .args(["reconcile", "--skip-deploy"])
        .env("CELEROOT_REDIS_URL", url)
        .env("NO_COLOR", "1")
        .env("CELEROOT_FAULT", "pause-in-transaction")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn reconcile");
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{master}/0"))
        .expect("client")
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("connect");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut c)
            .expect("CLIENT LIST");
        if clients.lines().any(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("multi="))
                .and_then(|n| n.parse::<i64>().ok())
                .is_some_and(|n| n > 0)
        }) {
            return child;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reconcile exits");
            panic!("no client queued a transaction: {clients}\n{out:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_reconcile_through_sentinel_survives_the_master_killed_mid_transaction_and_follows_the_new_master(
) {
    let mut set = SentinelSet::start();
    let url = set.url();
    let first = set.master_port().expect("a master");
    // A small revision first: the apply script, through the sentinels, to the master.
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    let (out, code) = reconcile(&repo, &url, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        get(first, &format!("{PREFIX}generation")).as_deref(),
        Some("1")
    );

    // A large change takes the pipelined transaction; the master dies with it queued.
    grow(&repo, 1500);
    repo.commit("1,500 more hosts");
    let child = paused_in_transaction(&repo, &url, first);
    let killed = set.kill_master();
    assert_eq!(killed, first);
    let t0 = Instant::now();
    let promoted = set.wait_failover(first);
    let failover = t0.elapsed();
    let out = child.wait_with_output().expect("reconcile exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nothing was written"), "{stderr}");

    // Reconcile again until it succeeds: each failed attempt is a clear error, and the
    // first success is on the promoted replica.
    let mut attempts = 0;
    let (out, took) = loop {
        attempts += 1;
        // The interrupted reconcile's lease was replicated before the kill and lasts
        // until it expires: wait for it.
        let (out, code) = reconcile(&repo, &url, &["--lock-timeout", "30s"]);
        if code == 0 {
            break (out, t0.elapsed());
        }
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("no master")
                || out.contains("not a master")
                || out.contains("Connection refused"),
            "a failed attempt says why: {out}"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no reconcile within 60 s: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "failover (down-after-milliseconds {}): SIGKILL of the master to a promoted replica: {:.1} s; to the next successful reconcile: {:.1} s ({attempts} attempt(s))",
        crate::common::sentinel::DOWN_AFTER_MS,
        failover.as_secs_f64(),
        took.as_secs_f64(),
    );
    assert!(out.contains("Applied"), "{out}");
    let second = set.master_port().expect("a master");
    assert_eq!(second, promoted);
    assert_ne!(second, first, "the replica was promoted");
    assert_eq!(role(second).as_deref(), Some("master"));
    // All or nothing: the queued transaction left nothing on the replica, so the new
    // master holds generation 1 plus this reconcile's one commit.
    assert_eq!(
        get(second, &format!("{PREFIX}generation")).as_deref(),
        Some("2")
    );
    assert!(
        managed_keys(second)
            .iter()
            .any(|k| k.ends_with(":worker:w1499")),
        "the large change is on the new master"
    );
    let (out, code) = reconcile(&repo, &url, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Nothing to do"), "{out}");
    let mut cmd = repo.cmd();
    cmd.arg("drift").env("CELEROOT_REDIS_URL", &url);
    let (out, _) = run(cmd);
    // No agents run here, so every host lacks a heartbeat; the live state itself matches.
    assert!(
        out.contains("1. Live state edited out of band: 0"),
        "no drift of the live state on the new master: {out}"
    );
}

#[test]
fn sentinel_urls_that_reach_no_sentinel_name_an_unknown_master_or_are_malformed_are_clear_errors_that_write_nothing(
) {
    let set = SentinelSet::start();
    let master = set.master_port().expect("a master");
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    let ports = set.sentinel_ports();
    // No sentinel listens on ports 1 and 2 of loopback.
    let (out, code) = reconcile(
        &repo,
        &format!("redis+sentinel://:hunter2@127.0.0.1:1,127.0.0.1:2/{MASTER}/0"),
        &[],
    );
    insta::assert_snapshot!(out, @r"
    ------- stderr -------
    error: cannot connect to Redis at redis+sentinel://:***@127.0.0.1:1,127.0.0.1:2/celeroot-test/0: none of the 2 sentinel(s) answered: sentinel 127.0.0.1:1: Connection refused (os error 111); sentinel 127.0.0.1:2: Connection refused (os error 111); nothing was written
      = hint: check --redis / CELEROOT_REDIS_URL and that the server is running
    [exit status: 1]
    ");
    assert_eq!(code, 1);
    let (out, code) = reconcile(
        &repo,
        &format!("redis+sentinel://127.0.0.1:{}/no-such-master/0", ports[0]),
        &[],
    );
    insta::assert_snapshot!(out.replace(&ports[0].to_string(), "PORT"), @r#"
    ------- stderr -------
    error: cannot connect to Redis at redis+sentinel://127.0.0.1:PORT/no-such-master/0: no sentinel knows a master named "no-such-master" (check the master name in the URL against `sentinel monitor`); nothing was written
      = hint: check --redis / CELEROOT_REDIS_URL and that the server is running
    [exit status: 1]
    "#);
    assert_eq!(code, 1);
    for bad in [
        "redis+sentinel://127.0.0.1/celeroot-test/0",
        "redis+sentinel://:hunter2@127.0.0.1:26379/",
        "redis+sentinel://127.0.0.1:26379/celeroot-test/x",
        "redis+sentinel://127.0.0.1:26379/celeroot-test/0?sentinel_pasword=hunter2",
    ] {
        let (out, code) = reconcile(&repo, bad, &[]);
        assert_eq!(code, 1, "{out}");
        assert!(!out.contains("hunter2"), "{out}");
        assert!(out.contains("expected redis+sentinel://"), "{out}");
    }
    assert_eq!(
        managed_keys(master),
        Vec::<String>::new(),
        "nothing written"
    );
}

#[test]
fn two_daemons_through_sentinel_keep_one_leader_across_a_failover_and_apply_on_the_new_master() {
    use crate::common::daemon::{BareRepo, Daemon};
    const WAIT: Duration = Duration::from_secs(60);
    let mut set = SentinelSet::start();
    let url = set.url();
    let mut repo = TestRepo::with_example();
    let first = repo.commit("first");
    let bare = BareRepo::new();
    bare.push_from(&repo, "main");
    let args = ["--interval", "200ms", "--lease-ttl", "2s", "--skip-deploy"];
    let mut a = Daemon::start_as(&bare.url(), &url, &args, "a@ci");
    a.wait_for("a applied", WAIT, |d| {
        d.applied().as_deref() == Some(first.as_str())
    });
    let mut b = Daemon::start_as(&bare.url(), &url, &args, "b@ci");
    b.wait_for("b sees the leader", WAIT, |d| {
        d.status()["leaderHolder"].as_str() == Some("a@ci")
    });
    let old = set.kill_master();
    let t0 = Instant::now();
    repo.edit(
        "manifests/roles/webserver.yaml",
        "concurrency: 4",
        "concurrency: 9",
    );
    let second = repo.commit("web: 9");
    bare.push_from(&repo, "main");
    let applied = |d: &Daemon| d.applied().as_deref() == Some(second.as_str());
    let deadline = Instant::now() + WAIT;
    while !(applied(&a) || applied(&b)) {
        assert!(
            Instant::now() < deadline,
            "no daemon applied the push after the failover:\n{}\n{}",
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = t0.elapsed();
    let new = set.master_port().expect("a master");
    assert_ne!(new, old, "the replica was promoted");
    eprintln!(
        "daemon failover: SIGKILL of the master to the pushed revision applied on the new master: {:.1} s",
        took.as_secs_f64()
    );
    // One leader, for a while, and it is the one the new master names.
    let leader = get(new, &format!("{PREFIX}leader")).expect("a leader on the new master");
    for _ in 0..10 {
        assert!(
            a.is_leader() != b.is_leader(),
            "exactly one daemon leads: {leader}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let holder = if a.is_leader() { "a@ci" } else { "b@ci" };
    assert!(
        leader.contains(&format!("\"holder\":\"{holder}\"")),
        "{leader}"
    );
    // Every applied generation on the new master was written once, in order: no two
    // leaders wrote.
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{new}/0"))
        .expect("client")
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("connect");
    let history: Vec<String> = redis::cmd("LRANGE")
        .arg(format!("{PREFIX}history"))
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .expect("LRANGE");
    let generations: Vec<u64> = history
        .iter()
        .map(|h| {
            serde_json::from_str::<serde_json::Value>(h).expect("history JSON")["generation"]
                .as_u64()
                .unwrap_or(0)
        })
        .collect();
    let mut sorted = generations.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), generations.len(), "{history:?}");
    assert!(
        !a.log().contains("panicked") && !b.log().contains("panicked"),
        "{}\n{}",
        a.log(),
        b.log()
    );
}

/// `celeroot beat` (id b1, short intervals) for the scaffold's app and the test tasks,
/// against `redis`, its test task recording into `record`.
fn beat_command(
    repo: &TestRepo,
    redis: &str,
    record: &str,
    args: &[&str],
) -> std::process::Command {
    use crate::common::celery::{app_dir, python};
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("celeroot"));
    cmd.current_dir(repo.root())
        .args(["beat", "--id", "b1", "--release-dir"])
        .arg(app_dir())
        .arg("--celery")
        .arg(python().with_file_name("celery"))
        .args(["--max-interval", "1s", "--lock-timeout", "4s"])
        .args(["--heartbeat-interval", "300ms", "--heartbeat-ttl", "3s"])
        .args(args)
        .env("CELEROOT_REDIS_URL", redis)
        .env("TESTS_RECORD_URL", record)
        .env_remove("CELEROOT_BROKER_URL")
        .env_remove("CELEROOT_CLUSTER")
        .env(
            "PYTHONPATH",
            format!(
                "{}:{}",
                app_dir().display(),
                crate::common::project_root().join("tests/celery").display()
            ),
        )
        .env("CELEROOT_IMPORTS", "testtasks")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("RUST_LOG", "info");
    cmd
}

/// Cluster `fleet` with host h1 (role `worker`) and a schedule `tick` every second to h1.
fn ticking_fleet() -> TestRepo {
    let mut repo = TestRepo::empty();
    repo.write(
        "manifests/cluster.yaml",
        "apiVersion: celeroot.io/v1\nkind: Cluster\nmetadata:\n  name: fleet\nspec: {}\n",
    );
    repo.write(
        "manifests/role.yaml",
        "apiVersion: celeroot.io/v1\nkind: Role\nmetadata:\n  name: worker\nspec: {}\n",
    );
    repo.write(
        "manifests/h1.yaml",
        "apiVersion: celeroot.io/v1\nkind: Host\nmetadata:\n  name: h1\nspec:\n  address: 192.0.2.1\n  roles: [worker]\n",
    );
    repo.write(
        "manifests/tick.yaml",
        "apiVersion: celeroot.io/v1\nkind: Schedule\nmetadata:\n  name: tick\nspec:\n  every: 1s\n  task: tests.record\n  args: [tick]\n  targets:\n    - host: h1\n",
    );
    repo.commit("fleet");
    repo
}

#[test]
fn an_agent_its_worker_and_beat_through_sentinel_keep_running_the_schedule_after_a_failover() {
    use crate::common::agent::{heartbeat, AgentProcess};
    use crate::common::celery::app_dir;
    use crate::common::redis::RedisServer;
    const WAIT: Duration = Duration::from_secs(60);
    let mut set = SentinelSet::start();
    let url = set.url();
    // The test task records each run here, outside the Sentinel deployment.
    let recorder = RedisServer::start();
    let recorded = || -> usize {
        redis::cmd("LLEN")
            .arg("tests:record:tick")
            .query(&mut recorder.conn())
            .unwrap_or(0)
    };
    let repo = ticking_fleet();
    let (out, code) = reconcile(&repo, &url, &[]);
    assert_eq!(code, 0, "{out}");
    let env = [
        ("CELEROOT_REDIS_URL", url.clone()),
        ("TESTS_RECORD_URL", recorder.url()),
    ];
    let agent = AgentProcess::start("h1", "fleet", &app_dir(), &env);
    let beat = AgentProcess::spawn(beat_command(&repo, &url, &recorder.url(), &[]));
    let logs = || {
        format!(
            "---- agent ----\n{}\n---- beat ----\n{}",
            agent.log_text(),
            beat.log_text()
        )
    };
    let wait = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + WAIT;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}",
                logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("ticks run through the sentinel-managed broker", &|| {
        recorded() >= 3
    });

    let old = set.kill_master();
    let t0 = Instant::now();
    let before = recorded();
    wait("ticks again after the failover", &|| {
        recorded() >= before + 3
    });
    let resumed = t0.elapsed();
    let new = set.master_port().expect("a master");
    assert_ne!(new, old);
    // The agent heartbeats to the new master (a heartbeat replicated before the kill
    // has an older time stamp).
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() - t0.elapsed().as_secs_f64())
        .unwrap_or(0.0);
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{new}/0"))
        .expect("client")
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("connect");
    wait("the agent's heartbeat on the new master", &|| {
        let Ok(mut c) = redis::Client::open(format!("redis://127.0.0.1:{new}/0"))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        else {
            return false;
        };
        let hb = heartbeat(&mut c, "fleet", "h1");
        hb.get("ts")
            .and_then(|t| t.parse::<f64>().ok())
            .is_some_and(|t| t > killed_at)
            && hb.get("status").map(String::as_str) == Some("running")
    });
    let beat_hb: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg("celeroot:{fleet}:beat:b1")
        .query(&mut conn)
        .unwrap_or_default();
    assert_eq!(
        beat_hb.get("status").map(String::as_str),
        Some("active"),
        "{beat_hb:?}\n{}",
        logs()
    );
    eprintln!(
        "schedule failover: SIGKILL of the master to the third tick run after it: {:.1} s",
        resumed.as_secs_f64()
    );
}

/// The scripts touch only declared keys (Redis Cluster routes and guards a script by its
/// `KEYS`): apply.lua refuses a write to an undeclared key before writing anything, and
/// observe.lua asks again when the digests hash names a key it was not given.
#[test]
fn the_scripts_refuse_undeclared_keys() {
    use crate::common::redis::RedisServer;
    let redis = RedisServer::start();
    let mut c = redis.conn();
    let k = |s: &str| format!("{PREFIX}{s}");
    let apply =
        std::fs::read_to_string(crate::common::project_root().join("src/state/scripts/apply.lua"))
            .expect("apply.lua");
    let _: () = redis::cmd("SET")
        .arg(k("lock"))
        .arg(r#"{"id":"L1"}"#)
        .query(&mut c)
        .expect("SET lock");
    let writes = format!(r#"[{{"op":"set","key":"{}","value":"v"}}]"#, k("worker:x"));
    let run = |declared: &[String], c: &mut redis::Connection| -> Result<i64, redis::RedisError> {
        let script = redis::Script::new(&apply);
        let mut inv = script.prepare_invoke();
        for key in [
            k("generation"),
            k("lock"),
            k("applied"),
            k("history"),
            k("events"),
            k("layout"),
            k("leader"),
        ]
        .iter()
        .chain(declared)
        {
            inv.key(key);
        }
        for a in [
            "0", "L1", &writes, "{}", "{}", "{}", "2", "100", "10", "", "changes",
        ] {
            inv.arg(a);
        }
        inv.invoke(c)
    };
    let e = run(&[], &mut c).expect_err("an undeclared write is refused");
    assert!(e.to_string().contains("UNDECLARED\": key"), "{e}");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{PREFIX}*"))
        .query(&mut c)
        .expect("KEYS");
    assert_eq!(keys, vec![k("lock")], "nothing was written");
    assert_eq!(run(&[k("worker:x")], &mut c).expect("declared: applied"), 1);

    // observe.lua: the digests hash names worker:x, which the caller did not declare.
    let _: () = redis::cmd("HSET")
        .arg(k("digests"))
        .arg(k("worker:x"))
        .arg("sum256:0")
        .query(&mut c)
        .expect("HSET");
    let observe = std::fs::read_to_string(
        crate::common::project_root().join("src/state/scripts/observe.lua"),
    )
    .expect("observe.lua");
    let head = [
        k("layout"),
        k("generation"),
        k("applied"),
        k("digests"),
        k("lock"),
    ];
    let observe = redis::Script::new(&observe);
    let mut inv = observe.prepare_invoke();
    for key in &head {
        inv.key(key);
    }
    let v: redis::Value = inv.invoke(&mut c).expect("observe");
    assert_eq!(v, redis::Value::BulkString(b"changed".to_vec()));
    let mut inv = observe.prepare_invoke();
    for key in head.iter().chain([k("worker:x")].iter()) {
        inv.key(key);
    }
    let v: Vec<redis::Value> = inv.invoke(&mut c).expect("observe");
    assert_eq!(v.len(), 5, "{v:?}");
}

/// The keys of cluster `production` on one node of a Redis Cluster.
fn on_node(cluster: &crate::common::cluster::RedisCluster, port: u16) -> Vec<String> {
    cluster.keys_on(port, &format!("{PREFIX}*"))
}

#[test]
fn reconciles_on_a_redis_cluster_follow_the_slot_moved_between_during_and_in_the_middle_of_a_migration(
) {
    use crate::common::cluster::RedisCluster;
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let slot = cluster.slot(&format!("{PREFIX}generation"));
    let first = cluster.owner(slot);
    let others: Vec<u16> = cluster
        .ports()
        .into_iter()
        .filter(|p| *p != first)
        .collect();
    let (second, third) = (others[0], others[1]);
    let generation = |port: u16| get(port, &format!("{PREFIX}generation"));

    let mut repo = TestRepo::with_example();
    repo.commit("example");
    let (out, code) = reconcile(&repo, &url, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(generation(first).as_deref(), Some("1"));

    // Between two reconciles the slot moves: the next one is told -MOVED and follows.
    cluster.begin_move(slot, first, second, usize::MAX);
    cluster.finish_move(slot, first, second);
    repo.edit(
        "manifests/roles/webserver.yaml",
        "concurrency: 4",
        "concurrency: 9",
    );
    repo.commit("web: 9");
    let (out, code) = reconcile(&repo, &url, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(generation(second).as_deref(), Some("2"));
    assert_eq!(on_node(&cluster, first), Vec::<String>::new());

    // The slot moves while a large reconcile has its transaction half queued: the
    // transaction is dropped, nothing is written, and it starts over on the new owner.
    grow(&repo, 1500);
    repo.commit("1,500 more hosts");
    let child = paused_in_transaction(&repo, &url, second);
    cluster.begin_move(slot, second, third, usize::MAX);
    cluster.finish_move(slot, second, third);
    let out = child.wait_with_output().expect("reconcile exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(generation(third).as_deref(), Some("3"));
    assert_eq!(on_node(&cluster, second), Vec::<String>::new());
    assert!(on_node(&cluster, third).contains(&format!("{PREFIX}worker:w1499")));

    // In the middle of a migration (keys on both nodes: -ASK, -TRYAGAIN) a reconcile
    // waits, and goes on once the slot has moved.
    cluster.begin_move(slot, third, first, 40);
    repo.edit(
        "manifests/roles/webserver.yaml",
        "concurrency: 9",
        "concurrency: 5",
    );
    repo.commit("web: 5");
    let mut cmd = repo.cmd();
    cmd.args(["reconcile", "--skip-deploy"])
        .env("CELEROOT_REDIS_URL", &url);
    let t0 = Instant::now();
    let reconciling = std::thread::spawn(move || {
        let r = run(cmd);
        (r, t0.elapsed())
    });
    std::thread::sleep(Duration::from_secs(1));
    cluster.finish_move(slot, third, first);
    let ((out, code), took) = reconciling.join().expect("reconcile thread");
    assert_eq!(code, 0, "{out}");
    // Its reads span keys on both nodes, which Redis refuses (-TRYAGAIN) until the
    // migration ends a second later.
    assert!(
        took >= Duration::from_millis(900),
        "the reconcile waited for the migration: {took:?}"
    );
    assert_eq!(generation(first).as_deref(), Some("4"));
    assert_eq!(on_node(&cluster, third), Vec::<String>::new());
    let (out, code) = reconcile(&repo, &url, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Nothing to do"), "{out}");
}

#[test]
fn cluster_urls_that_reach_no_node_name_a_plain_server_or_would_be_the_broker_are_clear_errors() {
    use crate::common::redis::RedisServer;
    let plain = RedisServer::start();
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    let (out, code) = reconcile(
        &repo,
        "redis+cluster://:hunter2@127.0.0.1:1,127.0.0.1:2",
        &[],
    );
    insta::assert_snapshot!(out, @r"
    ------- stderr -------
    error: cannot connect to Redis at redis+cluster://:***@127.0.0.1:1,127.0.0.1:2: no node of the Redis Cluster served the slot of celeroot:{production}:generation: node 127.0.0.1:1: Connection refused (os error 111); node 127.0.0.1:2: Connection refused (os error 111); nothing was written
      = hint: check --redis / CELEROOT_REDIS_URL and that the server is running
    [exit status: 1]
    ");
    assert_eq!(code, 1);
    let (out, code) = reconcile(
        &repo,
        &format!("redis+cluster://127.0.0.1:{}", plain.port),
        &[],
    );
    insta::assert_snapshot!(out.replace(&plain.port.to_string(), "PORT"), @r"
    ------- stderr -------
    error: cannot connect to Redis at redis+cluster://127.0.0.1:PORT: no node of the Redis Cluster served the slot of celeroot:{production}:generation: node 127.0.0.1:PORT: ResponseError: This instance has cluster support disabled; nothing was written
      = hint: check --redis / CELEROOT_REDIS_URL and that the server is running
    [exit status: 1]
    ");
    assert_eq!(code, 1);
    assert_eq!(
        managed_keys(plain.port),
        Vec::<String>::new(),
        "nothing written"
    );
    for bad in [
        "redis+cluster://127.0.0.1:7000/3",
        "redis+cluster://127.0.0.1/",
        "redis+cluster://127.0.0.1:7000?password=hunter2",
    ] {
        let (out, code) = reconcile(&repo, bad, &[]);
        assert_eq!(code, 1, "{out}");
        assert!(!out.contains("hunter2"), "{out}");
        assert!(out.contains("expected redis+cluster://"), "{out}");
    }
    // kombu has no Redis Cluster transport: nothing may use one as the broker.
    let mut cmd = repo.cmd();
    cmd.args(["task", "run", "celeroot.ping", "--target", "host:web01"])
        .env("CELEROOT_REDIS_URL", "redis+cluster://127.0.0.1:7000");
    let (out, code) = run(cmd);
    insta::assert_snapshot!(out, @r"
    ------- stderr -------
    error: --broker (default: --redis): redis+cluster://127.0.0.1:7000 is a Redis Cluster, which cannot be Celery's broker (kombu has no Redis Cluster transport); give the broker a redis:// or redis+sentinel:// URL; nothing was sent
    [exit status: 1]
    ");
    assert_eq!(code, 1);
    let mut cmd = repo.cmd();
    cmd.args(["agent", "--host", "web01", "--cluster", "production"])
        .env("CELEROOT_REDIS_URL", "redis+cluster://127.0.0.1:7000");
    let (out, code) = run(cmd);
    insta::assert_snapshot!(out, @r"
    ------- stderr -------
    error: --broker (default: --redis): redis+cluster://127.0.0.1:7000 is a Redis Cluster, which cannot be Celery's broker (kombu has no Redis Cluster transport); give the broker a redis:// or redis+sentinel:// URL
    [exit status: 1]
    ");
    assert_eq!(code, 1);
    let mut cmd = repo.cmd();
    cmd.args(["beat"])
        .env("CELEROOT_REDIS_URL", "redis+cluster://127.0.0.1:7000");
    let (out, code) = run(cmd);
    insta::assert_snapshot!(out, @r"
    ------- stderr -------
    error: --broker (default: --redis): redis+cluster://127.0.0.1:7000 is a Redis Cluster, which cannot be Celery's broker (kombu has no Redis Cluster transport); give the broker a redis:// or redis+sentinel:// URL; with the live state on a Redis Cluster, give beat the broker's URL in --broker (RedBeat reads the schedule from --redis)
    [exit status: 1]
    ");
    assert_eq!(code, 1);
}

/// The supported split: the live state and RedBeat on a Redis Cluster, the broker on a
/// plain Redis. Beat reads the schedule celeroot wrote into the cluster and sends to the
/// broker, where a worker runs it.
#[test]
fn beat_reads_the_schedule_from_a_redis_cluster_and_sends_to_a_separate_broker() {
    use crate::common::agent::AgentProcess;
    use crate::common::celery::{worker_env, CeleryProcess};
    use crate::common::cluster::RedisCluster;
    use crate::common::redis::RedisServer;
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let broker = RedisServer::start();
    let repo = ticking_fleet();
    let (out, code) = reconcile(&repo, &url, &[]);
    assert_eq!(code, 0, "{out}");
    let recorded = || -> usize {
        redis::cmd("LLEN")
            .arg("tests:record:tick")
            .query(&mut broker.conn())
            .unwrap_or(0)
    };
    let mut env = worker_env(&broker.url(), "fleet", "h1", "UTC");
    env.push(("TESTS_RECORD_URL", broker.url()));
    let worker = CeleryProcess::worker(&env, &["celeroot.host.h1"], "h1");
    let beat = AgentProcess::spawn(beat_command(
        &repo,
        &url,
        &broker.url(),
        &["--broker", &broker.url()],
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while recorded() < 3 {
        assert!(
            Instant::now() < deadline,
            "no ticks: beat\n{}\nworker\n{}",
            beat.log_text(),
            worker.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // RedBeat's lock and run times are on the cluster, beside celeroot's keys.
    let slot = cluster.slot("celeroot:{fleet}:generation");
    let keys = cluster.keys_on(cluster.owner(slot), "celeroot:{fleet}:*");
    assert!(
        keys.iter().any(|k| k.ends_with(":redbeat::lock")),
        "{keys:?}"
    );
    assert!(keys.iter().any(|k| k.ends_with(":beat:b1")), "{keys:?}");
    let on_broker: Vec<String> = redis::cmd("KEYS")
        .arg("celeroot:*")
        .query(&mut broker.conn())
        .expect("KEYS");
    assert_eq!(
        on_broker,
        Vec::<String>::new(),
        "no celeroot key on the broker"
    );
}
