//! The command line: parses arguments, calls the library, prints, and maps outcomes to
//! exit codes. No logic lives here that a test could not call through the library.
//!
//! Exit codes (docs/cli.md): 0 success / no changes, 1 error (invalid manifests, unknown
//! revision, Redis unreachable, usage error, ...), 2 changes or drift found (`diff`,
//! `drift`, `reconcile --dry-run`).

/// `println!` that ignores a closed stdout (`celeroot ... | head`) instead of panicking.
/// Every byte goes through [`crate::render::terminal_safe`], piece by piece (never copied
/// whole): control characters from outside (heartbeats, commit subjects, manifest values)
/// are shown, never obeyed.
macro_rules! outln {
    () => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock());
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut w = $crate::render::SafeWriter::new(
            std::io::stdout().lock(),
            $crate::cli::colour_on_stdout(),
        );
        let _ = std::fmt::Write::write_fmt(&mut w, format_args!($($arg)*));
        let _ = w.inner.write_all(b"\n");
    }};
}

/// `print!` that ignores a closed stdout, through [`crate::render::terminal_safe`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut w = $crate::render::SafeWriter::new(
            std::io::stdout().lock(),
            $crate::cli::colour_on_stdout(),
        );
        let _ = std::fmt::Write::write_fmt(&mut w, format_args!($($arg)*));
        let _ = w.inner.flush();
    }};
}

/// `eprintln!` through [`crate::render::terminal_safe`].
macro_rules! errln {
    () => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock());
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut w = $crate::render::SafeWriter::new(
            std::io::stderr().lock(),
            $crate::cli::colour_on_stderr(),
        );
        let _ = std::fmt::Write::write_fmt(&mut w, format_args!($($arg)*));
        let _ = w.inner.write_all(b"\n");
    }};
}

/// `eprint!` through [`crate::render::terminal_safe`].
macro_rules! err {
    ($($arg:tt)*) => {{
        let mut w = $crate::render::SafeWriter::new(
            std::io::stderr().lock(),
            $crate::cli::colour_on_stderr(),
        );
        let _ = std::fmt::Write::write_fmt(&mut w, format_args!($($arg)*));
    }};
}

/// The terminal's width when stdout is one (or `COLUMNS`), 0 when unknown.
static WIDTH: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);

/// How listings fit: the terminal's width, and `-o wide` (`wide`) to show every cell in
/// full.
pub fn fit(wide: bool) -> crate::render::Fit {
    let w = WIDTH.load(std::sync::atomic::Ordering::Relaxed);
    crate::render::Fit {
        width: (w > 0).then_some(w),
        wide,
    }
}

/// A listing as text: [`crate::render::Table`], fitted with [`fit`].
pub fn table<const N: usize>(wide: bool, header: &[&str; N], rows: &[[String; N]]) -> String {
    crate::render::Table::new(header.iter().copied())
        .with_rows(rows.iter().map(|r| r.iter().map(String::as_str)))
        .render(fit(wide), &Style::new(false))
}

/// The value of a boolean flag's environment variable (the flag itself gives `true`):
/// empty, `0`, `false`, `no`, `off` are false; `1`, `true`, `yes`, `on` are true (any
/// case); anything else is an error rather than a guess.
pub(crate) fn env_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "no" | "off" | "n" | "f" => Ok(false),
        "1" | "true" | "yes" | "on" | "y" | "t" => Ok(true),
        other => Err(format!(
            "{other:?} is not a boolean: expected true or false (1/0, yes/no, on/off; empty is false)"
        )),
    }
}

