//! `celeroot diff`.

use clap::{Args, ValueEnum};

use super::{Cli, CommandError, Ui, Untouched, EXIT_CHANGES, EXIT_OK};
use crate::render::{render_json, render_markdown, render_text, PlanReport};
use crate::source::{self, Snapshot};

/// Show what would change: between two revisions (no server needed), or between a
/// revision and the live state in Redis (without --from).
///
/// Compiles the manifests at --from and at --to (or the work tree) and prints the plan:
/// a summary line, then each changed object with a diff of its normalised spec and its
/// consequences (hosts a role affects, a schedule's targets and next runs). Without
/// --from, the base is the live state in Redis (see --redis) and --to is the revision.
///
/// Exit status: 0 no changes, 2 changes, 1 error (either side invalid, unknown revision,
/// Redis unreachable).
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The base revision (e.g. `origin/main`, `HEAD~1`). Without it: the live state.
    #[arg(long)]
    pub from: Option<String>,
    /// The revision to compare with the base.
    #[arg(long, default_value = "HEAD", conflicts_with = "worktree")]
    pub to: String,
    /// Compare the base with the files on disk instead of a commit.
    #[arg(long)]
    pub worktree: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    Markdown,
}

/// Reads the manifest files of `rev` (or the work tree) for the repository in `cli`.
pub(super) fn snapshot(cli: &Cli, rev: &str, worktree: bool) -> Result<Snapshot, CommandError> {
    if worktree {
        let root = match source::open_repo(cli.repo.as_deref()) {
            Ok(repo) => repo.workdir().map(std::path::Path::to_path_buf),
            Err(_) => None,
        };
        let root = root
            .or_else(|| cli.repo.clone())
            .unwrap_or_else(|| ".".into());
        return Ok(source::read_worktree(&root, &cli.path)?);
    }
    let repo = source::open_repo(cli.repo.as_deref())?;
    Ok(source::read_git(&repo, rev, &cli.path)?)
}

pub fn run(ui: &Ui, cli: &Cli, args: &DiffArgs) -> Result<u8, CommandError> {
    let now = super::now()?;
    let Some(from) = &args.from else {
        return run_live(ui, cli, args, now);
    };
    // Compile both sides before reporting, so errors on both sides show in one run.
    let (before, after) = if args.worktree {
        (
            crate::compile_snapshot(snapshot(cli, from, false)?),
            crate::compile_snapshot(snapshot(cli, &args.to, args.worktree)?),
        )
    } else {
        // Two commits share most files: compile --to from --from's parsed files,
        // re-reading only what git's tree diff reports as changed.
        let repo = source::open_repo(cli.repo.as_deref())?;
        let mut compiler = crate::apply::Compiler::new(&cli.path);
        let mut side = |rev: &str| match compiler.compile(&repo, rev) {
            Err(crate::CompileError::Source(e)) => Err(CommandError::from(e)),
            other => Ok(other.map(|(c, _)| c)),
        };
        (side(from)?, side(&args.to)?)
    };
    let (before, after) = match (before, after) {
        (Ok(b), Ok(a)) => (b, a),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(ui.compile_error(e)),
        (Err(eb), Err(ea)) => {
            let first = ui.compile_error(eb);
            let second = ui.compile_error(ea);
            return Err(
                CommandError::invalid(format!("{}; {}", first.source, second.source))
                    .untouched(Untouched::Changed),
            );
        }
    };
    ui.diagnostics(&after.warnings);
    let plan = crate::plan::diff(&before.state, &after.state, now);
    let report = PlanReport {
        cluster: after.state.cluster.clone(),
        from: before.revision,
        to: after.revision,
        plan,
        warnings: after.warnings,
    };
    print_plan(ui, args.output, &report)
}

/// Desired state at --to (or the work tree) against the live state in Redis.
fn run_live(
    ui: &Ui,
    cli: &Cli,
    args: &DiffArgs,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<u8, CommandError> {
    let after = crate::compile_snapshot(snapshot(cli, &args.to, args.worktree)?)
        .map_err(|e| ui.compile_error(e))?;
    ui.diagnostics(&after.warnings);
    let mut store = super::live::connect(cli, &after.state.cluster)?;
    let live = crate::plan::against_live(&mut store, &after.state, now)?;
    let report = PlanReport {
        cluster: after.state.cluster.clone(),
        from: crate::render::RevisionInfo {
            rev: "live".into(),
            commit: live.applied_revision(),
        },
        to: after.revision,
        plan: live.plan,
        warnings: after.warnings,
    };
    print_plan(ui, args.output, &report)
}

/// Prints a plan in the chosen format; exit status 2 when it has changes, else 0.
fn print_plan(ui: &Ui, format: OutputFormat, report: &PlanReport) -> Result<u8, CommandError> {
    let out = match format {
        OutputFormat::Text => render_text(report, &ui.stdout_style),
        OutputFormat::Json => render_json(report),
        OutputFormat::Markdown => render_markdown(report),
    };
    out!("{out}");
    Ok(if report.plan.is_empty() {
        EXIT_OK
    } else {
        EXIT_CHANGES
    })
}
