//! The settled record and the check behind `celeroot reconcile`'s fast no-op.
//!
//! Owns: the `settled` hash (which revision, generation, manifests path and build of
//! celeroot last left the live state equal to its desired state) and the out-of-band edit
//! check that needs no desired state: every key named by the digests hash is read back
//! with native pipelined commands (no script, so the server is never blocked for long) and
//! its digest compared with the recorded one.
//! Must not know: how a desired state is compiled, YAML, git, or output formats.

use std::collections::{BTreeMap, BTreeSet};

use redis::Value;

use super::image::KeyValue;
use super::keys::{LAYOUT_VERSION, OWNER_KEY};
use super::store::Store;
use super::StateError;

/// Commands per pipelined request of the check (bounds the memory of one reply).
const CHECK_CHUNK: usize = 4_000;

/// One key of the check as read: (key, recorded digest), (its type, its value).
type KeyRead<'a> = ((&'a String, &'a String), (&'a String, Value));

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
/// record is only trusted by the build that compiled it.
pub fn build_id() -> String {
    let exe = std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|m| {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}-{mtime}", m.len())
        })
        .unwrap_or_default();
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
    /// requests of [`CHECK_CHUNK`] commands: the types first, then each value with the
    /// command its type needs (RedBeat entries: only the `definition` celeroot owns;
    /// RedBeat's index: only its members).
    ///
    /// # Errors
    /// Redis errors.
    pub fn check_digests(&mut self) -> Result<DigestCheck, StateError> {
        let k = self.keys().clone();
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(k.generation());
        pipe.cmd("HGETALL").arg(k.digests());
        let (before, digests): (Option<String>, BTreeMap<String, String>) =
            self.query_pipe(&pipe)?;
        let mut out = DigestCheck::default();
        let owned: Vec<(&String, &String)> = digests
            .iter()
            .filter(|(key, _)| {
                let ok = k.may_own(key);
                if !ok {
                    out.differing.push((*key).clone());
                }
                ok
            })
            .collect();
        for chunk in owned.chunks(CHECK_CHUNK) {
            let mut pipe = redis::pipe();
            for (key, _) in chunk {
                pipe.cmd("TYPE").arg(*key);
            }
            let types: Vec<String> = self.query_pipe(&pipe)?;
            let mut pipe = redis::pipe();
            for ((key, _), t) in chunk.iter().zip(&types) {
                match t.as_str() {
                    "hash" if k.is_redbeat_entry(key) => {
                        pipe.cmd("HGET").arg(*key).arg("definition");
                    }
                    "hash" => {
                        pipe.cmd("HGETALL").arg(*key);
                    }
                    "set" => {
                        pipe.cmd("SMEMBERS").arg(*key);
                    }
                    "zset" => {
                        pipe.cmd("ZRANGE").arg(*key).arg(0).arg(-1);
                    }
                    "string" => {
                        pipe.cmd("GET").arg(*key);
                    }
                    // Missing, or a type celeroot never writes: differs; nothing to read.
                    _ => {
                        pipe.cmd("ECHO").arg("");
                    }
                }
            }
            let values: Vec<Value> = self.query_pipe(&pipe)?;
            out.checked += chunk.len();
            // Hashing is most of the check's work: on two threads.
            let items: Vec<KeyRead<'_>> = chunk
                .iter()
                .copied()
                .zip(types.iter().zip(values))
                .collect();
            let half = items.len().div_ceil(2);
            let mut items = items.into_iter();
            let first: Vec<_> = items.by_ref().take(half).collect();
            let second: Vec<_> = items.collect();
            let differ = |part: Vec<KeyRead<'_>>| -> Vec<String> {
                part.into_iter()
                    .filter_map(|((key, digest), (t, v))| {
                        let same = live_value(&k, key, t, v).is_some_and(|v| v.digest() == *digest);
                        (!same).then(|| key.clone())
                    })
                    .collect()
            };
            let (a, b) = std::thread::scope(|s| {
                let other = s.spawn(|| differ(second));
                // A thread that died checked nothing: its keys count as differing.
                let theirs = other
                    .join()
                    .unwrap_or_else(|_| vec!["(the check's second thread failed)".into()]);
                (differ(first), theirs)
            });
            out.differing.extend(a);
            out.differing.extend(b);
        }
        let after: Option<String> = self.query(redis::cmd("GET").arg(k.generation()))?;
        let parse = |g: Option<String>| g.and_then(|g| g.parse().ok()).unwrap_or(0);
        out.generations = (parse(before), parse(after));
        Ok(out)
    }
}

/// The owned value of `key` as the observe script would have read it (`None`: it does not
/// exist, or has a type celeroot never writes).
fn live_value(keys: &super::Keys, key: &str, t: &str, v: Value) -> Option<KeyValue> {
    use redis::FromRedisValue;
    Some(match t {
        "hash" if keys.is_redbeat_entry(key) => {
            let def: Option<String> = FromRedisValue::from_redis_value(v).ok()?;
            let owned: BTreeMap<String, String> =
                def.into_iter().map(|d| ("definition".into(), d)).collect();
            KeyValue::Fields {
                owned,
                init: BTreeMap::new(),
            }
        }
        "hash" => KeyValue::Hash(FromRedisValue::from_redis_value(v).ok()?),
        "set" => KeyValue::Set(FromRedisValue::from_redis_value(v).ok()?),
        "zset" => {
            let members: BTreeSet<String> = FromRedisValue::from_redis_value(v).ok()?;
            KeyValue::Members { members, now: 0 }
        }
        "string" => KeyValue::String(FromRedisValue::from_redis_value(v).ok()?),
        _ => return None,
    })
}
