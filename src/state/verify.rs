//! The settled record and the check behind `celeroot reconcile`'s fast no-op.
//!
//! Owns: the `settled` hash (which revision, generation, manifests path and build of
//! celeroot last left the live state equal to its desired state) and the out-of-band edit
//! check that needs no desired state: every key named by the digests hash is read back
//! with native pipelined commands (no script, so the server is never blocked for long) and
//! its digest compared with the recorded one.
//! Must not know: how a desired state is compiled, YAML, git, or output formats.

use std::collections::BTreeMap;

use redis::Value;

use super::digest::{self, Sum, Tag};
use super::keys::{LAYOUT_VERSION, OWNER_KEY};
use super::store::Store;
use super::KeyValue;
use super::StateError;

/// Commands per pipelined request of the check (bounds the memory of one reply).
const CHECK_CHUNK: usize = 4_000;

/// What the `settled` hash records: after a reconcile that left the live managed keys
/// equal to the desired state of `revision` (compiled from `path` by `build`) at
/// `generation`, the digests hash is exactly that desired state's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settled {
    pub revision: String,
    pub generation: u64,
    /// The manifests path inside the repository.
    pub path: String,
    /// The build of celeroot that compiled the revision ([`build_id`]).
    pub build: String,
    /// The release the revision ships (empty: none).
    pub release: String,
    /// Warnings the revision's manifests had when it was compiled.
    pub warnings: usize,
}

/// The outcome of [`Store::check_digests`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DigestCheck {
    /// Keys read and compared.
    pub checked: usize,
    /// Keys whose value (or type, or existence) differs from their recorded digest, and
    /// digest fields naming keys celeroot may not own.
    pub differing: Vec<String>,
    /// The generation before and after the check (equal when nothing was applied during
    /// it).
    pub generations: (u64, u64),
}

impl DigestCheck {
    /// Every key matched and no reconcile ran meanwhile.
    pub fn clean(&self) -> bool {
        self.differing.is_empty() && self.generations.0 == self.generations.1
    }
}

/// This build of celeroot: its version and the size and modification time of its
/// executable, so two builds of one version (a developer's) are told apart and a settled
/// record is only trusted by the build that compiled it. When the executable cannot be
/// examined, an id no other process has (its settled records are never trusted).
pub fn build_id() -> String {
    let since_epoch = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_nanos())
    };
    let exe = std::env::current_exe()
        .and_then(std::fs::metadata)
        .ok()
        .and_then(|m| Some(format!("{}-{}", m.len(), since_epoch(m.modified().ok()?)?)))
        .unwrap_or_else(|| {
            let now = since_epoch(std::time::SystemTime::now()).unwrap_or(0);
            format!("unknown-{}-{now}", std::process::id())
        });
    format!("{}+{exe}", env!("CARGO_PKG_VERSION"))
}

impl Store {
    /// The cluster that owns this database (the owner key), if one does.
    ///
    /// # Errors
    /// Redis errors.
    pub fn database_owner(&mut self) -> Result<Option<String>, StateError> {
        let v: Option<String> = self.query(redis::cmd("GET").arg(OWNER_KEY))?;
        Ok(v.filter(|s| !s.is_empty()))
    }

    /// The settled record, when there is one that the current layout can read.
    ///
    /// # Errors
    /// Redis errors.
    pub fn settled(&mut self) -> Result<Option<Settled>, StateError> {
        let k = self.keys().clone();
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(k.layout());
        pipe.cmd("HGETALL").arg(k.settled());
        pipe.cmd("HGET").arg(k.applied()).arg("revision");
        pipe.cmd("GET").arg(k.generation());
        let (layout, h, applied, generation): (
            Option<String>,
            BTreeMap<String, String>,
            Option<String>,
            Option<String>,
        ) = self.query_pipe(&pipe)?;
        let generation: u64 = generation.and_then(|g| g.parse().ok()).unwrap_or(0);
        let get = |f: &str| h.get(f).cloned().unwrap_or_default();
        let s = Settled {
            revision: get("revision"),
            generation: get("generation").parse().unwrap_or(u64::MAX),
            path: get("path"),
            build: get("build"),
            release: get("release"),
            warnings: get("warnings").parse().unwrap_or(0),
        };
        let current = layout.as_deref() == Some(LAYOUT_VERSION)
            && !s.revision.is_empty()
            && applied.as_deref() == Some(s.revision.as_str())
            && s.generation == generation;
        Ok(current.then_some(s))
    }

