//! Validation: every rule a revision must pass before anything is written anywhere.
//!
//! Owns: per-object rules (names, labels, addresses, durations, cron, time zones, task
//! names, argv lists), repository-wide rules (unique `(kind, name)`, exactly one
//! `Cluster`, unique queues) and cross references (host roles, schedule targets). It
//! reports every problem it finds, never just the first.
//! Must not know: git, Redis, hosts, or output formats.

pub mod rules;

use std::collections::{BTreeMap, BTreeSet};

use crate::diagnostic::Diagnostic;
use crate::manifest::values::{parse_cron, parse_duration, parse_timezone, DEFAULT_TIMEZONE};
use crate::manifest::*;

/// A validated object and where it was defined.
#[derive(Debug, Clone)]
pub struct Entry<T> {
    pub file: String,
    pub pos: Pos,
    pub object: T,
}

impl<T> Entry<T> {
    pub fn new(file: String, pos: Pos, object: T) -> Self {
        Entry { file, pos, object }
    }
}

/// A whole revision's objects, validated: every reference resolves.
#[derive(Debug, Clone)]
pub struct Manifests {
    pub cluster: Entry<Cluster>,
    pub roles: BTreeMap<String, Entry<Role>>,
    pub hosts: BTreeMap<String, Entry<Host>>,
    pub schedules: BTreeMap<String, Entry<Schedule>>,
}

/// The result of a successful validation.
#[derive(Debug, Clone)]
pub struct Validated {
    pub manifests: Manifests,
    /// Problems that do not block (e.g. a selector that matches no host).
    pub warnings: Vec<Diagnostic>,
}

type Rule = fn(&str) -> Result<(), String>;

struct Checker<'a> {
    file: &'a str,
    diags: &'a mut Vec<Diagnostic>,
}

impl Checker<'_> {
    fn error(&mut self, pos: Pos, message: impl Into<String>, help: impl Into<String>) {
        self.diags
            .push(Diagnostic::error(self.file, pos, message).help(help));
    }

    fn rule(&mut self, what: &str, value: &str, pos: Pos, rule: Rule) {
        if let Err(expected) = rule(value) {
            self.error(pos, format!("invalid {what} {value:?}"), expected);
        }
    }

    fn located(&mut self, what: &str, v: &Option<Located<String>>, rule: Rule) {
        if let Some(v) = v {
            self.rule(what, &v.value, v.pos, rule);
        }
    }

    fn duration(&mut self, what: &str, v: &Option<Located<String>>) {
        if let Some(v) = v {
            if let Err(e) = parse_duration(&v.value) {
                self.error(v.pos, format!("invalid {what}"), e);
            }
        }
    }

    fn run_history(&mut self, h: &RunHistory) {
        if let Some(k) = &h.keep {
            if !(1..=MAX_RUNS_KEPT).contains(&k.value) {
                self.error(
                    k.pos,
                    format!("invalid runHistory.keep {}", k.value),
                    format!("expected 1 to {MAX_RUNS_KEPT} runs per schedule target"),
                );
            }
        }
        if let Some(a) = &h.max_age {
            match parse_duration(&a.value) {
                Err(e) => self.error(a.pos, "invalid runHistory.maxAge", e),
                Ok(secs) if !(3600..=MAX_RUN_AGE_SECS).contains(&secs) => self.error(
                    a.pos,
                    format!("invalid runHistory.maxAge {:?}", a.value),
                    "expected a duration from 1h to 400d",
                ),
                Ok(_) => {}
            }
        }
    }

    fn broker(&mut self, b: &crate::manifest::BrokerConfig) {
        let transport = b.transport.as_ref().map(|t| t.value).unwrap_or_default();
        if let Some(q) = &b.queue_type {
            if transport != crate::manifest::BrokerTransport::Amqp {
                self.error(
                    q.pos,
                    "broker.queueType applies to RabbitMQ only",
                    "remove queueType, or set `transport: amqp`",
                );
            }
        }
    }

    fn timezone(&mut self, v: &Option<Located<String>>) {
        if let Some(v) = v {
            if let Err(e) = parse_timezone(&v.value) {
                self.error(
                    v.pos,
                    e,
                    "time zones are IANA names, see `timedatectl list-timezones`",
                );
            }
        }
    }

    fn argv(&mut self, what: &str, v: &Located<Vec<String>>) {
        if let Err(e) = rules::argv(&v.value) {
            self.error(v.pos, format!("invalid {what}"), e);
        }
    }

    fn labels(&mut self, pos: Pos, map: &BTreeMap<String, String>, what: &str) {
        for (k, v) in map {
            if let Err(e) = rules::label_key(k) {
                self.error(pos, format!("invalid {what} key {k:?}"), e);
            }
            if let Err(e) = rules::label_value(v) {
                self.error(pos, format!("invalid {what} value {v:?} for key {k:?}"), e);
            }
        }
    }

    fn meta(&mut self, kind: Kind, m: &ObjectMeta) {
        self.rule(
            &format!("{kind} name"),
            &m.name.value,
            m.name.pos,
            rules::rfc1123_label,
        );
        if let Some(l) = &m.labels {
            self.labels(l.pos, &l.value, "label");
        }
        for k in m.annotations.keys() {
            if let Err(e) = rules::label_key(k) {
                self.error(m.name.pos, format!("invalid annotation key {k:?}"), e);
            }
        }
    }

    fn ssh(&mut self, s: &SshConfig) {
        self.located("SSH user", &s.user, rules::unix_user);
        if let Some(p) = &s.port {
            if p.value == 0 {
                self.error(
                    p.pos,
                    "invalid SSH port 0",
                    "expected a port from 1 to 65535",
                );
            }
        }
        self.located("SSH identity file", &s.identity_file, rules::local_path);
        self.duration("SSH connect timeout", &s.connect_timeout);
    }

    fn deployment(&mut self, d: &DeploymentConfig) {
        self.located(
            "deployment target directory",
            &d.target_dir,
            rules::absolute_path,
        );
        self.located("service name", &d.service_name, rules::unit_name);
        self.located("deployment user", &d.user, rules::unix_user);
        self.located("deployment group", &d.group, rules::unix_user);
        if let Some(c) = &d.restart_command {
            self.argv("restart command", c);
        }
        if let Some(h) = &d.health_check {
            self.argv("health check command", &h.command);
            self.duration("health check timeout", &h.timeout);
        }
        if let Some(c) = &d.setup_command {
            self.argv("setup command", c);
        }
        if let Some(k) = &d.keep_releases {
            if !(1..=100).contains(&k.value) {
                self.error(k.pos, "invalid keepReleases", "expected 1 to 100 releases");
            }
        }
        if let Some(paths) = &d.paths {
            if paths.value.is_empty() {
                self.error(
                    paths.pos,
                    "invalid deployment paths",
                    "expected at least one repository path, such as `tasks`",
                );
            }
            for p in &paths.value {
                self.rule("deployment path", &p.value, p.pos, rules::repo_path);
            }
        }
        if let Some(st) = &d.strategy {
            for (what, v, min) in [
                ("maxParallel", &st.max_parallel, 1),
                ("canary", &st.canary, 0),
                ("failureBudget", &st.failure_budget, 0),
            ] {
                if let Some(v) = v {
                    if v.value < min || v.value > 100 {
                        self.error(
                            v.pos,
                            format!("invalid {what}"),
                            format!("expected {min} to 100"),
                        );
                    }
                }
            }
        }
    }

    /// Settings that only make sense for the whole cluster.
    fn cluster_only(&mut self, d: &DeploymentConfig) {
        if let Some(p) = &d.paths {
            self.error(
                p.pos,
                "`paths` is a cluster setting",
                "set deployment.paths in the Cluster: every host runs the same release",
            );
        }
        if let Some(st) = &d.strategy {
            let pos = st
                .max_parallel
                .as_ref()
                .or(st.canary.as_ref())
                .or(st.failure_budget.as_ref())
                .map(|v| v.pos)
                .unwrap_or_default();
            self.error(
                pos,
                "`strategy` is a cluster setting",
                "set deployment.strategy in the Cluster",
            );
        }
    }
}

