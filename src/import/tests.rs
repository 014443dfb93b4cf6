use serde_json::json;

use super::*;

fn ok(text: &str) -> Import {
    match convert("cl.yaml", text, Options::default()) {
        Ok(i) => i,
        Err(ImportError::Invalid { diagnostics, .. }) => {
            panic!("unexpected errors: {diagnostics:#?}")
        }
    }
}

fn errors(text: &str, opts: Options) -> Vec<Diagnostic> {
    match convert("cl.yaml", text, opts) {
        Ok(i) => panic!("expected errors, got {:#?}", i.objects),
        Err(ImportError::Invalid { diagnostics, .. }) => diagnostics,
    }
}

fn object<'a>(i: &'a Import, kind: Kind, name: &str) -> &'a Json {
    &i.objects
        .iter()
        .find(|o| o.kind == kind && o.name == name)
        .unwrap_or_else(|| panic!("{kind}/{name} missing"))
        .value
}

const SMALL: &str = "\
cluster:
  name: staging
  timezone: Europe/Berlin
ssh:
  user: deploy
  key: ~/.ssh/id_ed25519
  connect_timeout: 15
deployment:
  target_dir: /srv/app
  restart_command: systemctl restart worker
  health_check:
    command: [systemctl, is-active, worker]
    timeout: 20
  max_parallel: 2
workers:
  default:
    queue: celery
    concurrency: 2
    max_tasks_per_child: 100
    tasks: [app.tasks]
hosts:
  Worker_1:
    address: 192.0.2.5
    role: default
    tags: [gpu]
  worker-2:
    address: worker-2.example
    roles: [default]
    ssh: {port: 2222}
    tags: {zone: a, replica: true, weight: 3}
schedules:
  nightly_report:
    cron: 0 3 * * *
    task: app.tasks.report
    params: {format: pdf}
    targets: {role: default}
  heartbeat:
    interval: 90
    task: app.tasks.ping
    params: [1, two]
    targets: {tags: [gpu], hosts: [worker_1]}
    options: {expires: 60, priority: 3}
";

#[test]
fn maps_every_section_of_a_small_config() {
    let i = ok(SMALL);
    assert_eq!(i.cluster, "staging");
    assert_eq!(
        object(&i, Kind::Cluster, "staging"),
        &json!({
            "apiVersion": "celeroot.io/v1", "kind": "Cluster", "metadata": {"name": "staging"},
            "spec": {
                "timezone": "Europe/Berlin",
                "ssh": {"user": "deploy", "identityFile": "~/.ssh/id_ed25519", "connectTimeout": "15s"},
                "deployment": {
                    "targetDir": "/srv/app",
                    "restartCommand": ["systemctl", "restart", "worker"],
                    "healthCheck": {"command": ["systemctl", "is-active", "worker"], "timeout": "20s"},
                    "strategy": {"maxParallel": 2},
                },
            },
        })
    );
    assert_eq!(
        object(&i, Kind::Role, "default")["spec"],
        json!({"queue": "celery", "concurrency": 2, "maxTasksPerChild": 100, "tasks": ["app.tasks"]})
    );
    let w1 = object(&i, Kind::Host, "worker-1");
    assert_eq!(w1["metadata"]["labels"], json!({"gpu": "true"}));
    assert_eq!(
        w1["spec"],
        json!({"address": "192.0.2.5", "roles": ["default"]})
    );
    let w2 = object(&i, Kind::Host, "worker-2");
    assert_eq!(
        w2["metadata"]["labels"],
        json!({"zone": "a", "replica": "true", "weight": "3"})
    );
    assert_eq!(w2["spec"]["ssh"], json!({"port": 2222}));
    assert_eq!(
        object(&i, Kind::Schedule, "nightly-report")["spec"],
        json!({"cron": "0 3 * * *", "task": "app.tasks.report", "kwargs": {"format": "pdf"}, "targets": [{"role": "default"}]})
    );
    assert_eq!(
        object(&i, Kind::Schedule, "heartbeat")["spec"],
        json!({
            "every": "1m30s", "task": "app.tasks.ping", "args": [1, "two"],
            "targets": [{"selector": {"matchLabels": {"gpu": "true"}}}, {"host": "worker-1"}],
            "options": {"expires": "1m", "priority": 3},
        })
    );
    // Renames are reported where the name is written.
    let renames: Vec<String> = i.warnings.iter().map(Diagnostic::headline).collect();
    assert_eq!(
        renames,
        [
            "cl.yaml:22:3: host \"Worker_1\" is imported as \"worker-1\"",
            "cl.yaml:32:3: schedule \"nightly_report\" is imported as \"nightly-report\"",
            "cl.yaml:36:5: `schedules.nightly_report.targets`: role targets are imported with `mode: each`: every host of the role runs the task",
        ]
    );
    // Objects come cluster first, then roles, hosts, schedules.
    let kinds: Vec<Kind> = i.objects.iter().map(|o| o.kind).collect();
    assert_eq!(
        kinds,
        [
            Kind::Cluster,
            Kind::Role,
            Kind::Host,
            Kind::Host,
            Kind::Schedule,
            Kind::Schedule
        ]
    );
}

