//! `celeroot import`: the single-file cl.yaml into manifests.

use std::path::Path;

use crate::common::{project_root, run, TestRepo};

fn example_cl_yaml() -> String {
    std::fs::read_to_string(project_root().join("examples/cl.yaml")).expect("read examples/cl.yaml")
}

/// Every file under `dir`, relative to it, sorted, with its text.
fn files_under(dir: &Path) -> Vec<(String, String)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p
                    .strip_prefix(base)
                    .expect("under base")
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((rel, std::fs::read_to_string(&p).expect("read")));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The bundled example with the settings the old format cannot express taken out
/// (docs/import.md, "What the old format cannot say").
fn hand_written_equivalent(repo: &TestRepo) {
    // Cluster labels: the old `cluster` section has name, description and timezone only.
    repo.edit(
        "manifests/cluster.yaml",
        "  name: production\n  labels:\n    env: production\n",
        "  name: production\n",
    );
    // Per-host deployment overrides: old hosts have address, role(s), ssh and tags only.
    repo.edit(
        "manifests/hosts/db01.yaml",
        "  deployment:\n    targetDir: /srv/celeroot\n",
        "",
    );
    // `mode: any`: old schedules have no mode; role targets import as `mode: each`.
    for s in ["billing-sync", "cache-warmup"] {
        repo.edit(
            &format!("manifests/schedules/{s}.yaml"),
            "mode: any",
            "mode: each",
        );
    }
}

#[test]
fn test_import_of_the_example_round_trips_to_the_bundled_fleet() {
    let mut repo = TestRepo::with_example();
    let bundled = repo.commit("bundled example");
    hand_written_equivalent(&repo);
    repo.commit("what the old format can say");

    std::fs::remove_dir_all(repo.root().join("manifests")).expect("remove manifests");
    repo.write("cl.yaml", &example_cl_yaml());
    let mut cmd = repo.cmd();
    cmd.args(["import", "cl.yaml"]);
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("imported cl.yaml into manifests: cluster production, 3 role(s), 5 host(s), 7 schedule(s); 7 warning(s), see above"),
        "{out}"
    );
    // Everything not mapped is reported, located in cl.yaml.
    for expected in [
        "warning: `redis` is not written to the manifests",
        "  --> cl.yaml:14:1",
        "--redis redis://:***@redis.example:6379/0 (or set CELEROOT_REDIS_URL)",
        "warning: `deployment.branch` is not mapped to the manifests\n  --> cl.yaml:29:3",
        "warning: `monitoring` is not mapped to the manifests\n  --> cl.yaml:122:1",
        "warning: schedule \"billing_sync\" is imported as \"billing-sync\"\n  --> cl.yaml:76:3",
        "warning: `schedules.billing_sync.targets`: role targets are imported with `mode: each`",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    // The Redis password is never echoed nor written.
    assert!(!out.contains("change-me"), "{out}");
    let written = files_under(&repo.root().join("manifests"));
    assert_eq!(written.len(), 16, "{written:#?}");
    for (path, text) in &written {
        assert!(!text.contains("change-me"), "{path}");
        assert!(!text.contains("redis"), "{path}");
        assert!(!text.contains("flower"), "{path}");
    }

    let mut validate = repo.cmd();
    validate.args(["validate", "--worktree"]);
    let (out, code) = run(validate);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("16 file(s); cluster production, 3 role(s), 5 host(s), 7 schedule(s)"),
        "{out}"
    );

    // The imported fleet compiles to the same desired state as the hand-written one...
    repo.commit("imported from cl.yaml");
    let mut diff = repo.cmd();
    diff.args(["diff", "--from", "HEAD~1"]);
    let (out, code) = run(diff);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("No changes. Both revisions compile to the same desired state."),
        "{out}"
    );

    // ...and differs from the bundled example exactly where the old format cannot say it.
    let mut diff = repo.cmd();
    diff.args(["diff", "--from", &bundled]);
    let (out, code) = run(diff);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("Plan: 0 to add, 4 to change, 0 to remove."),
        "{out}"
    );
    for changed in [
        "~ Cluster/production",
        "~ Host/db01",
        "~ Schedule/billing-sync",
        "~ Schedule/cache-warmup",
    ] {
        assert!(out.contains(changed), "missing {changed} in:\n{out}");
    }
}

const SMALL: &str = "\
cluster:
  name: staging
  timezone: UTC
redis: redis://worker:pa55@192.0.2.2:6379/1
ssh:
  user: deploy
  key: ~/.ssh/staging
deployment:
  restart_command: [systemctl, restart, worker]
  keep_releases: 3
workers:
  default:
    queue: celery
    concurrency: 2
    tasks: [app.tasks]
hosts:
  worker_1:
    address: 192.0.2.5
    role: default
    tags: [gpu]
  worker-2:
    address: worker-2.example
    roles: [default]
    ssh: {port: 2222}
    tags: {zone: a, replica: true}
schedules:
  nightly-report:
    description: 'Nightly report: PDF'
    cron: 0 3 * * *
    task: app.tasks.report
    params: {format: pdf, pages: 3}
    targets: {hosts: [worker_1]}
  heartbeat:
    interval: 90
    task: app.tasks.ping
    params: [1, two]
    targets: {tags: [gpu]}
    options: {expires: 60, priority: 3}
    enabled: false
";

