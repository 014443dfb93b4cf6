//! Tables: the one renderer of every listing (hosts, roles, schedules, history, deploy
//! results, task tables), laid out by comfy-table.
//!
//! Owns: columns separated by two spaces, no borders, a header line, and fitting the
//! terminal's width: when the rows are wider than [`Fit::width`], the widest columns are
//! cut, each cut cell ending in `…`, one line per row (so the output stays greppable).
//! [`Fit::wide`] (`-o wide`) never cuts. Without a width (output to a pipe or a file)
//! nothing is cut either.
//! Must not know: what the rows mean, where the width comes from.

use comfy_table::{CellAlignment, ContentArrangement, Row};

use super::Style;

/// How to fit a table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fit {
    /// The terminal's width in columns, when output goes to a terminal.
    pub width: Option<u16>,
    /// Show every cell in full (`-o wide`).
    pub wide: bool,
}

/// A table of text cells.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    indent: usize,
}

impl Table {
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Table {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
            indent: 0,
        }
    }

    /// Indents every line by `n` spaces.
    pub fn indent(mut self, n: usize) -> Table {
        self.indent = n;
        self
    }

    /// Adds a row (missing cells are empty, extra ones are dropped).
    pub fn push<S: Into<String>>(&mut self, row: impl IntoIterator<Item = S>) {
        let mut cells: Vec<String> = row.into_iter().map(Into::into).collect();
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    /// Builds a table from rows.
    pub fn with_rows<S: Into<String>, R: IntoIterator<Item = S>>(
        mut self,
        rows: impl IntoIterator<Item = R>,
    ) -> Table {
        for r in rows {
            self.push(r);
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The laid-out lines: the header first, then one line per row, without colour or
    /// trailing spaces.
    pub fn lines(&self, fit: Fit) -> Vec<String> {
        let mut t = comfy_table::Table::new();
        t.load_style(comfy_table::presets::NOTHING);
        t.set_truncation_indicator("…");
        let budget = fit
            .width
            .filter(|_| !fit.wide)
            .map(|w| w.saturating_sub(u16::try_from(self.indent).unwrap_or(u16::MAX)));
        match budget {
            Some(w) => {
                t.set_content_arrangement(ContentArrangement::Dynamic);
                t.set_width(w.max(20));
            }
            None => {
                t.set_content_arrangement(ContentArrangement::Disabled);
            }
        }
        let row = |cells: &[String]| {
            let mut r = Row::from(cells.iter().map(|c| one_line(c)).collect::<Vec<_>>());
            r.max_height(1);
            r
        };
        t.set_header(row(&self.header));
        for r in &self.rows {
            t.add_row(row(r));
        }
        let last = self.header.len().saturating_sub(1);
        for (i, col) in t.column_iter_mut().enumerate() {
            col.set_cell_alignment(CellAlignment::Left);
            col.set_padding((0, if i == last { 0 } else { 2 }));
        }
        let pad = " ".repeat(self.indent);
        t.lines()
            .map(|l| format!("{pad}{}", l.trim_end()))
            .collect()
    }

    /// The table as text, the header in bold when `style` has colour.
    pub fn render(&self, fit: Fit, style: &Style) -> String {
        let mut out = String::new();
        for (i, line) in self.lines(fit).into_iter().enumerate() {
            if i == 0 {
                let (pad, text) = line.split_at(self.indent.min(line.len()));
                out.push_str(pad);
                out.push_str(&style.paint(style.bold(), text));
            } else {
                out.push_str(&line);
            }
            out.push('\n');
        }
        out
    }
}

/// Cells are one line: a line break would break the layout (and the one-row-a-line rule).
fn one_line(s: &str) -> String {
    if s.contains(['\n', '\r']) {
        s.replace("\r\n", " ").replace(['\n', '\r'], " ")
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout every listing had before this renderer: widths from the widest cell,
    /// two spaces between columns, the last column unpadded, trailing spaces trimmed.
    fn reference(header: &[&str], rows: &[Vec<&str>]) -> Vec<String> {
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for r in rows {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let line = |cells: &[&str]| {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    l.push_str(c);
                } else {
                    l.push_str(c);
                    l.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
                }
            }
            l.trim_end().to_string()
        };
        std::iter::once(line(header))
            .chain(rows.iter().map(|r| line(r)))
            .collect()
    }

    #[test]
    fn without_a_width_it_is_the_plain_layout() {
        let header = ["HOST", "RESULT", "RELEASE"];
        let rows = vec![
            vec!["web01", "deployed", "r-1a2b3c4d"],
            vec!["db-primary", "", "-"],
            vec!["ü-höst", "ok", ""],
        ];
        let t = Table::new(header).with_rows(rows.clone());
        assert_eq!(t.lines(Fit::default()), reference(&header, &rows));
        let wide = Fit {
            width: Some(20),
            wide: true,
        };
        assert_eq!(t.lines(wide), reference(&header, &rows));
    }

    #[test]
    fn a_narrow_terminal_cuts_the_widest_column_one_line_per_row() {
        let long = "x".repeat(120);
        let t = Table::new(["NAME", "DETAIL"])
            .indent(2)
            .with_rows([vec!["web01", long.as_str()], vec!["web02", "short"]]);
        let lines = t.lines(Fit {
            width: Some(40),
            wide: false,
        });
        assert_eq!(lines.len(), 3, "{lines:#?}");
        for l in &lines {
            assert!(l.chars().count() <= 40, "{l:?} is wider than 40");
            assert!(l.starts_with("  "), "{l:?}");
        }
        assert!(lines[1].ends_with('…'), "{:?}", lines[1]);
        assert!(lines[1].starts_with("  web01"), "{:?}", lines[1]);
        assert_eq!(lines[2].trim_end(), "  web02  short");
    }

    #[test]
    fn line_breaks_in_cells_do_not_break_rows() {
        let t = Table::new(["A", "B"]).with_rows([vec!["1", "two\nlines"]]);
        assert_eq!(t.lines(Fit::default()), vec!["A  B", "1  two lines"]);
    }
}