#[test]
fn redis_and_monitoring_are_reported_never_copied() {
    let text = "cluster: prod\nredis: redis://admin:hunter2@redis.example:6379/0\nmonitoring:\n  flower: {port: 5555}\n";
    let i = ok(text);
    assert_eq!(i.objects.len(), 1);
    let all = format!("{i:?}");
    assert!(!all.contains("hunter2"), "{all}");
    let redis = &i.warnings[0];
    assert_eq!(redis.line, 2);
    assert!(
        redis.message.contains("`redis` is not written"),
        "{redis:?}"
    );
    assert_eq!(
        redis.help.as_deref(),
        Some("pass it to the commands that need it: --redis redis://admin:***@redis.example:6379/0 (or set CELEROOT_REDIS_URL)")
    );
    assert_eq!(
        redis.source_line, None,
        "the line with the password is not echoed"
    );
    let monitoring = &i.warnings[1];
    assert_eq!((monitoring.line, monitoring.column), (3, 1));
    assert!(monitoring.message.contains("`monitoring` is not mapped"));
    assert_eq!(monitoring.source_line.as_deref(), Some("monitoring:"));
}

#[test]
fn redacts_passwords_in_urls() {
    assert_eq!(
        redact_url("redis://:s3cret@h:6379/0"),
        "redis://:***@h:6379/0"
    );
    assert_eq!(redact_url("rediss://u:p@h/1"), "rediss://u:***@h/1");
    assert_eq!(redact_url("redis://s3cret@h"), "redis://***@h");
    assert_eq!(redact_url("redis://h:6379/0"), "redis://h:6379/0");
    assert_eq!(
        redact_url("redis://h/0?password=x&db=1"),
        "redis://h/0?password=***&db=1"
    );
}

#[test]
fn unknown_keys_are_errors_with_suggestions_unless_allowed() {
    let text = "cluster: prod\nworkers:\n  app:\n    concurency: 2\nfrobnicate: 1\n";
    let d = errors(text, Options::default());
    let heads: Vec<String> = d.iter().map(Diagnostic::headline).collect();
    assert_eq!(
        heads,
        [
            "cl.yaml:5:1: unknown key `frobnicate`",
            "cl.yaml:4:5: unknown key `workers.app.concurency`",
        ]
    );
    assert!(d[1]
        .help
        .as_deref()
        .is_some_and(|h| h.starts_with("did you mean `concurrency`?")));
    let i = convert(
        "cl.yaml",
        text,
        Options {
            allow_unknown: true,
        },
    )
    .expect("allowed");
    assert_eq!(i.warnings.len(), 2);
    assert!(i.warnings.iter().all(|w| !w.is_error()));
    assert_eq!(object(&i, Kind::Role, "app")["spec"], json!({}));
}

#[test]
fn known_but_unmappable_keys_are_warnings() {
    let text = "cluster: prod\ndeployment:\n  branch: main\n  target_dir: /opt/x\nssh:\n  password: hunter2\n";
    let i = ok(text);
    let heads: Vec<String> = i.warnings.iter().map(Diagnostic::headline).collect();
    assert_eq!(
        heads,
        [
            "cl.yaml:3:3: `deployment.branch` is not mapped to the manifests",
            "cl.yaml:6:3: `ssh.password` is not mapped to the manifests",
        ]
    );
    assert_eq!(i.warnings[1].source_line, None);
    assert!(!format!("{i:?}").contains("hunter2"));
    assert_eq!(
        object(&i, Kind::Cluster, "prod")["spec"],
        json!({"deployment": {"targetDir": "/opt/x"}})
    );
}

