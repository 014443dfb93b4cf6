//! The worker scaffold `celeroot init` writes (templates/config-repo/tasks and
//! pyproject.toml), run by REAL Celery: a worker from the pinned virtualenv consuming a host
//! queue on a real redis-server, with tasks sent by Celery's own Python client.

use std::process::Command;

use serde_json::{json, Value};

use crate::common::celery::{app_dir, python, worker_env, CeleryProcess};
use crate::common::redis::RedisServer;

const HOST: &str = "web01";
const QUEUE: &str = "celeroot.host.web01";

/// Sends each `[task, args, kwargs]` of the JSON list in argv[1] to the queue in argv[2],
/// waits for each result and prints them as a JSON list of {state, result, traceback}.
const SEND: &str = r#"
import json, sys
from tasks.app import app
calls, queue = json.loads(sys.argv[1]), sys.argv[2]
sent = [app.send_task(t, args=a, kwargs=k, queue=queue) for t, a, k in calls]
out = []
for r in sent:
    r.get(timeout=20, propagate=False)
    out.append({
        "state": r.state,
        "result": r.result if r.successful() else repr(r.result),
        "traceback": r.traceback,
    })
print(json.dumps(out))
"#;

/// `python -c SCRIPT ARGS...` in the scaffold's directory, with `env` and the harness's
/// PYTHONPATH; returns stdout, panicking with the output (and `context`) on failure.
fn python_run(script: &str, args: &[&str], env: &[(&str, String)], context: &str) -> String {
    let mut cmd = Command::new(python());
    cmd.arg("-c").arg(script).args(args);
    cmd.current_dir(app_dir())
        .env(
            "PYTHONPATH",
            format!(
                "{}:{}",
                app_dir().display(),
                crate::common::project_root().join("tests/celery").display()
            ),
        )
        // Keep the template directory free of __pycache__.
        .env("PYTHONDONTWRITEBYTECODE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed ({}):\n{stdout}\n{}\n{context}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Sends `calls` (task, args, kwargs) to the host queue and returns their outcomes.
fn send(env: &[(&str, String)], worker: &CeleryProcess, calls: Value) -> Vec<Value> {
    let context = format!("worker log:\n{}", worker.log_text());
    let stdout = python_run(SEND, &[&calls.to_string(), QUEUE], env, &context);
    let outcomes: Vec<Value> =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{context}"));
    assert_eq!(outcomes.len(), calls.as_array().expect("list").len());
    outcomes
}

fn start() -> (RedisServer, Vec<(&'static str, String)>, CeleryProcess) {
    let redis = RedisServer::start();
    let env = worker_env(&redis.url(), "test", HOST, "UTC");
    let worker = CeleryProcess::worker(&env, &[QUEUE], HOST);
    (redis, env, worker)
}

#[test]
fn ping_and_echo_answer_on_the_host_queue() {
    let (_redis, env, worker) = start();
    let out = send(
        &env,
        &worker,
        json!([
            ["celeroot.ping", [], {}],
            ["celeroot.echo", [1, "two"], {"k": {"a": [1, null]}}],
        ]),
    );
    assert_eq!(out[0]["state"], "SUCCESS", "{out:?}");
    assert_eq!(out[0]["result"], json!({"pong": true, "host": HOST}));
    assert_eq!(out[1]["state"], "SUCCESS", "{out:?}");
    assert_eq!(
        out[1]["result"],
        json!({"args": [1, "two"], "kwargs": {"k": {"a": [1, null]}}})
    );
}

#[test]
fn apt_tasks_reject_bad_input_before_running_anything() {
    let (_redis, env, worker) = start();
    let out = send(
        &env,
        &worker,
        json!([
            ["celeroot.apt.install", [["vim; rm -rf /"]], {}],
            ["celeroot.apt.remove", [["-y", "--purge"]], {"dry_run": true}],
            // A string where a boolean belongs must not mean "for real".
            ["celeroot.apt.install", [["hello"]], {"dry_run": "false"}],
            ["celeroot.apt.check_security_updates", [], {"apply": "yes"}],
        ]),
    );
    for (o, needle) in out.iter().zip([
        "invalid package name 'vim; rm -rf /'",
        "invalid package name '-y'",
        "dry_run must be true or false",
        "apply must be true or false",
    ]) {
        assert_eq!(o["state"], "FAILURE", "{o}");
        let tb = o["traceback"].as_str().expect("a traceback");
        assert!(tb.contains("ValueError"), "{tb}");
        assert!(tb.contains(needle), "{needle:?} not in {tb}");
        assert!(
            o["result"]
                .as_str()
                .expect("repr")
                .starts_with("ValueError("),
            "{o}"
        );
    }
}

#[test]
fn apt_dry_runs_report_structured_results() {
    let apt = Command::new("apt-get").arg("--version").output();
    assert!(
        apt.as_ref().is_ok_and(|o| o.status.success()),
        "apt-get is required for this test (a Debian-family machine): {apt:?}"
    );
    let installed_before = hello_installed();
    let (_redis, env, worker) = start();
    let out = send(
        &env,
        &worker,
        json!([
            ["celeroot.apt.install", [["hello"]], {"dry_run": true}],
            ["celeroot.apt.check_security_updates", [], {}],
        ]),
    );

    let install = &out[0];
    assert_eq!(install["state"], "SUCCESS", "{install}");
    let r = &install["result"];
    assert_eq!(r["action"], "install", "{r}");
    assert_eq!(r["packages"], json!(["hello"]), "{r}");
    assert_eq!(r["dry_run"], true, "{r}");
    assert_eq!(r["returncode"], 0, "{r}");
    assert_eq!(r["host"], HOST, "{r}");
    let argv: Vec<&str> = r["command"]
        .as_array()
        .expect("command")
        .iter()
        .map(|a| a.as_str().expect("string"))
        .collect();
    assert_eq!(argv[0], "apt-get", "{r}");
    assert!(argv.contains(&"-s"), "a dry run simulates: {r}");
    assert_eq!(argv[argv.len() - 2..], ["install", "hello"], "{r}");
    for k in [
        "installed",
        "upgraded",
        "removed",
        "warnings",
        "stderr_tail",
    ] {
        assert!(r[k].is_array(), "{k} missing: {r}");
    }
    let would_install: Vec<&str> = r["installed"]
        .as_array()
        .expect("installed")
        .iter()
        .map(|p| p["package"].as_str().expect("package"))
        .collect();
    if installed_before {
        assert_eq!(r["changed"], false, "hello is installed already: {r}");
    } else {
        assert!(would_install.contains(&"hello"), "{r}");
        assert_eq!(r["changed"], true, "{r}");
        assert!(!hello_installed(), "a dry run installed hello");
    }

    let check = &out[1];
    assert_eq!(check["state"], "SUCCESS", "{check}");
    let r = &check["result"];
    assert_eq!(r["action"], "check_security_updates", "{r}");
    assert_eq!(r["apply"], false, "report-only by default: {r}");
    assert_eq!(r["applied"], Value::Null, "{r}");
    let updates = r["security_updates"].as_array().expect("list");
    assert_eq!(r["count"], updates.len(), "{r}");
    assert!(r["other_upgrades"].is_u64(), "{r}");
    for u in updates {
        assert!(
            u["package"].is_string() && u["from"].is_string() && u["to"].is_string(),
            "{u}"
        );
        let origins = u["origins"].as_array().expect("origins");
        assert!(
            origins.iter().any(|o| o
                .as_str()
                .expect("origin")
                .to_lowercase()
                .contains("security")),
            "{u}"
        );
    }
}

fn hello_installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", "hello"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).ends_with(" installed"))
        .unwrap_or(false)
}

/// Environment with no CELEROOT_* variable but the broker URL (an unreachable one:
/// importing must not connect).
fn broker_only_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CELEROOT_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("CELEROOT_BROKER_URL", "redis://127.0.0.1:1/3")
        .env("PYTHONPATH", app_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(app_dir());
}

#[test]
fn the_app_imports_with_only_the_broker_url() {
    let script = r#"
import json
from tasks.app import app
app.loader.import_default_modules()
print(json.dumps({
    "broker": app.conf.broker_url,
    "backend": app.conf.result_backend,
    "redbeat_url": app.conf.redbeat_redis_url,
    "prefix": app.conf.redbeat_key_prefix,
    "queue": app.conf.task_default_queue,
    "timezone": app.conf.timezone,
    "serializer": app.conf.task_serializer,
    "tasks": sorted(t for t in app.tasks if t.startswith("celeroot.")),
}))
"#;
    let mut cmd = Command::new(python());
    cmd.arg("-c").arg(script);
    broker_only_env(&mut cmd);
    let out = cmd.output().expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        v,
        json!({
            "broker": "redis://127.0.0.1:1/3",
            "backend": "redis://127.0.0.1:1/3",
            "redbeat_url": "redis://127.0.0.1:1/3",
            "prefix": "celeroot:{default}:redbeat:",
            "queue": "celeroot.host.unknown",
            "timezone": "UTC",
            "serializer": "json",
            "tasks": [
                "celeroot.apt.check_security_updates",
                "celeroot.apt.install",
                "celeroot.apt.remove",
                "celeroot.apt.update",
                "celeroot.apt.upgrade",
                "celeroot.echo",
                "celeroot.ping",
            ],
        })
    );
}

/// The validation and parsing helpers, in-process (no apt-get, no broker).
#[test]
fn apt_helpers_validate_names_and_parse_apt_output() {
    let script = r#"
from tasks import system as s

ok = ["hello", "g++", "libc6:amd64", "libc6:i386=2.36-9+deb12u10", "zlib1g=1:1.2.13.dfsg-1",
      "foo=1.0~rc1", "a0", "python3.11"]
assert s.validate_packages(ok) == ok
assert s.validate_packages("hello") == ["hello"]
assert s.validate_packages(["hello", "vim", "hello"]) == ["hello", "vim"]
bad = ["vim; rm -rf /", "-o", "--purge", "Vim", "a", "", "vim ", " vim", "vim=", "vim=abc",
       "vim=1;id", "vim:AMD64", "../x", "vim nano", "lib*", "lib?", "vim\nnano", "$(id)",
       "`id`", "vim|cat", "vim>x", "vim/stable", "x" * 300]
for b in bad:
    try:
        s.validate_packages([b])
    except ValueError:
        pass
    else:
        raise AssertionError("accepted %r" % b)
for b in [[], None, 3, [3], {"hello": 1}, [["hello"]]]:
    try:
        s.validate_packages(b)
    except ValueError:
        pass
    else:
        raise AssertionError("accepted %r" % (b,))

sim = """NOTE: This is only a simulation!
Inst hello (2.10-3 Debian:12.15/oldstable [amd64])
Inst bash [5.2.15-2+b8] (5.2.15-2+b13 Debian:12.15/oldstable [amd64])
Inst libgcrypt20 [1.10.1-3] (1.10.1-3+deb12u1 Debian:12.15/oldstable, Debian-Security:12/oldstable-security [amd64]) []
Inst local (1.0 [all])
Remv vim [2:9.0.1378-2]
Purg nano [7.2-1]
Conf hello (2.10-3 Debian:12.15/oldstable [amd64])
"""
p = s.parse_apt_output(sim)
assert p["installed"] == [
    {"package": "hello", "version": "2.10-3", "origins": ["Debian:12.15/oldstable"]},
    {"package": "local", "version": "1.0", "origins": []},
], p
assert p["upgraded"] == [
    {"package": "bash", "from": "5.2.15-2+b8", "to": "5.2.15-2+b13", "origins": ["Debian:12.15/oldstable"]},
    {"package": "libgcrypt20", "from": "1.10.1-3", "to": "1.10.1-3+deb12u1",
     "origins": ["Debian:12.15/oldstable", "Debian-Security:12/oldstable-security"]},
], p
assert p["removed"] == [{"package": "vim", "version": "2:9.0.1378-2"},
                        {"package": "nano", "version": "7.2-1"}], p

real = """Preparing to unpack .../hello_2.10-3_amd64.deb ...
Unpacking hello (2.10-3) ...
Unpacking libc6:amd64 (2.36-9+deb12u10) over (2.36-9+deb12u9) ...
Removing vim (2:9.0.1378-2) ...
Setting up hello (2.10-3) ...
"""
p = s.parse_apt_output(real)
assert p == {
    "installed": [{"package": "hello", "version": "2.10-3"}],
    "upgraded": [{"package": "libc6:amd64", "from": "2.36-9+deb12u9", "to": "2.36-9+deb12u10"}],
    "removed": [{"package": "vim", "version": "2:9.0.1378-2"}],
}, p
assert s.parse_apt_output("Reading package lists...\n") == {"installed": [], "upgraded": [], "removed": []}

assert s.is_security_origin("Debian-Security:12/oldstable-security")
assert s.is_security_origin("Ubuntu:22.04/jammy-security")
assert not s.is_security_origin("Debian:12.15/oldstable")
assert not s.is_security_origin("Ubuntu:22.04/jammy-updates")
print("ok")
"#;
    let mut cmd = Command::new(python());
    cmd.arg("-c").arg(script);
    broker_only_env(&mut cmd);
    let out = cmd.output().expect("run python");
    assert!(
        out.status.success() && out.stdout == b"ok\n",
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// pyproject.toml pins exactly the versions the tests run (tests/celery/requirements.txt),
/// and celery with its `redis` extra (kombu's Redis transport needs it).
#[test]
fn pyproject_pins_the_tested_celery_stack() {
    let root = crate::common::project_root();
    let pyproject =
        std::fs::read_to_string(root.join("templates/config-repo/pyproject.toml")).expect("read");
    let deps: Vec<String> = pyproject
        .split("dependencies = [")
        .nth(1)
        .map(|rest| {
            // The list ends at the first `]` that closes a line (`celery[redis]` has one).
            rest.lines()
                .take_while(|l| l.trim() != "]")
                .map(|l| l.trim().trim_end_matches(',').trim_matches('"').to_string())
                .filter(|d| !d.is_empty())
                .collect()
        })
        .expect("a dependencies list");
    assert!(
        deps.contains(&"celery[redis]==5.7.0".to_string()),
        "{deps:?}"
    );
    let strip_extras = |d: &str| match (d.find('['), d.find(']')) {
        (Some(a), Some(b)) if a < b => format!("{}{}", &d[..a], &d[b + 1..]),
        _ => d.to_string(),
    };
    let mut pinned: Vec<String> = deps.iter().map(|d| strip_extras(d)).collect();
    let reqs = std::fs::read_to_string(root.join("tests/celery/requirements.txt")).expect("read");
    let mut tested: Vec<String> = reqs
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(strip_extras)
        .collect();
    pinned.sort();
    tested.sort();
    assert_eq!(pinned, tested);
    assert!(pinned.iter().all(|d| d.contains("==")), "{pinned:?}");
}