/// Validates everything that was loaded. On success returns the objects by kind and name.
///
/// # Errors
/// Every diagnostic (errors and warnings, sorted by location) when any error was found,
/// including errors from loading.
pub fn validate(loaded: LoadedFiles) -> Result<Validated, Vec<Diagnostic>> {
    validate_keeping(loaded).map(|(v, _)| v)
}

/// Own diagnostics ([`own_diagnostics`]) by file.
pub type OwnDiagnostics = BTreeMap<String, Vec<Diagnostic>>;

/// The diagnostics of each schedule's cross-object checks (its time zone against the
/// cluster's, its targets and its task against the roles and hosts), by schedule name;
/// schedules without any are left out.
pub type ScheduleDiagnostics = BTreeMap<String, Vec<Diagnostic>>;

/// What [`validate_keeping`] keeps for [`revalidate`]: the diagnostics it need not
/// compute again for the objects a change does not reach.
#[derive(Debug, Clone, Default)]
pub struct Kept {
    pub own: OwnDiagnostics,
    pub schedules: ScheduleDiagnostics,
}

/// The diagnostics of one object's own checks: those that need no other object (names,
/// labels, addresses, durations, cron, time zones, task names, argv lists).
pub fn own_diagnostics(obj: &Object) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    check_own(obj, &mut diags);
    diags
}

