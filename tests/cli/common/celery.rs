//! Real Celery processes (worker, beat) from the pinned virtualenv that scripts/test.sh
//! makes (`CELEROOT_PYTHON`). The app is the worker scaffold `celeroot init` writes
//! (templates/config-repo/tasks), configured through its documented environment.
//! A missing environment fails the test loudly.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn python() -> PathBuf {
    match std::env::var_os("CELEROOT_PYTHON") {
        Some(p) if Path::new(&p).is_file() => PathBuf::from(p),
        _ => panic!("CELEROOT_PYTHON is not set to a Python with celery, celery-redbeat and redis: run ./scripts/test.sh, which creates it"),
    }
}

/// The directory holding the scaffold's `tasks` package.
pub fn app_dir() -> PathBuf {
    crate::common::project_root().join("templates/config-repo")
}

/// A Celery process; SIGTERM then SIGKILL on drop. Its output goes to a log file.
pub struct CeleryProcess {
    child: Option<Child>,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl CeleryProcess {
    fn spawn(args: &[&str], env: &[(&str, String)]) -> CeleryProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("celery.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut cmd = Command::new(python());
        cmd.arg("-m")
            .arg("celery")
            .arg("-A")
            .arg("tasks.app")
            .args(args);
        cmd.current_dir(app_dir())
            .env(
                "PYTHONPATH",
                format!(
                    "{}:{}",
                    app_dir().display(),
                    crate::common::project_root().join("tests/celery").display()
                ),
            )
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn celery");
        CeleryProcess {
            child: Some(child),
            log,
            _dir: dir,
        }
    }

    /// A worker consuming `queues`, named `name@<hostname>`, one process (solo pool).
    pub fn worker(env: &[(&str, String)], queues: &[&str], name: &str) -> CeleryProcess {
        Self::worker_in_pool(env, queues, name, &["--pool", "solo"])
    }

    /// A worker with one prefork child: its main process keeps sending events while a
    /// task runs (a solo worker sends a task's events only after the task).
    pub fn prefork_worker(env: &[(&str, String)], queues: &[&str], name: &str) -> CeleryProcess {
        Self::worker_in_pool(env, queues, name, &["--pool", "prefork", "-c", "1"])
    }

    fn worker_in_pool(
        env: &[(&str, String)],
        queues: &[&str],
        name: &str,
        pool: &[&str],
    ) -> CeleryProcess {
        let q = queues.join(",");
        let n = format!("{name}@%h");
        let mut args = vec!["worker", "-Q", &q, "-n", &n];
        args.extend_from_slice(pool);
        args.extend(["--without-gossip", "--without-mingle", "-l", "info"]);
        let p = Self::spawn(&args, env);
        p.wait_for_log("ready.", Duration::from_secs(30));
        p
    }

    /// Celery Beat with the RedBeat scheduler, waking at least every `max_interval` seconds.
    pub fn beat(env: &[(&str, String)], max_interval: u32) -> CeleryProcess {
        let s = max_interval.to_string();
        let dir = tempfile::tempdir().expect("temp dir");
        let schedule = dir.path().join("beat-schedule").display().to_string();
        let p = Self::spawn(
            &[
                "beat",
                "-S",
                "redbeat.RedBeatScheduler",
                "--max-interval",
                &s,
                "-s",
                &schedule,
                "-l",
                "debug",
            ],
            env,
        );
        std::mem::forget(dir);
        p.wait_for_log("beat: Starting", Duration::from_secs(30));
        p
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; panics with the log on timeout or exit.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "celery did not log {needle:?} within {timeout:?}:\n{}",
            self.log_text()
        );
    }
}

impl Drop for CeleryProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id().to_string();
            let _ = Command::new("kill").arg("-TERM").arg(&pid).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The environment the worker scaffold reads (docs/celery.md), for one host.
pub fn worker_env(
    redis_url: &str,
    cluster: &str,
    host: &str,
    timezone: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("CELEROOT_BROKER_URL", redis_url.to_string()),
        ("CELEROOT_RESULT_BACKEND", redis_url.to_string()),
        ("CELEROOT_CLUSTER", cluster.to_string()),
        ("CELEROOT_HOST", host.to_string()),
        ("CELEROOT_TIMEZONE", timezone.to_string()),
        ("CELEROOT_IMPORTS", "testtasks".to_string()),
    ]
}
