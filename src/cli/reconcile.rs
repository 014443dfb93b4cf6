//! `celeroot reconcile` and `celeroot rollback`.

use clap::{Args, ValueEnum};

use super::{live, Cli, CommandError, Ui, EXIT_CHANGES, EXIT_OK};
use crate::apply::{self, Options, Outcome};
use crate::render::{render_text, PlanReport, RevisionInfo};

/// Apply a revision to the live state in Redis: validate, compile, observe, plan, apply
/// (one atomic transaction), record.
///
/// Exit status: 0 applied or nothing to do, 1 error or refused. With --dry-run: 0 when a
/// real run would write nothing but its event, 2 when it would write (changes, healing
/// drift, or recording a new revision).
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// The git revision to apply.
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    /// Show the plan without writing anything (no lease, no event).
    #[arg(long)]
    pub dry_run: bool,
    /// Keep objects that were removed from git in the live state.
    #[arg(long)]
    pub no_prune: bool,
    /// Allow removing more than half of the live hosts or objects.
    #[arg(long)]
    pub allow_mass_delete: bool,
    /// Allow applying a revision that is not a descendant of the applied one.
    #[arg(long)]
    pub allow_rollback: bool,
    /// Also delete unknown keys under the cluster's prefix (reported by `celeroot drift`).
    #[arg(long)]
    pub sweep: bool,
    /// Do not deploy the release to out-of-date hosts after the transaction.
    #[arg(long, env = "CELEROOT_SKIP_DEPLOY", value_parser = super::env_bool)]
    pub skip_deploy: bool,
    /// How long to wait for the reconcile lease when another reconcile holds it (`0s`:
    /// refuse at once). The lease is held through the deploy that follows.
    #[arg(long, default_value = "0s", value_parser = super::watch::parse_wait, env = "CELEROOT_LOCK_TIMEOUT")]
    pub lock_timeout: std::time::Duration,
    #[command(flatten)]
    pub ssh: super::deploy::SshArgs,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ReconcileFormat::Text)]
    pub output: ReconcileFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReconcileFormat {
    Text,
    Json,
}

/// Re-apply an earlier revision (a reconcile with --allow-rollback).
///
/// See `celeroot history` for the applied revisions.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The revision to return to.
    pub rev: String,
    /// Show the plan without writing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Allow removing more than half of the live hosts or objects.
    #[arg(long)]
    pub allow_mass_delete: bool,
    /// Do not deploy the release to out-of-date hosts after the transaction.
    #[arg(long, env = "CELEROOT_SKIP_DEPLOY", value_parser = super::env_bool)]
    pub skip_deploy: bool,
    /// How long to wait for the reconcile lease when another reconcile holds it.
    #[arg(long, default_value = "0s", value_parser = super::watch::parse_wait, env = "CELEROOT_LOCK_TIMEOUT")]
    pub lock_timeout: std::time::Duration,
    #[command(flatten)]
    pub ssh: super::deploy::SshArgs,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ReconcileFormat::Text)]
    pub output: ReconcileFormat,
}

pub fn run_rollback(ui: &Ui, cli: &Cli, a: &RollbackArgs) -> Result<u8, CommandError> {
    run(
        ui,
        cli,
        &ReconcileArgs {
            rev: a.rev.clone(),
            dry_run: a.dry_run,
            no_prune: false,
            allow_mass_delete: a.allow_mass_delete,
            allow_rollback: true,
            sweep: false,
            skip_deploy: a.skip_deploy,
            lock_timeout: a.lock_timeout,
            ssh: a.ssh.clone(),
            output: a.output,
        },
    )
}

