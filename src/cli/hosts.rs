//! `celeroot hosts`: list, show, add, update and remove hosts in the manifests, test SSH
//! connections, and create agent credentials.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use serde_json::{json, Value as Json};

use super::edit::{self as e, EditArgs, ReadArgs};
use super::{live, Cli, CommandError, Ui, EXIT_ERROR, EXIT_OK};
use crate::deploy::{self, SshOptions};
use crate::edit::ops::{self, HostFields};
use crate::manifest::Kind;

/// Hosts: list, show, add, update and remove them in the manifests; test SSH; agent
/// credentials.
#[derive(Debug, Args)]
pub struct HostsArgs {
    #[command(subcommand)]
    pub command: HostsCommand,
}

#[derive(Debug, Subcommand)]
pub enum HostsCommand {
    /// List the hosts in the manifests (the work tree, or --rev).
    #[command(alias = "list")]
    Ls(ReadArgs),
    /// Show a host: its file, fields, effective SSH and deployment settings, queues and
    /// the schedules that reach it.
    Show(ShowArgs),
    Add(AddArgs),
    Update(UpdateArgs),
    /// Remove a host's manifest. Refused while a schedule targets it by name.
    #[command(alias = "remove")]
    Rm(RmArgs),
    TestConnection(TestConnectionArgs),
    Credentials(CredentialsArgs),
}

/// Show one object: its file, its fields, and what they resolve to.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The name.
    pub name: String,
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Remove an object's manifest (its file, or its document in a multi-document file).
#[derive(Debug, Args)]
pub struct RmArgs {
    /// The name.
    pub name: String,
    #[command(flatten)]
    pub edit: EditArgs,
}

/// Add a host: writes `<path>/hosts/NAME.yaml`, after checking the whole repository with it.
///
/// Ends by printing what brings the host up (`celeroot reconcile`, then `celeroot deploy`).
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The host's name (an RFC 1123 label, e.g. web03).
    pub name: String,
    /// IPv4/IPv6 address or DNS name used to reach the host.
    #[arg(long, value_name = "ADDRESS")]
    pub address: String,
    /// A role the host runs (repeat for several; each must exist).
    #[arg(long = "role", value_name = "ROLE", required = true)]
    pub roles: Vec<String>,
    #[command(flatten)]
    pub fields: HostOptions,
    #[command(flatten)]
    pub edit: EditArgs,
}

/// Options shared by `hosts add` and `hosts update`.
#[derive(Debug, Clone, Args)]
pub struct HostOptions {
    /// Set a label (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = ops::parse_label)]
    pub labels: Vec<(String, String)>,
    /// SSH user (overrides the cluster default).
    #[arg(long, value_name = "USER")]
    pub ssh_user: Option<String>,
    /// SSH port (overrides the cluster default).
    #[arg(long, value_name = "PORT")]
    pub ssh_port: Option<u16>,
    /// SSH private key on the machine running celeroot (overrides the cluster default).
    #[arg(long, value_name = "PATH")]
    pub ssh_key: Option<String>,
    /// Set any field under spec (or metadata.*), e.g. deployment.targetDir=/srv/celeroot;
    /// the value is read as YAML (`null` removes the field). Repeatable.
    #[arg(long = "set", value_name = "PATH=VALUE", value_parser = ops::parse_set)]
    pub set: Vec<(Vec<String>, Json)>,
}

/// Change fields of a host in place, keeping the file's comments and layout.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The host.
    pub name: String,
    /// New address.
    #[arg(long, value_name = "ADDRESS")]
    pub address: Option<String>,
    /// Replace the host's roles (repeat for several).
    #[arg(long = "role", value_name = "ROLE")]
    pub roles: Vec<String>,
    /// Add a role.
    #[arg(long = "add-role", value_name = "ROLE")]
    pub add_roles: Vec<String>,
    /// Remove a role.
    #[arg(long = "remove-role", value_name = "ROLE")]
    pub remove_roles: Vec<String>,
    /// Remove a label.
    #[arg(long = "remove-label", value_name = "KEY")]
    pub remove_labels: Vec<String>,
    #[command(flatten)]
    pub fields: HostOptions,
    #[command(flatten)]
    pub edit: EditArgs,
}

