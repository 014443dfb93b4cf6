//! Diagnostics: located errors and warnings about manifests, and their rendering.
//!
//! Owns: the `Diagnostic` value (severity, file, line, column, message, help, related
//! locations, source line) and its text and GitHub-annotation renderings; the source
//! position [`Pos`] and the terminal [`Style`] (the lowest layer: `manifest` and `render`
//! build on them).
//! Must not know: how manifests are parsed or validated.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// A 1-based position in a manifest file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

/// Terminal styling; everything is a no-op when colour is off.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    color: bool,
}

impl Style {
    pub fn plain() -> Self {
        Style { color: false }
    }

    pub fn colored() -> Self {
        Style { color: true }
    }

    pub fn new(color: bool) -> Self {
        Style { color }
    }

    fn pick(&self, s: anstyle::Style) -> anstyle::Style {
        if self.color {
            s
        } else {
            anstyle::Style::new()
        }
    }

    fn fg(&self, c: anstyle::AnsiColor) -> anstyle::Style {
        self.pick(anstyle::Style::new().fg_color(Some(c.into())))
    }

    pub fn red(&self) -> anstyle::Style {
        self.fg(anstyle::AnsiColor::Red)
    }

    pub fn green(&self) -> anstyle::Style {
        self.fg(anstyle::AnsiColor::Green)
    }

    pub fn yellow(&self) -> anstyle::Style {
        self.fg(anstyle::AnsiColor::Yellow)
    }

    pub fn cyan(&self) -> anstyle::Style {
        self.fg(anstyle::AnsiColor::Cyan)
    }

    pub fn bold(&self) -> anstyle::Style {
        self.pick(anstyle::Style::new().bold())
    }

    pub fn dim(&self) -> anstyle::Style {
        self.pick(anstyle::Style::new().dimmed())
    }

