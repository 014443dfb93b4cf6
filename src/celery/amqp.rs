//! Celery's broker on RabbitMQ: the same protocol-v2 task messages as on Redis, carried
//! over AMQP 0-9-1 (lapin) with publisher confirms, to queues declared exactly as a
//! Celery worker declares them (so either may declare first).
//!
//! Owns: `amqp://`/`amqps://` URLs (kombu's reading of the virtual host), the queue and
//! exchange declarations Celery makes for `-Q NAME` (a durable direct exchange `NAME`, a
//! durable queue `NAME` bound with routing key `NAME`, `x-queue-type: quorum` unless the
//! Cluster asks for classic queues), the conversion of a kombu Redis envelope
//! (message.rs) into AMQP properties, headers and body, and the remote-control broadcast
//! on the `celery.pidbox` fanout exchange.
//! Must not know: manifests, targets, or output formats.
//!
//! What goes over the wire, per `task run`: `exchange.declare`, `queue.declare`,
//! `queue.bind` for every queue the send reaches, `confirm.select`, then one
//! `basic.publish` (default exchange, routing key = queue, `mandatory`) per message, and
//! a wait for every confirm. A message the broker nacks or returns is reported by its
//! task id; the others were delivered (AMQP has no transaction across publisher
//! confirms, unlike the Redis transport's `MULTI`).

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::Value as Json;

use super::message::{self, TaskMessage, PIDBOX_EXCHANGE};
use super::{CeleryError, Endpoint, REVOKE_TTL_SECS};

/// How long connecting (TCP, TLS and the AMQP handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one declaration, publish or wait for confirms may take.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The kind of queue celeroot and the workers declare on RabbitMQ (the Cluster's
/// `broker.queueType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    /// Replicated (Raft) queues: what RabbitMQ and Celery recommend for durable work.
    #[default]
    Quorum,
    /// Classic queues (single node).
    Classic,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        }
    }

    /// The `queue.declare` arguments Celery uses for this type
    /// (`task_create_missing_queue_type`).
    fn arguments(self) -> FieldTable {
        let mut t = FieldTable::default();
        if self == QueueType::Quorum {
            t.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        t
    }
}

/// An `amqp://[USER:PASSWORD@]HOST[:PORT][/VHOST]` or `amqps://…` URL, read as kombu
/// reads it: the virtual host is the percent-decoded path after the first `/`, and an
/// empty one (or `//`) is `/`. The password never appears in [`AmqpUrl::redacted`].
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpUrl {
    raw: String,
    uri: AMQPUri,
    redacted: String,
    password: String,
}

impl std::fmt::Debug for AmqpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl std::fmt::Display for AmqpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// Whether `raw` names an AMQP broker (`amqp://` or `amqps://`).
pub fn is_amqp(raw: &str) -> bool {
    let lower = raw.trim().to_ascii_lowercase();
    lower.starts_with("amqp://") || lower.starts_with("amqps://")
}

impl AmqpUrl {
    /// Parses an AMQP URL.
    ///
    /// # Errors
    /// What is wrong with it, without its password.
    pub fn parse(raw: &str) -> Result<AmqpUrl, String> {
        let url = url::Url::parse(raw.trim()).map_err(|e| {
            format!("not an AMQP URL ({e}); expected amqp://USER:PASSWORD@HOST:PORT/VHOST")
        })?;
        let scheme = match url.scheme() {
            "amqp" => AMQPScheme::AMQP,
            "amqps" => AMQPScheme::AMQPS,
            other => {
                return Err(format!(
                    "unknown scheme {other}://; expected amqp:// or amqps://"
                ))
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                "the URL names no host; expected amqp://USER:PASSWORD@HOST:PORT/VHOST".to_string()
            })?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let decode = |s: &str| {
            percent_decode(s).ok_or_else(|| {
                "the URL's user, password or virtual host is not valid percent-encoded UTF-8"
                    .to_string()
            })
        };
        let username = match url.username() {
            "" => "guest".to_string(),
            u => decode(u)?,
        };
        let password = match url.password() {
            None => "guest".to_string(),
            Some(p) => decode(p)?,
        };
        if url.query().is_some_and(|q| !q.is_empty()) {
            return Err(
                "query parameters are not supported in an AMQP broker URL; give amqp://USER:PASSWORD@HOST:PORT/VHOST"
                    .into(),
            );
        }
        let path = url.path();
        let vhost = match path.strip_prefix('/').unwrap_or(path) {
            "" => "/".to_string(),
            v => decode(v)?,
        };
        let port = url.port().unwrap_or(scheme.default_port());
        let shown_host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let redacted = format!(
            "{}://{}{shown_host}:{port}/{}",
            url.scheme(),
            if url.password().is_some() {
                format!("{}:***@", url.username())
            } else if url.username().is_empty() {
                String::new()
            } else {
                format!("{}@", url.username())
            },
            if vhost == "/" {
                "/".to_string()
            } else {
                url.path().trim_start_matches('/').to_string()
            },
        );
        Ok(AmqpUrl {
            raw: raw.trim().to_string(),
            uri: AMQPUri {
                scheme,
                authority: AMQPAuthority {
                    userinfo: AMQPUserInfo {
                        username,
                        password: password.clone(),
                    },
                    host,
                    port,
                },
                vhost,
                query: AMQPQueryString {
                    connection_timeout: Some(CONNECT_TIMEOUT.as_millis() as u64),
                    ..AMQPQueryString::default()
                },
            },
            redacted,
            password,
        })
    }

