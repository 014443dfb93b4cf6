//! Backups of one cluster's live state and their restore.
//!
//! A backup holds every key under the cluster's prefix (docs/state.md: the applied state,
//! history, the event stream, deploy records, run history, RedBeat's entries and due-time
//! index) except what running processes hold and a restore must never bring back: the
//! reconcile and leader leases and their counters, heartbeats and beat instances,
//! RedBeat's lock. The keys
//! are read in one `MULTI`/`EXEC` together with `generation`, after a `SCAN` that found
//! their names and types: if the generation moved in between, it is read again, so a
//! backup is taken at one generation. Values are kept by type (strings, hashes, sets,
//! sorted sets, lists, streams), not as `DUMP` payloads, so a backup restores into any
//! Redis version; each value is a JSON string, or `{"base64": …}` when it is not UTF-8.
//!
//! A restore deletes the cluster's current keys (the same selection) and writes the
//! backup's in one `MULTI`/`EXEC`: all or nothing.
//!
//! Owns: the archive's format ([`FORMAT`], [`VERSION`], the checksum) and the Redis
//! commands of both directions. Must not know: files, the CLI, output formats.

use base64::Engine as _;
use redis::Value;
use serde_json::{json, Map, Value as Json};
use sha2::{Digest, Sha256};

use super::{StateError, Store};

/// The archive's `format` field.
pub const FORMAT: &str = "celeroot-backup";
/// The archive's `version`: what this celeroot writes and reads.
pub const VERSION: u64 = 1;
/// How often a backup is read again when a reconcile moved the generation meanwhile.
const ATTEMPTS: usize = 5;

/// Keys (relative to the prefix) a backup leaves out and a restore leaves alone.
pub fn is_volatile(rel: &str) -> bool {
    rel == "lock"
        || rel == "leader"
        // The lease counters only ever grow: a restore keeps the live ones.
        || rel == "lock-epoch"
        || rel == "leader-epoch"
        || rel == "redbeat::lock"
        // Suspension and sync requests are about the daemons now, not about the state.
        || rel == "control"
        || rel.starts_with("heartbeat:")
        || rel.starts_with("beat:")
}

/// Why a backup file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("not a celeroot backup: the file is truncated or not JSON ({0})")]
    NotJson(String),
    #[error("not a celeroot backup: {0}")]
    Shape(String),
    #[error("backup format version {found} is not one this celeroot reads (it reads version {VERSION}); use the celeroot that wrote it")]
    Version { found: u64 },
    #[error("the backup's checksum does not match its contents (expected sha256 {expected}, found {found}): the file was changed or damaged")]
    Checksum { expected: String, found: String },
}

/// A backup, read or taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Archive {
    pub cluster: String,
    pub generation: u64,
    /// RFC 3339.
    pub taken_at: String,
    /// The celeroot version that took it.
    pub celeroot: String,
    /// `{key, type, value[, ttlMs]}` per key, the key relative to the prefix, sorted.
    pub keys: Vec<Json>,
}

/// The SHA-256 of the archive's JSON without its `sha256` field: it covers the header
/// (cluster, generation) as well as every key.
fn checksum(doc: &Map<String, Json>) -> String {
    let mut d = doc.clone();
    d.remove("sha256");
    hex::encode(Sha256::digest(Json::Object(d).to_string().as_bytes()))
}

impl Archive {
    /// The archive as the file's JSON (one object; `sha256` covers the rest of it).
    pub fn to_json(&self) -> String {
        let mut doc = Map::new();
        doc.insert("format".into(), json!(FORMAT));
        doc.insert("version".into(), json!(VERSION));
        doc.insert("cluster".into(), json!(self.cluster));
        doc.insert("generation".into(), json!(self.generation));
        doc.insert("takenAt".into(), json!(self.taken_at));
        doc.insert("celeroot".into(), json!(self.celeroot));
        doc.insert("keyCount".into(), json!(self.keys.len()));
        doc.insert("keys".into(), Json::Array(self.keys.clone()));
        let sum = checksum(&doc);
        doc.insert("sha256".into(), json!(sum));
        Json::Object(doc).to_string()
    }