#[test]
fn names_that_cannot_become_object_names_are_errors() {
    let text = "cluster: prod\nworkers:\n  app:\n    tasks: [a]\n  App: {}\n  \"../etc\": {}\n";
    let d = errors(text, Options::default());
    let heads: Vec<String> = d
        .iter()
        .filter(|d| d.is_error())
        .map(Diagnostic::headline)
        .collect();
    assert_eq!(
        heads,
        [
            "cl.yaml:5:3: two roles become \"app\"",
            "cl.yaml:6:3: `workers.../etc`: role name \"../etc\" cannot be made an object name",
        ]
    );
}

#[test]
fn references_are_checked_with_positions() {
    let text = "cluster: prod\nworkers:\n  web: {}\nhosts:\n  h1:\n    address: 192.0.2.1\n    roles: [wbe]\nschedules:\n  s:\n    cron: '* * * * *'\n    task: t.x\n    targets: {hosts: [h2]}\n";
    let d = errors(text, Options::default());
    let heads: Vec<String> = d.iter().map(Diagnostic::headline).collect();
    assert_eq!(
        heads,
        [
            "cl.yaml:7:13: `hosts.h1.roles[0]`: no role named \"wbe\"",
            "cl.yaml:12:23: `schedules.s.targets.hosts[0]`: no host named \"h2\"",
        ]
    );
    assert_eq!(d[0].help.as_deref(), Some("did you mean `web`?"));
}

#[test]
fn missing_and_mistyped_fields_are_errors() {
    let text = "cluster: {description: x}\nhosts:\n  h1:\n    address: [1]\nschedules:\n  s:\n    cron: '* * * * *'\n    interval: 60\n    params: 3\n";
    let d = errors(text, Options::default());
    let heads: Vec<String> = d.iter().map(Diagnostic::headline).collect();
    assert_eq!(
        heads,
        [
            "cl.yaml:1:10: `cluster`: missing `name`",
            "cl.yaml:4:14: `hosts.h1.address`: expected a non-empty string, found a list",
            "cl.yaml:3:3: `hosts.h1`: missing `role` or `roles`",
            "cl.yaml:9:13: `schedules.s.params`: expected a list (positional arguments) or a mapping (keyword arguments), found integer `3`",
            "cl.yaml:6:3: `schedules.s`: set either `cron` or `interval`, not both",
            "cl.yaml:6:3: `schedules.s`: missing `task`",
            "cl.yaml:6:3: `schedules.s`: missing `targets`",
        ]
    );
}

#[test]
fn commands_needing_a_shell_are_refused() {
    let text = "cluster: prod\ndeployment:\n  restart_command: systemctl restart a && echo ok\n";
    let d = errors(text, Options::default());
    assert_eq!(d.len(), 1);
    assert!(d[0].message.contains("needs a shell"), "{:?}", d[0]);
    assert_eq!((d[0].line, d[0].column), (3, 20));
}

#[test]
fn bad_yaml_and_bad_shapes_are_located() {
    let d = errors("cluster: [\n", Options::default());
    assert!(d[0].message.starts_with("invalid YAML"), "{d:?}");
    let d = errors("- a\n- b\n", Options::default());
    assert_eq!(
        d[0].headline(),
        "cl.yaml:1:1: expected a mapping of sections, found a list"
    );
    let d = errors("workers: {}\n", Options::default());
    assert_eq!(d[0].headline(), "cl.yaml:1:1: missing `cluster`");
    let d = errors("", Options::default());
    assert_eq!(
        d[0].headline(),
        "cl.yaml:1:1: the file holds no YAML document"
    );
}

#[test]
fn the_shipped_example_converts_with_only_expected_warnings() {
    let text = include_str!("../../examples/cl.yaml");
    let i = ok(text);
    assert_eq!(i.cluster, "production");
    assert_eq!(
        (
            i.count(Kind::Role),
            i.count(Kind::Host),
            i.count(Kind::Schedule)
        ),
        (3, 5, 7)
    );
    assert!(!format!("{i:?}").contains("change-me"));
}
