//! Key-level plans: the Redis writes that turn a live key image into a desired one.
//!
//! Pure functions over [`Image`]s, so the planner is tested without any store:
//! `apply_ops(live, plan_keys(desired, live)) == desired`. Lives in `state` (the store
//! applies these writes); `plan::keys` re-exports it.
//! Must not know: objects, plans of objects, or Redis connections.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Image, KeyValue};

/// Hash fields and set members are written in chunks of at most this many, so that a
/// Lua script never unpacks an unbounded argument list.
pub const CHUNK: usize = 500;

/// One write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum KeyOp {
    Del {
        key: String,
    },
    Set {
        key: String,
        value: String,
    },
    /// Field/value pairs, flattened.
    Hset {
        key: String,
        args: Vec<String>,
    },
    Hdel {
        key: String,
        args: Vec<String>,
    },
    Sadd {
        key: String,
        args: Vec<String>,
    },
    Srem {
        key: String,
        args: Vec<String>,
    },
    /// Field/value pairs written only where the field is absent.
    Hsetnx {
        key: String,
        args: Vec<String>,
    },
    /// Score/member pairs.
    Zadd {
        key: String,
        args: Vec<String>,
    },
    Zrem {
        key: String,
        args: Vec<String>,
    },
}

impl KeyOp {
    pub fn key(&self) -> &str {
        match self {
            KeyOp::Del { key }
            | KeyOp::Set { key, .. }
            | KeyOp::Hset { key, .. }
            | KeyOp::Hdel { key, .. }
            | KeyOp::Sadd { key, .. }
            | KeyOp::Srem { key, .. }
            | KeyOp::Hsetnx { key, .. }
            | KeyOp::Zadd { key, .. }
            | KeyOp::Zrem { key, .. } => key,
        }
    }
}

fn chunked(
    key: &str,
    items: Vec<String>,
    per: usize,
    make: fn(String, Vec<String>) -> KeyOp,
    out: &mut Vec<KeyOp>,
) {
    for c in items.chunks(per.max(1)) {
        out.push(make(key.to_string(), c.to_vec()));
    }
}

fn create(key: &str, v: &KeyValue, out: &mut Vec<KeyOp>) {
    match v {
        KeyValue::String(s) => out.push(KeyOp::Set {
            key: key.into(),
            value: s.clone(),
        }),
        KeyValue::Hash(m) => {
            let flat: Vec<String> = m.iter().flat_map(|(f, v)| [f.clone(), v.clone()]).collect();
            chunked(
                key,
                flat,
                CHUNK * 2,
                |key, args| KeyOp::Hset { key, args },
                out,
            );
        }
        KeyValue::Set(s) => chunked(
            key,
            s.iter().cloned().collect(),
            CHUNK,
            |key, args| KeyOp::Sadd { key, args },
            out,
        ),
        KeyValue::Fields { owned, init } => {
            let flat: Vec<String> = owned
                .iter()
                .flat_map(|(f, v)| [f.clone(), v.clone()])
                .collect();
            chunked(
                key,
                flat,
                CHUNK * 2,
                |key, args| KeyOp::Hset { key, args },
                out,
            );
            for (f, v) in init {
                out.push(KeyOp::Hsetnx {
                    key: key.into(),
                    args: vec![f.clone(), v.clone()],
                });
            }
        }
        KeyValue::Members { members, now } => {
            let flat: Vec<String> = members
                .iter()
                .flat_map(|m| [now.to_string(), m.clone()])
                .collect();
            chunked(
                key,
                flat,
                CHUNK * 2,
                |key, args| KeyOp::Zadd { key, args },
                out,
            );
        }
    }
}

/// `HSET` the fields of `w` that differ from `l`, `HDEL` the fields only `l` has.
fn field_changes(
    key: &str,
    l: &BTreeMap<String, String>,
    w: &BTreeMap<String, String>,
    out: &mut Vec<KeyOp>,
) {
    let set: Vec<String> = w
        .iter()
        .filter(|(f, v)| l.get(*f) != Some(v))
        .flat_map(|(f, v)| [f.clone(), v.clone()])
        .collect();
    let del: Vec<String> = l.keys().filter(|f| !w.contains_key(*f)).cloned().collect();
    chunked(
        key,
        set,
        CHUNK * 2,
        |key, args| KeyOp::Hset { key, args },
        out,
    );
    chunked(key, del, CHUNK, |key, args| KeyOp::Hdel { key, args }, out);
}

