//! `celeroot deploy`: ship the worker code of a revision to hosts.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{live, Cli, CommandError, ErrorKind, Ui, Untouched, EXIT_CHANGES, EXIT_ERROR, EXIT_OK};
use crate::apply::Revision;
use crate::deploy::{self, HostResult, Outcome, Report, SshOptions};

/// Ship the worker code of a revision to hosts over SSH: a release per tree, only changed
/// files sent (the rest hard-linked on the host), an atomic switch, restart and health check, automatic rollback,
/// canaries and a failure budget (docs/deploy.md).
///
/// Exit status: 0 every host deployed or up to date; 1 a host failed, was rolled back or
/// skipped, or an error. With --check: 0 all up to date, 2 some out of date, 1 a host
/// could not be inspected.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Deploy these hosts.
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
    /// Deploy the hosts that run these roles.
    #[arg(long = "role", value_name = "NAME")]
    pub roles: Vec<String>,
    /// Deploy every host (the default when no --host or --role is given).
    #[arg(long, conflicts_with_all = ["hosts", "roles"])]
    pub all: bool,
    /// Report which hosts are out of date without changing anything.
    #[arg(long)]
    pub check: bool,
    /// The revision to deploy.
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    #[command(flatten)]
    pub ssh: SshArgs,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

/// How to reach hosts.
#[derive(Debug, Clone, Args)]
pub struct SshArgs {
    /// known_hosts file to check host keys against (default: ssh's, ~/.ssh/known_hosts).
    #[arg(long, value_name = "FILE", env = "CELEROOT_KNOWN_HOSTS")]
    pub known_hosts: Option<PathBuf>,
    /// Accept and record the key of a host seen for the first time (a changed key is
    /// refused regardless).
    #[arg(long)]
    pub accept_new_host_keys: bool,
}

