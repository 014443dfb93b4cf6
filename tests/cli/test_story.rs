//! The main story of every command, as a user sees it: stdout, stderr and the exit
//! status in one inline snapshot per step (TestEnv normalises what differs between
//! runs). A change to any of it shows in review.

use crate::common::env::TestEnv;

#[test]
fn the_read_only_commands_on_the_example() {
    let env = TestEnv::example();
    insta::assert_snapshot!(env.run(&["validate"]), @r"
    ✓ manifests at HEAD (47c6fb43) are valid: 16 file(s); cluster production, 3 role(s), 5 host(s), 7 schedule(s)
    [exit status: 0]
    ");
    insta::assert_snapshot!(env.run(&["hosts", "show", "web01"]), @r"
    Host web01  (manifests/hosts/web01.yaml:1)
      address      192.0.2.11
      roles        webserver, application
      labels       env=production,zone=fra1-a,tier=frontend
      queues       app, webserver, celeroot.host.web01
      ssh          celeroot@192.0.2.11:22, key ~/.ssh/celeroot_ed25519 (connect timeout 10s)
      deployment   /opt/celeroot (service celeroot-worker, keep 5 releases)
      schedules    billing-sync, cache-warmup, fleet-ping, rotate-logs, security-updates
    [exit status: 0]
    ");
    insta::assert_snapshot!(env.run(&["roles", "ls"]), @r"
    NAME         QUEUE      CONCURRENCY  HOSTS  TASKS                              FILE
    application  app        8            4      app.tasks, ops.tasks, celeroot     manifests/roles/application.yaml:1
    database     database   1            2      dbops.tasks, ops.tasks, celeroot   manifests/roles/database.yaml:1
    webserver    webserver  4            2      webapp.tasks, ops.tasks, celeroot  manifests/roles/webserver.yaml:1
    [exit status: 0]
    ");
    insta::assert_snapshot!(env.run(&["schedules", "ls"]), @r"
    NAME              WHEN                   TASK                                 TARGETS                           MODE  ENABLED
    billing-sync      every 5m               app.tasks.billing.sync_invoices      role:application                  any   yes
    cache-warmup      cron 0 18 * * mon-fri  webapp.tasks.warm_cache              role:webserver                    any   yes
    db-backup         cron 15 2 * * *        dbops.tasks.base_backup              host:db01                         each  yes
    fleet-ping        every 1m               celeroot.ping                        selector:env=production           each  yes
    replica-check     every 1m               dbops.tasks.check_replication        selector:replica=true, host:db01  each  yes
    rotate-logs       cron 0 */6 * * *       ops.tasks.rotate_logs                role:webserver                    each  yes
    security-updates  cron 30 3 * * sun      celeroot.apt.check_security_updates  selector:env=production           each  yes
    [exit status: 0]
    ");
    insta::assert_snapshot!(env.run(&["config", "show"]), @r"
    Cluster production  (manifests/cluster.yaml:1)
      description  Production Celery fleet (web front ends, application workers, databases).
      timezone     Europe/Berlin
      labels       env=production
      ssh          {user: celeroot, port: 22, identityFile: ~/.ssh/celeroot_ed25519, connectTimeout: 10s}
      deployment   {targetDir: /opt/celeroot, serviceName: celeroot-worker, restartCommand: [systemctl, restart, celeroot-worker], healthCheck: {command: [systemctl, is-active, --quiet, celeroot-worker], timeout: 30s}}
      rollout      maxParallel 5, canary 0, failureBudget 0; ships tasks, pyproject.toml, uv.lock
      objects      3 role(s), 5 host(s), 7 schedule(s) in 16 file(s) under manifests
    [exit status: 0]
    ");
}

#[test]
fn an_edit_then_its_plan_in_a_pull_request() {
    let env = TestEnv::example();
    insta::assert_snapshot!(env.run(&["hosts", "update", "web02", "--label", "zone=fra1-c", "--commit", "-m", "move web02"]), @r"
    ~ updated manifests/hosts/web02.yaml
    committed [COMMIT-0] move web02
    [exit status: 0]
    ");
    insta::assert_snapshot!(env.run(&["diff", "--from", "HEAD~1"]), @r#"
    celeroot plan for cluster production: HEAD~1 (47c6fb43) → HEAD ([COMMIT-0])

    Plan: 0 to add, 1 to change, 0 to remove.

    ~ Host/web02
        @@ -2,7 +2,7 @@
           labels:
             env: production
             tier: frontend
        -    zone: fra1-b
        +    zone: fra1-c
         spec:
           address: "192.0.2.12"
           roles:

    Plan: 0 to add, 1 to change, 0 to remove.
    [exit status: 2]
    "#);
    insta::assert_snapshot!(env.run(&["diff", "--from", "HEAD~1", "-o", "markdown"]), @r#"
    <!-- celeroot-plan -->
    ### celeroot plan for `production`: `HEAD~1 (47c6fb43)` → `HEAD ([COMMIT-0])`

    **Plan: 0 to add, 1 to change, 0 to remove.**

    | Kind | ➕ add | 🔄 change | ➖ remove |
    |---|--:|--:|--:|
    | Host | 0 | 1 | 0 |

    #### Host (1)

    | Action | Object | Consequences |
    |---|---|---|
    | 🔄 change | `web02` |  |

    <details><summary><code>~ Host/web02</code></summary>

    ```diff
    @@ -2,7 +2,7 @@
       labels:
         env: production
         tier: frontend
    -    zone: fra1-b
    +    zone: fra1-c
     spec:
       address: "192.0.2.12"
       roles:
    ```


    </details>

    <sub>celeroot 0.1.0 · from `47c6fb43` to `[COMMIT-0]` · the whole plan: <code>celeroot diff --from 47c6fb43 --to [COMMIT-0]</code></sub>
    [exit status: 2]
    "#);
    env.repo.edit(
        "manifests/roles/webserver.yaml",
        "concurrency: 4",
        "concurrency: 0",
    );
    insta::assert_snapshot!(env.run(&["validate", "--worktree"]), @r"
    ------- stderr -------
    error: invalid concurrency 0
      --> manifests/roles/webserver.yaml:9:16
       |
     9 |   concurrency: 0
       |                ^
      = help: expected a number of worker processes from 1 to 1024
    error: manifests at worktree are invalid: 1 error(s), 0 warning(s); nothing was changed
    [exit status: 1]
    ");
}

#[test]
fn reconcile_drift_status_history_rollback_unlock() {
    let mut env = TestEnv::example().with_redis();
    let dry = env.run(&["reconcile", "--dry-run", "--skip-deploy"]);
    insta::assert_snapshot!(dry, @r#"
    celeroot plan for cluster production: live → HEAD (47c6fb43)

    Plan: 16 to add, 0 to change, 0 to remove.

    + Cluster/production
        @@ -0,0 +1,25 @@
        +metadata:
        +  labels:
        +    env: production
        +spec:
        +  description: Production Celery fleet (web front ends, application workers, databases).
        +  timezone: Europe/Berlin
        +  ssh:
        +    user: celeroot
        +    port: 22
        +    identityFile: ~/.ssh/celeroot_ed25519
        +    connectTimeout: 10s
        +  deployment:
        +    targetDir: /opt/celeroot
        +    serviceName: celeroot-worker
        +    restartCommand:
        +      - systemctl
        +      - restart
        +      - celeroot-worker
        +    healthCheck:
        +      command:
        +        - systemctl
        +        - is-active
        +        - --quiet
        +        - celeroot-worker
        +      timeout: 30s

    + Role/application
        @@ -0,0 +1,9 @@
        +spec:
        +  description: General application workers (emails, billing, exports).
        +  queue: app
        +  concurrency: 8
        +  maxTasksPerChild: 1000
        +  tasks:
        +    - app.tasks
        +    - celeroot
        +    - ops.tasks
      affects 4 host(s): app01, db02, web01, web02

    + Role/database
        @@ -0,0 +1,8 @@
        +spec:
        +  description: PostgreSQL hosts; their workers run backups and maintenance.
        +  queue: database
        +  concurrency: 1
        +  tasks:
        +    - celeroot
        +    - dbops.tasks
        +    - ops.tasks
      affects 2 host(s): db01, db02

    + Role/webserver
        @@ -0,0 +1,9 @@
        +spec:
        +  description: Front-end hosts; their workers render reports and warm caches.
        +  queue: webserver
        +  concurrency: 4
        +  maxTasksPerChild: 500
        +  tasks:
        +    - celeroot
        +    - ops.tasks
        +    - webapp.tasks
      affects 2 host(s): web01, web02

    + Host/app01
        @@ -0,0 +1,9 @@
        +metadata:
        +  labels:
        +    env: production
        +    tier: backend
        +    zone: fra1-a
        +spec:
        +  address: "198.51.100.21"
        +  roles:
        +    - application
      queues: app, celeroot.host.app01

    + Host/db01
        @@ -0,0 +1,13 @@
        +metadata:
        +  labels:
        +    env: production
        +    tier: data
        +    zone: fra1-a
        +spec:
        +  address: "203.0.113.31"
        +  roles:
        +    - database
        +  ssh:
        +    user: postgres-ops
        +  deployment:
        +    targetDir: /srv/celeroot
      queues: database, celeroot.host.db01

    + Host/db02
        @@ -0,0 +1,13 @@
        +metadata:
        +  labels:
        +    env: production
        +    replica: "true"
        +    tier: data
        +    zone: fra1-b
        +spec:
        +  address: db02.fra1.example
        +  roles:
        +    - application
        +    - database
        +  ssh:
        +    port: 2222
      queues: app, database, celeroot.host.db02

    + Host/web01
        @@ -0,0 +1,10 @@
        +metadata:
        +  labels:
        +    env: production
        +    tier: frontend
        +    zone: fra1-a
        +spec:
        +  address: "192.0.2.11"
        +  roles:
        +    - application
        +    - webserver
      queues: app, webserver, celeroot.host.web01

    + Host/web02
        @@ -0,0 +1,10 @@
        +metadata:
        +  labels:
        +    env: production
        +    tier: frontend
        +    zone: fra1-b
        +spec:
        +  address: "192.0.2.12"
        +  roles:
        +    - application
        +    - webserver
      queues: app, webserver, celeroot.host.web02

    + Schedule/billing-sync
        @@ -0,0 +1,10 @@
        +spec:
        +  description: Push new invoices to the billing provider; any application worker may run it.
        +  every: 5m
        +  task: app.tasks.billing.sync_invoices
        +  targets:
        +    - role: application
        +  mode: any
        +  enabled: true
        +  options:
        +    expires: 4m
      targets (0 → 1):
        + role application → queue app
      runs every 5m

    + Schedule/cache-warmup
        @@ -0,0 +1,9 @@
        +spec:
        +  description: Warm the page cache on one front end after business hours.
        +  cron: 0 18 * * 1-5
        +  timezone: Europe/Berlin
        +  task: webapp.tasks.warm_cache
        +  targets:
        +    - role: webserver
        +  mode: any
        +  enabled: true
      targets (0 → 1):
        + role webserver → queue webserver
      next runs (Europe/Berlin): Mon 2026-11-23 18:00 +01:00, Tue 2026-11-24 18:00 +01:00, Wed 2026-11-25 18:00 +01:00

    + Schedule/db-backup
        @@ -0,0 +1,15 @@
        +spec:
        +  description: Nightly base backup of the primary database.
        +  cron: 15 2 * * *
        +  timezone: Europe/Berlin
        +  task: dbops.tasks.base_backup
        +  kwargs:
        +    compress: true
        +    destination: s3://backups/production
        +  targets:
        +    - host: db01
        +  mode: each
        +  enabled: true
        +  options:
        +    expires: 1h
        +    priority: 9
      targets (0 → 1):
        + host db01 → queue celeroot.host.db01
      next runs (Europe/Berlin): Tue 2026-11-24 02:15 +01:00, Wed 2026-11-25 02:15 +01:00, Thu 2026-11-26 02:15 +01:00

    + Schedule/fleet-ping
        @@ -0,0 +1,12 @@
        +spec:
        +  description: Every worker answers a ping each minute (results show up in the backend).
        +  every: 1m
        +  task: celeroot.ping
        +  targets:
        +    - selector:
        +        matchLabels:
        +          env: production
        +  mode: each
        +  enabled: true
        +  options:
        +    expires: 50s
      targets (0 → 5):
        + host app01 → queue celeroot.host.app01
        + host db01 → queue celeroot.host.db01
        + host db02 → queue celeroot.host.db02
        + host web01 → queue celeroot.host.web01
        + host web02 → queue celeroot.host.web02
      runs every 1m

    + Schedule/replica-check
        @@ -0,0 +1,11 @@
        +spec:
        +  description: Check replication lag on replicas and on the primary.
        +  every: 1m
        +  task: dbops.tasks.check_replication
        +  targets:
        +    - host: db01
        +    - selector:
        +        matchLabels:
        +          replica: "true"
        +  mode: each
        +  enabled: true
      targets (0 → 2):
        + host db01 → queue celeroot.host.db01
        + host db02 → queue celeroot.host.db02
      runs every 1m

    + Schedule/rotate-logs
        @@ -0,0 +1,12 @@
        +spec:
        +  description: Compress and rotate worker logs on every front end.
        +  cron: 0 */6 * * *
        +  timezone: Europe/Berlin
        +  task: ops.tasks.rotate_logs
        +  args:
        +    - /var/log/celeroot
        +    - 14
        +  targets:
        +    - role: webserver
        +  mode: each
        +  enabled: true
      targets (0 → 2):
        + host web01 → queue celeroot.host.web01
        + host web02 → queue celeroot.host.web02
      next runs (Europe/Berlin): Mon 2026-11-23 18:00 +01:00, Tue 2026-11-24 00:00 +01:00, Tue 2026-11-24 06:00 +01:00

    + Schedule/security-updates
        @@ -0,0 +1,15 @@
        +spec:
        +  description: Report pending security updates on every host (report-only; set apply to true to install them).
        +  cron: 30 3 * * 0
        +  timezone: Europe/Berlin
        +  task: celeroot.apt.check_security_updates
        +  kwargs:
        +    apply: false
        +  targets:
        +    - selector:
        +        matchLabels:
        +          env: production
        +  mode: each
        +  enabled: true
        +  options:
        +    expires: 2h
      targets (0 → 5):
        + host app01 → queue celeroot.host.app01
        + host db01 → queue celeroot.host.db01
        + host db02 → queue celeroot.host.db02
        + host web01 → queue celeroot.host.web01
        + host web02 → queue celeroot.host.web02
      next runs (Europe/Berlin): Sun 2026-11-29 03:30 +01:00, Sun 2026-12-06 03:30 +01:00, Sun 2026-12-13 03:30 +01:00

    Plan: 16 to add, 0 to change, 0 to remove.

    Dry run: 46 write(s) would be applied (0 corrective); nothing was written.
    [exit status: 2]
    "#);
    // The same plan as the dry run, then the result line.
    let applied = env.run(&["reconcile", "--skip-deploy"]);
    let plan = |t: &str| {
        t.lines()
            .take_while(|l| !l.starts_with("Dry run:") && !l.starts_with("Applied "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(plan(&applied), plan(&dry));
    let result: Vec<&str> = applied
        .lines()
        .skip_while(|l| !l.starts_with("Applied "))
        .collect();
    insta::assert_snapshot!(result.join("\n"), @r"
    Applied 46 write(s) (0 corrective) in one transaction: live state is now HEAD (47c6fb43) (generation 1, [N] ms).
    [exit status: 0]
    ");
    insta::assert_snapshot!(env.run(&["reconcile", "--skip-deploy"]), @r"
    celeroot plan for cluster production: live (47c6fb43) → HEAD (47c6fb43)

    No changes. The live state matches HEAD (47c6fb43).

    Nothing to do: the live state already matches HEAD (47c6fb43). Recorded a no-op event.
    [exit status: 0]
    ");
    insta::assert_snapshot!(env.run(&["drift"]), @r#"
    celeroot drift for cluster production: live (47c6fb43) vs HEAD (47c6fb43)

    1. Live state edited out of band: 0
    2. Hosts that differ from the live configuration: 5
       ! app01: no heartbeat: its agent is not running or cannot reach Redis (fix: agent)
       ! db01: no heartbeat: its agent is not running or cannot reach Redis (fix: agent)
       ! db02: no heartbeat: its agent is not running or cannot reach Redis (fix: agent)
       ! web01: no heartbeat: its agent is not running or cannot reach Redis (fix: agent)
       ! web02: no heartbeat: its agent is not running or cannot reach Redis (fix: agent)
    3. Changes in git not yet applied: 0
    Beat: ! beat-missing: no beat is running (no `celeroot beat` heartbeat, RedBeat's lock is free): schedules do not fire (fix: celeroot beat)

    `celeroot reconcile` heals class 1 and applies class 3; class 2 needs the host's agent or a deploy (see "fix").
    [exit status: 2]
    "#);
    insta::assert_snapshot!(env.run(&["status"]), @r#"
    cluster production (live state in redis://127.0.0.1:[PORT]/0)
    applied:  47c6fb43 "example" at [TIME] by tester@ci (generation 1)
    beat:     ! beat-missing: no beat is running (no `celeroot beat` heartbeat, RedBeat's lock is free): schedules do not fire
    schedules: 17 target(s); no run collector listens, so whether they run is unknown (`celeroot watch` collects)
    HEAD (47c6fb43): in sync

    HOST   ROLES                  RELEASE  HEARTBEAT  HEALTH
    app01  application            -        -          no-heartbeat
    db01   database               -        -          no-heartbeat
    db02   application,database   -        -          no-heartbeat
    web01  application,webserver  -        -          no-heartbeat
    web02  application,webserver  -        -          no-heartbeat

    latest events:
      [TIME]  noop        noop     47c6fb43 by tester@ci
      [TIME]  intentional applied  47c6fb43 by tester@ci
    [exit status: 0]
    "#);
    env.repo.edit(
        "manifests/roles/webserver.yaml",
        "concurrency: 4",
        "concurrency: 6",
    );
    env.repo.commit("more web workers");
    insta::assert_snapshot!(env.run(&["diff"]), @r"
    celeroot plan for cluster production: live (47c6fb43) → HEAD (17ced55d)

    Plan: 0 to add, 1 to change, 0 to remove.

    ~ Role/webserver
        @@ -1,7 +1,7 @@
         spec:
           description: Front-end hosts; their workers render reports and warm caches.
           queue: webserver
        -  concurrency: 4
        +  concurrency: 6
           maxTasksPerChild: 500
           tasks:
             - celeroot
      affects 2 host(s): web01, web02

    Plan: 0 to add, 1 to change, 0 to remove.
    [exit status: 2]
    ");
    insta::assert_snapshot!(env.run(&["reconcile", "--skip-deploy"]), @r"
    celeroot plan for cluster production: live (47c6fb43) → HEAD (17ced55d)

    Plan: 0 to add, 1 to change, 0 to remove.

    ~ Role/webserver
        @@ -1,7 +1,7 @@
         spec:
           description: Front-end hosts; their workers render reports and warm caches.
           queue: webserver
        -  concurrency: 4
        +  concurrency: 6
           maxTasksPerChild: 500
           tasks:
             - celeroot
      affects 2 host(s): web01, web02

    Plan: 0 to add, 1 to change, 0 to remove.

    Applied 2 write(s) (0 corrective) in one transaction: live state is now HEAD (17ced55d) (generation 2, [N] ms).
    [exit status: 0]
    ");
    insta::assert_snapshot!(env.run(&["history"]), @r"
    GEN  REVISION  APPLIED AT            BY         CHANGES    SUBJECT
    2    17ced55d  [TIME]  tester@ci  +0 ~1 -0   more web workers
    1    47c6fb43  [TIME]  tester@ci  +16 ~0 -0  example

    Return to one with `celeroot rollback REVISION`.
    [exit status: 0]
    ");
    insta::assert_snapshot!(env.run(&["reconcile", "--rev", "HEAD~1", "--skip-deploy"]), @r"
    ------- stderr -------
    error: refusing to apply HEAD~1 (47c6fb43): it is not a descendant of the applied revision 17ced55dad04de6405d349c8b21f5b4bc2199965
      = hint: pass --allow-rollback (or use `celeroot rollback`) if this is intended
    [exit status: 1]
    ");
    insta::assert_snapshot!(env.run(&["rollback", "HEAD~1", "--skip-deploy"]), @r"
    celeroot plan for cluster production: live (17ced55d) → HEAD~1 (47c6fb43)

    Plan: 0 to add, 1 to change, 0 to remove.

    ~ Role/webserver
        @@ -1,7 +1,7 @@
         spec:
           description: Front-end hosts; their workers render reports and warm caches.
           queue: webserver
        -  concurrency: 6
        +  concurrency: 4
           maxTasksPerChild: 500
           tasks:
             - celeroot
      affects 2 host(s): web01, web02

    Plan: 0 to add, 1 to change, 0 to remove.

    Applied 2 write(s) (0 corrective) in one transaction: live state is now HEAD~1 (47c6fb43) (generation 3, [N] ms).
    [exit status: 0]
    ");
    insta::assert_snapshot!(env.run(&["unlock"]), @r"
    No reconcile lease is held for cluster production.
    [exit status: 0]
    ");
}

#[test]
fn task_run_sends_and_deploy_check_refuses_placeholders() {
    let env = TestEnv::example().with_redis();
    insta::assert_snapshot!(env.run(&["task", "run", "celeroot.ping", "--target", "role:webserver"]), @r"
    Sent celeroot.ping to 2 hosts (mode each, targets at HEAD (47c6fb43)) via redis://127.0.0.1:[PORT]/0:
      TARGET      TASK ID                               QUEUE
      host/web01  [UUID]  celeroot.host.web01
      host/web02  [UUID]  celeroot.host.web02
    [exit status: 0]
    ");
    insta::assert_snapshot!(env.run(&["task", "run", "celeroot.ping", "--target", "host:web9"]), @r"
    ------- stderr -------
    error: target not resolved at HEAD (47c6fb43): host:web9: no Host `web9`; nothing was sent
      = hint: hosts at HEAD (47c6fb43): app01, db01, db02, web01, web02
    [exit status: 1]
    ");
    insta::assert_snapshot!(env.run(&["deploy", "--check", "--host", "web01"]), @r"
    Nothing to deploy: HEAD (47c6fb43) ships none of tasks, pyproject.toml, uv.lock (deployment.paths).
    [exit status: 0]
    ");
}

#[test]
fn schema_init_import_and_the_daemon_refusing_bad_options() {
    let env = TestEnv::example();
    insta::assert_snapshot!(env.run(&["schema", "--write", "schemas-out"]), @r"
    wrote schemas-out/manifest.json
    wrote schemas-out/cluster.json
    wrote schemas-out/role.json
    wrote schemas-out/host.json
    wrote schemas-out/schedule.json
    wrote schemas-out/output/plan.json
    wrote schemas-out/output/reconcile.json
    wrote schemas-out/output/drift.json
    wrote schemas-out/output/deploy.json
    wrote schemas-out/output/health.json
    wrote schemas-out/output/runs.json
    wrote schemas-out/output/beat-status.json
    wrote schemas-out/output/beat-forecast.json
    wrote schemas-out/output/test-connection.json
    wrote schemas-out/output/manifests.json
    wrote schemas-out/output/status.json
    wrote schemas-out/output/events.json
    wrote schemas-out/output/audit-export.json
    wrote schemas-out/output/history.json
    [exit status: 0]
    ");
    insta::assert_snapshot!(env.run(&["init", "fresh"]), @r"
    + manifests/cluster.yaml
    + manifests/roles/application.yaml
    + manifests/roles/database.yaml
    + manifests/roles/webserver.yaml
    + manifests/hosts/app01.yaml
    + manifests/hosts/db01.yaml
    + manifests/hosts/db02.yaml
    + manifests/hosts/web01.yaml
    + manifests/hosts/web02.yaml
    + manifests/schedules/billing-sync.yaml
    + manifests/schedules/cache-warmup.yaml
    + manifests/schedules/db-backup.yaml
    + manifests/schedules/fleet-ping.yaml
    + manifests/schedules/replica-check.yaml
    + manifests/schedules/rotate-logs.yaml
    + manifests/schedules/security-updates.yaml
    + schemas/manifest.json
    + schemas/cluster.json
    + schemas/role.json
    + schemas/host.json
    + schemas/schedule.json
    + README.md
    + .github/workflows/celeroot.yml
    + tasks/__init__.py
    + tasks/app.py
    + tasks/system.py
    + pyproject.toml

    Next steps:
      cd fresh
      celeroot validate --worktree      # check the manifests on disk
      git add -A && git commit -m 'Initial celeroot config'
      celeroot diff --from HEAD~1       # after your next commit
    [exit status: 0]
    ");
    let cl = std::fs::read_to_string(crate::common::project_root().join("examples/cl.yaml"))
        .expect("read examples/cl.yaml");
    env.repo.write("cl.yaml", &cl);
    insta::assert_snapshot!(env.run(&["import", "cl.yaml", "--out", "imported"]), @r#"
    + imported/cluster.yaml
    + imported/roles/webserver.yaml
    + imported/roles/application.yaml
    + imported/roles/database.yaml
    + imported/hosts/web01.yaml
    + imported/hosts/web02.yaml
    + imported/hosts/app01.yaml
    + imported/hosts/db01.yaml
    + imported/hosts/db02.yaml
    + imported/schedules/billing-sync.yaml
    + imported/schedules/cache-warmup.yaml
    + imported/schedules/db-backup.yaml
    + imported/schedules/fleet-ping.yaml
    + imported/schedules/replica-check.yaml
    + imported/schedules/rotate-logs.yaml
    + imported/schedules/security-updates.yaml
    ✓ imported cl.yaml into imported: cluster production, 3 role(s), 5 host(s), 7 schedule(s); 7 warning(s), see above

    Next steps:
      celeroot validate --worktree --path imported
      git add imported && git commit -m 'Import cl.yaml'
    ------- stderr -------
    warning: `redis` is not written to the manifests (the manifests hold no connection settings or secrets)
      --> cl.yaml:14:1
      = help: pass it to the commands that need it: --redis redis://:***@redis.example:6379/0 (or set CELEROOT_REDIS_URL)
    warning: `deployment.branch` is not mapped to the manifests
      --> cl.yaml:29:3
        |
     29 |   branch: main
        |   ^
      = help: celeroot deploys the git revision it is given; `celeroot watch --branch` picks the branch
    warning: `monitoring` is not mapped to the manifests
      --> cl.yaml:122:1
         |
     122 | monitoring:
         | ^
      = help: the manifests have no monitoring settings; `celeroot watch` serves Prometheus metrics on /metrics and `celeroot status` reports heartbeats. Move these settings to your monitoring system
    warning: schedule "billing_sync" is imported as "billing-sync"
      --> cl.yaml:76:3
        |
     76 |   billing_sync:
        |   ^
      = help: object names are RFC 1123 labels; references to it are renamed too
    warning: `schedules.billing_sync.targets`: role targets are imported with `mode: each`: every host of the role runs the task
      --> cl.yaml:80:5
        |
     80 |     targets: {role: application}
        |     ^
      = help: if one worker of the role should run it, set `mode: any` in the Schedule "billing-sync"
    warning: `schedules.cache-warmup.targets`: role targets are imported with `mode: each`: every host of the role runs the task
      --> cl.yaml:86:5
        |
     86 |     targets: {role: webserver}
        |     ^
      = help: if one worker of the role should run it, set `mode: any` in the Schedule "cache-warmup"
    warning: `schedules.rotate-logs.targets`: role targets are imported with `mode: each`: every host of the role runs the task
      --> cl.yaml:113:5
         |
     113 |     targets: {role: webserver}
         |     ^
      = help: if one worker of the role should run it, set `mode: any` in the Schedule "rotate-logs"
    [exit status: 0]
    "#);
    insta::assert_snapshot!(env.run(&["watch", "--listen", "nowhere"]), @r#"
    ------- stderr -------
    error: invalid --listen "nowhere": invalid socket address syntax
      = hint: use HOST:PORT, e.g. 127.0.0.1:9470 or 0.0.0.0:9470, or `off`
    [exit status: 1]
    "#);
    insta::assert_snapshot!(env.run(&["agent"]), @r"
    ------- stderr -------
    error: the following required arguments were not provided:
      --host <HOST>
      --cluster <CLUSTER>

    Usage: celeroot agent --host <HOST> --cluster <CLUSTER> --redis <URL>

    For more information, try '--help'.
    [exit status: 1]
    ");
}

#[test]
fn the_daemon_applies_a_push_and_status_shows_it_leading() {
    use crate::common::daemon::{BareRepo, Daemon};
    let env = TestEnv::example().with_redis();
    let bare = BareRepo::new();
    bare.push_from(&env.repo, "main");
    let repo = git2::Repository::open(env.repo.root()).expect("open the repository");
    let head = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .map(|c| c.id().to_string())
        .expect("the example's commit");
    let mut daemon = Daemon::start(&bare.url(), &env.redis_url(), &["--branch", "main"]);
    daemon.wait_for(
        "the example applied",
        std::time::Duration::from_secs(20),
        |d| d.applied().as_deref() == Some(head.as_str()),
    );
    let status = daemon.status();
    let last = &status["lastResult"];
    insta::assert_snapshot!(
        format!(
            "leader: {}\nredis: {}\nresult: {} ({} writes)\n",
            status["leader"], status["redis"], last["result"], last["writes"]
        ),
        @r#"
    leader: true
    redis: "ok"
    result: "applied" (46 writes)
    "#
    );
    // The daemon's run collector listens (so status can tell the schedules' health;
    // nothing is due yet at the tests' fixed clock).
    daemon.wait_for(
        "the run collector listening",
        std::time::Duration::from_secs(40),
        |d| d.status()["schedules"]["counts"]["pending"].as_u64() == Some(17),
    );
    insta::assert_snapshot!(env.run(&["status"]), @r#"
    cluster production (live state in redis://127.0.0.1:[PORT]/0)
    applied:  47c6fb43 "example" at [TIME] by daemon@ci (generation 1)
    beat:     ! beat-missing: no beat is running (no `celeroot beat` heartbeat, RedBeat's lock is free): schedules do not fire
    schedules: 17 target(s): 17 pending
    daemon:   daemon@ci leads `celeroot watch` (epoch 1, since [TIME])
    HEAD (47c6fb43): in sync

    HOST   ROLES                  RELEASE  HEARTBEAT  HEALTH
    app01  application            -        -          no-heartbeat
    db01   database               -        -          no-heartbeat
    db02   application,database   -        -          no-heartbeat
    web01  application,webserver  -        -          no-heartbeat
    web02  application,webserver  -        -          no-heartbeat

    latest events:
      [TIME]  intentional applied  47c6fb43 by daemon@ci
    [exit status: 0]
    "#);
}

#[test]
fn completions_and_man_pages() {
    let env = TestEnv::example();
    let bash = env.run(&["completions", "bash"]);
    insta::assert_snapshot!(bash.lines().take(3).collect::<Vec<_>>().join("\n"), @r"
    _celeroot() {
        local i cur prev opts cmd
        COMPREPLY=()
    ");
    insta::assert_snapshot!(env.run(&["man", "--out-dir", "man"]), @r"
    wrote 73 man page(s) to man
    [exit status: 0]
    ");
}