/// [`validate`], also returning the own diagnostics ([`own_diagnostics`]) of each
/// file's objects and each schedule's cross-object diagnostics ([`Kept`]), for a
/// caller that revalidates changes with [`revalidate`].
///
/// # Errors
/// As [`validate`].
pub fn validate_keeping(loaded: LoadedFiles) -> Result<(Validated, Kept), Vec<Diagnostic>> {
    let LoadedFiles {
        objects,
        mut diagnostics,
        undecoded,
    } = loaded;
    let undecoded: BTreeSet<ObjectId> = undecoded.into_iter().collect();

    let mut clusters: Vec<Entry<Cluster>> = Vec::new();
    let mut roles: BTreeMap<String, Entry<Role>> = BTreeMap::new();
    let mut hosts: BTreeMap<String, Entry<Host>> = BTreeMap::new();
    let mut schedules: BTreeMap<String, Entry<Schedule>> = BTreeMap::new();
    let mut seen: BTreeMap<ObjectId, (String, Pos)> = BTreeMap::new();
    let mut own = OwnDiagnostics::new();

    for obj in objects {
        let id = obj.body.id();
        let name_pos = obj.body.metadata().name.pos;
        if let Some((first_file, first_pos)) = seen.get(&id) {
            diagnostics.push(
                Diagnostic::error(
                    &obj.file,
                    name_pos,
                    format!("duplicate {id}: names must be unique per kind"),
                )
                .related(first_file.clone(), *first_pos, "first defined here"),
            );
            continue;
        }
        seen.insert(id.clone(), (obj.file.clone(), name_pos));
        let d = own_diagnostics(&obj);
        if !d.is_empty() {
            own.entry(obj.file.clone()).or_default().extend(d);
        }
        let (file, pos) = (obj.file, obj.pos);
        match obj.body {
            ObjectBody::Cluster(o) => clusters.push(Entry::new(file, pos, o)),
            ObjectBody::Role(o) => {
                roles.insert(id.name, Entry::new(file, pos, o));
            }
            ObjectBody::Host(o) => {
                hosts.insert(id.name, Entry::new(file, pos, o));
            }
            ObjectBody::Schedule(o) => {
                schedules.insert(id.name, Entry::new(file, pos, o));
            }
        }
    }
    diagnostics.extend(own.values().flatten().cloned());

    let cluster_undecoded = undecoded.iter().any(|id| id.kind == Kind::Cluster);
    match clusters.len() {
        0 if !cluster_undecoded => diagnostics.push(
            Diagnostic::global(
                crate::diagnostic::Severity::Error,
                "no Cluster object found",
            )
            .help("add one manifest with `kind: Cluster` (see `celeroot init` for an example)"),
        ),
        0 | 1 => {}
        _ => {
            let first = &clusters[0];
            for extra in &clusters[1..] {
                diagnostics.push(
                    Diagnostic::error(
                        &extra.file,
                        extra.object.metadata.name.pos,
                        "more than one Cluster object: a repository describes exactly one cluster",
                    )
                    .related(
                        first.file.clone(),
                        first.object.metadata.name.pos,
                        "first Cluster defined here",
                    ),
                );
            }
        }
    }

    let mut per_schedule = ScheduleDiagnostics::new();
    cross_checks(
        clusters.first(),
        &roles,
        &hosts,
        &schedules,
        &undecoded,
        &mut diagnostics,
    );
    let index = HostIndex::new(hosts.iter().map(|(k, v)| (k, &v.object)));
    let scope = Scope {
        cluster: clusters.first(),
        roles: &roles,
        hosts: &hosts,
        index: &index,
        undecoded: &undecoded,
    };
    for (name, s) in &schedules {
        scope.schedule_into(name, s, &mut per_schedule);
    }
    diagnostics.extend(per_schedule.values().flatten().cloned());

    crate::diagnostic::sort(&mut diagnostics);
    let has_error = diagnostics.iter().any(Diagnostic::is_error);
    match clusters.into_iter().next() {
        Some(cluster) if !has_error => Ok((
            Validated {
                manifests: Manifests {
                    cluster,
                    roles,
                    hosts,
                    schedules,
                },
                warnings: diagnostics,
            },
            Kept {
                own,
                schedules: per_schedule,
            },
        )),
        _ => Err(diagnostics),
    }
}

/// Applies a change to manifests that validated: removes the objects `removed`, adds
/// `added` (whose own checks the caller ran and found no error in), and runs the
/// repository-wide and cross-object checks again over the result: those of the whole
/// repository (alert routes, queues, host references) in full, and each schedule's
/// ([`ScheduleDiagnostics`], kept in `kept`) only for the schedules the change reaches.
/// Returns their diagnostics (warnings only). `None` when the change needs a full
/// [`validate`] instead: it removes or adds a Cluster, adds an object that exists, or a
/// check found an error; `m` and `kept` are then left half-changed and must be dropped.
///
/// A schedule's diagnostics depend on the schedule, the cluster's time zone, the roles
/// (their names, queues and tasks) and, through its targets, on the hosts it reaches
/// and the hosts that have a role it names. So: any role change redoes every schedule;
/// a host change redoes the schedules that name the host, that name a role the host has
/// or had, or whose selector matches its labels before or after (the reach rules of
/// `desired::recompile`, which a role change widens here since a schedule's task check
/// reads the roles of the hosts it reaches).
pub fn revalidate(
    m: &mut Manifests,
    kept: &mut ScheduleDiagnostics,
    removed: &[ObjectId],
    added: Vec<Object>,
) -> Option<Vec<Diagnostic>> {
    let mut reach = Reach::default();
    for id in removed {
        let gone = match id.kind {
            Kind::Cluster => false,
            Kind::Role => {
                reach.all = true;
                m.roles.remove(&id.name).is_some()
            }
            Kind::Host => m
                .hosts
                .remove(&id.name)
                .inspect(|h| reach.host(&id.name, h))
                .is_some(),
            Kind::Schedule => {
                kept.remove(&id.name);
                m.schedules.remove(&id.name).is_some()
            }
        };
        if !gone {
            return None;
        }
    }
    for obj in added {
        let name = obj.body.metadata().name.value.clone();
        let (file, pos) = (obj.file, obj.pos);
        let fresh = match obj.body {
            ObjectBody::Cluster(_) => false,
            ObjectBody::Role(o) => {
                reach.all = true;
                m.roles.insert(name, Entry::new(file, pos, o)).is_none()
            }
            ObjectBody::Host(o) => {
                let e = Entry::new(file, pos, o);
                reach.host(&name, &e);
                m.hosts.insert(name, e).is_none()
            }
            ObjectBody::Schedule(o) => {
                reach.schedules.insert(name.clone());
                m.schedules.insert(name, Entry::new(file, pos, o)).is_none()
            }
        };
        if !fresh {
            return None;
        }
    }
    let undecoded = BTreeSet::new();
    let mut diagnostics = Vec::new();
    cross_checks(
        Some(&m.cluster),
        &m.roles,
        &m.hosts,
        &m.schedules,
        &undecoded,
        &mut diagnostics,
    );
    let index = HostIndex::new(m.hosts.iter().map(|(k, v)| (k, &v.object)));
    let scope = Scope {
        cluster: Some(&m.cluster),
        roles: &m.roles,
        hosts: &m.hosts,
        index: &index,
        undecoded: &undecoded,
    };
    if reach.all {
        kept.clear();
    }
    for (name, s) in &m.schedules {
        if reach.all || reach.schedules.contains(name) || reach.reaches(&s.object) {
            scope.schedule_into(name, s, kept);
        }
    }
    diagnostics.extend(kept.values().flatten().cloned());
    if diagnostics.iter().any(Diagnostic::is_error) {
        return None;
    }
    Some(diagnostics)
}

