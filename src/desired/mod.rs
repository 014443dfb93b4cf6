//! Desired state: what a validated revision means, with every default resolved.
//!
//! Owns: compiling [`Manifests`] into a [`DesiredState`]: a normalised, hashed
//! representation of each object (the unit the planner diffs), plus the derived facts
//! the fleet needs (queues per host, hosts per role, a schedule's resolved targets).
//! Queue naming lives here: a role's queue is `spec.queue` or the role name; each host
//! also consumes its own queue `celeroot.host.<name>`.
//! Must not know: git, YAML, Redis, or output formats.

/// Schedule value syntax and fire times (in [`crate::manifest::values`], which
/// `validate` shares).
pub mod schedule {
    pub use crate::manifest::values::*;
}

pub mod targets;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Map, Value as Json};
use sha2::{Digest, Sha256};

use crate::manifest::*;
use crate::validate::Manifests;
use schedule::{format_duration, parse_cron, parse_duration, Crontab};

/// Prefix of the per-host queue names.
pub const HOST_QUEUE_PREFIX: &str = "celeroot.host.";

pub use crate::manifest::values::DEFAULT_TIMEZONE;
pub use crate::manifest::HostIndex;
pub use targets::Target;
pub const DEFAULT_SSH_USER: &str = "celeroot";
pub const DEFAULT_SSH_PORT: u16 = 22;
pub const DEFAULT_CONNECT_TIMEOUT: &str = "10s";
pub const DEFAULT_TARGET_DIR: &str = "/opt/celeroot";
pub const DEFAULT_SERVICE_NAME: &str = "celeroot-worker";
pub const DEFAULT_HEALTH_TIMEOUT: &str = "30s";

/// The queue of host `name`.
pub fn host_queue(name: &str) -> String {
    format!("{HOST_QUEUE_PREFIX}{name}")
}

/// One object as the planner sees it: normalised JSON and its content hash.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DesiredObject {
    /// `{metadata: {labels, annotations}, spec}` with defaults filled in.
    pub normalized: ObjectJson,
    /// `sha256:` of the canonical JSON of `normalized`.
    pub hash: String,
}

/// The compact JSON text of a normalised object. Kept as text, not as a tree: the trees
/// of a 10,000-host fleet took about 100 MB, and the text is what is hashed and stored;
/// the few readers that look inside (plans of changed objects, prune annotations) parse
/// it with [`ObjectJson::tree`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectJson(Box<str>);

impl ObjectJson {
    /// The compact text of `v`.
    pub fn of(v: &Json) -> ObjectJson {
        ObjectJson(v.to_string().into_boxed_str())
    }

    /// Text already known to be the compact JSON of an object (read back from Redis).
    pub fn from_text(text: &str) -> ObjectJson {
        ObjectJson(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parsed tree (`null` when the text is not JSON, which only an out-of-band
    /// edit of the live state can cause).
    pub fn tree(&self) -> Json {
        serde_json::from_str(&self.0).unwrap_or_default()
    }

    /// The value of annotation `name`, if set.
    pub fn annotation(&self, name: &str) -> Option<String> {
        self.tree()["metadata"]["annotations"][name]
            .as_str()
            .map(str::to_string)
    }
}

impl Serialize for ObjectJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.tree().serialize(s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompiledRole {
    pub queue: String,
    pub concurrency: Option<u32>,
    pub max_tasks_per_child: Option<u32>,
    /// Hosts that run this role, sorted.
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveSsh {
    pub user: String,
    pub port: u16,
    pub identity_file: Option<String>,
    pub connect_timeout_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveDeployment {
    pub target_dir: String,
    pub service_name: String,
    /// The Unix user and group the agent and worker run as.
    pub user: String,
    pub group: String,
    pub restart_command: Vec<String>,
    pub health_check_command: Vec<String>,
    pub health_check_timeout_secs: u64,
    pub setup_command: Vec<String>,
    pub keep_releases: u32,
}

/// Deployment settings of the whole cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploySettings {
    /// Repository paths shipped to hosts (those present at a revision form the release).
    pub paths: Vec<String>,
    pub max_parallel: u32,
    pub canary: u32,
    pub failure_budget: u32,
}

impl Default for DeploySettings {
    fn default() -> Self {
        DeploySettings {
            paths: DEFAULT_DEPLOY_PATHS
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
            max_parallel: DEFAULT_MAX_PARALLEL,
            canary: 0,
            failure_budget: 0,
        }
    }
}

/// Paths shipped by default (each when present).
pub const DEFAULT_DEPLOY_PATHS: &[&str] = &["tasks", "pyproject.toml", "uv.lock"];
/// The Unix user the agent and worker run as by default.
pub const DEFAULT_RUN_AS_USER: &str = "celeroot";
/// Hosts deployed at once by default.
pub const DEFAULT_MAX_PARALLEL: u32 = 5;
/// Releases kept per host by default.
pub const DEFAULT_KEEP_RELEASES: u32 = 5;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompiledHost {
    pub address: String,
    pub roles: Vec<String>,
    /// Queues its worker consumes: its role queues, then its own host queue.
    pub queues: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub ssh: EffectiveSsh,
    pub deployment: EffectiveDeployment,
}

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    Cron(Box<Crontab>),
    Every(u64),
}

/// One resolved destination of a schedule: a host (mode each) or a role (mode any).
/// Whether a schedule entry goes to one host's queue or to a role's queue.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    Host,
    Role,
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EntryKind::Host => "host",
            EntryKind::Role => "role",
        })
    }
}

