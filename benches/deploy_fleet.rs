//! `celeroot deploy` to 20 real sshd hosts (each its own 127.0.1.N address and host key)
//! with a 500-file worker tree, side by side with two peers doing the same job on the same
//! hosts in the same run: Ansible (`benches/peers/deploy.yml`: `file` + `synchronize` +
//! `command`, forks = hosts, pipelining, ControlPersist; the pinned `ansible` package in
//! its own virtualenv, `benches/peers/setup.sh ansible`) and a plain `rsync --checksum` +
//! `ssh` loop over every host at once (`benches/peers/deploy-loop.sh`). Three columns,
//! interleaved tool by tool: a cold deploy (empty targets), a deploy with nothing changed,
//! and a deploy of a one-file commit. Prints wall times, medians over `--runs`, the
//! ratios, and bytes and files sent.
//!
//! Run: `cargo bench --bench deploy_fleet` (`-- --hosts N --files N --parallel N --runs N
//! --no-peers`). Needs sshd, ssh, rsync (scripts/test.sh installs them) and root (sshd's
//! privilege separation), like the tests.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failed expectation is the report

#[path = "../tests/cli/common/sshd.rs"]
#[allow(dead_code)]
mod sshd;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

/// (busy, total) jiffies of all CPUs, from /proc/stat.
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let nums: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    let total: u64 = nums.iter().sum();
    let idle = nums.get(3).copied().unwrap_or(0) + nums.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// CPU seconds used by finished children of this process (celeroot and what it waited for).
fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Runs `celeroot deploy ARGS -o json`; returns (seconds, bytes sent, files sent, outcomes).
fn deploy(work: &Path, known_hosts: &Path, extra: &[&str]) -> (f64, u64, u64, String) {
    let (busy0, total0) = cpu_jiffies();
    let cpu0 = children_cpu();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_celeroot"))
        .arg("deploy")
        .args(extra)
        .args(["-o", "json", "--known-hosts"])
        .arg(known_hosts)
        .current_dir(work)
        .env("CELEROOT_REDIS_URL", "redis://127.0.0.1:1/0")
        .output()
        .expect("celeroot deploy");
    let secs = started.elapsed().as_secs_f64();
    let (busy1, total1) = cpu_jiffies();
    println!(
        "  deploy {extra:?}: {secs:.2} s wall; machine CPU busy {:.0} % (all cores); celeroot and the ssh/rsync it waited for: {:.2} CPU s",
        100.0 * (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64,
        children_cpu() - cpu0
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "deploy printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let hosts = v["hosts"].as_array().cloned().unwrap_or_default();
    let sum = |f: &str| {
        hosts
            .iter()
            .map(|h| h[f].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    let mut outcomes: Vec<String> = hosts
        .iter()
        .map(|h| h["outcome"].as_str().unwrap_or("?").to_string())
        .collect();
    outcomes.sort();
    outcomes.dedup();
    (secs, sum("bytesSent"), sum("filesSent"), outcomes.join(","))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs a peer command; returns its wall seconds (panics when it fails: a peer that did
/// not do the job has no figure).
fn timed(what: &str, cmd: &mut Command) -> f64 {
    let started = Instant::now();
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let files = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("files=").map(str::to_string))
        .map(|f| format!(", {f} files sent"))
        .unwrap_or_default();
    println!("  {what}: {secs:.2} s wall{files}");
    secs
}

/// The peers: the Ansible playbook and the plain loop, on the same hosts, into their own
/// target directories.
struct Peers {
    dir: std::path::PathBuf,
    ansible: std::path::PathBuf,
    src: std::path::PathBuf,
    lab_key: std::path::PathBuf,
    known: std::path::PathBuf,
    forks: usize,
}

impl Peers {
    fn new(lab: &sshd::SshLab, src: &Path, forks: usize) -> Peers {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new("bash")
            .arg(root.join("benches/peers/setup.sh"))
            .arg("ansible")
            .output()
            .expect("benches/peers/setup.sh ansible");
        assert!(
            out.status.success(),
            "the Ansible peer's environment: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let python = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let ansible = Path::new(&python).with_file_name("ansible-playbook");
        let dir = lab.dir.path().join("peers");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let user = sshd::SshLab::user();
        let mut inventory = String::from("[fleet]\n");
        let mut hosts = String::new();
        for (i, h) in lab.hosts.iter().enumerate() {
            inventory.push_str(&format!(
                "{} ansible_host={} ansible_port={} ansible_user={user} ansible_ssh_private_key_file={} ansible_python_interpreter=/usr/bin/python3 target={}\n",
                h.name,
                h.address,
                h.port,
                lab.key.display(),
                dir.join(format!("ansible-{i}")).display()
            ));
            hosts.push_str(&format!(
                "{} {} {}\n",
                h.address,
                h.port,
                dir.join(format!("loop-{i}")).display()
            ));
        }
        std::fs::write(dir.join("inventory"), inventory).expect("inventory");
        std::fs::write(dir.join("hosts"), hosts).expect("hosts");
        Peers {
            dir,
            ansible,
            src: src.to_path_buf(),
            lab_key: lab.key.clone(),
            known: lab.known_hosts.clone(),
            forks,
        }
    }

    /// Empty targets, for a cold deploy.
    fn clear(&self, n_hosts: usize) {
        for i in 0..n_hosts {
            for tool in ["ansible", "loop"] {
                let _ = std::fs::remove_dir_all(self.dir.join(format!("{tool}-{i}")));
            }
        }
    }

    fn ansible(&self, column: &str) -> f64 {
        // A connection directory of its own per run: no run reuses another's connections,
        // as no celeroot run does.
        let cp = tempfile::tempdir_in(&self.dir).expect("control dir");
        let home = self.dir.join("ansible-home");
        let cfg = self.dir.join("ansible.cfg");
        std::fs::write(
            &cfg,
            format!(
                "[defaults]\nforks = {}\nhost_key_checking = True\ngathering = explicit\nhome = {home}\nlocal_tmp = {home}/tmp\nremote_tmp = {home}/remote-tmp\nretry_files_enabled = False\ninterpreter_python = /usr/bin/python3\n\n[ssh_connection]\npipelining = True\nssh_args = -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes -o LogLevel=ERROR\ncontrol_path_dir = {cp}\n",
                self.forks,
                home = home.display(),
                known = self.known.display(),
                cp = cp.path().display(),
            ),
        )
        .expect("ansible.cfg");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let t = timed(
            &format!("ansible-playbook, {column}"),
            Command::new(&self.ansible)
                .arg("-i")
                .arg(self.dir.join("inventory"))
                .arg(root.join("benches/peers/deploy.yml"))
                .arg("-e")
                .arg(format!("src={}", self.src.display()))
                .env("ANSIBLE_CONFIG", &cfg)
                .env("ANSIBLE_NOCOLOR", "1"),
        );
        // Close its persistent connections, so the next run starts from none.
        for sock in std::fs::read_dir(cp.path()).into_iter().flatten().flatten() {
            let _ = Command::new("ssh")
                .arg("-o")
                .arg(format!("ControlPath={}", sock.path().display()))
                .args(["-O", "exit", "placeholder"])
                .output();
        }
        t
    }

    fn plain_loop(&self, column: &str) -> f64 {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        timed(
            &format!("rsync + ssh loop, {column}"),
            Command::new("bash")
                .arg(root.join("benches/peers/deploy-loop.sh"))
                .arg(&self.src)
                .arg(&self.lab_key)
                .arg(&self.known)
                .arg(sshd::SshLab::user())
                .arg(self.dir.join("hosts")),
        )
    }
}

/// The floor of any deploy that opens one SSH connection per host: `ssh HOST true` to
/// every host at once, with celeroot's options (no connection sharing: one session).
fn ssh_floor(lab: &sshd::SshLab) -> f64 {
    let started = Instant::now();
    let children: Vec<_> = lab
        .hosts
        .iter()
        .map(|h| {
            Command::new("ssh")
                .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
                .arg("-o")
                .arg(format!("UserKnownHostsFile={}", lab.known_hosts.display()))
                .args(["-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes", "-i"])
                .arg(&lab.key)
                .args(["-p", &h.port.to_string(), "-l", &sshd::SshLab::user(), "--"])
                .arg(&h.address)
                .arg("true")
                .spawn()
                .expect("ssh")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().expect("ssh").success(), "ssh true");
    }
    started.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("deploy_fleet: run with `cargo bench --bench deploy_fleet`");
        return;
    }
    let n_hosts = arg(&args, "--hosts", 20);
    let n_files = arg(&args, "--files", 500);
    let parallel = arg(&args, "--parallel", 20);
    let runs = arg(&args, "--runs", 1).max(1);
    let with_peers = !args.iter().any(|a| a == "--no-peers");
    let lab = sshd::SshLab::start(n_hosts);
    let work = lab.dir.path().join("work");
    let repo = git2::Repository::init(&work).expect("init");
    write(
        &work,
        "manifests/cluster.yaml",
        &format!(
            "apiVersion: celeroot.io/v1\nkind: Cluster\nmetadata:\n  name: bench\nspec:\n  ssh:\n    user: {}\n    identityFile: {}\n  deployment:\n    paths: [app]\n    setupCommand: [\"true\"]\n    restartCommand: [\"true\"]\n    healthCheck:\n      command: [\"true\"]\n    strategy:\n      maxParallel: {parallel}\n",
            sshd::SshLab::user(),
            lab.key.display()
        ),
    );
    write(
        &work,
        "manifests/roles/worker.yaml",
        "apiVersion: celeroot.io/v1\nkind: Role\nmetadata:\n  name: worker\nspec:\n  concurrency: 4\n",
    );
    let targets = |i: usize| lab.dir.path().join(format!("target-{i}"));
    for (i, h) in lab.hosts.iter().enumerate() {
        write(
            &work,
            &format!("manifests/hosts/{}.yaml", h.name),
            &format!(
                "apiVersion: celeroot.io/v1\nkind: Host\nmetadata:\n  name: {}\nspec:\n  address: {}\n  roles: [worker]\n  ssh:\n    port: {}\n  deployment:\n    targetDir: {}\n",
                h.name,
                h.address,
                h.port,
                targets(i).display()
            ),
        );
    }
    // A worker tree of n_files modules of about 2 KB each, under app/ (the shipped path;
    // the peers sync the same directory).
    for i in 0..n_files {
        let body: String = (0..40)
            .map(|l| format!("VALUE_{l} = {}  # module {i}, line {l}\n", i * 1000 + l))
            .collect();
        write(
            &work,
            &format!("app/tasks/pkg{:02}/mod{i:04}.py", i % 25),
            &body,
        );
    }
    write(
        &work,
        "app/pyproject.toml",
        "[project]\nname = \"bench\"\nversion = \"0\"\n",
    );
    support::commit_all(&repo, "fleet");
    let peers = with_peers.then(|| Peers::new(&lab, &work.join("app"), n_hosts));

    let known = &lab.known_hosts;
    let columns = ["cold", "no change", "one file"];
    // [tool][column] → seconds per run; tools: celeroot, loop, ansible.
    let mut times: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); 3]; 3];
    let mut sent = [(0u64, 0u64); 3];
    let mut checks = Vec::new();
    let mut floors = Vec::new();
    for run in 0..runs {
        println!("run {}/{runs}", run + 1);
        for i in 0..n_hosts {
            let _ = std::fs::remove_dir_all(targets(i));
        }
        if let Some(p) = &peers {
            p.clear(n_hosts);
        }
        for (c, column) in columns.iter().enumerate() {
            if c == 2 {
                write(
                    &work,
                    "app/tasks/pkg07/mod0007.py",
                    &format!("VALUE = 'changed in run {run}'\n"),
                );
                support::commit_all(&repo, "one file");
            }
            let (secs, bytes, files, outcomes) = deploy(&work, known, &[]);
            let want = if c == 1 { "up-to-date" } else { "deployed" };
            assert_eq!(outcomes, want, "celeroot deploy, {column}");
            times[0][c].push(secs);
            sent[c] = (bytes, files);
            if let Some(p) = &peers {
                times[1][c].push(p.plain_loop(column));
                times[2][c].push(p.ansible(column));
            }
            if c == 1 {
                checks.push(deploy(&work, known, &["--check"]).0);
                let floor = ssh_floor(&lab);
                println!("  ssh HOST true, every host at once: {floor:.2} s wall");
                floors.push(floor);
            }
        }
    }
    let med: Vec<Vec<f64>> = times
        .iter_mut()
        .map(|t| {
            t.iter_mut()
                .map(|v| if v.is_empty() { f64::NAN } else { median(v) })
                .collect()
        })
        .collect();
    println!(
        "\ndeploy_fleet: {n_hosts} hosts, {n_files} files, maxParallel {parallel}, median of {runs} run(s)"
    );
    println!(
        "{:<26} {:>10} {:>10} {:>10}",
        "", "cold", "no change", "one file"
    );
    let row =
        |name: &str, v: &[f64]| println!("{name:<26} {:>9.2}s {:>9.2}s {:>9.2}s", v[0], v[1], v[2]);
    row("celeroot deploy", &med[0]);
    if peers.is_some() {
        row("rsync + ssh loop", &med[1]);
        row("ansible-playbook", &med[2]);
        let ratio = |name: &str, k: usize, target: &str| {
            println!(
                "{name:<26} {:>9.1}x {:>9.1}x {:>9.1}x  [target {target}]",
                med[k][0] / med[0][0],
                med[k][1] / med[0][1],
                med[k][2] / med[0][2]
            );
        };
        ratio("loop / celeroot", 1, "> 1 in every column");
        ratio("ansible / celeroot", 2, ">= 5 in every column");
    }
    println!(
        "celeroot sent: cold {} bytes, {} files; no change {} bytes; one file {} bytes, {} files",
        sent[0].0, sent[0].1, sent[1].0, sent[2].0, sent[2].1
    );
    println!(
        "celeroot deploy --check (nothing changed): {:.2} s median; the floor, `ssh HOST true` to every host at once: {:.2} s median",
        median(&mut checks),
        median(&mut floors)
    );
    println!("reproduce: cargo bench --bench deploy_fleet -- --hosts {n_hosts} --files {n_files} --parallel {parallel} --runs {runs}{}", if with_peers { "" } else { " --no-peers" });
}