/// What a change reaches of the schedules' cross-object checks ([`revalidate`]).
#[derive(Default)]
struct Reach {
    /// A role changed: every schedule.
    all: bool,
    /// Added or changed schedules.
    schedules: BTreeSet<String>,
    /// Changed hosts, the roles they have or had, and their labels before and after.
    hosts: BTreeSet<String>,
    roles: BTreeSet<String>,
    labels: Vec<BTreeMap<String, String>>,
}

impl Reach {
    fn host(&mut self, name: &str, h: &Entry<Host>) {
        self.hosts.insert(name.to_string());
        self.roles.extend(roles_of(h).map(str::to_string));
        self.labels.push(h.object.metadata.labels());
    }

    fn reaches(&self, s: &Schedule) -> bool {
        s.spec.targets.value.iter().any(|t| {
            let t = &t.value;
            t.role
                .as_ref()
                .is_some_and(|r| self.roles.contains(&r.value))
                || t.host
                    .as_ref()
                    .is_some_and(|h| self.hosts.contains(&h.value))
                || t.selector.as_ref().is_some_and(|sel| {
                    self.labels
                        .iter()
                        .any(|labels| selects(&sel.match_labels, labels))
                })
        })
    }
}

/// What one schedule's cross-object checks read.
struct Scope<'a> {
    /// None when the repository has none (its absence is the error): no time zone check.
    cluster: Option<&'a Entry<Cluster>>,
    roles: &'a BTreeMap<String, Entry<Role>>,
    hosts: &'a BTreeMap<String, Entry<Host>>,
    index: &'a HostIndex<'a>,
    undecoded: &'a BTreeSet<ObjectId>,
}

impl Scope<'_> {
    /// Runs the cross-object checks of schedule `name` and keeps its diagnostics in
    /// `kept` (or drops its entry when there are none).
    fn schedule_into(&self, name: &str, s: &Entry<Schedule>, kept: &mut ScheduleDiagnostics) {
        let mut d = Vec::new();
        if let Some(c) = self.cluster {
            check_schedule_timezone(c, name, s, &mut d);
        }
        check_schedule_references(
            name,
            s,
            self.index,
            self.hosts,
            self.roles,
            self.undecoded,
            &mut d,
        );
        if d.is_empty() {
            kept.remove(name);
        } else {
            kept.insert(name.to_string(), d);
        }
    }
}

/// The checks of one object that need no other object.
fn check_own(obj: &Object, diags: &mut Vec<Diagnostic>) {
    let mut c = Checker {
        file: &obj.file,
        diags,
    };
    c.meta(obj.body.kind(), obj.body.metadata());
    match &obj.body {
        ObjectBody::Cluster(o) => {
            c.timezone(&o.spec.timezone);
            if let Some(s) = &o.spec.ssh {
                c.ssh(s);
            }
            if let Some(d) = &o.spec.deployment {
                c.deployment(d);
            }
            if let Some(h) = &o.spec.run_history {
                c.run_history(h);
            }
            if let Some(b) = &o.spec.broker {
                c.broker(b);
            }
            if let Some(k) = o
                .spec
                .event_retention
                .as_ref()
                .and_then(|r| r.keep.as_ref())
            {
                let (lo, hi) = (
                    crate::manifest::MIN_EVENTS_KEPT,
                    crate::manifest::MAX_EVENTS_KEPT,
                );
                if !(lo..=hi).contains(&k.value) {
                    c.error(
                        k.pos,
                        format!("invalid eventRetention.keep {}", k.value),
                        format!("expected {lo} to {hi} events"),
                    );
                }
            }
        }
        ObjectBody::Role(o) => check_role(&mut c, o),
        ObjectBody::Host(o) => check_host(&mut c, o),
        ObjectBody::Schedule(o) => check_schedule(&mut c, o),
    }
}

/// The checks between objects over the whole repository: alert routes against the
/// cluster, unique queues, host roles that resolve. Each schedule's own cross-object
/// checks (time zone, targets, task) are [`Scope::schedule_into`].
fn cross_checks(
    cluster: Option<&Entry<Cluster>>,
    roles: &BTreeMap<String, Entry<Role>>,
    hosts: &BTreeMap<String, Entry<Host>>,
    schedules: &BTreeMap<String, Entry<Schedule>>,
    undecoded: &BTreeSet<ObjectId>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    if let Some(c) = cluster {
        if let Some(a) = &c.object.spec.alerts {
            check_alerts(&c.file, a, schedules, diagnostics);
        }
    }
    check_queues(roles, diagnostics);
    check_host_references(hosts, roles, undecoded, diagnostics);
}

