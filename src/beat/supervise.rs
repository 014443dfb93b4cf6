//! `celeroot beat`: runs and supervises a real `celery beat -S redbeat.RedBeatScheduler`
//! for one cluster, and heartbeats what it does.
//!
//! Several instances may run at once (on several machines): RedBeat's lock
//! (`celeroot:{<cluster>}:redbeat::lock`, held for the lock timeout and extended every
//! tick) lets one send while the others wait for it. The supervisor learns which it is
//! from beat's own log (`beat: Acquired lock`), restarts a beat that exits with back-off
//! ([`crate::agent::Restarts`]), writes `celeroot:{<cluster>}:beat:<id>` with a TTL, and
//! stops when that heartbeat carries a stop request (`celeroot beat stop`).
//! Must not know: manifests, git, output formats.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::agent::Restarts;
use crate::celery::BrokerUrl;
use crate::state::{BeatHeartbeat, Keys, RedisUrl};

/// How `celeroot beat` runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// This instance's name in its heartbeat.
    pub id: String,
    pub cluster: String,
    /// Where the heartbeat goes (the live state's Redis).
    pub redis: RedisUrl,
    /// Beat's broker. On Redis it is also where RedBeat keeps the schedule: the live
    /// state's database, perhaps through another user. Default: `redis`.
    pub broker: Option<BrokerUrl>,
    /// The cluster's time zone for beat (`CELEROOT_TIMEZONE`), when known.
    pub timezone: Option<String>,
    /// The Celery app (`-A`).
    pub app: String,
    /// The celery program; default `<workdir>/.venv/bin/celery`, else `celery`.
    pub celery: Option<PathBuf>,
    /// Where beat runs (the release directory).
    pub workdir: PathBuf,
    /// Beat's `--max-interval`: the longest it sleeps between ticks, and how often a
    /// waiting instance tries the lock.
    pub max_interval: Duration,
    /// RedBeat's lock timeout (`CELEROOT_BEAT_LOCK_TIMEOUT`, which the scaffold's app
    /// reads; an app that does not gets RedBeat's default, 5 × max interval).
    pub lock_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub heartbeat_ttl: Duration,
    /// How long beat gets to stop (and release the lock) after SIGTERM.
    pub stop_timeout: Duration,
    /// Extra `celery beat` arguments, appended as given.
    pub beat_args: Vec<String>,
}

impl Config {
    fn broker_url(&self) -> BrokerUrl {
        self.broker
            .clone()
            .unwrap_or_else(|| BrokerUrl::Redis(self.redis.clone()))
    }

    /// Where RedBeat reads the schedule (and where beat's results would go): a Redis
    /// broker's URL (the live state's database, perhaps as another user), except when the
    /// live state is on a Redis Cluster, which cannot be the broker, or when the broker
    /// is RabbitMQ: then the live state's Redis itself.
    fn redbeat_url(&self) -> &RedisUrl {
        match self.broker.as_ref().and_then(BrokerUrl::redis) {
            Some(b) if self.redis.cluster().is_none() => b,
            _ => &self.redis,
        }
    }
}

/// Why the supervisor returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// SIGTERM or SIGINT.
    Signal,
    /// `celeroot beat stop`.
    Requested,
}

/// `celery beat`'s argv.
pub fn beat_command(cfg: &Config) -> (PathBuf, Vec<String>) {
    let program = crate::agent::celery_program(cfg.celery.as_deref(), &cfg.workdir);
    let mut args: Vec<String> = [
        "-A",
        &cfg.app,
        "beat",
        "-S",
        "redbeat.RedBeatScheduler",
        "--max-interval",
        &cfg.max_interval.as_secs().max(1).to_string(),
        "-l",
        "info",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    args.extend(cfg.beat_args.iter().cloned());
    (program, args)
}

/// What the beat's log told us.
#[derive(Debug, Default)]
struct Seen {
    /// `beat: Acquired lock` since the last start.
    active_since: Option<u64>,
    /// From the banner's `. lock -> <key> ... (<n>s)`.
    lock_timeout: Option<u64>,
}

/// Reads one of beat's output streams, passing every line on to our stderr and noting
/// what the supervisor needs.
fn watch_output(stream: impl Read, seen: &Arc<Mutex<Seen>>) {
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        eprintln!("{line}");
        let mut s = match seen.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        if line.contains("beat: Acquired lock") {
            s.active_since = Some(unix_now());
        } else if let Some(rest) = line.split(". lock -> ").nth(1) {
            s.lock_timeout = rest
                .rsplit_once('(')
                .and_then(|(_, t)| t.trim_end_matches([')', 's', ' ']).parse::<f64>().ok())
                .map(|t| t as u64);
        }
    }
}