#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub struct ScheduleEntry {
    pub kind: EntryKind,
    pub name: String,
    pub queue: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompiledSchedule {
    pub task: String,
    pub trigger: Trigger,
    pub timezone: String,
    pub mode: Mode,
    pub enabled: bool,
    pub args: Vec<Json>,
    pub kwargs: Map<String, Json>,
    /// Seconds after which an unstarted task is discarded.
    pub expires: Option<u64>,
    pub priority: Option<u8>,
    /// Where the task is sent, sorted (none for a check-in).
    pub entries: Vec<ScheduleEntry>,
    /// A check-in of a job celeroot does not run (`external: true`): no RedBeat entry.
    pub external: bool,
    /// Seconds a run may take to start after its due time before it is late (the
    /// manifest's `grace`, or the default from the period).
    pub grace_secs: u64,
    /// Seconds after which a started run is stuck (`timeout`; none: never).
    pub timeout_secs: Option<u64>,
}

impl CompiledSchedule {
    /// The shortest time between two fires.
    pub fn period_secs(&self) -> u64 {
        match &self.trigger {
            Trigger::Cron(c) => c.min_period_secs().unwrap_or(86_400),
            Trigger::Every(s) => *s,
        }
    }
}

/// The compiled state of one revision.
#[derive(Debug, Clone, Default)]
pub struct DesiredState {
    pub cluster: String,
    /// The cluster's time zone (default `UTC`): schedules' default, and the workers'.
    pub timezone: String,
    /// Objects, hosts and schedules are shared (`Arc`): the daemon's per-object compile
    /// copies the maps of the previous revision and replaces what a change reached.
    pub objects: BTreeMap<ObjectId, Arc<DesiredObject>>,
    pub roles: BTreeMap<String, CompiledRole>,
    pub hosts: BTreeMap<String, Arc<CompiledHost>>,
    pub schedules: BTreeMap<String, Arc<CompiledSchedule>>,
    pub deploy: DeploySettings,
    /// How much run history the collector keeps (the Cluster's `runHistory`).
    pub run_history: RunRetention,
    /// The secret references of the Cluster's alert channels, where each is written (the
    /// machine that sends resolves them: `runs::alert::unresolved`).
    pub secret_refs: Vec<SecretRef>,
    /// The Cluster's `broker`: which transport the workers use, and on RabbitMQ which
    /// queues. The URL is never here (it holds credentials).
    pub broker: BrokerSettings,
    /// The Cluster's `eventRetention.keep`, when set (the store's default otherwise).
    pub events_keep: Option<u32>,
}

/// The Cluster's `broker` section, with its defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerSettings {
    pub transport: crate::manifest::BrokerTransport,
    pub queue_type: crate::manifest::AmqpQueueType,
}

/// One `env:NAME` or `file:/path` reference in the manifests, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub reference: String,
    /// What it is for (`Slack webhook URL of channel "ops"`).
    pub what: String,
    pub file: String,
    pub pos: crate::manifest::Pos,
}

fn secret_refs(file: &str, a: &Alerts) -> Vec<SecretRef> {
    let mut out = Vec::new();
    let mut add = |v: &Located<String>, what: String| {
        if v.value.starts_with("env:") || v.value.starts_with("file:") {
            out.push(SecretRef {
                reference: v.value.clone(),
                what,
                file: file.to_string(),
                pos: v.pos,
            });
        }
    };
    for c in &a.channels {
        let c = &c.value;
        let n = &c.name.value;
        if let Some(s) = &c.slack {
            add(
                &s.webhook_url,
                format!("the Slack webhook URL of channel {n:?}"),
            );
        }
        if let Some(w) = &c.webhook {
            add(&w.url, format!("the webhook URL of channel {n:?}"));
            if let Some(k) = &w.secret {
                add(k, format!("the webhook secret of channel {n:?}"));
            }
        }
        if let Some(p) = &c.pagerduty {
            add(
                &p.routing_key,
                format!("the PagerDuty routing key of channel {n:?}"),
            );
        }
        if let Some(e) = &c.email {
            if let Some(u) = &e.username {
                add(u, format!("the SMTP user name of channel {n:?}"));
            }
            if let Some(p) = &e.password {
                add(p, format!("the SMTP password of channel {n:?}"));
            }
        }
    }
    out
}

