//! `celeroot task run|status|result|revoke`: send a task to Celery workers now, read its
//! results from the result backend, revoke it. The wire formats live in `crate::celery`;
//! this file resolves targets against the compiled manifests, checks input, and prints.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value as Json};

use super::{Cli, CommandError, ErrorKind, Ui, Untouched, EXIT_OK};
use crate::celery::{
    self, message, Broker, BrokerUrl, Heard, QueueType, ResultBackend, TaskRequest, TaskResult,
    TaskState, Waited,
};
use crate::desired::targets::{self, Target, Unresolved};
use crate::desired::{DesiredState, ScheduleEntry};
use crate::manifest::Mode;
use crate::render::{Style, Table};
use crate::source;
use crate::state::RedisUrl;

/// Lines of a traceback shown under a failed task in `task run --wait`.
const TRACEBACK_TAIL: usize = 3;
/// How often `--wait` reads the result backend.
const POLL: Duration = Duration::from_millis(100);
/// Results longer than this are cut in tables (`task result ID` prints them whole).
const RESULT_WIDTH: usize = 120;
/// Default for `--timeout`.
const DEFAULT_TIMEOUT_SECS: f64 = 60.0;
/// kombu's default `visibility_timeout`: an ETA further away than this runs twice.
const VISIBILITY_TIMEOUT_SECS: f64 = 3600.0;

/// Send a task to Celery workers now, read results, revoke.
///
/// Messages go straight to the broker (Celery protocol v2 on the kombu Redis transport);
/// results are read from Celery's Redis result backend. Both default to the live-state
/// Redis (--redis). See docs/celery.md.
#[derive(Debug, Args)]
pub struct TaskArgs {
    #[command(subcommand)]
    pub command: TaskCommand,
    /// The Celery broker (the workers' CELEROOT_BROKER_URL): Redis, or amqp:// for
    /// RabbitMQ (the Cluster's broker.transport). Default: the --redis URL.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "CELEROOT_BROKER_URL",
        hide_env_values = true
    )]
    pub broker: Option<String>,
    /// Celery's result backend (the workers' CELEROOT_RESULT_BACKEND). Default: a Redis
    /// broker, or --redis with RabbitMQ.
    #[arg(
        long = "result-backend",
        global = true,
        value_name = "URL",
        env = "CELEROOT_RESULT_BACKEND",
        hide_env_values = true
    )]
    pub result_backend: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    Run(RunArgs),
    Status(StatusArgs),
    Result(ResultArgs),
    Revoke(RevokeArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunMode {
    /// One message per matched host, on the host's own queue.
    Each,
    /// One message per role, on the role's queue: any one of its workers runs it.
    Any,
}

/// Send a task now: one message per matched host (each) or per role (any).
///
/// Targets resolve against the compiled manifests at --rev; nothing is sent when the
/// manifests are invalid, a target does not resolve, or the input is not valid.
///
/// Exit status: 0 sent (with --wait: every task succeeded), 1 error, a failed, revoked or
/// unfinished task.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The registered Celery task name, e.g. celeroot.ping.
    #[arg(value_name = "TASK")]
    pub task: String,
    /// Where to send it: role:NAME, host:NAME or selector:KEY=VALUE[,KEY=VALUE...] (as in
    /// the editing commands; label:KEY=VALUE is accepted too). Repeat for several.
    #[arg(long = "target", value_name = "TARGET", required = true)]
    pub targets: Vec<String>,
    /// each: one message per matched host (its host queue); any: one message per role
    /// (the role queue; role targets only).
    #[arg(long, value_enum, default_value_t = RunMode::Each)]
    pub mode: RunMode,
    /// Positional arguments, a JSON array, e.g. '[1, "a"]'.
    #[arg(long = "args", value_name = "JSON")]
    pub args_json: Option<String>,
    /// Keyword arguments, a JSON object, e.g. '{"dry_run": true}'.
    #[arg(long = "kwargs", value_name = "JSON")]
    pub kwargs_json: Option<String>,
    /// Run no earlier than this long from now: seconds (2.5) or a duration (90s, 5m).
    #[arg(long, value_name = "S")]
    pub countdown: Option<String>,
    /// Discard the task (REVOKED, "expired") if it has not started this long from now.
    #[arg(long, value_name = "S")]
    pub expires: Option<String>,
    /// Wait for the results and print them; exit 1 unless every task succeeded.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: how long to wait [default: 60].
    #[arg(long, value_name = "S", requires = "wait")]
    pub timeout: Option<String>,
    /// The revision whose manifests the targets resolve against.
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
}

