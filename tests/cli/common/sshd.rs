//! Real SSH hosts for tests: each host is its own `sshd` on its own loopback address
//! (127.0.1.N) and free port, with its own host key; one client key is authorized on all.
//! Runs as the current user (root in CI). A missing `sshd` fails loudly
//! (scripts/test.sh installs openssh-server).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// Hands out 127.0.1.2, 127.0.1.3, ... so parallel tests never share an address.
static NEXT_ADDRESS: AtomicU8 = AtomicU8::new(2);

fn next_address() -> String {
    let n = NEXT_ADDRESS.fetch_add(1, Ordering::SeqCst);
    assert!(n < 250, "out of test host addresses");
    format!("127.0.1.{n}")
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "celeroot-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (apt-get install openssh-client)");
    assert!(st.success(), "ssh-keygen failed");
}

fn sshd_binary() -> PathBuf {
    for p in ["/usr/sbin/sshd", "/usr/local/sbin/sshd"] {
        if Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    panic!("sshd is not installed: run ./scripts/test.sh (it installs openssh-server), or apt-get install openssh-server");
}

/// One test host.
pub struct SshHost {
    pub name: String,
    pub address: String,
    pub port: u16,
    /// `ssh-ed25519 AAAA...` of its host key.
    pub host_key: String,
    child: Option<Child>,
    dir: PathBuf,
}

impl SshHost {
    /// A `known_hosts` line for this host.
    pub fn known_hosts_line(&self) -> String {
        format!("[{}]:{} {}", self.address, self.port, self.host_key)
    }

    /// Stops its sshd: the host becomes unreachable.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts its sshd again after [`SshHost::stop`], with the same key and port.
    pub fn start(&mut self) {
        if self.child.is_none() {
            self.boot();
        }
    }

    /// Replaces its host key (as a reinstalled or impersonated host would) and restarts.
    pub fn change_host_key(&mut self) {
        self.stop();
        let key = self.dir.join("hostkey");
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(self.dir.join("hostkey.pub"));
        keygen(&key);
        self.host_key = read_pub(&self.dir.join("hostkey.pub"));
        self.boot();
    }

    fn boot(&mut self) {
        let st = Command::new(sshd_binary())
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.dir.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sshd");
        self.child = Some(st);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((self.address.as_str(), self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd on {}:{} did not start",
                self.address,
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SshHost {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_pub(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read public key");
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A set of SSH hosts sharing one client key and one known_hosts file.
pub struct SshLab {
    pub dir: tempfile::TempDir,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    pub hosts: Vec<SshHost>,
}

impl SshLab {
    /// Starts `n` hosts named `host-1` ... `host-n`, and writes known_hosts for all.
    pub fn start(n: usize) -> SshLab {
        let dir = tempfile::tempdir().expect("temp dir");
        // sshd needs its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let key = dir.path().join("client_key");
        keygen(&key);
        let authorized = dir.path().join("authorized_keys");
        std::fs::copy(dir.path().join("client_key.pub"), &authorized).expect("authorized_keys");
        let mut hosts = Vec::new();
        for i in 1..=n {
            let hdir = dir.path().join(format!("host-{i}"));
            std::fs::create_dir_all(&hdir).expect("mkdir");
            let address = next_address();
            let port = TcpListener::bind((address.as_str(), 0))
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port on the test address");
            keygen(&hdir.join("hostkey"));
            let config = format!(
                "ListenAddress {address}:{port}\nHostKey {hk}\nAuthorizedKeysFile {ak}\nPidFile {pid}\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nLogLevel ERROR\nMaxStartups 100\n",
                hk = hdir.join("hostkey").display(),
                ak = authorized.display(),
                pid = hdir.join("sshd.pid").display(),
            );
            std::fs::write(hdir.join("sshd_config"), config).expect("sshd_config");
            let mut h = SshHost {
                name: format!("host-{i}"),
                address,
                port,
                host_key: read_pub(&hdir.join("hostkey.pub")),
                child: None,
                dir: hdir,
            };
            h.boot();
            hosts.push(h);
        }
        let known_hosts = dir.path().join("known_hosts");
        let lab = SshLab {
            dir,
            key,
            known_hosts,
            hosts,
        };
        lab.write_known_hosts();
        lab
    }

    /// Rewrites known_hosts with every host's current key.
    pub fn write_known_hosts(&self) {
        let lines: Vec<String> = self.hosts.iter().map(SshHost::known_hosts_line).collect();
        std::fs::write(&self.known_hosts, lines.join("\n") + "\n").expect("known_hosts");
    }

    /// The user tests log in as (the current user; sshd runs as it).
    pub fn user() -> String {
        std::env::var("USER").unwrap_or_else(|_| "root".into())
    }

    /// Manifests of a cluster `lab` with one role and these hosts (relative path, text).
    pub fn manifests(&self) -> Vec<(String, String)> {
        let mut out = vec![
            (
                "manifests/cluster.yaml".to_string(),
                format!(
                    "apiVersion: celeroot.io/v1\nkind: Cluster\nmetadata:\n  name: lab\nspec:\n  ssh:\n    user: {}\n    identityFile: {}\n    connectTimeout: 3s\n",
                    Self::user(),
                    self.key.display()
                ),
            ),
            (
                "manifests/roles/worker.yaml".to_string(),
                "apiVersion: celeroot.io/v1\nkind: Role\nmetadata:\n  name: worker\nspec:\n  concurrency: 2\n".to_string(),
            ),
        ];
        for h in &self.hosts {
            out.push((
                format!("manifests/hosts/{}.yaml", h.name),
                format!(
                    "apiVersion: celeroot.io/v1\nkind: Host\nmetadata:\n  name: {}\nspec:\n  address: {}\n  roles: [worker]\n  ssh:\n    port: {}\n",
                    h.name, h.address, h.port
                ),
            ));
        }
        out
    }
}
