//! Celery protocol-v2 task messages and remote-control (pidbox) broadcasts, as the kombu
//! Redis transport carries them (../shared/docs/celery-interop.md §2).
//!
//! One builder, always emitting every field a real worker needs (`content-type`,
//! `headers.task`, `headers.id`, `properties.delivery_tag`, `properties.delivery_info`, a
//! base64 body decoding to the 3-element `[args, kwargs, embed]`), because a message that
//! lacks one of them crashes the worker, loops it, or is lost (§2.9).

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value as Json};
use sha2::{Digest, Sha256};

/// The separator between a queue name and its priority step, and inside
/// `_kombu.binding.*` members (kombu `Channel.sep`: the bytes 0x06 0x16).
pub const KOMBU_SEP: &str = "\x06\x16";

/// The longest `argsrepr`/`kwargsrepr` Celery writes (`argsrepr_maxsize`, `kwargsrepr_maxsize`).
pub const REPR_MAXSIZE: usize = 1024;

/// The exchange Celery's remote control broadcasts on (`control_exchange` `celery` +
/// kombu `Mailbox.exchange_fmt` `%s.pidbox`).
pub const PIDBOX_EXCHANGE: &str = "celery.pidbox";

/// The signal Celery names when a revoke terminates (`TERM_SIGNAME`).
pub const TERM_SIGNAME: &str = "SIGTERM";

/// What to send: one task to one queue.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRequest {
    /// Registered Celery task name (a dotted Python name).
    pub task: String,
    /// Positional arguments (a JSON array).
    pub args: Vec<Json>,
    /// Keyword arguments (a JSON object).
    pub kwargs: Map<String, Json>,
    /// Seconds from now before the worker may run it (header `eta`).
    pub countdown: Option<f64>,
    /// Seconds from now after which an unstarted task is discarded as REVOKED
    /// (header `expires`, property `expiration`).
    pub expires: Option<f64>,
    /// The producer's node name (header `origin`), e.g. `celeroot@ops-laptop`.
    pub origin: String,
}

/// One message, ready to LPUSH.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    /// The task id (`headers.id`; the result key is `celery-task-meta-<id>`).
    pub id: String,
    /// The queue, which is also the name of the Redis list (priority 0).
    pub queue: String,
    /// The envelope: `{body, content-encoding, content-type, headers, properties}`.
    pub envelope: Json,
}

impl TaskMessage {
    /// The envelope as the JSON text pushed onto the list.
    pub fn to_json(&self) -> String {
        self.envelope.to_string()
    }

    /// The Redis list the message goes to. celeroot sends at priority 0 (no `priority`
    /// option), which is the bare queue name (§2.6).
    pub fn list(&self) -> &str {
        &self.queue
    }

    /// The `_kombu.binding.<queue>` set and the member a Python producer adds to it when it
    /// declares the queue (§2.7): the queue's own direct exchange, bound with its name.
    pub fn binding(&self) -> (String, String) {
        binding(&self.queue)
    }
}

/// `_kombu.binding.<queue>` and its member `queue␆␖␆␖queue` (routing key, empty
/// pattern, queue) for the automatic direct exchange named like the queue (§2.7).
pub fn binding(queue: &str) -> (String, String) {
    (
        format!("_kombu.binding.{queue}"),
        format!("{queue}{KOMBU_SEP}{KOMBU_SEP}{queue}"),
    )
}

/// Checks a task name: a dotted Python name (`celeroot.ping`, `app.tasks.sync`).
///
/// # Errors
/// A message naming the task and the rule.
pub fn validate_task_name(task: &str) -> Result<(), String> {
    crate::validate::rules::python_dotted_name(task)
        .map_err(|e| format!("invalid task name `{task}`: {e}"))
}

/// An object that kombu's JSON decoder would not hand to the task as data: any object
/// whose keys are exactly `__type__` and `__value__` is decoded as a tagged type
/// (datetime, decimal, uuid, bytes...) and an unknown tag raises (§2.3).
///
/// Returns the JSON path of the first such object.
pub fn find_kombu_tagged(v: &Json, path: &str) -> Option<String> {
    match v {
        Json::Object(m) => {
            if m.len() == 2 && m.contains_key("__type__") && m.contains_key("__value__") {
                return Some(path.to_string());
            }
            m.iter()
                .find_map(|(k, v)| find_kombu_tagged(v, &format!("{path}.{k}")))
        }
        Json::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, v)| find_kombu_tagged(v, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// ISO 8601 with microseconds and an offset, as Celery writes `eta` and `expires`
/// (`2026-11-22T10:51:46.556963+00:00`).
pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, false)
}

