//! What the editing commands share: opening the work tree, `--dry-run` / `--commit`,
//! `--set PATH=VALUE`, list output formats, and turning edit errors into messages.

use clap::{Args, ValueEnum};
use serde_json::Value as Json;

pub use crate::edit::ops::parse_set;

use super::{Cli, CommandError, ErrorKind, Ui, Untouched, EXIT_OK};
use crate::edit::{self, Change, EditError, Workspace};

/// `--dry-run`, `--commit`, `--message`.
#[derive(Debug, Clone, Args)]
pub struct EditArgs {
    /// Print the change as a unified diff instead of writing it.
    #[arg(long, conflicts_with = "commit")]
    pub dry_run: bool,
    /// Commit the changed files (only those) on top of HEAD.
    #[arg(long)]
    pub commit: bool,
    /// The commit message (default: a one-line summary such as `hosts: add web03`).
    #[arg(short = 'm', long = "message", value_name = "MSG", requires = "commit")]
    pub message: Option<String>,
}

/// Output format of `ls` and `show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    /// Aligned columns fitted to the terminal (`show`: a readable summary).
    Table,
    /// Aligned columns, every cell in full.
    Wide,
    Json,
    Yaml,
}

impl ListFormat {
    /// A table (`table` or `wide`), not a document.
    pub fn is_table(self) -> bool {
        matches!(self, ListFormat::Table | ListFormat::Wide)
    }

    pub fn wide(self) -> bool {
        self == ListFormat::Wide
    }
}

/// `-o`, and where to read from.
#[derive(Debug, Clone, Args)]
pub struct ReadArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ListFormat::Table)]
    pub output: ListFormat,
    /// Read the manifests at this git revision instead of the work tree.
    #[arg(long, value_name = "REV")]
    pub rev: Option<String>,
}

/// The work tree being edited.
pub fn workspace(cli: &Cli) -> Result<Workspace, CommandError> {
    let root = edit::worktree_root(cli.repo.as_deref()).map_err(|e| error(None, e))?;
    Workspace::open(&root, &cli.path).map_err(|e| error(None, e))
}

/// The manifests to read: the work tree, or a revision's (`--rev`).
pub fn read_workspace(cli: &Cli, rev: &Option<String>) -> Result<Workspace, CommandError> {
    match rev {
        None => workspace(cli),
        Some(rev) => {
            let repo = crate::source::open_repo(cli.repo.as_deref())?;
            let snapshot = crate::source::read_git(&repo, rev, &cli.path)?;
            let root = repo.workdir().unwrap_or_else(|| repo.path()).to_path_buf();
            Ok(Workspace::from_snapshot(&root, &cli.path, snapshot))
        }
    }
}

/// An edit error as a CLI error; the diagnostics of an invalid result go to stderr.
pub fn error(ui: Option<&Ui>, e: EditError) -> CommandError {
    match e {
        EditError::Invalid(c) => match ui {
            Some(ui) => ui.compile_error(*c),
            None => CommandError::new(ErrorKind::Invalid, *c),
        }
        .untouched(Untouched::Edit),
        e => e.into(),
    }
}

