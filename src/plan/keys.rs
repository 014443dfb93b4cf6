//! Key-level plans: the Redis writes that turn a live key image into a desired one.
//!
//! Pure functions over [`Image`]s, so the planner is tested without any store:
//! `apply_ops(live, plan_keys(desired, live)) == desired`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::state::{Image, KeyValue};

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
}

impl KeyOp {
    pub fn key(&self) -> &str {
        match self {
            KeyOp::Del { key }
            | KeyOp::Set { key, .. }
            | KeyOp::Hset { key, .. }
            | KeyOp::Hdel { key, .. }
            | KeyOp::Sadd { key, .. }
            | KeyOp::Srem { key, .. } => key,
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
    }
}

/// Field-level changes between two values of the same type.
fn update(key: &str, live: &KeyValue, want: &KeyValue, out: &mut Vec<KeyOp>) {
    match (live, want) {
        (KeyValue::Hash(l), KeyValue::Hash(w)) => {
            let set: Vec<String> = w
                .iter()
                .filter(|(f, v)| l.get(*f) != Some(v))
                .flat_map(|(f, v)| [f.clone(), v.clone()])
                .collect();
            let del: Vec<String> = l.keys().filter(|f| !w.contains_key(*f)).cloned().collect();
            if w.is_empty() {
                out.push(KeyOp::Del { key: key.into() });
                return;
            }
            chunked(
                key,
                set,
                CHUNK * 2,
                |key, args| KeyOp::Hset { key, args },
                out,
            );
            chunked(key, del, CHUNK, |key, args| KeyOp::Hdel { key, args }, out);
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
        (_, want) => {
            out.push(KeyOp::Del { key: key.into() });
            create(key, want, out);
        }
    }
}

/// The writes that make `live` equal to `desired`. Keys in `live` but not in `desired`
/// are deleted. Deterministic: ordered by key.
pub fn plan_keys(desired: &Image, live: &Image) -> Vec<KeyOp> {
    let mut out = Vec::new();
    let keys: BTreeSet<&String> = desired.keys().chain(live.keys()).collect();
    for key in keys {
        match (live.get(key), desired.get(key)) {
            (None, Some(w)) => create(key, w, &mut out),
            (Some(l), Some(w)) if l != w => update(key, l, w, &mut out),
            (Some(_), None) => out.push(KeyOp::Del { key: key.clone() }),
            _ => {}
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
                if let KeyValue::Hash(m) = entry {
                    for pair in args.chunks(2) {
                        if let [f, v] = pair {
                            m.insert(f.clone(), v.clone());
                        }
                    }
                }
            }
            KeyOp::Hdel { key, args } => {
                if let Some(KeyValue::Hash(m)) = img.get_mut(key) {
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
