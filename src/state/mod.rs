//! Live state in Redis: the key layout, the key image of a desired state, and the store.
//!
//! Owns: every Redis key celeroot reads or writes (docs/state.md is the reference), the
//! atomic apply and observe scripts, the reconcile lease, events, history and the
//! heartbeat contract. Reconstructs the "before" side of a plan from what it observed.
//! Must not know: YAML, git, validation rules, or output formats.

pub mod acl;
pub mod backup;
pub mod control;
pub mod digest;
pub mod events;
pub mod heartbeat;
mod image;
pub mod keys;
pub mod lease;
pub mod route;
pub mod runs;
mod store;
mod transaction;
mod url;
mod verify;
pub mod writes;

use std::collections::BTreeMap;

pub use acl::{agent_user, worker_user, Passwords};
pub use control::{Control, Suspension, SyncAnswer};
pub use events::Event;
pub use heartbeat::{BeatHeartbeat, Heartbeat};
pub use image::{
    desired_image, desired_image_undigested, normalize, object_entry, project_owned,
    redbeat_definition, redbeat_entry_name, redbeat_meta, with_digests, with_digests_reusing,
    worker_fields, Image, KeyValue, Release,
};
pub use keys::{Keys, LAYOUT_VERSION};
pub use lease::{LeaseKeeper, LEASE_RENEW_EVERY};
pub use store::{
    HistoryEntry, LeaderInfo, Leadership, LeaseInfo, Observed, Store, StoredEvent, EVENTS_MAX,
    HISTORY_MAX, LEASE_TTL, MAX_UNMANAGED_HEARTBEATS, UNREADABLE_LEASE,
};
pub use url::RedisUrl;
pub use verify::{build_id, DigestCheck, Settled};

/// `n` random bytes from the kernel (`/dev/urandom`), hex-encoded: passwords of the ACL
/// users celeroot creates.
///
/// # Errors
/// `/dev/urandom` cannot be read.
pub fn random_secret(n: usize) -> std::io::Result<String> {
    let mut bytes = vec![0u8; n];
    let mut f = std::fs::File::open("/dev/urandom")?;
    std::io::Read::read_exact(&mut f, &mut bytes)?;
    Ok(hex::encode(bytes))
}

use crate::desired::{DesiredObject, ObjectJson, ScheduleEntry};
use crate::manifest::{Kind, ObjectId};

/// `sha256:` of the compact JSON of `v`, hashed as it is written (the `objects` hash of a
/// 10,000-host fleet is about 20 MB of JSON; no copy of it is built).
pub(crate) fn json_digest<T: serde::Serialize + ?Sized>(v: &T) -> Option<String> {
    struct HashWriter(sha2::Sha256);
    impl std::io::Write for HashWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            sha2::Digest::update(&mut self.0, buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = HashWriter(sha2::Sha256::default());
    serde_json::to_writer(&mut w, v).ok()?;
    Some(format!("sha256:{:x}", sha2::Digest::finalize(w.0)))
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot connect to Redis at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("Redis: {0}")]
    Redis(String),
    #[error("unexpected reply from Redis: {0}")]
    Protocol(String),
    #[error("the live state uses layout version {found}, this celeroot understands {expected}; upgrade celeroot (or migrate the keys, see docs/state.md)")]
    Layout { found: String, expected: String },
    #[error("another reconcile holds the lease: {} since {} for revision {} (lease id {})", .0.holder, .0.since, .0.revision, .0.id)]
    Locked(Box<LeaseInfo>),
    #[error("{0}")]
    Conflict(String),
    /// Another cluster's live state is in this database.
    #[error("this Redis database holds the live state of cluster {owner:?}; celeroot keeps one cluster per database (queue names, RedBeat keys and task results are not scoped by cluster), so cluster {cluster:?} was refused and nothing was written")]
    SharedDatabase { owner: String, cluster: String },
    /// An agent's ACL user exists and was not to be replaced.
    #[error("the ACL user {user} exists already")]
    AclUserExists { user: String },
    /// A `watch` daemon lost its leader lease: the apply was refused (fencing).
    #[error("{0}")]
    Fenced(String),
    /// A transaction being built met a redirection (a Redis Cluster slot moving, a
    /// Sentinel master demoted); nothing was written. The store starts it over.
    #[error("the Redis node refused the transaction ({0:?}); nothing was written")]
    Redirected(route::Redirect),
}

/// An applied object as stored in the objects hash.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveObject {
    pub id: ObjectId,
    pub object: DesiredObject,
    /// For schedules: where the task was routed when applied.
    pub entries: Vec<ScheduleEntry>,
    /// Whether the stored hash matches the stored object (false: edited out of band).
    pub intact: bool,
}

fn parse_id(s: &str) -> Option<ObjectId> {
    let (kind, name) = s.split_once('/')?;
    Some(ObjectId {
        kind: Kind::parse(kind)?,
        name: name.to_string(),
    })
}

/// One field of the objects hash, as stored.
#[derive(Default, serde::Deserialize)]
struct StoredObject<'a> {
    #[serde(default)]
    hash: Option<String>,
    #[serde(default, borrow)]
    object: Option<&'a serde_json::value::RawValue>,
    #[serde(default, borrow)]
    entries: Option<&'a serde_json::value::RawValue>,
}

/// The applied objects in an observed image.
pub fn live_objects(keys: &Keys, image: &Image) -> BTreeMap<ObjectId, LiveObject> {
    let Some(KeyValue::Hash(fields)) = image.get(&keys.objects()) else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (field, json) in fields {
        let Some(id) = parse_id(field) else { continue };
        // The object's text is kept as stored (an edit that only changes its spelling
        // is an out-of-band edit too: the hash no longer matches).
        let stored: StoredObject<'_> =
            serde_json::from_str(json).unwrap_or_else(|_| StoredObject::default());
        let normalized = stored.object.map_or_else(
            || ObjectJson::from_text("null"),
            |o| ObjectJson::from_text(o.get()),
        );
        let hash = stored.hash.unwrap_or_default();
        let recomputed = crate::desired::hash_of(&normalized);
        let entries = stored
            .entries
            .and_then(|e| serde_json::from_str(e.get()).ok())
            .unwrap_or_default();
        out.insert(
            id.clone(),
            LiveObject {
                id,
                intact: recomputed == hash,
                object: DesiredObject { normalized, hash },
                entries,
            },
        );
    }
    out
}

impl Store {
    /// Applies `writes` and records the revision atomically: with `apply.lua` (one round
    /// trip), or above [`transaction::PIPELINED_ABOVE`] writes as one pipelined
    /// `MULTI`/`EXEC` guarded by `WATCH` (the same checks and the same keys; see
    /// docs/state.md, "The pipelined transaction").
    ///
    /// # Errors
    /// [`StateError::Conflict`] when the generation moved or the lease was lost,
    /// [`StateError::Fenced`] when a daemon is no longer the leader, Redis errors.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        expected_generation: u64,
        lease_id: &str,
        writes: &[writes::KeyOp],
        applied: &BTreeMap<String, String>,
        history: &serde_json::Value,
        event: &Event,
        fence: Option<&str>,
    ) -> Result<u64, StateError> {
        if writes.len() > transaction::PIPELINED_ABOVE {
            let event = event.fields();
            let record = transaction::Record {
                applied,
                history,
                event: &event,
            };
            return self.apply_pipelined(expected_generation, lease_id, writes, &record, fence);
        }
        self.apply_script(
            expected_generation,
            lease_id,
            writes,
            applied,
            history,
            event,
            fence,
        )
    }
}