fn check_role(c: &mut Checker<'_>, o: &Role) {
    c.located("queue name", &o.spec.queue, rules::queue_name);
    if let Some(n) = &o.spec.concurrency {
        if !(1..=1024).contains(&n.value) {
            c.error(
                n.pos,
                format!("invalid concurrency {}", n.value),
                "expected a number of worker processes from 1 to 1024",
            );
        }
    }
    if let Some(n) = &o.spec.max_tasks_per_child {
        if n.value == 0 {
            c.error(
                n.pos,
                "invalid maxTasksPerChild 0",
                "expected at least 1 (omit the field to never recycle)",
            );
        }
    }
    let mut seen = BTreeSet::new();
    for t in &o.spec.tasks {
        c.rule("task name", &t.value, t.pos, rules::python_dotted_name);
        if !seen.insert(&t.value) {
            c.error(
                t.pos,
                format!("task {:?} is listed twice", t.value),
                "remove the duplicate",
            );
        }
    }
}

fn check_host(c: &mut Checker<'_>, o: &Host) {
    c.rule(
        "host address",
        &o.spec.address.value,
        o.spec.address.pos,
        rules::address,
    );
    if o.spec.roles.value.is_empty() {
        c.error(
            o.spec.roles.pos,
            "a host needs at least one role",
            "list role names, e.g. `roles: [webserver]`",
        );
    }
    let mut seen = BTreeSet::new();
    for r in &o.spec.roles.value {
        c.rule("role name", &r.value, r.pos, rules::rfc1123_label);
        if !seen.insert(&r.value) {
            c.error(
                r.pos,
                format!("role {:?} is listed twice", r.value),
                "remove the duplicate",
            );
        }
    }
    if let Some(s) = &o.spec.ssh {
        c.ssh(s);
    }
    if let Some(d) = &o.spec.deployment {
        c.deployment(d);
        c.cluster_only(d);
    }
}

fn check_schedule(c: &mut Checker<'_>, o: &Schedule) {
    let s = &o.spec;
    match (&s.cron, &s.every) {
        (Some(_), Some(e)) => c.error(
            e.pos,
            "a schedule has either `cron` or `every`, not both",
            "remove one of them",
        ),
        (None, None) => c.error(
            o.metadata.name.pos,
            "a schedule needs `cron` or `every`",
            "add e.g. `cron: \"0 3 * * *\"` or `every: 5m`",
        ),
        (Some(cron), None) => {
            if let Err(e) = parse_cron(&cron.value) {
                c.error(cron.pos, "invalid cron expression", e);
            }
        }
        (None, Some(_)) => c.duration("interval (`every`)", &s.every),
    }
    c.timezone(&s.timezone);
    if s.every.is_some() {
        if let Some(tz) = &s.timezone {
            c.diags.push(Diagnostic::warning(
                c.file,
                tz.pos,
                "`timezone` has no effect on an `every` interval schedule",
            ));
        }
    }
    if s.external == Some(true) {
        check_external(c, o);
        return;
    }
    if s.task.value.is_empty() {
        c.error(
            o.metadata.name.pos,
            "a schedule needs a `task`",
            "add e.g. `task: ops.tasks.rotate_logs` (or `external: true` for a check-in of a job celeroot does not run)",
        );
    } else {
        c.rule(
            "task name",
            &s.task.value,
            s.task.pos,
            rules::python_dotted_name,
        );
    }
    if s.targets.value.is_empty() {
        c.error(
            s.targets.pos,
            "a schedule needs at least one target",
            "add `- role: NAME`, `- host: NAME` or `- selector: {matchLabels: {...}}`",
        );
    }
    for t in &s.targets.value {
        let set = usize::from(t.role.is_some())
            + usize::from(t.host.is_some())
            + usize::from(t.selector.is_some());
        if set != 1 {
            c.error(
                t.pos,
                format!(
                    "a target has exactly one of `role`, `host` or `selector`; this one has {set}"
                ),
                if set == 0 {
                    "add one of `role: NAME`, `host: NAME` or `selector: {matchLabels: {...}}`"
                } else {
                    "split it into separate list items"
                },
            );
            continue;
        }
        if let Some(r) = &t.role {
            c.rule("role name", &r.value, r.pos, rules::rfc1123_label);
        }
        if let Some(h) = &t.host {
            c.rule("host name", &h.value, h.pos, rules::rfc1123_label);
        }
        if let Some(sel) = &t.selector {
            c.labels(t.pos, &sel.match_labels, "selector label");
        }
        if s.mode.value == Mode::Any && t.role.is_none() {
            c.error(t.pos, "`mode: any` only takes `role` targets", "`any` sends one message to the role queue; use `mode: each` to run on chosen hosts");
        }
    }
    check_grace_and_timeout(c, s);
    if let Some(opts) = &s.options {
        c.duration("expires", &opts.expires);
        if let Some(p) = &opts.priority {
            if p.value > 9 {
                c.error(
                    p.pos,
                    format!("invalid priority {}", p.value),
                    "expected 0 to 9 (Celery's Redis transport range)",
                );
            }
        }
    }
}