/// The Cluster's `runHistory`, with defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRetention {
    /// Runs kept per schedule target.
    pub keep: u32,
    /// Seconds a run is kept.
    pub max_age_secs: u64,
}

impl Default for RunRetention {
    fn default() -> Self {
        RunRetention {
            keep: crate::manifest::DEFAULT_RUNS_KEPT,
            max_age_secs: crate::manifest::DEFAULT_RUN_AGE_SECS,
        }
    }
}

impl RunRetention {
    /// Reads it back from the Cluster object's normalized spec (its `runHistory`, which
    /// is present only when the manifest sets it).
    pub fn of_cluster_spec(spec: &Json) -> RunRetention {
        let d = RunRetention::default();
        let h = &spec["runHistory"];
        RunRetention {
            keep: h["keep"]
                .as_u64()
                .and_then(|k| u32::try_from(k).ok())
                .unwrap_or(d.keep),
            max_age_secs: h["maxAge"]
                .as_str()
                .and_then(|a| parse_duration(a).ok())
                .unwrap_or(d.max_age_secs),
        }
    }
}

/// Names of hosts that have `role`.
pub fn hosts_with_role<'a>(
    hosts: impl Iterator<Item = (&'a String, &'a Host)>,
    role: &str,
) -> Vec<&'a str> {
    hosts
        .filter(|(_, h)| h.spec.roles.value.iter().any(|r| r.value == role))
        .map(|(n, _)| n.as_str())
        .collect()
}

/// Names of hosts whose labels contain every pair of `match_labels`.
pub fn select_hosts<'a>(
    hosts: impl Iterator<Item = (&'a String, &'a Host)>,
    match_labels: &BTreeMap<String, String>,
) -> Vec<&'a str> {
    hosts
        .filter(|(_, h)| crate::manifest::selects(match_labels, &h.metadata.labels()))
        .map(|(n, _)| n.as_str())
        .collect()
}

fn meta_json(m: &ObjectMeta) -> Json {
    let mut meta = Map::new();
    let labels = m.labels();
    if !labels.is_empty() {
        meta.insert("labels".into(), json!(labels));
    }
    if !m.annotations.is_empty() {
        meta.insert("annotations".into(), json!(m.annotations));
    }
    Json::Object(meta)
}

fn object(meta: &ObjectMeta, spec: Json) -> DesiredObject {
    let mut top = Map::new();
    let m = meta_json(meta);
    if m.as_object().is_some_and(|o| !o.is_empty()) {
        top.insert("metadata".into(), m);
    }
    top.insert("spec".into(), spec);
    let normalized = ObjectJson::of(&Json::Object(top));
    let hash = hash_of(&normalized);
    DesiredObject { normalized, hash }
}

/// `sha256:` of the JSON text of a normalised object.
pub fn hash_of(normalized: &ObjectJson) -> String {
    format!(
        "sha256:{:x}",
        Sha256::digest(normalized.as_str().as_bytes())
    )
}

/// The same JSON with every object's keys sorted (mapping order has no meaning).
fn canonical(v: Json) -> Json {
    match v {
        Json::Object(m) => {
            let sorted: std::collections::BTreeMap<String, Json> =
                m.into_iter().map(|(k, v)| (k, canonical(v))).collect();
            Json::Object(sorted.into_iter().collect())
        }
        Json::Array(a) => Json::Array(a.into_iter().map(canonical).collect()),
        other => other,
    }
}

/// Inserts `key: value` when `value` is present.
fn put<T: Serialize>(m: &mut Map<String, Json>, key: &str, value: Option<T>) {
    if let Some(v) = value {
        m.insert(key.into(), json!(v));
    }
}

fn duration_secs(v: Option<&Located<String>>, default: &str) -> u64 {
    parse_duration(v.map_or(default, |l| l.value.as_str())).unwrap_or(0)
}

fn canonical_duration(v: &Located<String>) -> String {
    parse_duration(&v.value).map_or_else(|_| v.value.clone(), format_duration)
}

fn ssh_json(s: &SshConfig) -> Json {
    let mut m = Map::new();
    put(&mut m, "user", s.user.as_ref().map(|v| &v.value));
    put(&mut m, "port", s.port.as_ref().map(|v| v.value));
    put(
        &mut m,
        "identityFile",
        s.identity_file.as_ref().map(|v| &v.value),
    );
    put(
        &mut m,
        "connectTimeout",
        s.connect_timeout.as_ref().map(canonical_duration),
    );
    Json::Object(m)
}