/// Create (or rotate) the Redis ACL users of a host's agent and of its Celery worker,
/// and install their URLs on the host over SSH (--install) or print them once.
///
/// The agent's user may read its host's worker configuration, write its own heartbeat and
/// listen for changes; the worker's may consume its own queues and take part in Celery's
/// result, control and event traffic; nothing else (docs/agent.md). The passwords are
/// stored nowhere else (Redis keeps only their hashes). Needs a --redis user allowed to
/// run `ACL SETUSER`.
#[derive(Debug, Args)]
pub struct CredentialsArgs {
    /// The host.
    pub host: String,
    /// Rotate the passwords of existing users. With --install, without a gap: the new
    /// passwords are added, the file installed, and the old ones removed once the host's
    /// heartbeat shows its agent running with the new file. Without, the old passwords
    /// stop working at once.
    #[arg(long)]
    pub rotate: bool,
    /// Install the credentials on the host over SSH, into
    /// <targetDir>/shared/credentials.env (mode 0600), instead of printing them. The host
    /// must have been deployed to.
    #[arg(long)]
    pub install: bool,
    /// With --rotate --install: how long to wait for the host to pick up the new file
    /// before giving up (both passwords then stay valid).
    #[arg(long, value_name = "DUR", default_value = "2m", value_parser = super::watch::parse_duration)]
    pub wait: std::time::Duration,
    #[command(flatten)]
    pub ssh: super::deploy::SshArgs,
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
    /// The table with every cell in full.
    Wide,
    Json,
}

pub fn run(ui: &Ui, cli: &Cli, a: &HostsArgs) -> Result<u8, CommandError> {
    match &a.command {
        HostsCommand::Ls(r) => list(cli, r),
        HostsCommand::Show(s) => show(ui, cli, s),
        HostsCommand::Add(a) => add(ui, cli, a),
        HostsCommand::Update(u) => update(ui, cli, u),
        HostsCommand::Rm(r) => remove(ui, cli, Kind::Host, &r.name, &r.edit),
        HostsCommand::TestConnection(t) => test_connection(ui, cli, t),
        HostsCommand::Credentials(c) => credentials(ui, cli, c),
    }
}

fn fields(o: &HostOptions) -> HostFields {
    HostFields {
        labels: o.labels.clone(),
        ssh_user: o.ssh_user.clone(),
        ssh_port: o.ssh_port,
        ssh_key: o.ssh_key.clone(),
        set: o.set.clone(),
        ..HostFields::default()
    }
}

fn add(ui: &Ui, cli: &Cli, a: &AddArgs) -> Result<u8, CommandError> {
    let ws = e::workspace(cli)?;
    let f = HostFields {
        address: Some(a.address.clone()),
        roles: Some(a.roles.clone()),
        ..fields(&a.fields)
    };
    let change = ops::add_host(&ws, &a.name, &f).map_err(|err| e::error(Some(ui), err))?;
    let code = e::finish(
        ui,
        &ws,
        &[change],
        &a.edit,
        &format!("hosts: add {}", a.name),
    )?;
    if !a.edit.dry_run {
        next_steps(ui, &a.name, &a.address, a.edit.commit);
    }
    Ok(code)
}

/// What the operator does next to bring a new host up.
fn next_steps(ui: &Ui, name: &str, address: &str, committed: bool) {
    let s = &ui.stdout_style;
    outln!();
    outln!("{}", s.paint(s.bold(), "Next steps"));
    if committed {
        outln!("  1. Push the commit (a running `celeroot watch` applies it).");
    } else {
        outln!("  1. Commit the change: git add -A && git commit -m \"hosts: add {name}\" (or pass --commit).");
    }
    outln!(
        "  2. On {name} ({address}): an SSH user for celeroot with your key, python3, uv, GNU tar,"
    );
    outln!("     GNU coreutils, and systemd (docs/deploy.md). Check with: celeroot hosts test-connection {name}");
    outln!(
        "  3. Register it and deploy the worker code: celeroot reconcile (it deploys new hosts),"
    );
    outln!("     or celeroot reconcile --skip-deploy then celeroot deploy --host {name}.");
    outln!("  4. Give its agent Redis credentials: celeroot hosts credentials {name}");
}

fn update(ui: &Ui, cli: &Cli, u: &UpdateArgs) -> Result<u8, CommandError> {
    let ws = e::workspace(cli)?;
    let f = HostFields {
        address: u.address.clone(),
        roles: (!u.roles.is_empty()).then(|| u.roles.clone()),
        add_roles: u.add_roles.clone(),
        remove_roles: u.remove_roles.clone(),
        remove_labels: u.remove_labels.clone(),
        ..fields(&u.fields)
    };
    let change = ops::update_host(&ws, &u.name, &f).map_err(|err| e::error(Some(ui), err))?;
    e::finish(
        ui,
        &ws,
        &[change],
        &u.edit,
        &format!("hosts: update {}", u.name),
    )
}

