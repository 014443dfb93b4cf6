//! `celeroot hosts`: commands about hosts (for now: `test-connection`).

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::{live, Cli, CliError, Ui, EXIT_ERROR, EXIT_OK};
use crate::deploy::{self, SshOptions};

/// Commands about hosts.
#[derive(Debug, Args)]
pub struct HostsArgs {
    #[command(subcommand)]
    pub command: HostsCommand,
}

#[derive(Debug, Subcommand)]
pub enum HostsCommand {
    TestConnection(TestConnectionArgs),
    Credentials(CredentialsArgs),
}

/// Create (or rotate) the Redis ACL user of a host's agent, and print its Redis URL once.
///
/// The user may read its host's worker configuration, write its own heartbeat and listen
/// for changes; nothing else (docs/agent.md). The password is printed once and stored
/// nowhere else (Redis keeps only its hash). Needs a --redis user allowed to run
/// `ACL SETUSER`.
#[derive(Debug, Args)]
pub struct CredentialsArgs {
    /// The host.
    pub host: String,
    /// Replace the password of an existing user (the old one stops working).
    #[arg(long)]
    pub rotate: bool,
    /// The revision whose manifests name the cluster and its hosts.
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
}

/// Check that celeroot can reach each host over SSH: reachability, authentication, the
/// host key, and facts (OS, kernel, Python, uv), in a table.
///
/// Uses each host's effective SSH settings from the manifests at --rev, through the
/// system `ssh` (BatchMode, strict host key checking). Exit status: 0 when every host
/// answered, 1 otherwise.
#[derive(Debug, Args)]
pub struct TestConnectionArgs {
    /// The hosts to test.
    #[arg(value_name = "NAME", conflicts_with = "all")]
    pub hosts: Vec<String>,
    /// Test every host.
    #[arg(long)]
    pub all: bool,
    /// The revision whose manifests give the hosts' SSH settings.
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    /// known_hosts file to check host keys against (default: ssh's, ~/.ssh/known_hosts).
    #[arg(long, value_name = "FILE", env = "CELEROOT_KNOWN_HOSTS")]
    pub known_hosts: Option<PathBuf>,
    /// Accept and record the key of a host seen for the first time (a changed key is
    /// refused regardless).
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// How many hosts to test at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: u16,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub fn run(ui: &Ui, cli: &Cli, a: &HostsArgs) -> Result<u8, CliError> {
    match &a.command {
        HostsCommand::TestConnection(t) => test_connection(ui, cli, t),
        HostsCommand::Credentials(c) => credentials(ui, cli, c),
    }
}

fn credentials(ui: &Ui, cli: &Cli, a: &CredentialsArgs) -> Result<u8, CliError> {
    let (_, rev) = live::revision(ui, cli, &a.rev)?;
    let state = &rev.compiled.state;
    if !state.hosts.contains_key(&a.host) {
        let mut err = CliError::new(format!("no host named {:?} at {}", a.host, a.rev));
        if let Some(s) =
            crate::manifest::did_you_mean(&a.host, state.hosts.keys().map(String::as_str))
        {
            err = err.hinted(format!("did you mean {s:?}?"));
        }
        return Err(err);
    }
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| CliError::new(format!("cannot read /dev/urandom: {e}")))?;
    let password = hex::encode(bytes);
    let mut store = live::connect(cli, &state.cluster)?;
    let user = store
        .set_agent_credentials(&a.host, &password, a.rotate)
        .map_err(live::state_error)?;
    let url = live::redis_url(cli)?;
    let agent_url = url.with_credentials(&user, &password);
    outln!(
        "Created ACL user {user} for the agent of {} (cluster {}).",
        a.host,
        state.cluster
    );
    outln!("Put this in the host's agent environment (it is shown only now):");
    outln!();
    outln!("CELEROOT_REDIS_URL={agent_url}");
    Ok(EXIT_OK)
}

fn test_connection(ui: &Ui, cli: &Cli, a: &TestConnectionArgs) -> Result<u8, CliError> {
    let (_, rev) = live::revision(ui, cli, &a.rev)?;
    let hosts = &rev.compiled.state.hosts;
    if a.hosts.is_empty() && !a.all {
        return Err(
            CliError::new("name the hosts to test, or pass --all").hinted(format!(
                "hosts at {}: {}",
                a.rev,
                hosts.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
        );
    }
    let mut selected = Vec::new();
    if a.all {
        selected.extend(hosts.iter().map(|(n, h)| (n.clone(), h.clone())));
    } else {
        for name in &a.hosts {
            match hosts.get(name) {
                Some(h) => selected.push((name.clone(), h.clone())),
                None => {
                    let mut err = CliError::new(format!("no host named {name:?} at {}", a.rev));
                    if let Some(s) =
                        crate::manifest::did_you_mean(name, hosts.keys().map(String::as_str))
                    {
                        err = err.hinted(format!("did you mean {s:?}?"));
                    }
                    return Err(err);
                }
            }
        }
    }
    let opts = SshOptions {
        known_hosts: a.known_hosts.clone(),
        accept_new_host_keys: a.accept_new_host_keys,
        control_dir: None,
    };
    let probes = deploy::probe_all(&selected, &opts, usize::from(a.parallel));
    let failed = probes.iter().filter(|p| !p.ok()).count();
    match a.output {
        Format::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&probes).unwrap_or_default()
        ),
        Format::Text => out!("{}", table(&probes, failed)),
    }
    Ok(if failed == 0 { EXIT_OK } else { EXIT_ERROR })
}

fn table(probes: &[deploy::Probe], failed: usize) -> String {
    let rows: Vec<[String; 7]> = probes
        .iter()
        .map(|p| {
            let f = p.facts.clone().unwrap_or_default();
            let dash = |s: &str| {
                if s.is_empty() {
                    "-".to_string()
                } else {
                    s.to_string()
                }
            };
            [
                p.host.clone(),
                format!("{}@{}:{}", p.user, p.address, p.port),
                p.status.clone(),
                dash(&f.os),
                dash(&f.kernel),
                dash(&f.python),
                dash(&f.uv),
            ]
        })
        .collect();
    let mut out = super::observe::table(
        &["HOST", "SSH", "STATUS", "OS", "KERNEL", "PYTHON", "UV"],
        &rows,
    );
    for p in probes.iter().filter(|p| !p.ok()) {
        let _ = writeln!(out, "{}: {}", p.host, p.error.clone().unwrap_or_default());
    }
    let _ = writeln!(
        out,
        "\n{} of {} host(s) reachable.",
        probes.len() - failed,
        probes.len()
    );
    out
}
