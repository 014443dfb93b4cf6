//! `celeroot init`.

use std::path::PathBuf;

use clap::Args;

use super::{CommandError, Ui, EXIT_OK};
use crate::init::{scaffold, Outcome};

/// Scaffold a new config repository.
///
/// Writes example manifests, JSON Schemas, a README and a GitHub workflow for
/// pull-request checks. Runs `git init` when needed; never overwrites files.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to create the repository.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

pub fn run(ui: &Ui, args: &InitArgs) -> Result<u8, CommandError> {
    let report = scaffold(&args.dir).map_err(|e| CommandError::invalid(e.to_string()))?;
    let s = &ui.stdout_style;
    if report.git_initialized {
        outln!(
            "{} initialised a git repository in {}",
            s.paint(s.green(), "+"),
            args.dir.display()
        );
    }
    for (path, outcome) in &report.files {
        match outcome {
            Outcome::Created => outln!("{} {path}", s.paint(s.green(), "+")),
            Outcome::Kept => outln!("{} {path} (exists, kept)", s.paint(s.dim(), "=")),
        }
    }
    outln!();
    outln!("Next steps:");
    outln!("  cd {}", args.dir.display());
    outln!("  celeroot validate --worktree      # check the manifests on disk");
    outln!("  git add -A && git commit -m 'Initial celeroot config'");
    outln!("  celeroot diff --from HEAD~1       # after your next commit");
    Ok(EXIT_OK)
}