fn deployment_json(d: &DeploymentConfig) -> Json {
    let mut m = Map::new();
    put(&mut m, "targetDir", d.target_dir.as_ref().map(|v| &v.value));
    put(
        &mut m,
        "serviceName",
        d.service_name.as_ref().map(|v| &v.value),
    );
    put(&mut m, "user", d.user.as_ref().map(|v| &v.value));
    put(&mut m, "group", d.group.as_ref().map(|v| &v.value));
    put(
        &mut m,
        "restartCommand",
        d.restart_command.as_ref().map(|v| &v.value),
    );
    if let Some(h) = &d.health_check {
        let mut hc = Map::new();
        hc.insert("command".into(), json!(h.command.value));
        put(
            &mut hc,
            "timeout",
            h.timeout.as_ref().map(canonical_duration),
        );
        m.insert("healthCheck".into(), Json::Object(hc));
    }
    put(
        &mut m,
        "setupCommand",
        d.setup_command.as_ref().map(|v| &v.value),
    );
    put(
        &mut m,
        "keepReleases",
        d.keep_releases.as_ref().map(|v| v.value),
    );
    if let Some(p) = &d.paths {
        let list: Vec<&str> = p
            .value
            .iter()
            .map(|v| v.value.trim_end_matches('/'))
            .collect();
        m.insert("paths".into(), json!(list));
    }
    if let Some(st) = &d.strategy {
        let mut sm = Map::new();
        put(
            &mut sm,
            "maxParallel",
            st.max_parallel.as_ref().map(|v| v.value),
        );
        put(&mut sm, "canary", st.canary.as_ref().map(|v| v.value));
        put(
            &mut sm,
            "failureBudget",
            st.failure_budget.as_ref().map(|v| v.value),
        );
        m.insert("strategy".into(), Json::Object(sm));
    }
    Json::Object(m)
}

/// Merges cluster defaults and host overrides into the effective SSH settings.
fn effective_ssh(cluster: Option<&SshConfig>, host: Option<&SshConfig>) -> EffectiveSsh {
    let pick = |f: fn(&SshConfig) -> Option<&Located<String>>| {
        host.and_then(f).or_else(|| cluster.and_then(f))
    };
    EffectiveSsh {
        user: pick(|s| s.user.as_ref()).map_or(DEFAULT_SSH_USER.into(), |v| v.value.clone()),
        port: host
            .and_then(|s| s.port.as_ref())
            .or_else(|| cluster.and_then(|s| s.port.as_ref()))
            .map_or(DEFAULT_SSH_PORT, |p| p.value),
        identity_file: pick(|s| s.identity_file.as_ref()).map(|v| v.value.clone()),
        connect_timeout_secs: duration_secs(
            pick(|s| s.connect_timeout.as_ref()),
            DEFAULT_CONNECT_TIMEOUT,
        ),
    }
}

fn effective_deployment(
    cluster: Option<&DeploymentConfig>,
    host: Option<&DeploymentConfig>,
) -> EffectiveDeployment {
    let pick = |f: fn(&DeploymentConfig) -> Option<&Located<String>>| {
        host.and_then(f).or_else(|| cluster.and_then(f))
    };
    let service =
        pick(|d| d.service_name.as_ref()).map_or(DEFAULT_SERVICE_NAME.into(), |v| v.value.clone());
    let user: String =
        pick(|d| d.user.as_ref()).map_or(DEFAULT_RUN_AS_USER.into(), |v| v.value.clone());
    let group = pick(|d| d.group.as_ref()).map_or_else(|| user.clone(), |v| v.value.clone());
    let restart = host
        .and_then(|d| d.restart_command.as_ref())
        .or_else(|| cluster.and_then(|d| d.restart_command.as_ref()))
        .map_or_else(
            || vec!["systemctl".into(), "restart".into(), service.clone()],
            |v| v.value.clone(),
        );
    let health = host
        .and_then(|d| d.health_check.as_ref())
        .or_else(|| cluster.and_then(|d| d.health_check.as_ref()));
    EffectiveDeployment {
        target_dir: pick(|d| d.target_dir.as_ref())
            .map_or(DEFAULT_TARGET_DIR.into(), |v| v.value.clone()),
        restart_command: restart,
        health_check_command: health.map_or_else(
            || {
                vec![
                    "systemctl".into(),
                    "is-active".into(),
                    "--quiet".into(),
                    service.clone(),
                ]
            },
            |h| h.command.value.clone(),
        ),
        health_check_timeout_secs: duration_secs(
            health.and_then(|h| h.timeout.as_ref()),
            DEFAULT_HEALTH_TIMEOUT,
        ),
        service_name: service,
        user,
        group,
        setup_command: host
            .and_then(|d| d.setup_command.as_ref())
            .or_else(|| cluster.and_then(|d| d.setup_command.as_ref()))
            .map_or_else(
                || vec!["uv".into(), "sync".into(), "--frozen".into()],
                |v| v.value.clone(),
            ),
        keep_releases: host
            .and_then(|d| d.keep_releases.as_ref())
            .or_else(|| cluster.and_then(|d| d.keep_releases.as_ref()))
            .map_or(DEFAULT_KEEP_RELEASES, |v| v.value),
    }
}

