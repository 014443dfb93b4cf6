//! The command line's one error type, like jj's `command_error.rs`: what went wrong (a
//! library error, its `#[source]` chain kept), what kind of failure it is (mapped once to
//! the documented exit code), what the command did not do ("nothing was sent"), and
//! hints. Printed in one place, [`CommandError::print`].
//!
//! Library errors say what happened; only this module knows flags and commands, so every
//! hint naming one is added here (or by the command that has the flag).

use std::error::Error as StdError;
use std::fmt;

use super::EXIT_ERROR;
use crate::apply::{ApplyError, DeployError};
use crate::celery::{CeleryError, Endpoint};
use crate::daemon::DaemonError;
use crate::deploy::credentials::CredentialsError;
use crate::edit::{EditError, InUse};
use crate::init::InitError;
use crate::manifest::Kind;
use crate::render::Style;
use crate::source::SourceError;
use crate::state::StateError;

/// What kind of failure: decides the exit code and nothing else. Every kind exits 1 today
/// (docs/cli.md); the kinds keep the mapping in one place for when that changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The command line itself: a bad flag value, a flag combination that cannot work.
    Usage,
    /// The input is wrong: invalid manifests, an unknown revision or object.
    Invalid,
    /// A service (Redis, a broker, a host) could not be reached or refused.
    Unavailable,
    /// Someone else holds what the command needs (the lease), or changed it meanwhile.
    Conflict,
    /// A guard refused the change (mass delete, rollback) until it is confirmed.
    Refused,
    /// The command ran and the thing it reports failed (a task, a deploy).
    Failed,
}

impl ErrorKind {
    /// The process exit code for this kind.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Usage
            | ErrorKind::Invalid
            | ErrorKind::Unavailable
            | ErrorKind::Conflict
            | ErrorKind::Refused
            | ErrorKind::Failed => EXIT_ERROR,
        }
    }
}

/// What the command did not do, stated after the message: a fact carried as data, not
/// patched into strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untouched {
    /// Nothing was written anywhere (Redis, files).
    Written,
    /// Nothing was changed (Redis, files, hosts).
    Changed,
    /// No message reached a broker.
    Sent,
    /// No host was deployed to.
    Deployed,
    /// The lease was not released.
    Released,
    /// The edit was not written to the manifests.
    Edit,
}

impl Untouched {
    fn text(self) -> &'static str {
        match self {
            Untouched::Written => "nothing was written",
            Untouched::Changed => "nothing was changed",
            Untouched::Sent => "nothing was sent",
            Untouched::Deployed => "nothing was deployed",
            Untouched::Released => "nothing was released",
            Untouched::Edit => "the change was not written",
        }
    }
}

/// A message written at the CLI edge (no library error behind it).
#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Message {}

/// An error at the CLI edge.
#[derive(Debug)]
pub struct CommandError {
    pub kind: ErrorKind,
    pub source: Box<dyn StdError + Send + Sync>,
    pub untouched: Option<Untouched>,
    pub hints: Vec<String>,
}

impl CommandError {
    /// An error of `kind` caused by a library error (its source chain is printed).
    pub fn new(kind: ErrorKind, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        CommandError {
            kind,
            source: source.into(),
            untouched: None,
            hints: Vec::new(),
        }
    }

    /// An error of `kind` described by a message.
    pub fn message(kind: ErrorKind, message: impl Into<String>) -> Self {
        CommandError::new(kind, Message(message.into()))
    }

    /// A command-line error: a flag value or combination that cannot work.
    pub fn usage(message: impl Into<String>) -> Self {
        CommandError::message(ErrorKind::Usage, message)
    }

    /// Bad input: manifests, revisions, objects, files.
    pub fn invalid(message: impl Into<String>) -> Self {
        CommandError::message(ErrorKind::Invalid, message)
    }

    /// The thing the command reports on failed.
    pub fn failed(message: impl Into<String>) -> Self {
        CommandError::message(ErrorKind::Failed, message)
    }

