//! Deploying one host: inspect, transfer (rsync, only changed files), set up, switch
//! `current` atomically, restart, health-check, roll back on failure, prune.
//!
//! Every remote step is a fixed script (in this file, no manifest value in its text) run
//! as `sh -c SCRIPT sh ARG...`: the values (target directory, release id, commands)
//! arrive as positional parameters, each quoted on its own by [`super::ssh`].

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::ssh::{self, Failure, RemoteOutput, SshOptions};
use crate::desired::CompiledHost;

/// The report of what is on the host (`$t` is the target directory); changes nothing.
macro_rules! report_script {
    () => {
        r#"cur=$(readlink "$t/current" 2>/dev/null || true)
echo "current=${cur##*/}"
for d in "$t"/releases/r-*; do if [ -d "$d" ]; then echo "release=${d##*/}"; fi; done
for f in "$t"/shared/*; do if [ -f "$f" ]; then echo "shared=$(sha256sum "$f" | cut -d' ' -f1) ${f##*/}"; fi; done
exit 0
"#
    };
}

/// Reads what is on the host; changes nothing.
const INSPECT: &str = concat!("t=$1\n", report_script!());

/// The per-host deploy lock: a directory in the target directory, created atomically
/// (`mkdir`), holding the owner's token. A lock older than this many minutes is left by a
/// deploy that died and is taken over.
pub const DEPLOY_LOCK_STALE_MINUTES: u32 = 30;

/// Creates the directories and, unless the host already runs the wanted release with the
/// wanted shared files, takes the host's deploy lock (exit 13 when another deploy holds
/// it) and removes transfers that never completed; then reports like [`INSPECT`] (one
/// session instead of two). Arguments: `TARGET TOKEN RELEASE STALE_MINUTES [SHA NAME]...`.
const PREPARE: &str = concat!(
    r#"t=$1; tok=$2; id=$3; stale=$4; shift 4
mkdir -p "$t/releases" "$t/shared" || exit 11
ok=1
cur=$(readlink "$t/current" 2>/dev/null || true)
[ "${cur##*/}" = "$id" ] || ok=0
while [ $# -ge 2 ]; do
  s=$(sha256sum "$t/shared/$2" 2>/dev/null | cut -d' ' -f1)
  [ "$s" = "$1" ] || ok=0
  shift 2
done
if [ "$ok" = 0 ]; then
  l="$t/.deploy-lock"
  if ! mkdir "$l" 2>/dev/null; then
    if [ -n "$(find "$l" -maxdepth 0 -mmin +"$stale" 2>/dev/null)" ]; then
      rm -rf "$l"; mkdir "$l" 2>/dev/null || { echo "another deploy took the host's deploy lock $l" >&2; exit 13; }
    else
      echo "another deploy holds the host's deploy lock $l ($(cat "$l/owner" 2>/dev/null))" >&2; exit 13
    fi
  fi
  printf '%s\n' "$tok" > "$l/owner" || exit 11
  echo "locked=1"
  rm -rf "$t"/releases/*.partial || exit 11
fi
"#,
    report_script!()
);

/// Removes the oldest releases beyond `KEEP` when `KEEP` > 0 (never the current one),
/// then releases the host's deploy lock if `TOKEN` still owns it. Arguments:
/// `TARGET TOKEN KEEP`.
const FINISH: &str = r#"t=$1; tok=$2; keep=$3
if [ "$keep" -gt 0 ]; then
  cur=$(readlink "$t/current" 2>/dev/null || true); cur=${cur##*/}
  if cd "$t/releases" 2>/dev/null; then
    n=0
    for d in $(ls -1td r-* 2>/dev/null); do
      n=$((n + 1))
      if [ "$d" != "$cur" ] && [ "$n" -gt "$keep" ]; then rm -rf "$d" && echo "pruned=$d"; fi
    done
  fi
fi
l="$t/.deploy-lock"
if [ "$(cat "$l/owner" 2>/dev/null)" = "$tok" ]; then rm -rf "$l"; fi
"#;

/// Moves a transferred release into place, runs the setup command in it and, when that
/// succeeds, switches `current` to it (a new symlink renamed over the old one: atomic).
/// A release that fails its setup is removed unless it is the current one.
const ACTIVATE: &str = r#"t=$1; id=$2; shift 2
cur=$(readlink "$t/current" 2>/dev/null || true); cur=${cur##*/}
cd "$t/releases" || exit 11
if [ -d "$id.partial" ]; then
  if [ "$id" != "$cur" ]; then rm -rf "$id"; fi
  if [ -d "$id" ]; then rm -rf "$id.partial"; else mv "$id.partial" "$id" || exit 11; fi
fi
touch "$id"
cd "$t/releases/$id" || exit 11
"$@"
s=$?
if [ "$s" -ne 0 ]; then
  if [ "$id" != "$cur" ]; then rm -rf "$t/releases/$id"; fi
  echo "the setup command exited with status $s" >&2
  exit 10
fi
ln -sfn "releases/$id" "$t/current.tmp" && mv -Tf "$t/current.tmp" "$t/current" || exit 12
"#;

/// Points `current` at a release: a new symlink renamed over the old one (atomic).
const SWITCH: &str = r#"t=$1; id=$2
[ -d "$t/releases/$id" ] || { echo "release $id is missing" >&2; exit 11; }
ln -sfn "releases/$id" "$t/current.tmp" && mv -Tf "$t/current.tmp" "$t/current"
"#;

/// Runs a command in a directory.
const RUN_IN: &str = r#"cd "$1" || exit 11
shift
exec "$@"
"#;

/// Restarts, then health-checks, in one session: `DIR N TIMEOUT RESTART... HEALTH...`,
/// where the first N arguments are the restart command. The restart runs in a subshell
/// that rebuilds its argv from the first N arguments (POSIX sh has no arrays). Exit 20:
/// the restart failed; 124: the health check timed out; other: its status.
const VERIFY: &str = r#"cd "$1" || exit 11
n=$2; hto=$3; shift 3
total=$#
(
  i=0
  for a do
    i=$((i + 1))
    if [ "$i" -le "$n" ]; then set -- "$@" "$a"; fi
  done
  shift "$total"
  exec "$@"
) || { echo "the restart command failed" >&2; exit 20; }
shift "$n"
if command -v timeout >/dev/null 2>&1; then exec timeout -k 5 "$hto" "$@"; fi
exec "$@"
"#;

/// What happened on one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Already running the release with the same rendered files.
    UpToDate,
    /// Out of date (`--check`).
    OutOfDate,
    Deployed,
    /// The new release failed its health check (or restart); the previous one is current
    /// again.
    RolledBack,
    Failed,
    /// Not attempted: the rollout stopped (canary failed, failure budget spent).
    Skipped,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::UpToDate => "up-to-date",
            Outcome::OutOfDate => "out-of-date",
            Outcome::Deployed => "deployed",
            Outcome::RolledBack => "rolled-back",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }

    /// Whether the host counts against the failure budget.
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::RolledBack | Outcome::Failed)
    }
}

