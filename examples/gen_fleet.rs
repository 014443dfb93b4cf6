//! Writes a generated fleet config repository (one object per file, labels and
//! selectors) plus a history of small commits, each changing one host, one role or one
//! schedule. Used by the `fleet_scale` benchmark; see docs/performance.md.
//!
//! ```text
//! cargo run --release --example gen_fleet -- DIR [--hosts 10000] [--roles 200] [--schedules 20000] [--commits 30]
//! celeroot --repo DIR validate
//! celeroot --repo DIR diff --from HEAD~1 --to HEAD
//! ```

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark tool: a failure is the report

#[path = "../benches/support/fleet.rs"]
mod fleet;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |name: &str, default: usize| -> Result<usize, String> {
        match args.iter().position(|a| a == name) {
            None => Ok(default),
            Some(i) => args
                .get(i + 1)
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("{name} needs a number")),
        }
    };
    let parsed = (|| -> Result<(PathBuf, fleet::Spec, usize), String> {
        let spec = fleet::Spec {
            hosts: num("--hosts", 10_000)?,
            roles: num("--roles", 200)?,
            schedules: num("--schedules", 20_000)?,
        };
        if spec.hosts == 0 || spec.roles < 2 {
            return Err("need at least 1 host and 2 roles".into());
        }
        let commits = num("--commits", 30)?;
        let mut skip = false;
        let mut dir = None;
        for a in &args {
            if skip {
                skip = false;
            } else if a.starts_with("--") {
                skip = true;
            } else {
                dir = Some(PathBuf::from(a));
            }
        }
        let dir = dir
            .ok_or("usage: gen_fleet DIR [--hosts N] [--roles N] [--schedules N] [--commits N]")?;
        Ok((dir, spec, commits))
    })();
    let (dir, spec, commits) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("gen_fleet: {e}");
            return ExitCode::from(2);
        }
    };
    if dir.exists() && std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_some()) {
        eprintln!("gen_fleet: {} exists and is not empty", dir.display());
        return ExitCode::from(2);
    }
    let started = Instant::now();
    let repo = fleet::generate(&dir, &spec);
    for n in 1..=commits {
        fleet::commit_change(&repo, &spec, n);
    }
    println!(
        "wrote {} ({} hosts, {} roles, {} schedules, 1 + {commits} commits) in {:.1} s",
        dir.display(),
        spec.hosts,
        spec.roles,
        spec.schedules,
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}
