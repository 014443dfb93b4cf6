//! The pipelined apply: a large reconcile (a first apply of a 10,000-host fleet writes
//! about 94,000 fields) as native commands in one `MULTI`/`EXEC` transaction guarded by
//! `WATCH`, instead of one Lua script that decodes every write from JSON.
//!
//! Owns: the order of the checks and the writes, which follow `apply.lua` step for step
//! (docs/state.md, "Consistency guarantees"), so that both paths leave the same keys.
//! Must not know: plans, objects, leases beyond their id.

use std::collections::{BTreeMap, BTreeSet};

use redis::Value;

use super::keys::LAYOUT_VERSION;
use super::route::{self, Redirect};
use super::store::{parse_lease, LeaderInfo, Store, HISTORY_MAX};
use super::writes::KeyOp;
use super::StateError;

/// Applies with more operations than this take the pipelined transaction; smaller ones
/// the Lua script (one round trip).
pub const PIPELINED_ABOVE: usize = 1_000;

/// Attempts of a transaction that a watched key aborted.
const ATTEMPTS: usize = 3;

/// Commands sent per request (each request is one round trip; the server queues them
/// until `EXEC`).
const PER_REQUEST: usize = 2_000;

/// Keys per `WATCH` command.
const WATCH_PER_COMMAND: usize = 1_000;

/// What an applied reconcile records besides its writes.
pub(super) struct Record<'a> {
    pub applied: &'a BTreeMap<String, String>,
    pub history: &'a serde_json::Value,
    pub event: &'a BTreeMap<String, String>,
}

fn op_command(op: &KeyOp) -> redis::Cmd {
    let (name, key, args): (&str, &str, &[String]) = match op {
        KeyOp::Del { key } => ("DEL", key, &[]),
        KeyOp::Set { key, value } => {
            let mut c = redis::cmd("SET");
            c.arg(key).arg(value);
            return c;
        }
        KeyOp::Hset { key, args } => ("HSET", key, args),
        KeyOp::Hdel { key, args } => ("HDEL", key, args),
        KeyOp::Sadd { key, args } => ("SADD", key, args),
        KeyOp::Srem { key, args } => ("SREM", key, args),
        KeyOp::Hsetnx { key, args } => ("HSETNX", key, args),
        KeyOp::Zadd { key, args } => ("ZADD", key, args),
        KeyOp::Zrem { key, args } => ("ZREM", key, args),
    };
    let mut c = redis::cmd(name);
    c.arg(key).arg(args);
    c
}