/// The result of one host.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostResult {
    pub host: String,
    pub outcome: Outcome,
    /// The release current on the host before.
    pub previous: Option<String>,
    /// The release current on the host after.
    pub current: Option<String>,
    /// Files rsync sent (changed or new).
    pub files_sent: u64,
    /// Bytes rsync sent over the network.
    pub bytes_sent: u64,
    /// Releases removed by pruning.
    pub pruned: Vec<String>,
    /// Whether this host was a canary.
    pub canary: bool,
    pub duration_ms: u64,
    /// What went wrong (or why it was skipped or is out of date).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl HostResult {
    pub fn new(host: &str, outcome: Outcome) -> Self {
        HostResult {
            host: host.to_string(),
            outcome,
            previous: None,
            current: None,
            files_sent: 0,
            bytes_sent: 0,
            pruned: Vec::new(),
            canary: false,
            duration_ms: 0,
            detail: None,
        }
    }
}

/// What the host has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspected {
    /// Whether this session took the host's deploy lock (`prepare` only).
    pub locked: bool,
    pub current: Option<String>,
    pub releases: Vec<String>,
    /// File name in `<target>/shared` → sha256.
    pub shared: BTreeMap<String, String>,
}

fn parse_inspect(stdout: &str) -> Inspected {
    let mut i = Inspected::default();
    for line in stdout.lines() {
        if line == "locked=1" {
            i.locked = true;
        } else if let Some(c) = line.strip_prefix("current=") {
            i.current = Some(c.to_string()).filter(|c| !c.is_empty());
        } else if let Some(r) = line.strip_prefix("release=") {
            i.releases.push(r.to_string());
        } else if let Some(rest) = line.strip_prefix("shared=") {
            if let Some((sum, name)) = rest.split_once(' ') {
                i.shared.insert(name.to_string(), sum.to_string());
            }
        }
    }
    i
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// A step that failed, with whether retrying may help.
struct StepError {
    message: String,
    transient: bool,
}

/// Everything one host's deploy needs.
pub struct Job<'a> {
    pub name: &'a str,
    /// Identifies this deploy in the host's deploy lock.
    pub token: &'a str,
    pub host: &'a CompiledHost,
    pub release_id: &'a str,
    /// The staged release directory (shipped as is).
    pub release_dir: &'a Path,
    /// Rendered files for `<target>/shared`, and the local directory holding them.
    pub shared: &'a BTreeMap<String, String>,
    pub shared_dir: &'a Path,
    pub opts: &'a SshOptions,
    pub check_only: bool,
}