/// The width listings fit: the terminal's, when stdout is one; else `COLUMNS`, when set.
fn terminal_width() -> u16 {
    if let Some((terminal_size::Width(w), _)) = terminal_size::terminal_size_of(std::io::stdout()) {
        return w;
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(0)
}

static COLOUR_STDOUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static COLOUR_STDERR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether celeroot writes colour to stdout (so its own SGR sequences pass the filter).
pub fn colour_on_stdout() -> bool {
    COLOUR_STDOUT.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether celeroot writes colour to stderr.
pub fn colour_on_stderr() -> bool {
    COLOUR_STDERR.load(std::sync::atomic::Ordering::Relaxed)
}

mod agent;
mod audit;
mod backup;
mod beat;
mod config;
mod control;
mod deploy;
mod diff;
mod edit;
mod env;
mod error;
mod generate;
mod hosts;
mod import;
mod init;
mod live;
mod observe;
mod reconcile;
mod roles;
mod runs;
mod schedules;
mod schema;
mod task;
mod validate;
mod watch;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::diagnostic::Diagnostic;
use crate::render::Style;
use crate::CompileError;

pub use error::{CommandError, ErrorKind, Untouched};

/// Exit code: success, or no changes.
pub const EXIT_OK: u8 = 0;
/// Exit code: an error (invalid manifests, unknown revision, bad usage, ...).
pub const EXIT_ERROR: u8 = 1;
/// Exit code: changes (or drift) found.
pub const EXIT_CHANGES: u8 = 2;

/// celeroot: GitOps for fleets of Linux hosts running Celery workers.
///
/// Manifests (apiVersion: celeroot.io/v1; kinds Cluster, Role, Host, Schedule) are read
/// straight from git at a revision, validated and compiled.
#[derive(Debug, Parser)]
#[command(name = "celeroot", version, max_term_width = 100)]
pub struct Cli {
    /// The config repository (default: the repository containing the current directory);
    /// `watch` also takes a URL.
    #[arg(long, global = true, value_name = "PATH", env = "CELEROOT_REPO")]
    pub repo: Option<PathBuf>,
    /// Directory of the manifests, relative to the repository root.
    #[arg(long, global = true, value_name = "DIR", default_value = crate::source::DEFAULT_MANIFESTS_PATH, env = "CELEROOT_PATH")]
    pub path: String,
    /// The environment: its manifests are environments/NAME/ of the repository (one
    /// directory per cluster, docs/environments.md). Instead of --path.
    #[arg(
        long = "env",
        global = true,
        value_name = "NAME",
        env = "CELEROOT_ENV",
        conflicts_with = "path"
    )]
    pub env: Option<String>,
    /// Redis holding the live state: redis://[user:password@]host:port/db, rediss:// for TLS.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "CELEROOT_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/0",
        hide_env_values = true
    )]
    pub redis: String,
    /// When to use colour. `auto` colours terminals unless NO_COLOR is set.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Validate(validate::ValidateArgs),
    Diff(diff::DiffArgs),
    Reconcile(reconcile::ReconcileArgs),
    Drift(observe::DriftArgs),
    Status(observe::StatusArgs),
    History(observe::HistoryArgs),
    Rollback(reconcile::RollbackArgs),
    Unlock(observe::UnlockArgs),
    Backup(backup::BackupArgs),
    Audit(audit::AuditArgs),
    Restore(backup::RestoreArgs),
    Schema(schema::SchemaArgs),
    Init(init::InitArgs),
    Task(task::TaskArgs),
    Watch(watch::WatchArgs),
    Suspend(control::SuspendArgs),
    Resume(control::ResumeArgs),
    Sync(control::SyncArgs),
    Events(control::EventsArgs),
    Wait(control::WaitArgs),
    Hosts(hosts::HostsArgs),
    Roles(roles::RolesArgs),
    Schedules(schedules::SchedulesArgs),
    Runs(runs::RunsArgs),
    Health(runs::HealthArgs),
    Checks(runs::ChecksArgs),
    Config(config::ConfigArgs),
    Deploy(deploy::DeployArgs),
    Agent(agent::AgentArgs),
    Beat(beat::BeatArgs),
    Import(import::ImportArgs),
    Env(env::EnvArgs),
    Completions(generate::CompletionsArgs),
    Man(generate::ManArgs),
}

/// Shared context for commands: output styling and the environment.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    pub stdout_style: Style,
    pub stderr_style: Style,
    /// Emit GitHub workflow annotations (`--format github` or `GITHUB_ACTIONS=true`).
    pub github: bool,
    /// Where annotations go: stdout for `validate`, stderr otherwise.
    pub annotations_on_stdout: bool,
}

impl Ui {
    fn new(choice: ColorChoice) -> Self {
        let env_allows = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let forced = std::env::var_os("CLICOLOR_FORCE").is_some_and(|v| !v.is_empty() && v != "0");
        let decide = |tty: bool| match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => env_allows && (forced || tty),
        };
        let (colour_out, colour_err) = (
            decide(std::io::stdout().is_terminal()),
            decide(std::io::stderr().is_terminal()),
        );
        COLOUR_STDOUT.store(colour_out, std::sync::atomic::Ordering::Relaxed);
        COLOUR_STDERR.store(colour_err, std::sync::atomic::Ordering::Relaxed);
        WIDTH.store(terminal_width(), std::sync::atomic::Ordering::Relaxed);
        Ui {
            stdout_style: Style::new(colour_out),
            stderr_style: Style::new(colour_err),
            github: std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true"),
            annotations_on_stdout: false,
        }
    }

    /// Prints diagnostics to stderr, and as workflow annotations when enabled: to stdout
    /// for `validate`, to stderr for commands whose stdout is a document (`diff -o json`).
    pub fn diagnostics(&self, diags: &[Diagnostic]) {
        for d in diags {
            err!("{}", d.render_text(&self.stderr_style));
        }
        if self.github {
            for d in diags {
                if self.annotations_on_stdout {
                    outln!("{}", d.render_github());
                } else {
                    errln!("{}", d.render_github());
                }
            }
        }
    }

    /// Reports a compile error: diagnostics, then a one-line summary.
    pub fn compile_error(&self, e: CompileError) -> CommandError {
        match e {
            CompileError::Source(s) => s.into(),
            CompileError::Invalid {
                revision,
                diagnostics,
            } => {
                self.diagnostics(&diagnostics);
                let errors = diagnostics.iter().filter(|d| d.is_error()).count();
                let warnings = diagnostics.len() - errors;
                CommandError::invalid(format!(
                    "manifests at {} are invalid: {errors} error(s), {warnings} warning(s)",
                    revision.describe()
                ))
                .untouched(Untouched::Changed)
            }
        }
    }
}