fn after(now: DateTime<Utc>, secs: f64) -> DateTime<Utc> {
    // Whole microseconds, as Python's datetime has no finer resolution.
    let micros = (secs * 1_000_000.0).round() as i64;
    now + chrono::Duration::microseconds(micros)
}

/// The message body before encoding: `[args, kwargs, embed]` (exactly 3 elements, §2.3).
pub fn body(args: &[Json], kwargs: &Map<String, Json>) -> Json {
    json!([
        args,
        kwargs,
        {"callbacks": null, "errbacks": null, "chain": null, "chord": null}
    ])
}

/// Builds the protocol-v2 message of `req` for `queue`, as `app.send_task(task, args,
/// kwargs, queue=queue, countdown=..., expires=...)` would (§2.2, §2.10), with the given
/// task id and delivery tag, at time `now`.
pub fn build_with(
    req: &TaskRequest,
    queue: &str,
    now: DateTime<Utc>,
    id: &str,
    delivery_tag: &str,
) -> TaskMessage {
    let eta = req.countdown.map(|s| iso(after(now, s)));
    let expires = req.expires.map(|s| iso(after(now, s)));
    let args_json = Json::Array(req.args.clone());
    let kwargs_json = Json::Object(req.kwargs.clone());
    let headers = json!({
        "lang": "py",
        "task": req.task,
        "id": id,
        "shadow": null,
        "eta": eta,
        "expires": expires,
        "group": null,
        "group_index": null,
        "retries": 0,
        "timelimit": [null, null],
        "root_id": id,
        "parent_id": null,
        "argsrepr": python_repr_limited(&args_json, REPR_MAXSIZE),
        "kwargsrepr": python_repr_limited(&kwargs_json, REPR_MAXSIZE),
        "origin": req.origin,
        "ignore_result": false,
        "replaced_task_nesting": 0,
        "stamped_headers": null,
        "stamps": {},
    });
    let mut properties = Map::new();
    properties.insert("correlation_id".into(), json!(id));
    properties.insert("reply_to".into(), json!(""));
    properties.insert("delivery_mode".into(), json!(2));
    if let Some(s) = req.expires {
        // Milliseconds as a string; the Redis transport ignores it (no message TTL).
        properties.insert(
            "expiration".into(),
            json!(((s * 1000.0).round() as i64).to_string()),
        );
    }
    properties.insert(
        "delivery_info".into(),
        json!({"exchange": "", "routing_key": queue}),
    );
    properties.insert("priority".into(), json!(0));
    properties.insert("body_encoding".into(), json!("base64"));
    properties.insert("delivery_tag".into(), json!(delivery_tag));
    let body_text = body(&req.args, &req.kwargs).to_string();
    let envelope = json!({
        "body": base64_encode(body_text.as_bytes()),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": Json::Object(properties),
    });
    TaskMessage {
        id: id.to_string(),
        queue: queue.to_string(),
        envelope,
    }
}

/// Builds the message of `req` for `queue` with a fresh task id and delivery tag.
pub fn build(req: &TaskRequest, queue: &str, now: DateTime<Utc>) -> TaskMessage {
    build_with(req, queue, now, &uuid4(), &uuid4())
}

/// The PUB/SUB channel of Celery's remote-control broadcasts on the broker database `db`:
/// kombu's fanout prefix `/{db}.` + the exchange; no `/<routing key>` suffix because the
/// broadcast's routing key is empty (`kombu/transport/redis.py` `_get_publish_topic`).
pub fn pidbox_channel(db: i64) -> String {
    format!("/{db}.{PIDBOX_EXCHANGE}")
}

/// The envelope `app.control.revoke(task_id, terminate=terminate, timeout=ttl)` publishes
/// (kombu `Mailbox._publish`): body `{method, arguments, destination, pattern, matcher}`,
/// headers `clock` (a Lamport clock; 1 is what a fresh Python process sends) and `expires`
/// (UNIX seconds after which a worker ignores the command).
pub fn revoke_envelope(
    task_id: &str,
    terminate: bool,
    now: DateTime<Utc>,
    ttl_secs: f64,
    delivery_tag: &str,
) -> Json {
    let body = json!({
        "method": "revoke",
        "arguments": {"task_id": task_id, "terminate": terminate, "signal": TERM_SIGNAME},
        "destination": null,
        "pattern": null,
        "matcher": null,
    });
    let expires = now.timestamp_micros() as f64 / 1_000_000.0 + ttl_secs;
    json!({
        "body": base64_encode(body.to_string().as_bytes()),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"clock": 1, "expires": expires},
        "properties": {
            "delivery_mode": 2,
            "delivery_info": {"exchange": PIDBOX_EXCHANGE, "routing_key": ""},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": delivery_tag,
        },
    })
}