pub fn run(ui: &Ui, cli: &Cli, args: &ReconcileArgs) -> Result<u8, CommandError> {
    let now = super::now()?;
    let opts = options(args);
    if let Some(code) = settled_noop(ui, cli, args, &opts)? {
        return Ok(code);
    }
    let (repo, rev) = live::revision(ui, cli, &args.rev)?;
    let mut store = live::connect(cli, &rev.compiled.state.cluster)?;
    if !args.dry_run {
        // Suspension holds the daemons only: a reconcile by hand is an explicit decision.
        if let Ok(Some(s)) = store.control().map(|c| c.suspended) {
            errln!(
                "note: the watch daemons of cluster {} are suspended (by {} since {}: {:?}); this reconcile applies anyway",
                rev.compiled.state.cluster,
                s.by,
                s.at,
                s.reason
            );
        }
    }
    let target = rev.compiled.revision.commit.clone().unwrap_or_default();
    let ancestry = live::ancestry(&repo, &target);
    let redis = live::redis_url(cli)?;
    let ssh = args.ssh.options();
    let shown = super::deploy::Shown::default();
    let deploy = (!args.skip_deploy).then_some(apply::Deploy {
        repo: &repo,
        ssh: &ssh,
        redis: Some(&redis),
        progress: &shown,
    });
    let (outcome, after) =
        apply::reconcile_and_deploy(&mut store, &rev, &opts, &ancestry, now, deploy)?;
    if let Some(e) = after.failed {
        return Err(e.into());
    }
    if let Some(e) = after.unrecorded {
        errln!("warning: the deploy was not recorded in Redis: {e}");
    }
    let deploy_failed = outcome.deploy.as_ref().is_some_and(|d| !d.succeeded());
    match args.output {
        ReconcileFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&outcome).unwrap_or_default()
        ),
        ReconcileFormat::Text => {
            out!(
                "{}",
                render_outcome(ui, &outcome, &rev.compiled.revision, &rev.compiled.warnings)
            );
            if let Some(d) = &outcome.deploy {
                out!("\n{}", super::deploy::summary(d, false));
            }
        }
    }
    if deploy_failed {
        return Err(CommandError::invalid(
            "the live state was applied, but the deploy failed on some hosts (see above)",
        )
        .hinted("fix the hosts, then run `celeroot deploy` (or reconcile again)"));
    }
    Ok(match outcome.result {
        apply::Applied::DryRun
            if outcome.writes > 0
                || outcome.previous_revision.as_deref() != Some(outcome.revision.as_str()) =>
        {
            EXIT_CHANGES
        }
        _ => EXIT_OK,
    })
}

fn options(args: &ReconcileArgs) -> Options {
    Options {
        dry_run: args.dry_run,
        prune: !args.no_prune,
        allow_mass_delete: args.allow_mass_delete,
        allow_rollback: args.allow_rollback,
        sweep: args.sweep,
        actor: apply::actor(),
        leader: None,
        lock_wait: args.lock_timeout,
        fault: std::env::var("CELEROOT_FAULT")
            .ok()
            .and_then(|f| apply::Fault::parse(&f)),
    }
}

/// The fast no-op (docs/cli.md, "Reconciling the applied revision again"): when the live
/// state has settled on the target revision, nothing is compiled. `None`: take the full
/// path.
fn settled_noop(
    ui: &Ui,
    cli: &Cli,
    args: &ReconcileArgs,
    opts: &Options,
) -> Result<Option<u8>, CommandError> {
    // An injected fault is for the full path's transaction.
    if opts.fault.is_some() {
        return Ok(None);
    }
    // A bad URL is reported by the full path, after the manifests are checked.
    let Ok(redis) = live::redis_url(cli) else {
        return Ok(None);
    };
    let probe = apply::settled::Probe {
        repo: cli.repo.as_deref(),
        rev: &args.rev,
        path: &cli.path,
        redis: &redis,
        deploying: !args.skip_deploy,
    };
    let s = match apply::settled::settled_noop(&probe, opts)? {
        Ok(s) => s,
        Err(why) => {
            tracing::debug!(?why, "not the fast no-op: compiling the revision");
            return Ok(None);
        }
    };
    let to = RevisionInfo {
        rev: args.rev.clone(),
        commit: Some(s.commit.clone()),
    };
    if s.settled.warnings > 0 {
        errln!(
            "note: {} has {} warning(s), reported when it was applied (`celeroot validate --rev {}` shows them)",
            to.describe(),
            s.settled.warnings,
            args.rev
        );
    }
    match args.output {
        ReconcileFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&s.outcome).unwrap_or_default()
        ),
        ReconcileFormat::Text => out!("{}", render_outcome(ui, &s.outcome, &to, &[])),
    }
    Ok(Some(EXIT_OK))
}

fn render_outcome(
    ui: &Ui,
    o: &Outcome,
    to: &RevisionInfo,
    warnings: &[crate::diagnostic::Diagnostic],
) -> String {
    let s = &ui.stdout_style;
    let report = PlanReport {
        cluster: o.cluster.clone(),
        from: RevisionInfo {
            rev: "live".into(),
            commit: o.previous_revision.clone(),
        },
        to: to.clone(),
        plan: o.plan.clone(),
        warnings: warnings.to_vec(),
    };
    let mut text = render_text(&report, s);
    text.push('\n');
    for k in &o.kept {
        text.push_str(&format!(
            "kept {k}: removed from git, but pruning is disabled for it\n"
        ));
    }
    let line = match o.result {
        apply::Applied::Applied => format!(
            "Applied {} write(s) ({} corrective) in one transaction: live state is now {} (generation {}, {} ms).",
            o.writes,
            o.corrective_writes,
            to.describe(),
            o.generation,
            o.duration_ms
        ),
        apply::Applied::Noop => format!("Nothing to do: the live state already matches {}. Recorded a no-op event.", to.describe()),
        apply::Applied::DryRun => format!("Dry run: {} write(s) would be applied ({} corrective); nothing was written.", o.writes, o.corrective_writes),
    };
    text.push_str(&s.paint(s.bold(), &line));
    text.push('\n');
    text
}
