//! The host agent (`celeroot agent`): runs on each host, reads the host's worker
//! configuration from Redis, runs and supervises the Celery worker with exactly that
//! configuration, and heartbeats what really runs.
//!
//! Owns: the worker process (start, graceful restart on a configuration change, restart
//! with back-off when it dies, crash-loop detection), the heartbeat (docs/state.md), host
//! facts, and checking the running release's files against its checksum list.
//! Must not know: git, manifests, plans, or anything about other hosts. It reads one
//! hash (`worker:<host>`), writes its own heartbeat and listens on the `changes` channel,
//! which is all a per-host ACL user allows (`celeroot hosts credentials`).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::celery::BrokerUrl;
use crate::state::{Heartbeat, Keys, RedisUrl};

/// The agent's version, reported in heartbeats.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A worker that exits this many times within [`CRASH_WINDOW`] is crash-looping.
pub const CRASH_LIMIT: usize = 5;
pub const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// First restart delay after the worker died; doubled up to [`RESTART_MAX`].
pub const RESTART_BASE: Duration = Duration::from_secs(1);
pub const RESTART_MAX: Duration = Duration::from_secs(30);

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub cluster: String,
    pub redis: RedisUrl,
    /// The worker's broker (its own ACL user, `celeroot hosts credentials`, or a
    /// RabbitMQ URL); default: the agent's own Redis URL (a server without ACL users).
    pub broker: Option<BrokerUrl>,
    /// The worker's result backend; default: the broker, or the agent's own Redis URL
    /// when the broker is RabbitMQ.
    pub result_backend: Option<RedisUrl>,
    /// The credentials file `celeroot hosts credentials --install` writes; when it
    /// exists, its URLs take the place of the three above, and a change to it is picked
    /// up (rotation). Default: `<release_dir>/../shared/credentials.env`.
    pub credentials_file: Option<PathBuf>,
    /// The release the worker runs from (normally `<targetDir>/current`, a symlink).
    pub release_dir: PathBuf,
    /// The Celery app (`-A`).
    pub app: String,
    /// The celery program; default: `<release_dir>/.venv/bin/celery`, else `celery`.
    pub celery: Option<PathBuf>,
    /// Extra worker arguments, appended as given.
    pub worker_args: Vec<String>,
    pub heartbeat_interval: Duration,
    pub heartbeat_ttl: Duration,
    /// How often the worker is asked `celery inspect ping` (and how long after it
    /// started the first time).
    pub ping_interval: Duration,
    /// Configuration is re-read at least this often (besides change notifications).
    pub reread_interval: Duration,
    /// How long a worker gets to stop after SIGTERM before SIGKILL.
    pub stop_timeout: Duration,
}

impl Config {
    /// The worker's broker: `broker`, else the agent's own Redis URL.
    pub fn broker_url(&self) -> BrokerUrl {
        self.broker
            .clone()
            .unwrap_or_else(|| BrokerUrl::Redis(self.redis.clone()))
    }

    /// The worker's result backend: `result_backend`, else a Redis broker, else the
    /// agent's own Redis URL.
    pub fn result_backend_url(&self) -> &RedisUrl {
        self.result_backend
            .as_ref()
            .or_else(|| self.broker.as_ref().and_then(BrokerUrl::redis))
            .unwrap_or(&self.redis)
    }

    /// The credentials file: `credentials_file`, else `shared/credentials.env` beside
    /// the release directory.
    pub fn credentials_path(&self) -> Option<PathBuf> {
        self.credentials_file.clone().or_else(|| {
            self.release_dir
                .parent()
                .map(|t| t.join("shared").join(crate::state::acl::CREDENTIALS_FILE))
        })
    }