/// The type a key must have (or not exist) for `op`, as `apply.lua` checks it.
fn needed_type(op: &KeyOp) -> Option<&'static str> {
    match op {
        KeyOp::Del { .. } | KeyOp::Set { .. } => None,
        KeyOp::Hset { .. } | KeyOp::Hdel { .. } | KeyOp::Hsetnx { .. } => Some("hash"),
        KeyOp::Sadd { .. } | KeyOp::Srem { .. } => Some("set"),
        KeyOp::Zadd { .. } | KeyOp::Zrem { .. } => Some("zset"),
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => Some(s.clone()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

fn type_matches(key: &str, found: &str, need: &str) -> Result<(), StateError> {
    if found == "none" || found == need {
        Ok(())
    } else {
        Err(StateError::Conflict(format!(
            "key {key} has type {found}, expected {need}; nothing was written"
        )))
    }
}

/// A redirection among the replies ([`super::route`]): the request did not run here.
fn redirected(values: &[Value]) -> Result<(), StateError> {
    match Redirect::in_replies(values) {
        Some(r) => Err(StateError::Redirected(r)),
        None => Ok(()),
    }
}

fn server_error(values: &[Value]) -> Option<String> {
    values.iter().find_map(|v| match v {
        Value::ServerError(e) => Some(format!("{e:?}")),
        _ => None,
    })
}

impl Store {
    /// `apply` for large write lists: `WATCH` the generation, the lease epoch, the
    /// leader epoch and the written keys that exist, check the lease, the leader, the
    /// generation and the types of the keys written (as `apply.lua` does), then queue
    /// every write and the record in one `MULTI`/`EXEC` (keys still to be created are
    /// deleted first, so nothing in it can fail). A watched key written by anyone in
    /// between makes `EXEC` run nothing; a connection lost before `EXEC` leaves nothing
    /// either.
    ///
    /// The lease and the leader lease are renewed every few seconds, so their keys are
    /// not watched (a transaction that takes longer than that to queue would never
    /// commit); taking either over increments its epoch key, which is. A watched key
    /// written meanwhile (an out-of-band edit of a written key, say) makes `EXEC` run
    /// nothing; the transaction is then checked and sent again, up to [`ATTEMPTS`]
    /// times, before it is reported as a conflict. Every attempt repeats every check
    /// under a fresh `WATCH`, so a retry never writes over a reconcile that committed
    /// meanwhile (the generation moved) or a lease that was taken over.
    ///
    /// # Errors
    /// [`StateError::Conflict`], [`StateError::Fenced`], Redis errors.
    pub(super) fn apply_pipelined(
        &mut self,
        expected_generation: u64,
        lease_id: &str,
        writes: &[KeyOp],
        record: &Record<'_>,
        fence: Option<&str>,
    ) -> Result<u64, StateError> {
        let started = std::time::Instant::now();
        let mut wait = route::FIRST_WAIT;
        let mut attempt = 0;
        // Read before any WATCH: nothing else may be queued on the connection then.
        let keep = self.events_keep()?;
        while attempt < ATTEMPTS {
            self.watching = true;
            let tried =
                self.try_pipelined(expected_generation, lease_id, writes, record, fence, keep);
            self.watching = false;
            match tried {
                Ok(Some(g)) => return Ok(g),
                Ok(None) => {
                    attempt += 1;
                    tracing::debug!(attempt, "a watched key aborted the pipelined transaction");
                }
                // A Redis Cluster slot that moved (or a demoted Sentinel master): nothing
                // was written; follow it and start over, every check included.
                Err(StateError::Redirected(r)) if started.elapsed() < route::REDIRECT_BUDGET => {
                    tracing::debug!(redirect = ?r, "the pipelined transaction was redirected");
                    self.follow(&r, &mut wait)?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(StateError::Conflict(
            "live state changed during the reconcile (a key it reads or writes was written meanwhile); nothing was written".into(),
        ))
    }

    /// One attempt: `None` when `EXEC` ran nothing because a watched key changed.
    fn try_pipelined(
        &mut self,
        expected_generation: u64,
        lease_id: &str,
        writes: &[KeyOp],
        record: &Record<'_>,
        fence: Option<&str>,
        events_keep: usize,
    ) -> Result<Option<u64>, StateError> {
        let k = self.keys().clone();
        // 1. The keys written with hash, set and sorted-set commands (a key deleted or
        // set first needs no check): their types, as apply.lua checks them. EXEC does
        // not roll back a command that fails, so nothing may fail inside it.
        let mut deleted: BTreeSet<&str> = BTreeSet::new();
        let mut checks: BTreeMap<&str, &'static str> = BTreeMap::new();
        for op in writes {
            match needed_type(op) {
                None => {
                    deleted.insert(op.key());
                }
                Some(t) if !deleted.contains(op.key()) => {
                    checks.entry(op.key()).or_insert(t);
                }
                Some(_) => {}
            }
        }
        let checks: Vec<(&str, &str)> = checks.into_iter().collect();
        let mut existing: Vec<(&str, &str)> = Vec::new();
        for chunk in checks.chunks(PER_REQUEST) {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for (key, _) in chunk {
                pipe.cmd("TYPE").arg(*key);
            }
            let types: Vec<Value> = self.query_pipe(&pipe)?;
            redirected(&types)?;
            for (&(key, need), t) in chunk.iter().zip(&types) {
                let t = text(t).unwrap_or_default();
                if t != "none" {
                    type_matches(key, &t, need)?;
                    existing.push((key, need));
                }
            }
        }
        // 2. WATCH the fencing keys and the keys that exist (WATCH costs the server time
        // in the number of keys already watched, so not the ones still to be created:
        // the transaction deletes those before writing them, so whatever appeared
        // there meanwhile cannot make a write fail), then read the lease, the leader
        // and the generation and check the watched keys' types again. Not `lock` and
        // `leader` themselves: their holders renew them (`PEXPIRE`) every few seconds,
        // which would abort any transaction that takes longer to queue. A takeover of
        // either increments its epoch, which is watched.
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.cmd("WATCH")
            .arg(k.generation())
            .arg(k.lock_epoch())
            .arg(k.leader_epoch());
        let existing_keys: Vec<&str> = existing.iter().map(|(key, _)| *key).collect();
        for chunk in existing_keys.chunks(WATCH_PER_COMMAND) {
            pipe.cmd("WATCH").arg(chunk);
        }
        pipe.cmd("GET").arg(k.generation());
        pipe.cmd("GET").arg(k.lock());
        pipe.cmd("GET").arg(k.leader());
        for key in &existing_keys {
            pipe.cmd("TYPE").arg(*key);
        }
        let replies: Vec<Value> = self.query_pipe(&pipe)?;
        if let Err(e) = redirected(&replies) {
            self.unwatch();
            return Err(e);
        }
        if let Some(e) = server_error(&replies) {
            self.unwatch();
            return Err(StateError::Redis(e));
        }
        let watches = 1 + existing_keys.len().div_ceil(WATCH_PER_COMMAND);
        let (Some([generation, lock, leader]), Some(types)) = (
            replies.get(watches..watches + 3),
            replies.get(watches + 3..),
        ) else {
            self.unwatch();
            return Err(StateError::Protocol(
                "WATCH returned too few replies".into(),
            ));
        };
        for (&(key, need), t) in existing.iter().zip(types) {
            let t = text(t).unwrap_or_default();
            if let Err(e) = type_matches(key, &t, need) {
                self.unwatch();
                return Err(e);
            }
        }
        let generation = text(generation).map_or(Ok(0), |g| g.parse::<u64>());
        let Ok(generation) = generation else {
            self.unwatch();
            return Err(StateError::Protocol(
                "the generation is not a number".into(),
            ));
        };
        if generation != expected_generation {
            self.unwatch();
            return Err(StateError::Conflict(format!(
                "live state changed during the reconcile (generation {generation}, expected {expected_generation})"
            )));
        }
        if text(lock).map(|l| parse_lease(&l).id).as_deref() != Some(lease_id) {
            self.unwatch();
            return Err(StateError::Conflict(
                "the reconcile lease was lost (expired or taken over); nothing was written".into(),
            ));
        }
        if let Some(token) = fence {
            let leader = text(leader).and_then(|l| serde_json::from_str::<LeaderInfo>(&l).ok());
            if leader.map(|l| l.token).as_deref() != Some(token) {
                self.unwatch();
                return Err(StateError::Fenced(
                    "this daemon is no longer the leader; nothing was written".into(),
                ));
            }
        }
        let mut fresh: BTreeSet<&str> = checks.iter().map(|(key, _)| *key).collect();
        for key in &existing_keys {
            fresh.remove(key);
        }
        // 3. The transaction: the writes, then the record (apply.lua's steps 4-8).
        let new_generation = expected_generation + 1;
        let mut tail: Vec<redis::Cmd> = Vec::new();
        let mut c = redis::cmd("SET");
        c.arg(k.layout()).arg(LAYOUT_VERSION);
        tail.push(c);
        let mut c = redis::cmd("INCR");
        c.arg(k.generation());
        tail.push(c);
        let mut c = redis::cmd("DEL");
        c.arg(k.applied());
        tail.push(c);
        let mut c = redis::cmd("HSET");
        c.arg(k.applied())
            .arg("generation")
            .arg(new_generation.to_string());
        for (f, v) in record.applied {
            c.arg(f).arg(v);
        }
        tail.push(c);
        let mut entry = record.history.clone();
        if let Some(o) = entry.as_object_mut() {
            o.insert("generation".into(), new_generation.into());
        }
        let mut c = redis::cmd("LPUSH");
        c.arg(k.history()).arg(entry.to_string());
        tail.push(c);
        let mut c = redis::cmd("LTRIM");
        c.arg(k.history()).arg(0).arg(HISTORY_MAX - 1);
        tail.push(c);
        let mut c = redis::cmd("XADD");
        c.arg(k.events())
            .arg("MAXLEN")
            .arg("~")
            .arg(events_keep)
            .arg("*")
            .arg("generation")
            .arg(new_generation.to_string());
        for (f, v) in record.event {
            c.arg(f).arg(v);
        }
        tail.push(c);
        let mut c = redis::cmd("PUBLISH");
        c.arg(k.changes()).arg(new_generation.to_string());
        tail.push(c);
        let mut queued: Vec<redis::Cmd> = Vec::with_capacity(writes.len() + fresh.len());
        for op in writes {
            if fresh.remove(op.key()) {
                let mut c = redis::cmd("DEL");
                c.arg(op.key());
                queued.push(c);
            }
            queued.push(op_command(op));
        }
        let incr_at = queued.len() + 1;
        let mut commands = queued
            .into_iter()
            .chain(tail)
            .chain(std::iter::once(redis::cmd("EXEC")))
            .peekable();
        let mut first = true;
        let mut exec_reply = None;
        while commands.peek().is_some() {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            if first {
                pipe.cmd("MULTI");
                first = false;
            }
            for c in commands.by_ref().take(PER_REQUEST) {
                pipe.add_command(c);
            }
            let last = commands.peek().is_none();
            let mut replies: Vec<Value> = match self.query_pipe(&pipe) {
                Ok(r) => r,
                // Before EXEC was sent Redis drops the queued commands with the
                // connection; with EXEC in flight the outcome is unknown.
                Err(StateError::Redis(e)) if !last => {
                    return Err(StateError::Redis(format!(
                        "{e}; the transaction was not committed, nothing was written"
                    )))
                }
                Err(StateError::Redis(e)) => {
                    return Err(StateError::Redis(format!(
                        "{e}; the connection was lost while the transaction committed: whether it applied is unknown (run `celeroot status`)"
                    )))
                }
                Err(e) => return Err(e),
            };
            if !last {
                if let Some(d) = self.pause_in_transaction.take() {
                    std::thread::sleep(d);
                }
            }
            if last {
                exec_reply = replies.pop();
            }
            if let Err(e) = redirected(&replies) {
                // The slot moved while the transaction was queued: nothing ran (EXEC,
                // if sent, aborted). Drop the queue; the caller starts over.
                if !last {
                    let _: Result<Value, _> = self.query(&mut redis::cmd("DISCARD"));
                }
                return Err(e);
            }
            if let Some(e) = server_error(&replies) {
                // Redis refuses the EXEC of a transaction with a refused command; say
                // so explicitly all the same.
                if !last {
                    let _: Result<Value, _> = self.query(&mut redis::cmd("DISCARD"));
                }
                return Err(StateError::Redis(format!(
                    "a write was refused, nothing was written: {e}"
                )));
            }
        }
        match exec_reply {
            Some(Value::Nil) => Ok(None),
            Some(Value::Array(results)) => {
                if let Some(e) = server_error(&results) {
                    return Err(StateError::Protocol(format!(
                        "the transaction ran with an error: {e}"
                    )));
                }
                match results.get(incr_at) {
                    Some(Value::Int(g)) => Ok(Some(u64::try_from(*g).unwrap_or(0))),
                    other => Err(StateError::Protocol(format!(
                        "EXEC returned {other:?} for INCR"
                    ))),
                }
            }
            Some(Value::ServerError(e)) => Err(StateError::Redis(format!(
                "the transaction was refused, nothing was written: {e:?}"
            ))),
            other => Err(StateError::Protocol(format!("EXEC returned {other:?}"))),
        }
    }

    /// Drops this connection's watched keys after a failed check (best effort: a lost
    /// connection drops them too).
    fn unwatch(&mut self) {
        let _: Result<Value, _> = self.query(&mut redis::cmd("UNWATCH"));
    }
}
