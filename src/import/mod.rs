//! `celeroot import`: converting the older single-file config (`cl.yaml`) into manifests.
//!
//! Owns: reading `cl.yaml` with the project's located YAML reader, mapping each of its
//! sections onto Cluster, Role, Host and Schedule values, normalising its names into
//! object names, and reporting, with `file:line:col`, everything it cannot map. The
//! values it returns are checked once more by validating the whole repository
//! ([`crate::edit::Workspace::check`]) before anything is written.
//! Must not know: how files are written or committed (`edit`), or printing (`cli`).
//!
//! Two kinds of reports (docs/import.md):
//! - *not mapped*: settings the old format has and the manifests do not (`redis`,
//!   `monitoring`, `deployment.branch`, ...). Warnings: the import proceeds.
//! - *unknown*: keys the importer does not know, most likely typos. Errors (nothing is
//!   written) unless [`Options::allow_unknown`], which turns them into warnings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{json, Map, Value as Json};

use crate::desired::schedule::{format_duration, parse_duration};
use crate::diagnostic::Diagnostic;
use crate::edit::{Change, EditError, Workspace};
use crate::manifest::yaml::parse_documents;
use crate::manifest::{did_you_mean, Kind, Node, Pos, Value, API_VERSION};
use crate::validate::rules;

/// Why `cl.yaml` could not be imported. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Errors (and the warnings found with them), each located in the input file.
    #[error("{file} cannot be imported: {} error(s)", diagnostics.iter().filter(|d| d.is_error()).count())]
    Invalid {
        file: String,
        diagnostics: Vec<Diagnostic>,
    },
}

/// How to convert.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Skip keys the importer does not know (reported as warnings) instead of refusing.
    pub allow_unknown: bool,
}

/// One manifest object made from the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub kind: Kind,
    /// A valid object name (RFC 1123 label).
    pub name: String,
    /// The whole document: `apiVersion`, `kind`, `metadata`, `spec`, keys in house order.
    pub value: Json,
}

/// The result of a conversion.
#[derive(Debug, Clone)]
pub struct Import {
    /// The cluster name.
    pub cluster: String,
    /// Cluster first, then roles, hosts and schedules, each in input order.
    pub objects: Vec<Object>,
    /// What was not mapped, renamed or skipped, located in the input file.
    pub warnings: Vec<Diagnostic>,
}

impl Import {
    /// Number of objects of `kind`.
    pub fn count(&self, kind: Kind) -> usize {
        self.objects.iter().filter(|o| o.kind == kind).count()
    }
}

/// The workspace an import writes into: the manifests directory `dir` of the work tree
/// at `root`, empty when the directory does not exist yet (it is created on write).
///
/// # Errors
/// A bad `dir`, unreadable files.
pub fn workspace(root: &Path, dir: &str) -> Result<Workspace, EditError> {
    let norm = crate::source::normalize_path(dir)?;
    if root.join(&norm).exists() {
        return Workspace::open(root, &norm);
    }
    Ok(Workspace {
        root: root.to_path_buf(),
        dir: norm,
        files: BTreeMap::new(),
    })
}

/// The file changes that create every imported object in `ws`, one file per object.
///
/// # Errors
/// [`EditError::Exists`] / [`EditError::Refused`] when an object or its file exists.
pub fn changes(ws: &Workspace, import: &Import) -> Result<Vec<Change>, EditError> {
    import
        .objects
        .iter()
        .map(|o| ws.create(o.kind, &o.name, &o.value))
        .collect()
}

/// Converts the text of a single-file config. `file` names it in diagnostics.
///
/// # Errors
/// [`ImportError::Invalid`] with every located error; nothing is returned to write.
pub fn convert(file: &str, text: &str, opts: Options) -> Result<Import, ImportError> {
    let mut r = Reader {
        file: file.to_string(),
        opts,
        diags: Vec::new(),
        secret_lines: BTreeSet::new(),
    };
    let root = match read_root(file, text) {
        Ok(root) => root,
        Err(d) => {
            return Err(ImportError::Invalid {
                file: file.to_string(),
                diagnostics: vec![*d],
            })
        }
    };
    let result = r.convert(&root);
    let mut diags = std::mem::take(&mut r.diags);
    let lines: Vec<&str> = text.lines().collect();
    for d in &mut diags {
        let idx = d.line as usize;
        if idx > 0 && !r.secret_lines.contains(&d.line) {
            d.source_line = lines.get(idx - 1).map(|l| (*l).to_string());
        }
    }
    match result {
        Some((cluster, objects)) if !diags.iter().any(Diagnostic::is_error) => Ok(Import {
            cluster,
            objects,
            warnings: diags,
        }),
        _ => Err(ImportError::Invalid {
            file: file.to_string(),
            diagnostics: diags,
        }),
    }
}