const ATTEMPTS: u32 = 3;

fn fail(mut r: HostResult, e: StepError) -> HostResult {
    r.outcome = Outcome::Failed;
    r.detail = Some(if e.transient {
        format!("{} (after {ATTEMPTS} attempts)", e.message)
    } else {
        e.message
    });
    r
}

impl Job<'_> {
    fn script(
        &self,
        script: &str,
        args: &[String],
        timeout: Duration,
    ) -> std::io::Result<RemoteOutput> {
        let mut remote = vec![
            "sh".to_string(),
            "-c".to_string(),
            script.to_string(),
            "sh".to_string(),
        ];
        remote.extend(args.iter().cloned());
        ssh::run(&ssh::ssh_args(self.host, self.opts, &remote), timeout)
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.host.ssh.connect_timeout_secs + 60)
    }

    /// Runs an idempotent script, retrying transient SSH failures with back-off.
    fn step(&self, what: &str, script: &str, args: &[String]) -> Result<RemoteOutput, StepError> {
        let mut delay = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            let out = self
                .script(script, args, self.timeout())
                .map_err(|e| StepError {
                    message: format!("cannot run ssh: {e}"),
                    transient: false,
                })?;
            match out.failure() {
                Some(f) if f.transient() && attempt < ATTEMPTS => {
                    std::thread::sleep(delay);
                    delay *= 2;
                    attempt += 1;
                }
                Some(f) => {
                    return Err(StepError {
                        message: format!("{what}: {} ({})", f.label(), last_line(&out.stderr)),
                        transient: f.transient(),
                    })
                }
                None if out.status == Some(0) => return Ok(out),
                None => {
                    return Err(StepError {
                        message: format!(
                            "{what} exited with status {}: {}",
                            out.status.unwrap_or(-1),
                            last_line(&out.stderr)
                        ),
                        transient: false,
                    })
                }
            }
        }
    }

    fn rsync(
        &self,
        src: &Path,
        dest: &str,
        link_dest: Option<String>,
        delete: bool,
    ) -> Result<(u64, u64), StepError> {
        let rsh = ssh::rsync_rsh(self.host, self.opts).map_err(|m| StepError {
            message: m,
            transient: false,
        })?;
        let mut args: Vec<OsString> = vec![
            "--archive".into(),
            "--checksum".into(),
            "--stats".into(),
            "--protect-args".into(),
            "--rsh".into(),
            rsh.into(),
        ];
        if delete {
            args.push("--delete".into());
        }
        if let Some(l) = link_dest {
            args.push(format!("--link-dest={l}").into());
        }
        let mut s = src.as_os_str().to_os_string();
        s.push("/");
        args.push(s);
        let host = if self.host.address.contains(':') {
            format!("[{}]", self.host.address)
        } else {
            self.host.address.clone()
        };
        args.push(format!("{}@{host}:{dest}/", self.host.ssh.user).into());
        let mut delay = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            let out =
                ssh::run_program("rsync", &args, self.timeout() * 5).map_err(|e| StepError {
                    message: format!("cannot run rsync: {e} (install rsync)"),
                    transient: false,
                })?;
            if out.status == Some(0) {
                return Ok((
                    stat(&out.stdout, "Number of regular files transferred"),
                    stat(&out.stdout, "Total bytes sent"),
                ));
            }
            let f = out.rsync_failure();
            if f.is_some_and(Failure::transient) && attempt < ATTEMPTS {
                std::thread::sleep(delay);
                delay *= 2;
                attempt += 1;
                continue;
            }
            return Err(StepError {
                message: format!(
                    "rsync {}: {}",
                    f.map_or_else(
                        || format!("exited with status {}", out.status.unwrap_or(-1)),
                        |f| f.label().to_string()
                    ),
                    last_line(&out.stderr)
                ),
                transient: f.is_some_and(Failure::transient),
            });
        }
    }

    /// Deploys (or with `check_only`, inspects) the host.
    pub fn run(&self) -> HostResult {
        let started = Instant::now();
        let mut r = self.run_inner();
        r.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        r
    }

    fn run_inner(&self) -> HostResult {
        let t = self.host.deployment.target_dir.clone();
        let id = self.release_id.to_string();
        let mut r = HostResult::new(self.name, Outcome::Failed);
        if let Some(why) = ssh::placeholder(&self.host.address) {
            r.detail = Some(ssh::placeholder_message(self.name, &self.host.address, why));
            return r;
        }
        let want_shared: BTreeMap<String, String> = self
            .shared
            .iter()
            .map(|(k, v)| (k.clone(), sha256_hex(v)))
            .collect();
        // `--check` only reads; a deploy prepares the directories and takes the host's
        // deploy lock in the same session.
        let step = if self.check_only {
            self.step("inspect", INSPECT, std::slice::from_ref(&t))
        } else {
            let mut args = vec![
                t.clone(),
                self.token.to_string(),
                id.clone(),
                DEPLOY_LOCK_STALE_MINUTES.to_string(),
            ];
            for (name, sum) in &want_shared {
                args.push(sum.clone());
                args.push(name.clone());
            }
            self.step("prepare", PREPARE, &args)
        };
        let ins = match step {
            Ok(out) => parse_inspect(&out.stdout),
            Err(e) => return fail(r, e),
        };
        let (mut r, keep) = self.ship(&ins, &want_shared, r);
        if !ins.locked {
            return r;
        }
        // Prune (when there can be something to prune) and release the lock in one session.
        match self.step(
            "finish",
            FINISH,
            &[t, self.token.to_string(), keep.to_string()],
        ) {
            Ok(out) => {
                r.pruned = out
                    .stdout
                    .lines()
                    .filter_map(|l| l.strip_prefix("pruned="))
                    .map(String::from)
                    .collect();
            }
            Err(e) if r.outcome == Outcome::Deployed => {
                r.detail = Some(format!(
                    "deployed, but pruning or releasing the deploy lock failed: {}",
                    e.message
                ));
            }
            Err(_) => {}
        }
        r
    }

    /// Everything after `prepare`: returns the result and how many releases to keep when
    /// pruning (0: do not prune).
    fn ship(
        &self,
        ins: &Inspected,
        want_shared: &BTreeMap<String, String>,
        mut r: HostResult,
    ) -> (HostResult, u32) {
        let d = &self.host.deployment;
        let t = d.target_dir.clone();
        let id = self.release_id.to_string();
        r.previous = ins.current.clone();
        r.current = ins.current.clone();
        let shared_ok = want_shared
            .iter()
            .all(|(k, v)| ins.shared.get(k) == Some(v));
        let release_ok = ins.current.as_deref() == Some(id.as_str());
        if release_ok && shared_ok {
            r.outcome = Outcome::UpToDate;
            return (r, 0);
        }
        if self.check_only {
            r.outcome = Outcome::OutOfDate;
            r.detail = Some(if release_ok {
                "the rendered worker files differ".into()
            } else {
                format!(
                    "runs {}, git wants {id}",
                    ins.current.as_deref().unwrap_or("nothing")
                )
            });
            return (r, 0);
        }
        if !release_ok {
            let link = ins.current.as_ref().map(|c| format!("{t}/releases/{c}"));
            match self.rsync(
                self.release_dir,
                &format!("{t}/releases/{id}.partial"),
                link,
                true,
            ) {
                Ok((files, bytes)) => {
                    r.files_sent += files;
                    r.bytes_sent += bytes;
                }
                Err(e) => return (fail(r, e), 0),
            }
        }
        if !shared_ok {
            match self.rsync(self.shared_dir, &format!("{t}/shared"), None, false) {
                Ok((files, bytes)) => {
                    r.files_sent += files;
                    r.bytes_sent += bytes;
                }
                Err(e) => return (fail(r, e), 0),
            }
        }
        if !release_ok {
            let mut args = vec![t.clone(), id.clone()];
            args.extend(d.setup_command.iter().cloned());
            if let Err(e) = self.step("setup", ACTIVATE, &args) {
                return (fail(r, e), 0);
            }
            r.current = Some(id.clone());
        }
        // Restart and verify; on failure, switch back and restart the previous release.
        let current_dir = format!("{t}/current");
        let verify = self.verify(&current_dir);
        if let Err(why) = verify {
            match ins.current.as_ref().filter(|p| **p != id) {
                Some(prev) => {
                    let back = self
                        .step("switch back", SWITCH, &[t.clone(), prev.clone()])
                        .map_err(|e| e.message)
                        .and_then(|_| {
                            self.run_in("restart", &current_dir, &d.restart_command, self.timeout())
                        });
                    match back {
                        Ok(()) => {
                            r.outcome = Outcome::RolledBack;
                            r.current = Some(prev.clone());
                            r.detail = Some(format!("{why}; rolled back to {prev}"));
                        }
                        Err(e) => {
                            r.outcome = Outcome::Failed;
                            r.detail =
                                Some(format!("{why}; rolling back to {prev} failed too: {e}"));
                        }
                    }
                }
                None => {
                    r.outcome = Outcome::Failed;
                    r.detail = Some(format!("{why}; no previous release to roll back to"));
                }
            }
            return (r, 0);
        }
        r.outcome = Outcome::Deployed;
        // Prune only when there can be something to prune.
        let count = ins.releases.len() + usize::from(!ins.releases.contains(&id));
        let keep = d.keep_releases.max(1);
        (r, if count > keep as usize { keep } else { 0 })
    }

    /// Restart, then health check, in one session.
    fn verify(&self, dir: &str) -> Result<(), String> {
        let d = &self.host.deployment;
        let hto = d.health_check_timeout_secs.max(1);
        let mut args = vec![
            dir.to_string(),
            d.restart_command.len().to_string(),
            hto.to_string(),
        ];
        args.extend(d.restart_command.iter().cloned());
        args.extend(d.health_check_command.iter().cloned());
        let out = self
            .script(VERIFY, &args, self.timeout() + Duration::from_secs(hto))
            .map_err(|e| format!("cannot run ssh: {e}"))?;
        let msg = last_line(&out.stderr);
        match (out.failure(), out.status) {
            (_, Some(0)) => Ok(()),
            (Some(Failure::Timeout), _) => Err("restart and health check timed out".into()),
            (Some(f), _) => Err(format!("restart and health check: {} ({msg})", f.label())),
            (None, Some(20)) => Err(format!("restart failed: {msg}")),
            (None, Some(124)) => Err(format!("health check timed out after {hto}s")),
            (None, code) => Err(if msg.is_empty() {
                format!("health check failed (exit status {})", code.unwrap_or(-1))
            } else {
                format!(
                    "health check failed (exit status {}): {msg}",
                    code.unwrap_or(-1)
                )
            }),
        }
    }

    fn run_in(
        &self,
        what: &str,
        dir: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<(), String> {
        let mut args = vec![dir.to_string()];
        args.extend(argv.iter().cloned());
        let out = self
            .script(
                RUN_IN,
                &args,
                timeout + Duration::from_secs(self.host.ssh.connect_timeout_secs),
            )
            .map_err(|e| format!("cannot run ssh: {e}"))?;
        match (out.failure(), out.status) {
            (_, Some(0)) => Ok(()),
            (Some(Failure::Timeout), _) => {
                Err(format!("{what} timed out after {}s", timeout.as_secs()))
            }
            (Some(f), _) => Err(format!(
                "{what}: {} ({})",
                f.label(),
                last_line(&out.stderr)
            )),
            (None, code) => {
                let msg = last_line(&out.stderr);
                Err(if msg.is_empty() {
                    format!("{what} failed (exit status {})", code.unwrap_or(-1))
                } else {
                    format!("{what} failed (exit status {}): {msg}", code.unwrap_or(-1))
                })
            }
        }
    }
}