/// Field-level changes between two values of the same type.
fn update(key: &str, live: &KeyValue, want: &KeyValue, out: &mut Vec<KeyOp>) {
    match (live, want) {
        (KeyValue::Hash(l), KeyValue::Hash(w)) => {
            if w.is_empty() {
                out.push(KeyOp::Del { key: key.into() });
                return;
            }
            field_changes(key, l, w, out);
        }
        (KeyValue::Set(l), KeyValue::Set(w)) => {
            if w.is_empty() {
                out.push(KeyOp::Del { key: key.into() });
                return;
            }
            let add: Vec<String> = w.difference(l).cloned().collect();
            let rem: Vec<String> = l.difference(w).cloned().collect();
            chunked(key, add, CHUNK, |key, args| KeyOp::Sadd { key, args }, out);
            chunked(key, rem, CHUNK, |key, args| KeyOp::Srem { key, args }, out);
        }
        (KeyValue::Fields { owned: l, .. }, KeyValue::Fields { owned: w, .. }) => {
            // Only owned fields are written or removed (`l` holds only owned fields, see
            // `state::project_owned`); fields owned by others are never touched.
            field_changes(key, l, w, out);
        }
        (KeyValue::Members { members: l, .. }, KeyValue::Members { members: w, now }) => {
            if w.is_empty() {
                out.push(KeyOp::Del { key: key.into() });
                return;
            }
            let add: Vec<String> = w
                .difference(l)
                .flat_map(|m| [now.to_string(), m.clone()])
                .collect();
            let rem: Vec<String> = l.difference(w).cloned().collect();
            chunked(
                key,
                add,
                CHUNK * 2,
                |key, args| KeyOp::Zadd { key, args },
                out,
            );
            chunked(key, rem, CHUNK, |key, args| KeyOp::Zrem { key, args }, out);
        }
        (_, want) => {
            out.push(KeyOp::Del { key: key.into() });
            create(key, want, out);
        }
    }
}

/// The writes that make `live` equal to `desired`. Keys in `live` but not in `desired`
/// are deleted. Deterministic: ordered by key.
///
/// A changed `Fields` key that is a member of a desired `Members` set is re-added with the
/// score `now` (RedBeat: re-index an updated entry, so a tighter schedule is not hidden
/// behind an old, later due time; beat writes the exact score after the next run).
pub fn plan_keys(desired: &Image, live: &Image) -> Vec<KeyOp> {
    let mut out = Vec::new();
    let mut updated_fields: BTreeSet<&String> = BTreeSet::new();
    let keys: BTreeSet<&String> = desired.keys().chain(live.keys()).collect();
    for key in keys {
        match (live.get(key), desired.get(key)) {
            (None, Some(w)) => create(key, w, &mut out),
            (Some(l), Some(w)) if l != w => {
                if matches!((l, w), (KeyValue::Fields { .. }, KeyValue::Fields { .. })) {
                    updated_fields.insert(key);
                }
                update(key, l, w, &mut out);
            }
            (Some(_), None) => out.push(KeyOp::Del { key: key.clone() }),
            _ => {}
        }
    }
    for (key, v) in desired {
        if let KeyValue::Members { members, now } = v {
            let reindex: Vec<String> = members
                .iter()
                .filter(|m| updated_fields.contains(m))
                .flat_map(|m| [now.to_string(), m.clone()])
                .collect();
            chunked(
                key,
                reindex,
                CHUNK * 2,
                |key, args| KeyOp::Zadd { key, args },
                &mut out,
            );
        }
    }
    out
}

