//! The Redis store: connecting, observing, the reconcile lease, the atomic apply, and
//! reading events, history and heartbeats.
//!
//! Uses one dedicated synchronous connection. Every compare-and-set runs inside a Lua
//! script (atomic on the server); the one exception, the pipelined transaction of a large
//! apply (`transaction.rs`), WATCHes on this dedicated connection, never a shared one.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use redis::{Connection, Value};
use serde::{Deserialize, Serialize};

use super::heartbeat::{BeatHeartbeat, Heartbeat};
use super::image::{Image, KeyValue};
use super::keys::{Keys, LAYOUT_VERSION};
use super::route::{self, Redirect};
use super::url::RedisUrl;
use super::StateError;

/// How long a reconcile lease lasts unless renewed or released. Its holder renews it
/// every [`super::lease::LEASE_RENEW_EVERY`] while it works, so a crashed holder's lease
/// expires within this time (docs/state.md).
pub const LEASE_TTL: Duration = Duration::from_secs(15);
/// Events kept in the stream (approximately: `XADD MAXLEN ~`).
pub const EVENTS_MAX: usize = 10_000;
/// Applied revisions kept in the history list.
pub const HISTORY_MAX: usize = 200;

/// Beat heartbeats read at most.
pub const MAX_BEATS: usize = 100;

/// Unmanaged hosts' heartbeats read at most (found by SCAN; agents cannot create any
/// other key, so more means something is wrong, and readers stay bounded).
pub const MAX_UNMANAGED_HEARTBEATS: usize = 1000;

/// Reads of the whole state before [`Store::observe`] gives up on a digests hash that
/// keeps changing between its two requests.
const OBSERVE_ATTEMPTS: usize = 5;

/// The id reported for a lease value that celeroot cannot read.
pub const UNREADABLE_LEASE: &str = "unreadable";

/// Who holds the reconcile lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// The lease id, used to release it (`celeroot unlock ID`).
    pub id: String,
    pub holder: String,
    pub revision: String,
    /// RFC 3339.
    pub since: String,
    pub pid: u32,
    /// The leader token when a `watch` daemon holds the lease (a lease held by a daemon
    /// that is no longer the leader is void for the new leader).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

/// The leader lease of the `watch` daemons, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    pub token: String,
    pub holder: String,
    pub epoch: u64,
    /// RFC 3339.
    pub since: String,
}

/// The result of [`Store::lead`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// The caller leads, in this epoch (incremented at each change of leader).
    Leading { epoch: u64 },
    /// Another daemon leads (`None`: its value is not celeroot's JSON).
    Standby(Option<LeaderInfo>),
}

/// The live state as read by [`Store::observe`].
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The layout version key, when present.
    pub layout: Option<String>,
    pub generation: u64,
    /// The applied-revision hash.
    pub applied: BTreeMap<String, String>,
    pub lease: Option<LeaseInfo>,
    /// Managed keys that exist (those in the digests index and those asked for).
    pub image: Image,
    /// Keys that exist with a type celeroot never writes (reported as drift).
    pub foreign_types: BTreeMap<String, String>,
    /// Fields of the digests hash naming keys celeroot may not own
    /// ([`super::Keys::may_own`]): someone else wrote them. They are reported, left out of
    /// the image (so never written or deleted), and the fields are removed by the next
    /// applied reconcile.
    pub foreign_digests: BTreeSet<String>,
}

/// One entry of the history list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub revision: String,
    pub rev: String,
    #[serde(default)]
    pub subject: String,
    pub applied_at: String,
    pub actor: String,
    #[serde(default)]
    pub summary: serde_json::Value,
    #[serde(default)]
    pub generation: u64,
}

/// One event of the audit stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    pub id: String,
    pub fields: BTreeMap<String, String>,
}

/// A connection to the Redis holding one cluster's live state.
pub struct Store {
    conn: Connection,
    /// A key of this store's cluster: on a Redis Cluster, its slot's node is connected.
    route_key: String,
    /// A `WATCH`ed transaction is being built on `conn`: redirections are not followed
    /// request by request ([`Store::run`]).
    pub(super) watching: bool,
    /// Entries the event stream keeps: set by a reconcile from its Cluster, else read
    /// once from the applied revision (`events_keep`), else [`EVENTS_MAX`].
    events_keep: Option<usize>,
    keys: Keys,
    cluster: String,
    url: RedisUrl,
    round_trips: Cell<u64>,
    /// This connection has confirmed that the database belongs to its cluster.
    claimed: bool,
    /// A test fault: pause this long inside the next pipelined transaction.
    pub(super) pause_in_transaction: Option<Duration>,
}

