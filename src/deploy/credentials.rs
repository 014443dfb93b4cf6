//! A host's Redis credentials, put on the host: its agent's and its worker's users
//! created (or rotated) in Redis, and the credentials file written into
//! `<targetDir>/shared/credentials.env` over SSH (mode 0600, through standard input,
//! never an argument), which the agent reads.
//!
//! A rotation has no gap: the new passwords are added beside the old ones, the new file
//! is installed, celeroot waits until the host's heartbeat shows the agent running with
//! it (the agent restarts its worker gracefully on the new broker URL), and only then
//! are the old passwords removed.
//! Must not know: YAML, manifests, output formats.

use std::time::{Duration, Instant};

use crate::desired::CompiledHost;
use crate::state::acl::{credentials_file, fingerprint, Passwords};
use crate::state::{RedisUrl, StateError, Store};

use super::ssh::{self, SshOptions};

/// Writes the file read from standard input to `TARGET/shared/credentials.env`, 0600,
/// owned by `USER:GROUP` when the session runs as root. Arguments: `TARGET USER GROUP`.
/// Exit 13: the target directory does not exist (deploy first).
const INSTALL: &str = r#"t=$1; user=$2; group=$3
[ -d "$t" ] || { echo "$t does not exist: deploy the host first" >&2; exit 13; }
mkdir -p "$t/shared" || exit 11
umask 077
f="$t/shared/credentials.env"
cat > "$f.tmp" || exit 11
chmod 600 "$f.tmp" || exit 11
if [ "$(id -u)" = 0 ]; then chown "$user:$group" "$f.tmp" || exit 11; fi
mv -f "$f.tmp" "$f" || exit 11
"#;

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot generate a password from the kernel's random source: {0}")]
    Random(#[source] std::io::Error),
    #[error("cannot install the credentials file on {host}: {reason}")]
    Install { host: String, reason: String },
    /// The new file is installed but the host did not confirm it in time: both the old
    /// and the new passwords stay valid.
    #[error("{host} did not pick up the new credentials within {waited:?} (its heartbeat shows {seen}); the old and the new passwords both stay valid")]
    NotPickedUp {
        host: String,
        waited: Duration,
        seen: String,
    },
}

/// What was issued: the two users and their URLs (the file's text holds the same).
#[derive(Debug, Clone)]
pub struct Issued {
    pub agent_user: String,
    pub worker_user: String,
    pub agent_url: String,
    pub worker_url: String,
    /// The credentials file.
    pub text: String,
    pub fingerprint: String,
}

/// How to issue credentials.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// Create the users (or with `rotate`, replace their passwords at once) and hand the
    /// URLs back, for the caller to show once.
    Show { rotate: bool },
    /// Create the users and install the file; on a failed install the new users are
    /// deleted again.
    Install { ssh: SshOptions },
    /// Rotate without a gap (see the module), waiting at most `wait` for the host.
    Rotate { ssh: SshOptions, wait: Duration },
}

