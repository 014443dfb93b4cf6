//! The editing commands (`hosts|roles|schedules ls/show/add/update/rm`, `config ...`,
//! `completions`, `man`) against real git repositories in temp dirs.

use crate::common::{run, TestRepo};

fn ok(repo: &TestRepo, args: &[&str]) -> String {
    let mut c = repo.cmd();
    c.args(args);
    let (out, code) = run(c);
    assert_eq!(code, 0, "celeroot {args:?}\n{out}");
    out
}

fn fails(repo: &TestRepo, args: &[&str]) -> String {
    let mut c = repo.cmd();
    c.args(args);
    let (out, code) = run(c);
    assert_eq!(code, 1, "celeroot {args:?}\n{out}");
    out
}

/// Every file under `manifests/`, path → text, to prove a failed edit wrote nothing.
fn tree(repo: &TestRepo) -> Vec<(String, String)> {
    fn walk(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<(String, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                let rel = p.strip_prefix(base).expect("prefix").display().to_string();
                out.push((rel, std::fs::read_to_string(&p).expect("read")));
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo.root().join("manifests"), &repo.root(), &mut out);
    out.sort();
    out
}

fn git_log(repo: &TestRepo) -> Vec<String> {
    let r = git2::Repository::open(repo.root()).expect("open");
    let mut walk = r.revwalk().expect("revwalk");
    if walk.push_head().is_err() {
        return Vec::new();
    }
    walk.map(|id| {
        let c = r.find_commit(id.expect("oid")).expect("commit");
        String::from_utf8_lossy(c.summary_bytes().unwrap_or_default()).into_owned()
    })
    .collect()
}

/// The whole bundled example, built from an empty repository with these commands only.
const BUILD_EXAMPLE: &[&[&str]] = &[
    &["config", "init", "production", "--description", "Production Celery fleet (web front ends, application workers, databases).", "--timezone", "Europe/Berlin", "--label", "env=production"],
    &["config", "set", "ssh", "{user: celeroot, port: 22, identityFile: ~/.ssh/celeroot_ed25519, connectTimeout: 10s}"],
    &["config", "set", "deployment.targetDir", "/opt/celeroot"],
    &["config", "set", "deployment.serviceName", "celeroot-worker"],
    &["config", "set", "deployment.restartCommand", "[systemctl, restart, celeroot-worker]"],
    &["config", "set", "deployment.healthCheck.command", "[systemctl, is-active, --quiet, celeroot-worker]"],
    &["config", "set", "deployment.healthCheck.timeout", "30s"],
    &["roles", "add", "application", "--description", "General application workers (emails, billing, exports).", "--queue", "app", "--concurrency", "8", "--max-tasks-per-child", "1000", "--task", "app.tasks", "--task", "ops.tasks", "--task", "celeroot"],
    &["roles", "add", "database", "--description", "PostgreSQL hosts; their workers run backups and maintenance.", "--concurrency", "1", "--task", "dbops.tasks", "--task", "ops.tasks", "--task", "celeroot"],
    &["roles", "add", "webserver", "--description", "Front-end hosts; their workers render reports and warm caches.", "--queue", "webserver", "--concurrency", "4", "--max-tasks-per-child", "500", "--task", "webapp.tasks", "--task", "ops.tasks", "--task", "celeroot"],
    &["hosts", "add", "app01", "--address", "198.51.100.21", "--role", "application", "--label", "env=production", "--label", "zone=fra1-a", "--label", "tier=backend"],
    &["hosts", "add", "db01", "--address", "203.0.113.31", "--role", "database", "--label", "env=production", "--label", "zone=fra1-a", "--label", "tier=data", "--ssh-user", "postgres-ops", "--set", "deployment.targetDir=/srv/celeroot"],
    &["hosts", "add", "db02", "--address", "db02.fra1.example", "--role", "database", "--role", "application", "--label", "env=production", "--label", "zone=fra1-b", "--label", "tier=data", "--label", "replica=true", "--ssh-port", "2222"],
    &["hosts", "add", "web01", "--address", "192.0.2.11", "--role", "webserver", "--role", "application", "--label", "env=production", "--label", "zone=fra1-a", "--label", "tier=frontend"],
    &["hosts", "add", "web02", "--address", "192.0.2.12", "--role", "webserver", "--role", "application", "--label", "env=production", "--label", "zone=fra1-b", "--label", "tier=frontend"],
    &["schedules", "add", "billing-sync", "--description", "Push new invoices to the billing provider; any application worker may run it.", "--every", "5m", "--task", "app.tasks.billing.sync_invoices", "--target", "role:application", "--mode", "any", "--expires", "4m"],
    &["schedules", "add", "cache-warmup", "--description", "Warm the page cache on one front end after business hours.", "--cron", "0 18 * * mon-fri", "--task", "webapp.tasks.warm_cache", "--target", "role:webserver", "--mode", "any"],
    &["schedules", "add", "db-backup", "--description", "Nightly base backup of the primary database.", "--cron", "15 2 * * *", "--task", "dbops.tasks.base_backup", "--kwargs", r#"{"destination": "s3://backups/production", "compress": true}"#, "--target", "host:db01", "--mode", "each", "--expires", "1h", "--priority", "9"],
    &["schedules", "add", "fleet-ping", "--description", "Every worker answers a ping each minute (results show up in the backend).", "--every", "1m", "--task", "celeroot.ping", "--target", "selector:env=production", "--mode", "each", "--expires", "50s"],
    &["schedules", "add", "replica-check", "--description", "Check replication lag on replicas and on the primary.", "--every", "1m", "--task", "dbops.tasks.check_replication", "--target", "selector:replica=true", "--target", "host:db01", "--mode", "each", "--set", "enabled=true"],
    &["schedules", "add", "rotate-logs", "--description", "Compress and rotate worker logs on every front end.", "--cron", "0 */6 * * *", "--task", "ops.tasks.rotate_logs", "--args", r#"["/var/log/celeroot", 14]"#, "--target", "role:webserver", "--mode", "each"],
    &["schedules", "add", "security-updates", "--description", "Report pending security updates on every host (report-only; set apply to true to install them).", "--cron", "30 3 * * sun", "--task", "celeroot.apt.check_security_updates", "--kwargs", r#"{"apply": false}"#, "--target", "selector:env=production", "--mode", "each", "--expires", "2h"],
];

#[test]
fn the_whole_example_is_built_from_an_empty_repository_with_commands_only() {
    let mut repo = TestRepo::empty();
    for args in BUILD_EXAMPLE {
        ok(&repo, args);
    }
    let out = ok(&repo, &["validate", "--worktree"]);
    assert!(
        out.contains("cluster production, 3 role(s), 5 host(s), 7 schedule(s)"),
        "{out}"
    );
    let built = repo.commit("built with celeroot commands");
    // The hand-written example, committed on top: the plan between the two is empty.
    std::fs::remove_dir_all(repo.root().join("manifests")).expect("rm");
    for (path, text) in celeroot::init::EXAMPLE_MANIFESTS {
        repo.write(path, text);
    }
    let bundled = repo.commit("the bundled example");
    let mut c = repo.cmd();
    c.args(["diff", "--from", &built, "--to", &bundled]);
    let (out, code) = run(c);
    assert_eq!(
        code, 0,
        "the built configuration differs from the bundled one:\n{out}"
    );
    assert!(out.contains("No changes"), "{out}");
}

#[test]
fn hosts_add_writes_one_file_and_says_what_happens_next() {
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    let out = ok(
        &repo,
        &[
            "hosts",
            "add",
            "web03",
            "--address",
            "192.0.2.13",
            "--role",
            "webserver",
            "--label",
            "env=production",
            "--label",
            "zone=fra1-c",
            "--ssh-user",
            "deploy",
            "--ssh-port",
            "2222",
            "--ssh-key",
            "~/.ssh/web03",
        ],
    );
    assert!(
        out.starts_with("+ created manifests/hosts/web03.yaml\n"),
        "{out}"
    );
    assert!(out.contains("celeroot reconcile"), "{out}");
    assert!(out.contains("celeroot deploy --host web03"), "{out}");
    assert!(
        out.contains("celeroot hosts test-connection web03"),
        "{out}"
    );
    insta::assert_snapshot!(repo.read("manifests/hosts/web03.yaml"), @r"
    apiVersion: celeroot.io/v1
    kind: Host
    metadata:
      name: web03
      labels:
        env: production
        zone: fra1-c
    spec:
      address: 192.0.2.13
      roles: [webserver]
      ssh:
        user: deploy
        port: 2222
        identityFile: ~/.ssh/web03
    ");
    // Adding it again is refused, naming where it is.
    let out = fails(
        &repo,
        &[
            "hosts",
            "add",
            "web03",
            "--address",
            "192.0.2.14",
            "--role",
            "webserver",
        ],
    );
    assert!(
        out.contains("Host \"web03\" already exists in manifests/hosts/web03.yaml:1"),
        "{out}"
    );
    assert!(out.contains("celeroot hosts update web03"), "{out}");
}

#[test]
fn updates_change_only_their_lines_and_keep_comments() {
    let mut repo = TestRepo::with_example();
    repo.write(
        "manifests/hosts/web01.yaml",
        "# The first front end. Owner: web team.\napiVersion: celeroot.io/v1\nkind: Host\nmetadata:\n  name: web01\n  labels:\n    env: production   # billing tag\n    zone: fra1-a\n    tier: frontend\n\nspec:\n  # public address, see the IPAM sheet\n  address: 192.0.2.11  # v4\n  roles: [webserver, application]\n",
    );
    repo.commit("example");
    ok(
        &repo,
        &[
            "hosts",
            "update",
            "web01",
            "--address",
            "192.0.2.99",
            "--remove-role",
            "application",
            "--label",
            "zone=fra1-b",
            "--remove-label",
            "tier",
            "--ssh-port",
            "2200",
        ],
    );
    insta::assert_snapshot!(repo.read("manifests/hosts/web01.yaml"), @r"
    # The first front end. Owner: web team.
    apiVersion: celeroot.io/v1
    kind: Host
    metadata:
      name: web01
      labels:
        env: production   # billing tag
        zone: fra1-b

    spec:
      # public address, see the IPAM sheet
      address: 192.0.2.99  # v4
      roles: [webserver]
      ssh:
        port: 2200
    ");
    // A role's block list is replaced in place; the other files are untouched.
    let before = tree(&repo);
    ok(
        &repo,
        &[
            "roles",
            "update",
            "webserver",
            "--add-task",
            "webapp.reports",
            "--concurrency",
            "6",
        ],
    );
    let after = tree(&repo);
    let changed: Vec<&String> = after
        .iter()
        .zip(&before)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| &a.0)
        .collect();
    assert_eq!(changed, ["manifests/roles/webserver.yaml"]);
    insta::assert_snapshot!(repo.read("manifests/roles/webserver.yaml"), @r"
    # yaml-language-server: $schema=../../schemas/manifest.json
    apiVersion: celeroot.io/v1
    kind: Role
    metadata:
      name: webserver
    spec:
      description: Front-end hosts; their workers render reports and warm caches.
      queue: webserver
      concurrency: 6
      maxTasksPerChild: 500
      tasks: [webapp.tasks, ops.tasks, celeroot, webapp.reports]
    ");
}

#[test]
fn objects_in_multi_document_files_are_edited_and_removed_in_place() {
    let mut repo = TestRepo::with_example();
    repo.remove("manifests/hosts/web01.yaml");
    repo.remove("manifests/hosts/web02.yaml");
    let multi = "# Front ends\n---\napiVersion: celeroot.io/v1\nkind: Host\nmetadata:\n  name: web01  # first\n  labels: {env: production, tier: frontend}\nspec:\n  address: 192.0.2.11\n  roles: [webserver, application]\n---\n# the second one\napiVersion: celeroot.io/v1\nkind: Host\nmetadata:\n  name: web02\n  labels:\n    env: production\n    replica: \"false\"\nspec:\n  address: 192.0.2.12\n  roles: [webserver]\n";
    repo.write("manifests/hosts/web.yaml", multi);
    repo.commit("multi-document hosts");
    ok(
        &repo,
        &["hosts", "update", "web02", "--address", "192.0.2.22"],
    );
    assert_eq!(
        repo.read("manifests/hosts/web.yaml"),
        multi.replace("192.0.2.12", "192.0.2.22")
    );
    // A flow mapping is rewritten as a block only where a key is added to it.
    ok(
        &repo,
        &["hosts", "update", "web01", "--label", "zone=fra1-a"],
    );
    assert_eq!(
        repo.read("manifests/hosts/web.yaml"),
        multi.replace("192.0.2.12", "192.0.2.22").replace(
            "  labels: {env: production, tier: frontend}\n",
            "  labels:\n    env: production\n    tier: frontend\n    zone: fra1-a\n"
        )
    );
    // fleet-ping targets env=production, so removing web02 needs no schedule change.
    ok(&repo, &["hosts", "rm", "web02"]);
    let text = repo.read("manifests/hosts/web.yaml");
    assert!(!text.contains("web02"), "{text}");
    assert!(text.starts_with("# Front ends\n---\napiVersion: celeroot.io/v1\nkind: Host\nmetadata:\n  name: web01  # first\n"), "{text}");
    ok(&repo, &["validate", "--worktree"]);
}

#[test]
fn invalid_edits_write_nothing_and_explain() {
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    let before = tree(&repo);
    // An unknown role: caught by validating the whole repository with the new file.
    let out = fails(
        &repo,
        &[
            "hosts",
            "add",
            "web03",
            "--address",
            "192.0.2.13",
            "--role",
            "webservr",
        ],
    );
    assert!(out.contains("manifests/hosts/web03.yaml:"), "{out}");
    assert!(out.contains("webservr"), "{out}");
    assert!(out.contains("the change was not written"), "{out}");
    // A bad value in place.
    let out = fails(
        &repo,
        &["roles", "update", "webserver", "--concurrency", "0"],
    );
    assert!(out.contains("manifests/roles/webserver.yaml:"), "{out}");
    // A name that would be a path.
    let out = fails(
        &repo,
        &[
            "hosts",
            "add",
            "../evil",
            "--address",
            "192.0.2.1",
            "--role",
            "webserver",
        ],
    );
    assert!(out.contains("is not a valid host name"), "{out}");
    let out = fails(
        &repo,
        &[
            "schedules",
            "add",
            "x",
            "--every",
            "5m",
            "--task",
            "a.b",
            "--target",
            "role:webserver",
            "--args",
            "{\"a\": 1}",
        ],
    );
    assert!(out.contains("--args must be a JSON list"), "{out}");
    let out = fails(&repo, &["hosts", "update", "web01"]);
    assert!(
        out.contains("nothing to change: give at least one option"),
        "{out}"
    );
    let out = fails(
        &repo,
        &["hosts", "update", "web0", "--address", "192.0.2.1"],
    );
    assert!(out.contains("no host named \"web0\""), "{out}");
    assert!(out.contains("did you mean"), "{out}");
    let out = fails(
        &repo,
        &[
            "schedules",
            "add",
            "x",
            "--every",
            "5m",
            "--task",
            "a.b",
            "--target",
            "queue:x",
        ],
    );
    assert!(
        out.contains("expected role:NAME, host:NAME or selector:"),
        "{out}"
    );
    assert_eq!(tree(&repo), before, "a failed edit changed files");
    assert_eq!(git_log(&repo).len(), 1);
}

#[test]
fn a_role_in_use_is_not_removed() {
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    let before = tree(&repo);
    let out = fails(&repo, &["roles", "rm", "webserver"]);
    assert!(
        out.contains("role \"webserver\" is still used by 2 host(s): web01, web02"),
        "{out}"
    );
    assert!(
        out.contains("celeroot hosts update web01 --remove-role webserver"),
        "{out}"
    );
    assert_eq!(tree(&repo), before);
    // Once no host or schedule uses it, it goes, and so does its file.
    ok(&repo, &["roles", "add", "legacy", "--task", "legacy.tasks"]);
    ok(&repo, &["hosts", "update", "app01", "--add-role", "legacy"]);
    let out = fails(&repo, &["roles", "rm", "legacy"]);
    assert!(out.contains("app01"), "{out}");
    ok(
        &repo,
        &["hosts", "update", "app01", "--remove-role", "legacy"],
    );
    ok(&repo, &["roles", "rm", "legacy"]);
    assert!(!repo.root().join("manifests/roles/legacy.yaml").exists());
    // A host named by a schedule is refused too.
    let out = fails(&repo, &["hosts", "rm", "db01"]);
    assert!(
        out.contains("still a target of 2 schedule(s): db-backup, replica-check"),
        "{out}"
    );
}

#[test]
fn commit_and_dry_run() {
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    // Unrelated local work is neither committed nor lost.
    repo.write("notes.txt", "mine\n");
    let before = tree(&repo);
    let out = ok(&repo, &["schedules", "disable", "fleet-ping", "--dry-run"]);
    assert!(out.contains("--- a/manifests/schedules/fleet-ping.yaml\n+++ b/manifests/schedules/fleet-ping.yaml\n"), "{out}");
    assert!(out.contains("+  enabled: false\n"), "{out}");
    assert!(out.contains("dry run: nothing was written"), "{out}");
    assert_eq!(tree(&repo), before);
    let out = ok(&repo, &["schedules", "disable", "fleet-ping", "--commit"]);
    assert!(out.contains("committed "), "{out}");
    assert_eq!(git_log(&repo), ["schedules: disable fleet-ping", "example"]);
    let r = git2::Repository::open(repo.root()).expect("open");
    let head = r.head().expect("head").peel_to_commit().expect("commit");
    let parent = head.parent(0).expect("parent");
    let diff = r
        .diff_tree_to_tree(
            Some(&parent.tree().expect("t")),
            Some(&head.tree().expect("t")),
            None,
        )
        .expect("diff");
    let files: Vec<String> = diff
        .deltas()
        .map(|d| d.new_file().path().expect("path").display().to_string())
        .collect();
    assert_eq!(files, ["manifests/schedules/fleet-ping.yaml"]);
    assert_eq!(repo.read("notes.txt"), "mine\n");
    // The index agrees with HEAD for the committed file.
    let statuses = r.statuses(None).expect("status");
    let dirty: Vec<String> = statuses
        .iter()
        .filter(|s| s.status() != git2::Status::WT_NEW)
        .filter_map(|s| s.path().ok().map(str::to_string))
        .collect();
    assert!(dirty.is_empty(), "{dirty:?}");
    let out = ok(&repo, &["schedules", "disable", "fleet-ping"]);
    assert!(out.contains("already disabled"), "{out}");
    ok(
        &repo,
        &[
            "schedules",
            "enable",
            "fleet-ping",
            "--commit",
            "-m",
            "resume the ping",
        ],
    );
    assert_eq!(git_log(&repo)[0], "resume the ping");
    assert!(!repo
        .read("manifests/schedules/fleet-ping.yaml")
        .contains("enabled"));
}

/// Listings fit the terminal (here COLUMNS, as stdout is a pipe): the widest columns are
/// cut with `…`, one line per row; `-o wide` shows every cell in full.
#[test]
fn tables_fit_the_width_and_wide_shows_everything() {
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    let mut c = repo.cmd();
    c.args(["hosts", "ls"]).env("COLUMNS", "72");
    let (out, _) = run(c);
    insta::assert_snapshot!(out, @r"
    NAME   ADDRESS           ROLES        LABELS            FILE
    app01  198.51.100.21     application  env=production,…  manifests/hosts…
    db01   203.0.113.31      database     env=production,…  manifests/hosts…
    db02   db02.fra1.examp…  database,…   env=production,…  manifests/hosts…
    web01  192.0.2.11        webserver,…  env=production,…  manifests/hosts…
    web02  192.0.2.12        webserver,…  env=production,…  manifests/hosts…
    [exit status: 0]
    ");
    let mut c = repo.cmd();
    c.args(["hosts", "ls", "-o", "wide"]).env("COLUMNS", "72");
    let (wide, _) = run(c);
    let mut c = repo.cmd();
    c.args(["hosts", "ls"]);
    let (piped, _) = run(c);
    assert_eq!(wide, piped);
    assert!(
        wide.contains(
            "env=production,zone=fra1-b,tier=data,replica=true  manifests/hosts/db02.yaml:1"
        ),
        "{wide}"
    );
}

#[test]
fn lists_are_tables_and_parse_as_json() {
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    let out = ok(&repo, &["hosts", "ls"]);
    insta::assert_snapshot!(out, @r"
    NAME   ADDRESS            ROLES                   LABELS                                             FILE
    app01  198.51.100.21      application             env=production,zone=fra1-a,tier=backend            manifests/hosts/app01.yaml:1
    db01   203.0.113.31       database                env=production,zone=fra1-a,tier=data               manifests/hosts/db01.yaml:1
    db02   db02.fra1.example  database, application   env=production,zone=fra1-b,tier=data,replica=true  manifests/hosts/db02.yaml:1
    web01  192.0.2.11         webserver, application  env=production,zone=fra1-a,tier=frontend           manifests/hosts/web01.yaml:1
    web02  192.0.2.12         webserver, application  env=production,zone=fra1-b,tier=frontend           manifests/hosts/web02.yaml:1
    [exit status: 0]
    ");
    for kind in ["hosts", "roles", "schedules"] {
        let out = ok(&repo, &[kind, "ls", "-o", "json"]);
        let json = out.trim_end_matches("[exit status: 0]\n");
        let v: serde_json::Value = serde_json::from_str(json).expect("ls -o json is JSON");
        assert_eq!(v["formatVersion"], 1, "{kind}: {v}");
        assert!(
            v["items"].as_array().is_some_and(|a| !a.is_empty()),
            "{kind}: {v}"
        );
        let out = ok(&repo, &[kind, "ls", "-o", "yaml"]);
        assert!(out.contains("apiVersion: celeroot.io/v1"), "{out}");
    }
    let out = ok(&repo, &["roles", "ls"]);
    assert!(
        out.contains(
            "webserver    webserver  4            2      webapp.tasks, ops.tasks, celeroot"
        ),
        "{out}"
    );
    let out = ok(&repo, &["config", "workers"]);
    assert!(
        out.contains("web01  app, webserver, celeroot.host.web01  8            500"),
        "{out}"
    );
    let out = ok(&repo, &["config", "show"]);
    assert!(out.contains("3 role(s), 5 host(s), 7 schedule(s)"), "{out}");
    let out = ok(&repo, &["config", "hosts"]);
    assert!(out.contains("db01   postgres-ops@203.0.113.31:22"), "{out}");
    let out = ok(&repo, &["config", "schedules", "-o", "json"]);
    let v: serde_json::Value =
        serde_json::from_str(out.trim_end_matches("[exit status: 0]\n")).expect("json");
    assert_eq!(v["formatVersion"], 1);
    assert_eq!(
        v["schedules"]["db-backup"]["nextFireTime"],
        "2026-11-24T02:15:00+01:00"
    );
}

#[test]
fn schedules_show_resolves_targets_and_fire_times() {
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    let out = ok(&repo, &["schedules", "show", "rotate-logs"]);
    insta::assert_snapshot!(out, @r#"
    Schedule rotate-logs  (manifests/schedules/rotate-logs.yaml:1)
      description  Compress and rotate worker logs on every front end.
      when         cron 0 */6 * * *
      task         ops.tasks.rotate_logs
      args         ["/var/log/celeroot",14]
      targets      role:webserver
      mode         each (every matched host, through its host queue)
      enabled      yes
      resolved to 2 queue(s):
        host web01            → celeroot.host.web01
        host web02            → celeroot.host.web02
      next fire times (Europe/Berlin):
        2026-11-23T18:00:00+01:00
        2026-11-24T00:00:00+01:00
        2026-11-24T06:00:00+01:00
        2026-11-24T12:00:00+01:00
        2026-11-24T18:00:00+01:00
    [exit status: 0]
    "#);
    let out = ok(&repo, &["hosts", "show", "db01", "-o", "json"]);
    let v: serde_json::Value =
        serde_json::from_str(out.trim_end_matches("[exit status: 0]\n")).expect("json");
    assert_eq!(v["effective"]["ssh"]["user"], "postgres-ops");
    assert_eq!(
        v["schedules"],
        serde_json::json!([
            "db-backup",
            "fleet-ping",
            "replica-check",
            "security-updates"
        ])
    );
    let out = ok(&repo, &["roles", "show", "webserver"]);
    assert!(out.contains("hosts                web01, web02"), "{out}");
    assert!(
        out.contains("targeted by          cache-warmup, rotate-logs"),
        "{out}"
    );
}

#[test]
fn config_edit_validates_before_saving() {
    let mut repo = TestRepo::with_example();
    repo.commit("example");
    let script = repo.root().join("editor.sh");
    // An "editor" that changes the timezone: saved.
    std::fs::write(
        &script,
        "#!/bin/sh\nsed -i 's|Europe/Berlin|Europe/Paris|' \"$1\"\n",
    )
    .expect("write");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let mut c = repo.cmd();
    c.args(["config", "edit"])
        .env("EDITOR", &script)
        .env_remove("VISUAL");
    let (out, code) = run(c);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("~ updated manifests/cluster.yaml"), "{out}");
    assert!(repo
        .read("manifests/cluster.yaml")
        .contains("timezone: Europe/Paris"));
    // An editor that breaks a host: nothing written, errors shown, the copy kept.
    std::fs::write(
        &script,
        "#!/bin/sh\nsed -i 's|roles: \\[webserver, application\\]|roles: [nope]|' \"$1\"\n",
    )
    .expect("write");
    let before = repo.read("manifests/hosts/web01.yaml");
    let mut c = repo.cmd();
    c.args(["config", "edit", "host/web01"])
        .env("EDITOR", &script)
        .env_remove("VISUAL");
    let (out, code) = run(c);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("manifests/hosts/web01.yaml:"), "{out}");
    assert!(out.contains("nope"), "{out}");
    assert!(out.contains("your edited copy is kept in"), "{out}");
    assert_eq!(repo.read("manifests/hosts/web01.yaml"), before);
}

#[test]
fn completions_and_man_pages_come_from_the_clap_definitions() {
    let repo = TestRepo::empty();
    for shell in ["bash", "zsh", "fish"] {
        let out = ok(&repo, &["completions", shell]);
        assert!(out.contains("celeroot"), "{shell}: {out}");
        assert!(
            out.contains("test-connection"),
            "{shell} completions miss a nested command"
        );
    }
    let out = ok(&repo, &["man"]);
    assert!(
        out.starts_with(".ie \\n(.g .ds Aq \\(aq") || out.contains(".TH celeroot 1"),
        "{out}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ok(
        &repo,
        &["man", "--out-dir", &dir.path().display().to_string()],
    );
    assert!(out.contains("man page(s)"), "{out}");
    for page in [
        "celeroot.1",
        "celeroot-hosts.1",
        "celeroot-hosts-add.1",
        "celeroot-schedules-show.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).expect(page);
        assert!(text.contains(".TH"), "{page}");
    }
}
