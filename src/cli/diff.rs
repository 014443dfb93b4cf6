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
    /// One plan per environment (`environments/<name>/`) whose manifests differ between
    /// --from and --to: the pull-request check of a repository with several clusters.
    #[arg(long, requires = "from", conflicts_with = "worktree")]
    pub every_env: bool,
    /// With `-o markdown`: the most bytes the plan may take. Beyond it the tables and
    /// details end with "… and N more". The default stays under GitHub's 65,536-character
    /// comment limit; a job summary takes up to 1048576.
    #[arg(long, value_name = "BYTES", default_value_t = crate::render::MARKDOWN_BUDGET as u64,
          value_parser = clap::value_parser!(u64).range(crate::render::MARKDOWN_BUDGET_MIN as u64..=crate::render::MARKDOWN_BUDGET_MAX as u64))]
    pub markdown_budget: u64,
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
    if args.every_env {
        return run_every_env(ui, cli, args, from, now);
    }
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
    print_plan(ui, args, &report)
}

/// `--every-env`: for each environment at --from or --to whose files differ, its plan.
fn run_every_env(
    ui: &Ui,
    cli: &Cli,
    args: &DiffArgs,
    from: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<u8, CommandError> {
    let repo = source::open_repo(cli.repo.as_deref())?;
    let root = crate::edit::ENVIRONMENTS_DIR;
    let mut envs = source::dirs_at(&repo, from, root)?;
    envs.extend(source::dirs_at(&repo, &args.to, root)?);
    envs.sort();
    envs.dedup();
    if envs.is_empty() {
        return Err(CommandError::usage(format!(
            "--every-env: neither {from} nor {} has directories under {root}/",
            args.to
        )));
    }
    let from_info = crate::render::RevisionInfo {
        rev: from.to_string(),
        commit: Some(source::resolve_commit(&repo, from)?.id().to_string()),
    };
    let mut reports = Vec::new();
    let mut unchanged = Vec::new();
    let mut errors = Vec::new();
    for env in &envs {
        let dir = format!("{root}/{env}");
        let read = |rev: &str| source::read_git(&repo, rev, &dir).ok();
        let (before, after) = (read(from), read(&args.to));
        let same = match (&before, &after) {
            (Some(b), Some(a)) => {
                let files = |s: &Snapshot| {
                    s.files
                        .iter()
                        .map(|f| (f.path.clone(), f.text.clone()))
                        .collect::<Vec<_>>()
                };
                files(b) == files(a)
            }
            _ => false,
        };
        if same {
            unchanged.push(env.clone());
            continue;
        }
        let Some(after) = after else {
            // The environment was removed: nothing to plan in git (its cluster keeps
            // running until someone reconciles it away).
            errln!("environment {env}: removed at {} (its cluster's live state is not changed by this)", args.to);
            continue;
        };
        let after = match crate::compile_snapshot(after) {
            Ok(c) => c,
            Err(e) => {
                errors.push(format!(
                    "environment {env}: {}",
                    ui.compile_error(e).headline()
                ));
                continue;
            }
        };
        let before = match before.map(crate::compile_snapshot) {
            Some(Ok(c)) => c.state,
            // New (or previously invalid) at --from: everything is added.
            _ => std::sync::Arc::new(crate::desired::DesiredState {
                cluster: after.state.cluster.clone(),
                ..Default::default()
            }),
        };
        ui.diagnostics(&after.warnings);
        let plan = crate::plan::diff(&before, &after.state, now);
        reports.push(PlanReport {
            cluster: after.state.cluster.clone(),
            from: from_info.clone(),
            to: after.revision,
            plan,
            warnings: after.warnings,
        });
    }
    let out = match args.output {
        OutputFormat::Json => {
            let items: Vec<serde_json::Value> = reports
                .iter()
                .map(|r| serde_json::from_str(&render_json(r)).unwrap_or_default())
                .collect();
            serde_json::to_string_pretty(&serde_json::json!({
                "formatVersion": 1,
                "environments": items,
                "unchanged": unchanged,
            }))
            .unwrap_or_default()
                + "\n"
        }
        OutputFormat::Markdown => {
            crate::render::render_markdown_many(&reports, &unchanged, args.markdown_budget as usize)
        }
        OutputFormat::Text => {
            let mut text = String::new();
            for r in &reports {
                text.push_str(&render_text(r, &ui.stdout_style));
                text.push('\n');
            }
            if !unchanged.is_empty() {
                text.push_str(&format!(
                    "Environments without changes: {}.\n",
                    unchanged.join(", ")
                ));
            }
            text
        }
    };
    out!("{out}");
    if !errors.is_empty() {
        return Err(CommandError::invalid(errors.join("; ")).untouched(Untouched::Changed));
    }
    Ok(if reports.iter().all(|r| r.plan.is_empty()) {
        EXIT_OK
    } else {
        EXIT_CHANGES
    })
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
    print_plan(ui, args, &report)
}

/// Prints a plan in the chosen format; exit status 2 when it has changes, else 0.
fn print_plan(ui: &Ui, args: &DiffArgs, report: &PlanReport) -> Result<u8, CommandError> {
    let out = match args.output {
        OutputFormat::Text => render_text(report, &ui.stdout_style),
        OutputFormat::Json => render_json(report),
        OutputFormat::Markdown => render_markdown(report, args.markdown_budget as usize),
    };
    out!("{out}");
    Ok(if report.plan.is_empty() {
        EXIT_OK
    } else {
        EXIT_CHANGES
    })
}