    /// This configuration with the URLs of the credentials file, when there is one, and
    /// the file's fingerprint (empty without a file). A URL of the file that does not
    /// parse is logged and left out.
    pub fn with_credentials_file(&self) -> (Config, String) {
        let Some(text) = self
            .credentials_path()
            .and_then(|p| std::fs::read_to_string(p).ok())
        else {
            return (self.clone(), String::new());
        };
        let mut out = self.clone();
        for (k, v) in crate::state::acl::parse_credentials_file(&text) {
            let parsed = if k == "CELEROOT_BROKER_URL" {
                BrokerUrl::parse(&v).map(|u| {
                    // On RabbitMQ the file's Redis user is the worker's result backend
                    // only: the broker stays the amqp:// URL of the agent's environment.
                    let keep_amqp = matches!(self.broker, Some(BrokerUrl::Amqp(_)))
                        && matches!(u, BrokerUrl::Redis(_));
                    if !keep_amqp {
                        out.broker = Some(u);
                    }
                })
            } else {
                RedisUrl::parse(&v).map(|url| {
                    if k == "CELEROOT_REDIS_URL" {
                        out.redis = url;
                    } else {
                        out.result_backend = Some(url);
                    }
                })
            };
            if let Err(e) = parsed {
                tracing::warn!(variable = %k, error = %e, "the credentials file holds an invalid URL; ignoring it");
            }
        }
        (out, crate::state::acl::fingerprint(&text))
    }
}

/// What the worker should run, from `worker:<host>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkerSpec {
    pub queues: Vec<String>,
    pub concurrency: Option<String>,
    pub max_tasks_per_child: Option<String>,
}

impl WorkerSpec {
    fn from_hash(m: &BTreeMap<String, String>) -> Option<WorkerSpec> {
        let queues: Vec<String> = serde_json::from_str(m.get("queues")?).ok()?;
        let nonempty = |k: &str| m.get(k).filter(|v| !v.is_empty()).cloned();
        Some(WorkerSpec {
            queues,
            concurrency: nonempty("concurrency"),
            max_tasks_per_child: nonempty("max_tasks_per_child"),
        })
    }
}

/// The celery program: `given`, else `<release_dir>/.venv/bin/celery`, else `celery` on
/// `PATH` (for the worker, its ping, and beat).
pub fn celery_program(given: Option<&Path>, release_dir: &Path) -> PathBuf {
    given.map_or_else(
        || {
            let venv = release_dir.join(".venv/bin/celery");
            if venv.is_file() {
                venv
            } else {
                PathBuf::from("celery")
            }
        },
        Path::to_path_buf,
    )
}

/// The worker's argv: program and arguments (no shell).
pub fn worker_command(cfg: &Config, spec: &WorkerSpec) -> (PathBuf, Vec<String>) {
    let program = celery_program(cfg.celery.as_deref(), &cfg.release_dir);
    let mut args = vec![
        "-A".to_string(),
        cfg.app.clone(),
        "worker".into(),
        "-Q".into(),
        spec.queues.join(","),
        "-n".into(),
        format!("{}@%h", cfg.host),
        // Task events: the run history (`celeroot runs`) is read from them.
        "-E".into(),
    ];
    if let Some(c) = &spec.concurrency {
        args.extend(["-c".into(), c.clone()]);
    }
    if let Some(m) = &spec.max_tasks_per_child {
        args.extend(["--max-tasks-per-child".into(), m.clone()]);
    }
    args.extend(cfg.worker_args.iter().cloned());
    (program, args)
}