    /// Records (replaces) the settled record.
    ///
    /// # Errors
    /// Redis errors.
    pub fn record_settled(&mut self, s: &Settled) -> Result<(), StateError> {
        let key = self.keys().settled();
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("DEL").arg(&key).ignore();
        pipe.cmd("HSET")
            .arg(&key)
            .arg("revision")
            .arg(&s.revision)
            .arg("generation")
            .arg(s.generation)
            .arg("path")
            .arg(&s.path)
            .arg("build")
            .arg(&s.build)
            .arg("release")
            .arg(&s.release)
            .arg("warnings")
            .arg(s.warnings)
            .ignore();
        let () = self.query_pipe(&pipe)?;
        Ok(())
    }

    /// Removes the settled record (the next no-op takes the full path).
    ///
    /// # Errors
    /// Redis errors.
    pub fn forget_settled(&mut self) -> Result<(), StateError> {
        let key = self.keys().settled();
        let _: i64 = self.query(redis::cmd("DEL").arg(key))?;
        Ok(())
    }

    /// Reads back every key the digests hash names and compares its digest with the
    /// recorded one: the out-of-band edit check, without a desired state. Pipelined in
    /// requests of [`CHECK_CHUNK`] commands, each read with the command its key's kind
    /// needs (RedBeat entries: only the `definition` celeroot owns; RedBeat's index: only
    /// its members). A key of another type answers with an error or the wrong shape, and
    /// counts as differing. Two threads hash one request's values while the next is read.
    ///
    /// # Errors
    /// Redis errors of the first and last reads (an error reading values only makes
    /// those keys differ).
    pub fn check_digests(&mut self) -> Result<DigestCheck, StateError> {
        let k = self.keys().clone();
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(k.generation());
        pipe.cmd("HGETALL").arg(k.digests());
        // A list, not a map: its order does not matter, and a map of 50,000 keys that
        // share their prefix costs more comparisons than the check itself.
        let (before, digests): (Option<String>, Vec<(String, String)>) = self.query_pipe(&pipe)?;
        let mut out = DigestCheck::default();
        let names = Names::new(&k);
        let mut owned: Vec<(&String, &String, Read)> = Vec::with_capacity(digests.len());
        for (key, digest) in &digests {
            match (k.may_own(key), names.read_of(key)) {
                (true, Some(read)) => owned.push((key, digest, read)),
                _ => out.differing.push(key.clone()),
            }
        }
        out.checked = owned.len();
        let (tx, rx) = std::sync::mpsc::channel::<Vec<(&String, &String, Read, Value)>>();
        let rx = std::sync::Mutex::new(rx);
        let hashed = std::thread::scope(|scope| {
            let hasher = || {
                let mut differ = Vec::new();
                loop {
                    let next = rx.lock().map(|r| r.recv());
                    let Ok(Ok(batch)) = next else { break };
                    for (key, digest, read, v) in batch {
                        if !live_matches(read, v, digest) {
                            differ.push(key.clone());
                        }
                    }
                }
                differ
            };
            let workers = [scope.spawn(hasher), scope.spawn(hasher)];
            for chunk in owned.chunks(CHECK_CHUNK) {
                let mut pipe = redis::pipe();
                for (key, _, read) in chunk {
                    match read {
                        Read::Hash => pipe.cmd("HGETALL").arg(*key),
                        Read::Definition => pipe.cmd("HGET").arg(*key).arg("definition"),
                        Read::Set => pipe.cmd("SMEMBERS").arg(*key),
                        Read::Members => pipe.cmd("ZRANGE").arg(*key).arg(0).arg(-1),
                    };
                }
                let values: Vec<Value> = match self.query_pipe::<Vec<Value>>(&pipe) {
                    Ok(v) if v.len() == chunk.len() => v,
                    // A retyped key fails the request: every key of it differs.
                    _ => {
                        out.differing
                            .extend(chunk.iter().map(|(key, _, _)| (*key).clone()));
                        continue;
                    }
                };
                let batch = chunk
                    .iter()
                    .zip(values)
                    .map(|((key, digest, read), v)| (*key, *digest, *read, v))
                    .collect();
                if tx.send(batch).is_err() {
                    break;
                }
            }
            drop(tx);
            // A thread that died checked nothing: its keys count as differing.
            workers
                .into_iter()
                .flat_map(|w| {
                    w.join()
                        .unwrap_or_else(|_| vec!["(a thread of the check failed)".into()])
                })
                .collect::<Vec<String>>()
        });
        out.differing.extend(hashed);
        let after: Option<String> = self.query(redis::cmd("GET").arg(k.generation()))?;
        let parse = |g: Option<String>| g.and_then(|g| g.parse().ok()).unwrap_or(0);
        out.generations = (parse(before), parse(after));
        Ok(out)
    }
}