/// Issues `name`'s credentials, connecting hosts to the server of `url` (the address
/// hosts reach Redis at).
///
/// # Errors
/// See [`CredentialsError`].
pub fn issue(
    store: &mut Store,
    url: &RedisUrl,
    name: &str,
    host: &CompiledHost,
    how: &Delivery,
) -> Result<Issued, CredentialsError> {
    // A placeholder address is refused before anything is written.
    if matches!(how, Delivery::Install { .. } | Delivery::Rotate { .. }) {
        if let Some(why) = ssh::placeholder(&host.address) {
            return Err(CredentialsError::Install {
                host: name.to_string(),
                reason: ssh::placeholder_message(name, &host.address, why),
            });
        }
    }
    let secret = || crate::state::random_secret(24).map_err(CredentialsError::Random);
    let (agent_password, worker_password) = (secret()?, secret()?);
    let passwords = match how {
        Delivery::Show { rotate: false } | Delivery::Install { .. } => Passwords::Create,
        Delivery::Show { rotate: true } => Passwords::Replace,
        Delivery::Rotate { .. } => Passwords::Add,
    };
    let (agent_user, worker_user) = store.set_host_users(
        name,
        &host.queues,
        &agent_password,
        &worker_password,
        passwords,
    )?;
    let agent_url = url.with_credentials(&agent_user, &agent_password);
    let worker_url = url.with_credentials(&worker_user, &worker_password);
    let text = credentials_file(&agent_url, &worker_url);
    let issued = Issued {
        agent_user,
        worker_user,
        agent_url,
        worker_url,
        fingerprint: fingerprint(&text),
        text,
    };
    match how {
        Delivery::Show { .. } => Ok(issued),
        Delivery::Install { ssh } => {
            if let Err(e) = install(name, host, ssh, &issued.text) {
                let new = [issued.agent_user.as_str(), issued.worker_user.as_str()];
                if let Err(d) = store.delete_acl_users(&new) {
                    tracing::warn!(host = %name, error = %d, "cannot delete the users of a failed install");
                }
                return Err(e);
            }
            Ok(issued)
        }
        Delivery::Rotate { ssh, wait } => {
            if let Err(e) = install(name, host, ssh, &issued.text) {
                // The host keeps its old file: take the new passwords back.
                if let Err(d) = store.remove_host_passwords(name, &agent_password, &worker_password)
                {
                    tracing::warn!(host = %name, error = %d, "cannot remove the new passwords of a failed rotation");
                }
                return Err(e);
            }
            await_fingerprint(store, name, &issued.fingerprint, *wait)?;
            store.set_host_users(
                name,
                &host.queues,
                &agent_password,
                &worker_password,
                Passwords::KeepOnly,
            )?;
            Ok(issued)
        }
    }
}

/// Writes `text` to the host's credentials file over SSH.
fn install(
    name: &str,
    host: &CompiledHost,
    opts: &SshOptions,
    text: &str,
) -> Result<(), CredentialsError> {
    let fail = |reason: String| CredentialsError::Install {
        host: name.to_string(),
        reason,
    };
    let d = &host.deployment;
    let remote: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        INSTALL.into(),
        "sh".into(),
        d.target_dir.clone(),
        d.user.clone(),
        d.group.clone(),
    ];
    let timeout = Duration::from_secs(host.ssh.connect_timeout_secs + 30);
    let out = ssh::run_with_input(&ssh::ssh_args(host, opts, &remote), text, timeout)
        .map_err(|e| fail(format!("cannot run ssh: {e}")))?;
    if let Some(f) = out.failure() {
        return Err(fail(format!("{} ({})", f.label(), out.stderr.trim())));
    }
    match out.status {
        Some(0) => Ok(()),
        other => Err(fail(format!(
            "the install script exited with status {}: {}",
            other.unwrap_or(-1),
            out.stderr.trim()
        ))),
    }
}

/// Waits until `host`'s heartbeat shows `fingerprint` with the worker running.
fn await_fingerprint(
    store: &mut Store,
    host: &str,
    fingerprint: &str,
    wait: Duration,
) -> Result<(), CredentialsError> {
    let started = Instant::now();
    let hosts = std::collections::BTreeSet::from([host.to_string()]);
    loop {
        let beat = store.heartbeats_among(&hosts, &std::collections::BTreeSet::new())?;
        let seen = beat.get(host);
        if seen.is_some_and(|h| h.credentials == fingerprint && h.status == "running") {
            return Ok(());
        }
        if started.elapsed() >= wait {
            return Err(CredentialsError::NotPickedUp {
                host: host.to_string(),
                waited: wait,
                seen: seen.map_or("no heartbeat".to_string(), |h| {
                    format!(
                        "status {}, credentials {}",
                        h.status,
                        if h.credentials.is_empty() {
                            "none"
                        } else {
                            &h.credentials
                        }
                    )
                }),
            });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