fn role_queue(name: &str, r: &Role) -> String {
    r.spec
        .queue
        .as_ref()
        .map_or_else(|| name.to_string(), |q| q.value.clone())
}

/// Compiles validated manifests into the desired state. Pure and deterministic.
pub fn compile(m: &Manifests) -> DesiredState {
    let c = &m.cluster.object;
    let mut out = DesiredState {
        cluster: c.metadata.name.value.clone(),
        deploy: deploy_settings(c),
        secret_refs: c
            .spec
            .alerts
            .as_ref()
            .map(|a| secret_refs(&m.cluster.file, a))
            .unwrap_or_default(),
        run_history: c
            .spec
            .run_history
            .as_ref()
            .map_or_else(RunRetention::default, |h| RunRetention {
                keep: h
                    .keep
                    .as_ref()
                    .map_or(crate::manifest::DEFAULT_RUNS_KEPT, |k| k.value),
                max_age_secs: h
                    .max_age
                    .as_ref()
                    .map_or(crate::manifest::DEFAULT_RUN_AGE_SECS, |a| {
                        parse_duration(&a.value).unwrap_or(crate::manifest::DEFAULT_RUN_AGE_SECS)
                    }),
            }),
        events_keep: c
            .spec
            .event_retention
            .as_ref()
            .and_then(|r| r.keep.as_ref())
            .map(|k| k.value),
        broker: c
            .spec
            .broker
            .as_ref()
            .map_or_else(BrokerSettings::default, |b| BrokerSettings {
                transport: b.transport.as_ref().map(|t| t.value).unwrap_or_default(),
                queue_type: b.queue_type.as_ref().map(|q| q.value).unwrap_or_default(),
            }),
        ..DesiredState::default()
    };
    let cluster_tz = c
        .spec
        .timezone
        .as_ref()
        .map_or(DEFAULT_TIMEZONE.to_string(), |t| t.value.clone());
    out.timezone.clone_from(&cluster_tz);
    out.objects.insert(
        ObjectId {
            kind: Kind::Cluster,
            name: out.cluster.clone(),
        },
        Arc::new(compile_cluster(c, &cluster_tz)),
    );
    let index = HostIndex::new(m.hosts.iter().map(|(k, v)| (k, &v.object)));
    for (name, e) in &m.roles {
        let (object, role) = compile_role(name, &e.object, &index);
        out.objects.insert(
            ObjectId {
                kind: Kind::Role,
                name: name.clone(),
            },
            Arc::new(object),
        );
        out.roles.insert(name.clone(), role);
    }
    for (name, e) in &m.hosts {
        let (object, host) = compile_host(name, &e.object, c, &out.roles);
        out.objects.insert(
            ObjectId {
                kind: Kind::Host,
                name: name.clone(),
            },
            Arc::new(object),
        );
        out.hosts.insert(name.clone(), Arc::new(host));
    }
    for (name, e) in &m.schedules {
        let Some((object, schedule)) = compile_schedule(&e.object, &cluster_tz, &index, &out.roles)
        else {
            continue;
        };
        out.objects.insert(
            ObjectId {
                kind: Kind::Schedule,
                name: name.clone(),
            },
            Arc::new(object),
        );
        out.schedules.insert(name.clone(), Arc::new(schedule));
    }
    out
}

