//! Deploying one host in one SSH session, a dialog: the host reports what it runs (and,
//! after taking its deploy lock, its current release's checksums); the controller answers
//! with an archive of only the files it lacks; the host hard-links the rest from the
//! current release, checks every file against the release's checksums, sets up, switches
//! `current` atomically, restarts, health-checks, prunes and releases the lock. A failed
//! restart or health check is rolled back by the controller in further sessions on the
//! same connection.
//!
//! Every remote step is a fixed script (in this file, no manifest value in its text) run
//! as `sh -c SCRIPT sh ARG...`: the values (target directory, release id, commands)
//! arrive as positional parameters, each quoted on its own by [`super::ssh`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use std::sync::Arc;

use super::release::{self, Previous, ReleasePart};
use super::ssh::{self, Failure, RemoteOutput, SshOptions};
use crate::desired::CompiledHost;

/// The report of what is on the host (`$t` is the target directory); changes nothing.
macro_rules! report_script {
    () => {
        r#"cur=$(readlink "$t/current" 2>/dev/null || true)
echo "current=${cur##*/}"
for d in "$t"/releases/r-*; do if [ -d "$d" ]; then echo "release=${d##*/}"; fi; done
(cd "$t/shared" 2>/dev/null && sha256sum -- * 2>/dev/null) | sed 's/^\([0-9a-f]*\)  /shared=\1 /'
"#
    };
}

/// Reads what is on the host; changes nothing.
const INSPECT: &str = concat!("t=$1\n", report_script!(), "exit 0\n");

/// The per-host deploy lock: a directory in the target directory, created atomically
/// (`mkdir`), holding the owner's token. A lock older than this many minutes is left by a
/// deploy that died and is taken over.
pub const DEPLOY_LOCK_STALE_MINUTES: u32 = 30;