#[test]
fn test_import_writes_the_pinned_files_for_a_small_config() {
    let repo = TestRepo::empty();
    repo.write("schemas/manifest.json", "{}\n");
    repo.write("old/cl.yaml", SMALL);
    let mut cmd = repo.cmd();
    cmd.args(["import", "old/cl.yaml", "--out", "fleet"]);
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
    let mut all = out;
    for (path, text) in files_under(&repo.root().join("fleet")) {
        all.push_str(&format!("\n=== fleet/{path}\n{text}"));
    }
    insta::assert_snapshot!("import_small", all);

    let mut validate = repo.cmd();
    validate.args(["validate", "--worktree", "--path", "fleet"]);
    let (out, code) = run(validate);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn test_import_dry_run_prints_the_files_and_writes_nothing() {
    let repo = TestRepo::empty();
    repo.write("cl.yaml", SMALL);
    let mut cmd = repo.cmd();
    cmd.args(["import", "cl.yaml", "--dry-run"]);
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("--- /dev/null\n+++ b/manifests/cluster.yaml\n"),
        "{out}"
    );
    assert!(out.contains("+  name: staging\n"), "{out}");
    assert!(
        out.contains("+++ b/manifests/schedules/heartbeat.yaml\n"),
        "{out}"
    );
    assert!(
        out.contains("would write 6 file(s) from cl.yaml: cluster staging, 1 role(s), 2 host(s), 2 schedule(s); 2 warning(s), see above (dry run: nothing written)"),
        "{out}"
    );
    assert!(!out.contains("pa55"), "{out}");
    assert!(!repo.root().join("manifests").exists());
}

#[test]
fn test_import_invalid_input_writes_nothing_and_exits_1() {
    let repo = TestRepo::empty();
    repo.write(
        "cl.yaml",
        "cluster: {name: prod}\nredis: redis://:topsecret@r:6379/0\nworkers:\n  app: {concurency: 2}\nhosts:\n  h1:\n    adress: 192.0.2.1\n    role: ap\n",
    );
    let mut cmd = repo.cmd();
    cmd.args(["import", "cl.yaml"]);
    let (out, code) = run(cmd);
    assert_eq!(code, 1, "{out}");
    for expected in [
        "error: unknown key `workers.app.concurency`\n  --> cl.yaml:4:9",
        "did you mean `concurrency`?",
        "error: unknown key `hosts.h1.adress`\n  --> cl.yaml:7:5",
        "did you mean `address`?",
        "error: `hosts.h1.role`: no role named \"ap\"\n  --> cl.yaml:8:11",
        "error: `hosts.h1`: missing `address`",
        "error: cl.yaml cannot be imported: 4 error(s); nothing was written",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains("topsecret"), "{out}");
    assert!(!repo.root().join("manifests").exists());

    // Unknown keys alone can be skipped on purpose.
    repo.write(
        "cl.yaml",
        "cluster: {name: prod}\nworkers:\n  app: {concurency: 2}\nhosts:\n  h1: {address: 192.0.2.1, role: app, rack: r1}\n",
    );
    let mut cmd = repo.cmd();
    cmd.args(["import", "cl.yaml", "--allow-unknown"]);
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: unknown key `hosts.h1.rack` skipped (--allow-unknown)"),
        "{out}"
    );
    assert!(repo.root().join("manifests/hosts/h1.yaml").is_file());
}

#[test]
fn test_import_that_would_not_validate_writes_nothing() {
    // The importer maps the values; the manifest rules (cron syntax, time zones) are
    // checked by validating the result before anything is written.
    let repo = TestRepo::empty();
    repo.write(
        "cl.yaml",
        "cluster: {name: prod, timezone: Mars/Olympus}\nworkers:\n  app: {}\nhosts:\n  h1: {address: 192.0.2.1, role: app}\nschedules:\n  s: {cron: '61 * * * *', task: a.b, targets: {role: app}}\n",
    );
    let mut cmd = repo.cmd();
    cmd.args(["import", "cl.yaml"]);
    let (out, code) = run(cmd);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("manifests/cluster.yaml"), "{out}");
    assert!(out.contains("manifests/schedules/s.yaml"), "{out}");
    assert!(
        out.contains("error: the imported manifests would not validate"),
        "{out}"
    );
    assert!(!repo.root().join("manifests").exists());
}

#[test]
fn test_import_refuses_existing_objects() {
    let repo = TestRepo::with_example();
    repo.write("cl.yaml", &example_cl_yaml());
    let before = files_under(&repo.root().join("manifests"));
    let mut cmd = repo.cmd();
    cmd.args(["import", "cl.yaml"]);
    let (out, code) = run(cmd);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("error: Cluster \"production\" already exists in manifests/cluster.yaml"),
        "{out}"
    );
    assert!(
        out.contains("hint: import into a directory without these objects"),
        "{out}"
    );
    assert_eq!(files_under(&repo.root().join("manifests")), before);
}

#[test]
fn test_import_commit_commits_only_the_new_files() {
    let mut repo = TestRepo::empty();
    repo.write("README.md", "fleet\n");
    repo.commit("readme");
    repo.write("cl.yaml", SMALL);
    let mut cmd = repo.cmd();
    cmd.args([
        "import",
        "cl.yaml",
        "--commit",
        "-m",
        "Migrate from cl.yaml",
    ]);
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(": Migrate from cl.yaml"), "{out}");
    let git = git2::Repository::open(repo.root()).expect("open");
    let head = git.head().expect("head").peel_to_commit().expect("commit");
    assert_eq!(head.summary().ok().flatten(), Some("Migrate from cl.yaml"));
    let tree = head.tree().expect("tree");
    assert!(tree.get_path(Path::new("manifests/cluster.yaml")).is_ok());
    assert!(tree
        .get_path(Path::new("manifests/hosts/worker-1.yaml"))
        .is_ok());
    assert!(
        tree.get_path(Path::new("cl.yaml")).is_err(),
        "the input is not committed"
    );
    let mut validate = repo.cmd();
    validate.args(["validate"]);
    let (out, code) = run(validate);
    assert_eq!(code, 0, "{out}");
}
