//! Running commands on hosts through the system `ssh` (which honours `~/.ssh/config`,
//! agents, ProxyJump and certificates).
//!
//! Every value from the manifests reaches `ssh` as its own argv entry, and was validated
//! before (addresses, user names, ports). The remote command is the one place where a
//! string is interpreted by a shell (sshd hands it to the user's login shell), so every
//! remote argument is quoted on its own with [`shell_quote`], never concatenated raw.

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::desired::CompiledHost;

/// How celeroot connects, beyond each host's own SSH settings.
#[derive(Debug, Clone, Default)]
pub struct SshOptions {
    /// The known_hosts file host keys are checked against (default: ssh's own,
    /// `~/.ssh/known_hosts`).
    pub known_hosts: Option<PathBuf>,
    /// Accept and record the key of a host never seen before (`StrictHostKeyChecking
    /// accept-new`). A changed key is refused either way.
    pub accept_new_host_keys: bool,
    /// Directory for connection-sharing sockets (`ControlMaster`); `None`: no sharing.
    pub control_dir: Option<PathBuf>,
}

/// Quotes one argument for a POSIX shell: `'...'`, with `'` written as `'\''`. Any byte
/// string comes out as exactly one word, with nothing expanded or executed.
pub fn shell_quote(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('\'');
    for c in arg.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Why `address` is a placeholder that must not be contacted: the documentation ranges
/// (RFC 5737 `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`; RFC 3849 `2001:db8::/32`)
/// and the reserved names (RFC 2606/6761 `.example`, `.invalid`, `example.com/.net/.org`)
/// that the bundled and `celeroot init` manifests use. `None` for a real address.
pub fn placeholder(address: &str) -> Option<&'static str> {
    use std::net::IpAddr;
    if let Ok(ip) = address.trim_matches(['[', ']']).parse::<IpAddr>() {
        return match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                matches!(
                    (o[0], o[1], o[2]),
                    (192, 0, 2) | (198, 51, 100) | (203, 0, 113)
                )
                .then_some("a documentation address (RFC 5737)")
            }
            IpAddr::V6(v6) => {
                let s = v6.segments();
                (s[0] == 0x2001 && s[1] == 0x0db8).then_some("a documentation address (RFC 3849)")
            }
        };
    }
    let name = address.trim_end_matches('.').to_ascii_lowercase();
    let reserved = [
        "example",
        "invalid",
        "example.com",
        "example.net",
        "example.org",
    ];
    reserved
        .iter()
        .any(|r| name == *r || name.ends_with(&format!(".{r}")))
        .then_some("a reserved example name (RFC 2606)")
}

/// The message for a host whose address is a [`placeholder`].
pub fn placeholder_message(host: &str, address: &str, why: &str) -> String {
    format!(
        "{address} is {why}, a placeholder from the example manifests: replace it with the real address of {host} (`celeroot hosts update {host} --address ADDR`); nothing was sent"
    )
}

/// The argv (without the program) of `ssh` running `remote` (an argv list) on `host`.
pub fn ssh_args(host: &CompiledHost, opts: &SshOptions, remote: &[String]) -> Vec<OsString> {
    args(host, opts, remote, false)
}

/// The argv asking the shared connection (ControlMaster) to `host` to exit.
pub fn exit_master_args(host: &CompiledHost, opts: &SshOptions) -> Vec<OsString> {
    let mut a = args(host, opts, &[], true);
    a.extend([
        "-O".into(),
        "exit".into(),
        "--".into(),
        host.address.clone().into(),
    ]);
    a
}

