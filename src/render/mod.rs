//! Renderers: plans and diagnostics as text (terminal), JSON (versioned) and Markdown.
//!
//! Owns: every byte celeroot prints about a plan. Renderers only read a [`PlanReport`];
//! they compute nothing that could change what is applied.
//! Must not know: git, Redis, or how plans are made.

mod json;
mod markdown;
mod table;
mod terminal;
mod text;
pub mod yaml;

use serde::Serialize;

use crate::desired::ScheduleEntry;
use crate::diagnostic::Diagnostic;
use crate::plan::{Change, Plan};

pub use json::{render_json, JsonPlan, JSON_FORMAT_VERSION};
pub use markdown::{
    plan_body as markdown_plan_body, render_markdown, render_markdown_many, MARKDOWN_BUDGET,
    MARKDOWN_BUDGET_MAX, MARKDOWN_BUDGET_MIN, MARKDOWN_MARKER,
};
pub use table::{Fit, Table};
pub use terminal::{terminal_safe, SafeWriter};
pub use text::render_text;

pub use crate::diagnostic::Style;

/// One side of a comparison: what the user named, and the commit it resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct RevisionInfo {
    pub rev: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

impl RevisionInfo {
    /// `HEAD~1 (1a2b3c4d)`, or just the label for the work tree.
    pub fn describe(&self) -> String {
        match &self.commit {
            Some(c) => format!("{} ({})", self.rev, crate::source::short(c)),
            None => self.rev.clone(),
        }
    }
}

/// Everything a renderer needs about a plan.
#[derive(Debug, Clone)]
pub struct PlanReport {
    pub cluster: String,
    pub from: RevisionInfo,
    pub to: RevisionInfo,
    pub plan: Plan,
    /// Validation warnings of the target revision.
    pub warnings: Vec<Diagnostic>,
}

/// The sentence for an empty plan.
pub(crate) fn no_changes(r: &PlanReport) -> String {
    if r.from.rev == "live" {
        format!("No changes. The live state matches {}.", r.to.describe())
    } else {
        "No changes. Both revisions compile to the same desired state.".to_string()
    }
}

/// The unified diff of a change's normalised YAML (hunks only, no file header).
pub fn spec_diff(change: &Change) -> String {
    let before = change
        .before
        .as_ref()
        .map(yaml::to_yaml)
        .unwrap_or_default();
    let after = change.after.as_ref().map(yaml::to_yaml).unwrap_or_default();
    let diff = similar::TextDiff::from_lines(&before, &after);
    let mut unified = diff.unified_diff();
    unified.context_radius(3);
    unified.iter_hunks().map(|h| h.to_string()).collect()
}

/// How a schedule target relates to the previous revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    Removed,
    Added,
    Kept,
}

/// A schedule's targets before and after, removed first, then added, then kept.
pub(crate) fn target_lines<'a>(
    before: &'a [ScheduleEntry],
    after: &'a [ScheduleEntry],
) -> Vec<(Mark, &'a ScheduleEntry)> {
    let removed = before
        .iter()
        .filter(|t| !after.contains(t))
        .map(|t| (Mark::Removed, t));
    let added = after
        .iter()
        .filter(|t| !before.contains(t))
        .map(|t| (Mark::Added, t));
    let kept = after
        .iter()
        .filter(|t| before.contains(t))
        .map(|t| (Mark::Kept, t));
    removed.chain(added).chain(kept).collect()
}

/// A list of names, shortened to `max` with a count of the rest.
pub(crate) fn name_list(names: &[String], max: usize) -> String {
    if names.is_empty() {
        return "(none)".into();
    }
    let shown: Vec<&str> = names.iter().take(max).map(String::as_str).collect();
    let mut s = shown.join(", ");
    if names.len() > max {
        s.push_str(&format!(" and {} more", names.len() - max));
    }
    s
}