/// The time fire times are computed from: `CELEROOT_NOW` (RFC 3339) or the clock.
///
/// # Errors
/// When `CELEROOT_NOW` is set but is not an RFC 3339 timestamp.
pub fn now() -> Result<chrono::DateTime<chrono::Utc>, CommandError> {
    match std::env::var("CELEROOT_NOW") {
        Ok(v) if !v.is_empty() => chrono::DateTime::parse_from_rfc3339(&v)
            .map(|d| d.with_timezone(&chrono::Utc))
            .map_err(|e| {
                CommandError::usage(format!(
                    "CELEROOT_NOW={v:?} is not an RFC 3339 timestamp: {e}"
                ))
            }),
        _ => Ok(chrono::Utc::now()),
    }
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let mut cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_ERROR } else { EXIT_OK });
        }
    };
    let ui = Ui::new(cli.color);
    if let Some(env) = cli.env.clone() {
        match crate::edit::environment_dir(&env) {
            Ok(dir) => cli.path = dir,
            Err(e) => {
                let e = CommandError::usage(format!("--env: {e}"));
                e.print(&ui.stderr_style);
                return ExitCode::from(e.exit_code());
            }
        }
    }
    let result = match &cli.command {
        Command::Validate(a) => validate::run(&ui, &cli, a),
        Command::Diff(a) => diff::run(&ui, &cli, a),
        Command::Reconcile(a) => reconcile::run(&ui, &cli, a),
        Command::Rollback(a) => reconcile::run_rollback(&ui, &cli, a),
        Command::Drift(a) => observe::run_drift(&ui, &cli, a),
        Command::Status(a) => observe::run_status(&ui, &cli, a),
        Command::History(a) => observe::run_history(&ui, &cli, a),
        Command::Unlock(a) => observe::run_unlock(&ui, &cli, a),
        Command::Backup(a) => backup::run_backup(&ui, &cli, a),
        Command::Audit(a) => audit::run(&ui, &cli, a),
        Command::Suspend(a) => control::suspend(&ui, &cli, a),
        Command::Resume(a) => control::resume(&ui, &cli, a),
        Command::Sync(a) => control::sync(&ui, &cli, a),
        Command::Events(a) => control::events(&ui, &cli, a),
        Command::Wait(a) => control::wait(&ui, &cli, a),
        Command::Restore(a) => backup::run_restore(&ui, &cli, a),
        Command::Schema(a) => schema::run(a),
        Command::Init(a) => init::run(&ui, a),
        Command::Task(a) => task::run(&ui, &cli, a),
        Command::Watch(a) => watch::run(&cli, a),
        Command::Hosts(a) => hosts::run(&ui, &cli, a),
        Command::Roles(a) => roles::run(&ui, &cli, a),
        Command::Schedules(a) => schedules::run(&ui, &cli, a),
        Command::Config(a) => config::run(&ui, &cli, a),
        Command::Completions(a) => generate::completions(a),
        Command::Man(a) => generate::man(a),
        Command::Deploy(a) => deploy::run(&ui, &cli, a),
        Command::Agent(a) => agent::run(&cli, a),
        Command::Beat(a) => beat::run(&ui, &cli, a),
        Command::Runs(a) => runs::run(&ui, &cli, a),
        Command::Health(a) => runs::health(&ui, &cli, a),
        Command::Checks(a) => runs::checks(&ui, &cli, a),
        Command::Import(a) => import::run(&ui, &cli, a),
        Command::Env(a) => env::run(&ui, &cli, a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            e.print(&ui.stderr_style);
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn boolean_environment_values() {
        for v in ["", " ", "0", "false", "False", "no", "off"] {
            assert_eq!(super::env_bool(v), Ok(false), "{v:?}");
        }
        for v in ["1", "true", "TRUE", "yes", "on"] {
            assert_eq!(super::env_bool(v), Ok(true), "{v:?}");
        }
        assert!(super::env_bool("maybe").is_err());
    }
}
