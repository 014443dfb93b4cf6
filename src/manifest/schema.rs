//! JSON Schemas generated from the manifest types (for editors and `celeroot schema`).
//!
//! `schemas/` in the repository holds the output of [`all_schemas`]; a test fails when
//! it is stale (regenerate with `celeroot schema --write schemas`).

use serde_json::{json, Map, Value as Json};

use super::types::*;

const DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";

fn generate<T: schemars::JsonSchema>() -> Json {
    let schema = schemars::SchemaGenerator::new(schemars::generate::SchemaSettings::draft2020_12())
        .into_root_schema_for::<T>();
    serde_json::to_value(schema).unwrap_or(Json::Null)
}

/// The JSON Schema of one kind's manifest.
pub fn kind_schema(kind: Kind) -> Json {
    let mut v = match kind {
        Kind::Cluster => generate::<Manifest<ClusterSpec>>(),
        Kind::Role => generate::<Manifest<RoleSpec>>(),
        Kind::Host => generate::<Manifest<HostSpec>>(),
        Kind::Schedule => generate::<Manifest<ScheduleSpec>>(),
    };
    if let Some(obj) = v.as_object_mut() {
        obj.insert("$schema".into(), json!(DRAFT));
        obj.insert("title".into(), json!(format!("celeroot {kind}")));
        obj.insert(
            "description".into(),
            json!(format!("A celeroot.io/v1 {kind} manifest.")),
        );
        if let Some(props) = obj.get_mut("properties").and_then(Json::as_object_mut) {
            props.insert(
                "apiVersion".into(),
                json!({"description": "Always `celeroot.io/v1`.", "const": API_VERSION}),
            );
            props.insert(
                "kind".into(),
                json!({"description": "The object kind.", "const": kind.as_str()}),
            );
        }
    }
    v
}

/// One schema for any manifest: dispatches on `kind` with `if`/`then`.
pub fn manifest_schema() -> Json {
    let mut defs = Map::new();
    let mut branches = Vec::new();
    for kind in Kind::ALL {
        let mut s = kind_schema(kind);
        if let Some(obj) = s.as_object_mut() {
            if let Some(Json::Object(d)) = obj.remove("$defs") {
                defs.extend(d);
            }
            obj.remove("$schema");
            obj.remove("title");
        }
        branches.push(json!({"if": {"properties": {"kind": {"const": kind.as_str()}}, "required": ["kind"]}, "then": s}));
    }
    json!({
        "$schema": DRAFT,
        "title": "celeroot manifest",
        "description": "Any celeroot.io/v1 manifest (Cluster, Role, Host or Schedule).",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": API_VERSION},
            "kind": {"enum": Kind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>()},
        },
        "allOf": branches,
        "$defs": defs,
    })
}

/// Every schema file, as `(file name, pretty JSON)`, in the layout of `schemas/`.
pub fn all_schemas() -> Vec<(String, String)> {
    let mut out = vec![("manifest.json".to_string(), pretty(&manifest_schema()))];
    for kind in Kind::ALL {
        out.push((
            format!("{}.json", kind.as_str().to_lowercase()),
            pretty(&kind_schema(kind)),
        ));
    }
    out
}

/// `v` as pretty JSON with a final newline, as schema files are written.
pub fn pretty(v: &Json) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// Writes every schema file into `dir` (created if missing); returns the paths written.
///
/// # Errors
/// The directory or a file cannot be written (the error names the path).
pub fn write_all(
    dir: &std::path::Path,
) -> Result<Vec<std::path::PathBuf>, crate::source::SourceError> {
    write_files(dir, all_schemas())
}

/// Writes `files` (`(file name, text)`) into `dir` (created if missing); returns the
/// paths written.
///
/// # Errors
/// The directory or a file cannot be written (the error names the path).
pub fn write_files(
    dir: &std::path::Path,
    files: Vec<(String, String)>,
) -> Result<Vec<std::path::PathBuf>, crate::source::SourceError> {
    let io = |p: &std::path::Path| {
        let path = p.display().to_string();
        move |source| crate::source::SourceError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut written = Vec::new();
    for (name, text) in files {
        let path = dir.join(&name);
        std::fs::write(&path, text).map_err(io(&path))?;
        written.push(path);
    }
    Ok(written)
}