fn unix_now() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0)
}

/// The supervised beat.
struct Beat {
    child: Option<Child>,
    seen: Arc<Mutex<Seen>>,
    restarts: Restarts,
    count: u64,
    /// This machine's name, for the heartbeat (read once).
    host: String,
    status: &'static str,
    reason: String,
}

impl Beat {
    fn start(&mut self, cfg: &Config) {
        let (program, args) = beat_command(cfg);
        let broker = cfg.broker_url().expose().to_string();
        let redbeat = cfg.redbeat_url().expose().to_string();
        // Beat stores no results, but the app needs a backend: a Redis broker, else (on
        // RabbitMQ) the live state's Redis.
        let backend = match cfg.broker.as_ref().and_then(BrokerUrl::redis) {
            Some(b) => b.expose().to_string(),
            None => cfg.redis.expose().to_string(),
        };
        let mut cmd = Command::new(&program);
        cmd.args(&args)
            .current_dir(&cfg.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("CELEROOT_REDIS_URL")
            .env("CELEROOT_CLUSTER", &cfg.cluster)
            .env("CELEROOT_BROKER_URL", &broker)
            .env("CELEROOT_RESULT_BACKEND", &backend)
            .env("CELEROOT_REDBEAT_URL", &redbeat)
            .env(
                "CELEROOT_BEAT_LOCK_TIMEOUT",
                cfg.lock_timeout.as_secs().max(1).to_string(),
            )
            .env("PYTHONUNBUFFERED", "1");
        if let Some(tz) = &cfg.timezone {
            cmd.env("CELEROOT_TIMEZONE", tz);
        }
        crate::agent::die_with_parent(&mut cmd);
        match cmd.spawn() {
            Ok(mut child) => {
                tracing::info!(pid = child.id(), program = %program.display(), "celery beat started");
                self.seen = Arc::new(Mutex::new(Seen::default()));
                for stream in [
                    child
                        .stdout
                        .take()
                        .map(|s| Box::new(s) as Box<dyn Read + Send>),
                    child
                        .stderr
                        .take()
                        .map(|s| Box::new(s) as Box<dyn Read + Send>),
                ]
                .into_iter()
                .flatten()
                {
                    let seen = self.seen.clone();
                    std::thread::spawn(move || watch_output(stream, &seen));
                }
                self.child = Some(child);
                self.restarts.started();
                self.status = "starting";
            }
            Err(e) => {
                self.reason = format!("cannot start {}: {e}", program.display());
                tracing::error!(reason = %self.reason, "celery beat not started");
                self.exited();
            }
        }
    }

    fn exited(&mut self) {
        self.child = None;
        self.count += 1;
        self.status = self.restarts.exited();
    }

    fn poll(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                self.reason = format!("celery beat exited ({st})");
                tracing::warn!(reason = %self.reason, "restarting celery beat with back-off");
                self.exited();
                return;
            }
            let active = self.seen().active_since.is_some();
            self.status = if active { "active" } else { "standby" };
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        match self.seen.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }

    /// SIGTERM (beat releases the lock), then SIGKILL after `timeout`.
    fn stop(&mut self, timeout: Duration) {
        if let Some(c) = self.child.take() {
            crate::agent::terminate(c, timeout, "celery beat");
        }
        self.status = "stopped";
    }

