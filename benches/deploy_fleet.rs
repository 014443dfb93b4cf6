//! `celeroot deploy` to 20 real sshd hosts (each its own 127.0.1.N address and host key)
//! with a 500-file worker tree: first deploy, a no-change `deploy --check`, and a one-file
//! change. Prints wall time and bytes sent.
//!
//! Run: `cargo bench --bench deploy_fleet` (`-- --hosts N --files N --parallel N`).
//! Needs sshd, ssh, rsync (scripts/test.sh installs them) and root (sshd's privilege
//! separation), like the tests.

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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("deploy_fleet: run with `cargo bench --bench deploy_fleet`");
        return;
    }
    let n_hosts = arg(&args, "--hosts", 20);
    let n_files = arg(&args, "--files", 500);
    let parallel = arg(&args, "--parallel", 20);
    let lab = sshd::SshLab::start(n_hosts);
    let work = lab.dir.path().join("work");
    let repo = git2::Repository::init(&work).expect("init");
    write(
        &work,
        "manifests/cluster.yaml",
        &format!(
            "apiVersion: celeroot.io/v1\nkind: Cluster\nmetadata:\n  name: bench\nspec:\n  ssh:\n    user: {}\n    identityFile: {}\n  deployment:\n    setupCommand: [\"true\"]\n    restartCommand: [\"true\"]\n    healthCheck:\n      command: [\"true\"]\n    strategy:\n      maxParallel: {parallel}\n",
            sshd::SshLab::user(),
            lab.key.display()
        ),
    );
    write(
        &work,
        "manifests/roles/worker.yaml",
        "apiVersion: celeroot.io/v1\nkind: Role\nmetadata:\n  name: worker\nspec:\n  concurrency: 4\n",
    );
    for (i, h) in lab.hosts.iter().enumerate() {
        write(
            &work,
            &format!("manifests/hosts/{}.yaml", h.name),
            &format!(
                "apiVersion: celeroot.io/v1\nkind: Host\nmetadata:\n  name: {}\nspec:\n  address: {}\n  roles: [worker]\n  ssh:\n    port: {}\n  deployment:\n    targetDir: {}\n",
                h.name,
                h.address,
                h.port,
                lab.dir.path().join(format!("target-{i}")).display()
            ),
        );
    }
    // A worker tree of n_files modules of about 2 KB each.
    for i in 0..n_files {
        let body: String = (0..40)
            .map(|l| format!("VALUE_{l} = {}  # module {i}, line {l}\n", i * 1000 + l))
            .collect();
        write(
            &work,
            &format!("tasks/pkg{:02}/mod{i:04}.py", i % 25),
            &body,
        );
    }
    write(
        &work,
        "pyproject.toml",
        "[project]\nname = \"bench\"\nversion = \"0\"\n",
    );
    support::commit_all(&repo, "fleet");

    let known = &lab.known_hosts;
    let (first, first_bytes, first_files, o1) = deploy(&work, known, &[]);
    let (check, _, _, o2) = deploy(&work, known, &["--check"]);
    write(&work, "tasks/pkg07/mod0007.py", "VALUE = 'changed'\n");
    support::commit_all(&repo, "one file");
    let (change, change_bytes, change_files, o3) = deploy(&work, known, &[]);
    println!(
        "deploy_fleet: {n_hosts} hosts, {n_files} files, maxParallel {parallel}\n\
         first deploy:        {first:.2} s, {first_bytes} bytes sent, {first_files} files ({o1})  [target <= 10 s]\n\
         no-change --check:   {check:.2} s ({o2})  [target <= 2 s]\n\
         one-file change:     {change:.2} s, {change_bytes} bytes sent, {change_files} files ({o3})  [target <= 3 s]"
    );
    println!("reproduce: cargo bench --bench deploy_fleet -- --hosts {n_hosts} --files {n_files} --parallel {parallel}");
}