    /// The URL with its password as `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The real URL, for the workers' environment only.
    pub(crate) fn expose(&self) -> &str {
        &self.raw
    }

    /// The virtual host.
    pub fn vhost(&self) -> &str {
        &self.uri.vhost
    }

    /// `text` (an error message) with the password replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        if self.password.is_empty() || self.password == "guest" {
            return text.to_string();
        }
        text.replace(&self.password, "***")
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A JSON value as an AMQP field value, as py-amqp encodes the Python value Celery
/// has: null → void, integers → signed 64-bit, other numbers → double, lists → arrays,
/// objects → tables.
pub fn field_value(v: &Json) -> AMQPValue {
    match v {
        Json::Null => AMQPValue::Void,
        Json::Bool(b) => AMQPValue::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        Json::Array(items) => AMQPValue::FieldArray(FieldArray::from(
            items.iter().map(field_value).collect::<Vec<_>>(),
        )),
        Json::Object(m) => AMQPValue::FieldTable(field_table(m)),
    }
}

fn field_table(m: &serde_json::Map<String, Json>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in m {
        t.insert(ShortString::from(k.as_str()), field_value(v));
    }
    t
}

/// What one message becomes on AMQP: the body bytes and the properties (with the
/// headers), from the kombu Redis envelope `message::build` makes (the envelope's body is
/// base64; AMQP carries the JSON bytes themselves).
pub fn amqp_message(m: &TaskMessage) -> (Vec<u8>, BasicProperties) {
    let (body, mut props) = envelope_parts(&m.envelope, 2);
    props = props
        .with_priority(0)
        .with_correlation_id(m.id.as_str().into());
    if let Some(e) = m.envelope["properties"]["expiration"].as_str() {
        props = props.with_expiration(e.into());
    }
    (body, props)
}

/// The body (base64 in a kombu Redis envelope, raw JSON bytes on AMQP), the content
/// type and encoding, the headers, and `delivery_mode` (2 persistent, 1 transient).
fn envelope_parts(envelope: &Json, delivery_mode: u8) -> (Vec<u8>, BasicProperties) {
    let body = envelope["body"]
        .as_str()
        .and_then(message::base64_decode)
        .unwrap_or_default();
    let mut props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(delivery_mode);
    if let Some(h) = envelope["headers"].as_object() {
        props = props.with_headers(field_table(h));
    }
    (body, props)
}

/// A connection to a RabbitMQ broker with a confirming channel.
pub struct AmqpBroker {
    rt: tokio::runtime::Runtime,
    conn: Connection,
    channel: Channel,
    url: AmqpUrl,
    queue_type: QueueType,
    declared: BTreeSet<String>,
}

impl AmqpBroker {
    /// Connects, opens a channel and turns on publisher confirms.
    ///
    /// # Errors
    /// [`CeleryError::Connect`] naming the URL without its password.
    pub fn connect(url: &AmqpUrl, queue_type: QueueType) -> Result<AmqpBroker, CeleryError> {
        let fail = |reason: String| CeleryError::Connect {
            endpoint: Endpoint::Broker,
            url: url.redacted().to_string(),
            reason: url.scrub(&reason),
        };
        let (rt, conn, channel) = open(url).map_err(fail)?;
        rt.block_on(within(
            channel.confirm_select(ConfirmSelectOptions::default()),
        ))
        .map_err(fail)?;
        Ok(AmqpBroker {
            rt,
            conn,
            channel,
            url: url.clone(),
            queue_type,
            declared: BTreeSet::new(),
        })
    }

