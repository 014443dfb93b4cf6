//! The key image: the exact Redis keys and values a desired state corresponds to.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::keys::Keys;
use crate::desired::DesiredState;

/// The value of one Redis key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum KeyValue {
    String(String),
    Hash(BTreeMap<String, String>),
    Set(BTreeSet<String>),
}

impl KeyValue {
    /// `sha256:` of the canonical JSON of the value.
    pub fn digest(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("sha256:{:x}", Sha256::digest(json.as_bytes()))
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            KeyValue::String(_) => "string",
            KeyValue::Hash(_) => "hash",
            KeyValue::Set(_) => "set",
        }
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
    with_digests(keys, img)
}

/// The JSON stored per object in the objects hash: its hash, its normalised form, and for
/// schedules the queues it was routed to.
pub fn object_entry(
    hash: &str,
    normalized: &serde_json::Value,
    entries: Option<&[crate::desired::ScheduleEntry]>,
) -> String {
    match entries {
        Some(e) => {
            serde_json::json!({"hash": hash, "object": normalized, "entries": e}).to_string()
        }
        None => serde_json::json!({"hash": hash, "object": normalized}).to_string(),
    }
}

/// Removes empty hashes and sets, which cannot exist in Redis.
pub fn normalize(img: Image) -> Image {
    img.into_iter()
        .filter(|(_, v)| match v {
            KeyValue::Hash(m) => !m.is_empty(),
            KeyValue::Set(s) => !s.is_empty(),
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
