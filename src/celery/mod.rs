//! Speaking to real Celery workers natively: protocol-v2 task messages on the kombu Redis
//! transport or on RabbitMQ (amqp.rs), results from Celery's Redis result backend, and
//! revokes through Celery's remote-control broadcast. No Python runs here.
//!
//! Owns: the wire formats of ../shared/docs/celery-interop.md §2 and §3 (message.rs,
//! result.rs), the Redis commands that carry them (this file) and their AMQP form
//! (amqp.rs).
//! Must not know: manifests, git, target resolution, or output formats.
//!
//! What goes over the wire:
//! - **send**: per message, `SADD _kombu.binding.<queue> <queue>␆␖␆␖<queue>` (what a
//!   Python producer does when it declares the queue; idempotent, not needed for delivery)
//!   and `LPUSH <queue> <envelope>`; all messages of one send in one `MULTI`/`EXEC`, so
//!   either every target gets its message or none does.
//! - **results**: `MGET celery-task-meta-<id>...`, polled; an absent key is PENDING.
//! - **revoke**: `PUBLISH /<db>.celery.pidbox <envelope>`, exactly what
//!   `app.control.revoke(id, terminate=...)` publishes; the reply is the number of
//!   connections (workers) that received it.

pub mod amqp;
pub mod message;
pub mod result;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use redis::Connection;

pub use amqp::{AmqpBroker, AmqpUrl, QueueType};
pub use message::{build, uuid4, TaskMessage, TaskRequest};
pub use result::{result_key, TaskResult, TaskState};

use crate::state::RedisUrl;

/// How long a revoke broadcast stays valid for a worker that reads it late (kombu
/// `Mailbox` header `expires` = send time + this). Celery's default is 1 s; a worker busy
/// in a solo pool or a clock a little ahead would drop a 1 s command, so celeroot sends
/// what `app.control.revoke(id, timeout=10)` sends.
pub const REVOKE_TTL_SECS: f64 = 10.0;

/// Which Redis a failure concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Broker,
    ResultBackend,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Endpoint::Broker => "broker",
            Endpoint::ResultBackend => "result backend",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CeleryError {
    #[error("cannot connect to the {endpoint} at {url}: {reason}")]
    Connect {
        endpoint: Endpoint,
        url: String,
        reason: String,
    },
    /// RabbitMQ did not confirm some messages of a send; `sent` of them were delivered.
    #[error("broker at {url}: {reason}")]
    NotConfirmed {
        url: String,
        sent: usize,
        reason: String,
    },
    #[error("{endpoint} at {url}: {reason}")]
    Redis {
        endpoint: Endpoint,
        url: String,
        reason: String,
    },
}

struct Redis {
    conn: Connection,
    url: RedisUrl,
    endpoint: Endpoint,
    db: i64,
}

impl Redis {
    fn open(url: &RedisUrl, endpoint: Endpoint) -> Result<Redis, CeleryError> {
        // rustls needs a process-wide crypto provider for rediss://; ignore "already set".
        let _ = rustls::crypto::ring::default_provider().install_default();
        let connect_err = |e: redis::RedisError| CeleryError::Connect {
            endpoint,
            url: url.redacted().to_string(),
            reason: url.scrub(&e.to_string()),
        };
        let db = url.db();
        let mut conn = url
            .open(Duration::from_secs(5))
            .map_err(|reason| CeleryError::Connect {
                endpoint,
                url: url.redacted().to_string(),
                reason,
            })?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(connect_err)?;
        conn.set_write_timeout(Some(Duration::from_secs(30)))
            .map_err(connect_err)?;
        let pong: String = redis::cmd("PING").query(&mut conn).map_err(connect_err)?;
        if pong != "PONG" {
            return Err(CeleryError::Connect {
                endpoint,
                url: url.redacted().to_string(),
                reason: format!("unexpected PING reply {pong:?}"),
            });
        }
        Ok(Redis {
            conn,
            url: url.clone(),
            endpoint,
            db,
        })
    }

    fn err(&self, e: redis::RedisError) -> CeleryError {
        CeleryError::Redis {
            endpoint: self.endpoint,
            url: self.url.redacted().to_string(),
            reason: self.url.scrub(&e.to_string()),
        }
    }
}

/// A broker URL: a Redis URL (the kombu Redis transport, also Sentinel) or an AMQP one
/// (RabbitMQ).
#[derive(Debug, Clone)]
pub enum BrokerUrl {
    Redis(RedisUrl),
    Amqp(AmqpUrl),
}

