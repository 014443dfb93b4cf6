//! The run collector: subscribes to Celery's task events on the broker (Redis pub/sub,
//! or a queue bound to RabbitMQ's `celeryev` exchange), keeps the events of schedule
//! runs, and writes them in batches (`celeroot runs collect`, and a thread of
//! `celeroot watch`).
//!
//! Pub/sub delivers only what is published while subscribed, so a collector records
//! since when it has listened ([`Store::collector_alive`]): a run due while none
//! listened is "unknown", never "missed". Several collectors (daemon replicas) may run:
//! the record script is idempotent, so the same event written twice changes nothing.
//!
//! Must not know: the CLI, the daemon's leadership, output formats.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::celery::AmqpUrl;
use crate::desired::RunRetention;
use crate::state::runs::{entry_of_root_id, RunUpdate};
use crate::state::{RedisUrl, StateError, Store};

use super::event;

/// Task ids of open runs remembered at most (oldest forgotten first): bounds memory when
/// runs never finish (a lost worker) or their final events were missed.
pub const MAX_OPEN_RUNS: usize = 200_000;
/// Updates written in one round trip at most.
const BATCH: usize = 500;
/// How long an update may wait for its batch.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How often the collector re-reads the retention and renews its presence.
const REFRESH_EVERY: Duration = Duration::from_secs(10);
/// How often the latest runs of deleted schedule targets are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Why the collector stopped.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot subscribe to the event channels at {url}: {reason}")]
    Subscribe { url: String, reason: String },
}

/// Counters a collector keeps: the daemon exports them on `/metrics`
/// (`celeroot_run_events_total`, ...), `runs collect` logs them when it stops.
#[derive(Debug, Default)]
pub struct Stats {
    /// Task events decoded.
    pub events: Counter,
    /// Updates written (events of schedule runs).
    pub recorded: Counter,
    /// Envelopes that did not decode.
    pub malformed: Counter,
    /// Open runs remembered now.
    pub open: Gauge,
}

/// The task ids of open runs, by entry; bounded, oldest forgotten first.
#[derive(Debug, Default)]
pub struct OpenRuns {
    by_id: HashMap<String, String>,
    order: VecDeque<String>,
}

impl OpenRuns {
    pub fn insert(&mut self, id: &str, entry: &str) {
        if self
            .by_id
            .insert(id.to_string(), entry.to_string())
            .is_none()
        {
            self.order.push_back(id.to_string());
        }
        while self.by_id.len() > MAX_OPEN_RUNS {
            match self.order.pop_front() {
                Some(old) => {
                    self.by_id.remove(&old);
                }
                None => break,
            }
        }
        // Ids already removed leave stale slots in `order`: compact when they dominate.
        if self.order.len() > 2 * MAX_OPEN_RUNS.max(self.by_id.len()) {
            let by_id = &self.by_id;
            self.order.retain(|i| by_id.contains_key(i));
        }
    }

    pub fn get(&self, id: &str) -> Option<&str> {
        self.by_id.get(id).map(String::as_str)
    }