    /// `<cluster>-g<generation>-<UTC time>.celeroot-backup.json`: how `celeroot backup`
    /// and the daemon name a backup taken at `at`.
    pub fn file_name(&self, at: chrono::DateTime<chrono::Utc>) -> String {
        format!(
            "{}-g{}-{}.celeroot-backup.json",
            self.cluster,
            self.generation,
            at.format("%Y%m%dT%H%M%SZ")
        )
    }

    /// Reads an archive, checking its format, version and checksum.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn parse(text: &str) -> Result<Archive, ArchiveError> {
        let v: Json =
            serde_json::from_str(text).map_err(|e| ArchiveError::NotJson(e.to_string()))?;
        let shape = |what: &str| ArchiveError::Shape(what.to_string());
        if v.get("format").and_then(Json::as_str) != Some(FORMAT) {
            return Err(shape("no \"format\": \"celeroot-backup\" field"));
        }
        let version = v
            .get("version")
            .and_then(Json::as_u64)
            .ok_or_else(|| shape("no version"))?;
        if version != VERSION {
            return Err(ArchiveError::Version { found: version });
        }
        let s = |k: &str| {
            v.get(k)
                .and_then(Json::as_str)
                .map(str::to_string)
                .ok_or_else(|| ArchiveError::Shape(format!("no {k:?} string")))
        };
        let keys = v
            .get("keys")
            .and_then(Json::as_array)
            .cloned()
            .ok_or_else(|| shape("no \"keys\" list"))?;
        let expected = s("sha256")?;
        let found = v.as_object().map(checksum).unwrap_or_default();
        if expected != found {
            return Err(ArchiveError::Checksum { expected, found });
        }
        let archive = Archive {
            cluster: s("cluster")?,
            generation: v
                .get("generation")
                .and_then(Json::as_u64)
                .ok_or_else(|| shape("no generation"))?,
            taken_at: s("takenAt")?,
            celeroot: s("celeroot")?,
            keys,
        };
        for k in &archive.keys {
            let rel = k.get("key").and_then(Json::as_str).unwrap_or_default();
            if rel.is_empty() || is_volatile(rel) {
                return Err(ArchiveError::Shape(format!(
                    "the key {rel:?} does not belong in a backup"
                )));
            }
            if !matches!(
                k.get("type").and_then(Json::as_str),
                Some("string" | "hash" | "set" | "zset" | "list" | "stream")
            ) {
                return Err(ArchiveError::Shape(format!(
                    "the key {rel:?} has no known type"
                )));
            }
        }
        Ok(archive)
    }
}

fn enc(bytes: &[u8]) -> Json {
    match std::str::from_utf8(bytes) {
        Ok(s) => Json::String(s.to_string()),
        Err(_) => json!({"base64": base64::engine::general_purpose::STANDARD.encode(bytes)}),
    }
}

fn dec(v: &Json) -> Result<Vec<u8>, StateError> {
    match v {
        Json::String(s) => Ok(s.as_bytes().to_vec()),
        Json::Object(m) => m
            .get("base64")
            .and_then(Json::as_str)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .ok_or_else(|| {
                StateError::Protocol(
                    "a backup value is neither a string nor {\"base64\": …}".into(),
                )
            }),
        _ => Err(StateError::Protocol(
            "a backup value is not a string".into(),
        )),
    }
}

fn bytes(v: Value) -> Result<Vec<u8>, StateError> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::Int(i) => Ok(i.to_string().into_bytes()),
        Value::Double(d) => Ok(d.to_string().into_bytes()),
        other => Err(StateError::Protocol(format!(
            "expected a string, got {other:?}"
        ))),
    }
}

