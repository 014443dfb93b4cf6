//! The typed manifest model for `apiVersion: celeroot.io/v1`.
//!
//! Owns: the shape of `Cluster`, `Role`, `Host` and `Schedule` objects as written by
//! operators; the doc comments here are the field documentation in the JSON Schemas.
//! Must not know: defaults resolution or cross-object rules (`validate`, `desired`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::node::Located;

/// The only supported API version.
pub const API_VERSION: &str = "celeroot.io/v1";

/// The kinds of manifest objects, in the order they are applied.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Kind {
    Cluster,
    Role,
    Host,
    Schedule,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Cluster, Kind::Role, Kind::Host, Kind::Schedule];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cluster => "Cluster",
            Kind::Role => "Role",
            Kind::Host => "Host",
            Kind::Schedule => "Schedule",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// A kind as people type it on a command line: any case, singular or plural
    /// (`host`, `Hosts`, `schedule`).
    pub fn parse_loose(s: &str) -> Option<Kind> {
        let lower = s.to_ascii_lowercase();
        let singular = lower.strip_suffix('s').unwrap_or(&lower);
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str().to_ascii_lowercase() == singular)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity of an object: its kind and name, unique across the repository.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectId {
    pub kind: Kind,
    pub name: String,
}

impl std::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// Standard object metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Name of the object: an RFC 1123 label (lowercase letters, digits and `-`, at most
    /// 63 characters, starting and ending with a letter or digit), unique per kind.
    pub name: Located<String>,
    /// Labels for selecting objects (`Schedule` targets use them to select hosts).
    /// Keys are `[prefix/]name` as in Kubernetes; values are at most 63 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Located<BTreeMap<String, String>>>,
    /// Free-form notes for humans and tools. celeroot interprets one:
    /// `celeroot.io/prune: disabled` keeps the object live when it is removed from git.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ObjectMeta {
    /// The labels, empty when none are set.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.labels
            .as_ref()
            .map(|l| l.value.clone())
            .unwrap_or_default()
    }
}

/// A manifest document: `apiVersion`, `kind`, `metadata` and a kind-specific `spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Manifest<S> {
    /// Always `celeroot.io/v1`.
    pub api_version: String,
    /// The object kind.
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: S,
}

/// SSH connection settings. On a `Host`, each field set overrides the `Cluster` default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SshConfig {
    /// Remote user (a POSIX user name). Default: `celeroot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Located<String>>,
    /// TCP port, 1–65535. Default: 22.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Located<u16>>,
    /// Path of the private key on the machine running celeroot (`~` is expanded).
    /// Default: whatever `ssh` picks (agent, `~/.ssh/config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<Located<String>>,
    /// Connection timeout as a duration (`10s`, `1m`). Default: `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Located<String>>,
}

/// A command run on the host to check that the worker is healthy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthCheck {
    /// The command as an argv list (no shell); exit status 0 means healthy.
    pub command: Located<Vec<String>>,
    /// How long the command may take, as a duration. Default: `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Located<String>>,
}

/// How worker code is deployed. On a `Host`, each field set overrides the `Cluster` default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeploymentConfig {
    /// Absolute directory on the host that holds releases. Default: `/opt/celeroot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_dir: Option<Located<String>>,
    /// systemd unit name of the worker service. Default: `celeroot-worker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<Located<String>>,
    /// Unix user the agent and its worker run as (the unit's `User=`). Default:
    /// `celeroot`. `root` also drops the unit's sandboxing (docs/security.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Located<String>>,
    /// Unix group of the agent and its worker (the unit's `Group=`). Default: the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Located<String>>,
    /// Command that restarts the worker, as an argv list (no shell).
    /// Default: `[systemctl, restart, <serviceName>]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_command: Option<Located<Vec<String>>>,
    /// Health check run after a restart.
    /// Default: `[systemctl, is-active, --quiet, <serviceName>]` with a `30s` timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Command run in the new release directory before it becomes current, as an argv
    /// list (no shell). Default: `[uv, sync, --frozen]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_command: Option<Located<Vec<String>>>,
    /// Releases kept on each host (the current one included), 1-100. Default: 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_releases: Option<Located<u32>>,
    /// Repository paths shipped to hosts (files or directories, relative to the
    /// repository root). Cluster only. Default: `[tasks, pyproject.toml, uv.lock]`, each
    /// when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Located<Vec<Located<String>>>>,
    /// How a rollout proceeds across hosts. Cluster only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
}

