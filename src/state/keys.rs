//! Key naming: every key of one cluster lives under `celeroot:{<cluster>}:`.
//!
//! The `{...}` is a Redis Cluster hash tag, so all keys of a cluster hash to one slot and
//! one Lua script can read or write them all, on a single server and on Redis Cluster.
//! Cluster, host and role names are RFC 1123 labels (validated), so they are safe in keys.

/// Version of the key layout described in docs/state.md. Bump on incompatible changes.
/// 2: RedBeat entries and their index are managed keys.
pub const LAYOUT_VERSION: &str = "2";

/// Older layouts this celeroot reads and upgrades in place on the next applied reconcile
/// (layout 1 lacks only the RedBeat keys, which reconcile then writes).
pub const UPGRADABLE_LAYOUTS: &[&str] = &["1"];

/// The suffixes (after the cluster prefix) of [`Keys::fixed`]: RedBeat's own lock and
/// statics keys, then the keys celeroot keeps outside the key image.
const FIXED_SUFFIXES: &[&str] = &[
    "redbeat::lock",
    "redbeat::statics",
    "layout",
    "generation",
    "applied",
    "digests",
    "settled",
    "heartbeats",
    "history",
    "events",
    "lock",
    "lock-epoch",
    "leader",
    "leader-epoch",
    "deployed",
    "control",
];

/// Keys written while the fleet runs, never by reconcile: heartbeats (agents and beats)
/// and the run history (the collector).
fn is_runtime_suffix(rest: &str) -> bool {
    rest.starts_with("heartbeat:") || rest.starts_with("beat:") || rest.starts_with("runs:")
}

/// The keys of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

/// String, outside every cluster's prefix: the cluster whose live state this database
/// holds (one per database; see [`super::Store::claim_database`]).
pub const OWNER_KEY: &str = "celeroot:owner";

impl Keys {
    pub fn new(cluster: &str) -> Self {
        Keys {
            prefix: format!("celeroot:{{{cluster}}}:"),
        }
    }