impl BrokerUrl {
    /// Parses `amqp://`/`amqps://` as AMQP and everything else as a Redis URL; a Redis
    /// Cluster is refused (kombu has no transport for it).
    ///
    /// # Errors
    /// What is wrong with the URL, without its password.
    pub fn parse(raw: &str) -> Result<BrokerUrl, String> {
        if amqp::is_amqp(raw) {
            return AmqpUrl::parse(raw).map(BrokerUrl::Amqp);
        }
        let url = RedisUrl::parse(raw)?;
        match url.broker_refusal() {
            Some(why) => Err(why),
            None => Ok(BrokerUrl::Redis(url)),
        }
    }

    /// The transport's name as the Cluster manifest spells it (`redis` or `amqp`).
    pub fn transport(&self) -> &'static str {
        match self {
            BrokerUrl::Redis(_) => "redis",
            BrokerUrl::Amqp(_) => "amqp",
        }
    }

    /// The URL without its password.
    pub fn redacted(&self) -> &str {
        match self {
            BrokerUrl::Redis(u) => u.redacted(),
            BrokerUrl::Amqp(u) => u.redacted(),
        }
    }

    /// The real URL, for the workers' environment only.
    pub(crate) fn expose(&self) -> &str {
        match self {
            BrokerUrl::Redis(u) => u.expose(),
            BrokerUrl::Amqp(u) => u.expose(),
        }
    }

    /// The Redis URL, when the broker is Redis.
    pub fn redis(&self) -> Option<&RedisUrl> {
        match self {
            BrokerUrl::Redis(u) => Some(u),
            BrokerUrl::Amqp(_) => None,
        }
    }
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.redacted())
    }
}

/// A connection to the broker the workers' `broker_url` names: Redis or RabbitMQ.
pub enum Broker {
    Redis(Box<RedisBroker>),
    Amqp(Box<AmqpBroker>),
}

/// Who heard a remote-control broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// Redis answers how many connections received it.
    Count(i64),
    /// AMQP says only whether some mailbox queue did.
    Some,
    Nobody,
}

impl Broker {
    /// Connects to `url`; on AMQP, queues are declared as `queue_type`.
    ///
    /// # Errors
    /// [`CeleryError::Connect`] naming the URL without its password.
    pub fn connect(url: &BrokerUrl, queue_type: QueueType) -> Result<Broker, CeleryError> {
        Ok(match url {
            BrokerUrl::Redis(u) => Broker::Redis(Box::new(RedisBroker::connect(u)?)),
            BrokerUrl::Amqp(u) => Broker::Amqp(Box::new(AmqpBroker::connect(u, queue_type)?)),
        })
    }

    /// Sends every message: on Redis in one `MULTI`/`EXEC` (all or none), on AMQP each
    /// with a publisher confirm (the error names those not confirmed).
    ///
    /// # Errors
    /// A broker error.
    pub fn send(&mut self, messages: &[TaskMessage]) -> Result<(), CeleryError> {
        match self {
            Broker::Redis(b) => b.send(messages),
            Broker::Amqp(b) => b.send(messages),
        }
    }

    /// Broadcasts `revoke` for `task_id` to every worker of this broker.
    ///
    /// # Errors
    /// A broker error.
    pub fn revoke(
        &mut self,
        task_id: &str,
        terminate: bool,
        now: DateTime<Utc>,
    ) -> Result<Heard, CeleryError> {
        Ok(match self {
            Broker::Redis(b) => match b.revoke(task_id, terminate, now)? {
                0 => Heard::Nobody,
                n => Heard::Count(n),
            },
            Broker::Amqp(b) => match b.revoke(task_id, terminate, now)? {
                true => Heard::Some,
                false => Heard::Nobody,
            },
        })
    }
}

/// A connection to the broker: the Redis database the workers' `broker_url` names.
pub struct RedisBroker {
    redis: Redis,
}

impl RedisBroker {
    /// Connects and checks the server answers.
    ///
    /// # Errors
    /// [`CeleryError::Connect`] naming the URL without its password.
    pub fn connect(url: &RedisUrl) -> Result<RedisBroker, CeleryError> {
        Ok(RedisBroker {
            redis: Redis::open(url, Endpoint::Broker)?,
        })
    }

    /// The broker's database number (it appears in the remote-control channel name).
    pub fn db(&self) -> i64 {
        self.redis.db
    }

