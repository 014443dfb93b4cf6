//! The object-level edits behind `hosts|roles|schedules add/update/rm`: each takes the
//! work tree and the requested fields and returns the file changes, without writing.
//!
//! Names are checked strictly before they become file paths; every other value is
//! checked by validating the whole repository with the change applied
//! ([`Workspace::check`]), so the rules live in one place (`validate`).

use serde_json::{json, Map, Value as Json};

use super::{Change, Doc, EditError, InUse, Workspace};
use crate::desired::Target;
use crate::manifest::{Kind, API_VERSION};
use crate::validate::rules;

/// Fields of `hosts add` / `hosts update`. `None` and empty lists leave a field alone.
#[derive(Debug, Clone, Default)]
pub struct HostFields {
    pub address: Option<String>,
    /// Replaces the host's roles.
    pub roles: Option<Vec<String>>,
    pub add_roles: Vec<String>,
    pub remove_roles: Vec<String>,
    /// Labels to set (`key`, `value`).
    pub labels: Vec<(String, String)>,
    pub remove_labels: Vec<String>,
    pub ssh_user: Option<String>,
    pub ssh_port: Option<u16>,
    pub ssh_key: Option<String>,
    /// `--set PATH=VALUE` assignments, applied last.
    pub set: Vec<(Vec<String>, Json)>,
}

impl HostFields {
    fn is_empty(&self) -> bool {
        self.address.is_none()
            && self.roles.is_none()
            && self.add_roles.is_empty()
            && self.remove_roles.is_empty()
            && self.labels.is_empty()
            && self.remove_labels.is_empty()
            && self.ssh_user.is_none()
            && self.ssh_port.is_none()
            && self.ssh_key.is_none()
            && self.set.is_empty()
    }
}

/// Fields of `roles add` / `roles update`.
#[derive(Debug, Clone, Default)]
pub struct RoleFields {
    pub description: Option<String>,
    pub queue: Option<String>,
    pub concurrency: Option<u32>,
    pub max_tasks_per_child: Option<u32>,
    /// Replaces the role's tasks.
    pub tasks: Option<Vec<String>>,
    pub add_tasks: Vec<String>,
    pub remove_tasks: Vec<String>,
    /// `--set PATH=VALUE` assignments, applied last.
    pub set: Vec<(Vec<String>, Json)>,
}

impl RoleFields {
    fn is_empty(&self) -> bool {
        self.description.is_none()
            && self.queue.is_none()
            && self.concurrency.is_none()
            && self.max_tasks_per_child.is_none()
            && self.tasks.is_none()
            && self.add_tasks.is_empty()
            && self.remove_tasks.is_empty()
            && self.set.is_empty()
    }
}

/// Fields of `schedules add`.
#[derive(Debug, Clone, Default)]
pub struct ScheduleFields {
    pub description: Option<String>,
    pub cron: Option<String>,
    pub every: Option<String>,
    pub timezone: Option<String>,
    pub task: String,
    /// Where the task goes; written in the manifest form (`{role: x}`, `{host: x}`,
    /// `{selector: {matchLabels: …}}`).
    pub targets: Vec<Target>,
    pub mode: Option<String>,
    pub args: Option<Json>,
    pub kwargs: Option<Json>,
    pub enabled: Option<bool>,
    /// `options.expires`.
    pub expires: Option<String>,
    /// `options.priority`.
    pub priority: Option<u8>,
    /// `--set PATH=VALUE` assignments, applied last.
    pub set: Vec<(Vec<String>, Json)>,
}

/// Parses a `--set` value as YAML (`22` is a number, `[a, b]` a list, `"22"` a string).
pub fn yaml_value(text: &str) -> Json {
    match crate::manifest::yaml::parse_documents(text).as_slice() {
        [Ok(doc)] => super::text::node_to_json(&doc.root),
        _ => Json::String(text.to_string()),
    }
}

