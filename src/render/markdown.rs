//! Markdown rendering of plans, for pull-request comments and `$GITHUB_STEP_SUMMARY`.

use std::fmt::Write as _;

use super::text::human_time;
use super::{name_list, spec_diff, target_lines, Mark, PlanReport};
use crate::plan::{Action, Change, Effect};

const MAX_NAMES: usize = 20;

pub fn render_markdown(r: &PlanReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### celeroot plan for `{}`: `{}` → `{}`",
        r.cluster,
        r.from.describe(),
        r.to.describe()
    );
    let _ = writeln!(out);
    if r.plan.is_empty() {
        let _ = writeln!(out, "**{}**", super::no_changes(r));
        render_warnings(r, &mut out);
        return out;
    }
    let s = r.plan.summary();
    let _ = writeln!(
        out,
        "**Plan: {} to add, {} to change, {} to remove.**",
        s.add, s.change, s.remove
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| Action | Object | Consequences |");
    let _ = writeln!(out, "|---|---|---|");
    for c in &r.plan.changes {
        let _ = writeln!(
            out,
            "| {} | `{}` | {} |",
            action_word(c.action),
            c.id(),
            summary_cell(c)
        );
    }
    for c in &r.plan.changes {
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
    }
    render_warnings(r, &mut out);
    out
}

fn render_warnings(r: &PlanReport, out: &mut String) {
    if r.warnings.is_empty() {
        return;
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "**Warnings**");
    let _ = writeln!(out);
    for w in &r.warnings {
        let loc = w.location().map(|l| format!("`{l}`: ")).unwrap_or_default();
        let _ = writeln!(out, "- {loc}{}", escape_md(&w.message));
    }
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