/// Applies writes to an image in memory, with Redis semantics (an emptied hash or set
/// disappears). The Lua apply script does the same on the server.
pub fn apply_ops(mut img: Image, ops: &[KeyOp]) -> Image {
    for op in ops {
        match op {
            KeyOp::Del { key } => {
                img.remove(key);
            }
            KeyOp::Set { key, value } => {
                img.insert(key.clone(), KeyValue::String(value.clone()));
            }
            KeyOp::Hset { key, args } => {
                let entry = img
                    .entry(key.clone())
                    .or_insert_with(|| KeyValue::Hash(BTreeMap::new()));
                let m = match entry {
                    KeyValue::Hash(m) => Some(m),
                    KeyValue::Fields { owned, .. } => Some(owned),
                    _ => None,
                };
                if let Some(m) = m {
                    for pair in args.chunks(2) {
                        if let [f, v] = pair {
                            m.insert(f.clone(), v.clone());
                        }
                    }
                }
            }
            KeyOp::Hdel { key, args } => {
                if let Some(KeyValue::Fields { owned, .. }) = img.get_mut(key) {
                    for f in args {
                        owned.remove(f);
                    }
                    if owned.is_empty() {
                        img.remove(key);
                    }
                } else if let Some(KeyValue::Hash(m)) = img.get_mut(key) {
                    for f in args {
                        m.remove(f);
                    }
                    if m.is_empty() {
                        img.remove(key);
                    }
                }
            }
            KeyOp::Sadd { key, args } => {
                let entry = img
                    .entry(key.clone())
                    .or_insert_with(|| KeyValue::Set(BTreeSet::new()));
                if let KeyValue::Set(s) = entry {
                    s.extend(args.iter().cloned());
                }
            }
            KeyOp::Srem { key, args } => {
                if let Some(KeyValue::Set(s)) = img.get_mut(key) {
                    for m in args {
                        s.remove(m);
                    }
                    if s.is_empty() {
                        img.remove(key);
                    }
                }
            }
            KeyOp::Hsetnx { key, args } => {
                // A created Fields key arrives here as a Hash: turn it into Fields.
                let owned = match img.remove(key) {
                    Some(KeyValue::Hash(h)) => h,
                    Some(KeyValue::Fields { owned, .. }) => owned,
                    Some(other) => {
                        img.insert(key.clone(), other);
                        continue;
                    }
                    None => BTreeMap::new(),
                };
                let init: BTreeMap<String, String> = args
                    .chunks(2)
                    .filter_map(|p| match p {
                        [f, v] => Some((f.clone(), v.clone())),
                        _ => None,
                    })
                    .collect();
                img.insert(key.clone(), KeyValue::Fields { owned, init });
            }
            KeyOp::Zadd { key, args } => {
                let entry = img.entry(key.clone()).or_insert_with(|| KeyValue::Members {
                    members: BTreeSet::new(),
                    now: 0,
                });
                if let KeyValue::Members { members, .. } = entry {
                    members.extend(args.chunks(2).filter_map(|p| p.get(1).cloned()));
                }
            }
            KeyOp::Zrem { key, args } => {
                if let Some(KeyValue::Members { members, .. }) = img.get_mut(key) {
                    for m in args {
                        members.remove(m);
                    }
                    if members.is_empty() {
                        img.remove(key);
                    }
                }
            }
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::normalize;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = KeyValue> {
        prop_oneof![
            "[a-c]{0,2}".prop_map(KeyValue::String),
            prop::collection::btree_map("[a-d]", "[x-z]{1,2}", 0..4).prop_map(KeyValue::Hash),
            prop::collection::btree_set("[a-d]", 0..4).prop_map(KeyValue::Set),
            prop::collection::btree_map("[a-b]", "[x-z]{1,2}", 0..3).prop_map(|owned| {
                KeyValue::Fields {
                    owned,
                    init: BTreeMap::from([("meta".to_string(), "m".to_string())]),
                }
            }),
            prop::collection::btree_set("k[0-5]", 0..4)
                .prop_map(|members| KeyValue::Members { members, now: 7 }),
        ]
    }

    fn image() -> impl Strategy<Value = Image> {
        prop::collection::btree_map("k[0-5]", value(), 0..6).prop_map(normalize)
    }

    proptest! {
        #[test]
        fn applying_the_plan_to_live_yields_desired(desired in image(), live in image()) {
            let ops = plan_keys(&desired, &live);
            prop_assert_eq!(apply_ops(live.clone(), &ops), desired.clone());
            // And a second plan is empty: the planner converges in one step.
            prop_assert!(plan_keys(&desired, &apply_ops(live, &ops)).is_empty());
        }
    }

    #[test]
    fn large_hashes_are_written_in_chunks() {
        let big: BTreeMap<String, String> = (0..1200)
            .map(|i| (format!("f{i}"), "v".to_string()))
            .collect();
        let desired = Image::from([("k".to_string(), KeyValue::Hash(big))]);
        let ops = plan_keys(&desired, &Image::new());
        assert_eq!(ops.len(), 3);
        assert!(ops
            .iter()
            .all(|o| matches!(o, KeyOp::Hset { args, .. } if args.len() <= CHUNK * 2)));
    }
}