/// [`compile`] of `m` after a change, from `prev`, the compiled state before it:
/// recompiles only the objects in `changed` (removed, added or modified; never the
/// Cluster) and what depends on them: the roles the changed hosts have or had (their
/// host lists), the hosts of roles whose queue changed or that came or went (their
/// queues), and the schedules whose targets reach a changed role or host (their
/// entries). Everything else is `prev`'s. Equal to `compile(m)`: the daemon's
/// differential test (`tests/cli/test_perf_incremental.rs`) checks it over a generated
/// history of every kind of change.
pub fn recompile(
    prev: &DesiredState,
    m: &Manifests,
    changed: &std::collections::BTreeSet<ObjectId>,
) -> DesiredState {
    use std::collections::BTreeSet;
    let c = &m.cluster.object;
    let mut out = prev.clone();
    let index = HostIndex::new(m.hosts.iter().map(|(k, v)| (k, &v.object)));
    let names = |kind: Kind| {
        changed
            .iter()
            .filter(move |id| id.kind == kind)
            .map(|id| id.name.as_str())
    };
    let changed_hosts: BTreeSet<&str> = names(Kind::Host).collect();
    // Roles: the changed ones, and those a changed host has or had (their host lists).
    let mut roles: BTreeSet<&str> = names(Kind::Role).collect();
    for h in &changed_hosts {
        if let Some(old) = prev.hosts.get(*h) {
            roles.extend(old.roles.iter().map(String::as_str));
        }
        if let Some(new) = m.hosts.get(*h) {
            roles.extend(new.object.spec.roles.value.iter().map(|r| r.value.as_str()));
        }
    }
    // Hosts: the changed ones, and those of roles whose queue changed (or that came or
    // went), before and after.
    let mut hosts: BTreeSet<&str> = changed_hosts.clone();
    for r in &roles {
        let id = ObjectId {
            kind: Kind::Role,
            name: (*r).to_string(),
        };
        let compiled = m.roles.get(*r).map(|e| compile_role(r, &e.object, &index));
        let queue_before = prev.roles.get(*r).map(|c| c.queue.as_str());
        if compiled.as_ref().map(|(_, c)| c.queue.as_str()) != queue_before {
            if let Some(old) = prev.roles.get(*r) {
                hosts.extend(old.hosts.iter().map(String::as_str));
            }
            hosts.extend(index.with_role(r).iter().copied());
        }
        match compiled {
            Some((object, role)) => {
                out.objects.insert(id, Arc::new(object));
                out.roles.insert((*r).to_string(), role);
            }
            None => {
                out.objects.remove(&id);
                out.roles.remove(*r);
            }
        }
    }
    for h in &hosts {
        let id = ObjectId {
            kind: Kind::Host,
            name: (*h).to_string(),
        };
        match m.hosts.get(*h) {
            Some(e) => {
                let (object, host) = compile_host(h, &e.object, c, &out.roles);
                out.objects.insert(id, Arc::new(object));
                out.hosts.insert((*h).to_string(), Arc::new(host));
            }
            None => {
                out.objects.remove(&id);
                out.hosts.remove(*h);
            }
        }
    }
    // Schedules: the changed ones, and those with a target that reaches a recompiled
    // role or a changed host (a selector: one matching its labels before or after).
    let mut label_sets: Vec<BTreeMap<String, String>> = Vec::new();
    for h in &changed_hosts {
        if let Some(old) = prev.hosts.get(*h) {
            label_sets.push(old.labels.clone());
        }
        if let Some(new) = m.hosts.get(*h) {
            label_sets.push(new.object.metadata.labels());
        }
    }
    let reaches = |t: &Located<crate::manifest::Target>| {
        let t = &t.value;
        t.role
            .as_ref()
            .is_some_and(|r| roles.contains(r.value.as_str()))
            || t.host
                .as_ref()
                .is_some_and(|h| changed_hosts.contains(h.value.as_str()))
            || t.selector.as_ref().is_some_and(|sel| {
                label_sets
                    .iter()
                    .any(|labels| crate::manifest::selects(&sel.match_labels, labels))
            })
    };
    let mut schedules: BTreeSet<&str> = names(Kind::Schedule).collect();
    for (name, e) in &m.schedules {
        if e.object.spec.targets.value.iter().any(reaches) {
            schedules.insert(name);
        }
    }
    for name in &schedules {
        let id = ObjectId {
            kind: Kind::Schedule,
            name: (*name).to_string(),
        };
        let compiled = m
            .schedules
            .get(*name)
            .and_then(|e| compile_schedule(&e.object, &out.timezone, &index, &out.roles));
        match compiled {
            Some((object, schedule)) => {
                out.objects.insert(id, Arc::new(object));
                out.schedules
                    .insert((*name).to_string(), Arc::new(schedule));
            }
            None => {
                out.objects.remove(&id);
                out.schedules.remove(*name);
            }
        }
    }
    out
}

/// The cluster's rollout settings, defaults applied.
fn deploy_settings(c: &Cluster) -> DeploySettings {
    let Some(d) = &c.spec.deployment else {
        return DeploySettings::default();
    };
    let st = d.strategy.clone().unwrap_or_default();
    DeploySettings {
        paths: d.paths.as_ref().map_or_else(
            || DeploySettings::default().paths,
            |p| {
                p.value
                    .iter()
                    .map(|v| v.value.trim_end_matches('/').to_string())
                    .collect()
            },
        ),
        max_parallel: st.max_parallel.map_or(DEFAULT_MAX_PARALLEL, |v| v.value),
        canary: st.canary.map_or(0, |v| v.value),
        failure_budget: st.failure_budget.map_or(0, |v| v.value),
    }
}