fn items(v: Value) -> Result<Vec<Value>, StateError> {
    match v {
        Value::Array(a) | Value::Set(a) => Ok(a),
        Value::Map(m) => Ok(m.into_iter().flat_map(|(k, v)| [k, v]).collect()),
        Value::Nil => Ok(Vec::new()),
        other => Err(StateError::Protocol(format!(
            "expected a list, got {other:?}"
        ))),
    }
}

fn pairs(v: Value) -> Result<Vec<Json>, StateError> {
    let flat = items(v)?;
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        out.push(json!([enc(&bytes(a)?), enc(&bytes(b)?)]));
    }
    Ok(out)
}

/// The read command for a key of `kind`.
fn read_cmd(kind: &str, key: &str) -> Option<redis::Cmd> {
    let mut c = match kind {
        "string" => redis::cmd("GET"),
        "hash" => redis::cmd("HGETALL"),
        "set" => redis::cmd("SMEMBERS"),
        "zset" => {
            let mut c = redis::cmd("ZRANGE");
            c.arg(key).arg(0).arg(-1).arg("WITHSCORES");
            return Some(c);
        }
        "list" => {
            let mut c = redis::cmd("LRANGE");
            c.arg(key).arg(0).arg(-1);
            return Some(c);
        }
        "stream" => {
            let mut c = redis::cmd("XRANGE");
            c.arg(key).arg("-").arg("+");
            return Some(c);
        }
        _ => return None,
    };
    c.arg(key);
    Some(c)
}

/// A value read by [`read_cmd`] as the archive keeps it (None: the key went away).
fn value_of(kind: &str, v: Value) -> Result<Option<Json>, StateError> {
    if v == Value::Nil {
        return Ok(None);
    }
    let out = match kind {
        "string" => enc(&bytes(v)?),
        "hash" | "zset" => Json::Array(pairs(v)?),
        "set" => {
            let mut m: Vec<Json> = items(v)?
                .into_iter()
                .map(|x| bytes(x).map(|b| enc(&b)))
                .collect::<Result<_, _>>()?;
            m.sort_by_key(Json::to_string);
            Json::Array(m)
        }
        "list" => Json::Array(
            items(v)?
                .into_iter()
                .map(|x| bytes(x).map(|b| enc(&b)))
                .collect::<Result<_, _>>()?,
        ),
        "stream" => {
            let mut out = Vec::new();
            for e in items(v)? {
                let mut parts = items(e)?.into_iter();
                let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
                    return Err(StateError::Protocol(
                        "a stream entry has an unexpected shape".into(),
                    ));
                };
                out.push(json!([enc(&bytes(id)?), pairs(fields)?]));
            }
            Json::Array(out)
        }
        _ => return Ok(None),
    };
    Ok(match &out {
        Json::Array(a) if a.is_empty() => None,
        _ => Some(out),
    })
}

impl Store {
    /// The names of this cluster's keys a backup holds (full names).
    fn backup_names(&mut self) -> Result<Vec<String>, StateError> {
        let prefix = self.keys().prefix().to_string();
        Ok(self
            .scan_prefix()?
            .into_iter()
            .filter(|k| k.strip_prefix(&prefix).is_some_and(|r| !is_volatile(r)))
            .collect())
    }