    pub fn remove(&mut self, id: &str) {
        self.by_id.remove(id);
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Turns decoded events into run updates, remembering which task ids are runs.
#[derive(Debug, Default)]
pub struct Correlator {
    pub open: OpenRuns,
}

impl Correlator {
    /// The updates of one envelope's events (schedule runs only; subtasks, which inherit
    /// the `root_id`, are not runs).
    pub fn updates(&mut self, events: &[event::TaskEvent], out: &mut Vec<RunUpdate>) {
        for ev in events {
            let entry = if ev.kind.opens() && ev.parent_id.is_none() {
                match ev.root_id.as_deref().and_then(entry_of_root_id) {
                    Some(e) => {
                        self.open.insert(&ev.uuid, e);
                        Some(e.to_string())
                    }
                    None => self.open.get(&ev.uuid).map(str::to_string),
                }
            } else {
                self.open.get(&ev.uuid).map(str::to_string)
            };
            let Some(entry) = entry else { continue };
            out.push(super::update_of(ev, &entry));
            if ev.kind.is_terminal() {
                self.open.remove(&ev.uuid);
            }
        }
    }
}

/// What a collector needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub url: RedisUrl,
    /// Where Celery's task events are: `None` for the pub/sub channels of the Redis
    /// broker (which is the live state's database, `url`); an AMQP URL for RabbitMQ's
    /// `celeryev` exchange.
    pub events: Option<AmqpUrl>,
    pub cluster: String,
    /// This collector's id in `runs::collectors` (host and pid by default).
    pub id: String,
}

fn now_secs() -> f64 {
    crate::state::runs::epoch_secs(chrono::Utc::now())
}

/// Collects until `stop` is raised. Reconnects after a broken subscription (the gap is
/// visible: the new subscription's start is the collector's `since`).
///
/// # Errors
/// [`CollectError`] when the first connection fails (later failures are retried).
pub fn run(cfg: &Config, stop: &AtomicBool, stats: &Arc<Stats>) -> Result<(), CollectError> {
    let mut store = Store::connect(&cfg.url, &cfg.cluster)?;
    let mut correlator = Correlator::default();
    // Runs open when a previous collector stopped: their later events still count.
    for (entry, l) in store.latest_runs()? {
        if !crate::state::runs::is_terminal(&l.state) {
            correlator.open.insert(&l.id, &entry);
        }
    }
    // Failing before the first subscription is an error to report (a wrong URL, a
    // missing permission); afterwards the collector retries.
    let mut listened = false;
    while !stop.load(Ordering::SeqCst) {
        match session(cfg, &mut store, &mut correlator, stop, stats, &mut listened) {
            Ok(()) => return Ok(()),
            Err(e) if !listened => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "run collector: reconnecting in 1 s");
                std::thread::sleep(Duration::from_secs(1));
                if let Ok(s) = Store::connect(&cfg.url, &cfg.cluster) {
                    store = s;
                }
            }
        }
    }
    Ok(())
}

fn session(
    cfg: &Config,
    store: &mut Store,
    correlator: &mut Correlator,
    stop: &AtomicBool,
    stats: &Arc<Stats>,
    listened: &mut bool,
) -> Result<(), CollectError> {
    if let Some(amqp) = &cfg.events {
        let sub_err = |reason: String| CollectError::Subscribe {
            url: amqp.redacted().to_string(),
            reason,
        };
        // Celery publishes task events with routing keys `task.<kind>`.
        let mut queue = crate::celery::amqp::EventQueue::open(amqp, "task.#").map_err(sub_err)?;
        return pump(cfg, store, correlator, stop, stats, listened, || {
            Ok(queue
                .next(FLUSH_EVERY)
                .map_err(sub_err)?
                .map(|body| event::parse_body(&body)))
        });
    }
    let sub_err = |e: redis::RedisError| CollectError::Subscribe {
        url: cfg.url.redacted().to_string(),
        reason: cfg.url.scrub(&e.to_string()),
    };
    let db = cfg.url.db();
    let mut conn =
        cfg.url
            .open(Duration::from_secs(5))
            .map_err(|reason| CollectError::Subscribe {
                url: cfg.url.redacted().to_string(),
                reason,
            })?;
    conn.set_read_timeout(None).map_err(sub_err)?;
    conn.set_write_timeout(None).map_err(sub_err)?;
    let mut ps = conn.as_pubsub();
    // kombu publishes fanout events on `/<db>.celeryev/<routing key>`.
    ps.psubscribe(format!("/{db}.celeryev/task.*"))
        .map_err(sub_err)?;
    ps.set_read_timeout(Some(FLUSH_EVERY)).map_err(sub_err)?;
    pump(cfg, store, correlator, stop, stats, listened, || {
        match ps.get_message() {
            Ok(msg) => Ok(Some(event::parse(msg.get_payload_bytes()))),
            Err(e) if e.is_timeout() => Ok(None),
            Err(e) => Err(sub_err(e)),
        }
    })
}

