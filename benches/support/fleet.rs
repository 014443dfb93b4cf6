//! A generated fleet repository: one object per file, labels and selectors, and a history
//! of small commits (each changing one host, one role or one schedule).
//!
//! Shared by `examples/gen_fleet.rs` (the documented generator), the `fleet_scale`
//! benchmark and the incremental-reconcile differential test (each includes this file
//! with `#[path]`). Deterministic: the same sizes give the same files.

#![allow(dead_code)]

use std::path::Path;

/// The size of a generated fleet.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub hosts: usize,
    pub roles: usize,
    pub schedules: usize,
}

/// Zones and tiers hosts are spread over (selectors match a zone and a tier).
const ZONES: usize = 20;
const TIERS: usize = 10;

pub fn host_name(i: usize) -> String {
    format!("host-{i:05}")
}

pub fn role_name(i: usize) -> String {
    format!("role-{i:03}")
}

pub fn schedule_name(i: usize) -> String {
    format!("sched-{i:05}")
}

/// The two roles of host `i`.
fn host_roles(spec: &Spec, i: usize) -> (usize, usize) {
    let a = i % spec.roles;
    let b = (i * 7 + 3) % spec.roles;
    (a, if b == a { (a + 1) % spec.roles } else { b })
}

pub fn cluster_yaml() -> String {
    "apiVersion: celeroot.io/v1
kind: Cluster
metadata:
  name: fleet
  labels:
    env: production
spec:
  description: A generated fleet for benchmarks.
  timezone: UTC
  ssh:
    user: celeroot
    port: 22
    connectTimeout: 10s
"
    .to_string()
}

/// Host `i`; `rev` > 0 gives a changed version (a new rack label, and every third
/// revision a new zone, which moves the host between selectors).
pub fn host_yaml(spec: &Spec, i: usize, rev: usize) -> String {
    let (a, b) = host_roles(spec, i);
    let zone = (i + rev / 3) % ZONES;
    let tier = (i / ZONES) % TIERS;
    let env = if i % 10 == 0 { "staging" } else { "production" };
    format!(
        "apiVersion: celeroot.io/v1
kind: Host
metadata:
  name: {name}
  labels:
    env: {env}
    zone: zone-{zone:02}
    tier: tier-{tier}
    rack: rack-{rack:03}
spec:
  address: {name}.fleet.example
  roles: [{ra}, {rb}]
",
        name = host_name(i),
        rack = (i / 40 + rev) % 1000,
        ra = role_name(a),
        rb = role_name(b),
    )
}

/// Role `i`; `rev` > 0 changes its concurrency and description.
pub fn role_yaml(i: usize, rev: usize) -> String {
    format!(
        "apiVersion: celeroot.io/v1
kind: Role
metadata:
  name: {name}
  labels:
    team: team-{team}
spec:
  description: Generated role {i}, revision {rev}.
  queue: {name}
  concurrency: {conc}
  maxTasksPerChild: 1000
  tasks:
    - ops.tasks
    - app{i}.tasks
",
        name = role_name(i),
        team = i % 17,
        conc = 2 + (i + rev) % 15,
    )
}

/// Schedule `i`: most send to one role's queue (mode any) or one host (mode each); 1 %
/// fan out over a label selector (zone and tier: about hosts / 200 hosts) and 0.5 % over
/// a role's hosts. `rev` > 0 changes its cron minute or interval.
pub fn schedule_yaml(spec: &Spec, i: usize, rev: usize) -> String {
    let minute = (i + rev) % 60;
    let hour = i % 24;
    let trigger = if i % 2 == 0 {
        format!("cron: \"{minute} {hour} * * *\"")
    } else {
        format!("every: {}m", 1 + (i + rev) % 59)
    };
    let (targets, mode) = match i % 200 {
        0 | 100 => (
            format!(
                "    - selector:\n        matchLabels:\n          zone: zone-{:02}\n          tier: tier-{}\n",
                (i / 200) % ZONES,
                (i / 7) % TIERS
            ),
            "each",
        ),
        50 => (format!("    - role: {}\n", role_name(i % spec.roles)), "each"),
        r if r % 10 < 6 => (format!("    - role: {}\n", role_name(i % spec.roles)), "any"),
        r if r % 10 < 9 => (
            format!("    - host: {}\n", host_name((i * 7) % spec.hosts)),
            "each",
        ),
        _ => (
            format!(
                "    - role: {}\n    - role: {}\n",
                role_name(i % spec.roles),
                role_name((i + 1) % spec.roles)
            ),
            "any",
        ),
    };
    format!(
        "apiVersion: celeroot.io/v1
kind: Schedule
metadata:
  name: {name}
  labels:
    team: team-{team}
spec:
  description: Generated schedule {i}.
  {trigger}
  task: ops.tasks.job_{job}
  kwargs:
    batch: {batch}
  targets:
{targets}  mode: {mode}
  options:
    expires: 50s
",
        name = schedule_name(i),
        team = i % 17,
        job = i % 100,
        batch = i % 7,
    )
}