    /// The names (relative to the prefix) and types of this cluster's keys a backup holds.
    fn backup_keys(&mut self) -> Result<Vec<(String, String)>, StateError> {
        let prefix = self.keys().prefix().to_string();
        let names = self.backup_names()?;
        let mut out = Vec::with_capacity(names.len());
        for chunk in names.chunks(1000) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.cmd("TYPE").arg(k);
            }
            let types: Vec<String> = self.query_pipe(&pipe)?;
            for (k, t) in chunk.iter().zip(types) {
                if t != "none" {
                    out.push((k[prefix.len()..].to_string(), t));
                }
            }
        }
        Ok(out)
    }

    fn generation_now(&mut self) -> Result<u64, StateError> {
        let g: Option<u64> = self.query(redis::cmd("GET").arg(self.keys().generation()))?;
        Ok(g.unwrap_or(0))
    }

    /// Takes a backup of this cluster's live state at one generation.
    ///
    /// # Errors
    /// Redis errors; [`StateError::Protocol`] when reconciles kept moving the generation
    /// through every attempt.
    pub fn backup(&mut self, celeroot: &str) -> Result<Archive, StateError> {
        let prefix = self.keys().prefix().to_string();
        for _ in 0..ATTEMPTS {
            let before = self.generation_now()?;
            let keys = self.backup_keys()?;
            let mut pipe = redis::pipe();
            pipe.atomic();
            pipe.cmd("GET").arg(self.keys().generation());
            for (rel, kind) in &keys {
                let key = format!("{prefix}{rel}");
                if let Some(c) = read_cmd(kind, &key) {
                    pipe.add_command(c);
                    pipe.cmd("PTTL").arg(&key);
                }
            }
            // A key whose type changed since the SCAN makes its read fail (WRONGTYPE):
            // read again.
            let replies: Vec<Value> = match self.query_pipe(&pipe) {
                Ok(r) => r,
                Err(StateError::Redis(e)) if e.contains("WRONGTYPE") => continue,
                Err(e) => return Err(e),
            };
            let mut it = replies.into_iter();
            let generation = match it.next() {
                Some(Value::Nil) | None => 0,
                Some(v) => String::from_utf8_lossy(&bytes(v)?).parse().unwrap_or(0),
            };
            if generation != before {
                continue;
            }
            let mut out = Vec::with_capacity(keys.len());
            for (rel, kind) in &keys {
                let (Some(v), Some(ttl)) = (it.next(), it.next()) else {
                    break;
                };
                let Some(value) = value_of(kind, v)? else {
                    continue;
                };
                let mut entry = Map::new();
                entry.insert("key".into(), json!(rel));
                entry.insert("type".into(), json!(kind));
                entry.insert("value".into(), value);
                if let Value::Int(ms) = ttl {
                    if ms > 0 {
                        entry.insert("ttlMs".into(), json!(ms));
                    }
                }
                out.push(Json::Object(entry));
            }
            return Ok(Archive {
                cluster: self.cluster().to_string(),
                generation,
                taken_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                celeroot: celeroot.to_string(),
                keys: out,
            });
        }
        Err(StateError::Protocol(format!(
            "the generation changed during each of {ATTEMPTS} attempts to take the backup; reconciles are running without pause"
        )))
    }

    /// The live generation (0 when the cluster has none).
    ///
    /// # Errors
    /// Redis errors.
    pub fn live_generation(&mut self) -> Result<u64, StateError> {
        self.generation_now()
    }

    /// Replaces this cluster's keys (all but the volatile ones) with the archive's, in one
    /// `MULTI`/`EXEC`, and sets `generation` to `generation`. Returns how many keys were
    /// deleted first. The caller holds the lease and has checked the cluster and the
    /// generations.
    ///
    /// # Errors
    /// [`StateError::Protocol`] for a value the archive cannot hold (nothing is written);
    /// Redis errors (then nothing was written).
    pub fn restore(&mut self, archive: &Archive, generation: u64) -> Result<usize, StateError> {
        let prefix = self.keys().prefix().to_string();
        // Names only: a restore deletes them whatever their type (no TYPE round trips).
        let current = self.backup_names()?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for key in &current {
            pipe.cmd("DEL").arg(key).ignore();
        }
        for k in &archive.keys {
            let rel = k.get("key").and_then(Json::as_str).unwrap_or_default();
            if rel == "generation" {
                continue;
            }
            let key = format!("{prefix}{rel}");
            let kind = k.get("type").and_then(Json::as_str).unwrap_or_default();
            let value = k.get("value").unwrap_or(&Json::Null);
            let list = || {
                value.as_array().ok_or_else(|| {
                    StateError::Protocol(format!("the value of {rel:?} is not a list"))
                })
            };
            let pair = |p: &Json| -> Result<(Vec<u8>, Vec<u8>), StateError> {
                match p.as_array().map(Vec::as_slice) {
                    Some([a, b]) => Ok((dec(a)?, dec(b)?)),
                    _ => Err(StateError::Protocol(format!(
                        "a pair of {rel:?} is not [a, b]"
                    ))),
                }
            };
            match kind {
                "string" => {
                    pipe.cmd("SET").arg(&key).arg(dec(value)?).ignore();
                }
                "hash" => {
                    let mut c = redis::cmd("HSET");
                    c.arg(&key);
                    for p in list()? {
                        let (f, v) = pair(p)?;
                        c.arg(f).arg(v);
                    }
                    pipe.add_command(c).ignore();
                }
                "zset" => {
                    let mut c = redis::cmd("ZADD");
                    c.arg(&key);
                    for p in list()? {
                        let (m, score) = pair(p)?;
                        c.arg(score).arg(m);
                    }
                    pipe.add_command(c).ignore();
                }
                "set" | "list" => {
                    let mut c = redis::cmd(if kind == "set" { "SADD" } else { "RPUSH" });
                    c.arg(&key);
                    for m in list()? {
                        c.arg(dec(m)?);
                    }
                    pipe.add_command(c).ignore();
                }
                "stream" => {
                    for e in list()? {
                        let (Some(id), Some(fields)) =
                            (e.get(0), e.get(1).and_then(Json::as_array))
                        else {
                            return Err(StateError::Protocol(format!(
                                "an entry of the stream {rel:?} is not [id, fields]"
                            )));
                        };
                        let mut c = redis::cmd("XADD");
                        c.arg(&key).arg(dec(id)?);
                        for p in fields {
                            let (f, v) = pair(p)?;
                            c.arg(f).arg(v);
                        }
                        pipe.add_command(c).ignore();
                    }
                }
                other => {
                    return Err(StateError::Protocol(format!(
                        "the key {rel:?} has the unknown type {other:?}"
                    )))
                }
            }
            if let Some(ms) = k.get("ttlMs").and_then(Json::as_u64) {
                pipe.cmd("PEXPIRE").arg(&key).arg(ms).ignore();
            }
        }
        pipe.cmd("SET")
            .arg(self.keys().generation())
            .arg(generation)
            .ignore();
        self.query_pipe::<()>(&pipe)?;
        Ok(current.len())
    }
}