/// The Cluster object: its effective SSH and deployment defaults.
fn compile_cluster(c: &Cluster, cluster_tz: &str) -> DesiredObject {
    let eff_ssh = effective_ssh(c.spec.ssh.as_ref(), None);
    let eff_dep = effective_deployment(c.spec.deployment.as_ref(), None);
    let mut spec = Map::new();
    put(&mut spec, "description", c.spec.description.as_ref());
    spec.insert("timezone".into(), json!(cluster_tz));
    spec.insert(
        "ssh".into(),
        json!({"user": eff_ssh.user, "port": eff_ssh.port, "identityFile": eff_ssh.identity_file, "connectTimeout": format_duration(eff_ssh.connect_timeout_secs)}),
    );
    if let Some(o) = spec.get_mut("ssh").and_then(Json::as_object_mut) {
        o.retain(|_, v| !v.is_null());
    }
    spec.insert(
        "deployment".into(),
        json!({
            "targetDir": eff_dep.target_dir,
            "serviceName": eff_dep.service_name,
            "restartCommand": eff_dep.restart_command,
            "healthCheck": {"command": eff_dep.health_check_command, "timeout": format_duration(eff_dep.health_check_timeout_secs)},
        }),
    );
    if let Some(a) = &c.spec.alerts {
        // References only: secrets are never values in git, so none is here.
        spec.insert(
            "alerts".into(),
            canonical(serde_json::to_value(a).unwrap_or_default()),
        );
    }
    if let Some(k) = c
        .spec
        .event_retention
        .as_ref()
        .and_then(|r| r.keep.as_ref())
    {
        spec.insert("eventRetention".into(), json!({"keep": k.value}));
    }
    if let Some(b) = &c.spec.broker {
        let transport = b.transport.as_ref().map(|t| t.value).unwrap_or_default();
        let mut m = Map::new();
        m.insert("transport".into(), json!(transport));
        if transport == crate::manifest::BrokerTransport::Amqp {
            m.insert(
                "queueType".into(),
                json!(b.queue_type.as_ref().map(|q| q.value).unwrap_or_default()),
            );
        }
        spec.insert("broker".into(), Json::Object(m));
    }
    if let Some(h) = &c.spec.run_history {
        let mut m = Map::new();
        put(&mut m, "keep", h.keep.as_ref().map(|k| k.value));
        put(&mut m, "maxAge", h.max_age.as_ref().map(canonical_duration));
        spec.insert("runHistory".into(), Json::Object(m));
    }
    object(&c.metadata, Json::Object(spec))
}

/// A Role object and its queue and hosts.
fn compile_role(name: &str, r: &Role, index: &HostIndex<'_>) -> (DesiredObject, CompiledRole) {
    let queue = role_queue(name, r);
    let mut tasks: Vec<&str> = r.spec.tasks.iter().map(|t| t.value.as_str()).collect();
    tasks.sort_unstable();
    let mut spec = Map::new();
    put(&mut spec, "description", r.spec.description.as_ref());
    spec.insert("queue".into(), json!(queue));
    put(
        &mut spec,
        "concurrency",
        r.spec.concurrency.as_ref().map(|v| v.value),
    );
    put(
        &mut spec,
        "maxTasksPerChild",
        r.spec.max_tasks_per_child.as_ref().map(|v| v.value),
    );
    if !tasks.is_empty() {
        spec.insert("tasks".into(), json!(tasks));
    }
    let role = CompiledRole {
        queue,
        concurrency: r.spec.concurrency.as_ref().map(|v| v.value),
        max_tasks_per_child: r.spec.max_tasks_per_child.as_ref().map(|v| v.value),
        hosts: index
            .with_role(name)
            .iter()
            .map(std::string::ToString::to_string)
            .collect(),
    };
    (object(&r.metadata, Json::Object(spec)), role)
}

/// A Host object and its queues and effective settings (the cluster's defaults applied).
fn compile_host(
    name: &str,
    h: &Host,
    c: &Cluster,
    roles: &BTreeMap<String, CompiledRole>,
) -> (DesiredObject, CompiledHost) {
    let mut role_names: Vec<String> = h.spec.roles.value.iter().map(|r| r.value.clone()).collect();
    role_names.sort();
    let mut spec = Map::new();
    spec.insert("address".into(), json!(h.spec.address.value));
    spec.insert("roles".into(), json!(role_names));
    if let Some(s) = &h.spec.ssh {
        spec.insert("ssh".into(), ssh_json(s));
    }
    if let Some(d) = &h.spec.deployment {
        spec.insert("deployment".into(), deployment_json(d));
    }
    let mut queues: Vec<String> = role_names
        .iter()
        .filter_map(|r| roles.get(r).map(|c| c.queue.clone()))
        .collect();
    queues.push(host_queue(name));
    let host = CompiledHost {
        address: h.spec.address.value.clone(),
        roles: role_names,
        queues,
        labels: h.metadata.labels(),
        ssh: effective_ssh(c.spec.ssh.as_ref(), h.spec.ssh.as_ref()),
        deployment: effective_deployment(c.spec.deployment.as_ref(), h.spec.deployment.as_ref()),
    };
    (object(&h.metadata, Json::Object(spec)), host)
}