    fn err(&self, reason: String) -> CeleryError {
        CeleryError::Redis {
            endpoint: Endpoint::Broker,
            url: self.url.redacted().to_string(),
            reason: self.url.scrub(&reason),
        }
    }

    /// Declares `queue` as a Celery worker does for `-Q queue`.
    async fn declare(channel: &Channel, queue: &str, queue_type: QueueType) -> Result<(), String> {
        within(channel.exchange_declare(
            queue.into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        ))
        .await
        .map_err(|e| format!("declaring exchange {queue}: {e}"))?;
        within(channel.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            queue_type.arguments(),
        ))
        .await
        .map_err(|e| {
            if e.contains("PRECONDITION_FAILED") {
                format!(
                    "queue {queue} exists with other arguments than a {} queue ({e}); the Cluster's broker.queueType must match the existing queues, or the queue must be deleted first (rabbitmqctl delete_queue {queue})",
                    queue_type.as_str()
                )
            } else {
                format!("declaring queue {queue}: {e}")
            }
        })?;
        within(channel.queue_bind(
            queue.into(),
            queue.into(),
            queue.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ))
        .await
        .map_err(|e| format!("binding queue {queue}: {e}"))
    }

    /// Declares every queue `messages` reach, publishes each message and waits for
    /// every confirm.
    ///
    /// # Errors
    /// A declaration that failed (then nothing was published), or the messages the
    /// broker did not confirm (the others were delivered).
    pub fn send(&mut self, messages: &[TaskMessage]) -> Result<(), CeleryError> {
        if messages.is_empty() {
            return Ok(());
        }
        let queues: BTreeSet<String> = messages
            .iter()
            .map(|m| m.queue.clone())
            .filter(|q| !self.declared.contains(q))
            .collect();
        let channel = self.channel.clone();
        let queue_type = self.queue_type;
        self.rt
            .block_on(async {
                for q in &queues {
                    Self::declare(&channel, q, queue_type).await?;
                }
                Ok::<_, String>(())
            })
            .map_err(|e| self.err(e))?;
        self.declared.extend(queues);
        let outcome: Vec<Result<(), String>> = self.rt.block_on(async {
            let mut pending = Vec::new();
            for m in messages {
                let (body, props) = amqp_message(m);
                let p = within(channel.basic_publish(
                    "".into(),
                    m.queue.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &body,
                    props,
                ))
                .await;
                pending.push(p);
            }
            let mut out = Vec::new();
            for p in pending {
                out.push(match p {
                    Err(e) => Err(e),
                    Ok(confirm) => match tokio::time::timeout(OPERATION_TIMEOUT, confirm).await {
                        Err(_) => Err(format!(
                            "no confirm within {} s",
                            OPERATION_TIMEOUT.as_secs()
                        )),
                        Ok(Err(e)) => Err(describe(&e)),
                        Ok(Ok(c)) if c.is_nack() => Err("the broker refused it (nack)".into()),
                        Ok(Ok(c)) => match c.take_message() {
                            Some(r) => Err(format!(
                                "returned unroutable ({} {})",
                                r.reply_code, r.reply_text
                            )),
                            None => Ok(()),
                        },
                    },
                });
            }
            out
        });
        let failed: Vec<String> = messages
            .iter()
            .zip(&outcome)
            .filter_map(|(m, r)| {
                r.as_ref()
                    .err()
                    .map(|e| format!("task {} to queue {}: {e}", m.id, m.queue))
            })
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        let sent = outcome.iter().filter(|r| r.is_ok()).count();
        Err(CeleryError::NotConfirmed {
            url: self.url.redacted().to_string(),
            sent,
            reason: self.url.scrub(&format!(
                "{} of {} message(s) not confirmed ({sent} delivered): {}",
                failed.len(),
                messages.len(),
                failed.join("; ")
            )),
        })
    }

    /// Broadcasts `revoke` for `task_id` on the `celery.pidbox` fanout exchange, as
    /// `app.control.revoke` does over AMQP. Returns whether any worker's mailbox queue
    /// received it (AMQP does not tell how many).
    ///
    /// # Errors
    /// A broker error.
    pub fn revoke(
        &mut self,
        task_id: &str,
        terminate: bool,
        now: DateTime<Utc>,
    ) -> Result<bool, CeleryError> {
        let envelope =
            message::revoke_envelope(task_id, terminate, now, REVOKE_TTL_SECS, &message::uuid4());
        let (body, props) = envelope_parts(&envelope, 1);
        let conn = &self.conn;
        let r = self.rt.block_on(async {
            // Passive: the exchange exists only while a worker's mailbox is declared; a
            // channel that fails a passive declare is closed, so use a fresh one.
            let ch = within(conn.create_channel()).await?;
            let exists = within(ch.exchange_declare(
                PIDBOX_EXCHANGE.into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            ))
            .await;
            if let Err(e) = exists {
                if e.contains("NOT_FOUND") {
                    return Ok(false);
                }
                return Err(e);
            }
            within(ch.confirm_select(ConfirmSelectOptions::default())).await?;
            let confirm = within(ch.basic_publish(
                PIDBOX_EXCHANGE.into(),
                "".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &body,
                props,
            ))
            .await?;
            let c = tokio::time::timeout(OPERATION_TIMEOUT, confirm)
                .await
                .map_err(|_| format!("no confirm within {} s", OPERATION_TIMEOUT.as_secs()))?
                .map_err(|e| describe(&e))?;
            Ok(c.is_ack() && c.take_message().is_none())
        });
        r.map_err(|e| self.err(e))
    }
}