fn read_root(file: &str, text: &str) -> Result<Node, Box<Diagnostic>> {
    let top = Pos { line: 1, column: 1 };
    let mut docs = parse_documents(text).into_iter();
    let first = match docs.next() {
        None => {
            return Err(Box::new(
                Diagnostic::error(file, top, "the file holds no YAML document")
                    .help("expected a mapping with `cluster`, `workers`, `hosts`, ..."),
            ))
        }
        Some(Err(e)) => {
            return Err(Box::new(Diagnostic::error(
                file,
                e.pos.unwrap_or(top),
                format!("invalid YAML: {}", e.message),
            )))
        }
        Some(Ok(doc)) => doc,
    };
    if let Some(next) = docs.next() {
        let line = match &next {
            Ok(d) => d.start_line,
            Err(e) => e.pos.map_or(1, |p| p.line),
        };
        return Err(Box::new(
            Diagnostic::error(
                file,
                Pos { line, column: 1 },
                "the single-file config holds more than one YAML document",
            )
            .help("the old format is one mapping in one document; split or merge it"),
        ));
    }
    if !matches!(first.root.value, Value::Map(_)) {
        return Err(Box::new(
            Diagnostic::error(
                file,
                first.root.pos,
                format!(
                    "expected a mapping of sections, found {}",
                    first.root.value.describe()
                ),
            )
            .help("expected top-level keys such as `cluster`, `workers`, `hosts`, `schedules`"),
        ));
    }
    Ok(first.root)
}

const TOP_KEYS: &[&str] = &[
    "cluster",
    "redis",
    "ssh",
    "deployment",
    "workers",
    "hosts",
    "schedules",
    "monitoring",
];
const CLUSTER_KEYS: &[&str] = &["name", "description", "timezone"];
const SSH_KEYS: &[&str] = &[
    "user",
    "port",
    "key",
    "identity_file",
    "connect_timeout",
    "timeout",
];
const DEPLOYMENT_KEYS: &[&str] = &[
    "target_dir",
    "service",
    "service_name",
    "restart_command",
    "health_check",
    "setup_command",
    "keep_releases",
    "paths",
    "max_parallel",
    "canary",
    "failure_budget",
];
const HEALTH_KEYS: &[&str] = &["command", "timeout"];
const WORKER_KEYS: &[&str] = &[
    "description",
    "queue",
    "concurrency",
    "max_tasks_per_child",
    "tasks",
];
const HOST_KEYS: &[&str] = &["address", "role", "roles", "ssh", "tags"];
const SCHEDULE_KEYS: &[&str] = &[
    "description",
    "cron",
    "interval",
    "timezone",
    "task",
    "params",
    "targets",
    "enabled",
    "options",
];
const TARGET_KEYS: &[&str] = &["role", "roles", "host", "hosts", "tags"];
const OPTION_KEYS: &[&str] = &["expires", "priority"];

/// Keys of the old format that have no manifest equivalent, with what to do instead.
fn not_mapped_reason(section: &str, key: &str) -> Option<&'static str> {
    Some(match (section, key) {
        ("deployment", "branch") => {
            "celeroot deploys the git revision it is given; `celeroot watch --branch` picks the branch"
        }
        ("deployment", "repo" | "repository") => {
            "the manifests' own git repository is the source (`--repo`, or the URL given to `celeroot watch`)"
        }
        ("ssh", "password") => {
            "celeroot connects with keys only (ssh agent or `identityFile`); the password was not copied"
        }
        ("options", "queue" | "routing_key" | "exchange") => {
            "celeroot routes each message by the schedule's targets (role queues or host queues)"
        }
        _ => return None,
    })
}

type Objects = (String, Vec<Object>);

struct Reader {
    file: String,
    opts: Options,
    diags: Vec<Diagnostic>,
    /// Lines whose text must never be echoed (passwords).
    secret_lines: BTreeSet<u32>,
}

/// An entry of a mapping: its key text and position, and its value.
struct Entry<'a> {
    key: String,
    pos: Pos,
    value: &'a Node,
}

/// Names from the input (`billing_sync`) and the object names they became (`billing-sync`).
#[derive(Default)]
struct Names {
    /// Normalised name → position of its definition.
    defined: BTreeMap<String, Pos>,
}

impl Reader {
    fn error(&mut self, pos: Pos, message: impl Into<String>) -> &mut Diagnostic {
        self.diags.push(Diagnostic::error(&self.file, pos, message));
        let last = self.diags.len() - 1;
        &mut self.diags[last]
    }

    fn warn(&mut self, pos: Pos, message: impl Into<String>) -> &mut Diagnostic {
        self.diags
            .push(Diagnostic::warning(&self.file, pos, message));
        let last = self.diags.len() - 1;
        &mut self.diags[last]
    }

    fn mark_secret(&mut self, node: &Node) {
        self.secret_lines.insert(node.pos.line);
        match &node.value {
            Value::Seq(items) => items.iter().for_each(|n| self.mark_secret(n)),
            Value::Map(entries) => entries.iter().for_each(|(k, v)| {
                self.mark_secret(k);
                self.mark_secret(v);
            }),
            _ => {}
        }
    }