/// A Schedule object and its trigger and resolved targets; `None` for a schedule
/// without a valid trigger (validation reports it).
fn compile_schedule(
    sch: &Schedule,
    cluster_tz: &str,
    index: &HostIndex<'_>,
    roles: &BTreeMap<String, CompiledRole>,
) -> Option<(DesiredObject, CompiledSchedule)> {
    let s = &sch.spec;
    let trigger = match (&s.cron, &s.every) {
        (Some(c), _) => Trigger::Cron(Box::new(parse_cron(&c.value).ok()?)),
        (None, Some(ev)) => Trigger::Every(parse_duration(&ev.value).unwrap_or(0)),
        (None, None) => return None,
    };
    let tz = s
        .timezone
        .as_ref()
        .map_or(cluster_tz.to_string(), |t| t.value.clone());
    let enabled = s.enabled.unwrap_or(true);
    let mut spec = Map::new();
    put(&mut spec, "description", s.description.as_ref());
    match &trigger {
        Trigger::Cron(ct) => {
            spec.insert("cron".into(), json!(ct.expression()));
            spec.insert("timezone".into(), json!(tz));
        }
        Trigger::Every(secs) => {
            spec.insert("every".into(), json!(format_duration(*secs)));
        }
    }
    let external = s.external == Some(true);
    if external {
        spec.insert("external".into(), json!(true));
    } else {
        spec.insert("task".into(), json!(s.task.value));
    }
    if !s.args.is_empty() {
        spec.insert("args".into(), canonical(json!(s.args)));
    }
    if !s.kwargs.is_empty() {
        spec.insert("kwargs".into(), canonical(json!(s.kwargs)));
    }
    // Target order has no meaning: sort so reordering is not a change.
    let mut targets: Vec<Json> = s
        .targets
        .value
        .iter()
        .map(|t| canonical(json!(t)))
        .collect();
    targets.sort_by_key(Json::to_string);
    targets.dedup();
    if !external {
        spec.insert("targets".into(), Json::Array(targets));
        spec.insert("mode".into(), json!(s.mode.value));
    }
    spec.insert("enabled".into(), json!(enabled));
    if let Some(o) = &s.options {
        let mut om = Map::new();
        put(
            &mut om,
            "expires",
            o.expires.as_ref().map(canonical_duration),
        );
        put(&mut om, "priority", o.priority.as_ref().map(|p| p.value));
        if !om.is_empty() {
            spec.insert("options".into(), Json::Object(om));
        }
    }
    put(&mut spec, "grace", s.grace.as_ref().map(canonical_duration));
    put(
        &mut spec,
        "timeout",
        s.timeout.as_ref().map(canonical_duration),
    );
    let schedule = CompiledSchedule {
        task: s.task.value.clone(),
        trigger,
        timezone: tz,
        mode: s.mode.value,
        enabled,
        args: s.args.clone(),
        kwargs: s.kwargs.clone(),
        expires: s
            .options
            .as_ref()
            .and_then(|o| o.expires.as_ref())
            .and_then(|e| parse_duration(&e.value).ok()),
        priority: s
            .options
            .as_ref()
            .and_then(|o| o.priority.as_ref())
            .map(|p| p.value),
        entries: resolve_entries(s, index, roles),
        external,
        grace_secs: 0,
        timeout_secs: s
            .timeout
            .as_ref()
            .and_then(|t| parse_duration(&t.value).ok()),
    };
    let schedule = CompiledSchedule {
        grace_secs: s
            .grace
            .as_ref()
            .and_then(|g| parse_duration(&g.value).ok())
            .unwrap_or_else(|| schedule::default_grace_secs(schedule.period_secs())),
        ..schedule
    };
    Some((object(&sch.metadata, Json::Object(spec)), schedule))
}

/// The hosts (mode each) or roles (mode any) a schedule resolves to, with their queues.
fn resolve_entries(
    s: &ScheduleSpec,
    index: &HostIndex<'_>,
    roles: &BTreeMap<String, CompiledRole>,
) -> Vec<ScheduleEntry> {
    let targets: Vec<Target> = s
        .targets
        .value
        .iter()
        .filter_map(|t| Target::of(t))
        .collect();
    let fleet = targets::Compiling { index, roles };
    targets::resolve(&targets, s.mode.value, &fleet).entries
}