/// The end of a deploy (`$t`, `$tok`, `$keep` set): removes the oldest releases beyond
/// `keep` when `keep` > 0 (never the current one), then releases the host's deploy lock if
/// `tok` still owns it.
macro_rules! finish_script {
    () => {
        r#"n=0
for d in "$t"/releases/r-*; do if [ -d "$d" ]; then n=$((n + 1)); fi; done
if [ "$keep" -gt 0 ] && [ "$n" -gt "$keep" ]; then
  cur=$(readlink "$t/current" 2>/dev/null || true); cur=${cur##*/}
  if cd "$t/releases" 2>/dev/null; then
    n=0
    for d in $(ls -1td r-* 2>/dev/null); do
      n=$((n + 1))
      if [ "$d" != "$cur" ] && [ "$n" -gt "$keep" ]; then rm -rf "$d" && echo "$tok pruned=$d"; fi
    done
  fi
fi
l="$t/.deploy-lock"
o=
read -r o 2>/dev/null < "$l/owner" || true
if [ "$o" = "$tok" ]; then rm -rf "$l"; fi
"#
    };
}

/// [`finish_script`] on its own, after a deploy that did not finish. Arguments:
/// `TARGET TOKEN KEEP`.
const FINISH: &str = concat!("t=$1; tok=$2; keep=$3\n", finish_script!());

/// Receives the host's archive on standard input and completes the deploy (`$t`, `$tok`,
/// `$id`, `$keep`, `$hto`, `$ns`, `$nr` set, and `$cur`, what `current` points at; the
/// arguments left are the setup command (NS words), the restart command (NR words) and
/// the health check: POSIX sh has no arrays, so `slice` rebuilds a command from its
/// place; the commands read nothing from the archive's stream). Each phase announces
/// itself on standard output as `TOKEN phase=NAME`, so an exit status is read in the
/// phase that set it:
/// - `transfer`: 11 (I/O), 14 (the files of the checksum list the archive did not bring
///   are linked from the current release, and then every file is checked: one is
///   missing or does not match, and the controller sends everything instead), 15 (the
///   archive was cut short);
/// - `setup` (when a release arrived: move it into place, run the setup command, switch
///   `current`): 10 (the setup command failed; the new release is removed), 11, 12;
/// - `verify`: 20 (the restart command failed), 124 (the health check timed out), else
///   the health check's status;
/// - `finish`: prune and release the lock ([`finish_script`]).
macro_rules! ship_script {
    () => {
        r#"slice() {
  from=$1; cnt=$2; shift 2
  total=$#; i=0
  for a do
    i=$((i + 1))
    if [ "$i" -gt "$from" ] && [ "$i" -le $((from + cnt)) ]; then set -- "$@" "$a"; fi
  done
  shift "$total"
  "$@"
}
echo "$tok phase=transfer"
cur=${cur##*/}
in="$t/.incoming"
rm -rf "$in" && mkdir "$in" || exit 11
tar -x -f - -C "$in" --no-same-owner || { echo "the archive did not arrive whole" >&2; exit 15; }
new=0
if [ -d "$in/release" ]; then
  new=1
  p="$t/releases/$id.partial"
  rm -rf "$p" && mv "$in/release" "$p" || exit 11
  l="$in/link-list"
  cut -c67- "$p/.celeroot/checksums.sha256" 2>/dev/null | while IFS= read -r f; do
    [ -e "$p/$f" ] || [ -L "$p/$f" ] || printf '%s\n' "$f"
  done > "$l"
  if [ -s "$l" ]; then
    (cd "$t/releases/$cur" && xargs -d '\n' cp -al --parents -t "$p" --) < "$l" || { echo "the unchanged files of $cur could not be linked" >&2; exit 14; }
    (cd "$p" && sha256sum --quiet --strict -c .celeroot/checksums.sha256 >&2) || { echo "files linked from $cur differ from the release (changed on the host)" >&2; exit 14; }
  fi
fi
if [ -d "$in/shared" ]; then
  mv -f "$in"/shared/* "$t/shared/" || exit 11
fi
rm -rf "$in"
if [ "$new" = 1 ]; then
  echo "$tok phase=setup"
  cd "$t/releases" || exit 11
  if [ "$id" != "$cur" ]; then rm -rf "$id"; fi
  if [ -d "$id" ]; then rm -rf "$id.partial"; else mv "$id.partial" "$id" || exit 11; fi
  touch "$id"
  cd "$t/releases/$id" || exit 11
  slice 0 "$ns" "$@" </dev/null
  s=$?
  if [ "$s" -ne 0 ]; then
    if [ "$id" != "$cur" ]; then rm -rf "$t/releases/$id"; fi
    echo "the setup command exited with status $s" >&2
    exit 10
  fi
  ln -sfn "releases/$id" "$t/current.tmp" && mv -Tf "$t/current.tmp" "$t/current" || exit 12
fi
echo "$tok phase=verify"
cd "$t/current" || exit 11
slice "$ns" "$nr" "$@" </dev/null || { echo "the restart command failed" >&2; exit 20; }
shift $((ns + nr))
if command -v timeout >/dev/null 2>&1; then timeout -k 5 "$hto" "$@" </dev/null; else "$@" </dev/null; fi
s=$?
[ "$s" -eq 0 ] || exit "$s"
echo "$tok phase=finish"
"#
    };
}

/// A deploy in one session. Arguments: `TARGET TOKEN RELEASE KEEP HEALTH_TIMEOUT NS NR
/// STALE_MINUTES WANT SETUP... RESTART... HEALTH...`, where WANT is the
/// `sha256sum` list the `shared/` files must match.
///
/// Creates the directories; a host that already runs the release with those files is
/// reported like [`INSPECT`] and the session ends (up to date: it reads nothing). Else it
/// takes the host's deploy lock (exit 13 when another deploy holds it; its own, from a
/// retried session, is kept), removes transfers that never completed, prints its current
/// release's checksum list (`sum=`) and executable files (`exec=`), the report, and
/// `TOKEN ready`; then it reads the archive the controller builds from that
/// ([`ship_script`]).
const DEPLOY: &str = concat!(
    r#"t=$1; tok=$2; id=$3; keep=$4; hto=$5; ns=$6; nr=$7; stale=$8; want=$9; shift 9
mkdir -p "$t/releases" "$t/shared" || exit 11
ok=1
cur=$(readlink "$t/current" 2>/dev/null || true)
[ "${cur##*/}" = "$id" ] || ok=0
if [ "$ok" = 1 ] && [ -n "$want" ]; then
  printf '%s' "$want" | (cd "$t/shared" && sha256sum --status --strict -c - 2>/dev/null) || ok=0
fi
if [ "$ok" = 1 ]; then
"#,
    report_script!(),
    r#"  exit 0
fi
l="$t/.deploy-lock"
if ! mkdir "$l" 2>/dev/null; then
  if [ "$(cat "$l/owner" 2>/dev/null)" = "$tok" ]; then
    :
  elif [ -n "$(find "$l" -maxdepth 0 -mmin +"$stale" 2>/dev/null)" ]; then
    rm -rf "$l"; mkdir "$l" 2>/dev/null || { echo "another deploy took the host's deploy lock $l" >&2; exit 13; }
  else
    echo "another deploy holds the host's deploy lock $l ($(cat "$l/owner" 2>/dev/null))" >&2; exit 13
  fi
fi
printf '%s\n' "$tok" > "$l/owner" || exit 11
echo "locked=1"
rm -rf "$t"/releases/*.partial "$t/.incoming" || exit 11
c=${cur##*/}
if [ -n "$c" ] && [ -f "$t/releases/$c/.celeroot/checksums.sha256" ]; then
  sed 's/^/sum=/' "$t/releases/$c/.celeroot/checksums.sha256"
  (cd "$t/releases/$c" && find . -type f -perm -0100 | sed 's|^\./|exec=|')
fi
"#,
    report_script!(),
    r#"echo "$tok ready"
"#,
    ship_script!(),
    finish_script!()
);