/// Show the state of tasks in the result backend, and the run record of those a schedule
/// sent (docs/runs.md).
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Task ids, as `task run` (or `celeroot runs`) prints them.
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<String>,
    /// The cluster whose run history to look in (default: the name in the manifests at
    /// HEAD; without a readable HEAD, the run history is not shown).
    #[arg(long)]
    pub cluster: Option<String>,
}

/// Print a task's result as JSON.
///
/// Exit status: 0 SUCCESS; 1 FAILURE (the traceback is printed), REVOKED, no result yet
/// (PENDING) or not finished.
#[derive(Debug, Args)]
pub struct ResultArgs {
    /// The task id.
    #[arg(value_name = "ID")]
    pub id: String,
}

/// Revoke tasks through Celery's remote control (a broadcast to every worker).
///
/// Workers that receive it skip the task (or, with --terminate, kill the process running
/// it) and record it as REVOKED. Exit status: 0 delivered to at least one worker, 1 no
/// worker listening or error.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Task ids.
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<String>,
    /// Also terminate the task if it is running (SIGTERM; prefork pool only).
    #[arg(long)]
    pub terminate: bool,
}

pub fn run(ui: &Ui, cli: &Cli, args: &TaskArgs) -> Result<u8, CommandError> {
    match &args.command {
        TaskCommand::Run(a) => run_task(ui, cli, args, a),
        TaskCommand::Status(a) => run_status(ui, cli, args, a),
        TaskCommand::Result(a) => run_result(cli, args, a),
        TaskCommand::Revoke(a) => run_revoke(cli, args, a),
    }
}

// ---------------------------------------------------------------------------------------
// URLs and connections

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// The broker URL: --broker / CELEROOT_BROKER_URL, else --redis.
fn broker_url(cli: &Cli, args: &TaskArgs) -> Result<BrokerUrl, CommandError> {
    let raw = non_empty(&args.broker).unwrap_or(&cli.redis);
    BrokerUrl::parse(raw)
        .map_err(|e| CommandError::usage(format!("--broker (default: --redis): {e}")))
}

/// The result backend URL: --result-backend / CELEROOT_RESULT_BACKEND, else a Redis
/// broker, else --redis (as the agent gives its workers).
fn backend_url(cli: &Cli, args: &TaskArgs) -> Result<RedisUrl, CommandError> {
    match non_empty(&args.result_backend) {
        Some(raw) => {
            RedisUrl::parse(raw).map_err(|e| CommandError::usage(format!("--result-backend: {e}")))
        }
        None => match broker_url(cli, args)? {
            BrokerUrl::Redis(u) => Ok(u),
            BrokerUrl::Amqp(_) => RedisUrl::parse(&cli.redis)
                .map_err(|e| CommandError::usage(format!("--redis: {e}"))),
        },
    }
}

/// The broker the Cluster manifest chose must be the one the URL names; RabbitMQ's
/// queues are declared as the manifest says (the workers declare them the same way).
fn check_transport(state: &DesiredState, url: &BrokerUrl) -> Result<QueueType, CommandError> {
    use crate::manifest::{AmqpQueueType, BrokerTransport};
    let want = match state.broker.transport {
        BrokerTransport::Redis => "redis",
        BrokerTransport::Amqp => "amqp",
    };
    if url.transport() != want {
        return Err(CommandError::usage(format!(
            "the broker URL {url} is {}, but the Cluster manifest's broker.transport is {want}",
            match url {
                BrokerUrl::Redis(_) => "Redis",
                BrokerUrl::Amqp(_) => "AMQP (RabbitMQ)",
            }
        ))
        .hinted("give --broker / CELEROOT_BROKER_URL the workers' broker, or change spec.broker.transport of the Cluster"));
    }
    Ok(match state.broker.queue_type {
        AmqpQueueType::Quorum => QueueType::Quorum,
        AmqpQueueType::Classic => QueueType::Classic,
    })
}

