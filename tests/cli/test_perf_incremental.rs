//! Differential test of the daemon's incremental path (issue 9): over a generated fleet
//! history (real git, two real Redis servers), compiling each revision with the
//! incremental [`Compiler`] and reconciling it from the [`Baseline`] gives exactly what
//! a full compile and a full reconcile give: the same compiled state, the same plan, the
//! same number of writes and the same keys in Redis.

#[path = "../../benches/support/fleet.rs"]
pub mod fleet;

use std::collections::BTreeMap;

use celeroot::apply::{self, Baseline, Compiler, Options};
use celeroot::state::{RedisUrl, Store};

use crate::common::redis::RedisServer;

fn options() -> Options {
    Options {
        dry_run: false,
        prune: true,
        allow_mass_delete: true,
        allow_rollback: false,
        sweep: false,
        actor: "test@perf".into(),
        leader: None,
        lock_wait: std::time::Duration::ZERO,
        fault: None,
    }
}

/// Every key under the cluster prefix with its content, except those that record when
/// and by whom (applied, history, events, lock) and what beat owns (entry `meta`, the
/// due-time scores).
fn dump(server: &RedisServer) -> BTreeMap<String, String> {
    let mut c = server.conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("celeroot:*")
        .query(&mut c)
        .expect("KEYS");
    let mut out = BTreeMap::new();
    for k in keys {
        if ["applied", "history", "events", "lock", "lock-epoch"]
            .iter()
            .any(|s| k.ends_with(&format!(":{s}")))
        {
            continue;
        }
        let t: String = redis::cmd("TYPE").arg(&k).query(&mut c).expect("TYPE");
        let v = match t.as_str() {
            "hash" => {
                let mut h: BTreeMap<String, String> = redis::cmd("HGETALL")
                    .arg(&k)
                    .query(&mut c)
                    .expect("HGETALL");
                h.remove("meta");
                format!("{h:?}")
            }
            "set" => {
                let mut m: Vec<String> = redis::cmd("SMEMBERS")
                    .arg(&k)
                    .query(&mut c)
                    .expect("SMEMBERS");
                m.sort();
                format!("{m:?}")
            }
            "zset" => {
                let mut m: Vec<String> = redis::cmd("ZRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(-1)
                    .query(&mut c)
                    .expect("ZRANGE");
                m.sort();
                format!("{m:?}")
            }
            "string" => redis::cmd("GET").arg(&k).query(&mut c).expect("GET"),
            other => other.to_string(),
        };
        out.insert(k, v);
    }
    out
}

#[test]
fn incremental_compile_and_reconcile_equal_the_full_path_over_a_history() {
    let tmp = tempfile::tempdir().expect("tmp");
    let spec = fleet::Spec {
        hosts: 120,
        roles: 12,
        schedules: 240,
    };
    let repo = fleet::generate(&tmp.path().join("fleet"), &spec);
    let full_redis = RedisServer::start();
    let incr_redis = RedisServer::start();
    let connect = |r: &RedisServer| {
        Store::connect(&RedisUrl::parse(&r.url()).expect("url"), "fleet").expect("connect")
    };
    let mut full_store = connect(&full_redis);
    let mut incr_store = connect(&incr_redis);
    let mut compiler = Compiler::new("manifests");
    let mut baseline: Option<Baseline> = None;
    let now = chrono::Utc::now();

    // The history: the generator's one-file changes, plus additions, removals, a file
    // outside the manifests' reach, an invalid revision and its fix, and a change of
    // the live generation by another writer (the baseline must then not be used).
    let mut steps: Vec<(String, &str)> = Vec::new();
    let head = repo.head().expect("head").peel_to_commit().expect("commit");
    steps.push((head.id().to_string(), "initial"));
    for n in 1..=15 {
        steps.push((fleet::commit_change(&repo, &spec, n).0, "change"));
    }
    let new_host = fleet::host_yaml(&spec, 7, 0).replace("host-00007", "host-99999");
    steps.push((
        fleet::commit_files(
            &repo,
            &[("manifests/hosts/host-99999.yaml", Some(&new_host))],
            "add a host",
        ),
        "add",
    ));
    steps.push((
        fleet::commit_files(
            &repo,
            &[
                ("manifests/schedules/sched-00003.yaml", None),
                ("manifests/.hidden/x.yaml", Some("not: a manifest\n")),
                ("manifests/notes.txt", Some("ignored\n")),
            ],
            "remove a schedule, add ignored files",
        ),
        "remove",
    ));
    steps.push((
        fleet::commit_files(
            &repo,
            &[(
                "manifests/hosts/host-00001.yaml",
                Some(&fleet::host_yaml(&spec, 1, 0).replace("role-", "nosuchrole-")),
            )],
            "break a host",
        ),
        "invalid",
    ));
    steps.push((
        fleet::commit_files(
            &repo,
            &[
                (
                    "manifests/hosts/host-00001.yaml",
                    Some(&fleet::host_yaml(&spec, 1, 4)),
                ),
                (
                    "manifests/roles/role-003.yaml",
                    Some(&fleet::role_yaml(3, 9)),
                ),
            ],
            "fix it and change a role",
        ),
        "fix",
    ));
    // Changes that reach other objects: a role's queue (the workers of its hosts), a
    // host's roles (two role host lists and their schedules), a warning that comes and
    // goes, a Cluster change (compiled in full), a name defined twice (the full path's
    // error) and its removal, a host removed.
    steps.push((
        fleet::commit_files(
            &repo,
            &[(
                "manifests/roles/role-005.yaml",
                Some(&fleet::role_yaml(5, 0).replace("queue: role-005", "queue: other-005")),
            )],
            "move a role to another queue",
        ),
        "queue",
    ));
    steps.push((
        fleet::commit_files(
            &repo,
            &[(
                "manifests/hosts/host-00010.yaml",
                Some(&fleet::host_yaml(&spec, 10, 0).replace("roles: [", "roles: [role-005, ")),
            )],
            "give a host another role",
        ),
        "roles",
    ));
    let warned = fleet::schedule_yaml(&spec, 1, 0)
        .replace("sched-00001", "sched-warned")
        .replace("every: ", "timezone: Europe/Paris\n  every: ");
    steps.push((
        fleet::commit_files(
            &repo,
            &[("manifests/schedules/sched-warned.yaml", Some(&warned))],
            "a schedule with a warning",
        ),
        "warning",
    ));
    steps.push((
        fleet::commit_files(
            &repo,
            &[(
                "manifests/cluster.yaml",
                Some(&fleet::cluster_yaml().replace("A generated fleet", "The fleet")),
            )],
            "change the cluster",
        ),
        "cluster",
    ));
    steps.push((
        fleet::commit_files(
            &repo,
            &[(
                "manifests/hosts/zz-twice.yaml",
                Some(&fleet::host_yaml(&spec, 5, 0)),
            )],
            "define a host twice",
        ),
        "invalid",
    ));
    steps.push((
        fleet::commit_files(
            &repo,
            &[
                ("manifests/hosts/zz-twice.yaml", None),
                ("manifests/hosts/host-99999.yaml", None),
                ("manifests/schedules/sched-warned.yaml", None),
            ],
            "remove the duplicate, a host and the warning",
        ),
        "remove",
    ));
    steps.push((fleet::commit_change(&repo, &spec, 16).0, "other-writer"));
    steps.push((fleet::commit_change(&repo, &spec, 17).0, "change"));

    let mut incremental_applies = 0;
    for (i, (commit, what)) in steps.iter().enumerate() {
        let full = apply::load_revision(&repo, commit, "manifests");
        let incr = compiler.load(&repo, commit);
        let (full, (incr, stats)) = match (full, incr) {
            (Ok(f), Ok(i)) => (f, i),
            (Err(f), Err(g)) => {
                assert_eq!(*what, "invalid", "step {i}: unexpected error {f}");
                assert_eq!(f.to_string(), g.to_string(), "step {i}: the same error");
                continue;
            }
            (f, g) => panic!(
                "step {i} ({what}): full {:?} vs incremental {:?}",
                f.err().map(|e| e.to_string()),
                g.err().map(|e| e.to_string())
            ),
        };
        assert_eq!(
            stats.full,
            i == 0,
            "step {i}: only the first load reads everything"
        );
        // Per object unless the Cluster changed or the previous revision was invalid
        // (then every object is validated and compiled again).
        let after_invalid = i > 0 && steps[i - 1].1 == "invalid";
        assert_eq!(
            stats.per_object,
            i > 0 && *what != "cluster" && !after_invalid,
            "step {i} ({what}): compiled per object"
        );
        if i > 0 {
            assert!(
                stats.files_read <= 2,
                "step {i}: read {} files",
                stats.files_read
            );
        }
        let (f, g) = (&full.compiled.state, &incr.compiled.state);
        assert_eq!(f.objects, g.objects, "step {i}: objects");
        assert_eq!(f.hosts, g.hosts, "step {i}: hosts");
        assert_eq!(f.roles, g.roles, "step {i}: roles");
        assert_eq!(f.deploy, g.deploy, "step {i}: deploy settings");
        assert_eq!(f.schedules, g.schedules, "step {i}: schedules");
        assert_eq!(full.release, incr.release);
        assert_eq!(full.subject, incr.subject);
        assert_eq!(
            full.compiled.warnings, incr.compiled.warnings,
            "step {i} ({what}): warnings"
        );
        if *what == "warning" {
            assert!(
                !incr.compiled.warnings.is_empty(),
                "step {i}: the warning is reported"
            );
        }

        if *what == "other-writer" {
            // Another writer applied something: the generation moved.
            let _: i64 = redis::cmd("INCR")
                .arg("celeroot:{fleet}:generation")
                .query(&mut incr_redis.conn())
                .expect("INCR");
            let _: i64 = redis::cmd("INCR")
                .arg("celeroot:{fleet}:generation")
                .query(&mut full_redis.conn())
                .expect("INCR");
        }
        let target = commit.clone();
        let ancestry = |applied: &str| apply::ancestry(&repo, &target, applied);
        let f_out = apply::reconcile(&mut full_store, &full, &options(), &ancestry, now)
            .expect("full reconcile");
        let (i_out, next) = apply::reconcile_from(
            &mut incr_store,
            &incr,
            &options(),
            &ancestry,
            now,
            baseline.take(),
        )
        .expect("incremental reconcile");
        if let Some(b) = &next {
            // The patched image is the whole desired image of the revision.
            let keys = celeroot::state::Keys::new("fleet");
            let want = celeroot::state::desired_image(&keys, g, &incr.release);
            assert_eq!(b.image, want, "step {i} ({what}): baseline image");
        }
        baseline = next;
        let expect_incremental = i > 0 && *what != "other-writer";
        assert_eq!(i_out.incremental, expect_incremental, "step {i} ({what})");
        if i_out.incremental {
            incremental_applies += 1;
            // Head, lease, transaction, settled record, release; one more when a host's
            // worker configuration changed: the round trip that looks for its worker's
            // ACL user (none exist here, so no update follows).
            let workers_changed = i_out.plan.changes.iter().any(|c| {
                matches!(
                    c.kind,
                    celeroot::manifest::Kind::Host | celeroot::manifest::Kind::Role
                )
            });
            assert!(
                i_out.round_trips == 5 || (workers_changed && i_out.round_trips == 6),
                "step {i} ({what}): constant round trips, not {}",
                i_out.round_trips
            );
        }
        assert_eq!(f_out.plan, i_out.plan, "step {i} ({what}): the same plan");
        assert!(
            !f_out.plan.is_empty(),
            "step {i}: every step changes something"
        );
        assert_eq!(f_out.writes, i_out.writes, "step {i}: the same writes");
        assert_eq!(f_out.result, i_out.result, "step {i}");
        assert_eq!(f_out.generation, i_out.generation, "step {i}");
        let (df, di) = (dump(&full_redis), dump(&incr_redis));
        for (k, v) in &df {
            if di.get(k) != Some(v) {
                let w = di.get(k).cloned().unwrap_or_default();
                let common = v.chars().zip(w.chars()).take_while(|(a, b)| a == b).count();
                panic!(
                    "step {i} ({what}): key {k} differs: full …{} vs incremental …{}",
                    v.chars()
                        .skip(common.saturating_sub(80))
                        .take(300)
                        .collect::<String>(),
                    w.chars()
                        .skip(common.saturating_sub(80))
                        .take(300)
                        .collect::<String>()
                );
            }
        }
        assert_eq!(df, di, "step {i}: Redis state");
    }
    assert!(incremental_applies >= 15);

    // The same revision again: a no-op in 4 round trips, without planning.
    let head = steps.last().expect("steps").0.clone();
    let (rev, stats) = compiler.load(&repo, &head).expect("load");
    assert_eq!(stats.files_read, 0);
    let ancestry = |applied: &str| apply::ancestry(&repo, &head, applied);
    let (o, next) =
        apply::reconcile_from(&mut incr_store, &rev, &options(), &ancestry, now, baseline)
            .expect("no-op");
    assert_eq!(o.result, apply::Applied::Noop);
    assert!(o.incremental);
    assert_eq!(o.round_trips, 4);
    assert!(next.is_some());
}