    pub fn hinted(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    /// States what the command did not do (printed after the message).
    pub fn untouched(mut self, what: Untouched) -> Self {
        self.untouched = Some(what);
        self
    }

    /// The exit code for this error.
    pub fn exit_code(&self) -> u8 {
        self.kind.exit_code()
    }

    /// The message as printed after `error: `: the error, then what was left untouched
    /// (on its own line when the message spans lines).
    pub fn headline(&self) -> String {
        let mut text = self.source.to_string();
        if let Some(u) = self.untouched {
            if !text.contains(u.text()) {
                text.push_str(if text.contains('\n') { "\n" } else { "; " });
                text.push_str(u.text());
            }
        }
        text
    }

    /// The causes not already spelled out in the message, outermost first.
    pub fn causes(&self) -> Vec<String> {
        let head = self.source.to_string();
        let mut out = Vec::new();
        let mut next = self.source.source();
        while let Some(e) = next {
            let text = e.to_string();
            if !head.contains(&text) && !out.contains(&text) {
                out.push(text);
            }
            next = e.source();
        }
        out
    }

    /// Prints the error to stderr: `error: …`, `caused by: …` lines, then hints.
    pub fn print(&self, style: &Style) {
        errln!("{}: {}", style.paint(style.red(), "error"), self.headline());
        for c in self.causes() {
            errln!("  caused by: {c}");
        }
        for h in &self.hints {
            errln!("  = hint: {h}");
        }
    }
}

impl From<SourceError> for CommandError {
    fn from(e: SourceError) -> Self {
        let hint = match &e {
            SourceError::NotARepository { .. } => {
                Some("pass --repo PATH, or --worktree to read files from disk")
            }
            SourceError::UnknownRevision { .. } => Some("list revisions with `git log --oneline`"),
            SourceError::MissingPath { .. } => {
                Some("pass --path DIR if the manifests live elsewhere, or run `celeroot init`")
            }
            _ => None,
        };
        let err = CommandError::new(ErrorKind::Invalid, e);
        match hint {
            Some(h) => err.hinted(h),
            None => err,
        }
    }
}

impl From<StateError> for CommandError {
    fn from(e: StateError) -> Self {
        match &e {
            StateError::Connect { .. } => CommandError::new(ErrorKind::Unavailable, e)
                .untouched(Untouched::Written)
                .hinted("check --redis / CELEROOT_REDIS_URL and that the server is running"),
            StateError::Locked(info) => {
                let hint = format!(
                    "wait for it to finish; if it is stale (its holder is gone), run `celeroot unlock {}`",
                    info.id
                );
                CommandError::new(ErrorKind::Conflict, e).hinted(hint)
            }
            StateError::Conflict(_) | StateError::Fenced(_) => {
                CommandError::new(ErrorKind::Conflict, e).hinted(
                    "another writer changed the live state; run the command again to re-plan",
                )
            }
            StateError::AclUserExists { .. } => CommandError::new(ErrorKind::Refused, e)
                .hinted("pass --rotate to replace its password"),
            StateError::Layout { .. } => CommandError::new(ErrorKind::Refused, e),
            StateError::SharedDatabase { owner, .. } => {
                let hint = format!("give each cluster a Redis database of its own (--redis redis://HOST:PORT/N); if cluster {owner:?} is gone for good, delete the key {}", crate::state::keys::OWNER_KEY);
                CommandError::new(ErrorKind::Refused, e).hinted(hint)
            }
            StateError::Redis(_) | StateError::Protocol(_) => {
                CommandError::new(ErrorKind::Unavailable, e)
            }
            StateError::Redirected(_) => CommandError::new(ErrorKind::Unavailable, e)
                .untouched(Untouched::Written)
                .hinted("the Redis Cluster's slot kept moving for 30 s; run the command again once the resharding is done"),
        }
    }
}

impl From<ApplyError> for CommandError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::State(s) => s.into(),
            e @ ApplyError::MassDelete { .. } => CommandError::new(ErrorKind::Refused, e)
                .hinted("pass --allow-mass-delete if this is intended (a wrong --path or an emptied commit looks like this)"),
            e @ ApplyError::Rollback { .. } => CommandError::new(ErrorKind::Refused, e).hinted(
                "pass --allow-rollback (or use `celeroot rollback`) if this is intended",
            ),
            e @ ApplyError::Fault(_) => CommandError::new(ErrorKind::Failed, e),
        }
    }
}

