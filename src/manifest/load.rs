//! Turning manifest files into typed objects, collecting located diagnostics.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use super::node::{decode, did_you_mean, DecodeError, Node, Pos, Value};
use super::types::*;
use super::yaml::parse_documents;
use crate::diagnostic::Diagnostic;
use crate::source::SourceFile;

/// A typed object and where its document starts.
#[derive(Debug, Clone)]
pub struct Object {
    pub file: String,
    pub pos: Pos,
    pub body: ObjectBody,
}

/// The object of one document, by kind.
#[derive(Debug, Clone)]
pub enum ObjectBody {
    Cluster(Cluster),
    Role(Role),
    Host(Host),
    Schedule(Schedule),
}

impl ObjectBody {
    pub fn kind(&self) -> Kind {
        match self {
            ObjectBody::Cluster(_) => Kind::Cluster,
            ObjectBody::Role(_) => Kind::Role,
            ObjectBody::Host(_) => Kind::Host,
            ObjectBody::Schedule(_) => Kind::Schedule,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            ObjectBody::Cluster(o) => &o.metadata,
            ObjectBody::Role(o) => &o.metadata,
            ObjectBody::Host(o) => &o.metadata,
            ObjectBody::Schedule(o) => &o.metadata,
        }
    }

    pub fn id(&self) -> ObjectId {
        ObjectId {
            kind: self.kind(),
            name: self.metadata().name.value.clone(),
        }
    }
}

/// Everything read from a set of files.
#[derive(Debug, Default)]
pub struct LoadedFiles {
    /// Objects whose documents decoded.
    pub objects: Vec<Object>,
    /// Problems found while parsing and decoding.
    pub diagnostics: Vec<Diagnostic>,
    /// `(kind, name)` of documents that name themselves but failed to decode; other
    /// objects' references to them are not reported as dangling.
    pub undecoded: Vec<ObjectId>,
}