/// A rolling rollout: canaries first, then batches of hosts, stopped by failures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Strategy {
    /// Hosts deployed at the same time, 1-100. Default: 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<Located<u32>>,
    /// Hosts deployed and verified first, one at a time; a failing canary stops the
    /// rollout. Default: 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Located<u32>>,
    /// Failed hosts tolerated before the rollout stops (the remaining hosts are skipped).
    /// Default: 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_budget: Option<Located<u32>>,
}

/// The cluster: defaults shared by every host and schedule. Exactly one per repository.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterSpec {
    /// What this cluster is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Default IANA time zone for schedules (`Europe/Berlin`). Default: `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<Located<String>>,
    /// SSH defaults for all hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshConfig>,
    /// Deployment defaults for all hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentConfig>,
    /// How much run history celeroot keeps (`celeroot runs`, docs/runs.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_history: Option<RunHistory>,
    /// Where `celeroot watch` notifies about schedules that are late, missed, failed or
    /// stuck (docs/runs.md#alerts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<Alerts>,
    /// How many entries the event stream (the audit log) keeps (docs/state.md#events-stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_retention: Option<EventRetention>,
    /// Which broker Celery uses: Redis (default) or RabbitMQ (docs/celery.md#brokers).
    /// The broker's URL, which holds credentials, is never in git: it is
    /// CELEROOT_BROKER_URL on the machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerConfig>,
}

/// The event stream's retention.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventRetention {
    /// Entries kept, 100–1000000 (about: Redis trims whole stream nodes). Default: 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<Located<u32>>,
}

/// The most event-stream entries `eventRetention.keep` may ask for.
pub const MAX_EVENTS_KEPT: u32 = 1_000_000;
/// The fewest.
pub const MIN_EVENTS_KEPT: u32 = 100;

/// The Celery broker of a cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BrokerConfig {
    /// `redis` (the kombu Redis transport, also through Sentinel; the default) or
    /// `amqp` (RabbitMQ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Located<BrokerTransport>>,
    /// With `amqp`: the queues celeroot and the workers declare, `quorum` (replicated;
    /// the default) or `classic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_type: Option<Located<AmqpQueueType>>,
}

/// Celery's broker transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BrokerTransport {
    /// Redis (or Redis Sentinel): the broker URL is `redis://`, `rediss://` or
    /// `redis+sentinel://`.
    #[default]
    Redis,
    /// RabbitMQ: the broker URL is `amqp://` or `amqps://`.
    Amqp,
}

/// The kind of RabbitMQ queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AmqpQueueType {
    /// Replicated queues (Raft), what RabbitMQ and Celery recommend.
    #[default]
    Quorum,
    /// Single-node classic queues.
    Classic,
}

/// Alert channels and the routes that pick them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Alerts {
    /// Where notifications go; each has a name and exactly one of `slack`, `webhook`,
    /// `pagerduty`, `email`.
    #[serde(default)]
    pub channels: Vec<Located<AlertChannel>>,
    /// Which state changes go to which channels; a target's change goes to every route
    /// that matches it.
    #[serde(default)]
    pub routes: Vec<Located<AlertRoute>>,
}

/// One place notifications go. Secrets are references (`env:NAME` or `file:/path`,
/// read on the machine that sends), never values in git.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AlertChannel {
    /// The channel's name (an RFC 1123 label), as routes name it.
    pub name: Located<String>,
    /// A Slack incoming webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackChannel>,
    /// An HTTP POST of JSON, signed with HMAC-SHA256 like the webhooks celeroot receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookChannel>,
    /// PagerDuty Events API v2: trigger, then resolve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagerduty: Option<PagerDutyChannel>,
    /// E-mail over SMTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailChannel>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SlackChannel {
    /// The incoming webhook's URL: a secret reference (`env:SLACK_WEBHOOK_URL`).
    pub webhook_url: Located<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookChannel {
    /// `http://` or `https://` URL, or a secret reference to one.
    pub url: Located<String>,
    /// The HMAC-SHA256 key of the `X-Celeroot-Signature` header: a secret reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Located<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PagerDutyChannel {
    /// The integration's routing key: a secret reference.
    pub routing_key: Located<String>,
    /// The Events API URL. Default: `https://events.pagerduty.com/v2/enqueue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_url: Option<Located<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EmailChannel {
    /// The SMTP server, `host:port`.
    pub server: Located<String>,
    /// The sender address.
    pub from: Located<String>,
    /// The recipients.
    pub to: Located<Vec<Located<String>>>,
    /// SMTP user name (a secret reference), with `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<Located<String>>,
    /// SMTP password: a secret reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Located<String>>,
    /// `starttls` (default: refuse a server that does not offer it) or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Located<String>>,
    /// A PEM file of CA certificates to trust for this server, on the machine that sends
    /// (for a private CA). Default: the public web roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<Located<String>>,
}