/// Parses `--set PATH=VALUE` (PATH dotted, relative to `spec` unless it starts with
/// `metadata.`).
pub fn parse_set(text: &str) -> Result<(Vec<String>, Json), String> {
    let Some((path, value)) = text.split_once('=') else {
        return Err(format!(
            "--set {text:?}: expected PATH=VALUE (e.g. ssh.port=2222)"
        ));
    };
    let mut keys: Vec<String> = path.split('.').map(str::to_string).collect();
    if keys.iter().any(String::is_empty) {
        return Err(format!("--set {text:?}: the path has an empty segment"));
    }
    if keys.first().map(String::as_str) != Some("metadata") {
        keys.insert(0, "spec".into());
    }
    if keys.len() == 2 && keys[0] == "metadata" && keys[1] == "name" {
        return Err(
            "--set cannot rename an object; remove it and add it under the new name".into(),
        );
    }
    Ok((keys, yaml_value(value)))
}

/// Sets `path` in `doc` to `value`, creating mappings on the way (`Json::Null` removes).
pub fn set_path(doc: &mut Json, path: &[String], value: Json) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = doc;
    for key in parents {
        if !at.is_object() {
            *at = Json::Object(serde_json::Map::new());
        }
        let Json::Object(map) = at else { return };
        at = map
            .entry(key.clone())
            .or_insert_with(|| Json::Object(serde_json::Map::new()));
    }
    if !at.is_object() {
        *at = Json::Object(serde_json::Map::new());
    }
    if let Json::Object(map) = at {
        if value.is_null() {
            map.remove(last);
        } else {
            map.insert(last.clone(), value);
        }
    }
}

/// Checks a name given on the command line before it becomes part of a file path.
///
/// # Errors
/// [`EditError::Refused`] naming the rule.
pub fn check_name(kind: Kind, name: &str) -> Result<(), EditError> {
    rules::rfc1123_label(name).map_err(|e| {
        EditError::Refused(format!(
            "{name:?} is not a valid {} name: {e}",
            kind.as_str().to_ascii_lowercase()
        ))
    })
}

/// Parses `KEY=VALUE`.
///
/// # Errors
/// A message saying what was expected.
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("label {text:?}: expected KEY=VALUE")),
    }
}

fn object(kind: Kind, name: &str) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert("apiVersion".into(), json!(API_VERSION));
    m.insert("kind".into(), json!(kind.as_str()));
    m.insert("metadata".into(), json!({ "name": name }));
    m
}

/// Runs `f` on the mapping at `key` of `parent`, created (empty) when missing or not a
/// mapping.
fn with_child(parent: &mut Json, key: &str, f: impl FnOnce(&mut Map<String, Json>)) {
    if !parent.is_object() {
        *parent = json!({});
    }
    if let Json::Object(map) = parent {
        let entry = map.entry(key.to_string()).or_insert_with(|| json!({}));
        if !entry.is_object() {
            *entry = json!({});
        }
        if let Json::Object(m) = entry {
            f(m);
        }
    }
}