fn args(
    host: &CompiledHost,
    opts: &SshOptions,
    remote: &[String],
    options_only: bool,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut opt = |k: &str, v: String| {
        a.push("-o".into());
        a.push(format!("{k}={v}").into());
    };
    opt("BatchMode", "yes".into());
    opt(
        "StrictHostKeyChecking",
        if opts.accept_new_host_keys {
            "accept-new"
        } else {
            "yes"
        }
        .into(),
    );
    opt(
        "ConnectTimeout",
        host.ssh.connect_timeout_secs.max(1).to_string(),
    );
    opt("ServerAliveInterval", "10".into());
    opt("ServerAliveCountMax", "3".into());
    opt("LogLevel", "ERROR".into());
    if let Some(k) = &opts.known_hosts {
        opt("UserKnownHostsFile", k.display().to_string());
    }
    if let Some(dir) = &opts.control_dir {
        opt("ControlMaster", "auto".into());
        opt("ControlPath", dir.join("%C").display().to_string());
        opt("ControlPersist", "30".into());
    }
    a.push("-p".into());
    a.push(host.ssh.port.to_string().into());
    if let Some(key) = &host.ssh.identity_file {
        a.push("-i".into());
        a.push(expand_home(key));
        a.push("-o".into());
        a.push("IdentitiesOnly=yes".into());
    }
    a.push("-l".into());
    a.push(host.ssh.user.clone().into());
    if options_only {
        return a;
    }
    // `--` ends ssh's options: the destination can never be read as one.
    a.push("--".into());
    a.push(host.address.clone().into());
    if !remote.is_empty() {
        let quoted: Vec<String> = remote.iter().map(|r| shell_quote(r)).collect();
        a.push(quoted.join(" ").into());
    }
    a
}

fn expand_home(path: &str) -> OsString {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest).into_os_string(),
        _ => path.into(),
    }
}

/// What a remote command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteOutput {
    /// The exit status; `None` when it was killed for taking longer than the timeout.
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Why `ssh` could not run a command (as opposed to the command failing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Failure {
    Unreachable,
    AuthFailed,
    HostKeyUnknown,
    HostKeyChanged,
    Timeout,
    Other,
}

impl Failure {
    pub fn label(self) -> &'static str {
        match self {
            Failure::Unreachable => "unreachable",
            Failure::AuthFailed => "auth-failed",
            Failure::HostKeyUnknown => "host-key-unknown",
            Failure::HostKeyChanged => "host-key-changed",
            Failure::Timeout => "timeout",
            Failure::Other => "ssh-error",
        }
    }

    /// Whether retrying may help (a network hiccup, not a key or credential problem).
    pub fn transient(self) -> bool {
        matches!(self, Failure::Unreachable | Failure::Timeout)
    }
}

impl RemoteOutput {
    /// Classifies an `ssh` failure (exit status 255) from its message.
    pub fn failure(&self) -> Option<Failure> {
        self.failure_of(&[255])
    }

    fn failure_of(&self, transport: &[i32]) -> Option<Failure> {
        match self.status {
            None => Some(Failure::Timeout),
            Some(c) if transport.contains(&c) => {
                let e = &self.stderr;
                Some(if e.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
                    Failure::HostKeyChanged
                } else if e.contains("Host key verification failed")
                    || e.contains("No ED25519 host key is known")
                    || e.contains("host key is known")
                {
                    Failure::HostKeyUnknown
                } else if e.contains("Permission denied")
                    || e.contains("Too many authentication failures")
                {
                    Failure::AuthFailed
                } else if e.contains("Connection refused")
                    || e.contains("timed out")
                    || e.contains("No route to host")
                    || e.contains("Could not resolve")
                    || e.contains("Network is unreachable")
                    || e.contains("Connection closed")
                    || e.contains("Connection reset")
                {
                    Failure::Unreachable
                } else {
                    Failure::Other
                })
            }
            Some(_) => None,
        }
    }
}

/// Runs `ssh` with `args`, killing it after `timeout`.
///
/// # Errors
/// When `ssh` cannot be started (not installed).
pub fn run(args: &[OsString], timeout: Duration) -> std::io::Result<RemoteOutput> {
    run_program("ssh", args, timeout)
}

/// Runs `program` with `args` (no shell), killing it after `timeout`.
///
/// # Errors
/// When the program cannot be started.
pub fn run_program(
    program: &str,
    args: &[OsString],
    timeout: Duration,
) -> std::io::Result<RemoteOutput> {
    run_program_with_input(program, args, None, timeout)
}

/// [`run`], writing `input` to the command's standard input: how a secret reaches a
/// host (never in an argument, which `ps` shows on both ends).
///
/// # Errors
/// When `ssh` cannot be started.
pub fn run_with_input(
    args: &[OsString],
    input: &str,
    timeout: Duration,
) -> std::io::Result<RemoteOutput> {
    run_program_with_input("ssh", args, Some(input), timeout)
}