impl Drop for AmqpBroker {
    fn drop(&mut self) {
        let conn = &self.conn;
        let _ = self.rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(2),
                conn.close(200, "celeroot done".into()),
            )
            .await
        });
    }
}

/// The exchange Celery's events go to on AMQP (`celery.events.event.event_exchange`: a
/// durable topic exchange; routing keys `task.received`, `worker.heartbeat`, ...).
pub const EVENT_EXCHANGE: &str = "celeryev";

/// How many event messages wait for the reader at most (the consumer then waits).
const EVENT_BACKLOG: usize = 10_000;

/// A subscription to Celery's task events on RabbitMQ: an exclusive, auto-deleted queue
/// bound to the `celeryev` exchange, consumed without acknowledgements (like Celery's own
/// event receiver: events published while nobody listens are not kept).
pub struct EventQueue {
    rt: tokio::runtime::Runtime,
    _conn: Connection,
    _channel: Channel,
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, String>>,
    url: AmqpUrl,
}

impl EventQueue {
    /// Binds a fresh queue to `celeryev` with `routing_key` (`task.#`) and starts
    /// consuming.
    ///
    /// # Errors
    /// Why not, without the password.
    pub fn open(url: &AmqpUrl, routing_key: &str) -> Result<EventQueue, String> {
        let (rt, conn, channel) = open(url).map_err(|e| url.scrub(&e))?;
        let (tx, rx) = tokio::sync::mpsc::channel(EVENT_BACKLOG);
        rt.block_on(async {
            // Declared as Celery declares it, so whoever comes first creates it.
            within(channel.exchange_declare(
                EVENT_EXCHANGE.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            ))
            .await
            .map_err(|e| format!("declaring exchange {EVENT_EXCHANGE}: {e}"))?;
            let queue = within(channel.queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            ))
            .await?;
            within(channel.queue_bind(
                queue.name().clone(),
                EVENT_EXCHANGE.into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ))
            .await?;
            let consumer = within(channel.basic_consume(
                queue.name().clone(),
                "celeroot-collector".into(),
                lapin::options::BasicConsumeOptions {
                    no_ack: true,
                    ..lapin::options::BasicConsumeOptions::default()
                },
                FieldTable::default(),
            ))
            .await?;
            consumer.set_delegate(move |delivery: lapin::message::DeliveryResult| {
                let tx = tx.clone();
                async move {
                    let item = match delivery {
                        Ok(Some(d)) => Ok(d.data),
                        Ok(None) => Err("the broker cancelled the consumer".to_string()),
                        Err(e) => Err(describe(&e)),
                    };
                    let _ = tx.send(item).await;
                }
            });
            Ok::<_, String>(())
        })
        .map_err(|e| url.scrub(&e))?;
        Ok(EventQueue {
            rt,
            _conn: conn,
            _channel: channel,
            rx,
            url: url.clone(),
        })
    }

    /// The next event message's body, waiting at most `wait` (None: nothing came).
    ///
    /// # Errors
    /// The connection or the consumer ended.
    pub fn next(&mut self, wait: Duration) -> Result<Option<Vec<u8>>, String> {
        let rx = &mut self.rx;
        let got = self
            .rt
            .block_on(async { tokio::time::timeout(wait, rx.recv()).await });
        match got {
            Err(_) => Ok(None),
            Ok(None) => Err("the event consumer stopped".into()),
            Ok(Some(Ok(body))) => Ok(Some(body)),
            Ok(Some(Err(e))) => Err(self.url.scrub(&e)),
        }
    }
}