fn strings(v: Option<&Json>) -> Vec<String> {
    v.and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Applies `edit` to a list of strings: replace, then add (once), then remove.
fn edit_list(
    current: Vec<String>,
    replace: &Option<Vec<String>>,
    add: &[String],
    remove: &[String],
) -> Vec<String> {
    let mut list = replace.clone().unwrap_or(current);
    for a in add {
        if !list.contains(a) {
            list.push(a.clone());
        }
    }
    list.retain(|x| !remove.contains(x));
    list
}

fn apply_host(value: &mut Json, f: &HostFields) {
    if !f.labels.is_empty() || !f.remove_labels.is_empty() {
        with_child(value, "metadata", |meta| {
            let mut labels = meta
                .get("labels")
                .and_then(Json::as_object)
                .cloned()
                .unwrap_or_default();
            for (k, v) in &f.labels {
                labels.insert(k.clone(), json!(v));
            }
            for k in &f.remove_labels {
                labels.remove(k);
            }
            if labels.is_empty() {
                meta.remove("labels");
            } else {
                meta.insert("labels".into(), Json::Object(labels));
            }
        });
    }
    with_child(value, "spec", |spec| {
        if let Some(a) = &f.address {
            spec.insert("address".into(), json!(a));
        }
        if f.roles.is_some() || !f.add_roles.is_empty() || !f.remove_roles.is_empty() {
            let roles = edit_list(
                strings(spec.get("roles")),
                &f.roles,
                &f.add_roles,
                &f.remove_roles,
            );
            spec.insert("roles".into(), json!(roles));
        }
        if f.ssh_user.is_some() || f.ssh_port.is_some() || f.ssh_key.is_some() {
            let ssh = spec.entry("ssh").or_insert_with(|| json!({}));
            if !ssh.is_object() {
                *ssh = json!({});
            }
            if let Json::Object(ssh) = ssh {
                if let Some(u) = &f.ssh_user {
                    ssh.insert("user".into(), json!(u));
                }
                if let Some(p) = f.ssh_port {
                    ssh.insert("port".into(), json!(p));
                }
                if let Some(k) = &f.ssh_key {
                    ssh.insert("identityFile".into(), json!(k));
                }
            }
        }
    });
    apply_set(value, &f.set);
}

/// Applies `--set` assignments in order.
pub fn apply_set(value: &mut Json, set: &[(Vec<String>, Json)]) {
    for (path, v) in set {
        set_path(value, path, v.clone());
    }
}

/// `hosts add`: a new `Host` in `<dir>/hosts/<name>.yaml`.
///
/// # Errors
/// An invalid name, an existing host, a missing address or role.
pub fn add_host(ws: &Workspace, name: &str, f: &HostFields) -> Result<Change, EditError> {
    check_name(Kind::Host, name)?;
    let mut value = Json::Object(object(Kind::Host, name));
    value["spec"] = json!({});
    apply_host(&mut value, f);
    if value.pointer("/spec/address").is_none() {
        return Err(EditError::Refused("a new host needs --address".into()));
    }
    if strings(value.pointer("/spec/roles")).is_empty() {
        return Err(EditError::Refused(
            "a new host needs at least one --role".into(),
        ));
    }
    ws.create(Kind::Host, name, &value)
}

/// `hosts update`: changes the given fields of an existing host in place.
///
/// # Errors
/// An unknown host, no field given, an uneditable layout.
pub fn update_host(ws: &Workspace, name: &str, f: &HostFields) -> Result<Change, EditError> {
    if f.is_empty() {
        return Err(EditError::Refused(
            "nothing to change: give at least one option (see --help)".into(),
        ));
    }
    let doc = ws.find(Kind::Host, name)?;
    let mut value = doc.value.clone();
    apply_host(&mut value, f);
    ws.update(&doc, &value)
}

fn apply_role(value: &mut Json, f: &RoleFields) {
    with_child(value, "spec", |spec| {
        if let Some(d) = &f.description {
            spec.insert("description".into(), json!(d));
        }
        if let Some(q) = &f.queue {
            spec.insert("queue".into(), json!(q));
        }
        if let Some(c) = f.concurrency {
            spec.insert("concurrency".into(), json!(c));
        }
        if let Some(m) = f.max_tasks_per_child {
            spec.insert("maxTasksPerChild".into(), json!(m));
        }
        if f.tasks.is_some() || !f.add_tasks.is_empty() || !f.remove_tasks.is_empty() {
            let tasks = edit_list(
                strings(spec.get("tasks")),
                &f.tasks,
                &f.add_tasks,
                &f.remove_tasks,
            );
            if tasks.is_empty() {
                spec.remove("tasks");
            } else {
                spec.insert("tasks".into(), json!(tasks));
            }
        }
    });
    apply_set(value, &f.set);
}

/// What `config init` writes into a new `Cluster`.
#[derive(Debug, Clone, Default)]
pub struct ClusterFields {
    pub description: Option<String>,
    pub timezone: Option<String>,
    pub labels: Vec<(String, String)>,
}

/// `config init`: the repository's `Cluster`, in `<dir>/cluster.yaml`. A repository has
/// one cluster.
///
/// # Errors
/// An invalid name, or a cluster that exists already (under any name).
pub fn init_cluster(ws: &Workspace, name: &str, f: &ClusterFields) -> Result<Change, EditError> {
    if let Some(c) = ws.docs().into_iter().find(|d| d.kind == Kind::Cluster) {
        return Err(EditError::Exists {
            kind: Kind::Cluster,
            name: c.name,
            file: c.file,
            line: c.line,
        });
    }
    check_name(Kind::Cluster, name)?;
    let mut value = Json::Object(object(Kind::Cluster, name));
    if !f.labels.is_empty() {
        let labels: Map<String, Json> = f
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        value["metadata"]["labels"] = Json::Object(labels);
    }
    let mut spec = Map::new();
    if let Some(d) = &f.description {
        spec.insert("description".into(), json!(d));
    }
    if let Some(t) = &f.timezone {
        spec.insert("timezone".into(), json!(t));
    }
    value["spec"] = Json::Object(spec);
    ws.create(Kind::Cluster, name, &value)
}

/// `config set` / `config unset`: sets (`Json::Null`: removes) the value at `path` of the
/// repository's `Cluster`, in place.
///
/// # Errors
/// No `Cluster` manifest; an uneditable layout.
pub fn set_cluster(ws: &Workspace, path: &[String], value: Json) -> Result<Change, EditError> {
    let Some(doc) = ws.docs().into_iter().find(|d| d.kind == Kind::Cluster) else {
        return Err(EditError::NoCluster);
    };
    let mut new = doc.value.clone();
    set_path(&mut new, path, value);
    ws.update(&doc, &new)
}

/// The file `target` names: a manifest file (relative to the repository or to the
/// manifests directory), `KIND/NAME`, or `cluster`; `None` is the cluster's file.
///
/// # Errors
/// No such file or object; no `Cluster` manifest.
pub fn file_of(ws: &Workspace, target: Option<&str>) -> Result<String, EditError> {
    let docs = ws.docs();
    let Some(target) = target else {
        return docs
            .iter()
            .find(|d| d.kind == Kind::Cluster)
            .map(|d| d.file.clone())
            .ok_or(EditError::NoCluster);
    };
    if ws.files.contains_key(target) {
        return Ok(target.to_string());
    }
    let joined = if ws.dir.is_empty() {
        target.to_string()
    } else {
        format!("{}/{target}", ws.dir)
    };
    if ws.files.contains_key(&joined) {
        return Ok(joined);
    }
    let (kind, name) = match target.split_once('/') {
        Some((k, n)) => (Kind::parse_loose(k), Some(n)),
        None => (Kind::parse_loose(target), None),
    };
    match (kind, name) {
        (Some(Kind::Cluster), _) => file_of(ws, None),
        (Some(kind), Some(name)) => ws.find(kind, name).map(|d| d.file),
        _ => Err(EditError::Refused(format!(
            "{target:?} is neither a manifest file nor KIND/NAME (host/web01, role/webserver, schedule/db-backup, cluster)"
        ))),
    }
}

/// `roles add`: a new `Role` in `<dir>/roles/<name>.yaml`.
///
/// # Errors
/// An invalid name or an existing role.
pub fn add_role(ws: &Workspace, name: &str, f: &RoleFields) -> Result<Change, EditError> {
    check_name(Kind::Role, name)?;
    let mut value = Json::Object(object(Kind::Role, name));
    value["spec"] = json!({});
    apply_role(&mut value, f);
    ws.create(Kind::Role, name, &value)
}

/// `roles update`: changes the given fields of an existing role in place.
///
/// # Errors
/// An unknown role, no field given, an uneditable layout.
pub fn update_role(ws: &Workspace, name: &str, f: &RoleFields) -> Result<Change, EditError> {
    if f.is_empty() {
        return Err(EditError::Refused(
            "nothing to change: give at least one option (see --help)".into(),
        ));
    }
    let doc = ws.find(Kind::Role, name)?;
    let mut value = doc.value.clone();
    apply_role(&mut value, f);
    ws.update(&doc, &value)
}

/// `schedules add`: a new `Schedule` in `<dir>/schedules/<name>.yaml`.
///
/// # Errors
/// An invalid name, an existing schedule, `args`/`kwargs` of the wrong JSON type.
pub fn add_schedule(ws: &Workspace, name: &str, f: &ScheduleFields) -> Result<Change, EditError> {
    check_name(Kind::Schedule, name)?;
    let mut spec = Map::new();
    if let Some(d) = &f.description {
        spec.insert("description".into(), json!(d));
    }
    if let Some(c) = &f.cron {
        spec.insert("cron".into(), json!(c));
    }
    if let Some(e) = &f.every {
        spec.insert("every".into(), json!(e));
    }
    if let Some(t) = &f.timezone {
        spec.insert("timezone".into(), json!(t));
    }
    spec.insert("task".into(), json!(f.task));
    match &f.args {
        Some(Json::Array(a)) if !a.is_empty() => {
            spec.insert("args".into(), Json::Array(a.clone()));
        }
        Some(Json::Array(_)) | None => {}
        Some(other) => {
            return Err(EditError::Refused(format!(
                "--args must be a JSON list (e.g. '[1, \"x\"]'), found {other}"
            )))
        }
    }
    match &f.kwargs {
        Some(Json::Object(m)) if !m.is_empty() => {
            spec.insert("kwargs".into(), Json::Object(m.clone()));
        }
        Some(Json::Object(_)) | None => {}
        Some(other) => {
            return Err(EditError::Refused(format!(
                "--kwargs must be a JSON object (e.g. '{{\"days\": 7}}'), found {other}"
            )))
        }
    }
    spec.insert(
        "targets".into(),
        Json::Array(f.targets.iter().map(Target::to_manifest).collect()),
    );
    if let Some(m) = &f.mode {
        spec.insert("mode".into(), json!(m));
    }
    if let Some(e) = f.enabled {
        spec.insert("enabled".into(), json!(e));
    }
    let mut options = Map::new();
    if let Some(e) = &f.expires {
        options.insert("expires".into(), json!(e));
    }
    if let Some(p) = f.priority {
        options.insert("priority".into(), json!(p));
    }
    if !options.is_empty() {
        spec.insert("options".into(), Json::Object(options));
    }
    let mut value = object(Kind::Schedule, name);
    value.insert("spec".into(), Json::Object(spec));
    let mut value = Json::Object(value);
    apply_set(&mut value, &f.set);
    ws.create(Kind::Schedule, name, &value)
}

/// `schedules enable|disable`: sets `enabled` (enabling removes an `enabled: false`,
/// since `true` is the default). Returns `None` when the schedule is already so.
///
/// # Errors
/// An unknown schedule, an uneditable layout.
pub fn set_schedule_enabled(
    ws: &Workspace,
    name: &str,
    enabled: bool,
) -> Result<Option<Change>, EditError> {
    let doc = ws.find(Kind::Schedule, name)?;
    let now = doc
        .value
        .pointer("/spec/enabled")
        .and_then(Json::as_bool)
        .unwrap_or(true);
    if now == enabled {
        return Ok(None);
    }
    let mut value = doc.value.clone();
    with_child(&mut value, "spec", |spec| {
        if enabled {
            spec.remove("enabled");
        } else {
            spec.insert("enabled".into(), json!(false));
        }
    });
    ws.update(&doc, &value).map(Some)
}

/// Schedules whose targets name `kind/name` directly (`role:` or `host:` targets).
pub fn schedules_targeting(docs: &[Doc], kind: Kind, name: &str) -> Vec<String> {
    let field = match kind {
        Kind::Role => "role",
        Kind::Host => "host",
        _ => return Vec::new(),
    };
    docs.iter()
        .filter(|d| d.kind == Kind::Schedule)
        .filter(|d| {
            d.value
                .pointer("/spec/targets")
                .and_then(Json::as_array)
                .is_some_and(|ts| {
                    ts.iter()
                        .any(|t| t.get(field).and_then(Json::as_str) == Some(name))
                })
        })
        .map(|d| d.name.clone())
        .collect()
}

/// Hosts that have role `name`.
pub fn hosts_with_role(docs: &[Doc], name: &str) -> Vec<String> {
    docs.iter()
        .filter(|d| d.kind == Kind::Host)
        .filter(|d| {
            strings(d.value.pointer("/spec/roles"))
                .iter()
                .any(|r| r == name)
        })
        .map(|d| d.name.clone())
        .collect()
}

/// `hosts|roles|schedules rm`. A role still held by hosts, or a role or host still named
/// by a schedule's targets, is refused with [`EditError::InUse`].
///
/// # Errors
/// An unknown object, or an object still in use.
pub fn remove(ws: &Workspace, kind: Kind, name: &str) -> Result<Change, EditError> {
    let docs = ws.docs();
    let doc = super::find_doc(&docs, kind, name)?;
    if kind == Kind::Role {
        let hosts = hosts_with_role(&docs, name);
        if !hosts.is_empty() {
            return Err(EditError::InUse(InUse::ByHosts {
                role: name.to_string(),
                hosts,
            }));
        }
    }
    let schedules = schedules_targeting(&docs, kind, name);
    if !schedules.is_empty() {
        return Err(EditError::InUse(InUse::ByTargets {
            kind,
            name: name.to_string(),
            schedules,
        }));
    }
    Ok(ws.delete(&doc))
}