/// Why a restore wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("the live state of cluster {cluster} is at generation {live}, newer than the backup's {backup}: restoring it would undo {} applied reconcile(s)", .live - .backup)]
    Older {
        cluster: String,
        live: u64,
        backup: u64,
    },
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// Keys written from the backup, and the cluster's keys deleted before.
    pub written: usize,
    pub replaced: usize,
    /// The live generation before and after.
    pub previous_generation: u64,
    pub generation: u64,
}

impl Store {
    /// Restores `archive` into this store's cluster (which must be the archive's): takes
    /// the reconcile lease, refuses an archive older than the live state unless `force`,
    /// writes it in one transaction, records a `restore` event and releases the lease.
    /// Over a newer live state (`force`) the generation becomes the live one + 1, so
    /// agents and daemons see a change; otherwise it is the backup's.
    ///
    /// # Errors
    /// [`RestoreError`]; nothing was written.
    pub fn restore_archive(
        &mut self,
        archive: &Archive,
        actor: &str,
        force: bool,
        lock_wait: std::time::Duration,
    ) -> Result<Restored, RestoreError> {
        self.claim_database()?;
        // Checked before the lease too, so a refused restore leaves no trace (taking the
        // lease moves its counter); checked again under it.
        self.check_not_older(archive, force)?;
        let lease = super::LeaseInfo {
            id: super::random_secret(8).map_err(|e| {
                StateError::Protocol(format!("no randomness for the lease id: {e}"))
            })?,
            holder: actor.to_string(),
            revision: format!("restore of generation {}", archive.generation),
            since: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            pid: std::process::id(),
            leader: None,
        };
        self.acquire_lease_within(&lease, lock_wait)?;
        let out = self.restore_held(archive, actor, force);
        if let Err(e) = self.release_lease(&lease.id) {
            tracing::warn!(error = %e, "could not release the restore's lease; it expires by itself");
        }
        out
    }