    /// `text` wrapped in `style`.
    pub fn paint(&self, style: anstyle::Style, text: &str) -> String {
        format!("{}{text}{}", style.render(), style.render_reset())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A secondary location that explains a diagnostic (e.g. the first of two duplicates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Related {
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub note: String,
}

/// One problem found in the manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Path of the file relative to the repository root, when the problem is in a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// 1-based line; 0 when the problem concerns the whole file.
    pub line: u32,
    /// 1-based column; 0 when unknown.
    pub column: u32,
    pub message: String,
    /// What was expected, or how to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<Related>,
    /// The source line the diagnostic points at (filled in by [`attach_source_lines`]).
    #[serde(skip)]
    pub source_line: Option<String>,
}

impl Diagnostic {
    pub fn error(file: impl Into<String>, pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: Some(file.into()),
            line: pos.line,
            column: pos.column,
            message: message.into(),
            help: None,
            related: Vec::new(),
            source_line: None,
        }
    }

    pub fn warning(file: impl Into<String>, pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, pos, message)
        }
    }

    /// A problem that is not about one place in one file (e.g. "no Cluster object").
    pub fn global(severity: Severity, message: impl Into<String>) -> Self {
        Diagnostic {
            severity,
            file: None,
            line: 0,
            column: 0,
            message: message.into(),
            help: None,
            related: Vec::new(),
            source_line: None,
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn related(mut self, file: impl Into<String>, pos: Pos, note: impl Into<String>) -> Self {
        self.related.push(Related {
            file: file.into(),
            line: pos.line,
            column: pos.column,
            note: note.into(),
        });
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `path:line:column`, or as much of it as is known.
    pub fn location(&self) -> Option<String> {
        let file = self.file.as_ref()?;
        Some(match (self.line, self.column) {
            (0, _) => file.clone(),
            (l, 0) => format!("{file}:{l}"),
            (l, c) => format!("{file}:{l}:{c}"),
        })
    }

    /// One line: `file:line:col: message` (or just the message for global problems).
    pub fn headline(&self) -> String {
        match self.location() {
            Some(loc) => format!("{loc}: {}", self.message),
            None => self.message.clone(),
        }
    }

    /// Renders the diagnostic for a terminal, rustc style, with the source line.
    pub fn render_text(&self, style: &Style) -> String {
        let mut out = String::new();
        let (label, color) = match self.severity {
            Severity::Error => ("error", style.red()),
            Severity::Warning => ("warning", style.yellow()),
        };
        let _ = writeln!(
            out,
            "{}{label}{}: {}{}{}",
            color.render(),
            color.render_reset(),
            style.bold().render(),
            self.message,
            style.bold().render_reset()
        );
        if let Some(loc) = self.location() {
            let _ = writeln!(out, "  --> {loc}");
        }
        if let Some(src) = &self.source_line {
            let num = self.line.to_string();
            let pad = " ".repeat(num.len());
            let _ = writeln!(out, " {pad} |");
            let _ = writeln!(out, " {num} | {src}");
            if self.column > 0 {
                let caret_pad = " ".repeat(caret_offset(src, self.column));
                let _ = writeln!(
                    out,
                    " {pad} | {caret_pad}{}^{}",
                    color.render(),
                    color.render_reset()
                );
            }
        }
        for r in &self.related {
            let _ = writeln!(
                out,
                "  note: {} at {}:{}:{}",
                r.note, r.file, r.line, r.column
            );
        }
        if let Some(help) = &self.help {
            let _ = writeln!(out, "  = help: {help}");
        }
        out
    }

    /// Renders the diagnostic as a GitHub Actions workflow command.
    pub fn render_github(&self) -> String {
        let cmd = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut props = Vec::new();
        if let Some(f) = &self.file {
            props.push(format!("file={}", escape_property(f)));
            if self.line > 0 {
                props.push(format!("line={}", self.line));
            }
            if self.column > 0 {
                props.push(format!("col={}", self.column));
            }
        }
        let mut msg = self.message.clone();
        if let Some(h) = &self.help {
            msg.push_str(" (");
            msg.push_str(h);
            msg.push(')');
        }
        let props = if props.is_empty() {
            String::new()
        } else {
            format!(" {}", props.join(","))
        };
        format!("::{cmd}{props}::{}", escape_data(&msg))
    }
}

/// Display width before `column` (1-based, in characters), with tabs kept as one cell.
fn caret_offset(line: &str, column: u32) -> usize {
    line.chars().take(column.saturating_sub(1) as usize).count()
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// Fills in `source_line` of each diagnostic from the file contents.
pub fn attach_source_lines(diags: &mut [Diagnostic], sources: &BTreeMap<String, String>) {
    for d in diags.iter_mut() {
        if d.line == 0 {
            continue;
        }
        if let Some(text) = d.file.as_ref().and_then(|f| sources.get(f)) {
            d.source_line = text
                .lines()
                .nth(d.line as usize - 1)
                .map(|l| l.trim_end_matches('\r').to_string());
        }
    }
}

/// Sorts diagnostics by file, position and severity, for stable output.
pub fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by(|a, b| {
        (&a.file, a.line, a.column, a.severity, &a.message)
            .cmp(&(&b.file, b.line, b.column, b.severity, &b.message))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_annotation_escapes_properties_and_data() {
        let d = Diagnostic::error("m/a,b.yaml", Pos { line: 3, column: 5 }, "bad\nthing 100%")
            .help("fix it");
        assert_eq!(
            d.render_github(),
            "::error file=m/a%2Cb.yaml,line=3,col=5::bad%0Athing 100%25 (fix it)"
        );
    }

    #[test]
    fn text_rendering_points_at_the_column() {
        let mut d = vec![Diagnostic::error(
            "a.yaml",
            Pos { line: 2, column: 3 },
            "boom",
        )];
        let sources = BTreeMap::from([("a.yaml".to_string(), "x: 1\n  y: 2\n".to_string())]);
        attach_source_lines(&mut d, &sources);
        let text = d[0].render_text(&Style::plain());
        assert_eq!(
            text,
            "error: boom\n  --> a.yaml:2:3\n   |\n 2 |   y: 2\n   |   ^\n"
        );
    }
}