/// Checks the whole repository with `changes` applied, then prints them (`--dry-run`)
/// or writes them (and commits with `--commit`).
pub fn finish(
    ui: &Ui,
    ws: &Workspace,
    changes: &[Change],
    args: &EditArgs,
    summary: &str,
) -> Result<u8, CommandError> {
    let changes: Vec<Change> = changes
        .iter()
        .filter(|c| c.before != c.after)
        .cloned()
        .collect();
    if changes.is_empty() {
        outln!("nothing to change: {summary} is already so");
        return Ok(EXIT_OK);
    }
    let compiled = ws.check(&changes).map_err(|e| error(Some(ui), e))?;
    ui.diagnostics(&compiled.warnings);
    if args.dry_run {
        for c in &changes {
            print_diff(ui, &c.unified_diff());
        }
        errln!("dry run: nothing was written ({summary})");
        return Ok(EXIT_OK);
    }
    ws.write(&changes).map_err(|e| error(Some(ui), e))?;
    let s = &ui.stdout_style;
    for c in &changes {
        let (mark, colour, verb) = match (&c.before, &c.after) {
            (None, _) => ("+", s.green(), "created"),
            (_, None) => ("-", s.red(), "deleted"),
            _ => ("~", s.yellow(), "updated"),
        };
        outln!("{} {verb} {}", s.paint(colour, mark), c.path);
    }
    if args.commit {
        let message = args.message.clone().unwrap_or_else(|| summary.to_string());
        let id = ws
            .commit(&changes, &message)
            .map_err(|e| error(Some(ui), e))?;
        outln!(
            "committed {} {}",
            crate::source::short(&id),
            message.lines().next().unwrap_or_default()
        );
    }
    Ok(EXIT_OK)
}

fn print_diff(ui: &Ui, diff: &str) {
    let s = &ui.stdout_style;
    for line in diff.lines() {
        let colour = if line.starts_with("+++") || line.starts_with("---") {
            s.bold()
        } else if line.starts_with('+') {
            s.green()
        } else if line.starts_with('-') {
            s.red()
        } else if line.starts_with("@@") {
            s.cyan()
        } else {
            outln!("{line}");
            continue;
        };
        outln!("{}", s.paint(colour, line));
    }
}

/// Prints documents as JSON (`{"formatVersion", "items": [...]}`) or as a YAML stream
/// (`---` between documents).
pub fn print_documents(format: ListFormat, docs: &[&Json]) {
    match format {
        ListFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&crate::contract::ManifestList {
                format_version: crate::contract::OUTPUT_FORMAT_VERSION,
                items: docs.iter().map(|d| (*d).clone()).collect(),
            })
            .unwrap_or_default()
        ),
        _ => {
            for (i, d) in docs.iter().enumerate() {
                if i > 0 {
                    outln!("---");
                }
                out!("{}", edit::emit::document(d));
            }
        }
    }
}

/// Prints any serialisable value as JSON (an object gets `formatVersion` first) or YAML.
pub fn print_value(format: ListFormat, value: &Json) {
    match format {
        ListFormat::Json => {
            let doc = match value {
                Json::Object(m) => {
                    let mut o = serde_json::Map::new();
                    o.insert(
                        "formatVersion".into(),
                        crate::contract::OUTPUT_FORMAT_VERSION.into(),
                    );
                    o.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
                    Json::Object(o)
                }
                other => other.clone(),
            };
            outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        _ => out!("{}", edit::emit::document(value)),
    }
}

/// Prints a map keyed by names (hosts, roles, ...): as JSON `{"formatVersion", field:
/// value}`, as YAML the map itself.
pub fn print_keyed(format: ListFormat, field: &str, value: &Json) {
    match format {
        ListFormat::Json => {
            let doc = serde_json::json!({
                "formatVersion": crate::contract::OUTPUT_FORMAT_VERSION,
                field: value,
            });
            outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        _ => out!("{}", edit::emit::document(value)),
    }
}

/// The first line of `show`: `Host web01  (manifests/hosts/web01.yaml:1)`.
pub fn print_header(ui: &Ui, doc: &crate::edit::Doc) {
    let s = &ui.stdout_style;
    outln!(
        "{} {}  ({}:{})",
        s.paint(s.bold(), doc.kind.as_str()),
        doc.name,
        doc.file,
        doc.line
    );
}

/// `a, b, c`, or `-` when empty.
pub fn list_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

/// The strings of a JSON list.
pub fn strings(v: Option<&Json>) -> Vec<String> {
    v.and_then(Json::as_array)
        .map(|a| a.iter().map(scalar_text).collect())
        .unwrap_or_default()
}

/// A scalar as plain text (strings without quotes).
pub fn scalar_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Null => "-".into(),
        other => other.to_string(),
    }
}