/// [`run`], writing `input` (when given) to the command's standard input: how a deploy's
/// archive reaches a host.
///
/// # Errors
/// When `ssh` cannot be started.
pub fn run_with_bytes(
    args: &[OsString],
    input: Option<Vec<u8>>,
    timeout: Duration,
) -> std::io::Result<RemoteOutput> {
    let mut cmd = Command::new("ssh");
    cmd.args(args);
    run_command_bytes(cmd, input, timeout)
}

/// Runs `ssh` with `args` as a dialog: when the command prints the line `ready`,
/// `respond` gets everything it printed before that line, and what it returns is written
/// to the command's standard input, which is then closed (`None`: closed at once). A
/// command that ends without printing `ready` gets no input. Killed after `timeout`.
///
/// # Errors
/// When `ssh` cannot be started.
pub fn run_dialog(
    args: &[OsString],
    ready: &str,
    respond: &mut dyn FnMut(&str) -> Option<Vec<u8>>,
    timeout: Duration,
) -> std::io::Result<RemoteOutput> {
    use std::io::BufRead as _;
    let started = Instant::now();
    let mut child = Command::new("ssh")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take();
    let out_pipe = child.stdout.take();
    let err_t = read_all(child.stderr.take());
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let ready_line = ready.to_string();
    let out_t = std::thread::spawn(move || {
        let mut all = String::new();
        let Some(pipe) = out_pipe else {
            return all;
        };
        let mut reader = std::io::BufReader::new(pipe);
        let mut line = Vec::new();
        let mut told = false;
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line);
            if !told && text.trim_end_matches('\n') == ready_line {
                told = true;
                let _ = tx.send(all.clone());
            }
            all.push_str(&text);
        }
        all
    });
    let mut writer = None;
    let status = loop {
        let wait = Duration::from_millis(5);
        let told = if stdin.is_some() {
            rx.recv_timeout(wait).ok()
        } else {
            std::thread::sleep(wait);
            None
        };
        if let Some(report) = told {
            if let Some(mut pipe) = stdin.take() {
                if let Some(bytes) = respond(&report) {
                    // On a thread, so a command that stops reading cannot stall us;
                    // dropping the pipe closes the command's standard input.
                    writer = Some(std::thread::spawn(move || {
                        let _ = std::io::Write::write_all(&mut pipe, &bytes);
                    }));
                }
            }
        }
        if let Some(status) = exited(&mut child, started, timeout)? {
            break status;
        }
    };
    drop(stdin);
    if let Some(w) = writer {
        let _ = w.join();
    }
    Ok(RemoteOutput {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
        elapsed: started.elapsed(),
    })
}

fn run_program_with_input(
    program: &str,
    args: &[OsString],
    input: Option<&str>,
    timeout: Duration,
) -> std::io::Result<RemoteOutput> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    run_command(cmd, input, timeout)
}

/// `Some(status)` once `child` has exited (`Some(None)`: killed for running longer than
/// `timeout`), `None` while it runs.
fn exited(
    child: &mut std::process::Child,
    started: Instant,
    timeout: Duration,
) -> std::io::Result<Option<Option<i32>>> {
    if let Some(st) = child.try_wait()? {
        return Ok(Some(st.code()));
    }
    if started.elapsed() > timeout {
        let _ = child.kill();
        let _ = child.wait();
        return Ok(Some(None));
    }
    Ok(None)
}

/// Reads a pipe to its end on a thread, so a chatty command cannot fill it and stall.
fn read_all<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut s);
        }
        s
    })
}

/// Runs `cmd` (no shell), with `input` on its standard input (else none), capturing its
/// output and killing it after `timeout` (status `None`).
///
/// # Errors
/// When the program cannot be started.
pub fn run_command(
    cmd: Command,
    input: Option<&str>,
    timeout: Duration,
) -> std::io::Result<RemoteOutput> {
    run_command_bytes(cmd, input.map(|t| t.as_bytes().to_vec()), timeout)
}

