//! Hostile manifests (docs/security.md, finding 2): how long `validate` takes to give its
//! located error for a Role named with 450,000 characters plus a Host referring to
//! another long name, and for a 100,000-character time zone. Before the fix the first
//! aborted (a 1.6 TB allocation) and the second took 6.7 s. Target: < 100 ms each.
//!
//! Run: `cargo bench --bench hostile_input` (`-- --runs N`).

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failed expectation is the report

use std::time::Instant;

use celeroot::source::{Snapshot, SourceFile};

fn example() -> Vec<SourceFile> {
    celeroot::init::EXAMPLE_MANIFESTS
        .iter()
        .filter(|(p, _)| p.starts_with("manifests/"))
        .map(|(p, t)| SourceFile {
            path: p.to_string(),
            text: t.to_string(),
        })
        .collect()
}

fn edit(files: &mut [SourceFile], path: &str, from: &str, to: &str) {
    let f = files
        .iter_mut()
        .find(|f| f.path == path)
        .expect("example file");
    assert!(f.text.contains(from), "{path} holds {from:?}");
    f.text = f.text.replacen(from, to, 1);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);

    let mut names = example();
    names.push(SourceFile {
        path: "manifests/roles/huge.yaml".into(),
        text: format!(
            "apiVersion: celeroot.io/v1\nkind: Role\nmetadata:\n  name: {}\nspec:\n  concurrency: 1\n",
            "r".repeat(450_000)
        ),
    });
    edit(
        &mut names,
        "manifests/hosts/web01.yaml",
        "roles: [webserver, application]",
        &format!("roles: [webserver, {}x]", "q".repeat(449_999)),
    );
    let mut tz = example();
    edit(
        &mut tz,
        "manifests/cluster.yaml",
        "timezone: Europe/Berlin",
        &format!("timezone: {}", "E".repeat(100_000)),
    );

    for (label, files) in [
        ("450,000-character Role name + long Host reference", names),
        ("100,000-character time zone", tz),
    ] {
        let mut times = Vec::new();
        for _ in 0..runs {
            let snap = Snapshot {
                label: "bench".into(),
                commit: None,
                files: files.clone(),
            };
            let t = Instant::now();
            let r = celeroot::compile_snapshot(snap);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            assert!(r.is_err(), "{label}: the revision must be invalid");
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{label}: located error in {:.1} ms median ({:.1}–{:.1}, {runs} runs; target < 100 ms)",
            times[times.len() / 2],
            times[0],
            times[times.len() - 1]
        );
    }
    println!("reproduce: cargo bench --bench hostile_input -- --runs {runs}");
}