/// How a managed key is read back, from its name (docs/state.md, Keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// `objects`, `worker:<host>`: the whole hash.
    Hash,
    /// A RedBeat entry: its `definition` field only (`meta` is beat's).
    Definition,
    /// `hosts`, `role:<role>:hosts`.
    Set,
    /// RedBeat's index: its members (the scores are beat's).
    Members,
}

/// The key names [`Names::read_of`] tells apart, built once.
struct Names<'a> {
    prefix: &'a str,
    schedule: String,
    entry: String,
}

impl<'a> Names<'a> {
    fn new(k: &'a super::Keys) -> Self {
        Names {
            prefix: k.prefix(),
            schedule: k.redbeat_schedule(),
            entry: k.redbeat_prefix(),
        }
    }

    /// The read for a managed key, or `None` for a key the image never holds.
    fn read_of(&self, key: &str) -> Option<Read> {
        if key == self.schedule {
            return Some(Read::Members);
        }
        // A RedBeat entry (not one of RedBeat's own `::` keys), as Keys::is_redbeat_entry.
        if let Some(name) = key.strip_prefix(&self.entry) {
            return (!name.is_empty() && !name.starts_with(':')).then_some(Read::Definition);
        }
        let rest = key.strip_prefix(self.prefix)?;
        if rest == "objects" || rest.starts_with("worker:") {
            Some(Read::Hash)
        } else if rest == "hosts" || (rest.starts_with("role:") && rest.ends_with(":hosts")) {
            Some(Read::Set)
        } else {
            None
        }
    }
}

/// Whether a key's owned value as read (the reply its kind gives) has the `recorded`
/// digest. The sum needs no order, so the reply is hashed as it came; a digest of an
/// earlier release's format is checked on the value rebuilt.
fn live_matches(read: Read, v: Value, recorded: &str) -> bool {
    if recorded.starts_with(digest::LEGACY_PREFIX) {
        return live_value(read, v).is_some_and(|v| v.digest_matches(recorded));
    }
    live_sum(read, v).is_some_and(|s| Sum::parse(recorded) == Some(s))
}

/// The sum of a key's owned value as read (`None`: not a reply its kind gives).
fn live_sum(read: Read, v: Value) -> Option<Sum> {
    let members = |tag, v| {
        let m = reply_strings(v)?;
        Some(digest::sum(tag, m.iter().map(|m| [m.as_str()])))
    };
    match read {
        Read::Hash => {
            let pairs = reply_pairs(v)?;
            Some(digest::sum(
                Tag::Hash,
                pairs.iter().map(|(f, v)| [f.as_str(), v.as_str()]),
            ))
        }
        Read::Definition => match v {
            Value::Nil => Some(Sum::default()),
            other => {
                let d = reply_string(other)?;
                Some(digest::sum(Tag::Fields, [["definition", d.as_str()]]))
            }
        },
        Read::Set => members(Tag::Set, v),
        Read::Members => members(Tag::Members, v),
    }
}

/// A key's owned value rebuilt from the reply its kind gives.
fn live_value(read: Read, v: Value) -> Option<KeyValue> {
    Some(match read {
        Read::Hash => KeyValue::Hash(reply_pairs(v)?.into_iter().collect()),
        Read::Definition => KeyValue::Fields {
            owned: match v {
                Value::Nil => BTreeMap::new(),
                other => BTreeMap::from([("definition".to_string(), reply_string(other)?)]),
            },
            init: BTreeMap::new(),
        },
        Read::Set => KeyValue::Set(reply_strings(v)?.into_iter().collect()),
        Read::Members => KeyValue::Members {
            members: reply_strings(v)?.into_iter().collect(),
            now: 0,
        },
    })
}

