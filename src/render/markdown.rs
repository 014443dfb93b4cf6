//! Markdown rendering of plans, for pull-request comments and `$GITHUB_STEP_SUMMARY`:
//! a hidden marker, a count per kind, then per kind a table and a collapsed block per
//! object, cut to a size budget with "… and N more", and a footer naming the celeroot
//! version and both commits.

use std::fmt::Write as _;

use super::text::human_time;
use super::{name_list, spec_diff, target_lines, Mark, PlanReport};
use crate::plan::{Action, Change, Effect};

const MAX_NAMES: usize = 20;

/// The first line of every Markdown plan, so a workflow can find and update its own
/// pull-request comment and no other bot's.
pub const MARKDOWN_MARKER: &str = "<!-- celeroot-plan -->";

/// The default size budget in bytes: under GitHub's 65,536-character limit of a comment
/// (a byte count is never below the character count), with room to spare.
pub const MARKDOWN_BUDGET: usize = 60_000;

/// The smallest budget accepted: the header, the per-kind table and the footer fit.
pub const MARKDOWN_BUDGET_MIN: usize = 4_000;

/// The largest budget accepted: GitHub's 1 MiB limit of a step's job summary.
pub const MARKDOWN_BUDGET_MAX: usize = 1_048_576;

/// At most this many warnings are listed; the rest are counted.
const MAX_WARNINGS: usize = 50;

/// A whole Markdown document for one plan: marker, plan within `budget` bytes, footer.
pub fn render_markdown(r: &PlanReport, budget: usize) -> String {
    render_markdown_many(std::slice::from_ref(r), &[], budget)
}

/// One document for several plans (one per environment): the marker once, the budget
/// shared between the plans, then the unchanged environments and one footer.
pub fn render_markdown_many(reports: &[PlanReport], unchanged: &[String], budget: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{MARKDOWN_MARKER}");
    let footer = footer(reports);
    let mut tail = String::new();
    if !unchanged.is_empty() {
        let _ = writeln!(
            tail,
            "\nEnvironments without changes: {}.",
            escape_md(&unchanged.join(", "))
        );
    }
    tail.push_str(&footer);
    let mut left = budget.saturating_sub(out.len() + tail.len());
    for (i, r) in reports.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let share = left / (reports.len() - i);
        let body = plan_body(r, share);
        left = left.saturating_sub(body.len() + 1);
        out.push_str(&body);
    }
    out.push_str(&tail);
    out
}

/// The footer: which celeroot made the plan, both commits, and how to see all of it.
fn footer(reports: &[PlanReport]) -> String {
    let Some(r) = reports.first() else {
        return String::new();
    };
    let name = |i: &super::RevisionInfo| {
        i.commit
            .as_deref()
            .map_or_else(|| i.rev.clone(), |c| crate::source::short(c).to_string())
    };
    let to_arg = if r.to.commit.is_some() {
        format!("--to {}", name(&r.to))
    } else {
        "--worktree".to_string()
    };
    let from_arg = match (&r.from.commit, r.from.rev.as_str()) {
        (_, "live") => String::new(),
        (Some(c), _) => format!("--from {} ", crate::source::short(c)),
        (None, rev) => format!("--from {rev} "),
    };
    format!(
        "\n<sub>celeroot {} · from `{}` to `{}` · the whole plan: <code>celeroot diff {}{}</code></sub>\n",
        env!("CARGO_PKG_VERSION"),
        escape_html(&name(&r.from)),
        escape_html(&name(&r.to)),
        escape_html(&from_arg),
        escape_html(&to_arg),
    )
}

/// The plan of one cluster in Markdown, at most about `budget` bytes: heading, summary,
/// a count per kind, then per kind a table of its changes and a collapsed block per
/// object, each cut with "… and N more" where the budget ends. Used on its own inside
/// other reports (drift), without marker and footer.
pub fn plan_body(r: &PlanReport, budget: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### celeroot plan for `{}`: `{}` → `{}`",
        escape_html(&r.cluster),
        r.from.describe(),
        r.to.describe()
    );
    let _ = writeln!(out);
    let warnings = warnings_section(r, budget / 4);
    if r.plan.is_empty() {
        let _ = writeln!(out, "**{}**", super::no_changes(r));
        out.push_str(&warnings);
        return out;
    }
    let s = r.plan.summary();
    let _ = writeln!(
        out,
        "**Plan: {} to add, {} to change, {} to remove.**",
        s.add, s.change, s.remove
    );
    let _ = writeln!(out);
    let kinds: Vec<(crate::manifest::Kind, Vec<&Change>)> = crate::manifest::Kind::ALL
        .iter()
        .map(|k| {
            (
                *k,
                r.plan
                    .changes
                    .iter()
                    .filter(|c| c.kind == *k)
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, cs)| !cs.is_empty())
        .collect();
    let _ = writeln!(out, "| Kind | ➕ add | 🔄 change | ➖ remove |");
    let _ = writeln!(out, "|---|--:|--:|--:|");
    for (kind, cs) in &kinds {
        let n = |a: Action| cs.iter().filter(|c| c.action == a).count();
        let _ = writeln!(
            out,
            "| {kind} | {} | {} | {} |",
            n(Action::Add),
            n(Action::Change),
            n(Action::Remove)
        );
    }
    let mut left = budget.saturating_sub(out.len() + warnings.len());
    for (i, (kind, cs)) in kinds.iter().enumerate() {
        let share = left / (kinds.len() - i);
        let section = kind_section(*kind, cs, share);
        left = left.saturating_sub(section.len());
        out.push_str(&section);
    }
    out.push_str(&warnings);
    out
}

