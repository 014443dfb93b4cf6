//! The versioned JSON plan format (documented in docs/cli.md).

use serde::Serialize;

use super::{spec_diff, PlanReport, RevisionInfo};
use crate::diagnostic::Diagnostic;
use crate::plan::{Change, Summary};

/// Bumped on any incompatible change to the JSON structure.
pub const JSON_FORMAT_VERSION: u32 = 1;

/// `celeroot diff -o json` (docs/cli.md, "JSON output format").
#[derive(Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JsonPlan<'a> {
    format_version: u32,
    cluster: &'a str,
    from: &'a RevisionInfo,
    to: &'a RevisionInfo,
    summary: Summary,
    changes: Vec<JsonChange<'a>>,
    warnings: &'a [Diagnostic],
}

#[derive(Serialize, schemars::JsonSchema)]
struct JsonChange<'a> {
    #[serde(flatten)]
    change: &'a Change,
    /// The unified diff of the spec.
    diff: String,
}

/// Renders the plan as pretty-printed JSON followed by a newline.
pub fn render_json(r: &PlanReport) -> String {
    let doc = JsonPlan {
        format_version: JSON_FORMAT_VERSION,
        cluster: &r.cluster,
        from: &r.from,
        to: &r.to,
        summary: r.plan.summary(),
        changes: r
            .plan
            .changes
            .iter()
            .map(|c| JsonChange {
                change: c,
                diff: spec_diff(c),
            })
            .collect(),
        warnings: &r.warnings,
    };
    let mut s =
        serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}
