//! `celeroot import`.

use std::path::PathBuf;

use clap::Args;

use super::{Cli, CommandError, Ui, Untouched, EXIT_OK};
use crate::edit::{self, EditError};
use crate::import::{self, ImportError, Options};
use crate::manifest::Kind;

/// Convert a single-file config (cl.yaml, the older format) into manifests.
///
/// Writes one file per object under the manifests directory (--out, default --path),
/// after validating the whole result; nothing is written when anything is invalid or a
/// target file exists. Settings without a manifest equivalent (`redis`, `monitoring`,
/// ...) are listed as warnings; unknown keys are errors unless --allow-unknown.
/// See docs/import.md.
///
/// Exit status: 0 imported (warnings allowed), 1 nothing written.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The single-file config to convert.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Directory to write the manifests to, relative to the repository root (default: --path).
    #[arg(long, value_name = "DIR")]
    pub out: Option<String>,
    /// Print the files that would be written, as diffs; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Skip keys the importer does not know (listed as warnings) instead of refusing.
    #[arg(long)]
    pub allow_unknown: bool,
    /// Commit the new files (and only them).
    #[arg(long, conflicts_with = "dry_run")]
    pub commit: bool,
    /// Commit message (with --commit).
    #[arg(short = 'm', long, value_name = "MESSAGE", requires = "commit")]
    pub message: Option<String>,
}

pub fn run(ui: &Ui, cli: &Cli, args: &ImportArgs) -> Result<u8, CommandError> {
    let label = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| CommandError::invalid(format!("cannot read {label}: {e}")))?;
    let imported = match import::convert(
        &label,
        &text,
        Options {
            allow_unknown: args.allow_unknown,
        },
    ) {
        Ok(i) => i,
        Err(ImportError::Invalid { file, diagnostics }) => {
            ui.diagnostics(&diagnostics);
            let errors = diagnostics.iter().filter(|d| d.is_error()).count();
            return Err(CommandError::invalid(format!(
                "{file} cannot be imported: {errors} error(s); nothing was written"
            )));
        }
    };

    ui.diagnostics(&imported.warnings);
    let root = match edit::worktree_root(cli.repo.as_deref()) {
        Ok(root) => root,
        Err(e) if args.commit => return Err(edit_error(e)),
        Err(_) => cli.repo.clone().unwrap_or_else(|| ".".into()),
    };
    let out = args.out.as_deref().unwrap_or(&cli.path);
    let ws = import::workspace(&root, out).map_err(edit_error)?;
    let changes = import::changes(&ws, &imported).map_err(|e| {
        edit_error(e).hinted("import into a directory without these objects: --out DIR")
    })?;
    match ws.check(&changes) {
        Ok(compiled) => ui.diagnostics(&compiled.warnings),
        Err(EditError::Invalid(e)) => {
            let err = ui.compile_error(*e);
            return Err(CommandError::invalid(format!(
                "the imported manifests would not validate: {}",
                err.source
            ))
            .untouched(Untouched::Changed)
            .hinted("the locations above are the files the import would write; fix the matching entries in the input"));
        }
        Err(e) => return Err(edit_error(e)),
    }

    let s = &ui.stdout_style;
    let summary = format!(
        "cluster {}, {} role(s), {} host(s), {} schedule(s)",
        imported.cluster,
        imported.count(Kind::Role),
        imported.count(Kind::Host),
        imported.count(Kind::Schedule),
    );
    let notes = match imported.warnings.len() {
        0 => String::new(),
        n => format!("; {n} warning(s), see above"),
    };
    if args.dry_run {
        for c in &changes {
            out!("{}", c.unified_diff());
        }
        outln!(
            "would write {} file(s) from {label}: {summary}{notes} (dry run: nothing written)",
            changes.len()
        );
        return Ok(EXIT_OK);
    }
    ws.write(&changes).map_err(edit_error)?;
    for c in &changes {
        outln!("{} {}", s.paint(s.green(), "+"), c.path);
    }
    outln!(
        "{} imported {label} into {}: {summary}{notes}",
        s.paint(s.green(), "✓"),
        if ws.dir.is_empty() { "." } else { &ws.dir },
    );
    if args.commit {
        let message = args
            .message
            .clone()
            .unwrap_or_else(|| format!("Import {label} (cluster {})", imported.cluster));
        let id = ws.commit(&changes, &message).map_err(edit_error)?;
        outln!("committed {}: {message}", crate::source::short(&id));
    } else {
        outln!();
        outln!("Next steps:");
        let path = crate::source::normalize_path(&cli.path).unwrap_or_default();
        if ws.dir == path {
            outln!("  celeroot validate --worktree");
        } else {
            outln!("  celeroot validate --worktree --path {}", ws.dir);
        }
        outln!(
            "  git add {} && git commit -m 'Import {label}'",
            if ws.dir.is_empty() { "." } else { &ws.dir }
        );
    }
    Ok(EXIT_OK)
}

fn edit_error(e: EditError) -> CommandError {
    match e {
        EditError::Source(s) => s.into(),
        other => CommandError::invalid(other.to_string()),
    }
}