    /// `celeroot:{<cluster>}:`
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// String: the layout version.
    pub fn layout(&self) -> String {
        self.key("layout")
    }
    /// String: incremented once by every applied reconcile (the fencing counter).
    pub fn generation(&self) -> String {
        self.key("generation")
    }
    /// Hash: the applied revision, when, by whom, with what result.
    pub fn applied(&self) -> String {
        self.key("applied")
    }
    /// Hash: `Kind/name` → `{"hash", "object"[, "entries"]}` of every applied object
    /// (`entries`: a schedule's resolved queues).
    pub fn objects(&self) -> String {
        self.key("objects")
    }
    /// Hash: the revision, generation, manifests path and build of celeroot that last
    /// left the live state equal to its desired state (`celeroot reconcile`'s fast no-op).
    pub fn settled(&self) -> String {
        self.key("settled")
    }
    /// Hash: managed key → sha256 of the value celeroot last wrote to it.
    pub fn digests(&self) -> String {
        self.key("digests")
    }
    /// Set: the names of all hosts.
    pub fn hosts(&self) -> String {
        self.key("hosts")
    }
    /// Hash: worker configuration of one host.
    pub fn worker(&self, host: &str) -> String {
        self.key(&format!("worker:{host}"))
    }
    /// Set: the hosts that run one role.
    /// The host a `worker:<host>` key is of (`None`: another key).
    pub fn worker_host<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.prefix())?.strip_prefix("worker:")
    }

    pub fn role_hosts(&self, role: &str) -> String {
        self.key(&format!("role:{role}:hosts"))
    }
    /// Hash with a TTL: a host's heartbeat, written by its agent.
    pub fn heartbeat(&self, host: &str) -> String {
        self.key(&format!("heartbeat:{host}"))
    }
    /// Set: names of hosts that have ever heartbeated, written by agents before issue 14.
    /// No longer written or read (any agent could flood or expire it); kept in
    /// [`Keys::fixed`] so an old one is not reported as unknown.
    pub fn heartbeats(&self) -> String {
        self.key("heartbeats")
    }
    /// List: applied revisions, newest first.
    pub fn history(&self) -> String {
        self.key("history")
    }
    /// Stream: every reconcile attempt (the audit log).
    pub fn events(&self) -> String {
        self.key("events")
    }
    /// String with a TTL: the reconcile lease.
    pub fn lock(&self) -> String {
        self.key("lock")
    }
    /// String: incremented each time a reconcile takes the lease (not when it renews
    /// it), so a pipelined transaction can watch for a takeover without being aborted
    /// by its own lease keeper.
    pub fn lock_epoch(&self) -> String {
        self.key("lock-epoch")
    }
    /// Pub/sub channel (not a key): every applied reconcile publishes its generation, so
    /// agents re-read their configuration at once.
    pub fn changes(&self) -> String {
        self.key("changes")
    }
    /// Hash: host → JSON `{release, outcome, previous, at}` of its last deploy.
    pub fn deployed(&self) -> String {
        self.key("deployed")
    }
    /// String with a TTL: the leader lease of the `watch` daemons (JSON `{token, holder,
    /// epoch, since}`).
    pub fn leader(&self) -> String {
        self.key("leader")
    }
    /// String: incremented each time a daemon becomes leader (the leader epoch).
    pub fn leader_epoch(&self) -> String {
        self.key("leader-epoch")
    }

    /// Hash: whether the `watch` daemons are suspended, and the sync requests of
    /// `celeroot sync` with the leader's answers ([`super::control`]).
    pub fn control(&self) -> String {
        self.key("control")
    }

    /// The RedBeat key prefix (`redbeat_key_prefix` of the workers and beat): RedBeat
    /// entries share the cluster's hash tag, so they change in the same transaction.
    pub fn redbeat_prefix(&self) -> String {
        self.key("redbeat:")
    }
    /// Hash: one RedBeat entry (`definition` written by celeroot, `meta` by beat).
    pub fn redbeat_entry(&self, name: &str) -> String {
        format!("{}{name}", self.redbeat_prefix())
    }
    /// Sorted set: RedBeat's due-time index (members by celeroot, scores by beat).
    pub fn redbeat_schedule(&self) -> String {
        format!("{}:schedule", self.redbeat_prefix())
    }
    /// Whether `key` is a RedBeat entry hash (not one of RedBeat's own `::` keys).
    pub fn is_redbeat_entry(&self, key: &str) -> bool {
        key.strip_prefix(&self.redbeat_prefix())
            .is_some_and(|n| !n.is_empty() && !n.starts_with(':'))
    }

    /// Keys celeroot manages outside the key image, and keys Celery Beat owns under the
    /// prefix (never reported as unknown, never swept).
    pub fn fixed(&self) -> Vec<String> {
        FIXED_SUFFIXES.iter().map(|s| self.key(s)).collect()
    }

    /// Whether reconcile may own (write, and so delete) `key`: only keys under this
    /// cluster's prefix, and none of those written by someone else (heartbeats) or kept
    /// outside the key image ([`Keys::fixed`]). A field of the digests hash naming any
    /// other key was not written by celeroot: it is reported and never acted on.
    pub fn may_own(&self, key: &str) -> bool {
        // Called for every field of the digests hash: no allocation.
        key.strip_prefix(&self.prefix)
            .is_some_and(|rest| !is_runtime_suffix(rest) && !FIXED_SUFFIXES.contains(&rest))
    }

    /// Whether `key` is written while the fleet runs, never by reconcile: a host's
    /// heartbeat (by its agent), a beat's (by `celeroot beat`), or run history (by the
    /// collector). Never reported as unknown, never swept.
    pub fn is_runtime(&self, key: &str) -> bool {
        key.strip_prefix(&self.prefix)
            .is_some_and(is_runtime_suffix)
    }

    /// Hash with a TTL: the heartbeat of one `celeroot beat` instance.
    pub fn beat(&self, id: &str) -> String {
        self.key(&format!("beat:{id}"))
    }

    /// Sorted set: the runs of one schedule target (RedBeat entry), task id → fire time.
    pub fn runs(&self, entry: &str) -> String {
        self.key(&format!("runs:{entry}"))
    }
    /// Hash: task id → the run's JSON, for one schedule target.
    pub fn run_records(&self, entry: &str) -> String {
        self.key(&format!("runs:{entry}:records"))
    }
    /// Sorted set: every recorded task id → fire time (retention of [`Keys::runs_entry`]).
    pub fn runs_index(&self) -> String {
        self.key("runs::index")
    }
    /// Hash: task id → the schedule target whose run it is.
    pub fn runs_entry(&self) -> String {
        self.key("runs::entry")
    }
    /// Hash: collector id → since when it has seen every event, and when it last said so.
    pub fn runs_collectors(&self) -> String {
        self.key("runs::collectors")
    }
    /// Hash: schedule target → when a run collector first saw it in RedBeat's index.
    pub fn runs_watch(&self) -> String {
        self.key("runs::watch")
    }
    /// Hash: SHA-256 of a check-in token → the check's name (tokens are never stored).
    pub fn runs_checks(&self) -> String {
        self.key("runs::checks")
    }
    /// Hash: `<channel>|<schedule>|<target>` → the problem state that alert channel was
    /// last told about (absent: nothing, or resolved).
    pub fn runs_alerts(&self) -> String {
        self.key("runs::alerts")
    }
    /// Hash: schedule target → its latest run.
    pub fn runs_latest(&self) -> String {
        self.key("runs::latest")
    }

    /// The lock RedBeat holds while a beat is active (`redbeat_lock_key`'s default).
    pub fn redbeat_lock(&self) -> String {
        format!("{}:lock", self.redbeat_prefix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_a_hash_tag() {
        let k = Keys::new("production");
        assert_eq!(k.worker("web01"), "celeroot:{production}:worker:web01");
        assert_eq!(k.role_hosts("db"), "celeroot:{production}:role:db:hosts");
        assert!(k.is_runtime(&k.heartbeat("web01")));
        assert!(k.is_runtime(&k.beat("vm-1")) && !k.may_own(&k.beat("vm-1")));
        assert_eq!(k.redbeat_lock(), "celeroot:{production}:redbeat::lock");
        assert!(!k.is_runtime(&k.worker("web01")));
        assert_eq!(k.worker_host(&k.worker("web01")), Some("web01"));
        assert_eq!(k.worker_host(&k.heartbeat("web01")), None);
        assert_eq!(k.worker_host("celeroot:{other}:worker:web01"), None);
    }

    #[test]
    fn only_managed_keys_under_the_own_prefix_may_be_owned() {
        let k = Keys::new("production");
        assert!(k.may_own(&k.worker("web01")));
        assert!(k.may_own(&k.redbeat_entry("backup")));
        assert!(!k.may_own(&Keys::new("staging").worker("web01")));
        assert!(!k.may_own(&Keys::new("production-web").objects()));
        assert!(!k.may_own("user:1"));
        assert!(!k.may_own(&k.heartbeat("web01")));
        assert!(!k.may_own(&k.history()));
        assert!(!k.may_own(&k.digests()));
    }

    #[test]
    fn fixed_keys_are_the_documented_ones() {
        let k = Keys::new("production");
        let fixed = k.fixed();
        for key in [
            format!("{}:lock", k.redbeat_prefix()),
            format!("{}:statics", k.redbeat_prefix()),
            k.layout(),
            k.generation(),
            k.applied(),
            k.digests(),
            k.settled(),
            k.heartbeats(),
            k.history(),
            k.events(),
            k.lock(),
            k.lock_epoch(),
            k.leader(),
            k.leader_epoch(),
            k.deployed(),
            k.control(),
        ] {
            assert!(fixed.contains(&key), "{key}");
            assert!(!k.may_own(&key), "{key}");
        }
        assert_eq!(fixed.len(), 16);
    }
}