fn last_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or_default()
        .to_string()
}

/// A number from rsync's `--stats` output (`Total bytes sent: 1,234`).
fn stat(stdout: &str, name: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix(name))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .map(|n| n.replace(',', ""))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_output_is_parsed() {
        let i =
            parse_inspect("current=r-abc\nrelease=r-abc\nrelease=r-def\nshared=00ff worker.env\n");
        assert_eq!(i.current.as_deref(), Some("r-abc"));
        assert_eq!(i.releases, ["r-abc", "r-def"]);
        assert_eq!(i.shared.get("worker.env").map(String::as_str), Some("00ff"));
        assert_eq!(parse_inspect("current=\n").current, None);
    }

    #[test]
    fn rsync_stats_are_read() {
        let out = "Number of files: 12 (reg: 10, dir: 2)\nNumber of regular files transferred: 1\nTotal bytes sent: 1,234\n";
        assert_eq!(stat(out, "Number of regular files transferred"), 1);
        assert_eq!(stat(out, "Total bytes sent"), 1234);
        assert_eq!(stat(out, "Missing"), 0);
    }

    #[test]
    fn scripts_hold_no_interpolation_points() {
        // Values arrive as "$1", "$2", "$@" only; nothing is spliced into the text.
        for s in [INSPECT, PREPARE, ACTIVATE, SWITCH, RUN_IN, VERIFY, FINISH] {
            assert!(!s.contains("{}"), "{s}");
            assert!(!s.contains("eval"), "{s}");
        }
    }
}