/// `hosts|roles|schedules rm`.
pub(super) fn remove(
    ui: &Ui,
    cli: &Cli,
    kind: Kind,
    name: &str,
    edit: &EditArgs,
) -> Result<u8, CommandError> {
    let ws = e::workspace(cli)?;
    let change = ops::remove(&ws, kind, name).map_err(|err| e::error(Some(ui), err))?;
    let what = kind.as_str().to_ascii_lowercase();
    e::finish(ui, &ws, &[change], edit, &format!("{what}s: remove {name}"))
}

fn list(cli: &Cli, r: &ReadArgs) -> Result<u8, CommandError> {
    let ws = e::read_workspace(cli, &r.rev)?;
    let docs: Vec<_> = ws
        .docs()
        .into_iter()
        .filter(|d| d.kind == Kind::Host)
        .collect();
    if !r.output.is_table() {
        e::print_documents(r.output, &docs.iter().map(|d| &d.value).collect::<Vec<_>>());
        return Ok(EXIT_OK);
    }
    let mut docs = docs;
    docs.sort_by(|a, b| a.name.cmp(&b.name));
    let rows: Vec<[String; 5]> = docs
        .iter()
        .map(|d| {
            [
                d.name.clone(),
                e::scalar_text(d.value.pointer("/spec/address").unwrap_or(&Json::Null)),
                e::list_or_dash(&e::strings(d.value.pointer("/spec/roles"))),
                labels_text(d.value.pointer("/metadata/labels")),
                format!("{}:{}", d.file, d.line),
            ]
        })
        .collect();
    out!(
        "{}",
        super::table(
            r.output.wide(),
            &["NAME", "ADDRESS", "ROLES", "LABELS", "FILE"],
            &rows
        )
    );
    Ok(EXIT_OK)
}

/// `k=v,k=v`, or `-`.
pub(super) fn labels_text(v: Option<&Json>) -> String {
    let pairs: Vec<String> = v
        .and_then(Json::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", e::scalar_text(v)))
                .collect()
        })
        .unwrap_or_default();
    if pairs.is_empty() {
        "-".into()
    } else {
        pairs.join(",")
    }
}

fn show(ui: &Ui, cli: &Cli, a: &ShowArgs) -> Result<u8, CommandError> {
    let ws = e::read_workspace(cli, &a.read.rev)?;
    let doc = ws
        .find(Kind::Host, &a.name)
        .map_err(|err| e::error(Some(ui), err))?;
    let compiled = ws.check(&[]).ok();
    let host = compiled.as_ref().and_then(|c| c.state.hosts.get(&a.name));
    let schedules: Vec<String> = compiled
        .as_ref()
        .map(|c| {
            c.state
                .schedules
                .iter()
                .filter(|(_, s)| {
                    s.entries.iter().any(|en| match en.kind {
                        crate::desired::EntryKind::Host => en.name == a.name,
                        crate::desired::EntryKind::Role => {
                            host.is_some_and(|h| h.roles.contains(&en.name))
                        }
                    })
                })
                .map(|(n, _)| n.clone())
                .collect()
        })
        .unwrap_or_default();
    if !a.read.output.is_table() {
        let value = json!({
            "file": doc.file,
            "line": doc.line,
            "manifest": doc.value,
            "effective": host,
            "schedules": schedules,
        });
        e::print_value(a.read.output, &value);
        return Ok(EXIT_OK);
    }
    e::print_header(ui, &doc);
    let v = &doc.value;
    let row = |k: &str, v: String| outln!("  {k:<12} {v}");
    row(
        "address",
        e::scalar_text(v.pointer("/spec/address").unwrap_or(&Json::Null)),
    );
    row(
        "roles",
        e::list_or_dash(&e::strings(v.pointer("/spec/roles"))),
    );
    row("labels", labels_text(v.pointer("/metadata/labels")));
    match host {
        Some(h) => {
            row("queues", h.queues.join(", "));
            row(
                "ssh",
                format!(
                    "{}@{}:{}{} (connect timeout {}s)",
                    h.ssh.user,
                    h.address,
                    h.ssh.port,
                    h.ssh
                        .identity_file
                        .as_ref()
                        .map(|k| format!(", key {k}"))
                        .unwrap_or_default(),
                    h.ssh.connect_timeout_secs
                ),
            );
            row(
                "deployment",
                format!(
                    "{} (service {}, keep {} releases)",
                    h.deployment.target_dir, h.deployment.service_name, h.deployment.keep_releases
                ),
            );
            row("schedules", e::list_or_dash(&schedules));
        }
        None => outln!(
            "  (the manifests do not validate, so effective settings are not shown: run `celeroot validate --worktree`)"
        ),
    }
    Ok(EXIT_OK)
}