impl From<DeployError> for CommandError {
    fn from(e: DeployError) -> Self {
        let (kind, hint) = match e {
            DeployError::LeaseLost => (
                ErrorKind::Conflict,
                "check Redis, then run `celeroot deploy` (or reconcile again)",
            ),
            DeployError::Stage { .. } => (
                ErrorKind::Failed,
                "the live state was applied; fix the local problem, then run `celeroot deploy`",
            ),
        };
        CommandError::new(kind, e)
            .untouched(Untouched::Deployed)
            .hinted(hint)
    }
}

impl From<CredentialsError> for CommandError {
    fn from(e: CredentialsError) -> Self {
        match e {
            CredentialsError::State(s) => s.into(),
            e @ CredentialsError::Random(_) => CommandError::new(ErrorKind::Failed, e),
            e @ CredentialsError::Install { .. } => CommandError::new(ErrorKind::Unavailable, e)
                .hinted("nothing changed in Redis either: new users were deleted, new passwords taken back; check `celeroot hosts test-connection`"),
            e @ CredentialsError::NotPickedUp { .. } => CommandError::new(ErrorKind::Failed, e)
                .hinted("check that the host's agent runs (`celeroot status`), then rotate again to retire the old passwords"),
        }
    }
}

impl From<EditError> for CommandError {
    fn from(e: EditError) -> Self {
        match e {
            EditError::Source(s) => s.into(),
            EditError::NotFound { kind, name, known } => {
                let what = kind.as_str().to_ascii_lowercase();
                let mut err = CommandError::invalid(format!("no {what} named {name:?}"));
                if let Some(s) =
                    crate::manifest::did_you_mean(&name, known.iter().map(String::as_str))
                {
                    err = err.hinted(format!("did you mean {s:?}?"));
                }
                err.hinted(format!("list them with `celeroot {what}s ls`"))
            }
            EditError::Exists {
                kind: Kind::Cluster,
                ..
            } => CommandError::new(ErrorKind::Invalid, e)
                .hinted("a repository has one cluster; change its settings with `celeroot config set PATH VALUE`"),
            EditError::Exists { kind, ref name, .. } => {
                let what = kind.as_str().to_ascii_lowercase();
                let hint = format!("change it with `celeroot {what}s update {name} ...`");
                CommandError::new(ErrorKind::Invalid, e).hinted(hint)
            }
            EditError::NoCluster => CommandError::new(ErrorKind::Invalid, e)
                .hinted("create one with `celeroot config init NAME`"),
            EditError::Environment(_) => {
                CommandError::new(ErrorKind::Usage, e).untouched(Untouched::Edit)
            }
            EditError::InUse(in_use) => {
                let hints: Vec<String> = match &in_use {
                    InUse::ByHosts { role, hosts } => hosts
                        .iter()
                        .take(5)
                        .map(|h| format!("first run: celeroot hosts update {h} --remove-role {role}"))
                        .collect(),
                    InUse::ByTargets { schedules, .. } => schedules
                        .iter()
                        .take(5)
                        .map(|s| format!("remove or retarget it: celeroot schedules rm {s} (or edit its targets: celeroot config edit schedule/{s})"))
                        .collect(),
                };
                let mut err =
                    CommandError::new(ErrorKind::Refused, in_use).untouched(Untouched::Changed);
                err.hints = hints;
                err
            }
            EditError::Layout { ref path, .. } => {
                let file = path.rsplit_once(':').map_or(path.as_str(), |(f, _)| f);
                let hint = format!("edit it by hand or with `celeroot config edit {file}`");
                CommandError::new(ErrorKind::Invalid, e).hinted(hint)
            }
            e => CommandError::new(ErrorKind::Invalid, e),
        }
    }
}