    /// The live generation, when the archive is not older than it (or `force`).
    fn check_not_older(&mut self, archive: &Archive, force: bool) -> Result<u64, RestoreError> {
        let live = self.live_generation()?;
        if live > archive.generation && !force {
            return Err(RestoreError::Older {
                cluster: archive.cluster.clone(),
                live,
                backup: archive.generation,
            });
        }
        Ok(live)
    }

    fn restore_held(
        &mut self,
        archive: &Archive,
        actor: &str,
        force: bool,
    ) -> Result<Restored, RestoreError> {
        let live = self.check_not_older(archive, force)?;
        let generation = if live > archive.generation {
            live + 1
        } else {
            archive.generation
        };
        let replaced = self.restore(archive, generation)?;
        let applied = self.applied_revision()?;
        let event = super::Event::now(
            actor,
            applied.as_deref().unwrap_or_default(),
            super::events::What::Restored {
                taken_at: archive.taken_at.clone(),
                backup_generation: archive.generation,
                generation,
                keys: archive.keys.len(),
                forced: live > archive.generation,
            },
        );
        if let Err(e) = self.record_event(&event) {
            tracing::warn!(error = %e, "the restore is written, but its event could not be recorded");
        }
        Ok(Restored {
            written: archive.keys.len(),
            replaced,
            previous_generation: live,
            generation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive() -> Archive {
        Archive {
            cluster: "production".into(),
            generation: 3,
            taken_at: "2026-12-04T00:00:00Z".into(),
            celeroot: "0.1.0".into(),
            keys: vec![json!({"key": "applied", "type": "hash", "value": [["commit", "abc"]]})],
        }
    }

    #[test]
    fn an_archive_reads_back_and_refuses_damage() {
        let text = archive().to_json();
        assert_eq!(Archive::parse(&text).unwrap(), archive());
        let cut = &text[..text.len() - 10];
        assert!(matches!(Archive::parse(cut), Err(ArchiveError::NotJson(_))));
        let changed = text.replace("\"abc\"", "\"abd\"");
        assert!(matches!(
            Archive::parse(&changed),
            Err(ArchiveError::Checksum { .. })
        ));
        let newer = text.replace("\"version\":1", "\"version\":2");
        assert!(matches!(
            Archive::parse(&newer),
            Err(ArchiveError::Version { found: 2 })
        ));
        assert!(matches!(Archive::parse("{}"), Err(ArchiveError::Shape(_))));
    }

    #[test]
    fn leases_and_heartbeats_are_never_kept() {
        for k in [
            "lock",
            "leader",
            "lock-epoch",
            "leader-epoch",
            "heartbeat:web01",
            "beat:b1",
            "redbeat::lock",
        ] {
            assert!(is_volatile(k), "{k}");
        }
        for k in [
            "applied",
            "events",
            "redbeat:tick",
            "redbeat::schedule",
            "generation",
        ] {
            assert!(!is_volatile(k), "{k}");
        }
    }

    #[test]
    fn values_that_are_not_utf8_survive() {
        let v = enc(&[0xff, 0x00, 0x41]);
        assert!(v.get("base64").is_some());
        assert_eq!(dec(&v).unwrap(), vec![0xff, 0x00, 0x41]);
        assert_eq!(dec(&enc(b"plain")).unwrap(), b"plain".to_vec());
    }
}