/// The release the worker runs: the name `release_dir` points to (`r-...`), or its own
/// name when it is not a symlink.
pub fn current_release(release_dir: &Path) -> String {
    let target = std::fs::read_link(release_dir).unwrap_or_else(|_| release_dir.to_path_buf());
    target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// OS release, kernel, Python and uv versions of this host: the same script as
/// `celeroot hosts test-connection` runs over SSH, run locally.
pub fn host_facts() -> BTreeMap<String, String> {
    let out = Command::new("sh")
        .args(["-c", crate::deploy::facts::FACTS_SCRIPT])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let f = crate::deploy::facts::parse_facts(&out);
    BTreeMap::from([
        ("os".to_string(), f.os),
        ("kernel".to_string(), f.kernel),
        ("python".to_string(), f.python),
        ("uv".to_string(), f.uv),
    ])
}

/// Asks the kernel to send SIGTERM to the process `cmd` starts when this one dies, so a
/// killed supervisor (the agent, `celeroot beat`) leaves no orphan.
pub fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and only sets the child's parent-death signal.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// Stops a child: SIGTERM, then SIGKILL after `timeout`. `what` names it in the log.
pub fn terminate(mut child: Child, timeout: Duration, what: &str) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        if Instant::now() > deadline {
            tracing::warn!("{what} did not stop in time; killing it");
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Restarts of a supervised process (the agent's worker, `celeroot beat`'s beat): the
/// delay before the next start, doubling from [`RESTART_BASE`] up to [`RESTART_MAX`]
/// (reset after a [`CRASH_WINDOW`] of running), and crash-loop detection.
#[derive(Debug)]
pub struct Restarts {
    exits: VecDeque<Instant>,
    backoff: Duration,
    started_at: Option<Instant>,
    /// When to start the process again (`None`: at once).
    next_start: Option<Instant>,
}

impl Default for Restarts {
    fn default() -> Self {
        Restarts {
            exits: VecDeque::new(),
            backoff: RESTART_BASE,
            started_at: None,
            next_start: None,
        }
    }
}

impl Restarts {
    /// The process started now.
    pub fn started(&mut self) {
        self.started_at = Some(Instant::now());
    }

    /// The process exited (or failed to start) now: schedules the next start, and
    /// returns the status to report: `crash-looping` ([`CRASH_LIMIT`] exits within
    /// [`CRASH_WINDOW`]) or `restarting`.
    pub fn exited(&mut self) -> &'static str {
        let now = Instant::now();
        if self
            .started_at
            .is_some_and(|t| now.duration_since(t) > CRASH_WINDOW)
        {
            self.backoff = RESTART_BASE;
        }
        self.exits.push_back(now);
        while self
            .exits
            .front()
            .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
        {
            self.exits.pop_front();
        }
        self.next_start = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(RESTART_MAX);
        if self.exits.len() >= CRASH_LIMIT {
            "crash-looping"
        } else {
            "restarting"
        }
    }

    /// Whether a start is due now (and none is scheduled after it).
    pub fn start_due(&mut self, now: Instant) -> bool {
        if self.next_start.is_none_or(|t| now >= t) {
            self.next_start = None;
            true
        } else {
            false
        }
    }

    /// Start again at once (a stop that was asked for, not an exit).
    pub fn start_now(&mut self) {
        self.next_start = None;
    }

    /// When the next start is scheduled.
    pub fn next_start(&self) -> Option<Instant> {
        self.next_start
    }
}

/// The supervised worker.
struct Worker {
    child: Option<Child>,
    /// What the running worker was started with: configuration, release, credentials.
    running: Option<(WorkerSpec, String, String)>,
    restarts: Restarts,
    status: &'static str,
    reason: String,
}

impl Worker {
    fn new() -> Self {
        Worker {
            child: None,
            running: None,
            restarts: Restarts::default(),
            status: "stopped",
            reason: "starting".into(),
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn start(&mut self, cfg: &Config, spec: &WorkerSpec, release: &str, credentials: &str) {
        let (program, args) = worker_command(cfg, spec);
        let mut cmd = Command::new(&program);
        cmd.args(&args)
            .current_dir(&cfg.release_dir)
            .stdin(Stdio::null())
            // The worker gets its own credentials, never the agent's.
            .env_remove("CELEROOT_REDIS_URL")
            .envs(worker_env(cfg));
        die_with_parent(&mut cmd);
        match cmd.spawn() {
            Ok(child) => {
                tracing::info!(pid = child.id(), program = %program.display(), queues = %spec.queues.join(","), "worker started");
                self.child = Some(child);
                self.running = Some((spec.clone(), release.to_string(), credentials.to_string()));
                self.restarts.started();
                self.status = "running";
            }
            Err(e) => {
                self.reason = format!("cannot start {}: {e}", program.display());
                tracing::error!(reason = %self.reason, "worker not started");
                self.exited();
            }
        }
    }

    /// Records an exit (or a failed start) and schedules the next start.
    fn exited(&mut self) {
        self.child = None;
        self.running = None;
        self.status = self.restarts.exited();
    }

    /// Notices a worker that died.
    fn poll(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                self.reason = format!("the worker exited ({st})");
                tracing::warn!(reason = %self.reason, "worker died; restarting with back-off");
                self.exited();
            }
        }
    }

    /// SIGTERM, then SIGKILL after `timeout`.
    fn stop(&mut self, timeout: Duration) {
        if let Some(c) = self.child.take() {
            terminate(c, timeout, "the worker");
        }
        self.running = None;
        self.status = "stopped";
    }
}

/// A connection with short timeouts; `None` when Redis cannot be reached (callers retry).
/// On a Redis Cluster it goes to the node serving `cluster`'s keys (one hash tag, one
/// slot).
pub fn connect(url: &RedisUrl, cluster: &str) -> Option<redis::Connection> {
    let key = Keys::new(cluster).generation();
    let conn = url.open_for_key(&key, Duration::from_secs(3)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    conn.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    Some(conn)
}

/// Listens on the changes channel and raises `changed`; reconnects by itself.
fn listen(cfg: &Config, changed: &AtomicBool, own: &AtomicBool, agent: &AtomicBool) {
    let stopped = || own.load(Ordering::SeqCst) || agent.load(Ordering::SeqCst);
    let channel = Keys::new(&cfg.cluster).changes();
    while !stopped() {
        let Some(mut conn) = connect(&cfg.redis, &cfg.cluster) else {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
        let mut ps = conn.as_pubsub();
        if ps.subscribe(&channel).is_err() {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        // A reconnect may have missed a message: re-read once.
        changed.store(true, Ordering::SeqCst);
        while !stopped() {
            match ps.get_message() {
                Ok(_) => changed.store(true, Ordering::SeqCst),
                Err(e) if e.is_timeout() => {}
                Err(_) => break,
            }
        }
    }
}

/// Runs the agent until `stop` is raised; then stops the worker gracefully.
pub fn run(given: &Config, stop: &Arc<AtomicBool>) {
    let keys = Keys::new(&given.cluster);
    let changed = Arc::new(AtomicBool::new(true));
    let (mut cfg, mut credentials) = given.with_credentials_file();
    let mut listener = Listener::start(&cfg, &changed, stop);
    let mut next_credentials = Instant::now() + given.reread_interval;
    let facts = host_facts();
    let mut conn: Option<redis::Connection> = None;
    let mut spec: Option<WorkerSpec> = None;
    let mut worker = Worker::new();
    let mut next_read = Instant::now();
    let mut next_beat = Instant::now();
    let mut checks = Checks::default();
    let mut next_verify = Instant::now();
    let mut modified: Vec<String> = Vec::new();
    let mut verified_release = String::new();
    tracing::info!(host = %cfg.host, cluster = %cfg.cluster, release_dir = %cfg.release_dir.display(), "celeroot agent started");

    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        // 0. Credentials: a rotated file means new connections, and a worker restarted
        //    with the new broker URL (the old password stays valid until then).
        if now >= next_credentials {
            next_credentials = now + given.reread_interval;
            let (fresh, fp) = given.with_credentials_file();
            if fp != credentials {
                tracing::info!(from = %credentials, to = %fp, "the credentials file changed");
                cfg = fresh;
                credentials = fp;
                conn = None;
                listener.stop();
                listener = Listener::start(&cfg, &changed, stop);
            }
        }
        // 1. Configuration: on a notification, or every reread interval.
        if changed.swap(false, Ordering::SeqCst) || now >= next_read {
            next_read = now + cfg.reread_interval;
            if conn.is_none() {
                conn = connect(&cfg.redis, &cfg.cluster);
            }
            if let Some(c) = conn.as_mut() {
                let got: redis::RedisResult<BTreeMap<String, String>> =
                    redis::cmd("HGETALL").arg(keys.worker(&cfg.host)).query(c);
                match got {
                    Ok(m) if m.is_empty() => {
                        if spec.is_some() {
                            tracing::warn!("this host has no configuration in Redis any more; stopping the worker");
                        }
                        spec = None;
                    }
                    Ok(m) => spec = WorkerSpec::from_hash(&m),
                    Err(e) => {
                        tracing::warn!(error = %cfg.redis.scrub(&e.to_string()), "cannot read the configuration; keeping the last one");
                        conn = None;
                    }
                }
            }
        }
        // 2. The worker matches the configuration and the current release.
        worker.poll();
        let release = current_release(&cfg.release_dir);
        match &spec {
            None => {
                if worker.child.is_some() {
                    worker.stop(cfg.stop_timeout);
                }
                worker.reason = "no configuration for this host in Redis".into();
            }
            Some(want) => {
                let matches = worker
                    .running
                    .as_ref()
                    .is_some_and(|(s, r, c)| s == want && *r == release && *c == credentials);
                if worker.child.is_some() && !matches {
                    let why = match &worker.running {
                        Some((s, _, _)) if s != want => format!(
                            "configuration changed (queues {}, concurrency {}, max tasks per child {})",
                            want.queues.join(","),
                            want.concurrency.as_deref().unwrap_or("default"),
                            want.max_tasks_per_child.as_deref().unwrap_or("none")
                        ),
                        Some((_, r, _)) if *r != release => {
                            format!("release changed to {release}")
                        }
                        _ => "credentials rotated".to_string(),
                    };
                    tracing::info!(reason = %why, "restarting the worker");
                    worker.status = "restarting";
                    worker.stop(cfg.stop_timeout);
                    worker.reason = why;
                    worker.restarts.start_now();
                }
                if worker.child.is_none() && worker.restarts.start_due(now) {
                    worker.start(&cfg, want, &release, &credentials);
                    if worker.child.is_some() {
                        checks.worker_started(&cfg);
                    }
                }
            }
        }
        // 3. The release's files, against its checksum list (on release changes and
        //    every minute).
        if release != verified_release || now >= next_verify {
            next_verify = now + Duration::from_secs(60);
            verified_release = release.clone();
            modified =
                crate::deploy::release::verify_checksums(&cfg.release_dir).unwrap_or_default();
            if !modified.is_empty() {
                tracing::warn!(
                    count = modified.len(),
                    "files of the running release were modified locally"
                );
            }
        }
        // 4. The worker answers, and its broker does.
        checks.maybe_ping(&cfg, worker.child.is_some());
        // 5. Heartbeat.
        if now >= next_beat {
            next_beat = now + cfg.heartbeat_interval;
            let broker = checks.broker(&cfg).to_string();
            let (ping, ping_at) = if worker.child.is_some() {
                checks.ping()
            } else {
                (String::new(), 0)
            };
            let hb = Heartbeat {
                ts: u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0),
                release: release.clone(),
                queues: worker
                    .running
                    .as_ref()
                    .map(|(s, _, _)| s.queues.clone())
                    .unwrap_or_default(),
                status: if worker.child.is_some() {
                    "running"
                } else {
                    worker.status
                }
                .to_string(),
                pid: worker.pid(),
                agent_version: AGENT_VERSION.to_string(),
                restart_reason: worker.reason.clone(),
                facts: facts.clone(),
                modified: modified
                    .iter()
                    .take(crate::state::heartbeat::MODIFIED_LISTED)
                    .cloned()
                    .collect(),
                modified_count: modified.len() as u64,
                credentials: credentials.clone(),
                broker,
                ping,
                ping_at,
            };
            if conn.is_none() {
                conn = connect(&cfg.redis, &cfg.cluster);
            }
            if let Some(c) = conn.as_mut() {
                if let Err(e) = write_heartbeat(c, &keys, &cfg.host, &hb, cfg.heartbeat_ttl) {
                    tracing::warn!(error = %cfg.redis.scrub(&e.to_string()), "cannot write the heartbeat; retrying");
                    conn = None;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!("stopping the worker");
    worker.stop(cfg.stop_timeout);
    worker.reason = "the agent stopped".into();
    if let Some(c) = conn.as_mut() {
        let hb = Heartbeat {
            ts: u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0),
            release: current_release(&cfg.release_dir),
            queues: Vec::new(),
            status: "stopped".into(),
            pid: None,
            agent_version: AGENT_VERSION.to_string(),
            restart_reason: worker.reason.clone(),
            facts,
            modified: Vec::new(),
            modified_count: 0,
            credentials: credentials.clone(),
            broker: String::new(),
            ping: String::new(),
            ping_at: 0,
        };
        let _ = write_heartbeat(c, &keys, &cfg.host, &hb, cfg.heartbeat_ttl);
    }
    listener.stop();
}

/// How long `celery inspect ping` waits for the worker's reply.
pub const PING_TIMEOUT_SECS: u64 = 5;

/// What `celery inspect ping` said of the worker.
fn ping_result(status: Option<i32>, stdout: &str, stderr: &str) -> &'static str {
    let said = format!("{stdout}\n{stderr}");
    if status == Some(0) && said.contains("pong") {
        "ok"
    } else if said.contains("No nodes replied") || status.is_none() {
        "no-reply"
    } else if said.contains("OperationalError")
        || said.contains("Connection refused")
        || said.contains("Error 111")
        || said.contains("NOAUTH")
        || said.contains("WRONGPASS")
    {
        "broker-unreachable"
    } else {
        "failed"
    }
}

/// The argv of `celery inspect ping` for this host's worker (its node name is
/// `<host>@<hostname>`, as `-n <host>@%h` makes it).
pub fn ping_command(cfg: &Config) -> (PathBuf, Vec<String>) {
    let program = celery_program(cfg.celery.as_deref(), &cfg.release_dir);
    let node = format!("{}@{}", cfg.host, node_hostname());
    let args = [
        "-A",
        cfg.app.as_str(),
        "inspect",
        "ping",
        "--timeout",
        &PING_TIMEOUT_SECS.to_string(),
        "-d",
        &node,
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    (program, args)
}

/// The host name Celery's `%h` expands to (Python's `socket.gethostname()`).
fn node_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return crate::state::events::hostname();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Pings the worker on a thread (`celery inspect ping` takes a second or more), and
/// checks the worker's broker URL answers; both results go into the heartbeat.
#[derive(Default)]
struct Checks {
    /// `ok`, `no-reply`, `broker-unreachable`, `failed`; `pending` until the first reply.
    ping: Arc<std::sync::Mutex<(String, u64)>>,
    running: Arc<AtomicBool>,
    next_ping: Option<Instant>,
    broker: Option<redis::Connection>,
    broker_retry_at: Option<Instant>,
    /// An AMQP broker's last check (a connect and close), and when it was made.
    amqp_checked: Option<(Instant, bool)>,
}

impl Checks {
    /// A new worker started: the first ping waits one interval (capped at 10 s).
    fn worker_started(&mut self, cfg: &Config) {
        self.set_ping("pending");
        self.next_ping = Some(Instant::now() + cfg.ping_interval.min(Duration::from_secs(10)));
    }

    fn set_ping(&self, result: &str) {
        let mut p = match self.ping.lock() {
            Ok(p) => p,
            Err(e) => e.into_inner(),
        };
        *p = (
            result.to_string(),
            u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0),
        );
    }

    fn ping(&self) -> (String, u64) {
        match self.ping.lock() {
            Ok(p) => p.clone(),
            Err(e) => e.into_inner().clone(),
        }
    }

    /// Starts a ping when one is due and none runs.
    fn maybe_ping(&mut self, cfg: &Config, worker_running: bool) {
        if !worker_running {
            self.next_ping = None;
            return;
        }
        let now = Instant::now();
        if self.next_ping.is_none_or(|t| now < t) || self.running.load(Ordering::SeqCst) {
            return;
        }
        self.next_ping = Some(now + cfg.ping_interval);
        self.running.store(true, Ordering::SeqCst);
        let (program, args) = ping_command(cfg);
        let env = worker_env(cfg);
        let dir = cfg.release_dir.clone();
        let (ping, running) = (self.ping.clone(), self.running.clone());
        std::thread::spawn(move || {
            let mut cmd = Command::new(&program);
            cmd.args(&args)
                .current_dir(&dir)
                .env_remove("CELEROOT_REDIS_URL")
                .envs(env);
            let timeout = Duration::from_secs(PING_TIMEOUT_SECS + 25);
            let (status, stdout, stderr) = match crate::deploy::ssh::run_command(cmd, None, timeout)
            {
                Ok(o) => (o.status, o.stdout, o.stderr),
                Err(e) => (None, String::new(), e.to_string()),
            };
            let r = ping_result(status, &stdout, &stderr);
            if r != "ok" {
                tracing::warn!(result = r, stderr = %stderr.lines().last().unwrap_or_default(), "celery inspect ping: the worker did not answer");
            }
            let mut p = match ping.lock() {
                Ok(p) => p,
                Err(e) => e.into_inner(),
            };
            *p = (
                r.to_string(),
                u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0),
            );
            running.store(false, Ordering::SeqCst);
        });
    }

    /// `ok` when the worker's broker answers `PING` (with the worker's own user; on
    /// RabbitMQ: accepts a connection), else `unreachable`.
    /// A broker that could not be reached is tried again only after a ping interval, so
    /// a black-holed address (a 3 s connect timeout) does not stall every heartbeat.
    fn broker(&mut self, cfg: &Config) -> &'static str {
        let now = Instant::now();
        let redis_url = match cfg.broker_url() {
            BrokerUrl::Redis(u) => u,
            BrokerUrl::Amqp(u) => {
                // RabbitMQ has no cheap PING on an idle connection: connect and close,
                // at most once per ping interval.
                let due = self
                    .amqp_checked
                    .is_none_or(|(at, _)| now.duration_since(at) >= cfg.ping_interval);
                if due {
                    let ok = match crate::celery::amqp::check(&u) {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!(error = %e, "the worker's broker does not answer");
                            false
                        }
                    };
                    self.amqp_checked = Some((now, ok));
                }
                return match self.amqp_checked {
                    Some((_, true)) => "ok",
                    _ => "unreachable",
                };
            }
        };
        if self.broker.is_none() && self.broker_retry_at.is_none_or(|t| now >= t) {
            self.broker = connect(&redis_url, &cfg.cluster);
        }
        let ok = self
            .broker
            .as_mut()
            .is_some_and(|c| redis::cmd("PING").query::<String>(c).is_ok());
        if ok {
            "ok"
        } else {
            if self.broker.take().is_some() || self.broker_retry_at.is_none_or(|t| now >= t) {
                self.broker_retry_at = Some(now + cfg.ping_interval);
            }
            "unreachable"
        }
    }
}

/// The environment the worker (and its ping) gets on top of the agent's.
fn worker_env(cfg: &Config) -> Vec<(String, String)> {
    let broker = cfg.broker_url();
    vec![
        ("CELEROOT_HOST".into(), cfg.host.clone()),
        ("CELEROOT_CLUSTER".into(), cfg.cluster.clone()),
        ("CELEROOT_BROKER_URL".into(), broker.expose().to_string()),
        (
            "CELEROOT_RESULT_BACKEND".into(),
            cfg.result_backend_url().expose().to_string(),
        ),
    ]
}

/// The thread listening for change notifications, with its own stop flag so it can be
/// replaced when the credentials change.
struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    fn start(cfg: &Config, changed: &Arc<AtomicBool>, agent_stop: &Arc<AtomicBool>) -> Listener {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (cfg, changed, stop, agent_stop) = (
                cfg.clone(),
                changed.clone(),
                stop.clone(),
                agent_stop.clone(),
            );
            std::thread::spawn(move || listen(&cfg, &changed, &stop, &agent_stop))
        };
        Listener {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn write_heartbeat(
    c: &mut redis::Connection,
    keys: &Keys,
    host: &str,
    hb: &Heartbeat,
    ttl: Duration,
) -> redis::RedisResult<()> {
    let key = keys.heartbeat(host);
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("HSET")
        .arg(&key)
        .arg(hb.to_fields())
        .ignore()
        .cmd("EXPIRE")
        .arg(&key)
        .arg(ttl.as_secs().max(1))
        .ignore();
    pipe.query(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            host: "web01".into(),
            cluster: "prod".into(),
            redis: RedisUrl::parse("redis://127.0.0.1:1/0").expect("url"),
            broker: None,
            result_backend: None,
            credentials_file: None,
            release_dir: PathBuf::from("/nonexistent/current"),
            app: "tasks.app".into(),
            celery: None,
            worker_args: vec!["--without-gossip".into()],
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_ttl: Duration::from_secs(30),
            ping_interval: Duration::from_secs(30),
            reread_interval: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn a_credentials_file_keeps_a_rabbitmq_broker_and_gives_the_results_its_redis_user() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("credentials.env");
        std::fs::write(
            &file,
            crate::state::acl::credentials_file("redis://a:pa@h:6379/0", "redis://w:pw@h:6379/0"),
        )
        .expect("write");
        let mut c = cfg();
        c.credentials_file = Some(file);
        c.broker = Some(BrokerUrl::parse("amqp://u:p@mq:5672//").expect("url"));
        let (got, _) = c.with_credentials_file();
        assert_eq!(got.broker_url().transport(), "amqp");
        assert_eq!(
            got.result_backend_url().redacted(),
            "redis://w:***@h:6379/0"
        );
        assert_eq!(got.redis.redacted(), "redis://a:***@h:6379/0");
        // On Redis the file's worker user is the broker too.
        c.broker = None;
        let (got, _) = c.with_credentials_file();
        assert_eq!(got.broker_url().redacted(), "redis://w:***@h:6379/0");
    }

    #[test]
    fn the_worker_command_follows_the_configuration() {
        let spec = WorkerSpec::from_hash(&BTreeMap::from([
            (
                "queues".to_string(),
                r#"["web","celeroot.host.web01"]"#.to_string(),
            ),
            ("concurrency".to_string(), "4".to_string()),
            ("max_tasks_per_child".to_string(), String::new()),
        ]))
        .expect("spec");
        let (program, args) = worker_command(&cfg(), &spec);
        assert_eq!(program, PathBuf::from("celery"));
        assert_eq!(
            args,
            [
                "-A",
                "tasks.app",
                "worker",
                "-Q",
                "web,celeroot.host.web01",
                "-n",
                "web01@%h",
                "-E",
                "-c",
                "4",
                "--without-gossip"
            ]
        );
        assert_eq!(WorkerSpec::from_hash(&BTreeMap::new()), None);
    }

    #[test]
    fn crash_loops_are_detected_and_backoff_grows() {
        let mut w = Worker::new();
        let mut delays = Vec::new();
        for _ in 0..CRASH_LIMIT {
            let before = Instant::now();
            w.exited();
            delays.push(
                w.restarts
                    .next_start()
                    .map(|t| t.duration_since(before))
                    .unwrap_or_default(),
            );
        }
        assert_eq!(w.status, "crash-looping");
        assert!(delays.windows(2).all(|p| p[1] >= p[0]), "{delays:?}");
        assert!(delays
            .iter()
            .all(|d| *d <= RESTART_MAX + Duration::from_millis(50)));
    }
}