/// Which schedule targets' state changes go where.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AlertRoute {
    /// Only these schedules (by name). Default: every schedule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<Located<String>>,
    /// Only schedules whose labels contain all of these.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Only changes into these states. Default: `late`, `missed`, `failed`, `stuck`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<Located<String>>,
    /// The channels (by name) to notify.
    pub channels: Located<Vec<Located<String>>>,
}

/// Bounds and defaults of [`RunHistory`].
pub const MAX_RUNS_KEPT: u32 = 100_000;
pub const DEFAULT_RUNS_KEPT: u32 = 100;
pub const MAX_RUN_AGE_SECS: u64 = 400 * 86_400;
pub const DEFAULT_RUN_AGE_SECS: u64 = 30 * 86_400;

/// The retention of run records: per schedule target, the last `keep` runs, none older
/// than `maxAge`. Both bounds always apply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunHistory {
    /// Runs kept per schedule target, 1–100000. Default: 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<Located<u32>>,
    /// Runs older than this are dropped, `1h` to `400d`. Default: `30d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Located<String>>,
}

/// A role: a kind of Celery worker, consuming one queue.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoleSpec {
    /// What workers of this role do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Celery queue consumed by workers of this role (letters, digits, `.`, `_`, `-`, `:`).
    /// Default: the role name. Names starting with `celeroot.` are reserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<Located<String>>,
    /// Worker processes per host, 1–1024. Default: Celery's default (the host's CPU count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Located<u32>>,
    /// Recycle a worker process after this many tasks (at least 1). Default: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tasks_per_child: Option<Located<u32>>,
    /// Celery task names or task modules (dotted Python identifiers) this role provides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<Located<String>>,
}

/// A host: a Linux machine running a Celery worker for one or more roles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HostSpec {
    /// IPv4/IPv6 address or DNS name used to reach the host.
    pub address: Located<String>,
    /// Names of the roles this host runs (at least one; each must exist).
    pub roles: Located<Vec<Located<String>>>,
    /// Overrides of the cluster's SSH defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshConfig>,
    /// Overrides of the cluster's deployment defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentConfig>,
}

/// How a schedule's matched targets run the task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every matched host runs the task, through its own host queue.
    #[default]
    Each,
    /// One worker of each matched role runs the task, through the role queue.
    /// Only `role` targets are allowed.
    Any,
}

/// Selects hosts by their labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Selector {
    /// Hosts whose labels contain all these key/value pairs. `{}` selects every host.
    pub match_labels: BTreeMap<String, String>,
}

/// One target of a schedule: exactly one of `role`, `host` or `selector`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct Target {
    /// All hosts of this role (`mode: each`) or the role's queue (`mode: any`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Located<String>>,
    /// This host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Located<String>>,
    /// The hosts whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
}

/// Celery options for the messages a schedule sends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScheduleOptions {
    /// Discard the task if no worker started it within this duration (`5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Located<String>>,
    /// Message priority, 0–9 (Celery's Redis transport range).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Located<u8>>,
}