impl From<CeleryError> for CommandError {
    fn from(e: CeleryError) -> Self {
        let hint = match &e {
            CeleryError::Connect {
                endpoint: Endpoint::Broker,
                ..
            } => Some("check --broker / CELEROOT_BROKER_URL (default: --redis) and that the server is running"),
            CeleryError::Connect {
                endpoint: Endpoint::ResultBackend,
                ..
            } => Some("check --result-backend / CELEROOT_RESULT_BACKEND (default: the broker) and that the server is running"),
            CeleryError::Redis { .. } => None,
            CeleryError::NotConfirmed { .. } => Some("the messages named were not delivered; `celeroot task status ID` tells whether the others ran"),
        };
        let err = CommandError::new(ErrorKind::Unavailable, e);
        match hint {
            Some(h) => err.hinted(h),
            None => err,
        }
    }
}

impl From<crate::runs::collect::CollectError> for CommandError {
    fn from(e: crate::runs::collect::CollectError) -> Self {
        match e {
            crate::runs::collect::CollectError::State(s) => s.into(),
            e @ crate::runs::collect::CollectError::Subscribe { .. } => {
                CommandError::new(ErrorKind::Unavailable, e)
            }
        }
    }
}

impl From<DaemonError> for CommandError {
    fn from(e: DaemonError) -> Self {
        match e {
            DaemonError::Source(s) => s.into(),
            e => CommandError::new(ErrorKind::Unavailable, e),
        }
    }
}

impl From<InitError> for CommandError {
    fn from(e: InitError) -> Self {
        CommandError::new(ErrorKind::Invalid, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untouched_is_stated_once_after_the_message() {
        let e = CommandError::usage("--args is not JSON").untouched(Untouched::Sent);
        assert_eq!(e.headline(), "--args is not JSON; nothing was sent");
        let e = CommandError::usage("bad\n  | x\n  | ^").untouched(Untouched::Sent);
        assert_eq!(e.headline(), "bad\n  | x\n  | ^\nnothing was sent");
        let e = CommandError::usage("x; nothing was sent").untouched(Untouched::Sent);
        assert_eq!(e.headline(), "x; nothing was sent");
    }

    #[test]
    fn causes_skip_what_the_message_already_says() {
        let io = std::io::Error::other("disk full");
        let e = CommandError::new(
            ErrorKind::Invalid,
            SourceError::Io {
                path: "a.yaml".into(),
                source: io,
            },
        );
        assert_eq!(e.headline(), "a.yaml: disk full");
        assert!(e.causes().is_empty());
        let e = CommandError::new(
            ErrorKind::Invalid,
            EditError::Invalid(Box::new(crate::CompileError::Source(
                SourceError::BadPath {
                    path: "../x".into(),
                },
            ))),
        );
        assert_eq!(
            e.causes(),
            vec!["invalid manifests path `../x`: expected a relative path inside the repository without `..`"]
        );
    }

    #[test]
    fn library_errors_get_their_hints_here() {
        let e: CommandError = SourceError::NotARepository { path: "/x".into() }.into();
        assert_eq!(e.headline(), "/x is not inside a git repository");
        assert_eq!(e.hints.len(), 1);
        assert_eq!(e.exit_code(), EXIT_ERROR);
        let e: CommandError = ApplyError::MassDelete {
            removed: 3,
            live: 4,
            what: "hosts",
        }
        .into();
        assert_eq!(e.kind, ErrorKind::Refused);
        assert!(e.hints[0].contains("--allow-mass-delete"));
        assert!(!e.headline().contains("--"));
    }
}