// ---------------------------------------------------------------------------------------
// Identifiers

/// A fresh random UUID (version 4 layout), as kombu uses for task ids and delivery tags.
///
/// The 122 random bits are the SHA-256 of 16 bytes from `/dev/urandom` (when readable),
/// the clock in nanoseconds, the process id, a process-wide counter and the thread id,
/// so two calls never collide even without `/dev/urandom`.
pub fn uuid4() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut seed = Vec::with_capacity(64);
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read as _;
        let mut buf = [0u8; 16];
        if f.read_exact(&mut buf).is_ok() {
            seed.extend_from_slice(&buf);
        }
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    seed.extend_from_slice(&nanos.to_le_bytes());
    seed.extend_from_slice(&std::process::id().to_le_bytes());
    seed.extend_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    seed.extend_from_slice(format!("{:?}", std::thread::current().id()).as_bytes());
    let digest = Sha256::digest(&seed);
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

// ---------------------------------------------------------------------------------------
// base64 (standard alphabet, padded), the body encoding kombu uses

/// Standard base64 with `=` padding.
pub fn base64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Decodes standard, padded base64. `None` when the text is not valid base64.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

// ---------------------------------------------------------------------------------------
// Python repr of JSON values, for the `argsrepr`/`kwargsrepr` headers (logs, Flower)

/// `repr()` of the Python value a JSON value decodes to (`[1, 'a', None, True]`).
pub fn python_repr(v: &Json) -> String {
    let mut out = String::new();
    repr_into(v, &mut out);
    out
}

/// [`python_repr`] cut to `max` characters, ending in `...` when cut, like Celery's
/// `saferepr(value, maxlen)`.
pub fn python_repr_limited(v: &Json, max: usize) -> String {
    let full = python_repr(v);
    if full.chars().count() <= max {
        return full;
    }
    let mut cut: String = full.chars().take(max.saturating_sub(3)).collect();
    cut.push_str("...");
    cut
}

fn repr_into(v: &Json, out: &mut String) {
    match v {
        Json::Null => out.push_str("None"),
        Json::Bool(true) => out.push_str("True"),
        Json::Bool(false) => out.push_str("False"),
        Json::Number(n) => out.push_str(&n.to_string()),
        Json::String(s) => repr_str(s, out),
        Json::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr_into(x, out);
            }
            out.push(']');
        }
        Json::Object(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr_str(k, out);
                out.push_str(": ");
                repr_into(x, out);
            }
            out.push('}');
        }
    }
}

