//! `celeroot validate`.

use clap::{Args, ValueEnum};

use super::{Cli, CommandError, Ui, EXIT_OK};

/// Validate the manifests at a revision (or in the work tree) without changing anything.
///
/// Exit status: 0 when valid (warnings allowed), 1 when not.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The git revision to validate.
    #[arg(long, default_value = "HEAD", conflicts_with = "worktree")]
    pub rev: String,
    /// Validate the files on disk instead of a commit.
    #[arg(long)]
    pub worktree: bool,
    /// Output format. `github` adds workflow annotations (automatic when GITHUB_ACTIONS=true).
    #[arg(long, value_enum, default_value_t = ValidateFormat::Text)]
    pub format: ValidateFormat,
    /// Also check that the alert channels' secret references (`env:NAME`, `file:/path`)
    /// resolve on this machine: run it where `celeroot watch` runs (which refuses a
    /// revision whose references do not resolve).
    #[arg(long)]
    pub secrets: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ValidateFormat {
    Text,
    Github,
}

pub fn run(ui: &Ui, cli: &Cli, args: &ValidateArgs) -> Result<u8, CommandError> {
    let ui = Ui {
        github: ui.github || args.format == ValidateFormat::Github,
        annotations_on_stdout: true,
        ..*ui
    };
    let snapshot = super::diff::snapshot(cli, &args.rev, args.worktree)?;
    let files = snapshot.files.len();
    let compiled = crate::compile_snapshot(snapshot).map_err(|e| ui.compile_error(e))?;
    // A git revision's shipped trees must be safe to stage, as `reconcile` and `deploy`
    // will check (docs/security.md, finding 1): report it in the PR check already.
    if let Some(commit) = &compiled.revision.commit {
        let repo = crate::source::open_repo(cli.repo.as_deref())?;
        crate::source::release_id(&repo, commit, &compiled.state.deploy.paths)?;
    }
    ui.diagnostics(&compiled.warnings);
    if args.secrets {
        let mut missing = crate::runs::alert::unresolved(&compiled.state);
        if !missing.is_empty() {
            let sources = super::diff::snapshot(cli, &args.rev, args.worktree)?
                .files
                .into_iter()
                .map(|f| (f.path, f.text))
                .collect();
            crate::diagnostic::attach_source_lines(&mut missing, &sources);
            ui.diagnostics(&missing);
            return Err(CommandError::invalid(format!(
                "{}: {} alert secret reference(s) do not resolve on this machine; nothing was changed",
                compiled.revision.describe(),
                missing.len()
            )));
        }
    }
    let s = &compiled.state;
    let count = |k: crate::manifest::Kind| s.objects.keys().filter(|id| id.kind == k).count();
    outln!(
        "{} manifests at {} are valid: {} file(s); cluster {}, {} role(s), {} host(s), {} schedule(s){}",
        ui.stdout_style.paint(ui.stdout_style.green(), "✓"),
        compiled.revision.describe(),
        files,
        s.cluster,
        count(crate::manifest::Kind::Role),
        count(crate::manifest::Kind::Host),
        count(crate::manifest::Kind::Schedule),
        match compiled.warnings.len() {
            0 => String::new(),
            n => format!("; {n} warning(s)"),
        }
    );
    Ok(EXIT_OK)
}