/// The collector's loop over one subscription: `next` waits at most [`FLUSH_EVERY`] for
/// one message and returns its decoded events (None when nothing came).
fn pump(
    cfg: &Config,
    store: &mut Store,
    correlator: &mut Correlator,
    stop: &AtomicBool,
    stats: &Arc<Stats>,
    listened: &mut bool,
    mut next: impl FnMut() -> Result<
        Option<Result<Vec<event::TaskEvent>, event::EventError>>,
        CollectError,
    >,
) -> Result<(), CollectError> {
    let since = now_secs();
    let mut retention = store.run_retention()?;
    refresh(cfg, store, since, &mut retention)?;
    *listened = true;
    tracing::info!(
        events = cfg.events.as_ref().map_or("redis", |_| "amqp"),
        keep = retention.keep,
        max_age_secs = retention.max_age_secs,
        "run collector: listening for task events"
    );
    let mut pending: Vec<RunUpdate> = Vec::new();
    let mut last_flush = Instant::now();
    let mut last_refresh = Instant::now();
    let mut last_prune = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) {
            flush(store, &mut pending, retention, stats)?;
            return Ok(());
        }
        match next()? {
            Some(Ok(events)) => {
                stats.events.inc_by(events.len() as u64);
                correlator.updates(&events, &mut pending);
            }
            Some(Err(e)) => {
                stats.malformed.inc();
                tracing::debug!(error = %e, "run collector: skipped a message");
            }
            None => {}
        }
        if pending.len() >= BATCH || last_flush.elapsed() >= FLUSH_EVERY {
            flush(store, &mut pending, retention, stats)?;
            last_flush = Instant::now();
            stats
                .open
                .set(i64::try_from(correlator.open.len()).unwrap_or(i64::MAX));
        }
        if last_refresh.elapsed() >= REFRESH_EVERY {
            refresh(cfg, store, since, &mut retention)?;
            last_refresh = Instant::now();
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            let live = store.redbeat_entry_names()?;
            let n = store.prune_latest_runs(&live)?;
            if n > 0 {
                tracing::info!(
                    targets = n,
                    "run collector: forgot the latest runs of deleted schedule targets"
                );
            }
            last_prune = Instant::now();
        }
    }
}

/// Re-reads the retention, renews this collector's presence, and notes new schedule
/// targets (so their expectations start now).
fn refresh(
    cfg: &Config,
    store: &mut Store,
    since: f64,
    retention: &mut RunRetention,
) -> Result<(), CollectError> {
    *retention = store.run_retention()?;
    let now = now_secs();
    store.collector_alive(&cfg.id, since, now)?;
    let live = store.redbeat_entry_names()?;
    store.watch_entries(&live, now)?;
    Ok(())
}

fn flush(
    store: &mut Store,
    pending: &mut Vec<RunUpdate>,
    retention: RunRetention,
    stats: &Stats,
) -> Result<(), CollectError> {
    if pending.is_empty() {
        return Ok(());
    }
    for chunk in pending.chunks(BATCH) {
        store.record_runs(chunk, retention, now_secs())?;
    }
    stats.recorded.inc_by(pending.len() as u64);
    pending.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::event::{EventKind, TaskEvent};

    fn ev(kind: EventKind, uuid: &str, root: Option<&str>, parent: Option<&str>) -> TaskEvent {
        TaskEvent {
            kind,
            uuid: uuid.into(),
            timestamp: 1.0,
            hostname: "h1@m".into(),
            root_id: root.map(str::to_string),
            parent_id: parent.map(str::to_string),
            name: Some("t".into()),
            retries: None,
            runtime: None,
            result: None,
            exception: None,
            expired: false,
        }
    }

    #[test]
    fn only_schedule_runs_are_kept_and_finished_runs_are_forgotten() {
        let mut c = Correlator::default();
        let mut out = Vec::new();
        c.updates(
            &[
                ev(
                    EventKind::Received,
                    "a",
                    Some("celeroot:tick.host.h1"),
                    None,
                ),
                ev(EventKind::Received, "b", Some("b"), None),
                // A subtask inherits the root id: not a run of its own.
                ev(
                    EventKind::Received,
                    "c",
                    Some("celeroot:tick.host.h1"),
                    Some("a"),
                ),
                ev(EventKind::Started, "a", None, None),
                ev(EventKind::Started, "b", None, None),
                ev(EventKind::Succeeded, "a", None, None),
            ],
            &mut out,
        );
        let got: Vec<(&str, &str)> = out.iter().map(|u| (u.id.as_str(), u.kind)).collect();
        assert_eq!(
            got,
            [("a", "received"), ("a", "started"), ("a", "succeeded")]
        );
        assert!(out.iter().all(|u| u.entry == "tick.host.h1"));
        assert!(c.open.is_empty());
    }

    #[test]
    fn open_runs_stay_bounded() {
        let mut o = OpenRuns::default();
        for i in 0..MAX_OPEN_RUNS + 10 {
            o.insert(&i.to_string(), "e");
        }
        assert_eq!(o.len(), MAX_OPEN_RUNS);
        assert_eq!(o.get("0"), None);
        assert_eq!(o.get(&(MAX_OPEN_RUNS + 9).to_string()), Some("e"));
    }
}
