//! Probing hosts: can celeroot reach and log in to each host, is its host key the known
//! one, and what does it run (OS, kernel, Python, uv).

use std::time::Duration;

use serde::Serialize;

use super::ssh::{self, Failure, SshOptions};
use crate::desired::CompiledHost;

/// The fixed script run on each host (over SSH by `test-connection`, locally by the agent).
/// It contains no value from the manifests.
pub(crate) const FACTS_SCRIPT: &str = r#"if [ -r /etc/os-release ]; then . /etc/os-release; fi
echo "os=${PRETTY_NAME:-unknown}"
echo "kernel=$(uname -sr)"
echo "python=$(python3 -c 'import sys; print(".".join(map(str, sys.version_info[:3])))' 2>/dev/null || echo none)"
echo "uv=$(uv --version 2>/dev/null | cut -d' ' -f2 || true)"
"#;

/// What a host runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Facts {
    pub os: String,
    pub kernel: String,
    /// `none` when `python3` is missing.
    pub python: String,
    /// Empty when `uv` is missing.
    pub uv: String,
}

/// The result of probing one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    pub host: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    /// `ok`, or a [`Failure`] label.
    pub status: String,
    /// ssh's message when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facts: Option<Facts>,
    pub elapsed_ms: u64,
}

impl Probe {
    pub fn ok(&self) -> bool {
        self.status == "ok"
    }
}

pub(crate) fn parse_facts(stdout: &str) -> Facts {
    let mut f = Facts::default();
    for line in stdout.lines() {
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_string();
            match k {
                "os" => f.os = v,
                "kernel" => f.kernel = v,
                "python" => f.python = v,
                "uv" => f.uv = v,
                _ => {}
            }
        }
    }
    f
}

/// Connects to `host` and reads its facts.
pub fn probe(name: &str, host: &CompiledHost, opts: &SshOptions) -> Probe {
    let args = ssh::ssh_args(
        host,
        opts,
        &["sh".to_string(), "-c".to_string(), FACTS_SCRIPT.to_string()],
    );
    let timeout = Duration::from_secs(host.ssh.connect_timeout_secs + 20);
    let mut p = Probe {
        host: name.to_string(),
        address: host.address.clone(),
        port: host.ssh.port,
        user: host.ssh.user.clone(),
        status: "ok".into(),
        error: None,
        facts: None,
        elapsed_ms: 0,
    };
    if let Some(why) = ssh::placeholder(&host.address) {
        p.status = "placeholder".into();
        p.error = Some(ssh::placeholder_message(name, &host.address, why));
        return p;
    }
    match ssh::run(&args, timeout) {
        Err(e) => {
            p.status = Failure::Other.label().into();
            p.error = Some(format!("cannot run ssh: {e} (install openssh-client)"));
        }
        Ok(out) => {
            p.elapsed_ms = u64::try_from(out.elapsed.as_millis()).unwrap_or(u64::MAX);
            match (out.failure(), out.status) {
                (Some(f), _) => {
                    p.status = f.label().into();
                    p.error = Some(first_line(&out.stderr, f));
                }
                (None, Some(0)) => p.facts = Some(parse_facts(&out.stdout)),
                (None, code) => {
                    p.status = "error".into();
                    p.error = Some(format!(
                        "the facts script exited with {code:?}: {}",
                        out.stderr.trim()
                    ));
                }
            }
        }
    }
    p
}

/// The most telling line of ssh's message.
fn first_line(stderr: &str, f: Failure) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '@'))
        .collect();
    let pick = match f {
        Failure::HostKeyChanged => lines
            .iter()
            .find(|l| l.contains("HAS CHANGED"))
            .or(lines.last()),
        _ => lines.last(),
    };
    pick.map_or_else(
        || f.label().to_string(),
        |l| l.trim_matches('@').trim().to_string(),
    )
}

/// Probes `hosts` with at most `parallel` connections at a time; results in input order.
pub fn probe_all(
    hosts: &[(String, CompiledHost)],
    opts: &SshOptions,
    parallel: usize,
) -> Vec<Probe> {
    let mut out = Vec::with_capacity(hosts.len());
    for chunk in hosts.chunks(parallel.max(1)) {
        let results: Vec<Probe> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|(name, h)| s.spawn(move || probe(name, h, opts)))
                .collect();
            handles
                .into_iter()
                .zip(chunk)
                .map(|(t, (name, h))| {
                    t.join().unwrap_or_else(|_| Probe {
                        host: name.clone(),
                        address: h.address.clone(),
                        port: h.ssh.port,
                        user: h.ssh.user.clone(),
                        status: "error".into(),
                        error: Some("the probe panicked".into()),
                        facts: None,
                        elapsed_ms: 0,
                    })
                })
                .collect()
        });
        out.extend(results);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_are_parsed() {
        let f = parse_facts(
            "os=Debian GNU/Linux 12 (bookworm)\nkernel=Linux 6.1.0\npython=3.11.2\nuv=\n",
        );
        assert_eq!(
            f,
            Facts {
                os: "Debian GNU/Linux 12 (bookworm)".into(),
                kernel: "Linux 6.1.0".into(),
                python: "3.11.2".into(),
                uv: String::new(),
            }
        );
    }

    #[test]
    fn the_changed_key_line_is_reported() {
        let e = "@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@@@@@\nHost key verification failed.\n";
        assert_eq!(
            first_line(e, Failure::HostKeyChanged),
            "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!"
        );
        assert_eq!(first_line("", Failure::Timeout), "timeout");
    }
}