/// A check-in (`external: true`) has a calendar, a grace and a timeout, and nothing that
/// sends a task.
fn check_external(c: &mut Checker<'_>, o: &Schedule) {
    let s = &o.spec;
    let mut refuse = |what: &str, pos: Pos| {
        c.error(
            pos,
            format!("an external check-in has no `{what}`"),
            "celeroot does not run external jobs: they ping `POST /ping/<token>` (`celeroot checks token NAME`)",
        );
    };
    if !s.task.value.is_empty() {
        refuse("task", s.task.pos);
    }
    if !s.targets.value.is_empty() {
        refuse("targets", s.targets.pos);
    }
    if !s.args.is_empty() || !s.kwargs.is_empty() {
        refuse("args or kwargs", o.metadata.name.pos);
    }
    if let Some(opts) = &s.options {
        let pos = opts
            .expires
            .as_ref()
            .map(|e| e.pos)
            .or(opts.priority.as_ref().map(|p| p.pos))
            .unwrap_or(o.metadata.name.pos);
        refuse("options", pos);
    }
    check_grace_and_timeout(c, s);
}

/// `grace` and `timeout` are durations; a grace longer than the shortest period would make
/// every run late before the next is due.
fn check_grace_and_timeout(c: &mut Checker<'_>, s: &ScheduleSpec) {
    c.duration("grace", &s.grace);
    c.duration("timeout", &s.timeout);
    let Some(g) = &s.grace else { return };
    let Ok(grace) = parse_duration(&g.value) else {
        return;
    };
    if grace == 0 {
        c.error(
            g.pos,
            "invalid grace \"0s\"",
            "expected a duration of at least 1s",
        );
        return;
    }
    let period = match (&s.cron, &s.every) {
        (Some(cron), None) => parse_cron(&cron.value)
            .ok()
            .and_then(|ct| ct.min_period_secs()),
        (None, Some(e)) => parse_duration(&e.value).ok(),
        _ => None,
    };
    if let Some(p) = period {
        if grace > p {
            c.error(
                g.pos,
                format!(
                    "grace {:?} is longer than the schedule's period ({})",
                    g.value,
                    crate::manifest::values::format_duration(p)
                ),
                "a run is late after its grace and missed after twice that: keep grace at most the period",
            );
        }
    }
}

/// Alert channels and routes: names, exactly one kind per channel, secret references,
/// URLs, and routes naming channels and schedules that exist.
fn check_alerts(
    file: &str,
    a: &Alerts,
    schedules: &BTreeMap<String, Entry<Schedule>>,
    diags: &mut Vec<Diagnostic>,
) {
    let mut c = Checker { file, diags };
    let mut names: BTreeMap<&str, Pos> = BTreeMap::new();
    for ch in &a.channels {
        let n = &ch.value.name;
        c.rule("channel name", &n.value, n.pos, rules::rfc1123_label);
        if let Some(first) = names.insert(&n.value, n.pos) {
            c.diags.push(
                Diagnostic::error(
                    file,
                    n.pos,
                    format!("duplicate alert channel {:?}", n.value),
                )
                .related(file.to_string(), first, "first defined here"),
            );
        }
        let ch = &ch.value;
        let kinds = usize::from(ch.slack.is_some())
            + usize::from(ch.webhook.is_some())
            + usize::from(ch.pagerduty.is_some())
            + usize::from(ch.email.is_some());
        if kinds != 1 {
            c.error(
                n.pos,
                format!("an alert channel has exactly one of `slack`, `webhook`, `pagerduty` or `email`; this one has {kinds}"),
                if kinds == 0 { "add one, e.g. `slack: {webhookUrl: env:SLACK_WEBHOOK_URL}`" } else { "split it into separate channels" },
            );
        }
        if let Some(s) = &ch.slack {
            c.rule(
                "Slack webhook URL",
                &s.webhook_url.value,
                s.webhook_url.pos,
                rules::secret_ref,
            );
        }
        if let Some(w) = &ch.webhook {
            if !w.url.value.starts_with("env:") && !w.url.value.starts_with("file:") {
                c.rule("webhook URL", &w.url.value, w.url.pos, rules::http_url);
            } else {
                c.rule("webhook URL", &w.url.value, w.url.pos, rules::secret_ref);
            }
            c.located("webhook secret", &w.secret, rules::secret_ref);
        }
        if let Some(p) = &ch.pagerduty {
            c.rule(
                "PagerDuty routing key",
                &p.routing_key.value,
                p.routing_key.pos,
                rules::secret_ref,
            );
            c.located("PagerDuty events URL", &p.events_url, rules::http_url);
        }
        if let Some(e) = &ch.email {
            c.rule(
                "SMTP server",
                &e.server.value,
                e.server.pos,
                rules::host_port,
            );
            c.rule("sender", &e.from.value, e.from.pos, rules::email_address);
            if e.to.value.is_empty() {
                c.error(
                    e.to.pos,
                    "an e-mail channel needs at least one recipient",
                    "add `to: [ops@example.org]`",
                );
            }
            for t in &e.to.value {
                c.rule("recipient", &t.value, t.pos, rules::email_address);
            }
            c.located("CA file", &e.ca_file, rules::absolute_path);
            c.located("SMTP user name", &e.username, rules::secret_ref);
            c.located("SMTP password", &e.password, rules::secret_ref);
            if e.username.is_some() != e.password.is_some() {
                let pos = e
                    .username
                    .as_ref()
                    .or(e.password.as_ref())
                    .map(|v| v.pos)
                    .unwrap_or_default();
                c.error(
                    pos,
                    "`username` and `password` go together",
                    "set both, or neither",
                );
            }
            if let Some(t) = &e.tls {
                if !matches!(t.value.as_str(), "starttls" | "none") {
                    c.error(
                        t.pos,
                        format!("invalid tls {:?}", t.value),
                        "expected `starttls` (the default) or `none`",
                    );
                }
            }
        }
    }
    for r in &a.routes {
        let r = &r.value;
        if r.channels.value.is_empty() {
            c.error(
                r.channels.pos,
                "a route needs at least one channel",
                "add `channels: [NAME]`",
            );
        }
        for ch in &r.channels.value {
            if !names.contains_key(ch.value.as_str()) {
                let hint = crate::manifest::did_you_mean(&ch.value, names.keys().copied())
                    .map_or_else(
                        || "define it under `alerts.channels`".to_string(),
                        |m| format!("did you mean {m:?}?"),
                    );
                c.error(
                    ch.pos,
                    format!("unknown alert channel {:?}", ch.value),
                    hint,
                );
            }
        }
        for s in &r.schedules {
            if !schedules.contains_key(&s.value) {
                let hint =
                    crate::manifest::did_you_mean(&s.value, schedules.keys().map(String::as_str))
                        .map_or_else(
                            || "name a Schedule of this repository".to_string(),
                            |m| format!("did you mean {m:?}?"),
                        );
                c.error(s.pos, format!("unknown schedule {:?}", s.value), hint);
            }
        }
        c.labels(r.channels.pos, &r.match_labels, "route label");
        for st in &r.states {
            if !matches!(st.value.as_str(), "late" | "missed" | "failed" | "stuck") {
                c.error(
                    st.pos,
                    format!("invalid state {:?}", st.value),
                    "expected `late`, `missed`, `failed` or `stuck`",
                );
            }
        }
    }
}