/// Python's `str.__repr__`: single quotes unless the text has `'` and no `"`.
fn repr_str(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn add_request() -> TaskRequest {
        TaskRequest {
            task: "tasks.add".into(),
            args: vec![json!(2), json!(3)],
            kwargs: Map::new(),
            countdown: None,
            expires: None,
            origin: "celeroot@web01".into(),
        }
    }

    /// The envelope of the reference's worked example (celery-interop.md §2.10), which a
    /// real Celery 5.7 worker ran; only the body's JSON spacing differs from Python's.
    #[test]
    fn envelope_matches_the_verified_example() {
        let id = "0f6c2a1e-5d7b-4c8e-9a41-3b2d1e0c9f01";
        let tag = "8d7e2c4a-1b3f-4e5d-8c6b-7a9f0e1d2c3b";
        let m = build_with(
            &add_request(),
            "celeroot.host.web01",
            at("2026-11-22T11:03:41Z"),
            id,
            tag,
        );
        let reference: Json = serde_json::from_str(r#"{"body": "W1syLCAzXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIjogbnVsbH1d", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "tasks.add", "id": "0f6c2a1e-5d7b-4c8e-9a41-3b2d1e0c9f01", "shadow": null, "eta": null, "expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], "root_id": "0f6c2a1e-5d7b-4c8e-9a41-3b2d1e0c9f01", "parent_id": null, "argsrepr": "[2, 3]", "kwargsrepr": "{}", "origin": "celeroot@web01", "ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}}, "properties": {"correlation_id": "0f6c2a1e-5d7b-4c8e-9a41-3b2d1e0c9f01", "reply_to": "", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "celeroot.host.web01"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "8d7e2c4a-1b3f-4e5d-8c6b-7a9f0e1d2c3b"}}"#).unwrap_or_default();
        // Same keys, same values, except the body's spacing: compare it decoded.
        let mut ours = m.envelope.clone();
        let mut theirs = reference.clone();
        let decode = |v: &mut Json| -> Json {
            let b = v["body"].as_str().unwrap_or_default().to_string();
            v["body"] = Json::Null;
            serde_json::from_slice(&base64_decode(&b).unwrap_or_default()).unwrap_or_default()
        };
        assert_eq!(decode(&mut ours), decode(&mut theirs));
        assert_eq!(ours, theirs);
        // Key order as Python writes it (serde_json preserve_order).
        let keys: Vec<&String> = m.envelope["headers"]
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        let ref_keys: Vec<&String> = reference["headers"]
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys, ref_keys);
        assert_eq!(m.list(), "celeroot.host.web01");
        assert_eq!(m.id, id);
    }

    #[test]
    fn body_is_base64_of_the_three_element_array() {
        let mut req = add_request();
        req.args = vec![json!("a"), json!({"x": [1, null]})];
        req.kwargs.insert("flag".into(), json!(true));
        let m = build_with(&req, "q", at("2026-11-22T11:03:41Z"), "i", "t");
        let text = m.envelope["body"].as_str().unwrap_or_default();
        let decoded: Json =
            serde_json::from_slice(&base64_decode(text).unwrap_or_default()).unwrap_or_default();
        assert_eq!(
            decoded,
            json!([["a", {"x": [1, null]}], {"flag": true}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}])
        );
        assert_eq!(m.envelope["headers"]["argsrepr"], "['a', {'x': [1, None]}]");
        assert_eq!(m.envelope["headers"]["kwargsrepr"], "{'flag': True}");
        // The minimal example of §2.5: base64 of `[[2,3],{},{}]`.
        assert_eq!(base64_encode(b"[[2,3],{},{}]"), "W1syLDNdLHt9LHt9XQ==");
    }

    #[test]
    fn countdown_and_expires_become_iso_headers_and_expiration() {
        // Celery: eta = now + countdown, expires = now + expires (both from the send time).
        let mut req = add_request();
        req.countdown = Some(10.0);
        req.expires = Some(60.0);
        let m = build_with(&req, "q", at("2026-11-22T10:50:46.556963Z"), "i", "t");
        let h = &m.envelope["headers"];
        assert_eq!(h["eta"], "2026-11-22T10:50:56.556963+00:00");
        assert_eq!(h["expires"], "2026-11-22T10:51:46.556963+00:00");
        assert_eq!(m.envelope["properties"]["expiration"], "60000");
        // Without expires there is no expiration property at all (as Python sends it).
        let plain = build_with(&add_request(), "q", at("2026-11-22T10:50:46Z"), "i", "t");
        assert!(plain.envelope["properties"].get("expiration").is_none());
        let mut frac = add_request();
        frac.countdown = Some(0.25);
        let f = build_with(&frac, "q", at("2026-11-22T10:50:46Z"), "i", "t");
        assert_eq!(
            f.envelope["headers"]["eta"],
            "2026-11-22T10:50:46.250000+00:00"
        );
    }

    #[test]
    fn every_required_field_is_present() {
        let m = build(&add_request(), "webserver", Utc::now());
        let e = &m.envelope;
        assert_eq!(e["content-type"], "application/json");
        assert_eq!(e["headers"]["task"], "tasks.add");
        assert_eq!(e["headers"]["id"], json!(m.id));
        assert_eq!(e["headers"]["root_id"], json!(m.id));
        assert_eq!(e["properties"]["delivery_info"]["exchange"], "");
        assert_eq!(e["properties"]["delivery_info"]["routing_key"], "webserver");
        let tag = e["properties"]["delivery_tag"].as_str().unwrap_or_default();
        assert!(!tag.is_empty() && tag != m.id, "a delivery tag of its own");
        assert_eq!(
            m.binding(),
            (
                "_kombu.binding.webserver".to_string(),
                "webserver\x06\x16\x06\x16webserver".to_string()
            )
        );
    }

    #[test]
    fn uuids_are_v4_shaped_and_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let u = uuid4();
            let parts: Vec<&str> = u.split('-').collect();
            assert_eq!(
                parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12]
            );
            assert!(u
                .chars()
                .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c)));
            assert!(parts[2].starts_with('4'), "{u}");
            assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{u}");
            assert!(seen.insert(u));
        }
    }

    #[test]
    fn base64_round_trips() {
        for s in ["", "f", "fo", "foo", "foob", "fooba", "foobar", "ünïcödé ✓"] {
            let e = base64_encode(s.as_bytes());
            assert_eq!(base64_decode(&e).as_deref(), Some(s.as_bytes()), "{s}");
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
        assert_eq!(base64_decode("Zm9v!mFy"), None);
        assert_eq!(base64_decode("Zm9"), None);
        assert_eq!(base64_decode("Zg==Zg=="), None);
    }

    #[test]
    fn python_repr_follows_python() {
        assert_eq!(python_repr(&json!([])), "[]");
        assert_eq!(python_repr(&json!({})), "{}");
        assert_eq!(
            python_repr(&json!([1, 2.5, "x", null, true, false])),
            "[1, 2.5, 'x', None, True, False]"
        );
        assert_eq!(python_repr(&json!("it's")), "\"it's\"");
        assert_eq!(python_repr(&json!("a'b\"c")), "'a\\'b\"c'");
        assert_eq!(python_repr(&json!("line\nnext\\")), "'line\\nnext\\\\'");
        assert_eq!(python_repr(&json!("\u{1}")), "'\\x01'");
        assert_eq!(python_repr(&json!({"k": [1]})), "{'k': [1]}");
        let long = json!(["x".repeat(2000)]);
        let r = python_repr_limited(&long, REPR_MAXSIZE);
        assert_eq!(r.chars().count(), REPR_MAXSIZE);
        assert!(r.ends_with("..."));
    }

    #[test]
    fn task_names_are_dotted_python_names() {
        assert!(validate_task_name("celeroot.ping").is_ok());
        assert!(validate_task_name("app.tasks.billing.sync_invoices").is_ok());
        for bad in ["", "celeroot.", "1abc", "a b", "a-b.c", "a..b", "rm -rf /"] {
            let e = validate_task_name(bad).err().unwrap_or_default();
            assert!(e.contains("invalid task name"), "{bad}: {e}");
        }
    }

    #[test]
    fn kombu_tagged_objects_are_found() {
        let v = json!([1, {"a": {"__type__": "datetime", "__value__": "x"}}]);
        assert_eq!(find_kombu_tagged(&v, "args").as_deref(), Some("args[1].a"));
        assert_eq!(
            find_kombu_tagged(&json!({"__type__": "x", "__value__": 1, "more": 2}), "k"),
            None
        );
    }

    /// The broadcast `app.control.revoke(...)` published, captured with MONITOR against
    /// Celery 5.7.0 / kombu 5.7.0 (delivery tag and expiry differ per call).
    #[test]
    fn revoke_matches_the_captured_broadcast() {
        let captured: Json = serde_json::from_str(r#"{"body": "eyJtZXRob2QiOiAicmV2b2tlIiwgImFyZ3VtZW50cyI6IHsidGFza19pZCI6ICIxMTExMTExMS0yMjIyLTQzMzMtODQ0NC01NTU1NTU1NTU1NTYiLCAidGVybWluYXRlIjogdHJ1ZSwgInNpZ25hbCI6ICJTSUdURVJNIn0sICJkZXN0aW5hdGlvbiI6IG51bGwsICJwYXR0ZXJuIjogbnVsbCwgIm1hdGNoZXIiOiBudWxsfQ==", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"clock": 2, "expires": 1795448960.4855769}, "properties": {"delivery_mode": 2, "delivery_info": {"exchange": "celery.pidbox", "routing_key": ""}, "priority": 0, "body_encoding": "base64", "delivery_tag": "bcebd6fa-3516-49c3-845e-b57b28ed60f6"}}"#).unwrap_or_default();
        let now = at("2026-11-23T15:49:19.4855769Z");
        let mut ours = revoke_envelope(
            "11111111-2222-4333-8444-555555555556",
            true,
            now,
            1.0,
            "bcebd6fa-3516-49c3-845e-b57b28ed60f6",
        );
        let mut theirs = captured;
        for v in [&mut ours, &mut theirs] {
            let b = v["body"].as_str().unwrap_or_default().to_string();
            let body: Json =
                serde_json::from_slice(&base64_decode(&b).unwrap_or_default()).unwrap_or_default();
            v["body"] = body;
            let exp = v["headers"]["expires"].as_f64().unwrap_or_default();
            assert!((exp - 1_795_448_960.485_577).abs() < 0.001, "{exp}");
            v["headers"]["expires"] = Json::Null;
            v["headers"]["clock"] = Json::Null;
        }
        assert_eq!(ours, theirs);
        assert_eq!(pidbox_channel(0), "/0.celery.pidbox");
        assert_eq!(pidbox_channel(3), "/3.celery.pidbox");
    }
}
