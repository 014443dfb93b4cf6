//! The key image: the exact Redis keys and values a desired state corresponds to.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::digest::{self, Sum, Tag};
use super::keys::Keys;
use crate::desired::{CompiledSchedule, DesiredState, ScheduleEntry, Trigger};

/// The value of one Redis key, as far as celeroot owns it.
#[derive(Debug, Clone, Eq, Serialize)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum KeyValue {
    String(String),
    Hash(BTreeMap<String, String>),
    Set(BTreeSet<String>),
    /// A hash of which celeroot owns only these fields (a RedBeat entry's `definition`);
    /// `init` fields are written once, when the key is created (`HSETNX`), and belong to
    /// someone else afterwards (beat's `meta`). Equality and digests see `owned` only.
    Fields {
        owned: BTreeMap<String, String>,
        #[serde(skip)]
        init: BTreeMap<String, String>,
    },
    /// A sorted set of which celeroot owns the membership; scores belong to someone else
    /// (RedBeat's due-time index). New members get the score `now` (UNIX seconds).
    Members {
        members: BTreeSet<String>,
        #[serde(skip)]
        now: u64,
    },
}

impl PartialEq for KeyValue {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (KeyValue::String(a), KeyValue::String(b)) => a == b,
            (KeyValue::Hash(a), KeyValue::Hash(b)) => a == b,
            (KeyValue::Set(a), KeyValue::Set(b)) => a == b,
            (KeyValue::Fields { owned: a, .. }, KeyValue::Fields { owned: b, .. }) => a == b,
            (KeyValue::Members { members: a, .. }, KeyValue::Members { members: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl KeyValue {
    /// The digest the `digests` hash records for this value (`super::digest`).
    pub fn digest(&self) -> String {
        self.sum().render()
    }

    /// The sum of this value's elements (see `super::digest`).
    pub fn sum(&self) -> Sum {
        match self {
            KeyValue::String(s) => digest::sum(Tag::String, [[s.as_str()]]),
            KeyValue::Hash(h) => digest::sum(Tag::Hash, h.iter().map(|(f, v)| [f.as_str(), v])),
            KeyValue::Fields { owned, .. } => {
                digest::sum(Tag::Fields, owned.iter().map(|(f, v)| [f.as_str(), v]))
            }
            KeyValue::Set(m) => digest::sum(Tag::Set, m.iter().map(|m| [m.as_str()])),
            KeyValue::Members { members, .. } => {
                digest::sum(Tag::Members, members.iter().map(|m| [m.as_str()]))
            }
        }
    }

    /// Whether `recorded` is this value's digest, in this release's format or in the one
    /// earlier releases wrote (`sha256:` of the canonical JSON of the value).
    pub fn digest_matches(&self, recorded: &str) -> bool {
        if recorded.starts_with(digest::LEGACY_PREFIX) {
            super::json_digest(self).as_deref() == Some(recorded)
        } else {
            Sum::parse(recorded) == Some(self.sum())
        }
    }

    /// The digest of this value, which was `old` when its digest was `recorded`: only
    /// the elements that differ are hashed (a whole new digest when `recorded` is of an
    /// earlier format or `old` is of another type).
    pub fn digest_from(&self, old: &KeyValue, recorded: &str) -> String {
        let Some(mut s) = Sum::parse(recorded) else {
            return self.digest();
        };
        match (old, self) {
            (KeyValue::Hash(a), KeyValue::Hash(b)) => patch_pairs(&mut s, Tag::Hash, a, b),
            (KeyValue::Fields { owned: a, .. }, KeyValue::Fields { owned: b, .. }) => {
                patch_pairs(&mut s, Tag::Fields, a, b);
            }
            (KeyValue::Set(a), KeyValue::Set(b)) => patch_members(&mut s, Tag::Set, a, b),
            (KeyValue::Members { members: a, .. }, KeyValue::Members { members: b, .. }) => {
                patch_members(&mut s, Tag::Members, a, b);
            }
            _ => return self.digest(),
        }
        s.render()
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            KeyValue::String(_) => "string",
            KeyValue::Hash(_) | KeyValue::Fields { .. } => "hash",
            KeyValue::Set(_) => "set",
            KeyValue::Members { .. } => "zset",
        }
    }
}

/// `sum` patched from the pairs `a` to the pairs `b`.
fn patch_pairs(
    sum: &mut Sum,
    tag: Tag,
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
) {
    for (f, v) in a {
        if b.get(f) != Some(v) {
            sum.sub(Sum::element(tag, &[f, v]));
        }
    }
    for (f, v) in b {
        if a.get(f) != Some(v) {
            sum.add(Sum::element(tag, &[f, v]));
        }
    }
}

/// `sum` patched from the members `a` to the members `b`.
fn patch_members(sum: &mut Sum, tag: Tag, a: &BTreeSet<String>, b: &BTreeSet<String>) {
    for m in a.difference(b) {
        sum.sub(Sum::element(tag, &[m]));
    }
    for m in b.difference(a) {
        sum.add(Sum::element(tag, &[m]));
    }
}

/// Managed keys and their values.
pub type Image = BTreeMap<String, KeyValue>;

/// The release every host should run, when the revision ships worker code.
pub type Release = Option<String>;

/// The worker configuration hash of one host, as documented in docs/state.md.
pub fn worker_fields(
    d: &DesiredState,
    host: &str,
    release: &Release,
) -> Option<BTreeMap<String, String>> {
    let h = d.hosts.get(host)?;
    let roles = || h.roles.iter().filter_map(|r| d.roles.get(r));
    // One worker serves all of a host's roles: it gets the largest concurrency any role
    // asks for, and the strictest recycling limit (roles that set none do not relax it).
    let concurrency = roles().filter_map(|r| r.concurrency).max();
    let max_tasks = roles().filter_map(|r| r.max_tasks_per_child).min();
    let mut m = BTreeMap::new();
    m.insert("address".into(), h.address.clone());
    m.insert(
        "roles".into(),
        serde_json::to_string(&h.roles).unwrap_or_default(),
    );
    m.insert(
        "queues".into(),
        serde_json::to_string(&h.queues).unwrap_or_default(),
    );
    m.insert(
        "concurrency".into(),
        concurrency.map(|n| n.to_string()).unwrap_or_default(),
    );
    m.insert(
        "max_tasks_per_child".into(),
        max_tasks.map(|n| n.to_string()).unwrap_or_default(),
    );
    m.insert("release".into(), release.clone().unwrap_or_default());
    Some(m)
}

/// The key image of a desired state: objects, hosts, worker configurations, the role
/// index, and the digests of all of them.
pub fn desired_image(keys: &Keys, d: &DesiredState, release: &Release) -> Image {
    with_digests(keys, desired_image_undigested(keys, d, release))
}

/// [`desired_image`] without the digests hash (see [`with_digests_reusing`]).
pub fn desired_image_undigested(keys: &Keys, d: &DesiredState, release: &Release) -> Image {
    let mut img = Image::new();
    let objects: BTreeMap<String, String> = d
        .objects
        .iter()
        .map(|(id, o)| {
            let entries = match id.kind {
                crate::manifest::Kind::Schedule => {
                    d.schedules.get(&id.name).map(|s| s.entries.as_slice())
                }
                _ => None,
            };
            (
                id.to_string(),
                object_entry(&o.hash, &o.normalized, entries),
            )
        })
        .collect();
    img.insert(keys.objects(), KeyValue::Hash(objects));
    img.insert(
        keys.hosts(),
        KeyValue::Set(d.hosts.keys().cloned().collect()),
    );
    for host in d.hosts.keys() {
        if let Some(fields) = worker_fields(d, host, release) {
            img.insert(keys.worker(host), KeyValue::Hash(fields));
        }
    }
    for (role, r) in &d.roles {
        img.insert(
            keys.role_hosts(role),
            KeyValue::Set(r.hosts.iter().cloned().collect()),
        );
    }
    let now = chrono::Utc::now();
    let mut members = BTreeSet::new();
    // Every entry of one time zone starts with the same meta: build it once per zone.
    let mut metas: BTreeMap<&str, String> = BTreeMap::new();
    for (name, s) in &d.schedules {
        for e in &s.entries {
            let entry = redbeat_entry_name(name, e);
            let key = keys.redbeat_entry(&entry);
            let owned = BTreeMap::from([(
                "definition".to_string(),
                redbeat_definition(&entry, s, &e.queue),
            )]);
            let meta = metas
                .entry(s.timezone.as_str())
                .or_insert_with(|| redbeat_meta(now, &s.timezone))
                .clone();
            let init = BTreeMap::from([("meta".to_string(), meta)]);
            img.insert(key.clone(), KeyValue::Fields { owned, init });
            members.insert(key);
        }
    }
    img.insert(
        keys.redbeat_schedule(),
        KeyValue::Members {
            members,
            now: u64::try_from(now.timestamp()).unwrap_or(0),
        },
    );
    img
}

/// The RedBeat entry name of one schedule target: `<schedule>.host.<host>` or
/// `<schedule>.role.<role>` (names are RFC 1123 labels, so this is unambiguous).
pub fn redbeat_entry_name(schedule: &str, e: &ScheduleEntry) -> String {
    format!("{schedule}.{}.{}", e.kind, e.name)
}

/// The `definition` JSON RedBeat reads: exactly its seven keys (any other key crashes
/// beat), the name equal to the key suffix, routing through `options.queue`.
pub fn redbeat_definition(entry: &str, s: &CompiledSchedule, queue: &str) -> String {
    let schedule = match &s.trigger {
        Trigger::Cron(c) => serde_json::json!({
            "__type__": "crontab",
            "minute": c.minute,
            "hour": c.hour,
            "day_of_week": c.day_of_week,
            "day_of_month": c.day_of_month,
            "month_of_year": c.month_of_year,
        }),
        Trigger::Every(secs) => {
            serde_json::json!({"__type__": "interval", "every": *secs as f64, "relative": false})
        }
    };
    let mut options = serde_json::Map::new();
    options.insert("queue".into(), serde_json::json!(queue));
    // Passed to apply_async: the run collector recognises this entry's tasks by it.
    options.insert(
        "root_id".into(),
        serde_json::json!(super::runs::schedule_root_id(entry)),
    );
    if let Some(e) = s.expires {
        options.insert("expires".into(), serde_json::json!(e));
    }
    if let Some(p) = s.priority {
        options.insert("priority".into(), serde_json::json!(p));
    }
    serde_json::json!({
        "name": entry,
        "task": s.task,
        "args": s.args,
        "kwargs": s.kwargs,
        "options": options,
        "schedule": schedule,
        "enabled": s.enabled,
    })
    .to_string()
}

/// The `meta` written when an entry is created: last run = now, in the app time zone, so
/// a new entry fires at its next schedule point rather than at once.
pub fn redbeat_meta(now: chrono::DateTime<chrono::Utc>, timezone: &str) -> String {
    use chrono::{Datelike, Timelike};
    let tz: chrono_tz::Tz = timezone.parse().unwrap_or(chrono_tz::UTC);
    let t = now.with_timezone(&tz);
    serde_json::json!({
        "last_run_at": {
            "__type__": "datetime",
            "year": t.year(), "month": t.month(), "day": t.day(),
            "hour": t.hour(), "minute": t.minute(), "second": t.second(),
            "microsecond": 0,
            "timezone": timezone,
        },
        "total_run_count": 0,
    })
    .to_string()
}

/// Restricts observed values to what celeroot owns: RedBeat entry hashes to their
/// `definition` (beat owns `meta`).
pub fn project_owned(keys: &Keys, img: Image) -> Image {
    img.into_iter()
        .map(|(k, v)| {
            let v = match v {
                KeyValue::Hash(h) if keys.is_redbeat_entry(&k) => KeyValue::Fields {
                    owned: h.into_iter().filter(|(f, _)| f == "definition").collect(),
                    init: BTreeMap::new(),
                },
                other => other,
            };
            (k, v)
        })
        .collect()
}

/// The JSON stored per object in the objects hash: its hash, its normalised form, and for
/// schedules the queues it was routed to.
pub fn object_entry(
    hash: &str,
    normalized: &crate::desired::ObjectJson,
    entries: Option<&[crate::desired::ScheduleEntry]>,
) -> String {
    // Spliced as text (the object is already compact JSON): the same bytes as
    // serialising `{"hash", "object"[, "entries"]}` in that order.
    let hash = serde_json::Value::from(hash).to_string();
    match entries {
        Some(e) => format!(
            "{{\"hash\":{hash},\"object\":{},\"entries\":{}}}",
            normalized.as_str(),
            serde_json::to_string(e).unwrap_or_else(|_| "[]".into())
        ),
        None => format!("{{\"hash\":{hash},\"object\":{}}}", normalized.as_str()),
    }
}

/// Removes empty hashes and sets, which cannot exist in Redis.
pub fn normalize(img: Image) -> Image {
    img.into_iter()
        .filter(|(_, v)| match v {
            KeyValue::Hash(m) => !m.is_empty(),
            KeyValue::Set(s) => !s.is_empty(),
            KeyValue::Fields { owned, .. } => !owned.is_empty(),
            KeyValue::Members { members, .. } => !members.is_empty(),
            KeyValue::String(_) => true,
        })
        .collect()
}

/// Drops empty hashes and sets (Redis has no empty collections: the key just does not
/// exist), then adds (or replaces) the digests hash over every other key.
pub fn with_digests(keys: &Keys, img: Image) -> Image {
    let mut img = normalize(img);
    img.remove(&keys.digests());
    let digests: BTreeMap<String, String> =
        img.iter().map(|(k, v)| (k.clone(), v.digest())).collect();
    img.insert(keys.digests(), KeyValue::Hash(digests));
    img
}

/// [`with_digests`], taking the digest of every value equal to its value in `previous`
/// (an image with digests) from `previous` instead of hashing it again.
pub fn with_digests_reusing(keys: &Keys, img: Image, previous: &Image) -> Image {
    let mut img = normalize(img);
    img.remove(&keys.digests());
    let old = match previous.get(&keys.digests()) {
        Some(KeyValue::Hash(d)) => Some(d),
        _ => None,
    };
    let digests: BTreeMap<String, String> = img
        .iter()
        .map(|(k, v)| {
            let reused = old
                .filter(|_| previous.get(k) == Some(v))
                .and_then(|d| d.get(k).cloned());
            (k.clone(), reused.unwrap_or_else(|| v.digest()))
        })
        .collect();
    img.insert(keys.digests(), KeyValue::Hash(digests));
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_image() -> Image {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let snapshot = crate::source::read_worktree(root, "manifests")
            .unwrap_or_else(|e| panic!("the example manifests: {e}"));
        let compiled = crate::compile_snapshot(snapshot)
            .unwrap_or_else(|e| panic!("the example compiles: {e}"));
        let keys = Keys::new(&compiled.state.cluster);
        desired_image_undigested(&keys, &compiled.state, &None)
    }

    /// A digest recorded by an earlier release (`sha256:` of the canonical JSON) still
    /// matches the value it was taken of, and nothing else.
    #[test]
    fn digests_of_both_formats_match_their_value_only() {
        let img = example_image();
        let other = KeyValue::String("something else".into());
        for (key, v) in &img {
            let legacy = super::super::json_digest(v).unwrap_or_default();
            assert!(legacy.starts_with(digest::LEGACY_PREFIX), "{key}");
            assert!(v.digest_matches(&legacy), "{key}");
            assert!(v.digest_matches(&v.digest()), "{key}");
            assert!(!other.digest_matches(&legacy), "{key}");
            assert!(!other.digest_matches(&v.digest()), "{key}");
            assert!(!v.digest_matches("sum256:not-hex"), "{key}");
        }
    }

    /// Patching a digest with the elements that changed gives the digest of the new value.
    #[test]
    fn a_patched_digest_equals_the_whole_digest() {
        let img = example_image();
        for (key, v) in &img {
            let mut edited = v.clone();
            match &mut edited {
                KeyValue::Hash(h) | KeyValue::Fields { owned: h, .. } => {
                    let first = h.keys().next().cloned().unwrap_or_default();
                    h.remove(&first);
                    h.insert("added".into(), "1".into());
                }
                KeyValue::Set(m) | KeyValue::Members { members: m, .. } => {
                    let first = m.iter().next().cloned().unwrap_or_default();
                    m.remove(&first);
                    m.insert("added".into());
                }
                KeyValue::String(s) => s.push('!'),
            }
            assert_ne!(edited.digest(), v.digest(), "{key}");
            assert_eq!(edited.digest_from(v, &v.digest()), edited.digest(), "{key}");
            let legacy = super::super::json_digest(v).unwrap_or_default();
            assert_eq!(edited.digest_from(v, &legacy), edited.digest(), "{key}");
        }
    }
}