// ---------------------------------------------------------------------------------------
// Input

/// Parses a JSON option, pointing at the offending column on error.
fn json_option(option: &str, text: &str, example: &str) -> Result<Json, CommandError> {
    serde_json::from_str(text).map_err(|e| {
        let mut msg = format!("{option} is not valid JSON: {e}");
        // Show the line with a caret under the column serde_json reports.
        if let Some(line) = text.lines().nth(e.line().saturating_sub(1)) {
            let col = e.column().max(1);
            let caret_pad: String = line
                .chars()
                .take(col - 1)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = write!(msg, "\n  | {line}\n  | {caret_pad}^");
        }
        CommandError::usage(msg).hinted(format!(
            "{option} takes a JSON {example}; quote it for the shell"
        ))
    })
}

fn parse_args_json(text: Option<&str>) -> Result<Vec<Json>, CommandError> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    match json_option("--args", text, "array, e.g. --args '[1, \"a\"]'")? {
        Json::Array(a) => Ok(a),
        other => Err(CommandError::usage(format!(
            "--args must be a JSON array of positional arguments, not {}",
            json_kind(&other)
        ))
        .hinted("wrap a single argument in brackets: --args '[42]'")),
    }
}

fn parse_kwargs_json(text: Option<&str>) -> Result<Map<String, Json>, CommandError> {
    let Some(text) = text else {
        return Ok(Map::new());
    };
    match json_option(
        "--kwargs",
        text,
        "object, e.g. --kwargs '{\"dry_run\": true}'",
    )? {
        Json::Object(m) => Ok(m),
        other => Err(CommandError::usage(format!(
            "--kwargs must be a JSON object of keyword arguments, not {}",
            json_kind(&other)
        ))),
    }
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Seconds: a number (`2.5`) or a duration (`90s`, `5m`, `1h30m`).
fn parse_seconds(option: &str, text: &str) -> Result<f64, CommandError> {
    let t = text.trim();
    let secs = match t.parse::<f64>() {
        Ok(n) => n,
        Err(_) => crate::desired::schedule::parse_duration(t)
            .map(|n| n as f64)
            .map_err(|e| {
                CommandError::usage(format!(
                    "{option} {text:?}: expected seconds (a number such as 30 or 2.5) or a duration; {e}"
                ))
            })?,
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(CommandError::invalid(format!(
            "{option} {text:?}: expected a number of seconds, zero or more"
        )));
    }
    Ok(secs)
}

/// The producer name in the `origin` header: `celeroot@<hostname>`.
fn origin() -> String {
    format!("celeroot@{}", crate::state::events::hostname())
}

// ---------------------------------------------------------------------------------------
// Targets

/// Resolves targets against the compiled state: hosts (mode each) or roles (mode any).
/// Anything that does not resolve stops the command, with hints.
fn resolve(
    state: &DesiredState,
    targets: &[Target],
    mode: RunMode,
    at: &str,
) -> Result<Vec<ScheduleEntry>, CommandError> {
    let mode = match mode {
        RunMode::Each => Mode::Each,
        RunMode::Any => Mode::Any,
    };
    let r = targets::resolve(targets, mode, state);
    if r.unresolved.is_empty() {
        return Ok(r.entries);
    }
    let names = |m: Vec<&String>| m.into_iter().cloned().collect::<Vec<_>>().join(", ");
    let mut hints: BTreeSet<String> = BTreeSet::new();
    for u in &r.unresolved {
        match u {
            Unresolved::NoRole(_) => {
                hints.insert(format!(
                    "roles at {at}: {}",
                    names(state.roles.keys().collect())
                ));
            }
            Unresolved::NoHost(_) => {
                hints.insert(format!(
                    "hosts at {at}: {}",
                    names(state.hosts.keys().collect())
                ));
            }
            Unresolved::NotARole(_) => {
                hints.insert("use --mode each to send to hosts, or --target role:NAME".into());
            }
            Unresolved::EmptyRole { .. } | Unresolved::NoMatch(_) => {}
        }
    }
    let problems: Vec<String> = r.unresolved.iter().map(ToString::to_string).collect();
    let mut err = CommandError::invalid(format!(
        "target{} not resolved at {at}: {}",
        if problems.len() == 1 { "" } else { "s" },
        problems.join("; ")
    ));
    for h in hints {
        err = err.hinted(h);
    }
    Err(err)
}

/// `host/NAME` or `role/NAME`.
fn label(e: &ScheduleEntry) -> String {
    format!("{}/{}", e.kind, e.name)
}

// ---------------------------------------------------------------------------------------
// task run

/// What `task run` checked before sending anything.
struct Prepared {
    req: TaskRequest,
    timeout: f64,
    broker_url: BrokerUrl,
    backend_url: RedisUrl,
    at: String,
    destinations: Vec<ScheduleEntry>,
    broker: Broker,
    backend: Option<ResultBackend>,
}

/// Steps 1 to 3 of `task run`: every check, and the connections. Sends nothing.
fn prepare(ui: &Ui, cli: &Cli, targs: &TaskArgs, a: &RunArgs) -> Result<Prepared, CommandError> {
    // 1. Everything that can be checked without git or Redis.
    message::validate_task_name(&a.task).map_err(CommandError::invalid)?;
    let targets: Vec<Target> = a
        .targets
        .iter()
        .map(|t| {
            t.parse::<Target>()
                .map_err(|e| CommandError::new(ErrorKind::Usage, e))
        })
        .collect::<Result<_, _>>()?;
    let args = parse_args_json(a.args_json.as_deref())?;
    let kwargs = parse_kwargs_json(a.kwargs_json.as_deref())?;
    for (name, v) in [
        ("--args", Json::Array(args.clone())),
        ("--kwargs", Json::Object(kwargs.clone())),
    ] {
        if let Some(path) = message::find_kombu_tagged(&v, "") {
            return Err(CommandError::invalid(format!(
                "{name}: the object at {name}{path} has exactly the keys __type__ and __value__, which Celery's JSON decoder reads as a tagged value, not as data"
            )));
        }
    }
    let countdown = a
        .countdown
        .as_deref()
        .map(|t| parse_seconds("--countdown", t))
        .transpose()?;
    let expires = a
        .expires
        .as_deref()
        .map(|t| parse_seconds("--expires", t))
        .transpose()?;
    if let Some(e) = expires {
        if e <= countdown.unwrap_or(0.0) {
            return Err(CommandError::usage(format!(
                "--expires {e}s must be later than --countdown {}s: the task would expire before it may run",
                countdown.unwrap_or(0.0)
            )));
        }
    }
    let timeout = match a.timeout.as_deref() {
        Some(t) => parse_seconds("--timeout", t)?,
        None => DEFAULT_TIMEOUT_SECS,
    };
    let broker_url = broker_url(cli, targs)?;
    let backend_url = backend_url(cli, targs)?;

    // 2. Compile the manifests and resolve the targets.
    let repo = source::open_repo(cli.repo.as_deref())?;
    let snapshot = source::read_git(&repo, &a.rev, &cli.path)?;
    let compiled = crate::compile_snapshot(snapshot).map_err(|e| ui.compile_error(e))?;
    ui.diagnostics(&compiled.warnings);
    let at = compiled.revision.describe();
    let destinations = resolve(&compiled.state, &targets, a.mode, &at)?;
    let queue_type = check_transport(&compiled.state, &broker_url)?;

    // The visibility timeout is the Redis transport's: RabbitMQ holds an unacknowledged
    // message for as long as the worker's connection lives.
    let on_redis = matches!(broker_url, BrokerUrl::Redis(_));
    if let Some(c) = countdown.filter(|&c| on_redis && c > VISIBILITY_TIMEOUT_SECS) {
        let s = &ui.stderr_style;
        errln!(
            "{}: --countdown {c}s is longer than the broker's visibility timeout (1h by default): the worker may run the task twice unless broker_transport_options.visibility_timeout is raised",
            s.paint(s.yellow(), "warning")
        );
    }

    // 3. Connect (the result backend too, so an unreachable one stops us before sending).
    let broker = Broker::connect(&broker_url, queue_type)?;
    let backend = if a.wait {
        Some(ResultBackend::connect(&backend_url)?)
    } else {
        None
    };

    Ok(Prepared {
        req: TaskRequest {
            task: a.task.clone(),
            args,
            kwargs,
            countdown,
            expires,
            origin: origin(),
        },
        timeout,
        broker_url,
        backend_url,
        at,
        destinations,
        broker,
        backend,
    })
}

fn run_task(ui: &Ui, cli: &Cli, targs: &TaskArgs, a: &RunArgs) -> Result<u8, CommandError> {
    let Prepared {
        req,
        timeout,
        broker_url,
        backend_url,
        at,
        destinations,
        mut broker,
        mut backend,
    } = prepare(ui, cli, targs, a).map_err(|e| e.untouched(Untouched::Sent))?;

    // 4. Build and send, all in one transaction.
    let sent_at = chrono::Utc::now();
    let messages: Vec<_> = destinations
        .iter()
        .map(|d| celery::build(&req, &d.queue, sent_at))
        .collect();
    broker.send(&messages).map_err(|e| match e {
        // Some messages may be on their queues: do not say nothing was sent.
        e @ celery::CeleryError::NotConfirmed { sent, .. } if sent > 0 => CommandError::from(e),
        e => CommandError::from(e).untouched(Untouched::Sent),
    })?;

    let s = &ui.stdout_style;
    let what = match a.mode {
        RunMode::Each => plural(destinations.len(), "host"),
        RunMode::Any => plural(destinations.len(), "role"),
    };
    outln!(
        "{}",
        s.paint(
            s.bold(),
            &format!(
                "Sent {} to {what} (mode {}, targets at {at}) via {broker_url}:",
                a.task,
                match a.mode {
                    RunMode::Each => "each",
                    RunMode::Any => "any",
                }
            )
        )
    );
    let rows: Vec<Vec<String>> = destinations
        .iter()
        .zip(&messages)
        .map(|(d, m)| vec![label(d), m.id.clone(), d.queue.clone()])
        .collect();
    out!("{}", table(&["TARGET", "TASK ID", "QUEUE"], &rows, s));

    let Some(backend) = backend.as_mut() else {
        return Ok(EXIT_OK);
    };

    // 5. Wait.
    outln!(
        "\nWaiting up to {} for {} in {backend_url}...",
        secs_text(timeout),
        plural(messages.len(), "result")
    );
    let ids: Vec<String> = messages.iter().map(|m| m.id.clone()).collect();
    let waited = backend.wait(&ids, Duration::from_secs_f64(timeout), POLL)?;
    let labels: Vec<String> = destinations.iter().map(label).collect();
    let (text, tally) = wait_table(&labels, &waited, sent_at, timeout, s);
    outln!();
    out!("{text}");
    outln!("\n{}", tally.sentence());
    if tally.all_succeeded() {
        return Ok(EXIT_OK);
    }
    let mut err = CommandError::failed(format!(
        "{} of {} did not succeed",
        tally.total - tally.succeeded,
        plural(tally.total, "task")
    ))
    .hinted("see a whole result with `celeroot task result ID`");
    if tally.timed_out > 0 {
        err = err.hinted("a task that timed out may still run: `celeroot task status ID` shows it later, `celeroot task revoke ID` cancels it");
    }
    Err(err)
}

#[derive(Debug, Default)]
struct Tally {
    total: usize,
    succeeded: usize,
    failed: usize,
    revoked: usize,
    timed_out: usize,
    unreadable: usize,
}

impl Tally {
    fn all_succeeded(&self) -> bool {
        self.succeeded == self.total
    }

    fn sentence(&self) -> String {
        let mut parts = vec![format!("{} succeeded", self.succeeded)];
        for (n, what) in [
            (self.failed, "failed"),
            (self.revoked, "revoked"),
            (self.timed_out, "timed out"),
            (self.unreadable, "unreadable"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        format!("{}.", parts.join(", "))
    }
}

/// The per-target table of `task run --wait`, with traceback tails under failures.
fn wait_table(
    labels: &[String],
    waited: &[Waited],
    sent_at: chrono::DateTime<chrono::Utc>,
    timeout: f64,
    s: &Style,
) -> (String, Tally) {
    let mut tally = Tally {
        total: waited.len(),
        ..Tally::default()
    };
    let mut rows = Vec::new();
    let mut extra: Vec<Vec<String>> = Vec::new();
    for (label, w) in labels.iter().zip(waited) {
        let (state, time, result, tail) = match &w.result {
            Err(e) => {
                tally.unreadable += 1;
                (
                    "UNREADABLE".to_string(),
                    "-".to_string(),
                    e.clone(),
                    Vec::new(),
                )
            }
            Ok(r) if w.timed_out => {
                tally.timed_out += 1;
                (
                    r.state.to_string(),
                    "-".to_string(),
                    format!("timed out after {}", secs_text(timeout)),
                    Vec::new(),
                )
            }
            Ok(r) => {
                match r.state {
                    TaskState::Success => tally.succeeded += 1,
                    TaskState::Revoked => tally.revoked += 1,
                    _ => tally.failed += 1,
                }
                let time = runtime(r, sent_at, w.seen_after);
                let tail = if r.state == TaskState::Success {
                    Vec::new()
                } else {
                    r.traceback_tail(TRACEBACK_TAIL)
                };
                (r.state.to_string(), time, cut(&r.summary()), tail)
            }
        };
        rows.push(vec![label.clone(), state, time, result]);
        extra.push(tail);
    }
    let headers = ["TARGET", "STATE", "TIME", "RESULT"];
    let lines = Table::new(headers)
        .indent(2)
        .with_rows(rows.iter().map(|r| r.iter().map(String::as_str)))
        .lines(super::fit(false));
    let mut out = String::new();
    let mut lines = lines.into_iter();
    let head = lines.next().unwrap_or_default();
    // Traceback tails sit under the RESULT column.
    let indent = head.find("RESULT").unwrap_or(2);
    let _ = writeln!(out, "  {}", s.paint(s.bold(), head.trim_start()));
    for ((line, row), tail) in lines.zip(&rows).zip(extra) {
        let painted = match row[1].as_str() {
            "SUCCESS" => line.replacen("SUCCESS", &s.paint(s.green(), "SUCCESS"), 1),
            "PENDING" | "STARTED" | "RETRY" => line,
            other => line.replacen(other, &s.paint(s.red(), other), 1),
        };
        let _ = writeln!(out, "{painted}");
        for l in tail {
            let _ = writeln!(
                out,
                "{}{}",
                " ".repeat(indent),
                s.paint(s.dim(), &format!("| {l}"))
            );
        }
    }
    (out, tally)
}

/// From sending to `date_done` (when the worker's clock agrees), else to when celeroot
/// saw the result.
fn runtime(
    r: &TaskResult,
    sent_at: chrono::DateTime<chrono::Utc>,
    seen_after: Option<Duration>,
) -> String {
    let from_done = r
        .date_done
        .map(|d| (d - sent_at).num_microseconds().unwrap_or(-1))
        .filter(|&us| us >= 0)
        .map(|us| us as f64 / 1e6);
    match from_done.or(seen_after.map(|d| d.as_secs_f64())) {
        Some(secs) => secs_text(secs),
        None => "-".into(),
    }
}

fn secs_text(secs: f64) -> String {
    if secs < 1.0 {
        format!("{}ms", (secs * 1000.0).round() as u64)
    } else if secs < 60.0 {
        let t = format!("{secs:.1}");
        format!("{}s", t.strip_suffix(".0").unwrap_or(&t))
    } else {
        crate::desired::schedule::format_duration(secs.round() as u64)
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn cut(s: &str) -> String {
    if s.chars().count() <= RESULT_WIDTH {
        return s.to_string();
    }
    let mut t: String = s.chars().take(RESULT_WIDTH - 1).collect();
    t.push('…');
    t
}

fn table(headers: &[&str], rows: &[Vec<String>], s: &Style) -> String {
    Table::new(headers.iter().copied())
        .indent(2)
        .with_rows(rows.iter().map(|r| r.iter().map(String::as_str)))
        .render(super::fit(false), s)
}

// ---------------------------------------------------------------------------------------
// task status / result / revoke

fn run_status(ui: &Ui, cli: &Cli, targs: &TaskArgs, a: &StatusArgs) -> Result<u8, CommandError> {
    let url = backend_url(cli, targs)?;
    let mut backend = ResultBackend::connect(&url)?;
    let results = backend.get_many(&a.ids)?;
    let rows: Vec<Vec<String>> = a
        .ids
        .iter()
        .zip(results)
        .map(|(id, r)| match r {
            Ok(r) => vec![
                id.clone(),
                r.state.to_string(),
                r.date_done
                    .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                    .unwrap_or_else(|| "-".into()),
                r.worker.clone().unwrap_or_else(|| "-".into()),
                cut(&r.summary()),
            ],
            Err(e) => vec![
                id.clone(),
                "UNREADABLE".into(),
                "-".into(),
                "-".into(),
                cut(&e),
            ],
        })
        .collect();
    out!(
        "{}",
        table(
            &["TASK ID", "STATE", "DONE", "WORKER", "RESULT"],
            &rows,
            &ui.stdout_style
        )
    );
    print_run_records(ui, cli, a)?;
    Ok(EXIT_OK)
}

/// The run records of the ids that were schedule runs, under the result table.
fn print_run_records(ui: &Ui, cli: &Cli, a: &StatusArgs) -> Result<(), CommandError> {
    let cluster = match &a.cluster {
        Some(_) => super::observe::cluster_name(ui, cli, &a.cluster)?,
        // Outside a config repository (or with an invalid HEAD) there is no cluster to
        // look in: the results alone are what was asked for.
        None => match crate::source::open_repo(cli.repo.as_deref())
            .ok()
            .and_then(|r| crate::apply::load_revision(&r, "HEAD", &cli.path).ok())
        {
            Some(rev) => rev.compiled.state.cluster.clone(),
            None => return Ok(()),
        },
    };
    let mut store = super::live::connect(cli, &cluster)?;
    let mut rows = Vec::new();
    for id in &a.ids {
        if let Some(r) = store.run_by_id(id)? {
            rows.push(vec![
                r.id.clone(),
                r.schedule.clone(),
                r.target.clone(),
                r.host.clone().unwrap_or_else(|| "-".into()),
                r.state.clone(),
                super::runs::utc_text(r.fired),
            ]);
        }
    }
    if !rows.is_empty() {
        outln!();
        outln!("Schedule runs (celeroot runs):");
        out!(
            "{}",
            table(
                &[
                    "TASK ID",
                    "SCHEDULE",
                    "TARGET",
                    "HOST",
                    "STATE",
                    "FIRED (UTC)"
                ],
                &rows,
                &ui.stdout_style
            )
        );
    }
    Ok(())
}

fn run_result(cli: &Cli, targs: &TaskArgs, a: &ResultArgs) -> Result<u8, CommandError> {
    let url = backend_url(cli, targs)?;
    let mut backend = ResultBackend::connect(&url)?;
    let r = backend.get(&a.id)?.map_err(CommandError::invalid)?;
    let id = &a.id;
    match r.state {
        TaskState::Success => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&r.result).unwrap_or_default()
            );
            Ok(EXIT_OK)
        }
        TaskState::Failure => {
            match &r.traceback {
                Some(tb) => out!("{}{}", tb, if tb.ends_with('\n') { "" } else { "\n" }),
                None => outln!(
                    "{}",
                    serde_json::to_string_pretty(&r.result).unwrap_or_default()
                ),
            }
            Err(CommandError::failed(format!(
                "task {id} failed: {}",
                r.summary()
            )))
        }
        TaskState::Revoked => Err(CommandError::failed(format!(
            "task {id} was revoked: {}",
            r.summary()
        ))),
        TaskState::Pending => Err(CommandError::invalid(format!(
            "task {id} has no result in {url}: PENDING (not run yet, an unknown id, a task that ignores its result, or a result older than the backend keeps it, 1 day by default)"
        ))
        .hinted("check the id, --result-backend, and that a worker consumes the task's queue")),
        ref other => Err(CommandError::failed(format!(
            "task {id} has not finished: {other}{}",
            match r.summary() {
                s if s.is_empty() => String::new(),
                s => format!(" ({s})"),
            }
        ))),
    }
}

fn run_revoke(cli: &Cli, targs: &TaskArgs, a: &RevokeArgs) -> Result<u8, CommandError> {
    let url = broker_url(cli, targs)?;
    let mut broker = Broker::connect(&url, QueueType::default())?;
    let mut unheard = Vec::new();
    for id in &a.ids {
        let now = chrono::Utc::now();
        let heard = broker.revoke(id, a.terminate, now)?;
        let reached = match heard {
            Heard::Count(n) => plural(usize::try_from(n).unwrap_or(0), "listening worker"),
            Heard::Some => "the listening workers".to_string(),
            Heard::Nobody => plural(0, "listening worker"),
        };
        outln!(
            "Revoke{} of {id} broadcast to {reached} via {url}.",
            if a.terminate { " (terminate)" } else { "" },
        );
        if heard == Heard::Nobody {
            unheard.push(id.clone());
        }
    }
    if unheard.is_empty() {
        Ok(EXIT_OK)
    } else {
        Err(CommandError::failed(format!(
            "no worker is listening for remote control on {url}: the revoke of {} reached nobody",
            unheard.join(", ")
        ))
        .hinted("workers keep revoked ids in memory only: a worker started later runs the task; start the workers, then revoke again"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_parse() {
        let p = |t: &str| parse_seconds("--x", t).map_err(|e| e.headline());
        assert_eq!(p("2.5"), Ok(2.5));
        assert_eq!(p("90s"), Ok(90.0));
        assert_eq!(p("1h30m"), Ok(5400.0));
        assert!(p("-1").is_err());
        assert!(p("soon").is_err());
        assert!(p("inf").is_err());
    }

    #[test]
    fn json_errors_point_at_the_column() {
        let e = parse_args_json(Some("[1, oops]"))
            .err()
            .map(|e| e.headline());
        let msg = e.unwrap_or_default();
        assert!(msg.contains("line 1 column 5"), "{msg}");
        assert!(msg.contains("  | [1, oops]\n  |     ^"), "{msg}");
        let e = parse_args_json(Some("{\"a\": 1}"))
            .err()
            .map(|e| e.headline());
        assert!(e.unwrap_or_default().contains("must be a JSON array"));
        let e = parse_kwargs_json(Some("[1]")).err().map(|e| e.headline());
        assert!(e.unwrap_or_default().contains("must be a JSON object"));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(secs_text(0.0042), "4ms");
        assert_eq!(secs_text(0.36), "360ms");
        assert_eq!(secs_text(1.0), "1s");
        assert_eq!(secs_text(2.46), "2.5s");
        assert_eq!(secs_text(61.0), "1m1s");
    }
}