    fn heartbeat(&self, cfg: &Config) -> BeatHeartbeat {
        let seen = self.seen();
        BeatHeartbeat {
            id: cfg.id.clone(),
            ts: unix_now(),
            host: self.host.clone(),
            pid: std::process::id(),
            beat_pid: self.child.as_ref().map(Child::id),
            status: self.status.to_string(),
            active_since: if self.status == "active" {
                seen.active_since.unwrap_or(0)
            } else {
                0
            },
            restarts: self.count,
            lock_timeout: seen.lock_timeout.unwrap_or(0),
            max_interval: cfg.max_interval.as_secs(),
            version: crate::agent::AGENT_VERSION.to_string(),
            reason: self.reason.clone(),
        }
    }
}

/// Writes the heartbeat and reads a stop request, in one round trip.
fn beat_heartbeat(
    conn: &mut redis::Connection,
    key: &str,
    hb: &BeatHeartbeat,
    ttl: Duration,
) -> redis::RedisResult<bool> {
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("HSET")
        .arg(key)
        .arg(hb.to_fields())
        .ignore()
        .cmd("EXPIRE")
        .arg(key)
        .arg(ttl.as_secs().max(1))
        .ignore()
        .cmd("HGET")
        .arg(key)
        .arg("stop");
    let (stop,): (Option<String>,) = pipe.query(conn)?;
    Ok(stop.as_deref() == Some("1"))
}

/// Runs beat until `stop` is raised or a stop is requested; then stops it gracefully.
pub fn run(cfg: &Config, stop: &AtomicBool) -> Stopped {
    let key = Keys::new(&cfg.cluster).beat(&cfg.id);
    let mut beat = Beat {
        child: None,
        seen: Arc::new(Mutex::new(Seen::default())),
        restarts: Restarts::default(),
        count: 0,
        host: crate::state::events::hostname(),
        status: "starting",
        reason: String::new(),
    };
    let mut conn: Option<redis::Connection> = None;
    let mut next_beat = Instant::now();
    tracing::info!(id = %cfg.id, cluster = %cfg.cluster, "celeroot beat started");
    let why = loop {
        if stop.load(Ordering::SeqCst) {
            break Stopped::Signal;
        }
        let now = Instant::now();
        beat.poll();
        if beat.child.is_none() && beat.restarts.start_due(now) {
            beat.start(cfg);
        }
        if now >= next_beat {
            next_beat = now + cfg.heartbeat_interval;
            if conn.is_none() {
                conn = crate::agent::connect(&cfg.redis, &cfg.cluster);
            }
            if let Some(c) = conn.as_mut() {
                match beat_heartbeat(c, &key, &beat.heartbeat(cfg), cfg.heartbeat_ttl) {
                    Ok(true) => break Stopped::Requested,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %cfg.redis.scrub(&e.to_string()), "cannot write the beat heartbeat; retrying");
                        conn = None;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    tracing::info!(reason = ?why, "stopping celery beat");
    beat.stop(cfg.stop_timeout);
    beat.reason = match why {
        Stopped::Signal => "celeroot beat was stopped".into(),
        Stopped::Requested => "stopped by `celeroot beat stop`".into(),
    };
    if let Some(c) = conn.as_mut() {
        // The last word: stopped (the stop request is cleared), until the TTL ends it.
        let mut hb = beat.heartbeat(cfg);
        hb.beat_pid = None;
        let _ = redis::cmd("HDEL").arg(&key).arg("stop").query::<i64>(c);
        let _ = beat_heartbeat(c, &key, &hb, cfg.heartbeat_ttl);
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_and_the_lock_message_are_read() {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let log = "    . lock -> `celeroot:{lab}:redbeat::lock` 15.00 seconds (15s)\n[2026-12-01 00:00:00,000: INFO/MainProcess] beat: Acquired lock\n";
        watch_output(log.as_bytes(), &seen);
        let s = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        assert_eq!(s.lock_timeout, Some(15));
        assert!(s.active_since.is_some());
    }
}