fn install_crypto_provider() {
    // rustls needs a process-wide crypto provider for rediss://; ignore "already set".
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Store {
    /// Connects and checks the server answers.
    ///
    /// # Errors
    /// [`StateError::Connect`] naming the URL without its password.
    pub fn connect(url: &RedisUrl, cluster: &str) -> Result<Store, StateError> {
        install_crypto_provider();
        let keys = Keys::new(cluster);
        // On a Redis Cluster, the node serving the slot of the cluster's hash tag.
        let route_key = keys.generation();
        let conn = Self::open(url, |u, t| u.open_for_key(&route_key, t))?;
        let mut store = Store {
            conn,
            route_key,
            watching: false,
            events_keep: None,
            keys,
            cluster: cluster.to_string(),
            url: url.clone(),
            round_trips: Cell::new(0),
            claimed: false,
            pause_in_transaction: None,
        };
        let pong: String = store.query(&mut redis::cmd("PING"))?;
        if pong != "PONG" {
            return Err(StateError::Protocol(format!(
                "unexpected PING reply {pong:?}"
            )));
        }
        store.round_trips.set(0);
        Ok(store)
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Points this connection at `cluster`'s keys (after [`Store::database_owner`] named
    /// it). The database is claimed again before the next lease.
    pub fn rebind(&mut self, cluster: &str) {
        self.keys = Keys::new(cluster);
        self.route_key = self.keys.generation();
        self.cluster = cluster.to_string();
        self.claimed = false;
    }

    /// Round trips made since connecting (for tests and benchmarks).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.get()
    }

    fn err(&self, e: redis::RedisError) -> StateError {
        StateError::Redis(self.url.scrub(&e.to_string()))
    }

    pub(super) fn query<T: redis::FromRedisValue>(
        &mut self,
        cmd: &mut redis::Cmd,
    ) -> Result<T, StateError> {
        let cmd = &*cmd;
        self.run(true, |c| cmd.query(c))
    }

    pub(super) fn query_pipe<T: redis::FromRedisValue>(
        &mut self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StateError> {
        self.run(false, |c| pipe.query(c))
    }

    fn script(&mut self, src: &str, keys: &[String], args: &[String]) -> Result<Value, StateError> {
        let script = redis::Script::new(src);
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(k);
        }
        for a in args {
            inv.arg(a);
        }
        self.run(true, |c| inv.invoke::<Value>(c))
    }

    /// Runs one request, following redirections ([`Redirect`]) within
    /// [`route::REDIRECT_BUDGET`]: each says the request did not run, so repeating it is
    /// safe. Not while a transaction is being built (`watching`): its `WATCH` and queued
    /// commands live on this connection, so [`Store::apply_pipelined`] starts it over
    /// instead. `single`: one command (an `-ASK` is followed with `ASKING`); a pipeline
    /// waits for the migration to end instead.
    fn run<T>(
        &mut self,
        single: bool,
        mut op: impl FnMut(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StateError> {
        let started = Instant::now();
        let mut wait = route::FIRST_WAIT;
        loop {
            self.round_trips.set(self.round_trips.get() + 1);
            let e = match op(&mut self.conn) {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let redirect = Redirect::of(&e)
                .filter(|_| !self.watching && started.elapsed() < route::REDIRECT_BUDGET);
            match redirect {
                None => return Err(self.err(e)),
                Some(Redirect::Ask(addr)) if single => {
                    let mut c = self.open_node(&addr)?;
                    self.round_trips.set(self.round_trips.get() + 1);
                    match redis::cmd("ASKING")
                        .query::<()>(&mut c)
                        .and_then(|()| op(&mut c))
                    {
                        Ok(v) => return Ok(v),
                        Err(e) if Redirect::of(&e).is_some() => {
                            self.follow(&Redirect::Wait, &mut wait)?;
                        }
                        Err(e) => return Err(self.err(e)),
                    }
                }
                Some(Redirect::Ask(_)) => self.follow(&Redirect::Wait, &mut wait)?,
                Some(r) => self.follow(&r, &mut wait)?,
            }
        }
    }

    /// Acts on a redirection: reconnects where the slot went, or to the master the
    /// sentinels name now, or waits (doubling `wait`).
    pub(super) fn follow(&mut self, r: &Redirect, wait: &mut Duration) -> Result<(), StateError> {
        match r {
            Redirect::Moved(addr) => {
                tracing::debug!(%addr, "the cluster's slot moved; reconnecting");
                self.conn = self.open_node(addr)?;
            }
            Redirect::Ask(_) | Redirect::Wait => {
                std::thread::sleep(*wait);
                *wait = (*wait * 2).min(route::MAX_WAIT);
            }
            Redirect::ReadOnly if self.url.sentinel().is_none() => {
                return Err(StateError::Redis(
                    "READONLY: the Redis node is a replica; point --redis at the master, or use a redis+sentinel:// URL".into(),
                ));
            }
            Redirect::ReadOnly => {
                std::thread::sleep(*wait);
                *wait = (*wait * 2).min(route::MAX_WAIT);
                tracing::debug!("the node is a replica now; asking the sentinels again");
                self.conn = Self::open(&self.url, |u, t| u.open_for_key(&self.route_key, t))?;
            }
        }
        Ok(())
    }

    fn open_node(&self, addr: &str) -> Result<Connection, StateError> {
        Self::open(&self.url, |u, t| u.open_node(addr, t))
    }

    /// A connection opened by `how` (5 s to connect), with the store's 60 s read and
    /// write timeouts.
    fn open(
        url: &RedisUrl,
        how: impl Fn(&RedisUrl, Duration) -> Result<Connection, String>,
    ) -> Result<Connection, StateError> {
        let connect_err = |reason: String| StateError::Connect {
            url: url.redacted().to_string(),
            reason,
        };
        let conn = how(url, Duration::from_secs(5)).map_err(connect_err)?;
        conn.set_read_timeout(Some(Duration::from_secs(60)))
            .and_then(|()| conn.set_write_timeout(Some(Duration::from_secs(60))))
            .map_err(|e| connect_err(url.scrub(&e.to_string())))?;
        Ok(conn)
    }

    /// Reads the layout, generation, applied revision, lease and every managed key, plus
    /// `extra` keys, in one round trip.
    ///
    /// # Errors
    /// Redis errors, or [`StateError::Layout`] when the layout version differs.
    pub fn observe(&mut self, extra: &[String]) -> Result<Observed, StateError> {
        let k = self.keys.clone();
        let digests = k.digests();
        let prefix = digests
            .strip_suffix("digests")
            .unwrap_or(&digests)
            .to_string();
        let changed = |v: &Value| matches!(v, Value::BulkString(b) if b.as_slice() == b"changed");
        let mut v = Value::Nil;
        for _ in 0..OBSERVE_ATTEMPTS {
            // Every key the script reads is declared: first the keys the digests hash
            // names, then one script that checks the list is still whole.
            let listed: Vec<String> = self.query(redis::cmd("HKEYS").arg(&digests))?;
            let head = [
                k.layout(),
                k.generation(),
                k.applied(),
                digests.clone(),
                k.lock(),
            ];
            let mut seen: BTreeSet<&str> = head.iter().map(String::as_str).collect();
            let mut keys: Vec<String> = head.to_vec();
            for key in listed
                .iter()
                .filter(|f| f.starts_with(&prefix))
                .chain(extra.iter())
            {
                if seen.insert(key.as_str()) {
                    keys.push(key.clone());
                }
            }
            v = self.script(include_str!("scripts/observe.lua"), &keys, &[])?;
            if !changed(&v) {
                break;
            }
        }
        if changed(&v) {
            return Err(StateError::Protocol(format!(
                "the managed keys changed under every one of {OBSERVE_ATTEMPTS} reads; another writer is active"
            )));
        }
        let parts = array(v)?;
        let [layout, generation, applied, lease, entries]: [Value; 5] = parts
            .try_into()
            .map_err(|_| StateError::Protocol("observe returned an unexpected shape".into()))?;
        let layout = Some(string(layout)?).filter(|s| !s.is_empty());
        if let Some(l) = &layout {
            if l != LAYOUT_VERSION && !super::keys::UPGRADABLE_LAYOUTS.contains(&l.as_str()) {
                return Err(StateError::Layout {
                    found: l.clone(),
                    expected: LAYOUT_VERSION.into(),
                });
            }
        }
        let mut out = Observed {
            layout,
            generation: string(generation)?.parse().unwrap_or(0),
            applied: pairs(applied)?,
            lease: Some(string(lease)?)
                .filter(|s| !s.is_empty())
                .and_then(|s| serde_json::from_str(&s).ok()),
            ..Observed::default()
        };
        for entry in array(entries)? {
            let [key, kind, data]: [Value; 3] = array(entry)?.try_into().map_err(|_| {
                StateError::Protocol("observe entry has an unexpected shape".into())
            })?;
            let key = string(key)?;
            match string(kind)?.as_str() {
                "hash" => {
                    out.image.insert(key, KeyValue::Hash(pairs(data)?));
                }
                "set" => {
                    let members: BTreeSet<String> = array(data)?
                        .into_iter()
                        .map(string)
                        .collect::<Result<_, _>>()?;
                    out.image.insert(key, KeyValue::Set(members));
                }
                "zset" => {
                    let members: BTreeSet<String> = array(data)?
                        .into_iter()
                        .map(string)
                        .collect::<Result<_, _>>()?;
                    out.image.insert(key, KeyValue::Members { members, now: 0 });
                }
                "string" => {
                    let mut vals = array(data)?;
                    let v = vals.pop().map(string).transpose()?.unwrap_or_default();
                    out.image.insert(key, KeyValue::String(v));
                }
                "none" => {}
                other => {
                    out.foreign_types.insert(key, other.to_string());
                }
            }
        }
        if let Some(KeyValue::Hash(d)) = out.image.get(&k.digests()) {
            out.foreign_digests = d.keys().filter(|f| !k.may_own(f)).cloned().collect();
        }
        // No desired key is foreign (they all lie under the prefix and are managed), so
        // none of these was asked for.
        for f in &out.foreign_digests {
            out.image.remove(f);
            out.foreign_types.remove(f);
        }
        out.image = super::image::project_owned(&self.keys, out.image);
        Ok(out)
    }

    /// Reads the layout, generation, applied revision and lease, without any managed
    /// key (the incremental reconcile's check that the live state is its baseline).
    ///
    /// # Errors
    /// Redis errors, or [`StateError::Layout`] when the layout version differs.
    pub fn observe_head(&mut self) -> Result<Observed, StateError> {
        let k = self.keys.clone();
        let v = self.script(
            include_str!("scripts/observe_head.lua"),
            &[k.layout(), k.generation(), k.applied(), k.lock()],
            &[],
        )?;
        let [layout, generation, applied, lease]: [Value; 4] = array(v)?
            .try_into()
            .map_err(|_| StateError::Protocol("observe returned an unexpected shape".into()))?;
        let layout = Some(string(layout)?).filter(|s| !s.is_empty());
        if let Some(l) = &layout {
            if l != LAYOUT_VERSION && !super::keys::UPGRADABLE_LAYOUTS.contains(&l.as_str()) {
                return Err(StateError::Layout {
                    found: l.clone(),
                    expected: LAYOUT_VERSION.into(),
                });
            }
        }
        Ok(Observed {
            layout,
            generation: string(generation)?.parse().unwrap_or(0),
            applied: pairs(applied)?,
            lease: Some(string(lease)?)
                .filter(|s| !s.is_empty())
                .and_then(|s| serde_json::from_str(&s).ok()),
            ..Observed::default()
        })
    }

    /// Takes the reconcile lease, or reports who holds it. A daemon's lease (with
    /// `info.leader`) also takes over a lease left by a daemon that is no longer the leader.
    ///
    /// # Errors
    /// [`StateError::Locked`] with the holder's information.
    pub fn acquire_lease(&mut self, info: &LeaseInfo) -> Result<(), StateError> {
        self.claim_database()?;
        let k = self.keys.clone();
        let value = serde_json::to_string(info).unwrap_or_default();
        let ttl = u64::try_from(LEASE_TTL.as_millis()).unwrap_or(u64::MAX);
        let leader = info.leader.clone().unwrap_or_default();
        match self.script(
            include_str!("scripts/lock.lua"),
            &[k.lock(), k.leader(), k.lock_epoch()],
            &[value, ttl.to_string(), leader],
        )? {
            Value::Int(_) => Ok(()),
            other => {
                let held = string(other)?;
                Err(StateError::Locked(Box::new(parse_lease(&held))))
            }
        }
    }

    /// [`Store::acquire_lease`], trying again every 250 ms while another holds the lease,
    /// for up to `wait` (`--lock-timeout`; zero: once).
    ///
    /// # Errors
    /// [`StateError::Locked`] when it is still held after `wait`; other errors at once.
    pub fn acquire_lease_within(
        &mut self,
        info: &LeaseInfo,
        wait: Duration,
    ) -> Result<(), StateError> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match self.acquire_lease(info) {
                Err(StateError::Locked(_)) if std::time::Instant::now() < deadline => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    std::thread::sleep(left.min(Duration::from_millis(250)));
                }
                other => return other,
            }
        }
    }

    /// Takes or renews the leader lease of the `watch` daemons for `ttl`.
    ///
    /// # Errors
    /// Redis errors.
    pub fn lead(
        &mut self,
        token: &str,
        ttl: Duration,
        holder: &str,
    ) -> Result<Leadership, StateError> {
        let k = self.keys.clone();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let v = self.script(
            include_str!("scripts/leader.lua"),
            &[k.leader(), k.leader_epoch()],
            &[token.to_string(), ttl.to_string(), holder.to_string(), now],
        )?;
        let parts = match v {
            Value::Array(parts) if parts.len() == 2 => parts,
            other => return Err(StateError::Protocol(format!("leader returned {other:?}"))),
        };
        let mut it = parts.into_iter();
        let (flag, data) = (it.next(), it.next());
        let data = string(data.unwrap_or(Value::Nil))?;
        match flag {
            Some(Value::Int(1)) => Ok(Leadership::Leading {
                epoch: data.parse().unwrap_or(0),
            }),
            _ => Ok(Leadership::Standby(serde_json::from_str(&data).ok())),
        }
    }

    /// Gives up the leader lease if `token` still holds it.
    ///
    /// # Errors
    /// Redis errors.
    pub fn resign(&mut self, token: &str) -> Result<bool, StateError> {
        let k = self.keys.leader();
        let v = self.script(
            include_str!("scripts/leader_release.lua"),
            &[k],
            &[token.to_string()],
        )?;
        Ok(matches!(v, Value::Int(1)))
    }

    /// The current leader of the `watch` daemons, if any.
    ///
    /// # Errors
    /// Redis errors.
    pub fn leader(&mut self) -> Result<Option<LeaderInfo>, StateError> {
        let key = self.keys.leader();
        let v: Option<String> = self.query(redis::cmd("GET").arg(key))?;
        Ok(v.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Extends the lease `id` by [`LEASE_TTL`] if it is still ours; `false` when it is
    /// gone or held by someone else.
    ///
    /// # Errors
    /// Redis errors.
    pub fn renew_lease(&mut self, id: &str) -> Result<bool, StateError> {
        let k = self.keys.lock();
        let ttl = u64::try_from(LEASE_TTL.as_millis()).unwrap_or(u64::MAX);
        let v = self.script(
            include_str!("scripts/renew.lua"),
            &[k],
            &[id.to_string(), ttl.to_string()],
        )?;
        Ok(matches!(v, Value::Int(1)))
    }

    /// The URL this store is connected to.
    pub fn url(&self) -> &RedisUrl {
        &self.url
    }

    /// The cluster whose keys this store reads and writes.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Releases the lease if it is still ours.
    ///
    /// # Errors
    /// Redis errors.
    pub fn release_lease(&mut self, id: &str) -> Result<(), StateError> {
        let k = self.keys.lock();
        self.script(include_str!("scripts/release.lua"), &[k], &[id.to_string()])?;
        Ok(())
    }

    /// The current lease holder, if any.
    ///
    /// # Errors
    /// Redis errors.
    /// A value that is not celeroot's JSON is reported with the id [`UNREADABLE_LEASE`],
    /// which `celeroot unlock` accepts to remove it.
    pub fn lease(&mut self) -> Result<Option<LeaseInfo>, StateError> {
        let key = self.keys.lock();
        let v: Option<String> = self.query(redis::cmd("GET").arg(key))?;
        Ok(v.map(|s| parse_lease(&s)))
    }

    /// [`Store::apply`] through `apply.lua`: one round trip.
    ///
    /// # Errors
    /// [`StateError::Conflict`] when the generation moved or the lease was lost.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_script(
        &mut self,
        expected_generation: u64,
        lease_id: &str,
        writes: &[super::writes::KeyOp],
        applied: &BTreeMap<String, String>,
        history: &serde_json::Value,
        event: &super::Event,
        fence: Option<&str>,
    ) -> Result<u64, StateError> {
        let k = self.keys.clone();
        let args = vec![
            expected_generation.to_string(),
            lease_id.to_string(),
            serde_json::to_string(writes).unwrap_or_default(),
            serde_json::to_string(applied).unwrap_or_default(),
            history.to_string(),
            serde_json::to_string(&event.fields()).unwrap_or_default(),
            LAYOUT_VERSION.to_string(),
            self.events_keep()?.to_string(),
            HISTORY_MAX.to_string(),
            fence.unwrap_or_default().to_string(),
            k.changes(),
        ];
        let mut keys = vec![
            k.generation(),
            k.lock(),
            k.applied(),
            k.history(),
            k.events(),
            k.layout(),
            k.leader(),
        ];
        // Every written key, declared once (apply.lua refuses an undeclared one).
        let mut declared = BTreeSet::new();
        for op in writes {
            if declared.insert(op.key()) {
                keys.push(op.key().to_string());
            }
        }
        match self.script(include_str!("scripts/apply.lua"), &keys, &args) {
            Ok(Value::Int(g)) => Ok(u64::try_from(g).unwrap_or(0)),
            Ok(other) => Err(StateError::Protocol(format!("apply returned {other:?}"))),
            Err(StateError::Redis(msg)) if msg.contains("FENCED") => {
                let text = msg.rsplit_once("\": ").map_or(msg.as_str(), |(_, t)| t);
                Err(StateError::Fenced(text.trim().to_string()))
            }
            Err(StateError::Redis(msg)) if msg.contains("CONFLICT") || msg.contains("LEASE") => {
                // The client renders script errors as `"CODE": text`; keep the text.
                let text = msg.rsplit_once("\": ").map_or(msg.as_str(), |(_, t)| t);
                Err(StateError::Conflict(text.trim().to_string()))
            }
            Err(e) => Err(e),
        }
    }

    /// A test fault (`CELEROOT_FAULT=pause-in-transaction`): the next pipelined
    /// transaction pauses for `d` after its first request is queued, before `EXEC`.
    pub fn pause_in_transaction(&mut self, d: Duration) {
        self.pause_in_transaction = Some(d);
    }

    /// Claims the database for this store's cluster ([`super::keys::OWNER_KEY`]), once per
    /// connection: queue names, RedBeat keys and results are not scoped by cluster, so a
    /// database holds the live state of one cluster only.
    ///
    /// # Errors
    /// [`StateError::SharedDatabase`] when another cluster owns the database.
    pub fn claim_database(&mut self) -> Result<(), StateError> {
        if self.claimed {
            return Ok(());
        }
        let cluster = [self.cluster.clone()];
        let owner = match self.script(
            include_str!("scripts/claim.lua"),
            &[super::keys::OWNER_KEY.to_string()],
            &cluster,
        )? {
            Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            Value::SimpleString(s) => s,
            other => return Err(StateError::Protocol(format!("claim returned {other:?}"))),
        };
        if owner != self.cluster {
            return Err(StateError::SharedDatabase {
                owner,
                cluster: self.cluster.clone(),
            });
        }
        self.claimed = true;
        Ok(())
    }

    /// The event stream keeps `keep` entries from now on (a reconcile sets its Cluster's
    /// `eventRetention.keep`; the apply records it in the applied revision for others).
    pub fn set_events_keep(&mut self, keep: usize) {
        self.events_keep = Some(keep);
    }

    /// Entries the event stream keeps: as set, else the applied revision's
    /// `events_keep` (read once), else [`EVENTS_MAX`].
    ///
    /// # Errors
    /// Redis errors.
    pub(super) fn events_keep(&mut self) -> Result<usize, StateError> {
        if let Some(k) = self.events_keep {
            return Ok(k);
        }
        let v: Option<String> = self.query(
            redis::cmd("HGET")
                .arg(self.keys.applied())
                .arg("events_keep"),
        )?;
        let keep = v.and_then(|v| v.parse().ok()).unwrap_or(EVENTS_MAX);
        self.events_keep = Some(keep);
        Ok(keep)
    }

    /// Appends an event (for attempts that wrote nothing else).
    ///
    /// # Errors
    /// Redis errors.
    pub fn record_event(&mut self, event: &super::Event) -> Result<(), StateError> {
        let keep = self.events_keep()?;
        let key = self.keys.events();
        let mut cmd = redis::cmd("XADD");
        cmd.arg(key).arg("MAXLEN").arg("~").arg(keep).arg("*");
        for (f, v) in &event.fields() {
            cmd.arg(f).arg(v);
        }
        let _: String = self.query(&mut cmd)?;
        Ok(())
    }

    /// Records deploy results (host → JSON) in the `deployed` hash.
    ///
    /// # Errors
    /// Redis errors.
    pub fn record_deploys(&mut self, entries: &BTreeMap<String, String>) -> Result<(), StateError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.keys.deployed());
        for (h, v) in entries {
            cmd.arg(h).arg(v);
        }
        let _: i64 = self.query(&mut cmd)?;
        Ok(())
    }

    /// The applied revision (one `HGET`), if any.
    ///
    /// # Errors
    /// Redis errors.
    pub fn applied_revision(&mut self) -> Result<Option<String>, StateError> {
        let key = self.keys.applied();
        let v: Option<String> = self.query(redis::cmd("HGET").arg(key).arg("revision"))?;
        Ok(v.filter(|r| !r.is_empty()))
    }

    /// The `deployed` hash: host → JSON of its last deploy.
    ///
    /// # Errors
    /// Redis errors.
    pub fn deployed(&mut self) -> Result<BTreeMap<String, String>, StateError> {
        let key = self.keys.deployed();
        self.query(redis::cmd("HGETALL").arg(key))
    }

    /// The newest `n` events, newest first.
    ///
    /// # Errors
    /// Redis errors.
    pub fn events(&mut self, n: usize) -> Result<Vec<StoredEvent>, StateError> {
        let key = self.keys.events();
        let v: Value = self.query(
            redis::cmd("XREVRANGE")
                .arg(key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(n),
        )?;
        let mut out = Vec::new();
        for e in array(v)? {
            let [id, fields]: [Value; 2] = array(e)?
                .try_into()
                .map_err(|_| StateError::Protocol("stream entry has an unexpected shape".into()))?;
            out.push(StoredEvent {
                id: string(id)?,
                fields: pairs(fields)?,
            });
        }
        Ok(out)
    }

    /// The events from `since_ms` to `until_ms` (stream ids are Redis server time in
    /// milliseconds), oldest first, read in batches of 1,000; at most `limit`.
    ///
    /// # Errors
    /// Redis errors.
    pub fn events_between(
        &mut self,
        since_ms: u64,
        until_ms: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StateError> {
        let key = self.keys.events();
        let end = until_ms.map_or_else(|| "+".to_string(), |u| u.to_string());
        let mut start = since_ms.to_string();
        let mut out: Vec<StoredEvent> = Vec::new();
        loop {
            let v: Value = self.query(
                redis::cmd("XRANGE")
                    .arg(&key)
                    .arg(&start)
                    .arg(&end)
                    .arg("COUNT")
                    .arg(1000),
            )?;
            let batch = array(v)?;
            let n = batch.len();
            for e in batch {
                let [id, fields]: [Value; 2] = array(e)?.try_into().map_err(|_| {
                    StateError::Protocol("stream entry has an unexpected shape".into())
                })?;
                out.push(StoredEvent {
                    id: string(id)?,
                    fields: pairs(fields)?,
                });
                if out.len() >= limit {
                    return Ok(out);
                }
            }
            match out.last() {
                // The next batch starts after the last id read (exclusive range).
                Some(last) if n == 1000 => start = format!("({}", last.id),
                _ => return Ok(out),
            }
        }
    }

    /// Events after the stream id `after` (`$`: only new ones), waiting up to `block_ms`
    /// for one to arrive; at most 1000.
    ///
    /// # Errors
    /// Redis errors.
    pub fn events_after(
        &mut self,
        after: &str,
        block_ms: u64,
    ) -> Result<Vec<StoredEvent>, StateError> {
        let key = self.keys.events();
        let v: Value = self.query(
            redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1000)
                .arg("BLOCK")
                .arg(block_ms)
                .arg("STREAMS")
                .arg(&key)
                .arg(after),
        )?;
        let mut out = Vec::new();
        // Nil on a timeout; else [[key, [[id, fields], ...]]] (RESP2) or a map (RESP3).
        let streams = match v {
            Value::Nil => return Ok(out),
            Value::Map(m) => m.into_iter().map(|(_, v)| v).collect(),
            other => array(other)?
                .into_iter()
                .map(|s| {
                    let [_, entries]: [Value; 2] = array(s)?.try_into().map_err(|_| {
                        StateError::Protocol("XREAD reply has an unexpected shape".into())
                    })?;
                    Ok(entries)
                })
                .collect::<Result<Vec<_>, StateError>>()?,
        };
        for entries in streams {
            for e in array(entries)? {
                let [id, fields]: [Value; 2] = array(e)?.try_into().map_err(|_| {
                    StateError::Protocol("stream entry has an unexpected shape".into())
                })?;
                out.push(StoredEvent {
                    id: string(id)?,
                    fields: pairs(fields)?,
                });
            }
        }
        Ok(out)
    }

    /// The newest `n` applied revisions, newest first.
    ///
    /// # Errors
    /// Redis errors.
    pub fn history(&mut self, n: usize) -> Result<Vec<HistoryEntry>, StateError> {
        let key = self.keys.history();
        let items: Vec<String> = self.query(
            redis::cmd("LRANGE")
                .arg(key)
                .arg(0)
                .arg(n.saturating_sub(1)),
        )?;
        Ok(items
            .iter()
            .filter_map(|s| serde_json::from_str(s).ok())
            .collect())
    }

    /// Heartbeats of `hosts` and of at most [`MAX_UNMANAGED_HEARTBEATS`] hosts not among
    /// them, found by SCAN over the heartbeat keys (an agent can write only its own key,
    /// so there is no shared index to flood); then one pipeline.
    ///
    /// # Errors
    /// Redis errors.
    pub fn heartbeats(
        &mut self,
        hosts: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, Heartbeat>, StateError> {
        let prefix = self.keys.heartbeat("");
        let pattern = format!("{}*", escape_glob(&prefix));
        let mut index = BTreeSet::new();
        self.scan(&pattern, |k| {
            if let Some(h) = k.strip_prefix(&prefix).filter(|h| !hosts.contains(*h)) {
                index.insert(h.to_string());
            }
            index.len() < MAX_UNMANAGED_HEARTBEATS
        })?;
        self.read_heartbeats(hosts, index)
    }

    /// [`Store::heartbeats`], finding the unmanaged hosts among `scanned` keys (a
    /// [`Store::scan_prefix`] the caller made already) instead of scanning again.
    ///
    /// # Errors
    /// Redis errors.
    pub fn heartbeats_among(
        &mut self,
        hosts: &BTreeSet<String>,
        scanned: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, Heartbeat>, StateError> {
        let prefix = self.keys.heartbeat("");
        let index = scanned
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter(|h| !hosts.contains(*h))
            .take(MAX_UNMANAGED_HEARTBEATS)
            .map(String::from)
            .collect();
        self.read_heartbeats(hosts, index)
    }

    fn read_heartbeats(
        &mut self,
        hosts: &BTreeSet<String>,
        index: BTreeSet<String>,
    ) -> Result<BTreeMap<String, Heartbeat>, StateError> {
        let all: Vec<String> = hosts.union(&index).cloned().collect();
        if all.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut pipe = redis::pipe();
        for h in &all {
            pipe.cmd("HGETALL").arg(self.keys.heartbeat(h));
        }
        let maps: Vec<BTreeMap<String, String>> = self.query_pipe(&pipe)?;
        Ok(all
            .into_iter()
            .zip(maps)
            .filter(|(_, m)| !m.is_empty())
            .map(|(h, m)| (h, Heartbeat::from_fields(&m)))
            .collect())
    }

    /// Every key under the cluster prefix (SCAN, in batches; never blocks the server).
    ///
    /// # Errors
    /// Redis errors.
    pub fn scan_prefix(&mut self) -> Result<BTreeSet<String>, StateError> {
        let pattern = format!("{}*", escape_glob(self.keys.prefix()));
        let mut out = BTreeSet::new();
        self.scan(&pattern, |k| {
            out.insert(k.to_string());
            true
        })?;
        Ok(out)
    }

    /// Calls `keep` with every key matching `pattern` (SCAN in batches of 1,000; never
    /// blocks the server) until it returns false.
    /// The heartbeats of this cluster's `celeroot beat` instances (at most
    /// [`MAX_BEATS`], found by SCAN), by id.
    ///
    /// # Errors
    /// Redis errors.
    pub fn beat_heartbeats(&mut self) -> Result<Vec<BeatHeartbeat>, StateError> {
        let prefix = self.keys.beat("");
        let pattern = format!("{}*", escape_glob(&prefix));
        let mut ids = BTreeSet::new();
        self.scan(&pattern, |k| {
            if let Some(id) = k.strip_prefix(&prefix) {
                ids.insert(id.to_string());
            }
            ids.len() < MAX_BEATS
        })?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(self.keys.beat(id));
        }
        let all: Vec<BTreeMap<String, String>> = self.query_pipe(&pipe)?;
        Ok(ids
            .iter()
            .zip(all)
            .filter(|(_, m)| !m.is_empty())
            .map(|(id, m)| BeatHeartbeat::from_fields(id, &m))
            .collect())
    }

    /// Milliseconds left on RedBeat's lock (`None`: nobody holds it).
    ///
    /// # Errors
    /// Redis errors.
    pub fn redbeat_lock_ttl(&mut self) -> Result<Option<u64>, StateError> {
        let ms: i64 = self.query(redis::cmd("PTTL").arg(self.keys.redbeat_lock()))?;
        Ok(u64::try_from(ms).ok())
    }

    /// Asks the beat `id` to stop (it does at its next heartbeat). Returns false when no
    /// live beat has that id (nothing is written then).
    ///
    /// # Errors
    /// Redis errors.
    pub fn request_beat_stop(&mut self, id: &str) -> Result<bool, StateError> {
        let key = self.keys.beat(id);
        let asked = self.script(
            "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'stop', '1') return 1 end return 0",
            &[key],
            &[],
        )?;
        Ok(asked == Value::Int(1))
    }

    fn scan(
        &mut self,
        pattern: &str,
        mut keep: impl FnMut(&str) -> bool,
    ) -> Result<(), StateError> {
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = self.query(
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000),
            )?;
            for k in &batch {
                if !keep(k) {
                    return Ok(());
                }
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Deletes the lease when its id matches (`celeroot unlock ID`).
    ///
    /// # Errors
    /// Redis errors.
    pub fn force_release(&mut self, id: &str) -> Result<bool, StateError> {
        let before = self.lease()?;
        self.release_lease(id)?;
        Ok(before.is_some_and(|l| l.id == id))
    }

    /// Runs a raw command (for tests and tools that follow docs/state.md).
    ///
    /// # Errors
    /// Redis errors.
    pub fn raw<T: redis::FromRedisValue>(&mut self, cmd: &mut redis::Cmd) -> Result<T, StateError> {
        self.query(cmd)
    }
}

fn escape_glob(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn array(v: Value) -> Result<Vec<Value>, StateError> {
    match v {
        Value::Array(a) => Ok(a),
        Value::Set(a) => Ok(a),
        Value::Nil => Ok(Vec::new()),
        other => Err(StateError::Protocol(format!(
            "expected an array, got {other:?}"
        ))),
    }
}

fn string(v: Value) -> Result<String, StateError> {
    match v {
        Value::BulkString(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Value::SimpleString(s) => Ok(s),
        Value::Okay => Ok("OK".into()),
        Value::Int(i) => Ok(i.to_string()),
        Value::Nil => Ok(String::new()),
        Value::Boolean(b) => Ok(if b { "1".into() } else { String::new() }),
        other => Err(StateError::Protocol(format!(
            "expected a string, got {other:?}"
        ))),
    }
}

fn pairs(v: Value) -> Result<BTreeMap<String, String>, StateError> {
    let items = match v {
        Value::Map(m) => {
            return m
                .into_iter()
                .map(|(k, v)| Ok((string(k)?, string(v)?)))
                .collect()
        }
        other => array(other)?,
    };
    let mut out = BTreeMap::new();
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.insert(string(k)?, string(v)?);
    }
    Ok(out)
}

/// A lease value; one that is not celeroot's JSON is reported with the id
/// [`UNREADABLE_LEASE`].
pub(super) fn parse_lease(s: &str) -> LeaseInfo {
    serde_json::from_str(s).unwrap_or_else(|_| LeaseInfo {
        id: UNREADABLE_LEASE.into(),
        holder: "an unknown writer (the lease value is not celeroot's JSON)".into(),
        revision: "?".into(),
        since: "?".into(),
        pid: 0,
        leader: None,
    })
}