    /// The entries of a mapping, or an error when `node` is not one with string keys.
    fn entries<'a>(&mut self, node: &'a Node, path: &str) -> Option<Vec<Entry<'a>>> {
        let Value::Map(map) = &node.value else {
            self.error(
                node.pos,
                format!(
                    "`{path}`: expected a mapping, found {}",
                    node.value.describe()
                ),
            );
            return None;
        };
        let mut out = Vec::with_capacity(map.len());
        for (k, v) in map {
            let key = match &k.value {
                Value::Str(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                Value::UInt(u) => u.to_string(),
                other => {
                    self.error(
                        k.pos,
                        format!("`{path}`: keys must be strings, found {}", other.describe()),
                    );
                    continue;
                }
            };
            out.push(Entry {
                key,
                pos: k.pos,
                value: v,
            });
        }
        Some(out)
    }

    /// Reports a key of `section` (at `path`) that is not one of `known`.
    fn other_key(&mut self, section: &str, path: &str, e: &Entry<'_>, known: &[&str]) {
        let full = if path.is_empty() {
            e.key.clone()
        } else {
            format!("{path}.{}", e.key)
        };
        if let Some(reason) = not_mapped_reason(section, &e.key) {
            if section == "ssh" {
                self.mark_secret(e.value);
            }
            self.warn(e.pos, format!("`{full}` is not mapped to the manifests"))
                .help = Some(reason.to_string());
            return;
        }
        let help = match did_you_mean(&e.key, known.iter().copied()) {
            Some(s) => format!(
                "did you mean `{s}`? (expected one of: {})",
                known.join(", ")
            ),
            None => format!("expected one of: {}", known.join(", ")),
        };
        if self.opts.allow_unknown {
            self.warn(
                e.pos,
                format!("unknown key `{full}` skipped (--allow-unknown)"),
            )
            .help = Some(help);
        } else {
            let d = self.error(e.pos, format!("unknown key `{full}`"));
            d.help = Some(format!(
                "{help}; or pass --allow-unknown to skip unknown keys"
            ));
        }
    }

    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) if !s.is_empty() => Some(s.clone()),
            other => {
                self.error(
                    node.pos,
                    format!(
                        "`{path}`: expected a non-empty string, found {}",
                        other.describe()
                    ),
                );
                None
            }
        }
    }

    fn uint(&mut self, node: &Node, path: &str, min: u64, max: u64) -> Option<u64> {
        let v = match node.value {
            Value::Int(i) => u64::try_from(i).ok(),
            Value::UInt(u) => Some(u),
            _ => None,
        };
        match v {
            Some(v) if (min..=max).contains(&v) => Some(v),
            _ => {
                self.error(
                    node.pos,
                    format!(
                        "`{path}`: expected an integer from {min} to {max}, found {}",
                        node.value.describe()
                    ),
                );
                None
            }
        }
    }

    /// A duration: integer seconds (the old format's unit) or a duration string.
    fn duration(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Int(i) if *i > 0 => Some(format_duration(i.unsigned_abs())),
            Value::Str(s) if parse_duration(s).is_ok_and(|d| d > 0) => Some(s.trim().to_string()),
            other => {
                self.error(
                    node.pos,
                    format!(
                        "`{path}`: expected a positive number of seconds or a duration such as `5m`, found {}",
                        other.describe()
                    ),
                );
                None
            }
        }
    }

    /// A list of strings, or one string as a list of one.
    fn strings(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        match &node.value {
            Value::Str(s) => Some(vec![s.clone()]),
            Value::Seq(items) => {
                let mut out = Vec::new();
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match self.string(item, &format!("{path}[{i}]")) {
                        Some(s) => out.push(s),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
            other => {
                self.error(
                    node.pos,
                    format!(
                        "`{path}`: expected a list of strings, found {}",
                        other.describe()
                    ),
                );
                None
            }
        }
    }

    /// A command as an argv list: a list as written, or a plain command line split at
    /// spaces. Command lines that need a shell (quotes, `|`, `;`, `$`, ...) are refused.
    fn argv(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        match &node.value {
            Value::Str(s) => {
                const SHELL: &[char] = &[
                    '"', '\'', '\\', '|', '&', ';', '<', '>', '$', '`', '(', ')', '*', '?', '{',
                    '}', '[', ']', '#',
                ];
                if s.contains(SHELL) {
                    let d = self.error(
                        node.pos,
                        format!("`{path}`: {s:?} needs a shell; manifests run commands as argv lists without one"),
                    );
                    d.help = Some(
                        "write it as a list in the input (`[sh, -c, \"...\"]` if a shell is really needed)".into(),
                    );
                    return None;
                }
                let words: Vec<String> = s.split_whitespace().map(str::to_string).collect();
                if words.is_empty() {
                    self.error(node.pos, format!("`{path}`: the command is empty"));
                    return None;
                }
                Some(words)
            }
            Value::Seq(_) => self.strings(node, path),
            other => {
                self.error(
                    node.pos,
                    format!(
                        "`{path}`: expected a command (a string or a list), found {}",
                        other.describe()
                    ),
                );
                None
            }
        }
    }

    /// Turns a name from the input into an object name: lower case, `_`, `.` and spaces
    /// become `-`. Renames are reported; names that still are not RFC 1123 labels are errors.
    fn object_name(&mut self, raw: &str, pos: Pos, what: &str, path: &str) -> Option<String> {
        let name = normalise(raw);
        if let Err(expected) = rules::rfc1123_label(&name) {
            let d = self.error(
                pos,
                format!("`{path}`: {what} name {raw:?} cannot be made an object name"),
            );
            d.help = Some(expected);
            return None;
        }
        if name != raw {
            self.warn(pos, format!("{what} {raw:?} is imported as {name:?}"))
                .help =
                Some("object names are RFC 1123 labels; references to it are renamed too".into());
        }
        Some(name)
    }

    /// Records a defined name, reporting two inputs that normalise to the same name.
    fn define(&mut self, names: &mut Names, name: &str, pos: Pos, what: &str) -> bool {
        if let Some(first) = names.defined.get(name).copied() {
            let file = self.file.clone();
            let d = self.error(pos, format!("two {what}s become {name:?}"));
            d.related.push(crate::diagnostic::Related {
                file,
                line: first.line,
                column: first.column,
                note: "the first one is here".into(),
            });
            return false;
        }
        names.defined.insert(name.to_string(), pos);
        true
    }

    /// A reference to a defined name (a host's role, a schedule's target).
    fn reference(&mut self, node: &Node, names: &Names, what: &str, path: &str) -> Option<String> {
        let raw = self.string(node, path)?;
        let name = normalise(&raw);
        if names.defined.contains_key(&name) {
            return Some(name);
        }
        let d = self.error(node.pos, format!("`{path}`: no {what} named {raw:?}"));
        d.help = Some(
            match did_you_mean(&name, names.defined.keys().map(String::as_str)) {
                Some(s) => format!("did you mean `{s}`?"),
                None if names.defined.is_empty() => format!("no {what}s are defined"),
                None => format!(
                    "defined: {}",
                    names.defined.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            },
        );
        None
    }

    fn convert(&mut self, root: &Node) -> Option<Objects> {
        let entries = self.entries(root, "(top level)")?;
        let find = |k: &str| entries.iter().find(|e| e.key == k);
        let mut cluster_value = None;
        let mut cluster_spec = Map::new();
        let mut workers = None;
        let mut hosts = None;
        let mut schedules = None;
        // The cluster section first: its keys come first in the Cluster spec.
        match find("cluster") {
            Some(e) => cluster_value = self.cluster(e.value, &mut cluster_spec),
            None => {
                let d = self.error(root.pos, "missing `cluster`");
                d.help =
                    Some("add `cluster: {name: production}`: its name names the Cluster".into());
            }
        }
        for e in &entries {
            match e.key.as_str() {
                "cluster" => {}
                "redis" => self.redis(e),
                "monitoring" => {
                    self.warn(e.pos, "`monitoring` is not mapped to the manifests").help = Some(
                        "the manifests have no monitoring settings; `celeroot watch` serves Prometheus metrics on /metrics and `celeroot status` reports heartbeats. Move these settings to your monitoring system".into(),
                    );
                }
                "ssh" => {
                    if let Some(ssh) = self.ssh(e.value, "ssh") {
                        cluster_spec.insert("ssh".into(), ssh);
                    }
                }
                "deployment" => {
                    if let Some(dep) = self.deployment(e.value) {
                        cluster_spec.insert("deployment".into(), dep);
                    }
                }
                "workers" => workers = Some(e.value),
                "hosts" => hosts = Some(e.value),
                "schedules" => schedules = Some(e.value),
                _ => self.other_key("", "", e, TOP_KEYS),
            }
        }
        // Keep the house order of the Cluster spec: description, timezone, ssh, deployment.
        let mut spec = Map::new();
        for k in ["description", "timezone", "ssh", "deployment"] {
            if let Some(v) = cluster_spec.remove(k) {
                spec.insert(k.into(), v);
            }
        }
        let mut objects = Vec::new();
        let mut roles = Names::default();
        let mut host_names = Names::default();
        let mut role_objects = Vec::new();
        if let Some(w) = workers {
            role_objects = self.workers(w, &mut roles);
        }
        let mut host_objects = Vec::new();
        if let Some(h) = hosts {
            host_objects = self.hosts(h, &roles, &mut host_names);
        }
        let mut schedule_objects = Vec::new();
        if let Some(s) = schedules {
            schedule_objects = self.schedules(s, &roles, &host_names);
        }
        let cluster = cluster_value?;
        objects.push(Object {
            kind: Kind::Cluster,
            name: cluster.clone(),
            value: document(Kind::Cluster, &cluster, Map::new(), spec),
        });
        objects.extend(role_objects);
        objects.extend(host_objects);
        objects.extend(schedule_objects);
        Some((cluster, objects))
    }

    fn cluster(&mut self, node: &Node, spec: &mut Map<String, Json>) -> Option<String> {
        // `cluster: production` is accepted as the name alone.
        if let Value::Str(raw) = &node.value {
            return self.object_name(raw, node.pos, "cluster", "cluster");
        }
        let entries = self.entries(node, "cluster")?;
        let mut name = None;
        for e in &entries {
            match e.key.as_str() {
                "name" => {
                    if let Some(raw) = self.string(e.value, "cluster.name") {
                        name = self.object_name(&raw, e.value.pos, "cluster", "cluster.name");
                    }
                }
                "description" => {
                    if let Some(s) = self.string(e.value, "cluster.description") {
                        spec.insert("description".into(), json!(s));
                    }
                }
                "timezone" => {
                    if let Some(s) = self.string(e.value, "cluster.timezone") {
                        spec.insert("timezone".into(), json!(s));
                    }
                }
                _ => self.other_key("cluster", "cluster", e, CLUSTER_KEYS),
            }
        }
        if name.is_none() && !entries.iter().any(|e| e.key == "name") {
            self.error(node.pos, "`cluster`: missing `name`");
        }
        name
    }

    fn redis(&mut self, e: &Entry<'_>) {
        self.mark_secret(e.value);
        let help = match &e.value.value {
            Value::Str(url) => format!(
                "pass it to the commands that need it: --redis {} (or set CELEROOT_REDIS_URL)",
                redact_url(url)
            ),
            _ => "build a URL redis://[user:password@]host:port/db and pass it as --redis (or set CELEROOT_REDIS_URL)".into(),
        };
        self.warn(
            e.pos,
            "`redis` is not written to the manifests (the manifests hold no connection settings or secrets)",
        )
        .help = Some(help);
    }

    fn ssh(&mut self, node: &Node, path: &str) -> Option<Json> {
        let entries = self.entries(node, path)?;
        let mut out = Map::new();
        let set =
            |out: &mut Map<String, Json>, r: &mut Reader, key: &str, e: &Entry<'_>, v: Json| {
                if out.contains_key(key) {
                    r.error(e.pos, format!("`{path}.{}`: {key} is already set", e.key));
                } else {
                    out.insert(key.into(), v);
                }
            };
        for e in &entries {
            let p = format!("{path}.{}", e.key);
            match e.key.as_str() {
                "user" => {
                    if let Some(s) = self.string(e.value, &p) {
                        set(&mut out, self, "user", e, json!(s));
                    }
                }
                "port" => {
                    if let Some(v) = self.uint(e.value, &p, 1, 65_535) {
                        set(&mut out, self, "port", e, json!(v));
                    }
                }
                "key" | "identity_file" => {
                    if let Some(s) = self.string(e.value, &p) {
                        set(&mut out, self, "identityFile", e, json!(s));
                    }
                }
                "connect_timeout" | "timeout" => {
                    if let Some(s) = self.duration(e.value, &p) {
                        set(&mut out, self, "connectTimeout", e, json!(s));
                    }
                }
                _ => self.other_key("ssh", path, e, SSH_KEYS),
            }
        }
        let mut ordered = Map::new();
        for k in ["user", "port", "identityFile", "connectTimeout"] {
            if let Some(v) = out.remove(k) {
                ordered.insert(k.into(), v);
            }
        }
        (!ordered.is_empty()).then_some(Json::Object(ordered))
    }

    fn deployment(&mut self, node: &Node) -> Option<Json> {
        let entries = self.entries(node, "deployment")?;
        let mut out = Map::new();
        let mut strategy = Map::new();
        for e in &entries {
            let p = format!("deployment.{}", e.key);
            match e.key.as_str() {
                "target_dir" => {
                    if let Some(s) = self.string(e.value, &p) {
                        out.insert("targetDir".into(), json!(s));
                    }
                }
                "service" | "service_name" => {
                    if let Some(s) = self.string(e.value, &p) {
                        if out.insert("serviceName".into(), json!(s)).is_some() {
                            self.error(e.pos, format!("`{p}`: the service name is already set"));
                        }
                    }
                }
                "restart_command" => {
                    if let Some(v) = self.argv(e.value, &p) {
                        out.insert("restartCommand".into(), json!(v));
                    }
                }
                "health_check" => {
                    if let Some(v) = self.health_check(e.value, &p) {
                        out.insert("healthCheck".into(), v);
                    }
                }
                "setup_command" => {
                    if let Some(v) = self.argv(e.value, &p) {
                        out.insert("setupCommand".into(), json!(v));
                    }
                }
                "keep_releases" => {
                    if let Some(v) = self.uint(e.value, &p, 1, 100) {
                        out.insert("keepReleases".into(), json!(v));
                    }
                }
                "paths" => {
                    if let Some(v) = self.strings(e.value, &p) {
                        out.insert("paths".into(), json!(v));
                    }
                }
                "max_parallel" => {
                    if let Some(v) = self.uint(e.value, &p, 1, 100) {
                        strategy.insert("maxParallel".into(), json!(v));
                    }
                }
                "canary" => {
                    if let Some(v) = self.uint(e.value, &p, 0, u64::from(u32::MAX)) {
                        strategy.insert("canary".into(), json!(v));
                    }
                }
                "failure_budget" => {
                    if let Some(v) = self.uint(e.value, &p, 0, u64::from(u32::MAX)) {
                        strategy.insert("failureBudget".into(), json!(v));
                    }
                }
                _ => self.other_key("deployment", "deployment", e, DEPLOYMENT_KEYS),
            }
        }
        let mut ordered = Map::new();
        for k in [
            "targetDir",
            "serviceName",
            "restartCommand",
            "healthCheck",
            "setupCommand",
            "keepReleases",
            "paths",
        ] {
            if let Some(v) = out.remove(k) {
                ordered.insert(k.into(), v);
            }
        }
        let mut st = Map::new();
        for k in ["maxParallel", "canary", "failureBudget"] {
            if let Some(v) = strategy.remove(k) {
                st.insert(k.into(), v);
            }
        }
        if !st.is_empty() {
            ordered.insert("strategy".into(), Json::Object(st));
        }
        (!ordered.is_empty()).then_some(Json::Object(ordered))
    }

    /// `health_check: <command>` or `{command: <command>, timeout: <seconds>}`.
    fn health_check(&mut self, node: &Node, path: &str) -> Option<Json> {
        if !matches!(node.value, Value::Map(_)) {
            return self.argv(node, path).map(|c| json!({ "command": c }));
        }
        let entries = self.entries(node, path)?;
        let mut out = Map::new();
        for e in &entries {
            let p = format!("{path}.{}", e.key);
            match e.key.as_str() {
                "command" => {
                    if let Some(c) = self.argv(e.value, &p) {
                        out.insert("command".into(), json!(c));
                    }
                }
                "timeout" => {
                    if let Some(t) = self.duration(e.value, &p) {
                        out.insert("timeout".into(), json!(t));
                    }
                }
                _ => self.other_key("health_check", path, e, HEALTH_KEYS),
            }
        }
        let Some(command) = out.remove("command") else {
            self.error(node.pos, format!("`{path}`: missing `command`"));
            return None;
        };
        let mut ordered = Map::new();
        ordered.insert("command".into(), command);
        if let Some(t) = out.remove("timeout") {
            ordered.insert("timeout".into(), t);
        }
        Some(Json::Object(ordered))
    }

    fn workers(&mut self, node: &Node, names: &mut Names) -> Vec<Object> {
        let Some(entries) = self.entries(node, "workers") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in &entries {
            let path = format!("workers.{}", e.key);
            let Some(name) = self.object_name(&e.key, e.pos, "role", &path) else {
                continue;
            };
            if !self.define(names, &name, e.pos, "role") {
                continue;
            }
            let Some(fields) = self.entries(e.value, &path) else {
                continue;
            };
            let mut spec = Map::new();
            for f in &fields {
                let p = format!("{path}.{}", f.key);
                match f.key.as_str() {
                    "description" => {
                        if let Some(s) = self.string(f.value, &p) {
                            spec.insert("description".into(), json!(s));
                        }
                    }
                    "queue" => {
                        if let Some(s) = self.string(f.value, &p) {
                            if let Err(expected) = rules::queue_name(&s) {
                                self.error(f.value.pos, format!("`{p}`: {expected}"));
                            }
                            spec.insert("queue".into(), json!(s));
                        }
                    }
                    "concurrency" => {
                        if let Some(v) = self.uint(f.value, &p, 1, 1024) {
                            spec.insert("concurrency".into(), json!(v));
                        }
                    }
                    "max_tasks_per_child" => {
                        if let Some(v) = self.uint(f.value, &p, 1, u64::from(u32::MAX)) {
                            spec.insert("maxTasksPerChild".into(), json!(v));
                        }
                    }
                    "tasks" => {
                        if let Some(v) = self.strings(f.value, &p) {
                            spec.insert("tasks".into(), json!(v));
                        }
                    }
                    _ => self.other_key("workers", &path, f, WORKER_KEYS),
                }
            }
            let mut ordered = Map::new();
            for k in [
                "description",
                "queue",
                "concurrency",
                "maxTasksPerChild",
                "tasks",
            ] {
                if let Some(v) = spec.remove(k) {
                    ordered.insert(k.into(), v);
                }
            }
            out.push(Object {
                kind: Kind::Role,
                value: document(Kind::Role, &name, Map::new(), ordered),
                name,
            });
        }
        out
    }

    fn hosts(&mut self, node: &Node, roles: &Names, names: &mut Names) -> Vec<Object> {
        let Some(entries) = self.entries(node, "hosts") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in &entries {
            let path = format!("hosts.{}", e.key);
            let Some(name) = self.object_name(&e.key, e.pos, "host", &path) else {
                continue;
            };
            if !self.define(names, &name, e.pos, "host") {
                continue;
            }
            let Some(fields) = self.entries(e.value, &path) else {
                continue;
            };
            let mut address = None;
            let mut host_roles: Option<Vec<String>> = None;
            let mut ssh = None;
            let mut labels = Map::new();
            for f in &fields {
                let p = format!("{path}.{}", f.key);
                match f.key.as_str() {
                    "address" => {
                        if let Some(s) = self.string(f.value, &p) {
                            if let Err(expected) = rules::address(&s) {
                                self.error(f.value.pos, format!("`{p}`: {expected}"));
                            }
                            address = Some(s);
                        }
                    }
                    "role" | "roles" => {
                        if host_roles.is_some() {
                            self.error(
                                f.pos,
                                format!("`{path}`: use either `role` or `roles`, not both"),
                            );
                            continue;
                        }
                        let items: Vec<&Node> = match &f.value.value {
                            Value::Seq(items) => items.iter().collect(),
                            _ => vec![f.value],
                        };
                        let mut list = Vec::new();
                        for (i, item) in items.iter().enumerate() {
                            let ip = if matches!(f.value.value, Value::Seq(_)) {
                                format!("{p}[{i}]")
                            } else {
                                p.clone()
                            };
                            if let Some(r) = self.reference(item, roles, "role", &ip) {
                                if !list.contains(&r) {
                                    list.push(r);
                                }
                            }
                        }
                        if items.is_empty() {
                            self.error(f.pos, format!("`{p}`: at least one role is needed"));
                        }
                        host_roles = Some(list);
                    }
                    "ssh" => ssh = self.ssh(f.value, &p),
                    "tags" => labels = self.tags(f.value, &p),
                    _ => self.other_key("hosts", &path, f, HOST_KEYS),
                }
            }
            if address.is_none() && !fields.iter().any(|f| f.key == "address") {
                self.error(e.pos, format!("`{path}`: missing `address`"));
            }
            if host_roles.is_none() {
                self.error(e.pos, format!("`{path}`: missing `role` or `roles`"))
                    .help = Some("every host runs at least one role (a key of `workers`)".into());
            }
            let mut spec = Map::new();
            spec.insert("address".into(), json!(address.unwrap_or_default()));
            spec.insert("roles".into(), json!(host_roles.unwrap_or_default()));
            if let Some(s) = ssh {
                spec.insert("ssh".into(), s);
            }
            out.push(Object {
                kind: Kind::Host,
                value: document(Kind::Host, &name, labels, spec),
                name,
            });
        }
        out
    }

    /// Host tags → labels. A mapping is copied (scalar values become strings: `true` →
    /// `"true"`); a list of tags `[a, b]` becomes `{a: "true", b: "true"}`.
    fn tags(&mut self, node: &Node, path: &str) -> Map<String, Json> {
        let mut out = Map::new();
        match &node.value {
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(k) = self.string(item, &format!("{path}[{i}]")) {
                        if self.label_key(&k, item.pos, path) {
                            out.insert(k, json!("true"));
                        }
                    }
                }
            }
            Value::Map(_) => {
                for e in self.entries(node, path).unwrap_or_default() {
                    let p = format!("{path}.{}", e.key);
                    let value = match &e.value.value {
                        Value::Str(s) => s.clone(),
                        Value::Bool(b) => b.to_string(),
                        Value::Int(i) => i.to_string(),
                        Value::UInt(u) => u.to_string(),
                        Value::Float(f) => f.to_string(),
                        Value::Null => String::new(),
                        other => {
                            self.error(
                                e.value.pos,
                                format!(
                                    "`{p}`: a tag value must be a scalar, found {}",
                                    other.describe()
                                ),
                            );
                            continue;
                        }
                    };
                    if !self.label_key(&e.key, e.pos, path) {
                        continue;
                    }
                    if let Err(expected) = rules::label_value(&value) {
                        self.error(e.value.pos, format!("`{p}`: {expected}"));
                        continue;
                    }
                    out.insert(e.key.clone(), json!(value));
                }
            }
            other => {
                self.error(
                    node.pos,
                    format!(
                        "`{path}`: expected a list of tags or a mapping, found {}",
                        other.describe()
                    ),
                );
            }
        }
        out
    }

    fn label_key(&mut self, key: &str, pos: Pos, path: &str) -> bool {
        match rules::label_key(key) {
            Ok(()) => true,
            Err(expected) => {
                self.error(pos, format!("`{path}`: tag {key:?} cannot be a label key"))
                    .help = Some(expected);
                false
            }
        }
    }

    fn schedules(&mut self, node: &Node, roles: &Names, hosts: &Names) -> Vec<Object> {
        let Some(entries) = self.entries(node, "schedules") else {
            return Vec::new();
        };
        let mut names = Names::default();
        let mut out = Vec::new();
        for e in &entries {
            let path = format!("schedules.{}", e.key);
            let Some(name) = self.object_name(&e.key, e.pos, "schedule", &path) else {
                continue;
            };
            if !self.define(&mut names, &name, e.pos, "schedule") {
                continue;
            }
            let Some(fields) = self.entries(e.value, &path) else {
                continue;
            };
            let mut spec = Map::new();
            for f in &fields {
                let p = format!("{path}.{}", f.key);
                match f.key.as_str() {
                    "description" => {
                        if let Some(s) = self.string(f.value, &p) {
                            spec.insert("description".into(), json!(s));
                        }
                    }
                    "cron" => {
                        if let Some(s) = self.string(f.value, &p) {
                            spec.insert("cron".into(), json!(s));
                        }
                    }
                    "interval" => {
                        if let Some(s) = self.duration(f.value, &p) {
                            spec.insert("every".into(), json!(s));
                        }
                    }
                    "timezone" => {
                        if let Some(s) = self.string(f.value, &p) {
                            spec.insert("timezone".into(), json!(s));
                        }
                    }
                    "task" => {
                        if let Some(s) = self.string(f.value, &p) {
                            spec.insert("task".into(), json!(s));
                        }
                    }
                    "params" => match &f.value.value {
                        Value::Seq(_) => {
                            spec.insert("args".into(), crate::edit::text::node_to_json(f.value));
                        }
                        Value::Map(_) => {
                            spec.insert("kwargs".into(), crate::edit::text::node_to_json(f.value));
                        }
                        Value::Null => {}
                        other => {
                            self.error(
                                f.value.pos,
                                format!("`{p}`: expected a list (positional arguments) or a mapping (keyword arguments), found {}", other.describe()),
                            );
                        }
                    },
                    "targets" => {
                        if let Some(t) = self.targets(f.value, &p, roles, hosts) {
                            if t.iter().any(|t| t.get("role").is_some()) {
                                self.warn(f.pos, format!("`{p}`: role targets are imported with `mode: each`: every host of the role runs the task"))
                                    .help = Some(format!("if one worker of the role should run it, set `mode: any` in the Schedule {name:?}"));
                            }
                            spec.insert("targets".into(), Json::Array(t));
                        }
                    }
                    "enabled" => match f.value.value {
                        Value::Bool(b) => {
                            spec.insert("enabled".into(), json!(b));
                        }
                        ref other => {
                            self.error(
                                f.value.pos,
                                format!(
                                    "`{p}`: expected true or false, found {}",
                                    other.describe()
                                ),
                            );
                        }
                    },
                    "options" => {
                        if let Some(o) = self.options(f.value, &p) {
                            spec.insert("options".into(), o);
                        }
                    }
                    _ => self.other_key("schedules", &path, f, SCHEDULE_KEYS),
                }
            }
            match (spec.contains_key("cron"), spec.contains_key("every")) {
                (true, true) => {
                    self.error(
                        e.pos,
                        format!("`{path}`: set either `cron` or `interval`, not both"),
                    );
                }
                (false, false)
                    if !fields
                        .iter()
                        .any(|f| f.key == "cron" || f.key == "interval") =>
                {
                    self.error(e.pos, format!("`{path}`: missing `cron` or `interval`"));
                }
                _ => {}
            }
            for required in ["task", "targets"] {
                if !fields.iter().any(|f| f.key == required) {
                    self.error(e.pos, format!("`{path}`: missing `{required}`"));
                }
            }
            let mut ordered = Map::new();
            for k in [
                "description",
                "cron",
                "every",
                "timezone",
                "task",
                "args",
                "kwargs",
                "targets",
                "enabled",
                "options",
            ] {
                if let Some(v) = spec.remove(k) {
                    ordered.insert(k.into(), v);
                }
            }
            out.push(Object {
                kind: Kind::Schedule,
                value: document(Kind::Schedule, &name, Map::new(), ordered),
                name,
            });
        }
        out
    }

    /// `targets`: a mapping (or a list of mappings) of `role`, `roles`, `host`, `hosts`
    /// and `tags`; each named role or host and each tag selector becomes one target.
    fn targets(
        &mut self,
        node: &Node,
        path: &str,
        roles: &Names,
        hosts: &Names,
    ) -> Option<Vec<Json>> {
        let groups: Vec<(String, &Node)> = match &node.value {
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("{path}[{i}]"), n))
                .collect(),
            _ => vec![(path.to_string(), node)],
        };
        let mut out: Vec<Json> = Vec::new();
        let before = self.diags.iter().filter(|d| d.is_error()).count();
        for (gp, g) in groups {
            let Some(entries) = self.entries(g, &gp) else {
                continue;
            };
            for e in &entries {
                let p = format!("{gp}.{}", e.key);
                let (key, names, what) = match e.key.as_str() {
                    "role" | "roles" => ("role", roles, "role"),
                    "host" | "hosts" => ("host", hosts, "host"),
                    "tags" => {
                        let labels = self.tags(e.value, &p);
                        if labels.is_empty() {
                            self.error(e.value.pos, format!("`{p}`: no tags to select hosts by"));
                        } else {
                            out.push(json!({ "selector": { "matchLabels": labels } }));
                        }
                        continue;
                    }
                    _ => {
                        self.other_key("targets", &gp, e, TARGET_KEYS);
                        continue;
                    }
                };
                let items: Vec<(String, &Node)> = match &e.value.value {
                    Value::Seq(items) => items
                        .iter()
                        .enumerate()
                        .map(|(i, n)| (format!("{p}[{i}]"), n))
                        .collect(),
                    _ => vec![(p.clone(), e.value)],
                };
                for (ip, item) in items {
                    if let Some(n) = self.reference(item, names, what, &ip) {
                        let t = json!({ key: n });
                        if !out.contains(&t) {
                            out.push(t);
                        }
                    }
                }
            }
        }
        let failed = self.diags.iter().filter(|d| d.is_error()).count() > before;
        if out.is_empty() && !failed {
            self.error(node.pos, format!("`{path}`: no targets")).help =
                Some(format!("expected some of: {}", TARGET_KEYS.join(", ")));
        }
        Some(out)
    }

    /// Celery message `options`: `expires` (seconds) and `priority` are mapped.
    fn options(&mut self, node: &Node, path: &str) -> Option<Json> {
        let entries = self.entries(node, path)?;
        let mut out = Map::new();
        for e in &entries {
            let p = format!("{path}.{}", e.key);
            match e.key.as_str() {
                "expires" => {
                    if let Some(d) = self.duration(e.value, &p) {
                        out.insert("expires".into(), json!(d));
                    }
                }
                "priority" => {
                    if let Some(v) = self.uint(e.value, &p, 0, 9) {
                        out.insert("priority".into(), json!(v));
                    }
                }
                _ => self.other_key("options", path, e, OPTION_KEYS),
            }
        }
        (!out.is_empty()).then_some(Json::Object(out))
    }
}

/// `billing_sync` → `billing-sync`, `Web01.example.com` → `web01-example-com`.
fn normalise(raw: &str) -> String {
    raw.trim()
        .chars()
        .map(|c| match c {
            '_' | '.' | ' ' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// The manifest document of one object, keys in house order.
fn document(kind: Kind, name: &str, labels: Map<String, Json>, spec: Map<String, Json>) -> Json {
    let mut meta = Map::new();
    meta.insert("name".into(), json!(name));
    if !labels.is_empty() {
        meta.insert("labels".into(), Json::Object(labels));
    }
    let mut doc = Map::new();
    doc.insert("apiVersion".into(), json!(API_VERSION));
    doc.insert("kind".into(), json!(kind.as_str()));
    doc.insert("metadata".into(), Json::Object(meta));
    doc.insert("spec".into(), Json::Object(spec));
    Json::Object(doc)
}

/// A Redis URL with its password replaced by `***` (`redis://:***@host:6379/0`). A user
/// part without `:` is treated as a password too; a `password=` query value is hidden.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), url),
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("***@{host}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let q: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", q.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}{authority}{tail}")
}

#[cfg(test)]
mod tests;