    /// Sends every message in one `MULTI`/`EXEC`: per message, the queue's
    /// `_kombu.binding` member and an `LPUSH` onto the queue's list.
    ///
    /// # Errors
    /// A Redis error; then no message was sent.
    pub fn send(&mut self, messages: &[TaskMessage]) -> Result<(), CeleryError> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for m in messages {
            let (key, member) = m.binding();
            pipe.cmd("SADD").arg(key).arg(member).ignore();
            pipe.cmd("LPUSH").arg(m.list()).arg(m.to_json()).ignore();
        }
        pipe.query::<()>(&mut self.redis.conn)
            .map_err(|e| self.redis.err(e))
    }

    /// Broadcasts `revoke` for `task_id` to every worker listening on this broker, as
    /// `app.control.revoke(task_id, terminate=terminate)` does. Returns how many
    /// connections received it (0: no worker is listening, and the revoke is lost).
    ///
    /// # Errors
    /// A Redis error.
    pub fn revoke(
        &mut self,
        task_id: &str,
        terminate: bool,
        now: DateTime<Utc>,
    ) -> Result<i64, CeleryError> {
        let envelope = message::revoke_envelope(task_id, terminate, now, REVOKE_TTL_SECS, &uuid4());
        redis::cmd("PUBLISH")
            .arg(message::pidbox_channel(self.redis.db))
            .arg(envelope.to_string())
            .query(&mut self.redis.conn)
            .map_err(|e| self.redis.err(e))
    }
}

/// What waiting found for one task.
#[derive(Debug, Clone)]
pub struct Waited {
    /// The last result read (PENDING when nothing was stored), or why it is unreadable.
    pub result: Result<TaskResult, String>,
    /// When the final state was first seen, counted from the start of the wait.
    pub seen_after: Option<Duration>,
    /// Not final when the wait ended.
    pub timed_out: bool,
}

/// A connection to Celery's Redis result backend.
pub struct ResultBackend {
    redis: Redis,
}

impl ResultBackend {
    /// Connects and checks the server answers.
    ///
    /// # Errors
    /// [`CeleryError::Connect`] naming the URL without its password.
    pub fn connect(url: &RedisUrl) -> Result<ResultBackend, CeleryError> {
        Ok(ResultBackend {
            redis: Redis::open(url, Endpoint::ResultBackend)?,
        })
    }

    /// Reads the results of `ids` in one round trip (`MGET`). An unreadable stored value
    /// is an `Err` for that id only.
    ///
    /// # Errors
    /// A Redis error.
    pub fn get_many(
        &mut self,
        ids: &[String],
    ) -> Result<Vec<Result<TaskResult, String>>, CeleryError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| result_key(id)).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query(&mut self.redis.conn)
            .map_err(|e| self.redis.err(e))?;
        Ok(ids
            .iter()
            .zip(values)
            .map(|(id, v)| TaskResult::parse(id, v.as_deref()))
            .collect())
    }

    /// Reads one result.
    ///
    /// # Errors
    /// A Redis error.
    pub fn get(&mut self, id: &str) -> Result<Result<TaskResult, String>, CeleryError> {
        let mut v = self.get_many(&[id.to_string()])?;
        Ok(v.pop()
            .unwrap_or_else(|| Err("no reply from the result backend".into())))
    }

    /// Polls the results of `ids` every `poll` until each is final (SUCCESS, FAILURE,
    /// REVOKED, or unreadable) or `timeout` has passed.
    ///
    /// # Errors
    /// A Redis error.
    pub fn wait(
        &mut self,
        ids: &[String],
        timeout: Duration,
        poll: Duration,
    ) -> Result<Vec<Waited>, CeleryError> {
        let start = Instant::now();
        let mut out: Vec<Waited> = ids
            .iter()
            .map(|id| Waited {
                result: Ok(TaskResult::pending(id)),
                seen_after: None,
                timed_out: true,
            })
            .collect();
        loop {
            let open: Vec<usize> = (0..ids.len()).filter(|&i| out[i].timed_out).collect();
            if open.is_empty() {
                break;
            }
            let batch: Vec<String> = open.iter().map(|&i| ids[i].clone()).collect();
            let got = self.get_many(&batch)?;
            let elapsed = start.elapsed();
            for (&i, r) in open.iter().zip(got) {
                let is_final = match &r {
                    Ok(t) => t.state.is_ready(),
                    Err(_) => true,
                };
                out[i].result = r;
                if is_final {
                    out[i].timed_out = false;
                    out[i].seen_after = Some(elapsed);
                }
            }
            if out.iter().all(|w| !w.timed_out) || elapsed >= timeout {
                break;
            }
            std::thread::sleep(poll.min(timeout.saturating_sub(elapsed)));
        }
        Ok(out)
    }
}