impl SshArgs {
    pub fn options(&self) -> SshOptions {
        SshOptions {
            known_hosts: self.known_hosts.clone(),
            accept_new_host_keys: self.accept_new_host_keys,
            control_dir: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    /// The table with every cell in full.
    Wide,
    Json,
}

pub fn run(ui: &Ui, cli: &Cli, a: &DeployArgs) -> Result<u8, CommandError> {
    let (repo, rev) = live::revision(ui, cli, &a.rev)?;
    let hosts = select(&rev, &a.hosts, &a.roles)?;
    let Some(release) = rev.release.clone() else {
        outln!(
            "Nothing to deploy: {} ships none of {} (deployment.paths).",
            rev.compiled.revision.describe(),
            rev.compiled.state.deploy.paths.join(", ")
        );
        return Ok(EXIT_OK);
    };
    let report = ship(
        cli,
        &repo,
        &rev,
        &release,
        &hosts,
        &a.ssh.options(),
        a.check,
    )?;
    match a.output {
        Format::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        Format::Text | Format::Wide => out!("{}", summary(&report, a.output == Format::Wide)),
    }
    Ok(exit_code(&report))
}

/// The exit status of a rollout (or a check).
pub(super) fn exit_code(r: &Report) -> u8 {
    if !r.succeeded() {
        EXIT_ERROR
    } else if r.check && r.count(Outcome::OutOfDate) > 0 {
        EXIT_CHANGES
    } else {
        EXIT_OK
    }
}

fn select(rev: &Revision, hosts: &[String], roles: &[String]) -> Result<Vec<String>, CommandError> {
    let state = &rev.compiled.state;
    if hosts.is_empty() && roles.is_empty() {
        return Ok(state.hosts.keys().cloned().collect());
    }
    let mut out = BTreeSet::new();
    for h in hosts {
        if !state.hosts.contains_key(h) {
            let mut e = CommandError::invalid(format!(
                "no host named {h:?} at {}",
                rev.compiled.revision.describe()
            ));
            if let Some(s) =
                crate::manifest::did_you_mean(h, state.hosts.keys().map(String::as_str))
            {
                e = e.hinted(format!("did you mean {s:?}?"));
            }
            return Err(e);
        }
        out.insert(h.clone());
    }
    for r in roles {
        let Some(role) = state.roles.get(r) else {
            let mut e = CommandError::invalid(format!(
                "no role named {r:?} at {}",
                rev.compiled.revision.describe()
            ));
            if let Some(s) =
                crate::manifest::did_you_mean(r, state.roles.keys().map(String::as_str))
            {
                e = e.hinted(format!("did you mean {s:?}?"));
            }
            return Err(e);
        };
        out.extend(role.hosts.iter().cloned());
    }
    Ok(out.into_iter().collect())
}

/// Runs the rollout with a progress line per host on stderr; the library records the
/// results in Redis (best effort: a deploy does not need Redis, but drift and status read
/// it).
pub(super) fn ship(
    cli: &Cli,
    repo: &crate::source::Repository,
    rev: &Revision,
    release: &str,
    hosts: &[String],
    ssh: &SshOptions,
    check: bool,
) -> Result<Report, CommandError> {
    let commit = rev.compiled.revision.commit.clone().unwrap_or_default();
    let redis = live::redis_url(cli);
    let actor = crate::apply::actor();
    let shipped = deploy::ship(
        &deploy::Ship {
            repo,
            commit: &commit,
            release,
            state: &rev.compiled.state,
            hosts,
            ssh,
            check,
            redis: redis.as_ref().ok(),
            actor: &actor,
        },
        &Shown::default(),
    )
    .map_err(|e| stage_error(release, e))?;
    match (&redis, shipped.unrecorded) {
        (Err(e), _) if !check => {
            errln!(
                "warning: the deploy was not recorded in Redis: {}",
                e.headline()
            );
        }
        (_, Some(e)) => errln!("warning: the deploy was not recorded in Redis: {e}"),
        _ => {}
    }
    Ok(shipped.report)
}

/// A release that could not be staged locally.
pub(super) fn stage_error(release: &str, e: crate::source::SourceError) -> CommandError {
    CommandError::message(
        ErrorKind::Failed,
        format!("cannot stage release {release}: {e}"),
    )
    .untouched(Untouched::Deployed)
}

/// One line per host on stderr as it finishes.
/// One finished host, as a line.
fn host_line(r: &HostResult) -> String {
    let detail = r
        .detail
        .as_deref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    format!(
        "{}: {}{} ({} file(s), {} byte(s) sent, {} ms){detail}",
        r.host,
        r.outcome.label(),
        r.current
            .as_deref()
            .map(|c| format!(" {c}"))
            .unwrap_or_default(),
        r.files_sent,
        r.bytes_sent,
        r.duration_ms
    )
}

/// A rollout's progress on standard error: what it is about to do, then one line per host
/// as it finishes; on a terminal also a live bar (`indicatif`) under those lines, removed
/// at the end. Piped, only the lines.
#[derive(Default)]
pub(super) struct Shown {
    bar: std::sync::Mutex<Option<indicatif::ProgressBar>>,
}

impl Shown {
    fn bar(&self) -> std::sync::MutexGuard<'_, Option<indicatif::ProgressBar>> {
        self.bar
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl deploy::Progress for Shown {
    fn start(&self, plan: &deploy::Announcement) {
        let text = plan.to_string();
        let mut chars = text.chars();
        let text: String = chars
            .next()
            .map(|c| c.to_uppercase().chain(chars).collect())
            .unwrap_or_default();
        errln!("{text}…");
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) && plan.hosts > 1 {
            let style = indicatif::ProgressStyle::with_template(
                "{spinner} [{bar:30}] {pos}/{len} host(s), {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
            let bar = indicatif::ProgressBar::new(plan.hosts as u64).with_style(style);
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            *self.bar() = Some(bar);
        }
    }

    fn host(&self, r: &HostResult) {
        let line = host_line(r);
        match self.bar().as_ref() {
            Some(bar) => {
                bar.println(crate::render::terminal_safe(&line, false));
                bar.inc(1);
            }
            None => errln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar().take() {
            bar.finish_and_clear();
        }
    }
}

pub(super) fn summary(r: &Report, wide: bool) -> String {
    let mut out = String::new();
    let head = [
        "HOST", "RESULT", "RELEASE", "PREVIOUS", "FILES", "BYTES", "TIME",
    ];
    let rows: Vec<[String; 7]> = r
        .hosts
        .iter()
        .map(|h| {
            [
                if h.canary {
                    format!("{} (canary)", h.host)
                } else {
                    h.host.clone()
                },
                h.outcome.label().to_string(),
                h.current.clone().unwrap_or_else(|| "-".into()),
                h.previous.clone().unwrap_or_else(|| "-".into()),
                h.files_sent.to_string(),
                h.bytes_sent.to_string(),
                format!("{} ms", h.duration_ms),
            ]
        })
        .collect();
    out.push_str(&super::table(wide, &head, &rows));
    for h in r.hosts.iter().filter(|h| h.detail.is_some()) {
        let _ = writeln!(out, "{}: {}", h.host, h.detail.clone().unwrap_or_default());
    }
    let _ = writeln!(out);
    if let Some(why) = &r.stopped {
        let _ = writeln!(out, "The rollout stopped: {why}.");
    }
    let _ = if r.check {
        writeln!(
            out,
            "Release {}: {} up to date, {} out of date, {} failed to answer.",
            r.release,
            r.count(Outcome::UpToDate),
            r.count(Outcome::OutOfDate),
            r.count(Outcome::Failed)
        )
    } else {
        writeln!(
            out,
            "Release {}: {} deployed, {} up to date, {} rolled back, {} failed, {} skipped.",
            r.release,
            r.count(Outcome::Deployed),
            r.count(Outcome::UpToDate),
            r.count(Outcome::RolledBack),
            r.count(Outcome::Failed),
            r.count(Outcome::Skipped)
        )
    };
    out
}
