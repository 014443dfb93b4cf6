//! `celeroot schema`.

use std::path::PathBuf;

use clap::Args;

use super::{CommandError, EXIT_OK};
use crate::manifest::{schema, Kind};

/// Print the JSON Schema of manifests (all kinds, or one), or write all schema files.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// One kind: cluster, role, host or schedule. Default: the schema for any manifest.
    pub kind: Option<String>,
    /// Write every schema file into DIR (this is how `schemas/` is generated).
    #[arg(long, value_name = "DIR", conflicts_with = "kind")]
    pub write: Option<PathBuf>,
}

pub fn run(args: &SchemaArgs) -> Result<u8, CommandError> {
    if let Some(dir) = &args.write {
        let output =
            schema::write_files(&dir.join("output"), crate::contract::output_schema_files())?;
        for path in schema::write_all(dir)?.iter().chain(&output) {
            outln!("wrote {}", path.display());
        }
        return Ok(EXIT_OK);
    }
    let value = match &args.kind {
        None => schema::manifest_schema(),
        Some(k) => {
            let kind = Kind::ALL
                .into_iter()
                .find(|x| x.as_str().eq_ignore_ascii_case(k))
                .ok_or_else(|| {
                    CommandError::invalid(format!("unknown kind `{k}`"))
                        .hinted("expected one of: cluster, role, host, schedule")
                })?;
            schema::kind_schema(kind)
        }
    };
    outln!(
        "{}",
        serde_json::to_string_pretty(&value).unwrap_or_default()
    );
    Ok(EXIT_OK)
}