/// A periodic Celery task: when it fires, what it runs and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// What the schedule is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A 5-field cron expression with Celery crontab semantics:
    /// `minute hour day-of-month month day-of-week` (Sunday = 0; a restricted
    /// day-of-month and day-of-week must both match). Exactly one of `cron` and `every`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<Located<String>>,
    /// A fixed interval: a duration such as `30s`, `5m`, `1h`, `1h30m`, `1d`.
    /// Exactly one of `cron` and `every`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<Located<String>>,
    /// IANA time zone the cron expression is read in. Default: the cluster's timezone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<Located<String>>,
    /// Celery task name, a dotted Python identifier (`ops.tasks.rotate_logs`). Required,
    /// except on an `external` check-in.
    #[serde(default, skip_serializing_if = "located_is_empty")]
    pub task: Located<String>,
    /// Positional arguments (any JSON-compatible values; no mapping may hold the key
    /// `__type__`, which Celery Beat's RedBeat decoder reads as a type tag).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "task_args::args"
    )]
    pub args: Vec<serde_json::Value>,
    /// Keyword arguments (a mapping of JSON-compatible values; no mapping may hold the
    /// key `__type__`).
    #[serde(
        default,
        skip_serializing_if = "serde_json::Map::is_empty",
        deserialize_with = "task_args::kwargs"
    )]
    pub kwargs: serde_json::Map<String, serde_json::Value>,
    /// Where the task runs: any mix of `role`, `host` and `selector` targets. Required,
    /// except on an `external` check-in.
    #[serde(default, skip_serializing_if = "located_vec_is_empty")]
    pub targets: Located<Vec<Located<Target>>>,
    /// `each` (default): every matched host runs it through its host queue.
    /// `any`: one worker of each targeted role runs it through the role queue.
    #[serde(default)]
    pub mode: Located<Mode>,
    /// Set to `false` to stop the schedule firing without deleting it. Default: `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Message options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<ScheduleOptions>,
    /// How long after its due time a run may take to start before it is `late` (twice
    /// this: `missed`). At most the period. Default: 10 % of the period, bounded to
    /// 1m–1h (and to the period). See docs/runs.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<Located<String>>,
    /// A run still going this long after it started is `stuck`. Default: none (never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Located<String>>,
    /// A check-in for a job celeroot does not run (cron on some machine, a backup
    /// appliance): no task and no targets; the job pings `POST /ping/<token>` on
    /// `celeroot watch` (`celeroot checks token NAME`), and the same late, missed, failed
    /// and stuck rules apply. Default: `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<bool>,
}

fn located_is_empty(v: &Located<String>) -> bool {
    v.value.is_empty()
}

fn located_vec_is_empty<T>(v: &Located<Vec<T>>) -> bool {
    v.value.is_empty()
}

pub type Cluster = Manifest<ClusterSpec>;
pub type Role = Manifest<RoleSpec>;
pub type Host = Manifest<HostSpec>;
pub type Schedule = Manifest<ScheduleSpec>;

/// Task arguments as JSON values, refusing the key `__type__` in any mapping at any depth:
/// RedBeat's decoder (`redbeat/decoder.py`) reads every JSON object with that key as a
/// tagged type and raises on one it does not know, which kills the whole beat process, so
/// every schedule stops firing. The error is located at the mapping that holds the key.
mod task_args {
    use std::fmt;

    use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde::Deserialize;
    use serde_json::Value;

    /// The key RedBeat's JSON decoder treats as a type tag.
    pub const TYPE_TAG: &str = "__type__";

    struct Untagged(Value);

    impl<'de> Deserialize<'de> for Untagged {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(V).map(Untagged)
        }
    }

    struct V;

    impl<'de> Visitor<'de> for V {
        type Value = Value;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON-compatible value")
        }
        fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
            Ok(Value::Bool(b))
        }
        fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
            Ok(i.into())
        }
        fn visit_u64<E>(self, u: u64) -> Result<Value, E> {
            Ok(u.into())
        }
        fn visit_f64<E: de::Error>(self, f: f64) -> Result<Value, E> {
            serde_json::Number::from_f64(f)
                .map(Value::Number)
                .ok_or_else(|| E::custom("expected a finite number"))
        }
        fn visit_str<E>(self, s: &str) -> Result<Value, E> {
            Ok(Value::String(s.to_string()))
        }
        fn visit_string<E>(self, s: String) -> Result<Value, E> {
            Ok(Value::String(s))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_none<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(V)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut out = Vec::new();
            while let Some(Untagged(v)) = seq.next_element()? {
                out.push(v);
            }
            Ok(Value::Array(out))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut out = serde_json::Map::new();
            while let Some(k) = map.next_key::<String>()? {
                if k == TYPE_TAG {
                    return Err(de::Error::custom(format!(
                        "the key `{TYPE_TAG}` is reserved: Celery Beat (RedBeat) reads a mapping holding it as a tagged type and stops firing every schedule; rename the key"
                    )));
                }
                let Untagged(v) = map.next_value()?;
                out.insert(k, v);
            }
            Ok(Value::Object(out))
        }
    }

    pub fn args<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Value>, D::Error> {
        let v: Vec<Untagged> = Vec::deserialize(d)?;
        Ok(v.into_iter().map(|u| u.0).collect())
    }

    pub fn kwargs<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<serde_json::Map<String, Value>, D::Error> {
        match d.deserialize_any(V)? {
            Value::Object(m) => Ok(m),
            other => Err(de::Error::custom(format!(
                "expected a mapping of keyword arguments, found {}",
                match other {
                    Value::Array(_) => "a list",
                    Value::String(_) => "a string",
                    Value::Null => "null",
                    _ => "a scalar",
                }
            ))),
        }
    }
}