fn reply_string(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

fn reply_strings(v: Value) -> Option<Vec<String>> {
    match v {
        Value::Array(items) | Value::Set(items) => items.into_iter().map(reply_string).collect(),
        _ => None,
    }
}

fn reply_pairs(v: Value) -> Option<Vec<(String, String)>> {
    match v {
        Value::Array(items) => {
            if items.len() % 2 != 0 {
                return None;
            }
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(f), Some(v)) = (it.next(), it.next()) {
                out.push((reply_string(f)?, reply_string(v)?));
            }
            Some(out)
        }
        Value::Map(m) => m
            .into_iter()
            .map(|(f, v)| Some((reply_string(f)?, reply_string(v)?)))
            .collect(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// The example's desired image: every key kind celeroot writes.
    fn example_image() -> (super::super::Keys, super::super::Image) {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let snapshot = crate::source::read_worktree(root, "manifests")
            .unwrap_or_else(|e| panic!("the example manifests: {e}"));
        let compiled = crate::compile_snapshot(snapshot)
            .unwrap_or_else(|e| panic!("the example compiles: {e}"));
        let keys = super::super::Keys::new(&compiled.state.cluster);
        let img = super::super::desired_image(&keys, &compiled.state, &None);
        (keys, img)
    }

    /// The reply Redis gives for `v` to the read of its kind (fields and members in an
    /// order other than sorted, as a server may answer).
    fn reply(v: &KeyValue) -> Value {
        match v {
            KeyValue::Hash(h) => Value::Array(
                h.iter()
                    .rev()
                    .flat_map(|(f, v)| [bulk(f), bulk(v)])
                    .collect(),
            ),
            KeyValue::Fields { owned, .. } => {
                owned.get("definition").map_or(Value::Nil, |d| bulk(d))
            }
            KeyValue::Set(m) | KeyValue::Members { members: m, .. } => {
                Value::Array(m.iter().rev().map(|s| bulk(s)).collect())
            }
            KeyValue::String(s) => bulk(s),
        }
    }

    #[test]
    fn every_managed_key_is_read_and_digested_as_the_image_digests_it() {
        let (keys, img) = example_image();
        let mut kinds = BTreeSet::new();
        for (key, v) in img.iter().filter(|(k, _)| **k != keys.digests()) {
            let read = Names::new(&keys)
                .read_of(key)
                .unwrap_or_else(|| panic!("{key}: no read"));
            kinds.insert(format!("{read:?}"));
            assert!(live_matches(read, reply(v), &v.digest()), "{key}");
            // A digest an earlier release recorded is checked as it was written.
            let legacy = crate::state::json_digest(v).unwrap_or_default();
            assert!(live_matches(read, reply(v), &legacy), "{key}: legacy");
        }
        assert_eq!(
            kinds.len(),
            4,
            "hashes, definitions, sets and members: {kinds:?}"
        );
    }

    #[test]
    fn a_wrong_reply_or_an_edit_changes_the_digest() {
        let (keys, img) = example_image();
        let (key, v) = img
            .iter()
            .find(|(k, _)| k.contains(":worker:"))
            .unwrap_or_else(|| panic!("a worker key"));
        let read = Names::new(&keys)
            .read_of(key)
            .unwrap_or_else(|| panic!("a read"));
        let good = v.digest();
        assert!(live_matches(read, reply(v), &good));
        // A string where a hash was expected, an odd field list, a missing key.
        assert!(!live_matches(read, bulk("x"), &good));
        assert!(!live_matches(read, Value::Array(vec![bulk("a")]), &good));
        assert!(!live_matches(read, Value::Array(vec![]), &good));
        let mut edited = v.clone();
        if let KeyValue::Hash(h) = &mut edited {
            h.insert("concurrency".into(), "99".into());
        }
        assert!(!live_matches(read, reply(&edited), &good));
        let legacy = crate::state::json_digest(v).unwrap_or_default();
        assert!(!live_matches(read, reply(&edited), &legacy));
        assert!(!live_matches(read, reply(v), "sum256:00"));
        // Keys the image never holds have no read: they count as differing.
        assert_eq!(
            Names::new(&keys).read_of(&format!("{}lock", keys.prefix())),
            None
        );
        assert_eq!(Names::new(&keys).read_of("celeroot:{other}:objects"), None);
    }
}