fn run_command_bytes(
    mut cmd: Command,
    input: Option<Vec<u8>>,
    timeout: Duration,
) -> std::io::Result<RemoteOutput> {
    let started = Instant::now();
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(bytes), Some(mut pipe)) = (input, child.stdin.take()) {
        // On a thread, so a command that does not read cannot stall us; dropping the
        // pipe closes the command's standard input.
        std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut pipe, &bytes);
        });
    }
    let out_t = read_all(child.stdout.take());
    let err_t = read_all(child.stderr.take());
    let status = loop {
        if let Some(status) = exited(&mut child, started, timeout)? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(RemoteOutput {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documentation_addresses_and_reserved_names_are_placeholders() {
        for p in [
            "192.0.2.11",
            "198.51.100.7",
            "203.0.113.255",
            "2001:db8::1",
            "[2001:db8::2]",
            "db02.fra1.example",
            "web01.example.com",
            "x.invalid",
            "HOST.EXAMPLE.",
        ] {
            assert!(placeholder(p).is_some(), "{p}");
        }
        for real in [
            "127.0.1.5",
            "10.0.0.1",
            "192.0.3.1",
            "::1",
            "web01.fra1.acme.io",
            "example.io",
        ] {
            assert_eq!(placeholder(real), None, "{real}");
        }
    }
    use crate::desired::{EffectiveDeployment, EffectiveSsh};

    fn host() -> CompiledHost {
        CompiledHost {
            address: "192.0.2.1".into(),
            roles: vec![],
            queues: vec![],
            labels: Default::default(),
            ssh: EffectiveSsh {
                user: "deploy".into(),
                port: 2222,
                identity_file: Some("/keys/id".into()),
                connect_timeout_secs: 5,
            },
            deployment: EffectiveDeployment {
                user: "celeroot".into(),
                group: "celeroot".into(),
                target_dir: "/opt/celeroot".into(),
                service_name: "celeroot-worker".into(),
                restart_command: vec![],
                health_check_command: vec![],
                health_check_timeout_secs: 30,
                setup_command: vec![],
                keep_releases: 5,
            },
        }
    }

    #[test]
    fn quoting_makes_one_inert_word() {
        assert_eq!(shell_quote("plain"), "'plain'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(rm -rf /); `id`\n"), "'$(rm -rf /); `id`\n'");
    }

    #[test]
    fn argv_keeps_values_apart_and_checks_host_keys() {
        let args: Vec<String> = ssh_args(
            &host(),
            &SshOptions {
                known_hosts: Some("/k/known".into()),
                accept_new_host_keys: false,
                control_dir: None,
            },
            &["echo".into(), "a b".into()],
        )
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
        for want in [
            "BatchMode=yes",
            "StrictHostKeyChecking=yes",
            "UserKnownHostsFile=/k/known",
            "ConnectTimeout=5",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
        }
        assert_eq!(
            args[args.len() - 5..],
            ["-l", "deploy", "--", "192.0.2.1", "'echo' 'a b'"]
        );
    }

    #[test]
    fn failures_are_classified() {
        let out = |status, stderr: &str| RemoteOutput {
            status,
            stdout: String::new(),
            stderr: stderr.into(),
            elapsed: Duration::ZERO,
        };
        assert_eq!(out(Some(0), "").failure(), None);
        assert_eq!(
            out(Some(3), "boom").failure(),
            None,
            "the command failed, not ssh"
        );
        assert_eq!(out(None, "").failure(), Some(Failure::Timeout));
        assert_eq!(
            out(
                Some(255),
                "ssh: connect to host 127.0.1.9 port 22: Connection refused"
            )
            .failure(),
            Some(Failure::Unreachable)
        );
        assert_eq!(
            out(Some(255), "root@127.0.1.2: Permission denied (publickey).").failure(),
            Some(Failure::AuthFailed)
        );
        assert_eq!(
            out(Some(255), "@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @\nHost key verification failed.").failure(),
            Some(Failure::HostKeyChanged)
        );
        assert_eq!(
            out(Some(255), "No ED25519 host key is known for [127.0.1.2]:2222 and you have requested strict checking.\nHost key verification failed.").failure(),
            Some(Failure::HostKeyUnknown)
        );
        assert!(Failure::Unreachable.transient() && !Failure::HostKeyChanged.transient());
    }
}