/// One kind's changes within `budget` bytes: up to half of it for the table, the rest
/// for whole `<details>` blocks in plan order.
fn kind_section(kind: crate::manifest::Kind, cs: &[&Change], budget: usize) -> String {
    /// Room kept for the "… and N more" lines.
    const RESERVE: usize = 200;
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(out, "#### {kind} ({})", cs.len());
    let _ = writeln!(out);
    let _ = writeln!(out, "| Action | Object | Consequences |");
    let _ = writeln!(out, "|---|---|---|");
    let rows_budget = (budget / 2).saturating_sub(RESERVE);
    let mut shown = 0;
    for c in cs {
        let row = format!(
            "| {} | `{}` | {} |\n",
            action_word(c.action),
            escape_md(&c.name),
            summary_cell(c)
        );
        if out.len() + row.len() > rows_budget {
            break;
        }
        out.push_str(&row);
        shown += 1;
    }
    if shown < cs.len() {
        let _ = writeln!(out, "| … | and {} more | |", cs.len() - shown);
    }
    let details_budget = budget.saturating_sub(out.len() + RESERVE);
    let mut used = 0;
    let mut detailed = 0;
    for c in cs {
        let block = details(c);
        if used + block.len() > details_budget {
            break;
        }
        used += block.len();
        out.push_str(&block);
        detailed += 1;
    }
    if detailed < cs.len() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "_… and {} more {kind} change(s) not shown in detail (size budget); the footer names the command that prints them all._",
            cs.len() - detailed
        );
    }
    out
}

/// The collapsed block of one change: its spec diff, then its effects.
fn details(c: &Change) -> String {
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "<details><summary><code>{} {}</code></summary>",
        c.action.marker(),
        escape_html(&c.id().to_string())
    );
    let _ = writeln!(out);
    let diff = spec_diff(c);
    if diff.is_empty() {
        let _ = writeln!(out, "_Spec unchanged; derived state changed._");
        let _ = writeln!(out);
    } else {
        let _ = writeln!(out, "```diff");
        out.push_str(&diff.replace("```", "`\u{200b}``"));
        if !diff.ends_with('\n') {
            out.push('\n');
        }
        let _ = writeln!(out, "```");
        let _ = writeln!(out);
    }
    for e in &c.effects {
        render_effect(e, &mut out);
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "</details>");
    out
}

/// The warnings of the target revision, at most [`MAX_WARNINGS`] and about `budget` bytes.
fn warnings_section(r: &PlanReport, budget: usize) -> String {
    let mut out = String::new();
    if r.warnings.is_empty() {
        return out;
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "**Warnings**");
    let _ = writeln!(out);
    let mut shown = 0;
    for w in r.warnings.iter().take(MAX_WARNINGS) {
        let loc = w.location().map(|l| format!("`{l}`: ")).unwrap_or_default();
        let line = format!("- {loc}{}\n", escape_md(&w.message));
        if out.len() + line.len() > budget {
            break;
        }
        out.push_str(&line);
        shown += 1;
    }
    if shown < r.warnings.len() {
        let _ = writeln!(out, "- … and {} more warning(s)", r.warnings.len() - shown);
    }
    out
}

fn action_word(a: Action) -> &'static str {
    match a {
        Action::Add => "➕ add",
        Action::Change => "🔄 change",
        Action::Remove => "➖ remove",
    }
}

fn summary_cell(c: &Change) -> String {
    let mut parts = Vec::new();
    for e in &c.effects {
        match e {
            Effect::AffectedHosts { hosts } => {
                parts.push(format!("affects {} host(s)", hosts.len()));
            }
            Effect::Queues { after, .. } if !after.is_empty() => {
                parts.push(format!("queues: {}", after.join(", ")));
            }
            Effect::Targets { before, after } => {
                parts.push(format!("targets: {} → {}", before.len(), after.len()));
            }
            Effect::Disabled => parts.push("disabled".into()),
            _ => {}
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        escape_md(&parts.join("; "))
    }
}

fn render_effect(e: &Effect, out: &mut String) {
    match e {
        Effect::AffectedHosts { hosts } => {
            let _ = writeln!(
                out,
                "- Affects {} host(s): {}",
                hosts.len(),
                escape_md(&name_list(hosts, MAX_NAMES))
            );
        }
        Effect::Queues { before, after } => {
            let _ = match (before.is_empty(), after.is_empty()) {
                (true, _) => writeln!(out, "- Queues: `{}`", after.join(", ")),
                (false, true) => writeln!(out, "- Queues (before): `{}`", before.join(", ")),
                (false, false) => writeln!(
                    out,
                    "- Queues: `{}` → `{}`",
                    before.join(", "),
                    after.join(", ")
                ),
            };
        }
        Effect::Targets { before, after } => {
            let _ = writeln!(out, "- Targets ({} → {}):", before.len(), after.len());
            let lines = target_lines(before, after);
            for (mark, t) in lines.iter().take(MAX_NAMES) {
                let sign = match mark {
                    Mark::Removed => "➖ ",
                    Mark::Added => "➕ ",
                    Mark::Kept => "",
                };
                let _ = writeln!(
                    out,
                    "  - {sign}{} `{}` → queue `{}`",
                    t.kind, t.name, t.queue
                );
            }
            if lines.len() > MAX_NAMES {
                let _ = writeln!(out, "  - … and {} more", lines.len() - MAX_NAMES);
            }
        }
        Effect::NextRuns { timezone, times } => {
            let _ = writeln!(
                out,
                "- Next runs ({timezone}): {}",
                times
                    .iter()
                    .map(|t| human_time(t))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Effect::Interval { every } => {
            let _ = writeln!(out, "- Runs every {every}");
        }
        Effect::Disabled => {
            let _ = writeln!(out, "- **Disabled**: will not fire");
        }
    }
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn escape_md(s: &str) -> String {
    escape_html(s).replace('|', "\\|")
}
