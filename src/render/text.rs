//! Terminal rendering of plans: a Terraform-style summary, then each object with the
//! unified diff of its normalised spec and its consequences.

use std::fmt::Write as _;

use super::{name_list, spec_diff, target_lines, Mark, PlanReport, Style};
use crate::desired::ScheduleEntry;
use crate::plan::{Action, Change, Effect};

/// At most this many host names are listed per effect; the rest are counted.
const MAX_NAMES: usize = 10;

pub fn render_text(r: &PlanReport, style: &Style) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        style.paint(
            style.bold(),
            &format!(
                "celeroot plan for cluster {}: {} → {}",
                r.cluster,
                r.from.describe(),
                r.to.describe()
            )
        )
    );
    let _ = writeln!(out);
    if r.plan.is_empty() {
        let _ = writeln!(out, "{}", super::no_changes(r));
        return out;
    }
    let s = r.plan.summary();
    let summary = format!(
        "Plan: {} to add, {} to change, {} to remove.",
        style.paint(style.green(), &s.add.to_string()),
        style.paint(style.yellow(), &s.change.to_string()),
        style.paint(style.red(), &s.remove.to_string()),
    );
    let _ = writeln!(out, "{summary}");
    for c in &r.plan.changes {
        let _ = writeln!(out);
        render_change(c, style, &mut out);
    }
    // Again at the end, as Terraform does: after a long plan the summary is where the
    // reader's eyes are.
    let _ = writeln!(out);
    let _ = writeln!(out, "{summary}");
    out
}

fn action_style(a: Action, style: &Style) -> anstyle::Style {
    match a {
        Action::Add => style.green(),
        Action::Change => style.yellow(),
        Action::Remove => style.red(),
    }
}

fn render_change(c: &Change, style: &Style, out: &mut String) {
    let head = format!("{} {}", c.action.marker(), c.id());
    let _ = write!(
        out,
        "{}",
        style.paint(
            style.bold(),
            &style.paint(action_style(c.action, style), &head)
        )
    );
    if !c.spec_changed {
        let _ = write!(
            out,
            "{}",
            style.paint(style.dim(), " (spec unchanged; derived state changed)")
        );
    }
    let _ = writeln!(out);
    for line in spec_diff(c).lines() {
        let painted = match line.as_bytes().first() {
            Some(b'+') => style.paint(style.green(), line),
            Some(b'-') => style.paint(style.red(), line),
            Some(b'@') => style.paint(style.cyan(), line),
            _ => line.to_string(),
        };
        let _ = writeln!(out, "    {painted}");
    }
    for e in &c.effects {
        render_effect(e, style, out);
    }
}

fn entry(e: &ScheduleEntry) -> String {
    format!("{} {} → queue {}", e.kind, e.name, e.queue)
}

fn render_effect(e: &Effect, style: &Style, out: &mut String) {
    match e {
        Effect::AffectedHosts { hosts } => {
            let _ = writeln!(
                out,
                "  affects {} host(s): {}",
                hosts.len(),
                name_list(hosts, MAX_NAMES)
            );
        }
        Effect::Queues { before, after } => {
            if before.is_empty() {
                let _ = writeln!(out, "  queues: {}", after.join(", "));
            } else if after.is_empty() {
                let _ = writeln!(out, "  queues (before): {}", before.join(", "));
            } else {
                let _ = writeln!(
                    out,
                    "  queues: {} → {}",
                    before.join(", "),
                    after.join(", ")
                );
            }
        }
        Effect::Targets { before, after } => {
            if before == after {
                let _ = writeln!(out, "  targets ({}, unchanged):", after.len());
            } else {
                let _ = writeln!(out, "  targets ({} → {}):", before.len(), after.len());
            }
            let lines = target_lines(before, after);
            for (mark, t) in lines.iter().take(MAX_NAMES) {
                let line = match mark {
                    Mark::Removed => style.paint(style.red(), &format!("- {}", entry(t))),
                    Mark::Added => style.paint(style.green(), &format!("+ {}", entry(t))),
                    Mark::Kept => format!("  {}", entry(t)),
                };
                let _ = writeln!(out, "    {line}");
            }
            if lines.len() > MAX_NAMES {
                let _ = writeln!(out, "      … and {} more", lines.len() - MAX_NAMES);
            }
        }
        Effect::NextRuns { timezone, times } => {
            let _ = writeln!(
                out,
                "  next runs ({timezone}): {}",
                times
                    .iter()
                    .map(|t| human_time(t))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Effect::Interval { every } => {
            let _ = writeln!(out, "  runs every {every}");
        }
        Effect::Disabled => {
            let _ = writeln!(
                out,
                "  {}",
                style.paint(style.yellow(), "disabled: will not fire")
            );
        }
    }
}

/// `2026-11-24T03:00:00+01:00` → `Tue 2026-11-24 03:00 +01:00`.
pub(crate) fn human_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|d| d.format("%a %Y-%m-%d %H:%M %:z").to_string())
        .unwrap_or_else(|_| rfc3339.to_string())
}