/// Every file of the fleet at revision 0, as `(path, text)`.
pub fn files(spec: &Spec) -> Vec<(String, String)> {
    let mut out = vec![("manifests/cluster.yaml".to_string(), cluster_yaml())];
    for i in 0..spec.roles {
        out.push((
            format!("manifests/roles/{}.yaml", role_name(i)),
            role_yaml(i, 0),
        ));
    }
    for i in 0..spec.hosts {
        out.push((
            format!("manifests/hosts/{}.yaml", host_name(i)),
            host_yaml(spec, i, 0),
        ));
    }
    for i in 0..spec.schedules {
        out.push((
            format!("manifests/schedules/{}.yaml", schedule_name(i)),
            schedule_yaml(spec, i, 0),
        ));
    }
    out
}

/// The one-file change of history step `n` (1-based): hosts, roles and schedules in
/// turn, spread over the fleet. Returns `(path, new text, description)`.
pub fn change(spec: &Spec, n: usize) -> (String, String, String) {
    let pick = |len: usize| (n.wrapping_mul(7919)) % len.max(1);
    match n % 3 {
        0 => {
            let i = pick(spec.roles);
            (
                format!("manifests/roles/{}.yaml", role_name(i)),
                role_yaml(i, n),
                format!("role {} revision {n}", role_name(i)),
            )
        }
        1 => {
            let i = pick(spec.hosts);
            (
                format!("manifests/hosts/{}.yaml", host_name(i)),
                host_yaml(spec, i, n),
                format!("host {} revision {n}", host_name(i)),
            )
        }
        _ => {
            let i = pick(spec.schedules);
            (
                format!("manifests/schedules/{}.yaml", schedule_name(i)),
                schedule_yaml(spec, i, n),
                format!("schedule {} revision {n}", schedule_name(i)),
            )
        }
    }
}

fn commit_index(repo: &git2::Repository, index: &mut git2::Index, msg: &str) -> String {
    let tree = repo
        .find_tree(index.write_tree().expect("write tree"))
        .expect("tree");
    let sig = git2::Signature::new(
        "Fleet Generator",
        "fleet@example.com",
        &git2::Time::new(1_790_000_000, 0),
    )
    .expect("signature");
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, msg, &tree, &parents)
        .expect("commit")
        .to_string()
}

/// Writes the fleet into a new git repository at `dir` (work tree and one commit).
/// Returns the repository.
pub fn generate(dir: &Path, spec: &Spec) -> git2::Repository {
    let repo = git2::Repository::init(dir).expect("git init");
    let mut index = repo.index().expect("index");
    for (path, text) in files(spec) {
        let p = dir.join(&path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, &text).expect("write");
        let oid = repo.blob(text.as_bytes()).expect("blob");
        let entry = git2::IndexEntry {
            ctime: git2::IndexTime::new(0, 0),
            mtime: git2::IndexTime::new(0, 0),
            dev: 0,
            ino: 0,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            file_size: text.len() as u32,
            id: oid,
            flags: 0,
            flags_extended: 0,
            path: path.into_bytes(),
        };
        index.add(&entry).expect("index add");
    }
    index.write().expect("write index");
    commit_index(
        &repo,
        &mut index,
        &format!(
            "generated fleet: {} hosts, {} roles, {} schedules",
            spec.hosts, spec.roles, spec.schedules
        ),
    );
    drop(index);
    repo
}

/// Commits history step `n` (see [`change`]) on HEAD; returns `(commit id, path)`.
pub fn commit_change(repo: &git2::Repository, spec: &Spec, n: usize) -> (String, String) {
    let dir = repo.workdir().expect("a work tree").to_path_buf();
    let (path, text, what) = change(spec, n);
    std::fs::write(dir.join(&path), &text).expect("write");
    let mut index = repo.index().expect("index");
    index.add_path(Path::new(&path)).expect("index add");
    index.write().expect("write index");
    let id = commit_index(repo, &mut index, &format!("change {what}"));
    (id, path)
}

/// Writes (`Some`) or removes (`None`) files and commits them on HEAD; returns the commit.
pub fn commit_files(repo: &git2::Repository, files: &[(&str, Option<&str>)], msg: &str) -> String {
    let dir = repo.workdir().expect("a work tree").to_path_buf();
    let mut index = repo.index().expect("index");
    for (path, text) in files {
        let p = dir.join(path);
        match text {
            Some(t) => {
                std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
                std::fs::write(&p, t).expect("write");
                index.add_path(Path::new(path)).expect("index add");
            }
            None => {
                let _ = std::fs::remove_file(&p);
                index.remove_path(Path::new(path)).expect("index remove");
            }
        }
    }
    index.write().expect("write index");
    commit_index(repo, &mut index, msg)
}