/// Parses and decodes every document of every file. Never stops at the first problem.
pub fn load_files(files: &[SourceFile]) -> LoadedFiles {
    // Files are independent: parse them on every core (a 30,000-file fleet spends most
    // of a cold `validate` here), then concatenate in file order.
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(8);
    if threads < 2 || files.len() < 256 {
        return load_files_serial(files);
    }
    let per = files.len().div_ceil(threads);
    let parts: Vec<LoadedFiles> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(per)
            .map(|chunk| s.spawn(move || load_files_serial(chunk)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut out = LoadedFiles::default();
    for p in parts {
        out.objects.extend(p.objects);
        out.diagnostics.extend(p.diagnostics);
        out.undecoded.extend(p.undecoded);
    }
    out
}

fn load_files_serial(files: &[SourceFile]) -> LoadedFiles {
    let mut out = LoadedFiles::default();
    for file in files {
        for doc in parse_documents(&file.text) {
            match doc {
                Err(e) => {
                    let d = Diagnostic::error(
                        &file.path,
                        e.pos.unwrap_or_default(),
                        format!("invalid YAML: {}", e.message),
                    );
                    out.diagnostics.push(d);
                }
                Ok(doc) => load_document(&file.path, &doc.root, &mut out),
            }
        }
    }
    out
}

fn load_document(file: &str, root: &Node, out: &mut LoadedFiles) {
    if !matches!(root.value, Value::Map(_)) {
        out.diagnostics.push(
            Diagnostic::error(
                file,
                root.pos,
                format!(
                    "expected a manifest (a mapping), found {}",
                    root.value.describe()
                ),
            )
            .help("a manifest has `apiVersion: celeroot.io/v1`, `kind`, `metadata` and `spec`"),
        );
        return;
    }
    let mut ok = true;
    match root.get("apiVersion") {
        None => {
            ok = false;
            out.diagnostics.push(
                Diagnostic::error(file, root.pos, "missing required field `apiVersion`")
                    .help(format!("add `apiVersion: {API_VERSION}`")),
            );
        }
        Some(v) if v.as_str() != Some(API_VERSION) => {
            ok = false;
            out.diagnostics.push(
                Diagnostic::error(
                    file,
                    v.pos,
                    format!("unsupported apiVersion {}", quoted(&v.value)),
                )
                .help(format!("expected `{API_VERSION}`")),
            );
        }
        Some(_) => {}
    }
    let kind = match root.get("kind") {
        None => {
            out.diagnostics.push(
                Diagnostic::error(file, root.pos, "missing required field `kind`")
                    .help(kinds_help()),
            );
            return;
        }
        Some(k) => match k.as_str().and_then(Kind::parse) {
            Some(kind) => kind,
            None => {
                let text = k.as_str().unwrap_or_default();
                let help = match did_you_mean(text, Kind::ALL.iter().map(|k| k.as_str())) {
                    Some(s) => format!("did you mean `{s}`? ({})", kinds_help()),
                    None => kinds_help(),
                };
                out.diagnostics.push(
                    Diagnostic::error(file, k.pos, format!("unknown kind {}", quoted(&k.value)))
                        .help(help),
                );
                return;
            }
        },
    };
    let name = root
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Node::as_str);
    let body = if ok {
        match kind {
            Kind::Cluster => typed(file, root, out).map(ObjectBody::Cluster),
            Kind::Role => typed(file, root, out).map(ObjectBody::Role),
            Kind::Host => typed(file, root, out).map(ObjectBody::Host),
            Kind::Schedule => typed(file, root, out).map(ObjectBody::Schedule),
        }
    } else {
        None
    };
    match (body, name) {
        (Some(body), _) => out.objects.push(Object {
            file: file.to_string(),
            pos: root.pos,
            body,
        }),
        (None, Some(name)) => out.undecoded.push(ObjectId {
            kind,
            name: name.to_string(),
        }),
        (None, None) => {}
    }
}

/// A scalar as the user wrote it (`"Hots"`), or its type for anything else.
fn quoted(v: &Value) -> String {
    match v {
        Value::Str(s) => format!("{s:?}"),
        other => other.describe(),
    }
}

fn kinds_help() -> String {
    format!(
        "expected one of: {}",
        Kind::ALL
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn typed<S: DeserializeOwned>(
    file: &str,
    root: &Node,
    out: &mut LoadedFiles,
) -> Option<Manifest<S>> {
    match decode::<Manifest<S>>(root) {
        Ok(m) => Some(m),
        Err(e) => {
            out.diagnostics.push(decode_diagnostic(file, root.pos, e));
            None
        }
    }
}

/// Turns a decode error into a diagnostic, with serde's type names made readable.
pub(crate) fn decode_diagnostic(file: &str, fallback: Pos, e: DecodeError) -> Diagnostic {
    let message = humanize(&e.message);
    let message = match &e.path {
        Some(p) if message.starts_with("unknown field") => match p.rsplit_once('.') {
            Some((parent, _)) => format!("{message} in `{parent}`"),
            None => message,
        },
        Some(p) if message.starts_with("missing required field") => format!("{message} in `{p}`"),
        Some(p) => format!("{message} (at `{p}`)"),
        None => message,
    };
    let mut d = Diagnostic::error(file, e.pos.unwrap_or(fallback), message);
    if let Some(h) = e.help {
        d = d.help(h);
    }
    d
}

fn humanize(msg: &str) -> String {
    let table: BTreeMap<&str, &str> = BTreeMap::from([
        ("u8", "an integer from 0 to 255"),
        ("u16", "an integer from 0 to 65535"),
        ("u32", "a whole number from 0 to 4294967295"),
        ("a string", "a string"),
    ]);
    let mut out = msg.to_string();
    for (from, to) in table {
        out = out.replace(&format!("expected {from},"), &format!("expected {to},"));
        if out.ends_with(&format!("expected {from}")) {
            let cut = out.len() - from.len();
            out.truncate(cut);
            out.push_str(to);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> LoadedFiles {
        load_files(&[SourceFile {
            path: "m.yaml".into(),
            text: text.into(),
        }])
    }

    #[test]
    fn loads_a_role() {
        let l = load("apiVersion: celeroot.io/v1\nkind: Role\nmetadata:\n  name: web\nspec:\n  concurrency: 4\n");
        assert!(l.diagnostics.is_empty(), "{:?}", l.diagnostics);
        assert_eq!(l.objects.len(), 1);
        assert_eq!(l.objects[0].body.id().to_string(), "Role/web");
    }

    #[test]
    fn integer_range_errors_are_readable_and_located() {
        let l = load("apiVersion: celeroot.io/v1\nkind: Host\nmetadata:\n  name: web\nspec:\n  address: 192.0.2.1\n  roles: [web]\n  ssh:\n    port: 70000\n");
        let d = &l.diagnostics[0];
        assert_eq!((d.line, d.column), (9, 11));
        assert_eq!(d.message, "invalid value integer `70000`: expected an integer from 0 to 65535 (at `spec.ssh.port`)");
        assert_eq!(l.undecoded.len(), 1);
    }

    #[test]
    fn unknown_kind_suggests() {
        let l = load("apiVersion: celeroot.io/v1\nkind: Hots\nmetadata: {name: a}\nspec: {}\n");
        assert_eq!(
            l.diagnostics[0].help.as_deref(),
            Some("did you mean `Host`? (expected one of: Cluster, Role, Host, Schedule)")
        );
    }
}