fn credentials(ui: &Ui, cli: &Cli, a: &CredentialsArgs) -> Result<u8, CommandError> {
    use crate::deploy::credentials::Delivery;
    let (_, rev) = live::revision(ui, cli, &a.rev)?;
    let state = &rev.compiled.state;
    if !state.hosts.contains_key(&a.host) {
        let mut err = CommandError::invalid(format!("no host named {:?} at {}", a.host, a.rev));
        if let Some(s) =
            crate::manifest::did_you_mean(&a.host, state.hosts.keys().map(String::as_str))
        {
            err = err.hinted(format!("did you mean {s:?}?"));
        }
        return Err(err);
    }
    let url = live::redis_url(cli)?;
    if url.db() != 0 {
        return Err(CommandError::invalid(format!(
            "{} selects database {}: an agent's Redis user may not run SELECT (an ACL cannot confine a user to one database, so SELECT would reach the same key names in every other one); nothing was created",
            url.redacted(),
            url.db()
        ))
        .hinted("keep each cluster's state in database 0 of a Redis of its own (clusters sharing one are kept apart by their key prefix)"));
    }
    let mut store = live::connect(cli, &state.cluster)?;
    let how = match (a.install, a.rotate) {
        (false, rotate) => Delivery::Show { rotate },
        (true, false) => Delivery::Install {
            ssh: a.ssh.options(),
        },
        (true, true) => Delivery::Rotate {
            ssh: a.ssh.options(),
            wait: a.wait,
        },
    };
    let host = &state.hosts[&a.host];
    let issued = crate::deploy::credentials::issue(&mut store, &url, &a.host, host, &how)?;
    let users = format!(
        "{} (the agent) and {} (its Celery worker) of {} (cluster {})",
        issued.agent_user, issued.worker_user, a.host, state.cluster
    );
    let file = format!(
        "{}/shared/{}",
        host.deployment.target_dir,
        crate::state::acl::CREDENTIALS_FILE
    );
    match how {
        Delivery::Show { rotate } => {
            outln!(
                "{} ACL users {users}.",
                if rotate { "Rotated the" } else { "Created" }
            );
            outln!("Put this in the host's agent environment (it is shown only now):");
            outln!();
            outln!("CELEROOT_REDIS_URL={}", issued.agent_url);
            outln!("CELEROOT_BROKER_URL={}", issued.worker_url);
            outln!("CELEROOT_RESULT_BACKEND={}", issued.worker_url);
        }
        Delivery::Install { .. } => outln!(
            "Created ACL users {users}, and installed their credentials in {}:{file} (fingerprint {}).",
            host.address,
            issued.fingerprint
        ),
        Delivery::Rotate { .. } => outln!(
            "Rotated the passwords of {users}: {}:{file} holds the new ones (fingerprint {}), the agent and its worker run with them, and the old ones no longer work.",
            host.address,
            issued.fingerprint
        ),
    }
    Ok(EXIT_OK)
}

fn test_connection(ui: &Ui, cli: &Cli, a: &TestConnectionArgs) -> Result<u8, CommandError> {
    let (_, rev) = live::revision(ui, cli, &a.rev)?;
    let hosts = &rev.compiled.state.hosts;
    if a.hosts.is_empty() && !a.all {
        return Err(
            CommandError::invalid("name the hosts to test, or pass --all").hinted(format!(
                "hosts at {}: {}",
                a.rev,
                hosts.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
        );
    }
    let mut selected = Vec::new();
    if a.all {
        selected.extend(hosts.iter().map(|(n, h)| (n.clone(), (**h).clone())));
    } else {
        for name in &a.hosts {
            match hosts.get(name) {
                Some(h) => selected.push((name.clone(), (**h).clone())),
                None => {
                    let mut err =
                        CommandError::invalid(format!("no host named {name:?} at {}", a.rev));
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
            serde_json::to_string_pretty(&crate::contract::ProbesDoc {
                format_version: crate::contract::OUTPUT_FORMAT_VERSION,
                hosts: probes.clone(),
            })
            .unwrap_or_default()
        ),
        Format::Text | Format::Wide => out!("{}", table(&probes, failed, a.output == Format::Wide)),
    }
    Ok(if failed == 0 { EXIT_OK } else { EXIT_ERROR })
}

fn table(probes: &[deploy::Probe], failed: usize, wide: bool) -> String {
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
    let mut out = super::table(
        wide,
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