/// Connects and disconnects: whether the broker at `url` accepts these credentials
/// (the agent's broker check).
///
/// # Errors
/// Why not, without the password.
pub fn check(url: &AmqpUrl) -> Result<(), String> {
    AmqpBroker::connect(url, QueueType::default())
        .map(drop)
        .map_err(|e| e.to_string())
}

/// A current-thread I/O runtime, a connection (within [`CONNECT_TIMEOUT`]) and a channel.
fn open(url: &AmqpUrl) -> Result<(tokio::runtime::Runtime, Connection, Channel), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start an I/O runtime: {e}"))?;
    let (conn, channel) = rt.block_on(async {
        let conn = tokio::time::timeout(
            CONNECT_TIMEOUT,
            Connection::connect_uri(url.uri.clone(), ConnectionProperties::default()),
        )
        .await
        .map_err(|_| format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))?
        .map_err(|e| describe(&e))?;
        let channel = within(conn.create_channel()).await?;
        Ok::<_, String>((conn, channel))
    })?;
    Ok((rt, conn, channel))
}

async fn within<T>(f: impl std::future::Future<Output = lapin::Result<T>>) -> Result<T, String> {
    tokio::time::timeout(OPERATION_TIMEOUT, f)
        .await
        .map_err(|_| format!("no answer within {} s", OPERATION_TIMEOUT.as_secs()))?
        .map_err(|e| describe(&e))
}

fn describe(e: &lapin::Error) -> String {
    let text = e.to_string();
    if text.contains("ACCESS_REFUSED") || text.contains("403") {
        format!("{text} (wrong user or password, or no access to the virtual host)")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_read_the_virtual_host_as_kombu_does() {
        let u = AmqpUrl::parse("amqp://ops:s3cret@127.0.0.1:5673//").unwrap();
        assert_eq!(u.vhost(), "/");
        assert_eq!(u.redacted(), "amqp://ops:***@127.0.0.1:5673//");
        assert!(!format!("{u:?}").contains("s3cret"));
        assert_eq!(u.scrub("auth s3cret failed"), "auth *** failed");
        assert_eq!(AmqpUrl::parse("amqp://h").unwrap().vhost(), "/");
        assert_eq!(AmqpUrl::parse("amqp://h/%2f").unwrap().vhost(), "/");
        let p = AmqpUrl::parse("amqps://u:p%40ss@h/prod").unwrap();
        assert_eq!(p.vhost(), "prod");
        assert_eq!(p.uri.authority.userinfo.password, "p@ss");
        assert_eq!(p.uri.authority.port, 5671);
        assert!(AmqpUrl::parse("amqp://").is_err());
        assert!(AmqpUrl::parse("amqp://h/?heartbeat=5").is_err());
        assert!(AmqpUrl::parse("redis://h").is_err());
        assert!(is_amqp("AMQP://h") && !is_amqp("redis://h"));
    }

    #[test]
    fn headers_keep_their_python_types() {
        let v = serde_json::json!({"retries": 0, "eta": null, "timelimit": [null, 1.5], "ignore_result": false, "stamps": {}});
        let AMQPValue::FieldTable(t) = field_value(&v) else {
            panic!("a table")
        };
        let inner = t.inner();
        assert_eq!(inner.get("retries"), Some(&AMQPValue::LongLongInt(0)));
        assert_eq!(inner.get("eta"), Some(&AMQPValue::Void));
        assert_eq!(
            inner.get("timelimit"),
            Some(&AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::Void,
                AMQPValue::Double(1.5)
            ])))
        );
        assert_eq!(inner.get("ignore_result"), Some(&AMQPValue::Boolean(false)));
    }

    #[test]
    fn a_message_carries_the_json_body_and_the_id() {
        let req = message::TaskRequest {
            task: "t.x".into(),
            args: vec![serde_json::json!(1)],
            kwargs: serde_json::Map::new(),
            countdown: None,
            expires: Some(60.0),
            origin: "celeroot@test".into(),
        };
        let m = message::build_with(&req, "q", Utc::now(), "id-1", "tag");
        let (body, props) = amqp_message(&m);
        let body: Json = serde_json::from_slice(&body).unwrap();
        assert_eq!(body[0], serde_json::json!([1]));
        assert_eq!(
            props.correlation_id().as_ref().map(ShortString::as_str),
            Some("id-1")
        );
        assert_eq!(
            props.expiration().as_ref().map(ShortString::as_str),
            Some("60000")
        );
        assert_eq!(props.delivery_mode(), &Some(2));
    }
}