/// Celery Beat reads every crontab in the app's time zone, which celeroot sets to the
/// cluster's; a cron schedule in another zone cannot be expressed faithfully.
fn check_schedule_timezone(
    cluster: &Entry<Cluster>,
    name: &str,
    s: &Entry<Schedule>,
    diags: &mut Vec<Diagnostic>,
) {
    let cluster_tz = cluster
        .object
        .spec
        .timezone
        .as_ref()
        .map_or(DEFAULT_TIMEZONE, |t| t.value.as_str());
    {
        if let (Some(_), Some(tz)) = (&s.object.spec.cron, &s.object.spec.timezone) {
            // An unknown zone is reported by the per-object check already.
            if tz.value != cluster_tz && parse_timezone(&tz.value).is_ok() {
                let mut d = Diagnostic::error(
                    &s.file,
                    tz.pos,
                    format!("schedule {name:?}: timezone {:?} differs from the cluster's {cluster_tz:?}", tz.value),
                )
                .help("Celery Beat reads every crontab in the app time zone, which is the cluster's: remove `timezone` and write the times in the cluster's zone");
                if let Some(ctz) = &cluster.object.spec.timezone {
                    d = d.related(
                        cluster.file.clone(),
                        ctz.pos,
                        "the cluster's time zone is set here",
                    );
                }
                diags.push(d);
            }
        }
    }
}

fn check_queues(roles: &BTreeMap<String, Entry<Role>>, diags: &mut Vec<Diagnostic>) {
    let mut owners: BTreeMap<String, (&str, &Entry<Role>)> = BTreeMap::new();
    for (name, e) in roles {
        let (queue, pos) = match &e.object.spec.queue {
            Some(q) => (q.value.clone(), q.pos),
            None => (name.clone(), e.object.metadata.name.pos),
        };
        if let Some((other, oe)) = owners.get(&queue) {
            let other_pos = oe
                .object
                .spec
                .queue
                .as_ref()
                .map_or(oe.object.metadata.name.pos, |q| q.pos);
            diags.push(
                Diagnostic::error(
                    &e.file,
                    pos,
                    format!(
                        "queue {queue:?} of role {name:?} is already the queue of role {other:?}"
                    ),
                )
                .help("each role consumes its own queue; set a distinct `spec.queue`")
                .related(
                    oe.file.clone(),
                    other_pos,
                    format!("role {other:?} uses it here"),
                ),
            );
        } else {
            owners.insert(queue, (name, e));
        }
    }
}

fn check_host_references(
    hosts: &BTreeMap<String, Entry<Host>>,
    roles: &BTreeMap<String, Entry<Role>>,
    undecoded: &BTreeSet<ObjectId>,
    diags: &mut Vec<Diagnostic>,
) {
    for (name, h) in hosts {
        for r in &h.object.spec.roles.value {
            if !roles.contains_key(&r.value) && !undecoded.contains(&id(Kind::Role, &r.value)) {
                diags.push(unknown_ref(
                    &h.file,
                    r,
                    Kind::Role,
                    roles.keys(),
                    &format!("host {name:?}"),
                ));
            }
        }
    }
    let mut by_address: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, h) in hosts {
        if let Some(other) = by_address.insert(&h.object.spec.address.value, name) {
            diags.push(Diagnostic::warning(
                &h.file,
                h.object.spec.address.pos,
                format!(
                    "hosts {other:?} and {name:?} have the same address {:?}",
                    h.object.spec.address.value
                ),
            ));
        }
    }
}

fn id(kind: Kind, name: &str) -> ObjectId {
    ObjectId {
        kind,
        name: name.to_string(),
    }
}