/// [`ship_script`] on its own, for a host whose lock this deploy holds (the whole release
/// again, after linked files failed their check). Arguments: `TARGET TOKEN RELEASE KEEP
/// HEALTH_TIMEOUT NS NR SETUP... RESTART... HEALTH...`.
const SHIP: &str = concat!(
    "t=$1; tok=$2; id=$3; keep=$4; hto=$5; ns=$6; nr=$7; shift 7\n",
    "cur=$(readlink \"$t/current\" 2>/dev/null || true)\n",
    ship_script!(),
    finish_script!()
);

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

/// What happened on one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostResult {
    pub host: String,
    pub outcome: Outcome,
    /// The release current on the host before.
    pub previous: Option<String>,
    /// The release current on the host after.
    pub current: Option<String>,
    /// Regular files sent (new or changed ones, the release's checksum list, rendered
    /// files); the rest of a release is hard-linked on the host from its current one.
    pub files_sent: u64,
    /// Bytes of the archives sent (before SSH's encryption).
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
    /// What the current release's checksum list holds (`prepare` only, when it locked).
    pub previous: Previous,
}

fn parse_inspect(stdout: &str) -> Inspected {
    let mut i = Inspected {
        previous: release::parse_previous(stdout.lines()),
        ..Inspected::default()
    };
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

/// What a deploy sent to a host.
#[derive(Debug, Default)]
struct Sent {
    files: u64,
    bytes: u64,
    /// Files the last archive asked the host to link from its current release.
    linked: u64,
}

/// A step that failed, with whether retrying may help.
struct StepError {
    message: String,
    transient: bool,
}

/// Builds (or returns from a cache) the release part of the archive for a host whose
/// current release holds the given files.
pub type PartSource<'a> = dyn Fn(&Previous) -> Result<Arc<ReleasePart>, String> + Sync + 'a;

/// Everything one host's deploy needs.
pub struct Job<'a> {
    pub name: &'a str,
    /// Identifies this deploy in the host's deploy lock and its output lines.
    pub token: &'a str,
    pub host: &'a CompiledHost,
    pub release_id: &'a str,
    /// The release part of the archive, by what the host already has.
    pub release_part: &'a PartSource<'a>,
    /// Rendered files for `<target>/shared`.
    pub shared: &'a BTreeMap<String, String>,
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
        self.script_with(script, args, None, timeout)
    }

    /// Runs `script` with `args`, and `input` (when given) on its standard input.
    fn script_with(
        &self,
        script: &str,
        args: &[String],
        input: Option<Vec<u8>>,
        timeout: Duration,
    ) -> std::io::Result<RemoteOutput> {
        ssh::run_with_bytes(&self.remote(script, args), input, timeout)
    }

    /// The `ssh` argv running `sh -c SCRIPT sh ARGS...` on the host.
    fn remote(&self, script: &str, args: &[String]) -> Vec<std::ffi::OsString> {
        let mut remote = vec![
            "sh".to_string(),
            "-c".to_string(),
            script.to_string(),
            "sh".to_string(),
        ];
        remote.extend(args.iter().cloned());
        ssh::ssh_args(self.host, self.opts, &remote)
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
                        message: exit_message(what, &out),
                        transient: false,
                    })
                }
            }
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
        let mut r = HostResult::new(self.name, Outcome::Failed);
        if let Some(why) = ssh::placeholder(&self.host.address) {
            r.detail = Some(ssh::placeholder_message(self.name, &self.host.address, why));
            return r;
        }
        let want_shared = self.shared_sums();
        if self.check_only {
            // `--check` only reads.
            return match self.step("inspect", INSPECT, std::slice::from_ref(&t)) {
                Ok(out) => self.checked(&parse_inspect(&out.stdout), &want_shared, r),
                Err(e) => fail(r, e),
            };
        }
        let mut sent = Sent::default();
        let out = match self.deploy_session(&want_shared, &mut sent) {
            Ok(out) => out,
            Err((e, locked)) => {
                r.files_sent = sent.files;
                r.bytes_sent = sent.bytes;
                if locked {
                    // The session took the lock and failed before its end: release it
                    // (only this rollout's token can), so the next deploy need not wait
                    // for it to go stale.
                    let _ = self.step("finish", FINISH, &[t, self.token.to_string(), "0".into()]);
                }
                return fail(r, e);
            }
        };
        let ins = parse_inspect(self.report_of(&out.stdout));
        r.previous = ins.current.clone();
        r.current = ins.current.clone();
        if !ins.locked {
            // The host ran the release with the same files: the session ended there.
            r.outcome = Outcome::UpToDate;
            return r;
        }
        let finished = self.conclude(&ins, &want_shared, out, &mut sent, &mut r);
        r.files_sent = sent.files;
        r.bytes_sent = sent.bytes;
        if finished {
            return r;
        }
        // The deploy stopped before its end: release the lock (no pruning).
        match self.step("finish", FINISH, &[t, self.token.to_string(), "0".into()]) {
            Ok(_) => {}
            Err(e) if r.outcome == Outcome::Deployed => {
                r.detail = Some(format!(
                    "deployed, but releasing the deploy lock failed: {}",
                    e.message
                ));
            }
            Err(_) => {}
        }
        r
    }

    /// The values of this deploy's own output lines (`TOKEN KEY=VALUE`) for `key`: the
    /// commands it runs write to the same standard output, and cannot know the token.
    fn marked(&self, stdout: &str, key: &str) -> Vec<String> {
        let prefix = format!("{} {key}", self.token);
        stdout
            .lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .map(String::from)
            .collect()
    }

    /// What [`DEPLOY`] reported before it started to ship (the commands it runs print
    /// after that).
    fn report_of<'s>(&self, stdout: &'s str) -> &'s str {
        let ready = format!("{} ready", self.token);
        stdout.split(ready.as_str()).next().unwrap_or(stdout)
    }

    /// The result of `--check` from what the host reported.
    fn checked(
        &self,
        ins: &Inspected,
        want_shared: &BTreeMap<String, String>,
        mut r: HostResult,
    ) -> HostResult {
        let id = self.release_id;
        r.previous = ins.current.clone();
        r.current = ins.current.clone();
        let (release_ok, shared_ok) = self.up_to_date(ins, want_shared);
        if release_ok && shared_ok {
            r.outcome = Outcome::UpToDate;
            return r;
        }
        r.outcome = Outcome::OutOfDate;
        r.detail = Some(if release_ok {
            "the rendered worker files differ".into()
        } else {
            format!(
                "runs {}, git wants {id}",
                ins.current.as_deref().unwrap_or("nothing")
            )
        });
        r
    }

    /// The arguments of [`DEPLOY`] and [`SHIP`]: `TARGET TOKEN RELEASE KEEP
    /// HEALTH_TIMEOUT NS NR`, then `extra` (DEPLOY's own), then the setup and restart
    /// commands and the health check.
    fn ship_args(&self, extra: &[String]) -> Vec<String> {
        let d = &self.host.deployment;
        let mut args = vec![
            d.target_dir.clone(),
            self.token.to_string(),
            self.release_id.to_string(),
            d.keep_releases.max(1).to_string(),
            d.health_check_timeout_secs.max(1).to_string(),
            d.setup_command.len().to_string(),
            d.restart_command.len().to_string(),
        ];
        args.extend(extra.iter().cloned());
        args.extend(d.setup_command.iter().cloned());
        args.extend(d.restart_command.iter().cloned());
        args.extend(d.health_check_command.iter().cloned());
        args
    }

    /// Whether the host runs the release, and whether its `shared/` files are the wanted
    /// ones, by what it reported.
    fn up_to_date(&self, ins: &Inspected, want_shared: &BTreeMap<String, String>) -> (bool, bool) {
        let release_ok = ins.current.as_deref() == Some(self.release_id);
        let shared_ok = want_shared
            .iter()
            .all(|(k, v)| ins.shared.get(k) == Some(v));
        (release_ok, shared_ok)
    }

    fn ship_timeout(&self) -> Duration {
        self.timeout() * 5
            + Duration::from_secs(self.host.deployment.health_check_timeout_secs.max(1))
    }

    /// The archive for what the host reported: the release part when it does not run the
    /// release (`full`: everything, nothing linked), the rendered files when they differ.
    fn archive_for(
        &self,
        ins: &Inspected,
        want_shared: &BTreeMap<String, String>,
        full: bool,
    ) -> Result<(Vec<u8>, u64, u64), String> {
        let (release_ok, shared_ok) = self.up_to_date(ins, want_shared);
        // A host that is up to date by the controller's reading but not by its own gets
        // the rendered files again, so the two agree afterwards.
        let shared = if shared_ok && !release_ok {
            BTreeMap::new()
        } else {
            self.shared.clone()
        };
        let part = if release_ok {
            None
        } else if full {
            Some((self.release_part)(&Previous::new())?)
        } else {
            Some((self.release_part)(&ins.previous)?)
        };
        let archive = release::archive(part.as_deref(), &shared)
            .map_err(|e| format!("cannot build the archive: {e}"))?;
        let files = part.as_ref().map_or(0, |p| p.files) + shared.len() as u64;
        let linked = part.as_ref().map_or(0, |p| p.linked);
        Ok((archive, files, linked))
    }

    /// Runs [`DEPLOY`]: one session that reports, locks, receives the archive built from
    /// its report, and ships. Transient SSH failures are retried (the whole session: a
    /// retried session keeps its own lock) as long as the release was not set up yet.
    /// An error comes with whether the host's lock was taken.
    fn deploy_session(
        &self,
        want_shared: &BTreeMap<String, String>,
        sent: &mut Sent,
    ) -> Result<RemoteOutput, (StepError, bool)> {
        let want: String = want_shared
            .iter()
            .map(|(name, sum)| format!("{sum}  {name}\n"))
            .collect();
        let args = self.ship_args(&[DEPLOY_LOCK_STALE_MINUTES.to_string(), want]);
        let ssh_args = self.remote(DEPLOY, &args);
        let ready = format!("{} ready", self.token);
        let mut delay = Duration::from_millis(500);
        let mut attempt = 1;
        // Whether any attempt took the lock (a later one may fail before it reports).
        let mut held = false;
        loop {
            let mut built: Option<Result<(), String>> = None;
            let mut respond = |report: &str| -> Option<Vec<u8>> {
                match self.archive_for(&parse_inspect(report), want_shared, false) {
                    Ok((archive, files, linked)) => {
                        sent.files += files;
                        sent.bytes += archive.len() as u64;
                        sent.linked = linked;
                        built = Some(Ok(()));
                        Some(archive)
                    }
                    Err(e) => {
                        built = Some(Err(e));
                        None
                    }
                }
            };
            let out = ssh::run_dialog(&ssh_args, &ready, &mut respond, self.ship_timeout())
                .map_err(|e| {
                    let e = StepError {
                        message: format!("cannot run ssh: {e}"),
                        transient: false,
                    };
                    (e, held)
                })?;
            held |= self.report_of(&out.stdout).lines().any(|l| l == "locked=1");
            let locked = held;
            if let Some(Err(message)) = built {
                let e = StepError {
                    message,
                    transient: false,
                };
                return Err((e, locked));
            }
            let phase = self.marked(&out.stdout, "phase=").pop().unwrap_or_default();
            let what = if phase.is_empty() {
                "prepare"
            } else {
                "transfer"
            };
            let early = phase.is_empty() || phase == "transfer";
            match out.failure() {
                Some(f) if early && f.transient() && attempt < ATTEMPTS => {
                    std::thread::sleep(delay);
                    delay *= 2;
                    attempt += 1;
                }
                Some(f) if early => {
                    let e = StepError {
                        message: format!("{what}: {} ({})", f.label(), last_line(&out.stderr)),
                        transient: f.transient(),
                    };
                    return Err((e, locked));
                }
                None if phase.is_empty() && out.status != Some(0) => {
                    let e = StepError {
                        message: exit_message("prepare", &out),
                        transient: false,
                    };
                    return Err((e, locked));
                }
                _ => return Ok(out),
            }
        }
    }

    /// Reads the outcome of a locked deploy session (sending the whole release once more
    /// when linked files failed their check). Returns whether the session finished (pruned
    /// and released the lock).
    fn conclude(
        &self,
        ins: &Inspected,
        want_shared: &BTreeMap<String, String>,
        mut out: RemoteOutput,
        sent: &mut Sent,
        r: &mut HostResult,
    ) -> bool {
        let d = &self.host.deployment;
        let t = d.target_dir.clone();
        let id = self.release_id.to_string();
        let release_ok = ins.current.as_deref() == Some(id.as_str());
        let mut phase = self.marked(&out.stdout, "phase=").pop().unwrap_or_default();
        if phase == "transfer" && out.status == Some(14) && sent.linked > 0 {
            // What was linked from the current release was changed on the host.
            let retry = self
                .archive_for(ins, want_shared, true)
                .map_err(|message| StepError {
                    message,
                    transient: false,
                })
                .and_then(|(archive, files, _)| {
                    sent.files += files;
                    sent.bytes += archive.len() as u64;
                    let args = self.ship_args(&[]);
                    self.script_with(SHIP, &args, Some(archive), self.ship_timeout())
                        .map_err(|e| StepError {
                            message: format!("cannot run ssh: {e}"),
                            transient: false,
                        })
                });
            match retry {
                Ok(o) => {
                    phase = self.marked(&o.stdout, "phase=").pop().unwrap_or_default();
                    out = o;
                }
                Err(e) => {
                    *r = fail(r.clone(), e);
                    return false;
                }
            }
        }
        if out.status == Some(0) {
            r.outcome = Outcome::Deployed;
            if !release_ok {
                r.current = Some(id);
            }
            r.pruned = self.marked(&out.stdout, "pruned=");
            return true;
        }
        if phase == "finish" {
            r.outcome = Outcome::Deployed;
            r.current = Some(id);
            r.detail = Some(format!(
                "deployed, but pruning or releasing the deploy lock failed: {}",
                last_line(&out.stderr)
            ));
            return false;
        }
        if phase != "verify" {
            let what = if phase == "setup" {
                "setup"
            } else {
                "transfer"
            };
            let message = match out.failure() {
                Some(f) => format!("{what}: {} ({})", f.label(), last_line(&out.stderr)),
                None => exit_message(what, &out),
            };
            let e = StepError {
                message,
                transient: false,
            };
            *r = fail(r.clone(), e);
            return false;
        }
        if !release_ok {
            r.current = Some(id.clone());
        }
        // Restart or health check failed: switch back and restart the previous release.
        let why = verify_failure(&out, d.health_check_timeout_secs.max(1));
        let current_dir = format!("{t}/current");
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
                        r.detail = Some(format!("{why}; rolling back to {prev} failed too: {e}"));
                    }
                }
            }
            None => {
                r.outcome = Outcome::Failed;
                r.detail = Some(format!("{why}; no previous release to roll back to"));
            }
        }
        false
    }

    fn shared_sums(&self) -> BTreeMap<String, String> {
        self.shared
            .iter()
            .map(|(k, v)| (k.clone(), sha256_hex(v)))
            .collect()
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

/// Why the `verify` phase of [`SHIP`] failed, from its output.
fn verify_failure(out: &RemoteOutput, hto: u64) -> String {
    let msg = last_line(&out.stderr);
    match (out.failure(), out.status) {
        (Some(Failure::Timeout), _) => "restart and health check timed out".into(),
        (Some(f), _) => format!("restart and health check: {} ({msg})", f.label()),
        (None, Some(20)) => format!("restart failed: {msg}"),
        (None, Some(124)) => format!("health check timed out after {hto}s"),
        (None, code) => {
            if msg.is_empty() {
                format!("health check failed (exit status {})", code.unwrap_or(-1))
            } else {
                format!(
                    "health check failed (exit status {}): {msg}",
                    code.unwrap_or(-1)
                )
            }
        }
    }
}

/// `WHAT exited with status N: <its last line of standard error>`.
fn exit_message(what: &str, out: &RemoteOutput) -> String {
    format!(
        "{what} exited with status {}: {}",
        out.status.unwrap_or(-1),
        last_line(&out.stderr)
    )
}

fn last_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or_default()
        .to_string()
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
    fn scripts_hold_no_interpolation_points() {
        // Values arrive as "$1", "$2", "$@" only; nothing is spliced into the text.
        for s in [INSPECT, DEPLOY, SHIP, SWITCH, RUN_IN, FINISH] {
            assert!(!s.contains("{}"), "{s}");
            assert!(!s.contains("eval"), "{s}");
        }
    }
}