fn unknown_ref<'a>(
    file: &str,
    r: &Located<String>,
    kind: Kind,
    known: impl Iterator<Item = &'a String> + Clone,
    by: &str,
) -> Diagnostic {
    let d = Diagnostic::error(
        file,
        r.pos,
        format!(
            "{by} references unknown {} {:?}",
            kind.as_str().to_lowercase(),
            r.value
        ),
    );
    match did_you_mean(&r.value, known.clone().map(String::as_str)) {
        Some(s) => d.help(format!("did you mean {s:?}?")),
        None => {
            let names: Vec<&str> = known.map(String::as_str).collect();
            if names.is_empty() {
                d.help(format!(
                    "no {} is defined; add a manifest with `kind: {kind}`",
                    kind.as_str().to_lowercase()
                ))
            } else {
                d.help(format!(
                    "defined {}s: {}",
                    kind.as_str().to_lowercase(),
                    names.join(", ")
                ))
            }
        }
    }
}

/// The role names a host lists.
fn roles_of(host: &Entry<Host>) -> impl Iterator<Item = &str> {
    host.object
        .spec
        .roles
        .value
        .iter()
        .map(|r| r.value.as_str())
}

fn check_schedule_references(
    name: &str,
    s: &Entry<Schedule>,
    index: &HostIndex<'_>,
    hosts: &BTreeMap<String, Entry<Host>>,
    roles: &BTreeMap<String, Entry<Role>>,
    undecoded: &BTreeSet<ObjectId>,
    diags: &mut Vec<Diagnostic>,
) {
    {
        // Only formatted when a diagnostic is reported (this loop runs over every
        // schedule on each revision the daemon compiles).
        let by = || format!("schedule {name:?}");
        let mut target_roles: BTreeSet<&str> = BTreeSet::new();
        let mut selected: Vec<&BTreeMap<String, String>> = Vec::new();
        for t in &s.object.spec.targets.value {
            if let Some(r) = &t.role {
                if roles.contains_key(&r.value) {
                    target_roles.insert(&r.value);
                    let n = index.with_role(&r.value);
                    if n.is_empty() && s.object.spec.mode.value == Mode::Each {
                        diags.push(Diagnostic::warning(
                            &s.file,
                            r.pos,
                            format!(
                                "{}: no host has role {:?}, so this target runs nowhere",
                                by(),
                                r.value
                            ),
                        ));
                    }
                } else if !undecoded.contains(&id(Kind::Role, &r.value)) {
                    diags.push(unknown_ref(&s.file, r, Kind::Role, roles.keys(), &by()));
                }
            }
            if let Some(h) = &t.host {
                if let Some(host) = hosts.get(&h.value) {
                    target_roles.extend(roles_of(host));
                } else if !undecoded.contains(&id(Kind::Host, &h.value)) {
                    diags.push(unknown_ref(&s.file, h, Kind::Host, hosts.keys(), &by()));
                }
            }
            if let Some(sel) = &t.selector {
                if index.select_iter(&sel.match_labels).next().is_none() {
                    diags.push(
                        Diagnostic::warning(
                            &s.file,
                            t.pos,
                            format!("{}: selector {:?} matches no host", by(), sel.match_labels),
                        )
                        .help("check the labels in `metadata.labels` of your hosts"),
                    );
                }
                selected.push(&sel.match_labels);
            }
        }
        // The roles of the hosts selectors reach only matter when no targeted role
        // settles the task check yet; stop at the first that does (a selector reaches
        // a share of the fleet, and the fleet's schedules grow with it: collecting every
        // selected host's roles made this check quadratic in the fleet).
        let task = &s.object.spec.task.value;
        let mut settled =
            task.is_empty() || target_roles.iter().any(|r| settles(task, roles.get(*r)));
        'selected: for labels in &selected {
            if settled {
                break;
            }
            for host in index.select_iter(labels).filter_map(|h| hosts.get(h)) {
                for r in roles_of(host) {
                    if target_roles.insert(r) && settles(task, roles.get(r)) {
                        settled = true;
                        break 'selected;
                    }
                }
            }
        }
        if !settled {
            check_task_provided(s, &target_roles, roles, diags);
        }
    }
}

/// Whether targeting `role` alone keeps [`check_task_provided`] from warning about
/// `task`: the role lists no tasks (anything goes) or provides it.
fn settles(task: &str, role: Option<&Entry<Role>>) -> bool {
    role.is_some_and(|r| r.object.spec.tasks.is_empty() || provides(&r.object, task))
}

/// Whether `role` lists `task` or its module.
fn provides(role: &Role, task: &str) -> bool {
    role.spec.tasks.iter().any(|t| {
        task.strip_prefix(t.value.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    })
}

/// Warns when every targeted role lists its tasks and none of them provides the schedule's task.
fn check_task_provided(
    s: &Entry<Schedule>,
    target_roles: &BTreeSet<&str>,
    roles: &BTreeMap<String, Entry<Role>>,
    diags: &mut Vec<Diagnostic>,
) {
    let task = &s.object.spec.task.value;
    if task.is_empty() {
        // No task is its own error (or a check-in, which has none).
        return;
    }
    let listed: Vec<&Entry<Role>> = target_roles.iter().filter_map(|r| roles.get(*r)).collect();
    if listed.is_empty() || listed.iter().any(|r| r.object.spec.tasks.is_empty()) {
        return;
    }
    if !listed.iter().any(|r| provides(&r.object, task)) {
        diags.push(
            Diagnostic::warning(&s.file, s.object.spec.task.pos, format!("task {task:?} is not provided by any targeted role ({})", target_roles.iter().copied().collect::<Vec<_>>().join(", ")))
                .help("add the task or its module to a role's `spec.tasks`, or target a role that provides it"),
        );
    }
}
